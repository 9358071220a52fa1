//! This node's short memory of verified SCIM tokens and of client mappings: each entry is
//! reused for at most [`TTL`], so a SCIM request does not look both up again. A change made
//! on this node (token rotated or revoked, client disabled or deleted, mapping replaced)
//! forgets the client's entries at once; one made on another node is seen here within
//! [`TTL`]. Expiry is still checked on every request against the clock.
use super::mapping::Rule;
pub use crate::identity::ttl_cache::{Cache, TTL};
use crate::store::scim::{ScimClient, ScimToken};
use std::sync::{Arc, OnceLock};
use uuid::Uuid;

/// Verified tokens by SHA-256 of the secret.
pub fn tokens() -> &'static Cache<(ScimToken, ScimClient)> {
    static C: OnceLock<Cache<(ScimToken, ScimClient)>> = OnceLock::new();
    C.get_or_init(Cache::new)
}

/// Effective mapping rules by client id, with their [`super::rendered::fingerprint`].
pub fn mappings() -> &'static Cache<(Arc<Vec<Rule>>, u64)> {
    static C: OnceLock<Cache<(Arc<Vec<Rule>>, u64)>> = OnceLock::new();
    C.get_or_init(Cache::new)
}

/// Forgets everything remembered about a client (after any change to it on this node).
pub fn forget_client(client_id: Uuid) {
    tokens().retain(|_, (_, c)| c.client_id != client_id);
    let key = client_id.to_string();
    mappings().retain(|k, _| k != key);
}
