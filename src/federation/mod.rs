//! Enterprise SSO (issue #7): each org's upstream identity providers — SAML 2.0 (Lintel is
//! the service provider; the protocol checks are in `crate::saml`) and OpenID Connect
//! (Lintel is the relying party, [`oidc_upstream`]) — with home-realm discovery, JIT
//! provisioning and account linking. A federated login ends as a Lintel user id that the
//! hosted login turns into a session, continuing whatever started it.
pub mod flow;
pub mod home_realm;
pub mod jit;
pub mod mapping;
pub mod oidc_upstream;
pub mod providers;

use crate::identity::IdentityError;

/// Why a federated login failed. [`FederationError::category`] is what the error page
/// names; the detail goes to the log only.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("identity provider not found")]
    UnknownProvider,
    #[error("the identity provider is disabled")]
    ProviderDisabled,
    #[error("SAML response rejected: {0}")]
    Saml(#[from] crate::saml::error::SamlError),
    #[error("OpenID Connect login rejected: {0}")]
    Upstream(#[from] oidc_upstream::UpstreamError),
    /// The upstream provider answered with an OAuth error (the user cancelled, …).
    #[error("the identity provider refused the login: {0}")]
    Refused(String),
    /// No outstanding request of this browser (unknown, used, expired, another browser).
    #[error("no pending sign-in matches: {0}")]
    Request(&'static str),
    #[error("the assertion was already used")]
    Replay,
    #[error("the identity provider sent no email address")]
    MissingEmail,
    #[error("an account with this email exists and is not linked to this identity provider")]
    AccountExists,
    /// A new user's email is outside the org's verified domains.
    #[error("the email's domain is not a verified domain of the organization")]
    DomainNotVerified,
    /// A transient NameID changes every login: it cannot identify a user.
    #[error("the identity provider sent a transient NameID")]
    TransientNameId,
    #[error("the organization does not allow this login method")]
    MethodNotAllowed,
    #[error("the identity provider is misconfigured: {0}")]
    Config(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl FederationError {
    /// A short name of the reason, shown on the error page.
    pub fn category(&self) -> String {
        match self {
            FederationError::UnknownProvider => "unknown identity provider".into(),
            FederationError::ProviderDisabled => "identity provider disabled".into(),
            FederationError::Saml(e) => format!("SAML {}", e.category()),
            FederationError::Upstream(e) => format!("OpenID Connect {}", e.category()),
            FederationError::Refused(_) => "sign-in refused by the identity provider".into(),
            FederationError::Request(_) => "sign-in expired or started in another browser".into(),
            FederationError::Replay => "response already used".into(),
            FederationError::MissingEmail => "no email address".into(),
            FederationError::AccountExists => "account exists".into(),
            FederationError::DomainNotVerified => "email domain not verified".into(),
            FederationError::TransientNameId => "transient NameID".into(),
            FederationError::MethodNotAllowed => "login method not allowed".into(),
            FederationError::Config(_) => "identity provider misconfigured".into(),
            FederationError::Identity(IdentityError::AccountDisabled) => "account disabled".into(),
            FederationError::Identity(IdentityError::AccountLocked { .. }) => {
                "account locked".into()
            }
            FederationError::Identity(_) => "internal error".into(),
        }
    }

    /// Whether the failure is the server's own (logged as an error, answered with 500).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            FederationError::Identity(IdentityError::Store(_) | IdentityError::Internal(_))
        )
    }
}
