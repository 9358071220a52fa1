//! `/scim/v2` (RFC 7644): bearer authentication of SCIM clients, the client's rate limit,
//! `application/scim+json` in and out, ETags, and SCIM error bodies. Handlers extract,
//! call one `scim` service function and convert its result.
use crate::http::AppState;
use crate::http::rate_limit;
use crate::identity::audit::Actor;
use crate::identity::rate_limit::{Family, RateKey};
use crate::scim::resource::{Ctx, ListBody, ListParams, etag, not_modified, split_list};
use crate::scim::{ScimError, bulk, clients, discovery, groups, users};
use axum::body::{Bytes, to_bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::Value;
use std::net::SocketAddr;

pub const SCIM_JSON: &str = "application/scim+json";

pub fn routes() -> axum::Router<AppState> {
    let endpoints: Vec<(&str, axum::routing::MethodRouter<AppState>)> = vec![
        ("/ServiceProviderConfig", get(service_provider_config)),
        ("/ResourceTypes", get(resource_types)),
        ("/ResourceTypes/{id}", get(resource_type)),
        ("/Schemas", get(schemas)),
        ("/Schemas/{id}", get(schema)),
        ("/Users", get(list_users).post(create_user)),
        ("/Users/.search", post(search_users)),
        (
            "/Users/{id}",
            get(get_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        ),
        ("/Groups", get(list_groups).post(create_group)),
        ("/Groups/.search", post(search_groups)),
        (
            "/Groups/{id}",
            get(get_group)
                .put(replace_group)
                .patch(patch_group)
                .delete(delete_group),
        ),
        ("/.search", post(search_root)),
        ("/Bulk", post(bulk_request)),
    ];
    let mut scim = axum::Router::new();
    for (path, handler) in endpoints {
        // Endpoint names as RFC 7644 §3.2 spells them, and lower-cased as Microsoft's
        // reference clients send them (`/users`).
        // A collection also answers with a trailing slash (`/Users/?filter=…`).
        let lower = path.to_ascii_lowercase();
        let mut aliases = vec![lower.clone()];
        if !path.contains('{') && !path.contains('.') && path != "/Bulk" {
            aliases.push(format!("{path}/"));
            aliases.push(format!("{lower}/"));
        }
        aliases.retain(|a| a != path);
        aliases.dedup();
        for a in aliases {
            scim = scim.route(&a, handler.clone());
        }
        scim = scim.route(path, handler);
    }
    let scim = scim
        .fallback(|| async { ScimResponse::Error(ScimError::not_found("no such SCIM endpoint")) })
        .method_not_allowed_fallback(|| async {
            ScimResponse::Error(ScimError::new(
                405,
                None,
                "method not allowed on this SCIM endpoint",
            ))
        });
    axum::Router::new().nest("/scim/v2", scim)
}

/// Every SCIM answer.
pub enum ScimResponse {
    /// 200 with a body and, for a single resource, its version as `ETag`.
    Ok(Value, Option<i64>),
    /// 200 with a list whose resources may be kept serialised.
    List(ListBody),
    /// 201 with `Location` and `ETag`.
    Created(Value, i64),
    NoContent,
    NotModified(i64),
    Error(ScimError),
    /// A bare response built elsewhere (e.g. 429 with its headers).
    Raw(Response),
}

impl From<ScimError> for ScimResponse {
    fn from(e: ScimError) -> Self {
        ScimResponse::Error(e)
    }
}

fn scim_body(status: StatusCode, body: &impl Serialize) -> Response {
    let text = match serde_json::to_string(body) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "SCIM response not serialised");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut resp = (status, text).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    resp
}

fn with_etag(mut resp: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

impl IntoResponse for ScimResponse {
    fn into_response(self) -> Response {
        match self {
            ScimResponse::Ok(body, version) => {
                let resp = scim_body(StatusCode::OK, &body);
                match version {
                    Some(v) => with_etag(resp, v),
                    None => resp,
                }
            }
            ScimResponse::List(body) => scim_body(StatusCode::OK, &body),
            ScimResponse::Created(body, version) => {
                let mut resp = with_etag(scim_body(StatusCode::CREATED, &body), version);
                if let Some(loc) = body
                    .pointer("/meta/location")
                    .and_then(Value::as_str)
                    .and_then(|l| HeaderValue::from_str(l).ok())
                {
                    resp.headers_mut().insert(header::LOCATION, loc);
                }
                resp
            }
            ScimResponse::NoContent => StatusCode::NO_CONTENT.into_response(),
            ScimResponse::NotModified(v) => with_etag(StatusCode::NOT_MODIFIED.into_response(), v),
            ScimResponse::Error(e) if e.status >= 500 => {
                // Ours: logged once here, never shown.
                tracing::error!(detail = %e.detail, "SCIM request failed");
                StatusCode::from_u16(e.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response()
            }
            ScimResponse::Error(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                let mut resp = scim_body(status, &e.to_json());
                if status == StatusCode::UNAUTHORIZED {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"scim\", error=\"invalid_token\""),
                    );
                }
                resp
            }
            ScimResponse::Raw(r) => r,
        }
    }
}

/// The authenticated SCIM client (RFC 7644 §2: bearer token, RFC 6750), counted against
/// its `scim` rate limit; the request then runs as the client.
pub struct ScimAuth(pub Ctx);

impl FromRequestParts<AppState> for ScimAuth {
    type Rejection = ScimResponse;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimResponse> {
        let unauthorized = |m: &str| ScimResponse::Error(ScimError::new(401, None, m));
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| unauthorized("expected `Authorization: Bearer <SCIM token>`"))?;
        let principal = clients::authenticate(&state.identity, token)
            .await
            .map_err(|e| ScimResponse::Error(e.into()))?;
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect());
        let key = RateKey::new(Family::Scim)
            .client(principal.client_id().to_string())
            .org(principal.org_id());
        let d = crate::identity::rate_limit::check(&state.identity, &key)
            .await
            .map_err(|e| ScimResponse::Error(e.into()))?;
        if !d.allowed {
            let body = ScimError::new(
                429,
                None,
                format!(
                    "rate limit of {} requests per {} s exceeded",
                    d.limit, d.window_secs
                ),
            )
            .to_json();
            let mut resp = scim_body(StatusCode::TOO_MANY_REQUESTS, &body);
            resp.headers_mut().extend(rate_limit::headers(&d));
            return Err(ScimResponse::Raw(resp));
        }
        // The kind (this SCIM client) is set by `ScimPrincipal::identity`.
        let actor = Actor {
            ip,
            user_agent,
            ..Actor::default()
        };
        let ctx = Ctx::new(&state.identity, principal, &actor)
            .await
            .map_err(ScimResponse::Error)?;
        Ok(ScimAuth(ctx))
    }
}

/// A JSON body sent as `application/scim+json` or `application/json` (RFC 7644 §3.1);
/// anything unparsable is 400 `invalidSyntax`.
pub struct ScimBody(pub Value, pub usize);

impl FromRequest<AppState> for ScimBody {
    type Rejection = ScimResponse;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ScimResponse> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        if let Some(ct) = ct
            && ct != SCIM_JSON
            && ct != "application/json"
        {
            return Err(ScimResponse::Error(ScimError::new(
                415,
                None,
                "send application/scim+json (or application/json)",
            )));
        }
        let limit = state.config.http.body_limit_bytes;
        let bytes: Bytes = to_bytes(req.into_body(), limit).await.map_err(|_| {
            ScimResponse::Error(ScimError::too_large(format!(
                "the request body exceeds {limit} bytes"
            )))
        })?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ScimResponse::Error(ScimError::invalid_syntax(format!(
                "the body is not JSON: {e}"
            )))
        })?;
        Ok(ScimBody(v, bytes.len()))
    }
}

/// `filter`, `startIndex`, `count`, `sortBy`, `sortOrder`, `attributes`,
/// `excludedAttributes`, `cursor` from the query string (names case-insensitive).
fn list_params(raw: Option<String>) -> Result<ListParams, ScimError> {
    let mut p = ListParams::default();
    let Some(raw) = raw else {
        return Ok(p);
    };
    let int = |k: &str, v: &str| -> Result<i64, ScimError> {
        v.trim()
            .parse()
            .map_err(|_| ScimError::invalid_value(format!("{k} must be an integer")))
    };
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        match k.to_ascii_lowercase().as_str() {
            "filter" => p.filter = Some(v.into_owned()),
            "startindex" => p.start_index = Some(int("startIndex", &v)?),
            "count" => p.count = Some(int("count", &v)?),
            "sortby" => p.sort_by = Some(v.into_owned()),
            "sortorder" => p.sort_order = Some(v.into_owned()),
            "attributes" => p.attributes = split_list(&v),
            "excludedattributes" => p.excluded_attributes = split_list(&v),
            "cursor" => p.cursor = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(p)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn single(r: Result<(Value, i64), ScimError>) -> ScimResponse {
    match r {
        Ok((v, version)) => ScimResponse::Ok(v, Some(version)),
        Err(e) => e.into(),
    }
}

fn created(r: Result<(Value, i64), ScimError>) -> ScimResponse {
    match r {
        Ok((v, version)) => ScimResponse::Created(v, version),
        Err(e) => e.into(),
    }
}

fn listed(r: Result<Value, ScimError>) -> ScimResponse {
    match r {
        Ok(v) => ScimResponse::Ok(v, None),
        Err(e) => e.into(),
    }
}

fn users_listed(r: Result<ListBody, ScimError>) -> ScimResponse {
    match r {
        Ok(body) => ScimResponse::List(body),
        Err(e) => e.into(),
    }
}

fn deleted(r: Result<(), ScimError>) -> ScimResponse {
    match r {
        Ok(()) => ScimResponse::NoContent,
        Err(e) => e.into(),
    }
}

async fn service_provider_config(State(s): State<AppState>) -> ScimResponse {
    ScimResponse::Ok(discovery::service_provider_config(&s.config), None)
}

async fn resource_types(State(s): State<AppState>) -> ScimResponse {
    ScimResponse::Ok(discovery::resource_types(&s.config), None)
}

async fn resource_type(State(s): State<AppState>, Path(id): Path<String>) -> ScimResponse {
    match discovery::resource_type(&s.config, &id) {
        Ok(v) => ScimResponse::Ok(v, None),
        Err(e) => e.into(),
    }
}

async fn schemas(State(s): State<AppState>) -> ScimResponse {
    ScimResponse::Ok(discovery::schemas(&s.config), None)
}

async fn schema(State(s): State<AppState>, Path(id): Path<String>) -> ScimResponse {
    match discovery::schema(&s.config, &id) {
        Ok(v) => ScimResponse::Ok(v, None),
        Err(e) => e.into(),
    }
}

async fn list_users(ScimAuth(ctx): ScimAuth, RawQuery(q): RawQuery) -> ScimResponse {
    match list_params(q) {
        Ok(p) => users_listed(users::list(&ctx, &p).await),
        Err(e) => e.into(),
    }
}

async fn search_users(ScimAuth(ctx): ScimAuth, ScimBody(body, _): ScimBody) -> ScimResponse {
    match ListParams::from_search_request(&body) {
        Ok(p) => users_listed(users::list(&ctx, &p).await),
        Err(e) => e.into(),
    }
}

/// A read answered 304 when `If-None-Match` names its current version (RFC 7644 §3.14).
fn conditional(headers: &HeaderMap, r: Result<(Value, i64), ScimError>) -> ScimResponse {
    match r {
        Ok((_, v)) if not_modified(header_str(headers, header::IF_NONE_MATCH), v) => {
            ScimResponse::NotModified(v)
        }
        other => single(other),
    }
}

async fn get_user(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ScimResponse {
    let r = async {
        let id = users::parse_id(&id)?;
        let p = list_params(q)?;
        users::get(&ctx, id, &p).await
    }
    .await;
    conditional(&headers, r)
}

async fn create_user(ScimAuth(ctx): ScimAuth, ScimBody(body, _): ScimBody) -> ScimResponse {
    created(users::create(&ctx, &body).await)
}

async fn replace_user(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body, _): ScimBody,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    single(async { users::replace(&ctx, users::parse_id(&id)?, &body, if_match).await }.await)
}

async fn patch_user(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body, _): ScimBody,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    single(async { users::patch(&ctx, users::parse_id(&id)?, &body, if_match).await }.await)
}

async fn delete_user(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    deleted(async { users::delete(&ctx, users::parse_id(&id)?, if_match).await }.await)
}

async fn list_groups(ScimAuth(ctx): ScimAuth, RawQuery(q): RawQuery) -> ScimResponse {
    match list_params(q) {
        Ok(p) => listed(groups::list(&ctx, &p).await),
        Err(e) => e.into(),
    }
}

async fn search_groups(ScimAuth(ctx): ScimAuth, ScimBody(body, _): ScimBody) -> ScimResponse {
    match ListParams::from_search_request(&body) {
        Ok(p) => listed(groups::list(&ctx, &p).await),
        Err(e) => e.into(),
    }
}

async fn search_root(ScimAuth(ctx): ScimAuth, ScimBody(body, _): ScimBody) -> ScimResponse {
    match ListParams::from_search_request(&body) {
        Ok(p) => listed(crate::scim::search::root(&ctx, &p).await),
        Err(e) => e.into(),
    }
}

async fn get_group(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> ScimResponse {
    let r = async {
        let id = groups::parse_id(&id)?;
        let p = list_params(q)?;
        groups::get(&ctx, id, &p).await
    }
    .await;
    conditional(&headers, r)
}

async fn create_group(ScimAuth(ctx): ScimAuth, ScimBody(body, _): ScimBody) -> ScimResponse {
    created(groups::create(&ctx, &body).await)
}

async fn replace_group(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body, _): ScimBody,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    single(async { groups::replace(&ctx, groups::parse_id(&id)?, &body, if_match).await }.await)
}

async fn patch_group(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body, _): ScimBody,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    single(async { groups::patch(&ctx, groups::parse_id(&id)?, &body, if_match).await }.await)
}

async fn delete_group(
    ScimAuth(ctx): ScimAuth,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ScimResponse {
    let if_match = header_str(&headers, header::IF_MATCH);
    deleted(async { groups::delete(&ctx, groups::parse_id(&id)?, if_match).await }.await)
}

async fn bulk_request(ScimAuth(ctx): ScimAuth, ScimBody(body, len): ScimBody) -> ScimResponse {
    match bulk::run(&ctx, &body, len).await {
        Ok(v) => ScimResponse::Ok(v, None),
        Err(e) => e.into(),
    }
}
