//! One SQLite database file: a writer thread, a sync thread and a pool of readers.
//!
//! Writes are closures sent to the writer thread. The thread takes every write waiting in its
//! queue (up to [`MAX_BATCH`]), runs each inside its own savepoint within one `BEGIN IMMEDIATE`
//! transaction and commits once. A failing write rolls back its savepoint alone; the others in
//! its batch still commit.
//!
//! A commit does not wait for the disk (`synchronous = NORMAL`): once it is in the WAL it is
//! visible to every later read and write. The writes of the batch that must be on disk are
//! answered after an `fdatasync` of the WAL that began after their commit. When more writes are
//! queued, the writer runs that fsync itself before their batch, which gathers meanwhile: one
//! commit and one fsync per batch under load, which is where SQLite's write throughput under
//! concurrency comes from. When none are, it hands the fsync to the sync thread and takes what
//! comes next at once, so that a write's effects can be acted on in the process while its
//! fsync runs (a queue's consumer woken and claiming, see [`Database::write_committed`]).
//! Reads may so see a commit that a power loss would still undo ([`Database::wait_on_disk`]
//! waits for what a read saw to be on disk); nothing is *answered* before it is on disk, and
//! since the WAL is read back only up to its first incomplete commit, a later commit never
//! survives an earlier one. A failed fsync stops the database's writes until the process
//! restarts: the pages the kernel failed to write may since be marked clean, so neither a later
//! fsync nor opening the database again proves anything.
//!
//! A small write may skip the writer thread ([`Database::write_committed_small`], a queue's
//! send of a few messages): when no write is queued or running, its caller takes the write
//! connection and runs it as a batch of its own, handing its fsync to the sync thread as an
//! idle writer does. A lone write spends most of its time waking the writer thread and being
//! woken by it; under load the writer is busy, and small writes queue like the rest. The
//! connection's lock makes the two one writer: commits still run one at a time.
//!
//! What a write waits for is its [`Commit`]: a *relaxed* write ([`Database::write_relaxed`]:
//! bookkeeping whose loss on a power failure is harmless or repaired, such as a queue claim or
//! acknowledgement, a function's log, a hint) is answered at its commit: it survives the process
//! crashing, and the next fsync covers it. An ordinary write waits for the fsync when the
//! database's durability is [`Durability::Full`], and a *durable* one
//! ([`Database::write_durable`]: a payment's state, which a platform stops retrying once it is
//! answered) whatever the durability.
//!
//! Each write's savepoint journals the original of every page it changes. SQLite keeps that
//! journal in memory up to a threshold and spills the rest to a temporary file; its default
//! threshold, 64 KiB, is passed by an ordinary write of a busy batch (acknowledging sixteen
//! queue messages touches that many pages of five b-trees), and from then on every write of the
//! batch paid a `pwrite` and the batch's end the file's closing: a fifth of a busy writer's time
//! in a profile of a queue drain. The threshold is raised to [`JOURNAL_IN_MEMORY`] once per
//! process, before SQLite's first use: a write that changes more (a collection's column
//! dropped, a queue purged) still spills, so one write's journal costs at most that much memory.
//!
//! Reads take a permit (at most `readers` at once) and borrow an idle read-only connection. A
//! read first runs inline, on the task that asked for it, within a budget of
//! [`INLINE_BUDGET`]: most reads are index lookups of a few microseconds, for which handing the
//! work to another thread (a wake-up and two context switches) costs more than the read itself.
//! A read that outlasts its budget or meets a locked database is interrupted and runs again on
//! tokio's blocking pool, with no budget, so the async runtime is never held for longer. Reads
//! have no effects, so running one again is safe; the closure is `Fn` for that reason.

use std::cell::Cell;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use super::lock;
use crate::StoreError;

/// How much of a savepoint's journal SQLite keeps in memory before it spills the rest to a
/// temporary file (its default: 64 KiB).
const JOURNAL_IN_MEMORY: i32 = 16 << 20;

/// Sets SQLite's process-wide configuration, once, before its first use in the process (after
/// it, SQLite refuses any change, and this says so in the log: the databases work the same,
/// with SQLite's defaults).
fn configure_sqlite() {
    static CONFIGURED: std::sync::Once = std::sync::Once::new();
    CONFIGURED.call_once(|| {
        // SAFETY: `SQLITE_CONFIG_STMTJRNL_SPILL` takes one `int`, which is what is passed.
        // SQLite refuses a configuration change once it is initialised (`SQLITE_MISUSE`)
        // rather than apply it, and this runs before any database of the store is opened.
        #[allow(unsafe_code)]
        let code = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_STMTJRNL_SPILL,
                JOURNAL_IN_MEMORY,
            )
        };
        if code != rusqlite::ffi::SQLITE_OK {
            tracing::warn!(
                code,
                "SQLite was in use before its configuration: savepoint journals spill to a file past 64 KiB"
            );
        }
    });
}

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 256;

/// How long a read may hold the async task that asked for it before it moves to the blocking
/// pool.
const INLINE_BUDGET: Duration = Duration::from_micros(200);
/// SQLite virtual-machine steps between two looks at the budget.
const STEPS_PER_CHECK: i32 = 200;
/// How long a reader waits for a locked database (on the blocking pool only).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read may run on the blocking pool before it is stopped: as long as a statement
/// on PostgreSQL (shorter in this module's tests).
const READ_TIMEOUT: Duration = if cfg!(test) {
    Duration::from_millis(500)
} else {
    crate::STATEMENT_TIMEOUT
};

/// Told the batch's outcome: committed (with the wait for its fsync) or not.
type Completion = Box<dyn FnOnce(Result<OnDisk, StoreError>) + Send>;
/// Runs one write in the current batch.
struct WriteJob {
    run: Box<dyn FnOnce(&Connection) -> RanJob + Send>,
    commit: Commit,
}

/// What one write needs of its batch's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// No fsync needed.
    Relaxed,
    /// The database's durability.
    Default,
    /// An fsync, whatever the durability.
    Durable,
}

impl Commit {
    fn waits_for_disk(self, durability: Durability) -> bool {
        match self {
            Commit::Relaxed => false,
            Commit::Default => durability == Durability::Full,
            Commit::Durable => true,
        }
    }
}

/// A write that ran. `intact` is false when its savepoint could not be released or rolled
/// back: the batch can then not be trusted and is rolled back whole.
struct RanJob {
    complete: Completion,
    intact: bool,
}

/// What the writer thread shares with the writes that may run on their caller
/// ([`Database::write_committed_small`]).
struct WriterShared {
    /// The write connection, held while a batch runs; `None` once the writer thread stopped.
    conn: Mutex<Option<Connection>>,
    /// Writes sent to the writer thread and not yet taken from its queue.
    queued: AtomicUsize,
    /// Writes committed on their callers since the writer thread last committed. Those never
    /// checkpoint the WAL; past [`MAX_INLINE_RUN`] the next small write goes to the writer,
    /// whose commit does.
    inline_run: AtomicUsize,
}

/// The most writes committed on their callers in a row (a few WAL pages each), so that a
/// database written only by small writes still has its WAL checkpointed.
const MAX_INLINE_RUN: usize = 256;

/// Answers a write once the fsync that covers its commit is done.
type SyncWaiter = oneshot::Sender<Result<(), String>>;

/// A committed write's wait for the disk ([`Database::write_committed`]): it resolves once the
/// write would survive a power loss, at once when its durability does not ask for that.
#[derive(Debug)]
#[must_use = "a write is acknowledged only once it is on disk"]
pub struct OnDisk(Pending);

/// What an [`OnDisk`] waits for.
#[derive(Debug)]
enum Pending {
    /// Nothing: the write is as durable as it needs to be.
    Nothing,
    /// An fsync of SQLite's WAL, answered by the sync thread.
    Fsync(oneshot::Receiver<Result<(), String>>),
    /// A commit on PostgreSQL, answered by the task that sent it.
    Commit(oneshot::Receiver<Result<(), StoreError>>),
}

impl OnDisk {
    /// A write that is already as durable as it needs to be.
    pub fn now() -> OnDisk {
        OnDisk(Pending::Nothing)
    }

    /// A write whose commit (on PostgreSQL, where a commit returns once it is on disk) is
    /// answered on `committed`.
    pub(crate) fn commit(committed: oneshot::Receiver<Result<(), StoreError>>) -> OnDisk {
        OnDisk(Pending::Commit(committed))
    }

    /// Waits for the fsync, or the commit.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            Pending::Nothing => Ok(()),
            Pending::Fsync(synced) => synced
                .await
                .map_err(|_| StoreError::Task("the database closed before its fsync".into()))?
                .map_err(StoreError::Task),
            Pending::Commit(committed) => committed.await.map_err(|_| {
                StoreError::Task("the task of a commit ended before its answer".into())
            })?,
        }
    }
}

/// What the writer and the sync thread share.
struct SyncState {
    /// Set once an fsync failed: no write is taken or answered after it.
    failed: AtomicBool,
    /// Commits begun: counted before `COMMIT`, so that whoever sees a commit sees it counted.
    begun: AtomicU64,
    /// Commits done: counted after `COMMIT` (commits run one at a time, under the write
    /// connection's lock: `begun` is `done` or one more).
    done: AtomicU64,
    /// The commits an fsync has covered: `done` as it was when the last good fsync began.
    synced: AtomicU64,
    /// The WAL, for `fdatasync`.
    wal: File,
    /// Where the database is, for the directory's fsync and the logs.
    path: PathBuf,
    /// Whether the directory was synced since the database was opened: the WAL may be new, and
    /// its name must reach the disk too.
    named: Mutex<bool>,
    /// Fsyncs begun (counted before the gate).
    #[cfg(test)]
    syncs: AtomicU64,
    /// Held before each fsync: a test holds it to keep commits from reaching the disk.
    #[cfg(test)]
    gate: Mutex<()>,
    /// Fails the next fsync.
    #[cfg(test)]
    fail_next: AtomicBool,
    /// The threads that ran each fsync.
    #[cfg(test)]
    threads: Mutex<Vec<String>>,
}

impl SyncState {
    fn new(wal: File, path: &Path) -> SyncState {
        SyncState {
            failed: AtomicBool::new(false),
            // What the WAL held when the database was opened counts as one commit that no
            // fsync covered yet: a process that crashed, or this file's last `Database` still
            // closing, may have left commits that never had their fsync.
            begun: AtomicU64::new(1),
            done: AtomicU64::new(1),
            synced: AtomicU64::new(0),
            wal,
            path: path.to_path_buf(),
            named: Mutex::new(false),
            #[cfg(test)]
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            gate: Mutex::new(()),
            #[cfg(test)]
            fail_next: AtomicBool::new(false),
            #[cfg(test)]
            threads: Mutex::new(Vec::new()),
        }
    }
}

/// The databases whose fsync failed in this process. The kernel may have dropped the pages it
/// could not write and marked them clean, so neither a later fsync nor opening the database
/// again proves anything: they take no writes until the server restarts.
static FAILED_SYNCS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
type Migration = fn(&Connection, &Path) -> Result<(), StoreError>;

#[derive(Clone, Copy)]
pub struct DatabaseOptions {
    /// Read-only connections kept at most (and reads running at once).
    pub readers: usize,
    /// What an acknowledged write survives.
    pub durability: Durability,
    /// Create the file if it is missing; otherwise opening a missing file fails with
    /// [`StoreError::NoSuchTenant`].
    pub create: bool,
    /// Brings the schema up to date; runs on the writer connection before anything else.
    pub migrate: Migration,
}

/// What a write survives once it is acknowledged. Either way the database is never corrupted:
/// the difference is whether the last commits before an OS crash or a power loss are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk (fsync) before it is acknowledged: it survives power loss.
    /// Concurrent writers share one fsync.
    Full,
    /// A commit is in the operating system's hands when acknowledged: it survives the process
    /// crashing, but the last commits may be lost if the machine does.
    Process,
}

/// A handle to an open database. Cloning is cheap; the database closes when [`Database::close`]
/// is called or the last handle is dropped.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<WriteJob>>>,
    /// The write connection and its queue's length, shared with the writer thread.
    shared: Arc<WriterShared>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    sync: Arc<SyncState>,
    /// For [`Database::wait_on_disk`]; dropped on close, so that the sync thread can stop.
    to_sync: Mutex<Option<mpsc::Sender<Vec<SyncWaiter>>>>,
    durability: Durability,
    readers: Mutex<Vec<Connection>>,
    reader_permits: Arc<Semaphore>,
}

impl Database {
    /// Opens (creating if needed) the database at `path`, migrates it and starts its writer
    /// thread. Blocking: call it from a blocking context.
    pub fn open(path: &Path, options: DatabaseOptions) -> Result<Self, StoreError> {
        configure_sqlite();
        if lock(&FAILED_SYNCS).iter().any(|failed| failed == path) {
            return Err(failed_sync());
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if options.create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::CannotOpen => {
                StoreError::NoSuchTenant
            }
            _ => e.into(),
        })?;
        // The schema's steps commit with their fsync; the writer's commits leave it to the sync
        // thread.
        // First, so that an earlier `Database` of the file still checkpointing as it closes is
        // waited for from the first statement.
        conn.busy_timeout(WRITER_BUSY_TIMEOUT)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;",
        )?;
        stable_plans(&conn)?;
        (options.migrate)(&conn, path)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let wal = open_wal(&conn, path)?;

        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sync = Arc::new(SyncState::new(wal, path));
        let (to_sync, pending) = mpsc::channel::<Vec<SyncWaiter>>();
        let sync_state = Arc::clone(&sync);
        let syncer = std::thread::Builder::new()
            .name(format!("sqlite-sync:{file}"))
            .spawn(move || run_syncer(&sync_state, pending))
            .map_err(StoreError::io(path))?;
        let waits = to_sync.clone();
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        let writer_sync = Arc::clone(&sync);
        let durability = options.durability;
        let shared = Arc::new(WriterShared {
            conn: Mutex::new(Some(conn)),
            queued: AtomicUsize::new(0),
            inline_run: AtomicUsize::new(0),
        });
        let writer_shared = Arc::clone(&shared);
        let writer_thread = std::thread::Builder::new()
            .name(format!("sqlite-writer:{file}"))
            .spawn(move || {
                run_writer(
                    &writer_shared,
                    durability,
                    receiver,
                    &writer_sync,
                    to_sync,
                    syncer,
                )
            })
            .map_err(StoreError::io(path))?;

        Ok(Database {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(Some(sender)),
                shared,
                writer_thread: Mutex::new(Some(writer_thread)),
                sync,
                to_sync: Mutex::new(Some(waits)),
                durability: options.durability,
                readers: Mutex::new(Vec::new()),
                reader_permits: Arc::new(Semaphore::new(options.readers.max(1))),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `write` on the writer thread inside a savepoint of the current batch and returns its
    /// result once the batch has committed. The closure must not begin or end transactions.
    pub async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write, Commit::Default).await
    }

    /// [`Database::write`] for bookkeeping that need not wait for the disk: once answered it
    /// survives the process crashing, and it is on disk once any later ordinary write commits;
    /// only a power loss before that may undo it. With [`Durability::Process`] the same as
    /// `write`.
    pub async fn write_relaxed<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write, Commit::Relaxed).await
    }

    /// [`Database::write`] committed with its fsync even under [`Durability::Process`]: once
    /// answered it survives power loss.
    pub async fn write_durable<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(write, Commit::Durable).await
    }

    /// [`Database::write`] answered as soon as it is committed, before its fsync: from then on
    /// every read and write of the database sees it, but only once [`OnDisk::wait`] has
    /// resolved may it be acknowledged to whoever asked for it. For acting on a write while its
    /// fsync runs, such as waking a queue's consumer.
    pub async fn write_committed<T, F>(&self, write: F) -> Result<(T, OnDisk), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.stage(write, Commit::Default).await
    }

    /// [`Database::write_committed`] for a write known to be small (a few rows of bounded
    /// size). When no write is queued or running, it runs and commits on the calling task, its
    /// fsync handed to the sync thread as an idle writer hands it: the hand-off to the writer
    /// thread and back (two wake-ups of sleeping threads, most of a lone write's time) is
    /// spared, at the price of holding the async task for the write itself. Otherwise it
    /// queues for the writer thread like any write.
    pub async fn write_committed_small<T, F>(&self, write: F) -> Result<(T, OnDisk), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match self.commit_inline(write, Commit::Default) {
            Ok(done) => done,
            Err(write) => self.stage(write, Commit::Default).await,
        }
    }

    /// Runs `write` as a batch of its own on the calling thread, if the writer is idle;
    /// otherwise gives it back.
    fn commit_inline<T, F>(
        &self,
        write: F,
        commit: Commit,
    ) -> Result<Result<(T, OnDisk), StoreError>, F>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = &self.inner.shared;
        if shared.queued.load(Ordering::Acquire) != 0
            || shared.inline_run.load(Ordering::Acquire) >= MAX_INLINE_RUN
            || self.inner.sync.failed.load(Ordering::Acquire)
        {
            return Err(write);
        }
        // Held until the waiters are handed over, so that the sync thread outlives them; gone
        // once the database is closing, and then nothing is committed here.
        let Some(to_sync) = lock(&self.inner.to_sync).clone() else {
            return Err(write);
        };
        let guard = match shared.conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Err(write),
        };
        let Some(conn) = guard.as_ref() else {
            return Err(write);
        };
        if !begin_inline(conn) {
            return Err(write);
        }
        let (job, mut answer) = write_job(write, commit);
        let finished = run_begun(conn, vec![job], self.inner.durability, &self.inner.sync);
        end_inline(conn);
        shared.inline_run.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        let (ran, outcomes, waiters) = finished;
        for (job, outcome) in ran.into_iter().zip(outcomes) {
            (job.complete)(outcome);
        }
        if !waiters.is_empty() {
            // Should the sync thread be gone, the waiters drop: the write answers an error.
            let _ = to_sync.send(waiters);
        }
        drop(to_sync);
        Ok(match answer.try_recv() {
            Ok(done) => done,
            Err(_) if self.inner.sync.failed.load(Ordering::Acquire) => Err(failed_sync()),
            Err(_) => Err(StoreError::Task("the write batch could not begin".into())),
        })
    }

    /// Waits until every write committed before the call is on disk, when the durability asks
    /// that of ordinary writes (at once with [`Durability::Process`]). For reads whose result
    /// leaves the process to be relied on later, such as positions in the event log: a read may
    /// see commits that a power cut would still undo.
    pub async fn wait_on_disk(&self) -> Result<(), StoreError> {
        let sync = &self.inner.sync;
        if self.inner.durability == Durability::Process {
            return Ok(());
        }
        // Nothing committed since the last fsync began: nothing to wait for.
        let begun = sync.begun.load(Ordering::Acquire);
        if sync.synced.load(Ordering::Acquire) >= begun && !sync.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        let (waiter, synced) = oneshot::channel();
        let sent = lock(&self.inner.to_sync)
            .as_ref()
            .is_some_and(|to_sync| to_sync.send(vec![waiter]).is_ok());
        if !sent {
            return Err(StoreError::Closed);
        }
        OnDisk(Pending::Fsync(synced)).wait().await
    }

    async fn submit<T, F>(&self, write: F, commit: Commit) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (value, on_disk) = self.stage(write, commit).await?;
        on_disk.wait().await?;
        Ok(value)
    }

    async fn stage<T, F>(&self, write: F, commit: Commit) -> Result<(T, OnDisk), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, answer) = write_job(write, commit);
        if self.inner.sync.failed.load(Ordering::Acquire) {
            return Err(failed_sync());
        }
        let sender = lock(&self.inner.writer).clone().ok_or(StoreError::Closed)?;
        self.inner.shared.queued.fetch_add(1, Ordering::AcqRel);
        if sender.send(job).is_err() {
            self.inner.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::Closed);
        }
        answer.await.map_err(|_| {
            if self.inner.sync.failed.load(Ordering::Acquire) {
                failed_sync()
            } else {
                StoreError::Task("the write batch could not begin".into())
            }
        })?
    }

    /// Runs `read` on a read-only connection: inline if a reader is idle and the read fits in
    /// [`INLINE_BUDGET`], otherwise on tokio's blocking pool.
    pub async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permits = Arc::clone(&self.inner.reader_permits);
        let (permit, conn) = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                let idle = lock(&self.inner.readers).pop();
                match idle {
                    Some(conn) => match run_inline(&conn, &read) {
                        Some(result) => {
                            lock(&self.inner.readers).push(conn);
                            return result;
                        }
                        None => (permit, Some(conn)),
                    },
                    None => (permit, None),
                }
            }
            Err(tokio::sync::TryAcquireError::Closed) => return Err(StoreError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|_| StoreError::Closed)?;
                (permit, None)
            }
        };
        // The permit moves into the blocking task: a caller that gives up waiting does not free
        // its reader slot while the read still runs.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = match conn.or_else(|| lock(&inner.readers).pop()) {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = run_timed(&conn, &read);
            lock(&inner.readers).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// [`Database::close`] on the blocking pool.
    pub async fn close_async(&self) {
        let db = self.clone();
        let _ = tokio::task::spawn_blocking(move || db.close()).await;
    }

    /// Stops accepting writes, waits for the queued ones to commit, and closes every connection.
    /// Blocking: call it from a blocking context. Reads already running finish on their own.
    pub fn close(&self) {
        // Readers go first so that the writer's connection is the last one: only the last
        // connection to close checkpoints the WAL and removes the -wal and -shm files, and a
        // read-only connection can not.
        self.inner.reader_permits.close();
        lock(&self.inner.readers).clear();
        lock(&self.inner.to_sync).take();
        lock(&self.inner.writer).take();
        if let Some(thread) = lock(&self.inner.writer_thread).take() {
            let _ = thread.join();
        }
    }
}

thread_local! {
    /// While a read runs on the blocking pool: when it is stopped, and whether it was.
    static TIMED: Cell<Option<(Instant, bool)>> = const { Cell::new(None) };
    /// While a read runs inline: when its budget ends, and whether it was given up.
    static INLINE: Cell<Option<(Instant, bool)>> = const { Cell::new(None) };
}

/// Runs `read` inline within [`INLINE_BUDGET`]. `None` when it was given up (out of time, or the
/// database was locked): its result, whatever it was, is discarded and the read runs again.
fn run_inline<T>(
    conn: &Connection,
    read: &impl Fn(&Connection) -> Result<T, StoreError>,
) -> Option<Result<T, StoreError>> {
    INLINE.set(Some((Instant::now() + INLINE_BUDGET, false)));
    let result = catch_unwind(AssertUnwindSafe(|| read(conn)));
    let given_up = INLINE.take().is_some_and(|(_, given_up)| given_up);
    match result {
        _ if given_up => None,
        Ok(result) => Some(result),
        Err(_) => Some(Err(StoreError::Task("a read panicked".into()))),
    }
}

/// Runs `read` on the blocking pool, stopped past [`READ_TIMEOUT`] with
/// [`StoreError::TimedOut`].
fn run_timed<T>(
    conn: &Connection,
    read: &impl Fn(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    TIMED.set(Some((Instant::now() + READ_TIMEOUT, false)));
    let result = read(conn);
    match TIMED.take() {
        Some((_, true)) => Err(StoreError::TimedOut),
        _ => result,
    }
}

/// Whether the read running on this thread is past its time: inline, its budget (it is given
/// up, to run again); on the blocking pool, [`READ_TIMEOUT`] (it is stopped).
fn out_of_time() -> bool {
    if let Some((deadline, _)) = INLINE.get() {
        return Instant::now() >= deadline && give_up_inline();
    }
    match TIMED.get() {
        Some((deadline, _)) if Instant::now() >= deadline => {
            TIMED.set(Some((deadline, true)));
            true
        }
        _ => false,
    }
}

/// Gives up an inline read: the progress and busy handlers' answer to "stop now?".
fn give_up_inline() -> bool {
    INLINE.with(|state| match state.get() {
        Some((deadline, _)) => {
            state.set(Some((deadline, true)));
            true
        }
        None => false,
    })
}

/// Plans that do not depend on bound values. Otherwise SQLite prepares a cached statement again
/// whenever a value it planned around changes (a page's `LIMIT ?`, for one), which cost a list
/// request a tenth of its time.
fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    stable_plans(&conn)?;
    // Both handlers run on the thread executing the statement, so they see whether this read
    // runs inline.
    conn.progress_handler(STEPS_PER_CHECK, Some(out_of_time));
    conn.busy_handler(Some(|attempt: i32| {
        if give_up_inline() {
            return false;
        }
        let waited = Duration::from_millis(u64::try_from(attempt).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(1));
        waited < BUSY_TIMEOUT
    }))?;
    Ok(conn)
}

/// Where a write's outcome is answered: its value and the wait for its fsync, or its error.
type Answer<T> = oneshot::Receiver<Result<(T, OnDisk), StoreError>>;

/// A write's job for a batch, and where its outcome is answered.
fn write_job<T, F>(write: F, commit: Commit) -> (WriteJob, Answer<T>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let run = Box::new(move |conn: &Connection| {
        let (outcome, intact) = run_in_savepoint(conn, write);
        RanJob {
            complete: Box::new(move |committed: Result<OnDisk, StoreError>| {
                let _ = reply.send(outcome.and_then(|value| committed.map(|d| (value, d))));
            }),
            intact,
        }
    });
    (WriteJob { run, commit }, answer)
}

/// A batch that ran: each write, what its commit was, and the waiters of the fsync its writes
/// wait for (not yet handed to anyone).
type Finished = (
    Vec<RanJob>,
    Vec<Result<OnDisk, StoreError>>,
    Vec<SyncWaiter>,
);

/// Runs `batch` in one transaction, each write in its savepoint, and commits it. `None` when
/// the transaction could not begin: the writes are dropped unrun, and their callers get an
/// error.
fn run_batch(
    conn: &Connection,
    batch: Vec<WriteJob>,
    durability: Durability,
    sync: &SyncState,
) -> Option<Finished> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        tracing::error!(error = %e, path = ?conn.path(), "could not begin a write batch");
        return None;
    }
    Some(run_begun(conn, batch, durability, sync))
}

/// How long the write connection waits for another connection's lock (on the writer thread).
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL's pages past which a commit on the writer thread checkpoints it (SQLite's default).
const WAL_AUTOCHECKPOINT: i64 = 1000;

/// Begins a write on its caller's task: without waiting for another connection's lock (an
/// earlier `Database` of the file still closing), and without the checkpoint SQLite would run
/// at the commit that takes the WAL past [`WAL_AUTOCHECKPOINT`] pages, which syncs the WAL and
/// the database file: both are the writer thread's, whose next commit checkpoints instead.
/// False when the transaction did not begin (the write then queues for the writer thread).
fn begin_inline(conn: &Connection) -> bool {
    let begun = conn.busy_timeout(Duration::ZERO).is_ok()
        && conn.pragma_update(None, "wal_autocheckpoint", 0).is_ok()
        && conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    if !begun {
        end_inline(conn);
    }
    begun
}

/// Gives the write connection back its waiting and checkpoints, for the writer thread.
fn end_inline(conn: &Connection) {
    let restored = conn.busy_timeout(WRITER_BUSY_TIMEOUT).is_ok()
        && conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)
            .is_ok();
    if !restored {
        tracing::error!(path = ?conn.path(), "could not restore the write connection's settings");
    }
}

/// [`run_batch`] in a transaction already begun.
fn run_begun(
    conn: &Connection,
    batch: Vec<WriteJob>,
    durability: Durability,
    sync: &SyncState,
) -> Finished {
    let commits: Vec<Commit> = batch.iter().map(|job| job.commit).collect();
    let ran: Vec<RanJob> = batch.into_iter().map(|job| (job.run)(conn)).collect();
    let committed = if ran.iter().all(|job| job.intact) {
        sync.begun.fetch_add(1, Ordering::AcqRel);
        let committed = conn
            .execute_batch("COMMIT")
            .map_err(|e| format!("commit failed: {e}"));
        sync.done.fetch_add(1, Ordering::AcqRel);
        committed
    } else {
        Err("a savepoint could not be closed; the batch was rolled back".to_owned())
    };
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let mut waiters = Vec::new();
    let outcomes = commits
        .into_iter()
        .map(|commit| match &committed {
            Ok(()) if commit.waits_for_disk(durability) => {
                let (waiter, synced) = oneshot::channel();
                waiters.push(waiter);
                Ok(OnDisk(Pending::Fsync(synced)))
            }
            Ok(()) => Ok(OnDisk::now()),
            Err(e) => Err(StoreError::Task(e.clone())),
        })
        .collect();
    (ran, outcomes, waiters)
}

fn run_writer(
    shared: &WriterShared,
    durability: Durability,
    jobs: mpsc::Receiver<WriteJob>,
    sync: &SyncState,
    to_sync: mpsc::Sender<Vec<SyncWaiter>>,
    syncer: JoinHandle<()>,
) {
    // A write taken from the queue while the last batch's fsync was decided.
    let mut next: Option<WriteJob> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let mut batch = vec![first];
        take_waiting(&jobs, &mut batch);
        // Counted out only now: a write taken early (`next`) is still queued until its batch.
        shared.queued.fetch_sub(batch.len(), Ordering::AcqRel);
        if sync.failed.load(Ordering::Acquire) {
            // Dropping the jobs unrun drops their reply channels: each caller gets an error.
            drop(batch);
            continue;
        }
        // Held for the batch alone: between batches, a small write may run on its caller.
        let finished = match lock(&shared.conn).as_ref() {
            Some(conn) => run_batch(conn, batch, durability, sync),
            None => None,
        };
        // This commit checkpointed the WAL if it had grown: small writes may skip the thread
        // again.
        shared.inline_run.store(0, Ordering::Release);
        let Some((ran, outcomes, mut waiters)) = finished else {
            continue;
        };
        // With more writes waiting, the fsync runs here, as before the next batch, which
        // gathers meanwhile: one commit per fsync, and no hand-off to pay under load. With none,
        // it runs on the sync thread, and what comes next (the writes of a queue's consumer that
        // started at the send's commit) commits while it runs. Whether a write is waiting is
        // decided before anyone is answered (else the first write of whoever is answered could
        // arrive first and wait for the fsync here); the hand-over itself comes after the
        // answers, so that the task woken at the commit wakes first, and the sync thread a few
        // microseconds later. Should the sync thread be gone, the waiters drop: their writes
        // answer an error.
        let hand_over = !waiters.is_empty() && {
            next = jobs.try_recv().ok();
            next.is_none()
        };
        for (job, outcome) in ran.into_iter().zip(outcomes) {
            (job.complete)(outcome);
        }
        if hand_over {
            let _ = to_sync.send(std::mem::take(&mut waiters));
        }
        if !waiters.is_empty() {
            answer(waiters, &fsync(sync));
        }
    }
    // The last sender is gone: every queued write has been answered or handed to the sync
    // thread, which finishes its fsyncs and stops. Dropping the connection then closes the
    // file; SQLite checkpoints the WAL when its last connection closes.
    drop(to_sync);
    let _ = syncer.join();
    drop(lock(&shared.conn).take());
}

/// Adds the writes waiting in the queue to `batch`, up to [`MAX_BATCH`].
fn take_waiting(jobs: &mpsc::Receiver<WriteJob>, batch: &mut Vec<WriteJob>) {
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// What a write is told once an fsync of its database failed.
fn failed_sync() -> StoreError {
    StoreError::Task(
        "the disk failed to sync this database: it takes no writes until the server restarts"
            .into(),
    )
}

/// The WAL, opened for the sync thread. SQLite names it after the database file as it
/// resolved it (through symbolic links); it exists once the schema's steps have read the
/// database in WAL mode, and is removed only when the last connection closes, the writer's,
/// after the sync thread has stopped.
fn open_wal(conn: &Connection, path: &Path) -> Result<File, StoreError> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Task(format!(
            "{} is in journal mode {mode}, not WAL",
            path.display()
        )));
    }
    let resolved = conn
        .path()
        .filter(|p| !p.is_empty())
        .map_or_else(|| path.to_path_buf(), PathBuf::from);
    let mut wal = resolved.into_os_string();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    File::open(&wal).map_err(StoreError::io(&wal))
}

/// Makes the WAL durable for the writes that wait for it: one fsync for every batch committed
/// since the last one began. After a failed fsync it answers every later wait with the failure.
fn run_syncer(sync: &SyncState, pending: mpsc::Receiver<Vec<SyncWaiter>>) {
    while let Ok(mut waiters) = pending.recv() {
        while let Ok(more) = pending.try_recv() {
            waiters.extend(more);
        }
        answer(waiters, &fsync(sync));
    }
}

fn answer(waiters: Vec<SyncWaiter>, outcome: &Result<(), String>) {
    for waiter in waiters {
        let _ = waiter.send(outcome.clone());
    }
}

/// Makes every commit done so far durable, on the writer thread or the sync thread (each
/// covers what was committed before it began, so the two may overlap). After a failed fsync it
/// fails at once.
fn fsync(sync: &SyncState) -> Result<(), String> {
    if sync.failed.load(Ordering::Acquire) {
        return Err(failed_sync().to_string());
    }
    let covered = sync.done.load(Ordering::Acquire);
    let synced = sync_data(&sync.wal, sync).and_then(|()| {
        let mut named = lock(&sync.named);
        if !*named {
            sync_directory(&sync.path)?;
            *named = true;
        }
        Ok(())
    });
    match synced {
        Ok(()) => {
            sync.synced.fetch_max(covered, Ordering::AcqRel);
            Ok(())
        }
        Err(e) => {
            sync.failed.store(true, Ordering::Release);
            lock(&FAILED_SYNCS).push(sync.path.clone());
            tracing::error!(
                error = %e,
                path = ?sync.path,
                "the WAL could not be synced: the database takes no more writes until the server restarts"
            );
            Err(format!("the disk failed to sync the database: {e}"))
        }
    }
}

/// Syncs the directory that holds the database and its WAL.
fn sync_directory(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

fn sync_data(wal: &File, sync: &SyncState) -> std::io::Result<()> {
    #[cfg(test)]
    {
        sync.syncs.fetch_add(1, Ordering::Relaxed);
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        lock(&sync.threads).push(thread);
        drop(lock(&sync.gate));
        if sync.fail_next.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("an injected failure"));
        }
    }
    #[cfg(not(test))]
    let _ = sync;
    wal.sync_data()
}

/// Runs `write` in a savepoint; returns its outcome and whether the savepoint was closed.
fn run_in_savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, bool) {
    if let Err(e) = conn.execute_batch("SAVEPOINT job") {
        return (Err(e.into()), true);
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| write(conn)))
        .unwrap_or_else(|_| Err(StoreError::Task("a write panicked".into())));
    let end = if outcome.is_ok() {
        "RELEASE job"
    } else {
        "ROLLBACK TO job; RELEASE job"
    };
    match conn.execute_batch(end) {
        Ok(()) => (outcome, true),
        Err(e) => (Err(e.into()), false),
    }
}

#[cfg(test)]
// The sync gate is a std mutex held across awaits on purpose: holding it stands for a slow
// disk, and the sync thread, not the runtime, is what waits on it.
#[allow(clippy::await_holding_lock)]
mod tests {
    use super::*;

    fn migrate(conn: &Connection, _: &Path) -> Result<(), StoreError> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t(k TEXT PRIMARY KEY, v INTEGER)")?;
        Ok(())
    }

    fn open(dir: &Path) -> Database {
        open_with(dir, Durability::Full)
    }

    fn open_with(dir: &Path, durability: Durability) -> Database {
        let options = DatabaseOptions {
            readers: 2,
            durability,
            create: true,
            migrate,
        };
        Database::open(&dir.join("t.db"), options).unwrap()
    }

    fn syncs(db: &Database) -> u64 {
        db.inner.sync.syncs.load(Ordering::Relaxed)
    }

    fn put(k: &'static str) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send {
        move |c| {
            c.execute("INSERT OR REPLACE INTO t(k, v) VALUES (?1, 1)", [k])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_write_waits_for_an_fsync_as_its_durability_asks() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_with(dir.path(), Durability::Full);
        db.write_relaxed(put("a")).await.unwrap();
        assert_eq!(syncs(&db), 0, "a relaxed write does not wait for the disk");
        db.write(put("b")).await.unwrap();
        assert_eq!(
            syncs(&db),
            1,
            "an ordinary write does, with full durability"
        );
        db.write_durable(put("c")).await.unwrap();
        assert_eq!(syncs(&db), 2);
        db.close();

        let dir = tempfile::tempdir().unwrap();
        let db = open_with(dir.path(), Durability::Process);
        db.write_relaxed(put("a")).await.unwrap();
        db.write(put("b")).await.unwrap();
        assert_eq!(
            syncs(&db),
            0,
            "with process durability no ordinary write waits"
        );
        db.write_durable(put("c")).await.unwrap();
        assert_eq!(
            syncs(&db),
            1,
            "a durable write waits whatever the durability"
        );
        db.close();
    }

    #[tokio::test]
    async fn every_commit_is_left_to_the_sync_thread() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let found: i64 = db
            .write(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(found, 1, "NORMAL: the writer's commits do not fsync");
        db.close();
    }

    #[tokio::test]
    async fn a_committed_write_is_seen_before_it_is_on_disk_and_answered_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(put("warm")).await.unwrap();
        let gate = lock(&db.inner.sync.gate);
        let ((), on_disk) = db.write_committed(put("k")).await.unwrap();
        let seen: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t WHERE k = 'k'", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(seen, 1, "committed, so visible");
        // Other writes commit while the fsync waits; ordinary ones are answered after it.
        db.write_relaxed(put("relaxed")).await.unwrap();
        let ordinary = tokio::spawn({
            let db = db.clone();
            async move { db.write(put("ordinary")).await }
        });
        let barrier = tokio::spawn({
            let db = db.clone();
            async move { db.wait_on_disk().await }
        });
        let mut on_disk = std::pin::pin!(on_disk.wait());
        let early = tokio::time::timeout(Duration::from_millis(50), &mut on_disk).await;
        assert!(early.is_err(), "not on disk while the fsync is held");
        assert!(!ordinary.is_finished() && !barrier.is_finished());
        drop(gate);
        on_disk.await.unwrap();
        ordinary.await.unwrap().unwrap();
        barrier.await.unwrap().unwrap();
        // The held fsync had taken `k` alone; the rest came during it and took more.
        assert!(syncs(&db) >= 3);
        db.close();
    }

    #[tokio::test]
    async fn a_commit_made_during_an_fsync_is_not_counted_as_covered_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let gate = lock(&db.inner.sync.gate);
        let first = tokio::spawn({
            let db = db.clone();
            async move { db.write(put("a")).await }
        });
        until_syncs(&db, 1).await;
        db.write_relaxed(put("b")).await.unwrap();
        drop(gate);
        first.await.unwrap().unwrap();
        db.wait_on_disk().await.unwrap();
        assert_eq!(syncs(&db), 2, "`b` needed an fsync of its own");
        db.close();
    }

    async fn has(db: &Database, k: &'static str) -> bool {
        let found: i64 = db
            .read(move |c| {
                Ok(c.query_row("SELECT count(*) FROM t WHERE k = ?1", [k], |r| r.get(0))?)
            })
            .await
            .unwrap();
        found == 1
    }

    /// A write of `k` that holds the writer thread for 100 ms, under way when this returns.
    async fn busy_writer(
        db: &Database,
        k: &'static str,
    ) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let slow = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(move |c| {
                    std::thread::sleep(Duration::from_millis(100));
                    put(k)(c)
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        slow
    }

    #[tokio::test]
    async fn an_idle_writer_hands_its_fsync_over_and_a_busy_one_syncs_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(put("a")).await.unwrap();
        // `b` holds the writer for a while; `c` is queued meanwhile, so once `b` commits the
        // writer finds more to do and runs `b`'s fsync itself before `c`'s batch.
        let slow = busy_writer(&db, "b").await;
        db.write(put("c")).await.unwrap();
        slow.await.unwrap().unwrap();
        let threads = lock(&db.inner.sync.threads).clone();
        assert_eq!(threads.len(), 3, "{threads:?}");
        assert!(threads[0].starts_with("sqlite-sync:"), "{threads:?}");
        assert!(threads[1].starts_with("sqlite-writer:"), "{threads:?}");
        assert!(threads[2].starts_with("sqlite-sync:"), "{threads:?}");
        assert!(has(&db, "b").await && has(&db, "c").await);
        db.close();
    }

    /// A write that records which thread ran it.
    fn put_noting_thread(
        k: impl Into<String>,
        threads: &Arc<Mutex<Vec<String>>>,
    ) -> impl FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static {
        let (k, threads) = (k.into(), Arc::clone(threads));
        move |c| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            lock(&threads).push(name);
            c.execute("INSERT OR REPLACE INTO t(k, v) VALUES (?1, 1)", [k])?;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_small_write_commits_on_its_caller_when_the_writer_is_idle_and_queues_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ran = Arc::new(Mutex::new(Vec::new()));
        let gate = lock(&db.inner.sync.gate);
        let ((), on_disk) = db
            .write_committed_small(put_noting_thread("a", &ran))
            .await
            .unwrap();
        assert!(has(&db, "a").await, "committed before its fsync");
        let mut on_disk = std::pin::pin!(on_disk.wait());
        let early = tokio::time::timeout(Duration::from_millis(50), &mut on_disk).await;
        assert!(early.is_err(), "answered on disk only after its fsync");
        drop(gate);
        on_disk.await.unwrap();
        let synced_by = lock(&db.inner.sync.threads).clone();
        assert_eq!(synced_by.len(), 1, "{synced_by:?}");
        assert!(synced_by[0].starts_with("sqlite-sync:"), "{synced_by:?}");

        // With the writer busy, it queues: the writer thread runs it after the batch it is in.
        let slow = busy_writer(&db, "b").await;
        let ((), on_disk) = db
            .write_committed_small(put_noting_thread("c", &ran))
            .await
            .unwrap();
        on_disk.wait().await.unwrap();
        slow.await.unwrap().unwrap();
        assert!(has(&db, "b").await && has(&db, "c").await);

        // The writer took `c` early, to decide `b`'s fsync: once its batch is done, the
        // writer is idle again and the next small write is its caller's.
        let ((), on_disk) = db
            .write_committed_small(put_noting_thread("d", &ran))
            .await
            .unwrap();
        on_disk.wait().await.unwrap();

        let ran = lock(&ran).clone();
        let caller = std::thread::current().name().unwrap_or("").to_owned();
        assert_eq!(ran.len(), 3, "{ran:?}");
        assert_eq!(ran[0], caller, "idle: on the caller's thread");
        assert!(
            ran[1].starts_with("sqlite-writer:"),
            "busy: queued, {ran:?}"
        );
        assert_eq!(ran[2], caller, "idle again: on the caller's thread");
        db.close();
    }

    /// The write connection's autocheckpoint threshold and busy timeout, as a write sees them.
    fn settings(c: &Connection) -> Result<(i64, i64), StoreError> {
        Ok((
            c.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?,
            c.pragma_query_value(None, "busy_timeout", |r| r.get(0))?,
        ))
    }

    #[tokio::test]
    async fn a_small_write_on_its_caller_neither_checkpoints_nor_waits_for_a_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let (inline, _) = db.write_committed_small(settings).await.unwrap();
        assert_eq!(
            inline,
            (0, 0),
            "the checkpoint and the waiting are the writer thread's"
        );
        let on_writer = db.write(settings).await.unwrap();
        let waits = i64::try_from(WRITER_BUSY_TIMEOUT.as_millis()).unwrap();
        assert_eq!(
            on_writer,
            (WAL_AUTOCHECKPOINT, waits),
            "and given back to it"
        );
        db.close();
    }

    #[tokio::test]
    async fn a_small_write_after_close_began_is_refused_and_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(put("warm")).await.unwrap();
        // `a`'s fsync is held, so the closing writer waits for the sync thread.
        let gate = lock(&db.inner.sync.gate);
        let first = tokio::spawn({
            let db = db.clone();
            async move { db.write(put("a")).await }
        });
        until_syncs(&db, 2).await;
        let closing = tokio::task::spawn_blocking({
            let db = db.clone();
            move || db.close()
        });
        while lock(&db.inner.to_sync).is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let refused = db.write_committed_small(put("b")).await;
        assert!(matches!(refused, Err(StoreError::Closed)), "{refused:?}");
        drop(gate);
        first.await.unwrap().unwrap();
        closing.await.unwrap();
        let db = open(dir.path());
        assert!(has(&db, "a").await);
        assert!(!has(&db, "b").await, "refused, so not written");
        db.close();
    }

    #[tokio::test]
    async fn a_run_of_small_writes_leaves_one_to_the_writer_whose_commit_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let ran = Arc::new(Mutex::new(Vec::new()));
        for i in 0..MAX_INLINE_RUN + 10 {
            let ((), on_disk) = db
                .write_committed_small(put_noting_thread(format!("k{i}"), &ran))
                .await
                .unwrap();
            on_disk.wait().await.unwrap();
        }
        let ran = lock(&ran).clone();
        let on_writer: Vec<usize> = (0..ran.len())
            .filter(|&i| ran[i].starts_with("sqlite-writer:"))
            .collect();
        assert_eq!(
            on_writer,
            [MAX_INLINE_RUN],
            "one in a run of {MAX_INLINE_RUN}"
        );
        db.close();
    }

    #[tokio::test]
    async fn a_small_write_that_fails_or_panics_on_its_caller_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let failed = db
            .write_committed_small(|c| {
                put("half")(c)?;
                Err::<(), _>(StoreError::Task("refused".into()))
            })
            .await
            .err()
            .unwrap();
        assert!(failed.to_string().contains("refused"), "{failed}");
        let panicked = db
            .write_committed_small(|_| -> Result<(), StoreError> { panic!("boom") })
            .await
            .err()
            .unwrap();
        assert!(matches!(panicked, StoreError::Task(_)), "{panicked}");
        let ((), on_disk) = db.write_committed_small(put("after")).await.unwrap();
        on_disk.wait().await.unwrap();
        assert!(!has(&db, "half").await, "the failed write left nothing");
        assert!(has(&db, "after").await);
        db.close();
        assert!(matches!(
            db.write_committed_small(put("closed")).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn waiting_on_disk_is_at_once_with_process_durability() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_with(dir.path(), Durability::Process);
        db.write(put("a")).await.unwrap();
        let _gate = lock(&db.inner.sync.gate);
        db.wait_on_disk().await.unwrap();
        assert_eq!(syncs(&db), 0);
    }

    #[tokio::test]
    async fn waiting_on_disk_syncs_only_what_no_fsync_covered() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        // What the WAL held when it was opened was never synced by this database.
        db.wait_on_disk().await.unwrap();
        assert_eq!(syncs(&db), 1);
        db.write(put("a")).await.unwrap();
        assert_eq!(syncs(&db), 2);
        // Everything committed is on disk: no fsync, even with the sync thread held.
        {
            let _gate = lock(&db.inner.sync.gate);
            db.wait_on_disk().await.unwrap();
        }
        assert_eq!(syncs(&db), 2);
        // A relaxed commit is not: waiting for it takes an fsync.
        db.write_relaxed(put("b")).await.unwrap();
        db.wait_on_disk().await.unwrap();
        assert_eq!(syncs(&db), 3);
        db.wait_on_disk().await.unwrap();
        assert_eq!(syncs(&db), 3);
        db.close();
    }

    /// Waits until `n` fsyncs have begun (the last one may be held at the gate).
    async fn until_syncs(db: &Database, n: u64) {
        for _ in 0..1000 {
            if syncs(db) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{n} fsyncs never began");
    }

    #[tokio::test]
    async fn after_a_failed_fsync_no_write_is_answered_or_taken_and_reads_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let db = open(dir.path());
        db.write(put("a")).await.unwrap();
        // `b`'s fsync is held, then fails; `c`, committed meanwhile, is waited for by a later
        // fsync, whose success would prove nothing.
        let gate = lock(&db.inner.sync.gate);
        let first = tokio::spawn({
            let db = db.clone();
            async move { db.write(put("b")).await }
        });
        until_syncs(&db, 2).await;
        db.write_relaxed(put("c")).await.unwrap();
        let later = tokio::spawn({
            let db = db.clone();
            async move { db.wait_on_disk().await }
        });
        db.inner.sync.fail_next.store(true, Ordering::Release);
        drop(gate);
        let failed = first.await.unwrap().unwrap_err();
        assert!(failed.to_string().contains("failed to sync"), "{failed}");
        let later = later.await.unwrap().unwrap_err();
        assert!(later.to_string().contains("failed to sync"), "{later}");
        assert_eq!(syncs(&db), 2, "no fsync after the failed one");
        let refused = db.write(put("d")).await.unwrap_err();
        assert!(refused.to_string().contains("failed to sync"), "{refused}");
        let refused = db.write_committed_small(put("d")).await.err().unwrap();
        assert!(refused.to_string().contains("failed to sync"), "{refused}");
        let rows: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(rows, 3, "a, b and c are committed; d was refused");
        db.close();
        // Opening it again does not make it trustworthy.
        let options = DatabaseOptions {
            readers: 1,
            durability: Durability::Full,
            create: false,
            migrate,
        };
        let reopened = Database::open(&path, options).err().unwrap();
        assert!(
            reopened.to_string().contains("failed to sync"),
            "{reopened}"
        );
    }

    /// Runs `sql` (one integer back) through `read` and tells which threads ran the closure.
    async fn read_recording_threads(db: &Database, sql: &'static str) -> (i64, Vec<String>) {
        let threads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&threads);
        let value = db
            .read(move |c| {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                seen.lock().unwrap().push(name);
                Ok(c.query_row(sql, [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        let threads = threads.lock().unwrap().clone();
        (value, threads)
    }

    #[tokio::test]
    async fn short_reads_run_inline_and_long_ones_move_to_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let here = std::thread::current().name().unwrap_or("").to_owned();
        // The first read opens a connection, which is done on the blocking pool.
        let (_, threads) = read_recording_threads(&db, "SELECT 1").await;
        assert_eq!(threads.len(), 1);
        assert_ne!(threads[0], here);
        let (one, threads) = read_recording_threads(&db, "SELECT 1").await;
        assert_eq!((one, threads), (1, vec![here.clone()]));
        // A million steps: far past the inline budget, so given up inline and run again (to
        // completion) elsewhere; well within the tests' read timeout (half a second) even on a
        // busy machine, where two million once took longer.
        let long =
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 200000)
                    SELECT count(*) FROM n";
        let (count, threads) = read_recording_threads(&db, long).await;
        assert_eq!(count, 200_000);
        assert_eq!(threads.len(), 2, "{threads:?}");
        assert_eq!(threads[0], here);
        assert_ne!(threads[1], here);
        // The connection came back and the next short read is inline again.
        let (_, threads) = read_recording_threads(&db, "SELECT 1").await;
        assert_eq!(threads, vec![here]);
    }

    #[tokio::test]
    async fn a_read_past_its_time_is_stopped_and_its_reader_serves_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(put("a")).await.unwrap();
        let started = Instant::now();
        let endless = db
            .read(|c| {
                Ok(c.query_row(
                    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) \
                     SELECT count(*) FROM n",
                    [],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await;
        assert!(matches!(endless, Err(StoreError::TimedOut)), "{endless:?}");
        let took = started.elapsed();
        assert!(took >= READ_TIMEOUT && took < READ_TIMEOUT * 10, "{took:?}");
        assert!(has(&db, "a").await, "the reader serves the next read");
        db.close();
    }

    #[tokio::test]
    async fn a_cached_statement_is_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let reprepares = db
            .read(|c| {
                let sql = "SELECT k FROM t WHERE k > ?1 ORDER BY k LIMIT ?2 OFFSET ?3";
                for limit in 1..5_i64 {
                    c.prepare_cached(sql)?
                        .query_map(("a", limit, limit), |r| r.get::<_, String>(0))?
                        .for_each(drop);
                }
                let statement = c.prepare_cached(sql)?;
                Ok(statement.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepares, 0);
    }

    #[tokio::test]
    async fn a_panicking_read_is_an_error_and_the_next_read_works() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        for _ in 0..2 {
            // Once on the blocking pool (no connection yet), once inline.
            let outcome: Result<(), _> = db.read(|_| panic!("boom")).await;
            assert!(matches!(outcome, Err(StoreError::Task(_))), "{outcome:?}");
            let (one, _) = read_recording_threads(&db, "SELECT 1").await;
            assert_eq!(one, 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_all_commit_and_a_failing_one_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute("INSERT INTO t VALUES (?1, ?2)", (format!("k{i}"), i))?;
                    if i % 50 == 0 {
                        // Inserts its own key again: the whole job, first row too, must roll back.
                        c.execute("INSERT INTO t VALUES (?1, 0)", [format!("k{i}")])
                            .map_err(crate::sqlite::from_write)?;
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut failed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => {}
                Err(StoreError::Conflict) => failed += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(failed, 4);
        let count: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 196);
        let has_k50: bool = db
            .read(|c| {
                Ok(
                    c.query_row("SELECT count(*) FROM t WHERE k = 'k50'", [], |r| {
                        r.get::<_, i64>(0)
                    })? == 1,
                )
            })
            .await
            .unwrap();
        assert!(!has_k50, "a failed job's own row must be rolled back");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_survives() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let err = db
            .write(|_| -> Result<(), StoreError> { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Task(_)));
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES ('a', 1)", [])?))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn close_flushes_queued_writes_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        let pending: Vec<_> = (0..50)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.write(move |c| {
                        Ok(c.execute("INSERT INTO t VALUES (?1, 1)", [format!("k{i}")])?)
                    })
                    .await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let closer = db.clone();
        tokio::task::spawn_blocking(move || closer.close())
            .await
            .unwrap();
        let mut committed = 0;
        for p in pending {
            if p.await.unwrap().is_ok() {
                committed += 1;
            }
        }
        assert!(matches!(
            db.write(|_| Ok(())).await,
            Err(StoreError::Closed)
        ));
        // Reopen: exactly the writes that were acknowledged are there.
        let db = open(dir.path());
        let count: i64 = db
            .read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, committed);
    }

    #[tokio::test]
    async fn close_checkpoints_and_leaves_only_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(dir.path());
        db.write(|c| Ok(c.execute("INSERT INTO t VALUES ('a', 1)", [])?))
            .await
            .unwrap();
        db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        db.close_async().await;
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, ["t.db"]);
    }
}
