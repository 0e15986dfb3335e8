//! `TestApp`: the real server on an ephemeral port with a temporary data directory, and helpers
//! that read like the API's contract. Every integration test starts here.
//!
//! The suite runs on SQLite by default and on PostgreSQL when `CLOUDLET_TEST_DATABASE=postgres`
//! (`.ci/run` runs it both ways): each data directory then gets its own database on a
//! PostgreSQL server the suite starts itself, and a restart on the same data directory finds
//! the same database.

use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use cloudlet_server::config::{Config, DatabaseUrl};
use cloudlet_server::{Running, StartOptions, start};
use cloudlet_store::postgres::testing::TestServer;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The storage backend the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn under_test() -> Backend {
        match std::env::var("CLOUDLET_TEST_DATABASE").as_deref() {
            Ok("postgres") => Backend::Postgres,
            Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
            Ok(other) => panic!("CLOUDLET_TEST_DATABASE={other}: expected sqlite or postgres"),
        }
    }
}

/// The PostgreSQL database of a data directory: a new one the first time, the same one after.
fn postgres_for(data_dir: &Path) -> String {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let mut databases = DATABASES
        .get_or_init(Default::default)
        .lock()
        .expect("the map of databases");
    databases
        .entry(data_dir.to_path_buf())
        .or_insert_with(|| TestServer::shared().database())
        .clone()
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub data_dir: PathBuf,
    /// The PostgreSQL database when the suite runs on PostgreSQL.
    pub database: Option<String>,
    running: Option<Running>,
    _temp: Option<tempfile::TempDir>,
}

pub struct TestAppBuilder {
    config: Config,
    admin_token: Option<String>,
    master_key: Option<String>,
    temp: Option<tempfile::TempDir>,
}

impl TestAppBuilder {
    pub fn config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Reuses a data directory (to test restarts); the caller keeps it alive.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.config.data_dir = dir.to_path_buf();
        self.temp = None;
        self
    }

    /// Starts without `CLOUDLET_ADMIN_TOKEN`, as a first start with no token set does.
    pub fn without_admin_token(mut self) -> Self {
        self.admin_token = None;
        self
    }

    /// Starts as if `CLOUDLET_MASTER_KEY` were `key`.
    pub fn master_key(mut self, key: &str) -> Self {
        self.master_key = Some(key.to_owned());
        self
    }

    /// Starts as if `CLOUDLET_ADMIN_TOKEN` were `token`.
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    pub async fn try_start(self) -> Result<TestApp, cloudlet_server::StartError> {
        let this = self.with_backend();
        let running = this.launch().await?;
        Ok(this.with(running))
    }

    async fn launch(&self) -> Result<Running, cloudlet_server::StartError> {
        start(
            self.config.clone(),
            StartOptions {
                admin_token: self.admin_token.clone(),
                master_key: self.master_key.clone(),
            },
        )
        .await
    }

    fn with(self, running: Running) -> TestApp {
        TestApp {
            base: format!("http://{}", running.local_addr()),
            http: reqwest::Client::new(),
            database: self.config.database.url.postgres().map(str::to_owned),
            data_dir: self.config.data_dir,
            running: Some(running),
            _temp: self.temp,
        }
    }

    /// Picks the database of the backend under test, unless the test chose one.
    fn with_backend(mut self) -> Self {
        if Backend::under_test() == Backend::Postgres
            && self.config.database.url.postgres().is_none()
        {
            let url = postgres_for(&self.config.data_dir);
            self.config.database.url = DatabaseUrl::parse(&url).expect("a postgres URL");
        }
        self
    }

    /// Starts the server. A restart on the same data directory retries briefly while the lock is
    /// held: another test of this process may be spawning a program (`openssl`, a worker), and a
    /// child holds every descriptor of its parent, the lock's too, from its fork to its exec.
    pub async fn start(self) -> TestApp {
        let this = self.with_backend();
        this.start_here().await
    }

    async fn start_here(self) -> TestApp {
        for _ in 0..50 {
            match self.launch().await {
                Err(cloudlet_server::StartError::Store(
                    cloudlet_store::StoreError::DataDirLocked { .. },
                )) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                started => return self.with(started.expect("the server starts")),
            }
        }
        let running = self.launch().await.expect("the server starts");
        self.with(running)
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        let temp = tempfile::tempdir().expect("a temp dir");
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            data_dir: temp.path().join("data"),
            ..Config::default()
        };
        TestAppBuilder {
            config,
            admin_token: Some(ADMIN_TOKEN.into()),
            master_key: None,
            temp: Some(temp),
        }
    }

    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("the server is running")
    }

    /// Shuts the server down gracefully and waits until it has flushed and unlocked.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request with the admin token.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(ADMIN_TOKEN)
    }

    /// Creates an app with the admin token and returns its secret key.
    pub async fn create_app(&self, name: &str) -> String {
        let response = self
            .admin(Method::POST, "/v1/admin/apps")
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("the request is sent");
        let body = expect_json(response, StatusCode::CREATED).await;
        body["secret_key"]
            .as_str()
            .expect("a secret key")
            .to_owned()
    }

    /// App `app` with a collection `todos` only a record's owner lists (the default rules),
    /// the dev login on, and one record of alice's: bob's access token, for
    /// [`TestApp::listed`] (which starts at 0).
    pub async fn alice_and_bob(&self, app: &str) -> String {
        self.create_app(app).await;
        self.admin(
            Method::PUT,
            &format!("/v1/admin/apps/{app}/auth/providers/dev"),
        )
        .json(&json!({ "enabled": true }))
        .expect(StatusCode::OK)
        .await;
        self.admin(
            Method::PUT,
            &format!("/v1/admin/apps/{app}/collections/todos"),
        )
        .json(&json!({ "fields": [{ "name": "title", "type": "text" }] }))
        .expect(StatusCode::CREATED)
        .await;
        let mut tokens = Vec::new();
        for user in ["alice", "bob"] {
            let session = self
                .request(Method::POST, &format!("/v1/apps/{app}/auth/sessions"))
                .json(&json!({ "provider": "dev", "user": user }))
                .expect(StatusCode::CREATED)
                .await;
            tokens.push(session["access_token"].as_str().unwrap().to_owned());
        }
        self.request(
            Method::POST,
            &format!("/v1/apps/{app}/collections/todos/records"),
        )
        .bearer_auth(&tokens[0])
        .json(&json!({ "title": "alice's" }))
        .expect(StatusCode::CREATED)
        .await;
        tokens.swap_remove(1)
    }

    /// How many of `app`'s todos the bearer of `token` lists.
    pub async fn listed(&self, app: &str, token: &str) -> usize {
        self.request(
            Method::GET,
            &format!("/v1/apps/{app}/collections/todos/records"),
        )
        .bearer_auth(token)
        .expect(StatusCode::OK)
        .await["items"]
            .as_array()
            .unwrap()
            .len()
    }

    pub async fn metrics(&self) -> String {
        self.request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("a text body")
    }

    /// Whether `needle` is stored anywhere the backend keeps data: in any file of the data
    /// directory, or in the PostgreSQL database (as text, or as the hex of a byte string).
    pub fn stored_anywhere(&self, needle: &[u8]) -> bool {
        fn files(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    files(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let contains =
            |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
        let mut all = Vec::new();
        files(&self.data_dir, &mut all);
        if all
            .iter()
            .any(|f| std::fs::read(f).is_ok_and(|bytes| contains(&bytes, needle)))
        {
            return true;
        }
        match &self.database {
            Some(url) => {
                let dump = TestServer::shared().dump(url);
                let hex: String = needle.iter().map(|b| format!("{b:02x}")).collect();
                contains(dump.as_bytes(), needle) || dump.contains(&hex)
            }
            None => false,
        }
    }

    /// The apps that have storage: directories of the data directory's `apps`, or PostgreSQL
    /// schemas `app_*`; sorted.
    pub fn stored_apps(&self) -> Vec<String> {
        let mut apps: Vec<String> = match &self.database {
            Some(url) => TestServer::shared()
                .sql(
                    TestServer::database_name(url),
                    "SELECT substr(nspname, 5) FROM pg_namespace WHERE nspname LIKE 'app\\_%'",
                )
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            None => std::fs::read_dir(self.data_dir.join("apps"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        };
        apps.sort();
        apps
    }

    /// Whether anything of app `name` is stored.
    pub fn app_storage_exists(&self, name: &str) -> bool {
        self.stored_apps().iter().any(|a| a == name)
    }

    /// The value of the `cloudlet_open_apps` gauge.
    pub async fn open_apps(&self) -> i64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("cloudlet_open_apps "))
            .and_then(|v| v.trim().parse().ok())
            .expect("the open apps gauge")
    }
}

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("a body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error response: its status, its stable code, a message, and a request id equal to
/// the `x-request-id` header.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let header_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response has x-request-id");
    let body = expect_json(response, status).await;
    let error = &body["error"];
    assert_eq!(error["code"], code, "body: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {body}"
    );
    assert_eq!(error["request_id"], header_id.as_str(), "body: {body}");
    body
}

/// Sends a request and checks its answer, so that a test reads as request → expected outcome.
pub trait Expect {
    /// Expects `status` and returns the JSON body.
    fn expect(self, status: StatusCode) -> impl Future<Output = Value>;
    /// Expects an error with `status` and `code` (see [`expect_error`]).
    fn expect_error(self, status: StatusCode, code: &str) -> impl Future<Output = Value>;
}

impl Expect for RequestBuilder {
    async fn expect(self, status: StatusCode) -> Value {
        expect_json(self.send().await.expect("the request is sent"), status).await
    }

    async fn expect_error(self, status: StatusCode, code: &str) -> Value {
        expect_error(
            self.send().await.expect("the request is sent"),
            status,
            code,
        )
        .await
    }
}

/// An answer read off a raw socket.
pub struct RawAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} with a body that is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends `head` (the request line and headers, without the blank line) and `body` exactly as
/// given, on a connection of its own, and reads the whole answer. No client library in between
/// rewrites the target (`..`, `%2F`, control characters reach the server as written).
pub async fn raw_request(addr: std::net::SocketAddr, head: &[u8], body: &[u8]) -> RawAnswer {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server accepts");
    raw_exchange(stream, head, body).await
}

/// [`raw_request`] from the local address `source` (for example `127.0.0.2`, another client
/// as far as the server can tell).
pub async fn raw_request_from(
    source: std::net::IpAddr,
    addr: std::net::SocketAddr,
    head: &[u8],
    body: &[u8],
) -> RawAnswer {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("a socket");
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("the source address binds");
    let stream = socket.connect(addr).await.expect("the server accepts");
    raw_exchange(stream, head, body).await
}

async fn raw_exchange(mut stream: tokio::net::TcpStream, head: &[u8], body: &[u8]) -> RawAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = head.to_vec();
    request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .expect("the request is sent");
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server answers in time")
    .expect("the answer is read");
    parse_answer(&answer)
}

fn parse_answer(answer: &[u8]) -> RawAnswer {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(answer)));
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = answer[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = unchunk(&body);
    }
    RawAnswer {
        status,
        headers,
        body,
    }
}

fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(at) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..at])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = at + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

/// `204 No Content`, and nothing else.
pub trait NoContent {
    async fn no_content(self);
}

impl NoContent for reqwest::RequestBuilder {
    async fn no_content(self) {
        let answer = self.send().await.unwrap();
        let status = answer.status();
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{}",
            answer.text().await.unwrap()
        );
    }
}
