//! JSON shapes of the HTTP API, for the OpenAPI document only.
//!
//! The domain types live in `vexil-core` and `vexil-service`, which stay free of web
//! dependencies, so their wire shapes are mirrored here as schema-only types. Nothing in this
//! module is constructed at run time. The unit tests at the bottom hold each mirror to the real
//! type: an enum variant added in the core does not compile here until it is documented, and a
//! field added to a serialised resource fails a test until its schema has it too.

#![expect(
    dead_code,
    reason = "schema-only mirror types: read by the OpenAPI derive, never constructed"
)]

use std::collections::BTreeMap;

use utoipa::openapi::schema::SchemaType;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToResponse, ToSchema};

use super::problem::Problem;

// ------------------------------------------------------------------ helpers

/// A `$ref` to `T`'s component.
fn reference<T: ToSchema>() -> Ref {
    Ref::from_schema_name(T::name())
}

/// Registers `T` (and what it refers to) as a component, for hand-written [`ToSchema`]s.
fn register<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

// ------------------------------------------------------------------ free-form values

/// Any JSON value.
fn any_value() -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(SchemaType::AnyValue)
            .build(),
    )
}

/// A flag value: a boolean, string, number or object (flagd allows no null or array).
#[derive(Debug)]
pub struct FlagValue;

impl PartialSchema for FlagValue {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Boolean))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .item(ObjectBuilder::new().schema_type(Type::Object))
            .description(Some(
                "A boolean, string, number or object; all variants of one flag share one type.",
            ))
            .into()
    }
}

impl ToSchema for FlagValue {}

/// A JsonLogic rule (flagd's targeting language, with `$ref`, `fractional`, `sem_ver`,
/// `starts_with`, `ends_with`).
#[derive(Debug)]
pub struct JsonLogic;

impl PartialSchema for JsonLogic {
    fn schema() -> RefOr<Schema> {
        let mut s = any_value();
        if let Schema::Object(o) = &mut s {
            o.description = Some(
                "A JsonLogic rule (flagd targeting: `if`, `==`, `in`, `var`, `$ref`, \
                 `fractional`, `sem_ver`, `starts_with`, `ends_with`, ...)."
                    .into(),
            );
        }
        s.into()
    }
}

impl ToSchema for JsonLogic {}

/// Free-form metadata: string, number or boolean values.
#[derive(Debug)]
pub struct Metadata;

impl PartialSchema for Metadata {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(Schema::OneOf(
                OneOfBuilder::new()
                    .item(ObjectBuilder::new().schema_type(Type::Boolean))
                    .item(ObjectBuilder::new().schema_type(Type::String))
                    .item(ObjectBuilder::new().schema_type(Type::Number))
                    .build(),
            )))
            .description(Some(
                "Free-form metadata: string, number or boolean values.",
            ))
            .into()
    }
}

impl ToSchema for Metadata {}

/// An evaluation context: any JSON object. `targetingKey` is what `fractional` buckets on.
#[derive(Debug)]
pub struct Context;

impl PartialSchema for Context {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "targetingKey",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("The subject's stable id (used by `fractional`).")),
            )
            .additional_properties(Some(any_value()))
            .description(Some(
                "The evaluation context: a JSON object of attributes. The namespace's \
                 `evaluationContext` is merged under it (request keys win).",
            ))
            .examples([serde_json::json!({"targetingKey": "user-123", "tier": "gold"})])
            .into()
    }
}

impl ToSchema for Context {}

// ------------------------------------------------------------------ enums

/// Whether a flag is served (flagd's `state`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FlagState {
    /// Served normally.
    Enabled,
    /// The kill switch is on: evaluation answers DISABLED and the caller's default.
    Disabled,
}

/// Why a resolution came out the way it did (OpenFeature / flagd reasons).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// The flag has no targeting: its default variant was served.
    Static,
    /// Targeting chose a variant.
    TargetingMatch,
    /// Targeting returned null, or there is no default variant.
    Default,
    /// The flag is disabled: no value, the caller's default applies.
    Disabled,
    /// Evaluation failed; see the error code.
    Error,
}

/// OpenFeature error codes.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with that key.
    FlagNotFound,
    /// The flag's rule could not be compiled or failed while running.
    ParseError,
    /// The value is not of the type the caller asked for.
    TypeMismatch,
    /// A rule needed a targeting key the context did not carry.
    TargetingKeyMissing,
    /// The context is not a JSON object, or nests too deeply.
    InvalidContext,
    /// Anything else.
    General,
}

/// What kind of resource an audit event concerns.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ResourceKind {
    /// A namespace.
    Namespace,
    /// A flag.
    Flag,
    /// A segment.
    Segment,
    /// A user account (also login events).
    User,
    /// A custom role.
    Role,
    /// A role binding.
    Binding,
    /// An API token.
    Token,
    /// A configuration entry.
    Config,
}

/// How an import treats flags the file does not mention.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ImportMode {
    /// Keep them (the default).
    Merge,
    /// Delete them: the namespace ends up exactly as the file.
    Replace,
}

/// The export file format.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ExportFormat {
    /// flagd JSON (the default).
    Json,
    /// flagd YAML (`yml` is accepted too).
    Yaml,
}

// ------------------------------------------------------------------ namespaces

/// A namespace: an isolated set of flags and segments.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Namespace {
    /// `^[a-z0-9][a-z0-9._-]{0,62}$`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,62}$", example = "default")]
    key: String,
    /// Display name.
    name: String,
    /// Free text.
    description: String,
    /// Merged under every evaluation context in this namespace (request keys win).
    #[schema(value_type = Object)]
    evaluation_context: BTreeMap<String, serde_json::Value>,
    /// Callers without credentials may evaluate flags here (off by default).
    anonymous_evaluation: bool,
    /// Starts at 1, +1 per update; the ETag is this number in quotes.
    #[schema(minimum = 1)]
    version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Last update time, milliseconds since the Unix epoch.
    updated_at: i64,
}

/// A namespace to create (POST) or replace (PUT). Read-only fields (`version`, `createdAt`,
/// `updatedAt`) are ignored; any other unknown field is a 400.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct NamespaceInput {
    /// Required on POST; on PUT it may be omitted but must match the URL when given.
    #[schema(required = false, pattern = "^[a-z0-9][a-z0-9._-]{0,62}$")]
    key: String,
    /// Display name.
    #[schema(required = false)]
    name: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// Merged under every evaluation context in this namespace (request keys win).
    #[schema(required = false, value_type = Object)]
    evaluation_context: BTreeMap<String, serde_json::Value>,
    /// Let callers without credentials evaluate flags here (default false). Meant for clients
    /// that cannot send a token; nothing else is ever open to them.
    #[schema(required = false)]
    anonymous_evaluation: bool,
}

/// All namespaces.
#[derive(Debug, ToSchema)]
pub struct NamespaceList {
    /// In key order.
    items: Vec<Namespace>,
}

// ------------------------------------------------------------------ flags

/// A stored flag: flagd's definition (`state`, `variants`, `defaultVariant`, `targeting`,
/// `metadata`) plus Vexil's bookkeeping.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Flag {
    /// Owning namespace.
    namespace: String,
    /// Unique within the namespace.
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$",
        example = "new-checkout"
    )]
    key: String,
    /// Display name.
    name: String,
    /// Free text.
    description: String,
    /// Labels for filtering (`?tag=`).
    tags: Vec<String>,
    /// Served or not.
    state: FlagState,
    /// Variant name → value. All values share one type.
    #[schema(value_type = BTreeMap<String, FlagValue>)]
    variants: BTreeMap<String, FlagValue>,
    /// The variant served when targeting is absent or returns null. Absent means "the caller's
    /// code default".
    #[schema(required = false)]
    default_variant: String,
    /// JsonLogic targeting; absent or `{}` means none.
    #[schema(required = false)]
    targeting: JsonLogic,
    /// Flag metadata, overlaid on the namespace's at evaluation.
    #[schema(required = false)]
    metadata: Metadata,
    /// Starts at 1, +1 per update; the ETag is this number in quotes.
    #[schema(minimum = 1)]
    version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Who created it.
    created_by: String,
    /// Last update time, milliseconds since the Unix epoch.
    updated_at: i64,
    /// Who last updated it.
    updated_by: String,
}

/// A flag to create (POST) or replace (PUT), in flagd's field names. Read-only fields
/// (`namespace`, `version`, `createdAt`, ...) are ignored; any other unknown field is a 400.
#[derive(Debug, ToSchema)]
#[schema(
    rename_all = "camelCase",
    example = json!({
        "key": "new-checkout",
        "name": "New checkout",
        "tags": ["checkout"],
        "state": "ENABLED",
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", null]}
    })
)]
pub struct FlagInput {
    /// Required on POST; on PUT it may be omitted but must match the URL when given.
    #[schema(required = false, pattern = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$")]
    key: String,
    /// Display name.
    #[schema(required = false)]
    name: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// Labels: non-empty strings of at most 64 characters.
    #[schema(required = false)]
    tags: Vec<String>,
    /// Served or not.
    state: FlagState,
    /// Variant name → value. All values share one type.
    #[schema(value_type = BTreeMap<String, FlagValue>)]
    variants: BTreeMap<String, FlagValue>,
    /// One of the variants; null or absent means "the caller's code default".
    default_variant: Option<String>,
    /// JsonLogic targeting. Invalid targeting is a 400 unless `allowInvalidTargeting=true`.
    #[schema(required = false)]
    targeting: JsonLogic,
    /// Flag metadata (string, number or boolean values).
    #[schema(required = false)]
    metadata: Metadata,
    /// Expected version, used when no `If-Match` header is sent (PUT only).
    #[schema(required = false)]
    version: u64,
}

/// A JSON merge patch (RFC 7386) over a flag's fields: a field set to null is removed, an
/// object is merged. The result is validated as a whole, like a PUT.
#[derive(Debug, ToSchema)]
#[schema(
    rename_all = "camelCase",
    example = json!({"defaultVariant": "on", "tags": ["checkout", "beta"]})
)]
pub struct FlagPatch {
    /// Display name.
    #[schema(required = false)]
    name: Option<String>,
    /// Free text.
    #[schema(required = false)]
    description: Option<String>,
    /// Replaces the tag list.
    #[schema(required = false)]
    tags: Option<Vec<String>>,
    /// Served or not.
    #[schema(required = false)]
    state: FlagState,
    /// Merged key by key; a variant set to null is removed.
    #[schema(required = false, value_type = Object)]
    variants: BTreeMap<String, serde_json::Value>,
    /// One of the variants.
    #[schema(required = false)]
    default_variant: Option<String>,
    /// Merged as JSON (set it to null first to replace a rule wholesale).
    #[schema(required = false, value_type = Value)]
    targeting: serde_json::Value,
    /// Merged key by key.
    #[schema(required = false, value_type = Object)]
    metadata: BTreeMap<String, serde_json::Value>,
}

/// One page of flags, in key order.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FlagPage {
    /// The flags of this page.
    items: Vec<Flag>,
    /// Pass back as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

// ------------------------------------------------------------------ segments

/// A named, reusable rule (flagd's `$evaluators` entry), referenced as `{"$ref": key}`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Segment {
    /// Owning namespace.
    namespace: String,
    /// Unique within the namespace.
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$",
        example = "gold-users"
    )]
    key: String,
    /// Free text.
    description: String,
    /// The JsonLogic rule.
    rule: JsonLogic,
    /// Starts at 1, +1 per update; the ETag is this number in quotes.
    #[schema(minimum = 1)]
    version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Last update time, milliseconds since the Unix epoch.
    updated_at: i64,
}

/// A segment to create (POST) or replace (PUT).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"key": "gold-users", "rule": {"==": [{"var": "tier"}, "gold"]}}))]
pub struct SegmentInput {
    /// Required on POST; on PUT it may be omitted but must match the URL when given.
    #[schema(required = false, pattern = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$")]
    key: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// The JsonLogic rule; it must compile, `$ref`s included.
    rule: JsonLogic,
}

/// All segments of a namespace.
#[derive(Debug, ToSchema)]
pub struct SegmentList {
    /// In key order.
    items: Vec<Segment>,
}

// ------------------------------------------------------------------ configs

/// A dynamic configuration entry: any JSON value under a key, optionally held to a JSON Schema.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ConfigEntry {
    /// Owning namespace.
    namespace: String,
    /// Unique within the namespace.
    #[schema(
        pattern = "^[A-Za-z0-9_][A-Za-z0-9._:-]{0,127}$",
        example = "checkout.limits"
    )]
    key: String,
    /// The value: any JSON, null included.
    #[schema(value_type = Value)]
    value: serde_json::Value,
    /// The JSON Schema every value must satisfy (draft 2020-12 unless it names another);
    /// absent when the entry has none.
    #[schema(required = false, value_type = Object)]
    schema: Option<serde_json::Value>,
    /// Free text.
    description: String,
    /// Starts at 1, +1 per write (a rollback too); the ETag is this number in quotes.
    #[schema(minimum = 1)]
    version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Who created it.
    created_by: String,
    /// When this version was written, milliseconds since the Unix epoch.
    updated_at: i64,
    /// Who wrote this version.
    updated_by: String,
}

/// A configuration entry to create or replace (PUT).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"value": {"maxItems": 50, "currency": "EUR"}, "schema": {"type": "object", "properties": {"maxItems": {"type": "integer", "minimum": 1}}, "required": ["maxItems"]}, "description": "cart limits"}))]
pub struct ConfigInput {
    /// May be omitted; must match the URL when given.
    #[schema(required = false)]
    key: String,
    /// The new value (required; null is a value). It must satisfy the schema the entry has
    /// after this write.
    #[schema(value_type = Value)]
    value: serde_json::Value,
    /// Absent: keep the current schema. Null: remove it. A schema must compile; a remote
    /// `$ref` is never fetched.
    #[schema(required = false, value_type = Object)]
    schema: Option<serde_json::Value>,
    /// Absent: keep the current description.
    #[schema(required = false)]
    description: String,
    /// The expected current version, when `If-Match` is not sent (`0`: only if absent).
    #[schema(required = false)]
    version: u64,
}

/// Configuration entries, in key order, or one entry's versions, oldest first.
#[derive(Debug, ToSchema)]
pub struct ConfigList {
    /// The entries.
    items: Vec<ConfigEntry>,
}

/// `POST …/configs/{key}/rollback`.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"version": 3}))]
pub struct RollbackRequest {
    /// The version whose value, schema and description become the next version.
    #[schema(minimum = 1)]
    version: u64,
}

// ------------------------------------------------------------------ import / export

/// One flag in flagd's terms.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FlagDefinition {
    /// Served or not.
    state: FlagState,
    /// Variant name → value.
    #[schema(value_type = BTreeMap<String, FlagValue>)]
    variants: BTreeMap<String, FlagValue>,
    /// One of the variants; null means "the caller's code default".
    default_variant: Option<String>,
    /// JsonLogic targeting.
    #[schema(required = false)]
    targeting: JsonLogic,
    /// Flag metadata.
    #[schema(required = false)]
    metadata: Metadata,
}

fn flagd_flags() -> Schema {
    let with_key = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("key", ObjectBuilder::new().schema_type(Type::String))
        .required("key")
        .additional_properties(Some(any_value()))
        .description(Some(
            "A flag definition with its `key` (flagd.json's array form).",
        ));
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .additional_properties(Some(reference::<FlagDefinition>()))
                    .description(Some("Flag key → definition.")),
            )
            .item(ArrayBuilder::new().items(with_key))
            .description(Some(
                "Flag key → definition; on import, flagd.json's array of flags with keys is \
                 accepted too. Export always writes the map.",
            ))
            .build(),
    )
}

/// A flagd flag file (`flags.json` / `flagd.json`), as JSON or YAML.
#[derive(Debug, ToSchema)]
#[schema(example = json!({
    "flags": {
        "new-checkout": {
            "state": "ENABLED",
            "variants": {"on": true, "off": false},
            "defaultVariant": "off",
            "targeting": {"if": [{"$ref": "gold-users"}, "on", null]}
        }
    },
    "$evaluators": {"gold-users": {"==": [{"var": "tier"}, "gold"]}},
    "metadata": {"flagSetId": "checkout"}
}))]
pub struct FlagdDocument {
    /// The flagd schema URL (ignored).
    #[schema(rename = "$schema", required = false)]
    schema: String,
    /// The flags.
    #[schema(schema_with = flagd_flags)]
    flags: serde_json::Value,
    /// Shared rules referenced by `{"$ref": name}`; they become segments.
    #[schema(rename = "$evaluators", required = false, value_type = BTreeMap<String, JsonLogic>)]
    evaluators: BTreeMap<String, JsonLogic>,
    /// Flag-set metadata; `flagSetId` and `version` must be strings.
    #[schema(required = false)]
    metadata: Metadata,
}

/// What an import changes (or would change, on a dry run). Each list holds keys.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ImportDiff {
    /// Flags the file adds.
    added: Vec<String>,
    /// Flags whose definition the file changes.
    changed: Vec<String>,
    /// Flags that stay as they are.
    unchanged: Vec<String>,
    /// Flags deleted (replace mode only).
    removed: Vec<String>,
    /// Segments (`$evaluators`) added.
    segments_added: Vec<String>,
    /// Segments changed.
    segments_changed: Vec<String>,
    /// Segments deleted (replace mode only).
    segments_removed: Vec<String>,
}

/// A broken rule, located by a dotted JSON path.
#[derive(Debug, ToSchema)]
pub struct Violation {
    /// Dotted path from the document root, e.g. `flags.my-flag.targeting`.
    path: String,
    /// What is wrong.
    message: String,
}

/// The result of an import.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ImportOutcome {
    /// Whether this was a dry run (nothing written).
    dry_run: bool,
    /// The changes.
    diff: ImportDiff,
    /// Problems flagd tolerates (invalid targeting): those flags are stored and answer
    /// PARSE_ERROR.
    warnings: Vec<Violation>,
    /// The revision committed (the current one for a dry run or an empty diff).
    revision: u64,
}

// ------------------------------------------------------------------ native evaluation

/// A native evaluation: one flag (`flagKey`), or all flags when it is absent.
#[derive(Debug, ToSchema)]
#[schema(
    rename_all = "camelCase",
    example = json!({"flagKey": "new-checkout", "context": {"targetingKey": "user-123", "tier": "gold"}, "explain": true})
)]
pub struct EvaluateRequest {
    /// The flag to evaluate; all flags when absent.
    #[schema(required = false)]
    flag_key: String,
    /// The evaluation context; null or absent is the empty context.
    #[schema(required = false)]
    context: Context,
    /// With `flagKey`: also return the rule as evaluated, what it returned and why.
    #[schema(required = false, default = false)]
    explain: bool,
}

/// The outcome of evaluating one flag.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Resolution {
    /// The value served; null means "use the caller's default" (DISABLED, no default variant,
    /// or an error).
    value: Option<FlagValue>,
    /// The variant served, when one was.
    variant: Option<String>,
    /// Why.
    reason: Reason,
    /// Set exactly when `reason` is ERROR.
    #[schema(required = false)]
    error_code: ErrorCode,
    /// A human explanation for errors.
    #[schema(required = false)]
    error_message: String,
    /// Namespace metadata overlaid with the flag's own.
    metadata: Metadata,
}

/// One flag's evaluation (`flagKey` given, `explain` off).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Evaluation {
    /// The flag.
    flag_key: String,
    /// The snapshot revision it was evaluated at.
    revision: u64,
    /// The value served; null means "use the caller's default".
    value: Option<FlagValue>,
    /// The variant served, when one was.
    variant: Option<String>,
    /// Why.
    reason: Reason,
    /// Set exactly when `reason` is ERROR.
    #[schema(required = false)]
    error_code: ErrorCode,
    /// A human explanation for errors.
    #[schema(required = false)]
    error_message: String,
    /// Namespace metadata overlaid with the flag's own.
    metadata: Metadata,
}

/// How a rule produced a resolution.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Explanation {
    /// The resolution.
    resolution: Resolution,
    /// The rule as evaluated (`$ref`s expanded), when the flag has one.
    #[schema(required = false)]
    rule: JsonLogic,
    /// What the rule returned before it was mapped to a variant.
    #[schema(required = false, value_type = Value)]
    rule_result: serde_json::Value,
    /// The context the rule saw, with `$flagd` and the namespace context merged in.
    #[schema(value_type = Object)]
    context: BTreeMap<String, serde_json::Value>,
    /// Which step decided the result, in words.
    decision: String,
}

/// One flag's evaluation with its explanation (`flagKey` given, `explain: true`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ExplainedEvaluation {
    /// The flag.
    flag_key: String,
    /// The snapshot revision it was evaluated at.
    revision: u64,
    /// How the result came about.
    explanation: Explanation,
    /// The result (the same as `explanation.resolution`).
    resolution: Resolution,
}

/// One entry of an evaluation of all flags.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FlagResolution {
    /// The flag.
    flag_key: String,
    /// The value served; null means "use the caller's default".
    value: Option<FlagValue>,
    /// The variant served, when one was.
    variant: Option<String>,
    /// Why.
    reason: Reason,
    /// Set exactly when `reason` is ERROR.
    #[schema(required = false)]
    error_code: ErrorCode,
    /// A human explanation for errors.
    #[schema(required = false)]
    error_message: String,
    /// Namespace metadata overlaid with the flag's own.
    metadata: Metadata,
}

/// Every flag of the namespace evaluated against one context (no `flagKey`).
#[derive(Debug, ToSchema)]
pub struct BulkEvaluation {
    /// The snapshot revision they were evaluated at.
    revision: u64,
    /// One entry per flag, in key order.
    flags: Vec<FlagResolution>,
}

/// The answer to `POST …/evaluate`: [`Evaluation`] with `flagKey`, [`ExplainedEvaluation`]
/// with `flagKey` and `explain: true`, [`BulkEvaluation`] without `flagKey`.
#[derive(Debug)]
pub struct EvaluateResponse;

impl PartialSchema for EvaluateResponse {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(reference::<Evaluation>())
            .item(reference::<ExplainedEvaluation>())
            .item(reference::<BulkEvaluation>())
            .description(Some(
                "Its shape follows the request: `Evaluation` with `flagKey`, \
                 `ExplainedEvaluation` with `flagKey` and `explain: true`, `BulkEvaluation` \
                 without `flagKey`.",
            ))
            .into()
    }
}

impl ToSchema for EvaluateResponse {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        register::<Evaluation>(schemas);
        register::<ExplainedEvaluation>(schemas);
        register::<BulkEvaluation>(schemas);
    }
}

// ------------------------------------------------------------------ audit

/// Who did something.
#[derive(Debug, ToSchema)]
pub struct Actor {
    /// `user`, `token`, `anonymous` or `system`.
    kind: String,
    /// The user name, token id, or component.
    id: String,
}

/// One audited change, hash-chained to the one before it.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Unique id.
    id: String,
    /// Position in the log, from 1.
    seq: u64,
    /// When, milliseconds since the Unix epoch.
    at: i64,
    /// Who.
    actor: Actor,
    /// E.g. `flag.update`.
    action: String,
    /// What kind of resource.
    kind: ResourceKind,
    /// Its namespace (the namespace's own key for namespace events).
    namespace: String,
    /// Its key.
    key: String,
    /// State before, if it existed.
    #[schema(value_type = Option<Object>)]
    before: Option<serde_json::Value>,
    /// State after, if it still exists.
    #[schema(value_type = Option<Object>)]
    after: Option<serde_json::Value>,
    /// The request that caused it.
    request_id: Option<String>,
    /// The client address.
    source_ip: Option<String>,
    /// Hash of the previous event (hex), empty for the first.
    prev_hash: String,
    /// SHA-256 (hex) over `prevHash` and this event's content.
    hash: String,
}

/// Audit events in `seq` order.
#[derive(Debug, ToSchema)]
pub struct AuditPage {
    /// The events; pass the last `seq` as `afterSeq` for the next page.
    items: Vec<AuditEvent>,
}

/// What `GET /api/v1/audit/verify` found.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ChainReport {
    /// True when every event follows from the one before it.
    valid: bool,
    /// Events checked and found to follow (all of them when `valid`).
    events: u64,
    /// The `seq` of the last event that follows (0 for an empty log).
    head_seq: u64,
    /// Its hash: record it elsewhere to detect a log rewritten from some point on.
    head_hash: String,
    /// The first event that does not follow; absent when the chain is valid.
    #[schema(required = false)]
    first_break: Option<ChainBreak>,
}

/// Where the audit chain stops holding.
#[derive(Debug, ToSchema)]
pub struct ChainBreak {
    /// The event's `seq` (the expected `seq`, for a missing event).
    seq: u64,
    /// What does not hold: a missing event, a `prevHash` that is not the previous hash, or a
    /// hash that does not match the content.
    reason: String,
}

// ------------------------------------------------------------------ OFREP

/// An OFREP evaluation request.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"context": {"targetingKey": "user-123", "tier": "gold"}}))]
pub struct OfrepEvaluationRequest {
    /// The evaluation context; null or absent is the empty context. An empty body is accepted
    /// as the empty context too.
    #[schema(required = false)]
    context: Context,
}

/// A successful OFREP evaluation. `variant` is always present (possibly `""`); `value` is absent
/// when the caller's code default applies (a disabled flag, no default variant).
#[derive(Debug, ToSchema)]
#[schema(example = json!({"key": "new-checkout", "value": true, "reason": "TARGETING_MATCH", "variant": "on", "metadata": {}}))]
pub struct OfrepEvaluationSuccess {
    /// The flag key.
    key: String,
    /// The value; absent means "use the code default". Floats are written with a decimal point.
    #[schema(required = false)]
    value: FlagValue,
    /// Why.
    reason: Reason,
    /// The variant served; `""` when none was.
    variant: String,
    /// Namespace metadata overlaid with the flag's own.
    metadata: Metadata,
}

/// A failed OFREP evaluation of one flag (404 for FLAG_NOT_FOUND, 400 otherwise; in a bulk
/// response, an entry of `flags`).
#[derive(Debug, ToSchema)]
#[schema(
    rename_all = "camelCase",
    example = json!({"key": "missing-flag", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "flag missing-flag not found", "metadata": {}})
)]
pub struct OfrepEvaluationFailure {
    /// The flag key (absent when the request itself failed, e.g. a malformed body).
    #[schema(required = false)]
    key: String,
    /// The OpenFeature error code.
    error_code: ErrorCode,
    /// What went wrong.
    error_details: String,
    /// Namespace metadata overlaid with the flag's own (absent when the request failed).
    #[schema(required = false)]
    metadata: Metadata,
}

/// One entry of an OFREP bulk response: evaluated, or failed (e.g. PARSE_ERROR for broken
/// targeting).
#[derive(Debug)]
pub struct OfrepBulkEntry;

impl PartialSchema for OfrepBulkEntry {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(reference::<OfrepEvaluationSuccess>())
            .item(reference::<OfrepEvaluationFailure>())
            .description(Some(
                "Evaluated, or failed (an entry with `errorCode`, e.g. PARSE_ERROR).",
            ))
            .into()
    }
}

impl ToSchema for OfrepBulkEntry {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        register::<OfrepEvaluationSuccess>(schemas);
        register::<OfrepEvaluationFailure>(schemas);
    }
}

/// Flag-set metadata of a bulk response.
#[derive(Debug, ToSchema)]
pub struct OfrepBulkMetadata {
    /// The snapshot revision the flags were evaluated at.
    revision: u64,
}

/// Every flag of the namespace, evaluated against one context.
#[derive(Debug, ToSchema)]
pub struct OfrepBulkResponse {
    /// One entry per flag, in key order.
    flags: Vec<OfrepBulkEntry>,
    /// Flag-set metadata.
    metadata: OfrepBulkMetadata,
}

/// An OFREP error that is not about one flag (503, 500).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct OfrepGeneralError {
    /// What went wrong.
    error_details: String,
}

// ------------------------------------------------------------------ authentication and RBAC

/// A permission, granted through roles in one namespace or in all.
#[derive(Debug, ToSchema)]
pub enum Permission {
    /// Read flags, segments and namespaces.
    #[serde(rename = "flag:read")]
    FlagRead,
    /// Create, change and delete flags, segments and namespaces.
    #[serde(rename = "flag:write")]
    FlagWrite,
    /// Read configuration entries.
    #[serde(rename = "config:read")]
    ConfigRead,
    /// Change configuration entries.
    #[serde(rename = "config:write")]
    ConfigWrite,
    /// Read the audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Manage users, roles, bindings and API tokens.
    #[serde(rename = "rbac:admin")]
    RbacAdmin,
    /// Evaluate flags (OFREP, flagd protocols, native evaluation).
    #[serde(rename = "evaluate")]
    Evaluate,
}

/// A user name and password to sign in with.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"username": "admin", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    /// The user's name.
    username: String,
    /// The user's password.
    #[schema(format = Password)]
    password: String,
}

/// A session: send `token` as `Authorization: Bearer <token>`.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Session {
    /// A JWT (HS256).
    token: String,
    /// When it stops working, milliseconds since the Unix epoch.
    expires_at: i64,
}

/// A user account. Its password hash is never returned.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct User {
    /// Login name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._@-]{0,63}$", example = "ana@example.com")]
    name: String,
    /// Display name.
    display_name: String,
    /// A disabled user cannot sign in, and its sessions stop working.
    disabled: bool,
    /// Starts at 1, +1 per update; the ETag is this number in quotes.
    #[schema(minimum = 1)]
    version: u64,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Last update time, milliseconds since the Unix epoch.
    updated_at: i64,
}

/// A user to create. Unknown fields are a 400.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase", example = json!({"name": "ana@example.com", "password": "a long passphrase", "displayName": "Ana"}))]
pub struct UserInput {
    /// Login name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._@-]{0,63}$")]
    name: String,
    /// At least 8 characters, at most 1024 bytes.
    #[schema(format = Password, min_length = 8)]
    password: String,
    /// Display name.
    #[schema(required = false)]
    display_name: String,
}

/// Changes to a user: only the fields given change. Unknown fields are a 400.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase", example = json!({"password": "a new long passphrase"}))]
pub struct UserPatch {
    /// New display name.
    #[schema(required = false)]
    display_name: Option<String>,
    /// New password (at least 8 characters); ends the user's older sessions.
    #[schema(required = false, format = Password, min_length = 8)]
    password: Option<String>,
    /// Disable or re-enable the user (`rbac:admin` on `*` only).
    #[schema(required = false)]
    disabled: Option<bool>,
}

/// All users.
#[derive(Debug, ToSchema)]
pub struct UserList {
    /// The users.
    items: Vec<User>,
}

/// A role: a named set of permissions.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Role {
    /// Name.
    #[schema(pattern = "^[a-z0-9][a-z0-9._@-]{0,63}$", example = "flag-operator")]
    name: String,
    /// Free text.
    description: String,
    /// What the role grants.
    permissions: Vec<Permission>,
    /// `admin`, `editor`, `viewer` and `evaluator` are built in: they cannot be changed or
    /// deleted.
    builtin: bool,
    /// Starts at 1, +1 per update (0 for built-in roles); the ETag is this number in quotes.
    version: u64,
    /// Creation time, milliseconds since the Unix epoch (0 for built-in roles).
    created_at: i64,
    /// Last update time, milliseconds since the Unix epoch (0 for built-in roles).
    updated_at: i64,
}

/// A custom role to create (POST) or replace (PUT). Unknown fields are a 400.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"name": "flag-operator", "description": "Flips kill switches", "permissions": ["flag:read", "flag:write"]}))]
pub struct RoleInput {
    /// Required on POST; on PUT it may be omitted but must match the URL when given.
    #[schema(required = false, pattern = "^[a-z0-9][a-z0-9._@-]{0,63}$")]
    name: String,
    /// Free text.
    #[schema(required = false)]
    description: String,
    /// At least one permission.
    permissions: Vec<Permission>,
}

/// All roles.
#[derive(Debug, ToSchema)]
pub struct RoleList {
    /// Built-in roles first, then custom ones.
    items: Vec<Role>,
}

/// A role bound to a user or token, in one namespace or in all (`*`).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Binding {
    /// Assigned by the server.
    id: String,
    /// `user:<name>` or `token:<id>`.
    #[schema(example = "user:ana@example.com")]
    subject: String,
    /// A built-in or custom role.
    role: String,
    /// A namespace key, or `*` for every namespace.
    #[schema(example = "default")]
    namespace: String,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Who created it.
    created_by: Actor,
}

/// A binding to create. Unknown fields are a 400.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"subject": "user:ana@example.com", "role": "viewer", "namespace": "default"}))]
pub struct BindingInput {
    /// `user:<name>` or `token:<id>`; the user or token must exist.
    subject: String,
    /// A built-in or custom role.
    role: String,
    /// A namespace key, or `*` for every namespace.
    namespace: String,
}

/// Bindings.
#[derive(Debug, ToSchema)]
pub struct BindingList {
    /// The bindings.
    items: Vec<Binding>,
}

/// An API token, for programs (`Authorization: Bearer vx_…`, or `X-API-Key: vx_…` for OFREP
/// clients). Its secret is never returned after creation.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiToken {
    /// Public id, used to revoke it and in `token:<id>` subjects.
    id: String,
    /// A label.
    name: String,
    /// The role it carries.
    role: String,
    /// The namespace it is scoped to, or `*`.
    namespace: String,
    /// When it stops working, milliseconds since the Unix epoch; null for never.
    #[schema(required = true)]
    expires_at: Option<i64>,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Who created it.
    created_by: Actor,
}

/// A newly issued API token, with its secret: the only time it is shown.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct IssuedApiToken {
    /// The secret (`vx_…`): store it now, it cannot be shown again.
    #[schema(example = "vx_3f9c…")]
    token: String,
    /// Public id, used to revoke it and in `token:<id>` subjects.
    id: String,
    /// A label.
    name: String,
    /// The role it carries.
    role: String,
    /// The namespace it is scoped to, or `*`.
    namespace: String,
    /// When it stops working, milliseconds since the Unix epoch; null for never.
    #[schema(required = true)]
    expires_at: Option<i64>,
    /// Creation time, milliseconds since the Unix epoch.
    created_at: i64,
    /// Who created it.
    created_by: Actor,
}

/// An API token to issue. Unknown fields are a 400.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase", example = json!({"name": "checkout service", "role": "evaluator", "namespace": "default"}))]
pub struct ApiTokenInput {
    /// A label, 1 to 200 characters.
    name: String,
    /// A built-in or custom role; the caller must hold all of its permissions in `namespace`.
    role: String,
    /// A namespace key, or `*` for every namespace.
    namespace: String,
    /// Optional expiry in the future, milliseconds since the Unix epoch.
    #[schema(required = false)]
    expires_at: Option<i64>,
}

/// API tokens.
#[derive(Debug, ToSchema)]
pub struct ApiTokenList {
    /// The tokens, without their secrets.
    items: Vec<ApiToken>,
}

// ------------------------------------------------------------------ operations

/// Liveness.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// Always `ok`.
    status: String,
}

/// Readiness: the snapshot is loaded and the store answers.
#[derive(Debug, ToSchema)]
#[schema(
    rename_all = "camelCase",
    example = json!({"status": "ready", "revision": 42, "storeRevision": 42, "lag": 0, "namespaces": 1})
)]
pub struct Readiness {
    /// `ready`, or `degraded` (503) when the store does not answer.
    status: String,
    /// The revision the snapshot has applied.
    revision: u64,
    /// The store's revision (ready only).
    #[schema(required = false)]
    store_revision: u64,
    /// How many revisions the snapshot is behind (ready only).
    #[schema(required = false)]
    lag: u64,
    /// `unreachable` (degraded only).
    #[schema(required = false)]
    store: String,
    /// Seconds since the snapshot last matched the store: at most the follow interval while
    /// the store answers, growing while it does not (evaluation keeps serving the snapshot).
    staleness_seconds: f64,
    /// How many namespaces the snapshot holds.
    namespaces: u64,
    /// Distributed mode only: the audit relay from etcd's outbox to PostgreSQL. It does not
    /// affect readiness (flag writes succeed while events wait in the outbox).
    #[schema(required = false)]
    audit_relay: AuditRelay,
}

/// The audit relay's state.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditRelay {
    /// Whether its last attempt reached PostgreSQL.
    healthy: bool,
    /// Commits whose audit events wait in the outbox.
    pending: u64,
}

// ------------------------------------------------------------------ parameters

/// `{ns}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePath {
    /// The namespace key.
    #[param(example = "default")]
    ns: String,
}

/// `{ns}` and `{key}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The namespace key.
    #[param(example = "default")]
    ns: String,
    /// The flag or segment key.
    #[param(example = "new-checkout")]
    key: String,
}

/// `If-Match` on updates and deletes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfMatchHeader {
    /// The ETag of the version the change is based on (e.g. `"3"`), or `*`. A stale or foreign
    /// ETag answers 412 and nothing is written. Absent: unconditional.
    #[param(rename = "If-Match", required = false, example = "\"3\"")]
    if_match: String,
}

/// The OFREP namespace header.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct NamespaceHeader {
    /// The namespace to evaluate in; `default` when absent or empty.
    #[param(rename = "x-vexil-namespace", required = false, example = "default")]
    namespace: String,
}

/// `If-None-Match` on the OFREP bulk evaluation.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IfNoneMatchHeader {
    /// An ETag from a previous bulk response (or `*`). When it still matches, the answer is 304
    /// with no body.
    #[param(rename = "If-None-Match", required = false)]
    if_none_match: String,
}

/// `{key}` of OFREP.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OfrepKeyPath {
    /// The flag key.
    #[param(example = "new-checkout")]
    key: String,
}

/// `{file}` under `/docs/`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DocsFilePath {
    /// A Swagger UI asset, e.g. `swagger-ui.css`.
    #[param(example = "swagger-initializer.js")]
    file: String,
}

/// `{name}` of a user.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// The user's name.
    #[param(example = "admin")]
    name: String,
}

/// `{name}` of a role.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RolePath {
    /// The role's name.
    #[param(example = "viewer")]
    name: String,
}

/// `{id}` of an API token or a binding.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// Its id, as listed.
    id: String,
}

// ------------------------------------------------------------------ error responses

/// The request could not be used: malformed JSON, an invalid query string, or fields that
/// break a rule (each one named in `errors`).
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({
        "type": "urn:vexil:problem:invalid",
        "title": "Invalid input",
        "status": 400,
        "detail": "defaultVariant: \"blue\" is not one of the variants [off, on]",
        "errors": [{"field": "defaultVariant", "message": "\"blue\" is not one of the variants [off, on]"}]
    })
)]
pub struct BadRequest(Problem);

/// The namespace, flag or segment does not exist.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:vexil:problem:not-found", "title": "Not found", "status": 404, "detail": "flag default/x not found"})
)]
pub struct NotFound(Problem);

/// It already exists, or the change conflicts with the current state (a namespace that is not
/// empty, a segment still referenced, an import raced by another write).
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:vexil:problem:already-exists", "title": "Already exists", "status": 409, "detail": "flag default/x already exists"})
)]
pub struct Conflict(Problem);

/// `If-Match` (or the body's `version`) names a version that is not the current one. Nothing was
/// written: read the resource again and retry.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:vexil:problem:version-conflict", "title": "Version conflict", "status": 412, "detail": "flag default/x is at version 4, not 3"})
)]
pub struct PreconditionFailed(Problem);

/// The body exceeds 1 MiB.
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct PayloadTooLarge(Problem);

/// The body is not JSON (`application/json` or `application/*+json`; flagd YAML on import).
#[derive(Debug, ToResponse)]
#[response(content_type = "application/problem+json")]
pub struct UnsupportedMediaType(Problem);

/// The store is unavailable; retry after `Retry-After` seconds.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))
)]
pub struct Unavailable(Problem);

/// No valid credentials: none where the route needs them, or a malformed, forged, expired or
/// revoked one, or a wrong user name or password.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"vexil\"`")),
    example = json!({"type": "urn:vexil:problem:unauthenticated", "title": "Unauthenticated", "status": 401, "detail": "unauthenticated: the session token is not valid"})
)]
pub struct Unauthorized(Problem);

/// Authenticated, but without the permission in that namespace.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    example = json!({"type": "urn:vexil:problem:forbidden", "title": "Forbidden", "status": 403, "detail": "forbidden: rbac:admin is required in namespace *"})
)]
pub struct Forbidden(Problem);

/// Too many sign-in attempts for this user name or from this address; nothing was checked.
#[derive(Debug, ToResponse)]
#[response(
    content_type = "application/problem+json",
    headers(("Retry-After" = u32, description = "Seconds to wait before trying again."))
)]
pub struct TooManyRequests(Problem);

#[cfg(test)]
mod tests {
    //! Each mirror is held to the type it documents.

    use std::collections::BTreeSet;
    use std::sync::Arc;

    use serde_json::{Value, json};
    use utoipa::openapi::RefOr;

    use super::*;

    /// The property names and required names of a derived object schema.
    fn shape<T: PartialSchema>() -> (BTreeSet<String>, BTreeSet<String>) {
        let v = serde_json::to_value(T::schema()).unwrap_or_default();
        let props = v["properties"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let required = v["required"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        (props, required)
    }

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Every field a real value serialises is documented, and every required property is always
    /// there. `full` has every optional field set; `minimal` has as few as possible.
    fn assert_mirrors<T: PartialSchema>(name: &str, full: &Value, minimal: &Value) {
        let (props, required) = shape::<T>();
        assert_eq!(keys(full), props, "{name}: documented properties differ");
        let present = keys(minimal);
        let missing: Vec<_> = required.difference(&present).collect();
        assert!(
            missing.is_empty(),
            "{name}: required but absent: {missing:?}"
        );
    }

    fn to_json<T: serde::Serialize>(t: &T) -> Value {
        serde_json::to_value(t).unwrap_or_default()
    }

    fn enum_values<T: PartialSchema>() -> BTreeSet<String> {
        let v = serde_json::to_value(T::schema()).unwrap_or_default();
        v["enum"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn assert_enum<T: PartialSchema, C: serde::Serialize>(all: &[C]) {
        let wire: BTreeSet<String> = all
            .iter()
            .filter_map(|c| to_json(c).as_str().map(str::to_owned))
            .collect();
        assert_eq!(wire, enum_values::<T>());
    }

    #[test]
    fn documented_enums_list_every_variant_of_the_core_enums() {
        // The matches are exhaustive: a new variant does not compile until it is listed.
        use vexil_core::{ErrorCode as E, FlagState as S, Reason as R};
        let states = [S::Enabled, S::Disabled];
        for s in states {
            match s {
                S::Enabled | S::Disabled => {}
            }
        }
        assert_enum::<FlagState, _>(&states);
        let reasons = [
            R::Static,
            R::TargetingMatch,
            R::Default,
            R::Disabled,
            R::Error,
        ];
        for r in reasons {
            match r {
                R::Static | R::TargetingMatch | R::Default | R::Disabled | R::Error => {}
            }
        }
        assert_enum::<Reason, _>(&reasons);
        let codes = [
            E::FlagNotFound,
            E::ParseError,
            E::TypeMismatch,
            E::TargetingKeyMissing,
            E::InvalidContext,
            E::General,
        ];
        for c in codes {
            match c {
                E::FlagNotFound
                | E::ParseError
                | E::TypeMismatch
                | E::TargetingKeyMissing
                | E::InvalidContext
                | E::General => {}
            }
        }
        assert_enum::<ErrorCode, _>(&codes);
        use vexil_core::domain::ResourceKind as K;
        let kinds = [
            K::Namespace,
            K::Flag,
            K::Segment,
            K::User,
            K::Role,
            K::Binding,
            K::Token,
            K::Config,
        ];
        for k in kinds {
            match k {
                K::Namespace
                | K::Flag
                | K::Segment
                | K::User
                | K::Role
                | K::Binding
                | K::Token
                | K::Config => {}
            }
        }
        assert_enum::<ResourceKind, _>(&kinds);
        use vexil_service::ImportMode as M;
        let modes = [M::Merge, M::Replace];
        for m in modes {
            match m {
                M::Merge | M::Replace => {}
            }
        }
        assert_enum::<ImportMode, _>(&modes);
    }

    fn flag(optional: bool) -> vexil_core::domain::Flag {
        let mut body = json!({
            "namespace": "default", "key": "k", "state": "ENABLED",
            "variants": {"on": true}, "tags": []
        });
        if optional {
            body["defaultVariant"] = json!("on");
            body["targeting"] = json!({"if": [true, "on"]});
            body["metadata"] = json!({"team": "x"});
        }
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn documented_resources_have_exactly_the_fields_they_serialise() {
        assert_mirrors::<Flag>("Flag", &to_json(&flag(true)), &to_json(&flag(false)));
        let ns: vexil_core::domain::Namespace =
            serde_json::from_value(json!({"key": "default"})).unwrap_or_else(|e| panic!("{e}"));
        assert_mirrors::<Namespace>("Namespace", &to_json(&ns), &to_json(&ns));
        let seg: vexil_core::domain::Segment = serde_json::from_value(
            json!({"namespace": "default", "key": "s", "rule": {"==": [1, 1]}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_mirrors::<Segment>("Segment", &to_json(&seg), &to_json(&seg));
        let config: vexil_core::domain::ConfigEntry = serde_json::from_value(
            json!({"namespace": "default", "key": "c", "value": 1, "schema": {"type": "integer"}}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let bare = vexil_core::domain::ConfigEntry {
            schema: None,
            ..config.clone()
        };
        assert_mirrors::<ConfigEntry>("ConfigEntry", &to_json(&config), &to_json(&bare));
        let ev = vexil_core::domain::AuditEvent {
            id: "1".into(),
            seq: 1,
            at: 0,
            actor: vexil_core::domain::Actor::system(),
            action: "flag.create".into(),
            kind: vexil_core::domain::ResourceKind::Flag,
            namespace: "default".into(),
            key: "k".into(),
            before: None,
            after: Some(json!({})),
            request_id: None,
            source_ip: None,
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_mirrors::<AuditEvent>("AuditEvent", &to_json(&ev), &to_json(&ev));
        assert_mirrors::<Actor>("Actor", &to_json(&ev.actor), &to_json(&ev.actor));
    }

    #[test]
    fn documented_import_outcome_has_exactly_the_fields_it_serialises() {
        let out = vexil_service::ImportOutcome {
            dry_run: true,
            diff: vexil_service::ImportDiff::default(),
            warnings: vec![vexil_core::Violation::new("flags.f.targeting", "bad")],
            revision: 3,
        };
        let v = to_json(&out);
        assert_mirrors::<ImportOutcome>("ImportOutcome", &v, &v);
        assert_mirrors::<ImportDiff>("ImportDiff", &v["diff"], &v["diff"]);
        assert_mirrors::<Violation>("Violation", &v["warnings"][0], &v["warnings"][0]);
    }

    fn resolution(error: bool) -> vexil_core::Resolution {
        vexil_core::Resolution {
            value: Some(Arc::new(json!(true))),
            variant: Some("on".into()),
            reason: if error {
                vexil_core::Reason::Error
            } else {
                vexil_core::Reason::Static
            },
            error_code: error.then_some(vexil_core::ErrorCode::General),
            error_message: error.then(|| "x".to_owned()),
            metadata: Arc::default(),
        }
    }

    #[test]
    fn documented_resolutions_have_exactly_the_fields_they_serialise() {
        let full = to_json(&resolution(true));
        let minimal = to_json(&resolution(false));
        assert_mirrors::<Resolution>("Resolution", &full, &minimal);
        let with = |mut v: Value, extra: &[(&str, Value)]| {
            if let Value::Object(m) = &mut v {
                for (k, x) in extra {
                    m.insert((*k).to_owned(), x.clone());
                }
            }
            v
        };
        // What `admin::evaluate` adds to a resolution.
        let one = [("flagKey", json!("k")), ("revision", json!(1))];
        assert_mirrors::<Evaluation>(
            "Evaluation",
            &with(full.clone(), &one),
            &with(minimal.clone(), &one),
        );
        let key = [("flagKey", json!("k"))];
        assert_mirrors::<FlagResolution>("FlagResolution", &with(full, &key), &with(minimal, &key));
        let ex = vexil_core::Explanation {
            resolution: resolution(false),
            rule: Some(json!({"==": [1, 1]})),
            rule_result: Some(json!(true)),
            context: json!({}),
            decision: "x".into(),
        };
        let bare = vexil_core::Explanation {
            rule: None,
            rule_result: None,
            ..ex.clone()
        };
        assert_mirrors::<Explanation>("Explanation", &to_json(&ex), &to_json(&bare));
    }

    #[test]
    fn documented_problem_matches_what_a_problem_serialises() {
        let p = Problem::from(vexil_service::ServiceError::invalid("f", "bad"));
        let bare = Problem::bad_request("x");
        assert_mirrors::<Problem>("Problem", &to_json(&p), &to_json(&bare));
        assert_mirrors::<super::super::problem::FieldError>(
            "FieldError",
            &to_json(&p)["errors"][0],
            &to_json(&p)["errors"][0],
        );
    }

    #[test]
    fn documented_permissions_are_exactly_the_core_permissions() {
        use vexil_core::identity::Permission as P;
        for p in P::ALL {
            // Exhaustive: a new permission does not compile until it is listed (and documented).
            match p {
                P::FlagRead
                | P::FlagWrite
                | P::ConfigRead
                | P::ConfigWrite
                | P::AuditRead
                | P::RbacAdmin
                | P::Evaluate => {}
            }
        }
        assert_enum::<Permission, _>(&P::ALL);
    }

    fn actor() -> vexil_core::domain::Actor {
        vexil_core::domain::Actor {
            kind: "user".into(),
            id: "admin".into(),
        }
    }

    #[test]
    fn documented_identity_resources_have_exactly_the_fields_the_handlers_return() {
        use super::super::identity::{binding_view, role_view, token_view, user_view};
        let user = vexil_core::identity::User {
            name: "ana".into(),
            display_name: "Ana".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            disabled: false,
            version: 1,
            created_at: 1,
            updated_at: 1,
            password_changed_at: 1,
        };
        let u = user_view(&user);
        assert_mirrors::<User>("User", &u, &u);
        assert!(u.get("passwordHash").is_none(), "{u}");

        let mut token = vexil_core::identity::ApiToken {
            id: "t1".into(),
            name: "ci".into(),
            digest: "ab".repeat(32),
            role: "evaluator".into(),
            namespace: "default".into(),
            expires_at: Some(5),
            created_at: 1,
            created_by: actor(),
        };
        let full = token_view(&token);
        token.expires_at = None;
        let minimal = token_view(&token);
        assert_mirrors::<ApiToken>("ApiToken", &full, &minimal);
        assert!(!full.to_string().contains(&token.digest), "{full}");
        let with_secret = |mut v: Value| {
            v["token"] = json!("vx_secret");
            v
        };
        assert_mirrors::<IssuedApiToken>(
            "IssuedApiToken",
            &with_secret(full.clone()),
            &with_secret(minimal),
        );
        assert_mirrors::<Actor>("Actor", &full["createdBy"], &full["createdBy"]);

        let role = vexil_service::RoleView {
            role: vexil_core::identity::Role {
                name: "ops".into(),
                description: "x".into(),
                permissions: [vexil_core::identity::Permission::FlagRead]
                    .into_iter()
                    .collect(),
                version: 1,
                created_at: 1,
                updated_at: 1,
            },
            builtin: false,
        };
        let r = role_view(&role);
        assert_mirrors::<Role>("Role", &r, &r);
        assert_eq!(r["permissions"], json!(["flag:read"]));

        let binding = vexil_core::identity::Binding {
            id: "b1".into(),
            subject: vexil_core::identity::Subject::User("ana".into()),
            role: "viewer".into(),
            namespace: "*".into(),
            created_at: 1,
            created_by: actor(),
        };
        let b = binding_view(&binding);
        assert_mirrors::<Binding>("Binding", &b, &b);
        assert_eq!(b["subject"], "user:ana");
    }

    /// `full` (every documented property) and `minimal` (only the required ones) are both
    /// accepted by the service's input type `T`, and the schema names exactly `full`'s fields.
    fn assert_input<S: PartialSchema, T: serde::de::DeserializeOwned>(
        name: &str,
        full: &Value,
        minimal: &Value,
    ) {
        assert_mirrors::<S>(name, full, minimal);
        let (_, required) = shape::<S>();
        assert_eq!(
            keys(minimal),
            required,
            "{name}: minimal is not the required set"
        );
        for v in [full, minimal] {
            if let Err(e) = serde_json::from_value::<T>(v.clone()) {
                panic!("{name}: {v} is documented but refused: {e}");
            }
        }
    }

    #[test]
    fn documented_identity_inputs_are_what_the_service_accepts() {
        assert_input::<UserInput, vexil_service::NewUser>(
            "UserInput",
            &json!({"name": "ana", "password": "long enough", "displayName": "Ana"}),
            &json!({"name": "ana", "password": "long enough"}),
        );
        assert_input::<UserPatch, vexil_service::UserPatch>(
            "UserPatch",
            &json!({"displayName": "Ana", "password": "long enough", "disabled": true}),
            &json!({}),
        );
        assert_input::<RoleInput, vexil_service::RoleInput>(
            "RoleInput",
            &json!({"name": "ops", "description": "x", "permissions": ["flag:read"]}),
            &json!({"permissions": ["flag:read"]}),
        );
        assert_input::<BindingInput, vexil_service::NewBinding>(
            "BindingInput",
            &json!({"subject": "user:ana", "role": "viewer", "namespace": "*"}),
            &json!({"subject": "user:ana", "role": "viewer", "namespace": "*"}),
        );
        assert_input::<ApiTokenInput, vexil_service::NewToken>(
            "ApiTokenInput",
            &json!({"name": "ci", "role": "evaluator", "namespace": "*", "expiresAt": 1}),
            &json!({"name": "ci", "role": "evaluator", "namespace": "*"}),
        );
    }

    #[test]
    fn free_form_schemas_render_as_json_schema() {
        let v = serde_json::to_value(FlagValue::schema()).unwrap_or_default();
        assert_eq!(v["oneOf"].as_array().map(Vec::len), Some(4));
        assert!(matches!(Metadata::schema(), RefOr::T(_)));
    }
}
