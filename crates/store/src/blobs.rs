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

/// A form of a file kept beside it (a thumbnail size, `200x200f`): 1 to 32 of `a-z` and
/// `0-9`, so it can be part of a path or an object name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant(String);

impl Variant {
    /// `text` if it is a variant's name, or `None`.
    pub fn parse(text: &str) -> Option<Variant> {
        let well_formed = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        well_formed.then(|| Variant(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a file's bytes are kept: `{app}/{file id}`, and a variant of it (a thumbnail) at
/// `{app}/thumbs/{file id}/{variant}`. Deleting a file's blob deletes its variants too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey {
    app: AppName,
    file: FileId,
    variant: Option<Variant>,
}

impl BlobKey {
    pub fn new(app: &AppName, file: &FileId) -> BlobKey {
        BlobKey {
            app: app.clone(),
            file: file.clone(),
            variant: None,
        }
    }

    /// The key of `variant` of the file.
    pub fn variant(app: &AppName, file: &FileId, variant: &Variant) -> BlobKey {
        BlobKey {
            app: app.clone(),
            file: file.clone(),
            variant: Some(variant.clone()),
        }
    }

    pub fn app(&self) -> &AppName {
        &self.app
    }

    pub fn file(&self) -> &FileId {
        &self.file
    }

    pub fn variant_of(&self) -> Option<&Variant> {
        self.variant.as_ref()
    }

    /// Where the file's variants are kept: `{app}/thumbs/{file id}/`.
    pub(crate) fn variants_prefix(&self) -> String {
        format!("{}/thumbs/{}/", self.app.as_str(), self.file)
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            None => write!(f, "{}/{}", self.app.as_str(), self.file),
            Some(variant) => write!(f, "{}{}", self.variants_prefix(), variant.as_str()),
        }
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

    /// [`BlobStore::put`] of bytes already whole in memory (a thumbnail just made): they
    /// need no place among the uploads streaming in, and wait behind none of them.
    async fn put_whole(&self, key: &BlobKey, bytes: Bytes) -> Result<(), StoreError> {
        self.put(key, Box::pin(futures_util::stream::iter([Ok(bytes)])))
            .await
    }

    /// The bytes of `range` (the whole blob when `None`), or `None` for a missing blob. The
    /// range must lie within the blob: the caller knows its size from the metadata.
    async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError>;

    /// Deletes the blob, and a file's variants with it; a missing one is no error.
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

    #[test]
    fn variants_are_parsed_strictly_and_kept_beside_their_file() {
        for bad in ["", "200X200", "../x", "a/b", "a.b", "a-b", &"a".repeat(33)] {
            assert_eq!(Variant::parse(bad), None, "{bad:?}");
        }
        let app = AppName::parse("shop").unwrap();
        let file = FileId::parse("fil_AAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let thumb = Variant::parse("200x200f").unwrap();
        assert_eq!(
            BlobKey::variant(&app, &file, &thumb).to_string(),
            "shop/thumbs/fil_AAAAAAAAAAAAAAAAAAAAAA/200x200f"
        );
        assert_eq!(
            BlobKey::new(&app, &file).to_string(),
            "shop/fil_AAAAAAAAAAAAAAAAAAAAAA"
        );
    }
}
