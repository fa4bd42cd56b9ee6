//! Fuzzes loading, compiling and evaluating a flag document.
//!
//! Input: a flag definition (JSON text) and an evaluation context (JSON text), separated by the
//! first NUL byte; without one, the whole input is the definition and the context is `{}`. The
//! definition is loaded the way flagd loads files (`Schema::Flagd`, `TargetingPolicy::Warn`),
//! compiled with fractional v2 and v3, and every flag is evaluated (`evaluate_at`, `explain`,
//! `evaluate_all_at`) with the context as the request context and, separately, as the static
//! context. Anything may be refused; nothing may panic, and every resolution must be coherent.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use vexil_core::{
    FlagDocument, FlagSet, FlagSetOptions, FractionalVersion, Reason, Resolution, Schema,
    TargetingPolicy,
};

/// A fixed `$flagd.timestamp`, so a crash reproduces.
const NOW: i64 = 1_700_000_000;

fn check(r: &Resolution) {
    assert_eq!(r.reason == Reason::Error, r.error_code.is_some(), "{r:?}");
    assert_eq!(r.value.is_some(), r.variant.is_some(), "{r:?}");
    if r.reason == Reason::Error {
        assert!(r.value.is_none(), "{r:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (definition, context) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(definition) = std::str::from_utf8(definition) else {
        return;
    };
    let Ok(loaded) = FlagDocument::from_json_str(definition, Schema::Flagd, TargetingPolicy::Warn)
    else {
        return;
    };
    // A context that is not JSON is still a context: the raw text as a string (INVALID_CONTEXT).
    let context: Value = serde_json::from_slice(context)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(context).into_owned()));
    let static_context = context.as_object().cloned().unwrap_or_default();

    for fractional in [FractionalVersion::V2, FractionalVersion::V3] {
        for (static_context, request) in [
            (Map::new(), &context),
            (static_context.clone(), &Value::Object(Map::new())),
        ] {
            let set = FlagSet::compile(
                &loaded.document,
                &FlagSetOptions {
                    fractional,
                    static_context,
                },
            );
            for key in set.keys() {
                let r = set.evaluate_at(key, request, NOW);
                check(&r);
                let e = set.explain(key, request, NOW);
                assert_eq!(e.resolution, r, "explain disagrees with evaluate for {key}");
            }
            let all = set.evaluate_all_at(request, NOW);
            assert_eq!(all.len(), set.len());
            for (key, r) in &all {
                check(r);
                assert_eq!(
                    r,
                    &set.evaluate_at(key, request, NOW),
                    "evaluate_all disagrees for {key}"
                );
            }
        }
    }
    // Unknown keys are FLAG_NOT_FOUND, not a panic.
    let set = FlagSet::compile(&loaded.document, &FlagSetOptions::default());
    check(&set.evaluate_at("\u{0}no-such-flag", &context, NOW));
});
