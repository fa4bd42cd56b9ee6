//! Snapshot rebuild: how long a replica takes to load and compile a namespace of 10,000 and
//! 100,000 flags from the embedded store, and the memory the snapshot holds. Results:
//! BENCHMARKS.md, "Snapshot rebuild".
//!
//! Method: flags are written to a fresh SQLite file in batches of 1,000 (a third static, a third
//! with an `if`/`in` rule on an attribute, a third with a `fractional` split, all with metadata),
//! every rule different, then, REPEATS times each and alternating:
//! - baseline: `load_namespace` alone (read every row and decode its JSON: the I/O floor);
//! - rebuild: `SnapshotCache::load` (the same read, then validation and rule compilation).
//!   The ratio rebuild / baseline is the cost of compiling;
//! - one change: after each rebuild, one flag is updated and `SnapshotCache::catch_up` applies
//!   it to the snapshot (what a replica's follower does on every commit).
//!
//! Resident memory is read from /proc/self/status: VmRSS before the first load, VmRSS and the
//! peak VmHWM right after the first rebuild (the snapshot alive, before any baseline ran), and
//! VmRSS with the baseline's fully decoded rows alive. Run one size per process for clean
//! memory figures: `FLAGS=100000 cargo bench -p vexil-service --bench rebuild`
//! (FLAGS=10000,100000 REPEATS=3 by default).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use vexil_core::FlagDefinition;
use vexil_core::FractionalVersion;
use vexil_core::domain::{Flag, Namespace};
use vexil_service::SnapshotCache;
use vexil_store::sqlite::SqliteStore;
use vexil_store::{Expect, FlagStore, Write};

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn flag(i: usize) -> Flag {
    let key = format!("flag-{i:06}");
    let targeting = match i % 3 {
        0 => None,
        // Every rule differs (a per-flag tier, a per-flag split), as in a real namespace, so
        // nothing can be shared between flags.
        1 => Some(json!({"if": [
            {"in": [{"var": "tier"}, ["gold", format!("tier-{i}")]]}, "on",
            {"ends_with": [{"var": "email"}, format!("@team-{i}.example.com")]}, "on", null
        ]})),
        _ => Some(json!({"fractional": [
            {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]},
            ["on", i % 100], ["off", 100 - i % 100]
        ]})),
    };
    Flag {
        namespace: "big".into(),
        key: key.clone(),
        name: format!("Flag {i}"),
        description: "generated for the rebuild benchmark".into(),
        tags: vec!["bench".into()],
        definition: FlagDefinition {
            state: vexil_core::FlagState::Enabled,
            variants: object(json!({"on": true, "off": false})),
            default_variant: Some("off".into()),
            targeting,
            metadata: object(json!({"owner": "team-a", "ticket": i})),
        },
        version: 0,
        created_at: 0,
        created_by: "bench".into(),
        updated_at: 0,
        updated_by: "bench".into(),
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(n: usize, repeats: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("bench.db"))
            .await
            .expect("store"),
    );
    let ns = Namespace {
        key: "big".into(),
        name: "Big".into(),
        description: String::new(),
        evaluation_context: Map::new(),
        anonymous_evaluation: false,
        version: 0,
        created_at: 0,
        updated_at: 0,
    };
    store
        .commit(
            vec![Write::PutNamespace {
                namespace: ns,
                expect: Expect::Absent,
            }],
            vec![],
        )
        .await
        .expect("namespace");
    let fill = Instant::now();
    for start in (0..n).step_by(1000) {
        let writes = (start..(start + 1000).min(n))
            .map(|i| Write::PutFlag {
                flag: flag(i),
                expect: Expect::Absent,
            })
            .collect();
        store.commit(writes, vec![]).await.expect("batch");
    }
    eprintln!("{n} flags written in {:?}", fill.elapsed());

    let rss_before = status_kib("VmRSS:");
    let mut baseline = Vec::new();
    let mut rebuild = Vec::new();
    let mut one_change = Vec::new();
    let mut rss_with_snapshot = 0;
    let mut rss_rows = 0;
    let mut rebuild_peak = 0;
    for round in 0..repeats {
        // The rebuild runs first, so the first round's peak is the rebuild's own, not what a
        // full decode (the baseline) left behind in the allocator.
        let t = Instant::now();
        let cache = SnapshotCache::load(&*store, FractionalVersion::V2)
            .await
            .expect("rebuild");
        rebuild.push(t.elapsed());
        let snap = cache.get("big").expect("snapshot");
        assert_eq!(snap.flags.len(), n, "every flag compiled");
        if round == 0 {
            rss_with_snapshot = status_kib("VmRSS:");
            rebuild_peak = status_kib("VmHWM:");
        }
        drop(snap);
        // One flag changes: the replica applies it to the snapshot it has (the follow path),
        // compiling that flag alone, instead of rebuilding the namespace.
        let mut changed = flag(round);
        changed.name = format!("changed in round {round}");
        store
            .commit(
                vec![Write::PutFlag {
                    flag: changed,
                    expect: Expect::Any,
                }],
                vec![],
            )
            .await
            .expect("one change");
        let t = Instant::now();
        cache.catch_up(&*store).await.expect("catch up");
        one_change.push(t.elapsed());
        assert_eq!(cache.get("big").expect("snapshot").flags.len(), n);
        drop(cache);

        let t = Instant::now();
        let state = store.load_namespace("big").await.expect("load");
        baseline.push(t.elapsed());
        assert_eq!(state.flags.len(), n);
        rss_rows = rss_rows.max(status_kib("VmRSS:"));
        drop(state);
    }
    let (b, r) = (median(baseline.clone()), median(rebuild.clone()));
    let c = median(one_change.clone());
    println!(
        "flags={n} baseline(load_namespace) median={b:?} all={baseline:?} | rebuild(SnapshotCache::load) median={r:?} all={rebuild:?} | ratio={:.2} | one change applied (catch_up) median={c:?} all={one_change:?} | rss_before={} MiB rss_with_snapshot={} MiB rebuild_peak(VmHWM)={} MiB | rss_with_decoded_rows={} MiB",
        r.as_secs_f64() / b.as_secs_f64(),
        rss_before / 1024,
        rss_with_snapshot / 1024,
        rebuild_peak / 1024,
        rss_rows / 1024,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<usize> = std::env::var("FLAGS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let repeats = std::env::var("REPEATS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for n in sizes {
        rt.block_on(run(n, repeats));
    }
}
