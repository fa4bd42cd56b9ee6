//! REST admin handlers under `/api/v1`: parse, authorize, call the service, convert.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use vexil_core::FlagState;
use vexil_core::domain::{Flag, Namespace, Segment};
use vexil_service::{ImportMode, Permission, WriteOptions};
use vexil_store::FlagQuery;

use utoipa::IntoParams;

use super::extract::{Caller, IfMatch, JsonBody, body_bytes, is_json, with_etag};
use super::problem::{ApiError, Problem};
use super::schema;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

fn flag_response(f: &Flag, status: StatusCode) -> Response {
    with_etag(f.version, f, status)
}

fn segment_response(s: &Segment, status: StatusCode) -> Response {
    with_etag(s.version, s, status)
}

fn namespace_response(n: &Namespace, status: StatusCode) -> Response {
    with_etag(n.version, n, status)
}

/// Query flags on writes.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
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

/// List namespaces
#[utoipa::path(
    get,
    path = "/api/v1/namespaces",
    tag = "namespaces",
    responses(
        (status = 200, description = "All namespaces, in key order", body = schema::NamespaceList),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn list_namespaces(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
) -> Result<Response> {
    let pass = p.authorize_listing(Permission::FlagRead)?;
    let items = app.flags.list_namespaces(&pass).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Create a namespace
#[utoipa::path(
    post,
    path = "/api/v1/namespaces",
    tag = "namespaces",
    request_body = schema::NamespaceInput,
    responses(
        (status = 201, description = "Created", body = schema::Namespace, headers(("ETag" = String, description = "The new version, e.g. `\"1\"`"))),
        (status = 400, response = schema::BadRequest),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Read a namespace
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}",
    tag = "namespaces",
    params(schema::NamespacePath),
    responses(
        (status = 200, description = "The namespace", body = schema::Namespace, headers(("ETag" = String, description = "Its version, e.g. `\"3\"`"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn get_namespace(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let n = app.flags.get_namespace(&pass, &ns).await?;
    Ok(namespace_response(&n, StatusCode::OK))
}

/// Replace a namespace's fields
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}",
    tag = "namespaces",
    params(schema::NamespacePath, schema::IfMatchHeader),
    request_body = schema::NamespaceInput,
    responses(
        (status = 200, description = "Updated", body = schema::Namespace, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Delete an empty namespace
///
/// Only an empty namespace can be deleted, and never `default`.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{ns}",
    tag = "namespaces",
    params(schema::NamespacePath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
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
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only flags carrying this tag.
    tag: Option<String>,
    /// Case-insensitive substring of key, name or description.
    q: Option<String>,
    /// Page size: 0 or absent means 100; capped at 1000.
    limit: Option<usize>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// List flags
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/flags",
    tag = "flags",
    params(schema::NamespacePath, ListParams),
    responses(
        (status = 200, description = "One page of flags, in key order", body = schema::FlagPage),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Create a flag
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/flags",
    tag = "flags",
    params(schema::NamespacePath, WriteParams),
    request_body = schema::FlagInput,
    responses(
        (status = 201, description = "Created", body = schema::Flag, headers(("ETag" = String, description = "The new version, e.g. `\"1\"`"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Read a flag
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/flags/{key}",
    tag = "flags",
    params(schema::KeyPath),
    responses(
        (status = 200, description = "The flag", body = schema::Flag, headers(("ETag" = String, description = "Its version, e.g. `\"3\"`"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn get_flag(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let f = app.flags.get_flag(&pass, &ns, &key).await?;
    Ok(flag_response(&f, StatusCode::OK))
}

/// Replace a flag
///
/// The expected version comes from `If-Match`, or else from the body's `version`.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}/flags/{key}",
    tag = "flags",
    params(schema::KeyPath, schema::IfMatchHeader, WriteParams),
    request_body = schema::FlagInput,
    responses(
        (status = 200, description = "Updated", body = schema::Flag, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Merge-patch a flag
///
/// PATCH takes `application/merge-patch+json` (or plain JSON).
#[utoipa::path(
    patch,
    path = "/api/v1/namespaces/{ns}/flags/{key}",
    tag = "flags",
    params(schema::KeyPath, schema::IfMatchHeader, WriteParams),
    request_body(
        description = "A JSON merge patch (RFC 7386)",
        content(
            (schema::FlagPatch = "application/merge-patch+json"),
            (schema::FlagPatch = "application/json"),
        )
    ),
    responses(
        (status = 200, description = "Updated", body = schema::Flag, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Delete a flag
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{ns}/flags/{key}",
    tag = "flags",
    params(schema::KeyPath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Turn the kill switch off (serve the flag)
///
/// Idempotent: enabling an enabled flag changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/flags/{key}/enable",
    tag = "flags",
    params(schema::KeyPath),
    responses(
        (status = 200, description = "The flag, enabled", body = schema::Flag, headers(("ETag" = String, description = "Its version"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Turn the kill switch on (stop serving the flag)
///
/// Idempotent. A disabled flag evaluates to DISABLED with no value: callers use their default.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/flags/{key}/disable",
    tag = "flags",
    params(schema::KeyPath),
    responses(
        (status = 200, description = "The flag, disabled", body = schema::Flag, headers(("ETag" = String, description = "Its version"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// List segments
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/segments",
    tag = "segments",
    params(schema::NamespacePath),
    responses(
        (status = 200, description = "All segments, in key order", body = schema::SegmentList),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn list_segments(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let items = app.flags.list_segments(&pass, &ns).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Create a segment
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/segments",
    tag = "segments",
    params(schema::NamespacePath),
    request_body = schema::SegmentInput,
    responses(
        (status = 201, description = "Created", body = schema::Segment, headers(("ETag" = String, description = "The new version, e.g. `\"1\"`"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Read a segment
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/segments/{key}",
    tag = "segments",
    params(schema::KeyPath),
    responses(
        (status = 200, description = "The segment", body = schema::Segment, headers(("ETag" = String, description = "Its version"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn get_segment(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let s = app.flags.get_segment(&pass, &ns, &key).await?;
    Ok(segment_response(&s, StatusCode::OK))
}

/// Create or replace a segment
///
/// Without `If-Match` a missing segment is created.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}/segments/{key}",
    tag = "segments",
    params(schema::KeyPath, schema::IfMatchHeader),
    request_body = schema::SegmentInput,
    responses(
        (status = 200, description = "Stored", body = schema::Segment, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Delete a segment
///
/// A segment still referenced by a flag or another segment cannot be deleted (409).
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{ns}/segments/{key}",
    tag = "segments",
    params(schema::KeyPath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
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
#[derive(Debug, Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// `json` (the default) or `yaml`.
    #[param(inline, value_type = Option<schema::ExportFormat>)]
    format: Option<String>,
}

/// Export a namespace as a flagd file
///
/// Flags become `flags`, segments `$evaluators`: the file loads in flagd as it is.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/export",
    tag = "import-export",
    params(schema::NamespacePath, ExportParams),
    responses(
        (status = 200, description = "The flagd file", content(
            (schema::FlagdDocument = "application/json"),
            (schema::FlagdDocument = "application/yaml"),
        )),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
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
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// Report what would change without writing anything.
    #[serde(default)]
    dry_run: bool,
    /// `merge` (the default) keeps flags the file does not mention; `replace` deletes them.
    #[param(inline, value_type = Option<schema::ImportMode>)]
    mode: Option<String>,
}

/// Import a flagd file
///
/// The body is the flagd file itself: JSON, or YAML when the content type says `yaml`. It loads
/// the way flagd loads a file: invalid targeting is stored and reported in `warnings` (those
/// flags answer PARSE_ERROR); anything else invalid rejects the whole file. One atomic commit.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/import",
    tag = "import-export",
    params(schema::NamespacePath, ImportParams),
    request_body(
        description = "A flagd file",
        content(
            (schema::FlagdDocument = "application/json"),
            (schema::FlagdDocument = "application/yaml"),
        )
    ),
    responses(
        (status = 200, description = "What changed (or would change, on a dry run)", body = schema::ImportOutcome),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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

/// Evaluate one flag (optionally explained) or all flags
///
/// Native evaluation in a namespace. With `flagKey`, one flag (with `explain: true`, also the
/// rule as evaluated and why it decided); without it, every flag.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/evaluate",
    tag = "evaluation",
    params(schema::NamespacePath),
    request_body = schema::EvaluateRequest,
    responses(
        (status = 200, description = "One evaluation, one explained evaluation, or all flags, following the request", body = schema::EvaluateResponse),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
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
            // An explanation shows the rules: reading them needs `flag:read`.
            let read = p.authorize(Permission::FlagRead, &ns)?;
            let out = app.flags.explain(&read, &ns, key, &context)?;
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
