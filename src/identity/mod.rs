//! Business rules shared by every protocol: users, organizations, memberships, credentials.
//! Knows nothing of HTTP; persists through `store`.
use crate::clock::SharedClock;
use crate::config::Config;
use crate::store::{Db, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub mod access;
pub mod api_keys;
pub mod audit;
pub mod housekeeping;
pub mod impersonation;
pub mod login;
pub mod mailer;
pub mod memberships;
pub mod metrics;
pub mod mfa;
pub mod orgs;
pub mod passwords;
pub mod rate_limit;
pub mod roles;
pub mod sessions;
pub mod tokens;
pub mod ttl_cache;
pub mod users;
pub mod waitlist;

pub use passwords::Passwords;

/// What the identity rules need: the store, the clock, the password hasher, the mailer
/// and the configuration.
#[derive(Clone)]
pub struct Identity {
    pub db: Db,
    pub clock: SharedClock,
    pub passwords: Passwords,
    pub mailer: Arc<dyn mailer::Mailer>,
    /// Encrypts secrets at rest (TOTP seeds).
    pub data_key: Arc<crate::keys::DataKey>,
    /// Bounds activity writes to one a minute per user.
    pub activity: Arc<sessions::ActivityThrottle>,
    /// This node's rate-limit memory (denials until their window ends, policy cache).
    pub rate_limits: Arc<rate_limit::FastPath>,
    /// Lockout bookkeeping for emails without an account.
    pub unknown_logins: Arc<login::UnknownEmails>,
    /// Who is acting through this handle (written to the audit log).
    pub actor: Arc<audit::Actor>,
    /// Tokens issued, counted in memory until the next metrics flush.
    pub metrics: Arc<metrics::Accumulator>,
    /// Poked after a transaction that ended sessions, so this node's back-channel logout
    /// worker runs at once rather than at its next poll (see `oidc::backchannel`).
    pub sessions_ended: Arc<tokio::sync::Notify>,
    pub config: Arc<Config>,
}

impl Identity {
    /// Says that sessions just ended (after the commit): wakes the logout-notice worker.
    pub fn sessions_ended(&self) {
        self.sessions_ended.notify_one();
    }

    /// The same services, acting as `actor` (recorded by every mutation's audit row).
    pub fn acting_as(&self, actor: audit::Actor) -> Identity {
        Identity {
            actor: Arc::new(actor),
            ..self.clone()
        }
    }
}

/// An identity-rule failure. Messages are safe to show (no secrets, no SQL).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Input that breaks a rule; `field` names the offending input.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Another record already holds this unique value.
    #[error("{message}")]
    Conflict { field: String, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The caller may not do this (e.g. create an org without `can_create_orgs`).
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },

    // Authentication (identity::login). Unknown email and wrong password are the same error.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("this account is disabled")]
    AccountDisabled,
    /// `until: None` is an admin lock; `Some` a temporary lock after repeated failures.
    #[error("this account is locked")]
    AccountLocked { until: Option<DateTime<Utc>> },
    /// The password is right but must be changed before any session is issued.
    #[error("the password must be changed before signing in")]
    PasswordChangeRequired,
    /// The org does not allow this login method (`org_login_methods`).
    #[error("the organization does not allow signing in with {method}")]
    LoginMethodNotAllowed { method: String },

    // Single-use tokens (email verification, password reset, refresh).
    #[error("the link or token is not valid")]
    TokenInvalid,
    #[error("the link or token has expired")]
    TokenExpired,
    #[error("the link or token has already been used")]
    TokenUsed,

    // MFA.
    #[error("the code is not valid")]
    MfaCodeInvalid,
    #[error("the code has already been used")]
    MfaCodeReplayed,
    #[error("no MFA device is enrolled")]
    MfaNotEnrolled,

    // Roles.
    #[error("role inheritance would form a cycle")]
    InheritanceCycle,
    /// A role, permission or member of one org used in another.
    #[error("{what} belongs to another organization")]
    CrossOrg { what: &'static str },

    // Sessions.
    #[error("the session has expired")]
    SessionExpired,
    #[error("the session has been revoked")]
    SessionRevoked,
    /// A session for this user (or org) needs a second factor among its methods.
    #[error("a second factor is required")]
    SecondFactorRequired,
    /// The store failed; logged by whoever answers, never shown.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl IdentityError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        IdentityError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Turns a store conflict into a readable one naming the field; other errors pass through.
    pub(crate) fn from_store_conflict(
        e: StoreError,
        describe: impl FnOnce(&str) -> String,
    ) -> Self {
        match e.conflict_field() {
            Some(field) => {
                let field = field.to_string();
                IdentityError::Conflict {
                    message: describe(&field),
                    field,
                }
            }
            None => IdentityError::Store(e),
        }
    }
}
