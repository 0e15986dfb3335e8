//! Channels and direct messages on several nodes sharing one database. A node that publishes
//! does not deliver the message itself: it stores it in the database's relay
//! ([`cloudlet_store::Relay`]) and rings the other nodes; every node, this one included, reads
//! the relay in commit order and delivers what it reads to its own sockets, numbering and
//! keeping each channel's messages as one node alone does. So every node delivers a channel's
//! messages in one order. The numbers (`seq`) are each node's own, within its `epoch`: a client
//! that comes back to another node gets the `reset` of a channel it did not leave there.
//!
//! Presence stays with each node's own sockets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::{LogPosition, Relay};
use serde_json::{Value as Json, json};

use super::settings::ChannelName;
use super::{Hub, RealtimeError};

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

    /// Where this node starts reading the relay: after every message that can be read now.
    /// Called before the node serves, so that no socket joins before it.
    pub async fn start_relay(&self) -> Result<(), RealtimeError> {
        if let Some(relay) = self.0.relay.get() {
            let end = relay.relay_end().await?;
            self.0.relay_tail.lock().await.at.get_or_insert(end);
        }
        Ok(())
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
        // This node reads from before the message, so that it is delivered here too.
        self.pull_relay().await?;
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
