//! Runs the conformance suite against the SQLite backend, on a fresh file per test (and again on
//! an in-memory database), plus what only a file-backed SQLite store can show: two stores on one
//! file, a missing parent directory, and commits surviving `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tempfile::TempDir;
use vexil_store::sqlite::SqliteStore;
use vexil_store::{ChangeFeed, Expect, FlagStore};

use crate::conformance::{
    self, assert_chain_verifies, commit_audited, flag, namespace, put_flag, put_ns,
};

/// A store on a new file in a temporary directory that lives as long as the store is used.
struct FileStore {
    store: SqliteStore,
    _dir: TempDir,
}

async fn file_store() -> FileStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("vexil.db"))
        .await
        .expect("open the store");
    FileStore { store, _dir: dir }
}

/// Instantiates each named conformance check as a test over `$open` (an expression yielding a
/// `(store, guard)` pair, the guard kept alive for the test's duration).
///
/// Checks after a `;` take shared handles (`&[Arc<_>]`) and race tasks on them, so they run
/// on a multi-threaded runtime, with one handle.
macro_rules! conformance_tests {
    ($open:expr; $($check:ident),+ $(,)?) => {
        conformance_tests!($open; $($check),+; );
    };
    ($open:expr; $($check:ident),+; $($racing:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (store, _guard) = $open;
                conformance::$check(&store).await;
            }
        )+
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $racing() {
                let (store, _guard) = $open;
                conformance::$racing(&[Arc::new(store)]).await;
            }
        )*
    };
}

macro_rules! all_conformance_tests {
    ($open:expr) => {
        conformance::with_flag_store_checks!(conformance_tests!($open;));

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice() {
            let (store, _guard) = $open;
            conformance::concurrent_compare_and_set_updates_lose_nothing_and_apply_nothing_twice(
                Arc::new(store),
            )
            .await;
        }
    };
}

/// Instantiates the identity checks (which etcd does not run) over `$open`, as
/// [`conformance_tests`] does.
macro_rules! identity_conformance_tests {
    ($open:expr) => {
        mod identity {
            use super::*;

            conformance_tests!(
                $open;
                identity_round_trips_through_create_update_and_delete,
                stale_identity_versions_are_rejected_and_nothing_is_written,
                creating_an_existing_identity_resource_is_already_exists,
                conditions_on_missing_identity_resources_are_not_found,
                a_failing_identity_batch_writes_nothing_and_keeps_the_revision,
                the_identity_revision_moves_once_per_batch_with_writes,
                identity_and_flag_audit_events_share_one_hash_chain;
                concurrent_identity_and_flag_commits_keep_one_hash_chain,
                concurrent_identity_compare_and_set_has_exactly_one_winner_per_version,
            );
        }
    };
}

/// The suite on a database file, the way the server runs.
mod file {
    use super::*;

    all_conformance_tests!({
        let f = file_store().await;
        (f.store, f._dir)
    });

    identity_conformance_tests!({
        let f = file_store().await;
        (f.store, f._dir)
    });

    #[tokio::test]
    async fn identity_survives_reopening_the_store() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("vexil.db");
        conformance::identity_survives_reopening_the_store(|| {
            let path = path.clone();
            async move { SqliteStore::open(&path).await.expect("open the store") }
        })
        .await;
    }

    #[tokio::test]
    async fn state_survives_reopening_the_store() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("vexil.db");
        conformance::state_survives_reopening_the_store(|| {
            let path = path.clone();
            async move { SqliteStore::open(&path).await.expect("open the store") }
        })
        .await;
    }
}

/// The suite on `open_in_memory`, which tests and throwaway servers use.
mod memory {
    use super::*;

    all_conformance_tests!((
        SqliteStore::open_in_memory()
            .await
            .expect("open an in-memory store"),
        ()
    ));

    identity_conformance_tests!((
        SqliteStore::open_in_memory()
            .await
            .expect("open an in-memory store"),
        ()
    ));
}

#[tokio::test]
async fn a_store_opens_in_a_directory_that_does_not_exist_yet() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("data").join("nested").join("vexil.db");
    let store = SqliteStore::open(&path).await.expect("open");
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    assert!(path.is_file());
    // WAL mode: committed pages sit in the -wal file until a checkpoint.
    assert!(
        path.with_extension("db-wal").is_file(),
        "WAL journal in use"
    );
    store.close().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_without_being_damaged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let garbage =
        b"this is not an SQLite database, and it is long enough to look like a header".repeat(64);
    std::fs::write(&path, &garbage).expect("write");
    let err = SqliteStore::open(&path).await.expect_err("must refuse");
    assert!(
        matches!(
            err,
            vexil_store::StoreError::Internal { .. } | vexil_store::StoreError::Unavailable { .. }
        ),
        "{err:?}"
    );
    assert_eq!(std::fs::read(&path).expect("read"), garbage);
}

/// Two stores on one file race identity and flag commits: SQLite's locking keeps one audit
/// chain and one winner per user version across processes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_race_identity_and_flag_commits_safely() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let a = Arc::new(SqliteStore::open(&path).await.expect("open a"));
    let b = Arc::new(SqliteStore::open(&path).await.expect("open b"));
    conformance::concurrent_identity_and_flag_commits_keep_one_hash_chain(&[a, b]).await;

    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let a = Arc::new(SqliteStore::open(&path).await.expect("open a"));
    let b = Arc::new(SqliteStore::open(&path).await.expect("open b"));
    conformance::concurrent_identity_compare_and_set_has_exactly_one_winner_per_version(&[a, b])
        .await;
}

/// Two stores on one file stand for two processes: SQLite's own locking (`BEGIN IMMEDIATE` and
/// the busy timeout), not the in-process writer lock, must keep CAS and the audit chain intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_serialise_their_writes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let a = SqliteStore::open(&path).await.expect("open a");
    let b = SqliteStore::open(&path).await.expect("open b");
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
    assert_eq!(b.get_flag("prod", "hot").await.expect("get"), hot);
    assert_eq!(
        a.current_revision().await.expect("revision"),
        b.current_revision().await.expect("revision")
    );
    assert_chain_verifies(&conformance::all_audit(&b).await);
}

/// The configs migration rebuilds the change log (SQLite cannot widen a CHECK in place), so it is
/// run on a database that already holds state and changes.
#[tokio::test]
async fn the_configs_migration_keeps_what_an_older_database_holds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options)
        .await
        .expect("open the file");
    let older = conformance::migrations_before_configs("sqlite").await;
    older.run(&pool).await.expect("migrate up to 0002");
    let (_, doc) = conformance::pre_config_namespace();
    for (sql, bind) in [
        (
            "INSERT INTO namespaces (key, version, doc) VALUES ('prod', 1, ?1)",
            Some(&doc),
        ),
        (
            "INSERT INTO revisions (revision, committed_at) VALUES (1, 0)",
            None,
        ),
        (
            "INSERT INTO changes (revision, ordinal, namespace, kind, key, after) \
             VALUES (1, 0, 'prod', 'namespace', 'prod', ?1)",
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

    let store = SqliteStore::open(&path).await.expect("open and migrate");
    conformance::a_migrated_database_keeps_its_state_and_takes_configs(&store).await;
}

/// Set in the child process of [`commits_survive_the_process_being_killed`] to the database path.
const CRASH_CHILD_DB: &str = "VEXIL_STORE_CRASH_CHILD_DB";
/// How the child reports each acknowledged commit on stdout.
const CRASH_CHILD_MARK: &str = "vexil-crash-child committed=";

/// The parent re-runs this test binary with only [`crash_child_commits_until_killed`] selected,
/// waits until the child has acknowledged some commits, kills it with SIGKILL in the middle of
/// its next ones, and reopens the file: every acknowledged commit must be there, and whatever
/// was in flight must be entirely there or entirely absent.
#[test]
fn commits_survive_the_process_being_killed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("vexil.db");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sqlite::crash_child_commits_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acknowledged = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read child output");
        if let Some((_, n)) = line.split_once(CRASH_CHILD_MARK) {
            acknowledged = n.trim().parse().expect("a revision");
            if acknowledged >= 40 {
                break;
            }
        }
    }
    // SIGKILL: no destructors, no checkpoint, no pool shutdown.
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert!(
        acknowledged >= 40,
        "the child stopped early, at revision {acknowledged}"
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(verify_after_crash(&path, acknowledged));
}

async fn verify_after_crash(path: &Path, acknowledged: u64) {
    let store = SqliteStore::open(path)
        .await
        .expect("reopen after the crash");
    let revision = store.current_revision().await.expect("revision");
    assert!(
        revision >= acknowledged,
        "lost acknowledged commits: {revision} < {acknowledged}"
    );
    // Each commit of the child is one write and one audit event, so the three logs agree
    // exactly when no commit was torn.
    let changes = store.changes_since(0, usize::MAX).await.expect("changes");
    let audit = conformance::all_audit(&store).await;
    assert_eq!(u64::try_from(changes.len()).unwrap_or(0), revision);
    assert_eq!(audit.len(), changes.len());
    assert_chain_verifies(&audit);
    let flags = store.load_namespace("prod").await.expect("load").flags;
    assert_eq!(u64::try_from(flags.len()).unwrap_or(0), revision - 1);
    // And the store still takes writes.
    commit_audited(
        &store,
        vec![put_flag(flag("prod", "after-crash"), Expect::Absent)],
    )
    .await;
}

/// Not a test on its own: the child process of [`commits_survive_the_process_being_killed`].
/// It commits one flag per revision, reporting each, until it is killed (or, should the parent
/// be gone, after a bounded number of commits).
#[tokio::test]
#[ignore = "child process of commits_survive_the_process_being_killed"]
async fn crash_child_commits_until_killed() {
    let Some(path) = std::env::var_os(CRASH_CHILD_DB).map(PathBuf::from) else {
        return;
    };
    let store = SqliteStore::open(&path).await.expect("open");
    commit_audited(&store, vec![put_ns(namespace("prod"), Expect::Absent)]).await;
    for i in 0..100_000 {
        let c = commit_audited(
            &store,
            vec![put_flag(flag("prod", &format!("f{i}")), Expect::Absent)],
        )
        .await;
        // Printed only after commit returned: this is the acknowledgement the parent relies on.
        println!("{CRASH_CHILD_MARK}{}", c.revision);
    }
}
