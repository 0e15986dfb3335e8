//! The server's side of the workers: a bounded set of `cloudlet worker` processes.
//!
//! An invocation goes to an idle worker (preferring one that already has its code, so it finds
//! its runtime warm), or to a new one while fewer than `max_workers` run. When none is free it
//! may queue behind a running invocation of the same app (one deep), so that the worker goes
//! straight on to it, or else it waits its turn. It never queues behind another app's code.
//!
//! Fairness between apps: an app that holds no worker may take any free one (idle, or one more
//! process under `max_workers`). An app that holds some may take another only while it holds
//! fewer than `per_app` and more than `reserved` stay free, so however many apps are busy, and
//! however they are busy (computing, awaiting, flooding), `reserved` workers' worth of room is
//! always there for apps that ask for little. A deploy's compile is one of its app's jobs and
//! takes a worker by the same rule. Long computations cannot crowd the processor
//! either: a worker whose invocation has computed for a while runs at the lowest priority and
//! is retired afterwards (see `worker`).
//!
//! Each worker has a supervisor task that reads everything the worker says and passes it to
//! the invocation it is about; the invocation's own task answers its host calls through
//! [`Host`]. If the running invocation has not finished by its deadline plus a grace period
//! (the engine's interrupt hook does not fire inside one long built-in call), the supervisor
//! kills the worker, and the invocations queued behind it run elsewhere. A worker whose running
//! invocation waits on a host call gives back the ones queued behind it, which run elsewhere
//! too. Workers idle for `idle_timeout` exit, so an idle instance runs none.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, mpsc};

use crate::protocol::{
    Bundle, CompileError, Finished, FromWorker, HostOutcome, Invocation, InvokeRef, Outcome, Shim,
    ToWorker, decode, encode, encode_with,
};

/// How long compiling a deploy may take before its worker is killed.
const COMPILE_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptors the server holds for one worker: the pipes to its stdin and from its stdout, and
/// the process handle.
pub const DESCRIPTORS_PER_WORKER: u64 = 3;
/// Most invocations a worker holds at once: the running one and those queued behind it.
pub const MAX_DEPTH: usize = 16;
/// A call goes behind others on a busy worker only while the work queued there is expected to
/// take less than this (by the typical run times of its codes).
const QUEUE_BUDGET_MICROS: u64 = 1000;
/// Codes whose typical run time the pool remembers; past this it starts over.
const MAX_TYPICAL: usize = 4096;

#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// The executable and arguments that start a worker (`cloudlet worker`).
    pub program: PathBuf,
    pub args: Vec<String>,
    pub max_workers: usize,
    /// The capabilities' JavaScript, sent to every worker when it starts.
    pub shims: Vec<Shim>,
    /// The most workers one app holds at once.
    pub per_app: usize,
    /// Workers kept free for apps that hold none: an app that holds some takes no more while
    /// only this many are free.
    pub reserved: usize,
    /// How long past its deadline an invocation may run before its worker is killed.
    pub grace: Duration,
    pub idle_timeout: Duration,
}

/// Answers the host calls of a running invocation: each names a capability, carries JSON
/// arguments and bytes, and is answered with an outcome and bytes.
#[async_trait]
pub trait Host: Send + Sync {
    async fn call(
        &self,
        capability: &str,
        args: serde_json::Value,
        bytes: Vec<u8>,
    ) -> (HostOutcome, Vec<u8>);
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("could not start a worker: {0}")]
    Spawn(std::io::Error),
    #[error("the worker stopped: {0}")]
    Died(String),
    #[error("the worker pool is closed")]
    Closed,
    #[error("the stored code is unreadable: {0}")]
    BadCode(String),
}

pub struct Pool {
    options: PoolOptions,
    state: Mutex<State>,
    /// Signalled when a worker takes on less work or goes away.
    room: Notify,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    workers: Vec<Slot>,
    /// The apps of the workers being started, counted against `max_workers` (and each app's
    /// share of them).
    starting: Vec<String>,
    /// Per code key, a moving average of its invocations' time in the worker.
    typical_micros: HashMap<String, u64>,
}

/// A worker as the pool's choices see it.
struct Slot {
    worker: Arc<Worker>,
    /// Sent to the worker, in order: the first runs, the others wait behind it.
    jobs: VecDeque<Job>,
    /// Given to this worker, not sent yet.
    reserved: Vec<Job>,
    /// The code keys this worker has been sent.
    loaded: HashSet<String>,
    idle_since: Instant,
    /// It runs at the lowest priority now: given no more work, and ended once idle.
    retiring: bool,
}

/// What the invocations' tasks share with a worker's supervisor.
struct Worker {
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    /// Wakes the supervisor when an idle worker is sent work (a deadline to watch).
    wake: Notify,
}

struct Job {
    id: u64,
    app: String,
    /// The code's key; empty for a compile, which never has anything queued behind it.
    key: String,
    timeout: Duration,
    /// How long its code typically runs, when known (else the whole queue budget).
    expected_micros: u64,
    /// When it started running (became the first of its worker's jobs).
    started: Option<Instant>,
    events: mpsc::UnboundedSender<Event>,
}

/// What a job's task hears from its worker.
enum Event {
    HostCall {
        call: u64,
        capability: String,
        args: serde_json::Value,
        bytes: Vec<u8>,
    },
    Finished(Box<Finished>),
    Compiled(Result<Bundle, CompileError>),
    NeedCode,
    /// Not run: run it elsewhere.
    Returned,
    TimedOut,
    Died(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only on a worker of its own (a compile, or an invocation given back once).
    Alone,
    /// Possibly queued behind a running invocation of the same app.
    MayQueue,
}

impl Pool {
    pub fn new(options: PoolOptions) -> Arc<Self> {
        Arc::new(Pool {
            options,
            state: Mutex::new(State::default()),
            room: Notify::new(),
            next_id: AtomicU64::new(1),
        })
    }

    /// Compiles `app`'s sources to bytecode in a worker. The compile is one of the app's jobs:
    /// it takes a worker as the app's calls do, within its share, so that a flood of deploys
    /// can not take the workers other apps' calls need.
    pub async fn compile(
        self: &Arc<Self>,
        app: &str,
        files: BTreeMap<String, String>,
        entry: String,
    ) -> Result<Result<Bundle, CompileError>, PoolError> {
        let frame = encode(&ToWorker::Compile { files, entry }).map_err(died)?;
        loop {
            let (job, mut events) = self.job(app.to_owned(), String::new(), COMPILE_TIMEOUT);
            let (reservation, _) = self.assign(job, Mode::Alone).await?;
            if !self.send(reservation, frame.clone()).await {
                continue;
            }
            return match events.recv().await {
                Some(Event::Compiled(outcome)) => Ok(outcome),
                Some(Event::TimedOut) => Err(PoolError::Died("compiling took too long".into())),
                Some(Event::Returned) => continue,
                Some(Event::Died(message)) => Err(PoolError::Died(message)),
                Some(_) => Err(PoolError::Died("an unexpected answer".into())),
                None => Err(PoolError::Died("the worker went away".into())),
            };
        }
    }

    /// Runs an invocation of `app`'s code; `bundle` gives the code when the worker does not
    /// have it yet.
    pub async fn invoke(
        self: &Arc<Self>,
        app: &str,
        mut invocation: Invocation,
        bundle: &(dyn Fn() -> Result<Bundle, String> + Send + Sync),
        host: &dyn Host,
    ) -> Result<Finished, PoolError> {
        let started = Instant::now();
        let timeout = Duration::from_millis(invocation.limits.timeout_ms);
        let mut mode = Mode::MayQueue;
        let mut send_code = false;
        loop {
            let (job, mut events) = self.job(app.to_owned(), invocation.key.clone(), timeout);
            // Each attempt is a job of its own: frames about an earlier one are not for it.
            invocation.id = job.id;
            let (reservation, loaded) = self.assign(job, mode).await?;
            let worker = Arc::clone(&reservation.worker);
            invocation.bundle = if send_code || !loaded {
                Some(bundle().map_err(PoolError::BadCode)?)
            } else {
                None
            };
            let frame = encode(&InvokeRef::Invoke(&invocation)).map_err(died)?;
            if !self.send(reservation, frame).await {
                continue;
            }
            // Host calls run at once, as the function's promises expect, and none outlives the
            // invocation's deadline: past it, the ones still running are dropped and answered
            // `cancelled` (see `PendingReply`), and new ones are not started.
            let deadline = Instant::now() + timeout + self.options.grace;
            let mut calls = FuturesUnordered::new();
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    Some(answered) = calls.next() => {
                        let (call, (outcome, bytes), mut pending): Answered = answered;
                        pending.worker = None;
                        write(&worker, reply_frame(invocation.id, call, outcome, &bytes)?).await;
                        continue;
                    }
                    () = tokio::time::sleep_until(deadline.into()), if !calls.is_empty() => {
                        calls.clear();
                        continue;
                    }
                };
                match event {
                    Some(Event::HostCall {
                        call,
                        capability,
                        args,
                        bytes,
                    }) => {
                        // Answered even if this task goes away meanwhile, so that the worker
                        // does not wait for the reply until the deadline.
                        let pending = PendingReply {
                            worker: Some(Arc::clone(&worker)),
                            id: invocation.id,
                            call,
                        };
                        if Instant::now() >= deadline {
                            continue;
                        }
                        calls.push(async move {
                            let answer = host.call(&capability, args, bytes).await;
                            (call, answer, pending)
                        });
                    }
                    Some(Event::Finished(finished)) => return Ok(*finished),
                    Some(Event::NeedCode) => {
                        send_code = true;
                        break;
                    }
                    Some(Event::Returned) => {
                        mode = Mode::Alone;
                        break;
                    }
                    Some(Event::TimedOut) => {
                        tracing::warn!(
                            key = invocation.key,
                            "an invocation outran its deadline: its worker was killed"
                        );
                        return Ok(Finished {
                            outcome: Outcome::Timeout,
                            logs: Vec::new(),
                            logs_dropped: 0,
                            memory_bytes: 0,
                            cold: false,
                            micros: u64::try_from(started.elapsed().as_micros())
                                .unwrap_or(u64::MAX),
                            retire: false,
                        });
                    }
                    Some(Event::Died(message)) => return Err(PoolError::Died(message)),
                    Some(Event::Compiled(_)) => {
                        return Err(PoolError::Died("an unexpected answer".into()));
                    }
                    None => return Err(PoolError::Died("the worker went away".into())),
                }
            }
        }
    }

    /// Workers running now and waiting for work.
    pub fn idle_workers(&self) -> usize {
        self.lock().workers.iter().filter(|s| s.is_idle()).count()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn job(
        &self,
        app: String,
        key: String,
        timeout: Duration,
    ) -> (Job, mpsc::UnboundedReceiver<Event>) {
        let (events, receiver) = mpsc::unbounded_channel();
        let job = Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            app,
            key,
            timeout,
            expected_micros: QUEUE_BUDGET_MICROS,
            started: None,
            events,
        };
        (job, receiver)
    }

    /// Gives `job` a worker, waiting for one if need be; also says whether that worker has the
    /// job's code already.
    async fn assign(
        self: &Arc<Self>,
        job: Job,
        mode: Mode,
    ) -> Result<(Reservation, bool), PoolError> {
        let mut job = Some(job);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let spawn = {
                let mut state = self.lock();
                let Some(pending) = job.as_mut() else {
                    return Err(PoolError::Closed);
                };
                if let Some(&micros) = state.typical_micros.get(&pending.key) {
                    pending.expected_micros = micros;
                }
                match self.choose(&state, pending, mode) {
                    Choice::Worker(at) => {
                        let slot = &mut state.workers[at];
                        let job = job.take().ok_or(PoolError::Closed)?;
                        let loaded = slot.loaded.contains(&job.key);
                        if !loaded && !job.key.is_empty() {
                            slot.loaded.insert(job.key.clone());
                        }
                        let reservation = Reservation {
                            pool: Arc::clone(self),
                            worker: Arc::clone(&slot.worker),
                            id: job.id,
                            sent: false,
                        };
                        slot.reserved.push(job);
                        return Ok((reservation, loaded));
                    }
                    Choice::Spawn => {
                        state.starting.push(pending.app.clone());
                        true
                    }
                    Choice::Wait => false,
                }
            };
            if !spawn {
                room.await;
                continue;
            }
            let mut starting = Starting {
                pool: self,
                app: job.as_ref().map(|j| j.app.clone()).unwrap_or_default(),
                done: false,
            };
            let (worker, child, stdout, buffer) = self.spawn().await?;
            let job = job.take().ok_or(PoolError::Closed)?;
            let reservation = Reservation {
                pool: Arc::clone(self),
                worker: Arc::clone(&worker),
                id: job.id,
                sent: false,
            };
            {
                // In one step, so that no choice in between counts it twice or not at all.
                let mut state = self.lock();
                starting.done(&mut state);
                state.workers.push(Slot {
                    worker: Arc::clone(&worker),
                    loaded: HashSet::from([job.key.clone()]),
                    jobs: VecDeque::new(),
                    reserved: vec![job],
                    idle_since: Instant::now(),
                    retiring: false,
                });
            }
            tokio::spawn(Arc::clone(self).supervise(worker, child, stdout, buffer));
            return Ok((reservation, false));
        }
    }

    fn choose(&self, state: &State, job: &Job, mode: Mode) -> Choice {
        let workers = &state.workers;
        let max = self.options.max_workers.max(1);
        let held = workers.iter().filter(|s| s.serves(&job.app)).count()
            + state.starting.iter().filter(|app| **app == job.app).count();
        let idle = workers.iter().filter(|s| s.is_idle()).count();
        let unspawned = max.saturating_sub(workers.len() + state.starting.len());
        let free = idle + unspawned;
        // Apps that hold no worker take any free one; the others keep `reserved` free for them
        // (see the module's notes).
        let may_grow = held == 0 || (held < self.options.per_app && free > self.options.reserved);
        // Short calls go behind others of their app on a warm worker before they wake another:
        // one busy worker outruns several that take turns sleeping, and the wait stays short.
        let now = Instant::now();
        let packs = |s: &Slot| {
            !s.retiring
                && s.load() < MAX_DEPTH
                && s.only_serves(&job.app)
                && s.expected_micros(now).saturating_add(job.expected_micros) < QUEUE_BUDGET_MICROS
        };
        if mode == Mode::MayQueue {
            let warm = workers
                .iter()
                .position(|s| packs(s) && s.loaded.contains(&job.key));
            if let Some(at) = warm {
                return Choice::Worker(at);
            }
        }
        if may_grow {
            let warm = workers
                .iter()
                .position(|s| s.is_idle() && s.loaded.contains(&job.key));
            if let Some(at) = warm.or_else(|| workers.iter().position(Slot::is_idle)) {
                return Choice::Worker(at);
            }
            if unspawned > 0 {
                return Choice::Spawn;
            }
        }
        // No worker free: a long call waits one deep behind another of its app.
        if mode == Mode::MayQueue {
            let open =
                |s: &Slot| packs(s) || (!s.retiring && s.load() < 2 && s.only_serves(&job.app));
            let warm = workers
                .iter()
                .position(|s| open(s) && s.loaded.contains(&job.key));
            if let Some(at) = warm.or_else(|| workers.iter().position(open)) {
                return Choice::Worker(at);
            }
        }
        Choice::Wait
    }

    /// Sends a reserved job's frame; `false` if its worker went away first (assign another).
    async fn send(&self, mut reservation: Reservation, frame: Vec<u8>) -> bool {
        let stdin = Arc::clone(&reservation.worker.stdin).lock_owned().await;
        let wake = {
            let mut state = self.lock();
            let Some(slot) = state
                .workers
                .iter_mut()
                .find(|s| Arc::ptr_eq(&s.worker, &reservation.worker))
            else {
                return false;
            };
            let Some(at) = slot.reserved.iter().position(|j| j.id == reservation.id) else {
                return false;
            };
            let mut job = slot.reserved.swap_remove(at);
            let first = slot.jobs.is_empty();
            if first {
                job.started = Some(Instant::now());
            }
            slot.jobs.push_back(job);
            first
        };
        reservation.sent = true;
        if wake {
            reservation.worker.wake.notify_one();
        }
        write_locked(stdin, frame).await;
        true
    }

    async fn spawn(&self) -> Result<(Arc<Worker>, Child, ChildStdout, Vec<u8>), PoolError> {
        let mut child = Command::new(&self.options.program)
            .args(&self.options.args)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(PoolError::Spawn)?;
        let (Some(stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(PoolError::Died("no pipes".into()));
        };
        let mut stdin = stdin;
        let setup = encode(&ToWorker::Setup {
            shims: self.options.shims.clone(),
        })
        .map_err(died)?;
        stdin.write_all(&setup).await.map_err(died)?;
        let mut buffer = Vec::with_capacity(64 * 1024);
        let ready = loop {
            if let Some(frame) = decode::<FromWorker>(&mut buffer).map_err(died)? {
                break frame.message;
            }
            if stdout.read_buf(&mut buffer).await.map_err(died)? == 0 {
                return Err(PoolError::Died(
                    "the worker stopped before it was ready".into(),
                ));
            }
        };
        match ready {
            FromWorker::Ready => Ok((
                Arc::new(Worker {
                    stdin: Arc::new(tokio::sync::Mutex::new(stdin)),
                    wake: Notify::new(),
                }),
                child,
                stdout,
                buffer,
            )),
            other => Err(PoolError::Died(format!("unexpected {other:?}"))),
        }
    }

    /// Reads everything a worker says and passes it on, watches the running job's deadline,
    /// and lets the worker go when idle; tells its jobs when it is gone.
    async fn supervise(
        self: Arc<Self>,
        worker: Arc<Worker>,
        mut child: Child,
        mut stdout: ChildStdout,
        mut buffer: Vec<u8>,
    ) {
        let grace = self.options.grace;
        let idle_timeout = self.options.idle_timeout;
        let end = loop {
            let check = self.next_check(&worker, grace, idle_timeout);
            let sleep = async {
                match check {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                read = stdout.read_buf(&mut buffer) => {
                    match read {
                        Ok(0) => break End::Died("the worker stopped".into()),
                        Ok(_) => {}
                        Err(e) => break End::Died(e.to_string()),
                    }
                    if let Err(message) = self.route_all(&worker, &mut buffer) {
                        break End::Died(message);
                    }
                }
                () = worker.wake.notified() => {}
                () = sleep => match self.overdue(&worker, grace, idle_timeout) {
                    Overdue::Running => break End::TimedOut,
                    Overdue::Idle => break End::Idle,
                    Overdue::No => {}
                },
            }
        };
        let _ = child.start_kill();
        self.bury(&worker, &end);
        let _ = child.wait().await;
    }

    /// When the supervisor must look again: the running job's deadline, or when the worker has
    /// been idle long enough to go.
    fn next_check(&self, worker: &Arc<Worker>, grace: Duration, idle: Duration) -> Option<Instant> {
        let state = self.lock();
        let slot = state
            .workers
            .iter()
            .find(|s| Arc::ptr_eq(&s.worker, worker))?;
        match slot.jobs.front() {
            Some(job) => job.started.map(|at| at + job.timeout + grace),
            None if slot.reserved.is_empty() && slot.retiring => Some(slot.idle_since),
            None if slot.reserved.is_empty() => Some(slot.idle_since + idle),
            None => None,
        }
    }

    fn overdue(&self, worker: &Arc<Worker>, grace: Duration, idle: Duration) -> Overdue {
        let mut state = self.lock();
        let Some(at) = state
            .workers
            .iter()
            .position(|s| Arc::ptr_eq(&s.worker, worker))
        else {
            return Overdue::Idle;
        };
        let slot = &state.workers[at];
        let now = Instant::now();
        match slot.jobs.front() {
            Some(job) if job.started.is_some_and(|s| now >= s + job.timeout + grace) => {
                Overdue::Running
            }
            None if slot.reserved.is_empty()
                && (slot.retiring || now >= slot.idle_since + idle) =>
            {
                // Gone from the pool before anyone can choose it.
                state.workers.swap_remove(at);
                Overdue::Idle
            }
            _ => Overdue::No,
        }
    }

    /// Passes on every whole frame in `buffer`.
    fn route_all(&self, worker: &Arc<Worker>, buffer: &mut Vec<u8>) -> Result<(), String> {
        while let Some(framed) = decode::<FromWorker>(buffer).map_err(|e| e.to_string())? {
            self.route(worker, framed.message, framed.attachment)?;
        }
        Ok(())
    }

    fn route(
        &self,
        worker: &Arc<Worker>,
        frame: FromWorker,
        attachment: Vec<u8>,
    ) -> Result<(), String> {
        let (id, event) = match frame {
            FromWorker::HostCall {
                id,
                call,
                capability,
                args,
            } => (
                Some(id),
                Event::HostCall {
                    call,
                    capability,
                    args,
                    bytes: attachment,
                },
            ),
            FromWorker::Finished { id, finished } => (Some(id), Event::Finished(finished)),
            FromWorker::NeedCode { id } => (Some(id), Event::NeedCode),
            FromWorker::Returned { id } => (Some(id), Event::Returned),
            FromWorker::Compiled { outcome } => (None, Event::Compiled(outcome)),
            FromWorker::Ready => return Err("said it was ready twice".into()),
        };
        let mut state = self.lock();
        let slot = state
            .workers
            .iter_mut()
            .find(|s| Arc::ptr_eq(&s.worker, worker))
            .ok_or("no longer in the pool")?;
        let at = match id {
            Some(id) => slot.jobs.iter().position(|j| j.id == id),
            None => (!slot.jobs.is_empty()).then_some(0),
        }
        .ok_or("spoke of an invocation it does not have")?;
        if let Event::HostCall { call, .. } = &event {
            let call = *call;
            let job = &slot.jobs[at];
            if job.events.send(event).is_err() {
                // Its caller went away: answer for it, so the worker does not wait.
                cancel_call(&slot.worker, job.id, call);
            }
            return Ok(());
        }
        // Any other frame ends the job.
        let Some(job) = slot.jobs.remove(at) else {
            return Ok(());
        };
        let now = Instant::now();
        match slot.jobs.front_mut() {
            Some(next) if at == 0 => next.started = Some(now),
            Some(_) => {}
            None => slot.idle_since = now,
        }
        if let Event::Finished(finished) = &event {
            slot.retiring |= finished.retire;
            let micros = finished.micros;
            if state.typical_micros.len() >= MAX_TYPICAL {
                state.typical_micros.clear();
            }
            // A moving average: a quarter of the weight on the newest run.
            match state.typical_micros.get_mut(&job.key) {
                Some(typical) => *typical = (*typical / 4) * 3 + micros / 4,
                None => {
                    state.typical_micros.insert(job.key.clone(), micros);
                }
            }
        }
        drop(state);
        let _ = job.events.send(event);
        self.room.notify_waiters();
        Ok(())
    }

    /// Takes a worker out of the pool and tells its jobs: the running one timed out or died,
    /// the ones behind it never started and run elsewhere.
    fn bury(&self, worker: &Arc<Worker>, end: &End) {
        let slot = {
            let mut state = self.lock();
            let at = state
                .workers
                .iter()
                .position(|s| Arc::ptr_eq(&s.worker, worker));
            at.map(|at| state.workers.swap_remove(at))
        };
        if let Some(slot) = slot {
            for (i, job) in slot.jobs.into_iter().enumerate() {
                let event = match end {
                    _ if i > 0 => Event::Returned,
                    End::TimedOut => Event::TimedOut,
                    End::Died(message) => Event::Died(message.clone()),
                    End::Idle => Event::Returned,
                };
                let _ = job.events.send(event);
            }
        }
        self.room.notify_waiters();
    }
}

enum Choice {
    Worker(usize),
    Spawn,
    Wait,
}

enum Overdue {
    Running,
    Idle,
    No,
}

enum End {
    TimedOut,
    Died(String),
    Idle,
}

impl Slot {
    fn load(&self) -> usize {
        self.jobs.len() + self.reserved.len()
    }

    /// Free for any app's next invocation.
    fn is_idle(&self) -> bool {
        self.load() == 0 && !self.retiring
    }

    fn serves(&self, app: &str) -> bool {
        self.jobs.iter().chain(&self.reserved).any(|j| j.app == app)
    }

    /// How long the work given to it is expected to take: for the running job, at least as
    /// long as it has run already.
    fn expected_micros(&self, now: Instant) -> u64 {
        self.jobs
            .iter()
            .chain(&self.reserved)
            .map(|j| {
                let ran = j.started.map_or(0, |at| {
                    u64::try_from(now.saturating_duration_since(at).as_micros()).unwrap_or(u64::MAX)
                });
                j.expected_micros.max(ran)
            })
            .fold(0, u64::saturating_add)
    }

    /// Has work, all of it `app`'s, none of it a compile.
    fn only_serves(&self, app: &str) -> bool {
        self.load() > 0
            && self
                .jobs
                .iter()
                .chain(&self.reserved)
                .all(|j| j.app == app && !j.key.is_empty())
    }
}

/// A job given to a worker and not sent yet; dropped unsent (its caller went away), it gives
/// the room back.
struct Reservation {
    pool: Arc<Pool>,
    worker: Arc<Worker>,
    id: u64,
    sent: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.sent {
            return;
        }
        {
            let mut state = self.pool.lock();
            if let Some(slot) = state
                .workers
                .iter_mut()
                .find(|s| Arc::ptr_eq(&s.worker, &self.worker))
            {
                slot.reserved.retain(|j| j.id != self.id);
            }
        }
        // Its supervisor may be waiting for it to be sent, not watching the idle time.
        self.worker.wake.notify_one();
        self.pool.room.notify_waiters();
    }
}

/// A worker being started for an app; counted against the maximum until dropped.
struct Starting<'a> {
    pool: &'a Pool,
    app: String,
    done: bool,
}

impl Starting<'_> {
    /// No longer being started (it runs, or it failed).
    fn done(&mut self, state: &mut State) {
        if let Some(at) = state.starting.iter().position(|app| *app == self.app) {
            state.starting.swap_remove(at);
        }
        self.done = true;
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if !self.done {
            let pool = self.pool;
            self.done(&mut pool.lock());
        }
        self.pool.room.notify_waiters();
    }
}

/// Writes what the pipe takes without waiting; `None` if it failed.
fn write_now(stdin: &mut ChildStdin, frame: &[u8]) -> Option<usize> {
    let mut written = 0;
    let mut context = Context::from_waker(Waker::noop());
    while written < frame.len() {
        match Pin::new(&mut *stdin).poll_write(&mut context, &frame[written..]) {
            Poll::Ready(Ok(n)) if n > 0 => written += n,
            Poll::Ready(_) => return None,
            Poll::Pending => break,
        }
    }
    Some(written)
}

/// A host call whose task has not answered yet; dropped unanswered (its caller went away), it
/// answers that the call was cancelled.
struct PendingReply {
    worker: Option<Arc<Worker>>,
    id: u64,
    call: u64,
}

impl Drop for PendingReply {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            cancel_call(&worker, self.id, self.call);
        }
    }
}

/// Answers a host call whose caller went away, from a task of its own.
fn cancel_call(worker: &Arc<Worker>, id: u64, call: u64) {
    let outcome = HostOutcome::Error {
        code: "cancelled".into(),
        message: "the caller went away".into(),
    };
    if let Ok(reply) = encode(&ToWorker::HostReply { id, call, outcome }) {
        let worker = Arc::clone(worker);
        tokio::spawn(async move { write(&worker, reply).await });
    }
}

/// A host call answered: its number, its outcome and bytes, and the guard that would have
/// answered it `cancelled`.
type Answered = (u64, (HostOutcome, Vec<u8>), PendingReply);

/// The frame answering host call `call` of invocation `id`.
fn reply_frame(
    id: u64,
    call: u64,
    outcome: HostOutcome,
    bytes: &[u8],
) -> Result<Vec<u8>, PoolError> {
    let reply = ToWorker::HostReply { id, call, outcome };
    match encode_with(&reply, bytes) {
        Ok(frame) => Ok(frame),
        // Over the frame limit: the capability broke its own bound.
        Err(e) => encode(&ToWorker::HostReply {
            id,
            call,
            outcome: HostOutcome::Error {
                code: "host_call_too_large".into(),
                message: e.to_string(),
            },
        })
        .map_err(died),
    }
}

fn died(e: std::io::Error) -> PoolError {
    PoolError::Died(e.to_string())
}

async fn write(worker: &Worker, frame: Vec<u8>) {
    let stdin = Arc::clone(&worker.stdin).lock_owned().await;
    write_locked(stdin, frame).await;
}

/// Writes a whole frame, even if the task that asked goes away halfway: what the pipe takes at
/// once is written here, the rest by a task of its own. A frame cut short would garble every
/// frame after it. A failed write is left to the supervisor, which sees the worker gone.
async fn write_locked(mut stdin: tokio::sync::OwnedMutexGuard<ChildStdin>, frame: Vec<u8>) {
    let Some(written) = write_now(&mut stdin, &frame) else {
        return;
    };
    if written < frame.len() {
        let rest = tokio::spawn(async move {
            let _ = stdin.write_all(&frame[written..]).await;
        });
        let _ = rest.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Limits;

    struct NoHost;

    #[async_trait]
    impl Host for NoHost {
        async fn call(&self, _: &str, _: serde_json::Value, _: Vec<u8>) -> (HostOutcome, Vec<u8>) {
            let outcome = HostOutcome::Error {
                code: "none".into(),
                message: "none".into(),
            };
            (outcome, Vec::new())
        }
    }

    /// A worker that says it is ready and then never answers, as one stuck inside a long
    /// built-in call would be.
    fn stuck_pool() -> Arc<Pool> {
        Pool::new(PoolOptions {
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                r#"printf '\013\000\000\000\007\000\000\000"ready"'; exec sleep 30"#.into(),
            ],
            max_workers: 1,
            shims: Vec::new(),
            per_app: 1,
            reserved: 0,
            grace: Duration::from_millis(100),
            idle_timeout: Duration::from_secs(60),
        })
    }

    fn invocation() -> Invocation {
        Invocation {
            id: 0,
            key: "app/f/1".into(),
            bundle: None,
            event: serde_json::value::RawValue::from_string("null".into()).unwrap(),
            context: serde_json::value::RawValue::from_string("null".into()).unwrap(),
            limits: Limits {
                memory_bytes: 1 << 20,
                stack_bytes: 1 << 16,
                timeout_ms: 200,
                max_result_bytes: 1 << 20,
                max_log_lines: 1,
            },
            seed: [0; 32],
        }
    }

    /// Code no worker here ever runs.
    fn empty_bundle() -> Result<Bundle, String> {
        Ok(Bundle {
            engine: String::new(),
            entry: "index.js".into(),
            modules: BTreeMap::new(),
        })
    }

    #[tokio::test]
    async fn a_worker_past_its_hard_deadline_is_killed_and_the_call_times_out() {
        let pool = stuck_pool();
        let bundle = empty_bundle;
        let started = Instant::now();
        let finished = pool
            .invoke("app", invocation(), &bundle, &NoHost)
            .await
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(finished.outcome, Outcome::Timeout);
        // Deadline 200 ms plus grace 100 ms; not the worker's 30 s.
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
        // The killed worker is not kept; the slot is free for the next call.
        assert_eq!(pool.idle_workers(), 0);
        let again = pool
            .invoke("app", invocation(), &bundle, &NoHost)
            .await
            .unwrap();
        assert_eq!(again.outcome, Outcome::Timeout);
    }

    #[tokio::test]
    async fn a_call_queued_behind_a_killed_one_runs_again_elsewhere_with_its_own_deadline() {
        // One worker at most: the second call can only queue behind the first.
        let pool = stuck_pool();
        let bundle = empty_bundle;
        let started = Instant::now();
        let first = pool.invoke("app", invocation(), &bundle, &NoHost);
        let second = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let finished = pool.invoke("app", invocation(), &bundle, &NoHost).await;
            (finished, started.elapsed())
        };
        let queued = async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            pool.lock()
                .workers
                .iter()
                .map(Slot::load)
                .collect::<Vec<_>>()
        };
        let (first, (second, second_done), queued) = tokio::join!(first, second, queued);
        // Both on the one worker, the second behind the first.
        assert_eq!(queued, [2]);
        assert_eq!(first.unwrap().outcome, Outcome::Timeout);
        // Not lost with the first worker, nor cut short by its deadline: it started over on a
        // fresh worker (deadline 200 ms, grace 100 ms, after the first's 300 ms).
        assert_eq!(second.unwrap().outcome, Outcome::Timeout);
        assert!(second_done >= Duration::from_millis(600), "{second_done:?}");
        assert_eq!(pool.idle_workers(), 0);
    }
}
