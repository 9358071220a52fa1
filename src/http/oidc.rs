//! HTTP glue of the OpenID Connect provider: discovery, JWKS, the authorization endpoint and
//! hosted login pages, token, userinfo, introspection, revocation, logout. Handlers extract,
//! call one `crate::oidc` function and convert; [`OidcError`] becomes a response only in
//! [`error_response`] (JSON / Bearer challenge) and [`redirect`] (authorization errors are
//! redirected by `crate::oidc::interaction`).
use super::rate_limit;
use super::state::AppState;
use crate::config::Secret;
use crate::identity::Identity;
use crate::identity::audit::Actor;
use crate::identity::rate_limit::{Family, RateKey};
use crate::oidc::clients::{self, ClientCredentials};
use crate::oidc::interaction::{self, Origin, Outcome, Step};
use crate::oidc::{OidcError, token};
use crate::store::sessions::Session;
use crate::web;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "lintel_session";
pub const CSRF_COOKIE: &str = "lintel_csrf";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route("/oauth2/jwks", get(jwks))
        .route("/oauth2/authorize", get(authorize).post(authorize))
        .route("/login", get(login_page).post(login))
        .route("/login/mfa", post(login_mfa))
        .route("/login/password", post(login_password))
        .route("/consent", post(consent))
        .route("/select-org", post(select_org))
        .route("/oauth2/token", post(token_endpoint))
        .route("/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/introspect", post(introspect))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/logout", get(logout).post(logout))
}

// ---------------------------------------------------------------------------------------
// Errors: the one place an OidcError becomes an HTTP answer.

/// RFC 6749 §5.2 JSON errors; `invalid_client` is 401 with a `Basic` challenge (§5.2),
/// `invalid_token` 401 and `insufficient_scope` 403 with a `Bearer` challenge (RFC 6750
/// §3); server errors are logged once and answered bare.
pub fn error_response(e: &OidcError) -> Response {
    let status = match e {
        OidcError::InvalidClient(_) | OidcError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
        OidcError::InsufficientScope(_) => StatusCode::FORBIDDEN,
        OidcError::SlowDown { .. } => StatusCode::TOO_MANY_REQUESTS,
        OidcError::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        OidcError::ServerError(m) => {
            tracing::error!(error = %m, "oidc internal error");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let body = json!({ "error": e.code(), "error_description": e.description() });
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    no_store(h);
    let challenge = match e {
        OidcError::InvalidClient(_) => Some("Basic realm=\"lintel\"".to_string()),
        OidcError::InvalidToken(d) | OidcError::InsufficientScope(d) => Some(format!(
            "Bearer realm=\"lintel\", error=\"{}\", error_description=\"{}\"",
            e.code(),
            d.replace(['"', '\\'], "")
        )),
        _ => None,
    };
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    if let OidcError::SlowDown { retry_after_secs } = e {
        h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
    }
    resp
}

impl IntoResponse for OidcError {
    fn into_response(self) -> Response {
        error_response(&self)
    }
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// A 303 to `location` (after a POST the browser follows with GET).
pub(super) fn redirect(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    no_store(resp.headers_mut());
    resp
}

/// An HTML page: never cached, never framed, no scripts.
pub(super) fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(h);
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    html(status, web::error_page(message))
}

// ---------------------------------------------------------------------------------------
// Request helpers

pub(super) fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

pub(super) fn field<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub(super) fn set_cookie(
    resp: &mut Response,
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<i64>,
) {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

pub(super) fn peer(ci: &Option<ConnectInfo<SocketAddr>>) -> Option<std::net::IpAddr> {
    ci.as_ref().map(|c| c.0.ip())
}

pub(super) fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The identity services acting as the request's origin (audit rows record IP and agent).
pub(super) fn acting(
    state: &AppState,
    headers: &HeaderMap,
    ci: &Option<ConnectInfo<SocketAddr>>,
) -> Identity {
    state.identity.acting_as(Actor {
        ip: peer(ci),
        user_agent: user_agent(headers),
        ..Actor::system()
    })
}

/// The CSRF token of the browser (double-submit cookie), and whether it must be set.
pub(super) fn csrf_token(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, CSRF_COOKIE).filter(|c| c.len() >= 32) {
        Some(c) => (c, false),
        None => (crate::identity::sessions::new_token(), true),
    }
}

/// A form post carries the CSRF cookie's value (constant-time comparison).
pub(super) fn csrf_ok(headers: &HeaderMap, params: &[(String, String)]) -> bool {
    match (cookie(headers, CSRF_COOKIE), field(params, "csrf")) {
        (Some(c), Some(f)) => c.len() >= 32 && bool::from(c.as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    }
}

pub(super) async fn browser_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, OidcError> {
    match cookie(headers, SESSION_COOKIE) {
        Some(c) => Ok(crate::oidc::session::current(&state.identity, &c).await?),
        None => Ok(None),
    }
}

pub(super) fn serialize(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

// ---------------------------------------------------------------------------------------
// Discovery and keys

async fn discovery(State(state): State<AppState>) -> Response {
    let mut resp = axum::Json(crate::oidc::discovery::metadata(&state.oidc)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}

async fn jwks(State(state): State<AppState>) -> Response {
    match state.oidc.keyring.jwks(&state.identity).await {
        Ok(doc) => {
            let mut resp = axum::Json(doc).into_response();
            let h = resp.headers_mut();
            // Shorter than any key activation delay, so a new key is seen before it signs.
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            );
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            );
            resp
        }
        Err(e) => error_response(&OidcError::from(e)),
    }
}

// ---------------------------------------------------------------------------------------
// Authorization endpoint and hosted login

/// Renders what the authorization request needs next.
#[allow(clippy::too_many_arguments)]
fn outcome_response(
    state: &AppState,
    outcome: Outcome,
    params: &[(String, String)],
    csrf: &str,
    set_csrf: bool,
    login_error: Option<&str>,
    status: StatusCode,
) -> Response {
    let auth = serialize(params);
    let mut resp = match outcome {
        Outcome::Redirect(to) => redirect(&to),
        Outcome::Page(e) => error_page(StatusCode::BAD_REQUEST, &e.0),
        Outcome::Login {
            client_name,
            login_hint,
        } => html(
            status,
            web::render(
                "login.html",
                web::LoginPage {
                    csrf,
                    auth: &auth,
                    email: login_hint.as_deref().unwrap_or(""),
                    client_name: Some(&client_name),
                    error: login_error,
                },
            ),
        ),
        Outcome::SelectOrg { client_name, orgs } => html(
            StatusCode::OK,
            web::render(
                "org.html",
                web::OrgPage {
                    csrf,
                    auth: &auth,
                    client_name: &client_name,
                    orgs: orgs
                        .into_iter()
                        .map(|(id, name)| web::OrgOption {
                            id: id.to_string(),
                            name,
                        })
                        .collect(),
                },
            ),
        ),
        Outcome::Consent {
            client_name,
            scopes,
        } => html(
            StatusCode::OK,
            web::render(
                "consent.html",
                web::ConsentPage {
                    csrf,
                    auth: &auth,
                    client_name: &client_name,
                    scopes: scopes.iter().map(String::as_str).collect(),
                },
            ),
        ),
    };
    if set_csrf {
        set_cookie(
            &mut resp,
            CSRF_COOKIE,
            csrf,
            state.oidc.secure_cookies(),
            None,
        );
    }
    resp
}

/// `/oauth2/authorize`, GET (query) or POST (form body) — OIDC Core §3.1.2.1.
async fn authorize(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let params = if method == Method::POST {
        form(&body)
    } else {
        form(query.unwrap_or_default().as_bytes())
    };
    let session = match browser_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    };
    let (csrf, set_csrf) = csrf_token(&headers);
    match interaction::authorize(
        &state.identity,
        &state.oidc,
        &params,
        session.as_ref(),
        false,
        None,
    )
    .await
    {
        Ok((outcome, client)) => {
            // A client bound to an org that requires SSO: straight to the org's IdP.
            if matches!(outcome, Outcome::Login { .. })
                && let Some(realm) = sso_only_realm(&state, client.and_then(|c| c.org_id)).await
            {
                let ci: Option<ConnectInfo<SocketAddr>> = None;
                return super::federation::begin(
                    &state,
                    &headers,
                    &ci,
                    realm.provider.provider_id,
                    &serialize(&params),
                    field(&params, "login_hint"),
                )
                .await;
            }
            outcome_response(
                &state,
                outcome,
                &params,
                &csrf,
                set_csrf,
                None,
                StatusCode::OK,
            )
        }
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    }
}

/// The IdP of an org that refuses password logins, if `org_id` names one.
async fn sso_only_realm(
    state: &AppState,
    org_id: Option<uuid::Uuid>,
) -> Option<crate::federation::home_realm::Realm> {
    let realm = crate::federation::home_realm::for_org(&state.identity, org_id?)
        .await
        .ok()??;
    (!realm.password_allowed).then_some(realm)
}

/// Continues the authorization request after a completed login step.
pub(super) async fn after_step(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
    step: Step,
    auth: &str,
) -> Response {
    let (csrf, _) = csrf_token(headers);
    match step {
        Step::Mfa { pending } => html(
            StatusCode::OK,
            web::render(
                "mfa.html",
                web::StepPage {
                    csrf: &csrf,
                    auth,
                    pending: &pending,
                    error: None,
                },
            ),
        ),
        Step::ChangePassword { pending } => html(
            StatusCode::OK,
            web::render(
                "password.html",
                web::StepPage {
                    csrf: &csrf,
                    auth,
                    pending: &pending,
                    error: None,
                },
            ),
        ),
        // A sign-in of its own (no authorization request): the account page.
        Step::Done { cookie, .. } if field(params, "client_id").is_none() => {
            let mut resp = redirect("/account");
            set_cookie(
                &mut resp,
                SESSION_COOKIE,
                &cookie,
                state.oidc.secure_cookies(),
                None,
            );
            resp
        }
        Step::Done { session, cookie } => {
            let mut resp = match interaction::authorize(
                &state.identity,
                &state.oidc,
                params,
                Some(&session),
                true,
                None,
            )
            .await
            {
                Ok((outcome, _)) => {
                    outcome_response(state, outcome, params, &csrf, false, None, StatusCode::OK)
                }
                Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
            };
            set_cookie(
                &mut resp,
                SESSION_COOKIE,
                &cookie,
                state.oidc.secure_cookies(),
                None,
            );
            resp
        }
    }
}

/// `GET /login`: the sign-in page on its own (it leads to the account page).
async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = csrf_token(&headers);
    let mut resp = html(
        StatusCode::OK,
        web::render(
            "login.html",
            web::LoginPage {
                csrf: &csrf,
                ..Default::default()
            },
        ),
    );
    if set {
        set_cookie(
            &mut resp,
            CSRF_COOKIE,
            &csrf,
            state.oidc.secure_cookies(),
            None,
        );
    }
    resp
}

/// The message a failed login step shows (never whether the email exists).
fn login_message(e: &crate::identity::IdentityError) -> &'static str {
    use crate::identity::IdentityError as E;
    match e {
        E::AccountLocked { .. } => "This account is locked. Try again later.",
        E::AccountDisabled => "This account is disabled.",
        E::MfaCodeInvalid | E::MfaCodeReplayed => "That code is not valid.",
        E::TokenInvalid | E::TokenExpired => "This sign-in took too long. Start again.",
        E::LoginMethodNotAllowed { .. } => "This organization does not allow password sign-in.",
        E::NotFound { .. } | E::Forbidden { .. } => "This account cannot sign in here.",
        E::Invalid { .. } => "The new password does not meet the requirements.",
        _ => "Invalid email or password.",
    }
}

/// The rate limit of login forms (per IP).
pub(super) async fn login_limited(
    state: &AppState,
    ci: &Option<ConnectInfo<SocketAddr>>,
) -> Option<Response> {
    let ip = peer(ci)?;
    match crate::identity::rate_limit::check(&state.identity, &RateKey::new(Family::Login).ip(ip))
        .await
    {
        Ok(d) if d.allowed => None,
        Ok(d) => {
            let mut resp = error_page(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many sign-in attempts. Wait a minute and try again.",
            );
            resp.headers_mut().extend(rate_limit::headers(&d));
            Some(resp)
        }
        Err(e) => Some(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &OidcError::from(e).description(),
        )),
    }
}

struct StepInput {
    params: Vec<(String, String)>,
    auth_params: Vec<(String, String)>,
    origin: Origin,
    id: Identity,
}

async fn step_input(
    state: &AppState,
    headers: &HeaderMap,
    ci: &Option<ConnectInfo<SocketAddr>>,
    body: &[u8],
) -> Result<StepInput, Response> {
    let params = form(body);
    if !csrf_ok(headers, &params) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "The form expired or was not sent by this site. Go back and try again.",
        ));
    }
    if let Some(r) = login_limited(state, ci).await {
        return Err(r);
    }
    let auth_params = form(field(&params, "auth").unwrap_or("").as_bytes());
    let client = interaction::client_of(&state.identity, &auth_params)
        .await
        .map_err(|e| error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()))?;
    let id = acting(state, headers, ci);
    Ok(StepInput {
        origin: Origin {
            org_id: client.and_then(|c| c.org_id),
            ip: peer(ci),
            user_agent: user_agent(headers),
        },
        params,
        auth_params,
        id,
    })
}

/// `POST /login`: email and password.
async fn login(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let input = match step_input(&state, &headers, &ci, &body).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let email = field(&input.params, "email").unwrap_or("").to_string();
    let password = Secret::new(field(&input.params, "password").unwrap_or("").to_string());
    let auth = serialize(&input.auth_params);
    // Home-realm discovery: an email whose domain belongs to an org with SSO goes to that
    // org's IdP, whatever password was typed (issue #7 item 5).
    match crate::federation::home_realm::for_email(&state.identity, &email).await {
        Ok(Some(realm)) => {
            return super::federation::begin(
                &state,
                &headers,
                &ci,
                realm.provider.provider_id,
                &auth,
                Some(&email),
            )
            .await;
        }
        Ok(None) => {}
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &OidcError::from(e).description(),
            );
        }
    }
    match interaction::password(&input.id, &email, &password, &input.origin).await {
        Ok(step) => after_step(&state, &headers, &input.auth_params, step, &auth).await,
        Err(e)
            if matches!(
                e,
                crate::identity::IdentityError::Store(_)
                    | crate::identity::IdentityError::Internal(_)
            ) =>
        {
            error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                &OidcError::from(e).description(),
            )
        }
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            html(
                StatusCode::UNAUTHORIZED,
                web::render(
                    "login.html",
                    web::LoginPage {
                        csrf: &csrf,
                        auth: &auth,
                        email: &email,
                        client_name: None,
                        error: Some(login_message(&e)),
                    },
                ),
            )
        }
    }
}

/// `POST /login/mfa`: the TOTP or recovery code.
async fn login_mfa(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let input = match step_input(&state, &headers, &ci, &body).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let pending = field(&input.params, "pending").unwrap_or("").to_string();
    let code = field(&input.params, "code").unwrap_or("");
    let auth = serialize(&input.auth_params);
    match interaction::second_factor(&input.id, &pending, code, &input.origin).await {
        Ok(step) => after_step(&state, &headers, &input.auth_params, step, &auth).await,
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            html(
                StatusCode::UNAUTHORIZED,
                web::render(
                    "mfa.html",
                    web::StepPage {
                        csrf: &csrf,
                        auth: &auth,
                        pending: &pending,
                        error: Some(login_message(&e)),
                    },
                ),
            )
        }
    }
}

/// `POST /login/password`: the forced password change.
async fn login_password(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let input = match step_input(&state, &headers, &ci, &body).await {
        Ok(i) => i,
        Err(r) => return r,
    };
    let pending = field(&input.params, "pending").unwrap_or("").to_string();
    let new = field(&input.params, "new_password").unwrap_or("");
    let confirm = field(&input.params, "confirm_password").unwrap_or("");
    let auth = serialize(&input.auth_params);
    let result = if new != confirm {
        Err(crate::identity::IdentityError::invalid(
            "new_password",
            "the passwords differ",
        ))
    } else {
        interaction::change_password(
            &input.id,
            &pending,
            &Secret::new(new.to_string()),
            &input.origin,
        )
        .await
    };
    match result {
        Ok(step) => after_step(&state, &headers, &input.auth_params, step, &auth).await,
        Err(e) => {
            let (csrf, _) = csrf_token(&headers);
            let msg = match &e {
                crate::identity::IdentityError::Invalid { message, .. } => message.clone(),
                other => login_message(other).to_string(),
            };
            html(
                StatusCode::BAD_REQUEST,
                web::render(
                    "password.html",
                    web::StepPage {
                        csrf: &csrf,
                        auth: &auth,
                        pending: &pending,
                        error: Some(&msg),
                    },
                ),
            )
        }
    }
}

/// `POST /consent`: allow or deny a third-party client.
async fn consent(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    if !csrf_ok(&headers, &params) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired. Go back and try again.",
        );
    }
    let auth_params = form(field(&params, "auth").unwrap_or("").as_bytes());
    let session = match browser_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    };
    let allow = field(&params, "decision") == Some("allow");
    // The login that led to this page counts as fresh for prompt=login / max_age.
    let fresh = session
        .as_ref()
        .is_some_and(|s| (state.identity.clock.now() - s.auth_time).num_seconds() < 600);
    let (csrf, _) = csrf_token(&headers);
    match interaction::authorize(
        &state.identity,
        &state.oidc,
        &auth_params,
        session.as_ref(),
        fresh,
        Some(allow),
    )
    .await
    {
        Ok((outcome, _)) => outcome_response(
            &state,
            outcome,
            &auth_params,
            &csrf,
            false,
            None,
            StatusCode::OK,
        ),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    }
}

/// `POST /select-org`: the organization picker's answer (choosing continues to the client,
/// so it also answers a consent asked on the same request).
async fn select_org(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let params = form(&body);
    if !csrf_ok(&headers, &params) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired. Go back and try again.",
        );
    }
    let mut auth_params = form(field(&params, "auth").unwrap_or("").as_bytes());
    auth_params.retain(|(k, _)| k != interaction::ORG_PARAM);
    auth_params.push((
        interaction::ORG_PARAM.to_string(),
        field(&params, "org").unwrap_or("").to_string(),
    ));
    let session = match browser_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    };
    let fresh = session
        .as_ref()
        .is_some_and(|s| (state.identity.clock.now() - s.auth_time).num_seconds() < 600);
    let (csrf, _) = csrf_token(&headers);
    match interaction::authorize(
        &state.identity,
        &state.oidc,
        &auth_params,
        session.as_ref(),
        fresh,
        Some(true),
    )
    .await
    {
        Ok((outcome, _)) => outcome_response(
            &state,
            outcome,
            &auth_params,
            &csrf,
            false,
            None,
            StatusCode::OK,
        ),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    }
}

// ---------------------------------------------------------------------------------------
// Token endpoint and friends

/// Client credentials from `Authorization: Basic` or the form (RFC 6749 §2.3.1); using
/// both is refused.
fn client_credentials(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<ClientCredentials, OidcError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .map(|(_, b)| b.trim().to_string());
    let form_secret = field(params, "client_secret");
    let form_id = field(params, "client_id");
    // RFC 7523 §2.2: private_key_jwt.
    if let Some(assertion) = field(params, "client_assertion") {
        if field(params, "client_assertion_type") != Some(clients::ASSERTION_TYPE) {
            return Err(OidcError::invalid_request(
                "unsupported client_assertion_type",
            ));
        }
        if basic.is_some() || form_secret.is_some() {
            return Err(OidcError::invalid_request(
                "use one client authentication method",
            ));
        }
        let iss = josekit::jwt::decode_header(assertion)
            .ok()
            .and(assertion.split('.').nth(1))
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("iss").and_then(|i| i.as_str()).map(String::from));
        let client_id = match (form_id, iss) {
            (Some(f), Some(i)) if f != i => {
                return Err(OidcError::invalid_client(
                    "client_id differs from the assertion",
                ));
            }
            (Some(f), _) => f.to_string(),
            (None, Some(i)) => i,
            (None, None) => return Err(OidcError::invalid_client("malformed client assertion")),
        };
        return Ok(ClientCredentials::Jwt {
            client_id,
            assertion: assertion.to_string(),
        });
    }
    if let Some(b) = basic {
        if form_secret.is_some() {
            return Err(OidcError::invalid_request(
                "use one client authentication method",
            ));
        }
        let bad = || OidcError::invalid_client("malformed Basic credentials");
        let raw = STANDARD.decode(b).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (id, secret) = text.split_once(':').ok_or_else(bad)?;
        // §2.3.1: both parts are form-urlencoded.
        let dec = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let client_id = dec(id);
        if form_id.is_some_and(|f| f != client_id) {
            return Err(OidcError::invalid_request(
                "client_id differs from the Basic credentials",
            ));
        }
        return Ok(ClientCredentials::Basic {
            client_id,
            secret: dec(secret),
        });
    }
    let client_id = form_id
        .ok_or_else(|| OidcError::invalid_client("client authentication is required"))?
        .to_string();
    Ok(match form_secret {
        Some(s) => ClientCredentials::Post {
            client_id,
            secret: s.to_string(),
        },
        None => ClientCredentials::None { client_id },
    })
}

/// Parses the form, applies the token rate limit and authenticates the client.
async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    ci: &Option<ConnectInfo<SocketAddr>>,
    body: &[u8],
) -> Result<
    (
        Vec<(String, String)>,
        crate::store::oidc::OidcClient,
        Option<crate::identity::rate_limit::Decision>,
    ),
    OidcError,
> {
    if !is_form(headers) {
        return Err(OidcError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = form(body);
    let mut seen = std::collections::HashSet::new();
    if let Some((k, _)) = params.iter().find(|(k, _)| !seen.insert(k.as_str())) {
        return Err(OidcError::invalid_request(format!("`{k}` is repeated")));
    }
    let creds = client_credentials(headers, &params)?;
    let mut key =
        RateKey::new(Family::Token).client(creds.client_id().chars().take(200).collect::<String>());
    if let Some(ip) = peer(ci) {
        key = key.ip(ip);
    }
    let d = crate::identity::rate_limit::check(&state.identity, &key).await?;
    if !d.allowed {
        return Err(OidcError::SlowDown {
            retry_after_secs: d.retry_after_secs.unwrap_or(d.reset_after_secs),
        });
    }
    let endpoints = [
        state.oidc.url("/oauth2/token"),
        state.oidc.url("/oauth2/introspect"),
        state.oidc.url("/oauth2/revoke"),
        state.oidc.issuer.clone(),
    ];
    let audiences: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let client = clients::authenticate(&state.identity, &creds, &audiences).await?;
    Ok((params, client, Some(d)))
}

/// `POST /oauth2/token` (RFC 6749 §3.2).
async fn token_endpoint(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let id = acting(&state, &headers, &ci);
    let result = async {
        let (params, client, decision) = authenticated_client(&state, &headers, &ci, &body).await?;
        let p = &state.oidc;
        let get = |n: &str| field(&params, n);
        let resp = match get("grant_type") {
            None => Err(OidcError::invalid_request("grant_type is required")),
            Some("authorization_code") => {
                let code =
                    get("code").ok_or_else(|| OidcError::invalid_request("code is required"))?;
                token::authorization_code(
                    &id,
                    p,
                    &client,
                    code,
                    get("redirect_uri"),
                    get("code_verifier"),
                )
                .await
            }
            Some("refresh_token") => {
                let rt = get("refresh_token")
                    .ok_or_else(|| OidcError::invalid_request("refresh_token is required"))?;
                token::refresh_token(&id, p, &client, rt, get("scope")).await
            }
            Some("client_credentials") => {
                token::client_credentials(&id, p, &client, get("scope")).await
            }
            Some(clients::GRANT_TOKEN_EXCHANGE) => {
                let st = get("subject_token")
                    .ok_or_else(|| OidcError::invalid_request("subject_token is required"))?;
                let stt = get("subject_token_type")
                    .ok_or_else(|| OidcError::invalid_request("subject_token_type is required"))?;
                token::token_exchange(
                    &id,
                    p,
                    &client,
                    st,
                    stt,
                    get("requested_subject"),
                    get("scope"),
                )
                .await
            }
            Some(other) => Err(OidcError::UnsupportedGrantType(format!(
                "`{other}` is not supported"
            ))),
        }?;
        Ok::<_, OidcError>((resp, decision))
    }
    .await;
    match result {
        Ok((resp, decision)) => {
            let mut r = axum::Json(resp).into_response();
            no_store(r.headers_mut());
            if let Some(d) = decision {
                r.headers_mut().extend(rate_limit::headers(&d));
            }
            r
        }
        Err(e) => error_response(&e),
    }
}

/// `/oauth2/userinfo` (OIDC Core §5.3): the bearer token in the header, or (POST) in the
/// form body (RFC 6750 §2.2), not both.
async fn userinfo(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let body_token = if method == Method::POST && is_form(&headers) {
        field(&form(&body), "access_token").map(String::from)
    } else {
        None
    };
    let token = match (header_token, body_token) {
        (Some(_), Some(_)) => {
            return error_response(&OidcError::invalid_request("send the token once"));
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            // RFC 6750 §3.1: no error code when no credentials were sent.
            let mut r = (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_token", "error_description": "a bearer token is required"}))).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"lintel\""),
            );
            no_store(r.headers_mut());
            return r;
        }
    };
    match token::userinfo(&state.identity, &state.oidc, &token).await {
        Ok(claims) => {
            let mut r = axum::Json(claims).into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => error_response(&e),
    }
}

/// `POST /oauth2/introspect` (RFC 7662): confidential clients, their own tokens.
async fn introspect(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let result = async {
        let (params, client, _) = authenticated_client(&state, &headers, &ci, &body).await?;
        if clients::is_public(&client) {
            return Err(OidcError::invalid_client(
                "introspection needs client authentication",
            ));
        }
        let t = field(&params, "token")
            .ok_or_else(|| OidcError::invalid_request("token is required"))?;
        token::introspect(&state.identity, &state.oidc, &client, t).await
    }
    .await;
    match result {
        Ok(v) => {
            let mut r = axum::Json(v).into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => error_response(&e),
    }
}

/// `POST /oauth2/revoke` (RFC 7009): 200 whether or not the token was known.
async fn revoke(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let id = acting(&state, &headers, &ci);
    let result = async {
        let (params, client, _) = authenticated_client(&state, &headers, &ci, &body).await?;
        let t = field(&params, "token")
            .ok_or_else(|| OidcError::invalid_request("token is required"))?;
        token::revoke(&id, &state.oidc, &client, t).await
    }
    .await;
    match result {
        Ok(()) => {
            let mut r = StatusCode::OK.into_response();
            no_store(r.headers_mut());
            r
        }
        Err(e) => error_response(&e),
    }
}

/// `/oauth2/logout` (RP-Initiated Logout 1.0): with a valid `id_token_hint` the session it
/// names ends at once; otherwise the user confirms (CSRF-protected form). Redirects only to
/// a `post_logout_redirect_uri` registered for the client, with `state`.
async fn logout(
    State(state): State<AppState>,
    method: Method,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let params = if method == Method::POST {
        form(&body)
    } else {
        form(query.unwrap_or_default().as_bytes())
    };
    let id = acting(&state, &headers, &ci);
    let get = |n: &str| field(&params, n);
    let current = match browser_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description()),
    };
    let hint = match get("id_token_hint") {
        None => None,
        Some(t) => {
            match crate::oidc::jwt::verify(&id, &state.oidc.keyring, t, &state.oidc.issuer, false)
                .await
            {
                Ok(v) => Some(v.claims),
                Err(_) => {
                    return error_page(StatusCode::BAD_REQUEST, "The id_token_hint is not valid.");
                }
            }
        }
    };
    let hint_aud = hint.as_ref().and_then(|c| match c.get("aud") {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_str()).map(String::from),
        _ => None,
    });
    let client_id = match (get("client_id"), hint_aud.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "client_id does not match the id_token_hint.",
            );
        }
        (Some(a), _) => Some(a.to_string()),
        (None, b) => b.map(String::from),
    };
    let post_logout = match get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = match &client_id {
                Some(c) => clients::get(&state.identity, c).await.ok(),
                None => None,
            };
            match client {
                Some(c) if c.post_logout_redirect_uris.0.iter().any(|u| u == uri) => {
                    Some(uri.to_string())
                }
                _ => {
                    return error_page(
                        StatusCode::BAD_REQUEST,
                        "The post_logout_redirect_uri is not registered for this client.",
                    );
                }
            }
        }
    };
    let hint_sid = hint
        .as_ref()
        .and_then(|c| c.get("sid"))
        .and_then(|v| v.as_str())
        .and_then(|s| uuid::Uuid::parse_str(s).ok());
    let hint_sub = hint
        .as_ref()
        .and_then(|c| c.get("sub"))
        .and_then(|v| v.as_str())
        .map(String::from);
    let confirmed =
        method == Method::POST && get("confirm") == Some("yes") && csrf_ok(&headers, &params);
    let matches_current = current.as_ref().is_none_or(|s| {
        Some(s.session_id) == hint_sid
            || hint_sub.as_deref() == Some(s.user_id.to_string().as_str())
    });
    if !(confirmed || (hint.is_some() && matches_current)) {
        let (csrf, set) = csrf_token(&headers);
        let mut r = html(
            StatusCode::OK,
            web::render(
                "logout.html",
                web::LogoutPage {
                    csrf: &csrf,
                    done: false,
                    post_logout_redirect_uri: post_logout.as_deref(),
                    client_id: client_id.as_deref(),
                    state: get("state"),
                },
            ),
        );
        if set {
            set_cookie(
                &mut r,
                CSRF_COOKIE,
                &csrf,
                state.oidc.secure_cookies(),
                None,
            );
        }
        return r;
    }
    let mut ended = Vec::new();
    if let Some(s) = &current {
        ended.push(s.session_id);
    }
    if let Some(sid) = hint_sid.filter(|s| !ended.contains(s)) {
        ended.push(sid);
    }
    for sid in ended {
        if let Err(e) = crate::oidc::session::end(&id, sid).await {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.description());
        }
    }
    let mut r = match post_logout {
        Some(uri) => {
            let mut p: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = get("state") {
                p.push(("state", s));
            }
            redirect(&crate::oidc::authorize::redirect_with(&uri, &p))
        }
        None => html(
            StatusCode::OK,
            web::render(
                "logout.html",
                web::LogoutPage {
                    done: true,
                    ..Default::default()
                },
            ),
        ),
    };
    set_cookie(
        &mut r,
        SESSION_COOKIE,
        "",
        state.oidc.secure_cookies(),
        Some(0),
    );
    r
}
