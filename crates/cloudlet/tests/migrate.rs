//! `cloudlet migrate` as a user runs it: an instance served on SQLite, stopped, moved into a
//! PostgreSQL server this test starts, and served from there with every user, session, record,
//! function and site file intact; a run killed halfway and run again; a target that differs
//! from the source refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cloudlet_store::postgres::testing::TestServer;
use serde_json::json;

mod common;

use common::{BIN, Serve, TOKEN, call};

fn migrate(data_dir: &Path, url: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["migrate", "--data-dir"])
        .arg(data_dir)
        .args(["--to", url])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_moves_to_postgres_whole_and_serves_from_there() {
    use reqwest::Method;
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
    let collection = json!({
        "fields": [
            { "name": "title", "type": "text", "required": true },
            { "name": "done", "type": "bool" },
            { "name": "meta", "type": "json" },
            { "name": "due", "type": "datetime" },
            { "name": "price", "type": "number" }
        ]
    });
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/collections/todos"),
        TOKEN,
        Some(collection),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, grant) = call(
        Method::POST,
        format!("{base}/v1/apps/shop/auth/users"),
        "",
        Some(json!({ "email": "kim@example.com", "password": "correct horse battery" })),
    )
    .await;
    assert_eq!(status, 201, "{grant}");
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let session = grant["session_id"].as_str().unwrap().to_owned();
    for (i, title) in ["milk", "rent", "dog"].iter().enumerate() {
        let record = json!({
            "title": title,
            "done": i == 1,
            "meta": { "tags": ["a", "b"], "n": i, "nested": { "z": 1, "a": [true, null] } },
            "due": "2026-12-24T10:00:00.123Z",
            "price": 1.5 * i as f64
        });
        let (status, body) = call(
            Method::POST,
            format!("{base}/v1/apps/shop/collections/todos/records"),
            &access,
            Some(record),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let function = json!({ "source": "export default async function (event, ctx) { const page = await ctx.db.collection('todos').list({ sort: 'title' }); return page.items.map(r => r.title); }" });
    let (status, body) = call(
        Method::PUT,
        format!("{base}/v1/admin/apps/shop/functions/titles"),
        TOKEN,
        Some(function),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let site = reqwest::Client::new()
        .put(format!("{base}/v1/admin/apps/shop/site/index.html"))
        .bearer_auth(TOKEN)
        .body("<h1>shop</h1>")
        .send()
        .await
        .unwrap();
    assert!(site.status().is_success(), "{}", site.status());
    let (_, before) = call(
        Method::GET,
        format!("{base}/v1/apps/shop/collections/todos/records?sort=title"),
        &access,
        None,
    )
    .await;
    assert_eq!(before["items"].as_array().unwrap().len(), 3, "{before}");
    // The console's first owner, and a viewer of the app.
    let console = server.console.clone().expect("a console");
    let http = reqwest::Client::new();
    let setup = http
        .post(format!("{console}/console/api/setup"))
        .json(
            &json!({ "admin_token": TOKEN, "email": "own@example.com", "name": "Own",
                       "password": CONSOLE_PASSWORD }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(setup.status(), 200);
    let cookie = session_cookie(&setup);
    let csrf = setup.json::<serde_json::Value>().await.unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = http
        .post(format!("{console}/console/api/people"))
        .header("cookie", &cookie)
        .header("x-cloudlet-csrf", &csrf)
        .json(
            &json!({ "email": "view@example.com", "name": "View", "password": CONSOLE_PASSWORD,
                       "instance_role": "member" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status(), 201);
    let viewer_id = viewer.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let role = http
        .put(format!(
            "{console}/console/api/people/{viewer_id}/apps/shop"
        ))
        .header("cookie", &cookie)
        .header("x-cloudlet-csrf", &csrf)
        .json(&json!({ "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(role.status(), 204);
    server.stop();

    let pg = TestServer::shared();
    let url = pg.database();
    let first = migrate(&data, &url);
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(said.contains("shop: copied"), "{said}");
    let again = migrate(&data, &url);
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(said.contains("shop: already there, verified"), "{said}");

    // A target that no longer matches the source is refused, naming the table; put back, it
    // verifies again.
    let db = TestServer::database_name(&url);
    pg.sql(
        db,
        "UPDATE \"app_shop\".\"r_todos\" SET title = 'bread' WHERE title = 'milk'",
    );
    let tampered = migrate(&data, &url);
    assert!(!tampered.status.success());
    let said = String::from_utf8_lossy(&tampered.stderr);
    assert!(
        said.contains("r_todos") && said.contains("differs"),
        "{said}"
    );
    pg.sql(
        db,
        "UPDATE \"app_shop\".\"r_todos\" SET title = 'milk' WHERE title = 'bread'",
    );
    assert!(migrate(&data, &url).status.success());

    // Served from PostgreSQL: the same records, the old token and session, the function, the site.
    let server = Serve::start(&data, Some(&url));
    let base = server.base.clone();
    let (status, after) = call(
        Method::GET,
        format!("{base}/v1/apps/shop/collections/todos/records?sort=title"),
        &access,
        None,
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, before, "the records read back the same");
    let (status, refreshed) = call(
        Method::POST,
        format!("{base}/v1/apps/shop/auth/refresh"),
        "",
        Some(json!({ "session_id": session })),
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let (status, titles) = call(
        Method::POST,
        format!("{base}/v1/apps/shop/functions/titles"),
        &access,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{titles}");
    assert_eq!(titles, json!(["dog", "milk", "rent"]));
    let page = reqwest::get(format!("{base}/sites/shop/index.html"))
        .await
        .unwrap();
    assert_eq!(page.text().await.unwrap(), "<h1>shop</h1>");
    // The console's people moved with their roles (and log in again: sessions stay behind).
    let console = server.console.clone().expect("a console");
    let login = reqwest::Client::new()
        .post(format!("{console}/console/api/login"))
        .json(&json!({ "email": "view@example.com", "password": CONSOLE_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = session_cookie(&login);
    let apps = reqwest::Client::new()
        .get(format!("{console}/console/api/apps"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(apps["items"][0]["name"], "shop", "{apps}");
    assert_eq!(apps["items"][0]["role"], "viewer", "{apps}");
    server.stop();
}

/// The console session cookie an answer sets, as a request sends it back.
fn session_cookie(answer: &reqwest::Response) -> String {
    let set = answer.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_owned()
}

const CONSOLE_PASSWORD: &str = "seven quiet lanterns drift north";

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_killed_halfway_finishes_when_run_again() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&data, None);
    let apps: Vec<String> = (0..12).map(|i| format!("app-{i:02}")).collect();
    for app in &apps {
        let (status, body) = call(
            Method::POST,
            format!("{}/v1/admin/apps", server.base),
            TOKEN,
            Some(json!({ "name": app })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    server.stop();

    let url = TestServer::shared().database();
    let mut child = Command::new(BIN)
        .args(["migrate", "--data-dir"])
        .arg(&data)
        .args(["--to", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains(": copied"), "{first}");
    child.kill().unwrap();
    let _ = child.wait();

    let rerun = migrate(&data, &url);
    let said = String::from_utf8_lossy(&rerun.stdout);
    assert!(
        rerun.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    for app in &apps {
        assert!(said.contains(&format!("{app}: ")), "{app} missing: {said}");
    }
    assert!(said.contains("app-00: already there, verified"), "{said}");
    let server = Serve::start(&data, Some(&url));
    let (status, page) = call(
        Method::GET,
        format!("{}/v1/admin/apps?limit=100", server.base),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        page["items"].as_array().unwrap().len(),
        apps.len(),
        "{page}"
    );
    std::thread::sleep(Duration::from_millis(10));
    server.stop();
}

/// Work waiting on Cloudlet's own queues (here a trigger delivery whose run failed, waiting to
/// be tried again) is found on time after the move: the target holds the app's hint of due
/// work, as it does for the app's declared queues.
#[tokio::test(flavor = "multi_thread")]
async fn work_waiting_on_cloudlets_own_queues_is_hinted_after_the_move() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&data, None);
    let base = server.base.clone();
    let admin = |method: Method, path: &str, body: Option<serde_json::Value>| {
        call(method, format!("{base}{path}"), TOKEN, body)
    };
    let (status, body) = admin(
        Method::POST,
        "/v1/admin/apps",
        Some(json!({ "name": "hooks" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(
        Method::PUT,
        "/v1/admin/apps/hooks/collections/notes",
        Some(json!({ "fields": [{ "name": "title", "type": "text" }] })),
    )
    .await;
    assert!(status == 200 || status == 201, "{body}");
    let (status, body) = admin(
        Method::PUT,
        "/v1/admin/apps/hooks/functions/later",
        Some(json!({
            "source": "export default () => { throw new Error('not now') }",
            "triggers": [{ "collection": "notes" }]
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(
        Method::POST,
        "/v1/apps/hooks/collections/notes/records",
        Some(json!({ "title": "a" })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    // Its first run fails; the delivery waits on `_triggers` to be tried again.
    let mut failed = false;
    for _ in 0..200 {
        let (_, logs) = admin(Method::GET, "/v1/admin/apps/hooks/logs?outcome=error", None).await;
        if logs["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "the trigger ran and failed");
    server.stop();

    let pg = TestServer::shared();
    let url = pg.database();
    let moved = migrate(&data, &url);
    assert!(
        moved.status.success(),
        "{}",
        String::from_utf8_lossy(&moved.stderr)
    );
    let db = TestServer::database_name(&url);
    let hinted = pg.sql(
        db,
        "SELECT count(*) FROM cloudlet.due_work WHERE app = 'hooks'",
    );
    assert_eq!(hinted.trim(), "1", "the moved app's due work is hinted");
}
