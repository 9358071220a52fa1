//! `sessions`. `refresh_token` holds a hash of the token, never the token.
use super::{Access, Inet, StoreError, TextList, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    #[serde(skip)]
    pub refresh_token: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub ip_address: Option<Inet>,
    pub user_agent: Option<String>,
    /// The org the session was opened for, if any.
    pub org_id: Option<Uuid>,
    /// How the user authenticated (RFC 8176 `amr` values: `pwd`, `otp`, `fed`, …).
    pub auth_methods: TextList,
    pub auth_time: DateTime<Utc>,
    /// Last use, for the idle timeout; written at most once a minute.
    pub last_seen_at: DateTime<Utc>,
    /// The admin impersonating `user_id` through this session (RFC 8693 `act`), if any.
    pub impersonator_id: Option<Uuid>,
}

const COLUMNS: &str = "session_id, user_id, refresh_token, created_at, expires_at, revoked, \
    ip_address, user_agent, org_id, auth_methods, auth_time, last_seen_at, impersonator_id";

pub async fn insert(a: &mut impl Access, s: &Session) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO sessions ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(s.session_id)
        .bind(s.user_id)
        .bind(&s.refresh_token)
        .bind(s.created_at)
        .bind(s.expires_at)
        .bind(s.revoked)
        .bind(s.ip_address)
        .bind(&s.user_agent)
        .bind(s.org_id)
        .bind(&s.auth_methods)
        .bind(s.auth_time)
        .bind(s.last_seen_at)
        .bind(s.impersonator_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(a: &mut impl Access, session_id: Uuid) -> Result<Option<Session>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE session_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session_id)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn find_by_refresh_hash(
    a: &mut impl Access,
    hash: &str,
) -> Result<Option<Session>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sessions WHERE refresh_token = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(hash)
        .fetch_optional(&mut *c)
        .await?))
}

/// The user's sessions that are neither revoked nor expired at `now`, newest first.
pub async fn list_active_for_user(
    a: &mut impl Access,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<Session>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND NOT revoked AND expires_at > $2
         ORDER BY created_at DESC, session_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(now)
        .fetch_all(&mut *c)
        .await?))
}

pub async fn revoke(a: &mut impl Access, session_id: Uuid) -> Result<bool, StoreError> {
    let r = with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET revoked = $2 WHERE session_id = $1 AND NOT revoked"
    )
    .bind(session_id)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(r == 1)
}

/// Revokes every session of the user except `keep`; returns how many were revoked.
pub async fn revoke_all_for_user(
    a: &mut impl Access,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET revoked = $3
         WHERE user_id = $1 AND NOT revoked AND ($2 IS NULL OR session_id <> $2)"
    )
    .bind(user_id)
    .bind(keep)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Records use of the session unless it was recorded less than `min_interval` ago (so a busy
/// session costs at most one write a minute); returns whether a row was written.
pub async fn touch(
    a: &mut impl Access,
    session_id: Uuid,
    now: DateTime<Utc>,
    min_interval: chrono::Duration,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET last_seen_at = $2 WHERE session_id = $1 AND last_seen_at <= $3"
    )
    .bind(session_id)
    .bind(now)
    .bind(now - min_interval)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Replaces the refresh-token hash, only if it still is `old_hash` (so one of two concurrent
/// rotations wins). Returns whether it was replaced.
pub async fn rotate_refresh_hash(
    a: &mut impl Access,
    session_id: Uuid,
    old_hash: &str,
    new_hash: &str,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET refresh_token = $3
         WHERE session_id = $1 AND refresh_token = $2 AND NOT revoked"
    )
    .bind(session_id)
    .bind(old_hash)
    .bind(new_hash)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Revokes every session opened for the org; returns how many.
pub async fn revoke_all_for_org(a: &mut impl Access, org_id: Uuid) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET revoked = $2 WHERE org_id = $1 AND NOT revoked"
    )
    .bind(org_id)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Revokes the user's sessions opened for the org; returns how many.
pub async fn revoke_for_member(
    a: &mut impl Access,
    user_id: Uuid,
    org_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET revoked = $3 WHERE user_id = $1 AND org_id = $2 AND NOT revoked"
    )
    .bind(user_id)
    .bind(org_id)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}
