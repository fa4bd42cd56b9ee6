//! Request extractors shared by the REST and OFREP handlers: the caller, JSON bodies that fail
//! as problem+json, and `If-Match`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use vexil_service::Principal;

use super::problem::{ApiError, Problem};

/// The request's principal. Authentication (JWT / API tokens) plugs in here; until then every
/// caller is anonymous, with its request id and address recorded for audit.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        Ok(Caller(Principal::anonymous(request_id, ip)))
    }
}

/// A JSON body, read as a `serde_json::Value`. Wrong content type → 415, too large → 413,
/// malformed → 400, each as problem+json.
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|m| m.eq_ignore_ascii_case("application/json") || m.ends_with("+json"))
}

/// Reads the body bytes, mapping axum's limit rejection to a 413 problem.
pub(crate) async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                "the request body exceeds the 1 MiB limit",
            ))
        } else {
            ApiError(Problem::bad_request(format!(
                "the request body could not be read: {e}"
            )))
        }
    })
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as application/json",
            )));
        }
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError(Problem::bad_request(format!("malformed JSON: {e}"))))
    }
}

/// `If-Match` as an expected version. Absent or `*` → no condition. An ETag we did not issue
/// can never match, so it is reported as a stale version (412).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get(header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let raw = raw.to_str().unwrap_or_default().trim();
        if raw == "*" {
            return Ok(IfMatch(None));
        }
        let tag = raw.trim_start_matches("W/").trim_matches('"');
        tag.parse::<u64>().map(|v| IfMatch(Some(v))).map_err(|_| {
            ApiError(Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "version-conflict",
                "Version conflict",
                format!("If-Match {raw} does not name a version of this resource"),
            ))
        })
    }
}

/// The ETag of a versioned resource.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}
