//! The apps admin API: lifecycle, secret keys and their scope, pagination, concurrency.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Backend, Expect, TestApp};

#[tokio::test]
async fn an_app_lives_from_creation_to_deletion() {
    let t = TestApp::start().await;
    let created = t
        .admin(Method::POST, "/v1/admin/apps")
        .json(&json!({ "name": "todo" }))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(created["name"], "todo");
    let key = created["secret_key"].as_str().unwrap();
    assert!(key.starts_with("cls_") && key.len() > 40, "{key}");
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(t.app_storage_exists("todo"), "the app has its own database");

    let shown = t
        .admin(Method::GET, "/v1/admin/apps/todo")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(shown["name"], "todo");
    assert_eq!(shown["created_at"], created["created_at"]);
    assert_eq!(shown["secret_key_hint"], &key[..8]);
    assert!(
        shown.get("secret_key").is_none(),
        "the key is shown only once"
    );

    let health = t
        .request(Method::GET, "/v1/apps/todo/health")
        .expect(StatusCode::OK)
        .await;
    let version = match Backend::under_test() {
        Backend::Sqlite => cloudlet_store::sqlite::SCHEMA_VERSION,
        Backend::Postgres => cloudlet_store::postgres::SCHEMA_VERSION,
    };
    assert_eq!(
        health,
        json!({ "app": "todo", "status": "ok", "schema_version": version })
    );

    let response = t
        .admin(Method::DELETE, "/v1/admin/apps/todo")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(!t.app_storage_exists("todo"), "its data is gone");
    t.admin(Method::GET, "/v1/admin/apps/todo")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    t.request(Method::GET, "/v1/apps/todo/health")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    t.admin(Method::DELETE, "/v1/admin/apps/todo")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;

    // The name is free again, with a new key; the old key is worthless.
    let new_key = t.create_app("todo").await;
    assert_ne!(new_key, key);
    t.request(Method::GET, "/v1/admin/apps/todo")
        .bearer_auth(key)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    t.stop().await;
}

#[tokio::test]
async fn a_secret_key_may_do_what_the_admin_token_may_for_its_own_app_only() {
    let t = TestApp::start().await;
    let key_a = t.create_app("app-a").await;
    t.create_app("app-b").await;
    let as_a = |method: Method, path: &str| t.request(method, path).bearer_auth(&key_a);

    let shown = as_a(Method::GET, "/v1/admin/apps/app-a")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(shown["name"], "app-a");

    let forbidden = [
        (Method::GET, "/v1/admin/apps/app-b"),
        (Method::DELETE, "/v1/admin/apps/app-b"),
        (Method::POST, "/v1/admin/apps/app-b/keys/rotate"),
        (Method::GET, "/v1/admin/apps/no-such-app"),
        (Method::GET, "/v1/admin/apps"),
    ];
    for (method, path) in forbidden {
        as_a(method.clone(), path)
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
    }
    as_a(Method::POST, "/v1/admin/apps")
        .json(&json!({ "name": "app-c" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    // app-b is untouched by all of that.
    t.admin(Method::GET, "/v1/admin/apps/app-b")
        .expect(StatusCode::OK)
        .await;

    // Rotating with the key itself: the old key stops at once, the new one works.
    let rotated = as_a(Method::POST, "/v1/admin/apps/app-a/keys/rotate")
        .expect(StatusCode::OK)
        .await;
    let new_key = rotated["secret_key"].as_str().unwrap();
    assert_ne!(new_key, key_a);
    as_a(Method::GET, "/v1/admin/apps/app-a")
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    let response = t
        .request(Method::DELETE, "/v1/admin/apps/app-a")
        .bearer_auth(new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // The key went with its app: no route of the app takes it any more.
    for path in ["/v1/admin/apps/app-a", "/v1/admin/apps/app-a/queues"] {
        t.request(Method::GET, path)
            .bearer_auth(new_key)
            .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
            .await;
    }
    t.stop().await;
}

#[tokio::test]
async fn listing_pages_through_every_app_in_name_order() {
    let t = TestApp::start().await;
    let mut names: Vec<String> = (0..7).map(|i| format!("app-{}", 7 - i)).collect();
    for name in &names {
        t.create_app(name).await;
    }
    names.sort();
    let mut seen = Vec::new();
    let mut path = "/v1/admin/apps?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = t.admin(Method::GET, &path).expect(StatusCode::OK).await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|a| a["name"].as_str().unwrap().to_owned()));
        assert!(items.iter().all(|a| a.get("secret_key").is_none()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/admin/apps?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, names);
    assert_eq!(pages, 3);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_are_all_committed_and_a_name_is_won_once() {
    let t = TestApp::start().await;
    let create = |name: String| {
        t.admin(Method::POST, "/v1/admin/apps")
            .json(&json!({ "name": name }))
            .send()
    };
    let distinct = futures_join((0..40).map(|i| create(format!("app-{i}")))).await;
    assert!(
        distinct.iter().all(|s| *s == StatusCode::CREATED),
        "{distinct:?}"
    );

    let same = futures_join((0..10).map(|_| create("contested".into()))).await;
    assert_eq!(
        same.iter().filter(|s| **s == StatusCode::CREATED).count(),
        1,
        "{same:?}"
    );
    assert_eq!(
        same.iter().filter(|s| **s == StatusCode::CONFLICT).count(),
        9,
        "{same:?}"
    );

    let page = t
        .admin(Method::GET, "/v1/admin/apps?limit=500")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 41);
    t.stop().await;
}

/// Sends all requests at once and returns their statuses.
async fn futures_join<F>(requests: impl Iterator<Item = F>) -> Vec<StatusCode>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let tasks: Vec<_> = requests.map(tokio::spawn).collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap().status());
    }
    statuses
}

#[tokio::test]
async fn an_apps_usage_counts_its_requests_errors_and_invocations_per_minute_and_hour() {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    t.create_app("blog").await;
    for _ in 0..3 {
        t.request(Method::GET, "/v1/apps/shop/health")
            .expect(StatusCode::OK)
            .await;
    }
    t.request(Method::GET, "/v1/apps/shop/collections/nope/records")
        .expect_error(StatusCode::NOT_FOUND, "collection_not_found")
        .await;
    t.request(Method::POST, "/v1/apps/shop/auth/sessions")
        .json(&json!({ "provider": "nope" }))
        .expect_error(StatusCode::BAD_REQUEST, "unknown_provider")
        .await;
    // Calling a function that does not exist is no invocation.
    t.request(Method::POST, "/v1/apps/shop/functions/nope")
        .json(&json!({}))
        .expect_error(StatusCode::NOT_FOUND, "function_not_found")
        .await;
    t.request(Method::GET, "/v1/apps/blog/health")
        .expect(StatusCode::OK)
        .await;
    // A name that is no app's counts nowhere.
    t.request(Method::GET, "/v1/admin/apps/ghost/usage")
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;

    let usage = t
        .admin(Method::GET, "/v1/admin/apps/shop/usage")
        .expect(StatusCode::OK)
        .await;
    let minutes = usage["minutes"].as_array().unwrap();
    let hours = usage["hours"].as_array().unwrap();
    assert_eq!((minutes.len(), hours.len()), (60, 24));
    // Summed, in case the test ran across the turn of a minute or an hour.
    let sum = |points: &[serde_json::Value], key: &str| {
        points.iter().map(|p| p[key].as_u64().unwrap()).sum::<u64>()
    };
    // Three health checks and a 400; what was not found is not counted.
    assert_eq!(sum(minutes, "requests"), 4, "{usage}");
    assert_eq!(sum(minutes, "client_errors"), 1, "{usage}");
    assert_eq!(sum(minutes, "invocations"), 0, "{usage}");
    assert_eq!(sum(minutes, "errors"), 0);
    assert_eq!(sum(hours, "requests"), 4, "{usage}");
    for point in minutes.iter().chain(hours) {
        assert_eq!(point["requests"] == 0, point["p99_ms"].is_null(), "{point}");
    }
    assert_eq!(usage["realtime_connections"], 0);
    assert_eq!(
        (usage["files"].as_i64(), usage["file_bytes"].as_i64()),
        (Some(0), Some(0))
    );

    let blog = t
        .admin(Method::GET, "/v1/admin/apps/blog/usage")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(sum(blog["minutes"].as_array().unwrap(), "requests"), 1);
    t.admin(Method::GET, "/v1/admin/apps/ghost/usage")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
}
