//! SQLite implementations of the storage traits.
//!
//! [`Database`] is the executor every SQLite file goes through: WAL mode, one writer thread that
//! batches concurrent writes into one transaction, and a small pool of read-only connections used
//! from tokio's blocking pool, so the async runtime never waits on the disk.

mod console;
mod executor;
mod files;
mod functions;
mod migrate;
mod payments;
mod queues;
mod records;
mod sites;
mod system;
mod tenants;
mod users;

pub use executor::{Database, DatabaseOptions, Durability, OnDisk};
pub(crate) use system::OPEN_MARK;
pub use system::SqliteSystemStore;
pub use tenants::{SCHEMA_VERSION, SqliteTenants, TenantPoolOptions};

/// Descriptors one open SQLite connection holds in WAL mode: the database, its `-wal` and its
/// `-shm`. An open app holds one writer connection and up to `readers` reader connections.
pub const DESCRIPTORS_PER_CONNECTION: u64 = 3;
/// Descriptors an open database holds besides its connections: its sync thread's handle on the
/// WAL.
pub const DESCRIPTORS_PER_DATABASE: u64 = 1;

use std::sync::{Mutex, MutexGuard};

use crate::StoreError;

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Database(Box::new(err))
    }
}

/// Maps a unique or primary key violation to [`StoreError::Conflict`]; other constraint
/// failures (a foreign key, say) stay errors.
pub(crate) fn from_write(err: rusqlite::Error) -> StoreError {
    const SQLITE_CONSTRAINT_PRIMARYKEY: i32 = 1555;
    const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
    match &err {
        rusqlite::Error::SqliteFailure(e, _)
            if matches!(
                e.extended_code,
                SQLITE_CONSTRAINT_PRIMARYKEY | SQLITE_CONSTRAINT_UNIQUE
            ) =>
        {
            StoreError::Conflict
        }
        _ => err.into(),
    }
}

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
