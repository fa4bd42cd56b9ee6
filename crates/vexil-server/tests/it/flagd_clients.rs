//! The real OpenFeature flagd providers against the real server, over its gRPC port:
//!
//! - Python `openfeature-provider-flagd` (from the repository's `.venv`) in RPC mode with its
//!   cache off (`flagd.evaluation.v2` typed resolves, EventStream) and in IN_PROCESS mode
//!   (`flagd.sync.v1` SyncFlags and GetMetadata, evaluated by the provider itself);
//! - JavaScript `@openfeature/flagd-provider` (from `tests/node/node_modules`) in RPC mode.
//!
//! Each client script (`tests/python/flagd_*_client.py`, `tests/node/flagd_rpc_client.mjs`)
//! evaluates every flag type and a targeting match through the SDK, then changes a flag over the
//! REST API itself and times how long until the provider shows it (RPC: the
//! configuration-changed event; in-process: the new value from a local evaluation). It prints
//! one JSON line per result; the assertions are here, including that a fractional split lands
//! in the same bucket as the server's own evaluation (which for an in-process provider means
//! the server and the provider's evaluator run the same bucketing algorithm).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{Server, send};

/// The flagd file every test imports, as text: the server parses these numbers itself (`1.0`,
/// `1e2`), so a float that reached a client as an integer would be the server's doing.
const FLAGD_FILE: &str = r##"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "fl-bool": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    },
    "fl-string": {
      "state": "ENABLED",
      "variants": {"red": "#ff0000", "blue": "#0000ff"},
      "defaultVariant": "blue"
    },
    "fl-int": {
      "state": "ENABLED",
      "variants": {"small": 10, "big": 1000},
      "defaultVariant": "big"
    },
    "fl-float": {
      "state": "ENABLED",
      "variants": {"one": 1.0, "half": 0.5, "hundred": 1e2},
      "defaultVariant": "one",
      "targeting": {"if": [{"==": [{"var": "plan"}, "max"]}, "hundred", null]}
    },
    "fl-object": {
      "state": "ENABLED",
      "variants": {"cfg": {"retries": 3, "ratio": 0.5, "name": "checkout"}},
      "defaultVariant": "cfg"
    },
    "fl-targeted": {
      "state": "ENABLED",
      "variants": {"gold": "gold-tier", "basic": "basic-tier"},
      "defaultVariant": "basic",
      "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "gold", null]}
    },
    "fl-disabled": {
      "state": "DISABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    },
    "fl-split": {
      "state": "ENABLED",
      "variants": {"a": "a", "b": "b", "c": "c", "d": "d"},
      "defaultVariant": "a",
      "targeting": {"fractional": [["a", 25], ["b", 25], ["c", 25], ["d", 25]]}
    }
  }
}"##;

/// The contexts the scripts evaluate `fl-split` with, in their order.
fn split_contexts() -> [Value; 3] {
    [
        json!({"targetingKey": "user-1"}),
        json!({"targetingKey": "user-2", "tier": "gold"}),
        json!({"targetingKey": "user-3", "plan": "max"}),
    ]
}

/// The bound the issue sets on a change reaching a connected provider.
const CHANGE_WITHIN_MS: f64 = 1000.0;

/// How long one client script may run before it is killed (it gives up on its own after 10 s
/// of waiting for the change; this only keeps a wedged interpreter from hanging the suite).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs a setup script, failing the test with its output if it fails.
fn setup(script: &str) {
    let out = Command::new("bash")
        .arg(repo_root().join(script))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `.venv/bin/python` with the flagd provider, created by `scripts/setup-python.sh` when it is
/// missing (so plain `cargo test` works without `scripts/test.sh`). Once per test binary.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = repo_root().join(".venv/bin/python");
        let ready = python.exists()
            && Command::new(&python)
                .args(["-c", "import openfeature.contrib.provider.flagd"])
                .status()
                .is_ok_and(|s| s.success());
        if !ready {
            setup("scripts/setup-python.sh");
        }
        python
    })
}

/// `tests/node`, with `node_modules` installed from the lock file by `scripts/setup-node.sh`
/// (which does nothing when it is already current). Once per test binary.
fn node_dir() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        setup("scripts/setup-node.sh");
        repo_root().join("tests/node")
    })
}

/// Host and port of the server's gRPC listener (`http://127.0.0.1:PORT`).
fn grpc_host_port(s: &Server) -> (String, String) {
    let url = s
        .process
        .grpc
        .clone()
        .expect("the server logged its gRPC address");
    let addr = url.trim_start_matches("http://");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    (host.to_owned(), port.to_owned())
}

/// Runs `program args…` in `dir`, killing it after [`CLIENT_TIMEOUT`]; returns its JSON lines
/// after checking that it exited 0.
///
/// The clients change a flag over REST as `admin` with `VEXIL_ADMIN_TOKEN`; the flagd providers
/// themselves send no credentials, so the namespaces they read opt in to anonymous evaluation.
async fn run_client(
    program: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    admin_token: String,
) -> Vec<Value> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&program)
            .args(&args)
            .env("VEXIL_ADMIN_TOKEN", &admin_token)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        // Drain both pipes on their own threads so a chatty client never blocks on a full pipe.
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = r.read_to_string(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("stdout")));
        let err = drain(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for the client") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    })
    .await
    .expect("client thread");
    let Some(status) = status else {
        panic!("{what} did not finish within {CLIENT_TIMEOUT:?}:\n{stdout}\n{stderr}");
    };
    assert!(
        status.success(),
        "{what} failed ({status}):\n{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

async fn run_python(s: &Server, script: &str, selector: Option<&str>) -> Vec<Value> {
    let (host, port) = grpc_host_port(s);
    let mut args = vec![
        repo_root()
            .join("tests/python")
            .join(script)
            .display()
            .to_string(),
        host,
        port,
        s.process.base.clone(),
    ];
    args.extend(selector.map(str::to_owned));
    run_client(python().to_path_buf(), args, repo_root(), s.token.clone()).await
}

async fn run_node(s: &Server, script: &str) -> Vec<Value> {
    let (host, port) = grpc_host_port(s);
    let dir = node_dir().to_path_buf();
    let args = vec![script.to_owned(), host, port, s.process.base.clone()];
    run_client(PathBuf::from("node"), args, dir, s.token.clone()).await
}

/// A fresh server with [`FLAGD_FILE`] imported into `default`.
async fn server_with_flags() -> Server {
    let s = Server::start().await;
    import(&s, "default", FLAGD_FILE).await;
    s
}

/// A fresh server bucketing `fractional` with flagd's CBOR-based successor algorithm
/// (`VEXIL_FRACTIONAL=v3`), the one the Python provider's in-process evaluator
/// (`openfeature-flagd-core` 2) implements: an in-process provider buckets locally, so its
/// splits agree with the server's own evaluations only when both run the same algorithm.
/// (The server's default, v2, is what `@openfeature/flagd-core` 4 implements.)
async fn server_bucketing_like_python_in_process() -> Server {
    let s = Server::start_with(|o| o.env("VEXIL_FRACTIONAL", "v3")).await;
    s.open_anonymous_evaluation("default").await;
    s
}

async fn import(s: &Server, ns: &str, doc: &str) {
    if ns != "default" {
        let (status, body) = s.post("/api/v1/namespaces", &json!({"key": ns})).await;
        assert_eq!(status, 201, "{body}");
    }
    s.open_anonymous_evaluation(ns).await;
    let (status, outcome) = send(
        s.http
            .post(s.url(&format!("/api/v1/namespaces/{ns}/import")))
            .header("content-type", "application/json")
            .body(doc.to_owned()),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["diff"]["added"].as_array().map(Vec::len), Some(8));
    assert_eq!(outcome["warnings"], json!([]));
}

/// One expected evaluation line: flag, value, reason, variant (`None`: the client reports none),
/// and the type the client's language gave the value.
type Expected = (
    &'static str,
    Value,
    &'static str,
    Option<&'static str>,
    &'static str,
);

/// The evaluation lines every script prints, in its order, for a client that keeps Python's
/// types. `object` is the object flag's value as this client sees it.
fn python_expected(object: Value) -> Vec<Expected> {
    vec![
        ("fl-bool", json!(true), "STATIC", Some("on"), "bool"),
        ("fl-string", json!("#0000ff"), "STATIC", Some("blue"), "str"),
        ("fl-int", json!(1000), "STATIC", Some("big"), "int"),
        // A targeting rule that returned null: the default variant, reason DEFAULT.
        ("fl-float", json!(1.0), "DEFAULT", Some("one"), "float"),
        (
            "fl-float",
            json!(100.0),
            "TARGETING_MATCH",
            Some("hundred"),
            "float",
        ),
        ("fl-object", object, "STATIC", Some("cfg"), "dict"),
        (
            "fl-targeted",
            json!("gold-tier"),
            "TARGETING_MATCH",
            Some("gold"),
            "str",
        ),
        (
            "fl-targeted",
            json!("basic-tier"),
            "DEFAULT",
            Some("basic"),
            "str",
        ),
        // Disabled: no value, so the SDK returns the code default (false, although the flag's
        // default variant is `on`), and no variant.
        ("fl-disabled", json!(false), "DISABLED", None, "bool"),
    ]
}

/// The `fl-split` variant the server itself (over OFREP, in `ns`) picks for each of
/// [`split_contexts`].
async fn server_split(s: &Server, ns: &str) -> Vec<String> {
    let mut picked = Vec::new();
    for ctx in split_contexts() {
        let (status, r) = send(
            s.http
                .post(s.url("/ofrep/v1/evaluate/flags/fl-split"))
                .header("x-vexil-namespace", ns)
                .json(&json!({"context": ctx})),
        )
        .await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["reason"], "TARGETING_MATCH", "{r}");
        picked.push(r["variant"].as_str().expect("a variant").to_owned());
    }
    picked
}

/// Asserts the evaluation lines against `expected`, then the `fl-split` lines against the
/// server's own picks in `ns` (`string_type`: what the client's language calls a string);
/// returns the lines after them.
async fn check_evaluations<'a>(
    s: &Server,
    ns: &str,
    lines: &'a [Value],
    expected: &[Expected],
    string_type: &str,
) -> &'a [Value] {
    let split = server_split(s, ns).await;
    let rest = check_fixed(lines, expected);
    assert!(rest.len() > split.len(), "{lines:#?}");
    for (line, variant) in rest.iter().zip(&split) {
        assert_eq!(line["kind"], "evaluation", "{line}");
        assert_eq!(line["flag_key"], "fl-split", "{line}");
        assert_eq!(line["value"], json!(variant), "{line}");
        assert_eq!(line["variant"], json!(variant), "{line}");
        assert_eq!(line["type"], string_type, "{line}");
        assert_eq!(line["reason"], "TARGETING_MATCH", "{line}");
        assert_eq!(line["error_code"], Value::Null, "{line}");
    }
    &rest[split.len()..]
}

/// Asserts the first lines against `expected`; returns the lines after them.
fn check_fixed<'a>(lines: &'a [Value], expected: &[Expected]) -> &'a [Value] {
    assert!(lines.len() > expected.len(), "{lines:#?}");
    for (line, (key, value, reason, variant, ty)) in lines.iter().zip(expected) {
        assert_eq!(line["kind"], "evaluation", "{line}");
        assert_eq!(line["flag_key"], *key, "{line}");
        // `Value` equality tells 1.0 from 1: a float must arrive as a float.
        assert_eq!(line["value"], *value, "{line}");
        assert_eq!(line["type"], *ty, "{line}");
        assert_eq!(line["reason"], *reason, "{line}");
        assert_eq!(line["variant"], json!(variant), "{line}");
        assert_eq!(line["error_code"], Value::Null, "{line}");
    }
    &lines[expected.len()..]
}

/// Asserts the line reporting the REST change: the flag's new value, named by the provider's
/// configuration-changed event, within [`CHANGE_WITHIN_MS`] (`field`: which measurement).
fn check_change(rest: &[Value], field: &str) -> f64 {
    assert_eq!(rest.len(), 1, "{rest:#?}");
    let line = &rest[0];
    assert_eq!(line["kind"], "change", "{line}");
    assert_eq!(line["flag_key"], "fl-string", "{line}");
    assert_eq!(line["value"], "#ff0000", "{line}");
    assert_eq!(line["variant"], "red", "{line}");
    assert_eq!(line["reason"], "STATIC", "{line}");
    assert_eq!(line["error_code"], Value::Null, "{line}");
    assert_eq!(line["flags_changed"], json!(["fl-string"]), "{line}");
    let ms = line[field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {field}: {line}"));
    assert!(
        ms < CHANGE_WITHIN_MS,
        "the change took {ms} ms to reach the provider (bound {CHANGE_WITHIN_MS} ms): {line}"
    );
    ms
}

#[tokio::test]
async fn python_flagd_rpc_provider_evaluates_every_type_and_sees_changes_within_a_second() {
    let s = server_with_flags().await;
    let lines = run_python(&s, "flagd_rpc_client.py", None).await;
    // google.protobuf.Struct carries numbers as doubles only: over RPC an object's integer
    // arrives as a float (flagd's own RPC mode does the same).
    let object = json!({"retries": 3.0, "ratio": 0.5, "name": "checkout"});
    let rest = check_evaluations(&s, "default", &lines, &python_expected(object), "str").await;
    let ms = check_change(rest, "elapsed_ms");
    eprintln!("python rpc: configuration_change {ms} ms after the PATCH");
}

#[tokio::test]
async fn python_flagd_in_process_provider_syncs_every_type_and_sees_changes_within_a_second() {
    let s = server_bucketing_like_python_in_process().await;
    import(&s, "default", FLAGD_FILE).await;
    let lines = run_python(&s, "flagd_in_process_client.py", None).await;
    // The provider evaluates the synced JSON document itself: integers stay integers.
    let object = json!({"retries": 3, "ratio": 0.5, "name": "checkout"});
    let rest = check_evaluations(&s, "default", &lines, &python_expected(object), "str").await;
    let ms = check_change(rest, "elapsed_ms");
    let event_ms = check_change(rest, "event_ms");
    eprintln!("python in-process: new value {ms} ms, configuration_change {event_ms} ms");
}

#[tokio::test]
async fn node_flagd_rpc_provider_evaluates_every_type_and_sees_changes_within_a_second() {
    let s = server_with_flags().await;
    let lines = run_node(&s, "flagd_rpc_client.mjs").await;
    // JavaScript has one number type and JSON.stringify writes 1.0 as 1: the script reports
    // "integer" for any integral number, so 1.0 and 100.0 read as integers here. The values
    // are still compared exactly as JSON (1 for 1.0).
    let expected: Vec<Expected> = vec![
        ("fl-bool", json!(true), "STATIC", Some("on"), "boolean"),
        (
            "fl-string",
            json!("#0000ff"),
            "STATIC",
            Some("blue"),
            "string",
        ),
        // getNumberDetails resolves through ResolveFloat, even for an integer flag.
        ("fl-int", json!(1000), "STATIC", Some("big"), "integer"),
        ("fl-float", json!(1), "DEFAULT", Some("one"), "integer"),
        (
            "fl-float",
            json!(100),
            "TARGETING_MATCH",
            Some("hundred"),
            "integer",
        ),
        (
            "fl-object",
            json!({"retries": 3, "ratio": 0.5, "name": "checkout"}),
            "STATIC",
            Some("cfg"),
            "object",
        ),
        (
            "fl-targeted",
            json!("gold-tier"),
            "TARGETING_MATCH",
            Some("gold"),
            "string",
        ),
        (
            "fl-targeted",
            json!("basic-tier"),
            "DEFAULT",
            Some("basic"),
            "string",
        ),
        ("fl-disabled", json!(false), "DISABLED", None, "boolean"),
    ];
    let rest = check_evaluations(&s, "default", &lines, &expected, "string").await;
    let ms = check_change(rest, "elapsed_ms");
    eprintln!("node rpc: configuration_change {ms} ms after the PATCH");
}

/// With a selector, both Python modes read (and hear about changes to) that namespace only,
/// with its evaluation context applied: `default` holds a decoy that answers differently.
#[tokio::test]
async fn python_flagd_providers_read_the_namespace_their_selector_names() {
    let s = server_bucketing_like_python_in_process().await;
    let mut decoy: Value = serde_json::from_str(FLAGD_FILE).expect("flagd file");
    for (key, variant) in [
        ("fl-bool", "off"),
        ("fl-string", "red"),
        ("fl-int", "small"),
        ("fl-float", "half"),
        ("fl-targeted", "gold"),
    ] {
        decoy["flags"][key]["defaultVariant"] = json!(variant);
    }
    decoy["flags"]["fl-split"]["targeting"] =
        json!({"fractional": [["d", 25], ["c", 25], ["b", 25], ["a", 25]]});
    import(&s, "default", &decoy.to_string()).await;
    import(&s, "edge", FLAGD_FILE).await;
    // Vexil's namespace context is flagd's static context: the server merges it for RPC, and
    // SyncFlags hands it to an in-process provider as `sync_context`.
    let (status, body) = s
        .put(
            "/api/v1/namespaces/edge",
            &json!({"key": "edge", "evaluationContext": {"plan": "max"}, "anonymousEvaluation": true}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");

    for (script, object) in [
        (
            "flagd_rpc_client.py",
            json!({"retries": 3.0, "ratio": 0.5, "name": "checkout"}),
        ),
        (
            "flagd_in_process_client.py",
            json!({"retries": 3, "ratio": 0.5, "name": "checkout"}),
        ),
    ] {
        let mut expected = python_expected(object);
        // The namespace's `plan: max` matches fl-float's rule for every caller.
        expected[3] = (
            "fl-float",
            json!(100.0),
            "TARGETING_MATCH",
            Some("hundred"),
            "float",
        );
        let lines = run_python(&s, script, Some("edge")).await;
        let rest = check_evaluations(&s, "edge", &lines, &expected, "str").await;
        check_change(rest, "elapsed_ms");
        // Back to blue for the next client.
        let resp = s
            .http
            .patch(s.url("/api/v1/namespaces/edge/flags/fl-string"))
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"defaultVariant": "blue"}"#)
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status().as_u16(), 200, "{script}");
    }
    // The decoy was never touched.
    let (_, flag) = s.get("/api/v1/namespaces/default/flags/fl-string").await;
    assert_eq!(flag["defaultVariant"], "red", "{flag}");
}
