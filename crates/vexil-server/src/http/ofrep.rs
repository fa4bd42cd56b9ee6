//! OFREP (`/ofrep/v1`), per the OpenFeature Remote Evaluation Protocol's OpenAPI document.
//!
//! The namespace comes from `x-vexil-namespace` (default `default`). Success bodies always carry
//! `variant` (possibly `""`): the Python provider rejects a success without it. A resolution with
//! no value (DISABLED, no default variant) is OFREP's code-default form: no `value` field.
//! Errors of a single evaluation use OFREP's bodies, not problem+json: FLAG_NOT_FOUND is 404,
//! other evaluation errors 400. Bulk responses carry an ETag over (namespace revision,
//! canonical context) and answer a matching `If-None-Match` with 304.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use vexil_core::{ErrorCode, Resolution};
use vexil_service::{DEFAULT_NAMESPACE, Permission, ServiceError};

use super::extract::{Caller, body_bytes, is_json};
use super::schema;
use crate::AppState;

/// The namespace header.
pub const NAMESPACE_HEADER: &str = "x-vexil-namespace";

fn namespace(headers: &HeaderMap) -> String {
    headers
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned()
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

/// Reads `{"context": {...}}`. A missing or null context is the empty context.
async fn read_context(req: Request) -> Result<Value, Response> {
    if !is_json(req.headers()) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            None,
            "INVALID_CONTEXT",
            "send the request as application/json",
        ));
    }
    let bytes = body_bytes(req, &())
        .await
        .map_err(IntoResponse::into_response)?;
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            None,
            "INVALID_CONTEXT",
            format!("malformed JSON: {e}"),
        )
    })?;
    // The request itself must be an object: `Value::get` on `[…]`, `"…"` or `5` is None, which
    // would silently evaluate a malformed request against the empty context.
    if !body.is_object() {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            None,
            "INVALID_CONTEXT",
            format!(
                "the request body must be an object {{\"context\": {{…}}}}, found {}",
                vexil_core::validate::type_name(&body)
            ),
        ));
    }
    // Moved out, not cloned: the context is the largest part of the request.
    let context = match body {
        Value::Object(mut m) => m.remove("context"),
        _ => None,
    };
    match context {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(ctx @ Value::Object(_)) => Ok(ctx),
        Some(other) => Err(failure(
            StatusCode::BAD_REQUEST,
            None,
            "INVALID_CONTEXT",
            format!(
                "context must be an object, found {}",
                vexil_core::validate::type_name(&other)
            ),
        )),
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
    metadata: &'a Map<String, Value>,
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

/// A JSON response written into a buffer of about the right size. axum's `Json` starts from
/// 128 bytes and grows by doubling, which for a bulk answer of ~9 KB is several reallocations
/// and copies per request.
fn json_response<T: Serialize>(status: StatusCode, body: &T, capacity: usize) -> Response {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
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

/// Room for one entry of a typical answer (~90 bytes: key, reason, variant, small value and
/// metadata), so most answers are written without growing the buffer.
const ENTRY_CAPACITY: usize = 128;

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
    Path(key): Path<String>,
    req: Request,
) -> Response {
    // The headers are read from the request rather than through a `HeaderMap` extractor, which
    // would clone them all.
    let ns = namespace(req.headers());
    let context = match read_context(req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let result = p
        .authorize(Permission::Evaluate, &ns)
        .and_then(|pass| app.flags.evaluate(&pass, &ns, &key, &context));
    match result {
        Ok(out) => {
            let (status, body) = entry(&key, &out.result);
            json_response(status, &body, ENTRY_CAPACITY)
        }
        Err(e) => service_failure(e),
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
    // Only these two headers are needed; a `HeaderMap` extractor would clone them all.
    let ns = namespace(req.headers());
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    let context = match read_context(req).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let pass = match p.authorize(Permission::Evaluate, &ns) {
        Ok(pass) => pass,
        Err(e) => return service_failure(e),
    };
    // The revision is read before evaluating: if a change lands in between, the ETag is older
    // than the body and the client simply re-fetches once more.
    let revision = match app.flags.revision(&pass, &ns) {
        Ok(r) => r,
        Err(e) => return service_failure(e),
    };
    let tag = bulk_etag(&ns, revision, &context);
    if matches_etag(if_none_match.as_ref(), &tag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&tag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        return r;
    }
    match app.flags.evaluate_all(&pass, &ns, &context) {
        Ok(out) => {
            // Usually nothing changed in between, and the tag computed above still holds.
            let tag = if out.revision == revision {
                tag
            } else {
                bulk_etag(&ns, out.revision, &context)
            };
            let body = Bulk {
                flags: &out.result,
                metadata: BulkMetadata {
                    revision: out.revision,
                },
            };
            let capacity = 64 + ENTRY_CAPACITY * out.result.len();
            let mut r = json_response(StatusCode::OK, &body, capacity);
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
            metadata: Arc::new(metadata),
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
