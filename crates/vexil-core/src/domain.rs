//! Vexil's stored resources: namespaces, flags, segments, configuration entries and audit events, and the key rules
//! they obey. These are plain data shared by the store, service and transport layers; nothing
//! here touches storage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::FlagDefinition;

/// Milliseconds since the Unix epoch, UTC. Transports render it as RFC 3339.
pub type Millis = i64;

/// A store-wide, strictly increasing commit number. Every successful write gets a new one.
pub type Revision = u64;

/// A namespace: an isolated set of flags, segments and configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// `^[a-z0-9][a-z0-9._-]{0,62}$`.
    pub key: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Merged under every evaluation context in this namespace (request keys win).
    #[serde(default)]
    pub evaluation_context: Map<String, Value>,
    /// Lets callers without credentials evaluate flags here (off by default): for clients
    /// that cannot send a token. Nothing else is ever open to them.
    #[serde(default)]
    pub anonymous_evaluation: bool,
    /// Starts at 1, +1 per update.
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Last update time.
    #[serde(default)]
    pub updated_at: Millis,
}

/// A stored flag: flagd's definition plus Vexil's bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flag {
    /// Owning namespace.
    pub namespace: String,
    /// Unique within the namespace; see [`validate_flag_key`].
    pub key: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Labels for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// What flagd would read.
    #[serde(flatten)]
    pub definition: FlagDefinition,
    /// Starts at 1, +1 per update; the basis of optimistic concurrency.
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Who created it.
    #[serde(default)]
    pub created_by: String,
    /// Last update time.
    #[serde(default)]
    pub updated_at: Millis,
    /// Who last updated it.
    #[serde(default)]
    pub updated_by: String,
}

/// A named, reusable rule (flagd's `$evaluators` entry), referenced as `{"$ref": key}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Owning namespace.
    pub namespace: String,
    /// Unique within the namespace; see [`validate_flag_key`].
    pub key: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The JsonLogic rule.
    pub rule: Value,
    /// Starts at 1, +1 per update.
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Last update time.
    #[serde(default)]
    pub updated_at: Millis,
}

/// A dynamic configuration entry: a JSON value under a key in a namespace, optionally held to a
/// JSON Schema that every new value must satisfy. Every version is kept (see the store's
/// `ConfigStore::config_versions`), so history and rollback work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntry {
    /// Owning namespace.
    pub namespace: String,
    /// Unique within the namespace; the rules of [`validate_flag_key`].
    pub key: String,
    /// The value: any JSON.
    pub value: Value,
    /// A JSON Schema (draft 2020-12 unless it names another) every value must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Starts at 1, +1 per update (a rollback is an update too).
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Who created it.
    #[serde(default)]
    pub created_by: String,
    /// When this version was written.
    #[serde(default)]
    pub updated_at: Millis,
    /// Who wrote this version.
    #[serde(default)]
    pub updated_by: String,
}

/// What kind of resource a change or audit event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A namespace.
    Namespace,
    /// A flag.
    Flag,
    /// A segment.
    Segment,
    /// A user account (also the kind of login events).
    User,
    /// A custom role.
    Role,
    /// A role binding.
    Binding,
    /// An API token.
    Token,
    /// A configuration entry.
    Config,
}

impl ResourceKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Namespace => "namespace",
            ResourceKind::Flag => "flag",
            ResourceKind::Segment => "segment",
            ResourceKind::User => "user",
            ResourceKind::Role => "role",
            ResourceKind::Binding => "binding",
            ResourceKind::Token => "token",
            ResourceKind::Config => "config",
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [ResourceKind; 8] = [
        ResourceKind::Namespace,
        ResourceKind::Flag,
        ResourceKind::Segment,
        ResourceKind::User,
        ResourceKind::Role,
        ResourceKind::Binding,
        ResourceKind::Token,
        ResourceKind::Config,
    ];
}

/// A name that is no [`ResourceKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of namespace, flag, segment, user, role, binding, token, config; not {0:?}")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for ResourceKind {
    type Err = UnknownKind;

    /// The kind named by its lower-case name ([`ResourceKind::as_str`]), as serde reads it.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| UnknownKind(name.to_owned()))
    }
}

/// Who did something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    /// `user`, `token` or `system`.
    pub kind: String,
    /// The user name, token id, or component.
    pub id: String,
}

impl Actor {
    /// The server itself (start-up import, migrations).
    pub fn system() -> Self {
        Self {
            kind: "system".into(),
            id: "vexil".into(),
        }
    }
}

/// One audited action. `seq`, `prev_hash` and `hash` are assigned by the store when the event
/// is committed with the change it describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Unique id (assigned by the service; the idempotency key for relays).
    pub id: String,
    /// Position in the log, from 1.
    #[serde(default)]
    pub seq: u64,
    /// When.
    pub at: Millis,
    /// Who.
    pub actor: Actor,
    /// E.g. `flag.update`.
    pub action: String,
    /// What kind of resource.
    pub kind: ResourceKind,
    /// Its namespace (the namespace's own key for namespace events).
    pub namespace: String,
    /// Its key.
    pub key: String,
    /// State before, if it existed.
    #[serde(default)]
    pub before: Option<Value>,
    /// State after, if it still exists.
    #[serde(default)]
    pub after: Option<Value>,
    /// The request that caused it.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The client address.
    #[serde(default)]
    pub source_ip: Option<String>,
    /// Hash of the previous event (hex), empty for the first.
    #[serde(default)]
    pub prev_hash: String,
    /// SHA-256 (hex) over `prev_hash` and this event's content.
    #[serde(default)]
    pub hash: String,
}

/// One committed change, as the change feed delivers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The commit's revision; changes of one commit share it.
    pub revision: Revision,
    /// Namespace affected.
    pub namespace: String,
    /// Resource kind.
    pub kind: ResourceKind,
    /// Resource key.
    pub key: String,
    /// The resource after the change (`None` when deleted), as stored JSON.
    pub after: Option<Value>,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} key {key:?} is invalid: {rule}")]
pub struct KeyError {
    /// `namespace`, `flag`, `segment`.
    pub what: &'static str,
    /// The key as given.
    pub key: String,
    /// The rule it broke.
    pub rule: &'static str,
}

/// Namespace keys: `^[a-z0-9][a-z0-9._-]{0,62}$` (DESIGN.md §2).
///
/// # Errors
/// [`KeyError`] naming the rule.
pub fn validate_namespace_key(key: &str) -> Result<(), KeyError> {
    check_key(
        "namespace",
        key,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'),
        "must match ^[a-z0-9][a-z0-9._-]{0,62}$",
    )
}

/// Flag and segment keys: `^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$`.
///
/// flagd allows any non-empty key, but keys travel in URL paths, metric labels and CLI
/// arguments, so Vexil restricts them to URL-safe characters. Mixed case is allowed because real
/// flagd files (the testbed's included) use it.
///
/// # Errors
/// [`KeyError`] naming the rule.
pub fn validate_flag_key(what: &'static str, key: &str) -> Result<(), KeyError> {
    check_key(
        what,
        key,
        128,
        |c| c.is_ascii_alphanumeric() || c == '_',
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'),
        "must match ^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$",
    )
}

pub(crate) fn check_key(
    what: &'static str,
    key: &str,
    max: usize,
    first: impl Fn(char) -> bool,
    rest: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), KeyError> {
    let mut chars = key.chars();
    let ok = key.len() <= max && chars.next().is_some_and(&first) && chars.all(&rest);
    if ok {
        Ok(())
    } else {
        Err(KeyError {
            what,
            key: key.chars().take(max + 8).collect(),
            rule,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_name_as_serde_does_and_the_error_lists_them_all() {
        for kind in ResourceKind::ALL {
            assert_eq!(kind.as_str().parse::<ResourceKind>(), Ok(kind));
            let via_serde: ResourceKind =
                serde_json::from_value(serde_json::json!(kind.as_str())).expect("serde name");
            assert_eq!(via_serde, kind);
        }
        let message = "widget"
            .parse::<ResourceKind>()
            .err()
            .map(|e| e.to_string());
        let message = message.expect("unknown");
        for kind in ResourceKind::ALL {
            assert!(message.contains(kind.as_str()), "{message}");
        }
    }

    #[test]
    fn namespace_keys_follow_the_design_pattern() {
        assert!(validate_namespace_key("prod").is_ok());
        assert!(validate_namespace_key("team-a.v2_x").is_ok());
        for bad in ["", "Prod", "-x", "a/b", &"a".repeat(64)] {
            assert!(validate_namespace_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flag_keys_allow_mixed_case_but_not_url_syntax() {
        assert!(validate_flag_key("flag", "fractional-flag-A-shared-seed").is_ok());
        for bad in ["", "a b", "a/b", "a?b", "-x", &"a".repeat(129)] {
            assert!(validate_flag_key("flag", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stored_flag_serialises_with_flagd_field_names() {
        let f: Flag = serde_json::from_value(serde_json::json!({
            "namespace": "default", "key": "k", "state": "ENABLED",
            "variants": {"on": true}, "defaultVariant": "on", "tags": ["a"]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let v = serde_json::to_value(&f).unwrap_or_default();
        assert_eq!(v["defaultVariant"], "on");
        assert_eq!(v["state"], "ENABLED");
        assert_eq!(v["tags"][0], "a");
    }
}
