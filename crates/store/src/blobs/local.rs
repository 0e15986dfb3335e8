//! Blobs in a directory: `{root}/{app}/{file id}`, a file's thumbnails in
//! `{root}/{app}/thumbs/{file id}/`. A blob is written to `{root}/.tmp/` and
//! renamed into place once whole, so a reader (or a crash) never sees part of one; whatever a
//! crash leaves in `.tmp/` is removed when the store opens (one process holds a data
//! directory). With [`Durability::Full`] the file and its directory are fsynced before the
//! write is answered, as a database commit would be.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::{Blob, BlobKey, BlobStore, ByteStream};
use crate::{AppName, Durability, StoreError};

/// The read buffer of a blob being sent.
const READ_CHUNK: usize = 64 * 1024;

pub struct LocalBlobs {
    root: PathBuf,
    durability: Durability,
    /// Writes to files running at once, across every upload: each holds a thread of the
    /// blocking pool (and that thread's allocator caches), so a hundred uploads at once take
    /// turns on a few threads instead of starting a hundred.
    writes: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Blocking writes of uploads running at once.
const WRITES_AT_ONCE: usize = 8;

impl LocalBlobs {
    /// The store at `root` (created if missing), its leftover temporary files removed. Blocking.
    pub fn open(root: &Path, durability: Durability) -> Result<LocalBlobs, StoreError> {
        let tmp = root.join(".tmp");
        match std::fs::remove_dir_all(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&tmp)(e)),
        }
        std::fs::create_dir_all(&tmp).map_err(StoreError::io(&tmp))?;
        Ok(LocalBlobs {
            root: root.to_path_buf(),
            durability,
            writes: std::sync::Arc::new(tokio::sync::Semaphore::new(WRITES_AT_ONCE)),
        })
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.to_string())
    }

    async fn write_whole(&self, tmp: &Path, mut body: ByteStream) -> Result<(), StoreError> {
        let path = tmp.to_path_buf();
        let mut file = Some(
            self.blocking(move || std::fs::File::create(&path))
                .await
                .map_err(StoreError::io(tmp))?,
        );
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::io(tmp))?;
            let mut open = file.take().ok_or(StoreError::Closed)?;
            let open = self
                .blocking(move || {
                    use std::io::Write;
                    open.write_all(&chunk).map(|()| open)
                })
                .await
                .map_err(StoreError::io(tmp))?;
            file = Some(open);
        }
        let open = file.take().ok_or(StoreError::Closed)?;
        if self.durability == Durability::Full {
            self.blocking(move || open.sync_all())
                .await
                .map_err(StoreError::io(tmp))?;
        }
        Ok(())
    }

    /// Runs one blocking write, when one of the [`WRITES_AT_ONCE`] places is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let _place = self
            .writes
            .acquire()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &BlobKey, body: ByteStream) -> Result<(), StoreError> {
        let tmp = self
            .root
            .join(".tmp")
            .join(key.to_string().replace('/', "-"));
        if let Err(e) = self.write_whole(&tmp, body).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let placed = async {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(StoreError::io(&dir))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(StoreError::io(&path))?;
            if self.durability == Durability::Full {
                sync_dir(&dir).await?;
            }
            Ok(())
        };
        let placed: Result<(), StoreError> = placed.await;
        if placed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        placed
    }

    async fn get(
        &self,
        key: &BlobKey,
        range: Option<Range<u64>>,
    ) -> Result<Option<Blob>, StoreError> {
        let path = self.path(key);
        let name = key.to_string();
        // Opening, sizing, seeking and, for a small read, reading: one trip to the blocking
        // pool, not one per step (a thumbnail or an avatar is read whole in it).
        let opened = tokio::task::spawn_blocking(move || open_at(&path, range, &name))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(opened.map(|(size, opened)| {
            let body: ByteStream = match opened {
                Opened::Whole(bytes) => {
                    Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
                }
                Opened::Stream(file, length) => {
                    let reader = tokio::fs::File::from_std(file).take(length);
                    Box::pin(tokio_util::io::ReaderStream::with_capacity(
                        reader, READ_CHUNK,
                    ))
                }
            };
            Blob { size, body }
        }))
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), StoreError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&path)(e)),
        }
        if key.variant_of().is_some() {
            return Ok(());
        }
        let variants = self.root.join(key.variants_prefix());
        match tokio::fs::remove_dir_all(&variants).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&variants)(e)),
        }
    }

    async fn delete_app(&self, app: &AppName) -> Result<(), StoreError> {
        let dir = self.root.join(app.as_str());
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&dir)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}

/// A blob opened for reading: its bytes when they fit in one read, or the file at the start
/// of the range and how many bytes to read from there.
enum Opened {
    Whole(bytes::Bytes),
    Stream(std::fs::File, u64),
}

/// Opens the blob at `path` at `range` (all of it when `None`): its size and how to read it, or
/// `None` when there is none. Blocking.
fn open_at(
    path: &Path,
    range: Option<Range<u64>>,
    name: &str,
) -> Result<Option<(u64, Opened)>, StoreError> {
    use std::io::{Read, Seek};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path)(e)),
    };
    let size = file.metadata().map_err(StoreError::io(path))?.len();
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(StoreError::Task(format!(
            "range {range:?} is outside blob {name} of {size} bytes"
        )));
    }
    if range.start > 0 {
        file.seek(SeekFrom::Start(range.start))
            .map_err(StoreError::io(path))?;
    }
    let length = range.end - range.start;
    // The open file stays readable if the blob is deleted meanwhile: a download that began
    // ends whole.
    if length <= READ_CHUNK as u64 {
        let mut bytes = vec![0u8; length as usize];
        file.read_exact(&mut bytes).map_err(StoreError::io(path))?;
        return Ok(Some((size, Opened::Whole(bytes.into()))));
    }
    Ok(Some((size, Opened::Stream(file, length))))
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(&dir))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_crash_left_in_tmp_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join(".tmp")).unwrap();
        std::fs::write(root.join(".tmp").join("shop-fil_half"), b"half a photo").unwrap();
        LocalBlobs::open(&root, Durability::Full).unwrap();
        assert_eq!(std::fs::read_dir(root.join(".tmp")).unwrap().count(), 0);
    }
}
