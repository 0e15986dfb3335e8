//! HTTP basics: health, readiness, request ids, CORS and metrics.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Expect, TestApp};

#[tokio::test]
async fn health_and_readiness_answer() {
    let t = TestApp::start().await;
    let live = t
        .request(Method::GET, "/healthz")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(live, json!({ "status": "ok" }));
    let ready = t
        .request(Method::GET, "/readyz")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(ready, json!({ "status": "ready" }));
    t.stop().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_clean_incoming_one_is_kept() {
    let t = TestApp::start().await;
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();

    let a = id_of(&t.request(Method::GET, "/healthz").send().await.unwrap());
    let b = id_of(&t.request(Method::GET, "/nowhere").send().await.unwrap());
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);

    let kept = t
        .request(Method::GET, "/healthz")
        .header("x-request-id", "lb-7f3a.2")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&kept), "lb-7f3a.2");
    let replaced = t
        .request(Method::GET, "/healthz")
        .header("x-request-id", "has spaces and <script>")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&replaced).len(), 32);
    t.stop().await;
}

#[tokio::test]
async fn cors_is_permissive_by_default() {
    let t = TestApp::start().await;
    let preflight = t
        .request(Method::OPTIONS, "/v1/admin/apps")
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let simple = t
        .request(Method::GET, "/healthz")
        .header("origin", "https://anything.example")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], "*");
    assert!(
        simple.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    t.stop().await;
}

#[tokio::test]
async fn cors_can_be_limited_to_listed_origins() {
    let t = TestApp::builder()
        .config(|c| c.http.cors_origins = vec!["https://app.example".into()])
        .start()
        .await;
    let allowed = t
        .request(Method::GET, "/healthz")
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = t
        .request(Method::GET, "/healthz")
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    t.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let t = TestApp::start().await;
    t.create_app("metered").await;
    for _ in 0..3 {
        t.request(Method::GET, "/v1/apps/metered/health")
            .send()
            .await
            .unwrap();
    }
    t.request(Method::GET, "/v1/apps/ghost/health")
        .send()
        .await
        .unwrap();
    let metrics = t.metrics().await;
    assert!(
        metrics.contains(r#"cloudlet_http_requests_total{method="GET",route="/v1/apps/{app}/health",status="200"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cloudlet_http_requests_total{method="GET",route="/v1/apps/{app}/health",status="404"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"cloudlet_http_request_duration_seconds_bucket{le="#));
    assert!(
        !metrics.contains("metered"),
        "app names never become labels"
    );
    assert!(!metrics.contains("ghost"));
    assert_eq!(t.open_apps().await, 1);
    t.stop().await;
}
