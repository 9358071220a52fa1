//! Provider metadata (OIDC Discovery 1.0 §3, RFC 8414 §2): exactly what is implemented.
use super::Provider;
use super::claims::{ACR_MFA, ACR_PASSWORD};
use super::clients::{AUTH_METHODS, GRANT_TYPES, ID_TOKEN_ALGS, SCOPES};
use serde_json::{Value, json};

pub fn metadata(p: &Provider) -> Value {
    let confidential: Vec<&str> = AUTH_METHODS
        .iter()
        .copied()
        .filter(|m| *m != "none")
        .collect();
    json!({
        "issuer": p.issuer,
        "authorization_endpoint": p.url("/oauth2/authorize"),
        "token_endpoint": p.url("/oauth2/token"),
        "userinfo_endpoint": p.url("/oauth2/userinfo"),
        "jwks_uri": p.url("/oauth2/jwks"),
        "end_session_endpoint": p.url("/oauth2/logout"),
        "introspection_endpoint": p.url("/oauth2/introspect"),
        "revocation_endpoint": p.url("/oauth2/revoke"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ID_TOKEN_ALGS,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ID_TOKEN_ALGS,
        "introspection_endpoint_auth_methods_supported": confidential,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "acr_values_supported": [ACR_PASSWORD, ACR_MFA],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "sid", "amr", "acr",
            "at_hash", "name", "given_name", "family_name", "picture", "preferred_username",
            "email", "email_verified", "org_id", "org_name", "org_slug", "role", "roles",
            "permissions", "act"
        ],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "require_request_uri_registration": false,
        "authorization_response_iss_parameter_supported": true,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    })
}
