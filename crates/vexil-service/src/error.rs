//! The service layer's error: what callers may be told, in domain terms. Every transport maps
//! it exhaustively (HTTP problem+json, gRPC status, OFREP error body).

use vexil_core::Violation;
use vexil_core::domain::ResourceKind;
use vexil_store::StoreError;

/// Why a service call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// The resource does not exist.
    #[error("{} not found", resource(kind, namespace, key))]
    NotFound {
        /// What kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// A create met an existing resource.
    #[error("{} already exists", resource(kind, namespace, key))]
    AlreadyExists {
        /// What kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
    },
    /// The caller's expected version is stale (HTTP 412 with If-Match).
    #[error(
        "{} is at version {actual}, not {expected}",
        resource(kind, namespace, key)
    )]
    VersionConflict {
        /// What kind.
        kind: ResourceKind,
        /// Namespace.
        namespace: String,
        /// Key.
        key: String,
        /// What the caller expected.
        expected: u64,
        /// What is stored.
        actual: u64,
    },
    /// The input breaks a rule; each violation names its field.
    #[error("invalid input: {}", violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Every broken rule.
        violations: Vec<Violation>,
    },
    /// The request conflicts with current state for a reason other than a version (e.g.
    /// deleting a namespace that still has flags, a segment still referenced).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// The store cannot be reached; nothing was written. Retry after the given seconds.
    #[error("service unavailable: the store cannot be reached")]
    Unavailable {
        /// Suggested wait.
        retry_after_secs: u32,
    },
    /// No valid credentials: none where they are required, or malformed, expired, revoked,
    /// or belonging to a disabled or deleted user. The message never echoes the credential.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// Why, for the caller.
        message: String,
    },
    /// Authenticated, but without the permission.
    #[error("forbidden: {permission} is required in namespace {namespace}")]
    Forbidden {
        /// The permission missing.
        permission: vexil_core::identity::Permission,
        /// Where (`*` for every namespace).
        namespace: String,
    },
    /// Too many attempts (logins); retry after the given seconds. Nothing was checked.
    #[error("too many attempts; retry in {retry_after_secs} s")]
    RateLimited {
        /// Suggested wait.
        retry_after_secs: u32,
    },
    /// A bug or corrupt data. Details were logged, not returned.
    #[error("internal error")]
    Internal,
}

/// Names a resource in messages: `flag prod/checkout`, but `namespace prod`. A namespace's key
/// is its own namespace, so the `ns/key` form would read `namespace prod/prod`.
fn resource(kind: &ResourceKind, namespace: &str, key: &str) -> String {
    match kind {
        ResourceKind::Namespace
        | ResourceKind::User
        | ResourceKind::Role
        | ResourceKind::Binding
        | ResourceKind::Token => format!("{} {key}", kind.as_str()),
        ResourceKind::Flag | ResourceKind::Segment | ResourceKind::Config => {
            format!("{} {namespace}/{key}", kind.as_str())
        }
    }
}

impl ServiceError {
    /// One violation at `path`.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::Invalid {
            violations: vec![Violation::new(path, message)],
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound {
                kind,
                namespace,
                key,
            } => ServiceError::NotFound {
                kind,
                namespace,
                key,
            },
            StoreError::AlreadyExists {
                kind,
                namespace,
                key,
            } => ServiceError::AlreadyExists {
                kind,
                namespace,
                key,
            },
            StoreError::VersionMismatch {
                kind,
                namespace,
                key,
                expected,
                actual,
            } => ServiceError::VersionConflict {
                kind,
                namespace,
                key,
                expected,
                actual,
            },
            StoreError::NamespaceNotEmpty { namespace } => ServiceError::Conflict {
                message: format!(
                    "namespace {namespace} still holds flags or segments; delete them first"
                ),
            },
            // Only `changes_since` can meet this, and `FlagService::changes_since` turns it into
            // `ChangeBatch::Resync`; anywhere else it is a bug.
            StoreError::ChangesCompacted { after, oldest } => {
                tracing::error!(after, oldest, "unexpected change-log compaction error");
                ServiceError::Internal
            }
            StoreError::TooLarge { message } => ServiceError::Invalid {
                violations: vec![Violation::new("", message)],
            },
            StoreError::Unavailable { message } => {
                tracing::warn!(%message, "store unavailable");
                ServiceError::Unavailable {
                    retry_after_secs: 1,
                }
            }
            StoreError::Internal { message } => {
                tracing::error!(%message, "store error");
                ServiceError::Internal
            }
        }
    }
}
