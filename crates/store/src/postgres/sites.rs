//! [`SiteStore`] on PostgreSQL, in each app's schema: the static site's files and their
//! content. A put counts the site and stores the file in one transaction that holds the
//! table's lock against other puts (reads go on), so that nodes putting at once can not pass a
//! site's room together; a delete is one statement.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Postgres, execute, row, rows, schema};
use crate::sites::{SiteFile, SitePut, SiteRoom, SiteStore};
use crate::{AppName, StoreError};

/// Paths are `COLLATE "C"`, so that files list in byte order as in SQLite.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._site_files (
        path          text COLLATE \"C\" PRIMARY KEY,
        content_type  text NOT NULL,
        sha256        text NOT NULL,
        size          bigint NOT NULL,
        updated_at    bigint NOT NULL,
        content       bytea NOT NULL
    );
";

fn file_from_row(r: &Row) -> Result<SiteFile, StoreError> {
    Ok(SiteFile {
        path: r.try_get(0)?,
        content_type: r.try_get(1)?,
        sha256: r.try_get(2)?,
        size: r.try_get(3)?,
        updated_at_ms: r.try_get(4)?,
    })
}

#[async_trait]
impl SiteStore for Postgres {
    async fn site_files(&self, app: &AppName) -> Result<Vec<SiteFile>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT path, content_type, sha256, size, updated_at FROM {}._site_files ORDER BY path",
            schema(app)
        );
        rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(file_from_row)
            .collect()
    }

    async fn site_file_info(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<SiteFile>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT path, content_type, sha256, size, updated_at FROM {}._site_files
             WHERE path = $1",
            schema(app)
        );
        row(&*client, &sql, &[&path])
            .await?
            .map(|r| file_from_row(&r))
            .transpose()
    }

    async fn site_file(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<(SiteFile, Vec<u8>)>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT path, content_type, sha256, size, updated_at, content FROM {}._site_files
             WHERE path = $1",
            schema(app)
        );
        row(&*client, &sql, &[&path])
            .await?
            .map(|r| Ok((file_from_row(&r)?, r.try_get(5)?)))
            .transpose()
    }

    async fn put_site_file(
        &self,
        app: &AppName,
        file: SiteFile,
        content: Vec<u8>,
        room: SiteRoom,
    ) -> Result<SitePut, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // Puts take turns (reads go on), so that the count below holds until the commit.
        let sql = format!("LOCK TABLE {s}._site_files IN SHARE ROW EXCLUSIVE MODE");
        execute(&tx, &sql, &[]).await?;
        let sql = format!(
            "SELECT count(*), coalesce(sum(size), 0)::bigint,
                 (SELECT size FROM {s}._site_files WHERE path = $1)
             FROM {s}._site_files"
        );
        let counted = row(&tx, &sql, &[&file.path])
            .await?
            .ok_or(StoreError::Conflict)?;
        let put = SitePut::judge(
            room,
            counted.try_get(0)?,
            counted.try_get(1)?,
            counted.try_get(2)?,
            file.size,
        );
        if put != SitePut::Stored {
            return Ok(put);
        }
        let sql = format!(
            "INSERT INTO {s}._site_files (path, content_type, sha256, size, updated_at, content)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (path) DO UPDATE SET content_type = excluded.content_type,
               sha256 = excluded.sha256, size = excluded.size,
               updated_at = excluded.updated_at, content = excluded.content"
        );
        execute(
            &tx,
            &sql,
            &[
                &file.path,
                &file.content_type,
                &file.sha256,
                &file.size,
                &file.updated_at_ms,
                &content,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(SitePut::Stored)
    }

    async fn delete_site_file(&self, app: &AppName, path: &str) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!("DELETE FROM {}._site_files WHERE path = $1", schema(app));
        Ok(execute(&*client, &sql, &[&path]).await? == 1)
    }
}
