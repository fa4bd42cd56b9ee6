//! `vexil-testkit` holds what Vexil's tests share: a reader for the flagd-testbed Gherkin
//! suites and a transport-neutral runner for them, and (as the server grows) helpers that start
//! private PostgreSQL and etcd instances and spawn the real `vexil-server` binary.
//!
//! It is a test-only crate. It must not depend on Vexil's own crates: the conformance runner
//! drives any [`testbed::Resolver`] (the in-process evaluator, OFREP over HTTP, flagd gRPC),
//! so the same expectations are checked at every layer.

pub mod etcd;
pub mod gherkin;
pub mod postgres;
pub mod server;
pub mod testbed;
