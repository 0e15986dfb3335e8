//! Hostile app names on every route that names an app: each answers `404 app_not_found` in the
//! API's JSON shape, and nothing outside the data directory is created, opened or changed. The
//! requests go out on raw sockets, so that `..`, `%2F`, NUL and control characters reach the
//! server exactly as an attacker writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::{ADMIN_TOKEN, Expect, TestApp, raw_request};

/// Every route of the API and its methods, from the OpenAPI document the server serves: the
/// one table routes are registered through, so a new route is walked without a change here.
async fn routes(t: &TestApp) -> Vec<(String, String)> {
    let doc = t
        .request(reqwest::Method::GET, "/v1/openapi.json")
        .expect(reqwest::StatusCode::OK)
        .await;
    let paths = doc["paths"].as_object().expect("paths");
    let mut routes = Vec::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
            if item.get(method).is_some() {
                routes.push((path.clone(), method.to_uppercase()));
            }
        }
    }
    assert!(routes.len() > 40, "{} routes", routes.len());
    routes
}

/// A benign value for every other path parameter.
fn fill(template: &str, app: &str) -> String {
    template
        .replace("{app}", app)
        .replace("{provider}", "password")
        .replace("{user}", "usr_1")
        .replace("{session}", "ses_1")
        .replace("{collection}", "todos")
        .replace("{name}", "hello")
        .replace("{id}", "rec1")
        .replace("{path}", "index.html")
}

/// App names an attacker would try, as they are written in the request target.
fn hostile_names(victim: &Path, data_dir: &Path) -> Vec<String> {
    let encoded = |path: &Path| path.to_string_lossy().replace('/', "%2F");
    vec![
        // An absolute path replaces the base it is joined to.
        encoded(victim),
        format!("{}%2F..%2Fvictim", encoded(&data_dir.join("apps"))),
        "..%2F..%2Fvictim".into(),
        "..%2f..%2fvictim".into(),
        "%2e%2e%2F%2e%2e%2Fvictim".into(),
        "..".into(),
        "%2E%2E".into(),
        ".".into(),
        "apps%2F..%2F..".into(),
        "%2Fetc%2Fpasswd".into(),
        "a%00b".into(),
        "%00".into(),
        "ab%01".into(),
        "ab%0A".into(),
        "ab%7F".into(),
        "%FF%FE".into(),
        "AB".into(),
        "a".into(),
        "-ab".into(),
        "my_app".into(),
        "%C3%A9t%C3%A9".into(),
        "a".repeat(41),
        "a".repeat(4000),
    ]
}

/// Every file under `dir` with its length and modification time; absent directories are empty.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(entry.path());
            }
            let modified = meta.modified().expect("a modification time");
            files.insert(entry.path(), (meta.len(), modified));
        }
    }
    files
}

/// The files this process holds open under `dir`.
fn open_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(dir))
        .collect()
}

#[tokio::test]
async fn hostile_app_names_answer_app_not_found_on_every_route_and_touch_nothing_outside() {
    let root = tempfile::tempdir().unwrap();
    // Another instance's app database beside this one's data directory: the original attack
    // opened it read-write and migrated it.
    let victim = root.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let victim_db = rusqlite::Connection::open(victim.join("data.db")).unwrap();
    victim_db
        .execute_batch("CREATE TABLE secrets (v TEXT); INSERT INTO secrets VALUES ('x');")
        .unwrap();
    drop(victim_db);
    let data_dir = root.path().join("data");
    let t = TestApp::builder().data_dir(&data_dir).start().await;
    t.create_app("real").await;

    let outside_before = snapshot(&victim);
    let apps_before = t.stored_apps();
    let addr = t.running().local_addr();
    let routes: Vec<_> = routes(&t)
        .await
        .into_iter()
        .filter(|(template, _)| template.contains("{app}"))
        .collect();
    let mut checked = 0;
    for name in hostile_names(&victim, &data_dir) {
        for (template, method) in &routes {
            {
                let target = fill(template, &name);
                for auth in [None, Some(ADMIN_TOKEN)] {
                    let mut head = format!(
                        "{method} {target} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 2"
                    );
                    if let Some(token) = auth {
                        head.push_str(&format!("\r\nauthorization: Bearer {token}"));
                    }
                    let answer = raw_request(addr, head.as_bytes(), b"{}").await;
                    let what = format!("{method} {target} (auth: {})", auth.is_some());
                    checked += 1;
                    if method == "HEAD" {
                        // The same answer, without its body.
                        assert_eq!(answer.status, 404, "{what}");
                        continue;
                    }
                    let body = answer.json();
                    assert_eq!(answer.status, 404, "{what}: {body}");
                    assert_eq!(body["error"]["code"], "app_not_found", "{what}: {body}");
                    assert_eq!(
                        body["error"]["request_id"].as_str(),
                        answer.header("x-request-id"),
                        "{what}"
                    );
                }
            }
        }
    }
    assert!(checked > 1000, "{checked} requests");

    assert_eq!(snapshot(&victim), outside_before, "files outside changed");
    assert!(
        !victim.join("data.db-wal").exists() && !victim.join("data.db-shm").exists(),
        "the victim database was opened by SQLite"
    );
    assert_eq!(open_under(&victim), Vec::<PathBuf>::new(), "held open");
    assert_eq!(t.stored_apps(), apps_before, "no app storage was made");
    let root_entries: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut root_entries = root_entries;
    root_entries.sort();
    assert_eq!(root_entries, ["data", "victim"], "nothing new beside them");
    t.stop().await;
}

#[tokio::test]
async fn every_route_refuses_a_declared_body_over_its_limit_before_reading_it() {
    let t = TestApp::start().await;
    t.create_app("real").await;
    let addr = t.running().local_addr();
    for (template, method) in routes(&t).await {
        let target = fill(&template, "real");
        // A terabyte is announced; none of it is sent. The answer must not wait for it.
        let head = format!(
            "{method} {target} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 1099511627776"
        );
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            raw_request(addr, head.as_bytes(), b""),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {target} waited for the body"));
        assert_eq!(answer.status, 413, "{method} {target}");
        if method == "HEAD" {
            continue;
        }
        assert_eq!(
            answer.json()["error"]["code"],
            "payload_too_large",
            "{method} {target}"
        );
    }
    t.stop().await;
}
