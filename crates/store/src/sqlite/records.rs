//! [`RecordStore`] on SQLite: a table `r_{collection}` per collection in the app's database,
//! and the `_collections` table that holds their definitions.

use async_trait::async_trait;
use cloudlet_query::Dialect;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, ToSql, params};

use super::SqliteTenants;
use crate::listing::{
    column_type, create_table_sql, declared_index_prefixes, index_sql, listing_sql, quote, table,
};
use crate::records::{
    BatchOp, BatchOutcome, CollectionRow, Condition, EVENTS_SWEPT, Emit, EventRow, EventsPage,
    LogBounds, LogPosition, Record, RecordStore, Select, SqlValue, TRIGGER_QUEUE, TableChange,
    TableDef, delivery_payload, event_of, grows_too_large, record_bytes, written_id,
};
use crate::{AppName, StoreError};

/// Schema step 4 of an app database.
pub(super) const MIGRATION: &str = "
    CREATE TABLE _collections (
        name        TEXT PRIMARY KEY,
        definition  TEXT NOT NULL,
        version     INTEGER NOT NULL
    ) STRICT;
";

/// A value as a SQLite parameter.
struct Param<'a>(&'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            SqlValue::Null => ToSqlOutput::from(rusqlite::types::Null),
            SqlValue::Bool(b) => ToSqlOutput::from(i64::from(*b)),
            SqlValue::Int(i) => ToSqlOutput::from(*i),
            SqlValue::Float(f) => ToSqlOutput::from(*f),
            SqlValue::Text(t) => ToSqlOutput::from(t.as_str()),
        })
    }
}

/// Values as SQLite parameters.
pub(super) fn bind(values: &[SqlValue]) -> impl rusqlite::Params + '_ {
    rusqlite::params_from_iter(values.iter().map(Param))
}

/// A condition as SQLite SQL and its values.
fn sql_of(condition: &Condition) -> (String, Vec<SqlValue>) {
    condition.to_sql(Dialect::Sqlite, 0)
}

fn value_of(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Int(i),
        ValueRef::Real(f) => SqlValue::Float(f),
        ValueRef::Text(t) | ValueRef::Blob(t) => {
            SqlValue::Text(String::from_utf8_lossy(t).into_owned())
        }
    }
}

/// Reads every column of the rows `sql` selects, with their names. The names are read from the
/// first row's statement: a cached statement is prepared again after an altered table, and only
/// then has the table's current columns.
fn query_records(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
) -> Result<Vec<Record>, StoreError> {
    query_records_within(conn, sql, params, usize::MAX)
}

/// [`query_records`], stopping once the records read hold `max_bytes` ([`record_bytes`]); the
/// first always comes. The rows past it are never read.
fn query_records_within(
    conn: &Connection,
    sql: &str,
    params: &[SqlValue],
    max_bytes: usize,
) -> Result<Vec<Record>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(bind(params))?;
    let mut names: Vec<String> = Vec::new();
    let mut records = Vec::new();
    let mut bytes = 0;
    while (records.is_empty() || bytes < max_bytes)
        && let Some(row) = rows.next()?
    {
        if names.is_empty() {
            names = row
                .as_ref()
                .column_names()
                .iter()
                .map(|n| (*n).to_owned())
                .collect();
        }
        let mut record = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            record.push((name.clone(), value_of(row.get_ref(i)?)));
        }
        bytes += record_bytes(&record);
        records.push(record);
    }
    Ok(records)
}

#[async_trait]
impl RecordStore for SqliteTenants {
    async fn collections(&self, app: &AppName) -> Result<Vec<CollectionRow>, StoreError> {
        self.read_app(app, |c| {
            Ok(c.prepare_cached(
                "SELECT name, definition, version FROM _collections ORDER BY name",
            )?
            .query_map([], |r| {
                Ok(CollectionRow {
                    name: r.get(0)?,
                    definition: r.get(1)?,
                    version: r.get(2)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn create_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        definition: TableDef,
    ) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.execute(
                "INSERT INTO _collections (name, definition, version) VALUES (?1, ?2, ?3)",
                params![collection.name, collection.definition, collection.version],
            )
            .map_err(super::from_write)?;
            for statement in create_table_sql(
                Dialect::Sqlite,
                &table(&collection.name),
                &collection.name,
                &definition,
            ) {
                c.execute_batch(&statement)?;
            }
            Ok(())
        })
        .await
    }

    async fn alter_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        change: TableChange,
    ) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            let name = collection.name.clone();
            let updated = c.execute(
                "UPDATE _collections SET definition = ?2, version = ?3 WHERE name = ?1",
                params![collection.name, collection.definition, collection.version],
            )?;
            if updated == 0 {
                return Err(StoreError::NoSuchTenant);
            }
            // Declared indexes are dropped and made again; the system ones stay.
            let [current, legacy] = declared_index_prefixes(&name);
            let existing: Vec<String> = c
                .prepare(
                    "SELECT name FROM sqlite_master
                     WHERE type = 'index' AND tbl_name = ?1
                     AND (substr(name, 1, length(?2)) = ?2 OR substr(name, 1, length(?3)) = ?3)",
                )?
                .query_map(params![format!("r_{name}"), current, legacy], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for index in existing {
                c.execute_batch(&format!("DROP INDEX {}", quote(&index)))?;
            }
            for column in &change.drop {
                c.execute_batch(&format!(
                    "ALTER TABLE {} DROP COLUMN {}",
                    table(&name),
                    quote(column)
                ))?;
            }
            for column in &change.add {
                c.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {} {}",
                    table(&name),
                    quote(&column.name),
                    column_type(Dialect::Sqlite, column.column_type)
                ))?;
            }
            for statement in index_sql(Dialect::Sqlite, &table(&name), &name, &change.indexes) {
                c.execute_batch(&statement).map_err(super::from_write)?;
            }
            Ok(())
        })
        .await
    }

    async fn drop_collection(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            let removed = c.execute("DELETE FROM _collections WHERE name = ?1", [&name])?;
            if removed == 1 {
                c.execute_batch(&format!("DROP TABLE IF EXISTS {}", table(&name)))?;
            }
            Ok(removed == 1)
        })
        .await
    }

    async fn insert(
        &self,
        app: &AppName,
        collection: &str,
        record: Record,
        check: Condition,
        emit: Option<Emit>,
    ) -> Result<(), StoreError> {
        let collection = collection.to_owned();
        self.write_app(app, move |c| {
            insert_in(c, &collection, &record, check)?;
            emit_in(c, emit.as_ref(), "create", &collection, None, Some(&record))
        })
        .await
    }

    async fn select(
        &self,
        app: &AppName,
        collection: &str,
        select: Select,
    ) -> Result<(Vec<Record>, Option<i64>), StoreError> {
        let collection = collection.to_owned();
        self.read_app(app, move |c| {
            let listing = listing_sql(Dialect::Sqlite, &table(&collection), &select);
            let total = match &listing.count {
                Some((sql, params)) => Some(
                    c.prepare_cached(sql)?
                        .query_row(bind(params), |r| r.get(0))?,
                ),
                None => None,
            };
            let (sql, params) = &listing.page;
            Ok((
                query_records_within(c, sql, params, select.max_bytes)?,
                total,
            ))
        })
        .await
    }

    async fn get(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
    ) -> Result<Option<Record>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.read_app(app, move |c| guarded(c, &collection, &id, &condition))
            .await
    }

    async fn update(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
        set: Record,
        emit: Option<Emit>,
    ) -> Result<Option<(Record, Record)>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write_app(app, move |c| {
            let updated = update_in(c, &collection, &id, condition, set)?;
            if let Some((old, new)) = &updated {
                emit_in(
                    c,
                    emit.as_ref(),
                    "update",
                    &collection,
                    Some(old),
                    Some(new),
                )?;
            }
            Ok(updated)
        })
        .await
    }

    async fn delete(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<Record>, StoreError> {
        let (collection, id) = (collection.to_owned(), id.to_owned());
        self.write_app(app, move |c| {
            let deleted = delete_in(c, &collection, &id, condition)?;
            if let Some(old) = &deleted {
                emit_in(c, emit.as_ref(), "delete", &collection, Some(old), None)?;
            }
            Ok(deleted)
        })
        .await
    }

    async fn event(&self, app: &AppName, seq: i64) -> Result<Option<EventRow>, StoreError> {
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM _events WHERE seq = ?1"
            ))?
            .query_row([seq], event_row)
            .optional()?)
        })
        .await
    }

    async fn sweep_events(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        self.write_app(app, move |c| {
            // One writer: the sequence is the log's order. What goes ends before the first
            // event recorded at or after `before_ms`, found by reading from the oldest (what
            // is read is what goes: the log keeps no index by time, which every write would
            // pay for).
            let kept: Option<i64> = c
                .prepare_cached("SELECT seq FROM _events WHERE at >= ?1 ORDER BY seq LIMIT 1")?
                .query_row([before_ms], |r| r.get(0))
                .optional()?;
            let edge: Option<i64> = c
                .prepare_cached("SELECT max(seq) FROM _events WHERE seq < ?1")?
                .query_row([kept.unwrap_or(i64::MAX)], |r| r.get(0))?;
            let Some(edge) = edge else {
                return Ok(0);
            };
            let deleted = c
                .prepare_cached("DELETE FROM _events WHERE seq <= ?1")?
                .execute([edge])?;
            let swept = LogPosition { tx: 0, seq: edge };
            c.prepare_cached(
                "INSERT INTO _settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE
                 SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(params![EVENTS_SWEPT, swept.to_string(), before_ms])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn events_after(
        &self,
        app: &AppName,
        after: LogPosition,
        limit: usize,
    ) -> Result<EventsPage, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A read sees commits before their fsync, and a power cut would undo those and give
        // their sequence numbers to other events; a client that resumed from one would skip
        // those. So the page leaves only once what it read is on disk.
        self.read_app_on_disk(app, move |c| {
            let events = c
                .prepare_cached(&format!(
                    "SELECT {EVENT_COLUMNS} FROM _events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))?
                .query_map([after.seq, limit], event_row)?
                .collect::<Result<Vec<_>, _>>()?;
            // Committed in sequence order: nothing is ever pending.
            Ok(EventsPage {
                events,
                pending: false,
            })
        })
        .await
    }

    async fn event_bounds(&self, app: &AppName) -> Result<LogBounds, StoreError> {
        // The last position goes to clients as where they are (see `events_after`).
        self.read_app_on_disk(app, move |c| {
            let swept: Option<String> = c
                .prepare_cached("SELECT value FROM _settings WHERE key = ?1")?
                .query_row([EVENTS_SWEPT], |r| r.get(0))
                .optional()?;
            let last: Option<i64> = c
                .prepare_cached("SELECT max(seq) FROM _events")?
                .query_row([], |r| r.get(0))?;
            Ok(LogBounds {
                swept: swept.as_deref().and_then(LogPosition::parse),
                last: last.map(|seq| LogPosition { tx: 0, seq }),
            })
        })
        .await
    }

    async fn append_event(
        &self,
        app: &AppName,
        kind: &str,
        key: &str,
        payload: &str,
        emit: Emit,
    ) -> Result<(), StoreError> {
        let (kind, key, payload) = (kind.to_owned(), key.to_owned(), payload.to_owned());
        self.write_app(app, move |c| record_event(c, &kind, &key, &payload, &emit))
            .await
    }

    async fn batch(
        &self,
        app: &AppName,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        // One write job: a failing operation fails the job, whose savepoint undoes them all.
        self.write_app(app, move |c| {
            let mut outcomes = Vec::with_capacity(operations.len());
            for (index, operation) in operations.into_iter().enumerate() {
                let failed = |source: StoreError| StoreError::InBatch {
                    index,
                    source: Box::new(source),
                };
                let outcome = match operation {
                    BatchOp::Insert {
                        collection,
                        record,
                        check,
                        emit,
                    } => {
                        insert_in(c, &collection, &record, check).map_err(failed)?;
                        emit_in(c, emit.as_ref(), "create", &collection, None, Some(&record))
                            .map_err(failed)?;
                        BatchOutcome::Inserted(record)
                    }
                    BatchOp::Update {
                        collection,
                        id,
                        condition,
                        set,
                        emit,
                    } => {
                        let (old, new) = update_in(c, &collection, &id, condition, set)
                            .map_err(failed)?
                            .ok_or_else(|| failed(StoreError::NotFound))?;
                        emit_in(
                            c,
                            emit.as_ref(),
                            "update",
                            &collection,
                            Some(&old),
                            Some(&new),
                        )
                        .map_err(failed)?;
                        BatchOutcome::Updated(old, new)
                    }
                    BatchOp::Delete {
                        collection,
                        id,
                        condition,
                        emit,
                    } => {
                        let old = delete_in(c, &collection, &id, condition)
                            .map_err(failed)?
                            .ok_or_else(|| failed(StoreError::NotFound))?;
                        emit_in(c, emit.as_ref(), "delete", &collection, Some(&old), None)
                            .map_err(failed)?;
                        BatchOutcome::Deleted(old)
                    }
                };
                outcomes.push(outcome);
            }
            Ok(outcomes)
        })
        .await
    }
}

/// Schema step 8 of an app database: the event log.
pub(super) const EVENTS: &str = "
    CREATE TABLE _events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        kind     TEXT NOT NULL,
        key      TEXT NOT NULL,
        payload  TEXT NOT NULL,
        depth    INTEGER NOT NULL,
        at       INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX _events_by_time ON _events (at);
";

/// The schema step that gives each event its transaction, as PostgreSQL's log has it (always 0
/// here: the sequence is the order), so that `cloudlet migrate` copies the table as it is; and
/// drops the index by time (every record write now records an event: the sweep reads the log
/// in order instead).
pub(super) const EVENT_ORDER: &str = "
    ALTER TABLE _events ADD COLUMN tx INTEGER NOT NULL DEFAULT 0;
    DROP INDEX _events_by_time;
";

/// The columns [`event_row`] reads, in its order.
const EVENT_COLUMNS: &str = "tx, seq, kind, key, payload, depth, at";

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        tx: r.get(0)?,
        seq: r.get(1)?,
        kind: r.get(2)?,
        key: r.get(3)?,
        payload: r.get(4)?,
        depth: r.get(5)?,
        at_ms: r.get(6)?,
    })
}

/// Records a write's event and its trigger deliveries, in the write's own transaction.
fn emit_in(
    c: &Connection,
    emit: Option<&Emit>,
    operation: &str,
    collection: &str,
    old: Option<&Record>,
    new: Option<&Record>,
) -> Result<(), StoreError> {
    let Some(emit) = emit else {
        return Ok(());
    };
    let id = written_id(old, new);
    let (kind, key, payload) = event_of(operation, collection, &id, old, new);
    record_event(c, &kind, &key, &payload, emit)
}

/// Records an event and its trigger deliveries, in the caller's transaction.
pub(super) fn record_event(
    c: &Connection,
    kind: &str,
    key: &str,
    payload: &str,
    emit: &Emit,
) -> Result<(), StoreError> {
    let seq: i64 = c
        .prepare_cached(
            "INSERT INTO _events (kind, key, payload, depth, at) VALUES (?1, ?2, ?3, ?4, ?5)
             RETURNING seq",
        )?
        .query_row(params![kind, key, payload, emit.depth, emit.at_ms], |r| {
            r.get(0)
        })?;
    let mut send = c.prepare_cached(
        "INSERT INTO _queue_messages (id, queue, payload, state, visible_at, attempt,
             max_attempts, created_at, updated_at)
         VALUES (?1, ?2, ?3, 0, ?4, 0, ?5, ?4, ?4)",
    )?;
    for delivery in &emit.deliveries {
        let message = delivery_payload(&delivery.function, seq, emit.depth);
        send.execute(params![
            delivery.message_id,
            TRIGGER_QUEUE,
            message,
            emit.at_ms,
            delivery.max_attempts
        ])?;
    }
    Ok(())
}

/// Inserts `record`, then requires `check` of it (the caller's savepoint undoes the insert
/// when the check fails).
fn insert_in(
    c: &Connection,
    collection: &str,
    record: &Record,
    check: Condition,
) -> Result<(), StoreError> {
    let id = record
        .iter()
        .find(|(name, _)| name == "id")
        .map(|(_, v)| v.clone())
        .unwrap_or(SqlValue::Null);
    let columns: Vec<String> = record.iter().map(|(name, _)| quote(name)).collect();
    let placeholders: Vec<String> = (1..=record.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table(collection),
        columns.join(", "),
        placeholders.join(", ")
    );
    let values: Vec<SqlValue> = record.iter().map(|(_, v)| v.clone()).collect();
    c.prepare_cached(&sql)?
        .execute(bind(&values))
        .map_err(super::from_write)?;
    let (condition, mut params) = sql_of(&check);
    params.push(id);
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {condition} AND \"id\" = ?{}",
        table(collection),
        params.len()
    );
    let holds: i64 = c
        .prepare_cached(&sql)?
        .query_row(bind(&params), |r| r.get(0))?;
    if holds == 0 {
        return Err(StoreError::CheckFailed);
    }
    Ok(())
}

/// The record `id` if `condition` allows it.
fn guarded(
    c: &Connection,
    collection: &str,
    id: &str,
    condition: &Condition,
) -> Result<Option<Record>, StoreError> {
    let (condition, mut params) = sql_of(condition);
    params.push(SqlValue::Text(id.to_owned()));
    let sql = format!(
        "SELECT * FROM {} WHERE {condition} AND \"id\" = ?{}",
        table(collection),
        params.len()
    );
    Ok(query_records(c, &sql, &params)?.pop())
}

fn update_in(
    c: &Connection,
    collection: &str,
    id: &str,
    condition: Condition,
    set: Record,
) -> Result<Option<(Record, Record)>, StoreError> {
    let Some(old) = guarded(c, collection, id, &condition)? else {
        return Ok(None);
    };
    let assignments: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{} = ?{}", quote(name), i + 1))
        .collect();
    let mut values: Vec<SqlValue> = set.into_iter().map(|(_, v)| v).collect();
    values.push(SqlValue::Text(id.to_owned()));
    let sql = format!(
        "UPDATE {} SET {} WHERE \"id\" = ?{}",
        table(collection),
        assignments.join(", "),
        values.len()
    );
    c.prepare_cached(&sql)?
        .execute(bind(&values))
        .map_err(super::from_write)?;
    let new = guarded(c, collection, id, &Condition::always())?
        .ok_or_else(|| StoreError::Task("the updated record vanished".into()))?;
    if grows_too_large(&old, &new) {
        // The write's savepoint is rolled back.
        return Err(StoreError::TooLarge);
    }
    Ok(Some((old, new)))
}

fn delete_in(
    c: &Connection,
    collection: &str,
    id: &str,
    condition: Condition,
) -> Result<Option<Record>, StoreError> {
    let Some(old) = guarded(c, collection, id, &condition)? else {
        return Ok(None);
    };
    c.prepare_cached(&format!(
        "DELETE FROM {} WHERE \"id\" = ?1",
        table(collection)
    ))?
    .execute([id])?;
    Ok(Some(old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnType, SortKey};

    fn name(text: &str) -> crate::AppName {
        crate::AppName::parse(text).expect("a valid app name")
    }
    use crate::sqlite::TenantPoolOptions;
    use crate::{ColumnDef, IndexDef, TenantStore};

    async fn store() -> (tempfile::TempDir, SqliteTenants) {
        let dir = tempfile::tempdir().unwrap();
        let tenants = SqliteTenants::open(
            dir.path().to_path_buf(),
            TenantPoolOptions {
                max_open: 4,
                readers: 2,
                durability: crate::sqlite::Durability::Process,
            },
        )
        .unwrap();
        tenants.provision(&name("app")).await.unwrap();
        let table = TableDef {
            columns: vec![
                ColumnDef {
                    name: "title".into(),
                    column_type: ColumnType::Text,
                    unique: false,
                },
                ColumnDef {
                    name: "rank".into(),
                    column_type: ColumnType::Integer,
                    unique: false,
                },
                ColumnDef {
                    name: "code".into(),
                    column_type: ColumnType::Text,
                    unique: true,
                },
            ],
            indexes: vec![IndexDef {
                columns: vec!["rank".into()],
                unique: false,
            }],
        };
        let row = CollectionRow {
            name: "todos".into(),
            definition: "{}".into(),
            version: 1,
        };
        tenants
            .create_collection(&name("app"), row, table)
            .await
            .unwrap();
        (dir, tenants)
    }

    fn record(id: &str, owner: &str, rank: Option<i64>, code: &str) -> Record {
        vec![
            ("id".into(), SqlValue::Text(id.into())),
            ("created_at".into(), SqlValue::Int(1)),
            ("updated_at".into(), SqlValue::Int(1)),
            ("owner".into(), SqlValue::Text(owner.into())),
            ("title".into(), SqlValue::Text(format!("t-{id}"))),
            ("rank".into(), rank.map_or(SqlValue::Null, SqlValue::Int)),
            ("code".into(), SqlValue::Text(code.into())),
        ]
    }

    fn ids(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match &r[0].1 {
                SqlValue::Text(id) => id.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn owned_by(owner: &str) -> Condition {
        let schema = std::sync::Arc::new(cloudlet_query::Schema::new());
        let expr = cloudlet_query::parse("owner = @auth.id", cloudlet_query::Limits::default())
            .expect("a valid rule");
        let rule = cloudlet_query::Predicate::new(expr, schema).expect("a checked rule");
        Condition::with_bindings(cloudlet_query::Bindings {
            auth_id: Some(owner.into()),
            ..Default::default()
        })
        .and(std::sync::Arc::new(rule))
    }

    #[tokio::test]
    async fn keyset_pages_cover_every_row_once_in_order_with_nulls() {
        let (_dir, s) = store().await;
        let ranks = [Some(3), None, Some(1), Some(3), None, Some(2), Some(1)];
        for (i, rank) in ranks.iter().enumerate() {
            s.insert(
                &name("app"),
                "todos",
                record(&format!("r{i}"), "alice", *rank, &format!("c{i}")),
                Condition::always(),
                None,
            )
            .await
            .unwrap();
        }
        s.insert(
            &name("app"),
            "todos",
            record("x", "bob", Some(1), "cx"),
            Condition::always(),
            None,
        )
        .await
        .unwrap();
        for descending in [false, true] {
            let sort = vec![SortKey {
                column: "rank".into(),
                descending,
                never_null: false,
            }];
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let select = Select {
                    condition: owned_by("alice"),
                    sort: sort.clone(),
                    after: after.clone(),
                    limit: 2,
                    offset: 0,
                    count: seen.is_empty(),
                    max_bytes: usize::MAX,
                };
                let (page, total) = s.select(&name("app"), "todos", select).await.unwrap();
                if seen.is_empty() {
                    assert_eq!(total, Some(7));
                }
                let Some(last) = page.last() else { break };
                after = Some((
                    vec![last[5].1.clone()],
                    ids(std::slice::from_ref(last))[0].clone(),
                ));
                seen.extend(ids(&page));
            }
            let everything = Select {
                condition: owned_by("alice"),
                sort: sort.clone(),
                after: None,
                limit: 100,
                offset: 0,
                count: false,
                max_bytes: usize::MAX,
            };
            let (all, _) = s.select(&name("app"), "todos", everything).await.unwrap();
            assert_eq!(seen, ids(&all), "descending: {descending}");
            // NULL first ascending and last descending; ties by id in the sort's direction.
            let expected = if descending {
                ["r3", "r0", "r5", "r6", "r2", "r4", "r1"]
            } else {
                ["r1", "r4", "r2", "r6", "r5", "r0", "r3"]
            };
            assert_eq!(seen, expected, "descending: {descending}");
        }
    }

    #[tokio::test]
    async fn a_list_sorted_on_an_index_reads_its_page_from_the_index() {
        let (_dir, s) = store().await;
        let app = name("app");
        let plan = |sql: String| {
            s.read_app(&app, move |c| {
                let mut statement = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = statement.query_map([], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
            })
        };
        // The declared index on rank ends with id, so both directions need no sorting step.
        for direction in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT * FROM r_todos WHERE rank > 0 ORDER BY rank {direction}, id {direction} LIMIT 5"
            );
            let plan = plan(sql).await.unwrap();
            assert!(plan.contains("USING INDEX r_todos:i1"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
        // The owner index serves the default sort, under the default owner rule.
        let sql = "SELECT * FROM r_todos WHERE owner = 'a' ORDER BY created_at, id LIMIT 5";
        let owned = plan(sql.into()).await.unwrap();
        assert!(owned.contains("USING INDEX r_todos:owner"), "{owned}");
        assert!(!owned.contains("TEMP B-TREE"), "{owned}");
        // The plan of a listing as the store writes it, its values bound.
        let listing_plan = |select: Select| {
            let (sql, values) =
                crate::listing::listing_sql(cloudlet_query::Dialect::Sqlite, "r_todos", &select)
                    .page;
            s.read_app(&app, move |c| {
                let mut statement = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows = statement.query_map(bind(&values), |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?.join("; "))
            })
        };
        // A cursor deep in a listing by a column never null starts at the cursor: the index
        // is searched by a bound on it, not walked from the first row.
        for descending in [false, true] {
            let select = Select {
                condition: Condition::always(),
                sort: vec![SortKey {
                    column: "created_at".into(),
                    descending,
                    never_null: true,
                }],
                after: Some((vec![SqlValue::Int(5)], "r9".into())),
                limit: 5,
                offset: 0,
                count: false,
                max_bytes: usize::MAX,
            };
            let plan = listing_plan(select).await.unwrap();
            let bound = if descending {
                "created_at<?"
            } else {
                "created_at>?"
            };
            assert!(plan.contains(bound), "{plan}");
        }
        // A cursor on a column that may be null, under a filter on it: the declared index on
        // rank gives the order, walked to the cursor, not each alternative of the cursor looked
        // up and everything left sorted.
        let positive = || {
            let schema = std::sync::Arc::new(
                cloudlet_query::Schema::new().with("rank", cloudlet_query::FieldType::Integer),
            );
            let expr = cloudlet_query::parse("rank > 0", cloudlet_query::Limits::default())
                .expect("a valid filter");
            let filter = cloudlet_query::Predicate::new(expr, schema).expect("a checked filter");
            Condition::with_bindings(cloudlet_query::Bindings::default())
                .and(std::sync::Arc::new(filter))
        };
        for descending in [false, true] {
            let select = Select {
                condition: positive(),
                sort: vec![SortKey {
                    column: "rank".into(),
                    descending,
                    never_null: false,
                }],
                after: Some((vec![SqlValue::Int(5)], "r9".into())),
                limit: 5,
                offset: 0,
                count: false,
                max_bytes: usize::MAX,
            };
            let plan = listing_plan(select).await.unwrap();
            assert!(plan.contains("USING INDEX r_todos:i1"), "{plan}");
            assert!(
                !plan.contains("TEMP B-TREE") && !plan.contains("MULTI-INDEX"),
                "{plan}"
            );
        }
    }

    #[tokio::test]
    async fn conditions_guard_get_update_and_delete_and_unique_columns_hold() {
        let (_dir, s) = store().await;
        s.insert(
            &name("app"),
            "todos",
            record("a", "alice", Some(1), "same"),
            Condition::always(),
            None,
        )
        .await
        .unwrap();
        // A check that fails rolls the insert back.
        assert!(matches!(
            s.insert(
                &name("app"),
                "todos",
                record("z", "alice", Some(1), "zz"),
                owned_by("bob"),
                None
            )
            .await,
            Err(StoreError::CheckFailed)
        ));
        assert!(
            s.get(&name("app"), "todos", "z", Condition::always())
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            s.insert(
                &name("app"),
                "todos",
                record("b", "bob", Some(1), "same"),
                Condition::always(),
                None
            )
            .await,
            Err(StoreError::Conflict)
        ));
        assert!(
            s.get(&name("app"), "todos", "a", owned_by("bob"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.get(&name("app"), "todos", "a", owned_by("alice"))
                .await
                .unwrap()
                .is_some()
        );
        let set = vec![("title".into(), SqlValue::Text("new".into()))];
        assert!(
            s.update(
                &name("app"),
                "todos",
                "a",
                owned_by("bob"),
                set.clone(),
                None
            )
            .await
            .unwrap()
            .is_none()
        );
        let (old, new) = s
            .update(&name("app"), "todos", "a", owned_by("alice"), set, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (old[4].1.clone(), new[4].1.clone()),
            (SqlValue::Text("t-a".into()), SqlValue::Text("new".into()))
        );
        assert!(
            s.delete(&name("app"), "todos", "a", owned_by("bob"), None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.delete(&name("app"), "todos", "a", owned_by("alice"), None)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.get(&name("app"), "todos", "a", Condition::always())
                .await
                .unwrap()
                .is_none()
        );
        assert!(s.drop_collection(&name("app"), "todos").await.unwrap());
        assert!(!s.drop_collection(&name("app"), "todos").await.unwrap());
        assert!(s.collections(&name("app")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn altering_adds_and_drops_columns_and_remakes_indexes() {
        let (_dir, s) = store().await;
        s.insert(
            &name("app"),
            "todos",
            record("a", "alice", Some(1), "c1"),
            Condition::always(),
            None,
        )
        .await
        .unwrap();
        // Read once before altering, so that the statement is cached with the old columns.
        assert!(
            s.get(&name("app"), "todos", "a", Condition::always())
                .await
                .unwrap()
                .is_some()
        );
        let row = |version| CollectionRow {
            name: "todos".into(),
            definition: "{}".into(),
            version,
        };
        let change = TableChange {
            add: vec![ColumnDef {
                name: "tags".into(),
                column_type: ColumnType::Json,
                unique: false,
            }],
            drop: vec!["rank".into()],
            indexes: vec![
                IndexDef {
                    columns: vec!["code".into()],
                    unique: true,
                },
                IndexDef {
                    columns: vec!["tags".into()],
                    unique: false,
                },
            ],
        };
        s.alter_collection(&name("app"), row(2), change)
            .await
            .unwrap();
        let got = s
            .get(&name("app"), "todos", "a", Condition::always())
            .await
            .unwrap()
            .unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "created_at",
                "updated_at",
                "owner",
                "title",
                "code",
                "tags"
            ]
        );
        assert_eq!(s.collections(&name("app")).await.unwrap()[0].version, 2);
        // The unique index survived the remake.
        assert!(matches!(
            s.insert(
                &name("app"),
                "todos",
                vec![
                    ("id".into(), SqlValue::Text("b".into())),
                    ("created_at".into(), SqlValue::Int(1)),
                    ("updated_at".into(), SqlValue::Int(1)),
                    ("code".into(), SqlValue::Text("c1".into())),
                ],
                Condition::always(),
                None
            )
            .await,
            Err(StoreError::Conflict)
        ));
    }
}
