//! The flag service: namespaces, flags and segments (CRUD, kill switch, import/export) and
//! evaluation.
//!
//! Every write follows one pattern: read the current state, check the caller's expected version
//! against it, validate, then commit a compare-and-set batch on the version just read together
//! with the audit event describing exactly that transition. A racing writer makes the store's
//! CAS fail, so no update is lost and none is applied twice; conditional writes surface the
//! conflict, unconditional ones retry on fresh state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use vexil_core::context::ParsedContext;
use vexil_core::domain::{
    self, AuditEvent, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};
use vexil_core::{
    Explanation, FlagDefinition, FlagDocument, FlagSetOptions, FlagState, Resolution, Schema,
    TargetingPolicy, Violation,
};
use vexil_store::{Expect, FlagQuery, Page, StoreError, Write};

use crate::snapshot::{NamespaceSnapshot, SnapshotCache};
use crate::{Pass, Permission, ServiceError, Store};

/// The namespace that always exists.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How many times an unconditional write retries after losing a race.
const RETRIES: usize = 5;

/// Service tuning.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// How long a write waits for the local snapshot to apply it before returning (so a client
    /// reads its own writes from this replica).
    pub read_your_writes: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            read_your_writes: Duration::from_secs(2),
        }
    }
}

/// Per-write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Store a flag whose targeting is invalid (it will answer PARSE_ERROR), instead of
    /// rejecting it. Off by default: the write API protects production from typos.
    pub allow_invalid_targeting: bool,
}

/// How an import treats flags the file does not mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportMode {
    /// Keep them.
    #[default]
    Merge,
    /// Delete them (the namespace ends up exactly as the file).
    Replace,
}

/// What an import changes (or would change, on a dry run).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportDiff {
    /// Flags the file adds.
    pub added: Vec<String>,
    /// Flags whose definition the file changes.
    pub changed: Vec<String>,
    /// Flags that stay as they are.
    pub unchanged: Vec<String>,
    /// Flags deleted (replace mode only).
    pub removed: Vec<String>,
    /// Segments (`$evaluators`) added.
    pub segments_added: Vec<String>,
    /// Segments changed.
    pub segments_changed: Vec<String>,
    /// Segments deleted (replace mode only).
    pub segments_removed: Vec<String>,
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportOutcome {
    /// Whether anything was written.
    pub dry_run: bool,
    /// The changes.
    pub diff: ImportDiff,
    /// Problems flagd tolerates (invalid targeting): those flags answer PARSE_ERROR.
    pub warnings: Vec<Violation>,
    /// The revision committed (the current one for a dry run or an empty diff).
    pub revision: Revision,
}

/// An evaluation and the snapshot revision it ran against.
#[derive(Debug, Clone)]
pub struct EvaluateOutcome<T> {
    /// The result.
    pub result: T,
    /// The snapshot's revision (part of OFREP's bulk ETag).
    pub revision: Revision,
}

/// What a change-feed consumer gets next ([`FlagService::changes_since`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeBatch {
    /// The namespace's changes (possibly none) and the store revision they reach: resume
    /// after `last`.
    Changes {
        /// The changes, in revision order.
        changes: Vec<vexil_core::domain::Change>,
        /// The revision to resume after.
        last: Revision,
    },
    /// The store's log no longer reaches back to the revision asked for: start again from a
    /// snapshot ([`FlagService::namespace_state`]).
    Resync,
}

/// The flag service. Cheap to clone.
#[derive(Clone)]
pub struct FlagService {
    store: Arc<dyn Store>,
    cache: SnapshotCache,
    options: ServiceOptions,
}

impl std::fmt::Debug for FlagService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagService")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Runs a read-check-commit attempt; when the caller set no expected version and the attempt
/// lost a race (the version moved between read and commit), tries again on fresh state.
pub(crate) async fn retrying<T, F, Fut>(
    expected: Option<u64>,
    mut attempt: F,
) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Err(ServiceError::VersionConflict { .. }) if expected.is_none() && tries < RETRIES => {
                tries += 1
            }
            other => return other,
        }
    }
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

pub(crate) fn audit(
    pass: &Pass<'_>,
    action: &str,
    kind: ResourceKind,
    ns: &str,
    key: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEvent {
    let p = pass.principal();
    AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        seq: 0,
        at: now_millis(),
        actor: p.actor().clone(),
        action: action.to_owned(),
        kind,
        namespace: ns.to_owned(),
        key: key.to_owned(),
        before,
        after,
        request_id: p.request_id.clone(),
        source_ip: p.source_ip.map(|ip| ip.to_string()),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// Checks the caller's expected version against the current one.
pub(crate) fn check_expected(
    kind: ResourceKind,
    ns: &str,
    key: &str,
    expected: Option<u64>,
    actual: u64,
) -> Result<(), ServiceError> {
    match expected {
        Some(e) if e != actual => Err(ServiceError::VersionConflict {
            kind,
            namespace: ns.to_owned(),
            key: key.to_owned(),
            expected: e,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Fields a client may send back from a read without them counting as input.
const READ_ONLY: &[&str] = &[
    "namespace",
    "version",
    "createdAt",
    "createdBy",
    "updatedAt",
    "updatedBy",
];

pub(crate) fn object<'v>(
    body: &'v Value,
    what: &str,
) -> Result<&'v Map<String, Value>, ServiceError> {
    body.as_object().ok_or_else(|| {
        ServiceError::invalid(
            "",
            format!(
                "the {what} must be a JSON object, found {}",
                vexil_core::validate::type_name(body)
            ),
        )
    })
}

pub(crate) fn optional_string(
    obj: &Map<String, Value>,
    field: &str,
    v: &mut Vec<Violation>,
) -> String {
    match obj.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            v.push(Violation::new(
                field,
                format!(
                    "must be a string, found {}",
                    vexil_core::validate::type_name(other)
                ),
            ));
            String::new()
        }
    }
}

pub(crate) fn reject_unknown(obj: &Map<String, Value>, allowed: &[&str], v: &mut Vec<Violation>) {
    for k in obj.keys() {
        if !allowed.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str()) {
            v.push(Violation::new(
                k.as_str(),
                format!("unknown field; expected one of [{}]", allowed.join(", ")),
            ));
        }
    }
}

/// The key in the body must match the path's, when both are given.
pub(crate) fn body_key(
    obj: &Map<String, Value>,
    path_key: Option<&str>,
    what: &'static str,
    v: &mut Vec<Violation>,
) -> Option<String> {
    let body = match obj.get("key") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            v.push(Violation::new(
                "key",
                format!(
                    "must be a string, found {}",
                    vexil_core::validate::type_name(other)
                ),
            ));
            return None;
        }
    };
    let key = match (path_key, body) {
        (Some(p), Some(b)) if p != b => {
            v.push(Violation::new(
                "key",
                format!("\"{b}\" does not match the key in the URL, \"{p}\""),
            ));
            return None;
        }
        (Some(p), _) => p.to_owned(),
        (None, Some(b)) => b,
        (None, None) => {
            v.push(Violation::new("key", "is required"));
            return None;
        }
    };
    let check = if what == "namespace" {
        domain::validate_namespace_key(&key)
    } else {
        domain::validate_flag_key(what, &key)
    };
    match check {
        Ok(()) => Some(key),
        Err(e) => {
            v.push(Violation::new("key", e.rule));
            None
        }
    }
}

pub(crate) fn done<T>(value: T, violations: Vec<Violation>) -> Result<T, ServiceError> {
    if violations.is_empty() {
        Ok(value)
    } else {
        Err(ServiceError::Invalid { violations })
    }
}

impl FlagService {
    /// A service over `store`, evaluating from `cache`.
    pub fn new(store: Arc<dyn Store>, cache: SnapshotCache, options: ServiceOptions) -> Self {
        Self {
            store,
            cache,
            options,
        }
    }

    /// The snapshot cache (readiness, watchers).
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    async fn settle(&self, revision: Revision) {
        if !self
            .cache
            .wait_for(revision, self.options.read_your_writes)
            .await
        {
            tracing::warn!(
                revision,
                "snapshot did not apply a commit in time; reads may be stale"
            );
        }
    }

    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<vexil_store::Committed, StoreError> {
        let c = self.store.commit(writes, audit).await?;
        self.settle(c.revision).await;
        Ok(c)
    }

    /// Creates the `default` namespace if it is missing. Idempotent.
    ///
    /// # Errors
    /// Store errors.
    pub async fn ensure_default_namespace(&self, pass: &Pass<'_>) -> Result<(), ServiceError> {
        match self.store.get_namespace(DEFAULT_NAMESPACE).await {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound { .. }) => {
                let body = serde_json::json!({"key": DEFAULT_NAMESPACE, "name": "Default"});
                match self.create_namespace(pass, &body).await {
                    Ok(_) | Err(ServiceError::AlreadyExists { .. }) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    // ---------------------------------------------------------------- namespaces

    /// The namespaces the caller may read: a listing pass for `FlagRead` (see
    /// [`Principal::authorize_listing`](crate::Principal::authorize_listing)) filters to the
    /// namespaces it grants.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_namespaces(&self, pass: &Pass<'_>) -> Result<Vec<Namespace>, ServiceError> {
        pass.require_listing(Permission::FlagRead)?;
        let p = pass.principal();
        let mut all = self.store.list_namespaces().await?;
        all.retain(|n| p.allows(Permission::FlagRead, &n.key));
        Ok(all)
    }

    /// One namespace. Requires `FlagRead` on it.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn get_namespace(
        &self,
        pass: &Pass<'_>,
        key: &str,
    ) -> Result<Namespace, ServiceError> {
        pass.require(Permission::FlagRead, key)?;
        Ok(self.store.get_namespace(key).await?)
    }

    fn parse_namespace(body: &Value, path_key: Option<&str>) -> Result<Namespace, ServiceError> {
        let obj = object(body, "namespace")?;
        let mut v = Vec::new();
        reject_unknown(
            obj,
            &[
                "key",
                "name",
                "description",
                "evaluationContext",
                "anonymousEvaluation",
            ],
            &mut v,
        );
        let key = body_key(obj, path_key, "namespace", &mut v).unwrap_or_default();
        let name = optional_string(obj, "name", &mut v);
        let description = optional_string(obj, "description", &mut v);
        let evaluation_context = match obj.get("evaluationContext") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => {
                v.push(Violation::new(
                    "evaluationContext",
                    format!(
                        "must be an object, found {}",
                        vexil_core::validate::type_name(other)
                    ),
                ));
                Map::new()
            }
        };
        let anonymous_evaluation = match obj.get("anonymousEvaluation") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                v.push(Violation::new(
                    "anonymousEvaluation",
                    format!(
                        "must be a boolean, found {}",
                        vexil_core::validate::type_name(other)
                    ),
                ));
                false
            }
        };
        done(
            Namespace {
                key,
                name,
                description,
                evaluation_context,
                anonymous_evaluation,
                version: 0,
                created_at: 0,
                updated_at: 0,
            },
            v,
        )
    }

    /// Creates a namespace from `{key, name?, description?, evaluationContext?}`. Requires
    /// `FlagWrite` on the new key.
    ///
    /// # Errors
    /// Invalid, AlreadyExists, store errors.
    pub async fn create_namespace(
        &self,
        pass: &Pass<'_>,
        body: &Value,
    ) -> Result<Namespace, ServiceError> {
        let mut ns = Self::parse_namespace(body, None)?;
        pass.require(Permission::FlagWrite, &ns.key)?;
        let now = now_millis();
        ns.created_at = now;
        ns.updated_at = now;
        ns.version = 1;
        let ev = audit(
            pass,
            "namespace.create",
            ResourceKind::Namespace,
            &ns.key,
            &ns.key,
            None,
            Some(to_json(&ns)),
        );
        let c = self
            .commit(
                vec![Write::PutNamespace {
                    namespace: ns.clone(),
                    expect: Expect::Absent,
                }],
                vec![ev],
            )
            .await?;
        Ok(stored(&c, 0).unwrap_or(ns))
    }

    /// Replaces a namespace's fields. `expected` is the caller's version (If-Match).
    ///
    /// # Errors
    /// Invalid, NotFound, VersionConflict, store errors.
    pub async fn update_namespace(
        &self,
        pass: &Pass<'_>,
        key: &str,
        body: &Value,
        expected: Option<u64>,
    ) -> Result<Namespace, ServiceError> {
        pass.require(Permission::FlagWrite, key)?;
        let input = Self::parse_namespace(body, Some(key))?;
        let expected = expected.or_else(|| body.get("version").and_then(Value::as_u64));
        retrying(expected, || async {
            let current = self.store.get_namespace(key).await?;
            check_expected(ResourceKind::Namespace, key, key, expected, current.version)?;
            let next = Namespace {
                version: current.version + 1,
                created_at: current.created_at,
                updated_at: now_millis(),
                ..input.clone()
            };
            let ev = audit(
                pass,
                "namespace.update",
                ResourceKind::Namespace,
                key,
                key,
                Some(to_json(&current)),
                Some(to_json(&next)),
            );
            let c = self
                .commit(
                    vec![Write::PutNamespace {
                        namespace: next.clone(),
                        expect: Expect::Version(current.version),
                    }],
                    vec![ev],
                )
                .await?;
            Ok(stored(&c, 0).unwrap_or(next))
        })
        .await
    }

    /// Deletes an empty namespace (never `default`).
    ///
    /// # Errors
    /// NotFound, Conflict (not empty, or `default`), VersionConflict, store errors.
    pub async fn delete_namespace(
        &self,
        pass: &Pass<'_>,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::FlagWrite, key)?;
        if key == DEFAULT_NAMESPACE {
            return Err(ServiceError::Conflict {
                message: "the default namespace cannot be deleted".into(),
            });
        }
        retrying(expected, || async {
            let current = self.store.get_namespace(key).await?;
            check_expected(ResourceKind::Namespace, key, key, expected, current.version)?;
            let ev = audit(
                pass,
                "namespace.delete",
                ResourceKind::Namespace,
                key,
                key,
                Some(to_json(&current)),
                None,
            );
            self.commit(
                vec![Write::DeleteNamespace {
                    key: key.to_owned(),
                    expect: Expect::Version(current.version),
                }],
                vec![ev],
            )
            .await?;
            Ok(())
        })
        .await
    }

    // ---------------------------------------------------------------- flags

    /// A page of flags. Requires `FlagRead`.
    ///
    /// # Errors
    /// NotFound (namespace), store errors.
    pub async fn list_flags(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        Ok(self.store.list_flags(ns, query).await?)
    }

    /// One flag. Requires `FlagRead`.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn get_flag(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
    ) -> Result<Flag, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        Ok(self.store.get_flag(ns, key).await?)
    }

    async fn evaluators(&self, ns: &str) -> Result<Map<String, Value>, ServiceError> {
        Ok(self
            .store
            .list_segments(ns)
            .await?
            .into_iter()
            .map(|s| (s.key, s.rule))
            .collect())
    }

    /// Parses and validates a flag body against the namespace's segments.
    fn parse_flag(
        ns: &str,
        body: &Value,
        path_key: Option<&str>,
        evaluators: &Map<String, Value>,
        opts: WriteOptions,
    ) -> Result<Flag, ServiceError> {
        let obj = object(body, "flag")?;
        let mut v = Vec::new();
        reject_unknown(
            obj,
            &[
                "key",
                "name",
                "description",
                "tags",
                "state",
                "variants",
                "defaultVariant",
                "targeting",
                "metadata",
            ],
            &mut v,
        );
        let key = body_key(obj, path_key, "flag", &mut v);
        let name = optional_string(obj, "name", &mut v);
        let description = optional_string(obj, "description", &mut v);
        let tags = match obj.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, t)| match t {
                    Value::String(s) if !s.is_empty() && s.len() <= 64 => Some(s.clone()),
                    _ => {
                        v.push(Violation::new(
                            format!("tags[{i}]"),
                            "tags must be non-empty strings of at most 64 characters",
                        ));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                v.push(Violation::new(
                    "tags",
                    format!(
                        "must be an array of strings, found {}",
                        vexil_core::validate::type_name(other)
                    ),
                ));
                Vec::new()
            }
        };
        let policy = if opts.allow_invalid_targeting {
            TargetingPolicy::Warn
        } else {
            TargetingPolicy::Reject
        };
        let definition = match vexil_core::model::read_flag_definition(body, "", evaluators, policy)
        {
            Ok((def, _warnings)) => Some(def),
            Err(errs) => {
                v.extend(errs);
                None
            }
        };
        // Schema-valid targeting can still fail to compile (a `$ref` cycle); the write API
        // refuses it unless asked to store it anyway.
        if let (Some(def), false) = (&definition, opts.allow_invalid_targeting)
            && def.has_targeting()
            && let Some(rule) = &def.targeting
            && let Err(e) =
                vexil_core::rules::compile(rule, evaluators, vexil_core::FractionalVersion::V2)
        {
            v.push(Violation::new("targeting", e.to_string()));
        }
        match (key, definition) {
            (Some(key), Some(definition)) if v.is_empty() => Ok(Flag {
                namespace: ns.to_owned(),
                key,
                name,
                description,
                tags,
                definition,
                version: 0,
                created_at: 0,
                created_by: String::new(),
                updated_at: 0,
                updated_by: String::new(),
            }),
            _ => Err(ServiceError::Invalid { violations: v }),
        }
    }

    /// Creates a flag from its JSON body. Requires `FlagWrite`.
    ///
    /// # Errors
    /// Invalid (with field paths), NotFound (namespace), AlreadyExists, store errors.
    pub async fn create_flag(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        body: &Value,
        opts: WriteOptions,
    ) -> Result<Flag, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        let evaluators = self.evaluators(ns).await?;
        let mut flag = Self::parse_flag(ns, body, None, &evaluators, opts)?;
        let now = now_millis();
        let who = pass.principal().actor().id.clone();
        flag.version = 1;
        flag.created_at = now;
        flag.updated_at = now;
        flag.created_by.clone_from(&who);
        flag.updated_by = who;
        let ev = audit(
            pass,
            "flag.create",
            ResourceKind::Flag,
            ns,
            &flag.key,
            None,
            Some(to_json(&flag)),
        );
        let c = self
            .commit(
                vec![Write::PutFlag {
                    flag: flag.clone(),
                    expect: Expect::Absent,
                }],
                vec![ev],
            )
            .await?;
        Ok(stored(&c, 0).unwrap_or(flag))
    }

    /// Writes `next` over `current` as one audited CAS commit.
    async fn replace_flag(
        &self,
        pass: &Pass<'_>,
        action: &str,
        current: Flag,
        mut next: Flag,
    ) -> Result<Flag, ServiceError> {
        next.version = current.version + 1;
        next.created_at = current.created_at;
        next.created_by.clone_from(&current.created_by);
        next.updated_at = now_millis();
        next.updated_by.clone_from(&pass.principal().actor().id);
        let ev = audit(
            pass,
            action,
            ResourceKind::Flag,
            &current.namespace,
            &current.key,
            Some(to_json(&current)),
            Some(to_json(&next)),
        );
        let c = self
            .commit(
                vec![Write::PutFlag {
                    flag: next.clone(),
                    expect: Expect::Version(current.version),
                }],
                vec![ev],
            )
            .await?;
        Ok(stored(&c, 0).unwrap_or(next))
    }

    /// Replaces a flag (PUT). `expected` comes from If-Match (or the body's `version`).
    ///
    /// # Errors
    /// Invalid, NotFound, VersionConflict, store errors.
    pub async fn put_flag(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        body: &Value,
        expected: Option<u64>,
        opts: WriteOptions,
    ) -> Result<Flag, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        let expected = expected.or_else(|| body.get("version").and_then(Value::as_u64));
        retrying(expected, || async {
            let evaluators = self.evaluators(ns).await?;
            let next = Self::parse_flag(ns, body, Some(key), &evaluators, opts)?;
            let current = self.store.get_flag(ns, key).await?;
            check_expected(ResourceKind::Flag, ns, key, expected, current.version)?;
            self.replace_flag(pass, "flag.update", current, next).await
        })
        .await
    }

    /// Applies a JSON merge patch (RFC 7386) to a flag and validates the result as a whole.
    ///
    /// # Errors
    /// Invalid, NotFound, VersionConflict, store errors.
    pub async fn patch_flag(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        patch: &Value,
        expected: Option<u64>,
        opts: WriteOptions,
    ) -> Result<Flag, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        object(patch, "merge patch")?;
        retrying(expected, || async {
            let current = self.store.get_flag(ns, key).await?;
            check_expected(ResourceKind::Flag, ns, key, expected, current.version)?;
            let mut doc = to_json(&current);
            json_patch::merge(&mut doc, patch);
            if let Value::Object(m) = &mut doc {
                for k in READ_ONLY {
                    m.remove(*k);
                }
            }
            let evaluators = self.evaluators(ns).await?;
            let next = Self::parse_flag(ns, &doc, Some(key), &evaluators, opts)?;
            self.replace_flag(pass, "flag.update", current, next).await
        })
        .await
    }

    /// The kill switch: sets a flag's state. Idempotent (no commit when already there).
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn set_flag_state(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        state: FlagState,
    ) -> Result<Flag, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        retrying(None, || async {
            let current = self.store.get_flag(ns, key).await?;
            if current.definition.state == state {
                return Ok(current);
            }
            let mut next = current.clone();
            next.definition.state = state;
            let action = match state {
                FlagState::Enabled => "flag.enable",
                FlagState::Disabled => "flag.disable",
            };
            self.replace_flag(pass, action, current, next).await
        })
        .await
    }

    /// Deletes a flag.
    ///
    /// # Errors
    /// NotFound, VersionConflict, store errors.
    pub async fn delete_flag(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        retrying(expected, || async {
            let current = self.store.get_flag(ns, key).await?;
            check_expected(ResourceKind::Flag, ns, key, expected, current.version)?;
            let ev = audit(
                pass,
                "flag.delete",
                ResourceKind::Flag,
                ns,
                key,
                Some(to_json(&current)),
                None,
            );
            self.commit(
                vec![Write::DeleteFlag {
                    namespace: ns.to_owned(),
                    key: key.to_owned(),
                    expect: Expect::Version(current.version),
                }],
                vec![ev],
            )
            .await?;
            Ok(())
        })
        .await
    }

    // ---------------------------------------------------------------- segments

    /// All segments of a namespace.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn list_segments(
        &self,
        pass: &Pass<'_>,
        ns: &str,
    ) -> Result<Vec<Segment>, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        Ok(self.store.list_segments(ns).await?)
    }

    /// One segment.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn get_segment(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
    ) -> Result<Segment, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        Ok(self.store.get_segment(ns, key).await?)
    }

    fn parse_segment(
        ns: &str,
        body: &Value,
        path_key: Option<&str>,
        others: &Map<String, Value>,
    ) -> Result<Segment, ServiceError> {
        let obj = object(body, "segment")?;
        let mut v = Vec::new();
        reject_unknown(obj, &["key", "description", "rule"], &mut v);
        let key = body_key(obj, path_key, "segment", &mut v).unwrap_or_default();
        let description = optional_string(obj, "description", &mut v);
        let rule = match obj.get("rule") {
            Some(rule) => {
                vexil_core::validate::validate_targeting(rule, "rule", &mut v);
                let mut evaluators = others.clone();
                evaluators.insert(key.clone(), rule.clone());
                if v.is_empty()
                    && let Err(e) = vexil_core::rules::compile(
                        rule,
                        &evaluators,
                        vexil_core::FractionalVersion::V2,
                    )
                {
                    v.push(Violation::new("rule", e.to_string()));
                }
                rule.clone()
            }
            None => {
                v.push(Violation::new("rule", "is required"));
                Value::Null
            }
        };
        done(
            Segment {
                namespace: ns.to_owned(),
                key,
                description,
                rule,
                version: 0,
                created_at: 0,
                updated_at: 0,
            },
            v,
        )
    }

    /// Creates or replaces a segment (`expected` None on a create path means "must not exist").
    ///
    /// # Errors
    /// Invalid, NotFound, AlreadyExists, VersionConflict, store errors.
    pub async fn put_segment(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: Option<&str>,
        body: &Value,
        expected: Option<u64>,
    ) -> Result<Segment, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        let create = key.is_none();
        retrying(expected, || async {
            let mut others = self.evaluators(ns).await?;
            let mut seg = Self::parse_segment(ns, body, key, &others)?;
            others.remove(&seg.key);
            let current = match self.store.get_segment(ns, &seg.key).await {
                Ok(c) if create => {
                    return Err(ServiceError::AlreadyExists {
                        kind: ResourceKind::Segment,
                        namespace: ns.to_owned(),
                        key: c.key,
                    });
                }
                Ok(c) => Some(c),
                Err(StoreError::NotFound {
                    kind: ResourceKind::Segment,
                    ..
                }) if create => None,
                Err(e) => return Err(e.into()),
            };
            let now = now_millis();
            seg.updated_at = now;
            let (expect, action) = match &current {
                Some(c) => {
                    check_expected(ResourceKind::Segment, ns, &seg.key, expected, c.version)?;
                    seg.version = c.version + 1;
                    seg.created_at = c.created_at;
                    (Expect::Version(c.version), "segment.update")
                }
                None => {
                    seg.version = 1;
                    seg.created_at = now;
                    (Expect::Absent, "segment.create")
                }
            };
            let ev = audit(
                pass,
                action,
                ResourceKind::Segment,
                ns,
                &seg.key,
                current.as_ref().map(to_json),
                Some(to_json(&seg)),
            );
            let c = self
                .commit(
                    vec![Write::PutSegment {
                        segment: seg.clone(),
                        expect,
                    }],
                    vec![ev],
                )
                .await?;
            Ok(stored(&c, 0).unwrap_or(seg))
        })
        .await
    }

    /// Deletes a segment no flag or segment refers to.
    ///
    /// # Errors
    /// NotFound, Conflict (still referenced), VersionConflict, store errors.
    pub async fn delete_segment(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        retrying(expected, || async {
            let current = self.store.get_segment(ns, key).await?;
            check_expected(ResourceKind::Segment, ns, key, expected, current.version)?;
            let state = self.store.load_namespace(ns).await?;
            let mut users: Vec<String> = state
                .flags
                .iter()
                .filter(|f| {
                    f.definition
                        .targeting
                        .as_ref()
                        .is_some_and(|t| refers_to(t, key))
                })
                .map(|f| format!("flag {}", f.key))
                .collect();
            users.extend(
                state
                    .segments
                    .iter()
                    .filter(|s| s.key != key && refers_to(&s.rule, key))
                    .map(|s| format!("segment {}", s.key)),
            );
            if !users.is_empty() {
                return Err(ServiceError::Conflict {
                    message: format!("segment {key} is still referenced by {}", users.join(", ")),
                });
            }
            let ev = audit(
                pass,
                "segment.delete",
                ResourceKind::Segment,
                ns,
                key,
                Some(to_json(&current)),
                None,
            );
            self.commit(
                vec![Write::DeleteSegment {
                    namespace: ns.to_owned(),
                    key: key.to_owned(),
                    expect: Expect::Version(current.version),
                }],
                vec![ev],
            )
            .await?;
            Ok(())
        })
        .await
    }

    // ---------------------------------------------------------------- import / export

    /// The namespace as a flagd document (segments as `$evaluators`).
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn export(&self, pass: &Pass<'_>, ns: &str) -> Result<FlagDocument, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        let state = self.store.load_namespace(ns).await?;
        let doc = crate::snapshot::document(state.flags, state.segments);
        Ok(doc)
    }

    /// The namespace as an in-process provider needs it (flagd sync): the flagd document, the
    /// namespace's static context, and the revision. Requires `Evaluate`: in-process providers
    /// evaluate locally, so reading definitions is part of evaluating.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn sync_document(
        &self,
        pass: &Pass<'_>,
        ns: &str,
    ) -> Result<(FlagDocument, Map<String, Value>, Revision), ServiceError> {
        pass.require(Permission::Evaluate, ns)?;
        let state = self.store.load_namespace(ns).await?;
        let doc = crate::snapshot::document(state.flags, state.segments);
        Ok((doc, state.namespace.evaluation_context, state.revision))
    }

    /// Imports a flagd document the way flagd loads one: invalid targeting is stored (and
    /// reported as a warning), the rest of the document must be valid. The whole import is one
    /// atomic commit.
    ///
    /// # Errors
    /// Invalid (syntax or schema, with paths), NotFound (namespace), Conflict (state moved
    /// during the import), store errors.
    pub async fn import(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        text: &str,
        yaml: bool,
        mode: ImportMode,
        dry_run: bool,
    ) -> Result<ImportOutcome, ServiceError> {
        pass.require(Permission::FlagWrite, ns)?;
        let loaded = if yaml {
            FlagDocument::from_yaml_str(text, Schema::Flagd, TargetingPolicy::Warn)
        } else {
            FlagDocument::from_json_str(text, Schema::Flagd, TargetingPolicy::Warn)
        };
        let loaded = loaded.map_err(|e| match e {
            vexil_core::DocumentError::Syntax { format, message } => {
                ServiceError::invalid("", format!("malformed {format}: {message}"))
            }
            vexil_core::DocumentError::Invalid { violations } => {
                ServiceError::Invalid { violations }
            }
        })?;
        let mut key_errors = Vec::new();
        for k in loaded.document.flags.keys() {
            if let Err(e) = domain::validate_flag_key("flag", k) {
                key_errors.push(Violation::new(format!("flags.{k}"), e.rule));
            }
        }
        for k in loaded.document.evaluators.keys() {
            if let Err(e) = domain::validate_flag_key("segment", k) {
                key_errors.push(Violation::new(format!("$evaluators.{k}"), e.rule));
            }
        }
        if !key_errors.is_empty() {
            return Err(ServiceError::Invalid {
                violations: key_errors,
            });
        }
        let state = self.store.load_namespace(ns).await?;
        let current: BTreeMap<&str, &Flag> =
            state.flags.iter().map(|f| (f.key.as_str(), f)).collect();
        let current_segs: BTreeMap<&str, &Segment> =
            state.segments.iter().map(|s| (s.key.as_str(), s)).collect();
        let mut diff = ImportDiff::default();
        let mut writes = Vec::new();
        let mut events = Vec::new();
        let now = now_millis();
        let who = pass.principal().actor().id.clone();

        for (key, rule) in &loaded.document.evaluators {
            let (expect, before, version, created) = match current_segs.get(key.as_str()) {
                Some(s) if &s.rule == rule => continue,
                Some(s) => {
                    diff.segments_changed.push(key.clone());
                    (
                        Expect::Version(s.version),
                        Some(to_json(*s)),
                        s.version + 1,
                        s.created_at,
                    )
                }
                None => {
                    diff.segments_added.push(key.clone());
                    (Expect::Absent, None, 1, now)
                }
            };
            let seg = Segment {
                namespace: ns.to_owned(),
                key: key.clone(),
                description: String::new(),
                rule: rule.clone(),
                version,
                created_at: created,
                updated_at: now,
            };
            events.push(audit(
                pass,
                "segment.import",
                ResourceKind::Segment,
                ns,
                key,
                before,
                Some(to_json(&seg)),
            ));
            writes.push(Write::PutSegment {
                segment: seg,
                expect,
            });
        }
        for (key, def) in &loaded.document.flags {
            let flag = match current.get(key.as_str()) {
                Some(f) if &f.definition == def => {
                    diff.unchanged.push(key.clone());
                    continue;
                }
                Some(f) => {
                    diff.changed.push(key.clone());
                    Flag {
                        definition: def.clone(),
                        version: f.version + 1,
                        updated_at: now,
                        updated_by: who.clone(),
                        ..(*f).clone()
                    }
                }
                None => {
                    diff.added.push(key.clone());
                    Flag {
                        namespace: ns.to_owned(),
                        key: key.clone(),
                        name: String::new(),
                        description: String::new(),
                        tags: Vec::new(),
                        definition: def.clone(),
                        version: 1,
                        created_at: now,
                        created_by: who.clone(),
                        updated_at: now,
                        updated_by: who.clone(),
                    }
                }
            };
            let before = current.get(key.as_str());
            let expect = before.map_or(Expect::Absent, |f| Expect::Version(f.version));
            events.push(audit(
                pass,
                "flag.import",
                ResourceKind::Flag,
                ns,
                key,
                before.map(|f| to_json(*f)),
                Some(to_json(&flag)),
            ));
            writes.push(Write::PutFlag { flag, expect });
        }
        if mode == ImportMode::Replace {
            for f in &state.flags {
                if !loaded.document.flags.contains_key(&f.key) {
                    diff.removed.push(f.key.clone());
                    events.push(audit(
                        pass,
                        "flag.import",
                        ResourceKind::Flag,
                        ns,
                        &f.key,
                        Some(to_json(f)),
                        None,
                    ));
                    writes.push(Write::DeleteFlag {
                        namespace: ns.to_owned(),
                        key: f.key.clone(),
                        expect: Expect::Version(f.version),
                    });
                }
            }
            for s in &state.segments {
                if !loaded.document.evaluators.contains_key(&s.key) {
                    diff.segments_removed.push(s.key.clone());
                    events.push(audit(
                        pass,
                        "segment.import",
                        ResourceKind::Segment,
                        ns,
                        &s.key,
                        Some(to_json(s)),
                        None,
                    ));
                    writes.push(Write::DeleteSegment {
                        namespace: ns.to_owned(),
                        key: s.key.clone(),
                        expect: Expect::Version(s.version),
                    });
                }
            }
        }
        let revision = if dry_run || writes.is_empty() {
            state.revision
        } else {
            match self.commit(writes, events).await {
                Ok(c) => c.revision,
                Err(StoreError::VersionMismatch { .. } | StoreError::AlreadyExists { .. }) => {
                    return Err(ServiceError::Conflict {
                        message:
                            "the namespace changed during the import; nothing was written, retry"
                                .into(),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(ImportOutcome {
            dry_run,
            diff,
            warnings: loaded.warnings,
            revision,
        })
    }

    /// Changes to `ns` committed after `after`, in revision order (at most `limit`, never
    /// splitting a commit), with the revision they reach; or [`ChangeBatch::Resync`] when the
    /// store's log no longer reaches back to `after`, and the consumer must start again from
    /// [`FlagService::namespace_state`]. Requires `FlagRead` or `Evaluate` (evaluation streams
    /// announce changes too). Configuration changes are left out unless the pass's principal
    /// may also read configuration in `ns` (checked on every call, so a grant or revocation
    /// takes effect on the next batch); `last` still covers them.
    ///
    /// # Errors
    /// Store errors.
    pub async fn changes_since(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        after: Revision,
        limit: usize,
    ) -> Result<ChangeBatch, ServiceError> {
        pass.require_any(&[Permission::FlagRead, Permission::Evaluate], ns)?;
        let changes = match self.store.changes_since(after, limit).await {
            Ok(changes) => changes,
            Err(StoreError::ChangesCompacted { .. }) => return Ok(ChangeBatch::Resync),
            Err(e) => return Err(e.into()),
        };
        let last = changes.last().map_or(after, |c| c.revision);
        let configs = pass.principal().allows(Permission::ConfigRead, ns);
        Ok(ChangeBatch::Changes {
            changes: changes
                .into_iter()
                .filter(|c| c.namespace == ns && (configs || c.kind != ResourceKind::Config))
                .collect(),
            last,
        })
    }

    /// Everything in `ns` as of one revision: the namespace record, all its flags and segments
    /// (in key order) and the store revision they were read at, read consistently, so a watcher
    /// that sends this as a snapshot and then follows [`FlagService::changes_since`] from
    /// `revision` misses nothing and sees nothing twice. Requires `FlagRead`.
    ///
    /// # Errors
    /// NotFound (namespace), store errors.
    pub async fn namespace_state(
        &self,
        pass: &Pass<'_>,
        ns: &str,
    ) -> Result<vexil_store::NamespaceState, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        Ok(self.store.load_namespace(ns).await?)
    }

    /// What a watcher of `ns` starts from: [`FlagService::namespace_state`], and the
    /// namespace's configuration entries when the pass's principal may read configuration
    /// there (`None` otherwise, so a transport can tell "none visible" from "none"). The
    /// entries are read after the state, so one may be newer than its revision; its change
    /// then follows as well, and applies as the same version again. Requires `FlagRead`.
    ///
    /// # Errors
    /// NotFound (namespace), store errors.
    pub async fn watch_snapshot(
        &self,
        pass: &Pass<'_>,
        ns: &str,
    ) -> Result<(vexil_store::NamespaceState, Option<Vec<ConfigEntry>>), ServiceError> {
        let state = self.namespace_state(pass, ns).await?;
        let configs = if pass.principal().allows(Permission::ConfigRead, ns) {
            Some(self.store.list_configs(ns).await?)
        } else {
            None
        };
        Ok((state, configs))
    }

    /// The store's current revision: a liveness probe of the store for readiness.
    ///
    /// # Errors
    /// Unavailable when the store cannot be reached.
    pub async fn store_revision(&self) -> Result<Revision, ServiceError> {
        Ok(self.store.current_revision().await?)
    }

    /// The audit relay's state in the distributed mode (`None` in the modes that record audit
    /// events in the commit itself): whether it reaches the audit log, and how many commits'
    /// events wait in the outbox. No I/O.
    pub fn audit_relay(&self) -> Option<vexil_store::RelayStatus> {
        self.store.relay_status()
    }

    // ---------------------------------------------------------------- evaluation

    fn snapshot(&self, ns: &str) -> Result<Arc<NamespaceSnapshot>, ServiceError> {
        self.cache.get(ns).ok_or_else(|| ServiceError::NotFound {
            kind: ResourceKind::Namespace,
            namespace: ns.to_owned(),
            key: ns.to_owned(),
        })
    }

    /// The revision evaluation in `ns` currently reflects (the OFREP ETag's first half).
    ///
    /// # Errors
    /// NotFound (namespace).
    pub fn revision(&self, pass: &Pass<'_>, ns: &str) -> Result<Revision, ServiceError> {
        pass.require(Permission::Evaluate, ns)?;
        Ok(self.snapshot(ns)?.revision)
    }

    /// Evaluates one flag from the snapshot (never the store). Flag-level problems are in the
    /// resolution, not errors.
    ///
    /// # Errors
    /// NotFound (namespace only).
    pub fn evaluate(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        context: &Value,
    ) -> Result<EvaluateOutcome<Resolution>, ServiceError> {
        pass.require(Permission::Evaluate, ns)?;
        let snap = self.snapshot(ns)?;
        Ok(EvaluateOutcome {
            result: snap.flags.evaluate(key, context),
            revision: snap.revision,
        })
    }

    /// [`FlagService::evaluate`] with a context parsed straight from JSON
    /// ([`vexil_core::context`]): the same answer, without building a `Value` first.
    ///
    /// # Errors
    /// NotFound (namespace only).
    pub fn evaluate_parsed(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        context: &ParsedContext<'_>,
    ) -> Result<EvaluateOutcome<Resolution>, ServiceError> {
        pass.require(Permission::Evaluate, ns)?;
        let snap = self.snapshot(ns)?;
        Ok(EvaluateOutcome {
            result: snap.flags.evaluate_parsed(key, context),
            revision: snap.revision,
        })
    }

    /// Evaluates every flag of a namespace.
    ///
    /// # Errors
    /// NotFound (namespace only).
    pub fn evaluate_all(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        context: &Value,
    ) -> Result<EvaluateOutcome<vexil_core::evaluate::Evaluations>, ServiceError> {
        pass.require(Permission::Evaluate, ns)?;
        let snap = self.snapshot(ns)?;
        Ok(EvaluateOutcome {
            result: snap.flags.evaluate_all(context),
            revision: snap.revision,
        })
    }

    /// Evaluates one flag and explains the decision. Requires `FlagRead`, not `Evaluate`: the
    /// explanation shows the rules (segment member lists included), which SDK tokens and
    /// anonymous callers must not read.
    ///
    /// # Errors
    /// NotFound (namespace only).
    pub fn explain(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        context: &Value,
    ) -> Result<EvaluateOutcome<Explanation>, ServiceError> {
        pass.require(Permission::FlagRead, ns)?;
        let snap = self.snapshot(ns)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        Ok(EvaluateOutcome {
            result: snap.flags.explain(key, context, now),
            revision: snap.revision,
        })
    }

    /// Compiles definitions outside any namespace (the CLI's dry runs).
    pub fn compile_detached(
        flags: Vec<(String, FlagDefinition)>,
        evaluators: Map<String, Value>,
        options: &FlagSetOptions,
    ) -> vexil_core::FlagSet {
        crate::snapshot::compile_definitions(flags, evaluators, options)
    }
}

/// The stored resource at `index` of a commit, decoded.
pub(crate) fn stored<T: serde::de::DeserializeOwned>(
    c: &vexil_store::Committed,
    index: usize,
) -> Option<T> {
    c.results
        .get(index)
        .cloned()
        .flatten()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// Whether `rule` contains `{"$ref": name}`.
fn refers_to(rule: &Value, name: &str) -> bool {
    let mut stack = vec![rule];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if m.len() == 1 && m.get("$ref").and_then(Value::as_str) == Some(name) {
                    return true;
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    false
}
