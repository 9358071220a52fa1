//! `spawn_app()`: the real server on port 0 over a fresh SQLite file or a fresh PostgreSQL
//! database. PostgreSQL tests run when `LINTEL_TEST_POSTGRES_URL` is set (an admin URL on a
//! server where databases may be created) and otherwise say they were skipped.
use lintel::app::App;
use lintel::config::Config;
use lintel::http::{AppState, Router};
use lintel::store::Db;
use sqlx::Connection;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const PG_ENV: &str = "LINTEL_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one backend (not yet migrated).
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    /// Holds the SQLite file and the keys directory.
    pub dir: TempDir,
    pg: Option<(String, String)>,
}

static SKIP_NOTICE: AtomicBool = AtomicBool::new(false);

/// Writes straight to the process's stderr, past the test harness's output capture, so a
/// skipped PostgreSQL run is visible in `cargo test` output.
fn notice(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

impl TestDb {
    /// `None` (after saying so) when PostgreSQL tests are not configured.
    pub async fn new(backend: Backend, test: &str) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("lintel.db").display());
                Some(TestDb {
                    backend,
                    url,
                    dir,
                    pg: None,
                })
            }
            Backend::Postgres => {
                let Ok(admin) = std::env::var(PG_ENV) else {
                    if !SKIP_NOTICE.swap(true, Ordering::SeqCst) {
                        notice(&format!(
                            "NOTE: PostgreSQL tests SKIPPED: {PG_ENV} is not set \
                             (e.g. {PG_ENV}=postgres://postgres@127.0.0.1:5432/postgres)"
                        ));
                    }
                    notice(&format!("SKIPPED (no PostgreSQL): {test}"));
                    return None;
                };
                let name = format!("lintel_t_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{PG_ENV} is set but PostgreSQL is unreachable: {e}")
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin).expect("admin URL");
                url.set_path(&format!("/{name}"));
                Some(TestDb {
                    backend,
                    url: url.to_string(),
                    dir,
                    pg: Some((admin, name)),
                })
            }
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    /// Drops a PostgreSQL test database (forcing its connections closed).
    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg {
            let mut conn = sqlx::PgConnection::connect(admin)
                .await
                .expect("admin connect");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop test database");
        }
    }
}

/// A configuration for tests: port 0, the given database, fast password hashing.
pub fn test_config(db: &TestDb, extra: &[(&str, &str)]) -> Config {
    let keys = db.keys_dir();
    let mut env: Vec<(String, String)> = vec![
        ("LINTEL_BIND".into(), "127.0.0.1:0".into()),
        ("LINTEL_DATABASE_URL".into(), db.url.clone()),
        ("LINTEL_KEYS_DIR".into(), keys.display().to_string()),
        (
            "LINTEL_DATA_DIR".into(),
            db.dir.path().join("data").display().to_string(),
        ),
        ("LINTEL_PASSWORD_ARGON2_MEMORY_KIB".into(), "64".into()),
        ("LINTEL_PASSWORD_ARGON2_ITERATIONS".into(), "1".into()),
        ("LINTEL_DATABASE_MAX_CONNECTIONS".into(), "4".into()),
        ("LINTEL_HTTP_SHUTDOWN_TIMEOUT_SECS".into(), "10".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::from_sources(None, env).expect("test config")
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    pub state: AppState,
    pub test_db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn backend(&self) -> Backend {
        self.test_db.backend
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(h) => h.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// Stops the server and drops a PostgreSQL database.
    pub async fn finish(mut self) {
        self.stop().await.expect("clean stop");
        self.db.close().await;
        self.test_db.drop_database().await;
    }
}

pub struct Spawn<'a> {
    pub env: &'a [(&'a str, &'a str)],
    pub extra: Option<Router<AppState>>,
}

/// Starts the real server over a fresh database of `backend`.
pub async fn spawn_app(backend: Backend, test: &str) -> Option<TestApp> {
    spawn_app_with(
        backend,
        test,
        Spawn {
            env: &[],
            extra: None,
        },
    )
    .await
}

pub async fn spawn_app_with(backend: Backend, test: &str, opts: Spawn<'_>) -> Option<TestApp> {
    let test_db = TestDb::new(backend, test).await?;
    let config = test_config(&test_db, opts.env);
    let app = App::build(config).await.expect("app builds");
    let addr = app.local_addr().expect("bound");
    let state = app.state.clone();
    let router = match opts.extra {
        Some(extra) => app.router_with(extra),
        None => app.router(),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_with(router, async move {
        let _ = rx.await;
    }));
    Some(TestApp {
        addr,
        client: reqwest::Client::new(),
        db: state.identity.db.clone(),
        state,
        test_db,
        shutdown: Some(tx),
        server: Some(server),
    })
}

/// Runs the `lintel` binary in `dir` with only the given environment; returns
/// (exit code, stdout, stderr).
pub fn lintel(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (i32, String, String) {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lintel"));
    cmd.current_dir(dir)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn lintel");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("lintel runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Generates `mod $name { sqlite, postgres }` tests that run `$name(app)` on each backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::helpers::{Backend, spawn_app};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = spawn_app(Backend::Sqlite, module_path!()).await.expect("sqlite app");
                super::$name(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(app) = spawn_app(Backend::Postgres, module_path!()).await else { return };
                super::$name(app).await;
            }
        }
    )*};
}

/// Like [`on_both_backends`], for tests that need a fresh database but no server.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::helpers::{Backend, TestDb};
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = TestDb::new(Backend::Sqlite, module_path!()).await.expect("sqlite db");
                super::$name(db).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = TestDb::new(Backend::Postgres, module_path!()).await else { return };
                super::$name(db).await;
            }
        }
    )*};
}

/// Identity services over a fresh, migrated database, with a clock the test controls.
pub async fn identity_with_clock(
    db: &TestDb,
    clock: lintel::clock::FixedClock,
) -> lintel::identity::Identity {
    identity_with_config(db, clock, &[]).await
}

/// [`identity_with_clock`] with extra `LINTEL_*` settings.
pub async fn identity_with_config(
    db: &TestDb,
    clock: lintel::clock::FixedClock,
    env: &[(&str, &str)],
) -> lintel::identity::Identity {
    let config = test_config(db, env);
    let store = lintel::app::open_store(&config).await.expect("store opens");
    lintel::app::identity(&config, store, std::sync::Arc::new(clock)).expect("identity")
}

/// Every migration version in `migrations/sqlite`, in order (both folders hold the same).
pub fn all_migrations() -> Vec<i64> {
    let mut v: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .expect("migrations folder")
            .map(|e| {
                e.expect("entry").file_name().to_string_lossy()[..4]
                    .parse()
                    .expect("NNNN_name.sql")
            })
            .collect();
    v.sort();
    v
}

/// A free loopback port (bound and released; a server binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A super-admin API key for `app`.
pub async fn admin_key(app: &TestApp) -> String {
    let (_, k) = lintel::identity::api_keys::create(
        &app.state.identity,
        lintel::identity::api_keys::NewApiKey {
            is_admin: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    k.expose().clone()
}

/// Calls `/api/v1{path}` with `key`; the status and the JSON body (null when not JSON).
pub async fn api_call(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = app
        .client
        .request(method, app.url(&format!("/api/v1{path}")))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Runs the `lintel` CLI against `db` (keys in its directory).
pub fn cli(db: &TestDb, args: &[&str]) -> (i32, String, String) {
    let env = [
        ("LINTEL_DATABASE_URL", db.url.as_str()),
        ("LINTEL_KEYS_DIR", "keys"),
    ];
    lintel(db.dir.path(), args, &env, None)
}
