//! Each app's payments, as stored in the app's own database: orders, the events that moved
//! them (one row per order and event name, so a duplicate callback can not apply twice), and
//! refunds. What a payment means (who may order, which platform, what a callback must match) is
//! decided in `cloudlet-core`; these are the rows and the atomic steps.
//!
//! An order's state only moves forward: `created` → `paid` → `partly_refunded` → `refunded`,
//! and `closed` only from `created`. Every step is one transaction made of conditional updates,
//! so two callbacks racing on two connections (PostgreSQL) still change an order once, and a
//! refund reserves its amount on the order's row (`reserved_fen`, which never passes the
//! amount) before it is sent, so concurrent refunds can not refund more than was paid.
//!
//! Steps that settle money ([`PaymentStore::create_order`], [`PaymentStore::apply`],
//! [`PaymentStore::reserve_refund`]) commit durably against power loss whatever the instance's
//! durability: an order may be paid as soon as it is placed, and the platform stops retrying
//! once it is answered, so neither may outlive a crash less than the platform's word.

use async_trait::async_trait;

use crate::{AppName, Emit, StoreError};

/// An order's states, as stored.
pub const ORDER_CREATED: &str = "created";
pub const ORDER_PAID: &str = "paid";
pub const ORDER_PARTLY_REFUNDED: &str = "partly_refunded";
pub const ORDER_REFUNDED: &str = "refunded";
pub const ORDER_CLOSED: &str = "closed";

/// A refund's states, as stored.
pub const REFUND_PENDING: &str = "pending";
pub const REFUND_SUCCEEDED: &str = "succeeded";
pub const REFUND_FAILED: &str = "failed";

/// The log's kinds of payment events.
pub const PAY_PAID: &str = "pay.paid";
pub const PAY_REFUNDED: &str = "pay.refunded";
pub const PAY_CLOSED: &str = "pay.closed";
pub const PAY_REFUND_FAILED: &str = "pay.refund_failed";

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub id: String,
    /// `wechat` or `alipay`.
    pub provider: String,
    pub out_trade_no: String,
    /// The idempotency key it was created with, scoped by core (`{user}:{key}`).
    pub key: Option<String>,
    pub user_id: Option<String>,
    pub amount_fen: i64,
    pub description: String,
    /// JSON text.
    pub metadata: String,
    pub state: String,
    /// Refunds that succeeded.
    pub refunded_fen: i64,
    /// Refunds that succeeded or are pending: never more than `amount_fen`.
    pub reserved_fen: i64,
    /// The platform's number of the payment, once paid.
    pub transaction_id: Option<String>,
    /// What the platform answered when the order was placed (JSON: `prepay_id`, `trade_no`).
    pub prepay: Option<String>,
    pub expires_at_ms: i64,
    pub paid_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What creating an order did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    New(OrderRow),
    /// The key was used before: the order made then, unchanged.
    Existing(OrderRow),
}

/// A change a verified callback, a query or an admin asks of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `created` → `paid`.
    Paid {
        transaction_id: String,
        paid_at_ms: i64,
    },
    /// `created` → `closed`.
    Closed,
    /// A pending refund's outcome: on success the order's refunded sum grows (and it becomes
    /// `partly_refunded` or `refunded`); on failure its reservation is given back.
    Refund {
        out_refund_no: String,
        refund_id: Option<String>,
        succeeded: bool,
    },
}

impl Change {
    /// The name of its event row: one per order and name.
    pub fn event_name(&self) -> String {
        match self {
            Change::Paid { .. } => "paid".to_owned(),
            Change::Closed => "closed".to_owned(),
            Change::Refund { out_refund_no, .. } => format!("refund:{out_refund_no}"),
        }
    }

    /// The kind of its event in the app's log.
    pub fn log_kind(&self) -> &'static str {
        match self {
            Change::Paid { .. } => PAY_PAID,
            Change::Closed => PAY_CLOSED,
            Change::Refund {
                succeeded: true, ..
            } => PAY_REFUNDED,
            Change::Refund { .. } => PAY_REFUND_FAILED,
        }
    }
}

/// What caused a change, kept on its event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `notify`, `query`, `replay` or `admin`.
    pub source: String,
    /// What the verified callback or query said (JSON text).
    pub payload: String,
    pub at_ms: i64,
}

/// What [`PaymentStore::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The order moved; its event row, its log event and their deliveries are written.
    Changed(OrderRow),
    /// Nothing changed: the change was applied before, or the order's state does not allow it.
    Unchanged(OrderRow),
}

/// A refund as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    pub out_refund_no: String,
    pub order_id: String,
    pub amount_fen: i64,
    pub reason: String,
    pub state: String,
    pub refund_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What reserving a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    New(RefundRow),
    /// The refund number was used before: that refund, whatever it was for.
    Existing(RefundRow),
    /// The order is not paid (or is fully refunded).
    NotRefundable(OrderRow),
    /// The amount with what is already refunded or pending would pass the order's.
    Exceeds(OrderRow),
}

/// An event row of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayEventRow {
    pub order_id: String,
    pub name: String,
    pub source: String,
    pub payload: String,
    pub at_ms: i64,
}

/// A verified callback as it came (its signature headers and body), kept so an admin can
/// replay it: a replay verifies it again, so a row changed in the database replays nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRow {
    pub id: String,
    pub provider: String,
    /// The platform's id of the notification (WeChat Pay's `id`, Alipay's `notify_id`): the
    /// platform's retries of one notification share it, and share its row.
    pub notify_id: String,
    pub order_id: Option<String>,
    /// The signature headers, JSON text (`{}` for Alipay, whose signature is in the body).
    pub headers: String,
    pub body: Vec<u8>,
    /// What handling it last did: `applied`, `unchanged`, `ignored`, or `refused: ` and why.
    pub outcome: String,
    /// How many times it was handled: the platform's retries and replays.
    pub handled: i64,
    pub received_at_ms: i64,
    pub last_at_ms: i64,
}

/// A stored reconciliation report: a day's bill of one provider compared with the orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub provider: String,
    /// `YYYY-MM-DD`, a China-time day.
    pub bill_date: String,
    /// JSON text.
    pub report: String,
    pub differences: i64,
    pub created_at_ms: i64,
}

/// A page of orders, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only this user's.
    pub user_id: Option<String>,
    pub state: Option<String>,
    /// Orders older than this id.
    pub before: Option<String>,
    pub limit: usize,
}

#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Stores a new order, or finds the one made before with the same `key`. An
    /// `out_trade_no` taken by another order is [`StoreError::Conflict`].
    async fn create_order(&self, app: &AppName, order: OrderRow) -> Result<Created, StoreError>;
    /// Records what the platform answered when the order was placed.
    async fn set_prepay(
        &self,
        app: &AppName,
        id: &str,
        prepay: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    async fn order(&self, app: &AppName, id: &str) -> Result<Option<OrderRow>, StoreError>;
    async fn order_by_trade_no(
        &self,
        app: &AppName,
        out_trade_no: &str,
    ) -> Result<Option<OrderRow>, StoreError>;
    async fn orders(&self, app: &AppName, query: OrderQuery) -> Result<Vec<OrderRow>, StoreError>;
    /// Applies `change` to order `id` if its state allows it and its event was not recorded
    /// before: then, in one durable transaction, the order's row, its event row, the log event
    /// (`pay.paid`, …, keyed by the order id, the order as it is now) and `emit`'s deliveries.
    async fn apply(
        &self,
        app: &AppName,
        id: &str,
        change: Change,
        cause: Cause,
        emit: Option<Emit>,
    ) -> Result<Applied, StoreError>;
    /// Reserves a refund of a paid order, durably: its amount is added to the order's
    /// `reserved_fen` only if that stays within the order's amount.
    async fn reserve_refund(
        &self,
        app: &AppName,
        refund: RefundRow,
    ) -> Result<Reserved, StoreError>;
    async fn refund(
        &self,
        app: &AppName,
        out_refund_no: &str,
    ) -> Result<Option<RefundRow>, StoreError>;
    /// Records the platform's number of a pending refund.
    async fn set_refund_id(
        &self,
        app: &AppName,
        out_refund_no: &str,
        refund_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// An order's refunds, oldest first.
    async fn refunds(&self, app: &AppName, order_id: &str) -> Result<Vec<RefundRow>, StoreError>;
    /// An order's event rows, oldest first.
    async fn pay_events(
        &self,
        app: &AppName,
        order_id: &str,
    ) -> Result<Vec<PayEventRow>, StoreError>;
    /// How many orders may still be paid (`created`) and refunds are pending: money not
    /// settled, which deleting the app would drop.
    async fn unsettled(&self, app: &AppName) -> Result<u64, StoreError>;
    /// Adds an event row that changes nothing (an admin's action on the order, for its
    /// timeline); an event of that order and name recorded before is kept.
    async fn note(&self, app: &AppName, event: PayEventRow) -> Result<(), StoreError>;

    /// Stores a verified callback, or, when its notification was stored before, its latest
    /// outcome (and its order, once known); the row as it now is.
    async fn record_callback(
        &self,
        app: &AppName,
        callback: CallbackRow,
    ) -> Result<CallbackRow, StoreError>;
    async fn callback(&self, app: &AppName, id: &str) -> Result<Option<CallbackRow>, StoreError>;
    /// Forgets kept callbacks last handled before `before_ms`; how many.
    async fn sweep_callbacks(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError>;
    /// Stored callbacks, newest first: an order's, or all of them.
    async fn callbacks(
        &self,
        app: &AppName,
        order_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallbackRow>, StoreError>;

    /// A provider's orders paid, and refunds that succeeded here, in `[from_ms, to_ms)`.
    async fn settled_between(
        &self,
        app: &AppName,
        provider: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<OrderRow>, Vec<RefundRow>), StoreError>;
    /// The orders of these numbers that exist.
    async fn orders_by_trade_nos(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<OrderRow>, StoreError>;
    /// The refunds of these numbers that exist.
    async fn refunds_by_numbers(
        &self,
        app: &AppName,
        numbers: Vec<String>,
    ) -> Result<Vec<RefundRow>, StoreError>;
    /// Stores a report, replacing the one of the same provider and day.
    async fn put_report(&self, app: &AppName, report: ReportRow) -> Result<(), StoreError>;
    async fn report(
        &self,
        app: &AppName,
        provider: &str,
        bill_date: &str,
    ) -> Result<Option<ReportRow>, StoreError>;
    /// Reports, newest day first.
    async fn reports(&self, app: &AppName, limit: usize) -> Result<Vec<ReportRow>, StoreError>;
}

/// The order as the log's payload shows it.
pub(crate) fn order_value(order: &OrderRow) -> serde_json::Value {
    serde_json::json!({
        "id": order.id,
        "provider": order.provider,
        "out_trade_no": order.out_trade_no,
        "user_id": order.user_id,
        "amount_fen": order.amount_fen,
        "description": order.description,
        "metadata": serde_json::from_str::<serde_json::Value>(&order.metadata)
            .unwrap_or(serde_json::Value::Null),
        "state": order.state,
        "refunded_fen": order.refunded_fen,
        "transaction_id": order.transaction_id,
        "paid_at_ms": order.paid_at_ms,
        "created_at_ms": order.created_at_ms,
    })
}

/// The log event of a change that moved `order` (as it is now).
pub(crate) fn change_event(change: &Change, order: &OrderRow) -> (String, String) {
    let mut payload = serde_json::json!({ "order": order_value(order) });
    if let Change::Refund {
        out_refund_no,
        refund_id,
        succeeded,
    } = change
    {
        payload["refund"] = serde_json::json!({
            "out_refund_no": out_refund_no,
            "refund_id": refund_id,
            "succeeded": succeeded,
        });
    }
    (order.id.clone(), payload.to_string())
}
