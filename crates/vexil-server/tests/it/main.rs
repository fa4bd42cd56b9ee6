//! End-to-end tests of the real `vexil-server` binary: spawned on a free port over a fresh
//! SQLite file, driven over HTTP.

mod fixtures;

mod audit;
mod auth;
mod bad_input;
mod configs;
mod conformance;
mod crud;
mod distributed;
mod flagd_clients;
mod grpc;
mod grpc_identity;
mod grpc_vexil;
mod openapi;
mod postgres_mode;
mod python_client;
mod rbac_matrix;
mod watch;
