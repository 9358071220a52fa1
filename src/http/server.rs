//! Serving with graceful shutdown.
use axum::Router;
use std::future::{Future, IntoFuture};
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves until `shutdown` resolves; then stops accepting, lets in-flight requests finish
/// and returns — or gives up on them after `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = started_tx.send(());
    };
    // Peer addresses reach handlers as `ConnectInfo` (audit rows record the client IP).
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, service).with_graceful_shutdown(signal);
    tokio::select! {
        r = server.into_future() => r,
        () = async {
            match started_rx.await {
                Ok(()) => tokio::time::sleep(grace).await,
                Err(_) => std::future::pending::<()>().await,
            }
        } => {
            tracing::warn!(?grace, "shutdown timeout: abandoning in-flight requests");
            Ok(())
        }
    }
}
