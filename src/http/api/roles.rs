//! `/organizations/{org_id}/roles` and `/permissions`: roles, their permissions and
//! inheritance. Ids of another org are 404.
use super::dto::{Permission, Role};
use super::{Caller, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::identity::roles;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(rename_role, delete_role))
        .routes(routes!(grant_permission))
        .routes(routes!(revoke_permission))
        .routes(routes!(add_parent))
        .routes(routes!(remove_parent))
        .routes(routes!(list_permissions, create_permission))
        .routes(routes!(delete_permission))
}

#[utoipa::path(get, path = "/organizations/{org_id}/roles", tag = "roles",
    params(("org_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Role>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_roles(
    caller: Caller,
    Path(org_id): Path<Uuid>,
) -> Result<axum::Json<Vec<Role>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_READ).await?;
    let list = roles::list_roles(&caller.id, scope.org_id()).await?;
    Ok(axum::Json(list.into_iter().map(Role::from).collect()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNamed {
    pub name: String,
    pub description: Option<String>,
}

#[utoipa::path(post, path = "/organizations/{org_id}/roles", tag = "roles",
    params(("org_id" = Uuid, Path)), request_body = NewNamed,
    responses((status = 201, body = Role),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_role(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<NewNamed>,
) -> Result<(StatusCode, axum::Json<Role>), ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    let r = roles::create_role(
        &caller.id,
        scope.org_id(),
        &body.name,
        body.description.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(r.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub name: String,
}

#[utoipa::path(patch, path = "/organizations/{org_id}/roles/{role_id}", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path)), request_body = Rename,
    responses((status = 200, body = Role),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn rename_role(
    caller: Caller,
    Path((org_id, role_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<Rename>,
) -> Result<axum::Json<Role>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    Ok(axum::Json(
        roles::rename_role(&caller.id, scope.org_id(), role_id, &body.name)
            .await?
            .into(),
    ))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/roles/{role_id}", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_role(
    caller: Caller,
    Path((org_id, role_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::delete_role(&caller.id, scope.org_id(), role_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionRef {
    pub permission_id: Uuid,
}

#[utoipa::path(post, path = "/organizations/{org_id}/roles/{role_id}/permissions", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path)), request_body = PermissionRef,
    responses((status = 204, description = "Granted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn grant_permission(
    caller: Caller,
    Path((org_id, role_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<PermissionRef>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::grant_permission(&caller.id, scope.org_id(), role_id, body.permission_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/organizations/{org_id}/roles/{role_id}/permissions/{permission_id}", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 204, description = "Revoked"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_permission(
    caller: Caller,
    Path((org_id, role_id, permission_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::revoke_permission(&caller.id, scope.org_id(), role_id, permission_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRef {
    /// The role to include: members with this role get the parent's roles and permissions.
    pub parent_role_id: Uuid,
}

/// Makes the role include another (a cycle is a 409).
#[utoipa::path(post, path = "/organizations/{org_id}/roles/{role_id}/parents", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path)), request_body = ParentRef,
    responses((status = 204, description = "Added"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_parent(
    caller: Caller,
    Path((org_id, role_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<ParentRef>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::add_inheritance(&caller.id, scope.org_id(), role_id, body.parent_role_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/organizations/{org_id}/roles/{role_id}/parents/{parent_role_id}", tag = "roles",
    params(("org_id" = Uuid, Path), ("role_id" = Uuid, Path), ("parent_role_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_parent(
    caller: Caller,
    Path((org_id, role_id, parent_role_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::remove_inheritance(&caller.id, scope.org_id(), role_id, parent_role_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/organizations/{org_id}/permissions", tag = "roles",
    params(("org_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Permission>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_permissions(
    caller: Caller,
    Path(org_id): Path<Uuid>,
) -> Result<axum::Json<Vec<Permission>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_READ).await?;
    let list = roles::list_permissions(&caller.id, scope.org_id()).await?;
    Ok(axum::Json(list.into_iter().map(Permission::from).collect()))
}

#[utoipa::path(post, path = "/organizations/{org_id}/permissions", tag = "roles",
    params(("org_id" = Uuid, Path)), request_body = NewNamed,
    responses((status = 201, body = Permission),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_permission(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<NewNamed>,
) -> Result<(StatusCode, axum::Json<Permission>), ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    let p = roles::create_permission(
        &caller.id,
        scope.org_id(),
        &body.name,
        body.description.as_deref(),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(p.into())))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/permissions/{permission_id}", tag = "roles",
    params(("org_id" = Uuid, Path), ("permission_id" = Uuid, Path)),
    responses((status = 204, description = "Deleted"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_permission(
    caller: Caller,
    Path((org_id, permission_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    roles::delete_permission(&caller.id, scope.org_id(), permission_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
