//! `vexil watch`: the namespace's WebSocket change stream, one JSON line per frame.

use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use crate::Error;
use crate::cli::{Output, Watch};
use crate::client::{Client, chain};
use crate::error::Problem;
use crate::output::Out;

/// The server's close code for a credential revoked mid-stream.
const CLOSE_REVOKED: u16 = 4401;
/// The server's close code for a consumer that fell behind.
const CLOSE_TOO_SLOW: u16 = 4008;

/// Streams frames to standard output until Ctrl-C, `--count` change frames, or the server
/// ends the stream (an error: a watcher expects the stream to go on).
pub(crate) async fn watch(client: &Client, ns: &str, w: &Watch) -> Result<(), Error> {
    let segments: Vec<String> = ["api", "v1", "namespaces", ns, "watch"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let query: Vec<(&'static str, String)> = w
        .from_revision
        .map(|r| ("fromRevision", r.to_string()))
        .into_iter()
        .collect();
    let mut url = client.url(&segments, &query);
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    // Only http and https bases get this far, and both have a ws twin.
    let _ = url.set_scheme(scheme);
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Usage(format!("cannot watch {url}: {e}")))?;
    if let Some(token) = client.token() {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::Usage("the token is not a valid header value".to_owned()))?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| handshake_error(client, &url, e))?;
    // One line per frame whatever -o says: the stream is JSON lines by nature.
    let out = Out {
        format: Output::Json,
    };
    let mut changes = 0u64;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let frame = tokio::select! {
            _ = &mut ctrl_c => {
                let _ = ws.close(None).await;
                return Ok(());
            }
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                out.line(text.as_str())?;
                let kind = serde_json::from_str::<Value>(text.as_str())
                    .ok()
                    .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
                match kind.as_deref() {
                    Some("change") => {
                        changes += 1;
                        if w.count.is_some_and(|n| changes >= n) {
                            let _ = ws.close(None).await;
                            return Ok(());
                        }
                    }
                    Some("error") => {
                        return Err(Error::Protocol {
                            url: url.to_string(),
                            reason: "the server could not read the namespace".to_owned(),
                        });
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(closed(&url, frame)),
            // Pings are answered by tungstenite on the next read.
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Err(Error::Protocol {
                    url: url.to_string(),
                    reason: chain(&e),
                });
            }
            None => return Err(closed(&url, None)),
        }
    }
}

fn closed(url: &reqwest::Url, frame: Option<tungstenite::protocol::CloseFrame>) -> Error {
    let (code, reason) = frame
        .map(|f| (u16::from(f.code), f.reason.to_string()))
        .unwrap_or((1006, String::new()));
    match code {
        CLOSE_REVOKED => Error::Api(Problem {
            status: 401,
            title: "Unauthorized".to_owned(),
            detail: format!("the server ended the stream: {reason}"),
            fields: Vec::new(),
        }),
        CLOSE_TOO_SLOW => Error::Protocol {
            url: url.to_string(),
            reason: format!("the server ended the stream: {reason} (output was read too slowly)"),
        },
        _ => Error::Protocol {
            url: url.to_string(),
            reason: format!("the server ended the stream (close code {code}) {reason}")
                .trim_end()
                .to_owned(),
        },
    }
}

fn handshake_error(client: &Client, url: &reqwest::Url, e: tungstenite::Error) -> Error {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status();
            Error::Api(Problem::from_body(
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error"),
                resp.body().as_deref().unwrap_or_default(),
            ))
        }
        tungstenite::Error::Io(io) => Error::Unreachable {
            url: client.base().as_str().trim_end_matches('/').to_owned(),
            reason: io.to_string(),
        },
        other => Error::Protocol {
            url: url.to_string(),
            reason: chain(&other),
        },
    }
}
