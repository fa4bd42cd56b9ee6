"""Evaluates Vexil flags through the real OpenFeature Python SDK and its flagd provider in
IN_PROCESS mode: the provider streams the namespace's flag document from Vexil's
`flagd.sync.v1.FlagSyncService.SyncFlags` and evaluates locally.

Usage: flagd_in_process_client.py GRPC_HOST GRPC_PORT HTTP_BASE_URL [SELECTOR]

With SELECTOR, the provider sends it as its flagd selector (Vexil's namespace) and the change is
made in that namespace; without, neither says one and Vexil serves `default`.

Prints one JSON line per evaluation ("kind": "evaluation": flag_key, value, type, reason,
variant, error_code), then changes a flag over REST and prints one "kind": "change" line: the
milliseconds from just before the PATCH until a local evaluation first returned the new value
(elapsed_ms; the flag is polled every few milliseconds) and until the provider emitted
PROVIDER_CONFIGURATION_CHANGED naming the flag (event_ms), with that evaluation's details.
Assertions are in `crates/vexil-server/tests/it/flagd_clients.rs`.
"""

import sys
import threading
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.event import EventDetails, ProviderEvent

import flagd_common as common

POLL_S = 0.002


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    host, port, http_base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    selector = sys.argv[4] if len(sys.argv) == 5 else None

    provider = FlagdProvider(
        host=host,
        port=port,
        selector=selector,
        resolver_type=ResolverType.IN_PROCESS,
        # How long initialisation waits for the first SyncFlags document (default 500 ms).
        deadline_ms=10_000,
    )
    # Blocks until the first document arrived and was loaded.
    api.set_provider_and_wait(provider)
    client = api.get_client()

    common.evaluate_all(client)

    # Each configuration-changed event, with when it arrived. The provider emits one whenever it
    # loads a document, naming the flags whose definition differs from the last one.
    events = []
    named = threading.Event()

    def on_change(details: EventDetails) -> None:
        events.append((time.monotonic(), list(details.flags_changed or [])))
        if common.CHANGED_FLAG in (details.flags_changed or []):
            named.set()

    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)

    start = time.monotonic()
    common.change_flag(http_base, selector or "default")
    while True:
        after = client.get_string_details(common.CHANGED_FLAG, "code-default")
        elapsed = common.elapsed_ms(start)
        if after.value == common.CHANGED_VALUE:
            break
        if elapsed > common.GIVE_UP_AFTER_S * 1000.0:
            raise RuntimeError(
                f"{common.CHANGED_FLAG} still {after.value!r} after {elapsed} ms "
                f"(events seen: {events})"
            )
        time.sleep(POLL_S)
    # The event follows the load that made the new value visible; it may be a moment behind.
    if not named.wait(common.GIVE_UP_AFTER_S):
        raise RuntimeError(
            f"no PROVIDER_CONFIGURATION_CHANGED naming {common.CHANGED_FLAG} "
            f"(events seen: {events})"
        )
    at, flags = next((t, f) for t, f in events if common.CHANGED_FLAG in f)
    line = common.details_line("change", after)
    line.update(
        elapsed_ms=elapsed,
        event_ms=round((at - start) * 1000.0, 1),
        flags_changed=flags,
        events=len(events),
    )
    common.emit(line)

    api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
