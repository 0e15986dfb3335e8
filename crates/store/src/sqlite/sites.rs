//! [`SiteStore`] on SQLite, in each app's database.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::SqliteTenants;
use crate::sites::{SiteFile, SitePut, SiteRoom, SiteStore};
use crate::{AppName, StoreError};

pub(super) const MIGRATION: &str = "
    CREATE TABLE _site_files (
        path          TEXT PRIMARY KEY,
        content_type  TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        size          INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        content       BLOB NOT NULL
    ) STRICT;
";

fn file_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SiteFile> {
    Ok(SiteFile {
        path: r.get(0)?,
        content_type: r.get(1)?,
        sha256: r.get(2)?,
        size: r.get(3)?,
        updated_at_ms: r.get(4)?,
    })
}

#[async_trait]
impl SiteStore for SqliteTenants {
    async fn site_files(&self, app: &AppName) -> Result<Vec<SiteFile>, StoreError> {
        self.read_app(app, |c| {
            Ok(c.prepare_cached(
                "SELECT path, content_type, sha256, size, updated_at FROM _site_files ORDER BY path",
            )?
            .query_map([], file_from_row)?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn site_file_info(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<SiteFile>, StoreError> {
        let path = path.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT path, content_type, sha256, size, updated_at FROM _site_files
                 WHERE path = ?1",
            )?
            .query_row([&path], file_from_row)
            .optional()?)
        })
        .await
    }

    async fn site_file(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<(SiteFile, Vec<u8>)>, StoreError> {
        let path = path.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT path, content_type, sha256, size, updated_at, content FROM _site_files
                 WHERE path = ?1",
            )?
            .query_row([&path], |r| Ok((file_from_row(r)?, r.get(5)?)))
            .optional()?)
        })
        .await
    }

    async fn put_site_file(
        &self,
        app: &AppName,
        file: SiteFile,
        content: Vec<u8>,
        room: SiteRoom,
    ) -> Result<SitePut, StoreError> {
        self.write_app(app, move |c| {
            // The writer thread runs one write at a time: nothing changes the site in between.
            let (files, bytes): (i64, i64) = c.query_row(
                "SELECT count(*), coalesce(sum(size), 0) FROM _site_files",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let replaced: Option<i64> = c
                .query_row(
                    "SELECT size FROM _site_files WHERE path = ?1",
                    [&file.path],
                    |r| r.get(0),
                )
                .optional()?;
            let put = SitePut::judge(room, files, bytes, replaced, file.size);
            if put != SitePut::Stored {
                return Ok(put);
            }
            c.execute(
                "INSERT INTO _site_files (path, content_type, sha256, size, updated_at, content)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (path) DO UPDATE SET content_type = excluded.content_type,
                   sha256 = excluded.sha256, size = excluded.size,
                   updated_at = excluded.updated_at, content = excluded.content",
                params![
                    file.path,
                    file.content_type,
                    file.sha256,
                    file.size,
                    file.updated_at_ms,
                    content
                ],
            )?;
            Ok(SitePut::Stored)
        })
        .await
    }

    async fn delete_site_file(&self, app: &AppName, path: &str) -> Result<bool, StoreError> {
        let path = path.to_owned();
        self.write_app(app, move |c| {
            Ok(c.execute("DELETE FROM _site_files WHERE path = ?1", [&path])? == 1)
        })
        .await
    }
}
