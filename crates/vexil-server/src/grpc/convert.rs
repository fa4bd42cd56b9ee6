//! The protobuf boundary: `google.protobuf.Struct`/`Value` ↔ `serde_json::Value`, and the one
//! exhaustive mapping from [`ServiceError`] to [`tonic::Status`].

use prost_types::value::Kind;
use serde_json::{Map, Number, Value};
use tonic::{Code, Status};
use vexil_service::ServiceError;

/// Deepest nesting converted; deeper input is refused (INVALID_ARGUMENT) rather than recursed.
const MAX_DEPTH: usize = 128;

/// A protobuf value as JSON. Protobuf numbers are doubles; integral ones within ±2^53 become
/// JSON integers, as flagd does when it hands a context to its rule engine, so `1` from a
/// typed SDK and `1` from OFREP evaluate the same.
///
/// # Errors
/// A message when nesting exceeds the limit or a number is not finite.
pub fn to_json(v: &prost_types::Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the context nests deeper than {MAX_DEPTH} levels"));
    }
    Ok(match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n)?,
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .iter()
                .map(|x| to_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_map(s, depth + 1)?),
    })
}

fn number(n: f64) -> Result<Value, String> {
    if !n.is_finite() {
        return Err("numbers must be finite".into());
    }
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "integral and within ±2^53, so exact"
        )]
        return Ok(Value::from(n as i64));
    }
    Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| "numbers must be finite".into())
}

/// A `Struct` as a JSON object.
///
/// # Errors
/// As [`to_json`].
pub fn struct_to_map(s: &prost_types::Struct, depth: usize) -> Result<Map<String, Value>, String> {
    s.fields
        .iter()
        .map(|(k, v)| to_json(v, depth).map(|j| (k.clone(), j)))
        .collect()
}

/// An optional request context as a JSON object (absent → empty).
///
/// # Errors
/// INVALID_ARGUMENT for over-deep or non-finite input.
pub fn context(s: Option<&prost_types::Struct>) -> Result<Value, Status> {
    match s {
        None => Ok(Value::Object(Map::new())),
        Some(s) => struct_to_map(s, 0)
            .map(Value::Object)
            .map_err(Status::invalid_argument),
    }
}

/// [`to_json`] by value: keys and strings move into the JSON instead of being copied. The typed
/// resolves own their request, so an evaluation context converts without a copy.
///
/// # Errors
/// As [`to_json`].
pub fn into_json(v: prost_types::Value, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("the context nests deeper than {MAX_DEPTH} levels"));
    }
    Ok(match v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::NumberValue(n)) => number(n)?,
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::ListValue(l)) => Value::Array(
            l.values
                .into_iter()
                .map(|x| into_json(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Some(Kind::StructValue(s)) => Value::Object(into_map(s, depth + 1)?),
    })
}

/// [`struct_to_map`] by value, as [`into_json`].
///
/// # Errors
/// As [`to_json`].
pub fn into_map(s: prost_types::Struct, depth: usize) -> Result<Map<String, Value>, String> {
    s.fields
        .into_iter()
        .map(|(k, v)| into_json(v, depth).map(|j| (k, j)))
        .collect()
}

/// [`context`] by value, as [`into_json`].
///
/// # Errors
/// INVALID_ARGUMENT for over-deep or non-finite input.
pub fn into_context(s: Option<prost_types::Struct>) -> Result<Value, Status> {
    match s {
        None => Ok(Value::Object(Map::new())),
        Some(s) => into_map(s, 0)
            .map(Value::Object)
            .map_err(Status::invalid_argument),
    }
}

/// JSON as a protobuf value. JSON from our own store is bounded by serde_json's parse limit.
pub fn from_json(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(from_json).collect(),
        }),
        Value::Object(m) => Kind::StructValue(map_to_struct(m)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// A JSON object as a `Struct`.
pub fn map_to_struct(m: &Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), from_json(v))).collect(),
    }
}

/// Evaluation metadata as a `Struct`.
pub fn metadata_to_struct(m: &vexil_core::Metadata) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.to_owned(), from_json(v)))
            .collect(),
    }
}

/// The one mapping from service errors to gRPC statuses. Exhaustive: a new variant does not
/// compile until it is mapped here.
pub fn status(e: ServiceError) -> Status {
    let message = e.to_string();
    match e {
        ServiceError::NotFound { .. } => Status::new(Code::NotFound, message),
        ServiceError::AlreadyExists { .. } => Status::new(Code::AlreadyExists, message),
        ServiceError::VersionConflict { .. } => Status::new(Code::FailedPrecondition, message),
        ServiceError::Invalid { .. } => Status::new(Code::InvalidArgument, message),
        ServiceError::Conflict { .. } => Status::new(Code::FailedPrecondition, message),
        ServiceError::Unavailable { .. } => Status::new(Code::Unavailable, message),
        ServiceError::Unauthenticated { .. } => Status::new(Code::Unauthenticated, message),
        ServiceError::Forbidden { .. } => Status::new(Code::PermissionDenied, message),
        ServiceError::RateLimited { .. } => Status::new(Code::ResourceExhausted, message),
        ServiceError::Internal => Status::new(Code::Internal, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_core::domain::ResourceKind;

    #[test]
    fn every_service_error_has_its_grpc_code() {
        let nf = ServiceError::NotFound {
            kind: ResourceKind::Flag,
            namespace: "n".into(),
            key: "k".into(),
        };
        let cases = [
            (nf, Code::NotFound),
            (
                ServiceError::AlreadyExists {
                    kind: ResourceKind::Flag,
                    namespace: "n".into(),
                    key: "k".into(),
                },
                Code::AlreadyExists,
            ),
            (
                ServiceError::VersionConflict {
                    kind: ResourceKind::Flag,
                    namespace: "n".into(),
                    key: "k".into(),
                    expected: 1,
                    actual: 2,
                },
                Code::FailedPrecondition,
            ),
            (ServiceError::invalid("key", "bad"), Code::InvalidArgument),
            (
                ServiceError::Conflict {
                    message: "x".into(),
                },
                Code::FailedPrecondition,
            ),
            (
                ServiceError::Unavailable {
                    retry_after_secs: 1,
                },
                Code::Unavailable,
            ),
            (ServiceError::Internal, Code::Internal),
        ];
        for (e, code) in cases {
            assert_eq!(status(e).code(), code);
        }
    }

    #[test]
    fn integral_doubles_become_json_integers_and_others_stay_floats() {
        let v = |n: f64| prost_types::Value {
            kind: Some(Kind::NumberValue(n)),
        };
        assert_eq!(to_json(&v(3.0), 0), Ok(Value::from(3)));
        assert_eq!(to_json(&v(0.5), 0), Ok(serde_json::json!(0.5)));
        assert!(to_json(&v(f64::NAN), 0).is_err());
    }

    #[test]
    fn json_round_trips_through_protobuf_values() {
        let j = serde_json::json!({"a": [1, "x", true, null, {"b": 2.5}]});
        assert_eq!(to_json(&from_json(&j), 0), Ok(j));
    }

    #[test]
    fn by_value_conversion_matches_by_reference() {
        let j = serde_json::json!({"a": [1, "x", true, null, {"b": 2.5}], "c": "d", "e": 7});
        let Value::Object(m) = &j else {
            panic!("an object")
        };
        let s = map_to_struct(m);
        assert_eq!(into_context(Some(s.clone())).ok(), context(Some(&s)).ok());
        assert_eq!(into_context(Some(s)).ok(), Some(j));
        assert_eq!(into_context(None).ok(), Some(serde_json::json!({})));
    }

    #[test]
    fn over_deep_structs_are_refused_not_recursed() {
        let mut v = prost_types::Value {
            kind: Some(Kind::NullValue(0)),
        };
        for _ in 0..(MAX_DEPTH + 10) {
            v = prost_types::Value {
                kind: Some(Kind::ListValue(prost_types::ListValue { values: vec![v] })),
            };
        }
        assert!(to_json(&v, 0).is_err());
        assert!(into_json(v, 0).is_err());
    }
}
