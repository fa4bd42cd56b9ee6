//! The rule engine: JsonLogic plus flagd's operators, compiled once per flag set.
//!
//! Rules run on datalogic-rs, which ships flagd's `fractional` (bucketing v2), `sem_ver`,
//! `starts_with` and `ends_with`. Compilation does three things before handing a rule to it:
//! `$ref`s are replaced by the evaluator they name (flagd's `$evaluators`), the nesting depth is
//! bounded, and flagd's operators whose datalogic built-ins differ from flagd are renamed to our
//! own implementations (datalogic resolves built-in names before custom ones, so a rename is the
//! only way in): `starts_with`, `ends_with`, and `fractional` (v2 or v3 by the set's option).

mod flagd_ops;
mod fractional_v3;

use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

use crate::MAX_RULE_DEPTH;

/// Which fractional bucketing algorithm `fractional` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FractionalVersion {
    /// flagd's current algorithm: murmur3 x86_32 of the bucketing string,
    /// `(hash * total_weight) >> 32`.
    #[default]
    V2,
    /// flagd's accepted successor: the bucketing input is any JSON value, CBOR-encoded
    /// deterministically before hashing, so non-string attributes bucket the same everywhere.
    V3,
}

/// Name under which the v3 operator is registered; `fractional` is rewritten to it.
const FRACTIONAL_V3_OP: &str = "fractional_v3";

/// The operator a flagd name compiles to under the given fractional version, if renamed.
fn renamed(op: &str, fractional: FractionalVersion) -> Option<&'static str> {
    match op {
        "starts_with" => Some(flagd_ops::STARTS_WITH),
        "ends_with" => Some(flagd_ops::ENDS_WITH),
        "fractional" => Some(match fractional {
            FractionalVersion::V2 => flagd_ops::FRACTIONAL_V2,
            FractionalVersion::V3 => FRACTIONAL_V3_OP,
        }),
        _ => None,
    }
}

/// The shared datalogic engine. Building one registers operators and is not free, so all flag
/// sets share it; it is immutable and `Send + Sync`.
pub(crate) static ENGINE: LazyLock<datalogic_rs::Engine> = LazyLock::new(|| {
    let config = datalogic_rs::EvaluationConfig::default()
        // Bounded below the thread stack: a rule that passes compilation can still recurse at
        // run time through `map`/`filter`, so the engine has its own cap too.
        .with_max_recursion_depth(u32::try_from(MAX_RULE_DEPTH * 2).unwrap_or(256));
    datalogic_rs::Engine::builder()
        .with_config(config)
        .add_operator(FRACTIONAL_V3_OP, fractional_v3::FractionalV3)
        .add_operator(flagd_ops::FRACTIONAL_V2, flagd_ops::FractionalV2)
        .add_operator(flagd_ops::STARTS_WITH, flagd_ops::Affix { suffix: false })
        .add_operator(flagd_ops::ENDS_WITH, flagd_ops::Affix { suffix: true })
        .build()
});

static OPERATORS: LazyLock<std::collections::HashSet<&'static str>> =
    LazyLock::new(|| ENGINE.builtin_operator_names().collect());

fn is_operator(name: &str) -> bool {
    OPERATORS.contains(name)
}

/// Why a rule cannot be compiled. At evaluation time every variant means PARSE_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// `{"$ref": name}` names no evaluator.
    #[error("\"$ref\" names evaluator \"{name}\", which is not defined")]
    UnknownRef {
        /// The missing evaluator.
        name: String,
    },
    /// Evaluators refer to each other in a cycle.
    #[error("evaluator \"{name}\" refers to itself through $ref")]
    RefCycle {
        /// An evaluator on the cycle.
        name: String,
    },
    /// The rule, after `$ref` expansion, nests deeper than [`MAX_RULE_DEPTH`].
    #[error("rule nesting exceeds {MAX_RULE_DEPTH} levels")]
    TooDeep,
    /// datalogic rejected the rule: unknown operator, wrong argument shape, ...
    #[error("invalid rule: {message}")]
    Invalid {
        /// The engine's explanation.
        message: String,
    },
}

/// A compiled targeting rule, ready to evaluate without re-parsing. Cheap to clone.
#[derive(Clone)]
pub struct CompiledRule {
    pub(crate) logic: Arc<datalogic_rs::Logic>,
    /// The rule after `$ref` expansion, for `explain`, as compact JSON text: a parsed `Value`
    /// tree costs ~25 times its text (about 4 KiB for a two-branch rule), which would dominate
    /// the memory of a namespace with 100,000 flags, and explain is rare.
    pub(crate) expanded: Arc<str>,
    /// Whether the rule can read `$flagd.timestamp` (decided once, at compile time).
    pub(crate) reads_clock: bool,
}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRule")
            .field("rule", &self.expanded)
            .finish_non_exhaustive()
    }
}

impl CompiledRule {
    /// The rule as evaluated: `$ref`s replaced by their evaluators (parsed on each call).
    pub fn expanded(&self) -> Value {
        serde_json::from_str(&self.expanded).unwrap_or(Value::Null)
    }
}

/// Compiles `rule` against `evaluators` for the given fractional version.
///
/// # Errors
/// Any [`RuleError`]; a flag whose rule fails here still loads and answers PARSE_ERROR.
pub fn compile(
    rule: &Value,
    evaluators: &Map<String, Value>,
    fractional: FractionalVersion,
) -> Result<CompiledRule, RuleError> {
    let expanded = expand(rule, evaluators, fractional, &mut Vec::new(), 0)?;
    let logic = ENGINE.compile(&expanded).map_err(|e| RuleError::Invalid {
        message: e.to_string(),
    })?;
    Ok(CompiledRule {
        logic: Arc::new(logic),
        reads_clock: crate::evaluate::reads_clock(&expanded),
        expanded: Arc::from(expanded.to_string()),
    })
}

/// Copies `rule`, replacing every `{"$ref": name}` with the named evaluator (itself expanded).
/// `stack` holds the evaluators being expanded, to detect cycles. Depth counts nesting in the
/// result, so the bound holds after expansion.
fn expand(
    rule: &Value,
    evaluators: &Map<String, Value>,
    fractional: FractionalVersion,
    stack: &mut Vec<String>,
    depth: usize,
) -> Result<Value, RuleError> {
    if depth > MAX_RULE_DEPTH {
        return Err(RuleError::TooDeep);
    }
    match rule {
        Value::Object(map) => {
            if let (1, Some(Value::String(name))) = (map.len(), map.get("$ref")) {
                if stack.iter().any(|n| n == name) {
                    return Err(RuleError::RefCycle { name: name.clone() });
                }
                let target = evaluators
                    .get(name)
                    .ok_or_else(|| RuleError::UnknownRef { name: name.clone() })?;
                stack.push(name.clone());
                let out = expand(target, evaluators, fractional, stack, depth);
                stack.pop();
                return out;
            }
            // datalogic defers unknown operators to evaluation time (as custom-operator calls);
            // flagd rejects them when the rule is loaded, and so do we.
            if map.len() == 1
                && let Some(op) = map.keys().next()
                && !is_operator(op)
            {
                return Err(RuleError::Invalid {
                    message: format!("unknown operator \"{op}\""),
                });
            }
            let mut out = Map::new();
            for (k, v) in map {
                // Only an operator position (a single-key object) is renamed; a multi-key
                // object is data, whatever its keys say.
                let k = match renamed(k, fractional) {
                    Some(op) if map.len() == 1 => op.to_owned(),
                    _ => k.clone(),
                };
                out.insert(k, expand(v, evaluators, fractional, stack, depth + 1)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| expand(v, evaluators, fractional, stack, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn none() -> Map<String, Value> {
        Map::new()
    }

    #[test]
    fn refs_are_expanded_before_compilation() {
        let evals = json!({"is_admin": {"==": [{"var": "role"}, "admin"]}});
        let evals = evals.as_object().cloned().unwrap_or_default();
        let rule = compile(
            &json!({"if": [{"$ref": "is_admin"}, "on", null]}),
            &evals,
            FractionalVersion::V2,
        );
        assert_eq!(
            rule.map(|r| r.expanded()),
            Ok(json!({"if": [{"==": [{"var": "role"}, "admin"]}, "on", null]}))
        );
    }

    #[test]
    fn a_missing_ref_and_a_ref_cycle_are_errors() {
        assert_eq!(
            compile(&json!({"$ref": "nope"}), &none(), FractionalVersion::V2).err(),
            Some(RuleError::UnknownRef {
                name: "nope".into()
            })
        );
        let evals = json!({"a": {"!": {"$ref": "b"}}, "b": {"!": {"$ref": "a"}}});
        let evals = evals.as_object().cloned().unwrap_or_default();
        assert!(matches!(
            compile(&json!({"$ref": "a"}), &evals, FractionalVersion::V2),
            Err(RuleError::RefCycle { .. })
        ));
    }

    #[test]
    fn unknown_operators_fail_to_compile() {
        assert!(matches!(
            compile(&json!({"invalid": ["x"]}), &none(), FractionalVersion::V2),
            Err(RuleError::Invalid { .. })
        ));
    }

    #[test]
    fn nesting_beyond_the_limit_is_rejected_before_the_engine_sees_it() {
        let mut rule = json!(true);
        for _ in 0..(MAX_RULE_DEPTH + 5) {
            rule = json!({"!": [rule]});
        }
        assert_eq!(
            compile(&rule, &none(), FractionalVersion::V2).err(),
            Some(RuleError::TooDeep)
        );
    }

    #[test]
    fn v3_mode_renames_fractional_inside_evaluators_too() {
        let evals = json!({"split": {"fractional": [["a", 1], ["b", 1]]}});
        let evals = evals.as_object().cloned().unwrap_or_default();
        let rule = compile(&json!({"$ref": "split"}), &evals, FractionalVersion::V3);
        assert_eq!(
            rule.map(|r| r.expanded()),
            Ok(json!({"fractional_v3": [["a", 1], ["b", 1]]}))
        );
    }
}
