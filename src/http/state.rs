//! What every handler can reach.
use crate::config::Config;
use crate::identity::Identity;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub identity: Identity,
    /// The OpenID Connect provider's issuer and keys.
    pub oidc: Arc<crate::oidc::Provider>,
    /// Enterprise SSO: our SAML SP key and the upstream OIDC client.
    pub federation: Arc<crate::federation::flow::Federation>,
}
