//! Enterprise SSO endpoints (issue #7): SAML SP metadata, SP-initiated login, the ACS, the
//! upstream OIDC callback, `/sso/{org_slug}` and the completion step. Thin: each calls one
//! `federation::flow` function and turns its error into a readable page.
use super::oidc::{
    acting, after_step, cookie, error_page, field, form, peer, redirect, serialize, set_cookie,
    user_agent,
};
use super::state::AppState;
use crate::federation::FederationError;
use crate::federation::flow::{self, AcsOutcome, Browser, Finished};
use crate::identity::login::LoginContext;
use crate::oidc::interaction::{self, Origin};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use uuid::Uuid;

/// Binds a federated login to the browser that started it.
pub const FED_COOKIE: &str = "lintel_sso";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/saml/{provider_id}/metadata", get(metadata))
        .route("/saml/{provider_id}/login", get(start))
        .route("/saml/{provider_id}/acs", post(acs))
        .route("/sso/oidc/{provider_id}/login", get(start))
        .route("/sso/oidc/{provider_id}/callback", get(oidc_callback))
        .route("/sso/complete", get(complete))
        .route("/sso/{org_slug}", get(sso_org))
}

fn browser(headers: &HeaderMap, ci: &Option<ConnectInfo<SocketAddr>>) -> Browser {
    Browser {
        cookie: cookie(headers, FED_COOKIE),
        ctx: LoginContext {
            org_id: None,
            ip: peer(ci),
            user_agent: user_agent(headers),
        },
    }
}

/// The page a failed federated login shows: the reason's category (the detail is logged).
fn failure(e: &FederationError) -> Response {
    if e.is_internal() {
        tracing::error!(error = %e, "federated login failed");
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.");
    }
    let status = match e {
        FederationError::UnknownProvider => StatusCode::NOT_FOUND,
        FederationError::Identity(_) | FederationError::MethodNotAllowed => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    error_page(
        status,
        &format!(
            "Single sign-on failed ({}). Start again from your application, or ask your \
             administrator if it keeps happening.",
            e.category()
        ),
    )
}

fn uuid_or_404(raw: &str) -> Result<Uuid, Box<Response>> {
    Uuid::parse_str(raw).map_err(|_| Box::new(failure(&FederationError::UnknownProvider)))
}

/// `GET /saml/{provider_id}/metadata`: our SP metadata for this provider.
async fn metadata(State(state): State<AppState>, Path(raw): Path<String>) -> Response {
    let provider_id = match uuid_or_404(&raw) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    match flow::sp_metadata(&state.federation, &state.identity, provider_id).await {
        Ok(xml) => {
            let mut resp = (StatusCode::OK, xml).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/samlmetadata+xml"),
            );
            resp
        }
        Err(e) => failure(&e),
    }
}

/// Sends the browser to the IdP, setting the binding cookie.
pub(super) async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    ci: &Option<ConnectInfo<SocketAddr>>,
    provider_id: Uuid,
    auth: &str,
    login_hint: Option<&str>,
) -> Response {
    let b = browser(headers, ci);
    match flow::start(
        &state.federation,
        &state.identity,
        provider_id,
        auth,
        login_hint,
        &b,
    )
    .await
    {
        Ok(s) => {
            let mut resp = redirect(&s.location);
            set_cookie(
                &mut resp,
                FED_COOKIE,
                &s.cookie,
                state.oidc.secure_cookies(),
                Some(flow::REQUEST_TTL_SECS),
            );
            resp
        }
        Err(e) => failure(&e),
    }
}

/// `GET /saml/{provider_id}/login` and `/sso/oidc/{provider_id}/login`, `?auth=` carrying
/// the authorization request to continue.
async fn start(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let provider_id = match uuid_or_404(&raw) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = form(q.unwrap_or_default().as_bytes());
    let auth = field(&params, "auth").unwrap_or("").to_string();
    begin(&state, &headers, &Some(ci), provider_id, &auth, None).await
}

/// `GET /sso/{org_slug}`: the org's SSO directly.
async fn sso_org(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(slug): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let params = form(q.unwrap_or_default().as_bytes());
    let auth = field(&params, "auth").unwrap_or("").to_string();
    match crate::federation::home_realm::for_slug(&state.identity, &slug).await {
        Ok(Some(realm)) => {
            begin(
                &state,
                &headers,
                &Some(ci),
                realm.provider.provider_id,
                &auth,
                None,
            )
            .await
        }
        Ok(None) => error_page(
            StatusCode::NOT_FOUND,
            "This organization has no single sign-on configured.",
        ),
        Err(e) => failure(&FederationError::Identity(e)),
    }
}

/// Turns a finished federated login into a session and continues its authorization request.
async fn finished(
    state: &AppState,
    headers: &HeaderMap,
    ci: &Option<ConnectInfo<SocketAddr>>,
    f: Finished,
) -> Response {
    let id = acting(state, headers, ci);
    let origin = Origin {
        org_id: Some(f.provisioned.org_id),
        ip: peer(ci),
        user_agent: user_agent(headers),
    };
    let auth_params = form(f.auth.as_bytes());
    match interaction::federated(&id, f.provisioned.user.user_id, f.method, &origin).await {
        Ok(step) => {
            let auth = serialize(&auth_params);
            after_step(state, headers, &auth_params, step, &auth).await
        }
        Err(e) => failure(&FederationError::Identity(e)),
    }
}

/// `POST /saml/{provider_id}/acs` (HTTP-POST binding, SAML bindings §3.5).
async fn acs(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let ci = Some(ci);
    let provider_id = match uuid_or_404(&raw) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = form(&body);
    let Some(saml_response) = field(&params, "SAMLResponse") else {
        return error_page(StatusCode::BAD_REQUEST, "No SAMLResponse was posted.");
    };
    let relay = field(&params, "RelayState");
    let b = browser(&headers, &ci);
    let id = acting(&state, &headers, &ci);
    match flow::saml_acs(
        &state.federation,
        &id,
        provider_id,
        saml_response,
        relay,
        &b,
    )
    .await
    {
        // Back to our own origin with a GET, so the binding cookie (SameSite=Lax) is sent.
        Ok(AcsOutcome::Continue { request_id }) => {
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("request", &request_id)
                .finish();
            redirect(&format!("/sso/complete?{q}"))
        }
        Ok(AcsOutcome::Finished(f)) => finished(&state, &headers, &ci, *f).await,
        Err(e) => failure(&e),
    }
}

/// `GET /sso/complete?request=…`: finishes an SP-initiated SAML login.
async fn complete(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let ci = Some(ci);
    let params = form(q.unwrap_or_default().as_bytes());
    let request = field(&params, "request").unwrap_or("");
    let b = browser(&headers, &ci);
    let id = acting(&state, &headers, &ci);
    match flow::complete(&id, request, &b).await {
        Ok(f) => finished(&state, &headers, &ci, f).await,
        Err(e) => failure(&e),
    }
}

/// `GET /sso/oidc/{provider_id}/callback`: the upstream OIDC provider's redirect back.
async fn oidc_callback(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let ci = Some(ci);
    let provider_id = match uuid_or_404(&raw) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let params = form(q.unwrap_or_default().as_bytes());
    let b = browser(&headers, &ci);
    let id = acting(&state, &headers, &ci);
    match flow::oidc_callback(&state.federation, &id, provider_id, &params, &b).await {
        Ok(f) => finished(&state, &headers, &ci, f).await,
        Err(e) => failure(&e),
    }
}
