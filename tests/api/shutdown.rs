//! Graceful shutdown: in-flight requests finish, new ones are refused.
use crate::helpers::{Backend, Spawn, TestDb, spawn_app_with};
use axum::routing::get;
use lintel::http::Router;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_in_flight_request() {
    let extra = Router::new().route(
        "/probe/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }),
    );
    let mut app = spawn_app_with(
        Backend::Sqlite,
        module_path!(),
        Spawn {
            env: &[],
            extra: Some(extra),
        },
    )
    .await
    .unwrap();
    let client = app.client.clone();
    let url = app.url("/probe/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    app.stop().await.expect("server stops cleanly");
    // The server waited for the request rather than cutting it off.
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    let resp = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "finished");

    // Nothing listens any more.
    let fresh = reqwest::Client::new();
    assert!(fresh.get(app.url("/healthz")).send().await.is_err());
    app.finish().await;
}

/// The binary: SIGTERM stops it with status 0 after it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_exits_cleanly_on_sigterm() {
    let db = TestDb::new(Backend::Sqlite, module_path!()).await.unwrap();
    let keys = db.keys_dir().display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lintel"))
        .current_dir(db.dir.path())
        .arg("serve")
        .env_clear()
        .env("LINTEL_BIND", "127.0.0.1:0")
        .env("LINTEL_DATABASE_URL", &db.url)
        .env("LINTEL_KEYS_DIR", &keys)
        .env("LINTEL_LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut addr = None;
    let mut seen = Vec::new();
    while addr.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                addr = Some(rest.trim().to_string());
            }
            seen.push(line);
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("no listening line in: {seen:#?}"));
    assert!(
        seen.iter().any(|l| l.contains("generated signing key")),
        "{seen:#?}"
    );
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "lintel did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:#?}");
    assert!(!rest.iter().chain(&seen).any(|l| l.contains("panicked")));
}
