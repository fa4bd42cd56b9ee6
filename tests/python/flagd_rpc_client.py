"""Evaluates Vexil flags through the real OpenFeature Python SDK and its flagd provider in RPC
mode (`flagd.evaluation.v2` typed resolves plus EventStream), with the provider's cache off.

Usage: flagd_rpc_client.py GRPC_HOST GRPC_PORT HTTP_BASE_URL [SELECTOR]

With SELECTOR, the provider sends it as its flagd selector (Vexil's namespace) and the change is
made in that namespace; without, neither says one and Vexil serves `default`.

Prints one JSON line per evaluation ("kind": "evaluation": flag_key, value, type, reason,
variant, error_code), then changes a flag over REST and prints one "kind": "change" line: the
milliseconds from just before the PATCH until the provider emitted PROVIDER_CONFIGURATION_CHANGED
naming that flag (elapsed_ms), the flags the event named, and what the flag evaluates to
afterwards. Assertions are in `crates/vexil-server/tests/it/flagd_clients.rs`.
"""

import sys
import threading
import time

from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.event import EventDetails, ProviderEvent

import flagd_common as common


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
        resolver_type=ResolverType.RPC,
        # Off, so every evaluation after the change reaches the server.
        cache=CacheType.DISABLED,
        # The provider's default (500 ms) is both the call deadline and how long initialisation
        # waits for EventStream's provider_ready: too tight for a loaded two-core CI machine.
        deadline_ms=10_000,
    )
    # Blocks until EventStream delivered provider_ready (the provider raises otherwise).
    api.set_provider_and_wait(provider)
    client = api.get_client()

    common.evaluate_all(client)

    # Each configuration-changed event, with when it arrived.
    seen = []
    changed = threading.Event()

    def on_change(details: EventDetails) -> None:
        seen.append((time.monotonic(), list(details.flags_changed or [])))
        if common.CHANGED_FLAG in (details.flags_changed or []):
            changed.set()

    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)

    start = time.monotonic()
    common.change_flag(http_base, selector or "default")
    if not changed.wait(common.GIVE_UP_AFTER_S):
        raise RuntimeError(
            f"no PROVIDER_CONFIGURATION_CHANGED naming {common.CHANGED_FLAG} within "
            f"{common.GIVE_UP_AFTER_S} s (events seen: {seen})"
        )
    at, flags = next((t, f) for t, f in seen if common.CHANGED_FLAG in f)
    elapsed = round((at - start) * 1000.0, 1)
    after = client.get_string_details(common.CHANGED_FLAG, "code-default")
    line = common.details_line("change", after)
    line.update(elapsed_ms=elapsed, flags_changed=flags, events=len(seen))
    common.emit(line)

    api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
