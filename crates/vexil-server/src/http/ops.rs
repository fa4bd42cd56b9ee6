//! Operations endpoints: liveness, readiness, and the JSON 404/405 fallbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::Caller;
use super::problem::{ApiError, Problem};
use super::schema;
use crate::AppState;

/// Liveness
///
/// Alive: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process answers", body = schema::Health))
)]
pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Readiness
///
/// Ready: the snapshot is loaded (it is before the listener opens) and the store answers.
/// Reports the revision applied, the store's revision and how far behind the snapshot is.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready", body = schema::Readiness),
        (status = 503, description = "Degraded: the store does not answer", body = schema::Readiness),
    )
)]
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let cache = app.flags.cache();
    let applied = cache.applied();
    let namespaces = cache.namespaces().len();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    #[expect(
        clippy::cast_precision_loss,
        reason = "milliseconds as fractional seconds"
    )]
    let staleness = now.saturating_sub(cache.synced_at()).max(0) as f64 / 1000.0;
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.flags.store_revision(),
    )
    .await;
    let mut body = match &probe {
        Ok(Ok(store_revision)) => json!({
            "status": "ready",
            "revision": applied,
            "storeRevision": store_revision,
            "lag": store_revision.saturating_sub(applied),
            "stalenessSeconds": staleness,
            "namespaces": namespaces,
        }),
        _ => json!({
            "status": "degraded",
            "revision": applied,
            "store": "unreachable",
            "stalenessSeconds": staleness,
            "namespaces": namespaces,
        }),
    };
    // The relay's state is reported but does not make the replica unready: evaluation and
    // flag writes work while audit events wait in the outbox.
    if let Some(relay) = app.flags.audit_relay() {
        body["auditRelay"] = json!({"healthy": relay.healthy, "pending": relay.pending});
    }
    let status = match probe {
        Ok(Ok(_)) => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics
///
/// The replica's state in the Prometheus text format: the revision its snapshot has applied,
/// whether the store answers and at which revision, how stale the snapshot may be (seconds
/// since it last matched the store), and the identity revision. Needs `flag:read` in `*` (a
/// `viewer` token for the scraper) unless `VEXIL_METRICS_PUBLIC=true`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
    )
)]
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
) -> Result<Response, ApiError> {
    if !app.metrics_public {
        let Caller(p) = caller?;
        p.authorize(vexil_service::Permission::FlagRead, "*")?;
    }
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;

    let cache = app.flags.cache();
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.flags.store_revision(),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut registry = Registry::with_prefix("vexil");
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let g = Gauge::<i64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let applied = i64::try_from(cache.applied()).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "snapshot_revision",
        "Store revision the evaluation snapshot has applied",
        applied,
    );
    let namespaces = i64::try_from(cache.namespaces().len()).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "snapshot_namespaces",
        "Namespaces in the evaluation snapshot",
        namespaces,
    );
    match probe {
        Ok(Ok(rev)) => {
            gauge(
                &mut registry,
                "store_up",
                "Whether the store answered this scrape",
                1,
            );
            let rev = i64::try_from(rev).unwrap_or(i64::MAX);
            gauge(
                &mut registry,
                "store_revision",
                "The store's latest revision",
                rev,
            );
            gauge(
                &mut registry,
                "snapshot_lag_revisions",
                "Revisions the snapshot is behind the store",
                rev.saturating_sub(applied).max(0),
            );
        }
        _ => gauge(
            &mut registry,
            "store_up",
            "Whether the store answered this scrape",
            0,
        ),
    }
    let stale = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    #[expect(
        clippy::cast_precision_loss,
        reason = "milliseconds as fractional seconds"
    )]
    stale.set(now.saturating_sub(cache.synced_at()).max(0) as f64 / 1000.0);
    registry.register(
        "snapshot_staleness_seconds",
        "Seconds since the snapshot last matched the store",
        stale,
    );
    if let Some(relay) = app.flags.audit_relay() {
        gauge(
            &mut registry,
            "audit_relay_up",
            "Whether the audit relay last reached PostgreSQL (distributed mode)",
            i64::from(relay.healthy),
        );
        gauge(
            &mut registry,
            "audit_outbox_pending",
            "Commits whose audit events wait in the etcd outbox (distributed mode)",
            i64::try_from(relay.pending).unwrap_or(i64::MAX),
        );
    }
    let identity = i64::try_from(app.identity.applied()).unwrap_or(i64::MAX);
    gauge(
        &mut registry,
        "identity_revision",
        "Identity revision (users, roles, bindings, tokens) applied",
        identity,
    );
    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        return Err(ApiError(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the metrics could not be encoded",
        )));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// 404 for unknown paths, as problem+json.
pub async fn not_found(uri: Uri) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!("no route for {}", uri.path()),
    )
    .into_response()
}

/// 405 for known paths with another method, as problem+json.
pub async fn method_not_allowed() -> Response {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not accept that method",
    )
    .into_response()
}
