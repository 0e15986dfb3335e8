//! Each app's collections and their records, as rows and columns. What a collection's fields
//! mean and who may read what are decided in `cloudlet-core`; it hands the store a
//! [`Condition`] made of checked [`Predicate`]s of `cloudlet-query` and the request's
//! [`Bindings`]. Each backend compiles a condition for its own dialect, creates tables, and pages
//! through results.

use std::sync::Arc;

use async_trait::async_trait;
use cloudlet_query::{Bindings, Dialect, Predicate};

use crate::{AppName, StoreError};

/// A value in a column: the values of the query language.
pub type SqlValue = cloudlet_query::Value;

/// How a column stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Real,
    Integer,
    Bool,
    /// JSON text (SQLite) or `jsonb` (PostgreSQL).
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub column_type: ColumnType,
    pub unique: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDef {
    pub columns: Vec<String>,
    pub unique: bool,
}

/// A collection's table: the system columns (`id`, `created_at`, `updated_at`, `owner`) are
/// always there and are not listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub columns: Vec<ColumnDef>,
    pub indexes: Vec<IndexDef>,
}

/// How a collection's table changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableChange {
    pub add: Vec<ColumnDef>,
    pub drop: Vec<String>,
    /// The complete new set of declared indexes (unique columns included).
    pub indexes: Vec<IndexDef>,
}

/// A collection as stored: its definition (JSON, owned by core) and its schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRow {
    pub name: String,
    pub definition: String,
    pub version: i64,
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum BatchOp {
    Insert {
        collection: String,
        record: Record,
        check: Condition,
        emit: Option<Emit>,
    },
    Update {
        collection: String,
        id: String,
        condition: Condition,
        set: Record,
        emit: Option<Emit>,
    },
    Delete {
        collection: String,
        id: String,
        condition: Condition,
        emit: Option<Emit>,
    },
}

/// The queue that carries data triggers' deliveries: a name no declared queue can have.
pub const TRIGGER_QUEUE: &str = "_triggers";

/// What a write records in the same transaction: its event in the app's event log
/// (`records.create`, `records.update` or `records.delete`, keyed `{collection}/{id}`, with the
/// record before and after as stored columns), and one message on [`TRIGGER_QUEUE`] per
/// function it triggers, so that a crash between the write and its triggers loses neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emit {
    /// How deep in a chain of triggers the write is (0 for a client's).
    pub depth: i64,
    pub at_ms: i64,
    pub deliveries: Vec<TriggerDelivery>,
}

/// One function a write triggers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerDelivery {
    pub message_id: String,
    pub function: String,
    pub max_attempts: i64,
}

/// A place in an app's event log. Events are read in this order, and it is the order their
/// transactions committed in as far as any reader can tell: on SQLite the sequence alone (one
/// writer; `tx` is 0), on PostgreSQL the writing transaction's id, then the sequence, read only
/// below the oldest write transaction still running, so that no event can later appear before
/// one already read (see `docs/architecture.md`). Shown as `{tx}.{seq}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogPosition {
    pub tx: i64,
    pub seq: i64,
}

impl LogPosition {
    /// `{tx}.{seq}`, two non-negative integers; `None` for anything else.
    pub fn parse(text: &str) -> Option<LogPosition> {
        let (tx, seq) = text.split_once('.')?;
        let number = |digits: &str| {
            (!digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<i64>().ok())
                .flatten()
        };
        Some(LogPosition {
            tx: number(tx)?,
            seq: number(seq)?,
        })
    }
}

impl std::fmt::Display for LogPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.tx, self.seq)
    }
}

/// Events of the log in order after a position ([`RecordStore::events_after`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsPage {
    pub events: Vec<EventRow>,
    /// Later events are committed but not yet in order (an older transaction still runs, on
    /// PostgreSQL): read again shortly.
    pub pending: bool,
}

/// The ends of an app's event log ([`RecordStore::event_bounds`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogBounds {
    /// The last position a sweep deleted: a reader at or past it has missed nothing.
    pub swept: Option<LogPosition>,
    /// The last event in order.
    pub last: Option<LogPosition>,
}

impl LogBounds {
    /// Where a reader that starts now starts: after everything in order.
    pub fn end(&self) -> LogPosition {
        self.last.max(self.swept).unwrap_or_default()
    }

    /// Whether a reader that left off at `at` can read everything after it: nothing after it
    /// was swept, and it is a place of this log (not past its end).
    pub fn keeps(&self, at: LogPosition) -> bool {
        self.swept.is_none_or(|swept| at >= swept) && at <= self.end()
    }
}

/// The settings key under which an app's log keeps its sweep horizon.
pub(crate) const EVENTS_SWEPT: &str = "events.swept";

/// An event of the app's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// The writing transaction (see [`LogPosition`]).
    pub tx: i64,
    pub seq: i64,
    pub kind: String,
    pub key: String,
    /// JSON: `{collection, id, operation, old, new}`, records as their stored columns.
    pub payload: String,
    pub depth: i64,
    pub at_ms: i64,
}

impl EventRow {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            tx: self.tx,
            seq: self.seq,
        }
    }
}

/// A stored record as JSON: its columns and their values as stored, written straight from
/// the record (a JSON value built first would copy every name and text).
struct StoredRecord<'a>(&'a Record);

impl serde::Serialize for StoredRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            match value {
                SqlValue::Null => map.serialize_entry(name, &())?,
                SqlValue::Bool(b) => map.serialize_entry(name, b)?,
                SqlValue::Int(i) => map.serialize_entry(name, i)?,
                // JSON has no NaN or infinity: serde_json writes them as null.
                SqlValue::Float(f) => map.serialize_entry(name, f)?,
                SqlValue::Text(t) => map.serialize_entry(name, t)?,
            }
        }
        map.end()
    }
}

/// The payload of a record write's event.
#[derive(serde::Serialize)]
struct WritePayload<'a> {
    collection: &'a str,
    id: &'a str,
    operation: &'a str,
    old: Option<StoredRecord<'a>>,
    new: Option<StoredRecord<'a>>,
}

/// The id of the record a write touched.
pub(crate) fn written_id(old: Option<&Record>, new: Option<&Record>) -> String {
    new.or(old)
        .and_then(|r| r.iter().find(|(name, _)| name == "id"))
        .and_then(|(_, v)| match v {
            SqlValue::Text(id) => Some(id.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The payload of a trigger delivery: which function, which event, how deep.
pub(crate) fn delivery_payload(function: &str, seq: i64, depth: i64) -> String {
    serde_json::json!({ "function": function, "event": seq, "depth": depth }).to_string()
}

/// The event of a write: its kind, key and payload.
pub(crate) fn event_of(
    operation: &str,
    collection: &str,
    id: &str,
    old: Option<&Record>,
    new: Option<&Record>,
) -> (String, String, String) {
    let payload = WritePayload {
        collection,
        id,
        operation,
        old: old.map(StoredRecord),
        new: new.map(StoredRecord),
    };
    (
        format!("records.{operation}"),
        format!("{collection}/{id}"),
        serde_json::to_string(&payload)
            .unwrap_or_else(|_| unreachable!("a record's values are always JSON")),
    )
}

/// What one write of a batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    Inserted(Record),
    Updated(Record, Record),
    Deleted(Record),
}

/// A record: column names and values, system columns first.
pub type Record = Vec<(String, SqlValue)>;

/// Which records an operation may touch: every record, narrowed by each of its terms.
#[derive(Debug, Clone, Default)]
pub struct Condition {
    terms: Vec<Term>,
    bindings: Bindings,
}

#[derive(Debug, Clone)]
enum Term {
    Predicate(Arc<Predicate>),
    IdIn(Vec<String>),
}

impl Condition {
    /// Every record.
    pub fn always() -> Self {
        Condition::default()
    }

    /// Whether the condition holds for every record.
    pub(crate) fn is_always(&self) -> bool {
        self.terms.is_empty()
    }

    /// Every record, with what the parameters of predicates added later stand for.
    pub fn with_bindings(bindings: Bindings) -> Self {
        Condition {
            terms: Vec::new(),
            bindings,
        }
    }

    /// Only the records `predicate` holds for.
    pub fn and(mut self, predicate: Arc<Predicate>) -> Self {
        self.terms.push(Term::Predicate(predicate));
        self
    }

    /// Only the records whose id is one of `ids`.
    pub fn and_id_in(mut self, ids: Vec<String>) -> Self {
        self.terms.push(Term::IdIn(ids));
        self
    }

    /// The condition as SQL of `dialect` whose placeholders follow `taken` others, and the
    /// values of its own placeholders.
    pub(crate) fn to_sql(&self, dialect: Dialect, taken: usize) -> (String, Vec<SqlValue>) {
        let mut parts = Vec::with_capacity(self.terms.len());
        let mut values = Vec::new();
        for term in &self.terms {
            let first = taken + values.len();
            match term {
                Term::Predicate(predicate) => {
                    let owned;
                    let compiled = if first == 0 {
                        predicate.sql(dialect)
                    } else {
                        owned = predicate.sql_after(dialect, first);
                        &owned
                    };
                    parts.push(format!("({})", compiled.sql));
                    values.extend(compiled.params.iter().map(|p| self.bindings.resolve(p)));
                }
                Term::IdIn(ids) if ids.is_empty() => parts.push("(FALSE)".to_owned()),
                Term::IdIn(ids) => {
                    let placeholders: Vec<String> = (1..=ids.len())
                        .map(|i| dialect.placeholder(first + i))
                        .collect();
                    parts.push(format!("(\"id\" IN ({}))", placeholders.join(", ")));
                    values.extend(ids.iter().cloned().map(SqlValue::Text));
                }
            }
        }
        if parts.is_empty() {
            return ("(TRUE)".to_owned(), values);
        }
        (parts.join(" AND "), values)
    }
}

/// One sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
    /// The column is never null (`id`, `created_at`, `updated_at`): a cursor then bounds it
    /// in a way an index can seek, so a page deep in the listing costs what the first does.
    pub never_null: bool,
}

/// What a listing asks for. Results are ordered by `sort`, then by `id`.
#[derive(Debug, Clone)]
pub struct Select {
    pub condition: Condition,
    pub sort: Vec<SortKey>,
    /// Keyset pagination: the sort values and id of the last record of the previous page.
    pub after: Option<(Vec<SqlValue>, String)>,
    pub limit: usize,
    pub offset: usize,
    pub count: bool,
    /// Rows stop once those read hold this many bytes of values ([`record_bytes`]); the first
    /// always comes. `usize::MAX` for no bound.
    pub max_bytes: usize,
}

/// The stored bytes ([`record_bytes`]) an update may grow a record to: a body is at most
/// 256 KiB of JSON, but an update of some fields adds to the others, so a hundred updates of
/// 256 KiB could make one record of 25 MiB. Twice a body, since what a body holds can take more
/// once stored (PostgreSQL writes json values back with spaces after `,` and `:`). An update
/// that leaves a record smaller is always taken.
pub const MAX_RECORD_STORED_BYTES: usize = 512 * 1024;

/// Whether an update from `old` to `new` grows its record past [`MAX_RECORD_STORED_BYTES`],
/// json values measured as Cloudlet writes them (PostgreSQL answers `1e308` as 309 digits).
pub(crate) fn grows_too_large(old: &Record, new: &Record) -> bool {
    if record_bytes(new) <= MAX_RECORD_STORED_BYTES {
        return false;
    }
    let new = compact_bytes(new);
    new > MAX_RECORD_STORED_BYTES && new > compact_bytes(old)
}

/// [`record_bytes`], with each text that is a JSON array or object measured compactly.
fn compact_bytes(record: &Record) -> usize {
    record
        .iter()
        .map(|(_, value)| match value {
            SqlValue::Text(text) if text.starts_with(['[', '{']) => {
                serde_json::from_str::<serde_json::Value>(text)
                    .map_or(text.len(), |json| json.to_string().len())
            }
            SqlValue::Text(text) => text.len(),
            _ => 8,
        })
        .sum()
}

/// About how many bytes a record's values hold: its text, 8 for anything else.
pub fn record_bytes(record: &Record) -> usize {
    record
        .iter()
        .map(|(_, value)| match value {
            SqlValue::Text(text) => text.len(),
            _ => 8,
        })
        .sum()
}

#[async_trait]
pub trait RecordStore: Send + Sync {
    async fn collections(&self, app: &AppName) -> Result<Vec<CollectionRow>, StoreError>;
    /// Creates the collection and its table; [`StoreError::Conflict`] if it exists.
    async fn create_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        table: TableDef,
    ) -> Result<(), StoreError>;
    /// Changes a collection's table: adds and drops columns and replaces its declared indexes,
    /// and stores the new definition and version, in one transaction. Adding a column never
    /// rewrites rows; dropping one deletes its values.
    async fn alter_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        change: TableChange,
    ) -> Result<(), StoreError>;
    /// Drops the collection and its table with every record; false if there was none.
    async fn drop_collection(&self, app: &AppName, name: &str) -> Result<bool, StoreError>;
    /// Inserts a record, then requires `check` of it, rolling back with
    /// [`StoreError::CheckFailed`] if it does not hold; [`StoreError::Conflict`] if a unique
    /// column already has the value.
    async fn insert(
        &self,
        app: &AppName,
        collection: &str,
        record: Record,
        check: Condition,
        emit: Option<Emit>,
    ) -> Result<(), StoreError>;
    /// The records matching `select`, and their total count when asked.
    async fn select(
        &self,
        app: &AppName,
        collection: &str,
        select: Select,
    ) -> Result<(Vec<Record>, Option<i64>), StoreError>;
    /// The record `id` if `condition` allows it.
    async fn get(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
    ) -> Result<Option<Record>, StoreError>;
    /// In one transaction: if `condition` allows the record `id`, sets the columns of `set` and
    /// returns the record before and after; [`StoreError::Conflict`] on a unique column.
    async fn update(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
        set: Record,
        emit: Option<Emit>,
    ) -> Result<Option<(Record, Record)>, StoreError>;
    /// Runs the operations in one transaction: all of them, or, when one fails (its index in
    /// [`StoreError::InBatch`]), none.
    async fn batch(
        &self,
        app: &AppName,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<BatchOutcome>, StoreError>;
    /// Deletes the record `id` if `condition` allows it; returns it.
    async fn delete(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<Record>, StoreError>;
    /// The event `seq` of the app's log.
    async fn event(&self, app: &AppName, seq: i64) -> Result<Option<EventRow>, StoreError>;
    /// Deletes the events recorded before `before_ms` (those in order up to the last of them)
    /// and remembers the last position deleted; returns how many.
    async fn sweep_events(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError>;
    /// At most `limit` events after `after`, in log order ([`LogPosition`]).
    async fn events_after(
        &self,
        app: &AppName,
        after: LogPosition,
        limit: usize,
    ) -> Result<EventsPage, StoreError>;
    /// Where the log was swept to, and its last event in order.
    async fn event_bounds(&self, app: &AppName) -> Result<LogBounds, StoreError>;
    /// Records an event that no write of the app's data causes (a realtime socket opened or
    /// closed) with its trigger deliveries, in one transaction.
    async fn append_event(
        &self,
        app: &AppName,
        kind: &str,
        key: &str,
        payload: &str,
        emit: Emit,
    ) -> Result<(), StoreError>;
}

/// The log's kinds of realtime events.
pub const REALTIME_CONNECTED: &str = "realtime.connect";
pub const REALTIME_DISCONNECTED: &str = "realtime.disconnect";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_event_carries_the_record_as_stored() {
        let old: Record = vec![
            ("id".into(), SqlValue::Text("r1".into())),
            ("title".into(), SqlValue::Text("say \"hi\" 你好\n".into())),
            ("done".into(), SqlValue::Bool(false)),
            ("n".into(), SqlValue::Int(i64::MIN)),
            ("score".into(), SqlValue::Float(0.5)),
            ("nan".into(), SqlValue::Float(f64::NAN)),
            ("gone".into(), SqlValue::Null),
        ];
        let (kind, key, payload) = event_of("delete", "todos", "r1", Some(&old), None);
        assert_eq!(
            (kind.as_str(), key.as_str()),
            ("records.delete", "todos/r1")
        );
        let payload: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({
                "collection": "todos",
                "id": "r1",
                "operation": "delete",
                "old": {
                    "id": "r1",
                    "title": "say \"hi\" 你好\n",
                    "done": false,
                    "n": i64::MIN,
                    "score": 0.5,
                    "nan": null,
                    "gone": null
                },
                "new": null
            })
        );
    }
}
