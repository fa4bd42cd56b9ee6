"""Evaluates Vexil flags through the real OpenFeature Python SDK and its OFREP provider.

Usage: ofrep_client.py BASE_URL [NAMESPACE]

The flags are the ones `crates/vexil-server/tests/it/python_client.rs` imports. Prints one JSON
line per evaluation: flag_key, value, reason, variant, error_code (the SDK's evaluation details,
as the application sees them). The Rust test asserts on those lines; this script only exits
non-zero when an evaluation is plainly wrong (an error code, a reason other than the expected
one, a value of the wrong Python type) so that a broken run cannot look like a passing one.
"""

import json
import os
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    base_url = sys.argv[1]
    namespace = sys.argv[2] if len(sys.argv) == 3 else "default"

    # The provider sends these headers on every request (headers_factory is called per call):
    # the namespace, and an evaluator API token as OFREP's X-API-Key.
    token = os.environ["VEXIL_TOKEN"]
    provider = OFREPProvider(
        base_url=base_url,
        headers_factory=lambda: {"x-vexil-namespace": namespace, "x-api-key": token},
        timeout=10.0,
    )
    # set_provider_and_wait, not set_provider: set_provider initialises the provider on a
    # background thread, and an evaluation before that finishes answers PROVIDER_NOT_READY.
    api.set_provider_and_wait(provider)
    client = api.get_client()

    anyone = EvaluationContext(targeting_key="user-1")
    gold = EvaluationContext(targeting_key="user-2", attributes={"tier": "gold"})
    max_plan = EvaluationContext(targeting_key="user-3", attributes={"plan": "max"})

    # (method, flag key, code default, context, expected reason, expected Python type)
    cases = [
        (client.get_boolean_details, "py-bool", False, anyone, "STATIC", bool),
        (client.get_string_details, "py-string", "code-default", anyone, "STATIC", str),
        (client.get_integer_details, "py-int", -1, anyone, "STATIC", int),
        (client.get_float_details, "py-float", -1.5, anyone, "DEFAULT", float),
        (client.get_float_details, "py-float", -1.5, max_plan, "TARGETING_MATCH", float),
        (client.get_object_details, "py-object", {"code": "default"}, anyone, "STATIC", dict),
        (client.get_boolean_details, "py-disabled", False, anyone, "DISABLED", bool),
        (client.get_string_details, "py-targeted", "code-default", gold, "TARGETING_MATCH", str),
        (client.get_string_details, "py-targeted", "code-default", anyone, "DEFAULT", str),
    ]

    failures = 0
    for method, key, default, context, want_reason, want_type in cases:
        details = method(key, default, context)
        reason = str(details.reason) if details.reason is not None else None
        error_code = str(details.error_code) if details.error_code is not None else None
        print(
            json.dumps(
                {
                    "flag_key": details.flag_key,
                    "value": details.value,
                    "reason": reason,
                    "variant": details.variant,
                    "error_code": error_code,
                    "error_message": details.error_message,
                },
                sort_keys=True,
            ),
            flush=True,
        )
        # bool is a subclass of int in Python: an integer flag must not come back as a bool.
        wrong_type = not isinstance(details.value, want_type) or (
            want_type is int and isinstance(details.value, bool)
        )
        if error_code is not None or reason != want_reason or wrong_type:
            print(
                f"unexpected result for {key}: reason {reason} (want {want_reason}), "
                f"error {error_code} ({details.error_message}), "
                f"value {details.value!r} (want {want_type.__name__})",
                file=sys.stderr,
            )
            failures += 1

    api.shutdown()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
