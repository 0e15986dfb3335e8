//! HTTP routes for data: collections (admin API) and records (`/v1/apps/{app}/collections/…`).
//! A request's actor is the admin token or the app's secret key (rules do not apply), a user's
//! access token, or nobody.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloudlet_core::access::Caller;
use cloudlet_core::auth::AuthError;
use cloudlet_core::data::{Actor, CollectionDef, ListRequest, Write};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{ApiError, Code};
use crate::extract::{CallerOf, Json, Path, Query, bearer};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
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
        .route("/v1/apps/{app}/batch", post(batch))
}

/// Who is calling: a JWT is a user's access token; any other bearer must be the admin token or
/// this app's secret key.
pub(crate) async fn actor(
    state: &AppState,
    app: &str,
    headers: &HeaderMap,
) -> Result<Actor, ApiError> {
    let token = bearer(headers).map_err(|()| AuthError::InvalidToken)?;
    match token {
        None => Ok(Actor::Anonymous),
        Some(token) if token.contains('.') => {
            let principal = state.auth().authenticate(app, Some(token)).await?;
            Ok(Actor::User {
                id: principal.user_id,
                provider: principal.provider,
                openid: principal.openid,
                unionid: principal.unionid,
            })
        }
        Some(key) => match state.access().authenticate(Some(key)).await? {
            Caller::Admin => Ok(Actor::Admin),
            Caller::App(own) if own == app => Ok(Actor::Admin),
            Caller::App(_) => Err(ApiError::new(
                Code::Forbidden,
                "this key belongs to another app",
            )),
        },
    }
}

async fn list_collections(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.data().collections(&app).await?).into_response())
}

async fn show_collection(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.data().collection_view(&app, &name).await?).into_response())
}

async fn put_collection(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    Path((app, collection)): Path<(String, String)>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
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
        .list(&app, &collection, &actor, request)
        .await?;
    Ok(axum::Json(page).into_response())
}

async fn create_record(
    State(state): State<AppState>,
    Path((app, collection)): Path<(String, String)>,
    headers: HeaderMap,
    Json(data): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
    let record = state.data().create(&app, &collection, &actor, data).await?;
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

async fn get_record(
    State(state): State<AppState>,
    Path((app, collection, id)): Path<(String, String, String)>,
    Query(params): Query<GetParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
    let record = state
        .data()
        .get(
            &app,
            &collection,
            &actor,
            &id,
            params.fields.as_deref(),
            params.expand.as_deref(),
        )
        .await?;
    Ok(axum::Json(record).into_response())
}

async fn update_record(
    State(state): State<AppState>,
    Path((app, collection, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(data): Json<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
    let record = state
        .data()
        .update(&app, &collection, &actor, &id, data)
        .await?;
    Ok(axum::Json(record).into_response())
}

async fn delete_record(
    State(state): State<AppState>,
    Path((app, collection, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
    state.data().delete(&app, &collection, &actor, &id).await?;
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
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Batch>,
) -> Result<Response, ApiError> {
    let actor = actor(&state, &app, &headers).await?;
    let results = state.data().batch(&app, &actor, body.operations).await?;
    Ok(axum::Json(serde_json::json!({ "results": results })).into_response())
}
