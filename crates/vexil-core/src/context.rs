//! Evaluation contexts parsed straight from JSON into engine data.
//!
//! [`FlagSet::evaluate`](crate::FlagSet::evaluate) takes the context as a `serde_json::Value`,
//! which a transport must build first: a map node, a `String` per key and per string value, all
//! dropped again right after the evaluation converted them to engine data. A transport that has
//! the context as JSON text (OFREP) can instead read it with a [`ContextSeed`] into a
//! [`ContextArena`]: strings stay in the request's bytes (or go into the arena, if they had
//! escapes), and [`FlagSet::evaluate_parsed`](crate::FlagSet::evaluate_parsed) evaluates the
//! result exactly as `evaluate` evaluates the `Value` the same text parses to:
//!
//! - numbers as the `Value` converts them (integers that fit an `i64` stay integers, any other
//!   number is a float);
//! - object members in key order with the last of repeated keys winning, as a `Value` map
//!   keeps them;
//! - the same nesting check (the JSON parser caps nesting below it anyway);
//! - and, since the JSON parser itself finds every syntax error, the same texts are malformed,
//!   with the same messages.

use std::cell::RefCell;

use bumpalo::Bump;
use datalogic_rs::DataValue;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Where parsed contexts live. Cheap to reuse: see [`with_context_arena`].
#[derive(Debug, Default)]
pub struct ContextArena(Bump);

impl ContextArena {
    /// An empty arena.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frees everything parsed into the arena, keeping its memory for the next context.
    pub fn reset(&mut self) {
        self.0.reset();
    }
}

thread_local! {
    /// One arena per thread, emptied after each use.
    static CONTEXT_ARENA: RefCell<ContextArena> = RefCell::new(ContextArena(Bump::with_capacity(1024)));
}

/// Runs `f` with this thread's context arena, and empties the arena afterwards. `f` must not
/// call `with_context_arena` itself (it would panic: the arena is in use).
pub fn with_context_arena<R>(f: impl FnOnce(&ContextArena) -> R) -> R {
    CONTEXT_ARENA.with(|cell| {
        let mut arena = cell.borrow_mut();
        let r = f(&arena);
        arena.reset();
        r
    })
}

/// An evaluation context (a JSON object) as engine data.
#[derive(Debug, Clone, Copy)]
pub struct ParsedContext<'a> {
    /// The members in key order, each key once.
    pub(crate) entries: &'a [(&'a str, DataValue<'a>)],
    /// Levels of nesting, the object itself included (see `validate::deeper_than`).
    pub(crate) height: usize,
}

impl ParsedContext<'_> {
    /// The empty context (what a missing or `null` context means).
    pub fn empty() -> Self {
        Self {
            entries: &[],
            height: 1,
        }
    }

    /// How many members the context has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the context has no members.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A JSON value read as an evaluation context: an object, `null`, or something else.
#[derive(Debug, Clone, Copy)]
pub enum ParsedValue<'a> {
    /// An object: the context.
    Object(ParsedContext<'a>),
    /// `null`.
    Null,
    /// Anything else, by its type name (`validate::type_name`'s names).
    Other(&'static str),
}

/// Reads one JSON value as a [`ParsedValue`] into `arena`. The value is read whole whatever
/// it is, so it can sit inside a larger document.
#[derive(Debug, Clone, Copy)]
pub struct ContextSeed<'a> {
    arena: &'a Bump,
}

impl<'a> ContextSeed<'a> {
    /// A seed that parses into `arena`.
    pub fn new(arena: &'a ContextArena) -> Self {
        Self { arena: &arena.0 }
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for ContextSeed<'a> {
    type Value = ParsedValue<'a>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let (value, height) = DataSeed { arena: self.arena }.deserialize(d)?;
        Ok(match value {
            DataValue::Object(entries) => ParsedValue::Object(ParsedContext { entries, height }),
            DataValue::Null => ParsedValue::Null,
            DataValue::Bool(_) => ParsedValue::Other("boolean"),
            DataValue::Number(_) => ParsedValue::Other("number"),
            DataValue::String(_) => ParsedValue::Other("string"),
            DataValue::Array(_) => ParsedValue::Other("array"),
        })
    }
}

/// Reads any JSON value as engine data, with its height (levels of nesting).
#[derive(Clone, Copy)]
struct DataSeed<'a> {
    arena: &'a Bump,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for DataSeed<'a> {
    type Value = (DataValue<'a>, usize);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for DataSeed<'a> {
    type Value = (DataValue<'a>, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((DataValue::Null, 1))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
        Ok((DataValue::Bool(b), 1))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok((DataValue::from_i64(n), 1))
    }

    /// As `Number::as_i64`, then `as_f64`: above `i64::MAX` a whole number becomes a float.
    #[expect(
        clippy::cast_precision_loss,
        reason = "exactly what `serde_json::Number::as_f64` does for these"
    )]
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok((
            i64::try_from(n).map_or_else(|_| DataValue::from_f64(n as f64), DataValue::from_i64),
            1,
        ))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok((DataValue::from_f64(n), 1))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok((DataValue::String(s), 1))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok((DataValue::String(self.arena.alloc_str(s)), 1))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items =
            bumpalo::collections::Vec::with_capacity_in(seq.size_hint().unwrap_or(0), self.arena);
        let mut height = 0;
        while let Some((item, h)) = seq.next_element_seed(self)? {
            items.push(item);
            height = height.max(h);
        }
        Ok((DataValue::Array(items.into_bump_slice()), height + 1))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = bumpalo::collections::Vec::with_capacity_in(8, self.arena);
        let mut height = 0;
        while let Some(key) = map.next_key_seed(KeySeed { arena: self.arena })? {
            let (value, h) = map.next_value_seed(self)?;
            members.push((key, value));
            height = height.max(h);
        }
        Ok((
            DataValue::Object(in_key_order(members).into_bump_slice()),
            height + 1,
        ))
    }
}

/// Object members as a `serde_json::Map` (a `BTreeMap`) holds them: sorted by key, and of
/// repeated keys only the last.
fn in_key_order<'a>(
    mut members: bumpalo::collections::Vec<'a, (&'a str, DataValue<'a>)>,
) -> bumpalo::collections::Vec<'a, (&'a str, DataValue<'a>)> {
    /// Up to this many members are sorted by insertion: no scratch space, and fewer steps than
    /// the general sort for the handful of attributes a context usually has.
    const INSERTION: usize = 16;
    // Both sorts are stable: of equal keys, the last written stays last.
    if members.len() <= INSERTION {
        for i in 1..members.len() {
            let mut j = i;
            while j > 0 && members[j - 1].0 > members[j].0 {
                members.swap(j - 1, j);
                j -= 1;
            }
        }
    } else {
        members.sort_by(|a, b| a.0.cmp(b.0));
    }
    if members.windows(2).all(|w| w[0].0 != w[1].0) {
        return members;
    }
    let mut kept = 0;
    for i in 0..members.len() {
        let last_of_its_key = members.get(i + 1).is_none_or(|next| next.0 != members[i].0);
        if last_of_its_key {
            members.swap(kept, i);
            kept += 1;
        }
    }
    members.truncate(kept);
    members
}

/// A member name: borrowed from the input, or copied into the arena if it had escapes.
struct KeySeed<'a> {
    arena: &'a Bump,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for KeySeed<'a> {
    type Value = &'a str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for KeySeed<'a> {
    type Value = &'a str;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(s)
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(self.arena.alloc_str(s))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{FlagSet, FlagSetOptions, model::FlagDocument, model::Schema};

    fn parse<'a>(arena: &'a ContextArena, text: &'a str) -> ParsedValue<'a> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = ContextSeed::new(arena)
            .deserialize(&mut de)
            .expect("valid JSON");
        de.end().expect("nothing after the value");
        v
    }

    fn object<'a>(arena: &'a ContextArena, text: &'a str) -> ParsedContext<'a> {
        match parse(arena, text) {
            ParsedValue::Object(ctx) => ctx,
            other => panic!("not an object: {other:?}"),
        }
    }

    /// Engine data printed with its number kinds (`Debug`: `Integer(1)` is not `Float(1.0)`).
    fn printed(v: &DataValue<'_>) -> String {
        format!("{v:?}")
    }

    /// The engine data `evaluate` makes of the `Value` of `text`.
    fn expected(text: &str) -> String {
        let value: Value = serde_json::from_str(text).expect("json");
        printed(&crate::evaluate::container_to_data(&Bump::new(), &value))
    }

    #[test]
    fn objects_come_out_as_a_value_map_holds_them() {
        let text = r#"{"b": 1, "a": {"y": [1, 2.5, "\u0041"], "x": null}, "b": 2, "c\n": true, "a\u0062": {}}"#;
        let arena = ContextArena::new();
        let ctx = object(&arena, text);
        assert_eq!(printed(&DataValue::Object(ctx.entries)), expected(text));
        let keys: Vec<&str> = ctx.entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "ab", "b", "c\n"]);
        let value: Value = serde_json::from_str(text).expect("json");
        for limit in 0..6 {
            assert_eq!(
                ctx.height > limit,
                crate::validate::deeper_than(&value, limit),
                "{limit}"
            );
        }
    }

    #[test]
    fn large_objects_with_repeated_keys_come_out_as_a_value_map_holds_them() {
        let members: Vec<String> = (0..40)
            .map(|i| format!("\"k{}\": {i}", (i * 7) % 23))
            .collect();
        let text = format!("{{{}}}", members.join(", "));
        let arena = ContextArena::new();
        assert_eq!(
            printed(&DataValue::Object(object(&arena, &text).entries)),
            expected(&text)
        );
    }

    #[test]
    fn other_values_are_named_like_type_name() {
        let arena = ContextArena::new();
        for (text, name) in [
            ("[1, {}]", "array"),
            ("\"x\"", "string"),
            ("1", "number"),
            ("-1.5", "number"),
            ("true", "boolean"),
        ] {
            let value: Value = serde_json::from_str(text).expect("json");
            assert_eq!(name, crate::validate::type_name(&value));
            assert!(
                matches!(parse(&arena, text), ParsedValue::Other(n) if n == name),
                "{text}"
            );
        }
        assert!(matches!(parse(&arena, "null"), ParsedValue::Null));
    }

    #[test]
    fn numbers_convert_as_value_numbers_do() {
        let text = r#"{"big": 18446744073709551615, "max": 9223372036854775807, "min": -9223372036854775808, "neg": -3, "f": 1.0, "e": 1e3, "g": 0.1}"#;
        let arena = ContextArena::new();
        let parsed = printed(&DataValue::Object(object(&arena, text).entries));
        assert_eq!(parsed, expected(text));
        assert!(parsed.contains("Float(1.8446744073709552e19)"), "{parsed}");
        assert!(parsed.contains("Integer(9223372036854775807)"), "{parsed}");
    }

    /// Evaluating a parsed context gives what evaluating the `Value` of the same text gives,
    /// for every flag of a set whose rules read strings, numbers, nesting and `$flagd`.
    #[test]
    fn evaluating_a_parsed_context_equals_evaluating_its_value() {
        let doc = json!({
            "flags": {
                "tier": {"state": "ENABLED", "variants": {"gold": 1, "other": 2}, "defaultVariant": "other",
                    "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "gold", "other"]}},
                "nested": {"state": "ENABLED", "variants": {"yes": true, "no": false}, "defaultVariant": "no",
                    "targeting": {"if": [{">": [{"var": "user.age"}, 30]}, "yes", "no"]}},
                "key": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                    "targeting": {"if": [{"==": [{"var": "$flagd.flagKey"}, "key"]}, "b", "a"]}},
                "split": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                    "targeting": {"fractional": [{"var": "targetingKey"}, ["a", 50], ["b", 50]]}},
                "plain": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"},
                "off": {"state": "DISABLED", "variants": {"on": true}, "defaultVariant": "on"}
            }
        });
        let loaded = FlagDocument::from_value(&doc, Schema::Flagd, crate::TargetingPolicy::Warn)
            .expect("a document");
        let set = FlagSet::compile(&loaded.document, &FlagSetOptions::default());
        let contexts = [
            r#"{"tier": "gold", "user": {"age": 31}, "targetingKey": "user-1"}"#,
            r#"{"tier": "silver", "user": {"age": 12.5}, "targetingKey": "user-2", "tier": "gold"}"#,
            r#"{"$flagd": {"flagKey": "other"}, "targetingKey": "u\u00e9"}"#,
            r#"{}"#,
        ];
        let arena = ContextArena::new();
        for text in contexts {
            let ctx = object(&arena, text);
            let value: Value = serde_json::from_str(text).expect("json");
            for key in ["tier", "nested", "key", "split", "plain", "off", "missing"] {
                assert_eq!(
                    set.evaluate_parsed_at(key, &ctx, 7),
                    set.evaluate_at(key, &value, 7),
                    "{key} with {text}"
                );
            }
        }
    }
}
