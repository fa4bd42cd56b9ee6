//! Identity and access as plain data: permissions, roles, role bindings, users and API tokens,
//! and the pure rules over them (built-in roles, name syntax, resolving a subject's grants).
//!
//! Nothing here hashes, signs or stores anything: password hashing, token digests and JWTs
//! belong to the service layer, persistence to the store.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::{Actor, KeyError, Millis};

/// The namespace scope that covers every namespace.
pub const ALL_NAMESPACES: &str = "*";

/// One permission. A grant pairs a set of them with a namespace scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Read flags, segments and namespaces.
    FlagRead,
    /// Create, change and delete flags, segments and namespaces.
    FlagWrite,
    /// Read configuration entries.
    ConfigRead,
    /// Change configuration entries.
    ConfigWrite,
    /// Read the audit log.
    AuditRead,
    /// Manage users, roles, bindings and API tokens.
    RbacAdmin,
    /// Evaluate flags (OFREP, flagd protocols, native evaluation).
    Evaluate,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 7] = [
        Permission::FlagRead,
        Permission::FlagWrite,
        Permission::ConfigRead,
        Permission::ConfigWrite,
        Permission::AuditRead,
        Permission::RbacAdmin,
        Permission::Evaluate,
    ];

    /// The wire name, e.g. `flag:read`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::FlagRead => "flag:read",
            Permission::FlagWrite => "flag:write",
            Permission::ConfigRead => "config:read",
            Permission::ConfigWrite => "config:write",
            Permission::AuditRead => "audit:read",
            Permission::RbacAdmin => "rbac:admin",
            Permission::Evaluate => "evaluate",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission name that is not one of [`Permission::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a permission (expected one of flag:read, flag:write, config:read, config:write, audit:read, rbac:admin, evaluate)"
)]
pub struct UnknownPermission {
    /// What was given.
    pub name: String,
}

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPermission { name: s.to_owned() })
    }
}

impl Serialize for Permission {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Permission {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of permissions (a bit set; serialized as a sorted list of names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// No permission.
    pub const EMPTY: PermissionSet = PermissionSet(0);

    /// Every permission.
    pub fn all() -> Self {
        Permission::ALL.into_iter().collect()
    }

    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// The union.
    #[must_use]
    pub fn union(self, other: PermissionSet) -> PermissionSet {
        PermissionSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every permission of `other` is in `self`.
    pub fn covers(self, other: PermissionSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// The members, in [`Permission::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::EMPTY;
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<Permission>::deserialize(d)?;
        Ok(list.into_iter().collect())
    }
}

/// The built-in roles: they always exist and cannot be changed or deleted.
///
/// `editor` and `viewer` include `evaluate`: evaluating reveals no more than reading the flag
/// does, and people who can read a flag expect to try it. Only `admin` reads the audit log by
/// default, since it carries actors and client addresses; a custom role can grant it.
pub fn builtin_role(name: &str) -> Option<PermissionSet> {
    use Permission::*;
    let set: &[Permission] = match name {
        "admin" => &Permission::ALL,
        "editor" => &[FlagRead, FlagWrite, ConfigRead, ConfigWrite, Evaluate],
        "viewer" => &[FlagRead, ConfigRead, Evaluate],
        "evaluator" => &[Evaluate],
        _ => return None,
    };
    Some(set.iter().copied().collect())
}

/// The names of the built-in roles.
pub const BUILTIN_ROLES: [&str; 4] = ["admin", "editor", "viewer", "evaluator"];

/// A role: a named set of permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Key syntax (as namespaces).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// What the role grants.
    pub permissions: PermissionSet,
    /// Starts at 1, +1 per update (0 for built-in roles, which are never stored).
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Last update time.
    #[serde(default)]
    pub updated_at: Millis,
}

/// Who a binding or grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A user, by name.
    User(String),
    /// An API token, by id.
    Token(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::User(n) => write!(f, "user:{n}"),
            Subject::Token(id) => write!(f, "token:{id}"),
        }
    }
}

impl FromStr for Subject {
    type Err = KeyError;

    /// `user:<name>` or `token:<id>`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyError {
            what: "subject",
            key: s.to_owned(),
            rule: "must be user:<name> or token:<id>",
        };
        let (kind, id) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "user" => validate_name("user name", id).map(|()| Subject::User(id.to_owned())),
            "token" if !id.is_empty() && id.len() <= 64 => Ok(Subject::Token(id.to_owned())),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Subject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A role bound to a subject in one namespace or in all ([`ALL_NAMESPACES`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// Assigned by the service.
    pub id: String,
    /// Who.
    pub subject: Subject,
    /// Which role (built-in or custom).
    pub role: String,
    /// A namespace key or `*`.
    pub namespace: String,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Who created it.
    pub created_by: Actor,
}

/// A user account. `password_hash` is a PHC string (argon2id); it never leaves the service
/// layer except into the store.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Login name, name syntax.
    pub name: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// PHC-format password hash.
    pub password_hash: String,
    /// A disabled user cannot log in, and its sessions stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Starts at 1, +1 per update.
    #[serde(default)]
    pub version: u64,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Last update time.
    #[serde(default)]
    pub updated_at: Millis,
    /// Bumped by a password change, so older sessions can be refused.
    #[serde(default)]
    pub password_changed_at: Millis,
}

impl fmt::Debug for User {
    // The hash stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// An opaque API token. Only the SHA-256 digest of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiToken {
    /// Public id (assigned by the service), used to list and revoke it.
    pub id: String,
    /// A label.
    pub name: String,
    /// Hex SHA-256 of the whole secret (`vx_…`).
    pub digest: String,
    /// The role it carries.
    pub role: String,
    /// The namespace it is scoped to, or `*`.
    pub namespace: String,
    /// After this instant it is refused.
    #[serde(default)]
    pub expires_at: Option<Millis>,
    /// Creation time.
    #[serde(default)]
    pub created_at: Millis,
    /// Who created it.
    pub created_by: Actor,
}

/// Everything that decides who may do what: custom roles, bindings, users and tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityState {
    /// Users, by name.
    pub users: Vec<User>,
    /// Custom roles (built-ins are never stored).
    pub roles: Vec<Role>,
    /// All bindings.
    pub bindings: Vec<Binding>,
    /// All live tokens.
    pub tokens: Vec<ApiToken>,
    /// Bumped by every identity write; replicas reload when it moves.
    pub revision: u64,
}

/// What a subject may do, per namespace scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Granted in every namespace.
    pub everywhere: PermissionSet,
    /// Granted in one namespace.
    pub per_namespace: BTreeMap<String, PermissionSet>,
}

impl Grants {
    /// Whether `permission` is granted in `namespace`. `namespace` `*` asks for a grant in every
    /// namespace (used by operations that span namespaces, like listing the audit log).
    pub fn allows(&self, permission: Permission, namespace: &str) -> bool {
        self.everywhere.contains(permission)
            || (namespace != ALL_NAMESPACES
                && self
                    .per_namespace
                    .get(namespace)
                    .is_some_and(|s| s.contains(permission)))
    }

    /// Whether `permission` is granted in at least one namespace.
    pub fn allows_somewhere(&self, permission: Permission) -> bool {
        self.everywhere.contains(permission)
            || self.per_namespace.values().any(|s| s.contains(permission))
    }

    /// Adds `set` in `namespace` (or everywhere for `*`).
    pub fn add(&mut self, namespace: &str, set: PermissionSet) {
        if namespace == ALL_NAMESPACES {
            self.everywhere = self.everywhere.union(set);
        } else {
            let e = self.per_namespace.entry(namespace.to_owned()).or_default();
            *e = e.union(set);
        }
    }

    /// Whether nothing is granted anywhere.
    pub fn is_empty(&self) -> bool {
        self.everywhere.is_empty() && self.per_namespace.values().all(|s| s.is_empty())
    }
}

impl IdentityState {
    /// The permissions of role `name`: built-in first, then custom. Unknown roles grant nothing
    /// (a binding can outlive nothing, since deleting a bound role is refused, but a stale read
    /// must fail closed).
    pub fn role_permissions(&self, name: &str) -> PermissionSet {
        builtin_role(name)
            .or_else(|| {
                self.roles
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| r.permissions)
            })
            .unwrap_or_default()
    }

    /// Everything bound to `subject`, plus, for a token, the role it was created with.
    pub fn grants_for(&self, subject: &Subject) -> Grants {
        let mut grants = Grants::default();
        if let Subject::Token(id) = subject
            && let Some(t) = self.tokens.iter().find(|t| &t.id == id)
        {
            grants.add(&t.namespace, self.role_permissions(&t.role));
        }
        for b in self.bindings.iter().filter(|b| &b.subject == subject) {
            grants.add(&b.namespace, self.role_permissions(&b.role));
        }
        grants
    }
}

/// Checks user and role names: the namespace key syntax, plus `@` for e-mail-like user names.
///
/// # Errors
/// A [`KeyError`] naming `what`.
pub fn validate_name(what: &'static str, name: &str) -> Result<(), KeyError> {
    crate::domain::check_key(
        what,
        name,
        64,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@'),
        "must match ^[a-z0-9][a-z0-9._@-]{0,63}$",
    )
}

/// Checks a binding or token scope: a namespace key or `*`.
///
/// # Errors
/// A [`KeyError`].
pub fn validate_scope(scope: &str) -> Result<(), KeyError> {
    if scope == ALL_NAMESPACES {
        Ok(())
    } else {
        crate::domain::validate_namespace_key(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_names_round_trip_and_unknown_names_are_refused() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        assert!("flag:delete".parse::<Permission>().is_err());
        let set: PermissionSet =
            serde_json::from_str(r#"["evaluate","flag:read"]"#).expect("test value");
        assert_eq!(
            serde_json::to_string(&set).expect("test value"),
            r#"["flag:read","evaluate"]"#
        );
    }

    #[test]
    fn builtin_roles_nest_as_specified() {
        let admin = builtin_role("admin").expect("test value");
        let editor = builtin_role("editor").expect("test value");
        let viewer = builtin_role("viewer").expect("test value");
        let evaluator = builtin_role("evaluator").expect("test value");
        assert_eq!(admin, PermissionSet::all());
        assert!(admin.covers(editor) && editor.covers(viewer) && viewer.covers(evaluator));
        assert!(!editor.contains(Permission::RbacAdmin));
        assert!(!editor.contains(Permission::AuditRead));
        assert!(!viewer.contains(Permission::FlagWrite));
        assert_eq!(evaluator.iter().collect::<Vec<_>>(), [Permission::Evaluate]);
        assert!(builtin_role("root").is_none());
    }

    #[test]
    fn a_namespace_grant_does_not_reach_other_namespaces_or_the_all_scope() {
        let mut g = Grants::default();
        g.add("prod", builtin_role("editor").expect("test value"));
        assert!(g.allows(Permission::FlagWrite, "prod"));
        assert!(!g.allows(Permission::FlagWrite, "staging"));
        assert!(!g.allows(Permission::FlagRead, ALL_NAMESPACES));
        assert!(g.allows_somewhere(Permission::FlagRead));
        g.add(ALL_NAMESPACES, builtin_role("viewer").expect("test value"));
        assert!(g.allows(Permission::FlagRead, ALL_NAMESPACES));
        assert!(g.allows(Permission::FlagRead, "staging"));
        assert!(!g.allows(Permission::FlagWrite, "staging"));
    }

    #[test]
    fn token_grants_combine_its_own_role_with_its_bindings() {
        let actor = Actor::system();
        let state = IdentityState {
            roles: vec![Role {
                name: "auditor".into(),
                description: String::new(),
                permissions: [Permission::AuditRead].into_iter().collect(),
                version: 1,
                created_at: 0,
                updated_at: 0,
            }],
            tokens: vec![ApiToken {
                id: "t1".into(),
                name: "sdk".into(),
                digest: "00".into(),
                role: "evaluator".into(),
                namespace: "prod".into(),
                expires_at: None,
                created_at: 0,
                created_by: actor.clone(),
            }],
            bindings: vec![Binding {
                id: "b1".into(),
                subject: Subject::Token("t1".into()),
                role: "auditor".into(),
                namespace: "*".into(),
                created_at: 0,
                created_by: actor,
            }],
            ..IdentityState::default()
        };
        let g = state.grants_for(&Subject::Token("t1".into()));
        assert!(g.allows(Permission::Evaluate, "prod"));
        assert!(!g.allows(Permission::Evaluate, "staging"));
        assert!(g.allows(Permission::AuditRead, ALL_NAMESPACES));
        assert!(state.grants_for(&Subject::User("t1".into())).is_empty());
    }

    #[test]
    fn subjects_and_names_are_checked() {
        assert_eq!(
            "user:alice@example.com".parse::<Subject>(),
            Ok(Subject::User("alice@example.com".into()))
        );
        assert!("user:Alice".parse::<Subject>().is_err());
        assert!("group:ops".parse::<Subject>().is_err());
        assert!(validate_name("user name", "").is_err());
        assert!(validate_scope("*").is_ok());
        assert!(validate_scope("**").is_err());
    }
}
