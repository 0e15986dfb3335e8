//! End-user login and sessions, driven end to end: the server trades codes with the platform
//! emulator over real HTTP, exactly as it would with WeChat, QQ and Douyin.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Expect, TestApp, raw_request_from};

/// The emulator on an ephemeral port.
pub(crate) struct Emulator {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl Emulator {
    pub(crate) async fn start() -> Emulator {
        Emulator::start_with(cloudlet_emulator::EmulatorOptions::default()).await
    }

    pub(crate) async fn start_with(options: cloudlet_emulator::EmulatorOptions) -> Emulator {
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

    pub(crate) async fn register(
        &self,
        platform: &str,
        appid: &str,
        secret: &str,
        open_platform: Option<&str>,
    ) {
        let response = self
            .http
            .post(format!("{}/emulator/apps", self.base))
            .json(&json!({ "platform": platform, "appid": appid, "secret": secret, "open_platform": open_platform }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }

    pub(crate) async fn code(
        &self,
        platform: &str,
        appid: &str,
        user: &str,
        anonymous: bool,
    ) -> String {
        self.issue(
            json!({ "platform": platform, "appid": appid, "user": user, "anonymous": anonymous }),
        )
        .await
    }

    /// A WeChat `getPhoneNumber` code of `user` in `appid`, for `phone`.
    pub(crate) async fn phone_code(&self, appid: &str, user: &str, phone: &str) -> String {
        self.issue(json!({ "platform": "wechat", "appid": appid, "user": user, "phone": phone }))
            .await
    }

    /// A code the emulator issues as `request` asks (`POST /emulator/codes`).
    async fn issue(&self, request: Value) -> String {
        let body: Value = self
            .http
            .post(format!("{}/emulator/codes", self.base))
            .json(&request)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["code"].as_str().unwrap().to_owned()
    }
}

impl Emulator {
    /// Registers a WeChat, QQ or Douyin app with the emulator and configures it on `app` as
    /// `provider`, pointed at the emulator.
    pub(crate) async fn connect(
        &self,
        t: &TestApp,
        app: &str,
        provider: &str,
        appid: &str,
        secret: &str,
    ) {
        let platform = provider.split('-').next().unwrap();
        self.register(platform, appid, secret, None).await;
        let base_url = format!("{}/{platform}", self.base);
        t.configure(
            app,
            provider,
            json!({ "appid": appid, "secret": secret, "base_url": base_url }),
        )
        .await;
    }

    /// Logs `user` in to `app` through `provider` with a fresh code; expects success.
    pub(crate) async fn login_as(
        &self,
        t: &TestApp,
        app: &str,
        provider: &str,
        appid: &str,
        user: &str,
    ) -> Value {
        let platform = provider.split('-').next().unwrap();
        let code = self.code(platform, appid, user, false).await;
        t.login(app, json!({ "provider": provider, "code": code }))
            .expect(StatusCode::CREATED)
            .await
    }
}

impl TestApp {
    pub(crate) async fn configure(&self, app: &str, provider: &str, config: Value) -> Value {
        self.admin(
            Method::PUT,
            &format!("/v1/admin/apps/{app}/auth/providers/{provider}"),
        )
        .json(&config)
        .expect(StatusCode::OK)
        .await
    }

    /// Logs `user` in through the dev provider; expects success.
    pub(crate) async fn dev_login(&self, app: &str, user: &str) -> Value {
        self.login(app, json!({ "provider": "dev", "user": user }))
            .expect(StatusCode::CREATED)
            .await
    }

    pub(crate) fn login(&self, app: &str, body: Value) -> reqwest::RequestBuilder {
        self.request(Method::POST, &format!("/v1/apps/{app}/auth/sessions"))
            .json(&body)
    }

    pub(crate) fn as_user(
        &self,
        method: Method,
        app: &str,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.request(method, &format!("/v1/apps/{app}{path}"))
            .bearer_auth(token)
    }
}

pub(crate) fn token(grant: &Value) -> &str {
    grant["access_token"].as_str().unwrap()
}

#[tokio::test]
async fn wechat_login_through_the_emulator_gives_a_session_and_a_token() {
    let emulator = Emulator::start().await;
    emulator
        .register("wechat", "wx-shop", "shop-secret", None)
        .await;
    let t = TestApp::start().await;
    t.create_app("shop").await;

    let view = t
        .configure(
            "shop",
            "wechat",
            json!({ "appid": "wx-shop", "secret": "shop-secret", "base_url": format!("{}/wechat", emulator.base) }),
        )
        .await;
    assert_eq!(view["secret"], "********");
    assert_eq!(view["enabled"], true);
    let shown = t
        .admin(Method::GET, "/v1/admin/apps/shop/auth/providers/wechat")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(shown["appid"], "wx-shop");
    assert_eq!(shown["secret"], "********");

    let code = emulator.code("wechat", "wx-shop", "alice", false).await;
    let grant = t
        .login("shop", json!({ "provider": "wechat", "code": code }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(grant["token_type"], "Bearer");
    assert_eq!(grant["expires_in"], 900);
    assert!(grant["session_id"].as_str().unwrap().len() > 40);
    let user_id = grant["user"]["id"].as_str().unwrap().to_owned();

    let me = t
        .as_user(Method::GET, "shop", "/auth/user", token(&grant))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(me["id"], user_id.as_str());

    // The same WeChat user logs in again: the same Cloudlet user.
    let again = t
        .login("shop", json!({ "provider": "wechat", "code": emulator.code("wechat", "wx-shop", "alice", false).await }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(again["user"]["id"], user_id.as_str());
    let bob = t
        .login("shop", json!({ "provider": "wechat", "code": emulator.code("wechat", "wx-shop", "bob", false).await }))
        .expect(StatusCode::CREATED)
        .await;
    assert_ne!(bob["user"]["id"], user_id.as_str());

    // A used code, a made-up code.
    t.login("shop", json!({ "provider": "wechat", "code": code }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login_code")
        .await;
    t.login("shop", json!({ "provider": "wechat", "code": "nope" }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login_code")
        .await;
    t.login("shop", json!({ "provider": "wechat" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_login_request")
        .await;

    // The secret is sealed at rest: in no file, no database, no WAL.
    assert!(!t.stored_anywhere(b"shop-secret"), "the secret is stored");

    // A wrong secret is the operator's problem, and says so.
    t.configure(
        "shop",
        "wechat",
        json!({ "appid": "wx-shop", "secret": "wrong", "base_url": format!("{}/wechat", emulator.base) }),
    )
    .await;
    t.login("shop", json!({ "provider": "wechat", "code": emulator.code("wechat", "wx-shop", "alice", false).await }))
        .expect_error(StatusCode::BAD_GATEWAY, "provider_misconfigured")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn one_developers_mini_programs_share_users_through_the_unionid() {
    let emulator = Emulator::start().await;
    emulator
        .register("wechat", "wx-shop", "s1", Some("acme"))
        .await;
    emulator
        .register("wechat", "wx-blog", "s2", Some("acme"))
        .await;
    let t = TestApp::start().await;
    t.create_app("acme").await;
    let wechat = format!("{}/wechat", emulator.base);
    t.configure(
        "acme",
        "wechat",
        json!({ "appid": "wx-shop", "secret": "s1", "base_url": wechat }),
    )
    .await;
    t.configure(
        "acme",
        "wechat-blog",
        json!({ "appid": "wx-blog", "secret": "s2", "base_url": wechat }),
    )
    .await;

    let in_shop = emulator
        .login_as(&t, "acme", "wechat", "wx-shop", "alice")
        .await;
    let in_blog = emulator
        .login_as(&t, "acme", "wechat-blog", "wx-blog", "alice")
        .await;
    assert_eq!(in_shop["user"]["id"], in_blog["user"]["id"]);
    let bob = emulator
        .login_as(&t, "acme", "wechat-blog", "wx-blog", "bob")
        .await;
    assert_ne!(bob["user"]["id"], in_shop["user"]["id"]);
    t.stop().await;
}

#[tokio::test]
async fn qq_and_douyin_logins_work_the_same_way() {
    let emulator = Emulator::start().await;
    let t = TestApp::start().await;
    t.create_app("multi").await;
    emulator.connect(&t, "multi", "qq", "qq-1", "qs").await;
    emulator.connect(&t, "multi", "douyin", "tt-1", "ds").await;

    let qq = emulator.login_as(&t, "multi", "qq", "qq-1", "alice").await;
    let douyin = emulator
        .login_as(&t, "multi", "douyin", "tt-1", "alice")
        .await;
    assert_ne!(
        qq["user"]["id"], douyin["user"]["id"],
        "no unionid, no link across platforms"
    );
    let guest = t
        .login("multi", json!({ "provider": "douyin", "anonymous_code": emulator.code("douyin", "tt-1", "guest", true).await }))
        .expect(StatusCode::CREATED)
        .await;
    assert_ne!(guest["user"]["id"], douyin["user"]["id"]);
    t.login("multi", json!({ "provider": "douyin", "code": "bad" }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login_code")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn providers_are_off_until_configured_except_password() {
    let t = TestApp::start().await;
    t.create_app("plain").await;
    for body in [
        json!({ "provider": "dev", "user": "alice" }),
        json!({ "provider": "anonymous" }),
        json!({ "provider": "wechat", "code": "x" }),
    ] {
        t.login("plain", body)
            .expect_error(StatusCode::FORBIDDEN, "provider_not_enabled")
            .await;
    }
    t.login("plain", json!({ "provider": "github", "code": "x" }))
        .expect_error(StatusCode::BAD_REQUEST, "unknown_provider")
        .await;
    t.login("ghost", json!({ "provider": "anonymous" }))
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/plain/auth/providers/wechat")
        .json(&json!({ "appid": "wx" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_provider_config")
        .await;

    t.configure("plain", "dev", json!({ "enabled": true }))
        .await;
    t.configure("plain", "anonymous", json!({ "enabled": true }))
        .await;
    let alice = t.dev_login("plain", "alice").await;
    let again = t.dev_login("plain", "alice").await;
    assert_eq!(alice["user"]["id"], again["user"]["id"]);
    let a1 = t
        .login("plain", json!({ "provider": "anonymous" }))
        .expect(StatusCode::CREATED)
        .await;
    let a2 = t
        .login("plain", json!({ "provider": "anonymous" }))
        .expect(StatusCode::CREATED)
        .await;
    assert_ne!(
        a1["user"]["id"], a2["user"]["id"],
        "each anonymous login is a new user"
    );

    t.configure("plain", "dev", json!({ "enabled": false }))
        .await;
    t.login("plain", json!({ "provider": "dev", "user": "alice" }))
        .expect_error(StatusCode::FORBIDDEN, "provider_not_enabled")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn password_accounts_sign_up_and_log_in() {
    let t = TestApp::start().await;
    t.create_app("pw").await;
    let sign_up = |email: &str, password: &str| {
        t.request(Method::POST, "/v1/apps/pw/auth/users")
            .json(&json!({ "email": email, "password": password }))
    };
    let created = sign_up("Alice@Example.com", "correct horse")
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(created["user"]["email"], "alice@example.com");
    sign_up("alice@example.com", "another one")
        .expect_error(StatusCode::CONFLICT, "email_taken")
        .await;
    sign_up("bob@example.com", "short")
        .expect_error(StatusCode::BAD_REQUEST, "weak_password")
        .await;
    sign_up("not-an-email", "long enough")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_email")
        .await;

    let login = |email: &str, password: &str| {
        t.login(
            "pw",
            json!({ "provider": "password", "email": email, "password": password }),
        )
    };
    let ok = login("alice@example.com", "correct horse")
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(ok["user"]["id"], created["user"]["id"]);
    login("alice@example.com", "wrong horse")
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login")
        .await;
    login("nobody@example.com", "correct horse")
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login")
        .await;

    t.configure("pw", "password", json!({ "enabled": false }))
        .await;
    login("alice@example.com", "correct horse")
        .expect_error(StatusCode::FORBIDDEN, "provider_not_enabled")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn tokens_are_refused_when_forged_expired_foreign_or_revoked() {
    let t = TestApp::builder()
        // Short, so that expiry is tested; long enough that the steps before it finish within
        // it on a loaded machine.
        .config(|c| c.auth.access_token_ttl_secs = 3)
        .start()
        .await;
    for app in ["one", "two"] {
        t.create_app(app).await;
        t.configure(app, "dev", json!({ "enabled": true })).await;
    }
    let grant = t.dev_login("one", "alice").await;
    let good = token(&grant);
    t.as_user(Method::GET, "one", "/auth/user", good)
        .expect(StatusCode::OK)
        .await;

    t.request(Method::GET, "/v1/apps/one/auth/user")
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;
    let mut forged = good.to_owned();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    t.as_user(Method::GET, "one", "/auth/user", &forged)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token")
        .await;
    t.as_user(Method::GET, "one", "/auth/user", "not.a.token")
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token")
        .await;
    t.as_user(Method::GET, "two", "/auth/user", good)
        .expect_error(StatusCode::UNAUTHORIZED, "token_app_mismatch")
        .await;

    // Logging out revokes at once.
    let other = t.dev_login("one", "bob").await;
    let response = t
        .as_user(
            Method::DELETE,
            "one",
            "/auth/sessions/current",
            token(&other),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.as_user(Method::GET, "one", "/auth/user", token(&other))
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;

    tokio::time::sleep(Duration::from_millis(3100)).await;
    t.as_user(Method::GET, "one", "/auth/user", good)
        .expect_error(StatusCode::UNAUTHORIZED, "token_expired")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn refreshing_rotates_the_session_id_and_a_replay_revokes_the_session() {
    let t = TestApp::start().await;
    t.create_app("rot").await;
    t.configure("rot", "dev", json!({ "enabled": true })).await;
    let first = t.dev_login("rot", "alice").await;
    let refresh = |session_id: &Value| {
        t.request(Method::POST, "/v1/apps/rot/auth/refresh")
            .json(&json!({ "session_id": session_id }))
    };
    let second = refresh(&first["session_id"]).expect(StatusCode::OK).await;
    assert_ne!(second["session_id"], first["session_id"]);
    assert_eq!(second["user"]["id"], first["user"]["id"]);
    t.as_user(Method::GET, "rot", "/auth/user", token(&second))
        .expect(StatusCode::OK)
        .await;

    // Someone replays the old session id: the whole session dies, the new id and tokens too.
    refresh(&first["session_id"])
        .expect_error(StatusCode::UNAUTHORIZED, "session_reused")
        .await;
    refresh(&second["session_id"])
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_session")
        .await;
    t.as_user(Method::GET, "rot", "/auth/user", token(&second))
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;
    refresh(&json!("cs_made_up"))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_session")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn users_edit_their_profile_delete_their_account_and_admins_revoke_sessions() {
    let t = TestApp::start().await;
    t.create_app("acct").await;
    t.configure("acct", "dev", json!({ "enabled": true })).await;
    let grant = t.dev_login("acct", "alice").await;
    let user_id = grant["user"]["id"].as_str().unwrap().to_owned();

    let updated = t
        .as_user(Method::PATCH, "acct", "/auth/user", token(&grant))
        .json(&json!({ "profile": { "nickname": "Alice", "city": "Hangzhou" } }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        updated["profile"],
        json!({ "nickname": "Alice", "city": "Hangzhou" })
    );
    let updated = t
        .as_user(Method::PATCH, "acct", "/auth/user", token(&grant))
        .json(&json!({ "profile": { "city": null } }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(updated["profile"], json!({ "nickname": "Alice" }));
    t.as_user(Method::PATCH, "acct", "/auth/user", token(&grant))
        .json(&json!({ "profile": { "bio": "x".repeat(20_000) } }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_profile")
        .await;

    // An admin sees the user's sessions and revokes one.
    let second = t.dev_login("acct", "alice").await;
    let sessions = t
        .admin(
            Method::GET,
            &format!("/v1/admin/apps/acct/users/{user_id}/sessions"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    let newest = sessions[0]["id"].as_str().unwrap();
    let response = t
        .admin(
            Method::DELETE,
            &format!("/v1/admin/apps/acct/sessions/{newest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.as_user(Method::GET, "acct", "/auth/user", token(&second))
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;
    t.admin(Method::GET, "/v1/admin/apps/acct/users/usr_nobody/sessions")
        .expect_error(StatusCode::NOT_FOUND, "user_not_found")
        .await;

    // Deleting the account ends every session.
    let response = t
        .as_user(Method::DELETE, "acct", "/auth/user", token(&grant))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.as_user(Method::GET, "acct", "/auth/user", token(&grant))
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;
    let fresh = t.dev_login("acct", "alice").await;
    assert_ne!(
        fresh["user"]["id"],
        user_id.as_str(),
        "a deleted account is gone for good"
    );
    t.stop().await;
}

#[tokio::test]
async fn logins_are_rate_limited_per_client_ip_and_per_app() {
    let emulator = Emulator::start().await;
    let t = TestApp::builder()
        .config(|c| {
            c.auth.logins_per_ip_per_minute = 1000;
            c.auth.logins_per_app_per_minute = 3;
        })
        .start()
        .await;
    for app in ["busy", "calm"] {
        t.create_app(app).await;
        t.configure(app, "dev", json!({ "enabled": true })).await;
        emulator
            .connect(&t, app, "wechat", &format!("wx-{app}"), "secret")
            .await;
    }
    for user in ["a", "b", "c"] {
        emulator
            .login_as(&t, "busy", "wechat", "wx-busy", user)
            .await;
    }
    let code = emulator.code("wechat", "wx-busy", "d", false).await;
    t.login("busy", json!({ "provider": "wechat", "code": code }))
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
        .await;
    // What calls no platform is not charged to the app, so that a flood of it can not lock the
    // app's users out: logins without a platform, sign-ups, refreshes.
    for _ in 0..5 {
        t.dev_login("busy", "a").await;
    }
    t.request(Method::POST, "/v1/apps/busy/auth/users")
        .json(&json!({ "email": "a@b.cd", "password": "correct horse battery staple" }))
        .expect(StatusCode::CREATED)
        .await;
    t.request(Method::POST, "/v1/apps/busy/auth/refresh")
        .json(&json!({ "session_id": "x" }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_session")
        .await;
    // Another app's bucket is its own.
    emulator
        .login_as(&t, "calm", "wechat", "wx-calm", "a")
        .await;
    t.stop().await;

    let t = TestApp::builder()
        .config(|c| c.auth.logins_per_ip_per_minute = 2)
        .start()
        .await;
    for app in ["one", "two"] {
        t.create_app(app).await;
        t.configure(app, "dev", json!({ "enabled": true })).await;
    }
    t.dev_login("one", "a").await;
    t.dev_login("two", "a").await;
    // This client has had its share, whatever the app.
    t.request(Method::POST, "/v1/apps/two/auth/users")
        .json(&json!({ "email": "a@b.cd", "password": "long enough" }))
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
        .await;
    t.stop().await;
}

/// An RSA key pair made by OpenSSL: (private PEM, public PEM).
pub(crate) fn openssl_key_pair() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ][..],
        &["pkey", "-in", "key.pem", "-pubout", "-out", "pub.pem"][..],
    ] {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success());
    }
    (
        std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("pub.pem")).unwrap(),
    )
}

#[tokio::test]
async fn alipay_login_goes_through_the_signed_gateway() {
    let emulator = Emulator::start().await;
    let (private_key, public_key) = openssl_key_pair();
    let registered: Value = emulator
        .http
        .post(format!("{}/emulator/apps", emulator.base))
        .json(&json!({ "platform": "alipay", "app_id": "2021000000000009", "app_public_key": public_key }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = TestApp::start().await;
    t.create_app("ali").await;
    let view = t
        .configure(
            "ali",
            "alipay",
            json!({
                "app_id": "2021000000000009",
                "private_key": private_key,
                "alipay_public_key": registered["alipay_public_key"],
                "base_url": format!("{}/alipay/gateway.do", emulator.base),
            }),
        )
        .await;
    assert_eq!(view["private_key"], "********");
    assert_eq!(view["app_id"], "2021000000000009");

    let code = emulator
        .code("alipay", "2021000000000009", "alice", false)
        .await;
    let grant = t
        .login("ali", json!({ "provider": "alipay", "code": code }))
        .expect(StatusCode::CREATED)
        .await;
    let again = t
        .login("ali", json!({ "provider": "alipay", "code": emulator.code("alipay", "2021000000000009", "alice", false).await }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(grant["user"]["id"], again["user"]["id"]);
    t.login("ali", json!({ "provider": "alipay", "code": code }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login_code")
        .await;

    // The private key is sealed at rest.
    let marker = private_key.lines().nth(5).unwrap();
    assert!(!t.stored_anywhere(marker.as_bytes()), "the key is stored");

    // Keys are checked when configured; a key Alipay does not know is the operator's problem.
    t.admin(Method::PUT, "/v1/admin/apps/ali/auth/providers/alipay")
        .json(&json!({ "app_id": "2021000000000009", "private_key": "not a key", "alipay_public_key": registered["alipay_public_key"] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_provider_config")
        .await;
    let (other_key, _) = openssl_key_pair();
    t.configure(
        "ali",
        "alipay",
        json!({
            "app_id": "2021000000000009",
            "private_key": other_key,
            "alipay_public_key": registered["alipay_public_key"],
            "base_url": format!("{}/alipay/gateway.do", emulator.base),
        }),
    )
    .await;
    t.login("ali", json!({ "provider": "alipay", "code": emulator.code("alipay", "2021000000000009", "alice", false).await }))
        .expect_error(StatusCode::BAD_GATEWAY, "provider_misconfigured")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn wechat_phone_numbers_bind_through_one_shared_access_token() {
    let emulator = Emulator::start().await;
    let t = TestApp::start().await;
    t.create_app("tel").await;
    emulator
        .connect(&t, "tel", "wechat", "wx-phone", "phone-secret")
        .await;
    let grant = emulator
        .login_as(&t, "tel", "wechat", "wx-phone", "alice")
        .await;
    let access = token(&grant).to_owned();
    let phone_code = |n: u32| {
        let emulator = &emulator;
        async move {
            let phone = format!("+86 1380013800{n}");
            emulator.phone_code("wx-phone", "alice", &phone).await
        }
    };
    let token_requests = || async {
        let stats: Value = emulator
            .http
            .get(format!("{}/emulator/stats", emulator.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["token_requests"].as_u64().unwrap()
    };

    // Five binds at once: one access token fetched, shared by all.
    let mut requests = Vec::new();
    for n in 0..5 {
        let code = phone_code(n).await;
        requests.push(tokio::spawn(
            t.as_user(Method::POST, "tel", "/auth/user/phone", &access)
                .json(&json!({ "code": code }))
                .send(),
        ));
    }
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(token_requests().await, 1);
    let me = t
        .as_user(Method::GET, "tel", "/auth/user", &access)
        .expect(StatusCode::OK)
        .await;
    assert!(
        me["phone"].as_str().unwrap().starts_with("+861380013800"),
        "{me}"
    );

    // A used code; and a token that someone else rotated is noticed and replaced once.
    let used = phone_code(7).await;
    t.as_user(Method::POST, "tel", "/auth/user/phone", &access)
        .json(&json!({ "code": used }))
        .expect(StatusCode::OK)
        .await;
    t.as_user(Method::POST, "tel", "/auth/user/phone", &access)
        .json(&json!({ "code": used }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_phone_code")
        .await;
    let forced = emulator
        .http
        .post(format!("{}/wechat/cgi-bin/stable_token", emulator.base))
        .json(&json!({ "grant_type": "client_credential", "appid": "wx-phone", "secret": "phone-secret", "force_refresh": true }))
        .send()
        .await
        .unwrap();
    assert!(forced.status().is_success());
    let bound = t
        .as_user(Method::POST, "tel", "/auth/user/phone", &access)
        .json(&json!({ "code": phone_code(9).await }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(bound["phone"], "+8613800138009");
    assert_eq!(
        token_requests().await,
        3,
        "the stale token was replaced with one fetch"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_deleted_accounts_tokens_stay_dead_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestApp::builder().data_dir(dir.path()).start().await;
    t.create_app("gone").await;
    t.configure("gone", "dev", json!({ "enabled": true })).await;
    let grant = t.dev_login("gone", "alice").await;
    let response = t
        .as_user(Method::DELETE, "gone", "/auth/user", token(&grant))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    t.stop().await;

    // A new process knows nothing in memory: the revocation must come from the database.
    let t = TestApp::builder().data_dir(dir.path()).start().await;
    t.as_user(Method::GET, "gone", "/auth/user", token(&grant))
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn a_token_naming_an_app_that_does_not_exist_touches_nothing() {
    use base64::Engine;
    let t = TestApp::start().await;
    let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    let forged = format!(
        "{}.{}.{}",
        part(r#"{"alg":"HS256","typ":"JWT","kid":"k"}"#),
        part(
            r#"{"iss":"cloudlet","aud":"ghost","sub":"u","sid":"s","prv":"dev","scope":"user","iat":1,"exp":99999999999}"#
        ),
        part("not a signature")
    );
    t.as_user(Method::GET, "ghost", "/auth/user", &forged)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_token")
        .await;
    assert!(!t.app_storage_exists("ghost"));
    assert_eq!(t.open_apps().await, 0);
    t.stop().await;
}

#[tokio::test]
async fn weak_passwords_and_malformed_emails_are_refused_with_their_codes() {
    let t = TestApp::start().await;
    t.create_app("pw").await;
    let sign_up = |email: &str, password: &str| {
        t.request(Method::POST, "/v1/apps/pw/auth/users")
            .json(&json!({ "email": email, "password": password }))
    };
    for weak in [
        "password",
        "12345678",
        "        ",
        "carol@example.com",
        "Carol@Example.com",
    ] {
        let refused = sign_up("carol@example.com", weak)
            .expect_error(StatusCode::BAD_REQUEST, "weak_password")
            .await;
        assert!(
            refused["error"]["message"].as_str().unwrap().len() > 20,
            "{refused}"
        );
    }
    for bad in ["a@@x.com", "a\u{0}b@x.com", "a b@x.com", "a@x", "a@b@x.com"] {
        sign_up(bad, "blue-kettle-91-marsh")
            .expect_error(StatusCode::BAD_REQUEST, "invalid_email")
            .await;
    }
    sign_up("carol@example.com", "blue-kettle-91-marsh")
        .expect(StatusCode::CREATED)
        .await;
    t.stop().await;
}

#[tokio::test]
async fn password_guesses_from_many_addresses_are_slowed_per_account_but_the_owner_gets_in() {
    let t = TestApp::builder()
        .config(|c| {
            c.http.trust_forwarded_for = true;
            c.auth.password_failures_per_account_per_minute = 5;
        })
        .start()
        .await;
    t.create_app("pw").await;
    let owner = "198.51.100.7";
    let login = |from: String, password: &str| {
        t.request(Method::POST, "/v1/apps/pw/auth/sessions")
            .header("x-forwarded-for", from)
            .json(&json!({ "provider": "password", "email": "dan@example.com", "password": password }))
    };
    t.request(Method::POST, "/v1/apps/pw/auth/users")
        .header("x-forwarded-for", owner)
        .json(&json!({ "email": "dan@example.com", "password": "blue-kettle-91-marsh" }))
        .expect(StatusCode::CREATED)
        .await;
    let (mut wrong, mut throttled) = (0, 0);
    for i in 0..200 {
        let from = format!("203.0.{}.{}", i / 200, i % 200 + 1);
        let answer = login(from, &format!("guess number {i}"))
            .send()
            .await
            .unwrap();
        match answer.status() {
            StatusCode::UNAUTHORIZED => wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let retry: u64 = answer.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                let body: serde_json::Value = answer.json().await.unwrap();
                assert_eq!(body["error"]["code"], "too_many_requests");
                throttled += 1;
            }
            other => panic!("guess {i}: {other}"),
        }
    }
    assert!(
        throttled >= 190,
        "{throttled} of 200 throttled ({wrong} checked)"
    );
    // The owner's address made the account: the account's bucket does not hold it back.
    login(owner.into(), "blue-kettle-91-marsh")
        .expect(StatusCode::CREATED)
        .await;
    t.stop().await;
}

#[tokio::test]
async fn ipv4_clients_of_a_dual_stack_listener_have_a_bucket_each() {
    let t = TestApp::builder()
        .config(|c| {
            c.listen = "[::]:0".parse().unwrap();
            c.auth.logins_per_ip_per_minute = 2;
        })
        .start()
        .await;
    t.create_app("ds").await;
    t.configure("ds", "dev", json!({ "enabled": true })).await;
    let port = t.running().local_addr().port();
    let server: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let body = br#"{"provider":"dev","user":"u"}"#;
    let head = format!(
        "POST /v1/apps/ds/auth/sessions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: {}",
        body.len()
    );
    let from = |last: u8| std::net::IpAddr::from([127, 0, 0, last]);
    for _ in 0..2 {
        let answer = raw_request_from(from(2), server, head.as_bytes(), body).await;
        assert_eq!(answer.status, 201);
    }
    let refused = raw_request_from(from(2), server, head.as_bytes(), body).await;
    assert_eq!(refused.status, 429);
    assert!(refused.header("retry-after").is_some());
    // Another IPv4 client, arriving as ::ffff:127.0.0.3, is not in 127.0.0.2's bucket.
    let other = raw_request_from(from(3), server, head.as_bytes(), body).await;
    assert_eq!(
        other.status,
        201,
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    t.stop().await;
}

#[tokio::test]
async fn guesses_sent_all_at_once_are_counted_before_any_is_checked() {
    let t = TestApp::builder()
        .config(|c| {
            c.http.trust_forwarded_for = true;
            c.auth.password_failures_per_account_per_minute = 5;
        })
        .start()
        .await;
    t.create_app("pw").await;
    t.request(Method::POST, "/v1/apps/pw/auth/users")
        .header("x-forwarded-for", "198.51.100.8")
        .json(&json!({ "email": "eve@example.com", "password": "blue-kettle-91-marsh" }))
        .expect(StatusCode::CREATED)
        .await;
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let guess = t
                .request(Method::POST, "/v1/apps/pw/auth/sessions")
                .header("x-forwarded-for", format!("203.0.113.{}", i + 1))
                .json(&json!({
                    "provider": "password", "email": "eve@example.com", "password": format!("guess {i}")
                }))
                .send();
            tokio::spawn(guess)
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap().unwrap().status());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        checked <= 5,
        "{checked} of 40 guesses sent at once were checked"
    );
    assert_eq!(checked + throttled, 40, "{statuses:?}");
    t.stop().await;
}

#[tokio::test]
async fn admins_list_search_see_and_delete_users() {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/auth/providers/dev")
        .json(&json!({ "enabled": true }))
        .expect(StatusCode::OK)
        .await;
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for name in ["ann", "bob", "cid"] {
        let login = t
            .request(Method::POST, "/v1/apps/shop/auth/sessions")
            .json(&json!({ "provider": "dev", "user": name }))
            .expect(StatusCode::CREATED)
            .await;
        ids.push(login["user"]["id"].as_str().unwrap().to_owned());
        tokens.push(login["access_token"].as_str().unwrap().to_owned());
    }
    let mut sorted = ids.clone();
    sorted.sort();

    let page = t
        .admin(Method::GET, "/v1/admin/apps/shop/users?limit=2")
        .expect(StatusCode::OK)
        .await;
    let listed = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed(&page), sorted[..2]);
    let after = page["next_after"].as_str().unwrap();
    let rest = t
        .admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/users?limit=2&after={after}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed(&rest), sorted[2..]);
    assert_eq!(rest["next_after"], Value::Null);

    // The dev provider's subject is the name given: an identity, found by search.
    let found = t
        .admin(Method::GET, "/v1/admin/apps/shop/users?search=bob")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed(&found), [ids[1].clone()]);
    let detail = t
        .admin(
            Method::GET,
            &format!("/v1/admin/apps/shop/users/{}", ids[1]),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(detail["id"], ids[1].as_str());
    assert_eq!(detail["identities"][0]["provider"], "dev");
    assert_eq!(detail["identities"][0]["subject"], "bob");

    for bad in ["limit=0", "limit=201", "limit=x", "sort=id"] {
        t.admin(Method::GET, &format!("/v1/admin/apps/shop/users?{bad}"))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
    let long = "x".repeat(300);
    t.admin(
        Method::GET,
        &format!("/v1/admin/apps/shop/users?search={long}"),
    )
    .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
    .await;

    // Deleting bob ends his sessions at once and leaves the others.
    let bob = format!("/v1/admin/apps/shop/users/{}", ids[1]);
    let deleted = t.admin(Method::DELETE, &bob).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    t.admin(Method::GET, &bob)
        .expect_error(StatusCode::NOT_FOUND, "user_not_found")
        .await;
    t.admin(Method::DELETE, &bob)
        .expect_error(StatusCode::NOT_FOUND, "user_not_found")
        .await;
    t.request(Method::GET, "/v1/apps/shop/auth/user")
        .bearer_auth(&tokens[1])
        .expect_error(StatusCode::UNAUTHORIZED, "session_revoked")
        .await;
    t.request(Method::GET, "/v1/apps/shop/auth/user")
        .bearer_auth(&tokens[0])
        .expect(StatusCode::OK)
        .await;
    let all = t
        .admin(Method::GET, "/v1/admin/apps/shop/users")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed(&all).len(), 2);
    // Only the app's administrators.
    t.request(Method::GET, "/v1/admin/apps/shop/users")
        .bearer_auth(&tokens[0])
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
}

#[tokio::test]
async fn codes_that_are_no_codes_and_platforms_in_the_clear_are_refused_before_any_call() {
    let emulator = Emulator::start().await;
    let t = TestApp::start().await;
    t.create_app("codes").await;
    emulator
        .connect(&t, "codes", "wechat", "wx-codes", "codes-secret")
        .await;
    // A made-up code of the right shape reaches WeChat, which refuses it.
    t.login("codes", json!({ "provider": "wechat", "code": "made-up" }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login_code")
        .await;
    // Others are refused here.
    for code in ["", "a b", "x\u{7f}", "码", &"c".repeat(513)] {
        t.login("codes", json!({ "provider": "wechat", "code": code }))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_login_request")
            .await;
    }
    t.login(
        "codes",
        json!({ "provider": "douyin", "anonymous_code": "a\nb" }),
    )
    .expect_error(StatusCode::BAD_REQUEST, "invalid_login_request")
    .await;
    let grant = emulator
        .login_as(&t, "codes", "wechat", "wx-codes", "alice")
        .await;
    t.as_user(Method::POST, "codes", "/auth/user/phone", token(&grant))
        .json(&json!({ "code": "c".repeat(513) }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_phone_code")
        .await;

    // A platform's address is https, or http to this machine only.
    for base_url in [
        "http://api.weixin.qq.com",
        "http://10.0.0.1:8080/wechat",
        "http://127.0.0.1@evil.example/",
    ] {
        t.admin(Method::PUT, "/v1/admin/apps/codes/auth/providers/qq")
            .json(&json!({ "appid": "1101", "secret": "s", "base_url": base_url }))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_provider_config")
            .await;
    }
    t.admin(Method::PUT, "/v1/admin/apps/codes/auth/providers/qq")
        .json(&json!({ "appid": "1101", "secret": "s", "base_url": "https://api.q.qq.com" }))
        .expect(StatusCode::OK)
        .await;
}

/// An app's key may not point the app's login calls elsewhere than the platform (to this
/// machine's other services, or hosts inside the operator's network); the admin token may (the
/// emulator), and the key may keep what the admin set or go back to the platform's own.
#[tokio::test]
async fn only_the_admin_token_points_an_app_at_another_platform_address() {
    let t = TestApp::start().await;
    let key = t.create_app("shop").await;
    let put = |token: &str, base_url: Option<&str>| {
        let mut body = json!({ "appid": "wx1", "secret": "s" });
        if let Some(base_url) = base_url {
            body["base_url"] = json!(base_url);
        }
        t.request(Method::PUT, "/v1/admin/apps/shop/auth/providers/wechat")
            .bearer_auth(token)
            .json(&body)
    };
    for elsewhere in ["http://127.0.0.1:2379/v2", "https://10.0.0.1"] {
        put(&key, Some(elsewhere))
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
    }
    put(&key, Some("http://127.0.0.1:2379/v2?q="))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_provider_config")
        .await;
    let own = put(&key, None).expect(StatusCode::OK).await;
    assert_eq!(own["base_url"], "https://api.weixin.qq.com");
    put(&key, Some("https://api.weixin.qq.com/"))
        .expect(StatusCode::OK)
        .await;
    // The admin token points it at the emulator; the key keeps that, and may change nothing
    // else about where the calls go.
    let emulator = "http://127.0.0.1:9/wechat";
    put(crate::support::ADMIN_TOKEN, Some(emulator))
        .expect(StatusCode::OK)
        .await;
    let kept = put(&key, Some(emulator)).expect(StatusCode::OK).await;
    assert_eq!(kept["base_url"], emulator);
    put(&key, Some("http://127.0.0.1:10/wechat"))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    t.stop().await;
}
