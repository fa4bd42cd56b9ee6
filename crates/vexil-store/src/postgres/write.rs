//! The body of [`FlagStore::commit`](crate::FlagStore::commit): applies a batch inside the
//! caller's transaction, after the caller has locked the revision counter row.
//!
//! Each write reads the current row, has [`crate::plan`] check its [`Expect`] and work out the new
//! state, and writes that, so a key that appears twice in a batch sees the first write's result:
//! the batch behaves as its writes applied one after another. What stays here is the SQL: the
//! statements, their binding, and the tag rows and search column of a flag. Because every commit
//! holds the revision row lock, these reads (at READ COMMITTED, one fresh snapshot per statement)
//! see every earlier commit, so the checks are exact and the writes cannot be overtaken. Any error
//! returns early and the caller rolls the transaction back, which undoes the revision, the changes,
//! the audit events and the notification together.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::PgConnection;
use sqlx::error::ErrorKind;
use vexil_core::domain::{
    AuditEvent, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};

use super::error::{TxError, from_json, internal};
use super::{CODEC, NOTIFY_CHANNEL, require_namespace};
use crate::listing;
use crate::plan::{self, Applied, Put, Versioned};
use crate::{Committed, Expect, Write};

/// Allocates the next revision (a batch with writes) or just takes the revision lock (an
/// audit-only batch), applies `writes`, appends `audit` and queues the change notification.
pub(super) async fn apply(
    conn: &mut PgConnection,
    writes: Vec<Write>,
    audit: Vec<AuditEvent>,
    now: i64,
) -> Result<Committed, TxError> {
    // The first statement of every commit, so the lock order is the same everywhere (no
    // deadlocks) and everything below runs with all earlier commits visible.
    let (current, revision) = if writes.is_empty() {
        (lock_commits(conn).await?, None)
    } else {
        let (next,): (i64,) = sqlx::query_as(
            "UPDATE revision_counter SET revision = revision + 1 WHERE singleton \
             RETURNING revision",
        )
        .fetch_one(&mut *conn)
        .await?;
        let next = CODEC.to_u64(next)?;
        sqlx::query("INSERT INTO revisions (revision, committed_at) VALUES ($1, $2)")
            .bind(CODEC.to_i64(next)?)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        (next - 1, Some(next))
    };

    let mut results = Vec::with_capacity(writes.len());
    for (ordinal, write) in writes.into_iter().enumerate() {
        let applied = apply_one(conn, write).await?;
        sqlx::query(
            "INSERT INTO changes (revision, ordinal, namespace, kind, key, after) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(CODEC.to_i64(revision.unwrap_or(current))?)
        .bind(i32::try_from(ordinal).map_err(|_| internal("postgres: batch too large".into()))?)
        .bind(&applied.namespace)
        .bind(applied.kind.as_str())
        .bind(&applied.key)
        .bind(applied.after.as_ref().map(Value::to_string))
        .execute(&mut *conn)
        .await?;
        results.push(applied.after);
    }

    let audit = append_audit(conn, audit, revision).await?;

    if let Some(revision) = revision {
        // Queued now, delivered by PostgreSQL only if and when this transaction commits, and
        // in commit order: there is no window in which the commit lands and the notification
        // is not sent (a crash between a COMMIT and a separate NOTIFY would leave one).
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(revision.to_string())
            .execute(&mut *conn)
            .await?;
    }

    Ok(Committed {
        revision: revision.unwrap_or(current),
        results,
        audit,
    })
}

/// Locks the revision counter row without moving it, and returns the current revision: what
/// a commit that allocates no revision (an audit-only batch, an identity commit) takes first,
/// so that it is serialised with every other commit and may extend the audit chain.
pub(super) async fn lock_commits(conn: &mut PgConnection) -> Result<Revision, TxError> {
    let (current,): (i64,) =
        sqlx::query_as("SELECT revision FROM revision_counter WHERE singleton FOR UPDATE")
            .fetch_one(&mut *conn)
            .await?;
    Ok(CODEC.to_u64(current)?)
}

async fn apply_one(conn: &mut PgConnection, write: Write) -> Result<Applied, TxError> {
    match write {
        Write::PutNamespace { namespace, expect } => put_namespace(conn, namespace, expect).await,
        Write::DeleteNamespace { key, expect } => delete_namespace(conn, key, expect).await,
        Write::PutFlag { flag, expect } => put_flag(conn, flag, expect).await,
        Write::DeleteFlag {
            namespace,
            key,
            expect,
        } => {
            delete_scoped(
                conn,
                ResourceKind::Flag,
                namespace,
                key,
                expect,
                "SELECT version FROM flags WHERE namespace = $1 AND key = $2",
                "DELETE FROM flags WHERE namespace = $1 AND key = $2",
            )
            .await
        }
        Write::PutConfig { config, expect } => put_config(conn, config, expect).await,
        Write::DeleteConfig {
            namespace,
            key,
            expect,
        } => {
            delete_scoped(
                conn,
                ResourceKind::Config,
                namespace,
                key,
                expect,
                "SELECT version FROM configs WHERE namespace = $1 AND key = $2",
                "DELETE FROM configs WHERE namespace = $1 AND key = $2",
            )
            .await
        }
        Write::PutSegment { segment, expect } => put_segment(conn, segment, expect).await,
        Write::DeleteSegment {
            namespace,
            key,
            expect,
        } => {
            delete_scoped(
                conn,
                ResourceKind::Segment,
                namespace,
                key,
                expect,
                "SELECT version FROM segments WHERE namespace = $1 AND key = $2",
                "DELETE FROM segments WHERE namespace = $1 AND key = $2",
            )
            .await
        }
    }
}

/// Reads the stored `(version, document)` of one row, if any, and plans the put of `item` over
/// it. `sql` selects by namespace and key (`$1`, `$2`) for a kind that lives in a namespace,
/// else by key (`$1`).
pub(super) async fn plan_put<T: Versioned>(
    conn: &mut PgConnection,
    sql: &'static str,
    item: T,
    expect: Expect,
) -> Result<Put<T>, TxError> {
    let query = sqlx::query_as(sql);
    let query = if plan::in_namespace(T::KIND) {
        query.bind(item.namespace()).bind(item.key())
    } else {
        query.bind(item.key())
    };
    let row: Option<(i64, String)> = query.fetch_optional(&mut *conn).await?;
    Ok(plan::put(item, expect, CODEC.versioned(row)?)?)
}

/// Reads the stored version of one row (`None`: absent), selected as in [`plan_put`], plans its
/// delete and returns the version to delete.
pub(super) async fn plan_delete(
    conn: &mut PgConnection,
    sql: &'static str,
    expect: Expect,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> Result<u64, TxError> {
    let query = sqlx::query_as(sql);
    let query = if plan::in_namespace(kind) {
        query.bind(namespace).bind(key)
    } else {
        query.bind(key)
    };
    let row: Option<(i64,)> = query.fetch_optional(&mut *conn).await?;
    let stored = row.map(|(v,)| CODEC.to_u64(v)).transpose()?;
    Ok(plan::delete(expect, stored, kind, namespace, key)?)
}

/// The compare-and-set itself: an update that only matches the version the check read. Under
/// the revision row lock the row cannot have moved since, so a miss is a bug, not a conflict;
/// it is still refused rather than written over.
pub(super) fn expect_one_row(
    result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
    what: &str,
) -> Result<(), TxError> {
    match result?.rows_affected() {
        1 => Ok(()),
        n => Err(internal(format!(
            "postgres: compare-and-set on {what} touched {n} rows"
        ))
        .into()),
    }
}

async fn put_namespace(
    conn: &mut PgConnection,
    ns: Namespace,
    expect: Expect,
) -> Result<Applied, TxError> {
    let sql = "SELECT version, doc FROM namespaces WHERE key = $1";
    let Put { item: ns, replaces } = plan_put(conn, sql, ns, expect).await?;
    let (value, doc) = CODEC.to_json(&ns, "namespace")?;
    if let Some(old_version) = replaces {
        let result = sqlx::query(
            "UPDATE namespaces SET version = $2, doc = $3 WHERE key = $1 AND version = $4",
        )
        .bind(&ns.key)
        .bind(CODEC.to_i64(ns.version)?)
        .bind(doc)
        .bind(CODEC.to_i64(old_version)?)
        .execute(&mut *conn)
        .await;
        expect_one_row(result, "a namespace")?;
    } else {
        sqlx::query("INSERT INTO namespaces (key, version, doc) VALUES ($1, $2, $3)")
            .bind(&ns.key)
            .bind(CODEC.to_i64(ns.version)?)
            .bind(doc)
            .execute(&mut *conn)
            .await?;
    }
    Ok(Applied::put(&ns, value))
}

async fn delete_namespace(
    conn: &mut PgConnection,
    key: String,
    expect: Expect,
) -> Result<Applied, TxError> {
    let kind = ResourceKind::Namespace;
    let sql = "SELECT version FROM namespaces WHERE key = $1";
    let stored = plan_delete(conn, sql, expect, kind, &key, &key).await?;
    let (occupied,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM flags WHERE namespace = $1) \
             OR EXISTS (SELECT 1 FROM segments WHERE namespace = $1) \
             OR EXISTS (SELECT 1 FROM configs WHERE namespace = $1)",
    )
    .bind(&key)
    .fetch_one(&mut *conn)
    .await?;
    plan::require_empty(&key, occupied)?;
    let result = sqlx::query("DELETE FROM namespaces WHERE key = $1 AND version = $2")
        .bind(&key)
        .bind(CODEC.to_i64(stored)?)
        .execute(&mut *conn)
        .await;
    expect_one_row(result, "a namespace")?;
    Ok(Applied::delete(kind, key.clone(), key))
}

async fn put_flag(conn: &mut PgConnection, flag: Flag, expect: Expect) -> Result<Applied, TxError> {
    require_namespace(conn, &flag.namespace).await?;
    let sql = "SELECT version, doc FROM flags WHERE namespace = $1 AND key = $2";
    let Put {
        item: flag,
        replaces,
    } = plan_put(conn, sql, flag, expect).await?;
    let (value, doc) = CODEC.to_json(&flag, "flag")?;
    let search = listing::search_text(&flag);
    match replaces {
        Some(old_version) => {
            let result = sqlx::query(
                "UPDATE flags SET version = $3, search = $4, doc = $5 \
                 WHERE namespace = $1 AND key = $2 AND version = $6",
            )
            .bind(&flag.namespace)
            .bind(&flag.key)
            .bind(CODEC.to_i64(flag.version)?)
            .bind(search.as_bytes())
            .bind(doc)
            .bind(CODEC.to_i64(old_version)?)
            .execute(&mut *conn)
            .await;
            expect_one_row(result, "a flag")?;
            sqlx::query("DELETE FROM flag_tags WHERE namespace = $1 AND key = $2")
                .bind(&flag.namespace)
                .bind(&flag.key)
                .execute(&mut *conn)
                .await?;
        }
        None => {
            sqlx::query(
                "INSERT INTO flags (namespace, key, version, search, doc) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&flag.namespace)
            .bind(&flag.key)
            .bind(CODEC.to_i64(flag.version)?)
            .bind(search.as_bytes())
            .bind(doc)
            .execute(&mut *conn)
            .await?;
        }
    }
    // A tag listed twice is one row (the document keeps the list as given). One statement for
    // all of them: the tags arrive as an array of byte strings.
    let tags: Vec<&[u8]> = flag
        .tags
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(String::as_bytes)
        .collect();
    if !tags.is_empty() {
        sqlx::query(
            "INSERT INTO flag_tags (namespace, key, tag) SELECT $1, $2, t FROM unnest($3) AS t",
        )
        .bind(&flag.namespace)
        .bind(&flag.key)
        .bind(tags)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Applied::put(&flag, value))
}

async fn put_segment(
    conn: &mut PgConnection,
    segment: Segment,
    expect: Expect,
) -> Result<Applied, TxError> {
    let sql = ScopedSql {
        select: "SELECT version, doc FROM segments WHERE namespace = $1 AND key = $2",
        update: "UPDATE segments SET version = $3, doc = $4 \
                 WHERE namespace = $1 AND key = $2 AND version = $5",
        insert: "INSERT INTO segments (namespace, key, version, doc) VALUES ($1, $2, $3, $4)",
    };
    Ok(put_scoped(conn, segment, expect, sql).await?.applied)
}

/// Puts a configuration entry and keeps the stamped entry as that version of its history.
async fn put_config(
    conn: &mut PgConnection,
    config: ConfigEntry,
    expect: Expect,
) -> Result<Applied, TxError> {
    let sql = ScopedSql {
        select: "SELECT version, doc FROM configs WHERE namespace = $1 AND key = $2",
        update: "UPDATE configs SET version = $3, doc = $4 \
                 WHERE namespace = $1 AND key = $2 AND version = $5",
        insert: "INSERT INTO configs (namespace, key, version, doc) VALUES ($1, $2, $3, $4)",
    };
    let Stored {
        applied,
        version,
        doc,
    } = put_scoped(conn, config, expect, sql).await?;
    sqlx::query(
        "INSERT INTO config_versions (namespace, key, version, doc) VALUES ($1, $2, $3, $4)",
    )
    .bind(&applied.namespace)
    .bind(&applied.key)
    .bind(version)
    .bind(doc)
    .execute(&mut *conn)
    .await?;
    Ok(applied)
}

/// The statements of [`put_scoped`] for one table of (namespace, key, version, doc) rows.
struct ScopedSql {
    /// Reads `(version, doc)` by namespace and key (`$1`, `$2`).
    select: &'static str,
    /// Replaces the row: binds namespace, key, version, doc and the version replaced (`$5`).
    update: &'static str,
    /// Creates the row: binds namespace, key, version and doc.
    insert: &'static str,
}

/// What [`put_scoped`] wrote: the change, and the row's version and document.
struct Stored {
    applied: Applied,
    version: i64,
    doc: String,
}

/// Puts a segment or config, whose rows are just (namespace, key, version, doc): plans the put
/// over the stored row (see [`plan_put`]), then updates it where it is still at the version
/// planned over, or inserts it.
async fn put_scoped<T: Versioned>(
    conn: &mut PgConnection,
    item: T,
    expect: Expect,
    sql: ScopedSql,
) -> Result<Stored, TxError> {
    require_namespace(conn, item.namespace()).await?;
    let Put { item, replaces } = plan_put(conn, sql.select, item, expect).await?;
    let (value, doc) = CODEC.to_json(&item, T::KIND.as_str())?;
    let version = CODEC.to_i64(item.version())?;
    let query = sqlx::query(if replaces.is_some() {
        sql.update
    } else {
        sql.insert
    })
    .bind(item.namespace())
    .bind(item.key())
    .bind(version)
    .bind(&doc);
    match replaces {
        Some(old_version) => {
            let result = query
                .bind(CODEC.to_i64(old_version)?)
                .execute(&mut *conn)
                .await;
            expect_one_row(result, T::KIND.as_str())?;
        }
        None => {
            query.execute(&mut *conn).await?;
        }
    }
    Ok(Stored {
        applied: Applied::put(&item, value),
        version,
        doc,
    })
}

/// Deletes a flag, segment or configuration entry (see [`plan::delete`]); a missing namespace
/// is reported as such.
async fn delete_scoped(
    conn: &mut PgConnection,
    kind: ResourceKind,
    namespace: String,
    key: String,
    expect: Expect,
    select: &'static str,
    delete: &'static str,
) -> Result<Applied, TxError> {
    require_namespace(conn, &namespace).await?;
    plan_delete(conn, select, expect, kind, &namespace, &key).await?;
    // Flag tags go with the flag, and a config's history with the config, through
    // `ON DELETE CASCADE`.
    let result = sqlx::query(delete)
        .bind(&namespace)
        .bind(&key)
        .execute(&mut *conn)
        .await;
    expect_one_row(result, kind.as_str())?;
    Ok(Applied::delete(kind, namespace, key))
}

/// Records events committed elsewhere (the distributed mode's etcd outbox) exactly once each:
/// events whose id is already in the log, or repeated within `events`, are not appended again.
/// Returns every given event as the log holds it, in the given order (a repeated id once).
pub(super) async fn record_relayed(
    conn: &mut PgConnection,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditEvent>, TxError> {
    // The same lock as every commit, so the chain's tail cannot move under us and two relays
    // (two replicas) cannot both decide that an id is new.
    lock_commits(conn).await?;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, doc FROM audit_events WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
    let mut known = std::collections::HashMap::with_capacity(events.len());
    for (id, doc) in rows {
        known.insert(id, CODEC.decode::<AuditEvent>(&doc, "audit event")?);
    }
    let mut seen = BTreeSet::new();
    let order: Vec<String> = events
        .iter()
        .filter(|e| seen.insert(e.id.clone()))
        .map(|e| e.id.clone())
        .collect();
    let fresh: Vec<AuditEvent> = {
        let mut taken = BTreeSet::new();
        events
            .into_iter()
            .filter(|e| !known.contains_key(&e.id) && taken.insert(e.id.clone()))
            .collect()
    };
    for event in append_audit(conn, fresh, None).await? {
        known.insert(event.id.clone(), event);
    }
    Ok(order.iter().filter_map(|id| known.remove(id)).collect())
}

/// Appends audit events after the last one, assigning `seq`, `prev_hash` and `hash`. The
/// revision row lock the caller holds makes "the last one" stable until this commits.
pub(super) async fn append_audit(
    conn: &mut PgConnection,
    events: Vec<AuditEvent>,
    revision: Option<Revision>,
) -> Result<Vec<AuditEvent>, TxError> {
    if events.is_empty() {
        return Ok(events);
    }
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await?;
    let (seq, hash) = match last {
        Some((seq, hash)) => (CODEC.to_u64(seq)?, hash),
        None => (0, String::new()),
    };
    let stored = plan::chain(events, seq, hash);
    let revision = revision.map(|r| CODEC.to_i64(r)).transpose()?;
    for event in &stored {
        let doc =
            serde_json::to_string(event).map_err(|e| from_json("encoding an audit event", &e))?;
        sqlx::query(
            "INSERT INTO audit_events \
               (seq, id, at, namespace, kind, key, action, revision, prev_hash, hash, doc) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(CODEC.to_i64(event.seq)?)
        .bind(&event.id)
        .bind(event.at)
        .bind(&event.namespace)
        .bind(event.kind.as_str())
        .bind(&event.key)
        .bind(&event.action)
        .bind(revision)
        .bind(&event.prev_hash)
        .bind(&event.hash)
        .bind(doc)
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            // Ids are the service's idempotency keys; a repeat is a caller bug, not a conflict
            // on the flag the caller is writing, so it gets no CAS-style error.
            sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
                TxError::from(internal(format!(
                    "postgres: audit event id {:?} is already recorded",
                    event.id
                )))
            }
            _ => TxError::from(e),
        })?;
    }
    Ok(stored)
}
