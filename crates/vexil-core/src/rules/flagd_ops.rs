//! flagd's custom operators where datalogic's built-ins differ from flagd (Go), which the
//! testbed pins:
//! - `starts_with` / `ends_with` answer null (not false, not an error) unless given exactly two
//!   strings, so a bad call falls back to the default variant;
//! - `fractional` buckets may name any value, not only strings (`[[false, 0], [true, 100]]` is a
//!   condition), and their names may be computed by nested rules.
//!
//! datalogic resolves built-in names before custom ones, so the compiler renames these
//! operators to the `vexil_*` names under which they are registered here.

use bumpalo::Bump;
use datalogic_rs::operator::EvalContext;
use datalogic_rs::{CustomOperator, DataValue, Result};

/// Registered names.
pub(crate) const STARTS_WITH: &str = "vexil_starts_with";
pub(crate) const ENDS_WITH: &str = "vexil_ends_with";
pub(crate) const FRACTIONAL_V2: &str = "vexil_fractional_v2";

fn null<'a>(arena: &'a Bump) -> Result<&'a DataValue<'a>> {
    Ok(arena.alloc(DataValue::Null))
}

/// `starts_with` (`suffix == false`) or `ends_with` (`suffix == true`).
pub(crate) struct Affix {
    pub(crate) suffix: bool,
}

impl CustomOperator for Affix {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        _ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        let [DataValue::String(s), DataValue::String(affix)] = args else {
            return null(arena);
        };
        let hit = if self.suffix {
            s.ends_with(affix)
        } else {
            s.starts_with(affix)
        };
        Ok(arena.alloc(DataValue::Bool(hit)))
    }
}

/// A bucket read from a `fractional` argument: its name (any value) and weight.
pub(crate) struct Bucket<'a> {
    pub(crate) name: &'a DataValue<'a>,
    pub(crate) weight: u64,
}

/// Reads `[name, weight?]` bucket definitions. A weight defaults to 1, a negative weight
/// counts as 0, and a fractional weight is truncated (flagd's schema wants integers; Go's
/// evaluator truncates). Anything malformed makes the whole operator null, as in flagd.
pub(crate) fn read_buckets<'a>(
    args: &[&'a DataValue<'a>],
    arena: &'a Bump,
) -> Option<(bumpalo::collections::Vec<'a, Bucket<'a>>, u64)> {
    let mut out = bumpalo::collections::Vec::with_capacity_in(args.len(), arena);
    let mut total: u64 = 0;
    for arg in args {
        let items = arg.as_array()?;
        let (name, weight) = match items {
            [name] => (name, 1),
            [name, w] => {
                let w = w.as_f64()?;
                if !w.is_finite() {
                    return None;
                }
                // Saturating cast: the sum below must not overflow.
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped to [0, u32::MAX] first"
                )]
                let w = w.clamp(0.0, f64::from(u32::MAX)) as u64;
                (name, w)
            }
            _ => return None,
        };
        total = total.checked_add(weight)?;
        // flagd's weights are 32-bit ints and the v3 ADR bounds their sum by i32::MAX; a larger
        // total has no defined bucketing, so the operator answers null (the default variant).
        if total > MAX_TOTAL_WEIGHT {
            return None;
        }
        out.push(Bucket { name, weight });
    }
    (!out.is_empty() && total > 0).then_some((out, total))
}

/// The largest sum of weights `fractional` accepts.
pub(crate) const MAX_TOTAL_WEIGHT: u64 = i32::MAX as u64;

/// Picks the bucket for a 32-bit hash: `(hash * total) >> 32` over cumulative weights.
/// `total` is at most [`MAX_TOTAL_WEIGHT`], so the product fits in 64 bits; the widening to
/// u128 keeps it exact even if a caller passes more.
pub(crate) fn pick<'a>(buckets: &[Bucket<'a>], total: u64, hash: u32) -> Option<&'a DataValue<'a>> {
    let wide = (u128::from(hash) * u128::from(total)) >> 32;
    let point = u64::try_from(wide).ok()?;
    let mut end = 0u64;
    for b in buckets {
        end += b.weight;
        if point < end {
            return Some(b.name);
        }
    }
    None
}

/// The root context's `targetingKey` and `$flagd.flagKey`.
pub(crate) fn implicit_parts<'a>(root: &'a DataValue<'a>) -> (Option<&'a DataValue<'a>>, &'a str) {
    let obj = root.as_object().unwrap_or(&[]);
    let find = |k: &str| obj.iter().find(|(name, _)| *name == k).map(|(_, v)| v);
    let flag_key = find("$flagd")
        .and_then(DataValue::as_object)
        .and_then(|o| o.iter().find(|(n, _)| *n == "flagKey"))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or("");
    (find("targetingKey"), flag_key)
}

/// flagd's `fractional`, bucketing v2: murmur3 x86_32 (seed 0) of the bucketing string; when no
/// string is given, of `flagKey + targetingKey`.
pub(crate) struct FractionalV2;

impl CustomOperator for FractionalV2 {
    fn evaluate<'a>(
        &self,
        args: &[&'a DataValue<'a>],
        ctx: &mut EvalContext<'_, 'a>,
        arena: &'a Bump,
    ) -> Result<&'a DataValue<'a>> {
        let (key, rest): (&str, &[&DataValue<'_>]) = match args.split_first() {
            None => return null(arena),
            Some((DataValue::String(s), rest)) => (s, rest),
            Some((first, rest)) => {
                let (tk, flag_key) = implicit_parts(ctx.root_input());
                // Go flagd accepts any string targeting key; a missing or non-string one means
                // "no bucketing value", which falls back to the default variant.
                let Some(DataValue::String(tk)) = tk else {
                    return null(arena);
                };
                let mut joined = bumpalo::collections::String::with_capacity_in(
                    flag_key.len() + tk.len(),
                    arena,
                );
                joined.push_str(flag_key);
                joined.push_str(tk);
                let joined = joined.into_bump_str();
                if matches!(first, DataValue::Null) {
                    (joined, rest)
                } else {
                    (joined, args)
                }
            }
        };
        let Some((buckets, total)) = read_buckets(rest, arena) else {
            return null(arena);
        };
        let hash = mur3::murmurhash3_x86_32(key.as_bytes(), 0);
        match pick(&buckets, total, hash) {
            Some(v) => Ok(v),
            None => null(arena),
        }
    }
}
