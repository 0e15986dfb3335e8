//! Durable queues: each app's named queues with SQS's contract. A message is delivered at least
//! once; a delivery (a claim) hides it for a visibility timeout and carries a lease token and
//! an attempt number; only that lease may acknowledge, extend or fail it; a failure retries
//! with exponential backoff and jitter until `max_attempts`, then moves the message, once, to
//! the dead letters with its last error. Messages may be delayed, and may carry an idempotency
//! key that makes a repeated send a no-op for `dedup_window_secs`.
//!
//! Storage is the app's own database (`QueueStore`); the control plane keeps a hint of when each
//! app next has work due (`SystemStore::hint_due`), written before the message (on SQLite, after
//! a send its consumer starts on at once: see [`Queues::hint_or_defer`]), so the dispatcher
//! finds due work without opening idle apps: the app's database is the truth, and a hint
//! without work behind it costs one look. A send rings [`Queues::doorbell`], so a waiting
//! consumer starts at once rather than at the next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudlet_store::{
    AppName, ClaimAtSend, Claimed, Failed, MessageRow, MessageState, NewMessage, QueueRow,
    QueueStats, QueueStore, Sent, StoreError, SystemStore, TRIGGER_QUEUE,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::sync::Notify;

use crate::access::KeyToCheck;
use crate::clock::{Clock, Timestamp};
use crate::random::Random;

/// The largest message payload, as JSON text (SQS's limit).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// The longest delay of a message: 7 days.
pub const MAX_DELAY_SECS: u64 = 7 * 24 * 3600;
/// The most messages one send may carry.
pub const MAX_BATCH: usize = 100;
/// The most queues an app may declare.
pub const MAX_QUEUES: usize = 100;
/// The longest idempotency key.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no queue named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    InvalidQueue(String),
    #[error("{0}")]
    InvalidMessage(String),
    #[error("a message payload is {0} bytes; at most {MAX_PAYLOAD_BYTES}")]
    TooLarge(usize),
    #[error(
        "the lease is not the message's current one: the claim expired and the message went to another consumer, or it was settled already"
    )]
    StaleLease,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queue's settings, as declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// How long a claimed message stays hidden before another consumer may claim it.
    pub visibility_timeout_secs: u64,
    /// Deliveries before a message moves to the dead letters.
    pub max_attempts: u32,
    /// The first retry's delay; each further retry doubles it, up to `max_backoff_secs`, with
    /// up to a fifth of random jitter either way.
    pub backoff_secs: u64,
    pub max_backoff_secs: u64,
    /// How long a message may wait undelivered, and a dead letter be kept.
    pub retention_secs: u64,
    /// How long an idempotency key makes a repeated send a no-op.
    pub dedup_window_secs: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            visibility_timeout_secs: 30,
            max_attempts: 5,
            backoff_secs: 1,
            max_backoff_secs: 300,
            retention_secs: 14 * 24 * 3600,
            dedup_window_secs: 300,
        }
    }
}

impl QueueSettings {
    fn check(&self) -> Result<(), QueueError> {
        let within = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(QueueError::InvalidQueue(format!(
                    "{name} is {value}; it must be {min} to {max}"
                )))
            }
        };
        within(
            "visibility_timeout_secs",
            self.visibility_timeout_secs,
            1,
            12 * 3600,
        )?;
        within("max_attempts", self.max_attempts.into(), 1, 100)?;
        within("backoff_secs", self.backoff_secs, 0, 24 * 3600)?;
        within(
            "max_backoff_secs",
            self.max_backoff_secs,
            self.backoff_secs,
            24 * 3600,
        )?;
        within("retention_secs", self.retention_secs, 60, 30 * 24 * 3600)?;
        within(
            "dedup_window_secs",
            self.dedup_window_secs,
            1,
            7 * 24 * 3600,
        )?;
        Ok(())
    }

    /// The delay before retry `attempt` (1 for the retry after the first delivery), in ms.
    fn backoff_ms(&self, attempt: i64, random: &dyn Random) -> i64 {
        let base = (self.backoff_secs * 1000) as i64;
        let doubled = base.saturating_mul(1i64 << (attempt - 1).clamp(0, 30));
        let capped = doubled.min((self.max_backoff_secs * 1000) as i64);
        let mut bytes = [0u8; 2];
        random.fill(&mut bytes);
        // Jitter in [-20 %, +20 %], so that failures of one burst do not retry in step.
        let unit = f64::from(u16::from_be_bytes(bytes)) / f64::from(u16::MAX);
        (capped as f64 * (0.8 + 0.4 * unit)) as i64
    }
}

/// A queue with its counts, as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueView {
    pub name: String,
    pub settings: QueueSettings,
    pub created_at: String,
    pub ready: i64,
    pub delayed: i64,
    pub in_flight: i64,
    pub dead: i64,
}

/// One message to send.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Outgoing {
    /// Any JSON; the consumer receives it as is.
    pub payload: Json,
    /// Deliver no sooner than this many seconds from now (fractions allowed).
    #[serde(default)]
    pub delay_secs: Option<f64>,
    /// An idempotency key: sending the same key again within the queue's
    /// `dedup_window_secs` sends nothing and answers the first message's id.
    #[serde(default)]
    pub key: Option<String>,
}

/// What a send did with one message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendReceipt {
    pub id: String,
    /// True when the key was seen within the window: nothing new was sent.
    pub duplicate: bool,
}

/// A delivery: a claimed message and the lease that settles it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Delivery {
    pub id: String,
    /// The trigger depth it was sent at: its consumer runs at it.
    #[serde(skip)]
    pub depth: u8,
    pub attempt: i64,
    pub max_attempts: i64,
    pub lease: String,
    /// The payload as it was sent, kept as its JSON text (see [`Payload`]).
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: Payload,
    pub sent_at: String,
}

/// A stored message, for inspection.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageView {
    pub id: String,
    pub state: &'static str,
    #[cfg_attr(feature = "openapi", schema(value_type = serde_json::Value))]
    pub payload: Payload,
    pub attempt: i64,
    pub max_attempts: i64,
    /// Waiting: when it may be delivered; in flight: when its claim expires.
    pub visible_at: String,
    pub last_error: Option<String>,
    pub sent_at: String,
}

/// The payload bytes a page of messages holds at most: the page ends at the first message past
/// them (the first always comes). A thousand payloads of 256 KiB would be 256 MiB.
pub const MAX_PAGE_BYTES: usize = 8 << 20;

/// A message's payload as its JSON text, written out as it is. Never made into a
/// [`serde_json::Value`] on the way out: an array of 128 Ki zeros is 256 KiB of text but 4 MiB
/// of values, so a page of such messages, or a consumer's batch, would take a node's memory.
pub type Payload = Box<serde_json::value::RawValue>;

/// The stored text as a [`Payload`] (`null` if it is not JSON, which a stored payload always is).
fn payload_of(text: String) -> Payload {
    serde_json::value::RawValue::from_string(text)
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned())
}

/// Which messages an inspection or a purge means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Waiting,
    InFlight,
    Dead,
}

impl Which {
    fn state(self) -> MessageState {
        match self {
            Which::Waiting => MessageState::Waiting,
            Which::InFlight => MessageState::Claimed,
            Which::Dead => MessageState::Dead,
        }
    }
}

fn state_name(state: MessageState) -> &'static str {
    match state {
        MessageState::Waiting => "waiting",
        MessageState::Claimed => "in_flight",
        MessageState::Dead => "dead",
    }
}

/// The settings of the queue that carries data triggers' deliveries ([`TRIGGER_QUEUE`]): a
/// delivery hides for `visibility_timeout_secs` (two minutes by default: longer than a function
/// may run), and a trigger that keeps failing is retried for about a minute, then kept with the
/// dead letters.
fn trigger_settings(visibility_timeout_secs: u64) -> QueueSettings {
    QueueSettings {
        visibility_timeout_secs,
        max_attempts: 5,
        backoff_secs: 1,
        max_backoff_secs: 60,
        // Shorter than the event log keeps events, so that a dead delivery replayed finds its
        // event.
        retention_secs: TRIGGER_RETENTION_SECS,
        ..QueueSettings::default()
    }
}

/// How long the triggers' queue keeps a delivery; the event log keeps events a day longer.
pub const TRIGGER_RETENTION_SECS: u64 = 7 * 24 * 3600;

/// The queue that carries subscribe messages to the platform (see `crate::messages`).
pub const MESSAGE_QUEUE: &str = "_messages";

/// The queue of payment checks (see `crate::payments`): each asks the platform about an order
/// or a refund that is not settled yet.
pub const PAYMENT_QUEUE: &str = "_payments";

/// How often [`PAYMENT_QUEUE`]'s checks retry: the first retry's delay, and the most.
#[derive(Debug, Clone, Copy)]
pub struct PaymentBackoff {
    pub backoff_secs: u64,
    pub max_backoff_secs: u64,
}

impl Default for PaymentBackoff {
    /// 5 s, doubling, at most a minute: a paid order whose callback was lost is found within
    /// about a minute of its payment.
    fn default() -> Self {
        PaymentBackoff {
            backoff_secs: 5,
            max_backoff_secs: 60,
        }
    }
}

/// The settings of [`PAYMENT_QUEUE`]: a check is asked again until the order is paid or closed
/// (an order lives a day at most) or the refund settled; 100 attempts a minute apart cover a
/// day and more only with the longest orders, whose check is sent again by each placing.
fn payment_settings(backoff: PaymentBackoff) -> QueueSettings {
    QueueSettings {
        visibility_timeout_secs: 60,
        max_attempts: 100,
        backoff_secs: backoff.backoff_secs,
        max_backoff_secs: backoff.max_backoff_secs.max(backoff.backoff_secs),
        retention_secs: TRIGGER_RETENTION_SECS,
        dedup_window_secs: 24 * 3600,
    }
}

/// The settings of [`MESSAGE_QUEUE`]: a send is one call to the platform, retried with backoff
/// (2 s, doubling, at most 30 minutes) for about an hour while the platform is unavailable
/// (12 attempts: 2 + 4 + … + 1024 s, then 1800 s), then kept with the dead letters. A claim
/// hides a message at least as long as a delivery may take (see the dispatcher).
fn message_settings() -> QueueSettings {
    QueueSettings {
        visibility_timeout_secs: 60,
        max_attempts: 12,
        backoff_secs: 2,
        max_backoff_secs: 1800,
        retention_secs: TRIGGER_RETENTION_SECS,
        // A send's `key` holds a day: a trigger retried within it does not send twice.
        dedup_window_secs: 24 * 3600,
    }
}

/// Whether `name` is one of Cloudlet's own queues, which only Cloudlet sends to and consumes:
/// they can be inspected, replayed and purged, never declared, deleted, sent to or claimed.
pub fn is_builtin_queue(name: &str) -> bool {
    name == TRIGGER_QUEUE || name == MESSAGE_QUEUE || name == PAYMENT_QUEUE
}

/// A queue name: 1 to 64 of `a-z`, `0-9`, `_` and `-`, starting with a letter.
pub fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A consumer with a free place on this node, which takes a send's messages in the send's own
/// transaction (the dispatcher, which owns the places, implements it): the consumer starts at
/// the commit, with no look of the dispatcher between.
#[async_trait::async_trait]
pub trait Taker: Send + Sync {
    /// Takes a place of a consumer of `queue` that has one free now, if any does.
    async fn reserve(&self, app: &AppName, queue: &str) -> Option<Place>;
    /// Runs the place's consumer on what the send claimed for it, or gives the place back if
    /// nothing (the send failed, or nothing was due). The run may start before the send's
    /// commit is answered; it settles its deliveries only once `committed` is (on PostgreSQL
    /// another connection sees neither the send's messages nor its claims before that, and
    /// would find every lease stale).
    fn take(&self, app: &AppName, place: Place, deliveries: Vec<Delivery>, committed: Committed);
    /// Runs a hand-over (the send, its claim, the run's start, the hint) among the node's
    /// background work, so that a stop waits for it as it waits for the runs.
    fn spawn(&self, hand_over: futures_util::future::BoxFuture<'static, ()>);
}

/// The answer to the commit of the send that claimed a run's deliveries ([`Taker::take`]):
/// the run waits for it before it settles them.
#[derive(Debug)]
pub struct Committed(Option<tokio::sync::oneshot::Receiver<bool>>);

impl Committed {
    /// Deliveries claimed by a commit already answered (a claim of their own).
    pub fn now() -> Committed {
        Committed(None)
    }

    /// Waits for the commit's answer: whether it reported success. False says the commit
    /// failed, or that its outcome is unknown (a connection lost during `COMMIT`, an answer
    /// that can no longer come): the deliveries may or may not exist.
    pub async fn answered(self) -> bool {
        match self.0 {
            None => true,
            Some(answer) => answer.await.unwrap_or(false),
        }
    }
}

/// A place [`Taker::reserve`] took: the consuming function, its trigger (how many messages it
/// takes at once), and how long a claim for it hides them at least (longer than its run may
/// last).
#[derive(Debug)]
pub struct Place {
    pub consumer: String,
    pub trigger: crate::functions::QueueTrigger,
    pub min_hide_secs: u64,
    /// The taker's hold on the place, which gives it back when dropped unless
    /// [`Taker::take`] carries it into a run: a hand-over that panics between the two leaves
    /// no place taken for good.
    pub held: Box<dyn std::any::Any + Send + Sync>,
}

/// The queues service. Cheap to clone.
#[derive(Clone)]
pub struct Queues(Arc<Inner>);

struct Inner {
    store: Arc<dyn QueueStore>,
    system: Arc<dyn SystemStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    /// Each app's declared queues, loaded on first use.
    declared: Mutex<HashMap<AppName, Arc<HashMap<String, QueueSettings>>>>,
    /// Moved on whenever declarations are forgotten: a load that read before is not kept.
    generation: std::sync::atomic::AtomicU64,
    /// The other nodes' doorbell, set by the composition root.
    bell: std::sync::OnceLock<Arc<dyn cloudlet_store::Bell>>,
    /// Takes sends for consumers with free places, set by the composition root.
    taker: std::sync::OnceLock<Arc<dyn Taker>>,
    doorbell: Notify,
    triggers: QueueSettings,
    messages: QueueSettings,
    payments: QueueSettings,
    /// Per app, what keeps the hint protocol safe in a live process (see [`Queues::hint`]).
    pulses: Mutex<HashMap<AppName, Pulse>>,
}

/// Per app: `epoch` moves on whenever a write that made work due completes; `settles` counts
/// the dispatcher's settles of the app's hint.
#[derive(Debug, Default, Clone, Copy)]
struct Pulse {
    epoch: u64,
    settles: u64,
}

/// What a caller of [`Queues::hint`] hands back to [`Queues::hinted`] once its write is done.
#[derive(Debug, Clone, Copy)]
pub struct HintTicket {
    settles: u64,
    at_ms: i64,
    /// False when the hint is left to [`Queues::hinted`] (see [`Queues::hint_or_defer`]).
    written: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn time(ms: i64) -> String {
    Timestamp::from_unix_ms(ms).to_rfc3339()
}

impl Queues {
    /// `trigger_visibility_secs`: how long a data trigger's delivery stays hidden before it is
    /// delivered again (it must outlast the functions it runs).
    pub fn new(
        store: Arc<dyn QueueStore>,
        system: Arc<dyn SystemStore>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        trigger_visibility_secs: u64,
        payment_backoff: PaymentBackoff,
    ) -> Self {
        Queues(Arc::new(Inner {
            store,
            system,
            clock,
            random,
            declared: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            bell: std::sync::OnceLock::new(),
            taker: std::sync::OnceLock::new(),
            doorbell: Notify::new(),
            triggers: trigger_settings(trigger_visibility_secs),
            messages: message_settings(),
            payments: payment_settings(payment_backoff),
            pulses: Mutex::new(HashMap::new()),
        }))
    }

    /// The settings of the triggers' queue.
    pub fn trigger_settings(&self) -> &QueueSettings {
        &self.0.triggers
    }

    /// Rung when work may have become due: a send, a failure to retry, a settled delivery.
    pub fn doorbell(&self) -> &Notify {
        &self.0.doorbell
    }

    fn now(&self) -> i64 {
        self.0.clock.now().unix_ms()
    }

    /// A new message id.
    pub fn new_message_id(&self) -> String {
        self.token("msg_")
    }

    /// The service's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.now()
    }

    fn token(&self, prefix: &str) -> String {
        let mut bytes = [0u8; 16];
        self.0.random.fill(&mut bytes);
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    async fn declared(
        &self,
        app: &AppName,
    ) -> Result<Arc<HashMap<String, QueueSettings>>, QueueError> {
        let generation = {
            let declared = lock(&self.0.declared);
            if let Some(found) = declared.get(app) {
                return Ok(Arc::clone(found));
            }
            self.0.generation.load(std::sync::atomic::Ordering::Acquire)
        };
        let mut loaded = HashMap::new();
        for row in self.0.store.queues(app).await? {
            let settings = serde_json::from_str(&row.settings).unwrap_or_default();
            loaded.insert(row.name, settings);
        }
        let loaded = Arc::new(loaded);
        let mut declared = lock(&self.0.declared);
        // Not kept if declarations were forgotten since the read began (it may be older).
        if self.0.generation.load(std::sync::atomic::Ordering::Acquire) == generation {
            declared.insert(app.clone(), Arc::clone(&loaded));
        }
        Ok(loaded)
    }

    async fn settings(&self, app: &AppName, queue: &str) -> Result<QueueSettings, QueueError> {
        match queue {
            TRIGGER_QUEUE => return Ok(self.0.triggers.clone()),
            MESSAGE_QUEUE => return Ok(self.0.messages.clone()),
            PAYMENT_QUEUE => return Ok(self.0.payments.clone()),
            _ => {}
        }
        self.declared(app)
            .await?
            .get(queue)
            .cloned()
            .ok_or_else(|| QueueError::NotFound(queue.to_owned()))
    }

    /// Forgets what is kept of an app (it was deleted).
    pub fn forget(&self, app: &AppName) {
        self.heard(app);
        lock(&self.0.pulses).remove(app);
    }

    /// Rings the other nodes whenever a queue is declared or deleted here. Set once.
    pub fn set_bell(&self, bell: Arc<dyn cloudlet_store::Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// Hands sends to consumers with free places on this node. Set once.
    pub fn set_taker(&self, taker: Arc<dyn Taker>) {
        let _ = self.0.taker.set(taker);
    }

    /// Forgets the app's declared queues: another node changed them.
    pub fn heard(&self, app: &AppName) {
        let mut declared = lock(&self.0.declared);
        self.0
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        declared.remove(app);
    }

    /// Forgets every app's declared queues (another node's changes may have been missed).
    pub fn heard_everything(&self) {
        let mut declared = lock(&self.0.declared);
        self.0
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        declared.clear();
    }

    /// After a queue of the app is declared or deleted here: forgotten, the nodes told.
    fn declarations_changed(&self, app: &AppName) {
        self.forget(app);
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, cloudlet_store::Topic::Queues);
        }
    }

    /// Makes the control plane's hint for `app` no later than `at_ms`, before the write that
    /// makes work due then; the caller hands the ticket to [`Queues::hinted`] once that write
    /// is done. Together they keep the hint never later than the work, also when the dispatcher
    /// settles the hint between the two: the hint, committed before the write, covers a crash
    /// (on SQLite, where hints are relaxed, the repair at start covers a power cut); the pulse
    /// after the write stops a settle that looked at the app before the write committed, or,
    /// when the settle already happened, writes the hint again.
    pub async fn hint(&self, app: &AppName, at_ms: i64) -> Result<HintTicket, StoreError> {
        let ticket = self.ticket(app, at_ms);
        self.0.system.hint_due(app, at_ms).await?;
        Ok(HintTicket {
            written: true,
            ..ticket
        })
    }

    /// [`Queues::hint`] for a send claimed for its consumer, whose work starts at its commit.
    /// The pulse is taken now, before the write, as the protocol needs; the hint's own write
    /// is left to the send where the store writes it first in the send's round trip
    /// ([`QueueStore::hints_at_send`]), and to [`Queues::hinted`], after the work has started,
    /// where the control plane repairs hints after a crash
    /// ([`SystemStore::hints_repaired_at_start`]).
    pub async fn hint_or_defer(&self, app: &AppName, at_ms: i64) -> Result<HintTicket, StoreError> {
        if self.0.store.hints_at_send() {
            Ok(HintTicket {
                written: true,
                ..self.ticket(app, at_ms)
            })
        } else if self.0.system.hints_repaired_at_start() {
            Ok(self.ticket(app, at_ms))
        } else {
            self.hint(app, at_ms).await
        }
    }

    fn ticket(&self, app: &AppName, at_ms: i64) -> HintTicket {
        let settles = lock(&self.0.pulses).entry(app.clone()).or_default().settles;
        HintTicket {
            settles,
            at_ms,
            written: false,
        }
    }

    /// The second half of [`Queues::hint`], once the write is done.
    pub async fn hinted(&self, app: &AppName, ticket: HintTicket) -> Result<(), StoreError> {
        let written = match ticket.written {
            true => Ok(()),
            false => self.0.system.hint_due(app, ticket.at_ms).await,
        };
        let settled_since = {
            let mut pulses = lock(&self.0.pulses);
            let pulse = pulses.entry(app.clone()).or_default();
            pulse.epoch += 1;
            pulse.settles != ticket.settles
        };
        written?;
        // Another node's settle is seen by no pulse here: one that read the app's work before
        // the write committed would remove the hint after it (its version check passes, the
        // hint's bump came before the write). Written again after the write, the hint moves
        // the version past any such settle, or comes back after it.
        if settled_since || self.0.system.hints_settled_elsewhere() {
            // After the write: its own commit must reach the disk, no later one of the work
            // would take it there.
            self.0.system.hint_due_durably(app, ticket.at_ms).await?;
        }
        Ok(())
    }

    /// [`Queues::hinted`] once the write has committed: a failure is logged, not answered,
    /// since the caller must not hear of a failure for what is done (a sender would send again,
    /// a consumer lose the leases of what it claimed). The hint written before the write still
    /// stands; a system database that refuses writes can not clear its open mark either, so
    /// the next start looks at every app.
    async fn hinted_after_commit(&self, app: &AppName, ticket: HintTicket, what: &str) {
        if let Err(e) = self.hinted(app, ticket).await {
            tracing::warn!(app = %app, error = %e, "could not hint the work of {what}");
        }
    }

    /// A hint with no write behind it: the app is worth a look at `at_ms`.
    pub async fn touch(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
        let ticket = self.hint(app, at_ms).await?;
        self.hinted(app, ticket).await
    }

    /// Where the app's pulse is now: the dispatcher takes it before it looks at the app's due
    /// work, and hands it to [`Queues::settle`].
    pub fn pulse(&self, app: &AppName) -> u64 {
        lock(&self.0.pulses).entry(app.clone()).or_default().epoch
    }

    /// Moves the hint of `app` to `next` (or removes it) unless a write made work due since the
    /// dispatcher took the app's `pulse`, or a hint moved its `version` since it was read; false
    /// if so (look again).
    pub async fn settle(
        &self,
        app: &AppName,
        version: i64,
        next: Option<i64>,
        pulse: u64,
    ) -> Result<bool, StoreError> {
        {
            let mut pulses = lock(&self.0.pulses);
            let current = pulses.entry(app.clone()).or_default();
            if current.epoch != pulse {
                return Ok(false);
            }
            current.settles += 1;
        }
        self.0.system.settle_due(app, version, next).await
    }

    /// Creates a queue or replaces its settings; true if it was created.
    pub async fn declare(
        &self,
        app: &AppName,
        name: &str,
        settings: QueueSettings,
    ) -> Result<(QueueView, bool), QueueError> {
        if !valid_queue_name(name) {
            return Err(QueueError::InvalidQueue(format!(
                "queue name {name:?}: 1 to 64 of a-z, 0-9, _ and -, starting with a letter"
            )));
        }
        settings.check()?;
        let declared = self.declared(app).await?;
        if !declared.contains_key(name) && declared.len() >= MAX_QUEUES {
            return Err(QueueError::InvalidQueue(format!(
                "an app has at most {MAX_QUEUES} queues"
            )));
        }
        let json = serde_json::to_string(&settings)
            .map_err(|e| QueueError::InvalidQueue(e.to_string()))?;
        let created = self
            .0
            .store
            .put_queue(
                app,
                QueueRow {
                    name: name.to_owned(),
                    settings: json,
                    created_at_ms: self.now(),
                },
            )
            .await?;
        self.declarations_changed(app);
        Ok((self.view(app, name).await?, created))
    }

    pub async fn delete(&self, app: &AppName, name: &str) -> Result<(), QueueError> {
        if is_builtin_queue(name) {
            return Err(QueueError::InvalidQueue(format!(
                "{name} is Cloudlet's own queue: it can not be deleted (purge its messages instead)"
            )));
        }
        let deleted = self.0.store.delete_queue(app, name).await?;
        self.declarations_changed(app);
        if !deleted {
            return Err(QueueError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Every queue of the app with its counts.
    pub async fn list(&self, app: &AppName) -> Result<Vec<QueueView>, QueueError> {
        let stats = self.0.store.queue_stats(app, self.now()).await?;
        let rows = self.0.store.queues(app).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let counts = stats
                    .iter()
                    .find(|s| s.queue == row.name)
                    .cloned()
                    .unwrap_or_default();
                view_of(row, counts)
            })
            .collect())
    }

    pub async fn view(&self, app: &AppName, name: &str) -> Result<QueueView, QueueError> {
        self.list(app)
            .await?
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| QueueError::NotFound(name.to_owned()))
    }

    /// Sends messages to a queue in one transaction.
    pub async fn send(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<SendReceipt>, QueueError> {
        if is_builtin_queue(queue) {
            // Filled only by Cloudlet: triggers' deliveries by writes, in their own
            // transactions; subscribe messages by `crate::messages`.
            return Err(QueueError::NotFound(queue.to_owned()));
        }
        self.send_to(app, queue, messages).await
    }

    /// [`Queues::send`] by the holder of an app key that held on this node before and is not
    /// checked yet ([`KeyToCheck`]): the store checks it in the send's own transaction where
    /// it can (on PostgreSQL, which saves the lookup's round trip before the run can start),
    /// and it is looked up before the send otherwise. Nothing but the receipts is answered
    /// before the key is known to hold: an error of the send is answered as the key's refusal
    /// ([`StoreError::KeyRefused`]) unless a lookup finds it holds.
    pub async fn send_with_key(
        &self,
        key: &KeyToCheck,
        queue: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<SendReceipt>, QueueError> {
        let sent = match is_builtin_queue(queue) {
            true => Err(QueueError::NotFound(queue.to_owned())),
            false => {
                self.send_checking(key.app(), queue, messages, Some(key))
                    .await
            }
        };
        match sent {
            Ok(sent) => Ok(sent),
            Err(QueueError::Store(StoreError::KeyRefused)) => Err(StoreError::KeyRefused.into()),
            Err(e) => match key.holds(&*self.0.system).await? {
                true => Err(e),
                false => Err(StoreError::KeyRefused.into()),
            },
        }
    }

    /// Refuses a key to check that is not its app's, where its send's store does not check it.
    async fn check_first(&self, key: Option<&KeyToCheck>) -> Result<(), QueueError> {
        match key {
            Some(key) if !key.holds(&*self.0.system).await? => Err(StoreError::KeyRefused.into()),
            _ => Ok(()),
        }
    }

    /// Sends to any queue, Cloudlet's own too.
    pub(crate) async fn send_to(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<Outgoing>,
    ) -> Result<Vec<SendReceipt>, QueueError> {
        self.send_checking(app, queue, messages, None).await
    }

    /// [`Queues::send_to`], with a key to check, if any, as [`Queues::send_with_key`] says.
    async fn send_checking(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<Outgoing>,
        key: Option<&KeyToCheck>,
    ) -> Result<Vec<SendReceipt>, QueueError> {
        if messages.is_empty() || messages.len() > MAX_BATCH {
            return Err(QueueError::InvalidMessage(format!(
                "send 1 to {MAX_BATCH} messages"
            )));
        }
        let settings = self.settings(app, queue).await?;
        let now = self.now();
        // Sent from a triggered run, a message carries its depth to its consumer: a trigger
        // that sends to a queue whose consumer writes what triggers it again stops at the
        // bound, as triggers writing to each other do.
        let depth = crate::data::TRIGGER_DEPTH
            .try_with(|depth| i64::from(*depth))
            .unwrap_or(0);
        let mut new = Vec::with_capacity(messages.len());
        for message in messages {
            let payload = message.payload.to_string();
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(QueueError::TooLarge(payload.len()));
            }
            let delay = message.delay_secs.unwrap_or(0.0);
            // A message is kept `retention_secs`: one delayed longer would be swept unseen.
            let most = MAX_DELAY_SECS.min(settings.retention_secs);
            if !delay.is_finite() || !(0.0..=most as f64).contains(&delay) {
                return Err(QueueError::InvalidMessage(format!(
                    "delay_secs must be 0 to {most} (7 days, and at most the queue's retention)"
                )));
            }
            if let Some(key) = &message.key
                && (key.is_empty() || key.len() > MAX_KEY_BYTES || key.contains('\0'))
            {
                return Err(QueueError::InvalidMessage(format!(
                    "a key is 1 to {MAX_KEY_BYTES} bytes, without NUL"
                )));
            }
            new.push(NewMessage {
                depth,
                id: self.token("msg_"),
                payload,
                key: message.key,
                visible_at_ms: now + (delay * 1000.0) as i64,
                max_attempts: settings.max_attempts.into(),
            });
        }
        let sent = if is_builtin_queue(queue) {
            self.check_first(key).await?;
            let window_ms = (settings.dedup_window_secs * 1000) as i64;
            self.put(app, queue, new, now, window_ms).await
        } else {
            self.put_to_consumer(app, queue, &settings, new, now, key)
                .await
        };
        let sent = match sent {
            // Deleted since its settings were read: the store took nothing.
            Err(QueueError::Store(StoreError::NotFound)) => {
                return Err(QueueError::NotFound(queue.to_owned()));
            }
            sent => sent?,
        };
        Ok(sent
            .into_iter()
            .map(|s| match s {
                Sent::Queued(id) => SendReceipt {
                    id,
                    duplicate: false,
                },
                Sent::Duplicate(id) => SendReceipt {
                    id,
                    duplicate: true,
                },
            })
            .collect())
    }

    /// Enqueues the run of a schedule's tick on the triggers' queue, once. The tick's `key`
    /// (function, schedule, time) is kept as long as the queue keeps deliveries (a week), so
    /// that enqueueing the same tick again, by this node after a crash or by another node that
    /// read the same due schedule, is a no-op; the schedule is moved on only after this, so
    /// that a tick is never lost between the two.
    pub async fn send_tick(
        &self,
        app: &AppName,
        function: &str,
        key: String,
        event: Json,
    ) -> Result<SendReceipt, QueueError> {
        let now = self.now();
        let message = NewMessage {
            id: self.token("msg_"),
            payload: json!({ "function": function, "schedule": event }).to_string(),
            key: Some(key),
            visible_at_ms: now,
            max_attempts: self.0.triggers.max_attempts.into(),
            depth: 0,
        };
        let window_ms = (TRIGGER_RETENTION_SECS * 1000) as i64;
        let sent = self
            .put(app, TRIGGER_QUEUE, vec![message], now, window_ms)
            .await?;
        match sent.into_iter().next() {
            Some(Sent::Queued(id)) => Ok(SendReceipt {
                id,
                duplicate: false,
            }),
            Some(Sent::Duplicate(id)) => Ok(SendReceipt {
                id,
                duplicate: true,
            }),
            None => Err(StoreError::Task("a send answered nothing".to_owned()).into()),
        }
    }

    /// Stores new messages, the app's hint moved first (it may then only be early, never
    /// late), and wakes the dispatcher as soon as they are committed, while their fsync runs:
    /// the send is answered once they are on disk.
    async fn put(
        &self,
        app: &AppName,
        queue: &str,
        new: Vec<NewMessage>,
        now: i64,
        window_ms: i64,
    ) -> Result<Vec<Sent>, QueueError> {
        let due = new.iter().map(|m| m.visible_at_ms).min().unwrap_or(now);
        let ticket = self.hint(app, due).await?;
        let (sent, on_disk) = self
            .0
            .store
            .send_committed(app, queue, new, now, window_ms)
            .await?;
        self.hinted_after_commit(app, ticket, "a send").await;
        self.0.doorbell.notify_one();
        on_disk.wait().await?;
        Ok(sent)
    }

    /// [`Queues::put`], handing what is due at once to a consumer of the queue with a free
    /// place on this node, if one has: the send claims for it in its own transaction, and the
    /// consumer starts at the commit. The claim takes what is due first, as any does, so a
    /// send behind a backlog hands over the backlog's first messages, and the consumer takes
    /// batch after batch while they come full.
    ///
    /// A `key` to check is checked by the store in the send's own transaction where it can
    /// ([`QueueStore::checks_app_key_at_send`]), before the send otherwise.
    async fn put_to_consumer(
        &self,
        app: &AppName,
        queue: &str,
        settings: &QueueSettings,
        new: Vec<NewMessage>,
        now: i64,
        key: Option<&KeyToCheck>,
    ) -> Result<Vec<Sent>, QueueError> {
        let due = new.iter().map(|m| m.visible_at_ms).min().unwrap_or(now);
        let taker = self.0.taker.get().filter(|_| due <= now);
        let place = match taker {
            Some(taker) => taker.reserve(app, queue).await,
            None => None,
        };
        let (Some(taker), Some(place)) = (taker, place) else {
            self.check_first(key).await?;
            let window_ms = (settings.dedup_window_secs * 1000) as i64;
            return self.put(app, queue, new, now, window_ms).await;
        };
        // From here the place is held: the hint, the send, the run's start and the pulse go
        // together, in a task of their own among the node's background work, even if the
        // caller goes away (a client that disconnects drops its request's future).
        let app_key = match key {
            Some(key) if self.0.store.checks_app_key_at_send() => Some(key.hash().to_vec()),
            Some(key) => {
                if let Err(e) = self.check_first(Some(key)).await {
                    taker.take(app, place, Vec::new(), Committed::now());
                    return Err(e);
                }
                None
            }
            None => None,
        };
        let (queues, taker, app, queue, settings) = (
            self.clone(),
            Arc::clone(taker),
            app.clone(),
            queue.to_owned(),
            settings.clone(),
        );
        let (answer, answered) = tokio::sync::oneshot::channel();
        let spawner = Arc::clone(&taker);
        spawner.spawn(Box::pin(async move {
            let handed = async {
                let handed = queues
                    .hand_over(&app, &queue, &settings, &place, new, app_key.as_deref())
                    .await;
                let (sent, claimed, on_disk, ticket) = match handed {
                    Ok(handed) => handed,
                    Err(e) => {
                        taker.take(&app, place, Vec::new(), Committed::now());
                        return Err(e);
                    }
                };
                let full = claimed.len() >= place.trigger.batch;
                let (held, committed) = tokio::sync::oneshot::channel();
                taker.take(&app, place, claimed, Committed(Some(committed)));
                // The run's settling and the hint's second half wait for the send's commit,
                // which on PostgreSQL (whose claim is answered before its commit) is answered
                // once it is on disk, as on SQLite the fsync is. The run's end hints the app
                // again.
                let on_disk = on_disk.wait().await;
                let _ = held.send(on_disk.is_ok());
                queues.hinted_after_commit(&app, ticket, "a send").await;
                // A full batch may have left more due for the consumer's other places: the
                // dispatcher looks now. Otherwise the claim took everything due; the hint, due
                // now, brings a look within a second anyway, which settles it to the claims'
                // expiry.
                if full {
                    queues.0.doorbell.notify_one();
                }
                on_disk?;
                Ok(sent)
            };
            let _ = answer.send(handed.await);
        }));
        answered
            .await
            .map_err(|_| StoreError::Task("the hand-over of a send was dropped".into()))?
    }

    /// The held part of [`Queues::put_to_consumer`]: the hint (on SQLite, only its pulse: see
    /// [`Queues::hint_or_defer`]), then the send, claiming for `place` what is due first,
    /// hidden the queue's visibility timeout or longer than the run may last; the ticket goes
    /// to [`Queues::hinted`] once the run has its deliveries. `app_key`, the store checks.
    async fn hand_over(
        &self,
        app: &AppName,
        queue: &str,
        settings: &QueueSettings,
        place: &Place,
        new: Vec<NewMessage>,
        app_key: Option<&[u8]>,
    ) -> Result<(Vec<Sent>, Vec<Delivery>, cloudlet_store::OnDisk, HintTicket), QueueError> {
        let now = self.now();
        let window_ms = (settings.dedup_window_secs * 1000) as i64;
        let hide_secs = settings
            .visibility_timeout_secs
            .max(place.min_hide_secs)
            .min(12 * 3600);
        // The hint covers the messages' due time; the claim's expiry is later. On SQLite it
        // is written after the run has started; on PostgreSQL the send writes it, first, in
        // its own round trip (see `hint_or_defer`).
        let due = new.iter().map(|m| m.visible_at_ms).min().unwrap_or(now);
        let ticket = self.hint_or_defer(app, due).await?;
        let claim = ClaimAtSend {
            leases: (0..place.trigger.batch)
                .map(|_| self.token("lease_"))
                .collect(),
            until_ms: now + (hide_secs * 1000) as i64,
        };
        let (sent, claimed, on_disk) = self
            .0
            .store
            .send_and_claim(app, queue, new, now, window_ms, claim, app_key)
            .await?;
        let claimed = claimed.into_iter().map(delivery).collect();
        Ok((sent, claimed, on_disk, ticket))
    }

    /// Claims up to `max` messages for `hide_secs` (the queue's visibility timeout when `None`).
    /// The triggers' queue is the dispatcher's alone: see [`Queues::claim_triggers`].
    pub async fn claim(
        &self,
        app: &AppName,
        queue: &str,
        max: usize,
        hide_secs: Option<u64>,
    ) -> Result<Vec<Delivery>, QueueError> {
        if is_builtin_queue(queue) {
            return Err(QueueError::NotFound(queue.to_owned()));
        }
        self.claim_from(app, queue, max, hide_secs, true).await
    }

    /// Claims for the dispatcher, which settles the app's hint to the next due time (a claim's
    /// expiry included) once it has claimed: no hint per claim. The messages stay hidden at
    /// least `min_hide_secs` (longer than the run that will take them may last), or the queue's
    /// visibility timeout if longer.
    pub async fn claim_for_dispatch(
        &self,
        app: &AppName,
        queue: &str,
        max: usize,
        min_hide_secs: u64,
    ) -> Result<Vec<Delivery>, QueueError> {
        let settings = self.settings(app, queue).await?;
        let hide = settings
            .visibility_timeout_secs
            .max(min_hide_secs)
            .min(12 * 3600);
        self.claim_from(app, queue, max, Some(hide), false).await
    }

    async fn claim_from(
        &self,
        app: &AppName,
        queue: &str,
        max: usize,
        hide_secs: Option<u64>,
        hint: bool,
    ) -> Result<Vec<Delivery>, QueueError> {
        let settings = self.settings(app, queue).await?;
        if !(1..=MAX_BATCH).contains(&max) {
            return Err(QueueError::InvalidMessage(format!(
                "claim 1 to {MAX_BATCH} messages"
            )));
        }
        let hide = hide_secs.unwrap_or(settings.visibility_timeout_secs);
        if !(1..=12 * 3600).contains(&hide) {
            return Err(QueueError::InvalidMessage(
                "a claim hides a message for 1 to 43200 seconds".into(),
            ));
        }
        let now = self.now();
        // The claim expires at `until`: the hint must not be later, or an expired claim could
        // wait for the next unrelated send.
        let until = now + (hide * 1000) as i64;
        let ticket = if hint {
            Some(self.hint(app, until).await?)
        } else {
            None
        };
        let leases = (0..max).map(|_| self.token("lease_")).collect();
        let claimed = self.0.store.claim(app, queue, leases, now, until).await?;
        if let Some(ticket) = ticket {
            self.hinted_after_commit(app, ticket, "a claim").await;
        }
        Ok(claimed.into_iter().map(delivery).collect())
    }

    /// Acknowledges a delivery: the message is done and deleted.
    pub async fn ack(&self, app: &AppName, id: &str, lease: &str) -> Result<(), QueueError> {
        if self.0.store.ack(app, id, lease).await? {
            Ok(())
        } else {
            Err(QueueError::StaleLease)
        }
    }

    /// Acknowledges deliveries in one transaction; answers, in order, whether each was (false:
    /// its lease is stale).
    pub async fn ack_many(
        &self,
        app: &AppName,
        acks: Vec<(String, String)>,
    ) -> Result<Vec<bool>, QueueError> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.0.store.ack_many(app, acks).await?)
    }

    /// Keeps a delivery hidden `hide_secs` more from now.
    pub async fn extend(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        hide_secs: u64,
    ) -> Result<(), QueueError> {
        if !(1..=12 * 3600).contains(&hide_secs) {
            return Err(QueueError::InvalidMessage(
                "a claim hides a message for 1 to 43200 seconds".into(),
            ));
        }
        let until = self.now() + (hide_secs * 1000) as i64;
        let ticket = self.hint(app, until).await?;
        let extended = self.0.store.extend(app, id, lease, until).await?;
        self.hinted_after_commit(app, ticket, "an extension").await;
        if extended {
            Ok(())
        } else {
            Err(QueueError::StaleLease)
        }
    }

    /// Fails a delivery of attempt `attempt`: it is retried after the queue's backoff, or
    /// moves to the dead letters when its attempts are spent.
    pub async fn fail(
        &self,
        app: &AppName,
        queue: &str,
        id: &str,
        lease: &str,
        attempt: i64,
        error: &str,
    ) -> Result<Failed, QueueError> {
        let settings = self.settings(app, queue).await?;
        let now = self.now();
        let retry_at = now + settings.backoff_ms(attempt, &*self.0.random);
        self.settle_failure(app, id, lease, error, now, Some(retry_at))
            .await
    }

    /// Fails a delivery for good: the failure will not pass on a retry, so the message moves
    /// to the dead letters at once, whatever attempts it has left.
    pub async fn give_up(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        error: &str,
    ) -> Result<Failed, QueueError> {
        let now = self.now();
        self.settle_failure(app, id, lease, error, now, None).await
    }

    async fn settle_failure(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        error: &str,
        now: i64,
        retry_at: Option<i64>,
    ) -> Result<Failed, QueueError> {
        // A retry makes work due; a message given up makes none.
        let ticket = match retry_at {
            Some(at) => Some(self.hint(app, at).await?),
            None => None,
        };
        // NUL can not be stored as text on PostgreSQL; the error is a message, not data.
        let error: String = error
            .chars()
            .take(2000)
            .map(|c| if c == '\0' { '\u{fffd}' } else { c })
            .collect();
        let failed = self
            .0
            .store
            .fail(app, id, lease, &error, now, retry_at)
            .await?;
        if let Some(ticket) = ticket {
            self.hinted_after_commit(app, ticket, "a failure").await;
        }
        match failed {
            Failed::Stale => Err(QueueError::StaleLease),
            outcome => {
                self.0.doorbell.notify_one();
                Ok(outcome)
            }
        }
    }

    /// Messages of a queue in one state, by id.
    pub async fn messages(
        &self,
        app: &AppName,
        queue: &str,
        which: Which,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageView>, QueueError> {
        self.settings(app, queue).await?;
        let rows = self
            .0
            .store
            .messages(
                app,
                queue,
                which.state(),
                after,
                limit.clamp(1, 1000),
                MAX_PAGE_BYTES,
            )
            .await?;
        Ok(rows.into_iter().map(message_view).collect())
    }

    /// Moves dead letters back to the queue (those of `ids`, or all); returns how many.
    pub async fn replay(
        &self,
        app: &AppName,
        queue: &str,
        ids: Option<Vec<String>>,
    ) -> Result<u64, QueueError> {
        self.settings(app, queue).await?;
        let now = self.now();
        let ticket = self.hint(app, now).await?;
        let moved = self.0.store.replay(app, queue, ids, now).await?;
        self.hinted_after_commit(app, ticket, "a replay").await;
        self.0.doorbell.notify_one();
        Ok(moved)
    }

    /// Deletes a queue's messages in one state, or all of them; returns how many.
    pub async fn purge(
        &self,
        app: &AppName,
        queue: &str,
        which: Option<Which>,
    ) -> Result<u64, QueueError> {
        self.settings(app, queue).await?;
        Ok(self
            .0
            .store
            .purge(app, queue, which.map(Which::state))
            .await?)
    }

    /// The message a live idempotency key of `queue` names, if any.
    pub(crate) async fn keyed(
        &self,
        app: &AppName,
        queue: &str,
        key: &str,
    ) -> Result<Option<String>, QueueError> {
        Ok(self.0.store.keyed(app, queue, key, self.now()).await?)
    }

    /// The earliest time a message of the app's `queues` becomes claimable.
    pub async fn next_due(
        &self,
        app: &AppName,
        queues: Vec<String>,
    ) -> Result<Option<i64>, QueueError> {
        Ok(self.0.store.next_due(app, queues).await?)
    }

    /// Deletes what the app's queues no longer keep: dead letters and undelivered messages past
    /// each queue's own retention, and expired keys.
    pub async fn sweep(&self, app: &AppName) -> Result<u64, QueueError> {
        let mut queues: Vec<(String, QueueSettings)> = self
            .declared(app)
            .await?
            .iter()
            .map(|(name, settings)| (name.clone(), settings.clone()))
            .collect();
        queues.push((TRIGGER_QUEUE.to_owned(), self.0.triggers.clone()));
        queues.push((MESSAGE_QUEUE.to_owned(), self.0.messages.clone()));
        queues.push((PAYMENT_QUEUE.to_owned(), self.0.payments.clone()));
        let now = self.now();
        let mut swept = 0;
        for (queue, settings) in queues {
            let before = now - (settings.retention_secs * 1000) as i64;
            swept += self
                .0
                .store
                .sweep_queues(app, &queue, now, before, before)
                .await?;
        }
        Ok(swept)
    }
}

fn view_of(row: QueueRow, counts: QueueStats) -> QueueView {
    QueueView {
        settings: serde_json::from_str(&row.settings).unwrap_or_default(),
        name: row.name,
        created_at: time(row.created_at_ms),
        ready: counts.ready,
        delayed: counts.delayed,
        in_flight: counts.in_flight,
        dead: counts.dead,
    }
}

fn delivery(claimed: Claimed) -> Delivery {
    Delivery {
        payload: payload_of(claimed.payload),
        id: claimed.id,
        attempt: claimed.attempt,
        max_attempts: claimed.max_attempts,
        lease: claimed.lease,
        sent_at: time(claimed.created_at_ms),
        depth: u8::try_from(claimed.depth).unwrap_or(u8::MAX),
    }
}

fn message_view(row: MessageRow) -> MessageView {
    MessageView {
        payload: payload_of(row.payload),
        id: row.id,
        state: state_name(row.state),
        attempt: row.attempt,
        max_attempts: row.max_attempts,
        visible_at: time(row.visible_at_ms),
        last_error: row.last_error,
        sent_at: time(row.created_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_a_fifth_of_jitter() {
        let settings = QueueSettings {
            backoff_secs: 2,
            max_backoff_secs: 10,
            ..QueueSettings::default()
        };
        let random = SeededRandom::new(9);
        for (attempt, nominal) in [(1, 2000), (2, 4000), (3, 8000), (4, 10_000), (40, 10_000)] {
            for _ in 0..50 {
                let delay = settings.backoff_ms(attempt, &random);
                assert!(
                    (nominal * 8 / 10..=nominal * 12 / 10).contains(&delay),
                    "attempt {attempt}: {delay} ms"
                );
            }
        }
    }

    /// Takes every send for one consumer and keeps what the sends claimed for it.
    #[derive(Default)]
    struct Keeper(Mutex<Vec<Delivery>>);

    #[async_trait::async_trait]
    impl Taker for Keeper {
        async fn reserve(&self, _: &AppName, queue: &str) -> Option<Place> {
            Some(Place {
                consumer: "worker".into(),
                trigger: crate::functions::QueueTrigger {
                    queue: queue.into(),
                    batch: 1,
                    concurrency: 1,
                },
                min_hide_secs: 30,
                held: Box::new(()),
            })
        }
        fn take(&self, _: &AppName, _: Place, deliveries: Vec<Delivery>, _: Committed) {
            lock(&self.0).extend(deliveries);
        }
        fn spawn(&self, hand_over: futures_util::future::BoxFuture<'static, ()>) {
            tokio::spawn(hand_over);
        }
    }

    type OnSqlite = (
        tempfile::TempDir,
        Arc<cloudlet_store::sqlite::SqliteSystemStore>,
        Arc<cloudlet_store::sqlite::SqliteTenants>,
        Arc<crate::clock::ManualClock>,
        Queues,
    );

    /// Queues on SQLite in a temporary directory, their clock at 1,000 ms.
    fn on_sqlite() -> OnSqlite {
        use cloudlet_store::Durability;
        use cloudlet_store::sqlite::{SqliteSystemStore, SqliteTenants, TenantPoolOptions};

        let dir = tempfile::tempdir().unwrap();
        let apps = dir.path().join("apps");
        std::fs::create_dir(&apps).unwrap();
        let system = Arc::new(
            SqliteSystemStore::open(&dir.path().join("system.db"), Durability::Full).unwrap(),
        );
        let options = TenantPoolOptions {
            max_open: 2,
            readers: 1,
            durability: Durability::Full,
        };
        let tenants = Arc::new(SqliteTenants::open(apps, options).unwrap());
        let clock = Arc::new(crate::clock::ManualClock::at(Timestamp::from_unix_ms(
            1_000,
        )));
        let queues = Queues::new(
            tenants.clone(),
            system.clone(),
            clock.clone(),
            Arc::new(SeededRandom::new(3)),
            30,
            PaymentBackoff::default(),
        );
        (dir, system, tenants, clock, queues)
    }

    /// App `name`, made in `system` and provisioned in `tenants`.
    async fn with_app(
        system: &dyn cloudlet_store::SystemStore,
        tenants: &dyn cloudlet_store::TenantStore,
        name: &str,
    ) -> AppName {
        let row = cloudlet_store::AppRow {
            name: name.into(),
            created_at_ms: 1,
            secret_key_hash: vec![1; 32],
            secret_key_hint: "cls_abcd".into(),
            secret_key_created_at_ms: 1,
        };
        let key = cloudlet_store::SigningKeyRow {
            kid: "k1".into(),
            secret: vec![7; 32],
            created_at_ms: 1,
        };
        system.insert_app(row, key).await.unwrap();
        let app = AppName::parse(name).unwrap();
        tenants.provision(&app).await.unwrap();
        app
    }

    /// Two nodes on one PostgreSQL database: B looks at the app between A's hint and A's write,
    /// finds nothing due, and settles the hint after the write committed. A's pulse can not
    /// see B's settle, so A writes the hint again after its write, and the work stays hinted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_settle_by_another_node_between_a_hint_and_its_write_leaves_the_work_hinted() {
        use cloudlet_store::postgres::testing::TestServer;
        use cloudlet_store::postgres::{Postgres, PostgresOptions};
        use cloudlet_store::{Durability, NewMessage};

        let url = TestServer::shared().database();
        let node = || async {
            let store = Arc::new(
                Postgres::open(PostgresOptions {
                    url: url.clone(),
                    pool_size: 4,
                    wait: std::time::Duration::from_secs(5),
                    durability: Durability::Full,
                    max_open: 8,
                })
                .await
                .unwrap(),
            );
            store.claim_shared_node().await.unwrap();
            let queues = Queues::new(
                store.clone(),
                store.clone(),
                Arc::new(crate::clock::ManualClock::at(Timestamp::from_unix_ms(
                    1_000,
                ))),
                Arc::new(SeededRandom::new(5)),
                30,
                PaymentBackoff::default(),
            );
            (store, queues)
        };
        let (a, queues_a) = node().await;
        let (b, queues_b) = node().await;
        let app = with_app(&*a, &*a, "relay").await;
        queues_a
            .declare(&app, "work", QueueSettings::default())
            .await
            .unwrap();
        let due = |store: Arc<Postgres>| async move { store.due_apps(i64::MAX, 10).await.unwrap() };
        // Nothing is due yet (declaring hints nothing, or whatever it hinted is settled).
        for stale in due(b.clone()).await {
            let pulse = queues_b.pulse(&stale.app);
            assert!(
                queues_b
                    .settle(&stale.app, stale.version, None, pulse)
                    .await
                    .unwrap()
            );
        }

        // A hints, B looks before A's write and finds nothing.
        let ticket = queues_a.hint(&app, 1_000).await.unwrap();
        let seen = due(b.clone()).await;
        assert_eq!(seen.len(), 1);
        let pulse = queues_b.pulse(&app);
        let next = QueueStore::next_due(&*b, &app, vec!["work".into()])
            .await
            .unwrap();
        assert_eq!(next, None, "B looked before the write");
        // A's write commits; then B settles what it saw; then A's hint's second half.
        let message = NewMessage {
            id: "msg_1".into(),
            payload: "{}".into(),
            key: None,
            visible_at_ms: 1_000,
            max_attempts: 5,
            depth: 0,
        };
        QueueStore::send(&*a, &app, "work", vec![message], 1_000, 60_000)
            .await
            .unwrap();
        assert!(
            queues_b
                .settle(&app, seen[0].version, next, pulse)
                .await
                .unwrap(),
            "B's settle went through: it could not know of the write"
        );
        queues_a.hinted(&app, ticket).await.unwrap();
        let hinted: Vec<AppName> = due(b.clone()).await.into_iter().map(|d| d.app).collect();
        assert_eq!(hinted, [app], "the message is hinted, not stranded");
    }

    /// On SQLite a send handed to its consumer leaves its hint's write until the run has its
    /// messages; should that write fail, the send, committed and running, is not failed for
    /// it, where a hint before its write fails its write.
    #[tokio::test]
    async fn a_handed_over_send_hints_after_its_run_starts_and_a_failed_hint_fails_nothing() {
        let (_dir, system, tenants, _clock, queues) = on_sqlite();
        let keeper = Arc::new(Keeper::default());
        queues.set_taker(keeper.clone());
        let app = with_app(&*system, &*tenants, "shop").await;
        queues
            .declare(&app, "work", QueueSettings::default())
            .await
            .unwrap();
        let hinted_at = || async {
            system
                .due_apps(i64::MAX, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| d.at_ms)
                .collect::<Vec<_>>()
        };
        let send = |n: u32| {
            let message = Outgoing {
                payload: json!({ "n": n }),
                delay_secs: None,
                key: None,
            };
            queues.send(&app, "work", vec![message])
        };

        // Deferred, the hint is not written before the send: only by `hinted`, after.
        let ticket = queues.hint_or_defer(&app, 5_000).await.unwrap();
        assert_eq!(
            hinted_at().await,
            Vec::<i64>::new(),
            "deferred: not written yet"
        );
        queues.hinted(&app, ticket).await.unwrap();
        assert_eq!(hinted_at().await, [5_000]);

        // A send handed over: claimed for the consumer in its transaction, and hinted.
        send(1).await.unwrap();
        assert_eq!(lock(&keeper.0).len(), 1);
        assert_eq!(hinted_at().await, [1_000]);

        // The system database refuses writes from now on: a hint before its write fails it,
        // the hint after a handed-over send fails nothing.
        system.close().await;
        assert!(queues.hint(&app, 2_000).await.is_err());
        send(2).await.unwrap();
        let taken: Vec<Json> = lock(&keeper.0)
            .iter()
            .map(|d| serde_json::from_str(d.payload.get()).unwrap())
            .collect();
        assert_eq!(taken, [json!({ "n": 1 }), json!({ "n": 2 })]);
    }

    /// Cloudlet's own queues are swept as declared ones are: a payment check left waiting past
    /// its queue's retention goes, and its key with it.
    #[tokio::test]
    async fn a_sweep_takes_what_cloudlets_own_queues_keep_no_longer() {
        use cloudlet_store::NewMessage;

        let (_dir, system, tenants, clock, queues) = on_sqlite();
        let app = with_app(&*system, &*tenants, "shop").await;
        for (queue, id) in [(PAYMENT_QUEUE, "msg_p"), (MESSAGE_QUEUE, "msg_m")] {
            let check = NewMessage {
                id: id.into(),
                payload: "{}".into(),
                key: Some(format!("{id}:key")),
                visible_at_ms: i64::MAX / 2,
                max_attempts: 5,
                depth: 0,
            };
            QueueStore::send(&*tenants, &app, queue, vec![check], 1_000, i64::MAX / 2)
                .await
                .unwrap();
        }
        clock.advance_ms(TRIGGER_RETENTION_SECS as i64 * 1000 + 1_000);
        assert_eq!(queues.sweep(&app).await.unwrap(), 2);
        for queue in [PAYMENT_QUEUE, MESSAGE_QUEUE] {
            let left = QueueStore::messages(
                &*tenants,
                &app,
                queue,
                MessageState::Waiting,
                None,
                10,
                usize::MAX,
            )
            .await
            .unwrap();
            assert!(left.is_empty(), "{queue}: {left:?}");
        }
    }

    #[test]
    fn queue_names_and_settings_are_checked() {
        assert!(valid_queue_name("emails"));
        assert!(valid_queue_name("a-b_c9"));
        for bad in ["", "9a", "A", "a b", "a/b", &"a".repeat(65)] {
            assert!(!valid_queue_name(bad), "{bad:?}");
        }
        assert!(QueueSettings::default().check().is_ok());
        let zero = QueueSettings {
            max_attempts: 0,
            ..QueueSettings::default()
        };
        assert!(zero.check().is_err());
        let inverted = QueueSettings {
            backoff_secs: 60,
            max_backoff_secs: 10,
            ..QueueSettings::default()
        };
        assert!(inverted.check().is_err());
    }
}
