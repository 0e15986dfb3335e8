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

use axum::Router;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::http::HttpAnswer;
use cloudlet_core::functions::{Deploy, EngineError, FunctionError, Invoke, Trigger};
use cloudlet_store::LogQuery;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

pub use capabilities::{Fetcher, all as capabilities};
pub use engine::WorkerEngine;
pub use triggers::{run_schedules, run_triggers};

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{CallerOf, Json, Path, Query, RawJson, TargetApp};
use crate::state::AppState;

pub fn router(limits: &BodyLimits) -> Router<AppState> {
    let deploys = Router::new().route(
        "/v1/admin/apps/{app}/functions/{name}",
        get(show_function)
            .put(deploy_function)
            .delete(delete_function),
    );
    let rest = Router::new()
        .route("/v1/admin/apps/{app}/functions", get(list_functions))
        .route(
            "/v1/admin/apps/{app}/functions/{name}/rollback",
            post(rollback_function),
        )
        .route("/v1/admin/apps/{app}/env", get(list_env))
        .route(
            "/v1/admin/apps/{app}/env/{name}",
            put(set_env).delete(delete_env),
        )
        .route("/v1/admin/apps/{app}/logs", get(logs))
        .route("/v1/apps/{app}/functions/{name}", post(invoke))
        .route("/v1/apps/{app}/http/{name}", any(http::http_route))
        .route("/v1/apps/{app}/http/{name}/{*path}", any(http::http_route));
    with_body_limit(deploys, limits.deploy).merge(with_body_limit(rest, limits.json))
}

/// `…/functions/{name}` and `…/env/{name}`.
#[derive(Deserialize)]
struct NamePath {
    name: String,
}

async fn list_functions(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let functions = state.functions().list(&app).await?;
    Ok(axum::Json(json!({ "items": functions })).into_response())
}

async fn show_function(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.functions().show(&app, &name).await?).into_response())
}

async fn deploy_function(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<Value>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let deploy: Deploy = serde_json::from_value(body)
        .map_err(|e| ApiError::new(Code::InvalidFunction, e.to_string()))?;
    if deploy.dry_run {
        let plan = state.functions().plan(&app, &name, deploy).await?;
        return Ok(axum::Json(json!({ "name": name, "plan": plan })).into_response());
    }
    let deployed = state.functions().deploy(&app, &name, deploy).await?;
    Ok((StatusCode::CREATED, axum::Json(deployed)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    version: i64,
}

async fn rollback_function(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<Rollback>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let info = state
        .functions()
        .rollback(&app, &name, body.version)
        .await?;
    Ok(axum::Json(info).into_response())
}

async fn delete_function(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.functions().delete(&app, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_env(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let names = state.functions().env_names(&app).await?;
    Ok(axum::Json(json!({ "names": names })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvValue {
    value: String,
}

async fn set_env(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
    Json(body): Json<EnvValue>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    state
        .functions()
        .set_env(&app, &name, Some(&body.value))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_env(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.functions().set_env(&app, &name, None).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogParams {
    function: Option<String>,
    outcome: Option<String>,
    /// Entries older than this id (the next page).
    before: Option<i64>,
    /// Entries newer than this id, oldest first (following).
    after: Option<i64>,
    limit: Option<usize>,
}

async fn logs(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    Query(params): Query<LogParams>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
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
    Ok(axum::Json(json!({ "items": items })).into_response())
}

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
async fn run(
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
    count(state, trigger, result.as_ref().err());
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
    count(state, Trigger::Http, result.as_ref().err());
    result
}

/// Counts an invocation in the metrics, by trigger and outcome.
fn count(state: &AppState, trigger: Trigger, error: Option<&FunctionError>) {
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
fn raw(event: &Value) -> Result<Box<RawValue>, FunctionError> {
    serde_json::value::to_raw_value(event)
        .map_err(|e| FunctionError::Engine(EngineError(e.to_string())))
}
