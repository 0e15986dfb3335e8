//! Each app's static site: files by path, with their content type and ETag, kept in the app's
//! database (sites are small, and so they are deleted with the app and change transactionally).

use async_trait::async_trait;

use crate::{AppName, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteFile {
    pub path: String,
    pub content_type: String,
    /// The hex SHA-256 of the content: the ETag, and how a deploy tells what changed.
    pub sha256: String,
    pub size: i64,
    pub updated_at_ms: i64,
}

/// How much one site may hold: files, and bytes of them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SiteRoom {
    pub max_files: i64,
    pub max_bytes: i64,
}

/// What became of a file put into a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SitePut {
    Stored,
    /// Not stored: the site would hold more files than its room.
    TooManyFiles,
    /// Not stored: the site's files would hold more bytes than its room.
    TooManyBytes,
}

impl SitePut {
    /// Whether a site holding `files` files of `bytes` bytes, of which the file at the path
    /// put (if there is one) holds `replaced`, may take a file of `size` bytes there. A site
    /// already past its room (the room was made smaller) may still replace a file with one no
    /// larger: only growing past the room is refused.
    pub fn judge(room: SiteRoom, files: i64, bytes: i64, replaced: Option<i64>, size: i64) -> Self {
        let bytes_after = bytes - replaced.unwrap_or(0) + size;
        if replaced.is_none() && files + 1 > room.max_files {
            SitePut::TooManyFiles
        } else if bytes_after > room.max_bytes && bytes_after > bytes {
            SitePut::TooManyBytes
        } else {
            SitePut::Stored
        }
    }
}

#[async_trait]
pub trait SiteStore: Send + Sync {
    /// Every file, without content, by path.
    async fn site_files(&self, app: &AppName) -> Result<Vec<SiteFile>, StoreError>;
    /// One file, without its content.
    async fn site_file_info(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<SiteFile>, StoreError>;
    /// One file and its content.
    async fn site_file(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<(SiteFile, Vec<u8>)>, StoreError>;
    /// Stores a file, or replaces the one at its path, if the site keeps within `room`
    /// afterwards; the count and the store are one step, so that concurrent puts can not pass
    /// the room together.
    async fn put_site_file(
        &self,
        app: &AppName,
        file: SiteFile,
        content: Vec<u8>,
        room: SiteRoom,
    ) -> Result<SitePut, StoreError>;
    /// False when there was no such file.
    async fn delete_site_file(&self, app: &AppName, path: &str) -> Result<bool, StoreError>;
}
