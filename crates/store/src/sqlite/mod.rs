//! SQLite implementations of the storage traits.
//!
//! [`Database`] is the executor every SQLite file goes through: WAL mode, one writer thread that
//! batches concurrent writes into one transaction, and a small pool of read-only connections used
//! from tokio's blocking pool, so the async runtime never waits on the disk.

mod executor;
mod functions;
mod migrate;
mod records;
mod sites;
mod system;
mod tenants;
mod users;

pub use executor::{Database, DatabaseOptions, Durability};
pub use system::SqliteSystemStore;
pub use tenants::{SqliteTenants, TenantPoolOptions};

/// Descriptors one open SQLite connection holds in WAL mode: the database, its `-wal` and its
/// `-shm`. An open app holds one writer connection and up to `readers` reader connections.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 3;

use std::sync::{Mutex, MutexGuard};

use crate::StoreError;

/// Runs blocking database work on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Locks a mutex whose sections only move values in and out: they never panic half-way, so a
/// poisoned lock still guards consistent data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
