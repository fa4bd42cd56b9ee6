//! Write-to-visible latency across replicas in the distributed mode (DESIGN.md §5), with etcd's
//! own put-to-watch latency measured in the same run as the baseline.
//!
//! Starts one etcd (`vexil_testkit::etcd`), one PostgreSQL database, and three release
//! `vexil-server` replicas A, B, C on them, with a WebSocket watcher on every replica. Each of
//! `WRITES` writes creates a flag through one replica (A, B, C in turn); its latency on a
//! replica is the time from sending the write to that replica's watcher receiving the change
//! frame. A watcher's frame is sent only after the replica's evaluation snapshot has applied
//! the change, so this is "write to evaluable". The baseline is the same count of raw etcd
//! puts, each timed from the put to a watcher's event: the floor any etcd-fed replica has.
//!
//! Run: `cargo bench -p vexil-server --bench propagation` (prints a markdown table).

use std::time::{Duration, Instant};

use etcd_client::{Client, WatchOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use vexil_testkit::server::{ServerOptions, ServerProcess};

/// Writes per run (and raw puts for the baseline); bounded, and each wait is bounded too.
const WRITES: usize = 300;
const PATIENCE: Duration = Duration::from_secs(10);
const SECRET: &str = "bench-replicas-share-this-secret-0123456789";
const PASSWORD: &str = "bench-admin-password";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short, non-empty list"
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn row(name: &str, mut d: Vec<Duration>) -> String {
    d.sort();
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        d.len(),
        percentile(&d, 0.5),
        percentile(&d, 0.9),
        percentile(&d, 0.99),
        percentile(&d, 1.0)
    )
}

async fn watcher(base: &str, token: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/namespaces/default/watch",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    // The opening snapshot.
    next_frame(&mut ws).await;
    ws
}

async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("json");
        }
    }
}

/// Reads change frames until the one for `key`, returning when it arrived.
async fn arrival(ws: &mut Ws, key: &str) -> Instant {
    loop {
        let f = next_frame(ws).await;
        if f["type"] == "change" && f["key"] == key {
            return Instant::now();
        }
    }
}

async fn login(http: &reqwest::Client, base: &str) -> String {
    let resp: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login body");
    resp["token"].as_str().expect("token").to_owned()
}

async fn replicas_run(etcd: &str, db_url: &str) -> (Vec<Vec<Duration>>, Vec<Duration>) {
    let dir = std::env::temp_dir().join(format!("vexil-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let prefix = vexil_testkit::etcd::unique_prefix();
    let mut servers = Vec::new();
    for i in 0..3 {
        let opts = ServerOptions::new(
            env!("CARGO_BIN_EXE_vexil-server"),
            dir.join(format!("unused-{i}.db")),
        )
        .env("DB_URL", db_url)
        .env("ETCD_ENDPOINTS", etcd)
        .env("ETCD_PREFIX", &prefix)
        .env("JWT_SECRET", SECRET)
        .env("VEXIL_ADMIN_PASSWORD", PASSWORD);
        servers.push(ServerProcess::spawn(&opts));
    }
    let http = reqwest::Client::new();
    let token = login(&http, &servers[0].base).await;
    let mut watchers = Vec::new();
    for s in &servers {
        watchers.push(watcher(&s.base, &token).await);
    }
    let mut per_replica: Vec<Vec<Duration>> = (0..3).map(|_| Vec::with_capacity(WRITES)).collect();
    let mut acks = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let key = format!("p-{i}");
        let writer = &servers[i % 3];
        let body = json!({"key": key, "state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"});
        let t0 = Instant::now();
        let write = http
            .post(format!("{}/api/v1/namespaces/default/flags", writer.base))
            .bearer_auth(&token)
            .json(&body)
            .send();
        let [wa, wb, wc] = &mut watchers[..] else {
            unreachable!("three watchers")
        };
        let (resp, a, b, c) = tokio::join!(
            write,
            arrival(wa, &key),
            arrival(wb, &key),
            arrival(wc, &key)
        );
        let resp = resp.expect("write");
        assert_eq!(resp.status().as_u16(), 201, "write {i}");
        acks.push(t0.elapsed());
        for (r, at) in [a, b, c].into_iter().enumerate() {
            per_replica[r].push(at.saturating_duration_since(t0));
        }
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    (per_replica, acks)
}

async fn etcd_baseline(endpoint: &str) -> Vec<Duration> {
    let client = Client::connect([endpoint], None).await.expect("etcd");
    let prefix = vexil_testkit::etcd::unique_prefix();
    let mut watch = client.watch_client();
    let mut stream = watch
        .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let mut kv = client.kv_client();
    let value = "x".repeat(400);
    let mut out = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let key = format!("{prefix}{i:06}");
        let t0 = Instant::now();
        let (put, seen) = tokio::join!(kv.put(key.as_str(), value.as_str(), None), async {
            loop {
                let resp = tokio::time::timeout(PATIENCE, stream.message())
                    .await
                    .expect("an event in time")
                    .expect("watch ok")
                    .expect("watch open");
                if resp
                    .events()
                    .iter()
                    .any(|e| e.kv().is_some_and(|kv| kv.key() == key.as_bytes()))
                {
                    return Instant::now();
                }
            }
        });
        put.expect("put");
        out.push(seen.saturating_duration_since(t0));
    }
    out
}

fn main() {
    let etcd = vexil_testkit::etcd::endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (db_url, db) = vexil_testkit::postgres::fresh_database().await;
        let baseline = etcd_baseline(&etcd).await;
        let (replicas, acks) = replicas_run(&etcd, &db_url).await;
        let baseline_after = etcd_baseline(&etcd).await;
        println!("| path | samples | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |");
        println!("|---|---:|---:|---:|---:|---:|");
        println!(
            "{}",
            row("etcd put → watch event (baseline, before)", baseline)
        );
        println!("{}", row("write acknowledged (HTTP 201)", acks));
        for (name, d) in ["A", "B", "C"].iter().zip(replicas.iter()) {
            println!(
                "{}",
                row(&format!("write → visible on replica {name}"), d.clone())
            );
        }
        let all: Vec<Duration> = replicas.into_iter().flatten().collect();
        println!("{}", row("write → visible, all replicas", all));
        println!(
            "{}",
            row("etcd put → watch event (baseline, after)", baseline_after)
        );
        drop(db);
    });
}
