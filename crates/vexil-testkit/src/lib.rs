//! `vexil-testkit` holds what Vexil's tests share: a reader for the flagd-testbed Gherkin
//! suites and a transport-neutral runner for them, helpers that find or start a PostgreSQL
//! ([`postgres::admin_url`], [`postgres::fresh_database`]) and an etcd ([`etcd::endpoint`])
//! shared by a whole test process, and one that spawns the real `vexil-server` binary
//! ([`server::ServerProcess`]).
//!
//! For fault injection, a test can own stoppable infrastructure instead of sharing it:
//! [`postgres::PrivateCluster`], a PostgreSQL it may stop and start again on the same port, and
//! [`etcd::EtcdCluster`], an etcd cluster of N members it may kill and restart one by one or
//! all together. Both clean up when dropped, and a watchdog process cleans up after a test
//! process that dies first.
//!
//! It is a test-only crate. It must not depend on Vexil's own crates: the conformance runner
//! drives any [`testbed::Resolver`] (the in-process evaluator, OFREP over HTTP, flagd gRPC),
//! so the same expectations are checked at every layer.

pub mod etcd;
pub mod gherkin;
pub mod postgres;
pub mod server;
pub mod testbed;
