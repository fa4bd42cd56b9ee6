#!/usr/bin/env bash
# Instructions per request of the HTTP benchmark's three scenarios, counted by callgrind: a
# noise-free companion to bench/http-bench.sh (whose req/s move with whatever else runs on the
# machine). Results: BENCHMARKS.md, "HTTP: OFREP".
#
# For each scenario (baseline = bench/hello, single = OFREP single flag, bulk = OFREP bulk of
# 100 flags) it starts the release server under `valgrind --tool=callgrind --instr-atstart=no`
# with one tokio worker, sends the same requests as http-bench.sh (wrk, bench/wrk/post.lua, the
# same context and API key), warms up for 3 s uninstrumented, then switches instrumentation on
# (`callgrind_control -i on`) for a DURATION run of `wrk -t1 -c64` and off again, and prints the
# instructions counted (Ir) divided by the requests wrk completed. Only the server's user-space
# instructions count: the kernel's work (the socket reads and writes) is not in the figure.
#
# valgrind hides the CPU's SHA extensions, so the server's SHA-256 of the API key runs in
# software under callgrind (~7,000 Ir per request, two blocks): natively, with SHA-NI, it is a
# few hundred instructions.
#
# Usage: bench/http-callgrind.sh [SCENARIO...]   (default: baseline single bulk)
# Environment: DURATION=10s  SKIP_BUILD=1 (reuse the release binaries)  PORT=47290
#              OUT_DIR=target/http-callgrind (callgrind files, logs; `callgrind_annotate` them)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${DURATION:-10s}
PORT=${PORT:-47290}
GRPC_PORT=$((PORT + 1))
OUT_DIR=${OUT_DIR:-$root/target/http-callgrind}
HOST=127.0.0.1
CONTEXT='{"context":{"targetingKey":"user-4711","email":"jane.doe@example.com","tier":"gold","version":"2.4.1","age":37}}'
ADMIN_PASSWORD=bench-admin-password
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(baseline single bulk)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in valgrind callgrind_control wrk jq curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install valgrind wrk jq curl)"
done
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release -p vexil-server -p vexil-bench-hello"
  cargo build --release -p vexil-server -p vexil-bench-hello
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
server_bin=$target_dir/release/vexil-server
hello_bin=$target_dir/release/vexil-bench-hello
[ -x "$server_bin" ] && [ -x "$hello_bin" ] || die "release binaries missing; run without SKIP_BUILD"

mkdir -p "$OUT_DIR"
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# One tokio worker, as in the pinned benchmark. The identity poll runs hourly, so no background
# work falls into the counted window.
export TOKIO_WORKER_THREADS=1
server_env=(env VEXIL_HTTP_ADDR=$HOST:$PORT VEXIL_GRPC_ADDR=$HOST:$GRPC_PORT VEXIL_DATA=$work/vexil.db
  LOG_FORMAT=json RUST_LOG=warn VEXIL_ADMIN_PASSWORD=$ADMIN_PASSWORD VEXIL_IDENTITY_POLL_MS=3600000)

# The data (flags, the evaluator token) is set up once, natively, and reused by each run.
log "setting up the data"
"${server_env[@]}" "$server_bin" >"$OUT_DIR/setup.log" 2>&1 &
pid=$!
for _ in $(seq 300); do curl -fsS -o /dev/null "http://$HOST:$PORT/readyz" 2>/dev/null && break; sleep 0.2; done
session=$(curl -fsS -X POST -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" "http://$HOST:$PORT/api/v1/auth/login" | jq -r .token)
curl -fsS -X POST -H 'content-type: application/json' -H "authorization: Bearer $session" \
  --data-binary @bench/fixtures/http-flags.json "http://$HOST:$PORT/api/v1/namespaces/default/import" >/dev/null
API_KEY=$(curl -fsS -X POST -H 'content-type: application/json' -H "authorization: Bearer $session" \
  -d '{"name":"bench","role":"evaluator","namespace":"default"}' "http://$HOST:$PORT/api/v1/tokens" | jq -r .token)
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

for scenario in "${scenarios[@]}"; do
  out=$OUT_DIR/$scenario.callgrind
  rm -f "$out"
  callgrind=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$out")
  case $scenario in
    baseline) url=http://$HOST:$PORT/hello
      "${callgrind[@]}" "$hello_bin" "$HOST:$PORT" >"$OUT_DIR/$scenario.log" 2>&1 & ;;
    single) url=http://$HOST:$PORT/ofrep/v1/evaluate/flags/target-flag
      "${server_env[@]}" "${callgrind[@]}" "$server_bin" >"$OUT_DIR/$scenario.log" 2>&1 & ;;
    bulk) url=http://$HOST:$PORT/ofrep/v1/evaluate/flags
      "${server_env[@]}" "${callgrind[@]}" "$server_bin" >"$OUT_DIR/$scenario.log" 2>&1 & ;;
    *) die "unknown scenario $scenario (baseline, single, bulk)" ;;
  esac
  pid=$!
  # Under valgrind the start takes a while.
  ready=""
  for _ in $(seq 600); do
    if curl -fsS -o /dev/null -X POST -H 'content-type: application/json' -H "x-api-key: $API_KEY" \
      -d "$CONTEXT" "$url" 2>/dev/null; then ready=1; break; fi
    sleep 0.5
  done
  [ -n "$ready" ] || die "$scenario: the server did not answer (see $OUT_DIR/$scenario.log)"
  wrk -t1 -c64 -d3s --timeout 10s -s bench/wrk/post.lua "$url" -- "$CONTEXT" "$API_KEY" >/dev/null
  callgrind_control -i on "$pid" >/dev/null 2>&1
  result=$(wrk -t1 -c64 -d"$DURATION" --timeout 10s -s bench/wrk/post.lua "$url" -- "$CONTEXT" "$API_KEY" \
    | grep '^WRK_RESULT') || die "$scenario: no result from wrk"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  grep -q 'non2xx=0 errors=0' <<<"$result" || die "$scenario: failed requests: $result"
  requests=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$result")
  ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$OUT_DIR/$scenario.log")
  [ -n "$ir" ] && [ "$requests" -gt 0 ] || die "$scenario: no count (see $OUT_DIR/$scenario.log)"
  printf '%-8s %10d Ir/request  (%d requests, %d Ir; %s)\n' "$scenario" $((ir / requests)) \
    "$requests" "$ir" "$out"
done
