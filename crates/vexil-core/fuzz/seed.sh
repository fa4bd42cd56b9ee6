#!/usr/bin/env bash
# Seeds the `evaluate` fuzz corpus (corpus/evaluate, gitignored) from the flagd-testbed flag files
# and the engine benchmark fixture: each whole file, and each flag on its own (with the file's
# `$evaluators`), each paired with a few contexts. Input format: definition JSON, NUL, context JSON.
#
# Usage: crates/vexil-core/fuzz/seed.sh [testbed-dir]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
testbed="${1:-/work/shared/conformance/flagd-testbed}"
out="$here/corpus/evaluate"
mkdir -p "$out"

command -v jq >/dev/null || { echo "seed.sh needs jq" >&2; exit 1; }

contexts=(
  '{"targetingKey":"user-1","email":"ballmer@macrosoft.com","tier":"gold","version":"2.4.1","age":37,"color":"yellow","hashing_input":"user1","time":1700000000,"num":3,"id":"x"}'
  '{}'
  '{"targetingKey":"","version":"v1.0.0-beta.1+build","hashing_input":12345,"email":null,"age":1e308,"tier":["gold"]}'
)

n=0
emit() { # $1 = definition JSON
  for ctx in "${contexts[@]}"; do
    local name
    name="$(printf '%s\0%s' "$1" "$ctx" | sha1sum | cut -c1-16)"
    printf '%s\0%s' "$1" "$ctx" > "$out/$name"
    n=$((n + 1))
  done
}

files=("$testbed"/flags/*.json "$testbed"/evaluator/flags/*.json "$root/bench/fixtures/core-bench.json")
for f in "${files[@]}"; do
  [ -f "$f" ] || continue
  if [ "$(basename "$f")" = core-bench.json ]; then
    docs=("$(jq -c .single "$f")" "$(jq -c .bulk "$f")")
  else
    docs=("$(jq -c . "$f")")
  fi
  for doc in "${docs[@]}"; do
    emit "$doc"
    # One flag per input, with the document's evaluators.
    while IFS= read -r single; do
      emit "$single"
    done < <(jq -c '. as $d | (.flags | if type == "array" then map({key: .key, value: .}) | from_entries else . end)
                    | to_entries[] | {flags: {(.key): .value}} + (if $d["$evaluators"] then {"$evaluators": $d["$evaluators"]} else {} end)' <<<"$doc")
  done
done
echo "seeded $n inputs into $out ($(ls "$out" | wc -l) distinct)"
