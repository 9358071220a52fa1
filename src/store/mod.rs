//! Persistence: one code path for SQLite and PostgreSQL, and no business rules.
//!
//! Approach: SQL is written once, in the common subset of both dialects (`$N` placeholders,
//! `ON CONFLICT`, `RETURNING`, `lower()`), and bound once. The [`with_conn!`] macro runs the
//! same statement-building code against whichever concrete connection the [`Db`] holds, so
//! each query is monomorphised for both backends from one source text. The two column types
//! the dialects store differently (`inet`, `text[]`) are the newtypes in [`types`], which
//! encode themselves per backend. Schema DDL is the one place that is per backend
//! (`migrations/sqlite`, `migrations/postgres`).
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub mod api_keys;
pub mod audit;
pub mod federation;
pub mod impersonation;
pub mod login_attempts;
pub mod memberships;
pub mod metrics;
pub mod mfa;
pub mod oidc;
pub mod org_settings;
pub mod orgs;
pub mod rate_limits;
pub mod roles;
pub mod scim;
pub mod sessions;
pub mod signing_keys;
pub mod tokens;
pub mod types;
pub mod users;
pub mod waitlist;

pub use sqlx::types::Json;
pub use types::{Inet, TextList};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Runs `$body` with `$c` bound to the concrete connection (`&mut SqliteConnection` or
/// `&mut PgConnection`) behind an [`Access`]. The body is written once and compiled for
/// each backend.
#[macro_export]
macro_rules! with_conn {
    ($access:expr, |$c:ident| $body:expr) => {
        match $crate::store::Access::exec($access) {
            $crate::store::Exec::Sqlite($c) => $body,
            $crate::store::Exec::Postgres($c) => $body,
        }
    };
}
pub use with_conn;

/// Connection settings that are not in the URL.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
    /// SQLite's per-connection page cache, at most (`PRAGMA cache_size`).
    pub sqlite_cache_mib: u32,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_cache_mib: 32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool of connections to one database. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Db {
    /// With this process's gate for SQLite's one writer (see [`Db::begin`]).
    Sqlite(SqlitePool, Arc<tokio::sync::Mutex<()>>),
    Postgres(PgPool),
}

/// A transaction; dropped without [`Tx::commit`] it rolls back. On SQLite it holds the
/// writer gate until then (declared after the transaction, so it opens after the rollback
/// is queued).
pub enum Tx {
    Sqlite(
        sqlx::Transaction<'static, Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// A pooled connection outside any transaction (single-statement reads and writes).
pub enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    /// Holding this process's SQLite writer gate (see [`Db::writer`]).
    SqliteWriter(PoolConnection<Sqlite>, tokio::sync::OwnedMutexGuard<()>),
    Postgres(PoolConnection<Postgres>),
}

/// The concrete connection a statement runs on.
pub enum Exec<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// Anything a store function can run statements on: a [`Tx`] or a [`Conn`].
pub trait Access: Send {
    fn exec(&mut self) -> Exec<'_>;
}

impl Access for Tx {
    fn exec(&mut self) -> Exec<'_> {
        match self {
            Tx::Sqlite(t, _) => Exec::Sqlite(t),
            Tx::Postgres(t) => Exec::Postgres(t),
        }
    }
}

impl Access for Conn {
    fn exec(&mut self) -> Exec<'_> {
        match self {
            Conn::Sqlite(c) | Conn::SqliteWriter(c, _) => Exec::Sqlite(c),
            Conn::Postgres(c) => Exec::Postgres(c),
        }
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(t, _gate) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }
}

/// A failure of the store. Unique and foreign-key violations are told apart so the layers
/// above can answer 409 / 404 instead of 500; nothing here carries a bound value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index or primary key would be violated (`constraint` names it).
    #[error("unique constraint `{constraint}` violated")]
    Conflict { constraint: String },
    /// A referenced row does not exist.
    #[error("foreign key violated")]
    ForeignKey,
    /// A CHECK constraint rejected the row.
    #[error("check constraint violated")]
    Check,
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The field (or relation) each unique constraint protects, under both dialects' names:
/// PostgreSQL reports the index name, SQLite the index name for expression indexes and
/// `table.column` otherwise.
const CONFLICT_FIELDS: &[(&str, &str)] = &[
    ("users_email_key", "email"),
    ("users_username_key", "username"),
    ("users.username_key", "username"),
    ("roles.org_id, roles.name_key", "role_name"),
    (
        "scim_users.org_id, scim_users.user_name_key",
        "scim_user_name",
    ),
    ("users_pkey", "user_id"),
    ("users.user_id", "user_id"),
    ("organizations_url_safe_org_name_key", "url_safe_org_name"),
    ("organizations.url_safe_org_name", "url_safe_org_name"),
    ("organizations_pkey", "org_id"),
    ("organizations.org_id", "org_id"),
    ("user_organization_info_pkey", "membership"),
    (
        "user_organization_info.user_id, user_organization_info.org_id",
        "membership",
    ),
    ("sessions_refresh_token_key", "refresh_token"),
    ("sessions.refresh_token", "refresh_token"),
    ("signing_keys_pkey", "kid"),
    ("signing_keys.kid", "kid"),
    ("mfa_devices_enabled_totp_key", "mfa_device"),
    ("mfa_devices.user_id", "mfa_device"),
    ("mfa_recovery_codes_code_key", "recovery_code"),
    (
        "mfa_recovery_codes.user_id, mfa_recovery_codes.code_hash",
        "recovery_code",
    ),
    ("roles_org_name_key", "role_name"),
    ("permissions_org_name_key", "permission_name"),
    ("org_domains_domain_key", "domain"),
    ("org_domains_org_domain_key", "domain"),
    ("waitlist_signups_email_key", "email"),
    ("waitlist_invitations_token_hash_key", "token"),
    ("waitlist_invitations.token_hash", "token"),
    ("scim_users_user_name_key", "scim_user_name"),
    ("scim_groups_org_display_name_key", "scim_group_name"),
    ("scim_group_roles_pkey", "group_role"),
    (
        "scim_group_roles.client_id, scim_group_roles.group_display_name",
        "group_role",
    ),
    ("scim_mappings_client_attr_key", "scim_attribute"),
    ("rate_limit_policies_name_key", "name"),
    ("rate_limit_policies.name", "name"),
    ("rate_limit_assignments_key", "assignment"),
    ("api_key_rate_limits_pkey", "assignment"),
    (
        "api_key_rate_limits.api_key_id, api_key_rate_limits.policy_id",
        "assignment",
    ),
    ("oidc_clients_pkey", "client_id"),
    ("oidc_clients.client_id", "client_id"),
    ("oidc_grants_code_hash_key", "code"),
    ("oidc_grants.code_hash", "code"),
];

impl StoreError {
    /// For a conflict: the field it is about (falls back to the constraint name).
    pub fn conflict_field(&self) -> Option<&str> {
        match self {
            StoreError::Conflict { constraint } => Some(
                CONFLICT_FIELDS
                    .iter()
                    .find(|(c, _)| c == constraint)
                    .map(|(_, f)| *f)
                    .unwrap_or(constraint),
            ),
            _ => None,
        }
    }

    /// True when the database could not be reached (pool closed, timeout, I/O).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Database(
                sqlx::Error::PoolClosed
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
            )
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        if let sqlx::Error::Database(db) = &e {
            match db.kind() {
                ErrorKind::UniqueViolation => {
                    let constraint = match db.constraint() {
                        Some(c) => c.to_string(),
                        None => sqlite_constraint(db.message()),
                    };
                    return StoreError::Conflict { constraint };
                }
                ErrorKind::ForeignKeyViolation => return StoreError::ForeignKey,
                ErrorKind::CheckViolation => return StoreError::Check,
                _ => {}
            }
        }
        StoreError::Database(e)
    }
}

/// "UNIQUE constraint failed: index 'users_email_key'" → "users_email_key";
/// "UNIQUE constraint failed: organizations.url_safe_org_name" → the part after the colon.
fn sqlite_constraint(message: &str) -> String {
    let rest = message
        .split_once(": ")
        .map(|(_, r)| r)
        .unwrap_or(message)
        .trim();
    rest.strip_prefix("index '")
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or(rest)
        .to_string()
}

/// Why the store could not be opened at start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the directory for the SQLite file ({0})")]
    CreateDir(std::io::Error),
    #[error("cannot connect ({0})")]
    Connect(sqlx::Error),
}

/// Rows a SQLite connection's worker thread may run ahead of the reading task: a whole
/// page at `scim.max_results` (1000 at most by default).
const ROW_BUFFER: usize = 1024;

impl Db {
    /// Opens a pool. SQLite files (and their directory) are created on first start, with
    /// WAL, foreign keys on and a busy timeout.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Db, OpenError> {
        if url.starts_with("sqlite:") {
            let co = SqliteConnectOptions::from_str(url)
                .map_err(OpenError::Connect)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(opts.sqlite_busy_timeout)
                // SQLite's default (2 MiB) makes a page of 100 users re-read most of its
                // ~800 random leaf pages from the OS on every request (BENCHMARKS.md).
                .pragma(
                    "cache_size",
                    format!("-{}", u64::from(opts.sqlite_cache_mib) * 1024),
                )
                // sqlx's worker thread stops after 50 unread rows (its default) until the
                // task catches up: a page of 100 users was two hand-offs or more.
                .row_buffer_size(ROW_BUFFER);
            if let Some(dir) = co.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(OpenError::CreateDir)?;
            }
            // An embedded file cannot drop a connection: no ping on every acquire (a
            // round trip to the connection's worker thread).
            let pool = SqlitePoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.connect_timeout)
                .test_before_acquire(false)
                .connect_with(co)
                .await
                .map_err(OpenError::Connect)?;
            Ok(Db::Sqlite(pool, Arc::default()))
        } else {
            let co = PgConnectOptions::from_str(url).map_err(OpenError::Connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.connect_timeout)
                .connect_with(co)
                .await
                .map_err(OpenError::Connect)?;
            Ok(Db::Postgres(pool))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(..) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies pending migrations; returns the versions that were pending when the call
    /// started. Safe to run again, and from several nodes at once (PostgreSQL takes an
    /// advisory lock).
    pub async fn migrate(&self) -> Result<Vec<i64>, StoreError> {
        let before = self.applied_migrations().await?;
        match self {
            Db::Sqlite(p, _) => {
                // sqlx takes no lock on SQLite, so two processes starting together can both
                // try a migration; the loser's transaction rolls back. Re-running then finds
                // it applied (or fails again for a real reason).
                let mut attempt = 0;
                loop {
                    match SQLITE_MIGRATIONS.run(p).await {
                        Ok(()) => break,
                        Err(_) if attempt < 3 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Db::Postgres(p) => POSTGRES_MIGRATIONS.run(p).await?,
        }
        let after = self.applied_migrations().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// Versions recorded as applied (empty before the first migration).
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let mut c = self.conn().await?;
        let exists: bool = with_conn!(&mut c, |c| {
            let sql = match c_backend(&*c) {
                Backend::Sqlite => {
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')"
                }
                Backend::Postgres => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            };
            sqlx::query_scalar(sql).fetch_one(&mut *c).await?
        });
        if !exists {
            return Ok(Vec::new());
        }
        Ok(with_conn!(&mut c, |c| sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version"
        )
        .fetch_all(&mut *c)
        .await?))
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        let one: i32 = with_conn!(&mut c, |c| sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *c)
            .await?);
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Begins a transaction. On SQLite it is `BEGIN IMMEDIATE`: the write lock is taken
    /// (waiting up to the busy timeout) before the first read, because a deferred
    /// transaction that reads and then writes fails at once with SQLITE_BUSY when another
    /// writer got in between, instead of waiting. This process's transactions first queue
    /// on an async gate, in order, so they do not meet in SQLite's busy handler, which
    /// sleeps 1, 2, 5, 10… ms between tries and leaves the lock idle meanwhile.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Db::Sqlite(p, gate) => {
                let turn = Arc::clone(gate).lock_owned().await;
                Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
            Db::Postgres(p) => Tx::Postgres(p.begin().await?),
        })
    }

    /// A connection for one writing statement outside a transaction; on SQLite it waits
    /// its turn at the writer gate first, like [`Db::begin`].
    pub async fn writer(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Db::Sqlite(p, gate) => {
                let turn = Arc::clone(gate).lock_owned().await;
                Conn::SqliteWriter(p.acquire().await?, turn)
            }
            Db::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    pub async fn conn(&self) -> Result<Conn, StoreError> {
        Ok(match self {
            Db::Sqlite(p, _) => Conn::Sqlite(p.acquire().await?),
            Db::Postgres(p) => Conn::Postgres(p.acquire().await?),
        })
    }

    /// Closes the pool: later calls fail as "unavailable".
    pub async fn close(&self) {
        match self {
            Db::Sqlite(p, _) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// How many connections a pool holds, how many of them are idle, and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

impl Db {
    /// The pool's current occupancy (for the metrics gauges); no database round trip.
    pub fn pool_stats(&self) -> PoolStats {
        let (size, idle, max) = match self {
            Db::Sqlite(p, _) => (p.size(), p.num_idle(), p.options().get_max_connections()),
            Db::Postgres(p) => (p.size(), p.num_idle(), p.options().get_max_connections()),
        };
        PoolStats {
            size,
            idle: u32::try_from(idle).unwrap_or(u32::MAX),
            max,
        }
    }
}

/// Which dialect a concrete connection speaks: the named exception for the rare statement
/// that cannot be written in the common subset (catalog queries).
pub trait Dialect {
    const BACKEND: Backend;
}
impl Dialect for SqliteConnection {
    const BACKEND: Backend = Backend::Sqlite;
}
impl Dialect for PgConnection {
    const BACKEND: Backend = Backend::Postgres;
}
pub(crate) fn c_backend<C: Dialect>(_: &C) -> Backend {
    C::BACKEND
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_constraint_names() {
        assert_eq!(
            sqlite_constraint("UNIQUE constraint failed: index 'users_email_key'"),
            "users_email_key"
        );
        assert_eq!(
            sqlite_constraint("UNIQUE constraint failed: organizations.url_safe_org_name"),
            "organizations.url_safe_org_name"
        );
    }

    #[test]
    fn conflict_fields_cover_both_dialects() {
        for (constraint, field) in [
            ("users_email_key", "email"),
            ("users_username_key", "username"),
            ("users.username_key", "username"),
            ("roles.org_id, roles.name_key", "role_name"),
            (
                "scim_users.org_id, scim_users.user_name_key",
                "scim_user_name",
            ),
            ("organizations_url_safe_org_name_key", "url_safe_org_name"),
            ("organizations.url_safe_org_name", "url_safe_org_name"),
            ("user_organization_info_pkey", "membership"),
            (
                "user_organization_info.user_id, user_organization_info.org_id",
                "membership",
            ),
            ("org_domains_org_domain_key", "domain"),
            ("not_a_known_key", "not_a_known_key"),
        ] {
            let e = StoreError::Conflict {
                constraint: constraint.into(),
            };
            assert_eq!(e.conflict_field(), Some(field), "{constraint}");
        }
        assert_eq!(StoreError::Check.conflict_field(), None);
    }
}
