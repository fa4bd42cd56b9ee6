//! `vexil-server` owns Vexil's transports and process: configuration, telemetry, start-up and
//! shutdown, and the HTTP adapters (REST admin API, OFREP, operations).
//!
//! Handlers are adapters: parse, authorize, call the service, convert. Business rules live in
//! `vexil-service`; storage is reached only through it. This crate must not use a store type
//! except to construct the backend at start-up.

pub mod config;
pub mod grpc;
pub mod http;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use vexil_service::{AuditService, ConfigService, FlagService, IdentityService};

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Flags, segments, namespaces, evaluation.
    pub flags: FlagService,
    /// Authentication, users, roles, bindings, tokens.
    pub identity: IdentityService,
    /// The audit log: query, export, verification, flag history.
    pub audit: AuditService,
    /// Dynamic configuration entries.
    pub configs: ConfigService,
    /// Serve `/metrics` without credentials (`VEXIL_METRICS_PUBLIC`).
    pub metrics_public: bool,
    /// How long a WebSocket watcher may leave a frame unread before it is closed
    /// (`VEXIL_WATCH_SEND_TIMEOUT_MS`).
    pub watch_send_timeout: std::time::Duration,
}

/// Serves HTTP on `listener` until `shutdown` resolves, then stops accepting, drains in-flight
/// requests for at most `grace`, and returns.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve_http(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        std::net::SocketAddr,
    >(http::router(state));
    // `axum::serve` leaves Nagle's algorithm on. A response whose head and body go out in separate
    // writes then waits for the client's delayed ACK (~40 ms), as the gRPC listener did before it
    // set TCP_NODELAY. A socket that refuses the option still serves, just possibly slower.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an HTTP connection");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    let deadline = async move {
        if rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = server.into_future() => r,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not drain in time; exiting");
            Ok(())
        }
    }
}
