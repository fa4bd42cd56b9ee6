//! The WebSocket change stream: `GET /api/v1/namespaces/{ns}/watch?fromRevision=N`.
//!
//! Frames are JSON text. Without `fromRevision` (or with 0, or with a revision the server has
//! not reached) the stream opens with one `snapshot` frame holding every flag and segment at a
//! revision (and every configuration entry, for a watcher with `config:read`); after that, and
//! when resuming from a revision the log still holds, it sends one `change` frame per changed
//! resource (kind `flag`, `segment`, `namespace`, or `config` for a watcher with
//! `config:read`), in revision order. The server pings every [`PING_EVERY`]; client pings are
//! answered. A consumer that cannot take a frame within
//! `VEXIL_WATCH_SEND_TIMEOUT_MS` (10 s by default) is closed with code 4008 ("consumer too
//! slow") instead of being buffered for: the stream holds at most one batch of changes in
//! memory. When the store's change log no longer reaches the watcher's revision (etcd keeps
//! the last `ETCD_CHANGE_RETENTION` commits), the stream sends a new `snapshot` frame, which
//! replaces the watcher's state, and goes on from there.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use vexil_core::domain::Revision;
use vexil_service::{ChangeBatch, Permission, Principal};

use super::admin::Params;
use super::extract::Caller;
use super::problem::ApiError;
use super::schema;
use crate::AppState;

/// Server ping interval.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// Close code for a consumer that falls behind.
pub const CLOSE_TOO_SLOW: u16 = 4008;

/// Close code when the watcher's credential is revoked, expires, or loses the permission
/// mid-stream (4000-4999 are for applications; 4401 echoes HTTP 401).
pub const CLOSE_REVOKED: u16 = 4401;

/// Changes read per batch; bounds the memory one stream can hold.
const BATCH: usize = 1_000;

/// `?fromRevision=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct WatchParams {
    /// Resume after this revision; absent or 0 starts with a snapshot.
    from_revision: Option<u64>,
}

/// Watch a namespace's changes over WebSocket
///
/// Upgrades to a WebSocket that streams `snapshot` and `change` frames (JSON) in revision order.
#[utoipa::path(
    get,
    path = "/api/v1/namespaces/{ns}/watch",
    tag = "watch",
    params(schema::NamespacePath, WatchParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, response = schema::BadRequest),
        (status = 401, response = schema::Unauthorized),
        (status = 403, response = schema::Forbidden),
        (status = 404, response = schema::NotFound),
        (status = 503, response = schema::Unavailable),
    )
)]
pub async fn watch(
    State(app): State<Arc<AppState>>,
    Caller(p): Caller,
    Path(ns): Path<String>,
    Params(q): Params<WatchParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Check the permission, then the namespace, before upgrading, so errors are plain HTTP and
    // a caller without the permission learns nothing, not even that this is a WebSocket route.
    let pass = p.authorize(Permission::FlagRead, &ns)?;
    app.flags.get_namespace(&pass, &ns).await?;
    let ws = ws.map_err(|e| ApiError(super::problem::Problem::bad_request(e.body_text())))?;
    let from = q.from_revision.unwrap_or(0);
    Ok(ws.on_upgrade(move |socket| stream(app, p, ns, from, socket)))
}

/// Why a snapshot frame did not go out.
enum Snapshot {
    /// The namespace could not be read; the stream may go on.
    NotRead(vexil_service::ServiceError),
    /// The watcher is gone or too slow; the stream ends.
    NotSent,
}

/// Reads the namespace consistently and sends it as a `snapshot` frame, which replaces
/// whatever the watcher held; returns the revision it is at.
async fn send_snapshot(
    app: &AppState,
    pass: &vexil_service::Pass<'_>,
    ns: &str,
    socket: &mut WebSocket,
) -> Result<Revision, Snapshot> {
    let (state, configs) = app
        .flags
        .watch_snapshot(pass, ns)
        .await
        .map_err(Snapshot::NotRead)?;
    let revision = state.revision;
    let mut frame = json!({
        "type": "snapshot",
        "namespace": ns,
        "revision": revision,
        "flags": state.flags,
        "segments": state.segments,
    });
    if let Some(configs) = configs {
        frame["configs"] = json!(configs);
    }
    send(socket, text(&frame), app.watch_send_timeout)
        .await
        .map_err(|()| Snapshot::NotSent)?;
    Ok(revision)
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

async fn send(socket: &mut WebSocket, msg: Message, timeout: Duration) -> Result<(), ()> {
    match tokio::time::timeout(timeout, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            let close = Message::Close(Some(CloseFrame {
                code: CLOSE_TOO_SLOW,
                reason: Utf8Bytes::from_static("consumer too slow"),
            }));
            // Best effort: the peer is not reading, so this may not get through either.
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
            Err(())
        }
    }
}

async fn stream(
    app: Arc<AppState>,
    principal: Principal,
    ns: String,
    from: Revision,
    mut socket: WebSocket,
) {
    let Ok(pass) = principal.authorize(Permission::FlagRead, &ns) else {
        return;
    };
    let mut applied = app.flags.cache().subscribe();
    let current = *applied.borrow_and_update();
    let mut seen = from;
    if from == 0 || from > current {
        match send_snapshot(&app, &pass, &ns, &mut socket).await {
            Ok(revision) => seen = revision,
            Err(Snapshot::NotSent) => return,
            Err(Snapshot::NotRead(e)) => {
                let _ = send(
                    &mut socket,
                    text(&json!({"type": "error", "message": e.to_string()})),
                    app.watch_send_timeout,
                )
                .await;
                return;
            }
        }
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let revoked = app
        .identity
        .revoked(principal.clone(), Permission::FlagRead, ns.clone());
    tokio::pin!(revoked);
    loop {
        // Send everything committed since `seen`, in batches that never split a commit.
        loop {
            let (changes, last) = match app.flags.changes_since(&pass, &ns, seen, BATCH).await {
                Ok(ChangeBatch::Changes { changes, last }) => (changes, last),
                Ok(ChangeBatch::Resync) => {
                    // The store's log no longer reaches `seen` (deletions in the gap cannot be
                    // replayed): a new snapshot frame replaces the watcher's state.
                    match send_snapshot(&app, &pass, &ns, &mut socket).await {
                        Ok(revision) => {
                            seen = revision;
                            continue;
                        }
                        Err(Snapshot::NotSent) => return,
                        Err(Snapshot::NotRead(e)) => {
                            tracing::warn!(error = %e, "watch could not read a snapshot; will retry on the next commit");
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch could not read changes; will retry on the next commit");
                    break;
                }
            };
            for c in &changes {
                let frame = json!({
                    "type": "change",
                    "namespace": c.namespace,
                    "revision": c.revision,
                    "kind": c.kind,
                    "key": c.key,
                    "deleted": c.after.is_none(),
                    "after": c.after,
                });
                if send(&mut socket, text(&frame), app.watch_send_timeout)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if last == seen {
                break;
            }
            seen = last;
        }
        tokio::select! {
            () = &mut revoked => {
                let close = Message::Close(Some(CloseFrame {
                    code: CLOSE_REVOKED,
                    reason: Utf8Bytes::from_static("credential revoked"),
                }));
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(close)).await;
                return;
            }
            changed = applied.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if send(&mut socket, Message::Ping(axum::body::Bytes::new()), app.watch_send_timeout).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // axum answers pings itself; text from the client is ignored.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
