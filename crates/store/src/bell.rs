//! The doorbell between nodes that share one database. A node that changes something the other
//! nodes cache or follow (an app's records, its collections, functions, sessions, realtime
//! settings, queues or buckets) rings once for that app and [`Topic`]; the other nodes hear a [`Ring`] and
//! drop what they cached, or read the app's event log. On one node ([`NoBell`], SQLite) nothing
//! needs ringing. On PostgreSQL ([`crate::postgres::PgBell`]) rings are gathered for a few
//! milliseconds and sent as one small `NOTIFY`, never one per write.

use std::collections::BTreeMap;

use tokio::sync::broadcast;

use crate::AppName;

/// What changed in an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Records were written: its event log has more.
    Records,
    /// A collection's definition or rules.
    Collections,
    /// A function's code, active version, environment or triggers.
    Functions,
    /// Sessions revoked, the app's signing keys, or a login provider's settings.
    Auth,
    /// The app's realtime settings.
    Realtime,
    /// The app's declared queues.
    Queues,
    /// A channel or direct message was relayed (see [`crate::Relay`]).
    Messages,
    /// The app's file buckets: their rules, types and sizes.
    Buckets,
    /// The app's secret key was replaced: the sockets opened with the old one close.
    Keys,
}

impl Topic {
    pub const ALL: [Topic; 9] = [
        Topic::Records,
        Topic::Collections,
        Topic::Functions,
        Topic::Auth,
        Topic::Realtime,
        Topic::Queues,
        Topic::Messages,
        Topic::Buckets,
        Topic::Keys,
    ];

    fn letter(self) -> char {
        match self {
            Topic::Records => 'r',
            Topic::Collections => 'c',
            Topic::Functions => 'f',
            Topic::Auth => 'a',
            Topic::Realtime => 't',
            Topic::Queues => 'q',
            Topic::Messages => 'm',
            Topic::Buckets => 'b',
            Topic::Keys => 'k',
        }
    }
}

/// A set of topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Topics(u16);

impl Topics {
    /// Every topic.
    pub const ALL: Topics = Topics((1 << Topic::ALL.len()) - 1);

    pub fn with(self, topic: Topic) -> Topics {
        Topics(self.0 | Self::bit(topic))
    }

    /// The topics of both.
    pub fn union(self, other: Topics) -> Topics {
        Topics(self.0 | other.0)
    }

    pub fn has(self, topic: Topic) -> bool {
        self.0 & Self::bit(topic) != 0
    }

    fn bit(topic: Topic) -> u16 {
        1 << Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0)
    }

    fn letters(self) -> String {
        Topic::ALL
            .iter()
            .filter(|t| self.has(**t))
            .map(|t| t.letter())
            .collect()
    }

    fn parse(letters: &str) -> Option<Topics> {
        letters
            .chars()
            .try_fold(Topics::default(), |topics, letter| {
                let topic = Topic::ALL.into_iter().find(|t| t.letter() == letter)?;
                Some(topics.with(topic))
            })
    }
}

/// What a node hears from the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ring {
    /// These topics of the app changed on another node.
    App(AppName, Topics),
    /// Rings may have been missed (the node's listening connection was lost and is back):
    /// anything may have changed.
    Everything,
}

/// Rings and hears rings.
#[async_trait::async_trait]
pub trait Bell: Send + Sync {
    /// Tells the other nodes that `topic` of `app` changed (after the change committed).
    fn ring(&self, app: &AppName, topic: Topic);
    /// What the other nodes ring, from now on.
    fn rings(&self) -> broadcast::Receiver<Ring>;
    /// Sends what was rung and not sent yet, now: for a node that stops, lest the other nodes
    /// keep what it changed last.
    async fn flush(&self) {}
}

/// The bell of a node alone with its database: nobody to ring, nothing to hear.
pub struct NoBell(broadcast::Sender<Ring>);

impl Default for NoBell {
    fn default() -> Self {
        NoBell(broadcast::channel(1).0)
    }
}

#[async_trait::async_trait]
impl Bell for NoBell {
    fn ring(&self, _app: &AppName, _topic: Topic) {}

    fn rings(&self) -> broadcast::Receiver<Ring> {
        self.0.subscribe()
    }
}

/// The largest text one ring message carries (PostgreSQL's `NOTIFY` takes under 8,000 bytes).
pub(crate) const MAX_MESSAGE: usize = 7_000;

/// The messages carrying `rings` from `node`: `{node}` on the first line, then one line per app,
/// `{app} {topic letters}`, each message at most [`MAX_MESSAGE`] bytes.
pub(crate) fn messages(node: &str, rings: &BTreeMap<AppName, Topics>) -> Vec<String> {
    let mut messages = Vec::new();
    let mut message = String::from(node);
    for (app, topics) in rings {
        let line = format!("\n{} {}", app.as_str(), topics.letters());
        if message.len() + line.len() > MAX_MESSAGE {
            messages.push(std::mem::replace(&mut message, String::from(node)));
        }
        message.push_str(&line);
    }
    if message.len() > node.len() {
        messages.push(message);
    }
    messages
}

/// The sending node and the rings of a message. What this node cannot read (a topic it does not
/// know, as from a node of a newer version during a rolling upgrade, or a line that is not a
/// ring) is never dropped, since what it told would be lost: an unknown topic is heard as every
/// topic of its app, and a line that is not a ring as `Everything` (alone: it covers the rest).
pub(crate) fn parse_message(message: &str) -> (&str, Vec<Ring>) {
    let mut lines = message.split('\n');
    let node = lines.next().unwrap_or_default();
    let mut rings = Vec::new();
    for line in lines {
        let app = line
            .split_once(' ')
            .and_then(|(app, letters)| Some((AppName::parse(app).ok()?, letters)));
        match app {
            Some((app, letters)) => {
                rings.push(Ring::App(
                    app,
                    Topics::parse(letters).unwrap_or(Topics::ALL),
                ));
            }
            None => return (node, vec![Ring::Everything]),
        }
    }
    (node, rings)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rings_travel_as_small_messages_and_read_back() {
        let mut rings = BTreeMap::new();
        for n in 0..1000 {
            let topics = Topics::default().with(Topic::Records).with(Topic::Auth);
            rings.insert(AppName::parse(&format!("app-{n}")).unwrap(), topics);
        }
        let sent = messages("node1", &rings);
        assert!(sent.len() > 1, "split: {}", sent.len());
        let mut heard = Vec::new();
        for message in &sent {
            assert!(message.len() <= MAX_MESSAGE);
            let (node, mut got) = parse_message(message);
            assert_eq!(node, "node1");
            heard.append(&mut got);
        }
        let expected: Vec<Ring> = rings
            .iter()
            .map(|(app, topics)| Ring::App(app.clone(), *topics))
            .collect();
        assert_eq!(heard, expected);
        assert!(messages("node1", &BTreeMap::new()).is_empty());
    }

    #[test]
    fn what_a_node_cannot_read_is_heard_as_more_never_dropped() {
        let app = || AppName::parse("app").unwrap();
        // A topic this version does not know: every topic of the app.
        let (node, rings) = parse_message("n\napp rz");
        assert_eq!(node, "n");
        assert_eq!(rings, [Ring::App(app(), Topics::ALL)]);
        assert!(Topic::ALL.iter().all(|t| Topics::ALL.has(*t)));
        // A line that is not a ring: everything, once.
        for bad in [
            "n\nno-topics",
            "n\nBAD_NAME r",
            "n\napp r\n",
            "n\napp r\nx\ny",
        ] {
            assert_eq!(parse_message(bad).1, [Ring::Everything], "{bad:?}");
        }
        let (_, rings) = parse_message("n\napp rcftqmbk");
        let expected = Topic::ALL
            .iter()
            .filter(|t| **t != Topic::Auth)
            .fold(Topics::default(), |topics, t| topics.with(*t));
        assert_eq!(rings, [Ring::App(app(), expected)]);
    }
}
