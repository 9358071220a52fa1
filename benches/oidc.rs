//! The OpenID Connect token paths under load (issue 6's benchmarks).
//!
//! `cargo bench --bench oidc` (env: OIDC_BENCH_SECS, OIDC_BENCH_CONCURRENCY,
//! OIDC_BENCH_CONNECTIONS (the pool, 16), and
//! OIDC_BENCH_ONLY to run only the paths whose name contains it): the real
//! server on SQLite (and on a fresh PostgreSQL database when `LINTEL_TEST_POSTGRES_URL` is
//! set), clients in the same process, for a fixed time each:
//! 1. `client_credentials` issuance (`POST /oauth2/token`, Basic auth, ES256 JWT);
//! 2. the refresh grant (each client task follows its own rotating token chain);
//! 3. authorization-code exchange (a code is issued in-process, then exchanged over HTTP);
//! 4. `GET /oauth2/userinfo`; 5. `GET /oauth2/jwks`.
//!
//! Reported: requests/s, latency p50/p99, and the process's CPU time per request (server
//! and client together; PostgreSQL's own CPU is not included).
use lintel::app::App;
use lintel::config::{Config, Secret};
use lintel::identity::users::{self, NewUser};
use lintel::oidc::authorize::{self, AuthRequest};
use lintel::oidc::clients::{self, NewClient};
use serde_json::Value;
use sqlx::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

const REDIRECT: &str = "https://rp.bench/cb";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time consumed by the whole process (every thread).
fn process_cpu() -> Duration {
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_PROCESS_CPUTIME_ID = 2 on Linux.
    unsafe { clock_gettime(2, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
}

struct Ctx {
    base: String,
    http: reqwest::Client,
    web_id: String,
    web_secret: String,
    state: lintel::http::AppState,
    user_id: uuid::Uuid,
}

/// Issues a code in-process for a fresh browser session.
async fn code(ctx: &Ctx, session: &lintel::store::sessions::Session) -> String {
    let id = &ctx.state.identity;
    let client = clients::get(id, &ctx.web_id).await.expect("client");
    let req = AuthRequest {
        client_id: ctx.web_id.clone(),
        redirect_uri: REDIRECT.into(),
        scope: vec!["openid".into(), "email".into()],
        state: None,
        nonce: Some("n".into()),
        code_challenge: None,
        prompt: vec![],
        max_age: None,
        login_hint: None,
        id_token_hint: None,
        acr_values: None,
    };
    let loc = authorize::issue_code(id, &ctx.state.oidc.issuer, &client, &req, session, None)
        .await
        .expect("code");
    url::Url::parse(&loc)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("code param")
        .1
        .into_owned()
}

async fn exchange(ctx: &Ctx, code: &str) -> Value {
    let r = ctx
        .http
        .post(format!("{}/oauth2/token", ctx.base))
        .basic_auth(&ctx.web_id, Some(&ctx.web_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
        ])
        .send()
        .await
        .expect("exchange");
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

/// Runs `op` from `concurrency` tasks for `secs`; prints throughput, latency and CPU.
async fn load<F, Fut>(label: &str, what: &str, secs: u64, concurrency: u64, op: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if std::env::var("OIDC_BENCH_ONLY").is_ok_and(|only| !what.contains(only.as_str())) {
        return;
    }
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (cpu0, started) = (process_cpu(), Instant::now());
    let mut tasks = Vec::new();
    for task in 0..concurrency as usize {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                op(task).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu() - cpu0;
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    println!(
        "[{label}] {what}: {} in {elapsed:.1} s = {:.0}/s, p50 {:?}, p99 {:?}, CPU {:?}/request \
         (concurrency {concurrency})",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        cpu / all.len().max(1) as u32,
    );
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
        (
            "LINTEL_PASSWORD_ARGON2_MEMORY_KIB".to_string(),
            "64".to_string(),
        ),
        (
            "LINTEL_PASSWORD_ARGON2_ITERATIONS".to_string(),
            "1".to_string(),
        ),
        // Limits are checked, never hit.
        (
            "LINTEL_RATE_LIMITS_TOKEN".to_string(),
            "1000000000/86400".to_string(),
        ),
        (
            "LINTEL_DATABASE_MAX_CONNECTIONS".to_string(),
            env_or("OIDC_BENCH_CONNECTIONS", 16).to_string(),
        ),
    ];
    let config = Config::from_sources(None, env).expect("config");
    let app = App::build(config).await.expect("app");
    let addr = app.local_addr().expect("addr");
    let state = app.state.clone();
    tokio::spawn(app.serve(std::future::pending()));
    let id = state.identity.clone();
    let (user, _) = users::create(
        &id,
        NewUser {
            email: "bench@example.com".into(),
            password: Some(Secret::new("bench password 1".into())),
            ..Default::default()
        },
    )
    .await
    .expect("user");
    let (m2m, m2m_secret) = clients::create(
        &id,
        NewClient {
            name: "m2m".into(),
            grant_types: Some(vec!["client_credentials".into()]),
            scopes: Some(vec!["org".into()]),
            ..Default::default()
        },
    )
    .await
    .expect("m2m");
    let (web, web_secret) = clients::create(
        &id,
        NewClient {
            name: "web".into(),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .expect("web");
    let ctx = Arc::new(Ctx {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        web_id: web.client_id,
        web_secret: web_secret.expect("secret").expose().clone(),
        state,
        user_id: user.user_id,
    });
    let secs = env_or("OIDC_BENCH_SECS", 8);
    let concurrency = env_or("OIDC_BENCH_CONCURRENCY", 32);

    // 1. client_credentials.
    let m2m_secret = m2m_secret.expect("secret").expose().clone();
    let c = ctx.clone();
    let m2m_id = m2m.client_id.clone();
    load(label, "client_credentials", secs, concurrency, move |_| {
        let (c, m2m_id, m2m_secret) = (c.clone(), m2m_id.clone(), m2m_secret.clone());
        async move {
            let r = c
                .http
                .post(format!("{}/oauth2/token", c.base))
                .basic_auth(&m2m_id, Some(&m2m_secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("token");
            assert_eq!(r.status(), 200);
            r.bytes().await.expect("body");
        }
    })
    .await;

    // A browser session the codes are issued from.
    let (session, _) = lintel::oidc::session::open(
        &ctx.state.identity,
        ctx.user_id,
        None,
        vec!["pwd".into()],
        None,
        None,
    )
    .await
    .expect("session");
    let session = Arc::new(session);

    // 2. Refresh: one chain per task.
    let mut chains = Vec::new();
    for _ in 0..concurrency {
        let code = code(&ctx, &session).await;
        let t = exchange(&ctx, &code).await;
        chains.push(tokio::sync::Mutex::new(
            t["refresh_token"].as_str().expect("rt").to_string(),
        ));
    }
    let chains = Arc::new(chains);
    let access = {
        let code = code(&ctx, &session).await;
        exchange(&ctx, &code).await["access_token"]
            .as_str()
            .expect("at")
            .to_string()
    };
    let c = ctx.clone();
    load(
        label,
        "refresh_token grant (rotating)",
        secs,
        concurrency,
        move |task| {
            let (c, chains) = (c.clone(), chains.clone());
            async move {
                let mut rt = chains[task].lock().await;
                let r = c
                    .http
                    .post(format!("{}/oauth2/token", c.base))
                    .basic_auth(&c.web_id, Some(&c.web_secret))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                    ])
                    .send()
                    .await
                    .expect("refresh");
                assert_eq!(r.status(), 200);
                let v: Value = r.json().await.expect("json");
                *rt = v["refresh_token"].as_str().expect("rt").to_string();
            }
        },
    )
    .await;

    // 3. Code exchange (issue in-process + exchange over HTTP).
    let (c, s) = (ctx.clone(), session.clone());
    load(
        label,
        "code issue + exchange",
        secs,
        concurrency,
        move |_| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                let code = code(&c, &s).await;
                exchange(&c, &code).await;
            }
        },
    )
    .await;

    // 4. userinfo.
    let c = ctx.clone();
    load(
        label,
        "GET /oauth2/userinfo",
        secs,
        concurrency,
        move |_| {
            let (c, access) = (c.clone(), access.clone());
            async move {
                let r = c
                    .http
                    .get(format!("{}/oauth2/userinfo", c.base))
                    .bearer_auth(&access)
                    .send()
                    .await
                    .expect("userinfo");
                assert_eq!(r.status(), 200);
                r.bytes().await.expect("body");
            }
        },
    )
    .await;

    // 5. JWKS.
    let c = ctx.clone();
    load(label, "GET /oauth2/jwks", secs, concurrency, move |_| {
        let c = c.clone();
        async move {
            let r = c
                .http
                .get(format!("{}/oauth2/jwks", c.base))
                .send()
                .await
                .expect("jwks");
            assert_eq!(r.status(), 200);
            r.bytes().await.expect("body");
        }
    })
    .await;
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
