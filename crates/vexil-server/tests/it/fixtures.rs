//! Shared fixtures: a spawned server with its own data directory, and a small HTTP client.

use std::time::Duration;

use serde_json::Value;
use vexil_testkit::server::{ServerOptions, ServerProcess};

/// A server over a private temporary directory (removed on drop, after the process).
pub(crate) struct Server {
    pub(crate) process: ServerProcess,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) http: reqwest::Client,
}

pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_vexil-server")
}

impl Server {
    /// A fresh server with default options.
    pub(crate) fn start() -> Self {
        Self::start_with(|o| o)
    }

    /// A fresh server, with options adjusted by `f`.
    pub(crate) fn start_with(f: impl FnOnce(ServerOptions) -> ServerOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = f(ServerOptions::new(binary(), dir.path().join("vexil.db")));
        let process = ServerProcess::spawn(&opts);
        Self {
            process,
            dir,
            http: client(),
        }
    }

    /// Restarts on the same data directory (after `kill9` or `terminate`).
    pub(crate) fn restart(&mut self) {
        let opts = ServerOptions::new(binary(), self.dir.path().join("vexil.db"));
        self.process = ServerProcess::spawn(&opts);
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
