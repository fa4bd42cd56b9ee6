//! The RBAC matrix: every REST route and every gRPC method, called as each built-in role and
//! as an anonymous caller, against the answers checked in as `rbac-matrix.tsv`.
//!
//! The routes come from the code, not from a list kept by hand: the OpenAPI router
//! (`vexil_server::http::api`, the one list of REST routes) and the file descriptor sets compiled
//! into the server (vexil-proto's, plus gRPC health and reflection). A new endpoint therefore
//! fails this test until the table says who may call it, and a removed one until its row goes.
//!
//! The table is written from the permission model, not from what the server answers: when the
//! two disagree, the server is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _, Bytes};
use serde_json::{Value, json};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{Body, StdError};
use tonic::transport::Channel;

use crate::fixtures::{ADMIN_PASSWORD, AuthChannel, Server, client, client_with_token};

/// The checked-in table.
const TABLE: &str = include_str!("rbac-matrix.tsv");

/// The table's principal columns, in order.
const PRINCIPALS: [&str; 5] = ["admin", "editor", "viewer", "evaluator", "anonymous"];

/// The namespace the matrix runs in. It exists, so namespace-scoped handlers that look the
/// namespace up reach their permission check; it has not opted in to anonymous evaluation.
const NS: &str = "matrix";

/// What the namespace routes themselves (`/api/v1/namespaces/{ns}`) are called with: a
/// namespace that does not exist, so an allowed PUT or DELETE answers 404 instead of changing
/// or removing [`NS`].
const MISSING_NS: &str = "matrix-missing";

/// How long a stream may stay silent after its headers before the call counts as accepted: a
/// refusal arrives at once (trailers-only, or as the first item), never later.
const STREAM_QUIET: Duration = Duration::from_secs(5);

/// Bound on any single call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------ table

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Surface {
    Rest,
    Grpc,
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Surface::Rest => "rest",
            Surface::Grpc => "grpc",
        })
    }
}

/// One expected answer (a table cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    /// Neither 401 nor 403 (nor UNAUTHENTICATED nor PERMISSION_DENIED).
    Allow,
    /// 401 / UNAUTHENTICATED.
    Unauthenticated,
    /// 403 / PERMISSION_DENIED.
    Forbidden,
}

impl Cell {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Cell::Allow),
            "401" => Some(Cell::Unauthenticated),
            "403" => Some(Cell::Forbidden),
            _ => None,
        }
    }
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cell::Allow => "allow",
            Cell::Unauthenticated => "401",
            Cell::Forbidden => "403",
        })
    }
}

#[derive(Debug)]
struct Row {
    surface: Surface,
    route: String,
    expected: [Cell; 5],
}

/// Parses the table: `#` comments and blank lines are skipped, the first other line is the
/// header, and cells are separated by one or more tabs (so a reader may align the columns).
fn table() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut header = None;
    for (i, line) in TABLE.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let cells: Vec<&str> = line
            .split('\t')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        if header.is_none() {
            let expected: Vec<&str> = ["surface", "route"].into_iter().chain(PRINCIPALS).collect();
            assert_eq!(cells, expected, "rbac-matrix.tsv:{line_no}: bad header");
            header = Some(());
            continue;
        }
        assert_eq!(
            cells.len(),
            2 + PRINCIPALS.len(),
            "rbac-matrix.tsv:{line_no}: expected {} tab-separated cells, got {cells:?}",
            2 + PRINCIPALS.len()
        );
        let surface = match cells[0] {
            "rest" => Surface::Rest,
            "grpc" => Surface::Grpc,
            other => panic!("rbac-matrix.tsv:{line_no}: surface {other:?} is not rest or grpc"),
        };
        let mut expected = [Cell::Allow; 5];
        for (slot, text) in expected.iter_mut().zip(&cells[2..]) {
            *slot = Cell::parse(text).unwrap_or_else(|| {
                panic!("rbac-matrix.tsv:{line_no}: cell {text:?} is not allow, 401 or 403")
            });
        }
        rows.push(Row {
            surface,
            route: cells[1].to_owned(),
            expected,
        });
    }
    rows
}

// ------------------------------------------------------------------------------- enumeration

#[derive(Debug, Clone)]
struct RestRoute {
    method: String,
    path: String,
    /// The operation documents a 101: it is a WebSocket, probed with a real handshake, since
    /// axum refuses a plain GET in the upgrade extractor before the handler (and its permission
    /// check) runs.
    websocket: bool,
}

impl RestRoute {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// Every REST operation the router serves. `http::router` is `http::api()` plus the 404/405
/// fallbacks and middleware, and `api()` registers routes only through `routes!`, which
/// documents them; so the document is the complete list. (The guard test below keeps
/// `router()` from growing routes of its own, and the route-coverage test in `openapi.rs`
/// checks served ⇔ documented for every method on every path.)
fn rest_routes() -> Vec<RestRoute> {
    let doc = serde_json::to_value(vexil_server::http::openapi()).expect("document as JSON");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            let Some(op) = item.get(method) else { continue };
            out.push(RestRoute {
                method: method.to_uppercase(),
                path: path.clone(),
                websocket: op["responses"].get("101").is_some(),
            });
        }
    }
    out
}

#[derive(Debug, Clone)]
struct GrpcMethod {
    /// `/{package}.{Service}/{Method}`.
    path: String,
    client_streaming: bool,
    server_streaming: bool,
}

/// The packages vexil-proto must hold: if decoding silently found fewer, the matrix would
/// shrink with it.
const PROTO_PACKAGES: [&str; 4] = [
    "vexil.v1",
    "flagd.evaluation.v1",
    "flagd.evaluation.v2",
    "flagd.sync.v1",
];

/// Every gRPC method compiled into the server: vexil-proto's descriptor set (the one the
/// server registers for reflection) and those of the health and reflection services it adds.
fn grpc_methods() -> Vec<GrpcMethod> {
    let sets: [(&str, &[u8]); 3] = [
        ("vexil-proto", vexil_proto::FILE_DESCRIPTOR_SET),
        ("tonic-health", tonic_health::pb::FILE_DESCRIPTOR_SET),
        (
            "tonic-reflection v1",
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ),
    ];
    let mut out = Vec::new();
    for (origin, bytes) in sets {
        let set = prost_types::FileDescriptorSet::decode(bytes)
            .unwrap_or_else(|e| panic!("the {origin} descriptor set does not decode: {e}"));
        let mut packages = BTreeSet::new();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                packages.insert(package.to_owned());
                for m in &service.method {
                    out.push(GrpcMethod {
                        path: format!("/{package}.{}/{}", service.name(), m.name()),
                        client_streaming: m.client_streaming(),
                        server_streaming: m.server_streaming(),
                    });
                }
            }
        }
        if origin == "vexil-proto" {
            for p in PROTO_PACKAGES {
                assert!(
                    packages.contains(p),
                    "vexil-proto's descriptor set has no service in {p}: {packages:?}"
                );
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------ probes

/// What a call answered, reduced to a cell, or to a failure whatever the cell says.
#[derive(Debug, Clone)]
struct Answer {
    cell: Option<Cell>,
    /// The status, for the report.
    detail: String,
}

impl Answer {
    fn rest(status: u16, body: &str) -> Self {
        let unrouted = status == 404 && body.contains("no route for");
        let cell = match status {
            401 => Some(Cell::Unauthenticated),
            403 => Some(Cell::Forbidden),
            // A 5xx is a bug, and 405 or an unrouted 404 means the row's route is not served:
            // none of them tells anything about permissions.
            s if s >= 500 || s == 405 || unrouted => None,
            _ => Some(Cell::Allow),
        };
        let mut detail = status.to_string();
        if cell.is_none() {
            detail.push_str(": ");
            detail.extend(body.chars().take(200));
        }
        Self { cell, detail }
    }

    fn grpc(result: Result<(), tonic::Status>) -> Self {
        let Err(status) = result else {
            return Self {
                cell: Some(Cell::Allow),
                detail: "OK".into(),
            };
        };
        let cell = match status.code() {
            Code::Unauthenticated => Some(Cell::Unauthenticated),
            Code::PermissionDenied => Some(Cell::Forbidden),
            // The gRPC counterparts of a 5xx, and UNIMPLEMENTED: a method in the descriptor
            // set that the server does not serve.
            Code::Internal
            | Code::Unknown
            | Code::Unimplemented
            | Code::Unavailable
            | Code::DataLoss => None,
            _ => Some(Cell::Allow),
        };
        Self {
            cell,
            detail: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    fn broken(detail: String) -> Self {
        Self { cell: None, detail }
    }
}

/// A concrete URL path for a templated one. The values name nothing that exists, so an allowed
/// write answers 404, 400 or 409 instead of changing anything.
fn concrete(path: &str, ns: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').map_or(rest.len(), |j| i + j + 1);
        out.push_str(match &rest[i + 1..j - 1] {
            "ns" => ns,
            "file" => "index.html",
            // Flag and segment keys, user and role names, binding and token ids.
            _ => "nope",
        });
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

/// The namespace a route is called in by the matrix (see [`MISSING_NS`]).
fn matrix_namespace(route: &RestRoute) -> &'static str {
    if route.path == "/api/v1/namespaces/{ns}" {
        MISSING_NS
    } else {
        NS
    }
}

/// The body a route is sent, if it takes one: valid JSON that changes nothing. Most are `{}`
/// (an allowed caller gets a 400 from validation, after authorization).
fn rest_body(route: &RestRoute, login_user: &str, login_password: &str) -> Option<Value> {
    let body = match (route.method.as_str(), route.path.as_str()) {
        // Login needs no credentials but must get good ones: a refused password is a 401,
        // which would read as "not allowed".
        ("POST", "/api/v1/auth/login") => {
            json!({"username": login_user, "password": login_password})
        }
        // The key is what this route authorizes on; `matrix` exists, so allowed callers get 409.
        ("POST", "/api/v1/namespaces") => json!({"key": NS}),
        ("POST", "/api/v1/namespaces/{ns}/evaluate") => json!({"flagKey": "nope", "context": {}}),
        ("POST", p) if p.starts_with("/ofrep/") => json!({"context": {}}),
        ("POST" | "PUT" | "PATCH", _) => json!({}),
        _ => return None,
    };
    Some(body)
}

/// Calls one REST route as `token` (`None`: anonymous) in namespace `ns`.
async fn call_rest(s: &Server, route: &RestRoute, ns: &str, token: Option<&str>) -> Answer {
    let mut path = concrete(&route.path, ns);
    if route.path.ends_with("/import") {
        // Never write, even if an empty document were accepted.
        path.push_str("?dryRun=true");
    }
    if route.websocket {
        return call_websocket(s, &path, token).await;
    }
    let http = token.map_or_else(client, client_with_token);
    let method = reqwest::Method::from_bytes(route.method.as_bytes()).expect("method");
    let mut req = http
        .request(method, s.url(&path))
        // OFREP's namespace; other routes ignore it.
        .header("x-vexil-namespace", ns)
        .timeout(CALL_TIMEOUT);
    if let Some(body) = rest_body(route, "admin", ADMIN_PASSWORD) {
        let content_type = if route.method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        req = req
            .header("content-type", content_type)
            .body(body.to_string());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            Answer::rest(status, &text)
        }
        Err(e) => Answer::broken(format!("request failed: {e}")),
    }
}

/// A WebSocket handshake: 101, or the HTTP answer that refused it.
async fn call_websocket(s: &Server, path: &str, token: Option<&str>) -> Answer {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{Error, http::HeaderValue};

    let url = s.url(path).replacen("http://", "ws://", 1);
    let mut req = url.into_client_request().expect("ws url");
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("header"),
        );
    }
    match tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((socket, resp))) => {
            drop(socket);
            Answer::rest(resp.status().as_u16(), "")
        }
        Ok(Err(Error::Http(resp))) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Answer::rest(resp.status().as_u16(), &body)
        }
        Ok(Err(e)) => Answer::broken(format!("WebSocket handshake failed: {e}")),
        Err(_) => Answer::broken("WebSocket handshake timed out".into()),
    }
}

/// Sends pre-encoded messages and hands responses back as raw bytes, so any method can be
/// called without its generated types. An empty message (zero bytes) decodes as every field
/// at its default, for any proto3 message.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The request message a method is sent: empty, except for Login, which needs real
/// credentials (a refused password is UNAUTHENTICATED, which would read as "not allowed").
fn grpc_body(m: &GrpcMethod, login_user: &str, login_password: &str) -> Bytes {
    if m.path == "/vexil.v1.AuthService/Login" {
        return vexil_proto::vexil::v1::LoginRequest {
            username: login_user.to_owned(),
            password: login_password.to_owned(),
        }
        .encode_to_vec()
        .into();
    }
    Bytes::new()
}

/// Calls one gRPC method with `body`, the namespace in `x-vexil-namespace` metadata. A
/// streaming call's status comes either as the call's error or as the first item's.
async fn call_grpc<T>(channel: T, m: &GrpcMethod, body: Bytes, ns: &str) -> Answer
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let call = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {}", e.into())))?;
        let path = PathAndQuery::try_from(m.path.as_str()).expect("gRPC path");
        let namespace = ns.parse().expect("ascii namespace");
        let mut stream = match (m.client_streaming, m.server_streaming) {
            (false, false) => {
                let mut req = tonic::Request::new(body);
                req.metadata_mut().insert("x-vexil-namespace", namespace);
                return grpc.unary(req, path, RawCodec).await.map(drop);
            }
            (false, true) => {
                let mut req = tonic::Request::new(body);
                req.metadata_mut().insert("x-vexil-namespace", namespace);
                grpc.server_streaming(req, path, RawCodec)
                    .await?
                    .into_inner()
            }
            (true, false) => {
                let mut req = tonic::Request::new(tokio_stream::once(body));
                req.metadata_mut().insert("x-vexil-namespace", namespace);
                return grpc.client_streaming(req, path, RawCodec).await.map(drop);
            }
            (true, true) => {
                let mut req = tonic::Request::new(tokio_stream::once(body));
                req.metadata_mut().insert("x-vexil-namespace", namespace);
                grpc.streaming(req, path, RawCodec).await?.into_inner()
            }
        };
        match tokio::time::timeout(STREAM_QUIET, stream.message()).await {
            // A message, a clean end, or headers followed by silence: accepted.
            Ok(Ok(_)) | Err(_) => Ok(()),
            Ok(Err(status)) => Err(status),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Answer::grpc(result),
        Err(_) => Answer::broken("gRPC call timed out".into()),
    }
}

/// The credentials of one column: a bearer token and a gRPC channel carrying it, or none.
struct Principal {
    name: &'static str,
    token: Option<String>,
    grpc: Option<AuthChannel>,
}

impl Principal {
    async fn bearer(s: &Server, name: &'static str, token: String) -> Self {
        Self {
            name,
            grpc: Some(s.grpc_channel_with(&token).await),
            token: Some(token),
        }
    }
}

async fn call_grpc_as(
    anonymous: &Channel,
    p: &Principal,
    m: &GrpcMethod,
    body: Bytes,
    ns: &str,
) -> Answer {
    match &p.grpc {
        Some(ch) => call_grpc(ch.clone(), m, body, ns).await,
        None => call_grpc(anonymous.clone(), m, body, ns).await,
    }
}

/// A gRPC channel without credentials.
async fn anonymous_channel(s: &Server) -> Channel {
    let addr = s
        .process
        .grpc
        .clone()
        .expect("the server logged its gRPC address");
    Channel::from_shared(addr)
        .expect("uri")
        .connect()
        .await
        .expect("gRPC connect")
}

async fn create_namespace(s: &Server, key: &str) {
    let (status, body) = s.post("/api/v1/namespaces", &json!({"key": key})).await;
    assert_eq!(status, 201, "creating namespace {key}: {body}");
}

/// Formats mismatches as an aligned table.
fn report(title: &str, lines: &[[String; 5]]) -> String {
    let head = [
        "surface".to_owned(),
        "route".to_owned(),
        "principal".to_owned(),
        "expected".to_owned(),
        "got".to_owned(),
    ];
    let mut widths = [0; 5];
    for l in std::iter::once(&head).chain(lines) {
        for (w, c) in widths.iter_mut().zip(l) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("{title}\n");
    for l in std::iter::once(&head).chain(lines) {
        let cells: Vec<String> = l
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------------------------- tests

#[test]
fn the_rbac_matrix_has_exactly_one_row_for_every_rest_route_and_grpc_method() {
    let rows = table();
    let mut listed: BTreeMap<(Surface, String), usize> = BTreeMap::new();
    for r in &rows {
        *listed.entry((r.surface, r.route.clone())).or_default() += 1;
    }
    let served: BTreeSet<(Surface, String)> = rest_routes()
        .iter()
        .map(|r| (Surface::Rest, r.name()))
        .chain(grpc_methods().into_iter().map(|m| (Surface::Grpc, m.path)))
        .collect();
    let mut problems = Vec::new();
    for key in &served {
        if !listed.contains_key(key) {
            problems.push(format!(
                "missing from rbac-matrix.tsv: {}\t{}  (add a row saying who may call it)",
                key.0, key.1
            ));
        }
    }
    for (key, n) in &listed {
        if !served.contains(key) {
            problems.push(format!(
                "rbac-matrix.tsv lists {} {}, which the server no longer has",
                key.0, key.1
            ));
        }
        if *n > 1 {
            problems.push(format!(
                "rbac-matrix.tsv lists {} {} {n} times",
                key.0, key.1
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_router_serves_no_route_outside_the_openapi_router() {
    // `http::router` may only add fallbacks and layers to `http::api()`; a route added there
    // would be served without a row in the matrix (or in the OpenAPI document). A source check,
    // since an axum Router cannot list its routes.
    let source = include_str!("../../src/http/mod.rs");
    let router_fn = source
        .split_once("pub fn router(")
        .map(|(_, body)| body)
        .expect("src/http/mod.rs defines `pub fn router(`");
    for call in [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".merge(",
    ] {
        assert!(
            !router_fn.contains(call),
            "http::router calls `{call}`: add routes to http::api() through routes!(…) instead, \
             so they are documented and covered by the RBAC matrix"
        );
    }
}

#[tokio::test]
async fn every_principal_gets_what_the_rbac_matrix_says_on_every_route() {
    let s = Server::start().await;
    create_namespace(&s, NS).await;
    // Admin signs in with its session; the other roles are API tokens bound at `*`.
    let mut principals = vec![Principal::bearer(&s, "admin", s.token.clone()).await];
    for role in ["editor", "viewer", "evaluator"] {
        let token = s.api_token(role, "*").await;
        principals.push(Principal::bearer(&s, role, token).await);
    }
    principals.push(Principal {
        name: "anonymous",
        token: None,
        grpc: None,
    });
    let names: Vec<&str> = principals.iter().map(|p| p.name).collect();
    assert_eq!(names, PRINCIPALS, "principals in table order");

    // gRPC logins sign in as a user of their own: with REST's and the fixture's, admin alone
    // would exceed the per-user login burst, and a rate-limited sign-in proves nothing.
    let grpc_login = ("matrix-login", "matrix-login-password");
    let (status, body) = s
        .post(
            "/api/v1/users",
            &json!({"name": grpc_login.0, "password": grpc_login.1}),
        )
        .await;
    assert_eq!(status, 201, "creating the gRPC login user: {body}");

    let rows = table();
    let rest: BTreeMap<String, RestRoute> =
        rest_routes().into_iter().map(|r| (r.name(), r)).collect();
    let grpc: BTreeMap<String, GrpcMethod> = grpc_methods()
        .into_iter()
        .map(|m| (m.path.clone(), m))
        .collect();
    let anonymous = anonymous_channel(&s).await;

    let mut mismatches = Vec::new();
    let mut unknown = Vec::new();
    for row in &rows {
        for (p, expected) in principals.iter().zip(row.expected) {
            let got = match row.surface {
                Surface::Rest => match rest.get(&row.route) {
                    Some(route) => {
                        call_rest(&s, route, matrix_namespace(route), p.token.as_deref()).await
                    }
                    None => {
                        unknown.push(row.route.clone());
                        break;
                    }
                },
                Surface::Grpc => match grpc.get(&row.route) {
                    Some(m) => {
                        let body = grpc_body(m, grpc_login.0, grpc_login.1);
                        call_grpc_as(&anonymous, p, m, body, NS).await
                    }
                    None => {
                        unknown.push(row.route.clone());
                        break;
                    }
                },
            };
            if got.cell != Some(expected) {
                let verdict = got.cell.map_or("broken".to_owned(), |c| c.to_string());
                mismatches.push([
                    row.surface.to_string(),
                    row.route.clone(),
                    p.name.to_owned(),
                    expected.to_string(),
                    format!("{verdict} ({})", got.detail),
                ]);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}",
        report(
            &format!(
                "{} of {} calls disagree with rbac-matrix.tsv (fix the server, not the table, \
                 unless the permission model changed){}",
                mismatches.len(),
                rows.len() * PRINCIPALS.len(),
                if unknown.is_empty() {
                    String::new()
                } else {
                    format!("; rows not served, skipped: {unknown:?}")
                }
            ),
            &mismatches
        )
    );
}

#[tokio::test]
async fn a_viewer_bound_to_one_namespace_is_refused_the_read_routes_of_another() {
    let s = Server::start().await;
    let other = "matrix-other";
    create_namespace(&s, NS).await;
    create_namespace(&s, other).await;
    let token = s.api_token("viewer", NS).await;
    let channel = s.grpc_channel_with(&token).await;
    let viewer = PRINCIPALS
        .iter()
        .position(|p| *p == "viewer")
        .expect("a viewer column");

    // The namespace-scoped rows a viewer may call: REST routes under a namespace, OFREP (its
    // namespace is a header), and flagd's evaluation and sync services.
    let rest: BTreeMap<String, RestRoute> =
        rest_routes().into_iter().map(|r| (r.name(), r)).collect();
    let grpc: BTreeMap<String, GrpcMethod> = grpc_methods()
        .into_iter()
        .map(|m| (m.path.clone(), m))
        .collect();
    let rows: Vec<Row> = table()
        .into_iter()
        .filter(|r| r.expected[viewer] == Cell::Allow)
        .filter(|r| match r.surface {
            Surface::Rest => r.route.contains("{ns}") || r.route.contains(" /ofrep/"),
            Surface::Grpc => r.route.starts_with("/flagd."),
        })
        .collect();
    assert!(
        rows.iter().any(|r| r.surface == Surface::Rest)
            && rows.iter().any(|r| r.surface == Surface::Grpc),
        "no namespace-scoped read rows found"
    );

    let mut mismatches = Vec::new();
    for row in &rows {
        for (ns, expected) in [(NS, Cell::Allow), (other, Cell::Forbidden)] {
            let got = match row.surface {
                Surface::Rest => {
                    let route = rest.get(&row.route).expect("the table matches the router");
                    call_rest(&s, route, ns, Some(&token)).await
                }
                Surface::Grpc => {
                    let m = grpc
                        .get(&row.route)
                        .expect("the table matches the descriptors");
                    call_grpc(channel.clone(), m, Bytes::new(), ns).await
                }
            };
            if got.cell != Some(expected) {
                let verdict = got.cell.map_or("broken".to_owned(), |c| c.to_string());
                mismatches.push([
                    row.surface.to_string(),
                    row.route.clone(),
                    format!("viewer@{NS} in {ns}"),
                    expected.to_string(),
                    format!("{verdict} ({})", got.detail),
                ]);
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}",
        report(
            "a viewer token bound to `matrix` is not confined to it",
            &mismatches
        )
    );
}
