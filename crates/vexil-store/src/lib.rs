//! `vexil-store` owns persistence: the storage traits, in domain terms and split by capability,
//! and their backends (SQLite, PostgreSQL and etcd, all passing the same conformance suite), plus
//! the distributed mode's composition of etcd and PostgreSQL with its audit relay
//! ([`distributed`]). It owns migrations and change feeds.
//!
//! The domain rules of a write (conditions, versions, what a replace keeps, what a delete
//! needs) live once, in `plan` (and `identity` for identity's own); what the read paths share
//! (page sizes, text filters, pagination, whole-commit feeds) in `listing`; the encoding of
//! stored documents and counters in `codec`. Each backend keeps only its storage: SQL and its
//! binding, transactions and locks, etcd's txns.
//!
//! It must not depend on any transport (axum, tonic) or on the service layer. Driver errors
//! never leave this crate: every backend maps them to [`StoreError`].
//!
//! Writes go through one primitive, [`FlagStore::commit`]: a batch of compare-and-set writes
//! plus the audit events that describe them, applied atomically under a new [`Revision`]. CRUD,
//! import and kill switches are all batches, so "a change and its audit record commit together
//! or not at all" holds by construction.

mod codec;
pub mod distributed;
pub mod etcd;
mod identity;
mod listing;
mod plan;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde_json::Value;
use vexil_core::domain::{
    AuditEvent, Change, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};
use vexil_core::identity::{ApiToken, Binding, IdentityState, Role, User};

/// A store failure, in domain terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The resource does not exist.
    #[error("{} {namespace}/{key} not found", kind.as_str())]
    NotFound {
        /// What kind.
        kind: ResourceKind,
        /// Namespace (for namespaces, the key again).
        namespace: String,
        /// Key.
        key: String,
    },
    /// A create found the resource already there.
    #[error("{} {namespace}/{key} already exists", kind.as_str())]
    AlreadyExists {
        /// What kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// A compare-and-set write found another version: someone else wrote first.
    #[error("{} {namespace}/{key} is at version {actual}, not {expected}", kind.as_str())]
    VersionMismatch {
        /// What kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// The version the writer expected.
        expected: u64,
        /// The version stored.
        actual: u64,
    },
    /// The namespace still holds flags, segments or configuration entries and cannot be deleted.
    #[error("namespace {namespace} is not empty")]
    NamespaceNotEmpty {
        /// The namespace.
        namespace: String,
    },
    /// The change log no longer reaches back to the revision asked for: the backend keeps a
    /// bounded log (etcd) and has dropped the commits after `after` up to `oldest`. The
    /// consumer must reload from a consistent read ([`FlagStore::load_namespace`]) and follow
    /// from there. Nothing is wrong with the store.
    #[error("the change log starts at revision {oldest}; changes after {after} are gone")]
    ChangesCompacted {
        /// The revision the consumer asked to resume after.
        after: Revision,
        /// The oldest revision the log still holds.
        oldest: Revision,
    },
    /// The batch is larger than the backend takes in one atomic write (etcd's per-transaction
    /// limits). Retrying will not help; a smaller batch may. Nothing was written.
    #[error("batch too large: {message}")]
    TooLarge {
        /// What limit was hit, for the caller (names no secret).
        message: String,
    },
    /// The backend cannot be reached or is overloaded; retrying later may work. Nothing was
    /// written.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// Operator-facing detail (never shown to API clients).
        message: String,
    },
    /// Anything else: corrupt data, a driver bug. Nothing was written.
    #[error("store error: {message}")]
    Internal {
        /// Operator-facing detail (never shown to API clients).
        message: String,
    },
}

/// The version a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The resource must not exist (create).
    Absent,
    /// The resource must exist at exactly this version (update, delete).
    Version(u64),
    /// The resource must exist, at any version.
    Exists,
    /// No condition (import's upsert).
    Any,
}

/// One write in a batch. Puts carry the full new state; the store sets `version` (previous + 1,
/// or 1) and keeps `created_*` of an existing resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create or replace a namespace.
    PutNamespace {
        /// New state.
        namespace: Namespace,
        /// Condition.
        expect: Expect,
    },
    /// Delete an empty namespace.
    DeleteNamespace {
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
    /// Create or replace a flag.
    PutFlag {
        /// New state.
        flag: Flag,
        /// Condition.
        expect: Expect,
    },
    /// Delete a flag.
    DeleteFlag {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
    /// Create or replace a segment.
    PutSegment {
        /// New state.
        segment: Segment,
        /// Condition.
        expect: Expect,
    },
    /// Delete a segment.
    DeleteSegment {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
    /// Create or replace a configuration entry; the store also keeps the stamped entry as
    /// version `version` of its history ([`ConfigStore::config_versions`]).
    PutConfig {
        /// New state.
        config: ConfigEntry,
        /// Condition.
        expect: Expect,
    },
    /// Delete a configuration entry and its history (the audit log keeps what it was).
    DeleteConfig {
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// Condition.
        expect: Expect,
    },
}

/// What a successful commit produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The new revision (all changes of the batch share it).
    pub revision: Revision,
    /// The stored state after each write, in batch order (`None` for deletes).
    pub results: Vec<Option<Value>>,
    /// The audit events as stored (with `seq`, `prev_hash`, `hash`).
    pub audit: Vec<AuditEvent>,
}

/// List filters for flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagQuery {
    /// Only flags carrying this tag.
    pub tag: Option<String>,
    /// Case-insensitive substring of key, name or description.
    pub text: Option<String>,
    /// Page size (the store caps it at 1000; 0 means 100).
    pub limit: usize,
    /// Resume after this key (exclusive), as returned in [`Page::next_cursor`].
    pub cursor: Option<String>,
}

/// One page of a keyed listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// Items in key order.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A consistent view of one namespace, as the snapshot cache loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceState {
    /// The namespace.
    pub namespace: Namespace,
    /// All its flags.
    pub flags: Vec<Flag>,
    /// All its segments.
    pub segments: Vec<Segment>,
    /// The store revision this view is at.
    pub revision: Revision,
}

/// [`NamespaceState`] with each flag still as its stored JSON text, for rebuilding a snapshot
/// one flag at a time: a decoded flag's `serde_json::Value` trees cost ~25 times its text, so
/// decoding a large namespace all at once would set the replica's memory peak.
#[derive(Debug, Clone, PartialEq)]
pub struct RawNamespaceState {
    /// The namespace.
    pub namespace: Namespace,
    /// Each flag's JSON (a [`Flag`]), in key order.
    pub flags: Vec<String>,
    /// All its segments.
    pub segments: Vec<Segment>,
    /// The store revision this view is at.
    pub revision: Revision,
}

/// Audit-log filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this resource kind.
    pub kind: Option<ResourceKind>,
    /// Only this key.
    pub key: Option<String>,
    /// Only events with `seq` greater than this.
    pub after_seq: Option<u64>,
    /// Maximum events (0 means 100; capped at 1000).
    pub limit: usize,
}

/// Flag state: namespaces, flags and segments, written in atomic batches.
#[async_trait]
pub trait FlagStore: Send + Sync + 'static {
    /// Applies `writes` and appends `audit` atomically under one new revision.
    ///
    /// All-or-nothing: on any error nothing is written and no revision is consumed (callers must
    /// not rely on revisions being gap-free). Writes apply in order, so a batch may create a
    /// namespace and then flags in it. A failed condition is [`StoreError::VersionMismatch`],
    /// [`StoreError::AlreadyExists`] or [`StoreError::NotFound`]; flags, segments and configs in
    /// an unknown namespace are `NotFound` for the namespace. Deleting a missing resource is
    /// `NotFound` whatever its condition. An empty batch is a no-op that returns the current
    /// revision and consumes none; a batch with no writes but some audit events appends them
    /// without consuming a revision (nothing changed for the feed to carry).
    ///
    /// # Errors
    /// As above, plus [`StoreError::Unavailable`] / [`StoreError::Internal`].
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError>;

    /// All namespaces, in key order.
    ///
    /// # Errors
    /// Unavailable / Internal.
    async fn list_namespaces(&self) -> Result<Vec<Namespace>, StoreError>;

    /// One namespace.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], Unavailable / Internal.
    async fn get_namespace(&self, key: &str) -> Result<Namespace, StoreError>;

    /// One flag.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (for the flag, or the namespace), Unavailable / Internal.
    async fn get_flag(&self, namespace: &str, key: &str) -> Result<Flag, StoreError>;

    /// A page of flags in key order, filtered.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown namespace, Unavailable / Internal.
    async fn list_flags(
        &self,
        namespace: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, StoreError>;

    /// One segment.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], Unavailable / Internal.
    async fn get_segment(&self, namespace: &str, key: &str) -> Result<Segment, StoreError>;

    /// All segments of a namespace in key order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown namespace, Unavailable / Internal.
    async fn list_segments(&self, namespace: &str) -> Result<Vec<Segment>, StoreError>;

    /// Everything in a namespace at one revision (a single read transaction).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown namespace, Unavailable / Internal.
    async fn load_namespace(&self, namespace: &str) -> Result<NamespaceState, StoreError>;

    /// As [`FlagStore::load_namespace`], with the flags as JSON text (see
    /// [`RawNamespaceState`]). The default re-encodes a decoded load; SQL backends hand out
    /// the stored text without decoding it.
    ///
    /// # Errors
    /// As [`FlagStore::load_namespace`].
    async fn load_namespace_raw(&self, namespace: &str) -> Result<RawNamespaceState, StoreError> {
        let state = self.load_namespace(namespace).await?;
        let flags = state
            .flags
            .iter()
            .map(|f| {
                serde_json::to_string(f).map_err(|e| StoreError::Internal {
                    message: format!("re-encoding flag {}: {e}", f.key),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RawNamespaceState {
            namespace: state.namespace,
            flags,
            segments: state.segments,
            revision: state.revision,
        })
    }
}

/// The ordered change log that replicas and watchers follow.
#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// The latest committed revision (0 for an empty store).
    ///
    /// # Errors
    /// Unavailable / Internal.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Changes with revision strictly greater than `after`, in revision order, at most `limit`
    /// of them (a commit's changes are never split across calls). Deterministic and repeatable:
    /// a consumer resumes by passing the last revision it applied. `limit` 0 returns nothing; a
    /// single commit with more than `limit` changes is returned alone and whole, so a consumer
    /// never stalls.
    ///
    /// A backend may keep a bounded log (etcd keeps the last [`etcd::CHANGE_RETENTION`]
    /// commits): when `after` is older than what it holds, it answers
    /// [`StoreError::ChangesCompacted`] rather than a log with a hole in it.
    ///
    /// # Errors
    /// [`StoreError::ChangesCompacted`], Unavailable / Internal.
    async fn changes_since(&self, after: Revision, limit: usize)
    -> Result<Vec<Change>, StoreError>;

    /// A receiver that observes the latest committed revision. It may skip values (it is a
    /// hint to call [`ChangeFeed::changes_since`]), but after a commit returns, the receiver
    /// eventually shows a revision at least that high.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Revision>;
}

/// Where audit events stand in a store that commits them in one place and records them in
/// another (the distributed mode's outbox relay, [`distributed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayStatus {
    /// Whether the last relay attempt reached the audit log.
    pub healthy: bool,
    /// Commits whose events were seen waiting after the last attempt.
    pub pending: usize,
}

/// Configuration entries: reads. Writes are [`Write::PutConfig`] and [`Write::DeleteConfig`]
/// through [`FlagStore::commit`], like every resource of a namespace, so a config change gets a
/// revision, reaches the change feed (kind `config`) and commits with its audit events.
/// A namespace holding configs cannot be deleted, as with flags and segments.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// One entry, at its current version.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (for the entry, or the namespace), Unavailable / Internal.
    async fn get_config(&self, namespace: &str, key: &str) -> Result<ConfigEntry, StoreError>;

    /// All entries of a namespace in key order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown namespace, Unavailable / Internal.
    async fn list_configs(&self, namespace: &str) -> Result<Vec<ConfigEntry>, StoreError>;

    /// The stored versions of one entry, oldest first: those after `after_version`, at most
    /// `limit` (0 means 100; capped at 1000). Each is the entry exactly as it was written at
    /// that version. A deleted entry has no versions; one created again starts at 1.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the entry does not exist, Unavailable / Internal.
    async fn config_versions(
        &self,
        namespace: &str,
        key: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<ConfigEntry>, StoreError>;
}

/// The audit log (appends happen inside [`FlagStore::commit`]).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Events in `seq` order, filtered.
    ///
    /// # Errors
    /// Unavailable / Internal.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;

    /// The relay's state, for a store whose commits reach the audit log through a relay;
    /// `None` (the default) for stores that append in the commit itself. Cheap, no I/O.
    fn relay_status(&self) -> Option<RelayStatus> {
        None
    }
}

/// One identity write. Identity is small (users, custom roles, bindings, tokens), so it is read
/// whole ([`IdentityStore::load_identity`]) and written in atomic batches like flag state.
#[derive(Debug, Clone, PartialEq)]
pub enum IdentityWrite {
    /// Create or replace a user; the store sets `version` (previous + 1, or 1) and keeps
    /// `created_at` of an existing user.
    PutUser {
        /// New state.
        user: User,
        /// Condition.
        expect: Expect,
    },
    /// Delete a user.
    DeleteUser {
        /// Name.
        name: String,
        /// Condition.
        expect: Expect,
    },
    /// Create or replace a custom role (versioned like users).
    PutRole {
        /// New state.
        role: Role,
        /// Condition.
        expect: Expect,
    },
    /// Delete a custom role.
    DeleteRole {
        /// Name.
        name: String,
        /// Condition.
        expect: Expect,
    },
    /// Add a binding; its id must be new ([`StoreError::AlreadyExists`] otherwise).
    CreateBinding {
        /// The binding.
        binding: Binding,
    },
    /// Remove a binding ([`StoreError::NotFound`] when absent).
    DeleteBinding {
        /// Its id.
        id: String,
    },
    /// Add an API token; its id and its digest must both be new.
    CreateToken {
        /// The token (digest only; the secret is never stored).
        token: ApiToken,
    },
    /// Revoke (delete) an API token ([`StoreError::NotFound`] when absent).
    DeleteToken {
        /// Its id.
        id: String,
    },
}

/// What a successful identity commit produced.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityCommitted {
    /// The new identity revision (unchanged for an audit-only batch).
    pub revision: u64,
    /// The audit events as stored (with `seq`, `prev_hash`, `hash`).
    pub audit: Vec<AuditEvent>,
}

/// Users, custom roles, role bindings and API tokens.
///
/// Failed conditions are reported as for [`FlagStore::commit`], with the resource kinds
/// `user`, `role`, `binding` and `token`, an empty namespace and the name or id as key.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Applies `writes` and appends `audit` atomically, bumping the identity revision by one
    /// when `writes` is non-empty.
    ///
    /// All-or-nothing, in order. The audit events join the same hash-chained log as flag
    /// events. A batch with no writes only appends its audit events (failed logins are
    /// recorded this way) and leaves the revision alone.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::AlreadyExists`] (a duplicate user, role,
    /// binding id, token id or token digest), [`StoreError::VersionMismatch`], Unavailable /
    /// Internal.
    async fn commit_identity(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<IdentityCommitted, StoreError>;

    /// Everything, read in one transaction: users, roles, bindings and tokens in key (name or
    /// id) order, and the identity revision they are at.
    ///
    /// # Errors
    /// Unavailable / Internal.
    async fn load_identity(&self) -> Result<IdentityState, StoreError>;

    /// The current identity revision (0 before the first write). Cheap: replicas poll it to
    /// notice changes made elsewhere, such as a revoked token.
    ///
    /// # Errors
    /// Unavailable / Internal.
    async fn identity_revision(&self) -> Result<u64, StoreError>;
}

/// Where an audit chain stops holding: the first event that does not follow from the one
/// before it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainBreak {
    /// The event's `seq` (or the `seq` that was expected, for a gap).
    pub seq: u64,
    /// What does not hold.
    pub reason: String,
}

/// Checks an audit log one event at a time, in `seq` order from the first event: `seq` goes
/// up by one from 1, each `prev_hash` is the previous event's `hash` (empty for the first),
/// and each `hash` is [`chain_hash`] of the event. Pure, so any store's log can be checked,
/// and a log read in pages can be checked without holding it whole.
///
/// A chain that verifies proves only that nobody edited it without recomputing every later
/// hash; keep the head hash ([`ChainVerifier::head`]) somewhere else to detect that too.
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    checked: u64,
    head_seq: u64,
    head_hash: String,
}

impl ChainVerifier {
    /// Checks the next event and, when it follows, makes it the head.
    ///
    /// # Errors
    /// [`ChainBreak`] naming the event and the rule it breaks; the head stays where it was.
    pub fn check(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        let expected = self.head_seq + 1;
        let fail = |seq, reason: String| Err(ChainBreak { seq, reason });
        if event.seq != expected {
            return fail(
                expected,
                format!(
                    "expected event {expected} after {}, found {}",
                    self.head_seq, event.seq
                ),
            );
        }
        if event.prev_hash != self.head_hash {
            return fail(
                event.seq,
                format!(
                    "prev_hash {:?} is not the hash of event {}",
                    event.prev_hash, self.head_seq
                ),
            );
        }
        if chain_hash(&event.prev_hash, event) != event.hash {
            return fail(
                event.seq,
                "hash does not match the event's content".to_owned(),
            );
        }
        self.checked += 1;
        self.head_seq = event.seq;
        self.head_hash.clone_from(&event.hash);
        Ok(())
    }

    /// Events checked and found to follow.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last event that followed: its `seq` (0 before any) and its hash.
    pub fn head(&self) -> (u64, &str) {
        (self.head_seq, &self.head_hash)
    }
}

/// Computes an audit event's chain hash: SHA-256 over the previous hash and the event's
/// canonical JSON with `seq`, `prev_hash` and `hash` cleared. Backends call this when they
/// assign `seq`, so the chain can be verified independently of the store.
pub fn chain_hash(prev_hash: &str, event: &AuditEvent) -> String {
    use sha2::{Digest, Sha256};
    let mut e = event.clone();
    e.seq = 0;
    e.prev_hash = String::new();
    e.hash = String::new();
    let body = serde_json::to_vec(&e).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(&body);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use vexil_core::domain::{Actor, AuditEvent, ResourceKind};

    use super::{ChainVerifier, chain_hash};

    /// A chain of `n` flag events, hashed as a store would.
    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = String::new();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEvent {
                    id: format!("ev-{seq}"),
                    seq,
                    at: 1_700_000_000_000 + i64::try_from(seq).unwrap_or(0),
                    actor: Actor::system(),
                    action: "flag.update".into(),
                    kind: ResourceKind::Flag,
                    namespace: "default".into(),
                    key: "f".into(),
                    before: None,
                    after: Some(serde_json::json!({"version": seq})),
                    request_id: None,
                    source_ip: None,
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = chain_hash(&prev, &e);
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    fn first_break(events: &[AuditEvent]) -> Option<(u64, String)> {
        let mut v = ChainVerifier::default();
        events
            .iter()
            .find_map(|e| v.check(e).err())
            .map(|b| (b.seq, b.reason))
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let events = chain(5);
        let mut v = ChainVerifier::default();
        for e in &events {
            v.check(e).expect("follows");
        }
        assert_eq!(v.checked(), 5);
        assert_eq!(v.head(), (5, events[4].hash.as_str()));
    }

    #[test]
    fn an_edited_event_a_removed_event_and_a_relinked_event_each_break_the_chain() {
        let mut edited = chain(4);
        edited[2].action = "flag.delete".into();
        let (seq, reason) = first_break(&edited).expect("edit detected");
        assert_eq!(seq, 3);
        assert!(reason.contains("hash does not match"), "{reason}");

        let mut removed = chain(4);
        removed.remove(1);
        let (seq, reason) = first_break(&removed).expect("gap detected");
        assert_eq!(seq, 2);
        assert!(reason.contains("found 3"), "{reason}");

        // Rehashing the edited event alone is not enough: the next one no longer links to it.
        let mut relinked = chain(4);
        relinked[1].action = "flag.delete".into();
        relinked[1].hash = chain_hash(&relinked[1].prev_hash, &relinked[1]);
        let (seq, reason) = first_break(&relinked).expect("relink detected");
        assert_eq!(seq, 3);
        assert!(reason.contains("not the hash of event 2"), "{reason}");
    }
}
