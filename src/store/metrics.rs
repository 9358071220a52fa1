//! `metrics_events`: product metrics (logins, sign-ups, SCIM provisioning, tokens issued).
//! `day` is the UTC date of `event_timestamp`, written at insert so the reports group by a
//! column with the same SQL on both backends; `event_count` lets one row stand for many
//! events (tokens issued are aggregated per minute).
use super::{Access, Json, StoreError, with_conn};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct MetricsEvent {
    pub event_id: Uuid,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub event_type: String,
    pub event_timestamp: DateTime<Utc>,
    pub metadata: Json<serde_json::Value>,
    /// The UTC date of `event_timestamp`.
    pub day: NaiveDate,
    /// How many events the row stands for (1 unless aggregated).
    pub event_count: i64,
}

const COLUMNS: &str =
    "event_id, user_id, org_id, event_type, event_timestamp, metadata, day, event_count";

pub async fn insert(a: &mut impl Access, e: &MetricsEvent) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO metrics_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(e.event_id)
        .bind(e.user_id)
        .bind(e.org_id)
        .bind(&e.event_type)
        .bind(e.event_timestamp)
        .bind(&e.metadata)
        .bind(e.day)
        .bind(e.event_count)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// Adds `e.event_count` to the row `e.event_id`, creating it when absent, in one atomic
/// statement (so several nodes flushing the same aggregate add up). An `org_id` that no
/// longer exists is stored as NULL rather than failing the whole flush.
pub async fn upsert_add(a: &mut impl Access, e: &MetricsEvent) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO metrics_events ({COLUMNS})
         VALUES ($1, $2, (SELECT org_id FROM organizations WHERE org_id = $3), $4, $5, $6, $7, $8)
         ON CONFLICT (event_id)
         DO UPDATE SET event_count = metrics_events.event_count + excluded.event_count"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(e.event_id)
        .bind(e.user_id)
        .bind(e.org_id)
        .bind(&e.event_type)
        .bind(e.event_timestamp)
        .bind(&e.metadata)
        .bind(e.day)
        .bind(e.event_count)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// What the reports select: one event type, optionally one org, days `from..=to`.
#[derive(Debug, Clone)]
pub struct DayRange<'a> {
    pub event_type: &'a str,
    /// `None`: every org (and events without one).
    pub org_id: Option<Uuid>,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// The matching rows, oldest first.
pub async fn list(a: &mut impl Access, r: &DayRange<'_>) -> Result<Vec<MetricsEvent>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM metrics_events
         WHERE event_type = $1 AND ($2 IS NULL OR org_id = $2) AND day >= $3 AND day <= $4
         ORDER BY event_timestamp, event_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(r.event_type)
        .bind(r.org_id)
        .bind(r.from)
        .bind(r.to)
        .fetch_all(&mut *c)
        .await?))
}

/// Distinct non-null `user_id`s per day (days without any are absent), by day.
pub async fn distinct_users_per_day(
    a: &mut impl Access,
    r: &DayRange<'_>,
) -> Result<Vec<(NaiveDate, i64)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT day, COUNT(DISTINCT user_id) FROM metrics_events
         WHERE event_type = $1 AND ($2 IS NULL OR org_id = $2) AND day >= $3 AND day <= $4
           AND user_id IS NOT NULL
         GROUP BY day ORDER BY day"
    )
    .bind(r.event_type)
    .bind(r.org_id)
    .bind(r.from)
    .bind(r.to)
    .fetch_all(&mut *c)
    .await?))
}

/// The sum of `event_count` per day (days without any are absent), by day.
pub async fn totals_per_day(
    a: &mut impl Access,
    r: &DayRange<'_>,
) -> Result<Vec<(NaiveDate, i64)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT day, CAST(SUM(event_count) AS BIGINT) FROM metrics_events
         WHERE event_type = $1 AND ($2 IS NULL OR org_id = $2) AND day >= $3 AND day <= $4
         GROUP BY day ORDER BY day"
    )
    .bind(r.event_type)
    .bind(r.org_id)
    .bind(r.from)
    .bind(r.to)
    .fetch_all(&mut *c)
    .await?))
}
