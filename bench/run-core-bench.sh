#!/usr/bin/env bash
# Engine benchmark: vexil-core (criterion) against @openfeature/flagd-core (Node) on the same flags
# and context (bench/fixtures/core-bench.json). Prints the machine, both engines' ns/op for the
# four cases, and the ratio flagd-core / vexil-core. Fails if the two engines disagree on any
# variant.
#
# Usage: bench/run-core-bench.sh [--quick]
#   --quick   fewer JS iterations and 1 s criterion measurements (smoke test, not for numbers)
#
# Run it on an otherwise idle machine: both halves are single-threaded, but anything else
# competing for the cores shows up in the numbers.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
js_dir="$root/bench/flagd-core"
quick=""
[ "${1:-}" = "--quick" ] && quick=1

for tool in node npm cargo jq; do
  command -v "$tool" >/dev/null || { echo "run-core-bench.sh needs $tool" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- flagd-core (JavaScript) ----------------------------------------------------------------
if [ ! -f "$js_dir/node_modules/.package-lock.json" ] ||
   [ "$js_dir/package-lock.json" -nt "$js_dir/node_modules/.package-lock.json" ]; then
  echo "== npm ci (bench/flagd-core)"
  (cd "$js_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "== flagd-core: node bench.mjs ${quick:+--quick}"
(cd "$js_dir" && node bench.mjs ${quick:+--quick}) | tee "$work/js.out" | grep -v '^CHECK '

# --- vexil-core (Rust, criterion) -------------------------------------------------------------
criterion_args=()
[ -n "$quick" ] && criterion_args=(--warm-up-time 0.5 --measurement-time 1)
echo "== vexil-core: cargo bench -p vexil-core --bench evaluate"
if ! (cd "$root" && cargo bench -q -p vexil-core --bench evaluate -- "${criterion_args[@]}") \
  > "$work/rust.out" 2>&1; then
  cat "$work/rust.out" >&2
  exit 1
fi
grep -E '^evaluate/|time:' "$work/rust.out" || true

# --- both engines must give the same answers -----------------------------------------------
sed -n 's/^CHECK //p' "$work/js.out" | jq -S . > "$work/js.check"
sed -n 's/^CHECK //p' "$work/rust.out" | jq -S . > "$work/rust.check"
if ! diff -u "$work/js.check" "$work/rust.check" > "$work/check.diff"; then
  echo "flagd-core and vexil-core disagree on the benchmark flags:" >&2
  cat "$work/check.diff" >&2
  exit 1
fi
echo "== both engines resolved all $(jq '.bulk | length' "$work/js.check") + $(jq '.single | length' "$work/js.check") flags to the same variants"

# --- table -----------------------------------------------------------------------------------
target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)"
rust_ns() { # criterion's headline estimate (slope when it has one, else the mean), in ns
  jq '(.slope // .mean).point_estimate' "$target_dir/criterion/evaluate/$1/new/estimates.json"
}
js_result="$(sed -n 's/^RESULT //p' "$work/js.out")"

field() { grep -m1 "^$1" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
cpu="$(field 'model name') (family $(field 'cpu family'), model $(field 'model'), $(field 'cpu MHz') MHz)"
echo
echo "machine: $(nproc) CPUs, ${cpu}; $(node --version) (flagd-core $(jq -r .version "$js_dir/node_modules/@openfeature/flagd-core/package.json")); $(rustc --version)"
printf '%-12s %16s %16s %10s %12s\n' case "flagd-core ns" "vexil-core ns" "JS/Rust" "Rust target"
for case in static eq fractional bulk100; do
  js="$(jq ".${case}" <<<"$js_result")"
  rs="$(rust_ns "$case")"
  case "$case" in
    static) target="<= 40" ;; eq) target="<= 100" ;; fractional) target="<= 200" ;; bulk100) target="<= 15000" ;;
  esac
  awk -v c="$case" -v j="$js" -v r="$rs" -v t="$target" \
    'BEGIN { printf "%-12s %16.1f %16.1f %9.2fx %12s\n", c, j, r, j / r, t }'
done
