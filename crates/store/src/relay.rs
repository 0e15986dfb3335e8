//! Channel and direct messages passed between nodes that share one database ([`Relay`]): each
//! message is a row, read by every node in commit order (the same rule as the event log's: a
//! row is read only once no older transaction can still commit before it), and kept about a
//! minute, since each node keeps the history its clients resume from. A node alone has none.

use async_trait::async_trait;

use crate::{AppName, LogPosition, StoreError};

/// A message as relayed: its place, app, channel (as the realtime hub names it) and body
/// (JSON text, owned by core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub at: LogPosition,
    pub app: AppName,
    pub channel: String,
    pub body: String,
}

/// Messages after a place, in order ([`Relay::relayed_after`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPage {
    pub messages: Vec<Relayed>,
    /// Where this read reached: the last message's place, or past rows that are not messages
    /// any more (their app's name unreadable); the place asked from when nothing was read.
    pub reached: LogPosition,
    /// A later message waits for an older transaction: read again shortly.
    pub pending: bool,
    /// The page holds as many as asked: more may follow.
    pub full: bool,
}

#[async_trait]
pub trait Relay: Send + Sync {
    /// Stores a message for every node; its place. Its time is the database's.
    async fn relay(
        &self,
        app: &AppName,
        channel: &str,
        body: &str,
    ) -> Result<LogPosition, StoreError>;
    /// Up to `limit` messages after `after`, in commit order.
    async fn relayed_after(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<RelayPage, StoreError>;
    /// Where a node starting now begins reading: after every message that can be read now.
    async fn relay_end(&self) -> Result<LogPosition, StoreError>;
    /// Deletes the messages stored more than `keep_ms` ago by the database's clock, of those
    /// every node can read (none that an older transaction still holds back); how many.
    async fn sweep_relay(&self, keep_ms: i64) -> Result<u64, StoreError>;
}
