//! Property tests of the evaluator: bucketing is deterministic and fair, and no input — context,
//! rule, weights — makes it panic or overflow the stack.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Number, Value, json};
use vexil_core::{
    ErrorCode, FlagDefinition, FlagDocument, FlagSet, FlagSetOptions, FlagState, FractionalVersion,
    MAX_RULE_DEPTH, Reason, Resolution, Schema, TargetingPolicy,
};

const VERSIONS: [FractionalVersion; 2] = [FractionalVersion::V2, FractionalVersion::V3];

/// Compiles a document the way flagd loads one: invalid targeting is a warning, not a failure.
fn compile(doc: &Value, fractional: FractionalVersion) -> FlagSet {
    let loaded = FlagDocument::from_value(doc, Schema::Flagd, TargetingPolicy::Warn)
        .unwrap_or_else(|e| panic!("document does not load: {e}\n{doc}"));
    FlagSet::compile(
        &loaded.document,
        &FlagSetOptions {
            fractional,
            static_context: Map::new(),
        },
    )
}

/// One string flag `f` with variants `v0..vN` (default `v0`) and the given targeting.
fn flag_doc(variants: usize, targeting: Value) -> Value {
    let variants: Map<String, Value> = (0..variants)
        .map(|i| (format!("v{i}"), json!(format!("v{i}"))))
        .collect();
    json!({"flags": {"f": {
        "state": "ENABLED", "variants": variants, "defaultVariant": "v0", "targeting": targeting
    }}})
}

/// `fractional` over `v0..vN` with `weights`, bucketing on `by` (or the shorthand when `None`).
fn fractional(by: Option<Value>, weights: &[Value]) -> Value {
    let mut args: Vec<Value> = by.into_iter().collect();
    args.extend(
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| json!([format!("v{i}"), w])),
    );
    json!({ "fractional": args })
}

/// What every resolution must satisfy, whatever the input: an error carries a code and no
/// value; a value comes with the variant it belongs to.
fn check_invariants(set: &FlagSet, doc: &Value, key: &str, r: &Resolution) {
    assert_eq!(
        r.reason == Reason::Error,
        r.error_code.is_some(),
        "reason and error code disagree: {r:?}"
    );
    if r.reason == Reason::Error {
        assert!(
            r.value.is_none() && r.variant.is_none(),
            "error with a value: {r:?}"
        );
    }
    match (&r.value, &r.variant) {
        (Some(value), Some(variant)) => {
            let declared = &doc["flags"][key]["variants"][&**variant];
            assert_eq!(
                &**value, declared,
                "variant {variant} served the wrong value"
            );
        }
        (None, None) => {}
        _ => panic!("value and variant must come together: {r:?}"),
    }
    assert!(set.len() <= 1 || !key.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Determinism and distribution
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(Config { cases: 128, ..Config::default() })]

    /// The same (flag set, key, context) gives the same variant: across repeated evaluations,
    /// across independently compiled sets, and between `evaluate` and `evaluate_all`.
    #[test]
    fn bucketing_is_deterministic(
        targeting_key in "\\PC{0,40}",
        email in "[a-z0-9.]{1,12}@[a-z]{1,8}\\.com",
        weights in prop::collection::vec(0u32..1000, 1..6),
        explicit in any::<bool>(),
        now in any::<i64>(),
    ) {
        let by = explicit.then(|| json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}));
        let weights: Vec<Value> = weights.into_iter().map(Value::from).collect();
        let doc = flag_doc(weights.len(), fractional(by, &weights));
        let ctx = json!({"targetingKey": targeting_key, "email": email});
        for version in VERSIONS {
            let a = compile(&doc, version);
            let b = compile(&doc, version);
            let first = a.evaluate_at("f", &ctx, now);
            check_invariants(&a, &doc, "f", &first);
            prop_assert!(first.error_code.is_none(), "{first:?}");
            for _ in 0..3 {
                prop_assert_eq!(&a.evaluate_at("f", &ctx, now), &first);
                prop_assert_eq!(&b.evaluate_at("f", &ctx, now), &first);
                prop_assert_eq!(&a.evaluate("f", &ctx), &first);
            }
            let all = b.evaluate_all_at(&ctx, now);
            prop_assert_eq!(all.len(), 1);
            prop_assert_eq!(&all[0].1, &first);
        }
    }
}

/// Shares of 100,000 distinct targeting keys per variant, in percent.
fn shares(set: &FlagSet, variants: usize, explicit: bool) -> Vec<f64> {
    const N: usize = 100_000;
    let mut counts = vec![0usize; variants];
    for i in 0..N {
        let ctx = if explicit {
            json!({"targetingKey": "ignored", "email": format!("user-{i}@example.com")})
        } else {
            json!({"targetingKey": format!("user-{i}")})
        };
        let r = set.evaluate_at("f", &ctx, 0);
        assert_eq!(r.reason, Reason::TargetingMatch, "{r:?}");
        let v = r.variant.as_deref().unwrap_or_default();
        let idx: usize = v.trim_start_matches('v').parse().unwrap_or(usize::MAX);
        counts[idx] += 1;
    }
    counts
        .into_iter()
        .map(|c| c as f64 * 100.0 / N as f64)
        .collect()
}

#[test]
fn fractional_shares_are_within_one_percent_of_their_weights_over_100_000_keys() {
    let mut report = String::new();
    for version in VERSIONS {
        for weights in [vec![50, 30, 20], vec![25, 25, 25, 25], vec![1, 99]] {
            let total: u32 = weights.iter().sum();
            let ws: Vec<Value> = weights.iter().copied().map(Value::from).collect();
            for explicit in [false, true] {
                let by =
                    explicit.then(|| json!({"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}));
                let doc = flag_doc(weights.len(), fractional(by, &ws));
                let got = shares(&compile(&doc, version), weights.len(), explicit);
                for (w, share) in weights.iter().zip(&got) {
                    let want = f64::from(*w) * 100.0 / f64::from(total);
                    assert!(
                        (share - want).abs() <= 1.0,
                        "{version:?} weights {weights:?} (explicit: {explicit}): share {share}% \
                         for weight {want}%; all shares {got:?}"
                    );
                }
                report.push_str(&format!(
                    "{version:?} {weights:?} explicit={explicit}: {got:?}\n"
                ));
            }
        }
    }
    println!("{report}");
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

/// A JSON number from any f64: NaN and the infinities are not JSON numbers, so they become
/// `null` (as serde_json would refuse to produce them).
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(float),
        prop::sample::select(vec![
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            1e308,
            -1e308,
            4_294_967_296.0,
            9_007_199_254_740_993.0,
            0.5,
        ])
        .prop_map(float),
        "\\PC{0,24}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "gold",
            "1.2.3",
            "v1.2.3",
            "1.2",
            "01.2.3",
            "1.2.3-beta.1+b",
            "$flagd",
            "user-1",
        ])
        .prop_map(Value::from),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$._]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value nested `depth` levels deep (arrays and objects alternating), built without recursion.
fn nested(depth: usize, leaf: Value) -> Value {
    // Not `json!`: it serializes an interpolated value, recursively and by copy.
    let mut v = leaf;
    for i in 0..depth {
        v = if i % 2 == 0 {
            Value::Array(vec![v])
        } else {
            Value::Object(Map::from_iter([("k".to_owned(), v)]))
        };
    }
    v
}

/// Arbitrary contexts: mostly objects with the attributes rules look at, sometimes deeply
/// nested, sometimes not an object at all.
fn context() -> impl Strategy<Value = Value> {
    let attrs = prop::collection::btree_map(
        prop::sample::select(vec![
            "targetingKey",
            "email",
            "tier",
            "version",
            "age",
            "$flagd",
            "items",
            "",
        ])
        .prop_map(String::from),
        json_value(),
        0..6,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    prop_oneof![
        6 => attrs,
        1 => json_value(),
        1 => (1usize..=160, scalar()).prop_map(|(d, leaf)| json!({"deep": nested(d, leaf)})),
    ]
}

/// Every operator datalogic or flagd knows, internal names a user might guess, and nonsense.
const OPERATORS: &[&str] = &[
    "var",
    "val",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "length",
    "upper",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
    "$ref",
    "fractional_v3",
    "vexil_fractional_v2",
    "vexil_starts_with",
    "log",
    "preserve",
    "throw",
    "try",
    "exists",
    "now",
    "nope",
    "",
];

/// Weights of every kind but huge: negative, zero, fractional, non-finite (as `null`), wrong
/// types, computed (see [`hostile_weight`] for the huge ones).
fn weight() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u32..200).prop_map(Value::from),
        1 => (-(1i64 << 28)..(1i64 << 28)).prop_map(Value::from),
        1 => prop::sample::select(vec![
            json!(-1e308), json!(i64::MIN), json!(-1), json!(0), json!(0.5), json!(-0.5),
            json!(null), json!("50"), json!([1]), json!({"var": "age"}), json!(true),
        ]),
        1 => any::<f64>().prop_map(|f| float(f.clamp(-1e300, 2.0e8))),
    ]
}

/// Any weight, huge ones included: `u64::MAX`, `1e308`, `f64::MAX`, anything an i64 or f64
/// holds.
fn hostile_weight() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => weight(),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(float),
        1 => prop::sample::select(vec![
            json!(u64::MAX), json!(1e308), json!(f64::MAX), json!(i32::MAX), json!(u32::MAX),
            json!(i64::MAX), json!(4_294_967_296u64),
        ]),
    ]
}

/// Random rule trees: operators with the right, wrong and no argument lists, `fractional` with
/// hostile buckets, and data.
fn rule() -> impl Strategy<Value = Value> {
    let var = prop::sample::select(vec![
        "tier",
        "email",
        "targetingKey",
        "version",
        "age",
        "$flagd.flagKey",
        "$flagd.timestamp",
        "$flagd",
        "",
        "items.0",
        "deep.k",
    ])
    .prop_map(|p| json!({ "var": p }));
    let leaf = prop_oneof![4 => scalar(), 3 => var];
    leaf.prop_recursive(6, 96, 5, |inner| {
        let op = prop::sample::select(OPERATORS.to_vec());
        let bucket =
            (inner.clone(), hostile_weight(), 0usize..4).prop_map(|(name, w, shape)| match shape {
                0 => json!([name, w]),
                1 => json!([name]),
                2 => json!([name, w, "extra"]),
                _ => json!([]),
            });
        prop_oneof![
            4 => (op.clone(), prop::collection::vec(inner.clone(), 0..5))
                .prop_map(|(op, args)| json!({ op: args })),
            2 => (op, inner.clone()).prop_map(|(op, arg)| json!({ op: arg })),
            2 => (prop::option::of(inner.clone()), prop::collection::vec(bucket, 0..5))
                .prop_map(|(by, buckets)| {
                    let mut args: Vec<Value> = by.into_iter().collect();
                    args.extend(buckets);
                    json!({ "fractional": args })
                }),
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            1 => prop::collection::btree_map("[a-z=!]{1,3}", inner, 2..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Evaluates `f` every way there is and checks the invariants.
fn evaluate_everything(doc: &Value, ctx: &Value, now: i64) {
    for version in VERSIONS {
        let set = compile(doc, version);
        for r in [set.evaluate_at("f", ctx, now), set.evaluate("f", ctx)] {
            check_invariants(&set, doc, "f", &r);
            match r.error_code {
                None | Some(ErrorCode::ParseError | ErrorCode::General) => {}
                Some(ErrorCode::InvalidContext) => {
                    assert!(!ctx.is_object() || ctx.to_string().len() > 256, "{r:?}");
                }
                Some(other) => panic!("unexpected error code {other:?}: {r:?}"),
            }
        }
        for (key, r) in set.evaluate_all_at(ctx, now) {
            check_invariants(&set, doc, &key, &r);
        }
        let e = set.explain("f", ctx, now);
        check_invariants(&set, doc, "f", &e.resolution);
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    /// Arbitrary rules on arbitrary contexts: a resolution (value, flagd's default fallback, or
    /// an error code), never a panic.
    #[test]
    fn arbitrary_rules_and_contexts_never_panic(
        targeting in rule(),
        ctx in context(),
        now in any::<i64>(),
    ) {
        // Variants named like what rules return: strings, booleans.
        let doc = json!({"flags": {"f": {
            "state": "ENABLED",
            "variants": {"v0": "v0", "v1": "v1", "true": "yes", "false": "no", "1": "one"},
            "defaultVariant": "v0",
            "targeting": targeting,
        }}});
        evaluate_everything(&doc, &ctx, now);
    }

    /// `fractional` with hostile weights and argument lists on a normal context.
    #[test]
    fn hostile_fractional_weights_never_panic(
        weights in prop::collection::vec(hostile_weight(), 0..6),
        by in prop::option::of(scalar()),
        targeting_key in prop::option::of("\\PC{0,16}"),
    ) {
        let doc = flag_doc(weights.len().max(1), fractional(by, &weights));
        let mut ctx = json!({"email": "a@b.c", "tier": "gold"});
        if let Some(tk) = targeting_key {
            ctx["targetingKey"] = json!(tk);
        }
        evaluate_everything(&doc, &ctx, 0);
    }

    /// Arbitrary JSON *text* as a flag definition and as a context: loading fails cleanly or
    /// loads, and every loaded flag evaluates.
    #[test]
    fn arbitrary_documents_load_or_fail_cleanly(doc in json_value(), ctx in context()) {
        let text = json!({"flags": {"f": doc}}).to_string();
        if let Ok(loaded) = FlagDocument::from_json_str(&text, Schema::Flagd, TargetingPolicy::Warn) {
            for version in VERSIONS {
                let set = FlagSet::compile(&loaded.document, &FlagSetOptions { fractional: version, ..Default::default() });
                for (_, r) in set.evaluate_all_at(&ctx, 0) {
                    prop_assert_eq!(r.reason == Reason::Error, r.error_code.is_some());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Explicit limits
// ---------------------------------------------------------------------------------------------

/// A flag per interesting rule shape, for the limit tests.
fn limit_doc() -> Value {
    json!({"flags": {
        "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
        "eq": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", "off"]}},
        "frac": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 50]]}},
        "frac_email": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
            "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]}},
        "starts": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
            "targeting": {"if": [{"starts_with": [{"var": "email"}, "x"]}, "on", "off"]}},
    }})
}

#[test]
fn a_10_mb_context_evaluates_within_a_generous_bound() {
    // One 10 MB attribute, and 10 MB spread over 100,000 attributes.
    let big_string = json!({
        "targetingKey": "x".repeat(10 << 20),
        "email": "y".repeat(10 << 20),
        "tier": "gold",
    });
    let mut many = Map::new();
    for i in 0..100_000 {
        many.insert(format!("attribute-{i:06}"), json!(format!("{i:0>100}")));
    }
    many.insert("tier".into(), json!("gold"));
    many.insert("targetingKey".into(), json!("user-1"));
    let many = Value::Object(many);
    assert!(many.to_string().len() > 10 << 20);

    let doc = limit_doc();
    for version in VERSIONS {
        let set = compile(&doc, version);
        for ctx in [&big_string, &many] {
            let start = Instant::now();
            for key in ["static", "eq", "frac", "frac_email", "starts"] {
                let r = set.evaluate(key, ctx);
                assert!(r.error_code.is_none(), "{key}: {r:?}");
                assert!(r.value.is_some(), "{key}: {r:?}");
            }
            let all = set.evaluate_all(ctx);
            assert!(all.iter().all(|(_, r)| r.error_code.is_none()));
            // Debug builds included: one pass over 10 MB takes milliseconds.
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{:?} took {:?}",
                version,
                start.elapsed()
            );
        }
    }
}

/// Takes a deeply nested value apart one level at a time. Dropping it whole would recurse once
/// per level and overflow the stack.
fn dismantle(v: Value) {
    // A work list instead of recursion: every container's children are detached before the
    // container itself is dropped, whatever shape the value has.
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(m) => stack.extend(m.into_iter().map(|(_, child)| child)),
            _ => {}
        }
    }
}

/// `{"!": [{"!": [... true ...]}]}`, `depth` levels deep, built without recursion (`json!` would
/// serialize the interpolated rule recursively, copying it at every level).
fn deep_rule(depth: usize) -> Value {
    let mut rule = json!(true);
    for _ in 0..depth {
        rule = Value::Object(Map::from_iter([("!".to_owned(), Value::Array(vec![rule]))]));
    }
    rule
}

/// Runs `f` on a thread with a 2 MiB stack (the default), so a recursion per level would show
/// as a stack overflow.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap_or_else(|e| panic!("cannot spawn: {e}"))
        .join()
        .unwrap_or_else(|_| panic!("the deep rule made the engine panic"))
}

#[test]
fn a_100_000_deep_rule_is_rejected_with_parse_error_without_overflowing_the_stack() {
    const DEPTH: usize = 100_000;
    const { assert!(DEPTH > MAX_RULE_DEPTH) };
    let rule = deep_rule(DEPTH);
    on_small_stack(move || {
        // The definition is built in code, so the engine gets the whole 100,000 levels
        // (`FlagDocument::from_value` keeps only a marker for such a rule; see the next test).
        let mut doc = FlagDocument::default();
        doc.flags.insert(
            "deep".into(),
            FlagDefinition {
                state: FlagState::Enabled,
                variants: Map::from_iter([("true".into(), json!(1)), ("false".into(), json!(0))]),
                default_variant: Some("false".into()),
                targeting: Some(rule),
                metadata: Map::new(),
            },
        );
        for version in VERSIONS {
            let set = FlagSet::compile(
                &doc,
                &FlagSetOptions {
                    fractional: version,
                    ..Default::default()
                },
            );
            for r in [
                set.evaluate("deep", &json!({})),
                set.evaluate_all(&json!({})).remove(0).1,
                set.explain("deep", &json!({}), 0).resolution,
            ] {
                assert_eq!(
                    (r.reason, r.error_code),
                    (Reason::Error, Some(ErrorCode::ParseError)),
                    "{version:?}: {r:?}"
                );
            }
        }
        // Dropping the rule whole would recurse once per level.
        if let Some(rule) = doc.flags.get_mut("deep").and_then(|f| f.targeting.take()) {
            dismantle(rule);
        }
    });
}

#[test]
fn a_100_000_deep_rule_loads_through_from_value_with_a_warning() {
    let mut doc = json!({"flags": {"deep": {
        "state": "ENABLED", "variants": {"true": 1, "false": 0}, "defaultVariant": "false",
    }}});
    doc["flags"]["deep"]["targeting"] = deep_rule(100_000);
    let doc = on_small_stack(move || {
        let mut loaded = FlagDocument::from_value(&doc, Schema::Flagd, TargetingPolicy::Warn)
            .unwrap_or_else(|e| panic!("a deep rule must load with a warning: {e}"));
        assert!(
            !loaded.warnings.is_empty(),
            "the deep rule must be reported"
        );
        let set = FlagSet::compile(&loaded.document, &FlagSetOptions::default());
        let r = set.evaluate("deep", &json!({}));
        assert_eq!(r.error_code, Some(ErrorCode::ParseError), "{r:?}");
        if let Some(copy) = loaded
            .document
            .flags
            .get_mut("deep")
            .and_then(|f| f.targeting.take())
        {
            dismantle(copy);
        }
        doc
    });
    dismantle(doc);
}

#[test]
fn the_same_deep_rule_as_json_text_is_a_syntax_error() {
    let text = format!(
        "{{\"flags\": {{\"deep\": {{\"state\": \"ENABLED\", \"variants\": {{\"a\": 1}}, \
         \"defaultVariant\": \"a\", \"targeting\": {}true{}}}}}}}",
        "{\"!\": [".repeat(100_000),
        "]}".repeat(100_000)
    );
    assert!(FlagDocument::from_json_str(&text, Schema::Flagd, TargetingPolicy::Warn).is_err());
}

/// Evaluates `fractional` with `weights` over many keys; returns the variants seen (default
/// included) and asserts every answer is a match or the default, never an error.
fn variants_seen(version: FractionalVersion, weights: &[Value]) -> Vec<String> {
    let doc = json!({"flags": {"f": {
        "state": "ENABLED",
        "variants": {"v0": "v0", "v1": "v1", "v2": "v2", "default": "default"},
        "defaultVariant": "default",
        "targeting": fractional(None, weights),
    }}});
    let set = compile(&doc, version);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..2_000 {
        let r = set.evaluate_at("f", &json!({"targetingKey": format!("user-{i}")}), 0);
        assert!(r.error_code.is_none(), "{weights:?}: {r:?}");
        seen.insert(r.variant.as_deref().unwrap_or("none").to_owned());
    }
    seen.into_iter().collect()
}

#[test]
fn negative_weights_count_as_zero_and_all_zero_weights_serve_the_default() {
    for version in VERSIONS {
        // flagd-testbed: ["one", -50] is treated as ["one", 0].
        assert_eq!(
            variants_seen(version, &[json!(-50), json!(10)]),
            ["v1"],
            "{version:?}"
        );
        assert_eq!(
            variants_seen(version, &[json!(-1e308), json!(i64::MIN), json!(3)]),
            ["v2"],
            "{version:?}"
        );
        assert_eq!(
            variants_seen(version, &[json!(0), json!(0)]),
            ["default"],
            "{version:?}"
        );
        assert_eq!(
            variants_seen(version, &[json!(-5), json!(0)]),
            ["default"],
            "{version:?}"
        );
    }
}

const HUGE_WEIGHTS: [[f64; 3]; 4] = [
    [u64::MAX as f64, 1.0, 0.0],
    [1e308, 1.0, 0.0],
    [u64::MAX as f64, u64::MAX as f64, u64::MAX as f64],
    [f64::MAX, 1e308, 1.0],
];

/// `HUGE_WEIGHTS` as JSON: `u64::MAX` as the integer, the rest as floats.
fn huge_weights() -> Vec<Vec<Value>> {
    HUGE_WEIGHTS
        .iter()
        .map(|ws| {
            ws.iter()
                .map(|&w| {
                    if w == u64::MAX as f64 {
                        json!(u64::MAX)
                    } else {
                        json!(w)
                    }
                })
                .collect()
        })
        .collect()
}

#[test]
fn huge_weights_serve_the_default_as_in_flagd() {
    // flagd (Go, and flagd-core 4.x) rejects a weight sum above i32::MAX and serves the
    // default variant; v2 and v3 both do the same.
    for version in VERSIONS {
        for weights in huge_weights() {
            assert_eq!(
                variants_seen(version, &weights),
                ["default"],
                "{version:?} {weights:?}"
            );
        }
        // At exactly i32::MAX in total, flagd still buckets.
        assert_eq!(
            variants_seen(version, &[json!(i32::MAX)]),
            ["v0"],
            "{version:?}"
        );
        assert_eq!(
            variants_seen(version, &[json!(i32::MAX), json!(1)]),
            ["default"],
            "{version:?}"
        );
    }
}

#[test]
fn wrong_argument_counts_and_unknown_operators_fall_back_or_fail_cleanly() {
    let rules = [
        json!({"fractional": []}),
        json!({"fractional": [["v0"]]}),
        json!({"fractional": "v0"}),
        json!({"fractional": [{"var": "missing"}, ["v0", 1]]}),
        json!({"sem_ver": [{"var": "version"}]}),
        json!({"sem_ver": [{"var": "version"}, "=", "1.0.0", "extra"]}),
        json!({"sem_ver": ["not-a-version", "^", "also-not"]}),
        json!({"starts_with": ["only-one"]}),
        json!({"ends_with": [1, 2]}),
        json!({"in": []}),
        json!({"if": []}),
        json!({"==": [1]}),
        json!({"nope": [1, 2]}),
        json!({"fractional_v3": [["v0", 1]]}),
        json!({"vexil_starts_with": ["a", "a"]}),
        json!({"$ref": "missing"}),
    ];
    for rule in rules {
        let doc = flag_doc(2, rule.clone());
        for version in VERSIONS {
            let set = compile(&doc, version);
            let r = set.evaluate("f", &json!({"targetingKey": "u", "version": "1.0.0"}));
            check_invariants(&set, &doc, "f", &r);
            assert!(
                matches!(
                    (r.reason, r.error_code),
                    (Reason::Default | Reason::TargetingMatch, None)
                        | (
                            Reason::Error,
                            Some(ErrorCode::ParseError | ErrorCode::General)
                        )
                ),
                "{version:?} {rule}: {r:?}"
            );
        }
    }
}
