//! [`FunctionStore`] on SQLite, in each app's database.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteTenants;
use crate::functions::{
    FunctionLogRow, FunctionRow, FunctionStore, FunctionVersionRow, LogQuery, MAX_FUNCTIONS_PER_APP,
};
use crate::{AppName, StoreError};

pub(super) const MIGRATION: &str = "
    CREATE TABLE _functions (
        name        TEXT PRIMARY KEY,
        version     INTEGER NOT NULL,
        settings    TEXT NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE _function_versions (
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        source      TEXT NOT NULL,
        bundle      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (name, version)
    ) STRICT;
    CREATE TABLE _function_logs (
        id           INTEGER PRIMARY KEY,
        at           INTEGER NOT NULL,
        request_id   TEXT NOT NULL,
        function     TEXT NOT NULL,
        version      INTEGER NOT NULL,
        trigger      TEXT NOT NULL,
        outcome      TEXT NOT NULL,
        micros       INTEGER NOT NULL,
        memory       INTEGER NOT NULL,
        cold         INTEGER NOT NULL,
        detail       TEXT NOT NULL
    ) STRICT;
    CREATE INDEX _function_logs_by_function ON _function_logs (function, id);
    CREATE TABLE _env (
        name    TEXT PRIMARY KEY,
        sealed  BLOB NOT NULL
    ) STRICT;
";

fn log_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FunctionLogRow> {
    Ok(FunctionLogRow {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        request_id: r.get(2)?,
        function: r.get(3)?,
        version: r.get(4)?,
        trigger: r.get(5)?,
        outcome: r.get(6)?,
        micros: r.get(7)?,
        memory_bytes: r.get(8)?,
        cold: r.get(9)?,
        detail: r.get(10)?,
    })
}

#[async_trait]
impl FunctionStore for SqliteTenants {
    async fn deploy_function(
        &self,
        app: &AppName,
        name: &str,
        settings: String,
        version: FunctionVersionRow,
    ) -> Result<i64, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            // A new function counts against the app's (writes are one at a time here).
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM _functions WHERE name = ?1)",
                [&name],
                |r| r.get(0),
            )?;
            let held: i64 = c.query_row("SELECT count(*) FROM _functions", [], |r| r.get(0))?;
            if !exists && held >= MAX_FUNCTIONS_PER_APP as i64 {
                return Err(StoreError::OverQuota);
            }
            let next: i64 = c.query_row(
                "SELECT coalesce(max(version), 0) + 1 FROM _function_versions WHERE name = ?1",
                [&name],
                |r| r.get(0),
            )?;
            c.execute(
                "INSERT INTO _function_versions (name, version, source, bundle, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, next, version.source, version.bundle, version.created_at_ms],
            )?;
            c.execute(
                "INSERT INTO _functions (name, version, settings, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET version = excluded.version,
                   settings = excluded.settings, updated_at = excluded.updated_at",
                params![name, next, settings, version.created_at_ms],
            )?;
            Ok(next)
        })
        .await
    }

    async fn function(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Option<(FunctionRow, FunctionVersionRow)>, StoreError> {
        let name = name.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT f.name, f.version, f.settings, f.updated_at, v.source, v.bundle, v.created_at
                 FROM _functions f JOIN _function_versions v ON v.name = f.name AND v.version = f.version
                 WHERE f.name = ?1",
            )?
            .query_row([&name], |r| {
                Ok((
                    FunctionRow {
                        name: r.get(0)?,
                        version: r.get(1)?,
                        settings: r.get(2)?,
                        updated_at_ms: r.get(3)?,
                    },
                    FunctionVersionRow {
                        version: r.get(1)?,
                        source: r.get(4)?,
                        bundle: r.get(5)?,
                        created_at_ms: r.get(6)?,
                    },
                ))
            })
            .optional()?)
        })
        .await
    }

    async fn functions(&self, app: &AppName) -> Result<Vec<FunctionRow>, StoreError> {
        self.read_app(app, |c| {
            Ok(c.prepare_cached(
                "SELECT name, version, settings, updated_at FROM _functions ORDER BY name",
            )?
            .query_map([], |r| {
                Ok(FunctionRow {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    settings: r.get(2)?,
                    updated_at_ms: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn function_versions(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let name = name.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT version, created_at FROM _function_versions WHERE name = ?1
                 ORDER BY version DESC",
            )?
            .query_map([&name], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn activate_version(
        &self,
        app: &AppName,
        name: &str,
        version: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            Ok(c.execute(
                "UPDATE _functions SET version = ?2, updated_at = ?3 WHERE name = ?1
                 AND EXISTS (SELECT 1 FROM _function_versions WHERE name = ?1 AND version = ?2)",
                params![name, version, at_ms],
            )? == 1)
        })
        .await
    }

    async fn delete_function(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            c.execute("DELETE FROM _function_versions WHERE name = ?1", [&name])?;
            Ok(c.execute("DELETE FROM _functions WHERE name = ?1", [&name])? == 1)
        })
        .await
    }

    async fn append_logs(
        &self,
        app: &AppName,
        entries: Vec<FunctionLogRow>,
        keep: i64,
    ) -> Result<(), StoreError> {
        // Relaxed: logs lost to a power cut are only logs.
        self.write_app_relaxed(app, move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO _function_logs
                 (at, request_id, function, version, trigger, outcome, micros, memory, cold, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            for e in &entries {
                insert.execute(params![
                    e.at_ms,
                    e.request_id,
                    e.function,
                    e.version,
                    e.trigger,
                    e.outcome,
                    e.micros,
                    e.memory_bytes,
                    e.cold,
                    e.detail
                ])?;
            }
            c.prepare_cached(
                "DELETE FROM _function_logs WHERE id <= (SELECT max(id) FROM _function_logs) - ?1",
            )?
            .execute([keep])?;
            Ok(())
        })
        .await
    }

    async fn function_logs(
        &self,
        app: &AppName,
        query: LogQuery,
    ) -> Result<Vec<FunctionLogRow>, StoreError> {
        self.read_app(app, move |c| {
            let ascending = query.after_id.is_some();
            let sql = format!(
                "SELECT id, at, request_id, function, version, trigger, outcome, micros, memory,
                        cold, detail
                 FROM _function_logs
                 WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR outcome = ?2)
                   AND (?3 IS NULL OR id < ?3) AND (?4 IS NULL OR id > ?4)
                 ORDER BY id {} LIMIT ?5",
                if ascending { "ASC" } else { "DESC" }
            );
            Ok(c.prepare_cached(&sql)?
                .query_map(
                    params![
                        query.function,
                        query.outcome,
                        query.before_id,
                        query.after_id,
                        query.limit as i64
                    ],
                    log_from_row,
                )?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_env(
        &self,
        app: &AppName,
        name: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            Ok(match &sealed {
                Some(sealed) => {
                    c.execute(
                        "INSERT INTO _env (name, sealed) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed",
                        params![name, sealed],
                    )?;
                    true
                }
                None => c.execute("DELETE FROM _env WHERE name = ?1", [&name])? == 1,
            })
        })
        .await
    }

    async fn env(&self, app: &AppName) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read_app(app, |c| {
            Ok(
                c.prepare_cached("SELECT name, sealed FROM _env ORDER BY name")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?,
            )
        })
        .await
    }
}
