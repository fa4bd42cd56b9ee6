//! [`IdentityStore`](crate::IdentityStore) on PostgreSQL: the body of `commit_identity`, run in
//! the caller's READ COMMITTED transaction, and the reads of `load_identity`.
//!
//! An identity commit starts by locking the `revision_counter` row, exactly like a flag commit
//! (without moving it: identity writes consume no flag revision). That one lock serialises the
//! audit chain's tail across flag and identity commits of every replica, which is why the
//! events can go through the flag commit's own [`append_audit`]; and, as for flags, it makes
//! the condition checks below exact, since each statement sees every commit that released the
//! lock before. The identity revision row is locked second, always in that order, so the two
//! locks cannot deadlock. Writes are still `UPDATE … WHERE version = $old` as a second guard.
//! The conditions and the new states are the rules of [`crate::plan`] and [`crate::identity`].

use sqlx::PgConnection;
use vexil_core::domain::{AuditEvent, ResourceKind};
use vexil_core::identity::{ApiToken, Binding, IdentityState, Role, User};

use super::CODEC;
use super::error::{TxError, from_sqlx};
use super::write::{append_audit, expect_one_row, lock_commits, plan_delete, plan_put};
use crate::identity;
use crate::plan::{Put, Versioned};
use crate::{Expect, IdentityCommitted, IdentityWrite, StoreError};

/// Takes the commit lock, bumps the identity revision (unless `writes` is empty), applies
/// `writes` and appends `audit`.
pub(super) async fn apply(
    conn: &mut PgConnection,
    writes: Vec<IdentityWrite>,
    audit: Vec<AuditEvent>,
) -> Result<IdentityCommitted, TxError> {
    lock_commits(conn).await?;
    let revision = if writes.is_empty() {
        revision(conn).await?
    } else {
        let (next,): (i64,) = sqlx::query_as(
            "UPDATE identity_revision SET revision = revision + 1 WHERE singleton \
             RETURNING revision",
        )
        .fetch_one(&mut *conn)
        .await?;
        CODEC.to_u64(next)?
    };
    for write in writes {
        apply_one(conn, write).await?;
    }
    // No flag revision: identity events leave `audit_events.revision` NULL.
    let audit = append_audit(conn, audit, None).await?;
    Ok(IdentityCommitted { revision, audit })
}

async fn apply_one(conn: &mut PgConnection, write: IdentityWrite) -> Result<(), TxError> {
    match write {
        IdentityWrite::PutUser { user, expect } => {
            put_versioned(
                conn,
                user,
                expect,
                "SELECT version, doc FROM users WHERE name = $1",
                "UPDATE users SET version = $2, doc = $3 WHERE name = $1 AND version = $4",
                "INSERT INTO users (name, version, doc) VALUES ($1, $2, $3)",
            )
            .await
        }
        IdentityWrite::DeleteUser { name, expect } => {
            delete_versioned(
                conn,
                ResourceKind::User,
                &name,
                expect,
                "SELECT version FROM users WHERE name = $1",
                "DELETE FROM users WHERE name = $1 AND version = $2",
            )
            .await
        }
        IdentityWrite::PutRole { role, expect } => {
            put_versioned(
                conn,
                role,
                expect,
                "SELECT version, doc FROM roles WHERE name = $1",
                "UPDATE roles SET version = $2, doc = $3 WHERE name = $1 AND version = $4",
                "INSERT INTO roles (name, version, doc) VALUES ($1, $2, $3)",
            )
            .await
        }
        IdentityWrite::DeleteRole { name, expect } => {
            delete_versioned(
                conn,
                ResourceKind::Role,
                &name,
                expect,
                "SELECT version FROM roles WHERE name = $1",
                "DELETE FROM roles WHERE name = $1 AND version = $2",
            )
            .await
        }
        IdentityWrite::CreateBinding { binding } => create_binding(conn, &binding).await,
        IdentityWrite::DeleteBinding { id } => {
            delete_by_id(
                conn,
                ResourceKind::Binding,
                &id,
                "DELETE FROM role_bindings WHERE id = $1",
            )
            .await
        }
        IdentityWrite::CreateToken { token } => create_token(conn, &token).await,
        IdentityWrite::DeleteToken { id } => {
            delete_by_id(
                conn,
                ResourceKind::Token,
                &id,
                "DELETE FROM api_tokens WHERE id = $1",
            )
            .await
        }
    }
}

/// Creates or replaces a user or role: the same read, plan and write as a flag put.
async fn put_versioned<T: Versioned>(
    conn: &mut PgConnection,
    item: T,
    expect: Expect,
    select: &'static str,
    update: &'static str,
    insert: &'static str,
) -> Result<(), TxError> {
    let Put { item, replaces } = plan_put(conn, select, item, expect).await?;
    let (_, doc) = CODEC.to_json(&item, T::KIND.as_str())?;
    match replaces {
        Some(old_version) => {
            let result = sqlx::query(update)
                .bind(item.key())
                .bind(CODEC.to_i64(item.version())?)
                .bind(doc)
                .bind(CODEC.to_i64(old_version)?)
                .execute(&mut *conn)
                .await;
            expect_one_row(result, T::KIND.as_str())
        }
        None => {
            sqlx::query(insert)
                .bind(item.key())
                .bind(CODEC.to_i64(item.version())?)
                .bind(doc)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
    }
}

/// Deletes a user or role. As for flags, the resource must exist whatever the condition.
async fn delete_versioned(
    conn: &mut PgConnection,
    kind: ResourceKind,
    name: &str,
    expect: Expect,
    select: &'static str,
    delete: &'static str,
) -> Result<(), TxError> {
    let stored = plan_delete(conn, select, expect, kind, "", name).await?;
    let result = sqlx::query(delete)
        .bind(name)
        .bind(CODEC.to_i64(stored)?)
        .execute(&mut *conn)
        .await;
    expect_one_row(result, kind.as_str())
}

/// Deletes a binding or token, which have no versions.
async fn delete_by_id(
    conn: &mut PgConnection,
    kind: ResourceKind,
    id: &str,
    delete: &'static str,
) -> Result<(), TxError> {
    let deleted = sqlx::query(delete)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    Ok(identity::require_deleted(kind, id, deleted)?)
}

async fn create_binding(conn: &mut PgConnection, binding: &Binding) -> Result<(), TxError> {
    let (taken,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM role_bindings WHERE id = $1)")
            .bind(&binding.id)
            .fetch_one(&mut *conn)
            .await?;
    identity::require_new(ResourceKind::Binding, &binding.id, taken)?;
    let (_, doc) = CODEC.to_json(binding, "binding")?;
    sqlx::query("INSERT INTO role_bindings (id, subject, doc) VALUES ($1, $2, $3)")
        .bind(&binding.id)
        .bind(binding.subject.to_string())
        .bind(doc)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn create_token(conn: &mut PgConnection, token: &ApiToken) -> Result<(), TxError> {
    let (taken,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM api_tokens WHERE id = $1 OR digest = $2)")
            .bind(&token.id)
            .bind(&token.digest)
            .fetch_one(&mut *conn)
            .await?;
    identity::require_new(ResourceKind::Token, &token.id, taken)?;
    let (_, doc) = CODEC.to_json(token, "token")?;
    sqlx::query("INSERT INTO api_tokens (id, digest, doc) VALUES ($1, $2, $3)")
        .bind(&token.id)
        .bind(&token.digest)
        .bind(doc)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The identity revision.
pub(super) async fn revision(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let (revision,): (i64,) =
        sqlx::query_as("SELECT revision FROM identity_revision WHERE singleton")
            .fetch_one(&mut *conn)
            .await
            .map_err(from_sqlx)?;
    CODEC.to_u64(revision)
}

/// Everything, on the caller's read transaction (one snapshot).
pub(super) async fn load(conn: &mut PgConnection) -> Result<IdentityState, StoreError> {
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
    conn: &mut PgConnection,
    sql: &'static str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    rows.iter().map(|(d,)| CODEC.decode(d, what)).collect()
}
