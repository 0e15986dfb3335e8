//! Faults of the PostgreSQL backend, on PostgreSQL servers the tests start themselves (always,
//! whatever `CLOUDLET_TEST_DATABASE` says): the database out of reach at start, restarted under
//! load, a pool exhausted by slow queries, nodes that disagree on the master key, and a shared
//! node that loses the connection it hears the other nodes on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudlet_server::StartError;
use cloudlet_server::config::DatabaseUrl;
use cloudlet_store::StoreError;
use cloudlet_store::postgres::testing::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Expect, TestApp, TestAppBuilder, expect_error};

/// A builder for a node on the PostgreSQL database `url`.
fn on(url: &str) -> TestAppBuilder {
    let url = DatabaseUrl::parse(url).unwrap();
    TestApp::builder().config(move |c| c.database.url = url)
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates app `app` with a collection `todos` of titles; returns the app's secret key.
async fn app_with_todos(t: &TestApp, app: &str) -> String {
    let key = t.create_app(app).await;
    t.admin(
        Method::PUT,
        &format!("/v1/admin/apps/{app}/collections/todos"),
    )
    .json(&json!({ "fields": [{ "name": "title", "type": "text", "required": true }] }))
    .expect(StatusCode::CREATED)
    .await;
    key
}

/// Runs blocking work (psql, stopping PostgreSQL) without stalling the server, which runs on
/// the test's runtime.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// Polls `done` every 20 ms until it holds; panics with `what` after `limit`.
pub(crate) async fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error_and_nothing_listens() {
    let db_port = closed_port();
    let listen_port = closed_port();
    let started = Instant::now();
    let builder = on(&format!("postgres://cloudlet@127.0.0.1:{db_port}/fleet"))
        .config(|c| c.listen = ([127, 0, 0, 1], listen_port).into());
    let data_dir = tempfile::tempdir().unwrap();
    let err = builder
        .data_dir(data_dir.path())
        .try_start()
        .await
        .err()
        .expect("a server whose database is unreachable must not start");
    let took = started.elapsed();
    let message = err.to_string();
    assert!(
        matches!(err, StartError::Store(StoreError::Unavailable(_))),
        "{err:?}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{db_port}/fleet")),
        "the error names the server and database: {message}"
    );
    assert!(took < Duration::from_secs(10), "it took {took:?} to fail");
    // Nothing listens on the configured address, and the address is free.
    let connected = tokio::net::TcpStream::connect(("127.0.0.1", listen_port)).await;
    assert!(connected.is_err(), "something listens on {listen_port}");
    std::net::TcpListener::bind(("127.0.0.1", listen_port))
        .unwrap_or_else(|e| panic!("port {listen_port} is still taken: {e}"));
    // And the data directory is not left locked.
    let t = TestApp::builder().data_dir(data_dir.path()).start().await;
    t.stop().await;
}

/// What one request of a writer got.
#[derive(Debug, Clone)]
struct Outcome {
    sent: Instant,
    done: Instant,
    title: String,
    /// The status, the error code, `retry-after` and the created record's id; or why no
    /// answer came (a timeout, a dropped connection).
    answer: Result<Answer, String>,
}

#[derive(Debug, Clone)]
struct Answer {
    status: StatusCode,
    code: Option<String>,
    retry_after: Option<String>,
    id: Option<String>,
}

async fn create_todo(http: &reqwest::Client, url: &str, key: &str, title: &str) -> Outcome {
    let sent = Instant::now();
    let answer = async {
        let response = http
            .post(url)
            .bearer_auth(key)
            .json(&json!({ "title": title }))
            .send()
            .await
            .map_err(|e| format!("no answer: {e:?}"))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("{status} with a body that is not JSON: {e:?}"))?;
        Ok(Answer {
            status,
            code: body["error"]["code"].as_str().map(str::to_owned),
            retry_after,
            id: body["id"].as_str().map(str::to_owned),
        })
    }
    .await;
    Outcome {
        sent,
        done: Instant::now(),
        title: title.to_owned(),
        answer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restarted_under_load_answers_503_then_recovers_and_loses_nothing() {
    const WRITERS: usize = 4;
    let pg = Arc::new(blocking(TestServer::start));
    let url = pg.database();
    let t = on(&url).start().await;
    let key = app_with_todos(&t, "load").await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let records = format!("{}/v1/apps/load/collections/todos/records", t.base);
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (http, records, key) = (http.clone(), records.clone(), key.clone());
            let (outcomes, stop) = (outcomes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let outcome =
                        create_todo(&http, &records, &key, &format!("w{writer}-{n}")).await;
                    outcomes.lock().unwrap().push(outcome);
                    n += 1;
                    // Pacing, so that fast failures do not flood the log.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let count = |pick: &dyn Fn(&Outcome) -> bool| {
        outcomes.lock().unwrap().iter().filter(|o| pick(o)).count()
    };
    let created = |o: &Outcome| matches!(&o.answer, Ok(a) if a.status == StatusCode::CREATED);

    // Healthy: writes go through.
    wait_until(Duration::from_secs(15), "30 records created", || {
        count(&created) >= 30
    })
    .await;

    // PostgreSQL stops (a fast shutdown: sessions are cut, new ones refused).
    let stopping = Instant::now();
    blocking(|| pg.stop());
    let stopped = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "20 answers to requests sent while PostgreSQL was down",
        || count(&|o: &Outcome| o.sent >= stopped) >= 20,
    )
    .await;

    // PostgreSQL comes back on the same port; Cloudlet is not restarted.
    let resuming = Instant::now();
    blocking(|| pg.resume());
    let resumed = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "10 records created after PostgreSQL came back",
        || count(&|o: &Outcome| o.sent >= resumed && created(o)) >= 10,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    // The node's claim to serve the database alone went with its connection; it is made
    // again, so that a node of the other kind is still refused.
    let db = TestServer::database_name(&url).to_owned();
    let claims = || {
        blocking(|| {
            pg.sql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                     WHERE l.locktype = 'advisory' AND l.mode = 'ExclusiveLock'
                       AND l.granted AND d.datname = '{db}'"
                ),
            )
        })
        .trim()
        .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while claims() != "1" {
        assert!(
            Instant::now() < deadline,
            "the node's claim was not made again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every request was answered in time, with 201 or with 503 database_unavailable and
    // retry-after: never a hang, a dropped connection or another status such as 500.
    let mut unavailable = Vec::new();
    for o in &outcomes {
        let a = o.answer.as_ref().unwrap_or_else(|e| {
            panic!("{} got no answer after {:?}: {e}", o.title, o.done - o.sent)
        });
        match a.status {
            StatusCode::CREATED => assert!(a.id.is_some(), "{a:?}"),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(a.code.as_deref(), Some("database_unavailable"), "{a:?}");
                let secs: u64 = a
                    .retry_after
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("a 503 without a retry-after in seconds: {a:?}"));
                assert!(secs >= 1, "{a:?}");
                unavailable.push(o.done - o.sent);
            }
            other => panic!("{} answered {other}: {a:?}", o.title),
        }
    }
    let phase = |from: Instant, to: Instant| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.sent >= from && o.done <= to)
            .collect()
    };
    let before = phase(outcomes[0].sent, stopping);
    assert!(
        before.iter().all(|o| created(o)),
        "a write failed while PostgreSQL was up"
    );
    let down = phase(stopped, resuming);
    assert!(down.len() >= 20, "{} answers while down", down.len());
    assert!(
        down.iter().all(|o| !created(o)),
        "a write succeeded while PostgreSQL was down"
    );
    let slowest = unavailable.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(2),
        "a 503 took {slowest:?}: not failing fast"
    );
    let recovered = outcomes
        .iter()
        .filter(|o| o.sent >= resumed && created(o))
        .map(|o| o.done - resumed)
        .min()
        .unwrap();
    eprintln!(
        "restart under load: {} requests, {} created, {} answered 503 (slowest {slowest:?}); \
         {} sent or in flight while it stopped; stop took {:?}, resume {:?}; first success {recovered:?} \
         after resume",
        outcomes.len(),
        outcomes.iter().filter(|o| created(o)).count(),
        unavailable.len(),
        outcomes
            .iter()
            .filter(|o| o.sent < stopped && o.done > stopping)
            .count(),
        stopped - stopping,
        resumed - resuming,
    );

    // Nothing acknowledged was lost: every created record reads back, as written.
    let acknowledged: Vec<(&str, &str)> = outcomes
        .iter()
        .filter_map(|o| match &o.answer {
            Ok(a) if a.status == StatusCode::CREATED => Some((o.title.as_str(), a.id.as_deref()?)),
            _ => None,
        })
        .collect();
    for (title, id) in &acknowledged {
        let record = t
            .request(
                Method::GET,
                &format!("/v1/apps/load/collections/todos/records/{id}"),
            )
            .bearer_auth(&key)
            .expect(StatusCode::OK)
            .await;
        assert_eq!(record["title"], *title, "{record}");
    }
    let stored: usize = blocking(|| {
        pg.sql(
            TestServer::database_name(&url),
            "SELECT count(*) FROM \"app_load\".\"r_todos\"",
        )
    })
    .trim()
    .parse()
    .unwrap();
    assert!(
        stored >= acknowledged.len(),
        "{stored} stored, {} acknowledged",
        acknowledged.len()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_held_by_a_slow_query_answers_503_after_the_wait_and_the_query_completes() {
    // A server of its own: the lock below takes a transaction id, and an open transaction
    // holds back the oldest one every database of the server reads its event log below, so
    // on the shared server it would stall other tests' realtime changes.
    let pg = blocking(TestServer::start);
    let pg = &pg;
    let url = pg.database();
    let db = TestServer::database_name(&url).to_owned();
    let t = on(&url)
        .config(|c| {
            c.database.pool_size = 1;
            c.database.pool_wait_secs = 0.3;
        })
        .start()
        .await;
    let key = app_with_todos(&t, "slow").await;
    let record = t
        .request(Method::POST, "/v1/apps/slow/collections/todos/records")
        .bearer_auth(&key)
        .json(&json!({ "title": "held" }))
        .expect(StatusCode::CREATED)
        .await;
    let id = record["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/apps/slow/collections/todos/records/{id}");

    // Another session locks the collection's table, so that a read of it waits inside
    // PostgreSQL, holding the only connection of Cloudlet's pool.
    let lock = blocking(|| {
        pg.session(
            &db,
            "BEGIN; LOCK TABLE \"app_slow\".\"r_todos\" IN ACCESS EXCLUSIVE MODE;",
        )
    });
    let held = |sql: &str| blocking(|| pg.sql(&db, sql)).trim() == "1";
    wait_until(Duration::from_secs(10), "the table lock", || {
        held(
            "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'AccessExclusiveLock' \
             AND relation = '\"app_slow\".\"r_todos\"'::regclass \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    })
    .await;
    let slow = tokio::spawn(
        t.request(Method::GET, &path)
            .bearer_auth(&key)
            .timeout(Duration::from_secs(15))
            .send(),
    );
    wait_until(
        Duration::from_secs(10),
        "Cloudlet's read to wait for the lock",
        || {
            held(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'cloudlet' AND wait_event_type = 'Lock'",
            )
        },
    )
    .await;

    // The pool is empty: another request waits pool_wait_secs for a connection, then 503.
    for _ in 0..2 {
        let started = Instant::now();
        let response = t
            .request(Method::GET, "/v1/apps/slow/collections/todos/records")
            .bearer_auth(&key)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("an answer well before 5 s");
        let took = started.elapsed();
        let retry_after = response.headers().get("retry-after").cloned();
        expect_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
        )
        .await;
        assert_eq!(retry_after.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_secs(2),
            "the 503 came after {took:?}, not after the 0.3 s wait"
        );
        eprintln!("pool exhausted: 503 after {took:?}");
    }
    assert!(!slow.is_finished(), "the held read must still be waiting");

    // The lock goes: the held read completes, and the pool serves again.
    let released = Instant::now();
    blocking(|| lock.release()).expect("the locking session ran");
    let response = slow.await.unwrap().expect("the held read is answered");
    eprintln!(
        "pool exhausted: held read answered {:?} after the release",
        released.elapsed()
    );
    let body = crate::support::expect_json(response, StatusCode::OK).await;
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["title"], "held");
    let page = t
        .request(Method::GET, "/v1/apps/slow/collections/todos/records")
        .bearer_auth(&key)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
    t.stop().await;
}

/// Everything stored in the database of `url`, as lines of `pg_dump` (without its
/// `\restrict` lines, whose key is new each time).
fn contents(pg: &TestServer, url: &str) -> Vec<String> {
    pg.dump(url)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(str::to_owned)
        .collect()
}

/// App creations in a burst take turns at their schemas' DDL (one at a time with a pool of
/// 4): the node's requests keep their connections meanwhile, and no creation waits past the
/// pool's wait for one and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_app_creations_takes_turns_and_leaves_the_pool_to_requests() {
    const BURST: usize = 24;
    let pg = TestServer::shared();
    let url = pg.database();
    let db = TestServer::database_name(&url).to_owned();
    let t = on(&url)
        .config(|c| {
            c.database.pool_size = 4;
            c.database.pool_wait_secs = 1.0;
        })
        .start()
        .await;
    let key = app_with_todos(&t, "busy").await;
    let creates: Vec<_> = (0..BURST)
        .map(|i| {
            tokio::spawn(
                t.admin(Method::POST, "/v1/admin/apps")
                    .json(&json!({ "name": format!("burst-{i}") }))
                    .send(),
            )
        })
        .collect();
    // A schema is created under a transaction-level advisory lock on its name: those granted
    // at once are the creations in their DDL at once.
    let in_ddl = format!(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND objid IN (SELECT (hashtext(format('\"app_burst-%s\"', i))::bigint & 4294967295)::oid \
                       FROM generate_series(0, {}) AS i)",
        BURST - 1
    );
    let (mut reads, mut most_at_once) = (0, 0);
    while !creates.iter().all(|c| c.is_finished()) {
        t.request(Method::GET, "/v1/apps/busy/collections/todos/records")
            .bearer_auth(&key)
            .expect(StatusCode::OK)
            .await;
        reads += 1;
        let at_once: usize = blocking(|| pg.sql(&db, &in_ddl)).trim().parse().unwrap();
        most_at_once = most_at_once.max(at_once);
    }
    let mut statuses = Vec::new();
    for create in creates {
        statuses.push(create.await.unwrap().unwrap().status());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED),
        "{statuses:?}"
    );
    assert!(reads > 0, "no request was made during the burst");
    assert_eq!(most_at_once, 1, "schemas created at once, at most");
    let page = t
        .admin(Method::GET, "/v1/admin/apps?limit=100")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), BURST + 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_per_database_and_a_node_with_another_master_key_is_refused() {
    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    let pg = TestServer::shared();
    let url = pg.database();
    let a = on(&url).master_key(K1).start().await;
    a.create_app("fleet").await;
    let grant = a
        .request(Method::POST, "/v1/apps/fleet/auth/users")
        .json(&json!({ "email": "kim@example.com", "password": "correct horse battery" }))
        .expect(StatusCode::CREATED)
        .await;
    let access = grant["access_token"].as_str().unwrap().to_owned();

    // A second node while A serves: refused, naming why, whatever its key.
    let second = tempfile::tempdir().unwrap();
    let err = on(&url)
        .data_dir(second.path())
        .master_key(K1)
        .try_start()
        .await
        .err()
        .expect("a second node on one database must not start");
    assert!(err.to_string().contains("another Cloudlet node"), "{err}");
    // Nor a node that would share it: it would ring nobody who listens.
    let shared = tempfile::tempdir().unwrap();
    let files = format!("file://{}", shared.path().join("files").display());
    let err = on(&url)
        .data_dir(shared.path())
        .master_key(K1)
        .config(move |c| {
            c.database.shared = true;
            c.files.url = files;
        })
        .try_start()
        .await
        .err()
        .expect("a shared node beside one that serves alone must not start");
    assert!(
        err.to_string().contains("serves this database alone"),
        "{err}"
    );
    a.request(Method::GET, "/v1/apps/fleet/auth/user")
        .bearer_auth(&access)
        .expect(StatusCode::OK)
        .await;
    a.stop().await;

    // Node B, another data directory and another key (and another admin token, which it
    // would store if it went on): refused, naming the master key, having written nothing.
    let before = blocking(|| contents(pg, &url));
    let b_dir = tempfile::tempdir().unwrap();
    let err = on(&url)
        .data_dir(b_dir.path())
        .master_key(K2)
        .admin_token("node-b-admin-token-0123456789")
        .try_start()
        .await
        .err()
        .expect("a node with another master key must not start");
    assert!(matches!(err, StartError::MasterKey(_)), "{err:?}");
    assert!(err.to_string().contains("master key"), "{err}");
    let after = blocking(|| contents(pg, &url));
    if before != after {
        let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
        let new: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
        panic!("node B changed the database: without {gone:?}, with {new:?}");
    }
    assert!(
        !b_dir.path().join("master.key").exists(),
        "node B stored a key"
    );

    // Node C, another data directory with A's key: starts, and takes A's tokens.
    let c = on(&url).master_key(K1).start().await;
    let me = c
        .request(Method::GET, "/v1/apps/fleet/auth/user")
        .bearer_auth(&access)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(me["email"], "kim@example.com", "{me}");
    assert_eq!(me["id"], grant["user"]["id"], "{me}");
    c.request(Method::GET, "/v1/admin/apps/fleet")
        .bearer_auth(ADMIN_TOKEN)
        .expect(StatusCode::OK)
        .await;
    c.stop().await;
}

/// A node on `url` that shares it with others: the same master key, files in `files`.
fn shared_node(url: &str, master_key: &str, files: &std::path::Path) -> TestAppBuilder {
    let files_url = format!("file://{}", files.display());
    on(url).master_key(master_key).config(move |c| {
        c.database.shared = true;
        c.files.url = files_url;
    })
}

/// A bucket's rules changed on one node hold on another at once: the nodes forget the buckets
/// they compiled when told through the doorbell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_private_on_one_node_is_private_on_another() {
    const KEY: &str = "4444444444444444444444444444444444444444444444444444444444444444";
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
    let pg = TestServer::shared();
    let url = pg.database();
    let files = tempfile::tempdir().unwrap();
    let a = shared_node(&url, KEY, files.path()).start().await;
    let bob = a.alice_and_bob("snaps").await;
    let bucket = |view: &str| {
        a.admin(Method::PUT, "/v1/admin/apps/snaps/buckets/photos")
            .json(&json!({ "types": ["image/png"], "rules": { "view": view } }))
            .expect(StatusCode::OK)
    };
    bucket("").await;
    let b = shared_node(&url, KEY, files.path()).start().await;
    let file = b
        .request(Method::POST, "/v1/apps/snaps/files/photos?name=a.png")
        .bearer_auth(&bob)
        .header("content-type", "image/png")
        .body(PNG.to_vec())
        .expect(StatusCode::CREATED)
        .await;
    let path = format!(
        "/v1/apps/snaps/files/photos/{}",
        file["id"].as_str().unwrap()
    );
    let anyone = || async { b.request(Method::GET, &path).send().await.unwrap().status() };
    assert_eq!(
        anyone().await,
        StatusCode::OK,
        "public, and B has compiled it"
    );

    bucket("owner = @auth.id").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while anyone().await == StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "B still serves the bucket as public"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(anyone().await, StatusCode::OK);
    b.stop().await;
    a.stop().await;
}

/// A field added to a collection on one node: another node that has served the collection
/// (its connections hold prepared `SELECT *` statements of the old columns) serves it with the
/// new field at once, rather than failing with "cached plan must not change result type".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_changed_on_one_node_is_served_on_another_without_stale_statements() {
    const KEY: &str = "5555555555555555555555555555555555555555555555555555555555555555";
    let pg = TestServer::shared();
    let url = pg.database();
    let files = tempfile::tempdir().unwrap();
    let a = shared_node(&url, KEY, files.path()).start().await;
    let key = app_with_todos(&a, "cols").await;
    let b = shared_node(&url, KEY, files.path()).start().await;
    let records = "/v1/apps/cols/collections/todos/records";
    // B prepares its statements of the collection on several of its connections.
    for i in 0..8 {
        b.request(Method::POST, records)
            .bearer_auth(&key)
            .json(&json!({ "title": format!("t{i}") }))
            .expect(StatusCode::CREATED)
            .await;
        b.request(Method::GET, records)
            .bearer_auth(&key)
            .expect(StatusCode::OK)
            .await;
    }
    a.admin(Method::PUT, "/v1/admin/apps/cols/collections/todos")
        .json(&json!({ "fields": [
            { "name": "title", "type": "text", "required": true },
            { "name": "note", "type": "text" }
        ] }))
        .expect(StatusCode::OK)
        .await;
    // Within the ring's way to B, every request there succeeds and sees the new field.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let created = b
            .request(Method::POST, records)
            .bearer_auth(&key)
            .json(&json!({ "title": "after", "note": "n" }))
            .send()
            .await
            .unwrap();
        let listed = b
            .request(Method::GET, records)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if created.status() == StatusCode::CREATED && listed.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still fails on the changed collection: {} {}",
            created.status(),
            listed.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..16 {
        let page = b
            .request(Method::GET, records)
            .bearer_auth(&key)
            .expect(StatusCode::OK)
            .await;
        assert!(page["items"][0].get("note").is_some(), "{page}");
    }
    b.stop().await;
    a.stop().await;
}

/// A login provider reconfigured on one node (another mini program's appid): another node that
/// holds an access token of the old one in its vault fetches the new one's, rather than calling
/// WeChat with the old app's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_reconfigured_on_one_node_gets_a_new_access_token_on_another() {
    const KEY: &str = "6666666666666666666666666666666666666666666666666666666666666666";
    let emulator = crate::auth::Emulator::start().await;
    let pg = TestServer::shared();
    let url = pg.database();
    let files = tempfile::tempdir().unwrap();
    let a = shared_node(&url, KEY, files.path()).start().await;
    a.create_app("tel").await;
    emulator
        .connect(&a, "tel", "wechat", "wx-old", "old-secret")
        .await;
    let b = shared_node(&url, KEY, files.path()).start().await;
    let grant = emulator
        .login_as(&b, "tel", "wechat", "wx-old", "alice")
        .await;
    let access = crate::auth::token(&grant).to_owned();
    let phone_code = |appid: &'static str| emulator.phone_code(appid, "alice", "+86 13800138000");
    let bind = |code: String| {
        b.request(Method::POST, "/v1/apps/tel/auth/user/phone")
            .bearer_auth(&access)
            .json(&json!({ "code": code }))
    };
    // B binds through the old mini program: its vault now holds wx-old's token.
    bind(phone_code("wx-old").await)
        .expect(StatusCode::OK)
        .await;
    // A moves the provider to another mini program.
    emulator
        .connect(&a, "tel", "wechat", "wx-new", "new-secret")
        .await;
    // Within the ring's way, B calls WeChat with wx-new's token: the new app's code binds.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = bind(phone_code("wx-new").await).send().await.unwrap();
        if answer.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B still calls WeChat with the old app's token: {}",
            answer.text().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    a.stop().await;
}

/// A socket opened with an app's key on one node closes when the key is rotated on another
/// (told through the doorbell), as it does on the node that rotated it; and no node takes the
/// old key any more, even one that took it a moment before (nothing may cache it there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_key_rotated_on_one_node_closes_its_sockets_on_another() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    let pg = TestServer::shared();
    let url = pg.database();
    let files = tempfile::tempdir().unwrap();
    let node = || shared_node(&url, KEY, files.path());
    let a = node().start().await;
    let key = a.create_app("keyed").await;
    let b = node().start().await;
    let mut request = format!("ws://{}/v1/apps/keyed/realtime", b.running().local_addr())
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(crate::realtime::next(&mut socket).await["type"], "ready");
    let with_key = |key: &str| {
        b.request(Method::GET, "/v1/admin/apps/keyed")
            .bearer_auth(key)
    };
    with_key(&key).expect(StatusCode::OK).await;

    let rotated = a
        .admin(Method::POST, "/v1/admin/apps/keyed/keys/rotate")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        crate::realtime::closed(&mut socket).await,
        (4003, "session_revoked".into())
    );
    with_key(&key)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    let new_key = rotated["secret_key"].as_str().unwrap();
    with_key(new_key).expect(StatusCode::OK).await;
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_node_that_lost_its_listening_connection_drops_what_it_cached() {
    let pg = TestServer::shared();
    let url = pg.database();
    let db = TestServer::database_name(&url).to_owned();
    let files = tempfile::tempdir().unwrap();
    let files_url = format!("file://{}", files.path().display());
    let t = on(&url)
        .config(move |c| {
            c.database.shared = true;
            c.files.url = files_url;
        })
        .start()
        .await;
    let bob = t.alice_and_bob("shop").await;
    assert_eq!(t.listed("shop", &bob).await, 0, "owners only");

    // Another node opens the list rule while this one is not listening: the ring is lost.
    blocking(|| {
        pg.sql(
            &db,
            "UPDATE app_shop._collections
             SET definition = jsonb_set(definition::jsonb, '{rules,list}', '\"\"')::text
             WHERE name = 'todos'",
        )
    });
    assert_eq!(t.listed("shop", &bob).await, 0, "the cached rule holds");
    let cut = blocking(|| {
        pg.sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{db}' AND query = 'LISTEN cloudlet_bell') cut"
            ),
        )
    });
    assert_eq!(cut.trim(), "1", "one listening connection");
    // Listening again, the node drops everything it cached (rings may have been missed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.listed("shop", &bob).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the cached rule outlived a lost listener"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.stop().await;
}
