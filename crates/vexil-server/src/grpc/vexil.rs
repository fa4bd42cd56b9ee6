//! Vexil's own gRPC API, `vexil.v1`, at parity with the REST API under `/api/v1`.
//!
//! Every RPC is the twin of a REST handler in `http::admin`: it resolves the caller, authorizes
//! the same permission in the same namespace, turns the request message into the REST JSON body
//! (camelCase, flagd's field names), calls the same [`vexil_service::FlagService`] method with
//! the same inputs, and converts the result back. Parsing and validation happen in the service,
//! so both transports accept and reject exactly the same input and leave the same state and
//! audit events. Errors map through [`convert::status`], the one gRPC mapping.
//!
//! A request's namespace is its `namespace` field, else the `x-vexil-namespace` metadata, else
//! `default`. The watch stream lives in [`watch`].

pub mod configs;
pub mod watch;

use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vexil_core::domain::{Flag, Namespace, Segment, UnknownKind};
use vexil_core::{FlagState, Resolution};
use vexil_proto::vexil::v1 as pb;
use vexil_service::{
    DEFAULT_NAMESPACE, ImportMode, ImportOutcome, Permission, ServiceError, WriteOptions,
};
use vexil_store::FlagQuery;

use super::convert::{self, from_json, map_to_struct, status};
use super::flagd::caller;
use crate::AppState;

/// The `vexil.v1` services (all six share this handle).
#[derive(Debug, Clone)]
pub struct VexilApi(pub Arc<AppState>);

// ----------------------------------------------------------------------------- request side

/// The namespace a request addresses: its field, else `x-vexil-namespace`, else `default`.
fn namespace<T>(req: &Request<T>, field: &str) -> String {
    if !field.is_empty() {
        return field.to_owned();
    }
    req.metadata()
        .get("x-vexil-namespace")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned()
}

/// INVALID_ARGUMENT naming `path`, worded as the service words its violations.
fn invalid(path: &str, message: impl Into<String>) -> Status {
    status(ServiceError::invalid(path, message))
}

/// A key the REST API takes from the URL path, where it cannot be empty.
fn required<'a>(value: &'a str, path: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(invalid(path, "is required"))
    } else {
        Ok(value)
    }
}

/// A message field that must be present.
fn present<'a, T>(value: Option<&'a T>, path: &str) -> Result<&'a T, Status> {
    value.ok_or_else(|| invalid(path, "is required"))
}

fn struct_json(s: &prost_types::Struct, path: &str) -> Result<Map<String, Value>, Status> {
    convert::struct_to_map(s, 0).map_err(|m| invalid(path, m))
}

fn value_json(v: &prost_types::Value, path: &str) -> Result<Value, Status> {
    convert::to_json(v, 0).map_err(|m| invalid(path, m))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn write_options(allow_invalid_targeting: bool) -> WriteOptions {
    WriteOptions {
        allow_invalid_targeting,
    }
}

/// A flag message as the REST body `create_flag`/`put_flag` take. Server-assigned fields are
/// left out (REST ignores them), except a non-zero `version`, which `put_flag` reads as the
/// expected version when none is given, as REST's PUT does with the body's `version`.
/// `FLAG_STATE_UNSPECIFIED` leaves `state` out, so the service reports it as required; an
/// unknown enum number is passed on for the service to reject by name.
fn flag_body(f: &pb::Flag) -> Result<Value, Status> {
    let mut m = Map::new();
    if !f.key.is_empty() {
        m.insert("key".into(), f.key.clone().into());
    }
    m.insert("name".into(), f.name.clone().into());
    m.insert("description".into(), f.description.clone().into());
    m.insert(
        "tags".into(),
        Value::Array(f.tags.iter().cloned().map(Value::String).collect()),
    );
    match pb::FlagState::try_from(f.state) {
        Ok(pb::FlagState::Enabled) => {
            m.insert("state".into(), "ENABLED".into());
        }
        Ok(pb::FlagState::Disabled) => {
            m.insert("state".into(), "DISABLED".into());
        }
        Ok(pb::FlagState::Unspecified) => {}
        Err(_) => {
            m.insert("state".into(), f.state.into());
        }
    }
    if let Some(v) = &f.variants {
        m.insert(
            "variants".into(),
            Value::Object(struct_json(v, "variants")?),
        );
    }
    if let Some(d) = &f.default_variant {
        m.insert("defaultVariant".into(), d.clone().into());
    }
    if let Some(t) = &f.targeting {
        m.insert("targeting".into(), value_json(t, "targeting")?);
    }
    if let Some(md) = &f.metadata {
        m.insert(
            "metadata".into(),
            Value::Object(struct_json(md, "metadata")?),
        );
    }
    if f.version != 0 {
        m.insert("version".into(), f.version.into());
    }
    Ok(Value::Object(m))
}

/// A namespace message as the REST body (`{key, name, description, evaluationContext}`); a
/// non-zero `version` as in [`flag_body`].
fn namespace_body(n: &pb::Namespace) -> Result<Value, Status> {
    let mut m = Map::new();
    if !n.key.is_empty() {
        m.insert("key".into(), n.key.clone().into());
    }
    m.insert("name".into(), n.name.clone().into());
    m.insert("description".into(), n.description.clone().into());
    if let Some(c) = &n.evaluation_context {
        m.insert(
            "evaluationContext".into(),
            Value::Object(struct_json(c, "evaluationContext")?),
        );
    }
    m.insert(
        "anonymousEvaluation".into(),
        Value::Bool(n.anonymous_evaluation),
    );
    if n.version != 0 {
        m.insert("version".into(), n.version.into());
    }
    Ok(Value::Object(m))
}

/// A segment message as the REST body (`{key, description, rule}`).
fn segment_body(s: &pb::Segment) -> Result<Value, Status> {
    let mut m = Map::new();
    if !s.key.is_empty() {
        m.insert("key".into(), s.key.clone().into());
    }
    m.insert("description".into(), s.description.clone().into());
    if let Some(r) = &s.rule {
        m.insert("rule".into(), value_json(r, "rule")?);
    }
    Ok(Value::Object(m))
}

// ----------------------------------------------------------------------------- response side

fn flag_message(f: &Flag) -> pb::Flag {
    let d = &f.definition;
    pb::Flag {
        namespace: f.namespace.clone(),
        key: f.key.clone(),
        name: f.name.clone(),
        description: f.description.clone(),
        tags: f.tags.clone(),
        state: i32::from(match d.state {
            FlagState::Enabled => pb::FlagState::Enabled,
            FlagState::Disabled => pb::FlagState::Disabled,
        }),
        variants: Some(map_to_struct(&d.variants)),
        default_variant: d.default_variant.clone(),
        targeting: d.targeting.as_ref().map(from_json),
        metadata: Some(map_to_struct(&d.metadata)),
        version: f.version,
        created_at_ms: f.created_at,
        created_by: f.created_by.clone(),
        updated_at_ms: f.updated_at,
        updated_by: f.updated_by.clone(),
    }
}

fn namespace_message(n: &Namespace) -> pb::Namespace {
    pb::Namespace {
        key: n.key.clone(),
        name: n.name.clone(),
        description: n.description.clone(),
        evaluation_context: Some(map_to_struct(&n.evaluation_context)),
        anonymous_evaluation: n.anonymous_evaluation,
        version: n.version,
        created_at_ms: n.created_at,
        updated_at_ms: n.updated_at,
    }
}

fn segment_message(s: &Segment) -> pb::Segment {
    pb::Segment {
        namespace: s.namespace.clone(),
        key: s.key.clone(),
        description: s.description.clone(),
        rule: Some(from_json(&s.rule)),
        version: s.version,
        created_at_ms: s.created_at,
        updated_at_ms: s.updated_at,
    }
}

fn resolution_message(key: &str, r: &Resolution) -> pb::Resolution {
    pb::Resolution {
        flag_key: key.to_owned(),
        value: r.value.as_deref().map(from_json),
        variant: r.variant.as_deref().map(str::to_owned),
        reason: r.reason.as_str().to_owned(),
        error_code: r.error_code.map(|c| c.as_str().to_owned()),
        error_message: r.error_message.clone(),
        metadata: Some(convert::metadata_to_struct(&r.metadata)),
    }
}

fn import_message(out: ImportOutcome) -> pb::ImportResponse {
    let d = out.diff;
    pb::ImportResponse {
        dry_run: out.dry_run,
        diff: Some(pb::ImportDiff {
            added: d.added,
            changed: d.changed,
            unchanged: d.unchanged,
            removed: d.removed,
            segments_added: d.segments_added,
            segments_changed: d.segments_changed,
            segments_removed: d.segments_removed,
        }),
        warnings: out
            .warnings
            .into_iter()
            .map(|v| pb::Violation {
                path: v.path,
                message: v.message,
            })
            .collect(),
        revision: out.revision,
    }
}

/// `format` of import and export: JSON unless YAML is asked for.
fn is_yaml(format: i32) -> Result<bool, Status> {
    match pb::DocumentFormat::try_from(format) {
        Ok(pb::DocumentFormat::Unspecified | pb::DocumentFormat::Json) => Ok(false),
        Ok(pb::DocumentFormat::Yaml) => Ok(true),
        Err(_) => Err(invalid(
            "format",
            format!("{format} is not a DocumentFormat (JSON or YAML)"),
        )),
    }
}

// ----------------------------------------------------------------------------- namespaces

#[tonic::async_trait]
impl pb::namespace_service_server::NamespaceService for VexilApi {
    async fn list_namespaces(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize_listing(Permission::FlagRead).map_err(status)?;
        let items = self.0.flags.list_namespaces(&pass).await.map_err(status)?;
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: items.iter().map(namespace_message).collect(),
        }))
    }

    async fn get_namespace(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        // Authorize on the raw field first: a caller without the permission learns nothing
        // about what it sent.
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::FlagRead, &req.get_ref().key)
            .map_err(status)?;
        let key = required(&req.get_ref().key, "key")?;
        let n = self
            .0
            .flags
            .get_namespace(&pass, key)
            .await
            .map_err(status)?;
        Ok(Response::new(namespace_message(&n)))
    }

    async fn create_namespace(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let p = caller(&self.0, &req)?;
        let raw_key = req
            .get_ref()
            .namespace
            .as_ref()
            .map(|n| n.key.as_str())
            .unwrap_or_default();
        let pass = p
            .authorize(Permission::FlagWrite, raw_key)
            .map_err(status)?;
        let n = present(req.get_ref().namespace.as_ref(), "namespace")?;
        let body = namespace_body(n)?;
        let created = self
            .0
            .flags
            .create_namespace(&pass, &body)
            .await
            .map_err(status)?;
        Ok(Response::new(namespace_message(&created)))
    }

    async fn update_namespace(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::Namespace>, Status> {
        let r = req.get_ref();
        let p = caller(&self.0, &req)?;
        let raw_key = r
            .namespace
            .as_ref()
            .map(|n| n.key.as_str())
            .unwrap_or_default();
        let pass = p
            .authorize(Permission::FlagWrite, raw_key)
            .map_err(status)?;
        let n = present(r.namespace.as_ref(), "namespace")?;
        let key = required(&n.key, "namespace.key")?;
        let body = namespace_body(n)?;
        let updated = self
            .0
            .flags
            .update_namespace(&pass, key, &body, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(namespace_message(&updated)))
    }

    async fn delete_namespace(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.get_ref();
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &r.key).map_err(status)?;
        let key = required(&r.key, "key")?;
        self.0
            .flags
            .delete_namespace(&pass, key, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}

// ----------------------------------------------------------------------------- flags

#[tonic::async_trait]
impl pb::flag_service_server::FlagService for VexilApi {
    async fn list_flags(
        &self,
        req: Request<pb::ListFlagsRequest>,
    ) -> Result<Response<pb::ListFlagsResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let query = FlagQuery {
            tag: non_empty(&r.tag),
            text: non_empty(&r.q),
            limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
            cursor: non_empty(&r.cursor),
        };
        let page = self
            .0
            .flags
            .list_flags(&pass, &ns, &query)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListFlagsResponse {
            flags: page.items.iter().map(flag_message).collect(),
            next_cursor: page.next_cursor.unwrap_or_default(),
        }))
    }

    async fn get_flag(
        &self,
        req: Request<pb::GetFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let f = self
            .0
            .flags
            .get_flag(&pass, &ns, key)
            .await
            .map_err(status)?;
        Ok(Response::new(flag_message(&f)))
    }

    async fn get_flag_history(
        &self,
        req: Request<pb::GetFlagHistoryRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let events = self
            .0
            .audit
            .flag_history(
                &pass,
                &ns,
                key,
                (r.after_seq > 0).then_some(r.after_seq),
                usize::try_from(r.limit).unwrap_or(usize::MAX),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAuditResponse {
            events: events.iter().map(audit_message).collect(),
        }))
    }

    async fn create_flag(
        &self,
        req: Request<pb::CreateFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let body = flag_body(present(r.flag.as_ref(), "flag")?)?;
        let f = self
            .0
            .flags
            .create_flag(&pass, &ns, &body, write_options(r.allow_invalid_targeting))
            .await
            .map_err(status)?;
        Ok(Response::new(flag_message(&f)))
    }

    async fn update_flag(
        &self,
        req: Request<pb::UpdateFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let flag = present(r.flag.as_ref(), "flag")?;
        let key = required(&flag.key, "flag.key")?;
        let body = flag_body(flag)?;
        let f = self
            .0
            .flags
            .put_flag(
                &pass,
                &ns,
                key,
                &body,
                r.expected_version,
                write_options(r.allow_invalid_targeting),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(flag_message(&f)))
    }

    async fn patch_flag(
        &self,
        req: Request<pb::PatchFlagRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let patch = Value::Object(struct_json(present(r.patch.as_ref(), "patch")?, "patch")?);
        let f = self
            .0
            .flags
            .patch_flag(
                &pass,
                &ns,
                key,
                &patch,
                r.expected_version,
                write_options(r.allow_invalid_targeting),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(flag_message(&f)))
    }

    async fn delete_flag(
        &self,
        req: Request<pb::DeleteFlagRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        self.0
            .flags
            .delete_flag(&pass, &ns, key, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn enable_flag(
        &self,
        req: Request<pb::SetFlagStateRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        self.set_state(&req, FlagState::Enabled).await
    }

    async fn disable_flag(
        &self,
        req: Request<pb::SetFlagStateRequest>,
    ) -> Result<Response<pb::Flag>, Status> {
        self.set_state(&req, FlagState::Disabled).await
    }
}

impl VexilApi {
    /// EnableFlag and DisableFlag: the kill switch.
    async fn set_state(
        &self,
        req: &Request<pb::SetFlagStateRequest>,
        state: FlagState,
    ) -> Result<Response<pb::Flag>, Status> {
        let r = req.get_ref();
        let ns = namespace(req, &r.namespace);
        let p = caller(&self.0, req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let f = self
            .0
            .flags
            .set_flag_state(&pass, &ns, key, state)
            .await
            .map_err(status)?;
        Ok(Response::new(flag_message(&f)))
    }
}

// ----------------------------------------------------------------------------- segments

#[tonic::async_trait]
impl pb::segment_service_server::SegmentService for VexilApi {
    async fn list_segments(
        &self,
        req: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        let ns = namespace(&req, &req.get_ref().namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let items = self
            .0
            .flags
            .list_segments(&pass, &ns)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSegmentsResponse {
            segments: items.iter().map(segment_message).collect(),
        }))
    }

    async fn get_segment(
        &self,
        req: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        let s = self
            .0
            .flags
            .get_segment(&pass, &ns, key)
            .await
            .map_err(status)?;
        Ok(Response::new(segment_message(&s)))
    }

    async fn create_segment(
        &self,
        req: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let body = segment_body(present(r.segment.as_ref(), "segment")?)?;
        let s = self
            .0
            .flags
            .put_segment(&pass, &ns, None, &body, None)
            .await
            .map_err(status)?;
        Ok(Response::new(segment_message(&s)))
    }

    async fn update_segment(
        &self,
        req: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::Segment>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let segment = present(r.segment.as_ref(), "segment")?;
        let key = required(&segment.key, "segment.key")?;
        let body = segment_body(segment)?;
        let s = self
            .0
            .flags
            .put_segment(&pass, &ns, Some(key), &body, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(segment_message(&s)))
    }

    async fn delete_segment(
        &self,
        req: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let key = required(&r.key, "key")?;
        self.0
            .flags
            .delete_segment(&pass, &ns, key, r.expected_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteResponse {}))
    }
}

// ----------------------------------------------------------------------------- import / export

#[tonic::async_trait]
impl pb::import_export_service_server::ImportExportService for VexilApi {
    async fn import(
        &self,
        req: Request<pb::ImportRequest>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagWrite, &ns).map_err(status)?;
        let yaml = is_yaml(r.format)?;
        let mode = match pb::ImportMode::try_from(r.mode) {
            Ok(pb::ImportMode::Unspecified | pb::ImportMode::Merge) => ImportMode::Merge,
            Ok(pb::ImportMode::Replace) => ImportMode::Replace,
            Err(_) => {
                return Err(invalid(
                    "mode",
                    format!("{} is not an ImportMode (MERGE or REPLACE)", r.mode),
                ));
            }
        };
        let out = self
            .0
            .flags
            .import(&pass, &ns, &r.document, yaml, mode, r.dry_run)
            .await
            .map_err(status)?;
        Ok(Response::new(import_message(out)))
    }

    async fn export(
        &self,
        req: Request<pb::ExportRequest>,
    ) -> Result<Response<pb::ExportResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let yaml = is_yaml(r.format)?;
        let doc = self.0.flags.export(&pass, &ns).await.map_err(status)?;
        Ok(Response::new(pb::ExportResponse {
            document: if yaml {
                doc.to_yaml_string()
            } else {
                doc.to_json_string()
            },
        }))
    }
}

// ----------------------------------------------------------------------------- evaluation

/// Flag-level outcomes (FLAG_NOT_FOUND, PARSE_ERROR, ...) are in the resolution, as REST answers
/// them with 200; only a missing namespace or bad input fails the call.
#[tonic::async_trait]
impl pb::evaluation_service_server::EvaluationService for VexilApi {
    async fn evaluate(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::Evaluate, &ns).map_err(status)?;
        let key = required(&r.flag_key, "flag_key")?;
        let context = convert::context(r.context.as_ref())?;
        let out = self
            .0
            .flags
            .evaluate(&pass, &ns, key, &context)
            .map_err(status)?;
        Ok(Response::new(pb::EvaluateResponse {
            resolution: Some(resolution_message(key, &out.result)),
            revision: out.revision,
        }))
    }

    async fn evaluate_all(
        &self,
        req: Request<pb::EvaluateAllRequest>,
    ) -> Result<Response<pb::EvaluateAllResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::Evaluate, &ns).map_err(status)?;
        let context = convert::context(r.context.as_ref())?;
        let out = self
            .0
            .flags
            .evaluate_all(&pass, &ns, &context)
            .map_err(status)?;
        Ok(Response::new(pb::EvaluateAllResponse {
            flags: out
                .result
                .iter()
                .map(|(k, r)| resolution_message(k, r))
                .collect(),
            revision: out.revision,
        }))
    }

    async fn explain(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let r = req.get_ref();
        let ns = namespace(&req, &r.namespace);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::FlagRead, &ns).map_err(status)?;
        let key = required(&r.flag_key, "flag_key")?;
        let context = convert::context(r.context.as_ref())?;
        let out = self
            .0
            .flags
            .explain(&pass, &ns, key, &context)
            .map_err(status)?;
        let e = out.result;
        Ok(Response::new(pb::ExplainResponse {
            resolution: Some(resolution_message(key, &e.resolution)),
            rule: e.rule.as_ref().map(from_json),
            rule_result: e.rule_result.as_ref().map(from_json),
            context: Some(match &e.context {
                Value::Object(m) => map_to_struct(m),
                _ => prost_types::Struct::default(),
            }),
            decision: e.decision,
            revision: out.revision,
        }))
    }
}

fn audit_message(e: &vexil_core::domain::AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.clone(),
        seq: e.seq,
        at_ms: e.at,
        actor: Some(pb::Actor {
            kind: e.actor.kind.clone(),
            id: e.actor.id.clone(),
        }),
        action: e.action.clone(),
        kind: e.kind.as_str().to_owned(),
        namespace: e.namespace.clone(),
        key: e.key.clone(),
        before: e.before.as_ref().map(from_json),
        after: e.after.as_ref().map(from_json),
        request_id: e.request_id.clone(),
        source_ip: e.source_ip.clone(),
        prev_hash: e.prev_hash.clone(),
        hash: e.hash.clone(),
    }
}

/// The audit query of a request's filter fields (empty strings and zeros mean "any").
fn audit_filter(
    namespace: &str,
    kind: &str,
    key: &str,
    after_seq: u64,
    limit: usize,
) -> Result<vexil_store::AuditQuery, Status> {
    let kind = match kind {
        "" => None,
        name => Some(
            name.parse()
                .map_err(|e: UnknownKind| invalid("kind", e.to_string()))?,
        ),
    };
    Ok(vexil_store::AuditQuery {
        namespace: non_empty(namespace),
        kind,
        key: non_empty(key),
        after_seq: (after_seq > 0).then_some(after_seq),
        limit,
    })
}

/// The stream `ExportAudit` answers with.
type AuditStream = Pin<Box<dyn Stream<Item = Result<pb::AuditEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for VexilApi {
    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.get_ref();
        let scope = non_empty(&r.namespace).unwrap_or_else(|| "*".into());
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::AuditRead, &scope).map_err(status)?;
        let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
        let query = audit_filter(&r.namespace, &r.kind, &r.key, r.after_seq, limit)?;
        let events = self.0.audit.list(&pass, &query).await.map_err(status)?;
        Ok(Response::new(pb::ListAuditResponse {
            events: events.iter().map(audit_message).collect(),
        }))
    }

    type ExportAuditStream = AuditStream;

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let r = req.get_ref();
        let scope = non_empty(&r.namespace).unwrap_or_else(|| "*".into());
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::AuditRead, &scope).map_err(status)?;
        let query = audit_filter(&r.namespace, &r.kind, &r.key, r.after_seq, 0)?;
        let mut export = self.0.audit.export(&pass, query).map_err(status)?;
        // The first page is read before the call answers, so an unreachable store fails the
        // call rather than the stream.
        let first = export
            .next_page()
            .await
            .map_err(status)?
            .unwrap_or_default();
        let events = futures_util::stream::unfold(
            (std::collections::VecDeque::from(first), Some(export)),
            |(mut queue, mut export)| async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        return Some((Ok(audit_message(&e)), (queue, export)));
                    }
                    match export.as_mut()?.next_page().await {
                        Ok(Some(page)) => queue.extend(page),
                        Ok(None) => return None,
                        Err(e) => return Some((Err(status(e)), (queue, None))),
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::AuditRead, "*").map_err(status)?;
        let report = self.0.audit.verify(&pass).await.map_err(status)?;
        Ok(Response::new(pb::VerifyAuditResponse {
            valid: report.valid,
            events: report.events,
            head_seq: report.head_seq,
            head_hash: report.head_hash,
            first_break: report.first_break.map(|b| pb::ChainBreak {
                seq: b.seq,
                reason: b.reason,
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag() -> pb::Flag {
        pb::Flag {
            namespace: "ignored".into(),
            key: "k".into(),
            name: "N".into(),
            tags: vec!["t".into()],
            state: i32::from(pb::FlagState::Enabled),
            variants: Some(map_to_struct(
                serde_json::json!({"on": true, "off": false})
                    .as_object()
                    .unwrap_or(&Map::new()),
            )),
            default_variant: Some("off".into()),
            targeting: Some(from_json(&serde_json::json!({"$ref": "seg"}))),
            created_by: "ignored".into(),
            ..pb::Flag::default()
        }
    }

    #[test]
    fn a_flag_message_becomes_the_rest_body_without_server_assigned_fields() {
        let body = flag_body(&flag()).unwrap_or_default();
        assert_eq!(
            body,
            serde_json::json!({
                "key": "k", "name": "N", "description": "", "tags": ["t"], "state": "ENABLED",
                "variants": {"on": true, "off": false}, "defaultVariant": "off",
                "targeting": {"$ref": "seg"}
            })
        );
    }

    #[test]
    fn an_unspecified_state_is_left_for_the_service_to_require_and_a_version_is_kept() {
        let body = flag_body(&pb::Flag {
            state: 0,
            version: 3,
            ..flag()
        })
        .unwrap_or_default();
        assert!(body.get("state").is_none());
        assert_eq!(body["version"], 3);
        let unknown = flag_body(&pb::Flag { state: 9, ..flag() }).unwrap_or_default();
        assert_eq!(unknown["state"], 9);
    }

    #[test]
    fn an_unknown_document_format_names_the_field() {
        let e = is_yaml(7).expect_err("unknown format");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("format:"), "{}", e.message());
    }
}
