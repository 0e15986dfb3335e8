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
