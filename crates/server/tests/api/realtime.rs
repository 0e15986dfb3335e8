//! The realtime socket over real WebSockets: who may open one, record changes delivered only
//! to those whose list rule and filter hold (and `leave` when one stops holding), revocation
//! closing the socket, and every bad frame with its code.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Expect, NoContent, TestApp};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) struct Scene {
    pub(crate) t: TestApp,
    pub(crate) key: String,
    pub(crate) alice: String,
    pub(crate) bob: String,
}

pub(crate) async fn scene() -> Scene {
    scene_with(|_| {}).await
}

pub(crate) async fn scene_with(config: impl FnOnce(&mut cloudlet_server::config::Config)) -> Scene {
    let t = TestApp::builder().config(config).start().await;
    let key = t.create_app("notes").await;
    t.configure("notes", "dev", json!({ "enabled": true }))
        .await;
    let alice = t.dev_login("notes", "alice").await;
    let bob = t.dev_login("notes", "bob").await;
    // The default rules: each user lists their own todos.
    t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&json!({
            "fields": [
                { "name": "title", "type": "text" },
                { "name": "done", "type": "bool", "default": false }
            ]
        }))
        .expect(StatusCode::CREATED)
        .await;
    Scene {
        alice: alice["access_token"].as_str().unwrap().to_owned(),
        bob: bob["access_token"].as_str().unwrap().to_owned(),
        key,
        t,
    }
}

impl Scene {
    fn url(&self, app: &str) -> String {
        format!(
            "ws://{}/v1/apps/{app}/realtime",
            self.t.running().local_addr()
        )
    }

    /// A socket authenticated by its `Authorization` header.
    pub(crate) async fn open(&self, token: &str) -> Socket {
        let mut request = self.url("notes").into_client_request().unwrap();
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        assert_eq!(next(&mut socket).await["type"], "ready");
        socket
    }

    /// A socket with no header: it must authenticate in its first message.
    pub(crate) async fn open_bare(&self) -> Socket {
        self.open_bare_on("notes").await
    }

    async fn open_bare_on(&self, app: &str) -> Socket {
        tokio_tungstenite::connect_async(self.url(app))
            .await
            .unwrap()
            .0
    }

    async fn create(&self, token: &str, body: Value) -> Value {
        self.t
            .request(Method::POST, "/v1/apps/notes/collections/todos/records")
            .bearer_auth(token)
            .json(&body)
            .expect(StatusCode::CREATED)
            .await
    }

    async fn update(&self, token: &str, id: &str, body: Value) {
        self.t
            .request(
                Method::PATCH,
                &format!("/v1/apps/notes/collections/todos/records/{id}"),
            )
            .bearer_auth(token)
            .json(&body)
            .expect(StatusCode::OK)
            .await;
    }
}

pub(crate) async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::text(value.to_string())).await.unwrap();
}

/// The next message of the protocol (pings of either kind skipped), within 5 seconds.
pub(crate) async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ping" {
                    return value;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Nothing more arrives for a moment.
pub(crate) async fn quiet(socket: &mut Socket) {
    if let Ok(Some(Ok(Message::Text(text)))) =
        tokio::time::timeout(Duration::from_millis(300), socket.next()).await
    {
        panic!("expected nothing, got {text}");
    }
}

/// The close code and reason the server ends the socket with.
pub(crate) async fn closed(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("the close within 5 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
            Some(Ok(_)) => {}
        }
    }
}

async fn subscribe(socket: &mut Socket, id: &str, filter: Option<&str>) -> String {
    send(
        socket,
        json!({ "type": "subscribe", "id": id, "collection": "todos", "filter": filter }),
    )
    .await;
    let answer = next(socket).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    assert_eq!(answer["id"], id);
    answer["epoch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn changes_reach_only_those_who_may_list_them() {
    let s = scene().await;
    let mut alice = s.open(&s.alice).await;
    let mut bob = s.open_bare().await;
    send(&mut bob, json!({ "type": "auth", "token": s.bob })).await;
    assert_eq!(next(&mut bob).await["type"], "ready");
    subscribe(&mut alice, "all", None).await;
    subscribe(&mut alice, "open", Some("done = false")).await;
    subscribe(&mut bob, "all", None).await;

    // Alice's new todo: both of her subscriptions, numbered each on its own; not Bob.
    let todo = s.create(&s.alice, json!({ "title": "milk" })).await;
    let id = todo["id"].as_str().unwrap();
    let mut got = [next(&mut alice).await, next(&mut alice).await];
    got.sort_by_key(|m| m["sub"].as_str().unwrap().to_owned());
    for (message, sub) in got.iter().zip(["all", "open"]) {
        assert_eq!(message["type"], "change");
        assert_eq!(message["sub"], sub);
        assert_eq!(message["event"], "create");
        assert_eq!(message["seq"], 1);
        assert_eq!(message["id"], id);
        assert_eq!(message["record"]["title"], "milk");
    }
    // Bob's own todo is the first thing Bob hears of.
    s.create(&s.bob, json!({ "title": "bread" })).await;
    let first = next(&mut bob).await;
    assert_eq!(
        (&first["event"], &first["record"]["title"], &first["seq"]),
        (&json!("create"), &json!("bread"), &json!(1))
    );
    quiet(&mut alice).await;

    // Done: still in "all", gone from "open" (a `leave`, with the id alone).
    s.update(&s.alice, id, json!({ "done": true })).await;
    let mut got = [next(&mut alice).await, next(&mut alice).await];
    got.sort_by_key(|m| m["sub"].as_str().unwrap().to_owned());
    assert_eq!(
        (&got[0]["sub"], &got[0]["event"], &got[0]["seq"]),
        (&json!("all"), &json!("update"), &json!(2))
    );
    assert_eq!(got[0]["record"]["done"], true);
    assert_eq!(
        (&got[1]["sub"], &got[1]["event"], &got[1]["seq"]),
        (&json!("open"), &json!("leave"), &json!(2))
    );
    assert!(got[1].get("record").is_none(), "{}", got[1]);
    // Deleted: "all" hears it; "open" no longer saw it.
    s.t.request(
        Method::DELETE,
        &format!("/v1/apps/notes/collections/todos/records/{id}"),
    )
    .bearer_auth(&s.alice)
    .no_content()
    .await;
    let gone = next(&mut alice).await;
    assert_eq!(
        (&gone["sub"], &gone["event"], &gone["seq"]),
        (&json!("all"), &json!("delete"), &json!(3))
    );
    quiet(&mut alice).await;
    quiet(&mut bob).await;

    // A rule changed: it applies to live subscriptions at once.
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&json!({
            "fields": [
                { "name": "title", "type": "text" },
                { "name": "done", "type": "bool", "default": false }
            ],
            "rules": { "list": "", "view": "" }
        }))
        .expect(StatusCode::OK)
        .await;
    s.create(&s.alice, json!({ "title": "for all" })).await;
    let seen = next(&mut bob).await;
    assert_eq!(
        (&seen["event"], &seen["record"]["title"], &seen["seq"]),
        (&json!("create"), &json!("for all"), &json!(2))
    );

    // A batch's writes are delivered too, after it commits, in its order.
    s.t.request(Method::POST, "/v1/apps/notes/batch")
        .bearer_auth(&s.alice)
        .json(&json!({ "operations": [
            { "op": "create", "collection": "todos", "data": { "title": "one" } },
            { "op": "create", "collection": "todos", "data": { "title": "two" } }
        ] }))
        .expect(StatusCode::OK)
        .await;
    for (title, seq) in [("one", 3), ("two", 4)] {
        let seen = next(&mut bob).await;
        assert_eq!(
            (&seen["event"], &seen["record"]["title"], &seen["seq"]),
            (&json!("create"), &json!(title), &json!(seq))
        );
    }

    // Unsubscribed: nothing more.
    send(&mut bob, json!({ "type": "unsubscribe", "id": "all" })).await;
    assert_eq!(next(&mut bob).await["type"], "unsubscribed");
    s.create(&s.alice, json!({ "title": "again" })).await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn a_socket_is_for_someone_and_ends_with_their_session() {
    let s = scene().await;
    // Not a WebSocket handshake; no such app.
    s.t.request(Method::GET, "/v1/apps/notes/realtime")
        .expect_error(StatusCode::UPGRADE_REQUIRED, "upgrade_required")
        .await;
    match tokio_tungstenite::connect_async(s.url("ghost")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::NOT_FOUND);
        }
        other => panic!("{other:?}"),
    }
    // A header with a bad token is refused before the upgrade.
    let mut request = s.url("notes").into_client_request().unwrap();
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, "Bearer a.b.c".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(request).await.is_err());

    // No header: anything but `auth` first closes the socket.
    let mut bare = s.open_bare().await;
    send(&mut bare, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut bare).await["code"], "auth_required");
    assert_eq!(closed(&mut bare).await, (4000, "auth_required".into()));
    // A bad token in the message: its code, then closed.
    let mut bare = s.open_bare().await;
    send(&mut bare, json!({ "type": "auth", "token": "x.y.z" })).await;
    let refused = next(&mut bare).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "invalid_token", "{refused}");
    assert_eq!(closed(&mut bare).await, (4000, "auth_failed".into()));

    // A fresh token of the same user keeps the socket; another user's is refused.
    let mut alice = s.open(&s.alice).await;
    subscribe(&mut alice, "all", None).await;
    send(&mut alice, json!({ "type": "auth", "token": s.bob })).await;
    assert_eq!(next(&mut alice).await["code"], "invalid_token");
    send(&mut alice, json!({ "type": "auth", "token": s.alice })).await;
    assert_eq!(next(&mut alice).await["type"], "ready");

    // Logging out closes every socket of the session.
    s.t.request(Method::DELETE, "/v1/apps/notes/auth/sessions/current")
        .bearer_auth(&s.alice)
        .no_content()
        .await;
    assert_eq!(closed(&mut alice).await, (4003, "session_revoked".into()));

    // The app's key opens a socket that sees every record; rotating the key closes it, and
    // deleting the app closes the rest.
    let mut server = s.open(&s.key).await;
    subscribe(&mut server, "all", None).await;
    s.create(&s.bob, json!({ "title": "seen by the key" }))
        .await;
    assert_eq!(
        next(&mut server).await["record"]["title"],
        "seen by the key"
    );
    let mut bob = s.open(&s.bob).await;
    s.t.admin(Method::POST, "/v1/admin/apps/notes/keys/rotate")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(closed(&mut server).await, (4003, "session_revoked".into()));
    send(&mut bob, json!({ "type": "ping", "id": 1 })).await;
    assert_eq!(
        next(&mut bob).await["type"],
        "pong",
        "a user's socket stays"
    );
    s.t.admin(Method::DELETE, "/v1/admin/apps/notes")
        .no_content()
        .await;
    assert_eq!(closed(&mut bob).await, (4003, "session_revoked".into()));

    // Unauthenticated, three refused messages are all a socket gets.
    s.t.create_app("notes2").await;
    let mut bare = s.open_bare_on("notes2").await;
    for _ in 0..3 {
        bare.send(Message::text("{oops")).await.unwrap();
    }
    for _ in 0..2 {
        assert_eq!(next(&mut bare).await["code"], "invalid_json");
    }
    assert_eq!(closed(&mut bare).await, (4000, "auth_required".into()));
}

#[tokio::test]
async fn bad_messages_get_their_codes_and_leave_the_socket_open() {
    let s = scene().await;
    let mut alice = s.open(&s.alice).await;
    let cases = [
        (json!("not an object"), "unknown_type"),
        (json!({ "type": "dance" }), "unknown_type"),
        (json!({ "type": "subscribe", "id": "a" }), "invalid_message"),
        (
            json!({ "type": "subscribe", "id": "a b", "collection": "todos" }),
            "invalid_message",
        ),
        (
            json!({ "type": "subscribe", "id": "a", "collection": "todos", "extra": 1 }),
            "invalid_message",
        ),
        (
            json!({ "type": "subscribe", "id": "a", "collection": "nope" }),
            "collection_not_found",
        ),
        (
            json!({ "type": "subscribe", "id": "a", "collection": "todos", "filter": "done ==" }),
            "invalid_filter",
        ),
        (
            json!({ "type": "subscribe", "id": "a", "collection": "todos", "filter": "nope = 1" }),
            "unknown_field",
        ),
        (
            json!({ "type": "unsubscribe", "id": "zz" }),
            "no_subscription",
        ),
    ];
    for (message, code) in cases {
        send(&mut alice, message.clone()).await;
        let answer = next(&mut alice).await;
        assert_eq!(answer["type"], "error", "{message}: {answer}");
        assert_eq!(answer["code"], code, "{message}: {answer}");
    }
    alice.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next(&mut alice).await["code"], "invalid_json");
    subscribe(&mut alice, "a", None).await;
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "a", "collection": "todos" }),
    )
    .await;
    assert_eq!(next(&mut alice).await["code"], "subscription_exists");
    for n in 1..64 {
        subscribe(&mut alice, &format!("s{n}"), None).await;
    }
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "one-more", "collection": "todos" }),
    )
    .await;
    assert_eq!(next(&mut alice).await["code"], "too_many_subscriptions");
    send(&mut alice, json!({ "type": "ping", "id": 7 })).await;
    assert_eq!(next(&mut alice).await, json!({ "type": "pong", "id": 7 }));

    // A binary frame, a frame over the limit, a flood: each ends the socket.
    alice.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(closed(&mut alice).await, (1003, "binary_frame".into()));
    let mut big = s.open(&s.alice).await;
    let huge = json!({ "type": "ping", "id": "x".repeat(20_000) });
    let _ = big.send(Message::text(huge.to_string())).await;
    assert_eq!(closed(&mut big).await, (1009, "message_too_large".into()));
    let mut flood = s.open(&s.alice).await;
    for _ in 0..300 {
        if flood
            .send(Message::text(r#"{"type":"pong"}"#))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(closed(&mut flood).await, (4029, "rate_limited".into()));
    // WebSocket pings count too: each is a wake-up and an answer.
    let mut pings = s.open(&s.alice).await;
    for _ in 0..300 {
        if pings.send(Message::Ping(Vec::new().into())).await.is_err() {
            break;
        }
    }
    assert_eq!(closed(&mut pings).await, (4029, "rate_limited".into()));
}

#[tokio::test]
async fn sockets_are_capped_per_user_and_per_app() {
    let s = scene_with(|c| {
        c.realtime.max_connections_per_app = 2;
        c.realtime.max_connections_per_user = 1;
    })
    .await;
    let mut alice = s.open(&s.alice).await;
    // Alice's second socket: over her cap.
    let mut again = s.open_bare().await;
    send(&mut again, json!({ "type": "auth", "token": s.alice })).await;
    assert_eq!(next(&mut again).await["code"], "too_many_connections");
    assert_eq!(
        closed(&mut again).await,
        (4009, "too_many_connections".into())
    );
    // Bob's fills the app; then even the app's key finds no room.
    let _bob = s.open(&s.bob).await;
    let mut key = s.open_bare().await;
    send(&mut key, json!({ "type": "auth", "token": s.key })).await;
    assert_eq!(next(&mut key).await["code"], "too_many_connections");
    assert_eq!(
        closed(&mut key).await,
        (4009, "too_many_connections".into())
    );
    // A socket closed gives its place back.
    alice.close(None).await.unwrap();
    drop(alice);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut retry = s.open_bare().await;
        send(&mut retry, json!({ "type": "auth", "token": s.alice })).await;
        if next(&mut retry).await["type"] == "ready" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the place came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscribes to todos resuming `after` (a JSON object or null); the `subscribed` answer.
async fn resume(socket: &mut Socket, id: &str, filter: Option<&str>, after: Value) -> Value {
    send(
        socket,
        json!({ "type": "subscribe", "id": id, "collection": "todos", "filter": filter,
                "after": after }),
    )
    .await;
    let answer = next(socket).await;
    assert_eq!(answer["type"], "subscribed", "{answer}");
    answer
}

/// Where a subscription is, to resume from: its epoch, last seq and last pos.
fn left_at(epoch: &Value, last: &Value) -> Value {
    json!({ "epoch": epoch, "seq": last["seq"], "pos": last["pos"] })
}

/// On PostgreSQL a committed change is read from the log only once every older transaction
/// has ended (one may yet commit a change before it). A subscriber that starts meanwhile starts
/// from before it, and gets it when that transaction ends, with no later write to ring for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_back_by_an_older_transaction_reaches_a_subscriber_that_came_meanwhile() {
    use cloudlet_store::postgres::testing::TestServer;
    // On SQLite a change is in order as it commits: nothing holds it back.
    if crate::support::Backend::under_test() != crate::support::Backend::Postgres {
        return;
    }
    // A server of its own: an open transaction holds back every database's log on its server,
    // other tests' too.
    let pg = tokio::task::block_in_place(TestServer::start);
    let url = pg.database();
    let db = TestServer::database_name(&url).to_owned();
    let s = {
        let url = cloudlet_server::config::DatabaseUrl::parse(&url).unwrap();
        scene_with(move |c| c.database.url = url).await
    };
    let pg = &pg;
    let hold = tokio::task::block_in_place(|| pg.session(&db, "BEGIN; SELECT txid_current();"));
    let held = || {
        tokio::task::block_in_place(|| {
            pg.sql(
                &db,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'psql' AND backend_xid IS NOT NULL",
            )
        })
        .trim()
            == "1"
    };
    crate::postgres::wait_until(Duration::from_secs(10), "the holding transaction", held).await;
    let record = s.create(&s.alice, json!({ "title": "held back" })).await;
    let mut socket = s.open(&s.alice).await;
    resume(&mut socket, "all", None, Value::Null).await;
    tokio::task::block_in_place(|| hold.release()).expect("the holding session ran");
    let change = next(&mut socket).await;
    assert_eq!(
        (&change["event"], &change["id"]),
        (&json!("create"), &record["id"])
    );
    quiet(&mut socket).await;
}

/// A create its rule refuses, checked on the row as it goes in, leaves no event behind: the
/// subscriber's first change is the next create that holds.
#[tokio::test]
async fn a_create_its_rule_refuses_is_no_change() {
    let s = scene().await;
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&json!({
            "fields": [
                { "name": "title", "type": "text" },
                { "name": "done", "type": "bool", "default": false }
            ],
            "rules": { "create": "@auth.id != null && title != \"no\"" }
        }))
        .expect(StatusCode::OK)
        .await;
    let mut socket = s.open(&s.alice).await;
    resume(&mut socket, "all", None, Value::Null).await;
    s.t.request(Method::POST, "/v1/apps/notes/collections/todos/records")
        .bearer_auth(&s.alice)
        .json(&json!({ "title": "no" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let record = s.create(&s.alice, json!({ "title": "yes" })).await;
    let change = next(&mut socket).await;
    assert_eq!(
        (&change["event"], &change["id"], &change["seq"]),
        (&json!("create"), &record["id"], &json!(1))
    );
    quiet(&mut socket).await;
}

#[tokio::test]
async fn a_client_that_comes_back_gets_what_it_missed_once_in_order() {
    let s = scene().await;
    let mut alice = s.open(&s.alice).await;
    let all = resume(&mut alice, "all", None, Value::Null).await;
    let open = resume(&mut alice, "open", Some("done = false"), Value::Null).await;
    assert_eq!((&all["seq"], &open["seq"]), (&json!(0), &json!(0)));
    assert!(all["pos"].is_string(), "{all}");
    let milk = s.create(&s.alice, json!({ "title": "milk" })).await;
    let milk = milk["id"].as_str().unwrap().to_owned();
    let mut got = [next(&mut alice).await, next(&mut alice).await];
    got.sort_by_key(|m| m["sub"].as_str().unwrap().to_owned());
    assert_eq!(
        got[0]["pos"], got[1]["pos"],
        "one change, one place in the log"
    );
    let (all_at, open_at) = (
        left_at(&all["epoch"], &got[0]),
        left_at(&open["epoch"], &got[1]),
    );
    alice.close(None).await.unwrap();

    // While Alice is away: her own changes, Bob's (which she may not list), a leave, a delete.
    let bread = s.create(&s.alice, json!({ "title": "bread" })).await;
    let bread = bread["id"].as_str().unwrap().to_owned();
    s.create(&s.bob, json!({ "title": "bob's" })).await;
    s.update(&s.alice, &milk, json!({ "done": true })).await;
    s.t.request(
        Method::DELETE,
        &format!("/v1/apps/notes/collections/todos/records/{bread}"),
    )
    .bearer_auth(&s.alice)
    .no_content()
    .await;

    // Back: each subscription gets what it missed, numbered on, in the log's order, once.
    let mut alice = s.open(&s.alice).await;
    let back = resume(&mut alice, "all", None, all_at.clone()).await;
    assert_eq!((&back["epoch"], &back["seq"]), (&all["epoch"], &json!(1)));
    let mut missed = Vec::new();
    for _ in 0..3 {
        missed.push(next(&mut alice).await);
    }
    let seen: Vec<_> = missed
        .iter()
        .map(|m| {
            (
                m["sub"].clone(),
                m["event"].clone(),
                m["id"].clone(),
                m["seq"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (json!("all"), json!("create"), json!(bread), json!(2)),
            (json!("all"), json!("update"), json!(milk), json!(3)),
            (json!("all"), json!("delete"), json!(bread), json!(4)),
        ]
    );
    assert_eq!(missed[1]["record"]["done"], true);
    let back_open = resume(&mut alice, "open", Some("done = false"), open_at).await;
    assert_eq!(back_open["seq"], 1);
    let seen: Vec<_> = [next(&mut alice).await, next(&mut alice).await]
        .iter()
        .map(|m| (m["event"].clone(), m["id"].clone(), m["seq"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("create"), json!(bread), json!(2)),
            (json!("leave"), json!(milk), json!(3)),
        ],
        "`open` saw bread created, then milk leave (done)"
    );
    let deleted = next(&mut alice).await;
    assert_eq!(
        (&deleted["event"], &deleted["seq"]),
        (&json!("delete"), &json!(4))
    );
    quiet(&mut alice).await;

    // Live again, numbered on.
    s.create(&s.alice, json!({ "title": "eggs" })).await;
    let mut got = [next(&mut alice).await, next(&mut alice).await];
    got.sort_by_key(|m| m["sub"].as_str().unwrap().to_owned());
    assert_eq!((&got[0]["seq"], &got[1]["seq"]), (&json!(5), &json!(5)));

    // Resuming twice from the same place gives the same, again: the client decides.
    let mut again = s.open(&s.alice).await;
    resume(&mut again, "all", None, all_at).await;
    let first = next(&mut again).await;
    assert_eq!((&first["id"], &first["seq"]), (&json!(bread), &json!(2)));
}

/// What subscriptions catching up hold at once on a node is bounded (`realtime.catch_up_mib`,
/// here 1): a resume that needs more than the budget gets a `reset` (its client refetches)
/// rather than the memory, and one within it is caught up.
#[tokio::test]
async fn a_catch_up_past_the_nodes_budget_for_them_is_a_reset() {
    let s = scene_with(|c| c.realtime.catch_up_mib = 1).await;
    let mut alice = s.open(&s.alice).await;
    let all = resume(&mut alice, "all", None, Value::Null).await;
    s.create(&s.alice, json!({ "title": "first" })).await;
    let at = left_at(&all["epoch"], &next(&mut alice).await);
    alice.close(None).await.unwrap();
    // While away: about 500 KB of changes, then as much again, then more.
    let long = "x".repeat(50_000);
    let away = |count: usize| {
        let long = long.clone();
        let s = &s;
        async move {
            for _ in 0..count {
                s.create(&s.alice, json!({ "title": long })).await;
            }
        }
    };
    away(10).await;
    let mut back = s.open(&s.alice).await;
    resume(&mut back, "all", None, at.clone()).await;
    for n in 2..=11 {
        assert_eq!(next(&mut back).await["seq"], n, "within the budget");
    }
    back.close(None).await.unwrap();
    away(20).await;
    let mut again = s.open(&s.alice).await;
    resume(&mut again, "all", None, at).await;
    assert_eq!(
        next(&mut again).await["reason"],
        "history",
        "1.5 MB of changes past a budget of 1 MiB"
    );
}

#[tokio::test]
async fn a_resume_the_log_cannot_serve_is_a_reset_and_a_bad_one_an_error() {
    let s = scene().await;
    let mut alice = s.open(&s.alice).await;
    let bad = [
        json!({ "epoch": "e", "seq": 1 }),
        json!({ "epoch": "e", "seq": 1, "pos": "x" }),
        json!({ "epoch": "e", "seq": 1, "pos": "1.-2" }),
        json!({ "epoch": "e", "seq": 1, "pos": "99999999999999999999.1" }),
        json!({ "epoch": "e", "seq": 1, "pos": "0.1", "more": true }),
    ];
    for after in bad {
        send(
            &mut alice,
            json!({ "type": "subscribe", "id": "a", "collection": "todos", "after": after }),
        )
        .await;
        let answer = next(&mut alice).await;
        assert_eq!(
            (&answer["type"], &answer["code"]),
            (&json!("error"), &json!("invalid_message")),
            "{after}: {answer}"
        );
    }
    // A channel's resume has no `pos`.
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "c", "channel": "room:1",
                "after": { "epoch": "e", "seq": 1, "pos": "0.1" } }),
    )
    .await;
    assert_eq!(next(&mut alice).await["code"], "invalid_message");

    // A place this server did not give (forged: no valid signature): a reset, then changes
    // from now, numbered from 1 in a new epoch. Never the log's history from a chosen place.
    let far = json!({ "epoch": "old", "seq": 9, "pos": "0.0.00112233445566778899aabbccddeeff" });
    let answer = resume(&mut alice, "a", None, far).await;
    let reset = next(&mut alice).await;
    assert_eq!(
        (&reset["type"], &reset["sub"], &reset["reason"]),
        (&json!("reset"), &json!("a"), &json!("history"))
    );
    assert_ne!(answer["epoch"], "old");
    assert_eq!(reset["epoch"], answer["epoch"]);
    s.create(&s.alice, json!({ "title": "new" })).await;
    let change = next(&mut alice).await;
    assert_eq!((&change["sub"], &change["seq"]), (&json!("a"), &json!(1)));

    // A place given to Alice is not Bob's to resume from (nor another collection's): a reset.
    let given = json!({ "epoch": answer["epoch"], "seq": 0, "pos": answer["pos"] });
    let mut bob = s.open(&s.bob).await;
    resume(&mut bob, "b", None, given.clone()).await;
    assert_eq!(next(&mut bob).await["reason"], "history");
    // Alice herself resumes from it: the change since, nothing else.
    let mut again = s.open(&s.alice).await;
    let back = resume(&mut again, "a", None, given).await;
    assert_eq!(back["epoch"], answer["epoch"]);
    let replayed = next(&mut again).await;
    assert_eq!(
        (&replayed["type"], &replayed["seq"]),
        (&json!("change"), &json!(1))
    );
    quiet(&mut again).await;
}

/// Each resume may read thousands of events of the log: a socket may ask for enough of them to
/// restore every subscription it may hold, and then waits, its socket open.
#[tokio::test]
async fn resumes_are_rate_limited_without_closing_the_socket() {
    // docs/realtime.md's limit: as many as a socket's subscriptions, a minute.
    const MAX_RESUMES: u32 = 64;
    let s = scene().await;
    let mut alice = s.open(&s.alice).await;
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "first", "collection": "todos" }),
    )
    .await;
    let first = next(&mut alice).await;
    let from = json!({ "epoch": first["epoch"], "seq": 0, "pos": first["pos"] });
    send(&mut alice, json!({ "type": "unsubscribe", "id": "first" })).await;
    assert_eq!(next(&mut alice).await["type"], "unsubscribed");
    for i in 0..MAX_RESUMES {
        resume(&mut alice, &format!("r{i}"), None, from.clone()).await;
    }
    send(&mut alice, json!({ "type": "unsubscribe", "id": "r0" })).await;
    assert_eq!(next(&mut alice).await["type"], "unsubscribed");
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "r0", "collection": "todos", "after": from }),
    )
    .await;
    let refused = next(&mut alice).await;
    assert_eq!(
        (&refused["type"], &refused["code"], &refused["id"]),
        (&json!("error"), &json!("rate_limited"), &json!("r0"))
    );
    // A subscription from now reads nothing of the log: it is not one of them.
    subscribe(&mut alice, "now", None).await;
}

#[tokio::test]
async fn changes_missed_across_a_restart_are_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let t = crate::support::TestApp::builder()
        .data_dir(dir.path())
        .start()
        .await;
    t.create_app("notes").await;
    t.configure("notes", "dev", json!({ "enabled": true }))
        .await;
    let alice = t.dev_login("notes", "alice").await;
    // The access token holds across the restart: the app's signing keys are kept.
    let alice = alice["access_token"].as_str().unwrap().to_owned();
    t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&json!({ "fields": [{ "name": "title", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    let s = Scene {
        alice: alice.clone(),
        bob: String::new(),
        key: String::new(),
        t,
    };
    let mut socket = s.open(&s.alice).await;
    let all = resume(&mut socket, "all", None, Value::Null).await;
    s.create(&s.alice, json!({ "title": "before" })).await;
    let first = next(&mut socket).await;
    let at = left_at(&all["epoch"], &first);
    drop(socket);
    let missed = s.create(&s.alice, json!({ "title": "missed" })).await;
    s.t.stop().await;

    let t = crate::support::TestApp::builder()
        .data_dir(dir.path())
        .start()
        .await;
    let s = Scene {
        alice,
        bob: String::new(),
        key: String::new(),
        t,
    };
    let after = s.create(&s.alice, json!({ "title": "after" })).await;
    let mut socket = s.open(&s.alice).await;
    resume(&mut socket, "all", None, at).await;
    for (record, seq) in [(&missed, 2), (&after, 3)] {
        let change = next(&mut socket).await;
        assert_eq!(
            (&change["event"], &change["id"], &change["seq"]),
            (&json!("create"), &record["id"], &json!(seq))
        );
    }
    quiet(&mut socket).await;
}

#[tokio::test]
async fn concurrent_writes_reach_a_client_that_keeps_coming_back_once_each() {
    let s = std::sync::Arc::new(scene().await);
    // Subscribed first: a subscription hears what is written from then on.
    let mut socket = s.open(&s.alice).await;
    let first = resume(&mut socket, "all", None, Value::Null).await;
    // Four writers at once: on PostgreSQL their transactions commit in another order than
    // their sequence numbers were handed out.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let s = s.clone();
        writers.spawn(async move {
            for n in 0..40 {
                s.create(&s.alice, json!({ "title": format!("{w}-{n}") }))
                    .await;
            }
        });
    }
    let (epoch, mut seq, mut pos) = (first["epoch"].clone(), 0u64, first["pos"].clone());
    let mut seen = Vec::new();
    // Read a few changes, drop the socket, come back where it left off; until every write has
    // come (or a generous deadline passes: then the count says what was lost).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 160 && tokio::time::Instant::now() < deadline {
        let mut got = 0;
        while got < 7 {
            let Ok(Some(Ok(Message::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(500), socket.next()).await
            else {
                break;
            };
            let change: Value = serde_json::from_str(&text).unwrap();
            if change["type"] != "change" {
                continue;
            }
            seq += 1;
            assert_eq!(change["seq"], seq, "numbered without a gap: {change}");
            seen.push(change["id"].as_str().unwrap().to_owned());
            pos = change["pos"].clone();
            got += 1;
        }
        while let Some(done) = writers.try_join_next() {
            done.unwrap();
        }
        drop(socket);
        socket = s.open(&s.alice).await;
        let back = resume(
            &mut socket,
            "all",
            None,
            json!({ "epoch": epoch, "seq": seq, "pos": pos }),
        )
        .await;
        assert_eq!(back["seq"], seq, "{back}");
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a change came twice");
    assert_eq!(seen.len(), 160, "every write came");
    // Nothing more comes after the last.
    quiet(&mut socket).await;
}
