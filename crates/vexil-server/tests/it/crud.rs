//! CRUD, persistence, concurrency and shutdown, end to end.

use std::time::Duration;

use serde_json::json;

use crate::fixtures::{Server, bool_flag, send};

#[tokio::test]
async fn a_flag_round_trips_through_create_read_update_evaluate_and_delete() {
    let s = Server::start().await;
    let (status, created) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("checkout"))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);

    let (status, got) = s.get("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(status, 200);
    assert_eq!(got["variants"], json!({"on": true, "off": false}));
    assert_eq!(got["tags"], json!(["checkout"]));

    let ofrep = |ctx: serde_json::Value| {
        let s = &s;
        async move {
            s.post(
                "/ofrep/v1/evaluate/flags/checkout",
                &json!({"context": ctx}),
            )
            .await
        }
    };
    let (status, r) = ofrep(json!({"targetingKey": "u1", "tier": "gold"})).await;
    assert_eq!(
        (status, r["value"].clone(), r["reason"].clone()),
        (200, json!(true), json!("TARGETING_MATCH"))
    );

    let mut changed = bool_flag("checkout");
    changed["defaultVariant"] = json!("on");
    let (status, updated) = s
        .put(
            "/api/v1/namespaces/default/flags/checkout",
            &changed,
            Some("\"1\""),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["version"], 2);
    let (_, r) = ofrep(json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (r["value"].clone(), r["reason"].clone()),
        (json!(true), json!("DEFAULT"))
    );

    let (status, disabled) = s
        .post(
            "/api/v1/namespaces/default/flags/checkout/disable",
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, disabled["state"].clone()),
        (200, json!("DISABLED"))
    );
    let (_, r) = ofrep(json!({})).await;
    assert_eq!(r["reason"], "DISABLED");
    assert!(r.get("value").is_none(), "{r}");

    let (status, _) = s.delete("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(status, 204);
    let (status, _) = s.get("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(status, 404);
    let (status, r) = ofrep(json!({})).await;
    assert_eq!(
        (status, r["errorCode"].clone()),
        (404, json!("FLAG_NOT_FOUND"))
    );

    let (_, audit) = s
        .get("/api/v1/audit?namespace=default&kind=flag&key=checkout")
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["action"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        actions,
        ["flag.create", "flag.update", "flag.disable", "flag.delete"]
    );
}

#[tokio::test]
async fn flags_survive_kill_9_and_restart() {
    let mut s = Server::start().await;
    for i in 0..20 {
        let (status, _) = s
            .post(
                "/api/v1/namespaces/default/flags",
                &bool_flag(&format!("f{i}")),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = s
        .post(
            "/api/v1/namespaces",
            &json!({"key": "prod", "evaluationContext": {"region": "eu"}}),
        )
        .await;
    assert_eq!(status, 201);
    s.process.kill9();
    s.restart();
    let (_, page) = s.get("/api/v1/namespaces/default/flags?limit=100").await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(20));
    let (_, ns) = s.get("/api/v1/namespaces/prod").await;
    assert_eq!(ns["evaluationContext"]["region"], "eu");
    let (status, r) = s
        .post(
            "/ofrep/v1/evaluate/flags/f7",
            &json!({"context": {"tier": "gold"}}),
        )
        .await;
    assert_eq!((status, r["value"].clone()), (200, json!(true)));
}

#[tokio::test]
async fn two_concurrent_puts_with_the_same_if_match_let_exactly_one_win() {
    let s = Server::start().await;
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("race"))
        .await;
    assert_eq!(status, 201);
    let put = |variant: &'static str| {
        let mut body = bool_flag("race");
        body["defaultVariant"] = json!(variant);
        send(
            s.http
                .put(s.url("/api/v1/namespaces/default/flags/race"))
                .header("if-match", "\"1\"")
                .json(&body),
        )
    };
    let ((a, _), (b, _)) = tokio::join!(put("on"), put("off"));
    let mut statuses = [a, b];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412]);
    let (_, audit) = s
        .get("/api/v1/audit?namespace=default&kind=flag&key=race")
        .await;
    let updates = audit["items"]
        .as_array()
        .map(|a| a.iter().filter(|e| e["action"] == "flag.update").count());
    assert_eq!(updates, Some(1));
    let (_, flag) = s.get("/api/v1/namespaces/default/flags/race").await;
    assert_eq!(flag["version"], 2);
}

#[tokio::test]
async fn a_stale_if_match_is_rejected_with_412_and_changes_nothing() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("k"))
        .await;
    let (status, body) = s
        .put(
            "/api/v1/namespaces/default/flags/k",
            &bool_flag("k"),
            Some("\"7\""),
        )
        .await;
    assert_eq!(status, 412);
    assert_eq!(body["type"], "urn:vexil:problem:version-conflict");
    let (_, flag) = s.get("/api/v1/namespaces/default/flags/k").await;
    assert_eq!(flag["version"], 1);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut s = Server::start().await;
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    let exit = s.process.terminate(Duration::from_secs(15));
    assert!(exit.success(), "exit status {exit:?}");
}

#[tokio::test]
async fn readyz_reports_the_applied_revision() {
    let s = Server::start().await;
    let (_, before) = s.get("/readyz").await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("r"))
        .await;
    let (status, after) = s.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(after["status"], "ready");
    assert!(
        after["revision"].as_u64() > before["revision"].as_u64(),
        "{before} {after}"
    );
}

#[tokio::test]
async fn metrics_report_the_applied_revision_the_store_and_staleness() {
    let s = Server::start().await;
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("metered"))
        .await;
    assert_eq!(status, 201);
    let (_, ready) = s.get("/readyz").await;
    let resp = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.expect("body");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(value("vexil_store_up"), 1.0);
    assert!(value("vexil_snapshot_revision") >= ready["revision"].as_f64().expect("revision"));
    assert_eq!(value("vexil_snapshot_lag_revisions"), 0.0);
    assert!(value("vexil_snapshot_staleness_seconds") < 5.0, "{text}");
    assert!(value("vexil_identity_revision") >= 1.0);

    // Without credentials: 401 (the scrape needs a viewer token unless opened by config).
    let anon = crate::fixtures::client()
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anon.status().as_u16(), 401);
    let open = Server::start_with(|o| o.env("VEXIL_METRICS_PUBLIC", "true")).await;
    let anon = crate::fixtures::client()
        .get(open.url("/metrics"))
        .send()
        .await
        .expect("anonymous");
    assert_eq!(anon.status().as_u16(), 200);
}
