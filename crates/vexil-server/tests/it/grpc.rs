//! flagd's gRPC protocols end to end: the testbed rows over `flagd.evaluation.v2` (including
//! the TYPE_MISMATCH row only a typed protocol can express), EventStream and sync.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::Code;
use vexil_proto::flagd::evaluation::v2;
use vexil_proto::flagd::sync::v1 as sync;
use vexil_server::grpc::convert;
use vexil_testkit::testbed::{self, FlagType, Fractional, Outcome, Request, Resolver};

use crate::fixtures::{Server, bool_flag};

type V2Client = v2::service_client::ServiceClient<crate::fixtures::AuthChannel>;

async fn v2_client(s: &Server) -> V2Client {
    V2Client::new(s.grpc_channel().await)
}

fn with_ns<T>(msg: T, ns: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("flagd-selector", ns.parse().expect("ascii"));
    r
}

struct FlagdV2 {
    client: V2Client,
    namespace: String,
    rt: tokio::runtime::Handle,
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::NotFound => "FLAG_NOT_FOUND",
        Code::InvalidArgument => "TYPE_MISMATCH",
        Code::DataLoss => "PARSE_ERROR",
        _ => "GENERAL",
    }
}

impl Resolver for FlagdV2 {
    fn resolve(&mut self, req: &Request) -> Result<Outcome, String> {
        let ctx = Some(convert::map_to_struct(&req.context));
        let key = req.key.clone();
        let ns = self.namespace.clone();
        let mut c = self.client.clone();
        let call = async move {
            // Each typed resolve answers (value, reason, metadata) or a status.
            macro_rules! call {
                ($method:ident, $req:ident, $conv:expr) => {{
                    match c
                        .$method(with_ns(
                            v2::$req {
                                flag_key: key,
                                context: ctx,
                            },
                            &ns,
                        ))
                        .await
                    {
                        Ok(r) => {
                            let r = r.into_inner();
                            let conv: fn(_) -> Option<Value> = $conv;
                            Ok((r.value.and_then(conv), r.reason, r.metadata))
                        }
                        Err(s) => Err(s),
                    }
                }};
            }
            match req.flag_type {
                FlagType::Boolean => call!(resolve_boolean, ResolveBooleanRequest, |v: bool| Some(
                    json!(v)
                )),
                FlagType::String => call!(resolve_string, ResolveStringRequest, |v: String| Some(
                    json!(v)
                )),
                FlagType::Integer => call!(resolve_int, ResolveIntRequest, |v: i64| Some(json!(v))),
                FlagType::Float => {
                    call!(resolve_float, ResolveFloatRequest, |v: f64| Some(json!(v)))
                }
                FlagType::Object => call!(
                    resolve_object,
                    ResolveObjectRequest,
                    |v: prost_types::Struct| convert::struct_to_map(&v, 0).ok().map(Value::Object)
                ),
            }
        };
        let out = tokio::task::block_in_place(|| self.rt.block_on(call));
        Ok(match out {
            Ok((value, reason, metadata)) => Outcome {
                value,
                reason,
                error_code: None,
                metadata: metadata
                    .and_then(|m| convert::struct_to_map(&m, 0).ok())
                    .unwrap_or_default(),
            },
            Err(s) => Outcome {
                value: None,
                reason: "ERROR".into(),
                error_code: Some(code_name(s.code()).into()),
                metadata: Default::default(),
            },
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_required_flagd_testbed_row_passes_over_flagd_evaluation_v2() {
    let v2s = Server::start().await;
    let v3s = Server::start_with(|o| o.env("VEXIL_FRACTIONAL", "v3")).await;
    let mut out = String::new();
    let mut failed = 0;
    for (i, suite) in testbed::suites().into_iter().enumerate() {
        let server = if suite.fractional == Fractional::V3 {
            &v3s
        } else {
            &v2s
        };
        let ns = format!("suite{i}");
        let (status, body) = server.post("/api/v1/namespaces", &json!({"key": ns, "evaluationContext": Value::Object(suite.static_context.clone())})).await;
        assert_eq!(status, 201, "{body}");
        server.import(&ns, &suite.flags).await;
        let mut resolver = FlagdV2 {
            client: v2_client(server).await,
            namespace: ns,
            rt: tokio::runtime::Handle::current(),
        };
        let report = testbed::run(&suite, &mut resolver);
        assert!(report.passed() > 0);
        out.push_str(&report.summary(suite.name));
        failed += report.failed();
    }
    println!("{out}");
    assert!(
        out.contains("[evaluator] errors.feature: 2 passed, 0 failed"),
        "the TYPE_MISMATCH row must pass over gRPC:\n{out}"
    );
    assert_eq!(failed, 0, "conformance over flagd gRPC v2:\n{out}");
}

#[tokio::test]
async fn event_stream_sends_ready_then_a_change_naming_the_flag() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("watched"))
        .await;
    let mut c = v2_client(&s).await;
    let mut stream = c
        .event_stream(v2::EventStreamRequest {})
        .await
        .expect("stream")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("ready in time")
        .expect("ok")
        .expect("message");
    assert_eq!(first.r#type, "provider_ready");
    let (status, _) = s
        .post(
            "/api/v1/namespaces/default/flags/watched/disable",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let change = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("change in time")
        .expect("ok")
        .expect("message");
    assert_eq!(change.r#type, "configuration_change");
    let data = change
        .data
        .and_then(|d| convert::struct_to_map(&d, 0).ok())
        .unwrap_or_default();
    assert!(data["flags"].get("watched").is_some(), "{data:?}");
}

#[tokio::test]
async fn disabled_flags_leave_value_and_variant_unset_in_v2() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("off"))
        .await;
    s.post("/api/v1/namespaces/default/flags/off/disable", &json!({}))
        .await;
    let mut c = v2_client(&s).await;
    let r = c
        .resolve_boolean(v2::ResolveBooleanRequest {
            flag_key: "off".into(),
            context: None,
        })
        .await
        .expect("ok")
        .into_inner();
    assert_eq!(
        (r.value, r.variant, r.reason.as_str()),
        (None, None, "DISABLED")
    );
}

#[tokio::test]
async fn sync_streams_the_namespace_and_a_new_document_after_each_change() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("synced"))
        .await;
    let mut c = sync::flag_sync_service_client::FlagSyncServiceClient::new(s.grpc_channel().await);
    let mut stream = c
        .sync_flags(sync::SyncFlagsRequest::default())
        .await
        .expect("sync")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("message");
    let doc: Value = serde_json::from_str(&first.flag_configuration).expect("json");
    assert_eq!(doc["flags"]["synced"]["state"], "ENABLED");
    s.post(
        "/api/v1/namespaces/default/flags/synced/disable",
        &json!({}),
    )
    .await;
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("message");
    let doc: Value = serde_json::from_str(&next.flag_configuration).expect("json");
    assert_eq!(doc["flags"]["synced"]["state"], "DISABLED");
    let all = c
        .fetch_all_flags(sync::FetchAllFlagsRequest::default())
        .await
        .expect("fetch")
        .into_inner();
    assert!(all.flag_configuration.contains("\"synced\""));
}

#[tokio::test]
async fn an_unknown_selector_is_not_found() {
    let s = Server::start().await;
    let mut c = v2_client(&s).await;
    let err = c
        .resolve_boolean(with_ns(
            v2::ResolveBooleanRequest {
                flag_key: "x".into(),
                context: None,
            },
            "nope",
        ))
        .await
        .expect_err("unknown namespace");
    assert_eq!(err.code(), Code::NotFound);
}
