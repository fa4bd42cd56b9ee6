//! The body of [`FlagStore::commit`](crate::FlagStore::commit): applies a batch inside the
//! caller's transaction, after the caller has locked the revision counter row.
//!
//! Each write reads the current row, checks its [`Expect`], and writes the new state, so a key
//! that appears twice in a batch sees the first write's result: the batch behaves as its writes
//! applied one after another. Because every commit holds the revision row lock, these reads (at
//! READ COMMITTED, one fresh snapshot per statement) see every earlier commit, so the checks are
//! exact and the writes cannot be overtaken. Any error returns early and the caller rolls the
//! transaction back, which undoes the revision, the changes, the audit events and the
//! notification together.

use std::collections::BTreeSet;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgConnection;
use sqlx::error::ErrorKind;
use vexil_core::domain::{AuditEvent, Flag, Namespace, ResourceKind, Revision, Segment};

use super::error::{TxError, from_json, internal};
use super::{NOTIFY_CHANNEL, decode, not_found, require_namespace, to_i64, to_u64};
use crate::{Committed, Expect, StoreError, Write, chain_hash};

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
        let next = to_u64(next)?;
        sqlx::query("INSERT INTO revisions (revision, committed_at) VALUES ($1, $2)")
            .bind(to_i64(next)?)
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
        .bind(to_i64(revision.unwrap_or(current))?)
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
    Ok(to_u64(current)?)
}

/// What one write did, for the change row and the result.
struct Applied {
    kind: ResourceKind,
    namespace: String,
    key: String,
    after: Option<Value>,
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

/// Reads the stored `(version, document)` of one flag or segment, if any.
async fn fetch_scoped<T: DeserializeOwned>(
    conn: &mut PgConnection,
    sql: &'static str,
    namespace: &str,
    key: &str,
    what: &str,
) -> Result<Option<(u64, T)>, TxError> {
    let row: Option<(i64, String)> = sqlx::query_as(sql)
        .bind(namespace)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
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
    mut ns: Namespace,
    expect: Expect,
) -> Result<Applied, TxError> {
    let kind = ResourceKind::Namespace;
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT version, doc FROM namespaces WHERE key = $1")
            .bind(&ns.key)
            .fetch_optional(&mut *conn)
            .await?;
    let existing: Option<(u64, Namespace)> = row
        .map(|(v, doc)| Ok::<_, StoreError>((to_u64(v)?, decode(&doc, "namespace")?)))
        .transpose()?;
    check(
        expect,
        existing.as_ref().map(|(v, _)| *v),
        kind,
        &ns.key,
        &ns.key,
    )?;
    ns.version = next_version(existing.as_ref());
    if let Some((old_version, old)) = &existing {
        ns.created_at = old.created_at;
        let (value, doc) = to_json(&ns, "namespace")?;
        let result = sqlx::query(
            "UPDATE namespaces SET version = $2, doc = $3 WHERE key = $1 AND version = $4",
        )
        .bind(&ns.key)
        .bind(to_i64(ns.version)?)
        .bind(doc)
        .bind(to_i64(*old_version)?)
        .execute(&mut *conn)
        .await;
        expect_one_row(result, "a namespace")?;
        return Ok(Applied {
            kind,
            namespace: ns.key.clone(),
            key: ns.key,
            after: Some(value),
        });
    }
    let (value, doc) = to_json(&ns, "namespace")?;
    sqlx::query("INSERT INTO namespaces (key, version, doc) VALUES ($1, $2, $3)")
        .bind(&ns.key)
        .bind(to_i64(ns.version)?)
        .bind(doc)
        .execute(&mut *conn)
        .await?;
    Ok(Applied {
        kind,
        namespace: ns.key.clone(),
        key: ns.key,
        after: Some(value),
    })
}

async fn delete_namespace(
    conn: &mut PgConnection,
    key: String,
    expect: Expect,
) -> Result<Applied, TxError> {
    let kind = ResourceKind::Namespace;
    let row: Option<(i64,)> = sqlx::query_as("SELECT version FROM namespaces WHERE key = $1")
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?;
    let stored = row.map(|(v,)| to_u64(v)).transpose()?;
    check(expect, stored, kind, &key, &key)?;
    let Some(stored) = stored else {
        return Err(not_found(kind, &key, &key).into());
    };
    let (occupied,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM flags WHERE namespace = $1) \
             OR EXISTS (SELECT 1 FROM segments WHERE namespace = $1)",
    )
    .bind(&key)
    .fetch_one(&mut *conn)
    .await?;
    if occupied {
        return Err(StoreError::NamespaceNotEmpty { namespace: key }.into());
    }
    let result = sqlx::query("DELETE FROM namespaces WHERE key = $1 AND version = $2")
        .bind(&key)
        .bind(to_i64(stored)?)
        .execute(&mut *conn)
        .await;
    expect_one_row(result, "a namespace")?;
    Ok(Applied {
        kind,
        namespace: key.clone(),
        key,
        after: None,
    })
}

async fn put_flag(
    conn: &mut PgConnection,
    mut flag: Flag,
    expect: Expect,
) -> Result<Applied, TxError> {
    let kind = ResourceKind::Flag;
    require_namespace(conn, &flag.namespace).await?;
    let existing = fetch_scoped::<Flag>(
        conn,
        "SELECT version, doc FROM flags WHERE namespace = $1 AND key = $2",
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
    let old_version = existing.as_ref().map(|(v, _)| *v);
    if let Some((_, old)) = existing {
        flag.created_at = old.created_at;
        flag.created_by = old.created_by;
    }
    let (value, doc) = to_json(&flag, "flag")?;
    // U+001F (unit separator) between fields, so a search cannot match across two of them.
    let search =
        format!("{}\u{1f}{}\u{1f}{}", flag.key, flag.name, flag.description).to_lowercase();
    match old_version {
        Some(old_version) => {
            let result = sqlx::query(
                "UPDATE flags SET version = $3, search = $4, doc = $5 \
                 WHERE namespace = $1 AND key = $2 AND version = $6",
            )
            .bind(&flag.namespace)
            .bind(&flag.key)
            .bind(to_i64(flag.version)?)
            .bind(search.as_bytes())
            .bind(doc)
            .bind(to_i64(old_version)?)
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
            .bind(to_i64(flag.version)?)
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
    Ok(Applied {
        kind,
        namespace: flag.namespace,
        key: flag.key,
        after: Some(value),
    })
}

async fn put_segment(
    conn: &mut PgConnection,
    mut segment: Segment,
    expect: Expect,
) -> Result<Applied, TxError> {
    let kind = ResourceKind::Segment;
    require_namespace(conn, &segment.namespace).await?;
    let existing = fetch_scoped::<Segment>(
        conn,
        "SELECT version, doc FROM segments WHERE namespace = $1 AND key = $2",
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
    match existing {
        Some((old_version, _)) => {
            let result = sqlx::query(
                "UPDATE segments SET version = $3, doc = $4 \
                 WHERE namespace = $1 AND key = $2 AND version = $5",
            )
            .bind(&segment.namespace)
            .bind(&segment.key)
            .bind(to_i64(segment.version)?)
            .bind(doc)
            .bind(to_i64(old_version)?)
            .execute(&mut *conn)
            .await;
            expect_one_row(result, "a segment")?;
        }
        None => {
            sqlx::query(
                "INSERT INTO segments (namespace, key, version, doc) VALUES ($1, $2, $3, $4)",
            )
            .bind(&segment.namespace)
            .bind(&segment.key)
            .bind(to_i64(segment.version)?)
            .bind(doc)
            .execute(&mut *conn)
            .await?;
        }
    }
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
    conn: &mut PgConnection,
    kind: ResourceKind,
    namespace: String,
    key: String,
    expect: Expect,
    select: &'static str,
    delete: &'static str,
) -> Result<Applied, TxError> {
    require_namespace(conn, &namespace).await?;
    let row: Option<(i64,)> = sqlx::query_as(select)
        .bind(&namespace)
        .bind(&key)
        .fetch_optional(&mut *conn)
        .await?;
    let stored = row.map(|(v,)| to_u64(v)).transpose()?;
    check(expect, stored, kind, &namespace, &key)?;
    if stored.is_none() {
        return Err(not_found(kind, &namespace, &key).into());
    }
    // Flag tags go with the flag through `ON DELETE CASCADE`.
    let result = sqlx::query(delete)
        .bind(&namespace)
        .bind(&key)
        .execute(&mut *conn)
        .await;
    expect_one_row(result, kind.as_str())?;
    Ok(Applied {
        kind,
        namespace,
        key,
        after: None,
    })
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
        known.insert(id, decode::<AuditEvent>(&doc, "audit event")?);
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
            sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => {
                TxError::from(internal(format!(
                    "postgres: audit event id {:?} is already recorded",
                    event.id
                )))
            }
            _ => TxError::from(e),
        })?;
        prev_hash = event.hash.clone();
        stored.push(event);
    }
    Ok(stored)
}
