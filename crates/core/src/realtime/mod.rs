//! The realtime hub: who is connected to which app, what each connection watches, the one
//! task that hands every committed change to the subscribers allowed to see it, and the app's
//! channels: messages published to a channel's subscribers (numbered, some kept for clients
//! that come back, see [`channels`]), presence, and direct messages to a user (a stream of its
//! own per user). Who may do what on a channel is the app's [`settings`].
//!
//! A connection is registered with its caller and gets a bounded queue of what to send
//! ([`Outbound`]); the transport (the server's WebSocket) drains it. Subscriptions are indexed
//! by app, so a change costs only the connections of its app, and each subscription is judged
//! in memory against the collection's list rule and its filter ([`Data::judge`]): no database
//! read per subscriber. Each subscription numbers what it delivers (`seq`, from 1) within an
//! `epoch` drawn when it starts, so a client can tell a gap from nothing. Record changes are
//! read from the app's event log in commit order ([`records`]), so each carries its place in
//! the log, and a client that comes back resumes from it.
//!
//! Nothing is lost silently: a connection whose queue is full (it stopped reading) is closed
//! with [`Close::SlowConsumer`], and what a resuming client can no longer get is a `reset`
//! (refetch, then carry on). Revoked sessions (logout, revocation, a deleted user) have their
//! connections closed at once.

pub mod channels;
mod records;
mod relay;
pub mod settings;
mod streams;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::Bytes;
use cloudlet_store::{
    AppName, LogPosition, REALTIME_CONNECTED, REALTIME_DISCONNECTED, StoreError, TenantStore,
};
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::{Mutex, Notify, broadcast, mpsc};

use self::channels::{Channel, Member};
pub use self::settings::{Act, ChannelName, InvalidSettings, Settings, SettingsBody};

use crate::access::Caller;
use crate::auth::{Auth, Revocation};
use crate::clock::Clock;
use crate::data::{ChangeEvent, Data, DataError, Seen, Watch};
use crate::random::Random;

/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// The largest presence state, as JSON.
pub const MAX_STATE: usize = 1024;
/// The most bytes of messages one app's channels keep, all told.
pub const APP_HISTORY_BYTES: usize = 16 << 20;
/// The longest page of a channel's presence.
pub const MAX_PRESENCE_PAGE: usize = 1000;
/// The longest page of an app's open sockets, or of its channels.
pub const MAX_SOCKETS_PAGE: usize = 1000;
/// The most channels (direct message streams included) one app holds in memory at once.
pub const MAX_CHANNELS_PER_APP: usize = 50_000;
/// The most bytes of presence (states and members) one app holds at once.
pub const APP_PRESENCE_BYTES: usize = 16 << 20;
/// How often kept messages past their age are dropped (publishing drops them too).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The settings' key in the app's database.
const SETTINGS_KEY: &str = "realtime";

/// How many connections may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Of one app at once, whoever opened them: one app's clients cannot take every socket.
    pub per_app: usize,
    /// Of one user to one app (WeChat allows five sockets per mini program).
    pub per_user: usize,
    /// Bytes of missed record changes held at once for subscriptions catching up, all
    /// together (each holds its catch-up until it is sent): past it, a resume gets a `reset`.
    pub catch_up_bytes: usize,
}
/// Messages waiting to be sent to one connection before it counts as not reading.
pub const QUEUE: usize = 256;

/// Why the server closes a connection: a WebSocket close code and its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The session was revoked (logout, revocation, its user deleted).
    SessionRevoked,
    /// The access token expired and no fresh one came.
    TokenExpired,
    /// The client stopped reading: its queue filled up.
    SlowConsumer,
    /// The client sent too many messages too fast.
    RateLimited,
    /// The server is shutting down.
    GoingAway,
    /// The app no longer lets sockets in without a token.
    AuthRequired,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::GoingAway => 1001,
            Close::AuthRequired => 4000,
            Close::TokenExpired => 4001,
            Close::SessionRevoked => 4003,
            Close::SlowConsumer => 4008,
            Close::RateLimited => 4029,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Close::SessionRevoked => "session_revoked",
            Close::TokenExpired => "token_expired",
            Close::SlowConsumer => "slow_consumer",
            Close::RateLimited => "rate_limited",
            Close::GoingAway => "going_away",
            Close::AuthRequired => "auth_required",
        }
    }
}

/// What the hub asks a connection's transport to send. Each variant is at most a pointer or two
/// wide, so that the 256 slots of every connection's queue stay small.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outbound {
    /// A change a subscription sees.
    Change(Box<Change>),
    /// The subscription may have missed changes: refetch, then carry on from `epoch`.
    Reset(Box<Reset>),
    /// The subscription ended on the server's side (its collection was deleted).
    Ended(Box<Ended>),
    /// A frame serialized once for every connection it goes to (a channel's message, a
    /// presence change).
    #[serde(skip)]
    Frame(Bytes),
    /// Close the connection.
    #[serde(skip)]
    Close(Close),
    /// Check that the app's key the connection was opened with is still the app's (it may
    /// have been rotated on another node).
    #[serde(skip)]
    CheckKey,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub sub: String,
    pub seq: u64,
    pub event: Seen,
    pub collection: String,
    pub id: String,
    /// The record after the change (none for `delete` and `leave`), shared by every
    /// subscriber it goes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Arc<Json>>,
    /// The change's place in the app's event log: where to resume after it.
    pub pos: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reset {
    pub sub: String,
    pub epoch: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ended {
    pub sub: String,
    pub code: &'static str,
    pub message: String,
}

/// Which of an app's sockets to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppSockets {
    /// Every one (the app is deleted).
    All,
    /// Those opened with the app's secret key (it was rotated).
    OfKey,
}

/// Why a request on a connection is refused.
#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("at most {MAX_SUBSCRIPTIONS} subscriptions on one connection")]
    TooManySubscriptions,
    #[error("a subscription with this id exists already on this connection")]
    SubscriptionExists,
    #[error("no subscription with this id on this connection")]
    NoSubscription,
    #[error("at most {0} connections per user")]
    TooManyConnections(usize),
    #[error("the app has {0} connections open already")]
    AppFull(usize),
    #[error(
        "sockets without a login hold {0} of the app's connections already, as many as they may"
    )]
    AnonymousFull(usize),
    #[error("the connection is closed")]
    Closed,
    #[error("the app declares no channel of kind {0}")]
    ChannelNotFound(String),
    #[error("the app's realtime rules do not let this caller {0}")]
    Forbidden(&'static str),
    #[error(
        "a collection's subscription resumes `after` its last change's `pos`; a channel's has none"
    )]
    InvalidResume,
    #[error("this connection has joined the channel already")]
    JoinedAlready,
    #[error("subscription {0} is not a channel's")]
    NotAChannel(String),
    #[error("a presence state is a JSON object of at most {MAX_STATE} bytes")]
    InvalidState,
    #[error("a recipient is a user id: 1 to 64 letters, digits, _ and -")]
    InvalidRecipient,
    #[error("the app holds {MAX_CHANNELS_PER_APP} channels already")]
    TooManyChannels,
    #[error("the app's presence holds {APP_PRESENCE_BYTES} bytes already")]
    PresenceFull,
    #[error(transparent)]
    InvalidSettings(#[from] InvalidSettings),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A connection's handle in the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

/// A registered connection, for its transport: its id, what to send, and a signal that the
/// server cut it (its queue filled, or its session was revoked) for a transport blocked on a
/// client that stopped reading, which would otherwise hear of it only after its blocked send.
pub struct Connected {
    pub id: ConnectionId,
    pub outbound: mpsc::Receiver<Outbound>,
    pub cut: Arc<Notify>,
}

/// What a subscription follows.
enum Subscription {
    /// Changes to a collection's records, those after `from` in the app's event log.
    Records {
        watch: Box<Watch>,
        seq: u64,
        from: LogPosition,
    },
    /// A channel's messages (a user's direct messages included); its sequence is the channel's.
    Channel(ChannelName),
}

impl Subscription {
    fn watches(&self, collection: &str) -> bool {
        matches!(self, Subscription::Records { watch, .. } if watch.collection() == collection)
    }
}

/// Where a client that comes back left a subscription: the epoch and the last message it has,
/// and for a collection's, that change's place in the event log (`pos`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub epoch: String,
    pub seq: u64,
    #[serde(default)]
    pub pos: Option<String>,
}

/// A channel subscription's start: where the channel is, what the client missed (frames to
/// send, in order, before anything else), or why it must start over.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    pub seq: u64,
    pub missed: Vec<Bytes>,
    /// Set when what the client missed is no longer kept (`history`), or the channel is not
    /// the one it left (`epoch`: the server restarted, or the channel was forgotten).
    pub reset: Option<&'static str>,
    /// A collection's subscription: its place in the event log once `missed` is sent.
    pub pos: Option<String>,
    /// What `missed` holds of the node's budget for catch-ups, given back when it is dropped
    /// (once sent).
    pub held: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One page of a channel's presence.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresencePage {
    pub count: usize,
    pub members: Vec<PresenceEntry>,
    /// The member to list after for the next page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PresenceEntry {
    pub member: String,
    pub user: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub state: Box<serde_json::value::RawValue>,
}

/// One page of an app's channels held in memory on this node (subscribed to, or keeping
/// messages), users' direct message streams aside.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelsPage {
    /// How many there are.
    pub count: usize,
    pub channels: Vec<ChannelEntry>,
    /// The channel to list after for the next page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelEntry {
    pub name: String,
    /// Sockets subscribed to it.
    pub subscribers: usize,
    /// Members present in it.
    pub present: usize,
    /// The number of its latest message.
    pub seq: u64,
}

/// One page of an app's open sockets (on this node).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SocketsPage {
    /// How many sockets are open.
    pub count: usize,
    /// How many distinct users hold them.
    pub users: usize,
    pub sockets: Vec<SocketEntry>,
    /// The socket to list after for the next page.
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SocketEntry {
    /// The socket's id: its member id in channels' presence.
    pub id: String,
    pub user: Option<String>,
    /// `user`, `anonymous`, or `server` (the admin token or an app key).
    pub caller: &'static str,
    pub opened_at: crate::clock::Timestamp,
    /// Its subscriptions: collections and channels.
    pub subscriptions: usize,
}

struct Connection {
    app: AppName,
    /// When it opened, in Unix milliseconds.
    opened_ms: i64,
    /// Who opened it, as of its latest token.
    caller: Caller,
    /// The session and user of its token (none for the admin token or an app key).
    session: Option<String>,
    user: Option<String>,
    /// Opened with the app's secret key.
    key: bool,
    /// Its id in channels' presence.
    member: String,
    out: mpsc::Sender<Outbound>,
    /// Told when the server closes it.
    cut: Arc<Notify>,
    subscriptions: HashMap<String, Subscription>,
}

struct Registry {
    /// Channels are stamped with it when left.
    clock: Arc<dyn Clock>,
    /// How many sockets each user holds to each app: the per-user limit in one look.
    per_user: HashMap<(AppName, String), usize>,
    /// How many distinct users hold sockets to each app (those of `per_user`, counted).
    users: HashMap<AppName, usize>,
    /// How many sockets without a login each app has: at most half of its limit, so that a
    /// flood of them never locks its users out.
    anonymous: HashMap<AppName, usize>,
    /// Where sockets opening and closing are told, for the app's triggers.
    events: mpsc::Sender<SocketEvent>,
    connections: HashMap<ConnectionId, Connection>,
    by_app: HashMap<AppName, HashSet<ConnectionId>>,
    channels: HashMap<(AppName, ChannelName), Channel>,
    /// What each app holds: channels, bytes kept, bytes of presence.
    held: HashMap<AppName, Held>,
    /// Where this node's presence changes go to be told to the other nodes (when it shares
    /// its database: [`relay`]).
    presence_out: Option<mpsc::Sender<relay::PresenceOut>>,
}

/// What one app's channels hold, against its limits.
#[derive(Debug, Default)]
struct Held {
    channels: usize,
    kept: usize,
    presence: usize,
}

/// Socket events waiting to be recorded; beyond, they are dropped with a warning.
const SOCKET_EVENTS: usize = 10_000;
/// Socket events recorded at once.
const RECORDING: usize = 8;

/// A user's (or an anonymous) socket opened or closed, for the app's triggers.
struct SocketEvent {
    app: AppName,
    kind: &'static str,
    user: Option<String>,
    member: String,
    at_ms: i64,
}

impl SocketEvent {
    /// The event of `connection`, unless it is the server's own (the admin token, an app key).
    fn of(connection: &Connection, kind: &'static str, at_ms: i64) -> Option<SocketEvent> {
        matches!(connection.caller, Caller::User(_) | Caller::Anonymous).then(|| SocketEvent {
            app: connection.app.clone(),
            kind,
            user: connection.user.clone(),
            member: connection.member.clone(),
            at_ms,
        })
    }
}

trait Tell {
    fn tell(self, events: &mpsc::Sender<SocketEvent>);
}

impl Tell for Option<SocketEvent> {
    fn tell(self, events: &mpsc::Sender<SocketEvent>) {
        if let Some(event) = self
            && events.try_send(event).is_err()
        {
            tracing::warn!("realtime socket events are dropped: their recording fell behind");
        }
    }
}

/// A presence change, as sent to the channel's presence watchers.
fn presence_frame(channel: &ChannelName, member: &str, present: Option<&Member>) -> Bytes {
    let value = match present {
        Some(m) => serde_json::json!({
            "type": "presence_diff", "channel": channel.as_str(),
            "join": {"member": member, "user": m.user, "state": m.state},
        }),
        None => serde_json::json!({
            "type": "presence_diff", "channel": channel.as_str(), "leave": {"member": member},
        }),
    };
    Bytes::from(value.to_string())
}

impl Registry {
    /// Forgets connections and what they held, telling each why if the server closes it
    /// (`None`: its socket closed). A presence change this makes may find other connections
    /// not reading: they go too.
    fn drop_connections(&mut self, mut gone: Vec<(ConnectionId, Option<Close>)>) {
        while let Some((id, why)) = gone.pop() {
            let Some(connection) = self.connections.remove(&id) else {
                continue;
            };
            if let Some(ids) = self.by_app.get_mut(&connection.app) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_app.remove(&connection.app);
                }
            }
            if let Some(user) = &connection.user {
                self.uncount(&connection.app, user);
            }
            if matches!(connection.caller, Caller::Anonymous) {
                self.unanonymous(&connection.app);
            }
            if let Some(why) = why {
                // A full queue is the reason itself; the transport ends when the queue closes.
                // A full queue is the reason itself: a transport blocked on a client that
                // stopped reading is cut now rather than after its blocked send.
                if connection.out.try_send(Outbound::Close(why)).is_err() {
                    connection.cut.notify_one();
                }
            }
            let at_ms = self.clock.now().unix_ms();
            SocketEvent::of(&connection, REALTIME_DISCONNECTED, at_ms).tell(&self.events);
            for subscription in connection.subscriptions.values() {
                if let Subscription::Channel(channel) = subscription {
                    let slow = self.leave(&connection.app, channel, id, &connection.member);
                    gone.extend(slow.into_iter().map(|id| (id, Some(Close::SlowConsumer))));
                }
            }
        }
    }

    fn count(&mut self, app: &AppName, user: &str) -> usize {
        let open = self
            .per_user
            .entry((app.clone(), user.to_owned()))
            .or_default();
        *open += 1;
        let open = *open;
        if open == 1 {
            *self.users.entry(app.clone()).or_default() += 1;
        }
        open
    }

    /// One socket without a login fewer: closed, or logged in.
    fn unanonymous(&mut self, app: &AppName) {
        if let Some(open) = self.anonymous.get_mut(app) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.anonymous.remove(app);
            }
        }
    }

    fn uncount(&mut self, app: &AppName, user: &str) {
        let key = (app.clone(), user.to_owned());
        if let Some(open) = self.per_user.get_mut(&key) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                self.per_user.remove(&key);
                if let Some(users) = self.users.get_mut(app) {
                    *users = users.saturating_sub(1);
                    if *users == 0 {
                        self.users.remove(app);
                    }
                }
            }
        }
    }

    fn open_of(&self, app: &AppName, user: &str) -> usize {
        self.per_user
            .get(&(app.clone(), user.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Closes connections from the server's side.
    fn close(&mut self, ids: impl IntoIterator<Item = ConnectionId>, why: Close) {
        self.drop_connections(ids.into_iter().map(|id| (id, Some(why))).collect());
    }

    /// Takes connection `id` out of a channel; those its presence change did not fit.
    fn leave(
        &mut self,
        app: &AppName,
        channel: &ChannelName,
        id: ConnectionId,
        member: &str,
    ) -> Vec<ConnectionId> {
        let key = (app.clone(), channel.clone());
        let Some(state) = self.channels.get_mut(&key) else {
            return Vec::new();
        };
        state.subscribers.remove(&id);
        let now = self.clock.now().unix_ms();
        state.touched_ms = now;
        let slow = if let Some(gone) = state.members.remove(member) {
            let held = self.held.entry(app.clone()).or_default();
            held.presence = held.presence.saturating_sub(gone.size());
            if let Some(out) = &self.presence_out {
                let _ = out.try_send(relay::PresenceOut::Leave {
                    app: app.clone(),
                    channel: channel.clone(),
                    member: member.to_owned(),
                    user: gone.user.clone(),
                });
            }
            let frame = presence_frame(channel, member, None);
            send_to(&self.connections, state.subscribers.iter(), true, &frame)
        } else {
            Vec::new()
        };
        self.forget_if_idle(&key, now);
        slow
    }

    /// The channel, made if it is new and the app may hold one more.
    fn channel(
        &mut self,
        app: &AppName,
        channel: &ChannelName,
        make: impl FnOnce() -> Channel,
    ) -> Result<&mut Channel, RealtimeError> {
        let key = (app.clone(), channel.clone());
        if !self.channels.contains_key(&key) {
            let held = self.held.entry(app.clone()).or_default();
            if held.channels >= MAX_CHANNELS_PER_APP {
                return Err(RealtimeError::TooManyChannels);
            }
            held.channels += 1;
        }
        Ok(self.channels.entry(key).or_insert_with(make))
    }

    /// Forgets the channel if nobody holds it and it keeps nothing (see [`Channel::is_idle`]).
    fn forget_if_idle(&mut self, key: &(AppName, ChannelName), now_ms: i64) {
        if self.channels.get(key).is_some_and(|c| c.is_idle(now_ms)) {
            self.channels.remove(key);
            if let Some(held) = self.held.get_mut(&key.0) {
                held.channels = held.channels.saturating_sub(1);
            }
        }
    }
}

/// Sends `frame` to `subscribers` (those watching presence only, if `presence`); the
/// connections it did not fit.
fn send_to<'a>(
    connections: &HashMap<ConnectionId, Connection>,
    subscribers: impl Iterator<Item = (&'a ConnectionId, &'a bool)>,
    presence: bool,
    frame: &Bytes,
) -> Vec<ConnectionId> {
    let mut slow = Vec::new();
    for (id, watches) in subscribers {
        if presence && !watches {
            continue;
        }
        if let Some(connection) = connections.get(id)
            && connection
                .out
                .try_send(Outbound::Frame(frame.clone()))
                .is_err()
        {
            slow.push(*id);
        }
    }
    slow
}

/// Why a subscription ends: its code and the message its subscriber reads.
fn ending(app: &AppName, error: &DataError) -> (&'static str, String) {
    match error {
        DataError::CollectionNotFound(_) => ("collection_not_found", error.to_string()),
        DataError::InvalidFilter(_) => ("invalid_filter", error.to_string()),
        other => {
            // A store's error says nothing the subscriber should read.
            tracing::warn!(app = %app, error = %other, "a subscription failed");
            (
                "internal_error",
                "the subscription failed; subscribe again".to_owned(),
            )
        }
    }
}

/// The hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<Inner>);

struct Inner {
    data: Data,
    tenants: Arc<dyn TenantStore>,
    random: Arc<dyn Random>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    registry: Mutex<Registry>,
    /// Each app's settings, compiled, as last read or written.
    settings: StdMutex<HashMap<AppName, Arc<Settings>>>,
    /// Each app's lock, held while its settings are read from or written to the store, so that
    /// a read cannot put back what a write replaced. One per app: one app's slow database must
    /// not hold up every other app's reads.
    settings_io: StdMutex<HashMap<AppName, Arc<Mutex<()>>>>,
    /// What catch-ups hold now, in KiB ([`Limits::catch_up_bytes`]).
    catch_ups: Arc<tokio::sync::Semaphore>,
    /// How far each app's event log has been delivered, for the apps whose records some
    /// subscription watches; held while the log is read and delivered ([`records`]).
    tails: Mutex<HashMap<AppName, LogPosition>>,
    /// The other nodes' doorbell, set by the composition root.
    bell: std::sync::OnceLock<Arc<dyn cloudlet_store::Bell>>,
    /// Signs the places in the log given to clients ([`records`]): drawn at start, or derived
    /// from the master key ([`Hub::set_resume_key`]) so that they hold across restarts and
    /// nodes.
    resume_key: StdMutex<[u8; 32]>,
    /// Whether other nodes write to the same database: then the watched apps' logs are also
    /// read every [`records::POLL_EVERY`], whatever the rings.
    shared: std::sync::atomic::AtomicBool,
    /// Passes channel and direct messages between nodes ([`relay`]), when they share a
    /// database; this node's place in it, and its rings.
    relay: std::sync::OnceLock<Arc<dyn cloudlet_store::Relay>>,
    relay_tail: Mutex<relay::RelayTail>,
    relay_rung: Notify,
    /// This node's name among those sharing the database (drawn at start), and how long its
    /// lease on its members' presence lasts.
    relay_node: String,
    relay_lease_ms: std::sync::atomic::AtomicI64,
    /// Socket events to record, taken by [`Hub::run`].
    events: StdMutex<Option<mpsc::Receiver<SocketEvent>>>,
    next: AtomicU64,
}

impl Hub {
    pub fn new(
        data: Data,
        tenants: Arc<dyn TenantStore>,
        random: Arc<dyn Random>,
        clock: Arc<dyn Clock>,
        limits: Limits,
    ) -> Self {
        let (events, recorded) = mpsc::channel(SOCKET_EVENTS);
        let mut drawn = [0u8; 32];
        random.fill(&mut drawn);
        let mut node = [0u8; 8];
        random.fill(&mut node);
        let catch_up_kib =
            (limits.catch_up_bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Hub(Arc::new(Inner {
            data,
            tenants,
            random,
            clock: Arc::clone(&clock),
            limits,
            registry: Mutex::new(Registry {
                clock,
                per_user: HashMap::new(),
                users: HashMap::new(),
                anonymous: HashMap::new(),
                events,
                connections: HashMap::new(),
                by_app: HashMap::new(),
                channels: HashMap::new(),
                held: HashMap::new(),
                presence_out: None,
            }),
            settings: StdMutex::new(HashMap::new()),
            settings_io: StdMutex::new(HashMap::new()),
            catch_ups: Arc::new(tokio::sync::Semaphore::new(catch_up_kib)),
            tails: Mutex::new(HashMap::new()),
            bell: std::sync::OnceLock::new(),
            resume_key: StdMutex::new(drawn),
            shared: std::sync::atomic::AtomicBool::new(false),
            relay: std::sync::OnceLock::new(),
            relay_tail: Mutex::new(relay::RelayTail::default()),
            relay_rung: Notify::new(),
            relay_node: hex::encode(node),
            relay_lease_ms: std::sync::atomic::AtomicI64::new(30_000),
            events: StdMutex::new(Some(recorded)),
            next: AtomicU64::new(1),
        }))
    }

    /// Runs the hub until the change stream ends: every committed change to its subscribers,
    /// every revoked session's connections closed. Spawn it once.
    ///
    /// A committed write on this node rings for its app's log to be read (and, through the
    /// doorbell, a write on another node); with other nodes, the logs of watched apps are also
    /// read every [`records::POLL_EVERY`] whatever the rings, and again shortly while events
    /// wait for an older transaction.
    pub async fn run(self, auth: Auth) {
        if let Some(events) = lock(&self.0.events).take() {
            tokio::spawn(record(self.0.data.clone(), events));
        }
        let mut changes = self.0.data.rings();
        let mut revocations = auth.revocations();
        let mut sweeps = tokio::time::interval(SWEEP_EVERY);
        let mut polls = tokio::time::interval(records::POLL_EVERY);
        polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Apps with events waiting for an older transaction, read again at `retry`; and
        // whether the relay has such a message. While they keep waiting (a long transaction
        // on the database), the reads back off from 2 ms to 100 ms.
        let mut pending: HashSet<AppName> = HashSet::new();
        let mut relay_pending = self.pull_relay_now().await;
        let mut retry_every = records::PENDING_RETRY;
        // This node's lease on its members' presence (with other nodes), renewed a few times
        // a lease.
        let mut leases = tokio::time::interval(self.lease_every());
        leases.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let retry = tokio::time::sleep(retry_every);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                // Revocations first: a revoked session must hear nothing more.
                biased;
                revoked = revocations.recv() => match revoked {
                    Ok(revocation) => self.revoke(&revocation).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Some were missed: every user's session is checked again.
                        tracing::warn!("the realtime hub missed session revocations");
                        self.recheck(&auth).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                change = changes.recv() => {
                    let mut rung = HashSet::new();
                    let mut next = Some(change);
                    // Every ring waiting is taken: one read of each app's log for all of them.
                    while let Some(change) = next.take() {
                        match change {
                            Ok(app) => {
                                rung.insert(app);
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                // Some rings were missed, never the changes: they are in the
                                // log, and every watched app's is read.
                                rung.extend(self.tailed().await);
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                        next = match changes.try_recv() {
                            Ok(app) => Some(Ok(app)),
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                Some(Err(broadcast::error::RecvError::Lagged(n)))
                            }
                            Err(_) => None,
                        };
                    }
                    let waiting = !pending.is_empty() || relay_pending;
                    pending.extend(self.pull(rung).await);
                    if !waiting && !pending.is_empty() {
                        retry_every = records::PENDING_RETRY;
                        retry.as_mut().reset(tokio::time::Instant::now() + retry_every);
                    }
                },
                () = self.0.relay_rung.notified(), if self.relayed() => {
                    let waiting = !pending.is_empty() || relay_pending;
                    relay_pending = self.pull_relay_now().await;
                    if !waiting && relay_pending {
                        retry_every = records::PENDING_RETRY;
                        retry.as_mut().reset(tokio::time::Instant::now() + retry_every);
                    }
                },
                () = &mut retry, if !pending.is_empty() || relay_pending => {
                    pending = self.pull(std::mem::take(&mut pending)).await;
                    relay_pending = relay_pending && self.pull_relay_now().await;
                    retry_every = (retry_every * 2).min(records::PENDING_RETRY_MOST);
                    retry.as_mut().reset(tokio::time::Instant::now() + retry_every);
                },
                _ = polls.tick(), if self.0.shared.load(Ordering::Relaxed) => {
                    let waiting = !pending.is_empty() || relay_pending;
                    let tailed = self.tailed().await.into_iter().collect();
                    pending.extend(self.pull(tailed).await);
                    relay_pending |= self.pull_relay_now().await;
                    if !waiting && (!pending.is_empty() || relay_pending) {
                        retry_every = records::PENDING_RETRY;
                        retry.as_mut().reset(tokio::time::Instant::now() + retry_every);
                    }
                },
                _ = sweeps.tick() => {
                    self.sweep().await;
                    self.untail().await;
                    self.sweep_relay().await;
                },
                _ = leases.tick(), if self.relayed() => self.keep_lease().await,
            }
        }
    }

    /// Registers a connection of `caller` to `app`; what to send comes out of the receiver.
    pub async fn connect(
        &self,
        app: &AppName,
        caller: &Caller,
    ) -> Result<Connected, RealtimeError> {
        let key = matches!(caller, Caller::AppKey(_));
        let (session, user) = match caller {
            Caller::User(principal) => (
                Some(principal.session_id.clone()),
                Some(principal.user_id.clone()),
            ),
            _ => (None, None),
        };
        let mut registry = self.0.registry.lock().await;
        let limits = self.0.limits;
        if registry.by_app.get(app).map_or(0, HashSet::len) >= limits.per_app {
            return Err(RealtimeError::AppFull(limits.per_app));
        }
        if matches!(caller, Caller::Anonymous) {
            let most = (limits.per_app / 2).max(1);
            let open = registry.anonymous.entry(app.clone()).or_default();
            if *open >= most {
                return Err(RealtimeError::AnonymousFull(most));
            }
            *open += 1;
        }
        if let Some(user) = &user {
            if registry.open_of(app, user) >= limits.per_user {
                return Err(RealtimeError::TooManyConnections(limits.per_user));
            }
            registry.count(app, user);
        }
        let id = ConnectionId(self.0.next.fetch_add(1, Ordering::Relaxed));
        let member = self.epoch();
        let (out, receiver) = mpsc::channel(QUEUE);
        let cut = Arc::new(Notify::new());
        let opened_ms = self.now_ms();
        registry.connections.insert(
            id,
            Connection {
                app: app.clone(),
                opened_ms,
                caller: caller.clone(),
                session,
                user,
                key,
                member,
                out,
                cut: Arc::clone(&cut),
                subscriptions: HashMap::new(),
            },
        );
        registry.by_app.entry(app.clone()).or_default().insert(id);
        if let Some(connection) = registry.connections.get(&id) {
            let at_ms = self.now_ms();
            SocketEvent::of(connection, REALTIME_CONNECTED, at_ms).tell(&registry.events);
        }
        Ok(Connected {
            id,
            outbound: receiver,
            cut,
        })
    }

    /// Forgets a connection (its socket closed).
    pub async fn disconnect(&self, id: ConnectionId) {
        self.0
            .registry
            .lock()
            .await
            .drop_connections(vec![(id, None)]);
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, id: ConnectionId, sub: &str) -> Result<(), RealtimeError> {
        let mut registry = self.0.registry.lock().await;
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        let subscription = connection
            .subscriptions
            .remove(sub)
            .ok_or(RealtimeError::NoSubscription)?;
        if let Subscription::Channel(channel) = subscription {
            let (app, member) = (connection.app.clone(), connection.member.clone());
            let slow = registry.leave(&app, &channel, id, &member);
            registry.close(slow, Close::SlowConsumer);
        }
        Ok(())
    }

    /// The connection's user, authenticated again with a fresh token: its subscriptions go on
    /// with it, but for the channels the app's rules refuse it now (a rule on its provider, on
    /// the time, or a socket let in without a token). A token of another user is refused by the
    /// caller of this.
    pub async fn reauthorize(
        &self,
        id: ConnectionId,
        caller: &Caller,
    ) -> Result<(), RealtimeError> {
        let app = {
            let registry = self.0.registry.lock().await;
            let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
            connection.app.clone()
        };
        let settings = self.settings(&app).await?;
        let mut registry = self.0.registry.lock().await;
        let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
        // A socket let in without a token that logs in counts as its user's from now on.
        if let (None, Caller::User(principal)) = (&connection.user, caller) {
            let app = connection.app.clone();
            if registry.open_of(&app, &principal.user_id) >= self.0.limits.per_user {
                return Err(RealtimeError::TooManyConnections(self.0.limits.per_user));
            }
            registry.count(&app, &principal.user_id);
        }
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        if let Caller::User(principal) = caller {
            // The same user, or (on a socket let in without a token) its first.
            connection.session = Some(principal.session_id.clone());
            connection.user = Some(principal.user_id.clone());
        }
        let logged_in =
            matches!(connection.caller, Caller::Anonymous) && !matches!(caller, Caller::Anonymous);
        connection.caller = caller.clone();
        for subscription in connection.subscriptions.values_mut() {
            if let Subscription::Records { watch, .. } = subscription {
                watch.reauthorize(caller.clone());
            }
        }
        if logged_in {
            registry.unanonymous(&app);
        }
        let slow = registry.end_refused_channels(&app, id, &settings, self.now_ms());
        registry.close(slow, Close::SlowConsumer);
        Ok(())
    }

    /// The time now, in Unix milliseconds (by the clock tokens are checked with).
    pub fn now_ms(&self) -> i64 {
        self.0.clock.now().unix_ms()
    }

    fn epoch(&self) -> String {
        let mut bytes = [0u8; 8];
        self.0.random.fill(&mut bytes);
        hex::encode(bytes)
    }

    /// Hands a change read from the log at `position` to every subscription that sees it and
    /// started before it.
    async fn deliver(&self, event: &ChangeEvent, position: LogPosition) {
        if !self.watched(event).await {
            return;
        }
        // The collection and the record's columns once for every watcher, before the registry
        // is held: judging then awaits nothing.
        let change = self
            .0
            .data
            .prepare(event)
            .await
            .map_err(|e| ending(&event.app, &e));
        let mut registry = self.0.registry.lock().await;
        let Some(ids) = registry.by_app.get(&event.app).cloned() else {
            return;
        };
        let mut slow = Vec::new();
        // One copy of the record for every subscriber it goes to.
        let shared = event.new.clone().map(Arc::new);
        for id in ids {
            let Some(connection) = registry.connections.get_mut(&id) else {
                continue;
            };
            let mut ended = Vec::new();
            for (name, subscription) in &mut connection.subscriptions {
                let Subscription::Records {
                    watch, seq, from, ..
                } = subscription
                else {
                    continue;
                };
                if watch.collection() != event.collection || position <= *from {
                    continue;
                }
                let judged = match &change {
                    Ok(change) => self
                        .0
                        .data
                        .judge(change, watch)
                        .map_err(|e| ending(&event.app, &e)),
                    Err(end) => Err(end.clone()),
                };
                let seen = match judged {
                    Ok(Some(seen)) => seen,
                    Ok(None) => continue,
                    Err(e) => {
                        ended.push((name.clone(), e));
                        continue;
                    }
                };
                // Resumed from the number a client says it had: a huge one must not overflow.
                *seq = seq.saturating_add(1);
                let record = matches!(seen, Seen::Create | Seen::Update)
                    .then(|| shared.clone())
                    .flatten();
                let message = Outbound::Change(Box::new(Change {
                    sub: name.clone(),
                    seq: *seq,
                    event: seen,
                    collection: event.collection.clone(),
                    id: event.id.clone(),
                    record,
                    pos: self.seal(&event.app, &event.collection, &connection.caller, position),
                }));
                if connection.out.try_send(message).is_err() {
                    slow.push(id);
                    break;
                }
            }
            for (name, (code, message)) in ended {
                connection.subscriptions.remove(&name);
                let message = Outbound::Ended(Box::new(Ended {
                    sub: name,
                    code,
                    message,
                }));
                if connection.out.try_send(message).is_err() {
                    slow.push(id);
                }
            }
        }
        registry.close(slow, Close::SlowConsumer);
    }

    /// Whether any subscription of the event's app watches its collection (most changes of
    /// most apps have no watcher: they cost one look).
    async fn watched(&self, event: &ChangeEvent) -> bool {
        let registry = self.0.registry.lock().await;
        registry.by_app.get(&event.app).is_some_and(|ids| {
            ids.iter().any(|id| {
                registry.connections.get(id).is_some_and(|c| {
                    c.subscriptions
                        .values()
                        .any(|s| s.watches(&event.collection))
                })
            })
        })
    }

    async fn revoke(&self, revocation: &Revocation) {
        let mut registry = self.0.registry.lock().await;
        let Some(ids) = registry.by_app.get(&revocation.app).cloned() else {
            return;
        };
        let revoked: Vec<ConnectionId> = ids
            .into_iter()
            .filter(|id| {
                registry.connections.get(id).is_some_and(|c| {
                    c.session
                        .as_ref()
                        .is_some_and(|s| revocation.sessions.contains(s))
                })
            })
            .collect();
        registry.close(revoked, Close::SessionRevoked);
    }

    /// Checks every user connection's session against the revoked ones (some revocations were
    /// missed).
    /// Closes the sockets whose sessions were revoked (checked again, one by one: some may
    /// have been revoked unheard).
    pub async fn recheck(&self, auth: &Auth) {
        let sessions: Vec<(ConnectionId, AppName, String)> = {
            let registry = self.0.registry.lock().await;
            registry
                .connections
                .iter()
                .filter_map(|(id, c)| Some((*id, c.app.clone(), c.session.clone()?)))
                .collect()
        };
        let mut revoked = Vec::new();
        for (id, app, session) in sessions {
            if auth.is_revoked(&app, &session).await {
                revoked.push(id);
            }
        }
        self.0
            .registry
            .lock()
            .await
            .close(revoked, Close::SessionRevoked);
    }

    /// Closes an app's sockets: all of them (the app is deleted), or those of its secret key
    /// (it was rotated).
    pub async fn close_app(&self, app: &AppName, which: AppSockets) {
        if which == AppSockets::All {
            // Deleted: a new app of the name starts a new log, which this tail is not a place
            // of.
            self.0.tails.lock().await.remove(app);
        }
        let mut registry = self.0.registry.lock().await;
        if which == AppSockets::All {
            // Its channels and settings go with it: an app made again under its name starts
            // afresh.
            registry.channels.retain(|(of, _), _| of != app);
            registry.held.remove(app);
            lock(&self.0.settings).remove(app);
            // Its presence on every node goes too (this node's members leave no diff).
            if let Some(out) = &registry.presence_out {
                let _ = out.try_send(relay::PresenceOut::ForgetApp(app.clone()));
            }
        }
        let Some(ids) = registry.by_app.get(app).cloned() else {
            return;
        };
        let closed: Vec<ConnectionId> = ids
            .into_iter()
            .filter(|id| match which {
                AppSockets::All => true,
                AppSockets::OfKey => registry.connections.get(id).is_some_and(|c| c.key),
            })
            .collect();
        registry.close(closed, Close::SessionRevoked);
    }

    /// Asks every socket of `app` opened with the app's key to check that it still is (the
    /// app's key may have been rotated on another node); a socket whose queue is full goes.
    pub async fn check_keys(&self, app: &AppName) {
        let mut registry = self.0.registry.lock().await;
        let Some(ids) = registry.by_app.get(app) else {
            return;
        };
        let slow: Vec<ConnectionId> = ids
            .iter()
            .filter(|id| {
                registry
                    .connections
                    .get(id)
                    .is_some_and(|c| c.key && c.out.try_send(Outbound::CheckKey).is_err())
            })
            .copied()
            .collect();
        registry.close(slow, Close::SlowConsumer);
    }

    /// How many sockets of `app` are open on this node.
    pub async fn sockets_of(&self, app: &AppName) -> usize {
        let registry = self.0.registry.lock().await;
        registry.by_app.get(app).map_or(0, HashSet::len)
    }

    /// A page of the app's channels on this node: `limit` of them (at most
    /// [`MAX_SOCKETS_PAGE`]) after the one named `after`, in name order, and how many there are.
    /// Users' direct message streams are not listed (they are personal, one per user).
    pub async fn channels(&self, app: &AppName, after: Option<&str>, limit: usize) -> ChannelsPage {
        let limit = limit.clamp(1, MAX_SOCKETS_PAGE);
        let registry = self.0.registry.lock().await;
        let mut count = 0;
        let mut page: Vec<(&ChannelName, &Channel)> = Vec::new();
        for ((of, name), channel) in &registry.channels {
            if of != app || name.is_direct() {
                continue;
            }
            count += 1;
            if after.is_none_or(|after| name.as_str() > after) {
                page.push((name, channel));
            }
        }
        if page.len() > limit + 1 {
            page.select_nth_unstable_by(limit, |a, b| a.0.as_str().cmp(b.0.as_str()));
            page.truncate(limit + 1);
        }
        page.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|(name, _)| name.as_str().to_owned())
        });
        ChannelsPage {
            count,
            channels: page
                .into_iter()
                .map(|(name, channel)| ChannelEntry {
                    name: name.as_str().to_owned(),
                    subscribers: channel.subscribers.len(),
                    present: channel.members.len(),
                    seq: channel.seq,
                })
                .collect(),
            next: next.flatten(),
        }
    }

    /// How many sockets of `app` are open on this node, and how many users hold them.
    pub async fn counts(&self, app: &AppName) -> (usize, usize) {
        let registry = self.0.registry.lock().await;
        (
            registry.by_app.get(app).map_or(0, HashSet::len),
            registry.users.get(app).copied().unwrap_or(0),
        )
    }

    /// A page of the sockets of `app` open on this node: `limit` of them (at most
    /// [`MAX_SOCKETS_PAGE`]) after the one with id `after`, in id order, with how many sockets
    /// and distinct users there are. One pass over the app's sockets, whatever the page (about
    /// a millisecond at 18,000).
    pub async fn sockets(&self, app: &AppName, after: Option<&str>, limit: usize) -> SocketsPage {
        let limit = limit.clamp(1, MAX_SOCKETS_PAGE);
        let registry = self.0.registry.lock().await;
        let mut page: Vec<&Connection> = Vec::new();
        let ids = registry.by_app.get(app);
        for connection in ids
            .into_iter()
            .flatten()
            .filter_map(|id| registry.connections.get(id))
        {
            if after.is_none_or(|after| connection.member.as_str() > after) {
                page.push(connection);
            }
        }
        // The first `limit + 1` in id order, without sorting the rest.
        if page.len() > limit + 1 {
            page.select_nth_unstable_by(limit, |a, b| a.member.cmp(&b.member));
            page.truncate(limit + 1);
        }
        page.sort_unstable_by(|a, b| a.member.cmp(&b.member));
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|c| c.member.clone())
        });
        SocketsPage {
            count: ids.map_or(0, HashSet::len),
            users: registry.users.get(app).copied().unwrap_or(0),
            sockets: page
                .into_iter()
                .map(|c| SocketEntry {
                    id: c.member.clone(),
                    user: c.user.clone(),
                    caller: match c.caller {
                        Caller::User(_) => "user",
                        Caller::Anonymous => "anonymous",
                        Caller::Admin | Caller::AppKey(_) => "server",
                    },
                    opened_at: crate::clock::Timestamp::from_unix_ms(c.opened_ms),
                    subscriptions: c.subscriptions.len(),
                })
                .collect(),
            next: next.flatten(),
        }
    }

    /// Closes every connection (the server is shutting down).
    pub async fn close_all(&self) {
        {
            let mut registry = self.0.registry.lock().await;
            let ids: Vec<ConnectionId> = registry.connections.keys().copied().collect();
            registry.close(ids, Close::GoingAway);
        }
        // Stopping, this node leaves the other nodes' presence now, not at its lease's end.
        self.leave_nodes().await;
    }
}

/// Records socket events for the app's triggers, a few at once, until the hub is gone.
async fn record(data: Data, mut events: mpsc::Receiver<SocketEvent>) {
    let room = Arc::new(tokio::sync::Semaphore::new(RECORDING));
    while let Some(event) = events.recv().await {
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else {
            return;
        };
        let data = data.clone();
        tokio::spawn(async move {
            let payload = serde_json::json!({
                "user": event.user,
                "member": event.member,
                "at": crate::clock::Timestamp::from_unix_ms(event.at_ms).to_rfc3339(),
            });
            if let Err(e) = data
                .record_event(&event.app, event.kind, &event.member, &payload)
                .await
            {
                tracing::warn!(app = %event.app, kind = event.kind, error = %e,
                    "a realtime socket event was not recorded");
            }
            drop(permit);
        });
    }
}

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::clock::SystemClock;

    fn registry() -> Registry {
        Registry {
            clock: Arc::new(SystemClock),
            per_user: HashMap::new(),
            users: HashMap::new(),
            anonymous: HashMap::new(),
            events: mpsc::channel(1).0,
            connections: HashMap::new(),
            by_app: HashMap::new(),
            channels: HashMap::new(),
            held: HashMap::new(),
            presence_out: None,
        }
    }

    #[test]
    fn an_app_holds_a_bounded_number_of_channels_and_forgets_the_unjoined() {
        let mut registry = registry();
        let (app, other) = (
            AppName::parse("one").unwrap(),
            AppName::parse("two").unwrap(),
        );
        let new = || Channel::new("e".into(), settings::History::default(), 0);
        for n in 0..MAX_CHANNELS_PER_APP {
            let name = ChannelName::parse(&format!("room:{n}")).unwrap();
            registry.channel(&app, &name, new).unwrap();
        }
        let one_more = ChannelName::parse("room:x").unwrap();
        assert!(matches!(
            registry.channel(&app, &one_more, new),
            Err(RealtimeError::TooManyChannels)
        ));
        // Another app is not held back; an existing channel is still reached.
        registry.channel(&other, &one_more, new).unwrap();
        registry
            .channel(&app, &ChannelName::parse("room:7").unwrap(), new)
            .unwrap();
        // A channel nobody joined that keeps nothing is forgotten at once, and counts no more.
        let key = (app.clone(), ChannelName::parse("room:0").unwrap());
        registry.forget_if_idle(&key, 0);
        assert!(!registry.channels.contains_key(&key));
        registry.channel(&app, &one_more, new).unwrap();
    }
}
