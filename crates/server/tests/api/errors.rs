//! Bad input: each kind gets its own stable code, and none of it changes any data.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Expect, TestApp, expect_error};

/// A request and the error it must get.
struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    auth: Option<&'static str>,
    content_type: Option<&'static str>,
    body: Option<String>,
    status: StatusCode,
    code: &'static str,
}

const ADMIN: Option<&str> = Some(crate::support::ADMIN_TOKEN);
const JSON: Option<&str> = Some("application/json");

fn case(
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&str>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path,
        auth: ADMIN,
        content_type: JSON,
        body: body.map(str::to_owned),
        status,
        code,
    }
}

fn create(what: &'static str, body: &str, status: StatusCode, code: &'static str) -> Case {
    case(
        what,
        Method::POST,
        "/v1/admin/apps",
        Some(body),
        status,
        code,
    )
}

#[tokio::test]
async fn every_bad_request_gets_its_own_stable_code_and_changes_nothing() {
    let t = TestApp::builder()
        .config(|c| c.http.max_body_bytes = 64 * 1024)
        .start()
        .await;
    t.create_app("taken").await;
    let too_long_name = format!("{{\"name\":\"{}\"}}", "a".repeat(41));
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(200 * 1024));

    let mut cases = vec![
        case(
            "unknown route",
            Method::GET,
            "/v2/nothing",
            None,
            StatusCode::NOT_FOUND,
            "route_not_found",
        ),
        case(
            "wrong method",
            Method::PUT,
            "/v1/admin/apps",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        case(
            "wrong method on health",
            Method::DELETE,
            "/healthz",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        create(
            "malformed JSON",
            "{\"name\":",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        create(
            "not JSON at all",
            "name=todo",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        create(
            "missing field",
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        create(
            "unknown field",
            "{\"name\":\"ok-app\",\"plan\":\"pro\"}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        create(
            "number for a string",
            "{\"name\":42}",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        create(
            "array for an object",
            "[\"ok-app\"]",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        create(
            "body over the limit",
            &huge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        create(
            "upper case name",
            "{\"name\":\"Todo\"}",
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "one letter name",
            "{\"name\":\"a\"}",
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "underscore",
            "{\"name\":\"my_app\"}",
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "leading hyphen",
            "{\"name\":\"-app\"}",
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "path traversal",
            "{\"name\":\"../etc\"}",
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "41 characters",
            &too_long_name,
            StatusCode::BAD_REQUEST,
            "invalid_app_name",
        ),
        create(
            "duplicate",
            "{\"name\":\"taken\"}",
            StatusCode::CONFLICT,
            "app_already_exists",
        ),
        case(
            "unknown app",
            Method::GET,
            "/v1/admin/apps/ghost",
            None,
            StatusCode::NOT_FOUND,
            "app_not_found",
        ),
        case(
            "invalid name as unknown app",
            Method::GET,
            "/v1/admin/apps/NOT_AN_APP",
            None,
            StatusCode::NOT_FOUND,
            "app_not_found",
        ),
        case(
            "unknown app health",
            Method::GET,
            "/v1/apps/ghost/health",
            None,
            StatusCode::NOT_FOUND,
            "app_not_found",
        ),
        case(
            "rotate unknown app",
            Method::POST,
            "/v1/admin/apps/ghost/keys/rotate",
            None,
            StatusCode::NOT_FOUND,
            "app_not_found",
        ),
        case(
            "limit zero",
            Method::GET,
            "/v1/admin/apps?limit=0",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        case(
            "limit over the maximum",
            Method::GET,
            "/v1/admin/apps?limit=501",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        case(
            "limit not a number",
            Method::GET,
            "/v1/admin/apps?limit=ten",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        case(
            "unknown parameter",
            Method::GET,
            "/v1/admin/apps?sort=name",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
    ];
    let mut no_type = create(
        "no content type",
        "{\"name\":\"ok-app\"}",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    no_type.content_type = None;
    let mut wrong_type = create(
        "text/plain",
        "{\"name\":\"ok-app\"}",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    wrong_type.content_type = Some("text/plain");
    cases.extend([no_type, wrong_type]);
    for (what, auth, code) in [
        ("no token", None, "missing_credentials"),
        (
            "wrong token",
            Some("Bearer not-the-token-at-all"),
            "invalid_credentials",
        ),
        (
            "wrong scheme",
            Some("Basic dGVzdDp0ZXN0"),
            "invalid_credentials",
        ),
        ("empty bearer", Some("Bearer "), "invalid_credentials"),
    ] {
        for (method, path) in [
            (Method::GET, "/v1/admin/apps"),
            (Method::DELETE, "/v1/admin/apps/taken"),
        ] {
            let mut c = case(what, method, path, None, StatusCode::UNAUTHORIZED, code);
            c.auth = auth;
            cases.push(c);
        }
    }

    for c in cases {
        let mut request = t.request(c.method.clone(), c.path);
        if let Some(auth) = c.auth {
            let value = if auth.contains(' ') {
                auth.to_owned()
            } else {
                format!("Bearer {auth}")
            };
            request = request.header(AUTHORIZATION, value);
        }
        if let Some(content_type) = c.content_type.filter(|_| c.body.is_some()) {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(body) = c.body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        assert_eq!(status, c.status, "{}: status", c.what);
        let body = expect_error(response, c.status, c.code).await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("rusqlite") && !message.contains("postgres"),
            "{}: internals leaked: {body}",
            c.what
        );
    }

    // Nothing above created, changed or deleted anything.
    let page = t
        .admin(Method::GET, "/v1/admin/apps")
        .expect(StatusCode::OK)
        .await;
    let names: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].clone())
        .collect();
    assert_eq!(names, [json!("taken")]);
    assert_eq!(t.stored_apps(), ["taken"]);
    t.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_too() {
    let t = TestApp::builder()
        .config(|c| c.http.max_body_bytes = 4096)
        .start()
        .await;
    t.create_app("web").await;
    let addr = t.running().local_addr();
    // No content-length: the limit must hold while the body streams in, on JSON routes and on
    // the raw bodies HTTP functions are given.
    for path in ["/v1/admin/apps", "/v1/apps/web/http/anything"] {
        let response = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            let chunk = format!("{{\"name\":\"{}\"}}", "a".repeat(8192));
            write!(
                stream,
                "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
                 content-type: application/json\r\ntransfer-encoding: chunked\r\n\
                 connection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
                crate::support::ADMIN_TOKEN,
                chunk.len()
            )
            .unwrap();
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            response
        })
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 413"), "{path}: {response}");
        assert!(
            response.contains("\"code\":\"payload_too_large\""),
            "{path}: {response}"
        );
    }
    t.stop().await;
}
