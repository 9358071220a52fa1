//! `login_attempts`: one row per password (or other) login attempt, kept as history.
use super::{Access, Inet, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct LoginAttempt {
    pub attempt_id: Uuid,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    pub success: bool,
    pub ip_address: Option<Inet>,
    pub user_agent: Option<String>,
}

const COLUMNS: &str = "attempt_id, user_id, org_id, timestamp, success, ip_address, user_agent";

pub async fn insert(a: &mut impl Access, r: &LoginAttempt) -> Result<(), StoreError> {
    let sql = format!("INSERT INTO login_attempts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(r.attempt_id)
        .bind(r.user_id)
        .bind(r.org_id)
        .bind(r.timestamp)
        .bind(r.success)
        .bind(r.ip_address)
        .bind(&r.user_agent)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// The user's attempts, newest first.
pub async fn list_for_user(
    a: &mut impl Access,
    user_id: Uuid,
    limit: u32,
) -> Result<Vec<LoginAttempt>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM login_attempts WHERE user_id = $1
         ORDER BY timestamp DESC, attempt_id DESC LIMIT $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}
