//! [`ConsoleStore`]: the people who use the web console, their roles on apps, their sessions and
//! the audit log of what they changed. It lives with the control plane (the system database on
//! SQLite, schema `cloudlet` on PostgreSQL), so that every node sees the same sessions.

use async_trait::async_trait;

use crate::{AppName, StoreError};

/// A person with a console login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonRow {
    /// `cp_…`, random.
    pub id: String,
    /// Lowercase; unique.
    pub email: String,
    pub name: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    /// `owner` or `member`.
    pub instance_role: String,
    pub created_at_ms: i64,
}

/// A person's role on one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    pub person: String,
    pub app: String,
    /// `owner`, `developer` or `viewer`.
    pub role: String,
}

/// A console session: only the hash of its token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSessionRow {
    pub token_hash: Vec<u8>,
    pub person: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// One entry of the audit log. `seq` is given by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub at_ms: i64,
    /// The person's email, as it was.
    pub actor: String,
    pub app: Option<String>,
    /// What was done: `METHOD /path`, or a console action such as `login`.
    pub action: String,
    /// The HTTP status it ended with.
    pub status: i64,
}

/// What deleting a person did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersonRemoval {
    Removed,
    NotFound,
    /// Refused: the person is the only instance owner.
    LastOwner,
}

#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// Whether anybody has a console login yet.
    async fn has_people(&self) -> Result<bool, StoreError>;
    /// Adds the first person, only if there is nobody yet (two setups racing: one wins).
    /// `Ok(false)` when somebody exists.
    async fn insert_first_person(&self, row: PersonRow) -> Result<bool, StoreError>;
    /// Adds a person; [`StoreError::Conflict`] if the email is taken.
    async fn insert_person(&self, row: PersonRow) -> Result<(), StoreError>;
    async fn person(&self, id: &str) -> Result<Option<PersonRow>, StoreError>;
    async fn person_by_email(&self, email: &str) -> Result<Option<PersonRow>, StoreError>;
    /// Everybody, by email, at most `limit`.
    async fn people(&self, limit: usize) -> Result<Vec<PersonRow>, StoreError>;
    /// Removes a person with their roles and sessions, unless they are the last owner.
    async fn delete_person(&self, id: &str) -> Result<PersonRemoval, StoreError>;
    /// Gives `person` a role on `app`, or takes it away (`None`). `Ok(false)` when the person
    /// or the app does not exist.
    async fn set_role(
        &self,
        person: &str,
        app: &AppName,
        role: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// The roles of one person, or of everybody (`None`), by person then app.
    async fn roles(&self, person: Option<&str>) -> Result<Vec<RoleRow>, StoreError>;
    async fn insert_console_session(&self, row: ConsoleSessionRow) -> Result<(), StoreError>;
    /// The session of a token hash and its person, if it has not expired at `now_ms`.
    async fn console_session(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(ConsoleSessionRow, PersonRow)>, StoreError>;
    async fn delete_console_session(&self, token_hash: &[u8]) -> Result<(), StoreError>;
    /// Forgets sessions expired at `now_ms`; how many.
    async fn delete_expired_console_sessions(&self, now_ms: i64) -> Result<u64, StoreError>;
    /// Appends an entry (its `seq` is ignored) and returns its sequence number.
    async fn append_audit(&self, row: AuditRow) -> Result<i64, StoreError>;
    /// Of the `limit` oldest entries, deletes those made before `before_ms` (reading no more of
    /// the log than that); how many went.
    async fn delete_audit_before(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError>;
    /// The newest entries before `before` (all when `None`), of one app or of all, newest first.
    async fn audit(
        &self,
        app: Option<&AppName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError>;
}
