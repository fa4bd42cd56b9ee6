//! flagd's fractional bucketing v3, as the `fractional_v3` custom operator.
//!
//! Implements the accepted flagd ADR "Harden Hashing Consistency And Add Support For Non-string
//! Attributes in Fractional Evaluation" (`docs/architecture-decisions/fractional-non-string-rand-units.md`
//! in open-feature/flagd). v2 hashed the UTF-8 bytes of a bucketing *string*; v3 hashes the
//! deterministic CBOR encoding (RFC 8949 §4.2.1) of any JSON value, so `12345`, `true` or an
//! object bucket identically in every provider and no attribute has to be cast to a string first.
//!
//! Choosing the hash input from the pre-evaluated arguments:
//!
//! * first argument `null` (typically a `var` of a missing attribute): no result;
//! * first argument an array: the shorthand form; every argument is a bucket and the input is the
//!   two-element array `[$flagd.flagKey, targetingKey]`. `targetingKey` must be a non-empty
//!   string, otherwise there is no result;
//! * anything else (string, number, boolean, object): the explicit form; that value is the input
//!   and the remaining arguments are the buckets.
//!
//! The input is hashed with murmur3 x86_32, seed 0, and the bucket is chosen exactly as in v2:
//! `(hash * total_weight) >> 32` located among the cumulative weights. "No result" is `null`,
//! which the evaluator turns into the flag's default variant.

use std::hash::Hasher as _;

use bumpalo::Bump;
use datalogic_rs::DataValue;
use datalogic_rs::datavalue::NumberValue;
use datalogic_rs::operator::EvalContext;

/// Containers nested deeper than this make the input unencodable (and the operator `null`), so a
/// hostile context cannot overflow the stack through the recursive encoder.
const MAX_DEPTH: usize = 128;

/// flagd rejects weight sums above `i32::MAX`; it also keeps `hash * total` below 2^63.
const MAX_TOTAL_WEIGHT: u64 = 0x7fff_ffff;

/// Maps with up to this many entries are ordered in a stack buffer; larger ones spill to the heap.
const INLINE_MAP_ENTRIES: usize = 16;

static NULL: DataValue<'static> = DataValue::Null;

/// The v3 `fractional` operator. The engine registers it as `fractional_v3` and rewrites
/// `fractional` to that name when v3 bucketing is selected.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FractionalV3;

impl datalogic_rs::CustomOperator for FractionalV3 {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        _arena: &'a Bump,
    ) -> datalogic_rs::Result<&'a DataValue<'a>> {
        // flagd reports bad fractional input by returning null (default variant), never by
        // failing the whole evaluation, so every problem maps to `NULL` here.
        Ok(fractional(args, ctx.root_input()).unwrap_or(&NULL))
    }
}

/// The operator proper: the chosen variant, or `None` for flagd's "no result".
fn fractional<'a>(
    args: &[&'a DataValue<'a>],
    root: &'a DataValue<'a>,
) -> Option<&'a DataValue<'a>> {
    let (&first, rest) = args.split_first()?;
    let (explicit_input, buckets) = match first {
        DataValue::Null => return None,
        DataValue::Array(_) => (None, args),
        _ => (Some(first), rest),
    };

    // Validate every bucket before hashing: a malformed rule must fail the same way whatever
    // the input hashes to.
    let mut total: u64 = 0;
    for bucket in buckets {
        total = total.checked_add(bucket_weight(bucket)?)?;
        if total > MAX_TOTAL_WEIGHT {
            return None;
        }
    }
    if total == 0 {
        return None;
    }

    let hash = match explicit_input {
        Some(input) => bucket_hash(input)?,
        None => {
            let targeting_key = match field(root, "targetingKey")? {
                DataValue::String(key) if !key.is_empty() => *key,
                _ => return None,
            };
            // Like flagd's Go evaluator, fall back to an empty flag key when `$flagd` is absent:
            // our evaluator always supplies it, but standalone callers may not.
            let flag_key = field(root, "$flagd")
                .and_then(|flagd| field(flagd, "flagKey"))
                .and_then(DataValue::as_str)
                .unwrap_or("");
            // The ADR hashes the pair as a CBOR array, not v2's concatenation, under which
            // "ab" + "c" and "a" + "bc" collided.
            let pair = [
                DataValue::String(flag_key),
                DataValue::String(targeting_key),
            ];
            bucket_hash(&DataValue::Array(&pair))?
        }
    };

    let point = (u64::from(hash) * total) >> 32;
    let mut range_end: u64 = 0;
    for bucket in buckets {
        range_end += bucket_weight(bucket)?;
        if point < range_end {
            return bucket.as_array()?.first();
        }
    }
    // Unreachable: `point < total` and the ranges cover `0..total`.
    None
}

/// The weight of one `[variant, weight?]` bucket, or `None` if the bucket is malformed.
///
/// Follows the v3 reference providers: the variant must be a scalar (string, number, boolean
/// or null), the weight an integral number defaulting to 1, and negative weights clamp to 0
/// because rollout arithmetic can produce them. Elements past the weight are ignored, as in
/// flagd's Go and Java evaluators.
fn bucket_weight(bucket: &DataValue<'_>) -> Option<u64> {
    let entry = bucket.as_array()?;
    match entry.first()? {
        DataValue::Array(_) | DataValue::Object(_) => return None,
        DataValue::Null | DataValue::Bool(_) | DataValue::Number(_) | DataValue::String(_) => {}
    }
    match entry.get(1) {
        None => Some(1),
        Some(DataValue::Number(NumberValue::Integer(w))) => Some(u64::try_from(*w).unwrap_or(0)),
        // A float weight is fine if integral; `as` saturates, and any huge value then fails
        // the total check.
        Some(DataValue::Number(NumberValue::Float(w))) if w.fract() == 0.0 => {
            Some(if *w > 0.0 { *w as u64 } else { 0 })
        }
        Some(_) => None,
    }
}

/// Looks up `key` in an object. The last occurrence wins, as in JSON parsers that tolerate
/// duplicate keys.
fn field<'a>(value: &'a DataValue<'a>, key: &str) -> Option<&'a DataValue<'a>> {
    value
        .as_object()?
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// murmur3 x86_32 (seed 0) of the deterministic CBOR encoding of `input`, streamed straight into
/// the hasher so the hot path allocates nothing.
fn bucket_hash(input: &DataValue<'_>) -> Option<u32> {
    let mut hasher = mur3::Hasher32::with_seed(0);
    encode_bucket_input(input, &mut hasher).ok()?;
    Some(hasher.finish32())
}

/// The input nests containers deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NestingTooDeep;

/// Where CBOR bytes go: a buffer (tests, diagnostics) or the hasher directly.
pub(crate) trait CborSink {
    fn put(&mut self, bytes: &[u8]);
}

impl CborSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl CborSink for mur3::Hasher32 {
    fn put(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

/// Writes the flagd v3 bucketing encoding of `value` to `out` (a `Vec<u8>` or a hasher).
///
/// This is RFC 8949 deterministic CBOR ("core deterministic encoding requirements") after the
/// ADR's number normalization:
///
/// * `null` `f6`, `false` `f4`, `true` `f5`; strings as UTF-8 text strings (major type 3);
///   arrays major type 4; objects major type 5 with keys in bytewise order of their encodings
///   (for text keys: shorter first, then by bytes), duplicates resolved last-wins;
/// * a number with no fractional part in `[-2^63, 2^64 - 1]` is an integer (major type 0 or 1),
///   whatever its JSON spelling: `1.0`, `1` and `-0.0`/`0.0`/`0` hash alike;
/// * any other number is a float in its shortest exact width (half, single, double; half-width
///   subnormals included), NaN as `f9 7e00`;
/// * all arguments and lengths are as short as possible, no indefinite lengths.
///
/// # Errors
/// [`NestingTooDeep`] past [`MAX_DEPTH`] nested containers; `out` then holds a partial encoding
/// and must be discarded.
pub(crate) fn encode_bucket_input<S: CborSink + ?Sized>(
    value: &DataValue<'_>,
    out: &mut S,
) -> Result<(), NestingTooDeep> {
    encode_value(value, out, 0)
}

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;

fn encode_value<S: CborSink + ?Sized>(
    value: &DataValue<'_>,
    out: &mut S,
    depth: usize,
) -> Result<(), NestingTooDeep> {
    match value {
        DataValue::Null => out.put(&[0xf6]),
        DataValue::Bool(false) => out.put(&[0xf4]),
        DataValue::Bool(true) => out.put(&[0xf5]),
        DataValue::Number(NumberValue::Integer(i)) => encode_int(*i, out),
        DataValue::Number(NumberValue::Float(f)) => encode_f64(*f, out),
        DataValue::String(s) => encode_text(s, out),
        DataValue::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(NestingTooDeep);
            }
            encode_head(MAJOR_ARRAY, items.len() as u64, out);
            for item in *items {
                encode_value(item, out, depth + 1)?;
            }
        }
        DataValue::Object(entries) => {
            if depth >= MAX_DEPTH {
                return Err(NestingTooDeep);
            }
            encode_map(entries, out, depth)?;
        }
    }
    Ok(())
}

/// The shortest head for `major` with argument `arg` (RFC 8949 §3, preferred serialization).
fn encode_head<S: CborSink + ?Sized>(major: u8, arg: u64, out: &mut S) {
    let mt = major << 5;
    if arg < 24 {
        out.put(&[mt | arg as u8]);
    } else if let Ok(a) = u8::try_from(arg) {
        out.put(&[mt | 24, a]);
    } else if let Ok(a) = u16::try_from(arg) {
        let [b0, b1] = a.to_be_bytes();
        out.put(&[mt | 25, b0, b1]);
    } else if let Ok(a) = u32::try_from(arg) {
        let [b0, b1, b2, b3] = a.to_be_bytes();
        out.put(&[mt | 26, b0, b1, b2, b3]);
    } else {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = arg.to_be_bytes();
        out.put(&[mt | 27, b0, b1, b2, b3, b4, b5, b6, b7]);
    }
}

fn encode_int<S: CborSink + ?Sized>(i: i64, out: &mut S) {
    match u64::try_from(i) {
        Ok(u) => encode_head(MAJOR_UNSIGNED, u, out),
        // CBOR stores a negative n as -1 - n; for n < 0 that is |n| - 1, which cannot underflow.
        Err(_) => encode_head(MAJOR_NEGATIVE, i.unsigned_abs() - 1, out),
    }
}

fn encode_text<S: CborSink + ?Sized>(s: &str, out: &mut S) {
    encode_head(MAJOR_TEXT, s.len() as u64, out);
    out.put(s.as_bytes());
}

/// 2^63 and 2^64 as f64 (both exact): the ADR's integer range is `[-2^63, 2^64 - 1]`, and an
/// integral f64 is below 2^64 exactly when it is at most 2^64 - 1.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

fn encode_f64<S: CborSink + ?Sized>(f: f64, out: &mut S) {
    // JSON does not tell 1 from 1.0, so the ADR normalizes integral floats to integers; the
    // comparisons are false for NaN and the infinities (whose `fract()` is NaN anyway).
    if f.fract() == 0.0 {
        if (0.0..TWO_POW_64).contains(&f) {
            // Also catches -0.0, which the ADR maps to unsigned 0.
            encode_head(MAJOR_UNSIGNED, f as u64, out);
            return;
        }
        if (-TWO_POW_63..0.0).contains(&f) {
            encode_int(f as i64, out);
            return;
        }
    }
    encode_float_shortest(f, out);
}

/// Preferred serialization of a float: the narrowest IEEE 754 width that holds `f` exactly.
fn encode_float_shortest<S: CborSink + ?Sized>(f: f64, out: &mut S) {
    if f.is_nan() {
        // Deterministic encoding collapses every NaN payload to the canonical quiet NaN.
        out.put(&[0xf9, 0x7e, 0x00]);
    } else if let Some(half) = f64_to_f16_exact(f) {
        let [b0, b1] = half.to_be_bytes();
        out.put(&[0xf9, b0, b1]);
    } else if f64::from(f as f32) == f {
        let [b0, b1, b2, b3] = (f as f32).to_bits().to_be_bytes();
        out.put(&[0xfa, b0, b1, b2, b3]);
    } else {
        let [b0, b1, b2, b3, b4, b5, b6, b7] = f.to_bits().to_be_bytes();
        out.put(&[0xfb, b0, b1, b2, b3, b4, b5, b6, b7]);
    }
}

/// The IEEE 754 binary16 bits of `f` if it converts without loss (NaN excluded), subnormal
/// halves included: RFC 8949 preferred serialization does not stop at normal numbers.
fn f64_to_f16_exact(f: f64) -> Option<u16> {
    const MANTISSA_BITS: u32 = 52;
    const MANTISSA_MASK: u64 = (1 << MANTISSA_BITS) - 1;
    // The low mantissa bits a half cannot hold (52 - 10).
    const DROPPED_BITS: u32 = 42;

    let bits = f.to_bits();
    let sign = if bits >> 63 == 1 { 0x8000 } else { 0 };
    let biased_exp = (bits >> MANTISSA_BITS) & 0x7ff;
    let mantissa = bits & MANTISSA_MASK;
    if biased_exp == 0x7ff {
        // Infinity fits a half; NaN is the caller's business.
        return (mantissa == 0).then_some(sign | 0x7c00);
    }
    if biased_exp == 0 {
        // Zero, or a double subnormal far below the smallest half subnormal (2^-24).
        return (mantissa == 0).then_some(sign);
    }
    let exp = biased_exp as i32 - 1023;
    match exp {
        // Normal half: 5-bit exponent, 10-bit mantissa.
        -14..=15 => {
            if mantissa & ((1 << DROPPED_BITS) - 1) != 0 {
                return None;
            }
            Some(sign | (((exp + 15) as u16) << 10) | (mantissa >> DROPPED_BITS) as u16)
        }
        // Subnormal half: the value is m * 2^-24 with m < 2^10, so the full 53-bit
        // significand must lose no set bit when shifted right by 28 - exp (43..=52).
        -24..=-15 => {
            let significand = mantissa | (1 << MANTISSA_BITS);
            let shift = (28 - exp) as u32;
            if significand & ((1 << shift) - 1) != 0 {
                return None;
            }
            Some(sign | (significand >> shift) as u16)
        }
        _ => None,
    }
}

/// One object entry, in the order it will be encoded.
#[derive(Clone, Copy)]
struct MapEntry<'v, 'a> {
    key: &'a str,
    value: &'v DataValue<'a>,
    position: usize,
}

/// Deterministic order of text keys: bytewise order of their CBOR encodings. The head encodes
/// the length and sorts by it, so this is "shorter first, then bytewise" (which is also
/// RFC 7049's canonical order, for text keys the two coincide). Ties (duplicate keys) fall back
/// to position so the last occurrence can be picked.
fn entry_order(a: &MapEntry<'_, '_>, b: &MapEntry<'_, '_>) -> std::cmp::Ordering {
    a.key
        .len()
        .cmp(&b.key.len())
        .then_with(|| a.key.as_bytes().cmp(b.key.as_bytes()))
        .then_with(|| a.position.cmp(&b.position))
}

fn encode_map<'a, S: CborSink + ?Sized>(
    entries: &[(&'a str, DataValue<'a>)],
    out: &mut S,
    depth: usize,
) -> Result<(), NestingTooDeep> {
    const PLACEHOLDER: MapEntry<'static, 'static> = MapEntry {
        key: "",
        value: &DataValue::Null,
        position: 0,
    };
    let mut inline = [PLACEHOLDER; INLINE_MAP_ENTRIES];
    let mut spilled;
    let sorted: &mut [MapEntry<'_, 'a>] = match inline.get_mut(..entries.len()) {
        Some(slots) => slots,
        None => {
            spilled = vec![PLACEHOLDER; entries.len()];
            &mut spilled
        }
    };
    for (position, (slot, (key, value))) in sorted.iter_mut().zip(entries).enumerate() {
        *slot = MapEntry {
            key,
            value,
            position,
        };
    }
    // Unstable sort is fine (positions make the order total) and never allocates.
    sorted.sort_unstable_by(entry_order);
    let sorted: &[MapEntry<'_, 'a>] = sorted;

    // Deterministic CBOR forbids duplicate keys; JSON parsers keep the last one, and so do we.
    let is_last_of_key = |i: usize| match (sorted.get(i), sorted.get(i + 1)) {
        (Some(this), Some(next)) => this.key != next.key,
        _ => true,
    };
    let unique = (0..sorted.len()).filter(|&i| is_last_of_key(i)).count();
    encode_head(MAJOR_MAP, unique as u64, out);
    for (i, entry) in sorted.iter().enumerate() {
        if is_last_of_key(i) {
            encode_text(entry.key, out);
            encode_value(entry.value, out, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use datalogic_rs::Engine;
    use serde_json::{Map, Value, json};

    use super::*;

    fn encode(value: &DataValue<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bucket_input(value, &mut out).expect("test values are shallow");
        out
    }

    fn encode_json(json: &str) -> Vec<u8> {
        let arena = Bump::new();
        let value = DataValue::from_str(json, &arena).expect("test JSON is valid");
        encode(&value)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn encoded_hex_of_f64(f: f64) -> String {
        hex(&encode(&DataValue::Number(NumberValue::Float(f))))
    }

    // Expected bytes are RFC 8949 Appendix A examples; where the ADR's number normalization
    // applies, the example is the integer the float normalizes to.
    #[test]
    fn integers_use_the_shortest_head() {
        for (json, expected) in [
            ("0", "00"),
            ("1", "01"),
            ("10", "0a"),
            ("23", "17"),
            ("24", "1818"),
            ("25", "1819"),
            ("100", "1864"),
            ("255", "18ff"),
            ("256", "190100"),
            ("1000", "1903e8"),
            ("65535", "19ffff"),
            ("65536", "1a00010000"),
            ("1000000", "1a000f4240"),
            ("4294967295", "1affffffff"),
            ("4294967296", "1b0000000100000000"),
            ("1000000000000", "1b000000e8d4a51000"),
            ("9223372036854775807", "1b7fffffffffffffff"),
            ("-1", "20"),
            ("-10", "29"),
            ("-24", "37"),
            ("-25", "3818"),
            ("-100", "3863"),
            ("-1000", "3903e7"),
            ("-9223372036854775808", "3b7fffffffffffffff"),
        ] {
            assert_eq!(hex(&encode_json(json)), expected, "{json}");
        }
    }

    #[test]
    fn integral_floats_normalize_to_integers() {
        for (f, expected) in [
            (0.0, "00"),
            (-0.0, "00"),
            (1.0, "01"),
            (-4.0, "23"),
            (65504.0, "19ffe0"),
            (100_000.0, "1a000186a0"),
            // 2^63 is past i64 but inside the ADR's unsigned range.
            (TWO_POW_63, "1b8000000000000000"),
            (-TWO_POW_63, "3b7fffffffffffffff"),
            // The largest double below 2^64.
            (18_446_744_073_709_549_568.0, "1bfffffffffffff800"),
        ] {
            assert_eq!(encoded_hex_of_f64(f), expected, "{f}");
        }
    }

    #[test]
    fn other_floats_use_the_shortest_exact_width() {
        for (f, expected) in [
            (0.5, "f93800"),
            (1.5, "f93e00"),
            (-1.5, "f9be00"),
            (1.1, "fb3ff199999999999a"),
            (-4.1, "fbc010666666666666"),
            (0.000_061_035_156_25, "f90400"),
            (5.960_464_477_539_063e-8, "f90001"),
            (3.402_823_466_385_288_6e38, "fa7f7fffff"),
            (1.0e300, "fb7e37e43c8800759c"),
            // Out of the integer range, so floats even though integral.
            (TWO_POW_64, "fa5f800000"),
            (-TWO_POW_64, "fadf800000"),
            (1.0e20, "fb4415af1d78b58c40"),
            (f64::INFINITY, "f97c00"),
            (f64::NEG_INFINITY, "f9fc00"),
            (f64::NAN, "f97e00"),
            (f64::from_bits(1), "fb0000000000000001"),
        ] {
            assert_eq!(encoded_hex_of_f64(f), expected, "{f:e}");
        }
    }

    #[test]
    fn scalars_strings_arrays_and_maps() {
        for (json, expected) in [
            ("false", "f4"),
            ("true", "f5"),
            ("null", "f6"),
            (r#""""#, "60"),
            (r#""a""#, "6161"),
            (r#""IETF""#, "6449455446"),
            (r#""\"\\""#, "62225c"),
            (r#""\u00fc""#, "62c3bc"),
            (r#""\u6c34""#, "63e6b0b4"),
            (r#""\ud800\udd51""#, "64f0908591"),
            ("[]", "80"),
            ("[1, 2, 3]", "83010203"),
            ("[1, [2, 3], [4, 5]]", "8301820203820405"),
            ("{}", "a0"),
            (r#"{"a": 1, "b": [2, 3]}"#, "a26161016162820203"),
            (r#"["a", {"b": "c"}]"#, "826161a161626163"),
            (
                r#"{"e": "E", "d": "D", "c": "C", "b": "B", "a": "A"}"#,
                "a56161614161626142616361436164614461656145",
            ),
            // Shorter keys sort first, whatever their bytes.
            (r#"{"aa": 2, "z": 1}"#, "a2617a0162616102"),
            // Duplicate keys: the last one wins, as in serde_json.
            (r#"{"k": 1, "j": 0, "k": 2}"#, "a2616a00616b02"),
        ] {
            assert_eq!(hex(&encode_json(json)), expected, "{json}");
        }
        // 25 items need a one-byte length argument.
        let items: Vec<String> = (1..=25).map(|i| i.to_string()).collect();
        let json = format!("[{}]", items.join(","));
        assert_eq!(
            hex(&encode_json(&json)),
            "98190102030405060708090a0b0c0d0e0f101112131415161718181819"
        );
    }

    #[test]
    fn large_maps_are_ordered_like_small_ones() {
        let keys: Vec<String> = (0..100).map(|i| format!("k{}", (i * 37) % 100)).collect();
        let forward = keys
            .iter()
            .map(|k| format!("\"{k}\": 1"))
            .collect::<Vec<_>>()
            .join(",");
        let backward = keys
            .iter()
            .rev()
            .map(|k| format!("\"{k}\": 1"))
            .collect::<Vec<_>>()
            .join(",");
        let encoded = encode_json(&format!("{{{forward}}}"));
        assert_eq!(encoded, encode_json(&format!("{{{backward}}}")));
        // 100 entries: head b8 64, then "k0".."k9" (3-byte keys) before "k10".. (4-byte keys).
        assert_eq!(
            encoded.get(..6),
            Some(&[0xb8, 0x64, 0x62, b'k', b'0', 0x01][..])
        );
    }

    fn nested_arrays<'a>(levels: usize, arena: &'a Bump) -> DataValue<'a> {
        let mut value = DataValue::Null;
        for _ in 0..levels {
            value = DataValue::Array(arena.alloc_slice_copy(&[value]));
        }
        value
    }

    fn nested_objects<'a>(levels: usize, arena: &'a Bump) -> DataValue<'a> {
        let mut value = DataValue::Null;
        for _ in 0..levels {
            value = DataValue::Object(arena.alloc_slice_copy(&[("k", value)]));
        }
        value
    }

    #[test]
    fn nesting_is_bounded() {
        let arena = Bump::new();
        for nested in [nested_arrays, nested_objects] {
            let mut out = Vec::new();
            assert_eq!(
                encode_bucket_input(&nested(MAX_DEPTH, &arena), &mut out),
                Ok(())
            );
            let too_deep = nested(MAX_DEPTH + 1, &arena);
            assert_eq!(
                encode_bucket_input(&too_deep, &mut Vec::new()),
                Err(NestingTooDeep)
            );
            // Far deeper than any stack could recurse: rejected, not a crash.
            let hostile = nested(1_000_000, &arena);
            assert_eq!(bucket_hash(&hostile), None);
            let first: &DataValue<'_> = arena.alloc(hostile);
            let bucket: &DataValue<'_> =
                arena.alloc(DataValue::Array(arena.alloc_slice_copy(&[
                    DataValue::String("a"),
                    DataValue::from_i64(1),
                ])));
            assert!(fractional(&[first, bucket], &NULL).is_none());
        }
    }

    #[test]
    fn streaming_into_the_hasher_matches_hashing_the_bytes() {
        for json in [
            r#""""#,
            r#""abc""#,
            r#"{"café": "façade", "b": {"résumé": {"ÿ": true}}, "n": [1.5, -2, null]}"#,
            "[1, [2, 3], 4294967296, -1e300, 0.1]",
        ] {
            let bytes = encode_json(json);
            let arena = Bump::new();
            let value = DataValue::from_str(json, &arena).expect("test JSON is valid");
            assert_eq!(
                bucket_hash(&value),
                Some(mur3::murmurhash3_x86_32(&bytes, 0)),
                "{json}"
            );
        }
    }

    /// Decodes the float heads `encode_float_shortest` emits, to check round trips.
    fn decode_float(bytes: &[u8]) -> Option<f64> {
        match bytes {
            [0xf9, b0, b1] => {
                let half = u16::from_be_bytes([*b0, *b1]);
                let sign = if half & 0x8000 == 0 { 1.0 } else { -1.0 };
                let exp = i32::from((half >> 10) & 0x1f);
                let mantissa = f64::from(half & 0x3ff);
                Some(
                    sign * match exp {
                        0 => mantissa * 2f64.powi(-24),
                        31 if mantissa == 0.0 => f64::INFINITY,
                        31 => f64::NAN,
                        _ => (1.0 + mantissa / 1024.0) * 2f64.powi(exp - 15),
                    },
                )
            }
            [0xfa, rest @ ..] => Some(f64::from(f32::from_be_bytes(rest.try_into().ok()?))),
            [0xfb, rest @ ..] => Some(f64::from_be_bytes(rest.try_into().ok()?)),
            _ => None,
        }
    }

    proptest::proptest! {
        #[test]
        fn floats_round_trip_in_the_narrowest_width(bits in proptest::num::u64::ANY) {
            let f = f64::from_bits(bits);
            proptest::prop_assume!(!f.is_nan());
            let mut out = Vec::new();
            encode_float_shortest(f, &mut out);
            let decoded = decode_float(&out);
            proptest::prop_assert_eq!(decoded.map(f64::to_bits), Some(bits));
            // Narrower widths must all lose information.
            if out.len() > 3 {
                proptest::prop_assert!(f64_to_f16_exact(f).is_none());
            }
            if out.len() > 5 {
                proptest::prop_assert!(f64::from(f as f32) != f);
            }
        }

        #[test]
        fn singles_never_take_eight_bytes(bits in proptest::num::u32::ANY) {
            let f = f64::from(f32::from_bits(bits));
            proptest::prop_assume!(!f.is_nan());
            let mut out = Vec::new();
            encode_float_shortest(f, &mut out);
            proptest::prop_assert!(out.len() <= 5);
            proptest::prop_assert_eq!(decode_float(&out).map(f64::to_bits), Some(f.to_bits()));
        }

        #[test]
        fn halves_round_trip_through_the_exactness_check(half in proptest::num::u16::ANY) {
            let f = decode_float(&{
                let [b0, b1] = half.to_be_bytes();
                [0xf9, b0, b1]
            });
            let f = f.unwrap_or(f64::NAN);
            proptest::prop_assume!(!f.is_nan());
            proptest::prop_assert_eq!(f64_to_f16_exact(f), Some(half));
        }
    }

    // ---- flagd-testbed conformance: every `@fractional-v3` example row ----

    fn testbed_dir() -> PathBuf {
        vexil_testkit::testbed::testbed_dir()
    }

    /// One example row with its scenario's steps, placeholders substituted.
    #[derive(Debug)]
    struct Row {
        line: usize,
        steps: Vec<String>,
    }

    /// Gherkin table cell unescaping: only `\|`, `\\` and `\n` are escapes; anything else, such as
    /// the `\u0000` in the UTF-8 examples, is literal text (which is how the flagd providers'
    /// runners read it, and what the expected buckets were computed from).
    fn table_cells(line: &str) -> Vec<String> {
        let inner = line
            .trim()
            .strip_prefix('|')
            .and_then(|l| l.strip_suffix('|'))
            .unwrap_or_default();
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.clone().next() {
                    Some('|') => {
                        cell.push('|');
                        chars.next();
                    }
                    Some('\\') => {
                        cell.push('\\');
                        chars.next();
                    }
                    Some('n') => {
                        cell.push('\n');
                        chars.next();
                    }
                    _ => cell.push('\\'),
                },
                '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
                c => cell.push(c),
            }
        }
        cells.push(cell.trim().to_owned());
        cells
    }

    fn v3_rows(feature: &str) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut pending_tags: Vec<&str> = Vec::new();
        let mut scenario_tags: Vec<&str> = Vec::new();
        let mut example_tags: Vec<&str> = Vec::new();
        let mut steps: Vec<&str> = Vec::new();
        let mut header: Option<Vec<String>> = None;
        let mut in_examples = false;
        for (index, raw) in feature.lines().enumerate() {
            let line = raw.trim();
            if line.starts_with('@') {
                pending_tags = line.split_whitespace().collect();
            } else if line.starts_with("Scenario") {
                scenario_tags = std::mem::take(&mut pending_tags);
                steps.clear();
                in_examples = false;
            } else if line.starts_with("Examples") {
                example_tags = std::mem::take(&mut pending_tags);
                header = None;
                in_examples = true;
            } else if ["Given ", "And ", "When ", "Then "]
                .iter()
                .any(|k| line.starts_with(k))
            {
                steps.push(line);
                in_examples = false;
            } else if line.starts_with('|') && in_examples {
                let cells = table_cells(line);
                let Some(names) = &header else {
                    header = Some(cells);
                    continue;
                };
                if !scenario_tags
                    .iter()
                    .chain(&example_tags)
                    .any(|t| *t == "@fractional-v3")
                {
                    continue;
                }
                let steps = steps
                    .iter()
                    .map(|step| {
                        names
                            .iter()
                            .zip(&cells)
                            .fold((*step).to_owned(), |s, (n, v)| {
                                s.replace(&format!("<{n}>"), v)
                            })
                    })
                    .collect();
                rows.push(Row {
                    line: index + 1,
                    steps,
                });
            }
        }
        rows
    }

    /// `text` without `prefix` and the closing quote: the step's last quoted argument, which
    /// may itself contain quotes (JSON objects).
    fn last_quoted<'s>(text: &'s str, prefix: &str) -> Option<&'s str> {
        text.strip_prefix(prefix)?.strip_suffix('"')
    }

    fn typed_value(kind: &str, raw: &str) -> Value {
        match kind {
            "String" => Value::String(raw.to_owned()),
            "Integer" => json!(raw.parse::<i64>().expect("Integer cell")),
            "Float" => json!(raw.parse::<f64>().expect("Float cell")),
            "Boolean" => json!(raw == "true"),
            "Object" => serde_json::from_str(raw).expect("Object cell"),
            other => panic!("unknown context type {other}"),
        }
    }

    struct Expectation {
        flag: String,
        context: Map<String, Value>,
        value: String,
        reason_default: bool,
    }

    fn interpret(row: &Row) -> Expectation {
        let mut flag = None;
        let mut value = None;
        let mut reason_default = false;
        let mut context = Map::new();
        for step in &row.steps {
            if let Some(rest) = step.strip_prefix("Given a String-flag with key \"") {
                flag = rest.split('"').next().map(str::to_owned);
            } else if let Some(rest) =
                step.strip_prefix("And a context containing a nested property with outer key \"")
            {
                let (outer, rest) = rest.split_once("\" and inner key \"").expect("inner key");
                let (inner, raw) = rest.split_once("\", with value \"").expect("value");
                let raw = raw.strip_suffix('"').expect("closing quote");
                let entry = context
                    .entry(outer)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = entry {
                    map.insert(inner.to_owned(), Value::String(raw.to_owned()));
                }
            } else if let Some(raw) = last_quoted(
                step,
                "And a context containing a targeting key with value \"",
            ) {
                context.insert("targetingKey".to_owned(), Value::String(raw.to_owned()));
            } else if let Some(rest) = step.strip_prefix("And a context containing a key \"") {
                let (key, rest) = rest.split_once("\", with type \"").expect("type");
                let (kind, raw) = rest.split_once("\" and with value \"").expect("value");
                let raw = raw.strip_suffix('"').expect("closing quote");
                context.insert(key.to_owned(), typed_value(kind, raw));
            } else if let Some(raw) =
                last_quoted(step, "Then the resolved details value should be \"")
            {
                value = Some(raw.to_owned());
            } else if step == "Then the reason should be \"DEFAULT\"" {
                reason_default = true;
            }
        }
        Expectation {
            flag: flag.unwrap_or_else(|| panic!("line {}: no flag step", row.line)),
            context,
            value: value.unwrap_or_else(|| panic!("line {}: no value step", row.line)),
            reason_default,
        }
    }

    fn rename_fractional(rule: &mut Value) {
        match rule {
            Value::Object(map) => {
                if let Some(args) = map.remove("fractional") {
                    map.insert("fractional_v3".to_owned(), args);
                }
                map.values_mut().for_each(rename_fractional);
            }
            Value::Array(items) => items.iter_mut().for_each(rename_fractional),
            _ => {}
        }
    }

    #[test]
    fn every_fractional_v3_testbed_row_resolves_as_expected() {
        let dir = testbed_dir();
        let read = |path: &str| {
            std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| {
                panic!(
                    "{path} under {} (set FLAGD_TESTBED_DIR): {e}",
                    dir.display()
                )
            })
        };
        let feature = read("gherkin/targeting.feature");
        let flags: Value =
            serde_json::from_str(&read("flags/custom-ops.json")).expect("custom-ops.json");
        let engine = Engine::builder()
            .add_operator("fractional_v3", FractionalV3)
            .build();

        let rows = v3_rows(&feature);
        // The snapshot (testbed v3.9.0) has 132 such rows; fewer means the parser lost some.
        assert!(rows.len() >= 132, "only {} @fractional-v3 rows", rows.len());

        let mut per_flag: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        for row in &rows {
            let expected = interpret(row);
            let flag = &flags["flags"][&expected.flag];
            let mut rule = flag["targeting"].clone();
            rename_fractional(&mut rule);
            let compiled = engine.compile(&rule).expect("testbed rule compiles");

            let mut context = expected.context.clone();
            context.insert(
                "$flagd".to_owned(),
                json!({"flagKey": expected.flag, "timestamp": 0}),
            );
            let data = Value::Object(context);
            let arena = Bump::new();
            let result = engine
                .evaluate(&compiled, &data, &arena)
                .expect("fractional_v3 never errors");
            let variant = match result {
                DataValue::Null => flag["defaultVariant"].as_str(),
                other => other.as_str(),
            };
            let resolved = variant.and_then(|v| flag["variants"][v].as_str());
            let null_ok = !expected.reason_default || result.is_null();
            if resolved != Some(expected.value.as_str()) || !null_ok {
                failures.push(format!(
                    "line {}: {} with {} -> {:?} (operator returned {result}), expected {:?}",
                    row.line, expected.flag, data, resolved, expected.value
                ));
            }
            *per_flag.entry(expected.flag).or_default() += 1;
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        // Every v3 flag in the snapshot was exercised.
        for flag in [
            "fractional-basic-flag",
            "fractional-flag",
            "fractional-flag-shorthand",
            "fractional-flag-A-shared-seed",
            "fractional-flag-B-shared-seed",
        ] {
            assert!(per_flag.contains_key(flag), "no rows for {flag}");
        }
    }

    // ---- operator semantics beyond the testbed ----

    fn run(rule: &Value, data: &Value) -> Value {
        let engine = Engine::builder()
            .add_operator("fractional_v3", FractionalV3)
            .build();
        let compiled = engine.compile(rule).expect("rule compiles");
        let arena = Bump::new();
        let result = engine
            .evaluate(&compiled, data, &arena)
            .expect("fractional_v3 never errors");
        serde_json::from_str(&result.to_string()).expect("result is JSON")
    }

    #[test]
    fn shorthand_hashes_the_flag_key_and_targeting_key_as_an_array() {
        let bytes = {
            let pair = [DataValue::String("flag"), DataValue::String("user")];
            encode(&DataValue::Array(&pair))
        };
        assert_eq!(hex(&bytes), "8264666c61676475736572");
        // With 1000 one-weight buckets named by index, the chosen name exposes the bucket index.
        let buckets: Vec<Value> = (0..1000).map(|i| json!([i.to_string(), 1])).collect();
        let data = json!({"targetingKey": "user", "$flagd": {"flagKey": "flag"}});
        let hash = mur3::murmurhash3_x86_32(&bytes, 0);
        let expected = ((u64::from(hash) * 1000) >> 32).to_string();
        assert_eq!(
            run(&json!({"fractional_v3": buckets}), &data),
            json!(expected)
        );
    }

    #[test]
    fn invalid_inputs_yield_null() {
        let data = json!({"targetingKey": "user", "$flagd": {"flagKey": "f"}, "n": null});
        for rule in [
            json!({"fractional_v3": []}),
            // Explicit null input (a missing attribute).
            json!({"fractional_v3": [{"var": "missing"}, ["a", 1]]}),
            json!({"fractional_v3": [{"var": "n"}, ["a", 1]]}),
            // No buckets, or only zero weights.
            json!({"fractional_v3": ["key"]}),
            json!({"fractional_v3": ["key", ["a", 0], ["b", -5]]}),
            // Malformed buckets.
            json!({"fractional_v3": ["key", "a"]}),
            json!({"fractional_v3": ["key", []]}),
            json!({"fractional_v3": ["key", [["a"], 1]]}),
            json!({"fractional_v3": ["key", ["a", "1"]]}),
            json!({"fractional_v3": ["key", ["a", 1.5]]}),
            // Weights beyond flagd's i32 total.
            json!({"fractional_v3": ["key", ["a", 2_147_483_647_i64], ["b", 1]]}),
            json!({"fractional_v3": ["key", ["a", 1e300]]}),
        ] {
            assert_eq!(run(&rule, &data), Value::Null, "{rule}");
        }
        // The shorthand needs a non-empty string targeting key.
        let rule = json!({"fractional_v3": [["a", 1]]});
        for data in [
            json!({"$flagd": {"flagKey": "f"}}),
            json!({"targetingKey": "", "$flagd": {"flagKey": "f"}}),
            json!({"targetingKey": 5, "$flagd": {"flagKey": "f"}}),
            json!({"targetingKey": null, "$flagd": {"flagKey": "f"}}),
        ] {
            assert_eq!(run(&rule, &data), Value::Null, "{data}");
        }
    }

    #[test]
    fn weights_default_clamp_and_accept_integral_floats() {
        let data = json!({"targetingKey": "user", "$flagd": {"flagKey": "f"}});
        for rule in [
            json!({"fractional_v3": ["key", ["one", -50], ["two", 100]]}),
            json!({"fractional_v3": ["key", ["one", 0], ["two"]]}),
            json!({"fractional_v3": ["key", ["one", -0.0], ["two", 3.0]]}),
            json!({"fractional_v3": [["one", 0], ["two", 2_147_483_647_i64]]}),
        ] {
            assert_eq!(run(&rule, &data), json!("two"), "{rule}");
        }
    }

    #[test]
    fn variants_may_be_any_scalar() {
        let data = json!({"targetingKey": "user", "$flagd": {"flagKey": "f"}});
        for variant in [json!(true), json!(7), json!(2.5), json!("s")] {
            let rule = json!({"fractional_v3": [12345, [variant.clone(), 1]]});
            assert_eq!(run(&rule, &data), variant);
        }
        let rule = json!({"fractional_v3": [12345, [{"var": "missing"}, 1]]});
        assert_eq!(run(&rule, &data), Value::Null);
    }

    #[test]
    fn equal_values_bucket_alike_whatever_their_json_spelling() {
        let buckets: Vec<Value> = (0..1000).map(|i| json!([i.to_string(), 1])).collect();
        let pick = |input: &str| {
            // Read through `var` so an object input is data, not an operator.
            let mut args = vec![json!({"var": "x"})];
            args.extend(buckets.iter().cloned());
            let data = json!({"x": serde_json::from_str::<Value>(input).expect("JSON")});
            run(&json!({"fractional_v3": args}), &data)
        };
        assert_eq!(pick("1"), pick("1.0"));
        assert_eq!(pick("0"), pick("-0.0"));
        assert_eq!(pick("-2"), pick("-2.0"));
        assert_eq!(
            pick(r#"{"a": 1, "b": [2.0]}"#),
            pick(r#"{"b": [2], "a": 1.0}"#)
        );
        assert_ne!(pick("1"), pick(r#""1""#));
    }

    #[test]
    fn duplicate_keys_in_arena_parsed_data_match_serde_json() {
        // datavalue's parser keeps duplicate keys; serde_json keeps the last. Both must hash
        // the same, since the evaluator may build the context either way.
        let text = r#"{"a": [false, 2.5, ""], "b": [], "c": [{}], "c": null}"#;
        let arena = Bump::new();
        let native = DataValue::from_str(text, &arena).expect("valid JSON");
        assert_eq!(native.as_object().map(<[_]>::len), Some(4));
        let via_serde: Value = serde_json::from_str(text).expect("valid JSON");
        let reserialized = via_serde.to_string();
        let bridged = DataValue::from_str(&reserialized, &arena).expect("valid JSON");
        assert_eq!(encode(&native), encode(&bridged));
    }
}
