//! Integration tests of `vexil-store`: the backend-agnostic conformance suite
//! ([`conformance`]) and one module per backend that runs it against a real store (SQLite
//! files and memory; PostgreSQL databases from `vexil_testkit::postgres`; key prefixes on an etcd
//! from `vexil_testkit::etcd`).

mod conformance;
mod distributed;
mod etcd;
mod postgres;
mod sqlite;
