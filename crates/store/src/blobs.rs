//! The bytes of uploaded files, behind one trait with two implementations: a directory of the
//! data directory ([`LocalBlobs`], the default) and S3-compatible object storage ([`S3Blobs`]).
//! What a file is (its bucket, owner, type, size) is metadata kept in the app's database by
//! [`FileStore`](crate::FileStore); a blob store only keeps bytes under keys it is given.
//!
//! Every key is a [`BlobKey`]: an app name and a file id, both validated types, so nothing a
//! request says reaches a path or an object name unchecked. A blob becomes visible whole or not
//! at all: the local store writes a temporary file and renames it; S3 completes a multipart
//! upload (or puts a small blob in one request) only once every byte is sent.

mod local;
mod s3;

use std::fmt;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

pub use local::LocalBlobs;
pub use s3::{S3Blobs, S3Settings};

use crate::{AppName, StoreError};

/// A stream of bytes in, or out. An error in an incoming stream aborts the write.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A file's id: `fil_` and 22 characters of URL-safe base64 (128 random bits), as the files
/// service makes them. Parsed, never trusted: it becomes part of a path or an object name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(String);

/// The prefix of every file id.
pub const FILE_ID_PREFIX: &str = "fil_";
const FILE_ID_RANDOM_CHARS: usize = 22;

impl FileId {
    /// `text` if it is a file id, or `None`.
    pub fn parse(text: &str) -> Option<FileId> {
        let random = text.strip_prefix(FILE_ID_PREFIX)?;
        let well_formed = random.len() == FILE_ID_RANDOM_CHARS
            && random
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| FileId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a file's bytes are kept: `{app}/{file id}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey {
    app: AppName,
    file: FileId,
}

impl BlobKey {
    pub fn new(app: &AppName, file: &FileId) -> BlobKey {
        BlobKey {
            app: app.clone(),
            file: file.clone(),
        }
    }

    pub fn app(&self) -> &AppName {
        &self.app
    }

    pub fn file(&self) -> &FileId {
        &self.file
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app.as_str(), self.file)
    }
}

/// A blob being read: its whole size, and the bytes asked for.
pub struct Blob {
    pub size: u64,
    pub body: ByteStream,
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blob").field("size", &self.size).finish()
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Writes `body` under `key`, replacing nothing (keys are new file ids). The blob is visible
    /// only once the stream has ended and every byte is stored; when the stream fails, or the
    /// process dies first, nothing is left under `key`.
    async fn put(&self, key: &BlobKey, body: ByteStream) -> Result<(), StoreError>;

    /// The bytes of `range` (the whole blob when `None`), or `None` for a missing blob. The
    /// range must lie within the blob: the caller knows its size from the metadata.
    async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError>;

    /// Deletes the blob; a missing one is no error.
    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError>;

    /// Deletes every blob of `app` (the app was deleted).
    async fn delete_app(&self, app: &AppName) -> Result<(), StoreError>;

    /// What the store is, for logs and health: `local:/path` or `s3://bucket/prefix`.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_are_parsed_strictly() {
        assert!(FileId::parse("fil_AAAAAAAAAAAAAAAAAAAAAA").is_some());
        assert!(FileId::parse("fil_abcdefghijklmnopqrst-_").is_some());
        for bad in [
            "",
            "fil_",
            "fil_short",
            "fil_AAAAAAAAAAAAAAAAAAAAAAA",
            "fil_../../../../etc/passw",
            "fil_AAAAAAAAAAAAAAAAAAAA/A",
            "fil_AAAAAAAAAAAAAAAAAAAA.A",
            "msg_AAAAAAAAAAAAAAAAAAAAAA",
            "fil_AAAAAAAAAAAAAAAAAAAAA\0",
            "fil_AAAAAAAAAAAAAAAAAAAAAé",
        ] {
            assert_eq!(FileId::parse(bad), None, "{bad:?}");
        }
    }
}
