//! The HTTP side: the REST admin API, OFREP and the operations endpoints on one axum router.

pub mod admin;
pub mod extract;
pub mod ofrep;
pub mod ops;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::AppState;

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The full router. Every route of DESIGN.md §4 that exists so far is listed here; the
/// OpenAPI document is generated from the same handlers.
pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let api = Router::new()
        .route(
            "/namespaces",
            get(admin::list_namespaces).post(admin::create_namespace),
        )
        .route(
            "/namespaces/{ns}",
            get(admin::get_namespace)
                .put(admin::put_namespace)
                .delete(admin::delete_namespace),
        )
        .route(
            "/namespaces/{ns}/flags",
            get(admin::list_flags).post(admin::create_flag),
        )
        .route(
            "/namespaces/{ns}/flags/{key}",
            get(admin::get_flag)
                .put(admin::put_flag)
                .patch(admin::patch_flag)
                .delete(admin::delete_flag),
        )
        .route(
            "/namespaces/{ns}/flags/{key}/enable",
            post(admin::enable_flag),
        )
        .route(
            "/namespaces/{ns}/flags/{key}/disable",
            post(admin::disable_flag),
        )
        .route(
            "/namespaces/{ns}/segments",
            get(admin::list_segments).post(admin::create_segment),
        )
        .route(
            "/namespaces/{ns}/segments/{key}",
            get(admin::get_segment)
                .put(admin::put_segment)
                .delete(admin::delete_segment),
        )
        .route("/namespaces/{ns}/export", get(admin::export))
        .route("/namespaces/{ns}/import", post(admin::import))
        .route("/namespaces/{ns}/evaluate", post(admin::evaluate))
        .route("/audit", get(admin::list_audit));
    let ofrep = Router::new()
        .route("/evaluate/flags/{key}", post(ofrep::evaluate_flag))
        .route("/evaluate/flags", post(ofrep::evaluate_all));
    Router::new()
        .nest("/api/v1", api)
        .nest("/ofrep/v1", ofrep)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)))
        .with_state(state)
}
