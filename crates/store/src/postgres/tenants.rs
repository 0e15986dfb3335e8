//! [`TenantStore`] on PostgreSQL: each app is a schema `app_{name}`, created by
//! [`TenantStore::provision`] and dropped with everything in it by [`TenantStore::destroy`].
//! Nothing is opened per app, so "open" apps are those used recently: the statements prepared
//! for them stay cached until they idle out.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Postgres, execute, row, schema};
use crate::sqlite::lock;
use crate::{AppName, StoreError, TenantHealth, TenantStore};

/// The schema version of an up-to-date app schema.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema steps of an app, in order; steps are only ever appended.
pub(crate) const MIGRATIONS: &[&str] = &[
    super::users::MIGRATION,
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
    CREATE TABLE {s}._settings (
        key        text COLLATE \"C\" PRIMARY KEY,
        value      text NOT NULL,
        updated_at bigint NOT NULL
    );
";

#[async_trait]
impl TenantStore for Postgres {
    async fn provision(&self, app: &AppName) -> Result<(), StoreError> {
        // Not a use of the app: creating one leaves it closed, as on SQLite. A new app always
        // starts empty: a schema left by a deletion cut short is dropped first, in the same
        // transaction and under the same lock as the deletion's.
        let schema = schema(app);
        let _turn = self.schema_change().await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
            .await?;
        tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await?;
        super::migrate_in(&tx, &schema, MIGRATIONS).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn destroy(&self, app: &AppName) -> Result<(), StoreError> {
        let schema = schema(app);
        let _turn = self.schema_change().await?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&schema])
            .await?;
        // An app of the same name created since (its row is back) owns the schema now: its
        // provisioning already dropped what this deletion was after.
        let recreated = tx
            .query_opt(
                &format!(
                    "SELECT 1 FROM {}.apps WHERE name = $1",
                    super::SYSTEM_SCHEMA
                ),
                &[&app.as_str()],
            )
            .await?
            .is_some();
        if !recreated {
            tx.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await?;
        }
        tx.commit().await?;
        lock(&self.touched).remove(app);
        Ok(())
    }

    async fn health(&self, app: &AppName) -> Result<TenantHealth, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT value FROM {}._cloudlet_meta WHERE key = 'schema_version'",
            schema(app)
        );
        let version = row(&*client, &sql, &[])
            .await?
            .and_then(|r| r.get::<_, String>(0).parse().ok())
            .ok_or(StoreError::NoSuchTenant)?;
        Ok(TenantHealth {
            schema_version: version,
        })
    }

    async fn setting(&self, app: &AppName, key: &str) -> Result<Option<String>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!("SELECT value FROM {}._settings WHERE key = $1", schema(app));
        Ok(row(&*client, &sql, &[&key]).await?.map(|r| r.get(0)))
    }

    async fn put_setting(
        &self,
        app: &AppName,
        key: &str,
        value: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {}._settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE
             SET value = excluded.value, updated_at = excluded.updated_at",
            schema(app)
        );
        execute(&*client, &sql, &[&key, &value, &at_ms]).await?;
        Ok(())
    }

    fn open_count(&self) -> usize {
        lock(&self.touched).len()
    }

    async fn close_idle(&self, idle_for: Duration) -> Vec<AppName> {
        let now = Instant::now();
        let closed: Vec<AppName> = {
            let mut touched = lock(&self.touched);
            let idle: Vec<AppName> = touched
                .iter()
                .filter(|(_, slot)| now.duration_since(slot.at) >= idle_for)
                .map(|(app, _)| app.clone())
                .collect();
            for app in &idle {
                touched.remove(app);
            }
            idle
        };
        if !closed.is_empty() {
            self.forget_statements();
        }
        // A server process keeps the definition of every table it has touched for as long as
        // it lives (about 22 KiB per app; bench/postgres_layout.sh): idle connections past
        // their age are closed, so a connection holds only the apps of its last minutes.
        self.pool
            .retain(|_, metrics| metrics.age() < super::CONNECTION_MAX_AGE);
        closed
    }

    async fn close_all(&self) {
        lock(&self.touched).clear();
        self.release_sole_node().await;
        self.pool.close();
    }
}
