//! Extractors whose rejections are problem+json (never axum's plain-text defaults).
use super::error::ApiError;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};

/// `axum::Json` with rejections as [`ApiError`]: 400 bad JSON, 413 too large, 415 wrong type.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Path` with rejections as 400 (e.g. an id that is not a UUID).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with rejections as 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonRejection::BytesRejection(b)
                if b.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::PayloadTooLarge
            }
            other => ApiError::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match r {
            PathRejection::FailedToDeserializePathParams(e) => ApiError::BadRequest(e.body_text()),
            other => ApiError::Internal(other.body_text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    async fn call(req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let app = Router::new()
            .route(
                "/things/{id}",
                get(|Path(id): Path<uuid::Uuid>| async move { id.to_string() }),
            )
            .route(
                "/things",
                post(|Json(v): Json<serde_json::Value>| async move { axum::Json(v) }),
            );
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn bad_uuid_in_path_is_400_problem() {
        let (status, body) = call(
            Request::get("/things/not-a-uuid")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["type"], "urn:lintel:problem:bad-request");
        assert!(body["detail"].as_str().unwrap().contains("UUID"), "{body}");
    }

    #[tokio::test]
    async fn bad_json_is_400_and_wrong_type_415() {
        let req = Request::post("/things")
            .header("content-type", "application/json")
            .body(Body::from("{nope"))
            .unwrap();
        let (status, body) = call(req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["status"], 400);
        let req = Request::post("/things").body(Body::from("{}")).unwrap();
        assert_eq!(call(req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
