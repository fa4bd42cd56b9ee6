//! OFREP (`/ofrep/v1`), per the OpenFeature Remote Evaluation Protocol's OpenAPI document.
//!
//! The namespace comes from `x-vexil-namespace` (default `default`). Success bodies always carry
//! `variant` (possibly `""`): the Python provider rejects a success without it. A resolution with
//! no value (DISABLED, no default variant) is OFREP's code-default form: no `value` field.
//! Errors of a single evaluation use OFREP's bodies, not problem+json: FLAG_NOT_FOUND is 404,
//! other evaluation errors 400. Bulk responses carry an ETag over (namespace revision,
//! canonical context) and answer a matching `If-None-Match` with 304.

use std::cell::RefCell;
use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{BoxFuture, Either};
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vexil_core::context::{
    ContextArena, ContextSeed, ParsedContext, ParsedValue, with_context_arena,
};
use vexil_core::{ErrorCode, Resolution};
use vexil_service::{DEFAULT_NAMESPACE, Permission, ServiceError};

use super::extract::{Caller, is_json, read_body};
use super::schema;
use crate::AppState;

/// The namespace header.
pub const NAMESPACE_HEADER: &str = "x-vexil-namespace";

fn namespace(headers: &HeaderMap) -> &str {
    headers
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// An OFREP error response (not problem+json: OFREP clients parse these fields).
fn failure(
    status: StatusCode,
    key: Option<&str>,
    code: &str,
    details: impl Into<String>,
) -> Response {
    let mut body = Map::new();
    if let Some(k) = key {
        body.insert("key".into(), Value::String(k.to_owned()));
    }
    body.insert("errorCode".into(), Value::String(code.to_owned()));
    body.insert("errorDetails".into(), Value::String(details.into()));
    (status, Json(Value::Object(body))).into_response()
}

/// The one mapping from service errors to OFREP responses (exhaustive by construction).
fn service_failure(e: ServiceError) -> Response {
    match e {
        ServiceError::NotFound { namespace, .. } => failure(
            StatusCode::NOT_FOUND,
            None,
            "FLAG_NOT_FOUND",
            format!("namespace {namespace} does not exist"),
        ),
        ServiceError::Invalid { .. } => failure(
            StatusCode::BAD_REQUEST,
            None,
            "INVALID_CONTEXT",
            e.to_string(),
        ),
        ServiceError::Unavailable { retry_after_secs } => {
            let mut r = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"errorDetails": "the service is unavailable"})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        ServiceError::Unauthenticated { .. } => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"errorDetails": e.to_string()})),
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vexil\""),
            );
            r
        }
        ServiceError::Forbidden { .. } => (
            StatusCode::FORBIDDEN,
            Json(json!({"errorDetails": e.to_string()})),
        )
            .into_response(),
        ServiceError::RateLimited { retry_after_secs } => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"errorDetails": "too many requests"})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            r
        }
        ServiceError::AlreadyExists { .. }
        | ServiceError::VersionConflict { .. }
        | ServiceError::Conflict { .. }
        | ServiceError::Internal => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"errorDetails": "an internal error occurred"})),
        )
            .into_response(),
    }
}

/// Why an OFREP request could not be read as one: the details of its INVALID_CONTEXT answer.
#[derive(Debug)]
struct InvalidContext(String);

impl IntoResponse for InvalidContext {
    fn into_response(self) -> Response {
        failure(StatusCode::BAD_REQUEST, None, "INVALID_CONTEXT", self.0)
    }
}

/// Refuses a request that is not JSON (before its body is read).
fn require_json(headers: &HeaderMap) -> Result<(), InvalidContext> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(InvalidContext(
            "send the request as application/json".to_owned(),
        ))
    }
}

/// Parses `{"context": …}` from `bytes`, with `seed` reading the context member. An empty body
/// is an object without a context.
fn parse_request<'de, S>(bytes: &'de [u8], seed: S) -> Result<Option<S::Value>, InvalidContext>
where
    S: DeserializeSeed<'de> + Copy,
{
    if bytes.is_empty() {
        return Ok(None);
    }
    // What `serde_json::from_slice` does, with a seed.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body = RequestBodySeed(seed)
        .deserialize(&mut de)
        .and_then(|body| de.end().map(|()| body))
        .map_err(|e| InvalidContext(format!("malformed JSON: {e}")))?;
    // The request itself must be an object: anything else would otherwise silently evaluate a
    // malformed request against the empty context.
    match body {
        RequestBody::Object(context) => Ok(context),
        RequestBody::Other(found) => Err(InvalidContext(format!(
            "the request body must be an object {{\"context\": {{…}}}}, found {found}"
        ))),
    }
}

/// The error for a context that is not an object (or null).
fn context_not_an_object(found: &str) -> InvalidContext {
    InvalidContext(format!("context must be an object, found {found}"))
}

/// Reads `{"context": {...}}` as a `Value`. A missing or null context is the empty context.
fn value_context(bytes: &[u8]) -> Result<Value, InvalidContext> {
    match parse_request(bytes, PhantomData::<Value>)? {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(ctx @ Value::Object(_)) => Ok(ctx),
        Some(other) => Err(context_not_an_object(vexil_core::validate::type_name(
            &other,
        ))),
    }
}

/// Reads `{"context": {...}}` straight into engine data in `arena` (see
/// [`vexil_core::context`]), accepting and refusing exactly what [`value_context`] does. A
/// missing or null context is the empty context.
fn parsed_context<'a>(
    bytes: &'a [u8],
    arena: &'a ContextArena,
) -> Result<ParsedContext<'a>, InvalidContext> {
    match parse_request(bytes, ContextSeed::new(arena))? {
        None | Some(ParsedValue::Null) => Ok(ParsedContext::empty()),
        Some(ParsedValue::Object(ctx)) => Ok(ctx),
        Some(ParsedValue::Other(found)) => Err(context_not_an_object(found)),
    }
}

/// An OFREP request body as far as this server reads it: whether it is an object, and its
/// `context` member. Parsed in one pass straight from the bytes: building the whole body as a
/// `Value` first cost a map and a key string just to take the context out of it again.
///
/// Every other member is still parsed as a `Value` (and dropped), and a body that is not an
/// object is parsed whole, so exactly the same bodies are malformed JSON as before, with the same
/// messages: the parser, not this type, finds every syntax error.
#[derive(Debug)]
enum RequestBody<C> {
    /// An object, with its `context` member if it has one (the last one, if repeated, as a
    /// `Value` map keeps it).
    Object(Option<C>),
    /// Anything else, by its type name (`vexil_core::validate::type_name`'s names).
    Other(&'static str),
}

/// Reads a [`RequestBody`], the context member with the seed it holds.
#[derive(Debug, Clone, Copy)]
struct RequestBodySeed<S>(S);

impl<'de, S> DeserializeSeed<'de> for RequestBodySeed<S>
where
    S: DeserializeSeed<'de> + Copy,
{
    type Value = RequestBody<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S> Visitor<'de> for RequestBodySeed<S>
where
    S: DeserializeSeed<'de> + Copy,
{
    type Value = RequestBody<S::Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RequestBody::Other("string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Value>()?.is_some() {}
        Ok(RequestBody::Other("array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut context = None;
        while let Some(is_context) = map.next_key_seed(IsContext)? {
            if is_context {
                context = Some(map.next_value_seed(self.0)?);
            } else {
                map.next_value::<Value>()?;
            }
        }
        Ok(RequestBody::Object(context))
    }
}

/// A member name, read only to tell whether it is `context` (no copy of the name).
struct IsContext;

impl<'de> DeserializeSeed<'de> for IsContext {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for IsContext {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E>(self, name: &str) -> Result<bool, E> {
        Ok(name == "context")
    }
}

/// One OFREP flag entry, success or failure, serialized straight from the [`Resolution`] it
/// borrows: building a `serde_json::Value` tree first cloned every value and metadata map, and
/// was most of the cost of a bulk answer.
///
/// The fields are in alphabetical order, as the `Value` maps wrote them, so the bytes on the wire
/// are unchanged. A failure has `errorCode`, `errorDetails`, `key` and `metadata`; a success has
/// `key`, `metadata`, `reason`, `value` (absent in OFREP's code-default form) and `variant`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_details: Option<&'a str>,
    key: &'a str,
    metadata: &'a vexil_core::Metadata,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// A float keeps its decimal point: the borrowed `Value` serializes exactly as it did inside
    /// a `Value` tree (`1.0`, not `1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a Value>,
    /// Always present on a success (possibly `""`): the Python provider rejects a success
    /// without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

/// One resolution as an OFREP flag entry, and the status a single evaluation answers it with.
fn entry<'a>(key: &'a str, r: &'a Resolution) -> (StatusCode, Entry<'a>) {
    if let Some(code) = r.error_code {
        let status = if code == ErrorCode::FlagNotFound {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        let failure = Entry {
            error_code: Some(code.as_str()),
            error_details: Some(r.error_message.as_deref().unwrap_or_default()),
            key,
            metadata: &r.metadata,
            reason: None,
            value: None,
            variant: None,
        };
        return (status, failure);
    }
    let success = Entry {
        error_code: None,
        error_details: None,
        key,
        metadata: &r.metadata,
        reason: Some(r.reason.as_str()),
        value: r.value.as_deref(),
        variant: Some(r.variant.as_deref().unwrap_or_default()),
    };
    (StatusCode::OK, success)
}

/// A bulk answer: `{"flags": [...], "metadata": {"revision": N}}`.
#[derive(Debug, Serialize)]
struct Bulk<'a> {
    #[serde(serialize_with = "bulk_flags")]
    flags: &'a vexil_core::evaluate::Evaluations,
    metadata: BulkMetadata,
}

#[derive(Debug, Serialize)]
struct BulkMetadata {
    revision: u64,
}

/// Serializes every resolution as its [`Entry`], without collecting them first.
fn bulk_flags<S: serde::Serializer>(
    flags: &vexil_core::evaluate::Evaluations,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(flags.iter().map(|(k, r)| entry(k, r).1))
}

/// A JSON response. The body is written into a per-thread scratch buffer, then copied once into
/// a buffer of exactly its size: a fresh `Vec` per answer grew by doubling for a bulk answer of
/// ~9 KB, and one with spare capacity cost another allocation to become the response's `Bytes`.
fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
    }
    /// A scratch buffer grown past this by a huge answer is not kept.
    const KEEP: usize = 256 * 1024;
    let written = SCRATCH.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.clear();
        let written = serde_json::to_writer(&mut *buf, body).map(|()| Bytes::copy_from_slice(&buf));
        if buf.capacity() > KEEP {
            *buf = Vec::with_capacity(4096);
        }
        written
    });
    match written {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        // Only a `Serialize` impl can fail here (ours do not; `Value` maps have string keys).
        Err(e) => {
            tracing::error!(error = %e, "could not serialize an OFREP answer");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"errorDetails": "an internal error occurred"})),
            )
                .into_response()
        }
    }
}

/// Evaluate one flag (OFREP)
///
/// The namespace comes from `x-vexil-namespace` (default `default`). A success always carries
/// `variant` (possibly `""`); a disabled flag, or one without a default variant, answers without
/// `value`: the caller's code default applies. Errors use OFREP's bodies, not problem+json.
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    tag = "ofrep",
    operation_id = "evaluateFlag",
    params(schema::OfrepKeyPath, schema::NamespaceHeader),
    request_body = schema::OfrepEvaluationRequest,
    responses(
        (status = 200, description = "Evaluated", body = schema::OfrepEvaluationSuccess),
        (status = 400, description = "The evaluation failed (INVALID_CONTEXT, PARSE_ERROR, TARGETING_KEY_MISSING, GENERAL), or the request is not JSON", body = schema::OfrepEvaluationFailure),
        (status = 404, description = "FLAG_NOT_FOUND: no such flag, or no such namespace", body = schema::OfrepEvaluationFailure),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, description = "An internal error", body = schema::OfrepGeneralError),
        (status = 503, description = "The service is unavailable", body = schema::OfrepGeneralError, headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn evaluate_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    req: Request,
) -> Response {
    // Split, not extracted: the key and the namespace are borrowed from the request's parts
    // (a `Path<String>` and a `HeaderMap` extractor would copy them), and the body is read
    // straight from the body.
    let (mut parts, body) = req.into_parts();
    // The key is the path's last segment. One with percent-escapes goes through axum's `Path`,
    // which decodes it (and refuses a key that does not decode to UTF-8), as it always did.
    let decoded = if last_segment(&parts.uri).contains('%') {
        match Path::<String>::from_request_parts(&mut parts, &app).await {
            Ok(Path(key)) => Some(key),
            Err(rejection) => return rejection.into_response(),
        }
    } else {
        None
    };
    let key = decoded
        .as_deref()
        .unwrap_or_else(|| last_segment(&parts.uri));
    let ns = namespace(&parts.headers);
    if let Err(e) = require_json(&parts.headers) {
        return e.into_response();
    }
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    // The rest is synchronous: the context is parsed straight into engine data in this
    // thread's context arena, evaluated, and the answer written, before the arena is reused.
    with_context_arena(|arena| {
        let context = match parsed_context(&bytes, arena) {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        };
        let result = p
            .authorize(Permission::Evaluate, ns)
            .and_then(|pass| app.flags.evaluate_parsed(&pass, ns, key, &context));
        match result {
            Ok(out) => {
                let (status, body) = entry(key, &out.result);
                json_response(status, &body)
            }
            Err(e) => service_failure(e),
        }
    })
}

/// The last segment of a URI's path: the `{key}` of `/ofrep/v1/evaluate/flags/{key}`, as sent.
fn last_segment(uri: &Uri) -> &str {
    uri.path().rsplit('/').next().unwrap_or_default()
}

/// The path of single-flag evaluation up to its `{key}` segment.
const SINGLE_FLAG_PREFIX: &str = "/ofrep/v1/evaluate/flags/";

/// The flag key of a request the single-flag fast path takes: a `POST` whose path is
/// [`SINGLE_FLAG_PREFIX`] plus one non-empty segment without percent-escapes. Exactly the
/// requests the router would send to [`evaluate_flag`] with that segment as `{key}` (no other
/// route lies under the prefix; see the test), minus the escaped ones, which the router still
/// decodes.
fn fast_single_flag_key(req: &Request) -> Option<&str> {
    if req.method() != Method::POST {
        return None;
    }
    req.uri()
        .path()
        .strip_prefix(SINGLE_FLAG_PREFIX)
        .filter(|key| !key.is_empty() && !key.contains(['/', '%']))
}

/// Sends single-flag evaluations ([`fast_single_flag_key`]) straight to [`evaluate_flag`], and
/// every other request to the router.
///
/// Single-flag evaluation is the hot path of a flag server, and the router's generic work costs
/// about as much as the handler's own adapter work: matching, a percent-decoded copy of the key
/// in shared strings, the matched path and the original URI (extensions nobody reads here), and
/// a clone of the boxed route with its boxed future. The route itself stays in the router (and
/// in the OpenAPI document): this only takes the requests it would have matched, and the handler
/// runs with the same extractors and the same code, and answers the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct SingleFlagFastPath<R> {
    app: Arc<AppState>,
    router: R,
}

impl<R> SingleFlagFastPath<R> {
    pub(crate) fn new(app: Arc<AppState>, router: R) -> Self {
        Self { app, router }
    }
}

impl<R> tower::Service<Request> for SingleFlagFastPath<R>
where
    R: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<R::Future, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.router.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if fast_single_flag_key(&req).is_none() {
            return Either::Left(self.router.call(req));
        }
        let app = Arc::clone(&self.app);
        Either::Right(Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // No `Content-Length` is set here, unlike the router: hyper writes it for a body of
            // known size itself, after the other headers, where the answer had it before.
            Ok(match Caller::from_request_parts(&mut parts, &app).await {
                Ok(caller) => {
                    evaluate_flag(State(app), caller, Request::from_parts(parts, body)).await
                }
                Err(rejection) => rejection.into_response(),
            })
        }))
    }
}

/// Canonical JSON: object keys sorted at every level, so equal contexts hash equally whatever
/// order the client wrote them in.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                scalar(*k, out);
                out.push(b':');
                if let Some(child) = m.get(*k) {
                    canonical(child, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        other => scalar(other, out),
    }
}

/// Appends a key or a scalar as JSON, without an intermediate `String`.
fn scalar<T: Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing a string or a `Value` scalar into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn bulk_etag(ns: &str, revision: u64, context: &Value) -> String {
    let mut text = Vec::with_capacity(256);
    canonical(context, &mut text);
    let mut h = Sha256::new();
    h.update(ns.as_bytes());
    h.update(b"\0");
    h.update(revision.to_be_bytes());
    h.update(&text);
    let digest = hex::encode(h.finalize());
    format!("\"{}-{}\"", revision, &digest[..16])
}

fn matches_etag(if_none_match: Option<&HeaderValue>, tag: &str) -> bool {
    if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == tag || t.trim() == "*")
        })
}

/// Evaluate every flag of a namespace (OFREP bulk)
///
/// A flag that fails to evaluate (e.g. PARSE_ERROR) is a failure entry; the others still
/// succeed. The ETag covers the namespace's revision and the canonical context (key order does
/// not matter): send it back as `If-None-Match` to get 304 while nothing changed.
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = "ofrep",
    operation_id = "evaluateFlagsBulk",
    params(schema::NamespaceHeader, schema::IfNoneMatchHeader),
    request_body = schema::OfrepEvaluationRequest,
    responses(
        (status = 200, description = "Every flag, each evaluated or failed", body = schema::OfrepBulkResponse, headers(("ETag" = String, description = "Over (namespace revision, canonical context): send it back as `If-None-Match`."))),
        (status = 304, description = "Nothing changed since the ETag in `If-None-Match`; no body", headers(("ETag" = String, description = "The current ETag."))),
        (status = 400, description = "INVALID_CONTEXT: the request is not JSON or the context is not an object", body = schema::OfrepEvaluationFailure),
        (status = 404, description = "FLAG_NOT_FOUND: no such namespace", body = schema::OfrepEvaluationFailure),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 500, description = "An internal error", body = schema::OfrepGeneralError),
        (status = 503, description = "The service is unavailable", body = schema::OfrepGeneralError, headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn evaluate_all(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    req: Request,
) -> Response {
    // Split, not extracted: the headers are read in place (a `HeaderMap` extractor would clone
    // them all), and the body is read straight from the body.
    let (parts, body) = req.into_parts();
    let ns = namespace(&parts.headers);
    let if_none_match = parts.headers.get(header::IF_NONE_MATCH);
    if let Err(e) = require_json(&parts.headers) {
        return e.into_response();
    }
    let context = match read_body(body).await {
        Ok(bytes) => value_context(&bytes),
        Err(e) => return e.into_response(),
    };
    let context = match context {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let pass = match p.authorize(Permission::Evaluate, ns) {
        Ok(pass) => pass,
        Err(e) => return service_failure(e),
    };
    // The revision is read before evaluating: if a change lands in between, the ETag is older
    // than the body and the client simply re-fetches once more.
    let revision = match app.flags.revision(&pass, ns) {
        Ok(r) => r,
        Err(e) => return service_failure(e),
    };
    let tag = bulk_etag(ns, revision, &context);
    if matches_etag(if_none_match, &tag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    match app.flags.evaluate_all(&pass, ns, &context) {
        Ok(out) => {
            // Usually nothing changed in between, and the tag computed above still holds.
            let tag = if out.revision == revision {
                tag
            } else {
                bulk_etag(ns, out.revision, &context)
            };
            let body = Bulk {
                flags: &out.result,
                metadata: BulkMetadata {
                    revision: out.revision,
                },
            };
            let mut r = json_response(StatusCode::OK, &body);
            if let Ok(v) = HeaderValue::from_str(&tag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Err(e) => service_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the handlers read a request body before it was parsed in one pass: the whole body as
    /// a `Value`, then the context taken out of it. The reference for the tests below.
    fn reference_context(bytes: &[u8]) -> Result<Value, String> {
        if bytes.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        let body: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))?;
        if !body.is_object() {
            return Err(format!(
                "the request body must be an object {{\"context\": {{…}}}}, found {}",
                vexil_core::validate::type_name(&body)
            ));
        }
        match body.get("context").cloned() {
            None | Some(Value::Null) => Ok(Value::Object(Map::new())),
            Some(ctx @ Value::Object(_)) => Ok(ctx),
            Some(other) => Err(format!(
                "context must be an object, found {}",
                vexil_core::validate::type_name(&other)
            )),
        }
    }

    /// Request bodies of every kind: valid, malformed in each part, not objects, contexts that
    /// are not objects, repeated and escaped members, numbers of every kind.
    const BODIES: &[&str] = &[
        "",
        "{}",
        r#"{"context": {"targetingKey": "user-1", "tier": "gold", "age": 37}}"#,
        r#"{"context": {"b": 1, "a": [1, 2.5, {"x": "\u00e9"}], "b": 2}}"#,
        r#"{"context": {"big": 18446744073709551615, "neg": -1, "f": 1.0, "e": 2e-3}}"#,
        r#"{"context": null}"#,
        r#"{"flags": 1, "context": {"a": 1}, "context": {"b": 2}}"#,
        r#"{"context": {"a": 1}, "context": null}"#,
        r#"{"cont\u0065xt": {"escaped": true}}"#,
        r#"{"context": [1, 2]}"#,
        r#"{"context": "x"}"#,
        r#"{"context": 5}"#,
        r#"{"context": true}"#,
        "[1, 2]",
        "\"text\"",
        "5",
        "null",
        "{",
        r#"{"context": {"a": 1}"#,
        r#"{"context": {"a": 1}} trailing"#,
        r#"{"other": [1, }"#,
        r#"{"other": 1e999, "context": {}}"#,
        r#"{"context": {"a": 1e999}}"#,
        r#"[1, "\ud800"]"#,
        r#"{"context": {"\ud800": 1}}"#,
        r#"{"other": "\x", "context": {}}"#,
        "{\"other\": \"\u{1}\", \"context\": {}}",
    ];

    #[test]
    fn a_value_context_is_read_as_before() {
        for body in BODIES {
            let got = value_context(body.as_bytes()).map_err(|e| e.0);
            assert_eq!(got, reference_context(body.as_bytes()), "{body}");
        }
    }

    /// Parsed straight into engine data, the context is refused with the same messages, and
    /// evaluates as its `Value` does.
    #[test]
    fn a_parsed_context_is_refused_and_evaluated_as_its_value_is() {
        let doc = json!({"flags": {
            "f": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                "targeting": {"if": [{"or": [
                    {"==": [{"var": "tier"}, "gold"]},
                    {"==": [{"var": "b"}, 2]},
                    {">": [{"var": "big"}, 1]},
                    {"==": [{"var": "context"}, null]}
                ]}, "b", "a"]}}
        }});
        let loaded = vexil_core::FlagDocument::from_value(
            &doc,
            vexil_core::Schema::Flagd,
            vexil_core::TargetingPolicy::Warn,
        )
        .expect("a document");
        let set =
            vexil_core::FlagSet::compile(&loaded.document, &vexil_core::FlagSetOptions::default());
        for body in BODIES {
            let reference = reference_context(body.as_bytes());
            with_context_arena(|arena| match parsed_context(body.as_bytes(), arena) {
                Ok(ctx) => {
                    let value = reference.as_ref().expect("accepted as before");
                    assert_eq!(
                        set.evaluate_parsed_at("f", &ctx, 1),
                        set.evaluate_at("f", value, 1),
                        "{body}"
                    );
                }
                Err(e) => assert_eq!(Err(e.0), reference, "{body}"),
            });
        }
    }

    #[test]
    fn the_fast_path_takes_plain_single_flag_posts_only() {
        let req = |method: &str, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .expect("a request")
        };
        let key = |method, uri| fast_single_flag_key(&req(method, uri)).map(str::to_owned);
        assert_eq!(
            key("POST", "/ofrep/v1/evaluate/flags/f-1"),
            Some("f-1".into())
        );
        assert_eq!(
            key("POST", "/ofrep/v1/evaluate/flags/f?x=1"),
            Some("f".into())
        );
        assert_eq!(
            key("POST", "http://host/ofrep/v1/evaluate/flags/f"),
            Some("f".into())
        );
        for (method, uri) in [
            ("GET", "/ofrep/v1/evaluate/flags/f"),
            ("HEAD", "/ofrep/v1/evaluate/flags/f"),
            ("POST", "/ofrep/v1/evaluate/flags"),
            ("POST", "/ofrep/v1/evaluate/flags/"),
            ("POST", "/ofrep/v1/evaluate/flags/f/"),
            ("POST", "/ofrep/v1/evaluate/flags/a/b"),
            ("POST", "/ofrep/v1/evaluate/flags/f%2Dg"),
            ("POST", "/OFREP/v1/evaluate/flags/f"),
            ("POST", "/ofrep/v1/evaluate/flagsf"),
        ] {
            assert_eq!(key(method, uri), None, "{method} {uri}");
        }
    }

    /// The fast path may only take what the router would route to `evaluate_flag`: no other
    /// route may lie under its prefix. `api()` is the one list of routes (`router()` adds none;
    /// `rbac_matrix` checks that), and its document lists them all.
    #[test]
    fn single_flag_evaluation_is_the_only_route_under_the_fast_paths_prefix() {
        let doc = super::super::openapi();
        let under: Vec<&String> = doc
            .paths
            .paths
            .keys()
            .filter(|p| p.starts_with(SINGLE_FLAG_PREFIX))
            .collect();
        assert_eq!(under, ["/ofrep/v1/evaluate/flags/{key}"]);
        let item = &doc.paths.paths["/ofrep/v1/evaluate/flags/{key}"];
        assert_eq!(
            item.post.as_ref().and_then(|op| op.operation_id.as_deref()),
            Some("evaluateFlag")
        );
    }

    #[test]
    fn bulk_etag_ignores_key_order_but_not_values_or_revision() {
        let a = json!({"b": 1, "a": {"y": 2, "x": 1}});
        let b = json!({"a": {"x": 1, "y": 2}, "b": 1});
        assert_eq!(bulk_etag("d", 3, &a), bulk_etag("d", 3, &b));
        assert_ne!(bulk_etag("d", 3, &a), bulk_etag("d", 4, &a));
        assert_ne!(bulk_etag("d", 3, &a), bulk_etag("d", 3, &json!({"b": 2})));
        assert_ne!(bulk_etag("d", 3, &a), bulk_etag("e", 3, &a));
    }

    #[test]
    fn success_entries_always_carry_a_variant() {
        let r = Resolution {
            value: None,
            variant: None,
            reason: vexil_core::Reason::Disabled,
            error_code: None,
            error_message: None,
            metadata: Arc::default(),
        };
        let (status, e) = entry("k", &r);
        assert_eq!(status, StatusCode::OK);
        let v = serde_json::to_value(&e).expect("serializable");
        assert_eq!(v["variant"], "");
        assert!(v.get("value").is_none());
    }

    /// The borrowing entries write the same bytes the `Value` trees did: keys in alphabetical
    /// order, floats with their decimal point, failures without reason/value/variant.
    #[test]
    fn entries_serialize_as_before() {
        let mut metadata = Map::new();
        metadata.insert("owner".into(), json!("payments"));
        let success = Resolution {
            value: Some(Arc::new(json!(1.0))),
            variant: Some("one".into()),
            reason: vexil_core::Reason::TargetingMatch,
            error_code: None,
            error_message: None,
            metadata: Arc::new(metadata.into()),
        };
        let text = serde_json::to_string(&entry("f", &success).1).expect("serializable");
        assert_eq!(
            text,
            r#"{"key":"f","metadata":{"owner":"payments"},"reason":"TARGETING_MATCH","value":1.0,"variant":"one"}"#
        );
        let failure = Resolution {
            value: None,
            variant: None,
            reason: vexil_core::Reason::Error,
            error_code: Some(ErrorCode::ParseError),
            error_message: Some("bad rule".into()),
            metadata: Arc::default(),
        };
        let (status, e) = entry("g", &failure);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            serde_json::to_string(&e).expect("serializable"),
            r#"{"errorCode":"PARSE_ERROR","errorDetails":"bad rule","key":"g","metadata":{}}"#
        );
        let bulk = Bulk {
            flags: &vec![("f".into(), success), ("g".into(), failure)],
            metadata: BulkMetadata { revision: 7 },
        };
        let text = serde_json::to_string(&bulk).expect("serializable");
        assert!(text.starts_with(r#"{"flags":[{"key":"f","#), "{text}");
        assert!(
            text.ends_with(r#""key":"g","metadata":{}}],"metadata":{"revision":7}}"#),
            "{text}"
        );
    }
}
