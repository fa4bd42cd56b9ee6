//! REST audit handlers: query, NDJSON export, chain verification, and a flag's history.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use vexil_core::domain::{AuditEvent, ResourceKind};
use vexil_service::Permission;
use vexil_store::AuditQuery;

use super::admin::Params;
use super::extract::Caller;
use super::problem::ApiError;
use super::schema;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

/// The filters `GET /api/v1/audit` and its export share.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only this namespace.
    namespace: Option<String>,
    /// Only this resource kind.
    #[param(inline, value_type = Option<schema::ResourceKind>)]
    kind: Option<ResourceKind>,
    /// Only this key.
    key: Option<String>,
    /// Only events with a greater `seq` (the last `seq` already read).
    after_seq: Option<u64>,
}

/// `GET /api/v1/audit` query: the filters and a page size. (Not `#[serde(flatten)]` over
/// [`AuditFilter`]: a flattened query string loses its numbers' types.)
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this namespace.
    namespace: Option<String>,
    /// Only this resource kind.
    #[param(inline, value_type = Option<schema::ResourceKind>)]
    kind: Option<ResourceKind>,
    /// Only this key.
    key: Option<String>,
    /// Only events with a greater `seq` (the last `seq` of the previous page).
    after_seq: Option<u64>,
    /// Page size: 0 or absent means 100; capped at 1000.
    limit: Option<usize>,
}

impl AuditParams {
    fn split(self) -> (AuditFilter, usize) {
        let filter = AuditFilter {
            namespace: self.namespace,
            kind: self.kind,
            key: self.key,
            after_seq: self.after_seq,
        };
        (filter, self.limit.unwrap_or(0))
    }
}

impl AuditFilter {
    /// The namespace the caller needs `audit:read` in (`*` when the filter names none).
    fn scope(&self) -> String {
        self.namespace.clone().unwrap_or_else(|| "*".into())
    }

    /// The store query.
    fn query(self, limit: usize) -> AuditQuery {
        AuditQuery {
            namespace: self.namespace,
            kind: self.kind,
            key: self.key,
            after_seq: self.after_seq,
            limit,
        }
    }
}

/// Query the audit log
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "Matching events, in `seq` order", body = schema::AuditPage),
        (status = 400, response = schema::BadRequest),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn list_audit(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Params(q): Params<AuditParams>,
) -> Result<Response> {
    let (filter, limit) = q.split();
    let scope = filter.scope();
    let pass = p.authorize(Permission::AuditRead, &scope)?;
    let query = filter.query(limit);
    let items = app.audit.list(&pass, &query).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// Export the audit log
///
/// Every matching event after `afterSeq`, in `seq` order, one JSON object per line
/// (`application/x-ndjson`), streamed a page at a time. A store failure before the first
/// event is a 503; after it, the response is cut short (no final newline-terminated line),
/// and `afterSeq` set to the last `seq` received resumes it.
#[utoipa::path(
    get,
    path = "/api/v1/audit/export",
    tag = "audit",
    params(AuditFilter),
    responses(
        (status = 200, description = "One audit event (as in `GET /api/v1/audit`) per line", content_type = "application/x-ndjson", body = String),
        (status = 400, response = schema::BadRequest),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn export_audit(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Params(f): Params<AuditFilter>,
) -> Result<Response> {
    let scope = f.scope();
    let pass = p.authorize(Permission::AuditRead, &scope)?;
    let mut export = app.audit.export(&pass, f.query(0))?;
    // The first page is read before the status is sent, so an unreachable store is a 503.
    let first = export.next_page().await?;
    let rest = futures_util::stream::unfold(Some(export), |export| async move {
        let mut export = export?;
        match export.next_page().await {
            Ok(Some(page)) => Some((ndjson(&page), Some(export))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "audit export cut short");
                Some((Err(e.into()), None))
            }
        }
    });
    let pages = futures_util::stream::iter(first.map(|page| ndjson(&page))).chain(rest);
    let mut response = Body::from_stream(pages).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// One page as NDJSON. An event that does not serialize ends the export with an error
/// rather than leaving a silent gap in it.
fn ndjson(events: &[AuditEvent]) -> std::result::Result<Bytes, axum::BoxError> {
    let mut out = Vec::with_capacity(events.len() * 512);
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// Verify the audit chain
///
/// Walks the whole log from the first event and checks that each event's `seq` follows the
/// last, that its `prevHash` is the last event's `hash`, and that its `hash` matches its
/// content. A broken chain is reported (`valid: false` and the first event that does not
/// follow), not an error. Record `headHash` outside Vexil to detect a log rewritten whole.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "What the check found", body = schema::ChainReport),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn verify_audit(State(app): State<Arc<AppState>>, Caller(p): Caller) -> Result<Response> {
    let pass = p.authorize(Permission::AuditRead, "*")?;
    let report = app.audit.verify(&pass).await?;
    Ok(Json(report).into_response())
}

/// `GET …/flags/{key}/history` query.
#[derive(Debug, Deserialize, Default, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Only events with a greater `seq` (the last `seq` of the previous page).
    after_seq: Option<u64>,
    /// Page size: 0 or absent means 100; capped at 1000.
    limit: Option<usize>,
}

/// A flag's history
///
/// The audit events of one flag, oldest first: who created, changed, enabled, disabled,
/// imported or deleted it, with the flag before and after each change. Needs `flag:read`
/// only. A deleted flag keeps its history; a flag that never existed is a 404.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/flags/{key}/history",
    tag = "flags",
    params(schema::KeyPath, HistoryParams),
    responses(
        (status = 200, description = "The flag's events, in `seq` order", body = schema::AuditPage),
        (status = 400, response = schema::BadRequest),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn flag_history(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path((ns, key)): Path<(String, String)>,
    Params(q): Params<HistoryParams>,
) -> Result<Response> {
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    let items = app
        .audit
        .flag_history(&pass, &ns, &key, q.after_seq, q.limit.unwrap_or(0))
        .await?;
    Ok(Json(json!({ "items": items })).into_response())
}
