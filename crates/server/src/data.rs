//! HTTP routes for data: collections (admin API) and records (`/v1/apps/{app}/collections/…`).
//! The caller is the admin token or the app's secret key (rules do not apply), a user with an
//! access token, or nobody.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloudlet_core::data::{CollectionDef, ListRequest, Write};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::ApiError;
use crate::extract::{CallerOf, Json, Path, Query, TargetApp};
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Router<AppState> {
    let routes = Router::new()
        .route("/v1/admin/apps/{app}/collections", get(list_collections))
        .route(
            "/v1/admin/apps/{app}/collections/{name}",
            get(show_collection)
                .put(put_collection)
                .delete(drop_collection),
        )
        .route(
            "/v1/apps/{app}/collections/{collection}/records",
            get(list_records).post(create_record),
        )
        .route(
            "/v1/apps/{app}/collections/{collection}/records/{id}",
            get(get_record).patch(update_record).delete(delete_record),
        )
        .route("/v1/apps/{app}/batch", post(batch));
    with_body_limit(routes, limits.json)
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

async fn list_collections(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.data().collections(&app).await?).into_response())
}

async fn show_collection(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(CollectionName { name }): Path<CollectionName>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.data().collection_view(&app, &name).await?).into_response())
}

async fn put_collection(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(CollectionName { name }): Path<CollectionName>,
    Json(def): Json<CollectionDef>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    if def.dry_run {
        let plan = state.data().plan_collection(&app, &name, def).await?;
        return Ok(axum::Json(serde_json::json!({ "name": name, "plan": plan })).into_response());
    }
    let (view, created) = state.data().put_collection(&app, &name, def).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view)).into_response())
}

async fn drop_collection(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(CollectionName { name }): Path<CollectionName>,
) -> Result<StatusCode, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.data().drop_collection(&app, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    filter: Option<String>,
    sort: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    cursor: Option<String>,
    #[serde(default)]
    count: bool,
    fields: Option<String>,
    expand: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    fields: Option<String>,
    expand: Option<String>,
}

async fn list_records(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(RecordsPath { collection }): Path<RecordsPath>,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let request = ListRequest {
        filter: params.filter,
        sort: params.sort,
        limit: params.limit,
        offset: params.offset,
        cursor: params.cursor,
        count: params.count,
        fields: params.fields,
        expand: params.expand,
    };
    let page = state
        .data()
        .list(&app, &collection, &caller, request)
        .await?;
    Ok(axum::Json(page).into_response())
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    operations: Vec<Write>,
}

/// `POST /v1/apps/{app}/batch`: several writes in one transaction, all or nothing.
async fn batch(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Json(body): Json<Batch>,
) -> Result<Response, ApiError> {
    let results = state.data().batch(&app, &caller, body.operations).await?;
    Ok(axum::Json(serde_json::json!({ "results": results })).into_response())
}
