//! Who is calling ([`Caller`]), and what they may do.
//!
//! Two kinds of bearer secret administer apps: the instance's admin token (everything) and each
//! app's secret key (everything the admin token may do, for that app only). Both are stored as
//! hashes; the admin token's hash is kept in memory so that the common check needs no database
//! read. End users carry access tokens instead, checked by [`crate::auth`].

use std::sync::Arc;

use cloudlet_store::{AppName, StoreError, SystemStore};

use crate::auth::Principal;
use crate::random::Random;
use crate::secrets::{NewSecret, SecretHash};

/// The shortest admin token accepted from the environment.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("this request needs an admin token or an app secret key")]
    MissingCredentials,
    #[error("the token is not valid")]
    InvalidCredentials,
    #[error("this token may not do that")]
    Forbidden,
    #[error(
        "the admin token from the environment is shorter than {MIN_ADMIN_TOKEN_LEN} characters"
    )]
    WeakAdminToken,
    /// A token with a dot reads as a user's access token (a JWT), so it could never be used.
    #[error("the admin token from the environment may not contain a dot")]
    DottedAdminToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who is calling: decided once per request, from its credentials and the app it names, and the
/// only answer to that question that handlers and services see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The instance's admin token: everything, on every app.
    Admin,
    /// An app's secret key: everything the admin token may do, for that app only.
    AppKey(AppName),
    /// An end user of the app the request names, with a valid access token.
    User(Principal),
    /// No credentials.
    Anonymous,
}

impl Caller {
    /// Admin-only operations (creating and listing apps).
    pub fn require_admin(&self) -> Result<(), AccessError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Anonymous => Err(AccessError::MissingCredentials),
            Caller::AppKey(_) | Caller::User(_) => Err(AccessError::Forbidden),
        }
    }

    /// Administering one app: the admin token or that app's key.
    pub fn require_app_admin(&self, app: &AppName) -> Result<(), AccessError> {
        match self {
            _ if self.administers(app) => Ok(()),
            Caller::Anonymous => Err(AccessError::MissingCredentials),
            _ => Err(AccessError::Forbidden),
        }
    }

    /// Whether the caller administers `app`: rules do not apply to it there.
    pub fn administers(&self, app: &AppName) -> bool {
        match self {
            Caller::Admin => true,
            Caller::AppKey(own) => own == app,
            Caller::User(_) | Caller::Anonymous => false,
        }
    }

    /// The end user calling, if it is one.
    pub fn user(&self) -> Option<&Principal> {
        match self {
            Caller::User(principal) => Some(principal),
            _ => None,
        }
    }
}

/// What start-up did with the admin token. (`Debug` hides a generated token.)
#[derive(PartialEq, Eq)]
pub enum AdminTokenSetup {
    /// A token was generated; this is the only time its text exists. Print it once.
    Generated(String),
    /// The token from the environment was stored (first start, or it changed).
    FromEnvironment,
    /// The stored token stays.
    Unchanged,
}

impl std::fmt::Debug for AdminTokenSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdminTokenSetup::Generated(_) => "Generated(..)",
            AdminTokenSetup::FromEnvironment => "FromEnvironment",
            AdminTokenSetup::Unchanged => "Unchanged",
        })
    }
}

#[derive(Clone)]
pub struct Access {
    system: Arc<dyn SystemStore>,
    admin: SecretHash,
}

impl Access {
    /// Loads the admin token's hash, creating the token on first start: from `env_token` if
    /// given (which also replaces a stored one, the way to recover a lost token), else generated.
    pub async fn start(
        system: Arc<dyn SystemStore>,
        env_token: Option<&str>,
        random: &dyn Random,
    ) -> Result<(Self, AdminTokenSetup), AccessError> {
        let stored = system
            .admin_token_hash()
            .await?
            .and_then(|bytes| SecretHash::from_bytes(&bytes));
        let (admin, setup) = match (env_token, stored) {
            (Some(token), _) if token.len() < MIN_ADMIN_TOKEN_LEN => {
                return Err(AccessError::WeakAdminToken);
            }
            (Some(token), _) if token.contains('.') => {
                return Err(AccessError::DottedAdminToken);
            }
            (Some(token), stored) => {
                let hash = SecretHash::of(token);
                if stored.is_some_and(|s| s.matches(&hash)) {
                    (hash, AdminTokenSetup::Unchanged)
                } else {
                    system
                        .set_admin_token_hash(hash.as_bytes().to_vec())
                        .await?;
                    (hash, AdminTokenSetup::FromEnvironment)
                }
            }
            (None, Some(stored)) => (stored, AdminTokenSetup::Unchanged),
            (None, None) => {
                let token = Self::store_new_token(&*system, random).await?;
                (SecretHash::of(&token), AdminTokenSetup::Generated(token))
            }
        };
        Ok((Access { system, admin }, setup))
    }

    /// Replaces the admin token with a new random one and returns it. For the offline
    /// `cloudlet admin reset-token`; a running server keeps the hash it loaded.
    pub async fn reset_admin_token(
        system: &dyn SystemStore,
        random: &dyn Random,
    ) -> Result<String, AccessError> {
        Self::store_new_token(system, random).await
    }

    async fn store_new_token(
        system: &dyn SystemStore,
        random: &dyn Random,
    ) -> Result<String, AccessError> {
        let token = NewSecret::generate("cla_", random);
        system
            .set_admin_token_hash(token.hash.as_bytes().to_vec())
            .await?;
        Ok(token.plain)
    }

    /// Resolves a bearer secret to its caller.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Caller, AccessError> {
        let token = bearer.ok_or(AccessError::MissingCredentials)?;
        let hash = SecretHash::of(token);
        if self.admin.matches(&hash) {
            return Ok(Caller::Admin);
        }
        match self.system.app_by_key_hash(hash.as_bytes()).await? {
            Some(app) => Ok(Caller::AppKey(app)),
            None => Err(AccessError::InvalidCredentials),
        }
    }
}
