//! The HTTP side: one request builder over reqwest that turns transport failures and
//! problem+json answers into [`Error`]s.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use reqwest::{Method, Url};
use serde_json::Value;

use crate::Error;
use crate::error::Problem;

/// How long a request may take as a whole, and how long a streamed body may stall.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The overall deadline of an [`Call::unbounded`] request: in effect none.
const UNBOUNDED_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A client of one server, with the credential every call carries.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// A request body.
#[derive(Debug)]
pub enum Body {
    /// JSON, sent as `application/json`.
    Json(Value),
    /// Bytes with an explicit content type (import files, merge patches).
    Raw {
        /// The bytes.
        bytes: Vec<u8>,
        /// Their media type.
        content_type: &'static str,
    },
}

/// One request: method, path segments (escaped here, so keys never break the URL), query,
/// body and expected version.
#[derive(Debug)]
pub struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Body>,
    if_match: Option<u64>,
    create_only: bool,
    unbounded: bool,
}

impl Call {
    /// A request for `/api/v1/<segments...>`.
    pub fn api(method: Method, segments: &[&str]) -> Self {
        let mut all = vec!["api".to_owned(), "v1".to_owned()];
        all.extend(segments.iter().map(|s| (*s).to_owned()));
        Self {
            method,
            segments: all,
            query: Vec::new(),
            body: None,
            if_match: None,
            create_only: false,
            unbounded: false,
        }
    }

    /// Adds `?name=value` when `value` is present.
    #[must_use]
    pub fn query(mut self, name: &'static str, value: Option<impl ToString>) -> Self {
        if let Some(v) = value {
            self.query.push((name, v.to_string()));
        }
        self
    }

    /// Sets a JSON body.
    #[must_use]
    pub fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }

    /// Sets a body of another media type.
    #[must_use]
    pub fn raw(mut self, bytes: Vec<u8>, content_type: &'static str) -> Self {
        self.body = Some(Body::Raw {
            bytes,
            content_type,
        });
        self
    }

    /// Sends `If-Match: "<version>"` when a version is given.
    #[must_use]
    pub fn if_version(mut self, version: Option<u64>) -> Self {
        self.if_match = version;
        self
    }

    /// Sends `If-None-Match: *` when `create_only`, so an existing resource is not replaced.
    #[must_use]
    pub fn create_only(mut self, create_only: bool) -> Self {
        self.create_only = create_only;
        self
    }

    /// Lifts the overall deadline, for a body read as a stream that may take as long as it
    /// takes (an audit export); the client's read timeout still ends one that stalls.
    #[must_use]
    pub fn unbounded(mut self) -> Self {
        self.unbounded = true;
        self
    }
}

/// A successful answer whose body is read a chunk at a time.
#[derive(Debug)]
pub struct Streamed<'a> {
    client: &'a Client,
    url: Url,
    resp: reqwest::Response,
}

impl Streamed<'_> {
    /// The URL that answered (for messages).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The next piece of the body, `None` at its end.
    pub async fn chunk(
        &mut self,
    ) -> Result<Option<impl std::ops::Deref<Target = [u8]> + use<>>, Error> {
        self.resp
            .chunk()
            .await
            .map_err(|e| self.client.transport(&self.url, &e))
    }
}

/// A successful answer.
#[derive(Debug)]
pub struct Reply {
    /// The URL that answered (for messages).
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub bytes: Vec<u8>,
}

impl Reply {
    /// The body as JSON; an empty body (204) is `null`.
    pub fn json(&self) -> Result<Value, Error> {
        if self.bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.bytes).map_err(|e| Error::Protocol {
            url: self.url.clone(),
            reason: format!("the body is not JSON: {e}"),
        })
    }
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Result<Self, Error> {
        let base = parse_base(base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .read_timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("vexil-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The credential calls carry, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of a path under the base, with each segment escaped.
    pub fn url(&self, segments: &[String], query: &[(&'static str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// Sends a request; any status outside 2xx becomes [`Error::Api`].
    pub async fn send(&self, call: Call) -> Result<Reply, Error> {
        let Streamed { url, resp, .. } = self.start(call).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.transport(&url, &e))?
            .to_vec();
        Ok(Reply {
            url: url.to_string(),
            status,
            bytes,
        })
    }

    /// Sends a request and returns the answer with its body still unread; any status outside
    /// 2xx becomes [`Error::Api`].
    pub async fn start(&self, call: Call) -> Result<Streamed<'_>, Error> {
        let url = self.url(&call.segments, &call.query);
        let mut req = self.http.request(call.method, url.clone());
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(v) = call.if_match {
            req = req.header(IF_MATCH, format!("\"{v}\""));
        }
        if call.create_only {
            req = req.header(IF_NONE_MATCH, "*");
        }
        if call.unbounded {
            req = req.timeout(UNBOUNDED_TIMEOUT);
        }
        req = match call.body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw {
                bytes,
                content_type,
            }) => req.header(CONTENT_TYPE, content_type).body(bytes),
            None => req,
        };
        let resp = req.send().await.map_err(|e| self.transport(&url, &e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.map_err(|e| self.transport(&url, &e))?;
            return Err(Error::Api(Problem::from_body(
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error"),
                &bytes,
            )));
        }
        Ok(Streamed {
            client: self,
            url,
            resp,
        })
    }

    /// Sends a request and reads the answer as JSON.
    pub async fn json(&self, call: Call) -> Result<Value, Error> {
        self.send(call).await?.json()
    }

    fn transport(&self, url: &Url, e: &reqwest::Error) -> Error {
        let reason = chain(e);
        if e.is_connect() || e.is_timeout() {
            Error::Unreachable {
                url: self.base.as_str().trim_end_matches('/').to_owned(),
                reason,
            }
        } else {
            Error::Protocol {
                url: url.to_string(),
                reason,
            }
        }
    }
}

/// Parses and checks a base URL.
fn parse_base(base: &str) -> Result<Url, Error> {
    let url =
        Url::parse(base).map_err(|e| Error::Usage(format!("--url {base} is not a URL: {e}")))?;
    match url.scheme() {
        "http" => Ok(url),
        "https" => tls_base(url),
        other => Err(Error::Usage(format!(
            "--url {base}: the scheme must be http or https, not {other}"
        ))),
    }
}

#[cfg(feature = "tls")]
fn tls_base(url: Url) -> Result<Url, Error> {
    Ok(url)
}

#[cfg(not(feature = "tls"))]
fn tls_base(url: Url) -> Result<Url, Error> {
    Err(Error::Usage(format!(
        "--url {url}: this build of vexil speaks plain HTTP only; rebuild it with \
         the `tls` feature, or reach the server over http (e.g. through an SSH tunnel)"
    )))
}

/// An error's message with its causes, innermost last ("connection refused" is usually only
/// in the innermost one).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}
