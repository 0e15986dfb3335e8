//! The control plane's storage: the admin token hash, apps, their secret keys and signing keys.

use async_trait::async_trait;

use crate::{AppName, DueApp, StoreError};

/// An app as the control plane stores it. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub name: String,
    pub created_at_ms: i64,
    /// SHA-256 of the secret key; the key itself is never stored.
    pub secret_key_hash: Vec<u8>,
    /// The key's first characters, so that a person can tell keys apart.
    pub secret_key_hint: String,
    pub secret_key_created_at_ms: i64,
}

/// A secret an app signs its access tokens with, named by a key id so that keys can rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub secret: Vec<u8>,
    pub created_at_ms: i64,
}

/// A login provider's configuration for one app. Secrets are sealed by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderRow {
    pub provider: String,
    /// A JSON object of the settings that are not secret.
    pub settings: String,
    /// The secret settings, sealed (encrypted) with the instance's master key.
    pub sealed_secrets: Option<Vec<u8>>,
    pub updated_at_ms: i64,
}

impl std::fmt::Debug for ProviderRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRow")
            .field("provider", &self.provider)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A function's cron schedule, and when it runs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub app: AppName,
    pub function: String,
    /// Its place among the function's schedules.
    pub index: i64,
    pub cron: String,
    pub timezone: String,
    /// The event's `data`, as JSON.
    pub data: String,
    pub next_at_ms: i64,
}

/// One page of a keyset-paginated listing: `next_after` is the key to continue after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<String>,
}

#[async_trait]
pub trait SystemStore: Send + Sync {
    /// Checks that the store answers a read.
    async fn ping(&self) -> Result<(), StoreError>;
    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError>;
    async fn set_admin_token_hash(&self, hash: Vec<u8>) -> Result<(), StoreError>;
    /// Stores `value` under `key` unless a value is there already; returns the value stored
    /// (the first writer's, when several race).
    async fn settle_setting(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError>;
    /// Inserts an app with its first signing key; [`StoreError::Conflict`] if the name is taken.
    async fn insert_app(&self, app: AppRow, signing_key: SigningKeyRow) -> Result<(), StoreError>;
    async fn app(&self, name: &AppName) -> Result<Option<AppRow>, StoreError>;
    /// The name of the app whose secret key hashes to `hash`.
    async fn app_by_key_hash(&self, hash: &[u8]) -> Result<Option<AppName>, StoreError>;
    /// Apps in name order, starting after `after`.
    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AppRow>, StoreError>;
    /// Deletes an app and its keys; false if there was none.
    async fn delete_app(&self, name: &AppName) -> Result<bool, StoreError>;
    /// Replaces an app's secret key; false if there is no such app.
    async fn replace_app_key(
        &self,
        name: &AppName,
        hash: Vec<u8>,
        hint: String,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Creates or replaces a provider's configuration; [`StoreError::Conflict`] if the app is
    /// gone.
    async fn put_provider(&self, app: &AppName, row: ProviderRow) -> Result<(), StoreError>;
    async fn provider(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<Option<ProviderRow>, StoreError>;
    async fn providers(&self, app: &AppName) -> Result<Vec<ProviderRow>, StoreError>;
    /// Keeps a copy of the app's provider rows whose name starts with `prefix` until
    /// `until_ms`, for after the app is deleted (its payment merchants, whose platforms retry
    /// notifications for a day or more); forgets copies whose time passed by `now_ms`.
    async fn bury_providers(
        &self,
        app: &AppName,
        prefix: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Forgets buried provider rows whose time passed by `now_ms`; how many.
    async fn forget_buried(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// A buried provider row of an app, while its time lasts.
    async fn buried_provider(
        &self,
        app: &AppName,
        provider: &str,
        now_ms: i64,
    ) -> Result<Option<ProviderRow>, StoreError>;
    /// The app's token-signing keys, newest first.
    async fn signing_keys(&self, app: &AppName) -> Result<Vec<SigningKeyRow>, StoreError>;
    /// Flushes pending writes and closes the store.
    /// Replaces a function's schedules (none: it has no more).
    async fn replace_schedules(
        &self,
        app: &AppName,
        function: &str,
        schedules: Vec<ScheduleRow>,
    ) -> Result<(), StoreError>;
    /// Schedules due at `now_ms`, soonest first (ties by app, function and index), at most
    /// `per_app` of one app: an app with more due than a look takes can not hold back the
    /// others' schedules.
    async fn due_schedules(
        &self,
        now_ms: i64,
        limit: usize,
        per_app: usize,
    ) -> Result<Vec<ScheduleRow>, StoreError>;
    /// Moves a schedule's next run from `from_ms` to `to_ms`; false if it was not at `from_ms`
    /// any more (another claimed it, or it changed), so that each run is claimed once.
    async fn advance_schedule(&self, row: &ScheduleRow, to_ms: i64) -> Result<bool, StoreError>;

    /// Notes that `app` has queued work due at `at_ms`: the hint becomes the earlier of the two
    /// and its version moves on. Written before the app's own write, so that the hint is never
    /// later than the work (a hint with nothing behind it costs one look).
    async fn hint_due(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError>;
    /// [`SystemStore::hint_due`] as an ordinary (fsynced) commit: for a hint written after the
    /// work it announces, which no later commit of that work would take to disk.
    async fn hint_due_durably(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError>;
    /// Whether every stop that did not close this store leaves every app hinted due at its
    /// next open, as SQLite's does (one process owns the files). A hint may then follow the
    /// write it announces instead of preceding it: a crash between the two is repaired at the
    /// next start. Not where other nodes run on while one dies (PostgreSQL): no start would
    /// repair a hint that node never wrote.
    fn hints_repaired_at_start(&self) -> bool {
        false
    }
    /// Whether other processes settle this store's hints too (nodes sharing a PostgreSQL
    /// database). One of them may have read an app's work before a write committed and settle
    /// its hint after, which no pulse of this node sees: a hint is then written again after
    /// every write it announces.
    fn hints_settled_elsewhere(&self) -> bool {
        false
    }
    /// Apps whose hint is due at `now_ms`, earliest first.
    async fn due_apps(&self, now_ms: i64, limit: usize) -> Result<Vec<DueApp>, StoreError>;
    /// Replaces the hint of `app` with `next` (or removes it) if its version is still
    /// `version`; false if a send moved it meanwhile (look again).
    async fn settle_due(
        &self,
        app: &AppName,
        version: i64,
        next: Option<i64>,
    ) -> Result<bool, StoreError>;
    /// The earliest hint of any app.
    async fn next_hint(&self) -> Result<Option<i64>, StoreError>;

    async fn close(&self);
}
