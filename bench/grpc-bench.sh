#!/usr/bin/env bash
# gRPC benchmark of vexil-server's flagd ResolveBoolean against a tonic hello-world baseline
# (bench/grpc-hello, built from the same workspace). Results: BENCHMARKS.md, "gRPC: flagd
# ResolveBoolean".
#
# What it does:
#   1. installs h2load (Debian's nghttp2-client) when missing;
#   2. builds vexil-server and vexil-bench-grpc-hello in release;
#   3. starts both on 127.0.0.1 (fresh SQLite file, RUST_LOG=warn, LOG_FORMAT=json), imports
#      bench/fixtures/http-flags.json (100 flags) and bench/fixtures/grpc-flags.json (the boolean
#      flag under test: a rule over all five attributes of the context) into the default
#      namespace, and writes the request frames with bench/grpc-frames.py;
#   4. checks one real call per scenario with curl (HTTP/2, grpc-status 0 in the trailers, the
#      decoded answer), warms every scenario up, then runs h2load (-t1 -c4 -m16: 64 streams over
#      4 connections, bounded duration, --log-file for per-request latencies) REPEATS times,
#      alternating baseline / flagd v2 / flagd v1 within each repeat. h2load sees HTTP statuses
#      only, and a gRPC error is an HTTP 200 without a message: every run is checked to have
#      received exactly one answer message of the expected size per request (h2load's `data`
#      bytes), so no run measures errors;
#   5. prints every repeat, then the medians and the ratio to the baseline's median.
#
# Nothing is pinned: h2load and the servers share the machine's cores, so absolute numbers are a
# floor for the server, and the ratio is the figure to compare across machines.
#
# Environment (all optional):
#   DURATION=15s  WARMUP=5s  REPEATS=3  CONNECTIONS=4  STREAMS=16 (per connection)  THREADS=1
#   QUIET_WAIT=180 (seconds to wait, before each run, for other processes to go quiet)
#   VEXIL_PORT, VEXIL_GRPC_PORT, HELLO_PORT (default: the first free ports from 47280)
#   OUT_DIR=target/grpc-bench  SKIP_BUILD=1 (reuse the release binaries)
#   SERVER_BIN, HELLO_BIN (other binaries to run, e.g. to compare two builds; with SKIP_BUILD=1)
# DURATION and WARMUP are in seconds, with the `s` suffix.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

DURATION=${DURATION:-15s}
WARMUP=${WARMUP:-5s}
REPEATS=${REPEATS:-3}
QUIET_WAIT=${QUIET_WAIT:-180}
CONNECTIONS=${CONNECTIONS:-4}
STREAMS=${STREAMS:-16}
THREADS=${THREADS:-1}
OUT_DIR=${OUT_DIR:-$root/target/grpc-bench}
FIXTURES=("$root/bench/fixtures/http-flags.json" "$root/bench/fixtures/grpc-flags.json")
FRAMES=$root/bench/grpc-frames.py
HOST=127.0.0.1
# The flag under test evaluates a rule over all five attributes of this context (the HTTP
# benchmark's context).
CONTEXT='{"targetingKey":"user-4711","email":"jane.doe@example.com","tier":"gold","version":"2.4.1","age":37}'
FLAG=bool-target-flag
HELLO_NAME=user-4711

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

for tool in curl jq python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# --- 1. h2load ------------------------------------------------------------------------------
if ! command -v h2load >/dev/null; then
  log "installing h2load (Debian nghttp2-client)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  if ! timeout 300 $sudo apt-get install -y nghttp2-client; then
    timeout 300 $sudo apt-get update
    timeout 300 $sudo apt-get install -y nghttp2-client
  fi
fi
command -v h2load >/dev/null || die "h2load is not installed"

# --- 2. build -------------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  log "cargo build --release -p vexil-server -p vexil-bench-grpc-hello"
  cargo build --release -p vexil-server -p vexil-bench-grpc-hello
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
server_bin=${SERVER_BIN:-$target_dir/release/vexil-server}
hello_bin=${HELLO_BIN:-$target_dir/release/vexil-bench-grpc-hello}
[ -x "$server_bin" ] && [ -x "$hello_bin" ] || die "release binaries missing; run without SKIP_BUILD"

# --- 3. start -------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # Bounded: SIGKILL whatever has not stopped after ~5 s.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
pick_port() { # the first free port of 47280..47299 not among the arguments
  local p q taken
  for p in $(seq 47280 47299); do
    taken=""
    for q in "$@"; do if [ "$p" = "$q" ]; then taken=1; fi; done
    if [ -z "$taken" ] && port_free "$p"; then echo "$p"; return; fi
  done
  die "no free port in 47280..47299 (set VEXIL_PORT / VEXIL_GRPC_PORT / HELLO_PORT)"
}
VEXIL_PORT=${VEXIL_PORT:-$(pick_port)}
VEXIL_GRPC_PORT=${VEXIL_GRPC_PORT:-$(pick_port "$VEXIL_PORT")}
HELLO_PORT=${HELLO_PORT:-$(pick_port "$VEXIL_PORT" "$VEXIL_GRPC_PORT")}
for p in "$VEXIL_PORT" "$VEXIL_GRPC_PORT" "$HELLO_PORT"; do
  port_free "$p" || die "$HOST:$p is in use (set VEXIL_PORT / VEXIL_GRPC_PORT / HELLO_PORT)"
done

# Polls `curl ARGS...` until it succeeds, for at most $1 seconds.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until curl -fsS -o /dev/null --max-time 2 "$@" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

log "starting vexil-server on $HOST:$VEXIL_PORT (HTTP) and $HOST:$VEXIL_GRPC_PORT (gRPC)"
ADMIN_PASSWORD=bench-admin-password
VEXIL_HTTP_ADDR=$HOST:$VEXIL_PORT VEXIL_GRPC_ADDR=$HOST:$VEXIL_GRPC_PORT VEXIL_DATA=$work/vexil.db \
  VEXIL_ADMIN_PASSWORD=$ADMIN_PASSWORD LOG_FORMAT=json RUST_LOG=warn "$server_bin" >"$OUT_DIR/vexil-server.log" 2>&1 &
vexil_pid=$!
pids+=("$vexil_pid")
log "starting vexil-bench-grpc-hello on $HOST:$HELLO_PORT"
"$hello_bin" "$HOST:$HELLO_PORT" >"$OUT_DIR/hello.log" 2>&1 &
hello_pid=$!
pids+=("$hello_pid")

wait_for 60 "http://$HOST:$VEXIL_PORT/readyz" || die "vexil-server did not become ready (see $OUT_DIR/vexil-server.log)"
# Authenticated as in production: the imports as `admin`, evaluations with an `evaluator` API
# token (x-api-key metadata).
session=$(curl -fsS --max-time 30 -X POST -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" \
  "http://$HOST:$VEXIL_PORT/api/v1/auth/login" | jq -r .token) || die "login failed"
API_KEY=$(curl -fsS --max-time 30 -X POST -H 'content-type: application/json' -H "authorization: Bearer $session" \
  -d '{"name":"bench","role":"evaluator","namespace":"default"}' \
  "http://$HOST:$VEXIL_PORT/api/v1/tokens" | jq -r .token) || die "token creation failed"
for f in "${FIXTURES[@]}"; do
  log "importing $(basename "$f")"
  curl -fsS --max-time 30 -X POST -H 'content-type: application/json' -H "authorization: Bearer $session" \
    --data-binary "@$f" \
    "http://$HOST:$VEXIL_PORT/api/v1/namespaces/default/import" >"$OUT_DIR/import-$(basename "$f")" \
    || die "import of $f failed"
done

python3 "$FRAMES" resolve-boolean "$FLAG" "$CONTEXT" "$OUT_DIR/resolve-boolean.bin"
python3 "$FRAMES" hello "$HELLO_NAME" "$OUT_DIR/hello.bin"

# --- 4. load --------------------------------------------------------------------------------
names=(baseline v2 v1)
declare -A url=(
  [baseline]="http://$HOST:$HELLO_PORT/hello.v1.Greeter/SayHello"
  [v2]="http://$HOST:$VEXIL_GRPC_PORT/flagd.evaluation.v2.Service/ResolveBoolean"
  [v1]="http://$HOST:$VEXIL_GRPC_PORT/flagd.evaluation.v1.Service/ResolveBoolean"
)
declare -A frame=(
  [baseline]="$OUT_DIR/hello.bin"
  [v2]="$OUT_DIR/resolve-boolean.bin"
  [v1]="$OUT_DIR/resolve-boolean.bin"
)
declare -A message=([baseline]=hello [v2]=resolve-boolean [v1]=resolve-boolean)
declare -A label=(
  [baseline]="tonic hello-world (baseline)"
  [v2]="flagd v2 ResolveBoolean"
  [v1]="flagd v1 ResolveBoolean"
)
# The baseline gets the same metadata (and ignores it), so both sides carry the same bytes.
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers' -H "x-api-key: $API_KEY")

# call NAME → the decoded answer of one real call, after checking grpc-status 0 (curl writes the
# trailers after the headers in its -D dump) and the answer frame. Sets answer_bytes[NAME], so
# it must not run in a subshell.
declare -A answer_bytes=()
call() {
  local hdr=$work/call-$1.hdr body=$work/call-$1.bin
  curl -sS --http2-prior-knowledge --max-time 5 -X POST "${GRPC_HEADERS[@]}" \
    --data-binary "@${frame[$1]}" -D "$hdr" -o "$body" "${url[$1]}" \
    || die "$1: the call failed"
  local st
  st=$(tr -d '\r' <"$hdr" | sed -n 's/^grpc-status: *//Ip' | tail -1)
  [ "$st" = 0 ] || die "$1: grpc-status ${st:-missing}: $(tr -d '\r' <"$hdr" | grep -i '^grpc-')"
  answer_bytes[$1]=$(wc -c <"$body")
  python3 "$FRAMES" decode "${message[$1]}" "$body"
}
# The snapshot may trail the import by a moment: wait (bounded) for the flag to resolve.
deadline=$((SECONDS + 15))
until curl -sS --http2-prior-knowledge --max-time 5 -X POST "${GRPC_HEADERS[@]}" \
    --data-binary "@${frame[v2]}" -D - -o /dev/null "${url[v2]}" 2>/dev/null \
    | tr -d '\r' | grep -qi '^grpc-status: 0$'; do
  [ "$SECONDS" -lt "$deadline" ] || die "$FLAG does not resolve over gRPC"
  sleep 0.2
done
for n in "${names[@]}"; do
  call "$n" >"$work/answer-$n.json"
  answer=$(cat "$work/answer-$n.json")
  if [ "$n" = baseline ]; then
    [ "$(jq -r .message <<<"$answer")" = "Hello, $HELLO_NAME!" ] || die "unexpected baseline answer: $answer"
  else
    # The rule matches, then a fractional split on targetingKey picks the variant. (proto3
    # leaves v1's `value: false` off the wire, hence the default.)
    jq -e '.reason == "TARGETING_MATCH" and (.variant == "on" or .variant == "off")
      and ((.value // false) == (.variant == "on"))' <<<"$answer" >/dev/null \
      || die "unexpected $n answer: $answer"
  fi
  log "$n answer (${answer_bytes[$n]} B frame): $answer"
done

# CPU accounting, to tell how much of the machine the run really had: busy ticks of all cores
# (/proc/stat), of one process (/proc/PID/stat utime+stime), all in USER_HZ.
cpu_busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
proc_cpu() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
cores=$(nproc)

# Waits (at most QUIET_WAIT seconds) until the rest of the machine uses under 15% of the cores
# over 2 s (the servers are idle between runs), so runs do not overlap someone's compile burst.
wait_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT)) b0 b1
  while :; do
    b0=$(cpu_busy); sleep 2; b1=$(cpu_busy)
    if awk -v d="$((b1 - b0))" -v hz="$hz" -v n="$cores" 'BEGIN { exit !(d / hz / 2 / n < 0.15) }'; then
      return
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "  the machine is still busy after ${QUIET_WAIT}s; running anyway (see the CPU column)"
      return
    fi
  done
}

# run NAME DURATION OUTFILE → one line `rps= p50_us= p99_us= requests= server= h2load= other=
# srv_us=`: h2load's throughput, percentiles of its per-request log (--log-file: microseconds
# from the request's start to the end of its response), the CPU shares of the run (percent of
# all cores; other = everything else on the machine) and the server's CPU time per request
# (microseconds), which depends much less than req/s on what else the machine runs. h2load stops itself after DURATION; `timeout`
# is a backstop. Dies when a request failed or an answer was not one message of the expected size.
run() {
  local secs=${2%s} pid busy0 srv0 t0 timing reqlog=$3.log
  if [ "$1" = baseline ]; then pid=$hello_pid; else pid=$vexil_pid; fi
  busy0=$(cpu_busy); srv0=$(proc_cpu "$pid"); t0=$(date +%s.%N)
  timing=$( { TIMEFORMAT='%3U %3S'; time timeout $((secs + 30)) h2load -t"$THREADS" \
    -c"$CONNECTIONS" -m"$STREAMS" -D "$secs" -d "${frame[$1]}" "${GRPC_HEADERS[@]}" \
    --log-file="$reqlog" "${url[$1]}" >"$3" 2>&1; } 2>&1 ) || die "h2load failed: $(cat "$3")"
  local b1 s1 t1
  b1=$(cpu_busy); s1=$(proc_cpu "$pid"); t1=$(date +%s.%N)
  # "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
  local req done ok failed errored data rps
  req=$(grep '^requests:' "$3") || die "no result from h2load: $(cat "$3")"
  done=$(awk '{ print $6 }' <<<"$req"); ok=$(awk '{ print $8 }' <<<"$req")
  failed=$(awk '{ print $10 }' <<<"$req"); errored=$(awk '{ print $12 }' <<<"$req")
  [ "$ok" = "$done" ] && [ "$failed" = 0 ] && [ "$errored" = 0 ] && [ "$ok" -gt 0 ] \
    || die "$1: failed requests: $req"
  # "status codes: N 2xx, 0 3xx, 0 4xx, 0 5xx": a stream cut at the end of the run may have
  # its headers (and its message) but not its trailers, so N may exceed the completed requests.
  local codes n2xx
  codes=$(grep '^status codes:' "$3") || die "no status codes from h2load: $(cat "$3")"
  n2xx=$(awk '{ print $3 }' <<<"$codes")
  grep -q ', 0 3xx, 0 4xx, 0 5xx$' <<<"$codes" || die "$1: non-2xx answers: $codes"
  # A gRPC error is a 200 whose trailers carry the status, without a message. Every completed
  # request must have received one message of the expected size: "traffic: ..., 4.60MB
  # (4823228) data" counts the bytes of DATA frames, which hold only the answer frames.
  data=$(sed -n 's/^traffic:.*, [0-9.]*[KMG]*B* (\([0-9]*\)) data.*/\1/p' "$3")
  [ -n "$data" ] || die "no traffic line from h2load: $(cat "$3")"
  awk -v d="$data" -v s="${answer_bytes[$1]}" -v ok="$ok" -v n="$n2xx" \
    'BEGIN { exit !(d % s == 0 && d / s >= ok && d / s <= n) }' \
    || die "$1: $ok completed answers carried $data bytes of messages (${answer_bytes[$1]} B each; $n2xx answers begun): gRPC errors?"
  rps=$(sed -n 's/^finished in [0-9.]*m\{0,1\}s, \([0-9.]*\) req\/s.*/\1/p' "$3")
  [ -n "$rps" ] || die "no throughput from h2load: $(head -3 "$3")"
  # p50/p99: nearest rank over the third column of the per-request log.
  local pcts
  pcts=$(cut -f3 "$reqlog" | sort -n | awk '
      function rank(q,  i) { i = int(NR * q); if (i < NR * q) i++; return v[i] }
      { v[NR] = $1 }
      END { printf "p50_us=%d p99_us=%d p999_us=%d max_us=%d logged=%d", rank(0.5), rank(0.99), rank(0.999), v[NR], NR }')
  rm -f "$reqlog"
  awk -v rps="$rps" -v ok="$ok" -v pcts="$pcts" -v b0="$busy0" -v b1="$b1" -v s0="$srv0" -v s1="$s1" \
    -v t0="$t0" -v t1="$t1" -v w="$timing" -v hz="$hz" -v n="$cores" 'BEGIN {
      split(w, u, " "); cap = (t1 - t0) * n / 100
      srv = (s1 - s0) / hz; busy = (b1 - b0) / hz; gen = u[1] + u[2]; other = busy - srv - gen
      if (other < 0) other = 0
      printf "rps=%s %s requests=%s server=%.0f h2load=%.0f other=%.0f srv_us=%.2f\n", rps, pcts, ok, srv / cap, gen / cap, other / cap, srv * 1e6 / ok }'
}
field() { sed -n "s/.*\<$2=\([0-9.]*\).*/\1/p" <<<"$1"; }

log "warm-up: $WARMUP per scenario"
for n in "${names[@]}"; do run "$n" "$WARMUP" "$OUT_DIR/warmup-$n.txt" >/dev/null; done

results=$OUT_DIR/results.tsv
printf 'repeat\tscenario\trps\tp50_us\tp99_us\trequests\tserver_cpu\th2load_cpu\tother_cpu\tserver_us_per_req\tp999_us\tmax_us\n' >"$results"
for r in $(seq "$REPEATS"); do
  for n in "${names[@]}"; do
    wait_quiet
    log "repeat $r/$REPEATS: ${label[$n]} ($DURATION, -t$THREADS -c$CONNECTIONS -m$STREAMS)"
    line=$(run "$n" "$DURATION" "$OUT_DIR/run$r-$n.txt")
    log "  $line"
    printf '%s\t%s' "$r" "$n" >>"$results"
    for f in rps p50_us p99_us requests server h2load other srv_us p999_us max_us; do
      printf '\t%s' "$(field "$line" "$f")" >>"$results"
    done
    printf '\n' >>"$results"
  done
done
kill -0 "$vexil_pid" 2>/dev/null || die "vexil-server died during the run (see $OUT_DIR/vexil-server.log)"
kill -0 "$hello_pid" 2>/dev/null || die "vexil-bench-grpc-hello died during the run (see $OUT_DIR/hello.log)"

# --- 5. report ------------------------------------------------------------------------------
median() { # median of the column $2 for scenario $1
  awk -F'\t' -v s="$1" -v c="$2" 'NR > 1 && $2 == s { print $c }' "$results" | sort -g \
    | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ms() { awk -v u="$1" 'BEGIN { printf "%.3f", u / 1000 }'; }

echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'); h2load $(h2load --version | awk '{ print $2 }') -t$THREADS -c$CONNECTIONS -m$STREAMS -D $DURATION, $REPEATS repeats (alternating), load generator and servers share the cores"
echo
echo "All repeats:"
echo
echo "CPU: share of all $cores cores used by the server, by h2load, and by anything else during the run;"
echo "server µs/req: the server's CPU time per request."
echo
echo "| repeat | scenario | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | CPU server / h2load / other | server µs/req |"
echo "|---:|---|---:|---:|---:|---:|---:|---|---:|"
awk -F'\t' 'NR > 1 { printf "| %s | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %s%% / %s%% / %s%% | %.2f |\n", $1, $2, $3, $4 / 1000, $5 / 1000, $11 / 1000, $12 / 1000, $7, $8, $9, $10 }' "$results"
echo
echo "Medians:"
echo
echo "| scenario | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | ratio vs baseline | server µs/req | baseline µs/req ÷ this |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
base_rps=$(median baseline 3)
base_us=$(median baseline 10)
for n in "${names[@]}"; do
  rps=$(median "$n" 3)
  us=$(median "$n" 10)
  printf '| %s | %.0f | %s | %s | %s | %s | %.2f | %s |\n' "${label[$n]}" "$rps" "$(ms "$(median "$n" 4)")" \
    "$(ms "$(median "$n" 5)")" "$(ms "$(median "$n" 11)")" "$(awk -v a="$rps" -v b="$base_rps" 'BEGIN { printf "%.1f%%", 100 * a / b }')" \
    "$us" "$(awk -v a="$us" -v b="$base_us" 'BEGIN { printf "%.1f%%", 100 * b / a }')"
done
echo
v2_ratio=$(awk -v a="$(median v2 3)" -v b="$base_rps" 'BEGIN { printf "%.3f", a / b }')
if awk -v r="$v2_ratio" 'BEGIN { exit !(r >= 0.70) }'; then
  echo "Target (flagd v2 ResolveBoolean >= 70% of baseline req/s): MET"
else
  echo "Target (flagd v2 ResolveBoolean >= 70% of baseline req/s): MISSED"
fi
echo "Raw h2load output: $OUT_DIR"
