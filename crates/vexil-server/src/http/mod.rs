//! The HTTP side: the REST admin API, OFREP, the operations endpoints, the OpenAPI document
//! and Swagger UI on one axum router.

pub mod admin;
pub mod docs;
pub mod extract;
pub mod identity;
pub mod ofrep;
pub mod ops;
pub mod problem;
pub mod schema;
pub mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

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
        .routes(routes!(admin::enable_flag))
        .routes(routes!(admin::disable_flag))
        .routes(routes!(admin::list_segments, admin::create_segment))
        .routes(routes!(
            admin::get_segment,
            admin::put_segment,
            admin::delete_segment
        ))
        .routes(routes!(admin::export))
        .routes(routes!(admin::import))
        .routes(routes!(admin::evaluate))
        .routes(routes!(admin::list_audit))
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

/// Bodies declared up to this size are read and discarded after a 413, so the client, which is
/// still sending, reliably reads the answer instead of a connection reset (nginx's "lingering
/// close"). Larger declared bodies are refused at once.
const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;

/// Refuses a body whose declared length exceeds [`BODY_LIMIT`] with a 413 problem before any
/// handler runs. Bodies without a length are still cut off by `DefaultBodyLimit`.
async fn refuse_oversized(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = declared.filter(|l| *l > BODY_LIMIT as u64) else {
        return next.run(req).await;
    };
    if len <= DRAIN_LIMIT {
        let mut body = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        // Bounded in time as well as size: a client that stalls does not hold the task.
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }
    let mut resp = problem::Problem::new(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "Payload too large",
        "the request body exceeds the 1 MiB limit",
    )
    .into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

/// Request ids for requests that come without one: `<prefix>-<counter>`, both as 16 hex digits.
/// The prefix is random per router (i.e. per process), the counter counts up from 0, so ids are
/// unique across restarts without a random draw per request: a UUID v4 cost a `getrandom`
/// syscall, a `String` and a re-parse on every request.
#[derive(Debug, Clone)]
struct SequentialRequestId(Arc<RequestIdSeq>);

#[derive(Debug)]
struct RequestIdSeq {
    prefix: u64,
    next: AtomicU64,
}

impl SequentialRequestId {
    fn new() -> Self {
        Self(Arc::new(RequestIdSeq {
            prefix: uuid::Uuid::new_v4().as_u64_pair().0,
            next: AtomicU64::new(0),
        }))
    }

    fn next_id(&self) -> [u8; 33] {
        // Relaxed: only uniqueness matters, not ordering with other memory.
        let n = self.0.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [b'-'; 33];
        write_hex(self.0.prefix, &mut id[..16]);
        write_hex(n, &mut id[17..]);
        id
    }
}

/// Writes `n` as 16 lowercase hex digits into `out` (16 bytes).
fn write_hex(n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        // Masked to 0..16 first, so the cast cannot truncate.
        *b = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_bytes(&self.next_id())
            .ok()
            .map(RequestId::new)
    }
}

/// The full router: [`api`] plus the 404/405 fallbacks and the middleware.
///
/// The middleware is one `ServiceBuilder` stack applied with a single `Router::layer`: each
/// `Router::layer` call wraps every route in another boxed `Route`, and calling a `Route` clones
/// its boxed service and boxes its future, so a chain of six cost six of each per request. Outermost first: the timeout, request id
/// (set, then traced, then copied to the response), the 413 for oversized declared bodies, and
/// the body limit for the rest.
pub fn router(state: Arc<AppState>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let (routes, _) = api().split_for_parts();
    let middleware = ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        // The timeout answers with an empty body (`Default`), which the traced body below is
        // not: box it back into axum's body, as a `Router::layer` boundary did.
        .map_response(axum::response::IntoResponse::into_response)
        .layer(SetRequestIdLayer::new(
            request_id.clone(),
            SequentialRequestId::new(),
        ))
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
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    routes
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_valid_headers_with_a_shared_prefix() {
        let ids = SequentialRequestId::new();
        let mut maker = ids.clone();
        let req = Request::new(());
        let a = maker.make_request_id(&req).expect("an id");
        let b = ids.clone().make_request_id(&req).expect("an id");
        let (a, b) = (
            a.header_value().to_str().expect("ascii"),
            b.header_value().to_str().expect("ascii"),
        );
        assert_eq!(a.len(), 33);
        assert_ne!(a, b);
        assert_eq!(a[..17], b[..17]);
        assert_eq!(&a[17..], "0000000000000000");
        assert_eq!(&b[17..], "0000000000000001");
        assert!(a.bytes().all(|c| c == b'-' || c.is_ascii_hexdigit()));
        // Another process (router) draws another prefix.
        assert_ne!(
            a.as_bytes()[..16],
            SequentialRequestId::new().next_id()[..16]
        );
    }
}
