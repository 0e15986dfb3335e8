//! PostgreSQL implementations of the storage traits, for several nodes on one database.
//!
//! Layout: the control plane lives in schema `cloudlet`; each app in its own schema
//! `app_{name}` holding the same tables as an app's SQLite file, so that a collection is a real
//! table with typed columns on both backends, one filter compiler serves both, and deleting an
//! app is one `DROP SCHEMA … CASCADE` (docs/architecture.md has the reasons and the costs).
//!
//! [`Postgres`] holds one connection pool for every app and implements every trait. Statements
//! are prepared once per connection and kept; the cache is cleared when a collection's table
//! changes (a prepared `SELECT *` must not outlive its columns) and when idle apps are swept,
//! so it holds only the statements of apps in use.

mod bell;
mod console;
mod files;
mod functions;
mod limits;
mod payments;
mod queues;
mod records;
mod relay;
mod sites;
mod system;
mod tenants;
pub use bell::PgBell;
pub(crate) use records::create_table_sql;
pub(crate) use tenants::MIGRATIONS as APP_MIGRATIONS;
pub use tenants::SCHEMA_VERSION;
#[cfg(feature = "testing")]
pub mod testing;
mod users;

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use deadpool_postgres::GenericClient;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Row};

use crate::records::{Record, SqlValue};
use crate::{AppName, Durability, StoreError};

/// How to reach PostgreSQL and how many connections to hold.
#[derive(Clone)]
pub struct PostgresOptions {
    /// A `postgres://user:password@host:port/database` URL (or a key=value string).
    pub url: String,
    /// The most connections this node holds.
    pub pool_size: usize,
    /// How long a request waits for a free connection before it fails as unavailable.
    pub wait: Duration,
    /// What an acknowledged write survives: `Process` turns off `synchronous_commit`.
    pub durability: Durability,
    /// How many apps count as open at once: using one more forgets the least recently used
    /// one's prepared statements (as SQLite closes its database).
    pub max_open: usize,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("PostgresOptions")
            .field("pool_size", &self.pool_size)
            .field("wait", &self.wait)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// The session lock of the node serving the database.
const SOLE_NODE_LOCK: &str = "cloudlet: the serving node";
/// How often a node looks whether the connection holding its claim is still there.
const NODE_CLAIM_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a pooled connection is kept: closing older ones (idle, at the idle sweeps) bounds
/// what each server process has cached of the apps it served.
pub(crate) const CONNECTION_MAX_AGE: Duration = Duration::from_secs(300);

/// Every store on one PostgreSQL database.
pub struct Postgres {
    pool: Pool,
    max_open: usize,
    /// Apps used recently: what "open" means on a server that opens nothing per app.
    touched: Mutex<HashMap<AppName, Slot>>,
    /// How many connections one app may hold at once, and how long it waits for one.
    per_app: usize,
    wait: Duration,
    /// The connection holding the sole-node lock, once claimed.
    node_lock: Mutex<Option<deadpool_postgres::ClientWrapper>>,
    /// Whether this node shares the database with others ([`Postgres::claim_shared_node`]).
    shared: std::sync::atomic::AtomicBool,
    /// How to connect, for connections of their own (the bell's listener).
    config: tokio_postgres::Config,
    /// App schemas created or dropped at once ([`SCHEMA_CHANGES_PER_POOL`]).
    schema_changes: Semaphore,
}

/// Of a pool's connections, one in this many may create or drop an app's schema at once (at
/// least one). Each holds its connection for the whole schema's DDL, about a tenth of a second
/// of the database's processor: a burst of app creations, as many at once as the pool has
/// connections, took every connection from the node's requests and, queued behind each other,
/// waited past `wait` for one themselves. DDL gains nothing from more at once; the others wait
/// their turn without a connection.
const SCHEMA_CHANGES_PER_POOL: usize = 8;

/// How long an app's creation or deletion waits for its turn: long enough for a burst of
/// hundreds (each takes about a tenth of a second), bounded so that one stuck in line is told.
const SCHEMA_TURN_WAIT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects, then creates or upgrades the control plane's schema. Fails with
    /// [`StoreError::Unavailable`] naming the server when it can not be reached.
    pub async fn open(options: PostgresOptions) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(&options.url)
            .map_err(|e| StoreError::Unavailable(format!("the database URL is invalid: {e}")))?;
        config.application_name("cloudlet");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A server that froze or vanished without closing its connections (a paused VM, a
        // dropped network) is noticed within about half a minute instead of hanging requests:
        // unacknowledged writes time out, and idle connections are probed.
        config.tcp_user_timeout(Duration::from_secs(30));
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let mut settings = format!(
            "-c statement_timeout={}ms",
            crate::STATEMENT_TIMEOUT.as_millis()
        );
        if options.durability == Durability::Process {
            settings.push_str(" -c synchronous_commit=off");
        }
        config.options(&settings);
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Postgres {
            pool,
            max_open: options.max_open.max(1),
            node_lock: Mutex::new(None),
            shared: std::sync::atomic::AtomicBool::new(false),
            config,
            touched: Mutex::new(HashMap::new()),
            per_app: (options.pool_size / 2).max(1),
            wait: options.wait,
            schema_changes: Semaphore::new((options.pool_size / SCHEMA_CHANGES_PER_POOL).max(1)),
        };
        let mut client = store.client().await.map_err(|e| match e {
            StoreError::Unavailable(why) => {
                StoreError::Unavailable(format!("PostgreSQL at {target}: {why}"))
            }
            other => other,
        })?;
        migrate(&mut client, SYSTEM_SCHEMA, system::MIGRATIONS).await?;
        // Text columns and the request's texts compare byte by byte whatever the locale; the
        // strings inside JSON values compare by the database's.
        // As JSON, so that the columns of newer versions are read where they exist: the
        // locale provider (15) and an ICU or builtin locale (`daticulocale` 15-16, `datlocale`
        // 17), which is the default collation when the provider is not libc.
        let database: Option<serde_json::Value> = client
            .query_opt(
                "SELECT to_jsonb(d)::text FROM pg_database d WHERE datname = current_database()",
                &[],
            )
            .await?
            .and_then(|row| serde_json::from_str(row.get::<_, &str>(0)).ok());
        let collation = database.map(|d| {
            let text = |key: &str| d[key].as_str().unwrap_or_default().to_owned();
            match text("datlocprovider").as_str() {
                "" | "c" => text("datcollate"),
                provider => {
                    let locale = [text("datlocale"), text("daticulocale")]
                        .into_iter()
                        .find(|l| !l.is_empty())
                        .unwrap_or_default();
                    // Only the builtin provider's C locales order byte by byte.
                    match provider {
                        "b" => locale,
                        _ => format!("{locale} (ICU)"),
                    }
                }
            }
        });
        if let Some(collation) = collation.filter(|c| !byte_order(c)) {
            tracing::warn!(
                collation,
                "the database's collation is not C: strings inside json fields compare by it, \
                 not byte by byte as on SQLite; create the database with --locale C \
                 (docs/operations.md)"
            );
        }
        Ok(store)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// A pooled connection if one is idle now, without waiting for one or connecting: for
    /// work that can do without ([`QueueStore::send_and_claim`](crate::QueueStore)'s hint, which
    /// otherwise goes first on the send's own connection).
    pub(crate) async fn idle_client(&self) -> Option<Object> {
        if self.pool.status().available == 0 {
            return None;
        }
        let now = deadpool_postgres::Timeouts {
            wait: Some(Duration::ZERO),
            create: Some(Duration::ZERO),
            recycle: Some(Duration::from_secs(1)),
        };
        self.pool.timeout_get(&now).await.ok()
    }

    /// A turn to create or drop an app's schema ([`SCHEMA_CHANGES_PER_POOL`]), held until
    /// dropped; unavailable after [`SCHEMA_TURN_WAIT`].
    pub(crate) async fn schema_change(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        match tokio::time::timeout(SCHEMA_TURN_WAIT, self.schema_changes.acquire()).await {
            Ok(Ok(turn)) => Ok(turn),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => Err(StoreError::Unavailable(format!(
                "no turn to create or drop an app's schema within {} s",
                SCHEMA_TURN_WAIT.as_secs()
            ))),
        }
    }

    /// A pooled connection for work on `app`, which counts as a use of the app. The map of
    /// apps in use keeps at most `max_open` names (a name that is no app's costs an entry
    /// until it is pushed out, never a statement: nothing prepares on a missing schema).
    /// An app holds at most half the pool: one app's slow queries (a pathological filter over
    /// a large table, say) can not take every connection from the others.
    pub(crate) async fn app_client(&self, app: &AppName) -> Result<AppClient, StoreError> {
        let permits = {
            let mut touched = super::sqlite::lock(&self.touched);
            let slot = touched.entry(app.clone()).or_insert_with(|| Slot {
                at: Instant::now(),
                permits: Arc::new(Semaphore::new(self.per_app)),
            });
            slot.at = Instant::now();
            let permits = Arc::clone(&slot.permits);
            if touched.len() > self.max_open
                && let Some(oldest) = touched
                    .iter()
                    .min_by_key(|(_, slot)| slot.at)
                    .map(|(name, _)| name.clone())
            {
                touched.remove(&oldest);
            }
            permits
        };
        let permit = tokio::time::timeout(self.wait, permits.acquire_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable(
                    "the app's share of database connections stayed busy".into(),
                )
            })?
            .map_err(|_| StoreError::Closed)?;
        Ok(AppClient {
            client: self.client().await?,
            _permit: permit,
        })
    }

    /// The bell of this node (named `node`, a name no other node has), ringing the other nodes
    /// of the database and hearing them.
    pub fn bell(&self, node: String) -> Arc<PgBell> {
        PgBell::start(self.pool.clone(), self.config.clone(), node)
    }

    /// Makes this process the only node serving the database, for as long as it runs (a
    /// session lock on a connection of its own): a node that does not ring others (nor hear
    /// them) must be alone, or it would serve rules, keys and sessions another one changed.
    pub async fn claim_sole_node(&self) -> Result<(), StoreError> {
        if !self.try_claim(false).await? {
            return Err(StoreError::Unavailable(
                "another Cloudlet node serves this database; run one node per database, or \
                 set database.shared = true on every node (docs/operations.md#postgresql)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Takes the sole-node lock (`shared`: its shared form) on a connection kept out of the
    /// pool for good, since the lock lives with its session; false if another node holds it.
    async fn try_claim(&self, shared: bool) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let take = match shared {
            true => "pg_try_advisory_lock_shared",
            false => "pg_try_advisory_lock",
        };
        let claimed: bool = client
            .query_one(&format!("SELECT {take}(hashtext('{SOLE_NODE_LOCK}'))"), &[])
            .await?
            .try_get(0)?;
        if claimed {
            *super::sqlite::lock(&self.node_lock) = Some(Object::take(client));
        }
        Ok(claimed)
    }

    /// Makes this process one of the nodes sharing the database (a shared session lock on the
    /// sole-node key): refused while a node serves it alone, and a node that would serve it
    /// alone is refused while this one runs, so that no node goes without the others' rings.
    pub async fn claim_shared_node(&self) -> Result<(), StoreError> {
        if !self.try_claim(true).await? {
            return Err(StoreError::Unavailable(
                "a Cloudlet node serves this database alone (database.shared is off there); \
                 set database.shared = true on every node (docs/operations.md#postgresql)"
                    .into(),
            ));
        }
        self.shared
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether other nodes share the database (and settle its hints of due work).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps this node's claim (alone, or `shared`) while it runs: the lock lives with its
    /// connection, so when the database restarts it is gone, and a node of the other kind
    /// could start. Every few seconds the connection is looked at; once lost, the claim is made
    /// again as soon as the database answers. Should a node of the other kind have started in
    /// between, that is said loudly: one of them must be stopped. Ends when the claim is given
    /// up (`release_sole_node`) or the store is gone (held weakly, so that a node that fails
    /// to start lets its claim go with its store).
    pub async fn keep_node_claim(store: std::sync::Weak<Postgres>, shared: bool) {
        let mut every = tokio::time::interval(NODE_CLAIM_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(store) = store.upgrade() else {
                return;
            };
            let lost = match super::sqlite::lock(&store.node_lock).as_ref() {
                None => return,
                Some(client) => client.is_closed(),
            };
            if !lost {
                continue;
            }
            match store.try_claim(shared).await {
                Ok(true) => tracing::info!("the node's claim on the database was made again"),
                Ok(false) => tracing::error!(
                    shared,
                    "while the database was out of reach a node of the other kind (alone, or \
                     shared) started serving it: stop this node or that one"
                ),
                Err(e) => tracing::warn!(error = %e, "could not claim the database again yet"),
            }
        }
    }

    /// Gives up the sole-node lock, if this process holds it, so that a node started right
    /// after this one stops is not refused.
    pub(crate) async fn release_sole_node(&self) {
        let held = super::sqlite::lock(&self.node_lock).take();
        if let Some(client) = held {
            let _ = client
                .execute(
                    // Its connection holds this lock only, alone or shared.
                    "SELECT pg_advisory_unlock_all()",
                    &[],
                )
                .await;
        }
    }

    /// Forgets every prepared statement of every connection.
    pub(crate) fn forget_statements(&self) {
        self.pool.manager().statement_caches.clear();
    }
}

/// An app recently used, and its share of the pool.
pub(crate) struct Slot {
    pub(crate) at: Instant,
    permits: Arc<Semaphore>,
}

/// A pooled connection held for one app, within the app's share of the pool.
pub(crate) struct AppClient {
    client: Object,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for AppClient {
    type Target = Object;

    fn deref(&self) -> &Object {
        &self.client
    }
}

impl std::ops::DerefMut for AppClient {
    fn deref_mut(&mut self) -> &mut Object {
        &mut self.client
    }
}

/// `host:port/database` of a configuration, for messages (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("(default)");
    format!("{host}:{port}/{db}")
}

/// The schema of the control plane.
pub(crate) const SYSTEM_SCHEMA: &str = "\"cloudlet\"";

/// The schema of an app, quoted. App names are `a-z`, `0-9` and `-`, at most 40 characters,
/// so the identifier is at most 44 bytes and needs no escaping.
pub(crate) fn schema(app: &AppName) -> String {
    format!("\"app_{}\"", app.as_str())
}

/// Brings `schema` up to date with `steps` (each may name the schema as `{s}`), holding a
/// transaction-level advisory lock so that nodes starting together migrate it once. Returns
/// the version reached; a schema newer than the steps is refused, never touched.
pub(crate) async fn migrate(
    client: &mut Object,
    schema: &str,
    steps: &[&str],
) -> Result<i64, StoreError> {
    let tx = client.transaction().await?;
    let version = migrate_in(&tx, schema, steps).await?;
    tx.commit().await?;
    Ok(version)
}

/// [`migrate`] inside the caller's transaction.
pub(crate) async fn migrate_in(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &str,
    steps: &[&str],
) -> Result<i64, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
        .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}._cloudlet_meta (key text PRIMARY KEY, value text NOT NULL);"
    ))
    .await?;
    let found: i64 = match tx
        .query_opt(
            &format!("SELECT value FROM {schema}._cloudlet_meta WHERE key = 'schema_version'"),
            &[],
        )
        .await?
    {
        Some(row) => row.get::<_, String>(0).parse().unwrap_or(i64::MAX),
        None => 0,
    };
    let known = steps.len() as i64;
    if found > known {
        return Err(StoreError::SchemaTooNew {
            path: schema.into(),
            found,
            known,
        });
    }
    for step in steps.iter().skip(found as usize) {
        tx.batch_execute(&step.replace("{s}", schema)).await?;
    }
    if found < known {
        tx.execute(
            &format!(
                "INSERT INTO {schema}._cloudlet_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            &[&known.to_string()],
        )
        .await?;
    }
    Ok(known)
}

/// The rows of `sql`, prepared once per connection.
pub(crate) async fn rows(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query(&statement, params).await?)
}

/// The row of `sql`, if any, prepared once per connection.
pub(crate) async fn row(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.query_opt(&statement, params).await?)
}

/// Lets the current transaction commit without waiting for its WAL to reach the disk
/// (`synchronous_commit = off` for it alone): for bookkeeping whose loss in a crash of
/// PostgreSQL is harmless or repaired (a function's log, a realtime presence entry). It never
/// breaks the database, and as the WAL is written in order, any later ordinary commit's flush
/// takes it to disk too. A relaxed transaction of one statement (a queue claim or
/// acknowledgement, a hint of due work) goes through [`relaxed_rows`] or [`relaxed_execute`]
/// instead, in one round trip.
pub(crate) async fn relax_commit(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await?;
    Ok(())
}

/// Makes the current transaction's commit wait for its WAL to reach the disk whatever the
/// node's durability: for a payment's state, which the platform stops retrying once answered.
pub(crate) async fn durable_commit(tx: &tokio_postgres::Transaction<'_>) -> Result<(), StoreError> {
    tx.batch_execute("SET LOCAL synchronous_commit = on")
        .await?;
    Ok(())
}

/// The rows of `sql` (prepared once per connection), run as a transaction of its own that
/// commits relaxed, as [`relax_commit`] does, in one round trip (see [`relaxed`]).
pub(crate) async fn relaxed_rows(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    relaxed(client, client.query(&statement, params)).await
}

/// Runs `sql` (prepared once per connection) as a transaction of its own that commits
/// relaxed, in one round trip; returns how many rows it changed.
pub(crate) async fn relaxed_execute(
    client: &deadpool_postgres::ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    relaxed(client, client.execute(&statement, params)).await
}

/// Runs one prepared statement between a `BEGIN` that relaxes the commit and a `COMMIT`, all
/// sent together: tokio-postgres pipelines requests that are polled at once, and `join3`
/// polls them in order, so a relaxed statement costs the one round trip an ordinary one does
/// (where `transaction()`, `relax_commit`, the statement and `commit()` take four). Should the
/// statement fail, PostgreSQL answers the `COMMIT` of the aborted transaction with a rollback;
/// should the caller stop waiting, all three were sent, and the write commits all the same (as
/// a write handed to SQLite's writer does): either way the connection is left idle.
pub(crate) async fn relaxed<T>(
    client: &deadpool_postgres::ClientWrapper,
    statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    let (begun, done, committed) = futures_util::future::join3(
        client.batch_execute("BEGIN; SET LOCAL synchronous_commit = off"),
        statement,
        client.batch_execute("COMMIT"),
    )
    .await;
    begun?;
    let done = done?;
    committed?;
    Ok(done)
}

/// Runs `sql`, prepared once per connection; returns how many rows it changed.
pub(crate) async fn execute(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await?;
    Ok(client.execute(&statement, params).await?)
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if let Some(db) = err.as_db_error() {
            let code = db.code();
            if *code == SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict;
            }
            // Raised by `check_failed()`, when a write's check condition does not hold.
            if code.code() == "CL001" {
                return StoreError::CheckFailed;
            }
            // Raised by `key_refused()`, when a write's app key is not the app's.
            if code.code() == "CL002" {
                return StoreError::KeyRefused;
            }
            // Raised by `statement_timeout` (nothing else cancels a statement here).
            if *code == SqlState::QUERY_CANCELED {
                return StoreError::TimedOut;
            }
            if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::INVALID_SCHEMA_NAME {
                return StoreError::NoSuchTenant;
            }
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
            {
                return StoreError::Unavailable(db.message().to_owned());
            }
        }
        if err.is_closed() || err.source().is_some_and(|s| s.is::<std::io::Error>()) {
            return StoreError::Unavailable(err.to_string());
        }
        // The driver's own text is only "db error": the log needs what the server said.
        if let Some(db) = err.as_db_error() {
            let detail = format!(
                "{} ({}){}",
                db.message(),
                db.code().code(),
                db.detail().map(|d| format!(": {d}")).unwrap_or_default()
            );
            return StoreError::Database(detail.into());
        }
        StoreError::Database(Box::new(err))
    }
}

impl From<PoolError> for StoreError {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(e) => e.into(),
            PoolError::Timeout(_) => {
                StoreError::Unavailable("no database connection was free in time".into())
            }
            PoolError::Closed => StoreError::Closed,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A value as a PostgreSQL parameter, converted to the column's type: integers into `bigint`,
/// `integer` or `float8`, text into `text` or `jsonb`.
#[derive(Debug)]
pub(crate) struct Param<'a>(pub(crate) &'a SqlValue);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match (self.0, ty) {
            (SqlValue::Null, _) => Ok(IsNull::Yes),
            (SqlValue::Bool(b), &Type::BOOL) => b.to_sql(ty, out),
            (SqlValue::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (SqlValue::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (SqlValue::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (SqlValue::Float(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (SqlValue::Text(t), &Type::JSONB) => {
                out.put_u8(1);
                out.put_slice(t.as_bytes());
                Ok(IsNull::No)
            }
            (SqlValue::Text(t), &Type::TEXT | &Type::VARCHAR | &Type::JSON) => {
                t.as_str().to_sql(ty, out)
            }
            (value, ty) => Err(format!("{value:?} can not be sent as {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Values as PostgreSQL parameters.
pub(crate) fn params(values: &[SqlValue]) -> Vec<Param<'_>> {
    values.iter().map(Param).collect()
}

/// References to parameters, as the driver takes them.
pub(crate) fn refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// A column's value read back: the inverse of [`Param`].
struct Cell(SqlValue);

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell(match *ty {
            Type::BOOL => SqlValue::Bool(bool::from_sql(ty, raw)?),
            Type::INT8 => SqlValue::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => SqlValue::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => SqlValue::Int(i16::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => SqlValue::Float(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => SqlValue::Float(f32::from_sql(ty, raw)?.into()),
            Type::JSONB => match raw.split_first() {
                Some((1, json)) => SqlValue::Text(std::str::from_utf8(json)?.to_owned()),
                _ => return Err("unsupported jsonb version".into()),
            },
            _ => SqlValue::Text(String::from_sql(ty, raw)?),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell(SqlValue::Null))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL
                | Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::FLOAT8
                | Type::FLOAT4
                | Type::JSONB
                | Type::JSON
                | Type::TEXT
                | Type::VARCHAR
                | Type::NAME
                | Type::BPCHAR
        )
    }
}

/// Every column of a row, with its name.
pub(crate) fn record_of(row: &Row) -> Result<Record, StoreError> {
    let mut record = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let cell: Cell = row.try_get(i)?;
        record.push((column.name().to_owned(), cell.0));
    }
    Ok(record)
}

/// Whether a collation orders text byte by byte (code point order is the same for UTF-8).
fn byte_order(collation: &str) -> bool {
    matches!(
        collation.to_ascii_lowercase().as_str(),
        "c" | "posix" | "c.utf8" | "c.utf-8" | "ucs_basic"
    )
}

#[cfg(test)]
mod tests {
    use super::byte_order;

    #[test]
    fn only_byte_order_collations_pass_without_a_warning() {
        for collation in ["C", "POSIX", "C.UTF-8", "C.utf8", "ucs_basic"] {
            assert!(byte_order(collation), "{collation}");
        }
        for collation in ["en_US.UTF-8", "zh_CN.utf8", "und-x-icu", "C (ICU)", ""] {
            assert!(!byte_order(collation), "{collation}");
        }
    }
}
