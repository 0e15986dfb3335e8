//! Server configuration: defaults, then an optional TOML file, then environment and flags (the
//! binary merges those two with clap). Unknown keys in the file are an error, and every value is
//! checked against its bounds before the server starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// What an acknowledged write survives (see `docs/operations.md`, durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Power loss: every commit is on disk before it is acknowledged.
    Full,
    /// A crash of the process, not of the machine.
    Process,
}

impl From<Durability> for cloudlet_store::Durability {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Full => cloudlet_store::Durability::Full,
            Durability::Process => cloudlet_store::Durability::Process,
        }
    }
}

/// Where apps' data lives: SQLite files in the data directory (the default), or one PostgreSQL
/// database that several nodes share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// A `postgres://` URL; empty for SQLite.
    pub url: DatabaseUrl,
    /// The most PostgreSQL connections this node holds.
    pub pool_size: usize,
    /// How long a request waits for a free connection before `503 database_unavailable`, in
    /// seconds.
    pub pool_wait_secs: f64,
    /// Whether several nodes may serve the database at once (PostgreSQL only). Off, a node
    /// refuses to start while another serves it. On, nodes keep their caches in step through
    /// the database's doorbell; what is still per node is listed in docs/operations.md.
    pub shared: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: DatabaseUrl::default(),
            pool_size: 16,
            pool_wait_secs: 5.0,
            shared: false,
        }
    }
}

/// A database URL, which may hold a password: never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Empty (SQLite) or a `postgres://` / `postgresql://` URL.
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        if url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl(url.to_owned()))
        } else {
            Err("expected a postgres:// URL (or nothing, for SQLite in the data directory)".into())
        }
    }

    /// The PostgreSQL URL, if one is set.
    pub fn postgres(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.postgres() {
            Some(_) => f.write_str("DatabaseUrl(postgres://…)"),
            None => f.write_str("DatabaseUrl(sqlite)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Every server setting. See `docs/configuration.md` for each one's meaning and bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Where the system database and every app's data live.
    pub data_dir: PathBuf,
    /// What an acknowledged write survives: `full` (power loss) or `process` (a crash of the
    /// process, not of the machine).
    pub durability: Durability,
    /// A file holding the master key (32 bytes, or 64 hex digits) instead of the data
    /// directory's `master.key`; `CLOUDLET_MASTER_KEY` wins over it.
    pub master_key_file: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub apps: AppsConfig,
    pub auth: AuthConfig,
    pub functions: FunctionsConfig,
    pub queues: QueuesConfig,
    pub payments: PaymentsConfig,
    pub files: FilesConfig,
    pub sites: SitesConfig,
    pub realtime: RealtimeConfig,
    pub console: ConsoleConfig,
}

/// The web console's own address: never the API's, which serves apps' sites and files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// `""`: the API's address with the next port (8701 beside 8700; any free port when the
    /// API's is 0); `"off"`: no console; or an address of its own.
    pub listen: String,
    /// Mark the session cookie `Secure`: set it when the console is reached over HTTPS.
    pub secure_cookie: bool,
    /// Host names the console answers to besides IP addresses and `localhost` (the name it is
    /// reached by behind a proxy): any other is refused, against DNS rebinding.
    pub hosts: Vec<String>,
    /// Days the audit log keeps an entry (0: for ever). Older entries go when somebody logs
    /// in, as expired sessions do.
    pub audit_days: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            listen: String::new(),
            secure_cookie: false,
            hosts: Vec::new(),
            audit_days: 365,
        }
    }
}

impl ConsoleConfig {
    /// How long the audit log keeps an entry; none: for ever.
    pub fn keep_audit(&self) -> Option<std::time::Duration> {
        (self.audit_days > 0).then(|| std::time::Duration::from_secs(self.audit_days * 86_400))
    }
}

impl Config {
    /// Where the console listens, if anywhere.
    pub fn console_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.console.listen.trim() {
            "" => {
                let port = match self.listen.port() {
                    0 => 0,
                    port => port.checked_add(1).ok_or(ConfigError::Invalid {
                        key: "console.listen",
                        message: "the API listens on port 65535: give the console an address"
                            .into(),
                    })?,
                };
                Ok(Some(SocketAddr::new(self.listen.ip(), port)))
            }
            "off" => Ok(None),
            address => address.parse().map(Some).map_err(|e| ConfigError::Invalid {
                key: "console.listen",
                message: format!("{address:?} is not an address ({e}), \"\" or \"off\""),
            }),
        }
    }
}

/// How many realtime sockets may be open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Sockets of one app at once, whoever opened them (users, its key, the admin token).
    pub max_connections_per_app: usize,
    /// Sockets of one user to one app at once.
    pub max_connections_per_user: usize,
    /// With a shared database: how long a node that stops renewing (it died) keeps its
    /// sockets' presence on the other nodes.
    pub node_lease_secs: u64,
    /// MiB of missed record changes held at once for subscriptions catching up, all sockets
    /// together: past it, a resume gets a `reset` (the client refetches).
    pub catch_up_mib: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            max_connections_per_app: 5_000,
            max_connections_per_user: 16,
            node_lease_secs: 30,
            catch_up_mib: 64,
        }
    }
}

/// Where uploaded files' bytes live, and how much each app and user may hold.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesConfig {
    /// `""` for the data directory's `files/`; `file:///path` for a directory every node
    /// mounts; `s3://bucket` or `s3://bucket/prefix`.
    pub url: String,
    /// An S3-compatible service's endpoint (`https://…`); empty for AWS.
    pub endpoint: String,
    pub region: String,
    /// The S3 keys; `CLOUDLET_S3_ACCESS_KEY_ID` and `CLOUDLET_S3_SECRET_ACCESS_KEY` win.
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `endpoint/bucket/key` addressing instead of `bucket.endpoint/key` (MinIO and most
    /// self-hosted servers).
    pub path_style: bool,
    /// Quotas (0: none): bytes and files per app, and per user within an app.
    pub app_bytes: u64,
    pub app_files: u64,
    pub user_bytes: u64,
    pub user_files: u64,
}

impl std::fmt::Debug for FilesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesConfig")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl Default for FilesConfig {
    fn default() -> Self {
        let quotas = cloudlet_core::files::Quotas::default();
        FilesConfig {
            url: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: false,
            app_bytes: quotas.app_bytes.unwrap_or(0),
            app_files: quotas.app_files.unwrap_or(0),
            user_bytes: quotas.user_bytes.unwrap_or(0),
            user_files: quotas.user_files.unwrap_or(0),
        }
    }
}

impl FilesConfig {
    pub fn quotas(&self) -> cloudlet_core::files::Quotas {
        let limit = |n: u64| (n > 0).then_some(n);
        cloudlet_core::files::Quotas {
            app_bytes: limit(self.app_bytes),
            app_files: limit(self.app_files),
            user_bytes: limit(self.user_bytes),
            user_files: limit(self.user_files),
        }
    }

    /// The directory of a `file:///path` url (`None` for the data directory's or S3).
    pub fn directory(&self) -> Result<Option<std::path::PathBuf>, ConfigError> {
        let Some(path) = self.url.strip_prefix("file://") else {
            return Ok(None);
        };
        let path = std::path::Path::new(path);
        if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
            return Err(ConfigError::Invalid {
                key: "files.url",
                message: format!("{:?} is not file:// and an absolute path", self.url),
            });
        }
        Ok(Some(path.to_owned()))
    }

    /// The S3 bucket of `url`, with the keys from the environment if set there; `None` for
    /// a directory.
    pub fn s3_settings(&self) -> Result<Option<cloudlet_store::S3Settings>, ConfigError> {
        if self.url.is_empty() || self.url.starts_with("file://") {
            return Ok(None);
        }
        let invalid = |message: String| ConfigError::Invalid {
            key: "files.url",
            message,
        };
        let rest = self.url.strip_prefix("s3://").ok_or_else(|| {
            invalid("\"\" (the data directory), file:///path or s3://bucket[/prefix]".into())
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(invalid(format!("{bucket:?} is not an S3 bucket name")));
        }
        let prefix = prefix.trim_matches('/');
        let from_env = |name: &str, configured: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| configured.to_owned())
        };
        Ok(Some(cloudlet_store::S3Settings {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: from_env("CLOUDLET_S3_ACCESS_KEY_ID", &self.access_key_id),
            secret_access_key: from_env("CLOUDLET_S3_SECRET_ACCESS_KEY", &self.secret_access_key),
            path_style: self.path_style,
        }))
    }
}

/// How much each app's static site may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SitesConfig {
    pub max_files: u64,
    pub max_bytes: u64,
}

impl Default for SitesConfig {
    fn default() -> Self {
        let bounds = cloudlet_core::sites::SiteBounds::default();
        SitesConfig {
            max_files: bounds.max_files,
            max_bytes: bounds.max_bytes,
        }
    }
}

impl SitesConfig {
    pub fn bounds(&self) -> cloudlet_core::sites::SiteBounds {
        cloudlet_core::sites::SiteBounds {
            max_files: self.max_files,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// How long a data trigger's delivery stays hidden before it is delivered again: longer
    /// than the functions it runs may take, in seconds.
    pub trigger_visibility_secs: u64,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig {
            trigger_visibility_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// How long after an order is placed it is first queried if no callback came, in seconds.
    pub check_delay_secs: u64,
    /// The first retry of a check, doubling up to `check_max_backoff_secs`.
    pub check_backoff_secs: u64,
    pub check_max_backoff_secs: u64,
    /// How long an order may be paid when its creator does not say, in seconds.
    pub order_ttl_secs: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            check_delay_secs: 10,
            check_backoff_secs: 5,
            check_max_backoff_secs: 60,
            order_ttl_secs: 30 * 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FunctionsConfig {
    /// Worker processes at most (each runs one invocation at a time).
    pub workers: usize,
    /// The most workers one app holds at once.
    pub workers_per_app: usize,
    /// Workers kept free for apps that hold none (see `docs/functions.md`, fairness).
    pub reserved_workers: usize,
    /// A worker idle this long exits, in seconds.
    pub worker_idle_secs: u64,
    /// The program started as a worker (`<it> worker`); empty means this executable.
    pub worker_program: PathBuf,
    /// A function's warm runtime unused this long is dropped, in seconds.
    pub runtime_idle_secs: f64,
    /// Wall time of an invocation unless its function sets one, in milliseconds.
    pub default_timeout_ms: u64,
    /// The most a function may set.
    pub max_timeout_ms: u64,
    /// Memory of an invocation unless its function sets one, in MiB.
    pub default_memory_mb: u64,
    pub max_memory_mb: u64,
    /// Invocations of one app running at once; more answer `function_overloaded`.
    pub max_concurrent_per_app: usize,
    /// Let `fetch` reach loopback, private and link-local addresses (for local development).
    pub allow_private_fetch: bool,
}

impl Default for FunctionsConfig {
    fn default() -> Self {
        FunctionsConfig {
            workers: 32,
            workers_per_app: 8,
            reserved_workers: 8,
            worker_idle_secs: 300,
            worker_program: PathBuf::new(),
            runtime_idle_secs: 60.0,
            default_timeout_ms: 10_000,
            max_timeout_ms: 60_000,
            default_memory_mb: 64,
            max_memory_mb: 512,
            max_concurrent_per_app: 32,
            allow_private_fetch: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `cloudlet_server=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The largest JSON request body accepted, in bytes (uploads and deploys have their own).
    pub max_body_bytes: usize,
    /// The longest request target (path and query), in bytes.
    pub max_uri_bytes: usize,
    /// The most bytes of request headers, names and values together.
    pub max_header_bytes: usize,
    /// Open connections at most; 0 derives it from the descriptor limit (see `docs`).
    pub max_connections: usize,
    /// Open connections from one address at most; 0 for no such cap (the default, since many
    /// users can share one address behind a proxy or a carrier's NAT).
    pub max_connections_per_address: usize,
    /// How long a client has to send a request's head, from the connection's start or from its
    /// first byte, in seconds.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight and no byte moving this long is closed, in
    /// seconds.
    pub idle_timeout_secs: u64,
    /// The longest pause while a request body arrives, in seconds.
    pub body_read_timeout_secs: u64,
    /// Origins allowed by CORS; `["*"]` allows any.
    pub cors_origins: Vec<String>,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// Take the client's IP from `x-forwarded-for` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
    /// The address clients reach this server at (`https://api.example.com`, perhaps with a
    /// path prefix): what absolute URLs the server hands out start with. Empty: this server's
    /// own address (`http://127.0.0.1:8700`), fine for local use only.
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long an access token is valid, in seconds.
    pub access_token_ttl_secs: u64,
    /// How long a session lasts without a refresh, in days.
    pub session_ttl_days: u64,
    /// Timeout of calls to the platforms' servers, in seconds.
    pub platform_timeout_secs: u64,
    /// Logins, sign-ups, phone binds and refreshes one client IP may make a minute (and at
    /// once).
    pub logins_per_ip_per_minute: u32,
    /// Calls of a platform (its logins, phone binds) one app may take a minute (and at once).
    pub logins_per_app_per_minute: u32,
    /// Failed password logins one account may have a minute (and at once) from addresses that
    /// have not logged in to it before.
    pub password_failures_per_account_per_minute: u32,
    /// The strength a new password must reach on zxcvbn's scale, 0 to 4.
    pub min_password_score: u8,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            access_token_ttl_secs: 900,
            session_ttl_days: 30,
            platform_timeout_secs: 10,
            logins_per_ip_per_minute: 60,
            logins_per_app_per_minute: 6000,
            password_failures_per_account_per_minute: 5,
            min_password_score: 2,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppsConfig {
    /// An app database unused this long is closed, in seconds.
    pub idle_timeout_secs: u64,
    /// How many app databases may be open at once.
    pub max_open: usize,
    /// Reader connections per open app database.
    pub readers_per_app: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            data_dir: PathBuf::from("cloudlet-data"),
            durability: Durability::Full,
            master_key_file: None,
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            apps: AppsConfig::default(),
            auth: AuthConfig::default(),
            functions: FunctionsConfig::default(),
            queues: QueuesConfig::default(),
            payments: PaymentsConfig::default(),
            files: FilesConfig::default(),
            sites: SitesConfig::default(),
            realtime: RealtimeConfig::default(),
            console: ConsoleConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 16 * 1024,
            max_connections: 0,
            max_connections_per_address: 0,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            cors_origins: vec!["*".into()],
            shutdown_grace_secs: 30,
            trust_forwarded_for: false,
            public_url: String::new(),
        }
    }
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            idle_timeout_secs: 300,
            max_open: 1000,
            readers_per_app: 2,
        }
    }
}

impl Config {
    /// The defaults, overlaid with the TOML file at `path` if one is given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks every value against its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn within<T: PartialOrd + std::fmt::Display>(
            key: &'static str,
            value: T,
            min: T,
            max: T,
        ) -> Result<(), ConfigError> {
            if value < min || value > max {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{value} is outside {min}..={max}"),
                });
            }
            Ok(())
        }
        if let Some(console) = self.console_listen()?
            && console == self.listen
            && console.port() != 0
        {
            return Err(ConfigError::Invalid {
                key: "console.listen",
                message: "the console needs an address of its own, not the API's".into(),
            });
        }
        DatabaseUrl::parse(&self.database.url.0).map_err(|message| ConfigError::Invalid {
            key: "database.url",
            message,
        })?;
        if self.database.shared && self.database.url.postgres().is_none() {
            return Err(ConfigError::Invalid {
                key: "database.shared",
                message: "several nodes share a PostgreSQL database: set database.url too \
                          (SQLite in a data directory serves one node)"
                    .into(),
            });
        }
        self.files.directory()?;
        self.files.s3_settings()?;
        if self.database.shared && self.files.url.is_empty() {
            return Err(ConfigError::Invalid {
                key: "files.url",
                message: "nodes sharing a database must share their files too: \
                          s3://bucket[/prefix], or file:///path for a directory every node \
                          mounts (not one node's data directory)"
                    .into(),
            });
        }
        within("database.pool_size", self.database.pool_size, 1, 1000)?;
        within(
            "database.pool_wait_secs",
            self.database.pool_wait_secs,
            0.01,
            300.0,
        )?;
        within(
            "realtime.max_connections_per_app",
            self.realtime.max_connections_per_app,
            1,
            1_000_000,
        )?;
        within(
            "realtime.max_connections_per_user",
            self.realtime.max_connections_per_user,
            1,
            self.realtime.max_connections_per_app,
        )?;
        within(
            "realtime.node_lease_secs",
            self.realtime.node_lease_secs,
            1,
            3600,
        )?;
        within(
            "realtime.catch_up_mib",
            self.realtime.catch_up_mib,
            1,
            65_536,
        )?;
        within("sites.max_files", self.sites.max_files, 1, 1_000_000)?;
        within("sites.max_bytes", self.sites.max_bytes, 1, 1 << 40)?;
        within(
            "queues.trigger_visibility_secs",
            self.queues.trigger_visibility_secs,
            1,
            12 * 3600,
        )?;
        within(
            "payments.check_delay_secs",
            self.payments.check_delay_secs,
            0,
            3600,
        )?;
        within(
            "payments.check_backoff_secs",
            self.payments.check_backoff_secs,
            1,
            3600,
        )?;
        within(
            "payments.check_max_backoff_secs",
            self.payments.check_max_backoff_secs,
            self.payments.check_backoff_secs,
            3600,
        )?;
        within(
            "payments.order_ttl_secs",
            self.payments.order_ttl_secs,
            1,
            86_400,
        )?;
        within("functions.workers", self.functions.workers, 2, 1024)?;
        within(
            "functions.workers_per_app",
            self.functions.workers_per_app,
            1,
            self.functions.workers,
        )?;
        within(
            "functions.reserved_workers",
            self.functions.reserved_workers,
            1,
            self.functions.workers - 1,
        )?;
        within(
            "functions.runtime_idle_secs",
            self.functions.runtime_idle_secs,
            0.1,
            86_400.0,
        )?;
        within(
            "functions.max_timeout_ms",
            self.functions.max_timeout_ms,
            1,
            900_000,
        )?;
        within(
            "functions.default_timeout_ms",
            self.functions.default_timeout_ms,
            1,
            self.functions.max_timeout_ms,
        )?;
        within(
            "functions.max_memory_mb",
            self.functions.max_memory_mb,
            1,
            4096,
        )?;
        within(
            "functions.default_memory_mb",
            self.functions.default_memory_mb,
            1,
            self.functions.max_memory_mb,
        )?;
        within(
            "functions.max_concurrent_per_app",
            self.functions.max_concurrent_per_app,
            1,
            100_000,
        )?;
        within(
            "http.max_body_bytes",
            self.http.max_body_bytes,
            1024,
            1 << 30,
        )?;
        within(
            "http.max_uri_bytes",
            self.http.max_uri_bytes,
            256,
            64 * 1024,
        )?;
        within(
            "http.max_header_bytes",
            self.http.max_header_bytes,
            1024,
            256 * 1024,
        )?;
        within(
            "http.max_connections",
            self.http.max_connections,
            0,
            10_000_000,
        )?;
        within(
            "http.max_connections_per_address",
            self.http.max_connections_per_address,
            0,
            10_000_000,
        )?;
        within(
            "http.header_read_timeout_secs",
            self.http.header_read_timeout_secs,
            1,
            3600,
        )?;
        within(
            "http.idle_timeout_secs",
            self.http.idle_timeout_secs,
            1,
            86_400,
        )?;
        within("console.audit_days", self.console.audit_days, 0, 36_500)?;
        within(
            "http.body_read_timeout_secs",
            self.http.body_read_timeout_secs,
            1,
            3600,
        )?;
        within(
            "http.shutdown_grace_secs",
            self.http.shutdown_grace_secs,
            0,
            3600,
        )?;
        within(
            "apps.idle_timeout_secs",
            self.apps.idle_timeout_secs,
            1,
            86_400,
        )?;
        within("apps.max_open", self.apps.max_open, 1, 1_000_000)?;
        within("apps.readers_per_app", self.apps.readers_per_app, 1, 64)?;
        within(
            "auth.access_token_ttl_secs",
            self.auth.access_token_ttl_secs,
            1,
            86_400,
        )?;
        within("auth.session_ttl_days", self.auth.session_ttl_days, 1, 3650)?;
        within(
            "auth.platform_timeout_secs",
            self.auth.platform_timeout_secs,
            1,
            120,
        )?;
        within(
            "auth.logins_per_ip_per_minute",
            self.auth.logins_per_ip_per_minute,
            1,
            1_000_000,
        )?;
        within(
            "auth.logins_per_app_per_minute",
            self.auth.logins_per_app_per_minute,
            1,
            10_000_000,
        )?;
        within(
            "auth.password_failures_per_account_per_minute",
            self.auth.password_failures_per_account_per_minute,
            1,
            1_000_000,
        )?;
        within(
            "auth.min_password_score",
            self.auth.min_password_score,
            0,
            4,
        )?;
        if !self.http.public_url.is_empty() {
            PublicUrl::parse(&self.http.public_url).map_err(|message| ConfigError::Invalid {
                key: "http.public_url",
                message,
            })?;
        }
        for origin in &self.http.cors_origins {
            if origin != "*" && !is_origin(origin) {
                return Err(ConfigError::Invalid {
                    key: "http.cors_origins",
                    message: format!(
                        "{origin:?} is neither \"*\" nor an origin such as \"https://app.example\" (scheme and host, no path)"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.apps.idle_timeout_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.http.shutdown_grace_secs)
    }

    /// The cap on open connections when the process may hold `descriptor_limit` descriptors:
    /// `http.max_connections` if set, else what is left once every open app database
    /// (`apps.max_open`, a writer and `apps.readers_per_app` readers each), every worker and
    /// [`RESERVED_DESCRIPTORS`] have theirs. A configuration that needs more descriptors than
    /// the process may hold is refused: it would fail later, under load, with
    /// `Too many open files`.
    pub fn max_connections(&self, descriptor_limit: u64) -> Result<usize, ConfigError> {
        let per_app = (1 + self.apps.readers_per_app as u64)
            * cloudlet_store::sqlite::DESCRIPTORS_PER_CONNECTION
            + cloudlet_store::sqlite::DESCRIPTORS_PER_DATABASE;
        let committed = RESERVED_DESCRIPTORS
            + self.apps.max_open as u64 * per_app
            + self.functions.workers as u64 * cloudlet_js::pool::DESCRIPTORS_PER_WORKER;
        let left = descriptor_limit.saturating_sub(committed);
        let explain = format!(
            "the process may hold {descriptor_limit} descriptors (ulimit -n); {} open apps \
             (apps.max_open) need {}, {} workers {}, and {RESERVED_DESCRIPTORS} are kept for the \
             rest, which leaves {left} for connections",
            self.apps.max_open,
            self.apps.max_open as u64 * per_app,
            self.functions.workers,
            self.functions.workers as u64 * cloudlet_js::pool::DESCRIPTORS_PER_WORKER,
        );
        match self.http.max_connections {
            0 if left < MIN_CONNECTIONS => Err(ConfigError::Invalid {
                key: "apps.max_open",
                message: format!(
                    "{explain}, fewer than {MIN_CONNECTIONS}: lower apps.max_open or raise the limit"
                ),
            }),
            0 => Ok(usize::try_from(left).unwrap_or(usize::MAX)),
            wanted if wanted as u64 > left => Err(ConfigError::Invalid {
                key: "http.max_connections",
                message: format!("{wanted} overcommits: {explain}"),
            }),
            wanted => Ok(wanted),
        }
    }
}

/// Descriptors kept for all that is neither an app database, a worker nor a client connection:
/// the system database, the listener, standard streams, the runtime's own, and outbound HTTP
/// (platform logins; functions' `fetch`, at most 128 sockets at once).
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// The fewest connections a server derives for itself before it refuses to start.
const MIN_CONNECTIONS: u64 = 64;

/// The address clients reach the server at, checked: `http` or `https`, a host, no user, query
/// or fragment; a path prefix is kept (a proxy may serve the API under one), without its
/// trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let problem = if !matches!(url.scheme(), "http" | "https") {
            Some("its scheme must be http or https")
        } else if url.host_str().is_none_or(str::is_empty) {
            Some("it has no host")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("it may not hold a user or password")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("it may not have a query or fragment")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(format!("{text:?}: {problem}"));
        }
        Ok(PublicUrl(url.as_str().trim_end_matches('/').to_owned()))
    }

    /// This server's own address, for when none is configured: loopback if it listens on
    /// every address.
    pub fn of_listener(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => std::net::IpAddr::from([127, 0, 0, 1]),
            ip if ip.is_unspecified() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        PublicUrl(format!("http://{}", SocketAddr::new(ip, addr.port())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    /// The WebSocket URL of `path`: `wss://` behind `https://`, `ws://` behind `http://`.
    pub fn websocket(&self, path: &str) -> String {
        let rest = self.0.strip_prefix("http").unwrap_or(&self.0);
        format!("ws{rest}{path}")
    }
}

/// `http(s)://host[:port]`, exactly as browsers send it in `Origin`: no path, no trailing slash.
fn is_origin(origin: &str) -> bool {
    let Some(host) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let config = parse("listen = \"0.0.0.0:9000\"\n[apps]\nmax_open = 10\n").unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.apps.max_open, 10);
        assert_eq!(config.apps.idle_timeout_secs, 300);
        assert_eq!(config.data_dir, PathBuf::from("cloudlet-data"));
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_at_every_level() {
        assert!(
            parse("lisen = \"0.0.0.0:9000\"")
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            parse("[apps]\nmax_opn = 1")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn the_audit_log_keeps_a_year_by_default_and_for_ever_at_zero() {
        let config = parse("").unwrap();
        assert_eq!(
            config.console.keep_audit(),
            Some(std::time::Duration::from_secs(365 * 86_400))
        );
        let config = parse("[console]\naudit_days = 0\n").unwrap();
        assert_eq!(config.console.keep_audit(), None);
        config.validate().unwrap();
        let config = parse("[console]\naudit_days = 36501\n").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("console.audit_days")
        );
    }

    #[test]
    fn a_shared_database_is_a_postgresql_one() {
        let error = parse("[database]\nshared = true\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("database.shared"), "{error}");
        let shared = "[database]\nshared = true\nurl = \"postgres://db.internal/cloudlet\"\n";
        let error = parse(shared).unwrap().validate().unwrap_err().to_string();
        assert!(
            error.contains("files.url"),
            "files in one node's data directory: {error}"
        );
        for files in ["s3://cloudlet-files", "file:///mnt/cloudlet-files"] {
            let config = parse(&format!("{shared}[files]\nurl = {files:?}\n")).unwrap();
            config.validate().unwrap();
            assert!(config.database.shared);
        }
        for files in ["file://relative/files", "file:///mnt/../etc", "ftp://files"] {
            let error = parse(&format!("[files]\nurl = {files:?}\n"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.contains("files.url"), "{files}: {error}");
        }
        assert!(!parse("").unwrap().database.shared, "one node by default");
    }

    #[test]
    fn out_of_bounds_values_are_refused() {
        let mut config = Config::default();
        config.apps.max_open = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("apps.max_open")
        );
        for bad in [
            "example.com",
            "https://a.example/",
            "https://a.example/app",
            "http://",
        ] {
            let mut config = Config::default();
            config.http.cors_origins = vec![bad.into()];
            assert!(config.validate().is_err(), "{bad}");
        }
        let mut config = Config::default();
        config.http.cors_origins = vec!["https://a.example".into(), "http://localhost:5173".into()];
        config.validate().unwrap();
    }

    #[test]
    fn the_connection_cap_is_what_the_descriptors_leave_and_overcommitting_is_refused() {
        let config = Config::default();
        // 1000 open apps × (3 connections × 3 descriptors + the WAL's), 32 workers × 3, 256
        // kept.
        assert_eq!(
            config.max_connections(20_000).unwrap(),
            20_000 - 10_000 - 96 - 256
        );
        let too_few = config.max_connections(4096).unwrap_err().to_string();
        assert!(too_few.contains("apps.max_open"), "{too_few}");
        let mut config = Config::default();
        config.http.max_connections = 15_000;
        let over = config.max_connections(20_000).unwrap_err().to_string();
        assert!(
            over.contains("http.max_connections") && over.contains("overcommits"),
            "{over}"
        );
        config.http.max_connections = 500;
        assert_eq!(config.max_connections(20_000).unwrap(), 500);
    }

    #[test]
    fn a_public_url_is_an_absolute_http_address_and_builds_the_urls_handed_out() {
        let url = PublicUrl::parse("https://api.example.com/cloud/").unwrap();
        assert_eq!(url.as_str(), "https://api.example.com/cloud");
        assert_eq!(
            url.join("/v1/apps/shop/pay/wechat/notify"),
            "https://api.example.com/cloud/v1/apps/shop/pay/wechat/notify"
        );
        assert_eq!(
            url.websocket("/v1/apps/shop/realtime"),
            "wss://api.example.com/cloud/v1/apps/shop/realtime"
        );
        let local = PublicUrl::parse("http://127.0.0.1:8700").unwrap();
        assert_eq!(local.websocket("/x"), "ws://127.0.0.1:8700/x");
        for bad in [
            "api.example.com",
            "ftp://example.com",
            "https://",
            "https://user:pw@example.com",
            "https://example.com/?a=1",
            "https://example.com/#top",
            "",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PublicUrl::of_listener("0.0.0.0:8700".parse().unwrap()).as_str(),
            "http://127.0.0.1:8700"
        );
        let mut config = Config::default();
        config.http.public_url = "example.com".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("http.public_url")
        );
    }
}
