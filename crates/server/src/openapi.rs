//! The API's contract: an OpenAPI 3.1 document generated from the handlers it describes. Every
//! route is registered through `utoipa_axum`'s `routes!` in an [`OpenApiRouter`] (clippy refuses
//! `Router::route` elsewhere), so the document is the route table: a route that is not in it
//! does not exist. It is served at `GET /v1/openapi.json`, and the tests walk every route it
//! lists.
//!
//! What every operation shares is added here rather than written on each handler: the error
//! body (`default`, with every code of [`Code::ALL`]) and the optional bearer credentials.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, ResponseBuilder, ServerBuilder,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use cloudlet_core::apps::AppName;

use crate::error::Code;
use crate::state::AppState;

/// The routes of one part of the API, with their contract.
pub type Routes = OpenApiRouter<AppState>;

pub const BEARER: &str = "bearer";
const ERROR: &str = "Error";

/// The route that serves the document itself.
pub fn routes() -> Routes {
    OpenApiRouter::new().routes(routes!(contract))
}

/// The OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "server",
    responses((status = 200, description = "this document", content_type = "application/json"))
)]
async fn contract(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "application/json")],
        state.contract().to_owned(),
    )
        .into_response()
}

/// Finishes the document collected from the routes: its description, the error body and the
/// bearer scheme on every operation, and OpenAPI's spelling of axum's wildcard segments.
pub fn finish(mut doc: OpenApi, public_url: &str) -> OpenApi {
    doc.info = InfoBuilder::new()
        .title("Cloudlet")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "A self-hosted serverless backend for mini programs. Every error has the `Error` \
             shape; `docs/api.md` says when each code is answered.",
        ))
        .build();
    doc.servers = Some(vec![ServerBuilder::new().url(public_url).build()]);
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(ERROR.into(), error_schema());
    // Named by the `{app}` parameters, which do not collect their schemas themselves.
    components.schemas.insert(
        <AppName as utoipa::ToSchema>::name().into_owned(),
        <AppName as utoipa::PartialSchema>::schema(),
    );
    components.security_schemes.insert(
        BEARER.into(),
        RefOr::T(SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token, an app's secret key, or a user's access token",
                ))
                .build(),
        )),
    );
    let error = ResponseBuilder::new()
        .description("an error: its code says which (see the `Error` schema)")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ERROR)))
                .build(),
        )
        .build();
    // Credentials are optional everywhere: each route says what it needs of the caller.
    let security = vec![
        SecurityRequirement::new(BEARER, Vec::<String>::new()),
        SecurityRequirement::default(),
    ];
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("default".into())
                .or_insert_with(|| RefOr::T(error.clone()));
            operation.security.get_or_insert_with(|| security.clone());
        }
        doc.paths.paths.insert(path.replace("{*", "{"), item);
    }
    doc
}

/// `{"error": {"code", "message", "request_id"}}`, with every code the API answers.
fn error_schema() -> RefOr<utoipa::openapi::schema::Schema> {
    let codes: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
    let schema = json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "request_id"],
                "properties": {
                    "code": { "type": "string", "enum": codes },
                    "message": { "type": "string" },
                    "request_id": { "type": "string" }
                }
            }
        }
    });
    // A literal of the JSON Schema subset utoipa models; it always parses.
    serde_json::from_value(schema).unwrap_or_else(|_| RefOr::T(Default::default()))
}
