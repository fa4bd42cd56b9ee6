//! `vexil watch` against the server's WebSocket stream.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::fixtures::Env;

/// Bound for any one frame to arrive.
const FRAME_WAIT: Duration = Duration::from_secs(30);

#[test]
fn watch_receives_the_change_frame_of_a_flag_created_by_another_invocation() {
    let env = Env::signed_in();
    let mut child = env
        .command(&["watch", "--count", "1"])
        .spawn()
        .expect("spawn vexil watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let frame = |rx: &mpsc::Receiver<String>| -> Value {
        let line = rx
            .recv_timeout(FRAME_WAIT)
            .expect("a frame within the bound");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
    };

    // The stream is open once the snapshot is in: a change made now must be streamed.
    let snapshot = frame(&rx);
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    env.vexil(&["flag", "create", "watched"]).ok();

    let change = frame(&rx);
    assert_eq!(change["type"], "change", "{change}");
    assert_eq!(change["kind"], "flag");
    assert_eq!(change["key"], "watched");
    assert_eq!(change["deleted"], false);
    assert!(
        change["revision"]
            .as_u64()
            .is_some_and(|r| r > snapshot["revision"].as_u64().unwrap_or(0))
    );

    // --count 1: the watcher exits by itself, closing its output.
    match rx.recv_timeout(FRAME_WAIT) {
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        other => panic!("the watcher did not stop after one change: {other:?}"),
    }
    let status = child.wait().expect("wait for vexil watch");
    assert!(status.success(), "vexil watch exited with {status}");
    reader.join().expect("reader thread");
}
