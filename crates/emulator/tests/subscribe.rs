//! WeChat subscribe messages against a running emulator, over HTTP: every refusal with WeChat's
//! code, one-time grants used up by sends, long-term ones not, and the inbox that shows what
//! each user received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cloudlet_emulator::EmulatorOptions;
use serde_json::{Value, json};

const APP: &str = "wx-shop";
const TEMPLATE: &str = "order-shipped";

struct Emulator {
    base: String,
    http: reqwest::Client,
}

impl Emulator {
    async fn start(options: EmulatorOptions) -> Emulator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(cloudlet_emulator::serve(
            listener,
            options,
            std::future::pending(),
        ));
        Emulator {
            base,
            http: reqwest::Client::new(),
        }
    }

    /// An emulator with `APP` (and `wx-other`) registered, `TEMPLATE` on `APP`, and alice
    /// logged in to `APP`.
    async fn with_shop(options: EmulatorOptions) -> Emulator {
        let emulator = Emulator::start(options).await;
        for appid in [APP, "wx-other"] {
            let (status, _) = emulator
                .post(
                    "/emulator/apps",
                    json!({ "platform": "wechat", "appid": appid, "secret": "s" }),
                )
                .await;
            assert_eq!(status, 201);
        }
        emulator.template(APP, TEMPLATE).await;
        let (status, _) = emulator
            .post(
                "/emulator/codes",
                json!({ "platform": "wechat", "appid": APP, "user": "alice" }),
            )
            .await;
        assert_eq!(status, 201);
        emulator
    }

    async fn template(&self, appid: &str, template_id: &str) {
        let (status, body) = self
            .post(
                "/emulator/wechat/templates",
                json!({
                    "appid": appid,
                    "template_id": template_id,
                    "keys": { "thing1": "thing", "time2": "time", "number3": "number" },
                }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn token(&self, appid: &str, force_refresh: bool) -> String {
        let (_, body) = self
            .post(
                "/wechat/cgi-bin/stable_token",
                json!({ "grant_type": "client_credential", "appid": appid, "secret": "s", "force_refresh": force_refresh }),
            )
            .await;
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Grants `user` of `APP` subscriptions to `TEMPLATE`; answers the user's openid.
    async fn grant(&self, user: &str, grant: Value) -> String {
        let mut body = json!({ "appid": APP, "user": user, "template_id": TEMPLATE });
        body.as_object_mut()
            .unwrap()
            .extend(grant.as_object().unwrap().clone());
        let (status, answer) = self.post("/emulator/wechat/subscriptions", body).await;
        assert_eq!(status, 201, "{answer}");
        answer["openid"].as_str().unwrap().to_owned()
    }

    async fn send(&self, token: &str, message: Value) -> Value {
        let (status, body) = self
            .post(
                &format!("/wechat/cgi-bin/message/subscribe/send?access_token={token}"),
                message,
            )
            .await;
        assert_eq!(status, 200, "WeChat answers its refusals with HTTP 200");
        body
    }

    async fn inbox(&self, openid: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/emulator/wechat/messages?appid={APP}&openid={openid}"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["messages"].as_array().unwrap().clone()
    }
}

fn message(touser: &str) -> Value {
    json!({
        "touser": touser,
        "template_id": TEMPLATE,
        "page": "pages/order?id=7",
        "data": {
            "thing1": { "value": "Your order shipped" },
            "time2": { "value": "2026-12-02 15:01" },
            "number3": { "value": "7" },
        },
    })
}

fn with(mut message: Value, field: &str, value: Value) -> Value {
    message[field] = value;
    message
}

#[track_caller]
fn refused(answer: &Value, errcode: i64) {
    assert_eq!(answer["errcode"], errcode, "{answer}");
    assert!(answer["errmsg"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn one_time_grants_are_used_up_and_long_term_ones_are_not() {
    let emulator = Emulator::with_shop(EmulatorOptions::default()).await;
    let token = emulator.token(APP, false).await;
    let alice = emulator.grant("alice", json!({ "times": 2 })).await;

    let first = emulator.send(&token, message(&alice)).await;
    assert_eq!(first["errcode"], 0, "{first}");
    assert!(first["msgid"].as_u64().is_some());
    let second = emulator
        .send(
            &token,
            with(
                with(message(&alice), "miniprogram_state", json!("trial")),
                "lang",
                json!("en_US"),
            ),
        )
        .await;
    assert_eq!(second["errcode"], 0, "{second}");
    refused(&emulator.send(&token, message(&alice)).await, 43101);

    let inbox = emulator.inbox(&alice).await;
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0]["msgid"], first["msgid"]);
    assert_eq!(inbox[0]["user"], "alice");
    assert_eq!(inbox[0]["template_id"], TEMPLATE);
    assert_eq!(inbox[0]["page"], "pages/order?id=7");
    assert_eq!(inbox[0]["data"]["thing1"], "Your order shipped");
    assert_eq!(inbox[0]["miniprogram_state"], "formal");
    assert_eq!(inbox[0]["lang"], "zh_CN");
    assert_eq!(inbox[0]["subscription"], "one_time");
    assert_eq!(inbox[1]["miniprogram_state"], "trial");
    assert_eq!(inbox[1]["lang"], "en_US");
    let (_, left) = emulator
        .get(&format!(
            "/emulator/wechat/subscriptions?appid={APP}&openid={alice}"
        ))
        .await;
    assert_eq!(left["subscriptions"][0]["one_time"], 0);

    // Another tap on "allow" gives one more message.
    emulator.grant("alice", json!({})).await;
    assert_eq!(emulator.send(&token, message(&alice)).await["errcode"], 0);
    refused(&emulator.send(&token, message(&alice)).await, 43101);

    // A long-term subscription is not used up; granting by name makes the user known.
    let bob = emulator.grant("bob", json!({ "long_term": true })).await;
    for _ in 0..3 {
        assert_eq!(emulator.send(&token, message(&bob)).await["errcode"], 0);
    }
    let inbox = emulator.inbox(&bob).await;
    assert_eq!(inbox.len(), 3);
    assert_eq!(inbox[2]["subscription"], "long_term");
    assert_eq!(inbox[2]["user"], "bob");

    // A grant by openid, for a user who logged in.
    let (status, _) = emulator
        .post(
            "/emulator/wechat/subscriptions",
            json!({ "appid": APP, "openid": alice, "template_id": TEMPLATE, "times": 1 }),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(emulator.send(&token, message(&alice)).await["errcode"], 0);
    let (_, all) = emulator
        .get(&format!("/emulator/wechat/messages?appid={APP}"))
        .await;
    assert_eq!(all["messages"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn every_refusal_has_wechats_code_and_uses_nothing_up() {
    let emulator = Emulator::with_shop(EmulatorOptions::default()).await;
    emulator.template("wx-other", "other-template").await;
    let (_, other_user) = emulator
        .post(
            "/emulator/wechat/subscriptions",
            json!({ "appid": "wx-other", "user": "carol", "template_id": "other-template" }),
        )
        .await;
    let other_user = other_user["openid"].as_str().unwrap().to_owned();
    let alice = emulator.grant("alice", json!({ "times": 1 })).await;
    let token = emulator.token(APP, false).await;
    let url = format!(
        "{}/wechat/cgi-bin/message/subscribe/send?access_token={token}",
        emulator.base
    );

    // The method and the body's encoding.
    let get: Value = emulator
        .http
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    refused(&get, 43002);
    let form: Value = emulator
        .http
        .post(&url)
        .form(&[("touser", alice.as_str()), ("template_id", TEMPLATE)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    refused(&form, 47001);
    // JSON under another content type is JSON all the same, as on WeChat.
    let plain: Value = emulator
        .http
        .post(&url)
        .header("content-type", "text/plain")
        .body(message(&alice).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain["errcode"], 0, "{plain}");
    emulator.grant("alice", json!({})).await;
    refused(
        &emulator
            .send(&token, with(message(&alice), "touser", json!(42)))
            .await,
        47001,
    );

    // The access token.
    let (_, missing) = emulator
        .post("/wechat/cgi-bin/message/subscribe/send", message(&alice))
        .await;
    refused(&missing, 41001);
    refused(&emulator.send("made-up", message(&alice)).await, 40001);
    let other_token = emulator.token("wx-other", false).await;
    refused(&emulator.send(&other_token, message(&alice)).await, 40003);
    let replaced = emulator.token(APP, false).await;
    let token = emulator.token(APP, true).await;
    refused(&emulator.send(&replaced, message(&alice)).await, 40001);

    // The user.
    refused(
        &emulator
            .send(&token, with(message(&alice), "touser", json!("")))
            .await,
        40003,
    );
    let mut no_touser = message(&alice);
    no_touser.as_object_mut().unwrap().remove("touser");
    refused(&emulator.send(&token, no_touser).await, 40003);
    refused(&emulator.send(&token, message("o-made-up")).await, 40003);
    refused(&emulator.send(&token, message(&other_user)).await, 40003);

    // The template.
    for template in [json!(""), json!("made-up"), json!("other-template")] {
        refused(
            &emulator
                .send(&token, with(message(&alice), "template_id", template))
                .await,
            40037,
        );
    }

    // miniprogram_state and lang.
    refused(
        &emulator
            .send(
                &token,
                with(message(&alice), "miniprogram_state", json!("release")),
            )
            .await,
        40097,
    );
    refused(
        &emulator
            .send(&token, with(message(&alice), "lang", json!("zh-CN")))
            .await,
        40097,
    );

    // The data: the errmsg names the key.
    for (data, problem) in [
        (
            json!({ "thing1": { "value": "x" }, "number3": { "value": "1" } }),
            "data.time2.value is empty",
        ),
        (
            json!({ "thing1": { "value": "x" }, "time2": { "value": "tomorrow" }, "number3": { "value": "1" } }),
            "data.time2.value invalid",
        ),
        (
            json!({ "thing1": { "value": "这是一个超过二十个字的事物描述所以会被拒绝" }, "time2": { "value": "15:01" }, "number3": { "value": "1" } }),
            "data.thing1.value invalid",
        ),
        (
            json!({ "thing1": { "value": "x" }, "time2": { "value": "15:01" }, "number3": { "value": "1" }, "thing4": { "value": "x" } }),
            "data.thing4",
        ),
        (json!("thing1=x"), "data.number3.value is empty"),
    ] {
        let answer = emulator
            .send(&token, with(message(&alice), "data", data))
            .await;
        refused(&answer, 47003);
        assert!(
            answer["errmsg"].as_str().unwrap().contains(problem),
            "{answer}"
        );
    }

    // None of that used alice's grant: it sends once, and only once.
    assert_eq!(emulator.send(&token, message(&alice)).await["errcode"], 0);
    refused(&emulator.send(&token, message(&alice)).await, 43101);
    refused(
        &emulator
            .send(
                &token,
                with(message(&alice), "template_id", json!(TEMPLATE)),
            )
            .await,
        43101,
    );
    assert_eq!(emulator.inbox(&alice).await.len(), 2);

    // A busy WeChat: -1 for the next sends, with nothing used up.
    emulator.grant("alice", json!({})).await;
    let (status, _) = emulator
        .post("/emulator/wechat/busy", json!({ "appid": APP, "times": 2 }))
        .await;
    assert_eq!(status, 200);
    refused(&emulator.send(&token, message(&alice)).await, -1);
    refused(&emulator.send(&token, message(&alice)).await, -1);
    assert_eq!(emulator.send(&token, message(&alice)).await["errcode"], 0);
}

#[tokio::test]
async fn expired_tokens_are_refused_with_42001() {
    let emulator = Emulator::with_shop(EmulatorOptions {
        token_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    let alice = emulator.grant("alice", json!({})).await;
    let token = emulator.token(APP, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    refused(&emulator.send(&token, message(&alice)).await, 42001);
    let fresh = emulator.token(APP, false).await;
    assert_ne!(fresh, token);
    assert_eq!(emulator.send(&fresh, message(&alice)).await["errcode"], 0);
}

#[tokio::test]
async fn every_key_type_has_its_rule() {
    let emulator = Emulator::with_shop(EmulatorOptions::default()).await;
    let types = [
        (
            "thing1",
            "thing",
            "订单已发货",
            "这是一个超过二十个字的事物描述所以会被拒绝",
        ),
        ("number2", "number", "12.50", "12a"),
        ("letter3", "letter", "abc", "ab1"),
        ("symbol4", "symbol", "+-", "++++++"),
        (
            "character_string5",
            "character_string",
            "SRC2024-07",
            "订单号",
        ),
        ("time6", "time", "2026-12-02 15:01", "2026-12-02"),
        ("date7", "date", "2026年12月2日", "2026-12-32"),
        ("amount8", "amount", "¥100.50元", "100.5 dollars"),
        (
            "phone_number9",
            "phone_number",
            "+86-0766-66888866",
            "phone",
        ),
        ("car_number10", "car_number", "粤A8Z888挂", "粤A-8Z888"),
        ("name11", "name", "张三", "R2D2"),
        ("phrase12", "phrase", "配送中", "delivering"),
    ];
    let keys: serde_json::Map<String, Value> = types
        .iter()
        .map(|(key, kind, _, _)| (key.to_string(), json!(kind)))
        .collect();
    let (status, body) = emulator
        .post(
            "/emulator/wechat/templates",
            json!({ "appid": APP, "template_id": "everything", "keys": keys }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (_, granted) = emulator
        .post(
            "/emulator/wechat/subscriptions",
            json!({ "appid": APP, "user": "alice", "template_id": "everything", "long_term": true }),
        )
        .await;
    let alice = granted["openid"].as_str().unwrap();
    let token = emulator.token(APP, false).await;
    let data = |bad: Option<&str>| -> Value {
        let data: serde_json::Map<String, Value> = types
            .iter()
            .map(|(key, _, good, wrong)| {
                let value = if bad == Some(*key) { wrong } else { good };
                (key.to_string(), json!({ "value": value }))
            })
            .collect();
        json!({ "touser": alice, "template_id": "everything", "data": data })
    };
    let sent = emulator.send(&token, data(None)).await;
    assert_eq!(sent["errcode"], 0, "{sent}");
    for (key, kind, _, _) in types {
        let answer = emulator.send(&token, data(Some(key))).await;
        refused(&answer, 47003);
        assert!(
            answer["errmsg"]
                .as_str()
                .unwrap()
                .contains(&format!("data.{key}.value invalid")),
            "{kind}: {answer}"
        );
    }
}

#[tokio::test]
async fn the_control_endpoints_refuse_bad_requests() {
    let emulator = Emulator::with_shop(EmulatorOptions::default()).await;
    let template =
        |appid: &str, keys: Value| json!({ "appid": appid, "template_id": "t", "keys": keys });
    for (body, status, code) in [
        (
            template("wx-none", json!({ "thing1": "thing" })),
            404,
            "app_not_registered",
        ),
        (
            template(APP, json!({ "thing1": "stuff" })),
            400,
            "invalid_body",
        ),
        (
            template(APP, json!({ "enum1": "enum" })),
            400,
            "invalid_body",
        ),
        (template(APP, json!({})), 400, "invalid_body"),
        (json!({ "appid": APP, "keys": {} }), 400, "invalid_body"),
    ] {
        let (got, answer) = emulator.post("/emulator/wechat/templates", body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }

    let grant = |fields: Value| {
        let mut body = json!({ "appid": APP, "template_id": TEMPLATE });
        body.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        body
    };
    for (body, status, code) in [
        (
            grant(json!({ "user": "alice", "template_id": "made-up" })),
            404,
            "template_not_registered",
        ),
        (grant(json!({ "openid": "o-made-up" })), 404, "unknown_user"),
        (
            grant(json!({ "user": "alice", "openid": "o-made-up" })),
            400,
            "invalid_body",
        ),
        (grant(json!({})), 400, "invalid_body"),
        (
            grant(json!({ "user": "alice", "times": 0 })),
            400,
            "invalid_body",
        ),
        (
            grant(json!({ "user": "alice", "appid": "wx-none" })),
            404,
            "app_not_registered",
        ),
    ] {
        let (got, answer) = emulator.post("/emulator/wechat/subscriptions", body).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }

    for (path, status, code) in [
        ("/emulator/wechat/messages", 400, "invalid_query"),
        (
            "/emulator/wechat/messages?appid=wx-none",
            404,
            "app_not_registered",
        ),
        ("/emulator/wechat/subscriptions", 400, "invalid_query"),
    ] {
        let (got, answer) = emulator.get(path).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{answer}"
        );
    }
    let (got, answer) = emulator
        .post(
            "/emulator/wechat/busy",
            json!({ "appid": "wx-none", "times": 1 }),
        )
        .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (404, Some("app_not_registered"))
    );
}
