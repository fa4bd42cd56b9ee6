//! `vexil-bench-grpc-hello`: the baseline of the gRPC benchmark (`bench/grpc-bench.sh`).
//!
//! A tonic hello-world built from the same workspace — the same tonic/prost/tokio versions and
//! features (`[workspace.dependencies]`), the same code generation (`tonic-prost-build` with the
//! vendored protoc) and the same `[profile.release]` as `vexil-server` — so the benchmark can
//! report flagd `ResolveBoolean` throughput as a fraction of what the gRPC stack alone can do on
//! the machine. It serves the unary `hello.v1.Greeter/SayHello`: the answer is
//! `Hello, {name}!`.
//!
//! Usage: `vexil-bench-grpc-hello [ADDR]`; the address falls back to `HELLO_GRPC_ADDR`, then
//! `127.0.0.1:50051`. Like `vexil-server`, it runs on tokio's multi-threaded runtime (one worker
//! per core). It is tonic's canonical hello-world server: `Server::builder().add_service(..)
//! .serve(addr)`, with tonic's default settings (among them `TCP_NODELAY` on accepted
//! connections), no middleware, no state and no logging.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

/// The generated code of `proto/hello/v1/hello.proto`.
mod pb {
    #![expect(
        unreachable_pub,
        clippy::allow_attributes,
        reason = "generated code is pub inside a private module and uses #[allow]"
    )]
    tonic::include_proto!("hello.v1");
}

use pb::greeter_server::{Greeter, GreeterServer};
use pb::{HelloReply, HelloRequest};

/// The service: stateless.
#[derive(Debug, Default)]
struct Hello;

#[tonic::async_trait]
impl Greeter for Hello {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = &request.get_ref().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello, {name}!"),
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HELLO_GRPC_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    eprintln!("vexil-bench-grpc-hello listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(GreeterServer::new(Hello))
        .serve(addr)
        .await?;
    Ok(())
}
