//! Who is calling, and proof that they may.
//!
//! Service functions that read or mutate take a [`Pass`] for the permission they need. A `Pass`
//! can only be made by [`Principal::authorize`], so a path that skips the check does not
//! compile. Until RBAC lands (the security issue), every principal holds every permission; the
//! types are in place so that change touches one function.

use vexil_core::domain::Actor;

/// A permission, scoped to a namespace by the pass that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read flags, segments and namespaces.
    FlagRead,
    /// Create, change and delete flags, segments and namespaces.
    FlagWrite,
    /// Evaluate flags.
    Evaluate,
    /// Read the audit log.
    AuditRead,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Recorded in audit events.
    pub actor: Actor,
    /// The request id, recorded in audit events.
    pub request_id: Option<String>,
    /// The client address, recorded in audit events.
    pub source_ip: Option<String>,
}

impl Principal {
    /// An unauthenticated caller (the only kind until authentication lands).
    pub fn anonymous(request_id: Option<String>, source_ip: Option<String>) -> Self {
        Self {
            actor: Actor {
                kind: "anonymous".into(),
                id: "anonymous".into(),
            },
            request_id,
            source_ip,
        }
    }

    /// The server acting on its own behalf (start-up import).
    pub fn system() -> Self {
        Self {
            actor: Actor::system(),
            request_id: None,
            source_ip: None,
        }
    }

    /// Checks that this principal holds `permission` in `namespace` and returns the proof.
    ///
    /// # Errors
    /// None yet; the security issue adds Unauthenticated / Forbidden here.
    pub fn authorize(
        &self,
        permission: Permission,
        namespace: &str,
    ) -> Result<Pass<'_>, crate::ServiceError> {
        Ok(Pass {
            principal: self,
            permission,
            namespace: namespace.to_owned(),
        })
    }
}

/// Proof that a principal may do `permission` in `namespace`. Not constructible outside this
/// module.
#[derive(Debug)]
pub struct Pass<'p> {
    principal: &'p Principal,
    permission: Permission,
    namespace: String,
}

impl Pass<'_> {
    /// The principal that was checked.
    pub fn principal(&self) -> &Principal {
        self.principal
    }

    /// Fails unless this pass grants one of `permissions` in `namespace`.
    pub(crate) fn require_any(
        &self,
        permissions: &[Permission],
        namespace: &str,
    ) -> Result<(), crate::ServiceError> {
        match permissions.iter().find(|p| **p == self.permission) {
            Some(p) => self.require(*p, namespace),
            None => self.require(
                permissions.first().copied().unwrap_or(Permission::FlagRead),
                namespace,
            ),
        }
    }

    /// Fails unless this pass grants `permission` in `namespace`: a pass for one namespace or
    /// permission cannot be reused for another.
    pub(crate) fn require(
        &self,
        permission: Permission,
        namespace: &str,
    ) -> Result<(), crate::ServiceError> {
        if self.permission == permission && self.namespace == namespace {
            Ok(())
        } else {
            tracing::error!(
                ?permission,
                namespace,
                granted = ?self.permission,
                granted_ns = %self.namespace,
                "a pass was used for something it does not grant"
            );
            Err(crate::ServiceError::Internal)
        }
    }
}
