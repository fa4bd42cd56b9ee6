//! Targeting-rule validation: flagd's `targeting.json` schema, re-expressed as code.
//!
//! A targeting rule is JSONLogic plus flagd's operators (`fractional`, `sem_ver`, `starts_with`,
//! `ends_with`) and `{"$ref": name}` references to shared `$evaluators`. The checks follow the
//! schema's definitions, each noted on the function that implements it. Where this code departs
//! from a literal reading of the schema it says so; the departures are:
//!
//! * A rule object has exactly one key, its operator. (The schema's `additionalProperties` lets a
//!   `binaryRule` object carry several operators at once; JSONLogic cannot evaluate that.) Only the
//!   top-level `{}`, meaning "no targeting", may be empty.
//! * `{"$ref": "name"}` stands for a rule wherever a rule may appear, not only in argument
//!   positions: references are replaced by the evaluator they name before a rule is evaluated,
//!   and the evaluator is validated on its own.
//! * Elements of a literal array in argument position are validated as arguments, because
//!   JSONLogic evaluates them (the schema's `primitive` accepts any array unchecked).
//! * `{"var": ["$flagd.x", default]}` gets the same `$flagd` check as `{"var": "$flagd.x"}`.
//! * Literal `fractional` weights may not add up to more than 2,147,483,647, a limit the schema
//!   states in its description rather than as a constraint.
//!
//! Nesting is counted the way the rule compiler counts it (`rules::compile`): every JSON object
//! and array is one level, the rule itself is level 0, and a value deeper than
//! [`MAX_RULE_DEPTH`] is one violation, after which the validator stops descending. Paths are
//! kept as a borrowed chain and only rendered when a violation is reported, so validation stays
//! linear in the size of the rule.

use serde_json::{Map, Number, Value};

use super::{Violation, index, join, type_name};
use crate::MAX_RULE_DEPTH;

/// Checks `rule` (a flag's `targeting` or an `$evaluators` entry) against flagd's targeting
/// schema, pushing one [`Violation`] per broken rule, located under `path`.
///
/// Never panics and never recurses deeper than [`crate::MAX_RULE_DEPTH`]; a deeper rule is one
/// violation.
pub fn validate_targeting(rule: &serde_json::Value, path: &str, out: &mut Vec<Violation>) {
    let at = At::Root(path);
    let mut checker = Checker {
        out,
        reported_depth: false,
    };
    match rule {
        // Schema: `anyOf: [{} (empty targeting), anyRule]`.
        Value::Object(map) if map.is_empty() => {}
        Value::Object(map) => checker.rule(map, &at, 0),
        other => checker.report(
            &at,
            format!(
                "targeting must be an object: a rule such as {{\"if\": [...]}}, or {{}} for no \
                 targeting; found {}",
                describe(other)
            ),
        ),
    }
}

/// Where a value sits, as a chain of borrowed segments; rendered only for a violation.
#[derive(Debug, Clone, Copy)]
enum At<'a> {
    Root(&'a str),
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl At<'_> {
    fn render(&self) -> String {
        let mut chain = Vec::new();
        let mut cur = self;
        let root = loop {
            match cur {
                At::Root(base) => break *base,
                At::Key(parent, _) | At::Index(parent, _) => {
                    chain.push(cur);
                    cur = parent;
                }
            }
        };
        let mut path = root.to_owned();
        for seg in chain.iter().rev() {
            path = match seg {
                At::Key(_, key) => join(&path, key),
                At::Index(_, i) => index(&path, *i),
                At::Root(_) => path,
            };
        }
        path
    }
}

/// How many arguments an operator takes, when it takes an array of plain arguments.
#[derive(Debug, Clone, Copy)]
enum Arity {
    Exactly(usize),
    Between(usize, usize),
    AtLeast(usize),
}

impl Arity {
    fn allows(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Between(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(lo) => n >= lo,
        }
    }

    fn phrase(self) -> String {
        let plural = |k: usize| if k == 1 { "argument" } else { "arguments" };
        match self {
            Arity::Exactly(k) => format!("exactly {k} {}", plural(k)),
            Arity::Between(lo, hi) => format!("{lo} to {hi} arguments"),
            Arity::AtLeast(lo) => format!("at least {lo} {}", plural(lo)),
        }
    }
}

/// The schema's operators whose arguments are an array of `args`, with their arity:
/// `binaryOrTernaryRule` (2–3), `binaryRule` (2; `if` is variadic), `reduceRule` (3),
/// `associativeRule` (≥2) and `variadicRule` (≥1).
const PLAIN_OPERATORS: &[(&str, Arity)] = &[
    ("if", Arity::AtLeast(1)),
    ("==", Arity::Exactly(2)),
    ("===", Arity::Exactly(2)),
    ("!=", Arity::Exactly(2)),
    ("!==", Arity::Exactly(2)),
    (">", Arity::Exactly(2)),
    (">=", Arity::Exactly(2)),
    ("<", Arity::Between(2, 3)),
    ("<=", Arity::Between(2, 3)),
    ("substr", Arity::Between(2, 3)),
    ("%", Arity::Exactly(2)),
    ("/", Arity::Exactly(2)),
    ("map", Arity::Exactly(2)),
    ("filter", Arity::Exactly(2)),
    ("all", Arity::Exactly(2)),
    ("none", Arity::Exactly(2)),
    ("some", Arity::Exactly(2)),
    ("in", Arity::Exactly(2)),
    ("reduce", Arity::Exactly(3)),
    ("*", Arity::AtLeast(2)),
    ("or", Arity::AtLeast(1)),
    ("and", Arity::AtLeast(1)),
    ("+", Arity::AtLeast(1)),
    ("-", Arity::AtLeast(1)),
    ("max", Arity::AtLeast(1)),
    ("min", Arity::AtLeast(1)),
    ("merge", Arity::AtLeast(1)),
    ("cat", Arity::AtLeast(1)),
];

/// Operators with their own argument shapes, checked by dedicated functions.
const SPECIAL_OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "!",
    "!!",
    "starts_with",
    "ends_with",
    "sem_ver",
    "fractional",
];

/// `ruleSemVer`'s range operators.
const SEM_VER_OPERATORS: &[&str] = &["=", "!=", ">", ">=", "<", "<=", "^", "~"];

/// flagd's largest total of `fractional` weights.
const MAX_TOTAL_WEIGHT: u64 = 2_147_483_647;

struct Checker<'o> {
    out: &'o mut Vec<Violation>,
    /// The depth violation is reported once per rule.
    reported_depth: bool,
}

impl Checker<'_> {
    fn report(&mut self, at: &At<'_>, message: impl Into<String>) {
        self.out.push(Violation::new(at.render(), message));
    }

    /// True (after reporting, once) when a value at `depth` is nested too deeply to descend into.
    fn too_deep(&mut self, at: &At<'_>, depth: usize) -> bool {
        if depth <= MAX_RULE_DEPTH {
            return false;
        }
        if !self.reported_depth {
            self.reported_depth = true;
            self.report(at, format!("rule nesting exceeds {MAX_RULE_DEPTH} levels"));
        }
        true
    }

    /// Schema `args`: a `reference`, an `anyRule` or a `primitive` (null, boolean, number,
    /// string, array). Array elements are checked as arguments too (see the module docs).
    fn arg(&mut self, value: &Value, at: &At<'_>, depth: usize) {
        if self.too_deep(at, depth) {
            return;
        }
        match value {
            Value::Object(map) => self.rule(map, at, depth),
            Value::Array(items) => self.args(items, at, depth + 1),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
        }
    }

    /// Every element of an array of `args`, the elements being at `depth`.
    fn args(&mut self, items: &[Value], at: &At<'_>, depth: usize) {
        for (i, item) in items.iter().enumerate() {
            self.arg(item, &At::Index(at, i), depth);
        }
    }

    /// A value in a position where the schema wants a rule object (`anyRule`, or a `$ref`).
    fn rule_value(&mut self, value: &Value, at: &At<'_>, depth: usize, expected: &str) {
        if self.too_deep(at, depth) {
            return;
        }
        match value {
            Value::Object(map) => self.rule(map, at, depth),
            other => self.report(
                at,
                format!("expected {expected}, found {}", describe(other)),
            ),
        }
    }

    /// `anyRule` or `reference`: an object with exactly one key, a known operator or `$ref`.
    /// The object is at `depth`, its operator's arguments one level deeper.
    fn rule(&mut self, map: &Map<String, Value>, at: &At<'_>, depth: usize) {
        let mut keys = map.iter();
        let (op, payload) = match (keys.next(), keys.next()) {
            (Some(entry), None) => entry,
            (None, _) => {
                self.report(
                    at,
                    "an empty object is not a rule: a rule has exactly one operator key, such as \
                     {\"var\": \"email\"}",
                );
                return;
            }
            (Some(_), Some(_)) => {
                self.report(at, several_keys(map));
                return;
            }
        };
        let op_at = At::Key(at, op);
        let depth = depth + 1;
        if op == "$ref" {
            // Replaced by the evaluator at this same level, so the name adds no nesting.
            self.reference(payload, &op_at);
            return;
        }
        if self.too_deep(&op_at, depth) {
            return;
        }
        if let Some((_, arity)) = PLAIN_OPERATORS.iter().find(|(name, _)| *name == op) {
            self.plain(op, *arity, payload, &op_at, depth);
            return;
        }
        match op.as_str() {
            "var" => self.var(payload, &op_at),
            "missing" => self.missing(payload, &op_at),
            "missing_some" => self.missing_some(payload, &op_at),
            "!" | "!!" => self.unary(payload, &op_at, depth),
            "starts_with" | "ends_with" => self.string_compare(op, payload, &op_at, depth),
            "sem_ver" => self.sem_ver(payload, &op_at, depth),
            "fractional" => self.fractional(payload, &op_at, depth),
            _ => self.report(at, unknown_operator(op)),
        }
    }

    /// Checks an operator's argument array against `arity`; returns its elements if it is one.
    fn arg_array<'v>(
        &mut self,
        op: &str,
        arity: Arity,
        payload: &'v Value,
        at: &At<'_>,
    ) -> Option<&'v [Value]> {
        match payload {
            Value::Array(items) => {
                if !arity.allows(items.len()) {
                    self.report(
                        at,
                        format!("\"{op}\" takes {}, found {}", arity.phrase(), items.len()),
                    );
                }
                Some(items)
            }
            other => {
                self.report(
                    at,
                    format!(
                        "\"{op}\" takes an array of {}, found {}",
                        arity.phrase(),
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    /// `binaryOp`, `binaryOrTernaryOp`, `associativeOp`, `variadicOp` and `reduce`: an array of
    /// `args` of the operator's arity.
    fn plain(&mut self, op: &str, arity: Arity, payload: &Value, at: &At<'_>, depth: usize) {
        if let Some(items) = self.arg_array(op, arity, payload, at) {
            self.args(items, at, depth + 1);
        }
    }

    /// `reference`: `{"$ref": "<evaluator name>"}`.
    fn reference(&mut self, payload: &Value, at: &At<'_>) {
        if !payload.is_string() {
            self.report(
                at,
                format!(
                    "\"$ref\" names an evaluator and must be a string, found {}",
                    describe(payload)
                ),
            );
        }
    }

    /// `varRule`. The schema accepts any `var` argument except a string `$flagd.<x>` naming
    /// something flagd does not inject; only `timestamp` and `flagKey` exist.
    fn var(&mut self, payload: &Value, at: &At<'_>) {
        let (name, name_at) = match payload {
            Value::String(s) => (s, *at),
            Value::Array(items) => match items.first() {
                Some(Value::String(s)) => (s, At::Index(at, 0)),
                _ => return,
            },
            _ => return,
        };
        if let Some(prop) = name.strip_prefix("$flagd.")
            && prop != "timestamp"
            && prop != "flagKey"
        {
            self.report(
                &name_at,
                format!(
                    "\"{}\" is not a property flagd provides; only \"$flagd.timestamp\" and \
                     \"$flagd.flagKey\" exist",
                    clip(name)
                ),
            );
        }
    }

    /// `missingRule`: an array of key strings.
    fn missing(&mut self, payload: &Value, at: &At<'_>) {
        match payload {
            Value::Array(items) => self.key_strings(items, at),
            other => self.report(
                at,
                format!(
                    "\"missing\" takes an array of keys, found {}",
                    describe(other)
                ),
            ),
        }
    }

    /// `missingSomeRule`: `[minimum (number), [key strings]]`.
    fn missing_some(&mut self, payload: &Value, at: &At<'_>) {
        let Value::Array(items) = payload else {
            self.report(
                at,
                format!(
                    "\"missing_some\" takes [minimum, [keys...]], found {}",
                    describe(payload)
                ),
            );
            return;
        };
        if items.len() != 2 {
            self.report(
                at,
                format!(
                    "\"missing_some\" takes exactly 2 arguments, [minimum, [keys...]], found {}",
                    items.len()
                ),
            );
        }
        if let Some(min) = items.first()
            && !min.is_number()
        {
            self.report(
                &At::Index(at, 0),
                format!(
                    "expected the minimum number of keys, found {}",
                    describe(min)
                ),
            );
        }
        if let Some(keys) = items.get(1) {
            let keys_at = At::Index(at, 1);
            match keys {
                Value::Array(keys) => self.key_strings(keys, &keys_at),
                other => self.report(
                    &keys_at,
                    format!("expected an array of keys, found {}", describe(other)),
                ),
            }
        }
    }

    fn key_strings(&mut self, items: &[Value], at: &At<'_>) {
        for (i, item) in items.iter().enumerate() {
            if !item.is_string() {
                self.report(
                    &At::Index(at, i),
                    format!("expected a key string, found {}", describe(item)),
                );
            }
        }
    }

    /// `unaryOp`: a single argument, bare or as a one-element array. (Any array is a
    /// `primitive`, so longer arrays pass the schema too; their elements are still checked.)
    fn unary(&mut self, payload: &Value, at: &At<'_>, depth: usize) {
        match payload {
            Value::Array(items) => self.args(items, at, depth + 1),
            other => self.arg(other, at, depth),
        }
    }

    /// `stringCompareRule`: exactly two `stringCompareArg`s, each a string or a rule.
    fn string_compare(&mut self, op: &str, payload: &Value, at: &At<'_>, depth: usize) {
        let Some(items) = self.arg_array(op, Arity::Exactly(2), payload, at) else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let item_at = At::Index(at, i);
            if !item.is_string() {
                self.rule_value(item, &item_at, depth + 1, "a string or a rule");
            }
        }
    }

    /// `ruleSemVer`: `[version, range operator, version]`, each version a `semVerString` or a
    /// `var` rule.
    fn sem_ver(&mut self, payload: &Value, at: &At<'_>, depth: usize) {
        let Some(items) = self.arg_array("sem_ver", Arity::Exactly(3), payload, at) else {
            return;
        };
        for (i, item) in items.iter().enumerate().take(3) {
            let item_at = At::Index(at, i);
            if i == 1 {
                self.sem_ver_operator(item, &item_at);
            } else {
                self.sem_ver_operand(item, &item_at, depth + 1);
            }
        }
    }

    fn sem_ver_operator(&mut self, item: &Value, at: &At<'_>) {
        let list = "\"=\", \"!=\", \">\", \">=\", \"<\", \"<=\", \"^\", \"~\"";
        match item {
            Value::String(s) if SEM_VER_OPERATORS.contains(&s.as_str()) => {}
            Value::String(s) => self.report(
                at,
                format!(
                    "\"{}\" is not a sem_ver range operator; expected one of {list}",
                    clip(s)
                ),
            ),
            other => self.report(
                at,
                format!(
                    "expected a sem_ver range operator ({list}), found {}",
                    describe(other)
                ),
            ),
        }
    }

    fn sem_ver_operand(&mut self, item: &Value, at: &At<'_>, depth: usize) {
        match item {
            Value::String(s) => {
                if !is_sem_ver(s) {
                    self.report(
                        at,
                        format!(
                            "\"{}\" is not a semantic version: expected MAJOR.MINOR.PATCH with \
                             optional -prerelease and +build, such as \"1.2.3\" or \
                             \"1.2.3-beta.1+build.5\"",
                            clip(s)
                        ),
                    );
                }
            }
            Value::Object(map)
                if map.len() == 1 && (map.contains_key("var") || map.contains_key("$ref")) =>
            {
                self.rule_value(item, at, depth, "a var rule");
            }
            other => self.report(
                at,
                format!(
                    "expected a semantic version string or a var rule, found {}",
                    describe(other)
                ),
            ),
        }
    }

    /// `fractionalRule`: either `fractionalOp` — a bucketing rule followed by buckets — or
    /// `fractionalShorthandOp` — buckets only. Which one is decided by the first element: a
    /// bucket is an array, a bucketing expression is a rule.
    fn fractional(&mut self, payload: &Value, at: &At<'_>, depth: usize) {
        let Value::Array(items) = payload else {
            self.report(
                at,
                format!(
                    "\"fractional\" takes an array: an optional bucketing rule, then buckets \
                     [variant, weight]; found {}",
                    describe(payload)
                ),
            );
            return;
        };
        let Some(first) = items.first() else {
            self.report(
                at,
                "\"fractional\" needs at least one bucket [variant, weight]",
            );
            return;
        };
        let depth = depth + 1;
        let buckets_from = match first {
            Value::Array(_) => 0,
            Value::Object(_) => {
                self.rule_value(first, &At::Index(at, 0), depth, "a bucketing rule");
                1
            }
            other => {
                self.report(
                    &At::Index(at, 0),
                    format!(
                        "expected a bucketing rule such as {{\"var\": \"email\"}} or a bucket \
                         [variant, weight], found {}",
                        describe(other)
                    ),
                );
                1
            }
        };
        let mut total: u64 = 0;
        for (i, bucket) in items.iter().enumerate().skip(buckets_from) {
            let weight = self.bucket(bucket, &At::Index(at, i), depth);
            total = total.saturating_add(weight);
        }
        if total > MAX_TOTAL_WEIGHT {
            self.report(
                at,
                format!(
                    "the fractional weights add up to {total}, more than the \
                     {MAX_TOTAL_WEIGHT} flagd allows"
                ),
            );
        }
    }

    /// `fractionalWeightArg`: `[variant]` or `[variant, weight]`, the variant any argument and
    /// the weight a non-negative integer or a rule. Returns the literal weight (1 when omitted,
    /// 0 when computed or invalid) for the total.
    fn bucket(&mut self, bucket: &Value, at: &At<'_>, depth: usize) -> u64 {
        if self.too_deep(at, depth) {
            return 0;
        }
        let Value::Array(items) = bucket else {
            self.report(
                at,
                format!(
                    "expected a bucket [variant, weight], found {}",
                    describe(bucket)
                ),
            );
            return 0;
        };
        let depth = depth + 1;
        match items.as_slice() {
            [] => {
                self.report(
                    at,
                    "a bucket is [variant] or [variant, weight], found an empty array",
                );
                0
            }
            [variant] => {
                self.arg(variant, &At::Index(at, 0), depth);
                1
            }
            [variant, weight, rest @ ..] => {
                if !rest.is_empty() {
                    self.report(
                        at,
                        format!(
                            "a bucket is [variant] or [variant, weight], found {} items",
                            items.len()
                        ),
                    );
                }
                self.arg(variant, &At::Index(at, 0), depth);
                self.weight(weight, &At::Index(at, 1), depth)
            }
        }
    }

    fn weight(&mut self, weight: &Value, at: &At<'_>, depth: usize) -> u64 {
        match weight {
            Value::Number(n) => match whole_weight(n) {
                Some(w) => w,
                None => {
                    self.report(
                        at,
                        format!("a fractional weight must be a non-negative integer, found {n}"),
                    );
                    0
                }
            },
            other => {
                self.rule_value(other, at, depth, "a non-negative integer weight or a rule");
                0
            }
        }
    }
}

/// A JSON number that is a non-negative integer (JSON Schema's `integer`, `minimum: 0`, so
/// `25.0` counts), saturated into `u64`.
fn whole_weight(n: &Number) -> Option<u64> {
    if let Some(w) = n.as_u64() {
        return Some(w);
    }
    if n.is_i64() {
        return None; // negative
    }
    let f = n.as_f64()?;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 {
        // `as` saturates: anything this large exceeds the total-weight limit anyway.
        Some(f as u64)
    } else {
        None
    }
}

/// flagd's `semVerString` pattern:
/// `MAJOR.MINOR.PATCH(-PRERELEASE)?(+BUILD)?`, numeric identifiers without leading zeros.
fn is_sem_ver(s: &str) -> bool {
    let (rest, build) = match s.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (s, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let mut parts = core.split('.');
    let core_ok =
        (0..3).all(|_| parts.next().is_some_and(is_numeric_identifier)) && parts.next().is_none();
    core_ok
        && pre.is_none_or(|p| p.split('.').all(is_prerelease_identifier))
        && build.is_none_or(|b| b.split('.').all(is_build_identifier))
}

/// `0|[1-9]\d*`
fn is_numeric_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
}

/// `0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*`
fn is_prerelease_identifier(s: &str) -> bool {
    is_build_identifier(s) && (s.bytes().any(|b| !b.is_ascii_digit()) || is_numeric_identifier(s))
}

/// `[0-9a-zA-Z-]+`
fn is_build_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn several_keys(map: &Map<String, Value>) -> String {
    const SHOWN: usize = 4;
    let mut names: Vec<String> = map
        .keys()
        .take(SHOWN)
        .map(|k| format!("\"{}\"", clip(k)))
        .collect();
    if map.len() > SHOWN {
        names.push("…".to_owned());
    }
    format!(
        "a rule has exactly one operator key, found {}: {}",
        map.len(),
        names.join(", ")
    )
}

fn unknown_operator(op: &str) -> String {
    let shown = clip(op);
    if matches!(op, "?:" | "log" | "method" | "preserve") {
        return format!("operator \"{shown}\" is not supported in flagd targeting");
    }
    let wanted = normalize(op);
    let suggestion = PLAIN_OPERATORS
        .iter()
        .map(|(name, _)| *name)
        .chain(SPECIAL_OPERATORS.iter().copied())
        .find(|name| name.chars().any(char::is_alphabetic) && normalize(name) == wanted);
    match suggestion {
        Some(name) => format!("unknown operator \"{shown}\"; did you mean \"{name}\"?"),
        None => format!(
            "unknown operator \"{shown}\"; flagd targeting allows JSONLogic operators such as \
             \"if\", \"==\", \"in\", \"and\", \"var\", and flagd's \"fractional\", \"sem_ver\", \
             \"starts_with\", \"ends_with\""
        ),
    }
}

/// Lower case without `_`, `-` and spaces, so `startsWith` and `STARTS-WITH` find `starts_with`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// At most this many characters of a user string are quoted in a message.
const CLIP: usize = 40;

fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// `type preview`, e.g. `number 0` or `string "25"`. The preview is bounded in length and
/// nesting, so describing a huge or deeply nested value costs next to nothing.
fn describe(value: &Value) -> String {
    let mut preview = String::new();
    preview_into(&mut preview, value, 0);
    format!("{} {preview}", type_name(value))
}

fn preview_into(out: &mut String, value: &Value, nesting: usize) {
    const BUDGET: usize = 60;
    const NESTING: usize = 2;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
        Value::String(s) => {
            let clipped = s
                .char_indices()
                .nth(CLIP)
                .map_or(s.as_str(), |(cut, _)| s.get(..cut).unwrap_or_default());
            out.push_str(&Value::String(clipped.to_owned()).to_string());
            if clipped.len() < s.len() {
                out.push('…');
            }
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Array(_) if nesting >= NESTING => out.push_str("[…]"),
        Value::Object(_) if nesting >= NESTING => out.push_str("{…}"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if out.len() >= BUDGET {
                    out.push('…');
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                preview_into(out, item, nesting + 1);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if out.len() >= BUDGET {
                    out.push('…');
                    break;
                }
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(clip(key)).to_string());
                out.push_str(": ");
                preview_into(out, item, nesting + 1);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use serde_json::{Map, Value, json};

    use super::validate_targeting;
    use crate::MAX_RULE_DEPTH;
    use crate::validate::Violation;

    fn fixtures() -> PathBuf {
        vexil_testkit::testbed::shared_dir().join("reference/flagd-schemas/json/test/targeting")
    }

    fn testbed() -> PathBuf {
        vexil_testkit::testbed::testbed_dir()
    }

    fn check(rule: &Value) -> Vec<Violation> {
        let mut out = Vec::new();
        validate_targeting(rule, "targeting", &mut out);
        out
    }

    /// The single violation `rule` produces.
    fn only(rule: &Value) -> Violation {
        let found = check(rule);
        assert_eq!(
            found.len(),
            1,
            "expected one violation for {rule}, got {found:#?}"
        );
        found.into_iter().next().expect("one violation")
    }

    fn read_json(path: &Path) -> Value {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
    }

    fn json_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {}", dir.display());
        files
    }

    fn name_of(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    // ---- flagd's schema fixtures ----------------------------------------------------------

    #[test]
    fn every_positive_schema_fixture_is_accepted() {
        for file in json_files(&fixtures().join("positive")) {
            let found = check(&read_json(&file));
            assert!(found.is_empty(), "{}: {found:#?}", file.display());
        }
    }

    #[test]
    fn every_negative_schema_fixture_is_rejected_at_a_path_inside_the_rule() {
        for file in json_files(&fixtures().join("negative")) {
            let found = check(&read_json(&file));
            assert!(!found.is_empty(), "{} was accepted", file.display());
            for v in &found {
                assert!(
                    v.path.starts_with("targeting") && !v.message.is_empty(),
                    "{}: {v:?}",
                    file.display()
                );
            }
        }
    }

    #[test]
    fn negative_fixtures_are_rejected_for_the_reason_they_exist() {
        let expected = [
            (
                "fractional-decimal-weighting.json",
                "targeting.fractional[1][1]",
                "25.5",
            ),
            (
                "fractional-invalid-bucketing.json",
                "targeting.fractional[0]",
                "\"invalid\"",
            ),
            (
                "fractional-invalid-weighting.json",
                "targeting.fractional[1][1]",
                "\"25\"",
            ),
            (
                "fractional-negative-weighting.json",
                "targeting.fractional[1][1]",
                "-25",
            ),
            (
                "invalid-ends-with-param.json",
                "targeting.if[0].ends_with[1]",
                "number 0",
            ),
            (
                "invalid-starts-with-param.json",
                "targeting.if[0].starts_with[1]",
                "number 0",
            ),
            (
                "invalid-flagd-props.json",
                "targeting.if[0].==[0].var",
                "$flagd.invalidProp",
            ),
            (
                "sem-ver-invalid-range-specifier.json",
                "targeting.if[0].sem_ver[1]",
                "\"*\"",
            ),
            (
                "sem-ver-invalid-ver-expression.json",
                "targeting.if[0].sem_ver[2]",
                "2.0.0.0",
            ),
        ];
        let dir = fixtures().join("negative");
        assert_eq!(
            json_files(&dir).len(),
            expected.len(),
            "a negative fixture is not listed"
        );
        for (file, path, fragment) in expected {
            let found = check(&read_json(&dir.join(file)));
            assert!(
                found.len() == 1
                    && found
                        .iter()
                        .all(|v| v.path == path && v.message.contains(fragment)),
                "{file}: {found:#?}"
            );
        }
    }

    // ---- flagd's conformance testbed ------------------------------------------------------

    /// Testbed rules that break the schema on purpose, to test run-time behaviour, with a
    /// fragment of the violation each must produce. Keyed by file name, then flag key.
    fn deliberately_broken() -> BTreeMap<(String, String), &'static str> {
        let edge = "edge-case-flags.json";
        let ops = "custom-ops.json";
        let kit = "testkit-flags.json";
        let mut m = BTreeMap::new();
        // PARSE_ERROR at run time.
        m.insert(
            (edge, "error-targeting-flag"),
            "unknown operator \"invalid\"",
        );
        // "Custom operator errors return null and fall back to the default variant".
        for file in [edge, kit] {
            m.insert(
                (file, "semver-invalid-operator-flag"),
                "\"===\" is not a sem_ver range operator",
            );
            m.insert(
                (file, "semver-wrong-args-flag"),
                "\"sem_ver\" takes exactly 3 arguments, found 2",
            );
            m.insert(
                (file, "starts-with-wrong-args-flag"),
                "\"starts_with\" takes exactly 2 arguments, found 1",
            );
            m.insert(
                (file, "ends-with-wrong-args-flag"),
                "\"ends_with\" takes exactly 2 arguments, found 1",
            );
            m.insert(
                (file, "fractional-negative-weight-flag"),
                "non-negative integer, found -50",
            );
        }
        // Null bucketing value, expected to fall back to the default variant.
        m.insert((edge, "targeting-null-flag"), "expected a bucketing rule");
        // Branches that must never match at run time ("fail").
        m.insert(
            (ops, "starts-ends-flag"),
            "expected a string or a rule, found number 3",
        );
        m.insert(
            (ops, "equal-greater-lesser-version-flag"),
            "\"2.0.0.0\" is not a semantic version",
        );
        // Versions flagd's evaluator tolerates but the schema's semVerString pattern does not.
        for file in [ops, kit] {
            m.insert(
                (file, "semver-v-prefix-flag"),
                "\"v1.0.0\" is not a semantic version",
            );
            m.insert(
                (file, "semver-partial-version-flag"),
                "\"1\" is not a semantic version",
            );
            m.insert(
                (file, "semver-numeric-context-flag"),
                "\"1.1\" is not a semantic version",
            );
        }
        m.into_iter()
            .map(|((file, key), fragment)| ((file.to_owned(), key.to_owned()), fragment))
            .collect()
    }

    #[test]
    fn testbed_rules_are_accepted_except_the_deliberately_broken_ones() {
        let root = testbed();
        let mut files = json_files(&root.join("flags"));
        files.push(root.join("evaluator/flags/testkit-flags.json"));
        let mut expected = deliberately_broken();
        let mut rules = 0;
        for file in &files {
            let file_name = name_of(file);
            let doc = read_json(file);
            if let Some(evaluators) = doc.get("$evaluators").and_then(Value::as_object) {
                for (name, rule) in evaluators {
                    let mut found = Vec::new();
                    validate_targeting(rule, &format!("$evaluators.{name}"), &mut found);
                    assert!(
                        found.is_empty(),
                        "{file_name} $evaluators.{name}: {found:#?}"
                    );
                    rules += 1;
                }
            }
            let flags = doc
                .get("flags")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (key, flag) in &flags {
                let Some(rule) = flag.get("targeting") else {
                    continue;
                };
                rules += 1;
                let path = format!("flags.{key}.targeting");
                let mut found = Vec::new();
                validate_targeting(rule, &path, &mut found);
                match expected.remove(&(file_name.clone(), key.clone())) {
                    None => assert!(found.is_empty(), "{file_name} {key}: {found:#?}"),
                    Some(fragment) => assert!(
                        found.len() == 1
                            && found
                                .iter()
                                .all(|v| v.path.starts_with(&path) && v.message.contains(fragment)),
                        "{file_name} {key}: expected one violation containing {fragment:?}, got {found:#?}"
                    ),
                }
            }
        }
        assert!(rules > 50, "only {rules} testbed rules found");
        assert!(
            expected.is_empty(),
            "listed as broken but not found: {expected:?}"
        );
    }

    // ---- operators and rule objects -------------------------------------------------------

    #[test]
    fn empty_targeting_is_valid() {
        assert!(check(&json!({})).is_empty());
    }

    #[test]
    fn targeting_that_is_not_an_object_is_rejected() {
        for rule in [json!("on"), json!(null), json!([{"var": "x"}]), json!(true)] {
            let v = only(&rule);
            assert_eq!(v.path, "targeting");
            assert!(
                v.message.starts_with("targeting must be an object"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn unknown_operator_names_the_operator_and_path() {
        let mut out = Vec::new();
        let rule = json!({"if": [{"not-a-real-rule": [1, 2]}, "a", "b"]});
        validate_targeting(&rule, "flags.f.targeting", &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        let v = out.first().expect("one violation");
        assert_eq!(v.path, "flags.f.targeting.if[0]");
        assert!(
            v.message
                .starts_with("unknown operator \"not-a-real-rule\""),
            "{v:?}"
        );
    }

    #[test]
    fn unknown_operator_suggests_the_flagd_spelling() {
        let v = only(&json!({"startsWith": [{"var": "id"}, "abc"]}));
        assert!(v.message.contains("did you mean \"starts_with\"?"), "{v:?}");
        let v = only(&json!({"semver": [{"var": "v"}, "=", "1.0.0"]}));
        assert!(v.message.contains("did you mean \"sem_ver\"?"), "{v:?}");
        let v = only(&json!({"IF": [true]}));
        assert!(v.message.contains("did you mean \"if\"?"), "{v:?}");
    }

    #[test]
    fn jsonlogic_operators_outside_flagds_schema_are_rejected() {
        for op in ["?:", "log", "method", "preserve"] {
            let v = only(&json!({ op: [1] }));
            assert!(
                v.message.contains("not supported in flagd targeting"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_nested_empty_object_is_not_a_rule() {
        let v = only(&json!({"if": [{}, "a", "b"]}));
        assert_eq!(v.path, "targeting.if[0]");
        assert!(v.message.contains("empty object is not a rule"), "{v:?}");
    }

    #[test]
    fn a_rule_with_two_operators_is_rejected() {
        let v = only(&json!({"==": [1, 1], "in": ["a", "abc"]}));
        assert_eq!(v.path, "targeting");
        assert!(
            v.message.contains("exactly one operator key, found 2"),
            "{v:?}"
        );
        assert!(
            v.message.contains("\"==\"") && v.message.contains("\"in\""),
            "{v:?}"
        );
    }

    #[test]
    fn starts_with_number_argument_is_rejected_at_its_index() {
        let rule = json!({"if": [{"starts_with": [{"var": "id"}, 0]}, "yes", "no"]});
        let mut out = Vec::new();
        validate_targeting(&rule, "flags.f.targeting", &mut out);
        assert_eq!(
            out,
            vec![Violation::new(
                "flags.f.targeting.if[0].starts_with[1]",
                "expected a string or a rule, found number 0"
            )]
        );
    }

    #[test]
    fn string_comparisons_take_strings_or_rules_on_both_sides() {
        assert!(check(&json!({"ends_with": ["abc", {"cat": ["b", "c"]}]})).is_empty());
        let v = only(&json!({"ends_with": [true, "c"]}));
        assert_eq!(v.path, "targeting.ends_with[0]");
    }

    #[test]
    fn operators_check_their_argument_counts() {
        let v = only(&json!({"==": [1, 2, 3]}));
        assert_eq!(v.path, "targeting.==");
        assert_eq!(v.message, "\"==\" takes exactly 2 arguments, found 3");
        let v = only(&json!({"<": [1, 2, 3, 4]}));
        assert_eq!(v.message, "\"<\" takes 2 to 3 arguments, found 4");
        let v = only(&json!({"*": [2]}));
        assert_eq!(v.message, "\"*\" takes at least 2 arguments, found 1");
        let v = only(&json!({"if": []}));
        assert_eq!(v.message, "\"if\" takes at least 1 argument, found 0");
        let v = only(&json!({"reduce": [[1], {"+": [1, 2]}]}));
        assert_eq!(v.message, "\"reduce\" takes exactly 3 arguments, found 2");
        let v = only(&json!({"in": "abc"}));
        assert_eq!(
            v.message,
            "\"in\" takes an array of exactly 2 arguments, found string \"abc\""
        );
        assert!(check(&json!({"<=": [1, {"var": "x"}, 3]})).is_empty());
        assert!(check(&json!({"substr": ["abc", 1]})).is_empty());
    }

    #[test]
    fn unary_operators_take_a_bare_or_wrapped_argument() {
        assert!(check(&json!({"!": true})).is_empty());
        assert!(check(&json!({"!": [true]})).is_empty());
        assert!(check(&json!({"!!": {"var": "x"}})).is_empty());
        assert!(check(&json!({"!!": [{"var": "x"}]})).is_empty());
        let v = only(&json!({"!": {"nope": 1}}));
        assert_eq!(v.path, "targeting.!");
        let v = only(&json!({"!": [{"nope": 1}]}));
        assert_eq!(v.path, "targeting.![0]");
    }

    #[test]
    fn rules_inside_literal_arrays_are_checked() {
        assert!(check(&json!({"in": [{"var": "e"}, ["a", {"var": "b"}, [1, null]]]})).is_empty());
        let v = only(&json!({"in": [{"var": "e"}, ["a", {"bogus": 1}]]}));
        assert_eq!(v.path, "targeting.in[1][1]");
        let v = only(&json!({"==": [{"a": 1, "b": 2}, 1]}));
        assert_eq!(v.path, "targeting.==[0]");
    }

    #[test]
    fn sibling_violations_are_all_reported() {
        let rule = json!({"and": [{"bad1": 1}, {"==": [1]}, {"starts_with": [1, 2]}]});
        let paths: Vec<String> = check(&rule).into_iter().map(|v| v.path).collect();
        assert_eq!(
            paths,
            [
                "targeting.and[0]",
                "targeting.and[1].==",
                "targeting.and[2].starts_with[0]",
                "targeting.and[2].starts_with[1]"
            ]
        );
    }

    #[test]
    fn violations_are_appended_after_existing_ones() {
        let mut out = vec![Violation::new("earlier", "kept")];
        validate_targeting(&json!({"nope": 1}), "t", &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out.first().map(|v| v.path.as_str()), Some("earlier"));
    }

    // ---- var, missing, $ref ---------------------------------------------------------------

    #[test]
    fn flagd_properties_other_than_timestamp_and_flag_key_are_rejected() {
        assert!(check(&json!({"var": "$flagd.timestamp"})).is_empty());
        assert!(check(&json!({"var": "$flagd.flagKey"})).is_empty());
        assert!(check(&json!({"var": "flagd.anything"})).is_empty());
        assert!(check(&json!({"var": ["email", "nobody"]})).is_empty());
        assert!(check(&json!({"var": 1})).is_empty());
        let v = only(&json!({"var": "$flagd.targetingKey"}));
        assert_eq!(v.path, "targeting.var");
        assert!(
            v.message
                .contains("\"$flagd.targetingKey\" is not a property flagd provides")
        );
        let v = only(&json!({"var": ["$flagd.flagkey", 0]}));
        assert_eq!(v.path, "targeting.var[0]");
    }

    #[test]
    fn missing_and_missing_some_take_key_lists() {
        assert!(check(&json!({"missing": ["a", "b"]})).is_empty());
        assert!(check(&json!({"missing_some": [1, ["a", "b"]]})).is_empty());
        assert_eq!(only(&json!({"missing": "a"})).path, "targeting.missing");
        assert_eq!(
            only(&json!({"missing": ["a", 1]})).path,
            "targeting.missing[1]"
        );
        assert_eq!(
            only(&json!({"missing_some": ["1", ["a"]]})).path,
            "targeting.missing_some[0]"
        );
        assert_eq!(
            only(&json!({"missing_some": [1, "a"]})).path,
            "targeting.missing_some[1]"
        );
        assert_eq!(
            only(&json!({"missing_some": [1]})).path,
            "targeting.missing_some"
        );
    }

    #[test]
    fn ref_must_be_a_string_and_stands_for_a_rule_anywhere() {
        assert!(check(&json!({"$ref": "shared"})).is_empty());
        assert!(
            check(&json!({"fractional": [{"$ref": "seed"}, ["a", {"$ref": "w"}], ["b", 1]]}))
                .is_empty()
        );
        assert!(check(&json!({"sem_ver": [{"$ref": "version"}, ">=", "1.0.0"]})).is_empty());
        let v = only(&json!({"if": [{"$ref": 5}, "a"]}));
        assert_eq!(v.path, "targeting.if[0].$ref");
        assert!(
            v.message.contains("must be a string, found number 5"),
            "{v:?}"
        );
        let v = only(&json!({"if": [{"$ref": "x", "var": "y"}, "a"]}));
        assert!(v.message.contains("exactly one operator key"), "{v:?}");
    }

    // ---- sem_ver --------------------------------------------------------------------------

    #[test]
    fn sem_ver_operator_must_be_a_range_specifier() {
        for op in ["=", "!=", ">", ">=", "<", "<=", "^", "~"] {
            assert!(
                check(&json!({"sem_ver": [{"var": "v"}, op, "1.0.0"]})).is_empty(),
                "{op}"
            );
        }
        for op in [json!("*"), json!("=="), json!(""), json!(1), json!(null)] {
            let v = only(&json!({"sem_ver": [{"var": "v"}, op, "1.0.0"]}));
            assert_eq!(v.path, "targeting.sem_ver[1]");
        }
    }

    #[test]
    fn sem_ver_version_strings_follow_the_semver_pattern() {
        let good = [
            "0.0.0",
            "1.2.3",
            "10.20.30",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-0.3.7",
            "1.0.0-x.7.z.92",
            "1.0.0-x-y-z.--",
            "1.0.0-alpha+001",
            "1.0.0+20130313144700",
            "1.0.0-beta+exp.sha.5114f85",
            "1.0.0+21AF26D3----117B344092BD",
            "1.0.0-0alpha",
            "1.0.0-00a",
        ];
        for s in good {
            assert!(super::is_sem_ver(s), "{s} should be a semantic version");
            assert!(
                check(&json!({"sem_ver": [s, "=", {"var": "v"}]})).is_empty(),
                "{s}"
            );
        }
        let bad = [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "01.2.3",
            "1.02.3",
            "1.2.03",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2.3+a+b",
            "1.2.3+a..b",
            "1.2.3-a_b",
            " 1.2.3",
            "1.2.3 ",
            "1.2.3\n",
            "1.2.-3",
            "a.b.c",
            "1.2.3-αβ",
            "١.2.3",
        ];
        for s in bad {
            assert!(
                !super::is_sem_ver(s),
                "{s:?} should not be a semantic version"
            );
            let v = only(&json!({"sem_ver": [{"var": "v"}, "=", s]}));
            assert_eq!(v.path, "targeting.sem_ver[2]");
        }
    }

    #[test]
    fn sem_ver_operand_may_be_a_var_rule_but_not_another_rule() {
        assert!(
            check(&json!({"sem_ver": [{"var": "a"}, "^", {"var": ["b", "1.0.0"]}]})).is_empty()
        );
        let v = only(&json!({"sem_ver": [{"cat": ["1.", "0.0"]}, "=", "1.0.0"]}));
        assert_eq!(v.path, "targeting.sem_ver[0]");
        assert!(
            v.message
                .starts_with("expected a semantic version string or a var rule")
        );
        let v = only(&json!({"sem_ver": [{"var": "$flagd.version"}, "=", "1.0.0"]}));
        assert_eq!(v.path, "targeting.sem_ver[0].var");
        let v = only(&json!({"sem_ver": [1, "=", "1.0.0"]}));
        assert_eq!(
            v.message,
            "expected a semantic version string or a var rule, found number 1"
        );
    }

    // ---- fractional -----------------------------------------------------------------------

    #[test]
    fn fractional_decimal_weight_is_rejected() {
        let v = only(&json!({"fractional": [["a", 25.5], ["b", 25]]}));
        assert_eq!(v.path, "targeting.fractional[0][1]");
        assert_eq!(
            v.message,
            "a fractional weight must be a non-negative integer, found 25.5"
        );
    }

    #[test]
    fn fractional_whole_number_written_with_a_decimal_point_is_an_integer() {
        // JSON Schema's `integer` is about the value, not the spelling.
        assert!(check(&json!({"fractional": [["a", 25.0], ["b", 1e2]]})).is_empty());
    }

    #[test]
    fn fractional_negative_or_non_numeric_weight_is_rejected() {
        let v = only(&json!({"fractional": [["a", -1], ["b", 1]]}));
        assert_eq!(
            v.message,
            "a fractional weight must be a non-negative integer, found -1"
        );
        for w in [json!("25"), json!(true), json!(null), json!([25])] {
            let v = only(&json!({"fractional": [{"var": "k"}, ["a", w], ["b", 1]]}));
            assert_eq!(v.path, "targeting.fractional[1][1]");
            assert!(
                v.message
                    .starts_with("expected a non-negative integer weight or a rule")
            );
        }
    }

    #[test]
    fn fractional_bucketing_value_must_be_a_rule_not_a_literal() {
        // flagd's schema: the first item of `fractionalOp` is `anyRule`.
        for seed in [json!("seed"), json!(null), json!(1)] {
            let v = only(&json!({"fractional": [seed, ["a", 1], ["b", 1]]}));
            assert_eq!(v.path, "targeting.fractional[0]");
            assert!(v.message.starts_with("expected a bucketing rule"), "{v:?}");
        }
        let v = only(&json!({"fractional": [{"nope": "k"}, ["a", 1]]}));
        assert!(v.message.starts_with("unknown operator \"nope\""), "{v:?}");
    }

    #[test]
    fn fractional_shorthand_computed_weights_and_any_variant_expression_are_accepted() {
        for rule in [
            json!({"fractional": [["heads"], ["tails", 1]]}),
            json!({"fractional": [{"var": "k"}]}),
            json!({"fractional": [["on", {"-": [{"var": "$flagd.timestamp"}, 1]}], ["off", 0]]}),
            json!({"fractional": [[null, 1], [1.5, 1], [[1, 2], 1], [{"var": "v"}, 1]]}),
        ] {
            assert!(check(&rule).is_empty(), "{rule}");
        }
    }

    #[test]
    fn fractional_bucket_shape_is_checked() {
        let v = only(&json!({"fractional": [["a", 1], []]}));
        assert_eq!(v.path, "targeting.fractional[1]");
        let v = only(&json!({"fractional": [["a", 1, 2]]}));
        assert!(v.message.contains("found 3 items"), "{v:?}");
        let v = only(&json!({"fractional": [{"var": "k"}, "a"]}));
        assert_eq!(
            v.message,
            "expected a bucket [variant, weight], found string \"a\""
        );
        assert_eq!(
            only(&json!({"fractional": []})).path,
            "targeting.fractional"
        );
        assert_eq!(
            only(&json!({"fractional": "a"})).path,
            "targeting.fractional"
        );
        let v = only(&json!({"fractional": [["a", 1], [{"bogus": 1}, 1]]}));
        assert_eq!(v.path, "targeting.fractional[1][0]");
    }

    #[test]
    fn fractional_weights_over_the_total_limit_are_rejected() {
        assert!(check(&json!({"fractional": [["a", 2_147_483_646_u64], ["b", 1]]})).is_empty());
        let v = only(&json!({"fractional": [["a", 2_147_483_647_u64], ["b", 1]]}));
        assert_eq!(v.path, "targeting.fractional");
        assert!(v.message.contains("2147483648"), "{v:?}");
        let v = only(&json!({"fractional": [["a", u64::MAX], ["b", 1e300]]}));
        assert_eq!(v.path, "targeting.fractional");
    }

    // ---- size and depth -------------------------------------------------------------------

    /// `levels` nested `{"!": …}` objects around `true`, built without recursion.
    fn nested_not(levels: usize) -> Value {
        let mut v = Value::Bool(true);
        for _ in 0..levels {
            let mut m = Map::new();
            m.insert("!".to_owned(), v);
            v = Value::Object(m);
        }
        v
    }

    /// Drops a [`nested_not`] value one level at a time: `Value`'s own `Drop` recurses and
    /// would overflow the stack on the deep ones.
    fn dismantle(mut v: Value) {
        loop {
            let inner = match &mut v {
                Value::Object(m) => m.remove("!"),
                _ => None,
            };
            match inner {
                Some(next) => v = next,
                None => break,
            }
        }
    }

    #[test]
    fn nesting_at_the_limit_is_accepted_and_one_more_level_is_not() {
        // `levels` objects put the innermost `true` at depth `levels` (the rule is depth 0), the
        // same count the rule compiler uses.
        let at_limit = nested_not(MAX_RULE_DEPTH);
        assert!(check(&at_limit).is_empty());
        dismantle(at_limit);
        let over = nested_not(MAX_RULE_DEPTH + 1);
        let v = only(&over);
        assert_eq!(
            v.message,
            format!("rule nesting exceeds {MAX_RULE_DEPTH} levels")
        );
        dismantle(over);
    }

    #[test]
    fn nesting_beyond_the_limit_is_one_violation_not_a_stack_overflow() {
        // 100,000 levels would overflow any test thread's stack if the validator descended
        // them; it must stop at the limit and say so once.
        let deep = nested_not(100_000);
        let found = check(&deep);
        dismantle(deep);
        assert_eq!(found.len(), 1, "{found:?}");
        let v = found.first().expect("one violation");
        assert_eq!(v.message, "rule nesting exceeds 128 levels");
        assert_eq!(
            v.path,
            format!("targeting{}", ".!".repeat(MAX_RULE_DEPTH + 1))
        );
    }

    #[test]
    fn deep_literal_arrays_are_bounded_too() {
        let mut v = json!(1);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        // Built by hand: `json!` would pass `v` through `to_value`, which recurses.
        let mut args = Map::new();
        args.insert("in".to_owned(), Value::Array(vec![json!(1), v]));
        let rule = Value::Object(args);
        let found = check(&rule);
        // Take the array apart iteratively before `rule` drops.
        let mut rule = rule;
        let mut cur = rule
            .get_mut("in")
            .and_then(|args| args.as_array_mut())
            .and_then(Vec::pop)
            .unwrap_or(Value::Null);
        while let Value::Array(items) = &mut cur {
            match items.pop() {
                Some(next) => cur = next,
                None => break,
            }
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found
                .iter()
                .all(|v| v.message == "rule nesting exceeds 128 levels")
        );
    }

    #[test]
    fn depth_is_reported_once_however_many_branches_are_too_deep() {
        let branch = || nested_not(MAX_RULE_DEPTH + 10);
        let rule = json!({"or": [branch(), branch(), branch()]});
        assert_eq!(check(&rule).len(), 1);
    }

    #[test]
    fn huge_values_are_described_briefly() {
        let big: Vec<Value> = (0..100_000).map(Value::from).collect();
        let v = only(&json!({"starts_with": [{"var": "x"}, big]}));
        assert!(v.message.len() < 200, "{}", v.message);
        let long = "x".repeat(100_000);
        let v = only(&json!({"sem_ver": [{"var": "x"}, "=", long]}));
        assert!(v.message.len() < 300, "{}", v.message);
        let v = only(&json!({ long.clone(): 1 }));
        assert!(v.message.len() < 400, "{}", v.message);
    }

    #[test]
    fn wide_rules_validate_in_linear_time() {
        // 200,000 sibling rules, each broken: one violation each, built without rescanning.
        let items: Vec<Value> = (0..200_000)
            .map(|i| json!({"var": ["$flagd.x", i]}))
            .collect();
        let rule = json!({"or": items});
        let start = std::time::Instant::now();
        let found = check(&rule);
        assert_eq!(found.len(), 200_000);
        // Generous bound: a quadratic validator would take minutes here.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            start.elapsed()
        );
    }
}
