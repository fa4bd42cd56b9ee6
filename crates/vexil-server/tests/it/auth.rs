//! Authentication and RBAC, end to end: forged and stale credentials, the JWT secret's start-up
//! rules, login rate limiting, secrets kept out of logs, and who may do what.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::fixtures::{
    ADMIN_PASSWORD, Server, binary, bool_flag, client, client_with_token, login, send,
};

/// The signing key of the servers that tests forge sessions for (at least 32 bytes).
const JWT_SECRET: &str = "vexil-end-to-end-tests-signing-key-0123456789";

/// base64url(`{"alg":"none","typ":"JWT"}`): the header of an unsigned JWT, which the
/// `jsonwebtoken` crate refuses to produce.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Claims as the server issues them, for `sub`, valid for an hour.
fn claims(sub: &str) -> Value {
    let now = now_secs();
    json!({
        "sub": sub, "iss": "vexil", "aud": "vexil",
        "iat": now, "nbf": now, "exp": now + 3600,
        "jti": "00000000-0000-4000-8000-000000000000",
    })
}

fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign")
}

/// The base64url payload segment of a JWT.
fn payload(jwt: &str) -> &str {
    jwt.split('.').nth(1).expect("a JWT has a payload")
}

/// A server with a known `JWT_SECRET` and a flag `f` in `default`, so that sessions can be
/// forged and OFREP has something to evaluate.
async fn server_with_known_secret() -> Server {
    let s = Server::start_with(|o| o.env("JWT_SECRET", JWT_SECRET)).await;
    let (status, body) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("f"))
        .await;
    assert_eq!(status, 201, "{body}");
    s
}

/// How a credential is presented.
#[derive(Debug, Clone, Copy)]
enum Present {
    Bearer,
    ApiKey,
}

/// The statuses of a protected admin route and of an OFREP evaluation with `credential`.
async fn statuses(s: &Server, how: Present, credential: &[u8]) -> (u16, u16) {
    let header = |req: reqwest::RequestBuilder| match how {
        Present::Bearer => {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(credential);
            req.header(
                "authorization",
                reqwest::header::HeaderValue::from_bytes(&value).expect("header value"),
            )
        }
        Present::ApiKey => req.header(
            "x-api-key",
            reqwest::header::HeaderValue::from_bytes(credential).expect("header value"),
        ),
    };
    let (admin, _) = send(header(client().get(s.url("/api/v1/namespaces")))).await;
    let (ofrep, _) = send(
        header(client().post(s.url("/ofrep/v1/evaluate/flags/f"))).json(&json!({"context": {}})),
    )
    .await;
    (admin, ofrep)
}

async fn assert_refused(s: &Server, what: &str, how: Present, credential: &[u8]) {
    let got = statuses(s, how, credential).await;
    assert_eq!(
        got,
        (401, 401),
        "{what}: (admin route, OFREP) answered {got:?}, not 401"
    );
}

#[tokio::test]
async fn forged_malformed_and_stale_credentials_get_401_on_admin_routes_and_ofrep() {
    let s = server_with_known_secret().await;

    // The control: a token built here the way the server builds them is accepted, so every
    // refusal below is down to the one thing each case changes.
    let good = sign(Algorithm::HS256, JWT_SECRET, &claims("admin"));
    assert_eq!(
        statuses(&s, Present::Bearer, good.as_bytes()).await,
        (200, 200),
        "a correctly signed session was refused: the forging in this test is wrong"
    );

    let now = now_secs();
    let with = |changes: Value| {
        let mut c = claims("admin");
        for (k, v) in changes.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let mut cases: Vec<(&str, String)> = vec![
        ("alg none", format!("{ALG_NONE_HEADER}.{}.", payload(&good))),
        (
            "alg none with the real signature",
            format!(
                "{ALG_NONE_HEADER}.{}.{}",
                payload(&good),
                good.rsplit('.').next().expect("signature")
            ),
        ),
        (
            "HS512 with the right secret",
            sign(Algorithm::HS512, JWT_SECRET, &claims("admin")),
        ),
        (
            "HS384 with the right secret",
            sign(Algorithm::HS384, JWT_SECRET, &claims("admin")),
        ),
        (
            "HS256 with a wrong secret",
            sign(
                Algorithm::HS256,
                "a-different-secret-that-is-also-32-bytes-long",
                &claims("admin"),
            ),
        ),
        (
            "expired an hour ago",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &with(json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600})),
            ),
        ),
        (
            "not valid for another hour",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &with(json!({"nbf": now + 3600})),
            ),
        ),
        (
            "another audience",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &with(json!({"aud": "someone-else"})),
            ),
        ),
        (
            "another issuer",
            sign(
                Algorithm::HS256,
                JWT_SECRET,
                &with(json!({"iss": "someone-else"})),
            ),
        ),
        (
            "no expiry",
            sign(Algorithm::HS256, JWT_SECRET, &{
                let mut c = claims("admin");
                c.as_object_mut().expect("object").remove("exp");
                c
            }),
        ),
        (
            "a user that never existed",
            sign(Algorithm::HS256, JWT_SECRET, &claims("mallory")),
        ),
        (
            "the payload of another user under admin's signature",
            format!(
                "{}.{}.{}",
                good.split('.').next().expect("header"),
                payload(&sign(
                    Algorithm::HS256,
                    "x".repeat(32).as_str(),
                    &claims("root")
                )),
                good.rsplit('.').next().expect("signature")
            ),
        ),
        ("a truncated signature", good[..good.len() - 8].to_owned()),
        (
            "no signature segment",
            good.rsplit_once('.').expect("dots").0.to_owned(),
        ),
        ("garbage", "not-a-jwt".to_owned()),
        ("three garbage segments", "a.b.c".to_owned()),
        ("an unknown API token", format!("vx_{}", "0".repeat(64))),
    ];
    // Enormous credentials are refused like any other bad one, not by a panic or a 500.
    cases.push(("a 16 KiB token", "e".repeat(16 * 1024)));
    for (what, token) in &cases {
        assert_refused(&s, what, Present::Bearer, token.as_bytes()).await;
    }

    // Headers that are not a usable credential at all.
    assert_refused(
        &s,
        "an X-API-Key that is not a token",
        Present::ApiKey,
        b"nope",
    )
    .await;
    assert_refused(&s, "a non-UTF-8 bearer token", Present::Bearer, b"\xff\xfe").await;
    let (status, _) = send(
        client()
            .get(s.url("/api/v1/namespaces"))
            .header("authorization", "Basic YWRtaW46cGFzc3dvcmQ="),
    )
    .await;
    assert_eq!(status, 401, "a Basic authorization header");
}

#[tokio::test]
async fn a_revoked_api_token_is_refused_within_a_second() {
    let s = server_with_known_secret().await;
    let (status, created) = s
        .post(
            "/api/v1/tokens",
            &json!({"name": "soon revoked", "role": "viewer", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().expect("secret").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(
        statuses(&s, Present::Bearer, secret.as_bytes()).await,
        (200, 200)
    );
    assert_eq!(
        statuses(&s, Present::ApiKey, secret.as_bytes()).await,
        (200, 200)
    );

    let (status, body) = s.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, 204, "{body}");
    let revoked = Instant::now();
    loop {
        let bearer = statuses(&s, Present::Bearer, secret.as_bytes()).await;
        let key = statuses(&s, Present::ApiKey, secret.as_bytes()).await;
        if bearer == (401, 401) && key == (401, 401) {
            break;
        }
        assert!(
            [bearer.0, bearer.1, key.0, key.1]
                .iter()
                .all(|s| *s == 200 || *s == 401),
            "a revoked token got {bearer:?} / {key:?}"
        );
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "the revoked token still worked a second later: {bearer:?} / {key:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoking it again: it is gone.
    let (status, _) = s.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_session_of_a_deleted_user_is_refused() {
    let s = server_with_known_secret().await;
    let (status, body) = s
        .post(
            "/api/v1/users",
            &json!({"name": "carol", "password": "carol-password"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(
            "/api/v1/bindings",
            &json!({"subject": "user:carol", "role": "viewer", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let session = login(&s.process.base, "carol", "carol-password").await;
    assert_eq!(
        statuses(&s, Present::Bearer, session.as_bytes()).await,
        (200, 200)
    );

    let (status, body) = s.delete("/api/v1/users/carol").await;
    assert_eq!(status, 204, "{body}");
    assert_refused(
        &s,
        "a deleted user's session",
        Present::Bearer,
        session.as_bytes(),
    )
    .await;
    // Recreating the name gives the old session nothing: the deleted account's bindings went
    // with it. (The session does authenticate again, as the new account, because sessions
    // name the user and a new user's `passwordChangedAt` is 0; 401 would be better.)
    let (status, _) = s
        .post(
            "/api/v1/users",
            &json!({"name": "carol", "password": "carol-password-2"}),
        )
        .await;
    assert_eq!(status, 201);
    let (admin, ofrep) = statuses(&s, Present::Bearer, session.as_bytes()).await;
    assert!(
        admin != 200 && ofrep != 200,
        "a deleted user's session regained access: {admin}, {ofrep}"
    );
}

/// Runs the binary to its exit (at most 30 s) and returns its status and combined output.
fn run_to_exit(cmd: &mut Command) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("out.log");
    let out = std::fs::File::create(&out_path).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn the server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut text = String::new();
            let _ = std::fs::File::open(&out_path).and_then(|mut f| f.read_to_string(&mut text));
            panic!("the server did not exit within 30 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status, text)
}

#[test]
fn a_jwt_secret_shorter_than_32_bytes_stops_the_server_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let short = "only-23-bytes-of-secret";
    assert!(short.len() < 32);
    let (status, output) = run_to_exit(
        Command::new(binary())
            .env("VEXIL_HTTP_ADDR", "127.0.0.1:0")
            .env("VEXIL_GRPC_ADDR", "127.0.0.1:0")
            .env("VEXIL_DATA", dir.path().join("vexil.db"))
            .env("VEXIL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("LOG_FORMAT", "json")
            .env("JWT_SECRET", short)
            .env_remove("DB_URL")
            .env_remove("ETCD_ENDPOINTS"),
    );
    assert!(!status.success(), "it started anyway:\n{output}");
    assert!(output.contains("JWT_SECRET"), "{output}");
    assert!(
        !output.contains(short),
        "the rejected secret was echoed:\n{output}"
    );
    assert!(
        !output.contains("HTTP listening"),
        "it listened before refusing:\n{output}"
    );
}

#[tokio::test]
async fn without_jwt_secret_the_embedded_mode_keeps_a_private_secret_file_that_a_restart_reuses() {
    use std::os::unix::fs::PermissionsExt;

    let mut s = Server::start().await;
    let path = s.dir.path().join("vexil.db.jwt-secret");
    let meta = std::fs::metadata(&path).expect("the secret file beside the database");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the secret file is readable by others"
    );
    let secret = std::fs::read_to_string(&path).expect("read the secret");
    assert!(
        secret.trim().len() >= 32,
        "the generated secret is too short"
    );

    // A session issued before the restart still works after it.
    let session = s.token.clone();
    let status = s.process.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    s.restart();
    let (status, body) = send(client_with_token(&session).get(s.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read the secret"),
        secret,
        "the restart replaced the secret"
    );
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited_and_audited_without_the_password() {
    let s = Server::start().await;
    let (status, body) = s
        .post(
            "/api/v1/users",
            &json!({"name": "erin", "password": "erin-real-password"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // All at once: the limiter is checked before the (slow) password hash, so however long
    // hashing takes here, it cannot refill (one attempt per 6 s) between the tries.
    let wrong = "erin-wrong-password-7f3a";
    let attempts = (0..11).map(|_| {
        send(
            client()
                .post(s.url("/api/v1/auth/login"))
                .json(&json!({"username": "erin", "password": wrong})),
        )
    });
    // Limited means nothing is checked: even the right password waits. It is sent once the
    // wrong ones have been counted, but well inside the refill period.
    let right = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        client()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "erin", "password": "erin-real-password"}))
            .send()
            .await
            .expect("request")
    };
    let (results, resp) = tokio::join!(futures_util::future::join_all(attempts), right);
    let statuses: Vec<u16> = results.into_iter().map(|(status, _)| status).collect();
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, 11, "{statuses:?}");
    assert!(
        limited >= 1,
        "11 wrong passwords were never limited: {statuses:?}"
    );

    assert_eq!(resp.status().as_u16(), 429);
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a Retry-After of whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    let problem: Value = resp.json().await.expect("problem+json");
    assert_eq!(problem["type"], "urn:vexil:problem:rate-limited");

    // Other users are not affected.
    let (status, _) = send(
        client()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": ADMIN_PASSWORD})),
    )
    .await;
    assert_eq!(status, 200);

    let (status, audit) = s.get("/api/v1/audit?key=erin&limit=1000").await;
    assert_eq!(status, 200, "{audit}");
    let failures: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "auth.login_failed")
        .collect();
    assert_eq!(failures.len(), refused, "{audit}");
    for e in &failures {
        assert_eq!(e["key"], "erin");
        assert_eq!(e["after"]["reason"], "wrong password", "{e}");
    }
    let text = audit.to_string();
    assert!(!text.contains(wrong), "the audit log holds the password");
    assert!(!text.contains("erin-real-password"));
}

#[tokio::test]
async fn passwords_sessions_and_token_secrets_never_reach_the_logs() {
    // Debug logging, where a leak is likeliest.
    let s = Server::start_with(|o| o.env("RUST_LOG", "debug")).await;
    let token = s.api_token("evaluator", "default").await;
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("f"))
        .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        client()
            .post(s.url("/ofrep/v1/evaluate/flags/f"))
            .header("x-api-key", &token)
            .json(&json!({"context": {}})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = s.get("/api/v1/namespaces/default/flags").await;
    assert_eq!(status, 200);
    let wrong = "a-wrong-password-for-the-log-test";
    let (status, _) = send(
        client()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "admin", "password": wrong})),
    )
    .await;
    assert_eq!(status, 401);
    // A bad credential takes the error paths, which are the likeliest to echo input.
    let (status, _) = send(
        client()
            .get(s.url("/api/v1/namespaces"))
            .header("authorization", format!("Bearer {}x", s.token)),
    )
    .await;
    assert_eq!(status, 401);

    // Log lines are collected by reader threads; give them a moment to catch up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = s.process.logs().join("\n");
    assert!(
        logs.contains("HTTP listening"),
        "no logs were collected:\n{logs}"
    );
    let signing_key =
        std::fs::read_to_string(s.dir.path().join("vexil.db.jwt-secret")).expect("the secret file");
    let signature = s.token.rsplit('.').next().expect("signature");
    let secrets = [
        ("the admin password", ADMIN_PASSWORD),
        ("the wrong password", wrong),
        ("the session token", s.token.as_str()),
        ("the session token's signature", signature),
        ("the API token", token.as_str()),
        (
            "the API token without its prefix",
            token.trim_start_matches("vx_"),
        ),
        ("the JWT signing key", signing_key.trim()),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(secret), "{what} appears in the logs");
    }
}

/// Creates user `name` with a password and binds `role` in `namespace`; returns a client
/// signed in as them.
async fn user_with_role(s: &Server, name: &str, role: &str, namespace: &str) -> reqwest::Client {
    let password = format!("{name}-password");
    let (status, body) = s
        .post(
            "/api/v1/users",
            &json!({"name": name, "password": password}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(
            "/api/v1/bindings",
            &json!({"subject": format!("user:{name}"), "role": role, "namespace": namespace}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    client_with_token(&login(&s.process.base, name, &password).await)
}

async fn create_namespace_with_flag(s: &Server, ns: &str) {
    let (status, body) = s.post("/api/v1/namespaces", &json!({"key": ns})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(&format!("/api/v1/namespaces/{ns}/flags"), &bool_flag("f"))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// OFREP evaluation of `f` in `ns` (status only).
async fn ofrep(req: reqwest::RequestBuilder, ns: &str) -> u16 {
    send(
        req.header("x-vexil-namespace", ns)
            .json(&json!({"context": {}})),
    )
    .await
    .0
}

#[tokio::test]
async fn a_viewer_in_one_namespace_reads_there_and_nowhere_else_and_cannot_write() {
    let s = Server::start().await;
    create_namespace_with_flag(&s, "a").await;
    create_namespace_with_flag(&s, "b").await;
    let viewer = user_with_role(&s, "vic", "viewer", "a").await;

    let (status, body) = send(viewer.get(s.url("/api/v1/namespaces/a/flags/f"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(viewer.get(s.url("/api/v1/namespaces/a/flags"))).await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = send(
        viewer
            .post(s.url("/api/v1/namespaces/a/flags"))
            .json(&bool_flag("g")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:vexil:problem:forbidden");
    let (status, _) = s.get("/api/v1/namespaces/a/flags/g").await;
    assert_eq!(status, 404, "a refused write was stored");
    let (status, _) = send(viewer.delete(s.url("/api/v1/namespaces/a/flags/f"))).await;
    assert_eq!(status, 403);

    let (status, _) = send(viewer.get(s.url("/api/v1/namespaces/b/flags"))).await;
    assert_eq!(status, 403);
    let (status, _) = send(viewer.get(s.url("/api/v1/namespaces/b/flags/f"))).await;
    assert_eq!(status, 403);

    let (status, list) = send(viewer.get(s.url("/api/v1/namespaces"))).await;
    assert_eq!(status, 200, "{list}");
    let keys: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["key"].as_str())
        .collect();
    assert_eq!(keys, ["a"]);

    // Nor is RBAC administration open to a viewer.
    for path in [
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/bindings",
        "/api/v1/roles",
    ] {
        let (status, _) = send(viewer.get(s.url(path))).await;
        assert_eq!(status, 403, "{path}");
    }
}

#[tokio::test]
async fn an_evaluator_token_evaluates_over_ofrep_but_reads_nothing() {
    let s = Server::start().await;
    create_namespace_with_flag(&s, "a").await;
    create_namespace_with_flag(&s, "b").await;
    let token = s.api_token("evaluator", "a").await;

    let by_key = || {
        client()
            .post(s.url("/ofrep/v1/evaluate/flags/f"))
            .header("x-api-key", &token)
    };
    let by_bearer = || client_with_token(&token).post(s.url("/ofrep/v1/evaluate/flags/f"));
    assert_eq!(ofrep(by_key(), "a").await, 200);
    assert_eq!(ofrep(by_bearer(), "a").await, 200);
    let (status, body) = send(
        client()
            .post(s.url("/ofrep/v1/evaluate/flags"))
            .header("x-api-key", &token)
            .header("x-vexil-namespace", "a")
            .json(&json!({"context": {}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Scoped to `a`.
    assert_eq!(ofrep(by_key(), "b").await, 403);

    let (status, _) =
        send(client_with_token(&token).get(s.url("/api/v1/namespaces/a/flags"))).await;
    assert_eq!(status, 403);
    let (status, _) =
        send(client_with_token(&token).get(s.url("/api/v1/namespaces/a/flags/f"))).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn without_credentials_only_evaluation_in_a_namespace_that_opted_in_is_allowed() {
    let s = Server::start().await;
    create_namespace_with_flag(&s, "a").await;
    create_namespace_with_flag(&s, "b").await;

    for path in [
        "/api/v1/namespaces",
        "/api/v1/namespaces/a/flags",
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/audit",
    ] {
        let resp = client().get(s.url(path)).send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        assert!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}: no Bearer challenge"
        );
    }
    let anonymous = || client().post(s.url("/ofrep/v1/evaluate/flags/f"));
    assert_eq!(ofrep(anonymous(), "a").await, 401);

    s.open_anonymous_evaluation("a").await;
    // The namespace change reaches the snapshot the anonymous check reads; allow it a moment.
    let opened = Instant::now();
    while ofrep(anonymous(), "a").await != 200 {
        assert!(
            opened.elapsed() < Duration::from_secs(3),
            "anonymous evaluation in `a` is still refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ofrep(anonymous(), "b").await, 401);
    // Opting in opens evaluation only.
    let (status, _) = send(client().get(s.url("/api/v1/namespaces/a/flags"))).await;
    assert_eq!(status, 401);
    let (status, _) = send(client().get(s.url("/api/v1/namespaces/a/export"))).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn nobody_hands_out_more_than_they_hold_and_grants_are_audited() {
    let s = Server::start().await;
    create_namespace_with_flag(&s, "a").await;
    create_namespace_with_flag(&s, "b").await;

    // A plain editor administers nothing.
    let editor = user_with_role(&s, "ed", "editor", "a").await;
    let (status, body) = send(
        editor
            .post(s.url("/api/v1/tokens"))
            .json(&json!({"name": "mine", "role": "admin", "namespace": "a"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");

    // An editor who may also administer RBAC in `a` still cannot grant what they lack there.
    let (status, body) = s
        .post(
            "/api/v1/roles",
            &json!({"name": "rbac-admin", "permissions": ["rbac:admin"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(
            "/api/v1/bindings",
            &json!({"subject": "user:ed", "role": "rbac-admin", "namespace": "a"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token_as_ed = |role: &str, ns: &str| {
        send(
            editor
                .post(s.url("/api/v1/tokens"))
                .json(&json!({"name": "ed's", "role": role, "namespace": ns})),
        )
    };
    let (status, body) = token_as_ed("admin", "a").await;
    assert_eq!(status, 403, "an admin token from a non-admin: {body}");
    let (status, body) = token_as_ed("viewer", "b").await;
    assert_eq!(status, 403, "a token outside ed's namespace: {body}");
    let (status, body) = token_as_ed("editor", "*").await;
    assert_eq!(status, 403, "an all-namespace token: {body}");
    let (status, body) = send(
        editor
            .post(s.url("/api/v1/bindings"))
            .json(&json!({"subject": "user:ed", "role": "admin", "namespace": "a"})),
    )
    .await;
    assert_eq!(status, 403, "ed made himself admin: {body}");
    let (status, body) = token_as_ed("editor", "a").await;
    assert_eq!(status, 201, "within what ed holds: {body}");
    let ed_token = body["id"].as_str().expect("id").to_owned();

    // Nothing refused was stored: the only token is the one allowed.
    let (_, tokens) = s.get("/api/v1/tokens").await;
    let roles: Vec<&str> = tokens["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["role"].as_str())
        .collect();
    assert_eq!(roles, ["editor"], "{tokens}");

    // Ed revokes his own token; the grants and revocation are in the audit log, by their actor.
    let (status, _) = send(editor.delete(s.url(&format!("/api/v1/tokens/{ed_token}")))).await;
    assert_eq!(status, 204);
    let (status, audit) = s.get("/api/v1/audit?limit=1000").await;
    assert_eq!(status, 200, "{audit}");
    let events = audit["items"].as_array().expect("items");
    let find = |action: &str, key: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["key"] == key)
            .unwrap_or_else(|| panic!("no {action} of {key} in {audit}"))
    };
    let created = find("token.create", &ed_token);
    assert_eq!(created["actor"], json!({"kind": "user", "id": "ed"}));
    assert_eq!(created["namespace"], "a");
    assert!(created["after"].get("digest").is_none(), "{created}");
    let revoked = find("token.revoke", &ed_token);
    assert_eq!(revoked["actor"], json!({"kind": "user", "id": "ed"}));
    let (_, bindings) = s.get("/api/v1/bindings").await;
    for b in bindings["items"].as_array().expect("items") {
        let id = b["id"].as_str().expect("id");
        let event = find("binding.create", id);
        assert_eq!(event["after"]["role"], b["role"]);
    }
}

#[tokio::test]
async fn tokens_are_listed_and_revoked_without_their_secrets_and_bad_input_stores_nothing() {
    let s = Server::start().await;
    let (status, created) = s
        .post(
            "/api/v1/tokens",
            &json!({"name": "ci", "role": "evaluator", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().expect("secret");
    assert!(secret.starts_with("vx_"), "{secret}");
    for field in ["id", "name", "role", "namespace", "createdAt", "createdBy"] {
        assert!(created.get(field).is_some(), "{field} missing: {created}");
    }
    assert_eq!(created["createdBy"], json!({"kind": "user", "id": "admin"}));
    assert!(created.get("digest").is_none());

    let (status, list) = s.get("/api/v1/tokens").await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], created["id"]);
    assert!(items[0].get("token").is_none() && items[0].get("digest").is_none());
    assert!(!list.to_string().contains(secret.trim_start_matches("vx_")));

    for (what, body) in [
        (
            "an unknown field",
            json!({"name": "x", "role": "viewer", "namespace": "default", "secret": "mine"}),
        ),
        (
            "a missing role",
            json!({"name": "x", "namespace": "default"}),
        ),
        (
            "an unknown role",
            json!({"name": "x", "role": "superuser", "namespace": "default"}),
        ),
        (
            "a bad namespace",
            json!({"name": "x", "role": "viewer", "namespace": "Not A Key"}),
        ),
        (
            "an expiry in the past",
            json!({"name": "x", "role": "viewer", "namespace": "default", "expiresAt": 1}),
        ),
        (
            "a number for a name",
            json!({"name": 5, "role": "viewer", "namespace": "default"}),
        ),
    ] {
        let (status, problem) = s.post("/api/v1/tokens", &body).await;
        assert_eq!(status, 400, "{what}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
    let (status, problem) = s
        .post(
            "/api/v1/tokens",
            &json!({"name": "x", "role": "viewer", "namespace": "default", "secret": "mine"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("secret")),
        "the problem does not name the field: {problem}"
    );
    let (_, list) = s.get("/api/v1/tokens").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    let (status, _) = s.delete("/api/v1/tokens/no-such-token").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn users_roles_and_bindings_round_trip_without_password_hashes() {
    let s = Server::start().await;

    // Sign-in answers a session that expires in the future and is not cacheable.
    let resp = client()
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let session: Value = resp.json().await.expect("JSON");
    let now_ms = now_secs() * 1000;
    assert!(
        session["expiresAt"].as_i64().is_some_and(|at| at > now_ms),
        "{session}"
    );
    let (status, problem) = send(
        client()
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": "admin"})),
    )
    .await;
    assert_eq!(status, 400, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("password")),
        "{problem}"
    );

    // Users.
    let (status, problem) = s
        .post(
            "/api/v1/users",
            &json!({"name": "ana", "password": "short"}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = s.get("/api/v1/users/ana").await;
    assert_eq!(status, 404, "a refused user was stored");
    let resp = s
        .http
        .post(s.url("/api/v1/users"))
        .json(&json!({"name": "ana", "password": "ana-password", "displayName": "Ana"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        resp.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some("\"1\"")
    );
    let (status, _) = s
        .post(
            "/api/v1/users",
            &json!({"name": "ana", "password": "ana-password"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, users) = s.get("/api/v1/users").await;
    assert_eq!(status, 200);
    let text = users.to_string();
    assert!(
        !text.contains("passwordHash") && !text.contains("$argon2"),
        "{users}"
    );
    let (_, ana) = s.get("/api/v1/users/ana").await;
    assert_eq!(
        (ana["displayName"].clone(), ana.get("passwordHash")),
        (json!("Ana"), None)
    );

    let patch = |tag: &str, body: Value| {
        send(
            s.http
                .patch(s.url("/api/v1/users/ana"))
                .header("if-match", tag)
                .json(&body),
        )
    };
    let (status, _) = patch("\"7\"", json!({"displayName": "Stale"})).await;
    assert_eq!(status, 412);
    let (status, updated) = patch("\"1\"", json!({"displayName": "Ana B."})).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["version"].clone(), updated["displayName"].clone()),
        (json!(2), json!("Ana B."))
    );
    let (status, problem) = patch("\"2\"", json!({"role": "admin"})).await;
    assert_eq!(status, 400, "{problem}");

    // Ana changes her own password (no permission needed), which ends her older session, but
    // may not disable herself or touch anyone else.
    let old = login(&s.process.base, "ana", "ana-password").await;
    let ana_client = client_with_token(&old);
    let (status, body) = send(
        ana_client
            .patch(s.url("/api/v1/users/ana"))
            .json(&json!({"disabled": true})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = send(
        ana_client
            .patch(s.url("/api/v1/users/admin"))
            .json(&json!({"displayName": "pwned"})),
    )
    .await;
    assert_eq!(status, 403);
    // Sessions carry whole seconds: wait for the next one so the change is strictly later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = send(
        ana_client
            .patch(s.url("/api/v1/users/ana"))
            .json(&json!({"password": "ana-new-password"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = send(ana_client.get(s.url("/api/v1/namespaces"))).await;
    assert_eq!(
        status, 401,
        "the session from before the password change still works"
    );
    login(&s.process.base, "ana", "ana-new-password").await;

    // Roles.
    let (status, roles) = s.get("/api/v1/roles").await;
    assert_eq!(status, 200);
    let builtin: Vec<&str> = roles["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["builtin"] == true)
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(builtin, ["admin", "editor", "viewer", "evaluator"]);
    let (status, viewer) = s.get("/api/v1/roles/viewer").await;
    assert_eq!(status, 200);
    assert_eq!(viewer["builtin"], true);
    let (status, _) = s.delete("/api/v1/roles/admin").await;
    assert_eq!(status, 409);
    let (status, problem) = s
        .post(
            "/api/v1/roles",
            &json!({"name": "ops", "permissions": ["flag:delete"]}),
        )
        .await;
    assert_eq!(status, 400, "{problem}");
    let (status, _) = s.get("/api/v1/roles/ops").await;
    assert_eq!(status, 404, "a refused role was stored");
    let (status, ops) = s
        .post(
            "/api/v1/roles",
            &json!({"name": "ops", "permissions": ["flag:read"]}),
        )
        .await;
    assert_eq!(
        (status, ops["builtin"].clone()),
        (201, json!(false)),
        "{ops}"
    );
    let (status, _) = s
        .put(
            "/api/v1/roles/ops",
            &json!({"permissions": ["flag:read", "flag:write"]}),
            Some("\"9\""),
        )
        .await;
    assert_eq!(status, 412);
    let (status, ops) = s
        .put(
            "/api/v1/roles/ops",
            &json!({"permissions": ["flag:read", "flag:write"]}),
            Some("\"1\""),
        )
        .await;
    assert_eq!(status, 200, "{ops}");
    assert_eq!(ops["permissions"], json!(["flag:read", "flag:write"]));

    // Bindings: a bound role cannot be deleted until the binding goes.
    let (status, binding) = s
        .post(
            "/api/v1/bindings",
            &json!({"subject": "user:ana", "role": "ops", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 201, "{binding}");
    let (status, _) = s
        .post(
            "/api/v1/bindings",
            &json!({"subject": "user:nobody", "role": "ops", "namespace": "default"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = s.delete("/api/v1/roles/ops").await;
    assert_eq!(status, 409);
    let id = binding["id"].as_str().expect("id");
    let (status, _) = s.delete(&format!("/api/v1/bindings/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = s.delete(&format!("/api/v1/bindings/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = s.delete("/api/v1/roles/ops").await;
    assert_eq!(status, 204);

    // Deleting yourself is refused; deleting ana works.
    let (status, _) = s.delete("/api/v1/users/admin").await;
    assert_eq!(status, 409);
    let (status, _) = s.delete("/api/v1/users/ana").await;
    assert_eq!(status, 204);
    let (status, _) = s.get("/api/v1/users/ana").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_first_start_without_an_admin_password_prints_a_generated_one_once_and_it_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = vexil_testkit::server::ServerOptions::new(
        crate::fixtures::binary(),
        dir.path().join("vexil.db"),
    );
    let mut process = vexil_testkit::server::ServerProcess::spawn(&opts);
    // The banner is printed on stderr before the listener opens.
    let generated = |logs: &[String]| -> Vec<String> {
        let mut lines = logs.iter();
        let mut found = Vec::new();
        while let Some(l) = lines.next() {
            // stdout's JSON log lines may land between the banner's stderr lines (two
            // reader threads fill one list), so skip them.
            if l.contains("created the user `admin` with the generated password")
                && let Some(pw) = lines.find(|l| !l.trim().is_empty() && !l.starts_with('{'))
            {
                found.push(pw.trim().to_owned());
            }
        }
        found
    };
    // stdout and stderr are read by separate threads, so the banner may land in the captured
    // logs a moment after the listening line: poll, with a bound.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut first = generated(&process.logs());
    while first.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        first = generated(&process.logs());
    }
    assert_eq!(first.len(), 1, "{:#?}", process.logs());
    let token = crate::fixtures::login(&process.base, "admin", &first[0]).await;
    assert!(!token.is_empty());
    // The structured log only says that it happened.
    assert!(
        process
            .logs()
            .iter()
            .filter(|l| l.starts_with('{'))
            .all(|l| !l.contains(&first[0])),
        "the generated password reached the structured log"
    );

    // A restart on the same store creates nothing and prints nothing.
    assert!(process.terminate(Duration::from_secs(15)).success());
    let again = vexil_testkit::server::ServerProcess::spawn(&opts);
    let token = crate::fixtures::login(&again.base, "admin", &first[0]).await;
    // By now anything printed before the listener opened has been captured.
    assert!(generated(&again.logs()).is_empty(), "{:#?}", again.logs());
    assert!(!token.is_empty());
}

#[tokio::test]
async fn deleting_a_user_or_role_with_a_stale_if_match_is_412_and_deletes_nothing() {
    let s = Server::start().await;
    let (status, _) = s
        .post(
            "/api/v1/roles",
            &json!({"name": "auditor", "permissions": ["audit:read"]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = s
        .post(
            "/api/v1/users",
            &json!({"name": "dora", "password": "a long password"}),
        )
        .await;
    assert_eq!(status, 201);
    for path in ["/api/v1/roles/auditor", "/api/v1/users/dora"] {
        let (status, body) = send(s.http.delete(s.url(path)).header("if-match", "\"7\"")).await;
        assert_eq!(status, 412, "{path}: {body}");
        let (status, _) = s.get(path).await;
        assert_eq!(status, 200, "{path} survived");
        let (status, _) = send(s.http.delete(s.url(path)).header("if-match", "\"1\"")).await;
        assert_eq!(status, 204, "{path}");
        let (status, _) = s.get(path).await;
        assert_eq!(status, 404, "{path} gone");
    }
}

#[tokio::test]
async fn one_address_trying_many_user_names_is_rate_limited_too() {
    let s = Server::start().await;
    // 40 different names from one address at once: no name reaches its own limit, the
    // address does (30 attempts, then one per second).
    let attempts = (0..40).map(|i| {
        send(
            client()
                .post(s.url("/api/v1/auth/login"))
                .json(&json!({"username": format!("spray-{i}"), "password": "guessing-123"})),
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        limited >= 5,
        "a password spray was not limited: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}
