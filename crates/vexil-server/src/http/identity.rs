//! REST handlers for authentication and RBAC administration under `/api/v1`: login, API tokens,
//! users, roles and role bindings. Adapters like [`super::admin`]: parse, authorize, call
//! [`vexil_service::IdentityService`], convert.
//!
//! Responses are built field by field from the domain types rather than serialised whole, so a
//! secret-bearing field added to `User` or `ApiToken` later cannot leak through these routes
//! by default.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use vexil_core::identity::{ALL_NAMESPACES, ApiToken, Binding, User};
use vexil_service::{NewBinding, NewToken, NewUser, Permission, RoleInput, RoleView, UserPatch};

use super::extract::{Caller, IfMatch, JsonBody, Meta, with_etag};
use super::problem::{ApiError, Problem};
use super::schema;
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

/// Reads a JSON body as the service's input type. Unknown fields, missing fields and wrong
/// types are a 400 whose detail is serde's message, which names the field.
fn parse<T: DeserializeOwned>(body: Value) -> Result<T> {
    serde_json::from_value(body)
        .map_err(|e| ApiError(Problem::bad_request(format!("invalid request body: {e}"))))
}

/// The namespace a token or binding body asks for, to authorize before the body is parsed. A
/// body without a usable one is checked against `*`, the most demanding scope, so a malformed
/// body never answers 400 to a caller who could not have created anything anyway.
fn body_scope(body: &Value) -> &str {
    body.get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(ALL_NAMESPACES)
}

/// Secrets (sessions, new API tokens) must not be kept by caches or proxies.
fn no_store(status: StatusCode, body: Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn items(items: Vec<Value>) -> Response {
    Json(json!({ "items": items })).into_response()
}

/// A user as the API shows it: never the password hash.
pub(crate) fn user_view(u: &User) -> Value {
    json!({
        "name": u.name,
        "displayName": u.display_name,
        "disabled": u.disabled,
        "version": u.version,
        "createdAt": u.created_at,
        "updatedAt": u.updated_at,
    })
}

/// A token as the API shows it: never the secret's digest.
pub(crate) fn token_view(t: &ApiToken) -> Value {
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

/// A role, built-in or custom.
pub(crate) fn role_view(r: &RoleView) -> Value {
    json!({
        "name": r.role.name,
        "description": r.role.description,
        "permissions": r.role.permissions,
        "builtin": r.builtin,
        "version": r.role.version,
        "createdAt": r.role.created_at,
        "updatedAt": r.role.updated_at,
    })
}

/// A binding (it holds nothing secret).
pub(crate) fn binding_view(b: &Binding) -> Value {
    json!({
        "id": b.id,
        "subject": b.subject,
        "role": b.role,
        "namespace": b.namespace,
        "createdAt": b.created_at,
        "createdBy": b.created_by,
    })
}

fn user_response(u: &User, status: StatusCode) -> Response {
    with_etag(u.version, user_view(u), status)
}

fn role_response(r: &RoleView, status: StatusCode) -> Response {
    with_etag(r.role.version, role_view(r), status)
}

// ------------------------------------------------------------------ login

/// `POST /api/v1/auth/login`. No `Debug`, so the password cannot end up in a log line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
}

/// Sign in
///
/// Exchanges a user name and password for a session token (a JWT) to send as
/// `Authorization: Bearer <token>`. Attempts are rate-limited per user name and per client
/// address; failures are audited as `auth.login_failed`, without the password.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = schema::LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = schema::Session, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 429, response = schema::TooManyRequests),
    )
)]
pub async fn login(
    State(app): State<Arc<AppState>>,
    Meta(meta): Meta,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let req: LoginRequest = parse(body)?;
    let session = app
        .identity
        .login(&req.username, &req.password, meta)
        .await?;
    Ok(no_store(
        StatusCode::OK,
        json!({ "token": session.token, "expiresAt": session.expires_at }),
    ))
}

// ------------------------------------------------------------------ tokens

/// List API tokens
///
/// Tokens scoped to namespaces where the caller holds `rbac:admin`. Never their secrets.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "auth",
    responses(
        (status = 200, description = "The tokens the caller administers", body = schema::ApiTokenList),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
    )
)]
pub async fn list_tokens(State(app): State<Arc<AppState>>, Caller(p): Caller) -> Result<Response> {
    let pass = p.authorize_listing(Permission::RbacAdmin)?;
    let tokens = app.identity.list_tokens(&pass)?;
    Ok(items(tokens.iter().map(token_view).collect()))
}

/// Issue an API token
///
/// Needs `rbac:admin` in the token's namespace, and the caller must itself hold every
/// permission of the role there. The secret (`token`, `vx_…`) is in this response only: it is
/// never stored or shown again.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "auth",
    request_body = schema::ApiTokenInput,
    responses(
        (status = 201, description = "Issued; `token` is the secret, shown once", body = schema::IssuedApiToken, headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn create_token(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    // The pass borrows its namespace, and the body is consumed below.
    let scope = body_scope(&body).to_owned();
    let pass = p.authorize(Permission::RbacAdmin, &scope)?;
    let input: NewToken = parse(body)?;
    let (token, secret) = app.identity.create_token(&pass, input).await?;
    let mut view = token_view(&token);
    view["token"] = Value::String(secret);
    Ok(no_store(StatusCode::CREATED, view))
}

/// Revoke an API token
///
/// Needs `rbac:admin` in the token's namespace. Bindings naming the token go with it. Every
/// replica refuses the token within its identity poll interval.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "auth",
    params(schema::IdPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn revoke_token(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    // An unknown id is authorized against `*`, so only a full administrator learns that it
    // does not exist; everyone else gets the 403 they would get for a real one.
    let namespace = app.identity.token_namespace(&id);
    let scope = namespace.as_deref().unwrap_or(ALL_NAMESPACES).to_owned();
    let pass = p.authorize(Permission::RbacAdmin, &scope)?;
    namespace?;
    app.identity.revoke_token(&pass, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ users

/// List users
///
/// Needs `rbac:admin` in every namespace (`*`).
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "rbac",
    responses(
        (status = 200, description = "All users", body = schema::UserList),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
    )
)]
pub async fn list_users(State(app): State<Arc<AppState>>, Caller(p): Caller) -> Result<Response> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    let users = app.identity.list_users(&pass)?;
    Ok(items(users.iter().map(user_view).collect()))
}

/// Create a user
///
/// Needs `rbac:admin` on `*`. The user can sign in at once but holds no permission until a
/// binding grants one.
#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "rbac",
    request_body = schema::UserInput,
    responses(
        (status = 201, description = "Created", body = schema::User, headers(("ETag" = String, description = "The new version, e.g. `\"1\"`"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn create_user(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    let input: NewUser = parse(body)?;
    let user = app.identity.create_user(&pass, input).await?;
    Ok(user_response(&user, StatusCode::CREATED))
}

/// Read a user
///
/// Needs `rbac:admin` on `*`.
#[utoipa::path(
    get,
    path = "/api/v1/users/{name}",
    tag = "rbac",
    params(schema::UserPath),
    responses(
        (status = 200, description = "The user", body = schema::User, headers(("ETag" = String, description = "Its version, e.g. `\"3\"`"))),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
    )
)]
pub async fn get_user(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Response> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    let user = app.identity.get_user(&pass, &name)?;
    Ok(user_response(&user, StatusCode::OK))
}

/// Change a user
///
/// Only the fields given change. Users may change their own display name and password;
/// anything else (and `disabled`) needs `rbac:admin` on `*`. A new password ends the user's
/// older sessions. Nobody can disable themselves.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{name}",
    tag = "rbac",
    params(schema::UserPath, schema::IfMatchHeader),
    request_body = schema::UserPatch,
    responses(
        (status = 200, description = "Updated", body = schema::User, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn update_user(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = app.identity.authorize_self(&p, &name)?;
    let patch: UserPatch = parse(body)?;
    let user = app
        .identity
        .update_user(&pass, &name, patch, expected)
        .await?;
    Ok(user_response(&user, StatusCode::OK))
}

/// Delete a user
///
/// Needs `rbac:admin` on `*`. The user's bindings go with it and its sessions stop working.
/// Nobody can delete themselves.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{name}",
    tag = "rbac",
    params(schema::UserPath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn delete_user(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    app.identity.delete_user(&pass, &name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ roles

/// List roles
///
/// The built-in roles (`builtin: true`) and the custom ones. Needs `rbac:admin` in some
/// namespace.
#[utoipa::path(
    get,
    path = "/api/v1/roles",
    tag = "rbac",
    responses(
        (status = 200, description = "Built-in roles, then custom ones", body = schema::RoleList),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
    )
)]
pub async fn list_roles(State(app): State<Arc<AppState>>, Caller(p): Caller) -> Result<Response> {
    let pass = p.authorize_listing(Permission::RbacAdmin)?;
    let roles = app.identity.list_roles(&pass)?;
    Ok(items(roles.iter().map(role_view).collect()))
}

/// Create a custom role
///
/// Needs `rbac:admin` on `*`. Built-in names are refused (409).
#[utoipa::path(
    post,
    path = "/api/v1/roles",
    tag = "rbac",
    request_body = schema::RoleInput,
    responses(
        (status = 201, description = "Created", body = schema::Role, headers(("ETag" = String, description = "The new version, e.g. `\"1\"`"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 409, response = schema::Conflict),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn create_role(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    let input: RoleInput = parse(body)?;
    let role = app.identity.put_role(&pass, None, input, None).await?;
    Ok(role_response(&role, StatusCode::CREATED))
}

/// Read a role
///
/// Needs `rbac:admin` in some namespace.
#[utoipa::path(
    get,
    path = "/api/v1/roles/{name}",
    tag = "rbac",
    params(schema::RolePath),
    responses(
        (status = 200, description = "The role", body = schema::Role, headers(("ETag" = String, description = "Its version (`\"0\"` for built-in roles)"))),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
    )
)]
pub async fn get_role(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> Result<Response> {
    let pass = p.authorize_listing(Permission::RbacAdmin)?;
    let role = app.identity.get_role(&pass, &name)?;
    Ok(role_response(&role, StatusCode::OK))
}

/// Create or replace a custom role
///
/// Needs `rbac:admin` on `*`. Without `If-Match` a missing role is created. Built-in roles
/// cannot be changed (409).
#[utoipa::path(
    put,
    path = "/api/v1/roles/{name}",
    tag = "rbac",
    params(schema::RolePath, schema::IfMatchHeader),
    request_body = schema::RoleInput,
    responses(
        (status = 200, description = "Stored", body = schema::Role, headers(("ETag" = String, description = "The new version"))),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn put_role(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
    IfMatch(expected): IfMatch,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    let input: RoleInput = parse(body)?;
    let role = app
        .identity
        .put_role(&pass, Some(&name), input, expected)
        .await?;
    Ok(role_response(&role, StatusCode::OK))
}

/// Delete a custom role
///
/// Needs `rbac:admin` on `*`. A role still bound, or carried by a token, cannot be deleted
/// (409), nor can a built-in one.
#[utoipa::path(
    delete,
    path = "/api/v1/roles/{name}",
    tag = "rbac",
    params(schema::RolePath, schema::IfMatchHeader),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 409, response = schema::Conflict),
        (status = 412, response = schema::PreconditionFailed),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn delete_role(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(name): Path<String>,
    IfMatch(expected): IfMatch,
) -> Result<StatusCode> {
    let pass = p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)?;
    app.identity.delete_role(&pass, &name, expected).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ------------------------------------------------------------------ bindings

/// List role bindings
///
/// Bindings in namespaces where the caller holds `rbac:admin`.
#[utoipa::path(
    get,
    path = "/api/v1/bindings",
    tag = "rbac",
    responses(
        (status = 200, description = "The bindings the caller administers", body = schema::BindingList),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
    )
)]
pub async fn list_bindings(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
) -> Result<Response> {
    let pass = p.authorize_listing(Permission::RbacAdmin)?;
    let bindings = app.identity.list_bindings(&pass)?;
    Ok(items(bindings.iter().map(binding_view).collect()))
}

/// Bind a role to a user or token
///
/// Needs `rbac:admin` in the binding's namespace, and the caller must itself hold every
/// permission of the role there (no escalation).
#[utoipa::path(
    post,
    path = "/api/v1/bindings",
    tag = "rbac",
    request_body = schema::BindingInput,
    responses(
        (status = 201, description = "Created", body = schema::Binding),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 413, response = schema::PayloadTooLarge),
        (status = 415, response = schema::UnsupportedMediaType),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn create_binding(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    JsonBody(body): JsonBody,
) -> Result<Response> {
    // The pass borrows its namespace, and the body is consumed below.
    let scope = body_scope(&body).to_owned();
    let pass = p.authorize(Permission::RbacAdmin, &scope)?;
    let input: NewBinding = parse(body)?;
    let binding = app.identity.create_binding(&pass, input).await?;
    Ok((StatusCode::CREATED, Json(binding_view(&binding))).into_response())
}

/// Remove a role binding
///
/// Needs `rbac:admin` in the binding's namespace.
#[utoipa::path(
    delete,
    path = "/api/v1/bindings/{id}",
    tag = "rbac",
    params(schema::IdPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn delete_binding(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    // As for tokens: an unknown id is authorized against `*` before its 404 can show.
    let namespace = app.identity.binding_namespace(&id);
    let scope = namespace.as_deref().unwrap_or(ALL_NAMESPACES).to_owned();
    let pass = p.authorize(Permission::RbacAdmin, &scope)?;
    namespace?;
    app.identity.delete_binding(&pass, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
