//! Blobs in a directory: `{root}/{app}/{file id}`, a file's thumbnails in
//! `{root}/{app}/thumbs/{file id}/`. A blob is written to `{root}/.tmp/` and
//! renamed into place once whole, so a reader (or a crash) never sees part of one; whatever a
//! crash leaves in `.tmp/` is removed when the store opens (one process holds a data
//! directory). Nodes that share a directory (a volume every node mounts) each write to
//! `.tmp/{node}/` instead, and remove only what nodes left there more than a day ago. With [`Durability::Full`] the file and its directory are fsynced before the
//! write is answered, as a database commit would be.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::{Blob, BlobKey, BlobStore, ByteStream};
use crate::{AppName, Durability, StoreError};

/// The read buffer of a blob being sent.
const READ_CHUNK: usize = 64 * 1024;

pub struct LocalBlobs {
    root: PathBuf,
    /// Where blobs are written before they are renamed into place.
    tmp: PathBuf,
    durability: Durability,
    /// Writes to files running at once, across every upload: each holds a thread of the
    /// blocking pool (and that thread's allocator caches), so a hundred uploads at once take
    /// turns on a few threads instead of starting a hundred.
    writes: std::sync::Arc<tokio::sync::Semaphore>,
    /// Folders whose entries in their parents a put of this process has synced (with
    /// durability full): a put into any other syncs them first, though another put may have
    /// made the folder (and not synced it yet).
    synced: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

/// Blocking writes of uploads running at once.
const WRITES_AT_ONCE: usize = 8;

/// Folders remembered as synced: past this many they are forgotten (and synced once more).
const SYNCED_FOLDERS: usize = 10_000;

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
        Ok(LocalBlobs::at(root, tmp, durability))
    }

    /// The store at `root`, shared with other nodes: this one (`node`, unique to this start)
    /// writes in `.tmp/{node}/`. What any node left there more than a day before `now_ms` (a
    /// node that crashed mid-upload) is removed: files, then directories that are empty and
    /// as old (a live node whose directory goes writes it again). Blocking.
    pub fn open_shared(
        root: &Path,
        durability: Durability,
        node: &str,
        now_ms: i64,
    ) -> Result<LocalBlobs, StoreError> {
        let all = root.join(".tmp");
        std::fs::create_dir_all(&all).map_err(StoreError::io(&all))?;
        let day_ago = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(24 * 3600 * 1000)).unwrap_or(0),
            );
        let old = |entry: &std::fs::DirEntry| {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified < day_ago)
        };
        // Other nodes may be sweeping too: what is gone is no error.
        for node_dir in std::fs::read_dir(&all)
            .map_err(StoreError::io(&all))?
            .flatten()
        {
            let Ok(files) = std::fs::read_dir(node_dir.path()) else {
                // A file of a run before the directory was shared.
                if old(&node_dir) {
                    let _ = std::fs::remove_file(node_dir.path());
                }
                continue;
            };
            for file in files.flatten() {
                if old(&file) {
                    let _ = std::fs::remove_file(file.path());
                }
            }
            if old(&node_dir) {
                // Only if empty: a live node's upload in it stays.
                let _ = std::fs::remove_dir(node_dir.path());
            }
        }
        let tmp = all.join(node);
        std::fs::create_dir_all(&tmp).map_err(StoreError::io(&tmp))?;
        Ok(LocalBlobs::at(root, tmp, durability))
    }

    fn at(root: &Path, tmp: PathBuf, durability: Durability) -> LocalBlobs {
        LocalBlobs {
            root: root.to_path_buf(),
            tmp,
            durability,
            writes: std::sync::Arc::new(tokio::sync::Semaphore::new(WRITES_AT_ONCE)),
            synced: Default::default(),
        }
    }

    fn path(&self, key: &BlobKey) -> PathBuf {
        self.root.join(key.to_string())
    }

    async fn write_whole(&self, tmp: &Path, mut body: ByteStream) -> Result<(), StoreError> {
        let path = tmp.to_path_buf();
        let mut file = Some(
            self.blocking(move || match std::fs::File::create(&path) {
                // Another node swept this node's empty directory (see `open_shared`).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::File::create(&path)
                }
                created => created,
            })
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

/// A temporary file not (yet) renamed into place, removed when dropped.
struct Unplaced(Option<PathBuf>);

impl Drop for Unplaced {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // One unlink; a file already gone is fine.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl LocalBlobs {
    /// The folders from `dir` up to the root (not the root) not known to be synced in their
    /// parents, deepest first.
    fn unsynced_folders(&self, dir: &Path) -> Vec<PathBuf> {
        let synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        let mut unsynced = Vec::new();
        let mut at = Some(dir);
        while let Some(folder) = at.filter(|f| f.starts_with(&self.root) && *f != self.root) {
            if synced.contains(folder) {
                break;
            }
            unsynced.push(folder.to_path_buf());
            at = folder.parent();
        }
        unsynced
    }

    fn remember_synced(&self, folder: PathBuf) {
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        if synced.len() >= SYNCED_FOLDERS {
            synced.clear();
        }
        synced.insert(folder);
    }
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &BlobKey, body: ByteStream) -> Result<(), StoreError> {
        let tmp = self.tmp.join(key.to_string().replace('/', "-"));
        // Removed if the put fails, and if it is dropped midway (its request's client went
        // away, and the request's future with it): nothing is left until the next start.
        let mut unplaced = Unplaced(Some(tmp.clone()));
        self.write_whole(&tmp, body).await?;
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
                // A folder made for it (the app's first file, a file's first thumbnail) is an
                // entry of its parent, which a power cut could lose too.
                for folder in self.unsynced_folders(&dir) {
                    if let Some(parent) = folder.parent() {
                        sync_dir(parent).await?;
                    }
                    self.remember_synced(folder);
                }
            }
            Ok(())
        };
        let placed: Result<(), StoreError> = placed.await;
        if placed.is_ok() {
            unplaced.0 = None;
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
    use crate::blobs::FileId;

    #[test]
    fn what_a_crash_left_in_tmp_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join(".tmp")).unwrap();
        std::fs::write(root.join(".tmp").join("shop-fil_half"), b"half a photo").unwrap();
        LocalBlobs::open(&root, Durability::Full).unwrap();
        assert_eq!(std::fs::read_dir(root.join(".tmp")).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_put_syncs_its_folders_in_their_parents_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let blobs = LocalBlobs::open(&root, Durability::Full).unwrap();
        let app = AppName::parse("shop").unwrap();
        let key = BlobKey::new(&app, &FileId::parse("fil_0123456789abcdefghijkl").unwrap());
        let folder = blobs.path(&key).parent().unwrap().to_path_buf();
        // Whether a folder exists says nothing: another put may have made it, unsynced.
        std::fs::create_dir_all(&folder).unwrap();
        let mut expected = Vec::new();
        let mut at = folder.as_path();
        while at != root {
            expected.push(at.to_path_buf());
            at = at.parent().unwrap();
        }
        assert!(!expected.is_empty());
        assert_eq!(blobs.unsynced_folders(&folder), expected);
        let body: ByteStream = Box::pin(futures_util::stream::once(async {
            Ok(bytes::Bytes::from_static(b"a photo"))
        }));
        blobs.put(&key, body).await.unwrap();
        assert_eq!(blobs.unsynced_folders(&folder), [] as [PathBuf; 0]);
        // Never the root, nor above it.
        assert_eq!(blobs.unsynced_folders(&root), [] as [PathBuf; 0]);
        assert_eq!(
            blobs.unsynced_folders(&dir.path().join("elsewhere/x")),
            [] as [PathBuf; 0]
        );
    }

    #[tokio::test]
    async fn nodes_sharing_a_directory_keep_apart_what_they_write_and_sweep_only_old_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let a = LocalBlobs::open_shared(&root, Durability::Full, "node-a", 0).unwrap();
        std::fs::write(root.join(".tmp/node-a/shop-fil_half"), b"half a photo").unwrap();
        // The file system's time of that write.
        let written = std::fs::metadata(root.join(".tmp/node-a"))
            .unwrap()
            .modified()
            .unwrap();
        let now_ms = written
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        // A second node starting does not touch the first one's upload in progress.
        let b = LocalBlobs::open_shared(&root, Durability::Full, "node-b", now_ms).unwrap();
        assert!(root.join(".tmp/node-a/shop-fil_half").exists());
        // A day later, what node A left (it crashed, or ran on) is removed by the next node to
        // start; node B's empty directory too.
        LocalBlobs::open_shared(&root, Durability::Full, "node-c", now_ms + 25 * 3600 * 1000)
            .unwrap();
        assert!(!root.join(".tmp/node-a/shop-fil_half").exists());
        assert!(!root.join(".tmp/node-b").exists());
        // Both still write into the one directory.
        let app = AppName::parse("shop").unwrap();
        let key = BlobKey::new(&app, &FileId::parse("fil_0123456789abcdefghijkl").unwrap());
        let body = || -> ByteStream {
            Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from_static(
                b"photo",
            ))]))
        };
        a.put(&key, body()).await.unwrap();
        assert!(b.get(&key, None).await.unwrap().is_some());
    }

    /// A put dropped midway (its request's client went away) leaves no temporary file, nor
    /// does one whose body fails; one that completes leaves only its blob.
    #[tokio::test]
    async fn a_put_dropped_or_failed_midway_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        let blobs = LocalBlobs::open(&root, Durability::Full).unwrap();
        let app = AppName::parse("shop").unwrap();
        let key = BlobKey::new(&app, &FileId::parse("fil_0123456789abcdefghijkl").unwrap());
        let leftovers = || std::fs::read_dir(root.join(".tmp")).unwrap().count();

        // A first chunk arrives, then nothing more: the put waits for the rest.
        let stalled: ByteStream = Box::pin(
            futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"half a photo"))])
                .chain(futures_util::stream::pending()),
        );
        let mut put = blobs.put(&key, stalled);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while leftovers() == 0 {
            assert!(std::time::Instant::now() < deadline, "no temporary file");
            let waited = tokio::time::timeout(std::time::Duration::from_millis(20), &mut put).await;
            assert!(waited.is_err(), "the put waits for the rest of its body");
        }
        assert_eq!(leftovers(), 1, "its temporary file is being written");
        drop(put);
        assert_eq!(leftovers(), 0, "dropped, it leaves nothing");

        let failing: ByteStream = Box::pin(futures_util::stream::iter([
            Ok(bytes::Bytes::from_static(b"half")),
            Err(std::io::Error::other("the client went away")),
        ]));
        assert!(blobs.put(&key, failing).await.is_err());
        assert_eq!(leftovers(), 0);
        assert!(blobs.get(&key, None).await.unwrap().is_none());
    }
}
