//! Cloudlet's composition root. This crate alone picks the storage backends, builds the HTTP
//! router from each domain's routes, runs the background work (closing idle apps) and shuts
//! everything down in order.
//!
//! [`start`] brings a server up on the configured address and returns a [`Running`] handle;
//! the binary and the integration tests both go through it.

pub mod config;

mod apps;
mod auth;
mod bounds;
mod console;
mod data;
mod error;
mod extract;
mod files;
mod functions;
mod health;
mod limits;
mod memory;
mod messages;
mod metrics;
pub mod migrate;
mod nodes;
mod openapi;
mod payments;
mod queues;
mod realtime;
mod request_id;
mod serve;
mod sites;
mod state;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware;
use cloudlet_core::access::{Access, AccessError};
use cloudlet_core::apps::Apps;
use cloudlet_core::auth::{Auth, AuthError, AuthOptions};
use cloudlet_core::clock::{Clock, SystemClock};
use cloudlet_core::data::Data;
use cloudlet_core::files::Files;
use cloudlet_core::functions::{Capabilities, Execution, FunctionLimits, Functions, LogWriter};
use cloudlet_core::messages::Messages;
use cloudlet_core::payments::{PayError, PaymentOptions, Payments};
use cloudlet_core::queues::Queues;
use cloudlet_core::random::{OsRandom, Random};
use cloudlet_core::sealing::Sealer;
use cloudlet_core::sites::Sites;
use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::sqlite::{SqliteSystemStore, SqliteTenants, TenantPoolOptions};
use cloudlet_store::{
    Bell, BlobStore, ConsoleStore, DataDir, FileStore, FunctionStore, LocalBlobs, NoBell,
    PaymentStore, QueueStore, RateStore, RecordStore, Relay, S3Blobs, SiteStore, StoreError,
    SystemStore, TenantStore, UserStore,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use cloudlet_core::access::AdminTokenSetup;
pub use config::{Config, PublicUrl};
pub use error::Code;

use crate::state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{} is not a Cloudlet data directory (it has no system.db)", .0.display())]
    NotADataDir(std::path::PathBuf),
    #[error(transparent)]
    Payments(#[from] PayError),
    #[error("could not start functions: {0}")]
    Functions(String),
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("migration stopped: {0}")]
    Migrate(String),
    #[error("could not listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the server needs from outside its config file.
#[derive(Default)]
pub struct StartOptions {
    /// `CLOUDLET_ADMIN_TOKEN`: sets (or replaces) the admin token.
    pub admin_token: Option<String>,
    /// `CLOUDLET_MASTER_KEY`: the master key as 64 hex digits, for nodes without a persistent
    /// data directory (it wins over `master_key_file`).
    pub master_key: Option<String>,
}

/// 32 bytes written as 64 hex digits.
fn hex_key(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// The master key given from outside the data directory: `CLOUDLET_MASTER_KEY`, else the file
/// `master_key_file` (32 raw bytes, or 64 hex digits).
fn given_master_key(
    config: &Config,
    options: &StartOptions,
) -> Result<Option<[u8; 32]>, StartError> {
    if let Some(text) = &options.master_key {
        return hex_key(text).map(Some).ok_or_else(|| {
            StartError::MasterKey(
                "CLOUDLET_MASTER_KEY must be 64 hex digits (openssl rand -hex 32)".into(),
            )
        });
    }
    let Some(path) = &config.master_key_file else {
        return Ok(None);
    };
    let bytes = std::fs::read(path)
        .map_err(|e| StartError::MasterKey(format!("{}: {e}", path.display())))?;
    let key = match <[u8; 32]>::try_from(bytes.as_slice()) {
        Ok(raw) => Some(raw),
        Err(_) => std::str::from_utf8(&bytes).ok().and_then(hex_key),
    };
    key.map(Some).ok_or_else(|| {
        StartError::MasterKey(format!(
            "{} must hold 32 bytes, or 64 hex digits",
            path.display()
        ))
    })
}

/// A server that is listening. Dropping it does not stop it; call [`Running::stop`] or trigger
/// the [`Shutdown`] and [`Running::wait`].
pub struct Running {
    local_addr: SocketAddr,
    console_addr: Option<SocketAddr>,
    admin_token: AdminTokenSetup,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

/// Starts a graceful shutdown when triggered. Cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the web console listens, unless it is off.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console_addr
    }

    /// What start-up did with the admin token (a generated token is to be printed once).
    pub fn admin_token(&self) -> &AdminTokenSetup {
        &self.admin_token
    }

    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until the server has shut down: in-flight requests drained, writes flushed,
    /// databases closed and the data directory unlocked.
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        self.wait().await;
    }
}

/// The storage backends the server runs on.
struct Storage {
    data_dir: DataDir,
    master_key: [u8; 32],
    system: Arc<dyn SystemStore>,
    console: Arc<dyn ConsoleStore>,
    apps: AppStores,
    /// Rings the other nodes of a shared database (none on SQLite).
    bell: Arc<dyn Bell>,
    /// The rate limits every node of a shared database counts (none: each node its own).
    rates: Option<Arc<dyn RateStore>>,
    /// Channel and direct messages between the nodes of a shared database (none alone).
    relay: Option<Arc<dyn Relay>>,
}

/// Every per-app store, as the one backend that implements them all.
struct AppStores {
    tenants: Arc<dyn TenantStore>,
    records: Arc<dyn RecordStore>,
    users: Arc<dyn UserStore>,
    functions: Arc<dyn FunctionStore>,
    sites: Arc<dyn SiteStore>,
    queues: Arc<dyn QueueStore>,
    files: Arc<dyn FileStore>,
    payments: Arc<dyn PaymentStore>,
}

impl AppStores {
    fn of<B>(backend: Arc<B>) -> Self
    where
        B: TenantStore
            + RecordStore
            + UserStore
            + FunctionStore
            + SiteStore
            + QueueStore
            + FileStore
            + PaymentStore
            + 'static,
    {
        AppStores {
            tenants: backend.clone(),
            records: backend.clone(),
            users: backend.clone(),
            functions: backend.clone(),
            sites: backend.clone(),
            queues: backend.clone(),
            files: backend.clone(),
            payments: backend,
        }
    }
}

/// Locks the data directory and opens the configured backends: SQLite files in the data
/// directory, or the PostgreSQL database of `database.url`.
async fn open_storage(config: &Config, options: &StartOptions) -> Result<Storage, StartError> {
    let given = given_master_key(config, options)?;
    let opening = config.clone();
    let (data_dir, master_key) = tokio::task::spawn_blocking(move || {
        let data_dir = DataDir::open(&opening.data_dir)?;
        let master_key = match given {
            Some(key) => {
                if data_dir
                    .stored_master_key()?
                    .is_some_and(|stored| stored != key)
                {
                    return Err(StartError::MasterKey(format!(
                        "the key given differs from {}/master.key, which sealed this data \
                         directory's secrets; give that key (its 64 hex digits: \
                         xxd -p -c 32 master.key)",
                        opening.data_dir.display()
                    )));
                }
                key
            }
            None => data_dir.master_key(|| {
                let mut key = [0u8; 32];
                OsRandom.fill(&mut key);
                key
            })?,
        };
        Ok::<_, StartError>((data_dir, master_key))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    if let Some(url) = config.database.url.postgres() {
        let postgres = Postgres::open(PostgresOptions {
            url: url.to_owned(),
            pool_size: config.database.pool_size,
            wait: Duration::from_secs_f64(config.database.pool_wait_secs),
            durability: config.durability.into(),
            max_open: config.apps.max_open,
        })
        .await?;
        // Alone, nobody needs ringing; shared, the nodes ring each other.
        let bell: Arc<dyn Bell> = if config.database.shared {
            postgres.claim_shared_node().await?;
            let mut node = [0u8; 8];
            OsRandom.fill(&mut node);
            postgres.bell(format!("{:016x}", u64::from_le_bytes(node)))
        } else {
            postgres.claim_sole_node().await?;
            Arc::new(NoBell::default())
        };
        let postgres = Arc::new(postgres);
        // The claim lives with a connection: made again if the database restarts. The task
        // ends when the storage closes and gives the claim up.
        tokio::spawn(Postgres::keep_node_claim(
            Arc::downgrade(&postgres),
            config.database.shared,
        ));
        let shared = config.database.shared;
        let rates = shared.then(|| postgres.clone() as Arc<dyn RateStore>);
        let relay = shared.then(|| postgres.clone() as Arc<dyn Relay>);
        return Ok(Storage {
            data_dir,
            master_key,
            system: postgres.clone(),
            console: postgres.clone(),
            apps: AppStores::of(postgres),
            bell,
            rates,
            relay,
        });
    }
    let opening = config.clone();
    let apps_dir = data_dir.apps_dir();
    let system_db = data_dir.system_db();
    let (system, tenants) = tokio::task::spawn_blocking(move || {
        let system = SqliteSystemStore::open(&system_db, opening.durability.into())?;
        let tenants = SqliteTenants::open(
            apps_dir,
            TenantPoolOptions {
                max_open: opening.apps.max_open,
                readers: opening.apps.readers_per_app,
                durability: opening.durability.into(),
            },
        )?;
        Ok::<_, StoreError>((system, tenants))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    let system = Arc::new(system);
    Ok(Storage {
        data_dir,
        master_key,
        system: system.clone(),
        console: system,
        apps: AppStores::of(Arc::new(tenants)),
        bell: Arc::new(NoBell::default()),
        rates: None,
        relay: None,
    })
}

/// The blob store of `files.url`: S3, a directory, or the data directory's `files/`. Nodes
/// sharing a database share the directory, each writing apart.
async fn open_blobs(
    config: &Config,
    data_dir: &DataDir,
    clock: &dyn Clock,
) -> Result<Arc<dyn BlobStore>, StartError> {
    if let Some(settings) = config.files.s3_settings().map_err(StartError::Config)? {
        return Ok(Arc::new(S3Blobs::new(settings)?));
    }
    let root = match config.files.directory().map_err(StartError::Config)? {
        Some(directory) => directory,
        None => data_dir.root().join("files"),
    };
    let durability = config.durability.into();
    let shared = config.database.shared;
    let mut node = [0u8; 8];
    OsRandom.fill(&mut node);
    let node = format!("{:016x}", u64::from_le_bytes(node));
    let now_ms = clock.now().unix_ms();
    let blobs = tokio::task::spawn_blocking(move || {
        if shared {
            LocalBlobs::open_shared(&root, durability, &node, now_ms)
        } else {
            LocalBlobs::open(&root, durability)
        }
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    Ok(Arc::new(blobs))
}

/// The most connections the console's listener holds: its people's pages and live views.
const MAX_CONSOLE_CONNECTIONS: usize = 256;

/// The API's and the console's connection limits, out of `limits` for both: an eighth of the
/// connections, at most [`MAX_CONSOLE_CONNECTIONS`], go to the console when it listens.
fn split_connections(
    limits: serve::ConnectionLimits,
    console: bool,
) -> (serve::ConnectionLimits, serve::ConnectionLimits) {
    let total = limits.max_connections;
    let to_console = if console {
        (total / 8).clamp(1, MAX_CONSOLE_CONNECTIONS)
    } else {
        0
    };
    let api = serve::ConnectionLimits {
        max_connections: total.saturating_sub(to_console).max(1),
        ..limits
    };
    let console = serve::ConnectionLimits {
        max_connections: to_console.max(1),
        ..limits
    };
    (api, console)
}

/// Opens the data directory, the databases and the listener, then serves until shut down.
pub async fn start(config: Config, options: StartOptions) -> Result<Running, StartError> {
    config.validate()?;
    let connection_limits = serve::ConnectionLimits {
        max_connections: config.max_connections(serve::descriptor_limit())?,
        max_per_address: config.http.max_connections_per_address,
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs),
        idle_timeout: Duration::from_secs(config.http.idle_timeout_secs),
        max_head_bytes: config.http.max_header_bytes.saturating_mul(4),
        cors_any_origin: config.http.cors_origins.iter().any(|o| o == "*"),
    };
    let Storage {
        data_dir,
        master_key,
        system,
        console: console_store,
        apps: stores,
        bell,
        rates,
        relay,
    } = open_storage(&config, &options).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let random: Arc<dyn Random> = Arc::new(OsRandom);
    Sealer::new(&master_key)
        .check_key(&*system, &*random)
        .await
        .map_err(|e| StartError::MasterKey(e.to_string()))?;

    let (access, admin_token) = Access::start(
        Arc::clone(&system),
        options.admin_token.as_deref(),
        &*random,
    )
    .await?;
    let AppStores {
        tenants: tenant_store,
        records: record_store,
        users: user_store,
        functions: function_store,
        sites: site_store,
        queues: queue_store,
        files: file_store,
        payments: payment_store,
    } = stores;
    let files = Files::new(
        file_store,
        open_blobs(&config, &data_dir, clock.as_ref()).await?,
        Arc::clone(&clock),
        Arc::clone(&random),
        cloudlet_core::files::url_key(&master_key),
        config.files.quotas(),
    );
    tracing::info!(files = files.blobs_description(), "file storage");
    let sites = Sites::new(site_store, Arc::clone(&clock), config.sites.bounds());
    let queues = Queues::new(
        queue_store,
        Arc::clone(&system),
        Arc::clone(&clock),
        Arc::clone(&random),
        config.queues.trigger_visibility_secs,
        cloudlet_core::queues::PaymentBackoff {
            backoff_secs: config.payments.check_backoff_secs,
            max_backoff_secs: config.payments.check_max_backoff_secs,
        },
    );
    let data = Data::new(record_store, Arc::clone(&clock), Arc::clone(&random));
    let auth = Auth::new(
        Arc::clone(&system),
        Arc::clone(&user_store),
        Arc::clone(&clock),
        Arc::clone(&random),
        Sealer::new(&master_key),
        AuthOptions {
            access_token_ttl: Duration::from_secs(config.auth.access_token_ttl_secs),
            session_ttl: Duration::from_secs(config.auth.session_ttl_days * 86_400),
            platform_timeout: Duration::from_secs(config.auth.platform_timeout_secs),
            min_password_score: config.auth.min_password_score,
        },
    )?;
    let messages = Messages::new(
        auth.clone(),
        Arc::clone(&user_store),
        queues.clone(),
        Arc::clone(&clock),
    );
    let payments = Payments::new(
        payment_store,
        Arc::clone(&system),
        user_store,
        auth.clone(),
        queues.clone(),
        Arc::clone(&clock),
        Arc::clone(&random),
        Sealer::new(&master_key),
        PaymentOptions {
            check_delay: Duration::from_secs(config.payments.check_delay_secs),
            order_ttl: Duration::from_secs(config.payments.order_ttl_secs),
            platform_timeout: Duration::from_secs(config.auth.platform_timeout_secs),
        },
    )?;
    let hub = cloudlet_core::realtime::Hub::new(
        data.clone(),
        Arc::clone(&tenant_store),
        Arc::clone(&random),
        Arc::clone(&clock),
        cloudlet_core::realtime::Limits {
            per_app: config.realtime.max_connections_per_app,
            per_user: config.realtime.max_connections_per_user,
            catch_up_bytes: config.realtime.catch_up_mib << 20,
        },
    );
    let fetcher = functions::Fetcher::new(config.functions.allow_private_fetch)
        .map_err(|e| StartError::Functions(e.to_string()))?;
    let (functions, log_writer) = start_functions(
        &config.functions,
        function_store,
        Arc::clone(&system),
        Arc::clone(&clock),
        Arc::clone(&random),
        Sealer::new(&master_key),
        functions::capabilities(
            data.clone(),
            queues.clone(),
            messages.clone(),
            payments.clone(),
            files.clone(),
            hub.clone(),
            fetcher,
        ),
    )?;
    let routing = Arc::new(queues::TriggerRouting {
        functions: functions.clone(),
        queues: queues.clone(),
    });
    data.set_triggers(Arc::clone(&routing) as Arc<dyn cloudlet_core::data::Triggers>);
    files.set_triggers(Arc::clone(&routing) as Arc<dyn cloudlet_core::data::Triggers>);
    data.set_files(Arc::new(files.clone()));
    payments.set_triggers(Arc::clone(&routing) as Arc<dyn cloudlet_core::data::Triggers>);
    auth.set_triggers(routing);
    data.set_bell(Arc::clone(&bell));
    functions.set_bell(Arc::clone(&bell));
    auth.set_bell(Arc::clone(&bell));
    queues.set_bell(Arc::clone(&bell));
    hub.set_bell(Arc::clone(&bell));
    files.set_bell(Arc::clone(&bell));
    hub.set_resume_key(&master_key);
    if config.database.shared {
        hub.set_shared();
    }
    if let Some(relay) = relay {
        hub.set_relay(relay);
        // Before the node serves: a socket that joins reads every message relayed after.
        hub.start_relay(Duration::from_secs(config.realtime.node_lease_secs))
            .await
            .map_err(|e| StoreError::Task(format!("the realtime relay: {e}")))?;
    }
    let apps = Apps::new(
        Arc::clone(&system),
        Arc::clone(&tenant_store),
        Arc::clone(&clock),
        Arc::clone(&random),
        Sealer::new(&master_key),
    );
    let rates_secret = cloudlet_core::sealing::derive_key(&master_key, "cloudlet/rate-limits/v1");
    let limits = limits::AuthLimits::new(
        config.auth.logins_per_ip_per_minute,
        config.auth.logins_per_app_per_minute,
        config.auth.password_failures_per_account_per_minute,
        config.http.trust_forwarded_for,
        rates.clone().map(|store| limits::Shared {
            store,
            clock: Arc::clone(&clock),
            secret: rates_secret,
        }),
    );
    let rates_sweep = rates.map(|store| limits::Shared {
        store,
        clock: Arc::clone(&clock),
        secret: rates_secret,
    });
    let tenants = tenant_store;
    let console = cloudlet_core::console::Console::new(
        console_store,
        Arc::clone(&system),
        access.clone(),
        Arc::clone(&clock),
        Arc::clone(&random),
        &master_key,
    );

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let (console_listener, console_addr) = match config.console_listen()? {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?;
            (Some(listener), Some(bound))
        }
        None => (None, None),
    };
    let public_url = match config.http.public_url.as_str() {
        "" => PublicUrl::of_listener(local_addr),
        configured => PublicUrl::parse(configured).map_err(|message| {
            StartError::Config(config::ConfigError::Invalid {
                key: "http.public_url",
                message,
            })
        })?,
    };
    payments.set_public_url(public_url.as_str());
    let (routes, contract) = api(&config, public_url.as_str());
    let app_limits = apps::AppLimits::of(&config, functions.limits());
    let services = state::Services {
        apps,
        auth,
        data,
        functions,
        messages,
        payments,
        queues,
        sites,
        files,
        realtime: hub.clone(),
        console,
        console_secure_cookie: config.console.secure_cookie,
        console_keep_audit: config.console.keep_audit(),
        usage: usage::Usage::new(Arc::clone(&clock)),
        app_limits,
        access,
        system: Arc::clone(&system),
    };
    let state = AppState::new(services, limits, &contract, &*random);
    state
        .queues()
        .set_taker(Arc::new(queues::Handoff::new(&state)));
    tracing::info!(
        addr = %local_addr,
        public_url = public_url.as_str(),
        data_dir = %config.data_dir.display(),
        max_connections = connection_limits.max_connections,
        "cloudlet listening"
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Every background task is tracked, so that shutdown joins them before the databases close.
    let tasks = state.tasks().clone();
    tasks.spawn(close_idle_apps(
        state.clone(),
        Arc::clone(&tenants),
        config.idle_timeout(),
        shutdown_rx.clone(),
    ));
    tasks.spawn(functions::run_schedules(state.clone(), shutdown_rx.clone()));
    tasks.spawn(queues::run_dispatcher(state.clone(), shutdown_rx.clone()));
    tasks.spawn(run_realtime(hub, state.auth().clone(), shutdown_rx.clone()));
    tasks.spawn(nodes::hear(
        state.clone(),
        Arc::clone(&bell),
        shutdown_rx.clone(),
    ));
    if let Some(rates) = rates_sweep {
        tasks.spawn(nodes::sweep_rate_buckets(rates, shutdown_rx.clone()));
    }
    let (stop_log, log_stopped) = tokio::sync::oneshot::channel::<()>();
    let log = tokio::spawn(log_writer.run(async move {
        let _ = log_stopped.await;
    }));
    let body_rate_window = Duration::from_secs(config.http.body_read_timeout_secs);
    let console_app = console::routes(routes.clone(), &state, body_rate_window);
    let app = router(&config, routes, state.clone(), Listener::Api);
    let console_app = router(&config, console_app, state.clone(), Listener::Console);
    let shutdown = Shutdown(shutdown_tx);
    let stop_all = shutdown.clone();
    let grace = config.shutdown_grace();
    // The two listeners share the descriptors set aside for connections: the console takes a
    // small part of them, the API the rest.
    let (api_limits, console_limits) =
        split_connections(connection_limits, console_listener.is_some());
    let task = tokio::spawn(async move {
        let api = serve::serve(
            listener,
            app,
            state.clone(),
            api_limits,
            shutdown_rx.clone(),
            grace,
        );
        let console = async {
            if let Some(listener) = console_listener {
                serve::serve(
                    listener,
                    console_app,
                    state,
                    console_limits,
                    shutdown_rx,
                    grace,
                )
                .await;
            }
        };
        tokio::join!(api, console);
        // Also when serving ended on its own: the background work must stop too. The loops
        // stop at once; the runs they started (triggered and scheduled functions) finish.
        stop_all.trigger();
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!("background runs still going after the grace period were dropped");
        }
        // Last, the invocation log: every run that could write to it has ended.
        let _ = stop_log.send(());
        let _ = log.await;
        // What this node changed last reaches the other nodes before its connections close
        // (unless the database does not answer in time).
        if tokio::time::timeout(Duration::from_secs(2), bell.flush())
            .await
            .is_err()
        {
            tracing::warn!("could not ring the other nodes before stopping: the database is slow");
        }
        tenants.close_all().await;
        system.close().await;
        drop(data_dir);
        tracing::info!("cloudlet stopped");
    });
    Ok(Running {
        local_addr,
        console_addr,
        admin_token,
        shutdown,
        task,
    })
}

/// The realtime hub, until shutdown; then every socket is told the server is going away.
async fn run_realtime(
    hub: cloudlet_core::realtime::Hub,
    auth: Auth,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        () = hub.clone().run(auth) => {}
        () = stopped(&mut shutdown) => hub.close_all().await,
    }
}

/// Closes app databases that have been idle for `idle`, checking a few times per period, and
/// drops what the services cached of those apps (it is read again on the next use).
async fn close_idle_apps(
    state: AppState,
    tenants: Arc<dyn TenantStore>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let closed = tenants.close_idle(idle).await;
                for app in &closed {
                    state.forget_idle(app);
                }
                if !closed.is_empty() {
                    tracing::debug!(closed = closed.len(), "closed idle app databases");
                    let _ = tokio::task::spawn_blocking(memory::release_free_memory).await;
                }
            }
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Every route of the API, and the OpenAPI document that describes them: one table.
fn api(config: &Config, public_url: &str) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let bodies = bounds::BodyLimits {
        json: config.http.max_body_bytes,
        deploy: cloudlet_core::functions::MAX_DEPLOY_BYTES,
        site_file: cloudlet_core::sites::MAX_FILE_BYTES,
        rate_window: Duration::from_secs(config.http.body_read_timeout_secs),
    };
    let (routes, doc) = utoipa_axum::router::OpenApiRouter::new()
        .merge(bounds::with_body_limit(
            health::routes(),
            &bodies,
            bodies.json,
        ))
        .merge(bounds::with_body_limit(
            openapi::routes(),
            &bodies,
            bodies.json,
        ))
        .merge(apps::router(&bodies))
        .merge(auth::router(&bodies))
        .merge(data::router(&bodies))
        .merge(functions::router(&bodies))
        .merge(messages::router(&bodies))
        .merge(payments::router(&bodies))
        .merge(queues::router(&bodies))
        .merge(sites::router(&bodies))
        .merge(files::router(&bodies))
        .merge(realtime::router(&bodies))
        .split_for_parts();
    (routes, openapi::finish(doc, public_url))
}

/// Which address a router serves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The API, apps' sites and files: for apps and their users.
    Api,
    /// The web console and the admin API behind its sessions.
    Console,
}

/// The routes with what every request goes through, outermost last.
fn router(
    config: &Config,
    routes: Router<AppState>,
    state: AppState,
    listener: Listener,
) -> Router {
    let heads = bounds::HeadLimits {
        max_uri_bytes: config.http.max_uri_bytes,
        max_header_bytes: config.http.max_header_bytes,
    };
    let routes = routes
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Every route limits its own body (see `bounds`); this only keeps axum's default of
        // 2 MiB from cutting the larger ones.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.http.body_read_timeout_secs,
        )))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(middleware::from_fn(move |request, next| {
            bounds::check_head(heads, request, next)
        }))
        // A handler's panic answers like any other fault (inside CORS and the request id, so
        // that its answer has both).
        .layer(CatchPanicLayer::custom(error::panicked));
    let routes = match listener {
        // Outside the head check, so that a browser can read its 414 and 431 too.
        Listener::Api => routes.layer(cors(&config.http.cors_origins)),
        // The console is called from its own page only: no CORS at all.
        Listener::Console => {
            let hosts: Arc<[String]> = config.console.hosts.clone().into();
            routes
                .layer(middleware::from_fn(move |request, next| {
                    console::check_host(Arc::clone(&hosts), request, next)
                }))
                .layer(middleware::from_fn(console::headers))
        }
    };
    routes
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_id::assign,
        ))
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([HeaderName::from_static(request_id::HEADER)])
        .max_age(Duration::from_secs(3600))
}

/// Resolves once shutdown has been triggered (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The function service on a pool of `cloudlet worker` processes.
fn start_functions(
    config: &config::FunctionsConfig,
    store: Arc<dyn FunctionStore>,
    system: Arc<dyn SystemStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    sealer: Sealer,
    capabilities: Capabilities,
) -> Result<(Functions, LogWriter), StartError> {
    let program = if config.worker_program.as_os_str().is_empty() {
        std::env::current_exe().map_err(|e| StartError::Functions(e.to_string()))?
    } else {
        config.worker_program.clone()
    };
    let pool = cloudlet_js::pool::Pool::new(cloudlet_js::pool::PoolOptions {
        program,
        args: vec![
            "worker".into(),
            "--idle-secs".into(),
            config.runtime_idle_secs.to_string(),
        ],
        max_workers: config.workers,
        shims: capabilities
            .shims()
            .into_iter()
            .map(|(name, source)| cloudlet_js::protocol::Shim {
                name: name.into(),
                source: source.into(),
            })
            .collect(),
        per_app: config.workers_per_app,
        reserved: config.reserved_workers,
        grace: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(config.worker_idle_secs),
    });
    let limits = FunctionLimits {
        default_timeout_ms: config.default_timeout_ms,
        max_timeout_ms: config.max_timeout_ms,
        default_memory_mb: config.default_memory_mb,
        max_memory_mb: config.max_memory_mb,
        max_concurrent_per_app: config.max_concurrent_per_app,
        // An app's short invocations may queue behind each other on the workers it holds.
        max_running_per_app: config.workers_per_app * cloudlet_js::pool::MAX_DEPTH,
        ..FunctionLimits::default()
    };
    let execution = Execution {
        engine: Arc::new(functions::WorkerEngine { pool }),
        capabilities: Arc::new(capabilities),
    };
    Ok(Functions::new(
        store, system, execution, clock, random, sealer, limits,
    ))
}

/// Replaces the admin token of the data directory with a new random one and returns it; the
/// offline recovery for a lost token. Refused while a server runs on the directory.
pub async fn reset_admin_token(data_dir: &std::path::Path) -> Result<String, StartError> {
    let path = data_dir.to_path_buf();
    let (data_dir, system) = tokio::task::spawn_blocking(move || {
        // A mistyped path must not become a new, empty data directory.
        if !path.join("system.db").is_file() {
            return Err(StartError::NotADataDir(path));
        }
        let data_dir = DataDir::open(&path)?;
        let system =
            SqliteSystemStore::open(&data_dir.system_db(), cloudlet_store::Durability::Full)?;
        Ok((data_dir, system))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    let token = Access::reset_admin_token(&system, &OsRandom).await?;
    system.close().await;
    drop(data_dir);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_takes_an_eighth_of_the_connections_at_most_256() {
        let limits = |max_connections| serve::ConnectionLimits {
            max_connections,
            max_per_address: 0,
            header_read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_head_bytes: 1024,
            cors_any_origin: true,
        };
        let split = |total, console| {
            let (api, console) = split_connections(limits(total), console);
            (api.max_connections, console.max_connections)
        };
        assert_eq!(split(64, true), (56, 8));
        assert_eq!(split(9_648, true), (9_392, 256));
        assert_eq!(split(4, true), (3, 1));
        assert_eq!(
            split(9_648, false).0,
            9_648,
            "all the API's without a console"
        );
    }
}
