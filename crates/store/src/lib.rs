//! Storage for Cloudlet. This crate alone talks to database drivers.
//!
//! - [`DataDir`] owns the on-disk layout and the lock that keeps a second server off it.
//! - [`SystemStore`] is the control plane (admin token, apps, their keys); [`TenantStore`] owns
//!   each app's own database, in which [`UserStore`] keeps end users and sessions and
//!   [`RecordStore`] keeps collections and their records, and [`FunctionStore`] functions,
//!   their versions, invocation logs and environment secrets, and [`SiteStore`] the app's
//!   static site, [`FileStore`] what each uploaded file is, and [`PaymentStore`] orders and
//!   refunds; a [`BlobStore`] keeps the
//!   files' bytes (a local directory or S3). Domain code in `cloudlet-core` sees only these
//!   traits.
//! - [`ConsoleStore`] keeps the web console's people, roles, sessions and audit log.
//! - [`sqlite`] implements both on SQLite: one writer thread per database that batches concurrent
//!   writes into one transaction, and a small pool of reader connections.
//!
//! Every store takes an app as an [`AppName`], never a string: the name becomes a directory of
//! the data directory, so the type that guarantees it is one plain path segment lives here, next
//! to the code that joins it to a path. Who may call what is a domain rule and lives in
//! `cloudlet-core`.

mod app_name;
pub mod bell;
pub mod blobs;
mod console;
mod data_dir;
mod error;
mod files;
mod functions;
mod limits;
mod listing;
mod payments;
pub mod postgres;
mod queues;
mod records;
mod relay;
mod sites;
pub mod sqlite;
mod system;
mod tenants;
pub mod transfer;
mod users;

/// How long one statement may run, on either backend: a request's query that runs longer (a
/// pathological filter over a large table) is stopped ([`StoreError::TimedOut`]), so that it
/// can not hold a connection, or one of an app's SQLite readers, for ever.
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub use app_name::{AppName, InvalidAppName};
pub use bell::{Bell, NoBell, Ring, Topic, Topics};
pub use blobs::{
    Blob, BlobKey, BlobStore, ByteStream, FileId, LocalBlobs, S3Blobs, S3Settings, Variant,
};
pub use console::{AuditRow, ConsoleSessionRow, ConsoleStore, PersonRemoval, PersonRow, RoleRow};
pub use data_dir::DataDir;
pub use error::StoreError;
pub use files::{
    BucketRow, FILE_DELETED, FILE_UPLOADED, FileQuery, FileQuota, FileRow, FileStore, FileUsage,
    NewFile, StoredBytes,
};
pub use functions::{
    FunctionLogRow, FunctionRow, FunctionStore, FunctionVersionRow, LogQuery, MAX_FUNCTIONS_PER_APP,
};
pub use limits::{Rate, RateStore};
pub use payments::{
    Applied, CallbackRow, Cause, Change, Created, ORDER_CLOSED, ORDER_CREATED, ORDER_PAID,
    ORDER_PARTLY_REFUNDED, ORDER_REFUNDED, OrderQuery, OrderRow, PAY_CLOSED, PAY_PAID,
    PAY_REFUND_FAILED, PAY_REFUNDED, PayEventRow, PaymentStore, REFUND_FAILED, REFUND_PENDING,
    REFUND_SUCCEEDED, RefundRow, ReportRow, Reserved,
};
pub use queues::{
    ClaimAtSend, Claimed, DueApp, Failed, MessageRow, MessageState, NewMessage, QueueRow,
    QueueStats, QueueStore, Sent,
};
pub use records::{
    BatchOp, BatchOutcome, CollectionRow, ColumnDef, ColumnType, Condition, Emit, EventRow,
    EventsPage, IndexDef, LogBounds, LogPosition, REALTIME_CONNECTED, REALTIME_DISCONNECTED,
    Record, RecordStore, Select, SortKey, SqlValue, TRIGGER_QUEUE, TableChange, TableDef,
    TriggerDelivery, record_bytes,
};
pub use relay::{LeaveBody, Present, PresentPage, Relay, RelayPage, Relayed};
pub use sites::{SiteFile, SitePut, SiteRoom, SiteStore};
pub use sqlite::{Durability, OnDisk};
pub use system::{AppRow, Page, ProviderRow, ScheduleRow, SigningKeyRow, SystemStore};
pub use tenants::{TenantHealth, TenantStore};
pub use users::{
    GrantKey, GrantRow, IdentityRow, Rotation, SessionRow, USER_CREATED, USER_DELETED, UserRow,
    UserStore,
};
