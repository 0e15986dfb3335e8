//! [`TenantStore`] on SQLite: one file per app at `apps/{app}/data.db`, opened on first use and
//! closed when idle, so that an idle app holds no file, no thread and no memory.
//!
//! The set of open databases is bounded by `max_open`: opening one more closes the least recently
//! used database that no request is using. A database in use is never closed under its user, so
//! the bound can be exceeded for as long as more requests than `max_open` are in flight.
//!
//! Requests never create databases: only [`TenantStore::provision`] does, and it always starts
//! from an empty directory. While an app is being destroyed its name is marked gone, so a
//! request that raced the deletion can not reopen the files on their way out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::OptionalExtension;
use tokio::sync::OnceCell;

use super::{Database, DatabaseOptions, Durability, blocking, lock, migrate};
use crate::{AppName, StoreError, TenantHealth, TenantStore};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE _cloudlet_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
    ",
    super::users::MIGRATION,
    super::users::TOMBSTONES,
    super::records::MIGRATION,
    super::functions::MIGRATION,
    super::sites::MIGRATION,
    super::queues::MIGRATION,
    super::records::EVENTS,
    super::users::GRANTS,
    super::queues::DEPTH,
    super::files::MIGRATION,
    super::files::THUMBS,
    SETTINGS,
    super::payments::MIGRATION,
    super::payments::CALLBACKS,
    super::users::SEARCH,
    super::records::EVENT_ORDER,
    super::queues::SPENT,
];

/// App-wide settings, one JSON document per key.
const SETTINGS: &str = "
    CREATE TABLE _settings (
        key        TEXT PRIMARY KEY,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
";

/// The schema version of an up-to-date app database.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Directories of deleted apps are renamed to this prefix, then removed.
const TRASH_PREFIX: &str = ".deleted-";

#[derive(Debug, Clone, Copy)]
pub struct TenantPoolOptions {
    /// How many app databases may stay open at once.
    pub max_open: usize,
    /// Reader connections per open app.
    pub readers: usize,
    /// What an acknowledged write survives.
    pub durability: Durability,
}

pub struct SqliteTenants {
    apps_dir: PathBuf,
    options: TenantPoolOptions,
    pool: Mutex<Pool>,
    epoch: Instant,
    trash_serial: AtomicU64,
}

#[derive(Default)]
struct Pool {
    slots: HashMap<AppName, Arc<Slot>>,
    /// Apps being destroyed: leases are refused until their files are gone.
    gone: HashSet<AppName>,
    /// Apps closed to make room, not yet reported by `close_idle`.
    evicted: Vec<AppName>,
    /// Set by `close_all`: nothing opens any more.
    closed: bool,
}

/// One app's place in the pool. A request holds an `Arc<Slot>` while it uses the database, which
/// is how eviction knows the database is busy.
struct Slot {
    db: OnceCell<Database>,
    last_used_ms: AtomicU64,
}

/// An app's open database, held for the length of one operation.
pub(super) struct Lease {
    _slot: Arc<Slot>,
    pub(super) db: Database,
}

impl SqliteTenants {
    /// Opens the pool on `apps_dir`, finishing the removal of apps whose deletion was cut
    /// short. Blocking.
    pub fn open(apps_dir: PathBuf, options: TenantPoolOptions) -> Result<Self, StoreError> {
        let entries = std::fs::read_dir(&apps_dir).map_err(StoreError::io(&apps_dir))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(TRASH_PREFIX)
            {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(StoreError::io(&path))?;
            }
        }
        Ok(SqliteTenants {
            apps_dir,
            options,
            pool: Mutex::new(Pool::default()),
            epoch: Instant::now(),
            trash_serial: AtomicU64::new(0),
        })
    }

    fn app_dir(&self, app: &AppName) -> PathBuf {
        self.apps_dir.join(app.as_str())
    }

    fn database_options(&self, create: bool) -> DatabaseOptions {
        DatabaseOptions {
            readers: self.options.readers,
            durability: self.options.durability,
            create,
            migrate: |conn, path| migrate::apply(conn, path, MIGRATIONS),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) async fn lease(&self, app: &AppName) -> Result<Lease, StoreError> {
        let slot = {
            let mut pool = lock(&self.pool);
            if pool.closed {
                return Err(StoreError::Closed);
            }
            if pool.gone.contains(app) {
                return Err(StoreError::NoSuchTenant);
            }
            let slot = pool.slots.entry(app.to_owned()).or_insert_with(|| {
                Arc::new(Slot {
                    db: OnceCell::new(),
                    last_used_ms: AtomicU64::new(0),
                })
            });
            slot.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
            Arc::clone(slot)
        };
        let mut opened = false;
        let db = slot
            .db
            .get_or_try_init(|| {
                opened = true;
                let path = self.app_dir(app).join("data.db");
                let options = self.database_options(false);
                blocking(move || Database::open(&path, options))
            })
            .await;
        let db = match db {
            Ok(db) => db.clone(),
            Err(e) => {
                // A name with no database (never created, or gone) leaves nothing behind: a
                // stream of made-up names must not grow the map.
                let mut pool = lock(&self.pool);
                if pool
                    .slots
                    .get(app)
                    .is_some_and(|s| Arc::ptr_eq(s, &slot) && !s.db.initialized())
                {
                    pool.slots.remove(app);
                }
                return Err(e);
            }
        };
        if opened {
            tracing::debug!(app = %app, "opened app database");
            self.close_excess();
        }
        Ok(Lease { _slot: slot, db })
    }

    /// Takes out of the pool the unused slots that `choose` picks; the caller closes them.
    fn take_unused(
        pool: &mut Pool,
        choose: impl FnOnce(Vec<(&AppName, &Arc<Slot>)>) -> Vec<AppName>,
    ) -> Vec<(AppName, Arc<Slot>)> {
        let unused = pool
            .slots
            .iter()
            .filter(|(_, slot)| Arc::strong_count(slot) == 1)
            .collect();
        choose(unused)
            .into_iter()
            .filter_map(|name| pool.slots.remove(&name).map(|slot| (name, slot)))
            .collect()
    }

    /// Closes the least recently used unused databases over `max_open`. The request that
    /// opened one more does not wait for them: they close on the blocking pool.
    fn close_excess(&self) {
        let evicted = {
            let mut pool = lock(&self.pool);
            let excess = pool.slots.len().saturating_sub(self.options.max_open);
            if excess == 0 {
                return;
            }
            let evicted = Self::take_unused(&mut pool, |mut unused| {
                unused.sort_by_key(|(_, slot)| slot.last_used_ms.load(Ordering::Relaxed));
                unused
                    .into_iter()
                    .take(excess)
                    .map(|(name, _)| name.clone())
                    .collect()
            });
            let (names, slots): (Vec<_>, Vec<_>) = evicted.into_iter().unzip();
            pool.evicted.extend(names);
            slots
        };
        tokio::task::spawn_blocking(move || close_slots(evicted));
    }

    /// A fresh name in the apps directory to move a directory to before removing it.
    fn trash_path(&self, app: &AppName) -> PathBuf {
        let serial = self.trash_serial.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        self.apps_dir
            .join(format!("{TRASH_PREFIX}{app}-{pid}-{serial}"))
    }
}

/// Moves `dir` to `trash` (its name is free at once) and removes it; fine if it is missing.
/// Blocking.
fn discard_dir(dir: &Path, trash: &Path) -> Result<(), StoreError> {
    match std::fs::rename(dir, trash) {
        Ok(()) => std::fs::remove_dir_all(trash).map_err(StoreError::io(trash)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(dir)(e)),
    }
}

/// Closes the databases of slots already taken out of the pool. Blocking.
fn close_slots(slots: Vec<Arc<Slot>>) {
    for slot in slots {
        if let Some(db) = slot.db.get() {
            db.close();
        }
    }
}

#[async_trait]
impl TenantStore for SqliteTenants {
    async fn provision(&self, app: &AppName) -> Result<(), StoreError> {
        let dir = self.app_dir(app);
        let trash = self.trash_path(app);
        let options = self.database_options(true);
        let stale = lock(&self.pool).slots.remove(app);
        blocking(move || {
            close_slots(stale.into_iter().collect());
            // Whatever is there belongs to no app (a deletion cut short): a new app starts empty.
            discard_dir(&dir, &trash)?;
            std::fs::create_dir(&dir).map_err(StoreError::io(&dir))?;
            Database::open(&dir.join("data.db"), options)?.close();
            Ok(())
        })
        .await
    }

    async fn destroy(&self, app: &AppName) -> Result<(), StoreError> {
        let stale = {
            let mut pool = lock(&self.pool);
            pool.gone.insert(app.to_owned());
            pool.slots.remove(app)
        };
        let dir = self.app_dir(app);
        let trash = self.trash_path(app);
        let result = blocking(move || {
            close_slots(stale.into_iter().collect());
            discard_dir(&dir, &trash)
        })
        .await;
        lock(&self.pool).gone.remove(app);
        result
    }

    async fn health(&self, app: &AppName) -> Result<TenantHealth, StoreError> {
        let lease = self.lease(app).await?;
        let schema_version = lease
            .db
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await?;
        Ok(TenantHealth { schema_version })
    }

    async fn setting(&self, app: &AppName, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_owned();
        self.read_app(app, move |c| {
            Ok(
                c.prepare_cached("SELECT value FROM _settings WHERE key = ?1")?
                    .query_row([&key], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn put_setting(
        &self,
        app: &AppName,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_owned(), value.to_owned());
        self.write_app(app, move |c| {
            c.prepare_cached(
                "INSERT INTO _settings (key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE
                 SET value = excluded.value, updated_at = excluded.updated_at",
            )?
            .execute(rusqlite::params![key, value, at_ms])?;
            Ok(())
        })
        .await
    }

    fn open_count(&self) -> usize {
        lock(&self.pool)
            .slots
            .values()
            .filter(|slot| slot.db.initialized())
            .count()
    }

    async fn close_idle(&self, idle_for: Duration) -> Vec<AppName> {
        let cutoff = self.now_ms().saturating_sub(idle_for.as_millis() as u64);
        let (closed, idle) = {
            let mut pool = lock(&self.pool);
            let idle = Self::take_unused(&mut pool, |unused| {
                unused
                    .into_iter()
                    .filter(|(_, slot)| slot.last_used_ms.load(Ordering::Relaxed) <= cutoff)
                    .map(|(name, _)| name.clone())
                    .collect()
            });
            // Those closed to make room that were opened again since are in use, not idle.
            let mut closed: Vec<AppName> = std::mem::take(&mut pool.evicted)
                .into_iter()
                .filter(|app| !pool.slots.contains_key(app))
                .collect();
            let mut slots = Vec::with_capacity(idle.len());
            for (name, slot) in idle {
                closed.push(name);
                slots.push(slot);
            }
            (closed, slots)
        };
        if !idle.is_empty() {
            let _ = blocking(move || {
                close_slots(idle);
                Ok(())
            })
            .await;
        }
        closed
    }

    async fn close_all(&self) {
        let all: Vec<Arc<Slot>> = {
            let mut pool = lock(&self.pool);
            pool.closed = true;
            pool.slots.drain().map(|(_, slot)| slot).collect()
        };
        let _ = blocking(move || {
            close_slots(all);
            Ok(())
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> crate::AppName {
        crate::AppName::parse(text).expect("a valid app name")
    }

    fn pool(dir: &Path, max_open: usize) -> SqliteTenants {
        SqliteTenants::open(
            dir.to_path_buf(),
            TenantPoolOptions {
                max_open,
                readers: 1,
                durability: Durability::Full,
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn databases_open_on_demand_and_the_pool_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 2);
        for app in ["aa", "bb", "cc"] {
            tenants.provision(&name(app)).await.unwrap();
        }
        assert_eq!(tenants.open_count(), 0, "provisioning leaves nothing open");
        for app in ["aa", "bb", "cc"] {
            assert_eq!(
                tenants.health(&name(app)).await.unwrap().schema_version,
                SCHEMA_VERSION
            );
        }
        assert_eq!(
            tenants.open_count(),
            2,
            "the least recently used one was closed"
        );
        // The one closed to make room (opened within the same millisecond, any of them), and
        // the two idle ones: each once.
        let mut closed = tenants.close_idle(Duration::ZERO).await;
        closed.sort();
        assert_eq!(closed, [name("aa"), name("bb"), name("cc")]);
        assert_eq!(tenants.open_count(), 0);
        tenants.health(&name("aa")).await.unwrap();
        assert_eq!(tenants.open_count(), 1);
    }

    #[tokio::test]
    async fn an_unprovisioned_app_is_never_created_by_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 2);
        assert!(matches!(
            tenants.health(&name("ghost")).await,
            Err(StoreError::NoSuchTenant)
        ));
        assert!(!dir.path().join("ghost").exists());
        assert_eq!(tenants.open_count(), 0);
        assert!(
            lock(&tenants.pool).slots.is_empty(),
            "a failed open keeps no slot"
        );
    }

    #[tokio::test]
    async fn destroy_removes_the_files_and_the_name_can_be_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 4);
        tenants.provision(&name("aa")).await.unwrap();
        tenants.health(&name("aa")).await.unwrap();
        tenants.destroy(&name("aa")).await.unwrap();
        assert_eq!(tenants.open_count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        tenants.destroy(&name("aa")).await.unwrap();
        tenants.provision(&name("aa")).await.unwrap();
        tenants.health(&name("aa")).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_app_never_sees_files_left_by_a_deletion_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 4);
        std::fs::create_dir(dir.path().join("reused")).unwrap();
        std::fs::write(dir.path().join("reused/data.db"), b"old data").unwrap();
        std::fs::create_dir(dir.path().join(".deleted-x-1-0")).unwrap();
        tenants.provision(&name("reused")).await.unwrap();
        assert_eq!(
            tenants
                .health(&name("reused"))
                .await
                .unwrap()
                .schema_version,
            SCHEMA_VERSION
        );
        // Leftover trash is removed when the pool opens.
        let tenants = pool(dir.path(), 4);
        assert!(!dir.path().join(".deleted-x-1-0").exists());
        tenants.health(&name("reused")).await.unwrap();
    }

    #[tokio::test]
    async fn nothing_opens_after_close_all() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 4);
        tenants.provision(&name("aa")).await.unwrap();
        tenants.health(&name("aa")).await.unwrap();
        tenants.close_all().await;
        assert_eq!(tenants.open_count(), 0);
        assert!(matches!(
            tenants.health(&name("aa")).await,
            Err(StoreError::Closed)
        ));
    }
}
