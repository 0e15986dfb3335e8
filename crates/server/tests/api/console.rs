//! The web console's address: its page and files, the first owner, logins, sessions, roles on
//! every admin route, CSRF and origin checks, and the audit log. Through real sockets, on both
//! backends.

use reqwest::header::{ACCEPT_ENCODING, COOKIE, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Expect, TestApp, expect_error, expect_json};

/// Sends a request that answers `204 No Content`.
trait NoContent {
    async fn no_content(self);
}

impl NoContent for RequestBuilder {
    async fn no_content(self) {
        let response = self.send().await.unwrap();
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{}",
            response.text().await.unwrap()
        );
    }
}

const PASSWORD: &str = "correct horse battery staple 42";

/// A person with a console session.
struct Person {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Person {
    /// A request as the console's page makes it: with the session, and said to come from
    /// the page's own origin (as browsers say).
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header("sec-fetch-site", "same-origin");
        if method == Method::GET {
            builder
        } else {
            builder.header("x-cloudlet-csrf", &self.csrf)
        }
    }
}

fn console_base(t: &TestApp) -> String {
    format!("http://{}", t.running().console_addr().expect("a console"))
}

/// The session of an answer that opened one.
async fn person_of(t: &TestApp, response: reqwest::Response) -> Person {
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let body = expect_json(response, StatusCode::OK).await;
    Person {
        base: console_base(t),
        http: reqwest::Client::new(),
        cookie: cookie.split(';').next().unwrap().to_owned(),
        csrf: body["csrf"].as_str().expect("a csrf token").to_owned(),
    }
}

async fn set_up_owner(t: &TestApp) -> Person {
    let response = reqwest::Client::new()
        .post(format!("{}/console/api/setup", console_base(t)))
        .json(&json!({
            "admin_token": ADMIN_TOKEN, "email": "Owner@Example.com",
            "name": "Olive Owner", "password": PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    person_of(t, response).await
}

async fn log_in(t: &TestApp, email: &str) -> Person {
    let response = reqwest::Client::new()
        .post(format!("{}/console/api/login", console_base(t)))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    person_of(t, response).await
}

/// Adds a member with `role` on `app` (or none), and logs them in.
async fn member(t: &TestApp, owner: &Person, email: &str, role: Option<(&str, &str)>) -> Person {
    let added = owner
        .request(Method::POST, "/console/api/people")
        .json(&json!({
            "email": email, "name": "Somebody", "password": PASSWORD, "instance_role": "member",
        }))
        .expect(StatusCode::CREATED)
        .await;
    if let Some((app, role)) = role {
        let id = added["id"].as_str().unwrap();
        owner
            .request(Method::PUT, &format!("/console/api/people/{id}/apps/{app}"))
            .json(&json!({ "role": role }))
            .no_content()
            .await;
    }
    log_in(t, email).await
}

#[tokio::test]
async fn the_console_has_an_address_of_its_own_with_compressed_hashed_files() {
    let t = TestApp::start().await;
    let base = console_base(&t);
    assert_ne!(t.running().console_addr(), Some(t.running().local_addr()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let root = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::FOUND);
    assert_eq!(root.headers()["location"], "/console/");

    let page = http
        .get(format!("{base}/console/"))
        .header(ACCEPT_ENCODING, "identity")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(page.headers().get("content-encoding").is_none());
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    // A return visit with the page's tag gets no body; another tag gets the page.
    let again = http
        .get(format!("{base}/console/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    let other = http
        .get(format!("{base}/console/"))
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(other.text().await.unwrap(), html);
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads a script")
        .to_owned();
    assert!(
        script.starts_with("/console/assets/console.") && script.ends_with(".js"),
        "{script}"
    );

    let plain = http.get(format!("{base}{script}")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain_len = plain.bytes().await.unwrap().len();
    let gzipped = http
        .get(format!("{base}{script}"))
        .header(ACCEPT_ENCODING, "br, gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert_eq!(
        gzipped.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        gzipped.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(gzipped.bytes().await.unwrap().len() < plain_len / 2);

    let missing = http
        .get(format!("{base}/console/assets/console.js"))
        .send()
        .await
        .unwrap();
    expect_error(missing, StatusCode::NOT_FOUND, "route_not_found").await;

    // Apps' content and the public routes are not on the console's address.
    t.create_app("shop").await;
    for (method, path) in [
        (Method::GET, "/sites/shop/"),
        (Method::GET, "/healthz"),
        (Method::POST, "/v1/apps/shop/auth/sessions"),
        (Method::GET, "/sdk/cloudlet.js"),
        (Method::GET, "/v1/apps/shop/realtime"),
    ] {
        let answer = http
            .request(method, format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // … and the console is not on the API's.
    t.request(Method::GET, "/console/")
        .expect_error(StatusCode::NOT_FOUND, "route_not_found")
        .await;
    t.request(Method::GET, "/console/api/state")
        .expect_error(StatusCode::NOT_FOUND, "route_not_found")
        .await;
}

#[tokio::test]
async fn the_admin_token_makes_the_first_owner_once_then_people_log_in() {
    let t = TestApp::start().await;
    let base = console_base(&t);
    let http = reqwest::Client::new();
    let state = http
        .get(format!("{base}/console/api/state"))
        .send()
        .await
        .unwrap();
    let state = expect_json(state, StatusCode::OK).await;
    assert_eq!(
        state,
        json!({ "setup_needed": true, "person": null, "csrf": null })
    );

    let setup = |token: &str, password: &str| {
        http.post(format!("{base}/console/api/setup")).json(&json!({
            "admin_token": token, "email": "owner@example.com", "name": "O", "password": password,
        }))
    };
    setup("not-the-token", PASSWORD)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    setup(ADMIN_TOKEN, "password1")
        .expect_error(StatusCode::BAD_REQUEST, "weak_password")
        .await;
    let owner = set_up_owner(&t).await;
    setup(ADMIN_TOKEN, PASSWORD)
        .expect_error(StatusCode::CONFLICT, "already_set_up")
        .await;

    let state = owner
        .request(Method::GET, "/console/api/state")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(state["setup_needed"], false);
    assert_eq!(state["person"]["email"], "owner@example.com");
    assert_eq!(state["person"]["instance_role"], "owner");
    assert_eq!(state["csrf"], owner.csrf.as_str());
    assert!(state["person"].get("password_hash").is_none());

    // The session is a cookie: the password's hash and the token are stored, not the token.
    let token = owner.cookie.split_once('=').unwrap().1;
    assert!(!t.stored_anywhere(token.as_bytes()));

    http.post(format!("{base}/console/api/login"))
        .json(&json!({ "email": "owner@example.com", "password": "wrong password here" }))
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_login")
        .await;
    let again = log_in(&t, "OWNER@example.com").await;
    assert_ne!(again.cookie, owner.cookie);
    assert_ne!(again.csrf, owner.csrf);

    owner
        .request(Method::POST, "/console/api/logout")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let state = owner
        .request(Method::GET, "/console/api/state")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(state["person"], Value::Null);
    owner
        .request(Method::GET, "/console/api/apps")
        .expect_error(StatusCode::UNAUTHORIZED, "console_login_required")
        .await;
    // The other session lives on.
    again
        .request(Method::GET, "/console/api/apps")
        .expect(StatusCode::OK)
        .await;
}

#[tokio::test]
async fn roles_decide_every_admin_route_and_bearer_tokens_do_nothing_there() {
    let t = TestApp::start().await;
    let owner = set_up_owner(&t).await;
    let created = owner
        .request(Method::POST, "/v1/admin/apps")
        .json(&json!({ "name": "shop" }))
        .expect(StatusCode::CREATED)
        .await;
    assert!(created["secret_key"].as_str().unwrap().starts_with("cls_"));
    t.create_app("blog").await;
    let viewer = member(&t, &owner, "viewer@example.com", Some(("shop", "viewer"))).await;
    let developer = member(&t, &owner, "dev@example.com", Some(("shop", "developer"))).await;
    let nobody = member(&t, &owner, "nobody@example.com", None).await;

    let apps = viewer
        .request(Method::GET, "/console/api/apps")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 1);
    assert_eq!(apps["items"][0]["name"], "shop");
    assert_eq!(apps["items"][0]["role"], "viewer");
    let apps = owner
        .request(Method::GET, "/console/api/apps")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(apps["items"].as_array().unwrap().len(), 2);
    let apps = nobody
        .request(Method::GET, "/console/api/apps")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(apps["items"], json!([]));

    let collection = json!({ "fields": [{ "name": "title", "type": "text" }] });
    // A viewer reads, and changes nothing.
    viewer
        .request(Method::GET, "/v1/admin/apps/shop")
        .expect(StatusCode::OK)
        .await;
    viewer
        .request(Method::GET, "/v1/admin/apps/shop/collections")
        .expect(StatusCode::OK)
        .await;
    for (method, path) in [
        (Method::PUT, "/v1/admin/apps/shop/collections/notes"),
        (Method::POST, "/v1/admin/apps/shop/keys/rotate"),
        (Method::DELETE, "/v1/admin/apps/shop"),
        (Method::POST, "/v1/admin/apps"),
        (Method::GET, "/v1/admin/apps"),
        (Method::GET, "/v1/admin/apps/shop/logs"),
        (Method::GET, "/v1/admin/apps/shop/pay/orders"),
        (Method::GET, "/v1/admin/apps/blog"),
    ] {
        viewer
            .request(method.clone(), path)
            .json(&collection)
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
    }
    // A developer changes the app, but not its key, and sees nothing of another app.
    developer
        .request(Method::PUT, "/v1/admin/apps/shop/collections/notes")
        .json(&collection)
        .expect(StatusCode::CREATED)
        .await;
    developer
        .request(Method::GET, "/v1/admin/apps/shop/logs")
        .expect(StatusCode::OK)
        .await;
    let record = developer
        .request(Method::POST, "/v1/apps/shop/collections/notes/records")
        .json(&json!({ "title": "from the console" }))
        .expect(StatusCode::CREATED)
        .await;
    let listed = viewer
        .request(Method::GET, "/v1/apps/shop/collections/notes/records")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed["items"][0]["id"], record["id"]);
    // Looking at the app's users is in the log, as a change is; other reads are not.
    developer
        .request(Method::GET, "/v1/admin/apps/shop/users?search=someone")
        .expect(StatusCode::OK)
        .await;
    let log = owner
        .request(Method::GET, "/console/api/audit?app=shop&limit=5")
        .expect(StatusCode::OK)
        .await;
    let newest = &log["items"][0];
    assert_eq!(newest["actor"], "dev@example.com", "{log}");
    assert_eq!(
        newest["action"],
        "GET /v1/admin/apps/shop/users?search=someone"
    );
    assert_eq!(newest["status"], 200);
    viewer
        .request(Method::POST, "/v1/apps/shop/collections/notes/records")
        .json(&json!({ "title": "no" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    for (method, path) in [
        (Method::POST, "/v1/admin/apps/shop/keys/rotate"),
        (Method::GET, "/v1/admin/apps/blog/collections"),
        (Method::DELETE, "/v1/admin/apps/shop"),
    ] {
        developer
            .request(method, path)
            .json(&json!({}))
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
    }
    // Validation still applies to a console write: it bypasses rules, not checks.
    developer
        .request(Method::POST, "/v1/apps/shop/collections/notes/records")
        .json(&json!({ "title": 7 }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_field_value")
        .await;
    // Instance owners rotate the key (the key may delete the app) and delete apps.
    let rotated = owner
        .request(Method::POST, "/v1/admin/apps/shop/keys/rotate")
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_ne!(rotated["secret_key"], created["secret_key"]);
    owner
        .request(Method::DELETE, "/v1/admin/apps/blog")
        .no_content()
        .await;

    // The console's address takes sessions only: the admin token there is nobody.
    let base = console_base(&t);
    let http = reqwest::Client::new();
    let bearer = http
        .get(format!("{base}/v1/admin/apps/shop"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    expect_error(bearer, StatusCode::UNAUTHORIZED, "console_login_required").await;
    let forged = http
        .get(format!("{base}/v1/admin/apps/shop"))
        .header(COOKIE, "cloudlet_console=ccs_forged")
        .send()
        .await
        .unwrap();
    expect_error(forged, StatusCode::UNAUTHORIZED, "console_login_required").await;
    // An app's owner gives roles on it, but does not see a new key (it could delete the app).
    let app_owner = member(&t, &owner, "boss@example.com", Some(("shop", "owner"))).await;
    app_owner
        .request(Method::POST, "/v1/admin/apps/shop/keys/rotate")
        .json(&json!({}))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let people = owner
        .request(Method::GET, "/console/api/people")
        .expect(StatusCode::OK)
        .await;
    let nobody_id = people["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["email"] == "nobody@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app_owner
        .request(
            Method::PUT,
            &format!("/console/api/people/{nobody_id}/apps/shop"),
        )
        .json(&json!({ "role": "viewer" }))
        .no_content()
        .await;
    nobody
        .request(Method::GET, "/v1/admin/apps/shop")
        .expect(StatusCode::OK)
        .await;

    // Two session cookies are nobody's: a page of another port of the same host may set one
    // that the browser sends here too.
    let two = http
        .get(format!("{base}/v1/admin/apps/shop"))
        .header(COOKIE, format!("{}; {}", owner.cookie, viewer.cookie))
        .send()
        .await
        .unwrap();
    expect_error(two, StatusCode::UNAUTHORIZED, "console_login_required").await;

    // A host name that is not the console's (DNS rebinding) is refused; IPs and localhost pass.
    let port = t.running().console_addr().unwrap().port();
    for (host, status) in [
        (
            format!("evil.example:{port}"),
            StatusCode::MISDIRECTED_REQUEST,
        ),
        (format!("localhost:{port}"), StatusCode::OK),
        (format!("127.0.0.1:{port}"), StatusCode::OK),
    ] {
        let answer = http
            .get(format!("{base}/console/api/state"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), status, "{host}");
    }

    // A name that cannot be an app's is not found, whoever asks.
    owner
        .request(Method::GET, "/v1/admin/apps/..%2Fsystem")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
}

#[tokio::test]
async fn writes_need_the_session_csrf_token_and_the_console_origin() {
    let t = TestApp::start().await;
    let owner = set_up_owner(&t).await;
    let create = |name: &str| {
        owner
            .http
            .post(format!("{}/v1/admin/apps", owner.base))
            .header(COOKIE, &owner.cookie)
            .json(&json!({ "name": name }))
    };
    create("a1")
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    create("a2")
        .header("x-cloudlet-csrf", "not-the-token")
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    create("a3")
        .header("x-cloudlet-csrf", &owner.csrf)
        .header("origin", "http://evil.example")
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    create("a4")
        .header("x-cloudlet-csrf", &owner.csrf)
        .header("sec-fetch-site", "cross-site")
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    let console_host = owner.base.trim_start_matches("http://").to_owned();
    create("a5")
        .header("x-cloudlet-csrf", &owner.csrf)
        .header("origin", format!("http://{console_host}"))
        .header("sec-fetch-site", "same-origin")
        .expect(StatusCode::CREATED)
        .await;
    let apps = owner
        .request(Method::GET, "/console/api/apps")
        .expect(StatusCode::OK)
        .await;
    let names: Vec<_> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, [json!("a5")], "refused writes changed nothing");
    // The app made is named in the log, though its name came in the body.
    let log = owner
        .request(Method::GET, "/console/api/audit")
        .expect(StatusCode::OK)
        .await;
    let made: Vec<&Value> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "POST /v1/admin/apps" && e["status"] == 201)
        .collect();
    assert_eq!(made.len(), 1, "{log}");
    assert_eq!(made[0]["app"], "a5", "{log}");
    // Reads of the API too: another site's page cannot have the browser search an app's
    // users, which the audit log would note in the person's name.
    let audited = || async {
        owner
            .request(Method::GET, "/console/api/audit")
            .expect(StatusCode::OK)
            .await["items"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = audited().await;
    let unsaid = owner
        .http
        .get(format!("{}/v1/admin/apps/a5/users?search=ceo", owner.base))
        .header(COOKIE, &owner.cookie);
    unsaid
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    for site in ["same-site", "cross-site"] {
        owner
            .http
            .get(format!("{}/v1/admin/apps/a5/users?search=ceo", owner.base))
            .header(COOKIE, &owner.cookie)
            .header("sec-fetch-site", site)
            .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
            .await;
    }
    assert_eq!(audited().await, before, "a refused read is noted nowhere");
    owner
        .http
        .get(format!("{}/v1/admin/apps/a5/users?search=ceo", owner.base))
        .header(COOKIE, &owner.cookie)
        .header("sec-fetch-site", "same-origin")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        audited().await,
        before + 1,
        "the console's own read is noted"
    );
    // The console's own writes too.
    owner
        .http
        .post(format!("{}/console/api/people", owner.base))
        .header(COOKIE, &owner.cookie)
        .json(&json!({ "email": "x@example.com", "name": "X", "password": PASSWORD, "instance_role": "member" }))
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    owner
        .http
        .post(format!("{}/console/api/login", owner.base))
        .header("origin", "http://evil.example")
        .json(&json!({ "email": "owner@example.com", "password": PASSWORD }))
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
}

#[tokio::test]
async fn people_and_roles_are_checked_and_the_audit_log_says_who_changed_what() {
    let t = TestApp::start().await;
    let owner = set_up_owner(&t).await;
    owner
        .request(Method::POST, "/v1/admin/apps")
        .json(&json!({ "name": "shop" }))
        .expect(StatusCode::CREATED)
        .await;
    let viewer = member(&t, &owner, "viewer@example.com", Some(("shop", "viewer"))).await;
    let add = |email: &str, role: &str| {
        owner
            .request(Method::POST, "/console/api/people")
            .json(&json!({
                "email": email, "name": "N", "password": PASSWORD, "instance_role": role,
            }))
    };
    add("viewer@example.com", "member")
        .expect_error(StatusCode::CONFLICT, "person_exists")
        .await;
    add("new@example.com", "admin")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_role")
        .await;
    add("not an email", "member")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_email")
        .await;
    viewer
        .request(Method::GET, "/console/api/people")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    viewer
        .request(Method::POST, "/console/api/people")
        .json(&json!({ "email": "y@example.com", "name": "Y", "password": PASSWORD, "instance_role": "owner" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;

    let people = owner
        .request(Method::GET, "/console/api/people")
        .expect(StatusCode::OK)
        .await;
    let items = people["items"].as_array().unwrap();
    let find = |email: &str| {
        items
            .iter()
            .find(|p| p["email"] == email)
            .unwrap_or_else(|| panic!("{email} in {people}"))
    };
    assert_eq!(
        find("viewer@example.com")["apps"],
        json!({ "shop": "viewer" })
    );
    let owner_id = find("owner@example.com")["id"].as_str().unwrap().to_owned();
    let viewer_id = find("viewer@example.com")["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A viewer cannot raise themselves.
    viewer
        .request(
            Method::PUT,
            &format!("/console/api/people/{viewer_id}/apps/shop"),
        )
        .json(&json!({ "role": "owner" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    owner
        .request(
            Method::PUT,
            &format!("/console/api/people/{viewer_id}/apps/shop"),
        )
        .json(&json!({ "role": "boss" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_role")
        .await;
    owner
        .request(Method::PUT, "/console/api/people/cp_nobody/apps/shop")
        .json(&json!({ "role": "viewer" }))
        .expect_error(StatusCode::NOT_FOUND, "person_not_found")
        .await;
    owner
        .request(
            Method::PUT,
            &format!("/console/api/people/{viewer_id}/apps/nope"),
        )
        .json(&json!({ "role": "viewer" }))
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    owner
        .request(Method::DELETE, "/console/api/people/..%2F..")
        .expect_error(StatusCode::NOT_FOUND, "person_not_found")
        .await;
    owner
        .request(Method::DELETE, &format!("/console/api/people/{owner_id}"))
        .expect_error(StatusCode::CONFLICT, "last_owner")
        .await;

    // A refused write is in the log too, with who tried, where they hold a role; elsewhere it
    // would only fill other apps' logs.
    viewer
        .request(Method::POST, "/v1/admin/apps/shop/keys/rotate?why=curious")
        .json(&json!({}))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    viewer
        .request(Method::POST, "/v1/admin/apps/ghost/keys/rotate")
        .json(&json!({}))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    owner
        .request(Method::POST, "/v1/admin/apps/shop/keys/rotate")
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    let log = owner
        .request(Method::GET, "/console/api/audit?limit=3")
        .expect(StatusCode::OK)
        .await;
    let entries = log["items"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["actor"], "owner@example.com");
    assert_eq!(entries[0]["action"], "POST /v1/admin/apps/shop/keys/rotate");
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["app"], "shop");
    assert_eq!(entries[1]["actor"], "viewer@example.com");
    assert_eq!(
        entries[1]["action"],
        "POST /v1/admin/apps/shop/keys/rotate?why=curious"
    );
    assert_eq!(entries[1]["status"], 403);
    let before = log["next_before"].as_i64().expect("more entries");
    let older = owner
        .request(
            Method::GET,
            &format!("/console/api/audit?limit=200&before={before}"),
        )
        .expect(StatusCode::OK)
        .await;
    let actions: Vec<_> = older["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.iter().any(|a| a == "POST /v1/admin/apps"),
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "setup"), "{actions:?}");
    assert_eq!(older["next_before"], Value::Null);
    // Members do not read the instance's log; an app's owners read their app's.
    viewer
        .request(Method::GET, "/console/api/audit")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    viewer
        .request(Method::GET, "/console/api/audit?app=shop")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    owner
        .request(Method::GET, "/console/api/audit?limit=abc")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
        .await;

    // Removing a person ends their sessions.
    owner
        .request(Method::DELETE, &format!("/console/api/people/{viewer_id}"))
        .no_content()
        .await;
    viewer
        .request(Method::GET, "/console/api/apps")
        .expect_error(StatusCode::UNAUTHORIZED, "console_login_required")
        .await;
}

#[tokio::test]
async fn files_are_browsed_uploaded_and_deleted_through_the_console_and_never_run_there() {
    let t = TestApp::start().await;
    let owner = set_up_owner(&t).await;
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/buckets/docs")
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    let viewer = member(&t, &owner, "viewer@example.com", Some(("shop", "viewer"))).await;
    let developer = member(&t, &owner, "dev@example.com", Some(("shop", "developer"))).await;
    const BOUNDARY: &str = "console-test-boundary";
    let form = |name: &str, content_type: &str, bytes: &str| {
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: {content_type}\r\n\r\n{bytes}\r\n--{BOUNDARY}--\r\n"
        )
    };
    let upload = |who: &Person| {
        who.request(Method::POST, "/v1/apps/shop/files/docs")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(form("page.html", "text/html", "<script>alert(1)</script>"))
    };
    upload(&viewer)
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let file = upload(&developer).expect(StatusCode::CREATED).await;
    let id = file["id"].as_str().unwrap().to_owned();

    let listed = viewer
        .request(Method::GET, "/v1/apps/shop/buckets/docs/files")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed["items"][0]["id"], id.as_str(), "{listed}");
    // The bytes come, but as an attachment that no browser runs on the console's origin.
    let download = viewer
        .request(Method::GET, &format!("/v1/apps/shop/files/docs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let headers = download.headers().clone();
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(download.text().await.unwrap(), "<script>alert(1)</script>");

    viewer
        .request(Method::DELETE, &format!("/v1/apps/shop/files/docs/{id}"))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    developer
        .request(Method::DELETE, &format!("/v1/apps/shop/files/docs/{id}"))
        .no_content()
        .await;
    // Signed URLs for the API's address stay there.
    developer
        .request(Method::POST, "/v1/apps/shop/file-urls")
        .json(&json!({ "files": [id] }))
        .expect_error(StatusCode::NOT_FOUND, "route_not_found")
        .await;
}

/// The console's own socket to `app`, opened with `person`'s cookie from `origin`.
async fn live(
    t: &TestApp,
    person: &Person,
    app: &str,
    origin: Option<&str>,
) -> Result<crate::realtime::Socket, StatusCode> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let addr = t.running().console_addr().expect("a console");
    let mut request = format!("ws://{addr}/console/api/apps/{app}/live")
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("cookie", person.cookie.parse().unwrap());
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(other) => panic!("the handshake failed: {other}"),
    }
}

/// The next message of `kind` on the console's socket (others skipped), within 5 seconds.
async fn next_of(socket: &mut crate::realtime::Socket, kind: &str) -> Value {
    loop {
        let message = crate::realtime::next(socket).await;
        if message["type"] == kind {
            return message;
        }
    }
}

#[tokio::test]
async fn the_console_lists_sockets_and_watches_a_channel_live_from_its_own_page_only() {
    let s = crate::realtime::scene().await;
    let t = &s.t;
    t.admin(Method::PUT, "/v1/admin/apps/notes/realtime")
        .json(&json!({ "channels": { "room": { "rules": {
            "join": "@auth.id != null", "publish": "@auth.id != null",
            "presence": "@auth.id != null",
        } } } }))
        .expect(StatusCode::OK)
        .await;
    let owner = set_up_owner(t).await;
    let viewer = member(t, &owner, "viewer@example.com", Some(("notes", "viewer"))).await;
    let mut alice = s.open(&s.alice).await;
    let bob = s.open(&s.bob).await;

    // The app's sockets, paged in id order, with how many users hold them.
    let first = owner
        .request(Method::GET, "/v1/admin/apps/notes/realtime/sockets?limit=1")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (first["count"].as_u64(), first["users"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(first["sockets"][0]["caller"], "user");
    let next = first["next"].as_str().expect("a second page").to_owned();
    let second = owner
        .request(
            Method::GET,
            &format!("/v1/admin/apps/notes/realtime/sockets?limit=1&after={next}"),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(second["sockets"].as_array().unwrap().len(), 1);
    assert!(second["next"].is_null());
    assert!(second["sockets"][0]["id"].as_str().unwrap() > next.as_str());
    for bad in [
        "limit=0",
        "limit=1001",
        "after=..%2F..",
        "after=ABCDEF0123456789",
    ] {
        owner
            .request(
                Method::GET,
                &format!("/v1/admin/apps/notes/realtime/sockets?{bad}"),
            )
            .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
            .await;
    }
    // Who is online is personal: a viewer does not see it, nor watch live.
    viewer
        .request(Method::GET, "/v1/admin/apps/notes/realtime/sockets")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    // The limits every app runs under are for everyone with a role.
    let limits = viewer
        .request(Method::GET, "/v1/admin/apps/notes/limits")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(limits["realtime_max_connections"], 5000);
    assert_eq!(limits["queue_max_payload_bytes"], 256 * 1024);

    // The socket opens from the console's page only: its origin, a session, a developer.
    let own = format!("http://{}", t.running().console_addr().unwrap());
    let api = format!("http://{}", t.running().local_addr());
    assert_eq!(
        live(t, &owner, "notes", None).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        live(t, &owner, "notes", Some(&api)).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    assert_eq!(
        live(t, &viewer, "notes", Some(&own)).await.err(),
        Some(StatusCode::FORBIDDEN)
    );
    let nobody = Person {
        cookie: "cloudlet_console=ccs_nobody".into(),
        ..member(t, &owner, "nobody@example.com", None).await
    };
    assert_eq!(
        live(t, &nobody, "notes", Some(&own)).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
    assert_eq!(
        live(t, &owner, "ghost", Some(&own)).await.err(),
        Some(StatusCode::NOT_FOUND)
    );

    let mut console = live(t, &owner, "notes", Some(&own))
        .await
        .expect("a socket");
    crate::realtime::send(
        &mut console,
        json!({ "type": "watch", "channel": "room:1" }),
    )
    .await;
    let watching = next_of(&mut console, "watching").await;
    assert_eq!(watching["channel"], "room:1");
    for (bad, code) in [
        (
            json!({ "type": "watch", "channel": "room:1" }),
            "subscription_exists",
        ),
        (
            json!({ "type": "watch", "channel": "Bad Name" }),
            "invalid_channel",
        ),
        (
            json!({ "type": "watch", "channel": "~user:abc" }),
            "invalid_channel",
        ),
        (json!({ "type": "listen" }), "invalid_message"),
        (
            json!({ "type": "tail", "function": "../x" }),
            "invalid_message",
        ),
    ] {
        crate::realtime::send(&mut console, bad).await;
        assert_eq!(next_of(&mut console, "error").await["code"], code);
    }

    // What a user publishes and what the server publishes, as the channel's subscribers get
    // them; a member's presence as its watchers do.
    crate::realtime::send(
        &mut alice,
        json!({ "type": "subscribe", "id": "r", "channel": "room:1", "presence": true }),
    )
    .await;
    assert_eq!(
        crate::realtime::next(&mut alice).await["type"],
        "subscribed"
    );
    crate::realtime::send(
        &mut alice,
        json!({ "type": "track", "id": "r", "state": { "typing": true } }),
    )
    .await;
    let diff = next_of(&mut console, "presence_diff").await;
    assert_eq!(diff["join"]["state"]["typing"], true);
    crate::realtime::send(
        &mut alice,
        json!({ "type": "publish", "channel": "room:1", "data": { "text": "hi" } }),
    )
    .await;
    let heard = next_of(&mut console, "message").await;
    assert_eq!(
        (heard["channel"].as_str(), heard["data"]["text"].as_str()),
        (Some("room:1"), Some("hi"))
    );
    assert_eq!(heard["from"], diff["join"]["user"]);
    owner
        .request(
            Method::POST,
            "/v1/admin/apps/notes/realtime/channels/room:1/messages",
        )
        .json(&json!({ "data": { "text": "from the console" } }))
        .expect(StatusCode::OK)
        .await;
    let heard = next_of(&mut console, "message").await;
    assert_eq!(heard["data"]["text"], "from the console");
    assert!(heard["from"].is_null());

    // The app's live channels with their counts: Alice and the console subscribe, Alice is
    // present, two messages went out. Users' own streams are not listed.
    let channels = owner
        .request(
            Method::GET,
            "/v1/admin/apps/notes/realtime/channels?limit=1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        channels,
        json!({ "count": 1, "channels": [
            { "name": "room:1", "subscribers": 2, "present": 1, "seq": 2 },
        ], "next": null })
    );
    let after = owner
        .request(
            Method::GET,
            "/v1/admin/apps/notes/realtime/channels?after=room:1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(after["channels"], json!([]));
    owner
        .request(
            Method::GET,
            "/v1/admin/apps/notes/realtime/channels?after=Bad%20Name",
        )
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
        .await;
    viewer
        .request(Method::GET, "/v1/admin/apps/notes/realtime/channels")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;

    // The counts come when they change: Bob leaves, his socket and he are no longer counted;
    // Alice's socket and the console's own (it watches through the hub) are.
    drop(bob);
    loop {
        let counts = next_of(&mut console, "sockets").await;
        if (counts["count"].as_u64(), counts["users"].as_u64()) == (Some(2), Some(1)) {
            break;
        }
        assert!(counts["count"].as_u64() >= Some(2), "{counts}");
    }

    // Who watched what is in the audit log.
    let audit = owner
        .request(Method::GET, "/console/api/audit")
        .expect(StatusCode::OK)
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "WATCH channel room:1" && e["app"] == "notes"),
        "{audit}"
    );

    // Unwatched, the channel's traffic stops coming.
    crate::realtime::send(
        &mut console,
        json!({ "type": "unwatch", "channel": "room:1" }),
    )
    .await;
    next_of(&mut console, "unwatched").await;
    owner
        .request(
            Method::POST,
            "/v1/admin/apps/notes/realtime/channels/room:1/messages",
        )
        .json(&json!({ "data": { "text": "unheard" } }))
        .expect(StatusCode::OK)
        .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while let Ok(Some(Ok(frame))) =
        tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut console)).await
    {
        assert!(!frame.to_string().contains("unheard"), "{frame}");
    }

    // Four live pages a person at once; a closed one gives its place back.
    let mut more = Vec::new();
    for _ in 0..3 {
        more.push(
            live(t, &owner, "notes", Some(&own))
                .await
                .expect("a socket"),
        );
    }
    assert_eq!(
        live(t, &owner, "notes", Some(&own)).await.err(),
        Some(StatusCode::TOO_MANY_REQUESTS)
    );
    let mut last = more.pop().unwrap();
    last.close(None).await.unwrap();
    drop(last);
    let mut reopened = None;
    for _ in 0..100 {
        if let Ok(socket) = live(t, &owner, "notes", Some(&own)).await {
            reopened = Some(socket);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "the closed page's place came back");

    // A logged-out session opens nothing (an open socket ends at its next check of the
    // session, every 30 s).
    owner
        .request(Method::POST, "/console/api/logout")
        .no_content()
        .await;
    assert_eq!(
        live(t, &owner, "notes", Some(&own)).await.err(),
        Some(StatusCode::UNAUTHORIZED)
    );
}

#[tokio::test]
async fn a_definition_is_checked_with_its_rule_errors_at_their_position_changing_nothing() {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    let check = |name: &str, body: Value| {
        t.admin(
            Method::POST,
            &format!("/v1/admin/apps/shop/collections/{name}/check"),
        )
        .json(&body)
        .expect(StatusCode::OK)
    };
    let fields = json!([{ "name": "title", "type": "text" }]);

    let fine = check(
        "todos",
        json!({ "fields": fields, "rules": { "list": "title ~ 'a'" } }),
    )
    .await;
    assert_eq!(
        fine,
        json!({ "valid": true, "plan": "create", "problem": null })
    );

    // The position counts characters: `é` is two bytes, one character.
    let unknown = check(
        "todos",
        json!({ "fields": fields, "rules": { "list": "title = 'é' && nope = 1" } }),
    )
    .await;
    assert_eq!(unknown["valid"], false);
    let problem = &unknown["problem"];
    assert_eq!(
        (
            problem["code"].as_str(),
            problem["rule"].as_str(),
            problem["position"].as_u64()
        ),
        (Some("invalid_collection"), Some("list"), Some(15)),
        "{unknown}"
    );
    assert!(
        problem["message"].as_str().unwrap().contains("nope"),
        "{unknown}"
    );
    let syntax = check(
        "todos",
        json!({ "fields": fields, "rules": { "update": "title = " } }),
    )
    .await;
    assert_eq!(syntax["problem"]["rule"], "update", "{syntax}");
    assert!(syntax["problem"]["position"].is_u64(), "{syntax}");
    // Not a rule's problem: no rule, no position.
    for (name, body) in [
        ("Bad", json!({ "fields": fields })),
        (
            "todos",
            json!({ "fields": fields, "indexes": [{ "fields": [] }] }),
        ),
        (
            "todos",
            json!({ "fields": fields, "indexes": [{ "fields": ["nope"] }] }),
        ),
    ] {
        let answer = check(name, body).await;
        assert_eq!(answer["valid"], false, "{answer}");
        assert!(answer["problem"]["rule"].is_null() && answer["problem"]["position"].is_null());
    }
    // Checking made nothing; against a collection, the plan says what putting would do.
    let listed = t
        .admin(Method::GET, "/v1/admin/apps/shop/collections")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        listed
            .as_array()
            .map(Vec::len)
            .or(listed["items"].as_array().map(Vec::len)),
        Some(0)
    );
    t.admin(Method::PUT, "/v1/admin/apps/shop/collections/todos")
        .json(&json!({ "fields": fields }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(
        check("todos", json!({ "fields": fields })).await["plan"],
        "unchanged"
    );
    assert_eq!(
        check("todos", json!({ "fields": [] })).await["plan"],
        "destroy"
    );
    t.admin(Method::POST, "/v1/admin/apps/ghost/collections/todos/check")
        .json(&json!({ "fields": fields }))
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;

    // Through the console: a developer's check is no change for the audit log; a viewer may not.
    let owner = set_up_owner(&t).await;
    let developer = member(&t, &owner, "dev@example.com", Some(("shop", "developer"))).await;
    let viewer = member(&t, &owner, "viewer@example.com", Some(("shop", "viewer"))).await;
    let answer = developer
        .request(Method::POST, "/v1/admin/apps/shop/collections/todos/check")
        .json(&json!({ "fields": fields, "rules": { "view": "nope = 1" } }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer["problem"]["rule"], "view");
    viewer
        .request(Method::POST, "/v1/admin/apps/shop/collections/todos/check")
        .json(&json!({ "fields": fields }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let audit = owner
        .request(Method::GET, "/console/api/audit")
        .expect(StatusCode::OK)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(!actions.is_empty(), "the roles given are there");
    assert!(actions.iter().all(|a| !a.contains("/check")), "{actions:?}");
}

#[tokio::test]
async fn a_console_behind_https_takes_writes_from_its_https_origin_only() {
    let t = TestApp::builder()
        .config(|c| c.console.secure_cookie = true)
        .start()
        .await;
    let owner = set_up_owner(&t).await;
    // Behind HTTPS the cookie's name takes the `__Host-` prefix, which a sibling host name
    // cannot set; a cookie of the plain name beside it (set by such a host) is not looked at.
    assert!(
        owner.cookie.starts_with("__Host-cloudlet_console=ccs_"),
        "{}",
        owner.cookie
    );
    owner
        .http
        .get(format!("{}/console/api/apps", owner.base))
        .header(
            COOKIE,
            format!("cloudlet_console=ccs_planted; {}", owner.cookie),
        )
        .expect(StatusCode::OK)
        .await;
    owner
        .http
        .get(format!("{}/console/api/apps", owner.base))
        .header(COOKIE, owner.cookie.replace("__Host-", ""))
        .expect_error(StatusCode::UNAUTHORIZED, "console_login_required")
        .await;
    let host = owner.base.trim_start_matches("http://").to_owned();
    let create = |name: &str, origin: String| {
        owner
            .http
            .post(format!("{}/v1/admin/apps", owner.base))
            .header(COOKIE, &owner.cookie)
            .header("x-cloudlet-csrf", &owner.csrf)
            .header("origin", origin)
            .json(&json!({ "name": name }))
    };
    // The same host and port over plain HTTP is another origin: a page there must not pass.
    create("b1", format!("http://{host}"))
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    create("b2", format!("ftp://{host}"))
        .expect_error(StatusCode::FORBIDDEN, "csrf_failed")
        .await;
    create("b3", format!("https://{host}"))
        .expect(StatusCode::CREATED)
        .await;
    // The live socket too.
    assert_eq!(
        live(&t, &owner, "b3", Some(&format!("http://{host}")))
            .await
            .err(),
        Some(StatusCode::FORBIDDEN)
    );
    live(&t, &owner, "b3", Some(&format!("https://{host}")))
        .await
        .expect("a socket from the https origin");
}

/// Through the console, an app's owner keeps a provider's address or goes back to the
/// platform's own; only an instance owner points it elsewhere (the emulator, a proxy).
#[tokio::test]
async fn only_instance_owners_point_an_app_at_another_platform_address_in_the_console() {
    let t = TestApp::start().await;
    let owner = set_up_owner(&t).await;
    t.create_app("shop").await;
    let app_owner = member(&t, &owner, "app-owner@example.com", Some(("shop", "owner"))).await;
    let put = |person: &Person, base_url: Option<&str>| {
        let mut body = json!({ "appid": "wx1", "secret": "s" });
        if let Some(base_url) = base_url {
            body["base_url"] = json!(base_url);
        }
        person
            .request(Method::PUT, "/v1/admin/apps/shop/auth/providers/wechat")
            .json(&body)
    };
    put(&app_owner, Some("http://127.0.0.1:2379/v2"))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    put(&app_owner, None).expect(StatusCode::OK).await;
    let emulator = "http://127.0.0.1:9/wechat";
    put(&owner, Some(emulator)).expect(StatusCode::OK).await;
    let kept = put(&app_owner, Some(emulator)).expect(StatusCode::OK).await;
    assert_eq!(kept["base_url"], emulator);
    put(&app_owner, Some("http://127.0.0.1:10/wechat"))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    t.stop().await;
}
