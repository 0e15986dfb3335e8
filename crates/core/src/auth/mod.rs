//! End-user identity for each app: login through a provider, sessions, access tokens.
//!
//! A login trades the provider's proof (a platform login code, a password, …) for a user, found
//! by the provider identity, else linked through the platform's unionid, else created. It opens
//! a session, whose secret (the client's `session_id`) is stored only as a hash, and issues a
//! short-lived access token signed with the app's key. Refreshing rotates the session secret;
//! presenting a rotated-away secret revokes the whole session (reuse detection). Tokens are
//! checked without a database read: the app's keys and its recently revoked sessions are kept
//! in memory, loaded on the app's first check and updated on every revocation.

pub mod policy;
pub mod providers;
pub mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloudlet_platforms::alipay::AlipayClient;
use cloudlet_platforms::douyin::DouyinClient;
use cloudlet_platforms::qq::QqClient;
use cloudlet_platforms::wechat::{SubscribeError, SubscribeMessage, WeChatClient};
use cloudlet_platforms::{PlatformError, PlatformHttp};
use cloudlet_store::{
    AppName, Bell, Emit, IdentityRow, ProviderRow, Rotation, SessionRow, StoreError, SystemStore,
    Topic, USER_CREATED, USER_DELETED, UserRow, UserStore,
};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::apps::{UNSEALED_SIGNING_KEY_LEN, signing_key_place};
use crate::clock::{Clock, Timestamp};
use crate::data::Triggers;
use crate::passwords::{self, PasswordWorkError};
use crate::queues::HintTicket;
use crate::random::Random;
use crate::sealing::Sealer;
use crate::secrets::SecretHash;
use policy::{check_password, normalize_email};
pub use providers::PlatformAddresses;
use providers::{Platform, ProviderInput, ProviderKind, ProviderView, Settings};
use tokens::{Claims, TokenProblem};

/// The largest profile, as JSON text.
pub const MAX_PROFILE_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown login provider {0:?}")]
    UnknownProvider(String),
    #[error("login with {0:?} is not enabled for this app")]
    ProviderNotEnabled(String),
    #[error("invalid provider configuration: {0}")]
    InvalidProviderConfig(String),
    #[error(
        "only the instance's operator may point an app at another address than the platform's own"
    )]
    AddressNotAllowed,
    #[error("invalid login request: {0}")]
    InvalidLoginRequest(String),
    #[error("the login code is invalid, expired or already used")]
    InvalidLoginCode,
    #[error("the platform refused this app's credentials ({0}); check the provider configuration")]
    ProviderMisconfigured(String),
    #[error("the platform did not answer as expected: {0}")]
    PlatformUnavailable(String),
    #[error("the email address is not valid: {0}")]
    InvalidEmail(String),
    #[error("the password is not accepted: {0}")]
    WeakPassword(String),
    #[error("an account with this email exists already")]
    EmailTaken,
    #[error("wrong email or password")]
    InvalidLogin,
    #[error("this request needs an access token")]
    MissingToken,
    #[error("the access token is not valid")]
    InvalidToken,
    #[error("the access token was issued for another app")]
    TokenForOtherApp,
    #[error("the access token has expired; refresh it")]
    TokenExpired,
    #[error("the session has been revoked")]
    SessionRevoked,
    #[error("the session id is not valid (unknown, expired or revoked)")]
    InvalidSession,
    #[error("the session id was already used; the session has been revoked")]
    SessionReused,
    #[error("no such user")]
    UserNotFound,
    #[error("the phone number code is invalid, expired or already used")]
    InvalidPhoneCode,
    #[error("the platform refuses this user's login (a high-risk account)")]
    LoginBlocked,
    #[error("the platform limits how often this user may log in; try again in a minute")]
    PlatformRateLimited,
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored secret could not be opened")]
    Sealing,
    #[error("too many passwords are being checked at once; try again")]
    Busy,
}

impl From<PasswordWorkError> for AuthError {
    fn from(e: PasswordWorkError) -> Self {
        match e {
            PasswordWorkError::Busy => AuthError::Busy,
            PasswordWorkError::Failed(problem) => AuthError::Store(StoreError::Task(problem)),
        }
    }
}

/// How long credentials live.
#[derive(Debug, Clone, Copy)]
pub struct AuthOptions {
    pub access_token_ttl: Duration,
    pub session_ttl: Duration,
    /// The HTTP timeout for calls to the platforms.
    pub platform_timeout: Duration,
    /// The strength a new password must reach, 0 to 4 (see [`policy`]).
    pub min_password_score: u8,
}

impl Default for AuthOptions {
    fn default() -> Self {
        AuthOptions {
            access_token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            platform_timeout: Duration::from_secs(10),
            min_password_score: 2,
        }
    }
}

/// A login attempt, as the client sends it.
#[derive(Debug, Clone)]
pub enum Login {
    /// A platform login code (and for Douyin, optionally an anonymous code).
    Platform {
        provider: String,
        code: Option<LoginCode>,
        anonymous_code: Option<LoginCode>,
    },
    Password {
        email: String,
        password: String,
    },
    Anonymous,
    Dev {
        user: String,
    },
}

/// A code a platform gave the client (a login code, a phone number code), as it may be sent
/// on to the platform: 1 to 512 printable ASCII characters. The platforms' codes are a few
/// dozen letters and digits; this keeps anything else from reaching their requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginCode(String);

impl LoginCode {
    pub const MAX_BYTES: usize = 512;

    /// The code in `text`, for the request field `field`.
    pub fn parse(field: &str, text: String) -> Result<Self, AuthError> {
        let valid = (1..=Self::MAX_BYTES).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(LoginCode(text))
        } else {
            Err(AuthError::InvalidLoginRequest(format!(
                "{field} must be 1 to {} printable ASCII characters",
                Self::MAX_BYTES
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The most users in one page of the admin listing.
pub const MAX_USER_PAGE: usize = 200;

/// One of a user's logins: the provider and the user's id there (an openid on WeChat and QQ).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentityView {
    pub provider: String,
    pub subject: String,
    pub unionid: Option<String>,
    pub created_at: Timestamp,
}

/// A user with their identities, as the admin API shows them.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: User,
    pub identities: Vec<IdentityView>,
}

/// A user as the API shows them.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// The user's id in the app.
    pub id: String,
    pub created_at: Timestamp,
    pub last_login_at: Timestamp,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub profile: Value,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            created_at: Timestamp::from_unix_ms(row.created_at_ms),
            last_login_at: Timestamp::from_unix_ms(row.last_login_at_ms),
            email: row.email,
            phone: row.phone,
            profile: serde_json::from_str(&row.profile).unwrap_or(Value::Object(Map::new())),
        }
    }
}

/// What a login or a refresh gives the client. (`Debug` hides the secrets.)
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionGrant {
    /// The long-lived secret that refreshes the session; shown only here.
    pub session_id: String,
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub user: User,
}

impl std::fmt::Debug for SessionGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGrant")
            .field("user", &self.user.id)
            .finish_non_exhaustive()
    }
}

/// A session as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    pub id: String,
    pub provider: String,
    pub created_at: Timestamp,
    pub refreshed_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

impl From<SessionRow> for SessionView {
    fn from(row: SessionRow) -> Self {
        SessionView {
            id: row.id,
            provider: row.provider,
            created_at: Timestamp::from_unix_ms(row.created_at_ms),
            refreshed_at: Timestamp::from_unix_ms(row.refreshed_at_ms),
            expires_at: Timestamp::from_unix_ms(row.expires_at_ms),
            revoked_at: row.revoked_at_ms.map(Timestamp::from_unix_ms),
        }
    }
}

/// Who made a request with a valid access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub app: AppName,
    pub user_id: String,
    pub session_id: String,
    pub provider: String,
    /// The user's id at the provider (openid on WeChat and QQ), from the token.
    pub openid: Option<String>,
    pub unionid: Option<String>,
    /// When the token stops authenticating, in Unix milliseconds.
    pub expires_at_ms: i64,
}

/// An app's keys and the sessions revoked within one token lifetime, in memory.
struct AppKeys {
    keys: Vec<(String, Vec<u8>)>,
    /// Revoked session ids and when they stop mattering (Unix ms).
    revoked: Mutex<HashMap<String, i64>>,
}

/// The auth service. Cheap to clone.
#[derive(Clone)]
pub struct Auth(Arc<Inner>);

struct Inner {
    system: Arc<dyn SystemStore>,
    users: Arc<dyn UserStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    sealer: Sealer,
    http: PlatformHttp,
    options: AuthOptions,
    keys: Mutex<HashMap<AppName, Arc<AppKeys>>>,
    /// Counts the drops of cached keys (under `keys`' lock): a load that a drop overtook is
    /// used but not kept, since it may predate what the drop was for.
    keys_dropped: std::sync::atomic::AtomicU64,
    /// WeChat access tokens per (app, provider), one fetch at a time per key.
    vault: Mutex<HashMap<(AppName, String), VaultSlot>>,
    /// Where account events go (the functions they trigger): set by the composition root.
    triggers: OnceLock<Arc<dyn Triggers>>,
    /// Sessions revoked (logged out, revoked, their user deleted), for whoever holds them open.
    revocations: tokio::sync::broadcast::Sender<Revocation>,
    /// The other nodes' doorbell, set by the composition root.
    bell: OnceLock<Arc<dyn Bell>>,
}

/// Sessions of an app that were just revoked: their tokens no longer authenticate, and
/// whatever they hold open (realtime sockets) is closed.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub app: AppName,
    pub sessions: Vec<String>,
}

/// One (app, provider)'s cached token; its lock makes fetches single-flight.
type VaultSlot = Arc<tokio::sync::Mutex<Option<VaultToken>>>;

/// A cached platform access token.
struct VaultToken {
    token: String,
    /// When to fetch a new one: well before the platform's expiry.
    refresh_after_ms: i64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Auth {
    pub fn new(
        system: Arc<dyn SystemStore>,
        users: Arc<dyn UserStore>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        sealer: Sealer,
        options: AuthOptions,
    ) -> Result<Self, AuthError> {
        let http = PlatformHttp::new(options.platform_timeout)
            .map_err(|e| AuthError::PlatformUnavailable(e.to_string()))?;
        Ok(Auth(Arc::new(Inner {
            system,
            users,
            clock,
            random,
            sealer,
            http,
            options,
            keys: Mutex::new(HashMap::new()),
            keys_dropped: std::sync::atomic::AtomicU64::new(0),
            vault: Mutex::new(HashMap::new()),
            triggers: OnceLock::new(),
            revocations: tokio::sync::broadcast::channel(1024).0,
            bell: OnceLock::new(),
        })))
    }

    // ---- provider configuration -------------------------------------------------------

    pub async fn configure_provider(
        &self,
        app: &AppName,
        provider: &str,
        body: Value,
        addresses: PlatformAddresses,
    ) -> Result<ProviderView, AuthError> {
        let kind = ProviderKind::of(provider)
            .ok_or_else(|| AuthError::UnknownProvider(provider.to_owned()))?;
        let input = ProviderInput::parse(kind, body).map_err(AuthError::InvalidProviderConfig)?;
        if let (ProviderKind::Platform(platform), Some(wanted)) = (
            kind,
            ProviderView::of(provider, &input.settings, None).base_url,
        ) {
            let current = self.provider_view(app, provider).await?.base_url;
            if !addresses.allow(&wanted, platform.default_base_url(), current.as_deref()) {
                return Err(AuthError::AddressNotAllowed);
            }
        }
        let now = self.0.clock.now();
        let sealed_secrets = input.secret.map(|secret| {
            self.0.sealer.seal(
                secret.as_bytes(),
                &seal_place(app, provider),
                &*self.0.random,
            )
        });
        let settings = serde_json::to_string(&input.settings)
            .map_err(|e| AuthError::InvalidProviderConfig(e.to_string()))?;
        self.0
            .system
            .put_provider(
                app,
                ProviderRow {
                    provider: provider.to_owned(),
                    settings,
                    sealed_secrets,
                    updated_at_ms: now.unix_ms(),
                },
            )
            .await?;
        lock(&self.0.vault).remove(&(app.to_owned(), provider.to_owned()));
        // The other nodes' vaults hold the old settings' access token too.
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Auth);
        }
        tracing::info!(app = %app, provider, "login provider configured");
        Ok(ProviderView::of(provider, &input.settings, Some(now)))
    }

    pub async fn provider_view(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<ProviderView, AuthError> {
        let kind = ProviderKind::of(provider)
            .ok_or_else(|| AuthError::UnknownProvider(provider.to_owned()))?;
        Ok(match self.0.system.provider(app, provider).await? {
            Some(row) => ProviderView::of(
                provider,
                &parse_settings(&row)?,
                Some(Timestamp::from_unix_ms(row.updated_at_ms)),
            ),
            None => ProviderView::of(
                provider,
                &Settings::Toggle {
                    enabled: kind.enabled_by_default(),
                },
                None,
            ),
        })
    }

    /// The provider's settings and unsealed secret, if it is enabled.
    async fn enabled_provider(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<(ProviderKind, Settings, Option<String>), AuthError> {
        let kind = ProviderKind::of(provider)
            .ok_or_else(|| AuthError::UnknownProvider(provider.to_owned()))?;
        let not_enabled = || AuthError::ProviderNotEnabled(provider.to_owned());
        match self.0.system.provider(app, provider).await? {
            None if kind.enabled_by_default() => {
                Ok((kind, Settings::Toggle { enabled: true }, None))
            }
            None => Err(not_enabled()),
            Some(row) => {
                let settings = parse_settings(&row)?;
                if !settings.enabled() {
                    return Err(not_enabled());
                }
                let secret = match &row.sealed_secrets {
                    Some(sealed) => {
                        let plain = self
                            .0
                            .sealer
                            .open(sealed, &seal_place(app, provider))
                            .map_err(|_| AuthError::Sealing)?;
                        Some(String::from_utf8(plain).map_err(|_| AuthError::Sealing)?)
                    }
                    None => None,
                };
                Ok((kind, settings, secret))
            }
        }
    }

    // ---- login ------------------------------------------------------------------------

    pub async fn login(&self, app: &AppName, login: Login) -> Result<SessionGrant, AuthError> {
        let (provider, user) = match login {
            Login::Platform {
                provider,
                code,
                anonymous_code,
            } => {
                let (user, session_key) = self
                    .platform_login(app, &provider, code, anonymous_code)
                    .await?;
                return self
                    .open_session(app, &provider, user, session_key.as_deref())
                    .await;
            }
            Login::Password { email, password } => {
                self.enabled_provider(app, "password").await?;
                let user = self.password_login(app, &email, &password).await?;
                ("password".to_owned(), user)
            }
            Login::Anonymous => {
                self.enabled_provider(app, "anonymous").await?;
                let user = self.new_user(None, None);
                self.create_user(app, user.clone(), None, None).await?;
                ("anonymous".to_owned(), user)
            }
            Login::Dev { user: name } => {
                self.enabled_provider(app, "dev").await?;
                if !(1..=64).contains(&name.len()) {
                    return Err(AuthError::InvalidLoginRequest(
                        "user must be 1 to 64 characters".into(),
                    ));
                }
                let user = self.find_or_create(app, "dev", "dev", &name, None).await?;
                ("dev".to_owned(), user)
            }
        };
        self.open_session(app, &provider, user, None).await
    }

    async fn platform_login(
        &self,
        app: &AppName,
        provider: &str,
        code: Option<LoginCode>,
        anonymous_code: Option<LoginCode>,
    ) -> Result<(UserRow, Option<String>), AuthError> {
        let (kind, settings, secret) = self.enabled_provider(app, provider).await?;
        let (ProviderKind::Platform(platform), Some(secret)) = (kind, secret) else {
            return Err(AuthError::InvalidLoginRequest(format!(
                "{provider} is not a platform provider"
            )));
        };
        let http = self.0.http.clone();
        let code_required = || AuthError::InvalidLoginRequest("code is required".into());
        let (subject, unionid, session_key) = match (platform, settings) {
            (Platform::WeChat | Platform::Qq, Settings::Platform(s)) => {
                let code = code.ok_or_else(code_required)?;
                let session = if platform == Platform::WeChat {
                    WeChatClient::new(http, &s.base_url, &s.appid, &secret)
                        .code_to_session(code.as_str())
                        .await
                } else {
                    QqClient::new(http, &s.base_url, &s.appid, &secret)
                        .code_to_session(code.as_str())
                        .await
                }
                .map_err(platform_error)?;
                (session.openid, session.unionid, Some(session.session_key))
            }
            (Platform::Douyin, Settings::Platform(s)) => {
                let session = DouyinClient::new(http, &s.base_url, &s.appid, &secret)
                    .code_to_session(
                        code.as_ref().map(LoginCode::as_str),
                        anonymous_code.as_ref().map(LoginCode::as_str),
                    )
                    .await
                    .map_err(platform_error)?;
                match (session.openid, session.anonymous_openid) {
                    (Some(openid), _) => (openid, session.unionid, session.session_key),
                    (None, Some(anonymous)) => (format!("anonymous:{anonymous}"), None, None),
                    (None, None) => {
                        return Err(AuthError::PlatformUnavailable("no openid".into()));
                    }
                }
            }
            (Platform::Alipay, Settings::Alipay(s)) => {
                let code = code.ok_or_else(code_required)?;
                let client =
                    AlipayClient::new(http, &s.base_url, &s.app_id, &secret, &s.alipay_public_key)
                        .map_err(|e| AuthError::ProviderMisconfigured(e.to_string()))?;
                let now_secs = self.0.clock.now().unix_ms() / 1000;
                let token = client
                    .oauth_token(code.as_str(), now_secs)
                    .await
                    .map_err(alipay_error)?;
                let subject = token.user_id.or(token.open_id).ok_or_else(|| {
                    AuthError::PlatformUnavailable("no user_id or open_id".into())
                })?;
                (subject, token.union_id, None)
            }
            _ => {
                return Err(AuthError::InvalidProviderConfig(
                    "the stored settings do not fit the provider; configure it again".into(),
                ));
            }
        };
        let user = self
            .find_or_create(app, provider, platform.family(), &subject, unionid)
            .await?;
        Ok((user, session_key))
    }

    /// The user of this identity; else the user linked by unionid, with this identity added;
    /// else a new user. A concurrent login of the same new identity wins once; the other finds
    /// its user.
    async fn find_or_create(
        &self,
        app: &AppName,
        provider: &str,
        family: &str,
        subject: &str,
        unionid: Option<String>,
    ) -> Result<UserRow, AuthError> {
        if subject.is_empty() {
            return Err(AuthError::PlatformUnavailable(
                "the platform answered an empty id".into(),
            ));
        }
        let unionid = unionid.filter(|u| !u.is_empty());
        let users = &self.0.users;
        if let Some(user) = users.user_by_identity(app, provider, subject).await? {
            return Ok(user);
        }
        let identity = |user_id: &str| IdentityRow {
            provider: provider.to_owned(),
            subject: subject.to_owned(),
            user_id: user_id.to_owned(),
            unionid: unionid.clone(),
            family: family.to_owned(),
            created_at_ms: self.0.clock.now().unix_ms(),
        };
        let linked = match &unionid {
            Some(unionid) => users.user_by_unionid(app, family, unionid).await?,
            None => None,
        };
        let written = match &linked {
            Some(user) => users.add_identity(app, identity(&user.id)).await,
            None => {
                let user = self.new_user(None, None);
                let id = user.id.clone();
                self.create_user(app, user, None, Some(identity(&id))).await
            }
        };
        match written {
            Ok(()) | Err(StoreError::Conflict) => users
                .user_by_identity(app, provider, subject)
                .await?
                .ok_or(AuthError::UserNotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a user, recording `auth.user_created` for the functions it triggers.
    async fn create_user(
        &self,
        app: &AppName,
        user: UserRow,
        password_hash: Option<String>,
        identity: Option<IdentityRow>,
    ) -> Result<(), StoreError> {
        let (emit, ticket) = self.emit(app, USER_CREATED).await?;
        self.0
            .users
            .create_user(app, user, password_hash, identity, emit)
            .await?;
        self.emitted(app, ticket).await;
        Ok(())
    }

    /// What an account event records for the functions it triggers, at the depth of the
    /// running trigger (0 outside one).
    async fn emit(
        &self,
        app: &AppName,
        kind: &str,
    ) -> Result<(Option<Emit>, Option<HintTicket>), StoreError> {
        let Some(triggers) = self.0.triggers.get() else {
            return Ok((None, None));
        };
        let depth = crate::data::TRIGGER_DEPTH
            .try_with(|depth| *depth)
            .unwrap_or(0);
        Ok(match triggers.emit_for_auth(app, kind, depth).await? {
            Some((emit, ticket)) => (Some(emit), Some(ticket)),
            None => (None, None),
        })
    }

    async fn emitted(&self, app: &AppName, ticket: Option<HintTicket>) {
        if let (Some(triggers), Some(ticket)) = (self.0.triggers.get(), ticket) {
            triggers.emitted(app, ticket).await;
        }
    }

    /// Connects account events to the functions they trigger. Set once; later calls are
    /// ignored.
    pub fn set_triggers(&self, triggers: Arc<dyn Triggers>) {
        let _ = self.0.triggers.set(triggers);
    }

    fn new_user(&self, email: Option<String>, phone: Option<String>) -> UserRow {
        let now = self.0.clock.now().unix_ms();
        UserRow {
            id: self.random_id("usr_", 12),
            created_at_ms: now,
            last_login_at_ms: now,
            email,
            phone,
            profile: "{}".into(),
        }
    }

    fn random_id(&self, prefix: &str, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.0.random.fill(&mut buf);
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(buf))
    }

    // ---- passwords ----------------------------------------------------------------------

    /// Creates a password account and logs it in.
    pub async fn sign_up(
        &self,
        app: &AppName,
        email: &str,
        password: &str,
    ) -> Result<SessionGrant, AuthError> {
        self.enabled_provider(app, "password").await?;
        let email = normalize_email(email)?;
        check_password(password, &email, self.0.options.min_password_score)?;
        let hash = self.hash_password(app, password.to_owned()).await?;
        let user = self.new_user(Some(email.clone()), None);
        let identity = IdentityRow {
            provider: "password".into(),
            subject: email,
            user_id: user.id.clone(),
            unionid: None,
            family: "password".into(),
            created_at_ms: user.created_at_ms,
        };
        match self
            .create_user(app, user.clone(), Some(hash), Some(identity))
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(AuthError::EmailTaken),
            Err(e) => return Err(e.into()),
        }
        self.open_session(app, "password", user, None).await
    }

    async fn password_login(
        &self,
        app: &AppName,
        email: &str,
        password: &str,
    ) -> Result<UserRow, AuthError> {
        // Leniently: an account made under older rules still logs in.
        let email = policy::account_of(email);
        let found = self.0.users.user_by_email(app, &email).await?;
        let (user, hash) = match found {
            Some((user, Some(hash))) => (Some(user), Some(hash)),
            _ => (None, None),
        };
        let matches = passwords::matches(password.to_owned(), hash, app.as_str()).await?;
        match user {
            Some(user) if matches => Ok(user),
            _ => Err(AuthError::InvalidLogin),
        }
    }

    async fn hash_password(&self, app: &AppName, password: String) -> Result<String, AuthError> {
        let mut salt = [0u8; 16];
        self.0.random.fill(&mut salt);
        Ok(passwords::hash(password, salt, app.as_str()).await?)
    }

    // ---- sessions and tokens ----------------------------------------------------------

    async fn open_session(
        &self,
        app: &AppName,
        provider: &str,
        user: UserRow,
        platform_key: Option<&str>,
    ) -> Result<SessionGrant, AuthError> {
        let now = self.0.clock.now().unix_ms();
        self.0.users.record_login(app, &user.id, now).await?;
        let secret = self.random_id("cs_", 32);
        let session_id = self.random_id("ses_", 12);
        let session = SessionRow {
            id: session_id.clone(),
            user_id: user.id.clone(),
            provider: provider.to_owned(),
            secret_hash: SecretHash::of(&secret).as_bytes().to_vec(),
            created_at_ms: now,
            refreshed_at_ms: now,
            expires_at_ms: now + self.0.options.session_ttl.as_millis() as i64,
            revoked_at_ms: None,
            sealed_platform_key: platform_key.map(|key| {
                self.0.sealer.seal(
                    key.as_bytes(),
                    &format!("{app}/session/{session_id}/platform-key"),
                    &*self.0.random,
                )
            }),
        };
        self.0.users.insert_session(app, session).await?;
        let user = UserRow {
            last_login_at_ms: now,
            ..user
        };
        self.grant(app, provider, &session_id, secret, user).await
    }

    async fn grant(
        &self,
        app: &AppName,
        provider: &str,
        session_id: &str,
        secret: String,
        user: UserRow,
    ) -> Result<SessionGrant, AuthError> {
        let keys = self.app_keys(app).await?;
        let (kid, key) = keys.keys.first().ok_or_else(|| {
            AuthError::Store(StoreError::Task(format!("app {app} has no signing key")))
        })?;
        let now_secs = self.0.clock.now().unix_ms() / 1000;
        let ttl = self.0.options.access_token_ttl.as_secs();
        // The platform ids ride in the token, so that functions get them without a lookup.
        let (oid, uni) = match self.0.users.identity_of(app, &user.id, provider).await? {
            Some((subject, unionid)) => (Some(subject), unionid),
            None => (None, None),
        };
        let claims = Claims {
            iss: "cloudlet".into(),
            aud: app.to_string(),
            sub: user.id.clone(),
            sid: session_id.to_owned(),
            prv: provider.to_owned(),
            scope: "user".into(),
            iat: now_secs,
            exp: now_secs + ttl as i64,
            oid,
            uni,
        };
        Ok(SessionGrant {
            session_id: secret,
            access_token: tokens::sign(&claims, kid, key),
            token_type: "Bearer",
            expires_in: ttl,
            user: user.into(),
        })
    }

    /// Trades a session secret for a new access token and a new secret.
    pub async fn refresh(
        &self,
        app: &AppName,
        session_secret: &str,
    ) -> Result<SessionGrant, AuthError> {
        let now = self.0.clock.now().unix_ms();
        let next = self.random_id("cs_", 32);
        let rotation = self
            .0
            .users
            .rotate_session(
                app,
                SecretHash::of(session_secret).as_bytes().to_vec(),
                SecretHash::of(&next).as_bytes().to_vec(),
                now,
                now + self.0.options.session_ttl.as_millis() as i64,
            )
            .await?;
        match rotation {
            Rotation::Rotated(session) => {
                let user = self
                    .0
                    .users
                    .user(app, &session.user_id)
                    .await?
                    .ok_or(AuthError::UserNotFound)?;
                self.grant(app, &session.provider, &session.id, next, user)
                    .await
            }
            Rotation::Reused { session_id } => {
                tracing::warn!(app = %app, session = %session_id, "a rotated session id was replayed; session revoked");
                self.remember_revoked(app, &[session_id]).await?;
                Err(AuthError::SessionReused)
            }
            Rotation::Unknown => Err(AuthError::InvalidSession),
        }
    }

    /// Checks an access token for `app`, without a database read once the app's keys are in
    /// memory.
    pub async fn authenticate(
        &self,
        app: &AppName,
        token: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::MissingToken)?;
        let unverified = tokens::parse(token).map_err(token_error)?;
        if unverified.claims.aud != *app {
            return Err(AuthError::TokenForOtherApp);
        }
        let keys = self.app_keys(app).await?;
        let secret = keys
            .keys
            .iter()
            .find(|(kid, _)| *kid == unverified.kid)
            .map(|(_, secret)| secret.as_slice());
        let now = self.0.clock.now().unix_ms();
        let claims = unverified
            .verify(app, secret, now / 1000)
            .map_err(token_error)?;
        if lock(&keys.revoked).contains_key(&claims.sid) {
            return Err(AuthError::SessionRevoked);
        }
        Ok(Principal {
            app: app.to_owned(),
            user_id: claims.sub,
            session_id: claims.sid,
            provider: claims.prv,
            openid: claims.oid,
            unionid: claims.uni,
            expires_at_ms: claims.exp.saturating_mul(1000),
        })
    }

    /// Revokes a session; its access tokens stop working at once.
    pub async fn revoke(&self, app: &AppName, session_id: &str) -> Result<bool, AuthError> {
        let now = self.0.clock.now().unix_ms();
        let revoked = self
            .0
            .users
            .revoke_session(app, session_id, now)
            .await?
            .is_some();
        self.remember_revoked(app, &[session_id.to_owned()]).await?;
        Ok(revoked)
    }

    pub async fn sessions_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<SessionView>, AuthError> {
        if self.0.users.user(app, user_id).await?.is_none() {
            return Err(AuthError::UserNotFound);
        }
        let sessions = self.0.users.sessions_of(app, user_id).await?;
        Ok(sessions.into_iter().map(SessionView::from).collect())
    }

    // ---- the user's own account ---------------------------------------------------------

    pub async fn user(&self, principal: &Principal) -> Result<User, AuthError> {
        self.0
            .users
            .user(&principal.app, &principal.user_id)
            .await?
            .map(User::from)
            .ok_or(AuthError::UserNotFound)
    }

    /// Merges `changes` into the profile; a `null` removes a field.
    pub async fn update_profile(
        &self,
        principal: &Principal,
        changes: Map<String, Value>,
    ) -> Result<User, AuthError> {
        let user = self.user(principal).await?;
        let mut profile = match user.profile {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        for (key, value) in changes {
            if key.is_empty() || key.len() > 64 {
                return Err(AuthError::InvalidProfile(
                    "field names are 1 to 64 characters".into(),
                ));
            }
            if value.is_null() {
                profile.remove(&key);
            } else {
                profile.insert(key, value);
            }
        }
        let text = Value::Object(profile).to_string();
        if text.len() > MAX_PROFILE_BYTES {
            return Err(AuthError::InvalidProfile(format!(
                "a profile is at most {MAX_PROFILE_BYTES} bytes of JSON"
            )));
        }
        self.0
            .users
            .update_profile(&principal.app, &principal.user_id, text)
            .await?
            .map(User::from)
            .ok_or(AuthError::UserNotFound)
    }

    /// Deletes the account, its identities and sessions; its tokens stop working at once.
    pub async fn delete_user(&self, principal: &Principal) -> Result<(), AuthError> {
        self.delete_user_by_id(&principal.app, &principal.user_id)
            .await
    }

    /// [`Auth::delete_user`], by an administrator of the app.
    pub async fn delete_user_by_id(&self, app: &AppName, user_id: &str) -> Result<(), AuthError> {
        let (emit, ticket) = self.emit(app, USER_DELETED).await?;
        let sessions = self
            .0
            .users
            .delete_user(app, user_id, self.0.clock.now().unix_ms(), emit)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        self.emitted(app, ticket).await;
        self.remember_revoked(app, &sessions).await?;
        tracing::info!(app = %app, user = %user_id, "user deleted");
        Ok(())
    }

    /// A page of the app's users by id, the next page's `after` if there may be one. With
    /// `search`: those whose id, email, phone, openid or unionid it is.
    pub async fn users(
        &self,
        app: &AppName,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, Option<String>), AuthError> {
        let limit = limit.clamp(1, MAX_USER_PAGE);
        let rows = self.0.users.list_users(app, search, after, limit).await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|r| r.id.clone()))
            .flatten();
        Ok((rows.into_iter().map(User::from).collect(), next))
    }

    /// One user with their identities (the platforms' ids for them).
    pub async fn user_detail(&self, app: &AppName, user_id: &str) -> Result<UserDetail, AuthError> {
        let user = self
            .0
            .users
            .user(app, user_id)
            .await?
            .ok_or(AuthError::UserNotFound)?;
        let identities = self
            .0
            .users
            .identities_of(app, user_id)
            .await?
            .into_iter()
            .map(|row| IdentityView {
                provider: row.provider,
                subject: row.subject,
                unionid: row.unionid,
                created_at: Timestamp::from_unix_ms(row.created_at_ms),
            })
            .collect();
        Ok(UserDetail {
            user: user.into(),
            identities,
        })
    }

    /// Drops what is cached for an app (after it is deleted), and tells the other nodes (who
    /// find it gone when they read its keys again).
    pub fn forget_app(&self, app: &AppName) {
        self.drop_keys(Some(app));
        lock(&self.0.vault).retain(|(vault_app, _), _| vault_app != app);
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Auth);
        }
    }

    /// Tells the other nodes that the app's secret key was replaced: the sockets opened
    /// with the old one there check theirs.
    pub fn key_replaced(&self, app: &AppName) {
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Keys);
        }
    }

    // ---- WeChat business APIs -----------------------------------------------------------

    /// Binds the phone number behind a WeChat `getPhoneNumber` code to the user.
    pub async fn bind_phone(
        &self,
        principal: &Principal,
        provider: &str,
        code: &LoginCode,
    ) -> Result<User, AuthError> {
        let code = code.as_str();
        let app = &principal.app;
        let client = self.wechat_client(app, provider).await?;
        let mut token = self
            .wechat_access_token(app, provider, &client, None)
            .await?;
        let mut answer = client.phone_number(&token, code).await;
        if let Err(PlatformError::Refused { code: errcode, .. }) = &answer
            && cloudlet_platforms::wechat::is_stale_token(*errcode)
        {
            token = self
                .wechat_access_token(app, provider, &client, Some(&token))
                .await?;
            answer = client.phone_number(&token, code).await;
        }
        let phone = match answer {
            Ok(phone) => phone,
            Err(PlatformError::Refused { code: 40029, .. }) => {
                return Err(AuthError::InvalidPhoneCode);
            }
            Err(e) => return Err(platform_error(e)),
        };
        self.0
            .users
            .set_phone(app, &principal.user_id, phone.phone_number)
            .await?
            .map(User::from)
            .ok_or(AuthError::UserNotFound)
    }

    /// A client for an enabled WeChat provider of the app.
    async fn wechat_client(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<WeChatClient, AuthError> {
        let (kind, settings, secret) = self.enabled_provider(app, provider).await?;
        let (ProviderKind::Platform(Platform::WeChat), Settings::Platform(s), Some(secret)) =
            (kind, settings, secret)
        else {
            return Err(AuthError::InvalidLoginRequest(format!(
                "{provider} is not a WeChat provider"
            )));
        };
        Ok(WeChatClient::new(
            self.0.http.clone(),
            &s.base_url,
            &s.appid,
            &secret,
        ))
    }

    /// How long one call to a platform may take.
    pub fn platform_timeout(&self) -> Duration {
        self.0.options.platform_timeout
    }

    /// The appid of an enabled WeChat provider of the app.
    pub async fn wechat_appid(&self, app: &AppName, provider: &str) -> Result<String, AuthError> {
        Ok(self.wechat_client(app, provider).await?.appid().to_owned())
    }

    /// Sends a subscribe message with the app's access token for `provider` (renewed and sent
    /// again once if WeChat calls it stale). The outer error is the provider's (not enabled,
    /// misconfigured, no token to be had); the inner one is WeChat's answer to the message.
    pub async fn send_subscribe_message(
        &self,
        app: &AppName,
        provider: &str,
        message: &SubscribeMessage,
    ) -> Result<Result<(), SubscribeError>, AuthError> {
        let client = self.wechat_client(app, provider).await?;
        let token = self
            .wechat_access_token(app, provider, &client, None)
            .await?;
        match client.send_subscribe_message(&token, message).await {
            Err(SubscribeError::StaleToken { .. }) => {
                let token = self
                    .wechat_access_token(app, provider, &client, Some(&token))
                    .await?;
                Ok(client.send_subscribe_message(&token, message).await)
            }
            answer => Ok(answer),
        }
    }

    /// The app's WeChat access token: cached, renewed at 80% of its life, fetched by one caller
    /// at a time while the others wait for it. `stale` is a token the platform just refused:
    /// then a new one is forced.
    async fn wechat_access_token(
        &self,
        app: &AppName,
        provider: &str,
        client: &WeChatClient,
        stale: Option<&str>,
    ) -> Result<String, AuthError> {
        let slot = Arc::clone(
            lock(&self.0.vault)
                .entry((app.to_owned(), provider.to_owned()))
                .or_default(),
        );
        let mut cached = slot.lock().await;
        let now = self.0.clock.now().unix_ms();
        // Another caller may have replaced the stale token while this one waited.
        if let (Some(token), Some(stale)) = (cached.as_ref(), stale)
            && token.token != stale
            && token.refresh_after_ms > now
        {
            return Ok(token.token.clone());
        }
        if let Some(token) = cached.as_ref()
            && token.refresh_after_ms > now
            && Some(token.token.as_str()) != stale
        {
            return Ok(token.token.clone());
        }
        // A normal call first: forcing is limited (20 a day, 30 s apart) and cancels the token
        // for every other server of the app; only force when WeChat hands back the stale one.
        let mut fresh = client.stable_token(false).await.map_err(platform_error)?;
        if stale == Some(fresh.token.as_str()) {
            fresh = client.stable_token(true).await.map_err(platform_error)?;
        }
        let life_ms = (fresh.expires_in_secs as i64).saturating_mul(1000);
        *cached = Some(VaultToken {
            token: fresh.token.clone(),
            refresh_after_ms: now + life_ms * 4 / 5,
        });
        Ok(fresh.token)
    }

    async fn remember_revoked(&self, app: &AppName, sessions: &[String]) -> Result<(), AuthError> {
        let keys = self.app_keys(app).await?;
        let until =
            self.0.clock.now().unix_ms() + self.0.options.access_token_ttl.as_millis() as i64;
        let mut revoked = lock(&keys.revoked);
        let now = self.0.clock.now().unix_ms();
        revoked.retain(|_, expires| *expires > now);
        for session in sessions {
            revoked.insert(session.clone(), until);
        }
        drop(revoked);
        // Nobody listening is fine.
        let _ = self.0.revocations.send(Revocation {
            app: app.to_owned(),
            sessions: sessions.to_vec(),
        });
        if let Some(bell) = self.0.bell.get() {
            bell.ring(app, Topic::Auth);
        }
        Ok(())
    }

    /// Rings the other nodes whenever sessions are revoked here. Set once.
    pub fn set_bell(&self, bell: Arc<dyn Bell>) {
        let _ = self.0.bell.set(bell);
    }

    /// Another node revoked sessions of the app, changed a login provider of it (or deleted it):
    /// its access tokens of the platforms are fetched again, its keys and revocations are
    /// read again, and the sessions newly revoked told to whoever holds them open. False when
    /// the app no longer exists.
    pub async fn heard(&self, app: &AppName) -> bool {
        // A provider's settings may have changed there: its access token is fetched again.
        lock(&self.0.vault).retain(|(vault_app, _), _| vault_app != app);
        let before = self.drop_keys(Some(app));
        // Read now and put in place of whatever is cached: a load that began before the
        // change (by a request meanwhile) must not be what stays.
        let now = match self.load_keys(app).await {
            Ok(keys) => {
                let mut cache = lock(&self.0.keys);
                // Keys loaded meanwhile (a revocation here reads them again after its commit)
                // may know revocations this load began too early to see: they are kept too.
                if let Some(meanwhile) = cache.get(app) {
                    let theirs = lock(&meanwhile.revoked).clone();
                    let mut ours = lock(&keys.revoked);
                    for (session, until) in theirs {
                        let kept = ours.entry(session).or_insert(until);
                        *kept = (*kept).max(until);
                    }
                }
                cache.insert(app.clone(), Arc::clone(&keys));
                drop(cache);
                keys
            }
            Err(AuthError::InvalidToken) => return false,
            Err(e) => {
                // Not read now: read on next use (nothing stale is kept).
                tracing::warn!(app = %app, error = %e, "could not read the app's keys again");
                self.drop_keys(Some(app));
                return true;
            }
        };
        let fresh: Vec<String> = {
            let known = before.as_ref().map(|keys| lock(&keys.revoked).clone());
            lock(&now.revoked)
                .keys()
                .filter(|session| known.as_ref().is_none_or(|k| !k.contains_key(*session)))
                .cloned()
                .collect()
        };
        if !fresh.is_empty() {
            let _ = self.0.revocations.send(Revocation {
                app: app.clone(),
                sessions: fresh,
            });
        }
        true
    }

    /// Drops every app's cached keys and revocations (another node's changes may have been
    /// missed); sockets are checked again by their holders.
    pub fn heard_everything(&self) {
        self.drop_keys(None);
        lock(&self.0.vault).clear();
    }

    /// Drops the cached keys of `app` (of every app for `None`); what was cached of it.
    fn drop_keys(&self, app: Option<&AppName>) -> Option<Arc<AppKeys>> {
        let mut keys = lock(&self.0.keys);
        self.0
            .keys_dropped
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match app {
            Some(app) => keys.remove(app),
            None => {
                keys.clear();
                None
            }
        }
    }

    /// Drops the app's keys and revocations from memory (the app idled out; they are read
    /// again on its next request). The platform tokens stay: fetching one is a platform call.
    pub fn forget_idle(&self, app: &AppName) {
        self.drop_keys(Some(app));
    }

    /// Whether a session was revoked within the last token lifetime (its tokens then no
    /// longer authenticate): for what holds a session open, to check again.
    pub async fn is_revoked(&self, app: &AppName, session_id: &str) -> bool {
        match self.app_keys(app).await {
            Ok(keys) => lock(&keys.revoked).contains_key(session_id),
            // Keys that can not be read: the app is gone, or its store is; hold nothing open.
            Err(_) => true,
        }
    }

    /// Sessions as they are revoked, from now on.
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Revocation> {
        self.0.revocations.subscribe()
    }

    /// The app's signing keys and recent revocations, loaded on first use.
    async fn app_keys(&self, app: &AppName) -> Result<Arc<AppKeys>, AuthError> {
        let dropped = {
            let keys = lock(&self.0.keys);
            if let Some(keys) = keys.get(app) {
                return Ok(Arc::clone(keys));
            }
            self.0
                .keys_dropped
                .load(std::sync::atomic::Ordering::Acquire)
        };
        let loaded = self.load_keys(app).await?;
        let mut keys = lock(&self.0.keys);
        if self
            .0
            .keys_dropped
            .load(std::sync::atomic::Ordering::Acquire)
            != dropped
        {
            // A drop overtook this load (a revocation's, an idle app's): not kept.
            return Ok(loaded);
        }
        // Two first requests may both load; either result is complete, keep the first.
        Ok(Arc::clone(keys.entry(app.to_owned()).or_insert(loaded)))
    }

    /// The app's signing keys and recent revocations as the store has them now.
    async fn load_keys(&self, app: &AppName) -> Result<Arc<AppKeys>, AuthError> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for key in self.0.system.signing_keys(app).await? {
            let secret = if key.secret.len() == UNSEALED_SIGNING_KEY_LEN {
                // Made before keys were sealed; `cloudlet migrate` seals them.
                key.secret
            } else {
                self.0
                    .sealer
                    .open(&key.secret, &signing_key_place(app, &key.kid))
                    .map_err(|_| AuthError::Sealing)?
            };
            keys.push((key.kid, secret));
        }
        if keys.is_empty() {
            // No such app (every app has a key): refuse before touching any app database, and
            // cache nothing, so that tokens naming made-up apps cost one system read.
            return Err(AuthError::InvalidToken);
        }
        let window = self.0.options.access_token_ttl.as_millis() as i64;
        let now = self.0.clock.now().unix_ms();
        let revoked = self
            .0
            .users
            .revoked_since(app, now - window)
            .await?
            .into_iter()
            .map(|session| (session, now + window))
            .collect();
        Ok(Arc::new(AppKeys {
            keys,
            revoked: Mutex::new(revoked),
        }))
    }
}

fn seal_place(app: &AppName, provider: &str) -> String {
    format!("{app}/provider/{provider}")
}

fn parse_settings(row: &ProviderRow) -> Result<Settings, AuthError> {
    serde_json::from_str(&row.settings).map_err(|e| AuthError::InvalidProviderConfig(e.to_string()))
}

fn token_error(problem: TokenProblem) -> AuthError {
    match problem {
        TokenProblem::Malformed | TokenProblem::BadSignature => AuthError::InvalidToken,
        TokenProblem::OtherApp => AuthError::TokenForOtherApp,
        TokenProblem::Expired => AuthError::TokenExpired,
    }
}

/// Maps a platform's answer: a refused code is the user's problem, refused credentials the
/// operator's, anything else the platform's.
fn platform_error(e: PlatformError) -> AuthError {
    match e {
        PlatformError::Refused { code, message } => match code {
            // WeChat/QQ: invalid or used code; Douyin: bad code, bad anonymous code.
            40029 | 40163 | 40018 | 40019 => AuthError::InvalidLoginCode,
            // WeChat: "code blocked" (a high-risk user); "minute-quota reach limit" per user.
            40226 => AuthError::LoginBlocked,
            45011 => AuthError::PlatformRateLimited,
            // Bad appid or secret (WeChat/QQ 40013, 40125, 40001; Douyin 40015, 40017).
            40013 | 40125 | 40001 | 40015 | 40017 => {
                AuthError::ProviderMisconfigured(format!("{code} {message}"))
            }
            _ => AuthError::PlatformUnavailable(format!("{code} {message}")),
        },
        PlatformError::BadAnswer(m) if m.contains("needed") => AuthError::InvalidLoginRequest(m),
        other => AuthError::PlatformUnavailable(other.to_string()),
    }
}

/// Maps Alipay's answer: `isv.code-invalid` is the user's problem, a refused app id or
/// signature (or a reply that does not verify) the operator's.
fn alipay_error(e: PlatformError) -> AuthError {
    match e {
        PlatformError::Refused { message, .. } if message.starts_with("isv.code-invalid") => {
            AuthError::InvalidLoginCode
        }
        PlatformError::Refused { message, .. }
            if [
                "isv.invalid-app-id",
                "isv.invalid-signature",
                "isv.missing-signature",
            ]
            .iter()
            .any(|sub| message.starts_with(sub)) =>
        {
            AuthError::ProviderMisconfigured(message)
        }
        PlatformError::Crypto(problem) => AuthError::ProviderMisconfigured(problem.to_owned()),
        other => AuthError::PlatformUnavailable(other.to_string()),
    }
}
