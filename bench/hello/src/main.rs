//! `vexil-bench-hello`: the baseline of the HTTP benchmark (`bench/http-bench.sh`).
//!
//! An axum hello-world built from the same workspace — the same axum/tokio versions and features
//! (`[workspace.dependencies]`) and the same `[profile.release]` as `vexil-server` — so the
//! benchmark can report OFREP throughput as a fraction of what the HTTP stack alone can do on the
//! machine. It serves `POST /hello`: the request body is read and ignored, and the answer is a
//! fixed JSON body about the size of an OFREP single-flag answer (~100 bytes).
//!
//! Usage: `vexil-bench-hello [ADDR]`; the address falls back to `HELLO_ADDR`, then
//! `127.0.0.1:8081`. Like `vexil-server`, it runs on tokio's multi-threaded runtime (one worker
//! per core, or `TOKIO_WORKER_THREADS`), sets TCP_NODELAY on accepted connections, and has no
//! middleware, no state and no logging.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;

/// About the size and shape of an OFREP single-flag success body.
const BODY: &str = r#"{"key":"hello-flag","value":"hello-world","reason":"TARGETING_MATCH","variant":"hello","metadata":{}}"#;

async fn hello(_body: Bytes) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], BODY)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HELLO_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let addr: SocketAddr = addr.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad address {addr}: {e}"),
        )
    })?;
    let app = Router::new().route("/hello", post(hello));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("vexil-bench-hello listening on {}", listener.local_addr()?);
    // TCP_NODELAY, exactly as vexil-server's HTTP listener sets it, so the baseline and the
    // server under test share the same socket behaviour.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
