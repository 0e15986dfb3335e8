//! [`FileStore`] on PostgreSQL, in each app's schema. As on SQLite, the trigger `_files_gone`
//! puts every deleted file's id into `_blob_trash` and uncounts a ready file's bytes, whatever
//! deleted the row. Completing uploads of one owner at once is safe across nodes: the usage
//! upserts lock the owner's and the app's lines until the transaction ends, so each completion
//! checks its quota against every completion committed before it.

use async_trait::async_trait;
use tokio_postgres::Row;

use cloudlet_query::Dialect;

use super::records::record_event;
use super::{Postgres, execute, params, refs, row, rows, schema};
use crate::files::{
    APP_USAGE, BucketRow, FILE_DELETED, FILE_UPLOADED, FileQuery, FileQuota, FileRow, FileStore,
    FileUsage, NewFile, StoredBytes, file_event,
};
use crate::{AppName, Condition, Emit, SqlValue, StoreError};

pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._buckets (
        name        text COLLATE \"C\" PRIMARY KEY,
        settings    text NOT NULL,
        created_at  bigint NOT NULL,
        updated_at  bigint NOT NULL
    );
    CREATE TABLE {s}._files (
        id          text COLLATE \"C\" PRIMARY KEY,
        bucket      text COLLATE \"C\" NOT NULL REFERENCES {s}._buckets(name) ON DELETE CASCADE,
        owner       text REFERENCES {s}.users(id) ON DELETE CASCADE,
        name        text NOT NULL,
        type        text NOT NULL DEFAULT '',
        size        bigint NOT NULL DEFAULT 0,
        sha256      text NOT NULL DEFAULT '',
        metadata    jsonb NOT NULL,
        ready       boolean NOT NULL DEFAULT false,
        created_at  bigint NOT NULL,
        updated_at  bigint NOT NULL
    );
    CREATE INDEX _files_by_bucket ON {s}._files (bucket, created_at DESC, id DESC) WHERE ready;
    CREATE INDEX _files_by_owner ON {s}._files (owner, bucket, created_at DESC, id DESC);
    CREATE INDEX _files_pending ON {s}._files (created_at) WHERE NOT ready;
    CREATE TABLE {s}._file_usage (
        owner  text PRIMARY KEY,
        bytes  bigint NOT NULL,
        files  bigint NOT NULL
    );
    CREATE TABLE {s}._blob_trash (file_id text COLLATE \"C\" PRIMARY KEY);
    CREATE FUNCTION {s}._files_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}._blob_trash (file_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
        -- The app's line before the owner's, in the order completions lock them: no deadlock.
        IF OLD.ready THEN
            UPDATE {s}._file_usage SET bytes = bytes - OLD.size, files = files - 1
            WHERE owner = '';
            UPDATE {s}._file_usage SET bytes = bytes - OLD.size, files = files - 1
            WHERE owner = OLD.owner;
        END IF;
        RETURN OLD;
    END $$;
    CREATE TRIGGER _files_gone AFTER DELETE ON {s}._files
        FOR EACH ROW EXECUTE FUNCTION {s}._files_gone();
";

/// Step two: thumbnails' bytes, kept on their file's row and counted in the app's usage (not
/// the owner's: a user chooses neither their number nor their size).
pub(super) const THUMBS: &str = "
    ALTER TABLE {s}._files ADD COLUMN thumb_bytes bigint NOT NULL DEFAULT 0;
    CREATE OR REPLACE FUNCTION {s}._files_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO {s}._blob_trash (file_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
        -- The app's line before the owner's, in the order completions lock them: no deadlock.
        IF OLD.ready THEN
            UPDATE {s}._file_usage
            SET bytes = bytes - OLD.size - OLD.thumb_bytes, files = files - 1
            WHERE owner = '';
            UPDATE {s}._file_usage SET bytes = bytes - OLD.size, files = files - 1
            WHERE owner = OLD.owner;
        END IF;
        RETURN OLD;
    END $$;
";

/// `metadata` is `jsonb` (so that rules reach into it as into a record's JSON field), read back
/// as text.
const FILE_COLUMNS: &str =
    "id, bucket, owner, name, type, size, sha256, metadata::text, created_at, updated_at";

fn file_from_row(r: &Row) -> Result<FileRow, StoreError> {
    Ok(FileRow {
        id: r.try_get(0)?,
        bucket: r.try_get(1)?,
        owner: r.try_get(2)?,
        name: r.try_get(3)?,
        content_type: r.try_get(4)?,
        size: r.try_get(5)?,
        sha256: r.try_get(6)?,
        metadata: r.try_get(7)?,
        created_at_ms: r.try_get(8)?,
        updated_at_ms: r.try_get(9)?,
    })
}

fn bucket_from_row(r: &Row) -> Result<BucketRow, StoreError> {
    Ok(BucketRow {
        name: r.try_get(0)?,
        settings: r.try_get(1)?,
        created_at_ms: r.try_get(2)?,
        updated_at_ms: r.try_get(3)?,
    })
}

/// [`StoreError::CheckFailed`] unless `check` holds for file `id` (ready or not).
async fn holds(
    tx: &deadpool_postgres::Transaction<'_>,
    s: &str,
    id: &str,
    check: &Condition,
) -> Result<(), StoreError> {
    let (condition, mut values) = check.to_sql(Dialect::Postgres, 1);
    values.insert(0, SqlValue::Text(id.to_owned()));
    let sql = format!("SELECT 1 FROM {s}._files WHERE id = $1 AND {condition}");
    let params = params(&values);
    match row(tx, &sql, &refs(&params)).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::CheckFailed),
    }
}

/// Counts `size` more bytes and one more file for `owner`; false if `bytes`/`files` would then
/// pass their limits.
async fn count(
    tx: &deadpool_postgres::Transaction<'_>,
    s: &str,
    owner: &str,
    size: i64,
    bytes: Option<i64>,
    files: Option<i64>,
) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO {s}._file_usage AS u (owner, bytes, files) VALUES ($1, $2, 1)
         ON CONFLICT (owner) DO UPDATE SET bytes = u.bytes + excluded.bytes, files = u.files + 1
         RETURNING bytes, files"
    );
    let held = row(tx, &sql, &[&owner, &size])
        .await?
        .ok_or(StoreError::NotFound)?;
    let (held_bytes, held_files): (i64, i64) = (held.try_get(0)?, held.try_get(1)?);
    Ok(bytes.is_none_or(|most| held_bytes <= most) && files.is_none_or(|most| held_files <= most))
}

#[async_trait]
impl FileStore for Postgres {
    async fn put_bucket(&self, app: &AppName, bucket: BucketRow) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {}._buckets (name, settings, created_at, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE
             SET settings = excluded.settings, updated_at = excluded.updated_at",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[
                &bucket.name,
                &bucket.settings,
                &bucket.created_at_ms,
                &bucket.updated_at_ms,
            ],
        )
        .await?;
        Ok(())
    }

    async fn bucket(&self, app: &AppName, name: &str) -> Result<Option<BucketRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, settings, created_at, updated_at FROM {}._buckets WHERE name = $1",
            schema(app)
        );
        row(&*client, &sql, &[&name])
            .await?
            .map(|r| bucket_from_row(&r))
            .transpose()
    }

    async fn buckets(&self, app: &AppName) -> Result<Vec<BucketRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, settings, created_at, updated_at FROM {}._buckets ORDER BY name",
            schema(app)
        );
        rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(bucket_from_row)
            .collect()
    }

    async fn delete_bucket(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!("DELETE FROM {}._buckets WHERE name = $1", schema(app));
        Ok(execute(&*client, &sql, &[&name]).await? == 1)
    }

    async fn begin_upload(
        &self,
        app: &AppName,
        file: NewFile,
        check: Condition,
    ) -> Result<(), StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "INSERT INTO {s}._files (id, bucket, owner, name, metadata, type, size,
                                     created_at, updated_at)
             SELECT $1, name, $3, $4, $5::text::jsonb, $6, $7, $8, $8
             FROM {s}._buckets WHERE name = $2"
        );
        let inserted = execute(
            &tx,
            &sql,
            &[
                &file.id,
                &file.bucket,
                &file.owner,
                &file.name,
                &file.metadata,
                &file.declared_type,
                &file.declared_size,
                &file.created_at_ms,
            ],
        )
        .await?;
        if inserted == 0 {
            return Err(StoreError::NotFound);
        }
        // Dropping the transaction rolls the insert back when the rule refuses.
        holds(&tx, &s, &file.id, &check).await?;
        tx.commit().await?;
        Ok(())
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
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "UPDATE {s}._files SET type = $2, size = $3, sha256 = $4, ready = true
             WHERE id = $1 AND NOT ready RETURNING {FILE_COLUMNS}"
        );
        let file = row(
            &tx,
            &sql,
            &[&id, &bytes.content_type, &bytes.size, &bytes.sha256],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        let file = file_from_row(&file)?;
        // Either refusal drops the transaction: nothing counted, the upload still pending.
        holds(&tx, &s, id, &check).await?;
        let mut within = count(
            &tx,
            &s,
            APP_USAGE,
            bytes.size,
            quota.app_bytes,
            quota.app_files,
        )
        .await?;
        if let Some(owner) = &file.owner {
            within &= count(
                &tx,
                &s,
                owner,
                bytes.size,
                quota.owner_bytes,
                quota.owner_files,
            )
            .await?;
        }
        if !within {
            return Err(StoreError::OverQuota);
        }
        if let Some(emit) = &emit {
            let (key, payload) = file_event(&file);
            record_event(&tx, &s, FILE_UPLOADED, &key, &payload, emit).await?;
        }
        tx.commit().await?;
        Ok(file)
    }

    async fn abandon_upload(&self, app: &AppName, id: &str) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "DELETE FROM {}._files WHERE id = $1 AND NOT ready",
            schema(app)
        );
        Ok(execute(&*client, &sql, &[&id]).await? == 1)
    }

    async fn file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
    ) -> Result<Option<FileRow>, StoreError> {
        let client = self.app_client(app).await?;
        let (condition, mut values) = condition.to_sql(Dialect::Postgres, 1);
        values.insert(0, SqlValue::Text(id.to_owned()));
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM {}._files WHERE id = $1 AND ready AND {condition}",
            schema(app)
        );
        let params = params(&values);
        row(&*client, &sql, &refs(&params))
            .await?
            .map(|r| file_from_row(&r))
            .transpose()
    }

    async fn files_by_id(
        &self,
        app: &AppName,
        ids: Vec<String>,
    ) -> Result<Vec<FileRow>, StoreError> {
        let client = self.app_client(app).await?;
        let (condition, values) = Condition::always()
            .and_id_in(ids)
            .to_sql(Dialect::Postgres, 0);
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM {}._files WHERE ready AND {condition}",
            schema(app)
        );
        let params = params(&values);
        rows(&*client, &sql, &refs(&params))
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    async fn files(
        &self,
        app: &AppName,
        query: FileQuery,
        condition: Condition,
    ) -> Result<Vec<FileRow>, StoreError> {
        let client = self.app_client(app).await?;
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
        let (condition, more) = condition.to_sql(Dialect::Postgres, values.len());
        values.extend(more);
        let sql = format!(
            "SELECT {FILE_COLUMNS} FROM {}._files
             WHERE bucket = $1 AND ready AND ($2::text IS NULL OR owner = $2::text)
               AND ($3::bigint IS NULL OR (created_at, id) < ($3::bigint, $4::text))
               AND {condition}
             ORDER BY created_at DESC, id DESC LIMIT $5::bigint",
            schema(app)
        );
        let params = params(&values);
        rows(&*client, &sql, &refs(&params))
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    async fn delete_file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<FileRow>, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let (condition, mut values) = condition.to_sql(Dialect::Postgres, 1);
        values.insert(0, SqlValue::Text(id.to_owned()));
        let sql = format!(
            "DELETE FROM {s}._files WHERE id = $1 AND ready AND {condition}
             RETURNING {FILE_COLUMNS}"
        );
        let params = params(&values);
        let gone = row(&tx, &sql, &refs(&params))
            .await?
            .map(|r| file_from_row(&r))
            .transpose()?;
        if let (Some(file), Some(emit)) = (&gone, &emit) {
            let (key, payload) = file_event(file);
            record_event(&tx, &s, FILE_DELETED, &key, &payload, emit).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    async fn count_thumb(&self, app: &AppName, id: &str, bytes: i64) -> Result<bool, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // The file's row, then the app's line: the order a deletion takes them in.
        let counted = tx
            .execute(
                &format!(
                    "UPDATE {s}._files SET thumb_bytes = thumb_bytes + $2 WHERE id = $1 AND ready"
                ),
                &[&id, &bytes],
            )
            .await?
            == 1;
        if counted {
            tx.execute(
                &format!("UPDATE {s}._file_usage SET bytes = bytes + $1 WHERE owner = ''"),
                &[&bytes],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(counted)
    }

    async fn file_usage(
        &self,
        app: &AppName,
        owner: Option<&str>,
    ) -> Result<FileUsage, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT bytes, files FROM {}._file_usage WHERE owner = $1",
            schema(app)
        );
        let owner = owner.unwrap_or(APP_USAGE);
        match row(&*client, &sql, &[&owner]).await? {
            Some(r) => Ok(FileUsage {
                bytes: r.try_get(0)?,
                files: r.try_get(1)?,
            }),
            None => Ok(FileUsage::default()),
        }
    }

    async fn drop_stale_uploads(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "DELETE FROM {}._files WHERE NOT ready AND created_at < $1",
            schema(app)
        );
        execute(&*client, &sql, &[&before_ms]).await
    }

    async fn trashed(&self, app: &AppName, limit: usize) -> Result<Vec<String>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT file_id FROM {}._blob_trash ORDER BY file_id LIMIT $1",
            schema(app)
        );
        rows(&*client, &sql, &[&(limit as i64)])
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    async fn forget_trashed(&self, app: &AppName, ids: Vec<String>) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "DELETE FROM {}._blob_trash WHERE file_id = ANY($1)",
            schema(app)
        );
        execute(&*client, &sql, &[&ids]).await?;
        Ok(())
    }
}
