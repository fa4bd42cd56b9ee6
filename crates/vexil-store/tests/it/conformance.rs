//! The backend-agnostic conformance suite: every check here is what `vexil-store`'s traits
//! promise, written once against [`FlagStore`] + [`ChangeFeed`] + [`AuditStore`] +
//! [`ConfigStore`] so that every
//! backend (SQLite now, PostgreSQL and etcd later) runs the same checks.
//!
//! Harness contract: each check gets a **fresh, empty** store (no namespaces, revision 0, no
//! audit events) and may write anything to it. A backend module instantiates the checks with
//! its own factory (see `sqlite.rs`). Checks never sleep: anything asynchronous is awaited with
//! a bounded timeout.
//!
//! Decisions pinned here that the trait docs leave implicit, so that all backends agree:
//! - keys list in byte order (SQLite's BINARY collation, PostgreSQL's `COLLATE "C"`, etcd's
//!   key order), so cursors compare the same way everywhere;
//! - deleting a missing resource is `NotFound` whatever the condition;
//! - a batch with no writes but some audit events appends them without a new revision;
//! - `changes_since` with limit 0 returns nothing, and returns a commit larger than the limit
//!   whole and alone rather than splitting it or stalling;
//! - an empty `text` filter matches everything; text never matches across two fields;
//! - a deleted config leaves no history behind: created again, it starts at version 1 with a
//!   history of one.
//!
//! The identity checks (the last sections) need [`IdentityStore`] too, which only the SQL
//! backends implement, so backends list them apart from the rest. Decisions pinned there:
//! - identity errors carry an empty namespace and the name or id as key; a token whose digest
//!   is taken is `AlreadyExists` for the new token's id;
//! - identity commits consume no flag revision and put nothing in the change feed, and flag
//!   commits leave the identity revision alone; both append to the one audit chain.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};
use vexil_core::domain::{
    Actor, AuditEvent, Change, ConfigEntry, Flag, Namespace, ResourceKind, Segment,
};
use vexil_core::identity::{ApiToken, Binding, IdentityState, Permission, Role, Subject, User};
use vexil_core::{FlagDefinition, FlagState};
use vexil_store::{
    AuditQuery, AuditStore, ChangeFeed, Committed, ConfigStore, Expect, FlagQuery, FlagStore,
    IdentityCommitted, IdentityStore, IdentityWrite, StoreError, Write, chain_hash,
};

/// Calls `$callback!` with `$prefix` followed by the name of every flag-store check, so every
/// backend registers the same list: a check added here runs against all of them.
macro_rules! with_flag_store_checks {
    ($callback:ident ! ( $($prefix:tt)* )) => {
        $callback!(
            $($prefix)*
            namespaces_round_trip_through_create_update_and_delete,
            flags_round_trip_with_every_field_preserved,
            segments_round_trip_through_create_update_and_delete,
            versions_start_at_one_and_increase_by_one_per_update,
            creating_an_existing_resource_is_already_exists,
            stale_version_is_rejected_and_nothing_is_written,
            conditions_on_missing_resources_are_not_found,
            a_failing_write_rolls_back_the_whole_batch,
            flags_and_segments_in_an_unknown_namespace_are_not_found_for_the_namespace,
            a_namespace_with_flags_or_segments_cannot_be_deleted,
            a_batch_applies_its_writes_in_order,
            an_empty_batch_is_a_no_op_at_the_current_revision,
            an_audit_only_batch_appends_its_events_without_a_new_revision,
            revisions_strictly_increase_and_a_batch_shares_one,
            changes_since_returns_commits_in_order_and_resumes_from_any_revision,
            changes_since_respects_the_limit_without_splitting_a_commit,
            subscribers_observe_every_committed_revision_eventually,
            audit_events_get_contiguous_seqs_and_a_verifiable_hash_chain,
            audit_events_keep_what_the_writer_recorded_and_can_be_filtered,
            flag_listing_pages_in_key_order_with_a_cursor,
            flag_listing_filters_by_tag_and_text,
            listing_limits_default_to_100_and_cap_at_1000,
            load_namespace_returns_everything_at_the_current_revision,
            configs_round_trip_through_create_get_and_list,
            a_config_update_stamps_the_next_version_and_keeps_who_created_it,
            a_stale_config_version_is_rejected_and_no_version_is_written,
            creating_an_existing_config_is_already_exists,
            configs_in_an_unknown_namespace_are_not_found_for_the_namespace,
            config_versions_list_every_version_oldest_first_and_page,
            config_version_listing_defaults_to_100_and_caps_at_1000,
            deleting_a_config_removes_its_history_and_a_new_one_starts_at_version_one,
            a_namespace_holding_a_config_cannot_be_deleted,
            config_changes_reach_the_feed_with_the_stored_json_at_the_commit_revision,
            config_audit_events_are_appended_in_the_same_commit,
            a_failing_batch_leaves_no_config_and_no_version_behind,
        );
    };
}
pub(crate) use with_flag_store_checks;

/// Everything a backend implements.
pub(crate) trait Store: FlagStore + ChangeFeed + AuditStore + ConfigStore {}
impl<T: FlagStore + ChangeFeed + AuditStore + ConfigStore> Store for T {}

/// How long any asynchronous expectation may take before the check fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// A fixed timestamp for fixtures: the store must keep whatever the writer says.
const T0: i64 = 1_767_225_600_000;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub(crate) fn namespace(key: &str) -> Namespace {
    Namespace {
        key: key.into(),
        name: format!("The {key} namespace"),
        description: String::new(),
        evaluation_context: Map::new(),
        anonymous_evaluation: false,
        version: 0,
        created_at: T0,
        updated_at: T0,
    }
}

pub(crate) fn flag(ns: &str, key: &str) -> Flag {
    Flag {
        namespace: ns.into(),
        key: key.into(),
        name: format!("Flag {key}"),
        description: String::new(),
        tags: Vec::new(),
        definition: FlagDefinition {
            state: FlagState::Enabled,
            variants: object(json!({"on": true, "off": false})),
            default_variant: Some("off".into()),
            targeting: None,
            metadata: Map::new(),
        },
        version: 0,
        created_at: T0,
        created_by: "alice".into(),
        updated_at: T0,
        updated_by: "alice".into(),
    }
}

pub(crate) fn segment(ns: &str, key: &str) -> Segment {
    Segment {
        namespace: ns.into(),
        key: key.into(),
        description: format!("Segment {key}"),
        rule: json!({"ends_with": [{"var": "email"}, "@example.com"]}),
        version: 0,
        created_at: T0,
        updated_at: T0,
    }
}

pub(crate) fn config(ns: &str, key: &str) -> ConfigEntry {
    ConfigEntry {
        namespace: ns.into(),
        key: key.into(),
        value: json!({"timeoutMs": 250, "hosts": ["a.example", "b.example"], "ratio": 0.1}),
        schema: Some(json!({"type": "object", "required": ["timeoutMs"]})),
        description: format!("Config {key}"),
        version: 0,
        created_at: T0,
        created_by: "alice".into(),
        updated_at: T0,
        updated_by: "alice".into(),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("fixture is not an object: {other}"),
    }
}

/// Event ids must be unique per store; the process id keeps them unique across test runs
/// against a long-lived database too.
static NEXT_EVENT: AtomicU64 = AtomicU64::new(1);

pub(crate) fn event(action: &str, kind: ResourceKind, ns: &str, key: &str) -> AuditEvent {
    let n = NEXT_EVENT.fetch_add(1, Ordering::Relaxed);
    AuditEvent {
        id: format!("evt-{}-{n}", std::process::id()),
        seq: 0,
        at: T0 + i64::try_from(n).unwrap_or(0),
        actor: Actor {
            kind: "user".into(),
            id: "alice".into(),
        },
        action: action.into(),
        kind,
        namespace: ns.into(),
        key: key.into(),
        before: None,
        after: None,
        request_id: Some(format!("req-{n}")),
        source_ip: Some("127.0.0.1".into()),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// The audit event a service would record for `write` (without before/after).
pub(crate) fn event_for(write: &Write) -> AuditEvent {
    match write {
        Write::PutNamespace { namespace, .. } => event(
            "namespace.put",
            ResourceKind::Namespace,
            &namespace.key,
            &namespace.key,
        ),
        Write::DeleteNamespace { key, .. } => {
            event("namespace.delete", ResourceKind::Namespace, key, key)
        }
        Write::PutFlag { flag, .. } => {
            event("flag.put", ResourceKind::Flag, &flag.namespace, &flag.key)
        }
        Write::DeleteFlag { namespace, key, .. } => {
            event("flag.delete", ResourceKind::Flag, namespace, key)
        }
        Write::PutSegment { segment, .. } => event(
            "segment.put",
            ResourceKind::Segment,
            &segment.namespace,
            &segment.key,
        ),
        Write::DeleteSegment { namespace, key, .. } => {
            event("segment.delete", ResourceKind::Segment, namespace, key)
        }
        Write::PutConfig { config, .. } => event(
            "config.put",
            ResourceKind::Config,
            &config.namespace,
            &config.key,
        ),
        Write::DeleteConfig { namespace, key, .. } => {
            event("config.delete", ResourceKind::Config, namespace, key)
        }
    }
}

pub(crate) fn put_ns(namespace: Namespace, expect: Expect) -> Write {
    Write::PutNamespace { namespace, expect }
}

pub(crate) fn put_flag(flag: Flag, expect: Expect) -> Write {
    Write::PutFlag { flag, expect }
}

pub(crate) fn put_segment(segment: Segment, expect: Expect) -> Write {
    Write::PutSegment { segment, expect }
}

pub(crate) fn put_config(config: ConfigEntry, expect: Expect) -> Write {
    Write::PutConfig { config, expect }
}

fn delete_config(ns: &str, key: &str, expect: Expect) -> Write {
    Write::DeleteConfig {
        namespace: ns.into(),
        key: key.into(),
        expect,
    }
}

fn delete_ns(key: &str, expect: Expect) -> Write {
    Write::DeleteNamespace {
        key: key.into(),
        expect,
    }
}

fn delete_flag(ns: &str, key: &str, expect: Expect) -> Write {
    Write::DeleteFlag {
        namespace: ns.into(),
        key: key.into(),
        expect,
    }
}

fn delete_segment(ns: &str, key: &str, expect: Expect) -> Write {
    Write::DeleteSegment {
        namespace: ns.into(),
        key: key.into(),
        expect,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Commits `writes` with one audit event each, and fails the check if the store refuses.
pub(crate) async fn commit_audited<S: Store + ?Sized>(store: &S, writes: Vec<Write>) -> Committed {
    let audit = writes.iter().map(event_for).collect();
    store
        .commit(writes, audit)
        .await
        .unwrap_or_else(|e| panic!("commit failed: {e}"))
}

/// Commits `writes` (with audit) and returns the error the store must refuse them with.
async fn refused<S: Store + ?Sized>(store: &S, writes: Vec<Write>) -> StoreError {
    let audit = writes.iter().map(event_for).collect();
    match store.commit(writes, audit).await {
        Ok(c) => panic!("commit should have failed, but got revision {}", c.revision),
        Err(e) => e,
    }
}

fn not_found(kind: ResourceKind, ns: &str, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: ns.into(),
        key: key.into(),
    }
}

fn json_of<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_else(|e| panic!("serialising a fixture: {e}"))
}

/// The whole audit log, paging through it.
pub(crate) async fn all_audit<S: Store + ?Sized>(store: &S) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = Vec::new();
    loop {
        let page = store
            .list_audit(&AuditQuery {
                after_seq: out.last().map(|e| e.seq),
                limit: 1000,
                ..AuditQuery::default()
            })
            .await
            .unwrap_or_else(|e| panic!("list_audit: {e}"));
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The whole change log.
async fn all_changes<S: Store + ?Sized>(store: &S) -> Vec<Change> {
    store
        .changes_since(0, usize::MAX)
        .await
        .unwrap_or_else(|e| panic!("changes_since: {e}"))
}

/// Asserts that `events` are the whole log from seq 1: contiguous, and each hash chained to the
/// previous one and recomputable with [`chain_hash`].
pub(crate) fn assert_chain_verifies(events: &[AuditEvent]) {
    let mut prev_hash = String::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            u64::try_from(i).unwrap_or(u64::MAX) + 1,
            "seq of {e:?}"
        );
        assert_eq!(e.prev_hash, prev_hash, "prev_hash of seq {}", e.seq);
        assert_eq!(e.hash, chain_hash(&e.prev_hash, e), "hash of seq {}", e.seq);
        assert_eq!(e.hash.len(), 64, "a SHA-256 in hex");
        prev_hash.clone_from(&e.hash);
    }
}

/// Everything observable about a store, to show that a refused commit changed nothing.
#[derive(Debug, PartialEq)]
struct Observed {
    revision: u64,
    changes: Vec<Change>,
    audit: Vec<AuditEvent>,
    namespaces: Vec<Namespace>,
    states: Vec<Result<vexil_store::NamespaceState, StoreError>>,
    /// Per namespace, its configs, each with its whole history.
    configs: Vec<Result<Vec<ConfigWithHistory>, StoreError>>,
}

/// A config and all its stored versions, oldest first.
type ConfigWithHistory = (ConfigEntry, Vec<ConfigEntry>);

async fn observe<S: Store + ?Sized>(store: &S, namespaces: &[&str]) -> Observed {
    let mut states = Vec::new();
    let mut configs = Vec::new();
    for ns in namespaces {
        let mut state = store.load_namespace(ns).await;
        // The revision is checked separately; the state must match at any revision.
        if let Ok(s) = &mut state {
            s.revision = 0;
        }
        states.push(state);
        let listed = match store.list_configs(ns).await {
            Ok(listed) => {
                let mut with_history = Vec::new();
                for c in listed {
                    let history = config_history(store, ns, &c.key).await;
                    with_history.push((c, history));
                }
                Ok(with_history)
            }
            Err(e) => Err(e),
        };
        configs.push(listed);
    }
    Observed {
        revision: current(store).await,
        changes: all_changes(store).await,
        audit: all_audit(store).await,
        namespaces: store
            .list_namespaces()
            .await
            .unwrap_or_else(|e| panic!("list_namespaces: {e}")),
        states,
        configs,
    }
}

async fn current<S: Store + ?Sized>(store: &S) -> u64 {
    store
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("current_revision: {e}"))
}

async fn get_flag<S: Store + ?Sized>(store: &S, ns: &str, key: &str) -> Flag {
    store
        .get_flag(ns, key)
        .await
        .unwrap_or_else(|e| panic!("get_flag {ns}/{key}: {e}"))
}

async fn get_config<S: Store + ?Sized>(store: &S, ns: &str, key: &str) -> ConfigEntry {
    store
        .get_config(ns, key)
        .await
        .unwrap_or_else(|e| panic!("get_config {ns}/{key}: {e}"))
}

/// Every stored version of a config, oldest first (the largest page holds them all here).
async fn config_history<S: Store + ?Sized>(store: &S, ns: &str, key: &str) -> Vec<ConfigEntry> {
    store
        .config_versions(ns, key, 0, 1000)
        .await
        .unwrap_or_else(|e| panic!("config_versions {ns}/{key}: {e}"))
}

/// `entry` as the store keeps it at `version`.
fn at_version(entry: &ConfigEntry, version: u64) -> ConfigEntry {
    ConfigEntry {
        version,
        ..entry.clone()
    }
}

async fn list_keys<S: Store + ?Sized>(store: &S, ns: &str, query: FlagQuery) -> Vec<String> {
    let mut keys = Vec::new();
    let mut query = query;
    loop {
        let page = store
            .list_flags(ns, &query)
            .await
            .unwrap_or_else(|e| panic!("list_flags: {e}"));
        keys.extend(page.items.into_iter().map(|f| f.key));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => return keys,
        }
    }
}

/// Waits (bounded) until `rx` shows at least `revision`.
async fn await_revision(rx: &mut tokio::sync::watch::Receiver<u64>, revision: u64) {
    let outcome = tokio::time::timeout(PATIENCE, rx.wait_for(|r| *r >= revision))
        .await
        .map(|waited| waited.map(|_| ()));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("the revision channel closed: {e}"),
        Err(_) => panic!(
            "subscriber still at {} after {PATIENCE:?}, expected >= {revision}",
            *rx.borrow()
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// CRUD
// ---------------------------------------------------------------------------------------------

pub(crate) async fn namespaces_round_trip_through_create_update_and_delete<S: Store>(store: &S) {
    let mut prod = namespace("prod");
    prod.description = "Production".into();
    prod.evaluation_context = object(json!({"region": "eu", "tier": {"level": 3}}));
    let created = commit_audited(store, vec![put_ns(prod.clone(), Expect::Absent)]).await;
    commit_audited(store, vec![put_ns(namespace("alpha"), Expect::Absent)]).await;

    let mut expected = prod.clone();
    expected.version = 1;
    let got = store.get_namespace("prod").await.expect("get prod");
    assert_eq!(got, expected);
    assert_eq!(created.results, vec![Some(json_of(&expected))]);
    let keys: Vec<String> = store
        .list_namespaces()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.key)
        .collect();
    assert_eq!(keys, ["alpha", "prod"], "namespaces list in key order");

    // An update replaces the state but keeps created_at.
    let mut update = prod.clone();
    update.name = "Production (EU)".into();
    update.created_at = 42;
    update.updated_at = T0 + 1;
    let updated = commit_audited(store, vec![put_ns(update.clone(), Expect::Version(1))]).await;
    let got = store.get_namespace("prod").await.expect("get prod");
    assert_eq!(got.version, 2);
    assert_eq!(got.name, "Production (EU)");
    assert_eq!(got.created_at, T0, "created_at survives updates");
    assert_eq!(got.updated_at, T0 + 1, "updated_at is the writer's");
    assert_eq!(updated.results, vec![Some(json_of(&got))]);

    let deleted = commit_audited(store, vec![delete_ns("prod", Expect::Version(2))]).await;
    assert_eq!(deleted.results, vec![None]);
    assert_eq!(
        store.get_namespace("prod").await,
        Err(not_found(ResourceKind::Namespace, "prod", "prod"))
    );
    assert_eq!(store.list_namespaces().await.expect("list").len(), 1);
}

pub(crate) async fn flags_round_trip_with_every_field_preserved<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut f = flag("prod", "checkout-v2");
    f.name = "Checkout v2".into();
    f.description = "Ünïcödé ✓, \"quotes\" and \n newlines".into();
    f.tags = vec!["web".into(), "beta".into()];
    f.definition = FlagDefinition {
        state: FlagState::Disabled,
        // Floats must come back bit-for-bit, including the awkward ones.
        variants: object(json!({
            "tiny": 5e-324,
            "huge": f64::MAX,
            "sum": 0.1 + 0.2,
            "int": 9_007_199_254_740_993_u64,
            "neg": -17
        })),
        default_variant: Some("sum".into()),
        targeting: Some(json!({
            "if": [{"in": [{"var": "email"}, ["a@x.io", "b@x.io"]]}, "tiny", null]
        })),
        metadata: object(json!({"owner": "payments", "ticket": 1234, "critical": true})),
    };
    f.created_by = "alice".into();
    f.updated_by = "bob".into();
    f.updated_at = T0 + 5;
    let committed = commit_audited(store, vec![put_flag(f.clone(), Expect::Absent)]).await;

    let mut expected = f.clone();
    expected.version = 1;
    let got = get_flag(store, "prod", "checkout-v2").await;
    assert_eq!(got, expected);
    assert_eq!(committed.results, vec![Some(json_of(&expected))]);
    let page = store
        .list_flags("prod", &FlagQuery::default())
        .await
        .expect("list");
    assert_eq!(page.items, vec![expected.clone()]);
    let state = store.load_namespace("prod").await.expect("load");
    assert_eq!(state.flags, vec![expected]);

    let deleted = commit_audited(
        store,
        vec![delete_flag("prod", "checkout-v2", Expect::Version(1))],
    )
    .await;
    assert_eq!(deleted.results, vec![None]);
    assert_eq!(
        store.get_flag("prod", "checkout-v2").await,
        Err(not_found(ResourceKind::Flag, "prod", "checkout-v2"))
    );
}

pub(crate) async fn segments_round_trip_through_create_update_and_delete<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let s = segment("prod", "staff");
    let created = commit_audited(
        store,
        vec![
            put_segment(s.clone(), Expect::Absent),
            put_segment(segment("prod", "beta-testers"), Expect::Absent),
        ],
    )
    .await;
    let mut expected = s.clone();
    expected.version = 1;
    assert_eq!(
        store.get_segment("prod", "staff").await,
        Ok(expected.clone())
    );
    assert_eq!(created.results[0], Some(json_of(&expected)));
    let keys: Vec<String> = store
        .list_segments("prod")
        .await
        .expect("list")
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(keys, ["beta-testers", "staff"]);

    let mut update = s.clone();
    update.rule = json!({"==": [{"var": "team"}, "core"]});
    update.created_at = 7;
    commit_audited(store, vec![put_segment(update, Expect::Version(1))]).await;
    let got = store.get_segment("prod", "staff").await.expect("get");
    assert_eq!(got.version, 2);
    assert_eq!(got.rule, json!({"==": [{"var": "team"}, "core"]}));
    assert_eq!(got.created_at, T0, "created_at survives updates");

    commit_audited(
        store,
        vec![delete_segment("prod", "staff", Expect::Version(2))],
    )
    .await;
    assert_eq!(
        store.get_segment("prod", "staff").await,
        Err(not_found(ResourceKind::Segment, "prod", "staff"))
    );
    assert_eq!(store.list_segments("prod").await.expect("list").len(), 1);
}

/// One condition of each kind.
const EVERY_CONDITION: [Expect; 4] = [
    Expect::Absent,
    Expect::Any,
    Expect::Exists,
    Expect::Version(1),
];

/// The conditions an update may carry, in turn on a resource created at version 1: each holds
/// for the version the updates before it leave.
const UPDATE_CONDITIONS: [Expect; 4] = [
    Expect::Version(1),
    Expect::Exists,
    Expect::Any,
    Expect::Version(4),
];

pub(crate) async fn versions_start_at_one_and_increase_by_one_per_update<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut f = flag("prod", "f");
    // Whatever version the writer sends is ignored: the store assigns it.
    f.version = 77;
    commit_audited(store, vec![put_flag(f.clone(), Expect::Absent)]).await;
    assert_eq!(get_flag(store, "prod", "f").await.version, 1);

    for (i, expect) in UPDATE_CONDITIONS.into_iter().enumerate() {
        let n = i64::try_from(i).unwrap_or(0);
        let mut next = f.clone();
        next.name = format!("take {n}");
        next.created_at = 1;
        next.created_by = "mallory".into();
        next.updated_at = T0 + 100 + n;
        next.updated_by = format!("writer-{n}");
        commit_audited(store, vec![put_flag(next, expect)]).await;
        let got = get_flag(store, "prod", "f").await;
        assert_eq!(
            got.version,
            u64::try_from(i).unwrap_or(0) + 2,
            "after {expect:?}"
        );
        assert_eq!(got.name, format!("take {n}"));
        assert_eq!((got.created_at, got.created_by.as_str()), (T0, "alice"));
        assert_eq!(
            (got.updated_at, got.updated_by),
            (T0 + 100 + n, format!("writer-{n}"))
        );
    }
}

pub(crate) async fn creating_an_existing_resource_is_already_exists<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "f"), Expect::Absent),
            put_segment(segment("prod", "s"), Expect::Absent),
        ],
    )
    .await;
    let exists = |kind, key: &str| StoreError::AlreadyExists {
        kind,
        namespace: "prod".into(),
        key: key.into(),
    };
    assert_eq!(
        refused(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await,
        exists(ResourceKind::Namespace, "prod")
    );
    assert_eq!(
        refused(store, vec![put_flag(flag("prod", "f"), Expect::Absent)]).await,
        exists(ResourceKind::Flag, "f")
    );
    assert_eq!(
        refused(
            store,
            vec![put_segment(segment("prod", "s"), Expect::Absent)]
        )
        .await,
        exists(ResourceKind::Segment, "s")
    );
    assert_eq!(get_flag(store, "prod", "f").await.version, 1);
}

pub(crate) async fn stale_version_is_rejected_and_nothing_is_written<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "f"), Expect::Absent),
            put_segment(segment("prod", "s"), Expect::Absent),
        ],
    )
    .await;
    let mut f2 = flag("prod", "f");
    f2.name = "second".into();
    commit_audited(store, vec![put_flag(f2, Expect::Version(1))]).await;
    let before = observe(store, &["prod"]).await;
    let mut rx = store.subscribe();
    rx.borrow_and_update();

    let mut stale = flag("prod", "f");
    stale.name = "lost update".into();
    let mismatch = |kind, key: &str, expected, actual| StoreError::VersionMismatch {
        kind,
        namespace: "prod".into(),
        key: key.into(),
        expected,
        actual,
    };
    assert_eq!(
        refused(store, vec![put_flag(stale, Expect::Version(1))]).await,
        mismatch(ResourceKind::Flag, "f", 1, 2)
    );
    assert_eq!(
        refused(store, vec![delete_flag("prod", "f", Expect::Version(1))]).await,
        mismatch(ResourceKind::Flag, "f", 1, 2)
    );
    assert_eq!(
        refused(
            store,
            vec![put_segment(segment("prod", "s"), Expect::Version(3))]
        )
        .await,
        mismatch(ResourceKind::Segment, "s", 3, 1)
    );
    assert_eq!(
        refused(store, vec![put_ns(namespace("prod"), Expect::Version(9))]).await,
        mismatch(ResourceKind::Namespace, "prod", 9, 1)
    );

    assert_eq!(
        observe(store, &["prod"]).await,
        before,
        "a refused write changes nothing"
    );
    assert_eq!(get_flag(store, "prod", "f").await.name, "second");
    assert!(
        !rx.has_changed().unwrap_or(true),
        "a refused write publishes no revision"
    );
}

pub(crate) async fn conditions_on_missing_resources_are_not_found<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let before = observe(store, &["prod"]).await;
    let flag_missing = not_found(ResourceKind::Flag, "prod", "f");
    for expect in [Expect::Version(1), Expect::Exists] {
        assert_eq!(
            refused(store, vec![put_flag(flag("prod", "f"), expect)]).await,
            flag_missing
        );
        assert_eq!(
            refused(store, vec![put_segment(segment("prod", "s"), expect)]).await,
            not_found(ResourceKind::Segment, "prod", "s")
        );
        assert_eq!(
            refused(store, vec![put_ns(namespace("qa"), expect)]).await,
            not_found(ResourceKind::Namespace, "qa", "qa")
        );
    }
    // Deleting what is not there is NotFound even without a condition: a delete always
    // describes a real change.
    for expect in [
        Expect::Any,
        Expect::Exists,
        Expect::Version(1),
        Expect::Absent,
    ] {
        assert_eq!(
            refused(store, vec![delete_flag("prod", "f", expect)]).await,
            flag_missing
        );
        assert_eq!(
            refused(store, vec![delete_segment("prod", "s", expect)]).await,
            not_found(ResourceKind::Segment, "prod", "s")
        );
        assert_eq!(
            refused(store, vec![delete_ns("qa", expect)]).await,
            not_found(ResourceKind::Namespace, "qa", "qa")
        );
    }
    assert_eq!(observe(store, &["prod"]).await, before);

    // `Any` is an upsert: it creates a missing resource at version 1.
    commit_audited(store, vec![put_flag(flag("prod", "f"), Expect::Any)]).await;
    assert_eq!(get_flag(store, "prod", "f").await.version, 1);
}

pub(crate) async fn a_failing_write_rolls_back_the_whole_batch<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "existing"), Expect::Absent),
        ],
    )
    .await;
    let before = observe(store, &["prod", "qa"]).await;

    // Writes 1 and 2 would succeed; write 3 fails.
    let err = refused(
        store,
        vec![
            put_flag(flag("prod", "new"), Expect::Absent),
            put_segment(segment("prod", "s"), Expect::Absent),
            put_flag(flag("prod", "existing"), Expect::Absent),
        ],
    )
    .await;
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(observe(store, &["prod", "qa"]).await, before);

    // Also when the batch starts by creating a namespace, updates, and deletes.
    let mut renamed = flag("prod", "existing");
    renamed.name = "renamed".into();
    let err = refused(
        store,
        vec![
            put_ns(namespace("qa"), Expect::Absent),
            put_flag(flag("qa", "f"), Expect::Absent),
            put_flag(renamed, Expect::Version(1)),
            delete_flag("prod", "existing", Expect::Version(2)),
            put_flag(flag("prod", "never"), Expect::Version(5)),
        ],
    )
    .await;
    assert_eq!(err, not_found(ResourceKind::Flag, "prod", "never"));
    assert_eq!(observe(store, &["prod", "qa"]).await, before);
    assert_eq!(
        store.get_namespace("qa").await,
        Err(not_found(ResourceKind::Namespace, "qa", "qa"))
    );
}

pub(crate) async fn flags_and_segments_in_an_unknown_namespace_are_not_found_for_the_namespace<
    S: Store,
>(
    store: &S,
) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let ghost = not_found(ResourceKind::Namespace, "ghost", "ghost");
    for expect in EVERY_CONDITION {
        assert_eq!(
            refused(store, vec![put_flag(flag("ghost", "f"), expect)]).await,
            ghost
        );
        assert_eq!(
            refused(store, vec![put_segment(segment("ghost", "s"), expect)]).await,
            ghost
        );
        assert_eq!(
            refused(store, vec![delete_flag("ghost", "f", expect)]).await,
            ghost
        );
        assert_eq!(
            refused(store, vec![delete_segment("ghost", "s", expect)]).await,
            ghost
        );
    }
    assert_eq!(store.get_flag("ghost", "f").await, Err(ghost.clone()));
    assert_eq!(store.get_segment("ghost", "s").await, Err(ghost.clone()));
    assert_eq!(
        store.list_flags("ghost", &FlagQuery::default()).await,
        Err(ghost.clone())
    );
    assert_eq!(store.list_segments("ghost").await, Err(ghost.clone()));
    assert_eq!(store.load_namespace("ghost").await, Err(ghost));
    // In a namespace that exists, the flag itself is what is missing.
    assert_eq!(
        store.get_flag("prod", "f").await,
        Err(not_found(ResourceKind::Flag, "prod", "f"))
    );
}

pub(crate) async fn a_namespace_with_flags_or_segments_cannot_be_deleted<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "f"), Expect::Absent),
        ],
    )
    .await;
    let not_empty = StoreError::NamespaceNotEmpty {
        namespace: "prod".into(),
    };
    assert_eq!(
        refused(store, vec![delete_ns("prod", Expect::Any)]).await,
        not_empty
    );
    commit_audited(
        store,
        vec![
            delete_flag("prod", "f", Expect::Exists),
            put_segment(segment("prod", "s"), Expect::Absent),
        ],
    )
    .await;
    assert_eq!(
        refused(store, vec![delete_ns("prod", Expect::Version(1))]).await,
        not_empty
    );
    // Emptying it and deleting it in one batch works: writes apply in order.
    commit_audited(
        store,
        vec![
            delete_segment("prod", "s", Expect::Version(1)),
            delete_ns("prod", Expect::Version(1)),
        ],
    )
    .await;
    assert!(store.list_namespaces().await.expect("list").is_empty());
}

pub(crate) async fn a_batch_applies_its_writes_in_order<S: Store>(store: &S) {
    let mut f2 = flag("prod", "f");
    f2.name = "second".into();
    let writes = vec![
        put_ns(namespace("prod"), Expect::Absent),
        put_flag(flag("prod", "f"), Expect::Absent),
        put_flag(f2, Expect::Version(1)),
        put_segment(segment("prod", "s"), Expect::Absent),
        delete_segment("prod", "s", Expect::Version(1)),
        put_segment(segment("prod", "s"), Expect::Absent),
    ];
    let committed = commit_audited(store, writes).await;

    let versions: Vec<Option<u64>> = committed
        .results
        .iter()
        .map(|r| r.as_ref().and_then(|v| v["version"].as_u64()))
        .collect();
    assert_eq!(
        versions,
        [Some(1), Some(1), Some(2), Some(1), None, Some(1)],
        "each write sees the one before it"
    );
    let got = get_flag(store, "prod", "f").await;
    assert_eq!((got.version, got.name.as_str()), (2, "second"));
    assert_eq!(committed.results[2], Some(json_of(&got)));

    // The feed carries one change per write, in batch order, under the batch's revision.
    let changes = all_changes(store).await;
    let expected: Vec<Change> = [
        (ResourceKind::Namespace, "prod", "prod"),
        (ResourceKind::Flag, "prod", "f"),
        (ResourceKind::Flag, "prod", "f"),
        (ResourceKind::Segment, "prod", "s"),
        (ResourceKind::Segment, "prod", "s"),
        (ResourceKind::Segment, "prod", "s"),
    ]
    .into_iter()
    .zip(&committed.results)
    .map(|((kind, ns, key), after)| Change {
        revision: committed.revision,
        namespace: ns.into(),
        kind,
        key: key.into(),
        after: after.clone(),
    })
    .collect();
    assert_eq!(changes, expected);
}

pub(crate) async fn an_empty_batch_is_a_no_op_at_the_current_revision<S: Store>(store: &S) {
    let empty = store.commit(Vec::new(), Vec::new()).await.expect("empty");
    assert_eq!(empty.revision, 0);
    let first = commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let before = observe(store, &["prod"]).await;
    let empty = store.commit(Vec::new(), Vec::new()).await.expect("empty");
    assert_eq!(empty.revision, first.revision);
    assert!(empty.results.is_empty() && empty.audit.is_empty());
    assert_eq!(observe(store, &["prod"]).await, before);
}

pub(crate) async fn an_audit_only_batch_appends_its_events_without_a_new_revision<S: Store>(
    store: &S,
) {
    let first = commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let e = event("namespace.export", ResourceKind::Namespace, "prod", "prod");
    let committed = store.commit(Vec::new(), vec![e]).await.expect("audit only");
    assert_eq!(committed.revision, first.revision);
    assert_eq!(current(store).await, first.revision);
    assert_eq!(all_changes(store).await.len(), 1);
    let audit = all_audit(store).await;
    assert_eq!(audit.len(), 2);
    assert_eq!(committed.audit, audit[1..]);
    assert_chain_verifies(&audit);
}

// ---------------------------------------------------------------------------------------------
// Revisions and the change feed
// ---------------------------------------------------------------------------------------------

pub(crate) async fn revisions_strictly_increase_and_a_batch_shares_one<S: Store>(store: &S) {
    assert_eq!(current(store).await, 0, "an empty store is at revision 0");
    assert!(all_changes(store).await.is_empty());
    let mut last = 0;
    let mut committed = Vec::new();
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    for i in 0..5 {
        let c = commit_audited(
            store,
            vec![
                put_flag(flag("prod", &format!("a{i}")), Expect::Absent),
                put_flag(flag("prod", &format!("b{i}")), Expect::Absent),
            ],
        )
        .await;
        assert!(c.revision > last, "{} after {last}", c.revision);
        assert_eq!(current(store).await, c.revision);
        last = c.revision;
        committed.push(c.revision);
    }
    for (i, revision) in committed.iter().enumerate() {
        let keys: Vec<(u64, String)> = all_changes(store)
            .await
            .into_iter()
            .filter(|c| c.revision == *revision)
            .map(|c| (c.revision, c.key))
            .collect();
        assert_eq!(
            keys,
            [(*revision, format!("a{i}")), (*revision, format!("b{i}"))]
        );
    }
}

pub(crate) async fn changes_since_returns_commits_in_order_and_resumes_from_any_revision<
    S: Store,
>(
    store: &S,
) {
    let c1 = commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let c2 = commit_audited(
        store,
        vec![
            put_flag(flag("prod", "a"), Expect::Absent),
            put_flag(flag("prod", "b"), Expect::Absent),
        ],
    )
    .await;
    let mut a2 = flag("prod", "a");
    a2.definition.state = FlagState::Disabled;
    let c3 = commit_audited(store, vec![put_flag(a2, Expect::Version(1))]).await;
    let c4 = commit_audited(store, vec![delete_flag("prod", "b", Expect::Version(1))]).await;
    let c5 = commit_audited(
        store,
        vec![put_segment(segment("prod", "s"), Expect::Absent)],
    )
    .await;

    let expected: Vec<Change> = [
        (&c1, 0, ResourceKind::Namespace, "prod"),
        (&c2, 0, ResourceKind::Flag, "a"),
        (&c2, 1, ResourceKind::Flag, "b"),
        (&c3, 0, ResourceKind::Flag, "a"),
        (&c4, 0, ResourceKind::Flag, "b"),
        (&c5, 0, ResourceKind::Segment, "s"),
    ]
    .into_iter()
    .map(|(c, i, kind, key)| Change {
        revision: c.revision,
        namespace: "prod".into(),
        kind,
        key: key.into(),
        after: c.results[i].clone(),
    })
    .collect();
    assert_eq!(all_changes(store).await, expected);
    assert_eq!(expected[4].after, None, "a delete carries no state");
    assert_eq!(
        expected[3].after.as_ref().map(|v| v["state"].clone()),
        Some(json!("DISABLED"))
    );

    // Resuming from any revision, including ones between commits, gives exactly the rest.
    for after in 0..=c5.revision + 1 {
        let got = store.changes_since(after, 1000).await.expect("changes");
        let rest: Vec<Change> = expected
            .iter()
            .filter(|c| c.revision > after)
            .cloned()
            .collect();
        assert_eq!(got, rest, "changes_since({after})");
    }
    assert!(
        store
            .changes_since(u64::MAX, 10)
            .await
            .expect("changes")
            .is_empty()
    );
    // Repeatable.
    assert_eq!(all_changes(store).await, expected);
}

pub(crate) async fn changes_since_respects_the_limit_without_splitting_a_commit<S: Store>(
    store: &S,
) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    // Commits of 1, 3, 2 and 1 changes.
    let mut sizes = vec![1];
    for (size, prefix) in [(3, "x"), (2, "y"), (1, "z")] {
        let writes = (0..size)
            .map(|i| put_flag(flag("prod", &format!("{prefix}{i}")), Expect::Absent))
            .collect();
        commit_audited(store, writes).await;
        sizes.push(size);
    }
    let all = all_changes(store).await;
    assert_eq!(all.len(), 7);

    let count = |changes: &[Change]| changes.len();
    let since = |after, limit| async move {
        store
            .changes_since(after, limit)
            .await
            .unwrap_or_else(|e| panic!("changes_since: {e}"))
    };
    assert!(since(0, 0).await.is_empty(), "limit 0 returns nothing");
    assert_eq!(count(&since(0, 1).await), 1);
    assert_eq!(count(&since(0, 2).await), 1, "1 + 3 would exceed 2");
    assert_eq!(count(&since(0, 4).await), 4);
    assert_eq!(count(&since(0, 5).await), 4, "1 + 3 + 2 would exceed 5");
    assert_eq!(count(&since(0, 6).await), 6);
    // A commit larger than the limit comes alone and whole, so a consumer never stalls.
    let r1 = all[0].revision;
    let big = since(r1, 2).await;
    assert_eq!(count(&big), 3);
    assert!(big.iter().all(|c| c.revision == big[0].revision));

    // Paging through with a small limit yields everything, in order, each commit in one page.
    for limit in 1..=8 {
        let mut after = 0;
        let mut paged = Vec::new();
        loop {
            let page = since(after, limit).await;
            let Some(last) = page.last() else { break };
            after = last.revision;
            let revisions: BTreeSet<u64> = page.iter().map(|c| c.revision).collect();
            for r in revisions {
                let in_page = page.iter().filter(|c| c.revision == r).count();
                let in_all = all.iter().filter(|c| c.revision == r).count();
                assert_eq!(in_page, in_all, "revision {r} split at limit {limit}");
            }
            paged.extend(page);
        }
        assert_eq!(paged, all, "paging with limit {limit}");
    }
}

pub(crate) async fn subscribers_observe_every_committed_revision_eventually<S: Store>(store: &S) {
    let mut early = store.subscribe();
    assert_eq!(*early.borrow(), 0, "a fresh store publishes revision 0");
    let first = commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    await_revision(&mut early, first.revision).await;

    let mut last = first.revision;
    for i in 0..10 {
        last = commit_audited(
            store,
            vec![put_flag(flag("prod", &format!("f{i}")), Expect::Absent)],
        )
        .await
        .revision;
    }
    // It may skip values, but catches up with the latest.
    await_revision(&mut early, last).await;
    // A subscriber that arrives later starts at (or soon reaches) the current revision.
    let mut late = store.subscribe();
    await_revision(&mut late, last).await;

    // Every receiver sees the next commit, not just one of them.
    let mut receivers: Vec<_> = (0..4).map(|_| store.subscribe()).collect();
    let c = commit_audited(store, vec![delete_flag("prod", "f0", Expect::Any)]).await;
    for rx in &mut receivers {
        await_revision(rx, c.revision).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Audit
// ---------------------------------------------------------------------------------------------

pub(crate) async fn audit_events_get_contiguous_seqs_and_a_verifiable_hash_chain<S: Store>(
    store: &S,
) {
    assert!(all_audit(store).await.is_empty());
    let mut returned = Vec::new();
    let c = commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "a"), Expect::Absent),
            put_flag(flag("prod", "b"), Expect::Absent),
        ],
    )
    .await;
    returned.extend(c.audit);
    for i in 0..5 {
        let mut f = flag("prod", "a");
        f.name = format!("take {i}");
        let c = commit_audited(store, vec![put_flag(f, Expect::Any)]).await;
        returned.extend(c.audit);
    }
    // A write with two events for it (e.g. a change and a note) gets both, in order.
    let extra = vec![
        event("flag.delete", ResourceKind::Flag, "prod", "b"),
        event("flag.note", ResourceKind::Flag, "prod", "b"),
    ];
    let c = store
        .commit(vec![delete_flag("prod", "b", Expect::Any)], extra)
        .await
        .expect("commit");
    returned.extend(c.audit);

    let stored = all_audit(store).await;
    assert_eq!(stored.len(), 10);
    assert_chain_verifies(&stored);
    assert_eq!(returned, stored, "commit returns the events as stored");
    assert_eq!(stored[9].action, "flag.note");
}

pub(crate) async fn audit_events_keep_what_the_writer_recorded_and_can_be_filtered<S: Store>(
    store: &S,
) {
    let mut recorded = Vec::new();
    for ns in ["prod", "qa"] {
        let mut e = event("namespace.create", ResourceKind::Namespace, ns, ns);
        e.after = Some(json!({"key": ns, "ünï": [1.5, null, {"deep": true}]}));
        e.actor = Actor::system();
        e.request_id = None;
        e.source_ip = None;
        recorded.push(e.clone());
        store
            .commit(vec![put_ns(namespace(ns), Expect::Absent)], vec![e])
            .await
            .expect("commit");
    }
    for (ns, key) in [("prod", "a"), ("prod", "b"), ("qa", "a")] {
        let mut e = event("flag.create", ResourceKind::Flag, ns, key);
        e.after = Some(json_of(&flag(ns, key)));
        recorded.push(e.clone());
        store
            .commit(vec![put_flag(flag(ns, key), Expect::Absent)], vec![e])
            .await
            .expect("commit");
    }
    let mut e = event("flag.update", ResourceKind::Flag, "prod", "a");
    e.before = Some(json_of(&flag("prod", "a")));
    e.after = Some(json!({"state": "DISABLED"}));
    e.source_ip = Some("2001:db8::1".into());
    recorded.push(e.clone());
    store
        .commit(
            vec![put_flag(flag("prod", "a"), Expect::Version(1))],
            vec![e],
        )
        .await
        .expect("commit");

    // Everything the writer recorded comes back unchanged; the store only adds seq and hashes.
    let stored = all_audit(store).await;
    let stripped: Vec<AuditEvent> = stored
        .iter()
        .cloned()
        .map(|mut e| {
            e.seq = 0;
            e.prev_hash = String::new();
            e.hash = String::new();
            e
        })
        .collect();
    assert_eq!(stripped, recorded);

    let seqs = |events: Vec<AuditEvent>| events.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let query = |q: AuditQuery| async move {
        seqs(
            store
                .list_audit(&q)
                .await
                .unwrap_or_else(|e| panic!("list_audit: {e}")),
        )
    };
    assert_eq!(
        query(AuditQuery {
            namespace: Some("prod".into()),
            ..AuditQuery::default()
        })
        .await,
        [1, 3, 4, 6]
    );
    assert_eq!(
        query(AuditQuery {
            kind: Some(ResourceKind::Flag),
            ..AuditQuery::default()
        })
        .await,
        [3, 4, 5, 6]
    );
    assert_eq!(
        query(AuditQuery {
            namespace: Some("prod".into()),
            kind: Some(ResourceKind::Flag),
            key: Some("a".into()),
            ..AuditQuery::default()
        })
        .await,
        [3, 6]
    );
    assert_eq!(
        query(AuditQuery {
            key: Some("a".into()),
            after_seq: Some(3),
            ..AuditQuery::default()
        })
        .await,
        [5, 6]
    );
    assert_eq!(
        query(AuditQuery {
            after_seq: Some(1),
            limit: 2,
            ..AuditQuery::default()
        })
        .await,
        [2, 3]
    );
    assert!(
        query(AuditQuery {
            namespace: Some("nope".into()),
            ..AuditQuery::default()
        })
        .await
        .is_empty()
    );

    // limit 0 means 100.
    let many: Vec<AuditEvent> = (0..150)
        .map(|i| event("flag.read", ResourceKind::Flag, "qa", &format!("k{i}")))
        .collect();
    store.commit(Vec::new(), many).await.expect("audit only");
    assert_eq!(query(AuditQuery::default()).await.len(), 100);
    assert_eq!(
        query(AuditQuery {
            limit: 5000,
            ..AuditQuery::default()
        })
        .await
        .len(),
        156
    );
}

// ---------------------------------------------------------------------------------------------
// Listing and loading
// ---------------------------------------------------------------------------------------------

pub(crate) async fn flag_listing_pages_in_key_order_with_a_cursor<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_ns(namespace("qa"), Expect::Absent),
            put_flag(flag("qa", "in-another-namespace"), Expect::Absent),
        ],
    )
    .await;
    let mut keys: Vec<String> = [
        "b", "a", "B", "a.b", "a-b", "a_b", "A", "z", "0", "_x", "a:b",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let writes = keys
        .iter()
        .map(|k| put_flag(flag("prod", k), Expect::Absent))
        .collect();
    commit_audited(store, writes).await;
    // Byte order: digits < upper case < '_' < lower case, and '-' < '.' < ':' < '_'.
    keys.sort();
    assert_eq!(
        keys,
        [
            "0", "A", "B", "_x", "a", "a-b", "a.b", "a:b", "a_b", "b", "z"
        ]
    );

    let all = store
        .list_flags("prod", &FlagQuery::default())
        .await
        .expect("list");
    assert_eq!(
        all.items.iter().map(|f| f.key.clone()).collect::<Vec<_>>(),
        keys
    );
    assert_eq!(all.next_cursor, None);

    for limit in 1..=12 {
        let mut pages = 0;
        let mut query = FlagQuery {
            limit,
            ..FlagQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.list_flags("prod", &query).await.expect("page");
            pages += 1;
            assert!(page.items.len() <= limit);
            seen.extend(page.items.iter().map(|f| f.key.clone()));
            match page.next_cursor {
                Some(cursor) => {
                    assert_eq!(page.items.len(), limit, "only a last page may be short");
                    assert_eq!(Some(&cursor), page.items.last().map(|f| &f.key));
                    query.cursor = Some(cursor);
                }
                None => break,
            }
        }
        assert_eq!(seen, keys, "limit {limit}");
        // No empty trailing page: a page that ends exactly at the end says so.
        assert_eq!(pages, keys.len().div_ceil(limit), "limit {limit}");
    }

    // A cursor need not be a stored key.
    let after_a = store
        .list_flags(
            "prod",
            &FlagQuery {
                cursor: Some("a-a".into()),
                limit: 2,
                ..FlagQuery::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        after_a
            .items
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        ["a-b", "a.b"]
    );
}

pub(crate) async fn flag_listing_filters_by_tag_and_text<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mk = |key: &str, name: &str, description: &str, tags: &[&str]| {
        let mut f = flag("prod", key);
        f.name = name.into();
        f.description = description.into();
        f.tags = tags.iter().map(|t| (*t).to_string()).collect();
        put_flag(f, Expect::Absent)
    };
    commit_audited(
        store,
        vec![
            mk("checkout-v2", "Checkout v2", "", &["beta", "web"]),
            mk("new-cart", "New CHECKOUT flow", "", &["beta2"]),
            mk(
                "banner",
                "Banner",
                "Shown after checkout completes",
                &["beta", "beta"],
            ),
            mk("pricing", "Pricing", "Table", &["web"]),
            mk("overview", "Übersicht", "", &[]),
        ],
    )
    .await;
    let keys = |tag: Option<&str>, text: Option<&str>| FlagQuery {
        tag: tag.map(String::from),
        text: text.map(String::from),
        limit: 1,
        cursor: None,
    };
    // limit 1 everywhere: filters and pagination must compose.
    assert_eq!(
        list_keys(store, "prod", keys(Some("beta"), None)).await,
        ["banner", "checkout-v2"]
    );
    assert_eq!(
        list_keys(store, "prod", keys(Some("beta2"), None)).await,
        ["new-cart"]
    );
    assert!(
        list_keys(store, "prod", keys(Some("bet"), None))
            .await
            .is_empty()
    );
    assert!(
        list_keys(store, "prod", keys(Some("BETA"), None))
            .await
            .is_empty()
    );
    assert_eq!(
        list_keys(store, "prod", keys(None, Some("cHeCkOuT"))).await,
        ["banner", "checkout-v2", "new-cart"],
        "key, name or description, case-insensitively"
    );
    assert_eq!(
        list_keys(store, "prod", keys(None, Some("ÜBERSICHT"))).await,
        ["overview"],
        "case-insensitive beyond ASCII"
    );
    assert_eq!(
        list_keys(store, "prod", keys(Some("web"), Some("checkout"))).await,
        ["checkout-v2"]
    );
    assert_eq!(
        list_keys(store, "prod", keys(None, Some(""))).await.len(),
        5
    );
    assert!(
        list_keys(store, "prod", keys(None, Some("gpr")))
            .await
            .is_empty(),
        "no match across key and name (\"pricing\" + \"Pricing\")"
    );
    assert!(
        list_keys(store, "prod", keys(None, Some("%")))
            .await
            .is_empty(),
        "no wildcard characters"
    );

    // Tags follow updates and deletes.
    let mut untagged = flag("prod", "checkout-v2");
    untagged.tags = vec!["web".into()];
    commit_audited(
        store,
        vec![
            put_flag(untagged, Expect::Version(1)),
            delete_flag("prod", "banner", Expect::Version(1)),
        ],
    )
    .await;
    assert!(
        list_keys(store, "prod", keys(Some("beta"), None))
            .await
            .is_empty()
    );
    assert_eq!(
        list_keys(store, "prod", keys(Some("web"), None)).await,
        ["checkout-v2", "pricing"]
    );
}

pub(crate) async fn listing_limits_default_to_100_and_cap_at_1000<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    // Batches of 25 keep every backend's transaction small.
    for batch in 0..41 {
        let writes = (0..25)
            .map(|i| {
                put_flag(
                    flag("prod", &format!("f{:04}", batch * 25 + i)),
                    Expect::Absent,
                )
            })
            .collect();
        store.commit(writes, Vec::new()).await.expect("commit");
    }
    let list = |limit, cursor: Option<String>| async move {
        store
            .list_flags(
                "prod",
                &FlagQuery {
                    limit,
                    cursor,
                    ..FlagQuery::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("list_flags: {e}"))
    };
    let default = list(0, None).await;
    assert_eq!(default.items.len(), 100);
    assert_eq!(default.next_cursor.as_deref(), Some("f0099"));
    let capped = list(usize::MAX, None).await;
    assert_eq!(capped.items.len(), 1000);
    assert_eq!(capped.next_cursor.as_deref(), Some("f0999"));
    let rest = list(usize::MAX, capped.next_cursor).await;
    assert_eq!(rest.items.len(), 25);
    assert_eq!(rest.next_cursor, None);
}

pub(crate) async fn load_namespace_returns_everything_at_the_current_revision<S: Store>(store: &S) {
    let mut prod = namespace("prod");
    prod.evaluation_context = object(json!({"env": "prod"}));
    commit_audited(
        store,
        vec![
            put_ns(prod, Expect::Absent),
            put_ns(namespace("qa"), Expect::Absent),
            put_flag(flag("prod", "b"), Expect::Absent),
            put_flag(flag("prod", "a"), Expect::Absent),
            put_flag(flag("qa", "other"), Expect::Absent),
            put_segment(segment("prod", "s2"), Expect::Absent),
            put_segment(segment("prod", "s1"), Expect::Absent),
            put_segment(segment("qa", "other"), Expect::Absent),
        ],
    )
    .await;
    let c = commit_audited(store, vec![delete_flag("prod", "b", Expect::Version(1))]).await;

    let state = store.load_namespace("prod").await.expect("load");
    assert_eq!(state.revision, c.revision);
    assert_eq!(
        state.namespace,
        store.get_namespace("prod").await.expect("ns")
    );
    assert_eq!(state.namespace.evaluation_context["env"], "prod");
    assert_eq!(
        state
            .flags
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(
        state
            .segments
            .iter()
            .map(|s| s.key.as_str())
            .collect::<Vec<_>>(),
        ["s1", "s2"]
    );
    assert_eq!(state.flags[0], get_flag(store, "prod", "a").await);

    // The revision is store-wide: a commit elsewhere moves it too.
    let other = commit_audited(store, vec![delete_flag("qa", "other", Expect::Any)]).await;
    let again = store.load_namespace("prod").await.expect("load");
    assert_eq!(again.revision, other.revision);
    assert_eq!((again.flags, again.segments), (state.flags, state.segments));
}

// ---------------------------------------------------------------------------------------------
// Configuration entries
// ---------------------------------------------------------------------------------------------

pub(crate) async fn configs_round_trip_through_create_get_and_list<S: Store>(store: &S) {
    let mut c = config("prod", "limits");
    // Values come back exactly as written, floats and nesting included.
    c.value = json!({"tiny": 5e-324, "sum": 0.1 + 0.2, "big": 9_007_199_254_740_993_u64,
                     "nested": {"list": [1, "two", null, {"ü": true}]}});
    c.description = "Ünïcödé ✓, \"quotes\" and \n newlines".into();
    c.updated_by = "bob".into();
    c.updated_at = T0 + 5;
    let mut unschematised = config("prod", "banner-text");
    unschematised.schema = None;
    unschematised.value = json!("Welcome!");
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_ns(namespace("qa"), Expect::Absent),
        ],
    )
    .await;
    let created = commit_audited(
        store,
        vec![
            put_config(c.clone(), Expect::Absent),
            put_config(unschematised.clone(), Expect::Any),
            put_config(config("qa", "limits"), Expect::Absent),
        ],
    )
    .await;

    let expected = at_version(&c, 1);
    let banner = at_version(&unschematised, 1);
    assert_eq!(get_config(store, "prod", "limits").await, expected);
    assert_eq!(get_config(store, "prod", "banner-text").await, banner);
    assert_eq!(created.results[0], Some(json_of(&expected)));
    assert_eq!(created.results[1], Some(json_of(&banner)));
    assert_eq!(
        store.list_configs("prod").await,
        Ok(vec![banner, expected.clone()]),
        "configs list in key order, only the namespace's own"
    );
    assert_eq!(config_history(store, "prod", "limits").await, [expected]);
    commit_audited(store, vec![put_ns(namespace("empty"), Expect::Absent)]).await;
    assert_eq!(store.list_configs("empty").await, Ok(Vec::new()));
    assert_eq!(
        store.get_config("prod", "nope").await,
        Err(not_found(ResourceKind::Config, "prod", "nope"))
    );
}

pub(crate) async fn a_config_update_stamps_the_next_version_and_keeps_who_created_it<S: Store>(
    store: &S,
) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut c = config("prod", "limits");
    // Whatever version the writer sends is ignored: the store assigns it.
    c.version = 77;
    commit_audited(store, vec![put_config(c.clone(), Expect::Absent)]).await;
    assert_eq!(get_config(store, "prod", "limits").await.version, 1);

    for (i, expect) in UPDATE_CONDITIONS.into_iter().enumerate() {
        let n = i64::try_from(i).unwrap_or(0);
        let mut next = c.clone();
        next.value = json!({"timeoutMs": 300 + n});
        next.schema = None;
        next.description = format!("take {n}");
        next.created_at = 1;
        next.created_by = "mallory".into();
        next.updated_at = T0 + 100 + n;
        next.updated_by = format!("writer-{n}");
        let committed = commit_audited(store, vec![put_config(next, expect)]).await;
        let got = get_config(store, "prod", "limits").await;
        assert_eq!(
            got.version,
            u64::try_from(i).unwrap_or(0) + 2,
            "after {expect:?}"
        );
        assert_eq!(got.value, json!({"timeoutMs": 300 + n}));
        assert_eq!(
            (got.schema.as_ref(), got.description.as_str()),
            (None, format!("take {n}").as_str())
        );
        assert_eq!((got.created_at, got.created_by.as_str()), (T0, "alice"));
        assert_eq!(
            (got.updated_at, got.updated_by.clone()),
            (T0 + 100 + n, format!("writer-{n}"))
        );
        assert_eq!(committed.results, vec![Some(json_of(&got))]);
    }
}

pub(crate) async fn a_stale_config_version_is_rejected_and_no_version_is_written<S: Store>(
    store: &S,
) {
    let mut second = config("prod", "limits");
    second.value = json!({"timeoutMs": 500});
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_config(config("prod", "limits"), Expect::Absent),
            put_config(second, Expect::Version(1)),
        ],
    )
    .await;
    let before = observe(store, &["prod"]).await;
    let mut rx = store.subscribe();
    rx.borrow_and_update();

    let mut stale = config("prod", "limits");
    stale.value = json!({"timeoutMs": 1});
    let mismatch = StoreError::VersionMismatch {
        kind: ResourceKind::Config,
        namespace: "prod".into(),
        key: "limits".into(),
        expected: 1,
        actual: 2,
    };
    assert_eq!(
        refused(store, vec![put_config(stale, Expect::Version(1))]).await,
        mismatch
    );
    assert_eq!(
        refused(
            store,
            vec![delete_config("prod", "limits", Expect::Version(1))]
        )
        .await,
        mismatch
    );
    // Conditions on a config that is not there.
    let missing = not_found(ResourceKind::Config, "prod", "nope");
    for expect in [Expect::Version(1), Expect::Exists] {
        assert_eq!(
            refused(store, vec![put_config(config("prod", "nope"), expect)]).await,
            missing
        );
    }
    for expect in [Expect::Any, Expect::Absent, Expect::Version(1)] {
        assert_eq!(
            refused(store, vec![delete_config("prod", "nope", expect)]).await,
            missing
        );
    }

    assert_eq!(
        observe(store, &["prod"]).await,
        before,
        "a refused write changes nothing"
    );
    let history = config_history(store, "prod", "limits").await;
    assert_eq!(
        history.iter().map(|c| c.version).collect::<Vec<_>>(),
        [1, 2],
        "no version row for a refused write"
    );
    assert_eq!(history[1].value, json!({"timeoutMs": 500}));
    assert!(
        !rx.has_changed().unwrap_or(true),
        "a refused write publishes no revision"
    );
}

pub(crate) async fn creating_an_existing_config_is_already_exists<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_config(config("prod", "limits"), Expect::Absent),
        ],
    )
    .await;
    let before = observe(store, &["prod"]).await;
    let mut again = config("prod", "limits");
    again.value = json!({"timeoutMs": 9});
    assert_eq!(
        refused(store, vec![put_config(again, Expect::Absent)]).await,
        StoreError::AlreadyExists {
            kind: ResourceKind::Config,
            namespace: "prod".into(),
            key: "limits".into(),
        }
    );
    assert_eq!(observe(store, &["prod"]).await, before);
    assert_eq!(
        config_history(store, "prod", "limits").await,
        [at_version(&config("prod", "limits"), 1)]
    );
}

pub(crate) async fn configs_in_an_unknown_namespace_are_not_found_for_the_namespace<S: Store>(
    store: &S,
) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let before = observe(store, &["prod", "ghost"]).await;
    let ghost = not_found(ResourceKind::Namespace, "ghost", "ghost");
    for expect in EVERY_CONDITION {
        assert_eq!(
            refused(store, vec![put_config(config("ghost", "c"), expect)]).await,
            ghost
        );
        assert_eq!(
            refused(store, vec![delete_config("ghost", "c", expect)]).await,
            ghost
        );
    }
    assert_eq!(observe(store, &["prod", "ghost"]).await, before);
    assert_eq!(store.get_config("ghost", "c").await, Err(ghost.clone()));
    assert_eq!(store.list_configs("ghost").await, Err(ghost.clone()));
    assert_eq!(store.config_versions("ghost", "c", 0, 0).await, Err(ghost));
    // In a namespace that exists, the config itself is what is missing.
    let missing = not_found(ResourceKind::Config, "prod", "c");
    assert_eq!(store.get_config("prod", "c").await, Err(missing.clone()));
    assert_eq!(store.config_versions("prod", "c", 0, 0).await, Err(missing));
}

pub(crate) async fn config_versions_list_every_version_oldest_first_and_page<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let first = config("prod", "limits");
    commit_audited(store, vec![put_config(first.clone(), Expect::Absent)]).await;
    let mut expected = vec![at_version(&first, 1)];
    for i in 2..=5_u64 {
        let mut next = first.clone();
        next.value = json!({"timeoutMs": i * 100, "step": i});
        next.description = format!("version {i}");
        next.schema = (i % 2 == 0).then(|| json!({"type": "object"}));
        next.updated_at = T0 + i64::try_from(i).unwrap_or(0);
        next.updated_by = format!("writer-{i}");
        commit_audited(
            store,
            vec![put_config(next.clone(), Expect::Version(i - 1))],
        )
        .await;
        expected.push(at_version(&next, i));
    }
    // Another config's history is its own.
    commit_audited(
        store,
        vec![put_config(config("prod", "other"), Expect::Absent)],
    )
    .await;

    let versions = |after, limit| async move {
        store
            .config_versions("prod", "limits", after, limit)
            .await
            .unwrap_or_else(|e| panic!("config_versions({after}, {limit}): {e}"))
    };
    assert_eq!(
        versions(0, 0).await,
        expected,
        "every version, exactly as written"
    );
    assert_eq!(
        get_config(store, "prod", "limits").await,
        expected[4],
        "the current entry is the latest version"
    );
    assert_eq!(
        versions(2, 0).await,
        expected[2..],
        "after_version is exclusive"
    );
    assert_eq!(versions(2, 2).await, expected[2..4]);
    assert_eq!(versions(0, 1).await, expected[..1]);
    assert!(versions(5, 0).await.is_empty());
    assert!(versions(u64::MAX, 0).await.is_empty());
    for limit in 1..=6 {
        let mut after = 0;
        let mut paged = Vec::new();
        loop {
            let page = versions(after, limit).await;
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = last.version;
            paged.extend(page);
        }
        assert_eq!(paged, expected, "paging with limit {limit}");
    }
    assert_eq!(
        config_history(store, "prod", "other").await,
        [at_version(&config("prod", "other"), 1)]
    );
}

pub(crate) async fn config_version_listing_defaults_to_100_and_caps_at_1000<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    // Batches of 25 keep every backend's transaction small; a batch may write one config again
    // and again, each put a version.
    for batch in 0..41_u64 {
        let writes = (0..25)
            .map(|i| {
                let mut c = config("prod", "busy");
                c.value = json!(batch * 25 + i);
                put_config(c, Expect::Any)
            })
            .collect();
        store.commit(writes, Vec::new()).await.expect("commit");
    }
    let versions = |after, limit| async move {
        store
            .config_versions("prod", "busy", after, limit)
            .await
            .unwrap_or_else(|e| panic!("config_versions: {e}"))
            .iter()
            .map(|c| c.version)
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(0, 0).await, (1..=100).collect::<Vec<_>>());
    assert_eq!(
        versions(0, usize::MAX).await,
        (1..=1000).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(1000, usize::MAX).await,
        (1001..=1025).collect::<Vec<_>>()
    );
    assert_eq!(get_config(store, "prod", "busy").await.value, json!(1024));
}

pub(crate) async fn deleting_a_config_removes_its_history_and_a_new_one_starts_at_version_one<
    S: Store,
>(
    store: &S,
) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    // `ab` starts with `a`: deleting `a`'s history must leave `ab`'s alone.
    commit_audited(
        store,
        vec![
            put_config(config("prod", "a"), Expect::Absent),
            put_config(config("prod", "ab"), Expect::Absent),
            put_config(config("prod", "a"), Expect::Version(1)),
            put_config(config("prod", "a"), Expect::Version(2)),
            put_config(config("prod", "ab"), Expect::Version(1)),
        ],
    )
    .await;
    let ab_history = config_history(store, "prod", "ab").await;
    assert_eq!(ab_history.len(), 2);

    let deleted = commit_audited(store, vec![delete_config("prod", "a", Expect::Version(3))]).await;
    assert_eq!(deleted.results, vec![None]);
    let missing = not_found(ResourceKind::Config, "prod", "a");
    assert_eq!(store.get_config("prod", "a").await, Err(missing.clone()));
    assert_eq!(store.config_versions("prod", "a", 0, 0).await, Err(missing));
    assert_eq!(
        store.list_configs("prod").await,
        Ok(vec![get_config(store, "prod", "ab").await])
    );
    assert_eq!(config_history(store, "prod", "ab").await, ab_history);

    // Created again, it starts over: version 1, a history of one.
    let mut reborn = config("prod", "a");
    reborn.value = json!({"timeoutMs": 1});
    commit_audited(store, vec![put_config(reborn.clone(), Expect::Absent)]).await;
    assert_eq!(get_config(store, "prod", "a").await, at_version(&reborn, 1));
    assert_eq!(
        config_history(store, "prod", "a").await,
        [at_version(&reborn, 1)]
    );

    // Deleted and created again within one batch: only the new versions remain.
    let mut third = config("prod", "a");
    third.value = json!({"timeoutMs": 3});
    commit_audited(store, vec![put_config(reborn.clone(), Expect::Version(1))]).await;
    commit_audited(
        store,
        vec![
            put_config(reborn.clone(), Expect::Version(2)),
            delete_config("prod", "a", Expect::Version(3)),
            put_config(third.clone(), Expect::Absent),
            put_config(third.clone(), Expect::Version(1)),
        ],
    )
    .await;
    assert_eq!(
        config_history(store, "prod", "a").await,
        [at_version(&third, 1), at_version(&third, 2)]
    );
    // Written and deleted within one batch: nothing remains.
    commit_audited(
        store,
        vec![
            put_config(config("prod", "ab"), Expect::Version(2)),
            delete_config("prod", "ab", Expect::Version(3)),
        ],
    )
    .await;
    assert_eq!(
        store.config_versions("prod", "ab", 0, 0).await,
        Err(not_found(ResourceKind::Config, "prod", "ab"))
    );
    commit_audited(
        store,
        vec![put_config(config("prod", "ab"), Expect::Absent)],
    )
    .await;
    assert_eq!(
        config_history(store, "prod", "ab").await,
        [at_version(&config("prod", "ab"), 1)]
    );
    assert_eq!(config_history(store, "prod", "a").await.len(), 2);
}

pub(crate) async fn a_namespace_holding_a_config_cannot_be_deleted<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_config(config("prod", "limits"), Expect::Absent),
        ],
    )
    .await;
    let before = observe(store, &["prod"]).await;
    assert_eq!(
        refused(store, vec![delete_ns("prod", Expect::Any)]).await,
        StoreError::NamespaceNotEmpty {
            namespace: "prod".into(),
        }
    );
    assert_eq!(observe(store, &["prod"]).await, before);
    // Emptying it and deleting it in one batch works: writes apply in order.
    commit_audited(
        store,
        vec![
            delete_config("prod", "limits", Expect::Version(1)),
            delete_ns("prod", Expect::Version(1)),
        ],
    )
    .await;
    assert!(store.list_namespaces().await.expect("list").is_empty());
    // A namespace of the same name created again holds nothing of the old one.
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    assert_eq!(store.list_configs("prod").await, Ok(Vec::new()));
    assert_eq!(
        store.config_versions("prod", "limits", 0, 0).await,
        Err(not_found(ResourceKind::Config, "prod", "limits"))
    );
}

pub(crate) async fn config_changes_reach_the_feed_with_the_stored_json_at_the_commit_revision<
    S: Store,
>(
    store: &S,
) {
    let c1 = commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let c2 = commit_audited(
        store,
        vec![
            put_config(config("prod", "limits"), Expect::Absent),
            put_flag(flag("prod", "f"), Expect::Absent),
        ],
    )
    .await;
    let stored_v1 = json_of(&get_config(store, "prod", "limits").await);
    let mut next = config("prod", "limits");
    next.value = json!({"timeoutMs": 900});
    let c3 = commit_audited(store, vec![put_config(next, Expect::Version(1))]).await;
    let stored_v2 = json_of(&get_config(store, "prod", "limits").await);
    let c4 = commit_audited(
        store,
        vec![delete_config("prod", "limits", Expect::Version(2))],
    )
    .await;

    let change = |revision, kind, key: &str, after: Option<Value>| Change {
        revision,
        namespace: "prod".into(),
        kind,
        key: key.into(),
        after,
    };
    let expected = vec![
        change(
            c2.revision,
            ResourceKind::Config,
            "limits",
            Some(stored_v1.clone()),
        ),
        change(c2.revision, ResourceKind::Flag, "f", c2.results[1].clone()),
        change(
            c3.revision,
            ResourceKind::Config,
            "limits",
            Some(stored_v2.clone()),
        ),
        change(c4.revision, ResourceKind::Config, "limits", None),
    ];
    assert_eq!(
        store.changes_since(c1.revision, 1000).await,
        Ok(expected.clone())
    );
    assert_eq!(c2.results[0], Some(stored_v1));
    assert_eq!(c3.results, vec![Some(stored_v2)]);
    assert_eq!(
        store.changes_since(c3.revision, 1000).await,
        Ok(expected[3..].to_vec())
    );
}

pub(crate) async fn config_audit_events_are_appended_in_the_same_commit<S: Store>(store: &S) {
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let c = config("prod", "limits");
    let mut created = event("config.create", ResourceKind::Config, "prod", "limits");
    created.after = Some(json_of(&at_version(&c, 1)));
    let first = store
        .commit(
            vec![put_config(c.clone(), Expect::Absent)],
            vec![created.clone()],
        )
        .await
        .expect("commit");
    let mut removed = event("config.delete", ResourceKind::Config, "prod", "limits");
    removed.before = first.results[0].clone();
    let note = event("config.note", ResourceKind::Config, "prod", "limits");
    let second = store
        .commit(
            vec![delete_config("prod", "limits", Expect::Version(1))],
            vec![removed.clone(), note.clone()],
        )
        .await
        .expect("commit");

    let audit = all_audit(store).await;
    assert_chain_verifies(&audit);
    assert_eq!(audit.len(), 4);
    assert_eq!(
        first.audit,
        audit[1..2],
        "commit returns the events as stored"
    );
    assert_eq!(second.audit, audit[2..]);
    let stripped: Vec<AuditEvent> = audit[1..]
        .iter()
        .cloned()
        .map(|mut e| {
            e.seq = 0;
            e.prev_hash = String::new();
            e.hash = String::new();
            e
        })
        .collect();
    assert_eq!(
        stripped,
        [created, removed, note],
        "kept as the writer recorded them"
    );
    let configs = store
        .list_audit(&AuditQuery {
            kind: Some(ResourceKind::Config),
            key: Some("limits".into()),
            ..AuditQuery::default()
        })
        .await
        .expect("list_audit");
    assert_eq!(configs, audit[1..]);
}

pub(crate) async fn a_failing_batch_leaves_no_config_and_no_version_behind<S: Store>(store: &S) {
    commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_config(config("prod", "kept"), Expect::Absent),
        ],
    )
    .await;
    let before = observe(store, &["prod", "qa"]).await;

    // Every write but the last would succeed.
    let mut changed = config("prod", "kept");
    changed.value = json!({"timeoutMs": 7});
    let err = refused(
        store,
        vec![
            put_config(config("prod", "new"), Expect::Absent),
            put_config(changed.clone(), Expect::Version(1)),
            put_config(changed, Expect::Version(2)),
            put_config(config("prod", "kept"), Expect::Absent),
        ],
    )
    .await;
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(observe(store, &["prod", "qa"]).await, before);
    assert_eq!(
        store.config_versions("prod", "new", 0, 0).await,
        Err(not_found(ResourceKind::Config, "prod", "new"))
    );

    // Also when the batch creates a namespace and configs in it, and deletes one.
    let err = refused(
        store,
        vec![
            put_ns(namespace("qa"), Expect::Absent),
            put_config(config("qa", "c"), Expect::Absent),
            delete_config("prod", "kept", Expect::Version(1)),
            put_config(config("prod", "never"), Expect::Version(5)),
        ],
    )
    .await;
    assert_eq!(err, not_found(ResourceKind::Config, "prod", "never"));
    assert_eq!(observe(store, &["prod", "qa"]).await, before);
    assert_eq!(
        config_history(store, "prod", "kept").await,
        [at_version(&config("prod", "kept"), 1)]
    );
}

/// What a database written before configs existed holds, for the migration checks: namespace
/// `prod` (version 1, committed at revision 1) as its stored JSON.
pub(crate) fn pre_config_namespace() -> (Namespace, String) {
    let ns = Namespace {
        version: 1,
        ..namespace("prod")
    };
    let doc = serde_json::to_string(&ns).unwrap_or_else(|e| panic!("encoding a fixture: {e}"));
    (ns, doc)
}

/// The SQL migrations of `backend` (`sqlite` or `postgres`) from before configs existed, to
/// build the database the configs migration must carry forward.
pub(crate) async fn migrations_before_configs(backend: &str) -> sqlx::migrate::Migrator {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut older = sqlx::migrate::Migrator::new(source)
        .await
        .unwrap_or_else(|e| panic!("reading the {backend} migrations: {e}"));
    older.migrations = older.migrations[..2].to_vec().into();
    older
}

/// `store` was opened on a database that held [`pre_config_namespace`] (and its one change) before
/// the configs migration ran: the state and the feed survive, and configs can be written.
pub(crate) async fn a_migrated_database_keeps_its_state_and_takes_configs<S: Store>(store: &S) {
    let (ns, doc) = pre_config_namespace();
    assert_eq!(store.get_namespace("prod").await, Ok(ns));
    let old = Change {
        revision: 1,
        namespace: "prod".into(),
        kind: ResourceKind::Namespace,
        key: "prod".into(),
        after: Some(serde_json::from_str(&doc).unwrap_or_else(|e| panic!("fixture JSON: {e}"))),
    };
    assert_eq!(all_changes(store).await, std::slice::from_ref(&old));
    let c = commit_audited(
        store,
        vec![put_config(config("prod", "limits"), Expect::Absent)],
    )
    .await;
    assert_eq!(c.revision, 2);
    assert_eq!(
        all_changes(store).await,
        [
            old,
            Change {
                revision: 2,
                namespace: "prod".into(),
                kind: ResourceKind::Config,
                key: "limits".into(),
                after: c.results[0].clone(),
            }
        ]
    );
    assert_eq!(config_history(store, "prod", "limits").await.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Concurrency and durability
// ---------------------------------------------------------------------------------------------

/// Writers per concurrency check and successful updates each must make.
const WRITERS: u64 = 8;
const UPDATES_PER_WRITER: u64 = 25;

pub(crate) async fn concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice<
    S: Store,
>(
    store: Arc<S>,
) {
    commit_audited(
        &*store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "hot"), Expect::Absent),
        ],
    )
    .await;

    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move { cas_increments(&*store, writer, UPDATES_PER_WRITER).await });
    }
    let mut conflicts = 0;
    while let Some(done) = tasks.join_next().await {
        conflicts += done.unwrap_or_else(|e| panic!("writer task: {e}"));
    }

    let successes = WRITERS * UPDATES_PER_WRITER;
    let hot = get_flag(&*store, "prod", "hot").await;
    assert_eq!(
        hot.version,
        successes + 1,
        "one version per success ({conflicts} conflicts)"
    );
    assert_eq!(
        hot.definition.metadata.get("count"),
        Some(&json!(successes)),
        "no lost update"
    );
    let audit = all_audit(&*store).await;
    let hot_events = audit.iter().filter(|e| e.key == "hot").count();
    assert_eq!(
        u64::try_from(hot_events).unwrap_or(0),
        successes + 1,
        "one audit event per success"
    );
    assert_chain_verifies(&audit);
    // The feed has each version exactly once, in order.
    let versions: Vec<u64> = all_changes(&*store)
        .await
        .iter()
        .filter(|c| c.key == "hot")
        .filter_map(|c| c.after.as_ref().and_then(|a| a["version"].as_u64()))
        .collect();
    assert_eq!(versions, (1..=successes + 1).collect::<Vec<_>>());
}

/// Read-modify-write of the `count` metadata with compare-and-set, retrying on conflicts, until
/// `updates` succeeded. Returns how many conflicts it saw.
pub(crate) async fn cas_increments<S: Store + ?Sized>(store: &S, writer: u64, updates: u64) -> u64 {
    let mut done = 0;
    let mut conflicts = 0;
    while done < updates {
        assert!(conflicts < 100_000, "writer {writer} is starving");
        let current = get_flag(store, "prod", "hot").await;
        let count = current
            .definition
            .metadata
            .get("count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut next = current.clone();
        next.definition
            .metadata
            .insert("count".into(), json!(count + 1));
        next.updated_by = format!("writer-{writer}");
        let mut e = event("flag.update", ResourceKind::Flag, "prod", "hot");
        e.before = Some(json_of(&current));
        e.after = Some(json_of(&next));
        match store
            .commit(
                vec![put_flag(next, Expect::Version(current.version))],
                vec![e],
            )
            .await
        {
            Ok(_) => done += 1,
            Err(StoreError::VersionMismatch { .. }) => conflicts += 1,
            Err(other) => panic!("writer {writer}: {other}"),
        }
    }
    conflicts
}

/// `open` must open the same underlying store every time it is called.
pub(crate) async fn state_survives_reopening_the_store<S, F, Fut>(open: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let store = open().await;
    commit_audited(
        &store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "a"), Expect::Absent),
            put_segment(segment("prod", "s"), Expect::Absent),
        ],
    )
    .await;
    let mut a2 = flag("prod", "a");
    a2.tags = vec!["kept".into()];
    commit_audited(&store, vec![put_flag(a2, Expect::Version(1))]).await;
    let before = observe(&store, &["prod"]).await;
    let state = store.load_namespace("prod").await.expect("load");
    drop(store);

    let store = open().await;
    assert_eq!(observe(&store, &["prod"]).await, before);
    assert_eq!(store.load_namespace("prod").await, Ok(state));
    assert_eq!(
        list_keys(
            &store,
            "prod",
            FlagQuery {
                tag: Some("kept".into()),
                ..FlagQuery::default()
            }
        )
        .await,
        ["a"],
        "derived indexes survive too"
    );
    let mut rx = store.subscribe();
    await_revision(&mut rx, before.revision).await;

    // Revisions and the audit chain continue where they were.
    let next = commit_audited(&store, vec![delete_flag("prod", "a", Expect::Version(2))]).await;
    assert!(next.revision > before.revision);
    assert_eq!(
        next.audit[0].prev_hash,
        before
            .audit
            .last()
            .map(|e| e.hash.clone())
            .unwrap_or_default()
    );
    assert_chain_verifies(&all_audit(&store).await);
}

// ---------------------------------------------------------------------------------------------
// Identity (the SQL backends: etcd keeps no identity, so these checks are listed apart)
// ---------------------------------------------------------------------------------------------

/// A backend that also keeps identity.
pub(crate) trait IdentityBackend: Store + IdentityStore {}
impl<T: Store + IdentityStore> IdentityBackend for T {}

/// Identity concurrency checks: rounds of racing writers, and commits per racing task.
const IDENTITY_ROUNDS: u64 = 10;
const COMMITS_PER_TASK: usize = 10;

pub(crate) fn user(name: &str) -> User {
    User {
        name: name.into(),
        display_name: format!("User {name}"),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        disabled: false,
        version: 0,
        created_at: T0,
        updated_at: T0,
        password_changed_at: T0,
    }
}

fn role(name: &str) -> Role {
    Role {
        name: name.into(),
        description: format!("The {name} role"),
        permissions: [Permission::FlagRead, Permission::AuditRead]
            .into_iter()
            .collect(),
        version: 0,
        created_at: T0,
        updated_at: T0,
    }
}

fn binding(id: &str, subject: Subject, role: &str, namespace: &str) -> Binding {
    Binding {
        id: id.into(),
        subject,
        role: role.into(),
        namespace: namespace.into(),
        created_at: T0,
        created_by: Actor {
            kind: "user".into(),
            id: "admin".into(),
        },
    }
}

fn token(id: &str, digest: &str) -> ApiToken {
    ApiToken {
        id: id.into(),
        name: format!("Token {id}"),
        digest: digest.into(),
        role: "evaluator".into(),
        namespace: "prod".into(),
        expires_at: None,
        created_at: T0,
        created_by: Actor::system(),
    }
}

pub(crate) fn put_user(user: User, expect: Expect) -> IdentityWrite {
    IdentityWrite::PutUser { user, expect }
}

fn put_role(role: Role, expect: Expect) -> IdentityWrite {
    IdentityWrite::PutRole { role, expect }
}

fn create_binding(binding: Binding) -> IdentityWrite {
    IdentityWrite::CreateBinding { binding }
}

fn create_token(token: ApiToken) -> IdentityWrite {
    IdentityWrite::CreateToken { token }
}

/// The audit event a service would record for `write`: no namespace, the name or id as key.
pub(crate) fn identity_event_for(write: &IdentityWrite) -> AuditEvent {
    let (action, kind, key) = match write {
        IdentityWrite::PutUser { user, .. } => ("user.put", ResourceKind::User, &user.name),
        IdentityWrite::DeleteUser { name, .. } => ("user.delete", ResourceKind::User, name),
        IdentityWrite::PutRole { role, .. } => ("role.put", ResourceKind::Role, &role.name),
        IdentityWrite::DeleteRole { name, .. } => ("role.delete", ResourceKind::Role, name),
        IdentityWrite::CreateBinding { binding } => {
            ("binding.create", ResourceKind::Binding, &binding.id)
        }
        IdentityWrite::DeleteBinding { id } => ("binding.delete", ResourceKind::Binding, id),
        IdentityWrite::CreateToken { token } => ("token.create", ResourceKind::Token, &token.id),
        IdentityWrite::DeleteToken { id } => ("token.delete", ResourceKind::Token, id),
    };
    event(action, kind, "", key)
}

/// What a failed login records: an audit-only identity batch.
fn failed_login(name: &str) -> AuditEvent {
    event("user.login_failed", ResourceKind::User, "", name)
}

/// Commits identity `writes` with one audit event each, and fails the check if the store
/// refuses.
pub(crate) async fn commit_identity_audited<S: IdentityBackend + ?Sized>(
    store: &S,
    writes: Vec<IdentityWrite>,
) -> IdentityCommitted {
    let audit = writes.iter().map(identity_event_for).collect();
    store
        .commit_identity(writes, audit)
        .await
        .unwrap_or_else(|e| panic!("identity commit failed: {e}"))
}

/// Commits identity `writes` (with audit) and returns the error the store must refuse them
/// with.
async fn identity_refused<S: IdentityBackend + ?Sized>(
    store: &S,
    writes: Vec<IdentityWrite>,
) -> StoreError {
    let audit = writes.iter().map(identity_event_for).collect();
    match store.commit_identity(writes, audit).await {
        Ok(c) => panic!(
            "identity commit should have failed, but got revision {}",
            c.revision
        ),
        Err(e) => e,
    }
}

pub(crate) async fn load_identity<S: IdentityBackend + ?Sized>(store: &S) -> IdentityState {
    store
        .load_identity()
        .await
        .unwrap_or_else(|e| panic!("load_identity: {e}"))
}

async fn identity_revision<S: IdentityBackend + ?Sized>(store: &S) -> u64 {
    store
        .identity_revision()
        .await
        .unwrap_or_else(|e| panic!("identity_revision: {e}"))
}

/// Everything observable about identity (and the flag side it must not touch), to show that a
/// refused identity commit changed nothing.
#[derive(Debug, PartialEq)]
struct ObservedIdentity {
    state: IdentityState,
    revision: u64,
    flag_revision: u64,
    audit: Vec<AuditEvent>,
}

async fn observe_identity<S: IdentityBackend + ?Sized>(store: &S) -> ObservedIdentity {
    ObservedIdentity {
        state: load_identity(store).await,
        revision: identity_revision(store).await,
        flag_revision: current(store).await,
        audit: all_audit(store).await,
    }
}

fn identity_not_found(kind: ResourceKind, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: String::new(),
        key: key.into(),
    }
}

fn identity_exists(kind: ResourceKind, key: &str) -> StoreError {
    StoreError::AlreadyExists {
        kind,
        namespace: String::new(),
        key: key.into(),
    }
}

fn identity_mismatch(kind: ResourceKind, key: &str, expected: u64, actual: u64) -> StoreError {
    StoreError::VersionMismatch {
        kind,
        namespace: String::new(),
        key: key.into(),
        expected,
        actual,
    }
}

fn names<T>(items: &[T], name: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| name(i).to_owned()).collect()
}

pub(crate) async fn identity_round_trips_through_create_update_and_delete<S: IdentityBackend>(
    store: &S,
) {
    let empty = load_identity(store).await;
    assert_eq!(
        empty,
        IdentityState::default(),
        "a fresh store has no identity"
    );

    let mut alice = user("alice");
    alice.display_name = "Ålice \"A\" Ünïcödé".into();
    let mut expiring = token("t2", &"b".repeat(64));
    expiring.expires_at = Some(T0 + 86_400_000);
    let committed = commit_identity_audited(
        store,
        vec![
            put_user(user("bob"), Expect::Absent),
            put_user(alice.clone(), Expect::Absent),
            put_role(role("ops"), Expect::Absent),
            put_role(role("auditor"), Expect::Absent),
            create_binding(binding("b2", Subject::User("bob".into()), "ops", "prod")),
            create_binding(binding("b1", Subject::Token("t1".into()), "auditor", "*")),
            create_token(expiring.clone()),
            create_token(token("t1", &"a".repeat(64))),
        ],
    )
    .await;
    assert_eq!(committed.revision, 1);
    assert_eq!(
        committed.audit.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );

    let state = load_identity(store).await;
    assert_eq!(state.revision, 1);
    assert_eq!(identity_revision(store).await, 1);
    alice.version = 1;
    let mut bob = user("bob");
    bob.version = 1;
    assert_eq!(state.users, [alice.clone(), bob], "users in name order");
    assert_eq!(names(&state.roles, |r| &r.name), ["auditor", "ops"]);
    assert!(state.roles.iter().all(|r| r.version == 1));
    let mut ops = role("ops");
    ops.version = 1;
    assert_eq!(state.roles[1], ops, "every role field preserved");
    assert_eq!(
        state.bindings,
        [
            binding("b1", Subject::Token("t1".into()), "auditor", "*"),
            binding("b2", Subject::User("bob".into()), "ops", "prod"),
        ],
        "bindings in id order, every field preserved"
    );
    assert_eq!(
        state.tokens,
        [token("t1", &"a".repeat(64)), expiring],
        "tokens in id order, every field preserved"
    );

    // An update replaces the state, sets the version and keeps created_at; Any upserts.
    let mut update = alice.clone();
    update.display_name = "Alice".into();
    update.disabled = true;
    update.password_hash = "$argon2id$new".into();
    update.created_at = 42;
    update.updated_at = T0 + 1;
    update.password_changed_at = T0 + 1;
    update.version = 99;
    let mut ops2 = role("ops");
    ops2.permissions = [Permission::Evaluate].into_iter().collect();
    ops2.created_at = 42;
    ops2.updated_at = T0 + 2;
    let committed = commit_identity_audited(
        store,
        vec![
            put_user(update.clone(), Expect::Version(1)),
            put_role(ops2.clone(), Expect::Exists),
            put_user(user("carol"), Expect::Any),
            put_user(user("bob"), Expect::Any),
        ],
    )
    .await;
    assert_eq!(committed.revision, 2);
    let state = load_identity(store).await;
    update.version = 2;
    update.created_at = T0;
    assert_eq!(
        state.users[0], update,
        "created_at survives, the rest is the writer's"
    );
    ops2.version = 2;
    ops2.created_at = T0;
    assert_eq!(state.roles[1], ops2);
    assert_eq!(
        state
            .users
            .iter()
            .map(|u| (u.name.as_str(), u.version))
            .collect::<Vec<_>>(),
        [("alice", 2), ("bob", 2), ("carol", 1)]
    );

    let committed = commit_identity_audited(
        store,
        vec![
            IdentityWrite::DeleteUser {
                name: "bob".into(),
                expect: Expect::Version(2),
            },
            IdentityWrite::DeleteRole {
                name: "auditor".into(),
                expect: Expect::Any,
            },
            IdentityWrite::DeleteBinding { id: "b1".into() },
            IdentityWrite::DeleteToken { id: "t2".into() },
        ],
    )
    .await;
    assert_eq!(committed.revision, 3);
    let state = load_identity(store).await;
    assert_eq!(names(&state.users, |u| &u.name), ["alice", "carol"]);
    assert_eq!(names(&state.roles, |r| &r.name), ["ops"]);
    assert_eq!(names(&state.bindings, |b| &b.id), ["b2"]);
    assert_eq!(names(&state.tokens, |t| &t.id), ["t1"]);
    assert_eq!(state.revision, 3);

    // A deleted user or role can be created again, from version 1.
    commit_identity_audited(store, vec![put_user(user("bob"), Expect::Absent)]).await;
    let state = load_identity(store).await;
    assert_eq!(state.users[1].version, 1);

    // Identity writes are not flag changes: no flag revision, nothing in the change feed.
    assert_eq!(current(store).await, 0);
    assert!(all_changes(store).await.is_empty());
}

pub(crate) async fn stale_identity_versions_are_rejected_and_nothing_is_written<
    S: IdentityBackend,
>(
    store: &S,
) {
    commit_identity_audited(
        store,
        vec![
            put_user(user("alice"), Expect::Absent),
            put_role(role("ops"), Expect::Absent),
        ],
    )
    .await;
    commit_identity_audited(store, vec![put_user(user("alice"), Expect::Version(1))]).await;
    let before = observe_identity(store).await;

    let mut stale = user("alice");
    stale.display_name = "lost update".into();
    assert_eq!(
        identity_refused(store, vec![put_user(stale, Expect::Version(1))]).await,
        identity_mismatch(ResourceKind::User, "alice", 1, 2)
    );
    assert_eq!(
        identity_refused(store, vec![put_role(role("ops"), Expect::Version(3))]).await,
        identity_mismatch(ResourceKind::Role, "ops", 3, 1)
    );
    assert_eq!(
        identity_refused(
            store,
            vec![IdentityWrite::DeleteUser {
                name: "alice".into(),
                expect: Expect::Version(1),
            }]
        )
        .await,
        identity_mismatch(ResourceKind::User, "alice", 1, 2)
    );
    assert_eq!(
        identity_refused(
            store,
            vec![IdentityWrite::DeleteRole {
                name: "ops".into(),
                expect: Expect::Version(2),
            }]
        )
        .await,
        identity_mismatch(ResourceKind::Role, "ops", 2, 1)
    );
    assert_eq!(observe_identity(store).await, before);
}

pub(crate) async fn creating_an_existing_identity_resource_is_already_exists<S: IdentityBackend>(
    store: &S,
) {
    commit_identity_audited(
        store,
        vec![
            put_user(user("alice"), Expect::Absent),
            put_role(role("ops"), Expect::Absent),
            create_binding(binding("b1", Subject::User("alice".into()), "ops", "*")),
            create_token(token("t1", "d1")),
        ],
    )
    .await;
    let before = observe_identity(store).await;

    let cases = [
        (
            put_user(user("alice"), Expect::Absent),
            identity_exists(ResourceKind::User, "alice"),
        ),
        (
            put_role(role("ops"), Expect::Absent),
            identity_exists(ResourceKind::Role, "ops"),
        ),
        (
            create_binding(binding("b1", Subject::Token("t1".into()), "viewer", "qa")),
            identity_exists(ResourceKind::Binding, "b1"),
        ),
        (
            create_token(token("t1", "a-new-digest")),
            identity_exists(ResourceKind::Token, "t1"),
        ),
        // Another id with a digest already in use: one secret must never name two tokens.
        (
            create_token(token("t9", "d1")),
            identity_exists(ResourceKind::Token, "t9"),
        ),
    ];
    for (write, expected) in cases {
        assert_eq!(identity_refused(store, vec![write]).await, expected);
    }
    // The same digest twice in one batch.
    assert_eq!(
        identity_refused(
            store,
            vec![
                create_token(token("t3", "d3")),
                create_token(token("t4", "d3"))
            ]
        )
        .await,
        identity_exists(ResourceKind::Token, "t4")
    );
    assert_eq!(observe_identity(store).await, before);
}

pub(crate) async fn conditions_on_missing_identity_resources_are_not_found<S: IdentityBackend>(
    store: &S,
) {
    commit_identity_audited(store, vec![put_user(user("alice"), Expect::Absent)]).await;
    let before = observe_identity(store).await;

    let mut cases = Vec::new();
    for expect in [Expect::Version(1), Expect::Exists] {
        cases.push((
            put_user(user("ghost"), expect),
            identity_not_found(ResourceKind::User, "ghost"),
        ));
        cases.push((
            put_role(role("ghost"), expect),
            identity_not_found(ResourceKind::Role, "ghost"),
        ));
    }
    // Deleting what is not there is NotFound whatever the condition.
    for expect in [
        Expect::Version(1),
        Expect::Exists,
        Expect::Any,
        Expect::Absent,
    ] {
        cases.push((
            IdentityWrite::DeleteUser {
                name: "ghost".into(),
                expect,
            },
            identity_not_found(ResourceKind::User, "ghost"),
        ));
        cases.push((
            IdentityWrite::DeleteRole {
                name: "ghost".into(),
                expect,
            },
            identity_not_found(ResourceKind::Role, "ghost"),
        ));
    }
    cases.push((
        IdentityWrite::DeleteBinding { id: "nope".into() },
        identity_not_found(ResourceKind::Binding, "nope"),
    ));
    cases.push((
        IdentityWrite::DeleteToken { id: "nope".into() },
        identity_not_found(ResourceKind::Token, "nope"),
    ));
    for (write, expected) in cases {
        let shown = format!("{write:?}");
        assert_eq!(
            identity_refused(store, vec![write]).await,
            expected,
            "{shown}"
        );
    }
    // A binding or token deleted earlier in the same batch is gone for the next write.
    assert_eq!(
        identity_refused(
            store,
            vec![
                create_token(token("t1", "d1")),
                IdentityWrite::DeleteToken { id: "t1".into() },
                IdentityWrite::DeleteToken { id: "t1".into() },
            ]
        )
        .await,
        identity_not_found(ResourceKind::Token, "t1")
    );
    assert_eq!(observe_identity(store).await, before);
}

pub(crate) async fn a_failing_identity_batch_writes_nothing_and_keeps_the_revision<
    S: IdentityBackend,
>(
    store: &S,
) {
    commit_identity_audited(store, vec![put_user(user("alice"), Expect::Absent)]).await;
    let before = observe_identity(store).await;
    assert_eq!(before.revision, 1);

    // The second write fails: the first, valid on its own, is not written either.
    assert_eq!(
        identity_refused(
            store,
            vec![
                put_user(user("carol"), Expect::Absent),
                put_user(user("alice"), Expect::Absent),
            ]
        )
        .await,
        identity_exists(ResourceKind::User, "alice")
    );
    // Every kind of write before a failure is undone.
    assert_eq!(
        identity_refused(
            store,
            vec![
                put_role(role("ops"), Expect::Absent),
                create_binding(binding("b1", Subject::User("alice".into()), "ops", "*")),
                create_token(token("t1", "d1")),
                put_user(user("alice"), Expect::Version(1)),
                IdentityWrite::DeleteUser {
                    name: "alice".into(),
                    expect: Expect::Any,
                },
                IdentityWrite::DeleteToken { id: "t2".into() },
            ]
        )
        .await,
        identity_not_found(ResourceKind::Token, "t2")
    );
    // Writes apply in order: the second sees the first's version.
    assert_eq!(
        identity_refused(
            store,
            vec![
                put_user(user("alice"), Expect::Version(1)),
                put_user(user("alice"), Expect::Version(1)),
            ]
        )
        .await,
        identity_mismatch(ResourceKind::User, "alice", 1, 2)
    );
    assert_eq!(observe_identity(store).await, before);

    // And the store still takes writes, at the next revision.
    let c = commit_identity_audited(
        store,
        vec![
            put_user(user("alice"), Expect::Version(1)),
            put_user(user("alice"), Expect::Version(2)),
        ],
    )
    .await;
    assert_eq!(c.revision, 2);
    assert_eq!(load_identity(store).await.users[0].version, 3);
}

pub(crate) async fn the_identity_revision_moves_once_per_batch_with_writes<S: IdentityBackend>(
    store: &S,
) {
    assert_eq!(identity_revision(store).await, 0);
    assert_eq!(load_identity(store).await.revision, 0);

    let c = commit_identity_audited(
        store,
        vec![
            put_user(user("alice"), Expect::Absent),
            put_user(user("bob"), Expect::Absent),
            create_token(token("t1", "d1")),
        ],
    )
    .await;
    assert_eq!(c.revision, 1, "one bump for a batch of three");
    let c = commit_identity_audited(store, vec![put_user(user("carol"), Expect::Absent)]).await;
    assert_eq!(c.revision, 2);

    // Audit-only batches (failed logins) append their events and leave the revision alone.
    let c = store
        .commit_identity(
            Vec::new(),
            vec![failed_login("mallory"), failed_login("alice")],
        )
        .await
        .expect("audit-only identity commit");
    assert_eq!(c.revision, 2);
    assert_eq!(
        c.audit.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [5, 6],
        "the events continue the log"
    );
    // A batch with nothing at all changes nothing.
    let c = store
        .commit_identity(Vec::new(), Vec::new())
        .await
        .expect("empty identity commit");
    assert_eq!((c.revision, c.audit.len()), (2, 0));
    assert_eq!(all_audit(store).await.len(), 6);

    // Flag commits move the flag revision only, and identity commits the identity one only.
    commit_audited(store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    assert_eq!(identity_revision(store).await, 2);
    assert_eq!(current(store).await, 1);
    commit_identity_audited(store, vec![put_role(role("ops"), Expect::Absent)]).await;
    assert_eq!(current(store).await, 1);
    assert_eq!(identity_revision(store).await, 3);
    assert_eq!(load_identity(store).await.revision, 3);
}

pub(crate) async fn identity_and_flag_audit_events_share_one_hash_chain<S: IdentityBackend>(
    store: &S,
) {
    let flag1 = commit_audited(
        store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "a"), Expect::Absent),
        ],
    )
    .await;
    let identity1 = commit_identity_audited(
        store,
        vec![
            put_user(user("alice"), Expect::Absent),
            create_binding(binding(
                "b1",
                Subject::User("alice".into()),
                "editor",
                "prod",
            )),
        ],
    )
    .await;
    let login = store
        .commit_identity(Vec::new(), vec![failed_login("alice")])
        .await
        .expect("audit-only identity commit");
    let flag_audit_only = store
        .commit(
            Vec::new(),
            vec![event("export", ResourceKind::Namespace, "prod", "prod")],
        )
        .await
        .expect("audit-only flag commit");
    let flag2 = commit_audited(store, vec![delete_flag("prod", "a", Expect::Version(1))]).await;
    let identity2 = commit_identity_audited(store, vec![create_token(token("t1", "d1"))]).await;

    let audit = all_audit(store).await;
    assert_chain_verifies(&audit);
    // What each commit returned is what the log holds, in commit order.
    let returned: Vec<AuditEvent> = [
        flag1.audit,
        identity1.audit,
        login.audit,
        flag_audit_only.audit,
        flag2.audit,
        identity2.audit,
    ]
    .concat();
    assert_eq!(audit, returned);
    assert_eq!(
        audit.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            ResourceKind::Namespace,
            ResourceKind::Flag,
            ResourceKind::User,
            ResourceKind::Binding,
            ResourceKind::User,
            ResourceKind::Namespace,
            ResourceKind::Flag,
            ResourceKind::Token,
        ]
    );
    // Identity events keep what the writer recorded and filter like any other.
    let users = store
        .list_audit(&AuditQuery {
            kind: Some(ResourceKind::User),
            ..AuditQuery::default()
        })
        .await
        .expect("list_audit");
    assert_eq!(
        users.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["user.put", "user.login_failed"]
    );
    assert!(
        users
            .iter()
            .all(|e| e.namespace.is_empty() && e.key == "alice")
    );
}

/// `stores` are handles on one underlying store (one, or several standing for replicas).
/// Writers race flag commits, identity commits and audit-only identity commits; the log must
/// come out as one chain holding every event once.
pub(crate) async fn concurrent_identity_and_flag_commits_keep_one_hash_chain<S: IdentityBackend>(
    stores: &[Arc<S>],
) {
    commit_audited(&*stores[0], vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&stores[usize::try_from(writer).unwrap_or(0) % stores.len()]);
        tasks.spawn(async move {
            for i in 0..COMMITS_PER_TASK {
                let name = format!("w{writer}-{i}");
                match writer % 3 {
                    0 => {
                        commit_audited(
                            &*store,
                            vec![put_flag(flag("prod", &name), Expect::Absent)],
                        )
                        .await;
                    }
                    1 => {
                        commit_identity_audited(
                            &*store,
                            vec![put_user(user(&name), Expect::Absent)],
                        )
                        .await;
                    }
                    _ => {
                        store
                            .commit_identity(Vec::new(), vec![failed_login(&name)])
                            .await
                            .unwrap_or_else(|e| panic!("audit-only identity commit: {e}"));
                    }
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| panic!("writer task: {e}"));
    }

    let per_kind = |k: u64| (0..WRITERS).filter(|w| w % 3 == k).count() * COMMITS_PER_TASK;
    let audit = all_audit(&*stores[0]).await;
    assert_chain_verifies(&audit);
    assert_eq!(audit.len(), 1 + per_kind(0) + per_kind(1) + per_kind(2));
    let ids: BTreeSet<&str> = audit.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), audit.len(), "every event once");
    let state = load_identity(&*stores[0]).await;
    assert_eq!(state.users.len(), per_kind(1));
    assert_eq!(
        usize::try_from(state.revision).unwrap_or(0),
        per_kind(1),
        "one identity revision per batch with writes"
    );
    assert_eq!(
        usize::try_from(current(&*stores[0]).await).unwrap_or(0),
        1 + per_kind(0)
    );
}

/// `stores` are handles on one underlying store. In each round, [`WRITERS`] tasks released at
/// once replace the same user, all expecting the version the round starts at: exactly one may
/// win, and every other must be told the version moved.
pub(crate) async fn concurrent_identity_compare_and_set_has_exactly_one_winner_per_version<
    S: IdentityBackend,
>(
    stores: &[Arc<S>],
) {
    let first = &*stores[0];
    commit_identity_audited(first, vec![put_user(user("hot"), Expect::Absent)]).await;
    let writers = usize::try_from(WRITERS).unwrap_or(8);
    for version in 1..=IDENTITY_ROUNDS {
        let start = Arc::new(tokio::sync::Barrier::new(writers));
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..writers {
            let store = Arc::clone(&stores[writer % stores.len()]);
            let start = Arc::clone(&start);
            tasks.spawn(async move {
                let mut next = user("hot");
                next.display_name = format!("writer {writer} at {version}");
                let write = put_user(next, Expect::Version(version));
                let audit = vec![identity_event_for(&write)];
                start.wait().await;
                (writer, store.commit_identity(vec![write], audit).await)
            });
        }
        let mut winners = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done.unwrap_or_else(|e| panic!("writer task: {e}")) {
                (writer, Ok(_)) => winners.push(writer),
                (_, Err(e)) => assert_eq!(
                    e,
                    identity_mismatch(ResourceKind::User, "hot", version, version + 1)
                ),
            }
        }
        assert_eq!(winners.len(), 1, "version {version}: winners {winners:?}");
        let hot = load_identity(first).await.users.remove(0);
        assert_eq!(hot.version, version + 1);
        assert_eq!(
            hot.display_name,
            format!("writer {} at {version}", winners[0]),
            "the winner's write is the one stored"
        );
    }
    assert_eq!(identity_revision(first).await, IDENTITY_ROUNDS + 1);
    let audit = all_audit(first).await;
    assert_eq!(
        u64::try_from(audit.len()).unwrap_or(0),
        IDENTITY_ROUNDS + 1,
        "one audit event per winner, none for the losers"
    );
    assert_chain_verifies(&audit);
}

/// `open` must open the same underlying store every time it is called.
pub(crate) async fn identity_survives_reopening_the_store<S, F, Fut>(open: F)
where
    S: IdentityBackend,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let store = open().await;
    commit_identity_audited(
        &store,
        vec![
            put_user(user("alice"), Expect::Absent),
            put_role(role("ops"), Expect::Absent),
            create_binding(binding("b1", Subject::User("alice".into()), "ops", "*")),
            create_token(token("t1", "d1")),
        ],
    )
    .await;
    commit_identity_audited(&store, vec![put_user(user("alice"), Expect::Version(1))]).await;
    let before = observe_identity(&store).await;
    drop(store);

    let store = open().await;
    assert_eq!(observe_identity(&store).await, before);
    // The revision and the chain continue; the digest is still taken.
    let next = commit_identity_audited(&store, vec![put_user(user("bob"), Expect::Absent)]).await;
    assert_eq!(next.revision, before.revision + 1);
    assert_eq!(
        identity_refused(&store, vec![create_token(token("t2", "d1"))]).await,
        identity_exists(ResourceKind::Token, "t2")
    );
    assert_chain_verifies(&all_audit(&store).await);
}
