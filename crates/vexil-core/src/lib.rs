//! `vexil-core` owns Vexil's flag model, its validation, the rule engine and the evaluator.
//!
//! It is pure: no I/O, no async, no clocks (an evaluation is handed its timestamp), and no
//! transport or storage types. Every transport and every store builds on what this crate computes,
//! so it must never depend on them. It could ship on its own as an embeddable evaluation library.

pub mod context;
pub mod domain;
pub mod evaluate;
pub mod identity;
pub mod metadata;
pub mod model;
pub mod rules;
pub mod validate;

pub use evaluate::{
    ErrorCode, Explanation, FlagSet, FlagSetBuilder, FlagSetOptions, Reason, Resolution, ValueKind,
};
pub use metadata::Metadata;
pub use model::{
    DocumentError, FlagDefinition, FlagDocument, FlagState, Loaded, Schema, TargetingPolicy,
    VariantType,
};
pub use rules::FractionalVersion;
pub use validate::Violation;

/// The deepest rule nesting Vexil accepts. Deeper rules are rejected by validation and fail to
/// compile (PARSE_ERROR), so neither the validator nor the engine can be driven into a stack
/// overflow.
pub const MAX_RULE_DEPTH: usize = 128;
