//! The `vexil.v1` identity services and gRPC authentication end to end: sign-in, tokens on the
//! flagd evaluation service, revocation, and parity of the admin calls with REST.

use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use vexil_proto::flagd::evaluation::v2;
use vexil_proto::vexil::v1 as pb;

use crate::fixtures::{ADMIN_PASSWORD, AuthChannel, Server, bool_flag};

async fn plain_channel(s: &Server) -> Channel {
    let addr = s.process.grpc.clone().expect("gRPC address");
    Channel::from_shared(addr)
        .expect("uri")
        .connect()
        .await
        .expect("gRPC connect")
}

fn resolve(key: &str) -> v2::ResolveBooleanRequest {
    v2::ResolveBooleanRequest {
        flag_key: key.into(),
        context: None,
    }
}

async fn evaluator(ch: AuthChannel) -> v2::service_client::ServiceClient<AuthChannel> {
    v2::service_client::ServiceClient::new(ch)
}

#[tokio::test]
async fn login_over_grpc_issues_a_session_the_admin_services_accept() {
    let s = Server::start().await;
    let mut auth = pb::auth_service_client::AuthServiceClient::new(plain_channel(&s).await);
    let wrong = auth
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: "not the password".into(),
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert!(!wrong.message().contains("not the password"));

    let session = auth
        .login(pb::LoginRequest {
            username: "admin".into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();
    assert!(session.expires_at_ms > 0);
    let mut users =
        pb::user_service_client::UserServiceClient::new(s.grpc_channel_with(&session.token).await);
    let created = users
        .create_user(pb::CreateUserRequest {
            name: "grace".into(),
            password: "a long enough password".into(),
            display_name: "Grace".into(),
        })
        .await
        .expect("create user")
        .into_inner();
    assert_eq!((created.name.as_str(), created.version), ("grace", 1));
    // REST sees the same user: one service layer under both transports.
    let (status, body) = s.get("/api/v1/users/grace").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayName"], "Grace");
    assert!(body.get("passwordHash").is_none(), "{body}");

    // Without credentials the admin services answer UNAUTHENTICATED.
    let mut anon = pb::user_service_client::UserServiceClient::new(plain_channel(&s).await);
    let err = anon
        .list_users(pb::ListUsersRequest {})
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_evaluator_token_evaluates_over_flagd_and_stops_working_once_revoked() {
    let s = Server::start().await;
    let (status, body) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("grpc-auth"))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut tokens = pb::token_service_client::TokenServiceClient::new(s.grpc_channel().await);
    let created = tokens
        .create_token(pb::CreateTokenRequest {
            name: "sdk".into(),
            role: "evaluator".into(),
            namespace: "default".into(),
            expires_at_ms: None,
        })
        .await
        .expect("create token")
        .into_inner();
    assert!(created.secret.starts_with("vx_"));
    let id = created.token.expect("token record").id;

    let mut eval = evaluator(s.grpc_channel_with(&created.secret).await).await;
    let ok = eval
        .resolve_boolean(resolve("grpc-auth"))
        .await
        .expect("evaluation with the token")
        .into_inner();
    assert_eq!(ok.value, Some(false));

    // The evaluator role may evaluate, nothing more.
    let mut flags =
        pb::flag_service_client::FlagServiceClient::new(s.grpc_channel_with(&created.secret).await);
    let denied = flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect_err("evaluator cannot read flags");
    assert_eq!(denied.code(), Code::PermissionDenied);

    // No credentials: UNAUTHENTICATED, since `default` has not opted in to anonymous evaluation.
    let mut anon = v2::service_client::ServiceClient::new(plain_channel(&s).await);
    let err = anon
        .resolve_boolean(resolve("grpc-auth"))
        .await
        .expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated);

    tokens
        .revoke_token(pb::RevokeTokenRequest { id })
        .await
        .expect("revoke");
    let start = Instant::now();
    loop {
        match eval.resolve_boolean(resolve("grpc-auth")).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => assert!(
                start.elapsed() < Duration::from_secs(1),
                "a revoked token still answered after 1 s: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_garbage_bearer_is_refused_on_every_grpc_service_even_where_anonymous_is_allowed() {
    let s = Server::start().await;
    s.open_anonymous_evaluation("default").await;
    let mut anon = v2::service_client::ServiceClient::new(plain_channel(&s).await);
    let r = anon
        .resolve_boolean(resolve("missing"))
        .await
        .expect_err("no such flag");
    assert_eq!(
        r.code(),
        Code::NotFound,
        "anonymous evaluation is open: {r:?}"
    );

    let mut forged = evaluator(s.grpc_channel_with("not-a-token").await).await;
    let err = forged
        .resolve_boolean(resolve("missing"))
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut roles =
        pb::role_service_client::RoleServiceClient::new(s.grpc_channel_with("vx_0000").await);
    let err = roles
        .list_roles(pb::ListRolesRequest {})
        .await
        .expect_err("unknown api token");
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn an_open_event_stream_ends_unauthenticated_when_its_token_is_revoked() {
    let s = Server::start().await;
    let secret = s.api_token("evaluator", "default").await;
    let (_, tokens) = s.get("/api/v1/tokens").await;
    let id = tokens["items"][0]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let mut eval = evaluator(s.grpc_channel_with(&secret).await).await;
    let mut stream = eval
        .event_stream(v2::EventStreamRequest::default())
        .await
        .expect("stream opens")
        .into_inner();
    let ready = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an event");
    assert_eq!(ready.r#type, "provider_ready");

    let (status, _) = s.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, 204);
    let start = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended within 2 s of the revocation");
    let err = end.expect_err("ended with a status");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    eprintln!("stream ended {:?} after the revocation", start.elapsed());
}
