//! [`PaymentStore`] on PostgreSQL, in each app's schema, with the same rows and outcomes as on
//! SQLite. Several connections (and nodes) apply callbacks and reserve refunds at once, so each
//! step is made safe on its own:
//!
//! - applying a change first locks the order's row (`FOR UPDATE`), so two callbacks of one
//!   order are applied one after the other, and the second finds the event row the first wrote;
//! - a refund is reserved with one conditional `UPDATE` of the order's `reserved_fen`, which
//!   locks the row and re-checks the bound on the row as it is at that moment: concurrent
//!   refunds of one order never reserve more than its amount;
//! - both commit with `synchronous_commit = on`, whatever the node's durability.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::records::record_event;
use super::{Postgres, durable_commit, execute, row, rows, schema};
use crate::payments::{
    Applied, CallbackRow, Cause, Change, Created, ORDER_CLOSED, ORDER_CREATED, ORDER_PAID,
    ORDER_PARTLY_REFUNDED, ORDER_REFUNDED, OrderQuery, OrderRow, PayEventRow, PaymentStore,
    REFUND_FAILED, REFUND_PENDING, REFUND_SUCCEEDED, RefundRow, ReportRow, Reserved, change_event,
};
use crate::{AppName, Emit, StoreError};

/// The schema step of an app's payments: SQLite's step 14.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._pay_orders (
        id              text COLLATE \"C\" PRIMARY KEY,
        provider        text NOT NULL,
        out_trade_no    text COLLATE \"C\" NOT NULL UNIQUE,
        key             text COLLATE \"C\" UNIQUE,
        user_id         text COLLATE \"C\",
        amount_fen      bigint NOT NULL CHECK (amount_fen > 0),
        description     text NOT NULL,
        metadata        text NOT NULL,
        state           text NOT NULL,
        refunded_fen    bigint NOT NULL DEFAULT 0,
        reserved_fen    bigint NOT NULL DEFAULT 0 CHECK (reserved_fen <= amount_fen),
        transaction_id  text,
        prepay          text,
        expires_at      bigint NOT NULL,
        paid_at         bigint,
        created_at      bigint NOT NULL,
        updated_at      bigint NOT NULL
    );
    CREATE INDEX _pay_orders_by_user ON {s}._pay_orders (user_id, id);
    CREATE TABLE {s}._pay_events (
        order_id  text COLLATE \"C\" NOT NULL REFERENCES {s}._pay_orders (id),
        name      text COLLATE \"C\" NOT NULL,
        source    text NOT NULL,
        payload   text NOT NULL,
        at        bigint NOT NULL,
        PRIMARY KEY (order_id, name)
    );
    CREATE TABLE {s}._pay_refunds (
        out_refund_no  text COLLATE \"C\" PRIMARY KEY,
        order_id       text COLLATE \"C\" NOT NULL REFERENCES {s}._pay_orders (id),
        amount_fen     bigint NOT NULL CHECK (amount_fen > 0),
        reason         text NOT NULL,
        state          text NOT NULL,
        refund_id      text,
        created_at     bigint NOT NULL,
        updated_at     bigint NOT NULL
    );
    CREATE INDEX _pay_refunds_by_order ON {s}._pay_refunds (order_id, created_at);
";

/// Verified callbacks, reports and the comparison's indexes: SQLite's step 15.
pub(super) const CALLBACKS: &str = "
    CREATE TABLE {s}._pay_callbacks (
        id           text COLLATE \"C\" PRIMARY KEY,
        provider     text NOT NULL,
        notify_id    text COLLATE \"C\" NOT NULL,
        order_id     text COLLATE \"C\",
        headers      text NOT NULL,
        body         bytea NOT NULL,
        outcome      text NOT NULL,
        handled      bigint NOT NULL,
        received_at  bigint NOT NULL,
        last_at      bigint NOT NULL,
        UNIQUE (provider, notify_id)
    );
    CREATE INDEX _pay_callbacks_by_order ON {s}._pay_callbacks (order_id, received_at);
    CREATE INDEX _pay_callbacks_by_time ON {s}._pay_callbacks (received_at);
    CREATE TABLE {s}._pay_reports (
        provider     text COLLATE \"C\" NOT NULL,
        bill_date    text COLLATE \"C\" NOT NULL,
        report       text NOT NULL,
        differences  bigint NOT NULL,
        created_at   bigint NOT NULL,
        PRIMARY KEY (provider, bill_date)
    );
    CREATE INDEX _pay_orders_by_paid ON {s}._pay_orders (paid_at);
    CREATE INDEX _pay_refunds_by_update ON {s}._pay_refunds (updated_at);
";

const CALLBACK_COLUMNS: &str = "id, provider, notify_id, order_id, headers, body, outcome, handled,
    received_at, last_at";

fn callback_of(r: &Row) -> Result<CallbackRow, StoreError> {
    Ok(CallbackRow {
        id: r.try_get(0)?,
        provider: r.try_get(1)?,
        notify_id: r.try_get(2)?,
        order_id: r.try_get(3)?,
        headers: r.try_get(4)?,
        body: r.try_get(5)?,
        outcome: r.try_get(6)?,
        handled: r.try_get(7)?,
        received_at_ms: r.try_get(8)?,
        last_at_ms: r.try_get(9)?,
    })
}

fn report_of(r: &Row) -> Result<ReportRow, StoreError> {
    Ok(ReportRow {
        provider: r.try_get(0)?,
        bill_date: r.try_get(1)?,
        report: r.try_get(2)?,
        differences: r.try_get(3)?,
        created_at_ms: r.try_get(4)?,
    })
}

const ORDER_COLUMNS: &str = "id, provider, out_trade_no, key, user_id, amount_fen, description,
    metadata, state, refunded_fen, reserved_fen, transaction_id, prepay, expires_at, paid_at,
    created_at, updated_at";

const REFUND_COLUMNS: &str =
    "out_refund_no, order_id, amount_fen, reason, state, refund_id, created_at, updated_at";

fn order_of(r: &Row) -> Result<OrderRow, StoreError> {
    Ok(OrderRow {
        id: r.try_get(0)?,
        provider: r.try_get(1)?,
        out_trade_no: r.try_get(2)?,
        key: r.try_get(3)?,
        user_id: r.try_get(4)?,
        amount_fen: r.try_get(5)?,
        description: r.try_get(6)?,
        metadata: r.try_get(7)?,
        state: r.try_get(8)?,
        refunded_fen: r.try_get(9)?,
        reserved_fen: r.try_get(10)?,
        transaction_id: r.try_get(11)?,
        prepay: r.try_get(12)?,
        expires_at_ms: r.try_get(13)?,
        paid_at_ms: r.try_get(14)?,
        created_at_ms: r.try_get(15)?,
        updated_at_ms: r.try_get(16)?,
    })
}

fn refund_of(r: &Row) -> Result<RefundRow, StoreError> {
    Ok(RefundRow {
        out_refund_no: r.try_get(0)?,
        order_id: r.try_get(1)?,
        amount_fen: r.try_get(2)?,
        reason: r.try_get(3)?,
        state: r.try_get(4)?,
        refund_id: r.try_get(5)?,
        created_at_ms: r.try_get(6)?,
        updated_at_ms: r.try_get(7)?,
    })
}

/// The order whose `column` is `value`; `lock` takes its row for the transaction.
async fn order_where(
    client: &impl GenericClient,
    s: &str,
    column: &str,
    value: &str,
    lock: bool,
) -> Result<Option<OrderRow>, StoreError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM {s}._pay_orders WHERE {column} = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    row(client, &sql, &[&value])
        .await?
        .as_ref()
        .map(order_of)
        .transpose()
}

async fn refund_in(
    client: &impl GenericClient,
    s: &str,
    out_refund_no: &str,
) -> Result<Option<RefundRow>, StoreError> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM {s}._pay_refunds WHERE out_refund_no = $1");
    row(client, &sql, &[&out_refund_no])
        .await?
        .as_ref()
        .map(refund_of)
        .transpose()
}

/// Moves the (locked) order as `change` asks, if its state allows; true when it moved.
async fn move_order(
    client: &impl GenericClient,
    s: &str,
    id: &str,
    change: &Change,
    at_ms: i64,
) -> Result<bool, StoreError> {
    let changed = match change {
        Change::Paid {
            transaction_id,
            paid_at_ms,
        } => {
            let sql = format!(
                "UPDATE {s}._pay_orders SET state = $2, transaction_id = $3, paid_at = $4,
                     updated_at = $5
                 WHERE id = $1 AND state = $6"
            );
            execute(
                client,
                &sql,
                &[
                    &id,
                    &ORDER_PAID,
                    transaction_id,
                    paid_at_ms,
                    &at_ms,
                    &ORDER_CREATED,
                ],
            )
            .await?
        }
        Change::Closed => {
            let sql = format!(
                "UPDATE {s}._pay_orders SET state = $2, updated_at = $3 WHERE id = $1 AND state = $4"
            );
            execute(client, &sql, &[&id, &ORDER_CLOSED, &at_ms, &ORDER_CREATED]).await?
        }
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
            let sql = format!(
                "UPDATE {s}._pay_refunds SET state = $2, refund_id = coalesce($3, refund_id),
                     updated_at = $4
                 WHERE out_refund_no = $1 AND order_id = $5 AND state = $6
                 RETURNING amount_fen"
            );
            let settled = row(
                client,
                &sql,
                &[
                    out_refund_no,
                    &state,
                    refund_id,
                    &at_ms,
                    &id,
                    &REFUND_PENDING,
                ],
            )
            .await?;
            let Some(settled) = settled else {
                return Ok(false);
            };
            let amount: i64 = settled.try_get(0)?;
            if *succeeded {
                let sql = format!(
                    "UPDATE {s}._pay_orders SET refunded_fen = refunded_fen + $2,
                         state = CASE WHEN refunded_fen + $2 >= amount_fen THEN $3 ELSE $4 END,
                         updated_at = $5
                     WHERE id = $1"
                );
                execute(
                    client,
                    &sql,
                    &[
                        &id,
                        &amount,
                        &ORDER_REFUNDED,
                        &ORDER_PARTLY_REFUNDED,
                        &at_ms,
                    ],
                )
                .await?
            } else {
                let sql = format!(
                    "UPDATE {s}._pay_orders SET reserved_fen = reserved_fen - $2, updated_at = $3
                     WHERE id = $1"
                );
                execute(client, &sql, &[&id, &amount, &at_ms]).await?
            }
        }
    };
    Ok(changed == 1)
}

#[async_trait]
impl PaymentStore for Postgres {
    async fn create_order(&self, app: &AppName, order: OrderRow) -> Result<Created, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // Durable: the platform may take money for the order as soon as it is placed.
        durable_commit(&tx).await?;
        // Two creations of one key: the second waits on the first's insert, then conflicts and
        // finds its order.
        let sql = format!(
            "INSERT INTO {s}._pay_orders ({ORDER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
             ON CONFLICT (key) DO NOTHING"
        );
        let inserted = execute(
            &tx,
            &sql,
            &[
                &order.id,
                &order.provider,
                &order.out_trade_no,
                &order.key,
                &order.user_id,
                &order.amount_fen,
                &order.description,
                &order.metadata,
                &order.state,
                &order.refunded_fen,
                &order.reserved_fen,
                &order.transaction_id,
                &order.prepay,
                &order.expires_at_ms,
                &order.paid_at_ms,
                &order.created_at_ms,
                &order.updated_at_ms,
            ],
        )
        .await?;
        let created = if inserted == 1 {
            Created::New(order)
        } else {
            let key = order.key.as_deref().unwrap_or_default();
            let existing = order_where(&tx, &s, "key", key, false)
                .await?
                .ok_or(StoreError::Conflict)?;
            Created::Existing(existing)
        };
        tx.commit().await?;
        Ok(created)
    }

    async fn set_prepay(
        &self,
        app: &AppName,
        id: &str,
        prepay: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}._pay_orders SET prepay = $2, updated_at = $3 WHERE id = $1",
            schema(app)
        );
        execute(&*client, &sql, &[&id, &prepay, &at_ms]).await?;
        Ok(())
    }

    async fn order(&self, app: &AppName, id: &str) -> Result<Option<OrderRow>, StoreError> {
        let client = self.app_client(app).await?;
        order_where(&*client, &schema(app), "id", id, false).await
    }

    async fn order_by_trade_no(
        &self,
        app: &AppName,
        out_trade_no: &str,
    ) -> Result<Option<OrderRow>, StoreError> {
        let client = self.app_client(app).await?;
        order_where(&*client, &schema(app), "out_trade_no", out_trade_no, false).await
    }

    async fn orders(&self, app: &AppName, query: OrderQuery) -> Result<Vec<OrderRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM {}._pay_orders
             WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR state = $2)
                 AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4",
            schema(app)
        );
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        rows(
            &*client,
            &sql,
            &[&query.user_id, &query.state, &query.before, &limit],
        )
        .await?
        .iter()
        .map(order_of)
        .collect()
    }

    async fn apply(
        &self,
        app: &AppName,
        id: &str,
        change: Change,
        cause: Cause,
        emit: Option<Emit>,
    ) -> Result<Applied, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        durable_commit(&tx).await?;
        let Some(before) = order_where(&tx, &s, "id", id, true).await? else {
            return Err(StoreError::NotFound);
        };
        let name = change.event_name();
        let sql = format!("SELECT 1 FROM {s}._pay_events WHERE order_id = $1 AND name = $2");
        let seen = row(&tx, &sql, &[&id, &name]).await?.is_some();
        if seen || !move_order(&tx, &s, id, &change, cause.at_ms).await? {
            tx.commit().await?;
            return Ok(Applied::Unchanged(before));
        }
        let sql = format!(
            "INSERT INTO {s}._pay_events (order_id, name, source, payload, at)
             VALUES ($1, $2, $3, $4, $5)"
        );
        execute(
            &tx,
            &sql,
            &[&id, &name, &cause.source, &cause.payload, &cause.at_ms],
        )
        .await?;
        let order = order_where(&tx, &s, "id", id, false)
            .await?
            .ok_or(StoreError::NotFound)?;
        let (key, payload) = change_event(&change, &order);
        let emit = emit.unwrap_or(Emit {
            depth: 0,
            at_ms: cause.at_ms,
            deliveries: Vec::new(),
        });
        record_event(&tx, &s, change.log_kind(), &key, &payload, &emit).await?;
        tx.commit().await?;
        Ok(Applied::Changed(order))
    }

    async fn reserve_refund(
        &self,
        app: &AppName,
        refund: RefundRow,
    ) -> Result<Reserved, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        durable_commit(&tx).await?;
        if let Some(existing) = refund_in(&tx, &s, &refund.out_refund_no).await? {
            tx.commit().await?;
            return Ok(Reserved::Existing(existing));
        }
        let sql = format!(
            "UPDATE {s}._pay_orders SET reserved_fen = reserved_fen + $2, updated_at = $3
             WHERE id = $1 AND state IN ($4, $5) AND reserved_fen + $2 <= amount_fen"
        );
        let reserved = execute(
            &tx,
            &sql,
            &[
                &refund.order_id,
                &refund.amount_fen,
                &refund.created_at_ms,
                &ORDER_PAID,
                &ORDER_PARTLY_REFUNDED,
            ],
        )
        .await?;
        if reserved == 0 {
            let order = order_where(&tx, &s, "id", &refund.order_id, false)
                .await?
                .ok_or(StoreError::NotFound)?;
            tx.commit().await?;
            return Ok(
                if order.state == ORDER_PAID || order.state == ORDER_PARTLY_REFUNDED {
                    Reserved::Exceeds(order)
                } else {
                    Reserved::NotRefundable(order)
                },
            );
        }
        let sql = format!(
            "INSERT INTO {s}._pay_refunds ({REFUND_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        let inserted = execute(
            &tx,
            &sql,
            &[
                &refund.out_refund_no,
                &refund.order_id,
                &refund.amount_fen,
                &refund.reason,
                &refund.state,
                &refund.refund_id,
                &refund.created_at_ms,
                &refund.updated_at_ms,
            ],
        )
        .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                Ok(Reserved::New(refund))
            }
            // The same number reserved meanwhile on another connection: this reservation is
            // undone, and that refund is the answer.
            Err(StoreError::Conflict) => {
                drop(tx);
                let client = self.app_client(app).await?;
                refund_in(&*client, &s, &refund.out_refund_no)
                    .await?
                    .map(Reserved::Existing)
                    .ok_or(StoreError::Conflict)
            }
            Err(e) => Err(e),
        }
    }

    async fn refund(
        &self,
        app: &AppName,
        out_refund_no: &str,
    ) -> Result<Option<RefundRow>, StoreError> {
        let client = self.app_client(app).await?;
        refund_in(&*client, &schema(app), out_refund_no).await
    }

    async fn set_refund_id(
        &self,
        app: &AppName,
        out_refund_no: &str,
        refund_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}._pay_refunds SET refund_id = $2, updated_at = $3 WHERE out_refund_no = $1",
            schema(app)
        );
        execute(&*client, &sql, &[&out_refund_no, &refund_id, &at_ms]).await?;
        Ok(())
    }

    async fn refunds(&self, app: &AppName, order_id: &str) -> Result<Vec<RefundRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM {}._pay_refunds WHERE order_id = $1
             ORDER BY created_at, out_refund_no",
            schema(app)
        );
        rows(&*client, &sql, &[&order_id])
            .await?
            .iter()
            .map(refund_of)
            .collect()
    }

    async fn pay_events(
        &self,
        app: &AppName,
        order_id: &str,
    ) -> Result<Vec<PayEventRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT order_id, name, source, payload, at FROM {}._pay_events WHERE order_id = $1
             ORDER BY at, name",
            schema(app)
        );
        rows(&*client, &sql, &[&order_id])
            .await?
            .iter()
            .map(|r| {
                Ok(PayEventRow {
                    order_id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    source: r.try_get(2)?,
                    payload: r.try_get(3)?,
                    at_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn unsettled(&self, app: &AppName) -> Result<u64, StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let sql = format!(
            "SELECT (SELECT count(*) FROM {s}._pay_orders WHERE state = $1)
                  + (SELECT count(*) FROM {s}._pay_refunds WHERE state = $2)"
        );
        let count: i64 = row(&*client, &sql, &[&ORDER_CREATED, &REFUND_PENDING])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn note(&self, app: &AppName, event: PayEventRow) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {}._pay_events (order_id, name, source, payload, at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[
                &event.order_id,
                &event.name,
                &event.source,
                &event.payload,
                &event.at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn record_callback(
        &self,
        app: &AppName,
        callback: CallbackRow,
    ) -> Result<CallbackRow, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {s}._pay_callbacks AS c ({CALLBACK_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8)
             ON CONFLICT (provider, notify_id) DO UPDATE SET
                 outcome = excluded.outcome,
                 order_id = coalesce(excluded.order_id, c.order_id),
                 handled = c.handled + 1,
                 last_at = excluded.last_at
             RETURNING {CALLBACK_COLUMNS}",
            s = schema(app)
        );
        let stored = row(
            &*client,
            &sql,
            &[
                &callback.id,
                &callback.provider,
                &callback.notify_id,
                &callback.order_id,
                &callback.headers,
                &callback.body,
                &callback.outcome,
                &callback.last_at_ms,
            ],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        callback_of(&stored)
    }

    async fn sweep_callbacks(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "DELETE FROM {}._pay_callbacks WHERE last_at < $1",
            schema(app)
        );
        execute(&*client, &sql, &[&before_ms]).await
    }

    async fn callback(&self, app: &AppName, id: &str) -> Result<Option<CallbackRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {CALLBACK_COLUMNS} FROM {}._pay_callbacks WHERE id = $1",
            schema(app)
        );
        row(&*client, &sql, &[&id])
            .await?
            .as_ref()
            .map(callback_of)
            .transpose()
    }

    async fn callbacks(
        &self,
        app: &AppName,
        order_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallbackRow>, StoreError> {
        let client = self.app_client(app).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let s = schema(app);
        // Two statements, so each uses its index.
        let found = match order_id {
            Some(order_id) => {
                let sql = format!(
                    "SELECT {CALLBACK_COLUMNS} FROM {s}._pay_callbacks WHERE order_id = $1
                     ORDER BY received_at DESC, id DESC LIMIT $2"
                );
                rows(&*client, &sql, &[&order_id, &limit]).await?
            }
            None => {
                let sql = format!(
                    "SELECT {CALLBACK_COLUMNS} FROM {s}._pay_callbacks
                     ORDER BY received_at DESC, id DESC LIMIT $1"
                );
                rows(&*client, &sql, &[&limit]).await?
            }
        };
        found.iter().map(callback_of).collect()
    }

    async fn settled_between(
        &self,
        app: &AppName,
        provider: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<OrderRow>, Vec<RefundRow>), StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM {s}._pay_orders
             WHERE paid_at >= $2 AND paid_at < $3 AND provider = $1"
        );
        let orders = rows(&*client, &sql, &[&provider, &from_ms, &to_ms])
            .await?
            .iter()
            .map(order_of)
            .collect::<Result<Vec<_>, _>>()?;
        let columns: Vec<String> = REFUND_COLUMNS
            .split(',')
            .map(|c| format!("r.{}", c.trim()))
            .collect();
        let sql = format!(
            "SELECT {} FROM {s}._pay_refunds r JOIN {s}._pay_orders o ON o.id = r.order_id
             WHERE r.updated_at >= $2 AND r.updated_at < $3 AND r.state = $4 AND o.provider = $1",
            columns.join(", ")
        );
        let refunds = rows(
            &*client,
            &sql,
            &[&provider, &from_ms, &to_ms, &REFUND_SUCCEEDED],
        )
        .await?
        .iter()
        .map(refund_of)
        .collect::<Result<Vec<_>, _>>()?;
        Ok((orders, refunds))
    }

    async fn orders_by_trade_nos(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM {}._pay_orders WHERE out_trade_no = ANY($1)",
            schema(app)
        );
        rows(&*client, &sql, &[&numbers])
            .await?
            .iter()
            .map(order_of)
            .collect()
    }

    async fn refunds_by_numbers(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<RefundRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM {}._pay_refunds WHERE out_refund_no = ANY($1)",
            schema(app)
        );
        rows(&*client, &sql, &[&numbers])
            .await?
            .iter()
            .map(refund_of)
            .collect()
    }

    async fn put_report(&self, app: &AppName, report: ReportRow) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {}._pay_reports (provider, bill_date, report, differences, created_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (provider, bill_date) DO UPDATE SET report = excluded.report,
                 differences = excluded.differences, created_at = excluded.created_at",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[
                &report.provider,
                &report.bill_date,
                &report.report,
                &report.differences,
                &report.created_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn report(
        &self,
        app: &AppName,
        provider: &str,
        bill_date: &str,
    ) -> Result<Option<ReportRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT provider, bill_date, report, differences, created_at FROM {}._pay_reports
             WHERE provider = $1 AND bill_date = $2",
            schema(app)
        );
        row(&*client, &sql, &[&provider, &bill_date])
            .await?
            .as_ref()
            .map(report_of)
            .transpose()
    }

    async fn reports(&self, app: &AppName, limit: usize) -> Result<Vec<ReportRow>, StoreError> {
        let client = self.app_client(app).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT provider, bill_date, report, differences, created_at FROM {}._pay_reports
             ORDER BY bill_date DESC, provider LIMIT $1",
            schema(app)
        );
        rows(&*client, &sql, &[&limit])
            .await?
            .iter()
            .map(report_of)
            .collect()
    }
}
