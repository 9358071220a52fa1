//! `roles`, `permissions`, `role_permissions`, `role_inheritance`, `user_roles`.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Role {
    pub role_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Permission {
    pub permission_id: Uuid,
    /// `None`: a global permission, grantable in every org.
    pub org_id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

const ROLE_COLUMNS: &str = "role_id, org_id, name, description, created_at";
const PERMISSION_COLUMNS: &str = "permission_id, org_id, name, description, created_at";

// Roles

pub async fn insert_role(a: &mut impl Access, r: &Role) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO roles (role_id, org_id, name, description, created_at, name_key)
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(r.role_id)
    .bind(r.org_id)
    .bind(&r.name)
    .bind(&r.description)
    .bind(r.created_at)
    .bind(super::types::fold_key(&r.name))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn get_role(a: &mut impl Access, role_id: Uuid) -> Result<Option<Role>, StoreError> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE role_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(role_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Case-insensitive lookup (uses `roles_org_name_key` on `(org_id, name_key)`).
pub async fn find_role_by_name(
    a: &mut impl Access,
    org_id: Uuid,
    name: &str,
) -> Result<Option<Role>, StoreError> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE org_id = $1 AND name_key = $2");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(super::types::fold_key(name))
        .fetch_optional(&mut *c)
        .await?))
}

/// All roles of an org, by name.
pub async fn list_roles(a: &mut impl Access, org_id: Uuid) -> Result<Vec<Role>, StoreError> {
    let sql = format!("SELECT {ROLE_COLUMNS} FROM roles WHERE org_id = $1 ORDER BY name, role_id");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .fetch_all(&mut *c)
        .await?))
}

pub async fn rename_role(
    a: &mut impl Access,
    role_id: Uuid,
    name: &str,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE roles SET name = $2, name_key = $3 WHERE role_id = $1"
    )
    .bind(role_id)
    .bind(name)
    .bind(super::types::fold_key(name))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Deletes the role and (by cascade) its grants, inheritance edges and assignments.
pub async fn delete_role(a: &mut impl Access, role_id: Uuid) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query("DELETE FROM roles WHERE role_id = $1")
        .bind(role_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(n == 1)
}

// Permissions

pub async fn insert_permission(a: &mut impl Access, p: &Permission) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO permissions (permission_id, org_id, name, description, created_at, name_key)
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(p.permission_id)
    .bind(p.org_id)
    .bind(&p.name)
    .bind(&p.description)
    .bind(p.created_at)
    .bind(super::types::fold_key(&p.name))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn get_permission(
    a: &mut impl Access,
    permission_id: Uuid,
) -> Result<Option<Permission>, StoreError> {
    let sql = format!("SELECT {PERMISSION_COLUMNS} FROM permissions WHERE permission_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(permission_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// The org's own permissions and the global ones, by name.
pub async fn list_permissions(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<Permission>, StoreError> {
    let sql = format!(
        "SELECT {PERMISSION_COLUMNS} FROM permissions
         WHERE org_id = $1 OR org_id IS NULL ORDER BY name, permission_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Deletes the permission and (by cascade) its grants.
pub async fn delete_permission(
    a: &mut impl Access,
    permission_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM permissions WHERE permission_id = $1"
    )
    .bind(permission_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

// Grants, inheritance edges, assignments. Inserts are idempotent and say whether they added.

pub async fn grant(
    a: &mut impl Access,
    role_id: Uuid,
    permission_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "INSERT INTO role_permissions (role_id, permission_id) VALUES ($1, $2)
         ON CONFLICT (role_id, permission_id) DO NOTHING"
    )
    .bind(role_id)
    .bind(permission_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn revoke(
    a: &mut impl Access,
    role_id: Uuid,
    permission_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM role_permissions WHERE role_id = $1 AND permission_id = $2"
    )
    .bind(role_id)
    .bind(permission_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// `role_id` includes `parent_role_id`.
pub async fn add_edge(
    a: &mut impl Access,
    role_id: Uuid,
    parent_role_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "INSERT INTO role_inheritance (role_id, parent_role_id) VALUES ($1, $2)
         ON CONFLICT (role_id, parent_role_id) DO NOTHING"
    )
    .bind(role_id)
    .bind(parent_role_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn remove_edge(
    a: &mut impl Access,
    role_id: Uuid,
    parent_role_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM role_inheritance WHERE role_id = $1 AND parent_role_id = $2"
    )
    .bind(role_id)
    .bind(parent_role_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn assign(
    a: &mut impl Access,
    user_id: Uuid,
    role_id: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "INSERT INTO user_roles (user_id, role_id, assigned_at) VALUES ($1, $2, $3)
         ON CONFLICT (user_id, role_id) DO NOTHING"
    )
    .bind(user_id)
    .bind(role_id)
    .bind(at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn unassign(
    a: &mut impl Access,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM user_roles WHERE user_id = $1 AND role_id = $2"
    )
    .bind(user_id)
    .bind(role_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Removes every assignment of the user to a role of the org; returns how many.
pub async fn unassign_all_in_org(
    a: &mut impl Access,
    user_id: Uuid,
    org_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM user_roles
         WHERE user_id = $1 AND role_id IN (SELECT role_id FROM roles WHERE org_id = $2)"
    )
    .bind(user_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

// The org's role graph, read whole (an org has tens of roles, not thousands).

/// Inheritance edges `(role_id, parent_role_id)` among the org's roles.
pub async fn org_edges(a: &mut impl Access, org_id: Uuid) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT ri.role_id, ri.parent_role_id FROM role_inheritance ri
         JOIN roles r ON r.role_id = ri.role_id
         WHERE r.org_id = $1 ORDER BY ri.role_id, ri.parent_role_id"
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}

/// `(role_id, permission name)` for every grant to one of the org's roles.
pub async fn org_grants(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<(Uuid, String)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT rp.role_id, p.name FROM role_permissions rp
         JOIN roles r ON r.role_id = rp.role_id
         JOIN permissions p ON p.permission_id = rp.permission_id
         WHERE r.org_id = $1 ORDER BY rp.role_id, p.name"
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}

/// `(user_id, role_id)` for every assignment of one of the org's roles.
pub async fn org_assignments(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT ur.user_id, ur.role_id FROM user_roles ur
         JOIN roles r ON r.role_id = ur.role_id
         WHERE r.org_id = $1 ORDER BY ur.user_id, ur.role_id"
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}

/// The roles of the org assigned to one user.
pub async fn member_role_ids(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT ur.role_id FROM user_roles ur
         JOIN roles r ON r.role_id = ur.role_id
         WHERE r.org_id = $1 AND ur.user_id = $2 ORDER BY ur.role_id"
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_all(&mut *c)
    .await?))
}
