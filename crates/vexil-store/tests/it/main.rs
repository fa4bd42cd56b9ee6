//! Integration tests of `vexil-store`: the backend-agnostic conformance suite
//! ([`conformance`]) and one module per backend that runs it against a real store.

mod conformance;
mod sqlite;
