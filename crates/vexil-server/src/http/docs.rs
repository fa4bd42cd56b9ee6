//! The OpenAPI 3.1 document (generated from the handlers' `#[utoipa::path]` attributes and the
//! schemas in [`super::schema`]) and Swagger UI, both served by the router they describe.
//!
//! The document is checked in as `docs/openapi.json`; a test fails when the two differ.
//! Regenerate it with `VEXIL_UPDATE_OPENAPI=1 cargo test -p vexil-server openapi`.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::OpenApi;
use utoipa_swagger_ui::Config;

use super::problem::{FieldError, Problem};
use super::schema;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The document's fixed parts; paths are added by the router (see [`super::api`]).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Vexil",
        description = "Vexil's HTTP API: the REST admin API (`/api/v1`), OpenFeature Remote \
            Evaluation (`/ofrep/v1`) and the operations endpoints.\n\n\
            JSON bodies are camelCase; flags use flagd's field names. Updates and deletes honour \
            `If-Match` (the resource's ETag: its version in quotes): a stale \
            write gets 412 and is never applied. REST errors are RFC 9457 problem details \
            (`application/problem+json`); OFREP errors use OFREP's own bodies.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "auth", description = "Sessions (`POST /api/v1/auth/login`) and API tokens. Send either as `Authorization: Bearer <token>`; OFREP clients may send an API token as `X-API-Key`."),
        (name = "rbac", description = "Users, roles (sets of permissions) and role bindings (subject → role, in one namespace or `*`)."),
        (name = "namespaces", description = "Isolated sets of flags, segments and configuration entries."),
        (name = "flags", description = "Feature flags, in flagd's terms, with the kill switch."),
        (name = "segments", description = "Reusable rules, referenced from targeting as `{\"$ref\": key}`."),
        (name = "configs", description = "Dynamic configuration: JSON values held to optional JSON Schemas, with every version kept and rollback."),
        (name = "import-export", description = "flagd files in and out."),
        (name = "evaluation", description = "Native evaluation, with explanations."),
        (name = "audit", description = "The hash-chained log of every change."),
        (name = "watch", description = "WebSocket change streams, resumable from a revision."),
        (name = "ofrep", description = "OpenFeature Remote Evaluation Protocol: what OpenFeature's OFREP providers call. The namespace comes from `x-vexil-namespace`."),
        (name = "ops", description = "Health, readiness, this document and Swagger UI."),
    ),
    components(
        // Referenced only from hand-written schemas or responses.
        schemas(Problem, FieldError, schema::FlagDefinition),
        responses(
            schema::BadRequest,
            schema::NotFound,
            schema::Conflict,
            schema::PreconditionFailed,
            schema::PayloadTooLarge,
            schema::UnsupportedMediaType,
            schema::Unavailable,
            schema::Unauthorized,
            schema::Forbidden,
            schema::TooManyRequests,
        ),
    )
)]
pub struct ApiDoc;

/// The document as served and checked in: pretty JSON with a final newline.
pub fn openapi_json() -> String {
    let doc = super::openapi();
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

static DOCUMENT: LazyLock<String> = LazyLock::new(openapi_json);

/// This OpenAPI 3.1 document
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "ops",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object))
)]
pub async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

static SWAGGER: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::new([OPENAPI_PATH])));

fn swagger_file(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, SWAGGER.clone()) {
        Ok(Some(f)) => (
            [(header::CONTENT_TYPE, f.content_type)],
            f.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("Swagger UI has no file {file:?}"),
        )
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, file, "Swagger UI could not serve a file");
            Problem::from(vexil_service::ServiceError::Internal).into_response()
        }
    }
}

/// Swagger UI (redirects to /docs/)
///
/// Swagger UI lives under `/docs/` (its assets are relative).
#[utoipa::path(
    get,
    path = "/docs",
    tag = "ops",
    responses((status = 308, description = "To `/docs/`", headers(("Location" = String))))
)]
pub async fn docs_redirect() -> Redirect {
    // Relative, so that it still works behind a proxy that mounts Vexil under a prefix.
    Redirect::permanent("docs/")
}

/// Swagger UI
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "ops",
    responses((status = 200, description = "Swagger UI's page, reading this document", content_type = "text/html", body = String))
)]
pub async fn docs_index() -> Response {
    swagger_file("index.html")
}

/// A Swagger UI asset
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "ops",
    params(schema::DocsFilePath),
    responses(
        (status = 200, description = "The asset, with its media type"),
        (status = 404, response = schema::NotFound),
    )
)]
pub async fn docs_file(Path(file): Path<String>) -> Response {
    swagger_file(&file)
}
