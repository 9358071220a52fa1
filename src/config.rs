//! Typed configuration: built-in defaults, then `config.toml`, then `LINTEL_*` environment
//! variables. One table (`KEYS`) drives all three and the documentation check in the tests.
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// One configuration key: its dotted path in `config.toml` and its default.
/// The environment override is `LINTEL_` + the path with `.` as `_`, upper-cased.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub key: &'static str,
    pub default: &'static str,
}

impl KeySpec {
    pub fn env_var(&self) -> String {
        format!("LINTEL_{}", self.key.replace('.', "_").to_ascii_uppercase())
    }
}

/// Every key Lintel reads. `config.toml` documents each of these (checked by a test).
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        key: "bind",
        default: "127.0.0.1:8080",
    },
    KeySpec {
        key: "issuer",
        default: "http://127.0.0.1:8080",
    },
    KeySpec {
        key: "database_url",
        default: "sqlite://data/lintel.db",
    },
    KeySpec {
        key: "keys_dir",
        default: "keys",
    },
    KeySpec {
        key: "data_dir",
        default: "data",
    },
    KeySpec {
        key: "log.level",
        default: "info",
    },
    KeySpec {
        key: "log.format",
        default: "text",
    },
    KeySpec {
        key: "http.body_limit_bytes",
        default: "1048576",
    },
    KeySpec {
        key: "http.request_timeout_secs",
        default: "30",
    },
    KeySpec {
        key: "http.shutdown_timeout_secs",
        default: "30",
    },
    KeySpec {
        key: "database.max_connections",
        default: "10",
    },
    KeySpec {
        key: "database.connect_timeout_secs",
        default: "5",
    },
    KeySpec {
        key: "database.sqlite_busy_timeout_ms",
        default: "5000",
    },
    KeySpec {
        key: "database.sqlite_cache_mib",
        default: "32",
    },
    KeySpec {
        key: "password.min_length",
        default: "10",
    },
    KeySpec {
        key: "password.argon2_memory_kib",
        default: "19456",
    },
    KeySpec {
        key: "password.argon2_iterations",
        default: "2",
    },
    KeySpec {
        key: "password.argon2_parallelism",
        default: "1",
    },
    KeySpec {
        key: "login.max_failures",
        default: "5",
    },
    KeySpec {
        key: "login.failure_window_secs",
        default: "900",
    },
    KeySpec {
        key: "login.lockout_secs",
        default: "900",
    },
    KeySpec {
        key: "tokens.email_verification_ttl_secs",
        default: "86400",
    },
    KeySpec {
        key: "tokens.password_reset_ttl_secs",
        default: "3600",
    },
    KeySpec {
        key: "mail.smtp_url",
        default: "",
    },
    KeySpec {
        key: "mail.from",
        default: "Lintel <no-reply@localhost>",
    },
    KeySpec {
        key: "sessions.max_lifetime_secs",
        default: "36000",
    },
    KeySpec {
        key: "sessions.idle_timeout_secs",
        default: "1800",
    },
    KeySpec {
        key: "mfa.totp_issuer",
        default: "Lintel",
    },
    KeySpec {
        key: "rate_limits.login",
        default: "20/60",
    },
    KeySpec {
        key: "rate_limits.token",
        default: "300/60",
    },
    KeySpec {
        key: "rate_limits.scim",
        default: "600/60",
    },
    KeySpec {
        key: "rate_limits.management",
        default: "1200/60",
    },
    KeySpec {
        key: "rate_limits.waitlist",
        default: "5/3600",
    },
    KeySpec {
        key: "metrics.bind",
        default: "",
    },
    KeySpec {
        key: "waitlist.invitation_ttl_secs",
        default: "604800",
    },
    KeySpec {
        key: "impersonation.max_duration_secs",
        default: "3600",
    },
    KeySpec {
        key: "scim.token_ttl_secs",
        default: "0",
    },
    KeySpec {
        key: "scim.token_overlap_secs",
        default: "86400",
    },
    KeySpec {
        key: "scim.max_results",
        default: "1000",
    },
    KeySpec {
        key: "scim.page_anchor_step",
        default: "500",
    },
    KeySpec {
        key: "scim.render_cache_mib",
        default: "128",
    },
    KeySpec {
        key: "scim.bulk_max_operations",
        default: "1000",
    },
    KeySpec {
        key: "scim.bulk_max_payload_bytes",
        default: "1048576",
    },
    KeySpec {
        key: "scim.user_name_maps_to",
        default: "email",
    },
    KeySpec {
        key: "scim.delete_orphan_users",
        default: "true",
    },
    KeySpec {
        key: "oidc.access_token_ttl_secs",
        default: "600",
    },
    KeySpec {
        key: "oidc.id_token_ttl_secs",
        default: "3600",
    },
    KeySpec {
        key: "oidc.refresh_token_ttl_secs",
        default: "2592000",
    },
    KeySpec {
        key: "oidc.authorization_code_ttl_secs",
        default: "60",
    },
    KeySpec {
        key: "oidc.refresh_grace_secs",
        default: "10",
    },
    KeySpec {
        key: "oidc.key_activation_delay_secs",
        default: "3600",
    },
    KeySpec {
        key: "oidc.backchannel_logout_max_attempts",
        default: "8",
    },
    KeySpec {
        key: "signup.mode",
        default: "invitation",
    },
];

/// Environment variables with the `LINTEL_` prefix that are not configuration keys.
const ENV_NOT_KEYS: &[&str] = &["LINTEL_CONFIG"];
const ENV_IGNORED_PREFIXES: &[&str] = &["LINTEL_TEST_"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// OIDC issuer and the base of every absolute URL Lintel emits.
    pub issuer: Url,
    pub database_url: Secret<String>,
    pub keys_dir: PathBuf,
    pub data_dir: PathBuf,
    pub log_level: String,
    pub log_format: LogFormat,
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub password: PasswordConfig,
    pub login: LoginConfig,
    pub tokens: TokenConfig,
    pub mail: MailConfig,
    pub sessions: SessionConfig,
    pub mfa: MfaConfig,
    pub rate_limits: RateLimitConfig,
    pub metrics: MetricsConfig,
    pub waitlist: WaitlistConfig,
    pub impersonation: ImpersonationConfig,
    pub scim: ScimConfig,
    pub oidc: OidcConfig,
    pub signup: SignupConfig,
}

/// Who may create an account on the hosted `/signup` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupMode {
    /// Anyone (the address is then verified by email).
    Open,
    /// Only holders of a waitlist invitation link.
    Invitation,
    /// Nobody (accounts come from admins, SCIM or federation).
    Closed,
}

#[derive(Debug, Clone)]
pub struct SignupConfig {
    pub mode: SignupMode,
}

/// The SCIM server (`/scim/v2`).
#[derive(Debug, Clone)]
pub struct ScimConfig {
    /// Lifetime of a new client token (`None`: no expiry).
    pub token_ttl: Option<Duration>,
    /// After a rotation, older tokens stay valid this long.
    pub token_overlap: Duration,
    /// Largest page (`count`) served; advertised in /ServiceProviderConfig.
    pub max_results: u32,
    /// A deep `startIndex` on an unfiltered list starts from the id kept at every this
    /// many positions (see `scim::anchors`); it then skips fewer rows than this.
    pub page_anchor_step: u64,
    /// Memory for this node's rendered Users (see `scim::rendered`); 0 turns it off.
    pub render_cache_mib: u32,
    pub bulk_max_operations: u32,
    pub bulk_max_payload_bytes: u64,
    /// Where `userName` lands by default: the `email` or the `username` column.
    pub user_name_maps_to: String,
    /// DELETE /Users/{id} deletes the user row too when no other org or login remains.
    pub delete_orphan_users: bool,
}

/// The OpenID Connect provider's lifetimes.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// JWT access tokens (RFC 9068) live this long.
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    /// A refresh token's grant ends this long after the login it came from.
    pub refresh_token_ttl: Duration,
    /// Authorization codes must be exchanged within this.
    pub authorization_code_ttl: Duration,
    /// A rotated refresh token presented again within this is answered with the same
    /// successor (concurrent refreshes); later, its whole family is revoked.
    pub refresh_grace: Duration,
    /// `lintel keys rotate`: the new key signs only after this (published meanwhile).
    pub key_activation_delay: Duration,
    /// A back-channel logout token is POSTed at most this many times (retries back off
    /// from 10 s to hourly); then the notice is abandoned.
    pub backchannel_logout_max_attempts: u32,
}

/// A default rate-limit policy: at most `limit` requests per `window_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub limit: u32,
    pub window_secs: u32,
}

/// Default policies (`"COUNT/SECONDS"`) for the endpoint families; per-user, per-org and
/// per-key policies in the database refine them.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Password logins, per client IP.
    pub login: RateSpec,
    /// The OIDC token endpoint, per client.
    pub token: RateSpec,
    /// SCIM, per SCIM client.
    pub scim: RateSpec,
    /// The management API, per API key.
    pub management: RateSpec,
    /// Public waitlist sign-ups, per client IP.
    pub waitlist: RateSpec,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where Prometheus metrics are served (`/metrics`), apart from the main port;
    /// `None` (empty): not served.
    pub bind: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct WaitlistConfig {
    pub invitation_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct ImpersonationConfig {
    /// An impersonation ends by itself after this long.
    pub max_duration: Duration,
}

/// Brute-force protection for password logins.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    /// Failures within `failure_window` that lock the account.
    pub max_failures: u32,
    pub failure_window: Duration,
    /// How long the temporary lock lasts.
    pub lockout: Duration,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub email_verification_ttl: Duration,
    pub password_reset_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `smtp://` or `smtps://` URL (may carry credentials); `None`: the dev outbox under
    /// `data_dir/outbox/`.
    pub smtp_url: Option<Secret<String>>,
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session ends this long after sign-in, however active.
    pub max_lifetime: Duration,
    /// A session ends after this long unused.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct MfaConfig {
    /// The issuer label in `otpauth://` URIs (what authenticator apps show).
    pub totp_issuer: String,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub sqlite_busy_timeout: Duration,
    /// SQLite page cache of each pooled connection, at most (filled only as pages are read).
    pub sqlite_cache_mib: u32,
}

#[derive(Debug, Clone)]
pub struct PasswordConfig {
    pub min_length: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

/// A configuration problem: one line naming the key (or file) and what is wrong.
/// Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// Where a configuration file comes from.
#[derive(Debug, Clone)]
pub enum ConfigFile {
    /// Named explicitly (`--config`, `LINTEL_CONFIG`): must be readable.
    Explicit(PathBuf),
    /// `config.toml` in the working directory if present.
    Default,
    /// Defaults and environment only.
    None,
}

#[derive(Debug, Clone)]
enum Origin {
    Default,
    File(PathBuf),
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "{}", p.display()),
            Origin::Env(v) => f.write_str(v),
        }
    }
}

struct Raw {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Raw {
    fn get<T>(
        &self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, origin) = self
            .values
            .get(key)
            .ok_or_else(|| ConfigError(format!("`{key}`: no value")))?;
        parse(value).map_err(|why| ConfigError(format!("`{key}` (from {origin}): {why}")))
    }
}

fn number<T>(min: T, max: T) -> impl FnOnce(&str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    move |s| {
        let n: T = s
            .trim()
            .parse()
            .map_err(|_| "expected a whole number".to_string())?;
        if n < min || n > max {
            return Err(format!("must be between {min} and {max}"));
        }
        Ok(n)
    }
}

fn secs(s: &str) -> Result<Duration, String> {
    number(0u64, 86_400)(s).map(Duration::from_secs)
}

/// Checks a database URL without ever echoing it (it may hold a password).
pub fn check_database_url(s: &str) -> Result<(), String> {
    if let Some(path) = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("a sqlite URL needs a file path, e.g. sqlite://data/lintel.db".into());
        }
        return Ok(());
    }
    let url = Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
    match url.scheme() {
        "postgres" | "postgresql" => {
            if url.host_str().unwrap_or_default().is_empty() {
                return Err("a postgres URL needs a host".into());
            }
            Ok(())
        }
        other => Err(format!(
            "unsupported scheme `{other}`: use sqlite://PATH or postgres://USER@HOST/DB"
        )),
    }
}

/// The database URL with any password removed, for logs.
pub fn redact_database_url(s: &str) -> String {
    match Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "[unparseable]".into(),
    }
}

fn issuer(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
    // OIDC Discovery §3: an https URL with no query or fragment (http allowed for development).
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    if url.host_str().is_none() {
        return Err("must have a host".into());
    }
    Ok(url)
}

impl Config {
    /// Defaults only (what `cargo run` uses with no file and no environment).
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_sources(None, std::iter::empty())
    }

    /// Loads from the given file and the process environment.
    pub fn load(file: &ConfigFile) -> Result<Self, ConfigError> {
        let text = match file {
            ConfigFile::Explicit(path) => Some((path.clone(), read(path)?)),
            ConfigFile::Default => {
                let path = PathBuf::from("config.toml");
                if path.exists() {
                    Some((path.clone(), read(&path)?))
                } else {
                    None
                }
            }
            ConfigFile::None => None,
        };
        Self::from_sources(
            text.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
            std::env::vars(),
        )
    }

    /// Builds a config from an optional TOML document and a set of environment variables.
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut raw = Raw {
            values: KEYS
                .iter()
                .map(|k| (k.key, (k.default.to_string(), Origin::Default)))
                .collect(),
        };
        if let Some((path, text)) = file {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let msg = e.message().replace('\n', " ");
                match e.span() {
                    Some(span) => {
                        let line = text[..span.start.min(text.len())].lines().count().max(1);
                        ConfigError(format!("{}: line {line}: {msg}", path.display()))
                    }
                    None => ConfigError(format!("{}: {msg}", path.display())),
                }
            })?;
            flatten(&table, "", path, &mut raw)?;
        }
        for (name, value) in env {
            if !name.starts_with("LINTEL_")
                || ENV_NOT_KEYS.contains(&name.as_str())
                || ENV_IGNORED_PREFIXES.iter().any(|p| name.starts_with(p))
            {
                continue;
            }
            let spec = KEYS
                .iter()
                .find(|k| k.env_var() == name)
                .ok_or_else(|| ConfigError(format!("unknown environment variable {name}")))?;
            raw.values.insert(spec.key, (value, Origin::Env(name)));
        }
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let database_url = raw.get("database_url", |s| {
            check_database_url(s).map(|()| Secret::new(s.to_string()))
        })?;
        Ok(Config {
            bind: raw.get("bind", |s| {
                s.parse::<SocketAddr>().map_err(|_| {
                    "expected HOST:PORT with an IP address, e.g. 127.0.0.1:8080".into()
                })
            })?,
            issuer: raw.get("issuer", issuer)?,
            database_url,
            keys_dir: raw.get("keys_dir", non_empty_path)?,
            data_dir: raw.get("data_dir", non_empty_path)?,
            log_level: raw.get("log.level", |s| {
                tracing_subscriber::EnvFilter::try_new(s)
                    .map(|_| s.to_string())
                    .map_err(|e| format!("not a valid log filter ({e})"))
            })?,
            log_format: raw.get("log.format", |s| match s {
                "text" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected `text` or `json`".into()),
            })?,
            http: HttpConfig {
                body_limit_bytes: raw.get("http.body_limit_bytes", number(1024, 1 << 30))?,
                request_timeout: raw.get("http.request_timeout_secs", |s| {
                    secs(s).and_then(|d| {
                        if d.is_zero() {
                            Err("must be at least 1".into())
                        } else {
                            Ok(d)
                        }
                    })
                })?,
                shutdown_timeout: raw.get("http.shutdown_timeout_secs", secs)?,
            },
            database: DatabaseConfig {
                max_connections: raw.get("database.max_connections", number(1, 1000))?,
                connect_timeout: raw.get("database.connect_timeout_secs", |s| {
                    number(1u64, 600)(s).map(Duration::from_secs)
                })?,
                sqlite_busy_timeout: raw.get("database.sqlite_busy_timeout_ms", |s| {
                    number(0u64, 600_000)(s).map(Duration::from_millis)
                })?,
                sqlite_cache_mib: raw.get("database.sqlite_cache_mib", number(1u32, 65_536))?,
            },
            password: PasswordConfig {
                min_length: raw.get("password.min_length", number(8, 256))?,
                argon2_memory_kib: raw.get("password.argon2_memory_kib", number(8, 4 << 20))?,
                argon2_iterations: raw.get("password.argon2_iterations", number(1, 100))?,
                argon2_parallelism: raw.get("password.argon2_parallelism", number(1, 64))?,
            },
            login: LoginConfig {
                max_failures: raw.get("login.max_failures", number(1, 1000))?,
                failure_window: raw.get("login.failure_window_secs", positive_secs)?,
                lockout: raw.get("login.lockout_secs", positive_secs)?,
            },
            tokens: TokenConfig {
                email_verification_ttl: raw
                    .get("tokens.email_verification_ttl_secs", positive_secs)?,
                password_reset_ttl: raw.get("tokens.password_reset_ttl_secs", positive_secs)?,
            },
            mail: MailConfig {
                smtp_url: raw.get("mail.smtp_url", smtp_url)?,
                from: raw.get("mail.from", |s| {
                    if s.contains('@') && !s.contains(['\r', '\n']) {
                        Ok(s.to_string())
                    } else {
                        Err("expected an address such as `Lintel <no-reply@example.com>`".into())
                    }
                })?,
            },
            sessions: SessionConfig {
                max_lifetime: raw.get("sessions.max_lifetime_secs", positive_secs)?,
                idle_timeout: raw.get("sessions.idle_timeout_secs", positive_secs)?,
            },
            rate_limits: RateLimitConfig {
                login: raw.get("rate_limits.login", rate_spec)?,
                token: raw.get("rate_limits.token", rate_spec)?,
                scim: raw.get("rate_limits.scim", rate_spec)?,
                management: raw.get("rate_limits.management", rate_spec)?,
                waitlist: raw.get("rate_limits.waitlist", rate_spec)?,
            },
            metrics: MetricsConfig {
                bind: raw.get("metrics.bind", |s| {
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        s.parse::<SocketAddr>().map(Some).map_err(|_| {
                            "expected empty (off) or HOST:PORT, e.g. 127.0.0.1:9090".into()
                        })
                    }
                })?,
            },
            waitlist: WaitlistConfig {
                invitation_ttl: raw.get("waitlist.invitation_ttl_secs", positive_secs)?,
            },
            impersonation: ImpersonationConfig {
                max_duration: raw.get("impersonation.max_duration_secs", positive_secs)?,
            },
            scim: ScimConfig {
                token_ttl: raw.get("scim.token_ttl_secs", |s| {
                    number(0u64, 315_360_000)(s).map(|n| (n > 0).then(|| Duration::from_secs(n)))
                })?,
                token_overlap: raw.get("scim.token_overlap_secs", secs)?,
                max_results: raw.get("scim.max_results", number(1u32, 10_000))?,
                page_anchor_step: raw.get("scim.page_anchor_step", number(2u64, 1_000_000))?,
                render_cache_mib: raw.get("scim.render_cache_mib", number(0u32, 65_536))?,
                bulk_max_operations: raw.get("scim.bulk_max_operations", number(1u32, 100_000))?,
                bulk_max_payload_bytes: raw
                    .get("scim.bulk_max_payload_bytes", number(1024u64, 104_857_600))?,
                user_name_maps_to: raw.get("scim.user_name_maps_to", |s| match s {
                    "email" | "username" => Ok(s.to_string()),
                    _ => Err("expected `email` or `username`".into()),
                })?,
                delete_orphan_users: raw.get("scim.delete_orphan_users", |s| match s {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err("expected true or false".into()),
                })?,
            },
            signup: SignupConfig {
                mode: raw.get("signup.mode", |s| match s {
                    "open" => Ok(SignupMode::Open),
                    "invitation" => Ok(SignupMode::Invitation),
                    "closed" => Ok(SignupMode::Closed),
                    _ => Err("expected `open`, `invitation` or `closed`".into()),
                })?,
            },
            oidc: OidcConfig {
                access_token_ttl: raw.get("oidc.access_token_ttl_secs", positive_secs)?,
                id_token_ttl: raw.get("oidc.id_token_ttl_secs", positive_secs)?,
                refresh_token_ttl: raw.get("oidc.refresh_token_ttl_secs", positive_secs)?,
                authorization_code_ttl: raw
                    .get("oidc.authorization_code_ttl_secs", positive_secs)?,
                refresh_grace: raw.get("oidc.refresh_grace_secs", secs)?,
                key_activation_delay: raw.get("oidc.key_activation_delay_secs", secs)?,
                backchannel_logout_max_attempts: raw
                    .get("oidc.backchannel_logout_max_attempts", number(1u32, 100))?,
            },
            mfa: MfaConfig {
                totp_issuer: raw.get("mfa.totp_issuer", |s| {
                    if s.is_empty() || s.contains(':') {
                        Err("must be non-empty and contain no `:`".into())
                    } else {
                        Ok(s.to_string())
                    }
                })?,
            },
        })
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }
}

/// `"COUNT/SECONDS"`, e.g. `"20/60"`.
fn rate_spec(s: &str) -> Result<RateSpec, String> {
    let bad = || "expected COUNT/SECONDS, e.g. \"20/60\"".to_string();
    let (n, w) = s.split_once('/').ok_or_else(bad)?;
    let limit = n.trim().parse::<u32>().map_err(|_| bad())?;
    let window_secs = w.trim().parse::<u32>().map_err(|_| bad())?;
    if limit == 0 || window_secs == 0 || window_secs > 86_400 {
        return Err("COUNT must be at least 1 and SECONDS between 1 and 86400".into());
    }
    Ok(RateSpec { limit, window_secs })
}

/// At least one second, at most 10 years.
fn positive_secs(s: &str) -> Result<Duration, String> {
    number(1u64, 315_360_000)(s).map(Duration::from_secs)
}

/// Empty (use the dev outbox) or an smtp/smtps URL; never echoed (it may hold a password).
fn smtp_url(s: &str) -> Result<Option<Secret<String>>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    let url = Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "smtp" | "smtps") || url.host_str().is_none() {
        return Err("expected smtp://HOST[:PORT] or smtps://USER:PASSWORD@HOST[:PORT]".into());
    }
    Ok(Some(Secret::new(s.to_string())))
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: cannot read ({e})", path.display())))
}

fn flatten(
    table: &toml::Table,
    prefix: &str,
    path: &Path,
    raw: &mut Raw,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        if let toml::Value::Table(inner) = value
            && KEYS.iter().any(|k| k.key.starts_with(&format!("{key}.")))
        {
            flatten(inner, &format!("{key}."), path, raw)?;
            continue;
        }
        let spec = KEYS
            .iter()
            .find(|k| k.key == key)
            .ok_or_else(|| ConfigError(format!("unknown key `{key}` in {}", path.display())))?;
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError(format!(
                    "`{key}` (from {}): expected a string or a number",
                    path.display()
                )));
            }
        };
        raw.values
            .insert(spec.key, (text, Origin::File(path.to_path_buf())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(
            Some((Path::new("config.toml"), toml)),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::defaults().unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url.expose(), "sqlite://data/lintel.db");
        assert_eq!(c.http.body_limit_bytes, 1_048_576);
        assert!(c.is_sqlite());
    }

    #[test]
    fn file_then_env_override() {
        let c = from(
            "bind = \"0.0.0.0:9000\"\n[http]\nbody_limit_bytes = 2048\n",
            &[
                ("LINTEL_BIND", "127.0.0.1:9001"),
                ("LINTEL_TEST_POSTGRES_URL", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:9001");
        assert_eq!(c.http.body_limit_bytes, 2048);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = from("[http]\nbody_limt = 1\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: unknown key `http.body_limt` in config.toml"
        );
        let e = from("colour = \"red\"\n", &[]).unwrap_err();
        assert!(e.0.contains("`colour`"), "{e}");
    }

    #[test]
    fn unknown_env_var_is_named() {
        let e = from("", &[("LINTEL_BINDD", "x")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config: unknown environment variable LINTEL_BINDD"
        );
    }

    #[test]
    fn malformed_values_name_key_and_origin() {
        let e = from("issuer = \"not a url\"\n", &[]).unwrap_err();
        assert!(
            e.0.starts_with("`issuer` (from config.toml): not a valid URL"),
            "{e}"
        );
        let e = from("", &[("LINTEL_HTTP_BODY_LIMIT_BYTES", "lots")]).unwrap_err();
        assert_eq!(
            e.0,
            "`http.body_limit_bytes` (from LINTEL_HTTP_BODY_LIMIT_BYTES): expected a whole number"
        );
        let e = from("issuer = \"https://x.example/?a=b\"\n", &[]).unwrap_err();
        assert!(e.0.contains("query"), "{e}");
    }

    #[test]
    fn database_url_errors_never_echo_the_url() {
        let secret = "hunter2-secret";
        for bad in [
            format!("mysql://u:{secret}@h/db"),
            format!("postgres://u:{secret}@/db"),
            format!("::{secret}"),
        ] {
            let e = from("", &[("LINTEL_DATABASE_URL", bad.as_str())]).unwrap_err();
            assert!(e.0.starts_with("`database_url`"), "{e}");
            assert!(!e.0.contains(secret), "secret leaked: {e}");
        }
        let ok = from("", &[("LINTEL_DATABASE_URL", "postgres://u:pw@h/db")]).unwrap();
        assert_eq!(format!("{:?}", ok.database_url), "[redacted]");
        assert!(!format!("{ok:?}").contains("pw@"));
        assert_eq!(
            redact_database_url("postgres://u:pw@h/db"),
            "postgres://u:REDACTED@h/db"
        );
    }

    #[test]
    fn toml_syntax_error_names_file_and_line() {
        let e = from("bind = \"127.0.0.1:1\"\nthis is not toml\n", &[]).unwrap_err();
        assert!(e.0.starts_with("config.toml: line 2:"), "{e}");
    }

    #[test]
    fn shipped_config_toml_documents_every_key() {
        let text = include_str!("../config.toml");
        // Parses cleanly and sets nothing that differs from the defaults.
        let shipped = from(text, &[]).unwrap();
        let defaults = Config::defaults().unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
        for k in KEYS {
            let leaf = k.key.rsplit('.').next().unwrap();
            let line = text
                .lines()
                .find(|l| {
                    l.trim_start_matches('#')
                        .trim_start()
                        .starts_with(&format!("{leaf} ="))
                })
                .unwrap_or_else(|| panic!("config.toml does not document `{}`", k.key));
            assert!(
                line.contains(k.default),
                "`{}`: default {} not shown",
                k.key,
                k.default
            );
            assert!(
                text.contains(&k.env_var()),
                "{} not documented",
                k.env_var()
            );
        }
    }
}
