//! Store write throughput: how many [`FlagStore::commit`]s per second each backend takes, and
//! how long one takes, next to a raw-driver baseline measured in the same run. Results:
//! BENCHMARKS.md, "Store write throughput (vexil-store)".
//!
//! Every store commit is what a flag update through the API commits: one `Write::PutFlag` of a
//! realistic flag (two variants, a small targeting rule, metadata; ~1 KB of JSON) with
//! `Expect::Any`, plus one audit event. Baselines write the same flag's JSON text with the
//! bare driver: a one-statement transaction (`BEGIN; INSERT; COMMIT`) into a plain table for
//! SQLite (its own WAL-mode file, `synchronous=NORMAL` like the store) and PostgreSQL (a table
//! in the store's own database), and a single `put` for etcd. The distributed store (etcd
//! commit plus the inline audit relay into PostgreSQL) shares the etcd baseline and is also
//! compared with the plain etcd store.
//!
//! Each backend runs with 1 writer (sequential: commits/s, p50 and p99 latency) and with 8
//! concurrent writers on 8 different flags (tokio tasks on the multi-threaded runtime:
//! commits/s). A case is bounded both in count (2,000 commits for 1 writer, 4,000 shared by 8
//! writers) and in time (10 s); after a short warm-up, each case runs 3 times, rotating which
//! of baseline and stores goes first, and the table reports medians. For the etcd group it also
//! reads etcd's `/metrics` around each run and reports, per commit, the KV RPCs etcd served and
//! the WAL fsyncs it made: that shows the round trips and lost compare-and-set rounds behind the
//! numbers.
//!
//! PostgreSQL is `vexil_testkit::postgres` (the machine's server on 127.0.0.1:5432, or a
//! private one) and etcd is `vexil_testkit::etcd` (`VEXIL_TEST_ETCD`, or a private one). Run:
//! `cargo bench -p vexil-store --bench write` (`BACKENDS=sqlite,postgres,etcd` by default; the
//! `etcd` group includes the distributed store). The markdown tables go to stdout, progress
//! to stderr.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, DeleteOptions, KvClient};
use serde_json::{Map, Value, json};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use vexil_core::domain::{Actor, AuditEvent, Flag, Namespace, ResourceKind};
use vexil_core::{FlagDefinition, FlagState};
use vexil_store::distributed::DistributedStore;
use vexil_store::etcd::EtcdStore;
use vexil_store::postgres::PostgresStore;
use vexil_store::sqlite::SqliteStore;
use vexil_store::{Expect, FlagStore, Write};

/// Runs per case; the table reports the median.
const REPEATS: usize = 3;

/// The concurrent case's writers, each on its own flag.
const WRITERS: usize = 8;

/// Commits per run with 1 writer.
const SEQUENTIAL_COMMITS: usize = 2_000;

/// Commits per run with [`WRITERS`] writers, shared equally.
const CONCURRENT_COMMITS: usize = 4_000;

/// A run stops at its count or after this long, whichever comes first, so a slow backend
/// cannot stretch the benchmark without bound.
const RUN_LIMIT: Duration = Duration::from_secs(10);

/// Warm-up per case and subject, discarded: connections opened, statements prepared, the
/// first pages of each table and etcd's first revisions written.
const WARMUP_COMMITS: usize = 100;
const WARMUP_LIMIT: Duration = Duration::from_secs(3);

/// One write that takes longer than this counts as an error (the stores time out sooner
/// themselves; this only guards the benchmark against a hang).
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

const NAMESPACE: &str = "bench";

/// What one run writes: a flag per writer, and each flag's JSON for the baselines.
struct Fixture {
    flags: Vec<Flag>,
    payloads: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        let flags: Vec<Flag> = (0..WRITERS).map(flag).collect();
        let payloads = flags
            .iter()
            .map(|f| serde_json::to_string(f).expect("a flag encodes as JSON"))
            .collect();
        Self { flags, payloads }
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn namespace() -> Namespace {
    Namespace {
        key: NAMESPACE.into(),
        name: "Write benchmark".into(),
        description: String::new(),
        evaluation_context: Map::new(),
        anonymous_evaluation: false,
        version: 0,
        created_at: now_millis(),
        updated_at: now_millis(),
    }
}

/// A flag as a team would write it: two variants, a rule on two attributes, some metadata.
fn flag(writer: usize) -> Flag {
    let now = now_millis();
    Flag {
        namespace: NAMESPACE.into(),
        key: format!("checkout-redesign-{writer}"),
        name: format!("Checkout redesign ({writer})"),
        description: "Rolls the redesigned checkout out to beta testers and staff first, \
                      then to everyone once conversion holds. Turn it off if the payment \
                      error rate rises above the alert threshold."
            .into(),
        tags: vec!["payments".into(), "checkout".into(), "experiment".into()],
        definition: FlagDefinition {
            state: FlagState::Enabled,
            variants: object(json!({"on": true, "off": false})),
            default_variant: Some("off".into()),
            targeting: Some(json!({"if": [
                {"in": [{"var": "tier"}, ["beta", "staff"]]}, "on",
                {"ends_with": [{"var": "email"}, "@example.com"]}, "on",
                "off"
            ]})),
            metadata: object(json!({
                "owner": "team-payments",
                "ticket": "PAY-1234",
                "expires": "2027-06-30",
                "dashboard": "https://grafana.example.com/d/checkout-conversion",
                "runbook": "https://wiki.example.com/payments/checkout-redesign",
                "slack": "#payments-releases",
                "reviewers": ["bob@example.com", "carol@example.com"],
                "experiment": {"metric": "checkout_conversion", "minimum_sample": 20000}
            })),
        },
        version: 0,
        created_at: now,
        created_by: "alice@example.com".into(),
        updated_at: now,
        updated_by: "alice@example.com".into(),
    }
}

/// The audit event of a flag update, shaped as the conformance suite's `event_for`: ids unique
/// per process and run (the PostgreSQL and distributed stores reject a repeated id).
fn event_for(flag: &Flag) -> AuditEvent {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    AuditEvent {
        id: format!("bench-{}-{}-{n}", std::process::id(), now_millis()),
        seq: 0,
        at: now_millis(),
        actor: Actor {
            kind: "user".into(),
            id: "alice@example.com".into(),
        },
        action: "flag.put".into(),
        kind: ResourceKind::Flag,
        namespace: flag.namespace.clone(),
        key: flag.key.clone(),
        before: None,
        after: None,
        request_id: Some(format!("req-{n}")),
        source_ip: Some("127.0.0.1".into()),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Something that takes writes: a store, or a bare driver.
enum Subject {
    /// `BEGIN; INSERT; COMMIT` on SQLite.
    SqliteInsert(SqlitePool),
    /// `BEGIN; INSERT; COMMIT` on PostgreSQL.
    PostgresInsert(PgPool),
    /// One `put` per write, to the writer's own key under `prefix` (boxed: a client is large).
    EtcdPut { kv: Box<KvClient>, prefix: String },
    /// `FlagStore::commit` of a flag and its audit event.
    Store(Arc<dyn FlagStore>),
}

impl Subject {
    async fn write(&self, fixture: &Fixture, writer: usize) -> Result<(), String> {
        let payload = fixture.payloads[writer].as_str();
        let writer_id = i64::try_from(writer).unwrap_or(i64::MAX);
        match self {
            Subject::SqliteInsert(pool) => {
                let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                sqlx::query("INSERT INTO bench_rows (writer, body) VALUES (?1, ?2)")
                    .bind(writer_id)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())
            }
            Subject::PostgresInsert(pool) => {
                let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
                sqlx::query("INSERT INTO bench_rows (writer, body) VALUES ($1, $2)")
                    .bind(writer_id)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| e.to_string())?;
                tx.commit().await.map_err(|e| e.to_string())
            }
            Subject::EtcdPut { kv, prefix } => KvClient::clone(kv)
                .put(format!("{prefix}raw/{writer}"), payload, None)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Subject::Store(store) => {
                let flag = fixture.flags[writer].clone();
                let event = event_for(&flag);
                store
                    .commit(
                        vec![Write::PutFlag {
                            flag,
                            expect: Expect::Any,
                        }],
                        vec![event],
                    )
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// One run of one subject.
#[derive(Debug, Clone)]
struct Run {
    commits: usize,
    errors: usize,
    elapsed: Duration,
    /// Latency of each successful write, sorted.
    latencies: Vec<Duration>,
    /// What etcd did during the run, when its metrics were readable.
    etcd: Option<EtcdCounters>,
}

impl Run {
    fn rate(&self) -> f64 {
        let commits = u32::try_from(self.commits).unwrap_or(u32::MAX);
        f64::from(commits) / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    fn percentile(&self, p: usize) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p * self.latencies.len()).div_ceil(100).max(1);
        self.latencies[rank.min(self.latencies.len()) - 1]
    }
}

/// Runs `writers` tasks writing to `subject` until `total` writes are done (shared equally) or
/// `limit` has passed; commits/s counts successful writes over the time until the last task
/// finished.
async fn measure(
    subject: &Arc<Subject>,
    fixture: &Arc<Fixture>,
    writers: usize,
    total: usize,
    limit: Duration,
) -> Run {
    let start = Instant::now();
    let deadline = start + limit;
    let per_writer = total / writers;
    let mut tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let subject = Arc::clone(subject);
        let fixture = Arc::clone(fixture);
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            let mut errors = 0;
            for _ in 0..per_writer {
                if Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                let outcome =
                    tokio::time::timeout(WRITE_TIMEOUT, subject.write(&fixture, writer)).await;
                match outcome {
                    Ok(Ok(())) => latencies.push(began.elapsed()),
                    Ok(Err(e)) => {
                        errors += 1;
                        // The first error of a task says what went wrong; the count says how often.
                        if errors == 1 {
                            eprintln!("  writer {writer}: write failed: {e}");
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        eprintln!("  writer {writer}: write timed out after {WRITE_TIMEOUT:?}");
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mut l, e) = joined.expect("a writer task panicked");
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Run {
        commits: latencies.len(),
        errors,
        elapsed,
        latencies,
        etcd: None,
    }
}

/// Counters from etcd's `/metrics`, to see what a commit costs the server: RPCs by kind and
/// WAL fsyncs (etcd syncs its write-ahead log before it acknowledges a write).
#[derive(Debug, Clone, Copy, Default)]
struct EtcdCounters {
    txn: f64,
    range: f64,
    put: f64,
    fsyncs: f64,
    fsync_seconds: f64,
}

impl EtcdCounters {
    /// Reads the counters from `addr` (host:port on loopback); `None` when etcd does not answer.
    async fn read(addr: &str) -> Option<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut reply = String::new();
            stream.read_to_string(&mut reply).await.ok()?;
            Some(reply)
        };
        let reply = tokio::time::timeout(Duration::from_secs(5), fetch)
            .await
            .ok()??;
        let mut counters = Self::default();
        for line in reply.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let kv_rpc = |method: &str| {
                name.starts_with("grpc_server_handled_total{")
                    && name.contains("grpc_service=\"etcdserverpb.KV\"")
                    && name.contains(&format!("grpc_method=\"{method}\""))
            };
            if kv_rpc("Txn") {
                counters.txn += value;
            } else if kv_rpc("Range") {
                counters.range += value;
            } else if kv_rpc("Put") {
                counters.put += value;
            } else if name == "etcd_disk_wal_fsync_duration_seconds_count" {
                counters.fsyncs = value;
            } else if name == "etcd_disk_wal_fsync_duration_seconds_sum" {
                counters.fsync_seconds = value;
            }
        }
        Some(counters)
    }

    fn since(self, before: Self) -> Self {
        Self {
            txn: self.txn - before.txn,
            range: self.range - before.range,
            put: self.put - before.put,
            fsyncs: self.fsyncs - before.fsyncs,
            fsync_seconds: self.fsync_seconds - before.fsync_seconds,
        }
    }
}

/// [`measure`], with etcd's counters read before and after when `metrics` is given.
async fn measure_with(
    subject: &Arc<Subject>,
    fixture: &Arc<Fixture>,
    writers: usize,
    total: usize,
    limit: Duration,
    metrics: Option<&str>,
) -> Run {
    let before = match metrics {
        Some(addr) => EtcdCounters::read(addr).await,
        None => None,
    };
    let mut run = measure(subject, fixture, writers, total, limit).await;
    if let (Some(addr), Some(before)) = (metrics, before) {
        run.etcd = EtcdCounters::read(addr)
            .await
            .map(|after| after.since(before));
    }
    run
}

/// All runs of one subject at one concurrency level.
struct Case {
    backend: &'static str,
    label: &'static str,
    writers: usize,
    runs: Vec<Run>,
}

impl Case {
    fn median_by<T: PartialOrd + Copy>(&self, f: impl Fn(&Run) -> T) -> T {
        let mut values: Vec<T> = self.runs.iter().map(f).collect();
        values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        values[values.len() / 2]
    }

    fn rate(&self) -> f64 {
        self.median_by(Run::rate)
    }

    fn rate_range(&self) -> (f64, f64) {
        let rates = self.runs.iter().map(Run::rate);
        let lo = rates.clone().fold(f64::INFINITY, f64::min);
        let hi = rates.fold(0.0, f64::max);
        (lo, hi)
    }
}

/// Warms up, then runs every subject [`REPEATS`] times at 1 and at [`WRITERS`] writers,
/// rotating which goes first. The first subject is the baseline.
async fn run_group(
    backend: &'static str,
    subjects: &[(&'static str, Arc<Subject>)],
    fixture: &Arc<Fixture>,
    metrics: Option<&str>,
) -> Vec<Case> {
    let mut cases = Vec::new();
    for (writers, total) in [(1, SEQUENTIAL_COMMITS), (WRITERS, CONCURRENT_COMMITS)] {
        for (label, subject) in subjects {
            eprintln!("{backend}: warming up {label} ({writers} writer(s))");
            let warm = measure(subject, fixture, writers, WARMUP_COMMITS, WARMUP_LIMIT).await;
            eprintln!("{backend}: {label} warmed up with {} commits", warm.commits);
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); subjects.len()];
        for repeat in 0..REPEATS {
            for k in 0..subjects.len() {
                let i = (k + repeat) % subjects.len();
                let (label, subject) = &subjects[i];
                let run = measure_with(subject, fixture, writers, total, RUN_LIMIT, metrics).await;
                eprintln!(
                    "{backend}: {label}, {writers} writer(s), run {}: {} commits in {:.2?} \
                     ({:.0}/s, p50 {:.2?}, p99 {:.2?}, {} errors)",
                    repeat + 1,
                    run.commits,
                    run.elapsed,
                    run.rate(),
                    run.percentile(50),
                    run.percentile(99),
                    run.errors
                );
                runs[i].push(run);
            }
        }
        for ((label, _), runs) in subjects.iter().zip(runs) {
            cases.push(Case {
                backend,
                label,
                writers,
                runs,
            });
        }
    }
    cases
}

async fn sqlite(fixture: &Arc<Fixture>) -> Vec<Case> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .expect("open the SQLite store");
    create_namespace(&store).await;
    // The store's own file settings (WAL, synchronous=NORMAL), so the baseline pays the same
    // durability. One connection: SQLite has one writer at a time, and queueing in the pool is
    // how a bare driver serialises writers (the store queues on its writer lock).
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("baseline.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("open the baseline SQLite file");
    sqlx::query(
        "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, \
         body TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("create the baseline table");
    let (journal,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .expect("read journal_mode");
    let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(&pool)
        .await
        .expect("read synchronous");
    eprintln!("sqlite: baseline journal_mode={journal}, synchronous={synchronous} (1 = NORMAL)");
    let cases = run_group(
        "SQLite",
        &[
            ("sqlx INSERT", Arc::new(Subject::SqliteInsert(pool.clone()))),
            ("SqliteStore", Arc::new(Subject::Store(Arc::new(store)))),
        ],
        fixture,
        None,
    )
    .await;
    pool.close().await;
    cases
}

async fn postgres(fixture: &Arc<Fixture>) -> Vec<Case> {
    let (url, db) = vexil_testkit::postgres::fresh_database().await;
    let store = PostgresStore::connect(&url)
        .await
        .expect("connect the PostgreSQL store");
    create_namespace(&store).await;
    // As many connections as the store's pool, so concurrent baseline writers do not queue.
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(&url)
        .await
        .expect("connect the baseline pool");
    sqlx::query(
        "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, writer bigint NOT NULL, \
         body text NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("create the baseline table");
    for setting in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "wal_sync_method",
    ] {
        let (value,): (String,) = sqlx::query_as("SELECT current_setting($1)")
            .bind(setting)
            .fetch_one(&pool)
            .await
            .expect("read a server setting");
        eprintln!("postgres: {setting} = {value}");
    }
    let cases = run_group(
        "PostgreSQL",
        &[
            (
                "sqlx INSERT",
                Arc::new(Subject::PostgresInsert(pool.clone())),
            ),
            (
                "PostgresStore",
                Arc::new(Subject::Store(Arc::new(store.clone()))),
            ),
        ],
        fixture,
        None,
    )
    .await;
    pool.close().await;
    store.close().await;
    drop(db);
    cases
}

/// The etcd group: the bare `put`, the etcd store, and the distributed store (etcd plus the
/// audit relay into PostgreSQL), each under its own prefix.
async fn etcd(fixture: &Arc<Fixture>, endpoint: &str) -> Vec<Case> {
    let endpoints = [endpoint.to_owned()];
    let raw_prefix = vexil_testkit::etcd::unique_prefix();
    let etcd_prefix = vexil_testkit::etcd::unique_prefix();
    let distributed_prefix = vexil_testkit::etcd::unique_prefix();
    let client = Client::connect(&endpoints, None)
        .await
        .expect("connect the baseline etcd client");
    let etcd_store = EtcdStore::connect(&endpoints, &etcd_prefix)
        .await
        .expect("connect the etcd store");
    create_namespace(&etcd_store).await;
    let (url, db) = vexil_testkit::postgres::fresh_database().await;
    let distributed = DistributedStore::connect(&endpoints, &distributed_prefix, &url)
        .await
        .expect("connect the distributed store");
    create_namespace(&distributed).await;
    let cases = run_group(
        "etcd",
        &[
            (
                "etcd put",
                Arc::new(Subject::EtcdPut {
                    kv: Box::new(client.kv_client()),
                    prefix: raw_prefix.clone(),
                }),
            ),
            (
                "EtcdStore",
                Arc::new(Subject::Store(Arc::new(etcd_store.clone()))),
            ),
            (
                "DistributedStore",
                Arc::new(Subject::Store(Arc::new(distributed.clone()))),
            ),
        ],
        fixture,
        metrics_addr(endpoint).as_deref(),
    )
    .await;
    let status = distributed.relay_status();
    eprintln!(
        "distributed: relay healthy={}, outbox entries pending={}",
        status.healthy, status.pending
    );
    distributed.postgres().close().await;
    drop(distributed);
    drop(etcd_store);
    // Leave nothing behind on a shared etcd (`VEXIL_TEST_ETCD`).
    let mut kv = client.kv_client();
    for prefix in [raw_prefix, etcd_prefix, distributed_prefix] {
        if let Err(e) = kv
            .delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await
        {
            eprintln!("etcd: could not delete {prefix}: {e}");
        }
    }
    drop(db);
    cases
}

/// `127.0.0.1:PORT` of an `http://127.0.0.1:PORT` endpoint: metrics are read on loopback only.
fn metrics_addr(endpoint: &str) -> Option<String> {
    let addr = endpoint.strip_prefix("http://")?.trim_end_matches('/');
    addr.starts_with("127.0.0.1:").then(|| addr.to_owned())
}

async fn create_namespace(store: &dyn FlagStore) {
    let write = Write::PutNamespace {
        namespace: namespace(),
        expect: Expect::Absent,
    };
    let mut event = event_for(&flag(0));
    event.action = "namespace.put".into();
    event.kind = ResourceKind::Namespace;
    event.key = NAMESPACE.into();
    store
        .commit(vec![write], vec![event])
        .await
        .expect("create the namespace");
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn print_tables(cases: &[Case]) {
    let baseline = |c: &Case| {
        cases
            .iter()
            .find(|b| b.backend == c.backend && b.writers == c.writers)
            .expect("every group has a baseline")
    };
    println!(
        "\n### 1 writer (sequential), median of {REPEATS} runs\n\n\
         | backend | subject | commits per run | commits/s (min–max) | p50 | p99 | \
         / baseline (commits/s) | errors |\n|---|---|---|---|---|---|---|---|"
    );
    for c in cases.iter().filter(|c| c.writers == 1) {
        print_row(c, baseline(c));
    }
    println!(
        "\n### {WRITERS} concurrent writers ({WRITERS} flags), median of {REPEATS} runs\n\n\
         | backend | subject | commits per run | commits/s (min–max) | p50 | p99 | \
         / baseline (commits/s) | errors |\n|---|---|---|---|---|---|---|---|"
    );
    for c in cases.iter().filter(|c| c.writers == WRITERS) {
        print_row(c, baseline(c));
    }
    print_etcd_counters(cases);
    let rate = |label: &str, writers: usize| {
        cases
            .iter()
            .find(|c| c.label == label && c.writers == writers)
            .map(Case::rate)
    };
    for writers in [1, WRITERS] {
        if let (Some(d), Some(e)) = (
            rate("DistributedStore", writers),
            rate("EtcdStore", writers),
        ) {
            println!(
                "\nDistributedStore / EtcdStore, {writers} writer(s): {:.2} (commits/s)",
                d / e
            );
        }
    }
}

/// Per successful commit, medians over the runs: what etcd served and synced.
fn print_etcd_counters(cases: &[Case]) {
    let measured: Vec<&Case> = cases
        .iter()
        .filter(|c| c.runs.iter().all(|r| r.etcd.is_some()))
        .collect();
    if measured.is_empty() {
        return;
    }
    println!(
        "\n### etcd server counters per commit (median of {REPEATS} runs)\n\n\
         | subject | writers | Txn RPCs | Range RPCs | Put RPCs | WAL fsyncs | mean WAL fsync |\n\
         |---|---|---|---|---|---|---|"
    );
    for c in measured {
        let per_commit = |f: fn(&EtcdCounters) -> f64| {
            c.median_by(|r| {
                let commits = f64::from(u32::try_from(r.commits).unwrap_or(u32::MAX)).max(1.0);
                r.etcd.as_ref().map_or(0.0, f) / commits
            })
        };
        let fsync_ms = c.median_by(|r| {
            r.etcd
                .map_or(0.0, |e| e.fsync_seconds * 1000.0 / e.fsyncs.max(1.0))
        });
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {fsync_ms:.2} ms |",
            c.label,
            c.writers,
            per_commit(|e| e.txn),
            per_commit(|e| e.range),
            per_commit(|e| e.put),
            per_commit(|e| e.fsyncs),
        );
    }
}

fn print_row(c: &Case, baseline: &Case) {
    let (lo, hi) = c.rate_range();
    let commits = c.median_by(|r| r.commits);
    let errors: usize = c.runs.iter().map(|r| r.errors).sum();
    let ratio = if std::ptr::eq(c, baseline) {
        "1".to_owned()
    } else {
        format!("{:.2}", c.rate() / baseline.rate())
    };
    // Medians of each run's percentiles; with concurrent writers they include queueing.
    let (p50, p99) = (
        ms(c.median_by(|r| r.percentile(50))),
        ms(c.median_by(|r| r.percentile(99))),
    );
    println!(
        "| {} | {} | {commits} | {:.0} ({lo:.0}–{hi:.0}) | {p50} | {p99} | {ratio} | {errors} |",
        c.backend,
        c.label,
        c.rate()
    );
}

fn main() {
    let backends: BTreeSet<String> = std::env::var("BACKENDS")
        .unwrap_or_else(|_| "sqlite,postgres,etcd".into())
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    // Blocking (it may start a private etcd), so before the runtime.
    let endpoint = backends
        .contains("etcd")
        .then(vexil_testkit::etcd::endpoint);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let fixture = Arc::new(Fixture::new());
    eprintln!(
        "flag document: {} bytes of JSON; {} worker threads",
        fixture.payloads[0].len(),
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let mut cases = Vec::new();
    runtime.block_on(async {
        if backends.contains("sqlite") {
            cases.extend(sqlite(&fixture).await);
        }
        if backends.contains("postgres") {
            cases.extend(postgres(&fixture).await);
        }
        if let Some(endpoint) = &endpoint {
            eprintln!("etcd: {endpoint}");
            cases.extend(etcd(&fixture, endpoint).await);
        }
    });
    print_tables(&cases);
}
