//! What `kill -9` may not lose: a data trigger whose write was acknowledged runs after the
//! server comes back, even when the server died before or while running it, and every run of
//! it sees the same event id. The server is a child process of the real binary, killed with
//! SIGKILL; trigger deliveries are retried after `queues.trigger_visibility_secs`, scaled down
//! here to one second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Serve, TOKEN, call};
use reqwest::Method;
use serde_json::{Value, json};

async fn audit_notes(base: &str) -> Vec<String> {
    let (status, page) = call(
        Method::GET,
        format!("{base}/v1/apps/shop/collections/audit/records?limit=100"),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["note"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_of_an_acknowledged_write_runs_after_a_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("cloudlet.toml");
    std::fs::write(&config, "[queues]\ntrigger_visibility_secs = 1\n").unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = Serve::start_with(&data, None, &args);
    let base = server.base.clone();
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/admin/apps"),
        TOKEN,
        Some(json!({ "name": "shop" })),
    )
    .await;
    assert_eq!(status, 201);
    for (name, field) in [("todos", "title"), ("audit", "note")] {
        let (status, body) = call(
            Method::PUT,
            format!("{base}/v1/admin/apps/shop/collections/{name}"),
            TOKEN,
            Some(json!({ "fields": [{ "name": field, "type": "text" }] })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    // Slow on purpose: the kill lands while it waits, before it writes.
    let trigger = json!({
        "source": "export default async (e, ctx) => { \
            await new Promise((done) => setTimeout(done, 300)); \
            await ctx.db.collection('audit').add({ note: `${e.event_id} ${e.operation} ${e.new.title}` }); }",
        "triggers": [{ "collection": "todos", "on": ["create"] }]
    });
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/functions/audit"),
        TOKEN,
        Some(trigger),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let mut acknowledged = Vec::new();
    for title in ["milk", "bread", "eggs"] {
        let (status, body) = call(
            Method::POST,
            format!("{base}/v1/apps/shop/collections/todos/records"),
            TOKEN,
            Some(json!({ "title": title })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        acknowledged.push(title);
    }
    server.kill();

    // Back up: every acknowledged write's trigger runs, once or more, each run with its
    // event's id.
    let server = Serve::start_with(&data, None, &args);
    let deadline = Instant::now() + Duration::from_secs(30);
    let notes = loop {
        let notes = audit_notes(&server.base).await;
        let done = acknowledged.iter().all(|title| {
            notes
                .iter()
                .any(|n| n.ends_with(&format!("create {title}")))
        });
        if done {
            break notes;
        }
        assert!(Instant::now() < deadline, "triggers lost: {notes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids: Vec<(&str, &str)> = notes
        .iter()
        .map(|n| {
            let (id, rest) = n.split_once(' ').unwrap();
            (rest, id)
        })
        .collect();
    ids.sort();
    ids.dedup();
    let titles: Vec<&str> = ids.iter().map(|(rest, _)| *rest).collect();
    let mut distinct = titles.clone();
    distinct.dedup();
    assert_eq!(
        titles, distinct,
        "a redelivery carries the same event id: {ids:?}"
    );
    let (status, queue) = call(
        Method::GET,
        format!(
            "{}/v1/admin/apps/shop/queues/_triggers/messages?state=dead",
            server.base
        ),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{queue}");
    assert_eq!(queue["items"], Value::Array(Vec::new()), "no delivery died");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_message_and_redelivers_in_flight_ones() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&data, None);
    let base = server.base.clone();
    let (status, _) = call(
        Method::POST,
        format!("{base}/v1/admin/apps"),
        TOKEN,
        Some(json!({ "name": "shop" })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/collections/done"),
        TOKEN,
        Some(json!({ "fields": [
            { "name": "msg", "type": "text" },
            { "name": "attempt", "type": "integer" },
            { "name": "n", "type": "integer" }
        ] })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/queues/work"),
        TOKEN,
        Some(json!({ "visibility_timeout_secs": 2, "backoff_secs": 0, "max_backoff_secs": 0, "max_attempts": 20 })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let consumer = json!({
        "source": "export default async (event, ctx) => { \
            for (const m of event.messages) \
              await ctx.admin.db.collection('done').add({ msg: m.id, attempt: m.attempt, n: m.payload.n }); }",
        "triggers": [{ "queue": "work", "batch": 4, "concurrency": 2 }],
        // Its claims hide for its time plus 5 s: short, so the test waits little.
        "timeout_ms": 1000
    });
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/functions/consume"),
        TOKEN,
        Some(consumer),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    // Four senders send until the kill; what was answered 201 was acknowledged.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, String)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4i64 {
        let (base, acknowledged, stop) = (base.clone(), acknowledged.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = sender * 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let sent = http
                    .post(format!("{base}/v1/admin/apps/shop/queues/work/messages"))
                    .bearer_auth(TOKEN)
                    .json(&json!({ "messages": [{ "payload": { "n": n } }] }))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(response) = sent else { break };
                if response.status() != 201 {
                    break;
                }
                let Ok(body) = response.json::<Value>().await else {
                    break;
                };
                let id = body["sent"][0]["id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push((n, id));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "the load was too light: {}",
        acknowledged.len()
    );

    // Back up: every acknowledged message is consumed, under the id it was sent with; one
    // consumed twice was in flight at the kill, and its second delivery has a higher attempt.
    let server = Serve::start(&data, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let mut done: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/v1/apps/shop/collections/done/records?limit=500",
                server.base
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = call(Method::GET, url, TOKEN, None).await;
            assert_eq!(status, 200, "{page}");
            done.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let seen: std::collections::HashSet<i64> =
            done.iter().map(|r| r["n"].as_i64().unwrap()).collect();
        if acknowledged.iter().all(|(n, _)| seen.contains(n)) {
            break done;
        }
        let missing = acknowledged
            .iter()
            .filter(|(n, _)| !seen.contains(n))
            .count();
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged messages lost"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: std::collections::HashMap<i64, &str> = acknowledged
        .iter()
        .map(|(n, id)| (*n, id.as_str()))
        .collect();
    let mut by_n: std::collections::HashMap<i64, Vec<(String, i64)>> = Default::default();
    for record in &done {
        by_n.entry(record["n"].as_i64().unwrap())
            .or_default()
            .push((
                record["msg"].as_str().unwrap().to_owned(),
                record["attempt"].as_i64().unwrap(),
            ));
    }
    for (n, runs) in &by_n {
        if let Some(id) = ids.get(n) {
            assert!(
                runs.iter().all(|(msg, _)| msg == id),
                "message {n}: {runs:?} is not {id}"
            );
        }
        let mut attempts: Vec<i64> = runs.iter().map(|(_, a)| *a).collect();
        attempts.sort();
        let mut distinct = attempts.clone();
        distinct.dedup();
        assert_eq!(
            attempts, distinct,
            "message {n} ran twice at one attempt: {runs:?}"
        );
    }
    server.stop();
}
