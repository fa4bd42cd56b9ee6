//! The flagd-testbed conformance runner, independent of transport.
//!
//! The suites that concern a flag evaluator (see the testbed's `SCENARIO-INDEX.tsv`) are read
//! straight from the Gherkin files and run against any [`Resolver`]: the in-process evaluator,
//! OFREP over HTTP, or flagd's gRPC protocol. Steps about provider plumbing (options, "a stable
//! flagd provider") are no-ops; any other step the runner does not know fails the row, so a
//! suite cannot pass by skipping what it does not understand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::gherkin::{self, Row, Step};

/// The typed resolution a scenario asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagType {
    /// `Boolean-flag`.
    Boolean,
    /// `String-flag`.
    String,
    /// `Integer-flag`.
    Integer,
    /// `Float-flag`.
    Float,
    /// `Object-flag`.
    Object,
}

impl FlagType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Boolean" => Self::Boolean,
            "String" => Self::String,
            "Integer" => Self::Integer,
            "Float" => Self::Float,
            "Object" => Self::Object,
            _ => return None,
        })
    }
}

/// Which fractional bucketing a suite expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fractional {
    /// flagd's current algorithm.
    V2,
    /// The CBOR-input successor.
    V3,
}

/// One evaluation request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The type asked for.
    pub flag_type: FlagType,
    /// The flag key.
    pub key: String,
    /// The caller's default (what an OpenFeature SDK falls back to).
    pub default: Value,
    /// The evaluation context.
    pub context: Map<String, Value>,
}

/// What a resolver answered.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The value served, if any; the runner falls back to the default when absent or on error,
    /// as an OpenFeature SDK does.
    pub value: Option<Value>,
    /// The reason (`STATIC`, `TARGETING_MATCH`, ...).
    pub reason: String,
    /// The error code, if any.
    pub error_code: Option<String>,
    /// Resolution metadata.
    pub metadata: Map<String, Value>,
}

/// Anything that can evaluate a flag for the runner.
pub trait Resolver {
    /// Evaluates one request.
    ///
    /// # Errors
    /// A transport failure, as text; the row fails with it.
    fn resolve(&mut self, request: &Request) -> Result<Outcome, String>;
}

/// A set of rows run against one flag configuration.
#[derive(Debug, Clone)]
pub struct Suite {
    /// A short name for reports.
    pub name: &'static str,
    /// The flagd document (map form, possibly merged from several files).
    pub flags: Value,
    /// The static context the flags are served with.
    pub static_context: Map<String, Value>,
    /// The bucketing the rows expect.
    pub fractional: Fractional,
    /// The rows.
    pub rows: Vec<Row>,
}

/// Per-file results of one suite.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Feature file → (passed, failed).
    pub files: BTreeMap<String, (usize, usize)>,
    /// One line per failed row.
    pub failures: Vec<String>,
}

impl Report {
    /// Total failed rows.
    pub fn failed(&self) -> usize {
        self.files.values().map(|(_, f)| f).sum()
    }

    /// Total passed rows.
    pub fn passed(&self) -> usize {
        self.files.values().map(|(p, _)| p).sum()
    }

    /// The per-file summary, one `file: N passed, M failed` line each.
    pub fn summary(&self, suite: &str) -> String {
        let mut s = String::new();
        for (file, (p, f)) in &self.files {
            let _ = writeln!(s, "[{suite}] {file}: {p} passed, {f} failed");
        }
        for line in &self.failures {
            let _ = writeln!(s, "[{suite}]   FAILED {line}");
        }
        s
    }
}

/// The testbed directory: `FLAGD_TESTBED_DIR`, else `conformance/flagd-testbed` in the
/// shared folder (see [`shared_dir`]).
///
/// # Panics
/// When it does not exist: conformance cannot be shown without the testbed, and a run that
/// silently skipped it would claim what it did not check.
pub fn testbed_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FLAGD_TESTBED_DIR") {
        return PathBuf::from(dir);
    }
    let shared = shared_dir().join("conformance/flagd-testbed");
    assert!(
        shared.is_dir(),
        "the flagd-testbed is neither at FLAGD_TESTBED_DIR nor at {}; set VEXIL_SHARED_DIR to the \
         project's shared folder",
        shared.display()
    );
    shared
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project's shared folder (DESIGN.md, the flagd-testbed, the reference schemas and their
/// fixtures): `VEXIL_SHARED_DIR` when set (a checkout that does not sit beside it, such as a
/// clone in a temporary directory; `scripts/test.sh` sets it), else `../shared` beside the
/// workspace.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("VEXIL_SHARED_DIR")
        .map_or_else(|| workspace_root().join("../shared"), PathBuf::from)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn feature_rows(dir: &Path, file: &str) -> Vec<Row> {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let name = Path::new(file)
        .file_name()
        .map_or(file.to_owned(), |n| n.to_string_lossy().into_owned());
    gherkin::parse(&name, &text)
}

fn has(row: &Row, tag: &str) -> bool {
    row.tags.iter().any(|t| t == tag)
}

/// The flags the testbed's launchpad serves: every `flags/*.json` except `selector-*`, merged
/// (flags and `$evaluators`), served with the static context `injectedmetadata=set`.
pub fn launchpad_flags(dir: &Path) -> (Value, Map<String, Value>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("flags"))
        .unwrap_or_else(|e| panic!("cannot list {}/flags: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("selector-"))
        })
        .collect();
    files.sort();
    let mut flags = Map::new();
    let mut evaluators = Map::new();
    for f in files {
        let doc = read_json(&f);
        if let Some(m) = doc.get("flags").and_then(Value::as_object) {
            flags.extend(m.clone());
        }
        if let Some(m) = doc.get("$evaluators").and_then(Value::as_object) {
            evaluators.extend(m.clone());
        }
    }
    let mut doc = Map::new();
    doc.insert("flags".into(), Value::Object(flags));
    doc.insert("$evaluators".into(), Value::Object(evaluators));
    let mut ctx = Map::new();
    ctx.insert("injectedmetadata".into(), Value::String("set".into()));
    (Value::Object(doc), ctx)
}

/// Every suite the engine issue requires, in a fixed order:
/// - `evaluator`: every row of `evaluator/gherkin/*.feature` except `@fractional-v1`, on
///   `evaluator/flags/testkit-flags.json`;
/// - `launchpad-v2`: `evaluation.feature` (not `@deprecated`), `targeting.feature` (the v2 tag
///   set), the first scenario of `disabled.feature`, `metadata.feature` (not
///   `@metadata-provider`) and the "Use enriched context" row of `contextEnrichment.feature`;
/// - `launchpad-v3`: `targeting.feature` with the v3 tag set.
pub fn suites() -> Vec<Suite> {
    let dir = testbed_dir();
    let mut evaluator_rows = Vec::new();
    let mut features: Vec<String> = std::fs::read_dir(dir.join("evaluator/gherkin"))
        .unwrap_or_else(|e| panic!("cannot list evaluator/gherkin: {e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".feature"))
        .collect();
    features.sort();
    for f in &features {
        evaluator_rows.extend(
            feature_rows(&dir, &format!("evaluator/gherkin/{f}"))
                .into_iter()
                .filter(|r| !has(r, "fractional-v1")),
        );
    }
    let evaluator = Suite {
        name: "evaluator",
        flags: read_json(&dir.join("evaluator/flags/testkit-flags.json")),
        static_context: Map::new(),
        fractional: Fractional::V2,
        rows: evaluator_rows,
    };

    let (flags, static_context) = launchpad_flags(&dir);
    let targeting = feature_rows(&dir, "gherkin/targeting.feature");
    let mut v2_rows: Vec<Row> = feature_rows(&dir, "gherkin/evaluation.feature")
        .into_iter()
        .filter(|r| !has(r, "deprecated"))
        .collect();
    v2_rows.extend(
        targeting
            .iter()
            .filter(|r| !has(r, "fractional-v1") && !has(r, "fractional-v3"))
            .cloned(),
    );
    v2_rows.extend(
        feature_rows(&dir, "gherkin/disabled.feature")
            .into_iter()
            .filter(|r| r.name.starts_with("Evaluating a disabled flag")),
    );
    v2_rows.extend(
        feature_rows(&dir, "gherkin/metadata.feature")
            .into_iter()
            .filter(|r| !has(r, "metadata-provider")),
    );
    v2_rows.extend(
        feature_rows(&dir, "gherkin/contextEnrichment.feature")
            .into_iter()
            .filter(|r| r.name == "Use enriched context"),
    );
    let v3_rows: Vec<Row> = targeting
        .into_iter()
        .filter(|r| !has(r, "fractional-v1") && !has(r, "fractional-v2"))
        .collect();
    vec![
        evaluator,
        Suite {
            name: "launchpad-v2",
            flags: flags.clone(),
            static_context: static_context.clone(),
            fractional: Fractional::V2,
            rows: v2_rows,
        },
        Suite {
            name: "launchpad-v3",
            flags,
            static_context,
            fractional: Fractional::V3,
            rows: v3_rows,
        },
    ]
}

/// Runs every row of `suite` against `resolver`.
pub fn run(suite: &Suite, resolver: &mut dyn Resolver) -> Report {
    let mut report = Report::default();
    for row in &suite.rows {
        let entry = report.files.entry(row.file.clone()).or_default();
        match run_row(row, resolver) {
            Ok(()) => entry.0 += 1,
            Err(e) => {
                entry.1 += 1;
                report
                    .failures
                    .push(format!("{} :: {} :: {e}", row.file, row.name));
            }
        }
    }
    report
}

#[derive(Default)]
struct RowState {
    request: Option<Request>,
    context: Map<String, Value>,
    outcome: Option<Outcome>,
}

fn run_row(row: &Row, resolver: &mut dyn Resolver) -> Result<(), String> {
    let mut st = RowState::default();
    for step in &row.steps {
        run_step(step, &mut st, resolver)?;
    }
    if st.outcome.is_none() {
        return Err("the row never evaluated a flag".into());
    }
    Ok(())
}

/// Matches `text` against a pattern of literal pieces separated by `{}` holes, returning the
/// holes. Literal pieces contain the quotes, so values may themselves contain quotes.
fn holes<'t>(text: &'t str, pattern: &str) -> Option<Vec<&'t str>> {
    let pieces: Vec<&str> = pattern.split("{}").collect();
    let (first, rest) = pieces.split_first()?;
    let mut remaining = text.strip_prefix(first)?;
    let mut out = Vec::new();
    for (i, piece) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let at = if last {
            if piece.is_empty() {
                remaining.len()
            } else {
                remaining.strip_suffix(piece).map(str::len)?
            }
        } else {
            remaining.find(piece)?
        };
        out.push(&remaining[..at]);
        remaining = &remaining[at + piece.len()..];
    }
    if remaining.is_empty() {
        Some(out)
    } else {
        None
    }
}

fn run_step(step: &Step, st: &mut RowState, resolver: &mut dyn Resolver) -> Result<(), String> {
    let t = step.text.as_str();
    if matches!(t, "an evaluator" | "a stable flagd provider")
        || holes(t, r#"an option "{}" of type "{}" with value "{}""#).is_some()
    {
        return Ok(());
    }
    if let Some(h) = holes(t, r#"a {}-flag with key "{}" and a {} value "{}""#) {
        let ty = FlagType::parse(h[0]).ok_or_else(|| format!("unknown flag type {}", h[0]))?;
        let default = typed(ty, h[3])?;
        st.request = Some(Request {
            flag_type: ty,
            key: h[1].to_owned(),
            default,
            context: Map::new(),
        });
        return Ok(());
    }
    if let Some(h) = holes(
        t,
        r#"a context containing a key "{}", with type "{}" and with value "{}""#,
    ) {
        let ty = FlagType::parse(h[1]).ok_or_else(|| format!("unknown context type {}", h[1]))?;
        st.context.insert(h[0].to_owned(), context_value(ty, h[2])?);
        return Ok(());
    }
    if let Some(h) = holes(t, r#"a context containing a targeting key with value "{}""#) {
        st.context
            .insert("targetingKey".into(), Value::String(h[0].to_owned()));
        return Ok(());
    }
    if let Some(h) = holes(
        t,
        r#"a context containing a nested property with outer key "{}" and inner key "{}", with value "{}""#,
    ) {
        let outer = st
            .context
            .entry(h[0].to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = outer {
            m.insert(h[1].to_owned(), Value::String(h[2].to_owned()));
        }
        return Ok(());
    }
    if t == "the flag was evaluated with details" {
        let mut req = st
            .request
            .clone()
            .ok_or("no flag was chosen before evaluating")?;
        req.context = st.context.clone();
        st.outcome = Some(resolver.resolve(&req)?);
        return Ok(());
    }
    let (req, out) = match (&st.request, &st.outcome) {
        (Some(r), Some(o)) => (r, o),
        _ => return Err(format!("step before evaluation: {t}")),
    };
    if let Some(h) = holes(t, r#"the resolved details value should be "{}""#) {
        let expected = typed(req.flag_type, h[0])?;
        let actual = if out.error_code.is_some() {
            req.default.clone()
        } else {
            out.value.clone().unwrap_or_else(|| req.default.clone())
        };
        return if same(&expected, &actual) {
            Ok(())
        } else {
            Err(format!(
                "value: expected {expected}, got {actual} (reason {}, error {:?})",
                out.reason, out.error_code
            ))
        };
    }
    if let Some(h) = holes(t, r#"the reason should be "{}""#) {
        return if out.reason == h[0] {
            Ok(())
        } else {
            Err(format!(
                "reason: expected {}, got {} (error {:?})",
                h[0], out.reason, out.error_code
            ))
        };
    }
    if let Some(h) = holes(t, r#"the error-code should be "{}""#) {
        let expected = (!h[0].is_empty()).then(|| h[0].to_owned());
        return if out.error_code == expected {
            Ok(())
        } else {
            Err(format!(
                "error code: expected {expected:?}, got {:?}",
                out.error_code
            ))
        };
    }
    if t == "the resolved metadata is empty" {
        return if out.metadata.is_empty() {
            Ok(())
        } else {
            Err(format!("metadata: expected none, got {:?}", out.metadata))
        };
    }
    if t == "the resolved metadata should contain" {
        for line in step.table.iter().skip(1) {
            let [key, ty, value] = line.as_slice() else {
                return Err("metadata table rows need key, type and value".into());
            };
            let ty = FlagType::parse(ty).ok_or_else(|| format!("unknown metadata type {ty}"))?;
            let expected = typed(ty, value)?;
            match out.metadata.get(key) {
                Some(actual) if same(&expected, actual) => {}
                other => {
                    return Err(format!(
                        "metadata {key}: expected {expected}, got {other:?}"
                    ));
                }
            }
        }
        return Ok(());
    }
    Err(format!("unsupported step: {t}"))
}

/// A value written in a table cell, read as the given type.
fn typed(ty: FlagType, s: &str) -> Result<Value, String> {
    let bad = || format!("{s:?} is not a {ty:?}");
    Ok(match ty {
        FlagType::Boolean => Value::Bool(s.parse().map_err(|_| bad())?),
        FlagType::String => Value::String(s.to_owned()),
        FlagType::Integer => Value::from(s.parse::<i64>().map_err(|_| bad())?),
        FlagType::Float => Value::from(s.parse::<f64>().map_err(|_| bad())?),
        FlagType::Object => serde_json::from_str(s).map_err(|_| bad())?,
    })
}

/// A context value. Cells are literal text: Gherkin's only escapes are `\|`, `\\` and `\n`, so
/// `A\u0000B` is six characters, as the testbed's own runners read it.
fn context_value(ty: FlagType, s: &str) -> Result<Value, String> {
    typed(ty, s)
}

/// Equality with numbers compared by value (`0.0` matches `0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_split_on_literal_pieces_even_when_values_hold_quotes() {
        assert_eq!(
            holes(
                r#"the resolved details value should be "{"a": "b"}""#,
                r#"the resolved details value should be "{}""#
            ),
            Some(vec![r#"{"a": "b"}"#])
        );
        assert_eq!(holes("x", "y{}"), None);
    }

    #[test]
    fn unknown_steps_fail_the_row() {
        struct Never;
        impl Resolver for Never {
            fn resolve(&mut self, _: &Request) -> Result<Outcome, String> {
                Ok(Outcome::default())
            }
        }
        let rows = gherkin::parse(
            "x.feature",
            "Feature: x\n Scenario: s\n  Given a String-flag with key \"k\" and a default value \"d\"\n  When the flag was evaluated with details\n  Then something unheard of\n",
        );
        let report = run(
            &Suite {
                name: "t",
                flags: Value::Null,
                static_context: Map::new(),
                fractional: Fractional::V2,
                rows,
            },
            &mut Never,
        );
        assert_eq!(report.failed(), 1);
    }
}
