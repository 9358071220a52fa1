use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;
use serde_json::Value;

on_both_backends!(health_and_readiness, readiness_is_503_when_the_pool_is_gone);

async fn health_and_readiness(app: TestApp) {
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");

    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let expected = match app.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(body["database"], expected);
    app.finish().await;
}

async fn readiness_is_503_when_the_pool_is_gone(app: TestApp) {
    app.db.close().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "urn:lintel:problem:unavailable");
    // Liveness does not depend on the database.
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.finish().await;
}

/// The PostgreSQL database really disappearing under a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_when_the_postgres_database_is_dropped() {
    let Some(app) = spawn_app(Backend::Postgres, module_path!()).await else {
        return;
    };
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    app.test_db.drop_database().await;
    let r = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], 503);
    app.finish().await;
}
