//! Maps sqlx and PostgreSQL failures to [`StoreError`], so no driver type leaves the backend.
//!
//! The split that matters to callers is "retry later" ([`StoreError::Unavailable`]: the server
//! cannot be reached, is shutting down, is out of connections or resources, a lock or statement
//! timed out, the pool is exhausted) versus "something is wrong" ([`StoreError::Internal`]).
//! Either way nothing was written: every write runs in one transaction that is rolled back on
//! error. Inside a commit, serialization failures and deadlocks are classified separately
//! ([`TxError::Retry`]): `commit` retries them itself before giving up with `Unavailable`.

use crate::StoreError;

/// Classifies a sqlx error.
pub(crate) fn from_sqlx(err: sqlx::Error) -> StoreError {
    let transient = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_sqlstate(&code)),
        _ => false,
    };
    if transient {
        StoreError::Unavailable {
            message: format!("postgres: {err}"),
        }
    } else {
        internal(format!("postgres: {err}"))
    }
}

/// Why one commit transaction failed.
#[derive(Debug)]
pub(crate) enum TxError {
    /// A serialization failure or a deadlock: worth running the whole transaction again.
    /// Neither is expected under the revision row lock (every commit takes it first, at READ
    /// COMMITTED), but a session outside Vexil taking locks in another order can still cause
    /// a deadlock, and the retry keeps that from surfacing as an error.
    Retry(sqlx::Error),
    /// Anything else, already classified.
    Failed(StoreError),
}

impl From<sqlx::Error> for TxError {
    fn from(err: sqlx::Error) -> Self {
        let retryable = matches!(&err, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c == "40001" || c == "40P01"));
        if retryable {
            Self::Retry(err)
        } else {
            Self::Failed(from_sqlx(err))
        }
    }
}

impl From<StoreError> for TxError {
    fn from(err: StoreError) -> Self {
        Self::Failed(err)
    }
}

/// SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) that mean "the
/// database cannot serve this now" rather than "this request is wrong".
fn transient_sqlstate(code: &str) -> bool {
    // Class 08: connection exception. Class 53: insufficient resources (too many connections,
    // disk full, out of memory). Class 57P: operator intervention (admin/crash shutdown,
    // cannot connect now, database dropped). Class 58: system errors (I/O).
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code.starts_with("58")
        || matches!(
            code,
            "40001" // serialization_failure (after retries)
            | "40P01" // deadlock_detected (after retries)
            | "55P03" // lock_not_available: lock_timeout
            | "57014" // query_canceled: statement_timeout
            | "25006" // read_only_sql_transaction: connected to a standby after failover
            | "25P03" // idle_in_transaction_session_timeout
            | "3D000" // invalid_catalog_name: the database does not exist (yet)
        )
}

/// Classifies a migration failure: the database error inside it if there is one, otherwise the
/// migration set itself is broken (Internal).
pub(crate) fn from_migrate(err: sqlx::migrate::MigrateError) -> StoreError {
    match err {
        sqlx::migrate::MigrateError::Execute(e)
        | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => from_sqlx(e),
        other => internal(format!("postgres migration: {other}")),
    }
}

/// A stored document that does not decode, or a value that does not encode.
pub(crate) fn from_json(what: &str, err: &serde_json::Error) -> StoreError {
    internal(format!("postgres: {what}: {err}"))
}

pub(crate) fn internal(message: String) -> StoreError {
    StoreError::Internal { message }
}

#[cfg(test)]
mod tests {
    use super::transient_sqlstate;

    #[test]
    fn connection_resource_and_timeout_states_are_transient_and_data_errors_are_not() {
        for code in [
            "08006", "08001", "53300", "53100", "57P01", "57P03", "55P03", "57014", "40001",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "23503", "22P02", "42P01", "42601"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }
}
