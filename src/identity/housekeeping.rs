//! Periodic upkeep every node runs: expired email-verification and reset tokens are
//! deleted, and impersonations that ran out without being ended are closed (their log row
//! gets `ended_at`, with an audit row). Both are idempotent, so several nodes may run them.
use super::Identity;
use std::time::Duration;

pub const INTERVAL: Duration = Duration::from_secs(600);

/// One round; returns (tokens purged, impersonations closed).
pub async fn run_once(id: &Identity) -> (u64, u64) {
    let purged = super::tokens::purge_expired(id).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "purging expired tokens failed");
        0
    });
    let closed = super::impersonation::close_expired(id)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "closing expired impersonations failed");
            0
        });
    (purged, closed)
}

/// Runs [`run_once`] at start and then every `every`.
pub fn spawn(id: Identity, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            run_once(&id).await;
        }
    })
}
