//! The one error type of the storage layer. Driver errors are kept as sources for the logs;
//! callers match on the variants, never on driver messages.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write (for example, an app name taken twice).
    #[error("a row with the same key already exists")]
    Conflict,
    /// No row the condition allows.
    #[error("no such row")]
    NotFound,
    /// Operation `index` of a batch failed; none of the batch was written.
    #[error("operation {index} of the batch failed: {source}")]
    InBatch {
        index: usize,
        source: Box<StoreError>,
    },
    /// A write's check condition did not hold; the write was rolled back.
    #[error("the write's check condition does not hold")]
    CheckFailed,
    /// The app key that authorized a write is not the app's (rotated, or the app deleted);
    /// nothing was written.
    #[error("the app key is not the app's")]
    KeyRefused,
    /// The write would pass a quota; it was rolled back.
    #[error("the write would pass a quota")]
    OverQuota,
    /// An update would make its record larger than [`MAX_RECORD_STORED_BYTES`]; it was
    /// rolled back.
    ///
    /// [`MAX_RECORD_STORED_BYTES`]: crate::records::MAX_RECORD_STORED_BYTES
    #[error("the record would be over its size limit")]
    TooLarge,
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another cloudlet process{}; stop it or pass a different --data-dir",
        .pid.as_deref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    DataDirLocked { path: PathBuf, pid: Option<String> },
    /// The app's database does not exist (never provisioned, or being destroyed).
    #[error("the app's database does not exist")]
    NoSuchTenant,
    /// The database can not be reached now (a server restarting, every connection busy past
    /// the wait); the request may be retried.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database was closed (the app was evicted or the server is shutting down).
    #[error("the database is closed")]
    Closed,
    /// A statement ran past its time limit ([`STATEMENT_TIMEOUT`](crate::STATEMENT_TIMEOUT))
    /// and was stopped.
    #[error("a statement ran past its time limit and was stopped")]
    TimedOut,
    /// A database file was written by a newer Cloudlet than this one.
    #[error("database {path} has schema version {found}, newer than this build knows ({known})")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// The database failed; the driver's error is kept for the logs.
    #[error("database error: {0}")]
    Database(Box<dyn std::error::Error + Send + Sync>),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage task failed: {0}")]
    Task(String),
    /// The blob store (S3, say) failed; its message is kept for the logs.
    #[error("blob store error: {0}")]
    Blobs(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
