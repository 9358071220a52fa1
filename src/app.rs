//! Wiring: the one place that opens the store (and so picks the backend), loads keys and
//! builds the router.
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, redact_database_url};
use crate::http::{self, AppState};
use crate::identity::{Identity, Passwords, mailer};
use crate::keys;
use crate::store::{self, Db, DbOptions, Json};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Why Lintel could not start. Each is one line for the operator; the process exits 2.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {url}: {message}")]
    Database { url: String, message: String },
    #[error("keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("federation: {0}")]
    Federation(String),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("passwords: {0}")]
    Passwords(#[from] crate::identity::passwords::PasswordError),
    #[error("{0}")]
    Mail(#[from] crate::identity::mailer::MailError),
    #[error("{0}")]
    Metrics(#[from] http::metrics::RecorderError),
}

/// Opens the database named by the config and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Db, StartupError> {
    let url = config.database_url.expose();
    let err = |message: String| StartupError::Database {
        url: redact_database_url(url),
        message,
    };
    let opts = DbOptions {
        max_connections: config.database.max_connections,
        connect_timeout: config.database.connect_timeout,
        sqlite_busy_timeout: config.database.sqlite_busy_timeout,
        sqlite_cache_mib: config.database.sqlite_cache_mib,
    };
    let db = Db::connect(url, &opts)
        .await
        .map_err(|e| err(e.to_string()))?;
    let applied = db.migrate().await.map_err(|e| err(e.to_string()))?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    Ok(db)
}

/// The identity services over an open store.
pub fn identity(config: &Config, db: Db, clock: SharedClock) -> Result<Identity, StartupError> {
    Ok(Identity {
        db,
        clock,
        passwords: Passwords::new(&config.password)?,
        mailer: mailer::from_config(config)?,
        data_key: Arc::new(keys::DataKey::ensure(&config.keys_dir)?),
        activity: Arc::default(),
        actor: Arc::default(),
        unknown_logins: Arc::default(),
        rate_limits: Arc::new(crate::identity::rate_limit::FastPath::new(
            crate::identity::rate_limit::FAST_PATH_CAPACITY,
        )),
        metrics: Arc::default(),
        sessions_ended: Arc::default(),
        config: Arc::new(config.clone()),
    })
}

/// A built server, bound and ready to serve.
pub struct App {
    pub state: AppState,
    listener: TcpListener,
    /// The Prometheus listener and recorder, when `metrics.bind` is set.
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
}

impl App {
    /// Opens the store, migrates, ensures a signing key and binds `config.bind`.
    pub async fn build(config: Config) -> Result<App, StartupError> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(config: Config, clock: SharedClock) -> Result<App, StartupError> {
        let db = open_store(&config).await?;
        tracing::info!(
            backend = ?db.backend(),
            url = %redact_database_url(config.database_url.expose()),
            "database ready"
        );
        let (keys, generated) = keys::ensure(&config.keys_dir)?;
        let mut c = db.conn().await.map_err(|e| StartupError::Database {
            url: redact_database_url(config.database_url.expose()),
            message: e.to_string(),
        })?;
        for k in &keys {
            if generated {
                tracing::info!(kid = %k.kid, path = %k.path.display(), "generated signing key");
            }
            let now = clock.now();
            let meta = store::signing_keys::SigningKey {
                kid: k.kid.clone(),
                alg: k.alg.to_string(),
                public_jwk: Json(serde_json::Value::Object(k.public_jwk.as_ref().clone())),
                created_at: now,
                active_from: now,
                retired_at: None,
                published_until: None,
            };
            store::signing_keys::insert_if_absent(&mut c, &meta)
                .await
                .map_err(|e| StartupError::Database {
                    url: redact_database_url(config.database_url.expose()),
                    message: e.to_string(),
                })?;
        }
        drop(c);
        let listener =
            TcpListener::bind(config.bind)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let metrics = match config.metrics.bind {
            Some(addr) => {
                let handle = http::metrics::install_recorder()?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?;
                Some((l, handle))
            }
            None => None,
        };
        let identity = identity(&config, db, clock)?;
        crate::identity::rate_limit::ensure_default_policies(&identity)
            .await
            .map_err(|e| StartupError::Database {
                url: redact_database_url(config.database_url.expose()),
                message: format!("rate-limit defaults: {e}"),
            })?;
        let sp_key =
            crate::saml::sp_key::SpKey::load_or_generate(&config.keys_dir).map_err(|e| {
                StartupError::Federation(format!(
                    "SAML SP key in {}: {e}",
                    config.keys_dir.display()
                ))
            })?;
        let oidc = Arc::new(crate::oidc::Provider::new(&config));
        let federation = Arc::new(crate::federation::flow::Federation {
            base_url: oidc.issuer.clone(),
            sp_key: Arc::new(sp_key),
            upstream: crate::federation::oidc_upstream::Upstream::new(
                std::time::Duration::from_secs(10),
            )
            .map_err(|e| StartupError::Federation(format!("upstream OIDC client: {e}")))?,
        });
        Ok(App {
            state: AppState {
                oidc,
                federation,
                config: Arc::new(config),
                identity,
            },
            listener,
            metrics,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address `/metrics` is served on, when `metrics.bind` is set (port 0 resolved).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The full router.
    pub fn router(&self) -> http::Router {
        http::router(self.state.clone())
    }

    /// The full router with `extra` routes mounted under the same middleware (tests use
    /// this to add probes such as a deliberately slow handler).
    pub fn router_with(&self, extra: http::Router<AppState>) -> http::Router {
        http::router_with(self.state.clone(), extra)
    }

    /// Serves `router` until `shutdown` resolves, then stops accepting and lets in-flight
    /// requests finish for up to `http.shutdown_timeout`. Meanwhile serves `/metrics` when
    /// configured, and flushes the counted metrics periodically and once more at the end.
    pub async fn serve_with(
        self,
        router: http::Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = self.state.config.http.shutdown_timeout;
        let identity = self.state.identity;
        let flusher = crate::identity::metrics::spawn_flusher(
            identity.clone(),
            crate::identity::metrics::FLUSH_INTERVAL,
        );
        let purger = crate::identity::rate_limit::spawn_purger(
            identity.clone(),
            crate::identity::rate_limit::PURGE_INTERVAL,
        );
        let code_purger = crate::oidc::authorize::spawn_code_purger(
            identity.clone(),
            std::time::Duration::from_secs(600),
        );
        let housekeeping = crate::identity::housekeeping::spawn(
            identity.clone(),
            crate::identity::housekeeping::INTERVAL,
        );
        let federation_purger = crate::federation::flow::spawn_purger(
            identity.clone(),
            std::time::Duration::from_secs(600),
        );
        let backchannel =
            crate::oidc::backchannel::spawn(identity.clone(), self.state.oidc.clone());
        let exporter = self
            .metrics
            .map(|(l, handle)| http::metrics::serve_metrics(l, handle, identity.db.clone()));
        let served = http::serve(self.listener, router, shutdown, grace).await;
        if let Some(task) = exporter {
            task.abort();
        }
        purger.abort();
        code_purger.abort();
        federation_purger.abort();
        housekeeping.abort();
        backchannel.abort();
        flusher.stop().await;
        served
    }

    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        self.serve_with(router, shutdown).await
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
