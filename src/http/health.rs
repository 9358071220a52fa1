//! Liveness and readiness.
use super::error::ApiError;
use super::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use std::time::Duration;

/// Readiness waits at most this long for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers (503 otherwise).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let db = &state.identity.db;
    match tokio::time::timeout(READY_TIMEOUT, db.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready", "database": db.backend() }))),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: database not answering");
            Err(ApiError::Unavailable)
        }
        Err(_) => {
            tracing::warn!("readiness: database timed out");
            Err(ApiError::Unavailable)
        }
    }
}
