//! Payments end to end, over real HTTP: the merchant configured, orders placed with the
//! emulator's WeChat Pay, its signed and encrypted notifications (genuine, repeated, dropped
//! and forged with its own key) sent to the server's notify route, reconciliation by query,
//! refunds, closing, and the routes' refusals. Check schedules are scaled down through the
//! server's `[payments]` settings and the emulator's retry schedule.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::{Emulator, openssl_key_pair, token};
use crate::support::{Expect, NoContent, TestApp};

const APPID: &str = "wx-shop";
const MCHID: &str = "1900000109";
const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";

struct Shop {
    t: TestApp,
    emulator: Emulator,
    alice: String,
    alice_id: String,
}

impl Emulator {
    async fn pay_control(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/emulator/wechatpay/{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn sent_notifications(&self) -> Vec<Value> {
        let body: Value = self
            .http
            .get(format!("{}/emulator/wechatpay/notifications", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["items"].as_array().unwrap().clone()
    }
}

/// A server whose checks run within a second or two, app `shop` with WeChat login and WeChat
/// Pay on the emulator, and Alice logged in.
async fn shop() -> Shop {
    shop_with(|_| {}).await
}

/// A server whose payment checks run a second apart, with app `shop`, and an emulator that
/// retries notifications every 200 ms.
async fn fast_checks(change: impl FnOnce(&mut cloudlet_server::Config)) -> (TestApp, Emulator) {
    let t = TestApp::builder()
        .config(|c| {
            c.payments.check_delay_secs = 1;
            c.payments.check_backoff_secs = 1;
            c.payments.check_max_backoff_secs = 1;
            change(c);
        })
        .start()
        .await;
    t.create_app("shop").await;
    let emulator = Emulator::start_with(cloudlet_emulator::EmulatorOptions {
        pay_notify_retries: vec![Duration::from_millis(200); 5],
        ..cloudlet_emulator::EmulatorOptions::default()
    })
    .await;
    (t, emulator)
}

async fn shop_with(change: impl FnOnce(&mut cloudlet_server::Config)) -> Shop {
    let (t, emulator) = fast_checks(change).await;
    emulator
        .connect(&t, "shop", "wechat", APPID, "shop-secret")
        .await;
    let (private_key, public_key) = openssl_key_pair();
    let (status, platform) = emulator
        .pay_control(
            "merchants",
            json!({ "mchid": MCHID, "serial_no": SERIAL, "api_v3_key": API_V3_KEY,
                    "public_key": public_key }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{platform}");
    let view = t
        .admin(Method::PUT, "/v1/admin/apps/shop/pay/merchants/wechat")
        .json(&json!({
            "mchid": MCHID, "serial_no": SERIAL, "private_key": private_key,
            "api_v3_key": API_V3_KEY,
            "platform_keys": [{ "serial": platform["public_key_id"], "public_key": platform["public_key"] }],
            "base_url": format!("{}/wechatpay", emulator.base),
        }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(view["mchid"], MCHID);
    let grant = emulator
        .login_as(&t, "shop", "wechat", APPID, "alice")
        .await;
    Shop {
        alice: token(&grant).to_owned(),
        alice_id: grant["user"]["id"].as_str().unwrap().to_owned(),
        t,
        emulator,
    }
}

impl Shop {
    async fn order(&self, amount_fen: i64, key: Option<&str>) -> Value {
        self.t
            .admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
            .json(
                &json!({ "amount_fen": amount_fen, "description": "A pot of tea",
                           "user": self.alice_id, "key": key, "metadata": { "sku": "tea-1" } }),
            )
            .expect(StatusCode::CREATED)
            .await
    }

    async fn detail(&self, id: &str) -> Value {
        self.t
            .admin(Method::GET, &format!("/v1/admin/apps/shop/pay/orders/{id}"))
            .expect(StatusCode::OK)
            .await
    }

    async fn pay(&self, order: &Value, extra: Value) {
        let mut body = json!({ "mchid": MCHID, "out_trade_no": order["out_trade_no"] });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = self.emulator.pay_control("pay", body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }

    /// Posts a notification as the platform would: its body and its signature headers.
    async fn deliver(&self, body: &str, headers: &Value) -> reqwest::Response {
        let mut request = self
            .t
            .request(Method::POST, "/v1/apps/shop/pay/wechat/notify")
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers.as_object().unwrap() {
            request = request.header(name.as_str(), value.as_str().unwrap());
        }
        request.send().await.unwrap()
    }

    async fn forge(&self, asked: Value) -> (String, Value) {
        let (status, forged) = self.emulator.pay_control("forge", asked).await;
        assert_eq!(status, StatusCode::OK, "{forged}");
        (
            forged["body"].as_str().unwrap().to_owned(),
            forged["headers"].clone(),
        )
    }
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

async fn state_of(s: &Shop, id: &str) -> String {
    s.detail(id).await["state"].as_str().unwrap().to_owned()
}

/// The China-time day (`YYYY-MM-DD`) of an RFC 3339 time.
fn china_day(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap())
        .date()
        .to_string()
}

/// A reconciliation report's listed differences as (kind, refund or order number), sorted.
fn listed(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["out_refund_no"]
                    .as_str()
                    .or(d["out_trade_no"].as_str())
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// A transaction resource as WeChat Pay's notification carries it, for `order`.
fn transaction(order: &Value, total: i64) -> Value {
    json!({
        "appid": APPID, "mchid": MCHID, "out_trade_no": order["out_trade_no"],
        "transaction_id": "4200000000000000000000000001", "trade_type": "JSAPI",
        "trade_state": "SUCCESS", "success_time": "2026-12-03T10:00:00+08:00",
        "payer": { "openid": "o-alice" }, "amount": { "total": total, "payer_total": total, "currency": "CNY" },
    })
}

#[tokio::test]
async fn an_order_is_paid_once_whatever_the_callbacks_repeat() {
    let s = shop().await;
    let order = s.order(100, Some("tap-1")).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(order["state"], "created");
    assert_eq!(order["amount_fen"], 100);
    let payment = &order["payment"];
    assert!(
        payment["package"]
            .as_str()
            .unwrap()
            .starts_with("prepay_id=wx"),
        "{payment}"
    );
    assert_eq!(payment["signType"], "RSA");
    assert!(payment["paySign"].as_str().unwrap().len() > 300);

    // A double tap: the same order, with fresh parameters; the key for another amount: refused.
    let again = s.order(100, Some("tap-1")).await;
    assert_eq!(again["id"], order["id"]);
    assert_eq!(again["payment"]["package"], payment["package"]);
    s.t.admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
        .json(&json!({ "amount_fen": 999, "description": "x", "user": s.alice_id, "key": "tap-1" }))
        .expect_error(StatusCode::CONFLICT, "order_key_reused")
        .await;

    // Paid, and the notification sent four times at once, then retried if refused.
    s.pay(&order, json!({ "duplicates": 3 })).await;
    eventually("the order is paid", || async {
        state_of(&s, id).await == "paid"
    })
    .await;
    eventually("every copy was answered", || async {
        let sent = s.emulator.sent_notifications().await;
        sent.len() >= 4 && sent.iter().all(|n| n["status"] == 204)
    })
    .await;
    let detail = s.detail(id).await;
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{detail}");
    assert_eq!(
        (&events[0]["name"], &events[0]["source"]),
        (&json!("paid"), &json!("notify"))
    );
    assert!(
        detail["transaction_id"]
            .as_str()
            .unwrap()
            .starts_with("42000")
    );
    assert_eq!(detail["metadata"]["sku"], "tea-1");

    // The genuine notification replayed within its 300 s: taken, and changes nothing.
    let genuine = s.emulator.sent_notifications().await[0].clone();
    let answer = s
        .deliver(genuine["body"].as_str().unwrap(), &genuine["headers"])
        .await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.detail(id).await["events"].as_array().unwrap().len(), 1);
    // An order paid answers no payment parameters any more.
    let paid = s.order(100, Some("tap-1")).await;
    assert_eq!(
        (&paid["state"], paid.get("payment")),
        (&json!("paid"), None)
    );

    // Its owner sees it; nobody else does.
    let mine =
        s.t.as_user(Method::GET, "shop", &format!("/pay/orders/{id}"), &s.alice)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(mine["state"], "paid");
    let bob = s
        .emulator
        .login_as(&s.t, "shop", "wechat", APPID, "bob")
        .await;
    s.t.as_user(
        Method::GET,
        "shop",
        &format!("/pay/orders/{id}"),
        token(&bob),
    )
    .expect_error(StatusCode::NOT_FOUND, "order_not_found")
    .await;
}

#[tokio::test]
async fn forged_and_mismatched_notifications_change_nothing() {
    let s = shop().await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap();
    let good = transaction(&order, 100);

    let refused = |why: &'static str, status: StatusCode, code: &'static str| (why, status, code);
    let mut cases = Vec::new();
    // Signed with the platform's own key, yet not to be believed.
    for (asked, case) in [
        (
            json!({ "probe": true }),
            refused(
                "a signature probe",
                StatusCode::UNAUTHORIZED,
                "notification_unverified",
            ),
        ),
        (
            json!({ "time_offset_secs": -301 }),
            refused(
                "a stale one",
                StatusCode::UNAUTHORIZED,
                "notification_unverified",
            ),
        ),
        (
            json!({ "time_offset_secs": 400 }),
            refused(
                "one from the future",
                StatusCode::UNAUTHORIZED,
                "notification_unverified",
            ),
        ),
        (
            json!({ "flip_tag": true }),
            refused(
                "a flipped GCM tag",
                StatusCode::UNAUTHORIZED,
                "notification_unverified",
            ),
        ),
    ] {
        let mut asked = asked;
        asked["mchid"] = json!(MCHID);
        asked["resource"] = good.clone();
        let (body, headers) = s.forge(asked).await;
        cases.push((case, body, headers));
    }
    // Genuine signatures over what does not match the order.
    for (field, value, code, status) in [
        (
            "amount",
            json!({ "total": 1, "currency": "CNY" }),
            "notification_mismatch",
            StatusCode::BAD_REQUEST,
        ),
        (
            "mchid",
            json!("1900000999"),
            "notification_mismatch",
            StatusCode::BAD_REQUEST,
        ),
        (
            "appid",
            json!("wx-other"),
            "notification_mismatch",
            StatusCode::BAD_REQUEST,
        ),
        (
            "trade_state",
            json!("NOTPAY"),
            "notification_mismatch",
            StatusCode::BAD_REQUEST,
        ),
        (
            "out_trade_no",
            json!("nobody-s-order"),
            "order_not_found",
            StatusCode::NOT_FOUND,
        ),
    ] {
        let mut resource = good.clone();
        resource[field] = value;
        let (body, headers) = s
            .forge(json!({ "mchid": MCHID, "resource": resource }))
            .await;
        cases.push((("a field that does not match", status, code), body, headers));
    }
    // Changed after signing; another serial; another signature; no headers at all.
    let (body, headers) = s.forge(json!({ "mchid": MCHID, "resource": good })).await;
    cases.push((
        refused(
            "a body changed after signing",
            StatusCode::UNAUTHORIZED,
            "notification_unverified",
        ),
        body.replacen("\"id\"", "\"id\" ", 1),
        headers.clone(),
    ));
    let mut other_serial = headers.clone();
    other_serial["wechatpay-serial"] = json!("PUB_KEY_ID_0000000000000000000000000000OTHER");
    cases.push((
        refused(
            "an unknown serial",
            StatusCode::UNAUTHORIZED,
            "notification_unverified",
        ),
        body.clone(),
        other_serial,
    ));
    let mut other_signature = headers.clone();
    let signature = headers["wechatpay-signature"].as_str().unwrap();
    // Its first character changed (to one it is not: a signature starting with `A` stays itself
    // under "A…").
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    other_signature["wechatpay-signature"] = json!(format!("{first}{}", &signature[1..]));
    cases.push((
        refused(
            "a signature that is not this body's",
            StatusCode::UNAUTHORIZED,
            "notification_unverified",
        ),
        body.clone(),
        other_signature,
    ));
    cases.push((
        refused(
            "no signature headers",
            StatusCode::UNAUTHORIZED,
            "notification_unverified",
        ),
        body.clone(),
        json!({}),
    ));

    for ((why, status, code), body, headers) in cases {
        let answer = s.deliver(&body, &headers).await;
        assert_eq!(answer.status(), status, "{why}");
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{why}: {error}");
    }
    let detail = s.detail(id).await;
    assert_eq!(detail["state"], "created");
    assert_eq!(detail["events"], json!([]));

    // The same, untouched: taken.
    let answer = s.deliver(&body, &headers).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    assert_eq!(state_of(&s, id).await, "paid");
}

#[tokio::test]
async fn a_lost_callback_is_recovered_by_asking_the_platform() {
    let s = shop().await;
    let order = s.order(250, None).await;
    let id = order["id"].as_str().unwrap();
    s.pay(&order, json!({ "notify": "drop" })).await;
    eventually("the check finds the payment", || async {
        state_of(&s, id).await == "paid"
    })
    .await;
    let detail = s.detail(id).await;
    assert_eq!(detail["events"][0]["source"], "query");
    assert!(s.emulator.sent_notifications().await.is_empty());

    // The client's "ok" is a hint: it confirms with the server, which asks the platform.
    let other = s.order(300, None).await;
    let other_id = other["id"].as_str().unwrap();
    let path = format!("/pay/orders/{other_id}/confirm");
    let before =
        s.t.as_user(Method::POST, "shop", &path, &s.alice)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(before["state"], "created");
    s.pay(&other, json!({ "notify": "drop" })).await;
    let confirmed =
        s.t.as_user(Method::POST, "shop", &path, &s.alice)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(confirmed["state"], "paid");
}

#[tokio::test]
async fn refunds_never_pass_what_was_paid() {
    let s = shop().await;
    let unpaid = s.order(100, None).await;
    let refund_path = |id: &Value| {
        format!(
            "/v1/admin/apps/shop/pay/orders/{}/refunds",
            id.as_str().unwrap()
        )
    };
    s.t.admin(Method::POST, &refund_path(&unpaid["id"]))
        .json(&json!({ "amount_fen": 10 }))
        .expect_error(StatusCode::CONFLICT, "order_state")
        .await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap().to_owned();
    s.pay(&order, json!({})).await;
    eventually("paid", || async { state_of(&s, &id).await == "paid" }).await;

    // Ten refunds of 15 at once: six fit in 100.
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..10 {
        let request = s.t.admin(Method::POST, &refund_path(&order["id"])).json(
            &json!({ "amount_fen": 15, "out_refund_no": format!("R-{n}"), "reason": "cold" }),
        );
        tasks.spawn(async move { request.send().await.unwrap() });
    }
    let mut taken = 0;
    for answer in tasks.join_all().await {
        match answer.status() {
            StatusCode::OK => taken += 1,
            StatusCode::CONFLICT => {
                let error: Value = answer.json().await.unwrap();
                assert_eq!(error["error"]["code"], "refund_exceeds");
            }
            other => panic!("{other}"),
        }
    }
    assert_eq!(taken, 6);
    eventually("the refunds are confirmed", || async {
        let detail = s.detail(&id).await;
        detail["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "succeeded")
    })
    .await;
    let detail = s.detail(&id).await;
    assert_eq!(
        (&detail["state"], &detail["refunded_fen"]),
        (&json!("partly_refunded"), &json!(90))
    );
    assert_eq!(detail["refunds"].as_array().unwrap().len(), 6);
    // The same number again is the same refund; another amount under it is refused.
    let first = detail["refunds"][0].clone();
    let again =
        s.t.admin(Method::POST, &refund_path(&order["id"]))
            .json(&json!({ "amount_fen": 15, "out_refund_no": first["out_refund_no"] }))
            .expect(StatusCode::OK)
            .await;
    assert_eq!(again["refund_id"], first["refund_id"]);
    s.t.admin(Method::POST, &refund_path(&order["id"]))
        .json(&json!({ "amount_fen": 5, "out_refund_no": first["out_refund_no"] }))
        .expect_error(StatusCode::CONFLICT, "refund_reused")
        .await;
    // The last 10 empties it.
    let last =
        s.t.admin(Method::POST, &refund_path(&order["id"]))
            .json(&json!({ "amount_fen": 10 }))
            .expect(StatusCode::OK)
            .await;
    assert!(last["out_refund_no"].as_str().unwrap().starts_with("ref_"));
    eventually("refunded", || async {
        state_of(&s, &id).await == "refunded"
    })
    .await;
    let names: Vec<Value> = s.detail(&id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names.len(), 8, "paid and seven refunds: {names:?}");
}

/// WeChat Pay takes a refund and then answers `500 SYSTEM_ERROR` (and sends no notification):
/// the refund stays pending with its amount reserved, so asking again can not pay twice, and
/// its check finds it done.
#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_not_failed_but_found_by_its_check() {
    let s = shop().await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap().to_owned();
    s.pay(&order, json!({})).await;
    eventually("paid", || async { state_of(&s, &id).await == "paid" }).await;
    let (status, _) = s
        .emulator
        .pay_control("faults", json!({ "lose_refund_answers": 1 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let path = format!("/v1/admin/apps/shop/pay/orders/{id}/refunds");
    let refund =
        s.t.admin(Method::POST, &path)
            .json(&json!({ "amount_fen": 70, "out_refund_no": "LOST-1" }))
            .expect(StatusCode::OK)
            .await;
    assert_eq!(refund["state"], "pending", "{refund}");
    // Its 70 stay reserved: another 70 does not fit.
    s.t.admin(Method::POST, &path)
        .json(&json!({ "amount_fen": 70, "out_refund_no": "LOST-2" }))
        .expect_error(StatusCode::CONFLICT, "refund_exceeds")
        .await;
    eventually("the check finds it done", || async {
        s.detail(&id).await["refunds"][0]["state"] == "succeeded"
    })
    .await;
    let detail = s.detail(&id).await;
    assert_eq!(
        (&detail["state"], &detail["refunded_fen"]),
        (&json!("partly_refunded"), &json!(70))
    );
}

#[tokio::test]
async fn orders_close_and_an_app_with_open_orders_stays() {
    let s = shop().await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap();
    // Money not settled: the app is not deleted.
    s.t.admin(Method::DELETE, "/v1/admin/apps/shop")
        .expect_error(StatusCode::CONFLICT, "payments_unsettled")
        .await;
    let closed =
        s.t.admin(
            Method::POST,
            &format!("/v1/admin/apps/shop/pay/orders/{id}/close"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(closed["state"], "closed");
    // Closed on the platform too: the user can not pay it any more.
    let (status, _) = s
        .emulator
        .pay_control(
            "pay",
            json!({ "mchid": MCHID, "out_trade_no": order["out_trade_no"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.t.admin(
        Method::POST,
        &format!("/v1/admin/apps/shop/pay/orders/{id}/close"),
    )
    .expect_error(StatusCode::CONFLICT, "order_state")
    .await;
    let page =
        s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/orders?state=closed")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(page["items"][0]["id"], order["id"]);
    s.t.admin(Method::DELETE, "/v1/admin/apps/shop")
        .no_content()
        .await;
}

#[tokio::test]
async fn an_order_left_unpaid_is_closed_on_the_platform_when_it_expires() {
    // Orders that expire two seconds after they are made.
    let s = shop_with(|c| c.payments.order_ttl_secs = 2).await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap();
    eventually("the order is closed", || async {
        state_of(&s, id).await == "closed"
    })
    .await;
    let detail = s.detail(id).await;
    assert_eq!(detail["events"][0]["name"], "closed");
    // Closed on the platform first: it can not be paid there any more.
    let (status, _) = s
        .emulator
        .pay_control(
            "pay",
            json!({ "mchid": MCHID, "out_trade_no": order["out_trade_no"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn merchant_settings_and_orders_refuse_what_breaks_a_rule() {
    let s = shop().await;
    let view =
        s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/merchants/wechat")
            .expect(StatusCode::OK)
            .await;
    let text = view.to_string();
    assert!(
        !text.contains(API_V3_KEY) && !text.contains("PRIVATE"),
        "{text}"
    );
    assert!(
        !s.t.stored_anywhere(API_V3_KEY.as_bytes()),
        "the APIv3 key is sealed"
    );
    s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/merchants/alipay")
        .expect_error(StatusCode::NOT_FOUND, "pay_not_configured")
        .await;
    s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/merchants/paypal")
        .expect_error(StatusCode::NOT_FOUND, "unknown_pay_provider")
        .await;
    s.t.admin(Method::PUT, "/v1/admin/apps/shop/pay/merchants/wechat")
        .json(
            &json!({ "mchid": MCHID, "serial_no": SERIAL, "private_key": "not a key",
                       "api_v3_key": API_V3_KEY, "platform_keys": [] }),
        )
        .expect_error(StatusCode::BAD_REQUEST, "invalid_merchant")
        .await;
    for (body, why) in [
        (json!({ "amount_fen": 0, "description": "x" }), "no amount"),
        (
            json!({ "amount_fen": 100_000_001, "description": "x" }),
            "too much",
        ),
        (
            json!({ "amount_fen": 1, "description": "" }),
            "no description",
        ),
        (
            json!({ "amount_fen": 1, "description": "x".repeat(128) }),
            "a long description",
        ),
        (
            json!({ "amount_fen": 1, "description": "x", "out_trade_no": "a b c d e" }),
            "a bad number",
        ),
        (
            json!({ "amount_fen": 1, "description": "x", "metadata": [1] }),
            "metadata not an object",
        ),
        (
            json!({ "amount_fen": 1, "description": "x", "expires_in_secs": 10 }),
            "too short",
        ),
    ] {
        let mut body = body;
        body["user"] = json!(s.alice_id);
        s.t.admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
            .json(&body)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_order")
            .await;
        let _ = why;
    }
    // The client's route needs a `before` function to price its orders.
    s.t.as_user(Method::POST, "shop", "/pay/orders", &s.alice)
        .json(&json!({ "data": { "sku": "tea-1" } }))
        .expect_error(StatusCode::FORBIDDEN, "client_orders_disabled")
        .await;
    // Notifications for an app without a merchant, and for an unknown provider.
    s.t.create_app("bare").await;
    let answer =
        s.t.request(Method::POST, "/v1/apps/bare/pay/wechat/notify")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let answer =
        s.t.request(Method::POST, "/v1/apps/shop/pay/paypal/notify")
            .body("{}")
            .send()
            .await
            .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/orders/ord_missing")
        .expect_error(StatusCode::NOT_FOUND, "order_not_found")
        .await;

    // The app's key keeps the address the admin set and may go back to the platform's own,
    // but may not send the merchant's calls anywhere else (this machine's other services).
    let key =
        s.t.admin(Method::POST, "/v1/admin/apps/shop/keys/rotate")
            .expect(StatusCode::OK)
            .await["secret_key"]
            .as_str()
            .unwrap()
            .to_owned();
    let (private_key, public_key) = openssl_key_pair();
    let merchant = |base_url: Option<String>| {
        let mut body = json!({ "mchid": MCHID, "serial_no": SERIAL, "private_key": private_key,
            "api_v3_key": API_V3_KEY,
            "platform_keys": [{ "serial": "PUBKEY1", "public_key": public_key }] });
        if let Some(base_url) = base_url {
            body["base_url"] = json!(base_url);
        }
        s.t.request(Method::PUT, "/v1/admin/apps/shop/pay/merchants/wechat")
            .bearer_auth(&key)
            .json(&body)
    };
    for elsewhere in ["http://127.0.0.1:2379/v2", "https://10.0.0.1"] {
        merchant(Some(elsewhere.into()))
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
    }
    let kept = merchant(Some(format!("{}/wechatpay", s.emulator.base)))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(kept["base_url"], format!("{}/wechatpay", s.emulator.base));
    let own = merchant(None).expect(StatusCode::OK).await;
    assert_eq!(own["base_url"], "https://api.mch.weixin.qq.com");
    merchant(Some(format!("{}/wechatpay", s.emulator.base)))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
}

/// Alipay end to end: the merchant app configured, an order created for `my.tradePay`, its form
/// notification (sent three times) verified and applied once, forged forms refused, refunds
/// (the second waits out Alipay's 3 s between refunds of a trade) confirmed by query, and an
/// unpaid order closed.
/// Alipay's merchant (app `2021000000000077`) on the emulator for app `shop`, with Alice logged
/// in through Alipay.
const ALIPAY_APP_ID: &str = "2021000000000077";

async fn alipay_shop() -> (TestApp, Emulator, String) {
    let (t, emulator) = fast_checks(|_| {}).await;
    let (private_key, public_key) = openssl_key_pair();
    let registered: Value = emulator
        .http
        .post(format!("{}/emulator/apps", emulator.base))
        .json(
            &json!({ "platform": "alipay", "app_id": ALIPAY_APP_ID, "app_public_key": public_key }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = json!({
        "app_id": ALIPAY_APP_ID,
        "private_key": private_key,
        "alipay_public_key": registered["alipay_public_key"],
        "base_url": format!("{}/alipay/gateway.do", emulator.base),
    });
    t.configure("shop", "alipay", keys.clone()).await;
    let view = t
        .admin(Method::PUT, "/v1/admin/apps/shop/pay/merchants/alipay")
        .json(&keys)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(view["app_id"], ALIPAY_APP_ID);
    assert!(!view.to_string().contains("PRIVATE"), "{view}");
    let code = emulator.code("alipay", ALIPAY_APP_ID, "alice", false).await;
    let grant = t
        .login("shop", json!({ "provider": "alipay", "code": code }))
        .expect(StatusCode::CREATED)
        .await;
    let alice = grant["user"]["id"].as_str().unwrap().to_owned();
    (t, emulator, alice)
}

#[tokio::test]
async fn alipay_orders_are_paid_once_refunded_and_closed() {
    let (t, emulator, alice) = alipay_shop().await;
    let order_of = |amount: i64| {
        t.admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
            .json(&json!({ "provider": "alipay", "amount_fen": amount, "description": "A pot of tea", "user": alice }))
    };
    let detail = |id: &str| {
        t.admin(Method::GET, &format!("/v1/admin/apps/shop/pay/orders/{id}"))
            .expect(StatusCode::OK)
    };
    let order = order_of(150).expect(StatusCode::CREATED).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let trade_no = order["payment"]["tradeNO"].as_str().unwrap().to_owned();
    assert!(trade_no.starts_with("2026"), "{order}");
    // Alipay's descriptions take no / = or &.
    t.admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
        .json(
            &json!({ "provider": "alipay", "amount_fen": 1, "description": "a=b", "user": alice }),
        )
        .expect_error(StatusCode::BAD_REQUEST, "invalid_order")
        .await;

    // Forms signed by "Alipay" that do not match the order: refused, nothing changes.
    let notify = |body: String| {
        t.request(Method::POST, "/v1/apps/shop/pay/alipay/notify")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
    };
    let forge = |params: Value| {
        let (http, base) = (emulator.http.clone(), emulator.base.clone());
        async move {
            let forged: Value = http
                .post(format!("{base}/emulator/alipay/forge"))
                .json(&json!({ "params": params }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            forged["body"].as_str().unwrap().to_owned()
        }
    };
    let paid_form = |total: &str, app_id: &str| {
        json!({
            "notify_type": "trade_status_sync", "notify_id": "n1", "app_id": app_id,
            "charset": "utf-8", "version": "1.0", "sign_type": "RSA2", "trade_no": trade_no,
            "out_trade_no": order["out_trade_no"], "trade_status": "TRADE_SUCCESS",
            "total_amount": total, "gmt_payment": "2026-12-03 10:00:00",
        })
    };
    // A close signed for another app of the same Alipay key closes nothing here.
    let mut closed_elsewhere = paid_form("1.50", "2021000000000099");
    closed_elsewhere["trade_status"] = json!("TRADE_CLOSED");
    for (params, code) in [
        (paid_form("0.01", ALIPAY_APP_ID), "notification_mismatch"),
        (
            paid_form("1.50", "2021000000000099"),
            "notification_mismatch",
        ),
        (closed_elsewhere, "notification_mismatch"),
    ] {
        let answer = notify(forge(params).await).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        let error: Value = answer.json().await.unwrap();
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    let genuine = forge(paid_form("1.50", ALIPAY_APP_ID)).await;
    let tampered = genuine.replace("total_amount=1.50", "total_amount=1.5");
    let answer = notify(tampered).send().await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "changed after signing"
    );
    assert_eq!(detail(&id).await["state"], "created");

    // The user pays; the form comes three times; the order is paid once.
    let paid: Value = emulator
        .http
        .post(format!("{}/emulator/alipay/pay", emulator.base))
        .json(&json!({ "app_id": ALIPAY_APP_ID, "out_trade_no": order["out_trade_no"], "duplicates": 2 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["trade_no"], json!(trade_no));
    eventually("paid", || async { detail(&id).await["state"] == "paid" }).await;
    eventually("every form answered success", || async {
        let sent: Value = emulator
            .http
            .get(format!("{}/emulator/alipay/notifications", emulator.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = sent["items"].as_array().unwrap();
        items.len() >= 3 && items.iter().all(|n| n["answer"] == "success")
    })
    .await;
    let paid = detail(&id).await;
    assert_eq!(paid["transaction_id"], json!(trade_no));
    assert_eq!(paid["events"].as_array().unwrap().len(), 1, "{paid}");

    // A part refunded, then at once the rest: Alipay's spacing holds the second back, and its
    // check sends it.
    let refunds = format!("/v1/admin/apps/shop/pay/orders/{id}/refunds");
    let first = t
        .admin(Method::POST, &refunds)
        .json(&json!({ "amount_fen": 50, "out_refund_no": "AR1" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(first["state"], "succeeded", "fund_change Y is money moved");
    let second = t
        .admin(Method::POST, &refunds)
        .json(&json!({ "amount_fen": 100, "out_refund_no": "AR2" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(second["state"], "pending");
    eventually("refunded", || async {
        detail(&id).await["state"] == "refunded"
    })
    .await;
    assert_eq!(detail(&id).await["refunded_fen"], 150);

    // An unpaid order closes, at Alipay first.
    let other = order_of(10).expect(StatusCode::CREATED).await;
    let closed = t
        .admin(
            Method::POST,
            &format!(
                "/v1/admin/apps/shop/pay/orders/{}/close",
                other["id"].as_str().unwrap()
            ),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(closed["state"], "closed");
    let refused = emulator
        .http
        .post(format!("{}/emulator/alipay/pay", emulator.base))
        .json(&json!({ "app_id": ALIPAY_APP_ID, "out_trade_no": other["out_trade_no"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
}

/// An Alipay refund whose answer was lost went through, and refunded whole, closed the trade.
/// Asked for again under its number, Alipay refuses the closed trade: that refusal does not
/// fail the refund (whose amount would be free to refund twice); the refund query finds it
/// done.
#[tokio::test]
async fn an_alipay_refund_asked_again_after_its_lost_answer_is_not_failed_by_a_refusal() {
    let (t, emulator, alice) = alipay_shop().await;
    let order = t
        .admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
        .json(&json!({ "provider": "alipay", "amount_fen": 100, "description": "A pot of tea", "user": alice }))
        .expect(StatusCode::CREATED)
        .await;
    let id = order["id"].as_str().unwrap().to_owned();
    let detail = |id: &str| {
        t.admin(Method::GET, &format!("/v1/admin/apps/shop/pay/orders/{id}"))
            .expect(StatusCode::OK)
    };
    let control = |path: &str, body: Value| {
        let request = emulator
            .http
            .post(format!("{}/emulator/alipay/{path}", emulator.base))
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    let paid = control(
        "pay",
        json!({ "app_id": ALIPAY_APP_ID, "out_trade_no": order["out_trade_no"] }),
    )
    .await;
    assert_eq!(paid, StatusCode::OK);
    eventually("paid", || async { detail(&id).await["state"] == "paid" }).await;

    let faults = control("faults", json!({ "lose_refund_answers": 1 })).await;
    assert_eq!(faults, StatusCode::OK);
    let refunds = format!("/v1/admin/apps/shop/pay/orders/{id}/refunds");
    let ask = || {
        t.admin(Method::POST, &refunds)
            .json(&json!({ "amount_fen": 100, "out_refund_no": "AR-LOST" }))
            .expect(StatusCode::OK)
    };
    assert_eq!(ask().await["state"], "pending", "its answer was lost");
    // Refused as a closed trade's: the refund query finds it done, whether its check has run
    // already or not.
    let again = ask().await;
    assert_eq!(again["state"], "succeeded", "{again}");
    t.admin(Method::POST, &refunds)
        .json(&json!({ "amount_fen": 1, "out_refund_no": "AR-MORE" }))
        .expect_error(StatusCode::CONFLICT, "order_state")
        .await;
    let done = detail(&id).await;
    assert_eq!(done["refunded_fen"], 100);
    let states: Vec<&Value> = done["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["state"])
        .collect();
    assert_eq!(states, [&json!("succeeded")], "{done}");
}

/// A notification that came before its order is kept, refused; once the order exists, an admin
/// replays it: verified again, applied as a replay, noted on the order's timeline. Replaying
/// again changes nothing; a kept callback whose merchant keys changed replays nothing.
#[tokio::test]
async fn kept_callbacks_replay_verified_and_noted() {
    let s = shop().await;
    let early = json!({ "out_trade_no": "T-LATE-0001" });
    let (body, headers) = s
        .forge(json!({ "mchid": MCHID, "resource": transaction(&early, 100) }))
        .await;
    let answer = s.deliver(&body, &headers).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    // The platform retries it: one kept row, handled twice.
    assert_eq!(
        s.deliver(&body, &headers).await.status(),
        StatusCode::NOT_FOUND
    );
    let kept =
        s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/callbacks")
            .expect(StatusCode::OK)
            .await;
    let items = kept["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{kept}");
    let callback = &items[0];
    assert_eq!(callback["provider"], "wechat");
    assert_eq!(callback["handled"], 2);
    assert_eq!(callback["order_id"], Value::Null);
    assert_eq!(callback["outcome"], "refused: no such order");
    assert_eq!(callback["body"], body.as_str(), "the bytes as they came");
    let cb = callback["id"].as_str().unwrap().to_owned();

    // The order made afterwards with that number: the replay pays it.
    let order =
        s.t.admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
            .json(
                &json!({ "amount_fen": 100, "description": "Late tea", "user": s.alice_id,
                       "out_trade_no": "T-LATE-0001" }),
            )
            .expect(StatusCode::CREATED)
            .await;
    let id = order["id"].as_str().unwrap();
    let replay = format!("/v1/admin/apps/shop/pay/callbacks/{cb}/replay");
    let replayed =
        s.t.admin(Method::POST, &replay)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(
        (
            &replayed["outcome"],
            &replayed["handled"],
            &replayed["order_id"]
        ),
        (&json!("applied"), &json!(3), &json!(id))
    );
    let detail = s.detail(id).await;
    assert_eq!(detail["state"], "paid");
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events[0]["name"], "paid");
    assert_eq!(events[0]["source"], "replay");
    let note = events.iter().find(|e| e["source"] == "admin").unwrap();
    assert_eq!(
        (&note["payload"]["action"], &note["payload"]["actor"]),
        (&json!("replay"), &json!("admin token"))
    );
    assert_eq!(note["payload"]["outcome"], "applied");
    // Again: nothing moves, and the second replay is noted too.
    let again =
        s.t.admin(Method::POST, &replay)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(again["outcome"], "unchanged");
    let detail = s.detail(id).await;
    let paid = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == "paid")
        .count();
    assert_eq!(paid, 1);
    let of_order =
        s.t.admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/pay/callbacks?order={id}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(of_order["items"][0]["id"], cb.as_str());

    // The merchant's platform key replaced: the kept bytes no longer verify, and nothing is
    // changed or kept by replaying them.
    let (_, other_key) = openssl_key_pair();
    let (private_key, _) = openssl_key_pair();
    s.t.admin(Method::PUT, "/v1/admin/apps/shop/pay/merchants/wechat")
        .json(&json!({
            "mchid": MCHID, "serial_no": SERIAL, "private_key": private_key,
            "api_v3_key": API_V3_KEY,
            "platform_keys": [{ "serial": headers["wechatpay-serial"], "public_key": other_key }],
            "base_url": format!("{}/wechatpay", s.emulator.base),
        }))
        .expect(StatusCode::OK)
        .await;
    s.t.admin(Method::POST, &replay)
        .expect_error(StatusCode::UNAUTHORIZED, "notification_unverified")
        .await;
    let kept =
        s.t.admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/pay/callbacks/{cb}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(kept["handled"], 4, "the refused replay is not a handling");
    let notes = s.detail(id).await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "admin")
        .map(|e| e["payload"]["outcome"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("refused: the notification does not verify"))
    );

    // Bad ids and limits.
    for (path, status, code) in [
        (
            "/v1/admin/apps/shop/pay/callbacks/nope",
            StatusCode::NOT_FOUND,
            "callback_not_found",
        ),
        (
            "/v1/admin/apps/shop/pay/callbacks/..%2F..",
            StatusCode::NOT_FOUND,
            "callback_not_found",
        ),
        (
            "/v1/admin/apps/shop/pay/callbacks?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "/v1/admin/apps/shop/pay/callbacks?limit=201",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ] {
        s.t.admin(Method::GET, path)
            .expect_error(status, code)
            .await;
    }
    s.t.admin(
        Method::POST,
        "/v1/admin/apps/shop/pay/callbacks/nope/replay",
    )
    .expect_error(StatusCode::NOT_FOUND, "callback_not_found")
    .await;
}

/// Once an app with payments is deleted, its platform's retries of a refund's or a close's
/// notification are still verified and answered, so the platform stops; a payment's is
/// verified and not answered (money may be owed: the platform's retries tell a person); forgeries
/// are refused.
#[tokio::test]
async fn a_deleted_apps_notifications_are_still_verified_and_answered() {
    let s = shop().await;
    let order = s.order(100, None).await;
    let id = order["id"].as_str().unwrap().to_owned();
    s.pay(&order, json!({})).await;
    eventually("paid", || async { state_of(&s, &id).await == "paid" }).await;
    s.t.admin(
        Method::POST,
        &format!("/v1/admin/apps/shop/pay/orders/{id}/refunds"),
    )
    .json(&json!({ "amount_fen": 100 }))
    .expect(StatusCode::OK)
    .await;
    eventually("refunded", || async {
        state_of(&s, &id).await == "refunded"
    })
    .await;
    // The order may be refunded by the refund's own answer before the platform has sent its
    // notification: wait for that too.
    eventually("the refund's notification", || async {
        s.emulator.sent_notifications().await.iter().any(|n| {
            n["body"]
                .as_str()
                .is_some_and(|b| b.contains("REFUND.SUCCESS"))
        })
    })
    .await;
    let sent = s.emulator.sent_notifications().await;
    let of = |event: &str| {
        sent.iter()
            .find(|n| n["body"].as_str().unwrap().contains(event))
            .unwrap()
            .clone()
    };
    let (paid, refunded) = (of("TRANSACTION.SUCCESS"), of("REFUND.SUCCESS"));
    s.t.admin(Method::DELETE, "/v1/admin/apps/shop")
        .no_content()
        .await;
    let body = refunded["body"].as_str().unwrap();
    let answer = s.deliver(body, &refunded["headers"]).await;
    assert_eq!(answer.status(), StatusCode::NO_CONTENT);
    let answer = s
        .deliver(paid["body"].as_str().unwrap(), &paid["headers"])
        .await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "order_not_found");
    let tampered = body.replacen("\"id\"", "\"id\" ", 1);
    let answer = s.deliver(&tampered, &refunded["headers"]).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // An app that never had a merchant: nothing to verify with.
    let answer =
        s.t.request(Method::POST, "/v1/apps/never-was/pay/wechat/notify")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["error"]["code"], "pay_not_configured");
}

/// The day's trade bill against the books: agreement reports nothing; a bill that says
/// otherwise (another amount, a payment not here, a payment here it does not list) reports
/// each difference; reports are kept and listed.
#[tokio::test]
async fn a_days_bill_is_compared_with_the_orders() {
    let s = shop().await;
    // Payments of yesterday: the emulator's calendar a day back while they are made.
    let (status, _) = s
        .emulator
        .pay_control("clock", json!({ "offset_secs": -86_400 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut orders = Vec::new();
    for _ in 0..3 {
        let order = s.order(100, None).await;
        s.pay(&order, json!({})).await;
        orders.push(order);
    }
    for order in &orders {
        let id = order["id"].as_str().unwrap();
        eventually("paid", || async { state_of(&s, id).await == "paid" }).await;
    }
    let refund_path = format!(
        "/v1/admin/apps/shop/pay/orders/{}/refunds",
        orders[0]["id"].as_str().unwrap()
    );
    s.t.admin(Method::POST, &refund_path)
        .json(&json!({ "amount_fen": 30, "out_refund_no": "R-BILL-1" }))
        .expect(StatusCode::OK)
        .await;
    let first = orders[0]["id"].as_str().unwrap().to_owned();
    eventually("refunded", || async {
        state_of(&s, &first).await == "partly_refunded"
    })
    .await;
    let paid_at = s.detail(&first).await["paid_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, clock) = s
        .emulator
        .pay_control("clock", json!({ "offset_secs": 0 }))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The emulator's calendar back at today, China time.
    let today = clock["now"].as_str().unwrap()[..10].to_owned();
    // The China-time day of the payments.
    let day = china_day(&paid_at);
    let reconcile = |date: &str| {
        s.t.admin(Method::POST, "/v1/admin/apps/shop/pay/reconciliations")
            .json(&json!({ "provider": "wechat", "date": date }))
    };
    let agreed = reconcile(&day).expect(StatusCode::OK).await;
    assert_eq!(agreed["differences"], 0, "{agreed}");
    assert_eq!(agreed["bill"]["payments"], 3);
    assert_eq!(agreed["bill"]["refunds"], 1);
    assert_eq!(agreed["bill"]["refunded_fen"], 30);
    assert_eq!(agreed["here"]["payments"], 3);
    assert_eq!(agreed["here"]["paid_fen"], 300);
    assert_eq!(agreed["source"], "admin");

    // The bill made to differ: one amount, one payment it does not list, one it lists that
    // nobody here made, a refund nobody here asked for.
    let (status, answer) = s
        .emulator
        .pay_control(
            "bill",
            json!({
                "mchid": MCHID, "bill_date": day,
                "amounts": { orders[1]["out_trade_no"].as_str().unwrap(): 150 },
                "omit": [orders[2]["out_trade_no"]],
                "extra": [
                    { "out_trade_no": "GHOST-000001", "transaction_id": "4200000000000000000000009999",
                      "amount_fen": 5 },
                    { "out_trade_no": orders[1]["out_trade_no"], "transaction_id": "4200000000000000000000009998",
                      "amount_fen": 100, "state": "REFUND", "out_refund_no": "R-GHOST-1",
                      "refund_id": "50300000000000000000000001", "refund_fen": 10 },
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let report = reconcile(&day).expect(StatusCode::OK).await;
    let found = listed(&report);
    let mut expected = vec![
        (
            "amount".to_owned(),
            orders[1]["out_trade_no"].as_str().unwrap().to_owned(),
        ),
        ("missing_here".to_owned(), "GHOST-000001".to_owned()),
        (
            "missing_there".to_owned(),
            orders[2]["out_trade_no"].as_str().unwrap().to_owned(),
        ),
        ("refund_missing_here".to_owned(), "R-GHOST-1".to_owned()),
    ];
    expected.sort();
    assert_eq!(found, expected, "{report}");
    assert_eq!(report["differences"], 4);
    let amount = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "amount")
        .unwrap();
    assert_eq!(
        (
            &amount["here"]["amount_fen"],
            &amount["there"]["amount_fen"]
        ),
        (&json!(100), &json!(150))
    );

    // Kept: the day's latest report, listed.
    let kept =
        s.t.admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/pay/reconciliations/wechat/{day}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(kept, report);
    let listed =
        s.t.admin(Method::GET, "/v1/admin/apps/shop/pay/reconciliations")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["differences"], 4);

    // The daily comparison: configuring the merchant queued today's, due when its bill is.
    let waiting =
        s.t.admin(
            Method::GET,
            "/v1/admin/apps/shop/queues/_payments/messages?state=waiting&limit=1000",
        )
        .expect(StatusCode::OK)
        .await;
    let daily: Vec<&Value> = waiting["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["payload"]["check"].get("bill").is_some())
        .collect();
    assert_eq!(daily.len(), 1, "{waiting}");
    assert_eq!(
        daily[0]["payload"]["check"]["bill"],
        json!({ "provider": "wechat", "date": today })
    );

    // Refusals: today's bill is not made; not a day; too old; Alipay; no report.
    reconcile(&today)
        .expect_error(StatusCode::CONFLICT, "bill_not_ready")
        .await;
    for bad in ["2026-02-30", "yesterday", "2020-01-01"] {
        reconcile(bad)
            .expect_error(StatusCode::BAD_REQUEST, "invalid_bill_date")
            .await;
    }
    s.t.admin(Method::POST, "/v1/admin/apps/shop/pay/reconciliations")
        .json(&json!({ "provider": "alipay", "date": day }))
        .expect_error(StatusCode::NOT_FOUND, "pay_not_configured")
        .await;
    s.t.admin(
        Method::GET,
        "/v1/admin/apps/shop/pay/reconciliations/wechat/2026-01-01",
    )
    .expect_error(StatusCode::NOT_FOUND, "report_not_found")
    .await;
    s.t.admin(
        Method::GET,
        "/v1/admin/apps/shop/pay/reconciliations/wechat/..%2F..%2Fx",
    )
    .expect_error(StatusCode::BAD_REQUEST, "invalid_bill_date")
    .await;
}

/// Alipay's bill (a zip of GBK CSV files behind its download link) against the books, as
/// WeChat Pay's is.
#[tokio::test]
async fn an_alipay_days_bill_is_compared_with_the_orders() {
    let (t, emulator, alice) = alipay_shop().await;
    let control = |path: &str, body: Value| {
        let (http, url) = (
            emulator.http.clone(),
            format!("{}/emulator/alipay/{path}", emulator.base),
        );
        async move {
            let response = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Value>().await.unwrap()
        }
    };
    let state = |id: String| {
        let request = t.admin(Method::GET, &format!("/v1/admin/apps/shop/pay/orders/{id}"));
        async move { request.expect(StatusCode::OK).await["state"].clone() }
    };
    control("clock", json!({ "offset_secs": -86_400 })).await;
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = t
            .admin(Method::POST, "/v1/admin/apps/shop/pay/orders")
            .json(&json!({ "provider": "alipay", "amount_fen": 150, "description": "Tea", "user": alice }))
            .expect(StatusCode::CREATED)
            .await;
        control(
            "pay",
            json!({ "app_id": ALIPAY_APP_ID, "out_trade_no": order["out_trade_no"] }),
        )
        .await;
        let id = order["id"].as_str().unwrap().to_owned();
        eventually("paid", || {
            let id = id.clone();
            let state = &state;
            async move { state(id).await == "paid" }
        })
        .await;
        orders.push(order);
    }
    let refund = t
        .admin(
            Method::POST,
            &format!(
                "/v1/admin/apps/shop/pay/orders/{}/refunds",
                orders[0]["id"].as_str().unwrap()
            ),
        )
        .json(&json!({ "amount_fen": 50, "out_refund_no": "AR-BILL-1" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(refund["state"], "succeeded");
    let clock = control("clock", json!({ "offset_secs": 0 })).await;
    let today = clock["now"].as_str().unwrap()[..10].to_owned();
    let paid_at = {
        let detail = t
            .admin(
                Method::GET,
                &format!(
                    "/v1/admin/apps/shop/pay/orders/{}",
                    orders[0]["id"].as_str().unwrap()
                ),
            )
            .expect(StatusCode::OK)
            .await;
        detail["paid_at"].as_str().unwrap().to_owned()
    };
    let day = china_day(&paid_at);
    assert_ne!(day, today, "paid on the day before");
    let reconcile = || {
        t.admin(Method::POST, "/v1/admin/apps/shop/pay/reconciliations")
            .json(&json!({ "provider": "alipay", "date": day }))
    };
    let agreed = reconcile().expect(StatusCode::OK).await;
    assert_eq!(agreed["differences"], 0, "{agreed}");
    assert_eq!(
        (&agreed["bill"]["payments"], &agreed["bill"]["paid_fen"]),
        (&json!(2), &json!(300))
    );
    assert_eq!(
        (&agreed["bill"]["refunds"], &agreed["bill"]["refunded_fen"]),
        (&json!(1), &json!(50))
    );
    assert_eq!(agreed["here"]["payments"], 2);

    control(
        "bill",
        json!({
            "app_id": ALIPAY_APP_ID, "bill_date": day,
            "amounts": { orders[1]["out_trade_no"].as_str().unwrap(): 999 },
            "extra": [{ "out_trade_no": "GHOST-ALI-1", "trade_no": "2026120122001400000000009999", "amount_fen": 5 }],
        }),
    )
    .await;
    let report = reconcile().expect(StatusCode::OK).await;
    let kinds = listed(&report);
    assert_eq!(
        kinds,
        [
            (
                "amount".to_owned(),
                orders[1]["out_trade_no"].as_str().unwrap().to_owned()
            ),
            ("missing_here".to_owned(), "GHOST-ALI-1".to_owned()),
        ],
        "{report}"
    );
    // Today's bill is not made yet.
    t.admin(Method::POST, "/v1/admin/apps/shop/pay/reconciliations")
        .json(&json!({ "provider": "alipay", "date": today }))
        .expect_error(StatusCode::CONFLICT, "bill_not_ready")
        .await;
}
