//! `/waitlist`: the public sign-up (no auth, rate-limited per client IP) and the
//! super-admin listing and invitations.
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::http::rate_limit::{headers, too_many_requests};
use crate::http::state::AppState;
use crate::identity::access::require_admin;
use crate::identity::audit::{Actor, ActorKind};
use crate::identity::rate_limit::{self, Family, RateKey};
use crate::identity::waitlist;
use crate::store::waitlist::Signup;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_signups, join_waitlist))
        .routes(routes!(invite_signup))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WaitlistSignup {
    pub signup_id: Uuid,
    pub email: String,
    pub invited: bool,
    pub invited_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<Signup> for WaitlistSignup {
    fn from(s: Signup) -> Self {
        WaitlistSignup {
            signup_id: s.signup_id,
            email: s.email,
            invited: s.invited,
            invited_at: s.invited_at,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinWaitlist {
    pub email: String,
}

/// The one answer to a valid sign-up, new or not (so it tells nobody who is listed).
#[derive(Debug, Serialize, ToSchema)]
pub struct WaitlistAccepted {
    /// Always `accepted`.
    pub status: String,
}

/// Puts an address on the waitlist (no authentication). The answer is the same whether the
/// address is new or already listed. Limited per client IP by `rate_limits.waitlist`;
/// every answer carries the `RateLimit-*` headers.
#[utoipa::path(post, path = "/waitlist", tag = "waitlist", request_body = JoinWaitlist,
    security(()),
    responses((status = 202, body = WaitlistAccepted),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn join_waitlist(
    axum::extract::State(state): axum::extract::State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req_headers: HeaderMap,
    body: Result<Json<JoinWaitlist>, ApiError>,
) -> Response {
    // Counted before the body is read: malformed requests use up the allowance too.
    let key = RateKey::new(Family::Waitlist).ip(peer.ip());
    let d = match rate_limit::check(&state.identity, &key).await {
        Ok(d) if d.allowed => d,
        Ok(d) => return too_many_requests(&d),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let id = state.identity.acting_as(Actor {
        kind: ActorKind::System,
        impersonator: None,
        ip: Some(peer.ip()),
        user_agent: req_headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    });
    let joined = match body {
        Ok(Json(body)) => waitlist::join(&id, &body.email)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let mut resp = match joined {
        Ok(_) => {
            let accepted = WaitlistAccepted {
                status: "accepted".into(),
            };
            (StatusCode::ACCEPTED, axum::Json(accepted)).into_response()
        }
        Err(e) => e.into_response(),
    };
    resp.headers_mut().extend(headers(&d));
    resp
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SignupFilter {
    /// Only invited (`true`) or not yet invited (`false`) signups.
    pub invited: Option<bool>,
}

/// Signups in sign-up order (super-admin keys only).
#[utoipa::path(get, path = "/waitlist", tag = "waitlist", params(SignupFilter, PageQuery),
    responses((status = 200, body = Page<WaitlistSignup>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_signups(
    caller: Caller,
    Query(f): Query<SignupFilter>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<WaitlistSignup>>, ApiError> {
    require_admin(&caller.principal)?;
    let (after, limit) = q.parts()?;
    let rows = waitlist::list(&caller.id, after, limit + 1, f.invited).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |s| s.signup_id,
        WaitlistSignup::from,
    )))
}

/// Invites a signup (super-admin keys only): mails a single-use sign-up link and sets
/// `invited`. Inviting again sends a new link and voids the older ones; an address that
/// already has an account is 409.
#[utoipa::path(post, path = "/waitlist/{signup_id}/invite", tag = "waitlist",
    params(("signup_id" = Uuid, Path)),
    responses((status = 200, body = WaitlistSignup),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn invite_signup(
    caller: Caller,
    Path(signup_id): Path<Uuid>,
) -> Result<axum::Json<WaitlistSignup>, ApiError> {
    require_admin(&caller.principal)?;
    Ok(axum::Json(
        waitlist::invite(&caller.id, signup_id).await?.into(),
    ))
}
