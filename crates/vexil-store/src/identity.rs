//! The identity write rules the SQL backends share for
//! [`IdentityStore`](crate::IdentityStore), without I/O: users and custom roles are
//! [`Versioned`] and follow the flag rules of [`crate::plan`] (with an empty namespace in their
//! errors); bindings and tokens have no versions, only "the id must be new" and "the id must be
//! there". The SQL itself stays in each backend.

use vexil_core::domain::ResourceKind;
use vexil_core::identity::{Role, User};

use crate::StoreError;
use crate::plan::{not_found, versioned};

// Identity resources live in no namespace: their errors carry an empty one.
versioned!(
    User,
    ResourceKind::User,
    |_u| namespace: "",
    key: &_u.name,
    keeps: [created_at]
);
versioned!(
    Role,
    ResourceKind::Role,
    |_r| namespace: "",
    key: &_r.name,
    keeps: [created_at]
);

/// Creating a binding or token needs its id new, and a token's digest too.
///
/// # Errors
/// [`StoreError::AlreadyExists`] for the new resource's `id` when it is `taken` (for a token,
/// also when its digest is: the error must not say which other token holds the digest).
pub(crate) fn require_new(kind: ResourceKind, id: &str, taken: bool) -> Result<(), StoreError> {
    if taken {
        Err(StoreError::AlreadyExists {
            kind,
            namespace: String::new(),
            key: id.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Deleting a binding or token needs it there (`deleted`: how many rows the delete removed).
///
/// # Errors
/// [`StoreError::NotFound`] when nothing was deleted.
pub(crate) fn require_deleted(
    kind: ResourceKind,
    id: &str,
    deleted: u64,
) -> Result<(), StoreError> {
    if deleted == 0 {
        Err(not_found(kind, "", id))
    } else {
        Ok(())
    }
}
