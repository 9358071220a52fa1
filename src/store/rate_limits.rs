//! `rate_limit_policies`, `rate_limit_assignments`, `api_key_rate_limits` and
//! `rate_limit_counters`. Counting is one upsert per request (see [`increment`]).
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Policy {
    pub policy_id: i32,
    pub name: String,
    /// What one counter counts: `ip`, `user`, `org`, `api_key` or `client`.
    pub scope: String,
    pub limit_count: i32,
    pub window_sec: i32,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

const POLICY_COLUMNS: &str =
    "policy_id, name, scope, limit_count, window_sec, description, created_at";

/// A policy before it has an id.
#[derive(Debug, Clone)]
pub struct NewPolicy<'a> {
    pub name: &'a str,
    pub scope: &'a str,
    pub limit_count: i32,
    pub window_sec: i32,
    pub description: Option<&'a str>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert_policy(a: &mut impl Access, p: &NewPolicy<'_>) -> Result<Policy, StoreError> {
    let sql = format!(
        "INSERT INTO rate_limit_policies (name, scope, limit_count, window_sec, description, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {POLICY_COLUMNS}"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(p.name)
        .bind(p.scope)
        .bind(p.limit_count)
        .bind(p.window_sec)
        .bind(p.description)
        .bind(p.created_at)
        .fetch_one(&mut *c)
        .await?))
}

/// Inserts unless a policy of that name exists (then `None`, nothing written; waits for a
/// concurrent insert of the same name to commit or roll back).
pub async fn insert_policy_if_absent(
    a: &mut impl Access,
    p: &NewPolicy<'_>,
) -> Result<Option<Policy>, StoreError> {
    let sql = format!(
        "INSERT INTO rate_limit_policies (name, scope, limit_count, window_sec, description, created_at)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING {POLICY_COLUMNS}"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(p.name)
        .bind(p.scope)
        .bind(p.limit_count)
        .bind(p.window_sec)
        .bind(p.description)
        .bind(p.created_at)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn get_policy(a: &mut impl Access, policy_id: i32) -> Result<Option<Policy>, StoreError> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM rate_limit_policies WHERE policy_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(policy_id)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn get_policy_by_name(
    a: &mut impl Access,
    name: &str,
) -> Result<Option<Policy>, StoreError> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM rate_limit_policies WHERE name = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(&mut *c)
        .await?))
}

/// Every policy, by id.
pub async fn list_policies(a: &mut impl Access) -> Result<Vec<Policy>, StoreError> {
    let sql = format!("SELECT {POLICY_COLUMNS} FROM rate_limit_policies ORDER BY policy_id");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *c)
        .await?))
}

/// Writes every column but `policy_id` and `created_at`; returns whether the row exists.
pub async fn update_policy(a: &mut impl Access, p: &Policy) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE rate_limit_policies
         SET name = $2, scope = $3, limit_count = $4, window_sec = $5, description = $6
         WHERE policy_id = $1"
    )
    .bind(p.policy_id)
    .bind(&p.name)
    .bind(&p.scope)
    .bind(p.limit_count)
    .bind(p.window_sec)
    .bind(&p.description)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Deletes the policy with its assignments and counters (cascade).
pub async fn delete_policy(a: &mut impl Access, policy_id: i32) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM rate_limit_policies WHERE policy_id = $1"
    )
    .bind(policy_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// A policy assigned to a user or an org (`rate_limit_assignments`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct Assignment {
    pub assignment_id: Uuid,
    pub policy_id: i32,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
}

pub async fn insert_assignment(a: &mut impl Access, r: &Assignment) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO rate_limit_assignments (assignment_id, policy_id, user_id, org_id)
         VALUES ($1, $2, $3, $4)"
    )
    .bind(r.assignment_id)
    .bind(r.policy_id)
    .bind(r.user_id)
    .bind(r.org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Removes the assignment of `policy_id` to exactly this user / org pair (NULL matching
/// NULL); returns whether one was removed.
pub async fn delete_assignment(
    a: &mut impl Access,
    policy_id: i32,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM rate_limit_assignments
         WHERE policy_id = $1
           AND (user_id = $2 OR (user_id IS NULL AND $2 IS NULL))
           AND (org_id = $3 OR (org_id IS NULL AND $3 IS NULL))"
    )
    .bind(policy_id)
    .bind(user_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// The assignments of one policy.
pub async fn list_assignments(
    a: &mut impl Access,
    policy_id: i32,
) -> Result<Vec<Assignment>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT assignment_id, policy_id, user_id, org_id FROM rate_limit_assignments
         WHERE policy_id = $1 ORDER BY assignment_id"
    )
    .bind(policy_id)
    .fetch_all(&mut *c)
    .await?))
}

/// One target a policy is assigned to: `kind` is `user`, `org` or `api_key`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AssignedTarget {
    pub kind: String,
    pub target_id: Uuid,
}

/// A keyset page of everyone `policy_id` is assigned to (users, orgs and API keys
/// together), by target id after `after`.
pub async fn list_targets(
    a: &mut impl Access,
    policy_id: i32,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<AssignedTarget>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT kind, target_id FROM (
             SELECT 'user' AS kind, user_id AS target_id FROM rate_limit_assignments
              WHERE policy_id = $1 AND user_id IS NOT NULL
             UNION ALL
             SELECT 'org' AS kind, org_id AS target_id FROM rate_limit_assignments
              WHERE policy_id = $1 AND org_id IS NOT NULL
             UNION ALL
             SELECT 'api_key' AS kind, api_key_id AS target_id FROM api_key_rate_limits
              WHERE policy_id = $1
         ) t
         WHERE ($2 IS NULL OR target_id > $2)
         ORDER BY target_id, kind LIMIT $3"
    )
    .bind(policy_id)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(&mut *c)
    .await?))
}

pub async fn insert_api_key_policy(
    a: &mut impl Access,
    api_key_id: Uuid,
    policy_id: i32,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO api_key_rate_limits (api_key_id, policy_id) VALUES ($1, $2)"
    )
    .bind(api_key_id)
    .bind(policy_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn delete_api_key_policy(
    a: &mut impl Access,
    api_key_id: Uuid,
    policy_id: i32,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM api_key_rate_limits WHERE api_key_id = $1 AND policy_id = $2"
    )
    .bind(api_key_id)
    .bind(policy_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// The policies assigned to an API key.
pub async fn list_api_key_policies(
    a: &mut impl Access,
    api_key_id: Uuid,
) -> Result<Vec<Policy>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT p.policy_id, p.name, p.scope, p.limit_count, p.window_sec, p.description,
                p.created_at
         FROM api_key_rate_limits k JOIN rate_limit_policies p ON p.policy_id = k.policy_id
         WHERE k.api_key_id = $1 ORDER BY p.policy_id"
    )
    .bind(api_key_id)
    .fetch_all(&mut *c)
    .await?))
}

/// A policy that may apply to a request, with how specific its assignment is:
/// 1 the API key, 2 the user, 3 the org, 4 the family default (by name).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Candidate {
    pub level: i32,
    #[sqlx(flatten)]
    pub policy: Policy,
}

/// Every policy that could apply, in one round trip; the caller picks (identity rules).
pub async fn candidates(
    a: &mut impl Access,
    api_key_id: Option<Uuid>,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
    default_name: &str,
) -> Result<Vec<Candidate>, StoreError> {
    const P: &str =
        "p.policy_id, p.name, p.scope, p.limit_count, p.window_sec, p.description, p.created_at";
    let sql = format!(
        "SELECT 1 AS level, {P} FROM api_key_rate_limits k
           JOIN rate_limit_policies p ON p.policy_id = k.policy_id WHERE k.api_key_id = $1
         UNION ALL
         SELECT 2 AS level, {P} FROM rate_limit_assignments a
           JOIN rate_limit_policies p ON p.policy_id = a.policy_id
           WHERE a.user_id = $2 AND a.org_id IS NULL
         UNION ALL
         SELECT 3 AS level, {P} FROM rate_limit_assignments a
           JOIN rate_limit_policies p ON p.policy_id = a.policy_id
           WHERE a.org_id = $3 AND a.user_id IS NULL
         UNION ALL
         SELECT 4 AS level, {P} FROM rate_limit_policies p WHERE p.name = $4"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(api_key_id)
        .bind(user_id)
        .bind(org_id)
        .bind(default_name)
        .fetch_all(&mut *c)
        .await?))
}

/// One counter: a subject under a policy in one fixed window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterKey<'a> {
    pub policy_id: i32,
    pub subject: &'a str,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
}

/// Counts one request and returns the new count, in one statement: concurrent calls (from
/// any number of connections or nodes) each see a distinct count, because the upsert
/// locks the row (PostgreSQL) or the database (SQLite) while it adds one. The conflict
/// target is exactly the `rate_limit_counters_key` unique index.
pub async fn increment(
    a: &mut impl Access,
    k: &CounterKey<'_>,
    now: DateTime<Utc>,
) -> Result<i32, StoreError> {
    increment_by(a, k, 1, now).await
}

/// [`increment`] by `n` at once (a node reserving `n` counts); returns the new count.
pub async fn increment_by(
    a: &mut impl Access,
    k: &CounterKey<'_>,
    n: i32,
    now: DateTime<Utc>,
) -> Result<i32, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "INSERT INTO rate_limit_counters
           (counter_id, policy_id, subject, user_id, org_id, window_start, window_end, count,
            last_updated)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $9, $8)
         ON CONFLICT (policy_id, subject, window_start)
         DO UPDATE SET count = rate_limit_counters.count + excluded.count,
                       last_updated = excluded.last_updated
         RETURNING count"
    )
    .bind(Uuid::now_v7())
    .bind(k.policy_id)
    .bind(k.subject)
    .bind(k.user_id)
    .bind(k.org_id)
    .bind(k.window_start)
    .bind(k.window_end)
    .bind(now)
    .bind(n)
    .fetch_one(&mut *c)
    .await?))
}

/// The count of one counter (0 when absent).
pub async fn count(
    a: &mut impl Access,
    policy_id: i32,
    subject: &str,
    window_start: DateTime<Utc>,
) -> Result<i32, StoreError> {
    let n: Option<i32> = with_conn!(a, |c| sqlx::query_scalar(
        "SELECT count FROM rate_limit_counters
         WHERE policy_id = $1 AND subject = $2 AND window_start = $3"
    )
    .bind(policy_id)
    .bind(subject)
    .bind(window_start)
    .fetch_optional(&mut *c)
    .await?);
    Ok(n.unwrap_or(0))
}

/// How many counters exist (all policies and windows).
pub async fn counter_rows(a: &mut impl Access) -> Result<i64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM rate_limit_counters"
    )
    .fetch_one(&mut *c)
    .await?))
}

/// Deletes up to `batch` counters whose window ended at or before `ended_by`; returns how
/// many. Callers loop until fewer than `batch` go, so no statement holds locks for long.
pub async fn purge_ended(
    a: &mut impl Access,
    ended_by: DateTime<Utc>,
    batch: i64,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM rate_limit_counters WHERE counter_id IN
           (SELECT counter_id FROM rate_limit_counters WHERE window_end <= $1 LIMIT $2)"
    )
    .bind(ended_by)
    .bind(batch)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}
