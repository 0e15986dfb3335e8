//! HTTP routes for apps: the admin API (`/v1/admin/apps…`) and the per-app health check
//! (`/v1/apps/{app}/health`). Handlers parse, authorize, call [`cloudlet_core::apps::Apps`] and
//! map the result; nothing else.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloudlet_core::apps::{AppError, AppHealth, AppPage};
use serde::Deserialize;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::ApiError;
use crate::extract::{CallerOf, Json, Query, TargetApp};
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Router<AppState> {
    let routes = Router::new()
        .route("/v1/admin/apps", post(create_app).get(list_apps))
        .route("/v1/admin/apps/{app}", get(show_app).delete(delete_app))
        .route("/v1/admin/apps/{app}/keys/rotate", post(rotate_key))
        .route("/v1/apps/{app}/health", get(app_health));
    with_body_limit(routes, limits.json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
}

async fn create_app(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Json(new): Json<NewApp>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let apps = state.apps().clone();
    let created = to_completion(async move { apps.create(&new.name).await }).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_apps(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<AppPage>, ApiError> {
    caller.require_admin()?;
    let limit = params.limit.unwrap_or(100);
    Ok(axum::Json(
        state.apps().list(params.cursor.as_deref(), limit).await?,
    ))
}

async fn show_app(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    caller.require_app_admin(&app)?;
    Ok(axum::Json(state.apps().get(&app).await?).into_response())
}

async fn delete_app(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    caller.require_app_admin(&app)?;
    let apps = state.apps().clone();
    let auth = state.auth().clone();
    let data = state.data().clone();
    let functions = state.functions().clone();
    to_completion(async move {
        apps.delete(&app).await?;
        auth.forget_app(&app);
        data.forget_app(&app);
        functions.forget_app(&app);
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_key(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    caller.require_app_admin(&app)?;
    let apps = state.apps().clone();
    let rotated = to_completion(async move { apps.rotate_key(&app).await }).await?;
    Ok(axum::Json(rotated).into_response())
}

/// Public: reads from the app's own database, opening it if it is closed. What a client or a
/// load balancer calls to check that one app answers.
async fn app_health(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
) -> Result<axum::Json<AppHealth>, ApiError> {
    Ok(axum::Json(state.apps().health(&app).await?))
}

/// Runs a change that spans several stores as a task of its own, so that a client hanging up
/// half-way (which drops the handler) can not leave it half done.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, AppError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(&e)),
    }
}
