//! Runs the conformance suite against the etcd backend, on one etcd per test process
//! (`vexil_testkit::etcd`: `VEXIL_TEST_ETCD`, or a private server) with a fresh key prefix per
//! test, plus what only a shared cluster can show: two stores (two replicas) on one prefix, a
//! subscriber woken by another store's commits (the watch, not the poll), prefixes that do not
//! see each other, and an unreachable cluster reported as `Unavailable`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vexil_store::etcd::EtcdStore;
use vexil_store::{ChangeFeed, Expect, FlagStore, StoreError};

use crate::conformance::{
    self, assert_chain_verifies, commit_audited, flag, namespace, put_flag, put_ns,
};

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// How soon another store's subscriber must hear of a commit: well under the 1 s poll, so only
/// the watch can meet it reliably.
const NOTIFIED_WITHIN: Duration = Duration::from_millis(400);

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

async fn open(prefix: &str) -> EtcdStore {
    EtcdStore::connect(&[endpoint().await], prefix)
        .await
        .unwrap_or_else(|e| panic!("connect to etcd under {prefix}: {e}"))
}

/// A store on a new, empty prefix.
async fn fresh() -> EtcdStore {
    open(&vexil_testkit::etcd::unique_prefix()).await
}

/// Instantiates each named conformance check as a test on a fresh prefix.
macro_rules! conformance_tests {
    ($($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let store = fresh().await;
                conformance::$check(&store).await;
            }
        )+
    };
}

/// The suite, on the backend as the server would run it.
mod suite {
    use super::*;

    conformance::with_flag_store_checks!(conformance_tests!());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice() {
        let store = Arc::new(fresh().await);
        conformance::concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice(store)
            .await;
    }

    #[tokio::test]
    async fn state_survives_reopening_the_store() {
        let prefix = vexil_testkit::etcd::unique_prefix();
        conformance::state_survives_reopening_the_store(|| {
            let prefix = prefix.clone();
            async move { open(&prefix).await }
        })
        .await;
    }
}

/// Two stores on one prefix stand for two replicas: the txn compares, not anything in-process,
/// must keep CAS, revisions and the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_prefix_serialise_their_writes() {
    let prefix = vexil_testkit::etcd::unique_prefix();
    let a = open(&prefix).await;
    let b = open(&prefix).await;
    commit_audited(
        &a,
        vec![
            put_ns(namespace("prod"), Expect::Absent),
            put_flag(flag("prod", "hot"), Expect::Absent),
        ],
    )
    .await;
    let per_store = 30;
    let (ra, rb) = tokio::join!(
        tokio::spawn({
            let a = a.clone();
            async move { conformance::cas_increments(&a, 0, per_store).await }
        }),
        tokio::spawn({
            let b = b.clone();
            async move { conformance::cas_increments(&b, 1, per_store).await }
        }),
    );
    ra.expect("writer a");
    rb.expect("writer b");
    let hot = a.get_flag("prod", "hot").await.expect("get");
    assert_eq!(hot.version, 2 * per_store + 1);
    assert_eq!(
        hot.definition.metadata.get("count"),
        Some(&serde_json::json!(2 * per_store))
    );
    assert_eq!(b.get_flag("prod", "hot").await.expect("get"), hot);
    let revision = a.current_revision().await.expect("revision");
    assert_eq!(b.current_revision().await.expect("revision"), revision);
    let mut revisions: Vec<u64> = b
        .changes_since(0, usize::MAX)
        .await
        .expect("changes")
        .iter()
        .map(|c| c.revision)
        .collect();
    assert!(revisions.is_sorted());
    revisions.dedup();
    assert_eq!(revisions, (1..=revision).collect::<Vec<_>>());
    assert_chain_verifies(&conformance::all_audit(&b).await);
}

/// Waits until `rx` shows at least `revision` and returns how long that took.
async fn time_until(rx: &mut tokio::sync::watch::Receiver<u64>, revision: u64) -> Duration {
    let start = Instant::now();
    let waited = tokio::time::timeout(PATIENCE, rx.wait_for(|r| *r >= revision))
        .await
        .map(|seen| seen.map(|_| ()));
    match waited {
        Ok(Ok(())) => start.elapsed(),
        Ok(Err(e)) => panic!("the revision channel closed: {e}"),
        Err(_) => panic!(
            "still at {} after {PATIENCE:?}, expected {revision}",
            *rx.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stores_commits_wake_a_subscriber_through_the_watch() {
    let prefix = vexil_testkit::etcd::unique_prefix();
    let writer = open(&prefix).await;
    let reader = open(&prefix).await;
    let mut rx = reader.subscribe();
    let c = commit_audited(&writer, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    time_until(&mut rx, c.revision).await;
    // Commits at random points of the poll cycle: the poll alone would average 500 ms.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(137 * (i + 1))).await;
        let c = commit_audited(
            &writer,
            vec![put_flag(flag("prod", &format!("f{i}")), Expect::Absent)],
        )
        .await;
        let took = time_until(&mut rx, c.revision).await;
        assert!(
            took < NOTIFIED_WITHIN,
            "commit {i} reached the other store's subscriber after {took:?}"
        );
    }
}

#[tokio::test]
async fn stores_on_different_prefixes_do_not_see_each_other() {
    let a = fresh().await;
    let b = fresh().await;
    commit_audited(&a, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    assert_eq!(b.current_revision().await.expect("revision"), 0);
    assert!(b.list_namespaces().await.expect("list").is_empty());
    // The same key is free under the other prefix.
    let c = commit_audited(&b, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    assert_eq!(c.revision, 1);
}

#[tokio::test]
async fn an_unreachable_cluster_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let result = tokio::time::timeout(
        PATIENCE * 2,
        EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "/vexil/"),
    )
    .await
    .expect("connect gives up in time");
    match result {
        Err(StoreError::Unavailable { .. }) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(store) => match store.current_revision().await {
            Err(StoreError::Unavailable { .. }) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        },
    }
}

/// A batch (an import) of 110 flags fits one transaction under etcd's default limits: each
/// write costs one operation and one compare.
#[tokio::test]
async fn a_batch_of_110_flags_commits_atomically() {
    let store = fresh().await;
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let writes: Vec<_> = (0..110)
        .map(|i| put_flag(flag("prod", &format!("f{i:03}")), Expect::Absent))
        .collect();
    let committed = commit_audited(&store, writes).await;
    assert_eq!(committed.results.len(), 110);
    let changes = store
        .changes_since(committed.revision - 1, usize::MAX)
        .await
        .expect("changes");
    assert_eq!(changes.len(), 110);
    assert!(changes.iter().all(|c| c.revision == committed.revision));
    assert_eq!(
        store.list_segments("prod").await.expect("segments").len(),
        0
    );
    let all = store.load_namespace("prod").await.expect("load");
    assert_eq!(all.flags.len(), 110);
}

/// A batch beyond etcd's transaction limits is refused whole, with an error that says so (a
/// 400 at the API, not a 500), and leaves nothing behind.
#[tokio::test]
async fn a_batch_over_the_transaction_limit_is_too_large_and_writes_nothing() {
    let store = fresh().await;
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let before = store.current_revision().await.expect("revision");
    let writes: Vec<_> = (0..300)
        .map(|i| put_flag(flag("prod", &format!("f{i:03}")), Expect::Absent))
        .collect();
    let audit = writes.iter().map(conformance::event_for).collect();
    let err = store.commit(writes, audit).await.expect_err("too large");
    assert!(
        matches!(&err, StoreError::TooLarge { message } if message.contains("--max-txn-ops")),
        "{err:?}"
    );
    assert_eq!(store.current_revision().await.expect("revision"), before);
    assert!(
        store
            .load_namespace("prod")
            .await
            .expect("load")
            .flags
            .is_empty()
    );
    assert_eq!(conformance::all_audit(&store).await.len(), 1);
}

/// The change log keeps the last N commits; a consumer further behind is told to reload
/// instead of getting a log with a hole in it.
#[tokio::test]
async fn a_consumer_behind_the_retained_change_log_is_told_to_reload() {
    let store = fresh().await;
    store.set_change_retention(3);
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    for i in 0..5 {
        let mut f = flag("prod", "hot");
        f.name = format!("take {i}");
        commit_audited(&store, vec![put_flag(f, Expect::Any)]).await;
    }
    let current = store.current_revision().await.expect("revision");
    assert_eq!(current, 6);
    // Revisions 4, 5 and 6 are kept: resuming after 3 works, after 2 does not.
    let kept = store.changes_since(3, usize::MAX).await.expect("changes");
    assert_eq!(
        kept.iter().map(|c| c.revision).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    for after in [0, 2] {
        match store.changes_since(after, usize::MAX).await {
            Err(StoreError::ChangesCompacted { after: a, oldest }) => {
                assert_eq!((a, oldest), (after, 4));
            }
            other => panic!("changes after {after}: {other:?}"),
        }
    }
    assert!(
        store
            .changes_since(current, 10)
            .await
            .expect("up to date")
            .is_empty()
    );
    // The trimmed commits are gone from etcd, not just hidden.
    let mut raw = etcd_client::Client::connect([endpoint().await], None)
        .await
        .expect("client");
    let prefix = format!("{}change/", store.prefix());
    let count = raw
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await
        .expect("count")
        .count();
    assert_eq!(count, 3);
}
