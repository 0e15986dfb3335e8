//! One channel in memory: its sequence and epoch, the messages kept for clients that come back
//! (a count, an age and a size, whichever is reached first), who is subscribed and who is
//! present. Messages are kept as the frames sent, serialized once for every subscriber.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use serde_json::value::RawValue;

use super::ConnectionId;
use super::settings::History;

/// The most bytes of messages one channel keeps.
pub const CHANNEL_BYTES: usize = 1 << 20;
/// What keeping a message costs beyond its frame, counted against the budgets.
pub const KEPT_OVERHEAD: usize = 64;

struct Kept {
    seq: u64,
    at_ms: i64,
    frame: Bytes,
}

impl Kept {
    fn size(&self) -> usize {
        self.frame.len() + KEPT_OVERHEAD
    }
}

/// Someone present in a channel: one connection, with the state it tracks (as the JSON text
/// it sent, counted in bytes against the app's presence budget).
#[derive(Debug, Clone)]
pub struct Member {
    pub connection: ConnectionId,
    pub user: Option<String>,
    pub state: Box<RawValue>,
}

impl Member {
    /// What it costs the app's presence budget.
    pub fn size(&self) -> usize {
        self.state.get().len() + MEMBER_OVERHEAD
    }
}

/// What a member costs beyond its state.
pub const MEMBER_OVERHEAD: usize = 128;

pub struct Channel {
    pub epoch: String,
    /// The last message's number (0: none yet).
    pub seq: u64,
    /// How much is kept, as the app's settings said at the last publish.
    pub keep: History,
    /// When it was last published to or left (Unix ms): it is remembered for the history's
    /// age after that, so that a client that comes back within it finds the same epoch.
    pub touched_ms: i64,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
    /// Subscribed connections, and whether each watches presence.
    pub subscribers: HashMap<ConnectionId, bool>,
    /// Whether anyone ever subscribed: a channel only published to is not remembered once it
    /// keeps nothing (nobody can come back to it).
    pub joined: bool,
    /// Who is present, by member id (one per connection), in id order for paging.
    pub members: BTreeMap<String, Member>,
}

impl Channel {
    pub fn new(epoch: String, keep: History, now_ms: i64) -> Self {
        Channel {
            epoch,
            seq: 0,
            keep,
            touched_ms: now_ms,
            kept: VecDeque::new(),
            kept_bytes: 0,
            subscribers: HashMap::new(),
            joined: false,
            members: BTreeMap::new(),
        }
    }

    /// Nobody holds it, it keeps nothing, and nothing happened to it for the history's age: it
    /// can be forgotten (a client coming back later gets a `reset`).
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.subscribers.is_empty()
            && self.members.is_empty()
            && self.kept.is_empty()
            && (!self.joined || now_ms - self.touched_ms >= i64::from(self.keep.age_secs) * 1000)
    }

    /// Drops what is older than the channel keeps at `now_ms`; the bytes freed.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let oldest = now_ms - i64::from(self.keep.age_secs) * 1000;
        let mut freed = 0;
        while self.kept.front().is_some_and(|k| k.at_ms <= oldest) {
            freed += self.pop();
        }
        freed
    }

    fn pop(&mut self) -> usize {
        let size = self.kept.pop_front().map_or(0, |k| k.size());
        self.kept_bytes -= size;
        size
    }

    /// Keeps the message `seq` (the last one numbered) if the channel's limits and `room` (what
    /// is left of the app's budget, plus what this frees) allow, dropping its oldest messages
    /// first. A message that cannot be kept drops the rest too, so that what is kept never
    /// has a gap. Returns (bytes added, bytes freed).
    pub fn keep(&mut self, seq: u64, at_ms: i64, frame: &Bytes, room: usize) -> (usize, usize) {
        let kept = Kept {
            seq,
            at_ms,
            frame: frame.clone(),
        };
        let size = kept.size();
        let mut freed = 0;
        let count = self.keep.count as usize;
        if count == 0 || self.keep.age_secs == 0 || size > CHANNEL_BYTES {
            while !self.kept.is_empty() {
                freed += self.pop();
            }
            return (0, freed);
        }
        while !self.kept.is_empty()
            && (self.kept.len() >= count
                || self.kept_bytes + size > CHANNEL_BYTES
                || size > room.saturating_add(freed))
        {
            freed += self.pop();
        }
        if size > room.saturating_add(freed) {
            return (0, freed);
        }
        self.kept_bytes += size;
        self.kept.push_back(kept);
        (size, freed)
    }

    /// Keeps from now on as `keep` says, dropping at once what it no longer allows (a history
    /// shortened or turned off hides the past now, not at the next publish); the bytes freed.
    pub fn limit(&mut self, keep: History, now_ms: i64) -> usize {
        self.keep = keep;
        let count = keep.count as usize;
        let mut freed = 0;
        while !self.kept.is_empty() && (self.kept.len() > count || keep.age_secs == 0) {
            freed += self.pop();
        }
        freed + self.expire(now_ms)
    }

    /// The kept frames after message `after`, in order, if the channel still keeps all of them.
    pub fn since(&self, after: u64) -> Option<Vec<Bytes>> {
        if after >= self.seq {
            return Some(Vec::new());
        }
        let first = self.kept.front()?.seq;
        if first > after + 1 {
            return None;
        }
        Some(
            self.kept
                .iter()
                .filter(|k| k.seq > after)
                .map(|k| k.frame.clone())
                .collect(),
        )
    }

    /// The bytes it keeps.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn channel(count: u32, age_secs: u32) -> Channel {
        Channel::new("e".into(), History { count, age_secs }, 0)
    }

    fn publish(channel: &mut Channel, at_ms: i64, room: usize) -> (usize, usize) {
        channel.seq += 1;
        let frame = Bytes::from(format!("m{}", channel.seq));
        channel.keep(channel.seq, at_ms, &frame, room)
    }

    fn frames(kept: Option<Vec<Bytes>>) -> Option<Vec<String>> {
        kept.map(|v| {
            v.iter()
                .map(|f| String::from_utf8(f.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn a_shorter_history_drops_what_it_no_longer_keeps_at_once() {
        let mut c = channel(5, 60);
        for _ in 0..4 {
            publish(&mut c, 0, usize::MAX);
        }
        let before = c.kept_bytes();
        let freed = c.limit(
            History {
                count: 2,
                age_secs: 60,
            },
            0,
        );
        assert_eq!(frames(c.since(2)), Some(vec!["m3".into(), "m4".into()]));
        assert_eq!(c.since(1), None, "m2 is gone");
        assert_eq!(before - c.kept_bytes(), freed);
        c.limit(
            History {
                count: 2,
                age_secs: 0,
            },
            0,
        );
        assert_eq!(c.since(3), None, "a history turned off keeps nothing");
        assert_eq!(c.kept_bytes(), 0);
    }

    #[test]
    fn it_keeps_the_last_count_in_order() {
        let mut c = channel(3, 60);
        for _ in 0..5 {
            publish(&mut c, 0, usize::MAX);
        }
        assert_eq!(
            frames(c.since(2)),
            Some(vec!["m3".into(), "m4".into(), "m5".into()])
        );
        assert_eq!(frames(c.since(4)), Some(vec!["m5".into()]));
        assert_eq!(frames(c.since(5)), Some(vec![]));
        // Message 2 is gone: a client after 1 cannot be served.
        assert_eq!(c.since(1), None);
    }

    #[test]
    fn it_forgets_what_is_too_old() {
        let mut c = channel(100, 1);
        publish(&mut c, 0, usize::MAX);
        publish(&mut c, 500, usize::MAX);
        assert_eq!(c.expire(1_000), 2 + KEPT_OVERHEAD);
        assert_eq!(frames(c.since(1)), Some(vec!["m2".into()]));
        assert_eq!(c.since(0), None);
        c.expire(1_500);
        assert_eq!(c.kept_bytes(), 0);
        // Remembered for the history's age after it was last touched.
        c.joined = true;
        assert!(!c.is_idle(999));
        assert!(c.is_idle(1_000));
    }

    #[test]
    fn a_message_over_the_budget_leaves_no_gap() {
        let mut c = channel(100, 60);
        let size = 2 + KEPT_OVERHEAD;
        publish(&mut c, 0, usize::MAX);
        publish(&mut c, 0, usize::MAX);
        // Room for one more only after dropping the oldest.
        assert_eq!(publish(&mut c, 0, 0), (size, size));
        assert_eq!(frames(c.since(2)), Some(vec!["m3".into()]));
        // No room at all: nothing is kept, and nobody is served from before it.
        let mut lone = channel(100, 60);
        assert_eq!(publish(&mut lone, 0, 1), (0, 0));
        assert_eq!(lone.since(0), None);
        assert_eq!(frames(lone.since(1)), Some(vec![]));
    }

    #[test]
    fn a_channel_that_keeps_nothing_serves_only_the_present() {
        let mut c = channel(0, 60);
        publish(&mut c, 0, usize::MAX);
        assert_eq!(c.since(0), None);
        assert_eq!(frames(c.since(1)), Some(vec![]));
    }
}
