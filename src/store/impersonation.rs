//! `impersonation_logs`, and the one `api_keys` question impersonation asks (is a user a
//! super-admin?).
use super::{Access, Inet, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct ImpersonationLog {
    pub log_id: Uuid,
    /// The admin (cleared if the admin's account is deleted).
    pub admin_user_id: Option<Uuid>,
    /// The user being impersonated (cleared if that account is deleted).
    pub impersonated_user_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ip_address: Option<Inet>,
    pub user_agent: Option<String>,
    /// The org the admin acted through.
    pub org_id: Option<Uuid>,
    /// The session opened for the impersonation.
    pub session_id: Option<Uuid>,
    /// When the impersonation ends by itself.
    pub expires_at: DateTime<Utc>,
}

const COLUMNS: &str = "log_id, admin_user_id, impersonated_user_id, started_at, ended_at, \
    ip_address, user_agent, org_id, session_id, expires_at";

pub async fn insert(a: &mut impl Access, l: &ImpersonationLog) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO impersonation_logs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(l.log_id)
        .bind(l.admin_user_id)
        .bind(l.impersonated_user_id)
        .bind(l.started_at)
        .bind(l.ended_at)
        .bind(l.ip_address)
        .bind(&l.user_agent)
        .bind(l.org_id)
        .bind(l.session_id)
        .bind(l.expires_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(
    a: &mut impl Access,
    log_id: Uuid,
) -> Result<Option<ImpersonationLog>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM impersonation_logs WHERE log_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(log_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Sets `ended_at` unless already set; returns whether it was set.
pub async fn set_ended(
    a: &mut impl Access,
    log_id: Uuid,
    ended_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE impersonation_logs SET ended_at = $2 WHERE log_id = $1 AND ended_at IS NULL"
    )
    .bind(log_id)
    .bind(ended_at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// The admin's impersonations still going at `now`: not ended, not expired, and their
/// session not revoked. Newest first.
pub async fn list_active_for_admin(
    a: &mut impl Access,
    admin_user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<ImpersonationLog>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM impersonation_logs l
         WHERE admin_user_id = $1 AND ended_at IS NULL AND expires_at > $2
           AND EXISTS (SELECT 1 FROM sessions s
                       WHERE s.session_id = l.session_id AND NOT s.revoked)
         ORDER BY started_at DESC, log_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(admin_user_id)
        .bind(now)
        .fetch_all(&mut *c)
        .await?))
}

/// Impersonations past their `expires_at` at `now` whose `ended_at` is not yet set.
pub async fn list_expired_open(
    a: &mut impl Access,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ImpersonationLog>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM impersonation_logs
         WHERE ended_at IS NULL AND expires_at <= $1 ORDER BY log_id LIMIT $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// A keyset page of the log in start order (`log_id` is a UUIDv7), optionally only one
/// admin's or one impersonated user's.
pub async fn list(
    a: &mut impl Access,
    admin_user_id: Option<Uuid>,
    impersonated_user_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ImpersonationLog>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM impersonation_logs
         WHERE ($1 IS NULL OR admin_user_id = $1)
           AND ($2 IS NULL OR impersonated_user_id = $2)
           AND ($3 IS NULL OR log_id > $3)
         ORDER BY log_id LIMIT $4"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(admin_user_id)
        .bind(impersonated_user_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// A keyset page of one org's impersonations in start order, after `after`.
pub async fn list_in_org(
    a: &mut impl Access,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ImpersonationLog>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM impersonation_logs
         WHERE org_id = $1 AND ($2 IS NULL OR log_id > $2)
         ORDER BY log_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// Whether the user holds a super-admin API key (`is_admin`) that is neither revoked nor
/// expired at `now`.
pub async fn holds_admin_key(
    a: &mut impl Access,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM api_keys
                        WHERE user_id = $1 AND is_admin AND NOT revoked
                          AND (expires_at IS NULL OR expires_at > $2))"
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(&mut *c)
    .await?))
}
