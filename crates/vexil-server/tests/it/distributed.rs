//! The distributed mode end to end (DESIGN.md §5): real `vexil-server` replicas sharing one
//! etcd (flag state) and one PostgreSQL database (audit, identity), driven over HTTP and
//! WebSocket. Propagation to every replica, the faults the issue names (an etcd member lost,
//! every member lost, PostgreSQL lost) and no lost update under conflicting writers.
//!
//! etcd comes from `vexil_testkit::etcd` (one shared server with a key prefix per test, or a
//! private N-member [`EtcdCluster`] where the test stops members); PostgreSQL from
//! `vexil_testkit::postgres` (a fresh database, or a [`PrivateCluster`] the test stops).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vexil_testkit::etcd::EtcdCluster;
use vexil_testkit::postgres::{PrivateCluster, fresh_database};

use crate::fixtures::{Server, Ws, bool_flag, next_json_within, send, ws_connect};

/// Replicas must share the session signing key (it is required with DB_URL).
const SHARED_JWT_SECRET: &str = "replicas-share-this-secret-0123456789abcdef";

/// How soon a replica must serve (and push) another replica's write.
const PROPAGATION: Duration = Duration::from_secs(1);

/// How long recovery (a restarted etcd or PostgreSQL) may take before a test fails.
const RECOVERY: Duration = Duration::from_secs(30);

/// A replica in the distributed mode.
async fn replica(etcd: &str, prefix: &str, db_url: &str) -> Server {
    Server::start_with(|o| {
        o.env("DB_URL", db_url)
            .env("ETCD_ENDPOINTS", etcd)
            .env("ETCD_PREFIX", prefix)
            .env("JWT_SECRET", SHARED_JWT_SECRET)
    })
    .await
}

/// Three replicas, started one after another (the first creates `admin` and `default`).
async fn replicas(n: usize, etcd: &str, prefix: &str, db_url: &str) -> Vec<Server> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(replica(etcd, prefix, db_url).await);
    }
    out
}

/// The shared test etcd's client URL.
async fn shared_etcd() -> String {
    tokio::task::spawn_blocking(vexil_testkit::etcd::endpoint)
        .await
        .expect("finding etcd")
}

async fn ofrep(s: &Server, key: &str) -> (u16, Value) {
    s.post(
        &format!("/ofrep/v1/evaluate/flags/{key}"),
        &json!({"context": {"targetingKey": "u1", "tier": "gold"}}),
    )
    .await
}

/// Polls `s` until evaluating `key` satisfies `done`, at most `within`; returns how long it
/// took, or panics with the last answer.
async fn await_evaluation(
    s: &Server,
    key: &str,
    within: Duration,
    done: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = ofrep(s, key).await;
        if done(status, &body) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "after {within:?} {} still answers {status} {body}",
            s.process.base
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A watcher on `default` at `s`, past its initial snapshot frame.
async fn watch(s: &Server) -> Ws {
    let mut ws = ws_connect(s, "/api/v1/namespaces/default/watch").await;
    let first = next_json_within(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    ws
}

/// The next change frame for `key`.
async fn next_change(ws: &mut Ws, key: &str) -> Value {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = next_json_within(ws, left).await;
        if frame["type"] == "change" && frame["key"] == key {
            return frame;
        }
    }
}

/// Every audit event of `ns` (paging through the log).
async fn audit_of(s: &Server, ns: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out.last().and_then(|e| e["seq"].as_u64()).unwrap_or(0);
        let (status, page) = s
            .get(&format!(
                "/api/v1/audit?namespace={ns}&afterSeq={after}&limit=1000"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return out;
        }
        out.extend(items);
    }
}

/// Waits until `s` reports an empty audit outbox and a healthy relay.
async fn outbox_drained(s: &Server) {
    let start = Instant::now();
    loop {
        let (status, ready) = s.get("/readyz").await;
        if status == 200
            && ready["auditRelay"]["healthy"] == json!(true)
            && ready["auditRelay"]["pending"] == json!(0)
        {
            return;
        }
        assert!(
            start.elapsed() < RECOVERY,
            "the audit outbox was not drained within {RECOVERY:?}: {status} {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_replica_is_served_and_pushed_by_the_other_two() {
    let (url, db) = fresh_database().await;
    let etcd = shared_etcd().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let r = replicas(3, &etcd, &prefix, &url).await;
    assert!(
        r[0].process
            .logs()
            .iter()
            .any(|l| l.contains("distributed mode")),
        "{:#?}",
        r[0].process.logs()
    );
    let mut watch_b = watch(&r[1]).await;
    let mut watch_c = watch(&r[2]).await;

    let (status, created) = r[0]
        .post("/api/v1/namespaces/default/flags", &bool_flag("checkout"))
        .await;
    assert_eq!(status, 201, "{created}");
    for s in &r[1..] {
        await_evaluation(s, "checkout", PROPAGATION, |st, b| {
            st == 200 && b["value"] == json!(true)
        })
        .await;
    }
    for ws in [&mut watch_b, &mut watch_c] {
        let frame = next_change(ws, "checkout").await;
        assert_eq!(frame["after"]["version"], 1, "{frame}");
    }

    // An update through B is served by A and C, and pushed to C's watcher.
    let mut off = bool_flag("checkout");
    off.as_object_mut().expect("object").remove("targeting");
    let (status, updated) = r[1]
        .put(
            "/api/v1/namespaces/default/flags/checkout",
            &off,
            Some("\"1\""),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    for s in [&r[0], &r[2]] {
        await_evaluation(s, "checkout", PROPAGATION, |st, b| {
            st == 200 && b["value"] == json!(false) && b["reason"] == "STATIC"
        })
        .await;
    }
    assert_eq!(
        next_change(&mut watch_c, "checkout").await["after"]["version"],
        2
    );

    // A configuration entry written through C is read on A, with its history, and pushed to
    // B's watcher: configs share the flags' etcd txn, change feed and relayed audit.
    let (status, config) = r[2]
        .put(
            "/api/v1/namespaces/default/configs/checkout.limits",
            &json!({"value": {"maxItems": 5}, "schema": {"type": "object"}}),
            None,
        )
        .await;
    assert_eq!(status, 201, "{config}");
    let frame = next_change(&mut watch_b, "checkout.limits").await;
    assert_eq!(
        (frame["kind"].clone(), frame["after"]["value"].clone()),
        (json!("config"), json!({"maxItems": 5})),
        "{frame}"
    );
    let (status, read) = r[0]
        .get("/api/v1/namespaces/default/configs/checkout.limits/versions")
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["items"][0]["value"], json!({"maxItems": 5}), "{read}");

    // Every change is audited once, in PostgreSQL, readable through any replica.
    let events = audit_of(&r[2], "default").await;
    let flag_events: Vec<&Value> = events.iter().filter(|e| e["key"] == "checkout").collect();
    assert_eq!(flag_events.len(), 2, "{events:#?}");
    let config_events: Vec<&Value> = events
        .iter()
        .filter(|e| e["key"] == "checkout.limits" && e["action"] == "config.create")
        .collect();
    assert_eq!(config_events.len(), 1, "{events:#?}");
    let (status, ready) = r[2].get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["auditRelay"]["healthy"], true, "{ready}");
    drop(r);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_loss_keeps_writes_working_and_total_loss_serves_the_snapshot_with_503_writes()
{
    let cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3))
        .await
        .expect("etcd cluster");
    let (url, db) = fresh_database().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let r = replicas(2, &cluster.endpoints_csv(), &prefix, &url).await;
    let (status, _) = r[0]
        .post("/api/v1/namespaces/default/flags", &bool_flag("checkout"))
        .await;
    assert_eq!(status, 201);

    // One member of three down: reads and writes keep working, on both replicas.
    stop_member(&cluster, 0).await;
    for i in 0..10_u64 {
        let writer = &r[usize::try_from(i % 2).expect("index")];
        let mut flag = bool_flag("checkout");
        flag["description"] = json!(format!("take {i}"));
        let (status, body) = writer
            .put(
                "/api/v1/namespaces/default/flags/checkout",
                &flag,
                Some(&format!("\"{}\"", i + 1)),
            )
            .await;
        assert_eq!(status, 200, "write {i} with one etcd member down: {body}");
    }
    for s in &r {
        let (status, got) = s.get("/api/v1/namespaces/default/flags/checkout").await;
        assert_eq!((status, got["version"].clone()), (200, json!(11)), "{got}");
        let (status, body) = ofrep(s, "checkout").await;
        assert_eq!((status, body["value"].clone()), (200, json!(true)));
    }

    // Every member down: evaluation answers from the snapshot, writes fail fast with 503 and
    // Retry-After, and readiness says degraded.
    stop_all(&cluster).await;
    for s in &r {
        let (status, body) = ofrep(s, "checkout").await;
        assert_eq!(
            (status, body["value"].clone()),
            (200, json!(true)),
            "{body}"
        );
        let started = Instant::now();
        let resp = s
            .http
            .post(s.url("/api/v1/namespaces/default/flags"))
            .json(&bool_flag("during-outage"))
            .send()
            .await
            .expect("request");
        let took = started.elapsed();
        assert_eq!(resp.status().as_u16(), 503);
        let retry = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        assert!(retry.is_some_and(|r| r > 0), "Retry-After: {retry:?}");
        assert!(
            took < Duration::from_secs(12),
            "a write with etcd down took {took:?}"
        );
        let (status, ready) = s.get("/readyz").await;
        assert_eq!(status, 503, "{ready}");
        assert_eq!(ready["status"], "degraded", "{ready}");
    }
    // Nothing was half-written.
    for s in &r {
        let (status, body) = ofrep(s, "during-outage").await;
        assert_eq!(status, 404, "{body}");
    }

    // etcd back: the replicas catch up without a restart.
    start_all(&cluster).await;
    let start = Instant::now();
    loop {
        let mut off = bool_flag("checkout");
        off.as_object_mut().expect("object").remove("targeting");
        let (status, _) = r[0]
            .put(
                "/api/v1/namespaces/default/flags/checkout",
                &off,
                Some("\"11\""),
            )
            .await;
        if status == 200 {
            break;
        }
        assert!(
            start.elapsed() < RECOVERY,
            "writes still fail ({status}) {RECOVERY:?} after etcd restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &r {
        await_evaluation(s, "checkout", RECOVERY, |st, b| {
            st == 200 && b["value"] == json!(false)
        })
        .await;
        let (status, ready) = s.get("/readyz").await;
        assert_eq!((status, ready["status"].clone()), (200, json!("ready")));
    }
    drop(r);
    drop(db);
    drop(cluster);
}

async fn stop_member(cluster: &EtcdCluster, i: usize) {
    tokio::task::block_in_place(|| cluster.stop_member(i));
}

async fn stop_all(cluster: &EtcdCluster) {
    tokio::task::block_in_place(|| cluster.stop_all());
}

async fn start_all(cluster: &EtcdCluster) {
    tokio::task::block_in_place(|| cluster.start_all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_down_flag_writes_succeed_and_their_audit_arrives_once_it_returns() {
    let pg = tokio::task::spawn_blocking(PrivateCluster::start)
        .await
        .expect("private PostgreSQL");
    let url = pg.create_database("vexil_outage").await;
    let etcd = shared_etcd().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let r = replicas(2, &etcd, &prefix, &url).await;
    outbox_drained(&r[0]).await;

    tokio::task::block_in_place(|| pg.stop());
    let writes = 10;
    let mut ids = BTreeSet::new();
    for i in 0..writes {
        let key = format!("outage-{i}");
        let (status, body) = r[i % 2]
            .post("/api/v1/namespaces/default/flags", &bool_flag(&key))
            .await;
        assert_eq!(status, 201, "write {i} with PostgreSQL down: {body}");
        ids.insert(key);
    }
    // The writes are live everywhere while PostgreSQL is down.
    for key in &ids {
        for s in &r {
            await_evaluation(s, key, PROPAGATION, |st, b| {
                st == 200 && b["value"] == json!(true)
            })
            .await;
        }
    }
    let (_, ready) = r[0].get("/readyz").await;
    assert_eq!(ready["auditRelay"]["healthy"], false, "{ready}");

    tokio::task::block_in_place(|| pg.start_again());
    outbox_drained(&r[0]).await;
    outbox_drained(&r[1]).await;
    let events = audit_of(&r[1], "default").await;
    for key in &ids {
        let n = events
            .iter()
            .filter(|e| e["key"] == json!(key) && e["kind"] == "flag")
            .count();
        assert_eq!(n, 1, "{key} has {n} audit events, not exactly one");
    }
    let unique: BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(unique.len(), events.len(), "an event id appears twice");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The relayed events joined the one hash chain: it verifies end to end on either replica.
    for replica in &r {
        let (status, report) = replica.get("/api/v1/audit/verify").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["valid"], true, "{report}");
        assert!(
            report["events"].as_u64() >= Some(events.len() as u64),
            "{report}"
        );
    }
    drop(r);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_on_three_replicas_lose_no_update_and_audit_each_success_once() {
    let (url, db) = fresh_database().await;
    let etcd = shared_etcd().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let r = std::sync::Arc::new(replicas(3, &etcd, &prefix, &url).await);
    let (status, _) = r[0]
        .post("/api/v1/namespaces/default/flags", &bool_flag("contended"))
        .await;
    assert_eq!(status, 201);

    let writers = 8;
    let attempts = 200;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let s = &r[w % 3];
            let path = "/api/v1/namespaces/default/flags/contended";
            let mut version = 1_u64;
            let mut won = Vec::new();
            let mut refused = 0_u32;
            for a in 0..attempts {
                let mut flag = bool_flag("contended");
                flag["description"] = json!(format!("writer {w} attempt {a}"));
                let (status, body) = s.put(path, &flag, Some(&format!("\"{version}\""))).await;
                match status {
                    200 => {
                        let v = body["version"].as_u64().expect("version");
                        assert_eq!(v, version + 1, "a success moves the version by one");
                        won.push(v);
                        version = v;
                    }
                    412 => {
                        refused += 1;
                        let (status, got) = send(s.http.get(s.url(path))).await;
                        assert_eq!(status, 200);
                        version = got["version"].as_u64().expect("version");
                    }
                    other => panic!("writer {w}: unexpected {other} {body}"),
                }
            }
            (won, refused)
        }));
    }
    let mut won = Vec::new();
    let mut refused = 0;
    for t in tasks {
        let (w, f) = t.await.expect("writer");
        won.extend(w);
        refused += f;
    }
    let successes = won.len() as u64;
    assert!(
        successes > 0 && refused > 0,
        "{successes} won, {refused} refused: no contention?"
    );
    let distinct: BTreeSet<u64> = won.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        won.len(),
        "two writers won the same version"
    );
    let (_, flag) = r[2].get("/api/v1/namespaces/default/flags/contended").await;
    assert_eq!(flag["version"], json!(1 + successes), "{flag}");
    assert_eq!(distinct, (2..=1 + successes).collect::<BTreeSet<_>>());

    for s in r.iter() {
        outbox_drained(s).await;
    }
    let events = audit_of(&r[1], "default").await;
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["key"] == "contended" && e["kind"] == "flag")
        .filter_map(|e| e["after"]["version"].as_u64())
        .filter(|v| *v > 1)
        .collect();
    assert_eq!(
        versions.len(),
        won.len(),
        "every success is audited exactly once ({} events for {} successes)",
        versions.len(),
        won.len()
    );
    assert_eq!(versions.iter().copied().collect::<BTreeSet<_>>(), distinct);
    drop(r);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_resuming_from_before_the_retained_change_log_gets_a_snapshot() {
    let (url, db) = fresh_database().await;
    let etcd = shared_etcd().await;
    let prefix = vexil_testkit::etcd::unique_prefix();
    let s = Server::start_with(|o| {
        o.env("DB_URL", &url)
            .env("ETCD_ENDPOINTS", &etcd)
            .env("ETCD_PREFIX", &prefix)
            .env("ETCD_CHANGE_RETENTION", "3")
            .env("JWT_SECRET", SHARED_JWT_SECRET)
    })
    .await;
    for i in 0..6 {
        let (status, _) = s
            .post(
                "/api/v1/namespaces/default/flags",
                &bool_flag(&format!("f{i}")),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, ready) = s.get("/readyz").await;
    let current = ready["revision"].as_u64().expect("revision");

    // From inside the kept log: the changes it missed.
    let mut ws = ws_connect(
        &s,
        &format!(
            "/api/v1/namespaces/default/watch?fromRevision={}",
            current - 2
        ),
    )
    .await;
    let frame = next_json_within(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(
        (frame["type"].as_str(), frame["revision"].as_u64()),
        (Some("change"), Some(current - 1)),
        "{frame}"
    );

    // From before it: a snapshot with everything, then live changes.
    let mut ws = ws_connect(&s, "/api/v1/namespaces/default/watch?fromRevision=1").await;
    let frame = next_json_within(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(frame["type"], "snapshot", "{frame}");
    assert_eq!(frame["flags"].as_array().map(Vec::len), Some(6), "{frame}");
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("late"))
        .await;
    assert_eq!(status, 201);
    assert_eq!(next_change(&mut ws, "late").await["after"]["version"], 1);
    drop(s);
    drop(db);
}
