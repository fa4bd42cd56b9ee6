//! REST admin handlers under `/api/v1`: parse, authorize, call the service, convert.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vexil_core::FlagState;
use vexil_core::domain::{Flag, Namespace, Segment};
use vexil_service::{ImportMode, Permission, WriteOptions};
use vexil_store::FlagQuery;

use super::extract::{Caller, IfMatch, JsonBody, body_bytes, etag, is_json};
use super::problem::{ApiError, Problem};
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

fn with_etag(version: u64, body: Value, status: StatusCode) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn flag_response(f: &Flag, status: StatusCode) -> Response {
    with_etag(
        f.version,
        serde_json::to_value(f).unwrap_or(Value::Null),
        status,
    )
}

fn segment_response(s: &Segment, status: StatusCode) -> Response {
    with_etag(
        s.version,
        serde_json::to_value(s).unwrap_or(Value::Null),
        status,
    )
}

fn namespace_response(n: &Namespace, status: StatusCode) -> Response {
    with_etag(
        n.version,
        serde_json::to_value(n).unwrap_or(Value::Null),
        status,
    )
}

/// Query flags on writes.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    /// Store invalid targeting anyway (it answers PARSE_ERROR).
    #[serde(default)]
    allow_invalid_targeting: bool,
}

impl From<WriteParams> for WriteOptions {
    fn from(p: WriteParams) -> Self {
        WriteOptions {
            allow_invalid_targeting: p.allow_invalid_targeting,
        }
    }
}

/// `?…` parsing that fails as problem+json instead of axum's plain text.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned + Default + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Params(t)),
            Err(e) => Err(ApiError(Problem::bad_request(format!(
                "invalid query string: {}",
                e.body_text()
            )))),
        }
    }
}

// ------------------------------------------------------------------ namespaces

pub async fn list_namespaces(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, "*")?;
    let items = app.flags.list_namespaces(&pass).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn create_namespace(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let key = body
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let pass = p.authorize(Permission::FlagWrite, &key)?;
    let ns = app.flags.create_namespace(&pass, &body).await?;
    Ok(namespace_response(&ns, StatusCode::CREATED))
}

pub async fn get_namespace(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let n = app.flags.get_namespace(&pass, &ns).await?;
    Ok(namespace_response(&n, StatusCode::OK))
}

pub async fn put_namespace(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let n = app
        .flags
        .update_namespace(&pass, &ns, &body, expected)
        .await?;
    Ok(namespace_response(&n, StatusCode::OK))
}

pub async fn delete_namespace(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    app.flags.delete_namespace(&pass, &ns, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ flags

/// `GET …/flags` query.
#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    tag: Option<String>,
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub async fn list_flags(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    Params(q): Params<ListParams>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let query = FlagQuery {
        tag: q.tag,
        text: q.q,
        limit: q.limit.unwrap_or(0),
        cursor: q.cursor,
    };
    let page = app.flags.list_flags(&pass, &ns, &query).await?;
    Ok(Json(json!({ "items": page.items, "nextCursor": page.next_cursor })).into_response())
}

pub async fn create_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    Params(w): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let f = app.flags.create_flag(&pass, &ns, &body, w.into()).await?;
    Ok(flag_response(&f, StatusCode::CREATED))
}

pub async fn get_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let f = app.flags.get_flag(&pass, &ns, &key).await?;
    Ok(flag_response(&f, StatusCode::OK))
}

pub async fn put_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    Params(w): Params<WriteParams>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let f = app
        .flags
        .put_flag(&pass, &ns, &key, &body, expected, w.into())
        .await?;
    Ok(flag_response(&f, StatusCode::OK))
}

/// PATCH takes `application/merge-patch+json` (or plain JSON).
pub async fn patch_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    Params(w): Params<WriteParams>,
    JsonBody(patch): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let f = app
        .flags
        .patch_flag(&pass, &ns, &key, &patch, expected, w.into())
        .await?;
    Ok(flag_response(&f, StatusCode::OK))
}

pub async fn delete_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    app.flags.delete_flag(&pass, &ns, &key, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn enable_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let f = app
        .flags
        .set_flag_state(&pass, &ns, &key, FlagState::Enabled)
        .await?;
    Ok(flag_response(&f, StatusCode::OK))
}

pub async fn disable_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let f = app
        .flags
        .set_flag_state(&pass, &ns, &key, FlagState::Disabled)
        .await?;
    Ok(flag_response(&f, StatusCode::OK))
}

// ------------------------------------------------------------------ segments

pub async fn list_segments(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let items = app.flags.list_segments(&pass, &ns).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn create_segment(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let s = app.flags.put_segment(&pass, &ns, None, &body, None).await?;
    Ok(segment_response(&s, StatusCode::CREATED))
}

pub async fn get_segment(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let s = app.flags.get_segment(&pass, &ns, &key).await?;
    Ok(segment_response(&s, StatusCode::OK))
}

pub async fn put_segment(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let s = app
        .flags
        .put_segment(&pass, &ns, Some(&key), &body, expected)
        .await?;
    Ok(segment_response(&s, StatusCode::OK))
}

pub async fn delete_segment(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    app.flags.delete_segment(&pass, &ns, &key, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ import / export

/// `GET …/export` query.
#[derive(Debug, Deserialize, Default)]
pub struct ExportParams {
    format: Option<String>,
}

pub async fn export(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    Params(q): Params<ExportParams>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let doc = app.flags.export(&pass, &ns).await?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok((
            [(header::CONTENT_TYPE, "application/json")],
            doc.to_json_string(),
        )
            .into_response()),
        "yaml" | "yml" => Ok((
            [(header::CONTENT_TYPE, "application/yaml")],
            doc.to_yaml_string(),
        )
            .into_response()),
        other => Err(ApiError(Problem::bad_request(format!(
            "format must be json or yaml, not {other:?}"
        )))),
    }
}

/// `POST …/import` query.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImportParams {
    #[serde(default)]
    dry_run: bool,
    mode: Option<String>,
}

pub async fn import(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    Params(q): Params<ImportParams>,
    headers: HeaderMap,
    req: Request,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagWrite, &ns)?;
    let mode = match q.mode.as_deref().unwrap_or("merge") {
        "merge" => ImportMode::Merge,
        "replace" => ImportMode::Replace,
        other => {
            return Err(ApiError(Problem::bad_request(format!(
                "mode must be merge or replace, not {other:?}"
            ))));
        }
    };
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let yaml = media.contains("yaml");
    if !yaml && !is_json(&headers) {
        return Err(ApiError(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send a flagd file as application/json or application/yaml",
        )));
    }
    let bytes = body_bytes(req, &()).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError(Problem::bad_request("the body is not UTF-8")))?;
    let out = app
        .flags
        .import(&pass, &ns, text, yaml, mode, q.dry_run)
        .await?;
    Ok(Json(out).into_response())
}

// ------------------------------------------------------------------ evaluation

/// `POST …/evaluate`.
pub async fn evaluate(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::Evaluate, &ns)?;
    let Some(obj) = body.as_object() else {
        return Err(ApiError(Problem::bad_request(
            "the body must be an object {flagKey?, context, explain?}",
        )));
    };
    let context = obj.get("context").cloned().unwrap_or(Value::Null);
    let explain = obj.get("explain").and_then(Value::as_bool).unwrap_or(false);
    match obj.get("flagKey") {
        Some(Value::String(key)) if explain => {
            let out = app.flags.explain(&pass, &ns, key, &context)?;
            Ok(Json(json!({ "flagKey": key, "revision": out.revision, "explanation": out.result, "resolution": out.result.resolution })).into_response())
        }
        Some(Value::String(key)) => {
            let out = app.flags.evaluate(&pass, &ns, key, &context)?;
            let mut v = serde_json::to_value(&out.result).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("flagKey".into(), Value::String(key.clone()));
                m.insert("revision".into(), out.revision.into());
            }
            Ok(Json(v).into_response())
        }
        Some(other) => Err(ApiError(Problem::bad_request(format!(
            "flagKey must be a string, found {}",
            vexil_core::validate::type_name(other)
        )))),
        None => {
            let out = app.flags.evaluate_all(&pass, &ns, &context)?;
            let flags: Vec<Value> = out
                .result
                .iter()
                .map(|(k, r)| {
                    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("flagKey".into(), Value::String(k.to_string()));
                    }
                    v
                })
                .collect();
            Ok(Json(json!({ "revision": out.revision, "flags": flags })).into_response())
        }
    }
}

// ------------------------------------------------------------------ audit

/// `GET /api/v1/audit` query.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuditParams {
    namespace: Option<String>,
    kind: Option<String>,
    key: Option<String>,
    after_seq: Option<u64>,
    limit: Option<usize>,
}

pub async fn list_audit(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Params(q): Params<AuditParams>,
) -> Result<Response> {
    let scope = q.namespace.clone().unwrap_or_else(|| "*".into());
    let pass = p.authorize(Permission::AuditRead, &scope)?;
    let kind = match q.kind.as_deref() {
        None => None,
        Some("flag") => Some(vexil_core::domain::ResourceKind::Flag),
        Some("segment") => Some(vexil_core::domain::ResourceKind::Segment),
        Some("namespace") => Some(vexil_core::domain::ResourceKind::Namespace),
        Some(other) => {
            return Err(ApiError(Problem::bad_request(format!(
                "kind must be flag, segment or namespace, not {other:?}"
            ))));
        }
    };
    let query = vexil_store::AuditQuery {
        namespace: q.namespace,
        kind,
        key: q.key,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(0),
    };
    let items = app.flags.list_audit(&pass, &query).await?;
    Ok(Json(json!({ "items": items })).into_response())
}
