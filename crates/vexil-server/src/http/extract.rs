//! Request extractors shared by the REST and OFREP handlers: the caller, JSON bodies that fail
//! as problem+json, and `If-Match`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;
use vexil_service::{Credential, Principal, RequestMeta};

use crate::AppState;

use super::BODY_LIMIT;
use super::problem::{ApiError, Problem};

/// The header OFREP clients send their API key in.
const API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

/// The request's principal, from `Authorization: Bearer <jwt or vx_ token>` or (for OFREP
/// clients) `X-API-Key: vx_…`. No credential gives the anonymous principal, which the service
/// layer refuses everything but opted-in evaluation; a credential that is present but invalid is
/// a 401 here, before any handler runs.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let meta = request_meta(parts);
        let credential = credential(&parts.headers)?;
        let principal = state.identity.authenticate(credential, meta)?;
        Ok(Caller(principal))
    }
}

/// Where a request came from (its request id and client address), for audit records and rate
/// limits. For routes that take no [`Caller`], such as login.
#[derive(Debug, Clone)]
pub struct Meta(pub RequestMeta);

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Meta(request_meta(parts)))
    }
}

fn request_meta(parts: &Parts) -> RequestMeta {
    RequestMeta {
        request_id: parts
            .headers
            .get(super::middleware::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        source_ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    }
}

/// Reads the credential headers. Malformed ones are refused rather than ignored, so a client
/// with a broken header learns it instead of silently being anonymous.
fn credential(headers: &HeaderMap) -> Result<Credential<'_>, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<&str>, ApiError> {
        match headers.get(&name) {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| {
                ApiError::from(vexil_service::ServiceError::Unauthenticated {
                    message: format!("the {name} header is not valid text"),
                })
            }),
        }
    };
    match (text(header::AUTHORIZATION)?, text(API_KEY)?) {
        (Some(auth), _) => {
            let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
            if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
                Ok(Credential::Bearer(rest.trim()))
            } else {
                Err(ApiError::from(
                    vexil_service::ServiceError::Unauthenticated {
                        message: "the Authorization header must be \"Bearer <token>\"".into(),
                    },
                ))
            }
        }
        (None, Some(key)) => Ok(Credential::ApiKey(key.trim())),
        (None, None) => Ok(Credential::None),
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

/// Reads the body bytes, refusing one over [`BODY_LIMIT`] with a 413 problem.
pub(crate) async fn body_bytes<S: Send + Sync>(
    req: Request,
    _state: &S,
) -> Result<Bytes, ApiError> {
    read_body(req.into_body()).await
}

/// Reads a request body of at most [`BODY_LIMIT`] bytes: over it → 413, a read error → 400,
/// each as problem+json, with the texts axum's `Bytes` extractor (under a `DefaultBodyLimit` of
/// `BODY_LIMIT`, which this replaces) gave. Every body a handler reads comes through here.
///
/// Read frame by frame rather than through that extractor: a body that arrives in one frame,
/// which a small request's does, is returned as it is, without the `Limited` wrapper (boxed
/// once more) and the list of buffers `collect` keeps. A declared length over the limit never
/// gets here: `RefuseOversized` answers it first.
pub(crate) async fn read_body(mut body: Body) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut more: Vec<u8> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            ApiError(Problem::bad_request(format!(
                "the request body could not be read: Failed to buffer the request body: {e}"
            )))
        })?;
        // Trailers end the data, as they did for `collect`.
        let Ok(data) = frame.into_data() else {
            break;
        };
        len += data.len();
        if len > BODY_LIMIT {
            return Err(ApiError(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                "Payload too large",
                "the request body exceeds the 1 MiB limit",
            )));
        }
        if first.is_none() && more.is_empty() {
            first = Some(data);
        } else {
            // A second frame: from now on the frames are copied together.
            if let Some(earlier) = first.take() {
                more.extend_from_slice(&earlier);
            }
            more.extend_from_slice(&data);
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(more)))
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

/// A versioned resource as JSON, with its version as the ETag.
pub fn with_etag(
    version: u64,
    body: impl serde::Serialize,
    status: StatusCode,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut r = (status, axum::Json(body)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&etag(version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}
