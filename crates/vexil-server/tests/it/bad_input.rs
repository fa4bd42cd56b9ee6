//! Bad input, end to end: every case gets its exact 4xx with a problem+json body (or OFREP's
//! error body on `/ofrep/v1`) that names the offending field, never a 500, and leaves the store
//! exactly as it was: the same flags, segments and namespaces, no new audit event, and the same
//! applied revision. Each test ends by checking that the server is still healthy and logged no
//! panic and no error.

use reqwest::Method;
use serde_json::{Value, json};

use crate::fixtures::{Server, bool_flag};

const FLAGS: &str = "/api/v1/namespaces/default/flags";
const SEED: &str = "/api/v1/namespaces/default/flags/seed";
const SEGMENTS: &str = "/api/v1/namespaces/default/segments";
const IMPORT: &str = "/api/v1/namespaces/default/import";
const OFREP_ONE: &str = "/ofrep/v1/evaluate/flags/seed";
const OFREP_ALL: &str = "/ofrep/v1/evaluate/flags";
/// The server's body limit (`vexil_server::http::BODY_LIMIT`).
const MIB: usize = 1024 * 1024;

/// A response with the headers this file checks.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: Value,
    text: String,
}

/// Sends `method path` with an optional content type, raw body and extra headers.
async fn call(
    s: &Server,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = s.http.request(method.clone(), s.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert!(
        status < 500,
        "{method} {path} answered {status} (a server error is never the answer to bad input): {text}"
    );
    Reply {
        status,
        content_type,
        body,
        text,
    }
}

async fn json_call(s: &Server, method: Method, path: &str, body: &Value) -> Reply {
    call(
        s,
        method,
        path,
        Some("application/json"),
        body.to_string(),
        &[],
    )
    .await
}

/// Asserts a problem+json answer: exact status, media type, `type` URN, and a `title`/`detail`.
fn assert_problem(r: &Reply, status: u16, slug: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.content_type, "application/problem+json",
        "status {status}: {}",
        r.text
    );
    assert_eq!(
        r.body["type"],
        format!("urn:vexil:problem:{slug}"),
        "{}",
        r.text
    );
    assert_eq!(r.body["status"], status, "{}", r.text);
    assert!(
        r.body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{}",
        r.text
    );
    assert!(
        r.body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
}

/// Asserts a 400 `invalid` problem whose `errors[]` names `field` (with a message), and whose
/// `detail` names it too when it is the only error. Returns that error's message.
fn assert_invalid_field(r: &Reply, field: &str) -> String {
    assert_problem(r, 400, "invalid");
    let errors = r.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors[]: {}", r.text));
    let hit = errors
        .iter()
        .find(|e| e["field"] == field)
        .unwrap_or_else(|| panic!("no error for field {field:?}: {}", r.text));
    let message = hit["message"].as_str().unwrap_or_default().to_owned();
    assert!(!message.is_empty(), "{}", r.text);
    if errors.len() == 1 {
        let detail = r.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(field),
            "detail does not name {field}: {detail}"
        );
    }
    message
}

/// Asserts a 400 `malformed-request` problem whose detail mentions `needle`.
fn assert_malformed(r: &Reply, needle: &str) {
    assert_problem(r, 400, "malformed-request");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(needle), "detail lacks {needle:?}: {detail}");
}

/// Asserts an OFREP error body (not problem+json: OFREP clients parse these fields).
fn assert_ofrep_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.content_type, "application/json", "{}", r.text);
    assert_eq!(r.body["errorCode"], code, "{}", r.text);
    assert!(
        r.body["errorDetails"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{}",
        r.text
    );
}

/// Everything bad input must not change.
#[derive(Debug, PartialEq)]
struct Stored {
    namespaces: Value,
    flags: Value,
    segments: Value,
    audit_events: usize,
    last_audit_seq: u64,
    revision: u64,
}

async fn stored(s: &Server) -> Stored {
    let (status, namespaces) = s.get("/api/v1/namespaces").await;
    assert_eq!(status, 200, "{namespaces}");
    let (status, flags) = s.get(&format!("{FLAGS}?limit=1000")).await;
    assert_eq!(status, 200, "{flags}");
    let (status, segments) = s.get(SEGMENTS).await;
    assert_eq!(status, 200, "{segments}");
    let (mut audit_events, mut last_audit_seq) = (0, 0);
    loop {
        let (status, page) = s
            .get(&format!(
                "/api/v1/audit?limit=1000&afterSeq={last_audit_seq}"
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        audit_events += items.len();
        match items.last().and_then(|e| e["seq"].as_u64()) {
            Some(seq) if items.len() == 1000 => last_audit_seq = seq,
            Some(seq) => {
                last_audit_seq = seq;
                break;
            }
            None => break,
        }
    }
    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    Stored {
        namespaces: namespaces["items"].clone(),
        flags: flags["items"].clone(),
        segments: segments["items"].clone(),
        audit_events,
        last_audit_seq,
        revision: ready["revision"].as_u64().expect("readyz revision"),
    }
}

/// A server holding one flag, `seed` (a boolean flag with targeting on `tier`), and what it
/// stores at that point.
async fn seeded() -> (Server, Stored) {
    let s = Server::start().await;
    let (status, body) = s.post(FLAGS, &bool_flag("seed")).await;
    assert_eq!(status, 201, "{body}");
    let before = stored(&s).await;
    assert_eq!(before.flags.as_array().map(Vec::len), Some(1));
    (s, before)
}

async fn assert_nothing_stored(s: &Server, before: &Stored) {
    let after = stored(s).await;
    assert_eq!(&after, before, "bad input changed what the server stores");
}

/// The server still answers, evaluates the seed flag, and logged no panic and no error.
async fn assert_healthy(s: &Server) {
    let (status, body) = s.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, r) = s
        .post(OFREP_ONE, &json!({"context": {"tier": "gold"}}))
        .await;
    assert_eq!((status, r["value"].clone()), (200, json!(true)), "{r}");
    let logs = s.process.logs();
    let bad: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("panicked") || l.contains(r#""level":"ERROR""#))
        .collect();
    assert!(
        bad.is_empty(),
        "the server logged a panic or an error:\n{bad:#?}"
    );
}

/// A flag body with the given targeting.
fn flag_with_targeting(key: &str, targeting: Value) -> Value {
    json!({
        "key": key,
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": targeting,
    })
}

/// `depth` nested arrays (`[[[…]]]`) or objects (`{"a":{"a":…}}`), as text.
fn nesting_bomb(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// `rule` under `levels` negations (two JSON levels each).
fn wrap(mut rule: Value, levels: usize) -> Value {
    for _ in 0..levels {
        rule = json!({"!": [rule]});
    }
    rule
}

#[tokio::test]
async fn malformed_json_is_a_400_problem_and_stores_nothing() {
    let (s, before) = seeded().await;
    let bodies: [&[u8]; 6] = [
        br#"{"key":"#,
        br#"{"key": "x",}"#,
        b"not json",
        b"",
        br#"{"key": "x"} trailing"#,
        b"{\"key\": \"\xff\xfe\"}",
    ];
    for body in bodies {
        for (method, path) in [
            (Method::POST, FLAGS),
            (Method::PUT, SEED),
            (Method::PATCH, SEED),
            (Method::POST, SEGMENTS),
            (Method::POST, "/api/v1/namespaces"),
        ] {
            let r = call(&s, method, path, Some("application/json"), body, &[]).await;
            assert_malformed(&r, "malformed JSON");
        }
        // The import reads flagd files (JSON or YAML) as text: bytes that are not UTF-8 are a
        // malformed request, a syntax error is `invalid` at the document root ("").
        let r = call(
            &s,
            Method::POST,
            IMPORT,
            Some("application/json"),
            body,
            &[],
        )
        .await;
        if std::str::from_utf8(body).is_err() {
            assert_malformed(&r, "UTF-8");
        } else {
            let message = assert_invalid_field(&r, "");
            assert!(message.contains("malformed JSON"), "{message}");
        }
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem_and_stores_nothing() {
    let (s, before) = seeded().await;
    let body = bool_flag("other").to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/xml"),
        None,
    ] {
        for (method, path) in [
            (Method::POST, FLAGS),
            (Method::PUT, SEED),
            (Method::PATCH, SEED),
            (Method::POST, SEGMENTS),
            (Method::POST, "/api/v1/namespaces"),
            (Method::POST, IMPORT),
        ] {
            let r = call(&s, method, path, content_type, body.clone(), &[]).await;
            assert_problem(&r, 415, "unsupported-media-type");
        }
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_a_413_problem_and_stores_nothing() {
    let (s, before) = seeded().await;
    // Valid JSON, one byte over the limit: the size alone is refused.
    let mut flag = bool_flag("huge");
    let overhead = flag.to_string().len() + r#","description":"""#.len();
    flag["description"] = json!("x".repeat(MIB + 1 - overhead));
    let body = flag.to_string();
    assert_eq!(body.len(), MIB + 1);
    for (method, path) in [
        (Method::POST, FLAGS),
        (Method::PUT, "/api/v1/namespaces/default/flags/huge"),
        (Method::PATCH, SEED),
        (Method::POST, IMPORT),
        (Method::POST, "/api/v1/namespaces/default/evaluate"),
    ] {
        let r = call(
            &s,
            method,
            path,
            Some("application/json"),
            body.clone(),
            &[],
        )
        .await;
        assert_problem(&r, 413, "too-large");
    }
    // Exactly at the limit is read (and then judged on its content: `{}` lacks a key).
    let at_limit = format!("{{{}}}", " ".repeat(MIB - 2));
    assert_eq!(at_limit.len(), MIB);
    let r = call(
        &s,
        Method::POST,
        FLAGS,
        Some("application/json"),
        at_limit,
        &[],
    )
    .await;
    assert_invalid_field(&r, "key");
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn invalid_flag_keys_are_400_problems_naming_the_key_field() {
    let (s, before) = seeded().await;
    let long = "a".repeat(200);
    for key in ["a b", "a/b", long.as_str(), "", "-leading-dash", "ünïcödé"] {
        let r = json_call(&s, Method::POST, FLAGS, &bool_flag(key)).await;
        let message = assert_invalid_field(&r, "key");
        if !key.is_empty() {
            assert!(message.contains("must match"), "{message}");
        }
    }
    // A key of the wrong type, and no key at all.
    let mut numeric = bool_flag("x");
    numeric["key"] = json!(42);
    assert_invalid_field(&json_call(&s, Method::POST, FLAGS, &numeric).await, "key");
    let mut keyless = bool_flag("x");
    if let Some(m) = keyless.as_object_mut() {
        m.remove("key");
    }
    assert_invalid_field(&json_call(&s, Method::POST, FLAGS, &keyless).await, "key");
    // The key in the URL is checked the same way (`a%20b` is "a b").
    for path in ["a%20b", long.as_str()] {
        let mut body = bool_flag("x");
        if let Some(m) = body.as_object_mut() {
            m.remove("key");
        }
        let r = json_call(&s, Method::PUT, &format!("{FLAGS}/{path}"), &body).await;
        assert_invalid_field(&r, "key");
    }
    // A body key that contradicts the URL's.
    let message = assert_invalid_field(
        &json_call(&s, Method::PUT, SEED, &bool_flag("other")).await,
        "key",
    );
    assert!(message.contains("does not match"), "{message}");
    // And in an import, where the key is the member name.
    let doc = json!({"flags": {"a b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}});
    assert_invalid_field(
        &json_call(&s, Method::POST, IMPORT, &doc).await,
        "flags.a b",
    );
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn variants_of_mixed_types_are_400_problems_naming_the_variant() {
    let (s, before) = seeded().await;
    // Map keys are ordered, so the first variant sets the type and the odd one out is named.
    let cases = [
        (json!({"on": true, "s": "str"}), "variants.s"),
        (json!({"a": 1, "b": {"x": 1}}), "variants.b"),
        (json!({"a": "x", "b": 2.5}), "variants.b"),
        (json!({"a": {"x": 1}, "b": false}), "variants.b"),
    ];
    for (variants, field) in cases {
        let first = variants
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default();
        let body = json!({"key": "mixed", "state": "ENABLED", "variants": variants, "defaultVariant": first});
        let message = assert_invalid_field(&json_call(&s, Method::POST, FLAGS, &body).await, field);
        assert!(message.contains("one type"), "{message}");
        let mut put = body.clone();
        put["key"] = json!("seed");
        assert_invalid_field(&json_call(&s, Method::PUT, SEED, &put).await, field);
        let doc = json!({"flags": {"mixed": {"state": "ENABLED", "variants": body["variants"], "defaultVariant": first}}});
        assert_invalid_field(
            &json_call(&s, Method::POST, IMPORT, &doc).await,
            &format!("flags.mixed.{field}"),
        );
    }
    // Values of no flag type at all.
    for (value, kind) in [(json!(null), "null"), (json!([1, 2]), "array")] {
        let body = json!({"key": "odd", "state": "ENABLED", "variants": {"v": value}, "defaultVariant": "v"});
        let message = assert_invalid_field(
            &json_call(&s, Method::POST, FLAGS, &body).await,
            "variants.v",
        );
        assert!(message.contains(kind), "{message}");
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_default_variant_that_is_not_a_variant_is_a_400_listing_the_variants() {
    let (s, before) = seeded().await;
    let mut body = bool_flag("dv");
    body["defaultVariant"] = json!("maybe");
    let message = assert_invalid_field(
        &json_call(&s, Method::POST, FLAGS, &body).await,
        "defaultVariant",
    );
    for needle in ["maybe", "on", "off"] {
        assert!(message.contains(needle), "{needle:?} missing: {message}");
    }
    let mut put = bool_flag("seed");
    put["defaultVariant"] = json!("maybe");
    let message = assert_invalid_field(
        &json_call(&s, Method::PUT, SEED, &put).await,
        "defaultVariant",
    );
    assert!(message.contains("[off, on]"), "{message}");
    let mut wrong_type = bool_flag("dv");
    wrong_type["defaultVariant"] = json!(true);
    assert_invalid_field(
        &json_call(&s, Method::POST, FLAGS, &wrong_type).await,
        "defaultVariant",
    );
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn invalid_targeting_is_a_400_unless_the_caller_stores_it_anyway_and_then_it_answers_parse_error()
 {
    let (s, before) = seeded().await;
    let cases = [
        (json!({"nope": [1, 2]}), "targeting", "unknown operator"),
        (
            json!({"if": [{"==": [1]}, "on", null]}),
            "targeting.if[0].==",
            "takes exactly 2 arguments, found 1",
        ),
        (
            json!({"==": [1, 2, 3]}),
            "targeting.==",
            "takes exactly 2 arguments, found 3",
        ),
        (
            json!({"if": [{"in": ["a"]}, "on", null]}),
            "targeting.if[0].in",
            "takes exactly 2 arguments",
        ),
        (
            json!({"if": [{"starts_with": [{"var": "email"}]}, "on", null]}),
            "targeting.if[0].starts_with",
            "takes exactly 2 arguments",
        ),
        (json!({"if": []}), "targeting.if", "at least 1 argument"),
        (
            json!({"fractional": []}),
            "targeting.fractional",
            "at least one bucket",
        ),
        (json!("on"), "targeting", "must be an object"),
    ];
    for (targeting, field, needle) in &cases {
        let body = flag_with_targeting("bad-rule", targeting.clone());
        for path in [
            FLAGS.to_owned(),
            format!("{FLAGS}?allowInvalidTargeting=false"),
        ] {
            let r = json_call(&s, Method::POST, &path, &body).await;
            let message = assert_invalid_field(&r, field);
            assert!(message.contains(needle), "{field}: {message}");
        }
        let put = flag_with_targeting("seed", targeting.clone());
        let r = json_call(&s, Method::PUT, SEED, &put).await;
        assert_invalid_field(&r, field);
    }
    assert_nothing_stored(&s, &before).await;

    // Asked to store it anyway, the write succeeds (one commit, one audit event) and the flag
    // answers PARSE_ERROR, as flagd does with a file holding such a rule.
    let body = flag_with_targeting("stored-anyway", json!({"nope": [1, 2]}));
    let r = json_call(
        &s,
        Method::POST,
        &format!("{FLAGS}?allowInvalidTargeting=true"),
        &body,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["targeting"], json!({"nope": [1, 2]}));
    let after = stored(&s).await;
    assert_eq!(after.audit_events, before.audit_events + 1);
    assert!(after.revision > before.revision, "{after:?}");
    let r = json_call(
        &s,
        Method::POST,
        "/ofrep/v1/evaluate/flags/stored-anyway",
        &json!({"context": {}}),
    )
    .await;
    assert_ofrep_error(&r, 400, "PARSE_ERROR");
    assert_eq!(r.body["key"], "stored-anyway");
    let r = json_call(&s, Method::POST, OFREP_ALL, &json!({"context": {}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let entry = r.body["flags"]
        .as_array()
        .and_then(|f| f.iter().find(|e| e["key"] == "stored-anyway"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["errorCode"], "PARSE_ERROR", "{}", r.text);
    assert_healthy(&s).await;
}

#[tokio::test]
async fn an_unknown_namespace_is_a_404_for_listing_creating_importing_and_ofrep() {
    let (s, before) = seeded().await;
    let r = call(
        &s,
        Method::GET,
        "/api/v1/namespaces/nope/flags",
        None,
        "",
        &[],
    )
    .await;
    assert_problem(&r, 404, "not-found");
    assert_eq!(r.body["detail"], "namespace nope not found");
    let r = json_call(
        &s,
        Method::POST,
        "/api/v1/namespaces/nope/flags",
        &bool_flag("x"),
    )
    .await;
    assert_problem(&r, 404, "not-found");
    assert_eq!(r.body["detail"], "namespace nope not found");
    let doc = json!({"flags": {"x": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}});
    let r = json_call(&s, Method::POST, "/api/v1/namespaces/nope/import", &doc).await;
    assert_problem(&r, 404, "not-found");
    for path in [OFREP_ONE, OFREP_ALL] {
        let r = call(
            &s,
            Method::POST,
            path,
            Some("application/json"),
            r#"{"context":{}}"#,
            &[("x-vexil-namespace", "nope")],
        )
        .await;
        assert_ofrep_error(&r, 404, "FLAG_NOT_FOUND");
        let details = r.body["errorDetails"].as_str().unwrap_or_default();
        assert!(details.contains("nope"), "{details}");
    }
    // Nothing was created on the way, not even the namespace.
    let (status, _) = s.get("/api/v1/namespaces/nope").await;
    assert_eq!(status, 404);
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_deep_nesting_bomb_is_a_400_and_the_server_stays_healthy() {
    let (s, before) = seeded().await;
    for objects in [false, true] {
        let bomb = nesting_bomb(100_000, objects);
        for (method, path) in [
            (Method::POST, FLAGS),
            (Method::PUT, SEED),
            (Method::PATCH, SEED),
            (Method::POST, SEGMENTS),
        ] {
            let r = call(
                &s,
                method,
                path,
                Some("application/json"),
                bomb.clone(),
                &[],
            )
            .await;
            assert_malformed(&r, "recursion limit exceeded");
        }
        // The bomb in the targeting position of an otherwise valid flag.
        let flag = format!(
            r#"{{"key":"bomb","state":"ENABLED","variants":{{"on":true}},"defaultVariant":"on","targeting":{bomb}}}"#
        );
        let r = call(&s, Method::POST, FLAGS, Some("application/json"), flag, &[]).await;
        assert_malformed(&r, "recursion limit exceeded");
        let r = call(
            &s,
            Method::POST,
            IMPORT,
            Some("application/json"),
            bomb.clone(),
            &[],
        )
        .await;
        assert_problem(&r, 400, "invalid");
        for path in [OFREP_ONE, OFREP_ALL] {
            let body = format!(r#"{{"context":{{"deep":{bomb}}}}}"#);
            let r = call(&s, Method::POST, path, Some("application/json"), body, &[]).await;
            assert_ofrep_error(&r, 400, "INVALID_CONTEXT");
        }
    }
    // YAML imports have the same guard.
    let yaml = nesting_bomb(100_000, false);
    let r = call(
        &s,
        Method::POST,
        IMPORT,
        Some("application/yaml"),
        yaml,
        &[],
    )
    .await;
    assert_problem(&r, 400, "invalid");
    assert_nothing_stored(&s, &before).await;
    // Within the JSON limit, segments referring to segments can still expand past the rule
    // depth limit: the segment that would cross it is refused.
    let r = json_call(
        &s,
        Method::POST,
        SEGMENTS,
        &json!({"key": "c0", "rule": wrap(json!({"var": "x"}), 25)}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = json_call(
        &s,
        Method::POST,
        SEGMENTS,
        &json!({"key": "c1", "rule": wrap(json!({"$ref": "c0"}), 25)}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let before = stored(&s).await;
    let r = json_call(
        &s,
        Method::POST,
        SEGMENTS,
        &json!({"key": "c2", "rule": wrap(json!({"$ref": "c1"}), 25)}),
    )
    .await;
    let message = assert_invalid_field(&r, "rule");
    assert!(message.contains("nesting exceeds"), "{message}");
    let r = json_call(
        &s,
        Method::POST,
        FLAGS,
        &flag_with_targeting("too-deep", wrap(json!({"$ref": "c1"}), 25)),
    )
    .await;
    let message = assert_invalid_field(&r, "targeting");
    assert!(message.contains("nesting exceeds"), "{message}");
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_ref_to_a_missing_segment_is_a_400_naming_the_segment() {
    let (s, before) = seeded().await;
    let rule = json!({"if": [{"$ref": "missing-segment"}, "on", null]});
    let r = json_call(
        &s,
        Method::POST,
        FLAGS,
        &flag_with_targeting("refs", rule.clone()),
    )
    .await;
    let message = assert_invalid_field(&r, "targeting");
    assert!(message.contains("missing-segment"), "{message}");
    let r = json_call(
        &s,
        Method::PUT,
        SEED,
        &flag_with_targeting("seed", rule.clone()),
    )
    .await;
    assert_invalid_field(&r, "targeting");
    let r = json_call(
        &s,
        Method::POST,
        SEGMENTS,
        &json!({"key": "s1", "rule": {"$ref": "missing-segment"}}),
    )
    .await;
    let message = assert_invalid_field(&r, "rule");
    assert!(message.contains("missing-segment"), "{message}");
    assert_nothing_stored(&s, &before).await;

    // Stored anyway on request, it answers PARSE_ERROR (flagd's behaviour for such a file).
    let r = json_call(
        &s,
        Method::POST,
        &format!("{FLAGS}?allowInvalidTargeting=true"),
        &flag_with_targeting("refs", rule),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = json_call(
        &s,
        Method::POST,
        "/ofrep/v1/evaluate/flags/refs",
        &json!({}),
    )
    .await;
    assert_ofrep_error(&r, 400, "PARSE_ERROR");
    assert_healthy(&s).await;
}

#[tokio::test]
async fn unknown_fields_are_400_problems_naming_the_field() {
    let (s, before) = seeded().await;
    let mut flag = bool_flag("x");
    flag["bogus"] = json!(1);
    let message = assert_invalid_field(&json_call(&s, Method::POST, FLAGS, &flag).await, "bogus");
    assert!(
        message.contains("defaultVariant"),
        "lists the fields: {message}"
    );
    // A snake_case spelling is a typo the caller must hear about, not a silent no-op.
    let mut snake = bool_flag("seed");
    if let Some(m) = snake.as_object_mut() {
        m.remove("defaultVariant");
    }
    snake["default_variant"] = json!("on");
    assert_invalid_field(
        &json_call(&s, Method::PUT, SEED, &snake).await,
        "default_variant",
    );
    assert_invalid_field(
        &json_call(&s, Method::PATCH, SEED, &json!({"colour": "red"})).await,
        "colour",
    );
    assert_invalid_field(
        &json_call(
            &s,
            Method::POST,
            "/api/v1/namespaces",
            &json!({"key": "team-a", "colour": "red"}),
        )
        .await,
        "colour",
    );
    assert_invalid_field(
        &json_call(
            &s,
            Method::POST,
            SEGMENTS,
            &json!({"key": "s", "rule": {"==": [1, 1]}, "colour": "red"}),
        )
        .await,
        "colour",
    );
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn an_if_match_that_names_no_version_is_a_412_and_changes_nothing() {
    let (s, before) = seeded().await;
    let mut body = bool_flag("seed");
    body["defaultVariant"] = json!("on");
    for tag in ["garbage", r#"W/"x""#, r#""1.5""#, r#""-1""#, r#""""#, ""] {
        for (method, payload) in [
            (Method::PUT, body.to_string()),
            (Method::PATCH, json!({"defaultVariant": "on"}).to_string()),
            (Method::DELETE, String::new()),
        ] {
            let ct = (method != Method::DELETE).then_some("application/json");
            let r = call(&s, method.clone(), SEED, ct, payload, &[("if-match", tag)]).await;
            assert_problem(&r, 412, "version-conflict");
            let detail = r.body["detail"].as_str().unwrap_or_default();
            assert!(detail.contains("If-Match"), "{method} {tag:?}: {detail}");
        }
    }
    // A well-formed but stale version is refused the same way.
    let r = call(
        &s,
        Method::PUT,
        SEED,
        Some("application/json"),
        body.to_string(),
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_problem(&r, 412, "version-conflict");
    let (_, flag) = s.get(SEED).await;
    assert_eq!(flag["version"], 1);
    assert_eq!(flag["defaultVariant"], "off");
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn bad_query_parameters_are_400_problems_naming_the_parameter() {
    let (s, before) = seeded().await;
    for (path, name) in [
        (format!("{FLAGS}?limit=abc"), "limit"),
        (format!("{FLAGS}?limit=-1"), "limit"),
        (format!("{FLAGS}?limit=1e3"), "limit"),
        (format!("{FLAGS}?limit=99999999999999999999999"), "limit"),
        ("/api/v1/audit?limit=abc".to_owned(), "limit"),
        ("/api/v1/audit?afterSeq=abc".to_owned(), "afterSeq"),
        ("/api/v1/audit?kind=widget".to_owned(), "kind"),
        (
            "/api/v1/namespaces/default/export?format=xml".to_owned(),
            "format",
        ),
    ] {
        let r = call(&s, Method::GET, &path, None, "", &[]).await;
        assert_malformed(&r, name);
    }
    // On writes the query is checked before anything is written, even with a valid body.
    let r = json_call(
        &s,
        Method::POST,
        &format!("{FLAGS}?allowInvalidTargeting=yes"),
        &bool_flag("valid"),
    )
    .await;
    assert_malformed(&r, "allowInvalidTargeting");
    let doc = json!({"flags": {"valid": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"}}});
    for (query, name) in [("dryRun=maybe", "dryRun"), ("mode=upsert", "mode")] {
        let r = json_call(&s, Method::POST, &format!("{IMPORT}?{query}"), &doc).await;
        assert_malformed(&r, name);
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn an_ofrep_context_that_is_not_an_object_is_invalid_context() {
    let (s, before) = seeded().await;
    let bodies = [
        r#"{"context": [1]}"#,
        r#"{"context": "x"}"#,
        r#"{"context": 5}"#,
        r#"{"context": true}"#,
        // The request itself must be an object: these have no `context` member at all and
        // must not be evaluated as the empty context.
        "[1]",
        r#""context""#,
        "5",
        // Not JSON.
        r#"{"context": "#,
    ];
    for path in [OFREP_ONE, OFREP_ALL] {
        for body in bodies {
            let r = call(&s, Method::POST, path, Some("application/json"), body, &[]).await;
            assert_ofrep_error(&r, 400, "INVALID_CONTEXT");
        }
        let r = call(&s, Method::POST, path, Some("text/plain"), "{}", &[]).await;
        assert_ofrep_error(&r, 400, "INVALID_CONTEXT");
        // Controls: no context and a null context are the empty context.
        for body in ["{}", r#"{"context": null}"#, ""] {
            let r = call(&s, Method::POST, path, Some("application/json"), body, &[]).await;
            assert_eq!(r.status, 200, "{body:?}: {}", r.text);
        }
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_10_mb_ofrep_context_is_a_413() {
    let (s, before) = seeded().await;
    let body =
        json!({"context": {"targetingKey": "u1", "blob": "x".repeat(10_000_000)}}).to_string();
    assert!(body.len() > 10_000_000);
    for path in [OFREP_ONE, OFREP_ALL, "/api/v1/namespaces/default/evaluate"] {
        let r = call(
            &s,
            Method::POST,
            path,
            Some("application/json"),
            body.clone(),
            &[],
        )
        .await;
        assert_problem(&r, 413, "too-large");
    }
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_merge_patch_that_makes_the_flag_invalid_is_a_400_and_leaves_the_flag_unchanged() {
    let (s, before) = seeded().await;
    let (_, original) = s.get(SEED).await;
    assert_eq!(original["version"], 1);
    let cases = [
        (json!({"defaultVariant": "nope"}), "defaultVariant"),
        (json!({"variants": {"on": "yes"}}), "variants.on"),
        (json!({"variants": null}), "variants"),
        (json!({"state": "MAYBE"}), "state"),
        (json!({"state": null}), "state"),
        (json!({"targeting": {"nope": [1]}}), "targeting"),
        (
            json!({"targeting": {"if": [{"$ref": "missing"}, "on", null]}}),
            "targeting",
        ),
        (json!({"key": "other"}), "key"),
        (json!({"tags": "checkout"}), "tags"),
        (json!({"metadata": {"nested": {"x": 1}}}), "metadata.nested"),
    ];
    for (patch, field) in &cases {
        for ct in ["application/merge-patch+json", "application/json"] {
            let r = call(
                &s,
                Method::PATCH,
                SEED,
                Some(ct),
                patch.to_string(),
                &[("if-match", "\"1\"")],
            )
            .await;
            assert_invalid_field(&r, field);
        }
    }
    // With only the variants in the patch, it is the untouched variant that no longer fits:
    // the check is on the merged result, not on the patch alone.
    let r = json_call(&s, Method::PATCH, SEED, &json!({"variants": {"on": "yes"}})).await;
    assert_invalid_field(&r, "variants.on");
    // A patch that is not an object.
    for patch in [json!([1]), json!("x"), json!(null)] {
        let r = json_call(&s, Method::PATCH, SEED, &patch).await;
        assert_problem(&r, 400, "invalid");
    }
    let (_, after) = s.get(SEED).await;
    assert_eq!(after, original, "a rejected patch changed the flag");
    assert_nothing_stored(&s, &before).await;
    assert_healthy(&s).await;
}
