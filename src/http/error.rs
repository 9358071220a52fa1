//! The one HTTP error type: every failure becomes an RFC 9457 problem+json response here.
use crate::identity::IdentityError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Each variant documents its status; `type` URIs are stable identifiers.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed input (syntax, bad UUID, bad JSON).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed input that breaks a rule; `field` names it.
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    /// 401: no credentials, or credentials that are malformed, unknown, revoked or expired.
    /// Answered with `WWW-Authenticate: Bearer` (RFC 6750 §3).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the caller is known but lacks a permission.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource, or one the caller may not see.
    #[error("not found")]
    NotFound,
    /// 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 408: the request took longer than `http.request_timeout_secs`.
    #[error("request timeout")]
    Timeout,
    /// 409: a unique value is taken; `field` names it.
    #[error("{detail}")]
    Conflict { field: String, detail: String },
    /// 413: body larger than `http.body_limit_bytes`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency (the database) is not answering.
    #[error("service unavailable")]
    Unavailable,
    /// 500: logged once (with the request's span, so its request id), answered bare.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn type_uri(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "urn:lintel:problem:bad-request",
            ApiError::Invalid { .. } => "urn:lintel:problem:invalid",
            ApiError::Unauthorized(_) => "urn:lintel:problem:unauthorized",
            ApiError::Forbidden(_) => "urn:lintel:problem:forbidden",
            ApiError::NotFound => "urn:lintel:problem:not-found",
            ApiError::MethodNotAllowed => "urn:lintel:problem:method-not-allowed",
            ApiError::Timeout => "urn:lintel:problem:timeout",
            ApiError::Conflict { .. } => "urn:lintel:problem:conflict",
            ApiError::PayloadTooLarge => "urn:lintel:problem:payload-too-large",
            ApiError::UnsupportedMediaType(_) => "urn:lintel:problem:unsupported-media-type",
            ApiError::Unavailable => "urn:lintel:problem:unavailable",
            ApiError::Internal(_) => "urn:lintel:problem:internal",
        }
    }

    /// The problem response for a bare status produced by a middleware layer.
    pub fn from_status(status: StatusCode) -> Option<ApiError> {
        Some(match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Unavailable,
            _ => return None,
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (detail, field) = match &self {
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                (None, None)
            }
            ApiError::BadRequest(d)
            | ApiError::UnsupportedMediaType(d)
            | ApiError::Unauthorized(d)
            | ApiError::Forbidden(d) => (Some(d.as_str()), None),
            ApiError::Invalid { field, detail } | ApiError::Conflict { field, detail } => {
                (Some(detail.as_str()), Some(field.as_str()))
            }
            ApiError::NotFound => (Some("no such resource"), None),
            _ => (None, None),
        };
        let body = Problem {
            kind: self.type_uri(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail,
            field,
        };
        let mut resp = (status, Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::Unauthorized(why) = &self {
            // RFC 6750 §3: the challenge, with the reason as error_description.
            let challenge = format!(
                "Bearer realm=\"lintel\", error=\"invalid_token\", error_description=\"{}\"",
                why.replace(['"', '\\'], "")
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Invalid { field, message } => ApiError::Invalid {
                field: field.to_string(),
                detail: message,
            },
            IdentityError::Conflict { field, message } => ApiError::Conflict {
                field,
                detail: message,
            },
            // An id from another organization is a 404, like an unknown one.
            IdentityError::NotFound { .. } | IdentityError::CrossOrg { .. } => ApiError::NotFound,
            IdentityError::Forbidden { reason } => ApiError::Forbidden(reason),
            IdentityError::InheritanceCycle => ApiError::Conflict {
                field: "parent_role_id".into(),
                detail: "role inheritance would form a cycle".into(),
            },
            e @ (IdentityError::InvalidCredentials
            | IdentityError::TokenInvalid
            | IdentityError::TokenExpired) => ApiError::Unauthorized(e.to_string()),
            e @ (IdentityError::AccountDisabled
            | IdentityError::AccountLocked { .. }
            | IdentityError::PasswordChangeRequired
            | IdentityError::SecondFactorRequired
            | IdentityError::LoginMethodNotAllowed { .. }) => ApiError::Forbidden(e.to_string()),
            e @ (IdentityError::TokenUsed
            | IdentityError::MfaCodeInvalid
            | IdentityError::MfaCodeReplayed
            | IdentityError::MfaNotEnrolled
            | IdentityError::SessionExpired
            | IdentityError::SessionRevoked) => ApiError::BadRequest(e.to_string()),
            IdentityError::Store(s) if s.is_unavailable() => {
                tracing::warn!(error = %s, "database unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: ApiError) -> (StatusCode, serde_json::Value, String) {
        let resp = e.into_response();
        let status = resp.status();
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), ct)
    }

    #[tokio::test]
    async fn conflicts_are_409_naming_the_field() {
        let e = ApiError::from(IdentityError::Conflict {
            field: "email".into(),
            message: "a user with email a@b.co already exists".into(),
        });
        let (status, v, ct) = body(e).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(ct, "application/problem+json");
        assert_eq!(v["field"], "email");
        assert_eq!(v["type"], "urn:lintel:problem:conflict");
    }

    #[test]
    fn every_identity_error_has_its_status() {
        use IdentityError as E;
        let cases: Vec<(IdentityError, u16)> = vec![
            (E::invalid("email", "bad"), 422),
            (
                E::Conflict {
                    field: "email".into(),
                    message: "taken".into(),
                },
                409,
            ),
            (E::NotFound { what: "user" }, 404),
            (E::CrossOrg { what: "role" }, 404),
            (
                E::Forbidden {
                    reason: "no".into(),
                },
                403,
            ),
            (E::InheritanceCycle, 409),
            (E::InvalidCredentials, 401),
            (E::TokenInvalid, 401),
            (E::TokenExpired, 401),
            (E::AccountDisabled, 403),
            (E::AccountLocked { until: None }, 403),
            (E::PasswordChangeRequired, 403),
            (E::SecondFactorRequired, 403),
            (
                E::LoginMethodNotAllowed {
                    method: "password".into(),
                },
                403,
            ),
            (E::TokenUsed, 400),
            (E::MfaCodeInvalid, 400),
            (E::MfaCodeReplayed, 400),
            (E::MfaNotEnrolled, 400),
            (E::SessionExpired, 400),
            (E::SessionRevoked, 400),
            (E::Internal("boom".into()), 500),
        ];
        for (e, status) in cases {
            let label = format!("{e:?}");
            assert_eq!(ApiError::from(e).status().as_u16(), status, "{label}");
        }
    }

    #[tokio::test]
    async fn store_failures_are_bare_500s() {
        let store = crate::store::StoreError::Check;
        let (status, v, _) = body(ApiError::from(IdentityError::Store(store))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(v.get("detail").is_none(), "{v}");
    }
}
