//! The evaluator: a compiled flag set and flagd's resolution semantics.
//!
//! [`FlagSet`] is built once from a [`FlagDocument`] (every rule compiled, variant values
//! shared behind `Arc`s) and then evaluated many times, concurrently, without locks and without
//! re-parsing. Semantics are flagd's (DESIGN.md §3): reasons STATIC / TARGETING_MATCH / DEFAULT /
//! DISABLED / ERROR, and a rule that cannot be compiled still loads and answers PARSE_ERROR.
//!
//! The evaluation context comes in as a `serde_json::Value`. Transports that carry other shapes
//! (protobuf `Struct`) convert to that at their own boundary; one that has the context as JSON
//! text can parse it straight into engine data instead ([`crate::context`],
//! [`FlagSet::evaluate_parsed`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use bumpalo::Bump;
use datalogic_rs::DataValue;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::context::ParsedContext;
use crate::metadata::Metadata;
use crate::model::{FlagDefinition, FlagDocument, FlagState, VariantType};
use crate::rules::{self, CompiledRule, FractionalVersion, RuleError};

/// Why a resolution came out the way it did (OpenFeature / flagd reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no targeting: its default variant was served.
    Static,
    /// Targeting chose a variant.
    TargetingMatch,
    /// Targeting returned null, or there is no default variant: the default (possibly the
    /// caller's own) was served.
    Default,
    /// The flag is disabled: no value, the caller's default applies.
    Disabled,
    /// Evaluation failed; see the error code.
    Error,
}

impl Reason {
    /// The wire spelling (`TARGETING_MATCH`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// OpenFeature error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with that key in the set.
    FlagNotFound,
    /// The flag's rule could not be compiled or failed while running.
    ParseError,
    /// The value is not of the type the caller asked for.
    TypeMismatch,
    /// A rule needed a targeting key the context did not carry.
    TargetingKeyMissing,
    /// The context is not a JSON object, or nests too deeply.
    InvalidContext,
    /// Anything else, e.g. targeting named a variant that does not exist.
    General,
}

impl ErrorCode {
    /// The wire spelling (`FLAG_NOT_FOUND`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::InvalidContext => "INVALID_CONTEXT",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The type a caller expects, for typed resolution (`ResolveBoolean`, `getIntegerValue`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A boolean.
    Boolean,
    /// A string.
    String,
    /// A number with no fractional part that fits an `i64`.
    Integer,
    /// Any number.
    Float,
    /// A JSON object.
    Object,
}

impl ValueKind {
    fn accepts(self, value: &Value) -> bool {
        match self {
            ValueKind::Boolean => value.is_boolean(),
            ValueKind::String => value.is_string(),
            // flagd (Go) truncates a float to an int here. A silently truncated 0.5 is a bug in
            // the caller's hands, so Vexil answers TYPE_MISMATCH for non-integral numbers.
            ValueKind::Integer => {
                value.is_i64()
                    || value
                        .as_f64()
                        .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15)
            }
            ValueKind::Float => value.is_number(),
            ValueKind::Object => value.is_object(),
        }
    }
}

/// The outcome of evaluating one flag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    /// The value served; `None` means "use the caller's default" (DISABLED, a missing default
    /// variant, or an error).
    pub value: Option<Arc<Value>>,
    /// The variant served, when one was.
    pub variant: Option<Arc<str>>,
    /// Why.
    pub reason: Reason,
    /// Set exactly when `reason` is [`Reason::Error`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// A human explanation for errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Flag-set metadata overlaid with the flag's own.
    pub metadata: Arc<Metadata>,
}

impl Resolution {
    fn error(code: ErrorCode, message: String, metadata: Arc<Metadata>) -> Self {
        Self {
            value: None,
            variant: None,
            reason: Reason::Error,
            error_code: Some(code),
            error_message: Some(message),
            metadata,
        }
    }

    /// Applies a typed request: a served value of another type becomes TYPE_MISMATCH.
    #[must_use]
    pub fn expect(self, kind: ValueKind) -> Self {
        match &self.value {
            Some(v) if !kind.accepts(v) => {
                let message = format!(
                    "flag value is {}, not the {kind:?} the caller asked for",
                    VariantType::of(v).map_or("null", VariantType::as_str)
                );
                Resolution::error(ErrorCode::TypeMismatch, message, self.metadata)
            }
            _ => self,
        }
    }
}

/// Every flag's resolution, in key order, as bulk evaluation returns it.
pub type Evaluations = Vec<(Arc<str>, Resolution)>;

/// How to build a [`FlagSet`].
#[derive(Debug, Clone, Default)]
pub struct FlagSetOptions {
    /// The fractional bucketing algorithm.
    pub fractional: FractionalVersion,
    /// Context merged under every request's context; the request's keys win (flagd's
    /// `--context-value`, Vexil's namespace `evaluationContext`).
    pub static_context: Map<String, Value>,
}

/// A flag's targeting as compiled.
#[derive(Debug, Clone)]
enum Targeting {
    None,
    Rule(CompiledRule),
    /// Kept so the flag loads; evaluation answers PARSE_ERROR with this message.
    Broken(RuleError),
}

#[derive(Debug, Clone)]
struct CompiledFlag {
    state: FlagState,
    variants: HashMap<Box<str>, (Arc<str>, Arc<Value>), KeyHash>,
    default: Option<(Arc<str>, Arc<Value>)>,
    targeting: Targeting,
    /// Whether the rule can read `$flagd.timestamp` (see [`reads_clock`]); if not,
    /// [`FlagSet::evaluate`] does not read the clock for it.
    reads_clock: bool,
    metadata: Arc<Metadata>,
}

/// A compiled, immutable set of flags: what a namespace snapshot holds. `Send + Sync`; share it
/// behind an `Arc` and evaluate from any number of threads.
#[derive(Debug, Clone)]
pub struct FlagSet {
    /// Flag key → index into `keys` and `compiled`.
    index: HashMap<Arc<str>, usize, KeyHash>,
    /// Flag keys in sorted order.
    keys: Vec<Arc<str>>,
    /// The flags, in the order of `keys` (so `evaluate_all` needs no lookups). Shared, so that
    /// [`FlagSet::with_changes`] copies a pointer per unchanged flag, not the flag.
    compiled: Vec<Arc<CompiledFlag>>,
    metadata: Arc<Metadata>,
    static_context: Map<String, Value>,
}

/// One line of [`FlagSet::explain`]: what the rule looked like and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The resolution, as [`FlagSet::evaluate_at`] gives it.
    pub resolution: Resolution,
    /// The rule as evaluated (`$ref`s expanded), when the flag has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Value>,
    /// What the rule returned before it was mapped to a variant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_result: Option<Value>,
    /// The context the rule saw, with `$flagd` and the static context merged in.
    pub context: Value,
    /// Which step decided the result, in words.
    pub decision: String,
}

thread_local! {
    /// One arena per thread, reset after each evaluation: evaluations allocate nothing on the
    /// heap once the arena has grown to its working size.
    static ARENA: RefCell<Bump> = RefCell::new(Bump::with_capacity(4096));
}

/// Deepest context nesting accepted, matching serde_json's own parse limit.
const MAX_CONTEXT_DEPTH: usize = 128;

/// Builds a [`FlagSet`] one flag at a time, so a caller can decode, add and drop each
/// definition in turn instead of holding a whole [`FlagDocument`] (large namespaces: the
/// decoded definitions, not the compiled flags, would otherwise set the memory peak).
#[derive(Debug)]
pub struct FlagSetBuilder<'a> {
    evaluators: &'a Map<String, Value>,
    set_meta: Arc<Metadata>,
    options: &'a FlagSetOptions,
    flags: Vec<(Arc<str>, CompiledFlag)>,
}

impl<'a> FlagSetBuilder<'a> {
    /// A builder for flags that may `$ref` `evaluators`, under flag-set `metadata`.
    pub fn new(
        evaluators: &'a Map<String, Value>,
        metadata: &Map<String, Value>,
        options: &'a FlagSetOptions,
    ) -> Self {
        Self {
            evaluators,
            set_meta: Arc::new(Metadata::from(metadata)),
            options,
            flags: Vec::new(),
        }
    }

    /// Compiles and adds one flag. Never fails (see [`FlagSet::compile`]); a key added twice
    /// keeps its last definition.
    pub fn add(&mut self, key: &str, def: &FlagDefinition) {
        let compiled = compile_flag(
            def,
            &self.set_meta,
            self.evaluators,
            self.options.fractional,
        );
        self.flags.push((Arc::from(key), compiled));
    }

    /// The flag set, keys in sorted order.
    pub fn finish(mut self) -> FlagSet {
        // Stable, so among duplicates the last added stays last and wins below.
        self.flags.sort_by(|a, b| a.0.cmp(&b.0));
        self.flags.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let (keys, compiled) = self
            .flags
            .into_iter()
            .map(|(key, flag)| (key, Arc::new(flag)))
            .unzip();
        FlagSet::from_sorted(
            keys,
            compiled,
            self.set_meta,
            self.options.static_context.clone(),
        )
    }
}

impl FlagSet {
    /// Assembles a set from keys in sorted order (no duplicates) and their flags.
    fn from_sorted(
        keys: Vec<Arc<str>>,
        compiled: Vec<Arc<CompiledFlag>>,
        metadata: Arc<Metadata>,
        static_context: Map<String, Value>,
    ) -> Self {
        let mut index = HashMap::with_capacity_and_hasher(keys.len(), KeyHash::default());
        for (i, key) in keys.iter().enumerate() {
            index.insert(Arc::clone(key), i);
        }
        FlagSet {
            index,
            keys,
            compiled,
            metadata,
            static_context,
        }
    }

    /// This set with some flags replaced, added or removed: each `(key, Some(definition))` is
    /// compiled (against `evaluators`, with this set's metadata and static context) and
    /// replaces or adds the flag `key`; each `(key, None)` removes it (a missing key is no
    /// error). A key named twice keeps its last change. Flags not named are shared with this
    /// set, not recompiled, so one changed flag in a namespace of 100,000 costs one compile
    /// and a copy of the key table rather than a rebuild.
    ///
    /// The result equals [`FlagSet::compile`] of the changed document, provided `evaluators`
    /// and `fractional` are what this set was compiled with (a changed segment can change
    /// every flag that refers to it: recompile the whole set then).
    #[must_use]
    pub fn with_changes<'d>(
        &self,
        changes: impl IntoIterator<Item = (&'d str, Option<&'d FlagDefinition>)>,
        evaluators: &Map<String, Value>,
        fractional: FractionalVersion,
    ) -> FlagSet {
        let mut updates: std::collections::BTreeMap<&str, Option<Arc<CompiledFlag>>> =
            std::collections::BTreeMap::new();
        for (key, def) in changes {
            let compiled =
                def.map(|d| Arc::new(compile_flag(d, &self.metadata, evaluators, fractional)));
            updates.insert(key, compiled);
        }
        let mut keys = Vec::with_capacity(self.keys.len() + updates.len());
        let mut compiled = Vec::with_capacity(self.keys.len() + updates.len());
        let mut pending = updates.into_iter().peekable();
        for (key, flag) in self.keys.iter().zip(&self.compiled) {
            // Changes to keys sorting before this one: additions (or removals of absent keys).
            while let Some((k, _)) = pending.peek()
                && *k < &**key
            {
                if let Some((k, Some(new))) = pending.next() {
                    keys.push(Arc::from(k));
                    compiled.push(new);
                }
            }
            match pending.peek() {
                Some((k, _)) if *k == &**key => {
                    if let Some((_, Some(new))) = pending.next() {
                        keys.push(Arc::clone(key));
                        compiled.push(new);
                    }
                }
                _ => {
                    keys.push(Arc::clone(key));
                    compiled.push(Arc::clone(flag));
                }
            }
        }
        for (k, change) in pending {
            if let Some(new) = change {
                keys.push(Arc::from(k));
                compiled.push(new);
            }
        }
        FlagSet::from_sorted(
            keys,
            compiled,
            Arc::clone(&self.metadata),
            self.static_context.clone(),
        )
    }

    /// Compiles a document. Never fails: a flag whose rule does not compile answers
    /// PARSE_ERROR when evaluated, as flagd does.
    pub fn compile(doc: &FlagDocument, options: &FlagSetOptions) -> Self {
        let mut b = FlagSetBuilder::new(&doc.evaluators, &doc.metadata, options);
        for (key, def) in &doc.flags {
            b.add(key, def);
        }
        b.finish()
    }

    /// The compiled flag with this key.
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.index
            .get(key)
            .and_then(|&i| self.compiled.get(i))
            .map(Arc::as_ref)
    }

    /// Number of flags.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no flags.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Flag keys in sorted order.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.keys
    }

    /// Flag-set metadata.
    pub fn metadata(&self) -> &Arc<Metadata> {
        &self.metadata
    }

    /// Evaluates one flag now. See [`FlagSet::evaluate_at`].
    ///
    /// The clock is read only when the flag has a rule to run: a static flag never needs
    /// `$flagd.timestamp`.
    pub fn evaluate(&self, key: &str, context: &Value) -> Resolution {
        self.evaluate_one(key, context, None)
    }

    /// Evaluates one flag with `$flagd.timestamp` = `now_unix`.
    ///
    /// Never panics. A missing flag is FLAG_NOT_FOUND; a context that is neither an object nor
    /// null is INVALID_CONTEXT, as is, for a flag with a rule, one nesting deeper than 128
    /// levels; a rule error is PARSE_ERROR; a rule naming an unknown variant is
    /// GENERAL. Deterministic for a given (set, key, context, timestamp).
    pub fn evaluate_at(&self, key: &str, context: &Value, now_unix: i64) -> Resolution {
        self.evaluate_one(key, context, Some(now_unix))
    }

    /// [`FlagSet::evaluate_at`], reading the clock (`now == None`) only if a rule runs.
    fn evaluate_one(&self, key: &str, context: &Value, mut now: Option<i64>) -> Resolution {
        let Some(flag) = self.flag(key) else {
            return Resolution::error(
                ErrorCode::FlagNotFound,
                format!("flag \"{key}\" was not found"),
                self.metadata.clone(),
            );
        };
        let ctx = match context_entries(context) {
            Ok(c) => c,
            Err(e) => {
                return Resolution::error(ErrorCode::InvalidContext, e, flag.metadata.clone());
            }
        };
        let rule = match precheck(flag, None) {
            Ok(rule) => rule,
            Err(r) => return r,
        };
        if let Some(e) = too_deep(context) {
            return Resolution::error(ErrorCode::InvalidContext, e, flag.metadata.clone());
        }
        ARENA.with(|cell| {
            let mut arena = cell.borrow_mut();
            let r = {
                let base = context_data(&arena, ctx, &self.static_context);
                let now = clock(flag, &mut now);
                self.run_rule(key, flag, rule, base, now, &arena, None)
            };
            arena.reset();
            r
        })
    }

    /// Evaluates one flag now against a context parsed straight from JSON (see
    /// [`crate::context`]). The same as [`FlagSet::evaluate`] with the `Value` the context's
    /// text parses to, without building that `Value`.
    pub fn evaluate_parsed(&self, key: &str, context: &ParsedContext<'_>) -> Resolution {
        self.evaluate_parsed_with(key, context, None)
    }

    /// [`FlagSet::evaluate_parsed`] with `$flagd.timestamp` = `now_unix`.
    pub fn evaluate_parsed_at(
        &self,
        key: &str,
        context: &ParsedContext<'_>,
        now_unix: i64,
    ) -> Resolution {
        self.evaluate_parsed_with(key, context, Some(now_unix))
    }

    /// [`FlagSet::evaluate_one`] for a parsed context: the same steps in the same order (a
    /// parsed context is always an object, so the type check has nothing to refuse).
    fn evaluate_parsed_with(
        &self,
        key: &str,
        context: &ParsedContext<'_>,
        mut now: Option<i64>,
    ) -> Resolution {
        let Some(flag) = self.flag(key) else {
            return Resolution::error(
                ErrorCode::FlagNotFound,
                format!("flag \"{key}\" was not found"),
                self.metadata.clone(),
            );
        };
        let rule = match precheck(flag, None) {
            Ok(rule) => rule,
            Err(r) => return r,
        };
        if context.height > MAX_CONTEXT_DEPTH {
            return Resolution::error(
                ErrorCode::InvalidContext,
                too_deep_message(),
                flag.metadata.clone(),
            );
        }
        ARENA.with(|cell| {
            let mut arena = cell.borrow_mut();
            let r = {
                let base = parsed_context_data(&arena, context.entries, &self.static_context);
                let now = clock(flag, &mut now);
                self.run_rule(key, flag, rule, base, now, &arena, None)
            };
            arena.reset();
            r
        })
    }

    /// Evaluates every flag in key order, converting the context once.
    ///
    /// Disabled flags are included with reason DISABLED. An invalid context makes every entry
    /// INVALID_CONTEXT.
    pub fn evaluate_all(&self, context: &Value) -> Evaluations {
        self.evaluate_all_with(context, None)
    }

    /// [`FlagSet::evaluate_all`] at a given timestamp.
    pub fn evaluate_all_at(&self, context: &Value, now_unix: i64) -> Evaluations {
        self.evaluate_all_with(context, Some(now_unix))
    }

    /// [`FlagSet::evaluate_all_at`], reading the clock (`now == None`) at most once, and only
    /// if a rule needs it.
    fn evaluate_all_with(&self, context: &Value, mut now: Option<i64>) -> Evaluations {
        let ctx = context_entries(context);
        let deep = ctx.as_ref().ok().and_then(|_| too_deep(context));
        let invalid = |flag: &CompiledFlag, e: &String| {
            Resolution::error(ErrorCode::InvalidContext, e.clone(), flag.metadata.clone())
        };
        ARENA.with(|cell| {
            let mut arena = cell.borrow_mut();
            let out = {
                // The context is converted to engine data once; each rule then sees it through a
                // shallow root object that adds its own `$flagd`.
                let base = match (&ctx, &deep) {
                    (Ok(c), None) => Ok(context_data(&arena, *c, &self.static_context)),
                    (Err(e), _) | (Ok(_), Some(e)) => Err(e),
                };
                self.keys
                    .iter()
                    .zip(&self.compiled)
                    .map(|(key, flag)| {
                        let r = match (&ctx, base) {
                            (Err(e), _) => invalid(flag, e),
                            (Ok(_), base) => match precheck(flag, None) {
                                Err(r) => r,
                                Ok(rule) => match base {
                                    Ok(base) => {
                                        let now = clock(flag, &mut now);
                                        self.run_rule(key, flag, rule, base, now, &arena, None)
                                    }
                                    Err(e) => invalid(flag, e),
                                },
                            },
                        };
                        (key.clone(), r)
                    })
                    .collect()
            };
            arena.reset();
            out
        })
    }

    /// Evaluates one flag and says how the result was reached: the expanded rule, what it
    /// returned, the merged context, and the deciding step.
    pub fn explain(&self, key: &str, context: &Value, now_unix: i64) -> Explanation {
        let mut trace = Trace::default();
        let resolution = match (self.flag(key), context_entries(context)) {
            (None, _) => {
                trace.decision = "no flag with this key".into();
                self.evaluate_at(key, context, now_unix)
            }
            (Some(flag), Err(e)) => {
                trace.decision = "the context is not a JSON object".into();
                Resolution::error(ErrorCode::InvalidContext, e, flag.metadata.clone())
            }
            (Some(flag), Ok(ctx)) => match precheck(flag, Some(&mut trace)) {
                Err(r) => r,
                Ok(_) if let Some(e) = too_deep(context) => {
                    trace.decision = "the context nests too deeply for the rule to read it".into();
                    Resolution::error(ErrorCode::InvalidContext, e, flag.metadata.clone())
                }
                Ok(rule) => ARENA.with(|cell| {
                    let mut arena = cell.borrow_mut();
                    let r = {
                        let base = context_data(&arena, ctx, &self.static_context);
                        self.run_rule(key, flag, rule, base, now_unix, &arena, Some(&mut trace))
                    };
                    arena.reset();
                    r
                }),
            },
        };
        Explanation {
            resolution,
            rule: trace.rule,
            rule_result: trace.rule_result,
            context: trace.context.unwrap_or(Value::Null),
            decision: trace.decision,
        }
    }

    /// Runs a flag's rule on `base` (the converted context) and maps the result to a variant.
    #[expect(clippy::too_many_arguments, reason = "one private hot-path helper")]
    fn run_rule<'a>(
        &self,
        key: &'a str,
        flag: &CompiledFlag,
        rule: &'a CompiledRule,
        base: &'a [(&'a str, DataValue<'a>)],
        now_unix: i64,
        arena: &'a Bump,
        mut trace: Option<&mut Trace>,
    ) -> Resolution {
        let data = root_data(arena, base, key, now_unix);
        if let Some(t) = trace.as_deref_mut() {
            t.rule = Some(rule.expanded());
            t.context = Some(datavalue_to_json(data));
        }
        let result = match rules::ENGINE.evaluate(&rule.logic, data, arena) {
            Ok(r) => r,
            Err(e) => {
                note(&mut trace, "the rule failed while running");
                // Go flagd answers PARSE_ERROR for run-time rule errors (the JS core says
                // GENERAL); DESIGN.md §3 follows Go.
                return Resolution::error(
                    ErrorCode::ParseError,
                    format!("targeting rule failed: {e}"),
                    flag.metadata.clone(),
                );
            }
        };
        if let Some(t) = trace.as_deref_mut() {
            t.rule_result = Some(datavalue_to_json(result));
        }
        let name: &str = match result {
            DataValue::Null => {
                note(
                    &mut trace,
                    "the rule returned null: the default variant is served",
                );
                return fallback(flag, Reason::Default);
            }
            DataValue::String(s) => s,
            DataValue::Bool(true) => "true",
            DataValue::Bool(false) => "false",
            other => {
                note(
                    &mut trace,
                    "the rule returned something that is not a variant name",
                );
                return Resolution::error(
                    ErrorCode::General,
                    format!(
                        "targeting returned {}, which is not a variant name",
                        datavalue_to_json(other)
                    ),
                    flag.metadata.clone(),
                );
            }
        };
        match flag.variants.get(name) {
            Some(v) => {
                note(&mut trace, "the rule chose this variant");
                served(flag, v, Reason::TargetingMatch)
            }
            None => {
                note(&mut trace, "the rule named a variant that does not exist");
                Resolution::error(
                    ErrorCode::General,
                    format!("targeting returned variant \"{name}\", which the flag does not have"),
                    flag.metadata.clone(),
                )
            }
        }
    }
}

/// The `$flagd.timestamp` to evaluate `flag` with: the given one, else the clock read once (and
/// cached in `now`) if the rule can see the time, else 0, which the rule cannot observe.
fn clock(flag: &CompiledFlag, now: &mut Option<i64>) -> i64 {
    match *now {
        Some(t) => t,
        None if flag.reads_clock => *now.get_or_insert_with(now_unix),
        None => 0,
    }
}

/// Whether a rule can observe `$flagd.timestamp`, decided conservatively from its JSON (after
/// `$ref` expansion), so rules that never look at the time skip `SystemTime::now()`.
///
/// A datalogic rule reads its data only through `var`/`val` (`missing`/`missing_some` see only
/// whether a key exists, and `$flagd.timestamp` always does; the `exists` and datetime operators
/// are not compiled in), and vexil's own operators read only `targetingKey` and
/// `$flagd.flagKey`. So the time is out of reach unless a string anywhere in the rule mentions
/// `timestamp`, or a `var`/`val` path is computed, empty (the whole data), scoped
/// (`val`'s `[[level], ...]`) or names `$flagd` other than as `$flagd.flagKey`.
pub(crate) fn reads_clock(rule: &Value) -> bool {
    fn safe_segment(path: &Value) -> bool {
        match path {
            Value::String(s) => !s.is_empty() && (s == "$flagd.flagKey" || !s.contains("$flagd")),
            Value::Number(_) => true,
            _ => false,
        }
    }
    fn safe_path(op: &str, arg: &Value) -> bool {
        match (op, arg) {
            // `var`: `path` or `[path, default]`; a default is a value, checked by the walk.
            ("var", Value::Array(items)) => items.first().is_some_and(safe_segment),
            // `val`: `segment` or `[segment, ...]`.
            ("val", Value::Array(items)) => !items.is_empty() && items.iter().all(safe_segment),
            (_, path) => safe_segment(path),
        }
    }
    // Rules that compiled nest at most `MAX_RULE_DEPTH` deep, so this recursion is bounded.
    match rule {
        Value::String(s) => s.contains("timestamp"),
        Value::Array(items) => items.iter().any(reads_clock),
        Value::Object(map) => map.iter().any(|(k, v)| {
            k.contains("timestamp")
                || (matches!(k.as_str(), "var" | "val") && !safe_path(k, v))
                || reads_clock(v)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Records the deciding step when tracing.
fn note(trace: &mut Option<&mut Trace>, decision: &str) {
    if let Some(t) = trace.as_deref_mut() {
        t.decision = decision.to_owned();
    }
}

/// A variant served with `reason`.
#[inline(always)]
fn served(
    flag: &CompiledFlag,
    (variant, value): &(Arc<str>, Arc<Value>),
    reason: Reason,
) -> Resolution {
    Resolution {
        value: Some(value.clone()),
        variant: Some(variant.clone()),
        reason,
        error_code: None,
        error_message: None,
        metadata: flag.metadata.clone(),
    }
}

/// The flag's default variant, or no value when it has none.
#[inline(always)]
fn fallback(flag: &CompiledFlag, reason: Reason) -> Resolution {
    match &flag.default {
        Some(d) => served(flag, d, reason),
        None => Resolution {
            value: None,
            variant: None,
            reason: Reason::Default,
            error_code: None,
            error_message: None,
            metadata: flag.metadata.clone(),
        },
    }
}

/// Everything decided before a rule runs: DISABLED, STATIC, a rule that does not compile. `Ok`
/// hands back the rule to run.
#[inline(always)]
fn precheck<'f>(
    flag: &'f CompiledFlag,
    mut trace: Option<&mut Trace>,
) -> Result<&'f CompiledRule, Resolution> {
    if flag.state == FlagState::Disabled {
        note(&mut trace, "the flag is disabled");
        return Err(Resolution {
            value: None,
            variant: None,
            reason: Reason::Disabled,
            error_code: None,
            error_message: None,
            metadata: flag.metadata.clone(),
        });
    }
    match &flag.targeting {
        Targeting::None => {
            note(&mut trace, "no targeting: the default variant is served");
            Err(fallback(flag, Reason::Static))
        }
        Targeting::Broken(e) => {
            note(&mut trace, "the rule does not compile");
            Err(Resolution::error(
                ErrorCode::ParseError,
                e.to_string(),
                flag.metadata.clone(),
            ))
        }
        Targeting::Rule(rule) => Ok(rule),
    }
}

#[derive(Default)]
struct Trace {
    rule: Option<Value>,
    rule_result: Option<Value>,
    context: Option<Value>,
    decision: String,
}

fn compile_flag(
    def: &FlagDefinition,
    set_meta: &Arc<Metadata>,
    evaluators: &Map<String, Value>,
    fractional: FractionalVersion,
) -> CompiledFlag {
    let variants: HashMap<Box<str>, (Arc<str>, Arc<Value>), KeyHash> = def
        .variants
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().into(),
                (Arc::from(k.as_str()), Arc::new(v.clone())),
            )
        })
        .collect();
    let default = def
        .default_variant
        .as_deref()
        .and_then(|d| variants.get(d).cloned());
    let targeting = if def.has_targeting() {
        match def.targeting.as_ref() {
            Some(rule) => match rules::compile(rule, evaluators, fractional) {
                Ok(r) => Targeting::Rule(r),
                Err(e) => Targeting::Broken(e),
            },
            None => Targeting::None,
        }
    } else {
        Targeting::None
    };
    // Flags without metadata of their own share the set's map.
    let metadata = if def.metadata.is_empty() {
        set_meta.clone()
    } else {
        Arc::new(Metadata::overlaid(set_meta, &def.metadata))
    };
    let reads_clock = match &targeting {
        Targeting::Rule(rule) => rule.reads_clock,
        Targeting::None | Targeting::Broken(_) => false,
    };
    CompiledFlag {
        state: def.state,
        variants,
        default,
        targeting,
        reads_clock,
        metadata,
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The context as an object, or an INVALID_CONTEXT message. `null` is the empty context.
/// Only the type is checked here; nesting is checked by [`too_deep`] before a rule runs.
fn context_entries(context: &Value) -> Result<Option<&Map<String, Value>>, String> {
    match context {
        Value::Object(m) => Ok(Some(m)),
        Value::Null => Ok(None),
        other => Err(format!(
            "the evaluation context must be a JSON object, found {}",
            crate::validate::type_name(other)
        )),
    }
}

/// The INVALID_CONTEXT message for a context nesting deeper than [`MAX_CONTEXT_DEPTH`]. Checked
/// only for flags whose rule will read the context: the bound protects the (recursive)
/// conversion for the engine, and a flag without a rule never looks at the context. (JSON and
/// protobuf parsers cap nesting below this anyway; only a value built in code can exceed it.)
fn too_deep(context: &Value) -> Option<String> {
    crate::validate::deeper_than(context, MAX_CONTEXT_DEPTH).then(too_deep_message)
}

fn too_deep_message() -> String {
    format!("the evaluation context nests deeper than {MAX_CONTEXT_DEPTH} levels")
}

/// The request context with the static context under it, as engine data, without `$flagd`
/// (which a caller cannot set). Strings are borrowed, not copied: the context outlives the
/// arena's use.
fn context_data<'a>(
    arena: &'a Bump,
    ctx: Option<&'a Map<String, Value>>,
    static_ctx: &'a Map<String, Value>,
) -> &'a [(&'a str, DataValue<'a>)] {
    let len = ctx.map_or(0, Map::len) + static_ctx.len();
    let mut entries = bumpalo::collections::Vec::with_capacity_in(len, arena);
    if let Some(ctx) = ctx {
        for (k, v) in ctx {
            if k != "$flagd" {
                push_data(&mut entries, arena, k, v);
            }
        }
    }
    for (k, v) in static_ctx {
        if k != "$flagd" && !ctx.is_some_and(|c| c.contains_key(k)) {
            push_data(&mut entries, arena, k, v);
        }
    }
    entries.into_bump_slice()
}

/// [`context_data`] for a context that is engine data already: its members (in key order, each
/// once, as a `Value` map's) other than `$flagd`, then the static context's members it does not
/// have.
fn parsed_context_data<'a>(
    arena: &'a Bump,
    ctx: &'a [(&'a str, DataValue<'a>)],
    static_ctx: &'a Map<String, Value>,
) -> &'a [(&'a str, DataValue<'a>)] {
    let mut entries =
        bumpalo::collections::Vec::with_capacity_in(ctx.len() + static_ctx.len(), arena);
    entries.extend(ctx.iter().filter(|(k, _)| *k != "$flagd").copied());
    for (k, v) in static_ctx {
        if k != "$flagd" && ctx.binary_search_by(|(c, _)| (*c).cmp(k.as_str())).is_err() {
            push_data(&mut entries, arena, k, v);
        }
    }
    entries.into_bump_slice()
}

/// Appends `(k, v)` as engine data. Each arm pushes its own variant: building the value first
/// and pushing it after the match made the compiler assemble it on the stack byte by byte and
/// reload it whole, a store-forwarding stall per attribute (~40 ns of a 160 ns evaluation).
#[inline(always)]
fn push_data<'a>(
    entries: &mut bumpalo::collections::Vec<'a, (&'a str, DataValue<'a>)>,
    arena: &'a Bump,
    k: &'a str,
    v: &'a Value,
) {
    match v {
        Value::Null => entries.push((k, DataValue::Null)),
        Value::Bool(b) => entries.push((k, DataValue::Bool(*b))),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => entries.push((k, DataValue::from_i64(i))),
            (None, Some(f)) => entries.push((k, DataValue::from_f64(f))),
            (None, None) => entries.push((k, DataValue::Null)),
        },
        Value::String(s) => entries.push((k, DataValue::String(s))),
        Value::Array(_) | Value::Object(_) => entries.push((k, container_to_data(arena, v))),
    }
}

/// The data a rule sees: `base` (see [`context_data`]) plus `$flagd.{flagKey,timestamp}`.
fn root_data<'a>(
    arena: &'a Bump,
    base: &'a [(&'a str, DataValue<'a>)],
    key: &'a str,
    now_unix: i64,
) -> &'a DataValue<'a> {
    let flagd: &[(&str, DataValue<'_>)] = arena.alloc_slice_copy(&[
        ("flagKey", DataValue::String(key)),
        ("timestamp", DataValue::from_i64(now_unix)),
    ]);
    let mut entries = bumpalo::collections::Vec::with_capacity_in(base.len() + 1, arena);
    entries.extend_from_slice(base);
    entries.push(("$flagd", DataValue::Object(flagd)));
    arena.alloc(DataValue::Object(entries.into_bump_slice()))
}

/// Converts a JSON value to engine data, borrowing its strings. Depth is bounded by
/// [`context_entries`].
///
/// Scalars are converted inline at the call site; containers out of line.
#[inline(always)]
fn to_data<'a>(arena: &'a Bump, v: &'a Value) -> DataValue<'a> {
    match v {
        Value::Null => DataValue::Null,
        Value::Bool(b) => DataValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => DataValue::from_i64(i),
            (None, Some(f)) => DataValue::from_f64(f),
            (None, None) => DataValue::Null,
        },
        Value::String(s) => DataValue::String(s),
        Value::Array(_) | Value::Object(_) => container_to_data(arena, v),
    }
}

/// [`to_data`] for arrays and objects.
#[inline(never)]
pub(crate) fn container_to_data<'a>(arena: &'a Bump, v: &'a Value) -> DataValue<'a> {
    match v {
        Value::Array(items) => {
            let mut out = bumpalo::collections::Vec::with_capacity_in(items.len(), arena);
            out.extend(items.iter().map(|i| to_data(arena, i)));
            DataValue::Array(out.into_bump_slice())
        }
        Value::Object(m) => {
            let mut out = bumpalo::collections::Vec::with_capacity_in(m.len(), arena);
            for (k, i) in m {
                push_data(&mut out, arena, k, i);
            }
            DataValue::Object(out.into_bump_slice())
        }
        _ => to_data(arena, v),
    }
}

/// The hasher of the flag and variant maps: `rustc-hash`'s FxHash, several times cheaper than
/// SipHash on short keys. Keys are the flag set's own flag and variant names, so a request
/// cannot fill the maps with colliding keys; HashDoS resistance buys nothing here.
type KeyHash = rustc_hash::FxBuildHasher;

/// Converts an engine value back to JSON (for `explain` and messages only).
fn datavalue_to_json(v: &DataValue<'_>) -> Value {
    serde_json::from_str(&v.to_string()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Schema, TargetingPolicy};
    use serde_json::json;

    fn set(doc: Value) -> FlagSet {
        let loaded = FlagDocument::from_value(&doc, Schema::Flagd, TargetingPolicy::Warn);
        let doc = loaded.map(|l| l.document).unwrap_or_default();
        FlagSet::compile(&doc, &FlagSetOptions::default())
    }

    #[test]
    fn with_changes_equals_compiling_the_changed_document() {
        let flag = |v: &str, rule: Value| json!({"state": "ENABLED", "variants": {"a": format!("{v}-a"), "b": format!("{v}-b")}, "defaultVariant": "a", "targeting": rule});
        let rule = json!({"if": [{"$ref": "gold"}, "b", null]});
        let base = json!({
            "flags": {"c": flag("c", rule.clone()), "e": flag("e", json!({})), "g": flag("g", rule.clone())},
            "$evaluators": {"gold": {"==": [{"var": "tier"}, "gold"]}},
        });
        let loaded = FlagDocument::from_value(&base, Schema::Flagd, TargetingPolicy::Warn)
            .map(|l| l.document)
            .unwrap_or_default();
        let before = FlagSet::compile(&loaded, &FlagSetOptions::default());
        let def = |v: Value| -> FlagDefinition {
            serde_json::from_value(v).unwrap_or_else(|e| panic!("fixture: {e}"))
        };
        let (a, b, c, f) = (
            def(flag("a1", json!({}))),
            def(flag("b", rule.clone())),
            def(flag("c2", json!({"if": [{"$ref": "gold"}, "a", "b"]}))),
            def(flag("f", json!({"fractional": [["a", 50], ["b", 50]]}))),
        );
        let a2 = def(flag("a2", rule));
        let after = before.with_changes(
            [
                ("a", Some(&a)),
                ("b", Some(&b)),
                ("c", Some(&c)),
                ("e", None),
                ("z", None),
                ("f", Some(&f)),
                ("a", Some(&a2)),
            ],
            &loaded.evaluators,
            FractionalVersion::V2,
        );
        let mut expected_doc = loaded.clone();
        expected_doc.flags.remove("e");
        for (k, d) in [("a", &a2), ("b", &b), ("c", &c), ("f", &f)] {
            expected_doc.flags.insert(k.into(), d.clone());
        }
        let expected = FlagSet::compile(&expected_doc, &FlagSetOptions::default());
        let keys: Vec<&str> = after.keys().iter().map(|k| &**k).collect();
        assert_eq!(keys, ["a", "b", "c", "f", "g"]);
        for ctx in [
            json!({}),
            json!({"tier": "gold", "targetingKey": "u1"}),
            json!({"targetingKey": "u2"}),
        ] {
            assert_eq!(
                after.evaluate_all_at(&ctx, 7),
                expected.evaluate_all_at(&ctx, 7)
            );
            for key in ["a", "b", "c", "e", "f", "g", "z"] {
                assert_eq!(
                    after.evaluate_at(key, &ctx, 7),
                    expected.evaluate_at(key, &ctx, 7)
                );
            }
        }
        // The original is untouched.
        assert_eq!(before.len(), 3);
        assert_eq!(
            before.evaluate("e", &json!({})).value.as_deref(),
            Some(&json!("e-a"))
        );
    }

    #[test]
    fn static_flag_serves_its_default_with_reason_static() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}}}),
        );
        let r = s.evaluate("f", &json!({}));
        assert_eq!(r.value.as_deref(), Some(&json!(true)));
        assert_eq!(r.variant.as_deref(), Some("on"));
        assert_eq!(r.reason, Reason::Static);
    }

    #[test]
    fn a_rule_that_does_not_compile_loads_and_answers_parse_error() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a", "targeting": {"invalid": [1]}}}}),
        );
        assert_eq!(s.len(), 1);
        let r = s.evaluate("f", &json!({}));
        assert_eq!(
            (r.reason, r.error_code),
            (Reason::Error, Some(ErrorCode::ParseError))
        );
        assert_eq!(r.value, None);
    }

    #[test]
    fn flagd_key_and_timestamp_are_injected_and_cannot_be_spoofed() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"yes": 1, "no": 0}, "defaultVariant": "no",
            "targeting": {"if": [{"and": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, {"==": [{"var": "$flagd.timestamp"}, 42]}]}, "yes", "no"]}}}}),
        );
        let r = s.evaluate_at(
            "f",
            &json!({"$flagd": {"flagKey": "x", "timestamp": 1}}),
            42,
        );
        assert_eq!(r.variant.as_deref(), Some("yes"));
    }

    #[test]
    fn static_context_sits_under_the_request_context() {
        let doc = FlagDocument::from_value(
            &json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                "targeting": {"if": [{"==": [{"var": "env"}, "prod"]}, "b", null]}}}}),
            Schema::Flagd,
            TargetingPolicy::Reject,
        )
        .map(|l| l.document)
        .unwrap_or_default();
        let mut opts = FlagSetOptions::default();
        opts.static_context.insert("env".into(), json!("prod"));
        let s = FlagSet::compile(&doc, &opts);
        assert_eq!(s.evaluate("f", &json!({})).variant.as_deref(), Some("b"));
        assert_eq!(
            s.evaluate("f", &json!({"env": "dev"})).variant.as_deref(),
            Some("a")
        );
    }

    #[test]
    fn non_object_context_is_invalid_context() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}),
        );
        assert_eq!(
            s.evaluate("f", &json!([1])).error_code,
            Some(ErrorCode::InvalidContext)
        );
        assert_eq!(s.evaluate("f", &Value::Null).reason, Reason::Static);
    }

    #[test]
    fn typed_resolution_reports_type_mismatch() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": "x"}, "defaultVariant": "a"},
            "n": {"state": "ENABLED", "variants": {"half": 0.5, "two": 2.0}, "defaultVariant": "half"}}}),
        );
        let r = s.evaluate("f", &json!({})).expect(ValueKind::Integer);
        assert_eq!(r.error_code, Some(ErrorCode::TypeMismatch));
        assert_eq!(
            s.evaluate("n", &json!({}))
                .expect(ValueKind::Integer)
                .error_code,
            Some(ErrorCode::TypeMismatch)
        );
        assert_eq!(
            s.evaluate("n", &json!({}))
                .expect(ValueKind::Float)
                .error_code,
            None
        );
    }

    #[test]
    fn only_rules_that_can_see_the_time_read_the_clock() {
        let reads = |rule: Value| reads_clock(&rule);
        assert!(!reads(
            json!({"if": [{"==": [{"var": "tier"}, "gold"]}, "on", "off"]})
        ));
        assert!(!reads(
            json!({"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, ["a", 1]]})
        ));
        assert!(!reads(json!({"var": ["missing", "$flagd"]})));
        assert!(!reads(json!({"val": ["user", "id"]})));
        assert!(reads(json!({">": [{"var": "$flagd.timestamp"}, 0]})));
        assert!(reads(json!({"val": ["$flagd", "timestamp"]})));
        assert!(reads(json!({"var": "$flagd"})));
        assert!(reads(json!({"var": ""})));
        assert!(reads(json!({"var": []})));
        assert!(reads(json!({"val": [[1], "x"]})));
        assert!(reads(json!({"var": {"cat": ["$fl", "agd.time", "stamp"]}})));
        assert!(reads(json!({"var": {"var": "path"}})));
        assert!(reads(json!({"missing": ["$flagd.timestamp"]})));
    }

    #[test]
    fn evaluate_reads_the_clock_for_a_rule_that_uses_it() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"now": 1, "then": 0}, "defaultVariant": "then",
            "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, 1_600_000_000]}, "now", "then"]}},
            "g": {"state": "ENABLED", "variants": {"now": 1, "then": 0}, "defaultVariant": "then",
            "targeting": {"if": [{">": [{"var": {"cat": ["$flagd.", "time", "stamp"]}}, 1_600_000_000]}, "now", "then"]}}}}),
        );
        assert_eq!(s.evaluate("f", &json!({})).variant.as_deref(), Some("now"));
        assert_eq!(s.evaluate("g", &json!({})).variant.as_deref(), Some("now"));
        let all = s.evaluate_all(&json!({}));
        assert!(all.iter().all(|(_, r)| r.variant.as_deref() == Some("now")));
        assert_eq!(
            s.evaluate_at("f", &json!({}), 5).variant.as_deref(),
            Some("then")
        );
    }

    #[test]
    fn an_overly_deep_context_is_invalid_only_for_flags_that_read_it() {
        let s = set(json!({"flags": {
            "static": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"},
            "rule": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a",
                "targeting": {"if": [{"var": "x"}, "a", null]}}}}));
        // `{"x": [[...[1]...]]}` with `arrays` arrays nests `arrays + 2` levels.
        let context = |arrays: usize| {
            let mut v = json!(1);
            for _ in 0..arrays {
                v = Value::Array(vec![v]);
            }
            json!({ "x": v })
        };
        let ctx = context(MAX_CONTEXT_DEPTH - 1);
        let codes = |r: &Resolution| (r.reason, r.error_code);
        let static_ok = (Reason::Static, None);
        let invalid = (Reason::Error, Some(ErrorCode::InvalidContext));
        assert_eq!(codes(&s.evaluate("static", &ctx)), static_ok);
        assert_eq!(codes(&s.evaluate("rule", &ctx)), invalid);
        assert_eq!(codes(&s.explain("rule", &ctx, 0).resolution), invalid);
        let all = s.evaluate_all(&ctx);
        assert_eq!(codes(&all[0].1), invalid);
        assert_eq!(codes(&all[1].1), static_ok);
        // Exactly the limit is fine.
        let ctx = context(MAX_CONTEXT_DEPTH - 2);
        assert_eq!(s.evaluate("rule", &ctx).reason, Reason::TargetingMatch);
    }

    #[test]
    fn the_key_hash_separates_short_and_overlapping_keys() {
        use std::hash::BuildHasher;
        let hash = |k: &str| KeyHash::default().hash_one(k);
        let keys: Vec<String> = ["", "a", "b", "ab", "ba", "abc", "abcd", "abcde", "abcdefgh"]
            .into_iter()
            .map(String::from)
            .chain((0..20_000).map(|i| format!("flag-{i}")))
            .chain((0..2_000).map(|i| format!("a-rather-long-flag-key-number-{i:06}")))
            .collect();
        let distinct: std::collections::HashSet<u64> = keys.iter().map(|k| hash(k)).collect();
        assert_eq!(distinct.len(), keys.len());
    }

    #[test]
    fn explain_names_the_rule_its_result_and_the_decision() {
        let s = set(
            json!({"flags": {"f": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "a",
            "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "b", null]}}}}),
        );
        let e = s.explain("f", &json!({"tier": "gold"}), 7);
        assert_eq!(e.rule_result, Some(json!("b")));
        assert_eq!(e.decision, "the rule chose this variant");
        assert_eq!(e.context["$flagd"]["timestamp"], json!(7));
    }
}
