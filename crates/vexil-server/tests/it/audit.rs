//! The audit service end to end: the NDJSON export, the hash-chain check (against a log edited
//! behind the server's back), a flag's history, and their gRPC twins.

use serde_json::{Value, json};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use vexil_proto::vexil::v1 as pb;

use crate::fixtures::{Server, bool_flag, send};

/// Every event of the log, read through the paged query.
async fn all_events(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = s
            .get(&format!("/api/v1/audit?limit=1000&afterSeq={after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().expect("items").clone();
        let Some(last) = items.last() else {
            return out;
        };
        after = last["seq"].as_u64().expect("seq");
        out.extend(items);
    }
}

/// The export's lines, each parsed, with the response's status and content type.
async fn export(s: &Server, query: &str) -> (u16, String, Vec<Value>) {
    let resp = s
        .http
        .get(s.url(&format!("/api/v1/audit/export{query}")))
        .send()
        .await
        .expect("export request");
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.expect("export body");
    let lines = if status == 200 {
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "every line ends with a newline"
        );
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
            .collect()
    } else {
        Vec::new()
    };
    (status, content_type, lines)
}

async fn verify(s: &Server) -> Value {
    let (status, report) = s.get("/api/v1/audit/verify").await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Runs `sql` on the server's SQLite file while the server runs (WAL mode allows it).
async fn tamper(s: &Server, sql: &str) {
    let mut conn = SqliteConnectOptions::new()
        .filename(s.dir.path().join("vexil.db"))
        .connect()
        .await
        .expect("open the server's SQLite file");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .expect(sql);
    assert_eq!(done.rows_affected(), 1, "{sql}");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn the_export_streams_every_matching_event_as_ndjson_across_pages() {
    let s = Server::start().await;
    // One import of 1,200 flags: 1,200 events in one commit, more than one export page.
    let flags: serde_json::Map<String, Value> = (0..1200)
        .map(|i| {
            (
                format!("f{i:04}"),
                json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}),
            )
        })
        .collect();
    s.import("default", &json!({ "flags": flags })).await;
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("extra"))
        .await;
    assert_eq!(status, 201);

    let everything = all_events(&s).await;
    assert!(everything.len() > 1201, "{} events", everything.len());
    let (status, content_type, lines) = export(&s, "").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(lines, everything, "the export is the log, event for event");

    let (_, _, imported) = export(&s, "?namespace=default&kind=flag").await;
    assert_eq!(imported.len(), 1201);
    assert!(
        imported
            .iter()
            .all(|e| e["kind"] == "flag" && e["namespace"] == "default"),
        "only default's flag events"
    );
    let cut = imported[1000]["seq"].as_u64().expect("seq");
    let (_, _, tail) = export(&s, &format!("?namespace=default&kind=flag&afterSeq={cut}")).await;
    assert_eq!(
        tail,
        imported[1001..].to_vec(),
        "afterSeq resumes after the event"
    );
    let (_, _, one) = export(&s, "?kind=flag&key=extra").await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["action"], "flag.create");

    let (status, _, _) = export(&s, "?kind=gadget").await;
    assert_eq!(status, 400, "an unknown kind is refused");
    let (status, body) = s.get("/api/v1/audit?kind=gadget").await;
    assert_eq!(status, 400);
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("token"),
        "{body}"
    );
    // Every kind the log holds can be filtered on, identity kinds included.
    let (status, users) = s.get("/api/v1/audit?kind=user").await;
    assert_eq!(status, 200, "{users}");
    assert!(
        users["items"].as_array().is_some_and(|a| !a.is_empty()),
        "the bootstrap admin's creation is a user event: {users}"
    );
}

#[tokio::test]
async fn the_chain_verifies_and_an_edited_or_removed_event_is_reported_by_its_seq() {
    let s = Server::start().await;
    for key in ["a", "b", "c"] {
        let (status, _) = s
            .post("/api/v1/namespaces/default/flags", &bool_flag(key))
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags/a/disable", &json!({}))
        .await;
    assert_eq!(status, 200);
    let events = all_events(&s).await;
    let last = events.last().expect("events");

    let report = verify(&s).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["events"], events.len());
    assert_eq!(report["headSeq"], last["seq"]);
    assert_eq!(report["headHash"], last["hash"]);
    assert!(report.get("firstBreak").is_none(), "{report}");

    // Someone with access to the database rewrites what event 3 says.
    let target = events[2]["seq"].as_u64().expect("seq");
    assert_eq!(target, 3);
    tamper(
        &s,
        "UPDATE audit_events SET doc = json_set(doc, '$.action', 'flag.delete') WHERE seq = 3",
    )
    .await;
    let report = verify(&s).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["events"], 2, "events 1 and 2 still follow");
    assert_eq!(report["headSeq"], 2);
    assert_eq!(report["firstBreak"]["seq"], 3, "{report}");
    assert!(
        report["firstBreak"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("hash"),
        "{report}"
    );

    // Put it back: the chain holds again. Then remove event 4 altogether.
    let original = serde_json::to_string(&events[2]).expect("event");
    tamper(
        &s,
        &format!(
            "UPDATE audit_events SET doc = '{}' WHERE seq = 3",
            original.replace('\'', "''")
        ),
    )
    .await;
    assert_eq!(verify(&s).await["valid"], true);
    tamper(&s, "DELETE FROM audit_events WHERE seq = 4").await;
    let report = verify(&s).await;
    assert_eq!(report["valid"], false, "{report}");
    assert_eq!(report["events"], 3);
    assert_eq!(report["firstBreak"]["seq"], 4, "{report}");
    assert!(
        report["firstBreak"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("found 5"),
        "{report}"
    );
}

#[tokio::test]
async fn a_flags_history_is_its_changes_oldest_first_readable_by_a_viewer_after_deletion() {
    let s = Server::start().await;
    let ns = "/api/v1/namespaces/default/flags";
    let (status, _) = s.post(ns, &bool_flag("history")).await;
    assert_eq!(status, 201);
    let (status, _) = s.post(ns, &bool_flag("other")).await;
    assert_eq!(status, 201);
    let mut changed = bool_flag("history");
    changed["defaultVariant"] = json!("on");
    let (status, _) = s
        .put(&format!("{ns}/history"), &changed, Some("\"1\""))
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.post(&format!("{ns}/history/disable"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = s.delete(&format!("{ns}/history")).await;
    assert_eq!(status, 204);

    let viewer = crate::fixtures::client_with_token(&s.api_token("viewer", "default").await);
    let (status, body) = send(viewer.get(s.url(&format!("{ns}/history/history")))).await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    let actions: Vec<&str> = items.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["flag.create", "flag.update", "flag.disable", "flag.delete"]
    );
    assert!(
        items.iter().all(|e| e["key"] == "history"),
        "no other flag's events"
    );
    assert_eq!(items[1]["before"]["defaultVariant"], "off");
    assert_eq!(items[1]["after"]["defaultVariant"], "on");
    assert!(items[3]["after"].is_null(), "deleted");

    let (status, page) = send(viewer.get(s.url(&format!(
        "{ns}/history/history?afterSeq={}&limit=1",
        items[0]["seq"]
    ))))
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["action"], "flag.update");

    let (status, body) = send(viewer.get(s.url(&format!("{ns}/never/history")))).await;
    assert_eq!(
        status, 404,
        "a flag that never existed has no history: {body}"
    );
    // The viewer may read a flag's history but not the audit log itself.
    let (status, _) = send(viewer.get(s.url("/api/v1/audit"))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn export_verify_and_history_answer_over_grpc_as_over_rest() {
    let s = Server::start().await;
    for key in ["g1", "g2"] {
        let (status, _) = s
            .post("/api/v1/namespaces/default/flags", &bool_flag(key))
            .await;
        assert_eq!(status, 201);
    }
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags/g1/disable", &json!({}))
        .await;
    assert_eq!(status, 200);
    let ch = s.grpc_channel().await;
    let mut audit = pb::audit_service_client::AuditServiceClient::new(ch.clone());
    let mut flags = pb::flag_service_client::FlagServiceClient::new(ch);

    let (_, _, rest_lines) = export(&s, "?kind=flag").await;
    let mut stream = audit
        .export_audit(pb::ExportAuditRequest {
            kind: "flag".into(),
            ..Default::default()
        })
        .await
        .expect("ExportAudit")
        .into_inner();
    let mut grpc_events = Vec::new();
    while let Some(e) = stream.message().await.expect("stream item") {
        grpc_events.push(e);
    }
    let ids = |v: &[Value]| {
        v.iter()
            .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        grpc_events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        ids(&rest_lines)
    );
    assert_eq!(grpc_events.len(), 3);

    let rest = verify(&s).await;
    let grpc = audit
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .expect("VerifyAudit")
        .into_inner();
    assert!(grpc.valid);
    assert_eq!(json!(grpc.events), rest["events"]);
    assert_eq!(json!(grpc.head_seq), rest["headSeq"]);
    assert_eq!(json!(grpc.head_hash), rest["headHash"]);

    let history = flags
        .get_flag_history(pb::GetFlagHistoryRequest {
            namespace: "default".into(),
            key: "g1".into(),
            ..Default::default()
        })
        .await
        .expect("GetFlagHistory")
        .into_inner();
    let (_, rest_history) = s.get("/api/v1/namespaces/default/flags/g1/history").await;
    assert_eq!(
        history
            .events
            .iter()
            .map(|e| e.id.clone())
            .collect::<Vec<_>>(),
        ids(rest_history["items"].as_array().expect("items"))
    );
    assert_eq!(history.events.len(), 2);
    let missing = flags
        .get_flag_history(pb::GetFlagHistoryRequest {
            key: "never".into(),
            ..Default::default()
        })
        .await
        .expect_err("no history");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let bad = audit
        .export_audit(pb::ExportAuditRequest {
            kind: "gadget".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}
