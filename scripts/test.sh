#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test in the workspace.
# It installs what the tests need (a Python virtualenv with the OpenFeature SDK and providers)
# and needs nothing running beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# The tests read the project's shared folder (testbed, reference schemas) beside the checkout.
# A clone made elsewhere (e.g. `git clone . /tmp/ci-check`) finds it beside the repository it
# was cloned from.
if [[ -z "${VEXIL_SHARED_DIR:-}" && ! -d ../shared ]]; then
    origin=$(git remote get-url origin 2>/dev/null || true)
    if [[ -n "$origin" && -d "$origin/../shared" ]]; then
        VEXIL_SHARED_DIR=$(cd "$origin/../shared" && pwd)
        export VEXIL_SHARED_DIR
    fi
fi

step "python test clients (.venv)"
bash scripts/setup-python.sh

step "node test clients (tests/node/node_modules)"
bash scripts/setup-node.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy (the CLI with its opt-in tls feature)"
cargo clippy -p vexil-cli --all-targets --features tls --locked -- -D warnings

step "cargo test (workspace)"
cargo test --workspace --locked
