//! The distributed mode (DESIGN.md §5): flag state in etcd, everything else (audit, identity) in
//! PostgreSQL, and the relay that joins the two.
//!
//! A flag change and its audit events must commit together or not at all, but they live in two
//! systems with no shared transaction. So the change and its events commit together in ONE etcd
//! txn: the events go to an outbox key ([`AuditMode::Outbox`]). A relay then moves outbox
//! entries into PostgreSQL's audit log and deletes them. The relay is idempotent, keyed by event
//! id ([`PostgresStore::record_relayed_audit`]): after a crash between "recorded" and "deleted",
//! or when two replicas relay the same entry, an event is still recorded exactly once. While
//! PostgreSQL is down, flag writes keep succeeding and their events wait in etcd.
//!
//! Each commit relays inline (bounded by [`INLINE_RELAY_TIMEOUT`]), so in normal operation a
//! write's audit events are in PostgreSQL, sequenced and hash-chained, by the time the write
//! returns, and the audit log reads the same as in the other modes. When PostgreSQL is
//! unreachable, or the outbox holds a backlog, the commit skips that step and returns its
//! events unsequenced (`seq` 0, no hashes); a background task on every replica drains the
//! outbox (woken by commits, and every [`RELAY_INTERVAL`]) in commit order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Mutex, Notify, watch};
use vexil_core::domain::{AuditEvent, Change, ConfigEntry, Flag, Namespace, Revision, Segment};
use vexil_core::identity::IdentityState;

use crate::etcd::{AuditMode, EtcdStore, OutboxEntry};
use crate::postgres::PostgresStore;
use crate::{
    AuditQuery, AuditStore, ChangeFeed, Committed, ConfigStore, FlagQuery, FlagStore,
    IdentityCommitted, IdentityStore, IdentityWrite, NamespaceState, Page, RawNamespaceState,
    RelayStatus, StoreError, Write,
};

/// How long a commit waits for its own events to reach PostgreSQL before leaving them to the
/// background relay. The flag change is committed either way.
pub const INLINE_RELAY_TIMEOUT: Duration = Duration::from_millis(1500);

/// How often the background relay looks at the outbox when nothing woke it.
pub const RELAY_INTERVAL: Duration = Duration::from_millis(500);

/// Outbox entries moved per PostgreSQL transaction.
const RELAY_BATCH: usize = 64;

/// Flag state in etcd, audit and identity in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct DistributedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DistributedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedStore")
            .field("etcd", &self.inner.relay.etcd)
            .finish_non_exhaustive()
    }
}

struct Inner {
    relay: Arc<Relay>,
    task: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the relay needs, shared by commits (inline relays) and the background task.
struct Relay {
    etcd: EtcdStore,
    pg: PostgresStore,
    /// One relay at a time per process, so this replica appends in outbox order.
    turn: Mutex<()>,
    /// Whether the last relay reached PostgreSQL; while it did not, commits do not wait for it.
    healthy: AtomicBool,
    /// Wakes the background relay.
    kick: Notify,
    /// Outbox entries left after the last relay (0: drained), for readiness and metrics.
    pending: watch::Sender<usize>,
}

impl DistributedStore {
    /// Connects to etcd at `endpoints` (keeping flag state under `prefix`) and to PostgreSQL at
    /// `db_url`, and starts the background relay. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when either cannot be reached, Internal for a bad URL or a
    /// schema that cannot be migrated.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        db_url: &str,
    ) -> Result<Self, StoreError> {
        let etcd = EtcdStore::connect_with(endpoints, prefix, AuditMode::Outbox).await?;
        let pg = PostgresStore::connect(db_url).await?;
        Ok(Self::from_parts(etcd, pg))
    }

    /// Joins stores that are already connected and starts the background relay. `etcd` must
    /// have been connected with [`AuditMode::Outbox`], or the relay has nothing to move and the
    /// audit log stays in etcd.
    pub fn from_parts(etcd: EtcdStore, pg: PostgresStore) -> Self {
        let relay = Arc::new(Relay {
            etcd,
            pg,
            turn: Mutex::new(()),
            healthy: AtomicBool::new(true),
            kick: Notify::new(),
            pending: watch::channel(0).0,
        });
        let task = tokio::spawn(background(Arc::clone(&relay))).abort_handle();
        Self {
            inner: Arc::new(Inner { relay, task }),
        }
    }

    /// Moves everything in the outbox into PostgreSQL now, in commit order.
    ///
    /// Returns how many outbox entries (commits) it moved. Safe to run on every replica at
    /// once: an event is recorded once however many relays deliver it.
    ///
    /// # Errors
    /// Unavailable / Internal from either store; entries not moved stay in the outbox.
    pub async fn relay(&self) -> Result<usize, StoreError> {
        self.inner.relay.drain().await
    }

    /// The relay's state after its last attempt.
    pub fn relay_status(&self) -> RelayStatus {
        let relay = &self.inner.relay;
        RelayStatus {
            healthy: relay.healthy.load(Ordering::Relaxed),
            pending: *relay.pending.borrow(),
        }
    }

    /// The etcd half.
    pub fn etcd(&self) -> &EtcdStore {
        &self.inner.relay.etcd
    }

    /// The PostgreSQL half.
    pub fn postgres(&self) -> &PostgresStore {
        &self.inner.relay.pg
    }
}

impl Relay {
    /// Relays until the outbox is empty.
    async fn drain(&self) -> Result<usize, StoreError> {
        let _turn = self.turn.lock().await;
        let mut moved = 0;
        loop {
            let entries = self.etcd.outbox(RELAY_BATCH).await?;
            if entries.is_empty() {
                self.pending.send_replace(0);
                self.healthy.store(true, Ordering::Relaxed);
                return Ok(moved);
            }
            let full = entries.len() == RELAY_BATCH;
            if let Err(e) = self.move_entries(&entries).await {
                self.pending.send_replace(entries.len());
                return Err(e);
            }
            moved += entries.len();
            if !full {
                self.pending.send_replace(0);
                self.healthy.store(true, Ordering::Relaxed);
                return Ok(moved);
            }
        }
    }

    /// Records `entries` in PostgreSQL (one transaction), then deletes them from the outbox.
    /// Returns the stored events by id.
    async fn move_entries(
        &self,
        entries: &[OutboxEntry],
    ) -> Result<HashMap<String, AuditEvent>, StoreError> {
        let events = entries
            .iter()
            .flat_map(|e| e.events.iter().cloned())
            .collect();
        let stored = match self.pg.record_relayed_audit(events).await {
            Ok(stored) => stored,
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.healthy.store(true, Ordering::Relaxed);
        let keys: Vec<String> = entries.iter().map(|e| e.key.clone()).collect();
        // Recorded first, deleted second: a failure here leaves entries that a later relay
        // finds already recorded, never events that are nowhere.
        self.etcd.remove_outbox(&keys).await?;
        Ok(stored.into_iter().map(|e| (e.id.clone(), e)).collect())
    }

    /// Relays the outbox up to and including `own` (a commit that just landed), and returns
    /// `own`'s events as stored, or `None` when they are left to the background relay (a
    /// backlog is waiting, which must go first to keep the log in commit order).
    async fn relay_own(&self, own: &OutboxEntry) -> Result<Option<Vec<AuditEvent>>, StoreError> {
        let _turn = self.turn.lock().await;
        let entries = self.etcd.outbox(RELAY_BATCH).await?;
        if entries.len() == RELAY_BATCH {
            return Ok(None);
        }
        if !entries.iter().any(|e| e.key == own.key) {
            // Another relay (another replica's background task) moved it already; recording
            // again is a no-op that returns the events as stored.
            let stored = self.pg.record_relayed_audit(own.events.clone()).await?;
            return Ok(Some(stored));
        }
        let stored = self.move_entries(&entries).await?;
        own.events
            .iter()
            .map(|e| stored.get(&e.id).cloned())
            .collect::<Option<Vec<_>>>()
            .map_or_else(
                || {
                    Err(StoreError::Internal {
                        message: "relay: a relayed event is missing from the audit log".into(),
                    })
                },
                |events| Ok(Some(events)),
            )
    }
}

/// The background relay: drains the outbox whenever a commit could not, and every
/// [`RELAY_INTERVAL`] (other replicas' leftovers, recovery after an outage).
async fn background(relay: Arc<Relay>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = relay.kick.notified() => {}
            () = tokio::time::sleep(RELAY_INTERVAL) => {}
        }
        match relay.drain().await {
            Ok(moved) => {
                if failing || moved > 0 {
                    tracing::info!(moved, "audit relay: outbox drained into PostgreSQL");
                }
                failing = false;
            }
            Err(e) => {
                // Once per outage, not every interval.
                if !failing {
                    tracing::warn!(error = %e, "audit relay: cannot move outbox entries; retrying");
                }
                failing = true;
            }
        }
    }
}

#[async_trait]
impl FlagStore for DistributedStore {
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError> {
        let relay = &self.inner.relay;
        let mut committed = relay.etcd.commit(writes, audit).await?;
        let Some(first) = committed.audit.first() else {
            return Ok(committed);
        };
        let own = OutboxEntry {
            key: relay.etcd.outbox_key(committed.revision, &first.id),
            events: committed.audit.clone(),
        };
        if relay.healthy.load(Ordering::Relaxed) {
            match tokio::time::timeout(INLINE_RELAY_TIMEOUT, relay.relay_own(&own)).await {
                Ok(Ok(Some(stored))) => {
                    committed.audit = stored;
                    return Ok(committed);
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    relay.healthy.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "audit relay: inline relay failed; left to the background relay");
                }
                Err(_) => {
                    relay.healthy.store(false, Ordering::Relaxed);
                    tracing::debug!(
                        "audit relay: inline relay timed out; left to the background relay"
                    );
                }
            }
        }
        relay.kick.notify_one();
        Ok(committed)
    }

    async fn list_namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        self.etcd().list_namespaces().await
    }

    async fn get_namespace(&self, key: &str) -> Result<Namespace, StoreError> {
        self.etcd().get_namespace(key).await
    }

    async fn get_flag(&self, namespace: &str, key: &str) -> Result<Flag, StoreError> {
        self.etcd().get_flag(namespace, key).await
    }

    async fn list_flags(
        &self,
        namespace: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, StoreError> {
        self.etcd().list_flags(namespace, query).await
    }

    async fn get_segment(&self, namespace: &str, key: &str) -> Result<Segment, StoreError> {
        self.etcd().get_segment(namespace, key).await
    }

    async fn list_segments(&self, namespace: &str) -> Result<Vec<Segment>, StoreError> {
        self.etcd().list_segments(namespace).await
    }

    async fn load_namespace(&self, namespace: &str) -> Result<NamespaceState, StoreError> {
        self.etcd().load_namespace(namespace).await
    }

    async fn load_namespace_raw(&self, namespace: &str) -> Result<RawNamespaceState, StoreError> {
        self.etcd().load_namespace_raw(namespace).await
    }
}

/// Configs are flag state: they live in etcd with the flags, so their writes share the
/// revision, the change feed and the relayed audit of [`FlagStore::commit`].
#[async_trait]
impl ConfigStore for DistributedStore {
    async fn get_config(&self, namespace: &str, key: &str) -> Result<ConfigEntry, StoreError> {
        self.etcd().get_config(namespace, key).await
    }

    async fn list_configs(&self, namespace: &str) -> Result<Vec<ConfigEntry>, StoreError> {
        self.etcd().list_configs(namespace).await
    }

    async fn config_versions(
        &self,
        namespace: &str,
        key: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<ConfigEntry>, StoreError> {
        self.etcd()
            .config_versions(namespace, key, after_version, limit)
            .await
    }
}

#[async_trait]
impl ChangeFeed for DistributedStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.etcd().current_revision().await
    }

    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        self.etcd().changes_since(after, limit).await
    }

    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.etcd().subscribe()
    }
}

#[async_trait]
impl AuditStore for DistributedStore {
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.postgres().list_audit(query).await
    }

    fn relay_status(&self) -> Option<RelayStatus> {
        Some(DistributedStore::relay_status(self))
    }
}

#[async_trait]
impl IdentityStore for DistributedStore {
    async fn commit_identity(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<IdentityCommitted, StoreError> {
        self.postgres().commit_identity(writes, audit).await
    }

    async fn load_identity(&self) -> Result<IdentityState, StoreError> {
        self.postgres().load_identity().await
    }

    async fn identity_revision(&self) -> Result<u64, StoreError> {
        self.postgres().identity_revision().await
    }
}
