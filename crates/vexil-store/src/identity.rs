//! What the SQL backends share for [`IdentityStore`](crate::IdentityStore): the versioned
//! identity resources (users and custom roles) as one shape, and the errors of a failed
//! condition. The SQL itself stays in each backend.

use serde::Serialize;
use serde::de::DeserializeOwned;
use vexil_core::domain::ResourceKind;
use vexil_core::identity::{Role, User};

use crate::StoreError;

/// A resource written with [`Expect`](crate::Expect) conditions and stamped by the store: a
/// user or a custom role.
pub(crate) trait Versioned: Serialize + DeserializeOwned + Send {
    /// Its kind in errors.
    const KIND: ResourceKind;
    /// What it is called in decoding errors.
    const WHAT: &'static str;
    /// Its key (the name).
    fn name(&self) -> &str;
    /// Its version (as stamped).
    fn version(&self) -> u64;
    /// Sets the version the store assigns (previous + 1, or 1 for a create) and keeps the
    /// creation time of the resource it replaces.
    fn stamp(&mut self, previous: Option<&(u64, Self)>);
}

impl Versioned for User {
    const KIND: ResourceKind = ResourceKind::User;
    const WHAT: &'static str = "user";

    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn stamp(&mut self, previous: Option<&(u64, Self)>) {
        self.version = previous.map_or(1, |(v, _)| v + 1);
        if let Some((_, old)) = previous {
            self.created_at = old.created_at;
        }
    }
}

impl Versioned for Role {
    const KIND: ResourceKind = ResourceKind::Role;
    const WHAT: &'static str = "role";

    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> u64 {
        self.version
    }

    fn stamp(&mut self, previous: Option<&(u64, Self)>) {
        self.version = previous.map_or(1, |(v, _)| v + 1);
        if let Some((_, old)) = previous {
            self.created_at = old.created_at;
        }
    }
}

/// Identity resources live in no namespace: their errors carry an empty one.
pub(crate) fn not_found(kind: ResourceKind, key: &str) -> StoreError {
    StoreError::NotFound {
        kind,
        namespace: String::new(),
        key: key.to_owned(),
    }
}

/// As [`not_found`]: a create found the id (or, for a token, its digest) taken.
pub(crate) fn already_exists(kind: ResourceKind, key: &str) -> StoreError {
    StoreError::AlreadyExists {
        kind,
        namespace: String::new(),
        key: key.to_owned(),
    }
}
