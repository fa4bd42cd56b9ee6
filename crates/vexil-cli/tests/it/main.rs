//! End-to-end tests of the `vexil` binary against the real `vexil-server` binary: each test
//! spawns a server over a fresh SQLite file and drives the CLI as a user would, through
//! processes, exit codes and output.

mod fixtures;

mod audit;
mod config;
mod errors;
mod flags;
mod identity;
mod import_export;
mod profiles;
mod watch;
