//! [`PaymentStore`] on SQLite, in each app's database. Every step is one write of the app's
//! writer thread; steps that settle money are durable writes (committed with their fsync).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteTenants;
use super::records::record_event;
use crate::payments::{
    Applied, CallbackRow, Cause, Change, Created, ORDER_CLOSED, ORDER_CREATED, ORDER_PAID,
    ORDER_PARTLY_REFUNDED, ORDER_REFUNDED, OrderQuery, OrderRow, PayEventRow, PaymentStore,
    REFUND_FAILED, REFUND_PENDING, REFUND_SUCCEEDED, RefundRow, ReportRow, Reserved, change_event,
};
use crate::{AppName, Emit, StoreError};

/// Schema step 14 of an app database: payments.
pub(super) const MIGRATION: &str = "
    CREATE TABLE _pay_orders (
        id              TEXT PRIMARY KEY,
        provider        TEXT NOT NULL,
        out_trade_no    TEXT NOT NULL UNIQUE,
        key             TEXT UNIQUE,
        user_id         TEXT,
        amount_fen      INTEGER NOT NULL CHECK (amount_fen > 0),
        description     TEXT NOT NULL,
        metadata        TEXT NOT NULL,
        state           TEXT NOT NULL,
        refunded_fen    INTEGER NOT NULL DEFAULT 0,
        reserved_fen    INTEGER NOT NULL DEFAULT 0 CHECK (reserved_fen <= amount_fen),
        transaction_id  TEXT,
        prepay          TEXT,
        expires_at      INTEGER NOT NULL,
        paid_at         INTEGER,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX _pay_orders_by_user ON _pay_orders (user_id, id);
    CREATE TABLE _pay_events (
        order_id  TEXT NOT NULL REFERENCES _pay_orders (id),
        name      TEXT NOT NULL,
        source    TEXT NOT NULL,
        payload   TEXT NOT NULL,
        at        INTEGER NOT NULL,
        PRIMARY KEY (order_id, name)
    ) STRICT;
    CREATE TABLE _pay_refunds (
        out_refund_no  TEXT PRIMARY KEY,
        order_id       TEXT NOT NULL REFERENCES _pay_orders (id),
        amount_fen     INTEGER NOT NULL CHECK (amount_fen > 0),
        reason         TEXT NOT NULL,
        state          TEXT NOT NULL,
        refund_id      TEXT,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX _pay_refunds_by_order ON _pay_refunds (order_id, created_at);
";

/// Schema step 15: verified callbacks kept for replay, reconciliation reports, and the indexes
/// a day's comparison reads by.
pub(super) const CALLBACKS: &str = "
    CREATE TABLE _pay_callbacks (
        id           TEXT PRIMARY KEY,
        provider     TEXT NOT NULL,
        notify_id    TEXT NOT NULL,
        order_id     TEXT,
        headers      TEXT NOT NULL,
        body         BLOB NOT NULL,
        outcome      TEXT NOT NULL,
        handled      INTEGER NOT NULL,
        received_at  INTEGER NOT NULL,
        last_at      INTEGER NOT NULL,
        UNIQUE (provider, notify_id)
    ) STRICT;
    CREATE INDEX _pay_callbacks_by_order ON _pay_callbacks (order_id, received_at);
    CREATE INDEX _pay_callbacks_by_time ON _pay_callbacks (received_at);
    CREATE TABLE _pay_reports (
        provider     TEXT NOT NULL,
        bill_date    TEXT NOT NULL,
        report       TEXT NOT NULL,
        differences  INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (provider, bill_date)
    ) STRICT;
    CREATE INDEX _pay_orders_by_paid ON _pay_orders (paid_at);
    CREATE INDEX _pay_refunds_by_update ON _pay_refunds (updated_at);
";

const CALLBACK_COLUMNS: &str = "id, provider, notify_id, order_id, headers, body, outcome, handled,
    received_at, last_at";

fn callback_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallbackRow> {
    Ok(CallbackRow {
        id: r.get(0)?,
        provider: r.get(1)?,
        notify_id: r.get(2)?,
        order_id: r.get(3)?,
        headers: r.get(4)?,
        body: r.get(5)?,
        outcome: r.get(6)?,
        handled: r.get(7)?,
        received_at_ms: r.get(8)?,
        last_at_ms: r.get(9)?,
    })
}

fn report_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReportRow> {
    Ok(ReportRow {
        provider: r.get(0)?,
        bill_date: r.get(1)?,
        report: r.get(2)?,
        differences: r.get(3)?,
        created_at_ms: r.get(4)?,
    })
}

const ORDER_COLUMNS: &str = "id, provider, out_trade_no, key, user_id, amount_fen, description,
    metadata, state, refunded_fen, reserved_fen, transaction_id, prepay, expires_at, paid_at,
    created_at, updated_at";

const REFUND_COLUMNS: &str =
    "out_refund_no, order_id, amount_fen, reason, state, refund_id, created_at, updated_at";

fn order_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderRow> {
    Ok(OrderRow {
        id: r.get(0)?,
        provider: r.get(1)?,
        out_trade_no: r.get(2)?,
        key: r.get(3)?,
        user_id: r.get(4)?,
        amount_fen: r.get(5)?,
        description: r.get(6)?,
        metadata: r.get(7)?,
        state: r.get(8)?,
        refunded_fen: r.get(9)?,
        reserved_fen: r.get(10)?,
        transaction_id: r.get(11)?,
        prepay: r.get(12)?,
        expires_at_ms: r.get(13)?,
        paid_at_ms: r.get(14)?,
        created_at_ms: r.get(15)?,
        updated_at_ms: r.get(16)?,
    })
}

fn refund_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<RefundRow> {
    Ok(RefundRow {
        out_refund_no: r.get(0)?,
        order_id: r.get(1)?,
        amount_fen: r.get(2)?,
        reason: r.get(3)?,
        state: r.get(4)?,
        refund_id: r.get(5)?,
        created_at_ms: r.get(6)?,
        updated_at_ms: r.get(7)?,
    })
}

fn order_where(c: &Connection, column: &str, value: &str) -> Result<Option<OrderRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM _pay_orders WHERE {column} = ?1"
    ))?
    .query_row([value], order_of)
    .optional()?)
}

fn refund_in(c: &Connection, out_refund_no: &str) -> Result<Option<RefundRow>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {REFUND_COLUMNS} FROM _pay_refunds WHERE out_refund_no = ?1"
    ))?
    .query_row([out_refund_no], refund_of)
    .optional()?)
}

/// Moves the order as `change` asks, if its state allows; true when it moved.
fn move_order(c: &Connection, id: &str, change: &Change, at_ms: i64) -> Result<bool, StoreError> {
    let changed = match change {
        Change::Paid {
            transaction_id,
            paid_at_ms,
        } => c
            .prepare_cached(
                "UPDATE _pay_orders SET state = ?2, transaction_id = ?3, paid_at = ?4,
                     updated_at = ?5
                 WHERE id = ?1 AND state = ?6",
            )?
            .execute(params![
                id,
                ORDER_PAID,
                transaction_id,
                paid_at_ms,
                at_ms,
                ORDER_CREATED
            ])?,
        Change::Closed => c
            .prepare_cached(
                "UPDATE _pay_orders SET state = ?2, updated_at = ?3 WHERE id = ?1 AND state = ?4",
            )?
            .execute(params![id, ORDER_CLOSED, at_ms, ORDER_CREATED])?,
        Change::Refund {
            out_refund_no,
            refund_id,
            succeeded,
        } => {
            let state = if *succeeded {
                REFUND_SUCCEEDED
            } else {
                REFUND_FAILED
            };
            let amount: Option<i64> = c
                .prepare_cached(
                    "UPDATE _pay_refunds SET state = ?2, refund_id = coalesce(?3, refund_id),
                         updated_at = ?4
                     WHERE out_refund_no = ?1 AND order_id = ?5 AND state = ?6
                     RETURNING amount_fen",
                )?
                .query_row(
                    params![out_refund_no, state, refund_id, at_ms, id, REFUND_PENDING],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(amount) = amount else {
                return Ok(false);
            };
            if *succeeded {
                c.prepare_cached(
                    "UPDATE _pay_orders SET refunded_fen = refunded_fen + ?2,
                         state = CASE WHEN refunded_fen + ?2 >= amount_fen THEN ?3 ELSE ?4 END,
                         updated_at = ?5
                     WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    amount,
                    ORDER_REFUNDED,
                    ORDER_PARTLY_REFUNDED,
                    at_ms
                ])?
            } else {
                c.prepare_cached(
                    "UPDATE _pay_orders SET reserved_fen = reserved_fen - ?2, updated_at = ?3
                     WHERE id = ?1",
                )?
                .execute(params![id, amount, at_ms])?
            }
        }
    };
    Ok(changed == 1)
}

#[async_trait]
impl PaymentStore for SqliteTenants {
    async fn create_order(&self, app: &AppName, order: OrderRow) -> Result<Created, StoreError> {
        // Durable: the platform may take money for the order as soon as it is placed.
        self.write_app_durable(app, move |c| {
            if let Some(key) = &order.key
                && let Some(existing) = order_where(c, "key", key)?
            {
                return Ok(Created::Existing(existing));
            }
            c.prepare_cached(&format!(
                "INSERT INTO _pay_orders ({ORDER_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                     ?17)"
            ))?
            .execute(params![
                order.id,
                order.provider,
                order.out_trade_no,
                order.key,
                order.user_id,
                order.amount_fen,
                order.description,
                order.metadata,
                order.state,
                order.refunded_fen,
                order.reserved_fen,
                order.transaction_id,
                order.prepay,
                order.expires_at_ms,
                order.paid_at_ms,
                order.created_at_ms,
                order.updated_at_ms,
            ])
            .map_err(super::from_write)?;
            Ok(Created::New(order))
        })
        .await
    }

    async fn set_prepay(
        &self,
        app: &AppName,
        id: &str,
        prepay: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (id, prepay) = (id.to_owned(), prepay.to_owned());
        self.write_app(app, move |c| {
            c.prepare_cached("UPDATE _pay_orders SET prepay = ?2, updated_at = ?3 WHERE id = ?1")?
                .execute(params![id, prepay, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn order(&self, app: &AppName, id: &str) -> Result<Option<OrderRow>, StoreError> {
        let id = id.to_owned();
        self.read_app(app, move |c| order_where(c, "id", &id)).await
    }

    async fn order_by_trade_no(
        &self,
        app: &AppName,
        out_trade_no: &str,
    ) -> Result<Option<OrderRow>, StoreError> {
        let no = out_trade_no.to_owned();
        self.read_app(app, move |c| order_where(c, "out_trade_no", &no))
            .await
    }

    async fn orders(&self, app: &AppName, query: OrderQuery) -> Result<Vec<OrderRow>, StoreError> {
        self.read_app(app, move |c| {
            let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
            let mut statement = c.prepare_cached(&format!(
                "SELECT {ORDER_COLUMNS} FROM _pay_orders
                 WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR state = ?2)
                     AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = statement
                .query_map(
                    params![query.user_id, query.state, query.before, limit],
                    order_of,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn apply(
        &self,
        app: &AppName,
        id: &str,
        change: Change,
        cause: Cause,
        emit: Option<Emit>,
    ) -> Result<Applied, StoreError> {
        let id = id.to_owned();
        self.write_app_durable(app, move |c| {
            let name = change.event_name();
            let seen: bool = c
                .prepare_cached("SELECT 1 FROM _pay_events WHERE order_id = ?1 AND name = ?2")?
                .exists(params![id, name])?;
            if !seen && move_order(c, &id, &change, cause.at_ms)? {
                c.prepare_cached(
                    "INSERT INTO _pay_events (order_id, name, source, payload, at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    id,
                    name,
                    cause.source,
                    cause.payload,
                    cause.at_ms
                ])?;
                let order = order_where(c, "id", &id)?.ok_or(StoreError::NotFound)?;
                let (key, payload) = change_event(&change, &order);
                let emit = emit.unwrap_or(Emit {
                    depth: 0,
                    at_ms: cause.at_ms,
                    deliveries: Vec::new(),
                });
                record_event(c, change.log_kind(), &key, &payload, &emit)?;
                return Ok(Applied::Changed(order));
            }
            let order = order_where(c, "id", &id)?.ok_or(StoreError::NotFound)?;
            Ok(Applied::Unchanged(order))
        })
        .await
    }

    async fn reserve_refund(
        &self,
        app: &AppName,
        refund: RefundRow,
    ) -> Result<Reserved, StoreError> {
        self.write_app_durable(app, move |c| {
            if let Some(existing) = refund_in(c, &refund.out_refund_no)? {
                return Ok(Reserved::Existing(existing));
            }
            let reserved = c
                .prepare_cached(
                    "UPDATE _pay_orders SET reserved_fen = reserved_fen + ?2, updated_at = ?3
                     WHERE id = ?1 AND state IN (?4, ?5) AND reserved_fen + ?2 <= amount_fen",
                )?
                .execute(params![
                    refund.order_id,
                    refund.amount_fen,
                    refund.created_at_ms,
                    ORDER_PAID,
                    ORDER_PARTLY_REFUNDED
                ])?;
            if reserved == 0 {
                let order = order_where(c, "id", &refund.order_id)?.ok_or(StoreError::NotFound)?;
                return Ok(
                    if order.state == ORDER_PAID || order.state == ORDER_PARTLY_REFUNDED {
                        Reserved::Exceeds(order)
                    } else {
                        Reserved::NotRefundable(order)
                    },
                );
            }
            c.prepare_cached(&format!(
                "INSERT INTO _pay_refunds ({REFUND_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                refund.out_refund_no,
                refund.order_id,
                refund.amount_fen,
                refund.reason,
                refund.state,
                refund.refund_id,
                refund.created_at_ms,
                refund.updated_at_ms,
            ])
            .map_err(super::from_write)?;
            Ok(Reserved::New(refund))
        })
        .await
    }

    async fn refund(
        &self,
        app: &AppName,
        out_refund_no: &str,
    ) -> Result<Option<RefundRow>, StoreError> {
        let no = out_refund_no.to_owned();
        self.read_app(app, move |c| refund_in(c, &no)).await
    }

    async fn set_refund_id(
        &self,
        app: &AppName,
        out_refund_no: &str,
        refund_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (no, refund_id) = (out_refund_no.to_owned(), refund_id.to_owned());
        self.write_app(app, move |c| {
            c.prepare_cached(
                "UPDATE _pay_refunds SET refund_id = ?2, updated_at = ?3 WHERE out_refund_no = ?1",
            )?
            .execute(params![no, refund_id, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn refunds(&self, app: &AppName, order_id: &str) -> Result<Vec<RefundRow>, StoreError> {
        let order_id = order_id.to_owned();
        self.read_app(app, move |c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {REFUND_COLUMNS} FROM _pay_refunds WHERE order_id = ?1
                 ORDER BY created_at, out_refund_no"
            ))?;
            let rows = statement
                .query_map([&order_id], refund_of)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn pay_events(
        &self,
        app: &AppName,
        order_id: &str,
    ) -> Result<Vec<PayEventRow>, StoreError> {
        let order_id = order_id.to_owned();
        self.read_app(app, move |c| {
            let mut statement = c.prepare_cached(
                "SELECT order_id, name, source, payload, at FROM _pay_events WHERE order_id = ?1
                 ORDER BY at, name",
            )?;
            let rows = statement
                .query_map([&order_id], |r| {
                    Ok(PayEventRow {
                        order_id: r.get(0)?,
                        name: r.get(1)?,
                        source: r.get(2)?,
                        payload: r.get(3)?,
                        at_ms: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn unsettled(&self, app: &AppName) -> Result<u64, StoreError> {
        self.read_app(app, move |c| {
            let count: i64 = c
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM _pay_orders WHERE state = ?1)
                          + (SELECT count(*) FROM _pay_refunds WHERE state = ?2)",
                )?
                .query_row(params![ORDER_CREATED, REFUND_PENDING], |r| r.get(0))?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
        .await
    }

    async fn note(&self, app: &AppName, event: PayEventRow) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.prepare_cached(
                "INSERT INTO _pay_events (order_id, name, source, payload, at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                event.order_id,
                event.name,
                event.source,
                event.payload,
                event.at_ms
            ])
            .map_err(super::from_write)?;
            Ok(())
        })
        .await
    }

    async fn record_callback(
        &self,
        app: &AppName,
        callback: CallbackRow,
    ) -> Result<CallbackRow, StoreError> {
        self.write_app(app, move |c| {
            Ok(c.prepare_cached(&format!(
                "INSERT INTO _pay_callbacks ({CALLBACK_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?8)
                 ON CONFLICT (provider, notify_id) DO UPDATE SET
                     outcome = excluded.outcome,
                     order_id = coalesce(excluded.order_id, _pay_callbacks.order_id),
                     handled = _pay_callbacks.handled + 1,
                     last_at = excluded.last_at
                 RETURNING {CALLBACK_COLUMNS}"
            ))?
            .query_row(
                params![
                    callback.id,
                    callback.provider,
                    callback.notify_id,
                    callback.order_id,
                    callback.headers,
                    callback.body,
                    callback.outcome,
                    callback.last_at_ms,
                ],
                callback_of,
            )?)
        })
        .await
    }

    async fn sweep_callbacks(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        self.write_app(app, move |c| {
            let deleted = c
                .prepare_cached("DELETE FROM _pay_callbacks WHERE last_at < ?1")?
                .execute([before_ms])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn callback(&self, app: &AppName, id: &str) -> Result<Option<CallbackRow>, StoreError> {
        let id = id.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {CALLBACK_COLUMNS} FROM _pay_callbacks WHERE id = ?1"
            ))?
            .query_row([&id], callback_of)
            .optional()?)
        })
        .await
    }

    async fn callbacks(
        &self,
        app: &AppName,
        order_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallbackRow>, StoreError> {
        let order_id = order_id.map(str::to_owned);
        self.read_app(app, move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // Two statements, so each uses its index.
            let rows = match &order_id {
                Some(order_id) => c
                    .prepare_cached(&format!(
                        "SELECT {CALLBACK_COLUMNS} FROM _pay_callbacks WHERE order_id = ?1
                         ORDER BY received_at DESC, id DESC LIMIT ?2"
                    ))?
                    .query_map(params![order_id, limit], callback_of)?
                    .collect::<Result<Vec<_>, _>>()?,
                None => c
                    .prepare_cached(&format!(
                        "SELECT {CALLBACK_COLUMNS} FROM _pay_callbacks
                         ORDER BY received_at DESC, id DESC LIMIT ?1"
                    ))?
                    .query_map(params![limit], callback_of)?
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(rows)
        })
        .await
    }

    async fn settled_between(
        &self,
        app: &AppName,
        provider: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<OrderRow>, Vec<RefundRow>), StoreError> {
        let provider = provider.to_owned();
        self.read_app(app, move |c| {
            let orders = c
                .prepare_cached(&format!(
                    "SELECT {ORDER_COLUMNS} FROM _pay_orders
                     WHERE paid_at >= ?2 AND paid_at < ?3 AND provider = ?1"
                ))?
                .query_map(params![provider, from_ms, to_ms], order_of)?
                .collect::<Result<Vec<_>, _>>()?;
            let refunds = c
                .prepare_cached(&format!(
                    "SELECT {} FROM _pay_refunds r JOIN _pay_orders o ON o.id = r.order_id
                     WHERE r.updated_at >= ?2 AND r.updated_at < ?3 AND r.state = ?4
                         AND o.provider = ?1",
                    prefixed(REFUND_COLUMNS, "r.")
                ))?
                .query_map(
                    params![provider, from_ms, to_ms, REFUND_SUCCEEDED],
                    refund_of,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((orders, refunds))
        })
        .await
    }

    async fn orders_by_trade_nos(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<OrderRow>, StoreError> {
        self.read_app(app, move |c| {
            let mut found = Vec::new();
            for no in &numbers {
                found.extend(order_where(c, "out_trade_no", no)?);
            }
            Ok(found)
        })
        .await
    }

    async fn refunds_by_numbers(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<RefundRow>, StoreError> {
        self.read_app(app, move |c| {
            let mut found = Vec::new();
            for no in &numbers {
                found.extend(refund_in(c, no)?);
            }
            Ok(found)
        })
        .await
    }

    async fn put_report(&self, app: &AppName, report: ReportRow) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.prepare_cached(
                "INSERT INTO _pay_reports (provider, bill_date, report, differences, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (provider, bill_date) DO UPDATE SET report = excluded.report,
                     differences = excluded.differences, created_at = excluded.created_at",
            )?
            .execute(params![
                report.provider,
                report.bill_date,
                report.report,
                report.differences,
                report.created_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn report(
        &self,
        app: &AppName,
        provider: &str,
        bill_date: &str,
    ) -> Result<Option<ReportRow>, StoreError> {
        let (provider, date) = (provider.to_owned(), bill_date.to_owned());
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT provider, bill_date, report, differences, created_at FROM _pay_reports
                 WHERE provider = ?1 AND bill_date = ?2",
            )?
            .query_row([&provider, &date], report_of)
            .optional()?)
        })
        .await
    }

    async fn reports(&self, app: &AppName, limit: usize) -> Result<Vec<ReportRow>, StoreError> {
        self.read_app(app, move |c| {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = c
                .prepare_cached(
                    "SELECT provider, bill_date, report, differences, created_at FROM _pay_reports
                     ORDER BY bill_date DESC, provider LIMIT ?1",
                )?
                .query_map([limit], report_of)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }
}

/// `columns` (a comma-separated list) each with `prefix`.
fn prefixed(columns: &str, prefix: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
