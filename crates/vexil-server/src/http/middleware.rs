//! The HTTP middleware of our own: request ids with the request span and access events, and the
//! 413 for oversized declared bodies. Both are hand-written `tower` services because they sit on
//! every request's path: they call the inner service directly and wrap its future in a small
//! named future, so the common case allocates nothing of its own. (`axum::middleware::from_fn`
//! cloned the inner service and boxed a future per request; tower-http's request-id pair stored
//! the id in the request's and the response's extensions, a map and a box each; its trace layer
//! wrapped the response body, which then had to be boxed again.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use tower::{Layer, Service};

use super::{BODY_LIMIT, problem};

/// The request id header: kept when the client sends one, generated otherwise, and always
/// copied to the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids for requests that come without one: `<prefix>-<counter>`, both as 16 hex digits.
/// The prefix is random per router (i.e. per process), the counter counts up from 0, so ids are
/// unique across restarts without a random draw per request: a UUID v4 cost a `getrandom`
/// syscall, a `String` and a re-parse on every request.
#[derive(Debug, Clone)]
pub(crate) struct SequentialRequestId(Arc<RequestIdSeq>);

#[derive(Debug)]
struct RequestIdSeq {
    prefix: u64,
    next: AtomicU64,
}

impl SequentialRequestId {
    pub(crate) fn new() -> Self {
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

    /// The next id as a header value. Its bytes are owned once (`Bytes::from_owner`), so the
    /// copy that goes into the response is a reference count, not another allocation.
    fn next_header(&self) -> HeaderValue {
        HeaderValue::from_maybe_shared(Bytes::from_owner(self.next_id()))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-request-id"))
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

/// What every request goes through first: an `x-request-id`, the `request` span, and the
/// access events, in one service. It replaces tower-http's `SetRequestIdLayer`, `TraceLayer`
/// (`new_for_http`, default callbacks) and `PropagateRequestIdLayer`, and keeps what they did:
///
/// - the request keeps the client's `x-request-id`, or gets a [`SequentialRequestId`], before
///   the inner service sees it; the response gets the same id unless it already has one;
/// - everything the request does runs inside an INFO span `request` with `method`, `path` and
///   `request_id`;
/// - DEBUG "started processing request" and "finished processing request" (`latency` in ms,
///   `status`), and ERROR "response failed" (`classification = "Status code: …"`, `latency`)
///   for a 5xx, as tower-http's HTTP classifier did.
///
/// What it leaves out: the `RequestId` request and response extensions (nothing reads them; the
/// handlers and the span read the header), and the wrapper around the response body that only
/// entered the span while the body was polled and logged a DEBUG "end of stream". Without the
/// wrapper the body stays axum's, so it needs no second boxing either.
#[derive(Debug, Clone)]
pub(crate) struct RequestLayer(pub(crate) SequentialRequestId);

impl<S> Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            ids: self.0.clone(),
        }
    }
}

/// The service of [`RequestLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RequestService<S> {
    inner: S,
    ids: SequentialRequestId,
}

impl<S, B, ResBody> Service<axum::http::Request<B>> for RequestService<S>
where
    S: Service<axum::http::Request<B>, Response = axum::http::Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RequestFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let id = match req.headers().get(REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next_header();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %id.to_str().unwrap_or_default(),
        );
        let start = Instant::now();
        let inner = {
            let _guard = span.enter();
            tracing::debug!("started processing request");
            self.inner.call(req)
        };
        RequestFuture {
            inner,
            id: Some(id),
            span,
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`RequestService`]: the inner future inside the span, then the events and
    /// the id into the response.
    #[derive(Debug)]
    pub(crate) struct RequestFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
        span: tracing::Span,
        start: Instant,
    }
}

/// A latency as tower-http's default callbacks write it: whole milliseconds, `"3 ms"`.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

impl<F, ResBody, E> Future for RequestFuture<F>
where
    F: Future<Output = Result<axum::http::Response<ResBody>, E>>,
    E: std::fmt::Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _guard = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let latency = Millis(this.start.elapsed());
        let mut res = match result {
            Ok(res) => res,
            Err(e) => {
                tracing::error!(classification = %format_args!("Error: {e}"), latency = %latency, "response failed");
                return Poll::Ready(Err(e));
            }
        };
        let status = res.status();
        tracing::debug!(latency = %latency, status = i32::from(status.as_u16()), "finished processing request");
        if status.is_server_error() {
            tracing::error!(classification = %format_args!("Status code: {status}"), latency = %latency, "response failed");
        }
        if let Some(id) = this.id.take()
            && !res.headers().contains_key(REQUEST_ID)
        {
            res.headers_mut().insert(REQUEST_ID, id);
        }
        Poll::Ready(Ok(res))
    }
}

/// Bodies declared up to this size are read and discarded after a 413, so the client, which is
/// still sending, reliably reads the answer instead of a connection reset (nginx's "lingering
/// close"). Larger declared bodies are refused at once.
const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;

/// Refuses a body whose declared length exceeds [`BODY_LIMIT`] with a 413 problem before any
/// handler runs. Bodies without a length are still cut off by `DefaultBodyLimit`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefuseOversizedLayer;

impl<S> Layer<S> for RefuseOversizedLayer {
    type Service = RefuseOversized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefuseOversized(inner)
    }
}

/// The service of [`RefuseOversizedLayer`].
#[derive(Debug, Clone)]
pub(crate) struct RefuseOversized<S>(S);

impl<S> Service<Request> for RefuseOversized<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared.filter(|l| *l > BODY_LIMIT as u64) {
            None => Either::Left(self.0.call(req)),
            Some(len) => Either::Right(Box::pin(
                async move { Ok(refuse_oversized(req, len).await) },
            )),
        }
    }
}

/// The 413 answer to a request that declared `len` bytes, after draining a body of up to
/// [`DRAIN_LIMIT`].
async fn refuse_oversized(req: Request, len: u64) -> Response {
    use futures_util::StreamExt;
    if len <= DRAIN_LIMIT {
        let mut body = req.into_body().into_data_stream();
        let drain = async { while let Some(Ok(_)) = body.next().await {} };
        // Bounded in time as well as size: a client that stalls does not hold the task.
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    }
    let mut resp = problem::Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-large",
        "Payload too large",
        "the request body exceeds the 1 MiB limit",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn request_ids_are_unique_valid_headers_with_a_shared_prefix() {
        let ids = SequentialRequestId::new();
        let (a, b) = (ids.next_header(), ids.clone().next_header());
        let (a, b) = (
            a.to_str().expect("ascii").to_owned(),
            b.to_str().expect("ascii").to_owned(),
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

    /// Answers with the request id the handler saw in its body, and sets the response's own
    /// id when asked to (`x-own-id`).
    async fn echo(req: Request) -> Result<Response, Infallible> {
        let seen = req.headers().get(REQUEST_ID).cloned();
        let mut res = Response::new(axum::body::Body::empty());
        if let Some(seen) = seen {
            res.headers_mut().insert("x-seen", seen);
        }
        if let Some(own) = req.headers().get("x-own-id") {
            res.headers_mut().insert(REQUEST_ID, own.clone());
        }
        Ok(res)
    }

    fn call(req: Request) -> Response {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let svc = RequestLayer(SequentialRequestId::new()).layer(tower::service_fn(echo));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(svc.oneshot(req))
            .expect("infallible")
    }

    /// Tests that run [`RequestLayer`] take turns: a thread that first reaches one of its
    /// `tracing` call sites with no subscriber caches "disabled" for it, which would hide the
    /// events from the test that captures them.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_request_without_an_id_gets_one_that_the_handler_and_the_response_share() {
        let res = call(Request::new(axum::body::Body::empty()));
        let id = res.headers().get(REQUEST_ID).expect("an id");
        assert_eq!(id.len(), 33);
        assert_eq!(res.headers().get("x-seen"), Some(id));
    }

    #[test]
    fn the_clients_id_is_kept_and_a_responses_own_id_wins() {
        let req = Request::builder()
            .header(REQUEST_ID, "client-42")
            .body(axum::body::Body::empty())
            .expect("a request");
        let res = call(req);
        assert_eq!(res.headers()[REQUEST_ID], "client-42");
        assert_eq!(res.headers()["x-seen"], "client-42");
        let req = Request::builder()
            .header(REQUEST_ID, "client-42")
            .header("x-own-id", "from-handler")
            .body(axum::body::Body::empty())
            .expect("a request");
        let res = call(req);
        assert_eq!(res.headers()[REQUEST_ID], "from-handler");
        assert_eq!(res.headers().get_all(REQUEST_ID).iter().count(), 1);
    }

    /// Log output, captured for a test.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl tracing_subscriber::fmt::MakeWriter<'_> for Captured {
        type Writer = Self;

        fn make_writer(&self) -> Self {
            self.clone()
        }
    }

    /// The events tower-http's `TraceLayer::new_for_http()` wrote, in the request span: started
    /// and finished at DEBUG, and a 5xx as an ERROR "response failed" with its classification.
    #[test]
    fn requests_are_logged_in_their_span_as_the_trace_layer_logged_them() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        tracing::subscriber::with_default(subscriber, || {
            // Forget what earlier tests cached for the call sites without this subscriber.
            tracing::callsite::rebuild_interest_cache();
            runtime.block_on(async {
                let failing = tower::service_fn(|_req: Request| async {
                    tracing::warn!("inside the handler");
                    let mut res = Response::new(axum::body::Body::empty());
                    *res.status_mut() = StatusCode::BAD_GATEWAY;
                    Ok::<_, Infallible>(res)
                });
                let svc = RequestLayer(SequentialRequestId::new()).layer(failing);
                let req = Request::builder()
                    .method("POST")
                    .uri("/ofrep/v1/evaluate/flags/f?x=1")
                    .header(REQUEST_ID, "client-42")
                    .body(axum::body::Body::empty())
                    .expect("a request");
                let res = svc.oneshot(req).await.expect("infallible");
                assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
            });
        });
        let text = String::from_utf8(out.0.lock().expect("not poisoned").clone()).expect("utf-8");
        let span = "request{method=POST path=/ofrep/v1/evaluate/flags/f request_id=client-42}";
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        for (line, (level, message)) in lines.iter().zip([
            ("DEBUG", "started processing request"),
            ("WARN", "inside the handler"),
            ("DEBUG", "finished processing request"),
            ("ERROR", "response failed"),
        ]) {
            assert!(line.contains(level), "{line}");
            assert!(line.contains(span), "{line}");
            assert!(line.contains(message), "{line}");
        }
        assert!(lines[2].contains("status=502"), "{text}");
        assert!(lines[2].contains(" ms"), "{text}");
        assert!(
            lines[3].contains("classification=Status code: 502 Bad Gateway"),
            "{text}"
        );
    }
}
