//! The OpenAPI document: checked in, served, complete, and consistent with what the binary
//! routes. Regenerate the checked-in copy with
//! `VEXIL_UPDATE_OPENAPI=1 cargo test -p vexil-server openapi`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::fixtures::{Server, client};

const REGENERATE: &str = "VEXIL_UPDATE_OPENAPI=1 cargo test -p vexil-server openapi";

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn generated() -> Value {
    serde_json::from_str(&vexil_server::http::docs::openapi_json()).expect("generated JSON")
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every (METHOD, path) the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(m).is_some() {
                out.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every route of DESIGN.md §4, implemented or not: the candidates the coverage test probes.
/// A route the binary serves must be documented; one it does not serve must not be.
const DESIGN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/auth/login"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/{id}"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/users/{name}"),
    ("PATCH", "/api/v1/users/{name}"),
    ("DELETE", "/api/v1/users/{name}"),
    ("GET", "/api/v1/roles"),
    ("POST", "/api/v1/roles"),
    ("GET", "/api/v1/roles/{name}"),
    ("PUT", "/api/v1/roles/{name}"),
    ("DELETE", "/api/v1/roles/{name}"),
    ("GET", "/api/v1/bindings"),
    ("POST", "/api/v1/bindings"),
    ("DELETE", "/api/v1/bindings/{id}"),
    ("GET", "/api/v1/namespaces"),
    ("POST", "/api/v1/namespaces"),
    ("GET", "/api/v1/namespaces/{ns}"),
    ("PUT", "/api/v1/namespaces/{ns}"),
    ("DELETE", "/api/v1/namespaces/{ns}"),
    ("GET", "/api/v1/namespaces/{ns}/flags"),
    ("POST", "/api/v1/namespaces/{ns}/flags"),
    ("GET", "/api/v1/namespaces/{ns}/flags/{key}"),
    ("PUT", "/api/v1/namespaces/{ns}/flags/{key}"),
    ("PATCH", "/api/v1/namespaces/{ns}/flags/{key}"),
    ("DELETE", "/api/v1/namespaces/{ns}/flags/{key}"),
    ("POST", "/api/v1/namespaces/{ns}/flags/{key}/enable"),
    ("POST", "/api/v1/namespaces/{ns}/flags/{key}/disable"),
    ("GET", "/api/v1/namespaces/{ns}/segments"),
    ("POST", "/api/v1/namespaces/{ns}/segments"),
    ("GET", "/api/v1/namespaces/{ns}/segments/{key}"),
    ("PUT", "/api/v1/namespaces/{ns}/segments/{key}"),
    ("DELETE", "/api/v1/namespaces/{ns}/segments/{key}"),
    ("GET", "/api/v1/namespaces/{ns}/export"),
    ("POST", "/api/v1/namespaces/{ns}/import"),
    ("POST", "/api/v1/namespaces/{ns}/evaluate"),
    ("GET", "/api/v1/namespaces/{ns}/configs"),
    ("GET", "/api/v1/namespaces/{ns}/configs/{key}"),
    ("PUT", "/api/v1/namespaces/{ns}/configs/{key}"),
    ("DELETE", "/api/v1/namespaces/{ns}/configs/{key}"),
    ("GET", "/api/v1/namespaces/{ns}/configs/{key}/versions"),
    ("POST", "/api/v1/namespaces/{ns}/configs/{key}/rollback"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/export"),
    ("GET", "/api/v1/audit/verify"),
    ("GET", "/api/v1/namespaces/{ns}/watch"),
    ("POST", "/ofrep/v1/evaluate/flags/{key}"),
    ("POST", "/ofrep/v1/evaluate/flags"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/docs"),
];

/// A concrete URL for a templated path. The values name nothing that exists, so a probe
/// changes nothing: writes fail on the missing namespace, or earlier on the empty body.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
        let name = &rest[i + 1..j - 1];
        out.push_str(match name {
            "file" => "index.html",
            _ => "zz-probe-missing",
        });
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

/// What the server answers `method url` with: (status, whether the router had no such path).
async fn probe(s: &Server, method: &str, path: &str) -> (u16, bool) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let resp = s
        .http
        .request(m, s.url(&concrete(path)))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let unrouted = status == 404
        && body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no route for "));
    (status, unrouted)
}

#[test]
fn the_checked_in_openapi_document_matches_the_one_generated_from_the_code() {
    let text = vexil_server::http::docs::openapi_json();
    let path = checked_in_path();
    if std::env::var_os("VEXIL_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &text).expect("write docs/openapi.json");
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == text,
        "docs/openapi.json is out of date with the code (handlers' #[utoipa::path] attributes \
         or src/http/schema.rs changed). Regenerate it with\n\n    {REGENERATE}\n\nand commit \
         the result."
    );
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_in_it_resolves() {
    let doc = generated();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    fn walk(v: &Value, doc: &Value, broken: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    let target = r
                        .strip_prefix('#')
                        .and_then(|p| doc.pointer(p))
                        .filter(|t| !t.is_null());
                    if target.is_none() {
                        broken.push(r.clone());
                    }
                }
                // Examples are data: a JsonLogic `{"$ref": segment}` in one is not a reference.
                m.iter()
                    .filter(|(k, _)| *k != "example" && *k != "examples")
                    .for_each(|(_, x)| walk(x, doc, broken));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, doc, broken)),
            _ => {}
        }
    }
    let mut broken = Vec::new();
    walk(&doc, &doc, &mut broken);
    assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
}

#[test]
fn every_operation_has_a_unique_id_a_tag_and_its_error_responses() {
    let doc = generated();
    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{method} {path}: operationId {id:?} repeats"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path}: no tag"
        );
        let responses = op["responses"].as_object().expect("responses");
        let has = |s: &str| responses.contains_key(s);
        assert!(
            responses
                .keys()
                // 101 is the success of a WebSocket upgrade.
                .any(|s| s.starts_with('2') || s.starts_with('3') || s == "101"),
            "{method} {path}: no success response"
        );
        // A JSON body can be too large, of the wrong type, or malformed.
        if op.get("requestBody").is_some() {
            for s in ["400", "413"] {
                assert!(has(s), "{method} {path}: takes a body but documents no {s}");
            }
            if path.starts_with("/api/") {
                assert!(
                    has("415"),
                    "{method} {path}: takes a body but documents no 415"
                );
            }
        }
        // Conditional writes can be stale.
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        if params.iter().any(|p| p["name"] == "If-Match") {
            assert!(
                has("412"),
                "{method} {path}: takes If-Match but documents no 412"
            );
        }
        // Anything under a namespace can name a missing one, and the store can be down.
        if path.contains("{ns}") {
            assert!(has("404"), "{method} {path}: documents no 404");
            assert!(has("503"), "{method} {path}: documents no 503");
        }
    }
}

#[tokio::test]
async fn every_route_the_server_answers_is_in_the_document_and_every_documented_one_is_served() {
    let doc = generated();
    let documented = operations(&doc);
    let s = Server::start().await;

    // Documented → served, and no other method on a documented path.
    let mut failures = Vec::new();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let is_documented = documented.contains(&(method.to_owned(), path.clone()));
            let (status, unrouted) = probe(&s, method, path).await;
            if is_documented && (unrouted || status == 405) {
                failures.push(format!(
                    "{method} {path} is documented but not served ({status})"
                ));
            }
            if !is_documented && status != 405 {
                failures.push(format!(
                    "{method} {path} is served ({status}) but not documented"
                ));
            }
        }
    }

    // Every route of DESIGN.md §4: served ⇔ documented.
    for (method, path) in DESIGN_ROUTES {
        let is_documented = documented.contains(&((*method).to_owned(), (*path).to_owned()));
        let (status, unrouted) = probe(&s, method, path).await;
        let served = !unrouted && status != 405;
        if served != is_documented {
            failures.push(format!(
                "{method} {path}: served={served} ({status}) but documented={is_documented}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn get_openapi_json_serves_the_checked_in_openapi_3_1_document() {
    let s = Server::start().await;
    let resp = s
        .http
        .get(s.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let served: Value = resp.json().await.expect("JSON");
    assert!(
        served["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        served["openapi"]
    );
    assert_eq!(served, generated());
    if std::env::var_os("VEXIL_UPDATE_OPENAPI").is_none() {
        let on_disk: Value =
            serde_json::from_str(&std::fs::read_to_string(checked_in_path()).unwrap_or_default())
                .unwrap_or(Value::Null);
        assert!(
            served == on_disk,
            "the served document differs from docs/openapi.json; run {REGENERATE}"
        );
    }
}

#[tokio::test]
async fn docs_serves_swagger_ui_reading_the_served_document() {
    let s = Server::start().await;
    // `/docs` redirects to `/docs/` (the client follows it).
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_redirects
        .get(s.url("/docs"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(
        resp.headers().get("location").and_then(|v| v.to_str().ok()),
        Some("docs/")
    );

    for path in ["/docs", "/docs/"] {
        let resp = client().get(s.url(path)).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}: {:?}",
            resp.headers().get("content-type")
        );
        let html = resp.text().await.unwrap_or_default();
        assert!(html.contains("swagger-ui"), "{path}: {html}");
    }

    let init = client()
        .get(s.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .expect("request");
    assert_eq!(init.status().as_u16(), 200);
    let js = init.text().await.unwrap_or_default();
    assert!(js.contains("/api/v1/openapi.json"), "{js}");

    let (status, body) = crate::fixtures::send(s.http.get(s.url("/docs/no-such-file.js"))).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (404, Some("urn:vexil:problem:not-found"))
    );
}
