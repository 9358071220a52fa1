//! The cost of rate limiting one request: `identity::rate_limit::check` (the policy lookup
//! — API key, user and org assignments and the family default in one query — plus the
//! counter upsert), and the in-memory fast path for a caller already over its limit.
//!
//! - `check/<backend>/allowed`: a management-API request under its limit (policy lookup +
//!   atomic upsert), over a fresh SQLite file and, when `LINTEL_TEST_POSTGRES_URL` names a
//!   server where a database may be created, over PostgreSQL.
//! - `check/<backend>/denied_fast_path`: the same caller once over the limit (memory only).
//! - After criterion, `CPU per check` lines: CPU time of this process (all threads, from
//!   `/proc/self/task/*/schedstat`) over 20,000 sequential checks, divided by their number;
//!   for PostgreSQL also the CPU of the database's server processes. `CPU per SELECT 1` is
//!   the same for the cheapest statement, the floor of any database round trip.
//!
//! `cargo bench --bench rate_limit` (optimized) or `cargo bench --bench rate_limit --profile
//! dev` (unoptimized, an upper bound).
use criterion::Criterion;
use lintel::clock::SystemClock;
use lintel::config::Config;
use lintel::identity::rate_limit::{self as rl, Family, RateKey, Scope};
use lintel::identity::{Identity, orgs, users};
use sqlx::Connection;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CPU_SAMPLES: u32 = 20_000;

struct Setup {
    name: &'static str,
    id: Identity,
    allowed: RateKey,
    denied: RateKey,
    /// PostgreSQL: the admin URL and the database (server processes are measured, then it
    /// is dropped).
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

async fn setup(name: &'static str, url: String, pg: Option<(String, String)>) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        ("LINTEL_DATABASE_URL".to_string(), url),
        (
            "LINTEL_KEYS_DIR".to_string(),
            dir.path().join("keys").display().to_string(),
        ),
        (
            "LINTEL_DATA_DIR".to_string(),
            dir.path().join("data").display().to_string(),
        ),
        ("LINTEL_PASSWORD_ARGON2_MEMORY_KIB".into(), "64".into()),
        ("LINTEL_PASSWORD_ARGON2_ITERATIONS".into(), "1".into()),
        (
            "LINTEL_RATE_LIMITS_MANAGEMENT".into(),
            "1000000000/86400".into(),
        ),
    ];
    let config = Config::from_sources(None, env).expect("config");
    let db = lintel::app::open_store(&config).await.expect("store");
    let id = lintel::app::identity(&config, db, Arc::new(SystemClock)).expect("identity");
    rl::ensure_default_policies(&id).await.expect("defaults");
    let org = orgs::create(&id, "Bench", None).await.expect("org").org_id;
    let (user, _) = users::create(
        &id,
        users::NewUser {
            email: "bench@example.com".into(),
            org_id: Some(org),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    // A realistic request: key, user and org all looked up; the default applies (no
    // assignment), counted per key, with room for every iteration.
    let allowed = RateKey::new(Family::Management)
        .api_key(Uuid::now_v7())
        .user(user.user_id)
        .org(org);
    // A second user with a 1-per-day policy, pushed over it.
    let (over, _) = users::create(
        &id,
        users::NewUser {
            email: "over@example.com".into(),
            org_id: Some(org),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    let p = rl::create_policy(&id, "one-a-day", Scope::User, 1, 86_400, None)
        .await
        .expect("policy");
    rl::assign_to_user(&id, p.policy_id, over.user_id)
        .await
        .expect("assign");
    let denied = RateKey::new(Family::Management)
        .api_key(Uuid::now_v7())
        .user(over.user_id)
        .org(org);
    rl::check(&id, &denied).await.expect("first");
    assert!(!rl::check(&id, &denied).await.expect("second").allowed);
    Setup {
        name,
        id,
        allowed,
        denied,
        pg,
        _dir: dir,
    }
}

async fn postgres() -> Option<(String, String, String)> {
    let admin = std::env::var("LINTEL_TEST_POSTGRES_URL").ok()?;
    let name = format!("lintel_bench_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&format!("/{name}"));
    Some((url.to_string(), admin, name))
}

/// CPU nanoseconds of the given tasks (`/proc/<pid>/task/*/schedstat`, first field).
fn cpu_ns(proc_dir: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("{proc_dir}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

async fn server_pids(s: &Setup) -> Vec<u32> {
    let Some((admin, name)) = &s.pg else {
        return Vec::new();
    };
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect");
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_all(&mut conn)
        .await
        .expect("pids");
    pids.into_iter()
        .filter_map(|p| u32::try_from(p).ok())
        .collect()
}

fn servers_cpu_ns(pids: &[u32]) -> u64 {
    pids.iter().map(|p| cpu_ns(&format!("/proc/{p}"))).sum()
}

async fn cpu_per_check(s: &Setup, key: &RateKey, what: &str) {
    for _ in 0..500 {
        rl::check(&s.id, key).await.expect("warm-up");
    }
    let pids = server_pids(s).await;
    let (cpu0, srv0, t0) = (cpu_ns("/proc/self"), servers_cpu_ns(&pids), Instant::now());
    for _ in 0..CPU_SAMPLES {
        black_box(rl::check(&s.id, key).await.expect("check"));
    }
    let (cpu1, srv1, wall) = (cpu_ns("/proc/self"), servers_cpu_ns(&pids), t0.elapsed());
    let per = |ns: u64| ns as f64 / f64::from(CPU_SAMPLES) / 1000.0;
    let mut line = format!(
        "CPU per check  {}/{what}: {:.1} µs in this process (wall {:.1} µs)",
        s.name,
        per(cpu1 - cpu0),
        wall.as_secs_f64() * 1e6 / f64::from(CPU_SAMPLES)
    );
    if !pids.is_empty() {
        line += &format!(", {:.1} µs in PostgreSQL", per(srv1 - srv0));
    }
    println!("{line}");
}

/// The same measurement for `SELECT 1` through the same pool: the floor any statement
/// pays in this build (driver, pool, runtime), to read the figures above against.
async fn cpu_per_ping(s: &Setup) {
    let pids = server_pids(s).await;
    let (cpu0, srv0, t0) = (cpu_ns("/proc/self"), servers_cpu_ns(&pids), Instant::now());
    for _ in 0..CPU_SAMPLES {
        s.id.db.ping().await.expect("ping");
    }
    let (cpu1, srv1, wall) = (cpu_ns("/proc/self"), servers_cpu_ns(&pids), t0.elapsed());
    let per = |ns: u64| ns as f64 / f64::from(CPU_SAMPLES) / 1000.0;
    let mut line = format!(
        "CPU per SELECT 1 {}: {:.1} µs in this process (wall {:.1} µs)",
        s.name,
        per(cpu1 - cpu0),
        wall.as_secs_f64() * 1e6 / f64::from(CPU_SAMPLES)
    );
    if !pids.is_empty() {
        line += &format!(", {:.1} µs in PostgreSQL", per(srv1 - srv0));
    }
    println!("{line}");
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut setups = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    setups.push(rt.block_on(setup("sqlite", sqlite_url, None)));
    if let Some((url, admin, name)) = rt.block_on(postgres()) {
        setups.push(rt.block_on(setup("postgres", url, Some((admin, name)))));
    } else {
        eprintln!("postgres: skipped (LINTEL_TEST_POSTGRES_URL not set)");
    }

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    for s in &setups {
        let mut g = c.benchmark_group(format!("check/{}", s.name));
        g.bench_function("allowed", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(rl::check(&s.id, &s.allowed).await.expect("check")) })
        });
        g.bench_function("denied_fast_path", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(rl::check(&s.id, &s.denied).await.expect("check")) })
        });
        g.finish();
    }
    c.final_summary();

    for s in &setups {
        rt.block_on(cpu_per_ping(s));
        rt.block_on(cpu_per_check(s, &s.allowed, "allowed"));
        rt.block_on(cpu_per_check(s, &s.denied, "denied_fast_path"));
    }
    for s in setups {
        rt.block_on(async {
            s.id.db.close().await;
            if let Some((admin, name)) = &s.pg {
                let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect");
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .expect("drop");
            }
        });
    }
}
