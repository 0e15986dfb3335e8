//! The realtime hub: who is connected to which app, what each connection watches, and the one
//! task that hands every committed change to the subscribers allowed to see it.
//!
//! A connection is registered with its caller and gets a bounded queue of what to send
//! ([`Outbound`]); the transport (the server's WebSocket) drains it. Subscriptions are indexed
//! by app, so a change costs only the connections of its app, and each subscription is judged
//! in memory against the collection's list rule and its filter ([`Data::judge`]): no database
//! read per subscriber. Each subscription numbers what it delivers (`seq`, from 1) within an
//! `epoch` drawn when it starts, so a client can tell a gap from nothing.
//!
//! Nothing is lost silently: a connection whose queue is full (it stopped reading) is closed
//! with [`Close::SlowConsumer`], and if the hub itself falls behind the change stream, every
//! subscription gets a `reset` (refetch, then carry on). Revoked sessions (logout, revocation,
//! a deleted user) have their connections closed at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cloudlet_store::AppName;
use serde::Serialize;
use serde_json::Value as Json;
use tokio::sync::{Mutex, broadcast, mpsc};

use crate::access::Caller;
use crate::auth::{Auth, Revocation};
use crate::clock::Clock;
use crate::data::{ChangeEvent, Data, DataError, Seen, Watch};
use crate::random::Random;

/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 64;

/// How many connections may be open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Of one app at once, whoever opened them: one app's clients cannot take every socket.
    pub per_app: usize,
    /// Of one user to one app (WeChat allows five sockets per mini program).
    pub per_user: usize,
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
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Close::GoingAway => 1001,
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
        }
    }
}

/// What the hub asks a connection's transport to send.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outbound {
    /// A change a subscription sees.
    Change {
        sub: String,
        seq: u64,
        event: Seen,
        collection: String,
        id: String,
        /// The record after the change (none for `delete` and `leave`), shared by every
        /// subscriber it goes to.
        #[serde(skip_serializing_if = "Option::is_none")]
        record: Option<Arc<Json>>,
    },
    /// The subscription may have missed changes: refetch, then carry on from `epoch`.
    Reset {
        sub: String,
        epoch: String,
        reason: &'static str,
    },
    /// The subscription ended on the server's side (its collection was deleted).
    Ended {
        sub: String,
        code: &'static str,
        message: String,
    },
    /// Close the connection.
    #[serde(skip)]
    Close(Close),
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
    #[error("the connection is closed")]
    Closed,
    #[error(transparent)]
    Data(#[from] DataError),
}

/// A connection's handle in the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(u64);

struct Subscription {
    watch: Watch,
    epoch: String,
    seq: u64,
}

struct Connection {
    app: AppName,
    /// The session and user of its token (none for the admin token or an app key).
    session: Option<String>,
    user: Option<String>,
    /// Opened with the app's secret key.
    key: bool,
    out: mpsc::Sender<Outbound>,
    subscriptions: HashMap<String, Subscription>,
}

#[derive(Default)]
struct Registry {
    connections: HashMap<ConnectionId, Connection>,
    by_app: HashMap<AppName, HashSet<ConnectionId>>,
}

impl Registry {
    fn remove(&mut self, id: ConnectionId) -> Option<Connection> {
        let connection = self.connections.remove(&id)?;
        if let Some(ids) = self.by_app.get_mut(&connection.app) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_app.remove(&connection.app);
            }
        }
        Some(connection)
    }

    /// Closes a connection from the server's side: it is told why, and forgotten.
    fn close(&mut self, id: ConnectionId, why: Close) {
        if let Some(connection) = self.remove(id) {
            // A full queue is the reason itself; the transport ends when the queue closes.
            let _ = connection.out.try_send(Outbound::Close(why));
        }
    }
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
    random: Arc<dyn Random>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    registry: Mutex<Registry>,
    next: AtomicU64,
}

impl Hub {
    pub fn new(data: Data, random: Arc<dyn Random>, clock: Arc<dyn Clock>, limits: Limits) -> Self {
        Hub(Arc::new(Inner {
            data,
            random,
            clock,
            limits,
            registry: Mutex::new(Registry::default()),
            next: AtomicU64::new(1),
        }))
    }

    /// Runs the hub until the change stream ends: every committed change to its subscribers,
    /// every revoked session's connections closed. Spawn it once.
    pub async fn run(self, auth: Auth) {
        let mut changes = self.0.data.subscribe();
        let mut revocations = auth.revocations();
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
                change = changes.recv() => match change {
                    Ok(event) => self.deliver(&event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the realtime hub fell behind the changes");
                        self.reset_all("missed").await;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Registers a connection of `caller` to `app`; what to send comes out of the receiver.
    pub async fn connect(
        &self,
        app: &AppName,
        caller: &Caller,
    ) -> Result<(ConnectionId, mpsc::Receiver<Outbound>), RealtimeError> {
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
        if let Some(user) = &user {
            let open = registry.by_app.get(app).map_or(0, |ids| {
                ids.iter()
                    .filter(|id| {
                        registry
                            .connections
                            .get(id)
                            .is_some_and(|c| c.user.as_deref() == Some(user.as_str()))
                    })
                    .count()
            });
            if open >= limits.per_user {
                return Err(RealtimeError::TooManyConnections(limits.per_user));
            }
        }
        let id = ConnectionId(self.0.next.fetch_add(1, Ordering::Relaxed));
        let (out, receiver) = mpsc::channel(QUEUE);
        registry.connections.insert(
            id,
            Connection {
                app: app.clone(),
                session,
                user,
                key,
                out,
                subscriptions: HashMap::new(),
            },
        );
        registry.by_app.entry(app.clone()).or_default().insert(id);
        Ok((id, receiver))
    }

    /// Forgets a connection (its socket closed).
    pub async fn disconnect(&self, id: ConnectionId) {
        self.0.registry.lock().await.remove(id);
    }

    /// Starts a subscription `sub` of the connection; answers its epoch.
    pub async fn subscribe(
        &self,
        id: ConnectionId,
        caller: &Caller,
        sub: &str,
        collection: &str,
        filter: Option<&str>,
    ) -> Result<String, RealtimeError> {
        let app = {
            let registry = self.0.registry.lock().await;
            let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
            if connection.subscriptions.contains_key(sub) {
                return Err(RealtimeError::SubscriptionExists);
            }
            if connection.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(RealtimeError::TooManySubscriptions);
            }
            connection.app.clone()
        };
        // Checked without the registry held: it may read the collection's definition.
        let watch = self.0.data.watch(&app, caller, collection, filter).await?;
        let epoch = self.epoch();
        let mut registry = self.0.registry.lock().await;
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        if connection.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(RealtimeError::TooManySubscriptions);
        }
        if connection.subscriptions.contains_key(sub) {
            return Err(RealtimeError::SubscriptionExists);
        }
        connection.subscriptions.insert(
            sub.to_owned(),
            Subscription {
                watch,
                epoch: epoch.clone(),
                seq: 0,
            },
        );
        Ok(epoch)
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, id: ConnectionId, sub: &str) -> Result<(), RealtimeError> {
        let mut registry = self.0.registry.lock().await;
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        connection
            .subscriptions
            .remove(sub)
            .map(|_| ())
            .ok_or(RealtimeError::NoSubscription)
    }

    /// The connection's user, authenticated again with a fresh token: its subscriptions go on
    /// with it. A token of another user is refused by the caller of this.
    pub async fn reauthorize(
        &self,
        id: ConnectionId,
        caller: &Caller,
    ) -> Result<(), RealtimeError> {
        let mut registry = self.0.registry.lock().await;
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        if let Caller::User(principal) = caller {
            connection.session = Some(principal.session_id.clone());
        }
        for subscription in connection.subscriptions.values_mut() {
            subscription.watch.reauthorize(caller.clone());
        }
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

    async fn deliver(&self, event: &ChangeEvent) {
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
                if subscription.watch.collection() != event.collection {
                    continue;
                }
                let judged = match &change {
                    Ok(change) => self
                        .0
                        .data
                        .judge(change, &mut subscription.watch)
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
                subscription.seq += 1;
                let record = matches!(seen, Seen::Create | Seen::Update)
                    .then(|| shared.clone())
                    .flatten();
                let message = Outbound::Change {
                    sub: name.clone(),
                    seq: subscription.seq,
                    event: seen,
                    collection: event.collection.clone(),
                    id: event.id.clone(),
                    record,
                };
                if connection.out.try_send(message).is_err() {
                    slow.push(id);
                    break;
                }
            }
            for (name, (code, message)) in ended {
                connection.subscriptions.remove(&name);
                let message = Outbound::Ended {
                    sub: name,
                    code,
                    message,
                };
                if connection.out.try_send(message).is_err() {
                    slow.push(id);
                }
            }
        }
        for id in slow {
            registry.close(id, Close::SlowConsumer);
        }
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
                        .any(|s| s.watch.collection() == event.collection)
                })
            })
        })
    }

    async fn reset_all(&self, reason: &'static str) {
        let mut registry = self.0.registry.lock().await;
        let mut slow = Vec::new();
        let ids: Vec<ConnectionId> = registry.connections.keys().copied().collect();
        for id in ids {
            let epoch = self.epoch();
            let Some(connection) = registry.connections.get_mut(&id) else {
                continue;
            };
            for (name, subscription) in &mut connection.subscriptions {
                subscription.epoch = epoch.clone();
                subscription.seq = 0;
                let message = Outbound::Reset {
                    sub: name.clone(),
                    epoch: epoch.clone(),
                    reason,
                };
                if connection.out.try_send(message).is_err() {
                    slow.push(id);
                    break;
                }
            }
        }
        for id in slow {
            registry.close(id, Close::SlowConsumer);
        }
    }

    async fn revoke(&self, revocation: &Revocation) {
        let mut registry = self.0.registry.lock().await;
        let Some(ids) = registry.by_app.get(&revocation.app).cloned() else {
            return;
        };
        for id in ids {
            let revoked = registry.connections.get(&id).is_some_and(|c| {
                c.session
                    .as_ref()
                    .is_some_and(|s| revocation.sessions.contains(s))
            });
            if revoked {
                registry.close(id, Close::SessionRevoked);
            }
        }
    }

    /// Checks every user connection's session against the revoked ones (some revocations were
    /// missed).
    async fn recheck(&self, auth: &Auth) {
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
        let mut registry = self.0.registry.lock().await;
        for id in revoked {
            registry.close(id, Close::SessionRevoked);
        }
    }

    /// Closes an app's sockets: all of them (the app is deleted), or those of its secret key
    /// (it was rotated).
    pub async fn close_app(&self, app: &AppName, which: AppSockets) {
        let mut registry = self.0.registry.lock().await;
        let Some(ids) = registry.by_app.get(app).cloned() else {
            return;
        };
        for id in ids {
            let close = match which {
                AppSockets::All => true,
                AppSockets::OfKey => registry.connections.get(&id).is_some_and(|c| c.key),
            };
            if close {
                registry.close(id, Close::SessionRevoked);
            }
        }
    }

    /// Closes every connection (the server is shutting down).
    pub async fn close_all(&self) {
        let mut registry = self.0.registry.lock().await;
        let ids: Vec<ConnectionId> = registry.connections.keys().copied().collect();
        for id in ids {
            registry.close(id, Close::GoingAway);
        }
    }
}
