//! The flag model: flagd flag definitions and the documents that carry them.
//!
//! A [`FlagDefinition`] is exactly what flagd calls a flag: state, typed variants, an optional
//! default variant, optional targeting and metadata. Vexil's stored flag (see [`crate::domain`])
//! is a superset of it, so a flagd file imports unchanged and exports back the same.
//!
//! Documents are read through [`FlagDocument::from_json_str`] / [`FlagDocument::from_yaml_str`],
//! which validate as they parse so that every rejection carries a JSON path.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validate::{self, Violation};

/// Whether a flag is served. A disabled flag resolves with reason DISABLED and no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagState {
    /// Served normally.
    #[default]
    Enabled,
    /// The kill switch is on: evaluation answers DISABLED and the caller's default.
    Disabled,
}

impl FlagState {
    /// flagd's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagState::Enabled => "ENABLED",
            FlagState::Disabled => "DISABLED",
        }
    }
}

/// The one JSON type that all of a flag's variants share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VariantType {
    /// `true` / `false`.
    Boolean,
    /// Any JSON string.
    String,
    /// Any JSON number; integer and float resolution both read it.
    Number,
    /// A JSON object.
    Object,
}

impl VariantType {
    /// The type of one variant value, or `None` for values flagd does not allow (null, arrays).
    pub fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(_) => Some(Self::Boolean),
            Value::String(_) => Some(Self::String),
            Value::Number(_) => Some(Self::Number),
            Value::Object(_) => Some(Self::Object),
            Value::Null | Value::Array(_) => None,
        }
    }

    /// The lower-case name used in messages and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Boolean => "boolean",
            Self::String => "string",
            Self::Number => "number",
            Self::Object => "object",
        }
    }
}

/// One flag in flagd's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlagDefinition {
    /// Served or not.
    pub state: FlagState,
    /// Variant name → value. All values share one [`VariantType`].
    pub variants: Map<String, Value>,
    /// The variant served when targeting is absent or returns null. `None` means "the caller's
    /// code default" (flagd's `null` default variant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_variant: Option<String>,
    /// JsonLogic targeting. `None` and `{}` both mean "no targeting".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting: Option<Value>,
    /// Free-form flag metadata (string, number or boolean values).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
}

impl FlagDefinition {
    /// The variants' shared type, or `None` when there are no variants or they are mixed (both
    /// rejected by validation, but a definition can be built in code).
    pub fn variant_type(&self) -> Option<VariantType> {
        let mut types = self.variants.values().map(VariantType::of);
        let first = types.next()??;
        types.all(|t| t == Some(first)).then_some(first)
    }

    /// True when targeting is present and not the empty object, i.e. when evaluation runs a rule.
    pub fn has_targeting(&self) -> bool {
        match &self.targeting {
            None | Some(Value::Null) => false,
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        }
    }
}

/// Which of flagd's two document schemas to hold a document to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `flags.json`: what providers read; `flags` must be a map.
    Provider,
    /// `flagd.json`: what the flagd daemon reads; `flags` may also be an array of flags with keys.
    Flagd,
}

/// How strictly to treat targeting rules while reading a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetingPolicy {
    /// Invalid targeting is a violation: the document is rejected.
    Reject,
    /// Invalid targeting is kept and reported as a warning, the way flagd loads files: the flag
    /// loads and answers PARSE_ERROR when evaluated.
    Warn,
}

/// A flagd document: flags, shared evaluators and flag-set metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlagDocument {
    /// Flag key → definition, in key order.
    pub flags: std::collections::BTreeMap<String, FlagDefinition>,
    /// `$evaluators`: reusable rules referenced by `{"$ref": name}`.
    pub evaluators: Map<String, Value>,
    /// Flag-set metadata; flag metadata overrides it key by key at evaluation.
    pub metadata: Map<String, Value>,
}

/// A document that was read, with the warnings that did not stop it loading.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The document.
    pub document: FlagDocument,
    /// Problems that flagd tolerates (with [`TargetingPolicy::Warn`]: invalid targeting).
    pub warnings: Vec<Violation>,
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    /// The text is not JSON or YAML.
    #[error("malformed {format}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The document parsed but breaks the schema.
    #[error("invalid flag document: {}", join_violations(violations))]
    Invalid {
        /// Every broken rule, each with its path.
        violations: Vec<Violation>,
    },
}

fn join_violations(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl FlagDocument {
    /// Reads a JSON document.
    ///
    /// # Errors
    /// [`DocumentError::Syntax`] for malformed JSON (including nesting beyond serde_json's
    /// recursion limit), [`DocumentError::Invalid`] for schema violations.
    pub fn from_json_str(
        text: &str,
        schema: Schema,
        policy: TargetingPolicy,
    ) -> Result<Loaded, DocumentError> {
        let value: Value = serde_json::from_str(text).map_err(|e| DocumentError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?;
        Self::from_value(&value, schema, policy)
    }

    /// Reads a YAML document (flagd accepts YAML files with the same structure).
    ///
    /// # Errors
    /// As [`FlagDocument::from_json_str`].
    pub fn from_yaml_str(
        text: &str,
        schema: Schema,
        policy: TargetingPolicy,
    ) -> Result<Loaded, DocumentError> {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| DocumentError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })?;
        Self::from_value(&value, schema, policy)
    }

    /// Reads an already-parsed document.
    ///
    /// # Errors
    /// [`DocumentError::Invalid`] with every violation found (not just the first).
    pub fn from_value(
        value: &Value,
        schema: Schema,
        policy: TargetingPolicy,
    ) -> Result<Loaded, DocumentError> {
        let mut violations = Vec::new();
        let mut warnings = Vec::new();
        let Some(root) = value.as_object() else {
            return Err(DocumentError::Invalid {
                violations: vec![Violation::new(
                    "",
                    format!(
                        "a flag document must be an object, found {}",
                        validate::type_name(value)
                    ),
                )],
            });
        };
        let mut doc = FlagDocument::default();

        if let Some(meta) = root.get("metadata")
            && let Some(m) = validate::metadata(meta, "metadata", &mut violations)
        {
            for key in ["flagSetId", "version"] {
                if let Some(v) = m.get(key).filter(|v| !v.is_string()) {
                    violations.push(Violation::new(
                        validate::join("metadata", key),
                        format!("must be a string, found {}", validate::type_name(v)),
                    ));
                }
            }
            doc.metadata = m.clone();
        }

        if let Some(evals) = root.get("$evaluators") {
            match evals.as_object() {
                Some(map) => {
                    for (name, rule) in map {
                        let path = validate::join("$evaluators", name);
                        if name.is_empty() {
                            violations
                                .push(Violation::new(path, "evaluator names must not be empty"));
                            continue;
                        }
                        let sink = match policy {
                            TargetingPolicy::Reject => &mut violations,
                            TargetingPolicy::Warn => &mut warnings,
                        };
                        validate::validate_targeting(rule, &path, sink);
                        doc.evaluators
                            .insert(name.clone(), validate::kept_rule(rule));
                    }
                }
                None => violations.push(Violation::new(
                    "$evaluators",
                    format!("must be an object, found {}", validate::type_name(evals)),
                )),
            }
        }

        match root.get("flags") {
            None => violations.push(Violation::new("flags", "is required")),
            Some(Value::Object(map)) => {
                for (key, flag) in map {
                    let path = validate::join("flags", key);
                    if key.is_empty() {
                        violations.push(Violation::new(path, "flag keys must not be empty"));
                        continue;
                    }
                    if let Some(def) = read_flag(
                        flag,
                        &path,
                        &doc.evaluators,
                        policy,
                        &mut violations,
                        &mut warnings,
                    ) {
                        doc.flags.insert(key.clone(), def);
                    }
                }
            }
            Some(Value::Array(items)) if schema == Schema::Flagd => {
                for (i, flag) in items.iter().enumerate() {
                    let at = validate::index("flags", i);
                    let key = match flag.get("key") {
                        Some(Value::String(k)) if !k.is_empty() => k.clone(),
                        Some(Value::String(_)) => {
                            violations.push(Violation::new(
                                validate::join(&at, "key"),
                                "must not be empty",
                            ));
                            continue;
                        }
                        Some(other) => {
                            violations.push(Violation::new(
                                validate::join(&at, "key"),
                                format!("must be a string, found {}", validate::type_name(other)),
                            ));
                            continue;
                        }
                        None => {
                            violations.push(Violation::new(
                                at,
                                "a flag in the array form needs a \"key\"",
                            ));
                            continue;
                        }
                    };
                    if doc.flags.contains_key(&key) {
                        violations.push(Violation::new(
                            validate::join(&at, "key"),
                            format!("duplicate flag key \"{key}\""),
                        ));
                        continue;
                    }
                    let path = validate::join("flags", &key);
                    if let Some(def) = read_flag(
                        flag,
                        &path,
                        &doc.evaluators,
                        policy,
                        &mut violations,
                        &mut warnings,
                    ) {
                        doc.flags.insert(key, def);
                    }
                }
            }
            Some(Value::Array(_)) => violations.push(Violation::new(
                "flags",
                "must be an object of flag key → flag (the array form is only for flagd files)",
            )),
            Some(other) => violations.push(Violation::new(
                "flags",
                format!("must be an object, found {}", validate::type_name(other)),
            )),
        }

        if violations.is_empty() {
            Ok(Loaded {
                document: doc,
                warnings,
            })
        } else {
            Err(DocumentError::Invalid { violations })
        }
    }

    /// The document as flagd JSON (map form, `$evaluators` and `metadata` when present).
    pub fn to_value(&self) -> Value {
        let mut root = Map::new();
        let flags: Map<String, Value> = self
            .flags
            .iter()
            .map(|(k, f)| (k.clone(), flag_to_value(f)))
            .collect();
        root.insert("flags".into(), Value::Object(flags));
        if !self.evaluators.is_empty() {
            root.insert("$evaluators".into(), Value::Object(self.evaluators.clone()));
        }
        if !self.metadata.is_empty() {
            root.insert("metadata".into(), Value::Object(self.metadata.clone()));
        }
        Value::Object(root)
    }

    /// Pretty JSON text of [`FlagDocument::to_value`].
    pub fn to_json_string(&self) -> String {
        // Serialising a `Value` cannot fail: its keys are strings and it holds no foreign types.
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// YAML text of [`FlagDocument::to_value`].
    pub fn to_yaml_string(&self) -> String {
        serde_yaml_ng::to_string(&self.to_value()).unwrap_or_default()
    }
}

/// A definition as flagd JSON. `defaultVariant: null` is written out explicitly so that a
/// round trip keeps "use the code default".
pub fn flag_to_value(flag: &FlagDefinition) -> Value {
    let mut m = Map::new();
    m.insert("state".into(), Value::String(flag.state.as_str().into()));
    m.insert("variants".into(), Value::Object(flag.variants.clone()));
    m.insert(
        "defaultVariant".into(),
        flag.default_variant
            .as_ref()
            .map_or(Value::Null, |v| Value::String(v.clone())),
    );
    if let Some(t) = &flag.targeting {
        m.insert("targeting".into(), t.clone());
    }
    if !flag.metadata.is_empty() {
        m.insert("metadata".into(), Value::Object(flag.metadata.clone()));
    }
    Value::Object(m)
}

/// Validates one flag's flagd fields (`state`, `variants`, `defaultVariant`, `targeting`,
/// `metadata`; other keys are ignored) and builds its definition. `$ref`s must name one of
/// `evaluators`. Paths in violations start at `path`.
///
/// # Errors
/// Every violation found. Under [`TargetingPolicy::Warn`], targeting problems are returned as
/// warnings beside the definition instead.
pub fn read_flag_definition(
    value: &Value,
    path: &str,
    evaluators: &Map<String, Value>,
    policy: TargetingPolicy,
) -> Result<(FlagDefinition, Vec<Violation>), Vec<Violation>> {
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    match read_flag(
        value,
        path,
        evaluators,
        policy,
        &mut violations,
        &mut warnings,
    ) {
        Some(def) if violations.is_empty() => Ok((def, warnings)),
        _ => Err(violations),
    }
}

/// Validates one flag at `path` and builds its definition. Targeting problems go to `warnings`
/// under [`TargetingPolicy::Warn`]; everything else is a violation.
pub(crate) fn read_flag(
    flag: &Value,
    path: &str,
    evaluators: &Map<String, Value>,
    policy: TargetingPolicy,
    violations: &mut Vec<Violation>,
    warnings: &mut Vec<Violation>,
) -> Option<FlagDefinition> {
    let before = violations.len();
    let Some(obj) = flag.as_object() else {
        violations.push(Violation::new(
            path,
            format!(
                "a flag must be an object, found {}",
                validate::type_name(flag)
            ),
        ));
        return None;
    };

    let state = match obj.get("state") {
        Some(Value::String(s)) if s == "ENABLED" => FlagState::Enabled,
        Some(Value::String(s)) if s == "DISABLED" => FlagState::Disabled,
        Some(other) => {
            violations.push(Violation::new(
                validate::join(path, "state"),
                format!(
                    "{} is not one of [ENABLED, DISABLED]",
                    validate::show(other)
                ),
            ));
            FlagState::Enabled
        }
        None => {
            violations.push(Violation::new(validate::join(path, "state"), "is required"));
            FlagState::Enabled
        }
    };

    let variants_path = validate::join(path, "variants");
    let variants = match obj.get("variants") {
        Some(Value::Object(v)) if v.is_empty() => {
            violations.push(Violation::new(
                &variants_path,
                "must have at least one variant",
            ));
            Map::new()
        }
        Some(Value::Object(v)) => {
            check_variants(v, &variants_path, violations);
            v.clone()
        }
        Some(other) => {
            violations.push(Violation::new(
                &variants_path,
                format!("must be an object, found {}", validate::type_name(other)),
            ));
            Map::new()
        }
        None => {
            violations.push(Violation::new(&variants_path, "is required"));
            Map::new()
        }
    };

    let default_variant = match obj.get("defaultVariant") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => {
            if !variants.is_empty() && !variants.contains_key(d) {
                violations.push(Violation::new(
                    validate::join(path, "defaultVariant"),
                    format!(
                        "\"{d}\" is not one of the variants [{}]",
                        variants.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            Some(d.clone())
        }
        Some(other) => {
            violations.push(Violation::new(
                validate::join(path, "defaultVariant"),
                format!(
                    "must be a string or null, found {}",
                    validate::type_name(other)
                ),
            ));
            None
        }
    };

    let targeting = match obj.get("targeting") {
        None => None,
        Some(rule) => {
            let tpath = validate::join(path, "targeting");
            let sink = match policy {
                TargetingPolicy::Reject => &mut *violations,
                TargetingPolicy::Warn => &mut *warnings,
            };
            validate::validate_targeting(rule, &tpath, sink);
            validate::check_refs(rule, &tpath, evaluators, sink);
            Some(validate::kept_rule(rule))
        }
    };

    let metadata = match obj.get("metadata") {
        None => Map::new(),
        Some(m) => validate::metadata(m, &validate::join(path, "metadata"), violations)
            .cloned()
            .unwrap_or_default(),
    };

    (violations.len() == before).then_some(FlagDefinition {
        state,
        variants,
        default_variant,
        targeting,
        metadata,
    })
}

/// Every variant value must be of an allowed type, and all of one type.
fn check_variants(variants: &Map<String, Value>, path: &str, violations: &mut Vec<Violation>) {
    let mut first: Option<(&str, VariantType)> = None;
    for (name, value) in variants {
        let vpath = validate::join(path, name);
        if name.is_empty() {
            violations.push(Violation::new(vpath, "variant names must not be empty"));
            continue;
        }
        let Some(t) = VariantType::of(value) else {
            violations.push(Violation::new(
                vpath,
                format!(
                    "variant values must be boolean, string, number or object, found {}",
                    validate::type_name(value)
                ),
            ));
            continue;
        };
        match first {
            None => first = Some((name, t)),
            Some((first_name, ft)) if ft != t => violations.push(Violation::new(
                vpath,
                format!(
                    "is a {} but variant \"{first_name}\" is a {}; all variants of a flag must have one type",
                    t.as_str(),
                    ft.as_str()
                ),
            )),
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, DocumentError> {
        FlagDocument::from_json_str(text, Schema::Flagd, TargetingPolicy::Reject)
    }

    fn violations(text: &str) -> Vec<String> {
        match load(text) {
            Err(DocumentError::Invalid { violations }) => {
                violations.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected violations, got {other:?}"),
        }
    }

    #[test]
    fn default_variant_outside_the_variants_names_path_and_choices() {
        let v = violations(
            r#"{"flags":{"my-flag":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"blue"}}}"#,
        );
        assert_eq!(
            v,
            vec![r#"flags.my-flag.defaultVariant: "blue" is not one of the variants [off, on]"#]
        );
    }

    #[test]
    fn mixed_variant_types_are_rejected_with_both_names() {
        let v = violations(
            r#"{"flags":{"f":{"state":"ENABLED","variants":{"a":true,"b":"x"},"defaultVariant":"a"}}}"#,
        );
        assert_eq!(v.len(), 1);
        assert!(v[0].starts_with("flags.f.variants.b: is a string but variant \"a\" is a boolean"));
    }

    #[test]
    fn array_form_keeps_keys_and_rejects_duplicates() {
        let ok = load(
            r#"{"flags":[{"key":"a","state":"ENABLED","variants":{"x":1},"defaultVariant":"x"}]}"#,
        )
        .map(|l| l.document.flags.keys().cloned().collect::<Vec<_>>());
        assert_eq!(ok, Ok(vec!["a".to_owned()]).map_err(|e: DocumentError| e));
        let dup = violations(
            r#"{"flags":[{"key":"a","state":"ENABLED","variants":{"x":1}},{"key":"a","state":"ENABLED","variants":{"x":1}}]}"#,
        );
        assert_eq!(dup, vec![r#"flags[1].key: duplicate flag key "a""#]);
    }

    #[test]
    fn array_form_is_rejected_under_the_provider_schema() {
        let r = FlagDocument::from_json_str(
            r#"{"flags":[{"key":"a","state":"ENABLED","variants":{"x":1}}]}"#,
            Schema::Provider,
            TargetingPolicy::Reject,
        );
        assert!(matches!(r, Err(DocumentError::Invalid { .. })));
    }

    #[test]
    fn yaml_and_json_read_to_the_same_document() {
        let json = load(
            r#"{"flags":{"f":{"state":"DISABLED","variants":{"a":"x","b":"y"},"defaultVariant":"b","metadata":{"team":"x"}}},"metadata":{"flagSetId":"s"}}"#,
        )
        .map(|l| l.document);
        let yaml = FlagDocument::from_yaml_str(
            "flags:\n  f:\n    state: DISABLED\n    variants: {a: x, b: y}\n    defaultVariant: b\n    metadata: {team: x}\nmetadata:\n  flagSetId: s\n",
            Schema::Flagd,
            TargetingPolicy::Reject,
        )
        .map(|l| l.document);
        assert_eq!(json, yaml);
    }

    #[test]
    fn a_document_round_trips_through_json_and_yaml() {
        let text = r#"{"flags":{"f":{"state":"ENABLED","variants":{"a":{"k":[1,2]},"b":{}},"defaultVariant":null,"targeting":{"if":[true,"a"]}}},"$evaluators":{"e":{"==":[1,1]}}}"#;
        let doc = load(text).map(|l| l.document);
        let again_json = doc
            .as_ref()
            .ok()
            .and_then(|d| load(&d.to_json_string()).ok())
            .map(|l| l.document);
        let again_yaml = doc.as_ref().ok().and_then(|d| {
            FlagDocument::from_yaml_str(&d.to_yaml_string(), Schema::Flagd, TargetingPolicy::Reject)
                .ok()
                .map(|l| l.document)
        });
        assert_eq!(doc.as_ref().ok(), again_json.as_ref());
        assert_eq!(doc.as_ref().ok(), again_yaml.as_ref());
    }

    #[test]
    fn malformed_json_and_yaml_are_syntax_errors() {
        assert!(matches!(
            load("{"),
            Err(DocumentError::Syntax { format: "JSON", .. })
        ));
        assert!(matches!(
            FlagDocument::from_yaml_str("flags: [", Schema::Flagd, TargetingPolicy::Reject),
            Err(DocumentError::Syntax { format: "YAML", .. })
        ));
    }

    #[test]
    fn deeply_nested_json_is_a_syntax_error_not_a_stack_overflow() {
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(load(&text), Err(DocumentError::Syntax { .. })));
    }
}
