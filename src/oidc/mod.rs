//! The OpenID Connect provider: clients, discovery and keys, the authorization and token
//! endpoints' rules, token claims. Protocol rules only: HTTP glue is in `crate::http::oidc`,
//! pages in `crate::web`.
pub mod authorize;
pub mod backchannel;
pub mod claims;
pub mod clients;
pub mod discovery;
pub mod error;
pub mod es256;
pub mod interaction;
pub mod jwt;
pub mod keys;
pub mod session;
pub mod token;

pub use error::OidcError;

/// What the provider holds beyond the identity services: its issuer and keys.
pub struct Provider {
    /// The issuer identifier: `issuer` from the configuration without a trailing `/`.
    pub issuer: String,
    pub keyring: keys::Keyring,
}

impl Provider {
    pub fn new(config: &crate::config::Config) -> Self {
        Provider {
            issuer: config.issuer.as_str().trim_end_matches('/').to_string(),
            keyring: keys::Keyring::new(&config.keys_dir),
        }
    }

    /// An absolute URL on this provider.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Whether cookies must be `Secure` (the issuer is https).
    pub fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }
}
