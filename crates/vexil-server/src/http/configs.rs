//! REST handlers for dynamic configuration under `/api/v1/namespaces/{ns}/configs`: parse,
//! authorize, call [`vexil_service::ConfigService`], convert.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use vexil_service::Permission;

use super::admin::Params;
use super::extract::{Caller, IfMatch, JsonBody, with_etag};
use super::problem::{ApiError, Problem};
use super::schema;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

/// The expected version of a PUT: `If-Match`, or `If-None-Match: *` for "only if absent"
/// (version 0). Any other `If-None-Match` is refused rather than ignored.
fn put_condition(if_match: Option<u64>, headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::IF_NONE_MATCH).map(HeaderValue::to_str) {
        None => Ok(if_match),
        Some(Ok("*")) if if_match.is_none() => Ok(Some(0)),
        Some(_) => Err(ApiError(Problem::bad_request(
            "If-None-Match on a configuration entry must be `*` (create only), without If-Match",
        ))),
    }
}

/// List a namespace's configuration
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/configs",
    tag = "configs",
    params(schema::NamespacePath),
    responses(
        (status = 200, description = "Every entry, in key order", body = schema::ConfigList),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn list_configs(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::ConfigRead, &ns)?;
    let items = app.configs.list(&pass, &ns).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Read a configuration entry
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/configs/{key}",
    tag = "configs",
    params(schema::KeyPath),
    responses(
        (status = 200, description = "The entry", body = schema::ConfigEntry, headers(("ETag" = String, description = "Its version, e.g. `\"3\"`"))),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn get_config(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
) -> Result<Response> {
    let pass = p.authorize(Permission::ConfigRead, &ns)?;
    let c = app.configs.get(&pass, &ns, &key).await?;
    Ok(with_etag(c.version, &c, StatusCode::OK))
}

/// Create or replace a configuration entry
///
/// Creates the entry (201) or writes its next version (200). The value must satisfy the
/// entry's JSON Schema; a value that does not is refused with one error per failing location
/// (`value/<JSON pointer>`) and nothing is written. An absent `schema` or `description` keeps
/// the current one. `If-Match` makes the write conditional on a version, `If-None-Match: *` on
/// the entry not existing; without either, the write applies over the current version.
#[utoipa::path(
    put,
    path = "/api/v1/namespaces/{ns}/configs/{key}",
    tag = "configs",
    params(schema::KeyPath, schema::IfMatchHeader),
    request_body = schema::ConfigInput,
    responses(
        (status = 200, description = "The entry's new version", body = schema::ConfigEntry, headers(("ETag" = String, description = "Its version"))),
        (status = 201, description = "Created", body = schema::ConfigEntry, headers(("ETag" = String, description = "Its version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn put_config(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(if_match): IfMatch,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::ConfigWrite, &ns)?;
    let expected = put_condition(if_match, &headers)?;
    let w = app.configs.put(&pass, &ns, &key, &body, expected).await?;
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(w.entry.version, &w.entry, status))
}

/// Delete a configuration entry
///
/// Removes the entry and its history; the audit log keeps both.
#[utoipa::path(
    delete,
    path = "/api/v1/namespaces/{ns}/configs/{key}",
    tag = "configs",
    params(schema::KeyPath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn delete_config(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::ConfigWrite, &ns)?;
    app.configs.delete(&pass, &ns, &key, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/configs/{key}/versions` query.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct VersionParams {
    /// Only versions after this one (the last version of the previous page).
    after_version: Option<u64>,
    /// Page size: 0 or absent means 100; capped at 1000.
    limit: Option<usize>,
}

/// A configuration entry's versions
///
/// Every version the entry has had since it was created, oldest first, each exactly as it was
/// written (value, schema, description, who and when).
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/configs/{key}/versions",
    tag = "configs",
    params(schema::KeyPath, VersionParams),
    responses(
        (status = 200, description = "Versions, oldest first", body = schema::ConfigList),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn config_versions(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    Params(q): Params<VersionParams>,
) -> Result<Response> {
    let pass = p.authorize(Permission::ConfigRead, &ns)?;
    let items = app
        .configs
        .versions(
            &pass,
            &ns,
            &key,
            q.after_version.unwrap_or(0),
            q.limit.unwrap_or(0),
        )
        .await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Roll a configuration entry back
///
/// Writes the value, schema and description of an earlier version as the next version, so the
/// rollback itself shows in the history and can be undone. `If-Match` makes it conditional on
/// the current version.
#[utoipa::path(
    post,
    path = "/api/v1/namespaces/{ns}/configs/{key}/rollback",
    tag = "configs",
    params(schema::KeyPath, schema::IfMatchHeader),
    request_body = schema::RollbackRequest,
    responses(
        (status = 200, description = "The entry's new version", body = schema::ConfigEntry, headers(("ETag" = String, description = "Its version"))),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn rollback_config(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::ConfigWrite, &ns)?;
    let c = app
        .configs
        .rollback(&pass, &ns, &key, &body, expected)
        .await?;
    Ok(with_etag(c.version, &c, StatusCode::OK))
}
