//! Operations endpoints: liveness, readiness, and the JSON 404/405 fallbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::problem::Problem;
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
    let applied = app.flags.cache().applied();
    let namespaces = app.flags.cache().namespaces();
    let probe = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        app.flags.store_revision(),
    )
    .await;
    match probe {
        Ok(Ok(store_revision)) => Json(json!({
            "status": "ready",
            "revision": applied,
            "storeRevision": store_revision,
            "lag": store_revision.saturating_sub(applied),
            "namespaces": namespaces,
        }))
        .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "degraded",
                "revision": applied,
                "store": "unreachable",
                "namespaces": namespaces,
            })),
        )
            .into_response(),
    }
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
