//! The OpenAPI 3.1 document of the admin REST API, served at
//! `/api/v1/openapi.json`, and its interactive reference at `/api/docs`.

use super::handlers::ApiDoc;
use crate::error::ErrorKind;
use axum::Router;
use serde::Serialize;
use std::sync::LazyLock;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{OpenApi, PartialSchema, ToSchema};

use utoipa_swagger_ui::SwaggerUi;

/// Where the API lives; the handlers' paths are relative to it.
pub const PREFIX: &str = "/api/v1";

/// Every error answer of the admin API.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// For people: what was wrong, naming the field.
    pub message: String,
    /// For programs: `invalid_argument`, `not_found`, `already_exists`,
    /// `conflict`, `unauthenticated`, `permission_denied` or `internal`.
    pub code: String,
}

static DOCUMENT: LazyLock<Document> = LazyLock::new(document);

/// The document: the handlers' operations under [`PREFIX`], each with the
/// errors it can answer and the bearer token it needs.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.title = "Switchboard admin API".into();
    doc.info.version = shared::SOFTWARE_VERSION.into();
    doc.info.description = Some(
        "Configuration, keys, usage and audit of a Switchboard gateway. Every call needs \
         `Authorization: Bearer <admin token>`; roles: admin, team_admin, viewer."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    let mut errors = vec![("ErrorBody".to_owned(), ErrorBody::schema())];
    ErrorBody::schemas(&mut errors);
    components.schemas.extend(errors);
    components.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let has_param = path.contains('{');
        for (method, operation) in [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Delete, &mut item.delete),
        ] {
            if let Some(operation) = operation {
                add_errors(operation, method, has_param);
                operation.security =
                    Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                        "admin_token",
                        Vec::<String>::new(),
                    )]);
            }
        }
        doc.paths.paths.insert(format!("{PREFIX}{path}"), item);
    }
    doc
}

/// The errors an operation can answer, from its shape: any call can be
/// unauthenticated, refused or fail inside; input can be invalid; a named
/// resource (in the path, or in the body where the handler lists a 404) can
/// be missing; a write can conflict with other configuration. Each is
/// answered with the one error body.
fn add_errors(operation: &mut Operation, method: HttpMethod, has_param: bool) {
    let names_resource = has_param || operation.responses.responses.contains_key("404");
    let reads_input = has_param
        || operation.request_body.is_some()
        || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let writes = !matches!(method, HttpMethod::Get);
    let kinds = [
        (ErrorKind::InvalidArgument, reads_input),
        (ErrorKind::Unauthenticated, true),
        (ErrorKind::PermissionDenied, true),
        (ErrorKind::NotFound, names_resource),
        (ErrorKind::Conflict, writes),
        (ErrorKind::Internal, true),
    ];
    for (kind, applies) in kinds {
        let (status, _, code) = kind.codes();
        if applies {
            let response = ResponseBuilder::new()
                .description(code)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            operation
                .responses
                .responses
                .insert(status.as_u16().to_string(), response.into());
        }
    }
}

/// `GET /api/v1/openapi.json` and the Swagger UI at `/api/docs` (its assets
/// are in the binary: the page works without internet).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new("/api/docs")
        .url(format!("{PREFIX}/openapi.json"), DOCUMENT.clone())
        .into()
}
