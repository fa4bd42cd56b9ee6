//! `vexil.v1` end to end: every RPC against the spawned server, its errors, the watch stream, and
//! the parity test, which runs one sequence of admin operations over REST on one server and over
//! gRPC on another and requires identical state and audit logs.

use std::time::Duration;

use serde_json::{Map, Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::AuthChannel;
use vexil_proto::vexil::v1 as pb;
use vexil_server::grpc::convert;

use crate::fixtures::{Server, bool_flag, send};

use pb::evaluation_service_client::EvaluationServiceClient;
use pb::flag_service_client::FlagServiceClient;
use pb::import_export_service_client::ImportExportServiceClient;
use pb::namespace_service_client::NamespaceServiceClient;
use pb::segment_service_client::SegmentServiceClient;
use pb::watch_service_client::WatchServiceClient;

/// One client per `vexil.v1` service, over one connection.
#[derive(Clone)]
struct Clients {
    namespaces: NamespaceServiceClient<AuthChannel>,
    flags: FlagServiceClient<AuthChannel>,
    segments: SegmentServiceClient<AuthChannel>,
    import_export: ImportExportServiceClient<AuthChannel>,
    evaluation: EvaluationServiceClient<AuthChannel>,
    watch: WatchServiceClient<AuthChannel>,
}

async fn clients(s: &Server) -> Clients {
    let ch = s.grpc_channel().await;
    Clients {
        namespaces: NamespaceServiceClient::new(ch.clone()),
        flags: FlagServiceClient::new(ch.clone()),
        segments: SegmentServiceClient::new(ch.clone()),
        import_export: ImportExportServiceClient::new(ch.clone()),
        evaluation: EvaluationServiceClient::new(ch.clone()),
        watch: WatchServiceClient::new(ch),
    }
}

// ----------------------------------------------------------------------------- JSON ↔ proto

fn obj(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

fn to_struct(v: &Value) -> prost_types::Struct {
    convert::map_to_struct(&obj(v))
}

fn from_struct(s: Option<&prost_types::Struct>) -> Value {
    s.and_then(|s| convert::struct_to_map(s, 0).ok())
        .map_or(Value::Null, Value::Object)
}

fn from_value(v: Option<&prost_types::Value>) -> Option<Value> {
    v.and_then(|v| convert::to_json(v, 0).ok())
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A REST flag body as a `Flag` message.
fn flag_message(v: &Value) -> pb::Flag {
    pb::Flag {
        key: str_of(v, "key"),
        name: str_of(v, "name"),
        description: str_of(v, "description"),
        tags: v["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        state: match v["state"].as_str() {
            Some("ENABLED") => pb::FlagState::Enabled.into(),
            Some("DISABLED") => pb::FlagState::Disabled.into(),
            _ => pb::FlagState::Unspecified.into(),
        },
        variants: v.get("variants").map(to_struct),
        default_variant: v
            .get("defaultVariant")
            .and_then(Value::as_str)
            .map(str::to_owned),
        targeting: v.get("targeting").map(convert::from_json),
        metadata: v.get("metadata").map(to_struct),
        ..pb::Flag::default()
    }
}

/// A `Flag` message in the REST representation.
fn flag_json(f: &pb::Flag) -> Value {
    let mut m = Map::new();
    m.insert("namespace".into(), f.namespace.clone().into());
    m.insert("key".into(), f.key.clone().into());
    m.insert("name".into(), f.name.clone().into());
    m.insert("description".into(), f.description.clone().into());
    m.insert("tags".into(), json!(f.tags));
    let state = match pb::FlagState::try_from(f.state) {
        Ok(pb::FlagState::Enabled) => "ENABLED",
        Ok(pb::FlagState::Disabled) => "DISABLED",
        _ => "?",
    };
    m.insert("state".into(), state.into());
    m.insert("variants".into(), from_struct(f.variants.as_ref()));
    if let Some(d) = &f.default_variant {
        m.insert("defaultVariant".into(), d.clone().into());
    }
    if let Some(t) = from_value(f.targeting.as_ref()) {
        m.insert("targeting".into(), t);
    }
    let meta = from_struct(f.metadata.as_ref());
    if meta.as_object().is_some_and(|o| !o.is_empty()) {
        m.insert("metadata".into(), meta);
    }
    m.insert("version".into(), f.version.into());
    m.insert("createdAt".into(), f.created_at_ms.into());
    m.insert("createdBy".into(), f.created_by.clone().into());
    m.insert("updatedAt".into(), f.updated_at_ms.into());
    m.insert("updatedBy".into(), f.updated_by.clone().into());
    Value::Object(m)
}

fn namespace_message(v: &Value) -> pb::Namespace {
    pb::Namespace {
        key: str_of(v, "key"),
        name: str_of(v, "name"),
        description: str_of(v, "description"),
        evaluation_context: v.get("evaluationContext").map(to_struct),
        anonymous_evaluation: v
            .get("anonymousEvaluation")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..pb::Namespace::default()
    }
}

fn namespace_json(n: &pb::Namespace) -> Value {
    json!({
        "key": n.key, "name": n.name, "description": n.description,
        "evaluationContext": from_struct(n.evaluation_context.as_ref()),
        "anonymousEvaluation": n.anonymous_evaluation,
        "version": n.version, "createdAt": n.created_at_ms, "updatedAt": n.updated_at_ms,
    })
}

fn segment_message(v: &Value) -> pb::Segment {
    pb::Segment {
        key: str_of(v, "key"),
        description: str_of(v, "description"),
        rule: v.get("rule").map(convert::from_json),
        ..pb::Segment::default()
    }
}

fn segment_json(s: &pb::Segment) -> Value {
    json!({
        "namespace": s.namespace, "key": s.key, "description": s.description,
        "rule": from_value(s.rule.as_ref()), "version": s.version,
        "createdAt": s.created_at_ms, "updatedAt": s.updated_at_ms,
    })
}

fn import_json(r: &pb::ImportResponse) -> Value {
    let d = r.diff.clone().unwrap_or_default();
    json!({
        "dryRun": r.dry_run,
        "diff": {
            "added": d.added, "changed": d.changed, "unchanged": d.unchanged,
            "removed": d.removed, "segmentsAdded": d.segments_added,
            "segmentsChanged": d.segments_changed, "segmentsRemoved": d.segments_removed,
        },
        "warnings": r.warnings.iter().map(|w| json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
        "revision": r.revision,
    })
}

/// Removes keys (wall-clock times and per-request values) that legitimately differ between two
/// runs of the same operations.
fn strip(v: &mut Value, keys: &[&str]) {
    if let Value::Object(m) = v {
        for k in keys {
            m.remove(*k);
        }
    }
}

const TIMES: &[&str] = &["createdAt", "updatedAt"];

// ----------------------------------------------------------------------------- the RPCs

#[tokio::test]
async fn every_vexil_v1_service_reports_serving_over_grpc_health() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let s = Server::start().await;
    let addr = s.process.grpc.clone().expect("gRPC address");
    let channel = Channel::from_shared(addr)
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in [
        "vexil.v1.NamespaceService",
        "vexil.v1.FlagService",
        "vexil.v1.SegmentService",
        "vexil.v1.ImportExportService",
        "vexil.v1.EvaluationService",
        "vexil.v1.AuditService",
        "vexil.v1.WatchService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service}: {e}"))
            .into_inner();
        assert_eq!(r.status, i32::from(ServingStatus::Serving), "{service}");
    }
}

#[tokio::test]
async fn namespaces_are_created_read_listed_updated_and_deleted_over_grpc() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    let created = c
        .namespaces
        .create_namespace(pb::CreateNamespaceRequest {
            namespace: Some(namespace_message(&json!({
                "key": "team-a", "name": "Team A", "evaluationContext": {"region": "eu"}
            }))),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!((created.key.as_str(), created.version), ("team-a", 1));
    assert_eq!(
        from_struct(created.evaluation_context.as_ref()),
        json!({"region": "eu"})
    );

    let got = c
        .namespaces
        .get_namespace(pb::GetNamespaceRequest {
            key: "team-a".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got, created);
    let (_, rest) = s.get("/api/v1/namespaces/team-a").await;
    assert_eq!(
        namespace_json(&got),
        rest,
        "gRPC and REST read the same namespace"
    );

    let list = c
        .namespaces
        .list_namespaces(pb::ListNamespacesRequest {})
        .await
        .expect("list")
        .into_inner();
    let keys: Vec<_> = list.namespaces.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["default", "team-a"]);

    let updated = c
        .namespaces
        .update_namespace(pb::UpdateNamespaceRequest {
            namespace: Some(namespace_message(
                &json!({"key": "team-a", "name": "Team A", "description": "now described"}),
            )),
            expected_version: Some(1),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (updated.version, updated.description.as_str()),
        (2, "now described")
    );

    let stale = c
        .namespaces
        .delete_namespace(pb::DeleteNamespaceRequest {
            key: "team-a".into(),
            expected_version: Some(1),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    c.namespaces
        .delete_namespace(pb::DeleteNamespaceRequest {
            key: "team-a".into(),
            expected_version: Some(2),
        })
        .await
        .expect("delete");
    let gone = c
        .namespaces
        .get_namespace(pb::GetNamespaceRequest {
            key: "team-a".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let default = c
        .namespaces
        .delete_namespace(pb::DeleteNamespaceRequest {
            key: "default".into(),
            expected_version: None,
        })
        .await
        .expect_err("default stays");
    assert_eq!(default.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_flag_goes_through_its_whole_life_over_grpc() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    let created = c
        .flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&bool_flag("checkout"))),
            allow_invalid_targeting: false,
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(
        (created.version, created.namespace.as_str()),
        (1, "default")
    );
    // The signed-in user is recorded as the author.
    assert_eq!(created.created_by, "admin");

    // The namespace may also come from the x-vexil-namespace metadata.
    let mut get = tonic::Request::new(pb::GetFlagRequest {
        namespace: String::new(),
        key: "checkout".into(),
    });
    get.metadata_mut()
        .insert("x-vexil-namespace", "default".parse().expect("ascii"));
    let got = c.flags.get_flag(get).await.expect("get").into_inner();
    assert_eq!(got, created);
    let (_, rest) = s.get("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(flag_json(&got), rest, "gRPC and REST read the same flag");

    c.flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&json!({
                "key": "banner", "state": "ENABLED", "variants": {"a": "A", "b": "B"},
                "defaultVariant": "a", "tags": ["ui"]
            }))),
            allow_invalid_targeting: false,
        })
        .await
        .expect("second flag");
    let all = c
        .flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let keys: Vec<_> = all.flags.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["banner", "checkout"]);
    let page = c
        .flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "default".into(),
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(page.flags.len(), 1);
    let rest_page = c
        .flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "default".into(),
            limit: 1,
            cursor: page.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .expect("next page")
        .into_inner();
    assert_eq!(rest_page.flags[0].key, "checkout");
    let tagged = c
        .flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "default".into(),
            tag: "ui".into(),
            ..Default::default()
        })
        .await
        .expect("by tag")
        .into_inner();
    assert_eq!(tagged.flags.len(), 1);
    assert_eq!(tagged.flags[0].key, "banner");

    let mut changed = bool_flag("checkout");
    changed["defaultVariant"] = json!("on");
    let updated = c
        .flags
        .update_flag(pb::UpdateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&changed)),
            expected_version: Some(1),
            allow_invalid_targeting: false,
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        (updated.version, updated.default_variant.as_deref()),
        (2, Some("on"))
    );

    let patched = c
        .flags
        .patch_flag(pb::PatchFlagRequest {
            namespace: "default".into(),
            key: "checkout".into(),
            patch: Some(to_struct(
                &json!({"description": "patched", "targeting": null, "metadata": {"team": "pay"}}),
            )),
            expected_version: Some(2),
            allow_invalid_targeting: false,
        })
        .await
        .expect("patch")
        .into_inner();
    assert_eq!(patched.version, 3);
    assert_eq!(patched.description, "patched");
    assert!(patched.targeting.is_none(), "merge patch null removes");
    assert_eq!(
        from_struct(patched.metadata.as_ref()),
        json!({"team": "pay"})
    );

    let off = c
        .flags
        .disable_flag(pb::SetFlagStateRequest {
            namespace: "default".into(),
            key: "checkout".into(),
        })
        .await
        .expect("disable")
        .into_inner();
    assert_eq!(
        (off.state, off.version),
        (pb::FlagState::Disabled.into(), 4)
    );
    let on = c
        .flags
        .enable_flag(pb::SetFlagStateRequest {
            namespace: "default".into(),
            key: "checkout".into(),
        })
        .await
        .expect("enable")
        .into_inner();
    assert_eq!((on.state, on.version), (pb::FlagState::Enabled.into(), 5));
    let again = c
        .flags
        .enable_flag(pb::SetFlagStateRequest {
            namespace: "default".into(),
            key: "checkout".into(),
        })
        .await
        .expect("enable is idempotent")
        .into_inner();
    assert_eq!(again.version, 5);

    c.flags
        .delete_flag(pb::DeleteFlagRequest {
            namespace: "default".into(),
            key: "checkout".into(),
            expected_version: Some(5),
        })
        .await
        .expect("delete");
    let gone = c
        .flags
        .get_flag(pb::GetFlagRequest {
            namespace: "default".into(),
            key: "checkout".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    let missing_ns = c
        .flags
        .list_flags(pb::ListFlagsRequest {
            namespace: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown namespace");
    assert_eq!(missing_ns.code(), Code::NotFound);
}

#[tokio::test]
async fn segments_are_created_read_listed_updated_and_deleted_over_grpc() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    let rule = json!({"in": ["@example.com", {"var": "email"}]});
    let created = c
        .segments
        .create_segment(pb::CreateSegmentRequest {
            namespace: "default".into(),
            segment: Some(segment_message(
                &json!({"key": "staff", "description": "employees", "rule": rule}),
            )),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!((created.key.as_str(), created.version), ("staff", 1));
    assert_eq!(from_value(created.rule.as_ref()), Some(rule.clone()));
    let dup = c
        .segments
        .create_segment(pb::CreateSegmentRequest {
            namespace: "default".into(),
            segment: Some(segment_message(&json!({"key": "staff", "rule": rule}))),
        })
        .await
        .expect_err("exists");
    assert_eq!(dup.code(), Code::AlreadyExists);

    let got = c
        .segments
        .get_segment(pb::GetSegmentRequest {
            namespace: "default".into(),
            key: "staff".into(),
        })
        .await
        .expect("get")
        .into_inner();
    let (_, rest) = s.get("/api/v1/namespaces/default/segments/staff").await;
    assert_eq!(
        segment_json(&got),
        rest,
        "gRPC and REST read the same segment"
    );

    let updated = c
        .segments
        .update_segment(pb::UpdateSegmentRequest {
            namespace: "default".into(),
            segment: Some(segment_message(
                &json!({"key": "staff", "rule": {"==": [{"var": "staff"}, true]}}),
            )),
            expected_version: Some(1),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.version, 2);
    let list = c
        .segments
        .list_segments(pb::ListSegmentsRequest {
            namespace: "default".into(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.segments, [updated]);

    // A referenced segment cannot go; once the reference is gone, it can.
    let mut flag = bool_flag("gated");
    flag["targeting"] = json!({"if": [{"$ref": "staff"}, "on", null]});
    c.flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&flag)),
            allow_invalid_targeting: false,
        })
        .await
        .expect("flag using the segment");
    let used = c
        .segments
        .delete_segment(pb::DeleteSegmentRequest {
            namespace: "default".into(),
            key: "staff".into(),
            expected_version: None,
        })
        .await
        .expect_err("still referenced");
    assert_eq!(used.code(), Code::FailedPrecondition);
    assert!(used.message().contains("flag gated"), "{}", used.message());
    c.flags
        .delete_flag(pb::DeleteFlagRequest {
            namespace: "default".into(),
            key: "gated".into(),
            expected_version: None,
        })
        .await
        .expect("delete flag");
    c.segments
        .delete_segment(pb::DeleteSegmentRequest {
            namespace: "default".into(),
            key: "staff".into(),
            expected_version: Some(2),
        })
        .await
        .expect("delete segment");
    let gone = c
        .segments
        .get_segment(pb::GetSegmentRequest {
            namespace: "default".into(),
            key: "staff".into(),
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn flagd_documents_import_and_export_over_grpc_as_over_rest() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    let doc = json!({
        "flags": {
            "color": {"state": "ENABLED", "variants": {"red": "r", "blue": "b"}, "defaultVariant": "red",
                      "targeting": {"if": [{"$ref": "vip"}, "blue", null]}},
            "broken": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                       "targeting": {"no-such-op": [1]}}
        },
        "$evaluators": {"vip": {"==": [{"var": "tier"}, "gold"]}}
    });
    let dry = c
        .import_export
        .import(pb::ImportRequest {
            namespace: "default".into(),
            document: doc.to_string(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .expect("dry run")
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!(
        dry.diff.as_ref().map(|d| d.added.clone()),
        Some(vec!["broken".to_owned(), "color".to_owned()])
    );
    let (_, none) = s.get("/api/v1/namespaces/default/flags").await;
    assert_eq!(none["items"], json!([]), "a dry run writes nothing");

    let out = c
        .import_export
        .import(pb::ImportRequest {
            namespace: "default".into(),
            document: doc.to_string(),
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner();
    assert!(!out.dry_run);
    assert_eq!(
        out.diff.as_ref().map(|d| d.segments_added.clone()),
        Some(vec!["vip".to_owned()])
    );
    assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
    assert!(
        out.warnings[0].path.contains("broken"),
        "{:?}",
        out.warnings
    );

    let exported = c
        .import_export
        .export(pb::ExportRequest {
            namespace: "default".into(),
            format: pb::DocumentFormat::Json.into(),
        })
        .await
        .expect("export")
        .into_inner();
    let rest = s
        .http
        .get(s.url("/api/v1/namespaces/default/export"))
        .send()
        .await
        .expect("REST export")
        .text()
        .await
        .expect("text");
    assert_eq!(
        exported.document, rest,
        "gRPC and REST export the same file"
    );
    let yaml = c
        .import_export
        .export(pb::ExportRequest {
            namespace: "default".into(),
            format: pb::DocumentFormat::Yaml.into(),
        })
        .await
        .expect("yaml export")
        .into_inner();
    assert!(yaml.document.contains("color:"), "{}", yaml.document);

    // Replace mode with the YAML file removes nothing it contains and re-imports unchanged.
    let again = c
        .import_export
        .import(pb::ImportRequest {
            namespace: "default".into(),
            document: yaml.document,
            format: pb::DocumentFormat::Yaml.into(),
            mode: pb::ImportMode::Replace.into(),
            dry_run: false,
        })
        .await
        .expect("yaml import")
        .into_inner();
    let diff = again.diff.unwrap_or_default();
    assert_eq!(diff.unchanged, ["broken", "color"]);
    assert!(
        diff.removed.is_empty() && diff.changed.is_empty(),
        "{diff:?}"
    );

    let malformed = c
        .import_export
        .import(pb::ImportRequest {
            namespace: "default".into(),
            document: "{not json".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn evaluate_evaluate_all_and_explain_answer_over_grpc_as_rest_does() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    let (status, body) = s
        .post(
            "/api/v1/namespaces",
            &json!({"key": "shop", "evaluationContext": {"tier": "gold"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.post("/api/v1/namespaces/shop/flags", &bool_flag("checkout"))
        .await;
    let (status, _) = s
        .post(
            "/api/v1/namespaces/shop/flags",
            &json!({"key": "ratio", "state": "ENABLED", "variants": {"low": 0.25, "high": 0.75}, "defaultVariant": "low"}),
        )
        .await;
    assert_eq!(status, 201);

    let ctx = json!({"targetingKey": "u1"});
    let one = c
        .evaluation
        .evaluate(pb::EvaluateRequest {
            namespace: "shop".into(),
            flag_key: "checkout".into(),
            context: Some(to_struct(&ctx)),
        })
        .await
        .expect("evaluate")
        .into_inner();
    let r = one.resolution.expect("resolution");
    assert_eq!(
        (
            from_value(r.value.as_ref()),
            r.variant.as_deref(),
            r.reason.as_str()
        ),
        (Some(json!(true)), Some("on"), "TARGETING_MATCH"),
        "the namespace's static context applies"
    );
    let (_, rest) = s
        .post(
            "/api/v1/namespaces/shop/evaluate",
            &json!({"flagKey": "checkout", "context": ctx}),
        )
        .await;
    assert_eq!(
        (
            rest["value"].clone(),
            rest["variant"].clone(),
            rest["reason"].clone(),
            rest["revision"].clone()
        ),
        (
            json!(true),
            json!("on"),
            json!("TARGETING_MATCH"),
            json!(one.revision)
        )
    );

    let missing = c
        .evaluation
        .evaluate(pb::EvaluateRequest {
            namespace: "shop".into(),
            flag_key: "nope".into(),
            context: None,
        })
        .await
        .expect("a missing flag is a resolution, as in REST")
        .into_inner()
        .resolution
        .expect("resolution");
    assert_eq!(
        (missing.reason.as_str(), missing.error_code.as_deref()),
        ("ERROR", Some("FLAG_NOT_FOUND"))
    );
    assert!(missing.value.is_none());

    let all = c
        .evaluation
        .evaluate_all(pb::EvaluateAllRequest {
            namespace: "shop".into(),
            context: None,
        })
        .await
        .expect("evaluate all")
        .into_inner();
    let got: Vec<_> = all
        .flags
        .iter()
        .map(|r| (r.flag_key.clone(), from_value(r.value.as_ref())))
        .collect();
    assert_eq!(
        got,
        [
            ("checkout".to_owned(), Some(json!(true))),
            ("ratio".to_owned(), Some(json!(0.25)))
        ]
    );

    let explained = c
        .evaluation
        .explain(pb::EvaluateRequest {
            namespace: "shop".into(),
            flag_key: "checkout".into(),
            context: Some(to_struct(&ctx)),
        })
        .await
        .expect("explain")
        .into_inner();
    assert!(explained.rule.is_some(), "the rule as evaluated");
    assert!(!explained.decision.is_empty());
    let seen = from_struct(explained.context.as_ref());
    assert_eq!(
        (seen["tier"].clone(), seen["targetingKey"].clone()),
        (json!("gold"), json!("u1"))
    );
    let (_, rest) = s
        .post(
            "/api/v1/namespaces/shop/evaluate",
            &json!({"flagKey": "checkout", "context": ctx, "explain": true}),
        )
        .await;
    assert_eq!(rest["explanation"]["decision"], json!(explained.decision));

    let unknown = c
        .evaluation
        .evaluate_all(pb::EvaluateAllRequest {
            namespace: "nope".into(),
            context: None,
        })
        .await
        .expect_err("unknown namespace");
    assert_eq!(unknown.code(), Code::NotFound);
}

// ----------------------------------------------------------------------------- watch

async fn next_event(
    stream: &mut tonic::Streaming<pb::WatchEvent>,
    within: Duration,
) -> pb::WatchEvent {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("an event in time")
        .expect("a healthy stream")
        .expect("the stream is still open")
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_a_change_made_over_rest_within_a_second() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("watched"))
        .await;
    s.post(
        "/api/v1/namespaces/default/segments",
        &json!({"key": "seg", "rule": {"==": [1, 1]}}),
    )
    .await;
    let mut stream = c
        .watch
        .watch(pb::WatchRequest {
            namespace: "default".into(),
            from_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let first = next_event(&mut stream, Duration::from_secs(5)).await;
    let second = next_event(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(
        [
            (first.kind.as_str(), first.key.as_str(), first.snapshot),
            (second.kind.as_str(), second.key.as_str(), second.snapshot)
        ],
        [("flag", "watched", true), ("segment", "seg", true)]
    );
    assert_eq!(first.revision, second.revision, "one snapshot revision");
    let after = from_value(first.after.as_ref()).expect("after");
    assert_eq!(after["state"], "ENABLED");

    let (status, _) = s
        .post(
            "/api/v1/namespaces/default/flags/watched/disable",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let change = next_event(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(
        (
            change.kind.as_str(),
            change.key.as_str(),
            change.snapshot,
            change.deleted
        ),
        ("flag", "watched", false, false)
    );
    assert!(change.revision > first.revision);
    let after = from_value(change.after.as_ref()).expect("after");
    assert_eq!(after["state"], "DISABLED");

    let (status, _) = s.delete("/api/v1/namespaces/default/flags/watched").await;
    assert_eq!(status, 204);
    let deleted = next_event(&mut stream, Duration::from_secs(1)).await;
    assert!(deleted.deleted && deleted.after.is_none(), "{deleted:?}");
    assert!(deleted.revision > change.revision);
}

#[tokio::test]
async fn watch_from_a_revision_replays_only_what_came_after_it_in_order() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("a"))
        .await;
    let mut live = c
        .watch
        .watch(pb::WatchRequest {
            namespace: "default".into(),
            from_revision: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let snap = next_event(&mut live, Duration::from_secs(5)).await;
    assert_eq!((snap.key.as_str(), snap.snapshot), ("a", true));

    // Changes in another namespace are not this watch's business.
    s.post("/api/v1/namespaces", &json!({"key": "other"})).await;
    s.post("/api/v1/namespaces/other/flags", &bool_flag("x"))
        .await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("b"))
        .await;
    s.post("/api/v1/namespaces/default/flags/a/disable", &json!({}))
        .await;

    let mut replay = c
        .watch
        .watch(pb::WatchRequest {
            namespace: "default".into(),
            from_revision: snap.revision,
        })
        .await
        .expect("watch from a revision")
        .into_inner();
    for stream in [&mut live, &mut replay] {
        let mut got = Vec::new();
        for _ in 0..2 {
            let e = next_event(stream, Duration::from_secs(5)).await;
            assert!(!e.snapshot && e.namespace == "default", "{e:?}");
            got.push((e.key.clone(), e.revision));
        }
        let keys: Vec<_> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"], "{got:?}");
        assert!(
            snap.revision < got[0].1 && got[0].1 < got[1].1,
            "in revision order: {got:?}"
        );
    }

    let unknown = c
        .watch
        .watch(pb::WatchRequest {
            namespace: "nope".into(),
            from_revision: 0,
        })
        .await
        .expect_err("unknown namespace");
    assert_eq!(unknown.code(), Code::NotFound);
}

// ----------------------------------------------------------------------------- errors

#[tokio::test]
async fn an_unknown_field_or_an_invalid_flag_over_grpc_is_invalid_argument_naming_the_field() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    c.flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&bool_flag("f"))),
            allow_invalid_targeting: false,
        })
        .await
        .expect("create");

    let unknown = c
        .flags
        .patch_flag(pb::PatchFlagRequest {
            namespace: "default".into(),
            key: "f".into(),
            patch: Some(to_struct(&json!({"colour": "red"}))),
            expected_version: None,
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("unknown field");
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(
        unknown.message().contains("colour: unknown field"),
        "{}",
        unknown.message()
    );

    let mut bad = bool_flag("g");
    bad["defaultVariant"] = json!("maybe");
    let invalid = c
        .flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&bad)),
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("invalid default variant");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(
        invalid.message().contains("defaultVariant:"),
        "{}",
        invalid.message()
    );

    let no_state = c
        .flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(pb::Flag {
                state: pb::FlagState::Unspecified.into(),
                ..flag_message(&bool_flag("h"))
            }),
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("state is required");
    assert_eq!(no_state.code(), Code::InvalidArgument);
    assert!(
        no_state.message().contains("state: is required"),
        "{}",
        no_state.message()
    );

    let mut typo = bool_flag("i");
    typo["targeting"] = json!({"iff": [true, "on", "off"]});
    let rule = c
        .flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&typo)),
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("unknown operator");
    assert_eq!(rule.code(), Code::InvalidArgument);
    assert!(rule.message().contains("targeting"), "{}", rule.message());

    let no_flag = c
        .flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: None,
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("no flag");
    assert_eq!(no_flag.code(), Code::InvalidArgument);
    assert!(
        no_flag.message().contains("flag: is required"),
        "{}",
        no_flag.message()
    );

    let bad_segment = c
        .segments
        .create_segment(pb::CreateSegmentRequest {
            namespace: "default".into(),
            segment: Some(segment_message(&json!({"key": "s"}))),
        })
        .await
        .expect_err("no rule");
    assert_eq!(bad_segment.code(), Code::InvalidArgument);
    assert!(
        bad_segment.message().contains("rule: is required"),
        "{}",
        bad_segment.message()
    );

    let bad_ns = c
        .namespaces
        .create_namespace(pb::CreateNamespaceRequest {
            namespace: Some(namespace_message(&json!({"key": "Bad Key"}))),
        })
        .await
        .expect_err("bad key");
    assert_eq!(bad_ns.code(), Code::InvalidArgument);
    assert!(bad_ns.message().contains("key:"), "{}", bad_ns.message());

    let (_, f) = s.get("/api/v1/namespaces/default/flags/f").await;
    assert_eq!(f["version"], 1, "nothing invalid was applied");
}

#[tokio::test]
async fn a_stale_expected_version_over_grpc_is_failed_precondition_and_changes_nothing() {
    let s = Server::start().await;
    let mut c = clients(&s).await;
    c.flags
        .create_flag(pb::CreateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&bool_flag("f"))),
            allow_invalid_targeting: false,
        })
        .await
        .expect("create");
    s.post("/api/v1/namespaces/default/flags/f/disable", &json!({}))
        .await;

    let stale = c
        .flags
        .update_flag(pb::UpdateFlagRequest {
            namespace: "default".into(),
            flag: Some(flag_message(&bool_flag("f"))),
            expected_version: Some(1),
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("stale update");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains("version 2, not 1"),
        "{}",
        stale.message()
    );

    // A version carried in the flag itself is a condition too, as REST's body `version`.
    let carried = c
        .flags
        .update_flag(pb::UpdateFlagRequest {
            namespace: "default".into(),
            flag: Some(pb::Flag {
                version: 1,
                ..flag_message(&bool_flag("f"))
            }),
            expected_version: None,
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("stale version in the flag");
    assert_eq!(carried.code(), Code::FailedPrecondition);

    let patch = c
        .flags
        .patch_flag(pb::PatchFlagRequest {
            namespace: "default".into(),
            key: "f".into(),
            patch: Some(to_struct(&json!({"description": "x"}))),
            expected_version: Some(1),
            allow_invalid_targeting: false,
        })
        .await
        .expect_err("stale patch");
    assert_eq!(patch.code(), Code::FailedPrecondition);
    let delete = c
        .flags
        .delete_flag(pb::DeleteFlagRequest {
            namespace: "default".into(),
            key: "f".into(),
            expected_version: Some(1),
        })
        .await
        .expect_err("stale delete");
    assert_eq!(delete.code(), Code::FailedPrecondition);

    let (_, f) = s.get("/api/v1/namespaces/default/flags/f").await;
    assert_eq!(
        (f["version"].clone(), f["state"].clone()),
        (json!(2), json!("DISABLED"))
    );
}

// ----------------------------------------------------------------------------- parity

/// One admin operation, as either transport performs it.
#[derive(Debug, Clone)]
enum Op {
    CreateNamespace(Value),
    UpdateNamespace(Value, u64),
    CreateSegment(&'static str, Value),
    UpdateSegment(&'static str, Value, Option<u64>),
    CreateFlag(&'static str, Value),
    UpdateFlag(&'static str, Value, Option<u64>),
    PatchFlag(&'static str, &'static str, Value, Option<u64>),
    Disable(&'static str, &'static str),
    Enable(&'static str, &'static str),
    Import(&'static str, String),
    DeleteFlag(&'static str, &'static str, Option<u64>),
}

/// What an operation left: the resource it returned (times removed), or the kind of failure.
type Outcome = Result<Value, &'static str>;

fn if_match(req: reqwest::RequestBuilder, expected: Option<u64>) -> reqwest::RequestBuilder {
    match expected {
        Some(v) => req.header("if-match", format!("\"{v}\"")),
        None => req,
    }
}

fn rest_failure(status: u16) -> &'static str {
    match status {
        400 => "invalid",
        404 => "not found",
        409 => "conflict",
        412 => "stale",
        _ => "other",
    }
}

fn grpc_failure(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "invalid",
        Code::NotFound => "not found",
        Code::AlreadyExists => "conflict",
        Code::FailedPrecondition => "stale",
        _ => "other",
    }
}

async fn over_rest(s: &Server, op: &Op) -> Outcome {
    let url = |p: String| s.url(&p);
    let req = match op {
        Op::CreateNamespace(body) => s.http.post(url("/api/v1/namespaces".into())).json(body),
        Op::UpdateNamespace(body, v) => if_match(
            s.http
                .put(url(format!("/api/v1/namespaces/{}", str_of(body, "key"))))
                .json(body),
            Some(*v),
        ),
        Op::CreateSegment(ns, body) => s
            .http
            .post(url(format!("/api/v1/namespaces/{ns}/segments")))
            .json(body),
        Op::UpdateSegment(ns, body, v) => if_match(
            s.http
                .put(url(format!(
                    "/api/v1/namespaces/{ns}/segments/{}",
                    str_of(body, "key")
                )))
                .json(body),
            *v,
        ),
        Op::CreateFlag(ns, body) => s
            .http
            .post(url(format!("/api/v1/namespaces/{ns}/flags")))
            .json(body),
        Op::UpdateFlag(ns, body, v) => if_match(
            s.http
                .put(url(format!(
                    "/api/v1/namespaces/{ns}/flags/{}",
                    str_of(body, "key")
                )))
                .json(body),
            *v,
        ),
        Op::PatchFlag(ns, key, patch, v) => if_match(
            s.http
                .patch(url(format!("/api/v1/namespaces/{ns}/flags/{key}")))
                .header("content-type", "application/merge-patch+json")
                .body(patch.to_string()),
            *v,
        ),
        Op::Disable(ns, key) => s
            .http
            .post(url(format!("/api/v1/namespaces/{ns}/flags/{key}/disable"))),
        Op::Enable(ns, key) => s
            .http
            .post(url(format!("/api/v1/namespaces/{ns}/flags/{key}/enable"))),
        Op::Import(ns, doc) => s
            .http
            .post(url(format!("/api/v1/namespaces/{ns}/import")))
            .header("content-type", "application/json")
            .body(doc.clone()),
        Op::DeleteFlag(ns, key, v) => if_match(
            s.http
                .delete(url(format!("/api/v1/namespaces/{ns}/flags/{key}"))),
            *v,
        ),
    };
    let (status, mut body) = send(req).await;
    if (200..300).contains(&status) {
        strip(&mut body, TIMES);
        Ok(body)
    } else {
        Err(rest_failure(status))
    }
}

async fn over_grpc(c: &mut Clients, op: &Op) -> Outcome {
    let result: Result<Value, tonic::Status> = match op.clone() {
        Op::CreateNamespace(body) => c
            .namespaces
            .create_namespace(pb::CreateNamespaceRequest {
                namespace: Some(namespace_message(&body)),
            })
            .await
            .map(|r| namespace_json(r.get_ref())),
        Op::UpdateNamespace(body, v) => c
            .namespaces
            .update_namespace(pb::UpdateNamespaceRequest {
                namespace: Some(namespace_message(&body)),
                expected_version: Some(v),
            })
            .await
            .map(|r| namespace_json(r.get_ref())),
        Op::CreateSegment(ns, body) => c
            .segments
            .create_segment(pb::CreateSegmentRequest {
                namespace: ns.into(),
                segment: Some(segment_message(&body)),
            })
            .await
            .map(|r| segment_json(r.get_ref())),
        Op::UpdateSegment(ns, body, v) => c
            .segments
            .update_segment(pb::UpdateSegmentRequest {
                namespace: ns.into(),
                segment: Some(segment_message(&body)),
                expected_version: v,
            })
            .await
            .map(|r| segment_json(r.get_ref())),
        Op::CreateFlag(ns, body) => c
            .flags
            .create_flag(pb::CreateFlagRequest {
                namespace: ns.into(),
                flag: Some(flag_message(&body)),
                allow_invalid_targeting: false,
            })
            .await
            .map(|r| flag_json(r.get_ref())),
        Op::UpdateFlag(ns, body, v) => c
            .flags
            .update_flag(pb::UpdateFlagRequest {
                namespace: ns.into(),
                flag: Some(flag_message(&body)),
                expected_version: v,
                allow_invalid_targeting: false,
            })
            .await
            .map(|r| flag_json(r.get_ref())),
        Op::PatchFlag(ns, key, patch, v) => c
            .flags
            .patch_flag(pb::PatchFlagRequest {
                namespace: ns.into(),
                key: key.into(),
                patch: Some(to_struct(&patch)),
                expected_version: v,
                allow_invalid_targeting: false,
            })
            .await
            .map(|r| flag_json(r.get_ref())),
        Op::Disable(ns, key) => c
            .flags
            .disable_flag(pb::SetFlagStateRequest {
                namespace: ns.into(),
                key: key.into(),
            })
            .await
            .map(|r| flag_json(r.get_ref())),
        Op::Enable(ns, key) => c
            .flags
            .enable_flag(pb::SetFlagStateRequest {
                namespace: ns.into(),
                key: key.into(),
            })
            .await
            .map(|r| flag_json(r.get_ref())),
        Op::Import(ns, doc) => c
            .import_export
            .import(pb::ImportRequest {
                namespace: ns.into(),
                document: doc,
                ..Default::default()
            })
            .await
            .map(|r| import_json(r.get_ref())),
        Op::DeleteFlag(ns, key, v) => c
            .flags
            .delete_flag(pb::DeleteFlagRequest {
                namespace: ns.into(),
                key: key.into(),
                expected_version: v,
            })
            .await
            .map(|_| Value::Null),
    };
    match result {
        Ok(mut v) => {
            strip(&mut v, TIMES);
            Ok(v)
        }
        Err(s) => Err(grpc_failure(s.code())),
    }
}

fn parity_operations() -> Vec<Op> {
    let ns = "parity";
    let checkout = json!({
        "key": "checkout", "name": "Checkout", "description": "new checkout flow",
        "tags": ["payments", "web"], "state": "ENABLED",
        "variants": {"on": true, "off": false}, "defaultVariant": "off",
        "targeting": {"if": [{"$ref": "beta-users"}, "on", null]},
        "metadata": {"owner": "payments", "ticket": 42}
    });
    let limits = json!({
        "key": "limits", "state": "ENABLED",
        "variants": {"small": {"max": 10, "ratio": 0.25}, "large": {"max": 1000, "ratio": 1.5}},
        "defaultVariant": "small",
        "targeting": {"fractional": [{"var": "targetingKey"}, ["small", 50], ["large", 50]]}
    });
    let banner = json!({
        "key": "banner", "name": "Banner", "state": "DISABLED",
        "variants": {"a": "Hello", "b": "Hi"}, "defaultVariant": "a"
    });
    let mut checkout_v2 = checkout.clone();
    checkout_v2["name"] = json!("Checkout v2");
    checkout_v2["targeting"] = json!({"if": [{"and": [{"$ref": "beta-users"}, {"==": [{"var": "region"}, "eu"]}]}, "on", "off"]});
    let import = json!({
        "flags": {
            "imported": {"state": "ENABLED", "variants": {"x": 1, "y": 2}, "defaultVariant": "x"},
            "banner": {"state": "ENABLED", "variants": {"a": "Hello", "b": "Hi"}, "defaultVariant": "b"}
        },
        "$evaluators": {"internal": {"ends_with": [{"var": "email"}, "@corp.example"]}}
    })
    .to_string();
    vec![
        Op::CreateNamespace(json!({
            "key": ns, "name": "Parity", "description": "REST and gRPC",
            "evaluationContext": {"region": "eu", "weight": 2, "beta": true}
        })),
        Op::CreateSegment(
            ns,
            json!({"key": "beta-users", "description": "beta testers", "rule": {"in": [{"var": "email"}, ["a@example.com", "b@example.com"]]}}),
        ),
        Op::CreateFlag(ns, checkout),
        Op::CreateFlag(ns, limits),
        Op::CreateFlag(ns, banner),
        Op::UpdateNamespace(
            json!({"key": ns, "name": "Parity", "description": "updated", "evaluationContext": {"region": "eu"}}),
            1,
        ),
        Op::UpdateSegment(
            ns,
            json!({"key": "beta-users", "description": "beta testers", "rule": {"in": [{"var": "email"}, ["a@example.com"]]}}),
            Some(1),
        ),
        Op::UpdateFlag(ns, checkout_v2, Some(1)),
        Op::PatchFlag(
            ns,
            "limits",
            json!({"description": "patched", "tags": ["ops"], "metadata": {"owner": "sre"}}),
            Some(1),
        ),
        Op::Disable(ns, "checkout"),
        Op::Enable(ns, "checkout"),
        Op::Enable(ns, "checkout"),
        Op::Import(ns, import),
        Op::DeleteFlag(ns, "limits", Some(2)),
        // Fails: banner is at version 2 after the import.
        Op::UpdateFlag(
            ns,
            json!({"key": "banner", "state": "ENABLED", "variants": {"a": "stale"}, "defaultVariant": "a"}),
            Some(1),
        ),
        // Fails: the key is taken.
        Op::CreateSegment(ns, json!({"key": "internal", "rule": {"==": [1, 1]}})),
    ]
}

/// Everything observable over REST after the operations, with what legitimately differs
/// between two servers (times, ids, hashes, request ids, addresses) removed.
async fn observe(s: &Server) -> Value {
    let ns = "parity";
    let export = s
        .http
        .get(s.url(&format!("/api/v1/namespaces/{ns}/export")))
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("export text");
    let yaml = s
        .http
        .get(s.url(&format!("/api/v1/namespaces/{ns}/export?format=yaml")))
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("export text");
    let (status, list) = s.get(&format!("/api/v1/namespaces/{ns}/flags")).await;
    assert_eq!(status, 200);
    let mut flags = Vec::new();
    for f in list["items"].as_array().cloned().unwrap_or_default() {
        let (status, mut one) = s
            .get(&format!(
                "/api/v1/namespaces/{ns}/flags/{}",
                str_of(&f, "key")
            ))
            .await;
        assert_eq!(status, 200);
        strip(&mut one, TIMES);
        flags.push(one);
    }
    let (_, mut segments) = s.get(&format!("/api/v1/namespaces/{ns}/segments")).await;
    for seg in segments["items"].as_array_mut().into_iter().flatten() {
        strip(seg, TIMES);
    }
    let (_, mut namespaces) = s.get("/api/v1/namespaces").await;
    for n in namespaces["items"].as_array_mut().into_iter().flatten() {
        strip(n, TIMES);
    }
    let (status, mut audit) = s.get("/api/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{audit}");
    // The admin bootstrap binding carries a random id on each server; its key is that id.
    for e in audit["items"].as_array_mut().into_iter().flatten() {
        if e["kind"] == "binding" {
            strip(e, &["key"]);
            if let Some(after) = e.get_mut("after") {
                strip(after, &["id"]);
            }
        }
    }
    for e in audit["items"].as_array_mut().into_iter().flatten() {
        strip(
            e,
            &["id", "at", "hash", "prevHash", "requestId", "sourceIp"],
        );
        // The resource states recorded carry their own wall-clock times.
        for side in ["before", "after"] {
            if let Some(inner) = e.get_mut(side) {
                strip(inner, TIMES);
            }
        }
    }
    json!({
        "export": serde_json::from_str::<Value>(&export).unwrap_or(Value::String(export)),
        "exportYaml": yaml,
        "flags": flags,
        "segments": segments,
        "namespaces": namespaces,
        "audit": audit,
    })
}

#[tokio::test]
async fn the_same_operations_over_rest_and_grpc_leave_identical_state_and_audit() {
    let rest_server = Server::start().await;
    let grpc_server = Server::start().await;
    let mut c = clients(&grpc_server).await;

    let mut rest_outcomes = Vec::new();
    for op in parity_operations() {
        let r = over_rest(&rest_server, &op).await;
        let g = over_grpc(&mut c, &op).await;
        assert_eq!(r, g, "{op:?} answered differently over REST and gRPC");
        rest_outcomes.push(r);
    }
    let failures: Vec<_> = rest_outcomes
        .iter()
        .filter_map(|o| o.as_ref().err().copied())
        .collect();
    assert_eq!(
        failures,
        ["stale", "conflict"],
        "exactly the stale update and the duplicate segment fail"
    );

    let rest = observe(&rest_server).await;
    let grpc = observe(&grpc_server).await;
    for part in [
        "export",
        "exportYaml",
        "flags",
        "segments",
        "namespaces",
        "audit",
    ] {
        assert_eq!(
            rest[part], grpc[part],
            "{part} differs between the REST-driven and the gRPC-driven server"
        );
    }

    // The comparison covered real content, not two empty lists.
    let flags: Vec<_> = rest["flags"]
        .as_array()
        .map(|a| a.iter().map(|f| str_of(f, "key")).collect())
        .unwrap_or_default();
    assert_eq!(flags, ["banner", "checkout", "imported"]);
    assert_eq!(
        rest["flags"][1]["version"], 4,
        "checkout: create, update, disable, enable"
    );
    let actions: Vec<_> = rest["audit"]["items"]
        .as_array()
        .map(|a| a.iter().map(|e| str_of(e, "action")).collect())
        .unwrap_or_default();
    assert_eq!(
        actions,
        [
            "namespace.create", // default, by the server at start-up
            "user.create",      // the admin user, at first start
            "binding.create",   // admin in `*`
            "namespace.create",
            "segment.create",
            "flag.create",
            "flag.create",
            "flag.create",
            "namespace.update",
            "segment.update",
            "flag.update",
            "flag.update",
            "flag.disable",
            "flag.enable",
            "segment.import",
            "flag.import",
            "flag.import",
            "flag.delete",
        ]
    );
    let actors: Vec<_> = rest["audit"]["items"]
        .as_array()
        .map(|a| a.iter().map(|e| e["actor"].clone()).collect())
        .unwrap_or_default();
    // Both transports record the signed-in user (each server's own `admin` session).
    assert_eq!(actors[3], json!({"kind": "user", "id": "admin"}));
    assert_eq!(
        rest["namespaces"]["items"][1]["evaluationContext"],
        json!({"region": "eu"})
    );
}

#[tokio::test]
async fn the_audit_log_over_grpc_is_the_one_rest_serves() {
    let s = Server::start().await;
    s.post(
        "/api/v1/namespaces/default/flags",
        &crate::fixtures::bool_flag("audited"),
    )
    .await;
    s.post(
        "/api/v1/namespaces/default/flags/audited/disable",
        &json!({}),
    )
    .await;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(s.grpc_channel().await);
    let events = audit
        .list_audit(pb::ListAuditRequest {
            namespace: "default".into(),
            kind: "flag".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    let (_, rest) = s.get("/api/v1/audit?namespace=default&kind=flag").await;
    let rest = rest["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), 2);
    assert_eq!(events.len(), rest.len());
    for (g, r) in events.iter().zip(&rest) {
        assert_eq!(g.id, r["id"].as_str().unwrap_or_default());
        assert_eq!(g.hash, r["hash"].as_str().unwrap_or_default());
        assert_eq!(g.action, r["action"].as_str().unwrap_or_default());
        assert_eq!(from_value(g.after.as_ref()), r.get("after").cloned());
    }
    let bad = audit
        .list_audit(pb::ListAuditRequest {
            kind: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid kind");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}
