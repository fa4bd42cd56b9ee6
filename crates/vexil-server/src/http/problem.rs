//! RFC 9457 problem details: the one mapping from [`ServiceError`] to HTTP. The match is
//! exhaustive, so a new service error does not compile until it has a status here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use vexil_core::Violation;
use vexil_service::ServiceError;

/// An RFC 9457 problem (`application/problem+json`): every REST error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URN naming the problem kind, e.g. `urn:vexil:problem:version-conflict`.
    #[serde(rename = "type")]
    #[schema(example = "urn:vexil:problem:not-found")]
    pub kind: String,
    /// Short, stable summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this case.
    pub detail: String,
    /// One entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    retry_after: Option<u32>,
    #[serde(skip)]
    challenge: bool,
}

/// One invalid field.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted JSON path of the field (empty for the document itself).
    pub field: String,
    /// The rule it broke.
    pub message: String,
}

impl Problem {
    /// A problem of the given status and slug.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind: format!("urn:vexil:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            challenge: false,
        }
    }

    /// 400 for a body that cannot be read as the JSON the route expects.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    fn with_violations(mut self, violations: &[Violation]) -> Self {
        self.errors = violations
            .iter()
            .map(|v| FieldError {
                field: v.path.clone(),
                message: v.message.clone(),
            })
            .collect();
        self
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let detail = e.to_string();
        match e {
            ServiceError::NotFound { .. } => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
            }
            ServiceError::AlreadyExists { .. } => Problem::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Already exists",
                detail,
            ),
            ServiceError::VersionConflict { .. } => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-conflict",
                "Version conflict",
                detail,
            ),
            ServiceError::Invalid { violations } => {
                let detail = match violations.as_slice() {
                    [one] => one.to_string(),
                    many => format!("{} fields are invalid", many.len()),
                };
                Problem::new(StatusCode::BAD_REQUEST, "invalid", "Invalid input", detail)
                    .with_violations(&violations)
            }
            ServiceError::Conflict { message } => {
                Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", message)
            }
            ServiceError::Unavailable { retry_after_secs } => {
                let mut p = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Service unavailable",
                    detail,
                );
                p.retry_after = Some(retry_after_secs);
                p
            }
            ServiceError::Unauthenticated { .. } => {
                let mut p = Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "Unauthenticated",
                    detail,
                );
                p.challenge = true;
                p
            }
            ServiceError::Forbidden { .. } => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
            }
            ServiceError::RateLimited { retry_after_secs } => {
                let mut p = Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many requests",
                    detail,
                );
                p.retry_after = Some(retry_after_secs);
                p
            }
            ServiceError::Internal => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an internal error occurred; it has been logged",
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.retry_after;
        let challenge = self.challenge;
        let mut resp = (status, axum::Json(self)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vexil\""),
            );
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// The error type of every REST handler.
#[derive(Debug)]
pub struct ApiError(pub Problem);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e.into())
    }
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_core::domain::ResourceKind;

    #[test]
    fn every_service_error_maps_to_a_4xx_or_5xx_with_a_urn() {
        let cases = [
            (
                ServiceError::NotFound {
                    kind: ResourceKind::Flag,
                    namespace: "n".into(),
                    key: "k".into(),
                },
                404,
            ),
            (
                ServiceError::AlreadyExists {
                    kind: ResourceKind::Flag,
                    namespace: "n".into(),
                    key: "k".into(),
                },
                409,
            ),
            (
                ServiceError::VersionConflict {
                    kind: ResourceKind::Flag,
                    namespace: "n".into(),
                    key: "k".into(),
                    expected: 1,
                    actual: 2,
                },
                412,
            ),
            (ServiceError::invalid("variants", "bad"), 400),
            (
                ServiceError::Conflict {
                    message: "x".into(),
                },
                409,
            ),
            (
                ServiceError::Unavailable {
                    retry_after_secs: 1,
                },
                503,
            ),
            (
                ServiceError::Unauthenticated {
                    message: "x".into(),
                },
                401,
            ),
            (
                ServiceError::Forbidden {
                    permission: vexil_core::identity::Permission::RbacAdmin,
                    namespace: "*".into(),
                },
                403,
            ),
            (
                ServiceError::RateLimited {
                    retry_after_secs: 1,
                },
                429,
            ),
            (ServiceError::Internal, 500),
        ];
        for (e, status) in cases {
            let p = Problem::from(e);
            assert_eq!(p.status, status);
            assert!(p.kind.starts_with("urn:vexil:problem:"));
        }
    }

    #[test]
    fn invalid_input_names_each_field() {
        let p = Problem::from(ServiceError::invalid(
            "defaultVariant",
            "\"x\" is not one of the variants [a]",
        ));
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].field, "defaultVariant");
        assert!(p.detail.contains("defaultVariant"));
    }

    #[test]
    fn unauthenticated_carries_a_bearer_challenge_and_rate_limited_a_retry_after() {
        let r = Problem::from(ServiceError::Unauthenticated {
            message: "x".into(),
        })
        .into_response();
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"vexil\"")
        );
        let r = Problem::from(ServiceError::RateLimited {
            retry_after_secs: 6,
        })
        .into_response();
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("6")
        );
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let r = Problem::from(ServiceError::Unavailable {
            retry_after_secs: 3,
        })
        .into_response();
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
