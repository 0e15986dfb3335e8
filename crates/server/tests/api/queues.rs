//! Queues through the admin API: declaring, sending with delays and idempotency keys, claiming
//! with leases, acknowledging, extending, failing into retries and dead letters, replaying and
//! purging, and the codes of every refusal. Consumers that are functions are tested with the
//! worker processes in `crates/cloudlet/tests/functions.rs`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Expect, TestApp};

async fn setup(settings: Value) -> TestApp {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/queues/emails")
        .json(&settings)
        .expect(StatusCode::CREATED)
        .await;
    t
}

fn q(path: &str) -> String {
    format!("/v1/admin/apps/shop/queues/emails{path}")
}

async fn send(t: &TestApp, messages: Value) -> Value {
    t.admin(Method::POST, &q("/messages"))
        .json(&json!({ "messages": messages }))
        .expect(StatusCode::CREATED)
        .await["sent"]
        .clone()
}

async fn claim(t: &TestApp, max: usize, visibility: Option<u64>) -> Vec<Value> {
    let mut body = json!({ "max": max });
    if let Some(secs) = visibility {
        body["visibility_timeout_secs"] = json!(secs);
    }
    t.admin(Method::POST, &q("/claims"))
        .json(&body)
        .expect(StatusCode::OK)
        .await["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

fn settle(t: &TestApp, delivery: &Value, action: &str) -> reqwest::RequestBuilder {
    let id = delivery["id"].as_str().unwrap();
    t.admin(Method::POST, &q(&format!("/messages/{id}/{action}")))
}

async fn counts(t: &TestApp) -> Value {
    let queue = t.admin(Method::GET, &q("")).expect(StatusCode::OK).await;
    json!([
        queue["ready"],
        queue["delayed"],
        queue["in_flight"],
        queue["dead"]
    ])
}

#[tokio::test]
async fn queues_are_declared_listed_changed_and_deleted() {
    let t = setup(json!({})).await;
    let shown = t.admin(Method::GET, &q("")).expect(StatusCode::OK).await;
    assert_eq!(shown["settings"]["visibility_timeout_secs"], 30);
    assert_eq!(shown["settings"]["max_attempts"], 5);
    let changed = t
        .admin(Method::PUT, &q(""))
        .json(&json!({ "max_attempts": 2, "visibility_timeout_secs": 5 }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(changed["settings"]["max_attempts"], 2);
    let list = t
        .admin(Method::GET, "/v1/admin/apps/shop/queues")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    for (body, what) in [
        (json!({ "max_attempts": 0 }), "no attempts"),
        (json!({ "visibility_timeout_secs": 0 }), "no visibility"),
        (
            json!({ "backoff_secs": 60, "max_backoff_secs": 1 }),
            "a cap under the base",
        ),
        (json!({ "color": "red" }), "an unknown setting"),
    ] {
        let response = t
            .admin(Method::PUT, &q(""))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status() == StatusCode::BAD_REQUEST
                || response.status() == StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            response.status()
        );
    }
    t.admin(Method::PUT, "/v1/admin/apps/shop/queues/Bad%20Name")
        .json(&json!({}))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_queue")
        .await;
    t.admin(Method::GET, "/v1/admin/apps/shop/queues/nope")
        .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
        .await;

    send(&t, json!([{ "payload": 1 }])).await;
    t.admin(Method::DELETE, &q(""))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::NO_CONTENT))
        .unwrap();
    t.admin(Method::POST, &q("/messages"))
        .json(&json!({ "messages": [{ "payload": 1 }] }))
        .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
        .await;
    // Declared again, it starts empty: the old messages went with the queue.
    t.admin(Method::PUT, &q(""))
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(counts(&t).await, json!([0, 0, 0, 0]));
    t.stop().await;
}

#[tokio::test]
async fn sends_are_checked_delayed_and_deduplicated_by_key() {
    let t = setup(json!({ "dedup_window_secs": 60 })).await;
    let sent = send(
        &t,
        json!([
            { "payload": { "to": "a@example.com" } },
            { "payload": "later", "delay_secs": 3600 },
            { "payload": "once", "key": "order-7" }
        ]),
    )
    .await;
    assert_eq!(sent.as_array().unwrap().len(), 3);
    assert!(
        sent.as_array()
            .unwrap()
            .iter()
            .all(|s| s["duplicate"] == false)
    );
    let again = send(&t, json!([{ "payload": "twice", "key": "order-7" }])).await;
    assert_eq!(again[0]["duplicate"], true);
    assert_eq!(again[0]["id"], sent[2]["id"], "the first message's id");
    assert_eq!(counts(&t).await, json!([2, 1, 0, 0]));

    // Only the due ones are delivered; the delayed one waits.
    let got = claim(&t, 10, None).await;
    let payloads: Vec<&Value> = got.iter().map(|d| &d["payload"]).collect();
    assert_eq!(
        payloads,
        [&json!({ "to": "a@example.com" }), &json!("once")]
    );
    assert!(got.iter().all(|d| d["attempt"] == 1));

    for (messages, status, code) in [
        (json!([]), StatusCode::BAD_REQUEST, "invalid_message"),
        (
            json!([{ "payload": 1, "delay_secs": -1 }]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([{ "payload": 1, "delay_secs": 1e12 }]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([{ "payload": 1, "key": "" }]),
            StatusCode::BAD_REQUEST,
            "invalid_message",
        ),
        (
            json!([{ "payload": "x".repeat(300 * 1024) }]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
        ),
    ] {
        t.admin(Method::POST, &q("/messages"))
            .json(&json!({ "messages": messages }))
            .expect_error(status, code)
            .await;
    }
    let too_many: Vec<Value> = (0..101).map(|i| json!({ "payload": i })).collect();
    t.admin(Method::POST, &q("/messages"))
        .json(&json!({ "messages": too_many }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
        .await;
    // Nothing refused was sent.
    assert_eq!(counts(&t).await, json!([0, 1, 2, 0]));
    t.stop().await;
}

#[tokio::test]
async fn leases_settle_deliveries_once_and_stale_ones_are_refused() {
    let t =
        setup(json!({ "visibility_timeout_secs": 1, "backoff_secs": 0, "max_backoff_secs": 0 }))
            .await;
    send(&t, json!([{ "payload": "a" }])).await;
    let first = claim(&t, 1, None).await.remove(0);
    assert_eq!(first["attempt"], 1);
    assert!(claim(&t, 1, None).await.is_empty(), "hidden while claimed");

    // The claim expires: the message is delivered again, attempt 2, with a new lease.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(d) = claim(&t, 1, Some(30)).await.pop() {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the expired claim never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["lease"], first["lease"]);
    for action in ["ack", "fail"] {
        settle(&t, &first, action)
            .json(&json!({ "lease": first["lease"] }))
            .expect_error(StatusCode::CONFLICT, "stale_lease")
            .await;
    }
    settle(&t, &first, "extend")
        .json(&json!({ "lease": first["lease"], "visibility_timeout_secs": 60 }))
        .expect_error(StatusCode::CONFLICT, "stale_lease")
        .await;
    settle(&t, &second, "extend")
        .json(&json!({ "lease": second["lease"], "visibility_timeout_secs": 60 }))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::NO_CONTENT))
        .unwrap();
    settle(&t, &second, "ack")
        .json(&json!({ "lease": second["lease"] }))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::NO_CONTENT))
        .unwrap();
    // Acknowledged twice: the second is stale, and nothing comes back.
    settle(&t, &second, "ack")
        .json(&json!({ "lease": second["lease"] }))
        .expect_error(StatusCode::CONFLICT, "stale_lease")
        .await;
    assert_eq!(counts(&t).await, json!([0, 0, 0, 0]));
    t.admin(Method::POST, &q("/messages/not%20an%20id/ack"))
        .json(&json!({ "lease": "x" }))
        .expect_error(StatusCode::CONFLICT, "stale_lease")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn a_claimed_batch_is_acknowledged_in_one_call_and_stale_leases_read_false() {
    let t = setup(json!({})).await;
    send(
        &t,
        json!([{ "payload": "a" }, { "payload": "b" }, { "payload": "c" }]),
    )
    .await;
    let batch = claim(&t, 3, None).await;
    assert_eq!(batch.len(), 3);
    let acks = |leases: &[(&Value, Value)]| json!({ "acks": leases.iter().map(|(d, lease)| json!({ "id": d["id"], "lease": lease })).collect::<Vec<_>>() });
    let answer = t
        .admin(Method::POST, &q("/acks"))
        .json(&acks(&[
            (&batch[0], batch[0]["lease"].clone()),
            (&batch[1], json!("not-its-lease")),
            (&batch[2], batch[2]["lease"].clone()),
            (&batch[2], json!("bad lease!")),
        ]))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer["acked"], json!([true, false, true, false]));
    // Only b is left, still claimed; acknowledging a again is stale.
    assert_eq!(counts(&t).await, json!([0, 0, 1, 0]));
    let again = t
        .admin(Method::POST, &q("/acks"))
        .json(&acks(&[(&batch[0], batch[0]["lease"].clone())]))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(again["acked"], json!([false]));
    for bad in [
        json!({ "acks": [] }),
        acks(&vec![(&batch[1], json!("l")); 101]),
    ] {
        t.admin(Method::POST, &q("/acks"))
            .json(&bad)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
            .await;
    }
    t.admin(Method::POST, "/v1/admin/apps/shop/queues/nope!/acks")
        .json(&acks(&[(&batch[1], batch[1]["lease"].clone())]))
        .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn failures_retry_then_die_once_and_replay_brings_them_back() {
    let t = setup(json!({ "max_attempts": 2, "backoff_secs": 0, "max_backoff_secs": 0 })).await;
    send(&t, json!([{ "payload": "poison" }, { "payload": "fine" }])).await;
    let mut deaths = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deaths == 0 {
        assert!(Instant::now() < deadline, "the poison message never died");
        for delivery in claim(&t, 10, None).await {
            if delivery["payload"] == "fine" {
                settle(&t, &delivery, "ack")
                    .json(&json!({ "lease": delivery["lease"] }))
                    .send()
                    .await
                    .unwrap();
                continue;
            }
            let answer = settle(&t, &delivery, "fail")
                .json(&json!({ "lease": delivery["lease"], "attempt": delivery["attempt"], "error": "boom" }))
                .expect(StatusCode::OK)
                .await;
            let expected = if delivery["attempt"] == 2 {
                "dead"
            } else {
                "retrying"
            };
            assert_eq!(answer["state"], expected, "{delivery}");
            if answer["state"] == "dead" {
                deaths += 1;
            }
        }
    }
    assert_eq!(counts(&t).await, json!([0, 0, 0, 1]));
    let dead = t
        .admin(Method::GET, &q("/messages?state=dead"))
        .expect(StatusCode::OK)
        .await;
    let dead = &dead["items"][0];
    assert_eq!(dead["payload"], "poison");
    assert_eq!(dead["last_error"], "boom");
    assert_eq!(dead["attempt"], 2);

    let replayed = t
        .admin(Method::POST, &q("/replay"))
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(replayed["replayed"], 1);
    let again = claim(&t, 1, None).await;
    assert_eq!(again[0]["payload"], "poison");
    assert_eq!(again[0]["attempt"], 1, "replay resets the attempts");

    send(&t, json!([{ "payload": 1 }, { "payload": 2 }])).await;
    let purged = t
        .admin(Method::DELETE, &q("/messages?state=waiting"))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(purged["purged"], 2);
    assert_eq!(counts(&t).await, json!([0, 0, 1, 0]));
    t.admin(Method::GET, &q("/messages?state=sleeping"))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn the_triggers_queue_and_malformed_tokens_are_refused_with_their_codes() {
    let t = setup(json!({ "retention_secs": 3600 })).await;
    t.admin(Method::DELETE, "/v1/admin/apps/shop/queues/_triggers")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_queue")
        .await;
    t.admin(
        Method::POST,
        "/v1/admin/apps/shop/queues/_triggers/messages",
    )
    .json(&json!({ "messages": [{ "payload": 1 }] }))
    .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
    .await;
    t.admin(Method::POST, "/v1/admin/apps/shop/queues/_triggers/claims")
        .json(&json!({}))
        .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
        .await;
    // Looked at, it is there (and empty).
    let empty = t
        .admin(
            Method::GET,
            "/v1/admin/apps/shop/queues/_triggers/messages?state=dead",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(empty["items"], json!([]));

    send(&t, json!([{ "payload": "a" }])).await;
    let delivery = claim(&t, 1, None).await.remove(0);
    for lease in ["lease with spaces", "\u{0}", &"x".repeat(65)] {
        settle(&t, &delivery, "ack")
            .json(&json!({ "lease": lease }))
            .expect_error(StatusCode::CONFLICT, "stale_lease")
            .await;
    }
    t.admin(Method::POST, &q("/replay"))
        .json(&json!({ "ids": ["a b"] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
        .await;
    t.admin(Method::GET, &q("/messages?after=%00"))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
        .await;
    // Delayed past the queue's retention, it would be swept unseen.
    t.admin(Method::POST, &q("/messages"))
        .json(&json!({ "messages": [{ "payload": 1, "delay_secs": 7200 }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
        .await;
    // The delivery is still the consumer's to settle.
    settle(&t, &delivery, "ack")
        .json(&json!({ "lease": delivery["lease"] }))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::NO_CONTENT))
        .unwrap();
    t.stop().await;
}

/// A send with an app key that held before is not looked up first: the send checks it (on
/// PostgreSQL in its own transaction when it hands messages to a consumer, here with none
/// before it), and answers nothing but its success before the key is known to hold. So a key
/// rotated away, or a deleted app's with its name taken again, sends nothing, and learns from
/// its answers no more than that it is refused, whatever it sends where.
#[tokio::test]
async fn a_key_that_no_longer_holds_sends_nothing_and_learns_nothing() {
    let t = TestApp::start().await;
    let mut key = t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/queues/emails")
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    let send_as = |key: &str, path: &str, body: &str| {
        t.request(Method::POST, &format!("/v1/admin/apps/shop/queues/{path}"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let rotate = || async {
        t.admin(Method::POST, "/v1/admin/apps/shop/keys/rotate")
            .expect(StatusCode::OK)
            .await["secret_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let one = r#"{"messages": [{"payload": 1}]}"#;
    // Looked up the first time, taken on trust after.
    send_as(&key, "emails/messages", one)
        .expect(StatusCode::CREATED)
        .await;
    let cases = [
        ("emails/messages", one),
        ("nope/messages", one),
        ("_triggers/messages", one),
        ("%FF/messages", one),
        ("emails/messages", r#"{"messages": 5}"#),
        ("emails/messages", "not json"),
        (
            "emails/messages",
            r#"{"messages": [{"payload": 1, "delay_secs": -1}]}"#,
        ),
    ];
    for (path, body) in cases {
        let next = rotate().await;
        send_as(&key, path, body)
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
            .await;
        key = next;
        // The new key sends (and so is taken on trust the next time).
        send_as(&key, "emails/messages", one)
            .expect(StatusCode::CREATED)
            .await;
    }
    assert_eq!(counts(&t).await, json!([1 + cases.len(), 0, 0, 0]));
    // A key that holds is told what is wrong.
    send_as(&key, "nope/messages", one)
        .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
        .await;
    send_as(&key, "emails/messages", r#"{"messages": 5}"#)
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    // The app deleted and its name taken again: the old app's key opens nothing of the new.
    t.admin(Method::DELETE, "/v1/admin/apps/shop")
        .send()
        .await
        .map(|r| assert_eq!(r.status(), StatusCode::NO_CONTENT))
        .unwrap();
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/queues/emails")
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    send_as(&key, "emails/messages", one)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    assert_eq!(counts(&t).await, json!([0, 0, 0, 0]));
    t.stop().await;
}

/// A page of messages ends at 8 MiB of payloads (a thousand of 256 KiB would be 256 MiB, and
/// many times that as JSON values), and the next page goes on from it; payloads come back as
/// they were sent.
#[tokio::test]
async fn a_page_of_large_messages_ends_at_its_bytes_and_the_next_goes_on() {
    let t = setup(json!({})).await;
    let big = "x".repeat(250_000);
    for round in 0..10 {
        let messages: Vec<Value> = (0..4)
            .map(|i| json!({ "payload": { "n": round * 4 + i, "text": big } }))
            .collect();
        send(&t, json!(messages)).await;
    }
    let page = |after: Option<String>| {
        let after = after.map(|a| format!("&after={a}")).unwrap_or_default();
        t.admin(Method::GET, &q(&format!("/messages?limit=1000{after}")))
            .expect(StatusCode::OK)
    };
    let first = page(None).await["items"].as_array().unwrap().clone();
    let bytes: usize = first.iter().map(|m| m["payload"].to_string().len()).sum();
    assert!(
        (30..40).contains(&first.len()) && bytes < (8 << 20) + 300_000,
        "{} messages, {bytes} bytes",
        first.len()
    );
    let last = first.last().unwrap()["id"].as_str().unwrap().to_owned();
    let rest = page(Some(last)).await["items"].as_array().unwrap().clone();
    // Pages go by id: every message once, none lost at the cut.
    let mut numbers: Vec<i64> = first
        .iter()
        .chain(&rest)
        .map(|m| m["payload"]["n"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..40).collect::<Vec<_>>());
    assert!(
        first
            .iter()
            .chain(&rest)
            .all(|m| m["payload"]["text"] == big)
    );
    let delivered = claim(&t, 1, None).await;
    assert_eq!(delivered[0]["payload"]["text"], big);
    t.stop().await;
}
