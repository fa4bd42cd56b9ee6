//! flagd's gRPC protocols over the service layer: evaluation v1 and v2 (typed resolves,
//! ResolveAll, EventStream) and sync v1 (SyncFlags, FetchAllFlags, GetMetadata).
//!
//! The namespace is the flagd selector (`flagd-selector` metadata, or the deprecated request
//! field for sync), else `x-vexil-namespace`, else `default`. Evaluation errors map as flagd
//! maps them: FLAG_NOT_FOUND → NOT_FOUND, TYPE_MISMATCH → INVALID_ARGUMENT, PARSE_ERROR →
//! DATA_LOSS, GENERAL → UNKNOWN.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vexil_core::{ErrorCode, Reason, Resolution, ValueKind};
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::flagd::sync::v1 as sync;
use vexil_service::{ChangeBatch, Credential, DEFAULT_NAMESPACE, Permission, Principal};

use super::convert::{self, map_to_struct, status};
use crate::AppState;

/// How often EventStream sends `keep_alive`.
pub const KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Bound on each stream's outgoing queue: a slow consumer makes the producer wait (and
/// coalesce), it never grows memory.
const STREAM_BUFFER: usize = 8;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The namespace a request addresses.
pub fn namespace<T>(req: &Request<T>, field: Option<&str>) -> String {
    let md = req.metadata();
    md.get("flagd-selector")
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .or(field.filter(|s| !s.is_empty()))
        .or_else(|| {
            md.get("x-vexil-namespace")
                .and_then(|v| v.to_str().ok())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned()
}

/// Why a stream ended when its caller lost access mid-stream.
pub const REVOKED: &str = "the credential of this stream was revoked or no longer grants access";

/// The authenticated caller: `authorization: Bearer <jwt or vx_ token>` or `x-api-key: vx_…`
/// metadata; none gives the anonymous principal. A credential that is present but invalid is
/// refused here with UNAUTHENTICATED, whatever the method.
///
/// # Errors
/// UNAUTHENTICATED.
pub fn caller<T>(app: &AppState, req: &Request<T>) -> Result<Principal, Status> {
    let md = req.metadata();
    let request_id = md
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let meta = vexil_service::RequestMeta {
        request_id,
        source_ip: req.remote_addr().map(|a| a.ip()),
    };
    let header = |name: &str| -> Result<Option<&str>, Status> {
        match md.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .map_err(|_| Status::unauthenticated(format!("{name} is not valid text"))),
        }
    };
    let credential = match (header("authorization")?, header("x-api-key")?) {
        (Some(auth), _) => {
            let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
            if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                return Err(Status::unauthenticated(
                    "authorization must be \"Bearer <token>\"",
                ));
            }
            Credential::Bearer(rest.trim())
        }
        (None, Some(key)) => Credential::ApiKey(key.trim()),
        (None, None) => Credential::None,
    };
    app.identity.authenticate(credential, meta).map_err(status)
}

fn eval_status(r: &Resolution) -> Option<Status> {
    let code = r.error_code?;
    let msg = r.error_message.clone().unwrap_or_default();
    Some(match code {
        ErrorCode::FlagNotFound => Status::not_found(msg),
        ErrorCode::TypeMismatch | ErrorCode::InvalidContext => Status::invalid_argument(msg),
        ErrorCode::ParseError => Status::data_loss(msg),
        ErrorCode::TargetingKeyMissing => Status::failed_precondition(msg),
        ErrorCode::General => Status::unknown(msg),
    })
}

/// Evaluates one flag typed, as both versions need it. `parts` takes the flag key and context out
/// of the request message, so the context converts to JSON by moving, not copying.
fn resolve<T>(
    app: &AppState,
    req: Request<T>,
    kind: ValueKind,
    parts: impl FnOnce(T) -> (String, Option<prost_types::Struct>),
) -> Result<Resolution, Status> {
    let ns = namespace(&req, None);
    let p = caller(app, &req)?;
    let pass = p.authorize(Permission::Evaluate, &ns).map_err(status)?;
    let (key, ctx) = parts(req.into_inner());
    let context = convert::into_context(ctx)?;
    let out = app
        .flags
        .evaluate(&pass, &ns, &key, &context)
        .map_err(status)?;
    let r = out.result.expect(kind);
    match eval_status(&r) {
        Some(s) => Err(s),
        None => Ok(r),
    }
}

fn metadata(r: &Resolution) -> Option<prost_types::Struct> {
    Some(convert::metadata_to_struct(&r.metadata))
}

fn reason(r: &Resolution) -> String {
    r.reason.as_str().to_owned()
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
            .map(|f| {
                #[expect(clippy::cast_possible_truncation, reason = "integral and in range")]
                let i = f as i64;
                i
            })
    })
}

/// Change events for one namespace, as EventStream needs them: `provider_ready` at once, then
/// `configuration_change` naming the changed flags, and `keep_alive` every [`KEEP_ALIVE`].
fn event_stream<T: Send + 'static>(
    app: Arc<AppState>,
    ns: String,
    principal: Principal,
    make: fn(&str, Option<Map<String, Value>>) -> T,
) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut applied = app.flags.cache().subscribe();
        let mut seen = *applied.borrow_and_update();
        if tx.send(Ok(make("provider_ready", None))).await.is_err() {
            return;
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        let revoked = app
            .identity
            .revoked(principal.clone(), Permission::Evaluate, ns.clone());
        tokio::pin!(revoked);
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = &mut revoked => {
                    let _ = tx.send(Err(Status::unauthenticated(REVOKED))).await;
                    return;
                }
                _ = keep_alive.tick() => {
                    if tx.send(Ok(make("keep_alive", None))).await.is_err() {
                        return;
                    }
                }
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let Ok(pass) = principal.authorize(Permission::Evaluate, &ns) else { return };
                    // Drain everything since the last revision we reported; one event per
                    // wake-up, so a burst of commits coalesces for a slow consumer.
                    let mut keys = Map::new();
                    loop {
                        match app.flags.changes_since(&pass, &ns, seen, 10_000).await {
                            Ok(ChangeBatch::Resync) => {
                                // Too far behind the log to name the keys: everything may
                                // have changed.
                                keys.insert("*".into(), json!({"type": "update"}));
                                seen = app.flags.cache().applied();
                                break;
                            }
                            Ok(ChangeBatch::Changes { changes, last }) => {
                                for c in changes {
                                    match c.kind {
                                        vexil_core::domain::ResourceKind::Flag => {
                                            keys.insert(c.key, json!({"type": if c.after.is_some() { "update" } else { "delete" }}));
                                        }
                                        // Configuration entries are not flags: nothing to announce.
                                        vexil_core::domain::ResourceKind::Config => {}
                                        _ => {
                                            // A segment or namespace change can alter any flag.
                                            keys.insert("*".into(), json!({"type": "update"}));
                                        }
                                    }
                                }
                                if last == seen {
                                    break;
                                }
                                seen = last;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "event stream could not read changes");
                                break;
                            }
                        }
                    }
                    if !keys.is_empty() {
                        let mut data = Map::new();
                        data.insert("flags".into(), Value::Object(keys));
                        if tx.send(Ok(make("configuration_change", Some(data)))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

// ----------------------------------------------------------------------------- v2

/// `flagd.evaluation.v2.Service`.
#[derive(Debug, Clone)]
pub struct EvaluationV2(pub Arc<AppState>);

/// Value and variant are left unset for DISABLED and code-default results.
fn served(r: &Resolution) -> Option<&Value> {
    if r.reason == Reason::Disabled {
        None
    } else {
        r.value.as_deref()
    }
}

#[tonic::async_trait]
impl v2::service_server::Service for EvaluationV2 {
    async fn resolve_boolean(
        &self,
        req: Request<v2::ResolveBooleanRequest>,
    ) -> Result<Response<v2::ResolveBooleanResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Boolean, |m| {
            (m.flag_key, m.context)
        })?;
        Ok(Response::new(v2::ResolveBooleanResponse {
            value: served(&r).and_then(Value::as_bool),
            reason: reason(&r),
            variant: served(&r).and(r.variant.as_deref()).map(str::to_owned),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_string(
        &self,
        req: Request<v2::ResolveStringRequest>,
    ) -> Result<Response<v2::ResolveStringResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::String, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v2::ResolveStringResponse {
            value: served(&r).and_then(Value::as_str).map(str::to_owned),
            reason: reason(&r),
            variant: served(&r).and(r.variant.as_deref()).map(str::to_owned),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_float(
        &self,
        req: Request<v2::ResolveFloatRequest>,
    ) -> Result<Response<v2::ResolveFloatResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Float, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v2::ResolveFloatResponse {
            value: served(&r).and_then(Value::as_f64),
            reason: reason(&r),
            variant: served(&r).and(r.variant.as_deref()).map(str::to_owned),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_int(
        &self,
        req: Request<v2::ResolveIntRequest>,
    ) -> Result<Response<v2::ResolveIntResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Integer, |m| {
            (m.flag_key, m.context)
        })?;
        Ok(Response::new(v2::ResolveIntResponse {
            value: served(&r).and_then(as_i64),
            reason: reason(&r),
            variant: served(&r).and(r.variant.as_deref()).map(str::to_owned),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_object(
        &self,
        req: Request<v2::ResolveObjectRequest>,
    ) -> Result<Response<v2::ResolveObjectResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Object, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v2::ResolveObjectResponse {
            value: served(&r).and_then(Value::as_object).map(map_to_struct),
            reason: reason(&r),
            variant: served(&r).and(r.variant.as_deref()).map(str::to_owned),
            metadata: metadata(&r),
        }))
    }

    type EventStreamStream = BoxStream<v2::EventStreamResponse>;

    async fn event_stream(
        &self,
        req: Request<v2::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let ns = namespace(&req, None);
        let p = caller(&self.0, &req)?;
        p.authorize(Permission::Evaluate, &ns).map_err(status)?;
        Ok(Response::new(event_stream(
            self.0.clone(),
            ns,
            p,
            |t, data| v2::EventStreamResponse {
                r#type: t.to_owned(),
                data: data.as_ref().map(map_to_struct),
            },
        )))
    }
}

// ----------------------------------------------------------------------------- v1

/// `flagd.evaluation.v1.Service`.
#[derive(Debug, Clone)]
pub struct EvaluationV1(pub Arc<AppState>);

fn variant(r: &Resolution) -> String {
    r.variant.as_deref().unwrap_or_default().to_owned()
}

#[tonic::async_trait]
impl v1::service_server::Service for EvaluationV1 {
    async fn resolve_all(
        &self,
        req: Request<v1::ResolveAllRequest>,
    ) -> Result<Response<v1::ResolveAllResponse>, Status> {
        let ns = namespace(&req, None);
        let p = caller(&self.0, &req)?;
        let pass = p.authorize(Permission::Evaluate, &ns).map_err(status)?;
        let context = convert::context(req.get_ref().context.as_ref())?;
        let out = self
            .0
            .flags
            .evaluate_all(&pass, &ns, &context)
            .map_err(status)?;
        let mut flags = std::collections::HashMap::new();
        for (key, r) in &out.result {
            // flagd's ResolveAll lists the flags it could resolve to a value.
            let Some(v) = served(r).filter(|_| r.error_code.is_none()) else {
                continue;
            };
            let value = match v {
                Value::Bool(b) => v1::any_flag::Value::BoolValue(*b),
                Value::String(s) => v1::any_flag::Value::StringValue(s.clone()),
                Value::Number(n) => v1::any_flag::Value::DoubleValue(n.as_f64().unwrap_or(0.0)),
                Value::Object(m) => v1::any_flag::Value::ObjectValue(map_to_struct(m)),
                Value::Null | Value::Array(_) => continue,
            };
            flags.insert(
                key.to_string(),
                v1::AnyFlag {
                    reason: reason(r),
                    variant: variant(r),
                    value: Some(value),
                    metadata: metadata(r),
                },
            );
        }
        let meta = self
            .0
            .flags
            .cache()
            .get(&ns)
            .map(|s| convert::metadata_to_struct(s.flags.metadata()))
            .unwrap_or_default();
        Ok(Response::new(v1::ResolveAllResponse {
            flags,
            metadata: Some(meta),
        }))
    }

    async fn resolve_boolean(
        &self,
        req: Request<v1::ResolveBooleanRequest>,
    ) -> Result<Response<v1::ResolveBooleanResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Boolean, |m| {
            (m.flag_key, m.context)
        })?;
        Ok(Response::new(v1::ResolveBooleanResponse {
            value: served(&r).and_then(Value::as_bool).unwrap_or_default(),
            reason: reason(&r),
            variant: variant(&r),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_string(
        &self,
        req: Request<v1::ResolveStringRequest>,
    ) -> Result<Response<v1::ResolveStringResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::String, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v1::ResolveStringResponse {
            value: served(&r)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            reason: reason(&r),
            variant: variant(&r),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_float(
        &self,
        req: Request<v1::ResolveFloatRequest>,
    ) -> Result<Response<v1::ResolveFloatResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Float, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v1::ResolveFloatResponse {
            value: served(&r).and_then(Value::as_f64).unwrap_or_default(),
            reason: reason(&r),
            variant: variant(&r),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_int(
        &self,
        req: Request<v1::ResolveIntRequest>,
    ) -> Result<Response<v1::ResolveIntResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Integer, |m| {
            (m.flag_key, m.context)
        })?;
        Ok(Response::new(v1::ResolveIntResponse {
            value: served(&r).and_then(as_i64).unwrap_or_default(),
            reason: reason(&r),
            variant: variant(&r),
            metadata: metadata(&r),
        }))
    }

    async fn resolve_object(
        &self,
        req: Request<v1::ResolveObjectRequest>,
    ) -> Result<Response<v1::ResolveObjectResponse>, Status> {
        let r = resolve(&self.0, req, ValueKind::Object, |m| (m.flag_key, m.context))?;
        Ok(Response::new(v1::ResolveObjectResponse {
            value: served(&r).and_then(Value::as_object).map(map_to_struct),
            reason: reason(&r),
            variant: variant(&r),
            metadata: metadata(&r),
        }))
    }

    type EventStreamStream = BoxStream<v1::EventStreamResponse>;

    async fn event_stream(
        &self,
        req: Request<v1::EventStreamRequest>,
    ) -> Result<Response<Self::EventStreamStream>, Status> {
        let ns = namespace(&req, None);
        let p = caller(&self.0, &req)?;
        p.authorize(Permission::Evaluate, &ns).map_err(status)?;
        Ok(Response::new(event_stream(
            self.0.clone(),
            ns,
            p,
            |t, data| v1::EventStreamResponse {
                r#type: t.to_owned(),
                data: data.as_ref().map(map_to_struct),
            },
        )))
    }
}

// ----------------------------------------------------------------------------- sync

/// `flagd.sync.v1.FlagSyncService`.
#[derive(Debug, Clone)]
pub struct Sync(pub Arc<AppState>);

async fn document(
    app: &AppState,
    principal: &Principal,
    ns: &str,
) -> Result<(String, Map<String, Value>, u64), Status> {
    let pass = principal
        .authorize(Permission::Evaluate, ns)
        .map_err(status)?;
    let (doc, ctx, revision) = app.flags.sync_document(&pass, ns).await.map_err(status)?;
    Ok((doc.to_json_string(), ctx, revision))
}

#[tonic::async_trait]
impl sync::flag_sync_service_server::FlagSyncService for Sync {
    type SyncFlagsStream = BoxStream<sync::SyncFlagsResponse>;

    #[expect(
        deprecated,
        reason = "flagd still sends the selector field; it is honoured after the metadata"
    )]
    async fn sync_flags(
        &self,
        req: Request<sync::SyncFlagsRequest>,
    ) -> Result<Response<Self::SyncFlagsStream>, Status> {
        let ns = namespace(&req, Some(&req.get_ref().selector));
        let p = caller(&self.0, &req)?;
        // Fail the call itself (not the stream) for an unknown namespace.
        let (first, ctx, mut sent) = document(&self.0, &p, &ns).await?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let app = self.0.clone();
        tokio::spawn(async move {
            let msg = |doc: String, ctx: &Map<String, Value>| sync::SyncFlagsResponse {
                flag_configuration: doc,
                sync_context: Some(map_to_struct(ctx)),
            };
            if tx.send(Ok(msg(first, &ctx))).await.is_err() {
                return;
            }
            let mut applied = app.flags.cache().subscribe();
            let revoked = app
                .identity
                .revoked(p.clone(), Permission::Evaluate, ns.clone());
            tokio::pin!(revoked);
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = &mut revoked => {
                        let _ = tx.send(Err(Status::unauthenticated(REVOKED))).await;
                        return;
                    }
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let Ok(pass) = p.authorize(Permission::Evaluate, &ns) else { return };
                        // Only namespaces that changed get a new document; the document sent is
                        // always the latest, so a slow consumer skips intermediate states.
                        let touched = match app.flags.changes_since(&pass, &ns, sent, 10_000).await {
                            // Configuration entries are not part of a flag document.
                            Ok(ChangeBatch::Changes { changes, last })
                                if changes
                                    .iter()
                                    .all(|c| c.kind == vexil_core::domain::ResourceKind::Config) =>
                            {
                                sent = last;
                                false
                            }
                            Ok(_) | Err(_) => true,
                        };
                        if !touched {
                            continue;
                        }
                        match document(&app, &p, &ns).await {
                            Ok((doc, ctx, revision)) => {
                                sent = revision;
                                if tx.send(Ok(msg(doc, &ctx))).await.is_err() {
                                    return;
                                }
                            }
                            Err(s) => {
                                let _ = tx.send(Err(s)).await;
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[expect(
        deprecated,
        reason = "flagd still sends the selector field; it is honoured after the metadata"
    )]
    async fn fetch_all_flags(
        &self,
        req: Request<sync::FetchAllFlagsRequest>,
    ) -> Result<Response<sync::FetchAllFlagsResponse>, Status> {
        let ns = namespace(&req, Some(&req.get_ref().selector));
        let (doc, _, _) = document(&self.0, &caller(&self.0, &req)?, &ns).await?;
        Ok(Response::new(sync::FetchAllFlagsResponse {
            flag_configuration: doc,
        }))
    }

    async fn get_metadata(
        &self,
        req: Request<sync::GetMetadataRequest>,
    ) -> Result<Response<sync::GetMetadataResponse>, Status> {
        let ns = namespace(&req, None);
        let p = caller(&self.0, &req)?;
        let (_, ctx, _) = document(&self.0, &p, &ns).await?;
        Ok(Response::new(sync::GetMetadataResponse {
            metadata: Some(map_to_struct(&ctx)),
        }))
    }
}
