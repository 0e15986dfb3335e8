//! The edges of the HTTP server, through real sockets: silent, half-sent and idle connections
//! are closed within their timeouts while the server keeps answering; past the connection cap a
//! client gets `503 server_busy` with `retry-after`; oversize targets, headers and declared
//! bodies get their JSON errors at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{ADMIN_TOKEN, Expect, TestApp, raw_request};

/// Reads until the server closes the connection; what it sent, and when it closed.
async fn until_closed(mut stream: TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let read = tokio::time::timeout_at(deadline.into(), stream.read(&mut chunk)).await;
        match read {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((answer, Instant::now())),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn healthz(addr: SocketAddr) -> u16 {
    raw_request(addr, b"GET /healthz HTTP/1.1\r\nhost: t", b"")
        .await
        .status
}

#[tokio::test]
async fn a_thousand_silent_or_half_sent_connections_are_closed_in_time_while_the_server_answers() {
    let t = TestApp::builder()
        .config(|c| {
            c.http.header_read_timeout_secs = 1;
            c.http.idle_timeout_secs = 2;
            c.http.body_read_timeout_secs = 1;
        })
        .start()
        .await;
    let addr = t.running().local_addr();
    let opened = Instant::now();
    let mut attacks = Vec::new();
    for i in 0..1000 {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        // (what it sends, the timeout that must close it)
        let (sent, timeout): (String, u64) = match i % 4 {
            // Says nothing at all.
            0 => (String::new(), 1),
            // Half a request head.
            1 => ("GET /healthz HTTP/1.1\r\nhost: t\r\nx-slow: ".into(), 1),
            // A head, then a tenth of the body it announced.
            2 => (
                format!(
                    "POST /v1/admin/apps HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
                ),
                1,
            ),
            // A whole request, then keep-alive silence.
            _ => ("GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n".into(), 2),
        };
        stream.write_all(sent.as_bytes()).await.expect("sends");
        attacks.push(tokio::spawn(async move {
            let sent_at = Instant::now();
            let closed = until_closed(stream, Duration::from_secs(20)).await;
            (i, timeout, sent_at, closed)
        }));
    }
    // The server keeps answering others meanwhile.
    let mut answered = 0;
    while opened.elapsed() < Duration::from_millis(2500) {
        assert_eq!(healthz(addr).await, 200);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered >= 10, "{answered}");
    for attack in attacks {
        let (i, timeout, sent_at, closed) = attack.await.unwrap();
        let (answer, at) = closed.unwrap_or_else(|| panic!("connection {i} was never closed"));
        let open_for = at - sent_at;
        // The timeout, plus time for a thousand connections' watchdogs on a small machine.
        assert!(
            open_for >= Duration::from_millis(timeout * 1000 - 300)
                && open_for <= Duration::from_secs(timeout + 3),
            "connection {i} (timeout {timeout} s) closed after {open_for:?}"
        );
        let answer = String::from_utf8_lossy(&answer);
        match i % 4 {
            2 => assert!(
                answer.starts_with("HTTP/1.1 408") && answer.contains("\"request_timeout\""),
                "{answer}"
            ),
            3 => assert!(answer.starts_with("HTTP/1.1 200"), "{answer}"),
            _ => assert!(answer.is_empty(), "{answer}"),
        }
    }
    assert_eq!(healthz(addr).await, 200);
    t.stop().await;
}

#[tokio::test]
async fn past_the_connection_cap_clients_get_server_busy_until_places_free_up() {
    let t = TestApp::builder()
        .config(|c| {
            c.http.max_connections = 20;
            c.http.header_read_timeout_secs = 1;
        })
        .start()
        .await;
    let addr = t.running().local_addr();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = raw_request(addr, b"GET /healthz HTTP/1.1\r\nhost: t", b"").await;
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("1"));
    // CORS allows any origin by default, so a browser may read the refusal too.
    assert_eq!(busy.header("access-control-allow-origin"), Some("*"));
    assert_eq!(busy.json()["error"]["code"], "server_busy");
    assert_eq!(
        busy.json()["error"]["request_id"].as_str(),
        busy.header("x-request-id")
    );
    // The silent ones time out and give their places back.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(healthz(addr).await, 200);
    drop(silent);
    t.stop().await;
}

#[tokio::test]
async fn a_cap_per_address_is_off_by_default_and_holds_when_set() {
    let t = TestApp::builder()
        .config(|c| c.http.max_connections_per_address = 3)
        .start()
        .await;
    let addr = t.running().local_addr();
    let held: Vec<_> = futures_connect(addr, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = raw_request(addr, b"GET /healthz HTTP/1.1\r\nhost: t", b"").await;
    assert_eq!(refused.status, 503);
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(healthz(addr).await, 200);
    t.stop().await;

    let t = TestApp::start().await;
    let addr = t.running().local_addr();
    let held = futures_connect(addr, 50).await;
    assert_eq!(healthz(addr).await, 200, "no cap per address by default");
    drop(held);
    t.stop().await;
}

async fn futures_connect(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..n {
        streams.push(TcpStream::connect(addr).await.unwrap());
    }
    streams
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_sent() {
    let t = TestApp::builder()
        .config(|c| c.http.max_body_bytes = 4096)
        .start()
        .await;
    let addr = t.running().local_addr();
    let started = Instant::now();
    // The body never follows: the answer must not wait for it.
    let answer = raw_request(
        addr,
        format!(
            "POST /v1/admin/apps HTTP/1.1\r\nhost: t\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 5000"
        )
        .as_bytes(),
        b"",
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["code"], "payload_too_large");
    assert!(started.elapsed() < Duration::from_secs(2));
    t.stop().await;
}

#[tokio::test]
async fn oversize_targets_and_headers_and_odd_paths_answer_in_the_json_shape() {
    let t = TestApp::start().await;
    t.create_app("shop").await;
    let addr = t.running().local_addr();
    let long_target = format!(
        "GET /v1/apps/shop/health?x={} HTTP/1.1\r\nhost: t",
        "a".repeat(9000)
    );
    let cases: Vec<(String, u16, &str)> = vec![
        (long_target, 414, "uri_too_long"),
        (
            format!(
                "GET /healthz HTTP/1.1\r\nhost: t\r\nx-big: {}",
                "b".repeat(17_000)
            ),
            431,
            "headers_too_large",
        ),
        (
            "GET /v1/apps/shop/http/f/%FF HTTP/1.1\r\nhost: t".into(),
            400,
            "invalid_path",
        ),
        (
            "GET /v1/apps/shop/collections/%FF/records HTTP/1.1\r\nhost: t".into(),
            400,
            "invalid_path",
        ),
        (
            "GET /v1/apps/shop/collections/a%01b/records HTTP/1.1\r\nhost: t".into(),
            404,
            "collection_not_found",
        ),
        (
            "GET /v1/apps/shop/collections/x/records/%0A%00 HTTP/1.1\r\nhost: t".into(),
            404,
            "collection_not_found",
        ),
        (
            "GET /sites/shop/%01%7F HTTP/1.1\r\nhost: t".into(),
            404,
            "site_file_not_found",
        ),
        (
            "GET /%00 HTTP/1.1\r\nhost: t".into(),
            404,
            "route_not_found",
        ),
    ];
    for (head, status, code) in cases {
        let answer = raw_request(addr, head.as_bytes(), b"").await;
        let shown: String = head.chars().take(80).collect();
        assert_eq!(
            answer.status,
            status,
            "{shown}: {:?}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["error"]["code"], code, "{shown}");
    }
    t.stop().await;
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_cut_off_and_uploads_wait_for_credentials() {
    let t = TestApp::builder()
        .config(|c| c.http.body_read_timeout_secs = 1)
        .start()
        .await;
    t.create_app("shop").await;
    let addr = t.running().local_addr();
    trickled_body_is_cut_off(
        addr,
        b"POST /v1/apps/shop/auth/sessions HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
    )
    .await;

    // An upload to an admin route without credentials is refused before its body is read.
    let started = Instant::now();
    let refused = raw_request(
        addr,
        b"PUT /v1/admin/apps/shop/site/big.bin HTTP/1.1\r\nhost: t\r\ncontent-length: 9000000",
        b"",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "missing_credentials");
    assert!(started.elapsed() < Duration::from_secs(2));
    // So is a new app: a body that never comes is not waited for (that would be a 408).
    let refused = raw_request(
        addr,
        b"POST /v1/admin/apps HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 1000",
        b"",
    )
    .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], "missing_credentials");
    t.stop().await;
}

/// A file whose bytes stop coming is cut off as any body is, `408 request_timeout`, whether
/// it is a plain body or the file part of a form.
#[tokio::test]
async fn a_file_upload_sent_a_byte_at_a_time_is_cut_off() {
    let t = TestApp::builder()
        .config(|c| c.http.body_read_timeout_secs = 1)
        .start()
        .await;
    t.create_app("shop").await;
    t.admin(reqwest::Method::PUT, "/v1/admin/apps/shop/buckets/docs")
        .json(&serde_json::json!({}))
        .expect(reqwest::StatusCode::OK)
        .await;
    let addr = t.running().local_addr();
    let plain = format!(
        "POST /v1/apps/shop/files/docs?name=a.bin HTTP/1.1\r\nhost: t\r\n\
         authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/octet-stream\r\n\
         content-length: 1000\r\n\r\n"
    );
    trickled_body_is_cut_off(addr, plain.leak().as_bytes()).await;
    let form = format!(
        "POST /v1/apps/shop/files/docs HTTP/1.1\r\nhost: t\r\n\
         authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: multipart/form-data; boundary=XX\r\n\
         content-length: 1000\r\n\r\n\
         --XX\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    trickled_body_is_cut_off(addr, form.leak().as_bytes()).await;
    t.stop().await;
}

#[tokio::test]
async fn a_console_login_sent_a_byte_at_a_time_is_cut_off_too() {
    let t = TestApp::builder()
        .config(|c| c.http.body_read_timeout_secs = 1)
        .start()
        .await;
    let console = t.running().console_addr().expect("a console listener");
    trickled_body_is_cut_off(
        console,
        b"POST /console/api/login HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
    )
    .await;
    t.stop().await;
}

/// Sends `head`, then its body a byte every 300 ms (each before the pause between chunks runs
/// out, but far below the least rate), and checks that the server cuts it off with `408` well
/// before the body would end.
async fn trickled_body_is_cut_off(addr: SocketAddr, head: &'static [u8]) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stream
    });
    let mut stream = trickle.await.unwrap();
    let (answer, _) = until_closed_now(&mut stream).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("\"request_timeout\""),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

/// What the server sent on `stream` until it closed it.
async fn until_closed_now(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    (answer, Instant::now())
}

#[tokio::test]
async fn refused_targets_still_carry_cors_headers() {
    let t = TestApp::start().await;
    let addr = t.running().local_addr();
    let head = format!(
        "GET /healthz?x={} HTTP/1.1\r\nhost: t\r\norigin: https://app.example",
        "a".repeat(9000)
    );
    let answer = raw_request(addr, head.as_bytes(), b"").await;
    assert_eq!(answer.status, 414);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    t.stop().await;
}
