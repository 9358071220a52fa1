//! The management API under load, and what its per-request access work costs.
//!
//! `cargo bench --bench management` (env: MGMT_BENCH_SECS, MGMT_BENCH_CONCURRENCY):
//! 1. in-process, single thread: `api_keys::authenticate` + `rate_limit::check` (the key
//!    lookup and limit check every authenticated request pays) — mean CPU time per call,
//!    from the process's CPU clock (PostgreSQL's own CPU is not included);
//! 2. over HTTP: authenticated `GET /api/v1/organizations/{org_id}` from concurrent clients
//!    for a fixed time — requests/s and latency percentiles.
//!
//! Both on SQLite (the default) and, when `LINTEL_TEST_POSTGRES_URL` names a server where a
//! database may be created, on a fresh PostgreSQL database.
use lintel::app::App;
use lintel::config::Config;
use lintel::identity::api_keys::{self, NewApiKey};
use lintel::identity::orgs;
use lintel::identity::rate_limit::{self, Family, RateKey};
use sqlx::Connection;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time consumed by the calling thread.
fn process_cpu() -> Duration {
    let mut ts = libc_timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_THREAD_CPUTIME_ID = 3 on Linux.
    unsafe { clock_gettime(3, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[repr(C)]
struct libc_timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clk: i32, ts: *mut libc_timespec) -> i32;
}

async fn run(label: &str, database_url: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        ("LINTEL_BIND".to_string(), "127.0.0.1:0".to_string()),
        ("LINTEL_DATABASE_URL".to_string(), database_url),
        (
            "LINTEL_KEYS_DIR".to_string(),
            dir.path().join("keys").display().to_string(),
        ),
        (
            "LINTEL_DATA_DIR".to_string(),
            dir.path().join("data").display().to_string(),
        ),
        ("LINTEL_LOG_LEVEL".to_string(), "warn".to_string()),
        // Limits are checked, never hit.
        (
            "LINTEL_RATE_LIMITS_MANAGEMENT".to_string(),
            "1000000000/86400".to_string(),
        ),
    ];
    let config = Config::from_sources(None, env).expect("config");
    let app = App::build(config).await.expect("app");
    let addr = app.local_addr().expect("addr");
    let id = app.state.identity.clone();
    tokio::spawn(app.serve(std::future::pending()));
    let org = orgs::create(&id, "Bench Org", None).await.expect("org");
    let (key, secret) = api_keys::create(
        &id,
        NewApiKey {
            is_admin: true,
            ..Default::default()
        },
    )
    .await
    .expect("key");
    let secret = secret.expose().clone();

    // 1. Key lookup + limit check, one thread.
    let n = 2000u32;
    for _ in 0..200 {
        let p = api_keys::authenticate(&id, &secret).await.expect("auth");
        rate_limit::check(
            &id,
            &RateKey::new(Family::Management).api_key(p.key.api_key_id),
        )
        .await
        .expect("check");
    }
    let (cpu0, wall0) = (process_cpu(), Instant::now());
    for _ in 0..n {
        let p = api_keys::authenticate(&id, &secret).await.expect("auth");
        let d = rate_limit::check(
            &id,
            &RateKey::new(Family::Management).api_key(key.api_key_id),
        )
        .await
        .expect("check");
        assert!(d.allowed && p.key.is_admin);
    }
    let cpu = (process_cpu() - cpu0) / n;
    let wall = wall0.elapsed() / n;
    println!(
        "[{label}] key lookup + limit check: {cpu:?} CPU (whole process), {wall:?} wall per request (n={n})"
    );

    // 2. HTTP throughput.
    let secs = env_or("MGMT_BENCH_SECS", 10);
    let concurrency = env_or("MGMT_BENCH_CONCURRENCY", 32);
    let url = format!("http://{addr}/api/v1/organizations/{}", org.org_id);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = client
                    .get(&url)
                    .bearer_auth(&secret)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(r.status(), 200);
                r.bytes().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    println!(
        "[{label}] GET /api/v1/organizations/{{id}}: {} requests in {elapsed:.1} s = {:.0}/s \
         (concurrency {concurrency}, client in the same process), p50 {:?}, p99 {:?}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    run(
        "sqlite",
        format!("sqlite://{}", dir.path().join("bench.db").display()),
    )
    .await;
    if let Ok(admin) = std::env::var("LINTEL_TEST_POSTGRES_URL") {
        let name = format!("lintel_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create db");
        let mut url = url::Url::parse(&admin).expect("url");
        url.set_path(&format!("/{name}"));
        run("postgres", url.to_string()).await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}
