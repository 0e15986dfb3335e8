//! Each app's own database, opened on demand.

use std::time::Duration;

use async_trait::async_trait;

use crate::{AppName, StoreError};

/// What a read of an app's database found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantHealth {
    pub schema_version: i64,
}

#[async_trait]
pub trait TenantStore: Send + Sync {
    /// Creates the app's database, empty: anything a deletion cut short left is discarded.
    async fn provision(&self, app: &AppName) -> Result<(), StoreError>;
    /// Closes and deletes the app's database and everything stored beside it. Called once the
    /// app's row is gone from the control plane; on PostgreSQL, an app whose row is back (made
    /// again meanwhile, with a new database) keeps its schema.
    async fn destroy(&self, app: &AppName) -> Result<(), StoreError>;
    /// Opens the app's database if it is closed and reads from it.
    async fn health(&self, app: &AppName) -> Result<TenantHealth, StoreError>;
    /// An app-wide setting kept in the app's database (`realtime`: its channels and their
    /// rules), as the JSON text it was stored as.
    async fn setting(&self, app: &AppName, key: &str) -> Result<Option<String>, StoreError>;
    /// Creates or replaces an app-wide setting.
    async fn put_setting(
        &self,
        app: &AppName,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// How many app databases are open now.
    fn open_count(&self) -> usize;
    /// Closes the databases nobody has used for `idle_for`; returns their apps, and those
    /// closed since the last call to make room for others (what is cached of them may go).
    async fn close_idle(&self, idle_for: Duration) -> Vec<AppName>;
    /// Flushes and closes every open database.
    async fn close_all(&self);
}
