//! Targeting-rule validation (flagd's `targeting.json`). Being written.

use super::Violation;

/// Checks `rule` (a flag's `targeting` or an `$evaluators` entry) against flagd's targeting
/// schema, pushing one [`Violation`] per broken rule, located under `path`.
///
/// Never panics and never recurses deeper than [`crate::MAX_RULE_DEPTH`]; a deeper rule is one
/// violation.
pub fn validate_targeting(rule: &serde_json::Value, path: &str, out: &mut Vec<Violation>) {
    let _ = (rule, path, out);
}
