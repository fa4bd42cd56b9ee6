//! Dynamic configuration end to end: CRUD with versions and rollback, JSON Schema checks that
//! refuse bad values and change nothing, optimistic concurrency, the WebSocket stream (only to
//! watchers who may read configs), and the gRPC twin.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use vexil_proto::vexil::v1 as pb;

use crate::fixtures::{Server, bool_flag, next_json_within, send, ws_connect};

const LIMITS: &str = "/api/v1/namespaces/default/configs/checkout.limits";

fn limits_schema() -> Value {
    json!({
        "type": "object",
        "required": ["maxItems"],
        "properties": {
            "maxItems": {"type": "integer", "minimum": 1},
            "currencies": {"type": "array", "items": {"type": "string", "minLength": 3, "maxLength": 3}}
        },
        "additionalProperties": false
    })
}

async fn put(
    s: &Server,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut req = s.http.put(s.url(path)).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("PUT");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body, etag)
}

fn fields(problem: &Value) -> Vec<String> {
    let mut f: Vec<String> = problem["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    f.sort();
    f
}

#[tokio::test]
async fn a_config_entry_is_created_updated_listed_versioned_and_rolled_back() {
    let s = Server::start().await;
    let v1 = json!({"value": {"maxItems": 50, "currencies": ["EUR"]}, "schema": limits_schema(), "description": "cart limits"});
    let (status, created, etag) = put(&s, LIMITS, &v1, &[]).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(etag.as_deref(), Some("\"1\""));
    assert_eq!(created["version"], 1);
    assert_eq!(created["createdBy"], "admin");
    assert_eq!(created["schema"], limits_schema());

    // Only the value: the schema and description stay.
    let (status, updated, etag) = put(&s, LIMITS, &json!({"value": {"maxItems": 80}}), &[]).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(
        updated["schema"],
        limits_schema(),
        "an absent schema is kept"
    );
    assert_eq!(updated["description"], "cart limits");
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let (status, got) = s.get(LIMITS).await;
    assert_eq!(status, 200);
    assert_eq!(got["value"], json!({"maxItems": 80}));
    let (_, list) = s.get("/api/v1/namespaces/default/configs").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let (status, rolled) = s
        .post(&format!("{LIMITS}/rollback"), &json!({"version": 1}))
        .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["version"], 3, "a rollback is a new version");
    assert_eq!(rolled["value"], v1["value"]);

    let (status, versions) = s.get(&format!("{LIMITS}/versions")).await;
    assert_eq!(status, 200, "{versions}");
    let values: Vec<&Value> = versions["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| &v["value"])
        .collect();
    assert_eq!(
        values,
        [&v1["value"], &json!({"maxItems": 80}), &v1["value"]]
    );
    let (_, page) = s
        .get(&format!("{LIMITS}/versions?afterVersion=1&limit=1"))
        .await;
    assert_eq!(page["items"][0]["version"], 2);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));

    let (status, body) = s
        .post(&format!("{LIMITS}/rollback"), &json!({"version": 9}))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s
        .post(&format!("{LIMITS}/rollback"), &json!({"version": "1"}))
        .await;
    assert_eq!(status, 400, "{body}");

    let (_, audit) = s
        .get("/api/v1/audit?namespace=default&kind=config&key=checkout.limits")
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["config.create", "config.update", "config.rollback"]
    );
}

#[tokio::test]
async fn a_value_that_breaks_the_schema_is_refused_with_its_paths_and_changes_nothing() {
    let s = Server::start().await;
    let body = json!({"value": {"maxItems": 5}, "schema": limits_schema()});
    let (status, _, _) = put(&s, LIMITS, &body, &[]).await;
    assert_eq!(status, 201);

    let bad = json!({"value": {"maxItems": 0, "currencies": ["EUR", "DOLLAR"], "extra": 1}});
    let (status, problem, _) = put(&s, LIMITS, &bad, &[]).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        fields(&problem),
        ["value", "value/currencies/1", "value/maxItems"],
        "{problem}"
    );
    for invalid in [
        json!({"value": 1, "schema": {"type": "nonsense"}}),
        json!({"schema": limits_schema()}),
        json!({"value": {"maxItems": 1}, "colour": "red"}),
        json!({"value": {"maxItems": 1}, "key": "another.key"}),
        json!({"value": {"maxItems": 1}, "schema": "strict"}),
        json!([1, 2]),
    ] {
        let (status, problem, _) = put(&s, LIMITS, &invalid, &[]).await;
        assert_eq!(status, 400, "{invalid} → {problem}");
    }
    let (status, problem, _) = put(
        &s,
        "/api/v1/namespaces/default/configs/bad%20key",
        &json!({"value": 1}),
        &[],
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    let (status, problem, _) = put(
        &s,
        "/api/v1/namespaces/nowhere/configs/k",
        &json!({"value": 1}),
        &[],
    )
    .await;
    assert_eq!(status, 404, "{problem}");

    let (_, got) = s.get(LIMITS).await;
    assert_eq!(got["version"], 1, "nothing was written");
    assert_eq!(got["value"], json!({"maxItems": 5}));
    let (_, versions) = s.get(&format!("{LIMITS}/versions")).await;
    assert_eq!(versions["items"].as_array().map(Vec::len), Some(1));
    let (_, audit) = s.get("/api/v1/audit?kind=config").await;
    assert_eq!(audit["items"].as_array().map(Vec::len), Some(1), "{audit}");

    // Removing the schema lifts the constraint.
    let (status, freed, _) = put(
        &s,
        LIMITS,
        &json!({"value": "anything", "schema": null}),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{freed}");
    assert!(freed.get("schema").is_none(), "{freed}");
}

#[tokio::test]
async fn stale_conditions_on_a_config_are_refused_and_a_deleted_entry_starts_again_at_one() {
    let s = Server::start().await;
    let (status, _, _) = put(&s, LIMITS, &json!({"value": 1}), &[("if-none-match", "*")]).await;
    assert_eq!(status, 201);
    let (status, _, _) = put(&s, LIMITS, &json!({"value": 2}), &[("if-match", "\"1\"")]).await;
    assert_eq!(status, 200);
    let (status, problem, _) =
        put(&s, LIMITS, &json!({"value": 3}), &[("if-match", "\"1\"")]).await;
    assert_eq!(status, 412, "{problem}");
    let (status, problem, _) =
        put(&s, LIMITS, &json!({"value": 3}), &[("if-none-match", "*")]).await;
    assert_eq!(status, 409, "{problem}");
    let (status, problem, _) = put(&s, LIMITS, &json!({"value": 3, "version": 1}), &[]).await;
    assert_eq!(
        status, 412,
        "the body's version is a condition too: {problem}"
    );
    let (_, got) = s.get(LIMITS).await;
    assert_eq!(
        (got["version"].clone(), got["value"].clone()),
        (json!(2), json!(2))
    );

    let (status, _) = send(s.http.delete(s.url(LIMITS)).header("if-match", "\"1\"")).await;
    assert_eq!(status, 412);
    // A namespace holding a config cannot be deleted.
    let (status, _) = s
        .post("/api/v1/namespaces", &json!({"key": "scratch"}))
        .await;
    assert_eq!(status, 201);
    let (status, _, _) = put(
        &s,
        "/api/v1/namespaces/scratch/configs/k",
        &json!({"value": 1}),
        &[],
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = s.delete("/api/v1/namespaces/scratch").await;
    assert_eq!(status, 409, "{body}");

    let (status, _) = s.delete(LIMITS).await;
    assert_eq!(status, 204);
    let (status, _) = s.get(LIMITS).await;
    assert_eq!(status, 404);
    let (status, _) = s.get(&format!("{LIMITS}/versions")).await;
    assert_eq!(status, 404);
    let (status, again, _) = put(&s, LIMITS, &json!({"value": 9}), &[]).await;
    assert_eq!(status, 201);
    assert_eq!(again["version"], 1);
    let (_, versions) = s.get(&format!("{LIMITS}/versions")).await;
    assert_eq!(
        versions["items"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );
}

#[tokio::test]
async fn config_changes_reach_websocket_watchers_who_may_read_configs_and_no_one_else() {
    let s = Server::start().await;
    let (status, _, _) = put(&s, LIMITS, &json!({"value": 1}), &[]).await;
    assert_eq!(status, 201);
    let (status, body) = s
        .post(
            "/api/v1/roles",
            &json!({"name": "flags-only", "permissions": ["flag:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let flags_only = s.api_token("flags-only", "default").await;

    let mut admin = ws_connect(&s, "/api/v1/namespaces/default/watch").await;
    let snapshot = next_json_within(&mut admin, Duration::from_secs(5)).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        snapshot["configs"][0]["key"], "checkout.limits",
        "{snapshot}"
    );

    let url = format!(
        "{}/api/v1/namespaces/default/watch",
        s.process.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {flags_only}").parse().expect("header"),
    );
    let (mut narrow, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let snapshot = next_json_within(&mut narrow, Duration::from_secs(5)).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert!(snapshot.get("configs").is_none(), "{snapshot}");

    let (status, _, _) = put(&s, LIMITS, &json!({"value": 2}), &[]).await;
    assert_eq!(status, 200);
    let (status, _) = s
        .post(
            "/api/v1/namespaces/default/flags",
            &bool_flag("after-config"),
        )
        .await;
    assert_eq!(status, 201);

    let frame = next_json_within(&mut admin, Duration::from_secs(5)).await;
    assert_eq!(frame["type"], "change", "{frame}");
    assert_eq!(frame["kind"], "config");
    assert_eq!(frame["after"]["value"], 2);
    let frame = next_json_within(&mut admin, Duration::from_secs(5)).await;
    assert_eq!(frame["kind"], "flag");

    let frame = next_json_within(&mut narrow, Duration::from_secs(5)).await;
    assert_eq!(
        (frame["kind"].clone(), frame["key"].clone()),
        (json!("flag"), json!("after-config")),
        "the config change was not sent to a watcher without config:read: {frame}"
    );
}

#[tokio::test]
async fn configs_over_grpc_are_the_configs_rest_serves() {
    let s = Server::start().await;
    let mut configs = pb::config_service_client::ConfigServiceClient::new(s.grpc_channel().await);
    let schema = vexil_server::grpc::convert::from_json(&limits_schema());
    let created = configs
        .put_config(pb::PutConfigRequest {
            key: "checkout.limits".into(),
            value: Some(vexil_server::grpc::convert::from_json(
                &json!({"maxItems": 3}),
            )),
            schema: Some(schema),
            expected_version: Some(0),
            ..Default::default()
        })
        .await
        .expect("PutConfig")
        .into_inner();
    assert!(created.created);
    // The gRPC watch's opening snapshot carries the entry, as the WebSocket's does.
    let mut watch = pb::watch_service_client::WatchServiceClient::new(s.grpc_channel().await)
        .watch(pb::WatchRequest::default())
        .await
        .expect("Watch")
        .into_inner();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("an event in time")
        .expect("a healthy stream")
        .expect("an open stream");
    assert_eq!(
        (event.kind.as_str(), event.key.as_str(), event.snapshot),
        ("config", "checkout.limits", true),
        "the namespace holds no flag or segment, so the entry comes first"
    );
    let (status, rest) = s.get(LIMITS).await;
    assert_eq!(status, 200);
    assert_eq!(rest["value"], json!({"maxItems": 3}));
    assert_eq!(rest["schema"], limits_schema());

    let refused = configs
        .put_config(pb::PutConfigRequest {
            key: "checkout.limits".into(),
            value: Some(vexil_server::grpc::convert::from_json(
                &json!({"maxItems": -1}),
            )),
            ..Default::default()
        })
        .await
        .expect_err("breaks the schema");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("value/maxItems"),
        "{}",
        refused.message()
    );
    let stale = configs
        .put_config(pb::PutConfigRequest {
            key: "checkout.limits".into(),
            value: Some(vexil_server::grpc::convert::from_json(
                &json!({"maxItems": 4}),
            )),
            expected_version: Some(7),
            ..Default::default()
        })
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);

    let (status, _, _) = put(&s, LIMITS, &json!({"value": {"maxItems": 4}}), &[]).await;
    assert_eq!(status, 200);
    let versions = configs
        .list_config_versions(pb::ListConfigVersionsRequest {
            key: "checkout.limits".into(),
            ..Default::default()
        })
        .await
        .expect("versions")
        .into_inner();
    assert_eq!(
        versions
            .configs
            .iter()
            .map(|c| c.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    let rolled = configs
        .rollback_config(pb::RollbackConfigRequest {
            key: "checkout.limits".into(),
            version: 1,
            expected_version: Some(2),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner();
    assert_eq!(rolled.version, 3);
    let (_, rest) = s.get(LIMITS).await;
    assert_eq!(rest["value"], json!({"maxItems": 3}));
    configs
        .delete_config(pb::DeleteConfigRequest {
            key: "checkout.limits".into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    let (status, _) = s.get(LIMITS).await;
    assert_eq!(status, 404);
}
