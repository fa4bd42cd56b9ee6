//! The configuration service: dynamic configuration entries (a JSON value per key in a
//! namespace), held to an optional JSON Schema, versioned, with history and rollback.
//!
//! Entries are written through [`FlagStore::commit`] like every resource of a namespace, so a
//! config change gets a revision, reaches the change feed (WebSocket watchers see it) and
//! commits together with its audit event. The schema is checked here, before anything is
//! written: a value that does not satisfy its entry's schema is refused with the failing paths,
//! and nothing changes.

use std::sync::Arc;

use serde_json::{Map, Value};
use vexil_core::Violation;
use vexil_core::domain::{ConfigEntry, ResourceKind};
use vexil_store::{Expect, StoreError, Write};

use crate::flags::{
    audit, body_key, check_expected, done, now_millis, object, reject_unknown, retrying, stored,
    to_json,
};
use crate::principal::{Pass, Permission};
use crate::{ServiceError, Store};

/// Schema violations reported per refused value; the rest are summarized in one line.
const MAX_VIOLATIONS: usize = 20;

/// What a PUT did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigWritten {
    /// The entry as stored.
    pub entry: ConfigEntry,
    /// True when the PUT created the entry (HTTP 201), false when it replaced one.
    pub created: bool,
}

/// Configuration entries. Cheap to clone.
#[derive(Clone)]
pub struct ConfigService {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for ConfigService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigService").finish_non_exhaustive()
    }
}

/// A PUT body, parsed: `value` is required; an absent `schema` or `description` keeps the
/// current one (`"schema": null` removes the schema), so updating a value never drops the
/// schema guarding it by accident.
struct Input {
    key: String,
    value: Value,
    schema: Option<Option<Value>>,
    description: Option<String>,
}

impl ConfigService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Every entry of a namespace, in key order. Requires `ConfigRead`.
    ///
    /// # Errors
    /// NotFound (namespace), store errors.
    pub async fn list(&self, pass: &Pass<'_>, ns: &str) -> Result<Vec<ConfigEntry>, ServiceError> {
        pass.require(Permission::ConfigRead, ns)?;
        Ok(self.store.list_configs(ns).await?)
    }

    /// One entry. Requires `ConfigRead`.
    ///
    /// # Errors
    /// NotFound (namespace or entry), store errors.
    pub async fn get(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
    ) -> Result<ConfigEntry, ServiceError> {
        pass.require(Permission::ConfigRead, ns)?;
        Ok(self.store.get_config(ns, key).await?)
    }

    /// Creates or replaces an entry (PUT). Requires `ConfigWrite`.
    ///
    /// `expected` (from If-Match, else the body's `version`) makes the write conditional: it
    /// applies only over that version, and `0` means "only if absent". Without it the write
    /// applies over whatever is current, retried on fresh state when it loses a race, so two
    /// unconditional writers never fail each other. The value must satisfy the schema the
    /// entry will have after the write. Audited as `config.create` or `config.update`.
    ///
    /// # Errors
    /// Invalid (field paths; schema failures as `value/<json pointer>`), NotFound (namespace,
    /// or the entry when a version was expected), AlreadyExists, VersionConflict, store errors.
    pub async fn put(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        body: &Value,
        expected: Option<u64>,
    ) -> Result<ConfigWritten, ServiceError> {
        pass.require(Permission::ConfigWrite, ns)?;
        let input = parse(body, key)?;
        let expected = expected.or_else(|| body.get("version").and_then(Value::as_u64));
        retrying(expected, || async {
            let current = match self.store.get_config(ns, key).await {
                Ok(c) => Some(c),
                Err(StoreError::NotFound {
                    kind: ResourceKind::Config,
                    ..
                }) => None,
                Err(e) => return Err(e.into()),
            };
            match (&current, expected) {
                (Some(c), Some(0)) => {
                    return Err(ServiceError::AlreadyExists {
                        kind: ResourceKind::Config,
                        namespace: ns.to_owned(),
                        key: c.key.clone(),
                    });
                }
                (None, Some(v)) if v > 0 => {
                    return Err(ServiceError::NotFound {
                        kind: ResourceKind::Config,
                        namespace: ns.to_owned(),
                        key: key.to_owned(),
                    });
                }
                (Some(c), _) => {
                    check_expected(ResourceKind::Config, ns, key, expected, c.version)?;
                }
                (None, _) => {}
            }
            let schema = match &input.schema {
                Some(s) => s.clone(),
                None => current.as_ref().and_then(|c| c.schema.clone()),
            };
            let description = match &input.description {
                Some(d) => d.clone(),
                None => current
                    .as_ref()
                    .map(|c| c.description.clone())
                    .unwrap_or_default(),
            };
            check_schema(schema.as_ref(), &input.value)?;
            let next = ConfigEntry {
                namespace: ns.to_owned(),
                key: input.key.clone(),
                value: input.value.clone(),
                schema,
                description,
                version: 0,
                created_at: 0,
                created_by: String::new(),
                updated_at: 0,
                updated_by: String::new(),
            };
            let created = current.is_none();
            let action = if created {
                "config.create"
            } else {
                "config.update"
            };
            let entry = self.write(pass, action, current, next).await?;
            Ok(ConfigWritten { entry, created })
        })
        .await
    }

    /// Deletes an entry and its history (the audit log keeps both). Requires `ConfigWrite`.
    /// Audited as `config.delete`.
    ///
    /// # Errors
    /// NotFound, VersionConflict (when `expected` is stale), store errors.
    pub async fn delete(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::ConfigWrite, ns)?;
        retrying(expected, || async {
            let current = self.store.get_config(ns, key).await?;
            check_expected(ResourceKind::Config, ns, key, expected, current.version)?;
            let ev = audit(
                pass,
                "config.delete",
                ResourceKind::Config,
                ns,
                key,
                Some(to_json(&current)),
                None,
            );
            self.store
                .commit(
                    vec![Write::DeleteConfig {
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

    /// The entry's versions, oldest first, after `after_version` (at most `limit`; 0 means
    /// 100, capped at 1000). Requires `ConfigRead`.
    ///
    /// # Errors
    /// NotFound (namespace or entry), store errors.
    pub async fn versions(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<ConfigEntry>, ServiceError> {
        pass.require(Permission::ConfigRead, ns)?;
        Ok(self
            .store
            .config_versions(ns, key, after_version, limit)
            .await?)
    }

    /// Writes the value, schema and description of the version a rollback body names
    /// (`{"version": N}`, N ≥ 1, nothing else) as a new version (history only grows: a
    /// rollback is itself undoable). Requires `ConfigWrite`. `expected` makes it conditional
    /// on the current version, as for [`ConfigService::put`]. Audited as `config.rollback`.
    ///
    /// # Errors
    /// Invalid (the body), NotFound (namespace, entry, or no such version), VersionConflict,
    /// store errors.
    pub async fn rollback(
        &self,
        pass: &Pass<'_>,
        ns: &str,
        key: &str,
        body: &Value,
        expected: Option<u64>,
    ) -> Result<ConfigEntry, ServiceError> {
        pass.require(Permission::ConfigWrite, ns)?;
        let to_version = rollback_target(body)?;
        retrying(expected, || async {
            let current = self.store.get_config(ns, key).await?;
            check_expected(ResourceKind::Config, ns, key, expected, current.version)?;
            let target = self
                .store
                .config_versions(ns, key, to_version.saturating_sub(1), 1)
                .await?
                .into_iter()
                .find(|v| v.version == to_version)
                .ok_or_else(|| ServiceError::NotFound {
                    kind: ResourceKind::Config,
                    namespace: ns.to_owned(),
                    key: format!("{key} version {to_version}"),
                })?;
            let next = ConfigEntry {
                version: 0,
                ..target
            };
            self.write(pass, "config.rollback", Some(current), next)
                .await
        })
        .await
    }

    /// Stamps `next` over `current` (absent: a create) and commits it with its audit event.
    async fn write(
        &self,
        pass: &Pass<'_>,
        action: &str,
        current: Option<ConfigEntry>,
        mut next: ConfigEntry,
    ) -> Result<ConfigEntry, ServiceError> {
        let now = now_millis();
        let who = pass.principal().actor().id.clone();
        let expect = match &current {
            Some(c) => {
                next.version = c.version + 1;
                next.created_at = c.created_at;
                next.created_by.clone_from(&c.created_by);
                Expect::Version(c.version)
            }
            None => {
                next.version = 1;
                next.created_at = now;
                next.created_by.clone_from(&who);
                Expect::Absent
            }
        };
        next.updated_at = now;
        next.updated_by = who;
        let ev = audit(
            pass,
            action,
            ResourceKind::Config,
            &next.namespace,
            &next.key,
            current.as_ref().map(to_json),
            Some(to_json(&next)),
        );
        let c = self
            .store
            .commit(
                vec![Write::PutConfig {
                    config: next.clone(),
                    expect,
                }],
                vec![ev],
            )
            .await?;
        Ok(stored(&c, 0).unwrap_or(next))
    }
}

/// Parses a PUT body (see [`Input`]); every problem is reported at once.
fn parse(body: &Value, path_key: &str) -> Result<Input, ServiceError> {
    let obj: &Map<String, Value> = object(body, "config entry")?;
    let mut v: Vec<Violation> = Vec::new();
    reject_unknown(obj, &["key", "value", "schema", "description"], &mut v);
    let key = body_key(obj, Some(path_key), "config", &mut v);
    let value = obj.get("value").cloned();
    if value.is_none() {
        v.push(Violation::new(
            "value",
            "is required (any JSON, null included)",
        ));
    }
    let schema = match obj.get("schema") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(s @ (Value::Object(_) | Value::Bool(_))) => Some(Some(s.clone())),
        Some(other) => {
            v.push(Violation::new(
                "schema",
                format!(
                    "must be a JSON Schema (an object or a boolean), or null to remove it; found {}",
                    vexil_core::validate::type_name(other)
                ),
            ));
            None
        }
    };
    let description = match obj.get("description") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => Some(String::new()),
        Some(other) => {
            v.push(Violation::new(
                "description",
                format!(
                    "must be a string, found {}",
                    vexil_core::validate::type_name(other)
                ),
            ));
            None
        }
    };
    match (key, value) {
        (Some(key), Some(value)) => done(
            Input {
                key,
                value,
                schema,
                description,
            },
            v,
        ),
        _ => Err(ServiceError::Invalid { violations: v }),
    }
}

/// The version a rollback body names.
///
/// # Errors
/// Invalid: not an object, another field, or a version that is not a positive integer.
fn rollback_target(body: &Value) -> Result<u64, ServiceError> {
    let obj = object(body, "rollback request")?;
    let mut v: Vec<Violation> = Vec::new();
    for k in obj.keys().filter(|k| k.as_str() != "version") {
        v.push(Violation::new(
            k.as_str(),
            "unknown field; expected only version",
        ));
    }
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .filter(|n| *n > 0);
    if version.is_none() {
        v.push(Violation::new("version", "must be a positive integer"));
    }
    match version {
        Some(n) if v.is_empty() => Ok(n),
        _ => Err(ServiceError::Invalid { violations: v }),
    }
}

/// Checks `value` against the schema the entry will have (when it has one). The schema is
/// compiled here and only here: this is also where a new schema is found invalid.
///
/// # Errors
/// Invalid: one violation at `schema` when it does not compile; else one per failing
/// location of the value (`value/<json pointer>`), at most [`MAX_VIOLATIONS`] and a count of
/// the rest.
fn check_schema(schema: Option<&Value>, value: &Value) -> Result<(), ServiceError> {
    let Some(schema) = schema else {
        return Ok(());
    };
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| ServiceError::invalid("schema", format!("is not a valid JSON Schema: {e}")))?;
    let mut violations: Vec<Violation> = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(value) {
        if violations.len() < MAX_VIOLATIONS {
            violations.push(Violation::new(
                format!("value{}", error.instance_path()),
                error.to_string(),
            ));
        } else {
            more += 1;
        }
    }
    if more > 0 {
        violations.push(Violation::new(
            "value",
            format!("and {more} more schema violations"),
        ));
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::Invalid { violations })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(e: ServiceError) -> Vec<String> {
        match e {
            ServiceError::Invalid { violations } => {
                violations.into_iter().map(|v| v.path).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_body_without_a_value_or_with_unknown_fields_is_refused_with_every_path() {
        let e = parse(&json!({"vaule": 1, "schema": "x"}), "k").err();
        let mut p = paths(e.expect("refused"));
        p.sort();
        assert_eq!(p, ["schema", "value", "vaule"]);
        assert!(
            parse(&json!({"value": null}), "k").is_ok(),
            "null is a value"
        );
        let e = parse(&json!({"key": "other", "value": 1}), "k").err();
        assert_eq!(paths(e.expect("refused")), ["key"]);
    }

    #[test]
    fn an_absent_schema_keeps_the_current_one_and_null_removes_it() {
        let keep = parse(&json!({"value": 1}), "k").expect("parses");
        assert_eq!(keep.schema, None);
        let remove = parse(&json!({"value": 1, "schema": null}), "k").expect("parses");
        assert_eq!(remove.schema, Some(None));
    }

    #[test]
    fn an_invalid_schema_is_refused_before_any_value_is_checked() {
        let e = check_schema(Some(&json!({"type": 12})), &json!(1)).err();
        assert_eq!(paths(e.expect("refused")), ["schema"]);
    }

    #[test]
    fn a_rollback_body_names_one_positive_version_and_nothing_else() {
        assert_eq!(rollback_target(&json!({"version": 3})).ok(), Some(3));
        for bad in [
            json!({"version": 0}),
            json!({"version": "1"}),
            json!({}),
            json!([1]),
        ] {
            assert!(rollback_target(&bad).is_err(), "{bad}");
        }
        let e = rollback_target(&json!({"version": 2, "to": 1})).err();
        assert_eq!(paths(e.expect("refused")), ["to"]);
    }

    #[test]
    fn a_value_is_checked_against_the_schema_and_each_failure_names_its_location() {
        let schema = json!({
            "type": "object",
            "required": ["port"],
            "properties": {"port": {"type": "integer", "maximum": 65535}, "hosts": {"type": "array", "items": {"type": "string"}}}
        });
        assert!(check_schema(Some(&schema), &json!({"port": 8080, "hosts": ["a"]})).is_ok());
        let e = check_schema(Some(&schema), &json!({"port": 70000, "hosts": ["a", 3]})).err();
        let mut p = paths(e.expect("refused"));
        p.sort();
        assert_eq!(p, ["value/hosts/1", "value/port"]);
        let e = check_schema(Some(&schema), &json!("nope")).err();
        assert_eq!(paths(e.expect("refused")), ["value"]);
        assert!(check_schema(None, &json!("anything")).is_ok());
    }

    #[test]
    fn a_remote_reference_is_never_fetched() {
        let schema = json!({"$ref": "http://127.0.0.1:9/never.json"});
        let e = check_schema(Some(&schema), &json!(1)).err();
        assert_eq!(paths(e.expect("refused")), ["schema"]);
    }
}
