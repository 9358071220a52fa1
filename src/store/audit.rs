//! `audit_logs`: one row per mutation, written in the mutation's transaction.
use super::{Access, Inet, Json, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct AuditLog {
    pub log_id: Uuid,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub ip_address: Option<Inet>,
    pub user_agent: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub details: Json<serde_json::Value>,
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub impersonator_id: Option<Uuid>,
}

const COLUMNS: &str = "log_id, user_id, org_id, action, object_type, object_id, ip_address, \
    user_agent, timestamp, details, actor_type, actor_id, impersonator_id";

pub async fn insert(a: &mut impl Access, r: &AuditLog) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO audit_logs ({COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(r.log_id)
        .bind(r.user_id)
        .bind(r.org_id)
        .bind(&r.action)
        .bind(&r.object_type)
        .bind(&r.object_id)
        .bind(r.ip_address)
        .bind(&r.user_agent)
        .bind(r.timestamp)
        .bind(&r.details)
        .bind(&r.actor_type)
        .bind(&r.actor_id)
        .bind(r.impersonator_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// Filters for reading the log; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub org_id: Option<Uuid>,
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// A keyset page in log order (`log_id` is a UUIDv7, so time order), after `after`.
pub async fn list(
    a: &mut impl Access,
    f: &Filter,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<AuditLog>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_logs
         WHERE ($1 IS NULL OR org_id = $1)
           AND ($2 IS NULL OR actor_type = $2)
           AND ($3 IS NULL OR actor_id = $3)
           AND ($4 IS NULL OR user_id = $4)
           AND ($5 IS NULL OR action = $5)
           AND ($6 IS NULL OR timestamp >= $6)
           AND ($7 IS NULL OR timestamp < $7)
           AND ($8 IS NULL OR log_id > $8)
         ORDER BY log_id LIMIT $9"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(f.org_id)
        .bind(&f.actor_type)
        .bind(&f.actor_id)
        .bind(f.user_id)
        .bind(&f.action)
        .bind(f.since)
        .bind(f.until)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}
