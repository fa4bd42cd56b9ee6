//! Evaluation metadata as a compiled flag holds it: an immutable list of `(key, value)` pairs
//! sorted by key.
//!
//! Every compiled flag with metadata of its own keeps one, so its size is paid once per flag in
//! every snapshot. A `serde_json::Map` (a `BTreeMap` with an eleven-slot node) costs about 830
//! bytes for a flag's usual two entries; a boxed slice costs its entries and nothing more, which
//! is what keeps a 100,000-flag namespace under 300 MB. Lookups binary-search, and serialization
//! writes a JSON object in key order, as the map did.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Immutable, key-sorted metadata (see the module docs). Serializes as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(Box<[(Box<str>, Value)]>);

impl Metadata {
    /// `overlay`'s entries over `base`'s: a key in both takes `overlay`'s value.
    #[must_use]
    pub fn overlaid(base: &Metadata, overlay: &Map<String, Value>) -> Metadata {
        let mut entries: Vec<(Box<str>, Value)> = base
            .iter()
            .filter(|(k, _)| !overlay.contains_key(*k))
            .map(|(k, v)| (k.into(), v.clone()))
            .chain(overlay.iter().map(|(k, v)| (k.as_str().into(), v.clone())))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Metadata(entries.into_boxed_slice())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as a JSON map.
    #[must_use]
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }
}

impl From<&Map<String, Value>> for Metadata {
    fn from(map: &Map<String, Value>) -> Self {
        Metadata::overlaid(&Metadata::default(), map)
    }
}

impl From<Map<String, Value>> for Metadata {
    fn from(map: Map<String, Value>) -> Self {
        let mut entries: Vec<(Box<str>, Value)> = map
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v))
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Metadata(entries.into_boxed_slice())
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn an_overlay_wins_over_the_base_key_by_key_and_keeps_key_order() {
        let base = Metadata::from(map(json!({"flagSetId": "s", "team": "base", "z": 1})));
        let m = Metadata::overlaid(&base, &map(json!({"team": "own", "a": true})));
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "flagSetId", "team", "z"]);
        assert_eq!(m.get("team"), Some(&json!("own")));
        assert_eq!(m.get("flagSetId"), Some(&json!("s")));
        assert_eq!(m.get("missing"), None);
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn it_serializes_exactly_as_the_json_map_it_came_from() {
        let source = map(json!({"owner": "payments", "weight": 2.5, "beta": false, "a": "x"}));
        let m = Metadata::from(&source);
        let m_text = serde_json::to_string(&m).expect("metadata serializes");
        let source_text = serde_json::to_string(&source).expect("a map serializes");
        assert_eq!(m_text, source_text);
        assert_eq!(m.to_map(), source);
        let empty = serde_json::to_string(&Metadata::default()).expect("metadata serializes");
        assert_eq!(empty, "{}");
    }
}
