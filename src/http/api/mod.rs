//! The management REST API under `/api/v1`: JSON in and out, RFC 9457 problems, cursor
//! pagination on every list, API-key bearer auth, and an OpenAPI 3.1 document generated
//! from these handlers (`/api/v1/openapi.json`), so it cannot drift from the code.
use super::error::ApiError;
use super::rate_limit;
use super::state::AppState;
use crate::identity::access::Principal;
use crate::identity::audit::Actor;
use crate::identity::rate_limit::{Decision, Family, RateKey};
use crate::identity::{Identity, api_keys};
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

pub mod api_keys_routes;
pub mod audit;
pub mod dto;
pub mod identity_providers;
pub mod impersonation;
pub mod members;
pub mod metrics;
pub mod oidc_clients;
pub mod orgs;
pub mod rate_limits;
pub mod roles;
pub mod scim_clients;
pub mod users;
pub mod waitlist;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lintel management API",
        version = "1",
        description = "Manage organizations, users, memberships, roles, permissions, sessions, \
            MFA devices, API keys and the audit log. Authenticate with `Authorization: Bearer \
            lk_…` (an API key). Errors are RFC 9457 problem details."
    ),
    modifiers(&BearerAuth),
    components(schemas(Problem))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "api_key",
                SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
            );
        }
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// An RFC 9457 problem (`application/problem+json`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A stable URI naming the kind of problem, e.g. `urn:lintel:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The input field the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The `/api/v1` router and its OpenAPI document.
pub fn router() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(orgs::routes())
        .merge(members::routes())
        .merge(roles::routes())
        .merge(users::routes())
        .merge(api_keys_routes::routes())
        .merge(audit::routes())
        .merge(rate_limits::routes())
        .merge(impersonation::routes())
        .merge(waitlist::routes())
        .merge(metrics::routes())
        .merge(scim_clients::routes())
        .merge(oidc_clients::routes())
        .merge(identity_providers::routes());
    let (router, mut doc) = OpenApiRouter::new().nest("/api/v1", api).split_for_parts();
    doc.info = ApiDoc::openapi().info;
    (
        router.layer(axum::middleware::from_fn(rate_limit_headers)),
        doc,
    )
}

/// Where [`Caller`] leaves the management rate-limit decision for [`rate_limit_headers`].
#[derive(Clone, Default)]
struct RateSlot(Arc<OnceLock<Decision>>);

/// Adds the `RateLimit-*` headers of the caller's decision to every authenticated
/// response (draft-ietf-httpapi-ratelimit-headers §3: under the limit too). Over the
/// limit [`Caller`] answers 429 itself, headers included.
async fn rate_limit_headers(mut req: Request, next: Next) -> Response {
    let slot = RateSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut resp = next.run(req).await;
    if let Some(d) = slot.0.get() {
        resp.headers_mut().extend(rate_limit::headers(d));
    }
    resp
}

/// The authenticated caller: its principal, and identity services acting as it (so every
/// mutation's audit row names the key, its owner, IP and user agent).
pub struct Caller {
    pub principal: Principal,
    pub id: Identity,
}

impl FromRequestParts<AppState> for Caller {
    /// A problem: 401 for a bad key, 429 over the key's management rate limit.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let caller = authenticate(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        // Every authenticated request counts against its key (`Family::Management`); the
        // owner and org select policies assigned to them.
        let key = &caller.principal.key;
        let mut rate_key = RateKey::new(Family::Management).api_key(key.api_key_id);
        if let Some(u) = key.user_id {
            rate_key = rate_key.user(u);
        }
        if let Some(o) = key.org_id {
            rate_key = rate_key.org(o);
        }
        if let Some(ip) = caller.id.actor.ip {
            rate_key = rate_key.ip(ip);
        }
        let d = crate::identity::rate_limit::check(&state.identity, &rate_key)
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        if !d.allowed {
            return Err(crate::http::rate_limit::too_many_requests(&d));
        }
        if let Some(slot) = parts.extensions.get::<RateSlot>() {
            let _ = slot.0.set(d);
        }
        Ok(caller)
    }
}

/// API-key bearer authentication (RFC 6750 §2.1).
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <key>`".into()))?;
    let principal = api_keys::authenticate(&state.identity, token).await?;
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let actor: Actor = principal.actor(ip, user_agent);
    Ok(Caller {
        id: state.identity.acting_as(actor),
        principal,
    })
}

/// `?cursor=…&limit=…` on every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Opaque cursor from a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

impl PageQuery {
    /// (after, limit) with the cursor decoded; a malformed cursor or limit is a 400.
    pub fn parts(&self) -> Result<(Option<Uuid>, u32), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => Some(
                decode_cursor(c).ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?,
            ),
        };
        Ok((after, limit))
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(c: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// A page of results: fetch `limit + 1` to know whether there is a next page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` rows fetched in key order.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> Uuid,
        map: impl Fn(R) -> T,
    ) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(key(r)))
        } else {
            None
        };
        Page {
            data: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        assert_eq!(decode_cursor("not a cursor"), None);
        assert_eq!(decode_cursor(""), None);
        let q = PageQuery {
            cursor: None,
            limit: Some(0),
        };
        assert!(q.parts().is_err());
        let q = PageQuery {
            cursor: Some("AAAA".into()),
            limit: None,
        };
        assert!(q.parts().is_err());
    }

    #[test]
    fn pages_know_when_there_is_more() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let p = Page::from_rows(ids.clone(), 2, |u| *u, |u| u);
        assert_eq!(p.data.len(), 2);
        assert_eq!(p.next_cursor, Some(encode_cursor(ids[1])));
        let p = Page::from_rows(ids[..2].to_vec(), 2, |u| *u, |u| u);
        assert_eq!(p.next_cursor, None);
    }
}
