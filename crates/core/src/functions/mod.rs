//! Functions: deploying JavaScript as immutable versions, rolling back, per-app environment
//! secrets, invoking a version under limits, and the invocation log.
//!
//! The engine that compiles and runs code is behind [`Engine`], and what a running function may
//! ask of the server (`ctx.db`, `fetch`) is a [`host::Capability`]; both are supplied by the
//! composition root, so this module knows neither QuickJS nor HTTP. It owns the rules: names,
//! sizes, limits within the instance's maxima, who may call what, what `ctx` carries, and how
//! each ending is reported.

pub mod host;
pub mod http;
mod logs;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use cloudlet_store::{
    AppName, FunctionLogRow, FunctionStore, FunctionVersionRow, LogQuery, ScheduleRow, StoreError,
    SystemStore,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json, json};
use sha2::Digest;
use tokio::sync::{Semaphore, broadcast};

use crate::access::Caller;
use crate::clock::{Clock, Timestamp};
use crate::data::Operation;
use crate::random::Random;
use crate::sealing::Sealer;
pub use host::{CallScope, Capabilities, Capability, HostFailure, HostReply, ScopedCalls};
pub use logs::LogWriter;

/// A compile error, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompileFailure {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// One run of compiled code.
#[derive(Debug, Clone)]
pub struct Run {
    /// Whose code it is: the engine keeps apps apart.
    pub app: AppName,
    /// Names the code (app, function, version): warm runtimes are kept per key.
    pub key: String,
    /// The compiled code, as the engine produced it.
    pub bundle: Arc<str>,
    /// JSON handed through as it came, never taken apart on the way.
    pub event: Box<RawValue>,
    pub context: Box<RawValue>,
    pub limits: RunLimits,
    pub seed: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    pub memory_bytes: usize,
    pub stack_bytes: usize,
    pub timeout_ms: u64,
    pub max_result_bytes: usize,
    pub max_log_lines: usize,
}

/// What a function's `ctx` is made from (besides its methods), written straight to JSON.
#[derive(Serialize)]
struct Context<'a> {
    app: &'a str,
    function: &'a str,
    version: i64,
    request_id: &'a str,
    trigger: &'a str,
    auth: Option<AuthContext<'a>>,
    env: &'a Map<String, Json>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum AuthContext<'a> {
    User {
        id: &'a str,
        provider: &'a str,
        openid: Option<&'a str>,
        unionid: Option<&'a str>,
    },
    Admin {
        admin: bool,
    },
}

#[derive(Debug, Clone)]
pub enum RunOutcome {
    Ok(Box<RawValue>),
    Error { message: String, stack: String },
    Timeout,
    MemoryLimit,
    ResultTooLarge(usize),
}

/// A console line of a run.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    pub level: String,
    pub message: String,
    /// When it was written, in Unix microseconds (the function's own clock).
    pub at_us: i64,
}

#[derive(Debug, Clone)]
pub struct Ran {
    pub outcome: RunOutcome,
    pub logs: Vec<ConsoleLine>,
    pub logs_dropped: usize,
    pub memory_bytes: usize,
    pub cold: bool,
    pub micros: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("the function engine failed: {0}")]
pub struct EngineError(pub String);

/// What runs functions: the engine, and the capabilities their host calls reach.
pub struct Execution {
    pub engine: Arc<dyn Engine>,
    pub capabilities: Arc<Capabilities>,
}

/// Compiles and runs JavaScript.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Compiles `app`'s files (a compile counts as one of the app's runs, for fairness); the
    /// outer error is the engine's, the inner one the code's.
    async fn compile(
        &self,
        app: &AppName,
        files: BTreeMap<String, String>,
        entry: String,
    ) -> Result<Result<String, CompileFailure>, EngineError>;
    /// Runs code; its host calls are answered by `host`, on the invocation's behalf.
    async fn run(&self, run: Run, host: Arc<ScopedCalls>) -> Result<Ran, EngineError>;
}

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("no function named {0:?}")]
    NotFound(String),
    #[error("no version {0} of this function")]
    VersionNotFound(i64),
    #[error("invalid function: {0}")]
    Invalid(String),
    #[error("{0:?}")]
    Syntax(CompileFailure),
    #[error("this function needs an access token")]
    Unauthenticated,
    #[error(
        "this function is run by its triggers or schedules, not called: deploy it with \"callable\": true to let users call it"
    )]
    NotCallable,
    /// The function threw: its message, for the caller.
    #[error("{0}")]
    Failed(String),
    #[error("the function ran out of time")]
    Timeout,
    #[error("the function ran out of memory")]
    MemoryLimit,
    #[error("the function's result is {0} bytes, over the limit")]
    ResultTooLarge(usize),
    #[error("too many invocations of this app's functions at once")]
    Overloaded,
    /// An HTTP function answered something that is not an HTTP response.
    #[error("the function's answer is not a valid HTTP response: {0}")]
    InvalidResponse(String),
    #[error("invalid environment: {0}")]
    InvalidEnv(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Instance-wide defaults and maxima (the `[functions]` settings).
#[derive(Debug, Clone, Copy)]
pub struct FunctionLimits {
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    pub stack_bytes: usize,
    pub max_result_bytes: usize,
    pub max_log_lines: usize,
    /// Invocations of one app running or waiting at once; more answer `Overloaded`.
    pub max_concurrent_per_app: usize,
    /// Invocations of one app handed to the engine at once (the rest wait); the engine keeps
    /// one busy app from taking every worker from the others.
    pub max_running_per_app: usize,
    /// Log entries kept per app (the newest).
    pub log_retention: i64,
}

impl Default for FunctionLimits {
    fn default() -> Self {
        FunctionLimits {
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            default_memory_mb: 64,
            max_memory_mb: 512,
            stack_bytes: 512 * 1024,
            max_result_bytes: 6 * 1024 * 1024,
            max_log_lines: 100,
            max_concurrent_per_app: 32,
            max_running_per_app: 3,
            log_retention: 10_000,
        }
    }
}

const MAX_FILES: usize = 64;
const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// The largest deploy request: its sources as JSON strings (escaping can grow them) and the
/// settings around them.
pub const MAX_DEPLOY_BYTES: usize = 4 * MAX_SOURCE_BYTES + 64 * 1024;
const MAX_ENV_VALUE: usize = 16 * 1024;
const MAX_ENV_VARS: usize = 100;

/// `PUT …/functions/{name}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub source: Option<String>,
    pub files: Option<BTreeMap<String, String>>,
    pub entry: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// Whether end users may call it (`POST …/functions/{name}`, `…/http/{name}`). Left out:
    /// yes, unless it declares triggers or schedules, whose events a caller could forge.
    pub callable: Option<bool>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// Invocations of this function in at once (running or waiting); more answer
    /// `Overloaded`. Only the app's limit when left out.
    pub max_concurrency: Option<usize>,
    /// What runs the function without a caller: data events after they commit, queues.
    #[serde(default)]
    pub triggers: Vec<TriggerDef>,
    /// Times that run the function.
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// Only say whether deploying would change anything ([`Functions::plan`]).
    #[serde(default)]
    pub dry_run: bool,
}

/// What deploying would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeployPlan {
    Create,
    Update,
    Unchanged,
}

/// Runs a function at the times a cron pattern names, in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Croner syntax: `min hour day month weekday`, an optional leading seconds field, and
    /// `L`, `#`, `W` and nicknames such as `@daily`.
    pub cron: String,
    /// An IANA time zone (`Asia/Shanghai`); UTC when left out.
    #[serde(default = "utc")]
    pub timezone: String,
    /// Handed to the function as the event's `data`.
    #[serde(default)]
    pub data: Json,
}

fn utc() -> String {
    "UTC".into()
}

/// The most schedules one function may declare.
const MAX_SCHEDULES: usize = 8;
/// The largest `data` a schedule passes its function, as JSON: every tick copies it into the
/// triggers' queue, and the scheduler reads it from the node's shared system database.
const MAX_SCHEDULE_DATA: usize = 16 * 1024;
pub use cloudlet_store::MAX_FUNCTIONS_PER_APP;

/// How late a schedule's tick may run and still be followed by every tick after it.
const CATCH_UP_MS: i64 = 60_000;

/// A schedule's tick that is due (see [`Functions::due_ticks`]).
#[derive(Debug, Clone)]
pub struct Tick {
    pub row: ScheduleRow,
    /// What the run gets: `{cron, timezone, scheduled_at, data}`.
    pub event: Json,
    /// Where the schedule goes once this tick's run is enqueued.
    pub next_ms: i64,
}

impl Tick {
    /// The tick's idempotency key on the triggers' queue: the same on every node and after a
    /// restart, so that it is enqueued once.
    pub fn key(&self) -> String {
        format!(
            "schedule:{}:{}:{}",
            self.row.function, self.row.index, self.row.next_at_ms
        )
    }
}

impl Schedule {
    /// Where the schedule goes once its tick at `tick_ms` is enqueued at `now_ms`: the tick
    /// after it if it is at most [`CATCH_UP_MS`] late, else the first after now (`i64::MAX`
    /// for none).
    pub fn moves_on_from(&self, tick_ms: i64, now_ms: i64) -> i64 {
        let from = if now_ms - tick_ms <= CATCH_UP_MS {
            tick_ms
        } else {
            now_ms
        };
        self.next_after(from).ok().flatten().unwrap_or(i64::MAX)
    }

    /// The first time after `after` (Unix milliseconds) the schedule names; `None` if it names
    /// none (a pattern for a date that never comes).
    pub fn next_after(&self, after: i64) -> Result<Option<i64>, String> {
        let cron: croner::Cron = self
            .cron
            .parse()
            .map_err(|e| format!("cron {:?}: {e}", self.cron))?;
        let zone = jiff::tz::TimeZone::get(&self.timezone)
            .map_err(|e| format!("time zone {:?}: {e}", self.timezone))?;
        let start = jiff::Timestamp::from_millisecond(after)
            .map_err(|e| e.to_string())?
            .to_zoned(zone);
        match cron.find_next_occurrence(&start, false) {
            Ok(next) => Ok(Some(next.timestamp().as_millisecond())),
            Err(_) => Ok(None),
        }
    }
}

/// Runs a function after writes to a collection commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataTrigger {
    pub collection: String,
    /// Which writes; all three when left out.
    #[serde(default = "all_operations")]
    pub on: Vec<Operation>,
}

/// Runs a function on the messages of a queue, `batch` at a time, at most `concurrency`
/// batches at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueTrigger {
    pub queue: String,
    #[serde(default = "one")]
    pub batch: usize,
    #[serde(default = "one")]
    pub concurrency: usize,
}

fn one() -> usize {
    1
}

/// The most messages a queue trigger takes at once, and the most batches it runs at once.
pub const MAX_QUEUE_BATCH: usize = 100;
pub const MAX_QUEUE_CONCURRENCY: usize = 64;

/// An event of users' accounts a function may be triggered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AuthEvent {
    /// A new user: a first login through a platform, a sign-up, an anonymous or dev login.
    UserCreated,
    /// A user deleted their account.
    UserDeleted,
}

impl AuthEvent {
    /// The event's kind in the event log.
    pub fn kind(self) -> &'static str {
        match self {
            AuthEvent::UserCreated => cloudlet_store::USER_CREATED,
            AuthEvent::UserDeleted => cloudlet_store::USER_DELETED,
        }
    }
}

/// Runs a function after events of users' accounts: `{"auth": ["user_created"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AuthTrigger {
    pub auth: Vec<AuthEvent>,
}

/// An event of a bucket's files a function may be triggered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FileEvent {
    /// A file was uploaded (its upload completed).
    Upload,
    /// A file was deleted, one by one (not with its bucket, its owner or its app).
    Delete,
}

impl FileEvent {
    /// The event's kind in the event log.
    pub fn kind(self) -> &'static str {
        match self {
            FileEvent::Upload => cloudlet_store::FILE_UPLOADED,
            FileEvent::Delete => cloudlet_store::FILE_DELETED,
        }
    }
}

fn all_file_events() -> Vec<FileEvent> {
    vec![FileEvent::Upload, FileEvent::Delete]
}

/// Runs a function after files of a bucket are uploaded or deleted:
/// `{"bucket": "photos", "on": ["upload"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileTrigger {
    pub bucket: String,
    /// Which events; both when left out.
    #[serde(default = "all_file_events")]
    pub on: Vec<FileEvent>,
}

/// An event of the app's realtime sockets a function may be triggered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RealtimeEvent {
    /// A socket of a user (or an anonymous one) was opened and authenticated.
    Connect,
    /// It closed, whoever closed it.
    Disconnect,
}

impl RealtimeEvent {
    /// The event's kind in the event log.
    pub fn kind(self) -> &'static str {
        match self {
            RealtimeEvent::Connect => cloudlet_store::REALTIME_CONNECTED,
            RealtimeEvent::Disconnect => cloudlet_store::REALTIME_DISCONNECTED,
        }
    }
}

/// Runs a function when sockets open or close: `{"realtime": ["connect", "disconnect"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RealtimeTrigger {
    pub realtime: Vec<RealtimeEvent>,
}

/// A payment event a function may be triggered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PayEvent {
    /// A client asks for an order: the function decides its price (`pay.before`, run at once,
    /// never logged).
    Before,
    /// An order was paid (once per order).
    Paid,
    /// A refund succeeded (once per refund).
    Refunded,
    /// A refund failed at the platform; its amount may be refunded again.
    RefundFailed,
    /// An unpaid order was closed (expired, or closed by an admin).
    Closed,
}

impl PayEvent {
    /// The event's kind in the event log.
    pub fn kind(self) -> &'static str {
        match self {
            PayEvent::Before => "pay.before",
            PayEvent::Paid => cloudlet_store::PAY_PAID,
            PayEvent::Refunded => cloudlet_store::PAY_REFUNDED,
            PayEvent::RefundFailed => cloudlet_store::PAY_REFUND_FAILED,
            PayEvent::Closed => cloudlet_store::PAY_CLOSED,
        }
    }

    /// The event of a kind of the log.
    pub fn of_kind(kind: &str) -> Option<Self> {
        [
            PayEvent::Before,
            PayEvent::Paid,
            PayEvent::Refunded,
            PayEvent::RefundFailed,
            PayEvent::Closed,
        ]
        .into_iter()
        .find(|e| e.kind() == kind)
    }
}

/// Runs a function on payment events: `{"pay": ["paid", "refunded"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PayTrigger {
    pub pay: Vec<PayEvent>,
}

/// One trigger of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum TriggerDef {
    Data(DataTrigger),
    Queue(QueueTrigger),
    Auth(AuthTrigger),
    Files(FileTrigger),
    Realtime(RealtimeTrigger),
    Pay(PayTrigger),
}

fn all_operations() -> Vec<Operation> {
    vec![Operation::Create, Operation::Update, Operation::Delete]
}

/// The most triggers one function may declare.
const MAX_TRIGGERS: usize = 16;
/// A triggered function's writes trigger others at most this deep.
pub const MAX_TRIGGER_DEPTH: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settings {
    pub public: bool,
    /// As deployed ([`Deploy::callable`]); see [`Settings::callable`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callable: Option<bool>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<TriggerDef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<Schedule>,
}

impl Settings {
    /// Whether end users may call the function: as deployed, or else unless something else
    /// (a trigger, a schedule) runs it. Such a function trusts its event, which a caller
    /// would make up.
    pub fn callable(&self) -> bool {
        self.callable
            .unwrap_or(self.triggers.is_empty() && self.schedules.is_empty())
    }
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionInfo {
    pub name: String,
    pub version: i64,
    #[serde(flatten)]
    pub settings: Settings,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionInfo {
    pub version: i64,
    pub created_at: Timestamp,
    pub active: bool,
}

/// One invocation: of what, for whom, why.
#[derive(Debug, Clone, Copy)]
pub struct Invoke<'a> {
    pub app: &'a AppName,
    pub name: &'a str,
    pub caller: &'a Caller,
    pub request_id: &'a str,
    pub trigger: Trigger,
}

/// Who or what started an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `POST /v1/apps/{app}/functions/{name}`.
    Call,
    /// `/v1/apps/{app}/http/{name}/…`.
    Http,
    /// A data event.
    Data,
    /// An event of users' accounts.
    Auth,
    /// An event of a bucket's files.
    Files,
    /// A realtime socket opened or closed.
    Realtime,
    /// A payment event.
    Pay,
    /// A cron schedule.
    Schedule,
    /// Messages of a queue.
    Queue,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Call => "call",
            Trigger::Http => "http",
            Trigger::Data => "data",
            Trigger::Auth => "auth",
            Trigger::Files => "files",
            Trigger::Realtime => "realtime",
            Trigger::Pay => "pay",
            Trigger::Schedule => "schedule",
            Trigger::Queue => "queue",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    pub id: i64,
    pub at: Timestamp,
    pub request_id: String,
    pub function: String,
    pub version: i64,
    pub trigger: String,
    pub outcome: String,
    pub micros: i64,
    pub memory_bytes: i64,
    pub cold: bool,
    #[serde(flatten)]
    pub detail: Json,
}

#[derive(Clone)]
pub struct Functions(Arc<Inner>);

struct Inner {
    store: Arc<dyn FunctionStore>,
    /// Where schedules live: the instance-wide system database, so that due runs are found
    /// without opening every app.
    system: Arc<dyn SystemStore>,
    engine: Arc<dyn Engine>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    sealer: Sealer,
    limits: FunctionLimits,
    /// What running functions may ask of the server.
    capabilities: Arc<Capabilities>,
    running: Mutex<HashMap<AppName, Arc<Admission>>>,
    /// Per function, for functions with a `max_concurrency` (their `turns` are unused).
    running_functions: Mutex<HashMap<(AppName, String), Arc<Admission>>>,
    /// Active versions and unsealed environments, loaded on first use and forgotten on every
    /// change made through this service (and when an app is deleted).
    active: Mutex<ActiveCache>,
    envs: Mutex<HashMap<AppName, Arc<Map<String, Json>>>>,
    /// Each app's functions with triggers.
    triggered: Mutex<HashMap<AppName, Triggered>>,
    /// Bumped by every forgetting, so that a load that raced with a change is not cached.
    generation: AtomicU64,
    /// The other nodes' doorbell, set by the composition root.
    bell: std::sync::OnceLock<Arc<dyn cloudlet_store::Bell>>,
    /// Where runs put their log entries, for the [`LogWriter`].
    log: logs::LogQueue,
}

/// An app's functions that have triggers, with their triggers.
type Triggered = Arc<Vec<(String, Vec<TriggerDef>)>>;

/// The most bytes of code the active versions in memory hold, all apps together. Past it,
/// versions are dropped (whichever come first) and read again on their next call: an app with
/// thousands of large functions must not take the server's memory.
const MAX_ACTIVE_BYTES: usize = 256 * 1024 * 1024;

/// The active versions in memory, within [`MAX_ACTIVE_BYTES`] of code, the least recently
/// used dropped first.
#[derive(Default)]
struct ActiveCache {
    versions: HashMap<(AppName, String), (Arc<Active>, std::time::Instant)>,
    bytes: usize,
}

impl ActiveCache {
    fn get(&mut self, key: &(AppName, String)) -> Option<Arc<Active>> {
        let (active, used) = self.versions.get_mut(key)?;
        *used = std::time::Instant::now();
        Some(Arc::clone(active))
    }

    /// Keeps `active`, dropping the least recently used others first if its code would not
    /// fit.
    fn insert(&mut self, key: (AppName, String), active: Arc<Active>) {
        if let Some((old, _)) = self.versions.remove(&key) {
            self.bytes -= old.bundle.len();
        }
        while self.bytes + active.bundle.len() > MAX_ACTIVE_BYTES {
            let Some(oldest) = self
                .versions
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((dropped, _)) = self.versions.remove(&oldest) {
                self.bytes -= dropped.bundle.len();
            }
        }
        self.bytes += active.bundle.len();
        self.versions
            .insert(key, (active, std::time::Instant::now()));
    }

    fn remove(&mut self, app: &AppName, name: &str) {
        if let Some((old, _)) = self.versions.remove(&(app.to_owned(), name.to_owned())) {
            self.bytes -= old.bundle.len();
        }
    }

    fn forget_app(&mut self, app: &AppName) {
        self.versions.retain(|(a, _), _| a != app);
        self.bytes = self.versions.values().map(|(v, _)| v.bundle.len()).sum();
    }

    fn clear(&mut self) {
        self.versions.clear();
        self.bytes = 0;
    }
}

/// The active version of a function, as invocations need it.
struct Active {
    version: i64,
    settings: Settings,
    bundle: Arc<str>,
    /// Names this code in the workers, which keep runtimes and bytecode by it. The version
    /// alone is not enough: a deleted function's numbers start again, and a deleted app's name
    /// may be taken again, and neither may ever meet the old code or its module state.
    key: String,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An app's invocations: how many are in (running or waiting), and the turns to run.
struct Admission {
    inside: AtomicUsize,
    turns: Semaphore,
}

/// Holds an app's count up while an invocation waits and runs.
struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.inside.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Functions {
    /// The service, and the writer of its invocation logs, which the caller runs.
    pub fn new(
        store: Arc<dyn FunctionStore>,
        system: Arc<dyn SystemStore>,
        execution: Execution,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        sealer: Sealer,
        limits: FunctionLimits,
    ) -> (Self, LogWriter) {
        let Execution {
            engine,
            capabilities,
        } = execution;
        let (log, writer) = logs::LogQueue::new(Arc::clone(&store), limits.log_retention);
        let functions = Functions(Arc::new(Inner {
            store,
            system,
            engine,
            clock,
            random,
            sealer,
            limits,
            capabilities,
            running: Mutex::new(HashMap::new()),
            running_functions: Mutex::new(HashMap::new()),
            active: Mutex::new(ActiveCache::default()),
            envs: Mutex::new(HashMap::new()),
            triggered: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            bell: std::sync::OnceLock::new(),
            log,
        }));
        (functions, writer)
    }

    pub fn limits(&self) -> &FunctionLimits {
        &self.0.limits
    }

    /// Rings the other nodes on every change of an app's functions. Set once.
    pub fn set_bell(&self, bell: Arc<dyn cloudlet_store::Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// Tells the other nodes that the app's functions changed.
    fn ring(&self, app: &AppName) {
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, cloudlet_store::Topic::Functions);
        }
    }

    /// Drops what is cached of the app's functions (versions, environments, triggers): another
    /// node changed them.
    pub fn heard(&self, app: &AppName) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.active).forget_app(app);
        lock(&self.0.envs).remove(app);
        lock(&self.0.triggered).remove(app);
    }

    /// Drops what is cached of every app's functions (another node's changes may have been
    /// missed).
    pub fn heard_everything(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.active).clear();
        lock(&self.0.envs).clear();
        lock(&self.0.triggered).clear();
    }

    /// Whether deploying `deploy` would change the function: the same sources and settings as
    /// the active version change nothing. Checks everything a deploy checks but the syntax.
    pub async fn plan(
        &self,
        app: &AppName,
        name: &str,
        deploy: Deploy,
    ) -> Result<DeployPlan, FunctionError> {
        let (source, settings, _) = self.prepare(app, name, deploy)?;
        self.room_for(app, name).await?;
        Ok(match self.0.store.function(app, name).await? {
            None => DeployPlan::Create,
            Some((row, active)) => {
                let same_source = serde_json::from_str::<Json>(&active.source).ok() == Some(source);
                if same_source && parse_settings(&row.settings) == settings {
                    DeployPlan::Unchanged
                } else {
                    DeployPlan::Update
                }
            }
        })
    }

    /// Compiles and stores a new version and makes it the active one.
    pub async fn deploy(
        &self,
        app: &AppName,
        name: &str,
        deploy: Deploy,
    ) -> Result<FunctionInfo, FunctionError> {
        let (source, settings, schedules) = self.prepare(app, name, deploy)?;
        // Checked before the compile, and again as the function is stored.
        self.room_for(app, name).await?;
        let files: BTreeMap<String, String> =
            serde_json::from_value(source["files"].clone()).unwrap_or_default();
        let entry = source["entry"].as_str().unwrap_or("index.js").to_owned();
        let source = source.to_string();
        let bundle = self
            .0
            .engine
            .compile(app, files, entry)
            .await?
            .map_err(FunctionError::Syntax)?;
        let now = self.0.clock.now();
        let row = FunctionVersionRow {
            version: 0,
            source,
            bundle,
            created_at_ms: now.unix_ms(),
        };
        let settings_json =
            serde_json::to_string(&settings).map_err(|e| FunctionError::Invalid(e.to_string()))?;
        let version = self
            .0
            .store
            .deploy_function(app, name, settings_json, row)
            .await
            .map_err(|e| match e {
                StoreError::OverQuota => too_many_functions(),
                other => other.into(),
            })?;
        self.forget(app, name);
        self.0
            .system
            .replace_schedules(app, name, schedules)
            .await?;
        Ok(FunctionInfo {
            name: name.to_owned(),
            version,
            settings,
            updated_at: now,
        })
    }

    /// Refuses a new function when the app holds [`MAX_FUNCTIONS_PER_APP`].
    async fn room_for(&self, app: &AppName, name: &str) -> Result<(), FunctionError> {
        if self.0.store.function(app, name).await?.is_none()
            && self.0.store.functions(app).await?.len() >= MAX_FUNCTIONS_PER_APP
        {
            return Err(too_many_functions());
        }
        Ok(())
    }

    /// Checks a deploy and returns its sources (`{"files","entry"}`), settings and schedules.
    fn prepare(
        &self,
        app: &AppName,
        name: &str,
        deploy: Deploy,
    ) -> Result<(Json, Settings, Vec<ScheduleRow>), FunctionError> {
        check_name(name)?;
        let limits = &self.0.limits;
        let (files, entry) = match (deploy.source, deploy.files) {
            (Some(source), None) => (
                BTreeMap::from([("index.js".to_owned(), source)]),
                "index.js".to_owned(),
            ),
            (None, Some(files)) => {
                let entry = deploy.entry.unwrap_or_else(|| "index.js".to_owned());
                (files, entry)
            }
            _ => {
                return Err(FunctionError::Invalid(
                    "send either \"source\" or \"files\" (with \"entry\")".into(),
                ));
            }
        };
        check_files(&files, &entry)?;
        if deploy.triggers.len() > MAX_TRIGGERS {
            return Err(FunctionError::Invalid(format!(
                "at most {MAX_TRIGGERS} triggers"
            )));
        }
        for trigger in &deploy.triggers {
            match trigger {
                TriggerDef::Data(trigger) => {
                    if !crate::data::valid_name(&trigger.collection) || trigger.on.is_empty() {
                        return Err(FunctionError::Invalid(format!(
                            "trigger on {:?}: a collection name and at least one of create, update, delete",
                            trigger.collection
                        )));
                    }
                }
                TriggerDef::Files(trigger) => {
                    if !crate::data::valid_name(&trigger.bucket) || trigger.on.is_empty() {
                        return Err(FunctionError::Invalid(format!(
                            "trigger on bucket {:?}: a bucket name and at least one of upload, delete",
                            trigger.bucket
                        )));
                    }
                }
                TriggerDef::Pay(trigger) => {
                    if trigger.pay.is_empty() {
                        return Err(FunctionError::Invalid(
                            "a pay trigger names at least one of paid, refunded, refund_failed, closed"
                                .into(),
                        ));
                    }
                }
                TriggerDef::Realtime(trigger) => {
                    if trigger.realtime.is_empty() {
                        return Err(FunctionError::Invalid(
                            "a realtime trigger names at least one of connect, disconnect".into(),
                        ));
                    }
                }
                TriggerDef::Auth(trigger) => {
                    if trigger.auth.is_empty() {
                        return Err(FunctionError::Invalid(
                            "an auth trigger names at least one of user_created, user_deleted"
                                .into(),
                        ));
                    }
                }
                TriggerDef::Queue(trigger) => {
                    if !crate::queues::valid_queue_name(&trigger.queue)
                        || !(1..=MAX_QUEUE_BATCH).contains(&trigger.batch)
                        || !(1..=MAX_QUEUE_CONCURRENCY).contains(&trigger.concurrency)
                    {
                        return Err(FunctionError::Invalid(format!(
                            "trigger on queue {:?}: a queue name, batch 1 to {MAX_QUEUE_BATCH}, concurrency 1 to {MAX_QUEUE_CONCURRENCY}",
                            trigger.queue
                        )));
                    }
                }
            }
        }
        if deploy.max_concurrency == Some(0) {
            return Err(FunctionError::Invalid(
                "max_concurrency is at least 1".into(),
            ));
        }
        if deploy.schedules.len() > MAX_SCHEDULES {
            return Err(FunctionError::Invalid(format!(
                "at most {MAX_SCHEDULES} schedules"
            )));
        }
        let now = self.0.clock.now();
        let mut schedules = Vec::new();
        for (index, schedule) in deploy.schedules.iter().enumerate() {
            if schedule.data.to_string().len() > MAX_SCHEDULE_DATA {
                return Err(FunctionError::Invalid(format!(
                    "a schedule's data is at most {} KiB of JSON",
                    MAX_SCHEDULE_DATA / 1024
                )));
            }
            let next = schedule
                .next_after(now.unix_ms())
                .map_err(FunctionError::Invalid)?;
            schedules.push(ScheduleRow {
                app: app.to_owned(),
                function: name.to_owned(),
                index: index as i64,
                cron: schedule.cron.clone(),
                timezone: schedule.timezone.clone(),
                data: schedule.data.to_string(),
                next_at_ms: next.unwrap_or(i64::MAX),
            });
        }
        let settings = Settings {
            public: deploy.public,
            callable: deploy.callable,
            timeout_ms: deploy.timeout_ms.unwrap_or(limits.default_timeout_ms),
            memory_mb: deploy.memory_mb.unwrap_or(limits.default_memory_mb),
            max_concurrency: deploy.max_concurrency,
            triggers: deploy.triggers,
            schedules: deploy.schedules,
        };
        if !(1..=limits.max_timeout_ms).contains(&settings.timeout_ms) {
            return Err(FunctionError::Invalid(format!(
                "timeout_ms is 1 to {}",
                limits.max_timeout_ms
            )));
        }
        if !(1..=limits.max_memory_mb).contains(&settings.memory_mb) {
            return Err(FunctionError::Invalid(format!(
                "memory_mb is 1 to {}",
                limits.max_memory_mb
            )));
        }
        Ok((
            json!({ "files": files, "entry": entry }),
            settings,
            schedules,
        ))
    }

    pub async fn list(&self, app: &AppName) -> Result<Vec<FunctionInfo>, FunctionError> {
        Ok(self
            .0
            .store
            .functions(app)
            .await?
            .into_iter()
            .map(|row| FunctionInfo {
                settings: parse_settings(&row.settings),
                name: row.name,
                version: row.version,
                updated_at: Timestamp::from_unix_ms(row.updated_at_ms),
            })
            .collect())
    }

    /// The function, its versions (newest first) and its active sources.
    pub async fn show(&self, app: &AppName, name: &str) -> Result<Json, FunctionError> {
        let (row, active) = self
            .0
            .store
            .function(app, name)
            .await?
            .ok_or_else(|| FunctionError::NotFound(name.to_owned()))?;
        let versions: Vec<VersionInfo> = self
            .0
            .store
            .function_versions(app, name)
            .await?
            .into_iter()
            .map(|(version, at)| VersionInfo {
                version,
                created_at: Timestamp::from_unix_ms(at),
                active: version == row.version,
            })
            .collect();
        let source: Json = serde_json::from_str(&active.source).unwrap_or(Json::Null);
        let info = FunctionInfo {
            settings: parse_settings(&row.settings),
            name: row.name,
            version: row.version,
            updated_at: Timestamp::from_unix_ms(row.updated_at_ms),
        };
        let mut shown = serde_json::to_value(info).unwrap_or(Json::Null);
        if let Some(object) = shown.as_object_mut() {
            object.insert("versions".into(), json!(versions));
            object.insert("files".into(), source["files"].clone());
            object.insert("entry".into(), source["entry"].clone());
        }
        Ok(shown)
    }

    /// Makes an earlier (or later) version the active one.
    pub async fn rollback(
        &self,
        app: &AppName,
        name: &str,
        version: i64,
    ) -> Result<FunctionInfo, FunctionError> {
        let now = self.0.clock.now();
        let activated = self
            .0
            .store
            .activate_version(app, name, version, now.unix_ms())
            .await?;
        self.forget(app, name);
        if !activated {
            return match self.0.store.function(app, name).await? {
                None => Err(FunctionError::NotFound(name.to_owned())),
                Some(_) => Err(FunctionError::VersionNotFound(version)),
            };
        }
        self.list(app)
            .await?
            .into_iter()
            .find(|f| f.name == name)
            .ok_or_else(|| FunctionError::NotFound(name.to_owned()))
    }

    pub async fn delete(&self, app: &AppName, name: &str) -> Result<(), FunctionError> {
        let deleted = self.0.store.delete_function(app, name).await?;
        self.forget(app, name);
        self.0
            .system
            .replace_schedules(app, name, Vec::new())
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(FunctionError::NotFound(name.to_owned()))
        }
    }

    /// Sets or (with `None`) removes an environment secret; values are sealed at rest and never
    /// shown back.
    pub async fn set_env(
        &self,
        app: &AppName,
        name: &str,
        value: Option<&str>,
    ) -> Result<(), FunctionError> {
        let valid = (1..=64).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(FunctionError::InvalidEnv(format!(
                "{name:?}: 1 to 64 of A-Z, 0-9 and _, not starting with a digit"
            )));
        }
        let sealed = match value {
            Some(value) if value.len() > MAX_ENV_VALUE => {
                return Err(FunctionError::InvalidEnv(format!(
                    "a value is at most {MAX_ENV_VALUE} bytes"
                )));
            }
            Some(value) => {
                let names = self.env_names(app).await?;
                if names.len() >= MAX_ENV_VARS && !names.iter().any(|n| n == name) {
                    return Err(FunctionError::InvalidEnv(format!(
                        "at most {MAX_ENV_VARS} values"
                    )));
                }
                Some(
                    self.0
                        .sealer
                        .seal(value.as_bytes(), &env_place(app, name), &*self.0.random),
                )
            }
            None => None,
        };
        let removing = sealed.is_none();
        let changed = self.0.store.set_env(app, name, sealed).await?;
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.envs).remove(app);
        self.ring(app);
        if !changed && removing {
            return Err(FunctionError::InvalidEnv(format!("no value named {name}")));
        }
        Ok(())
    }

    pub async fn env_names(&self, app: &AppName) -> Result<Vec<String>, FunctionError> {
        Ok(self
            .0
            .store
            .env(app)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Hears each app whose invocation log entries this node writes (entries of other nodes
    /// are not told): a follower of the logs reads `after` its last entry when its app is.
    pub fn logs_written(&self) -> broadcast::Receiver<AppName> {
        self.0.log.written.subscribe()
    }

    pub async fn logs(
        &self,
        app: &AppName,
        query: LogQuery,
    ) -> Result<Vec<LogEntry>, FunctionError> {
        Ok(self
            .0
            .store
            .function_logs(app, query)
            .await?
            .into_iter()
            .map(|row| LogEntry {
                id: row.id,
                at: Timestamp::from_unix_ms(row.at_ms),
                request_id: row.request_id,
                function: row.function,
                version: row.version,
                trigger: row.trigger,
                outcome: row.outcome,
                micros: row.micros,
                memory_bytes: row.memory_bytes,
                cold: row.cold,
                detail: serde_json::from_str(&row.detail).unwrap_or(Json::Null),
            })
            .collect())
    }

    /// Runs the active version of `name` for `actor` and answers its result. The event and
    /// the result pass through as JSON text, never taken apart.
    pub async fn invoke(
        &self,
        call: Invoke<'_>,
        event: Box<RawValue>,
    ) -> Result<Box<RawValue>, FunctionError> {
        self.invoke_as(call, event, Ok).await
    }

    /// Runs an HTTP function: like [`Functions::invoke`], and its result must be an HTTP
    /// answer (see [`http`]); one that is not fails the invocation, in its log too.
    pub async fn invoke_http(
        &self,
        call: Invoke<'_>,
        event: Box<RawValue>,
    ) -> Result<http::HttpAnswer, FunctionError> {
        self.invoke_as(call, event, |result| {
            http::HttpAnswer::from_result(result.get())
        })
        .await
    }

    /// Runs an invocation whose successful result `shape` turns into a `T`, or refuses.
    async fn invoke_as<T>(
        &self,
        call: Invoke<'_>,
        event: Box<RawValue>,
        shape: impl FnOnce(Box<RawValue>) -> Result<T, String>,
    ) -> Result<T, FunctionError> {
        let Invoke {
            app,
            name,
            caller,
            request_id,
            trigger,
        } = call;
        let active = self.active(app, name).await?;
        let settings = &active.settings;
        // A caller without a token learns no more of a private function than that it needs one.
        if !settings.public && matches!(caller, Caller::Anonymous) {
            return Err(FunctionError::Unauthenticated);
        }
        let by_client = matches!(trigger, Trigger::Call | Trigger::Http);
        if by_client
            && !settings.callable()
            && matches!(caller, Caller::User(_) | Caller::Anonymous)
        {
            return Err(FunctionError::NotCallable);
        }
        let _function_admitted = match settings.max_concurrency {
            Some(max) => Some(self.admit_function(app, name, max)?),
            None => None,
        };
        let admitted = self.admit(app)?;
        let _turn = admitted
            .0
            .turns
            .acquire()
            .await
            .map_err(|_| FunctionError::Overloaded)?;
        let env = self.env(app).await?;
        let auth = match caller {
            Caller::User(user) => Some(AuthContext::User {
                id: &user.user_id,
                provider: &user.provider,
                openid: user.openid.as_deref(),
                unionid: user.unionid.as_deref(),
            }),
            Caller::Admin | Caller::AppKey(_) => Some(AuthContext::Admin { admin: true }),
            Caller::Anonymous => None,
        };
        let context = serde_json::value::to_raw_value(&Context {
            app,
            function: name,
            version: active.version,
            request_id,
            trigger: trigger.as_str(),
            auth,
            env: &env,
        })
        .map_err(|e| FunctionError::Engine(EngineError(e.to_string())))?;
        let limits = &self.0.limits;
        let mut seed = [0u8; 32];
        self.0.random.fill(&mut seed);
        let run = Run {
            app: app.to_owned(),
            key: active.key.clone(),
            bundle: Arc::clone(&active.bundle),
            event,
            context,
            limits: RunLimits {
                memory_bytes: usize::try_from(settings.memory_mb * 1024 * 1024)
                    .unwrap_or(usize::MAX),
                stack_bytes: limits.stack_bytes,
                timeout_ms: settings.timeout_ms,
                max_result_bytes: limits.max_result_bytes,
                max_log_lines: limits.max_log_lines,
            },
            seed,
        };
        let started = self.0.clock.now();
        let host = Arc::new(ScopedCalls {
            capabilities: Arc::clone(&self.0.capabilities),
            scope: CallScope {
                app: app.clone(),
                caller: caller.clone(),
                request_id: request_id.to_owned(),
            },
        });
        let ran = self.0.engine.run(run, host).await?;
        let (outcome, result, error) = match ran.outcome {
            RunOutcome::Ok(json) => match shape(json) {
                Ok(shaped) => ("ok", Ok(shaped), Json::Null),
                Err(problem) => (
                    "error",
                    Err(FunctionError::InvalidResponse(problem.clone())),
                    json!({ "message": format!("not a valid HTTP response: {problem}"), "stack": "" }),
                ),
            },
            RunOutcome::Error { message, stack } => (
                "error",
                Err(FunctionError::Failed(message.clone())),
                json!({ "message": message, "stack": stack }),
            ),
            RunOutcome::Timeout => ("timeout", Err(FunctionError::Timeout), Json::Null),
            RunOutcome::MemoryLimit => {
                ("memory_limit", Err(FunctionError::MemoryLimit), Json::Null)
            }
            RunOutcome::ResultTooLarge(bytes) => (
                "result_too_large",
                Err(FunctionError::ResultTooLarge(bytes)),
                Json::Null,
            ),
        };
        let logs: Vec<Json> = ran
            .logs
            .into_iter()
            .map(|line| {
                json!({
                    "level": line.level,
                    "message": line.message,
                    "at": crate::clock::micros_to_rfc3339(line.at_us),
                })
            })
            .collect();
        let entry = FunctionLogRow {
            id: 0,
            at_ms: started.unix_ms(),
            request_id: request_id.to_owned(),
            function: name.to_owned(),
            version: active.version,
            trigger: trigger.as_str().to_owned(),
            outcome: outcome.to_owned(),
            micros: i64::try_from(ran.micros).unwrap_or(i64::MAX),
            memory_bytes: i64::try_from(ran.memory_bytes).unwrap_or(i64::MAX),
            cold: ran.cold,
            detail: self.0.log.detail(logs, ran.logs_dropped, error),
        };
        self.0.log.send(app, entry);
        result
    }

    /// The schedules' ticks due now, each with the event its run gets and the time its
    /// schedule moves on to. A tick less than a minute late is followed by the ticks after it
    /// (a busy moment delays runs, it does not skip them); a schedule further behind (the
    /// server was down) runs once, late, and goes on from now.
    pub async fn due_ticks(
        &self,
        limit: usize,
        per_app: usize,
    ) -> Result<Vec<Tick>, FunctionError> {
        let now = self.0.clock.now().unix_ms();
        let rows = self.0.system.due_schedules(now, limit, per_app).await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let schedule = Schedule {
                    cron: row.cron.clone(),
                    timezone: row.timezone.clone(),
                    data: Json::Null,
                };
                let next_ms = schedule.moves_on_from(row.next_at_ms, now);
                let event = json!({
                    "cron": row.cron,
                    "timezone": row.timezone,
                    "scheduled_at": Timestamp::from_unix_ms(row.next_at_ms),
                    "data": serde_json::from_str::<Json>(&row.data).unwrap_or(Json::Null),
                });
                Tick {
                    row,
                    event,
                    next_ms,
                }
            })
            .collect())
    }

    /// Moves a tick's schedule on, once the tick's run is enqueued: false if another node (or
    /// a deploy that replaced the schedule) did first.
    pub async fn advance(&self, tick: &Tick) -> Result<bool, FunctionError> {
        Ok(self
            .0
            .system
            .advance_schedule(&tick.row, tick.next_ms)
            .await?)
    }

    /// Forgets everything cached of an app (it was deleted).
    pub fn forget_app(&self, app: &AppName) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.active).forget_app(app);
        lock(&self.0.envs).remove(app);
        lock(&self.0.running).remove(app);
        lock(&self.0.running_functions).retain(|(a, _), _| a != app);
        lock(&self.0.triggered).remove(app);
    }

    /// After a change of the function here: forgotten, and the other nodes told.
    fn forget(&self, app: &AppName, name: &str) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        lock(&self.0.active).remove(app, name);
        lock(&self.0.triggered).remove(app);
        self.ring(app);
    }

    /// The app's functions with a trigger that `matches`.
    async fn triggered_where(
        &self,
        app: &AppName,
        matches: impl Fn(&TriggerDef) -> bool,
    ) -> Result<Vec<String>, FunctionError> {
        Ok(self
            .triggers(app)
            .await?
            .iter()
            .filter(|(_, triggers)| triggers.iter().any(&matches))
            .map(|(name, _)| name.clone())
            .collect())
    }

    /// The functions a data event runs: those with a trigger on its collection and operation.
    pub async fn triggered_by(
        &self,
        app: &AppName,
        collection: &str,
        operation: Operation,
    ) -> Result<Vec<String>, FunctionError> {
        self.triggered_where(app, |t| {
            matches!(t, TriggerDef::Data(t) if t.collection == collection && t.on.contains(&operation))
        })
        .await
    }

    /// The functions an event of users' accounts runs.
    pub async fn triggered_by_auth(
        &self,
        app: &AppName,
        event: AuthEvent,
    ) -> Result<Vec<String>, FunctionError> {
        self.triggered_where(
            app,
            |t| matches!(t, TriggerDef::Auth(t) if t.auth.contains(&event)),
        )
        .await
    }

    /// The functions an event of the app's realtime sockets runs.
    pub async fn triggered_by_realtime(
        &self,
        app: &AppName,
        event: RealtimeEvent,
    ) -> Result<Vec<String>, FunctionError> {
        self.triggered_where(
            app,
            |t| matches!(t, TriggerDef::Realtime(t) if t.realtime.contains(&event)),
        )
        .await
    }

    /// The functions a payment event runs.
    pub async fn triggered_by_pay(
        &self,
        app: &AppName,
        event: PayEvent,
    ) -> Result<Vec<String>, FunctionError> {
        self.triggered_where(
            app,
            |t| matches!(t, TriggerDef::Pay(t) if t.pay.contains(&event)),
        )
        .await
    }

    /// The functions an event of `bucket`'s files runs.
    pub async fn triggered_by_files(
        &self,
        app: &AppName,
        bucket: &str,
        event: FileEvent,
    ) -> Result<Vec<String>, FunctionError> {
        self.triggered_where(
            app,
            |t| matches!(t, TriggerDef::Files(t) if t.bucket == bucket && t.on.contains(&event)),
        )
        .await
    }

    /// How long a run of the function may take, in milliseconds (from memory after its first
    /// call).
    pub async fn timeout_ms(&self, app: &AppName, name: &str) -> Result<u64, FunctionError> {
        Ok(self.active(app, name).await?.settings.timeout_ms)
    }

    /// The app's queue consumers: each function with a queue trigger, and the trigger.
    pub async fn queue_consumers(
        &self,
        app: &AppName,
    ) -> Result<Vec<(String, QueueTrigger)>, FunctionError> {
        Ok(self
            .triggers(app)
            .await?
            .iter()
            .flat_map(|(name, triggers)| {
                triggers.iter().filter_map(move |t| match t {
                    TriggerDef::Queue(q) => Some((name.clone(), q.clone())),
                    TriggerDef::Data(_)
                    | TriggerDef::Auth(_)
                    | TriggerDef::Files(_)
                    | TriggerDef::Realtime(_)
                    | TriggerDef::Pay(_) => None,
                })
            })
            .collect())
    }

    /// The app's functions that have triggers, from memory after the first look.
    async fn triggers(&self, app: &AppName) -> Result<Triggered, FunctionError> {
        if let Some(found) = lock(&self.0.triggered).get(app).cloned() {
            return Ok(found);
        }
        let generation = self.0.generation.load(Ordering::Acquire);
        let all: Vec<(String, Vec<TriggerDef>)> = self
            .0
            .store
            .functions(app)
            .await?
            .into_iter()
            .map(|row| (row.name, parse_settings(&row.settings).triggers))
            .filter(|(_, triggers)| !triggers.is_empty())
            .collect();
        let all = Arc::new(all);
        let mut cache = lock(&self.0.triggered);
        if self.0.generation.load(Ordering::Acquire) == generation {
            cache.insert(app.to_owned(), Arc::clone(&all));
        }
        Ok(all)
    }

    /// The active version of a function, from memory after its first call.
    async fn active(&self, app: &AppName, name: &str) -> Result<Arc<Active>, FunctionError> {
        let cached = (app.to_owned(), name.to_owned());
        if let Some(active) = lock(&self.0.active).get(&cached) {
            return Ok(active);
        }
        let generation = self.0.generation.load(Ordering::Acquire);
        let (row, version) = self
            .0
            .store
            .function(app, name)
            .await?
            .ok_or_else(|| FunctionError::NotFound(name.to_owned()))?;
        let digest = sha2::Sha256::digest(version.bundle.as_bytes());
        let key = format!(
            "{app}/{name}/{}/{}/{}",
            row.version,
            version.created_at_ms,
            hex::encode(&digest[..8])
        );
        let active = Arc::new(Active {
            version: row.version,
            settings: parse_settings(&row.settings),
            bundle: Arc::from(version.bundle),
            key,
        });
        let mut cache = lock(&self.0.active);
        if self.0.generation.load(Ordering::Acquire) == generation {
            cache.insert(cached, Arc::clone(&active));
        }
        Ok(active)
    }

    /// The app's environment, unsealed, from memory after its first use.
    async fn env(&self, app: &AppName) -> Result<Arc<Map<String, Json>>, FunctionError> {
        if let Some(env) = lock(&self.0.envs).get(app) {
            return Ok(Arc::clone(env));
        }
        let generation = self.0.generation.load(Ordering::Acquire);
        let mut env = Map::new();
        for (key, sealed) in self.0.store.env(app).await? {
            if let Ok(value) = self.0.sealer.open(&sealed, &env_place(app, &key)) {
                let value = String::from_utf8_lossy(&value).into_owned();
                env.insert(key, Json::String(value));
            }
        }
        let env = Arc::new(env);
        let mut cache = lock(&self.0.envs);
        if self.0.generation.load(Ordering::Acquire) == generation {
            cache.insert(app.to_owned(), Arc::clone(&env));
        }
        Ok(env)
    }

    /// Counts the invocation against its function's own limit.
    fn admit_function(
        &self,
        app: &AppName,
        name: &str,
        max: usize,
    ) -> Result<Admitted, FunctionError> {
        let key = (app.to_owned(), name.to_owned());
        let admission = Arc::clone(
            lock(&self.0.running_functions)
                .entry(key)
                .or_insert_with(|| Admission::new(0)),
        );
        admission.enter(max)
    }

    /// Counts the invocation against its app's limits: refused when too many are in already.
    fn admit(&self, app: &AppName) -> Result<Admitted, FunctionError> {
        let limits = &self.0.limits;
        let admission = Arc::clone(
            lock(&self.0.running)
                .entry(app.to_owned())
                .or_insert_with(|| Admission::new(limits.max_running_per_app.max(1))),
        );
        admission.enter(limits.max_concurrent_per_app)
    }
}

impl Admission {
    fn new(turns: usize) -> Arc<Self> {
        Arc::new(Admission {
            inside: AtomicUsize::new(0),
            turns: Semaphore::new(turns),
        })
    }

    /// Counts one more in, unless `max` are in already.
    fn enter(self: Arc<Self>, max: usize) -> Result<Admitted, FunctionError> {
        if self.inside.fetch_add(1, Ordering::AcqRel) >= max {
            self.inside.fetch_sub(1, Ordering::AcqRel);
            return Err(FunctionError::Overloaded);
        }
        Ok(Admitted(self))
    }
}

fn env_place(app: &AppName, name: &str) -> String {
    format!("env:{app}:{name}")
}

fn parse_settings(settings: &str) -> Settings {
    serde_json::from_str(settings).unwrap_or(Settings {
        public: false,
        callable: None,
        timeout_ms: FunctionLimits::default().default_timeout_ms,
        memory_mb: FunctionLimits::default().default_memory_mb,
        max_concurrency: None,
        triggers: Vec::new(),
        schedules: Vec::new(),
    })
}

/// Function names: 1 to 40 of `a-z`, `0-9`, `_` and `-`, starting with a letter.
pub fn check_name(name: &str) -> Result<(), FunctionError> {
    let valid = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(FunctionError::Invalid(format!(
            "name {name:?}: 1 to 40 of a-z, 0-9, _ and -, starting with a letter"
        )))
    }
}

/// File names are relative paths of `.js`/`.mjs` files, without `.` or `..` segments.
fn check_files(files: &BTreeMap<String, String>, entry: &str) -> Result<(), FunctionError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(FunctionError::Invalid(format!("1 to {MAX_FILES} files")));
    }
    let total: usize = files.values().map(String::len).sum();
    if total > MAX_SOURCE_BYTES {
        return Err(FunctionError::Invalid(format!(
            "the sources are {total} bytes; at most {MAX_SOURCE_BYTES}"
        )));
    }
    for name in files.keys() {
        let valid = (name.ends_with(".js") || name.ends_with(".mjs"))
            && name.len() <= 200
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part != "."
                    && part != ".."
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            });
        if !valid {
            return Err(FunctionError::Invalid(format!(
                "file name {name:?}: a relative path of a .js or .mjs file"
            )));
        }
    }
    if !files.contains_key(entry) {
        return Err(FunctionError::Invalid(format!(
            "the entry {entry:?} is not among the files"
        )));
    }
    Ok(())
}

fn too_many_functions() -> FunctionError {
    FunctionError::Invalid(format!(
        "an app holds at most {MAX_FUNCTIONS_PER_APP} functions"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn schedule(cron: &str, timezone: &str) -> Schedule {
        Schedule {
            cron: cron.into(),
            timezone: timezone.into(),
            data: Json::Null,
        }
    }

    #[test]
    fn a_late_tick_is_followed_by_the_next_unless_a_minute_late() {
        let every_second = schedule("* * * * * *", "UTC");
        let tick = 1_800_000_000_000;
        // Late (a busy moment): the next tick is the one after it, due already.
        assert_eq!(every_second.moves_on_from(tick, tick + 2_500), tick + 1_000);
        assert_eq!(
            every_second.moves_on_from(tick, tick + 60_000),
            tick + 1_000
        );
        // More than a minute late (the server was down): on from now.
        assert_eq!(
            every_second.moves_on_from(tick, tick + 60_500),
            tick + 61_000
        );
        let never = schedule("0 0 30 2 *", "UTC");
        assert_eq!(never.moves_on_from(tick, tick), i64::MAX);
    }

    #[test]
    fn schedules_name_their_next_time_in_their_time_zone() {
        let noon = at("2026-11-21T12:00:00Z");
        // 03:00 in Shanghai (UTC+8) is 19:00 UTC the day before.
        let daily = schedule("0 3 * * *", "Asia/Shanghai");
        assert_eq!(daily.next_after(noon), Ok(Some(at("2026-11-21T19:00:00Z"))));
        assert_eq!(
            schedule("0 3 * * *", "UTC").next_after(noon),
            Ok(Some(at("2026-11-22T03:00:00Z")))
        );
        // A leading seconds field; "after" is exclusive.
        assert_eq!(
            schedule("*/5 * * * * *", "UTC").next_after(noon),
            Ok(Some(at("2026-11-21T12:00:05Z")))
        );
        assert_eq!(
            schedule("@monthly", "UTC").next_after(noon),
            Ok(Some(at("2026-12-01T00:00:00Z")))
        );
        // New York is UTC-5 in November.
        assert_eq!(
            schedule("30 9 * * MON-FRI", "America/New_York").next_after(noon),
            Ok(Some(at("2026-11-23T14:30:00Z")))
        );
        for (cron, zone) in [
            ("61 * * * *", "UTC"),
            ("nonsense", "UTC"),
            ("0 3 * * *", "Mars/Olympus"),
        ] {
            assert!(
                schedule(cron, zone).next_after(noon).is_err(),
                "{cron} {zone}"
            );
        }
    }

    #[test]
    fn the_active_versions_in_memory_keep_within_their_bytes() {
        let app = AppName::parse("shop").expect("a name");
        let active = |n: usize, bytes: usize| {
            Arc::new(Active {
                version: 1,
                settings: parse_settings(""),
                bundle: Arc::from("b".repeat(bytes)),
                key: format!("k{n}"),
            })
        };
        let mut cache = ActiveCache::default();
        let each = MAX_ACTIVE_BYTES / 4 + 1;
        for n in 0..10 {
            let key = (app.clone(), format!("f{n}"));
            cache.insert(key.clone(), active(n, each));
            assert!(cache.bytes <= MAX_ACTIVE_BYTES, "{}", cache.bytes);
            assert!(cache.get(&key).is_some(), "the one kept last is there");
            let counted: usize = cache.versions.values().map(|(v, _)| v.bundle.len()).sum();
            assert_eq!(cache.bytes, counted);
            // f0 is used before every insert: never the least recently used, never dropped.
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(cache.get(&(app.clone(), "f0".to_owned())).is_some(), "{n}");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(cache.versions.len(), 3);
        // Replacing a version counts its new size only.
        let key = (app.clone(), "f9".to_owned());
        cache.insert(key.clone(), active(9, 10));
        assert_eq!(cache.bytes, 2 * each + 10);
        cache.remove(&app, "f9");
        assert_eq!(cache.bytes, 2 * each);
        assert!(cache.get(&(app.clone(), "f0".to_owned())).is_some());
        cache.forget_app(&app);
        assert_eq!((cache.bytes, cache.versions.len()), (0, 0));
    }
}
