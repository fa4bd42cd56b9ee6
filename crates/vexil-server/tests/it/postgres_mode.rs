//! The postgres mode end to end: the real server binary with `DB_URL` pointing at a fresh
//! database (`vexil_testkit::postgres`), driven over HTTP: CRUD and OFREP through one replica,
//! and a second replica on the same database that follows the first one's writes and shares
//! its compare-and-set.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vexil_testkit::postgres::fresh_database;

use crate::fixtures::{Server, bool_flag, send};

/// How soon a replica must serve another replica's write (DESIGN.md §5: replicas follow the
/// store's change feed, here LISTEN/NOTIFY).
const PROPAGATION: Duration = Duration::from_secs(1);

/// A server in the postgres mode on the database at `url`.
async fn replica(url: &str) -> Server {
    Server::start_with(|o| o.env("DB_URL", url).env("JWT_SECRET", SHARED_JWT_SECRET)).await
}

/// Replicas must share the session signing key (it is required with DB_URL).
const SHARED_JWT_SECRET: &str = "replicas-share-this-secret-0123456789abcdef";

async fn ofrep(s: &Server, key: &str, context: Value) -> (u16, Value) {
    s.post(
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        &json!({ "context": context }),
    )
    .await
}

/// Polls `s` (every 20 ms, at most [`PROPAGATION`]) until evaluating `key` satisfies `done`;
/// returns how long that took, or panics with the last answer.
async fn await_evaluation(
    s: &Server,
    key: &str,
    context: &Value,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = ofrep(s, key, context.clone()).await;
        if done(status, &body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "after {PROPAGATION:?} the other replica still answers {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_flag_round_trips_through_crud_and_ofrep_in_the_postgres_mode() {
    let (url, db) = fresh_database().await;
    let s = replica(&url).await;
    assert!(
        s.process
            .logs()
            .iter()
            .any(|l| l.contains("PostgreSQL store connected")),
        "{:#?}",
        s.process.logs()
    );

    let (status, created) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("checkout"))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);
    let (status, got) = s.get("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!((status, got["tags"].clone()), (200, json!(["checkout"])));

    let (status, r) = ofrep(
        &s,
        "checkout",
        json!({"targetingKey": "u1", "tier": "gold"}),
    )
    .await;
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
    assert_eq!(
        (status, updated["version"].clone()),
        (200, json!(2)),
        "{updated}"
    );
    let (status, _) = s
        .put(
            "/api/v1/namespaces/default/flags/checkout",
            &bool_flag("checkout"),
            Some("\"1\""),
        )
        .await;
    assert_eq!(status, 412, "a stale If-Match is refused");
    let (_, r) = ofrep(&s, "checkout", json!({"targetingKey": "u1"})).await;
    assert_eq!(
        (r["value"].clone(), r["reason"].clone()),
        (json!(true), json!("DEFAULT"))
    );

    let (status, _) = s.delete("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(status, 204);
    let (status, _) = s.get("/api/v1/namespaces/default/flags/checkout").await;
    assert_eq!(status, 404);
    let (status, r) = ofrep(&s, "checkout", json!({})).await;
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
    assert_eq!(actions, ["flag.create", "flag.update", "flag.delete"]);
    let (_, history) = s
        .get("/api/v1/namespaces/default/flags/checkout/history")
        .await;
    assert_eq!(
        history["items"], audit["items"],
        "a flag's history is its audit events"
    );
    // Dynamic configuration in PostgreSQL: a schema-checked write, its history, a rollback.
    let path = "/api/v1/namespaces/default/configs/limits";
    let schema = json!({"type": "integer", "minimum": 1});
    let (status, c) = s
        .put(path, &json!({"value": 5, "schema": schema}), None)
        .await;
    assert_eq!(status, 201, "{c}");
    let (status, c) = s.put(path, &json!({"value": 0}), None).await;
    assert_eq!(status, 400, "the kept schema refuses 0: {c}");
    let (status, c) = s.put(path, &json!({"value": 7}), Some("\"1\"")).await;
    assert_eq!(status, 200, "{c}");
    let (status, c) = s
        .post(&format!("{path}/rollback"), &json!({"version": 1}))
        .await;
    assert_eq!(
        (status, c["version"].clone(), c["value"].clone()),
        (200, json!(3), json!(5))
    );
    let (_, versions) = s.get(&format!("{path}/versions")).await;
    assert_eq!(
        versions["items"].as_array().map(Vec::len),
        Some(3),
        "{versions}"
    );

    let (status, report) = s.get("/api/v1/audit/verify").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["valid"], true,
        "the chain PostgreSQL keeps verifies: {report}"
    );
    assert!(report["events"].as_u64() >= Some(6), "{report}");
    assert!(
        !s.dir.path().join("vexil.db").exists(),
        "the postgres mode writes no SQLite file"
    );
    drop(s);
    drop(db);
}

#[tokio::test]
async fn a_second_replica_on_the_same_database_serves_the_first_ones_writes_within_a_second() {
    let (url, db) = fresh_database().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let gold = json!({"targetingKey": "u1", "tier": "gold"});
    let (status, r) = ofrep(&b, "banner", gold.clone()).await;
    assert_eq!(
        (status, r["errorCode"].clone()),
        (404, json!("FLAG_NOT_FOUND"))
    );

    // A create on A reaches B's evaluation snapshot.
    let (status, created) = a
        .post("/api/v1/namespaces/default/flags", &bool_flag("banner"))
        .await;
    assert_eq!(status, 201, "{created}");
    let took = await_evaluation(&b, "banner", &gold, |status, r| {
        status == 200 && r["value"] == json!(true)
    })
    .await;
    eprintln!("create on A served by B after {took:?}");

    // So does the kill switch.
    let (status, _) = a
        .post(
            "/api/v1/namespaces/default/flags/banner/disable",
            &json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let took = await_evaluation(&b, "banner", &gold, |_, r| r["reason"] == json!("DISABLED")).await;
    eprintln!("disable on A served by B after {took:?}");

    // And the other way round.
    let (status, _) = b
        .post("/api/v1/namespaces/default/flags/banner/enable", &json!({}))
        .await;
    assert_eq!(status, 200);
    await_evaluation(&a, "banner", &gold, |status, r| {
        status == 200 && r["value"] == json!(true)
    })
    .await;

    // Compare-and-set spans replicas: the same If-Match on both, at once, lets one win.
    let (_, current) = a.get("/api/v1/namespaces/default/flags/banner").await;
    let version = current["version"].as_u64().expect("a version");
    let tag = format!("\"{version}\"");
    let put = |s: &Server, variant: &'static str| {
        let mut body = bool_flag("banner");
        body["defaultVariant"] = json!(variant);
        send(
            s.http
                .put(s.url("/api/v1/namespaces/default/flags/banner"))
                .header("if-match", tag.as_str())
                .json(&body),
        )
    };
    let ((sa, _), (sb, _)) = tokio::join!(put(&a, "on"), put(&b, "off"));
    let mut statuses = [sa, sb];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 412]);
    let (_, after) = b.get("/api/v1/namespaces/default/flags/banner").await;
    assert_eq!(after["version"], json!(version + 1));
    drop((a, b));
    drop(db);
}

#[tokio::test]
async fn a_token_revoked_on_one_replica_is_refused_by_the_other_within_a_second() {
    let (url, db) = fresh_database().await;
    let a = replica(&url).await;
    let b = replica(&url).await;
    let (status, _) = a
        .post("/api/v1/namespaces/default/flags", &bool_flag("banner"))
        .await;
    assert_eq!(status, 201);
    let (status, created) = a
        .post(
            "/api/v1/tokens",
            &json!({"name": "sdk", "role": "evaluator", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().expect("secret").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let evaluate = |s: &Server| {
        send(
            reqwest::Client::new()
                .post(s.url("/ofrep/v1/evaluate/flags/banner"))
                .header("x-api-key", secret.as_str())
                .json(&json!({"context": {}})),
        )
    };
    // B learns of the new token from the shared store (its identity poll), then serves it.
    let start = Instant::now();
    loop {
        let (status, _) = evaluate(&b).await;
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "B never accepted the token A created: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "token created on A accepted by B after {:?}",
        start.elapsed()
    );

    let (status, _) = a.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, 204);
    let start = Instant::now();
    loop {
        let (status, _) = evaluate(&b).await;
        if status == 401 {
            break;
        }
        assert!(
            start.elapsed() < PROPAGATION,
            "B still accepted a token revoked on A after {:?} ({status})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "token revoked on A refused by B after {:?}",
        start.elapsed()
    );
    drop((a, b));
    drop(db);
}
