//! The event log read in order ([`RecordStore::events_after`]) and swept with a horizon
//! ([`RecordStore::event_bounds`]) behaves the same on both backends; and on PostgreSQL, where
//! sequence numbers are handed out before commit, an event is never read before one that
//! commits later in an older transaction.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::{AppName, Emit, EventsPage, LogBounds, LogPosition, RecordStore};

use crate::backends::{self, add_app, open_postgres};

struct Stores {
    records: Arc<dyn RecordStore>,
    app: AppName,
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn sqlite() -> Stores {
    let (system, tenants, dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "shop").await;
    Stores {
        records: tenants,
        app,
        _dir: Some(dir),
    }
}

async fn postgres() -> Stores {
    let store = open_postgres(&TestServer::shared().database(), 4).await;
    let app = add_app(&*store, &*store, "shop").await;
    Stores {
        records: store,
        app,
        _dir: None,
    }
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::sqlite().await).await;
                }
            )*
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::postgres().await).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_event_waits_for_an_older_transaction() {
                super::an_event_waits_for_an_older_transaction().await;
            }
        }
    };
}

conformance!(
    the_log_is_read_in_order_after_a_place,
    a_sweep_keeps_its_horizon,
);

async fn append(stores: &Stores, key: &str, at_ms: i64) {
    let emit = Emit {
        depth: 0,
        at_ms,
        deliveries: Vec::new(),
    };
    stores
        .records
        .append_event(&stores.app, "records.create", key, "{}", emit)
        .await
        .unwrap();
}

/// The events after `after` once none is pending. On PostgreSQL an event is in order only below
/// the oldest transaction running on the whole server, other tests' included: it may take a
/// moment.
async fn settled(stores: &Stores, after: LogPosition, limit: usize) -> EventsPage {
    for _ in 0..500 {
        let page = stores
            .records
            .events_after(&stores.app, after, limit)
            .await
            .unwrap();
        if !page.pending {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("events still pending after 5 s");
}

async fn keys_after(stores: &Stores, after: LogPosition, limit: usize) -> Vec<String> {
    let page = settled(stores, after, limit).await;
    page.events.into_iter().map(|e| e.key).collect()
}

async fn the_log_is_read_in_order_after_a_place(stores: Stores) {
    let records = &stores.records;
    let empty = records.event_bounds(&stores.app).await.unwrap();
    assert_eq!(empty, LogBounds::default());
    assert_eq!(empty.end(), LogPosition::default());
    assert!(empty.keeps(LogPosition::default()));
    for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        append(&stores, key, n as i64).await;
    }
    assert_eq!(
        keys_after(&stores, LogPosition::default(), 10).await,
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        keys_after(&stores, LogPosition::default(), 2).await,
        ["a", "b"]
    );
    let page = settled(&stores, LogPosition::default(), 10).await;
    let places: Vec<LogPosition> = page.events.iter().map(|e| e.position()).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{places:?}");
    assert_eq!(keys_after(&stores, places[1], 10).await, ["c", "d"]);
    assert!(keys_after(&stores, places[3], 10).await.is_empty());
    // A place reads back as itself.
    assert_eq!(LogPosition::parse(&places[2].to_string()), Some(places[2]));

    let bounds = records.event_bounds(&stores.app).await.unwrap();
    assert_eq!((bounds.swept, bounds.last), (None, Some(places[3])));
    assert_eq!(bounds.end(), places[3]);
    assert!(bounds.keeps(LogPosition::default()) && bounds.keeps(places[3]));
    let past = LogPosition {
        tx: places[3].tx,
        seq: places[3].seq + 1,
    };
    assert!(!bounds.keeps(past), "a place past the end is another log's");
}

async fn a_sweep_keeps_its_horizon(stores: Stores) {
    let records = &stores.records;
    for (key, at) in [("a", 10), ("b", 20), ("c", 30), ("d", 40)] {
        append(&stores, key, at).await;
    }
    let places: Vec<LogPosition> = settled(&stores, LogPosition::default(), 10)
        .await
        .events
        .iter()
        .map(|e| e.position())
        .collect();
    assert_eq!(records.sweep_events(&stores.app, 5).await.unwrap(), 0);
    assert_eq!(records.event_bounds(&stores.app).await.unwrap().swept, None);
    // Everything recorded before 30 goes, and the log remembers where it was swept to.
    assert_eq!(records.sweep_events(&stores.app, 30).await.unwrap(), 2);
    let bounds = records.event_bounds(&stores.app).await.unwrap();
    assert_eq!(
        (bounds.swept, bounds.last),
        (Some(places[1]), Some(places[3]))
    );
    assert_eq!(
        keys_after(&stores, LogPosition::default(), 10).await,
        ["c", "d"]
    );
    // A reader that left off before the horizon may have missed something; at it, nothing.
    assert!(!bounds.keeps(LogPosition::default()));
    assert!(!bounds.keeps(places[0]));
    assert!(bounds.keeps(places[1]) && bounds.keeps(places[2]) && bounds.keeps(places[3]));
    // Sweeping what is gone again changes nothing; sweeping everything keeps the horizon.
    assert_eq!(records.sweep_events(&stores.app, 30).await.unwrap(), 0);
    assert_eq!(records.sweep_events(&stores.app, 100).await.unwrap(), 2);
    let bounds = records.event_bounds(&stores.app).await.unwrap();
    assert_eq!((bounds.swept, bounds.last), (Some(places[3]), None));
    assert_eq!(bounds.end(), places[3]);
    assert!(bounds.keeps(places[3]) && !bounds.keeps(places[2]));
    append(&stores, "e", 200).await;
    assert_eq!(keys_after(&stores, places[3], 10).await, ["e"]);
}

/// Sequence numbers on PostgreSQL are handed out when a row is inserted, not when it commits:
/// a transaction that began first may insert later and commit last. Its event must still be
/// read first, and nothing after it before it commits.
async fn an_event_waits_for_an_older_transaction() {
    let url = TestServer::shared().database();
    let store = open_postgres(&url, 4).await;
    let app = add_app(&*store, &*store, "order").await;
    let stores = Stores {
        records: store,
        app,
        _dir: None,
    };
    let (older, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    older.batch_execute("BEGIN").await.unwrap();
    // The older transaction takes its id first...
    older
        .batch_execute("SELECT pg_current_xact_id()")
        .await
        .unwrap();
    // ...a younger one records and commits...
    append(&stores, "younger", 1).await;
    let page = stores
        .records
        .events_after(&stores.app, LogPosition::default(), 10)
        .await
        .unwrap();
    assert!(
        page.events.is_empty(),
        "read before an older transaction ended"
    );
    assert!(page.pending);
    let bounds = stores.records.event_bounds(&stores.app).await.unwrap();
    assert_eq!(bounds.last, None, "the end is what is in order");
    // ...then the older one records (a higher sequence number) and commits.
    older
        .batch_execute(
            "INSERT INTO \"app_order\"._events (kind, key, payload, depth, at)
             VALUES ('records.create', 'older', '{}', 0, 2);
             COMMIT",
        )
        .await
        .unwrap();
    let page = settled(&stores, LogPosition::default(), 10).await;
    let read: Vec<(&str, i64)> = page
        .events
        .iter()
        .map(|e| (e.key.as_str(), e.seq))
        .collect();
    assert_eq!(
        read.iter().map(|r| r.0).collect::<Vec<_>>(),
        ["older", "younger"]
    );
    assert!(
        read[0].1 > read[1].1,
        "the older transaction's sequence is the higher"
    );

    // A transaction that rolls back leaves nothing to wait for.
    older.batch_execute("BEGIN").await.unwrap();
    older
        .batch_execute(
            "INSERT INTO \"app_order\"._events (kind, key, payload, depth, at)
             VALUES ('records.create', 'undone', '{}', 0, 3)",
        )
        .await
        .unwrap();
    append(&stores, "last", 4).await;
    let after = page.events[1].position();
    assert!(
        stores
            .records
            .events_after(&stores.app, after, 10)
            .await
            .unwrap()
            .pending
    );
    older.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(keys_after(&stores, after, 10).await, ["last"]);
}
