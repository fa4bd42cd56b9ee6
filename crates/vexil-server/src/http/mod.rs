//! The HTTP side: the REST admin API, OFREP, the operations endpoints, the OpenAPI document
//! and Swagger UI on one axum router.

pub mod admin;
pub mod audit;
pub mod configs;
pub mod docs;
pub mod extract;
pub mod identity;
pub mod middleware;
pub mod ofrep;
pub mod ops;
pub mod problem;
pub mod schema;
pub mod watch;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use tower::ServiceBuilder;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use middleware::{RefuseOversizedLayer, RequestLayer, SequentialRequestId};

/// Request bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Every route, with its OpenAPI operation: the one list of routes. Each `routes!` entry
/// registers the handlers' methods on the path their `#[utoipa::path]` names *and* adds those
/// operations to the document, so a route cannot be served without being documented. Add routes
/// here only through `.routes(routes!(...))`, never through `.route(...)`.
pub fn api() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        // Authentication and RBAC (DESIGN.md §4, §6).
        .routes(routes!(identity::login))
        .routes(routes!(identity::list_tokens, identity::create_token))
        .routes(routes!(identity::revoke_token))
        .routes(routes!(identity::list_users, identity::create_user))
        .routes(routes!(
            identity::get_user,
            identity::update_user,
            identity::delete_user
        ))
        .routes(routes!(identity::list_roles, identity::create_role))
        .routes(routes!(
            identity::get_role,
            identity::put_role,
            identity::delete_role
        ))
        .routes(routes!(identity::list_bindings, identity::create_binding))
        .routes(routes!(identity::delete_binding))
        // REST admin API (DESIGN.md §4).
        .routes(routes!(admin::list_namespaces, admin::create_namespace))
        .routes(routes!(
            admin::get_namespace,
            admin::put_namespace,
            admin::delete_namespace
        ))
        .routes(routes!(admin::list_flags, admin::create_flag))
        .routes(routes!(
            admin::get_flag,
            admin::put_flag,
            admin::patch_flag,
            admin::delete_flag
        ))
        .routes(routes!(audit::flag_history))
        .routes(routes!(admin::enable_flag))
        .routes(routes!(admin::disable_flag))
        .routes(routes!(admin::list_segments, admin::create_segment))
        .routes(routes!(
            admin::get_segment,
            admin::put_segment,
            admin::delete_segment
        ))
        .routes(routes!(configs::list_configs))
        .routes(routes!(
            configs::get_config,
            configs::put_config,
            configs::delete_config
        ))
        .routes(routes!(configs::config_versions))
        .routes(routes!(configs::rollback_config))
        .routes(routes!(admin::export))
        .routes(routes!(admin::import))
        .routes(routes!(admin::evaluate))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::export_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(watch::watch))
        // OFREP.
        .routes(routes!(ofrep::evaluate_flag))
        .routes(routes!(ofrep::evaluate_all))
        // Operations, the document and Swagger UI.
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics))
        .routes(routes!(docs::openapi_document))
        .routes(routes!(docs::docs_redirect))
        .routes(routes!(docs::docs_index))
        .routes(routes!(docs::docs_file))
}

/// The OpenAPI document of [`api`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// The full HTTP service: [`api`] plus the 404/405 fallbacks, inside the middleware.
///
/// The middleware is one `ServiceBuilder` stack wrapped around the finished router, not applied
/// with `Router::layer`: that wraps every route in another boxed `Route`, and calling a `Route`
/// clones its boxed service and boxes its future, on every request. Around the router the stack
/// is plain nested services (its clone per request copies a few `Arc`s). Every request still
/// passes through it, fallbacks included, as it did with `Router::layer`.
///
/// Outermost first: the timeout; the request id, span and access events; the 413 for oversized
/// declared bodies; then single-flag OFREP evaluations go straight to their handler
/// (`ofrep::SingleFlagFastPath`), everything else to the router.
///
/// Bodies without a declared length are cut off at [`BODY_LIMIT`] where they are read: every
/// handler reads its body through `extract::read_body` (`JsonBody`, the import, OFREP), never
/// through axum's body extractors, so axum's `DefaultBodyLimit` layer (an extension inserted on
/// every request) has nothing left to configure.
pub fn router(
    state: Arc<AppState>,
) -> impl tower::Service<
    axum::extract::Request,
    Response = Response,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    let (routes, _) = api().split_for_parts();
    let app = routes
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(Arc::clone(&state));
    // Single-flag evaluation skips the router's generic work (see `SingleFlagFastPath`).
    let app = ofrep::SingleFlagFastPath::new(state, app);
    ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(RequestLayer(SequentialRequestId::new()))
        .layer(RefuseOversizedLayer)
        .service(app)
}
