//! [`PaymentStore`] behaves the same on both backends: each scenario is written once against
//! the trait and run on SQLite and on PostgreSQL, as `on_sqlite::{scenario}` and
//! `on_postgres::{scenario}`. The concurrent scenarios run on both too: on SQLite the writer
//! thread serialises them by construction; on PostgreSQL the rows' locks must.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::{
    AppName, Applied, CallbackRow, Cause, Change, Created, Emit, ORDER_CLOSED, ORDER_CREATED,
    ORDER_PAID, ORDER_PARTLY_REFUNDED, ORDER_REFUNDED, OrderQuery, OrderRow, PAY_PAID,
    PAY_REFUNDED, PayEventRow, PaymentStore, REFUND_PENDING, REFUND_SUCCEEDED, RecordStore,
    RefundRow, ReportRow, Reserved, StoreError, TriggerDelivery,
};
use tokio::task::JoinSet;

use crate::backends::{self, add_app, open_postgres, signing_key};

#[derive(Clone)]
struct Stores {
    payments: Arc<dyn PaymentStore>,
    records: Arc<dyn RecordStore>,
    app: AppName,
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn sqlite() -> Stores {
    let (system, tenants, dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "shop").await;
    Stores {
        payments: tenants.clone(),
        records: tenants,
        app,
        _dir: Some(dir),
    }
}

async fn postgres() -> Stores {
    let store = open_postgres(&TestServer::shared().database(), 8).await;
    let app = add_app(&*store, &*store, "shop").await;
    Stores {
        payments: store.clone(),
        records: store,
        app,
        _dir: None,
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::sqlite().await).await;
                }
            )*
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    super::$scenario(super::postgres().await).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn payments_move_from_sqlite() {
                super::payments_move_from_sqlite().await;
            }
        }
    };
}

conformance!(
    an_order_is_created_once_per_key,
    orders_page_newest_first,
    a_change_applies_once_and_only_forward,
    refunds_never_pass_the_amount,
    concurrent_callbacks_pay_an_order_once,
    concurrent_refunds_never_pass_the_amount,
    unsettled_counts_what_may_still_move,
    callbacks_are_kept_once_per_notification,
    a_days_settlements_and_reports_are_found,
);

fn order(id: &str, amount_fen: i64, key: Option<&str>) -> OrderRow {
    OrderRow {
        id: id.into(),
        provider: "wechat".into(),
        out_trade_no: format!("no-{id}"),
        key: key.map(Into::into),
        user_id: Some("u1".into()),
        amount_fen,
        description: "a cup".into(),
        metadata: r#"{"sku":"c1"}"#.into(),
        state: ORDER_CREATED.into(),
        refunded_fen: 0,
        reserved_fen: 0,
        transaction_id: None,
        prepay: None,
        expires_at_ms: 10_000,
        paid_at_ms: None,
        created_at_ms: 10,
        updated_at_ms: 10,
    }
}

fn cause(at_ms: i64) -> Cause {
    Cause {
        source: "notify".into(),
        payload: r#"{"trade_state":"SUCCESS"}"#.into(),
        at_ms,
    }
}

fn paid(transaction_id: &str) -> Change {
    Change::Paid {
        transaction_id: transaction_id.into(),
        paid_at_ms: 50,
    }
}

fn refund(no: &str, order_id: &str, amount_fen: i64) -> RefundRow {
    RefundRow {
        out_refund_no: no.into(),
        order_id: order_id.into(),
        amount_fen,
        reason: "broken".into(),
        state: REFUND_PENDING.into(),
        refund_id: None,
        created_at_ms: 60,
        updated_at_ms: 60,
    }
}

fn refunded(no: &str, succeeded: bool) -> Change {
    Change::Refund {
        out_refund_no: no.into(),
        refund_id: Some(format!("r-{no}")),
        succeeded,
    }
}

async fn new_order(stores: &Stores, row: OrderRow) -> OrderRow {
    match stores
        .payments
        .create_order(&stores.app, row)
        .await
        .unwrap()
    {
        Created::New(order) => order,
        other => panic!("{other:?}"),
    }
}

async fn apply(stores: &Stores, id: &str, change: Change) -> Applied {
    stores
        .payments
        .apply(&stores.app, id, change, cause(100), None)
        .await
        .unwrap()
}

fn state_of(applied: &Applied) -> (&str, bool) {
    match applied {
        Applied::Changed(order) => (order.state.as_str(), true),
        Applied::Unchanged(order) => (order.state.as_str(), false),
    }
}

async fn an_order_is_created_once_per_key(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    let first = new_order(&stores, order("o1", 100, Some("u1:tap"))).await;
    // A double tap: another id, the same key.
    let again = payments
        .create_order(app, order("o2", 999, Some("u1:tap")))
        .await
        .unwrap();
    assert_eq!(again, Created::Existing(first.clone()));
    assert_eq!(payments.order(app, "o2").await.unwrap(), None);
    // An out_trade_no taken by another order is a conflict.
    let mut taken = order("o3", 100, None);
    taken.out_trade_no = first.out_trade_no.clone();
    assert!(matches!(
        payments.create_order(app, taken).await,
        Err(StoreError::Conflict)
    ));
    // Orders without a key never collide on it.
    new_order(&stores, order("o4", 100, None)).await;
    new_order(&stores, order("o5", 100, None)).await;

    assert_eq!(
        payments.order(app, "o1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        payments.order_by_trade_no(app, "no-o1").await.unwrap(),
        Some(first)
    );
    assert_eq!(
        payments.order_by_trade_no(app, "no-o9").await.unwrap(),
        None
    );
    payments
        .set_prepay(app, "o4", r#"{"prepay_id":"wx1"}"#, 20)
        .await
        .unwrap();
    let o4 = payments.order(app, "o4").await.unwrap().unwrap();
    assert_eq!(o4.prepay.as_deref(), Some(r#"{"prepay_id":"wx1"}"#));
    assert_eq!(o4.updated_at_ms, 20);
}

async fn orders_page_newest_first(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    for (id, user) in [("o1", "u1"), ("o2", "u2"), ("o3", "u1"), ("o4", "u1")] {
        let mut row = order(id, 100, None);
        row.user_id = Some(user.into());
        new_order(&stores, row).await;
    }
    apply(&stores, "o3", paid("t3")).await;
    let ids = |rows: Vec<OrderRow>| rows.into_iter().map(|o| o.id).collect::<Vec<_>>();
    let all = OrderQuery {
        limit: 2,
        ..OrderQuery::default()
    };
    assert_eq!(
        ids(payments.orders(app, all.clone()).await.unwrap()),
        ["o4", "o3"]
    );
    let next = OrderQuery {
        before: Some("o3".into()),
        ..all.clone()
    };
    assert_eq!(ids(payments.orders(app, next).await.unwrap()), ["o2", "o1"]);
    let mine = OrderQuery {
        user_id: Some("u1".into()),
        limit: 10,
        ..OrderQuery::default()
    };
    assert_eq!(
        ids(payments.orders(app, mine).await.unwrap()),
        ["o4", "o3", "o1"]
    );
    let paid_ones = OrderQuery {
        state: Some(ORDER_PAID.into()),
        limit: 10,
        ..OrderQuery::default()
    };
    assert_eq!(ids(payments.orders(app, paid_ones).await.unwrap()), ["o3"]);
}

async fn a_change_applies_once_and_only_forward(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    new_order(&stores, order("o1", 100, None)).await;
    new_order(&stores, order("o2", 100, None)).await;
    let emit = Emit {
        depth: 0,
        at_ms: 100,
        deliveries: vec![TriggerDelivery {
            message_id: "m1".into(),
            function: "on-paid".into(),
            max_attempts: 5,
        }],
    };
    let applied = payments
        .apply(app, "o1", paid("t1"), cause(100), Some(emit.clone()))
        .await
        .unwrap();
    let Applied::Changed(order1) = &applied else {
        panic!("{applied:?}");
    };
    assert_eq!(order1.state, ORDER_PAID);
    assert_eq!(order1.transaction_id.as_deref(), Some("t1"));
    assert_eq!(order1.paid_at_ms, Some(50));
    // The duplicate callback (its delivery's message id would collide if it wrote again).
    let again = payments
        .apply(app, "o1", paid("t1-other"), cause(101), Some(emit))
        .await
        .unwrap();
    assert_eq!(again, Applied::Unchanged(order1.clone()));
    // Closing a paid order changes nothing; a closed order can not be paid.
    assert_eq!(
        state_of(&apply(&stores, "o1", Change::Closed).await),
        (ORDER_PAID, false)
    );
    assert_eq!(
        state_of(&apply(&stores, "o2", Change::Closed).await),
        (ORDER_CLOSED, true)
    );
    assert_eq!(
        state_of(&apply(&stores, "o2", paid("t2")).await),
        (ORDER_CLOSED, false)
    );
    // A refund that was never reserved changes nothing.
    assert_eq!(
        state_of(&apply(&stores, "o1", refunded("nope", true)).await),
        (ORDER_PAID, false)
    );
    assert!(matches!(
        payments
            .apply(app, "o9", Change::Closed, cause(100), None)
            .await,
        Err(StoreError::NotFound)
    ));

    // One event row per change that moved an order, with its cause.
    let events = payments.pay_events(app, "o1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].name.as_str(), events[0].source.as_str()),
        ("paid", "notify")
    );
    assert_eq!(events[0].payload, r#"{"trade_state":"SUCCESS"}"#);
    // The log has the paid event, keyed by the order, with the order as it is now.
    let logged = stores.records.event(app, 1).await.unwrap().unwrap();
    assert_eq!(
        (logged.kind.as_str(), logged.key.as_str()),
        (PAY_PAID, "o1")
    );
    let payload: serde_json::Value = serde_json::from_str(&logged.payload).unwrap();
    assert_eq!(payload["order"]["state"], "paid");
    assert_eq!(payload["order"]["amount_fen"], 100);
    assert_eq!(payload["order"]["metadata"]["sku"], "c1");
}

async fn refunds_never_pass_the_amount(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    new_order(&stores, order("o1", 100, None)).await;
    new_order(&stores, order("unpaid", 100, None)).await;
    assert!(matches!(
        payments.reserve_refund(app, refund("r0", "unpaid", 10)).await.unwrap(),
        Reserved::NotRefundable(o) if o.state == ORDER_CREATED
    ));
    apply(&stores, "o1", paid("t1")).await;

    let first = payments
        .reserve_refund(app, refund("r1", "o1", 60))
        .await
        .unwrap();
    assert_eq!(first, Reserved::New(refund("r1", "o1", 60)));
    assert!(matches!(
        payments.reserve_refund(app, refund("r2", "o1", 50)).await.unwrap(),
        Reserved::Exceeds(o) if o.reserved_fen == 60
    ));
    // The same number answers the same refund, whatever the second request says.
    assert_eq!(
        payments
            .reserve_refund(app, refund("r1", "o1", 5))
            .await
            .unwrap(),
        Reserved::Existing(refund("r1", "o1", 60))
    );
    // It fails at the platform: the 60 are free again.
    assert_eq!(
        state_of(&apply(&stores, "o1", refunded("r1", false)).await),
        (ORDER_PAID, true)
    );
    assert!(matches!(
        payments
            .reserve_refund(app, refund("r2", "o1", 50))
            .await
            .unwrap(),
        Reserved::New(_)
    ));
    payments
        .set_refund_id(app, "r2", "wx-r2", 70)
        .await
        .unwrap();
    let changed = apply(&stores, "o1", refunded("r2", true)).await;
    let Applied::Changed(order1) = changed else {
        panic!("{changed:?}");
    };
    assert_eq!(
        (
            order1.state.as_str(),
            order1.refunded_fen,
            order1.reserved_fen
        ),
        (ORDER_PARTLY_REFUNDED, 50, 50)
    );
    let r2 = payments.refund(app, "r2").await.unwrap().unwrap();
    assert_eq!(r2.state, REFUND_SUCCEEDED);
    assert_eq!(
        r2.refund_id.as_deref(),
        Some("r-r2"),
        "the settlement's number wins"
    );
    // Settling twice changes nothing.
    assert_eq!(
        state_of(&apply(&stores, "o1", refunded("r2", true)).await),
        (ORDER_PARTLY_REFUNDED, false)
    );
    payments
        .reserve_refund(app, refund("r3", "o1", 50))
        .await
        .unwrap();
    assert!(matches!(
        payments
            .reserve_refund(app, refund("r4", "o1", 1))
            .await
            .unwrap(),
        Reserved::Exceeds(_)
    ));
    let done = apply(&stores, "o1", refunded("r3", true)).await;
    assert_eq!(state_of(&done), (ORDER_REFUNDED, true));
    assert!(matches!(
        payments.reserve_refund(app, refund("r5", "o1", 1)).await.unwrap(),
        Reserved::NotRefundable(o) if o.state == ORDER_REFUNDED
    ));
    let numbers: Vec<_> = payments
        .refunds(app, "o1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.out_refund_no, r.state))
        .collect();
    assert_eq!(
        numbers,
        [
            ("r1".to_owned(), "failed".to_owned()),
            ("r2".to_owned(), "succeeded".to_owned()),
            ("r3".to_owned(), "succeeded".to_owned())
        ]
    );
    let names: Vec<_> = payments
        .pay_events(app, "o1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["paid", "refund:r1", "refund:r2", "refund:r3"]);
    // The log: paid, then the two refunds that succeeded as `pay.refunded`.
    let mut kinds = Vec::new();
    for seq in 1..=4 {
        kinds.push(stores.records.event(app, seq).await.unwrap().unwrap().kind);
    }
    assert_eq!(
        kinds,
        [PAY_PAID, "pay.refund_failed", PAY_REFUNDED, PAY_REFUNDED]
    );
}

async fn concurrent_callbacks_pay_an_order_once(stores: Stores) {
    new_order(&stores, order("o1", 100, None)).await;
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let stores = stores.clone();
        tasks.spawn(async move {
            let change = if n % 5 == 4 {
                Change::Closed
            } else {
                paid(&format!("t{n}"))
            };
            matches!(apply(&stores, "o1", change).await, Applied::Changed(_))
        });
    }
    let changed = tasks.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(changed, 1, "one callback moved the order");
    let events = stores.payments.pay_events(&stores.app, "o1").await.unwrap();
    assert_eq!(events.len(), 1);
}

async fn concurrent_refunds_never_pass_the_amount(stores: Stores) {
    new_order(&stores, order("o1", 100, None)).await;
    apply(&stores, "o1", paid("t1")).await;
    let mut tasks = JoinSet::new();
    for n in 0..50 {
        let stores = stores.clone();
        tasks.spawn(async move {
            let reserved = stores
                .payments
                .reserve_refund(&stores.app, refund(&format!("r{n}"), "o1", 3))
                .await
                .unwrap();
            matches!(reserved, Reserved::New(_))
        });
    }
    let reserved = tasks.join_all().await.into_iter().filter(|r| *r).count();
    assert_eq!(reserved, 33, "33 refunds of 3 fit in 100");
    let order1 = stores
        .payments
        .order(&stores.app, "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order1.reserved_fen, 99);
}

async fn unsettled_counts_what_may_still_move(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    assert_eq!(payments.unsettled(app).await.unwrap(), 0);
    new_order(&stores, order("o1", 100, None)).await;
    new_order(&stores, order("o2", 100, None)).await;
    assert_eq!(payments.unsettled(app).await.unwrap(), 2);
    apply(&stores, "o1", paid("t1")).await;
    apply(&stores, "o2", Change::Closed).await;
    assert_eq!(payments.unsettled(app).await.unwrap(), 0);
    payments
        .reserve_refund(app, refund("r1", "o1", 10))
        .await
        .unwrap();
    assert_eq!(
        payments.unsettled(app).await.unwrap(),
        1,
        "a pending refund"
    );
    apply(&stores, "o1", refunded("r1", true)).await;
    assert_eq!(payments.unsettled(app).await.unwrap(), 0);
}

fn callback(id: &str, notify_id: &str, outcome: &str, at_ms: i64) -> CallbackRow {
    CallbackRow {
        id: id.into(),
        provider: "wechat".into(),
        notify_id: notify_id.into(),
        order_id: None,
        headers: r#"{"wechatpay-serial":"S"}"#.into(),
        body: b"{\"id\":\"n1\"}\xff".to_vec(),
        outcome: outcome.into(),
        handled: 1,
        received_at_ms: at_ms,
        last_at_ms: at_ms,
    }
}

async fn callbacks_are_kept_once_per_notification(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    new_order(&stores, order("o1", 100, None)).await;
    let first = payments
        .record_callback(app, callback("c1", "n1", "order_not_found", 100))
        .await
        .unwrap();
    assert_eq!((first.handled, first.order_id.as_deref()), (1, None));
    assert_eq!(first.body, b"{\"id\":\"n1\"}\xff", "bytes as they came");
    // The platform's retry of the same notification: one row, its latest outcome, its order
    // once known; the first id and arrival stay.
    let mut retry = callback("c2", "n1", "applied", 200);
    retry.order_id = Some("o1".into());
    let again = payments.record_callback(app, retry).await.unwrap();
    assert_eq!(again.id, "c1");
    assert_eq!(
        (
            again.handled,
            again.outcome.as_str(),
            again.order_id.as_deref()
        ),
        (2, "applied", Some("o1"))
    );
    assert_eq!((again.received_at_ms, again.last_at_ms), (100, 200));
    // A later outcome without an order keeps the order.
    let third = payments
        .record_callback(app, callback("c3", "n1", "unchanged", 300))
        .await
        .unwrap();
    assert_eq!((third.handled, third.order_id.as_deref()), (3, Some("o1")));
    // Another provider's notification of the same id is another row.
    let mut alipay = callback("c4", "n1", "applied", 400);
    alipay.provider = "alipay".into();
    payments.record_callback(app, alipay).await.unwrap();
    assert_eq!(payments.callback(app, "c1").await.unwrap(), Some(third));
    assert_eq!(payments.callback(app, "nope").await.unwrap(), None);
    let all = payments.callbacks(app, None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["c4", "c1"],
        "newest first"
    );
    let of_order = payments.callbacks(app, Some("o1"), 10).await.unwrap();
    assert_eq!(of_order.len(), 1);
    assert_eq!(payments.callbacks(app, None, 1).await.unwrap().len(), 1);
    // Forgotten by when they were last handled: c1 at 300, c4 at 400.
    assert_eq!(payments.sweep_callbacks(app, 400).await.unwrap(), 1);
    assert_eq!(payments.callback(app, "c1").await.unwrap(), None);
    assert!(payments.callback(app, "c4").await.unwrap().is_some());

    // A note joins the order's timeline once, and changes nothing.
    let note = PayEventRow {
        order_id: "o1".into(),
        name: "audit:1".into(),
        source: "admin".into(),
        payload: r#"{"action":"replay"}"#.into(),
        at_ms: 500,
    };
    payments.note(app, note.clone()).await.unwrap();
    payments.note(app, note.clone()).await.unwrap();
    assert_eq!(payments.pay_events(app, "o1").await.unwrap(), vec![note]);
    assert_eq!(
        payments.order(app, "o1").await.unwrap().unwrap().state,
        ORDER_CREATED
    );
}

async fn a_days_settlements_and_reports_are_found(stores: Stores) {
    let (payments, app) = (&*stores.payments, &stores.app);
    for id in ["o1", "o2", "o3"] {
        new_order(&stores, order(id, 100, None)).await;
    }
    let mut alipay = order("o4", 100, None);
    alipay.provider = "alipay".into();
    new_order(&stores, alipay).await;
    for (id, at) in [("o1", 1_000), ("o2", 1_999), ("o3", 2_000), ("o4", 1_500)] {
        let change = Change::Paid {
            transaction_id: format!("t-{id}"),
            paid_at_ms: at,
        };
        payments
            .apply(app, id, change, cause(at), None)
            .await
            .unwrap();
    }
    payments
        .reserve_refund(app, refund("r1", "o1", 40))
        .await
        .unwrap();
    payments
        .reserve_refund(app, refund("r2", "o2", 40))
        .await
        .unwrap();
    payments
        .apply(app, "o1", refunded("r1", true), cause(1_200), None)
        .await
        .unwrap();
    // r2 is still pending: not a settlement.
    let (orders, refunds) = payments
        .settled_between(app, "wechat", 1_000, 2_000)
        .await
        .unwrap();
    let mut ids: Vec<_> = orders.iter().map(|o| o.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["o1", "o2"], "[from, to), this provider's only");
    assert_eq!(
        refunds
            .iter()
            .map(|r| r.out_refund_no.as_str())
            .collect::<Vec<_>>(),
        ["r1"]
    );
    let mut found: Vec<_> = payments
        .orders_by_trade_nos(app, vec!["no-o3".into(), "no-x".into(), "no-o1".into()])
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    found.sort_unstable();
    assert_eq!(found, ["o1", "o3"]);
    let refunds = payments
        .refunds_by_numbers(app, vec!["r2".into(), "r9".into()])
        .await
        .unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].state, REFUND_PENDING);

    let report = |date: &str, differences: i64| ReportRow {
        provider: "wechat".into(),
        bill_date: date.into(),
        report: format!(r#"{{"differences":{differences}}}"#),
        differences,
        created_at_ms: 7,
    };
    payments
        .put_report(app, report("2026-12-01", 2))
        .await
        .unwrap();
    payments
        .put_report(app, report("2026-12-02", 0))
        .await
        .unwrap();
    payments
        .put_report(app, report("2026-12-01", 1))
        .await
        .unwrap();
    assert_eq!(
        payments.report(app, "wechat", "2026-12-01").await.unwrap(),
        Some(report("2026-12-01", 1)),
        "replaced"
    );
    assert_eq!(
        payments.report(app, "alipay", "2026-12-01").await.unwrap(),
        None
    );
    let listed = payments.reports(app, 10).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| r.bill_date.as_str())
            .collect::<Vec<_>>(),
        ["2026-12-02", "2026-12-01"]
    );
}

async fn payments_move_from_sqlite() {
    let (system, tenants, _dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "moving").await;
    let payments: &dyn PaymentStore = &*tenants;
    payments
        .create_order(&app, order("o1", 100, Some("u1:k")))
        .await
        .unwrap();
    payments
        .create_order(&app, order("o2", 100, None))
        .await
        .unwrap();
    payments
        .apply(&app, "o1", paid("t1"), cause(100), None)
        .await
        .unwrap();
    payments
        .reserve_refund(&app, refund("r1", "o1", 30))
        .await
        .unwrap();

    let target = open_postgres(&TestServer::shared().database(), 2).await;
    let moved = cloudlet_store::transfer::transfer_app(
        &system,
        &tenants,
        &target,
        &app,
        &[],
        &[signing_key()],
    )
    .await
    .unwrap();
    assert!(moved.copied);
    let to: &dyn PaymentStore = &*target;
    for id in ["o1", "o2"] {
        assert_eq!(
            to.order(&app, id).await.unwrap(),
            payments.order(&app, id).await.unwrap()
        );
        assert_eq!(
            to.pay_events(&app, id).await.unwrap(),
            payments.pay_events(&app, id).await.unwrap()
        );
    }
    assert_eq!(
        to.refunds(&app, "o1").await.unwrap(),
        payments.refunds(&app, "o1").await.unwrap()
    );
    // The key and the reservation came too.
    assert!(matches!(
        to.create_order(&app, order("o3", 5, Some("u1:k"))).await.unwrap(),
        Created::Existing(o) if o.id == "o1"
    ));
    assert!(matches!(
        to.reserve_refund(&app, refund("r2", "o1", 71))
            .await
            .unwrap(),
        Reserved::Exceeds(_)
    ));
}
