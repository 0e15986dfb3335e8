//! `GET /console/api/apps/{app}/live`: the console's own WebSocket, for pages that show what
//! happens as it happens (XpmJS's channel debugger):
//! - the traffic of the channels it watches (their messages and presence changes, exactly as
//!   the hub sends them to subscribers; watching does not make the person present);
//! - the app's function logs as this node writes them (and, every few seconds, those other
//!   nodes wrote);
//! - how many sockets the app has open, and how many users hold them, when that changes.
//!
//! Only from the console's own page: the handshake must carry the console's `Origin` (a
//! browser always sends it on a WebSocket, and cookies go with a cross-site handshake too),
//! the person's session cookie, and a developer's role on the app (channel messages and logs
//! are personal data, see [`super::policy`]). The session and the role are checked again every
//! [`RECHECK_EVERY`]: a person logged out or taken off the app stops watching. Every channel
//! watched and every log followed is written to the audit log (once a socket). A node holds at
//! most 64 of these sockets, 4 of one person's (`429 too_many_requests` beyond), since each
//! looks at its app every 2 s; a page that answers no ping for a minute is cut.
//!
//! The protocol (docs/console.md): the page sends `{"type":"watch","channel":…}`,
//! `{"type":"unwatch","channel":…}`, `{"type":"tail","function":…,"after":…}` and
//! `{"type":"untail"}`; the server answers `watching`, `tailing` or `error` (`code`,
//! `message`), and sends the hub's `message` and `presence_diff` frames, `logs` (`items`, oldest
//! first) and `sockets` (`count`, `users`).

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::response::{IntoResponse, Response};
use cloudlet_core::access::Caller;
use cloudlet_core::apps::AppName;
use cloudlet_core::console::{AppRole, SignedIn};
use cloudlet_core::realtime::{ChannelName, Connected, ConnectionId, Outbound};
use cloudlet_store::LogQuery;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{same_origin, session_of};
use crate::error::{ApiError, Code};
use crate::extract::Path;
use crate::state::AppState;

/// The largest message the page sends.
const MAX_MESSAGE: usize = 4 * 1024;
/// Messages the page may send per second.
const MAX_MESSAGES_PER_SECOND: u32 = 20;
/// Channels one socket may watch at once.
const MAX_WATCHED: usize = 16;
/// How often the session and the role are checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// How often the socket counts are looked at (sent when they changed), and other nodes' log
/// entries read.
const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How often the server pings, under the 60 s idle timeout of common proxies.
const PING_EVERY: Duration = Duration::from_secs(25);
/// How long a page may say nothing (not even a pong) before its socket counts as gone.
const SILENT_FOR: Duration = Duration::from_secs(60);
/// How long one frame may take to go out.
const SEND_WITHIN: Duration = Duration::from_secs(10);
/// Log entries read at once; a burst of more is read page after page, up to [`LOG_PAGES`].
const LOG_PAGE: usize = 100;
const LOG_PAGES: usize = 10;
/// The role this socket needs on its app.
const NEED: AppRole = AppRole::Developer;

#[derive(Deserialize)]
pub(super) struct AppPath {
    app: String,
}

/// The handshake: the console's origin, a session, a developer's role on an existing app.
pub(super) async fn live(
    State(state): State<AppState>,
    Path(path): Path<AppPath>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // A browser always sends `Origin` on a WebSocket handshake: one without is no page's.
    if !headers.contains_key(ORIGIN) {
        return Err(ApiError::new(
            Code::CsrfFailed,
            "the console's socket is opened by its page (no Origin)",
        ));
    }
    same_origin(&headers, state.console_secure_cookie())?;
    let token = super::session_token(&headers, super::cookie_name(&state))
        .ok_or_else(super::login_required)?
        .to_owned();
    let who = session_of(&state, &token).await?;
    let app = AppName::parse(&path.app)
        .map_err(|_| ApiError::new(Code::AppNotFound, "no app of this name"))?;
    if !who.may(&app, NEED) {
        return Err(ApiError::new(
            Code::Forbidden,
            "watching an app live needs a developer's role on it",
        ));
    }
    state.apps().get(&app).await?;
    let place = state.console_live(&who.person.id).ok_or_else(|| {
        ApiError::new(
            Code::TooManyRequests,
            "too many live console pages open (4 a person, 64 a node); close another",
        )
        .retry_after(10)
    })?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::new(
            Code::UpgradeRequired,
            "this is a WebSocket: open it with an upgrade handshake",
        )
    })?;
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| {
            Live {
                _place: place,
                socket,
                state,
                app,
                who,
                token,
                hub: None,
                watched: HashMap::new(),
                next_sub: 0,
                tail: None,
                counts: None,
                noted: HashSet::new(),
                heard: Instant::now(),
            }
            .run()
        })
        .into_response())
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum PageMessage {
    Watch {
        channel: String,
    },
    Unwatch {
        channel: String,
    },
    Tail {
        function: Option<String>,
        /// The newest entry the page has; none for from now on.
        after: Option<i64>,
    },
    Untail,
}

/// The app's log, followed: which function's (all by default), after which entry.
struct Tail {
    function: Option<String>,
    after: i64,
}

/// One open console socket.
struct Live {
    /// Its place among the node's live console sockets.
    _place: crate::state::ConsolePlace,
    socket: WebSocket,
    state: AppState,
    app: AppName,
    who: SignedIn,
    token: String,
    /// Its registration in the hub, made when it first watches a channel.
    hub: Option<(ConnectionId, tokio::sync::mpsc::Receiver<Outbound>)>,
    /// The channels watched, with their subscription ids in the hub.
    watched: HashMap<ChannelName, String>,
    next_sub: u64,
    tail: Option<Tail>,
    /// The socket counts last sent.
    counts: Option<(usize, usize)>,
    /// What the audit log has from this socket already.
    noted: HashSet<String>,
    /// When the page was last heard from (a pong answers each ping).
    heard: Instant,
}

/// Why the server ends a console socket: its close code and reason.
enum End {
    /// The client left, or a send failed.
    Gone,
    Close(u16, &'static str),
}

impl Live {
    async fn run(mut self) {
        let end = match self.serve().await {
            Err(end) => end,
            Ok(never) => match never {},
        };
        if let Some((id, _)) = self.hub.take() {
            self.state.realtime().disconnect(id).await;
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ =
                tokio::time::timeout(SEND_WITHIN, self.socket.send(Message::Close(Some(frame))))
                    .await;
        }
    }

    /// Serves the socket until it ends, and says why.
    async fn serve(&mut self) -> Result<Infallible, End> {
        let mut written = self.state.functions().logs_written();
        let mut recheck = tokio::time::interval(RECHECK_EVERY);
        let mut look = tokio::time::interval(LOOK_EVERY);
        let mut ping = tokio::time::interval(PING_EVERY);
        let (mut window, mut sent) = (Instant::now(), 0u32);
        loop {
            tokio::select! {
                incoming = self.socket.recv() => {
                    self.heard = Instant::now();
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(End::Gone),
                        Some(Ok(Message::Binary(_))) => {
                            return Err(End::Close(1003, "text frames of JSON only"));
                        }
                        Some(Ok(_)) => continue,
                    };
                    if window.elapsed() >= Duration::from_secs(1) {
                        (window, sent) = (Instant::now(), 0);
                    }
                    sent += 1;
                    if sent > MAX_MESSAGES_PER_SECOND {
                        return Err(End::Close(4029, "rate_limited"));
                    }
                    self.handle(&text).await?;
                }
                out = next_out(&mut self.hub) => match out {
                    Some(Outbound::Close(_)) | None => {
                        return Err(End::Close(4008, "slow_consumer"));
                    }
                    Some(message) => {
                        if let Some(text) = crate::realtime::text_of(message) {
                            self.send(text).await?;
                        }
                    }
                },
                heard = written.recv() => match heard {
                    Ok(app) if app != self.app => {}
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.read_logs().await?,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(End::Close(1001, "going_away"));
                    }
                },
                _ = look.tick() => {
                    // Entries other nodes wrote are heard of only here.
                    self.read_logs().await?;
                    self.send_counts().await?;
                }
                _ = recheck.tick() => self.recheck().await?,
                _ = ping.tick() => {
                    // A page that answered none of the last pings is gone (half-open).
                    if self.heard.elapsed() > SILENT_FOR {
                        return Err(End::Close(1001, "no_pong"));
                    }
                    self.send(Message::Ping(Default::default())).await?;
                }
            }
        }
    }

    /// The session and the role again: a person logged out, whose session expired, or who was
    /// taken off the app stops watching.
    async fn recheck(&mut self) -> Result<(), End> {
        match session_of(&self.state, &self.token).await {
            Ok(who) if who.may(&self.app, NEED) => {
                self.who = who;
                Ok(())
            }
            Ok(_) => Err(End::Close(4003, "forbidden")),
            Err(_) => Err(End::Close(4001, "console_login_required")),
        }
    }

    async fn handle(&mut self, text: &str) -> Result<(), End> {
        let message = match serde_json::from_str::<PageMessage>(text) {
            Ok(message) => message,
            Err(e) => return self.refuse("invalid_message", e.to_string()).await,
        };
        match message {
            PageMessage::Watch { channel } => self.watch(&channel).await,
            PageMessage::Unwatch { channel } => {
                let Ok(channel) = ChannelName::parse(&channel) else {
                    return self
                        .refuse("invalid_channel", "no such channel".into())
                        .await;
                };
                if let (Some(sub), Some((id, _))) = (self.watched.remove(&channel), &self.hub) {
                    // Gone already if the hub dropped it: nothing to undo.
                    let _ = self.state.realtime().unsubscribe(*id, &sub).await;
                }
                self.send_json(json!({"type": "unwatched", "channel": channel.as_str()}))
                    .await
            }
            PageMessage::Tail { function, after } => {
                if let Some(name) = &function
                    && cloudlet_core::functions::check_name(name).is_err()
                {
                    return self
                        .refuse("invalid_message", "no function of this name".into())
                        .await;
                }
                let after = match after {
                    Some(after) if after >= 0 => after,
                    Some(_) => {
                        return self
                            .refuse("invalid_message", "after is an entry id".into())
                            .await;
                    }
                    None => match self.newest_log(function.clone()).await {
                        Some(after) => after,
                        None => {
                            return self
                                .refuse("internal_error", "the log cannot be read now".into())
                                .await;
                        }
                    },
                };
                self.note(&format!(
                    "TAIL logs of {}",
                    function.as_deref().unwrap_or("every function")
                ))
                .await;
                self.tail = Some(Tail { function, after });
                self.send_json(json!({"type": "tailing", "after": after}))
                    .await?;
                self.read_logs().await
            }
            PageMessage::Untail => {
                self.tail = None;
                self.send_json(json!({"type": "untailed"})).await
            }
        }
    }

    async fn watch(&mut self, channel: &str) -> Result<(), End> {
        let channel = match ChannelName::parse(channel) {
            Ok(channel) if !channel.is_direct() => channel,
            Ok(_) => {
                return self
                    .refuse(
                        "invalid_channel",
                        "a user's direct messages are not watched".into(),
                    )
                    .await;
            }
            Err(message) => return self.refuse("invalid_channel", message).await,
        };
        if self.watched.contains_key(&channel) {
            return self
                .refuse(
                    "subscription_exists",
                    "this channel is watched already".into(),
                )
                .await;
        }
        if self.watched.len() >= MAX_WATCHED {
            return self
                .refuse(
                    "too_many_subscriptions",
                    format!("at most {MAX_WATCHED} channels at once"),
                )
                .await;
        }
        let hub = self.state.realtime().clone();
        let id = match &self.hub {
            Some((id, _)) => *id,
            None => match hub.connect(&self.app, &Caller::Admin).await {
                Ok(Connected { id, outbound, .. }) => {
                    self.hub = Some((id, outbound));
                    id
                }
                Err(e) => return self.refuse("too_many_connections", e.to_string()).await,
            },
        };
        self.next_sub += 1;
        let sub = format!("w{}", self.next_sub);
        match hub
            .join(id, &Caller::Admin, &sub, channel.clone(), true, None)
            .await
        {
            Ok(joined) => {
                self.note(&format!("WATCH channel {}", channel.as_str()))
                    .await;
                self.watched.insert(channel.clone(), sub);
                self.send_json(json!({
                    "type": "watching", "channel": channel.as_str(), "seq": joined.seq,
                }))
                .await
            }
            Err(e) => {
                let refusal = ApiError::from(e);
                self.refuse(refusal.code.as_str(), refusal.message).await
            }
        }
    }

    /// The id of the newest entry of the log (of `function`), 0 if there is none; none if the
    /// log cannot be read (following from 0 would send all of it).
    async fn newest_log(&mut self, function: Option<String>) -> Option<i64> {
        let query = LogQuery {
            function,
            outcome: None,
            before_id: None,
            after_id: None,
            limit: 1,
        };
        match self.state.functions().logs(&self.app, query).await {
            Ok(entries) => Some(entries.first().map_or(0, |e| e.id)),
            Err(e) => {
                tracing::warn!(app = %self.app, error = %e, "a console could not read logs");
                None
            }
        }
    }

    /// Sends the log entries written after the last one sent, oldest first.
    async fn read_logs(&mut self) -> Result<(), End> {
        for _ in 0..LOG_PAGES {
            let Some(tail) = &self.tail else {
                return Ok(());
            };
            let query = LogQuery {
                function: tail.function.clone(),
                outcome: None,
                before_id: None,
                after_id: Some(tail.after),
                limit: LOG_PAGE,
            };
            let entries = match self.state.functions().logs(&self.app, query).await {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::warn!(app = %self.app, error = %e, "a console could not read logs");
                    return Ok(());
                }
            };
            let Some(last) = entries.last() else {
                return Ok(());
            };
            let (last, full) = (last.id, entries.len() == LOG_PAGE);
            if let Some(tail) = &mut self.tail {
                tail.after = last;
            }
            self.send_json(json!({"type": "logs", "items": entries}))
                .await?;
            if !full {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The app's socket counts, if they changed since last sent.
    async fn send_counts(&mut self) -> Result<(), End> {
        let counts = self.state.realtime().counts(&self.app).await;
        if self.counts == Some(counts) {
            return Ok(());
        }
        self.counts = Some(counts);
        self.send_json(json!({"type": "sockets", "count": counts.0, "users": counts.1}))
            .await
    }

    /// Notes in the audit log what the person started to watch (personal data, like reading
    /// the app's users), once a socket: watching again is no new entry.
    async fn note(&mut self, what: &str) {
        if !self.noted.insert(what.to_owned()) {
            return;
        }
        self.state
            .console()
            .audit(&self.who.person.email, Some(&self.app), what, 200)
            .await;
    }

    async fn refuse(&mut self, code: &str, message: String) -> Result<(), End> {
        self.send_json(json!({"type": "error", "code": code, "message": message}))
            .await
    }

    async fn send_json(&mut self, value: Json) -> Result<(), End> {
        self.send(Message::Text(Utf8Bytes::from(value.to_string())))
            .await
    }

    async fn send(&mut self, message: Message) -> Result<(), End> {
        match tokio::time::timeout(SEND_WITHIN, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Gone),
        }
    }
}

/// The next frame the hub has for this socket; never, while it is not in the hub.
async fn next_out(
    hub: &mut Option<(ConnectionId, tokio::sync::mpsc::Receiver<Outbound>)>,
) -> Option<Outbound> {
    match hub {
        Some((_, outbound)) => outbound.recv().await,
        None => std::future::pending().await,
    }
}
