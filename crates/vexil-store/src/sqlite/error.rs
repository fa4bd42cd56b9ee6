//! Maps sqlx and SQLite failures to [`StoreError`], so no driver type leaves the backend.
//!
//! The split that matters to callers is "retry later" ([`StoreError::Unavailable`]: the file is
//! locked past the busy timeout, the disk is full or failing, the pool is exhausted) versus
//! "something is wrong" ([`StoreError::Internal`]). Either way nothing was written: every write
//! runs in one transaction that is rolled back on error.

use crate::StoreError;

// SQLite primary result codes (https://www.sqlite.org/rescode.html). Extended codes carry the
// primary code in their low byte, so `code & 0xff` classifies both.
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;

/// Classifies a sqlx error.
pub(crate) fn from_sqlx(err: sqlx::Error) -> StoreError {
    let transient = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            db.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|code| {
                    matches!(
                        code & 0xff,
                        SQLITE_BUSY
                            | SQLITE_LOCKED
                            | SQLITE_NOMEM
                            | SQLITE_IOERR
                            | SQLITE_FULL
                            | SQLITE_CANTOPEN
                            | SQLITE_PROTOCOL
                    )
                })
        }
        _ => false,
    };
    if transient {
        StoreError::Unavailable {
            message: format!("sqlite: {err}"),
        }
    } else {
        internal(format!("sqlite: {err}"))
    }
}

/// Classifies a migration failure: the database error inside it if there is one, otherwise the
/// migration set itself is broken (Internal).
pub(crate) fn from_migrate(err: sqlx::migrate::MigrateError) -> StoreError {
    match err {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => from_sqlx(e),
        other => internal(format!("sqlite migration: {other}")),
    }
}

/// A stored document that does not decode, or a value that does not encode.
pub(crate) fn from_json(what: &str, err: &serde_json::Error) -> StoreError {
    internal(format!("sqlite: {what}: {err}"))
}

pub(crate) fn internal(message: String) -> StoreError {
    StoreError::Internal { message }
}
