//! [`RecordStore`] on PostgreSQL: each collection is a table `r_{collection}` with typed columns
//! in the app's schema (booleans as `boolean`, JSON as `jsonb`, datetimes as `bigint`
//! milliseconds), listed in `_collections`. Conditions, orders and keysets are compiled for the
//! PostgreSQL dialect; a write locks the row it guards (`FOR UPDATE`), so two nodes updating one
//! record serialise as the SQLite writer thread serialises them on one node.

use async_trait::async_trait;
use cloudlet_query::Dialect;
use deadpool_postgres::{GenericClient, Transaction};

use super::{Postgres, SYSTEM_SCHEMA, execute, params, record_of, refs, row, rows, schema};
use crate::listing::{
    self, column_type, declared_index_prefixes, index_sql, listing_sql, quote, table,
};
use crate::records::{
    BatchOp, BatchOutcome, CollectionRow, Condition, EVENTS_SWEPT, Emit, EventRow, EventsPage,
    LogBounds, LogPosition, Record, RecordStore, Select, SqlValue, TRIGGER_QUEUE, TableChange,
    TableDef, delivery_payload, event_of, grows_too_large, record_bytes, written_id,
};
use crate::{AppName, StoreError};

/// The app schema's step that lists collections.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._collections (
        name        text COLLATE \"C\" PRIMARY KEY,
        definition  text NOT NULL,
        version     bigint NOT NULL
    );
";

/// A collection's table, qualified by the app's schema.
fn qualified(app: &str, collection: &str) -> String {
    format!("{app}.{}", table(collection))
}

/// The statements that create a collection's table in schema `app`.
pub(crate) fn create_table_sql(app: &str, collection: &str, definition: &TableDef) -> Vec<String> {
    listing::create_table_sql(
        Dialect::Postgres,
        &qualified(app, collection),
        collection,
        definition,
    )
}

/// A connection, or a transaction on one, with its cache of prepared statements.
pub(crate) trait Cached: GenericClient {
    fn cache(&self) -> &deadpool_postgres::StatementCache;
}

impl Cached for deadpool_postgres::Object {
    fn cache(&self) -> &deadpool_postgres::StatementCache {
        &self.statement_cache
    }
}

impl Cached for Transaction<'_> {
    fn cache(&self) -> &deadpool_postgres::StatementCache {
        &self.statement_cache
    }
}

/// The most statements one connection keeps prepared. A collection's SQL follows the request
/// (its filter, sort and count, the fields a write sets), so unbounded, any client could grow
/// the cache without end; bounded, the common shapes stay prepared and a flood of odd ones costs
/// only re-preparing.
const STATEMENTS_PER_CONNECTION: usize = 512;

/// `sql` prepared on this connection, from its cache while the cache has room.
async fn prepared(
    client: &impl Cached,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    if client.cache().size() >= STATEMENTS_PER_CONNECTION {
        client.cache().clear();
    }
    Ok(client.prepare_cached(sql).await?)
}

/// The rows of a collection statement.
async fn dynamic_rows(
    client: &impl Cached,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let statement = prepared(client, sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// [`dynamic_rows`] for a statement that returns no rows.
async fn dynamic_execute(
    client: &impl Cached,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = prepared(client, sql).await?;
    Ok(client.execute(&statement, params).await?)
}

/// The records `sql` selects.
async fn records(
    client: &impl Cached,
    sql: &str,
    values: &[SqlValue],
) -> Result<Vec<Record>, StoreError> {
    let params = params(values);
    dynamic_rows(client, sql, &refs(&params))
        .await?
        .iter()
        .map(record_of)
        .collect()
}

/// [`records`], stopping once the records read hold `max_bytes` ([`record_bytes`]); the first
/// always comes. The rows past it are let go of as they arrive.
async fn records_within(
    client: &impl Cached,
    sql: &str,
    values: &[SqlValue],
    max_bytes: usize,
) -> Result<Vec<Record>, StoreError> {
    let params = params(values);
    let statement = prepared(client, sql).await?;
    let rows = client.query_raw(&statement, refs(&params)).await?;
    futures_util::pin_mut!(rows);
    let (mut records, mut bytes) = (Vec::new(), 0);
    while records.is_empty() || bytes < max_bytes {
        let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? else {
            break;
        };
        let record = record_of(&row)?;
        bytes += record_bytes(&record);
        records.push(record);
    }
    Ok(records)
}

#[async_trait]
impl RecordStore for Postgres {
    async fn collections(&self, app: &AppName) -> Result<Vec<CollectionRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, definition, version FROM {}._collections ORDER BY name",
            schema(app)
        );
        Ok(rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(|r| CollectionRow {
                name: r.get(0),
                definition: r.get(1),
                version: r.get(2),
            })
            .collect())
    }

    async fn create_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        definition: TableDef,
    ) -> Result<(), StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        execute(
            &tx,
            &format!(
                "INSERT INTO {s}._collections (name, definition, version) VALUES ($1, $2, $3)"
            ),
            &[
                &collection.name,
                &collection.definition,
                &collection.version,
            ],
        )
        .await?;
        for statement in create_table_sql(&s, &collection.name, &definition) {
            tx.batch_execute(&statement).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alter_collection(
        &self,
        app: &AppName,
        collection: CollectionRow,
        change: TableChange,
    ) -> Result<(), StoreError> {
        let s = schema(app);
        let name = collection.name.clone();
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let updated = execute(
            &tx,
            &format!("UPDATE {s}._collections SET definition = $2, version = $3 WHERE name = $1"),
            &[
                &collection.name,
                &collection.definition,
                &collection.version,
            ],
        )
        .await?;
        if updated == 0 {
            return Err(StoreError::NoSuchTenant);
        }
        // Declared indexes are dropped and made again; the system ones stay.
        let [current, legacy] = declared_index_prefixes(&name);
        let existing = tx
            .query(
                "SELECT indexname FROM pg_indexes
                 WHERE schemaname = $1 AND tablename = $2
                 AND (starts_with(indexname, $3) OR starts_with(indexname, $4))",
                &[
                    &format!("app_{}", app.as_str()),
                    &format!("r_{name}"),
                    &current,
                    &legacy,
                ],
            )
            .await?;
        for index in existing {
            let index: String = index.get(0);
            tx.batch_execute(&format!("DROP INDEX {s}.{}", quote(&index)))
                .await?;
        }
        let table = qualified(&s, &name);
        for column in &change.drop {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} DROP COLUMN {}",
                quote(column)
            ))
            .await?;
        }
        for column in &change.add {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} ADD COLUMN {} {}",
                quote(&column.name),
                column_type(Dialect::Postgres, column.column_type)
            ))
            .await?;
        }
        for statement in index_sql(Dialect::Postgres, &table, &name, &change.indexes) {
            tx.batch_execute(&statement).await?;
        }
        tx.commit().await?;
        // Statements prepared on the old columns (`SELECT *`) must not be used again.
        self.forget_statements();
        Ok(())
    }

    async fn drop_collection(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let removed = execute(
            &tx,
            &format!("DELETE FROM {s}._collections WHERE name = $1"),
            &[&name],
        )
        .await?;
        if removed == 1 {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", qualified(&s, name)))
                .await?;
        }
        tx.commit().await?;
        self.forget_statements();
        Ok(removed == 1)
    }

    async fn insert(
        &self,
        app: &AppName,
        collection: &str,
        record: Record,
        check: Condition,
        emit: Option<Emit>,
    ) -> Result<(), StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        match emit {
            // Trigger deliveries carry the event's sequence: a transaction, in which the
            // record and its event go at once (tokio-postgres pipelines statements awaited
            // together). Either failing fails it; the insert's error (a conflict, a refused
            // check) is the one told.
            Some(emit) if !emit.deliveries.is_empty() => {
                let tx = client.transaction().await?;
                let (inserted, emitted) = tokio::join!(
                    insert_in(&tx, &s, collection, &record, &check, None),
                    emit_in(
                        &tx,
                        &s,
                        Some(&emit),
                        "create",
                        collection,
                        None,
                        Some(&record),
                    )
                );
                inserted?;
                emitted?;
                tx.commit().await?;
                Ok(())
            }
            // Otherwise one statement is its own transaction: the record, its check and its
            // event in one round trip, where a transaction block takes three.
            emit => {
                let event = emit.map(|emit| Logged::of("create", collection, &record, &emit));
                insert_in(&*client, &s, collection, &record, &check, event).await
            }
        }
    }

    async fn select(
        &self,
        app: &AppName,
        collection: &str,
        select: Select,
    ) -> Result<(Vec<Record>, Option<i64>), StoreError> {
        let client = self.app_client(app).await?;
        let table = qualified(&schema(app), collection);
        let listing = listing_sql(Dialect::Postgres, &table, &select);
        let total = match &listing.count {
            Some((sql, values)) => {
                let params = params(values);
                let counted = dynamic_rows(&*client, sql, &refs(&params)).await?;
                Some(counted.first().map_or(0, |r| r.get::<_, i64>(0)))
            }
            None => None,
        };
        let (sql, values) = &listing.page;
        Ok((
            records_within(&*client, sql, values, select.max_bytes).await?,
            total,
        ))
    }

    async fn get(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
    ) -> Result<Option<Record>, StoreError> {
        let client = self.app_client(app).await?;
        guarded(&*client, &schema(app), collection, id, &condition, false).await
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
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let updated = update_in(&tx, &s, collection, id, &condition, set).await?;
        if let Some((old, new)) = &updated {
            emit_in(
                &tx,
                &s,
                emit.as_ref(),
                "update",
                collection,
                Some(old),
                Some(new),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(updated)
    }

    async fn batch(
        &self,
        app: &AppName,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<BatchOutcome>, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
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
                    insert_in(&tx, &s, &collection, &record, &check, None)
                        .await
                        .map_err(failed)?;
                    emit_in(
                        &tx,
                        &s,
                        emit.as_ref(),
                        "create",
                        &collection,
                        None,
                        Some(&record),
                    )
                    .await
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
                    let (old, new) = update_in(&tx, &s, &collection, &id, &condition, set)
                        .await
                        .map_err(failed)?
                        .ok_or_else(|| failed(StoreError::NotFound))?;
                    emit_in(
                        &tx,
                        &s,
                        emit.as_ref(),
                        "update",
                        &collection,
                        Some(&old),
                        Some(&new),
                    )
                    .await
                    .map_err(failed)?;
                    BatchOutcome::Updated(old, new)
                }
                BatchOp::Delete {
                    collection,
                    id,
                    condition,
                    emit,
                } => {
                    let old = delete_in(&tx, &s, &collection, &id, &condition)
                        .await
                        .map_err(failed)?
                        .ok_or_else(|| failed(StoreError::NotFound))?;
                    emit_in(
                        &tx,
                        &s,
                        emit.as_ref(),
                        "delete",
                        &collection,
                        Some(&old),
                        None,
                    )
                    .await
                    .map_err(failed)?;
                    BatchOutcome::Deleted(old)
                }
            };
            outcomes.push(outcome);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn delete(
        &self,
        app: &AppName,
        collection: &str,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<Record>, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let deleted = delete_in(&tx, &s, collection, id, &condition).await?;
        if let Some(old) = &deleted {
            emit_in(
                &tx,
                &s,
                emit.as_ref(),
                "delete",
                collection,
                Some(old),
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn event(&self, app: &AppName, seq: i64) -> Result<Option<EventRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM {}._events WHERE seq = $1",
            schema(app)
        );
        row(&*client, &sql, &[&seq])
            .await?
            .map(|r| event_row(&r))
            .transpose()
    }

    async fn sweep_events(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // One sweep of the app at a time, so that its horizon only moves forward.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("{s}.{EVENTS_SWEPT}")],
        )
        .await?;
        // Only events below one oldest-running-transaction line, taken once: every transaction
        // below it has ended, so what is read and deleted below it can not change between the
        // statements (each of which has a snapshot of its own), and an event committed
        // meanwhile is above it and stays.
        let line: i64 = row(&tx, &format!("SELECT {XMIN}"), &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .ok_or_else(|| StoreError::Task("no snapshot".into()))?;
        // What goes ends before the first event in order that stays: one recorded at or after
        // `before_ms`, or one above the line. Found by reading from the oldest (what is read
        // is what goes: the log keeps no index by time, which every write would pay for).
        let kept = row(
            &tx,
            &format!(
                "SELECT tx, seq FROM {s}._events WHERE at >= $1 OR tx >= $2
                 ORDER BY tx, seq LIMIT 1"
            ),
            &[&before_ms, &line],
        )
        .await?;
        let kept = match kept {
            Some(r) => (r.try_get::<_, i64>(0)?, r.try_get::<_, i64>(1)?),
            None => (i64::MAX, i64::MAX),
        };
        let edge = row(
            &tx,
            &format!(
                "SELECT tx, seq FROM {s}._events WHERE (tx, seq) < ($1, $2) AND tx < $3
                 ORDER BY tx DESC, seq DESC LIMIT 1"
            ),
            &[&kept.0, &kept.1, &line],
        )
        .await?;
        let Some(edge) = edge else {
            return Ok(0);
        };
        let swept = LogPosition {
            tx: edge.try_get(0)?,
            seq: edge.try_get(1)?,
        };
        let deleted = execute(
            &tx,
            &format!("DELETE FROM {s}._events WHERE (tx, seq) <= ($1, $2) AND tx < $3"),
            &[&swept.tx, &swept.seq, &line],
        )
        .await?;
        execute(
            &tx,
            &format!(
                "INSERT INTO {s}._settings (key, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE
                 SET value = excluded.value, updated_at = excluded.updated_at"
            ),
            &[&EVENTS_SWEPT, &swept.to_string(), &before_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn events_after(
        &self,
        app: &AppName,
        after: LogPosition,
        limit: usize,
    ) -> Result<EventsPage, StoreError> {
        let client = self.app_client(app).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, tx < {XMIN} FROM {}._events
             WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3",
            schema(app)
        );
        let mut page = EventsPage::default();
        for r in rows(&*client, &sql, &[&after.tx, &after.seq, &limit]).await? {
            // An event whose transaction is not below every running one may yet be preceded
            // by one committing later: it waits, and so does everything after it.
            let in_order: bool = r.try_get(7)?;
            if !in_order {
                page.pending = true;
                break;
            }
            page.events.push(event_row(&r)?);
        }
        Ok(page)
    }

    async fn event_bounds(&self, app: &AppName) -> Result<LogBounds, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT (SELECT value FROM {s}._settings WHERE key = $1), last.tx, last.seq
             FROM (SELECT 1) AS one LEFT JOIN (
                 SELECT tx, seq FROM {s}._events WHERE tx < {XMIN}
                 ORDER BY tx DESC, seq DESC LIMIT 1
             ) AS last ON true"
        );
        let found = row(&*client, &sql, &[&EVENTS_SWEPT])
            .await?
            .ok_or_else(|| StoreError::Task("the log's bounds were not read".into()))?;
        let swept: Option<String> = found.try_get(0)?;
        let (tx, seq): (Option<i64>, Option<i64>) = (found.try_get(1)?, found.try_get(2)?);
        Ok(LogBounds {
            swept: swept.as_deref().and_then(LogPosition::parse),
            last: tx.zip(seq).map(|(tx, seq)| LogPosition { tx, seq }),
        })
    }

    async fn append_event(
        &self,
        app: &AppName,
        kind: &str,
        key: &str,
        payload: &str,
        emit: Emit,
    ) -> Result<(), StoreError> {
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        record_event(&tx, &schema(app), kind, key, payload, &emit).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The app schema's step that adds the event log.
pub(super) const EVENTS: &str = "
    CREATE TABLE {s}._events (
        seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        kind     text NOT NULL,
        key      text NOT NULL,
        payload  text NOT NULL,
        depth    bigint NOT NULL,
        at       bigint NOT NULL
    );
    CREATE INDEX _events_by_time ON {s}._events (at);
";

/// The schema step that orders the log by commit: each event carries its transaction's id, and
/// readers read in `(tx, seq)` order below the oldest running transaction ([`XMIN`]). Events
/// from before the step keep 0, before every later one. The index by time goes: every record
/// write records an event, and the sweep reads the log in order instead.
pub(super) const EVENT_ORDER: &str = "
    ALTER TABLE {s}._events ADD COLUMN tx bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}._events ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint);
    CREATE INDEX _events_by_position ON {s}._events (tx, seq);
    DROP INDEX {s}._events_by_time;
";

/// The oldest transaction id still running when the statement's snapshot was taken: every
/// transaction below it has committed or rolled back, and every later one gets a higher id.
pub(super) const XMIN: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// The columns [`event_row`] reads, in its order.
const EVENT_COLUMNS: &str = "tx, seq, kind, key, payload, depth, at";

fn event_row(r: &tokio_postgres::Row) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        tx: r.try_get(0)?,
        seq: r.try_get(1)?,
        kind: r.try_get(2)?,
        key: r.try_get(3)?,
        payload: r.try_get(4)?,
        depth: r.try_get(5)?,
        at_ms: r.try_get(6)?,
    })
}

/// Records a write's event and its trigger deliveries, in the write's own transaction.
async fn emit_in(
    tx: &Transaction<'_>,
    app: &str,
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
    record_event(tx, app, &kind, &key, &payload, emit).await
}

/// Records an event and its trigger deliveries, in the caller's transaction (`app` is the
/// app's schema).
pub(super) async fn record_event(
    tx: &Transaction<'_>,
    app: &str,
    kind: &str,
    key: &str,
    payload: &str,
    emit: &Emit,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {app}._events (kind, key, payload, depth, at) VALUES ($1, $2, $3, $4, $5)
         RETURNING seq"
    );
    let seq: i64 = rows(tx, &sql, &[&kind, &key, &payload, &emit.depth, &emit.at_ms])
        .await?
        .first()
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| StoreError::Task("the event was not recorded".into()))?;
    let send = format!(
        "INSERT INTO {app}._queue_messages (id, queue, payload, state, visible_at, attempt,
             max_attempts, created_at, updated_at)
         VALUES ($1, $2, $3, 0, $4, 0, $5, $4, $4)"
    );
    for delivery in &emit.deliveries {
        let message = delivery_payload(&delivery.function, seq, emit.depth);
        execute(
            tx,
            &send,
            &[
                &delivery.message_id,
                &TRIGGER_QUEUE,
                &message,
                &emit.at_ms,
                &delivery.max_attempts,
            ],
        )
        .await?;
    }
    Ok(())
}

/// A write's event recorded by the write's own statement (one with no trigger deliveries,
/// which need its sequence).
struct Logged {
    kind: String,
    key: String,
    payload: String,
    depth: i64,
    at_ms: i64,
}

impl Logged {
    fn of(operation: &str, collection: &str, new: &Record, emit: &Emit) -> Logged {
        let id = written_id(None, Some(new));
        let (kind, key, payload) = event_of(operation, collection, &id, None, Some(new));
        Logged {
            kind,
            key,
            payload,
            depth: emit.depth,
            at_ms: emit.at_ms,
        }
    }

    /// The common table expression that inserts it, its values pushed onto `values` (and
    /// numbered after those already there).
    fn insert(self, app: &str, values: &mut Vec<SqlValue>) -> String {
        let first = values.len() + 1;
        values.extend([
            SqlValue::Text(self.kind),
            SqlValue::Text(self.key),
            SqlValue::Text(self.payload),
            SqlValue::Int(self.depth),
            SqlValue::Int(self.at_ms),
        ]);
        let placeholders: Vec<String> = (first..first + 5)
            .map(|i| Dialect::Postgres.placeholder(i))
            .collect();
        format!(
            "\"event:row\" AS (INSERT INTO {app}._events (kind, key, payload, depth, at) \
             VALUES ({}))",
            placeholders.join(", ")
        )
    }
}

/// Inserts `record`, then requires `check` of it, and records `event` in the same statement;
/// when the check fails the statement fails whole (and the caller's transaction, if any, is
/// dropped: rolled back).
async fn insert_in(
    client: &impl Cached,
    app: &str,
    collection: &str,
    record: &Record,
    check: &Condition,
    event: Option<Logged>,
) -> Result<(), StoreError> {
    let table = qualified(app, collection);
    let columns: Vec<String> = record.iter().map(|(name, _)| quote(name)).collect();
    let placeholders: Vec<String> = (1..=record.len())
        .map(|i| Dialect::Postgres.placeholder(i))
        .collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        columns.join(", "),
        placeholders.join(", ")
    );
    let mut values: Vec<SqlValue> = record.iter().map(|(_, v)| v.clone()).collect();
    // PostgreSQL runs a data-modifying common table expression whether or not the statement
    // reads it, and a statement fails whole.
    let event = event.map(|event| event.insert(app, &mut values));
    if check.is_always() {
        let sql = match event {
            Some(event) => format!("WITH {event} {insert}"),
            None => insert,
        };
        let inserted = params(&values);
        dynamic_execute(client, &sql, &refs(&inserted)).await?;
        return Ok(());
    }
    // One statement: the row goes in, then the check is evaluated on it; when it does not
    // hold the statement fails (`check_failed()` raises), which undoes the insert with it.
    let (condition, checked) = check.to_sql(Dialect::Postgres, values.len());
    values.extend(checked);
    let event = event.map(|event| format!(", {event}")).unwrap_or_default();
    let sql = format!(
        "WITH {TABLE_ALIAS} AS ({insert} RETURNING *){event}
         SELECT CASE WHEN {condition} THEN true ELSE {SYSTEM_SCHEMA}.check_failed() END
         FROM {TABLE_ALIAS}"
    );
    let all = params(&values);
    dynamic_rows(client, &sql, &refs(&all)).await?;
    Ok(())
}

/// The name the inserted row goes by while its check is evaluated: no field can be named so.
const TABLE_ALIAS: &str = "\"inserted:row\"";

/// The record `id` if `condition` allows it; locked until the transaction ends when `lock`.
async fn guarded(
    client: &impl Cached,
    app: &str,
    collection: &str,
    id: &str,
    condition: &Condition,
    lock: bool,
) -> Result<Option<Record>, StoreError> {
    let (condition, mut values) = condition.to_sql(Dialect::Postgres, 0);
    values.push(SqlValue::Text(id.to_owned()));
    let sql = format!(
        "SELECT * FROM {} WHERE {condition} AND \"id\" = ${}{}",
        qualified(app, collection),
        values.len(),
        if lock { " FOR UPDATE" } else { "" }
    );
    Ok(records(client, &sql, &values).await?.pop())
}

async fn update_in(
    tx: &Transaction<'_>,
    app: &str,
    collection: &str,
    id: &str,
    condition: &Condition,
    set: Record,
) -> Result<Option<(Record, Record)>, StoreError> {
    let Some(old) = guarded(tx, app, collection, id, condition, true).await? else {
        return Ok(None);
    };
    let assignments: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{} = ${}", quote(name), i + 1))
        .collect();
    let mut values: Vec<SqlValue> = set.into_iter().map(|(_, v)| v).collect();
    values.push(SqlValue::Text(id.to_owned()));
    let sql = format!(
        "UPDATE {} SET {} WHERE \"id\" = ${} RETURNING *",
        qualified(app, collection),
        assignments.join(", "),
        values.len()
    );
    let new = records(tx, &sql, &values)
        .await?
        .pop()
        .ok_or_else(|| StoreError::Task("the updated record vanished".into()))?;
    if grows_too_large(&old, &new) {
        // The transaction is dropped uncommitted, so rolled back.
        return Err(StoreError::TooLarge);
    }
    Ok(Some((old, new)))
}

async fn delete_in(
    tx: &Transaction<'_>,
    app: &str,
    collection: &str,
    id: &str,
    condition: &Condition,
) -> Result<Option<Record>, StoreError> {
    let Some(old) = guarded(tx, app, collection, id, condition, true).await? else {
        return Ok(None);
    };
    let sql = format!(
        "DELETE FROM {} WHERE \"id\" = $1",
        qualified(app, collection)
    );
    dynamic_execute(tx, &sql, &[&id]).await?;
    Ok(Some(old))
}
