//! Authentication and RBAC administration: JWT sessions, opaque API tokens, users, custom
//! roles and role bindings.
//!
//! Every replica keeps the whole identity state in memory ([`IdentityState`] is small) and
//! reloads it when the store's identity revision moves, polled at a short interval, so a
//! revoked token stops working everywhere within that interval. Authentication therefore never
//! waits on the store: a request costs one SHA-256 (API token) or one HMAC (JWT) and a hash-map
//! probe, which matters on the evaluation hot path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use vexil_core::domain::{Actor, AuditEvent, Millis, ResourceKind};
use vexil_core::identity::{
    ALL_NAMESPACES, ApiToken, BUILTIN_ROLES, Binding, IdentityState, PermissionSet, Role, Subject,
    User, builtin_role, validate_name, validate_scope,
};
use vexil_store::{Expect, IdentityStore, IdentityWrite, StoreError};

use crate::principal::{Identity, Pass, Permission, Principal, RequestMeta};
use crate::{ServiceError, SnapshotCache};

/// The prefix of every API token secret.
pub const TOKEN_PREFIX: &str = "vx_";
/// The shortest JWT secret accepted (HS256 wants at least its output size).
pub const MIN_JWT_SECRET_LEN: usize = 32;
const MIN_PASSWORD_LEN: usize = 8;
/// Argon2 cost grows with input; nobody needs a longer password.
const MAX_PASSWORD_LEN: usize = 1024;

/// How sessions are signed and checked.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256 key, at least [`MIN_JWT_SECRET_LEN`] bytes.
    pub jwt_secret: Vec<u8>,
    /// `iss` written and required.
    pub issuer: String,
    /// `aud` written and required.
    pub audience: String,
    /// Session lifetime.
    pub session_ttl: Duration,
    /// Failed-or-not login attempts per user name: burst, then one per `login_user_period`.
    pub login_user_burst: u32,
    /// See `login_user_burst`.
    pub login_user_period: Duration,
    /// Login attempts per client address: burst, then one per `login_ip_period`.
    pub login_ip_burst: u32,
    /// See `login_ip_burst`.
    pub login_ip_period: Duration,
}

impl std::fmt::Debug for AuthConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// Defaults around `jwt_secret`: issuer and audience `vexil`, 8-hour sessions, 10 login
    /// attempts per user (then one per 6 s) and 30 per address (then one per second).
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] when the secret is shorter than [`MIN_JWT_SECRET_LEN`] bytes.
    pub fn new(jwt_secret: Vec<u8>) -> Result<Self, ServiceError> {
        if jwt_secret.len() < MIN_JWT_SECRET_LEN {
            return Err(ServiceError::invalid(
                "JWT_SECRET",
                format!(
                    "must be at least {MIN_JWT_SECRET_LEN} bytes, got {}",
                    jwt_secret.len()
                ),
            ));
        }
        Ok(Self {
            jwt_secret,
            issuer: "vexil".into(),
            audience: "vexil".into(),
            session_ttl: Duration::from_secs(8 * 3600),
            login_user_burst: 10,
            login_user_period: Duration::from_secs(6),
            login_ip_burst: 30,
            login_ip_period: Duration::from_secs(1),
        })
    }
}

/// What a caller presented. Its `Debug` never shows the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// Nothing.
    None,
    /// `Authorization: Bearer …`: a JWT or an API token.
    Bearer(&'a str),
    /// `X-API-Key` (OFREP): an API token.
    ApiKey(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "Credential::None",
            Credential::Bearer(_) => "Credential::Bearer(<redacted>)",
            Credential::ApiKey(_) => "Credential::ApiKey(<redacted>)",
        })
    }
}

/// A signed-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: Millis,
}

/// `POST /users`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// Initial password.
    pub password: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
}

/// `PATCH /users/{name}`: only the fields given change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserPatch {
    /// New display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// New password (ends the user's older sessions).
    #[serde(default)]
    pub password: Option<String>,
    /// Disable or re-enable.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// `POST /roles` and `PUT /roles/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleInput {
    /// Name (on PUT it must match the path when given).
    #[serde(default)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Permission names.
    pub permissions: Vec<String>,
}

/// `POST /bindings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewBinding {
    /// `user:<name>` or `token:<id>`.
    pub subject: String,
    /// Role name.
    pub role: String,
    /// Namespace key or `*`.
    pub namespace: String,
}

/// `POST /tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewToken {
    /// A label.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Namespace key or `*`.
    pub namespace: String,
    /// Optional expiry, ms since the epoch.
    #[serde(default)]
    pub expires_at: Option<Millis>,
}

/// A role as listed: built-in or custom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleView {
    /// The role.
    pub role: Role,
    /// Built-in roles cannot be changed or deleted.
    pub builtin: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

/// The identity state, indexed for authentication.
#[derive(Default)]
struct Snapshot {
    state: IdentityState,
    users: HashMap<String, (User, Arc<Identity>)>,
    /// By SHA-256 digest of the secret, hashed with FxHash: every API-token request looks its
    /// digest up here, and digests are uniform and only added when a token is created, so a
    /// caller cannot fill the map with colliding keys.
    tokens: HashMap<[u8; 32], (ApiToken, Arc<Identity>), rustc_hash::FxBuildHasher>,
}

impl Snapshot {
    fn build(state: IdentityState) -> Self {
        let users = state
            .users
            .iter()
            .map(|u| {
                let g = state.grants_for(&Subject::User(u.name.clone()));
                (
                    u.name.clone(),
                    (u.clone(), Arc::new(Identity::user(&u.name, g))),
                )
            })
            .collect();
        let tokens = state
            .tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&t.digest, &mut digest).ok()?;
                let g = state.grants_for(&Subject::Token(t.id.clone()));
                Some((digest, (t.clone(), Arc::new(Identity::token(&t.id, g)))))
            })
            .collect();
        Self {
            state,
            users,
            tokens,
        }
    }
}

/// Authentication and RBAC administration. Cheap to clone (shared state).
#[derive(Clone)]
pub struct IdentityService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn IdentityStore>,
    cache: SnapshotCache,
    snapshot: ArcSwap<Snapshot>,
    /// Bumped whenever a new snapshot is swapped in, so long-lived streams can re-check their
    /// caller ([`IdentityService::revoked`]).
    reloaded: tokio::sync::watch::Sender<u64>,
    config: AuthConfig,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    by_user: DefaultKeyedRateLimiter<String>,
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    /// Verified against when the user does not exist, so a miss costs what a hit does.
    dummy_hash: String,
}

impl std::fmt::Debug for IdentityService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("revision", &self.inner.snapshot.load().state.revision)
            .finish_non_exhaustive()
    }
}

fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ServiceError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| {
        tracing::error!(error = %e, "the system random source failed");
        ServiceError::Internal
    })?;
    Ok(b)
}

/// A fresh random JWT secret (64 hex characters: 32 random bytes), for the embedded mode.
///
/// # Errors
/// Internal when the system random source fails.
pub fn generate_jwt_secret() -> Result<String, ServiceError> {
    Ok(hex::encode(random_bytes::<32>()?))
}

fn quota(burst: u32, period: Duration) -> Quota {
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?).map_err(|e| {
        tracing::error!(error = %e, "salt encoding failed");
        ServiceError::Internal
    })?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ServiceError::Internal
        })
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

fn check_password(password: &str) -> Result<(), ServiceError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_LEN {
        return Err(ServiceError::invalid(
            "password",
            format!("must be at least {MIN_PASSWORD_LEN} characters"),
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(ServiceError::invalid(
            "password",
            format!("must be at most {MAX_PASSWORD_LEN} bytes"),
        ));
    }
    Ok(())
}

fn unauthenticated(message: &str) -> ServiceError {
    ServiceError::Unauthenticated {
        message: message.to_owned(),
    }
}

/// A user as audit records show it: no password hash.
fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "displayName": u.display_name,
        "disabled": u.disabled,
        "version": u.version,
        "createdAt": u.created_at,
        "updatedAt": u.updated_at,
    })
}

/// A token as audit records show it: no digest.
fn token_json(t: &ApiToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "namespace": t.namespace,
        "expiresAt": t.expires_at,
        "createdAt": t.created_at,
        "createdBy": t.created_by,
    })
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn audit_event(
    principal: &Principal,
    action: &str,
    kind: ResourceKind,
    namespace: &str,
    key: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> AuditEvent {
    AuditEvent {
        id: uuid::Uuid::now_v7().to_string(),
        seq: 0,
        at: now_millis(),
        actor: principal.actor().clone(),
        action: action.to_owned(),
        kind,
        namespace: namespace.to_owned(),
        key: key.to_owned(),
        before,
        after,
        request_id: principal.request_id.clone(),
        source_ip: principal.source_ip.map(|ip| ip.to_string()),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

/// The caller's expected version (If-Match) against the current one.
fn check_version(
    kind: ResourceKind,
    key: &str,
    expected: Option<u64>,
    actual: u64,
) -> Result<(), ServiceError> {
    match expected {
        Some(v) if v != actual => Err(ServiceError::VersionConflict {
            kind,
            namespace: String::new(),
            key: key.to_owned(),
            expected: v,
            actual,
        }),
        _ => Ok(()),
    }
}

fn not_found(kind: ResourceKind, key: &str) -> ServiceError {
    ServiceError::NotFound {
        kind,
        namespace: String::new(),
        key: key.to_owned(),
    }
}

impl IdentityService {
    /// Loads the identity state and returns the service.
    ///
    /// # Errors
    /// Store errors.
    pub async fn load(
        store: Arc<dyn IdentityStore>,
        cache: SnapshotCache,
        config: AuthConfig,
    ) -> Result<Self, ServiceError> {
        let state = store.load_identity().await?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let dummy_hash = tokio::task::spawn_blocking(|| hash_password("not a real password"))
            .await
            .map_err(|_| ServiceError::Internal)??;
        Ok(Self {
            inner: Arc::new(Inner {
                encoding: EncodingKey::from_secret(&config.jwt_secret),
                decoding: DecodingKey::from_secret(&config.jwt_secret),
                validation,
                by_user: RateLimiter::keyed(quota(
                    config.login_user_burst,
                    config.login_user_period,
                )),
                by_ip: RateLimiter::keyed(quota(config.login_ip_burst, config.login_ip_period)),
                store,
                cache,
                reloaded: tokio::sync::watch::Sender::new(state.revision),
                snapshot: ArcSwap::from_pointee(Snapshot::build(state)),
                config,
                dummy_hash,
            }),
        })
    }

    /// The identity revision this replica has applied.
    pub fn applied(&self) -> u64 {
        self.inner.snapshot.load().state.revision
    }

    /// Reloads the identity state from the store when its revision moved.
    ///
    /// # Errors
    /// Store errors (the old state stays in place).
    pub async fn refresh(&self) -> Result<(), ServiceError> {
        let rev = self.inner.store.identity_revision().await?;
        if rev != self.applied() {
            self.reload().await?;
        }
        Ok(())
    }

    async fn reload(&self) -> Result<(), ServiceError> {
        let state = self.inner.store.load_identity().await?;
        // Never go backwards: a slow load may finish after a newer one.
        if state.revision >= self.applied() {
            let revision = state.revision;
            self.inner.snapshot.store(Arc::new(Snapshot::build(state)));
            self.inner.reloaded.send_replace(revision);
        }
        Ok(())
    }

    /// Polls the store every `interval` until `shutdown`, reloading on change and pruning
    /// the login rate limiters. Errors are logged and retried.
    pub async fn follow(self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "identity refresh failed; keeping the last state");
            }
            ticks += 1;
            if ticks.is_multiple_of(240) {
                self.inner.by_user.retain_recent();
                self.inner.by_ip.retain_recent();
            }
        }
    }

    // ------------------------------------------------------------------ authentication

    /// Whether `principal`'s credential and grants, as the current identity state has them,
    /// still allow `permission` in `namespace`: the token still exists and has not expired, the
    /// user still exists and is enabled, and its bindings still grant it. System and anonymous
    /// principals are always current (anonymous access is re-checked against the namespace by
    /// `authorize` itself).
    pub fn still_allows(
        &self,
        principal: &Principal,
        permission: Permission,
        namespace: &str,
    ) -> bool {
        let Some(subject) = principal.subject() else {
            return true;
        };
        let snap = self.snap();
        let grants = match subject {
            Subject::Token(id) => snap
                .tokens
                .values()
                .find(|(t, _)| &t.id == id)
                .filter(|(t, _)| t.expires_at.is_none_or(|at| at > now_millis()))
                .map(|(_, i)| i.grants.clone()),
            Subject::User(name) => snap
                .users
                .get(name)
                .filter(|(u, _)| !u.disabled)
                .map(|(_, i)| i.grants.clone()),
        };
        grants.is_some_and(|g| g.allows(permission, namespace))
    }

    /// Resolves once `principal` may no longer do `permission` in `namespace` (token revoked
    /// or expired, user deleted or disabled, binding removed): long-lived streams select on
    /// it and end, so a revocation reaches open streams as fast as new requests (within the
    /// identity poll interval). Never resolves for a principal that stays allowed.
    pub async fn revoked(&self, principal: Principal, permission: Permission, namespace: String) {
        let mut rx = self.inner.reloaded.subscribe();
        // Expiry needs no reload, so re-check on a slow tick too.
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            if !self.still_allows(&principal, permission, &namespace) {
                return;
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ = tick.tick() => {}
            }
        }
    }

    /// Resolves a caller. No credential gives the anonymous principal, which may only evaluate
    /// in namespaces that opted in; anything presented must be valid.
    ///
    /// # Errors
    /// [`ServiceError::Unauthenticated`] for a malformed, forged, expired or revoked
    /// credential, or one of a disabled or deleted user.
    pub fn authenticate(
        &self,
        credential: Credential<'_>,
        meta: RequestMeta,
    ) -> Result<Principal, ServiceError> {
        match credential {
            Credential::None => Ok(Principal::anonymous(self.inner.cache.clone(), meta)),
            Credential::ApiKey(secret) => self.token_principal(secret, meta),
            Credential::Bearer(secret) if secret.starts_with(TOKEN_PREFIX) => {
                self.token_principal(secret, meta)
            }
            Credential::Bearer(jwt) => self.session_principal(jwt, meta),
        }
    }

    fn token_principal(&self, secret: &str, meta: RequestMeta) -> Result<Principal, ServiceError> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let snap = self.inner.snapshot.load();
        let Some((token, identity)) = snap.tokens.get(&digest) else {
            return Err(unauthenticated("the API token is not valid"));
        };
        if token.expires_at.is_some_and(|at| at <= now_millis()) {
            return Err(unauthenticated("the API token has expired"));
        }
        Ok(Principal::granted(identity.clone(), meta))
    }

    fn session_principal(&self, jwt: &str, meta: RequestMeta) -> Result<Principal, ServiceError> {
        let claims =
            jsonwebtoken::decode::<Claims>(jwt, &self.inner.decoding, &self.inner.validation)
                .map_err(|e| {
                    tracing::debug!(error = %e, "session token refused");
                    unauthenticated("the session token is not valid")
                })?
                .claims;
        let snap = self.inner.snapshot.load();
        let Some((user, identity)) = snap.users.get(&claims.sub) else {
            return Err(unauthenticated("the session's user no longer exists"));
        };
        if user.disabled {
            return Err(unauthenticated("the session's user is disabled"));
        }
        if claims.iat < user.password_changed_at / 1000 {
            return Err(unauthenticated(
                "the session predates a password change; sign in again",
            ));
        }
        Ok(Principal::granted(identity.clone(), meta))
    }

    /// Signs a user in. Attempts are rate-limited per user name and per client address, and
    /// failures are audited (never with the password).
    ///
    /// # Errors
    /// [`ServiceError::RateLimited`] (nothing checked), [`ServiceError::Unauthenticated`] for a
    /// wrong name or password or a disabled user (one message for all three), store errors.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        meta: RequestMeta,
    ) -> Result<Session, ServiceError> {
        let clock = DefaultClock::default();
        let limited = |n: governor::NotUntil<_>| ServiceError::RateLimited {
            retry_after_secs: u32::try_from(n.wait_time_from(clock.now()).as_secs().max(1))
                .unwrap_or(u32::MAX),
        };
        if let Some(ip) = meta.source_ip {
            self.inner.by_ip.check_key(&ip).map_err(limited)?;
        }
        // Bound the key so a flood of long names cannot grow the limiter's memory unduly.
        let key: String = username.chars().take(64).collect();
        self.inner.by_user.check_key(&key).map_err(limited)?;

        let snap = self.inner.snapshot.load_full();
        let user = snap.users.get(username).map(|(u, _)| u.clone());
        let hash = user.as_ref().map_or_else(
            || self.inner.dummy_hash.clone(),
            |u| u.password_hash.clone(),
        );
        let pw = password.to_owned();
        let ok = password.len() <= MAX_PASSWORD_LEN
            && tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
                .await
                .map_err(|_| ServiceError::Internal)?;
        let failure = match &user {
            None => Some("unknown user"),
            Some(_) if !ok => Some("wrong password"),
            Some(u) if u.disabled => Some("user disabled"),
            Some(_) => None,
        };
        if let Some(reason) = failure {
            let actor = Principal::system();
            let mut event = audit_event(
                &actor,
                "auth.login_failed",
                ResourceKind::User,
                "",
                if validate_name("user name", username).is_ok() {
                    username
                } else {
                    "(invalid name)"
                },
                None,
                Some(json!({ "reason": reason })),
            );
            event.actor = Actor {
                kind: "anonymous".into(),
                id: "anonymous".into(),
            };
            event.request_id = meta.request_id.clone();
            event.source_ip = meta.source_ip.map(|ip| ip.to_string());
            if let Err(e) = self.inner.store.commit_identity(vec![], vec![event]).await {
                tracing::warn!(error = %e, "could not audit a failed login");
            }
            return Err(unauthenticated("invalid user name or password"));
        }
        let now = now_millis() / 1000;
        let ttl = i64::try_from(self.inner.config.session_ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: username.to_owned(),
            iss: self.inner.config.issuer.clone(),
            aud: self.inner.config.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.inner.encoding,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "could not sign a session");
            ServiceError::Internal
        })?;
        Ok(Session {
            token,
            expires_at: claims.exp.saturating_mul(1000),
        })
    }

    /// On an empty identity store, creates the user `admin` bound to `admin` in `*`, with
    /// `password` or a generated one, which is returned (to be shown once). Several replicas
    /// starting together race harmlessly: one creates, the others find it.
    ///
    /// # Errors
    /// Invalid (a password too short), store errors.
    pub async fn bootstrap_admin(
        &self,
        password: Option<&str>,
    ) -> Result<Option<String>, ServiceError> {
        if !self.inner.snapshot.load().state.users.is_empty() {
            return Ok(None);
        }
        let (password, generated) = match password {
            Some(p) => (p.to_owned(), false),
            None => (hex::encode(random_bytes::<12>()?), true),
        };
        check_password(&password)?;
        let system = Principal::system();
        let hash = {
            let p = password.clone();
            tokio::task::spawn_blocking(move || hash_password(&p))
                .await
                .map_err(|_| ServiceError::Internal)??
        };
        let now = now_millis();
        let user = User {
            name: "admin".into(),
            display_name: "Administrator".into(),
            password_hash: hash,
            disabled: false,
            version: 0,
            created_at: now,
            updated_at: now,
            password_changed_at: 0,
        };
        let binding = Binding {
            id: uuid::Uuid::now_v7().to_string(),
            subject: Subject::User("admin".into()),
            role: "admin".into(),
            namespace: ALL_NAMESPACES.into(),
            created_at: now,
            created_by: Actor::system(),
        };
        let audit = vec![
            audit_event(
                &system,
                "user.create",
                ResourceKind::User,
                "",
                "admin",
                None,
                Some(user_json(&user)),
            ),
            audit_event(
                &system,
                "binding.create",
                ResourceKind::Binding,
                ALL_NAMESPACES,
                &binding.id,
                None,
                Some(to_json(&binding)),
            ),
        ];
        let writes = vec![
            IdentityWrite::PutUser {
                user,
                expect: Expect::Absent,
            },
            IdentityWrite::CreateBinding { binding },
        ];
        match self.inner.store.commit_identity(writes, audit).await {
            Ok(_) => {
                self.reload().await?;
                Ok(generated.then_some(password))
            }
            Err(StoreError::AlreadyExists { .. }) => {
                self.reload().await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn commit(
        &self,
        writes: Vec<IdentityWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<(), ServiceError> {
        self.inner.store.commit_identity(writes, audit).await?;
        // Read-your-writes on this replica; others follow within the poll interval.
        self.reload().await
    }

    fn snap(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.snapshot.load()
    }

    /// Refuses to hand out more than the granter holds: `role` in `namespace` must be covered
    /// by the principal's own grants there.
    fn check_escalation(
        &self,
        pass: &Pass<'_>,
        role: &str,
        namespace: &str,
    ) -> Result<(), ServiceError> {
        let wanted = self.snap().state.role_permissions(role);
        let p = pass.principal();
        let Some(grants) = p.grants() else {
            return Ok(()); // the system principal
        };
        let held = if namespace == ALL_NAMESPACES {
            grants.everywhere
        } else {
            grants.everywhere.union(
                grants
                    .per_namespace
                    .get(namespace)
                    .copied()
                    .unwrap_or_default(),
            )
        };
        match wanted.iter().find(|perm| !held.contains(*perm)) {
            None => Ok(()),
            Some(permission) => Err(ServiceError::Forbidden {
                permission,
                namespace: namespace.to_owned(),
            }),
        }
    }

    fn check_role_exists(&self, role: &str) -> Result<(), ServiceError> {
        if builtin_role(role).is_some() || self.snap().state.roles.iter().any(|r| r.name == role) {
            Ok(())
        } else {
            Err(ServiceError::invalid(
                "role",
                format!("role {role:?} does not exist"),
            ))
        }
    }

    // ------------------------------------------------------------------ users

    /// All users. Requires `rbac:admin` on `*`.
    ///
    /// # Errors
    /// None beyond the pass check.
    pub fn list_users(&self, pass: &Pass<'_>) -> Result<Vec<User>, ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        Ok(self.snap().state.users.clone())
    }

    /// One user. Requires `rbac:admin` on `*`.
    ///
    /// # Errors
    /// NotFound.
    pub fn get_user(&self, pass: &Pass<'_>, name: &str) -> Result<User, ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        self.snap()
            .users
            .get(name)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| not_found(ResourceKind::User, name))
    }

    /// Creates a user (no permissions until bound). Requires `rbac:admin` on `*`.
    ///
    /// # Errors
    /// Invalid (name syntax, password policy), AlreadyExists, store errors.
    pub async fn create_user(&self, pass: &Pass<'_>, input: NewUser) -> Result<User, ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        validate_name("user name", &input.name)
            .map_err(|e| ServiceError::invalid("name", e.to_string()))?;
        check_password(&input.password)?;
        let pw = input.password;
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|_| ServiceError::Internal)??;
        let now = now_millis();
        let user = User {
            name: input.name.clone(),
            display_name: input.display_name,
            password_hash: hash,
            disabled: false,
            version: 0,
            created_at: now,
            updated_at: now,
            // Sessions issued before this account existed (for an earlier user of the same
            // name) must not authenticate as it.
            password_changed_at: now,
        };
        let event = audit_event(
            pass.principal(),
            "user.create",
            ResourceKind::User,
            "",
            &user.name,
            None,
            Some(user_json(&user)),
        );
        self.commit(
            vec![IdentityWrite::PutUser {
                user,
                expect: Expect::Absent,
            }],
            vec![event],
        )
        .await?;
        self.get_user(pass, &input.name)
    }

    /// Changes a user's display name, password or disabled state. Requires `rbac:admin` on
    /// `*`, except that users may change their own password and display name with any pass
    /// (see [`IdentityService::authorize_self`]). Nobody may disable themselves.
    ///
    /// # Errors
    /// NotFound, Invalid, Conflict (disabling yourself), VersionConflict (`expected` stale),
    /// store errors.
    pub async fn update_user(
        &self,
        pass: &SelfOrAdmin<'_>,
        name: &str,
        patch: UserPatch,
        expected: Option<u64>,
    ) -> Result<User, ServiceError> {
        let is_self = pass.is_self(name);
        if !is_self {
            pass.pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        }
        let before = self
            .snap()
            .users
            .get(name)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| not_found(ResourceKind::User, name))?;
        check_version(ResourceKind::User, name, expected, before.version)?;
        let admin = pass
            .pass
            .principal()
            .allows(Permission::RbacAdmin, ALL_NAMESPACES);
        if patch.disabled.is_some() && !admin {
            return Err(ServiceError::Forbidden {
                permission: Permission::RbacAdmin,
                namespace: ALL_NAMESPACES.into(),
            });
        }
        if patch.disabled == Some(true) && is_self {
            return Err(ServiceError::Conflict {
                message: "you cannot disable your own account".into(),
            });
        }
        let mut user = before.clone();
        if let Some(d) = patch.display_name {
            user.display_name = d;
        }
        if let Some(d) = patch.disabled {
            user.disabled = d;
        }
        let now = now_millis();
        if let Some(pw) = patch.password {
            check_password(&pw)?;
            user.password_hash = tokio::task::spawn_blocking(move || hash_password(&pw))
                .await
                .map_err(|_| ServiceError::Internal)??;
            // Whole seconds, like `iat`: sessions issued before this second stop working.
            user.password_changed_at = now;
        }
        user.updated_at = now;
        let mut after = user_json(&user);
        if user.password_changed_at != before.password_changed_at {
            after["passwordChanged"] = Value::Bool(true);
        }
        let event = audit_event(
            pass.pass.principal(),
            "user.update",
            ResourceKind::User,
            "",
            name,
            Some(user_json(&before)),
            Some(after),
        );
        self.commit(
            vec![IdentityWrite::PutUser {
                user,
                expect: Expect::Version(before.version),
            }],
            vec![event],
        )
        .await?;
        self.snap()
            .users
            .get(name)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| not_found(ResourceKind::User, name))
    }

    /// Deletes a user and its bindings; its sessions stop working. Requires `rbac:admin` on
    /// `*`. Nobody may delete themselves.
    ///
    /// # Errors
    /// NotFound, Conflict, store errors.
    pub async fn delete_user(
        &self,
        pass: &Pass<'_>,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        if pass.principal().subject() == Some(&Subject::User(name.to_owned())) {
            return Err(ServiceError::Conflict {
                message: "you cannot delete your own account".into(),
            });
        }
        let snap = self.snap();
        let Some((user, _)) = snap.users.get(name) else {
            return Err(not_found(ResourceKind::User, name));
        };
        check_version(ResourceKind::User, name, expected, user.version)?;
        let subject = Subject::User(name.to_owned());
        let mut writes = vec![];
        let mut audit = vec![];
        for b in snap.state.bindings.iter().filter(|b| b.subject == subject) {
            writes.push(IdentityWrite::DeleteBinding { id: b.id.clone() });
            audit.push(audit_event(
                pass.principal(),
                "binding.delete",
                ResourceKind::Binding,
                &b.namespace,
                &b.id,
                Some(to_json(b)),
                None,
            ));
        }
        writes.push(IdentityWrite::DeleteUser {
            name: name.to_owned(),
            expect: Expect::Version(user.version),
        });
        audit.push(audit_event(
            pass.principal(),
            "user.delete",
            ResourceKind::User,
            "",
            name,
            Some(user_json(user)),
            None,
        ));
        drop(snap);
        self.commit(writes, audit).await
    }

    // ------------------------------------------------------------------ roles

    /// Built-in and custom roles. Requires `rbac:admin` somewhere (a listing pass).
    ///
    /// # Errors
    /// None beyond the pass check.
    pub fn list_roles(&self, pass: &Pass<'_>) -> Result<Vec<RoleView>, ServiceError> {
        pass.require_listing(Permission::RbacAdmin)?;
        let mut out: Vec<RoleView> = BUILTIN_ROLES
            .iter()
            .filter_map(|n| builtin_view(n))
            .collect();
        out.extend(self.snap().state.roles.iter().map(|r| RoleView {
            role: r.clone(),
            builtin: false,
        }));
        Ok(out)
    }

    /// One role. Requires `rbac:admin` somewhere (a listing pass).
    ///
    /// # Errors
    /// NotFound.
    pub fn get_role(&self, pass: &Pass<'_>, name: &str) -> Result<RoleView, ServiceError> {
        pass.require_listing(Permission::RbacAdmin)?;
        builtin_view(name)
            .or_else(|| {
                self.snap()
                    .state
                    .roles
                    .iter()
                    .find(|r| r.name == name)
                    .map(|r| RoleView {
                        role: r.clone(),
                        builtin: false,
                    })
            })
            .ok_or_else(|| not_found(ResourceKind::Role, name))
    }

    /// Creates (`expect` Absent) or replaces a custom role. Built-in names are refused.
    /// Requires `rbac:admin` on `*`.
    ///
    /// # Errors
    /// Invalid, Conflict (a built-in name), AlreadyExists, NotFound, VersionConflict, store
    /// errors.
    pub async fn put_role(
        &self,
        pass: &Pass<'_>,
        path_name: Option<&str>,
        input: RoleInput,
        expected: Option<u64>,
    ) -> Result<RoleView, ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        let name = match (path_name, input.name.as_str()) {
            (Some(p), "") => p.to_owned(),
            (Some(p), n) if p != n => {
                return Err(ServiceError::invalid(
                    "name",
                    format!("must match the path ({p})"),
                ));
            }
            (_, n) => n.to_owned(),
        };
        validate_name("role name", &name)
            .map_err(|e| ServiceError::invalid("name", e.to_string()))?;
        if builtin_role(&name).is_some() {
            return Err(ServiceError::Conflict {
                message: format!("{name} is a built-in role and cannot be changed"),
            });
        }
        let mut permissions = PermissionSet::EMPTY;
        let mut violations = vec![];
        for (i, p) in input.permissions.iter().enumerate() {
            match p.parse() {
                Ok(p) => permissions.insert(p),
                Err(e) => violations.push(vexil_core::Violation::new(
                    format!("permissions[{i}]"),
                    format!("{e}"),
                )),
            }
        }
        if !violations.is_empty() {
            return Err(ServiceError::Invalid { violations });
        }
        if permissions.is_empty() {
            return Err(ServiceError::invalid(
                "permissions",
                "must name at least one permission",
            ));
        }
        let before = self
            .snap()
            .state
            .roles
            .iter()
            .find(|r| r.name == name)
            .cloned();
        let expect = match (path_name, &before, expected) {
            (None, _, _) => Expect::Absent,
            (Some(_), None, Some(v)) => {
                return Err(ServiceError::VersionConflict {
                    kind: ResourceKind::Role,
                    namespace: String::new(),
                    key: name,
                    expected: v,
                    actual: 0,
                });
            }
            (Some(_), None, None) => Expect::Absent,
            (Some(_), Some(b), None) => Expect::Version(b.version),
            (Some(_), Some(_), Some(v)) => Expect::Version(v),
        };
        let now = now_millis();
        let role = Role {
            name: name.clone(),
            description: input.description,
            permissions,
            version: 0,
            created_at: now,
            updated_at: now,
        };
        let action = if before.is_some() {
            "role.update"
        } else {
            "role.create"
        };
        let event = audit_event(
            pass.principal(),
            action,
            ResourceKind::Role,
            "",
            &name,
            before.as_ref().map(to_json),
            Some(to_json(&role)),
        );
        self.commit(vec![IdentityWrite::PutRole { role, expect }], vec![event])
            .await?;
        self.get_role(pass, &name)
    }

    /// Deletes a custom role that nothing is bound to. Requires `rbac:admin` on `*`.
    ///
    /// # Errors
    /// NotFound, Conflict (built-in, or still bound or carried by a token), store errors.
    pub async fn delete_role(
        &self,
        pass: &Pass<'_>,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), ServiceError> {
        pass.require(Permission::RbacAdmin, ALL_NAMESPACES)?;
        if builtin_role(name).is_some() {
            return Err(ServiceError::Conflict {
                message: format!("{name} is a built-in role and cannot be deleted"),
            });
        }
        let snap = self.snap();
        let Some(role) = snap.state.roles.iter().find(|r| r.name == name).cloned() else {
            return Err(not_found(ResourceKind::Role, name));
        };
        check_version(ResourceKind::Role, name, expected, role.version)?;
        let bound = snap
            .state
            .bindings
            .iter()
            .filter(|b| b.role == name)
            .count()
            + snap.state.tokens.iter().filter(|t| t.role == name).count();
        drop(snap);
        if bound > 0 {
            return Err(ServiceError::Conflict {
                message: format!("role {name} is still used by {bound} binding(s) or token(s)"),
            });
        }
        let event = audit_event(
            pass.principal(),
            "role.delete",
            ResourceKind::Role,
            "",
            name,
            Some(to_json(&role)),
            None,
        );
        self.commit(
            vec![IdentityWrite::DeleteRole {
                name: name.to_owned(),
                expect: Expect::Version(role.version),
            }],
            vec![event],
        )
        .await
    }

    // ------------------------------------------------------------------ bindings

    /// Bindings in namespaces where the caller holds `rbac:admin` (all of them for `*`).
    ///
    /// # Errors
    /// None beyond the pass check.
    pub fn list_bindings(&self, pass: &Pass<'_>) -> Result<Vec<Binding>, ServiceError> {
        pass.require_listing(Permission::RbacAdmin)?;
        let p = pass.principal();
        Ok(self
            .snap()
            .state
            .bindings
            .iter()
            .filter(|b| p.allows(Permission::RbacAdmin, &b.namespace))
            .cloned()
            .collect())
    }

    /// The namespace a binding is in, for authorizing its deletion.
    ///
    /// # Errors
    /// NotFound.
    pub fn binding_namespace(&self, id: &str) -> Result<String, ServiceError> {
        self.snap()
            .state
            .bindings
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.namespace.clone())
            .ok_or_else(|| not_found(ResourceKind::Binding, id))
    }

    /// Binds a role to a user or token. Requires `rbac:admin` in the binding's namespace, and
    /// the caller must itself hold every permission of the role there.
    ///
    /// # Errors
    /// Invalid (subject, role or namespace), Forbidden (escalation), store errors.
    pub async fn create_binding(
        &self,
        pass: &Pass<'_>,
        input: NewBinding,
    ) -> Result<Binding, ServiceError> {
        pass.require(Permission::RbacAdmin, &input.namespace)?;
        let subject: Subject =
            input
                .subject
                .parse()
                .map_err(|e: vexil_core::domain::KeyError| {
                    ServiceError::invalid("subject", e.to_string())
                })?;
        validate_scope(&input.namespace)
            .map_err(|e| ServiceError::invalid("namespace", e.to_string()))?;
        self.check_role_exists(&input.role)?;
        let exists = {
            let snap = self.snap();
            match &subject {
                Subject::User(n) => snap.users.contains_key(n),
                Subject::Token(id) => snap.state.tokens.iter().any(|t| &t.id == id),
            }
        };
        if !exists {
            return Err(ServiceError::invalid(
                "subject",
                format!("{subject} does not exist"),
            ));
        }
        self.check_escalation(pass, &input.role, &input.namespace)?;
        let binding = Binding {
            id: uuid::Uuid::now_v7().to_string(),
            subject,
            role: input.role,
            namespace: input.namespace,
            created_at: now_millis(),
            created_by: pass.principal().actor().clone(),
        };
        let event = audit_event(
            pass.principal(),
            "binding.create",
            ResourceKind::Binding,
            &binding.namespace,
            &binding.id,
            None,
            Some(to_json(&binding)),
        );
        self.commit(
            vec![IdentityWrite::CreateBinding {
                binding: binding.clone(),
            }],
            vec![event],
        )
        .await?;
        Ok(binding)
    }

    /// Removes a binding. Requires `rbac:admin` in its namespace (see
    /// [`IdentityService::binding_namespace`]).
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn delete_binding(&self, pass: &Pass<'_>, id: &str) -> Result<(), ServiceError> {
        let Some(b) = self
            .snap()
            .state
            .bindings
            .iter()
            .find(|b| b.id == id)
            .cloned()
        else {
            return Err(not_found(ResourceKind::Binding, id));
        };
        pass.require(Permission::RbacAdmin, &b.namespace)?;
        let event = audit_event(
            pass.principal(),
            "binding.delete",
            ResourceKind::Binding,
            &b.namespace,
            id,
            Some(to_json(&b)),
            None,
        );
        self.commit(
            vec![IdentityWrite::DeleteBinding { id: id.to_owned() }],
            vec![event],
        )
        .await
    }

    // ------------------------------------------------------------------ tokens

    /// Tokens (never their secrets) in namespaces where the caller holds `rbac:admin`.
    ///
    /// # Errors
    /// None beyond the pass check.
    pub fn list_tokens(&self, pass: &Pass<'_>) -> Result<Vec<ApiToken>, ServiceError> {
        pass.require_listing(Permission::RbacAdmin)?;
        let p = pass.principal();
        Ok(self
            .snap()
            .state
            .tokens
            .iter()
            .filter(|t| p.allows(Permission::RbacAdmin, &t.namespace))
            .cloned()
            .collect())
    }

    /// The namespace a token is scoped to, for authorizing its revocation.
    ///
    /// # Errors
    /// NotFound.
    pub fn token_namespace(&self, id: &str) -> Result<String, ServiceError> {
        self.snap()
            .state
            .tokens
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.namespace.clone())
            .ok_or_else(|| not_found(ResourceKind::Token, id))
    }

    /// Issues an API token carrying `role` in `namespace`. Returns the record and the secret,
    /// which is never stored or shown again. Requires `rbac:admin` in the namespace and no
    /// escalation (as [`IdentityService::create_binding`]).
    ///
    /// # Errors
    /// Invalid (name, role, namespace, an expiry in the past), Forbidden, store errors.
    pub async fn create_token(
        &self,
        pass: &Pass<'_>,
        input: NewToken,
    ) -> Result<(ApiToken, String), ServiceError> {
        pass.require(Permission::RbacAdmin, &input.namespace)?;
        if input.name.trim().is_empty() || input.name.len() > 200 {
            return Err(ServiceError::invalid("name", "must be 1 to 200 characters"));
        }
        validate_scope(&input.namespace)
            .map_err(|e| ServiceError::invalid("namespace", e.to_string()))?;
        self.check_role_exists(&input.role)?;
        let now = now_millis();
        if input.expires_at.is_some_and(|at| at <= now) {
            return Err(ServiceError::invalid("expiresAt", "must be in the future"));
        }
        self.check_escalation(pass, &input.role, &input.namespace)?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(random_bytes::<32>()?));
        let token = ApiToken {
            id: uuid::Uuid::now_v7().simple().to_string(),
            name: input.name,
            digest: hex::encode(Sha256::digest(secret.as_bytes())),
            role: input.role,
            namespace: input.namespace,
            expires_at: input.expires_at,
            created_at: now,
            created_by: pass.principal().actor().clone(),
        };
        let event = audit_event(
            pass.principal(),
            "token.create",
            ResourceKind::Token,
            &token.namespace,
            &token.id,
            None,
            Some(token_json(&token)),
        );
        self.commit(
            vec![IdentityWrite::CreateToken {
                token: token.clone(),
            }],
            vec![event],
        )
        .await?;
        Ok((token, secret))
    }

    /// Revokes a token, and removes the bindings naming it. Requires `rbac:admin` in its
    /// namespace (see [`IdentityService::token_namespace`]). Every replica refuses it within
    /// its poll interval.
    ///
    /// # Errors
    /// NotFound, store errors.
    pub async fn revoke_token(&self, pass: &Pass<'_>, id: &str) -> Result<(), ServiceError> {
        let snap = self.snap();
        let Some(t) = snap.state.tokens.iter().find(|t| t.id == id).cloned() else {
            return Err(not_found(ResourceKind::Token, id));
        };
        pass.require(Permission::RbacAdmin, &t.namespace)?;
        let subject = Subject::Token(id.to_owned());
        let mut writes = vec![];
        let mut audit = vec![];
        for b in snap.state.bindings.iter().filter(|b| b.subject == subject) {
            writes.push(IdentityWrite::DeleteBinding { id: b.id.clone() });
            audit.push(audit_event(
                pass.principal(),
                "binding.delete",
                ResourceKind::Binding,
                &b.namespace,
                &b.id,
                Some(to_json(b)),
                None,
            ));
        }
        drop(snap);
        writes.push(IdentityWrite::DeleteToken { id: id.to_owned() });
        audit.push(audit_event(
            pass.principal(),
            "token.revoke",
            ResourceKind::Token,
            &t.namespace,
            id,
            Some(token_json(&t)),
            None,
        ));
        self.commit(writes, audit).await
    }

    /// A pass for a user acting on their own account, or an `rbac:admin` one.
    ///
    /// # Errors
    /// As [`Principal::authorize`] for callers that are neither.
    pub fn authorize_self<'p>(
        &self,
        principal: &'p Principal,
        name: &str,
    ) -> Result<SelfOrAdmin<'p>, ServiceError> {
        if principal.subject() == Some(&Subject::User(name.to_owned())) {
            // Any authenticated user holds a pass for their own account; the permission named
            // is irrelevant to `update_user`, which checks `is_self` first.
            let pass = principal.authorize_self_service();
            return Ok(SelfOrAdmin {
                pass,
                self_name: Some(name.to_owned()),
            });
        }
        Ok(SelfOrAdmin {
            pass: principal.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?,
            self_name: None,
        })
    }
}

/// A pass for changing a user: either the user themselves or an `rbac:admin`.
#[derive(Debug)]
pub struct SelfOrAdmin<'p> {
    pass: Pass<'p>,
    self_name: Option<String>,
}

impl SelfOrAdmin<'_> {
    fn is_self(&self, name: &str) -> bool {
        self.self_name.as_deref() == Some(name)
    }
}

fn builtin_view(name: &str) -> Option<RoleView> {
    builtin_role(name).map(|permissions| RoleView {
        role: Role {
            name: name.to_owned(),
            description: match name {
                "admin" => "Everything, in its scope",
                "editor" => "Read and write flags and configs, and evaluate",
                "viewer" => "Read flags and configs, and evaluate",
                _ => "Evaluate flags only: the role for SDK tokens",
            }
            .into(),
            permissions,
            version: 0,
            created_at: 0,
            updated_at: 0,
        },
        builtin: true,
    })
}

#[cfg(test)]
mod tests {
    use vexil_core::FractionalVersion;
    use vexil_store::sqlite::SqliteStore;

    use super::*;

    const SECRET: &[u8] = b"unit-test-secret-0123456789abcdef";

    async fn service() -> IdentityService {
        let store = Arc::new(SqliteStore::open_in_memory().await.expect("store"));
        let cache = SnapshotCache::load(&*store, FractionalVersion::V2)
            .await
            .expect("cache");
        let ids = IdentityService::load(
            store,
            cache,
            AuthConfig::new(SECRET.to_vec()).expect("config"),
        )
        .await
        .expect("service");
        ids.bootstrap_admin(Some("admin-password"))
            .await
            .expect("bootstrap");
        ids
    }

    fn meta() -> RequestMeta {
        RequestMeta {
            request_id: None,
            source_ip: Some(IpAddr::from([127, 0, 0, 1])),
        }
    }

    async fn admin(ids: &IdentityService) -> Principal {
        let session = ids
            .login("admin", "admin-password", meta())
            .await
            .expect("login");
        ids.authenticate(Credential::Bearer(&session.token), meta())
            .expect("session")
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        assert!(AuthConfig::new(b"too short".to_vec()).is_err());
        assert!(AuthConfig::new(vec![7; MIN_JWT_SECRET_LEN]).is_ok());
    }

    #[test]
    fn credentials_never_show_their_secret_in_debug_output() {
        let shown = format!(
            "{:?} {:?}",
            Credential::Bearer("vx_secret"),
            Credential::ApiKey("k3y")
        );
        assert!(
            !shown.contains("vx_secret") && !shown.contains("k3y"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
        let ids = service().await;
        let wrong = ids
            .login("admin", "nope-nope", meta())
            .await
            .expect_err("wrong");
        let unknown = ids
            .login("ghost", "nope-nope", meta())
            .await
            .expect_err("unknown");
        assert_eq!(wrong, unknown);
        assert!(matches!(wrong, ServiceError::Unauthenticated { .. }));
    }

    #[tokio::test]
    async fn the_bootstrap_happens_once() {
        let ids = service().await;
        assert_eq!(ids.bootstrap_admin(None).await.expect("second"), None);
        let p = admin(&ids).await;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .expect("admin");
        assert_eq!(ids.list_users(&pass).expect("users").len(), 1);
    }

    #[tokio::test]
    async fn a_token_authenticates_until_it_is_revoked_and_never_beyond_its_role() {
        let ids = service().await;
        let p = admin(&ids).await;
        let pass = p.authorize(Permission::RbacAdmin, "prod").expect("admin");
        let (token, secret) = ids
            .create_token(
                &pass,
                NewToken {
                    name: "sdk".into(),
                    role: "evaluator".into(),
                    namespace: "prod".into(),
                    expires_at: None,
                },
            )
            .await
            .expect("token");
        assert!(secret.starts_with(TOKEN_PREFIX));
        assert_ne!(token.digest, secret, "only the digest is kept");
        let sdk = ids
            .authenticate(Credential::ApiKey(&secret), meta())
            .expect("token");
        assert!(sdk.allows(Permission::Evaluate, "prod"));
        assert!(!sdk.allows(Permission::Evaluate, "staging"));
        assert!(matches!(
            sdk.authorize(Permission::FlagRead, "prod"),
            Err(ServiceError::Forbidden { .. })
        ));
        ids.revoke_token(&pass, &token.id).await.expect("revoke");
        assert!(
            ids.authenticate(Credential::ApiKey(&secret), meta())
                .is_err()
        );
        assert!(!ids.still_allows(&sdk, Permission::Evaluate, "prod"));
    }

    #[tokio::test]
    async fn an_expired_token_is_refused() {
        let ids = service().await;
        let p = admin(&ids).await;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .expect("admin");
        let soon = now_millis() + 50;
        let (_, secret) = ids
            .create_token(
                &pass,
                NewToken {
                    name: "short".into(),
                    role: "viewer".into(),
                    namespace: ALL_NAMESPACES.into(),
                    expires_at: Some(soon),
                },
            )
            .await
            .expect("token");
        while now_millis() <= soon {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(
            ids.authenticate(Credential::Bearer(&secret), meta()),
            Err(ServiceError::Unauthenticated { .. })
        ));
    }

    #[tokio::test]
    async fn nobody_hands_out_more_than_they_hold() {
        let ids = service().await;
        let p = admin(&ids).await;
        let all = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .expect("admin");
        ids.create_user(
            &all,
            NewUser {
                name: "ed".into(),
                password: "ed-password".into(),
                display_name: String::new(),
            },
        )
        .await
        .expect("user");
        ids.put_role(
            &all,
            None,
            RoleInput {
                name: "ns-admin".into(),
                description: String::new(),
                permissions: vec!["rbac:admin".into(), "evaluate".into()],
            },
            None,
        )
        .await
        .expect("role");
        ids.create_binding(
            &all,
            NewBinding {
                subject: "user:ed".into(),
                role: "ns-admin".into(),
                namespace: "prod".into(),
            },
        )
        .await
        .expect("binding");
        let session = ids.login("ed", "ed-password", meta()).await.expect("ed");
        let ed = ids
            .authenticate(Credential::Bearer(&session.token), meta())
            .expect("ed");
        let pass = ed
            .authorize(Permission::RbacAdmin, "prod")
            .expect("ns admin");
        let escalate = ids
            .create_token(
                &pass,
                NewToken {
                    name: "x".into(),
                    role: "editor".into(),
                    namespace: "prod".into(),
                    expires_at: None,
                },
            )
            .await;
        assert!(
            matches!(escalate, Err(ServiceError::Forbidden { .. })),
            "{escalate:?}"
        );
        let ok = ids
            .create_token(
                &pass,
                NewToken {
                    name: "sdk".into(),
                    role: "evaluator".into(),
                    namespace: "prod".into(),
                    expires_at: None,
                },
            )
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    }
}
