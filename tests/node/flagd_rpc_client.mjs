// Evaluates Vexil flags through the real OpenFeature JavaScript server SDK and its flagd provider
// in RPC mode (`flagd.evaluation.v2` typed resolves plus EventStream), with the provider's cache
// off.
//
// Usage: node flagd_rpc_client.mjs GRPC_HOST GRPC_PORT HTTP_BASE_URL
//
// Prints one JSON line per evaluation ("kind": "evaluation": flag_key, value, type, reason,
// variant, error_code), then changes a flag over REST and prints one "kind": "change" line: the
// milliseconds from just before the PATCH until the provider emitted ConfigurationChanged naming
// that flag (elapsed_ms), the flags the event named, and what the flag evaluates to afterwards.
// The flags are the ones `crates/vexil-server/tests/it/flagd_clients.rs` imports; assertions are
// there. Exits non-zero on an exception or when the change never shows.

import { performance } from 'node:perf_hooks';

import { FlagdProvider } from '@openfeature/flagd-provider';
import { OpenFeature, ProviderEvents } from '@openfeature/server-sdk';

const CHANGED_FLAG = 'fl-string';
const CHANGED_VARIANT = 'red';
// How long to wait for the change to show before giving up (the Rust test asserts a much tighter
// bound on the measured time; this only keeps a broken run from hanging).
const GIVE_UP_AFTER_MS = 10_000;

// JavaScript has one number type: "integer" when the value is integral, else "number".
function typeName(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function detailsLine(kind, d) {
  return {
    kind,
    flag_key: d.flagKey,
    value: d.value,
    type: typeName(d.value),
    reason: d.reason ?? null,
    variant: d.variant ?? null,
    error_code: d.errorCode ?? null,
    error_message: d.errorMessage ?? null,
  };
}

function emit(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function main() {
  if (process.argv.length !== 5) {
    process.stderr.write('usage: flagd_rpc_client.mjs GRPC_HOST GRPC_PORT HTTP_BASE_URL\n');
    return 2;
  }
  const [host, portText, httpBase] = process.argv.slice(2);

  const provider = new FlagdProvider({
    host,
    port: Number(portText),
    resolverType: 'rpc',
    // Off, so every evaluation after the change reaches the server.
    cache: 'disabled',
    // The default (500 ms) is also how long initialisation waits for the channel: too tight for
    // a loaded two-core CI machine.
    deadlineMs: 10_000,
  });
  // Resolves once EventStream delivered provider_ready.
  await OpenFeature.setProviderAndWait(provider);
  const client = OpenFeature.getClient();

  const anyone = { targetingKey: 'user-1' };
  const gold = { targetingKey: 'user-2', tier: 'gold' };
  const maxPlan = { targetingKey: 'user-3', plan: 'max' };
  // The JavaScript SDK has no integer type: integers resolve through getNumberDetails, which
  // the provider sends as ResolveFloat.
  const cases = [
    () => client.getBooleanDetails('fl-bool', false, anyone),
    () => client.getStringDetails('fl-string', 'code-default', anyone),
    () => client.getNumberDetails('fl-int', -1, anyone),
    () => client.getNumberDetails('fl-float', -1.5, anyone),
    () => client.getNumberDetails('fl-float', -1.5, maxPlan),
    () => client.getObjectDetails('fl-object', { code: 'default' }, anyone),
    () => client.getStringDetails('fl-targeted', 'code-default', gold),
    () => client.getStringDetails('fl-targeted', 'code-default', anyone),
    () => client.getBooleanDetails('fl-disabled', false, anyone),
    // A fractional split, bucketed by targeting key.
    () => client.getStringDetails('fl-split', 'code-default', anyone),
    () => client.getStringDetails('fl-split', 'code-default', gold),
    () => client.getStringDetails('fl-split', 'code-default', maxPlan),
  ];
  for (const evaluate of cases) {
    emit(detailsLine('evaluation', await evaluate()));
  }

  // Each ConfigurationChanged event, with when it arrived.
  const seen = [];
  let named;
  const namedPromise = new Promise((resolve) => {
    named = resolve;
  });
  OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
    const flags = details?.flagsChanged ?? [];
    const at = performance.now();
    seen.push({ at, flags });
    if (flags.includes(CHANGED_FLAG)) named({ at, flags });
  });

  const start = performance.now();
  const resp = await fetch(`${httpBase}/api/v1/namespaces/default/flags/${CHANGED_FLAG}`, {
    method: 'PATCH',
    headers: {
      'content-type': 'application/merge-patch+json',
      authorization: `Bearer ${process.env.VEXIL_ADMIN_TOKEN}`,
    },
    body: JSON.stringify({ defaultVariant: CHANGED_VARIANT }),
  });
  if (resp.status !== 200) {
    throw new Error(`PATCH answered ${resp.status}: ${await resp.text()}`);
  }
  let timer;
  const giveUp = new Promise((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `no ConfigurationChanged naming ${CHANGED_FLAG} within ${GIVE_UP_AFTER_MS} ms ` +
              `(events seen: ${JSON.stringify(seen)})`,
          ),
        ),
      GIVE_UP_AFTER_MS,
    );
  });
  const { at, flags } = await Promise.race([namedPromise, giveUp]);
  clearTimeout(timer);
  const after = await client.getStringDetails(CHANGED_FLAG, 'code-default');
  emit({
    ...detailsLine('change', after),
    elapsed_ms: Math.round((at - start) * 10) / 10,
    flags_changed: flags,
    events: seen.length,
  });

  await OpenFeature.close();
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`${err?.stack ?? err}\n`);
    process.exit(1);
  },
);
