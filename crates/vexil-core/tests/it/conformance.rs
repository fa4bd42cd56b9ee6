//! Runs the flagd-testbed rows that concern an evaluator against the in-process engine.

use serde_json::Value;
use vexil_core::{
    FlagDocument, FlagSet, FlagSetOptions, FractionalVersion, Schema, TargetingPolicy, ValueKind,
};
use vexil_testkit::testbed::{self, FlagType, Fractional, Outcome, Request, Resolver};

struct InProcess(FlagSet);

impl Resolver for InProcess {
    fn resolve(&mut self, req: &Request) -> Result<Outcome, String> {
        let kind = match req.flag_type {
            FlagType::Boolean => ValueKind::Boolean,
            FlagType::String => ValueKind::String,
            FlagType::Integer => ValueKind::Integer,
            FlagType::Float => ValueKind::Float,
            FlagType::Object => ValueKind::Object,
        };
        let r = self
            .0
            .evaluate(&req.key, &Value::Object(req.context.clone()))
            .expect(kind);
        Ok(Outcome {
            value: r.value.map(|v| (*v).clone()),
            reason: r.reason.as_str().to_owned(),
            error_code: r.error_code.map(|c| c.as_str().to_owned()),
            metadata: r.metadata.to_map(),
        })
    }
}

#[test]
fn every_required_flagd_testbed_row_passes_in_process() {
    let mut failed = 0;
    let mut out = String::new();
    for suite in testbed::suites() {
        // The testbed files hold deliberately broken rules; they load the way flagd loads them.
        let doc = FlagDocument::from_value(&suite.flags, Schema::Flagd, TargetingPolicy::Warn)
            .unwrap_or_else(|e| panic!("suite {} flags do not load: {e}", suite.name))
            .document;
        let options = FlagSetOptions {
            fractional: match suite.fractional {
                Fractional::V2 => FractionalVersion::V2,
                Fractional::V3 => FractionalVersion::V3,
            },
            static_context: suite.static_context.clone(),
        };
        let report = testbed::run(&suite, &mut InProcess(FlagSet::compile(&doc, &options)));
        assert!(report.passed() > 0, "suite {} ran no rows", suite.name);
        out.push_str(&report.summary(suite.name));
        failed += report.failed();
    }
    println!("{out}");
    assert_eq!(failed, 0, "conformance failures:\n{out}");
}
