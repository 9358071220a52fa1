//! `/organizations/{org_id}/impersonations`: the owner of a key (an org admin holding
//! `impersonate`) starts and ends impersonating a member; the org's log is readable with
//! `audit:read` (it is an audit trail: admins who may not impersonate can still review it).
//!
//! Starting answers with the log row and the member's session id, never a token: the
//! management API authenticates machines, and handing a member's refresh token to an API
//! key would make the key a credential for the member's account.
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm};
use crate::identity::impersonation;
use crate::store::impersonation::ImpersonationLog;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_impersonations, start_impersonation))
        .routes(routes!(end_impersonation))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Impersonation {
    pub log_id: Uuid,
    /// The admin (null once that account is deleted).
    pub admin_user_id: Option<Uuid>,
    /// The member impersonated (null once that account is deleted).
    pub impersonated_user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    /// The member's session opened for the impersonation (it names the admin).
    pub session_id: Option<Uuid>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// When it ends by itself (`impersonation.max_duration_secs`).
    pub expires_at: DateTime<Utc>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl From<ImpersonationLog> for Impersonation {
    fn from(l: ImpersonationLog) -> Self {
        Impersonation {
            log_id: l.log_id,
            admin_user_id: l.admin_user_id,
            impersonated_user_id: l.impersonated_user_id,
            org_id: l.org_id,
            session_id: l.session_id,
            started_at: l.started_at,
            ended_at: l.ended_at,
            expires_at: l.expires_at,
            ip_address: l.ip_address.map(|i| i.0.to_string()),
            user_agent: l.user_agent,
        }
    }
}

/// The org's impersonations in start order (`audit:read`).
#[utoipa::path(get, path = "/organizations/{org_id}/impersonations", tag = "impersonation",
    params(("org_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = Page<Impersonation>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_impersonations(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Impersonation>>, ApiError> {
    let (after, limit) = q.parts()?;
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::AUDIT_READ).await?;
    let rows = impersonation::list_in_org(&caller.id, scope.org_id(), after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |l| l.log_id,
        Impersonation::from,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartImpersonation {
    /// A member of the org (not a super-admin, not one who may impersonate).
    pub target_user_id: Uuid,
}

/// The admin whose key this is; a service key (no owner) cannot impersonate.
fn admin_of(caller: &Caller) -> Result<Uuid, ApiError> {
    caller.principal.key.user_id.ok_or_else(|| {
        ApiError::Forbidden("a key without an owner cannot impersonate anyone".into())
    })
}

/// Starts impersonating a member: the key needs `impersonate` on the org and its owner must
/// hold `impersonate` there too (see `identity::impersonation`). Records the caller's IP
/// and user agent.
#[utoipa::path(post, path = "/organizations/{org_id}/impersonations", tag = "impersonation",
    params(("org_id" = Uuid, Path)), request_body = StartImpersonation,
    responses((status = 201, body = Impersonation),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn start_impersonation(
    caller: Caller,
    Path(org_id): Path<Uuid>,
    Json(body): Json<StartImpersonation>,
) -> Result<(StatusCode, axum::Json<Impersonation>), ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::IMPERSONATE).await?;
    let admin = admin_of(&caller)?;
    let started = impersonation::start(
        &caller.id,
        admin,
        scope.org_id(),
        body.target_user_id,
        caller.id.actor.ip,
        caller.id.actor.user_agent.as_deref(),
    )
    .await?;
    // The refresh token is dropped here (see the module comment); only its hash is kept.
    drop(started.refresh_token);
    Ok((StatusCode::CREATED, axum::Json(started.log.into())))
}

/// Ends one of the caller's owner's impersonations in this org (another admin's is 404):
/// sets `ended_at` and revokes the session. Ending an ended one returns it unchanged.
#[utoipa::path(post, path = "/organizations/{org_id}/impersonations/{log_id}/end",
    tag = "impersonation",
    params(("org_id" = Uuid, Path), ("log_id" = Uuid, Path)),
    responses((status = 200, body = Impersonation),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn end_impersonation(
    caller: Caller,
    Path((org_id, log_id)): Path<(Uuid, Uuid)>,
) -> Result<axum::Json<Impersonation>, ApiError> {
    let scope = authorize_org(&caller.id, &caller.principal, org_id, perm::IMPERSONATE).await?;
    let admin = admin_of(&caller)?;
    let log = impersonation::get(&caller.id, log_id).await?;
    if log.org_id != Some(scope.org_id()) {
        return Err(ApiError::NotFound);
    }
    Ok(axum::Json(
        impersonation::end(&caller.id, log_id, admin).await?.into(),
    ))
}
