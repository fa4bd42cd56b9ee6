//! A real OpenFeature client against the real server: the Python SDK (`openfeature-sdk`) with
//! its OFREP provider (`openfeature-provider-ofrep`), from the repository's `.venv`.
//!
//! `tests/python/ofrep_client.py` evaluates each flag through the SDK and prints what the
//! application sees, one JSON line per evaluation; the assertions are here. The provider is
//! strict where the protocol leaves room: it reads `variant` unconditionally and refuses an
//! integer for a float flag, so these tests also pin the wire format (a `variant` on every
//! success, floats written with a decimal point).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::fixtures::{Server, send};

/// The flagd file the test imports, as text: the server parses these numbers itself (`1.0`,
/// `1e2`), so a float that came back as `1` would be the server's doing.
const FLAGD_FILE: &str = r##"{
  "$schema": "https://flagd.dev/schema/v0/flags.json",
  "flags": {
    "py-bool": {
      "state": "ENABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    },
    "py-string": {
      "state": "ENABLED",
      "variants": {"red": "#ff0000", "blue": "#0000ff"},
      "defaultVariant": "blue"
    },
    "py-int": {
      "state": "ENABLED",
      "variants": {"small": 10, "big": 1000},
      "defaultVariant": "big"
    },
    "py-float": {
      "state": "ENABLED",
      "variants": {"one": 1.0, "half": 0.5, "hundred": 1e2},
      "defaultVariant": "one",
      "targeting": {"if": [{"==": [{"var": "plan"}, "max"]}, "hundred", null]}
    },
    "py-object": {
      "state": "ENABLED",
      "variants": {"cfg": {"retries": 3, "ratio": 1.0, "name": "checkout"}},
      "defaultVariant": "cfg"
    },
    "py-disabled": {
      "state": "DISABLED",
      "variants": {"on": true, "off": false},
      "defaultVariant": "on"
    },
    "py-targeted": {
      "state": "ENABLED",
      "variants": {"gold": "gold-tier", "basic": "basic-tier"},
      "defaultVariant": "basic",
      "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "gold", null]}
    }
  }
}"##;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `.venv/bin/python`, created by `scripts/setup-python.sh` when it is missing or lacks the
/// clients (so plain `cargo test` works without `scripts/test.sh`). Once per test binary.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let ready = python.exists()
            && Command::new(&python)
                .args([
                    "-c",
                    "import openfeature, openfeature.contrib.provider.ofrep",
                ])
                .status()
                .is_ok_and(|s| s.success());
        if !ready {
            let out = Command::new("bash")
                .arg(root.join("scripts/setup-python.sh"))
                .output()
                .expect("cannot run scripts/setup-python.sh");
            assert!(
                out.status.success(),
                "scripts/setup-python.sh failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        python
    })
}

/// Runs the client script against `base` with the API token `token` (sent as OFREP's
/// `X-API-Key`); returns its JSON lines (after checking it exited 0).
async fn run_client(base: &str, token: &str) -> Vec<Value> {
    let token = token.to_owned();
    let python = python().to_path_buf();
    let script = repo_root().join("tests/python/ofrep_client.py");
    let base = base.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(base)
            .env("VEXIL_TOKEN", token)
            .output()
            .expect("cannot run the Python client")
    })
    .await
    .expect("client thread");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn the_openfeature_python_sdk_resolves_every_flag_type_over_ofrep() {
    let s = Server::start().await;
    let (status, outcome) = send(
        s.http
            .post(s.url("/api/v1/namespaces/default/import"))
            .header("content-type", "application/json")
            .body(FLAGD_FILE),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["diff"]["added"].as_array().map(Vec::len), Some(7));
    assert_eq!(outcome["warnings"], json!([]));

    // An SDK's credential: an `evaluator` token for this namespace, nothing more.
    let token = s.api_token("evaluator", "default").await;
    let lines = run_client(&s.process.base, &token).await;
    // (flag, value, reason, variant), in the script's order.
    let expected = [
        ("py-bool", json!(true), "STATIC", "on"),
        ("py-string", json!("#0000ff"), "STATIC", "blue"),
        ("py-int", json!(1000), "STATIC", "big"),
        ("py-float", json!(1.0), "DEFAULT", "one"),
        ("py-float", json!(100.0), "TARGETING_MATCH", "hundred"),
        (
            "py-object",
            json!({"retries": 3, "ratio": 1.0, "name": "checkout"}),
            "STATIC",
            "cfg",
        ),
        // Disabled: no value from the server, so the SDK returns the code default (false,
        // although the flag's default variant is `on`), with an empty variant.
        ("py-disabled", json!(false), "DISABLED", ""),
        ("py-targeted", json!("gold-tier"), "TARGETING_MATCH", "gold"),
        ("py-targeted", json!("basic-tier"), "DEFAULT", "basic"),
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, (key, value, reason, variant)) in lines.iter().zip(expected) {
        assert_eq!(line["flag_key"], key, "{line}");
        // `Value` equality tells 1.0 from 1: a float must arrive as a float.
        assert_eq!(line["value"], value, "{line}");
        assert_eq!(line["reason"], reason, "{line}");
        assert_eq!(line["variant"], variant, "{line}");
        assert_eq!(line["error_code"], Value::Null, "{line}");
    }
    assert!(lines[3]["value"].is_f64() && lines[4]["value"].is_f64());
    assert!(lines[5]["value"]["ratio"].is_f64());
    assert!(lines[2]["value"].is_u64() && lines[5]["value"]["retries"].is_u64());
}

#[tokio::test]
async fn ofrep_writes_floats_with_a_decimal_point_and_always_sends_a_variant() {
    let s = Server::start().await;
    let (status, outcome) = send(
        s.http
            .post(s.url("/api/v1/namespaces/default/import"))
            .header("content-type", "application/json")
            .body(FLAGD_FILE),
    )
    .await;
    assert_eq!(status, 200, "{outcome}");
    let raw = |path: String, body: Value| {
        let req = s.http.post(s.url(&path)).json(&body);
        async move {
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status().as_u16(), 200);
            resp.text().await.expect("body")
        }
    };
    let one = raw(
        "/ofrep/v1/evaluate/flags/py-float".into(),
        json!({"context": {}}),
    )
    .await;
    assert!(one.contains(r#""value":1.0"#), "{one}");
    let hundred = raw(
        "/ofrep/v1/evaluate/flags/py-float".into(),
        json!({"context": {"plan": "max"}}),
    )
    .await;
    assert!(hundred.contains(r#""value":100.0"#), "{hundred}");
    let object = raw(
        "/ofrep/v1/evaluate/flags/py-object".into(),
        json!({"context": {}}),
    )
    .await;
    assert!(object.contains(r#""ratio":1.0"#), "{object}");
    let disabled = raw(
        "/ofrep/v1/evaluate/flags/py-disabled".into(),
        json!({"context": {}}),
    )
    .await;
    assert!(disabled.contains(r#""variant":"""#), "{disabled}");
    assert!(!disabled.contains(r#""value""#), "{disabled}");
    let bulk = raw("/ofrep/v1/evaluate/flags".into(), json!({"context": {}})).await;
    assert!(bulk.contains(r#""value":1.0"#), "{bulk}");
    let bulk: Value = serde_json::from_str(&bulk).expect("bulk JSON");
    let flags = bulk["flags"].as_array().cloned().unwrap_or_default();
    assert_eq!(flags.len(), 7, "{bulk}");
    for f in &flags {
        assert!(f["variant"].is_string(), "no variant: {f}");
    }
    // The same float survives the round trip through the store and the export.
    let (status, flag) = s.get("/api/v1/namespaces/default/flags/py-float").await;
    assert_eq!(status, 200);
    assert!(flag["variants"]["one"].is_f64(), "{flag}");
    let export = s
        .http
        .get(s.url("/api/v1/namespaces/default/export"))
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("export body");
    assert!(export.contains(r#""one": 1.0"#), "{export}");
}
