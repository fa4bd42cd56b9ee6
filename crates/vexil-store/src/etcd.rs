//! The etcd backend for flag state (the distributed mode of DESIGN.md §5): namespaces, flags,
//! segments and configuration entries (with their history), the change log and the revision
//! counter live under one configurable key prefix (e.g. `/vexil/`), so several stores (or tests)
//! can share a cluster.
//!
//! # Key layout
//!
//! | key | value |
//! |---|---|
//! | `<prefix>ns/<ns>` | the namespace's JSON document |
//! | `<prefix>flag/<ns>/<key>` | the flag's JSON document |
//! | `<prefix>seg/<ns>/<key>` | the segment's JSON document |
//! | `<prefix>configs/<ns>/<key>` | the configuration entry's JSON document (its current version) |
//! | `<prefix>config_versions/<ns>/<key>/<version:020>` | the entry as stored at that version ([`crate::ConfigStore::config_versions`]) |
//! | `<prefix>rev` | the store revision counter (decimal); absent means 0 |
//! | `<prefix>change/<rev:020>` | one commit's [`Change`]s (a JSON array, in batch order) |
//! | `<prefix>audit/head` | `{"seq": n, "hash": "…"}` of the last audit event |
//! | `<prefix>audit/seq/<seq:020>` | one commit's stored [`AuditEvent`]s (a JSON array, with `seq` and hash chain), under the `seq` of its last event |
//! | `<prefix>outbox/<rev:020>/<first event id>` | [`AuditMode::Outbox`] only: one commit's [`AuditEvent`]s (a JSON array, not yet sequenced), waiting for the relay |
//!
//! Keys are valid namespace/flag/segment/config keys (no `/`), so the prefixes never overlap,
//! and etcd's byte order of keys is the listing order the conformance suite pins. A config's
//! history is written in the txn that writes the entry, and removed in the txn that deletes it
//! (one range delete of `config_versions/<ns>/<key>/`, whose trailing `/` keeps it off the
//! history of a key that merely starts with `<key>`).
//!
//! # Compare-and-set
//!
//! [`FlagStore::commit`] is optimistic. It reads, at one etcd revision, every key the batch touches
//! (remembering each `mod_revision`, 0 for an absent key), the revision counter and the audit head,
//! and applies the batch to that view in memory, checking every [`crate::Expect`] with the same
//! rules as the SQL backends (`plan.rs`). Then it sends ONE etcd txn whose compares are
//! `mod_revision == seen` for every touched key, the counter and the audit head, and whose success
//! ops write the new documents, bump the counter, write the change entries and append the audit
//! events. If any compare fails, someone wrote in between: the commit starts over from a fresh
//! read, and that re-read either fails a condition (the caller gets `VersionMismatch`, `NotFound`,
//! …) or applies cleanly and is retried, up to [`MAX_ATTEMPTS`] times (then `Unavailable`). Since
//! every commit with writes bumps the counter and every commit compares it, commits are serialised
//! through the counter: revisions are gap-free and increasing, and a namespace's emptiness check
//! cannot race a flag create.
//!
//! Where the audit events go depends on the [`AuditMode`]. Standalone ([`AuditMode::Chain`]),
//! the audit log lives here, with the same `seq` and hash chain as the SQL backends; unlike
//! them, it does not reject a repeated event id (that would take a key per event, and a txn is
//! capped in operations; see Limits). In the distributed deployment ([`AuditMode::Outbox`])
//! each commit's events go to one outbox key in the same txn as the change, and
//! [`crate::distributed`] relays them into PostgreSQL, deduplicating on event ids: the outbox
//! takes no audit-head compare, so audit adds no contention between writers.
//!
//! # Change feed
//!
//! [`ChangeFeed::changes_since`] reads the change range. [`ChangeFeed::subscribe`] is fed by a
//! background task that watches `<prefix>rev` (so it sees other stores' commits too), re-reads
//! the counter whenever it (re)connects, and also polls every [`POLL_INTERVAL`] as a fallback;
//! local commits publish their revision directly.
//!
//! # Limits
//!
//! etcd caps a txn at `--max-txn-ops` operations and compares (128 each by default): a commit
//! takes one operation per write (its document; two for a config, whose put also writes a
//! history key and whose delete also range-deletes its history) and one compare per touched
//! key, plus a few
//! fixed ones (the counter, one change key, one key for all its audit events, the audit head),
//! so a batch may hold about 120 writes unless the cluster's limit is raised. A batch over the
//! cluster's limits (operations, or `--max-request-bytes`) is refused whole with
//! [`StoreError::TooLarge`]: an import is atomic, so it is not split behind the caller's back. A txn is also
//! capped at `--max-request-bytes` (1.5 MiB by default). Flag and audit
//! filters are applied in this process, after a range read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KvClient, Txn, TxnOp,
    WatchOptions,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use vexil_core::domain::{
    AuditEvent, Change, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};

use crate::codec::Codec;
use crate::plan::{self, Applied, Versioned, not_found};
use crate::{
    AuditQuery, AuditStore, ChangeFeed, Committed, ConfigStore, Expect, FlagQuery, FlagStore,
    NamespaceState, Page, StoreError, Write, listing,
};

/// How many times a commit re-reads and retries after losing a compare to another writer.
pub const MAX_ATTEMPTS: u32 = 100;

/// How many commits the change log keeps by default: each commit deletes the change key of the
/// commit this many revisions before it, in its own txn, so the log (and etcd's database)
/// stays bounded. A consumer further behind gets [`StoreError::ChangesCompacted`] and reloads.
pub const CHANGE_RETENTION: u64 = 100_000;

/// How often the subscription task re-reads the counter even when the watch is quiet.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Per-request timeout; a request that takes longer is [`StoreError::Unavailable`].
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an idempotent read, or a commit known not to have been applied, keeps being tried
/// while etcd is unreachable. When a member goes down the client routes around it only after a
/// request to it has failed, and when the leader goes down the others need an election
/// (about a second with 500 ms election timeouts): both are ridden out. When every member is
/// down the caller gets `Unavailable` after this long (the API answers 503).
const UNAVAILABLE_BUDGET: Duration = Duration::from_millis(2500);

/// The pause before such a retry (times the attempt number, at most [`MAX_RETRY_PAUSE`]).
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(400);

/// The pause before retry number `tries`.
fn retry_pause(tries: u32) -> Duration {
    (RETRY_PAUSE * tries).min(MAX_RETRY_PAUSE)
}

/// Errors name the backend `etcd`.
const CODEC: Codec = Codec::new("etcd");

/// Keys per range read when filtering audit events in this process.
const AUDIT_BATCH: i64 = 500;

/// Where a commit's audit events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditMode {
    /// A hash-chained audit log in etcd itself (the store stands alone).
    Chain,
    /// An outbox key per commit, for a relay to move elsewhere ([`EtcdStore::outbox`]).
    Outbox,
}

/// One commit's audit events waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The etcd key (sorts in commit order).
    pub key: String,
    /// The events, as the writer recorded them (`seq` 0, no hashes).
    pub events: Vec<AuditEvent>,
}

/// The etcd store. Cheap to clone: clones share the client and the subscription task.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.inner.keys.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    keys: Keys,
    revision_tx: Arc<watch::Sender<Revision>>,
    follower: tokio::task::AbortHandle,
    audit_mode: AuditMode,
    change_retention: std::sync::atomic::AtomicU64,
    /// Held by one commit of this process at a time. Every commit compares the one revision
    /// counter, so of the commits racing into etcd at once exactly one can succeed; letting a
    /// replica's own writers race only burns rounds (measured with 8 writers: 3.85 txns and 15
    /// reads per commit). Queued here, they cost one txn each; writers on other replicas still
    /// race, and lose at most the rounds another replica's one in-flight commit takes.
    commit_lock: tokio::sync::Mutex<()>,
    /// No outbox key below this commit revision exists or can appear again (see
    /// [`EtcdStore::outbox`]), so listings start here instead of at the prefix.
    outbox_floor: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`) and keeps all state under
    /// `prefix` (e.g. `/vexil/`; a missing trailing `/` is added). Must be called inside a
    /// tokio runtime (it starts the subscription task).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd cannot be reached.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, prefix, AuditMode::Chain).await
    }

    /// As [`EtcdStore::connect`], with the audit events going where `audit_mode` says.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when etcd cannot be reached.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        audit_mode: AuditMode,
    ) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(from_etcd)?;
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let keys = Keys { prefix };
        let revision = read_counter(&mut client.kv_client(), &keys, 0).await?.0;
        let revision_tx = Arc::new(watch::channel(revision).0);
        let follower = tokio::spawn(follow(
            client.clone(),
            keys.clone(),
            Arc::clone(&revision_tx),
        ))
        .abort_handle();
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                keys,
                revision_tx,
                follower,
                audit_mode,
                change_retention: std::sync::atomic::AtomicU64::new(CHANGE_RETENTION),
                commit_lock: tokio::sync::Mutex::new(()),
                outbox_floor: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Keeps the last `commits` commits in the change log from now on (at least 1; the
    /// default is [`CHANGE_RETENTION`]). Every replica of a deployment should use the same
    /// value.
    pub fn set_change_retention(&self, commits: u64) {
        self.inner
            .change_retention
            .store(commits.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Up to `limit` outbox entries, oldest commit first.
    ///
    /// # Errors
    /// Unavailable / Internal.
    pub async fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        // A relayed entry is deleted, and until etcd compacts, a range still walks every
        // deleted key it spans: listing from the prefix grew slower with each commit relayed
        // (measured: 8 writers fell from 532 to 155 commits/s over three 10 s runs). Entries
        // are keyed by commit revision, and a key below one that exists (or was removed) can
        // never appear again: a commit with a lower revision was either visible then or lost
        // its compare-and-set. So the range starts at the highest such revision seen.
        let prefix = self.keys().outbox_prefix();
        let end = prefix_end(&prefix);
        let floor = self
            .inner
            .outbox_floor
            .load(std::sync::atomic::Ordering::Relaxed);
        let from = format!("{prefix}{floor:020}");
        let resp = self
            .kv()
            .get(
                from,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_limit(i64::try_from(limit).unwrap_or(i64::MAX)),
                ),
            )
            .await
            .map_err(from_etcd)?;
        let entries = resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8(kv.key().to_vec())
                    .map_err(|e| internal(format!("etcd: an outbox key is not UTF-8: {e}")))?;
                let events = CODEC.decode_bytes(kv.value(), "outbox entry")?;
                Ok(OutboxEntry { key, events })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if let Some(first) = entries.first() {
            self.raise_outbox_floor(&first.key, 0);
        }
        Ok(entries)
    }

    /// Raises the outbox floor to `key`'s commit revision plus `past`.
    fn raise_outbox_floor(&self, key: &str, past: u64) {
        let revision = key
            .strip_prefix(&self.keys().outbox_prefix())
            .and_then(|rest| rest.split('/').next())
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(revision) = revision {
            self.inner.outbox_floor.fetch_max(
                revision.saturating_add(past),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Deletes outbox entries (after their events are recorded elsewhere). Deleting a key that
    /// is already gone is not an error, so two relays may both remove an entry. `keys` must be
    /// a prefix of what [`EtcdStore::outbox`] listed: every entry from the oldest up, so that no
    /// entry is left below the ones removed.
    ///
    /// # Errors
    /// Unavailable / Internal; some keys may then be deleted and others not, which a later
    /// relay handles (it skips events already recorded).
    pub async fn remove_outbox(&self, keys: &[String]) -> Result<(), StoreError> {
        // A txn is capped at `--max-txn-ops` (128 by default).
        for chunk in keys.chunks(100) {
            let ops = chunk
                .iter()
                .map(|k| TxnOp::delete(k.as_str(), None))
                .collect::<Vec<_>>();
            self.kv()
                .txn(Txn::new().and_then(ops))
                .await
                .map_err(from_etcd)?;
        }
        // Only once every key is gone: a failure part-way leaves the floor where it was.
        for key in keys {
            self.raise_outbox_floor(key, 1);
        }
        Ok(())
    }

    /// The outbox key a commit at `revision` whose first audit event is `first_event_id` uses.
    pub fn outbox_key(&self, revision: Revision, first_event_id: &str) -> String {
        self.keys().outbox(revision, first_event_id)
    }

    /// The key prefix this store uses.
    pub fn prefix(&self) -> &str {
        &self.inner.keys.prefix
    }

    fn kv(&self) -> KvClient {
        self.inner.client.kv_client()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    fn publish(&self, revision: Revision) {
        publish(&self.inner.revision_tx, revision);
    }
}

fn publish(tx: &watch::Sender<Revision>, revision: Revision) {
    tx.send_if_modified(|current| {
        let newer = revision > *current;
        if newer {
            *current = revision;
        }
        newer
    });
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn ns(&self, ns: &str) -> String {
        format!("{}ns/{ns}", self.prefix)
    }
    fn ns_prefix(&self) -> String {
        format!("{}ns/", self.prefix)
    }
    fn flag(&self, ns: &str, key: &str) -> String {
        format!("{}flag/{ns}/{key}", self.prefix)
    }
    fn flag_prefix(&self, ns: &str) -> String {
        format!("{}flag/{ns}/", self.prefix)
    }
    fn seg(&self, ns: &str, key: &str) -> String {
        format!("{}seg/{ns}/{key}", self.prefix)
    }
    fn seg_prefix(&self, ns: &str) -> String {
        format!("{}seg/{ns}/", self.prefix)
    }
    fn config(&self, ns: &str, key: &str) -> String {
        format!("{}configs/{ns}/{key}", self.prefix)
    }
    fn config_prefix(&self, ns: &str) -> String {
        format!("{}configs/{ns}/", self.prefix)
    }
    /// Ends in `/`, so that it holds only `key`'s history, not that of a key starting with it.
    fn config_versions(&self, ns: &str, key: &str) -> String {
        format!("{}config_versions/{ns}/{key}/", self.prefix)
    }
    fn rev(&self) -> String {
        format!("{}rev", self.prefix)
    }
    fn change(&self, revision: Revision) -> String {
        format!("{}change/{revision:020}", self.prefix)
    }
    fn change_prefix(&self) -> String {
        format!("{}change/", self.prefix)
    }
    fn audit_head(&self) -> String {
        format!("{}audit/head", self.prefix)
    }
    fn audit_events(&self, last_seq: u64) -> String {
        format!("{}audit/seq/{last_seq:020}", self.prefix)
    }
    fn audit_prefix(&self) -> String {
        format!("{}audit/seq/", self.prefix)
    }
    fn outbox(&self, revision: Revision, first_event_id: &str) -> String {
        format!("{}outbox/{revision:020}/{first_event_id}", self.prefix)
    }
    fn outbox_prefix(&self) -> String {
        format!("{}outbox/", self.prefix)
    }
}

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The key of version `version` in the history under `versions` ([`Keys::config_versions`]):
/// zero-padded, so that key order is version order.
fn version_key(versions: &str, version: u64) -> String {
    format!("{versions}{version:020}")
}

/// The first key strictly after `key`.
fn key_after(key: &str) -> Vec<u8> {
    let mut k = key.as_bytes().to_vec();
    k.push(0);
    k
}

// ---------------------------------------------------------------------------------------------
// Errors and encoding
// ---------------------------------------------------------------------------------------------

fn from_etcd(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    if let E::GRpcStatus(status) = &e {
        let message = status.message();
        if message.contains("too many operations in txn request")
            || message.contains("request is too large")
        {
            return StoreError::TooLarge {
                message: format!(
                    "the change is larger than etcd accepts in one transaction ({message}); \
                     split it, or raise the cluster's --max-txn-ops / --max-request-bytes"
                ),
            };
        }
    }
    // gRPC codes (named through `i32` so this crate depends on no transport): CANCELLED 1,
    // UNKNOWN 2, DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8, ABORTED 10, UNAVAILABLE 14.
    let unavailable = match &e {
        E::IoError(_) | E::TransportError(_) => true,
        E::GRpcStatus(status) => {
            let code: i32 = status.code().into();
            matches!(code, 1 | 2 | 4 | 8 | 10 | 14)
        }
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable {
            message: format!("etcd: {e}"),
        }
    } else {
        internal(format!("etcd: {e}"))
    }
}

fn internal(message: String) -> StoreError {
    StoreError::Internal { message }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuditHead {
    seq: u64,
    hash: String,
}

/// The most keys [`prefetch`] reads in its one txn (etcd refuses a txn of more than
/// `--max-txn-ops` operations, 128 by default).
const PREFETCH_MAX_KEYS: usize = 64;

/// Runs an idempotent etcd request, again after a short pause when etcd is unreachable (see
/// [`UNAVAILABLE_ATTEMPTS`]).
async fn retrying<T, F, Fut>(mut request: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let started = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match request().await.map_err(from_etcd) {
            Err(StoreError::Unavailable { message })
                if started.elapsed() + retry_pause(tries) < UNAVAILABLE_BUDGET =>
            {
                tracing::debug!(error = %message, tries, "etcd: read failed; retrying");
                tokio::time::sleep(retry_pause(tries)).await;
            }
            other => return other,
        }
    }
}

/// The revision counter's stored text as a number.
fn parse_counter(bytes: &[u8]) -> Result<Revision, StoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| internal(format!("etcd: revision counter is not text: {e}")))?;
    text.parse::<u64>()
        .map_err(|e| internal(format!("etcd: revision counter {text:?}: {e}")))
}

/// Reads the revision counter (at etcd revision `at`, 0 for the latest): its value, its
/// `mod_revision` (0 when absent), and the etcd revision the read saw.
async fn read_counter(
    kv: &mut KvClient,
    keys: &Keys,
    at: i64,
) -> Result<(Revision, i64, i64), StoreError> {
    let key = keys.rev();
    let resp = retrying(|| {
        let mut kv = kv.clone();
        let key = key.clone();
        async move { kv.get(key, Some(GetOptions::new().with_revision(at))).await }
    })
    .await?;
    let header = resp
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    match resp.kvs().first() {
        Some(kv) => Ok((parse_counter(kv.value())?, kv.mod_revision(), header)),
        None => Ok((0, 0, header)),
    }
}

/// Gets one key at etcd revision `at`: its value and `mod_revision`, if present.
/// A key's value and `mod_revision` as read, `None` when absent.
type Found = Option<(Vec<u8>, i64)>;

/// What [`prefetch`] read, all at etcd revision `at`.
struct Prefetched {
    /// The revision counter's value and `mod_revision` (0, 0 when absent).
    counter: (Revision, i64),
    /// The etcd revision of the read.
    at: i64,
    /// The documents a batch's writes will look at first (each namespace and each target
    /// key), with their `mod_revision`; `None` for an absent key.
    docs: Vec<(String, Found)>,
    /// The audit head, when the batch appends to the chain here (`Some(None)`: absent).
    audit_head: Option<Found>,
}

/// Reads, in one read-only txn (one round trip, one consistent revision), the revision
/// counter and every key a commit of `writes` reads before it can decide anything: the
/// namespaces, the written keys and, for a chained audit, the audit head. Read one by one
/// these were four round trips for the usual one-flag commit. A batch too large for one txn
/// reads only the counter here, and the rest lazily at the same revision.
async fn prefetch(
    kv: &mut KvClient,
    keys: &Keys,
    writes: &[Write],
    audit_head: bool,
) -> Result<Prefetched, StoreError> {
    let mut wanted: Vec<String> = Vec::new();
    for write in writes {
        let (ns, target) = match write {
            Write::PutNamespace { namespace, .. } => (None, keys.ns(&namespace.key)),
            Write::DeleteNamespace { key, .. } => (None, keys.ns(key)),
            Write::PutFlag { flag, .. } => (
                Some(keys.ns(&flag.namespace)),
                keys.flag(&flag.namespace, &flag.key),
            ),
            Write::DeleteFlag { namespace, key, .. } => {
                (Some(keys.ns(namespace)), keys.flag(namespace, key))
            }
            Write::PutSegment { segment, .. } => (
                Some(keys.ns(&segment.namespace)),
                keys.seg(&segment.namespace, &segment.key),
            ),
            Write::DeleteSegment { namespace, key, .. } => {
                (Some(keys.ns(namespace)), keys.seg(namespace, key))
            }
            Write::PutConfig { config, .. } => (
                Some(keys.ns(&config.namespace)),
                keys.config(&config.namespace, &config.key),
            ),
            Write::DeleteConfig { namespace, key, .. } => {
                (Some(keys.ns(namespace)), keys.config(namespace, key))
            }
        };
        for key in ns.into_iter().chain([target]) {
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
    }
    if wanted.len() + 2 > PREFETCH_MAX_KEYS {
        wanted.clear();
    }
    let mut reads = vec![keys.rev()];
    if audit_head {
        reads.push(keys.audit_head());
    }
    reads.extend(wanted.iter().cloned());
    let resp = retrying(|| {
        let mut kv = kv.clone();
        let ops: Vec<TxnOp> = reads.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        async move { kv.txn(Txn::new().and_then(ops)).await }
    })
    .await?;
    let at = resp
        .header()
        .map_or(0, etcd_client::ResponseHeader::revision);
    let mut found = resp.op_responses().into_iter().map(|op| match op {
        etcd_client::TxnOpResponse::Get(get) => Ok(get
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision()))),
        _ => Err(internal(
            "etcd: a read-only txn answered with a write".into(),
        )),
    });
    let mut next = || {
        found.next().unwrap_or_else(|| {
            Err(internal(
                "etcd: a read-only txn answered too few reads".into(),
            ))
        })
    };
    let counter = match next()? {
        Some((bytes, modrev)) => (parse_counter(&bytes)?, modrev),
        None => (0, 0),
    };
    let audit_head = if audit_head { Some(next()?) } else { None };
    let mut docs = Vec::with_capacity(wanted.len());
    for key in wanted {
        docs.push((key, next()?));
    }
    Ok(Prefetched {
        counter,
        at,
        docs,
        audit_head,
    })
}

async fn get_at(
    kv: &mut KvClient,
    key: &str,
    at: i64,
) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let resp = retrying(|| {
        let mut kv = kv.clone();
        async move { kv.get(key, Some(GetOptions::new().with_revision(at))).await }
    })
    .await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
}

/// All values under `prefix` at etcd revision `at`, in key order.
async fn range_at(
    kv: &mut KvClient,
    from: impl Into<Vec<u8>>,
    end: Vec<u8>,
    at: i64,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    range_limited(kv, from, end, at, 0).await
}

/// As [`range_at`], the first `limit` only (0: all).
async fn range_limited(
    kv: &mut KvClient,
    from: impl Into<Vec<u8>>,
    end: Vec<u8>,
    at: i64,
    limit: i64,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let from: Vec<u8> = from.into();
    let resp = retrying(|| {
        let mut kv = kv.clone();
        let (from, end) = (from.clone(), end.clone());
        async move {
            kv.get(
                from,
                Some(
                    GetOptions::new()
                        .with_range(end)
                        .with_revision(at)
                        .with_limit(limit),
                ),
            )
            .await
        }
    })
    .await?;
    resp.kvs()
        .iter()
        .map(|kv| {
            let key = String::from_utf8(kv.key().to_vec())
                .map_err(|e| internal(format!("etcd: a key is not UTF-8: {e}")))?;
            Ok((key, kv.value().to_vec()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Commit
// ---------------------------------------------------------------------------------------------

/// One touched key in a commit attempt: what etcd held at the read revision and what the batch
/// leaves there.
struct Touched {
    seen: i64,
    state: Option<Value>,
    dirty: bool,
}

impl Touched {
    /// A key as read and not yet written (`seen` 0 for an absent key).
    fn read(found: Found) -> Result<Self, StoreError> {
        let (state, seen) = match found {
            Some((bytes, modrev)) => (
                Some(CODEC.decode_bytes::<Value>(&bytes, "document")?),
                modrev,
            ),
            None => (None, 0),
        };
        Ok(Touched {
            seen,
            state,
            dirty: false,
        })
    }
}

/// What a batch does to one config's history.
#[derive(Default)]
struct History {
    /// The batch deleted the config, so the stored history goes.
    cleared: bool,
    /// Versions the batch wrote (after the last delete, if any), by version.
    added: BTreeMap<u64, Value>,
}

/// One commit attempt: a view of the store at etcd revision `at`, with the batch's writes
/// applied on top in memory.
struct Attempt<'a> {
    kv: KvClient,
    keys: &'a Keys,
    at: i64,
    touched: BTreeMap<String, Touched>,
    /// Config histories the batch changes, by [`Keys::config_versions`] prefix. History keys
    /// take no compare: they only change along with their entry's key, which has one.
    histories: BTreeMap<String, History>,
}

impl Attempt<'_> {
    async fn load(&mut self, key: &str) -> Result<Option<Value>, StoreError> {
        if let Some(t) = self.touched.get(key) {
            return Ok(t.state.clone());
        }
        let found = Touched::read(get_at(&mut self.kv, key, self.at).await?)?;
        let state = found.state.clone();
        self.touched.insert(key.to_owned(), found);
        Ok(state)
    }

    fn set(&mut self, key: String, state: Option<Value>) {
        if let Some(t) = self.touched.get_mut(&key) {
            t.state = state;
            t.dirty = true;
        }
    }

    /// The stored version of a document (`None`: absent).
    async fn version(&mut self, key: &str) -> Result<Option<(u64, Value)>, StoreError> {
        Ok(self.load(key).await?.map(|doc| {
            let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
            (version, doc)
        }))
    }

    async fn require_namespace(&mut self, ns: &str) -> Result<(), StoreError> {
        let key = self.keys.ns(ns);
        let exists = self.load(&key).await?.is_some();
        plan::require_namespace(ns, exists)
    }

    /// Whether the namespace holds flags, segments or configs in this view.
    async fn occupied(&mut self, ns: &str) -> Result<bool, StoreError> {
        for prefix in [
            self.keys.flag_prefix(ns),
            self.keys.seg_prefix(ns),
            self.keys.config_prefix(ns),
        ] {
            let resp = self
                .kv
                .get(
                    prefix.as_str(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_revision(self.at),
                    ),
                )
                .await
                .map_err(from_etcd)?;
            let mut present: BTreeSet<Vec<u8>> =
                resp.kvs().iter().map(|kv| kv.key().to_vec()).collect();
            for (key, t) in self.touched.range(prefix.clone()..) {
                if !key.starts_with(&prefix) {
                    break;
                }
                if t.state.is_some() {
                    present.insert(key.as_bytes().to_vec());
                } else {
                    present.remove(key.as_bytes());
                }
            }
            if !present.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Applies one write to the view; returns the change it makes.
    async fn apply(&mut self, write: Write) -> Result<Applied, StoreError> {
        match write {
            Write::PutNamespace { namespace, expect } => {
                let key = self.keys.ns(&namespace.key);
                self.put(key, namespace, expect).await
            }
            Write::DeleteNamespace { key: ns, expect } => {
                let kind = ResourceKind::Namespace;
                let key = self.keys.ns(&ns);
                let stored = self.version(&key).await?.map(|(v, _)| v);
                plan::delete(expect, stored, kind, &ns, &ns)?;
                plan::require_empty(&ns, self.occupied(&ns).await?)?;
                self.set(key, None);
                Ok(Applied::delete(kind, ns.clone(), ns))
            }
            Write::PutFlag { flag, expect } => {
                self.require_namespace(&flag.namespace).await?;
                let key = self.keys.flag(&flag.namespace, &flag.key);
                self.put(key, flag, expect).await
            }
            Write::PutConfig { config, expect } => {
                self.require_namespace(&config.namespace).await?;
                let key = self.keys.config(&config.namespace, &config.key);
                let versions = self.keys.config_versions(&config.namespace, &config.key);
                let applied = self.put(key, config, expect).await?;
                if let Some(doc) = &applied.after {
                    let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
                    let history = self.histories.entry(versions).or_default();
                    history.added.insert(version, doc.clone());
                }
                Ok(applied)
            }
            Write::DeleteConfig {
                namespace,
                key,
                expect,
            } => {
                let k = self.keys.config(&namespace, &key);
                let versions = self.keys.config_versions(&namespace, &key);
                let applied = self
                    .delete_scoped(ResourceKind::Config, k, namespace, key, expect)
                    .await?;
                self.histories.insert(
                    versions,
                    History {
                        cleared: true,
                        added: BTreeMap::new(),
                    },
                );
                Ok(applied)
            }
            Write::PutSegment { segment, expect } => {
                self.require_namespace(&segment.namespace).await?;
                let key = self.keys.seg(&segment.namespace, &segment.key);
                self.put(key, segment, expect).await
            }
            Write::DeleteFlag {
                namespace,
                key,
                expect,
            } => {
                let k = self.keys.flag(&namespace, &key);
                self.delete_scoped(ResourceKind::Flag, k, namespace, key, expect)
                    .await
            }
            Write::DeleteSegment {
                namespace,
                key,
                expect,
            } => {
                let k = self.keys.seg(&namespace, &key);
                self.delete_scoped(ResourceKind::Segment, k, namespace, key, expect)
                    .await
            }
        }
    }

    /// Puts `item` at `etcd_key` (see [`plan::put`]). The condition is checked on the stored
    /// version before the stored document is decoded.
    async fn put<T: Versioned>(
        &mut self,
        etcd_key: String,
        item: T,
        expect: Expect,
    ) -> Result<Applied, StoreError> {
        let what = T::KIND.as_str();
        let stored = self.version(&etcd_key).await?;
        let version = stored.as_ref().map(|(v, _)| *v);
        plan::check(expect, version, T::KIND, item.namespace(), item.key())?;
        let stored = match stored {
            Some((version, doc)) => Some((version, CODEC.decode_value(doc, what)?)),
            None => None,
        };
        let item = plan::stamp(item, stored).item;
        let value = CODEC.to_value(&item, what)?;
        self.set(etcd_key, Some(value.clone()));
        Ok(Applied::put(&item, value))
    }

    /// Deletes a flag, segment or config (see [`plan::delete`]); a missing namespace is reported
    /// as such.
    async fn delete_scoped(
        &mut self,
        kind: ResourceKind,
        etcd_key: String,
        namespace: String,
        key: String,
        expect: Expect,
    ) -> Result<Applied, StoreError> {
        self.require_namespace(&namespace).await?;
        let stored = self.version(&etcd_key).await?.map(|(v, _)| v);
        plan::delete(expect, stored, kind, &namespace, &key)?;
        self.set(etcd_key, None);
        Ok(Applied::delete(kind, namespace, key))
    }
}

/// Adds the operations that leave the history under `versions` as the batch does. etcd refuses a
/// txn whose puts fall inside one of its range deletes, so a history deleted and then written
/// again in one batch (a config deleted and created again, from version 1) is cleared only above
/// its new versions, which the puts then overwrite.
fn history_ops(versions: &str, history: &History, ops: &mut Vec<TxnOp>) {
    if history.cleared {
        let from = match history.added.keys().next_back() {
            Some(last) => version_key(versions, last.saturating_add(1)),
            None => versions.to_owned(),
        };
        let end = DeleteOptions::new().with_range(prefix_end(versions));
        ops.push(TxnOp::delete(from, Some(end)));
    }
    for (version, doc) in &history.added {
        ops.push(TxnOp::put(
            version_key(versions, *version),
            doc.to_string(),
            None,
        ));
    }
}

/// What one attempt decided.
enum Outcome {
    Committed(Committed),
    /// A compare failed: someone else wrote in between.
    Lost,
}

impl EtcdStore {
    async fn attempt(&self, writes: &[Write], audit: &[AuditEvent]) -> Result<Outcome, StoreError> {
        let keys = self.keys();
        let mut kv = self.kv();
        let chained_audit = !audit.is_empty() && self.inner.audit_mode == AuditMode::Chain;
        let Prefetched {
            counter: (current, counter_seen),
            at,
            mut docs,
            audit_head,
        } = prefetch(&mut kv, keys, writes, chained_audit).await?;
        let mut touched = BTreeMap::new();
        for (key, found) in docs.drain(..) {
            touched.insert(key, Touched::read(found)?);
        }
        let mut attempt = Attempt {
            kv: kv.clone(),
            keys,
            at,
            touched,
            histories: BTreeMap::new(),
        };
        let revision = if writes.is_empty() {
            current
        } else {
            current + 1
        };
        let mut compares = vec![Compare::mod_revision(
            keys.rev(),
            CompareOp::Equal,
            counter_seen,
        )];
        let mut ops = Vec::new();
        let mut changes = Vec::with_capacity(writes.len());
        let mut results = Vec::with_capacity(writes.len());
        for write in writes.iter().cloned() {
            let applied = attempt.apply(write).await?;
            changes.push(Change {
                revision,
                namespace: applied.namespace,
                kind: applied.kind,
                key: applied.key,
                after: applied.after.clone(),
            });
            results.push(applied.after);
        }
        // One key for the commit's changes (not one per write): a txn's operation count is
        // what limits the size of a batch.
        let first_change = if changes.is_empty() {
            None
        } else {
            let text = serde_json::to_vec(&changes)
                .map_err(|e| internal(format!("etcd: encoding changes: {e}")))?;
            ops.push(TxnOp::put(keys.change(revision), text.clone(), None));
            let retention = self
                .inner
                .change_retention
                .load(std::sync::atomic::Ordering::Relaxed);
            if revision > retention {
                ops.push(TxnOp::delete(keys.change(revision - retention), None));
            }
            Some(text)
        };
        for (key, t) in &attempt.touched {
            compares.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                t.seen,
            ));
            if !t.dirty {
                continue;
            }
            ops.push(match &t.state {
                Some(doc) => TxnOp::put(key.as_str(), doc.to_string(), None),
                None => TxnOp::delete(key.as_str(), None),
            });
        }
        for (versions, history) in &attempt.histories {
            history_ops(versions, history, &mut ops);
        }
        if !writes.is_empty() {
            ops.push(TxnOp::put(keys.rev(), revision.to_string(), None));
        }
        let stored = if audit.is_empty() {
            Vec::new()
        } else if self.inner.audit_mode == AuditMode::Outbox {
            // Event ids are unique, so the key is new: no compare needed.
            let doc = serde_json::to_vec(audit)
                .map_err(|e| internal(format!("etcd: encoding audit events: {e}")))?;
            ops.push(TxnOp::put(keys.outbox(revision, &audit[0].id), doc, None));
            audit.to_vec()
        } else {
            self.append_audit(&mut kv, at, audit_head, audit, &mut compares, &mut ops)
                .await?
        };
        let resp = match kv.txn(Txn::new().when(compares).and_then(ops)).await {
            Ok(resp) => resp,
            Err(e) => {
                // The txn may or may not have been applied (the connection can fail after
                // etcd received it). A batch with writes can tell: its first change entry is
                // at `revision` exactly when it was applied.
                let err = from_etcd(e);
                let Some(ours) = first_change else {
                    return Err(err);
                };
                return match get_at(&mut kv, &keys.change(revision), 0).await? {
                    Some((found, _)) if found == ours => Ok(Outcome::Committed(Committed {
                        revision,
                        results,
                        audit: stored,
                    })),
                    Some(_) => Ok(Outcome::Lost),
                    None => Err(err),
                };
            }
        };
        if !resp.succeeded() {
            return Ok(Outcome::Lost);
        }
        Ok(Outcome::Committed(Committed {
            revision,
            results,
            audit: stored,
        }))
    }

    /// Adds the audit events to the txn after the current head, assigning `seq`, `prev_hash`
    /// and `hash`.
    async fn append_audit(
        &self,
        kv: &mut KvClient,
        at: i64,
        prefetched: Option<Found>,
        audit: &[AuditEvent],
        compares: &mut Vec<Compare>,
        ops: &mut Vec<TxnOp>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let keys = self.keys();
        let head_key = keys.audit_head();
        let found = match prefetched {
            Some(found) => found,
            None => get_at(kv, &head_key, at).await?,
        };
        let (head, head_seen) = match found {
            Some((bytes, modrev)) => (
                CODEC.decode_bytes::<AuditHead>(&bytes, "audit head")?,
                modrev,
            ),
            None => (AuditHead::default(), 0),
        };
        compares.push(Compare::mod_revision(
            head_key.as_str(),
            CompareOp::Equal,
            head_seen,
        ));
        let stored = plan::chain(audit.to_vec(), head.seq, head.hash.clone());
        let head = match stored.last() {
            Some(last) => AuditHead {
                seq: last.seq,
                hash: last.hash.clone(),
            },
            None => head,
        };
        // One key per commit, named by its last seq (a txn holds at most `--max-txn-ops`
        // operations, and an audit-only batch may carry hundreds of events).
        let doc = serde_json::to_vec(&stored)
            .map_err(|e| internal(format!("etcd: encoding audit events: {e}")))?;
        ops.push(TxnOp::put(keys.audit_events(head.seq), doc, None));
        let head = serde_json::to_vec(&head)
            .map_err(|e| internal(format!("etcd: encoding the audit head: {e}")))?;
        ops.push(TxnOp::put(head_key, head, None));
        Ok(stored)
    }
}

#[async_trait]
impl FlagStore for EtcdStore {
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError> {
        if writes.is_empty() && audit.is_empty() {
            return Ok(plan::empty_commit(self.current_revision().await?));
        }
        // Fair (FIFO), so a queued writer is not starved; the wait counts toward no budget.
        let _turn = self.inner.commit_lock.lock().await;
        let started = tokio::time::Instant::now();
        let mut unavailable = 0;
        for attempt in 0..MAX_ATTEMPTS {
            let outcome = match self.attempt(&writes, &audit).await {
                Ok(outcome) => outcome,
                // Nothing was written (see `attempt`): a member may just have gone down, and
                // the next try goes to another one.
                Err(StoreError::Unavailable { message })
                    if started.elapsed() + retry_pause(unavailable + 1) < UNAVAILABLE_BUDGET =>
                {
                    unavailable += 1;
                    tracing::debug!(error = %message, "etcd: commit could not reach etcd; retrying");
                    tokio::time::sleep(retry_pause(unavailable)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match outcome {
                Outcome::Committed(committed) => {
                    self.publish(committed.revision);
                    return Ok(committed);
                }
                Outcome::Lost => {
                    // Back off a little, growing and jittered, so contending writers spread out.
                    let jitter = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos() % 1000);
                    let micros = u64::from(attempt.min(20)) * 500 + u64::from(jitter);
                    tokio::time::sleep(Duration::from_micros(micros)).await;
                }
            }
        }
        Err(StoreError::Unavailable {
            message: format!("etcd: commit lost {MAX_ATTEMPTS} compare-and-set races in a row"),
        })
    }

    async fn list_namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        let prefix = self.keys().ns_prefix();
        let end = prefix_end(&prefix);
        range_at(&mut self.kv(), prefix, end, 0)
            .await?
            .iter()
            .map(|(_, v)| CODEC.decode_bytes(v, "namespace"))
            .collect()
    }

    async fn get_namespace(&self, key: &str) -> Result<Namespace, StoreError> {
        match get_at(&mut self.kv(), &self.keys().ns(key), 0).await? {
            Some((bytes, _)) => CODEC.decode_bytes(&bytes, "namespace"),
            None => Err(not_found(ResourceKind::Namespace, key, key)),
        }
    }

    async fn get_flag(&self, namespace: &str, key: &str) -> Result<Flag, StoreError> {
        self.get_scoped(
            ResourceKind::Flag,
            &self.keys().flag(namespace, key),
            namespace,
            key,
        )
        .await
    }

    async fn list_flags(
        &self,
        namespace: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, StoreError> {
        let mut kv = self.kv();
        let (_, _, at) = read_counter(&mut kv, self.keys(), 0).await?;
        self.require_namespace(&mut kv, namespace, at).await?;
        let limit = listing::page_limit(query.limit);
        let prefix = self.keys().flag_prefix(namespace);
        let from = match &query.cursor {
            Some(cursor) => key_after(&format!("{prefix}{cursor}")),
            None => prefix.as_bytes().to_vec(),
        };
        let needle = listing::needle(query);
        // One match more than the page, to know whether another page follows.
        let mut found = Vec::new();
        for (_, bytes) in range_at(&mut kv, from, prefix_end(&prefix), at).await? {
            let flag: Flag = CODEC.decode_bytes(&bytes, "flag")?;
            if listing::matches(&flag, query, needle.as_deref()) {
                found.push(flag);
                if found.len() > limit {
                    break;
                }
            }
        }
        let (items, next_cursor) = listing::split_page(found, limit, |f| &f.key);
        Ok(Page { items, next_cursor })
    }

    async fn get_segment(&self, namespace: &str, key: &str) -> Result<Segment, StoreError> {
        self.get_scoped(
            ResourceKind::Segment,
            &self.keys().seg(namespace, key),
            namespace,
            key,
        )
        .await
    }

    async fn list_segments(&self, namespace: &str) -> Result<Vec<Segment>, StoreError> {
        let prefix = self.keys().seg_prefix(namespace);
        self.list_scoped(namespace, prefix, "segment").await
    }

    async fn load_namespace(&self, namespace: &str) -> Result<NamespaceState, StoreError> {
        // Every read at the etcd revision of the counter read: one consistent view.
        let mut kv = self.kv();
        let (revision, _, at) = read_counter(&mut kv, self.keys(), 0).await?;
        let ns = match get_at(&mut kv, &self.keys().ns(namespace), at).await? {
            Some((bytes, _)) => CODEC.decode_bytes::<Namespace>(&bytes, "namespace")?,
            None => return Err(not_found(ResourceKind::Namespace, namespace, namespace)),
        };
        let fp = self.keys().flag_prefix(namespace);
        let fe = prefix_end(&fp);
        let flags = range_at(&mut kv, fp, fe, at)
            .await?
            .iter()
            .map(|(_, v)| CODEC.decode_bytes(v, "flag"))
            .collect::<Result<Vec<Flag>, _>>()?;
        let sp = self.keys().seg_prefix(namespace);
        let se = prefix_end(&sp);
        let segments = range_at(&mut kv, sp, se, at)
            .await?
            .iter()
            .map(|(_, v)| CODEC.decode_bytes(v, "segment"))
            .collect::<Result<Vec<Segment>, _>>()?;
        Ok(NamespaceState {
            namespace: ns,
            flags,
            segments,
            revision,
        })
    }
}

impl EtcdStore {
    async fn require_namespace(
        &self,
        kv: &mut KvClient,
        namespace: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        match get_at(kv, &self.keys().ns(namespace), at).await? {
            Some(_) => Ok(()),
            None => Err(not_found(ResourceKind::Namespace, namespace, namespace)),
        }
    }

    /// Every document under `prefix` (a namespace's segments or configs), in key order.
    async fn list_scoped<T: DeserializeOwned>(
        &self,
        namespace: &str,
        prefix: String,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut kv = self.kv();
        let (_, _, at) = read_counter(&mut kv, self.keys(), 0).await?;
        self.require_namespace(&mut kv, namespace, at).await?;
        let end = prefix_end(&prefix);
        range_at(&mut kv, prefix, end, at)
            .await?
            .iter()
            .map(|(_, v)| CODEC.decode_bytes(v, what))
            .collect()
    }

    async fn get_scoped<T: DeserializeOwned>(
        &self,
        kind: ResourceKind,
        etcd_key: &str,
        namespace: &str,
        key: &str,
    ) -> Result<T, StoreError> {
        let mut kv = self.kv();
        let (_, _, at) = read_counter(&mut kv, self.keys(), 0).await?;
        match get_at(&mut kv, etcd_key, at).await? {
            Some((bytes, _)) => CODEC.decode_bytes(&bytes, kind.as_str()),
            None => {
                self.require_namespace(&mut kv, namespace, at).await?;
                Err(not_found(kind, namespace, key))
            }
        }
    }
}

#[async_trait]
impl ConfigStore for EtcdStore {
    async fn get_config(&self, namespace: &str, key: &str) -> Result<ConfigEntry, StoreError> {
        let etcd_key = self.keys().config(namespace, key);
        self.get_scoped(ResourceKind::Config, &etcd_key, namespace, key)
            .await
    }

    async fn list_configs(&self, namespace: &str) -> Result<Vec<ConfigEntry>, StoreError> {
        let prefix = self.keys().config_prefix(namespace);
        self.list_scoped(namespace, prefix, "config").await
    }

    async fn config_versions(
        &self,
        namespace: &str,
        key: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<ConfigEntry>, StoreError> {
        // Both reads at one etcd revision, so a concurrent delete cannot turn `NotFound` into
        // an empty history.
        let mut kv = self.kv();
        let (_, _, at) = read_counter(&mut kv, self.keys(), 0).await?;
        if get_at(&mut kv, &self.keys().config(namespace, key), at)
            .await?
            .is_none()
        {
            self.require_namespace(&mut kv, namespace, at).await?;
            return Err(not_found(ResourceKind::Config, namespace, key));
        }
        let versions = self.keys().config_versions(namespace, key);
        let from = key_after(&version_key(&versions, after_version));
        let limit = i64::try_from(listing::page_limit(limit)).unwrap_or(i64::MAX);
        range_limited(&mut kv, from, prefix_end(&versions), at, limit)
            .await?
            .iter()
            .map(|(_, v)| CODEC.decode_bytes(v, "config"))
            .collect()
    }
}

#[async_trait]
impl ChangeFeed for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(read_counter(&mut self.kv(), self.keys(), 0).await?.0)
    }

    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let from = keys.change(after.saturating_add(1));
        let end = prefix_end(&keys.change_prefix());
        // Every commit key holds at least one change, so `limit` keys are enough.
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX);
        let resp = retrying(|| {
            let mut kv = self.kv();
            let (from, end) = (from.clone(), end.clone());
            async move {
                kv.get(
                    from,
                    Some(GetOptions::new().with_range(end).with_limit(fetch)),
                )
                .await
            }
        })
        .await?;
        // Revisions are gap-free and every commit with writes has a change key, so a log that
        // does not start right after `after` (while the store is past it) was trimmed.
        let at = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let (current, _, _) = read_counter(&mut self.kv(), keys, at).await?;
        // The first commit's revision is in its key (`change/<rev:020>`).
        let prefix = keys.change_prefix();
        let first = resp.kvs().first().and_then(|item| {
            std::str::from_utf8(item.key())
                .ok()?
                .strip_prefix(prefix.as_str())?
                .parse::<Revision>()
                .ok()
        });
        if current > after && first != Some(after + 1) {
            return Err(StoreError::ChangesCompacted {
                after,
                oldest: first.unwrap_or(current),
            });
        }
        let commits = resp.kvs().iter().map(|item| {
            let commit: Vec<Change> = CODEC.decode_bytes(item.value(), "changes")?;
            let count = commit.len();
            Ok((commit, count))
        });
        Ok(listing::whole_commits(commits, limit)?.concat())
    }

    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.inner.revision_tx.subscribe()
    }
}

#[async_trait]
impl AuditStore for EtcdStore {
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let keys = self.keys();
        let limit = listing::page_limit(query.limit);
        let mut kv = self.kv();
        let after = query.after_seq.unwrap_or(0);
        // A commit's events are under the seq of its last one: the first key at or after
        // `after + 1` holds the first event wanted.
        let mut from = keys.audit_events(after.saturating_add(1)).into_bytes();
        let end = prefix_end(&keys.audit_prefix());
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            let resp = kv
                .get(
                    from.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(end.clone())
                            .with_limit(AUDIT_BATCH)
                            .with_revision(at),
                    ),
                )
                .await
                .map_err(from_etcd)?;
            if at == 0 {
                at = resp
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::revision);
            }
            for item in resp.kvs() {
                let events: Vec<AuditEvent> = CODEC.decode_bytes(item.value(), "audit events")?;
                for event in events {
                    let keep = event.seq > after
                        && query
                            .namespace
                            .as_ref()
                            .is_none_or(|n| *n == event.namespace)
                        && query.kind.is_none_or(|k| k == event.kind)
                        && query.key.as_ref().is_none_or(|k| *k == event.key);
                    if keep {
                        out.push(event);
                        if out.len() == limit {
                            return Ok(out);
                        }
                    }
                }
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscription
// ---------------------------------------------------------------------------------------------

/// Follows `<prefix>rev` for as long as the store lives (it is aborted when the store is
/// dropped): re-reads the counter on every (re)connect and every [`POLL_INTERVAL`], and
/// publishes each counter value the watch delivers.
async fn follow(client: Client, keys: Keys, tx: Arc<watch::Sender<Revision>>) {
    let rev_key = keys.rev();
    loop {
        let mut kv = client.kv_client();
        let start = match read_counter(&mut kv, &keys, 0).await {
            Ok((revision, _, at)) => {
                publish(&tx, revision);
                at + 1
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd: reading the revision counter");
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        };
        let mut watcher = client.watch_client();
        let mut stream = match watcher
            .watch(
                rev_key.as_str(),
                Some(WatchOptions::new().with_start_revision(start)),
            )
            .await
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "etcd: watching the revision counter");
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            break;
                        }
                        for event in resp.events() {
                            if let Some(kv) = event.kv()
                                && let Some(revision) = std::str::from_utf8(kv.value())
                                    .ok()
                                    .and_then(|v| v.parse::<u64>().ok())
                            {
                                publish(&tx, revision);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd: revision watch failed; reconnecting");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                },
                () = tokio::time::sleep(POLL_INTERVAL) => {
                    if let Ok((revision, _, _)) = read_counter(&mut kv, &keys, 0).await {
                        publish(&tx, revision);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{key_after, prefix_end};

    #[test]
    fn prefix_ends_and_successor_keys() {
        assert_eq!(
            prefix_end("/vexil/flag/prod/"),
            b"/vexil/flag/prod0".to_vec()
        );
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(key_after("/p/flag/ns/a"), b"/p/flag/ns/a\0".to_vec());
    }
}
