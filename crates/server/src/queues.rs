//! Queues over HTTP (the admin API: declare, inspect, send, claim and settle, replay, purge) and
//! the dispatcher that delivers messages to the functions that consume them.
//!
//! The dispatcher wakes when a send rings the doorbell, when the earliest hint of the control
//! plane comes due, and at least once a second. For each app the hint says is due it claims, per
//! consumer (a function with a `{"queue": …}` trigger), up to `batch` messages at a time while
//! fewer than `concurrency` batches of that consumer run, and runs the function on them as the
//! admin. A run whose batch came full claims its next batch itself, in the same place, until
//! the queue runs short or another consumer of the app is owed a place (`Places`); a send to
//! a consumer with a free place claims for it itself (`Handoff`). A run that returns
//! acknowledges the batch (except the ids it lists under `failed`);
//! one that throws, times out or runs out of memory fails every message of it, which then retry
//! with backoff and at last move to the dead letters. Then the app's hint is settled to its next
//! due time, unless a send moved the hint meanwhile.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::functions::{
    AuthEvent, EngineError, FileEvent, FunctionError, MAX_TRIGGER_DEPTH, PayEvent, QueueTrigger,
    RealtimeEvent, Trigger,
};
use cloudlet_core::queues::{
    Committed, Delivery, HintTicket, MAX_BATCH, MESSAGE_QUEUE, MessageView, Outgoing,
    PAYMENT_QUEUE, Place, QueueError, QueueSettings, QueueView, SendReceipt, Taker, Which,
    is_builtin_queue, valid_queue_name,
};
use cloudlet_store::{Emit, Failed, StoreError, TRIGGER_QUEUE, TriggerDelivery};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{AdminOf, Json, KeyedAdminOf, Path, Query};
use crate::openapi::Routes;
use crate::state::{AppState, WeakState};

pub fn router(limits: &BodyLimits) -> Routes {
    let routes = OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(put_queue, get_queue, delete_queue))
        .routes(routes!(send, peek, purge))
        .routes(routes!(replay))
        .routes(routes!(claim))
        .routes(routes!(ack))
        .routes(routes!(ack_many))
        .routes(routes!(extend))
        .routes(routes!(fail));
    with_body_limit(routes, limits, limits.json)
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let code = match &e {
            QueueError::NotFound(_) => Code::QueueNotFound,
            QueueError::InvalidQueue(_) => Code::InvalidQueue,
            QueueError::InvalidMessage(_) => Code::InvalidMessage,
            QueueError::TooLarge(_) => Code::MessageTooLarge,
            QueueError::StaleLease => Code::StaleLease,
            QueueError::Store(cause) => return ApiError::store(cause, &e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// `{queue}` of a route: a name that can not be a queue's is a queue that does not exist.
#[derive(Deserialize)]
struct QueuePath {
    queue: String,
}

impl QueuePath {
    fn name(&self) -> Result<&str, ApiError> {
        // Cloudlet's own queues may be looked at, replayed and purged like any other.
        if valid_queue_name(&self.queue) || is_builtin_queue(&self.queue) {
            Ok(&self.queue)
        } else {
            Err(QueueError::NotFound(self.queue.chars().take(64).collect()).into())
        }
    }
}

/// `{queue}` and `{id}`: a message id is at most 64 URL-safe characters.
#[derive(Deserialize)]
struct MessagePath {
    queue: String,
    id: String,
}

impl MessagePath {
    fn parts(&self) -> Result<(&str, &str), ApiError> {
        let queue = QueuePath {
            queue: self.queue.clone(),
        };
        queue.name()?;
        let id_ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(QueueError::StaleLease.into());
        }
        Ok((&self.queue, &self.id))
    }
}

#[derive(Serialize, ToSchema)]
struct QueueList {
    items: Vec<QueueView>,
}

/// The app's queues with their counts.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/queues", tag = "queues",
    params(("app" = AppName, Path)), responses((status = 200, body = QueueList)))]
async fn list_queues(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<axum::Json<QueueList>, ApiError> {
    let items = state.queues().list(&app).await?;
    Ok(axum::Json(QueueList { items }))
}

/// Declares a queue, or changes its settings (every setting may be left out for its default).
#[utoipa::path(put, path = "/v1/admin/apps/{app}/queues/{queue}", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    request_body = QueueSettings,
    responses((status = 201, body = QueueView), (status = 200, body = QueueView)))]
async fn put_queue(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Json(settings): Json<QueueSettings>,
) -> Result<Response, ApiError> {
    let name = &path.queue;
    let (view, created) = state.queues().declare(&app, name, settings).await?;
    // A consumer may be waiting for this queue's messages: look now.
    state.queues().doorbell().notify_one();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(view)).into_response())
}

#[utoipa::path(get, path = "/v1/admin/apps/{app}/queues/{queue}", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    responses((status = 200, body = QueueView)))]
async fn get_queue(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
) -> Result<axum::Json<QueueView>, ApiError> {
    Ok(axum::Json(state.queues().view(&app, path.name()?).await?))
}

/// Deletes a queue with every message in it.
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/queues/{queue}", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    responses((status = 204, description = "deleted")))]
async fn delete_queue(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
) -> Result<StatusCode, ApiError> {
    state.queues().delete(&app, path.name()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// 1 to 100 messages, sent in one transaction.
    messages: Vec<Outgoing>,
}

#[derive(Serialize, ToSchema)]
struct SendAnswer {
    sent: Vec<SendReceipt>,
}

/// Sends messages.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/messages", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    request_body = SendBody, responses((status = 201, body = SendAnswer)))]
async fn send(
    State(state): State<AppState>,
    KeyedAdminOf(app, key): KeyedAdminOf,
    path: Result<Path<QueuePath>, ApiError>,
    body: Result<Json<SendBody>, ApiError>,
) -> Result<Response, ApiError> {
    let path = path.and_then(|Path(path)| path.name().map(str::to_owned));
    let sent = match key {
        None => {
            let path = path?;
            let Json(body) = body?;
            state.queues().send(&app, &path, body.messages).await
        }
        // A key not checked yet: the send checks it, and answers only its success before
        // it is known to hold, a path or a body that does not fit included (in that order,
        // as for any other caller).
        Some(key) => {
            let sent = match (path, body) {
                (Ok(name), Ok(Json(body))) => {
                    state
                        .queues()
                        .send_with_key(&key, &name, body.messages)
                        .await
                }
                (Err(e), _) | (_, Err(e)) => match key.holds(state.system()).await {
                    Ok(true) => return Err(e),
                    Ok(false) => Err(StoreError::KeyRefused.into()),
                    Err(e) => Err(e.into()),
                },
            };
            if let Err(QueueError::Store(StoreError::KeyRefused)) = &sent {
                state.access().forget(&key);
            }
            sent
        }
    }?;
    Ok((StatusCode::CREATED, axum::Json(SendAnswer { sent })).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PeekQuery {
    /// `waiting` (the default), `in_flight` or `dead`.
    #[param(inline)]
    state: Option<Which>,
    /// The last id of the previous page.
    after: Option<String>,
    /// 1 to 1000; 50 when left out.
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct MessageList {
    items: Vec<MessageView>,
}

/// The messages of a queue in one state, by id: a look that changes nothing.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/queues/{queue}/messages", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path), PeekQuery),
    responses((status = 200, body = MessageList)))]
async fn peek(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Query(query): Query<PeekQuery>,
) -> Result<axum::Json<MessageList>, ApiError> {
    if query
        .after
        .as_deref()
        .is_some_and(|after| !token_like(after))
    {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "after is the last id of the previous page",
        ));
    }
    let items = state
        .queues()
        .messages(
            &app,
            path.name()?,
            query.state.unwrap_or(Which::Waiting),
            query.after.as_deref(),
            query.limit.unwrap_or(50),
        )
        .await?;
    Ok(axum::Json(MessageList { items }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PurgeQuery {
    /// Only the messages in this state; all of them when left out.
    #[param(inline)]
    state: Option<Which>,
}

#[derive(Serialize, ToSchema)]
struct Purged {
    purged: u64,
}

/// Deletes a queue's messages (in one state, or all).
#[utoipa::path(delete, path = "/v1/admin/apps/{app}/queues/{queue}/messages", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path), PurgeQuery),
    responses((status = 200, body = Purged)))]
async fn purge(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Query(query): Query<PurgeQuery>,
) -> Result<axum::Json<Purged>, ApiError> {
    let purged = state
        .queues()
        .purge(&app, path.name()?, query.state)
        .await?;
    Ok(axum::Json(Purged { purged }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Only these dead letters; all of them when left out.
    #[serde(default)]
    ids: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
struct Replayed {
    replayed: u64,
}

/// Moves dead letters back to the queue, their attempts reset.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/replay", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    request_body = ReplayBody, responses((status = 200, body = Replayed)))]
async fn replay(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Json(body): Json<ReplayBody>,
) -> Result<axum::Json<Replayed>, ApiError> {
    if let Some(ids) = &body.ids
        && (ids.len() > 1000 || !ids.iter().all(|id| token_like(id)))
    {
        return Err(QueueError::InvalidMessage(
            "replay at most 1000 ids at once, each 1 to 64 URL-safe characters".into(),
        )
        .into());
    }
    let replayed = state.queues().replay(&app, path.name()?, body.ids).await?;
    Ok(axum::Json(Replayed { replayed }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    /// 1 to 100; 1 when left out.
    #[serde(default)]
    max: Option<usize>,
    /// How long the messages stay hidden; the queue's `visibility_timeout_secs` when left out.
    #[serde(default)]
    visibility_timeout_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct Claims {
    deliveries: Vec<Delivery>,
}

/// Claims messages for a consumer outside Cloudlet: each delivery's `lease` acknowledges,
/// extends or fails it.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/claims", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    request_body = ClaimBody, responses((status = 200, body = Claims)))]
async fn claim(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Json(body): Json<ClaimBody>,
) -> Result<axum::Json<Claims>, ApiError> {
    let deliveries = state
        .queues()
        .claim(
            &app,
            path.name()?,
            body.max.unwrap_or(1),
            body.visibility_timeout_secs,
        )
        .await?;
    Ok(axum::Json(Claims { deliveries }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LeaseBody {
    lease: String,
}

/// A lease or a message id as the API takes them: 1 to 64 URL-safe characters. Anything else
/// can be no message's, and is refused before the database sees it.
fn token_like(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A lease that can be no delivery's is a stale one.
fn lease(lease: &str) -> Result<&str, ApiError> {
    if token_like(lease) {
        Ok(lease)
    } else {
        Err(QueueError::StaleLease.into())
    }
}

/// Acknowledges a delivery: the message is done. `409 stale_lease` if the lease is not the
/// message's current one.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/messages/{id}/ack",
    tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path), ("id" = String, Path)),
    request_body = LeaseBody, responses((status = 204, description = "acknowledged")))]
async fn ack(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<MessagePath>,
    Json(body): Json<LeaseBody>,
) -> Result<StatusCode, ApiError> {
    let (_, id) = path.parts()?;
    state.queues().ack(&app, id, lease(&body.lease)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One delivery to acknowledge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AckItem {
    id: String,
    lease: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AcksBody {
    /// 1 to 100 deliveries.
    acks: Vec<AckItem>,
}

#[derive(Serialize, ToSchema)]
struct Acked {
    /// In the order given: whether each was acknowledged (false: its lease is stale).
    acked: Vec<bool>,
}

/// Acknowledges up to 100 deliveries in one transaction (one commit), like SQS's
/// `DeleteMessageBatch`: a consumer that handled a claimed batch settles it in one call. A
/// stale lease is `false` in the answer, not an error: the others still count.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/acks", tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path)),
    request_body = AcksBody, responses((status = 200, body = Acked)))]
async fn ack_many(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<QueuePath>,
    Json(body): Json<AcksBody>,
) -> Result<axum::Json<Acked>, ApiError> {
    path.name()?;
    if body.acks.is_empty() || body.acks.len() > MAX_BATCH {
        return Err(
            QueueError::InvalidMessage(format!("acknowledge 1 to {MAX_BATCH} deliveries")).into(),
        );
    }
    // An id or lease that can be no delivery's is stale: false, without a look.
    let valid: Vec<bool> = body
        .acks
        .iter()
        .map(|a| token_like(&a.id) && token_like(&a.lease))
        .collect();
    let acks: Vec<(String, String)> = body
        .acks
        .into_iter()
        .zip(&valid)
        .filter(|(_, valid)| **valid)
        .map(|(a, _)| (a.id, a.lease))
        .collect();
    let mut done = state.queues().ack_many(&app, acks).await?.into_iter();
    let acked = valid
        .into_iter()
        .map(|valid| valid && done.next().unwrap_or(false))
        .collect();
    Ok(axum::Json(Acked { acked }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    lease: String,
    /// Hidden this long from now.
    visibility_timeout_secs: u64,
}

/// Keeps a delivery hidden longer.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/messages/{id}/extend",
    tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path), ("id" = String, Path)),
    request_body = ExtendBody, responses((status = 204, description = "extended")))]
async fn extend(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<MessagePath>,
    Json(body): Json<ExtendBody>,
) -> Result<StatusCode, ApiError> {
    let (_, id) = path.parts()?;
    state
        .queues()
        .extend(&app, id, lease(&body.lease)?, body.visibility_timeout_secs)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FailBody {
    lease: String,
    /// The delivery's attempt, which sets the backoff; 1 when left out.
    #[serde(default)]
    attempt: Option<i64>,
    /// Kept as the message's `last_error` (at most 2,000 characters).
    #[serde(default)]
    error: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct FailAnswer {
    /// `retrying` or `dead`.
    state: &'static str,
}

/// Fails a delivery: it is retried after the queue's backoff, or moves to the dead letters.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/queues/{queue}/messages/{id}/fail",
    tag = "queues",
    params(("app" = AppName, Path), ("queue" = String, Path), ("id" = String, Path)),
    request_body = FailBody, responses((status = 200, body = FailAnswer)))]
async fn fail(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<MessagePath>,
    Json(body): Json<FailBody>,
) -> Result<axum::Json<FailAnswer>, ApiError> {
    let (queue, id) = path.parts()?;
    let attempt = body.attempt.unwrap_or(1).clamp(1, 100);
    let error = body.error.as_deref().unwrap_or("failed");
    let failed = state
        .queues()
        .fail(&app, queue, id, lease(&body.lease)?, attempt, error)
        .await?;
    Ok(axum::Json(FailAnswer {
        state: if failed == Failed::Dead {
            "dead"
        } else {
            "retrying"
        },
    }))
}

// ---- data triggers ------------------------------------------------------------------------

/// Routes writes to the functions their data triggers name: each write that triggers records,
/// in its own transaction, one delivery per function on the triggers' queue, which the
/// dispatcher runs like any queue's messages (at least once, with retries).
pub struct TriggerRouting {
    pub functions: cloudlet_core::functions::Functions,
    pub queues: cloudlet_core::queues::Queues,
}

#[async_trait::async_trait]
impl cloudlet_core::data::Triggers for TriggerRouting {
    async fn emit_for(
        &self,
        app: &AppName,
        collection: &str,
        operation: cloudlet_core::data::Operation,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let functions = self
            .functions
            .triggered_by(app, collection, operation)
            .await;
        self.emit(app, collection, functions, depth).await
    }

    async fn emit_for_auth(
        &self,
        app: &AppName,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let event = match kind {
            cloudlet_store::USER_CREATED => AuthEvent::UserCreated,
            cloudlet_store::USER_DELETED => AuthEvent::UserDeleted,
            other => return Err(StoreError::Task(format!("no account event {other:?}"))),
        };
        let functions = self.functions.triggered_by_auth(app, event).await;
        self.emit(app, kind, functions, depth).await
    }

    async fn emit_for_realtime(
        &self,
        app: &AppName,
        kind: &str,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let event = match kind {
            cloudlet_store::REALTIME_CONNECTED => RealtimeEvent::Connect,
            cloudlet_store::REALTIME_DISCONNECTED => RealtimeEvent::Disconnect,
            other => return Err(StoreError::Task(format!("no realtime event {other:?}"))),
        };
        let functions = self.functions.triggered_by_realtime(app, event).await;
        // Sockets open outside any trigger's run.
        self.emit(app, kind, functions, 0).await
    }

    async fn emit_for_pay(
        &self,
        app: &AppName,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let event = PayEvent::of_kind(kind)
            .ok_or_else(|| StoreError::Task(format!("no payment event {kind:?}")))?;
        let functions = self.functions.triggered_by_pay(app, event).await;
        self.emit(app, kind, functions, depth).await
    }

    async fn emit_for_files(
        &self,
        app: &AppName,
        bucket: &str,
        kind: &str,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let event = match kind {
            cloudlet_store::FILE_UPLOADED => FileEvent::Upload,
            cloudlet_store::FILE_DELETED => FileEvent::Delete,
            other => return Err(StoreError::Task(format!("no files' event {other:?}"))),
        };
        let functions = self.functions.triggered_by_files(app, bucket, event).await;
        self.emit(app, kind, functions, depth).await
    }

    async fn emitted(&self, app: &AppName, ticket: HintTicket) {
        if let Err(e) = self.queues.hinted(app, ticket).await {
            tracing::warn!(app = %app, error = %e, "could not hint the triggers' queue");
        }
        self.queues.doorbell().notify_one();
    }
}

impl TriggerRouting {
    /// One delivery per function an event (of `source`: a collection, an account event)
    /// triggers, unless the chain is too deep.
    async fn emit(
        &self,
        app: &AppName,
        source: &str,
        functions: Result<Vec<String>, FunctionError>,
        depth: u8,
    ) -> Result<Option<(Emit, HintTicket)>, StoreError> {
        let functions = match functions {
            Ok(functions) => functions,
            Err(FunctionError::Store(e)) => return Err(e),
            Err(e) => return Err(StoreError::Task(e.to_string())),
        };
        if functions.is_empty() {
            return Ok(None);
        }
        if depth >= MAX_TRIGGER_DEPTH {
            tracing::warn!(
                app = %app,
                source,
                "a write by triggered functions {MAX_TRIGGER_DEPTH} deep triggers nothing more"
            );
            return Ok(None);
        }
        let now = self.queues.now_ms();
        // The hint first, as for any send: it may only be early.
        let ticket = self.queues.hint(app, now).await?;
        let max_attempts = self.queues.trigger_settings().max_attempts.into();
        let emit = Emit {
            depth: depth.into(),
            at_ms: now,
            deliveries: functions
                .into_iter()
                .map(|function| TriggerDelivery {
                    message_id: self.queues.new_message_id(),
                    function,
                    max_attempts,
                })
                .collect(),
        };
        Ok(Some((emit, ticket)))
    }
}

/// Added to a consumer's timeout to hide its claimed messages: time to wait for a worker.
const RUN_MARGIN_SECS: u64 = 5;

/// How many deliveries of data triggers one app runs at once, and how many runs of all its
/// consumers and triggers together: half of an app's default `max_concurrent_per_app`, so that
/// the app's own calls keep room and a run is never refused as overloaded for the
/// dispatcher's doing.
const TRIGGER_CONCURRENCY: usize = 8;
/// How many subscribe messages one app has on their way to WeChat at once.
const MESSAGE_CONCURRENCY: usize = 4;
const DISPATCH_PER_APP: usize = 16;

// ---- the dispatcher -----------------------------------------------------------------------

/// A consumer of an app: a function, or one of Cloudlet's queues.
type Consumer = (AppName, String);

/// The places of consumers' runs on this node: the batches running now, per consumer (at most
/// its `concurrency`, and at most `DISPATCH_PER_APP` of an app's together), and the consumers
/// with due work shut out because all of their app's places were taken.
///
/// A consumer shut out is owed a place: the next run of its app that comes to the end of a
/// full batch gives its place back instead of claiming again ([`Places::yield_to_waiting`]),
/// and until the consumer owed it has entered, no other consumer of the app takes a place (not
/// a look's, not a send's), so the place freed for it goes to it.
#[derive(Clone, Default)]
pub(crate) struct Places(Arc<Mutex<HashMap<AppName, AppPlaces>>>);

/// One app's places; dropped when nothing of the app runs or waits.
#[derive(Default)]
struct AppPlaces {
    /// Batches running now, per consumer (a function's name, or one of Cloudlet's queues).
    running: HashMap<String, usize>,
    /// Consumers owed a place.
    waiting: HashSet<String>,
    /// Places still to be given back for them: at most one per consumer waiting.
    owed: usize,
}

impl AppPlaces {
    fn total(&self) -> usize {
        self.running.values().sum()
    }

    fn take(&mut self, name: &str, limit: usize) -> Taken {
        let own = self.running.get(name).copied().unwrap_or(0);
        if own >= limit {
            return Taken::Busy;
        }
        if !self.waiting.contains(name) && !self.waiting.is_empty() {
            return Taken::Busy;
        }
        if self.total() >= DISPATCH_PER_APP {
            // Shut out only if none of the places is its own: a consumer that runs gets more
            // as its runs end.
            return if own == 0 { Taken::Full } else { Taken::Busy };
        }
        *self.running.entry(name.to_owned()).or_insert(0) += 1;
        self.unwait(name);
        Taken::Entered
    }

    fn unwait(&mut self, consumer: &str) {
        if self.waiting.remove(consumer) {
            self.owed = self.owed.min(self.waiting.len());
        }
    }
}

/// [`Entry`] under the lock, before a seat is made of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Entered,
    Busy,
    Full,
}

/// A place taken among its app's ([`Places::take`]), given back when dropped: a run that
/// ends, a claim that found nothing, and a run or a hand-over that panics alike leave no place
/// taken for good.
pub(crate) struct Seat {
    places: Places,
    consumer: Consumer,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.places.leave(&self.consumer);
    }
}

/// What [`Places::take`] found.
enum Entry {
    /// A place is taken: run, then drop the seat.
    Entered(Seat),
    /// The consumer runs its `concurrency` already, or some of the app's places are its own,
    /// or another consumer of the app is owed the next place.
    Busy,
    /// The app's places are all taken, none by this consumer: [`Places::wait`] if it has due
    /// work.
    Full,
}

impl Places {
    /// Takes a place for one more batch of `consumer`, allowed `limit` at once.
    fn take(&self, consumer: &Consumer, limit: usize) -> Entry {
        let (app, name) = consumer;
        let entered = {
            let mut all = lock(&self.0);
            let entered = all.entry(app.clone()).or_default().take(name, limit);
            Self::forget_if_empty(&mut all, app);
            entered
        };
        // Made once the lock is let go: a seat dropped takes it.
        match entered {
            Taken::Entered => Entry::Entered(Seat {
                places: self.clone(),
                consumer: consumer.clone(),
            }),
            Taken::Busy => Entry::Busy,
            Taken::Full => Entry::Full,
        }
    }

    fn leave(&self, (app, name): &Consumer) {
        let mut all = lock(&self.0);
        let Some(places) = all.get_mut(app) else {
            return;
        };
        if let Some(count) = places.running.get_mut(name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                places.running.remove(name);
            }
        }
        Self::forget_if_empty(&mut all, app);
    }

    /// `consumer`, shut out with due work, is owed the next place.
    fn wait(&self, (app, name): &Consumer) {
        let mut places = lock(&self.0);
        let places = places.entry(app.clone()).or_default();
        if places.waiting.insert(name.clone()) {
            places.owed += 1;
        }
    }

    /// `consumer` has no work due (any more): it is owed nothing.
    fn unwait(&self, (app, name): &Consumer) {
        let mut all = lock(&self.0);
        if let Some(places) = all.get_mut(app) {
            places.unwait(name);
        }
        Self::forget_if_empty(&mut all, app);
    }

    /// A look at `app` begins: consumers that are no longer the app's (`current`) wait no more.
    fn looking(&self, app: &AppName, current: &HashSet<&str>) {
        let mut all = lock(&self.0);
        if let Some(places) = all.get_mut(app) {
            let gone: Vec<String> = places
                .waiting
                .iter()
                .filter(|name| !current.contains(name.as_str()))
                .cloned()
                .collect();
            for name in gone {
                places.unwait(&name);
            }
        }
        Self::forget_if_empty(&mut all, app);
    }

    /// True if a consumer of `app` is owed a place (once per place owed): the caller, a run at
    /// the end of a full batch, gives its place back to the dispatcher.
    fn yield_to_waiting(&self, app: &AppName) -> bool {
        let mut all = lock(&self.0);
        match all.get_mut(app) {
            Some(places) if places.owed > 0 => {
                places.owed -= 1;
                true
            }
            _ => false,
        }
    }

    /// How many batches and deliveries run now.
    pub(crate) fn running(&self) -> usize {
        lock(&self.0).values().map(AppPlaces::total).sum()
    }

    fn forget_if_empty(all: &mut HashMap<AppName, AppPlaces>, app: &AppName) {
        if all
            .get(app)
            .is_some_and(|p| p.running.is_empty() && p.waiting.is_empty())
        {
            all.remove(app);
        }
    }
}

/// How often an app's queues and event log are swept of what they no longer keep, and how long
/// the event log keeps an event.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
const EVENT_RETENTION_MS: i64 =
    (cloudlet_core::queues::TRIGGER_RETENTION_SECS as i64 + 24 * 3600) * 1000;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long the dispatcher sleeps at most between looks.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// How long an app whose consumers are all busy waits before the next look (a finished batch
/// rings sooner; after a crash, nothing does).
const IDLE_RECHECK_MS: i64 = 1_000;

/// Delivers due messages to their consumers until shutdown.
pub async fn run_dispatcher(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let places = state.places().clone();
    let mut swept: HashMap<AppName, std::time::Instant> = HashMap::new();
    // Sweeps run on a task of their own, one app at a time: a long one (millions of expired
    // messages, a busy app's event log) must not hold up every other app's deliveries.
    let (sweeps, waiting) = tokio::sync::mpsc::channel(SWEEPS_WAITING);
    let mut sweeper_gone = false;
    state
        .tasks()
        .spawn(run_sweeper(state.clone(), waiting, shutdown.clone()));
    loop {
        let wait = match state.system().next_hint().await {
            Ok(Some(at)) => {
                let now = state.queues().now_ms();
                Duration::from_millis((at - now).clamp(0, MAX_SLEEP.as_millis() as i64) as u64)
            }
            Ok(None) => MAX_SLEEP,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the queue hints");
                MAX_SLEEP
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = state.queues().doorbell().notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
        if *shutdown.borrow() {
            return;
        }
        let due = match state.system().due_apps(state.queues().now_ms(), 64).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the queue hints");
                tokio::time::sleep(MAX_SLEEP).await;
                continue;
            }
        };
        for app in due {
            dispatch_app(&state, &places, &app.app, app.version).await;
            let stale = swept
                .get(&app.app)
                .is_none_or(|at| at.elapsed() >= SWEEP_EVERY);
            // Taken again at a later look when the sweeper has too many waiting.
            if stale {
                match sweeps.try_send(app.app.clone()) {
                    Ok(()) => {
                        swept.insert(app.app.clone(), std::time::Instant::now());
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                        // At shutdown the sweeper goes first.
                        if !sweeper_gone && !*shutdown.borrow() {
                            tracing::error!("the sweeper has stopped: nothing is swept any more");
                        }
                        sweeper_gone = true;
                    }
                }
            }
        }
        if swept.len() > 100_000 {
            swept.retain(|_, at| at.elapsed() < SWEEP_EVERY);
        }
    }
}

/// Apps waiting for the sweeper.
const SWEEPS_WAITING: usize = 256;

/// Sweeps the apps the dispatcher hands it, one at a time, until shutdown.
async fn run_sweeper(
    state: AppState,
    mut waiting: tokio::sync::mpsc::Receiver<AppName>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let app = tokio::select! {
            app = waiting.recv() => app,
            _ = shutdown.changed() => None,
        };
        match app {
            Some(app) if !*shutdown.borrow() => {
                // On a task of its own: a sweep that panics is logged, and the next goes on.
                let sweeping = state.tasks().spawn({
                    let (state, app) = (state.clone(), app.clone());
                    async move { sweep(&state, &app).await }
                });
                if let Err(e) = sweeping.await {
                    tracing::error!(app = %app, error = %e, "a sweep failed");
                }
            }
            _ => return,
        }
    }
}

/// Deletes what the app's queues and event log no longer keep.
async fn sweep(state: &AppState, app: &AppName) {
    if let Err(e) = state.queues().sweep(app).await {
        tracing::warn!(app = %app, error = %e, "could not sweep the queues");
    }
    let before = state.queues().now_ms() - EVENT_RETENTION_MS;
    if let Err(e) = state.data().sweep_events(app, before).await {
        tracing::warn!(app = %app, error = %e, "could not sweep the event log");
    }
    if let Err(e) = state.files().sweep(app).await {
        tracing::warn!(app = %app, error = %e, "could not sweep the files' trash");
    }
    if let Err(e) = state.payments().sweep(app).await {
        tracing::warn!(app = %app, error = %e, "could not sweep the payments' kept callbacks");
    }
}

/// Claims and runs what `app` has due, then settles its hint.
async fn dispatch_app(state: &AppState, places: &Places, app: &AppName, version: i64) {
    // Taken before anything is read: a write that makes work due after this point stops the
    // settle below (see `Queues::hint`).
    let pulse = state.queues().pulse(app);
    let now = state.queues().now_ms();
    let started = now;
    let later = Some(now + IDLE_RECHECK_MS);
    let consumers = match state.functions().queue_consumers(app).await {
        Ok(consumers) => consumers,
        Err(e) => {
            tracing::warn!(app = %app, error = %e, "could not read the queue consumers");
            settle(state, app, version, later, pulse).await;
            return;
        }
    };
    let current = consumers
        .iter()
        .map(|(function, _)| function.as_str())
        .chain(Builtin::ALL.map(Builtin::queue))
        .collect();
    places.looking(app, &current);
    // Work left due for lack of room (`busy`: a finished batch rings), or because a step
    // failed (`failed`: looked at again after a pause, not in a tight loop).
    let mut busy = false;
    let mut failed = false;
    let mut consumed: Vec<String> = consumers.iter().map(|(_, t)| t.queue.clone()).collect();
    // Always looked at: events' triggers and schedules' ticks put deliveries there, and one
    // whose function has gone since fails its attempts into the dead letters instead of
    // waiting for a consumer.
    consumed.push(TRIGGER_QUEUE.to_owned());
    let look = dispatch_builtin(state, places, app, Builtin::Triggers).await;
    busy |= look == Look::Busy;
    failed |= look == Look::Failed;
    for (function, trigger) in consumers {
        let consumer = (app.clone(), function.clone());
        let Some(hide_secs) = hide_secs(state, app, &function).await else {
            failed = true;
            continue;
        };
        // A read first, as for Cloudlet's own queues: a claim is a write, and takes a place
        // while it runs.
        match state
            .queues()
            .next_due(app, vec![trigger.queue.clone()])
            .await
        {
            Ok(Some(at)) if at <= state.queues().now_ms() => {}
            Ok(_) => {
                places.unwait(&consumer);
                continue;
            }
            Err(e) => {
                tracing::warn!(app = %app, queue = trigger.queue, error = %e, "could not look");
                failed = true;
                continue;
            }
        }
        loop {
            let seat = match places.take(&consumer, trigger.concurrency) {
                Entry::Entered(seat) => seat,
                Entry::Busy => {
                    busy = true;
                    break;
                }
                // Its work is due (above): it is owed the next place.
                Entry::Full => {
                    busy = true;
                    places.wait(&consumer);
                    break;
                }
            };
            let batch = match state
                .queues()
                .claim_for_dispatch(app, &trigger.queue, trigger.batch, hide_secs)
                .await
            {
                Ok(batch) if !batch.is_empty() => batch,
                claimed => {
                    drop(seat);
                    match claimed {
                        Ok(_) | Err(QueueError::NotFound(_)) => {}
                        Err(e) => {
                            tracing::warn!(app = %app, queue = trigger.queue, error = %e, "could not claim");
                            failed = true;
                        }
                    }
                    break;
                }
            };
            state.metrics().queue_batch("look");
            let run = run_consumer(
                state.clone(),
                seat,
                trigger.clone(),
                batch,
                Committed::now(),
            );
            state.tasks().spawn(run);
        }
    }
    // Subscribe messages are sent whether or not the app has functions; last, as they wait on
    // a platform anyway, and the app's own consumers should not wait for this look.
    for builtin in [Builtin::Messages, Builtin::Payments] {
        consumed.push(builtin.queue().to_owned());
        let look = dispatch_builtin(state, places, app, builtin).await;
        busy |= look == Look::Busy;
        failed |= look == Look::Failed;
    }
    let now = state.queues().now_ms();
    // Only queues somebody consumes: messages nobody takes need no look until a consumer is
    // deployed (which rings for the app).
    let next = match state.queues().next_due(app, consumed).await {
        Ok(next) => next,
        Err(e) => {
            tracing::warn!(app = %app, error = %e, "could not read the next due message");
            Some(now + IDLE_RECHECK_MS)
        }
    };
    // Work due now that was not taken. When it became due while this look went on, after its
    // claims, it is looked at again at once. When it was due before the look began, something
    // kept it (every consumer busy, a failed step, a row another transaction holds): it is
    // looked at again later, not in a tight loop (a finished batch rings sooner).
    let next = next.map(|at| {
        if at > now {
            at
        } else if at > started && !busy && !failed {
            now
        } else {
            now + IDLE_RECHECK_MS
        }
    });
    let next = if busy {
        next.map(|at| at.min(now + IDLE_RECHECK_MS))
    } else {
        next
    };
    settle(state, app, version, next, pulse).await;
}

/// How long a claim for `function` hides its messages: the function's time, and a margin for
/// waiting for a worker (a claim outlives the run that takes it). None if it can not be read.
async fn hide_secs(state: &AppState, app: &AppName, function: &str) -> Option<u64> {
    let ms = state.functions().timeout_ms(app, function).await.ok()?;
    Some(ms.div_ceil(1000) + RUN_MARGIN_SECS)
}

/// Runs a consumer's batches in one of its places: the batch the dispatcher claimed and, while
/// each batch comes full (more is likely due), the next, claimed here, with no look of the
/// dispatcher between them. It gives the place back when a batch comes short, when due work of
/// the app waits for a place, when the consumer changed or the server stops.
///
/// Its own claims need no hint: a claim only moves its messages' due time later (to the claim's
/// expiry), so the hint the dispatcher settled stays no later than the app's work.
async fn run_consumer(
    state: AppState,
    seat: Seat,
    trigger: QueueTrigger,
    mut batch: Vec<Delivery>,
    mut committed: Committed,
) {
    let (app, function) = (&seat.consumer.0, seat.consumer.1.as_str());
    loop {
        let full = batch.len() >= trigger.batch;
        let settled = std::mem::replace(&mut committed, Committed::now());
        consume(&state, app, function, &trigger, batch, settled).await;
        if !full || !state.is_accepting() || seat.places.yield_to_waiting(app) {
            break;
        }
        let unchanged = matches!(
            state.functions().queue_consumers(app).await,
            Ok(consumers) if consumers.iter().any(|(f, t)| f == function && *t == trigger)
        );
        let hide = hide_secs(&state, app, function).await;
        let (true, Some(hide_secs)) = (unchanged, hide) else {
            break;
        };
        batch = match state
            .queues()
            .claim_for_dispatch(app, &trigger.queue, trigger.batch, hide_secs)
            .await
        {
            Ok(next) if !next.is_empty() => {
                state.metrics().queue_batch("run");
                next
            }
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(app = %app, queue = trigger.queue, error = %e, "could not claim");
                break;
            }
        };
    }
    give_back(&state, seat).await;
}

/// Sends handed to a consumer with a free place on this node ([`Taker`]): the place is taken
/// from the dispatcher's, and the run is [`run_consumer`], as if the dispatcher had claimed.
pub(crate) struct Handoff(WeakState);

impl Handoff {
    pub(crate) fn new(state: &AppState) -> Self {
        Handoff(state.downgrade())
    }
}

#[async_trait::async_trait]
impl Taker for Handoff {
    async fn reserve(&self, app: &AppName, queue: &str) -> Option<Place> {
        let state = self.0.upgrade()?;
        if !state.is_accepting() {
            return None;
        }
        let consumers = state.functions().queue_consumers(app).await.ok()?;
        for (function, trigger) in consumers {
            if trigger.queue != queue {
                continue;
            }
            let consumer = (app.clone(), function.clone());
            let Some(min_hide_secs) = hide_secs(&state, app, &function).await else {
                continue;
            };
            if let Entry::Entered(seat) = state.places().take(&consumer, trigger.concurrency) {
                return Some(Place {
                    consumer: function,
                    trigger,
                    min_hide_secs,
                    held: Box::new(seat),
                });
            }
        }
        None
    }

    fn take(&self, app: &AppName, place: Place, deliveries: Vec<Delivery>, committed: Committed) {
        // A node going away: the place is dropped, and its claim expires.
        let Some(state) = self.0.upgrade() else {
            return;
        };
        let Ok(seat) = place.held.downcast::<Seat>() else {
            // Not a place this taker gave: nothing to run it in, nothing to give back.
            tracing::error!(app = %app, consumer = place.consumer, claimed = deliveries.len(), "a hand-over came back with a place of another taker's; its claims wait for their expiry");
            return;
        };
        let seat = *seat;
        if deliveries.is_empty() {
            state
                .clone()
                .tasks()
                .spawn(async move { give_back(&state, seat).await });
            return;
        }
        state.metrics().queue_batch("send");
        let run = run_consumer(state.clone(), seat, place.trigger, deliveries, committed);
        state.tasks().spawn(run);
    }

    fn spawn(&self, hand_over: futures_util::future::BoxFuture<'static, ()>) {
        match self.0.upgrade() {
            Some(state) => drop(state.tasks().spawn(hand_over)),
            // The node is going away: nothing tracks its work any more.
            None => drop(tokio::spawn(hand_over)),
        }
    }
}

/// A run is over: its place is free, and the app is worth a look now, whatever its hint said.
/// (A run that panics gives its place back as it unwinds, and no more: its messages come back
/// when their claims expire, which the app's hint already covers.)
async fn give_back(state: &AppState, seat: Seat) {
    let app = seat.consumer.0.clone();
    drop(seat);
    let now = state.queues().now_ms();
    if let Err(e) = state.queues().touch(&app, now).await {
        tracing::warn!(app = %app, error = %e, "could not hint the queue");
    }
    state.queues().doorbell().notify_one();
}

/// Moves the app's hint to `next`, unless work became due since the look began.
async fn settle(state: &AppState, app: &AppName, version: i64, next: Option<i64>, pulse: u64) {
    match state.queues().settle(app, version, next, pulse).await {
        Ok(true) => {}
        // Work became due meanwhile: the hint stays due, and the loop looks again.
        Ok(false) => state.queues().doorbell().notify_one(),
        Err(e) => {
            tracing::warn!(app = %app, error = %e, "could not settle the queue hint");
            // Not a tight loop on a failing database.
            tokio::time::sleep(MAX_SLEEP).await;
        }
    }
}

/// Cloudlet's own queues, which the dispatcher consumes itself.
#[derive(Debug, Clone, Copy)]
enum Builtin {
    /// Data triggers' deliveries: each runs a function.
    Triggers,
    /// Subscribe messages: each is one call to WeChat.
    Messages,
    /// Payment checks: each queries a payment platform (and may close an order there).
    Payments,
}

impl Builtin {
    const ALL: [Builtin; 3] = [Builtin::Triggers, Builtin::Messages, Builtin::Payments];

    fn queue(self) -> &'static str {
        match self {
            Builtin::Triggers => TRIGGER_QUEUE,
            Builtin::Messages => MESSAGE_QUEUE,
            Builtin::Payments => PAYMENT_QUEUE,
        }
    }

    /// How many of its deliveries one app runs at once.
    fn concurrency(self) -> usize {
        match self {
            Builtin::Triggers => TRIGGER_CONCURRENCY,
            Builtin::Messages | Builtin::Payments => MESSAGE_CONCURRENCY,
        }
    }

    /// How long a claim hides a delivery at least: longer than the delivery may take. A data
    /// trigger's is `queues.trigger_visibility_secs`; a subscribe message may fetch a token and
    /// send twice, each a platform call.
    fn min_hide_secs(self, state: &AppState) -> u64 {
        match self {
            Builtin::Triggers => 0,
            Builtin::Messages | Builtin::Payments => {
                4 * state.auth().platform_timeout().as_secs() + 10
            }
        }
    }

    async fn deliver(self, state: &AppState, app: &AppName, delivery: Delivery) {
        match self {
            Builtin::Triggers => deliver_trigger(state, app, delivery).await,
            Builtin::Messages => state.messages().deliver(app, delivery).await,
            Builtin::Payments => state.payments().deliver(app, delivery).await,
        }
    }
}

/// How a look at one queue ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Nothing due is left.
    Idle,
    /// Some was left for lack of room.
    Busy,
    /// A claim failed.
    Failed,
}

/// Claims and runs the app's due deliveries of one of Cloudlet's queues.
async fn dispatch_builtin(
    state: &AppState,
    places: &Places,
    app: &AppName,
    builtin: Builtin,
) -> Look {
    let key = (app.clone(), builtin.queue().to_owned());
    // A read first: most looks find nothing due here, and a claim is a write.
    match state
        .queues()
        .next_due(app, vec![builtin.queue().to_owned()])
        .await
    {
        Ok(Some(at)) if at <= state.queues().now_ms() => {}
        Ok(_) => {
            places.unwait(&key);
            return Look::Idle;
        }
        Err(e) => {
            tracing::warn!(app = %app, queue = builtin.queue(), error = %e, "could not look");
            return Look::Failed;
        }
    }
    let hide_secs = builtin.min_hide_secs(state);
    loop {
        let seat = match places.take(&key, builtin.concurrency()) {
            Entry::Entered(seat) => seat,
            Entry::Busy => return Look::Busy,
            // Due work was found above.
            Entry::Full => {
                places.wait(&key);
                return Look::Busy;
            }
        };
        let claimed = state
            .queues()
            .claim_for_dispatch(app, builtin.queue(), 1, hide_secs)
            .await;
        let delivery = match claimed.map(|batch| batch.into_iter().next()) {
            Ok(Some(delivery)) => delivery,
            Ok(None) => return Look::Idle,
            Err(e) => {
                tracing::warn!(app = %app, queue = builtin.queue(), error = %e, "could not claim");
                return Look::Failed;
            }
        };
        let state = state.clone();
        state.clone().tasks().spawn(async move {
            builtin.deliver(&state, &seat.consumer.0, delivery).await;
            give_back(&state, seat).await;
        });
    }
}

/// Runs the function a trigger delivery names on its event, as the admin, one trigger deeper,
/// and settles the delivery by the outcome.
async fn deliver_trigger(state: &AppState, app: &AppName, delivery: Delivery) {
    // Cloudlet's own payload, small: `{"function", "event"}` or `{"function", "schedule"}`.
    let payload: Value = serde_json::from_str(delivery.payload.get()).unwrap_or_default();
    let function = payload["function"].as_str().unwrap_or_default().to_owned();
    let event = match payload.get("schedule") {
        // A schedule's tick carries its event; the delivery's id is the tick's.
        Some(tick) => {
            let mut event = tick.clone();
            event["event_id"] = Value::from(delivery.id.clone());
            Ok(Some((event, 0)))
        }
        None => {
            let seq = payload["event"].as_i64().unwrap_or_default();
            state.data().trigger_event(app, seq).await
        }
    };
    let outcome = match event {
        // The event is gone (swept, or the app's data replaced): nothing to run.
        Ok(None) => Ok(()),
        Ok(Some((mut event, depth))) => {
            event["attempt"] = Value::from(delivery.attempt);
            let kind = event["event"].as_str().unwrap_or_default();
            let trigger = if payload.get("schedule").is_some() {
                Trigger::Schedule
            } else if kind.starts_with("auth.") {
                Trigger::Auth
            } else if kind.starts_with("files.") {
                Trigger::Files
            } else if kind.starts_with("realtime.") {
                Trigger::Realtime
            } else if kind.starts_with("pay.") {
                Trigger::Pay
            } else {
                Trigger::Data
            };
            let request_id = state.new_request_id();
            // A scheduled run starts a chain, as a call does; a triggered one is one deeper.
            let depth = match trigger {
                Trigger::Schedule => 0,
                _ => depth.saturating_add(1),
            };
            match crate::functions::raw(&event) {
                Ok(event) => cloudlet_core::data::TRIGGER_DEPTH
                    .scope(
                        depth,
                        crate::functions::run(
                            state,
                            app,
                            &function,
                            Caller::Admin,
                            trigger,
                            &request_id,
                            event,
                        ),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(e) => Err(e.to_string()),
    };
    let settled = match outcome {
        Ok(()) => state.queues().ack(app, &delivery.id, &delivery.lease).await,
        Err(error) => state
            .queues()
            .fail(
                app,
                TRIGGER_QUEUE,
                &delivery.id,
                &delivery.lease,
                delivery.attempt,
                &error,
            )
            .await
            .map(|_| ()),
    };
    if let Err(e) = settled {
        tracing::warn!(app = %app, function, error = %e, "a trigger delivery could not be settled");
    }
}

/// What a queue's consumer receives.
#[derive(serde::Serialize)]
struct ConsumerEvent<'a> {
    queue: &'a str,
    messages: Vec<ConsumerMessage<'a>>,
}

#[derive(serde::Serialize)]
struct ConsumerMessage<'a> {
    id: &'a str,
    attempt: i64,
    payload: &'a RawValue,
    sent_at: &'a str,
}

/// Runs `function` on a batch and settles each message by the outcome.
async fn consume(
    state: &AppState,
    app: &AppName,
    function: &str,
    trigger: &QueueTrigger,
    batch: Vec<Delivery>,
    committed: Committed,
) {
    // The payloads go into the event as the text they were sent as, never as JSON values (see
    // `Payload`), and are let go of once they are in it: settling needs ids and leases.
    let event = serde_json::value::to_raw_value(&ConsumerEvent {
        queue: &trigger.queue,
        messages: batch
            .iter()
            .map(|d| ConsumerMessage {
                id: &d.id,
                attempt: d.attempt,
                payload: &d.payload,
                sent_at: &d.sent_at,
            })
            .collect(),
    })
    .map_err(|e| FunctionError::Engine(EngineError(e.to_string())));
    let batch: Vec<Delivery> = batch
        .into_iter()
        .map(|d| Delivery {
            payload: RawValue::NULL.to_owned(),
            ..d
        })
        .collect();
    let request_id = state.new_request_id();
    // The run's writes and sends carry the depth its messages were sent at (the deepest of
    // the batch), so that a cycle through queues and triggers stops at the bound.
    let depth = batch.iter().map(|d| d.depth).max().unwrap_or(0);
    let outcome = match event {
        Ok(event) => {
            cloudlet_core::data::TRIGGER_DEPTH
                .scope(
                    depth,
                    crate::functions::run(
                        state,
                        app,
                        function,
                        Caller::Admin,
                        Trigger::Queue,
                        &request_id,
                        event,
                    ),
                )
                .await
        }
        Err(e) => Err(e),
    };
    let (failed, error): (Vec<String>, String) = match outcome {
        Ok(result) => {
            let result: Value = serde_json::from_str(result.get()).unwrap_or(Value::Null);
            (
                reported_failures(&result),
                "the function reported it failed".into(),
            )
        }
        Err(e) => (batch.iter().map(|d| d.id.clone()).collect(), e.to_string()),
    };
    // Settled once the send that claimed them has its commit answered (a send's claim may
    // start its run before). A commit that failed took the messages and claims with it, and
    // settling them finds every lease stale; one whose outcome is unknown (the connection lost
    // during `COMMIT`) may have held, and then settling is what keeps the run from its second.
    if !committed.answered().await {
        tracing::warn!(app = %app, queue = trigger.queue, "a run started on a send whose commit failed or has an unknown outcome: its messages may not exist");
    }
    // The successes are acknowledged together, in one commit; the failures one by one.
    let (failures, successes): (Vec<Delivery>, Vec<Delivery>) =
        batch.into_iter().partition(|d| failed.contains(&d.id));
    let acks: Vec<(String, String)> = successes.into_iter().map(|d| (d.id, d.lease)).collect();
    match state.queues().ack_many(app, acks.clone()).await {
        Ok(acked) => {
            for ((id, _), acked) in acks.iter().zip(acked) {
                if !acked {
                    // A stale lease: the claim expired while the function ran, and the
                    // message went (or will go) to another delivery. At least once, so nothing
                    // is lost.
                    tracing::warn!(app = %app, queue = trigger.queue, id, "a delivery could not be acknowledged: its lease is stale");
                }
            }
        }
        // Unacknowledged, the messages are delivered again when their claims expire.
        Err(e) => {
            tracing::warn!(app = %app, queue = trigger.queue, error = %e, "a batch could not be acknowledged");
        }
    }
    for delivery in failures {
        let settled = state
            .queues()
            .fail(
                app,
                &trigger.queue,
                &delivery.id,
                &delivery.lease,
                delivery.attempt,
                &error,
            )
            .await;
        if let Err(e) = settled {
            tracing::warn!(app = %app, queue = trigger.queue, id = delivery.id, error = %e, "a delivery could not be settled");
        }
    }
}

/// The ids a consumer's result lists under `failed`.
fn reported_failures(result: &Value) -> Vec<String> {
    result
        .get("failed")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seat holds its consumer's place until it is dropped: at a run's end, or as a run that
    /// panics unwinds.
    #[tokio::test]
    async fn a_place_comes_back_when_its_seat_drops_even_in_a_run_that_panics() {
        let places = Places::default();
        let worker = (AppName::parse("shop").unwrap(), "worker".to_owned());
        let Entry::Entered(seat) = places.take(&worker, 1) else {
            panic!("a free place was refused");
        };
        assert!(matches!(places.take(&worker, 1), Entry::Busy));
        assert_eq!(places.running(), 1);

        let run = tokio::spawn(async move {
            let _seat = seat;
            panic!("a consumer's run fails in a way nobody foresaw");
        });
        assert!(run.await.unwrap_err().is_panic());
        assert_eq!(places.running(), 0);
        assert!(matches!(places.take(&worker, 1), Entry::Entered(_)));
        assert_eq!(
            places.running(),
            0,
            "a seat dropped at once gives its place back"
        );
    }
}
