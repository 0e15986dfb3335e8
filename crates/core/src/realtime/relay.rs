//! Channels and direct messages on several nodes sharing one database. A node that publishes
//! does not deliver the message itself: it stores it in the database's relay
//! ([`cloudlet_store::Relay`]) and rings the other nodes; every node, this one included, reads
//! the relay in commit order and delivers what it reads to its own sockets, numbering and
//! keeping each channel's messages as one node alone does. So every node delivers a channel's
//! messages in one order. The numbers (`seq`) are each node's own, within its `epoch`: a client
//! that comes back to another node gets the `reset` of a channel it did not leave there.
//!
//! Presence across nodes is kept in the database ([`cloudlet_store::Relay::present`]): each
//! change of this node's members is written there, with a message that tells the other nodes'
//! presence watchers, in one transaction (in the order the changes happened, by one task). A
//! page of presence is read from there. Each node renews a lease; the members of a node whose
//! lease ran out (it died) are taken out, and their leaves told, by the first node to see it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cloudlet_store::{AppName, LogPosition, Present, Relay};
use serde_json::value::RawValue;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use super::settings::ChannelName;
use super::{Close, Hub, PresenceEntry, PresencePage, RealtimeError, send_to};

/// How many messages one read of the relay takes.
const PULL: usize = 256;
/// How long a publisher waits for its message to come back through the relay, to answer the
/// number it has here.
const ROUND_TRIP: Duration = Duration::from_secs(1);
/// How soon a publisher reads the relay again while its message waits for an older
/// transaction: first, and at most (doubling between).
const WAIT_FIRST: Duration = Duration::from_millis(2);
const WAIT_MOST: Duration = Duration::from_millis(50);
/// How many delivered messages' numbers are remembered for their publishers.
const REMEMBERED: usize = 4096;
/// How long the relay keeps a message: every node has read it well before.
const KEEP_MS: i64 = 60_000;

/// How many presence changes may wait to be written: past that they are dropped, and the
/// next lease tick writes what this node holds (see [`Hub::keep_lease`]).
const PRESENCE_QUEUE: usize = 10_000;

/// A change of this node's presence, to write and tell the other nodes.
pub(super) enum PresenceOut {
    /// The app was deleted: every node's members of it go.
    ForgetApp(AppName),
    Join {
        app: AppName,
        channel: ChannelName,
        member: String,
        user: Option<String>,
        /// JSON text.
        state: String,
    },
    Leave {
        app: AppName,
        channel: ChannelName,
        member: String,
        user: Option<String>,
    },
}

/// What a presence change relays: the member, and the node it is on (which delivered it to
/// its own watchers already).
fn presence_body(node: &str, member: &str, user: Option<&str>, state: Option<&str>) -> String {
    let state = state
        .and_then(|text| serde_json::from_str::<Json>(text).ok())
        .unwrap_or(Json::Null);
    json!({
        "presence": { "member": member, "user": user, "state": state },
        "node": node,
    })
    .to_string()
}

/// Where this node has read the relay to, and the numbers it gave the latest messages.
#[derive(Default)]
pub(super) struct RelayTail {
    at: Option<LogPosition>,
    /// `None` for one this node could not deliver (the app's channels are full here).
    delivered: VecDeque<(LogPosition, Option<u64>)>,
}

impl Hub {
    /// Passes channel and direct messages through `relay` (other nodes share the database).
    /// Set once, before the first socket.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) {
        let _ = self.0.relay.set(relay);
    }

    pub(super) fn relayed(&self) -> bool {
        self.0.relay.get().is_some()
    }

    /// Another node relayed a message: the relay is read soon.
    pub fn heard_relay(&self) {
        self.0.relay_rung.notify_one();
    }

    /// Where this node starts reading the relay: after every message that can be read now;
    /// and its lease, and the task that writes its presence changes, with a lease of `lease`.
    /// Called before the node serves, so that no socket joins before it.
    pub async fn start_relay(&self, lease: Duration) -> Result<(), RealtimeError> {
        let Some(relay) = self.0.relay.get() else {
            return Ok(());
        };
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX).max(1);
        self.0.relay_lease_ms.store(lease_ms, Ordering::Relaxed);
        // A new node holds nobody yet: this only takes its lease.
        let nobody = |_: &Present, _: bool| String::new();
        relay
            .sync_node(&self.0.relay_node, lease_ms, &[], &nobody)
            .await?;
        let end = relay.relay_end().await?;
        self.0.relay_tail.lock().await.at.get_or_insert(end);
        let (out, changes) = mpsc::channel(PRESENCE_QUEUE);
        self.0.registry.lock().await.presence_out = Some(out);
        tokio::spawn(write_presence(
            Arc::clone(relay),
            self.0.relay_node.clone(),
            self.0.bell.get().cloned(),
            changes,
        ));
        Ok(())
    }

    /// How often this node renews its lease and looks for nodes whose lease ran out.
    pub(super) fn lease_every(&self) -> Duration {
        let lease = self.0.relay_lease_ms.load(Ordering::Relaxed);
        Duration::from_millis(u64::try_from(lease / 3).unwrap_or(1).max(1))
    }

    /// Renews this node's lease and writes what it holds of presence over what the database
    /// has of it (a write lost, a queue full, a lease that lapsed while this node lived), then
    /// takes out of the presence the members of nodes whose lease ran out, telling their
    /// watchers.
    pub(super) async fn keep_lease(&self) {
        let Some(relay) = self.0.relay.get() else {
            return;
        };
        let lease_ms = self.0.relay_lease_ms.load(Ordering::Relaxed);
        let held: Vec<Present> = {
            let registry = self.0.registry.lock().await;
            registry
                .channels
                .iter()
                .flat_map(|((app, channel), state)| {
                    state.members.iter().map(|(member, m)| Present {
                        app: app.clone(),
                        channel: channel.as_str().to_owned(),
                        member: member.clone(),
                        user: m.user.clone(),
                        state: m.state.get().to_owned(),
                    })
                })
                .collect()
        };
        let node = self.0.relay_node.as_str();
        let body = |p: &Present, join: bool| {
            presence_body(
                node,
                &p.member,
                p.user.as_deref(),
                join.then_some(p.state.as_str()),
            )
        };
        match relay.sync_node(node, lease_ms, &held, &body).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "this node's presence was written again"),
            Err(e) => {
                // Not renewed: this node takes nobody else out meanwhile.
                tracing::warn!(error = %e, "could not renew this node's lease");
                return;
            }
        }
        let leave = |p: &Present| presence_body("", &p.member, p.user.as_deref(), None);
        match relay.drop_gone(node, &leave).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(members = n, "members of a node gone left their channels");
                self.heard_relay();
            }
            Err(e) => tracing::warn!(error = %e, "could not look for nodes gone"),
        }
    }

    /// This node stops: its members leave the presence the other nodes read.
    pub(super) async fn leave_nodes(&self) {
        if let Some(relay) = self.0.relay.get() {
            let leave =
                |p: &Present| presence_body(&self.0.relay_node, &p.member, p.user.as_deref(), None);
            if let Err(e) = relay.drop_node(&self.0.relay_node, &leave).await {
                tracing::warn!(error = %e, "could not take this node's members out of presence");
            }
        }
    }

    /// A page of a channel's presence on every node (see [`Hub::presence`]).
    pub(super) async fn shared_presence(
        &self,
        app: &AppName,
        channel: &ChannelName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresencePage, RealtimeError> {
        let Some(relay) = self.0.relay.get() else {
            return Err(RealtimeError::Closed);
        };
        // Member ids are hex: nothing follows a place with a NUL (which the database refuses).
        let after = match after {
            Some(after) if after.contains('\0') => Some("\u{10ffff}"),
            other => other,
        };
        let page = relay
            .presence_page(app, channel.as_str(), after, limit + 1)
            .await?;
        let mut members: Vec<PresenceEntry> = page
            .members
            .into_iter()
            .filter_map(|p| {
                Some(PresenceEntry {
                    state: RawValue::from_string(p.state).ok()?,
                    member: p.member,
                    user: p.user,
                })
            })
            .collect();
        let next = (members.len() > limit).then(|| {
            members.truncate(limit);
            members.last().map(|m| m.member.clone())
        });
        Ok(PresencePage {
            count: page.count,
            members,
            next: next.flatten(),
        })
    }

    /// Tells this node's presence watchers of `channel` a change on another node.
    async fn deliver_presence(&self, app: &AppName, channel: &ChannelName, change: &Json) {
        let member = &change["member"];
        let frame = if change["state"].is_null() {
            json!({ "type": "presence_diff", "channel": channel.as_str(), "leave": { "member": member } })
        } else {
            json!({
                "type": "presence_diff", "channel": channel.as_str(),
                "join": { "member": member, "user": change["user"], "state": change["state"] },
            })
        };
        let frame = bytes::Bytes::from(frame.to_string());
        let mut registry = self.0.registry.lock().await;
        let Some(state) = registry.channels.get(&(app.clone(), channel.clone())) else {
            return;
        };
        let slow = send_to(
            &registry.connections,
            state.subscribers.iter(),
            true,
            &frame,
        );
        registry.close(slow, Close::SlowConsumer);
    }

    /// Stores a message of `channel` for every node, then waits (a second at most) until this
    /// node has delivered it: the number it has here, or 0 when it has none yet (or none at
    /// all: the app's channels are full here). Once stored, the message is sent: it is on its
    /// way to every node, and the publisher must not send it again.
    pub(super) async fn relay_out(
        &self,
        app: &cloudlet_store::AppName,
        channel: &ChannelName,
        from: Option<&str>,
        data: &Json,
    ) -> Result<u64, RealtimeError> {
        let Some(relay) = self.0.relay.get() else {
            return Err(RealtimeError::Closed);
        };
        let body = json!({ "from": from, "data": data }).to_string();
        let at = relay.relay(app, channel.as_str(), &body).await?;
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, cloudlet_store::Topic::Messages);
        }
        let deadline = tokio::time::Instant::now() + ROUND_TRIP;
        let mut wait = WAIT_FIRST;
        loop {
            // A failure to read is this node's: the message is sent all the same.
            let _ = self.pull_relay().await;
            {
                let tail = self.0.relay_tail.lock().await;
                match tail.delivered.iter().find(|(place, _)| *place == at) {
                    Some((_, seq)) => return Ok(seq.unwrap_or(0)),
                    // Read past and remembered no more (many messages since).
                    None if tail.at.is_some_and(|read| read >= at) => return Ok(0),
                    None => {}
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(0);
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(WAIT_MOST);
        }
    }

    /// Reads the relay on from where this node is and delivers what it holds; whether a later
    /// message waits for an older transaction (read again shortly).
    pub(super) async fn pull_relay(&self) -> Result<bool, RealtimeError> {
        let Some(relay) = self.0.relay.get() else {
            return Ok(false);
        };
        let mut tail = self.0.relay_tail.lock().await;
        let mut at = match tail.at {
            Some(at) => at,
            None => {
                let end = relay.relay_end().await?;
                tail.at = Some(end);
                end
            }
        };
        loop {
            let page = relay.relayed_after(at, PULL).await?;
            for message in page.messages {
                let channel = ChannelName::from_stored(&message.channel);
                let body = serde_json::from_str::<Json>(&message.body).ok();
                let seq = match channel.zip(body) {
                    Some((channel, body)) => {
                        match self.deliver_relayed(&message.app, &channel, body).await {
                            Ok(seq) => Some(seq),
                            Err(e) => {
                                tracing::debug!(app = %message.app, error = %e, "a relayed message was not delivered here");
                                None
                            }
                        }
                    }
                    None => None,
                };
                if tail.delivered.len() >= REMEMBERED {
                    tail.delivered.pop_front();
                }
                tail.delivered.push_back((message.at, seq));
            }
            at = page.reached;
            tail.at = Some(at);
            if page.pending {
                return Ok(true);
            }
            if !page.full {
                return Ok(false);
            }
        }
    }

    /// [`Hub::pull_relay`] for the hub's loop: a failure is logged (the next ring or poll
    /// reads again).
    pub(super) async fn pull_relay_now(&self) -> bool {
        match self.pull_relay().await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the relayed messages");
                false
            }
        }
    }

    /// Numbers, keeps and sends a message read from the relay, as [`Hub::publish`] and
    /// [`Hub::send_direct`] do on one node.
    async fn deliver_relayed(
        &self,
        app: &cloudlet_store::AppName,
        channel: &ChannelName,
        body: Json,
    ) -> Result<u64, RealtimeError> {
        if let Some(change) = body.get("presence") {
            // This node's own changes reached its watchers when they happened.
            if body["node"].as_str() != Some(self.0.relay_node.as_str()) {
                self.deliver_presence(app, channel, change).await;
            }
            return Ok(0);
        }
        let settings = self.settings(app).await?;
        let (from, data) = (&body["from"], &body["data"]);
        if channel.is_direct() {
            let frame =
                |seq: u64| json!({ "type": "direct", "seq": seq, "from": from, "data": data });
            self.emit(app, channel, &settings, frame).await
        } else {
            let frame = |seq: u64| {
                json!({
                    "type": "message", "channel": channel.as_str(), "seq": seq, "from": from,
                    "data": data,
                })
            };
            self.emit(app, channel, &settings, frame).await
        }
    }

    /// Deletes what the relay no longer needs to keep.
    pub(super) async fn sweep_relay(&self) {
        if let Some(relay) = self.0.relay.get()
            && let Err(e) = relay.sweep_relay(KEEP_MS).await
        {
            tracing::warn!(error = %e, "could not sweep the relayed messages");
        }
    }
}

/// Writes this node's presence changes, in order, each with the message that tells the other
/// nodes, until the hub is gone. A change that can not be written is logged: the member's
/// presence on the other nodes stays as it was until its next change or its node's lease ends.
async fn write_presence(
    relay: Arc<dyn Relay>,
    node: String,
    bell: Option<Arc<dyn cloudlet_store::Bell>>,
    mut changes: mpsc::Receiver<PresenceOut>,
) {
    while let Some(change) = changes.recv().await {
        let (app, written) = match change {
            PresenceOut::ForgetApp(app) => {
                let written = relay.forget_presence(&app).await;
                (app, written)
            }
            PresenceOut::Join {
                app,
                channel,
                member,
                user,
                state,
            } => {
                let body = presence_body(&node, &member, user.as_deref(), Some(&state));
                let present = Present {
                    app: app.clone(),
                    channel: channel.as_str().to_owned(),
                    member,
                    user,
                    state,
                };
                let written = relay.present(&node, &present, &body).await;
                (app, written)
            }
            PresenceOut::Leave {
                app,
                channel,
                member,
                user,
            } => {
                let body = presence_body(&node, &member, user.as_deref(), None);
                let written = relay.absent(&app, channel.as_str(), &member, &body).await;
                (app, written)
            }
        };
        match written {
            Ok(()) => {
                if let Some(bell) = &bell {
                    bell.ring(&app, cloudlet_store::Topic::Messages);
                }
            }
            Err(e) => tracing::warn!(app = %app, error = %e, "could not share a presence change"),
        }
    }
}
