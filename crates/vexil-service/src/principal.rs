//! Who is calling, and proof that they may.
//!
//! Service functions that read or mutate take a [`Pass`] for the permission they need. A `Pass`
//! can only be made by [`Principal::authorize`] (or [`Principal::authorize_listing`]), so a path
//! that skips the check does not compile. Principals are made by
//! [`crate::IdentityService::authenticate`], which resolves the caller's grants once per request
//! from the in-memory identity snapshot.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use vexil_core::domain::Actor;
use vexil_core::identity::{ALL_NAMESPACES, Grants, Subject};

use crate::ServiceError;
use crate::SnapshotCache;

pub use vexil_core::identity::Permission;

/// An authenticated user or token as requests see it: its actor, subject and grants. Built
/// once per user and token with the identity snapshot and shared by every request that
/// authenticates as it, so authenticating copies no strings (a principal used to copy the
/// actor's two and the subject's one on every request).
#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) actor: Actor,
    pub(crate) subject: Subject,
    pub(crate) grants: Arc<Grants>,
}

impl Identity {
    pub(crate) fn user(name: &str, grants: Grants) -> Self {
        Self {
            actor: Actor {
                kind: "user".into(),
                id: name.to_owned(),
            },
            subject: Subject::User(name.to_owned()),
            grants: Arc::new(grants),
        }
    }

    pub(crate) fn token(id: &str, grants: Grants) -> Self {
        Self {
            actor: Actor {
                kind: "token".into(),
                id: id.to_owned(),
            },
            subject: Subject::Token(id.to_owned()),
            grants: Arc::new(grants),
        }
    }
}

/// What a principal may do.
#[derive(Clone)]
enum Access {
    /// The server itself: everything.
    System,
    /// An authenticated user or token.
    Granted(Arc<Identity>),
    /// No credentials: evaluation in namespaces that opted in, nothing else.
    Anonymous { cache: SnapshotCache },
}

/// The actor of [`Principal::system`].
static SYSTEM_ACTOR: LazyLock<Actor> = LazyLock::new(Actor::system);

/// The actor of anonymous principals.
static ANONYMOUS_ACTOR: LazyLock<Actor> = LazyLock::new(|| Actor {
    kind: "anonymous".into(),
    id: "anonymous".into(),
});

/// The caller of one request, with what it may do.
#[derive(Clone)]
pub struct Principal {
    /// The request id, recorded in audit events.
    pub request_id: Option<String>,
    /// The client address, recorded in audit events.
    pub source_ip: Option<IpAddr>,
    access: Access,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("actor", self.actor())
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// Where a request came from, for audit records and rate limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestMeta {
    /// The request id.
    pub request_id: Option<String>,
    /// The client address (formatted only when an audit record needs it).
    pub source_ip: Option<IpAddr>,
}

impl Principal {
    /// The server acting on its own behalf (start-up import, bootstrap).
    pub fn system() -> Self {
        Self {
            request_id: None,
            source_ip: None,
            access: Access::System,
        }
    }

    pub(crate) fn granted(identity: Arc<Identity>, meta: RequestMeta) -> Self {
        Self {
            request_id: meta.request_id,
            source_ip: meta.source_ip,
            access: Access::Granted(identity),
        }
    }

    pub(crate) fn anonymous(cache: SnapshotCache, meta: RequestMeta) -> Self {
        Self {
            request_id: meta.request_id,
            source_ip: meta.source_ip,
            access: Access::Anonymous { cache },
        }
    }

    /// Who this is, as audit events record it: `system`, `anonymous`, or the user or token.
    pub fn actor(&self) -> &Actor {
        match &self.access {
            Access::System => &SYSTEM_ACTOR,
            Access::Granted(identity) => &identity.actor,
            Access::Anonymous { .. } => &ANONYMOUS_ACTOR,
        }
    }

    /// The user or token behind this principal (`None` for the system and anonymous callers).
    pub fn subject(&self) -> Option<&Subject> {
        match &self.access {
            Access::Granted(identity) => Some(&identity.subject),
            Access::System | Access::Anonymous { .. } => None,
        }
    }

    /// Whether the caller presented no credentials.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.access, Access::Anonymous { .. })
    }

    /// Whether this principal holds `permission` in `namespace` (`*`: in every namespace).
    pub fn allows(&self, permission: Permission, namespace: &str) -> bool {
        match &self.access {
            Access::System => true,
            Access::Granted(identity) => identity.grants.allows(permission, namespace),
            Access::Anonymous { cache } => {
                permission == Permission::Evaluate
                    && namespace != ALL_NAMESPACES
                    && cache
                        .get(namespace)
                        .is_some_and(|s| s.namespace.anonymous_evaluation)
            }
        }
    }

    /// The grants of an authenticated principal (`None` for system and anonymous).
    pub(crate) fn grants(&self) -> Option<&Grants> {
        match &self.access {
            Access::Granted(identity) => Some(&identity.grants),
            Access::System | Access::Anonymous { .. } => None,
        }
    }

    fn refuse(&self, permission: Permission, namespace: &str) -> ServiceError {
        if self.is_anonymous() {
            ServiceError::Unauthenticated {
                message: "this request needs credentials: send Authorization: Bearer <token>"
                    .into(),
            }
        } else {
            ServiceError::Forbidden {
                permission,
                namespace: namespace.to_owned(),
            }
        }
    }

    /// Checks that this principal holds `permission` in `namespace` (`*`: in every namespace)
    /// and returns the proof.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for an anonymous caller that is not allowed,
    /// [`ServiceError::Forbidden`] for an authenticated one.
    pub fn authorize<'a>(
        &'a self,
        permission: Permission,
        namespace: &'a str,
    ) -> Result<Pass<'a>, ServiceError> {
        if self.allows(permission, namespace) {
            Ok(Pass {
                principal: self,
                permission,
                namespace,
                listing: false,
            })
        } else {
            Err(self.refuse(permission, namespace))
        }
    }

    /// Checks that this principal holds `permission` in at least one namespace, for listings
    /// that the service then filters with [`Principal::allows`].
    ///
    /// # Errors
    /// As [`Principal::authorize`].
    pub fn authorize_listing(&self, permission: Permission) -> Result<Pass<'_>, ServiceError> {
        let somewhere = match &self.access {
            Access::System => true,
            Access::Granted(identity) => identity.grants.allows_somewhere(permission),
            Access::Anonymous { .. } => false,
        };
        if somewhere {
            Ok(Pass {
                principal: self,
                permission,
                namespace: ALL_NAMESPACES,
                listing: true,
            })
        } else {
            Err(self.refuse(permission, ALL_NAMESPACES))
        }
    }
}

impl Principal {
    /// A pass that only says "this is an authenticated user acting on their own account". Its
    /// namespace is not a valid key, so `require` never accepts it for anything else.
    pub(crate) fn authorize_self_service(&self) -> Pass<'_> {
        Pass {
            principal: self,
            permission: Permission::FlagRead,
            namespace: "(self)",
            listing: false,
        }
    }
}

/// Proof that a principal may do `permission` in `namespace`. Not constructible outside this
/// module.
#[derive(Debug)]
pub struct Pass<'p> {
    principal: &'p Principal,
    permission: Permission,
    /// Borrowed from the caller: checking a permission copies nothing.
    namespace: &'p str,
    /// Made by [`Principal::authorize_listing`]: good for a filtered listing only.
    listing: bool,
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
    ) -> Result<(), ServiceError> {
        match permissions.iter().find(|p| **p == self.permission) {
            Some(p) => self.require(*p, namespace),
            None => self.require(
                permissions.first().copied().unwrap_or(Permission::FlagRead),
                namespace,
            ),
        }
    }

    /// Fails unless this pass grants `permission` in `namespace`: a pass for one namespace or
    /// permission cannot be reused for another (a `*` pass covers every namespace), and a
    /// listing pass serves nothing but a listing.
    pub(crate) fn require(
        &self,
        permission: Permission,
        namespace: &str,
    ) -> Result<(), ServiceError> {
        // A full pass for `*` was checked against every namespace, so it covers each one.
        let scope_ok = self.namespace == namespace || self.namespace == ALL_NAMESPACES;
        if self.permission == permission && scope_ok && !self.listing {
            Ok(())
        } else {
            self.misuse(permission, namespace)
        }
    }

    /// Fails unless this pass is for listing `permission` (from either authorize function:
    /// a full `*` pass lists everything too).
    pub(crate) fn require_listing(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.permission == permission && self.namespace == ALL_NAMESPACES {
            Ok(())
        } else {
            self.misuse(permission, ALL_NAMESPACES)
        }
    }

    fn misuse(&self, permission: Permission, namespace: &str) -> Result<(), ServiceError> {
        tracing::error!(
            ?permission,
            namespace,
            granted = ?self.permission,
            granted_ns = %self.namespace,
            listing = self.listing,
            "a pass was used for something it does not grant"
        );
        Err(ServiceError::Internal)
    }
}
