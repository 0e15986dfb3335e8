//! HTTP routes for data: collections (admin API) and records (`/v1/apps/{app}/collections/…`).
//! The caller is the admin token or the app's secret key (rules do not apply), a user with an
//! access token, or nobody.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::apps::AppName;
use cloudlet_core::data::{
    CollectionDef, CollectionView, DataError, ListRequest, Plan, RecordPage, Write,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::ApiError;
use crate::extract::{AdminOf, CallerOf, Json, Path, Query, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(list_collections))
        .routes(routes!(show_collection, put_collection, drop_collection))
        .routes(routes!(check_collection))
        .routes(routes!(list_records, create_record))
        .routes(routes!(get_record, update_record, delete_record))
        .routes(routes!(batch));
    with_body_limit(routes, limits, limits.json)
}

#[derive(Deserialize)]
struct CollectionName {
    name: String,
}

/// `…/collections/{collection}/records`.
#[derive(Deserialize)]
struct RecordsPath {
    collection: String,
}

/// `…/collections/{collection}/records/{id}`.
#[derive(Deserialize)]
struct RecordPath {
    collection: String,
    id: String,
}

/// What a dry run of a collection change would do.
#[derive(Serialize, ToSchema)]
struct CollectionPlan {
    name: String,
    plan: Plan,
}

/// The answer to `PUT …/collections/{name}`: the collection, or the plan of a dry run.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum CollectionChange {
    Done(CollectionView),
    Planned(CollectionPlan),
}

/// The app's collections.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/collections", tag = "data",
    params(("app" = AppName, Path)), responses((status = 200, body = Vec<CollectionView>)))]
async fn list_collections(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<Response, ApiError> {
    Ok(axum::Json(state.data().collections(&app).await?).into_response())
}

#[utoipa::path(get, path = "/v1/admin/apps/{app}/collections/{name}", tag = "data",
    params(("app" = AppName, Path), ("name" = String, Path)),
    responses((status = 200, body = CollectionView)))]
async fn show_collection(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(CollectionName { name }): Path<CollectionName>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(state.data().collection_view(&app, &name).await?).into_response())
}

/// Creates or changes a collection (`dry_run` plans it, `force` lets it lose data).
#[utoipa::path(put, path = "/v1/admin/apps/{app}/collections/{name}", tag = "data",
    params(("app" = AppName, Path), ("name" = String, Path)), request_body = CollectionDef,
    responses((status = 201, body = CollectionView, description = "created"),
        (status = 200, body = CollectionChange, description = "changed, or planned")))]
async fn put_collection(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(CollectionName { name }): Path<CollectionName>,
    Json(def): Json<CollectionDef>,
) -> Result<Response, ApiError> {
    if def.dry_run {
        let plan = state.data().plan_collection(&app, &name, def).await?;
        let planned = CollectionChange::Planned(CollectionPlan { name, plan });
        return Ok(axum::Json(planned).into_response());
    }
    let (view, created) = state.data().put_collection(&app, &name, def).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(CollectionChange::Done(view))).into_response())
}

/// What checking a definition found: whether it is valid, what putting it would do, or what is
/// wrong with it.
#[derive(Serialize, ToSchema)]
struct CollectionCheck {
    valid: bool,
    plan: Option<Plan>,
    problem: Option<Problem>,
}

/// What is wrong with a definition: the error `PUT` would answer, and for a rule, which rule and
/// where in it (in characters from 0).
#[derive(Serialize, ToSchema)]
struct Problem {
    code: &'static str,
    message: String,
    rule: Option<&'static str>,
    position: Option<usize>,
}

/// Checks a definition and changes nothing (the console checks rules as they are typed): the
/// plan, or the problem with the rule and the position it is at. An error only for what is not
/// the definition's fault (no such app).
#[utoipa::path(post, path = "/v1/admin/apps/{app}/collections/{name}/check", tag = "data",
    params(("app" = AppName, Path), ("name" = String, Path)), request_body = CollectionDef,
    responses((status = 200, body = CollectionCheck)))]
async fn check_collection(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(CollectionName { name }): Path<CollectionName>,
    Json(def): Json<CollectionDef>,
) -> Result<axum::Json<CollectionCheck>, ApiError> {
    let rules = def.rules.clone();
    let problem = match state.data().plan_collection(&app, &name, def).await {
        Ok(plan) => {
            return Ok(axum::Json(CollectionCheck {
                valid: true,
                plan: Some(plan),
                problem: None,
            }));
        }
        Err(DataError::InvalidRule { rule, error }) => Problem {
            code: "invalid_collection",
            message: format!("{rule} rule: {}", error.message),
            rule: Some(rule),
            // The parser counts bytes; a person's editor counts characters.
            position: rules.get(rule).map(|text| {
                let text = text.as_deref().unwrap_or_default();
                text.char_indices()
                    .take_while(|(at, _)| *at < error.position)
                    .count()
            }),
        },
        Err(e @ DataError::InvalidCollection(_)) => Problem {
            code: "invalid_collection",
            message: e.to_string(),
            rule: None,
            position: None,
        },
        Err(e) => return Err(e.into()),
    };
    Ok(axum::Json(CollectionCheck {
        valid: false,
        plan: None,
        problem: Some(problem),
    }))
}

/// Drops a collection and its records.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/collections/{name}", tag = "data",
    params(("app" = AppName, Path), ("name" = String, Path)),
    responses((status = 204, description = "dropped")))]
async fn drop_collection(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(CollectionName { name }): Path<CollectionName>,
) -> Result<StatusCode, ApiError> {
    state.data().drop_collection(&app, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct GetParams {
    fields: Option<String>,
    expand: Option<String>,
}

/// Records the caller may list, filtered, sorted and paged (see docs/data.md).
#[utoipa::path(get, path = "/v1/apps/{app}/collections/{collection}/records", tag = "data",
    params(("app" = AppName, Path), ("collection" = String, Path, example = "todos"), ListRequest),
    responses((status = 200, body = RecordPage)))]
async fn list_records(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(RecordsPath { collection }): Path<RecordsPath>,
    Query(request): Query<ListRequest>,
) -> Result<Response, ApiError> {
    let page = state
        .data()
        .list(&app, &collection, &caller, request)
        .await?;
    Ok(axum::Json(page).into_response())
}

#[utoipa::path(post, path = "/v1/apps/{app}/collections/{collection}/records", tag = "data",
    params(("app" = AppName, Path), ("collection" = String, Path, example = "todos")),
    request_body(content = Object, description = "the record's fields"),
    responses((status = 201, body = Object, description = "the record")))]
async fn create_record(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(RecordsPath { collection }): Path<RecordsPath>,
    Json(data): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let record = state
        .data()
        .create(&app, &collection, &caller, data)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

#[utoipa::path(get, path = "/v1/apps/{app}/collections/{collection}/records/{id}", tag = "data",
    params(("app" = AppName, Path), ("collection" = String, Path, example = "todos"), ("id" = String, Path), GetParams),
    responses((status = 200, body = Object, description = "the record")))]
async fn get_record(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<RecordPath>,
    Query(params): Query<GetParams>,
) -> Result<Response, ApiError> {
    let record = state
        .data()
        .get(
            &app,
            &path.collection,
            &caller,
            &path.id,
            params.fields.as_deref(),
            params.expand.as_deref(),
        )
        .await?;
    Ok(axum::Json(record).into_response())
}

#[utoipa::path(patch, path = "/v1/apps/{app}/collections/{collection}/records/{id}", tag = "data",
    params(("app" = AppName, Path), ("collection" = String, Path, example = "todos"), ("id" = String, Path)),
    request_body(content = Object, description = "the fields to change"),
    responses((status = 200, body = Object, description = "the record")))]
async fn update_record(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<RecordPath>,
    Json(data): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let record = state
        .data()
        .update(&app, &path.collection, &caller, &path.id, data)
        .await?;
    Ok(axum::Json(record).into_response())
}

#[utoipa::path(delete, path = "/v1/apps/{app}/collections/{collection}/records/{id}", tag = "data",
    params(("app" = AppName, Path), ("collection" = String, Path, example = "todos"), ("id" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_record(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(path): Path<RecordPath>,
) -> Result<StatusCode, ApiError> {
    state
        .data()
        .delete(&app, &path.collection, &caller, &path.id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Batch {
    operations: Vec<Write>,
}

/// What each operation of a batch answered, in order.
#[derive(Serialize, ToSchema)]
struct BatchResults {
    results: Vec<Value>,
}

/// `POST /v1/apps/{app}/batch`: several writes in one transaction, all or nothing.
#[utoipa::path(post, path = "/v1/apps/{app}/batch", tag = "data",
    params(("app" = AppName, Path)), request_body = Batch,
    responses((status = 200, body = BatchResults)))]
async fn batch(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<Batch>,
) -> Result<Response, ApiError> {
    let results = state.data().batch(&app, &caller, body.operations).await?;
    Ok(axum::Json(BatchResults { results }).into_response())
}
