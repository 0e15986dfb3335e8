//! HTTP routes for apps: the admin API (`/v1/admin/apps…`) and the per-app health check
//! (`/v1/apps/{app}/health`). Handlers parse, authorize, call [`cloudlet_core::apps::Apps`] and
//! map the result; nothing else.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::apps::{App, AppError, AppHealth, AppName, AppPage, CreatedApp, RotatedKey};
use cloudlet_core::realtime::AppSockets;
use serde::{Deserialize, Serialize};
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
        .routes(routes!(app_limits))
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
    let name = AppName::parse(&created.name).ok();
    let mut response = (StatusCode::CREATED, axum::Json(created)).into_response();
    if let Some(name) = name {
        response.extensions_mut().insert(Made(name));
    }
    Ok(response)
}

/// The app a request made, on its answer: for the console's audit log, whose entry names the
/// app a route acted on (this one's name comes in the body, not the path).
#[derive(Clone)]
pub struct Made(pub AppName);

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
    let access = state.access().clone();
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
        access.forget_app(&app);
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
    let auth = state.auth().clone();
    let access = state.access().clone();
    let rotated = to_completion(async move {
        let rotated = apps.rotate_key(&app).await;
        // Sends no longer take the old key on trust here (they check it anyway).
        access.forget_app(&app);
        // The old key stops working at once: the sockets it opened too, here and (told) on
        // the other nodes.
        realtime.close_app(&app, AppSockets::OfKey).await;
        auth.key_replaced(&app);
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

/// The limits every app of the instance runs under, from the instance's configuration (there
/// are no per-app overrides): what the console's Settings page shows.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppLimits {
    /// The largest JSON body of a request (`http.max_body_bytes`).
    pub max_body_bytes: usize,
    /// Connections one client address may hold (`http.max_connections_per_address`).
    pub max_connections_per_address: usize,
    pub access_token_ttl_secs: u64,
    pub session_ttl_days: u64,
    pub logins_per_ip_per_minute: u32,
    pub logins_per_app_per_minute: u32,
    pub password_failures_per_account_per_minute: u32,
    /// A function's time and memory when its settings name none, and the most they may name.
    pub function_default_timeout_ms: u64,
    pub function_max_timeout_ms: u64,
    pub function_default_memory_mb: u64,
    pub function_max_memory_mb: u64,
    /// Invocations of one app running or waiting at once.
    pub function_max_concurrent: usize,
    /// Invocation log entries kept per app.
    pub function_log_entries: i64,
    /// File quotas (0: none): per app, and per user within the app.
    pub file_app_bytes: u64,
    pub file_app_files: u64,
    pub file_user_bytes: u64,
    pub file_user_files: u64,
    /// Realtime sockets of the app at once (on each node), and of one user.
    pub realtime_max_connections: usize,
    pub realtime_max_connections_per_user: usize,
    /// The largest queue message, and how many queues an app may have.
    pub queue_max_payload_bytes: usize,
    pub queue_max_queues: usize,
}

impl AppLimits {
    pub fn of(
        config: &crate::Config,
        functions: &cloudlet_core::functions::FunctionLimits,
    ) -> Self {
        AppLimits {
            max_body_bytes: config.http.max_body_bytes,
            max_connections_per_address: config.http.max_connections_per_address,
            access_token_ttl_secs: config.auth.access_token_ttl_secs,
            session_ttl_days: config.auth.session_ttl_days,
            logins_per_ip_per_minute: config.auth.logins_per_ip_per_minute,
            logins_per_app_per_minute: config.auth.logins_per_app_per_minute,
            password_failures_per_account_per_minute: config
                .auth
                .password_failures_per_account_per_minute,
            function_default_timeout_ms: config.functions.default_timeout_ms,
            function_max_timeout_ms: config.functions.max_timeout_ms,
            function_default_memory_mb: config.functions.default_memory_mb,
            function_max_memory_mb: config.functions.max_memory_mb,
            function_max_concurrent: config.functions.max_concurrent_per_app,
            function_log_entries: functions.log_retention,
            file_app_bytes: config.files.app_bytes,
            file_app_files: config.files.app_files,
            file_user_bytes: config.files.user_bytes,
            file_user_files: config.files.user_files,
            realtime_max_connections: config.realtime.max_connections_per_app,
            realtime_max_connections_per_user: config.realtime.max_connections_per_user,
            queue_max_payload_bytes: cloudlet_core::queues::MAX_PAYLOAD_BYTES,
            queue_max_queues: cloudlet_core::queues::MAX_QUEUES,
        }
    }
}

/// The limits the app runs under: the instance's, the same for every app.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/limits", tag = "apps",
    params(("app" = AppName, Path)), responses((status = 200, body = AppLimits)))]
async fn app_limits(
    State(state): State<AppState>,
    AdminOf(_app): AdminOf,
) -> axum::Json<AppLimits> {
    axum::Json(state.app_limits().clone())
}
