//! Runs the conformance suite against the PostgreSQL backend, on a fresh database per test
//! (`vexil_testkit::postgres`: the machine's server, `VEXIL_TEST_PG_URL`, or a private
//! cluster), plus what only a shared server can show: two stores (two replicas) on one
//! database, a subscriber woken by another store's commits, a feed that survives losing its
//! connection, lock waits that end in `Unavailable`, and errors that name no secret.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use vexil_store::postgres::PostgresStore;
use vexil_store::{ChangeFeed, Expect, FlagQuery, FlagStore, StoreError};
use vexil_testkit::postgres::{Database, fresh_database};

use crate::conformance::{
    self, assert_chain_verifies, commit_audited, flag, namespace, put_flag, put_ns,
};

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(10);

/// How soon another store's subscriber must hear of a commit when notifications work: well
/// under the 1 s poll, so only LISTEN/NOTIFY can meet it reliably.
const NOTIFIED_WITHIN: Duration = Duration::from_millis(400);

/// A database written before the configs migration keeps its state and feed through it.
#[tokio::test]
async fn the_configs_migration_keeps_what_an_older_database_holds() {
    let (url, _db) = fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    let older = conformance::migrations_before_configs("postgres").await;
    older.run(&pool).await.expect("migrate up to 0002");
    let (_, doc) = conformance::pre_config_namespace();
    for (sql, bind) in [
        (
            "INSERT INTO namespaces (key, version, doc) VALUES ('prod', 1, $1)",
            Some(&doc),
        ),
        ("UPDATE revision_counter SET revision = 1", None),
        (
            "INSERT INTO revisions (revision, committed_at) VALUES (1, 0)",
            None,
        ),
        (
            "INSERT INTO changes (revision, ordinal, namespace, kind, key, after) \
             VALUES (1, 0, 'prod', 'namespace', 'prod', $1)",
            Some(&doc),
        ),
    ] {
        let query = sqlx::query(sql);
        let query = match bind {
            Some(doc) => query.bind(doc),
            None => query,
        };
        query
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;

    let store = PostgresStore::connect(&url)
        .await
        .expect("connect and migrate");
    conformance::a_migrated_database_keeps_its_state_and_takes_configs(&store).await;
}

/// A store on a new database; the guard drops the database.
async fn fresh() -> (PostgresStore, Database) {
    let (url, db) = fresh_database().await;
    let store = PostgresStore::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
    (store, db)
}

/// Instantiates each named conformance check as a test on a fresh database.
macro_rules! conformance_tests {
    ($($check:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, db) = fresh().await;
                conformance::$check(&store).await;
                store.close().await;
                drop(db);
            }
        )+
    };
}

/// The suite, on the backend as the server runs it.
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
        store.close().await;
        drop(db);
    }

    #[tokio::test]
    async fn state_survives_reopening_the_store() {
        let (url, db) = fresh_database().await;
        conformance::state_survives_reopening_the_store(|| {
            let url = url.clone();
            async move { PostgresStore::connect(&url).await.expect("connect") }
        })
        .await;
        drop(db);
    }
}

/// The identity checks, which etcd does not run.
mod identity {
    use super::*;

    conformance_tests!(
        identity_round_trips_through_create_update_and_delete,
        stale_identity_versions_are_rejected_and_nothing_is_written,
        creating_an_existing_identity_resource_is_already_exists,
        conditions_on_missing_identity_resources_are_not_found,
        a_failing_identity_batch_writes_nothing_and_keeps_the_revision,
        the_identity_revision_moves_once_per_batch_with_writes,
        identity_and_flag_audit_events_share_one_hash_chain,
    );

    /// Instantiates each named racing check on a fresh database, on `stores` handles: one
    /// store, or two stores standing for two replicas, whose commits only the row locks (not
    /// the in-process writer queue) serialise.
    macro_rules! racing_tests {
        ($stores:literal; $($name:ident => $check:ident),+ $(,)?) => {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (url, db) = fresh_database().await;
                    let mut stores = Vec::new();
                    for _ in 0..$stores {
                        let store = PostgresStore::connect(&url).await.expect("connect");
                        stores.push(Arc::new(store));
                    }
                    conformance::$check(&stores).await;
                    for store in stores {
                        store.close().await;
                    }
                    drop(db);
                }
            )+
        };
    }

    racing_tests!(1;
        concurrent_identity_and_flag_commits_keep_one_hash_chain
            => concurrent_identity_and_flag_commits_keep_one_hash_chain,
        concurrent_identity_compare_and_set_has_exactly_one_winner_per_version
            => concurrent_identity_compare_and_set_has_exactly_one_winner_per_version,
    );

    racing_tests!(2;
        two_stores_racing_identity_and_flag_commits_keep_one_hash_chain
            => concurrent_identity_and_flag_commits_keep_one_hash_chain,
        two_stores_racing_identity_compare_and_set_have_exactly_one_winner_per_version
            => concurrent_identity_compare_and_set_has_exactly_one_winner_per_version,
    );

    #[tokio::test]
    async fn identity_survives_reopening_the_store() {
        let (url, db) = fresh_database().await;
        conformance::identity_survives_reopening_the_store(|| {
            let url = url.clone();
            async move { PostgresStore::connect(&url).await.expect("connect") }
        })
        .await;
        drop(db);
    }
}

/// The harness gives the suite databases whose default collation is not byte order, so the
/// listing checks above prove that key order comes from `COLLATE "C"`, not from luck.
#[tokio::test]
async fn test_databases_sort_text_differently_from_byte_order() {
    let (url, db) = fresh_database().await;
    let mut conn = PgConnection::connect(&url).await.expect("connect");
    let (a_before_b,): (bool,) = sqlx::query_as("SELECT 'a' < 'B'")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert!(
        a_before_b,
        "the test database {} sorts in byte order; the collation checks prove nothing",
        db.name()
    );
    conn.close().await.expect("close");
}

/// Two stores on one database stand for two replicas: the revision row lock, not the
/// in-process writer queue, must keep CAS, revisions and the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_database_serialise_their_writes() {
    let (url, db) = fresh_database().await;
    let a = PostgresStore::connect(&url).await.expect("connect a");
    let b = PostgresStore::connect(&url).await.expect("connect b");
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
    // Every revision from 1 is there, in order: no gaps from out-of-order commits.
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
    a.close().await;
    b.close().await;
    drop(db);
}

/// Replicas started together on a new database: one migrates, the other waits for it (the
/// migrator's advisory lock), and both work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_connecting_at_once_to_a_new_database_migrate_it_once() {
    let (url, db) = fresh_database().await;
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
    );
    let (a, b, c) = (a.expect("a"), b.expect("b"), c.expect("c"));
    let first = commit_audited(&a, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let second = commit_audited(&b, vec![put_flag(flag("prod", "f"), Expect::Absent)]).await;
    assert_eq!((first.revision, second.revision), (1, 2));
    assert_eq!(c.get_flag("prod", "f").await.expect("get").version, 1);
    for store in [a, b, c] {
        store.close().await;
    }
    drop(db);
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
async fn another_stores_commits_wake_a_subscriber_by_notification() {
    let (url, db) = fresh_database().await;
    let writer = PostgresStore::connect(&url).await.expect("connect writer");
    let reader = PostgresStore::connect(&url).await.expect("connect reader");
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
    writer.close().await;
    reader.close().await;
    drop(db);
}

/// The number of feed listeners connected to the database `conn` is on.
async fn listeners(conn: &mut PgConnection) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'vexil-feed'",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("count listeners");
    n
}

/// Waits until `want` feed listeners are connected.
async fn await_listeners(conn: &mut PgConnection, want: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let n = listeners(conn).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{n} feed listeners after {PATIENCE:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_keeps_up_after_its_listen_connection_is_killed() {
    let (url, db) = fresh_database().await;
    let writer = PostgresStore::connect(&url).await.expect("connect writer");
    let reader = PostgresStore::connect(&url).await.expect("connect reader");
    let mut rx = reader.subscribe();
    commit_audited(&writer, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut admin = PgConnection::connect(&url).await.expect("connect admin");
    await_listeners(&mut admin, 2).await;

    // Kill both stores' listening sessions.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'vexil-feed'",
    )
    .execute(&mut admin)
    .await
    .expect("terminate listeners");

    // A commit right away lands while nobody may be listening: the poll (or the reconnect's
    // catch-up read) brings it anyway.
    let c = commit_audited(&writer, vec![put_flag(flag("prod", "a"), Expect::Absent)]).await;
    time_until(&mut rx, c.revision).await;

    // The listeners come back, and commits are announced promptly again.
    await_listeners(&mut admin, 2).await;
    for i in 0..3 {
        let c = commit_audited(
            &writer,
            vec![put_flag(flag("prod", &format!("b{i}")), Expect::Absent)],
        )
        .await;
        let took = time_until(&mut rx, c.revision).await;
        assert!(
            took < NOTIFIED_WITHIN,
            "commit {i} after the reconnect took {took:?}"
        );
    }
    admin.close().await.expect("close");
    writer.close().await;
    reader.close().await;
    drop(db);
}

/// A commit queued behind a lock it cannot get gives up at `lock_timeout` (set here through
/// the URL, which the store honours over its own default), with `Unavailable` and nothing
/// written.
#[tokio::test]
async fn a_commit_that_cannot_get_the_revision_lock_is_unavailable_and_writes_nothing() {
    let (url, db) = fresh_database().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    let short = format!("{url}{separator}options[lock_timeout]=300ms");
    let store = PostgresStore::connect(&short).await.expect("connect");
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let before = store.current_revision().await.expect("revision");

    let mut holder = PgConnection::connect(&url).await.expect("connect holder");
    sqlx::query("BEGIN")
        .execute(&mut holder)
        .await
        .expect("begin");
    sqlx::query("SELECT revision FROM revision_counter FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("lock");

    let started = Instant::now();
    let err = store
        .commit(
            vec![put_flag(flag("prod", "blocked"), Expect::Absent)],
            vec![conformance::event(
                "flag.put",
                vexil_core::domain::ResourceKind::Flag,
                "prod",
                "blocked",
            )],
        )
        .await
        .expect_err("must time out");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < PATIENCE);

    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("rollback");
    holder.close().await.expect("close");
    assert_eq!(store.current_revision().await.expect("revision"), before);
    assert!(matches!(
        store.get_flag("prod", "blocked").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(conformance::all_audit(&store).await.len(), 1);
    // The lock is free again, and so is the store.
    commit_audited(
        &store,
        vec![put_flag(flag("prod", "blocked"), Expect::Absent)],
    )
    .await;
    store.close().await;
    drop(db);
}

/// PostgreSQL `text` cannot hold NUL; names, descriptions and tags can. They must store,
/// filter and read back like any other character, never fail the commit.
#[tokio::test]
async fn names_descriptions_and_tags_with_nul_characters_store_and_filter() {
    let (store, db) = fresh().await;
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    let mut f = flag("prod", "nul");
    f.name = "before\0after".into();
    f.description = "\0".into();
    f.tags = vec!["a\0b".into(), "a".into()];
    commit_audited(&store, vec![put_flag(f.clone(), Expect::Absent)]).await;
    let got = store.get_flag("prod", "nul").await.expect("get");
    assert_eq!(
        (got.name.as_str(), got.tags.clone()),
        (f.name.as_str(), f.tags)
    );
    let keys = |tag: Option<&str>, text: Option<&str>| {
        let store = &store;
        let query = FlagQuery {
            tag: tag.map(String::from),
            text: text.map(String::from),
            ..FlagQuery::default()
        };
        async move {
            store
                .list_flags("prod", &query)
                .await
                .expect("list")
                .items
                .into_iter()
                .map(|f| f.key)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(keys(Some("a\0b"), None).await, ["nul"]);
    assert!(keys(Some("a\0"), None).await.is_empty());
    assert_eq!(keys(None, Some("E\0A")).await, ["nul"]);
    assert!(keys(None, Some("e\0x")).await.is_empty());
    store.close().await;
    drop(db);
}

#[tokio::test]
async fn an_unreachable_server_or_a_missing_database_is_unavailable() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");

    let (url, db) = fresh_database().await;
    let missing = url.replace(db.name(), "vexil_test_no_such_database");
    let err = PostgresStore::connect(&missing)
        .await
        .expect_err("no such database");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    drop(db);
}

#[tokio::test]
async fn a_malformed_url_is_refused_without_repeating_its_password() {
    let err = PostgresStore::connect("postgres://vexil:hunter2-secret@db:notaport/vexil")
        .await
        .expect_err("malformed");
    assert!(matches!(err, StoreError::Internal { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}
