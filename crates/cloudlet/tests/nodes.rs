//! Three `cloudlet serve` processes of this binary on one PostgreSQL database
//! (`[database] shared = true`), requests spread over them: what one node changes holds on the
//! others (rules, revoked sessions, deployed functions, declared queues), a write through one
//! reaches a realtime subscriber on another, no acknowledged write is lost when a node is
//! killed under load, and a schedule runs every tick, each enqueued once, while nodes are killed
//! and started again. Each waits with a generous bound; how fast the nodes hear each other is
//! measured in `bench/`, not here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Serve, TOKEN, call};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The socket's next message but pings, within 10 seconds.
async fn next_frame(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] != "ping" {
                return value;
            }
        }
    }
}

/// A request that must answer `status`; its body.
async fn must(method: Method, url: String, token: &str, body: Option<Value>, status: u16) -> Value {
    let (got, answer) = call(method, url, token, body).await;
    assert_eq!(got, status, "{answer}");
    answer
}

/// Polls `check` every 20 ms until it holds; panics with `what` after 10 seconds.
async fn within<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node(dir: &std::path::Path, n: usize, url: &str, config: &std::path::Path) -> Serve {
    Serve::start_with(
        &dir.join(format!("node{n}")),
        Some(url),
        &[
            "--config",
            config.to_str().unwrap(),
            "--console-listen",
            "off",
        ],
    )
}

async fn login(base: &str, user: &str) -> Value {
    must(
        Method::POST,
        format!("{base}/v1/apps/shop/auth/sessions"),
        "",
        Some(json!({ "provider": "dev", "user": user })),
        201,
    )
    .await
}

async fn titles(base: &str, token: &str) -> Option<Vec<String>> {
    let (status, page) = call(
        Method::GET,
        format!("{base}/v1/apps/shop/collections/todos/records?sort=created_at"),
        token,
        None,
    )
    .await;
    (status == 200).then(|| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_owned())
            .collect()
    })
}

/// The master key file and the configuration of nodes sharing a database (with `more` after).
/// Every node of a database needs the same master key: a file here, as a secret mount would
/// be on nodes without a persistent disk.
fn shared_config(dir: &std::path::Path, more: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("master.key");
    std::fs::write(&key, "5e".repeat(32)).unwrap();
    let config = dir.join("cloudlet.toml");
    // Their files in one directory, as a volume every node mounts would be.
    let files = dir.join("files");
    let text = format!(
        "master_key_file = {:?}\n[database]\nshared = true\n[files]\nurl = \"file://{}\"\n{more}",
        key.to_str().unwrap(),
        files.to_str().unwrap()
    );
    std::fs::write(&config, text).unwrap();
    (key, config)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_nodes_on_one_database_keep_in_step() {
    let url = cloudlet_store::postgres::testing::TestServer::shared().database();
    let dir = tempfile::tempdir().unwrap();
    let (key, config) = shared_config(
        dir.path(),
        "[auth]\nlogins_per_ip_per_minute = 8\n[realtime]\nnode_lease_secs = 2\n",
    );
    let nodes: Vec<Serve> = (0..3).map(|n| node(dir.path(), n, &url, &config)).collect();
    // A node that would serve the database alone is refused while they share it.
    let alone = dir.path().join("alone.toml");
    std::fs::write(
        &alone,
        format!("master_key_file = {:?}\n", key.to_str().unwrap()),
    )
    .unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "off",
            "--data-dir",
        ])
        .arg(dir.path().join("alone"))
        .args(["--database", &url, "--config", alone.to_str().unwrap()])
        .env("CLOUDLET_ADMIN_TOKEN", TOKEN)
        .env_remove("CLOUDLET_DATABASE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a node alone started beside shared ones");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success());
    assert!(said.contains("another Cloudlet node"), "{said}");

    let (a, b, c) = (
        nodes[0].base.clone(),
        nodes[1].base.clone(),
        nodes[2].base.clone(),
    );

    // The app, made through A: B and C serve it at once.
    must(
        Method::POST,
        format!("{a}/v1/admin/apps"),
        TOKEN,
        Some(json!({ "name": "shop" })),
        201,
    )
    .await;
    must(
        Method::PUT,
        format!("{b}/v1/admin/apps/shop/auth/providers/dev"),
        TOKEN,
        Some(json!({ "enabled": true })),
        200,
    )
    .await;
    let todos = json!({ "fields": [{ "name": "title", "type": "text" }] });
    must(
        Method::PUT,
        format!("{c}/v1/admin/apps/shop/collections/todos"),
        TOKEN,
        Some(todos.clone()),
        201,
    )
    .await;
    let alice = login(&a, "alice").await;
    let bob = login(&b, "bob").await;
    let alice_token = alice["access_token"].as_str().unwrap().to_owned();
    let bob_token = bob["access_token"].as_str().unwrap().to_owned();

    // A rule changed through A holds on B and C (whose caches hold the old one).
    must(
        Method::POST,
        format!("{c}/v1/apps/shop/collections/todos/records"),
        &alice_token,
        Some(json!({ "title": "alice's" })),
        201,
    )
    .await;
    for node in [&b, &c] {
        assert_eq!(titles(node, &bob_token).await, Some(vec![]), "owners only");
    }
    let open = json!({
        "fields": [{ "name": "title", "type": "text" }],
        "rules": { "list": "", "view": "" }
    });
    must(
        Method::PUT,
        format!("{a}/v1/admin/apps/shop/collections/todos"),
        TOKEN,
        Some(open),
        200,
    )
    .await;
    for node in [&b, &c] {
        within("the rule changed on A to hold here", || async {
            titles(node, &bob_token).await == Some(vec!["alice's".to_owned()])
        })
        .await;
    }

    // A write through A reaches a realtime subscriber on B.
    let (mut socket, _) = tokio_tungstenite::connect_async(format!(
        "{}/v1/apps/shop/realtime",
        b.replace("http", "ws")
    ))
    .await
    .unwrap();
    let send = |value: Value| Message::text(value.to_string());
    socket
        .send(send(json!({ "type": "auth", "token": bob_token })))
        .await
        .unwrap();
    socket
        .send(send(
            json!({ "type": "subscribe", "id": "all", "collection": "todos" }),
        ))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "ready");
    assert_eq!(next_frame(&mut socket).await["type"], "subscribed");
    let created = must(
        Method::POST,
        format!("{a}/v1/apps/shop/collections/todos/records"),
        &alice_token,
        Some(json!({ "title": "live" })),
        201,
    )
    .await;
    let change = next_frame(&mut socket).await;
    assert_eq!(
        (&change["event"], &change["id"]),
        (&json!("create"), &created["id"])
    );

    // A message published through A, and one sent to bob through C, reach his socket on B;
    // a second subscriber on C hears the channel's messages in the same order.
    must(
        Method::PUT,
        format!("{c}/v1/admin/apps/shop/realtime"),
        TOKEN,
        Some(json!({ "channels": { "room": { "rules": { "join": "", "presence": "" } } } })),
        200,
    )
    .await;
    let (mut other, _) = tokio_tungstenite::connect_async(format!(
        "{}/v1/apps/shop/realtime",
        c.replace("http", "ws")
    ))
    .await
    .unwrap();
    // Bob watches the room's presence too.
    let join = json!({ "type": "subscribe", "id": "r", "channel": "room:1", "presence": true });
    for (socket, token) in [(&mut socket, &bob_token), (&mut other, &alice_token)] {
        socket
            .send(send(json!({ "type": "auth", "token": token })))
            .await
            .unwrap();
        socket.send(send(join.clone())).await.unwrap();
    }
    loop {
        // The settings changed on C may not have reached B yet: join again until it has.
        let answer = next_frame(&mut socket).await;
        if answer["type"] == "subscribed" {
            break;
        }
        // The token again is a refresh, answered `ready`.
        if answer["type"] == "ready" {
            continue;
        }
        assert_eq!(answer["code"], "channel_not_found", "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket.send(send(join.clone())).await.unwrap();
    }
    let mut heard_on_c = Vec::new();
    for n in 0..5 {
        let via = [&a, &c][n % 2];
        let published = must(
            Method::POST,
            format!("{via}/v1/admin/apps/shop/realtime/channels/room:1/messages"),
            TOKEN,
            Some(json!({ "data": { "n": n } })),
            200,
        )
        .await;
        assert!(published["seq"].as_u64().is_some(), "{published}");
    }
    let mut heard_on_b = Vec::new();
    while heard_on_b.len() < 5 {
        let message = next_frame(&mut socket).await;
        assert_eq!(message["type"], "message", "{message}");
        heard_on_b.push(message["data"]["n"].as_u64().unwrap());
    }
    while heard_on_c.len() < 5 {
        let value = next_frame(&mut other).await;
        if value["type"] == "message" {
            heard_on_c.push(value["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(heard_on_b, [0, 1, 2, 3, 4], "in the order published");
    assert_eq!(heard_on_c, heard_on_b);
    let bob_id = bob["user"]["id"].as_str().unwrap();
    socket
        .send(send(
            json!({ "type": "subscribe", "id": "dm", "direct": true }),
        ))
        .await
        .unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "subscribed");
    must(
        Method::POST,
        format!("{c}/v1/admin/apps/shop/realtime/users/{bob_id}/messages"),
        TOKEN,
        Some(json!({ "data": "hello bob" })),
        200,
    )
    .await;
    let direct = next_frame(&mut socket).await;
    assert_eq!(
        (&direct["type"], &direct["data"]),
        (&json!("direct"), &json!("hello bob"))
    );

    // Carol, on C, is present in the room: bob, watching on B, hears her join, and a page
    // of the room's presence through A lists her.
    let carol = login(&c, "carol").await;
    let (mut carols, _) = tokio_tungstenite::connect_async(format!(
        "{}/v1/apps/shop/realtime",
        c.replace("http", "ws")
    ))
    .await
    .unwrap();
    for message in [
        json!({ "type": "auth", "token": carol["access_token"] }),
        join.clone(),
        json!({ "type": "track", "id": "r", "state": { "here": true } }),
    ] {
        carols.send(send(message)).await.unwrap();
    }
    loop {
        let frame = next_frame(&mut carols).await;
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "tracked" {
            break;
        }
    }
    let carol_member = member_of(&c, &carol["user"]["id"]).await;
    let joined = next_frame(&mut socket).await;
    assert_eq!(joined["type"], "presence_diff", "{joined}");
    assert_eq!(
        (&joined["join"]["member"], &joined["join"]["state"]),
        (&json!(carol_member), &json!({ "here": true }))
    );
    within("carol in the room's presence as A reads it", || async {
        let page = must(
            Method::GET,
            format!("{a}/v1/admin/apps/shop/realtime/channels/room:1/presence"),
            TOKEN,
            None,
            200,
        )
        .await;
        page["count"] == 1 && page["members"][0]["member"] == json!(carol_member)
    })
    .await;

    // A session revoked through A is refused on C (which has its keys cached).
    assert!(titles(&c, &alice_token).await.is_some());
    must(
        Method::DELETE,
        format!("{a}/v1/apps/shop/auth/sessions/current"),
        &alice_token,
        None,
        204,
    )
    .await;
    within("the session revoked on A to be refused on C", || async {
        titles(&c, &alice_token).await.is_none()
    })
    .await;

    // A function deployed through B serves on A; a new version too.
    for version in [1, 2] {
        let source = format!("export default async () => ({{ v: {version} }})");
        must(
            Method::PUT,
            format!("{b}/v1/admin/apps/shop/functions/which"),
            TOKEN,
            Some(json!({ "source": source })),
            201,
        )
        .await;
        within("the version deployed on B to serve on A", || async {
            let (status, answer) = call(
                Method::POST,
                format!("{a}/v1/apps/shop/functions/which"),
                TOKEN,
                Some(json!({})),
            )
            .await;
            status == 200 && answer["v"] == version
        })
        .await;
    }

    // A file uploaded through B is read through C: the nodes share their files' directory.
    must(
        Method::PUT,
        format!("{a}/v1/admin/apps/shop/buckets/notes"),
        TOKEN,
        Some(json!({})),
        200,
    )
    .await;
    let http = reqwest::Client::new();
    let within_b = http
        .post(format!("{b}/v1/apps/shop/files/notes"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("written on B")
        .send()
        .await
        .unwrap();
    assert_eq!(within_b.status(), 201);
    let file: Value = within_b.json().await.unwrap();
    let read = http
        .get(format!(
            "{c}/v1/apps/shop/files/notes/{}",
            file["id"].as_str().unwrap()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.text().await.unwrap(), "written on B");

    // A queue declared through C takes messages on A.
    let (status, refused) = call(
        Method::POST,
        format!("{a}/v1/admin/apps/shop/queues/mail/messages"),
        TOKEN,
        Some(json!({ "messages": [{ "payload": {} }] })),
    )
    .await;
    assert_eq!(
        status, 404,
        "no such queue yet (and A has looked): {refused}"
    );
    let (status, _) = call(
        Method::PUT,
        format!("{c}/v1/admin/apps/shop/queues/mail"),
        TOKEN,
        Some(json!({})),
    )
    .await;
    assert!(status == 200 || status == 201, "{status}");
    within("the queue declared on C to take messages on A", || async {
        let (status, _) = call(
            Method::POST,
            format!("{a}/v1/admin/apps/shop/queues/mail/messages"),
            TOKEN,
            Some(json!({ "messages": [{ "payload": {} }] })),
        )
        .await;
        status == 201 || status == 200
    })
    .await;

    // Logins from one address spread over the three nodes draw on one budget (8 a minute;
    // three were made above): the ninth is refused wherever it goes.
    let mut more = 0;
    for n in 0.. {
        let base = [&a, &b, &c][n % 3];
        let (status, _) = call(
            Method::POST,
            format!("{base}/v1/apps/shop/auth/sessions"),
            "",
            Some(json!({ "provider": "dev", "user": format!("u{n}") })),
        )
        .await;
        if status == 429 {
            break;
        }
        assert_eq!(status, 201);
        more += 1;
        assert!(
            more <= 5,
            "round-robin over the nodes multiplied the budget"
        );
    }
    assert_eq!(more, 5);

    // Node C dies: within its lease, carol leaves the room as bob on B sees it.
    let mut nodes = nodes;
    nodes.pop().unwrap().kill();
    loop {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "presence_diff" {
            assert_eq!(frame["leave"]["member"], json!(carol_member), "{frame}");
            break;
        }
    }
    drop(nodes);
}

/// The member id (in presence) of the one socket `user` has open on `base`.
async fn member_of(base: &str, user: &Value) -> String {
    let page = must(
        Method::GET,
        format!("{base}/v1/admin/apps/shop/realtime/sockets"),
        TOKEN,
        None,
        200,
    )
    .await;
    page["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| &s["user"] == user)
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .expect("the user's socket")
}

#[tokio::test(flavor = "multi_thread")]
async fn no_acknowledged_write_is_lost_when_a_node_is_killed_under_load() {
    let url = cloudlet_store::postgres::testing::TestServer::shared().database();
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = shared_config(dir.path(), "");
    let mut nodes: Vec<Option<Serve>> = (0..3)
        .map(|n| Some(node(dir.path(), n, &url, &config)))
        .collect();
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().base.clone())
        .collect();
    must(
        Method::POST,
        format!("{}/v1/admin/apps", bases[0]),
        TOKEN,
        Some(json!({ "name": "shop" })),
        201,
    )
    .await;
    must(
        Method::PUT,
        format!("{}/v1/admin/apps/shop/collections/todos", bases[1]),
        TOKEN,
        Some(json!({ "fields": [{ "name": "title", "type": "text" }] })),
        201,
    )
    .await;

    // Writers spread round-robin over the three nodes; node 2 is killed partway.
    let http = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for n in 0..300 {
        if n == 150 {
            nodes[2].take().unwrap().kill();
        }
        let base = &bases[n % 3];
        let answer = http
            .post(format!("{base}/v1/apps/shop/collections/todos/records"))
            .bearer_auth(TOKEN)
            .json(&json!({ "title": format!("t{n}") }))
            .send()
            .await;
        if let Ok(response) = answer
            && response.status() == 201
        {
            let record: Value = response.json().await.unwrap();
            acknowledged.push(record["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        acknowledged.len() >= 250,
        "{} acknowledged",
        acknowledged.len()
    );
    let mut stored = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = call(
            Method::GET,
            format!(
                "{}/v1/apps/shop/collections/todos/records?limit=100{after}",
                bases[0]
            ),
            TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            stored.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => after = format!("&cursor={cursor}"),
            None => break,
        }
    }
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged {id} is not stored");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_runs_once_per_tick_while_nodes_are_killed_and_restarted() {
    let url = cloudlet_store::postgres::testing::TestServer::shared().database();
    let dir = tempfile::tempdir().unwrap();
    // A run claimed by a killed node is claimed again 2 s later (two minutes by default).
    let (_, config) = shared_config(dir.path(), "[queues]\ntrigger_visibility_secs = 2\n");
    let mut nodes: Vec<Option<Serve>> = (0..3)
        .map(|n| Some(node(dir.path(), n, &url, &config)))
        .collect();
    let base = |nodes: &[Option<Serve>], n: usize| nodes[n].as_ref().unwrap().base.clone();
    let a = base(&nodes, 0);
    must(
        Method::POST,
        format!("{a}/v1/admin/apps"),
        TOKEN,
        Some(json!({ "name": "timed" })),
        201,
    )
    .await;
    let fields = json!({ "fields": [
        { "name": "second", "type": "integer" },
        { "name": "event", "type": "text" },
        { "name": "attempt", "type": "integer" },
    ] });
    must(
        Method::PUT,
        format!("{a}/v1/admin/apps/timed/collections/ticks"),
        TOKEN,
        Some(fields),
        201,
    )
    .await;
    // Every run takes half a second (so that kills land in runs), then records its tick's
    // second and event id.
    let source = "export default async (e, ctx) => { \
                  await new Promise((done) => setTimeout(done, 500)); \
                  await ctx.db.collection('ticks').add({ second: Date.parse(e.scheduled_at) / 1000, \
                  event: e.event_id, attempt: e.attempt }) }";
    must(
        Method::PUT,
        format!("{a}/v1/admin/apps/timed/functions/tick"),
        TOKEN,
        Some(json!({ "source": source, "schedules": [{ "cron": "* * * * * *" }] })),
        201,
    )
    .await;

    // For about ten seconds, each node in turn is killed and started again: two always run.
    for round in 0..8 {
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let n = round % 3;
        nodes[n].take().unwrap().kill();
        nodes[n] = Some(node(dir.path(), n, &url, &config));
    }
    let reader = base(&nodes, 1);
    let runs = || async {
        must(
            Method::GET,
            format!("{reader}/v1/apps/timed/collections/ticks/records?limit=100"),
            TOKEN,
            None,
            200,
        )
        .await["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["second"].as_i64().unwrap(), r["event"].to_string()))
            .collect::<Vec<(i64, String)>>()
    };
    // Every tick from the first to the latest but one runs (a killed node's run once its claim
    // expires).
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = runs().await;
        let seconds: std::collections::BTreeSet<i64> = seen.iter().map(|(s, _)| *s).collect();
        if let (Some(&first), Some(&last)) = (seconds.first(), seconds.last())
            && last - first >= 10
            && (first..last).all(|s| seconds.contains(&s))
        {
            break seen;
        }
        assert!(Instant::now() < deadline, "a tick did not run: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Each tick was enqueued once: all of a tick's runs (more than one only when a node died
    // after the run wrote and before it was acknowledged) share its event id.
    let mut events = std::collections::BTreeMap::new();
    for (second, event) in &seen {
        let first = events.entry(*second).or_insert(event);
        assert_eq!(*first, event, "tick {second} was enqueued twice: {seen:?}");
    }
    drop(nodes);
}
