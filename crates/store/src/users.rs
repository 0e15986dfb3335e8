//! Each app's users, their identities on the platforms, and their sessions, as stored in the
//! app's own database. What a login means (linking by unionid, rotating session secrets,
//! detecting reuse) is decided in `cloudlet-core`; these are the rows and the atomic steps.

use async_trait::async_trait;

use crate::{AppName, Emit, StoreError};

/// A user of one app. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub created_at_ms: i64,
    pub last_login_at_ms: i64,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// A JSON object of profile fields.
    pub profile: String,
}

/// The event of a user's account: `auth.user_created` or `auth.user_deleted`, keyed by the
/// user id, with the user as stored (`profile` as JSON) and, for a creation, the provider it
/// came through. Core turns it into what triggers receive.
pub(crate) fn user_event(kind: &str, user: &UserRow, provider: Option<&str>) -> (String, String) {
    let payload = serde_json::json!({
        "user": {
            "id": user.id,
            "created_at_ms": user.created_at_ms,
            "last_login_at_ms": user.last_login_at_ms,
            "email": user.email,
            "phone": user.phone,
            "profile": serde_json::from_str::<serde_json::Value>(&user.profile)
                .unwrap_or(serde_json::Value::Null),
        },
        "provider": provider,
    });
    (kind.to_owned(), payload.to_string())
}

/// The kinds of account events.
pub const USER_CREATED: &str = "auth.user_created";
pub const USER_DELETED: &str = "auth.user_deleted";

/// A user's account on a login provider: WeChat openid, Alipay user id, an email, ….
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRow {
    /// The provider id as configured on the app (`wechat`, `qq`, `password`, …).
    pub provider: String,
    /// The user's id at that provider (openid, user_id, email, …).
    pub subject: String,
    pub user_id: String,
    /// The platform-wide id that links a user's accounts across one developer's apps.
    pub unionid: Option<String>,
    /// The scope a unionid is unique in (`wechat`, `qq`, `douyin`).
    pub family: String,
    pub created_at_ms: i64,
}

/// A login session. Its secret is stored only as a hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub secret_hash: Vec<u8>,
    pub created_at_ms: i64,
    pub refreshed_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// The platform's session key (WeChat), sealed with the instance's master key.
    pub sealed_platform_key: Option<Vec<u8>>,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("revoked_at_ms", &self.revoked_at_ms)
            .finish_non_exhaustive()
    }
}

/// What presenting a session secret for refresh found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The secret was current: it is replaced by the new one.
    Rotated(SessionRow),
    /// The secret was current once and has been rotated away: someone replayed it. The
    /// session is now revoked.
    Reused { session_id: String },
    /// No session ever had this secret, or its session is revoked or expired.
    Unknown,
}

/// Where one user stands with one subscribe-message template of one mini program: how many
/// one-time subscriptions ("allow" answers to `wx.requestSubscribeMessage`) are left to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// The mini program's appid.
    pub appid: String,
    pub template_id: String,
    pub remaining: i64,
    pub updated_at_ms: i64,
}

/// One user's grants to one template of one mini program: the key of the consent ledger.
#[derive(Debug, Clone, Copy)]
pub struct GrantKey<'a> {
    pub appid: &'a str,
    /// The user's openid in that mini program.
    pub openid: &'a str,
    pub template_id: &'a str,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    async fn user(&self, app: &AppName, id: &str) -> Result<Option<UserRow>, StoreError>;
    /// Users by id after `after`, at most `limit`. With `search`, only those it names: their id,
    /// email, phone, an identity's subject (an openid) or unionid, exactly, each by an index.
    async fn list_users(
        &self,
        app: &AppName,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRow>, StoreError>;
    /// A user's identities, oldest first.
    async fn identities_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<IdentityRow>, StoreError>;
    async fn user_by_identity(
        &self,
        app: &AppName,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserRow>, StoreError>;
    /// The user's id at `provider` and their unionid there, if they have that identity.
    async fn identity_of(
        &self,
        app: &AppName,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError>;
    async fn user_by_unionid(
        &self,
        app: &AppName,
        family: &str,
        unionid: &str,
    ) -> Result<Option<UserRow>, StoreError>;
    /// The user with this email and their password hash.
    async fn user_by_email(
        &self,
        app: &AppName,
        email: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, StoreError>;
    /// Creates a user, with an identity if given; [`StoreError::Conflict`] if the email or the
    /// identity exists already. With `emit`, records `auth.user_created` (see [`user_event`])
    /// and its trigger deliveries in the same transaction.
    async fn create_user(
        &self,
        app: &AppName,
        user: UserRow,
        password_hash: Option<String>,
        identity: Option<IdentityRow>,
        emit: Option<Emit>,
    ) -> Result<(), StoreError>;
    /// Links another identity to an existing user; [`StoreError::Conflict`] if it is taken.
    async fn add_identity(&self, app: &AppName, identity: IdentityRow) -> Result<(), StoreError>;
    async fn record_login(
        &self,
        app: &AppName,
        user_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Sets the user's verified phone number; `None` if there is no such user.
    async fn set_phone(
        &self,
        app: &AppName,
        user_id: &str,
        phone: String,
    ) -> Result<Option<UserRow>, StoreError>;
    async fn update_profile(
        &self,
        app: &AppName,
        user_id: &str,
        profile: String,
    ) -> Result<Option<UserRow>, StoreError>;
    /// Deletes the user with their identities and sessions, remembering every session as
    /// revoked (live ones at `now_ms`); returns the ids of those that were live, or `None` if
    /// there was no such user. With `emit`, records `auth.user_deleted` (the user as they were)
    /// and its trigger deliveries in the same transaction.
    async fn delete_user(
        &self,
        app: &AppName,
        user_id: &str,
        now_ms: i64,
        emit: Option<Emit>,
    ) -> Result<Option<Vec<String>>, StoreError>;
    async fn insert_session(&self, app: &AppName, session: SessionRow) -> Result<(), StoreError>;
    /// In one transaction: finds the live session whose current secret hashes to `presented`
    /// and replaces the secret with `next` (keeping the old hash to recognise replays), or
    /// revokes the session whose retired secret it is.
    async fn rotate_session(
        &self,
        app: &AppName,
        presented: Vec<u8>,
        next: Vec<u8>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<Rotation, StoreError>;
    /// Revokes a session; returns it if it was live.
    async fn revoke_session(
        &self,
        app: &AppName,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError>;
    async fn session(
        &self,
        app: &AppName,
        session_id: &str,
    ) -> Result<Option<SessionRow>, StoreError>;
    async fn sessions_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<SessionRow>, StoreError>;
    /// Sessions revoked at or after `since_ms`: what token checks must refuse.
    async fn revoked_since(&self, app: &AppName, since_ms: i64) -> Result<Vec<String>, StoreError>;

    /// Adds one grant to each key for `user_id`, keeping at most `cap` per key.
    async fn add_grants(
        &self,
        app: &AppName,
        user_id: &str,
        keys: &[GrantKey<'_>],
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError>;
    /// Takes one grant of the key if one is left: true if it did.
    async fn take_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Gives back a grant taken for a message the platform refused without using it, keeping
    /// at most `cap`.
    async fn return_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError>;
    /// Sets the key's grants to none: the platform said the user has none left.
    async fn clear_grants(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// The user's grants, by appid and template.
    async fn grants_of(&self, app: &AppName, user_id: &str) -> Result<Vec<GrantRow>, StoreError>;
}
