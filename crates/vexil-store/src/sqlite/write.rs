//! The body of [`FlagStore::commit`](crate::FlagStore::commit): applies a batch inside the
//! caller's `BEGIN IMMEDIATE` transaction.
//!
//! Each write reads the current row, has [`crate::plan`] check its [`Expect`] and work out the new
//! state, and writes that, so a key that appears twice in a batch sees the first write's result:
//! the batch behaves as its writes applied one after another. What stays here is the SQL: the
//! statements, their binding, and the tag rows and search column of a flag. Any error returns early
//! and the caller rolls the transaction back, which undoes the revision, the changes and the audit
//! events together.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::SqliteConnection;
use sqlx::error::ErrorKind;
use vexil_core::domain::{
    AuditEvent, ConfigEntry, Flag, Namespace, ResourceKind, Revision, Segment,
};

use super::error::{from_json, from_sqlx, internal};
use super::{CODEC, current_revision, require_namespace};
use crate::listing;
use crate::plan::{self, Applied, Versioned};
use crate::{Committed, Expect, StoreError, Write};

/// Applies `writes` under a new revision (none for an audit-only batch) and appends `audit`.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    writes: Vec<Write>,
    audit: Vec<AuditEvent>,
    now: i64,
) -> Result<Committed, StoreError> {
    let current = current_revision(conn).await?;
    // Allocated inside the write transaction, so a rollback gives the number back and
    // revisions become visible in increasing order.
    let revision = if writes.is_empty() {
        None
    } else {
        let next = current + 1;
        sqlx::query("INSERT INTO revisions (revision, committed_at) VALUES (?1, ?2)")
            .bind(CODEC.to_i64(next)?)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
        Some(next)
    };

    let mut results = Vec::with_capacity(writes.len());
    for (ordinal, write) in writes.into_iter().enumerate() {
        let applied = apply_one(conn, write).await?;
        sqlx::query(
            "INSERT INTO changes (revision, ordinal, namespace, kind, key, after) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(CODEC.to_i64(revision.unwrap_or(current))?)
        .bind(i64::try_from(ordinal).unwrap_or(i64::MAX))
        .bind(&applied.namespace)
        .bind(applied.kind.as_str())
        .bind(&applied.key)
        .bind(applied.after.as_ref().map(Value::to_string))
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        results.push(applied.after);
    }

    let audit = append_audit(conn, audit, revision).await?;
    Ok(Committed {
        revision: revision.unwrap_or(current),
        results,
        audit,
    })
}

async fn apply_one(conn: &mut SqliteConnection, write: Write) -> Result<Applied, StoreError> {
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
                "SELECT version FROM flags WHERE namespace = ?1 AND key = ?2",
                "DELETE FROM flags WHERE namespace = ?1 AND key = ?2",
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
                "SELECT version FROM configs WHERE namespace = ?1 AND key = ?2",
                "DELETE FROM configs WHERE namespace = ?1 AND key = ?2",
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
                "SELECT version FROM segments WHERE namespace = ?1 AND key = ?2",
                "DELETE FROM segments WHERE namespace = ?1 AND key = ?2",
            )
            .await
        }
    }
}

/// Reads the stored `(version, document)` of one row, if any, and plans the put of `item` over
/// it. `sql` selects by namespace and key (`?1`, `?2`) for a kind that lives in a namespace,
/// else by key (`?1`).
pub(super) async fn plan_put<T: Versioned>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    item: T,
    expect: Expect,
) -> Result<T, StoreError> {
    let query = sqlx::query_as(sql);
    let query = if plan::in_namespace(T::KIND) {
        query.bind(item.namespace()).bind(item.key())
    } else {
        query.bind(item.key())
    };
    let row: Option<(i64, String)> = query.fetch_optional(&mut *conn).await.map_err(from_sqlx)?;
    Ok(plan::put(item, expect, CODEC.versioned(row)?)?.item)
}

/// Reads the stored version of one row (`None`: absent), selected as in [`plan_put`], and plans
/// its delete.
pub(super) async fn plan_delete(
    conn: &mut SqliteConnection,
    sql: &'static str,
    expect: Expect,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> Result<(), StoreError> {
    let query = sqlx::query_as(sql);
    let query = if plan::in_namespace(kind) {
        query.bind(namespace).bind(key)
    } else {
        query.bind(key)
    };
    let row: Option<(i64,)> = query.fetch_optional(&mut *conn).await.map_err(from_sqlx)?;
    let stored = row.map(|(v,)| CODEC.to_u64(v)).transpose()?;
    plan::delete(expect, stored, kind, namespace, key)?;
    Ok(())
}

async fn put_namespace(
    conn: &mut SqliteConnection,
    ns: Namespace,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let sql = "SELECT version, doc FROM namespaces WHERE key = ?1";
    let ns = plan_put(conn, sql, ns, expect).await?;
    let (value, doc) = CODEC.to_json(&ns, "namespace")?;
    sqlx::query(
        "INSERT INTO namespaces (key, version, doc) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET version = excluded.version, doc = excluded.doc",
    )
    .bind(&ns.key)
    .bind(CODEC.to_i64(ns.version)?)
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(Applied::put(&ns, value))
}

async fn delete_namespace(
    conn: &mut SqliteConnection,
    key: String,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let kind = ResourceKind::Namespace;
    let sql = "SELECT version FROM namespaces WHERE key = ?1";
    plan_delete(conn, sql, expect, kind, &key, &key).await?;
    let (occupied,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM flags WHERE namespace = ?1) \
             OR EXISTS (SELECT 1 FROM segments WHERE namespace = ?1) \
             OR EXISTS (SELECT 1 FROM configs WHERE namespace = ?1)",
    )
    .bind(&key)
    .fetch_one(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    plan::require_empty(&key, occupied)?;
    sqlx::query("DELETE FROM namespaces WHERE key = ?1")
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(Applied::delete(kind, key.clone(), key))
}

async fn put_flag(
    conn: &mut SqliteConnection,
    flag: Flag,
    expect: Expect,
) -> Result<Applied, StoreError> {
    require_namespace(conn, &flag.namespace).await?;
    let sql = "SELECT version, doc FROM flags WHERE namespace = ?1 AND key = ?2";
    let flag = plan_put(conn, sql, flag, expect).await?;
    let (value, doc) = CODEC.to_json(&flag, "flag")?;
    sqlx::query(
        "INSERT INTO flags (namespace, key, version, search, doc) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (namespace, key) DO UPDATE SET \
           version = excluded.version, search = excluded.search, doc = excluded.doc",
    )
    .bind(&flag.namespace)
    .bind(&flag.key)
    .bind(CODEC.to_i64(flag.version)?)
    .bind(listing::search_text(&flag))
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    sqlx::query("DELETE FROM flag_tags WHERE namespace = ?1 AND key = ?2")
        .bind(&flag.namespace)
        .bind(&flag.key)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    // A tag listed twice is one row (the document keeps the list as given).
    for tag in flag.tags.iter().collect::<BTreeSet<_>>() {
        sqlx::query("INSERT INTO flag_tags (namespace, key, tag) VALUES (?1, ?2, ?3)")
            .bind(&flag.namespace)
            .bind(&flag.key)
            .bind(tag)
            .execute(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    }
    Ok(Applied::put(&flag, value))
}

async fn put_segment(
    conn: &mut SqliteConnection,
    segment: Segment,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let select = "SELECT version, doc FROM segments WHERE namespace = ?1 AND key = ?2";
    let upsert = "INSERT INTO segments (namespace, key, version, doc) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, key) DO UPDATE SET version = excluded.version, doc = excluded.doc";
    Ok(put_scoped(conn, segment, expect, select, upsert)
        .await?
        .applied)
}

/// Puts a configuration entry and keeps the stamped entry as that version of its history.
async fn put_config(
    conn: &mut SqliteConnection,
    config: ConfigEntry,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let select = "SELECT version, doc FROM configs WHERE namespace = ?1 AND key = ?2";
    let upsert = "INSERT INTO configs (namespace, key, version, doc) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, key) DO UPDATE SET version = excluded.version, doc = excluded.doc";
    let Stored {
        applied,
        version,
        doc,
    } = put_scoped(conn, config, expect, select, upsert).await?;
    sqlx::query(
        "INSERT INTO config_versions (namespace, key, version, doc) VALUES (?1, ?2, ?3, ?4)",
    )
    .bind(&applied.namespace)
    .bind(&applied.key)
    .bind(version)
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(applied)
}

/// What [`put_scoped`] wrote: the change, and the row's version and document.
struct Stored {
    applied: Applied,
    version: i64,
    doc: String,
}

/// Puts a segment or config, whose rows are just (namespace, key, version, doc): plans the put
/// over the row `select` reads (see [`plan_put`]) and writes it with `upsert`, which binds
/// those four columns as `?1`..`?4`.
async fn put_scoped<T: Versioned>(
    conn: &mut SqliteConnection,
    item: T,
    expect: Expect,
    select: &'static str,
    upsert: &'static str,
) -> Result<Stored, StoreError> {
    require_namespace(conn, item.namespace()).await?;
    let item = plan_put(conn, select, item, expect).await?;
    let (value, doc) = CODEC.to_json(&item, T::KIND.as_str())?;
    let version = CODEC.to_i64(item.version())?;
    sqlx::query(upsert)
        .bind(item.namespace())
        .bind(item.key())
        .bind(version)
        .bind(&doc)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(Stored {
        applied: Applied::put(&item, value),
        version,
        doc,
    })
}

/// Deletes a flag, segment or configuration entry (see [`plan::delete`]); a missing namespace
/// is reported as such.
async fn delete_scoped(
    conn: &mut SqliteConnection,
    kind: ResourceKind,
    namespace: String,
    key: String,
    expect: Expect,
    select: &'static str,
    delete: &'static str,
) -> Result<Applied, StoreError> {
    require_namespace(conn, &namespace).await?;
    plan_delete(conn, select, expect, kind, &namespace, &key).await?;
    // Flag tags go with the flag, and a config's history with the config, through
    // `ON DELETE CASCADE`.
    sqlx::query(delete)
        .bind(&namespace)
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(Applied::delete(kind, namespace, key))
}

/// Appends audit events after the last one, assigning `seq`, `prev_hash` and `hash`.
pub(super) async fn append_audit(
    conn: &mut SqliteConnection,
    events: Vec<AuditEvent>,
    revision: Option<Revision>,
) -> Result<Vec<AuditEvent>, StoreError> {
    if events.is_empty() {
        return Ok(events);
    }
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(from_sqlx)?;
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
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
            sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => internal(
                format!("sqlite: audit event id {:?} is already recorded", event.id),
            ),
            _ => from_sqlx(e),
        })?;
    }
    Ok(stored)
}
