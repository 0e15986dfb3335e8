//! [`SystemStore`] on PostgreSQL: the control plane's tables in schema `cloudlet`.
//!
//! Several nodes share these tables, so nothing relies on one writer: each write is one
//! statement (an upsert, a conditional update) or a transaction that locks what it reads.
//! Keys that are listed in order are `COLLATE "C"`, so that names sort by bytes as in SQLite
//! whatever the database's locale.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Postgres, SYSTEM_SCHEMA, execute, relaxed_execute, row, rows};
use crate::{
    AppName, AppRow, DueApp, Page, ProviderRow, ScheduleRow, SigningKeyRow, StoreError, SystemStore,
};

/// The control plane's schema steps, in order; steps are only ever appended. The first one is
/// SQLite's three steps in one.
pub(crate) const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE {s}.settings (
        key    text PRIMARY KEY,
        value  bytea NOT NULL
    );
    CREATE TABLE {s}.apps (
        name                   text COLLATE \"C\" PRIMARY KEY,
        created_at             bigint NOT NULL,
        secret_key_hash        bytea NOT NULL UNIQUE,
        secret_key_hint        text NOT NULL,
        secret_key_created_at  bigint NOT NULL
    );
    CREATE TABLE {s}.app_signing_keys (
        app         text COLLATE \"C\" NOT NULL REFERENCES {s}.apps (name) ON DELETE CASCADE,
        kid         text NOT NULL,
        secret      bytea NOT NULL,
        created_at  bigint NOT NULL,
        PRIMARY KEY (app, kid)
    );
    CREATE TABLE {s}.app_providers (
        app             text COLLATE \"C\" NOT NULL REFERENCES {s}.apps (name) ON DELETE CASCADE,
        provider        text COLLATE \"C\" NOT NULL,
        settings        text NOT NULL,
        sealed_secrets  bytea,
        updated_at      bigint NOT NULL,
        PRIMARY KEY (app, provider)
    );
    CREATE TABLE {s}.schedules (
        app       text COLLATE \"C\" NOT NULL REFERENCES {s}.apps (name) ON DELETE CASCADE,
        function  text COLLATE \"C\" NOT NULL,
        idx       bigint NOT NULL,
        cron      text NOT NULL,
        timezone  text NOT NULL,
        data      text NOT NULL,
        next_at   bigint NOT NULL,
        PRIMARY KEY (app, function, idx)
    );
    CREATE INDEX schedules_by_next ON {s}.schedules (next_at);
",
    "
    CREATE TABLE {s}.due_work (
        app      text COLLATE \"C\" PRIMARY KEY REFERENCES {s}.apps (name) ON DELETE CASCADE,
        at       bigint NOT NULL,
        version  bigint NOT NULL
    );
    CREATE INDEX due_work_by_at ON {s}.due_work (at);
",
    // Raised by a write whose check condition does not hold, undoing the write with it.
    "
    CREATE FUNCTION {s}.check_failed() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the write''s check condition does not hold' USING ERRCODE = 'CL001';
    END
    $$;
",
    // Not tied to `apps`: the rows outlive their app on purpose.
    "
    CREATE TABLE {s}.buried_providers (
        app             text COLLATE \"C\" NOT NULL,
        provider        text COLLATE \"C\" NOT NULL,
        settings        text NOT NULL,
        sealed_secrets  bytea,
        updated_at      bigint NOT NULL,
        until           bigint NOT NULL,
        PRIMARY KEY (app, provider)
    );
",
    super::console::MIGRATION,
    super::limits::MIGRATION,
    super::relay::MIGRATION,
    super::relay::PRESENCE_MIGRATION,
    // Raised by a write that an app key authorizes when the key is no longer the app's,
    // undoing the write with it (see `QueueStore::send_and_claim`).
    "
    CREATE FUNCTION {s}.key_refused() RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the app key is not the app''s' USING ERRCODE = 'CL002';
    END
    $$;
",
];

const ADMIN_TOKEN_HASH: &str = "admin_token_hash";
const APP_COLUMNS: &str =
    "name, created_at, secret_key_hash, secret_key_hint, secret_key_created_at";
const PROVIDER_COLUMNS: &str = "provider, settings, sealed_secrets, updated_at";

fn app_from_row(r: &Row) -> Result<AppRow, StoreError> {
    Ok(AppRow {
        name: r.try_get(0)?,
        created_at_ms: r.try_get(1)?,
        secret_key_hash: r.try_get(2)?,
        secret_key_hint: r.try_get(3)?,
        secret_key_created_at_ms: r.try_get(4)?,
    })
}

fn provider_from_row(r: &Row) -> Result<ProviderRow, StoreError> {
    Ok(ProviderRow {
        provider: r.try_get(0)?,
        settings: r.try_get(1)?,
        sealed_secrets: r.try_get(2)?,
        updated_at_ms: r.try_get(3)?,
    })
}

fn schedule_from_row(r: &Row) -> Result<ScheduleRow, StoreError> {
    Ok(ScheduleRow {
        app: app_name(r.try_get(0)?)?,
        function: r.try_get(1)?,
        index: r.try_get(2)?,
        cron: r.try_get(3)?,
        timezone: r.try_get(4)?,
        data: r.try_get(5)?,
        next_at_ms: r.try_get(6)?,
    })
}

/// A name read back: valid when it was written; one that is not any more is a damaged row.
fn app_name(text: &str) -> Result<AppName, StoreError> {
    AppName::parse(text).map_err(|e| StoreError::Database(Box::new(e)))
}

/// Raises `key_refused()` (undoing the transaction it is in) unless `$2` is the SHA-256 of app
/// `$1`'s secret key.
pub(super) fn key_holds_sql() -> String {
    format!(
        "SELECT CASE WHEN EXISTS (
             SELECT FROM {SYSTEM_SCHEMA}.apps WHERE name = $1 AND secret_key_hash = $2)
         THEN true ELSE {SYSTEM_SCHEMA}.key_refused() END"
    )
}

/// Makes an app's hint no later than `$2`, and moves its version.
pub(super) fn lower_hint_sql() -> String {
    format!(
        "INSERT INTO {SYSTEM_SCHEMA}.due_work AS d (app, at, version) VALUES ($1, $2, 1)
         ON CONFLICT (app) DO UPDATE
         SET at = least(d.at, excluded.at), version = d.version + 1"
    )
}

/// [`lower_hint_sql`] only if `$3` is the SHA-256 of app `$1`'s secret key: a send that checks
/// its key in its own transaction ([`key_holds_sql`]) writes nothing, its hint included, if the
/// key is not the app's.
pub(super) fn lower_hint_if_key_sql() -> String {
    format!(
        "INSERT INTO {SYSTEM_SCHEMA}.due_work AS d (app, at, version)
         SELECT $1::text, $2::bigint, 1
         WHERE EXISTS (
             SELECT FROM {SYSTEM_SCHEMA}.apps WHERE name = $1 AND secret_key_hash = $3)
         ON CONFLICT (app) DO UPDATE
         SET at = least(d.at, excluded.at), version = d.version + 1"
    )
}

#[async_trait]
impl SystemStore for Postgres {
    fn hints_settled_elsewhere(&self) -> bool {
        self.is_shared()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        row(&client, "SELECT 1", &[]).await?;
        Ok(())
    }

    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT value FROM {SYSTEM_SCHEMA}.settings WHERE key = $1");
        row(&client, &sql, &[&ADMIN_TOKEN_HASH])
            .await?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Into::into)
    }

    async fn set_admin_token_hash(&self, hash: Vec<u8>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        );
        execute(&client, &sql, &[&ADMIN_TOKEN_HASH, &hash]).await?;
        Ok(())
    }

    async fn settle_setting(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let client = self.client().await?;
        let insert = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.settings (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO NOTHING"
        );
        execute(&client, &insert, &[&key, &value]).await?;
        let select = format!("SELECT value FROM {SYSTEM_SCHEMA}.settings WHERE key = $1");
        let stored = row(&client, &select, &[&key])
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(stored.try_get(0)?)
    }

    async fn insert_app(&self, app: AppRow, key: SigningKeyRow) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql =
            format!("INSERT INTO {SYSTEM_SCHEMA}.apps ({APP_COLUMNS}) VALUES ($1, $2, $3, $4, $5)");
        execute(
            &tx,
            &sql,
            &[
                &app.name,
                &app.created_at_ms,
                &app.secret_key_hash,
                &app.secret_key_hint,
                &app.secret_key_created_at_ms,
            ],
        )
        .await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.app_signing_keys (app, kid, secret, created_at)
             VALUES ($1, $2, $3, $4)"
        );
        execute(
            &tx,
            &sql,
            &[&app.name, &key.kid, &key.secret, &key.created_at_ms],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn app(&self, name: &AppName) -> Result<Option<AppRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {APP_COLUMNS} FROM {SYSTEM_SCHEMA}.apps WHERE name = $1");
        row(&client, &sql, &[&name.as_str()])
            .await?
            .map(|r| app_from_row(&r))
            .transpose()
    }

    async fn app_by_key_hash(&self, hash: &[u8]) -> Result<Option<AppName>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT name FROM {SYSTEM_SCHEMA}.apps WHERE secret_key_hash = $1");
        row(&client, &sql, &[&hash])
            .await?
            .map(|r| app_name(r.try_get(0)?))
            .transpose()
    }

    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AppRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {APP_COLUMNS} FROM {SYSTEM_SCHEMA}.apps WHERE name > $1 ORDER BY name LIMIT $2"
        );
        // One row more than asked tells whether there is a next page.
        let mut items = rows(
            &client,
            &sql,
            &[&after.unwrap_or_default(), &(limit as i64 + 1)],
        )
        .await?
        .iter()
        .map(app_from_row)
        .collect::<Result<Vec<_>, _>>()?;
        let next_after = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(Page { items, next_after })
    }

    async fn delete_app(&self, name: &AppName) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.apps WHERE name = $1");
        Ok(execute(&client, &sql, &[&name.as_str()]).await? == 1)
    }

    async fn replace_app_key(
        &self,
        name: &AppName,
        hash: Vec<u8>,
        hint: String,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE {SYSTEM_SCHEMA}.apps SET secret_key_hash = $2, secret_key_hint = $3,
             secret_key_created_at = $4 WHERE name = $1"
        );
        let changed = execute(&client, &sql, &[&name.as_str(), &hash, &hint, &at_ms]).await?;
        Ok(changed == 1)
    }

    async fn put_provider(&self, app: &AppName, row: ProviderRow) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.app_providers (app, {PROVIDER_COLUMNS})
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (app, provider) DO UPDATE SET settings = excluded.settings,
               sealed_secrets = excluded.sealed_secrets, updated_at = excluded.updated_at"
        );
        execute(
            &client,
            &sql,
            &[
                &app.as_str(),
                &row.provider,
                &row.settings,
                &row.sealed_secrets,
                &row.updated_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn provider(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<Option<ProviderRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM {SYSTEM_SCHEMA}.app_providers
             WHERE app = $1 AND provider = $2"
        );
        row(&client, &sql, &[&app.as_str(), &provider])
            .await?
            .map(|r| provider_from_row(&r))
            .transpose()
    }

    async fn bury_providers(
        &self,
        app: &AppName,
        prefix: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.buried_providers WHERE until <= $1");
        execute(&client, &sql, &[&now_ms]).await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.buried_providers
                 (app, provider, settings, sealed_secrets, updated_at, until)
             SELECT app, provider, settings, sealed_secrets, updated_at, $3
             FROM {SYSTEM_SCHEMA}.app_providers WHERE app = $1 AND starts_with(provider, $2)
             ON CONFLICT (app, provider) DO UPDATE SET settings = excluded.settings,
                 sealed_secrets = excluded.sealed_secrets,
                 updated_at = excluded.updated_at, until = excluded.until"
        );
        execute(&client, &sql, &[&app.as_str(), &prefix, &until_ms]).await
    }

    async fn forget_buried(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.buried_providers WHERE until <= $1");
        execute(&client, &sql, &[&now_ms]).await
    }

    async fn buried_provider(
        &self,
        app: &AppName,
        provider: &str,
        now_ms: i64,
    ) -> Result<Option<ProviderRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM {SYSTEM_SCHEMA}.buried_providers
             WHERE app = $1 AND provider = $2 AND until > $3"
        );
        row(&client, &sql, &[&app.as_str(), &provider, &now_ms])
            .await?
            .map(|r| provider_from_row(&r))
            .transpose()
    }

    async fn providers(&self, app: &AppName) -> Result<Vec<ProviderRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PROVIDER_COLUMNS} FROM {SYSTEM_SCHEMA}.app_providers
             WHERE app = $1 ORDER BY provider"
        );
        rows(&client, &sql, &[&app.as_str()])
            .await?
            .iter()
            .map(provider_from_row)
            .collect()
    }

    async fn replace_schedules(
        &self,
        app: &AppName,
        function: &str,
        schedules: Vec<ScheduleRow>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Replacements of one app's schedules take turns on the app's row (a lock that foreign
        // keys do not wait for), so that two never delete the same rows and insert twice.
        let sql = format!("SELECT 1 FROM {SYSTEM_SCHEMA}.apps WHERE name = $1 FOR NO KEY UPDATE");
        row(&tx, &sql, &[&app.as_str()]).await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.schedules WHERE app = $1 AND function = $2");
        execute(&tx, &sql, &[&app.as_str(), &function]).await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.schedules
             (app, function, idx, cron, timezone, data, next_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        );
        for s in &schedules {
            execute(
                &tx,
                &sql,
                &[
                    &s.app.as_str(),
                    &s.function,
                    &s.index,
                    &s.cron,
                    &s.timezone,
                    &s.data,
                    &s.next_at_ms,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn due_schedules(
        &self,
        now_ms: i64,
        limit: usize,
        per_app: usize,
    ) -> Result<Vec<ScheduleRow>, StoreError> {
        let client = self.client().await?;
        let per_app = i64::try_from(per_app).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Ties are broken by key, so that every node sees one order.
        let sql = format!(
            // The window over keys alone: a row's data is read only once chosen.
            "SELECT s.app, s.function, s.idx, s.cron, s.timezone, s.data, s.next_at FROM (
                 SELECT app, function, idx, next_at,
                     row_number() OVER (PARTITION BY app ORDER BY next_at, function, idx) AS n
                 FROM {SYSTEM_SCHEMA}.schedules WHERE next_at <= $1) due
             JOIN {SYSTEM_SCHEMA}.schedules s USING (app, function, idx)
             WHERE due.n <= $3 ORDER BY due.next_at, due.app, due.function, due.idx LIMIT $2"
        );
        rows(&client, &sql, &[&now_ms, &limit, &per_app])
            .await?
            .iter()
            .map(schedule_from_row)
            .collect()
    }

    async fn advance_schedule(&self, row: &ScheduleRow, to_ms: i64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // One conditional update: a concurrent caller waits for the row, then finds it moved.
        let sql = format!(
            "UPDATE {SYSTEM_SCHEMA}.schedules SET next_at = $5
             WHERE app = $1 AND function = $2 AND idx = $3 AND next_at = $4"
        );
        let changed = execute(
            &client,
            &sql,
            &[
                &row.app.as_str(),
                &row.function,
                &row.index,
                &row.next_at_ms,
                &to_ms,
            ],
        )
        .await?;
        Ok(changed == 1)
    }

    async fn hint_due(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Relaxed: the write the hint announces commits after it, in the same WAL, and its
        // flush takes the hint to disk too.
        relaxed_execute(&client, &lower_hint_sql(), &[&app.as_str(), &at_ms]).await?;
        Ok(())
    }

    async fn hint_due_durably(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        execute(&client, &lower_hint_sql(), &[&app.as_str(), &at_ms]).await?;
        Ok(())
    }

    async fn due_apps(&self, now_ms: i64, limit: usize) -> Result<Vec<DueApp>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT app, at, version FROM {SYSTEM_SCHEMA}.due_work
             WHERE at <= $1 ORDER BY at LIMIT $2"
        );
        rows(&client, &sql, &[&now_ms, &(limit as i64)])
            .await?
            .iter()
            .map(|r| {
                let name: String = r.try_get(0)?;
                Ok(DueApp {
                    app: AppName::parse(&name)
                        .map_err(|e| StoreError::Task(format!("stored app name {name:?}: {e}")))?,
                    at_ms: r.try_get(1)?,
                    version: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn settle_due(
        &self,
        app: &AppName,
        version: i64,
        next: Option<i64>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        // Relaxed: a settle lost to a crash leaves the hint early, never late.
        let changed = match next {
            Some(at) => {
                let sql = format!(
                    "UPDATE {SYSTEM_SCHEMA}.due_work SET at = $3 WHERE app = $1 AND version = $2"
                );
                relaxed_execute(&client, &sql, &[&app.as_str(), &version, &at]).await?
            }
            None => {
                let sql =
                    format!("DELETE FROM {SYSTEM_SCHEMA}.due_work WHERE app = $1 AND version = $2");
                relaxed_execute(&client, &sql, &[&app.as_str(), &version]).await?
            }
        };
        Ok(changed == 1)
    }

    async fn next_hint(&self) -> Result<Option<i64>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT min(at) FROM {SYSTEM_SCHEMA}.due_work");
        Ok(row(&client, &sql, &[])
            .await?
            .and_then(|r| r.get::<_, Option<i64>>(0)))
    }

    async fn signing_keys(&self, app: &AppName) -> Result<Vec<SigningKeyRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT kid, secret, created_at FROM {SYSTEM_SCHEMA}.app_signing_keys
             WHERE app = $1 ORDER BY created_at DESC"
        );
        rows(&client, &sql, &[&app.as_str()])
            .await?
            .iter()
            .map(|r| {
                Ok(SigningKeyRow {
                    kid: r.try_get(0)?,
                    secret: r.try_get(1)?,
                    created_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn close(&self) {
        // Nothing of the control plane's own: the pool is shared with the apps and closed by
        // `TenantStore::close_all`.
    }
}
