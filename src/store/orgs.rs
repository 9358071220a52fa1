//! `organizations`.
use super::{Access, Json, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Org {
    pub org_id: Uuid,
    pub org_name: String,
    pub url_safe_org_name: String,
    pub org_metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    /// `single_role` (one role per member) or `multi_role`.
    pub org_role_structure: String,
    /// Members must use MFA to sign in.
    pub mfa_required: bool,
}

const COLUMNS: &str = "org_id, org_name, url_safe_org_name, org_metadata, created_at, org_role_structure, mfa_required";

pub async fn insert(a: &mut impl Access, org: &Org) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO organizations (org_id, org_name, url_safe_org_name, org_metadata, created_at,
                                    org_role_structure, mfa_required)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(org.org_id)
    .bind(&org.org_name)
    .bind(&org.url_safe_org_name)
    .bind(&org.org_metadata)
    .bind(org.created_at)
    .bind(&org.org_role_structure)
    .bind(org.mfa_required)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn get(a: &mut impl Access, org_id: Uuid) -> Result<Option<Org>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM organizations WHERE org_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn get_by_slug(a: &mut impl Access, slug: &str) -> Result<Option<Org>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM organizations WHERE url_safe_org_name = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(slug)
        .fetch_optional(&mut *c)
        .await?))
}

/// Keyset page ordered by `org_id` (UUIDv7, so creation order): rows after `after`.
pub async fn list(
    a: &mut impl Access,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Org>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM organizations WHERE ($1 IS NULL OR org_id > $1) ORDER BY org_id LIMIT $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// Renames the org and/or replaces its metadata.
pub async fn update_profile(
    a: &mut impl Access,
    org_id: Uuid,
    org_name: &str,
    org_metadata: &Json<serde_json::Value>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE organizations SET org_name = $2, org_metadata = $3 WHERE org_id = $1"
    )
    .bind(org_id)
    .bind(org_name)
    .bind(org_metadata)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Deletes the org and (by cascade) everything it owns. Returns whether it existed.
pub async fn delete(a: &mut impl Access, org_id: Uuid) -> Result<bool, StoreError> {
    let r = with_conn!(a, |c| sqlx::query(
        "DELETE FROM organizations WHERE org_id = $1"
    )
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(r == 1)
}

/// Locks the org row for the rest of the transaction (PostgreSQL: row lock; SQLite: the
/// write lock), so concurrent changes to one org's roles run one after the other and a
/// cycle check cannot race. Returns whether the org exists.
pub async fn lock(a: &mut impl Access, org_id: Uuid) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE organizations SET org_role_structure = org_role_structure WHERE org_id = $1"
    )
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn set_role_structure(
    a: &mut impl Access,
    org_id: Uuid,
    structure: &str,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE organizations SET org_role_structure = $2 WHERE org_id = $1"
    )
    .bind(org_id)
    .bind(structure)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
