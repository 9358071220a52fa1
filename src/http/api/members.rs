//! `/organizations/{org_id}/members`: memberships, a member's roles, sessions and MFA
//! devices. Every id is checked against the org in the path: another org's is a 404.
use super::dto::{Membership, Session};
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{OrgScope, authorize_org, perm};
use crate::identity::{memberships, mfa, roles, sessions};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members, add_member))
        .routes(routes!(get_member, update_member, remove_member))
        .routes(routes!(assign_role))
        .routes(routes!(unassign_role))
        .routes(routes!(list_member_sessions, revoke_member_sessions))
        .routes(routes!(list_mfa_devices))
        .routes(routes!(remove_mfa_device))
}

/// The member, checked to belong to the scope's org.
async fn member(
    caller: &Caller,
    scope: &OrgScope,
    user_id: Uuid,
) -> Result<crate::store::memberships::Membership, ApiError> {
    Ok(memberships::get(&caller.id, scope.org_id(), user_id).await?)
}

#[utoipa::path(get, path = "/organizations/{org_id}/members", tag = "members",
    params(("org_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<Membership>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_members(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Membership>>, ApiError> {
    let (after, limit) = q.parts()?;
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_READ).await?;
    let rows = memberships::list_for_org(&caller.id, scope.org_id(), after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |m| m.user_id,
        Membership::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: Uuid,
    /// Role name (default `member`).
    pub role: Option<String>,
}

#[utoipa::path(post, path = "/organizations/{org_id}/members", tag = "members",
    params(("org_id" = Uuid, Path)), request_body = AddMember,
    responses((status = 201, body = Membership),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn add_member(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<AddMember>,
) -> Result<(StatusCode, axum::Json<Membership>), ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    let role = body
        .role
        .as_deref()
        .unwrap_or(crate::identity::users::DEFAULT_MEMBER_ROLE);
    let m = memberships::add(&caller.id, scope.org_id(), body.user_id, role).await?;
    Ok((StatusCode::CREATED, axum::Json(m.into())))
}

#[utoipa::path(get, path = "/organizations/{org_id}/members/{user_id}", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = Membership),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_member(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Membership>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_READ).await?;
    Ok(axum::Json(member(&caller, &scope, user_id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// The new primary role (name).
    pub role: String,
}

#[utoipa::path(patch, path = "/organizations/{org_id}/members/{user_id}", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = UpdateMember,
    responses((status = 200, body = Membership),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn update_member(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<UpdateMember>,
) -> Result<axum::Json<Membership>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    let m = memberships::set_primary_role(&caller.id, scope.org_id(), user_id, &body.role).await?;
    Ok(axum::Json(m.into()))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/members/{user_id}", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_member(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_WRITE).await?;
    memberships::remove(&caller.id, scope.org_id(), user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignRole {
    pub role_id: Uuid,
}

/// Gives a member a role (`roles:write`); in a `single_role` org it replaces the primary.
#[utoipa::path(post, path = "/organizations/{org_id}/members/{user_id}/roles", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = AssignRole,
    responses((status = 200, body = Membership),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn assign_role(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<AssignRole>,
) -> Result<axum::Json<Membership>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    let m = roles::assign_role(&caller.id, scope.org_id(), user_id, body.role_id).await?;
    Ok(axum::Json(m.into()))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/members/{user_id}/roles/{role_id}", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path), ("role_id" = Uuid, Path)),
    responses((status = 200, body = Membership),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn unassign_role(
    caller: Caller,
    Path((org_id, user_id, role_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<axum::Json<Membership>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::ROLES_WRITE).await?;
    let m = roles::unassign_role(&caller.id, scope.org_id(), user_id, role_id).await?;
    Ok(axum::Json(m.into()))
}

/// A member's usable sessions opened for this org (`members:read`).
#[utoipa::path(get, path = "/organizations/{org_id}/members/{user_id}/sessions", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Session>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_member_sessions(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Vec<Session>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MEMBERS_READ).await?;
    member(&caller, &scope, user_id).await?;
    let list = sessions::list_active(&caller.id, user_id).await?;
    Ok(axum::Json(
        list.into_iter()
            .filter(|s| s.org_id == Some(scope.org_id()))
            .map(Session::from)
            .collect(),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Ends every session of the member (`sessions:write`).
#[utoipa::path(delete, path = "/organizations/{org_id}/members/{user_id}/sessions", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = Revoked),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_member_sessions(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Revoked>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::SESSIONS_WRITE).await?;
    member(&caller, &scope, user_id).await?;
    let revoked = sessions::revoke_all_for_user(&caller.id, user_id, None).await?;
    Ok(axum::Json(Revoked { revoked }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaDevice {
    pub device_id: Uuid,
    /// `totp`.
    #[serde(rename = "type")]
    pub device_type: String,
    pub created_at: DateTime<Utc>,
    pub enabled: bool,
    pub last_used: Option<DateTime<Utc>>,
}

#[utoipa::path(get, path = "/organizations/{org_id}/members/{user_id}/mfa-devices", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = Vec<MfaDevice>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_mfa_devices(
    caller: Caller,
    Path((org_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Vec<MfaDevice>>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MFA_WRITE).await?;
    member(&caller, &scope, user_id).await?;
    let devices = mfa::list_devices(&caller.id, user_id).await?;
    Ok(axum::Json(
        devices
            .into_iter()
            .map(|d| MfaDevice {
                device_id: d.device_id,
                device_type: d.device_type,
                created_at: d.created_at,
                enabled: d.enabled,
                last_used: d.last_used,
            })
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/organizations/{org_id}/members/{user_id}/mfa-devices/{device_id}", tag = "members",
    params(("org_id" = Uuid, Path), ("user_id" = Uuid, Path), ("device_id" = Uuid, Path)),
    responses((status = 204, description = "Removed"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn remove_mfa_device(
    caller: Caller,
    Path((org_id, user_id, device_id)): Path<(Uuid, Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::MFA_WRITE).await?;
    member(&caller, &scope, user_id).await?;
    mfa::remove_device(&caller.id, user_id, device_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
