//! HTTP: routes, extractors, and the conversion of errors into responses.
//! The only module that knows axum.
pub use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub mod account;
pub mod api;
pub mod error;
pub mod extract;
pub mod federation;
pub mod health;
pub mod metrics;
pub mod oidc;
pub mod rate_limit;
pub mod scim;
pub mod server;
pub mod state;

pub use error::ApiError;
pub use server::serve;
pub use state::AppState;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: routes plus the middleware stack.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// [`router`] plus `extra` routes under the same middleware.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let http = &state.config.http;
    let (body_limit, timeout) = (http.body_limit_bytes, http.request_timeout);
    let (management, openapi) = api::router();
    let openapi = std::sync::Arc::new(openapi.to_pretty_json().unwrap_or_default());
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = openapi.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .merge(management)
        .merge(scim::routes())
        .merge(oidc::routes())
        .merge(account::routes())
        .merge(federation::routes())
        .merge(extra)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(
            // Outermost first: request id, tracing span, request-id echo, problem bodies
            // for bare layer errors, timeout, body limit.
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        // 5xx are logged once, where they are produced.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                // A panic in a handler is a bug: logged once, answered with a bare 500.
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("handler panicked");
                    ApiError::Internal("handler panicked".into()).into_response()
                }))
                .layer(axum::middleware::map_response(problem_for_bare_errors))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                .layer(RequestBodyLimitLayer::new(body_limit)),
        )
        // Outside the stack above so timeouts and body-limit answers are counted too.
        .layer(axum::middleware::from_fn(metrics::track))
}

/// The span every log line of a request carries: method, path (never the query, which may
/// hold codes or tokens) and request id.
fn request_span(req: &Request<Body>) -> tracing::Span {
    let request_id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %request_id,
    )
}

/// Layers (body limit, timeout) answer with empty or plain-text bodies; give those the
/// same problem+json shape as everything else.
async fn problem_for_bare_errors<B>(resp: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let resp = resp.map(Body::new);
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/problem+json"));
    // Protocol errors in their own JSON shape (SCIM, OAuth) are left as they are.
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if (status.is_client_error() || status.is_server_error())
        && !is_problem
        && !is_json
        && let Some(err) = ApiError::from_status(status)
    {
        let mut fresh = err.into_response();
        for (name, value) in resp.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.headers_mut().insert(name.clone(), value.clone());
            }
        }
        return fresh;
    }
    resp
}
