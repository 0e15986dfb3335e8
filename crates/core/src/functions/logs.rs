//! The invocation log on its way to the store: the queue that runs put their entries on, bounded
//! in bytes, and the [`LogWriter`] that takes them off in batches.
//!
//! Entries are written off the invocations' path, so a writer that falls behind (a slow
//! database, a flood of runs that log much) would otherwise hold every entry in memory until it
//! caught up. The queue holds at most [`MAX_QUEUED_BYTES`]: beyond, a run's entry keeps its
//! outcome and error but not its console lines (they are counted in `logs_dropped`), and past
//! [`MAX_QUEUED_BYTES_HARD`] an entry is not kept at all, with a warning.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cloudlet_store::{AppName, FunctionLogRow, FunctionStore};
use serde_json::{Value as Json, json};
use tokio::sync::{broadcast, mpsc};

/// How long the log writer gathers entries before writing them in one transaction.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The bytes of entries waiting for the writer beyond which new entries lose their console
/// lines. A run keeps at most 32 KiB of them, so this is thousands of runs' worth.
pub(super) const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// The bytes beyond which new entries are not kept at all (an entry without its lines still
/// holds its error, up to 16 KiB).
pub(super) const MAX_QUEUED_BYTES_HARD: usize = MAX_QUEUED_BYTES + 32 * 1024 * 1024;

/// Apps whose log entries were written and not yet taken by a slow follower; beyond, it hears
/// that it lagged and reads anyway.
const LOGS_WRITTEN: usize = 256;

/// An entry on its way, with what it counts against the queue's bytes.
struct Queued {
    app: AppName,
    row: FunctionLogRow,
    bytes: usize,
}

/// Where runs put their entries.
pub(super) struct LogQueue {
    entries: mpsc::UnboundedSender<Queued>,
    /// Bytes of the entries sent and not yet taken by the writer.
    queued: Arc<AtomicUsize>,
    /// Whether entries are being dropped now, so that a flood warns once, not per entry.
    dropping: AtomicBool,
    /// Told each app whose entries were written, for those following its logs.
    pub(super) written: broadcast::Sender<AppName>,
}

impl LogQueue {
    /// The queue, and the writer that empties it into `store`, keeping the newest `keep`
    /// entries of each app.
    pub(super) fn new(store: Arc<dyn FunctionStore>, keep: i64) -> (LogQueue, LogWriter) {
        let (queue, pending) = LogQueue::channel();
        let writer = LogWriter {
            pending,
            store,
            keep,
            written: queue.written.clone(),
        };
        (queue, writer)
    }

    fn channel() -> (LogQueue, Pending) {
        let (entries, receiver) = mpsc::unbounded_channel();
        let (written, _) = broadcast::channel(LOGS_WRITTEN);
        let queued = Arc::new(AtomicUsize::new(0));
        let pending = Pending {
            entries: receiver,
            queued: Arc::clone(&queued),
        };
        let queue = LogQueue {
            entries,
            queued,
            dropping: AtomicBool::new(false),
            written,
        };
        (queue, pending)
    }

    /// An entry's `detail`: its console lines and error, or only the error and the number of
    /// lines when the queue is full.
    pub(super) fn detail(&self, logs: Vec<Json>, logs_dropped: usize, error: Json) -> String {
        if self.queued.load(Ordering::Acquire) >= MAX_QUEUED_BYTES {
            let dropped = logs_dropped.saturating_add(logs.len());
            return json!({ "logs": [], "logs_dropped": dropped, "error": error }).to_string();
        }
        json!({ "logs": logs, "logs_dropped": logs_dropped, "error": error }).to_string()
    }

    /// Puts an entry on the queue, unless the queue is past its hard bound.
    pub(super) fn send(&self, app: &AppName, row: FunctionLogRow) {
        let bytes = size_of(&row);
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if before.saturating_add(bytes) > MAX_QUEUED_BYTES_HARD {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            if !self.dropping.swap(true, Ordering::AcqRel) {
                tracing::warn!(app = %app, "the function log writer is behind; dropping entries");
            }
            return;
        }
        self.dropping.store(false, Ordering::Release);
        let queued = Queued {
            app: app.to_owned(),
            row,
            bytes,
        };
        if self.entries.send(queued).is_err() {
            // The writer has stopped (shutdown): nothing will take these bytes off.
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
        }
    }
}

/// The writer's end of the queue.
struct Pending {
    entries: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
}

impl Pending {
    /// Everything queued now (after `first`), by app, its bytes taken off the queue's count.
    fn take(&mut self, first: Option<Queued>) -> HashMap<AppName, Vec<FunctionLogRow>> {
        let mut by_app: HashMap<AppName, Vec<FunctionLogRow>> = HashMap::new();
        let mut taken = 0usize;
        let mut next = first;
        while let Some(entry) = next.take().or_else(|| self.entries.try_recv().ok()) {
            taken += entry.bytes;
            by_app.entry(entry.app).or_default().push(entry.row);
        }
        self.queued.fetch_sub(taken, Ordering::AcqRel);
        by_app
    }
}

/// What an entry counts against the queue: its text and a little for the rest.
fn size_of(row: &FunctionLogRow) -> usize {
    row.detail.len() + row.request_id.len() + row.function.len() + 128
}

/// Writes invocation logs off the invocations' path, gathering what arrives within
/// [`BATCH_WINDOW`] into one write per app. The composition root runs it (see
/// [`LogWriter::run`]) so that shutdown can flush it before the databases close.
pub struct LogWriter {
    pending: Pending,
    store: Arc<dyn FunctionStore>,
    keep: i64,
    written: broadcast::Sender<AppName>,
}

impl LogWriter {
    /// Writes entries as they come until `stop` resolves, then writes what is queued and
    /// returns.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let first = tokio::select! {
                first = self.pending.entries.recv() => first,
                () = &mut stop => None,
            };
            let Some(first) = first else { break };
            // Gather what arrives for a moment: one write for many invocations.
            tokio::time::sleep(BATCH_WINDOW).await;
            self.write(Some(first)).await;
        }
        self.write(None).await;
    }

    async fn write(&mut self, first: Option<Queued>) {
        let keep = usize::try_from(self.keep).unwrap_or(0);
        for (app, mut rows) in self.pending.take(first) {
            // Only the newest `keep` would stay after the write.
            rows.drain(..rows.len().saturating_sub(keep));
            match self.store.append_logs(&app, rows, self.keep).await {
                // Nobody following is no error.
                Ok(()) => drop(self.written.send(app)),
                Err(e) => tracing::warn!(app = %app, error = %e, "could not write function logs"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(detail: String) -> FunctionLogRow {
        FunctionLogRow {
            id: 0,
            at_ms: 1,
            request_id: "req".into(),
            function: "f".into(),
            version: 1,
            trigger: "http".into(),
            outcome: "ok".into(),
            micros: 1,
            memory_bytes: 1,
            cold: false,
            detail,
        }
    }

    fn app() -> AppName {
        AppName::parse("shop").expect("a valid name")
    }

    fn lines() -> Vec<Json> {
        vec![json!({ "level": "log", "message": "x".repeat(1000) })]
    }

    #[test]
    fn a_queue_past_its_bound_keeps_errors_but_not_lines_then_nothing_until_the_writer_takes() {
        let (queue, mut pending) = LogQueue::channel();
        let error = json!({ "message": "boom", "stack": "" });
        // Under the bound an entry keeps its lines.
        let detail = queue.detail(lines(), 2, error.clone());
        let kept: Json = serde_json::from_str(&detail).expect("json");
        assert_eq!(kept["logs"].as_array().map(Vec::len), Some(1));
        assert_eq!(kept["logs_dropped"], 2);
        // Fill the queue to its bound with entries of 1 MiB.
        let big = "y".repeat(1024 * 1024);
        let mut sent = 0usize;
        while queue.queued.load(Ordering::Acquire) < MAX_QUEUED_BYTES {
            queue.send(&app(), row(big.clone()));
            sent += 1;
        }
        let detail = queue.detail(lines(), 2, error.clone());
        let stripped: Json = serde_json::from_str(&detail).expect("json");
        assert_eq!(stripped["logs"], json!([]));
        assert_eq!(
            stripped["logs_dropped"], 3,
            "the line is counted as dropped"
        );
        assert_eq!(stripped["error"], error, "the error stays");
        // Past the hard bound entries are not queued at all.
        while queue.queued.load(Ordering::Acquire) + big.len() <= MAX_QUEUED_BYTES_HARD {
            queue.send(&app(), row(big.clone()));
            sent += 1;
        }
        let before = queue.queued.load(Ordering::Acquire);
        queue.send(&app(), row(big.clone()));
        assert_eq!(queue.queued.load(Ordering::Acquire), before);
        // The writer takes every queued entry, and the count goes back to nothing.
        let taken = pending.take(None);
        assert_eq!(taken.get(&app()).map(Vec::len), Some(sent));
        assert_eq!(queue.queued.load(Ordering::Acquire), 0);
        let detail = queue.detail(lines(), 0, Json::Null);
        let kept: Json = serde_json::from_str(&detail).expect("json");
        assert_eq!(kept["logs"].as_array().map(Vec::len), Some(1));
    }
}
