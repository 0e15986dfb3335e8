//! Who is calling the admin API, and what they may do.
//!
//! Two kinds of bearer secret exist: the instance's admin token (everything) and each app's
//! secret key (everything the admin token may do, for that app only). Both are stored as hashes;
//! the admin token's hash is kept in memory so that the common check needs no database read.

use std::sync::Arc;

use cloudlet_store::{StoreError, SystemStore};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An authenticated caller of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    /// Holds the secret key of this app.
    App(String),
}

impl Caller {
    /// Admin-only operations (creating and listing apps).
    pub fn require_admin(&self) -> Result<(), AccessError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::App(_) => Err(AccessError::Forbidden),
        }
    }

    /// Operations on one app.
    pub fn require_app(&self, app: &str) -> Result<(), AccessError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::App(own) if own == app => Ok(()),
            Caller::App(_) => Err(AccessError::Forbidden),
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
            Some(app) => Ok(Caller::App(app)),
            None => Err(AccessError::InvalidCredentials),
        }
    }
}
