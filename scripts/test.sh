#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test in the workspace.
# It installs what the tests need (a Python virtualenv with the OpenFeature SDK and providers)
# and needs nothing running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "python test clients (.venv)"
bash scripts/setup-python.sh

step "node test clients (tests/node/node_modules)"
bash scripts/setup-node.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked
