//! Static sites: uploading through the admin API, serving at `/sites/{app}/`.

use reqwest::{Method, StatusCode, header};
use serde_json::json;

use crate::support::{Expect, NoContent, TestApp};

#[tokio::test]
async fn a_site_is_uploaded_listed_and_served_with_types_etags_and_cache_headers() {
    let t = TestApp::start().await;
    t.create_app("web").await;
    let put = |path: &str, body: &'static str| {
        t.admin(Method::PUT, &format!("/v1/admin/apps/web/site/{path}"))
            .body(body)
    };
    let index = put("index.html", "<h1>todo</h1>")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(index["content_type"], "text/html; charset=utf-8");
    put("js/app.js", "console.log(1)")
        .expect(StatusCode::OK)
        .await;
    put("docs/index.html", "<p>docs</p>")
        .expect(StatusCode::OK)
        .await;
    let listed = t
        .admin(Method::GET, "/v1/admin/apps/web/site")
        .expect(StatusCode::OK)
        .await;
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["docs/index.html", "index.html", "js/app.js"]);

    // The bare app path sends the browser into the folder, so that relative links work.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let bare = client
        .get(format!("{}/sites/web", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.headers()[header::LOCATION], "/sites/web/");

    let page = t.request(Method::GET, "/sites/web/").send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers()[header::CACHE_CONTROL], "no-cache");
    let etag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", index["sha256"].as_str().unwrap()));
    assert_eq!(page.text().await.unwrap(), "<h1>todo</h1>");
    let again = t
        .request(Method::GET, "/sites/web/index.html")
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    let script = t
        .request(Method::GET, "/sites/web/js/app.js")
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        script.headers()[header::CACHE_CONTROL],
        "public, max-age=300"
    );
    let docs = t
        .request(Method::GET, "/sites/web/docs/")
        .send()
        .await
        .unwrap();
    assert_eq!(docs.text().await.unwrap(), "<p>docs</p>");

    // A new version of a file has a new ETag; the old one no longer matches.
    put("index.html", "<h1>todo 2</h1>")
        .expect(StatusCode::OK)
        .await;
    let changed = t
        .request(Method::GET, "/sites/web/")
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_eq!(changed.text().await.unwrap(), "<h1>todo 2</h1>");

    t.admin(Method::DELETE, "/v1/admin/apps/web/site/js/app.js")
        .send()
        .await
        .unwrap();
    t.request(Method::GET, "/sites/web/js/app.js")
        .expect_error(StatusCode::NOT_FOUND, "site_file_not_found")
        .await;
    t.request(Method::GET, "/sites/nope/")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    // Not even redirected: a made-up name is no app's traffic.
    let unfollowing = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    unfollowing
        .get(format!("{}/sites/nope", t.base))
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
}

#[tokio::test]
async fn bad_site_paths_and_other_apps_keys_are_refused() {
    let t = TestApp::start().await;
    t.create_app("web").await;
    let other = t.create_app("other").await;
    // (Dot segments never get here: URLs lose them on the way.)
    for path in [
        "a%20b.html",
        "a%5Cb.html",
        "a%2F%2Fb.html",
        "x/%2E%2E%2Fy.html",
    ] {
        t.admin(Method::PUT, &format!("/v1/admin/apps/web/site/{path}"))
            .body("x")
            .expect_error(StatusCode::BAD_REQUEST, "invalid_site_path")
            .await;
    }
    t.request(Method::PUT, "/v1/admin/apps/web/site/index.html")
        .bearer_auth(other)
        .body("x")
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    t.request(Method::PUT, "/v1/admin/apps/web/site/index.html")
        .body("x")
        .expect_error(StatusCode::UNAUTHORIZED, "missing_credentials")
        .await;
    let listed = t
        .admin(Method::GET, "/v1/admin/apps/web/site")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed, json!({ "files": [] }));
}

#[tokio::test]
async fn a_site_keeps_within_its_files_and_bytes_and_a_refused_put_changes_nothing() {
    let t = TestApp::builder()
        .config(|c| {
            c.sites.max_files = 2;
            c.sites.max_bytes = 10;
        })
        .start()
        .await;
    t.create_app("web").await;
    let put = |path: &str, body: &'static str| {
        t.admin(Method::PUT, &format!("/v1/admin/apps/web/site/{path}"))
            .body(body)
    };
    put("index.html", "12345").expect(StatusCode::OK).await;
    put("a.css", "123456")
        .expect_error(StatusCode::FORBIDDEN, "site_full")
        .await;
    put("a.css", "12345").expect(StatusCode::OK).await;
    put("b.css", "")
        .expect_error(StatusCode::FORBIDDEN, "site_full")
        .await;
    // A replaced file counts its new size, not its old one too.
    put("index.html", "1234").expect(StatusCode::OK).await;
    let listed = t
        .admin(Method::GET, "/v1/admin/apps/web/site")
        .expect(StatusCode::OK)
        .await;
    let files: Vec<(String, i64)> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["size"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [("a.css".to_owned(), 5), ("index.html".to_owned(), 4)]
    );
    // A deleted file makes room again.
    t.admin(Method::DELETE, "/v1/admin/apps/web/site/a.css")
        .no_content()
        .await;
    put("b.css", "123456").expect(StatusCode::OK).await;
}
