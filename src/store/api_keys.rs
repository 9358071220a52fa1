//! `api_keys` (and `api_key_rate_limits` is the rate-limit module's). Only the SHA-256 of a
//! key's secret is stored; the public prefix is the lookup key.
use super::{Access, StoreError, TextList, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct ApiKey {
    pub api_key_id: Uuid,
    /// The owner; `None` for a service (super-admin) key.
    pub user_id: Option<Uuid>,
    #[serde(skip)]
    pub key_hash: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    pub key_prefix: String,
    pub org_id: Option<Uuid>,
    pub permissions: TextList,
    pub is_admin: bool,
    pub last_used_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "api_key_id, user_id, key_hash, description, created_at, expires_at, \
    revoked, key_prefix, org_id, permissions, is_admin, last_used_at";

pub async fn insert(a: &mut impl Access, k: &ApiKey) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO api_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(k.api_key_id)
        .bind(k.user_id)
        .bind(&k.key_hash)
        .bind(&k.description)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.revoked)
        .bind(&k.key_prefix)
        .bind(k.org_id)
        .bind(&k.permissions)
        .bind(k.is_admin)
        .bind(k.last_used_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(a: &mut impl Access, api_key_id: Uuid) -> Result<Option<ApiKey>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE api_key_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(api_key_id)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn find_by_prefix(
    a: &mut impl Access,
    prefix: &str,
) -> Result<Option<ApiKey>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_prefix = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(prefix)
        .fetch_optional(&mut *c)
        .await?))
}

/// Keys visible in a listing: all (`org_id` None) or those scoped to one org; keyset page.
pub async fn list(
    a: &mut impl Access,
    org_id: Option<Uuid>,
    user_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ApiKey>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys
         WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR user_id = $2)
           AND ($3 IS NULL OR api_key_id > $3)
         ORDER BY api_key_id LIMIT $4"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(user_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

pub async fn revoke(a: &mut impl Access, api_key_id: Uuid) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE api_keys SET revoked = $2 WHERE api_key_id = $1 AND NOT revoked"
    )
    .bind(api_key_id)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Records use at most once a minute per key.
pub async fn touch(
    a: &mut impl Access,
    api_key_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE api_keys SET last_used_at = $2
         WHERE api_key_id = $1 AND (last_used_at IS NULL OR last_used_at <= $3)"
    )
    .bind(api_key_id)
    .bind(now)
    .bind(now - chrono::Duration::seconds(60))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Whether the user holds a live super-admin key.
pub async fn user_is_super_admin(a: &mut impl Access, user_id: Uuid) -> Result<bool, StoreError> {
    let n: i64 = with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE user_id = $1 AND is_admin AND NOT revoked"
    )
    .bind(user_id)
    .fetch_one(&mut *c)
    .await?);
    Ok(n > 0)
}
