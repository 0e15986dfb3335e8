//! Functions through real HTTP: the real server, with `cloudlet worker` processes of this very
//! binary running the code, and real SQLite (or PostgreSQL, with
//! `CLOUDLET_TEST_DATABASE=postgres`) underneath `ctx.db`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../server/tests/api/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Expect, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_cloudlet");

async fn server(allow_private_fetch: bool) -> TestApp {
    TestApp::builder()
        .config(|c| {
            c.functions.worker_program = BIN.into();
            c.functions.allow_private_fetch = allow_private_fetch;
        })
        .start()
        .await
}

/// An app with the dev login on, a `todos` collection, and two users' tokens.
async fn scene(t: &TestApp, app: &str) -> (String, String) {
    t.create_app(app).await;
    t.admin(
        Method::PUT,
        &format!("/v1/admin/apps/{app}/auth/providers/dev"),
    )
    .json(&json!({ "enabled": true }))
    .expect(StatusCode::OK)
    .await;
    t.admin(
        Method::PUT,
        &format!("/v1/admin/apps/{app}/collections/todos"),
    )
    .json(&json!({ "fields": [{ "name": "title", "type": "text" }] }))
    .expect(StatusCode::CREATED)
    .await;
    let mut tokens = Vec::new();
    for user in ["alice", "bob"] {
        let login = t
            .request(Method::POST, &format!("/v1/apps/{app}/auth/sessions"))
            .json(&json!({ "provider": "dev", "user": user }))
            .expect(StatusCode::CREATED)
            .await;
        tokens.push(login["access_token"].as_str().unwrap().to_owned());
    }
    (tokens.remove(0), tokens.remove(0))
}

/// The `note` of every record of `app`'s `audit` collection, sorted.
async fn audit_notes(t: &TestApp, app: &str) -> Vec<String> {
    let page = t
        .admin(
            Method::GET,
            &format!("/v1/apps/{app}/collections/audit/records?limit=100"),
        )
        .expect(StatusCode::OK)
        .await;
    let mut notes: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["note"].as_str().unwrap().to_owned())
        .collect();
    notes.sort();
    notes
}

/// The notes of `app`'s `audit` collection once there are at least `count` of them (triggered
/// runs are asynchronous), or as they are after about ten seconds.
async fn audit_notes_when(t: &TestApp, app: &str, count: usize) -> Vec<String> {
    // Up to about 10 s: a trigger's run on a loaded two-processor machine, on PostgreSQL,
    // behind an app's busy consumer, once took more than 4.
    for _ in 0..500 {
        let notes = audit_notes(t, app).await;
        if notes.len() >= count {
            return notes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    audit_notes(t, app).await
}

/// A queue's ready, in-flight and dead counts.
async fn queue_counts(t: &TestApp, app: &str, queue: &str) -> [Option<i64>; 3] {
    let view = t
        .admin(Method::GET, &format!("/v1/admin/apps/{app}/queues/{queue}"))
        .expect(StatusCode::OK)
        .await;
    ["ready", "in_flight", "dead"].map(|count| view[count].as_i64())
}

async fn deploy(t: &TestApp, app: &str, name: &str, body: Value) -> Value {
    t.admin(
        Method::PUT,
        &format!("/v1/admin/apps/{app}/functions/{name}"),
    )
    .json(&body)
    .expect(StatusCode::CREATED)
    .await
}

/// The `note` of every record of `collection`, oldest first, read as the admin.
async fn notes_of(t: &TestApp, app: &str, collection: &str) -> Vec<String> {
    let page = t
        .admin(
            Method::GET,
            &format!("/v1/apps/{app}/collections/{collection}/records?sort=created_at"),
        )
        .expect(StatusCode::OK)
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["note"].as_str().unwrap().to_owned())
        .collect()
}

fn call(
    t: &TestApp,
    app: &str,
    name: &str,
    token: Option<&str>,
    event: Value,
) -> reqwest::RequestBuilder {
    let request = t
        .request(Method::POST, &format!("/v1/apps/{app}/functions/{name}"))
        .json(&event);
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

#[tokio::test]
async fn deploy_call_new_versions_roll_back_and_delete() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "shop").await;
    let v1 = deploy(&t, "shop", "greet", json!({
        "source": "export default async (event, ctx) => ({ hello: event.name, user: ctx.auth.id, v: 1 })"
    }))
    .await;
    assert_eq!(
        (v1["version"].as_i64(), v1["public"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(
        (v1["timeout_ms"].as_i64(), v1["memory_mb"].as_i64()),
        (Some(10_000), Some(64))
    );

    let answer = call(&t, "shop", "greet", Some(&alice), json!({ "name": "Ada" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer["hello"], "Ada");
    assert_eq!(answer["v"], 1);
    let user_id = answer["user"].as_str().unwrap().to_owned();
    assert!(!user_id.is_empty());

    deploy(
        &t,
        "shop",
        "greet",
        json!({
            "source": "export default async () => ({ v: 2 })"
        }),
    )
    .await;
    let answer = call(&t, "shop", "greet", Some(&alice), json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer, json!({ "v": 2 }));

    let shown = t
        .admin(Method::GET, "/v1/admin/apps/shop/functions/greet")
        .expect(StatusCode::OK)
        .await;
    let versions: Vec<(i64, bool)> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, vec![(2, true), (1, false)]);
    assert!(
        shown["files"]["index.js"]
            .as_str()
            .unwrap()
            .contains("v: 2")
    );

    t.admin(Method::POST, "/v1/admin/apps/shop/functions/greet/rollback")
        .json(&json!({ "version": 1 }))
        .expect(StatusCode::OK)
        .await;
    let answer = call(&t, "shop", "greet", Some(&alice), json!({ "name": "Bo" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (answer["v"].as_i64(), answer["hello"].as_str()),
        (Some(1), Some("Bo"))
    );
    t.admin(Method::POST, "/v1/admin/apps/shop/functions/greet/rollback")
        .json(&json!({ "version": 9 }))
        .expect_error(StatusCode::NOT_FOUND, "version_not_found")
        .await;

    let listed = t
        .admin(Method::GET, "/v1/admin/apps/shop/functions")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed["items"][0]["name"], "greet");
    assert_eq!(listed["items"][0]["version"], 1);

    t.admin(Method::DELETE, "/v1/admin/apps/shop/functions/greet")
        .send()
        .await
        .unwrap();
    call(&t, "shop", "greet", Some(&alice), json!({}))
        .expect_error(StatusCode::NOT_FOUND, "function_not_found")
        .await;
    t.admin(Method::DELETE, "/v1/admin/apps/shop/functions/greet")
        .expect_error(StatusCode::NOT_FOUND, "function_not_found")
        .await;
    // Deployed again, it is version 1 again, and the workers' warm runtimes of the old version 1
    // must not answer for it.
    deploy(
        &t,
        "shop",
        "greet",
        json!({ "source": "export default async () => 'new'" }),
    )
    .await;
    let answer = call(&t, "shop", "greet", Some(&alice), json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer, "new");
}

#[tokio::test]
async fn modules_import_each_other_and_syntax_errors_name_file_line_and_column() {
    let t = server(false).await;
    scene(&t, "mods").await;
    deploy(&t, "mods", "sum", json!({
        "files": {
            "main.js": "import { add } from './lib/math.js';\nexport default async (e) => add(e.a, e.b);",
            "lib/math.js": "export const add = (a, b) => a + b;"
        },
        "entry": "main.js",
        "public": true
    }))
    .await;
    let sum = call(&t, "mods", "sum", None, json!({ "a": 2, "b": 40 }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(sum, json!(42));

    let error = t
        .admin(Method::PUT, "/v1/admin/apps/mods/functions/broken")
        .json(&json!({
            "files": {
                "index.js": "import './util.js';\nexport default async () => 1;",
                "util.js": "const a = 1;\nconst b = ;\n"
            }
        }))
        .expect_error(StatusCode::BAD_REQUEST, "function_syntax_error")
        .await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("util.js:2:"), "{message}");
    // Nothing was stored.
    call(&t, "mods", "broken", None, json!({}))
        .expect_error(StatusCode::NOT_FOUND, "function_not_found")
        .await;
}

#[tokio::test]
async fn bad_deploys_are_refused_with_their_codes() {
    let t = server(false).await;
    t.create_app("bad").await;
    let cases = [
        (
            "Bad-Name",
            json!({ "source": "export default async () => 1" }),
            "invalid_function",
        ),
        ("f", json!({}), "invalid_function"),
        (
            "f",
            json!({ "source": "x", "files": { "index.js": "x" } }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "files": { "../escape.js": "x" } }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "files": { "a.js": "x" }, "entry": "b.js" }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "files": { "a.txt": "x" }, "entry": "a.txt" }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "source": "export default 1", "timeout_ms": 3_600_000 }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "source": "export default 1", "memory_mb": 0 }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "source": "export default 1", "colour": "red" }),
            "invalid_function",
        ),
        (
            "f",
            json!({ "source": "export default async () => {" }),
            "function_syntax_error",
        ),
    ];
    for (name, body, code) in cases {
        t.admin(Method::PUT, &format!("/v1/admin/apps/bad/functions/{name}"))
            .json(&body)
            .expect_error(StatusCode::BAD_REQUEST, code)
            .await;
    }
    t.admin(Method::PUT, "/v1/admin/apps/nope/functions/f")
        .json(&json!({ "source": "export default 1" }))
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    // Another app's secret key may not deploy here.
    let other_key = t.create_app("other").await;
    t.request(Method::PUT, "/v1/admin/apps/bad/functions/f")
        .bearer_auth(other_key)
        .json(&json!({ "source": "export default 1" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
}

#[tokio::test]
async fn the_console_follows_the_invocation_log_over_its_own_socket() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let t = server(false).await;
    scene(&t, "tailed").await;
    deploy(
        &t,
        "tailed",
        "echo",
        json!({
            "source": "export default async (e) => { console.log('saw', e.n); return e.n; }",
            "public": true
        }),
    )
    .await;
    deploy(
        &t,
        "tailed",
        "quiet",
        json!({
            "source": "export default async () => 0", "public": true
        }),
    )
    .await;
    call(&t, "tailed", "echo", None, json!({ "n": 0 }))
        .expect(StatusCode::OK)
        .await;

    // The first owner, through the console's own API.
    let console = t.running().console_addr().expect("a console");
    let opened = reqwest::Client::new()
        .post(format!("http://{console}/console/api/setup"))
        .json(&json!({
            "admin_token": support::ADMIN_TOKEN, "email": "owner@example.com",
            "name": "Olive", "password": "correct horse battery staple 42",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    let cookie = opened.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let mut request = format!("ws://{console}/console/api/apps/tailed/live")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("origin", format!("http://{console}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let next = async move |socket: &mut tokio_tungstenite::WebSocketStream<_>, kind: &str| loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = frame {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    };

    // Following one function from now on: what came before is not sent again, another
    // function's entries are not sent, each new entry comes once, oldest first.
    socket
        .send(Message::text(
            json!({ "type": "tail", "function": "echo" }).to_string(),
        ))
        .await
        .unwrap();
    let tailing = next(&mut socket, "tailing").await;
    assert!(tailing["after"].as_i64().unwrap() > 0, "{tailing}");
    call(&t, "tailed", "quiet", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    for n in 1..=3 {
        call(&t, "tailed", "echo", None, json!({ "n": n }))
            .expect(StatusCode::OK)
            .await;
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let logs = next(&mut socket, "logs").await;
        for entry in logs["items"].as_array().unwrap() {
            assert_eq!(entry["function"], "echo", "{entry}");
            seen.push(entry["logs"][0]["message"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(seen, ["saw 1", "saw 2", "saw 3"]);

    // Stopped, nothing more comes.
    socket
        .send(Message::text(json!({ "type": "untail" }).to_string()))
        .await
        .unwrap();
    next(&mut socket, "untailed").await;
    call(&t, "tailed", "echo", None, json!({ "n": 4 }))
        .expect(StatusCode::OK)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, socket.next()).await {
        assert!(!frame.to_string().contains("saw 4"), "{frame}");
    }

    // Who followed the log is in the audit log.
    let audit = reqwest::Client::new()
        .get(format!("http://{console}/console/api/audit"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["action"], "TAIL logs of echo", "{audit}");
}

#[tokio::test]
async fn callers_need_a_token_unless_public_and_ctx_db_keeps_each_users_rules() {
    let t = server(false).await;
    let (alice, bob) = scene(&t, "notes").await;
    deploy(&t, "notes", "add", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('todos').add({ title: e.title })"
    }))
    .await;
    deploy(
        &t,
        "notes",
        "read",
        json!({
            "source": "export default async (e, ctx) => {
            const db = e.admin ? ctx.admin.db : ctx.db;
            try { return { record: await db.collection('todos').get(e.id) }; }
            catch (error) { return { code: error.code }; }
        }"
        }),
    )
    .await;
    deploy(&t, "notes", "mine", json!({
        "source": "export default async (e, ctx) => (await ctx.db.collection('todos').list({ sort: 'title' })).items.map((t) => t.title)"
    }))
    .await;

    call(&t, "notes", "add", None, json!({ "title": "x" }))
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;
    let created = call(
        &t,
        "notes",
        "add",
        Some(&alice),
        json!({ "title": "alice's" }),
    )
    .expect(StatusCode::OK)
    .await;
    let id = created["id"].as_str().unwrap();
    call(&t, "notes", "add", Some(&bob), json!({ "title": "bob's" }))
        .expect(StatusCode::OK)
        .await;

    let own = call(&t, "notes", "read", Some(&alice), json!({ "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(own["record"]["title"], "alice's");
    // Bob's function call sees no more than Bob may: the record does not exist for him.
    let other = call(&t, "notes", "read", Some(&bob), json!({ "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(other, json!({ "code": "record_not_found" }));
    // ctx.admin.db bypasses the rules.
    let admin = call(
        &t,
        "notes",
        "read",
        Some(&bob),
        json!({ "id": id, "admin": true }),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(admin["record"]["title"], "alice's");
    let mine = call(&t, "notes", "mine", Some(&bob), json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(mine, json!(["bob's"]));

    // A token of another app is refused.
    scene(&t, "elsewhere").await;
    let (stranger, _) = {
        let login = t
            .request(Method::POST, "/v1/apps/elsewhere/auth/sessions")
            .json(&json!({ "provider": "dev", "user": "mallory" }))
            .expect(StatusCode::CREATED)
            .await;
        (login["access_token"].as_str().unwrap().to_owned(), ())
    };
    call(&t, "notes", "mine", Some(&stranger), json!({}))
        .expect_error(StatusCode::UNAUTHORIZED, "token_app_mismatch")
        .await;
}

#[tokio::test]
async fn environment_secrets_reach_functions_and_are_never_shown_back() {
    let t = server(false).await;
    scene(&t, "keys").await;
    t.admin(Method::PUT, "/v1/admin/apps/keys/env/API_KEY")
        .json(&json!({ "value": "s3cret" }))
        .send()
        .await
        .unwrap();
    let names = t
        .admin(Method::GET, "/v1/admin/apps/keys/env")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(names, json!({ "names": ["API_KEY"] }));
    deploy(
        &t,
        "keys",
        "env",
        json!({
            "source": "export default async (e, ctx) => ctx.env.API_KEY ?? null", "public": true
        }),
    )
    .await;
    let value = call(&t, "keys", "env", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(value, "s3cret");
    assert!(t.stored_anywhere(b"API_KEY"), "the name is stored");
    assert!(!t.stored_anywhere(b"s3cret"), "the value is sealed at rest");

    t.admin(Method::PUT, "/v1/admin/apps/keys/env/lower")
        .json(&json!({ "value": "x" }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_env")
        .await;
    t.admin(Method::DELETE, "/v1/admin/apps/keys/env/API_KEY")
        .send()
        .await
        .unwrap();
    let value = call(&t, "keys", "env", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(value, Value::Null);
    t.admin(Method::DELETE, "/v1/admin/apps/keys/env/API_KEY")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_env")
        .await;
}

#[tokio::test]
async fn hostile_code_ends_with_its_code_within_its_deadline_while_other_apps_keep_working() {
    let t = server(false).await;
    scene(&t, "evil").await;
    scene(&t, "good").await;
    deploy(
        &t,
        "good",
        "ping",
        json!({
            "source": "export default async (e) => ({ pong: e.n })", "public": true
        }),
    )
    .await;
    let attacks = [
        ("spin", "for (;;) {}", vec!["function_timeout"]),
        (
            "parse",
            "const s = JSON.stringify(Array(10000).fill('x')); while (true) JSON.parse(s);",
            vec!["function_timeout"],
        ),
        (
            "join",
            "return new Array(1e9).join();",
            vec!["function_memory_limit", "function_timeout"],
        ),
        (
            "recurse",
            "const f = (n) => f(n + 1) + 1; return f(0);",
            vec!["function_error"],
        ),
        (
            "never",
            "return new Promise(() => {});",
            vec!["function_timeout"],
        ),
        (
            "huge",
            "return 'x'.repeat(100 * 1024 * 1024);",
            vec!["function_memory_limit", "function_result_too_large"],
        ),
        (
            "regex",
            "return /^(a+)+$/.test('a'.repeat(40) + 'b');",
            vec!["function_timeout"],
        ),
        // Blocking the worker's thread is refused outright.
        (
            "wait",
            "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); return 1;",
            vec!["function_error"],
        ),
    ];
    for (name, body, _) in &attacks {
        deploy(
            &t,
            "evil",
            name,
            json!({
                "source": format!("export default async () => {{ {body} }}"),
                "public": true,
                "timeout_ms": 500
            }),
        )
        .await;
    }
    // Another app's calls run all through the attack and must all succeed.
    let base = t.base.clone();
    let good = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut n = 0;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let answer: Value = http
                .post(format!("{base}/v1/apps/good/functions/ping"))
                .json(&json!({ "n": n }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(answer, json!({ "pong": n }));
            n += 1;
        }
        n
    });
    let mut attackers = Vec::new();
    for (name, _, codes) in attacks {
        let request = call(&t, "evil", name, None, json!({}));
        attackers.push(tokio::spawn(async move {
            let started = Instant::now();
            let response = request.send().await.unwrap();
            let elapsed = started.elapsed();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            assert!(codes.contains(&code.as_str()), "{name}: {status} {body}");
            // The deadline is 500 ms; the hard kill comes 500 ms after it.
            assert!(elapsed < Duration::from_secs(3), "{name} took {elapsed:?}");
        }));
    }
    for attacker in attackers {
        attacker.await.unwrap();
    }
    let served = good.await.unwrap();
    assert!(served > 0);
    // The app under attack still works afterwards.
    deploy(
        &t,
        "evil",
        "fine",
        json!({ "source": "export default async () => 'ok'", "public": true }),
    )
    .await;
    let fine = call(&t, "evil", "fine", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(fine, "ok");
}

#[tokio::test]
async fn fetch_refuses_private_addresses_unless_allowed() {
    let t = server(false).await;
    scene(&t, "net").await;
    deploy(
        &t,
        "net",
        "get",
        json!({
            "source": "export default async (e) => {
            try { const r = await fetch(e.url); return { status: r.status, body: await r.text() }; }
            catch (error) { return { code: error.code, message: error.message }; }
        }",
            "public": true
        }),
    )
    .await;
    let port = t.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("http://127.0.0.1:{port}/healthz"),
        format!("http://localhost:{port}/healthz"),
        "http://10.0.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::1]/".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let answer = call(&t, "net", "get", None, json!({ "url": url }))
            .expect(StatusCode::OK)
            .await;
        assert_eq!(answer["code"], "fetch_refused", "{url}: {answer}");
    }

    // With private addresses allowed (local development), fetch reaches this very server.
    let open = server(true).await;
    scene(&open, "net").await;
    deploy(&open, "net", "get", json!({
        "source": "export default async (e) => { const r = await fetch(e.url); return { status: r.status, json: await r.json() }; }",
        "public": true
    }))
    .await;
    let url = format!("{}/v1/apps/net/health", open.base);
    let answer = call(&open, "net", "get", None, json!({ "url": url }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["json"]["app"], "net");

    // Bytes cross as bytes both ways: a function posts binary to an HTTP function that echoes
    // it, and reads the answer back as bytes and as text.
    deploy(&open, "net", "echo", json!({
        "source": "export default async (e) => ({ status: 200, headers: { 'content-type': 'application/octet-stream' }, body: e.isBase64Encoded ? e.body : btoa(String.fromCharCode(...new TextEncoder().encode(e.body))), isBase64Encoded: true })",
        "public": true
    }))
    .await;
    deploy(
        &open,
        "net",
        "post",
        json!({
            "source": "export default async (e) => {
            const bytes = new Uint8Array([0, 255, 1, 128, 13, 10, 0]);
            const r = await fetch(e.url, { method: 'POST', body: bytes });
            const back = await r.bytes();
            const text = await (await fetch(e.url, { method: 'POST', body: 'héllo' })).text();
            return { back: [...back], text };
        }",
            "public": true
        }),
    )
    .await;
    let url = format!("{}/v1/apps/net/http/echo", open.base);
    let answer = call(&open, "net", "post", None, json!({ "url": url }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        answer,
        json!({ "back": [0, 255, 1, 128, 13, 10, 0], "text": "héllo" })
    );
}

/// An RFC 3339 UTC time as its date and its seconds into the day, which compare in time order
/// whatever the digits of the fraction.
fn moment(at: &Value) -> (String, f64) {
    let at = at.as_str().unwrap().strip_suffix('Z').unwrap();
    let (date, time) = at.split_once('T').unwrap();
    let parts: Vec<f64> = time.split(':').map(|p| p.parse().unwrap()).collect();
    (
        date.to_owned(),
        parts[0] * 3600.0 + parts[1] * 60.0 + parts[2],
    )
}

#[tokio::test]
async fn every_invocation_is_logged_with_its_outcome_and_console_lines() {
    let t = server(false).await;
    scene(&t, "logged").await;
    deploy(&t, "logged", "talk", json!({
        "source": "export default async (e) => { console.log('got', e); console.error('careful'); if (e.fail) throw new Error('no luck'); return 1; }",
        "public": true
    }))
    .await;
    call(&t, "logged", "talk", None, json!({ "n": 1 }))
        .expect(StatusCode::OK)
        .await;
    let failed = call(&t, "logged", "talk", None, json!({ "fail": true }))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "function_error")
        .await;
    assert_eq!(failed["error"]["message"], "no luck");
    let request_id = failed["error"]["request_id"].as_str().unwrap().to_owned();

    // The log is written off the request path: wait for it.
    let mut items = Vec::new();
    for _ in 0..50 {
        let logs = t
            .admin(Method::GET, "/v1/admin/apps/logged/logs?function=talk")
            .expect(StatusCode::OK)
            .await;
        items = logs["items"].as_array().unwrap().clone();
        if items.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(items.len(), 2);
    let newest = &items[0];
    assert_eq!(newest["outcome"], "error");
    assert_eq!(newest["request_id"], request_id.as_str());
    assert_eq!(newest["error"]["message"], "no luck");
    assert!(
        newest["error"]["stack"]
            .as_str()
            .unwrap()
            .contains("index.js")
    );
    assert_eq!(
        (&newest["logs"][1]["level"], &newest["logs"][1]["message"]),
        (&json!("error"), &json!("careful"))
    );
    assert_eq!(items[1]["outcome"], "ok");
    assert_eq!(items[1]["logs"][0]["message"], r#"got {"n":1}"#);
    // Each line has the time the function's clock read when it was written, in order, and no
    // earlier than its invocation began (the entry's time, to the millisecond; the function's
    // clock counts in steps of 0.1 ms, so a millisecond of slack).
    let lines = newest["logs"].as_array().unwrap();
    let at: Vec<(String, f64)> = lines.iter().map(|l| moment(&l["at"])).collect();
    let (day, began) = moment(&newest["at"]);
    assert!(
        (day.clone(), began - 0.001) <= at[0] && at[0] <= at[1],
        "{day} {began} {at:?}"
    );
    assert_eq!(
        (items[0]["cold"].as_bool(), items[1]["cold"].as_bool()),
        (Some(false), Some(true))
    );

    let errors = t
        .admin(
            Method::GET,
            "/v1/admin/apps/logged/logs?outcome=error&limit=1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(errors["items"].as_array().unwrap().len(), 1);
    let metrics = t.metrics().await;
    for line in [
        r#"cloudlet_function_invocations_total{trigger="call",outcome="ok"} 1"#,
        r#"cloudlet_function_invocations_total{trigger="call",outcome="function_error"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    t.admin(Method::GET, "/v1/admin/apps/logged/logs?limit=0")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
        .await;
}

#[tokio::test]
async fn an_app_over_its_concurrency_limit_is_told_it_is_overloaded() {
    let t = TestApp::builder()
        .config(|c| {
            c.functions.worker_program = BIN.into();
            c.functions.max_concurrent_per_app = 2;
        })
        .start()
        .await;
    scene(&t, "busy").await;
    deploy(&t, "busy", "slow", json!({
        "source": "export default async () => { await new Promise((r) => setTimeout(r, 400)); return 'done'; }",
        "public": true
    }))
    .await;
    let calls: Vec<_> = (0..6)
        .map(|_| tokio::spawn(call(&t, "busy", "slow", None, json!({})).send()))
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let response = c.await.unwrap().unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "function_overloaded");
        } else {
            assert_eq!((status, body), (StatusCode::OK, json!("done")));
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(ok >= 2, "{statuses:?}");
    assert!(ok < 6, "{statuses:?}");
    // Once they are done, the app is admitted again.
    let again = call(&t, "busy", "slow", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(again, "done");

    // A function's own limit, below the app's.
    deploy(&t, "busy", "single", json!({
        "source": "export default async () => { await new Promise((r) => setTimeout(r, 1000)); return 1; }",
        "public": true,
        "max_concurrency": 1
    }))
    .await;
    let first = tokio::spawn(call(&t, "busy", "single", None, json!({})).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    call(&t, "busy", "single", None, json!({}))
        .expect_error(StatusCode::TOO_MANY_REQUESTS, "function_overloaded")
        .await;
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    t.admin(Method::PUT, "/v1/admin/apps/busy/functions/zero")
        .json(&json!({ "source": "export default 1", "max_concurrency": 0 }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
}

#[tokio::test]
async fn http_routes_hand_the_request_to_the_function_and_send_back_its_answer() {
    let t = server(false).await;
    scene(&t, "web").await;
    deploy(&t, "web", "hook", json!({
        "source": "export default async (e) => ({
            status: 201,
            headers: { 'x-hook': e.path, 'content-length': '1', 'set-cookie': 'sid=1' },
            body: { method: e.method, a: e.query.a, body: e.body, signature: e.headers['x-signature'],
                    credentials: e.headers.authorization ?? null }
        })",
        "public": true
    }))
    .await;
    deploy(
        &t,
        "web",
        "plain",
        json!({
            "source": "export default async (e) => ({ path: e.path })", "public": true
        }),
    )
    .await;
    deploy(&t, "web", "text", json!({
        "source": "export default async () => ({ status: 200, headers: { 'content-type': 'text/plain' }, body: 'ok' })"
    }))
    .await;

    let response = t
        .request(Method::POST, "/v1/apps/web/http/hook/orders/42?a=1&b=2")
        .bearer_auth(support::ADMIN_TOKEN)
        .header("x-signature", "sig")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-hook"], "/orders/42");
    assert_eq!(response.headers()["content-type"], "application/json");
    // A page a function returns runs no script on the API's origin, and sets no cookie there.
    assert_eq!(response.headers()["content-security-policy"], "sandbox");
    assert!(response.headers().get("set-cookie").is_none());
    let body: Value = response.json().await.unwrap();
    // The caller's credentials (here the admin token) are not handed to the function.
    assert_eq!(
        body,
        json!({ "method": "POST", "a": "1", "body": "hello", "signature": "sig", "credentials": null })
    );

    let plain = t
        .request(Method::GET, "/v1/apps/web/http/plain")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(plain, json!({ "path": "/" }));
    // Not public: a token is needed, as for calls.
    t.request(Method::GET, "/v1/apps/web/http/text")
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;
    t.request(Method::GET, "/v1/apps/web/http/missing/x")
        .expect_error(StatusCode::NOT_FOUND, "function_not_found")
        .await;
}

#[tokio::test]
async fn http_functions_answer_only_real_statuses_and_headers_and_carry_bytes_both_ways() {
    let t = server(false).await;
    t.create_app("web").await;
    // Answers whatever the request asks for.
    deploy(
        &t,
        "web",
        "echo",
        json!({
            "source": "export default async (e) => JSON.parse(e.query.answer)",
            "public": true
        }),
    )
    .await;
    // Echoes the body it got, bytes included.
    deploy(&t, "web", "bytes", json!({
        "source": "export default async (e) => ({ status: 200, headers: { 'content-type': 'application/octet-stream' }, body: e.isBase64Encoded ? e.body : btoa(String.fromCharCode(...new TextEncoder().encode(e.body))), isBase64Encoded: true })",
        "public": true
    }))
    .await;
    let answer = |value: Value| {
        let encoded: String =
            form_urlencoded::byte_serialize(value.to_string().as_bytes()).collect();
        t.request(
            Method::GET,
            &format!("/v1/apps/web/http/echo?answer={encoded}"),
        )
    };
    for status in [100, 101, 103, 199, 600, 999, 0, -5] {
        answer(json!({ "status": status, "body": "x" }))
            .expect_error(StatusCode::BAD_GATEWAY, "function_invalid_response")
            .await;
    }
    for headers in [
        json!({ "bad name": "x" }),
        json!({ "x-a": "line\r\nbreak" }),
        json!({ "x-a": { "nested": true } }),
    ] {
        answer(json!({ "status": 200, "headers": headers }))
            .expect_error(StatusCode::BAD_GATEWAY, "function_invalid_response")
            .await;
    }
    let ok = answer(json!({ "status": 599, "headers": { "x-a": 1 }, "body": "fine" }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 599);
    assert_eq!(ok.headers()["x-a"], "1");
    assert_eq!(ok.text().await.unwrap(), "fine");
    // Headers the server owns, or that would act on every app sharing this origin or on a proxy
    // in front, are dropped; a 205 carries no body whatever the function returned.
    let dropped = answer(json!({
        "status": 205,
        "headers": {
            "set-cookie": "session=stolen; Path=/",
            "strict-transport-security": "max-age=63072000",
            "www-authenticate": "Basic realm=\"login\"",
            "x-accel-redirect": "/internal/secrets",
            "Cache-Control": "no-store",
            "content-disposition": "attachment; filename=\"报告.pdf\"",
            "x-mine": "kept"
        },
        "body": "never sent"
    }))
    .send()
    .await
    .unwrap();
    assert_eq!(dropped.status(), StatusCode::RESET_CONTENT);
    let headers = dropped.headers().clone();
    for gone in [
        "set-cookie",
        "strict-transport-security",
        "www-authenticate",
        "x-accel-redirect",
    ] {
        assert!(headers.get(gone).is_none(), "{gone}");
    }
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["x-mine"], "kept");
    assert_eq!(
        headers["content-disposition"].as_bytes(),
        "attachment; filename=\"报告.pdf\"".as_bytes()
    );
    assert!(dropped.bytes().await.unwrap().is_empty());
    // A `status` that is not a number is part of a plain JSON answer.
    assert_eq!(
        answer(json!({ "status": "ok" }))
            .expect(StatusCode::OK)
            .await,
        json!({ "status": "ok" })
    );
    // Refused answers are failed invocations in the log (written in batches), with the reason.
    let mut logs = Value::Null;
    for _ in 0..100 {
        logs = t
            .admin(
                Method::GET,
                "/v1/admin/apps/web/logs?function=echo&outcome=error",
            )
            .expect(StatusCode::OK)
            .await;
        if logs["items"].as_array().unwrap().len() == 11 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entries = logs["items"].as_array().unwrap();
    assert_eq!(entries.len(), 11, "{logs}");
    assert!(
        entries[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid HTTP response"),
        "{logs}"
    );

    let binary: Vec<u8> = (0..=255u8).rev().collect();
    let echoed = t
        .request(Method::POST, "/v1/apps/web/http/bytes")
        .body(binary.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), StatusCode::OK);
    assert_eq!(echoed.bytes().await.unwrap().to_vec(), binary);
    let text = t
        .request(Method::POST, "/v1/apps/web/http/bytes")
        .body("plain text, é")
        .send()
        .await
        .unwrap();
    assert_eq!(
        text.bytes().await.unwrap().to_vec(),
        "plain text, é".as_bytes()
    );
}

#[tokio::test]
async fn data_triggers_run_after_writes_and_stop_at_a_bounded_depth() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "audited").await;
    t.admin(Method::PUT, "/v1/admin/apps/audited/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "audited", "audit", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('audit').add({ note: `${e.operation} ${e.new.title}` })",
        "triggers": [{ "collection": "todos", "on": ["create"] }]
    }))
    .await;
    // Writes to the collection it is triggered by: each write triggers it again, until the depth
    // limit stops the chain.
    deploy(&t, "audited", "echo", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('audit').add({ note: 'echo ' + e.new.note })",
        "triggers": [{ "collection": "audit", "on": ["create"] }]
    }))
    .await;
    t.request(Method::POST, "/v1/apps/audited/collections/todos/records")
        .bearer_auth(&alice)
        .json(&json!({ "title": "milk" }))
        .expect(StatusCode::CREATED)
        .await;
    let notes = || notes_of(&t, "audited", "audit");
    for _ in 0..100 {
        if notes().await.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The client's write (depth 0) ran `audit`; its write (1) ran `echo`, whose write (2) ran
    // `echo` again, whose write (3) runs nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut found = notes().await;
    found.sort();
    assert_eq!(
        found,
        vec!["create milk", "echo create milk", "echo echo create milk"]
    );
    let logs = t
        .admin(Method::GET, "/v1/admin/apps/audited/logs?function=audit")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(logs["items"][0]["trigger"], "data");
    assert_eq!(logs["items"][0]["outcome"], "ok");

    t.admin(Method::PUT, "/v1/admin/apps/audited/functions/bad")
        .json(&json!({ "source": "export default 1", "triggers": [{ "collection": "Bad Name" }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
}

#[tokio::test]
async fn a_cycle_through_a_queue_and_a_trigger_stops_at_the_bound() {
    let t = server(false).await;
    scene(&t, "loop").await;
    t.admin(Method::PUT, "/v1/admin/apps/loop/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/loop/queues/hops")
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    // Each audit record is relayed through the queue, whose consumer writes another: without
    // the depth riding on the message, this would never end.
    deploy(&t, "loop", "relay", json!({
        "source": "export default async (e, ctx) => ctx.queue.send('hops', { note: e.new.note })",
        "triggers": [{ "collection": "audit", "on": ["create"] }]
    }))
    .await;
    deploy(&t, "loop", "hop", json!({
        "source": "export default async (e, ctx) => { \
            for (const m of e.messages) await ctx.admin.db.collection('audit').add({ note: 'hop ' + m.payload.note }); }",
        "triggers": [{ "queue": "hops" }]
    }))
    .await;
    t.admin(Method::POST, "/v1/apps/loop/collections/audit/records")
        .json(&json!({ "note": "start" }))
        .expect(StatusCode::CREATED)
        .await;
    audit_notes_when(&t, "loop", 4).await;
    // The client's write (depth 0) relays at 1; the hop writes at 1, relayed at 2; at 2, relayed
    // at 3; the hop's write at 3 triggers nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        audit_notes(&t, "loop").await,
        ["hop hop hop start", "hop hop start", "hop start", "start"]
    );
    assert_eq!(queue_counts(&t, "loop", "hops").await, [Some(0); 3]);
}

#[tokio::test]
async fn auth_triggers_run_when_users_are_created_and_deleted() {
    let t = server(false).await;
    t.create_app("members").await;
    t.admin(Method::PUT, "/v1/admin/apps/members/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "members", "welcome", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('audit').add({ \
            note: [e.event, e.user.email, e.provider, typeof e.event_id, e.attempt, ctx.trigger, \
                   e.user.created_at.endsWith('Z')].join(' ') })",
        "triggers": [{ "auth": ["user_created", "user_deleted"] }]
    }))
    .await;
    t.request(Method::POST, "/v1/apps/members/auth/users")
        .json(&json!({ "email": "kim@example.com", "password": "correct horse battery staple" }))
        .expect(StatusCode::CREATED)
        .await;
    let login = t
        .request(Method::POST, "/v1/apps/members/auth/sessions")
        .json(&json!({ "provider": "password", "email": "kim@example.com", "password": "correct horse battery staple" }))
        .expect(StatusCode::CREATED)
        .await;
    let deleted = t
        .request(Method::DELETE, "/v1/apps/members/auth/user")
        .bearer_auth(login["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        audit_notes_when(&t, "members", 2).await,
        [
            "auth.user_created kim@example.com password number 1 auth true",
            "auth.user_deleted kim@example.com  number 1 auth true",
        ]
    );
    t.admin(Method::PUT, "/v1/admin/apps/members/functions/bad")
        .json(&json!({ "source": "export default 1", "triggers": [{ "auth": [] }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/members/functions/bad")
        .json(&json!({ "source": "export default 1", "triggers": [{ "auth": ["user_updated"] }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
}

#[tokio::test]
async fn users_may_not_call_what_triggers_and_schedules_run_unless_it_is_deployed_callable() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "forge").await;
    let source =
        "export default async (e, ctx) => ({ trigger: ctx.trigger, who: e.user?.id ?? null })";
    let event = json!({ "event": "auth.user_deleted", "user": { "id": "someone-else" } });
    let http = |token: Option<&str>| {
        let request = t.request(Method::POST, "/v1/apps/forge/http/cleanup/now");
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    for declared in [
        json!({ "source": source, "triggers": [{ "auth": ["user_deleted"] }] }),
        json!({ "source": source, "schedules": [{ "cron": "0 3 * * *" }] }),
        json!({ "source": source, "public": true, "triggers": [{ "auth": ["user_deleted"] }] }),
        json!({ "source": source, "callable": false }),
    ] {
        deploy(&t, "forge", "cleanup", declared.clone()).await;
        call(&t, "forge", "cleanup", Some(&alice), event.clone())
            .expect_error(StatusCode::FORBIDDEN, "function_not_callable")
            .await;
        if declared["public"] == true {
            call(&t, "forge", "cleanup", None, event.clone())
                .expect_error(StatusCode::FORBIDDEN, "function_not_callable")
                .await;
        } else {
            call(&t, "forge", "cleanup", None, event.clone())
                .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
                .await;
        }
        http(Some(&alice))
            .expect_error(StatusCode::FORBIDDEN, "function_not_callable")
            .await;
        // The admin may, to try it.
        let ran = t
            .admin(Method::POST, "/v1/apps/forge/functions/cleanup")
            .json(&event)
            .expect(StatusCode::OK)
            .await;
        assert_eq!(
            ran,
            json!({ "trigger": "call", "who": "someone-else" }),
            "{declared}"
        );
    }
    // Deployed callable, users call it, and `ctx.trigger` tells their calls apart.
    deploy(
        &t,
        "forge",
        "cleanup",
        json!({
            "source": source, "callable": true, "triggers": [{ "auth": ["user_deleted"] }]
        }),
    )
    .await;
    let ran = call(&t, "forge", "cleanup", Some(&alice), event.clone())
        .expect(StatusCode::OK)
        .await;
    assert_eq!(ran["trigger"], "call");
    let shown = t
        .admin(Method::GET, "/v1/admin/apps/forge/functions/cleanup")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(shown["callable"], true);
}

#[tokio::test]
async fn shutdown_lets_triggered_runs_finish_and_flushes_their_log_before_closing() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        TestApp::builder()
            .data_dir(dir.path())
            .config(|c| c.functions.worker_program = BIN.into())
            .start()
    };
    let t = start().await;
    scene(&t, "drain").await;
    t.admin(Method::PUT, "/v1/admin/apps/drain/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(
        &t,
        "drain",
        "slow-audit",
        json!({
            "source": "export default async (e, ctx) => {
            await new Promise((r) => setTimeout(r, 400));
            return ctx.admin.db.collection('audit').add({ note: e.new.title });
        }",
            "triggers": [{ "collection": "todos", "on": ["create"] }]
        }),
    )
    .await;
    t.admin(Method::POST, "/v1/apps/drain/collections/todos/records")
        .json(&json!({ "title": "milk" }))
        .expect(StatusCode::CREATED)
        .await;
    // Shut down while the triggered run waits on its timer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    t.stop().await;

    let t = start().await;
    let audit = t
        .admin(Method::GET, "/v1/apps/drain/collections/audit/records")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
    assert_eq!(audit["items"][0]["note"], "milk");
    let logs = t
        .admin(Method::GET, "/v1/admin/apps/drain/logs?function=slow-audit")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(logs["items"].as_array().unwrap().len(), 1, "{logs}");
    assert_eq!(logs["items"][0]["outcome"], "ok");
}

#[tokio::test]
async fn schedules_run_their_function_until_it_is_deleted() {
    let t = server(false).await;
    scene(&t, "timed").await;
    t.admin(Method::PUT, "/v1/admin/apps/timed/collections/ticks")
        .json(&json!({ "fields": [{ "name": "n", "type": "integer" }, { "name": "at", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "timed", "tick", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('ticks').add({ n: e.data.n, at: e.scheduled_at })",
        "schedules": [{ "cron": "* * * * * *", "timezone": "Asia/Shanghai", "data": { "n": 7 } }]
    }))
    .await;
    let ticks = || async {
        t.admin(
            Method::GET,
            "/v1/apps/timed/collections/ticks/records?count=true&limit=100",
        )
        .expect(StatusCode::OK)
        .await
    };
    let mut page = ticks().await;
    for _ in 0..60 {
        if page["total"].as_i64().unwrap() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        page = ticks().await;
    }
    assert!(page["total"].as_i64().unwrap() >= 2, "{page}");
    assert_eq!(page["items"][0]["n"], 7);
    // Each run is claimed once: one record per scheduled second.
    let mut seconds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["at"].as_str().unwrap())
        .collect();
    let runs = seconds.len();
    seconds.dedup();
    assert_eq!(seconds.len(), runs, "{page}");
    let logs = t
        .admin(
            Method::GET,
            "/v1/admin/apps/timed/logs?function=tick&limit=1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(logs["items"][0]["trigger"], "schedule");

    t.admin(Method::DELETE, "/v1/admin/apps/timed/functions/tick")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = ticks().await["total"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        ticks().await["total"].as_i64().unwrap(),
        before,
        "no runs after the delete"
    );

    for (cron, zone) in [("61 * * * *", "UTC"), ("0 3 * * *", "Mars/Olympus")] {
        t.admin(Method::PUT, "/v1/admin/apps/timed/functions/bad")
            .json(&json!({ "source": "export default 1", "schedules": [{ "cron": cron, "timezone": zone }] }))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
            .await;
    }
    // A schedule's data is copied into every tick: at most 16 KiB of it.
    let data = |bytes: usize| json!({ "text": "x".repeat(bytes) });
    t.admin(Method::PUT, "/v1/admin/apps/timed/functions/bad")
        .json(&json!({ "source": "export default 1", "schedules": [{ "cron": "0 3 * * *", "data": data(16 * 1024) }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/timed/functions/fits")
        .json(&json!({ "source": "export default 1", "schedules": [{ "cron": "0 3 * * *", "data": data(16 * 1000) }] }))
        .expect(StatusCode::CREATED)
        .await;
}

#[tokio::test]
async fn ctx_auth_carries_the_platform_openid_and_unionid_across_refreshes() {
    // The platform emulator on an ephemeral port, with a WeChat app in an Open Platform account.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let emulator = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cloudlet_emulator::serve(
        listener,
        cloudlet_emulator::EmulatorOptions::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let registered = http
        .post(format!("{emulator}/emulator/apps"))
        .json(&json!({ "platform": "wechat", "appid": "wx-fn", "secret": "fn-secret", "open_platform": "acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);
    let code = || async {
        let body: Value = http
            .post(format!("{emulator}/emulator/codes"))
            .json(&json!({ "platform": "wechat", "appid": "wx-fn", "user": "alice" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["code"].as_str().unwrap().to_owned()
    };
    // What WeChat says alice's ids are, asked the way a server asks.
    let session: Value = http
        .get(format!(
            "{emulator}/wechat/sns/jscode2session?appid=wx-fn&secret=fn-secret&js_code={}&grant_type=authorization_code",
            code().await
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let openid = session["openid"].as_str().unwrap().to_owned();
    let unionid = session["unionid"].as_str().unwrap().to_owned();

    let t = server(false).await;
    t.create_app("wx").await;
    t.admin(Method::PUT, "/v1/admin/apps/wx/auth/providers/wechat")
        .json(&json!({ "appid": "wx-fn", "secret": "fn-secret", "base_url": format!("{emulator}/wechat") }))
        .expect(StatusCode::OK)
        .await;
    let grant = t
        .request(Method::POST, "/v1/apps/wx/auth/sessions")
        .json(&json!({ "provider": "wechat", "code": code().await }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(
        &t,
        "wx",
        "context",
        json!({ "source": "export default async (e, ctx) => ctx.auth" }),
    )
    .await;
    let auth = call(
        &t,
        "wx",
        "context",
        grant["access_token"].as_str(),
        json!({}),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(auth["id"], grant["user"]["id"]);
    assert_eq!(auth["provider"], "wechat");
    assert_eq!(auth["openid"], openid.as_str());
    assert_eq!(auth["unionid"], unionid.as_str());

    let refreshed = t
        .request(Method::POST, "/v1/apps/wx/auth/refresh")
        .json(&json!({ "session_id": grant["session_id"] }))
        .expect(StatusCode::OK)
        .await;
    let again = call(
        &t,
        "wx",
        "context",
        refreshed["access_token"].as_str(),
        json!({}),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(again, auth);
}

#[tokio::test]
async fn ctx_messages_send_takes_a_grant_and_the_message_reaches_the_user() {
    let emu = Emulator::start(cloudlet_emulator::EmulatorOptions::default()).await;
    let (emulator, http) = (emu.base.clone(), emu.http.clone());
    let control = |path: &'static str, body: Value| emu.control(path, body);
    control(
        "/emulator/apps",
        json!({ "platform": "wechat", "appid": "wx-msg", "secret": "msg-secret" }),
    )
    .await;
    control(
        "/emulator/wechat/templates",
        json!({ "appid": "wx-msg", "template_id": "TPL", "keys": { "thing1": "thing" } }),
    )
    .await;
    control(
        "/emulator/wechat/subscriptions",
        json!({ "appid": "wx-msg", "user": "alice", "template_id": "TPL" }),
    )
    .await;
    let code: Value = http
        .post(format!("{emulator}/emulator/codes"))
        .json(&json!({ "platform": "wechat", "appid": "wx-msg", "user": "alice" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let t = server(false).await;
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/auth/providers/wechat")
        .json(&json!({ "appid": "wx-msg", "secret": "msg-secret", "base_url": format!("{emulator}/wechat") }))
        .expect(StatusCode::OK)
        .await;
    let grant = t
        .request(Method::POST, "/v1/apps/shop/auth/sessions")
        .json(&json!({ "provider": "wechat", "code": code["code"] }))
        .expect(StatusCode::CREATED)
        .await;
    let token = grant["access_token"].as_str();
    t.request(Method::POST, "/v1/apps/shop/messages/subscriptions")
        .bearer_auth(token.unwrap())
        .json(&json!({ "answers": { "TPL": "accept" } }))
        .expect(StatusCode::OK)
        .await;
    deploy(
        &t,
        "shop",
        "notify",
        json!({ "source": r#"export default async (e, ctx) => {
            const message = { to: ctx.auth.id, template_id: "TPL", data: { thing1: "Shipped" } };
            const sent = await ctx.messages.send(message);
            let refused = null;
            try { await ctx.messages.send(message); }
            catch (error) { refused = error.code; }
            return { id: sent.id, duplicate: sent.duplicate, refused };
        }"# }),
    )
    .await;
    let answer = call(&t, "shop", "notify", token, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert!(
        answer["id"].as_str().unwrap().starts_with("msg_"),
        "{answer}"
    );
    assert_eq!(answer["duplicate"], false);
    assert_eq!(
        answer["refused"], "no_subscription",
        "one grant, one message"
    );

    let mut inbox = Vec::new();
    for _ in 0..200 {
        let body: Value = http
            .get(format!("{emulator}/emulator/wechat/messages?appid=wx-msg"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        inbox = body["messages"].as_array().unwrap().clone();
        if !inbox.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0]["user"], "alice");
    assert_eq!(inbox[0]["data"], json!({ "thing1": "Shipped" }));
}

#[tokio::test]
async fn a_function_reaches_no_data_of_another_app_even_as_admin() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "victim").await;
    scene(&t, "thief").await;
    let secret = t
        .request(Method::POST, "/v1/apps/victim/collections/todos/records")
        .bearer_auth(&alice)
        .json(&json!({ "title": "secret" }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(
        &t,
        "thief",
        "steal",
        json!({
            "source": "export default async (e, ctx) => {
            const found = [];
            for (const db of [ctx.db, ctx.admin.db]) {
                try { found.push(await db.collection('todos').get(e.id)); }
                catch (error) { found.push(error.code); }
                found.push((await db.collection('todos').list({})).items.length);
            }
            return found;
        }",
            "public": true
        }),
    )
    .await;
    let found = call(&t, "thief", "steal", None, json!({ "id": secret["id"] }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(found, json!(["record_not_found", 0, "record_not_found", 0]));
}

#[tokio::test]
async fn work_a_function_did_not_await_never_runs_for_the_next_caller() {
    let t = server(false).await;
    let (alice, bob) = scene(&t, "loose").await;
    deploy(
        &t,
        "loose",
        "fire",
        json!({
            // Neither awaited: dropped when the function returns.
            "source": "export default async (e, ctx) => {
            if (e.title) {
                ctx.db.collection('todos').add({ title: e.title });
                setTimeout(() => ctx.db.collection('todos').add({ title: 'timer' }), 0);
                return 'done';
            }
            return (await ctx.db.collection('todos').list({})).items.map((t) => t.title);
        }"
        }),
    )
    .await;
    deploy(&t, "loose", "mine", json!({
        "source": "export default async (e, ctx) => (await ctx.db.collection('todos').list({})).items.map((t) => t.title)"
    }))
    .await;
    call(
        &t,
        "loose",
        "fire",
        Some(&alice),
        json!({ "title": "alice's" }),
    )
    .expect(StatusCode::OK)
    .await;
    // The same warm runtime now serves Bob, and makes a host call of its own.
    let bobs = call(&t, "loose", "fire", Some(&bob), json!({}))
        .expect(StatusCode::OK)
        .await;
    let alices = call(&t, "loose", "mine", Some(&alice), json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!((bobs, alices), (json!([]), json!([])));
}

/// Sends `calls` concurrent calls and answers each one's status, body and time.
async fn concurrently(
    requests: Vec<reqwest::RequestBuilder>,
) -> Vec<(StatusCode, Value, Duration)> {
    let calls: Vec<_> = requests
        .into_iter()
        .map(|request| {
            tokio::spawn(async move {
                let started = Instant::now();
                let response = request.send().await.unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap();
                (status, body, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    answers
}

#[tokio::test]
async fn calls_queued_behind_one_that_waits_or_computes_are_given_back_and_run_elsewhere() {
    let t = server(false).await;
    scene(&t, "queue").await;
    deploy(
        &t,
        "queue",
        "slow",
        json!({
            "source": "export default async (e, ctx) => {
            if (e.nap) await new Promise((r) => setTimeout(r, e.nap));
            const chatty = Date.now() + (e.chatty ?? 0);
            while (Date.now() < chatty) await ctx.admin.db.collection('todos').list({ limit: 1 });
            const end = Date.now() + (e.spin ?? 0);
            while (Date.now() < end) {}
            return e.n;
        }",
            "public": true
        }),
    )
    .await;
    // Quick calls first: the pool learns that this code runs short, so it packs the next
    // calls behind a running one on its warm worker rather than waking another.
    for n in 0..20 {
        let answer = call(&t, "queue", "slow", None, json!({ "n": n }))
            .expect(StatusCode::OK)
            .await;
        assert_eq!(answer, n);
    }
    // One that waits on a timer, one that computes, one that makes many quick host calls: none
    // holds up the calls queued behind it for long.
    for head in [
        json!({ "n": -1, "nap": 3000 }),
        json!({ "n": -1, "spin": 3000 }),
        // Many quick host calls: no single wait is long, the call as a whole is.
        json!({ "n": -1, "chatty": 3000 }),
    ] {
        let slow = tokio::spawn(call(&t, "queue", "slow", None, head).send());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let quick = (0..6)
            .map(|n| call(&t, "queue", "slow", None, json!({ "n": n })))
            .collect();
        for (n, (status, body, elapsed)) in concurrently(quick).await.into_iter().enumerate() {
            assert_eq!((status, body), (StatusCode::OK, json!(n)));
            // Not held until the slow one ends, 2.8 s from now.
            assert!(
                elapsed < Duration::from_millis(1500),
                "call {n} took {elapsed:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_millis(1500));
        let slow = slow.await.unwrap().unwrap();
        assert_eq!(slow.status(), StatusCode::OK);
        assert_eq!(slow.json::<Value>().await.unwrap(), -1);
    }
}

#[tokio::test]
async fn an_app_filling_its_workers_never_holds_up_another_apps_calls() {
    let t = server(false).await;
    scene(&t, "hog").await;
    scene(&t, "calm").await;
    deploy(
        &t,
        "hog",
        "spin",
        json!({
            "source": "export default async (e) => { if (e.spin) for (;;) {} return 0; }",
            "public": true,
            "timeout_ms": 2000
        }),
    )
    .await;
    deploy(
        &t,
        "calm",
        "ping",
        json!({
            "source": "export default async (e) => ({ pong: e.n })",
            "public": true
        }),
    )
    .await;
    for _ in 0..20 {
        call(&t, "hog", "spin", None, json!({}))
            .expect(StatusCode::OK)
            .await;
    }
    // More spinning calls than the hog's workers take, queued behind each other as deep as
    // the pool lets them.
    let spins = (0..12)
        .map(|_| call(&t, "hog", "spin", None, json!({ "spin": true })))
        .collect();
    let hog = tokio::spawn(concurrently(spins));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..5 {
        let started = Instant::now();
        let answer = call(&t, "calm", "ping", None, json!({ "n": n }))
            .expect(StatusCode::OK)
            .await;
        assert_eq!(answer, json!({ "pong": n }));
        // The spins run 2 s each: a call waiting behind one would take that long.
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(1000),
            "call {n} took {elapsed:?}"
        );
    }
    for (status, body, _) in hog.await.unwrap() {
        assert_eq!(body["error"]["code"], "function_timeout", "{status} {body}");
    }
}

#[tokio::test]
async fn five_hostile_apps_computing_and_awaiting_never_hold_up_a_neighbours_calls() {
    // A small pool, so that the hostile apps fill it: 10 workers, 2 per app, 4 kept free.
    let t = TestApp::builder()
        .config(|c| {
            c.functions.worker_program = BIN.into();
            c.functions.workers = 10;
            c.functions.workers_per_app = 2;
            c.functions.reserved_workers = 4;
        })
        .start()
        .await;
    let hostile: Vec<String> = (1..=5).map(|i| format!("hostile-{i}")).collect();
    for app in &hostile {
        t.create_app(app).await;
        deploy(
            &t,
            app,
            "spin",
            json!({
                "source": "export default async () => { for (;;) {} }",
                "public": true, "timeout_ms": 2000
            }),
        )
        .await;
        deploy(&t, app, "sleep", json!({
            "source": "export default async () => { await new Promise((r) => setTimeout(r, 2000)); return 1; }",
            "public": true, "timeout_ms": 5000
        }))
        .await;
    }
    t.create_app("neighbour").await;
    deploy(
        &t,
        "neighbour",
        "ping",
        json!({
            "source": "export default async (e) => ({ pong: e.n })", "public": true
        }),
    )
    .await;
    // Every hostile app asks for twice its share, half of it computing, half awaiting.
    let mut attacks = Vec::new();
    for app in &hostile {
        for i in 0..4 {
            let name = if i % 2 == 0 { "spin" } else { "sleep" };
            let request = call(&t, app, name, None, json!({}));
            attacks.push(tokio::spawn(async move {
                request.send().await.map(|r| r.status())
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..10 {
        let answer = call(&t, "neighbour", "ping", None, json!({ "n": n }))
            .expect(StatusCode::OK)
            .await;
        assert_eq!(answer, json!({ "pong": n }));
    }
    // Order, not time: all of the neighbour's calls are done while every hostile call still
    // runs (they take 2 s, and half of them start only after the first half).
    let finished = attacks.iter().filter(|a| a.is_finished()).count();
    assert_eq!(
        finished, 0,
        "hostile calls ended before the neighbour was served"
    );
    for attack in attacks {
        let status = attack.await.unwrap().unwrap();
        assert!(
            [
                StatusCode::OK,
                StatusCode::GATEWAY_TIMEOUT,
                StatusCode::TOO_MANY_REQUESTS
            ]
            .contains(&status),
            "{status}"
        );
    }
}

#[tokio::test]
async fn an_event_that_is_not_a_json_object_is_refused_with_its_code() {
    let t = server(false).await;
    scene(&t, "events").await;
    deploy(
        &t,
        "events",
        "echo",
        json!({
            "source": "export default async (e) => e",
            "public": true
        }),
    )
    .await;
    let path = "/v1/apps/events/functions/echo";
    let send = |body: &'static str, content_type: &'static str| {
        t.request(Method::POST, path)
            .header("content-type", content_type)
            .body(body)
    };
    send("{\"n\": ", "application/json")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_json")
        .await;
    for body in ["[1, 2]", "\"text\"", "7", "null"] {
        send(body, "application/json")
            .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
            .await;
    }
    send("{\"n\": 1}", "text/plain")
        .expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        .await;
    // The event reaches the function as sent, and its answer comes back as it returned it.
    let answer = send(
        " \n {\"n\": 1, \"s\": \"é\\u0000\", \"deep\": [{}]} ",
        "application/json",
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(answer, json!({ "n": 1, "s": "é\u{0}", "deep": [{}] }));
}

/// An HTTP server on loopback that answers `GET /{ms}` with `late {ms}` after `ms` milliseconds.
async fn slow_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&chunk[..n]);
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split(' ').nth(1).unwrap_or("/0");
                let ms: u64 = path.trim_start_matches('/').parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let body = format!("late {ms}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn host_calls_run_at_once_and_none_outlives_the_deadline() {
    let t = server(true).await;
    t.create_app("net").await;
    let slow = slow_server().await;
    deploy(&t, "net", "parallel", json!({
        "source": "export default async (e) => {
            const started = Date.now();
            const texts = await Promise.all([1, 2, 3].map(() => fetch(`${e.slow}/600`).then((r) => r.text())));
            return { texts, ms: Date.now() - started };
        }",
        "public": true
    }))
    .await;
    // Three calls of 600 ms each, at once: well under the 1.8 s they would take in turn.
    let answer = call(&t, "net", "parallel", None, json!({ "slow": slow }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer["texts"], json!(["late 600", "late 600", "late 600"]));
    assert!(answer["ms"].as_u64().unwrap() < 1500, "{answer}");

    // Six calls of 2 s each against a 0.5 s deadline: the call ends at its deadline, not after
    // the calls, and the records the function meant to write after them are never written.
    t.admin(Method::PUT, "/v1/admin/apps/net/collections/after")
        .json(&json!({ "fields": [{ "name": "n", "type": "integer" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(
        &t,
        "net",
        "stuck",
        json!({
            "source": "export default async (e, ctx) => {
            for (let i = 0; i < 6; i++) {
                await fetch(`${e.slow}/2000`);
                await ctx.admin.db.collection('after').add({ n: i });
            }
        }",
            "public": true,
            "timeout_ms": 500
        }),
    )
    .await;
    let started = Instant::now();
    call(&t, "net", "stuck", None, json!({ "slow": slow }))
        .expect_error(StatusCode::GATEWAY_TIMEOUT, "function_timeout")
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let written = t
        .admin(Method::GET, "/v1/apps/net/collections/after/records")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(written["items"], json!([]), "{written}");
}

#[tokio::test]
async fn a_late_reply_to_a_call_that_ended_never_reaches_the_next_one() {
    let t = server(true).await;
    scene(&t, "late").await;
    scene(&t, "next").await;
    let slow = slow_server().await;
    let source = "export default async (e) => (await fetch(e.url)).text()";
    deploy(
        &t,
        "late",
        "fetch",
        json!({ "source": source, "public": true, "timeout_ms": 300 }),
    )
    .await;
    deploy(
        &t,
        "next",
        "fetch",
        json!({ "source": source, "public": true }),
    )
    .await;
    // The first call times out at 300 ms while its fetch is still out (answered at 500 ms),
    // which frees its worker; another app's call then runs there and waits for its own fetch
    // (until about 650 ms). The first's answer, when it comes, is not the second's.
    let first = call(
        &t,
        "late",
        "fetch",
        None,
        json!({ "url": format!("{slow}/500") }),
    );
    let first = tokio::spawn(first.send());
    tokio::time::sleep(Duration::from_millis(350)).await;
    let second = call(
        &t,
        "next",
        "fetch",
        None,
        json!({ "url": format!("{slow}/300") }),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(second, "late 300");
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn one_app_fetching_from_slow_servers_never_holds_up_another_apps_fetches() {
    let t = server(true).await;
    t.create_app("greedy").await;
    t.create_app("calm").await;
    let slow = slow_server().await;
    let fan_out = "export default async (e) => {
        await Promise.all(Array.from({ length: 16 }, () => fetch(`${e.slow}/4000`)));
    }";
    deploy(
        &t,
        "greedy",
        "fan",
        json!({ "source": fan_out, "public": true, "timeout_ms": 5000 }),
    )
    .await;
    deploy(
        &t,
        "calm",
        "one",
        json!({
            "source": "export default async (e) => (await fetch(`${e.slow}/0`)).text()",
            "public": true
        }),
    )
    .await;
    // Eight calls of sixteen slow fetches each: 128, every socket the instance allows at once,
    // were it not for each app's share.
    let greedy: Vec<_> = (0..8)
        .map(|_| tokio::spawn(call(&t, "greedy", "fan", None, json!({ "slow": slow })).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let answer = call(&t, "calm", "one", None, json!({ "slow": slow }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(answer, json!("late 0"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The greedy calls were all still waiting on their fetches meanwhile. Sixteen at a time, the
    // app's share, their 4 s fetches fit one call's worth into the 5 s deadline, not eight.
    assert!(greedy.iter().all(|call| !call.is_finished()));
    let mut statuses = Vec::new();
    for call in greedy {
        statuses.push(call.await.unwrap().unwrap().status());
    }
    let timed_out = statuses
        .iter()
        .filter(|s| **s == StatusCode::GATEWAY_TIMEOUT)
        .count();
    assert!(timed_out >= 7, "{statuses:?}");
}

#[tokio::test]
async fn a_flood_on_one_apps_queue_does_not_hold_up_another_apps_messages() {
    let t = server(false).await;
    for app in ["flood", "calm"] {
        scene(&t, app).await;
        t.admin(Method::PUT, &format!("/v1/admin/apps/{app}/queues/work"))
            .json(&json!({}))
            .expect(StatusCode::CREATED)
            .await;
    }
    // The flood's consumer takes 20 ms a message, two at a time: its backlog lasts a minute.
    deploy(
        &t,
        "flood",
        "slow",
        json!({
            "source": "export default async () => { await new Promise((r) => setTimeout(r, 20)); }",
            "triggers": [{ "queue": "work", "batch": 1, "concurrency": 2 }]
        }),
    )
    .await;
    deploy(&t, "calm", "note", json!({
        "source": "export default async (e, ctx) => { \
            for (const m of e.messages) await ctx.admin.db.collection('todos').add({ title: m.payload.title }); }",
        "triggers": [{ "queue": "work" }]
    }))
    .await;
    for chunk in 0..30 {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({ "payload": { "n": chunk * 100 + i } }))
            .collect();
        t.admin(Method::POST, "/v1/admin/apps/flood/queues/work/messages")
            .json(&json!({ "messages": messages }))
            .expect(StatusCode::CREATED)
            .await;
    }
    t.admin(Method::POST, "/v1/admin/apps/calm/queues/work/messages")
        .json(&json!({ "messages": [{ "payload": { "title": "not starved" } }] }))
        .expect(StatusCode::CREATED)
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = t
            .admin(
                Method::GET,
                "/v1/apps/calm/collections/todos/records?filter=title%3D%22not%20starved%22",
            )
            .expect(StatusCode::OK)
            .await;
        if !page["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the calm app's message never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It ran while the flood's backlog was still there: not behind it.
    let flood = t
        .admin(Method::GET, "/v1/admin/apps/flood/queues/work")
        .expect(StatusCode::OK)
        .await;
    assert!(flood["ready"].as_i64().unwrap() > 2000, "{flood}");
    t.admin(Method::DELETE, "/v1/admin/apps/flood/queues/work/messages")
        .expect(StatusCode::OK)
        .await;
}

/// How many batches queue consumers started, claimed `by` a look, a send or a run.
async fn batches(t: &TestApp, by: &str) -> u64 {
    let prefix = format!("cloudlet_queue_batches_total{{by=\"{by}\"}} ");
    t.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// How many queue consumers' batches (and Cloudlet's own deliveries) run now.
async fn runs(t: &TestApp) -> u64 {
    t.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix("cloudlet_queue_runs "))
        .map(|n| n.trim().parse().unwrap())
        .expect("the queue runs gauge")
}

/// A send handed to an idle consumer with an app key that held before checks the key in the
/// send itself (on PostgreSQL in its own transaction, which saves the key's lookup before the
/// run can start): a key rotated away sends nothing and starts no run; the new one sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_handed_to_a_consumer_goes_only_with_a_key_that_holds() {
    let t = server(false).await;
    let old = t.create_app("keyed").await;
    t.admin(Method::PUT, "/v1/admin/apps/keyed/collections/done")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/keyed/queues/work")
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "keyed", "worker", json!({
        "source": "export default async (e, ctx) => { \
            for (const m of e.messages) await ctx.admin.db.collection('done').add({ note: m.payload.n }); }",
        "triggers": [{ "queue": "work", "batch": 1, "concurrency": 1 }]
    }))
    .await;
    let send = |key: &str, n: &str| {
        t.request(Method::POST, "/v1/admin/apps/keyed/queues/work/messages")
            .bearer_auth(key)
            .json(&json!({ "messages": [{ "payload": { "n": n } }] }))
    };
    // Until the runs have ended and settled: the consumer is idle again.
    let ran = |notes: &'static [&'static str]| {
        let t = &t;
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while notes_of(t, "keyed", "done").await != notes
                || runs(t).await != 0
                || queue_counts(t, "keyed", "work").await != [Some(0), Some(0), Some(0)]
            {
                assert!(
                    Instant::now() < deadline,
                    "ran {:?}",
                    notes_of(t, "keyed", "done").await
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // The key is looked up the first time, then taken on trust: each send, once the run
    // before it has ended, is handed to the idle consumer.
    send(&old, "a").expect(StatusCode::CREATED).await;
    ran(&["a"]).await;
    send(&old, "b").expect(StatusCode::CREATED).await;
    ran(&["a", "b"]).await;
    assert_eq!(
        batches(&t, "send").await,
        2,
        "each send was handed to the idle consumer"
    );
    let new = t
        .admin(Method::POST, "/v1/admin/apps/keyed/keys/rotate")
        .expect(StatusCode::OK)
        .await["secret_key"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&old, "refused")
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    send(&new, "c").expect(StatusCode::CREATED).await;
    ran(&["a", "b", "c"]).await;
    send(&new, "d").expect(StatusCode::CREATED).await;
    ran(&["a", "b", "c", "d"]).await;
    assert_eq!(batches(&t, "send").await, 4);
    t.stop().await;
}

/// A send's claim starts its run before the send's commit is answered (on PostgreSQL, while
/// the commit waits for the WAL's flush). A run that ends before the commit does still
/// acknowledges what it ran: it waits for the commit, since until then no other connection
/// sees the send's messages or their claims. On PostgreSQL the test holds the commit back
/// (a deferred constraint trigger waits for an advisory lock the test holds) until the run
/// has ended; on SQLite the send commits as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_before_its_sends_commit_still_acknowledges_it() {
    let t = server(false).await;
    scene(&t, "early").await;
    t.admin(Method::PUT, "/v1/admin/apps/early/collections/done")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/early/queues/work")
        .json(&json!({ "visibility_timeout_secs": 120 }))
        .expect(StatusCode::CREATED)
        .await;
    // The run notes what it ran on, in the collection's own commit, before it ends.
    deploy(&t, "early", "worker", json!({
        "source": "export default async (e, ctx) => { \
            for (const m of e.messages) await ctx.admin.db.collection('done').add({ note: `${m.payload.n}:${m.attempt}` }); }",
        "triggers": [{ "queue": "work", "batch": 1, "concurrency": 1 }]
    }))
    .await;
    let held = t.database.as_ref().map(|url| {
        let pg = cloudlet_store::postgres::testing::TestServer::shared();
        let db = cloudlet_store::postgres::testing::TestServer::database_name(url);
        tokio::task::block_in_place(|| {
            pg.sql(
                db,
                "CREATE FUNCTION \"app_early\".held_commit() RETURNS trigger LANGUAGE plpgsql \
                 AS $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$; \
                 CREATE CONSTRAINT TRIGGER held_commit AFTER INSERT ON \"app_early\"._queue_messages \
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
                 EXECUTE FUNCTION \"app_early\".held_commit();",
            );
            let lock = pg.session(db, "SELECT pg_advisory_lock(4242);");
            let taken = || {
                pg.sql(
                    db,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
                     AND objid = 4242",
                )
                .trim()
                    == "1"
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !taken() {
                assert!(Instant::now() < deadline, "the advisory lock was never taken");
                std::thread::sleep(Duration::from_millis(20));
            }
            lock
        })
    });
    let send = t
        .admin(Method::POST, "/v1/admin/apps/early/queues/work/messages")
        .json(&json!({ "messages": [{ "payload": { "n": 1 } }] }));
    let send = tokio::spawn(async move { send.send().await.unwrap().status() });
    // The run ends (and settles, or tries to) while the send's commit is held back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while notes_of(&t, "early", "done").await.is_empty() {
        assert!(Instant::now() < deadline, "the run never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(lock) = held {
        assert!(
            !send.is_finished(),
            "the send was answered before its commit"
        );
        tokio::task::block_in_place(|| lock.release()).unwrap();
    }
    assert_eq!(send.await.unwrap(), StatusCode::CREATED);
    assert_eq!(
        batches(&t, "send").await,
        1,
        "the send claimed for the idle consumer"
    );
    // Acknowledged: nothing waits or is in flight, long before the claim's 120 s would expire.
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_counts(&t, "early", "work").await != [Some(0), Some(0), Some(0)] {
        assert!(
            Instant::now() < deadline,
            "the run's acknowledgement was lost: {:?}",
            queue_counts(&t, "early", "work").await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(notes_of(&t, "early", "done").await, ["1:1"]);
}

#[tokio::test]
async fn a_send_to_a_consumer_with_a_free_place_is_claimed_by_the_send_itself() {
    let t = server(false).await;
    scene(&t, "handed").await;
    t.admin(Method::PUT, "/v1/admin/apps/handed/collections/done")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/handed/queues/work")
        .json(&json!({}))
        .expect(StatusCode::CREATED)
        .await;
    // One place; each run takes a second and writes down what it ran on.
    deploy(&t, "handed", "worker", json!({
        "source": "export default async (e, ctx) => { \
            await new Promise((r) => setTimeout(r, 1000)); \
            for (const m of e.messages) await ctx.admin.db.collection('done').add({ note: `${m.payload.n}:${m.attempt}` }); }",
        "triggers": [{ "queue": "work", "batch": 1, "concurrency": 1 }]
    }))
    .await;
    let send = |n: u32| {
        t.admin(Method::POST, "/v1/admin/apps/handed/queues/work/messages")
            .json(&json!({ "messages": [{ "payload": { "n": n } }] }))
            .expect(StatusCode::CREATED)
    };
    // The consumer is idle: the send claims for it, so the message is taken by the time the
    // send is answered.
    send(1).await;
    assert_eq!(
        queue_counts(&t, "handed", "work").await,
        [Some(0), Some(1), Some(0)]
    );
    assert_eq!(batches(&t, "send").await, 1);
    // Its one place is taken: the next send waits, and the run, its batch full, takes it next.
    send(2).await;
    assert_eq!(
        queue_counts(&t, "handed", "work").await,
        [Some(1), Some(1), Some(0)]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while notes_of(&t, "handed", "done").await.len() < 2 {
        assert!(Instant::now() < deadline, "the runs never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(batches(&t, "run").await, 1);
    // Once the run found nothing more and gave its place back, a send claims again.
    while runs(&t).await != 0 {
        assert!(Instant::now() < deadline, "the place was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send(3).await;
    assert_eq!(batches(&t, "send").await, 2);
    while notes_of(&t, "handed", "done").await.len() < 3 {
        assert!(Instant::now() < deadline, "the last run never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each once, on its first attempt, and the dispatcher never had to claim.
    let mut notes = notes_of(&t, "handed", "done").await;
    notes.sort();
    assert_eq!(notes, ["1:1", "2:1", "3:1"]);
    assert_eq!(batches(&t, "look").await, 0);
}

#[tokio::test]
async fn a_consumer_running_batch_after_batch_makes_room_for_its_apps_other_work_and_stops_when_undeployed()
 {
    let t = server(false).await;
    let (alice, _) = scene(&t, "busy").await;
    t.admin(Method::PUT, "/v1/admin/apps/busy/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    for queue in ["work", "other"] {
        t.admin(Method::PUT, &format!("/v1/admin/apps/busy/queues/{queue}"))
            .json(&json!({}))
            .expect(StatusCode::CREATED)
            .await;
    }
    // Allowed more batches at once than an app runs (16), this consumer takes every place of
    // the app, and each batch comes full, so each place takes its next batch itself; a message
    // takes 100 ms, so the backlog of 3,000 lasts about twenty seconds.
    deploy(
        &t,
        "busy",
        "slow",
        json!({
            "source": "export default async () => { await new Promise((r) => setTimeout(r, 100)); }",
            "triggers": [{ "queue": "work", "batch": 1, "concurrency": 20 }]
        }),
    )
    .await;
    deploy(&t, "busy", "audit", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('audit').add({ note: `${e.operation} ${e.new.title}` })",
        "triggers": [{ "collection": "todos", "on": ["create"] }]
    }))
    .await;
    // Another consumer of the app, looked at after `slow` by the dispatcher.
    deploy(&t, "busy", "zulu", json!({
        "source": "export default async (e, ctx) => { for (const m of e.messages) await ctx.admin.db.collection('audit').add({ note: m.payload.note }); }",
        "triggers": [{ "queue": "other" }]
    }))
    .await;
    for chunk in 0..30 {
        let messages: Vec<Value> = (0..100)
            .map(|i| json!({ "payload": { "n": chunk * 100 + i } }))
            .collect();
        t.admin(Method::POST, "/v1/admin/apps/busy/queues/work/messages")
            .json(&json!({ "messages": messages }))
            .expect(StatusCode::CREATED)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_counts(&t, "busy", "work").await[1] < Some(16) {
        assert!(
            Instant::now() < deadline,
            "the consumer never took its 16 places"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.request(Method::POST, "/v1/apps/busy/collections/todos/records")
        .bearer_auth(&alice)
        .json(&json!({ "title": "milk" }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(audit_notes_when(&t, "busy", 1).await, vec!["create milk"]);
    t.admin(Method::POST, "/v1/admin/apps/busy/queues/other/messages")
        .json(&json!({ "messages": [{ "payload": { "note": "not starved" } }] }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(
        audit_notes_when(&t, "busy", 2).await,
        vec!["create milk", "not starved"]
    );
    // Both ran while the backlog was still there: a place was given back to each, not left
    // to the busy consumer until its queue ran dry.
    let [ready, ..] = queue_counts(&t, "busy", "work").await;
    assert!(ready > Some(1000), "{ready:?}");

    // Once the function consumes the queue no more, no place takes another batch of it.
    deploy(
        &t,
        "busy",
        "slow",
        json!({ "source": "export default async () => {}" }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue_counts(&t, "busy", "work").await[1] != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the former consumer kept its claims"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let [left, ..] = queue_counts(&t, "busy", "work").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        queue_counts(&t, "busy", "work").await,
        [left, Some(0), Some(0)]
    );
    assert!(left > Some(1000), "{left:?}");
}

#[tokio::test]
async fn queue_consumers_take_batches_retry_failures_and_dead_letter_poison() {
    let t = server(false).await;
    scene(&t, "jobs").await;
    t.admin(Method::PUT, "/v1/admin/apps/jobs/queues/work")
        .json(&json!({ "max_attempts": 2, "backoff_secs": 0, "max_backoff_secs": 0 }))
        .expect(StatusCode::CREATED)
        .await;
    // The consumer writes a record per message and reports the poison ones as failed; it
    // sees the message ids and attempts, so it could be idempotent.
    deploy(&t, "jobs", "worker", json!({
        "source": "export default async (event, ctx) => { \
            const failed = []; \
            for (const m of event.messages) { \
              if (m.payload.poison) { failed.push(m.id); continue; } \
              await ctx.admin.db.collection('todos').add({ title: `${event.queue}:${m.payload.title}:${m.attempt}` }); \
            } \
            return { failed }; }",
        "triggers": [{ "queue": "work", "batch": 4, "concurrency": 2 }]
    }))
    .await;
    // A producer function sends through ctx.queue: one message, then a batch, one with a key
    // sent twice.
    deploy(
        &t,
        "jobs",
        "producer",
        json!({
            "public": true,
            "source": "export default async (event, ctx) => { \
                const one = await ctx.queue.send('work', { title: 'single' }); \
                const many = await ctx.queue.sendBatch('work', [ \
                  { payload: { title: 'b1' } }, { payload: { title: 'b2' }, key: 'k' }, \
                  { payload: { title: 'dup' }, key: 'k' }, { payload: { poison: true } } ]); \
                return { one, many }; }"
        }),
    )
    .await;
    let produced = call(&t, "jobs", "producer", None, json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(produced["one"]["duplicate"], false);
    let many = produced["many"].as_array().unwrap();
    assert_eq!(many.len(), 4);
    assert_eq!(many[2]["duplicate"], true, "{produced}");
    assert_eq!(many[2]["id"], many[1]["id"]);
    let messages: Vec<Value> = (0..8)
        .map(|i| json!({ "payload": { "title": format!("m{i}") } }))
        .collect();
    t.admin(Method::POST, "/v1/admin/apps/jobs/queues/work/messages")
        .json(&json!({ "messages": messages }))
        .expect(StatusCode::CREATED)
        .await;

    // 11 good messages become 11 records; the poison one dies after its 2 attempts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (titles, queue) = loop {
        let page = t
            .admin(
                Method::GET,
                "/v1/apps/jobs/collections/todos/records?limit=100",
            )
            .expect(StatusCode::OK)
            .await;
        let queue = t
            .admin(Method::GET, "/v1/admin/apps/jobs/queues/work")
            .expect(StatusCode::OK)
            .await;
        let titles: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["title"].as_str().unwrap().to_owned())
            .collect();
        // The records are written before their batch is acknowledged: wait for both.
        if titles.len() >= 11 && queue["dead"] == 1 && queue["in_flight"] == 0 {
            break (titles, queue);
        }
        assert!(
            Instant::now() < deadline,
            "not consumed in time: {titles:?} {queue}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(titles.len(), 11, "each good message once: {titles:?}");
    assert!(
        titles
            .iter()
            .all(|t| t.starts_with("work:") && t.ends_with(":1"))
    );
    assert!(titles.iter().any(|t| t == "work:single:1"));
    assert!(
        !titles.iter().any(|t| t.contains("dup")),
        "the keyed duplicate was not sent"
    );
    assert_eq!(
        (queue["ready"].as_i64(), queue["in_flight"].as_i64()),
        (Some(0), Some(0)),
        "{queue}"
    );
    let dead = t
        .admin(
            Method::GET,
            "/v1/admin/apps/jobs/queues/work/messages?state=dead",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(dead["items"][0]["payload"], json!({ "poison": true }));
    assert_eq!(dead["items"][0]["attempt"], 2);
    assert_eq!(
        dead["items"][0]["last_error"],
        "the function reported it failed"
    );
    let logs = loop {
        let logs = t
            .admin(Method::GET, "/v1/admin/apps/jobs/logs?function=worker")
            .expect(StatusCode::OK)
            .await;
        if !logs["items"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(logs["items"][0]["trigger"], "queue");
}

#[tokio::test]
async fn a_consumer_that_throws_fails_its_delivery_and_the_retry_succeeds() {
    let t = server(false).await;
    scene(&t, "flaky").await;
    t.admin(Method::PUT, "/v1/admin/apps/flaky/queues/jobs")
        .json(&json!({ "max_attempts": 3, "backoff_secs": 0, "max_backoff_secs": 0 }))
        .expect(StatusCode::CREATED)
        .await;
    // Throws on a message's first two attempts, then records it.
    deploy(
        &t,
        "flaky",
        "worker",
        json!({
            "source": "export default async (event, ctx) => { \
                const m = event.messages[0]; \
                if (m.attempt < 3) throw new Error('not yet ' + m.attempt); \
                await ctx.admin.db.collection('todos').add({ title: m.payload.title }); }",
            "triggers": [{ "queue": "jobs" }]
        }),
    )
    .await;
    t.admin(Method::POST, "/v1/admin/apps/flaky/queues/jobs/messages")
        .json(&json!({ "messages": [{ "payload": { "title": "third time" } }] }))
        .expect(StatusCode::CREATED)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = t
            .admin(Method::GET, "/v1/apps/flaky/collections/todos/records")
            .expect(StatusCode::OK)
            .await;
        if page["items"].as_array().unwrap().len() == 1 {
            assert_eq!(page["items"][0]["title"], "third time");
            break;
        }
        assert!(Instant::now() < deadline, "never consumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The log is written in the background: wait for the three runs.
    let outcomes = loop {
        let logs = t
            .admin(Method::GET, "/v1/admin/apps/flaky/logs?function=worker")
            .expect(StatusCode::OK)
            .await;
        let outcomes: Vec<String> = logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["outcome"].as_str().unwrap().to_owned())
            .collect();
        if outcomes.len() >= 3 || Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(outcomes, ["ok", "error", "error"]);
    assert_eq!(queue_counts(&t, "flaky", "jobs").await, [Some(0); 3]);
}

#[tokio::test]
async fn a_data_trigger_that_fails_is_delivered_again_with_its_event_id() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "retried").await;
    t.admin(Method::PUT, "/v1/admin/apps/retried/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "retried", "audit", json!({
        "source": "export default async (e, ctx) => { \
            if (e.attempt === 1) throw new Error('the first try fails'); \
            await ctx.db.collection('audit').add({ note: `${e.event_id}:${e.attempt}:${e.new.title}` }); }",
        "triggers": [{ "collection": "todos", "on": ["create"] }]
    }))
    .await;
    t.request(Method::POST, "/v1/apps/retried/collections/todos/records")
        .bearer_auth(&alice)
        .json(&json!({ "title": "milk" }))
        .expect(StatusCode::CREATED)
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let note = loop {
        let page = t
            .admin(Method::GET, "/v1/apps/retried/collections/audit/records")
            .expect(StatusCode::OK)
            .await;
        if let Some(note) = page["items"][0]["note"].as_str() {
            break note.to_owned();
        }
        assert!(Instant::now() < deadline, "the trigger never succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let parts: Vec<&str> = note.split(':').collect();
    assert_eq!(parts[1..], ["2", "milk"], "{note}");
    assert!(parts[0].parse::<i64>().is_ok_and(|id| id > 0), "{note}");
}

#[tokio::test]
async fn ctx_files_writes_reads_lists_signs_and_removes_under_the_callers_rules() {
    let t = server(false).await;
    let (alice, bob) = scene(&t, "notes").await;
    t.admin(Method::PUT, "/v1/admin/apps/notes/buckets/reports")
        .json(&json!({ "types": ["*/*"] }))
        .expect(StatusCode::OK)
        .await;
    deploy(
        &t,
        "notes",
        "report",
        json!({
            "source": "export default async (e, ctx) => {
            const files = e.admin ? ctx.admin.files : ctx.files;
            try {
              if (e.op === 'write') return await files.write('reports', JSON.stringify(e.data), { name: 'report.json', metadata: { kind: 'daily' } });
              if (e.op === 'bytes') return await files.write('reports', new Uint8Array([0x25, 0x50, 0x44, 0x46, 0x2d, 0x31]));
              if (e.op === 'read') { const r = await files.read('reports', e.id); return { file: r.file, data: r.json(), size: r.bytes.length }; }
              if (e.op === 'list') return (await files.list('reports', { mine: e.mine })).items.map((f) => f.id);
              if (e.op === 'urls') return await files.urls([e.id]);
              if (e.op === 'remove') return await files.remove('reports', e.id);
              if (e.op === 'bad') return await files.write('reports', 42);
            } catch (error) { return { code: error.code, message: error.message }; }
        }"
        }),
    )
    .await;
    let run = |token: Option<&str>, event: Value| call(&t, "notes", "report", token, event);

    let written = run(
        Some(&alice),
        json!({ "op": "write", "data": { "done": 3 } }),
    )
    .expect(StatusCode::OK)
    .await;
    let id = written["id"].as_str().unwrap().to_owned();
    assert_eq!(written["name"], "report.json");
    assert_eq!(written["metadata"], json!({ "kind": "daily" }));
    assert!(
        written["owner"].is_string(),
        "the caller owns what the function wrote"
    );
    let pdf = run(Some(&alice), json!({ "op": "bytes" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        pdf["type"], "application/pdf",
        "sniffed from the bytes written"
    );

    let read = run(Some(&alice), json!({ "op": "read", "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(read["data"], json!({ "done": 3 }));
    assert_eq!(read["size"], written["size"]);
    // Bob's function call runs under Bob's rules: Alice's file is not there for him; as the
    // admin the function reaches it.
    let hidden = run(Some(&bob), json!({ "op": "read", "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(hidden["code"], "file_not_found");
    let admin = run(Some(&bob), json!({ "op": "read", "id": id, "admin": true }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(admin["data"], json!({ "done": 3 }));
    let listed = run(Some(&alice), json!({ "op": "list", "mine": true }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let signed = run(Some(&alice), json!({ "op": "urls", "id": id }))
        .expect(StatusCode::OK)
        .await;
    let url = signed[0]["url"].as_str().unwrap();
    let fetched = t.request(Method::GET, url).send().await.unwrap();
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.json::<Value>().await.unwrap(), json!({ "done": 3 }));

    let bad = run(Some(&alice), json!({ "op": "bad" }))
        .expect(StatusCode::OK)
        .await;
    assert!(
        bad["message"].as_str().unwrap().contains("ctx.files.write"),
        "{bad}"
    );
    let refused = run(Some(&bob), json!({ "op": "remove", "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(refused["code"], "file_not_found");
    run(Some(&alice), json!({ "op": "remove", "id": id }))
        .expect(StatusCode::OK)
        .await;
    let gone = run(Some(&alice), json!({ "op": "read", "id": id }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(gone["code"], "file_not_found");
}

#[tokio::test]
async fn file_triggers_run_after_uploads_and_deletions_of_their_bucket() {
    let t = server(false).await;
    let (alice, _) = scene(&t, "album").await;
    t.admin(Method::PUT, "/v1/admin/apps/album/collections/audit")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
    for bucket in ["photos", "other"] {
        t.admin(
            Method::PUT,
            &format!("/v1/admin/apps/album/buckets/{bucket}"),
        )
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    }
    deploy(&t, "album", "catalogue", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('audit').add({ \
            note: [e.event, e.file.bucket, e.file.name, e.file.type, e.file.size, \
                   e.file.metadata.album, ctx.trigger, e.file.created_at.endsWith('Z')].join(' ') })",
        "triggers": [{ "bucket": "photos" }]
    }))
    .await;
    let upload = |bucket: &str, name: &str| {
        t.request(
            Method::POST,
            &format!(
                "/v1/apps/album/files/{bucket}?name={name}&metadata=%7B%22album%22%3A%22trip%22%7D"
            ),
        )
        .bearer_auth(&alice)
        .body(b"%PDF-1.7\n".to_vec())
        .expect(StatusCode::CREATED)
    };
    let kept = upload("photos", "a.pdf").await;
    upload("other", "b.pdf").await;
    let deleted = t
        .request(
            Method::DELETE,
            &format!(
                "/v1/apps/album/files/photos/{}",
                kept["id"].as_str().unwrap()
            ),
        )
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        audit_notes_when(&t, "album", 2).await,
        [
            "files.delete photos a.pdf application/pdf 9 trip files true",
            "files.upload photos a.pdf application/pdf 9 trip files true",
        ],
        "the other bucket triggers nothing"
    );
    for bad in [
        json!({ "bucket": "Photos" }),
        json!({ "bucket": "photos", "on": [] }),
        json!({ "bucket": "photos", "on": ["rename"] }),
    ] {
        t.admin(Method::PUT, "/v1/admin/apps/album/functions/bad")
            .json(&json!({ "source": "export default 1", "triggers": [bad] }))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
            .await;
    }
}

#[tokio::test]
async fn functions_publish_send_and_read_presence_through_ctx_realtime() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let t = server(false).await;
    let (alice, _) = scene(&t, "live").await;
    t.admin(Method::PUT, "/v1/admin/apps/live/realtime")
        .json(&json!({ "channels": { "room": { "rules": { "join": "" } } } }))
        .expect(StatusCode::OK)
        .await;
    let me = t
        .request(Method::GET, "/v1/apps/live/auth/user")
        .bearer_auth(&alice)
        .expect(StatusCode::OK)
        .await;
    let alice_id = me["id"].as_str().unwrap().to_owned();
    let url = format!("ws://{}/v1/apps/live/realtime", t.running().local_addr());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let next = async move |socket: &mut tokio_tungstenite::WebSocketStream<_>| loop {
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
    };
    for message in [
        json!({ "type": "auth", "token": alice }),
        json!({ "type": "subscribe", "id": "r", "channel": "room:1" }),
        json!({ "type": "subscribe", "id": "dm", "direct": true }),
        json!({ "type": "track", "id": "r", "state": { "here": true } }),
    ] {
        socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        let answer = next(&mut socket).await;
        assert_ne!(answer["type"], "error", "{answer}");
    }

    deploy(&t, "live", "announce", json!({
        "public": true,
        "source": "export default async (event, ctx) => { \
            const a = await ctx.realtime.publish('room:1', { text: event.text }); \
            const b = await ctx.realtime.send(event.to, 'psst'); \
            const present = await ctx.realtime.presence('room:1', { limit: 10 }); \
            let refused = null; \
            try { await ctx.realtime.publish('Room 1', 1); } catch (e) { refused = e.code; } \
            return { a: a.seq, b: b.seq, count: present.count, state: present.members[0].state, refused }; }"
    }))
    .await;
    let result = call(
        &t,
        "live",
        "announce",
        None,
        json!({ "text": "hello", "to": alice_id }),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(
        result,
        json!({ "a": 1, "b": 1, "count": 1, "state": { "here": true }, "refused": "invalid_channel" })
    );
    let published = next(&mut socket).await;
    assert_eq!(
        published,
        json!({ "type": "message", "channel": "room:1", "seq": 1, "from": null, "data": { "text": "hello" } })
    );
    let direct = next(&mut socket).await;
    assert_eq!(
        (&direct["type"], &direct["data"]),
        (&json!("direct"), &json!("psst"))
    );
}

#[tokio::test]
async fn sockets_opening_and_closing_trigger_functions() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let t = server(false).await;
    let (alice, _) = scene(&t, "sockets").await;
    t.admin(Method::PUT, "/v1/admin/apps/sockets/collections/seen")
        .json(&json!({ "fields": [{ "name": "note", "type": "text" }], "rules": { "list": "" } }))
        .expect(StatusCode::CREATED)
        .await;
    deploy(&t, "sockets", "seen", json!({
        "source": "export default async (e, ctx) => ctx.db.collection('seen').add({ \
            note: `${e.event} ${e.user} ${typeof e.member} ${typeof e.event_id} ${e.attempt}` })",
        "triggers": [{ "realtime": ["connect", "disconnect"] }]
    }))
    .await;
    t.admin(Method::PUT, "/v1/admin/apps/sockets/functions/bad")
        .json(&json!({ "source": "export default 1", "triggers": [{ "realtime": [] }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_function")
        .await;
    let me = t
        .request(Method::GET, "/v1/apps/sockets/auth/user")
        .bearer_auth(&alice)
        .expect(StatusCode::OK)
        .await;
    let alice_id = me["id"].as_str().unwrap().to_owned();

    let url = format!("ws://{}/v1/apps/sockets/realtime", t.running().local_addr());
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let auth = json!({ "type": "auth", "token": alice });
    socket.send(Message::text(auth.to_string())).await.unwrap();
    let notes = || notes_of(&t, "sockets", "seen");
    let until = |count: usize| {
        let notes = &notes;
        async move {
            for _ in 0..250 {
                let seen = notes().await;
                if seen.len() >= count {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            notes().await
        }
    };
    assert_eq!(
        until(1).await,
        vec![format!("realtime.connect {alice_id} string number 1")]
    );
    socket.close(None).await.unwrap();
    assert_eq!(
        until(2).await,
        vec![
            format!("realtime.connect {alice_id} string number 1"),
            format!("realtime.disconnect {alice_id} string number 1"),
        ]
    );
    // The admin token's sockets are the server's own: no event.
    let url = format!("ws://{}/v1/apps/sockets/realtime", t.running().local_addr());
    let (mut admin, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let auth = json!({ "type": "auth", "token": support::ADMIN_TOKEN });
    admin.send(Message::text(auth.to_string())).await.unwrap();
    admin.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(notes().await.len(), 2);
}

/// The platform emulator on an ephemeral port.
struct Emulator {
    base: String,
    http: reqwest::Client,
}

impl Emulator {
    async fn start(options: cloudlet_emulator::EmulatorOptions) -> Self {
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

    /// POSTs to the emulator's control API; expects success and answers its JSON (or null).
    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json::<Value>().await.unwrap_or(Value::Null)
    }
}

/// An RSA key pair made by OpenSSL: (private PEM, public PEM).
fn openssl_key_pair() -> (String, String) {
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
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    (
        std::fs::read_to_string(dir.path().join("key.pem")).unwrap(),
        std::fs::read_to_string(dir.path().join("pub.pem")).unwrap(),
    )
}

#[tokio::test]
async fn a_shop_prices_orders_on_the_server_and_records_each_sale_once() {
    let emu = Emulator::start(cloudlet_emulator::EmulatorOptions {
        pay_notify_retries: vec![Duration::from_millis(200); 5],
        ..cloudlet_emulator::EmulatorOptions::default()
    })
    .await;
    let emulator = emu.base.clone();
    let control = |path: &'static str, body: Value| emu.control(path, body);
    control(
        "/emulator/apps",
        json!({ "platform": "wechat", "appid": "wx-pay", "secret": "pay-secret" }),
    )
    .await;
    let (private_key, public_key) = openssl_key_pair();
    let platform = control(
        "/emulator/wechatpay/merchants",
        json!({ "mchid": "1900000109", "serial_no": "SERIAL01", "public_key": public_key,
                "api_v3_key": "0123456789abcdef0123456789abcdef" }),
    )
    .await;
    let code = control(
        "/emulator/codes",
        json!({ "platform": "wechat", "appid": "wx-pay", "user": "alice" }),
    )
    .await;

    let t = server(false).await;
    t.create_app("shop").await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/auth/providers/wechat")
        .json(&json!({ "appid": "wx-pay", "secret": "pay-secret", "base_url": format!("{emulator}/wechat") }))
        .expect(StatusCode::OK)
        .await;
    t.admin(Method::PUT, "/v1/admin/apps/shop/pay/merchants/wechat")
        .json(&json!({
            "mchid": "1900000109", "serial_no": "SERIAL01", "private_key": private_key,
            "api_v3_key": "0123456789abcdef0123456789abcdef",
            "platform_keys": [{ "serial": platform["public_key_id"], "public_key": platform["public_key"] }],
            "base_url": format!("{emulator}/wechatpay"),
        }))
        .expect(StatusCode::OK)
        .await;
    let grant = t
        .request(Method::POST, "/v1/apps/shop/auth/sessions")
        .json(&json!({ "provider": "wechat", "code": code["code"] }))
        .expect(StatusCode::CREATED)
        .await;
    let alice = grant["access_token"].as_str().unwrap().to_owned();
    t.admin(Method::PUT, "/v1/admin/apps/shop/collections/sales")
        .json(&json!({ "fields": [
            { "name": "note", "type": "text" },
            { "name": "event_id", "type": "number", "unique": true },
        ], "rules": { "list": "" } }))
        .expect(StatusCode::CREATED)
        .await;
    // The price is the server's: the client says what, the function says how much.
    deploy(
        &t,
        "shop",
        "price",
        json!({
            "source": r#"export default async (e, ctx) => {
            if (e.data.sku !== "tea") throw new Error("no such product");
            return { amount_fen: 150 * e.data.qty, description: `Tea x${e.data.qty}`,
                     metadata: { sku: e.data.sku, qty: e.data.qty, by: ctx.auth.id } };
        }"#,
            "triggers": [{ "pay": ["before"] }]
        }),
    )
    .await;
    // Each sale recorded once by its event id; only payment events may record.
    deploy(&t, "shop", "record", json!({
        "source": r#"export default async (e, ctx) => {
            if (ctx.trigger !== "pay") throw new Error("recorded only on payment events");
            try {
                await ctx.db.collection("sales").add({ event_id: e.event_id,
                    note: `${e.event} ${e.order.amount_fen} ${e.order.metadata.sku ?? "-"} ${e.refund ? e.refund.succeeded : "-"}` });
            } catch (error) {
                if (error.code !== "unique_violation") throw error;
            }
        }"#,
        "triggers": [{ "pay": ["paid", "refunded"] }]
    }))
    .await;
    deploy(&t, "shop", "cake", json!({
        "source": r#"export default async (e, ctx) =>
            ctx.pay.createOrder({ amount_fen: 500, description: "Cake", user: ctx.auth.id, key: e.key })"#
    }))
    .await;
    deploy(&t, "shop", "give-back", json!({
        "source": r#"export default async (e, ctx) => {
            if (!ctx.auth.admin) throw new Error("refunds are the shop's, not its buyers'");
            const refund = await ctx.pay.refund(e.id, { amount_fen: 100, out_refund_no: "R-1", reason: "spilled" });
            const order = await ctx.pay.order(e.id);
            return { refund, state: order.state, events: order.events.length };
        }"#
    }))
    .await;

    // A client order through the `before` function; a product it does not sell is refused.
    let order = t
        .request(Method::POST, "/v1/apps/shop/pay/orders")
        .bearer_auth(&alice)
        .json(&json!({ "data": { "sku": "tea", "qty": 2 }, "key": "tap" }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(order["amount_fen"], 300);
    assert_eq!(order["metadata"]["qty"], 2);
    assert!(order["payment"]["paySign"].is_string(), "{order}");
    t.request(Method::POST, "/v1/apps/shop/pay/orders")
        .bearer_auth(&alice)
        .json(&json!({ "data": { "sku": "gold" } }))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "function_error")
        .await;

    // From a function: ctx.pay.createOrder, idempotent by key.
    let cake = call(&t, "shop", "cake", Some(&alice), json!({ "key": "c1" }))
        .expect(StatusCode::OK)
        .await;
    let again = call(&t, "shop", "cake", Some(&alice), json!({ "key": "c1" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (cake["amount_fen"].as_i64(), &cake["id"]),
        (Some(500), &again["id"])
    );

    // Alice pays the tea; the notification comes three times; the sale is recorded once.
    let paid = control(
        "/emulator/wechatpay/pay",
        json!({ "mchid": "1900000109", "out_trade_no": order["out_trade_no"], "duplicates": 2 }),
    )
    .await;
    assert!(paid["transaction_id"].is_string());
    let sales = || notes_of(&t, "shop", "sales");
    for _ in 0..300 {
        if !sales().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sales().await, ["pay.paid 300 tea -"]);

    // A buyer can not record a sale of their own by calling the function: its triggers run
    // it, and nobody else but the admin.
    call(
        &t,
        "shop",
        "record",
        Some(&alice),
        json!({ "event": "pay.paid", "event_id": 999,
        "order": { "id": "ord_1", "amount_fen": 1, "metadata": {} } }),
    )
    .expect_error(StatusCode::FORBIDDEN, "function_not_callable")
    .await;
    // A refund from a function the admin calls (the buyer is refused), confirmed by its
    // notification.
    call(
        &t,
        "shop",
        "give-back",
        Some(&alice),
        json!({ "id": order["id"] }),
    )
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "function_error")
    .await;
    let refunded = t
        .admin(Method::POST, "/v1/apps/shop/functions/give-back")
        .json(&json!({ "id": order["id"] }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(refunded["refund"]["amount_fen"], 100, "{refunded}");
    for _ in 0..300 {
        if sales().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sales().await,
        ["pay.paid 300 tea -", "pay.refunded 300 tea true"]
    );
    let detail = t
        .admin(
            Method::GET,
            &format!(
                "/v1/admin/apps/shop/pay/orders/{}",
                order["id"].as_str().unwrap()
            ),
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (&detail["state"], &detail["refunded_fen"]),
        (&json!("partly_refunded"), &json!(100))
    );

    // A `closed` trigger that opens and closes an order of its own triggers itself: the depth
    // rides on the event, and stops it as it stops data triggers.
    deploy(
        &t,
        "shop",
        "reopen",
        json!({
            "source": r#"export default async (e, ctx) => {
            await ctx.db.collection("sales").add({ note: `reopened ${e.order.id}` });
            const next = await ctx.pay.createOrder({ amount_fen: 1, description: "Loop",
                user: e.order.user_id, key: `loop-${e.event_id}` });
            await ctx.pay.close(next.id);
        }"#,
            "triggers": [{ "pay": ["closed"] }]
        }),
    )
    .await;
    let first = call(&t, "shop", "cake", Some(&alice), json!({ "key": "c2" }))
        .expect(StatusCode::OK)
        .await;
    t.admin(
        Method::POST,
        &format!(
            "/v1/admin/apps/shop/pay/orders/{}/close",
            first["id"].as_str().unwrap()
        ),
    )
    .expect(StatusCode::OK)
    .await;
    let reopened = || async {
        sales()
            .await
            .into_iter()
            .filter(|note| note.starts_with("reopened"))
            .count()
    };
    for _ in 0..300 {
        if reopened().await >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        reopened().await,
        3,
        "the admin's close (depth 0) ran it at 1, its close at 2, that one's at 3 (the bound), and no further"
    );
}
