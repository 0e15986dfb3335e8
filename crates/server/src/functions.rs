//! HTTP routes for functions: deploying, versions, rollback, environment secrets and logs (admin
//! API), and invoking (`POST /v1/apps/{app}/functions/{name}`).
//!
//! It also joins `cloudlet-core`'s function service to its two outside parts: [`WorkerEngine`]
//! runs code on `cloudlet-js`'s worker pool (the one place where engine types meet the server,
//! see `docs/architecture.md`), and [`Host`] answers a running function's host calls: `ctx.db`
//! through the data service under the caller's rules (or none, for `ctx.admin.db`), and `fetch`
//! to public addresses only, unless the instance allows private ones.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use cloudlet_core::data::{Actor, ChangeEvent, Data, ListRequest, TRIGGER_DEPTH, Write};

use cloudlet_core::functions::{
    CompileFailure, Deploy, Engine, EngineError, FunctionError, HostCalls, HostFailure, Invoke,
    MAX_TRIGGER_DEPTH, Ran, Run, RunOutcome, Trigger,
};
use cloudlet_js::pool::{Pool, PoolError};
use cloudlet_js::protocol::{Bundle, HostOutcome, Invocation, Limits, Outcome};
use cloudlet_store::LogQuery;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, Code};
use crate::extract::{CallerOf, Json, Path, Query, RawJson};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/apps/{app}/functions", get(list_functions))
        .route(
            "/v1/admin/apps/{app}/functions/{name}",
            get(show_function)
                .put(deploy_function)
                .delete(delete_function),
        )
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
        .route("/v1/apps/{app}/http/{name}", any(http_route))
        .route("/v1/apps/{app}/http/{name}/{*path}", any(http_route))
}

async fn list_functions(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(app): Path<String>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    let functions = state.functions().list(&app).await?;
    Ok(axum::Json(json!({ "items": functions })).into_response())
}

async fn show_function(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    Ok(axum::Json(state.functions().show(&app, &name).await?).into_response())
}

async fn deploy_function(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state.admin_app(&caller, &app).await?;
    state.functions().delete(&app, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_env(
    State(state): State<AppState>,
    CallerOf(caller): CallerOf,
    Path(app): Path<String>,
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
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    CallerOf(caller): CallerOf,
    Path((app, name)): Path<(String, String)>,
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
    CallerOf(caller): CallerOf,
    Path(app): Path<String>,
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
    Path((app, name)): Path<(String, String)>,
    headers: HeaderMap,
    RawJson(event): RawJson,
) -> Result<Response, ApiError> {
    // No look-up of the app: a missing app has no functions, and says so.
    let actor = crate::data::actor(&state, &app, &headers).await?;
    let request_id = crate::request_id::current();
    let result = run(
        &state,
        &app,
        &name,
        actor,
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

/// Runs `name` of `app` for `actor`, answering its host calls on the actor's behalf.
async fn run(
    state: &AppState,
    app: &str,
    name: &str,
    actor: Actor,
    trigger: Trigger,
    request_id: &str,
    event: Box<RawValue>,
) -> Result<Box<RawValue>, FunctionError> {
    let host = Arc::new(Host {
        data: state.data().clone(),
        app: app.to_owned(),
        actor: actor.clone(),
        fetch: state.fetcher().clone(),
    });
    let call = Invoke {
        app,
        name,
        actor: &actor,
        request_id,
        trigger,
    };
    let result = state.functions().invoke(call, event, host).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(FunctionError::Failed(_)) => "function_error",
        Err(FunctionError::Timeout) => "function_timeout",
        Err(FunctionError::MemoryLimit) => "function_memory_limit",
        Err(FunctionError::ResultTooLarge(_)) => "function_result_too_large",
        Err(FunctionError::Overloaded) => "function_overloaded",
        Err(FunctionError::NotFound(_)) => "function_not_found",
        Err(FunctionError::Unauthenticated) => "missing_credentials",
        Err(_) => "other",
    };
    state.metrics().function(trigger.as_str(), outcome);
    result
}

/// Response headers a function may not set: the server owns the framing, and cookies on the
/// API's origin are not an app's to set.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "x-request-id",
    "set-cookie",
    "content-security-policy",
];

/// Request headers an HTTP function does not get.
const PRIVATE_REQUEST_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// `ANY /v1/apps/{app}/http/{name}/{*path}`: the request as the event, the function's answer
/// as the response. A function answers `{status, headers, body}` (a string body as is, any
/// other body as JSON); any other value is sent as JSON with status 200.
async fn http_route(
    State(state): State<AppState>,
    axum::extract::Path(params): axum::extract::Path<BTreeMap<String, String>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let app = params.get("app").cloned().unwrap_or_default();
    let name = params.get("name").cloned().unwrap_or_default();
    let path = format!("/{}", params.get("path").map(String::as_str).unwrap_or(""));
    let actor = crate::data::actor(&state, &app, &headers).await?;
    let query: Map<String, Value> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    // The caller's credentials are Cloudlet's (the admin token, a key, a user's token): they are
    // not the function's to see.
    let request_headers: Map<String, Value> = headers
        .iter()
        .filter(|(k, _)| !PRIVATE_REQUEST_HEADERS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let value = v.to_str().ok()?.to_owned();
            Some((k.as_str().to_owned(), Value::String(value)))
        })
        .collect();
    let event = raw(&json!({
        "method": method.as_str(),
        "path": path,
        "query": query,
        "headers": request_headers,
        "body": String::from_utf8_lossy(&body),
    }))?;
    let request_id = crate::request_id::current();
    let result = run(
        &state,
        &app,
        &name,
        actor,
        Trigger::Http,
        &request_id,
        event,
    )
    .await?;
    let result = serde_json::from_str(result.get()).unwrap_or(Value::Null);
    Ok(http_response(result))
}

fn http_response(result: Value) -> Response {
    let Some(status) = result
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return axum::Json(result).into_response();
    };
    let (body, json) = match result.get("body") {
        None | Some(Value::Null) => (String::new(), false),
        Some(Value::String(text)) => (text.clone(), false),
        Some(other) => (other.to_string(), true),
    };
    let mut response = (status, body).into_response();
    let out = response.headers_mut();
    // Every app's functions answer on the API's origin: a page one of them returns may not run
    // scripts there (it could read other apps' sessions), nor be sniffed into one.
    out.insert(
        axum::http::header::CONTENT_SECURITY_POLICY,
        axum::http::HeaderValue::from_static("sandbox"),
    );
    out.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    if json {
        out.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
    }
    let headers = result.get("headers").and_then(Value::as_object);
    for (name, value) in headers.into_iter().flatten().take(64) {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = axum::http::HeaderName::from_bytes(name.as_bytes());
        let value = axum::http::HeaderValue::from_str(&value);
        if let (Ok(name), Ok(value)) = (name, value)
            && !HOP_BY_HOP.contains(&name.as_str())
        {
            out.insert(name, value);
        }
    }
    response
}

/// Runs the functions whose triggers match each committed write, as the admin (rules do not
/// apply), until shutdown. Best effort: an event missed while the bus overflowed is logged, not
/// replayed.
pub async fn run_triggers(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut events = state.data().subscribe();
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = shutdown.changed() => return,
        };
        match event {
            Ok(event) if event.depth >= MAX_TRIGGER_DEPTH => {
                tracing::warn!(
                    app = event.app,
                    collection = event.collection,
                    "a write by triggered functions {MAX_TRIGGER_DEPTH} deep triggers nothing more"
                );
            }
            Ok(event) => {
                tokio::spawn(run_triggered(state.clone(), event));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "function triggers missed data events");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn run_triggered(state: AppState, event: ChangeEvent) {
    let functions = state.functions();
    let names = match functions
        .triggered_by(&event.app, &event.collection, event.operation)
        .await
    {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(app = event.app, error = %e, "could not look up triggers");
            return;
        }
    };
    for name in names {
        let state = state.clone();
        let event = event.clone();
        tokio::spawn(TRIGGER_DEPTH.scope(event.depth + 1, async move {
            let request_id = state.new_request_id();
            let payload = raw(&json!({
                "collection": event.collection,
                "id": event.id,
                "operation": event.operation,
                "old": event.old,
                "new": event.new,
            }));
            // The outcome is in the function log.
            let outcome = match payload {
                Ok(payload) => run(&state, &event.app, &name, Actor::Admin, Trigger::Data, &request_id, payload).await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                tracing::debug!(app = event.app, function = name, error = %e, "a triggered function failed");
            }
        }));
    }
}

/// Runs the functions whose schedules are due, as the admin, checking every second until
/// shutdown.
pub async fn run_schedules(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let due = match state.functions().claim_due(100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the schedules");
                continue;
            }
        };
        for (schedule, event) in due {
            let state = state.clone();
            tokio::spawn(async move {
                let request_id = state.new_request_id();
                let (app, name) = (&schedule.app, &schedule.function);
                let outcome = match raw(&event) {
                    Ok(event) => {
                        run(
                            &state,
                            app,
                            name,
                            Actor::Admin,
                            Trigger::Schedule,
                            &request_id,
                            event,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = outcome {
                    tracing::debug!(app = schedule.app, function = schedule.function, error = %e, "a scheduled run failed");
                }
            });
        }
    }
}

/// An event as JSON text, for a function.
fn raw(event: &Value) -> Result<Box<RawValue>, FunctionError> {
    serde_json::value::to_raw_value(event)
        .map_err(|e| FunctionError::Engine(cloudlet_core::functions::EngineError(e.to_string())))
}

/// Runs functions on the worker pool.
pub struct WorkerEngine {
    pub pool: Arc<Pool>,
}

#[async_trait]
impl Engine for WorkerEngine {
    async fn compile(
        &self,
        files: BTreeMap<String, String>,
        entry: String,
    ) -> Result<Result<String, CompileFailure>, EngineError> {
        match self.pool.compile(files, entry).await {
            Ok(Ok(bundle)) => serde_json::to_string(&bundle)
                .map(Ok)
                .map_err(|e| EngineError(e.to_string())),
            Ok(Err(e)) => Ok(Err(CompileFailure {
                file: e.file,
                line: e.line,
                column: e.column,
                message: e.message,
            })),
            Err(e) => Err(EngineError(e.to_string())),
        }
    }

    async fn run(&self, run: Run, host: Arc<dyn HostCalls>) -> Result<Ran, EngineError> {
        let invocation = Invocation {
            // The pool numbers it.
            id: 0,
            key: run.key,
            bundle: None,
            event: run.event,
            context: run.context,
            limits: Limits {
                memory_bytes: run.limits.memory_bytes,
                stack_bytes: run.limits.stack_bytes,
                timeout_ms: run.limits.timeout_ms,
                max_result_bytes: run.limits.max_result_bytes,
                max_log_lines: run.limits.max_log_lines,
            },
            seed: run.seed,
        };
        let code = Arc::clone(&run.bundle);
        let bundle = move || serde_json::from_str::<Bundle>(&code).map_err(|e| e.to_string());
        let finished = self
            .pool
            .invoke(&run.app, invocation, &bundle, &HostBridge(host))
            .await
            .map_err(|e| match e {
                PoolError::Died(_)
                | PoolError::Spawn(_)
                | PoolError::Closed
                | PoolError::BadCode(_) => EngineError(e.to_string()),
            })?;
        Ok(Ran {
            outcome: match finished.outcome {
                Outcome::Ok { json } => RunOutcome::Ok(json),
                Outcome::Error { message, stack } => RunOutcome::Error { message, stack },
                Outcome::Timeout => RunOutcome::Timeout,
                Outcome::MemoryLimit => RunOutcome::MemoryLimit,
                Outcome::ResultTooLarge { bytes } => RunOutcome::ResultTooLarge(bytes),
            },
            logs: finished
                .logs
                .into_iter()
                .map(|l| (l.level, l.message))
                .collect(),
            logs_dropped: finished.logs_dropped,
            memory_bytes: finished.memory_bytes,
            cold: finished.cold,
            micros: finished.micros,
        })
    }
}

struct HostBridge(Arc<dyn HostCalls>);

#[async_trait]
impl cloudlet_js::pool::Host for HostBridge {
    async fn call(&self, method: &str, args: Value) -> HostOutcome {
        match self.0.call(method, args).await {
            Ok(value) => HostOutcome::Ok { value },
            Err(HostFailure { code, message }) => HostOutcome::Error { code, message },
        }
    }
}

/// The host calls of one invocation.
pub struct Host {
    data: Data,
    app: String,
    actor: Actor,
    fetch: Fetcher,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DbCall {
    admin: bool,
    op: String,
    collection: Option<String>,
    id: Option<String>,
    data: Option<Map<String, Value>>,
    #[serde(default)]
    query: Map<String, Value>,
    operations: Option<Vec<Write>>,
}

fn failure(code: &str, message: impl Into<String>) -> HostFailure {
    HostFailure {
        code: code.to_owned(),
        message: message.into(),
    }
}

#[async_trait]
impl HostCalls for Host {
    async fn call(&self, method: &str, args: Value) -> Result<Value, HostFailure> {
        match method {
            "db" => self.db(args).await,
            "fetch" => self.fetch.fetch(args).await,
            other => Err(failure(
                "unknown_host_call",
                format!("no host call {other:?}"),
            )),
        }
    }
}

impl Host {
    async fn db(&self, args: Value) -> Result<Value, HostFailure> {
        let call: DbCall =
            serde_json::from_value(args).map_err(|e| failure("invalid_body", e.to_string()))?;
        let actor = if call.admin {
            Actor::Admin
        } else {
            self.actor.clone()
        };
        let data = &self.data;
        let app = &self.app;
        let collection = || {
            call.collection
                .clone()
                .ok_or_else(|| failure("invalid_body", "a collection name is needed"))
        };
        let id = || {
            call.id
                .clone()
                .ok_or_else(|| failure("invalid_body", "a record id is needed"))
        };
        let query = list_request(&call.query)?;
        let answer = match call.op.as_str() {
            "get" => {
                data.get(
                    app,
                    &collection()?,
                    &actor,
                    &id()?,
                    query.fields.as_deref(),
                    query.expand.as_deref(),
                )
                .await
            }
            "create" => {
                let record = call.data.clone().unwrap_or_default();
                data.create(app, &collection()?, &actor, record).await
            }
            "update" => {
                let changes = call.data.clone().unwrap_or_default();
                data.update(app, &collection()?, &actor, &id()?, changes)
                    .await
            }
            "delete" => data
                .delete(app, &collection()?, &actor, &id()?)
                .await
                .map(|()| Value::Null),
            "list" => data
                .list(app, &collection()?, &actor, query)
                .await
                .map(|page| serde_json::to_value(page).unwrap_or(Value::Null)),
            "batch" => data
                .batch(app, &actor, call.operations.clone().unwrap_or_default())
                .await
                .map(|results| json!({ "results": results })),
            other => {
                return Err(failure(
                    "invalid_body",
                    format!("no db operation {other:?}"),
                ));
            }
        };
        answer.map_err(|e| {
            let api = ApiError::from(e);
            failure(api.code.as_str(), api.message)
        })
    }
}

/// `{filter, sort, limit, offset, cursor, count, fields, expand}`, as the records API takes them.
fn list_request(query: &Map<String, Value>) -> Result<ListRequest, HostFailure> {
    let text = |key: &str| -> Result<Option<String>, HostFailure> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(failure("invalid_query", format!("{key} is a string"))),
        }
    };
    let number = |key: &str| -> Result<Option<usize>, HostFailure> {
        match query.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| failure("invalid_query", format!("{key} is a whole number"))),
        }
    };
    for key in query.keys() {
        let known = [
            "filter", "sort", "limit", "offset", "cursor", "count", "fields", "expand",
        ];
        if !known.contains(&key.as_str()) {
            return Err(failure(
                "invalid_query",
                format!("unknown parameter {key:?}"),
            ));
        }
    }
    Ok(ListRequest {
        filter: text("filter")?,
        fields: text("fields")?,
        expand: text("expand")?,
        sort: text("sort")?,
        limit: number("limit")?,
        offset: number("offset")?,
        cursor: text("cursor")?,
        count: query.get("count").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Outbound HTTP for functions: public addresses only (unless allowed), no redirects followed,
/// bounded time and size.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    allow_private: bool,
}

const MAX_FETCH_BODY: usize = 10 * 1024 * 1024;
/// How the resolver says it refused a name.
const NOT_PUBLIC: &str = "resolves to no public address";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchCall {
    url: String,
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<String>,
}

impl Fetcher {
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A proxy would resolve names itself, past the resolver's check.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(Arc::new(PublicOnly { allow_private }))
            .build()?;
        Ok(Fetcher {
            client,
            allow_private,
        })
    }

    async fn fetch(&self, args: Value) -> Result<Value, HostFailure> {
        let call: FetchCall =
            serde_json::from_value(args).map_err(|e| failure("fetch_failed", e.to_string()))?;
        let url = reqwest::Url::parse(&call.url)
            .map_err(|e| failure("fetch_failed", format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(failure("fetch_refused", "only http and https URLs"));
        }
        // Literal addresses are not resolved, so the resolver's check does not see them.
        let literal = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .and_then(|h| h.parse::<IpAddr>().ok());
        if let Some(ip) = literal.filter(|ip| !self.allow_private && !is_public(*ip)) {
            return Err(failure(
                "fetch_refused",
                format!("{ip} is not a public address"),
            ));
        }
        let method = reqwest::Method::from_bytes(call.method.as_bytes())
            .map_err(|e| failure("fetch_failed", e.to_string()))?;
        let mut request = self.client.request(method, url);
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        if let Some(body) = call.body {
            request = request.body(body);
        }
        let mut response = request.send().await.map_err(|e| {
            // The resolver's refusal comes back wrapped in the connection error.
            let mut source: Option<&dyn std::error::Error> = Some(&e);
            while let Some(error) = source {
                if error.to_string().contains(NOT_PUBLIC) {
                    return failure("fetch_refused", error.to_string());
                }
                source = error.source();
            }
            // Without the URL: its query may hold a key the caller must not see.
            failure("fetch_failed", e.without_url().to_string())
        })?;
        let status = response.status().as_u16();
        let final_url = response.url().to_string();
        let headers: Map<String, Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_owned(),
                    Value::String(v.to_str().ok()?.to_owned()),
                ))
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| failure("fetch_failed", e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_FETCH_BODY {
                return Err(failure(
                    "fetch_failed",
                    format!("the response is over {MAX_FETCH_BODY} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({
            "status": status,
            "headers": headers,
            "url": final_url,
            "body": String::from_utf8_lossy(&body),
        }))
    }
}

/// Resolves names, keeping only public addresses (unless private ones are allowed), so that a
/// name pointing at loopback, a private network or a cloud metadata address is refused.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{} {NOT_PUBLIC}", name.as_str()).into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (cloud
/// metadata lives there), shared, unspecified, multicast or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, c, _] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || (a == 192 && b == 0 && c == 0)
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            let segments = ip.segments();
            let octets = ip.octets();
            let embedded = |at: usize| {
                IpAddr::V4(std::net::Ipv4Addr::new(
                    octets[at],
                    octets[at + 1],
                    octets[at + 2],
                    octets[at + 3],
                ))
            };
            // Addresses that carry an IPv4 address are judged by it: mapped (`::ffff:a.b.c.d`),
            // compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:a.b.c.d::`).
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let compatible = segments[..6].iter().all(|s| *s == 0);
            if compatible && !ip.is_loopback() && !ip.is_unspecified() {
                return is_public(embedded(12));
            }
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(12));
            }
            if segments[0] == 0x2002 {
                return is_public(embedded(2));
            }
            let first = segments[0];
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
            "240.0.0.1",
            "192.0.0.8",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }
}
