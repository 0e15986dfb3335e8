//! The hub's channels: an app's settings (read once, kept until replaced), joining a channel
//! (and catching up where a client left it), publishing, direct messages to a user, presence,
//! and dropping what is kept past its age.

use std::ops::Bound;
use std::sync::Arc;

use cloudlet_store::AppName;
use serde_json::{Value as Json, json};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::channels::{Channel, Member};
use super::settings::History;
use super::{
    APP_HISTORY_BYTES, APP_PRESENCE_BYTES, Act, ChannelName, Close, ConnectionId, Hub, Joined,
    MAX_PRESENCE_PAGE, MAX_STATE, MAX_SUBSCRIPTIONS, Outbound, PresenceEntry, PresencePage,
    RealtimeError, Registry, Resume, SETTINGS_KEY, Settings, SettingsBody, Subscription, lock,
    presence_frame, send_to,
};
use crate::access::Caller;

/// Whether the caller acts for the server (the admin token, the app's key, a function).
fn server(caller: &Caller) -> bool {
    matches!(caller, Caller::Admin | Caller::AppKey(_))
}

/// A user id as a recipient: 1 to 64 letters, digits, `_` and `-`.
fn recipient(to: &str) -> Result<&str, RealtimeError> {
    let valid = (1..=64).contains(&to.len())
        && to
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    valid.then_some(to).ok_or(RealtimeError::InvalidRecipient)
}

impl Hub {
    /// The app's settings lock. Kept while the app's settings are (an app's few bytes); taken
    /// away with them.
    fn settings_io(&self, app: &AppName) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = lock(&self.0.settings_io);
        if locks.len() > 4 * lock(&self.0.settings).len() + 1024 {
            // Locks of apps whose settings are no longer kept, and nobody holds.
            let kept = lock(&self.0.settings);
            locks.retain(|app, io| kept.contains_key(app) || Arc::strong_count(io) > 1);
        }
        Arc::clone(locks.entry(app.clone()).or_default())
    }

    /// The app's settings, compiled (the defaults if it stored none: no channel, nobody
    /// anonymous, direct messages from the server only).
    pub async fn settings(&self, app: &AppName) -> Result<Arc<Settings>, RealtimeError> {
        if let Some(settings) = lock(&self.0.settings).get(app) {
            return Ok(Arc::clone(settings));
        }
        let io = self.settings_io(app);
        let _io = io.lock().await;
        if let Some(settings) = lock(&self.0.settings).get(app) {
            return Ok(Arc::clone(settings));
        }
        let stored = self.0.tenants.setting(app, SETTINGS_KEY).await?;
        let settings = match stored {
            None => Settings::default(),
            Some(text) => serde_json::from_str::<SettingsBody>(&text)
                .map_err(|e| e.to_string())
                .and_then(|body| Settings::compile(body).map_err(|e| e.to_string()))
                .unwrap_or_else(|error| {
                    // Written by this server after the same checks: a bug, not a user's error.
                    tracing::error!(app = %app, error, "stored realtime settings do not compile");
                    Settings::default()
                }),
        };
        let settings = Arc::new(settings);
        lock(&self.0.settings).insert(app.clone(), Arc::clone(&settings));
        Ok(settings)
    }

    /// Checks, stores and applies the app's settings: live channel subscriptions the new rules
    /// refuse end (`forbidden`).
    pub async fn put_settings(
        &self,
        app: &AppName,
        body: SettingsBody,
    ) -> Result<Arc<Settings>, RealtimeError> {
        let settings = Arc::new(Settings::compile(body)?);
        let text = serde_json::to_string(&settings.body).map_err(|e| {
            RealtimeError::Store(cloudlet_store::StoreError::Unavailable(e.to_string()))
        })?;
        {
            let io = self.settings_io(app);
            let _io = io.lock().await;
            let now = self.now_ms();
            self.0
                .tenants
                .put_setting(app, SETTINGS_KEY, &text, now)
                .await?;
            lock(&self.0.settings).insert(app.clone(), Arc::clone(&settings));
        }
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, cloudlet_store::Topic::Realtime);
        }
        self.recheck_channels(app, &settings).await;
        Ok(settings)
    }

    /// Rings the other nodes whenever the app's settings change here. Set once.
    pub fn set_bell(&self, bell: Arc<dyn cloudlet_store::Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// Other nodes write to the same database: the watched apps' logs are also read every
    /// second, should a ring be late or lost.
    pub fn set_shared(&self) {
        self.0
            .shared
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Another node changed the app's settings: they are read again, and live channel
    /// subscriptions the new rules refuse end.
    pub async fn heard_settings(&self, app: &AppName) {
        {
            let io = self.settings_io(app);
            let _io = io.lock().await;
            lock(&self.0.settings).remove(app);
        }
        match self.settings(app).await {
            Ok(settings) => self.recheck_channels(app, &settings).await,
            Err(e) => {
                tracing::warn!(app = %app, error = %e, "could not read the realtime settings")
            }
        }
    }

    /// Every app's settings are read again (another node's changes may have been missed).
    pub async fn heard_everything(&self) {
        let apps: Vec<AppName> = lock(&self.0.settings).keys().cloned().collect();
        for app in apps {
            self.heard_settings(&app).await;
        }
        self.catch_up().await;
    }

    /// Ends the app's channel subscriptions its settings no longer allow.
    async fn recheck_channels(&self, app: &AppName, settings: &Settings) {
        let now = self.now_ms();
        let mut registry = self.0.registry.lock().await;
        // What each channel keeps follows the new settings at once, whether or not anyone is
        // connected now: a history shortened or turned off hides the past now, not at the
        // channel's next message.
        let Registry { channels, held, .. } = &mut *registry;
        let freed: usize = channels
            .iter_mut()
            .filter(|((of, _), _)| of == app)
            .map(|((_, channel), state)| state.limit(keeps(settings, channel), now))
            .sum();
        if let Some(held) = held.get_mut(app) {
            held.kept = held.kept.saturating_sub(freed);
        }
        let Some(ids) = registry.by_app.get(app).cloned() else {
            return;
        };
        let mut slow = Vec::new();
        // Sockets let in without a token, where that is no longer allowed, go.
        if !settings.body.anonymous {
            let anonymous: Vec<ConnectionId> = ids
                .iter()
                .copied()
                .filter(|id| {
                    registry
                        .connections
                        .get(id)
                        .is_some_and(|c| matches!(c.caller, Caller::Anonymous))
                })
                .collect();
            registry.close(anonymous, Close::AuthRequired);
        }
        for id in ids {
            slow.extend(registry.end_refused_channels(app, id, settings, now));
        }
        registry.close(slow, Close::SlowConsumer);
    }

    /// Checks that `caller` may `act` on `channel` of `app`.
    fn admit(
        settings: &Settings,
        caller: &Caller,
        channel: &ChannelName,
        act: Act,
        now_ms: i64,
    ) -> Result<(), RealtimeError> {
        if !server(caller) && !channel.is_direct() && settings.kind(channel).is_none() {
            return Err(RealtimeError::ChannelNotFound(channel.kind().to_owned()));
        }
        if !settings.allows(caller, channel, act, now_ms) {
            return Err(RealtimeError::Forbidden(match act {
                Act::Join => "join this channel",
                Act::Publish => "publish to this channel",
                Act::Presence => "see this channel's presence",
            }));
        }
        Ok(())
    }

    /// Subscribes the connection to a channel (`presence`: with its presence changes too),
    /// catching up from `after` when the channel still keeps what came since.
    pub async fn join(
        &self,
        id: ConnectionId,
        caller: &Caller,
        sub: &str,
        channel: ChannelName,
        presence: bool,
        after: Option<Resume>,
    ) -> Result<Joined, RealtimeError> {
        if after.as_ref().is_some_and(|after| after.pos.is_some()) {
            return Err(RealtimeError::InvalidResume);
        }
        let app = self.app_of(id).await?;
        let settings = self.settings(&app).await?;
        let now = self.now_ms();
        Self::admit(&settings, caller, &channel, Act::Join, now)?;
        if presence {
            Self::admit(&settings, caller, &channel, Act::Presence, now)?;
        }
        let epoch = self.epoch();
        let mut registry = self.0.registry.lock().await;
        // Settings replaced since they were read: their recheck may have run already, so the
        // new rules decide here, under the lock the recheck takes.
        let current = lock(&self.0.settings).get(&app).cloned();
        if let Some(current) = current
            && !Arc::ptr_eq(&current, &settings)
        {
            Self::admit(&current, caller, &channel, Act::Join, now)?;
            if presence {
                Self::admit(&current, caller, &channel, Act::Presence, now)?;
            }
        }
        let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
        if connection.subscriptions.contains_key(sub) {
            return Err(RealtimeError::SubscriptionExists);
        }
        if connection.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(RealtimeError::TooManySubscriptions);
        }
        let joined = connection
            .subscriptions
            .values()
            .any(|s| matches!(s, Subscription::Channel(c) if *c == channel));
        if joined {
            return Err(RealtimeError::JoinedAlready);
        }
        let keep = settings.history(&channel);
        let state = registry.channel(&app, &channel, || Channel::new(epoch, keep, now))?;
        state.subscribers.insert(id, presence);
        state.joined = true;
        state.touched_ms = now;
        let (epoch, seq) = (state.epoch.clone(), state.seq);
        let caught_up = match &after {
            None => Some((seq, Vec::new())),
            Some(after) if after.epoch == epoch && after.seq <= seq => {
                state.since(after.seq).map(|missed| (after.seq, missed))
            }
            Some(_) => None,
        };
        if let Some(connection) = registry.connections.get_mut(&id) {
            connection
                .subscriptions
                .insert(sub.to_owned(), Subscription::Channel(channel.clone()));
        }
        Ok(match caught_up {
            Some((seq, missed)) => Joined {
                epoch,
                seq,
                missed,
                reset: None,
                pos: None,
                // The channel's kept frames, shared: counted in its app's history budget.
                held: None,
            },
            None => Joined {
                epoch: epoch.clone(),
                seq,
                missed: Vec::new(),
                reset: Some(match after {
                    Some(after) if after.epoch == epoch => "history",
                    _ => "epoch",
                }),
                pos: None,
                held: None,
            },
        })
    }

    async fn app_of(&self, id: ConnectionId) -> Result<AppName, RealtimeError> {
        let registry = self.0.registry.lock().await;
        let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
        Ok(connection.app.clone())
    }

    /// Publishes `data` to a channel of `app` as `caller`; the message's number.
    pub async fn publish(
        &self,
        app: &AppName,
        caller: &Caller,
        channel: &ChannelName,
        data: &Json,
    ) -> Result<u64, RealtimeError> {
        let settings = self.settings(app).await?;
        Self::admit(&settings, caller, channel, Act::Publish, self.now_ms())?;
        let from = user_of(caller);
        if self.relayed() {
            return self.relay_out(app, channel, from, data).await;
        }
        let frame = |seq: u64| {
            json!({
                "type": "message", "channel": channel.as_str(), "seq": seq, "from": from,
                "data": data,
            })
        };
        self.emit(app, channel, &settings, frame).await
    }

    /// Sends `data` to every connection of user `to` that listens to its direct messages (and
    /// keeps it for those that come back); the message's number in the user's stream.
    pub async fn send_direct(
        &self,
        app: &AppName,
        caller: &Caller,
        to: &str,
        data: &Json,
    ) -> Result<u64, RealtimeError> {
        let to = recipient(to)?;
        let settings = self.settings(app).await?;
        if !settings.allows_direct(caller, to, self.now_ms()) {
            return Err(RealtimeError::Forbidden(
                "send direct messages to this user",
            ));
        }
        let from = user_of(caller);
        if self.relayed() {
            return self
                .relay_out(app, &ChannelName::direct(to), from, data)
                .await;
        }
        let frame = |seq: u64| json!({ "type": "direct", "seq": seq, "from": from, "data": data });
        self.emit(app, &ChannelName::direct(to), &settings, frame)
            .await
    }

    /// Numbers a message, keeps it as the channel's settings say, and sends it to the
    /// channel's subscribers, all under the registry's lock: every subscriber sees the
    /// channel's messages in one order.
    pub(super) async fn emit(
        &self,
        app: &AppName,
        channel: &ChannelName,
        settings: &Settings,
        frame: impl FnOnce(u64) -> Json,
    ) -> Result<u64, RealtimeError> {
        let now = self.now_ms();
        let keep = keeps(settings, channel);
        let epoch = self.epoch();
        let mut registry = self.0.registry.lock().await;
        let key = (app.clone(), channel.clone());
        registry.channel(app, channel, || Channel::new(epoch, keep, now))?;
        let Registry {
            connections,
            channels,
            held,
            ..
        } = &mut *registry;
        let state = channels.get_mut(&key).ok_or(RealtimeError::Closed)?;
        state.keep = keep;
        state.touched_ms = now;
        let held = held.entry(app.clone()).or_default();
        held.kept = held.kept.saturating_sub(state.expire(now));
        state.seq += 1;
        let seq = state.seq;
        let frame = Bytes::from(frame(seq).to_string());
        let room = APP_HISTORY_BYTES.saturating_sub(held.kept);
        let (added, freed) = state.keep(seq, now, &frame, room);
        held.kept = (held.kept + added).saturating_sub(freed);
        let slow = send_to(connections, state.subscribers.iter(), false, &frame);
        // Published to, joined by nobody, keeping nothing: not remembered.
        registry.forget_if_idle(&key, now);
        registry.close(slow, Close::SlowConsumer);
        Ok(seq)
    }

    /// Puts the connection in the presence of the channel of subscription `sub` with `state`
    /// (or replaces its state): a `join` to everyone watching the channel's presence.
    pub async fn track(
        &self,
        id: ConnectionId,
        sub: &str,
        state: Json,
    ) -> Result<(), RealtimeError> {
        // Kept as the text it is, which is what it costs.
        let text = state.to_string();
        if !state.is_object() || text.len() > MAX_STATE {
            return Err(RealtimeError::InvalidState);
        }
        let raw = RawValue::from_string(text).map_err(|_| RealtimeError::InvalidState)?;
        self.presence_change(id, sub, Some(raw)).await
    }

    /// Takes the connection out of the presence of the channel of subscription `sub`.
    pub async fn untrack(&self, id: ConnectionId, sub: &str) -> Result<(), RealtimeError> {
        self.presence_change(id, sub, None).await
    }

    async fn presence_change(
        &self,
        id: ConnectionId,
        sub: &str,
        state: Option<Box<RawValue>>,
    ) -> Result<(), RealtimeError> {
        let mut registry = self.0.registry.lock().await;
        let Registry {
            connections,
            channels,
            held,
            presence_out,
            ..
        } = &mut *registry;
        let connection = connections.get(&id).ok_or(RealtimeError::Closed)?;
        let channel = match connection.subscriptions.get(sub) {
            Some(Subscription::Channel(channel)) => channel.clone(),
            Some(Subscription::Records { .. }) => {
                return Err(RealtimeError::NotAChannel(sub.to_owned()));
            }
            None => return Err(RealtimeError::NoSubscription),
        };
        let member_id = connection.member.clone();
        let Some(channel_state) = channels.get_mut(&(connection.app.clone(), channel.clone()))
        else {
            return Err(RealtimeError::NoSubscription);
        };
        let held = held.entry(connection.app.clone()).or_default();
        let was = channel_state
            .members
            .get(&member_id)
            .map_or(0, Member::size);
        let frame = match state {
            Some(state) => {
                let member = Member {
                    connection: id,
                    user: connection.user.clone(),
                    state,
                };
                if held.presence.saturating_sub(was) + member.size() > APP_PRESENCE_BYTES {
                    return Err(RealtimeError::PresenceFull);
                }
                held.presence = held.presence.saturating_sub(was) + member.size();
                let frame = presence_frame(&channel, &member_id, Some(&member));
                if let Some(out) = presence_out.as_ref() {
                    let _ = out.try_send(super::relay::PresenceOut::Join {
                        app: connection.app.clone(),
                        channel: channel.clone(),
                        member: member_id.clone(),
                        user: member.user.clone(),
                        state: member.state.get().to_owned(),
                    });
                }
                channel_state.members.insert(member_id, member);
                frame
            }
            None => {
                let Some(gone) = channel_state.members.remove(&member_id) else {
                    return Ok(());
                };
                held.presence = held.presence.saturating_sub(was);
                if let Some(out) = presence_out.as_ref() {
                    let _ = out.try_send(super::relay::PresenceOut::Leave {
                        app: connection.app.clone(),
                        channel: channel.clone(),
                        member: member_id.clone(),
                        user: gone.user,
                    });
                }
                presence_frame(&channel, &member_id, None)
            }
        };
        let slow = send_to(connections, channel_state.subscribers.iter(), true, &frame);
        registry.close(slow, Close::SlowConsumer);
        Ok(())
    }

    /// A page of who is present in a channel: `limit` members (at most
    /// [`MAX_PRESENCE_PAGE`]) after member `after`, in member order, and how many there are.
    pub async fn presence(
        &self,
        app: &AppName,
        caller: &Caller,
        channel: &ChannelName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresencePage, RealtimeError> {
        let settings = self.settings(app).await?;
        Self::admit(&settings, caller, channel, Act::Presence, self.now_ms())?;
        let limit = limit.clamp(1, MAX_PRESENCE_PAGE);
        if self.relayed() {
            return self.shared_presence(app, channel, after, limit).await;
        }
        let registry = self.0.registry.lock().await;
        let Some(state) = registry.channels.get(&(app.clone(), channel.clone())) else {
            return Ok(PresencePage {
                count: 0,
                members: Vec::new(),
                next: None,
            });
        };
        let from = match after {
            Some(after) => Bound::Excluded(after.to_owned()),
            None => Bound::Unbounded,
        };
        let mut members: Vec<PresenceEntry> = state
            .members
            .range((from, Bound::Unbounded))
            .take(limit + 1)
            .map(|(member, m)| PresenceEntry {
                member: member.clone(),
                user: m.user.clone(),
                state: m.state.clone(),
            })
            .collect();
        let next = (members.len() > limit).then(|| {
            members.truncate(limit);
            members.last().map(|m| m.member.clone())
        });
        Ok(PresencePage {
            count: state.members.len(),
            members,
            next: next.flatten(),
        })
    }

    /// Drops kept messages past their age, and channels nobody holds that keep nothing.
    pub(super) async fn sweep(&self) {
        let now = self.now_ms();
        let mut registry = self.0.registry.lock().await;
        let Registry { channels, held, .. } = &mut *registry;
        channels.retain(|(app, _), channel| {
            let freed = channel.expire(now);
            let idle = channel.is_idle(now);
            if let Some(held) = held.get_mut(app) {
                held.kept = held.kept.saturating_sub(freed);
                held.channels -= usize::from(idle && held.channels > 0);
            }
            !idle
        });
        held.retain(|_, held| held.channels > 0 || held.presence > 0 || held.kept > 0);
    }
}

impl Registry {
    /// Ends the channel subscriptions of connection `id` of `app` that `settings` no longer
    /// let its caller hold (to join, or to watch presence); the connections found too slow to
    /// be told (some may be other members, told of the leave).
    pub(super) fn end_refused_channels(
        &mut self,
        app: &AppName,
        id: ConnectionId,
        settings: &Settings,
        now: i64,
    ) -> Vec<ConnectionId> {
        let mut slow = Vec::new();
        let Some(connection) = self.connections.get(&id) else {
            return Vec::new();
        };
        let refused: Vec<(String, ChannelName)> = connection
            .subscriptions
            .iter()
            .filter_map(|(name, subscription)| match subscription {
                Subscription::Channel(channel) => Some((name, channel)),
                Subscription::Records { .. } => None,
            })
            .filter(|(_, channel)| {
                let watches = self
                    .channels
                    .get(&(app.clone(), (*channel).clone()))
                    .and_then(|c| c.subscribers.get(&id).copied())
                    .unwrap_or(false);
                let caller = &connection.caller;
                !settings.allows(caller, channel, Act::Join, now)
                    || (watches && !settings.allows(caller, channel, Act::Presence, now))
            })
            .map(|(name, channel)| (name.clone(), channel.clone()))
            .collect();
        let member = connection.member.clone();
        for (name, channel) in refused {
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.subscriptions.remove(&name);
                let ended = Outbound::Ended(Box::new(super::Ended {
                    sub: name,
                    code: "forbidden",
                    message: "the app's realtime rules no longer let this caller in".into(),
                }));
                if connection.out.try_send(ended).is_err() {
                    slow.push(id);
                }
            }
            slow.extend(self.leave(app, &channel, id, &member));
        }
        slow
    }
}

/// Who a message is from: the user, `anonymous` for a socket without one, or `null` for the
/// server side (which an anonymous client must not pass for).
fn user_of(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::User(user) => Some(&user.user_id),
        Caller::Anonymous => Some("anonymous"),
        Caller::Admin | Caller::AppKey(_) => None,
    }
}

/// What `channel` keeps under `settings`: a kind the app does not declare keeps nothing (no
/// client may join it to come back).
fn keeps(settings: &Settings, channel: &ChannelName) -> History {
    if channel.is_direct() || settings.kind(channel).is_some() {
        settings.history(channel)
    } else {
        History {
            count: 0,
            age_secs: 0,
        }
    }
}
