#!/usr/bin/env bash
# Installs tests/node/node_modules (the real OpenFeature JavaScript clients the interop tests
# drive) from the committed package-lock.json. Idempotent: `npm ci` runs only when node_modules
# is missing or older than package.json or the lock file.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
# Concurrent callers wait for the one installing, then find node_modules current.
exec 9>"${TMPDIR:-/tmp}/vexil-setup-node-$(id -u).lock"
flock 9
stamp=node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ package-lock.json -nt "$stamp" ] || [ package.json -nt "$stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
