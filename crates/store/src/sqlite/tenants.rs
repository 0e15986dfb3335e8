//! [`TenantStore`] on SQLite: one file per app at `apps/{app}/data.db`, opened on first use and
//! closed when idle, so that an idle app holds no file, no thread and no memory.
//!
//! The set of open databases is bounded by `max_open`: opening one more closes the least recently
//! used database that no request is using. A database in use is never closed under its user, so
//! the bound can be exceeded for as long as more requests than `max_open` are in flight.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{Database, DatabaseOptions, blocking, lock, migrate};
use crate::{StoreError, TenantHealth, TenantStore};

const MIGRATIONS: &[&str] = &["
    CREATE TABLE _cloudlet_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;
"];

#[derive(Debug, Clone, Copy)]
pub struct TenantPoolOptions {
    /// How many app databases may stay open at once.
    pub max_open: usize,
    /// Reader connections per open app.
    pub readers: usize,
}

pub struct SqliteTenants {
    apps_dir: PathBuf,
    options: TenantPoolOptions,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    epoch: Instant,
}

/// One app's place in the pool. A request holds an `Arc<Slot>` while it uses the database, which
/// is how eviction knows the database is busy.
struct Slot {
    db: OnceCell<Database>,
    last_used_ms: AtomicU64,
}

struct Lease {
    _slot: Arc<Slot>,
    db: Database,
}

impl SqliteTenants {
    pub fn new(apps_dir: PathBuf, options: TenantPoolOptions) -> Self {
        SqliteTenants {
            apps_dir,
            options,
            slots: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    fn database_path(&self, app: &str) -> PathBuf {
        self.apps_dir.join(app).join("data.db")
    }

    fn database_options(&self) -> DatabaseOptions {
        DatabaseOptions {
            readers: self.options.readers,
            migrate: |conn, path| migrate::apply(conn, path, MIGRATIONS),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn lease(&self, app: &str) -> Result<Lease, StoreError> {
        let slot = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(app.to_owned()).or_insert_with(|| {
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
                let path = self.database_path(app);
                let options = self.database_options();
                blocking(move || open_existing(&path, options))
            })
            .await?
            .clone();
        if opened {
            tracing::debug!(app, "opened app database");
            self.close_excess();
        }
        Ok(Lease { _slot: slot, db })
    }

    /// Takes out of the pool the unused slots that `choose` picks, then closes them.
    /// Takes out of the pool the unused slots that `choose` picks (it sees how many slots there
    /// are, and the unused ones); the caller closes them.
    fn take_unused(
        &self,
        choose: impl FnOnce(usize, Vec<(&String, &Arc<Slot>)>) -> Vec<String>,
    ) -> Vec<Arc<Slot>> {
        let mut slots = lock(&self.slots);
        let unused = slots
            .iter()
            .filter(|(_, slot)| Arc::strong_count(slot) == 1)
            .collect();
        choose(slots.len(), unused)
            .into_iter()
            .filter_map(|name| slots.remove(&name))
            .collect()
    }

    /// Closes the least recently used unused databases over `max_open`. The request that
    /// opened one more does not wait for them: they close on the blocking pool.
    fn close_excess(&self) {
        let max_open = self.options.max_open;
        let evicted = self.take_unused(|total, mut unused| {
            let excess = total.saturating_sub(max_open);
            unused.sort_by_key(|(_, slot)| slot.last_used_ms.load(Ordering::Relaxed));
            unused
                .into_iter()
                .take(excess)
                .map(|(name, _)| name.clone())
                .collect()
        });
        if !evicted.is_empty() {
            tokio::task::spawn_blocking(move || close_slots(evicted));
        }
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
    async fn provision(&self, app: &str) -> Result<(), StoreError> {
        let path = self.database_path(app);
        let options = self.database_options();
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
            }
            Database::open(&path, options)?.close();
            Ok(())
        })
        .await
    }

    async fn destroy(&self, app: &str) -> Result<(), StoreError> {
        let slot = lock(&self.slots).remove(app);
        let dir = self.apps_dir.join(app);
        // Renaming first frees the name at once; a re-created app never sees the old files.
        let trash = self
            .apps_dir
            .join(format!(".deleted-{app}-{}", self.now_ms()));
        blocking(move || {
            if let Some(db) = slot.as_ref().and_then(|s| s.db.get()) {
                db.close();
            }
            match std::fs::rename(&dir, &trash) {
                Ok(()) => std::fs::remove_dir_all(&trash).map_err(StoreError::io(&trash)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io(&dir)(e)),
            }
        })
        .await
    }

    async fn health(&self, app: &str) -> Result<TenantHealth, StoreError> {
        let lease = self.lease(app).await?;
        let schema_version = lease
            .db
            .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await?;
        Ok(TenantHealth { schema_version })
    }

    fn open_count(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|slot| slot.db.initialized())
            .count()
    }

    async fn close_idle(&self, idle_for: Duration) -> usize {
        let cutoff = self.now_ms().saturating_sub(idle_for.as_millis() as u64);
        let idle = self.take_unused(|_, unused| {
            unused
                .into_iter()
                .filter(|(_, slot)| slot.last_used_ms.load(Ordering::Relaxed) <= cutoff)
                .map(|(name, _)| name.clone())
                .collect()
        });
        let count = idle.len();
        if count > 0 {
            let _ = blocking(move || {
                close_slots(idle);
                Ok(())
            })
            .await;
        }
        count
    }

    async fn close_all(&self) {
        let all: Vec<Arc<Slot>> = lock(&self.slots).drain().map(|(_, slot)| slot).collect();
        let _ = blocking(move || {
            close_slots(all);
            Ok(())
        })
        .await;
    }
}

/// Opens an app database that [`TenantStore::provision`] created; never creates one, so that a
/// request can not leave files behind for an app that does not exist.
fn open_existing(path: &Path, options: DatabaseOptions) -> Result<Database, StoreError> {
    if !path.exists() {
        return Err(StoreError::io(path)(std::io::ErrorKind::NotFound.into()));
    }
    Database::open(path, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(dir: &Path, max_open: usize) -> SqliteTenants {
        SqliteTenants::new(
            dir.to_path_buf(),
            TenantPoolOptions {
                max_open,
                readers: 1,
            },
        )
    }

    #[tokio::test]
    async fn databases_open_on_demand_and_the_pool_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 2);
        for app in ["a", "b", "c"] {
            tenants.provision(app).await.unwrap();
        }
        assert_eq!(tenants.open_count(), 0, "provisioning leaves nothing open");
        for app in ["a", "b", "c"] {
            assert_eq!(tenants.health(app).await.unwrap().schema_version, 1);
        }
        assert_eq!(
            tenants.open_count(),
            2,
            "the least recently used one was closed"
        );
        assert_eq!(tenants.close_idle(Duration::ZERO).await, 2);
        assert_eq!(tenants.open_count(), 0);
        tenants.health("a").await.unwrap();
        assert_eq!(tenants.open_count(), 1);
    }

    #[tokio::test]
    async fn an_unprovisioned_app_is_never_created_by_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 2);
        assert!(matches!(
            tenants.health("ghost").await,
            Err(StoreError::Io { .. })
        ));
        assert!(!dir.path().join("ghost").exists());
        assert_eq!(tenants.open_count(), 0);
    }

    #[tokio::test]
    async fn destroy_removes_the_files_and_the_name_can_be_reused() {
        let dir = tempfile::tempdir().unwrap();
        let tenants = pool(dir.path(), 4);
        tenants.provision("a").await.unwrap();
        tenants.health("a").await.unwrap();
        tenants.destroy("a").await.unwrap();
        assert_eq!(tenants.open_count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        tenants.destroy("a").await.unwrap();
        tenants.provision("a").await.unwrap();
        tenants.health("a").await.unwrap();
    }
}
