//! The write rules every backend applies, in one place and without I/O: the [`Expect`] check,
//! and what a put or a delete of a versioned resource (namespace, flag, segment, configuration
//! entry, user, custom role) leaves in the store. A backend reads the stored state a rule needs, asks this module,
//! and writes what it answers; the SQL and its binding, the transactions and locks, and etcd's
//! txn building stay in the backends.
//!
//! The rules, as [`FlagStore::commit`](crate::FlagStore::commit) and
//! [`IdentityStore::commit_identity`](crate::IdentityStore::commit_identity) document them:
//! - a put stores version previous + 1 (1 for a create) and keeps the `created_*` fields of the
//!   resource it replaces ([`put`]);
//! - a delete needs the resource whatever its condition: a missing one is
//!   [`StoreError::NotFound`], not a silent no-op that would still emit a change ([`delete`]);
//! - flags, segments and configuration entries need their namespace, and a missing one is
//!   `NotFound` for the namespace ([`require_namespace`]);
//! - a namespace that still holds flags, segments or configuration entries cannot be deleted
//!   ([`require_empty`]);
//! - an empty batch commits nothing and consumes no revision ([`empty_commit`]);
//! - audit events extend one hash chain after its head ([`chain`]).
//!
//! The identity-only rules (bindings and tokens, which have no versions) are in
//! [`crate::identity`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vexil_core::domain::{
    AuditEvent, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};

use crate::{Committed, Expect, StoreError, chain_hash};

/// A resource written with [`Expect`] conditions and stamped by the store: a namespace, flag,
/// segment, configuration entry, user or custom role.
pub(crate) trait Versioned: Serialize + DeserializeOwned + Send {
    /// Its kind, in errors and change records; [`ResourceKind::as_str`] also names it in
    /// encoding errors.
    const KIND: ResourceKind;
    /// The namespace its errors name: a namespace's own key, empty for identity resources.
    fn namespace(&self) -> &str;
    /// Its key (a user's or role's name).
    fn key(&self) -> &str;
    /// Its version (as stamped).
    fn version(&self) -> u64;
    /// Sets the version the store assigns and keeps the creation fields of `previous`, the
    /// resource it replaces (`None` for a create).
    fn stamp(&mut self, version: u64, previous: Option<Self>)
    where
        Self: Sized;
}

/// Implements [`Versioned`] for resources whose version is `version` and whose creation fields
/// (`keeps`) a put carries over from the resource it replaces; `namespace` and `key` are
/// expressions of `self`.
macro_rules! versioned {
    ($item:ty, $kind:expr, |$this:ident| namespace: $ns:expr, key: $key:expr, keeps: [$($field:ident),+]) => {
        impl $crate::plan::Versioned for $item {
            const KIND: vexil_core::domain::ResourceKind = $kind;

            fn namespace(&self) -> &str {
                let $this = self;
                $ns
            }

            fn key(&self) -> &str {
                let $this = self;
                $key
            }

            fn version(&self) -> u64 {
                self.version
            }

            fn stamp(&mut self, version: u64, previous: Option<Self>) {
                self.version = version;
                if let Some(old) = previous {
                    $(self.$field = old.$field;)+
                }
            }
        }
    };
}
pub(crate) use versioned;

versioned!(
    Namespace,
    ResourceKind::Namespace,
    |n| namespace: &n.key,
    key: &n.key,
    keeps: [created_at]
);
versioned!(
    Segment,
    ResourceKind::Segment,
    |s| namespace: &s.namespace,
    key: &s.key,
    keeps: [created_at]
);
// Flags and configuration entries also keep who created them.
versioned!(
    Flag,
    ResourceKind::Flag,
    |f| namespace: &f.namespace,
    key: &f.key,
    keeps: [created_at, created_by]
);
versioned!(
    ConfigEntry,
    ResourceKind::Config,
    |c| namespace: &c.namespace,
    key: &c.key,
    keeps: [created_at, created_by]
);

/// Checks a write's condition against the stored version (`None`: absent).
///
/// # Errors
/// [`StoreError::AlreadyExists`] for [`Expect::Absent`] on a stored resource,
/// [`StoreError::VersionMismatch`] for another version, [`StoreError::NotFound`] for
/// [`Expect::Version`] or [`Expect::Exists`] on an absent one.
pub(crate) fn check(
    expect: Expect,
    stored: Option<u64>,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> Result<(), StoreError> {
    match (expect, stored) {
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists {
            kind,
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        }),
        (Expect::Version(expected), Some(actual)) if expected != actual => {
            Err(StoreError::VersionMismatch {
                kind,
                namespace: namespace.to_owned(),
                key: key.to_owned(),
                expected,
                actual,
            })
        }
        (Expect::Version(_) | Expect::Exists, None) => Err(not_found(kind, namespace, key)),
        _ => Ok(()),
    }
}

/// What a put stores.
#[derive(Debug)]
pub(crate) struct Put<T> {
    /// The new state, stamped: version previous + 1 (or 1), `created_*` kept.
    pub(crate) item: T,
    /// The stored version it replaces (`None`: a create), for a backend that writes with its
    /// own compare-and-set.
    pub(crate) replaces: Option<u64>,
}

/// Plans a put of `item` over `stored`, the stored `(version, state)` (`None`: absent): checks
/// the condition, then [`stamp`]s.
///
/// # Errors
/// As [`check`].
pub(crate) fn put<T: Versioned>(
    item: T,
    expect: Expect,
    stored: Option<(u64, T)>,
) -> Result<Put<T>, StoreError> {
    let version = stored.as_ref().map(|(version, _)| *version);
    check(expect, version, T::KIND, item.namespace(), item.key())?;
    Ok(stamp(item, stored))
}

/// What a put of `item` over `stored` stores, its condition already checked: the version is
/// previous + 1 (1 for a create), and the `created_*` fields of the replaced resource are kept.
pub(crate) fn stamp<T: Versioned>(mut item: T, stored: Option<(u64, T)>) -> Put<T> {
    let replaces = stored.as_ref().map(|(version, _)| *version);
    item.stamp(replaces.map_or(1, |v| v + 1), stored.map(|(_, old)| old));
    Put { item, replaces }
}

/// Plans a delete of the resource stored at version `stored` (`None`: absent), and returns
/// that version.
///
/// # Errors
/// As [`check`], and [`StoreError::NotFound`] for an absent resource whatever the condition.
pub(crate) fn delete(
    expect: Expect,
    stored: Option<u64>,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> Result<u64, StoreError> {
    check(expect, stored, kind, namespace, key)?;
    stored.ok_or_else(|| not_found(kind, namespace, key))
}

/// A flag, segment or configuration entry write (or read) needs its namespace.
///
/// # Errors
/// [`StoreError::NotFound`] for the namespace when it does not `exist`.
pub(crate) fn require_namespace(namespace: &str, exists: bool) -> Result<(), StoreError> {
    if exists {
        Ok(())
    } else {
        Err(not_found(ResourceKind::Namespace, namespace, namespace))
    }
}

/// A namespace delete needs the namespace empty.
///
/// # Errors
/// [`StoreError::NamespaceNotEmpty`] when it is `occupied` by flags, segments or configuration
/// entries.
pub(crate) fn require_empty(namespace: &str, occupied: bool) -> Result<(), StoreError> {
    if occupied {
        Err(StoreError::NamespaceNotEmpty {
            namespace: namespace.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Whether a kind lives in a namespace (flags, segments and configuration entries), so that it
/// is keyed by namespace and key; the others are keyed by their key (name, id) alone.
pub(crate) fn in_namespace(kind: ResourceKind) -> bool {
    matches!(
        kind,
        ResourceKind::Flag | ResourceKind::Segment | ResourceKind::Config
    )
}

/// [`StoreError::NotFound`] (for a namespace, `namespace` and `key` are both its key).
pub(crate) fn not_found(kind: ResourceKind, namespace: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: namespace.to_owned(),
        key: key.to_owned(),
    }
}

/// What a batch with no writes and no audit events commits: nothing, at the `current`
/// revision, which it does not consume.
pub(crate) fn empty_commit(current: Revision) -> Committed {
    Committed {
        revision: current,
        results: Vec::new(),
        audit: Vec::new(),
    }
}

/// Chains `events` after the audit log's head, the last stored event's `seq` and `hash` (0 and
/// empty for an empty log): each gets the next `seq`, the previous event's hash as `prev_hash`,
/// and its own [`chain_hash`]. Returns them as they are to be stored, in order.
pub(crate) fn chain(events: Vec<AuditEvent>, head_seq: u64, head_hash: String) -> Vec<AuditEvent> {
    let (mut seq, mut prev_hash) = (head_seq, head_hash);
    events
        .into_iter()
        .map(|mut event| {
            seq += 1;
            event.seq = seq;
            event.prev_hash = std::mem::take(&mut prev_hash);
            event.hash = chain_hash(&event.prev_hash, &event);
            prev_hash.clone_from(&event.hash);
            event
        })
        .collect()
}

/// What one applied write did: the change it records and its result in
/// [`Committed::results`](crate::Committed::results).
#[derive(Debug)]
pub(crate) struct Applied {
    /// What kind of resource.
    pub(crate) kind: ResourceKind,
    /// Its namespace (a namespace's own key).
    pub(crate) namespace: String,
    /// Its key.
    pub(crate) key: String,
    /// The stored state after the write (`None` for a delete).
    pub(crate) after: Option<Value>,
}

impl Applied {
    /// A put that stored `item` as `after`.
    pub(crate) fn put<T: Versioned>(item: &T, after: Value) -> Self {
        Self {
            kind: T::KIND,
            namespace: item.namespace().to_owned(),
            key: item.key().to_owned(),
            after: Some(after),
        }
    }

    /// A delete.
    pub(crate) fn delete(kind: ResourceKind, namespace: String, key: String) -> Self {
        Self {
            kind,
            namespace,
            key,
            after: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(version: u64, created_at: i64) -> Segment {
        Segment {
            namespace: "ns".into(),
            key: "s".into(),
            description: String::new(),
            rule: serde_json::json!(true),
            version,
            created_at,
            updated_at: created_at,
        }
    }

    #[test]
    fn a_put_bumps_the_version_and_keeps_the_creation_time() {
        let created = put(segment(0, 3), Expect::Absent, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(created.item, segment(1, 3));
        assert_eq!(created.replaces, None);

        let replaced = put(segment(0, 9), Expect::Version(4), Some((4, segment(4, 7))))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(replaced.replaces, Some(4));
        assert_eq!((replaced.item.version, replaced.item.created_at), (5, 7));
        assert_eq!(replaced.item.updated_at, 9);
    }

    #[test]
    fn conditions_fail_with_the_documented_errors() {
        let kind = ResourceKind::Flag;
        assert!(matches!(
            check(Expect::Absent, Some(1), kind, "ns", "f"),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert_eq!(
            check(Expect::Version(1), Some(2), kind, "ns", "f"),
            Err(StoreError::VersionMismatch {
                kind,
                namespace: "ns".into(),
                key: "f".into(),
                expected: 1,
                actual: 2,
            })
        );
        for expect in [Expect::Version(1), Expect::Exists] {
            assert_eq!(
                check(expect, None, kind, "ns", "f"),
                Err(not_found(kind, "ns", "f"))
            );
        }
        for (expect, stored) in [
            (Expect::Absent, None),
            (Expect::Version(2), Some(2)),
            (Expect::Exists, Some(2)),
            (Expect::Any, None),
            (Expect::Any, Some(2)),
        ] {
            assert_eq!(check(expect, stored, kind, "ns", "f"), Ok(()));
        }
    }

    #[test]
    fn deleting_a_missing_resource_is_not_found_whatever_the_condition() {
        let kind = ResourceKind::Segment;
        assert_eq!(
            delete(Expect::Any, None, kind, "ns", "s"),
            Err(not_found(kind, "ns", "s"))
        );
        assert_eq!(
            delete(Expect::Absent, None, kind, "ns", "s"),
            Err(not_found(kind, "ns", "s"))
        );
        assert_eq!(delete(Expect::Version(3), Some(3), kind, "ns", "s"), Ok(3));
    }
}
