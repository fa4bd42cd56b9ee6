//! Runs the conformance suite against the distributed mode's store (flag state on a fresh etcd
//! key prefix, audit and identity in a fresh PostgreSQL database, per test), plus what only
//! the outbox relay can show: an outbox entry delivered twice is recorded once, two replicas
//! relaying at once record each event once, and events written while the relay cannot reach
//! PostgreSQL wait in etcd until it can.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use vexil_store::distributed::DistributedStore;
use vexil_store::etcd::{AuditMode, EtcdStore};
use vexil_store::postgres::PostgresStore;
use vexil_store::{Expect, FlagStore};
use vexil_testkit::postgres::{Database, fresh_database};

use crate::conformance::{
    self, all_audit, assert_chain_verifies, commit_audited, flag, namespace, put_flag, put_ns,
};

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

/// The test etcd's client URL (found or started once per process).
async fn endpoint() -> String {
    match tokio::task::spawn_blocking(vexil_testkit::etcd::endpoint).await {
        Ok(url) => url,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("finding etcd: {e}"),
        },
    }
}

async fn open(prefix: &str, url: &str) -> DistributedStore {
    DistributedStore::connect(&[endpoint().await], prefix, url)
        .await
        .unwrap_or_else(|e| panic!("connect the distributed store: {e}"))
}

/// A store on a new prefix and a new database; the guard drops the database.
async fn fresh() -> (DistributedStore, Database) {
    let (url, db) = fresh_database().await;
    (open(&vexil_testkit::etcd::unique_prefix(), &url).await, db)
}

/// Instantiates each named conformance check as a test on a fresh prefix and database.
macro_rules! conformance_tests {
    ($($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, db) = fresh().await;
                conformance::$check(&store).await;
                store.postgres().close().await;
                drop(db);
            }
        )+
    };
}

/// The suite, on the store as the server runs it in the distributed mode.
mod suite {
    use super::*;

    conformance::with_flag_store_checks!(conformance_tests!());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice() {
        let (store, db) = fresh().await;
        let store = Arc::new(store);
        conformance::concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice(
            Arc::clone(&store),
        )
        .await;
        store.postgres().close().await;
        drop(db);
    }
}

/// The identity checks: identity lives in PostgreSQL, and shares the audit chain with the
/// relayed flag events.
mod identity {
    use super::*;

    conformance_tests!(
        identity_round_trips_through_create_update_and_delete,
        the_identity_revision_moves_once_per_batch_with_writes,
        identity_and_flag_audit_events_share_one_hash_chain,
    );
}

/// Waits until `store`'s audit log holds `n` events.
async fn audit_reaches(store: &DistributedStore, n: usize) -> Vec<vexil_core::domain::AuditEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let events = all_audit(store).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the audit log holds {} events, not {n}, after {PATIENCE:?}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A relay that crashed after recording an entry but before deleting it delivers the entry
/// again; the events are recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_entry_delivered_twice_is_recorded_once() {
    let (url, db) = fresh_database().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let store = open(&prefix, &url).await;
    commit_audited(
        &store,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "a"), Expect::Absent),
        ],
    )
    .await;
    let before = all_audit(&store).await;
    assert_eq!(before.len(), 2);
    assert!(store.etcd().outbox(100).await.expect("outbox").is_empty());

    // Put the (already relayed) events back in the outbox, as if the delete had never run.
    let mut raw = Client::connect([endpoint().await], None)
        .await
        .expect("etcd client");
    let unsequenced: Vec<_> = before
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.seq = 0;
            e.prev_hash.clear();
            e.hash.clear();
            e
        })
        .collect();
    let key = store.etcd().outbox_key(1, &unsequenced[0].id);
    raw.put(key, serde_json::to_vec(&unsequenced).expect("encode"), None)
        .await
        .expect("put");
    // The relay that crashed is gone; a restarted replica finds the entry (a live store has
    // moved its outbox listing past the keys it deleted itself, which never reappear).
    let restarted = open(&prefix, &url).await;
    assert_eq!(restarted.relay().await.expect("relay"), 1);
    assert!(
        restarted
            .etcd()
            .outbox(100)
            .await
            .expect("outbox")
            .is_empty()
    );
    let after = all_audit(&store).await;
    assert_eq!(after, before, "a redelivered entry must not add events");
    restarted.postgres().close().await;
    store.postgres().close().await;
    drop(db);
}

/// Three replicas' relays race for the same outbox: every event is recorded exactly once, in
/// one verifiable chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_relaying_at_once_record_each_event_once() {
    let (url, db) = fresh_database().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let ep = vec![endpoint().await];
    // Writers whose commits do not relay (plain outbox-mode etcd stores), and three relays.
    let writer = EtcdStore::connect_with(&ep, &prefix, AuditMode::Outbox)
        .await
        .expect("etcd");
    let mut committed_ids = Vec::new();
    let c = commit_audited(&writer, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    committed_ids.extend(c.audit.into_iter().map(|e| e.id));
    let writes = 40;
    for i in 0..writes {
        let mut f = flag("prod", "hot");
        f.name = format!("take {i}");
        let c = commit_audited(&writer, vec![put_flag(f, Expect::Any)]).await;
        committed_ids.extend(c.audit.into_iter().map(|e| e.id));
    }
    assert_eq!(
        writer.outbox(1000).await.expect("outbox").len(),
        writes + 1,
        "every commit left one outbox entry"
    );
    let mut relays = Vec::new();
    for _ in 0..3 {
        let etcd = EtcdStore::connect_with(&ep, &prefix, AuditMode::Outbox)
            .await
            .expect("etcd");
        let pg = PostgresStore::connect(&url).await.expect("postgres");
        relays.push(DistributedStore::from_parts(etcd, pg));
    }
    let (r0, r1, r2) = tokio::join!(relays[0].relay(), relays[1].relay(), relays[2].relay());
    let total = r0.expect("relay 0") + r1.expect("relay 1") + r2.expect("relay 2");
    assert!(
        total > writes,
        "the relays moved {total} entries, fewer than the commits"
    );
    let events = audit_reaches(&relays[0], writes + 1).await;
    assert_eq!(events.len(), writes + 1, "each event exactly once");
    assert_chain_verifies(&events);
    // In commit order.
    let stored_ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(stored_ids, committed_ids);
    for r in &relays {
        r.postgres().close().await;
    }
    drop(db);
}

/// While PostgreSQL is unreachable the flag write still commits and its events wait in the
/// outbox; a relay that reaches PostgreSQL later records them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_in_the_outbox_while_postgres_is_unreachable() {
    let (url, db) = fresh_database().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let ep = vec![endpoint().await];
    let pg = PostgresStore::connect(&url).await.expect("postgres");
    let etcd = EtcdStore::connect_with(&ep, &prefix, AuditMode::Outbox)
        .await
        .expect("etcd");
    let store = DistributedStore::from_parts(etcd, pg.clone());
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    // Closing the pool makes every PostgreSQL call fail, as an outage would.
    pg.close().await;
    let committed = commit_audited(&store, vec![put_flag(flag("prod", "a"), Expect::Absent)]).await;
    assert_eq!(committed.audit.len(), 1);
    assert_eq!(
        committed.audit[0].seq, 0,
        "not yet sequenced: still in the outbox"
    );
    assert_eq!(store.get_flag("prod", "a").await.expect("get").version, 1);
    assert!(!store.relay_status().healthy);
    assert_eq!(store.etcd().outbox(100).await.expect("outbox").len(), 1);

    // "PostgreSQL is back": a replica with a working connection relays.
    let other = DistributedStore::from_parts(
        EtcdStore::connect_with(&ep, &prefix, AuditMode::Outbox)
            .await
            .expect("etcd"),
        PostgresStore::connect(&url).await.expect("postgres"),
    );
    let events = audit_reaches(&other, 2).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].id, committed.audit[0].id);
    assert_chain_verifies(&events);
    assert!(store.etcd().outbox(100).await.expect("outbox").is_empty());
    other.postgres().close().await;
    drop(db);
}
