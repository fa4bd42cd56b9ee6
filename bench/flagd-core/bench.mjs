// flagd-core baseline for Vexil's engine benchmark.
//
// Times the four cases of crates/vexil-core/benches/evaluate.rs (static flag, one `==` rule,
// `fractional`, `resolveAll` over 100 mixed flags) through @openfeature/flagd-core, on the same
// flags and context (bench/fixtures/core-bench.json). Each case is warmed up, then run for a
// fixed number of iterations in several rounds; the median round is reported in ns/op.
//
// Prints a `CHECK {...}` line (the variant of every flag, in the shape the Rust bench prints) and
// a `RESULT {...}` line (ns/op per case) for bench/run-core-bench.sh, plus a readable table.
//
// Usage: node bench.mjs [--quick]

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FlagdCore } from '@openfeature/flagd-core';

const quick = process.argv.includes('--quick');
const fixturePath = fileURLToPath(new URL('../fixtures/core-bench.json', import.meta.url));
const fixture = JSON.parse(readFileSync(fixturePath, 'utf8'));
const ctx = fixture.context;

// Errors only: a warning per evaluation would be measured too.
const logger = { error: console.error, warn: () => {}, info: () => {}, debug: () => {} };

function load(doc) {
  const core = new FlagdCore(undefined, logger);
  core.setConfigurations(JSON.stringify(doc));
  return core;
}
const single = load(fixture.single);
const bulk = load(fixture.bulk);

// Typed resolution by the flag's variant type, as an OpenFeature provider would call it.
function resolver(core, key) {
  const flag = core.getFlag(key);
  const variants = flag.variants instanceof Map ? [...flag.variants.values()] : Object.values(flag.variants);
  const sample = variants[0];
  switch (typeof sample) {
    case 'boolean':
      return () => core.resolveBooleanEvaluation(key, false, ctx, logger);
    case 'string':
      return () => core.resolveStringEvaluation(key, '', ctx, logger);
    case 'number':
      return () => core.resolveNumberEvaluation(key, 0, ctx, logger);
    default:
      return () => core.resolveObjectEvaluation(key, {}, ctx, logger);
  }
}

const sorted = (entries) => Object.fromEntries([...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

// The answers, to compare with the Rust engine's.
const check = {
  bulk: sorted(bulk.resolveAll(ctx, logger).map((d) => [d.flagKey, d.variant ?? null])),
  single: sorted(
    Object.entries(fixture.cases).map(([name, key]) => {
      const r = resolver(single, key)();
      if (r.errorCode) throw new Error(`${key}: ${r.errorCode} ${r.errorMessage ?? ''}`);
      return [name, r.variant ?? null];
    }),
  ),
};
console.log(`CHECK ${JSON.stringify(check)}`);

const cases = [
  ...Object.entries(fixture.cases).map(([name, key]) => ({ name, run: resolver(single, key), iters: 500_000 })),
  { name: 'bulk100', run: () => bulk.resolveAll(ctx, logger), iters: 5_000 },
];

const ROUNDS = quick ? 3 : 7;
let sink = 0;
const result = {};
for (const c of cases) {
  const iters = quick ? Math.ceil(c.iters / 10) : c.iters;
  // Warm-up: let V8 tier the hot path up to optimised code before timing.
  for (let i = 0; i < iters; i++) sink += c.run() ? 1 : 0;
  const rounds = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) sink += c.run() ? 1 : 0;
    rounds.push(Number(process.hrtime.bigint() - t0) / iters);
  }
  rounds.sort((a, b) => a - b);
  result[c.name] = rounds[Math.floor(rounds.length / 2)];
  console.log(
    `${c.name.padEnd(12)} ${result[c.name].toFixed(1).padStart(10)} ns/op  (median of ${ROUNDS} x ${iters}; min ${rounds[0].toFixed(1)}, max ${rounds[rounds.length - 1].toFixed(1)})`,
  );
}
if (sink === 0) console.log('(unreachable)');
console.log(`RESULT ${JSON.stringify(result)}`);
