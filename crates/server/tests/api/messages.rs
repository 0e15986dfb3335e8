//! Subscribe messages end to end: a user reports what they allowed, the admin sends, the
//! dispatcher delivers through the `_messages` queue to the platform emulator over real HTTP,
//! and the emulator's inbox shows what the user received. WeChat's refusals (43101, 47003) and
//! its busy answers are the emulator's, with WeChat's codes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::{Emulator, token};
use crate::support::{Expect, TestApp};

const APPID: &str = "wx-shop";
const TEMPLATE: &str = "TPL_order_shipped";

impl Emulator {
    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/emulator/wechat/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap()
    }

    /// What the app's users have received, oldest first (Alice is the only one who may).
    async fn inbox(&self) -> Vec<Value> {
        let body: Value = self
            .http
            .get(format!("{}/emulator/wechat/messages", self.base))
            .query(&[("appid", APPID)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["messages"].as_array().unwrap().clone()
    }
}

/// A server with app `shop` on the emulator's WeChat, a template with two keys, and Alice
/// logged in with WeChat: her token and user id.
async fn setup() -> (TestApp, Emulator, String, String) {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    let emulator = Emulator::start().await;
    emulator
        .connect(&t, "shop", "wechat", APPID, "shop-secret")
        .await;
    emulator
        .control(
            "templates",
            json!({ "appid": APPID, "template_id": TEMPLATE,
                    "keys": { "thing1": "thing", "time2": "time" } }),
        )
        .await;
    let grant = emulator
        .login_as(&t, "shop", "wechat", APPID, "alice")
        .await;
    let user = grant["user"]["id"].as_str().unwrap().to_owned();
    (t, emulator, token(&grant).to_owned(), user)
}

fn report(t: &TestApp, token: &str, answers: Value) -> reqwest::RequestBuilder {
    t.as_user(Method::POST, "shop", "/messages/subscriptions", token)
        .json(&json!({ "answers": answers }))
}

fn send(t: &TestApp, body: Value) -> reqwest::RequestBuilder {
    t.admin(Method::POST, "/v1/admin/apps/shop/messages")
        .json(&body)
}

fn shipped(to: &str) -> Value {
    json!({
        "to": to,
        "template_id": TEMPLATE,
        "page": "pages/order?id=42",
        "data": { "thing1": "Your order shipped", "time2": { "value": "2026-12-02 15:01" } },
    })
}

async fn remaining(t: &TestApp, token: &str) -> Vec<(String, i64)> {
    let body = t
        .as_user(Method::GET, "shop", "/messages/subscriptions", token)
        .expect(StatusCode::OK)
        .await;
    body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["appid"], APPID);
            (
                g["template_id"].as_str().unwrap().to_owned(),
                g["remaining"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// The `_messages` queue's messages in `state`.
async fn queued(t: &TestApp, state: &str) -> Vec<Value> {
    let body = t
        .admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/queues/_messages/messages?state={state}"),
        )
        .expect(StatusCode::OK)
        .await;
    body["items"].as_array().unwrap().clone()
}

/// Polls `check` until it holds, for up to 15 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn an_allowed_message_is_delivered_once_and_uses_the_grant() {
    let (t, emulator, alice, user) = setup().await;

    // Nothing allowed yet: refused before WeChat is called.
    send(&t, shipped(&user))
        .expect_error(StatusCode::CONFLICT, "no_subscription")
        .await;

    // Alice taps "allow" (WeChat records it; the SDK reports it).
    emulator
        .control(
            "subscriptions",
            json!({ "appid": APPID, "user": "alice", "template_id": TEMPLATE }),
        )
        .await;
    let grants = report(
        &t,
        &alice,
        json!({ TEMPLATE: "accept", "TPL_other": "reject" }),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1);
    assert_eq!(remaining(&t, &alice).await, [(TEMPLATE.to_owned(), 1)]);

    let receipt = send(&t, shipped(&user)).expect(StatusCode::ACCEPTED).await;
    assert!(receipt["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(receipt["duplicate"], false);
    assert_eq!(remaining(&t, &alice).await, [(TEMPLATE.to_owned(), 0)]);

    eventually("the message reaches Alice", || async {
        emulator.inbox().await.len() == 1
    })
    .await;
    let inbox = emulator.inbox().await;
    assert_eq!(inbox[0]["template_id"], TEMPLATE);
    assert_eq!(inbox[0]["page"], "pages/order?id=42");
    assert_eq!(
        inbox[0]["data"],
        json!({ "thing1": "Your order shipped", "time2": "2026-12-02 15:01" })
    );
    eventually("the queue is empty", || async {
        queued(&t, "in_flight").await.is_empty() && queued(&t, "waiting").await.is_empty()
    })
    .await;
    assert!(queued(&t, "dead").await.is_empty());

    // The one grant is used: a second send is refused here.
    send(&t, shipped(&user))
        .expect_error(StatusCode::CONFLICT, "no_subscription")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emulator.inbox().await.len(), 1, "sent once");
    t.stop().await;
}

#[tokio::test]
async fn a_key_sends_once_even_when_the_first_send_used_the_last_grant() {
    let (t, emulator, alice, user) = setup().await;
    emulator
        .control(
            "subscriptions",
            json!({ "appid": APPID, "user": "alice", "template_id": TEMPLATE }),
        )
        .await;
    // WeChat's answer for a template with a voice reminder counts as an "allow".
    report(&t, &alice, json!({ TEMPLATE: "acceptWithAudio" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(remaining(&t, &alice).await, [(TEMPLATE.to_owned(), 1)]);
    let mut keyed = shipped(&user);
    keyed["key"] = json!("order-42-shipped");
    let first = send(&t, keyed.clone()).expect(StatusCode::ACCEPTED).await;
    // A retried trigger sends again with its key: the first message, not no_subscription.
    let again = send(&t, keyed).expect(StatusCode::ACCEPTED).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        remaining(&t, &alice).await,
        [(TEMPLATE.to_owned(), 0)],
        "a duplicate takes no grant"
    );
    eventually("the message reaches Alice", || async {
        emulator.inbox().await.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(emulator.inbox().await.len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn wechats_refusals_go_to_the_dead_letters_with_their_code() {
    let (t, emulator, alice, user) = setup().await;

    // A forged (or stale) "allow": WeChat has nothing for Alice and answers 43101; the ledger
    // then agrees that nothing is left.
    report(&t, &alice, json!({ TEMPLATE: "accept" }))
        .expect(StatusCode::OK)
        .await;
    report(&t, &alice, json!({ TEMPLATE: "accept" }))
        .expect(StatusCode::OK)
        .await;
    send(&t, shipped(&user)).expect(StatusCode::ACCEPTED).await;
    eventually("43101 is a dead letter", || async {
        queued(&t, "dead").await.len() == 1
    })
    .await;
    let dead = queued(&t, "dead").await;
    assert!(
        dead[0]["last_error"]
            .as_str()
            .unwrap()
            .starts_with("wechat 43101"),
        "{dead:?}"
    );
    assert_eq!(dead[0]["attempt"], 1, "not retried");
    eventually("the ledger is cleared", || async {
        remaining(&t, &alice).await == [(TEMPLATE.to_owned(), 0)]
    })
    .await;

    // A message WeChat refuses (a `thing` over 20 characters: 47003) gives its grant back.
    emulator
        .control(
            "subscriptions",
            json!({ "appid": APPID, "user": "alice", "template_id": TEMPLATE }),
        )
        .await;
    report(&t, &alice, json!({ TEMPLATE: "accept" }))
        .expect(StatusCode::OK)
        .await;
    let mut long = shipped(&user);
    long["data"]["thing1"] = json!("a thing far longer than twenty characters");
    send(&t, long).expect(StatusCode::ACCEPTED).await;
    eventually("47003 is a dead letter", || async {
        queued(&t, "dead").await.len() == 2
    })
    .await;
    let dead = queued(&t, "dead").await;
    assert!(
        dead.iter().any(|m| m["last_error"]
            .as_str()
            .unwrap()
            .starts_with("wechat 47003")),
        "{dead:?}"
    );
    eventually("the grant is back", || async {
        remaining(&t, &alice).await == [(TEMPLATE.to_owned(), 1)]
    })
    .await;
    assert!(emulator.inbox().await.is_empty());

    // WeChat busy (-1) is retried with backoff until it passes, with the same id.
    emulator
        .control("busy", json!({ "appid": APPID, "times": 1 }))
        .await;
    let receipt = send(&t, shipped(&user)).expect(StatusCode::ACCEPTED).await;
    eventually("the retry reaches Alice", || async {
        emulator.inbox().await.len() == 1
    })
    .await;
    assert!(queued(&t, "waiting").await.is_empty());
    assert!(
        !queued(&t, "dead")
            .await
            .iter()
            .any(|m| m["id"] == receipt["id"])
    );
    t.stop().await;
}

#[tokio::test]
async fn bad_reports_and_sends_have_their_codes() {
    let (t, emulator, alice, user) = setup().await;
    let invalid = |answers: Value| {
        report(&t, &alice, answers).expect_error(StatusCode::BAD_REQUEST, "invalid_message")
    };
    invalid(json!({})).await;
    invalid(json!({ "a": "accept", "b": "accept", "c": "accept", "d": "accept" })).await;
    invalid(json!({ "bad id": "accept" })).await;
    report(&t, &alice, json!({ TEMPLATE: true }))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    // An answer WeChat may add later counts as no grant; the report still counts.
    let grants = report(&t, &alice, json!({ TEMPLATE: "maybe" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(grants["grants"], json!([]));
    // The route is a user's: no token, or the admin's, is refused.
    t.request(Method::POST, "/v1/apps/shop/messages/subscriptions")
        .json(&json!({ "answers": { TEMPLATE: "accept" } }))
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;
    t.admin(Method::GET, "/v1/apps/shop/messages/subscriptions")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    // A user who never logged in with WeChat has no openid there.
    t.configure("shop", "dev", json!({ "enabled": true })).await;
    let bob = t.dev_login("shop", "bob").await;
    let bob_id = bob["user"]["id"].as_str().unwrap().to_owned();
    report(&t, token(&bob), json!({ TEMPLATE: "accept" }))
        .expect_error(StatusCode::CONFLICT, "no_platform_identity")
        .await;
    send(&t, shipped(&bob_id))
        .expect_error(StatusCode::CONFLICT, "no_platform_identity")
        .await;
    send(&t, shipped("usr_nobody"))
        .expect_error(StatusCode::NOT_FOUND, "user_not_found")
        .await;
    let mut other = shipped(&user);
    other["provider"] = json!("wechat-other");
    send(&t, other)
        .expect_error(StatusCode::FORBIDDEN, "provider_not_enabled")
        .await;
    for (field, value) in [
        ("template_id", json!("has space")),
        ("data", json!({})),
        ("data", json!({ "thing1": true })),
        ("lang", json!("en")),
        ("miniprogram_state", json!("beta")),
        ("page", json!("x".repeat(1025))),
    ] {
        let mut bad = shipped(&user);
        bad[field] = value;
        send(&t, bad)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
            .await;
    }
    let mut unknown = shipped(&user);
    unknown["templateId"] = json!(TEMPLATE);
    send(&t, unknown)
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    // The built-in queue is Cloudlet's: nobody else sends to it, claims from it or deletes it.
    t.admin(
        Method::POST,
        "/v1/admin/apps/shop/queues/_messages/messages",
    )
    .json(&json!({ "messages": [{ "payload": {} }] }))
    .expect_error(StatusCode::NOT_FOUND, "queue_not_found")
    .await;
    t.admin(Method::DELETE, "/v1/admin/apps/shop/queues/_messages")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_queue")
        .await;
    // A non-WeChat provider is the wrong provider for a message.
    let mut password = shipped(&user);
    password["provider"] = json!("password");
    send(&t, password)
        .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
        .await;
    // Nothing of this took a grant or reached WeChat.
    assert!(remaining(&t, &alice).await.is_empty());
    // What a client can make the ledger keep is bounded: 100 templates per user.
    for round in 0..33 {
        let answers: serde_json::Map<String, Value> = (0..3)
            .map(|i| (format!("T{round}_{i}"), json!("accept")))
            .collect();
        report(&t, &alice, Value::Object(answers))
            .expect(StatusCode::OK)
            .await;
    }
    report(&t, &alice, json!({ "T_a": "accept", "T_b": "accept" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_message")
        .await;
    report(&t, &alice, json!({ "T_a": "accept" }))
        .expect(StatusCode::OK)
        .await;
    report(&t, &alice, json!({ "T0_0": "accept", "T_b": "reject" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(remaining(&t, &alice).await.len(), 100);
    let _ = emulator;
    t.stop().await;
}
