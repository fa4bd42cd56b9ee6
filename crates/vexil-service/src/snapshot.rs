//! The evaluation snapshot cache: per namespace, a compiled [`FlagSet`] at a known revision,
//! swapped in atomically when the change feed reports a commit. Evaluations read it without
//! locks and never touch the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Map;
use tokio::sync::watch;
use vexil_core::domain::{Namespace, Revision};
use vexil_core::{
    FlagDefinition, FlagDocument, FlagSet, FlagSetBuilder, FlagSetOptions, FractionalVersion,
};
use vexil_store::{RawNamespaceState, StoreError};

use crate::Store;

/// One namespace, compiled.
#[derive(Debug)]
pub struct NamespaceSnapshot {
    /// The namespace record (its evaluation context included).
    pub namespace: Namespace,
    /// The compiled flags, segments as `$evaluators`.
    pub flags: FlagSet,
    /// The store revision this snapshot reflects.
    pub revision: Revision,
    /// The namespace's segments as flagd `$evaluators`, kept to compile changed flags alone.
    evaluators: Map<String, serde_json::Value>,
}

/// Keyed with FxHash, not SipHash: every evaluation looks its namespace up here, and the keys
/// are namespace names, which only administrators create; a request's lookup adds nothing, so a
/// caller cannot fill the map with colliding keys.
type Snapshots = HashMap<String, Arc<NamespaceSnapshot>, rustc_hash::FxBuildHasher>;

/// All namespaces' snapshots plus the revision applied. Cheap to clone (shared state).
#[derive(Clone)]
pub struct SnapshotCache {
    inner: Arc<Inner>,
}

struct Inner {
    map: ArcSwap<Snapshots>,
    applied: watch::Sender<Revision>,
    fractional: FractionalVersion,
    /// When the snapshot was last known to match the store (ms since the epoch): set on load
    /// and on every catch-up that reached the store's head. Staleness is the time since.
    synced_at: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("applied", &*self.inner.applied.borrow())
            .finish_non_exhaustive()
    }
}

fn now_millis() -> vexil_core::domain::Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Stored flags and segments as a flagd document (segments become `$evaluators`).
pub(crate) fn document(
    flags: Vec<vexil_core::domain::Flag>,
    segments: Vec<vexil_core::domain::Segment>,
) -> FlagDocument {
    FlagDocument {
        flags: flags.into_iter().map(|f| (f.key, f.definition)).collect(),
        evaluators: segments.into_iter().map(|s| (s.key, s.rule)).collect(),
        metadata: Map::new(),
    }
}

/// Builds a namespace's snapshot from its stored state.
/// Compiles a namespace, decoding one flag at a time (see [`RawNamespaceState`]). A row that
/// does not decode is a corrupt store: it is logged and left out, rather than failing the
/// whole namespace.
fn compile(state: RawNamespaceState, fractional: FractionalVersion) -> NamespaceSnapshot {
    let evaluators: Map<String, serde_json::Value> = state
        .segments
        .into_iter()
        .map(|s| (s.key, s.rule))
        .collect();
    let options = FlagSetOptions {
        fractional,
        static_context: state.namespace.evaluation_context.clone(),
    };
    let mut builder = FlagSetBuilder::new(&evaluators, &Map::new(), &options);
    for text in state.flags {
        match serde_json::from_str::<vexil_core::domain::Flag>(&text) {
            Ok(flag) => builder.add(&flag.key, &flag.definition),
            Err(e) => tracing::error!(
                namespace = %state.namespace.key,
                error = %e,
                "a stored flag does not decode; it is left out of the snapshot"
            ),
        }
    }
    let flags = builder.finish();
    NamespaceSnapshot {
        flags,
        namespace: state.namespace,
        revision: state.revision,
        evaluators,
    }
}

/// `current` with the namespace's changes in `changes` applied, when they are all flag (or
/// configuration) changes that decode; `None` when the namespace must be reloaded instead.
fn apply_flag_changes(
    current: &NamespaceSnapshot,
    ns: &str,
    changes: &[vexil_core::domain::Change],
    fractional: FractionalVersion,
) -> Option<NamespaceSnapshot> {
    let mut updates: Vec<(String, Option<FlagDefinition>)> = Vec::new();
    let mut revision = current.revision;
    for change in changes.iter().filter(|c| c.namespace == ns) {
        revision = revision.max(change.revision);
        match change.kind {
            vexil_core::domain::ResourceKind::Flag => {}
            // Configuration entries are not part of evaluation: the snapshot only moves on.
            vexil_core::domain::ResourceKind::Config => continue,
            _ => return None,
        }
        let definition = match &change.after {
            Some(after) => Some(
                serde_json::from_value::<vexil_core::domain::Flag>(after.clone())
                    .ok()?
                    .definition,
            ),
            None => None,
        };
        updates.push((change.key.clone(), definition));
    }
    let flags = current.flags.with_changes(
        updates.iter().map(|(k, d)| (k.as_str(), d.as_ref())),
        &current.evaluators,
        fractional,
    );
    Some(NamespaceSnapshot {
        namespace: current.namespace.clone(),
        flags,
        revision,
        evaluators: current.evaluators.clone(),
    })
}

/// Builds a one-off snapshot from definitions (import dry runs and the CLI's local evaluation
/// use it; no store involved).
pub(crate) fn compile_definitions(
    flags: impl IntoIterator<Item = (String, FlagDefinition)>,
    evaluators: Map<String, serde_json::Value>,
    options: &FlagSetOptions,
) -> FlagSet {
    let mut doc = FlagDocument::default();
    doc.flags.extend(flags);
    doc.evaluators = evaluators;
    FlagSet::compile(&doc, options)
}

impl SnapshotCache {
    /// Loads every namespace from the store and returns the cache at the store's revision.
    ///
    /// # Errors
    /// Any store error during the initial load.
    pub async fn load(
        store: &dyn Store,
        fractional: FractionalVersion,
    ) -> Result<Self, StoreError> {
        // Read the revision first: anything committed after it is re-applied by the follower,
        // so the cache can only be behind, never miss a change.
        let revision = store.current_revision().await?;
        let mut map = Snapshots::default();
        for ns in store.list_namespaces().await? {
            let state = store.load_namespace_raw(&ns.key).await?;
            map.insert(ns.key.clone(), Arc::new(compile(state, fractional)));
        }
        let (applied, _) = watch::channel(revision);
        Ok(Self {
            inner: Arc::new(Inner {
                map: ArcSwap::from_pointee(map),
                applied,
                fractional,
                synced_at: std::sync::atomic::AtomicI64::new(now_millis()),
            }),
        })
    }

    /// The snapshot of one namespace, if it exists.
    pub fn get(&self, namespace: &str) -> Option<Arc<NamespaceSnapshot>> {
        self.inner.map.load().get(namespace).cloned()
    }

    /// Namespaces currently loaded.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.map.load().keys().cloned().collect();
        v.sort();
        v
    }

    /// The store revision applied so far.
    pub fn applied(&self) -> Revision {
        *self.inner.applied.borrow()
    }

    /// The bucketing algorithm snapshots are compiled with.
    pub fn fractional(&self) -> FractionalVersion {
        self.inner.fractional
    }

    /// Waits until the cache has applied `revision`, for at most `timeout`. Returns whether it
    /// did. Writers call this so a client that writes and then evaluates on the same replica
    /// sees its own write.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.inner.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A receiver of the applied revision (for watchers and readiness).
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.inner.applied.subscribe()
    }

    /// Applies everything committed after the current revision. Reloads each affected namespace
    /// whole, which is simple and always consistent; returns the namespaces that changed.
    ///
    /// # Errors
    /// A store error; the cache keeps serving what it had and a later call retries.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<BTreeSet<String>, StoreError> {
        let mut touched = BTreeSet::new();
        loop {
            let from = self.applied();
            let changes = match store.changes_since(from, 10_000).await {
                Ok(changes) => changes,
                Err(StoreError::ChangesCompacted { after, oldest }) => {
                    // Too far behind for the log (a replica that was cut off for long):
                    // reload everything, as at start-up.
                    tracing::warn!(
                        after,
                        oldest,
                        "the change log moved past this replica; reloading every namespace"
                    );
                    let fresh = Self::load(store, self.inner.fractional).await?;
                    let map = fresh.inner.map.load_full();
                    touched.extend(map.keys().cloned());
                    touched.extend(self.inner.map.load().keys().cloned());
                    self.inner.map.store(map);
                    self.inner.applied.send_replace(fresh.applied());
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(last) = changes.last().map(|c| c.revision) else {
                self.inner
                    .synced_at
                    .store(now_millis(), std::sync::atomic::Ordering::Relaxed);
                return Ok(touched);
            };
            let affected: BTreeSet<String> = changes.iter().map(|c| c.namespace.clone()).collect();
            let mut map: Snapshots = (**self.inner.map.load()).clone();
            for ns in &affected {
                // Flag changes alone are applied to the namespace's snapshot: only the changed
                // flags are compiled, whatever the namespace's size. A namespace or segment
                // change (or a change that does not decode) reloads the namespace whole.
                if let Some(current) = map.get(ns)
                    && let Some(next) =
                        apply_flag_changes(current, ns, &changes, self.inner.fractional)
                {
                    map.insert(ns.clone(), Arc::new(next));
                    continue;
                }
                match store.load_namespace_raw(ns).await {
                    Ok(state) => {
                        map.insert(ns.clone(), Arc::new(compile(state, self.inner.fractional)));
                    }
                    Err(StoreError::NotFound { .. }) => {
                        map.remove(ns);
                    }
                    Err(e) => return Err(e),
                }
            }
            self.inner.map.store(Arc::new(map));
            self.inner.applied.send_replace(last);
            touched.extend(affected);
        }
    }

    /// When the snapshot was last confirmed to match the store, in ms since the epoch. While
    /// the store is reachable this is at most one follow interval old; when it is not, the gap
    /// is how stale the served flags may be.
    pub fn synced_at(&self) -> vexil_core::domain::Millis {
        self.inner
            .synced_at
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Follows the store's change feed until `shutdown` resolves: on every commit
    /// notification (and every `poll` interval, in case a notification was missed) it catches
    /// up. Store errors are logged and retried on the next tick.
    pub async fn follow(
        self,
        store: Arc<dyn Store>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut rx = store.subscribe();
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.catch_up(&*store).await {
                tracing::warn!(error = %e, "snapshot catch-up failed; serving the last snapshot");
            }
            tokio::select! {
                () = &mut shutdown => return,
                changed = rx.changed() => {
                    if changed.is_err() {
                        // The store dropped its sender; fall back to polling.
                        tokio::time::sleep(poll).await;
                    }
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use vexil_core::domain::{Flag, Namespace, Segment};
    use vexil_store::sqlite::SqliteStore;
    use vexil_store::{ChangeFeed, Expect, FlagStore, Write};

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture: {e}"))
    }

    fn flag(key: &str, targeting: Value) -> Write {
        Write::PutFlag {
            flag: from::<Flag>(json!({
                "namespace": "prod", "key": key, "state": "ENABLED",
                "variants": {"a": format!("{key}-a"), "b": format!("{key}-b")},
                "defaultVariant": "a", "targeting": targeting,
            })),
            expect: Expect::Any,
        }
    }

    fn segment(rule: Value) -> Write {
        Write::PutSegment {
            segment: from::<Segment>(json!({"namespace": "prod", "key": "gold", "rule": rule})),
            expect: Expect::Any,
        }
    }

    async fn commit(store: &SqliteStore, writes: Vec<Write>) {
        store.commit(writes, Vec::new()).await.expect("commit");
    }

    /// What every flag of `prod` answers, for a few contexts.
    fn answers(cache: &SnapshotCache) -> Vec<Value> {
        let snap = cache.get("prod").expect("prod");
        [
            json!({}),
            json!({"tier": "gold", "targetingKey": "u1"}),
            json!({"targetingKey": "u2"}),
        ]
        .iter()
        .map(|ctx| serde_json::to_value(snap.flags.evaluate_all_at(ctx, 7)).expect("json"))
        .collect()
    }

    #[tokio::test]
    async fn applying_flag_changes_in_place_matches_a_fresh_load() {
        let store = SqliteStore::open_in_memory().await.expect("store");
        let ns: Namespace = from(json!({"key": "prod", "evaluationContext": {"region": "eu"}}));
        let by_ref = json!({"if": [{"$ref": "gold"}, "b", null]});
        commit(
            &store,
            vec![
                Write::PutNamespace {
                    namespace: ns,
                    expect: Expect::Absent,
                },
                segment(json!({"==": [{"var": "tier"}, "gold"]})),
                flag("c", by_ref.clone()),
                flag("e", json!({})),
            ],
        )
        .await;
        let cache = SnapshotCache::load(&store, FractionalVersion::V2)
            .await
            .expect("load");

        // Flag changes only: created, updated (twice in one batch), deleted, a broken rule.
        commit(
            &store,
            vec![flag("a", by_ref.clone()), flag("b", json!({}))],
        )
        .await;
        commit(
            &store,
            vec![
                flag("c", json!({"fractional": [["a", 50], ["b", 50]]})),
                flag(
                    "c",
                    json!({"if": [{"==": [{"var": "region"}, "eu"]}, "b", "a"]}),
                ),
                Write::DeleteFlag {
                    namespace: "prod".into(),
                    key: "e".into(),
                    expect: Expect::Any,
                },
                flag("z", json!({"no_such_operator": [1]})),
            ],
        )
        .await;
        cache.catch_up(&store).await.expect("catch up");
        let fresh = SnapshotCache::load(&store, FractionalVersion::V2)
            .await
            .expect("load");
        assert_eq!(cache.applied(), fresh.applied());
        assert_eq!(answers(&cache), answers(&fresh));
        let keys: Vec<String> = cache
            .get("prod")
            .expect("prod")
            .flags
            .keys()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["a", "b", "c", "z"]);

        // A segment change reaches every flag that refers to it.
        commit(
            &store,
            vec![segment(json!({"==": [{"var": "tier"}, "silver"]}))],
        )
        .await;
        cache.catch_up(&store).await.expect("catch up");
        let fresh = SnapshotCache::load(&store, FractionalVersion::V2)
            .await
            .expect("load");
        assert_eq!(answers(&cache), answers(&fresh));
        let gold = json!({"tier": "gold"});
        let r = cache.get("prod").expect("prod").flags.evaluate("a", &gold);
        assert_eq!(r.value.as_deref(), Some(&json!("a-a")), "{r:?}");
    }

    /// A replica cut off for longer than the etcd change log reaches back reloads every
    /// namespace (deletes and new namespaces included) instead of following a log with a hole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replica_behind_the_retained_change_log_reloads_everything() {
        let endpoint = tokio::task::spawn_blocking(vexil_testkit::etcd::endpoint)
            .await
            .expect("etcd");
        let store = vexil_store::etcd::EtcdStore::connect(
            &[endpoint],
            &vexil_testkit::etcd::unique_prefix(),
        )
        .await
        .expect("connect");
        store.set_change_retention(2);
        let ns = |key: &str| Write::PutNamespace {
            namespace: from::<Namespace>(json!({"key": key})),
            expect: Expect::Absent,
        };
        store
            .commit(
                vec![ns("prod"), flag("a", json!({})), flag("b", json!({}))],
                Vec::new(),
            )
            .await
            .expect("commit");
        let cache = SnapshotCache::load(&store, FractionalVersion::V2)
            .await
            .expect("load");
        // Five commits while this replica is not following: more than the log keeps.
        let delete_b = Write::DeleteFlag {
            namespace: "prod".into(),
            key: "b".into(),
            expect: Expect::Any,
        };
        for writes in [
            vec![delete_b],
            vec![flag("c", json!({}))],
            vec![ns("staging")],
            vec![flag("a", json!({"if": [true, "b", null]}))],
            vec![flag("d", json!({}))],
        ] {
            store.commit(writes, Vec::new()).await.expect("commit");
        }
        assert!(matches!(
            store.changes_since(cache.applied(), 100).await,
            Err(StoreError::ChangesCompacted { .. })
        ));
        let touched = cache.catch_up(&store).await.expect("catch up");
        assert!(
            touched.contains("prod") && touched.contains("staging"),
            "{touched:?}"
        );
        let fresh = SnapshotCache::load(&store, FractionalVersion::V2)
            .await
            .expect("load");
        assert_eq!(cache.applied(), fresh.applied());
        assert_eq!(cache.namespaces(), fresh.namespaces());
        assert_eq!(answers(&cache), answers(&fresh));
        let keys: Vec<String> = cache
            .get("prod")
            .expect("prod")
            .flags
            .keys()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(keys, ["a", "c", "d"]);
    }
}
