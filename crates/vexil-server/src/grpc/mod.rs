//! The gRPC side: Vexil's own `vexil.v1`, flagd evaluation v1/v2 and sync v1, with gRPC health and
//! reflection, on one tonic server with bounded message sizes, per-connection concurrency and
//! HTTP/2 keep-alives.

pub mod convert;
pub mod flagd;
pub mod identity;
pub mod vexil;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::flagd::sync::v1 as sync;
use vexil_proto::vexil::v1 as pb;

use crate::AppState;

/// Largest accepted request message.
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Serves gRPC on `listener` until `shutdown` resolves.
///
/// # Errors
/// A transport error from tonic.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<v2::service_server::ServiceServer<flagd::EvaluationV2>>()
        .await;
    health_reporter
        .set_serving::<v1::service_server::ServiceServer<flagd::EvaluationV1>>()
        .await;
    health_reporter
        .set_serving::<sync::flag_sync_service_server::FlagSyncServiceServer<flagd::Sync>>()
        .await;
    health_reporter
        .set_serving::<pb::namespace_service_server::NamespaceServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::flag_service_server::FlagServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::segment_service_server::SegmentServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::import_export_service_server::ImportExportServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::evaluation_service_server::EvaluationServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::audit_service_server::AuditServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::watch_service_server::WatchServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::config_service_server::ConfigServiceServer<vexil::VexilApi>>()
        .await;
    health_reporter
        .set_serving::<pb::auth_service_server::AuthServiceServer<identity::IdentityApi>>()
        .await;
    health_reporter
        .set_serving::<pb::user_service_server::UserServiceServer<identity::IdentityApi>>()
        .await;
    health_reporter
        .set_serving::<pb::role_service_server::RoleServiceServer<identity::IdentityApi>>()
        .await;
    health_reporter
        .set_serving::<pb::binding_service_server::BindingServiceServer<identity::IdentityApi>>()
        .await;
    health_reporter
        .set_serving::<pb::token_service_server::TokenServiceServer<identity::IdentityApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vexil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .ok();

    let v2 = v2::service_server::ServiceServer::new(flagd::EvaluationV2(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE);
    let v1 = v1::service_server::ServiceServer::new(flagd::EvaluationV1(state.clone()))
        .max_decoding_message_size(MAX_MESSAGE);
    let sync =
        sync::flag_sync_service_server::FlagSyncServiceServer::new(flagd::Sync(state.clone()))
            .max_decoding_message_size(MAX_MESSAGE);
    let ids = identity::IdentityApi(state.clone());
    let auth = pb::auth_service_server::AuthServiceServer::new(ids.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let users = pb::user_service_server::UserServiceServer::new(ids.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let roles = pb::role_service_server::RoleServiceServer::new(ids.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let bindings = pb::binding_service_server::BindingServiceServer::new(ids.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let tokens = pb::token_service_server::TokenServiceServer::new(ids)
        .max_decoding_message_size(MAX_MESSAGE);
    let api = vexil::VexilApi(state);
    let namespaces = pb::namespace_service_server::NamespaceServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let flags = pb::flag_service_server::FlagServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let segments = pb::segment_service_server::SegmentServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let import_export =
        pb::import_export_service_server::ImportExportServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE);
    let evaluation = pb::evaluation_service_server::EvaluationServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let audit = pb::audit_service_server::AuditServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let configs = pb::config_service_server::ConfigServiceServer::new(api.clone())
        .max_decoding_message_size(MAX_MESSAGE);
    let watch = pb::watch_service_server::WatchServiceServer::new(api)
        .max_decoding_message_size(MAX_MESSAGE);

    let router = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(256)
        .max_concurrent_streams(Some(256))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(v2)
        .add_service(v1)
        .add_service(sync)
        .add_service(namespaces)
        .add_service(flags)
        .add_service(segments)
        .add_service(import_export)
        .add_service(evaluation)
        .add_service(audit)
        .add_service(watch)
        .add_service(configs)
        .add_service(auth)
        .add_service(users)
        .add_service(roles)
        .add_service(bindings)
        .add_service(tokens)
        .add_optional_service(reflection);
    // TCP_NODELAY, as tonic's own `serve` sets it: a response is several small HTTP/2 frames,
    // and Nagle's algorithm would hold them for the client's delayed ACK (~40 ms tails).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
