//! OpenID Connect Back-Channel Logout 1.0 delivery. Whenever a browser session ends, by any
//! path, a database trigger enqueues one notice per client that holds a grant made from it
//! and registered a `backchannel_logout_uri` (migration 0006). Every node runs [`spawn`]:
//! it claims due notices (one statement, safe with several nodes on one database), POSTs
//! a freshly signed logout token for each, and records delivery or schedules a retry
//! ([`backoff`]) until `oidc.backchannel_logout_max_attempts`, then abandons the notice.
//! Delivery is at least once: a node that dies after sending but before recording lets
//! the lease run out, and the token is sent again (each with a fresh `jti`).
use super::Provider;
use crate::identity::{Identity, IdentityError};
use crate::store::oidc::{LogoutNotice, NoticeOutcome};
use crate::store::{self};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How often a node looks for due notices when nothing pokes it.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Notices claimed (and sent concurrently) per round.
pub const BATCH: u32 = 32;
/// A claimed notice is due again after this if its node never reports: longer than a send
/// (timeout 5 s) plus signing and recording.
pub const LEASE: chrono::Duration = chrono::Duration::seconds(60);
/// Timeout of one POST to a client (§2.5 leaves it to the OP).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Delivered and abandoned notices are kept this long (for inspection), then purged.
pub const RETENTION: chrono::Duration = chrono::Duration::days(7);
/// How often a node purges finished notices.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// The wait after `failed` failed attempts (1-based): 10 s, 30 s, 2 min, 10 min, then
/// hourly.
pub fn backoff(failed: u32) -> chrono::Duration {
    const STEPS: [i64; 5] = [10, 30, 120, 600, 3600];
    let i = (failed.max(1) - 1) as usize;
    chrono::Duration::seconds(STEPS[i.min(STEPS.len() - 1)])
}

/// What becomes of a notice whose attempt number `attempts` failed with `error` at `now`:
/// a retry after [`backoff`], or abandonment once `max_attempts` have been made.
pub fn after_failure(
    attempts: u32,
    max_attempts: u32,
    now: DateTime<Utc>,
    error: String,
) -> NoticeOutcome {
    if attempts >= max_attempts {
        NoticeOutcome::Abandoned(now, error)
    } else {
        NoticeOutcome::Retry(now + backoff(attempts), error)
    }
}

/// Whether a client's answer means the logout token was accepted: §2.8 says 200 OK, and
/// notes that frameworks may answer an empty 200 as 204 No Content.
pub fn accepted(status: u16) -> bool {
    status == 200 || status == 204
}

/// The HTTP client logout tokens are sent with: 5 s timeout, redirects not followed (a
/// redirect is a failed attempt).
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(SEND_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    pub retried: usize,
    pub abandoned: usize,
}

/// One round at the clock's `now`: claims up to [`BATCH`] due notices and sends them
/// concurrently. Each outcome is recorded as it comes.
pub async fn run_once(
    id: &Identity,
    oidc: &Arc<Provider>,
    http: &reqwest::Client,
) -> Result<Round, IdentityError> {
    let now = id.clock.now();
    let mut c = id.db.conn().await?;
    let claimed = store::oidc::claim_logout_notices(&mut c, now, now + LEASE, BATCH).await?;
    drop(c);
    let mut round = Round {
        claimed: claimed.len(),
        ..Round::default()
    };
    let mut sends = tokio::task::JoinSet::new();
    for notice in claimed {
        let (id, oidc, http) = (id.clone(), Arc::clone(oidc), http.clone());
        sends.spawn(async move { deliver(&id, &oidc, &http, notice).await });
    }
    while let Some(done) = sends.join_next().await {
        match done {
            Ok(Ok(NoticeOutcome::Delivered(_))) => round.delivered += 1,
            Ok(Ok(NoticeOutcome::Retry(..))) => round.retried += 1,
            Ok(Ok(NoticeOutcome::Abandoned(..))) => round.abandoned += 1,
            // Not recorded: the lease runs out and the notice is tried again.
            Ok(Err(e)) => tracing::warn!(error = %e, "recording a back-channel logout failed"),
            Err(e) => tracing::warn!(error = %e, "a back-channel logout task failed"),
        }
    }
    Ok(round)
}

/// Sends one claimed notice and records the outcome.
async fn deliver(
    id: &Identity,
    oidc: &Provider,
    http: &reqwest::Client,
    n: LogoutNotice,
) -> Result<NoticeOutcome, IdentityError> {
    let attempts = u32::try_from(n.attempts).unwrap_or(u32::MAX);
    let max = id.config.oidc.backchannel_logout_max_attempts;
    let mut c = id.db.conn().await?;
    // Looked up now: a client disabled, deleted or without a URI since is owed nothing.
    let client = store::oidc::get_client(&mut c, &n.client_id).await?;
    drop(c);
    let target = client
        .filter(|k| k.enabled)
        .and_then(|k| k.backchannel_logout_uri.clone().map(|uri| (k, uri)));
    let outcome = match target {
        None => NoticeOutcome::Abandoned(
            id.clock.now(),
            "client deleted, disabled or without backchannel_logout_uri".into(),
        ),
        Some((client, uri)) => match send(id, oidc, http, &client, &uri, &n).await {
            Ok(()) => NoticeOutcome::Delivered(id.clock.now()),
            Err(why) => after_failure(attempts, max, id.clock.now(), why),
        },
    };
    match &outcome {
        NoticeOutcome::Delivered(_) => {}
        NoticeOutcome::Retry(at, why) => tracing::info!(
            client_id = %n.client_id, attempts, next_attempt_at = %at, error = %why,
            "back-channel logout failed; will retry"
        ),
        NoticeOutcome::Abandoned(_, why) => tracing::warn!(
            client_id = %n.client_id, sid = %n.browser_session_id, attempts, error = %why,
            "back-channel logout abandoned"
        ),
    }
    let mut c = id.db.conn().await?;
    store::oidc::finish_logout_attempt(&mut c, n.notice_id, n.attempts, &outcome).await?;
    Ok(outcome)
}

/// POSTs `logout_token=<JWT>` (§2.5) signed with the client's ID token algorithm; the
/// error, short and safe to store, when it was not accepted.
async fn send(
    id: &Identity,
    oidc: &Provider,
    http: &reqwest::Client,
    client: &store::oidc::OidcClient,
    uri: &str,
    n: &LogoutNotice,
) -> Result<(), String> {
    let key = oidc
        .keyring
        .active_for(id, &client.id_token_signed_response_alg)
        .await
        .map_err(|e| format!("no signing key: {e}"))?;
    let claims = super::claims::logout_token_claims(
        &oidc.issuer,
        &client.client_id,
        n.user_id,
        n.browser_session_id,
        Uuid::now_v7(),
        id.clock.now(),
    );
    let token = super::jwt::sign(&key, "logout+jwt", claims)
        .map_err(|e| format!("cannot sign: {}", e.description()))?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", &token)
        .finish();
    let resp = http
        .post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| short(&format!("request failed: {e}")))?;
    let status = resp.status().as_u16();
    if accepted(status) {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

/// Runs [`run_once`] at start, every [`POLL_INTERVAL`], at once when sessions end on this
/// node (`Identity::sessions_ended`), and again straight away after a full batch. Purges
/// finished notices every [`PURGE_INTERVAL`].
pub fn spawn(id: Identity, oidc: Arc<Provider>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let http = match http_client() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "back-channel logout: no HTTP client; not sending");
                return;
            }
        };
        let mut purged_at: Option<tokio::time::Instant> = None;
        loop {
            if purged_at.is_none_or(|t| t.elapsed() >= PURGE_INTERVAL) {
                purged_at = Some(tokio::time::Instant::now());
                if let Err(e) = purge(&id).await {
                    tracing::warn!(error = %e, "purging logout notices failed");
                }
            }
            let full = match run_once(&id, &oidc, &http).await {
                Ok(r) => r.claimed >= BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "back-channel logout round failed");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = id.sessions_ended.notified() => {}
            }
        }
    })
}

/// Forgets notices delivered or abandoned more than [`RETENTION`] ago; returns how many.
pub async fn purge(id: &Identity) -> Result<u64, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::oidc::purge_logout_notices(&mut c, id.clock.now() - RETENTION).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays_hourly() {
        let s: Vec<i64> = (1..=8).map(|n| backoff(n).num_seconds()).collect();
        assert_eq!(s, [10, 30, 120, 600, 3600, 3600, 3600, 3600]);
        assert_eq!(backoff(0).num_seconds(), 10);
        assert_eq!(backoff(u32::MAX).num_seconds(), 3600);
    }

    #[test]
    fn failures_retry_until_the_last_attempt() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(
            after_failure(1, 3, now, "HTTP 500".into()),
            NoticeOutcome::Retry(now + chrono::Duration::seconds(10), "HTTP 500".into())
        );
        assert_eq!(
            after_failure(2, 3, now, "x".into()),
            NoticeOutcome::Retry(now + chrono::Duration::seconds(30), "x".into())
        );
        assert_eq!(
            after_failure(3, 3, now, "x".into()),
            NoticeOutcome::Abandoned(now, "x".into())
        );
        assert_eq!(
            after_failure(1, 1, now, "x".into()),
            NoticeOutcome::Abandoned(now, "x".into())
        );
    }

    #[test]
    fn only_200_and_204_are_accepted() {
        assert!(accepted(200) && accepted(204));
        for s in [201, 202, 301, 302, 400, 404, 500, 503] {
            assert!(!accepted(s), "{s}");
        }
    }
}
