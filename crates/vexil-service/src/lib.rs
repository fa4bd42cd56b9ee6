//! `vexil-service` is the one place Vexil's business rules live: validation beyond syntax,
//! optimistic concurrency, audit records, import/export, and the per-namespace evaluation
//! snapshot cache that follows the store's change feed.
//!
//! Every transport (REST, OFREP, gRPC, WebSocket) is a thin adapter over this crate. It depends on
//! the core and on the storage *traits*; it must never depend on a transport (axum, tonic) or
//! name a particular backend.

mod audit;
mod configs;
mod error;
mod flags;
mod identity;
mod principal;
mod snapshot;

pub use audit::{AuditExport, AuditService, ChainReport};
pub use configs::{ConfigService, ConfigWritten};
pub use error::ServiceError;
pub use flags::{
    ChangeBatch, DEFAULT_NAMESPACE, EvaluateOutcome, FlagService, ImportDiff, ImportMode,
    ImportOutcome, ServiceOptions, WriteOptions,
};
pub use identity::{
    AuthConfig, Credential, IdentityService, MIN_JWT_SECRET_LEN, NewBinding, NewToken, NewUser,
    RoleInput, RoleView, SelfOrAdmin, Session, TOKEN_PREFIX, UserPatch, generate_jwt_secret,
};
pub use principal::{Pass, Permission, Principal, RequestMeta};
pub use snapshot::{NamespaceSnapshot, SnapshotCache};
pub use vexil_store::{ChainBreak, RelayStatus};

/// The stores a service needs, as trait objects chosen once at start-up.
pub trait Store:
    vexil_store::FlagStore
    + vexil_store::ChangeFeed
    + vexil_store::AuditStore
    + vexil_store::ConfigStore
{
}

impl<T> Store for T where
    T: vexil_store::FlagStore
        + vexil_store::ChangeFeed
        + vexil_store::AuditStore
        + vexil_store::ConfigStore
{
}
