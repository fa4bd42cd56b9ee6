//! [`IdentityStore`](crate::IdentityStore) on SQLite: the body of `commit_identity`, run inside
//! the caller's `BEGIN IMMEDIATE` transaction under the same writer lock as flag commits, and
//! the reads of `load_identity`.
//!
//! Writes apply in order, each reading the current row and checking its condition first, like flag
//! writes (`write.rs`), by the rules of [`crate::plan`] and [`crate::identity`]. The audit events
//! go through the flag commit's own [`append_audit`], so identity and flag events extend one hash
//! chain; the write lock (this process's, then SQLite's) keeps its tail stable until the
//! transaction commits. Any error returns early and the caller rolls everything back, the revision
//! bump included.

use sqlx::SqliteConnection;
use vexil_core::domain::{AuditEvent, ResourceKind};
use vexil_core::identity::{ApiToken, Binding, IdentityState, Role, User};

use super::CODEC;
use super::error::from_sqlx;
use super::write::{append_audit, plan_delete, plan_put};
use crate::identity;
use crate::plan::Versioned;
use crate::{Expect, IdentityCommitted, IdentityWrite, StoreError};

/// Bumps the identity revision (unless `writes` is empty), applies `writes` and appends
/// `audit`.
pub(super) async fn apply(
    conn: &mut SqliteConnection,
    writes: Vec<IdentityWrite>,
    audit: Vec<AuditEvent>,
) -> Result<IdentityCommitted, StoreError> {
    let revision = if writes.is_empty() {
        revision(conn).await?
    } else {
        let (next,): (i64,) = sqlx::query_as(
            "UPDATE identity_revision SET revision = revision + 1 WHERE singleton = 1 \
             RETURNING revision",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(from_sqlx)?;
        CODEC.to_u64(next)?
    };
    for write in writes {
        apply_one(conn, write).await?;
    }
    // No flag revision: identity events leave `audit_events.revision` NULL.
    let audit = append_audit(conn, audit, None).await?;
    Ok(IdentityCommitted { revision, audit })
}

async fn apply_one(conn: &mut SqliteConnection, write: IdentityWrite) -> Result<(), StoreError> {
    match write {
        IdentityWrite::PutUser { user, expect } => {
            put_versioned(
                conn,
                user,
                expect,
                "SELECT version, doc FROM users WHERE name = ?1",
                "INSERT INTO users (name, version, doc) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, doc = excluded.doc",
            )
            .await
        }
        IdentityWrite::DeleteUser { name, expect } => {
            delete_versioned(
                conn,
                ResourceKind::User,
                &name,
                expect,
                "SELECT version FROM users WHERE name = ?1",
                "DELETE FROM users WHERE name = ?1",
            )
            .await
        }
        IdentityWrite::PutRole { role, expect } => {
            put_versioned(
                conn,
                role,
                expect,
                "SELECT version, doc FROM roles WHERE name = ?1",
                "INSERT INTO roles (name, version, doc) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version, doc = excluded.doc",
            )
            .await
        }
        IdentityWrite::DeleteRole { name, expect } => {
            delete_versioned(
                conn,
                ResourceKind::Role,
                &name,
                expect,
                "SELECT version FROM roles WHERE name = ?1",
                "DELETE FROM roles WHERE name = ?1",
            )
            .await
        }
        IdentityWrite::CreateBinding { binding } => create_binding(conn, &binding).await,
        IdentityWrite::DeleteBinding { id } => {
            delete_by_id(
                conn,
                ResourceKind::Binding,
                &id,
                "DELETE FROM role_bindings WHERE id = ?1",
            )
            .await
        }
        IdentityWrite::CreateToken { token } => create_token(conn, &token).await,
        IdentityWrite::DeleteToken { id } => {
            delete_by_id(
                conn,
                ResourceKind::Token,
                &id,
                "DELETE FROM api_tokens WHERE id = ?1",
            )
            .await
        }
    }
}

/// Creates or replaces a user or role: the same read, plan and write as a flag put.
async fn put_versioned<T: Versioned>(
    conn: &mut SqliteConnection,
    item: T,
    expect: Expect,
    select: &'static str,
    upsert: &'static str,
) -> Result<(), StoreError> {
    let item = plan_put(conn, select, item, expect).await?;
    let (_, doc) = CODEC.to_json(&item, T::KIND.as_str())?;
    sqlx::query(upsert)
        .bind(item.key())
        .bind(CODEC.to_i64(item.version())?)
        .bind(doc)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Deletes a user or role. As for flags, the resource must exist whatever the condition.
async fn delete_versioned(
    conn: &mut SqliteConnection,
    kind: ResourceKind,
    name: &str,
    expect: Expect,
    select: &'static str,
    delete: &'static str,
) -> Result<(), StoreError> {
    plan_delete(conn, select, expect, kind, "", name).await?;
    sqlx::query(delete)
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// Deletes a binding or token, which have no versions.
async fn delete_by_id(
    conn: &mut SqliteConnection,
    kind: ResourceKind,
    id: &str,
    delete: &'static str,
) -> Result<(), StoreError> {
    let deleted = sqlx::query(delete)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?
        .rows_affected();
    identity::require_deleted(kind, id, deleted)
}

async fn create_binding(conn: &mut SqliteConnection, binding: &Binding) -> Result<(), StoreError> {
    let (taken,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM role_bindings WHERE id = ?1)")
            .bind(&binding.id)
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    identity::require_new(ResourceKind::Binding, &binding.id, taken)?;
    let (_, doc) = CODEC.to_json(binding, "binding")?;
    sqlx::query("INSERT INTO role_bindings (id, subject, doc) VALUES (?1, ?2, ?3)")
        .bind(&binding.id)
        .bind(binding.subject.to_string())
        .bind(doc)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

async fn create_token(conn: &mut SqliteConnection, token: &ApiToken) -> Result<(), StoreError> {
    let (taken,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = ?1 OR digest = ?2)")
            .bind(&token.id)
            .bind(&token.digest)
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    identity::require_new(ResourceKind::Token, &token.id, taken)?;
    let (_, doc) = CODEC.to_json(token, "token")?;
    sqlx::query("INSERT INTO api_tokens (id, digest, doc) VALUES (?1, ?2, ?3)")
        .bind(&token.id)
        .bind(&token.digest)
        .bind(doc)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    Ok(())
}

/// The identity revision.
pub(super) async fn revision(conn: &mut SqliteConnection) -> Result<u64, StoreError> {
    let (revision,): (i64,) =
        sqlx::query_as("SELECT revision FROM identity_revision WHERE singleton = 1")
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    CODEC.to_u64(revision)
}

/// Everything, on the caller's read transaction (one snapshot).
pub(super) async fn load(conn: &mut SqliteConnection) -> Result<IdentityState, StoreError> {
    let revision = revision(conn).await?;
    let users = docs::<User>(conn, "SELECT doc FROM users ORDER BY name", "user").await?;
    let roles = docs::<Role>(conn, "SELECT doc FROM roles ORDER BY name", "role").await?;
    let bindings =
        docs::<Binding>(conn, "SELECT doc FROM role_bindings ORDER BY id", "binding").await?;
    let tokens = docs::<ApiToken>(conn, "SELECT doc FROM api_tokens ORDER BY id", "token").await?;
    Ok(IdentityState {
        users,
        roles,
        bindings,
        tokens,
        revision,
    })
}

async fn docs<T: serde::de::DeserializeOwned>(
    conn: &mut SqliteConnection,
    sql: &'static str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    rows.iter().map(|(d,)| CODEC.decode(d, what)).collect()
}
