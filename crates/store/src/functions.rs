//! Each app's functions: their settings, immutable versions (sources and compiled code), the
//! invocation log, and the app's environment secrets (sealed by the caller; stored as bytes).

use async_trait::async_trait;

use crate::{AppName, StoreError};

/// The most functions one app holds: each may declare schedules in the system database every
/// app's schedules share. A deploy of one more is refused ([`StoreError::OverQuota`]).
pub const MAX_FUNCTIONS_PER_APP: usize = 200;

/// A function and the version that answers its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRow {
    pub name: String,
    pub version: i64,
    /// Settings of the function, as JSON (public, limits); interpreted by the domain.
    pub settings: String,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionVersionRow {
    pub version: i64,
    /// The sources as deployed, as JSON.
    pub source: String,
    /// The compiled code, as JSON.
    pub bundle: String,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionLogRow {
    /// Assigned on insert; later entries have larger ids.
    pub id: i64,
    pub at_ms: i64,
    pub request_id: String,
    pub function: String,
    pub version: i64,
    pub trigger: String,
    pub outcome: String,
    pub micros: i64,
    pub memory_bytes: i64,
    pub cold: bool,
    /// Console lines and the error, as JSON.
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub function: Option<String>,
    pub outcome: Option<String>,
    /// Entries with ids below this one (paging backwards); entries after it when `after`.
    pub before_id: Option<i64>,
    pub after_id: Option<i64>,
    pub limit: usize,
}

#[async_trait]
pub trait FunctionStore: Send + Sync {
    /// Stores a new version and makes it the active one; returns its number.
    async fn deploy_function(
        &self,
        app: &AppName,
        name: &str,
        settings: String,
        version: FunctionVersionRow,
    ) -> Result<i64, StoreError>;
    /// The function and its active version.
    async fn function(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Option<(FunctionRow, FunctionVersionRow)>, StoreError>;
    async fn functions(&self, app: &AppName) -> Result<Vec<FunctionRow>, StoreError>;
    /// Version numbers and times, newest first (sources and code left out).
    async fn function_versions(
        &self,
        app: &AppName,
        name: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError>;
    /// Makes `version` the active one; false when the function or version does not exist.
    async fn activate_version(
        &self,
        app: &AppName,
        name: &str,
        version: i64,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Deletes the function and every version; false when it did not exist.
    async fn delete_function(&self, app: &AppName, name: &str) -> Result<bool, StoreError>;
    /// Appends entries, keeping at most `keep` (the newest) in the app's log.
    async fn append_logs(
        &self,
        app: &AppName,
        entries: Vec<FunctionLogRow>,
        keep: i64,
    ) -> Result<(), StoreError>;
    /// Newest first (oldest first with `after_id`).
    async fn function_logs(
        &self,
        app: &AppName,
        query: LogQuery,
    ) -> Result<Vec<FunctionLogRow>, StoreError>;
    /// Sets (`Some`) or removes (`None`) an environment value; false when removing a missing one.
    async fn set_env(
        &self,
        app: &AppName,
        name: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<bool, StoreError>;
    async fn env(&self, app: &AppName) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}
