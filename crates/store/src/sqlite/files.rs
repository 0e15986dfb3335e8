//! [`FileStore`] on SQLite, in each app's database. The trigger `_files_gone` puts every
//! deleted file's id into `_blob_trash` and uncounts a ready file's bytes, whatever deleted the
//! row (a cascade from `users` or `_buckets` included).

use async_trait::async_trait;
use cloudlet_query::Dialect;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteTenants;
use super::records::{bind, record_event};
use crate::files::{
    APP_USAGE, BucketRow, FILE_DELETED, FILE_UPLOADED, FileQuery, FileQuota, FileRow, FileStore,
    FileUsage, NewFile, StoredBytes, file_event,
};
use crate::{AppName, Condition, Emit, SqlValue, StoreError};

pub(super) const MIGRATION: &str = "
    CREATE TABLE _buckets (
        name        TEXT PRIMARY KEY,
        settings    TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE _files (
        id          TEXT PRIMARY KEY,
        bucket      TEXT NOT NULL REFERENCES _buckets(name) ON DELETE CASCADE,
        owner       TEXT REFERENCES users(id) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        type        TEXT NOT NULL DEFAULT '',
        size        INTEGER NOT NULL DEFAULT 0,
        sha256      TEXT NOT NULL DEFAULT '',
        metadata    TEXT NOT NULL,
        ready       INTEGER NOT NULL DEFAULT 0,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX _files_by_bucket ON _files (bucket, created_at DESC, id DESC) WHERE ready = 1;
    CREATE INDEX _files_by_owner ON _files (owner, bucket, created_at DESC, id DESC);
    CREATE INDEX _files_pending ON _files (created_at) WHERE ready = 0;
    CREATE TABLE _file_usage (
        owner  TEXT PRIMARY KEY,
        bytes  INTEGER NOT NULL,
        files  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE _blob_trash (file_id TEXT PRIMARY KEY) STRICT;
    CREATE TRIGGER _files_gone AFTER DELETE ON _files BEGIN
        INSERT OR IGNORE INTO _blob_trash (file_id) VALUES (OLD.id);
        UPDATE _file_usage SET bytes = bytes - OLD.size, files = files - 1
        WHERE OLD.ready = 1 AND (owner = '' OR owner = OLD.owner);
    END;
";

/// Step two: thumbnails' bytes, kept on their file's row and counted in the app's usage (not
/// the owner's: a user chooses neither their number nor their size).
pub(super) const THUMBS: &str = "
    ALTER TABLE _files ADD COLUMN thumb_bytes INTEGER NOT NULL DEFAULT 0;
    DROP TRIGGER _files_gone;
    CREATE TRIGGER _files_gone AFTER DELETE ON _files BEGIN
        INSERT OR IGNORE INTO _blob_trash (file_id) VALUES (OLD.id);
        UPDATE _file_usage SET bytes = bytes - OLD.size - OLD.thumb_bytes, files = files - 1
        WHERE OLD.ready = 1 AND owner = '';
        UPDATE _file_usage SET bytes = bytes - OLD.size, files = files - 1
        WHERE OLD.ready = 1 AND owner = OLD.owner;
    END;
";

const FILE_COLUMNS: &str =
    "id, bucket, owner, name, type, size, sha256, metadata, created_at, updated_at";

fn file_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    Ok(FileRow {
        id: r.get(0)?,
        bucket: r.get(1)?,
        owner: r.get(2)?,
        name: r.get(3)?,
        content_type: r.get(4)?,
        size: r.get(5)?,
        sha256: r.get(6)?,
        metadata: r.get(7)?,
        created_at_ms: r.get(8)?,
        updated_at_ms: r.get(9)?,
    })
}

fn bucket_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BucketRow> {
    Ok(BucketRow {
        name: r.get(0)?,
        settings: r.get(1)?,
        created_at_ms: r.get(2)?,
        updated_at_ms: r.get(3)?,
    })
}

fn select_file(
    c: &Connection,
    id: &str,
    condition: &Condition,
) -> Result<Option<FileRow>, StoreError> {
    let (condition, mut values) = condition.to_sql(Dialect::Sqlite, 1);
    values.insert(0, SqlValue::Text(id.to_owned()));
    Ok(c.prepare_cached(&format!(
        "SELECT {FILE_COLUMNS} FROM _files WHERE id = ?1 AND ready = 1 AND {condition}"
    ))?
    .query_row(bind(&values), file_from_row)
    .optional()?)
}

/// [`StoreError::CheckFailed`] unless `check` holds for file `id` (ready or not).
fn holds(c: &Connection, id: &str, check: &Condition) -> Result<(), StoreError> {
    let (condition, mut values) = check.to_sql(Dialect::Sqlite, 1);
    values.insert(0, SqlValue::Text(id.to_owned()));
    let found = c
        .prepare_cached(&format!(
            "SELECT 1 FROM _files WHERE id = ?1 AND {condition}"
        ))?
        .query_row(bind(&values), |_| Ok(()))
        .optional()?;
    found.ok_or(StoreError::CheckFailed)
}

/// Counts `size` more bytes and one more file for `owner`; false if `bytes`/`files` would then
/// pass their limits.
fn count(
    c: &Connection,
    owner: &str,
    size: i64,
    bytes: Option<i64>,
    files: Option<i64>,
) -> Result<bool, StoreError> {
    let (held_bytes, held_files): (i64, i64) = c
        .prepare_cached(
            "INSERT INTO _file_usage (owner, bytes, files) VALUES (?1, ?2, 1)
             ON CONFLICT (owner) DO UPDATE
             SET bytes = bytes + excluded.bytes, files = files + 1
             RETURNING bytes, files",
        )?
        .query_row(params![owner, size], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(bytes.is_none_or(|most| held_bytes <= most) && files.is_none_or(|most| held_files <= most))
}

#[async_trait]
impl FileStore for SqliteTenants {
    async fn put_bucket(&self, app: &AppName, bucket: BucketRow) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.prepare_cached(
                "INSERT INTO _buckets (name, settings, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE
                 SET settings = excluded.settings, updated_at = excluded.updated_at",
            )?
            .execute(params![
                bucket.name,
                bucket.settings,
                bucket.created_at_ms,
                bucket.updated_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    async fn bucket(&self, app: &AppName, name: &str) -> Result<Option<BucketRow>, StoreError> {
        let name = name.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT name, settings, created_at, updated_at FROM _buckets WHERE name = ?1",
            )?
            .query_row([&name], bucket_from_row)
            .optional()?)
        })
        .await
    }

    async fn buckets(&self, app: &AppName) -> Result<Vec<BucketRow>, StoreError> {
        self.read_app(app, |c| {
            Ok(c.prepare_cached(
                "SELECT name, settings, created_at, updated_at FROM _buckets ORDER BY name",
            )?
            .query_map([], bucket_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_bucket(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            Ok(c.prepare_cached("DELETE FROM _buckets WHERE name = ?1")?
                .execute([&name])?
                == 1)
        })
        .await
    }

    async fn begin_upload(
        &self,
        app: &AppName,
        file: NewFile,
        check: Condition,
    ) -> Result<(), StoreError> {
        let id = file.id.clone();
        self.write_app(app, move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO _files (id, bucket, owner, name, metadata, type, size,
                                         created_at, updated_at)
                     SELECT ?1, name, ?3, ?4, ?5, ?6, ?7, ?8, ?8 FROM _buckets WHERE name = ?2",
                )?
                .execute(params![
                    file.id,
                    file.bucket,
                    file.owner,
                    file.name,
                    file.metadata,
                    file.declared_type,
                    file.declared_size,
                    file.created_at_ms
                ])
                .map_err(super::from_write)?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            // The savepoint rolls the insert back when the rule refuses.
            holds(c, &id, &check)
        })
        .await
    }

    async fn complete_upload(
        &self,
        app: &AppName,
        id: &str,
        bytes: StoredBytes,
        quota: FileQuota,
        check: Condition,
        emit: Option<Emit>,
    ) -> Result<FileRow, StoreError> {
        let id = id.to_owned();
        self.write_app(app, move |c| {
            let owner: Option<String> = c
                .prepare_cached(
                    "UPDATE _files SET type = ?2, size = ?3, sha256 = ?4, ready = 1
                     WHERE id = ?1 AND ready = 0 RETURNING owner",
                )?
                .query_row(
                    params![id, bytes.content_type, bytes.size, bytes.sha256],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(StoreError::NotFound)?;
            // Either refusal rolls the savepoint back: nothing counted, the upload pending.
            holds(c, &id, &check)?;
            let mut within = count(c, APP_USAGE, bytes.size, quota.app_bytes, quota.app_files)?;
            if let Some(owner) = &owner {
                within &= count(c, owner, bytes.size, quota.owner_bytes, quota.owner_files)?;
            }
            if !within {
                return Err(StoreError::OverQuota);
            }
            let file = select_file(c, &id, &Condition::always())?.ok_or(StoreError::NotFound)?;
            if let Some(emit) = &emit {
                let (key, payload) = file_event(&file);
                record_event(c, FILE_UPLOADED, &key, &payload, emit)?;
            }
            Ok(file)
        })
        .await
    }

    async fn abandon_upload(&self, app: &AppName, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write_app(app, move |c| {
            let removed = c
                .prepare_cached("DELETE FROM _files WHERE id = ?1 AND ready = 0")?
                .execute([&id])?;
            Ok(removed == 1)
        })
        .await
    }

    async fn file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
    ) -> Result<Option<FileRow>, StoreError> {
        let id = id.to_owned();
        self.read_app(app, move |c| select_file(c, &id, &condition))
            .await
    }

    async fn files_by_id(
        &self,
        app: &AppName,
        ids: Vec<String>,
    ) -> Result<Vec<FileRow>, StoreError> {
        let (condition, values) = Condition::always()
            .and_id_in(ids)
            .to_sql(Dialect::Sqlite, 0);
        let sql = format!("SELECT {FILE_COLUMNS} FROM _files WHERE ready = 1 AND {condition}");
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(&sql)?
                .query_map(bind(&values), file_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn files(
        &self,
        app: &AppName,
        query: FileQuery,
        condition: Condition,
    ) -> Result<Vec<FileRow>, StoreError> {
        let (after_at, after_id) = query
            .after
            .map_or((SqlValue::Null, SqlValue::Null), |(at, id)| {
                (SqlValue::Int(at), SqlValue::Text(id))
            });
        let mut values = vec![
            SqlValue::Text(query.bucket),
            query.owner.map_or(SqlValue::Null, SqlValue::Text),
            after_at,
            after_id,
            SqlValue::Int(query.limit as i64),
        ];
        let (condition, more) = condition.to_sql(Dialect::Sqlite, values.len());
        values.extend(more);
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM _files
             WHERE bucket = ?1 AND ready = 1 AND (?2 IS NULL OR owner = ?2)
               AND (?3 IS NULL OR (created_at, id) < (?3, ?4)) AND {condition}
             ORDER BY created_at DESC, id DESC LIMIT ?5"
        );
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(&sql)?
                .query_map(bind(&values), file_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn delete_file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<FileRow>, StoreError> {
        let (condition, mut values) = condition.to_sql(Dialect::Sqlite, 1);
        values.insert(0, SqlValue::Text(id.to_owned()));
        let sql = format!(
            "DELETE FROM _files WHERE id = ?1 AND ready = 1 AND {condition}
             RETURNING {FILE_COLUMNS}"
        );
        self.write_app(app, move |c| {
            let gone = c
                .prepare_cached(&sql)?
                .query_row(bind(&values), file_from_row)
                .optional()?;
            if let (Some(file), Some(emit)) = (&gone, &emit) {
                let (key, payload) = file_event(file);
                record_event(c, FILE_DELETED, &key, &payload, emit)?;
            }
            Ok(gone)
        })
        .await
    }

    async fn count_thumb(&self, app: &AppName, id: &str, bytes: i64) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write_app(app, move |c| {
            let counted = c
                .prepare_cached(
                    "UPDATE _files SET thumb_bytes = thumb_bytes + ?2 WHERE id = ?1 AND ready = 1",
                )?
                .execute(params![id, bytes])?
                == 1;
            if counted {
                c.prepare_cached("UPDATE _file_usage SET bytes = bytes + ?1 WHERE owner = ''")?
                    .execute(params![bytes])?;
            }
            Ok(counted)
        })
        .await
    }

    async fn file_usage(
        &self,
        app: &AppName,
        owner: Option<&str>,
    ) -> Result<FileUsage, StoreError> {
        let owner = owner.unwrap_or(APP_USAGE).to_owned();
        self.read_app(app, move |c| {
            Ok(
                c.prepare_cached("SELECT bytes, files FROM _file_usage WHERE owner = ?1")?
                    .query_row([&owner], |r| {
                        Ok(FileUsage {
                            bytes: r.get(0)?,
                            files: r.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default(),
            )
        })
        .await
    }

    async fn drop_stale_uploads(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        self.write_app(app, move |c| {
            Ok(
                c.prepare_cached("DELETE FROM _files WHERE ready = 0 AND created_at < ?1")?
                    .execute([before_ms])? as u64,
            )
        })
        .await
    }

    async fn trashed(&self, app: &AppName, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read_app(app, move |c| {
            Ok(
                c.prepare_cached("SELECT file_id FROM _blob_trash ORDER BY file_id LIMIT ?1")?
                    .query_map([limit as i64], |r| r.get(0))?
                    .collect::<Result<_, _>>()?,
            )
        })
        .await
    }

    async fn forget_trashed(&self, app: &AppName, ids: Vec<String>) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            let mut delete = c.prepare_cached("DELETE FROM _blob_trash WHERE file_id = ?1")?;
            for id in &ids {
                delete.execute([id])?;
            }
            Ok(())
        })
        .await
    }
}
