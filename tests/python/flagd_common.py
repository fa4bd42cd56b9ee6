"""What the flagd-provider clients share: the evaluation cases, the JSON lines they print, and
the REST change they make and time.

The flags are the ones `crates/vexil-server/tests/it/flagd_clients.rs` imports; the Rust test
asserts on the printed lines. A script exits non-zero only on an exception (or when the change
never shows), so that a broken run cannot look like a passing one.
"""

import json
import os
import time
import urllib.request

from openfeature.evaluation_context import EvaluationContext

# The flag the change phase edits over REST, and how: its default variant goes from "blue"
# (#0000ff) to "red" (#ff0000).
CHANGED_FLAG = "fl-string"
CHANGED_VARIANT = "red"
CHANGED_VALUE = "#ff0000"

# How long a script waits for a change to show before it gives up (the Rust test asserts a much
# tighter bound on the measured time; this only keeps a broken run from hanging).
GIVE_UP_AFTER_S = 10.0


def cases(client):
    """(method, flag key, code default, context) for every case, in the order printed."""
    anyone = EvaluationContext(targeting_key="user-1")
    gold = EvaluationContext(targeting_key="user-2", attributes={"tier": "gold"})
    max_plan = EvaluationContext(targeting_key="user-3", attributes={"plan": "max"})
    return [
        (client.get_boolean_details, "fl-bool", False, anyone),
        (client.get_string_details, "fl-string", "code-default", anyone),
        (client.get_integer_details, "fl-int", -1, anyone),
        (client.get_float_details, "fl-float", -1.5, anyone),
        (client.get_float_details, "fl-float", -1.5, max_plan),
        (client.get_object_details, "fl-object", {"code": "default"}, anyone),
        (client.get_string_details, "fl-targeted", "code-default", gold),
        (client.get_string_details, "fl-targeted", "code-default", anyone),
        (client.get_boolean_details, "fl-disabled", False, anyone),
        # A fractional split: bucketed by targeting key (in-process: by the provider itself).
        (client.get_string_details, "fl-split", "code-default", anyone),
        (client.get_string_details, "fl-split", "code-default", gold),
        (client.get_string_details, "fl-split", "code-default", max_plan),
    ]


def type_name(value):
    """The Python type of a value, as the Rust side checks it (bool before int: bool is an int)."""
    for t in (bool, int, float, str, dict, list):
        if isinstance(value, t):
            return t.__name__
    return type(value).__name__


def details_line(kind, details):
    reason = str(details.reason) if details.reason is not None else None
    error_code = str(details.error_code) if details.error_code is not None else None
    return {
        "kind": kind,
        "flag_key": details.flag_key,
        "value": details.value,
        "type": type_name(details.value),
        "reason": reason,
        "variant": details.variant,
        "error_code": error_code,
        "error_message": details.error_message,
    }


def emit(line):
    print(json.dumps(line, sort_keys=True), flush=True)


def evaluate_all(client):
    for method, key, default, context in cases(client):
        emit(details_line("evaluation", method(key, default, context)))


def change_flag(http_base, namespace="default"):
    """Merge-patches CHANGED_FLAG's default variant over the REST API; raises unless 200."""
    req = urllib.request.Request(
        f"{http_base}/api/v1/namespaces/{namespace}/flags/{CHANGED_FLAG}",
        data=json.dumps({"defaultVariant": CHANGED_VARIANT}).encode(),
        headers={
            "content-type": "application/merge-patch+json",
            "authorization": f"Bearer {os.environ['VEXIL_ADMIN_TOKEN']}",
        },
        method="PATCH",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status != 200:
            raise RuntimeError(f"PATCH answered {resp.status}")


def elapsed_ms(start):
    return round((time.monotonic() - start) * 1000.0, 1)
