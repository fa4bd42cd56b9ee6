//! Shared fixtures: a spawned server with its own data directory, signed in as `admin`, and
//! small HTTP and gRPC clients that carry that session.

use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::Channel;
use vexil_testkit::server::{ServerOptions, ServerProcess};

/// The password of the `admin` user every test server is bootstrapped with.
pub(crate) const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A server over a private temporary directory (removed on drop, after the process).
pub(crate) struct Server {
    pub(crate) process: ServerProcess,
    pub(crate) dir: tempfile::TempDir,
    /// Carries the admin session (`Authorization: Bearer`).
    pub(crate) http: reqwest::Client,
    /// The admin session's JWT.
    pub(crate) token: String,
    opts: ServerOptions,
}

/// Adds `authorization: Bearer …` to every gRPC call.
#[derive(Clone)]
pub(crate) struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub(crate) fn new(token: &str) -> Self {
        Self(format!("Bearer {token}").parse().expect("ascii token"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

/// A gRPC channel that signs every call in.
pub(crate) type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A client that sends `X-API-Key: <token>` on every request (as OFREP providers do).
pub(crate) fn client_with_api_key(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-api-key", token.parse().expect("header"));
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Signs in and returns the session token.
pub(crate) async fn login(base: &str, user: &str, password: &str) -> String {
    let (status, body) = send(
        client()
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"username": user, "password": password})),
    )
    .await;
    assert_eq!(status, 200, "login as {user} failed: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// A client that sends `Authorization: Bearer <token>` on every request.
pub(crate) fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("client")
}

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vexil-server")
}

impl Server {
    /// A fresh server with default options, signed in as `admin`.
    pub(crate) async fn start() -> Self {
        Self::start_with(|o| o).await
    }

    /// A fresh server, with options adjusted by `f`, signed in as `admin`.
    pub(crate) async fn start_with(f: impl FnOnce(ServerOptions) -> ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = f(ServerOptions::new(binary(), dir.path().join("vexil.db"))
            .env("VEXIL_ADMIN_PASSWORD", ADMIN_PASSWORD));
        let process = ServerProcess::spawn(&opts);
        let token = login(&process.base, "admin", ADMIN_PASSWORD).await;
        Self {
            process,
            dir,
            http: client_with_token(&token),
            token,
            opts,
        }
    }

    /// Restarts on the same data directory and options (after `kill9` or `terminate`). The
    /// session survives: the signing key is kept beside the database.
    pub(crate) fn restart(&mut self) {
        self.process = ServerProcess::spawn(&self.opts);
    }

    /// A gRPC channel carrying the admin session.
    pub(crate) async fn grpc_channel(&self) -> AuthChannel {
        self.grpc_channel_with(&self.token).await
    }

    /// A gRPC channel carrying `token` (a session or an API token).
    pub(crate) async fn grpc_channel_with(&self, token: &str) -> AuthChannel {
        let addr = self
            .process
            .grpc
            .clone()
            .expect("the server logged its gRPC address");
        let ch = Channel::from_shared(addr)
            .expect("uri")
            .connect()
            .await
            .expect("gRPC connect");
        tonic::service::interceptor::InterceptedService::new(ch, Bearer::new(token))
    }

    /// Creates an API token `{name, role, namespace}` as admin and returns its secret.
    pub(crate) async fn api_token(&self, role: &str, namespace: &str) -> String {
        let (status, body) = self
            .post(
                "/api/v1/tokens",
                &json!({"name": format!("{role} token"), "role": role, "namespace": namespace}),
            )
            .await;
        assert_eq!(status, 201, "token creation failed: {body}");
        body["token"].as_str().expect("token secret").to_owned()
    }

    /// Lets callers without credentials evaluate in `ns` (for clients that cannot send any).
    pub(crate) async fn open_anonymous_evaluation(&self, ns: &str) {
        let (_, current) = self.get(&format!("/api/v1/namespaces/{ns}")).await;
        let mut next = json!({
            "name": current["name"],
            "description": current["description"],
            "evaluationContext": current["evaluationContext"],
            "anonymousEvaluation": true,
        });
        if next["evaluationContext"].is_null() {
            next["evaluationContext"] = json!({});
        }
        let (status, body) = self
            .put(&format!("/api/v1/namespaces/{ns}"), &next, None)
            .await;
        assert_eq!(status, 200, "opening anonymous evaluation failed: {body}");
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.process.base)
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        send(self.http.get(self.url(path))).await
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        send(self.http.post(self.url(path)).json(body)).await
    }

    pub(crate) async fn put(
        &self,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.put(self.url(path)).json(body);
        if let Some(tag) = if_match {
            req = req.header("if-match", tag);
        }
        send(req).await
    }

    pub(crate) async fn delete(&self, path: &str) -> (u16, Value) {
        send(self.http.delete(self.url(path))).await
    }

    /// Imports a flagd document into a namespace.
    pub(crate) async fn import(&self, ns: &str, doc: &Value) -> Value {
        let (status, body) = self
            .post(&format!("/api/v1/namespaces/{ns}/import"), doc)
            .await;
        assert_eq!(status, 200, "import failed: {body}");
        body
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Sends and returns (status, JSON body or Null).
pub(crate) async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request failed");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A boolean flag body.
pub(crate) fn bool_flag(key: &str) -> Value {
    serde_json::json!({
        "key": key,
        "name": "A flag",
        "tags": ["checkout"],
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", null]}
    })
}

/// A WebSocket client stream.
pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket handshake request carrying the admin session.
pub(crate) fn authed(
    s: &Server,
    url: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", s.token).parse().expect("header"),
    );
    req
}

/// Opens a WebSocket to `path` on `s` as admin.
pub(crate) async fn ws_connect(s: &Server, path: &str) -> Ws {
    let url = format!("{}{path}", s.process.base.replace("http://", "ws://"));
    tokio_tungstenite::connect_async(authed(s, &url))
        .await
        .expect("websocket connect")
        .0
}

/// The next JSON text frame, within `within`.
pub(crate) async fn next_json_within(ws: &mut Ws, within: Duration) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("json frame");
        }
    }
}
