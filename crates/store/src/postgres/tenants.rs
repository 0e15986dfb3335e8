//! [`TenantStore`] on PostgreSQL: each app is a schema `app_{name}`, created by
//! [`TenantStore::provision`] and dropped with everything in it by [`TenantStore::destroy`].
//! Nothing is opened per app, so "open" apps are those used recently: the statements prepared
//! for them stay cached until they idle out.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Postgres, row, schema};
use crate::sqlite::lock;
use crate::{AppName, StoreError, TenantHealth, TenantStore};

/// The schema steps of an app, in order; steps are only ever appended.
pub(crate) const MIGRATIONS: &[&str] = &[
    super::users::MIGRATION,
    super::records::MIGRATION,
    super::functions::MIGRATION,
    super::sites::MIGRATION,
];

#[async_trait]
impl TenantStore for Postgres {
    async fn provision(&self, app: &AppName) -> Result<(), StoreError> {
        // Not a use of the app: creating one leaves it closed, as on SQLite.
        let mut client = self.client().await?;
        super::migrate(&mut client, &schema(app), MIGRATIONS).await?;
        Ok(())
    }

    async fn destroy(&self, app: &AppName) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", schema(app)))
            .await?;
        lock(&self.touched).remove(app);
        self.forget_statements();
        Ok(())
    }

    async fn health(&self, app: &AppName) -> Result<TenantHealth, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT value FROM {}._cloudlet_meta WHERE key = 'schema_version'",
            schema(app)
        );
        let version = row(&client, &sql, &[])
            .await?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .ok_or(StoreError::NoSuchTenant)?;
        Ok(TenantHealth {
            schema_version: version,
        })
    }

    fn open_count(&self) -> usize {
        lock(&self.touched).len()
    }

    async fn close_idle(&self, idle_for: Duration) -> usize {
        let now = Instant::now();
        let closed = {
            let mut touched = lock(&self.touched);
            let before = touched.len();
            touched.retain(|_, at| now.duration_since(*at) < idle_for);
            before - touched.len()
        };
        if closed > 0 {
            self.forget_statements();
        }
        closed
    }

    async fn close_all(&self) {
        lock(&self.touched).clear();
        self.pool.close();
    }
}
