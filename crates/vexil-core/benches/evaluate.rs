//! Engine micro-benchmarks: one flag (static, one `==` rule, `fractional`) and a bulk
//! `evaluate_all` over 100 mixed flags, on a five-attribute context.
//!
//! The flags and the context come from `bench/fixtures/core-bench.json`, which the flagd-core
//! baseline (`bench/flagd-core/bench.mjs`) reads too; `bench/run-core-bench.sh` runs both and
//! prints the ratios. Before measuring, this prints a `CHECK {...}` line with the variant of every
//! flag so the script can confirm both engines answered the same.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use vexil_core::{FlagDocument, FlagSet, FlagSetOptions, Schema, TargetingPolicy};

struct Fixture {
    context: Value,
    single: FlagSet,
    bulk: FlagSet,
    cases: [(&'static str, String); 3],
}

fn compile(doc: &Value) -> FlagSet {
    let loaded = FlagDocument::from_value(doc, Schema::Flagd, TargetingPolicy::Reject)
        .unwrap_or_else(|e| panic!("benchmark flags do not load: {e}"));
    FlagSet::compile(&loaded.document, &FlagSetOptions::default())
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/fixtures/core-bench.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let case = |name: &str| -> String {
        json["cases"][name]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no case {name}"))
            .to_owned()
    };
    Fixture {
        context: json["context"].clone(),
        single: compile(&json["single"]),
        bulk: compile(&json["bulk"]),
        cases: [
            ("static", case("static")),
            ("eq", case("eq")),
            ("fractional", case("fractional")),
        ],
    }
}

/// The variant each case and each bulk flag resolves to, as one JSON line.
fn print_check(f: &Fixture) {
    let mut single = BTreeMap::new();
    for (name, key) in &f.cases {
        let r = f.single.evaluate(key, &f.context);
        assert!(r.error_code.is_none(), "{key}: {r:?}");
        single.insert(*name, r.variant.as_deref().map(str::to_owned));
    }
    let bulk: BTreeMap<String, Option<String>> = f
        .bulk
        .evaluate_all(&f.context)
        .into_iter()
        .map(|(k, r)| {
            assert!(r.error_code.is_none(), "{k}: {r:?}");
            (k.to_string(), r.variant.as_deref().map(str::to_owned))
        })
        .collect();
    let check = serde_json::json!({"single": single, "bulk": bulk});
    println!("CHECK {check}");
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    print_check(&f);

    let mut g = c.benchmark_group("evaluate");
    for (name, key) in &f.cases {
        g.bench_function(*name, |b| {
            b.iter(|| f.single.evaluate(black_box(key), black_box(&f.context)));
        });
    }
    g.bench_function("bulk100", |b| {
        b.iter(|| f.bulk.evaluate_all(black_box(&f.context)));
    });
    g.finish();
}

criterion_group! {
    name = engine;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(engine);
