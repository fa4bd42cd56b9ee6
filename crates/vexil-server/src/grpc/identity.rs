//! `vexil.v1` identity services (sign-in, users, roles, bindings, tokens): the twins of the
//! REST handlers in `http::identity`. Resolve the caller, authorize first, call
//! [`vexil_service::IdentityService`], convert. Responses never carry a password hash or a token
//! digest.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vexil_core::identity::{ALL_NAMESPACES, ApiToken, Binding, User};
use vexil_proto::vexil::v1 as pb;
use vexil_service::{
    NewBinding, NewToken, NewUser, Permission, Principal, RequestMeta, RoleInput, RoleView,
    ServiceError, UserPatch,
};

use super::convert::status;
use super::flagd::caller;
use crate::AppState;

/// The identity services over one shared state.
#[derive(Debug, Clone)]
pub struct IdentityApi(pub Arc<AppState>);

fn user_message(u: &User) -> pb::User {
    pb::User {
        name: u.name.clone(),
        display_name: u.display_name.clone(),
        disabled: u.disabled,
        version: u.version,
        created_at_ms: u.created_at,
        updated_at_ms: u.updated_at,
    }
}

fn role_message(r: &RoleView) -> pb::Role {
    pb::Role {
        name: r.role.name.clone(),
        description: r.role.description.clone(),
        permissions: r
            .role
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        builtin: r.builtin,
        version: r.role.version,
    }
}

fn binding_message(b: &Binding) -> pb::Binding {
    pb::Binding {
        id: b.id.clone(),
        subject: b.subject.to_string(),
        role: b.role.clone(),
        namespace: b.namespace.clone(),
        created_at_ms: b.created_at,
        created_by: format!("{}:{}", b.created_by.kind, b.created_by.id),
    }
}

fn token_message(t: &ApiToken) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.clone(),
        name: t.name.clone(),
        role: t.role.clone(),
        namespace: t.namespace.clone(),
        expires_at_ms: t.expires_at,
        created_at_ms: t.created_at,
        created_by: format!("{}:{}", t.created_by.kind, t.created_by.id),
    }
}

fn expected(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// The namespace of an existing binding or token, for authorizing its deletion. An unknown id
/// is authorized against `*` first, so a caller without `rbac:admin` learns nothing from it.
fn scope_of(p: &Principal, lookup: Result<String, ServiceError>) -> Result<String, Status> {
    match lookup {
        Ok(ns) => Ok(ns),
        Err(e) => {
            p.authorize(Permission::RbacAdmin, ALL_NAMESPACES)
                .map_err(status)?;
            Err(status(e))
        }
    }
}

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for IdentityApi {
    async fn login(
        &self,
        req: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let meta = RequestMeta {
            request_id: req
                .metadata()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            source_ip: req.remote_addr().map(|a| a.ip()),
        };
        let r = req.into_inner();
        let session = self
            .0
            .identity
            .login(&r.username, &r.password, meta)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LoginResponse {
            token: session.token,
            expires_at_ms: session.expires_at,
        }))
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for IdentityApi {
    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        let users = self.0.identity.list_users(&pass).map_err(status)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(user_message).collect(),
        }))
    }

    async fn get_user(
        &self,
        req: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        let u = self
            .0
            .identity
            .get_user(&pass, &req.get_ref().name)
            .map_err(status)?;
        Ok(Response::new(user_message(&u)))
    }

    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        let r = req.get_ref();
        let input = NewUser {
            name: r.name.clone(),
            password: r.password.clone(),
            display_name: r.display_name.clone(),
        };
        let u = self
            .0
            .identity
            .create_user(&pass, input)
            .await
            .map_err(status)?;
        Ok(Response::new(user_message(&u)))
    }

    async fn update_user(
        &self,
        req: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let p = caller(&self.0, &req)?;
        let r = req.get_ref();
        let pass = self
            .0
            .identity
            .authorize_self(&p, &r.name)
            .map_err(status)?;
        let patch = UserPatch {
            display_name: r.display_name.clone(),
            password: r.password.clone(),
            disabled: r.disabled,
        };
        let u = self
            .0
            .identity
            .update_user(&pass, &r.name, patch, expected(r.expected_version))
            .await
            .map_err(status)?;
        Ok(Response::new(user_message(&u)))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        self.0
            .identity
            .delete_user(
                &pass,
                &req.get_ref().name,
                expected(req.get_ref().expected_version),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }
}

impl IdentityApi {
    async fn put_role(
        &self,
        req: Request<pb::PutRoleRequest>,
        replace: bool,
    ) -> Result<Response<pb::Role>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        let r = req.into_inner();
        let path = replace.then(|| r.name.clone());
        let input = RoleInput {
            name: r.name,
            description: r.description,
            permissions: r.permissions,
        };
        let role = self
            .0
            .identity
            .put_role(&pass, path.as_deref(), input, expected(r.expected_version))
            .await
            .map_err(status)?;
        Ok(Response::new(role_message(&role)))
    }
}

#[tonic::async_trait]
impl pb::role_service_server::RoleService for IdentityApi {
    async fn list_roles(
        &self,
        req: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize_listing(Permission::RbacAdmin).map_err(status)?;
        let roles = self.0.identity.list_roles(&pass).map_err(status)?;
        Ok(Response::new(pb::ListRolesResponse {
            roles: roles.iter().map(role_message).collect(),
        }))
    }

    async fn get_role(
        &self,
        req: Request<pb::GetRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize_listing(Permission::RbacAdmin).map_err(status)?;
        let role = self
            .0
            .identity
            .get_role(&pass, &req.get_ref().name)
            .map_err(status)?;
        Ok(Response::new(role_message(&role)))
    }

    async fn create_role(
        &self,
        req: Request<pb::PutRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        self.put_role(req, false).await
    }

    async fn update_role(
        &self,
        req: Request<pb::PutRoleRequest>,
    ) -> Result<Response<pb::Role>, Status> {
        self.put_role(req, true).await
    }

    async fn delete_role(
        &self,
        req: Request<pb::DeleteRoleRequest>,
    ) -> Result<Response<pb::DeleteRoleResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p
            .authorize(Permission::RbacAdmin, ALL_NAMESPACES)
            .map_err(status)?;
        self.0
            .identity
            .delete_role(
                &pass,
                &req.get_ref().name,
                expected(req.get_ref().expected_version),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteRoleResponse {}))
    }
}

#[tonic::async_trait]
impl pb::binding_service_server::BindingService for IdentityApi {
    async fn list_bindings(
        &self,
        req: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize_listing(Permission::RbacAdmin).map_err(status)?;
        let bindings = self.0.identity.list_bindings(&pass).map_err(status)?;
        Ok(Response::new(pb::ListBindingsResponse {
            bindings: bindings.iter().map(binding_message).collect(),
        }))
    }

    async fn create_binding(
        &self,
        req: Request<pb::CreateBindingRequest>,
    ) -> Result<Response<pb::Binding>, Status> {
        let p = caller(&self.0, &req)?;
        let r = req.get_ref();
        let pass = p
            .authorize(Permission::RbacAdmin, &r.namespace)
            .map_err(status)?;
        let input = NewBinding {
            subject: r.subject.clone(),
            role: r.role.clone(),
            namespace: r.namespace.clone(),
        };
        let b = self
            .0
            .identity
            .create_binding(&pass, input)
            .await
            .map_err(status)?;
        Ok(Response::new(binding_message(&b)))
    }

    async fn delete_binding(
        &self,
        req: Request<pb::DeleteBindingRequest>,
    ) -> Result<Response<pb::DeleteBindingResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let id = &req.get_ref().id;
        let ns = scope_of(&p, self.0.identity.binding_namespace(id))?;
        let pass = p.authorize(Permission::RbacAdmin, &ns).map_err(status)?;
        self.0
            .identity
            .delete_binding(&pass, id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteBindingResponse {}))
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for IdentityApi {
    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let pass = p.authorize_listing(Permission::RbacAdmin).map_err(status)?;
        let tokens = self.0.identity.list_tokens(&pass).map_err(status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_message).collect(),
        }))
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let r = req.get_ref();
        let pass = p
            .authorize(Permission::RbacAdmin, &r.namespace)
            .map_err(status)?;
        let input = NewToken {
            name: r.name.clone(),
            role: r.role.clone(),
            namespace: r.namespace.clone(),
            expires_at: r.expires_at_ms,
        };
        let (token, secret) = self
            .0
            .identity
            .create_token(&pass, input)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(token_message(&token)),
            secret,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let p = caller(&self.0, &req)?;
        let id = &req.get_ref().id;
        let ns = scope_of(&p, self.0.identity.token_namespace(id))?;
        let pass = p.authorize(Permission::RbacAdmin, &ns).map_err(status)?;
        self.0
            .identity
            .revoke_token(&pass, id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }
}
