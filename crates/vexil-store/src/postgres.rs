//! The PostgreSQL backend: all flag state, identity, the change feed and the audit log in one
//! database, shared by any number of stateless replicas (DESIGN.md §5, the postgres mode).
//!
//! It owns the connection pool and its session settings (lock, statement and
//! idle-in-transaction timeouts), the embedded migrations in `migrations/postgres/`, the
//! commit discipline of [`FlagStore::commit`] (in `postgres/write.rs`) and
//! [`IdentityStore::commit_identity`] (in `postgres/identity.rs`), and the cross-process
//! change notification behind [`ChangeFeed::subscribe`] (in `postgres/feed.rs`). Semantics are
//! the SQLite backend's, exactly; both pass the same conformance suite.
//!
//! # Why commits lock one row
//!
//! Every commit runs at READ COMMITTED and starts by locking the single row of
//! `revision_counter` (`UPDATE … SET revision = revision + 1` for a batch with writes,
//! `SELECT … FOR UPDATE` for an audit-only batch and for every identity commit, which then
//! locks its own `identity_revision` row). That one lock gives, across every process and
//! replica on the database:
//! - **no lost update**: the version checks run after the lock is granted, and at READ
//!   COMMITTED each statement sees every commit that released it before, so the checks are
//!   exact; the writes are still `UPDATE … WHERE version = $old` as a second guard;
//! - **revisions visible in order**: a commit takes revision N + 1 only after the commit that
//!   took N has become visible (PostgreSQL makes a transaction visible before it releases its
//!   locks), so a reader that sees N + 1 also sees N, and `changes_since` never skips a revision
//!   that commits later. A sequence would not give this: its values are handed out before
//!   commit, and commits can land out of order;
//! - **an unbroken audit chain**: `seq` and `prev_hash` are read and extended under the lock.
//!
//! The price is that commits are serialised, as they are in SQLite; a commit is a handful of
//! short statements, and flag writes are rare next to evaluations (which never touch the
//! store). SERIALIZABLE would not remove the serialisation (every commit touches the counter
//! and the audit tail, so they would all conflict) and would turn waiting into aborts and
//! retries. A `lock_timeout` bounds the wait: past it the commit fails with
//! [`StoreError::Unavailable`] and nothing is written. Serialization failures and deadlocks,
//! which this design does not produce but a hostile configuration might, are retried a few
//! times and then reported as `Unavailable`.

mod error;
mod feed;
mod identity;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{Mutex, MutexGuard, watch};
use vexil_core::domain::{
    AuditEvent, Change, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};
use vexil_core::identity::IdentityState;

use self::error::{TxError, from_migrate, from_sqlx, internal};
use crate::codec::{ChangeRow, Codec};
use crate::plan::{self, Versioned, not_found};
use crate::{
    AuditQuery, AuditStore, ChangeFeed, Committed, ConfigStore, FlagQuery, FlagStore,
    IdentityCommitted, IdentityStore, IdentityWrite, NamespaceState, Page, RawNamespaceState,
    StoreError, Write, listing,
};

/// The channel every commit notifies, with its revision as the payload.
pub(crate) const NOTIFY_CHANNEL: &str = "vexil_changes";

/// How long a caller waits for a pooled connection (including connecting) before
/// [`StoreError::Unavailable`].
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per process. Writers queue in-process before taking one (see
/// [`Inner::write_lock`]), so one is enough for commits; the rest serve reads, which are rare
/// (evaluation runs on in-memory snapshots). The feed's listener has its own connection.
const MAX_CONNECTIONS: u32 = 8;

/// Session settings, unless the URL's `options` already sets them. `lock_timeout` bounds how
/// long a commit waits for the revision row behind other replicas' commits;
/// `statement_timeout` bounds any single statement; `idle_in_transaction_session_timeout`
/// frees the revision row if a client stalls (or its network does) mid-commit.
const SESSION_SETTINGS: [(&str, &str); 3] = [
    ("lock_timeout", "10s"),
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

/// How long a commit waits in this process's writer queue before [`StoreError::Unavailable`]:
/// a backlog this long means the database is not keeping up, and failing fast (503 with
/// `Retry-After` at the API) beats piling up requests.
const WRITE_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

/// Attempts of a commit that hit a serialization failure or deadlock.
const COMMIT_ATTEMPTS: u32 = 4;

/// Errors name the backend `postgres`.
const CODEC: Codec = Codec::new("postgres");

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL store. Cheap to clone: clones share the pool, the writer queue and the change
/// notification. The feed's background tasks stop when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    /// Queues this process's writers before they take a connection. PostgreSQL would serialise
    /// them anyway on the revision row, but each waiter would pin a pooled connection (and an
    /// open transaction) while it waits; queueing here is fair and leaves the pool to readers.
    /// The row lock still serialises this process against the others.
    write_lock: Mutex<()>,
    /// The latest revision known to be committed: by this process (published right after its
    /// commits) or by any other (from the feed's listener and poller).
    revision_tx: watch::Sender<Revision>,
    /// The listener and poller tasks, aborted when the store goes away.
    feed: feed::Feed,
}

impl PostgresStore {
    /// Connects to the database at `url` (a `postgres://` URL), brings its schema up to date,
    /// and starts following the change feed.
    ///
    /// Several replicas may connect to the same database at once: the migrator holds an
    /// advisory lock while it runs.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached (or the database does not
    /// exist), [`StoreError::Internal`] for a malformed URL, refused credentials, or a schema
    /// that cannot be migrated.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // The URL may hold a password: it appears in no message.
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            internal(format!(
                "postgres: the connection URL is not valid: {}",
                redact(&e)
            ))
        })?;
        let options = with_session_settings(options);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(600))
            .connect_with(
                options
                    .clone()
                    .application_name(options.get_application_name().unwrap_or("vexil")),
            )
            .await
            .map_err(from_sqlx)?;
        MIGRATOR.run(&pool).await.map_err(from_migrate)?;
        let revision = {
            let mut conn = pool.acquire().await.map_err(from_sqlx)?;
            current_revision(&mut conn).await?
        };
        let (revision_tx, _) = watch::channel(revision);
        let listen_options = options
            .clone()
            .application_name(options.get_application_name().unwrap_or("vexil-feed"));
        let feed = feed::Feed::start(pool.clone(), listen_options, revision_tx.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                write_lock: Mutex::new(()),
                revision_tx,
                feed,
            }),
        })
    }

    /// Records audit events that were committed elsewhere, exactly once each: the relay of the
    /// distributed mode moves events from etcd's outbox here, and may deliver an event again
    /// after a crash or alongside another replica's relay. Events whose id is already recorded
    /// (or repeated in `events`) are skipped; the rest join the hash chain in the given order.
    ///
    /// Returns every given event as stored (with `seq` and hashes), in the given order, a
    /// repeated id once. Idempotent: a second call with the same events writes nothing and
    /// returns the same result.
    ///
    /// # Errors
    /// Unavailable / Internal; nothing is written then.
    pub async fn record_relayed_audit(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        if events.is_empty() {
            return Ok(events);
        }
        let _writer = self.inner.writer_turn().await?;
        self.inner
            .transact(|conn| Box::pin(write::record_relayed(conn, events.clone())))
            .await
    }

    /// Stops following the feed and closes the pool, waiting for in-flight work. Optional:
    /// dropping the store is also safe.
    pub async fn close(&self) {
        self.inner.feed.stop();
        self.inner.pool.close().await;
    }
}

/// Adds [`SESSION_SETTINGS`] that the URL does not set itself.
fn with_session_settings(options: PgConnectOptions) -> PgConnectOptions {
    let given = options.get_options().unwrap_or_default().to_owned();
    let missing: Vec<(&str, &str)> = SESSION_SETTINGS
        .into_iter()
        .filter(|(name, _)| !given.contains(name))
        .collect();
    if missing.is_empty() {
        options
    } else {
        options.options(missing)
    }
}

/// A URL parse error without the URL in it.
fn redact(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Configuration(source) => source.to_string(),
        _ => "unrecognised format".to_owned(),
    }
}

/// The future of one attempt at a write transaction's body, borrowing its connection.
type TxBody<'c, T> = Pin<Box<dyn Future<Output = Result<T, TxError>> + Send + 'c>>;

impl Inner {
    async fn commit(
        &self,
        writes: Vec<Write>,
        audit: Vec<AuditEvent>,
    ) -> Result<Committed, StoreError> {
        let _writer = self.writer_turn().await?;
        let committed = self
            .transact(|conn| {
                Box::pin(write::apply(
                    conn,
                    writes.clone(),
                    audit.clone(),
                    now_millis(),
                ))
            })
            .await?;
        // Still under the writer lock, so this process publishes its revisions in order (the
        // feed may publish them too, or a later one: only increases are sent).
        feed::publish(&self.revision_tx, committed.revision);
        Ok(committed)
    }

    async fn commit_identity(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<IdentityCommitted, StoreError> {
        // The same queue as flag commits: an identity commit takes the same row lock first.
        let _writer = self.writer_turn().await?;
        self.transact(|conn| Box::pin(identity::apply(conn, writes.clone(), audit.clone())))
            .await
    }

    /// Waits for this process's earlier writers (see [`Inner::write_lock`]).
    async fn writer_turn(&self) -> Result<MutexGuard<'_, ()>, StoreError> {
        tokio::time::timeout(WRITE_QUEUE_TIMEOUT, self.write_lock.lock())
            .await
            .map_err(|_| StoreError::Unavailable {
                message: format!(
                    "postgres: earlier commits of this process still running after {WRITE_QUEUE_TIMEOUT:?}"
                ),
            })
    }

    /// Runs `attempt` in a write transaction, committing it if it succeeds, and runs it again
    /// (in a new transaction) after a serialization failure or deadlock, up to
    /// [`COMMIT_ATTEMPTS`] times. The caller holds its writer turn.
    async fn transact<T>(
        &self,
        mut attempt: impl for<'c> FnMut(&'c mut PgConnection) -> TxBody<'c, T>,
    ) -> Result<T, StoreError> {
        let mut tries = 1;
        loop {
            match self.try_transact(&mut attempt).await {
                Ok(done) => return Ok(done),
                Err(TxError::Retry(e)) if tries < COMMIT_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt = tries, "postgres: commit conflicted; retrying");
                    tries += 1;
                    // A short, growing pause so that the conflicting transaction can finish.
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(tries))).await;
                }
                Err(TxError::Retry(e)) => {
                    return Err(StoreError::Unavailable {
                        message: format!("postgres: commit conflicted {tries} times: {e}"),
                    });
                }
                Err(TxError::Failed(e)) => return Err(e),
            }
        }
    }

    /// One transaction. Nothing is written unless it returns `Ok`.
    async fn try_transact<T>(
        &self,
        attempt: &mut impl for<'c> FnMut(&'c mut PgConnection) -> TxBody<'c, T>,
    ) -> Result<T, TxError> {
        // READ COMMITTED explicitly, whatever the database's default: the design depends on
        // each statement seeing the commits that released the revision row before it.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await?;
        match attempt(&mut tx).await {
            Ok(done) => {
                tx.commit().await?;
                Ok(done)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    // The connection goes back to the pool either way; sqlx rolls back any
                    // transaction still open on it before reuse (or closes it).
                    tracing::warn!(error = %rollback, "postgres: rollback after a failed commit");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl FlagStore for PostgresStore {
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
        // a transaction abandoned between COMMIT being sent and its answer would leave the
        // caller unable to tell what happened, and the local subscribers a poll interval late.
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.commit(writes, audit).await })
            .await
            .map_err(|e| internal(format!("postgres: commit task failed: {e}")))?
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
        let sql = "SELECT doc FROM flags WHERE namespace = $1 AND key = $2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_flags(
        &self,
        namespace: &str,
        query: &FlagQuery,
    ) -> Result<Page<Flag>, StoreError> {
        // One snapshot for the namespace check and the page.
        let mut tx = self.read_tx().await?;
        require_namespace(&mut tx, namespace).await?;
        let limit = listing::page_limit(query.limit);
        // The needle is lower-cased like the `search` column; `position` on bytes also needs no
        // LIKE-wildcard escaping.
        let needle = listing::needle(query);
        // One row more than the page, to know whether another page follows.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let docs: Vec<(String, String)> = sqlx::query_as(
            "SELECT f.key, f.doc FROM flags f \
             WHERE f.namespace = $1 \
               AND ($2::text IS NULL OR f.key > $2::text) \
               AND ($3::bytea IS NULL OR EXISTS (SELECT 1 FROM flag_tags t \
                    WHERE t.namespace = f.namespace AND t.tag = $3::bytea AND t.key = f.key)) \
               AND ($4::bytea IS NULL OR position($4::bytea IN f.search) > 0) \
             ORDER BY f.key LIMIT $5",
        )
        .bind(namespace)
        .bind(query.cursor.as_deref())
        .bind(query.tag.as_deref().map(str::as_bytes))
        .bind(needle.as_deref().map(str::as_bytes))
        .bind(fetch)
        .fetch_all(&mut *tx)
        .await
        .map_err(from_sqlx)?;
        tx.rollback().await.map_err(from_sqlx)?;
        let (docs, next_cursor) = listing::split_page(docs, limit, |(key, _)| key);
        let items = docs
            .iter()
            .map(|(_, doc)| CODEC.decode(doc, "flag"))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }

    async fn get_segment(&self, namespace: &str, key: &str) -> Result<Segment, StoreError> {
        let sql = "SELECT doc FROM segments WHERE namespace = $1 AND key = $2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_segments(&self, namespace: &str) -> Result<Vec<Segment>, StoreError> {
        let mut tx = self.read_tx().await?;
        require_namespace(&mut tx, namespace).await?;
        let segments = list_scoped(&mut tx, LIST_SEGMENTS, namespace).await?;
        tx.rollback().await.map_err(from_sqlx)?;
        Ok(segments)
    }

    async fn load_namespace(&self, namespace: &str) -> Result<NamespaceState, StoreError> {
        CODEC.namespace_state(self.load_namespace_raw(namespace).await?)
    }

    async fn load_namespace_raw(&self, namespace: &str) -> Result<RawNamespaceState, StoreError> {
        // REPEATABLE READ: one snapshot, taken by the first statement, so the revision and
        // every row below are from the same instant.
        let mut tx = self.read_tx().await?;
        let revision = current_revision(&mut tx).await?;
        let ns = get_namespace(&mut tx, namespace).await?;
        let docs: Vec<(String,)> =
            sqlx::query_as("SELECT doc FROM flags WHERE namespace = $1 ORDER BY key")
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
impl ChangeFeed for PostgresStore {
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
        let mut tx = self.read_tx().await?;
        // Every commit has at least one change, so `limit` commits always cover `limit` changes.
        let counts: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT revision, COUNT(*) FROM changes WHERE revision > $1 \
             GROUP BY revision ORDER BY revision LIMIT $2",
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
            tx.rollback().await.map_err(from_sqlx)?;
            return Ok(Vec::new());
        };
        let rows: Vec<ChangeRow> = sqlx::query_as(
            "SELECT revision, namespace, kind, key, after FROM changes \
             WHERE revision > $1 AND revision <= $2 ORDER BY revision, ordinal",
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
impl AuditStore for PostgresStore {
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let after = i64::try_from(query.after_seq.unwrap_or(0)).unwrap_or(i64::MAX);
        let limit = i64::try_from(listing::page_limit(query.limit)).unwrap_or(i64::MAX);
        let docs: Vec<(String,)> = sqlx::query_as(
            "SELECT doc FROM audit_events \
             WHERE seq > $1 \
               AND ($2::text IS NULL OR namespace = $2::text) \
               AND ($3::text IS NULL OR kind = $3::text) \
               AND ($4::text IS NULL OR key = $4::text) \
             ORDER BY seq LIMIT $5",
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
impl ConfigStore for PostgresStore {
    async fn get_config(&self, namespace: &str, key: &str) -> Result<ConfigEntry, StoreError> {
        let sql = "SELECT doc FROM configs WHERE namespace = $1 AND key = $2";
        self.get_scoped(sql, namespace, key).await
    }

    async fn list_configs(&self, namespace: &str) -> Result<Vec<ConfigEntry>, StoreError> {
        let mut tx = self.read_tx().await?;
        require_namespace(&mut tx, namespace).await?;
        let sql = "SELECT doc FROM configs WHERE namespace = $1 ORDER BY key";
        let configs = list_scoped(&mut tx, sql, namespace).await?;
        tx.rollback().await.map_err(from_sqlx)?;
        Ok(configs)
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
        let mut tx = self.read_tx().await?;
        let current: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM configs WHERE namespace = $1 AND key = $2")
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
             WHERE namespace = $1 AND key = $2 AND version > $3 ORDER BY version LIMIT $4",
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
impl IdentityStore for PostgresStore {
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
        // abandon the transaction between COMMIT and its answer.
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.commit_identity(writes, audit).await })
            .await
            .map_err(|e| internal(format!("postgres: identity commit task failed: {e}")))?
    }

    async fn load_identity(&self) -> Result<IdentityState, StoreError> {
        // REPEATABLE READ: the revision and every row from one snapshot.
        let mut tx = self.read_tx().await?;
        let state = identity::load(&mut tx).await?;
        tx.rollback().await.map_err(from_sqlx)?;
        Ok(state)
    }

    async fn identity_revision(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn().await?;
        identity::revision(&mut conn).await
    }
}

impl PostgresStore {
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

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, StoreError> {
        self.inner.pool.acquire().await.map_err(from_sqlx)
    }

    /// A read-only transaction on one snapshot.
    async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.inner
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(from_sqlx)
    }
}

pub(crate) async fn current_revision(conn: &mut PgConnection) -> Result<Revision, StoreError> {
    let (revision,): (i64,) =
        sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton")
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    CODEC.to_u64(revision)
}

async fn get_namespace(conn: &mut PgConnection, key: &str) -> Result<Namespace, StoreError> {
    let doc: Option<(String,)> = sqlx::query_as("SELECT doc FROM namespaces WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    match doc {
        Some((doc,)) => CODEC.decode(&doc, "namespace"),
        None => Err(not_found(ResourceKind::Namespace, key, key)),
    }
}

const LIST_SEGMENTS: &str = "SELECT doc FROM segments WHERE namespace = $1 ORDER BY key";

/// Every segment or config of a namespace, selected by `sql` (their `doc`s by namespace, in key
/// order).
async fn list_scoped<T: Versioned>(
    conn: &mut PgConnection,
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

/// `NotFound` for the namespace when it is missing.
async fn require_namespace(conn: &mut PgConnection, key: &str) -> Result<(), StoreError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM namespaces WHERE key = $1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    plan::require_namespace(key, exists)
}

/// The error for a missing flag, segment or config: `NotFound` for the namespace when that is
/// what is missing, else for the resource (or whatever went wrong finding out).
async fn missing(
    conn: &mut PgConnection,
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
