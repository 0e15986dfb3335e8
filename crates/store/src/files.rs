//! What each uploaded file is, kept in the app's database beside its records: the app's
//! buckets (name and settings), one row per file (bucket, owner, name, sniffed type, size,
//! SHA-256, metadata), the bytes each owner and the whole app hold, and the trash of blobs to
//! delete. The bytes themselves are in a [`BlobStore`](crate::BlobStore).
//!
//! A file's row exists before its blob: an upload begins as a row in state *uploading*, the
//! blob is written, and completing the upload makes the row *ready* and counts its bytes in the
//! same transaction, refused ([`StoreError::OverQuota`]) when that would pass a quota. Every
//! deletion of a file row, however it happens (a delete, a bucket's deletion, its owner's
//! account deleted by cascade, an upload abandoned), puts the file id into the trash and
//! uncounts its bytes in the same transaction (a database trigger does both), and the sweep
//! deletes the trashed blobs. So no blob outlives its row for longer than a sweep, and none is
//! deleted while its row lives.

use async_trait::async_trait;

use crate::{AppName, Condition, Emit, StoreError};

/// `_file_usage.owner` of the whole app's line (no user id is empty).
pub(crate) const APP_USAGE: &str = "";

/// The kinds of files' events in the event log.
pub const FILE_UPLOADED: &str = "files.upload";
pub const FILE_DELETED: &str = "files.delete";

/// A file's event for the log: its kind, its key (`{bucket}/{id}`) and its payload (the file,
/// its metadata parsed, times in Unix milliseconds).
pub(crate) fn file_event(file: &FileRow) -> (String, String) {
    let payload = serde_json::json!({
        "file": {
            "id": file.id,
            "bucket": file.bucket,
            "owner": file.owner,
            "name": file.name,
            "type": file.content_type,
            "size": file.size,
            "sha256": file.sha256,
            "metadata": serde_json::from_str::<serde_json::Value>(&file.metadata)
                .unwrap_or(serde_json::Value::Null),
            "created_at_ms": file.created_at_ms,
        }
    });
    (format!("{}/{}", file.bucket, file.id), payload.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    pub name: String,
    /// The bucket's settings as JSON (types, sizes, rules), as the files service wrote them.
    pub settings: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A file being uploaded: its row before its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub id: String,
    pub bucket: String,
    /// The uploading user; `None` for the admin API and functions without a caller.
    pub owner: Option<String>,
    pub name: String,
    /// JSON object.
    pub metadata: String,
    /// The type and size the client declares (its part's `Content-Type`, its body's
    /// `Content-Length`; empty and 0 when unknown): the row holds them while the bytes arrive,
    /// so a create rule can refuse an upload before its first byte.
    pub declared_type: String,
    pub declared_size: i64,
    pub created_at_ms: i64,
}

/// What the bytes turned out to be, once all were stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBytes {
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// The most an owner, and the whole app, may hold; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileQuota {
    pub app_bytes: Option<i64>,
    pub app_files: Option<i64>,
    pub owner_bytes: Option<i64>,
    pub owner_files: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: String,
    pub bucket: String,
    pub owner: Option<String>,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    /// A JSON object (as the backend writes it: compare parsed).
    pub metadata: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Bytes and files held, by an owner or (owner `None`) the whole app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileUsage {
    pub bytes: i64,
    pub files: i64,
}

/// A page of a bucket's ready files, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileQuery {
    pub bucket: String,
    /// Only this owner's files.
    pub owner: Option<String>,
    /// After this file of the previous page: its `(created_at_ms, id)`.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

#[async_trait]
pub trait FileStore: Send + Sync {
    async fn put_bucket(&self, app: &AppName, bucket: BucketRow) -> Result<(), StoreError>;
    async fn bucket(&self, app: &AppName, name: &str) -> Result<Option<BucketRow>, StoreError>;
    async fn buckets(&self, app: &AppName) -> Result<Vec<BucketRow>, StoreError>;
    /// Deletes the bucket and its files (into the trash); false if there was none.
    async fn delete_bucket(&self, app: &AppName, name: &str) -> Result<bool, StoreError>;

    /// Inserts the row of a file about to be uploaded, if `check` (the bucket's create rule)
    /// holds for it. [`StoreError::NotFound`] without the bucket; [`StoreError::Conflict`] for
    /// a taken id; [`StoreError::CheckFailed`] when the rule refuses (nothing is inserted).
    async fn begin_upload(
        &self,
        app: &AppName,
        file: NewFile,
        check: Condition,
    ) -> Result<(), StoreError>;
    /// Makes an uploading file ready with what its bytes are, counting them for its owner and
    /// the app, if `check` (the create rule, again, now on the real type and size) holds. When
    /// it does not, [`StoreError::CheckFailed`]; when `quota` would be passed,
    /// [`StoreError::OverQuota`]; either way nothing changes. [`StoreError::NotFound`] if the
    /// upload is not pending (abandoned and swept). With `emit`, records `files.upload` and
    /// its trigger deliveries in the same transaction.
    async fn complete_upload(
        &self,
        app: &AppName,
        id: &str,
        bytes: StoredBytes,
        quota: FileQuota,
        check: Condition,
        emit: Option<Emit>,
    ) -> Result<FileRow, StoreError>;
    /// Forgets an upload that failed; its blob id goes to the trash. False when there was no
    /// pending upload of that id to forget: it completed after all (a commit whose answer was
    /// lost), or its row went another way (whose trash entry covers its blob). Either way its
    /// blob is not the caller's to delete.
    async fn abandon_upload(&self, app: &AppName, id: &str) -> Result<bool, StoreError>;

    /// A ready file, if `condition` (a bucket's rule, compiled against the file's columns
    /// `id`, `bucket`, `owner`, `name`, `type`, `size`, `metadata`, `created_at`,
    /// `updated_at`) holds for it.
    async fn file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
    ) -> Result<Option<FileRow>, StoreError>;
    /// The ready files among `ids` (a page's worth; ids of no ready file are left out), in no
    /// particular order, whatever their bucket: one read for a page of records' files.
    async fn files_by_id(
        &self,
        app: &AppName,
        ids: Vec<String>,
    ) -> Result<Vec<FileRow>, StoreError>;
    /// A page of the bucket's ready files for which `condition` holds.
    async fn files(
        &self,
        app: &AppName,
        query: FileQuery,
        condition: Condition,
    ) -> Result<Vec<FileRow>, StoreError>;
    /// Deletes a ready file for which `condition` holds (its blob into the trash) and answers
    /// its row; `None` if there is none. With `emit`, records `files.delete` and its trigger
    /// deliveries in the same transaction.
    async fn delete_file(
        &self,
        app: &AppName,
        id: &str,
        condition: Condition,
        emit: Option<Emit>,
    ) -> Result<Option<FileRow>, StoreError>;
    /// What `owner` (or, with `None`, the whole app) holds.
    /// Counts `bytes` of a thumbnail of file `id` in the app's usage (and takes them back when
    /// the file goes); false, counting nothing, when there is no such ready file.
    async fn count_thumb(&self, app: &AppName, id: &str, bytes: i64) -> Result<bool, StoreError>;

    async fn file_usage(&self, app: &AppName, owner: Option<&str>)
    -> Result<FileUsage, StoreError>;

    /// Abandons uploads begun before `before_ms` and never completed (a crash, a client gone);
    /// answers how many.
    async fn drop_stale_uploads(&self, app: &AppName, before_ms: i64) -> Result<u64, StoreError>;
    /// Up to `limit` file ids whose blobs are to be deleted.
    async fn trashed(&self, app: &AppName, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Takes ids out of the trash, once their blobs are deleted.
    async fn forget_trashed(&self, app: &AppName, ids: Vec<String>) -> Result<(), StoreError>;
}
