//! The PostgreSQL backend on a real server started by the test (see `postgres::testing`):
//! behaviour only PostgreSQL has (schemas, migrations by several nodes, unavailability). What
//! both backends share is proven by the API suite, which runs on each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::{AppName, Durability, StoreError, TenantStore};

fn options(url: String) -> PostgresOptions {
    PostgresOptions {
        url,
        pool_size: 4,
        wait: Duration::from_secs(2),
        durability: Durability::Full,
        max_open: 1000,
    }
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

#[tokio::test]
async fn an_app_is_a_schema_provisioned_once_and_dropped_whole() {
    let server = TestServer::shared();
    let url = server.database();
    let store = Postgres::open(options(url.clone())).await.unwrap();
    let shop = app("shop-1");
    assert!(matches!(
        store.health(&shop).await,
        Err(StoreError::NoSuchTenant)
    ));
    store.provision(&shop).await.unwrap();
    store.provision(&shop).await.unwrap();
    let health = store.health(&shop).await.unwrap();
    assert!(health.schema_version >= 1);
    let db = url.rsplit('/').next().unwrap();
    let schemas = server.sql(
        db,
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'app_%'",
    );
    assert_eq!(schemas.trim(), "app_shop-1");
    store.destroy(&shop).await.unwrap();
    assert!(matches!(
        store.health(&shop).await,
        Err(StoreError::NoSuchTenant)
    ));
    let schemas = server.sql(
        db,
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'app_%'",
    );
    assert_eq!(schemas.trim(), "0");
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://cloudlet@127.0.0.1:{port}/nothing?connect_timeout=2");
    let err = Postgres::open(options(url)).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}/nothing")),
        "{message}"
    );
}

#[tokio::test]
async fn a_new_app_starts_empty_and_a_late_deletion_spares_a_recreated_app() {
    use cloudlet_store::{
        AppRow, CollectionRow, RecordStore, SigningKeyRow, SystemStore, TableDef,
    };
    let store = Postgres::open(options(TestServer::shared().database()))
        .await
        .unwrap();
    let shop = app("shop");
    let row = |hash: u8| AppRow {
        name: "shop".into(),
        created_at_ms: 1,
        secret_key_hash: vec![hash; 32],
        secret_key_hint: "cls_".into(),
        secret_key_created_at_ms: 1,
    };
    let key = SigningKeyRow {
        kid: "k".into(),
        secret: vec![1; 60],
        created_at_ms: 1,
    };
    store.insert_app(row(1), key.clone()).await.unwrap();
    store.provision(&shop).await.unwrap();
    let todos = CollectionRow {
        name: "todos".into(),
        definition: "{}".into(),
        version: 1,
    };
    let table = TableDef {
        columns: Vec::new(),
        indexes: Vec::new(),
    };
    store.create_collection(&shop, todos, table).await.unwrap();
    // Deleted, but the schema's removal is cut short (the database went away, say): the row
    // is gone, the schema stays.
    assert!(store.delete_app(&shop).await.unwrap());
    // A new app of the same name starts empty.
    store.insert_app(row(2), key).await.unwrap();
    store.provision(&shop).await.unwrap();
    assert_eq!(store.collections(&shop).await.unwrap(), []);
    store
        .create_collection(
            &shop,
            CollectionRow {
                name: "notes".into(),
                definition: "{}".into(),
                version: 1,
            },
            TableDef {
                columns: Vec::new(),
                indexes: Vec::new(),
            },
        )
        .await
        .unwrap();
    // The first deletion, finishing late, leaves the new app alone.
    store.destroy(&shop).await.unwrap();
    let names: Vec<String> = store
        .collections(&shop)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["notes"]);
}

/// Nodes sharing one database count one budget: takes racing on four stores (four nodes) let
/// exactly a bucket's worth through, a refusal says how long to wait, a try given back is one
/// more, and full buckets are swept. Keys are stored as their SHA-256, not as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_shared_by_nodes_count_one_budget() {
    use cloudlet_store::{Rate, RateStore};
    let url = TestServer::shared().database();
    let mut nodes = Vec::new();
    for _ in 0..4 {
        nodes.push(std::sync::Arc::new(
            Postgres::open(options(url.clone())).await.unwrap(),
        ));
    }
    let rate = Rate { per_minute: 10 };
    let now = 1_000_000_000_000i64;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..40 {
        let node = nodes[n % 4].clone();
        tasks.spawn(async move { node.take("ip/203.0.113.7", rate, now).await.unwrap() });
    }
    let mut taken = 0;
    let mut waits = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        match outcome.unwrap() {
            None => taken += 1,
            Some(wait) => waits.push(wait),
        }
    }
    assert_eq!(taken, 10, "a bucket's worth, whichever node was asked");
    // Empty: the next request is one interval (6 s) away.
    assert!(waits.iter().all(|w| *w > 0 && *w <= 6_000_000), "{waits:?}");
    // Six seconds later, one more; given back, one more again.
    let later = now + 6_000_000;
    assert_eq!(
        nodes[1].take("ip/203.0.113.7", rate, later).await.unwrap(),
        None
    );
    assert!(
        nodes[2]
            .take("ip/203.0.113.7", rate, later)
            .await
            .unwrap()
            .is_some()
    );
    nodes[3].give_back("ip/203.0.113.7", rate).await.unwrap();
    assert_eq!(
        nodes[0].take("ip/203.0.113.7", rate, later).await.unwrap(),
        None
    );
    // Another key has its own bucket.
    assert_eq!(
        nodes[0].take("ip/203.0.113.8", rate, later).await.unwrap(),
        None
    );

    let server = TestServer::shared();
    let listed = server.sql(
        TestServer::database_name(&url),
        "SELECT key FROM cloudlet.rate_buckets ORDER BY key",
    );
    let stored: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|k| k.len() == 64 && !k.contains("203.0.113")),
        "{stored:?}"
    );
    // A minute on, both are full again and swept.
    assert_eq!(nodes[0].sweep_buckets(later + 61_000_000).await.unwrap(), 2);
}

/// Messages relayed between nodes are read by every node in commit order: a node starting
/// reads from the end, a message of an older transaction that commits last is read first and
/// nothing after it before it commits, and messages older than the sweep go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_messages_are_read_in_commit_order_from_where_a_node_starts() {
    use cloudlet_store::{LogPosition, Relay};
    let url = TestServer::shared().database();
    let (a, b) = (
        Postgres::open(options(url.clone())).await.unwrap(),
        Postgres::open(options(url.clone())).await.unwrap(),
    );
    let shop = app("shop");
    assert_eq!(b.relay_end().await.unwrap(), LogPosition::default());
    let first = a.relay(&shop, "room:1", "{\"n\":1}").await.unwrap();
    // Node B starts here: after the first message (once no other test's transaction, older
    // than it, holds it back).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut start = b.relay_end().await.unwrap();
    while start != first && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        start = b.relay_end().await.unwrap();
    }
    assert_eq!(start, first);
    let second = a.relay(&shop, "room:1", "{\"n\":2}").await.unwrap();
    let page = settled_relay(&b, start, 10).await;
    assert!(!page.pending && !page.full);
    assert_eq!(page.messages.len(), 1);
    let read = &page.messages[0];
    assert_eq!(
        (
            read.at,
            read.app.as_str(),
            read.channel.as_str(),
            read.body.as_str()
        ),
        (second, "shop", "room:1", "{\"n\":2}")
    );

    // An older transaction takes its id, a younger one relays and commits, then the older one
    // relays and commits: the older one's is read first, and nothing before it commits.
    let (older, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    older
        .batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    a.relay(&shop, "room:1", "\"younger\"").await.unwrap();
    let page = b.relayed_after(second, 10).await.unwrap();
    assert!(page.messages.is_empty() && page.pending, "{page:?}");
    older
        .batch_execute(
            "INSERT INTO cloudlet.relay (app, channel, body)
             VALUES ('shop', 'room:1', '\"older\"');
             COMMIT",
        )
        .await
        .unwrap();
    let page = settled_relay(&b, second, 10).await;
    let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["\"older\"", "\"younger\""]);
    assert!(!page.pending);
    // A full page says so.
    assert!(settled_relay(&b, start, 2).await.full);

    // Messages older than what is kept go, by the database's clock; not one an older
    // transaction still holds back, however old.
    assert_eq!(a.sweep_relay(60_000).await.unwrap(), 0, "all are new");
    older
        .batch_execute("BEGIN; SELECT pg_current_xact_id()")
        .await
        .unwrap();
    a.relay(&shop, "room:1", "\"held\"").await.unwrap();
    let server = TestServer::shared();
    let db = TestServer::database_name(&url);
    server.sql(db, "UPDATE cloudlet.relay SET at = 0");
    swept(&a, 4).await;
    older.batch_execute("COMMIT").await.unwrap();
    swept(&a, 1).await;
    let left = settled_relay(&b, LogPosition::default(), 10).await;
    assert!(left.messages.is_empty());

    // A row that is no message any more (its app's name unreadable) is read past.
    let last = a.relay(&shop, "room:1", "\"after\"").await.unwrap();
    server.sql(db, "UPDATE cloudlet.relay SET app = 'Not An App'");
    let page = settled_relay(&b, LogPosition::default(), 10).await;
    assert!(page.messages.is_empty());
    assert_eq!(page.reached, last);
}

/// Presence shared by nodes: a member's change is written with the message telling the
/// others; a page reads every node's members; a node whose lease ran out has its members taken
/// out, a leave relayed for each, by one node only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_shared_by_nodes_goes_with_a_node_or_its_lease() {
    use cloudlet_store::{Present, Relay};
    let url = TestServer::shared().database();
    let (a, b) = (
        Postgres::open(options(url.clone())).await.unwrap(),
        Postgres::open(options(url.clone())).await.unwrap(),
    );
    let shop = app("shop");
    let start = b.relay_end().await.unwrap();
    let member = |node: &str, n: u8| Present {
        app: shop.clone(),
        channel: "room:1".into(),
        member: format!("{node}-{n}"),
        user: Some(format!("usr_{n}")),
        state: format!("{{\"n\":{n}}}"),
    };
    let nobody = |_: &Present, _: bool| String::new();
    a.sync_node("node-a", 60_000, &[], &nobody).await.unwrap();
    // Node B's lease is already over.
    b.sync_node("node-b", -1, &[], &nobody).await.unwrap();
    for n in 0..3 {
        a.present("node-a", &member("a", n), "join").await.unwrap();
    }
    b.present("node-b", &member("b", 0), "join").await.unwrap();
    // A new state replaces the old.
    let mut again = member("a", 0);
    again.state = "{\"n\":9}".into();
    a.present("node-a", &again, "join").await.unwrap();
    a.absent(&shop, "room:1", "a-1", "leave").await.unwrap();
    // Absent twice: no second message.
    a.absent(&shop, "room:1", "a-1", "leave").await.unwrap();

    let page = b.presence_page(&shop, "room:1", None, 2).await.unwrap();
    assert_eq!(page.count, 3);
    let members: Vec<(&str, &str)> = page
        .members
        .iter()
        .map(|p| (p.member.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(members, [("a-0", "{\"n\":9}"), ("a-2", "{\"n\":2}")]);
    let rest = b
        .presence_page(&shop, "room:1", Some("a-2"), 2)
        .await
        .unwrap();
    assert_eq!(rest.members.len(), 1);
    assert_eq!(rest.members[0].user.as_deref(), Some("usr_0"));

    // Both nodes look for leases run out: node B's member is taken out once, and a node never
    // takes itself out.
    let leave = |p: &Present| format!("leave {}", p.member);
    let taken = a.drop_gone("node-a", &leave).await.unwrap()
        + b.drop_gone("node-b", &leave).await.unwrap()
        + a.drop_gone("node-a", &leave).await.unwrap();
    assert_eq!(taken, 1);
    assert_eq!(
        b.presence_page(&shop, "room:1", None, 10)
            .await
            .unwrap()
            .count,
        2
    );
    // Node B, alive after all, writes what it holds back (its member, and a new one).
    let body =
        |p: &Present, join: bool| format!("{} {}", if join { "sync" } else { "gone" }, p.member);
    let held = [member("b", 0), member("b", 1)];
    assert_eq!(
        b.sync_node("node-b", 60_000, &held, &body).await.unwrap(),
        2
    );
    assert_eq!(
        b.sync_node("node-b", 60_000, &held, &body).await.unwrap(),
        0,
        "in step"
    );
    assert_eq!(
        b.sync_node("node-b", 60_000, &held[..1], &body)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        b.presence_page(&shop, "room:1", None, 10)
            .await
            .unwrap()
            .count,
        3
    );
    // Node A stops: its members go.
    assert_eq!(a.drop_node("node-a", &leave).await.unwrap(), 2);
    let left = b.presence_page(&shop, "room:1", None, 10).await.unwrap();
    assert_eq!(left.count, 1);
    // The app is deleted: its presence goes on every node.
    b.forget_presence(&shop).await.unwrap();
    assert_eq!(
        b.presence_page(&shop, "room:1", None, 10)
            .await
            .unwrap()
            .count,
        0
    );

    let relayed = settled_relay(&b, start, 100).await;
    let mut bodies: Vec<&str> = relayed.messages.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    let expected = [
        "gone b-1",
        "join",
        "join",
        "join",
        "join",
        "join",
        "leave",
        "leave a-0",
        "leave a-2",
        "leave b-0",
        "sync b-0",
        "sync b-1",
    ];
    assert_eq!(bodies, expected);
}

/// The relay after `after` once no transaction of another test (the server's oldest running
/// one is what holds messages back) keeps any pending; within 10 seconds.
async fn settled_relay(
    store: &Postgres,
    after: cloudlet_store::LogPosition,
    limit: usize,
) -> cloudlet_store::RelayPage {
    use cloudlet_store::Relay;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = store.relayed_after(after, limit).await.unwrap();
        if !page.pending || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sweeps the relay until `expected` messages went, in all (another test's open transaction
/// holds some back a moment); within 10 seconds.
async fn swept(store: &Postgres, expected: u64) {
    use cloudlet_store::Relay;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut total = 0;
    loop {
        total += store.sweep_relay(60_000).await.unwrap();
        if total >= expected || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total, expected);
}

/// A node that stops sends what it rang last before its connections close: rung, flushed and
/// closed at once, the other node hears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_rings_what_it_changed_last() {
    use cloudlet_store::{Bell, Ring, Topic, Topics};

    let url = TestServer::shared().database();
    let hearing = Postgres::open(options(url.clone())).await.unwrap();
    let ear = hearing.bell("hearing".into());
    let mut rings = ear.rings();
    // Listening once the bell says rings may have been missed (it listens from then on).
    let first = tokio::time::timeout(Duration::from_secs(10), rings.recv()).await;
    assert_eq!(first.unwrap().unwrap(), Ring::Everything);

    let stopping = Postgres::open(options(url)).await.unwrap();
    let bell = stopping.bell("stopping".into());
    bell.ring(&app("shop"), Topic::Keys);
    bell.flush().await;
    stopping.close_all().await;
    drop(bell);

    let heard = tokio::time::timeout(Duration::from_secs(5), rings.recv()).await;
    let expected = Ring::App(app("shop"), Topics::default().with(Topic::Keys));
    assert_eq!(heard.expect("the ring within 5 s").unwrap(), expected);
}
