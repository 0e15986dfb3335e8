//! The data directory: its layout and the exclusive lock held while a server runs on it.
//!
//! ```text
//! data-dir/
//!   cloudlet.lock        held (flock) by the running server; holds its pid
//!   master.key           32 random bytes that seal secrets at rest (mode 0600)
//!   system.db            control plane: admin token hash, apps, their keys, providers
//!   apps/{app}/data.db   one SQLite database per app
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// An opened data directory. The lock is released when this value is dropped.
#[derive(Debug)]
pub struct DataDir {
    root: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock, or fails with
    /// [`StoreError::DataDirLocked`] if another process holds it. Never blocks.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("apps")).map_err(StoreError::io(root))?;
        let lock_path = root.join("cloudlet.lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(StoreError::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(StoreError::DataDirLocked {
                    path: root.to_path_buf(),
                    pid: (!pid.is_empty()).then(|| pid.to_owned()),
                });
            }
            Err(TryLockError::Error(e)) => return Err(StoreError::io(&lock_path)(e)),
        }
        lock.set_len(0)
            .and_then(|()| lock.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(lock, "{}", std::process::id()))
            .map_err(StoreError::io(&lock_path))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn system_db(&self) -> PathBuf {
        self.root.join("system.db")
    }

    pub fn apps_dir(&self) -> PathBuf {
        self.root.join("apps")
    }

    /// The master key stored in `master.key`, if there is one. Blocking.
    pub fn stored_master_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let path = self.root.join("master.key");
        match fs::read(&path) {
            Ok(bytes) => bytes.try_into().map(Some).map_err(|_| StoreError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "master.key must hold exactly 32 bytes",
                ),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(&path)(e)),
        }
    }

    /// The instance's master key, which seals secrets at rest: read from `master.key`, or made
    /// by `generate` and written there (mode 0600) on first use. Blocking.
    pub fn master_key(&self, generate: impl FnOnce() -> [u8; 32]) -> Result<[u8; 32], StoreError> {
        if let Some(key) = self.stored_master_key()? {
            return Ok(key);
        }
        let path = self.root.join("master.key");
        let key = generate();
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(StoreError::io(&path))?;
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .map_err(StoreError::io(&path))?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err();
        match &err {
            StoreError::DataDirLocked { pid, .. } => {
                assert_eq!(
                    pid.as_deref(),
                    Some(std::process::id().to_string().as_str())
                )
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(
            err.to_string()
                .contains("in use by another cloudlet process")
        );
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }

    #[test]
    fn the_master_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::open(dir.path()).unwrap();
        let key = data.master_key(|| [7; 32]).unwrap();
        assert_eq!(key, [7; 32]);
        assert_eq!(data.master_key(|| [9; 32]).unwrap(), [7; 32]);
        std::fs::write(dir.path().join("master.key"), b"short").unwrap();
        assert!(
            data.master_key(|| [9; 32]).is_err(),
            "a damaged key is an error, never replaced"
        );
    }
}
