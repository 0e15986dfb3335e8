//! Functions over HTTP, and everything that joins `cloudlet-core`'s function service to the
//! outside. This module holds the routes: deploying, versions, rollback, environment secrets and
//! logs (admin API), invoking (`POST /v1/apps/{app}/functions/{name}`), and [`run`], the one place
//! that runs a function for a caller. Its submodules each do one job:
//!
//! - [`http`]: HTTP functions (`/v1/apps/{app}/http/{name}/…`): a request in, a response out.
//! - [`triggers`]: the background loops that run functions on data events and schedules.
//! - [`engine`]: [`WorkerEngine`], the adapter to `cloudlet-js`'s worker pool (the one place
//!   where engine types meet the server, see `docs/architecture.md`).
//! - [`capabilities`]: what a running function may ask of the server (`ctx.db`, `fetch`), each
//!   one module with its JavaScript, registered in one place.

mod capabilities;
mod engine;
mod http;
mod triggers;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::http::HttpAnswer;
use cloudlet_core::functions::{
    Deploy, DeployPlan, EngineError, FunctionError, FunctionInfo, Invoke, LogEntry, Trigger,
};
use cloudlet_store::LogQuery;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use capabilities::{Fetcher, all as capabilities};
pub use engine::WorkerEngine;
pub use triggers::run_schedules;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, CallerOf, Json, Path, Query, RawJson, TargetApp};
use crate::openapi::Routes;
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Routes {
    let deploys =
        OpenApiRouter::new().routes(routes!(show_function, deploy_function, delete_function));
    let rest = OpenApiRouter::new()
        .routes(routes!(list_functions))
        .routes(routes!(rollback_function))
        .routes(routes!(list_env))
        .routes(routes!(set_env, delete_env))
        .routes(routes!(logs))
        .routes(routes!(invoke))
        .routes(routes!(http::http_function))
        .routes(routes!(http::http_function_path));
    with_body_limit(deploys, limits, limits.deploy).merge(with_body_limit(
        rest,
        limits,
        limits.json,
    ))
}

/// `…/functions/{name}` and `…/env/{name}`.
#[derive(Deserialize)]
struct NamePath {
    name: String,
}

/// `{"items": […]}` of a listing.
#[derive(Serialize, ToSchema)]
struct Items<T> {
    items: Vec<T>,
}

/// What a dry run of a deploy would do.
#[derive(Serialize, ToSchema)]
struct DeployPlanned {
    name: String,
    plan: DeployPlan,
}

/// The app's functions and their active versions.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/functions", tag = "functions",
    params(("app" = AppName, Path)), responses((status = 200, body = Items<FunctionInfo>)))]
async fn list_functions(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<Response, ApiError> {
    let functions = state.functions().list(&app).await?;
    Ok(axum::Json(Items { items: functions }).into_response())
}

/// A function: its active version's settings and sources, and its versions.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/functions/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)),
    responses((status = 200, body = Object, description = "the function")))]
async fn show_function(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(state.functions().show(&app, &name).await?).into_response())
}

/// Deploys a new version (or, with `dry_run`, says whether it would change anything).
#[utoipa::path(put, path = "/v1/admin/apps/{app}/functions/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)), request_body = Deploy,
    responses((status = 201, body = FunctionInfo, description = "deployed"),
        (status = 200, body = DeployPlanned, description = "planned")))]
async fn deploy_function(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    let deploy: Deploy = serde_json::from_value(body)
        .map_err(|e| ApiError::new(Code::InvalidFunction, e.to_string()))?;
    if deploy.dry_run {
        let plan = state.functions().plan(&app, &name, deploy).await?;
        return Ok(axum::Json(DeployPlanned { name, plan }).into_response());
    }
    let consumes = deploy
        .triggers
        .iter()
        .any(|t| matches!(t, cloudlet_core::functions::TriggerDef::Queue(_)));
    let deployed = state.functions().deploy(&app, &name, deploy).await?;
    if consumes {
        // Messages may be waiting for this consumer: the app is worth a look now.
        let now = state.queues().now_ms();
        // The deploy is done either way; the dispatcher also looks again within a second.
        if let Err(e) = state.queues().touch(&app, now).await {
            tracing::warn!(app = %app, error = %e, "could not hint the queues");
        }
        state.queues().doorbell().notify_one();
    }
    Ok((StatusCode::CREATED, axum::Json(deployed)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: i64,
}

/// Makes an earlier version the active one.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/functions/{name}/rollback", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)), request_body = Rollback,
    responses((status = 200, body = FunctionInfo)))]
async fn rollback_function(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<Rollback>,
) -> Result<Response, ApiError> {
    let info = state
        .functions()
        .rollback(&app, &name, body.version)
        .await?;
    Ok(axum::Json(info).into_response())
}

/// Deletes a function and all its versions.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/functions/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_function(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    state.functions().delete(&app, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The names of the app's environment secrets (never their values).
#[utoipa::path(get, path = "/v1/admin/apps/{app}/env", tag = "functions",
    params(("app" = AppName, Path)), responses((status = 200, body = EnvNames)))]
async fn list_env(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<Response, ApiError> {
    let names = state.functions().env_names(&app).await?;
    Ok(axum::Json(EnvNames { names }).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnvValue {
    value: String,
}

/// Sets an environment secret, sealed at rest.
#[utoipa::path(put, path = "/v1/admin/apps/{app}/env/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)), request_body = EnvValue,
    responses((status = 204, description = "set")))]
async fn set_env(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<EnvValue>,
) -> Result<Response, ApiError> {
    state
        .functions()
        .set_env(&app, &name, Some(&body.value))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(delete, path = "/v1/admin/apps/{app}/env/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)),
    responses((status = 204, description = "removed")))]
async fn delete_env(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    state.functions().set_env(&app, &name, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, ToSchema)]
struct EnvNames {
    names: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LogParams {
    function: Option<String>,
    outcome: Option<String>,
    /// Entries older than this id (the next page).
    before: Option<i64>,
    /// Entries newer than this id, oldest first (following).
    after: Option<i64>,
    limit: Option<usize>,
}

/// The invocation log, newest first (or, with `after`, oldest first from there).
#[utoipa::path(get, path = "/v1/admin/apps/{app}/logs", tag = "functions",
    params(("app" = AppName, Path), LogParams),
    responses((status = 200, body = Items<LogEntry>)))]
async fn logs(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(Code::InvalidQuery, "limit is 1 to 500"));
    }
    let query = LogQuery {
        function: params.function,
        outcome: params.outcome,
        before_id: params.before,
        after_id: params.after,
        limit,
    };
    let items = state.functions().logs(&app, query).await?;
    Ok(axum::Json(Items { items }).into_response())
}

/// Calls a function with a JSON object as its event; answers its result.
#[utoipa::path(post, path = "/v1/apps/{app}/functions/{name}", tag = "functions",
    params(("app" = AppName, Path), ("name" = String, Path)),
    request_body(content = Object, description = "the event"),
    responses((status = 200, description = "the function's result, as JSON",
        content_type = "application/json")))]
async fn invoke(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
    RawJson(event): RawJson,
) -> Result<Response, ApiError> {
    // No look-up of the app: a missing app has no functions, and says so.
    let request_id = crate::request_id::current();
    let result = run(
        &state,
        &app,
        &name,
        caller,
        Trigger::Call,
        &request_id,
        event,
    )
    .await?;
    let json: Box<str> = result.into();
    Ok((
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json.into_string(),
    )
        .into_response())
}

/// Runs `name` of `app` for `caller`, answering its host calls on the caller's behalf: the one
/// way every trigger (a call, a data event, a schedule) runs a function; HTTP functions go
/// through [`run_http`], which differs only in the answer it expects.
pub(crate) async fn run(
    state: &AppState,
    app: &AppName,
    name: &str,
    caller: Caller,
    trigger: Trigger,
    request_id: &str,
    event: Box<RawValue>,
) -> Result<Box<RawValue>, FunctionError> {
    let call = Invoke {
        app,
        name,
        caller: &caller,
        request_id,
        trigger,
    };
    let result = state.functions().invoke(call, event).await;
    count(state, app, trigger, result.as_ref().err());
    result
}

/// [`run`] for an HTTP function: its result must be an HTTP answer.
async fn run_http(
    state: &AppState,
    app: &AppName,
    name: &str,
    caller: Caller,
    request_id: &str,
    event: Box<RawValue>,
) -> Result<HttpAnswer, FunctionError> {
    let call = Invoke {
        app,
        name,
        caller: &caller,
        request_id,
        trigger: Trigger::Http,
    };
    let result = state.functions().invoke_http(call, event).await;
    count(state, app, Trigger::Http, result.as_ref().err());
    result
}

/// Counts an invocation in the metrics, by trigger and outcome, and in the app's usage.
fn count(state: &AppState, app: &AppName, trigger: Trigger, error: Option<&FunctionError>) {
    if !matches!(error, Some(FunctionError::NotFound(_))) {
        state.usage().invocation(app);
    }
    let outcome = match error {
        None => "ok",
        Some(FunctionError::Failed(_)) => "function_error",
        Some(FunctionError::Timeout) => "function_timeout",
        Some(FunctionError::MemoryLimit) => "function_memory_limit",
        Some(FunctionError::ResultTooLarge(_)) => "function_result_too_large",
        Some(FunctionError::InvalidResponse(_)) => "function_invalid_response",
        Some(FunctionError::Overloaded) => "function_overloaded",
        Some(FunctionError::NotFound(_)) => "function_not_found",
        Some(FunctionError::Unauthenticated) => "missing_credentials",
        Some(_) => "other",
    };
    state.metrics().function(trigger.as_str(), outcome);
}

/// An event as JSON text, for a function.
pub(crate) fn raw(event: &Value) -> Result<Box<RawValue>, FunctionError> {
    serde_json::value::to_raw_value(event)
        .map_err(|e| FunctionError::Engine(EngineError(e.to_string())))
}
