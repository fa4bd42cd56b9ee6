//! The body of [`FlagStore::commit`](crate::FlagStore::commit): applies a batch inside the
//! caller's `BEGIN IMMEDIATE` transaction.
//!
//! Each write reads the current row, checks its [`Expect`], and writes the new state, so a key
//! that appears twice in a batch sees the first write's result: the batch behaves as its writes
//! applied one after another. Any error returns early and the caller rolls the transaction
//! back, which undoes the revision, the changes and the audit events together.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::SqliteConnection;
use sqlx::error::ErrorKind;
use vexil_core::domain::{AuditEvent, Flag, Namespace, ResourceKind, Revision, Segment};

use super::error::{from_json, from_sqlx, internal};
use super::{current_revision, decode, not_found, require_namespace, to_i64, to_u64};
use crate::{Committed, Expect, StoreError, Write, chain_hash};

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
            .bind(to_i64(next)?)
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
        .bind(to_i64(revision.unwrap_or(current))?)
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

/// What one write did, for the change row and the result.
struct Applied {
    kind: ResourceKind,
    namespace: String,
    key: String,
    after: Option<Value>,
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

/// Checks a write's condition against the stored version (`None`: absent).
pub(super) fn check(
    expect: Expect,
    stored: Option<u64>,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
) -> Result<(), StoreError> {
    match (expect, stored) {
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists {
            kind,
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        }),
        (Expect::Version(expected), Some(actual)) if expected != actual => {
            Err(StoreError::VersionMismatch {
                kind,
                namespace: namespace.to_owned(),
                key: key.to_owned(),
                expected,
                actual,
            })
        }
        (Expect::Version(_) | Expect::Exists, None) => Err(not_found(kind, namespace, key)),
        _ => Ok(()),
    }
}

/// Reads the stored `(version, document)` of one row, if any.
async fn fetch_existing<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    namespace: &str,
    key: &str,
    what: &str,
) -> Result<Option<(u64, T)>, StoreError> {
    // Every SELECT here names `?2` for the key; the namespace table's ignores `?1`, which is
    // the same key. SQLite sizes the parameter list by the highest index used.
    let row: Option<(i64, String)> = sqlx::query_as(sql)
        .bind(namespace)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    row.map(|(version, doc)| Ok((to_u64(version)?, decode(&doc, what)?)))
        .transpose()
}

/// The version a put stores: 1 for a create, previous + 1 for a replace.
fn next_version<T>(existing: Option<&(u64, T)>) -> u64 {
    existing.map_or(1, |(v, _)| v + 1)
}

pub(super) fn to_json<T: Serialize>(value: &T, what: &str) -> Result<(Value, String), StoreError> {
    let value =
        serde_json::to_value(value).map_err(|e| from_json(&format!("encoding a {what}"), &e))?;
    // The stored text is the serialisation of the very `Value` returned, so what callers get
    // back from `commit` and from later reads is the same JSON.
    let text = value.to_string();
    Ok((value, text))
}

async fn put_namespace(
    conn: &mut SqliteConnection,
    mut ns: Namespace,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let existing = fetch_existing::<Namespace>(
        conn,
        "SELECT version, doc FROM namespaces WHERE key = ?2",
        &ns.key,
        &ns.key,
        "namespace",
    )
    .await?;
    check(
        expect,
        existing.as_ref().map(|(v, _)| *v),
        ResourceKind::Namespace,
        &ns.key,
        &ns.key,
    )?;
    ns.version = next_version(existing.as_ref());
    if let Some((_, old)) = &existing {
        ns.created_at = old.created_at;
    }
    let (value, doc) = to_json(&ns, "namespace")?;
    sqlx::query(
        "INSERT INTO namespaces (key, version, doc) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET version = excluded.version, doc = excluded.doc",
    )
    .bind(&ns.key)
    .bind(to_i64(ns.version)?)
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(Applied {
        kind: ResourceKind::Namespace,
        namespace: ns.key.clone(),
        key: ns.key,
        after: Some(value),
    })
}

async fn delete_namespace(
    conn: &mut SqliteConnection,
    key: String,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let kind = ResourceKind::Namespace;
    let row: Option<(i64,)> = sqlx::query_as("SELECT version FROM namespaces WHERE key = ?1")
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let stored = row.map(|(v,)| to_u64(v)).transpose()?;
    check(expect, stored, kind, &key, &key)?;
    if stored.is_none() {
        return Err(not_found(kind, &key, &key));
    }
    let (occupied,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM flags WHERE namespace = ?1) \
             OR EXISTS (SELECT 1 FROM segments WHERE namespace = ?1)",
    )
    .bind(&key)
    .fetch_one(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    if occupied {
        return Err(StoreError::NamespaceNotEmpty { namespace: key });
    }
    sqlx::query("DELETE FROM namespaces WHERE key = ?1")
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(Applied {
        kind,
        namespace: key.clone(),
        key,
        after: None,
    })
}

async fn put_flag(
    conn: &mut SqliteConnection,
    mut flag: Flag,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let kind = ResourceKind::Flag;
    require_namespace(conn, &flag.namespace).await?;
    let existing = fetch_existing::<Flag>(
        conn,
        "SELECT version, doc FROM flags WHERE namespace = ?1 AND key = ?2",
        &flag.namespace,
        &flag.key,
        "flag",
    )
    .await?;
    check(
        expect,
        existing.as_ref().map(|(v, _)| *v),
        kind,
        &flag.namespace,
        &flag.key,
    )?;
    flag.version = next_version(existing.as_ref());
    if let Some((_, old)) = existing {
        flag.created_at = old.created_at;
        flag.created_by = old.created_by;
    }
    let (value, doc) = to_json(&flag, "flag")?;
    // U+001F (unit separator) between fields, so a search cannot match across two of them.
    let search =
        format!("{}\u{1f}{}\u{1f}{}", flag.key, flag.name, flag.description).to_lowercase();
    sqlx::query(
        "INSERT INTO flags (namespace, key, version, search, doc) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (namespace, key) DO UPDATE SET \
           version = excluded.version, search = excluded.search, doc = excluded.doc",
    )
    .bind(&flag.namespace)
    .bind(&flag.key)
    .bind(to_i64(flag.version)?)
    .bind(search)
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
    Ok(Applied {
        kind,
        namespace: flag.namespace,
        key: flag.key,
        after: Some(value),
    })
}

async fn put_segment(
    conn: &mut SqliteConnection,
    mut segment: Segment,
    expect: Expect,
) -> Result<Applied, StoreError> {
    let kind = ResourceKind::Segment;
    require_namespace(conn, &segment.namespace).await?;
    let existing = fetch_existing::<Segment>(
        conn,
        "SELECT version, doc FROM segments WHERE namespace = ?1 AND key = ?2",
        &segment.namespace,
        &segment.key,
        "segment",
    )
    .await?;
    check(
        expect,
        existing.as_ref().map(|(v, _)| *v),
        kind,
        &segment.namespace,
        &segment.key,
    )?;
    segment.version = next_version(existing.as_ref());
    if let Some((_, old)) = &existing {
        segment.created_at = old.created_at;
    }
    let (value, doc) = to_json(&segment, "segment")?;
    sqlx::query(
        "INSERT INTO segments (namespace, key, version, doc) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (namespace, key) DO UPDATE SET version = excluded.version, doc = excluded.doc",
    )
    .bind(&segment.namespace)
    .bind(&segment.key)
    .bind(to_i64(segment.version)?)
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(from_sqlx)?;
    Ok(Applied {
        kind,
        namespace: segment.namespace,
        key: segment.key,
        after: Some(value),
    })
}

/// Deletes a flag or segment. Deleting requires the resource to exist whatever the condition
/// (so `Expect::Any` on a missing one is `NotFound`, not a silent no-op that would still emit a
/// change), and a missing namespace is reported as such.
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
    let row: Option<(i64,)> = sqlx::query_as(select)
        .bind(&namespace)
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    let stored = row.map(|(v,)| to_u64(v)).transpose()?;
    check(expect, stored, kind, &namespace, &key)?;
    if stored.is_none() {
        return Err(not_found(kind, &namespace, &key));
    }
    // Flag tags go with the flag through `ON DELETE CASCADE`.
    sqlx::query(delete)
        .bind(&namespace)
        .bind(&key)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(Applied {
        kind,
        namespace,
        key,
        after: None,
    })
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
    let (mut seq, mut prev_hash) = match last {
        Some((seq, hash)) => (to_u64(seq)?, hash),
        None => (0, String::new()),
    };
    let revision = revision.map(to_i64).transpose()?;
    let mut stored = Vec::with_capacity(events.len());
    for mut event in events {
        seq += 1;
        event.seq = seq;
        event.prev_hash = prev_hash;
        event.hash = chain_hash(&event.prev_hash, &event);
        let doc =
            serde_json::to_string(&event).map_err(|e| from_json("encoding an audit event", &e))?;
        sqlx::query(
            "INSERT INTO audit_events \
               (seq, id, at, namespace, kind, key, action, revision, prev_hash, hash, doc) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(to_i64(seq)?)
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
        prev_hash = event.hash.clone();
        stored.push(event);
    }
    Ok(stored)
}
