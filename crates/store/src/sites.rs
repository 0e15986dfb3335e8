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

#[async_trait]
pub trait SiteStore: Send + Sync {
    /// Every file, without content, by path.
    async fn site_files(&self, app: &AppName) -> Result<Vec<SiteFile>, StoreError>;
    /// One file and its content.
    async fn site_file(
        &self,
        app: &AppName,
        path: &str,
    ) -> Result<Option<(SiteFile, Vec<u8>)>, StoreError>;
    async fn put_site_file(
        &self,
        app: &AppName,
        file: SiteFile,
        content: Vec<u8>,
    ) -> Result<(), StoreError>;
    /// False when there was no such file.
    async fn delete_site_file(&self, app: &AppName, path: &str) -> Result<bool, StoreError>;
}
