//! [`FunctionStore`] on PostgreSQL, in each app's schema: functions, their versions, the
//! invocation log and the environment.
//!
//! Nodes deploy and log concurrently, so the read-modify-writes take locks: a deploy locks its
//! function's row before it picks the next version, and appends to an app's log take turns, so
//! that ids commit in order (a reader paging after an id never misses a later commit) and
//! trimming keeps exactly the newest `keep`.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, execute, relax_commit, row, rows, schema};
use crate::functions::{
    FunctionLogRow, FunctionRow, FunctionStore, FunctionVersionRow, LogQuery, MAX_FUNCTIONS_PER_APP,
};
use crate::{AppName, StoreError};

pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._functions (
        name        text COLLATE \"C\" PRIMARY KEY,
        version     bigint NOT NULL,
        settings    text NOT NULL,
        updated_at  bigint NOT NULL
    );
    CREATE TABLE {s}._function_versions (
        name        text COLLATE \"C\" NOT NULL,
        version     bigint NOT NULL,
        source      text NOT NULL,
        bundle      text NOT NULL,
        created_at  bigint NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE {s}._function_logs (
        id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at           bigint NOT NULL,
        request_id   text NOT NULL,
        function     text NOT NULL,
        version      bigint NOT NULL,
        trigger      text NOT NULL,
        outcome      text NOT NULL,
        micros       bigint NOT NULL,
        memory       bigint NOT NULL,
        cold         boolean NOT NULL,
        detail       text NOT NULL
    );
    CREATE INDEX _function_logs_by_function ON {s}._function_logs (function, id);
    CREATE TABLE {s}._env (
        name    text COLLATE \"C\" PRIMARY KEY,
        sealed  bytea NOT NULL
    );
";

fn function_from_row(r: &Row) -> Result<FunctionRow, StoreError> {
    Ok(FunctionRow {
        name: r.try_get(0)?,
        version: r.try_get(1)?,
        settings: r.try_get(2)?,
        updated_at_ms: r.try_get(3)?,
    })
}

fn log_from_row(r: &Row) -> Result<FunctionLogRow, StoreError> {
    Ok(FunctionLogRow {
        id: r.try_get(0)?,
        at_ms: r.try_get(1)?,
        request_id: r.try_get(2)?,
        function: r.try_get(3)?,
        version: r.try_get(4)?,
        trigger: r.try_get(5)?,
        outcome: r.try_get(6)?,
        micros: r.try_get(7)?,
        memory_bytes: r.try_get(8)?,
        cold: r.try_get(9)?,
        detail: r.try_get(10)?,
    })
}

#[async_trait]
impl FunctionStore for Postgres {
    async fn deploy_function(
        &self,
        app: &AppName,
        name: &str,
        settings: String,
        version: FunctionVersionRow,
    ) -> Result<i64, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // A new function counts against the app's: one deploy of a new name at a time (deploys
        // are rare), so that concurrent ones can not each see room for one more.
        let exists = format!("SELECT 1 FROM {s}._functions WHERE name = $1");
        if row(&tx, &exists, &[&name]).await?.is_none() {
            execute(
                &tx,
                &format!("LOCK TABLE {s}._functions IN SHARE ROW EXCLUSIVE MODE"),
                &[],
            )
            .await?;
            // Another deploy of the same name may have made it meanwhile: that is a redeploy.
            let count = format!("SELECT count(*) FROM {s}._functions WHERE name <> $1");
            let held: i64 = match row(&tx, &count, &[&name]).await? {
                Some(r) => r.try_get(0)?,
                None => 0,
            };
            if held >= MAX_FUNCTIONS_PER_APP as i64 {
                return Err(StoreError::OverQuota);
            }
        }
        // Creating or updating the function's row first locks it: a concurrent deploy of the
        // same function waits here, then reads the versions this one committed.
        let upsert = format!(
            "INSERT INTO {s}._functions (name, version, settings, updated_at) VALUES ($1, 0, $2, $3)
             ON CONFLICT (name) DO UPDATE SET settings = excluded.settings,
               updated_at = excluded.updated_at"
        );
        execute(&tx, &upsert, &[&name, &settings, &version.created_at_ms]).await?;
        let sql = format!(
            "SELECT coalesce(max(version), 0) + 1 FROM {s}._function_versions WHERE name = $1"
        );
        let next: i64 = match row(&tx, &sql, &[&name]).await? {
            Some(r) => r.try_get(0)?,
            None => 1,
        };
        let sql = format!(
            "INSERT INTO {s}._function_versions (name, version, source, bundle, created_at)
             VALUES ($1, $2, $3, $4, $5)"
        );
        execute(
            &tx,
            &sql,
            &[
                &name,
                &next,
                &version.source,
                &version.bundle,
                &version.created_at_ms,
            ],
        )
        .await?;
        let sql = format!("UPDATE {s}._functions SET version = $2 WHERE name = $1");
        execute(&tx, &sql, &[&name, &next]).await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn function(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Option<(FunctionRow, FunctionVersionRow)>, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT f.name, f.version, f.settings, f.updated_at, v.source, v.bundle, v.created_at
             FROM {s}._functions f
             JOIN {s}._function_versions v ON v.name = f.name AND v.version = f.version
             WHERE f.name = $1"
        );
        row(&*client, &sql, &[&name])
            .await?
            .map(|r| {
                Ok((
                    function_from_row(&r)?,
                    FunctionVersionRow {
                        version: r.try_get(1)?,
                        source: r.try_get(4)?,
                        bundle: r.try_get(5)?,
                        created_at_ms: r.try_get(6)?,
                    },
                ))
            })
            .transpose()
    }

    async fn functions(&self, app: &AppName) -> Result<Vec<FunctionRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, version, settings, updated_at FROM {}._functions ORDER BY name",
            schema(app)
        );
        rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(function_from_row)
            .collect()
    }

    async fn function_versions(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT version, created_at FROM {}._function_versions WHERE name = $1
             ORDER BY version DESC",
            schema(app)
        );
        rows(&*client, &sql, &[&name])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    async fn activate_version(
        &self,
        app: &AppName,
        name: &str,
        version: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {s}._functions SET version = $2, updated_at = $3 WHERE name = $1
             AND EXISTS (SELECT 1 FROM {s}._function_versions WHERE name = $1 AND version = $2)"
        );
        Ok(execute(&*client, &sql, &[&name, &version, &at_ms]).await? == 1)
    }

    async fn delete_function(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // The function's row first, as a deploy locks it: the versions are then deleted after
        // any deploy in flight has committed, and none is left behind.
        let sql = format!("DELETE FROM {s}._functions WHERE name = $1");
        let deleted = execute(&tx, &sql, &[&name]).await? == 1;
        let sql = format!("DELETE FROM {s}._function_versions WHERE name = $1");
        execute(&tx, &sql, &[&name]).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn append_logs(
        &self,
        app: &AppName,
        entries: Vec<FunctionLogRow>,
        keep: i64,
    ) -> Result<(), StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // Relaxed: logs lost to a crash of PostgreSQL are only logs.
        relax_commit(&tx).await?;
        // Appends take turns (reads go on): ids are then committed in the order they are
        // drawn, as on SQLite's one writer.
        let sql = format!("LOCK TABLE {s}._function_logs IN EXCLUSIVE MODE");
        execute(&tx, &sql, &[]).await?;
        // One statement for the batch, its columns as arrays, inserted in the batch's order.
        let sql = format!(
            "INSERT INTO {s}._function_logs
             (at, request_id, function, version, trigger, outcome, micros, memory, cold, detail)
             SELECT e.at, e.request_id, e.function, e.version, e.trigger, e.outcome, e.micros,
                 e.memory, e.cold, e.detail
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                 $6::text[], $7::bigint[], $8::bigint[], $9::boolean[], $10::text[])
                 WITH ORDINALITY AS e (at, request_id, function, version, trigger, outcome,
                     micros, memory, cold, detail, n)
             ORDER BY e.n"
        );
        let at: Vec<i64> = entries.iter().map(|e| e.at_ms).collect();
        let request_id: Vec<&str> = entries.iter().map(|e| e.request_id.as_str()).collect();
        let function: Vec<&str> = entries.iter().map(|e| e.function.as_str()).collect();
        let version: Vec<i64> = entries.iter().map(|e| e.version).collect();
        let trigger: Vec<&str> = entries.iter().map(|e| e.trigger.as_str()).collect();
        let outcome: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
        let micros: Vec<i64> = entries.iter().map(|e| e.micros).collect();
        let memory: Vec<i64> = entries.iter().map(|e| e.memory_bytes).collect();
        let cold: Vec<bool> = entries.iter().map(|e| e.cold).collect();
        let detail: Vec<&str> = entries.iter().map(|e| e.detail.as_str()).collect();
        let params: [&(dyn ToSql + Sync); 10] = [
            &at,
            &request_id,
            &function,
            &version,
            &trigger,
            &outcome,
            &micros,
            &memory,
            &cold,
            &detail,
        ];
        execute(&tx, &sql, &params).await?;
        // The newest `keep` stay. Identity ids can have gaps (a rolled back append), so the
        // cut is counted in rows rather than computed from the largest id.
        let sql = format!(
            "DELETE FROM {s}._function_logs WHERE id <= (SELECT id FROM {s}._function_logs
             ORDER BY id DESC OFFSET greatest($1::bigint, 0) LIMIT 1)"
        );
        execute(&tx, &sql, &[&keep]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn function_logs(
        &self,
        app: &AppName,
        query: LogQuery,
    ) -> Result<Vec<FunctionLogRow>, StoreError> {
        let client = self.app_client(app).await?;
        // Only the filters given are in the statement, so that each shape gets its own plan.
        let mut conditions = Vec::new();
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
        let filters: [(&str, Option<&(dyn ToSql + Sync)>); 4] = [
            ("function =", query.function.as_ref().map(|v| v as _)),
            ("outcome =", query.outcome.as_ref().map(|v| v as _)),
            ("id <", query.before_id.as_ref().map(|v| v as _)),
            ("id >", query.after_id.as_ref().map(|v| v as _)),
        ];
        for (test, value) in filters {
            if let Some(value) = value {
                params.push(value);
                conditions.push(format!("{test} ${}", params.len()));
            }
        }
        let limit = query.limit as i64;
        params.push(&limit);
        let sql = format!(
            "SELECT id, at, request_id, function, version, trigger, outcome, micros, memory,
                    cold, detail
             FROM {}._function_logs
             {}{}
             ORDER BY id {} LIMIT ${}",
            schema(app),
            if conditions.is_empty() { "" } else { "WHERE " },
            conditions.join(" AND "),
            if query.after_id.is_some() {
                "ASC"
            } else {
                "DESC"
            },
            params.len()
        );
        rows(&*client, &sql, &params)
            .await?
            .iter()
            .map(log_from_row)
            .collect()
    }

    async fn set_env(
        &self,
        app: &AppName,
        name: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        Ok(match &sealed {
            Some(sealed) => {
                let sql = format!(
                    "INSERT INTO {s}._env (name, sealed) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed"
                );
                execute(&*client, &sql, &[&name, sealed]).await?;
                true
            }
            None => {
                let sql = format!("DELETE FROM {s}._env WHERE name = $1");
                execute(&*client, &sql, &[&name]).await? == 1
            }
        })
    }

    async fn env(&self, app: &AppName) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, sealed FROM {}._env ORDER BY name",
            schema(app)
        );
        rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
