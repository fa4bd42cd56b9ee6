//! `vexil-server`: start-up is explicit — configuration, telemetry, stores, services, servers —
//! and shutdown on SIGINT/SIGTERM drains in-flight requests for a bounded time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use vexil_core::FractionalVersion;
use vexil_server::config::{Config, Fractional};
use vexil_server::{AppState, serve_http, telemetry};
use vexil_service::{FlagService, ImportMode, Principal, ServiceOptions, SnapshotCache, Store};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. Configuration and telemetry.
    let config = Config::parse();
    telemetry::init(config.log_format);

    // 2. Stores: DB_URL alone selects the postgres mode, neither it nor ETCD_ENDPOINTS the
    //    embedded SQLite store.
    if config.etcd_endpoints.is_some() {
        bail!(
            "ETCD_ENDPOINTS selects the distributed mode, which this build does not provide yet; unset it to use DB_URL (the postgres mode) or the embedded SQLite store"
        );
    }
    let store: Arc<dyn Store> = if let Some(url) = &config.db_url {
        // The URL may carry a password: it is never logged.
        let store = vexil_store::postgres::PostgresStore::connect(url)
            .await
            .context("connecting to the PostgreSQL store (DB_URL)")?;
        tracing::info!("PostgreSQL store connected");
        Arc::new(store)
    } else {
        let store = vexil_store::sqlite::SqliteStore::open(&config.data)
            .await
            .with_context(|| format!("opening the SQLite store at {}", config.data.display()))?;
        tracing::info!(path = %config.data.display(), "embedded SQLite store open");
        Arc::new(store)
    };

    // 3. Services: the snapshot is loaded before any listener opens, so readiness is honest.
    let fractional = match config.fractional {
        Fractional::V2 => FractionalVersion::V2,
        Fractional::V3 => FractionalVersion::V3,
    };
    let cache = SnapshotCache::load(&*store, fractional)
        .await
        .context("loading the evaluation snapshot")?;
    let flags = FlagService::new(store.clone(), cache.clone(), ServiceOptions::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = {
        let mut rx = stop_rx.clone();
        tokio::spawn(
            cache
                .clone()
                .follow(store.clone(), Duration::from_secs(1), async move {
                    let _ = rx.wait_for(|s| *s).await;
                }),
        )
    };
    let system = Principal::system();
    let pass = system.authorize(
        vexil_service::Permission::FlagWrite,
        vexil_service::DEFAULT_NAMESPACE,
    )?;
    flags
        .ensure_default_namespace(&pass)
        .await
        .context("creating the default namespace")?;
    if let Some(path) = &config.import {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        let out = flags
            .import(
                &pass,
                vexil_service::DEFAULT_NAMESPACE,
                &text,
                yaml,
                ImportMode::Merge,
                false,
            )
            .await
            .with_context(|| format!("importing {}", path.display()))?;
        tracing::info!(file = %path.display(), added = out.diff.added.len(), changed = out.diff.changed.len(), warnings = out.warnings.len(), "imported flags");
    }

    // 4. Servers: gRPC first, so both addresses are logged before HTTP reports it listens.
    let state = Arc::new(AppState { flags });
    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding {}", config.grpc_addr))?;
    tracing::info!(addr = %grpc_listener.local_addr()?, "gRPC listening");
    let grpc = {
        let mut rx = stop_rx.clone();
        let state = state.clone();
        tokio::spawn(vexil_server::grpc::serve(
            grpc_listener,
            state,
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, revision = cache.applied(), "HTTP listening");
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining");
        let _ = stop_tx.send(true);
    };
    serve_http(
        listener,
        state,
        shutdown,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await?;
    follower.abort();
    match tokio::time::timeout(Duration::from_secs(config.shutdown_grace_secs), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
        Err(_) => tracing::warn!("gRPC streams did not drain in time"),
        Ok(_) => {}
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
