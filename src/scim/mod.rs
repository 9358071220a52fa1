//! SCIM 2.0 (RFC 7643 / RFC 7644): the protocol rules and the provisioning services built
//! on the identity core. Parsers and the PATCH engine are pure; `users`, `groups`,
//! `clients` and `bulk` are the async services the HTTP layer calls.
pub mod clients;
pub mod mapping;

/// The case-folded form used for case-insensitive keys (group → role rules).
pub fn fold(s: &str) -> String {
    s.to_lowercase()
}
