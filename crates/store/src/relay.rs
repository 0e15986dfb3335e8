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

/// Someone present in a channel, on some node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    pub app: AppName,
    pub channel: String,
    pub member: String,
    pub user: Option<String>,
    /// JSON text.
    pub state: String,
}

/// A page of a channel's presence ([`Relay::presence_page`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresentPage {
    pub count: usize,
    pub members: Vec<Present>,
}

/// What a presence change relays for the others: the body of a leave of `Present`.
pub type LeaveBody<'a> = &'a (dyn Fn(&Present) -> String + Sync);
/// The body of a join (`true`) or a leave (`false`) of `Present`.
pub type ChangeBody<'a> = &'a (dyn Fn(&Present, bool) -> String + Sync);

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

    /// Puts `present` in its channel's presence as a member of node `node` (or replaces its
    /// state), and relays `body` (the change, for the other nodes), in one transaction.
    async fn present(&self, node: &str, present: &Present, body: &str) -> Result<(), StoreError>;
    /// Takes a member out of its channel's presence and relays `body`, in one transaction;
    /// nothing (and no message) if it was not there.
    async fn absent(
        &self,
        app: &AppName,
        channel: &str,
        member: &str,
        body: &str,
    ) -> Result<(), StoreError>;
    /// Up to `limit` members of a channel's presence after member `after`, in member order,
    /// and how many there are.
    async fn presence_page(
        &self,
        app: &AppName,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresentPage, StoreError>;
    /// Renews node `node`'s lease for `lease_ms` more (by the database's clock) and makes its rows of presence `members` (what it holds in
    /// memory), relaying a join or a leave (`body`) for each row it adds, changes or removes,
    /// in one transaction: whatever a lost write or a lapsed lease left wrong is made right.
    /// How many rows changed.
    async fn sync_node(
        &self,
        node: &str,
        lease_ms: i64,
        members: &[Present],
        body: ChangeBody<'_>,
    ) -> Result<usize, StoreError>;
    /// Takes node `node` out: its lease, and its members out of every presence, relaying a
    /// leave for each (`leave`), in one transaction; how many members.
    async fn drop_node(&self, node: &str, leave: LeaveBody<'_>) -> Result<usize, StoreError>;
    /// The same for every node but `me` whose lease ran out, and for members of nodes that
    /// hold no lease; how many members.
    async fn drop_gone(&self, me: &str, leave: LeaveBody<'_>) -> Result<usize, StoreError>;
    /// Takes every member of `app` out of every presence (the app was deleted).
    async fn forget_presence(&self, app: &AppName) -> Result<(), StoreError>;
}
