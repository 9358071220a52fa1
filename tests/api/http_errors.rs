//! The middleware stack and the one error type, seen from a client.
use crate::helpers::{Backend, Spawn, TestApp, spawn_app_with};
use crate::on_both_backends;
use axum::routing::{get, post};
use lintel::http::extract::{Json, Path};
use lintel::http::{ApiError, AppState, Router};
use serde_json::Value;
use std::time::Duration;

on_both_backends!(
    unknown_route_is_404_problem_json,
    wrong_method_is_405_problem_json
);

async fn unknown_route_is_404_problem_json(app: TestApp) {
    let r = app
        .client
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:not-found");
    assert_eq!(body["status"], 404);
    app.finish().await;
}

async fn wrong_method_is_405_problem_json(app: TestApp) {
    let r = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:method-not-allowed");
    app.finish().await;
}

/// Probe routes mounted under the real middleware.
fn probes() -> Router<AppState> {
    Router::new()
        .route(
            "/probe/echo",
            post(|Json(v): Json<Value>| async move { axum::Json(v) }),
        )
        .route(
            "/probe/items/{id}",
            get(|Path(id): Path<uuid::Uuid>| async move { id.to_string() }),
        )
        .route(
            "/probe/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/probe/panics",
            get(|| async {
                let v: Vec<u8> = Vec::new();
                #[allow(clippy::indexing_slicing)]
                let x = v[3];
                x.to_string()
            }),
        )
        .route(
            "/probe/broken",
            get(|| async {
                Err::<(), _>(ApiError::Internal(
                    "SELECT password_hash FROM user_passwords: connection reset".into(),
                ))
            }),
        )
}

async fn spawn(env: &[(&str, &str)]) -> TestApp {
    spawn_app_with(
        Backend::Sqlite,
        module_path!(),
        Spawn {
            env,
            extra: Some(probes()),
        },
    )
    .await
    .expect("app")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_by_length_and_by_stream() {
    let app = spawn(&[("LINTEL_HTTP_BODY_LIMIT_BYTES", "1024")]).await;
    let big = format!("{{\"a\":\"{}\"}}", "x".repeat(2000));
    // Declared length over the limit: refused before any handler runs.
    let r = app
        .client
        .post(app.url("/probe/echo"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:payload-too-large");
    // Chunked (no length): cut off while reading.
    let stream = futures_stream(big.into_bytes());
    let r = app
        .client
        .post(app.url("/probe/echo"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Under the limit passes.
    let r = app
        .client
        .post(app.url("/probe/echo"))
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["a"], 1);
    app.finish().await;
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
    tokio_stream::iter(chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_400_never_500() {
    let app = spawn(&[]).await;
    let r = app
        .client
        .get(app.url("/probe/items/not-a-uuid"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "urn:lintel:problem:bad-request"
    );
    let r = app
        .client
        .post(app.url("/probe/echo"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/probe/echo"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_a_bare_500() {
    let app = spawn(&[]).await;
    let r = app
        .client
        .get(app.url("/probe/broken"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let text = r.text().await.unwrap();
    assert!(!text.contains("SELECT"), "SQL leaked: {text}");
    assert!(!text.contains("password"), "detail leaked: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:internal");
    assert!(body.get("detail").is_none());
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_bare_500_and_the_server_lives_on() {
    let app = spawn(&[]).await;
    let r = app
        .client
        .get(app.url("/probe/panics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:internal");
    assert!(body.get("detail").is_none());
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_408() {
    let app = spawn(&[("LINTEL_HTTP_REQUEST_TIMEOUT_SECS", "1")]).await;
    let r = app.client.get(app.url("/probe/slow")).send().await.unwrap();
    assert_eq!(r.status(), 408);
    assert_eq!(
        r.json::<Value>().await.unwrap()["type"],
        "urn:lintel:problem:timeout"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_echoed_or_generated() {
    let app = spawn(&[]).await;
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc-123");
    let r = app
        .client
        .get(app.url("/no-such-route"))
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    let r2 = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(r2.headers()["x-request-id"].to_str().unwrap(), generated);
    app.finish().await;
}
