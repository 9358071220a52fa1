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

/// Every member of an org (for recomputing derived columns), ordered by `user_id`.
pub async fn all_for_org(a: &mut impl Access, org_id: Uuid) -> Result<Vec<Membership>, StoreError> {
    let sql =
        format!("SELECT {COLUMNS} FROM user_organization_info WHERE org_id = $1 ORDER BY user_id");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Writes the primary role, the mirrored role structure and the derived role lists.
pub async fn update_derived(a: &mut impl Access, m: &Membership) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE user_organization_info SET user_role = $3, org_role_structure = $4,
             inherited_user_roles_plus_current_role = $5, user_permissions = $6,
             additional_roles = $7
         WHERE user_id = $1 AND org_id = $2"
    )
    .bind(m.user_id)
    .bind(m.org_id)
    .bind(&m.user_role)
    .bind(&m.org_role_structure)
    .bind(&m.inherited_user_roles_plus_current_role)
    .bind(&m.user_permissions)
    .bind(&m.additional_roles)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Members of the org whose primary role is `role_name` (`user_role` always holds a role's
/// exact name).
pub async fn count_with_primary_role(
    a: &mut impl Access,
    org_id: Uuid,
    role_name: &str,
) -> Result<i64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_organization_info
         WHERE org_id = $1 AND user_role = $2"
    )
    .bind(org_id)
    .bind(role_name)
    .fetch_one(&mut *c)
    .await?))
}

/// Follows a role rename in `user_role`; returns how many rows changed.
pub async fn rename_primary_role(
    a: &mut impl Access,
    org_id: Uuid,
    old_name: &str,
    new_name: &str,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE user_organization_info SET user_role = $3
         WHERE org_id = $1 AND user_role = $2"
    )
    .bind(org_id)
    .bind(old_name)
    .bind(new_name)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Sets the primary role name; returns whether the membership exists.
pub async fn set_user_role(
    a: &mut impl Access,
    user_id: Uuid,
    org_id: Uuid,
    user_role: &str,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE user_organization_info SET user_role = $3 WHERE user_id = $1 AND org_id = $2"
    )
    .bind(user_id)
    .bind(org_id)
    .bind(user_role)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
