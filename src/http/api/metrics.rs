//! `/metrics/daily`: daily active users, logins, signups and token counts per UTC day,
//! for one org (`audit:read` there) or, for super-admin keys, all orgs together.
use super::{Caller, Problem};
use crate::http::error::ApiError;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::identity::access::{authorize_org, perm, require_admin};
use crate::identity::metrics::{self, DailyReport};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(daily_report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// One org (`audit:read` on it); omitted: every org (super-admin keys only).
    pub org_id: Option<Uuid>,
    /// First day, `YYYY-MM-DD` (UTC).
    #[param(value_type = String, format = Date)]
    pub from: NaiveDate,
    /// Last day, included; at most 366 days after `from`.
    #[param(value_type = String, format = Date)]
    pub to: NaiveDate,
}

/// One UTC day.
#[derive(Debug, Serialize, ToSchema)]
pub struct DailyMetrics {
    /// `YYYY-MM-DD`.
    #[schema(value_type = String, format = Date)]
    pub day: NaiveDate,
    /// Distinct users with a successful login that day.
    pub active_users: u64,
    pub logins_succeeded: u64,
    pub logins_failed: u64,
    pub signups: u64,
    /// Flushed counts (a running node writes them every few seconds).
    pub tokens_issued: u64,
}

impl From<DailyReport> for DailyMetrics {
    fn from(r: DailyReport) -> Self {
        DailyMetrics {
            day: r.day,
            active_users: r.active_users,
            logins_succeeded: r.logins_succeeded,
            logins_failed: r.logins_failed,
            signups: r.signups,
            tokens_issued: r.tokens_issued,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DailyMetricsReport {
    pub org_id: Option<Uuid>,
    /// Every day of `from..=to`, zeros included, oldest first.
    pub days: Vec<DailyMetrics>,
}

/// A report per day over `from..=to` (a backwards or longer than 366-day range is 422).
#[utoipa::path(get, path = "/metrics/daily", tag = "metrics", params(DailyQuery),
    responses((status = 200, body = DailyMetricsReport),
              (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn daily_report(
    caller: Caller,
    Query(q): Query<DailyQuery>,
) -> Result<axum::Json<DailyMetricsReport>, ApiError> {
    let org_id = match q.org_id {
        Some(org_id) => Some(
            authorize_org(&caller.id, &caller.principal, org_id, perm::AUDIT_READ)
                .await?
                .org_id(),
        ),
        None => {
            require_admin(&caller.principal)?;
            None
        }
    };
    let days = metrics::daily_report(&caller.id, org_id, q.from, q.to).await?;
    Ok(axum::Json(DailyMetricsReport {
        org_id,
        days: days.into_iter().map(DailyMetrics::from).collect(),
    }))
}
