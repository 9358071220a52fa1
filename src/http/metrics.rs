//! Prometheus metrics: requests and latencies per route template ([`track`]) and database
//! pool occupancy, rendered as text at `GET /metrics` on a listener of its own
//! (`metrics.bind`; off when empty), never on the main port.
use crate::store::Db;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::future::IntoFuture;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Counter: `{method, route, status}`.
pub const REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram (seconds): `{method, route}`.
pub const REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Gauges, set at each scrape: connections open, idle, and the pool's limit.
pub const POOL_CONNECTIONS: &str = "db_pool_connections";
pub const POOL_IDLE: &str = "db_pool_idle_connections";
pub const POOL_MAX: &str = "db_pool_max_connections";
/// The `route` label of a request no route matched (never the raw path, which may hold ids).
pub const UNMATCHED: &str = "unmatched";
/// The Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Histogram samples are drained into buckets at least this often, scraped or not.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("metrics recorder: {0}")]
pub struct RecorderError(String);

static RECORDER: OnceLock<Result<PrometheusHandle, RecorderError>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder on first call and returns its handle; later
/// calls return the same handle (a global recorder can be installed only once per process).
pub fn install_recorder() -> Result<PrometheusHandle, RecorderError> {
    RECORDER
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| b.install_recorder())
                .map_err(|e| RecorderError(e.to_string()))?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "HTTP requests answered, by route template");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by route template"
    );
    describe_gauge!(POOL_CONNECTIONS, "Database connections open");
    describe_gauge!(POOL_IDLE, "Database connections open and idle");
    describe_gauge!(POOL_MAX, "Database connections allowed");
}

/// The `method` label: the standard methods, anything else as `other` (so a client cannot
/// create label values at will).
pub fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware (`axum::middleware::from_fn(track)`, mounted with `Router::layer` so routing
/// has run): counts each request and observes its latency under the matched route template
/// (`/users/{id}`), or [`UNMATCHED`]. A no-op until a recorder is installed.
pub async fn track(req: Request, next: Next) -> Response {
    // Latency is measured on the monotonic clock; it is not business time.
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED.to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    ::metrics::histogram!(REQUEST_DURATION, "method" => method, "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    ::metrics::counter!(REQUESTS_TOTAL, "method" => method, "route" => route, "status" => status)
        .increment(1);
    resp
}

fn record_pool(db: &Db) {
    let s = db.pool_stats();
    ::metrics::gauge!(POOL_CONNECTIONS).set(f64::from(s.size));
    ::metrics::gauge!(POOL_IDLE).set(f64::from(s.idle));
    ::metrics::gauge!(POOL_MAX).set(f64::from(s.max));
}

/// `GET /metrics` (the pool gauges are read at each scrape); anything else is 404.
pub fn metrics_router(handle: PrometheusHandle, db: Db) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                record_pool(&db);
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], handle.render())
            }),
        )
        .fallback(|| async { axum::http::StatusCode::NOT_FOUND.into_response() })
}

/// Serves [`metrics_router`] on `listener` (bound from `metrics.bind`) and keeps the
/// recorder's histograms drained; runs until aborted.
pub fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    db: Db,
) -> JoinHandle<std::io::Result<()>> {
    let router = metrics_router(handle.clone(), db);
    tokio::spawn(async move {
        let upkeep = async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        };
        tokio::select! {
            r = axum::serve(listener, router).into_future() => r,
            () = upkeep => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::TRACE), "other");
    }
}
