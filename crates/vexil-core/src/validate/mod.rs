//! Validation of flagd flag documents and targeting rules.
//!
//! The rules follow flagd's published JSON schemas (`flags.json`, `flagd.json`, `targeting.json`),
//! re-expressed as code so that every rejection names the JSON path it concerns and the rule it
//! broke, in words a person can act on. A JSON-schema engine would tell us *that* a document is
//! invalid; it would not tell the user that `defaultVariant` names a variant that does not exist.

mod targeting;

pub use targeting::validate_targeting;

use std::fmt;

/// One broken rule, located by a dotted JSON path such as `flags.my-flag.defaultVariant`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Dotted path from the document root; array indices appear as `[3]`.
    pub path: String,
    /// What is wrong, phrased as the broken rule.
    pub message: String,
}

impl Violation {
    /// A violation at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Joins a parent path and a child key the way [`Violation::path`] spells it.
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Joins a parent path and an array index.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A short JSON rendering of a value for messages, truncated so a huge value cannot flood a
/// response or a log line.
pub(crate) fn show(value: &serde_json::Value) -> String {
    const MAX: usize = 60;
    // Serialising is recursive: a pathological value is described, not rendered.
    if deeper_than(value, 32) {
        return format!("a deeply nested {}", type_name(value));
    }
    let mut s = value.to_string();
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The JSON type name used in messages, matching JSON-schema vocabulary.
pub fn type_name(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Checks a `metadata` object (flag or flag set): values must be strings, numbers or booleans.
/// Returns the object when it is one, so the caller can keep it.
pub(crate) fn metadata<'v>(
    value: &'v serde_json::Value,
    path: &str,
    out: &mut Vec<Violation>,
) -> Option<&'v serde_json::Map<String, serde_json::Value>> {
    let Some(map) = value.as_object() else {
        out.push(Violation::new(
            path,
            format!("metadata must be an object, found {}", type_name(value)),
        ));
        return None;
    };
    let before = out.len();
    for (k, v) in map {
        if !matches!(
            v,
            serde_json::Value::String(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Bool(_)
        ) {
            out.push(Violation::new(
                join(path, k),
                format!(
                    "metadata values must be string, number or boolean, found {}",
                    type_name(v)
                ),
            ));
        }
    }
    (out.len() == before).then_some(map)
}

/// Every `{"$ref": name}` inside `rule` must name an evaluator that exists. flagd loads a flag
/// with a dangling reference and answers PARSE_ERROR, so callers decide whether this is fatal.
pub(crate) fn check_refs(
    rule: &serde_json::Value,
    path: &str,
    evaluators: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<Violation>,
) {
    // Iterative walk: a rule deeper than the stack could hold must not crash the validator.
    let mut stack = vec![rule];
    let mut seen = 0usize;
    while let Some(v) = stack.pop() {
        seen += 1;
        if seen > 1_000_000 {
            out.push(Violation::new(path, "rule is too large"));
            return;
        }
        match v {
            serde_json::Value::Object(m) => {
                if let (1, Some(serde_json::Value::String(name))) = (m.len(), m.get("$ref"))
                    && !evaluators.contains_key(name)
                {
                    out.push(Violation::new(
                        path,
                        format!("\"$ref\" names evaluator \"{name}\", which is not defined"),
                    ));
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
}

/// Whether `value` nests more than `limit` levels (a scalar or an empty container is one level,
/// a container one more than its deepest member). Recurses at most `limit` frames deep and
/// allocates nothing, so it is safe on hostile input and cheap on the usual flat context.
pub fn deeper_than(value: &serde_json::Value, limit: usize) -> bool {
    let Some(inner) = limit.checked_sub(1) else {
        return true;
    };
    match value {
        serde_json::Value::Object(m) => m.values().any(|c| deeper_than(c, inner)),
        serde_json::Value::Array(a) => a.iter().any(|c| deeper_than(c, inner)),
        _ => false,
    }
}

/// Rules nested deeper than this are not copied into a document (a recursive copy of a
/// pathological value could exhaust the stack); see [`kept_rule`].
const MAX_KEPT_DEPTH: usize = 512;

/// The rule as a document keeps it. JSON and YAML parsers cap nesting at 128, so only a value
/// built in code can be deeper than [`MAX_KEPT_DEPTH`]; such a rule could never compile, and is
/// kept as a marker operator that fails compilation the same way (PARSE_ERROR at evaluation).
pub(crate) fn kept_rule(rule: &serde_json::Value) -> serde_json::Value {
    if deeper_than(rule, MAX_KEPT_DEPTH) {
        serde_json::json!({ "vexil.rule-too-deep": crate::MAX_RULE_DEPTH })
    } else {
        rule.clone()
    }
}
