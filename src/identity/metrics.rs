//! Product metrics in `metrics_events`: logins (success or failure, and the method), sign-ups,
//! SCIM provisioning, and tokens issued — counted in memory and written as one upserted row
//! per (org, client, minute) — plus the daily reports over them. Operational metrics for
//! Prometheus (requests, latencies, pool) are in `http::metrics`.
//!
//! Days are UTC. Each row carries its `day` (the UTC date of its timestamp, set here at
//! insert), so the reports group by a column with the same SQL on both backends instead of
//! truncating timestamps, which the dialects spell differently.
use super::login::LoginOutcome;
use super::{Identity, IdentityError};
use crate::store::metrics::{DayRange, MetricsEvent};
use crate::store::{self, Access, Json};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// `event_type` values.
pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
pub const LOGIN_FAILED: &str = "login.failed";
pub const USER_SIGNED_UP: &str = "user.signed_up";
pub const SCIM_PROVISIONED: &str = "scim.provisioned";
/// One row per (org, client, minute); `event_count` is how many tokens were issued.
pub const TOKENS_ISSUED: &str = "token.issued";

/// Login methods (`metadata.method` of login events).
pub const METHOD_PASSWORD: &str = "password";
pub const METHOD_MFA: &str = "mfa";

/// The longest report range, in days (both ends included).
pub const MAX_RANGE_DAYS: i64 = 366;

/// How often a running server writes the counted tokens (and once more at shutdown).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Client ids are bounded before they become part of an in-memory key and a row.
const MAX_CLIENT_ID_CHARS: usize = 255;

fn event(
    id: &Identity,
    event_type: &str,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
    metadata: Value,
) -> MetricsEvent {
    let now = id.clock.now();
    MetricsEvent {
        event_id: Uuid::now_v7(),
        user_id,
        org_id,
        event_type: event_type.to_string(),
        event_timestamp: now,
        metadata: Json(metadata),
        day: now.date_naive(),
        event_count: 1,
    }
}

// ---------------------------------------------------------------------------------------
// Logins

/// Records one login outcome (`method`: [`METHOD_PASSWORD`], [`METHOD_MFA`], or a federation
/// method such as `"saml"`). Runs on `a`, so it can join the caller's transaction.
pub async fn record_login(
    a: &mut impl Access,
    id: &Identity,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
    success: bool,
    method: &'static str,
) -> Result<(), IdentityError> {
    let event_type = if success {
        LOGIN_SUCCEEDED
    } else {
        LOGIN_FAILED
    };
    let e = event(id, event_type, user_id, org_id, json!({ "method": method }));
    store::metrics::insert(a, &e).await?;
    Ok(())
}

/// Whether an error ends a login as refused (a failure) rather than as a fault of the server
/// (a store or internal error says nothing about the user, so it is not counted).
pub fn is_login_failure(e: &IdentityError) -> bool {
    !matches!(e, IdentityError::Store(_) | IdentityError::Internal(_))
}

/// What the password step's result counts as: `Some((success, user))`, or `None` when it is
/// not counted — `MfaRequired` (the login completes, or fails, at the second factor, so a
/// login is counted once) and server faults.
pub fn password_step_event(
    r: &Result<LoginOutcome, IdentityError>,
) -> Option<(bool, Option<Uuid>)> {
    match r {
        Ok(LoginOutcome::Authenticated { user }) => Some((true, Some(user.user_id))),
        Ok(LoginOutcome::MfaRequired { .. }) => None,
        Err(e) => is_login_failure(e).then_some((false, None)),
    }
}

/// What the second factor's result counts as (see [`password_step_event`]).
pub fn second_factor_event<T>(r: &Result<T, IdentityError>) -> Option<bool> {
    match r {
        Ok(_) => Some(true),
        Err(e) => is_login_failure(e).then_some(false),
    }
}

/// Records the password step of `login::authenticate`. Best effort: a metric that cannot be
/// written is logged and does not change the login's answer.
pub async fn observe_password_login(
    id: &Identity,
    org_id: Option<Uuid>,
    r: &Result<LoginOutcome, IdentityError>,
) {
    if let Some((success, user_id)) = password_step_event(r) {
        best_effort(id, user_id, org_id, success, METHOD_PASSWORD).await;
    }
}

/// Records the second factor of `login::second_factor` (best effort, as above).
pub async fn observe_second_factor<T>(
    id: &Identity,
    user_id: Uuid,
    org_id: Option<Uuid>,
    r: &Result<T, IdentityError>,
) {
    if let Some(success) = second_factor_event(r) {
        best_effort(id, Some(user_id), org_id, success, METHOD_MFA).await;
    }
}

async fn best_effort(
    id: &Identity,
    user_id: Option<Uuid>,
    org_id: Option<Uuid>,
    success: bool,
    method: &'static str,
) {
    let result = async {
        let mut c = id.db.conn().await?;
        record_login(&mut c, id, user_id, org_id, success, method).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "metrics: login event not recorded");
    }
}

// ---------------------------------------------------------------------------------------
// Sign-ups and SCIM provisioning (written in the caller's transaction)

/// Records a new user; call it with the transaction that creates the user.
pub async fn record_signup(
    a: &mut impl Access,
    id: &Identity,
    user_id: Uuid,
    org_id: Option<Uuid>,
) -> Result<(), IdentityError> {
    let e = event(id, USER_SIGNED_UP, Some(user_id), org_id, json!({}));
    store::metrics::insert(a, &e).await?;
    Ok(())
}

/// What a SCIM client did (RFC 7644 §3.3 create, §3.5.1 replace, §3.5.2 patch, §3.6 delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScimOperation {
    Create,
    Replace,
    Patch,
    Delete,
}

/// The SCIM resource type operated on (RFC 7643 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScimResource {
    User,
    Group,
}

/// Records one SCIM provisioning operation; call it with the operation's transaction.
pub async fn record_scim_provisioning(
    a: &mut impl Access,
    id: &Identity,
    org_id: Uuid,
    client_id: Uuid,
    resource: ScimResource,
    operation: ScimOperation,
) -> Result<(), IdentityError> {
    let metadata = json!({ "client_id": client_id, "resource": resource, "operation": operation });
    let e = event(id, SCIM_PROVISIONED, None, Some(org_id), metadata);
    store::metrics::insert(a, &e).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Tokens issued: aggregated per minute

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggKey {
    org_id: Option<Uuid>,
    client_id: String,
    minute: i64,
}

/// Tokens counted on this node and not yet written, per (org, client, minute).
#[derive(Debug, Default)]
pub struct Accumulator {
    counts: Mutex<HashMap<AggKey, u64>>,
}

impl Accumulator {
    fn lock(&self) -> MutexGuard<'_, HashMap<AggKey, u64>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, key: AggKey, n: u64) {
        let mut m = self.lock();
        let v = m.entry(key).or_insert(0);
        *v = v.saturating_add(n);
    }

    fn take(&self) -> HashMap<AggKey, u64> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts counts that could not be written back, for the next flush.
    fn restore(&self, counts: HashMap<AggKey, u64>) {
        let mut m = self.lock();
        for (k, n) in counts {
            let v = m.entry(k).or_insert(0);
            *v = v.saturating_add(n);
        }
    }

    /// Events counted and not yet flushed.
    pub fn pending(&self) -> u64 {
        self.lock().values().fold(0, |a, n| a.saturating_add(*n))
    }
}

/// The minute (since the Unix epoch) `t` falls in.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(60)
}

/// The first instant of `minute`.
pub fn minute_start(minute: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(minute.checked_mul(60)?, 0)
}

/// The event id of an aggregate row: a UUIDv8 (RFC 9562 §5.8) from SHA-256 over the
/// length-prefixed key, so every node derives the same id and their upserts meet on the
/// primary key.
pub fn aggregate_event_id(
    event_type: &str,
    org_id: Option<Uuid>,
    client_id: &str,
    minute: i64,
) -> Uuid {
    let mut h = Sha256::new();
    for part in [
        event_type.as_bytes(),
        org_id
            .as_ref()
            .map(|o| o.as_bytes().as_slice())
            .unwrap_or(&[]),
        client_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(minute.to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Counts one token issued to `client_id` (for `org_id`, if any) at the clock's minute. Only
/// memory is touched; [`flush`] (or the task of [`spawn_flusher`]) writes it.
pub fn count_token_issued(id: &Identity, org_id: Option<Uuid>, client_id: &str) {
    let key = AggKey {
        org_id,
        client_id: client_id.chars().take(MAX_CLIENT_ID_CHARS).collect(),
        minute: minute_of(id.clock.now()),
    };
    id.metrics.add(key, 1);
}

/// Writes the counted tokens: one row per (org, client, minute) whose `event_count` is
/// increased by this node's count (created when absent), all in one transaction. Rows are
/// written in event-id order, so flushes from several nodes lock rows in the same order and
/// cannot deadlock. On failure the counts are kept for the next flush. Returns how many
/// events were written.
pub async fn flush(id: &Identity) -> Result<u64, IdentityError> {
    let counts = id.metrics.take();
    if counts.is_empty() {
        return Ok(0);
    }
    match write(id, &counts).await {
        Ok(n) => Ok(n),
        Err(e) => {
            id.metrics.restore(counts);
            Err(e)
        }
    }
}

async fn write(id: &Identity, counts: &HashMap<AggKey, u64>) -> Result<u64, IdentityError> {
    let mut rows = Vec::with_capacity(counts.len());
    for (k, n) in counts {
        let at = minute_start(k.minute)
            .ok_or_else(|| IdentityError::Internal("metrics minute out of range".into()))?;
        rows.push(MetricsEvent {
            event_id: aggregate_event_id(TOKENS_ISSUED, k.org_id, &k.client_id, k.minute),
            user_id: None,
            org_id: k.org_id,
            event_type: TOKENS_ISSUED.to_string(),
            event_timestamp: at,
            metadata: Json(json!({ "client_id": k.client_id })),
            day: at.date_naive(),
            event_count: i64::try_from(*n).unwrap_or(i64::MAX),
        });
    }
    rows.sort_by_key(|r| r.event_id);
    let mut tx = id.db.begin().await?;
    for r in &rows {
        store::metrics::upsert_add(&mut tx, r).await?;
    }
    tx.commit().await?;
    Ok(counts.values().fold(0, |a, n| a.saturating_add(*n)))
}

/// The background task that flushes every `every`, and once more when stopped.
pub struct Flusher {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Flusher {
    /// Flushes one last time, then ends the task (waits for both).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts flushing `id`'s counts every `every` (at least 100 ms). Dropping the [`Flusher`]
/// also ends the task after a last flush; [`Flusher::stop`] waits for it.
pub fn spawn_flusher(id: Identity, every: Duration) -> Flusher {
    let (tx, mut rx) = oneshot::channel::<()>();
    let every = every.max(Duration::from_millis(100));
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => flush_logged(&id).await,
                _ = &mut rx => {
                    flush_logged(&id).await;
                    break;
                }
            }
        }
    });
    Flusher {
        stop: Some(tx),
        task,
    }
}

async fn flush_logged(id: &Identity) {
    if let Err(e) = flush(id).await {
        tracing::warn!(error = %e, pending = id.metrics.pending(), "metrics: flush failed; will retry");
    }
}

// ---------------------------------------------------------------------------------------
// Reports

/// A report range must run forwards and span at most [`MAX_RANGE_DAYS`] days (both ends
/// included).
pub fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), IdentityError> {
    if from > to {
        return Err(IdentityError::invalid("to", "must not be before `from`"));
    }
    if (to - from).num_days() + 1 > MAX_RANGE_DAYS {
        return Err(IdentityError::invalid(
            "to",
            format!("the range may span at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(())
}

/// Every day of `from..=to`, with its value from `sparse` (by day) or 0.
pub fn dense(from: NaiveDate, to: NaiveDate, sparse: &[(NaiveDate, i64)]) -> Vec<(NaiveDate, u64)> {
    let by_day: HashMap<NaiveDate, i64> = sparse.iter().copied().collect();
    from.iter_days()
        .take_while(|d| *d <= to)
        .map(|d| {
            let n = by_day.get(&d).copied().unwrap_or(0);
            (d, u64::try_from(n).unwrap_or(0))
        })
        .collect()
}

fn range(event_type: &str, org_id: Option<Uuid>, from: NaiveDate, to: NaiveDate) -> DayRange<'_> {
    DayRange {
        event_type,
        org_id,
        from,
        to,
    }
}

/// Distinct users with a successful login, per UTC day of `from..=to` (every day listed,
/// zeros included). A login counts for the org it was made for (`LoginContext::org_id`);
/// `org_id: None` counts every login.
pub async fn daily_active_users(
    id: &Identity,
    org_id: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(NaiveDate, u64)>, IdentityError> {
    check_range(from, to)?;
    let mut c = id.db.conn().await?;
    let rows =
        store::metrics::distinct_users_per_day(&mut c, &range(LOGIN_SUCCEEDED, org_id, from, to))
            .await?;
    Ok(dense(from, to, &rows))
}

/// Successful and failed logins per UTC day of `from..=to`: `(day, successes, failures)`.
pub async fn login_counts(
    id: &Identity,
    org_id: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<(NaiveDate, u64, u64)>, IdentityError> {
    check_range(from, to)?;
    let mut c = id.db.conn().await?;
    let ok =
        store::metrics::totals_per_day(&mut c, &range(LOGIN_SUCCEEDED, org_id, from, to)).await?;
    let failed =
        store::metrics::totals_per_day(&mut c, &range(LOGIN_FAILED, org_id, from, to)).await?;
    Ok(dense(from, to, &ok)
        .into_iter()
        .zip(dense(from, to, &failed))
        .map(|((d, s), (_, f))| (d, s, f))
        .collect())
}

/// One day of [`daily_report`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DailyReport {
    pub day: NaiveDate,
    pub active_users: u64,
    pub logins_succeeded: u64,
    pub logins_failed: u64,
    pub signups: u64,
    /// Flushed counts only (a running node writes every [`FLUSH_INTERVAL`]).
    pub tokens_issued: u64,
}

/// Everything the management API reports per day, for one org or all.
pub async fn daily_report(
    id: &Identity,
    org_id: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<DailyReport>, IdentityError> {
    check_range(from, to)?;
    let mut c = id.db.conn().await?;
    let r = |t| range(t, org_id, from, to);
    let active = store::metrics::distinct_users_per_day(&mut c, &r(LOGIN_SUCCEEDED)).await?;
    let ok = store::metrics::totals_per_day(&mut c, &r(LOGIN_SUCCEEDED)).await?;
    let failed = store::metrics::totals_per_day(&mut c, &r(LOGIN_FAILED)).await?;
    let signups = store::metrics::totals_per_day(&mut c, &r(USER_SIGNED_UP)).await?;
    let tokens = store::metrics::totals_per_day(&mut c, &r(TOKENS_ISSUED)).await?;
    let cols = [&active, &ok, &failed, &signups, &tokens].map(|s| dense(from, to, s));
    Ok((0..cols[0].len())
        .map(|i| DailyReport {
            day: cols[0][i].0,
            active_users: cols[0][i].1,
            logins_succeeded: cols[1][i].1,
            logins_failed: cols[2][i].1,
            signups: cols[3][i].1,
            tokens_issued: cols[4][i].1,
        })
        .collect())
}

/// The rows of one event type, for one org or all, in `from..=to`, oldest first.
pub async fn list_events(
    id: &Identity,
    event_type: &str,
    org_id: Option<Uuid>,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<MetricsEvent>, IdentityError> {
    check_range(from, to)?;
    let mut c = id.db.conn().await?;
    Ok(store::metrics::list(&mut c, &range(event_type, org_id, from, to)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn ranges_run_forwards_and_span_at_most_366_days() {
        assert!(check_range(d(2026, 1, 1), d(2026, 1, 1)).is_ok());
        // 2028 is a leap year: Jan 1 ..= Dec 31 is 366 days.
        assert!(check_range(d(2028, 1, 1), d(2028, 12, 31)).is_ok());
        assert!(check_range(d(2026, 1, 1), d(2027, 1, 1)).is_ok());
        for (from, to) in [
            (d(2026, 1, 2), d(2026, 1, 1)),
            (d(2026, 1, 1), d(2027, 1, 2)),
        ] {
            let e = check_range(from, to).unwrap_err();
            assert!(
                matches!(e, IdentityError::Invalid { field: "to", .. }),
                "{e:?}"
            );
        }
    }

    #[test]
    fn dense_lists_every_day_with_zeros() {
        let got = dense(
            d(2026, 2, 27),
            d(2026, 3, 2),
            &[(d(2026, 2, 28), 4), (d(2026, 3, 2), 1)],
        );
        assert_eq!(
            got,
            vec![
                (d(2026, 2, 27), 0),
                (d(2026, 2, 28), 4),
                (d(2026, 3, 1), 0),
                (d(2026, 3, 2), 1)
            ]
        );
    }

    #[test]
    fn minutes_bucket_by_utc_minute() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 59).unwrap();
        let m = minute_of(t);
        assert_eq!(minute_of(t - chrono::Duration::seconds(59)), m);
        assert_eq!(minute_of(t + chrono::Duration::seconds(1)), m + 1);
        assert_eq!(
            minute_start(m).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 0).unwrap()
        );
        assert_eq!(minute_of(Utc.timestamp_opt(-1, 0).unwrap()), -1);
        assert!(minute_start(i64::MAX).is_none());
    }

    #[test]
    fn aggregate_ids_are_stable_and_distinct_per_key() {
        let org = Uuid::from_u128(7);
        let a = aggregate_event_id(TOKENS_ISSUED, Some(org), "app", 100);
        assert_eq!(a, aggregate_event_id(TOKENS_ISSUED, Some(org), "app", 100));
        assert_eq!(a.get_version_num(), 8);
        let others = [
            aggregate_event_id(TOKENS_ISSUED, None, "app", 100),
            aggregate_event_id(TOKENS_ISSUED, Some(org), "app2", 100),
            aggregate_event_id(TOKENS_ISSUED, Some(org), "app", 101),
            aggregate_event_id(LOGIN_FAILED, Some(org), "app", 100),
            // Length prefixes keep field boundaries apart.
            aggregate_event_id("token.issue", Some(org), "dapp", 100),
        ];
        for o in others {
            assert_ne!(a, o);
        }
    }

    #[test]
    fn only_refusals_count_as_failures() {
        assert!(is_login_failure(&IdentityError::InvalidCredentials));
        assert!(is_login_failure(&IdentityError::AccountLocked {
            until: None
        }));
        assert!(is_login_failure(&IdentityError::MfaCodeInvalid));
        assert!(!is_login_failure(&IdentityError::Internal("x".into())));
        assert_eq!(
            second_factor_event::<()>(&Err(IdentityError::MfaCodeReplayed)),
            Some(false)
        );
        assert_eq!(second_factor_event(&Ok(())), Some(true));
        assert_eq!(
            password_step_event(&Err(IdentityError::Internal("x".into()))),
            None
        );
        assert_eq!(
            password_step_event(&Err(IdentityError::InvalidCredentials)),
            Some((false, None))
        );
    }

    #[test]
    fn accumulator_takes_and_restores() {
        let acc = Accumulator::default();
        let k = |m| AggKey {
            org_id: None,
            client_id: "c".into(),
            minute: m,
        };
        acc.add(k(1), 2);
        acc.add(k(1), 3);
        acc.add(k(2), 1);
        assert_eq!(acc.pending(), 6);
        let taken = acc.take();
        assert_eq!(acc.pending(), 0);
        assert_eq!(taken[&k(1)], 5);
        acc.add(k(1), 1);
        acc.restore(taken);
        assert_eq!(acc.pending(), 7);
        assert_eq!(acc.take()[&k(1)], 6);
    }
}
