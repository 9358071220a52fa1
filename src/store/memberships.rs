//! `user_organization_info`: a user's membership of an org, with its derived role lists.
use super::{Access, StoreError, TextList, with_conn};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Membership {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub user_role: String,
    pub url_safe_org_name: String,
    pub org_role_structure: String,
    pub inherited_user_roles_plus_current_role: TextList,
    pub user_permissions: TextList,
    pub additional_roles: TextList,
}

const COLUMNS: &str = "user_id, org_id, user_role, url_safe_org_name, org_role_structure, \
    inherited_user_roles_plus_current_role, user_permissions, additional_roles";

pub async fn insert(a: &mut impl Access, m: &Membership) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO user_organization_info ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(m.user_id)
        .bind(m.org_id)
        .bind(&m.user_role)
        .bind(&m.url_safe_org_name)
        .bind(&m.org_role_structure)
        .bind(&m.inherited_user_roles_plus_current_role)
        .bind(&m.user_permissions)
        .bind(&m.additional_roles)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(
    a: &mut impl Access,
    user_id: Uuid,
    org_id: Uuid,
) -> Result<Option<Membership>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM user_organization_info WHERE user_id = $1 AND org_id = $2");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(org_id)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn list_for_user(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<Vec<Membership>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM user_organization_info WHERE user_id = $1 ORDER BY org_id");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Keyset page of an org's members ordered by `user_id`.
pub async fn list_for_org(
    a: &mut impl Access,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Membership>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM user_organization_info
         WHERE org_id = $1 AND ($2 IS NULL OR user_id > $2) ORDER BY user_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

pub async fn delete(a: &mut impl Access, user_id: Uuid, org_id: Uuid) -> Result<bool, StoreError> {
    let r = with_conn!(a, |c| sqlx::query(
        "DELETE FROM user_organization_info WHERE user_id = $1 AND org_id = $2"
    )
    .bind(user_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(r == 1)
}
