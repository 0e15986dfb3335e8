//! `GET /v1/apps/{app}/realtime`: one WebSocket per client, speaking the JSON protocol of
//! docs/realtime.md. This module owns the socket: who is on it (a token in the `Authorization`
//! header, which `wx.connectSocket` can send, or in the first message, never in the URL), what
//! it may send (text frames of JSON, at most [`MAX_MESSAGE`] bytes, at most
//! [`MAX_MESSAGES_PER_SECOND`]), keeping it alive (a protocol ping and an application-level
//! `ping` every [`PING_EVERY`], under the 60 s idle timeout of common proxies; a mini program's
//! JavaScript never sees protocol pings), and ending it when its token expires unrefreshed.
//! What it receives comes from the hub ([`cloudlet_core::realtime::Hub`]).

use std::task::Poll;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::realtime::{
    ChannelName, ChannelsPage, Close, ConnectionId, Hub, Joined, MAX_PRESENCE_PAGE,
    MAX_SOCKETS_PAGE, Outbound, PresencePage, RealtimeError, Resume, SettingsBody, SocketsPage,
};
use cloudlet_core::secrets::SecretHash;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bounds::{BodyLimits, with_body_limit};
use crate::error::{ApiError, Code};
use crate::extract::{
    AdminOf, CallerOf, Json as JsonBody, Path, Query, TargetApp, caller_of_token,
};
use crate::openapi::Routes;
use crate::state::AppState;

/// The largest message a client may send.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Messages a client may send per second (enough for a client restoring its subscriptions
/// after a reconnect, far from a flood).
pub const MAX_MESSAGES_PER_SECOND: u32 = 120;
/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(25);
/// How long an unauthenticated socket may take, all told, to authenticate.
const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// Refused messages an unauthenticated socket may send before it is closed.
const AUTH_TRIES: u32 = 3;
/// How long one frame may take to go out: a client that stops reading holds nothing longer.
const SEND_WITHIN: Duration = Duration::from_secs(10);
/// How long a closed socket is still read for the client's own close frame.
const LINGER: Duration = Duration::from_secs(1);
/// Publishes and direct messages a client may send per second; more are refused
/// (`rate_limited`) and the socket stays open.
pub const MAX_PUBLISHES_PER_SECOND: u32 = 20;
/// Resumes of a collection's subscription (each may read up to 10,000 events of the log) a
/// socket may ask for in [`RESUMES_WINDOW`]: enough to restore every subscription it may hold
/// after a reconnect; more are refused (`rate_limited`) and the socket stays open.
pub const MAX_RESUMES: u32 = cloudlet_core::realtime::MAX_SUBSCRIPTIONS as u32;
const RESUMES_WINDOW: Duration = Duration::from_secs(60);
/// How long what a client missed may take, all told, to go out: a client that reads it slowly
/// holds the node's budget for catch-ups no longer (its socket is closed, 4008).
const CATCH_UP_WITHIN: Duration = Duration::from_secs(60);

pub fn router(limits: &BodyLimits) -> Routes {
    // A handshake has no body; one announced is refused like on every route.
    let routes = OpenApiRouter::new()
        .routes(routes!(connect))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(publish))
        .routes(routes!(send_to_user))
        .routes(routes!(presence))
        .routes(routes!(sockets))
        .routes(routes!(channels));
    with_body_limit(routes, limits, limits.json)
}

/// The largest message the server side publishes or sends, as JSON.
pub const MAX_SERVER_MESSAGE: usize = 64 * 1024;

/// The app's realtime settings: its kinds of channel and their rules, direct messages,
/// anonymous sockets.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/realtime", tag = "realtime",
    params(("app" = AppName, Path)), responses((status = 200, body = SettingsBody)))]
async fn get_settings(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
) -> Result<axum::Json<SettingsBody>, ApiError> {
    let settings = state.realtime().settings(&app).await?;
    Ok(axum::Json(settings.body.clone()))
}

/// Replaces the app's realtime settings (every field may be left out for its default). Live
/// channel subscriptions the new rules refuse end with `forbidden`.
#[utoipa::path(put, path = "/v1/admin/apps/{app}/realtime", tag = "realtime",
    params(("app" = AppName, Path)), request_body = SettingsBody,
    responses((status = 200, body = SettingsBody)))]
async fn put_settings(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    JsonBody(body): JsonBody<SettingsBody>,
) -> Result<axum::Json<SettingsBody>, ApiError> {
    let settings = state.realtime().put_settings(&app, body).await?;
    Ok(axum::Json(settings.body.clone()))
}

/// A message from the server side.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Publish {
    /// Any JSON, at most 64 KiB of it.
    data: Json,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Published {
    /// The message's number in its channel (or in the user's direct messages).
    seq: u64,
}

fn server_message(publish: &Publish) -> Result<(), ApiError> {
    if publish.data.to_string().len() > MAX_SERVER_MESSAGE {
        return Err(ApiError::new(
            Code::PayloadTooLarge,
            format!("a message's data is at most {MAX_SERVER_MESSAGE} bytes of JSON"),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct ChannelPath {
    channel: String,
}

/// Publishes a message to a channel's subscribers, as the server (`from: null`), whatever
/// the channel's rules.
#[utoipa::path(post, path = "/v1/admin/apps/{app}/realtime/channels/{channel}/messages",
    tag = "realtime", params(("app" = AppName, Path), ("channel" = String, Path)),
    request_body = Publish, responses((status = 200, body = Published)))]
async fn publish(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<ChannelPath>,
    JsonBody(body): JsonBody<Publish>,
) -> Result<axum::Json<Published>, ApiError> {
    let channel = channel_name(&path.channel)?;
    server_message(&body)?;
    let seq = state
        .realtime()
        .publish(&app, &Caller::Admin, &channel, &body.data)
        .await?;
    Ok(axum::Json(Published { seq }))
}

#[derive(Deserialize)]
struct UserPath {
    user: String,
}

/// Sends a direct message to every socket of a user that listens to its direct messages
/// (and keeps it for those that come back).
#[utoipa::path(post, path = "/v1/admin/apps/{app}/realtime/users/{user}/messages",
    tag = "realtime", params(("app" = AppName, Path), ("user" = String, Path)),
    request_body = Publish, responses((status = 200, body = Published)))]
async fn send_to_user(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<UserPath>,
    JsonBody(body): JsonBody<Publish>,
) -> Result<axum::Json<Published>, ApiError> {
    server_message(&body)?;
    let seq = state
        .realtime()
        .send_direct(&app, &Caller::Admin, &path.user, &body.data)
        .await?;
    Ok(axum::Json(Published { seq }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct PresenceQuery {
    /// The last member of the previous page.
    after: Option<String>,
    /// 1 to 1,000 (default 100).
    limit: Option<usize>,
}

/// Who is present in a channel: how many, and a page of them in member order.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/realtime/channels/{channel}/presence",
    tag = "realtime", params(("app" = AppName, Path), ("channel" = String, Path), PresenceQuery),
    responses((status = 200, body = PresencePage)))]
async fn presence(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Path(path): Path<ChannelPath>,
    Query(query): Query<PresenceQuery>,
) -> Result<axum::Json<PresencePage>, ApiError> {
    let channel = channel_name(&path.channel)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PRESENCE_PAGE).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!("limit is 1 to {MAX_PRESENCE_PAGE}"),
        ));
    }
    let page = state
        .realtime()
        .presence(
            &app,
            &Caller::Admin,
            &channel,
            query.after.as_deref(),
            limit,
        )
        .await?;
    Ok(axum::Json(page))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct SocketsQuery {
    /// The last socket id of the previous page.
    after: Option<String>,
    /// 1 to 1,000 (default 100).
    limit: Option<usize>,
}

/// The app's open sockets on this node: how many, how many distinct users hold them, and a
/// page of them in id order (an id is also the socket's member id in channels' presence).
#[utoipa::path(get, path = "/v1/admin/apps/{app}/realtime/sockets", tag = "realtime",
    params(("app" = AppName, Path), SocketsQuery),
    responses((status = 200, body = SocketsPage)))]
async fn sockets(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<SocketsQuery>,
) -> Result<axum::Json<SocketsPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_SOCKETS_PAGE).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!("limit is 1 to {MAX_SOCKETS_PAGE}"),
        ));
    }
    // A socket id is 16 lowercase hex digits; anything else is no socket's.
    if let Some(after) = &query.after
        && !(after.len() == 16
            && after
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    {
        return Err(ApiError::new(
            Code::InvalidQuery,
            "after is a socket id: 16 lowercase hex digits",
        ));
    }
    let page = state
        .realtime()
        .sockets(&app, query.after.as_deref(), limit)
        .await;
    Ok(axum::Json(page))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ChannelsQuery {
    /// The last channel of the previous page.
    after: Option<String>,
    /// 1 to 1,000 (default 100).
    limit: Option<usize>,
}

/// The app's channels on this node (those subscribed to or keeping messages; users' direct
/// message streams aside): how many, and a page of them in name order with their subscribers,
/// members present and latest message number.
#[utoipa::path(get, path = "/v1/admin/apps/{app}/realtime/channels", tag = "realtime",
    params(("app" = AppName, Path), ChannelsQuery),
    responses((status = 200, body = ChannelsPage)))]
async fn channels(
    State(state): State<AppState>,
    AdminOf(app): AdminOf,
    Query(query): Query<ChannelsQuery>,
) -> Result<axum::Json<ChannelsPage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_SOCKETS_PAGE).contains(&limit) {
        return Err(ApiError::new(
            Code::InvalidQuery,
            format!("limit is 1 to {MAX_SOCKETS_PAGE}"),
        ));
    }
    // A channel's name, checked as one, is only compared: anything else is no channel's.
    if let Some(after) = &query.after {
        ChannelName::parse(after)
            .map_err(|message| ApiError::new(Code::InvalidQuery, format!("after: {message}")))?;
    }
    let page = state
        .realtime()
        .channels(&app, query.after.as_deref(), limit)
        .await;
    Ok(axum::Json(page))
}

/// Opens the app's realtime socket (a WebSocket upgrade). Authenticate with `Authorization:
/// Bearer` or with a first message `{"type": "auth", "token": "…"}` within 10 seconds.
#[utoipa::path(get, path = "/v1/apps/{app}/realtime", tag = "realtime",
    params(("app" = AppName, Path)),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 426, description = "upgrade_required: not a WebSocket handshake"),
    ))]
async fn connect(
    State(state): State<AppState>,
    TargetApp(app): TargetApp,
    CallerOf(caller): CallerOf,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    state.apps().get(&app).await?;
    let key = key_of(&caller, crate::extract::bearer(&headers).ok().flatten());
    let upgrade = upgrade.map_err(|e| ApiError::new(Code::UpgradeRequired, e.body_text()))?;
    Ok(upgrade
        // Small buffers: most sockets are idle most of the time, and a client's messages are
        // small (the read buffer is allocated for each socket up front; a larger frame grows
        // it as it arrives).
        .read_buffer_size(1024)
        .write_buffer_size(4 * 1024)
        // The library refuses what is far over the limit before buffering it; what is just
        // over is refused here, with its own close code.
        .max_message_size(4 * MAX_MESSAGE)
        .max_frame_size(4 * MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let hub = state.realtime().clone();
            Session {
                state,
                hub,
                app,
                socket,
                publishes: Window::new(),
                resumes: Window::new(),
                cut: Default::default(),
                key,
            }
            .run(caller)
            .await;
        }))
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum ClientMessage {
    /// A token: the first one, or a fresh one before the last expires.
    Auth {
        token: String,
    },
    /// To a collection's changes, a channel, or the caller's direct messages (`direct: true`).
    Subscribe {
        id: String,
        #[serde(default)]
        collection: Option<String>,
        #[serde(default)]
        filter: Option<String>,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        direct: bool,
        /// With the channel's presence changes.
        #[serde(default)]
        presence: bool,
        /// Where the client left the channel, to get what it missed.
        #[serde(default)]
        after: Option<Resume>,
    },
    Unsubscribe {
        id: String,
    },
    Publish {
        #[serde(default)]
        id: Option<String>,
        channel: String,
        data: Json,
    },
    Send {
        #[serde(default)]
        id: Option<String>,
        to: String,
        data: Json,
    },
    /// Be present, with a state, in the channel of subscription `id`.
    Track {
        id: String,
        state: Json,
    },
    Untrack {
        id: String,
    },
    /// A page of who is present in a channel.
    Presence {
        #[serde(default)]
        id: Option<String>,
        channel: String,
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    },
    Ping {
        #[serde(default)]
        id: Option<Json>,
    },
    Pong {
        #[serde(default, rename = "id")]
        _id: Option<Json>,
    },
}

const TYPES: &[&str] = &[
    "auth",
    "subscribe",
    "unsubscribe",
    "publish",
    "send",
    "track",
    "untrack",
    "presence",
    "ping",
    "pong",
];

/// Why a client's message is refused: the error's code and message.
struct Refusal(&'static str, String);

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal(e.code.as_str(), e.message)
    }
}

impl From<RealtimeError> for Refusal {
    fn from(e: RealtimeError) -> Self {
        let code = match &e {
            RealtimeError::TooManySubscriptions => "too_many_subscriptions",
            RealtimeError::SubscriptionExists | RealtimeError::JoinedAlready => {
                "subscription_exists"
            }
            RealtimeError::NoSubscription => "no_subscription",
            RealtimeError::NotAChannel(_)
            | RealtimeError::InvalidState
            | RealtimeError::InvalidResume => "invalid_message",
            RealtimeError::TooManyConnections(_)
            | RealtimeError::AppFull(_)
            | RealtimeError::AnonymousFull(_) => "too_many_connections",
            RealtimeError::Closed => "closed",
            _ => return ApiError::from(e).into(),
        };
        Refusal(code, e.to_string())
    }
}

impl From<RealtimeError> for ApiError {
    fn from(e: RealtimeError) -> Self {
        let code = match e {
            RealtimeError::Data(e) => return e.into(),
            RealtimeError::Store(ref cause) => return ApiError::store(cause, &e),
            RealtimeError::ChannelNotFound(_) => Code::ChannelNotFound,
            RealtimeError::Forbidden(_) => Code::Forbidden,
            RealtimeError::InvalidRecipient => Code::InvalidRecipient,
            RealtimeError::TooManyChannels => Code::TooManyChannels,
            RealtimeError::PresenceFull => Code::PresenceFull,
            RealtimeError::InvalidSettings(_) => Code::InvalidRealtimeSettings,
            RealtimeError::InvalidState
            | RealtimeError::NotAChannel(_)
            | RealtimeError::InvalidResume => Code::InvalidBody,
            RealtimeError::TooManySubscriptions
            | RealtimeError::SubscriptionExists
            | RealtimeError::JoinedAlready
            | RealtimeError::NoSubscription
            | RealtimeError::TooManyConnections(_)
            | RealtimeError::AppFull(_)
            | RealtimeError::AnonymousFull(_)
            | RealtimeError::Closed => Code::InvalidBody,
        };
        ApiError::new(code, e.to_string())
    }
}

/// A channel's name from a client or a path: `invalid_channel` if it is not one.
pub(crate) fn channel_name(text: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(text).map_err(|message| ApiError::new(Code::InvalidChannel, message))
}

/// Parses a client's text frame: `invalid_json`, `unknown_type` or `invalid_message` if it is
/// not one.
fn parse(text: &str) -> Result<ClientMessage, Refusal> {
    let value: Json = serde_json::from_str(text)
        .map_err(|e| Refusal("invalid_json", format!("the message is not JSON: {e}")))?;
    let kind = value.get("type").and_then(Json::as_str).unwrap_or_default();
    if !TYPES.contains(&kind) {
        return Err(Refusal(
            "unknown_type",
            format!("a message's type is one of {}", TYPES.join(", ")),
        ));
    }
    serde_json::from_value(value).map_err(|e| Refusal("invalid_message", e.to_string()))
}

/// A request's id, if it has one: the same form as a subscription's.
fn request_id(id: Option<String>) -> Result<Option<String>, Refusal> {
    match id {
        Some(id) => sub_id(&id).map(|_| Some(id.clone())),
        None => Ok(None),
    }
}

/// A subscription's id: 1 to 64 letters, digits, `_` and `-`.
fn sub_id(id: &str) -> Result<&str, Refusal> {
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then_some(id).ok_or_else(|| {
        Refusal(
            "invalid_message",
            "a subscription id is 1 to 64 letters, digits, _ and -".into(),
        )
    })
}

struct Session {
    state: AppState,
    hub: Hub,
    app: AppName,
    socket: WebSocket,
    /// The current second's publishes and direct messages.
    publishes: Window,
    /// The current [`RESUMES_WINDOW`]'s resumes of collections' subscriptions.
    resumes: Window,
    /// Told when the hub cuts this connection.
    cut: std::sync::Arc<tokio::sync::Notify>,
    /// The hash of the app's secret key the caller presented, if it is the app's key: checked
    /// again at every ping, so that a key rotated on another node closes its sockets here too.
    key: Option<SecretHash>,
}

/// What a socket did in the current window of one of its rate limits: when the window began,
/// and how many it counted.
struct Window {
    began: Instant,
    count: u32,
}

impl Window {
    fn new() -> Window {
        Window {
            began: Instant::now(),
            count: 0,
        }
    }

    /// Counts one more, in windows of `length`: false when that is past `most`.
    fn allow(&mut self, length: Duration, most: u32) -> bool {
        if self.began.elapsed() >= length {
            *self = Window::new();
        }
        self.count += 1;
        self.count <= most
    }
}

/// What woke a waiting socket.
enum Woken<R> {
    /// A frame from the client (`R`: one, or an error), or nothing: the client went away.
    Received(Option<R>),
    /// What the hub queued for the socket, or nothing: the hub let go of it.
    Outbound(Option<Outbound>),
    Ping,
    /// The token expired.
    Expired,
}

/// The order in which a waiting socket looks at what may wake it. What the hub queued comes
/// first: a busy socket mostly delivers, and a wake-up that looks at the client's side first
/// costs a fan-out that much more. The rest comes first after [`DELIVERIES_IN_A_ROW`]
/// deliveries, so that a steady stream never holds off the token's expiry, the pings and the
/// client's messages (an expired token still gets at most that many batches).
#[derive(Default)]
struct Turns {
    deliveries_in_a_row: u32,
}

impl Turns {
    fn poll<S: futures_util::Stream + Unpin>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        outbound: &mut tokio::sync::mpsc::Receiver<Outbound>,
        socket: &mut S,
        pings: &mut tokio::time::Interval,
        expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Poll<Woken<S::Item>> {
        let hub_first = self.deliveries_in_a_row < DELIVERIES_IN_A_ROW;
        if hub_first && let Poll::Ready(out) = outbound.poll_recv(cx) {
            self.deliveries_in_a_row += 1;
            return Poll::Ready(Woken::Outbound(out));
        }
        self.deliveries_in_a_row = 0;
        // The timers before the client, so that a client that keeps its socket full holds
        // off neither its token's expiry nor the pings (and the check of its app key at each).
        if expiry.poll(cx).is_ready() {
            return Poll::Ready(Woken::Expired);
        }
        if pings.poll_tick(cx).is_ready() {
            return Poll::Ready(Woken::Ping);
        }
        if let Poll::Ready(message) = socket.poll_next_unpin(cx) {
            return Poll::Ready(Woken::Received(message));
        }
        if !hub_first && let Poll::Ready(out) = outbound.poll_recv(cx) {
            self.deliveries_in_a_row = 1;
            return Poll::Ready(Woken::Outbound(out));
        }
        Poll::Pending
    }
}

/// The hash of `token` if it is what made `caller` the app's key.
fn key_of(caller: &Caller, token: Option<&str>) -> Option<SecretHash> {
    match (caller, token) {
        (Caller::AppKey(_), Some(token)) => Some(SecretHash::of(token)),
        _ => None,
    }
}

impl Session {
    /// Sends a frame; false when the socket is gone or took longer than [`SEND_WITHIN`].
    async fn send_frame(&mut self, message: Message) -> bool {
        self.send_frames(std::iter::once(message)).await
    }

    /// Sends frames with one flush, all taken within [`SEND_WITHIN`], unless the hub cuts the
    /// connection meanwhile (its queue filled behind a client that stopped reading); false when
    /// the socket is gone.
    async fn send_frames(&mut self, frames: impl IntoIterator<Item = Message>) -> bool {
        let socket = &mut self.socket;
        // Each frame within its own deadline: a slow reader is not cut for a long batch.
        let sending = async {
            for frame in frames {
                let fed = tokio::time::timeout(SEND_WITHIN, socket.feed(frame)).await;
                if !matches!(fed, Ok(Ok(()))) {
                    return false;
                }
            }
            matches!(
                tokio::time::timeout(SEND_WITHIN, socket.flush()).await,
                Ok(Ok(()))
            )
        };
        tokio::select! {
            // The cut is only looked at while the frames wait: most go out at once.
            biased;
            sent = sending => sent,
            () = self.cut.notified() => false,
        }
    }

    async fn send(&mut self, value: Json) -> bool {
        self.send_frame(Message::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn refuse(&mut self, refusal: Refusal, id: Option<&str>) -> bool {
        let Refusal(code, message) = refusal;
        self.send(json!({ "type": "error", "code": code, "message": message, "id": id }))
            .await
    }

    /// Closes with one of the hub's reasons ([`Close`]: its code and reason).
    async fn end(&mut self, why: Close) {
        self.close(why.code(), why.reason()).await;
    }

    /// Sends a close frame (if the client still reads, within [`SEND_WITHIN`]).
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let closing = self.socket.send(Message::Close(Some(frame)));
        let _ = tokio::time::timeout(SEND_WITHIN, closing).await;
    }

    /// Whether the caller's session has been revoked since its token was checked, or the
    /// app's key it presented replaced (rotated, on this node or another).
    async fn revoked(&mut self, caller: &Caller) -> bool {
        match (caller, &self.key) {
            (Caller::User(principal), _) => {
                let auth = self.state.auth().clone();
                auth.is_revoked(&self.app, &principal.session_id).await
            }
            (Caller::AppKey(_), Some(key)) => {
                match self.state.system().app_by_key_hash(key.as_bytes()).await {
                    Ok(owner) => owner.as_ref() != Some(&self.app),
                    // Not known now: asked again at the next ping.
                    Err(e) => {
                        tracing::warn!(app = %self.app, error = %e, "could not check a socket's app key");
                        false
                    }
                }
            }
            _ => false,
        }
    }

    /// The caller of a token sent in a message.
    async fn authenticate(&mut self, token: &str) -> Result<Caller, Refusal> {
        Ok(caller_of_token(&self.state, &self.app, token).await?)
    }

    /// Waits for the first message to be `auth`, all of it within [`AUTH_WITHIN`]: the caller
    /// and, where the app lets sockets in without a token and the first message is another,
    /// that message, to act on as an anonymous caller's; `None` after closing.
    async fn first_auth(&mut self, anonymous: bool) -> Option<(Caller, Option<ClientMessage>)> {
        match tokio::time::timeout(AUTH_WITHIN, self.wait_for_auth(anonymous)).await {
            Ok(first) => first,
            Err(_) => {
                self.close(4000, "auth_timeout").await;
                None
            }
        }
    }

    async fn wait_for_auth(&mut self, anonymous: bool) -> Option<(Caller, Option<ClientMessage>)> {
        let mut tries = 0;
        loop {
            let message = self.socket.recv().await;
            let text = match message {
                Some(Ok(Message::Text(text))) if text.len() <= MAX_MESSAGE => text,
                Some(Ok(Message::Text(_))) => {
                    self.close(1009, "message_too_large").await;
                    return None;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Binary(_))) => {
                    self.close(1003, "binary_frame").await;
                    return None;
                }
                _ => return None,
            };
            match parse(&text) {
                Ok(ClientMessage::Auth { token }) => match self.authenticate(&token).await {
                    Ok(caller) => {
                        self.key = key_of(&caller, Some(&token));
                        return Some((caller, None));
                    }
                    Err(refusal) => {
                        self.refuse(refusal, None).await;
                        self.close(4000, "auth_failed").await;
                        return None;
                    }
                },
                Ok(message) if anonymous => return Some((Caller::Anonymous, Some(message))),
                Ok(_) => {
                    let refusal = Refusal(
                        "auth_required",
                        "the first message is {\"type\": \"auth\", \"token\": …}".into(),
                    );
                    self.refuse(refusal, None).await;
                    self.close(4000, "auth_required").await;
                    return None;
                }
                Err(refusal) => {
                    tries += 1;
                    if tries >= AUTH_TRIES || !self.refuse(refusal, None).await {
                        self.close(4000, "auth_required").await;
                        return None;
                    }
                }
            }
        }
    }

    async fn run(mut self, caller: Caller) {
        // Every socket keeps this future for its life, and it is as large as the largest step
        // it awaits in place: what runs once, and each step after a wake-up, are boxed, so that
        // it holds only what waiting needs (docs/performance.md, "Realtime").
        if let Some((id, caller, first, mut outbound)) = Box::pin(self.open(caller)).await {
            self.serve(id, caller, first, &mut outbound).await;
            Box::pin(self.hub.disconnect(id)).await;
        }
        Box::pin(self.linger()).await;
    }

    /// Reads what the client still sends, until it closes too, for at most [`LINGER`]: a
    /// socket let go of with bytes unread is reset, and the reset may overtake the close frame
    /// on its way (a client flooding the socket would not learn why it was closed).
    async fn linger(&mut self) {
        let draining = async { while let Some(Ok(_)) = self.socket.recv().await {} };
        let _ = tokio::time::timeout(LINGER, draining).await;
    }

    /// Authenticates the caller (when the upgrade did not), registers the socket and checks
    /// the session once more; `None` when the socket was refused and closed.
    async fn open(
        &mut self,
        caller: Caller,
    ) -> Option<(
        ConnectionId,
        Caller,
        Option<ClientMessage>,
        tokio::sync::mpsc::Receiver<Outbound>,
    )> {
        let (caller, first) = match caller {
            Caller::Anonymous => {
                let anonymous = match self.hub.settings(&self.app).await {
                    Ok(settings) => settings.body.anonymous,
                    Err(e) => {
                        self.refuse(e.into(), None).await;
                        self.close(1011, "internal_error").await;
                        return None;
                    }
                };
                self.first_auth(anonymous).await?
            }
            caller => (caller, None),
        };
        let (id, outbound) = match self.hub.connect(&self.app, &caller).await {
            Ok(connected) => {
                self.cut = connected.cut;
                (connected.id, connected.outbound)
            }
            Err(e) => {
                self.refuse(e.into(), None).await;
                self.close(4009, "too_many_connections").await;
                return None;
            }
        };
        // A revocation between the token's check and the registration found no socket to close.
        if self.revoked(&caller).await {
            self.hub.disconnect(id).await;
            self.end(Close::SessionRevoked).await;
            return None;
        }
        // Settings that stopped letting sockets in without a token while this one waited for
        // its first message (up to AUTH_WITHIN) found it not yet registered.
        if matches!(caller, Caller::Anonymous)
            && !self
                .hub
                .settings(&self.app)
                .await
                .is_ok_and(|settings| settings.body.anonymous)
        {
            self.hub.disconnect(id).await;
            self.end(Close::AuthRequired).await;
            return None;
        }
        Some((id, caller, first, outbound))
    }

    /// Waits for the client's messages, the hub's, pings and the token's expiry, and acts on
    /// each, until the socket closes.
    async fn serve(
        &mut self,
        id: ConnectionId,
        mut caller: Caller,
        first: Option<ClientMessage>,
        outbound: &mut tokio::sync::mpsc::Receiver<Outbound>,
    ) {
        let expiry = tokio::time::sleep_until(expires(&caller, self.hub.now_ms()));
        tokio::pin!(expiry);
        if !Box::pin(self.greet(id, &mut caller, first, expiry.as_mut())).await {
            return;
        }
        let mut pings = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        let mut received = Window::new();
        let mut turns = Turns::default();
        loop {
            let woken = std::future::poll_fn(|cx| {
                turns.poll(cx, outbound, &mut self.socket, &mut pings, expiry.as_mut())
            })
            .await;
            let carry_on = match woken {
                Woken::Received(message) => {
                    let step =
                        self.receive(id, &mut caller, message, &mut received, expiry.as_mut());
                    Box::pin(step).await
                }
                Woken::Outbound(out) => Box::pin(self.deliver(&caller, out, outbound)).await,
                Woken::Ping => Box::pin(self.ping(&caller)).await,
                Woken::Expired => {
                    Box::pin(self.end(Close::TokenExpired)).await;
                    false
                }
            };
            if !carry_on {
                return;
            }
        }
    }

    /// `ready`, then the first message if the socket came in without a token; false when the
    /// socket is gone.
    async fn greet(
        &mut self,
        id: ConnectionId,
        caller: &mut Caller,
        first: Option<ClientMessage>,
        expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        if !self.send(ready(caller)).await {
            return false;
        }
        match first {
            Some(first) => Box::pin(self.handle(id, caller, first, expiry)).await,
            None => true,
        }
    }

    /// Acts on a frame from the client (counted against [`MAX_MESSAGES_PER_SECOND`]); false
    /// when the socket is gone or closed.
    async fn receive(
        &mut self,
        id: ConnectionId,
        caller: &mut Caller,
        message: Option<Result<Message, axum::Error>>,
        received: &mut Window,
        expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        let text = match message {
            Some(Ok(Message::Text(text))) => Some(text),
            // Counted too: each costs a wake-up, and a ping an answer.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Ok(Message::Binary(_))) => {
                self.close(1003, "binary_frame").await;
                return false;
            }
            Some(Ok(Message::Close(_))) | None => return false,
            // Broken framing, or far over the size limit.
            Some(Err(_)) => {
                self.close(1002, "protocol_error").await;
                return false;
            }
        };
        if text.as_ref().is_some_and(|text| text.len() > MAX_MESSAGE) {
            self.close(1009, "message_too_large").await;
            return false;
        }
        if !received.allow(Duration::from_secs(1), MAX_MESSAGES_PER_SECOND) {
            self.end(Close::RateLimited).await;
            return false;
        }
        let Some(text) = text else {
            return true;
        };
        match parse(&text) {
            Ok(message) => Box::pin(self.handle(id, caller, message, expiry)).await,
            Err(refusal) => self.refuse(refusal, None).await,
        }
    }

    /// Sends what the hub queued for the socket, `first` and what else waits, in one write (at
    /// most [`BATCH`] messages and about [`BATCH_BYTES`] of them); false when the socket is
    /// gone or closed.
    async fn deliver(
        &mut self,
        caller: &Caller,
        first: Option<Outbound>,
        outbound: &mut tokio::sync::mpsc::Receiver<Outbound>,
    ) -> bool {
        let first = match first {
            Some(Outbound::Close(why)) => {
                self.end(why).await;
                return false;
            }
            Some(first) => first,
            // The hub let go of this connection without a word: its queue was full.
            None => {
                self.end(Close::SlowConsumer).await;
                return false;
            }
        };
        let mut close = None;
        let mut check_key = false;
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            if let Outbound::Close(why) = message {
                close = Some(why);
                break;
            }
            check_key |= matches!(message, Outbound::CheckKey);
            if let Some(text) = text_of(message) {
                bytes += match &text {
                    Message::Text(text) => text.len(),
                    _ => 0,
                };
                messages.push(text);
            }
            if messages.len() < BATCH && bytes < BATCH_BYTES {
                next = outbound.try_recv().ok();
            }
        }
        if !self.send_frames(messages).await {
            return false;
        }
        if let Some(why) = close {
            self.end(why).await;
            return false;
        }
        if check_key && self.revoked(caller).await {
            self.end(Close::SessionRevoked).await;
            return false;
        }
        true
    }

    /// Checks the app's key again if the socket came in with it, then pings (a WebSocket ping,
    /// and one the SDK answers); false when the socket is gone or closed.
    async fn ping(&mut self, caller: &Caller) -> bool {
        if self.key.is_some() && self.revoked(caller).await {
            self.end(Close::SessionRevoked).await;
            return false;
        }
        self.send_frame(Message::Ping(Default::default())).await
            && self.send(json!({ "type": "ping" })).await
    }

    /// Counts a publish or a direct message against [`MAX_PUBLISHES_PER_SECOND`]: false when
    /// over it.
    fn publish_allowed(&mut self) -> bool {
        self.publishes
            .allow(Duration::from_secs(1), MAX_PUBLISHES_PER_SECOND)
    }

    /// Counts a resume of a collection's subscription against [`MAX_RESUMES`]: false when
    /// over it.
    fn resume_allowed(&mut self) -> bool {
        self.resumes.allow(RESUMES_WINDOW, MAX_RESUMES)
    }

    /// Subscribes to a collection's changes: `subscribed`, then what the client missed since
    /// `after`, in order, or a `reset` if the log no longer holds it; false when the socket is
    /// gone.
    async fn subscribe(
        &mut self,
        id: ConnectionId,
        caller: &Caller,
        sub: &str,
        collection: &str,
        filter: Option<String>,
        after: Option<Resume>,
    ) -> bool {
        if after.is_some() && !self.resume_allowed() {
            let refusal = Refusal(
                "rate_limited",
                format!("at most {MAX_RESUMES} resumes of collections' subscriptions a minute"),
            );
            return self.refuse(refusal, Some(sub)).await;
        }
        match self
            .hub
            .subscribe(id, caller, sub, collection, filter.as_deref(), after)
            .await
        {
            Ok(joined) => self.joined(sub, joined).await,
            Err(e) => self.refuse(e.into(), Some(sub)).await,
        }
    }

    /// Joins a channel: `subscribed`, then what the client missed since `after`, in order, or
    /// a `reset` if it is no longer kept; false when the socket is gone.
    async fn join(
        &mut self,
        id: ConnectionId,
        caller: &Caller,
        sub: &str,
        channel: ChannelName,
        presence: bool,
        after: Option<Resume>,
    ) -> bool {
        match self
            .hub
            .join(id, caller, sub, channel, presence, after)
            .await
        {
            Ok(joined) => self.joined(sub, joined).await,
            Err(e) => self.refuse(e.into(), Some(sub)).await,
        }
    }

    /// Answers a subscription's start: `subscribed` (with its place in the log, for a
    /// collection's), what the client missed, then the `reset` if it missed too much; false
    /// when the socket is gone.
    async fn joined(&mut self, sub: &str, joined: Joined) -> bool {
        let mut subscribed =
            json!({ "type": "subscribed", "id": sub, "epoch": joined.epoch, "seq": joined.seq });
        if let Some(pos) = &joined.pos {
            subscribed["pos"] = json!(pos);
        }
        if !self.send(subscribed).await {
            return false;
        }
        let catching_up = async {
            for missed in joined.missed.chunks(BATCH) {
                let frames = missed
                    .iter()
                    .cloned()
                    .filter_map(|f| text_of(Outbound::Frame(f)));
                if !self.send_frames(frames).await {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(CATCH_UP_WITHIN, catching_up).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => {
                // What was left to send, and its share of the node's budget, go first.
                drop(joined);
                self.end(Close::SlowConsumer).await;
                return false;
            }
        }
        match joined.reset {
            Some(reason) => {
                self.send(json!({
                    "type": "reset", "sub": sub, "epoch": joined.epoch, "reason": reason,
                }))
                .await
            }
            None => true,
        }
    }

    /// Acts on one message; false when the socket is gone.
    async fn handle(
        &mut self,
        id: ConnectionId,
        caller: &mut Caller,
        message: ClientMessage,
        expiry: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> bool {
        match message {
            ClientMessage::Auth { token } => match self.authenticate(&token).await {
                Ok(fresh) if same_identity(caller, &fresh) => {
                    if let Err(e) = self.hub.reauthorize(id, &fresh).await {
                        return self.refuse(e.into(), None).await;
                    }
                    self.key = key_of(&fresh, Some(&token));
                    if self.revoked(&fresh).await {
                        self.end(Close::SessionRevoked).await;
                        return false;
                    }
                    expiry.reset(expires(&fresh, self.hub.now_ms()));
                    *caller = fresh;
                    self.send(ready(caller)).await
                }
                Ok(_) => {
                    let refusal = Refusal(
                        "invalid_token",
                        "a socket's token is refreshed with a token of the same user".into(),
                    );
                    self.refuse(refusal, None).await
                }
                Err(refusal) => self.refuse(refusal, None).await,
            },
            ClientMessage::Subscribe {
                id: sub,
                collection,
                filter,
                channel,
                direct,
                presence,
                after,
            } => {
                let sub = match sub_id(&sub) {
                    Ok(sub) => sub.to_owned(),
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                let target = match (collection, channel, direct) {
                    (Some(collection), None, false) if !presence => {
                        return self
                            .subscribe(id, caller, &sub, &collection, filter, after)
                            .await;
                    }
                    (None, Some(channel), false) if filter.is_none() => channel_name(&channel),
                    (None, None, true) if filter.is_none() => match caller {
                        Caller::User(user) => Ok(ChannelName::direct(&user.user_id)),
                        _ => Err(ApiError::new(
                            Code::Forbidden,
                            "direct messages go to a user's socket: authenticate first",
                        )),
                    },
                    _ => {
                        let refusal = Refusal(
                            "invalid_message",
                            "a subscription follows one of `collection` (with its `filter`), \
                             `channel` or `direct: true` (with `presence` and `after`)"
                                .into(),
                        );
                        return self.refuse(refusal, Some(&sub)).await;
                    }
                };
                match target {
                    Ok(channel) => self.join(id, caller, &sub, channel, presence, after).await,
                    Err(e) => self.refuse(e.into(), Some(&sub)).await,
                }
            }
            ClientMessage::Publish {
                id: request,
                channel,
                data,
            } => {
                let request = match request_id(request) {
                    Ok(request) => request,
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                if !self.publish_allowed() {
                    return self.refuse(rate_limited(), request.as_deref()).await;
                }
                let published = match channel_name(&channel) {
                    Ok(channel) => self
                        .hub
                        .publish(&self.app, caller, &channel, &data)
                        .await
                        .map_err(Refusal::from),
                    Err(e) => Err(e.into()),
                };
                match published {
                    Ok(seq) => {
                        self.send(json!({ "type": "published", "id": request, "seq": seq }))
                            .await
                    }
                    Err(refusal) => self.refuse(refusal, request.as_deref()).await,
                }
            }
            ClientMessage::Send {
                id: request,
                to,
                data,
            } => {
                let request = match request_id(request) {
                    Ok(request) => request,
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                if !self.publish_allowed() {
                    return self.refuse(rate_limited(), request.as_deref()).await;
                }
                match self.hub.send_direct(&self.app, caller, &to, &data).await {
                    Ok(_) => self.send(json!({ "type": "sent", "id": request })).await,
                    Err(e) => self.refuse(e.into(), request.as_deref()).await,
                }
            }
            ClientMessage::Track { id: sub, state } => {
                let sub = match sub_id(&sub) {
                    Ok(sub) => sub.to_owned(),
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                // Each one is a diff to every watcher of the channel's presence.
                if !self.publish_allowed() {
                    return self.refuse(rate_limited(), Some(&sub)).await;
                }
                match self.hub.track(id, &sub, state).await {
                    Ok(()) => self.send(json!({ "type": "tracked", "id": sub })).await,
                    Err(e) => self.refuse(e.into(), Some(&sub)).await,
                }
            }
            ClientMessage::Untrack { id: sub } => {
                let sub = match sub_id(&sub) {
                    Ok(sub) => sub.to_owned(),
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                if !self.publish_allowed() {
                    return self.refuse(rate_limited(), Some(&sub)).await;
                }
                match self.hub.untrack(id, &sub).await {
                    Ok(()) => self.send(json!({ "type": "untracked", "id": sub })).await,
                    Err(e) => self.refuse(e.into(), Some(&sub)).await,
                }
            }
            ClientMessage::Presence {
                id: request,
                channel,
                after,
                limit,
            } => {
                let request = match request_id(request) {
                    Ok(request) => request,
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                if !self.publish_allowed() {
                    return self.refuse(rate_limited(), request.as_deref()).await;
                }
                let limit = limit.unwrap_or(100);
                if !(1..=MAX_PRESENCE_PAGE).contains(&limit) {
                    let refusal = Refusal(
                        "invalid_message",
                        format!("a presence page's limit is 1 to {MAX_PRESENCE_PAGE}"),
                    );
                    return self.refuse(refusal, request.as_deref()).await;
                }
                let page = match channel_name(&channel) {
                    Ok(name) => self
                        .hub
                        .presence(&self.app, caller, &name, after.as_deref(), limit)
                        .await
                        .map_err(Refusal::from),
                    Err(e) => Err(e.into()),
                };
                match page {
                    Ok(page) => {
                        self.send(json!({
                            "type": "presence", "id": request, "channel": channel,
                            "count": page.count, "members": page.members, "next": page.next,
                        }))
                        .await
                    }
                    Err(refusal) => self.refuse(refusal, request.as_deref()).await,
                }
            }
            ClientMessage::Unsubscribe { id: sub } => {
                let sub = match sub_id(&sub) {
                    Ok(sub) => sub.to_owned(),
                    Err(refusal) => return self.refuse(refusal, None).await,
                };
                match self.hub.unsubscribe(id, &sub).await {
                    Ok(()) => {
                        self.send(json!({ "type": "unsubscribed", "id": sub }))
                            .await
                    }
                    Err(e) => self.refuse(e.into(), Some(&sub)).await,
                }
            }
            ClientMessage::Ping { id } => self.send(json!({ "type": "pong", "id": id })).await,
            ClientMessage::Pong { .. } => true,
        }
    }
}

fn rate_limited() -> Refusal {
    Refusal(
        "rate_limited",
        format!(
            "at most {MAX_PUBLISHES_PER_SECOND} publishes, direct messages, presence changes \
             and presence pages a second"
        ),
    )
}

/// How many deliveries in a row a socket makes before it looks at the client's side first.
const DELIVERIES_IN_A_ROW: u32 = 8;

/// How many waiting messages go out in one write, and about how many bytes of them.
const BATCH: usize = 32;
const BATCH_BYTES: usize = 64 * 1024;

/// A message as a text frame: a shared frame as it is (no copy), others serialized.
pub(crate) fn text_of(message: Outbound) -> Option<Message> {
    match message {
        Outbound::Frame(bytes) => Utf8Bytes::try_from(bytes).ok().map(Message::Text),
        Outbound::Close(_) | Outbound::CheckKey => None,
        other => {
            let text = serde_json::to_string(&other).ok()?;
            Some(Message::Text(Utf8Bytes::from(text)))
        }
    }
}

/// `ready`: who the socket is for, and until when its token holds.
fn ready(caller: &Caller) -> Json {
    match caller {
        Caller::User(principal) => json!({
            "type": "ready",
            "user": principal.user_id,
            "expires_at": cloudlet_core::clock::Timestamp::from_unix_ms(principal.expires_at_ms)
                .to_rfc3339(),
        }),
        _ => json!({ "type": "ready", "user": null, "expires_at": null }),
    }
}

/// When the caller's token stops holding (the admin token and app keys do not expire).
fn expires(caller: &Caller, now_ms: i64) -> Instant {
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let Caller::User(principal) = caller else {
        return far;
    };
    let left = u64::try_from(principal.expires_at_ms - now_ms).unwrap_or(0);
    Instant::now() + Duration::from_millis(left)
}

/// Whether a fresh token is the same caller's (the same user, or the same key).
fn same_identity(current: &Caller, fresh: &Caller) -> bool {
    match (current, fresh) {
        (Caller::User(a), Caller::User(b)) => a.user_id == b.user_id,
        (Caller::Admin, Caller::Admin) => true,
        (Caller::AppKey(a), Caller::AppKey(b)) => a == b,
        // A socket let in without a token may log in.
        (Caller::Anonymous, Caller::User(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What wakes a socket, in order, until `last` (at most 100 wake-ups): with `queued`
    /// messages from the hub, a client that sends `sent` frames (or without end), and a ping
    /// and the token's expiry due (a second ago) or not (in an hour).
    async fn wakes_until(
        last: &str,
        queued: usize,
        sent: Option<usize>,
        ping_due: bool,
        expiry_due: bool,
    ) -> Vec<&'static str> {
        let at = |due| match due {
            true => Instant::now() - Duration::from_secs(1),
            false => Instant::now() + Duration::from_secs(3600),
        };
        let (hub, mut outbound) = tokio::sync::mpsc::channel(64);
        for _ in 0..queued {
            hub.try_send(Outbound::CheckKey).expect("room");
        }
        let frames = futures_util::stream::repeat("hello");
        let mut socket = frames.take(sent.unwrap_or(usize::MAX));
        let mut pings = tokio::time::interval_at(at(ping_due), PING_EVERY);
        let expiry = tokio::time::sleep_until(at(expiry_due));
        tokio::pin!(expiry);
        let mut turns = Turns::default();
        let mut wakes = Vec::new();
        while wakes.last() != Some(&last) && wakes.len() < 100 {
            let woken = std::future::poll_fn(|cx| {
                turns.poll(cx, &mut outbound, &mut socket, &mut pings, expiry.as_mut())
            })
            .await;
            wakes.push(match woken {
                Woken::Outbound(_) => "hub",
                Woken::Received(message) => {
                    assert_eq!(message, Some("hello"));
                    "client"
                }
                Woken::Ping => "ping",
                Woken::Expired => "expired",
            });
        }
        wakes
    }

    async fn wakes_until_the_client(queued: usize) -> Vec<&'static str> {
        wakes_until("client", queued, Some(1), false, false).await
    }

    #[tokio::test]
    async fn a_steady_stream_from_the_hub_does_not_hold_off_the_client() {
        let wakes = wakes_until_the_client(20).await;
        let hub_first = vec!["hub"; DELIVERIES_IN_A_ROW as usize];
        assert_eq!(wakes, [hub_first, vec!["client"]].concat());
    }

    #[tokio::test]
    async fn the_client_is_heard_at_once_when_the_hub_has_nothing() {
        assert_eq!(wakes_until_the_client(0).await, ["client"]);
    }

    #[tokio::test]
    async fn a_client_that_keeps_its_socket_full_holds_off_neither_expiry_nor_pings() {
        assert_eq!(
            wakes_until("expired", 0, None, false, true).await,
            ["expired"]
        );
        assert_eq!(wakes_until("ping", 0, None, true, false).await, ["ping"]);
    }

    #[tokio::test]
    async fn a_steady_stream_from_the_hub_holds_off_the_expiry_for_a_few_deliveries_at_most() {
        let wakes = wakes_until("expired", 20, None, false, true).await;
        let hub_first = vec!["hub"; DELIVERIES_IN_A_ROW as usize];
        assert_eq!(wakes, [hub_first, vec!["expired"]].concat());
    }
}
