//! `/audit-logs`: query with filters and cursor pagination, or export as JSON lines.
use super::dto::AuditLog;
use super::{Caller, Page, PageQuery, Problem};
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm, require_admin};
use crate::identity::audit;
use crate::store::audit::Filter;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_logs))
        .routes(routes!(export_logs))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Required unless the caller is a super-admin (then `audit:read` on that org).
    pub org_id: Option<Uuid>,
    /// `system`, `user`, `api_key` or `scim_client`.
    pub actor_type: Option<String>,
    pub actor_id: Option<String>,
    /// e.g. `user.created`.
    pub action: Option<String>,
    /// From this instant (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Up to this instant (exclusive).
    pub until: Option<DateTime<Utc>>,
}

async fn filter(caller: &Caller, q: AuditQuery) -> Result<Filter, ApiError> {
    match q.org_id {
        Some(org_id) => {
            authorize_org(&caller.id, &caller.principal, org_id, perm::AUDIT_READ).await?;
        }
        None => require_admin(&caller.principal)?,
    }
    Ok(Filter {
        org_id: q.org_id,
        actor_type: q.actor_type,
        actor_id: q.actor_id,
        user_id: None,
        action: q.action,
        since: q.since,
        until: q.until,
    })
}

#[utoipa::path(get, path = "/audit-logs", tag = "audit", params(AuditQuery, PageQuery),
    responses((status = 200, body = Page<AuditLog>),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_logs(
    caller: Caller,
    Query(q): Query<AuditQuery>,
    Query(p): Query<PageQuery>,
) -> Result<axum::Json<Page<AuditLog>>, ApiError> {
    let (after, limit) = p.parts()?;
    let f = filter(&caller, q).await?;
    let rows = audit::list(&caller.id, &f, after, limit + 1).await?;
    Ok(axum::Json(Page::from_rows(
        rows,
        limit,
        |r| r.log_id,
        AuditLog::from,
    )))
}

/// The filtered log as JSON lines (`application/x-ndjson`), oldest first.
#[utoipa::path(get, path = "/audit-logs/export", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "One audit entry (as in `/audit-logs`) per line", content_type = "application/x-ndjson", body = String),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn export_logs(
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let f = filter(&caller, q).await?;
    let mut out = Vec::new();
    audit::export_jsonl(&caller.id, &f, &mut out).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out))
}
