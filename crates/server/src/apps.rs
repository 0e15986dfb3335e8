//! HTTP routes for apps: the admin API (`/v1/admin/apps…`) and the per-app health check
//! (`/v1/apps/{app}/health`). Handlers parse, authorize, call [`cloudlet_core::apps::Apps`] and
//! map the result; nothing else.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::apps::{App, AppError, AppHealth, AppName, AppPage, CreatedApp, RotatedKey};
use cloudlet_core::realtime::AppSockets;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::ApiError;
use crate::extract::{Admin, AdminOf, CallerOf, Json, Query, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(create_app, list_apps))
        .routes(routes!(show_app, delete_app))
        .routes(routes!(rotate_key))
        .routes(routes!(app_usage))
        .routes(routes!(app_health));
    with_body_limit(routes, limits, limits.json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewApp {
    /// 2 to 40 of `a-z`, `0-9` and `-`, starting and ending with a letter or digit.
    #[schema(value_type = AppName)]
    name: String,
}

/// Creates an app; its secret key is in the answer, once.
#[utoipa::path(post, path = "/v1/admin/apps", tag = "apps", request_body = NewApp,
    responses((status = 201, body = CreatedApp)))]
async fn create_app(
    State(state): State<AppState>,
    _: Admin,
    Json(new): Json<NewApp>,
) -> Result<Response, ApiError> {
    let apps = state.apps().clone();
    let created = to_completion(async move { apps.create(&new.name).await }).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// 1 to 500; 100 by default.
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Apps in name order, a page at a time.
#[utoipa::path(get, path = "/v1/admin/apps", tag = "apps", params(ListParams),
    responses((status = 200, body = AppPage)))]
async fn list_apps(
    State(state): State<AppState>,
    _: Admin,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<AppPage>, ApiError> {
    let limit = params.limit.unwrap_or(100);
    Ok(axum::Json(
        state.apps().list(params.cursor.as_deref(), limit).await?,
    ))
}

#[utoipa::path(get, path = "/v1/admin/apps/{app}", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 200, body = App)))]
async fn show_app(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    caller.require_app_admin(&app)?;
    Ok(axum::Json(state.apps().get(&app).await?).into_response())
}

/// Deletes the app with all its data.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 204, description = "deleted")))]
async fn delete_app(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<StatusCode, ApiError> {
    caller.require_app_admin(&app)?;
    // Money first: an app whose orders may still be paid, or whose refunds are pending, is
    // not deleted (its notifications would find nobody to answer them).
    match state.payments().before_app_deleted(&app).await {
        Ok(()) => {}
        Err(cloudlet_core::payments::PayError::Store(cloudlet_store::StoreError::NoSuchTenant)) => {
        }
        Err(e) => return Err(e.into()),
    }
    let apps = state.apps().clone();
    let auth = state.auth().clone();
    let data = state.data().clone();
    let functions = state.functions().clone();
    let queues = state.queues().clone();
    let files = state.files().clone();
    let realtime = state.realtime().clone();
    let usage = state.usage().clone();
    to_completion(async move {
        // Its sockets first: nothing of the app may reach them while it goes, nor of a new app
        // of the same name after.
        realtime.close_app(&app, AppSockets::All).await;
        let deleted = apps.delete(&app).await;
        // The blobs after the database: a file row never outlives its blob. Blobs left by a
        // deletion cut short are gone with the next deletion of the name.
        if deleted.is_ok()
            && let Err(e) = files.delete_app(&app).await
        {
            tracing::warn!(app = %app, error = %e, "could not delete the app's files");
        }
        // Forgotten whether or not the deletion finished: its row may be gone already, and
        // nothing cached of the old app may serve a new one of the same name.
        auth.forget_app(&app);
        data.forget_app(&app);
        // Again: a settings read in flight during the deletion may have cached the old app's.
        realtime.close_app(&app, AppSockets::All).await;
        functions.forget_app(&app);
        queues.forget(&app);
        usage.forget(&app);
        deleted
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the app's secret key; the old one stops working at once.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/keys/rotate", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 200, body = RotatedKey)))]
async fn rotate_key(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    caller.require_app_admin(&app)?;
    let apps = state.apps().clone();
    let realtime = state.realtime().clone();
    let rotated = to_completion(async move {
        let rotated = apps.rotate_key(&app).await;
        // The old key stops working at once: the sockets it opened too.
        realtime.close_app(&app, AppSockets::OfKey).await;
        rotated
    })
    .await?;
    Ok(axum::Json(rotated).into_response())
}

/// An app's recent traffic and what it holds now, for the console's overview.
#[derive(serde::Serialize, ToSchema)]
struct AppUsage {
    /// The last 60 minutes, oldest first: each `{at, requests, errors, client_errors,
    /// invocations, p99_ms}`, counted by the node that answers.
    #[schema(value_type = Vec<Object>)]
    minutes: Vec<crate::usage::Point>,
    /// The last 24 hours, the same way.
    #[schema(value_type = Vec<Object>)]
    hours: Vec<crate::usage::Point>,
    /// Realtime sockets open on this node.
    realtime_connections: usize,
    /// Uploaded files and their bytes (thumbnails counted).
    files: i64,
    file_bytes: i64,
}

/// The app's traffic over the last hour and day, its open sockets and its files (see
/// `docs/console.md`).
#[utoipa::path(get, path = "/v1/admin/apps/{app}/usage", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 200, body = AppUsage)))]
async fn app_usage(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<Response, ApiError> {
    let recent = state.usage().recent(&app);
    let files = state.files().usage(&app).await?;
    Ok(axum::Json(AppUsage {
        minutes: recent.minutes,
        hours: recent.hours,
        realtime_connections: state.realtime().sockets_of(&app).await,
        files: files.files,
        file_bytes: files.bytes,
    })
    .into_response())
}

/// Public: reads from the app's own database, opening it if it is closed. What a client or a
/// load balancer calls to check that one app answers.
#[utoipa::path(get, path = "/v1/apps/{app}/health", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 200, body = AppHealth)))]
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
