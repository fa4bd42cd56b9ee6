//! The embedded SQLite backend: all flag state, identity, the change feed and the audit log in
//! one file, the default mode that runs with no setup (DESIGN.md §5).
//!
//! It owns the connection pool and its settings (WAL, `synchronous=NORMAL`, foreign keys, busy
//! timeout), the embedded migrations in `migrations/sqlite/`, the single-writer discipline of
//! [`FlagStore::commit`] (in `sqlite/write.rs`) and [`IdentityStore::commit_identity`] (in
//! `sqlite/identity.rs`), which share one writer lock and one audit chain, and the in-process
//! change notification behind [`ChangeFeed::subscribe`]. Reads are plain queries on the pool;
//! WAL lets them run alongside the writer without blocking it.
//!
//! Limitation: [`ChangeFeed::subscribe`] only sees commits made through this process's
//! [`SqliteStore`] (and its clones). Another process writing the same file is serialised
//! correctly and its changes appear in [`ChangeFeed::changes_since`], but it does not wake this
//! process's subscribers until the next local commit.

mod error;
mod identity;
mod write;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, watch};
use vexil_core::domain::{
    AuditEvent, Change, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};
use vexil_core::identity::IdentityState;

use self::error::{from_migrate, from_sqlx, internal};
use crate::codec::{ChangeRow, Codec};
use crate::plan::{self, Versioned, not_found};
use crate::{
    AuditQuery, AuditStore, ChangeFeed, Committed, ConfigStore, FlagQuery, FlagStore,
    IdentityCommitted, IdentityStore, IdentityWrite, NamespaceState, Page, RawNamespaceState,
    StoreError, Write, listing,
};

/// How long a statement waits for another connection's (or process's) write lock before it
/// fails with `SQLITE_BUSY`, which becomes [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a pooled connection before [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Pool size for a file database. Only one connection writes at a time (SQLite allows one
/// writer), so the others serve reads, which WAL runs concurrently with the writer. Reads are
/// rare here (evaluation runs on in-memory snapshots), so a handful is plenty on 2 cores.
const MAX_CONNECTIONS: u32 = 4;

/// Errors name the backend `sqlite`.
const CODEC: Codec = Codec::new("sqlite");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded store. Cheap to clone: clones share the pool, the writer lock and the change
/// notification.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    /// Serialises this process's writers before they take a connection. SQLite would serialise
    /// them anyway (`BEGIN IMMEDIATE` + busy timeout), but its busy handler sleeps and retries
    /// with growing delays and each waiter pins a pooled connection; queueing here is fair and
    /// leaves the pool to readers. `BEGIN IMMEDIATE` still guards against other processes.
    write_lock: Mutex<()>,
    /// The latest revision committed through this store.
    revision_tx: watch::Sender<Revision>,
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) the database file at `path`, and
    /// brings its schema up to date.
    ///
    /// The file runs in WAL mode with `synchronous=NORMAL`: a committed transaction survives the
    /// process being killed (it is in the WAL, which the OS holds), and only an OS crash or power
    /// loss can lose the last few commits, never corrupt the file. That is the trade SQLite
    /// recommends for WAL, and it keeps a commit at one `write()` instead of an `fsync`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be created or opened (or is locked),
    /// [`StoreError::Internal`] when the schema cannot be migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Unavailable {
                    message: format!("sqlite: creating {}: {e}", parent.display()),
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(from_sqlx)?;
        Self::start(pool).await
    }

    /// Opens a private in-memory database (for tests and throwaway servers); it vanishes when
    /// the store and its clones are dropped.
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(from_sqlx)?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection that never closes: an in-memory database lives exactly as long as its
        // last connection, and a single connection also avoids shared-cache table locking.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(from_sqlx)?;
        Self::start(pool).await
    }

    async fn start(pool: SqlitePool) -> Result<Self, StoreError> {
        MIGRATOR.run(&pool).await.map_err(from_migrate)?;
        let revision = {
            let mut conn = pool.acquire().await.map_err(from_sqlx)?;
            current_revision(&mut conn).await?
        };
        let (revision_tx, _) = watch::channel(revision);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                write_lock: Mutex::new(()),
                revision_tx,
            }),
        })
    }

    /// Closes the pool, waiting for in-flight work; the last connection to close checkpoints
    /// the WAL into the main file. Optional: dropping the store is also safe.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}

/// The future of a write transaction's body, borrowing the transaction's connection.
type TxBody<'c, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

impl Inner {
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError> {
        let _writer = self.write_lock.lock().await;
        let committed = self
            .transact(|conn| Box::pin(write::apply(conn, writes, audit, now_millis())))
            .await?;
        // Still under the writer lock, so revisions are published in order.
        let revision = committed.revision;
        self.revision_tx.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
        Ok(committed)
    }

    async fn commit_identity(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<IdentityCommitted, StoreError> {
        // The same writer lock as flag commits: both extend the one audit chain.
        let _writer = self.write_lock.lock().await;
        self.transact(|conn| Box::pin(identity::apply(conn, writes, audit)))
            .await
    }

    /// Runs `body` in one write transaction, committing it if `body` succeeds and rolling it
    /// back otherwise. The caller holds [`Inner::write_lock`].
    async fn transact<T>(
        &self,
        body: impl for<'c> FnOnce(&'c mut SqliteConnection) -> TxBody<'c, T>,
    ) -> Result<T, StoreError> {
        // IMMEDIATE takes the write lock up front, so the version checks below read the state
        // the writes will apply to (a DEFERRED transaction could be overtaken by another
        // process between its read and its first write, then fail with SQLITE_BUSY).
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(from_sqlx)?;
        match body(&mut tx).await {
            Ok(done) => {
                tx.commit().await.map_err(from_sqlx)?;
                Ok(done)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    // The connection goes back to the pool either way; sqlx rolls back any
                    // transaction still open on it before reuse.
                    tracing::warn!(error = %rollback, "sqlite: rollback after a failed commit");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl FlagStore for SqliteStore {
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError> {
        if writes.is_empty() && audit.is_empty() {
            return Ok(plan::empty_commit(self.current_revision().await?));
        }
        // The commit runs on its own task so that it completes, and its revision is published,
        // even when the caller's future is dropped (an HTTP client that disconnects mid-request):
        // a commit that lands but is never published would leave every subscriber stale until
        // the next write.
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.commit(writes, audit).await })
            .await
            .map_err(|e| internal(format!("sqlite: commit task failed: {e}")))?
    }

    async fn list_namespaces(&self) -> Result<Vec<Namespace>, StoreError> {
        let docs: Vec<(String,)> = sqlx::query_as("SELECT doc FROM namespaces ORDER BY key")
            .fetch_all(&self.inner.pool)
            .await
            .map_err(from_sqlx)?;
        docs.iter()
            .map(|(d,)| CODEC.decode(d, "namespace"))
            .collect()
    }

    async fn get_namespace(&self, key: &str) -> Result<Namespace, StoreError> {
        let mut conn = self.conn().await?;
        get_namespace(&mut conn, key).await
    }

    async fn get_flag(&self, namespace: &str, key: &str) -> Result<Flag, StoreError> {
        let sql = "SELECT doc FROM flags WHERE namespace = ?1 AND key = ?2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_flags(
        &self,
        namespace: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, StoreError> {
        let mut conn = self.conn().await?;
        require_namespace(&mut conn, namespace).await?;
        let limit = listing::page_limit(query.limit);
        // The needle is lower-cased like the `search` column; `instr` also needs no
        // LIKE-wildcard escaping.
        let needle = listing::needle(query);
        // One row more than the page, to know whether another page follows.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let docs: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.key, f.doc FROM flags f \
             WHERE f.namespace = ?1 \
               AND (?2 IS NULL OR f.key > ?2) \
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM flag_tags t \
                    WHERE t.namespace = f.namespace AND t.tag = ?3 AND t.key = f.key)) \
               AND (?4 IS NULL OR instr(f.search, ?4) > 0) \
             ORDER BY f.key LIMIT ?5",
        )
        .bind(namespace)
        .bind(query.cursor.as_deref())
        .bind(query.tag.as_deref())
        .bind(needle.as_deref())
        .bind(fetch)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        let (docs, next_cursor) = listing::split_page(docs, limit, |(key, _)| key);
        let items = docs
            .iter()
            .map(|(_, doc)| CODEC.decode(doc, "flag"))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }

    async fn get_segment(&self, namespace: &str, key: &str) -> Result<Segment, StoreError> {
        let sql = "SELECT doc FROM segments WHERE namespace = ?1 AND key = ?2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_segments(&self, namespace: &str) -> Result<Vec<Segment>, StoreError> {
        let mut conn = self.conn().await?;
        require_namespace(&mut conn, namespace).await?;
        list_scoped(&mut conn, LIST_SEGMENTS, namespace).await
    }

    async fn load_namespace(&self, namespace: &str) -> Result<NamespaceState, StoreError> {
        CODEC.namespace_state(self.load_namespace_raw(namespace).await?)
    }

    async fn load_namespace_raw(&self, namespace: &str) -> Result<RawNamespaceState, StoreError> {
        // A deferred read transaction: in WAL mode its first read fixes the snapshot, so the
        // revision and every row below are from the same instant.
        let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
        let revision = current_revision(&mut tx).await?;
        let ns = get_namespace(&mut tx, namespace).await?;
        let docs: Vec<(String,)> =
            sqlx::query_as("SELECT doc FROM flags WHERE namespace = ?1 ORDER BY key")
                .bind(namespace)
                .fetch_all(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        let segments = list_scoped(&mut tx, LIST_SEGMENTS, namespace).await?;
        // Read-only: ending it either way releases the snapshot.
        tx.rollback().await.map_err(from_sqlx)?;
        Ok(RawNamespaceState {
            namespace: ns,
            flags: docs.into_iter().map(|(d,)| d).collect(),
            segments,
            revision,
        })
    }
}

#[async_trait]
impl ChangeFeed for SqliteStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut conn = self.conn().await?;
        current_revision(&mut conn).await
    }

    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
        // Every commit has at least one change, so `limit` commits always cover `limit` changes.
        let counts: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT revision, COUNT(*) FROM changes WHERE revision > ?1 \
             GROUP BY revision ORDER BY revision LIMIT ?2",
        )
        .bind(after)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        let commits = counts
            .into_iter()
            .map(|(revision, count)| Ok((revision, usize::try_from(count).unwrap_or(usize::MAX))));
        let Some(&upto) = listing::whole_commits(commits, limit)?.last() else {
            return Ok(Vec::new());
        };
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT revision, namespace, kind, key, after FROM changes \
             WHERE revision > ?1 AND revision <= ?2 ORDER BY revision, ordinal",
        )
        .bind(after)
        .bind(upto)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.rollback().await.map_err(from_sqlx)?;
        rows.into_iter().map(|row| CODEC.change(row)).collect()
    }

    fn subscribe(&self) -> watch::Receiver<Revision> {
        self.inner.revision_tx.subscribe()
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let after = i64::try_from(query.after_seq.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = i64::try_from(listing::page_limit(query.limit)).unwrap_or(i64::MAX);
        let docs: Vec<(String,)> = sqlx::query_as(
            "SELECT doc FROM audit_events \
             WHERE seq > ?1 \
               AND (?2 IS NULL OR namespace = ?2) \
               AND (?3 IS NULL OR kind = ?3) \
               AND (?4 IS NULL OR key = ?4) \
             ORDER BY seq LIMIT ?5",
        )
        .bind(after)
        .bind(query.namespace.as_deref())
        .bind(query.kind.map(ResourceKind::as_str))
        .bind(query.key.as_deref())
        .bind(limit)
        .fetch_all(&self.inner.pool)
        .await
        .map_err(from_sqlx)?;
        docs.iter()
            .map(|(d,)| CODEC.decode(d, "audit event"))
            .collect()
    }
}

#[async_trait]
impl ConfigStore for SqliteStore {
    async fn get_config(&self, namespace: &str, key: &str) -> Result<ConfigEntry, StoreError> {
        let sql = "SELECT doc FROM configs WHERE namespace = ?1 AND key = ?2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_configs(&self, namespace: &str) -> Result<Vec<ConfigEntry>, StoreError> {
        let mut conn = self.conn().await?;
        require_namespace(&mut conn, namespace).await?;
        let sql = "SELECT doc FROM configs WHERE namespace = ?1 ORDER BY key";
        list_scoped(&mut conn, sql, namespace).await
    }

    async fn config_versions(
        &self,
        namespace: &str,
        key: &str,
        after_version: u64,
        limit: usize,
    ) -> Result<Vec<ConfigEntry>, StoreError> {
        // One snapshot: a delete landing between the existence check and the history read
        // would otherwise turn `NotFound` into an empty history.
        let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
        let current: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM configs WHERE namespace = ?1 AND key = ?2")
                .bind(namespace)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(from_sqlx)?;
        if current.is_none() {
            return Err(missing(&mut tx, ResourceKind::Config, namespace, key).await);
        }
        let docs: Vec<(String,)> = sqlx::query_as(
            "SELECT doc FROM config_versions \
             WHERE namespace = ?1 AND key = ?2 AND version > ?3 ORDER BY version LIMIT ?4",
        )
        .bind(namespace)
        .bind(key)
        .bind(i64::try_from(after_version).unwrap_or(i64::MAX))
        .bind(i64::try_from(listing::page_limit(limit)).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.rollback().await.map_err(from_sqlx)?;
        docs.iter().map(|(d,)| CODEC.decode(d, "config")).collect()
    }
}

#[async_trait]
impl IdentityStore for SqliteStore {
    async fn commit_identity(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<IdentityCommitted, StoreError> {
        if writes.is_empty() && audit.is_empty() {
            return Ok(IdentityCommitted {
                revision: self.identity_revision().await?,
                audit: Vec::new(),
            });
        }
        // On its own task, like a flag commit, so that a caller dropping its future cannot
        // abandon the transaction half-way through.
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.commit_identity(writes, audit).await })
            .await
            .map_err(|e| internal(format!("sqlite: identity commit task failed: {e}")))?
    }

    async fn load_identity(&self) -> Result<IdentityState, StoreError> {
        // One snapshot, as in `load_namespace`.
        let mut tx = self.inner.pool.begin().await.map_err(from_sqlx)?;
        let state = identity::load(&mut tx).await?;
        tx.rollback().await.map_err(from_sqlx)?;
        Ok(state)
    }

    async fn identity_revision(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        identity::revision(&mut conn).await
    }
}

impl SqliteStore {
    /// One flag, segment or config, selected by `sql` (its `doc` by namespace and key); a
    /// missing one is `NotFound` for it, or for its namespace when that is what is missing.
    async fn get_scoped<T: Versioned>(
        &self,
        sql: &'static str,
        namespace: &str,
        key: &str,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let doc: Option<(String,)> = sqlx::query_as(sql)
            .bind(namespace)
            .bind(key)
            .fetch_optional(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        match doc {
            Some((doc,)) => CODEC.decode(&doc, T::KIND.as_str()),
            None => Err(missing(&mut conn, T::KIND, namespace, key).await),
        }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, StoreError> {
        self.inner.pool.acquire().await.map_err(from_sqlx)
    }
}

async fn current_revision(conn: &mut SqliteConnection) -> Result<Revision, StoreError> {
    let (revision,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(revision), 0) FROM revisions")
        .fetch_one(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    CODEC.to_u64(revision)
}

async fn get_namespace(conn: &mut SqliteConnection, key: &str) -> Result<Namespace, StoreError> {
    let doc: Option<(String,)> = sqlx::query_as("SELECT doc FROM namespaces WHERE key = ?1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    match doc {
        Some((doc,)) => CODEC.decode(&doc, "namespace"),
        None => Err(not_found(ResourceKind::Namespace, key, key)),
    }
}

const LIST_SEGMENTS: &str = "SELECT doc FROM segments WHERE namespace = ?1 ORDER BY key";

/// Every segment or config of a namespace, selected by `sql` (their `doc`s by namespace, in key
/// order).
async fn list_scoped<T: Versioned>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    namespace: &str,
) -> Result<Vec<T>, StoreError> {
    let docs: Vec<(String,)> = sqlx::query_as(sql)
        .bind(namespace)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    docs.iter()
        .map(|(d,)| CODEC.decode(d, T::KIND.as_str()))
        .collect()
}

async fn namespace_exists(conn: &mut SqliteConnection, key: &str) -> Result<bool, StoreError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM namespaces WHERE key = ?1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    Ok(exists)
}

/// `NotFound` for the namespace when it is missing.
async fn require_namespace(conn: &mut SqliteConnection, key: &str) -> Result<(), StoreError> {
    plan::require_namespace(key, namespace_exists(conn, key).await?)
}

/// The error for a missing flag, segment or config: `NotFound` for the namespace when that is
/// what is missing, else for the resource (or whatever went wrong finding out).
async fn missing(
    conn: &mut SqliteConnection,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> StoreError {
    match require_namespace(conn, namespace).await {
        Ok(()) => not_found(kind, namespace, key),
        Err(e) => e,
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
