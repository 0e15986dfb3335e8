//! Each app's durable queues, as stored in the app's own database: declared queues, their
//! messages and idempotency keys. What a queue means (retries, backoff, dead letters, who
//! consumes) is decided in `cloudlet-core`; these are the rows and the atomic steps, each one
//! transaction, so that a claim, an acknowledgement or a failure can not half-happen.
//!
//! A message is *waiting* (claimable once `visible_at` has passed: new, delayed or retrying),
//! *claimed* (hidden until `visible_at`, when the claim expires; only its `lease` may settle it)
//! or *dead* (attempts spent; kept for inspection and replay).
//!
//! The control plane keeps a hint of when each app next has due work (see [`crate::SystemStore`]:
//! `hint_due`, `due_apps`, `settle_due`), so that idle apps need not be opened to find out.

use async_trait::async_trait;

use crate::{AppName, OnDisk, StoreError};

/// What an expired claim whose attempts are spent records as its last error.
pub(crate) const EXPIRED: &str = "the claim expired before it was acknowledged";

/// A declared queue: its name and settings (JSON, owned by core).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    pub name: String,
    pub settings: String,
    pub created_at_ms: i64,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: String,
    /// JSON text.
    pub payload: String,
    /// An idempotency key: a second send with the same key while it lives is a no-op.
    pub key: Option<String>,
    /// When it may first be claimed (now, or later for a delayed message).
    pub visible_at_ms: i64,
    pub max_attempts: i64,
    /// The trigger depth of the run that sent it (0 for a client or the admin): its consumer
    /// runs at this depth, so that triggers and queues feeding each other stop at the bound.
    pub depth: i64,
}

/// What a send did with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Queued(String),
    /// The key was seen within its window: the id of the message sent then.
    Duplicate(String),
}

/// A claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub payload: String,
    /// 1 for the first delivery.
    pub attempt: i64,
    pub max_attempts: i64,
    /// The token that alone may acknowledge, extend or fail this delivery.
    pub lease: String,
    pub created_at_ms: i64,
    /// As sent (see [`NewMessage::depth`]).
    pub depth: i64,
}

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    Waiting,
    Claimed,
    Dead,
}

impl MessageState {
    pub(crate) fn code(self) -> i64 {
        match self {
            MessageState::Waiting => 0,
            MessageState::Claimed => 1,
            MessageState::Dead => 2,
        }
    }

    pub(crate) fn from_code(code: i64) -> MessageState {
        match code {
            0 => MessageState::Waiting,
            1 => MessageState::Claimed,
            _ => MessageState::Dead,
        }
    }
}

/// A message as stored, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: String,
    pub queue: String,
    pub payload: String,
    pub state: MessageState,
    pub visible_at_ms: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}

/// What became of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// Waiting again, claimable at the retry time.
    Retrying,
    /// Its attempts are spent: moved to the dead letters, once.
    Dead,
    /// The lease is not the message's current one (the claim expired and it went to someone
    /// else, or it was settled already): nothing changed.
    Stale,
}

/// A queue's counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub queue: String,
    /// Waiting and due now.
    pub ready: i64,
    /// Waiting and due later (delayed or retrying).
    pub delayed: i64,
    pub in_flight: i64,
    pub dead: i64,
    /// The earliest time a waiting or claimed message becomes claimable.
    pub next_at_ms: Option<i64>,
}

/// The claim a send makes of what is due, for a consumer with a free place
/// ([`QueueStore::send_and_claim`]): one lease per message it may take, hidden until `until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimAtSend {
    pub leases: Vec<String>,
    pub until_ms: i64,
}

/// An app the control plane's hint says has work due, with the hint's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueApp {
    pub app: AppName,
    pub at_ms: i64,
    pub version: i64,
}

/// The claim of [`QueueStore::send_and_claim`] made after its send committed: a failed claim
/// leaves the messages to the dispatcher rather than answer the sender with an error it would
/// retry.
pub(crate) async fn claim_after_send<S: QueueStore + ?Sized>(
    store: &S,
    app: &AppName,
    queue: &str,
    now_ms: i64,
    claim: ClaimAtSend,
) -> Vec<Claimed> {
    store
        .claim(app, queue, claim.leases, now_ms, claim.until_ms)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(app = %app, queue, error = %e, "a send could not claim for its consumer");
            Vec::new()
        })
}

/// Whether messages go into `queue` only while it is declared: every queue but Cloudlet's own,
/// whose names begin with `_` (an app's begin with a letter). A send checks the declaration in
/// its own transaction, so that it can not fill a queue that a concurrent delete has just
/// removed: its messages would be orphans, never swept, back if the name were declared again.
pub fn must_be_declared(queue: &str) -> bool {
    !queue.starts_with('_')
}

#[async_trait]
pub trait QueueStore: Send + Sync {
    async fn queues(&self, app: &AppName) -> Result<Vec<QueueRow>, StoreError>;
    /// Creates the queue or replaces its settings; true if it was created.
    async fn put_queue(&self, app: &AppName, queue: QueueRow) -> Result<bool, StoreError>;
    /// Deletes the queue with its messages and keys; false if there was none.
    async fn delete_queue(&self, app: &AppName, name: &str) -> Result<bool, StoreError>;
    /// Enqueues `messages` in one transaction. A message whose key was used within the last
    /// `key_ttl_ms` is not enqueued again ([`Sent::Duplicate`]); otherwise its key lives
    /// `key_ttl_ms` from `now_ms`. A queue that [`must_be_declared`] and is not (deleted since
    /// its sender looked, say) takes nothing: [`StoreError::NotFound`].
    async fn send(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
    ) -> Result<Vec<Sent>, StoreError>;
    /// [`QueueStore::send`] answered once the messages are committed, when consumers can
    /// claim them, and before they are on disk: the send may be acknowledged to its sender only
    /// once [`OnDisk::wait`] resolves. A store whose commits are visible only once durable
    /// answers with them durable.
    async fn send_committed(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
    ) -> Result<(Vec<Sent>, OnDisk), StoreError> {
        let sent = self.send(app, queue, messages, now_ms, key_ttl_ms).await?;
        Ok((sent, OnDisk::now()))
    }
    /// [`QueueStore::send_committed`], then [`QueueStore::claim`], in the same transaction
    /// where the store can (the default is a send, then a claim that comes back empty if it
    /// fails): a send handed at once to a consumer with a free place. The claim
    /// takes what is due first, as any claim does, so a send behind a backlog takes the
    /// backlog's first messages, not its own. The claims may be answered before the commit
    /// is (on PostgreSQL, while it waits for the WAL's flush): a run may start on them at once,
    /// but neither they nor the send's messages are seen by another connection before
    /// [`OnDisk::wait`] resolves, so they are settled only after it. Should it fail, they may
    /// or may not exist (a commit undone, or one whose answer was lost): settling finds them
    /// stale, or settles them.
    ///
    /// With `app_key` (the SHA-256 of the app secret key that sent, which its caller has not
    /// checked: see [`QueueStore::checks_app_key_at_send`]), nothing is sent or claimed unless
    /// it is the app's key: [`StoreError::KeyRefused`]. A store that can not check it refuses
    /// every such send.
    #[allow(clippy::too_many_arguments)]
    async fn send_and_claim(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
        claim: ClaimAtSend,
        app_key: Option<&[u8]>,
    ) -> Result<(Vec<Sent>, Vec<Claimed>, OnDisk), StoreError> {
        if app_key.is_some() {
            return Err(StoreError::KeyRefused);
        }
        let (sent, on_disk) = self
            .send_committed(app, queue, messages, now_ms, key_ttl_ms)
            .await?;
        let claimed = claim_after_send(self, app, queue, now_ms, claim).await;
        Ok((sent, claimed, on_disk))
    }
    /// Whether [`QueueStore::send_and_claim`] lowers the control plane's hint of the app to its
    /// messages' due time itself ([`crate::SystemStore::hint_due`]), in a transaction of its
    /// own that commits before the send's, so that its caller need not hint first. PostgreSQL,
    /// where both live in one database, sends the two in one round trip.
    fn hints_at_send(&self) -> bool {
        false
    }
    /// Whether [`QueueStore::send_and_claim`] checks an app key itself, in the send's own
    /// transaction, where the key's lookup would otherwise take a round trip of its own before
    /// the send: PostgreSQL, where the control plane and the apps live in one database.
    fn checks_app_key_at_send(&self) -> bool {
        false
    }
    /// Claims up to `leases.len()` claimable messages in order of `visible_at`, then of sending
    /// (first in, first out among messages due at the same moment), giving each a
    /// lease of `leases` and hiding it until `until_ms`. Claims that expired with their
    /// attempts spent move to the dead letters first.
    async fn claim(
        &self,
        app: &AppName,
        queue: &str,
        leases: Vec<String>,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError>;
    /// Deletes a claimed message if `lease` is its current lease; false if stale.
    async fn ack(&self, app: &AppName, id: &str, lease: &str) -> Result<bool, StoreError>;
    /// [`QueueStore::ack`] for each `(id, lease)`, in one transaction (one commit for a whole
    /// batch); answers, in order, whether each was acknowledged.
    async fn ack_many(
        &self,
        app: &AppName,
        acks: Vec<(String, String)>,
    ) -> Result<Vec<bool>, StoreError>;
    /// Keeps a claimed message hidden until `until_ms` if `lease` is its current lease.
    async fn extend(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Settles a failed delivery at `now_ms`: waiting again from `retry_at_ms`, or dead if its
    /// attempts are spent or there is no retry (`None`: the failure will not pass on a retry).
    async fn fail(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        error: &str,
        now_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<Failed, StoreError>;
    async fn queue_stats(&self, app: &AppName, now_ms: i64) -> Result<Vec<QueueStats>, StoreError>;
    /// Messages of `queue` in `state`, by id after `after`: at most `limit`, and none once
    /// those before it hold `max_bytes` of payload (the first always comes).
    async fn messages(
        &self,
        app: &AppName,
        queue: &str,
        state: MessageState,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<MessageRow>, StoreError>;
    /// Moves dead letters (those of `ids`, or all) back to waiting, due at `now_ms`, with their
    /// attempts reset and their retention counted from now; returns how many.
    async fn replay(
        &self,
        app: &AppName,
        queue: &str,
        ids: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Deletes the messages of `queue` in `state` (all of them with `None`); returns how many.
    async fn purge(
        &self,
        app: &AppName,
        queue: &str,
        state: Option<MessageState>,
    ) -> Result<u64, StoreError>;
    /// The message an idempotency key of `queue` names while it lives (`expires_at > now_ms`).
    async fn keyed(
        &self,
        app: &AppName,
        queue: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError>;
    /// The earliest `visible_at` of any waiting or claimed message of the app's `queues`.
    async fn next_due(&self, app: &AppName, queues: Vec<String>)
    -> Result<Option<i64>, StoreError>;
    /// Deletes the dead letters of `queue` that died before `dead_before_ms`, its waiting
    /// messages created before `created_before_ms` and its keys expired at `now_ms`; returns
    /// how many messages.
    async fn sweep_queues(
        &self,
        app: &AppName,
        queue: &str,
        now_ms: i64,
        dead_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError>;
}
