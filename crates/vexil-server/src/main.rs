//! `vexil-server`: start-up is explicit — configuration, telemetry, stores, services, servers —
//! and shutdown on SIGINT/SIGTERM drains in-flight requests for a bounded time.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use vexil_core::FractionalVersion;
use vexil_server::config::{Config, Fractional};
use vexil_server::{AppState, serve_http, telemetry};
use vexil_service::{
    AuditService, AuthConfig, ConfigService, FlagService, IdentityService, ImportMode, Principal,
    ServiceOptions, SnapshotCache, Store,
};
use vexil_store::IdentityStore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. Configuration and telemetry.
    let config = Config::parse();
    telemetry::init(config.log_format);

    // 2. Stores: DB_URL and ETCD_ENDPOINTS select the distributed mode, DB_URL alone the
    //    postgres mode, neither the embedded SQLite store.
    let jwt_secret = jwt_secret(&config)?;
    let (store, identity_store): (Arc<dyn Store>, Arc<dyn IdentityStore>) = match (
        &config.db_url,
        &config.etcd_endpoints,
    ) {
        (Some(url), Some(endpoints)) => {
            let endpoints: Vec<String> = endpoints
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            if endpoints.is_empty() {
                bail!("ETCD_ENDPOINTS names no endpoint");
            }
            let store = Arc::new(
                vexil_store::distributed::DistributedStore::connect(
                    &endpoints,
                    &config.etcd_prefix,
                    url,
                )
                .await
                .context("connecting to etcd (ETCD_ENDPOINTS) and PostgreSQL (DB_URL)")?,
            );
            store
                .etcd()
                .set_change_retention(config.etcd_change_retention);
            tracing::info!(etcd_members = endpoints.len(), prefix = %config.etcd_prefix, "distributed mode: flag state in etcd, audit and identity in PostgreSQL");
            (store.clone(), store)
        }
        (None, Some(_)) => bail!(
            "ETCD_ENDPOINTS needs DB_URL too: the distributed mode keeps flag state in etcd and audit, users and tokens in PostgreSQL"
        ),
        (Some(url), None) => {
            // The URL may carry a password: it is never logged.
            let store = Arc::new(
                vexil_store::postgres::PostgresStore::connect(url)
                    .await
                    .context("connecting to the PostgreSQL store (DB_URL)")?,
            );
            tracing::info!("PostgreSQL store connected");
            (store.clone(), store)
        }
        (None, None) => {
            let store = Arc::new(
                vexil_store::sqlite::SqliteStore::open(&config.data)
                    .await
                    .with_context(|| {
                        format!("opening the SQLite store at {}", config.data.display())
                    })?,
            );
            tracing::info!(path = %config.data.display(), "embedded SQLite store open");
            (store.clone(), store)
        }
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

    let mut auth =
        AuthConfig::new(jwt_secret.into_bytes()).map_err(|e| anyhow::anyhow!("JWT_SECRET: {e}"))?;
    auth.session_ttl = Duration::from_secs(config.session_ttl_secs);
    let identity = IdentityService::load(identity_store, cache.clone(), auth)
        .await
        .context("loading users, roles and tokens")?;
    if let Some(generated) = identity
        .bootstrap_admin(config.admin_password.as_deref())
        .await
        .context("creating the admin user")?
    {
        // Printed once, on the terminal, outside the structured log, so log shipping never
        // carries it.
        eprintln!(
            "\n  Vexil created the user `admin` with the generated password:\n\n      {generated}\n\n  It is shown only this once. Change it with PATCH /api/v1/users/admin.\n"
        );
        tracing::info!("created the admin user with a generated password (shown once on stderr)");
    }
    let identity_follower = {
        let mut rx = stop_rx.clone();
        tokio::spawn(identity.clone().follow(
            Duration::from_millis(config.identity_poll_ms.max(10)),
            async move {
                let _ = rx.wait_for(|s| *s).await;
            },
        ))
    };

    // 4. Servers: gRPC first, so both addresses are logged before HTTP reports it listens.
    let state = Arc::new(AppState {
        flags,
        identity,
        audit: AuditService::new(store.clone()),
        configs: ConfigService::new(store.clone()),
        metrics_public: config.metrics_public,
        watch_send_timeout: Duration::from_millis(config.watch_send_timeout_ms.max(1)),
    });
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
    identity_follower.abort();
    match tokio::time::timeout(Duration::from_secs(config.shutdown_grace_secs), grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
        Err(_) => tracing::warn!("gRPC streams did not drain in time"),
        Ok(_) => {}
    }
    tracing::info!("stopped");
    Ok(())
}

/// `JWT_SECRET`, or in the embedded mode the secret kept beside the SQLite file (generated,
/// mode 0600, on first start). The replicated modes must share one secret, so there it is
/// required.
fn jwt_secret(config: &Config) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    if let Some(s) = &config.jwt_secret {
        if s.len() < vexil_service::MIN_JWT_SECRET_LEN {
            bail!(
                "JWT_SECRET is {} bytes long; it must be at least {} bytes (e.g. `openssl rand -hex 32`)",
                s.len(),
                vexil_service::MIN_JWT_SECRET_LEN
            );
        }
        return Ok(s.clone());
    }
    if config.db_url.is_some() {
        bail!(
            "JWT_SECRET is required with DB_URL: every replica must sign and check sessions with the same key (at least 32 bytes, e.g. `openssl rand -hex 32`)"
        );
    }
    let mut name = config.data.file_name().unwrap_or_default().to_os_string();
    name.push(".jwt-secret");
    let path = config.data.with_file_name(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
                tracing::warn!(path = %path.display(), "the JWT secret file was readable by others; set its mode to 0600");
            }
            let s = s.trim().to_owned();
            if s.len() < vexil_service::MIN_JWT_SECRET_LEN {
                bail!(
                    "{} holds a secret shorter than 32 bytes; delete it to generate a new one",
                    path.display()
                );
            }
            Ok(s)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = vexil_service::generate_jwt_secret()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(secret.as_bytes())?;
            f.sync_all()?;
            tracing::info!(path = %path.display(), "generated a JWT secret (JWT_SECRET is unset) and kept it, mode 0600");
            Ok(secret)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
