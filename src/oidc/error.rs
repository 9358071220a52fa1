//! The one error type of the OIDC provider, named after the error codes of RFC 6749 §4.1.2.1
//! and §5.2, OpenID Connect Core 1.0 §3.1.2.6, RFC 6750 §3.1 and RFC 8693 §2.2.2. It is
//! turned into HTTP answers in one place: `crate::http::oidc::error`.
use crate::identity::IdentityError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("invalid_request: {0}")]
    InvalidRequest(String),
    /// Client authentication failed (RFC 6749 §5.2): 401 with `WWW-Authenticate`.
    #[error("invalid_client: {0}")]
    InvalidClient(String),
    #[error("invalid_grant: {0}")]
    InvalidGrant(String),
    #[error("unauthorized_client: {0}")]
    UnauthorizedClient(String),
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(String),
    #[error("unsupported_response_type: {0}")]
    UnsupportedResponseType(String),
    #[error("invalid_scope: {0}")]
    InvalidScope(String),
    #[error("access_denied: {0}")]
    AccessDenied(String),
    /// OIDC Core §3.1.2.6.
    #[error("login_required: {0}")]
    LoginRequired(String),
    #[error("consent_required: {0}")]
    ConsentRequired(String),
    #[error("interaction_required: {0}")]
    InteractionRequired(String),
    #[error("account_selection_required: {0}")]
    AccountSelectionRequired(String),
    #[error("request_not_supported")]
    RequestNotSupported,
    #[error("request_uri_not_supported")]
    RequestUriNotSupported,
    /// RFC 6750 §3.1 (userinfo): 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    #[error("invalid_token: {0}")]
    InvalidToken(String),
    /// RFC 6750 §3.1: the token lacks a needed scope (403).
    #[error("insufficient_scope: {0}")]
    InsufficientScope(String),
    /// RFC 8693 §2.2.2.
    #[error("invalid_target: {0}")]
    InvalidTarget(String),
    /// Over a rate limit (429, `Retry-After`).
    #[error("slow_down: retry after {retry_after_secs} s")]
    SlowDown { retry_after_secs: u64 },
    /// RFC 6749 §4.1.2.1 `temporarily_unavailable`: the store is not answering.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    /// A bug or a store failure: logged once where answered, never shown.
    #[error("server_error: {0}")]
    ServerError(String),
}

impl OidcError {
    /// The registered error code.
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::InvalidRequest(_) => "invalid_request",
            OidcError::InvalidClient(_) => "invalid_client",
            OidcError::InvalidGrant(_) => "invalid_grant",
            OidcError::UnauthorizedClient(_) => "unauthorized_client",
            OidcError::UnsupportedGrantType(_) => "unsupported_grant_type",
            OidcError::UnsupportedResponseType(_) => "unsupported_response_type",
            OidcError::InvalidScope(_) => "invalid_scope",
            OidcError::AccessDenied(_) => "access_denied",
            OidcError::LoginRequired(_) => "login_required",
            OidcError::ConsentRequired(_) => "consent_required",
            OidcError::InteractionRequired(_) => "interaction_required",
            OidcError::AccountSelectionRequired(_) => "account_selection_required",
            OidcError::RequestNotSupported => "request_not_supported",
            OidcError::RequestUriNotSupported => "request_uri_not_supported",
            OidcError::InvalidToken(_) => "invalid_token",
            OidcError::InsufficientScope(_) => "insufficient_scope",
            OidcError::InvalidTarget(_) => "invalid_target",
            OidcError::SlowDown { .. } => "slow_down",
            OidcError::TemporarilyUnavailable => "temporarily_unavailable",
            OidcError::ServerError(_) => "server_error",
        }
    }

    /// A human-readable `error_description` (never internal details).
    pub fn description(&self) -> String {
        match self {
            OidcError::InvalidRequest(d)
            | OidcError::InvalidClient(d)
            | OidcError::InvalidGrant(d)
            | OidcError::UnauthorizedClient(d)
            | OidcError::UnsupportedGrantType(d)
            | OidcError::UnsupportedResponseType(d)
            | OidcError::InvalidScope(d)
            | OidcError::AccessDenied(d)
            | OidcError::LoginRequired(d)
            | OidcError::ConsentRequired(d)
            | OidcError::InteractionRequired(d)
            | OidcError::AccountSelectionRequired(d)
            | OidcError::InvalidToken(d)
            | OidcError::InsufficientScope(d)
            | OidcError::InvalidTarget(d) => d.clone(),
            OidcError::RequestNotSupported => "the request parameter is not supported".into(),
            OidcError::RequestUriNotSupported => {
                "the request_uri parameter is not supported".into()
            }
            OidcError::SlowDown { retry_after_secs } => {
                format!("too many requests; retry after {retry_after_secs} s")
            }
            OidcError::TemporarilyUnavailable => "the service is temporarily unavailable".into(),
            OidcError::ServerError(_) => "internal error".into(),
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        OidcError::InvalidRequest(d.into())
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        OidcError::InvalidGrant(d.into())
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        OidcError::InvalidClient(d.into())
    }
    pub fn invalid_token(d: impl Into<String>) -> Self {
        OidcError::InvalidToken(d.into())
    }
}

impl From<crate::store::StoreError> for OidcError {
    fn from(e: crate::store::StoreError) -> Self {
        OidcError::from(IdentityError::Store(e))
    }
}

/// Identity-rule failures met while issuing tokens. Account problems are `invalid_grant`
/// at the token endpoint (the grant no longer stands); store failures are server errors.
impl From<IdentityError> for OidcError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Store(s) if s.is_unavailable() => OidcError::TemporarilyUnavailable,
            IdentityError::Store(s) => OidcError::ServerError(s.to_string()),
            IdentityError::Internal(m) => OidcError::ServerError(m),
            IdentityError::AccountDisabled
            | IdentityError::AccountLocked { .. }
            | IdentityError::SessionExpired
            | IdentityError::SessionRevoked
            | IdentityError::TokenInvalid
            | IdentityError::TokenExpired
            | IdentityError::TokenUsed
            | IdentityError::PasswordChangeRequired => OidcError::InvalidGrant(e.to_string()),
            IdentityError::Forbidden { reason } => OidcError::AccessDenied(reason),
            IdentityError::NotFound { what } => {
                OidcError::InvalidGrant(format!("{what} not found"))
            }
            other => OidcError::InvalidRequest(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_registered_ones() {
        assert_eq!(
            OidcError::RequestNotSupported.code(),
            "request_not_supported"
        );
        assert_eq!(
            OidcError::RequestUriNotSupported.code(),
            "request_uri_not_supported"
        );
        assert_eq!(
            OidcError::LoginRequired("x".into()).code(),
            "login_required"
        );
        assert_eq!(OidcError::invalid_client("x").code(), "invalid_client");
        // Internal details never reach the description.
        let e = OidcError::ServerError("db exploded at row 7".into());
        assert_eq!(e.description(), "internal error");
        assert_eq!(
            OidcError::from(IdentityError::SessionRevoked).code(),
            "invalid_grant"
        );
    }
}
