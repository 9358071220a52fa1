//! Password logins under concurrency, with the default argon2id parameters
//! (m=19456 KiB, t=2, p=1), while a cheap endpoint is polled: logins/s and the cheap
//! endpoint's latency percentiles.
//!
//! `cargo bench --bench login` (override with LOGIN_BENCH_SECS, LOGIN_BENCH_CONCURRENCY).
use lintel::app::App;
use lintel::config::{Config, Secret};
use lintel::identity::login::{LoginContext, authenticate};
use lintel::identity::users::{self, NewUser};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let secs = env_or("LOGIN_BENCH_SECS", 10);
    let concurrency = env_or("LOGIN_BENCH_CONCURRENCY", 16);
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        ("LINTEL_BIND".to_string(), "127.0.0.1:0".to_string()),
        (
            "LINTEL_DATABASE_URL".to_string(),
            format!("sqlite://{}", dir.path().join("bench.db").display()),
        ),
        (
            "LINTEL_KEYS_DIR".to_string(),
            dir.path().join("keys").display().to_string(),
        ),
        (
            "LINTEL_DATA_DIR".to_string(),
            dir.path().join("data").display().to_string(),
        ),
        ("LINTEL_LOG_LEVEL".to_string(), "warn".to_string()),
        // Failures are not what is measured here.
        ("LINTEL_LOGIN_MAX_FAILURES".to_string(), "1000".to_string()),
    ];
    let config = Config::from_sources(None, env).expect("config");
    let app = App::build(config).await.expect("app");
    let addr = app.local_addr().expect("addr");
    let id = app.state.identity.clone();
    tokio::spawn(app.serve(std::future::pending()));

    let password = Secret::new("correct horse battery staple".to_string());
    users::create(
        &id,
        NewUser {
            email: "bench@example.com".into(),
            password: Some(password.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("user");

    let deadline = Instant::now() + Duration::from_secs(secs);
    let logins = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (id, password, logins) = (id.clone(), password.clone(), logins.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                authenticate(
                    &id,
                    "bench@example.com",
                    &password,
                    &LoginContext::default(),
                )
                .await
                .expect("login");
                logins.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    let url = format!("http://{addr}/readyz");
    let started = Instant::now();
    while Instant::now() < deadline {
        let t = Instant::now();
        let r = client.get(&url).send().await.expect("readyz");
        assert_eq!(r.status(), 200);
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in workers {
        w.await.expect("worker");
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "logins: {} in {:.1} s = {:.1}/s (concurrency {concurrency}, cores {})",
        logins.load(Ordering::Relaxed),
        elapsed,
        logins.load(Ordering::Relaxed) as f64 / elapsed,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!(
        "GET /readyz during logins: n={} p50={:?} p99={:?} max={:?}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}
