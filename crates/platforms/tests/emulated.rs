//! The platform clients against the emulator, over real HTTP. The two are written separately
//! from the protocol notes, so agreement here means both follow the protocol; the refusals are
//! the real platforms' error codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudlet_emulator::EmulatorOptions;
use cloudlet_platforms::douyin::DouyinClient;
use cloudlet_platforms::qq::QqClient;
use cloudlet_platforms::wechat::{
    Lang, MiniProgramState, SubscribeError, SubscribeMessage, WeChatClient,
};
use cloudlet_platforms::{PlatformError, PlatformHttp};
use serde_json::{Value, json};

/// An emulator on an ephemeral port.
struct Emulator {
    base: String,
    http: reqwest::Client,
    platforms: PlatformHttp,
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
            platforms: PlatformHttp::new(Duration::from_secs(5)).unwrap(),
        }
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

    async fn register(
        &self,
        platform: &str,
        appid: &str,
        secret: &str,
        open_platform: Option<&str>,
    ) {
        let (status, _) = self
            .post(
                "/emulator/apps",
                json!({ "platform": platform, "appid": appid, "secret": secret, "open_platform": open_platform }),
            )
            .await;
        assert_eq!(status, 201);
    }

    async fn code(&self, platform: &str, appid: &str, user: &str) -> String {
        self.code_of_kind(platform, appid, user, false).await
    }

    async fn code_of_kind(
        &self,
        platform: &str,
        appid: &str,
        user: &str,
        anonymous: bool,
    ) -> String {
        let (status, body) = self
            .post(
                "/emulator/codes",
                json!({ "platform": platform, "appid": appid, "user": user, "anonymous": anonymous }),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["code"].as_str().unwrap().to_owned()
    }

    fn wechat(&self, appid: &str, secret: &str) -> WeChatClient {
        WeChatClient::new(
            self.platforms.clone(),
            &format!("{}/wechat", self.base),
            appid,
            secret,
        )
    }
}

fn refused_with(result: Result<impl std::fmt::Debug, PlatformError>, expected: i64) {
    match result {
        Err(PlatformError::Refused { code, .. }) => assert_eq!(code, expected),
        other => panic!("expected refusal {expected}, got {other:?}"),
    }
}

#[tokio::test]
async fn wechat_login_codes_trade_once_for_stable_ids() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    emulator
        .register("wechat", "wx-shop", "shop-secret", Some("dev-1"))
        .await;
    emulator
        .register("wechat", "wx-blog", "blog-secret", Some("dev-1"))
        .await;
    let shop = emulator.wechat("wx-shop", "shop-secret");
    let blog = emulator.wechat("wx-blog", "blog-secret");

    let code = emulator.code("wechat", "wx-shop", "alice").await;
    let first = shop.code_to_session(&code).await.unwrap();
    assert!(first.openid.starts_with('o'));
    assert_eq!(base64_len(&first.session_key), 16);
    refused_with(shop.code_to_session(&code).await, 40163);

    let again = shop
        .code_to_session(&emulator.code("wechat", "wx-shop", "alice").await)
        .await
        .unwrap();
    assert_eq!(again.openid, first.openid, "the same user, the same openid");
    assert_ne!(
        again.session_key, first.session_key,
        "a new login, a new session key"
    );

    let bob = shop
        .code_to_session(&emulator.code("wechat", "wx-shop", "bob").await)
        .await
        .unwrap();
    assert_ne!(bob.openid, first.openid);

    let in_blog = blog
        .code_to_session(&emulator.code("wechat", "wx-blog", "alice").await)
        .await
        .unwrap();
    assert_ne!(in_blog.openid, first.openid, "openids are per app");
    assert_eq!(in_blog.unionid, first.unionid, "unionids are per developer");
    assert!(first.unionid.is_some());
}

#[tokio::test]
async fn wechat_refuses_what_the_real_server_refuses() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    emulator.register("wechat", "wx-a", "secret-a", None).await;
    emulator.register("wechat", "wx-b", "secret-b", None).await;
    let a = emulator.wechat("wx-a", "secret-a");

    let code_for_b = emulator.code("wechat", "wx-b", "alice").await;
    refused_with(a.code_to_session(&code_for_b).await, 40029);
    refused_with(a.code_to_session("made-up-code").await, 40029);
    let code = emulator.code("wechat", "wx-a", "alice").await;
    refused_with(
        emulator
            .wechat("wx-a", "wrong")
            .code_to_session(&code)
            .await,
        40125,
    );
    refused_with(
        emulator
            .wechat("wx-zzz", "secret-a")
            .code_to_session(&code)
            .await,
        40013,
    );
    // A refused attempt does not use the code up.
    let session = a.code_to_session(&code).await.unwrap();
    assert!(
        session.unionid.is_none(),
        "no unionid without an open platform account"
    );
}

#[tokio::test]
async fn login_codes_expire() {
    let emulator = Emulator::start(EmulatorOptions {
        code_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    emulator.register("wechat", "wx-a", "secret-a", None).await;
    let code = emulator.code("wechat", "wx-a", "alice").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    refused_with(
        emulator
            .wechat("wx-a", "secret-a")
            .code_to_session(&code)
            .await,
        40029,
    );
}

#[tokio::test]
async fn stable_tokens_are_stable_until_forced() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    emulator.register("wechat", "wx-a", "secret-a", None).await;
    let a = emulator.wechat("wx-a", "secret-a");
    let first = a.stable_token(false).await.unwrap();
    assert!(first.expires_in_secs > 7000 && first.expires_in_secs <= 7200);
    assert_eq!(a.stable_token(false).await.unwrap().token, first.token);
    let forced = a.stable_token(true).await.unwrap();
    assert_ne!(forced.token, first.token);
    assert_eq!(a.stable_token(false).await.unwrap().token, forced.token);
    refused_with(
        emulator.wechat("wx-a", "wrong").stable_token(false).await,
        40125,
    );
    refused_with(
        emulator.wechat("wx-none", "x").stable_token(false).await,
        40013,
    );
}

#[tokio::test]
async fn qq_speaks_wechats_protocol_on_its_own_apps() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    emulator.register("qq", "qq-a", "secret-a", None).await;
    emulator.register("wechat", "qq-a", "secret-a", None).await;
    let qq = QqClient::new(
        emulator.platforms.clone(),
        &format!("{}/qq", emulator.base),
        "qq-a",
        "secret-a",
    );
    let session = qq
        .code_to_session(&emulator.code("qq", "qq-a", "alice").await)
        .await
        .unwrap();
    let wechat = emulator
        .wechat("qq-a", "secret-a")
        .code_to_session(&emulator.code("wechat", "qq-a", "alice").await)
        .await
        .unwrap();
    assert_ne!(session.openid, wechat.openid, "platforms never share ids");
    let wechat_code = emulator.code("wechat", "qq-a", "bob").await;
    refused_with(qq.code_to_session(&wechat_code).await, 40029);
}

#[tokio::test]
async fn douyin_trades_login_and_anonymous_codes() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    emulator
        .register("douyin", "tt-a", "secret-a", Some("dev-9"))
        .await;
    let tt = DouyinClient::new(
        emulator.platforms.clone(),
        &format!("{}/douyin", emulator.base),
        "tt-a",
        "secret-a",
    );

    let code = emulator.code("douyin", "tt-a", "alice").await;
    let session = tt.code_to_session(Some(&code), None).await.unwrap();
    assert!(session.openid.is_some() && session.session_key.is_some() && session.unionid.is_some());
    assert!(session.anonymous_openid.is_none());
    refused_with(tt.code_to_session(Some(&code), None).await, 40018);

    let anonymous = emulator
        .code_of_kind("douyin", "tt-a", "guest-7", true)
        .await;
    let guest = tt.code_to_session(None, Some(&anonymous)).await.unwrap();
    assert!(guest.anonymous_openid.is_some());
    assert!(guest.openid.is_none() && guest.session_key.is_none());
    refused_with(tt.code_to_session(None, Some(&anonymous)).await, 40019);

    // A bad anonymous code refuses the request without using up its good login code.
    let code = emulator.code("douyin", "tt-a", "alice").await;
    refused_with(
        tt.code_to_session(Some(&code), Some("made-up")).await,
        40019,
    );
    tt.code_to_session(Some(&code), None).await.unwrap();

    let code = emulator.code("douyin", "tt-a", "alice").await;
    let wrong = DouyinClient::new(
        emulator.platforms.clone(),
        &format!("{}/douyin", emulator.base),
        "tt-a",
        "nope",
    );
    refused_with(wrong.code_to_session(Some(&code), None).await, 40017);
    assert!(matches!(
        tt.code_to_session(None, None).await,
        Err(PlatformError::BadAnswer(_))
    ));
    // The refused attempt left the code usable, and the ids are stable.
    let again = tt.code_to_session(Some(&code), None).await.unwrap();
    assert_eq!(again.openid, session.openid);
}

#[tokio::test]
async fn the_emulators_own_api_refuses_bad_requests() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    let (status, body) = emulator
        .post(
            "/emulator/codes",
            json!({ "platform": "wechat", "appid": "nope", "user": "a" }),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "app_not_registered");
    let (status, _) = emulator
        .post(
            "/emulator/apps",
            json!({ "platform": "myspace", "appid": "a", "secret": "b" }),
        )
        .await;
    assert_eq!(status, 400);
    emulator.register("wechat", "wx-a", "s", None).await;
    let (status, body) = emulator
        .post(
            "/emulator/codes",
            json!({ "platform": "wechat", "appid": "wx-a", "user": "a", "anonymous": true }),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

fn base64_len(text: &str) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
        .len()
}

/// An RSA key pair made by OpenSSL: (private PEM, public PEM).
fn openssl_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(status.status.success());
    };
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "key.pem",
    ]);
    run(&["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"]);
    (
        std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("pub.pem")).unwrap(),
    )
}

#[allow(clippy::disallowed_methods)] // A test of a real server that reads its own clock.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn alipay_auth_codes_trade_through_the_signed_gateway() {
    use cloudlet_platforms::alipay::AlipayClient;

    let emulator = Emulator::start(EmulatorOptions::default()).await;
    let (private_pem, public_pem) = openssl_key_pair();
    let (status, registered) = emulator
        .post(
            "/emulator/apps",
            json!({ "platform": "alipay", "app_id": "2021000000000001", "app_public_key": public_pem }),
        )
        .await;
    assert_eq!(status, 201);
    let alipay_public_key = registered["alipay_public_key"].as_str().unwrap().to_owned();
    let gateway = format!("{}/alipay/gateway.do", emulator.base);
    let client = AlipayClient::new(
        emulator.platforms.clone(),
        &gateway,
        "2021000000000001",
        &private_pem,
        &alipay_public_key,
    )
    .unwrap();

    let code = emulator.code("alipay", "2021000000000001", "alice").await;
    let token = client.oauth_token(&code, now()).await.unwrap();
    let user_id = token.user_id.clone().unwrap();
    assert!(
        user_id.starts_with("2088") && user_id.len() == 16,
        "{user_id}"
    );
    assert!(!token.access_token.is_empty());
    match client.oauth_token(&code, now()).await {
        Err(PlatformError::Refused {
            code: 40002,
            message,
        }) => assert!(message.starts_with("isv.code-invalid"), "{message}"),
        other => panic!("{other:?}"),
    }
    let again = client
        .oauth_token(
            &emulator.code("alipay", "2021000000000001", "alice").await,
            now(),
        )
        .await
        .unwrap();
    assert_eq!(again.user_id, token.user_id);

    // A stale timestamp, and a request signed with a key the gateway does not know.
    let code = emulator.code("alipay", "2021000000000001", "alice").await;
    match client.oauth_token(&code, now() - 3600).await {
        Err(PlatformError::Refused { message, .. }) => {
            assert!(message.contains("isv.invalid-timestamp"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let (other_private, _) = openssl_key_pair();
    let impostor = AlipayClient::new(
        emulator.platforms.clone(),
        &gateway,
        "2021000000000001",
        &other_private,
        &alipay_public_key,
    )
    .unwrap();
    match impostor.oauth_token(&code, now()).await {
        Err(PlatformError::Refused { message, .. }) => {
            assert!(message.contains("isv.invalid-signature"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // The refused attempts left the code usable.
    client.oauth_token(&code, now()).await.unwrap();

    // The replies are signed: a client that trusts another Alipay key refuses them.
    let (_, wrong_alipay_key) = openssl_key_pair();
    let fooled = AlipayClient::new(
        emulator.platforms.clone(),
        &gateway,
        "2021000000000001",
        &private_pem,
        &wrong_alipay_key,
    )
    .unwrap();
    let code = emulator.code("alipay", "2021000000000001", "alice").await;
    assert!(matches!(
        fooled.oauth_token(&code, now()).await,
        Err(PlatformError::Crypto(_))
    ));
}

#[tokio::test]
async fn alipay_apps_in_openid_mode_get_open_ids() {
    use cloudlet_platforms::alipay::AlipayClient;

    let emulator = Emulator::start(EmulatorOptions::default()).await;
    let (private_pem, public_pem) = openssl_key_pair();
    let (_, registered) = emulator
        .post(
            "/emulator/apps",
            json!({ "platform": "alipay", "app_id": "2021000000000002", "app_public_key": public_pem, "open_id_mode": true }),
        )
        .await;
    let client = AlipayClient::new(
        emulator.platforms.clone(),
        &format!("{}/alipay/gateway.do", emulator.base),
        "2021000000000002",
        &private_pem,
        registered["alipay_public_key"].as_str().unwrap(),
    )
    .unwrap();
    let token = client
        .oauth_token(
            &emulator.code("alipay", "2021000000000002", "alice").await,
            now(),
        )
        .await
        .unwrap();
    assert!(token.user_id.is_none());
    assert!(token.open_id.is_some());
}

/// A WeChat app `wx-shop` with the template `shipped` (`thing1`, `time2`), and alice logged in:
/// her openid, from the client's own `code_to_session`.
async fn shop_with_alice(emulator: &Emulator) -> (WeChatClient, String) {
    emulator
        .register("wechat", "wx-shop", "shop-secret", None)
        .await;
    let (status, body) = emulator
        .post(
            "/emulator/wechat/templates",
            json!({ "appid": "wx-shop", "template_id": "shipped", "keys": { "thing1": "thing", "time2": "time" } }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let shop = emulator.wechat("wx-shop", "shop-secret");
    let alice = shop
        .code_to_session(&emulator.code("wechat", "wx-shop", "alice").await)
        .await
        .unwrap()
        .openid;
    (shop, alice)
}

async fn grant(emulator: &Emulator, openid: &str, grant: Value) {
    let mut body = json!({ "appid": "wx-shop", "openid": openid, "template_id": "shipped" });
    body.as_object_mut()
        .unwrap()
        .extend(grant.as_object().unwrap().clone());
    let (status, answer) = emulator.post("/emulator/wechat/subscriptions", body).await;
    assert_eq!(status, 201, "{answer}");
}

fn shipped(touser: &str) -> SubscribeMessage {
    SubscribeMessage {
        touser: touser.to_owned(),
        template_id: "shipped".to_owned(),
        page: Some("pages/order?id=7".to_owned()),
        data: BTreeMap::from([
            ("thing1".to_owned(), "Your order shipped".to_owned()),
            ("time2".to_owned(), "2026-12-02 15:01".to_owned()),
        ]),
        miniprogram_state: None,
        lang: None,
    }
}

#[tokio::test]
async fn wechat_subscribe_messages_reach_the_user_once_per_grant() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    let (shop, alice) = shop_with_alice(&emulator).await;
    let token = shop.stable_token(false).await.unwrap().token;
    grant(&emulator, &alice, json!({ "times": 1 })).await;

    let message = SubscribeMessage {
        miniprogram_state: Some(MiniProgramState::Trial),
        lang: Some(Lang::EnUs),
        ..shipped(&alice)
    };
    shop.send_subscribe_message(&token, &message).await.unwrap();
    let (status, inbox) = emulator
        .get(&format!(
            "/emulator/wechat/messages?appid=wx-shop&openid={alice}"
        ))
        .await;
    assert_eq!(status, 200);
    let received = inbox["messages"].as_array().unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["user"], "alice");
    assert_eq!(received[0]["template_id"], "shipped");
    assert_eq!(received[0]["page"], "pages/order?id=7");
    assert_eq!(received[0]["data"]["thing1"], "Your order shipped");
    assert_eq!(received[0]["data"]["time2"], "2026-12-02 15:01");
    assert_eq!(received[0]["miniprogram_state"], "trial");
    assert_eq!(received[0]["lang"], "en_US");

    // The one-time grant was used by the first send.
    let second = shop.send_subscribe_message(&token, &shipped(&alice)).await;
    assert!(
        matches!(second, Err(SubscribeError::NoSubscription { .. })),
        "{second:?}"
    );
    assert!(!second.unwrap_err().is_retryable());

    // A long-term subscription is not used up.
    grant(&emulator, &alice, json!({ "long_term": true })).await;
    for _ in 0..2 {
        shop.send_subscribe_message(&token, &shipped(&alice))
            .await
            .unwrap();
    }
    let (_, inbox) = emulator
        .get(&format!(
            "/emulator/wechat/messages?appid=wx-shop&openid={alice}"
        ))
        .await;
    assert_eq!(inbox["messages"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn wechat_subscribe_refusals_say_what_to_do() {
    let emulator = Emulator::start(EmulatorOptions::default()).await;
    let (shop, alice) = shop_with_alice(&emulator).await;
    grant(&emulator, &alice, json!({ "times": 1 })).await;
    let token = shop.stable_token(false).await.unwrap().token;

    // Caller errors: the user, the template, the data.
    let invalid = |result: Result<(), SubscribeError>, expected: i64| match result {
        Err(error @ SubscribeError::InvalidMessage { code, .. }) if code == expected => {
            assert!(!error.is_retryable());
            error.to_string()
        }
        other => panic!("expected InvalidMessage {expected}, got {other:?}"),
    };
    invalid(
        shop.send_subscribe_message(&token, &shipped("o-not-a-user"))
            .await,
        40003,
    );
    let unknown_template = SubscribeMessage {
        template_id: "made-up".to_owned(),
        ..shipped(&alice)
    };
    invalid(
        shop.send_subscribe_message(&token, &unknown_template).await,
        40037,
    );
    let mut too_long = shipped(&alice);
    too_long.data.insert("thing1".to_owned(), "x".repeat(21));
    let problem = invalid(shop.send_subscribe_message(&token, &too_long).await, 47003);
    assert!(problem.contains("data.thing1"), "{problem}");
    let mut missing = shipped(&alice);
    missing.data.remove("time2");
    let problem = invalid(shop.send_subscribe_message(&token, &missing).await, 47003);
    assert!(problem.contains("data.time2"), "{problem}");

    // Token problems: refresh and retry. A made-up token, and one a forced refresh replaced.
    let stale = |result: Result<(), SubscribeError>| match result {
        Err(error @ SubscribeError::StaleToken { code: 40001, .. }) => {
            assert!(error.is_retryable())
        }
        other => panic!("expected StaleToken 40001, got {other:?}"),
    };
    stale(
        shop.send_subscribe_message("made-up", &shipped(&alice))
            .await,
    );
    shop.stable_token(true).await.unwrap();
    stale(shop.send_subscribe_message(&token, &shipped(&alice)).await);
    let token = shop.stable_token(false).await.unwrap().token;

    // WeChat busy: retryable, and nothing used up.
    let (status, _) = emulator
        .post(
            "/emulator/wechat/busy",
            json!({ "appid": "wx-shop", "times": 1 }),
        )
        .await;
    assert_eq!(status, 200);
    match shop.send_subscribe_message(&token, &shipped(&alice)).await {
        Err(error @ SubscribeError::Unavailable(_)) => {
            assert!(error.is_retryable());
            assert_eq!(error.code(), Some(-1));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // None of the refusals used alice's grant; the retry does, and the next send finds none.
    shop.send_subscribe_message(&token, &shipped(&alice))
        .await
        .unwrap();
    match shop.send_subscribe_message(&token, &shipped(&alice)).await {
        Err(error @ SubscribeError::NoSubscription { .. }) => {
            assert_eq!(error.code(), Some(43101))
        }
        other => panic!("expected NoSubscription, got {other:?}"),
    }

    // A network failure: nothing listens on the port.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = WeChatClient::new(
        emulator.platforms.clone(),
        &format!("http://{closed}/wechat"),
        "wx-shop",
        "shop-secret",
    );
    match unreachable
        .send_subscribe_message(&token, &shipped(&alice))
        .await
    {
        Err(error @ SubscribeError::Unavailable(PlatformError::Unreachable(_))) => {
            assert!(error.is_retryable());
            assert_eq!(error.code(), None);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn wechat_expired_tokens_are_stale_and_a_fresh_one_sends() {
    let emulator = Emulator::start(EmulatorOptions {
        token_ttl: Duration::from_millis(300),
        ..EmulatorOptions::default()
    })
    .await;
    let (shop, alice) = shop_with_alice(&emulator).await;
    grant(&emulator, &alice, json!({})).await;
    let token = shop.stable_token(false).await.unwrap().token;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let expired = shop.send_subscribe_message(&token, &shipped(&alice)).await;
    assert!(
        matches!(expired, Err(SubscribeError::StaleToken { code: 42001, .. })),
        "{expired:?}"
    );
    let fresh = shop.stable_token(false).await.unwrap().token;
    shop.send_subscribe_message(&fresh, &shipped(&alice))
        .await
        .unwrap();
}

mod wechat_pay {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderMap, StatusCode};
    use cloudlet_platforms::wechat_pay::{
        JsapiOrder, Merchant, Notification, PlatformKeys, RefundRequest, Signed, WechatPayClient,
        decrypt, verify,
    };
    use rsa::RsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

    use super::*;

    const MCHID: &str = "1900000109";

    #[allow(clippy::disallowed_methods)] // The test's own clock is the system's.
    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }
    const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A72";
    const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";

    /// The merchant's notify_url: it keeps what it gets, refusing the first try.
    #[derive(Clone, Default)]
    struct Inbox(Arc<Mutex<Vec<(HeaderMap, String)>>>);

    #[allow(clippy::disallowed_methods)] // A merchant's server, not Cloudlet's API.
    async fn notify_server(inbox: Inbox) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let inbox = inbox.clone();
                async move {
                    let mut got = inbox.0.lock().unwrap();
                    got.push((headers, body));
                    if got.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn order(no: &str, total: i64, notify_url: &str) -> JsapiOrder {
        JsapiOrder {
            appid: "wx0000000000000001".into(),
            description: "a cup of tea".into(),
            out_trade_no: no.into(),
            time_expire: None,
            attach: Some("table=7".into()),
            notify_url: notify_url.into(),
            total_fen: total,
            payer_openid: "oUser".into(),
        }
    }

    #[tokio::test]
    async fn orders_are_signed_placed_paid_notified_and_closed_as_wechat_pay_does() {
        let emulator = Emulator::start(EmulatorOptions {
            pay_notify_retries: vec![Duration::from_millis(100); 3],
            ..EmulatorOptions::default()
        })
        .await;
        let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let (status, registered) = emulator
            .post(
                "/emulator/wechatpay/merchants",
                json!({
                    "mchid": MCHID, "serial_no": SERIAL, "api_v3_key": API_V3_KEY,
                    "public_key": key.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
                }),
            )
            .await;
        assert_eq!(status, 200, "{registered}");
        let keys = PlatformKeys::default()
            .with(
                registered["public_key_id"].as_str().unwrap(),
                registered["public_key"].as_str().unwrap(),
            )
            .unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let base = format!("{}/wechatpay", emulator.base);
        let client = WechatPayClient::new(
            emulator.platforms.clone(),
            &base,
            Merchant::new(MCHID, SERIAL, &pem).unwrap(),
            keys.clone(),
        );
        let inbox = Inbox::default();
        let notify_url = notify_server(inbox.clone()).await;

        // An order, placed twice alike: one prepay id. Another under its number: refused.
        let prepay = client
            .jsapi(&order("T-0001", 100, &notify_url), now())
            .await
            .unwrap();
        assert_eq!(
            client
                .jsapi(&order("T-0001", 100, &notify_url), now())
                .await
                .unwrap(),
            prepay
        );
        let taken = client
            .jsapi(&order("T-0001", 999, &notify_url), now())
            .await
            .unwrap_err();
        assert!(
            matches!(taken, PlatformError::PayRefused { status: 400, ref code, .. } if code == "INVALID_REQUEST"),
            "{taken}"
        );
        let unpaid = client.query("T-0001", now()).await.unwrap();
        assert_eq!(
            (&unpaid["trade_state"], &unpaid["amount"]["total"]),
            (&json!("NOTPAY"), &json!(100))
        );
        // wx.requestPayment's parameters verify with the merchant's public key.
        let params = client.request_payment("wx0000000000000001", &prepay, now());
        assert_eq!(params.package, format!("prepay_id={prepay}"));
        let message = format!(
            "wx0000000000000001\n{}\n{}\n{}\n",
            params.time_stamp, params.nonce_str, params.package
        );
        assert!(cloudlet_platforms::rsa2::verify(
            &(&key.to_public_key()).into(),
            &message,
            &params.pay_sign
        ));

        // The user pays: the notification comes, is retried after a 500, and verifies and
        // decrypts to the paid order.
        let (status, paid) = emulator
            .post(
                "/emulator/wechatpay/pay",
                json!({ "mchid": MCHID, "out_trade_no": "T-0001" }),
            )
            .await;
        assert_eq!(status, 200, "{paid}");
        for _ in 0..100 {
            if inbox.0.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = inbox.0.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "the first try was refused, the second taken");
        let (headers, body) = &got[1];
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap();
        let signed = Signed {
            timestamp: header("wechatpay-timestamp"),
            nonce: header("wechatpay-nonce"),
            signature: header("wechatpay-signature"),
            serial: header("wechatpay-serial"),
        };
        verify(&keys, signed, body.as_bytes(), now()).unwrap();
        let notification: Notification = serde_json::from_str(body).unwrap();
        assert_eq!(notification.event_type, "TRANSACTION.SUCCESS");
        let transaction: Value = serde_json::from_slice(
            &decrypt(API_V3_KEY.as_bytes(), &notification.resource).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                &transaction["out_trade_no"],
                &transaction["trade_state"],
                &transaction["amount"]["total"],
                &transaction["mchid"]
            ),
            (
                &json!("T-0001"),
                &json!("SUCCESS"),
                &json!(100),
                &json!(MCHID)
            )
        );
        assert_eq!(transaction["transaction_id"], paid["transaction_id"]);
        assert_eq!(
            client.query("T-0001", now()).await.unwrap()["trade_state"],
            "SUCCESS"
        );
        let closed = client.close("T-0001", now()).await.unwrap_err();
        assert!(
            matches!(closed, PlatformError::PayRefused { ref code, .. } if code == "ORDERPAID"),
            "{closed}"
        );

        // Refunds: a part, notified as REFUND.SUCCESS; the same number again is the same
        // refund; more than is left is refused.
        let refund = |no: &str, fen: i64| RefundRequest {
            out_trade_no: "T-0001".into(),
            out_refund_no: no.into(),
            reason: Some("cold tea".into()),
            notify_url: Some(notify_url.clone()),
            refund_fen: fen,
            total_fen: 100,
        };
        let first = client.refund(&refund("R-1", 60), now()).await.unwrap();
        assert_eq!(
            (&first["status"], &first["amount"]["refund"]),
            (&json!("PROCESSING"), &json!(60))
        );
        let again = client.refund(&refund("R-1", 60), now()).await.unwrap();
        assert_eq!(again["refund_id"], first["refund_id"]);
        let too_much = client.refund(&refund("R-2", 41), now()).await.unwrap_err();
        assert!(
            matches!(too_much, PlatformError::PayRefused { status: 403, ref code, .. } if code == "NOT_ENOUGH"),
            "{too_much}"
        );
        assert_eq!(
            client.query_refund("R-1", now()).await.unwrap()["status"],
            "SUCCESS"
        );
        for _ in 0..100 {
            if inbox.0.lock().unwrap().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (headers, body) = inbox.0.lock().unwrap()[2].clone();
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let (ts, nonce, signature, serial) = (
            header("wechatpay-timestamp"),
            header("wechatpay-nonce"),
            header("wechatpay-signature"),
            header("wechatpay-serial"),
        );
        let signed = Signed {
            timestamp: &ts,
            nonce: &nonce,
            signature: &signature,
            serial: &serial,
        };
        verify(&keys, signed, body.as_bytes(), now()).unwrap();
        let notification: Notification = serde_json::from_str(&body).unwrap();
        assert_eq!(notification.event_type, "REFUND.SUCCESS");
        let refunded: Value = serde_json::from_slice(
            &decrypt(API_V3_KEY.as_bytes(), &notification.resource).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                &refunded["out_refund_no"],
                &refunded["refund_status"],
                &refunded["amount"]["refund"]
            ),
            (&json!("R-1"), &json!("SUCCESS"), &json!(60))
        );

        // An unpaid order closes; an unknown one is not there.
        client
            .jsapi(&order("T|0002", 1, &notify_url), now())
            .await
            .unwrap();
        client.close("T|0002", now()).await.unwrap();
        assert_eq!(
            client.query("T|0002", now()).await.unwrap()["trade_state"],
            "CLOSED"
        );
        let missing = client.query("T-9999", now()).await.unwrap_err();
        assert!(
            matches!(missing, PlatformError::PayRefused { status: 404, ref code, .. } if code == "ORDER_NOT_EXIST")
        );

        // Another key signing as the merchant: SIGN_ERROR. A reply signed by another key than
        // the one configured: not believed.
        let stranger = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let forged = WechatPayClient::new(
            emulator.platforms.clone(),
            &base,
            Merchant::new(
                MCHID,
                SERIAL,
                &stranger.to_pkcs8_pem(LineEnding::LF).unwrap(),
            )
            .unwrap(),
            keys.clone(),
        );
        let refused = forged.query("T-0001", now()).await.unwrap_err();
        assert!(
            matches!(refused, PlatformError::PayRefused { status: 401, ref code, .. } if code == "SIGN_ERROR"),
            "{refused}"
        );
        let wrong_keys = PlatformKeys::default()
            .with(
                registered["public_key_id"].as_str().unwrap(),
                &stranger
                    .to_public_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap(),
            )
            .unwrap();
        let credulous = WechatPayClient::new(
            emulator.platforms.clone(),
            &base,
            Merchant::new(MCHID, SERIAL, &pem).unwrap(),
            wrong_keys,
        );
        assert!(matches!(
            credulous.query("T-0001", now()).await.unwrap_err(),
            PlatformError::Crypto(_)
        ));
    }
}

/// A platform whose answer never ends (chunked, no length): the client gives up past 1 MiB
/// instead of holding it all.
#[tokio::test]
#[allow(clippy::disallowed_methods)] // A misbehaving platform, not Cloudlet's API.
async fn an_endless_chunked_answer_is_refused_past_the_limit() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let endless = || async {
        let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
        axum::body::Body::from_stream(futures_util::stream::repeat_with(move || {
            Ok::<_, std::io::Error>(chunk.clone())
        }))
    };
    let app = axum::Router::new().route("/sns/jscode2session", axum::routing::get(endless));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = WeChatClient::new(
        PlatformHttp::new(Duration::from_secs(5)).unwrap(),
        &base,
        "wx-a",
        "secret",
    );
    let refused = client.code_to_session("code").await.unwrap_err();
    assert!(
        matches!(&refused, PlatformError::BadAnswer(m) if m.contains("too large")),
        "{refused}"
    );
}

/// Alipay's trade APIs through the signed gateway: a mini-program trade created, found, paid
/// (its form notification verifies by the V1 rule), refunded in part and then whole (each
/// notified on the payment's URL), and an unpaid one closed.
#[tokio::test]
async fn alipay_trades_are_created_paid_notified_refunded_and_closed() {
    use std::sync::{Arc, Mutex};

    use cloudlet_platforms::alipay::{AlipayClient, NotifyRule, TradeCreate, verify_notify};

    let emulator = Emulator::start(EmulatorOptions {
        pay_notify_retries: vec![Duration::from_millis(100); 3],
        ..EmulatorOptions::default()
    })
    .await;
    let (private_pem, public_pem) = openssl_key_pair();
    let (_, registered) = emulator
        .post(
            "/emulator/apps",
            json!({ "platform": "alipay", "app_id": "2021000000000002", "app_public_key": public_pem }),
        )
        .await;
    let alipay_public_key = registered["alipay_public_key"].as_str().unwrap().to_owned();
    let client = AlipayClient::new(
        emulator.platforms.clone(),
        &format!("{}/alipay/gateway.do", emulator.base),
        "2021000000000002",
        &private_pem,
        &alipay_public_key,
    )
    .unwrap();

    // The merchant's notify_url: it keeps each form, answering `success` after the first.
    let forms: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let notify_url = format!("http://{}/notify", listener.local_addr().unwrap());
    let kept = Arc::clone(&forms);
    #[allow(clippy::disallowed_methods)] // A merchant's server, not Cloudlet's API.
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: String| {
            let kept = Arc::clone(&kept);
            async move {
                let mut got = kept.lock().unwrap();
                got.push(body);
                if got.len() == 1 { "fail" } else { "success" }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let trade = |no: &str, fen: i64| TradeCreate {
        out_trade_no: no.into(),
        total_fen: fen,
        subject: "A pot of tea".into(),
        buyer: "2088102146225135".into(),
        notify_url: notify_url.clone(),
        time_expire: None,
    };
    let trade_no = client
        .trade_create(&trade("A_0001", 150), now())
        .await
        .unwrap();
    assert_eq!(
        client
            .trade_create(&trade("A_0001", 150), now())
            .await
            .unwrap(),
        trade_no,
        "the same trade again"
    );
    let changed = client
        .trade_create(&trade("A_0001", 999), now())
        .await
        .unwrap_err();
    assert!(
        matches!(changed, PlatformError::PayRefused { ref code, .. } if code == "ACQ.CONTEXT_INCONSISTENT"),
        "{changed}"
    );
    let found = client.trade_query("A_0001", now()).await.unwrap();
    assert_eq!(
        (&found["trade_status"], &found["total_amount"]),
        (&json!("WAIT_BUYER_PAY"), &json!("1.50"))
    );

    let (status, paid) = emulator
        .post(
            "/emulator/alipay/pay",
            json!({ "app_id": "2021000000000002", "out_trade_no": "A_0001" }),
        )
        .await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["trade_no"], json!(trade_no));
    let key = cloudlet_platforms::rsa2::public_key(&alipay_public_key).unwrap();
    let wait_for = |count: usize| {
        let forms = Arc::clone(&forms);
        async move {
            for _ in 0..100 {
                if forms.lock().unwrap().len() >= count {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            forms.lock().unwrap().clone()
        }
    };
    let got = wait_for(2).await;
    assert_eq!(got.len(), 2, "refused once with `fail`, then taken");
    let params: Vec<(String, String)> = form_urlencoded::parse(got[1].as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(verify_notify(&key, &params, NotifyRule::WithoutSignType));
    let field = |params: &[(String, String)], name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        field(&params, "trade_status").as_deref(),
        Some("TRADE_SUCCESS")
    );
    assert_eq!(field(&params, "total_amount").as_deref(), Some("1.50"));
    assert_eq!(field(&params, "out_trade_no").as_deref(), Some("A_0001"));
    // A field changed after signing no longer verifies.
    let mut changed = params.clone();
    for (k, v) in &mut changed {
        if k == "total_amount" {
            *v = "0.01".into();
        }
    }
    assert!(!verify_notify(&key, &changed, NotifyRule::WithoutSignType));

    // A part refunded, then the rest; the same request number again moves no money.
    let part = client
        .trade_refund("A_0001", "R1", 50, Some("cold"), now())
        .await
        .unwrap();
    assert_eq!(
        (&part["fund_change"], &part["refund_fee"]),
        (&json!("Y"), &json!("0.50"))
    );
    let again = client
        .trade_refund("A_0001", "R1", 50, Some("cold"), now())
        .await
        .unwrap();
    assert_eq!(again["fund_change"], "N");
    let too_much = client
        .trade_refund("A_0001", "R2", 101, None, now())
        .await
        .unwrap_err();
    assert!(
        matches!(too_much, PlatformError::PayRefused { .. }),
        "{too_much}"
    );
    let queried = client.refund_query("A_0001", "R1", now()).await.unwrap();
    assert_eq!(
        (&queried["refund_status"], &queried["refund_amount"]),
        (&json!("REFUND_SUCCESS"), &json!("0.50"))
    );
    let none = client.refund_query("A_0001", "R9", now()).await.unwrap();
    assert!(none.get("refund_status").is_none(), "{none}");
    let got = wait_for(3).await;
    let params: Vec<(String, String)> = form_urlencoded::parse(got[2].as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert!(verify_notify(&key, &params, NotifyRule::WithoutSignType));
    assert_eq!(
        (
            field(&params, "trade_status").as_deref(),
            field(&params, "refund_fee").as_deref(),
            field(&params, "out_biz_no").as_deref()
        ),
        (Some("TRADE_SUCCESS"), Some("0.50"), Some("R1"))
    );
    client
        .trade_refund("A_0001", "R2", 100, None, now())
        .await
        .unwrap();
    let got = wait_for(4).await;
    let params: Vec<(String, String)> = form_urlencoded::parse(got[3].as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        field(&params, "trade_status").as_deref(),
        Some("TRADE_CLOSED")
    );
    assert!(
        field(&params, "gmt_refund").is_some(),
        "a full refund, not a timeout"
    );

    // An unpaid trade closes; an unknown one is not there.
    client
        .trade_create(&trade("A_0002", 10), now())
        .await
        .unwrap();
    client.trade_close("A_0002", now()).await.unwrap();
    assert_eq!(
        client.trade_query("A_0002", now()).await.unwrap()["trade_status"],
        "TRADE_CLOSED"
    );
    let missing = client.trade_query("A_0009", now()).await.unwrap_err();
    assert!(
        matches!(missing, PlatformError::PayRefused { ref code, .. } if code == "ACQ.TRADE_NOT_EXIST"),
        "{missing}"
    );
}
