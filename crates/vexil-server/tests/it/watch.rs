//! The WebSocket change stream end to end.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures::{Server, Ws, authed, bool_flag, next_json_within, ws_connect};

async fn connect(s: &Server, query: &str) -> Ws {
    ws_connect(s, &format!("/api/v1/namespaces/default/watch{query}")).await
}

/// The next JSON text frame, within 5 s.
async fn next_json(ws: &mut Ws) -> Value {
    next_json_within(ws, Duration::from_secs(5)).await
}

#[tokio::test]
async fn a_watcher_gets_a_snapshot_then_each_change_in_revision_order() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("before"))
        .await;
    let mut ws = connect(&s, "").await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["flags"][0]["key"], "before");
    let (status, _) = s
        .post("/api/v1/namespaces/default/flags", &bool_flag("after"))
        .await;
    assert_eq!(status, 201);
    s.post("/api/v1/namespaces/default/flags/after/disable", &json!({}))
        .await;
    let a = next_json(&mut ws).await;
    let b = next_json(&mut ws).await;
    assert_eq!(
        (
            a["type"].as_str(),
            a["key"].as_str(),
            a["after"]["state"].as_str()
        ),
        (Some("change"), Some("after"), Some("ENABLED"))
    );
    assert_eq!(b["after"]["state"], "DISABLED");
    assert!(b["revision"].as_u64() > a["revision"].as_u64());
    assert!(a["revision"].as_u64() > snap["revision"].as_u64());
}

#[tokio::test]
async fn a_watcher_resuming_from_a_revision_gets_what_it_missed_and_nothing_before() {
    let s = Server::start().await;
    s.post("/api/v1/namespaces/default/flags", &bool_flag("one"))
        .await;
    let (_, ready) = s.get("/readyz").await;
    let mark = ready["revision"].as_u64().expect("revision");
    s.post("/api/v1/namespaces/default/flags", &bool_flag("two"))
        .await;
    s.delete("/api/v1/namespaces/default/flags/one").await;
    let mut ws = connect(&s, &format!("?fromRevision={mark}")).await;
    let first = next_json(&mut ws).await;
    let second = next_json(&mut ws).await;
    assert_eq!(
        (first["type"].as_str(), first["key"].as_str()),
        (Some("change"), Some("two"))
    );
    assert_eq!(
        (second["key"].as_str(), second["deleted"].as_bool()),
        (Some("one"), Some(true))
    );
}

#[tokio::test]
async fn client_pings_are_answered_with_pongs() {
    let s = Server::start().await;
    let mut ws = connect(&s, "").await;
    next_json(&mut ws).await;
    ws.send(Message::Ping(vec![1, 2, 3].into()))
        .await
        .expect("ping");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("pong in time")
        {
            Some(Ok(Message::Pong(p))) => {
                assert_eq!(&p[..], &[1, 2, 3]);
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("stream ended: {other:?}"),
        }
    }
}

#[tokio::test]
async fn watching_an_unknown_namespace_is_a_404_before_any_upgrade() {
    let s = Server::start().await;
    let url = format!(
        "{}/api/v1/namespaces/nope/watch",
        s.process.base.replace("http://", "ws://")
    );
    let err = tokio_tungstenite::connect_async(authed(&s, &url))
        .await
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status().as_u16(), 404)
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn a_watcher_whose_token_is_revoked_is_closed_with_4401() {
    let s = Server::start().await;
    // A viewer token: it can watch `default` through its own role.
    let secret = s.api_token("viewer", "default").await;
    let url = format!(
        "{}/api/v1/namespaces/default/watch",
        s.process.base.replace("http://", "ws://")
    );
    let mut req = {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        url.as_str().into_client_request().expect("ws url")
    };
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");

    let (_, tokens) = s.get("/api/v1/tokens").await;
    let id = tokens["items"][0]["id"]
        .as_str()
        .expect("token id")
        .to_owned();
    let (status, _) = s.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(status, 204);
    let close = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 2 s of the revocation")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 4401, "{close:?}");
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_instead_of_buffered_for() {
    let s = Server::start_with(|o| o.env("VEXIL_WATCH_SEND_TIMEOUT_MS", "300")).await;
    let mut ws = connect(&s, "").await;
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // The watcher stops reading. Change frames carry each flag, so large flags fill the
    // socket buffers quickly; after that the server may not wait on the watcher for longer
    // than the send timeout.
    let writes = 60;
    let big = "x".repeat(200_000);
    for i in 0..writes {
        let mut f = bool_flag(&format!("big-{i}"));
        f["metadata"] = json!({ "blob": big });
        let (status, body) = s.post("/api/v1/namespaces/default/flags", &f).await;
        assert_eq!(status, 201, "{body}");
    }
    // Reading again: what was buffered, then the end of the stream, not the whole backlog.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut frames = 0;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(Message::Text(_))) => frames += 1,
            Some(Ok(Message::Close(frame))) => {
                if let Some(f) = frame {
                    assert_eq!(u16::from(f.code), 4008, "{f:?}");
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        frames < writes,
        "the server kept all {frames} frames for a watcher that stopped reading"
    );
    // The server is fine, and a new watcher gets everything in one snapshot.
    let mut again = connect(&s, "").await;
    let snap = next_json_within(&mut again, Duration::from_secs(10)).await;
    assert_eq!(snap["flags"].as_array().map(Vec::len), Some(writes));
}
