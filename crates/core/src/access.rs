//! Who is calling ([`Caller`]), and what they may do.
//!
//! Two kinds of bearer secret administer apps: the instance's admin token (everything) and each
//! app's secret key (everything the admin token may do, for that app only). Both are stored as
//! hashes; the admin token's hash is kept in memory so that the common check needs no database
//! read. End users carry access tokens instead, checked by [`crate::auth`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
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
    /// The last key of each app that held here ([`Access::key_to_check`]): only ever a hint of
    /// which key to try without a lookup, never taken as proof.
    held: Arc<Mutex<HashMap<AppName, SecretHash>>>,
}

/// Apps whose last key that held is kept; past it, all are forgotten (it is only a hint).
const MAX_HELD_KEYS: usize = 10_000;

/// An app's secret key that held here before, taken on trust by a write that checks it itself,
/// in its own transaction where the store can ([`cloudlet_store::QueueStore::checks_app_key_at_send`])
/// and before anything is written otherwise; such a write answers nothing but its success
/// before the key is known to hold (see [`KeyToCheck::holds`]).
#[derive(Clone)]
pub struct KeyToCheck {
    app: AppName,
    hash: SecretHash,
}

impl std::fmt::Debug for KeyToCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyToCheck({})", self.app)
    }
}

impl KeyToCheck {
    pub fn app(&self) -> &AppName {
        &self.app
    }

    /// The SHA-256 of the key, as the apps' rows keep it.
    pub fn hash(&self) -> &[u8] {
        self.hash.as_bytes()
    }

    /// Whether it is its app's key now (one lookup).
    pub async fn holds(&self, system: &dyn SystemStore) -> Result<bool, StoreError> {
        Ok(system.app_by_key_hash(self.hash()).await?.as_ref() == Some(&self.app))
    }
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
        let held = Arc::default();
        Ok((
            Access {
                system,
                admin,
                held,
            },
            setup,
        ))
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
            Some(app) => {
                let mut held = lock(&self.held);
                if held.len() >= MAX_HELD_KEYS && !held.contains_key(&app) {
                    held.clear();
                }
                held.insert(app.clone(), hash);
                Ok(Caller::AppKey(app))
            }
            None => Err(AccessError::InvalidCredentials),
        }
    }

    /// `bearer` as a key to check in the write it authorizes, if it is the key of `app` that
    /// last held here; `None` otherwise (then [`Access::authenticate`] looks it up).
    pub fn key_to_check(&self, bearer: &str, app: &AppName) -> Option<KeyToCheck> {
        let hash = SecretHash::of(bearer);
        let held = lock(&self.held);
        held.get(app)
            .filter(|last| last.matches(&hash))
            .map(|_| KeyToCheck {
                app: app.clone(),
                hash,
            })
    }

    /// Forgets the app's key (rotated or deleted, here or on another node): the next call
    /// with any key of it is looked up.
    pub fn forget_app(&self, app: &AppName) {
        lock(&self.held).remove(app);
    }

    /// Forgets every app's key (another node's rotations may have been missed).
    pub fn forget_all(&self) {
        lock(&self.held).clear();
    }

    /// Forgets a key that did not hold: the next call with it is looked up.
    pub fn forget(&self, key: &KeyToCheck) {
        let mut held = lock(&self.held);
        if held
            .get(&key.app)
            .is_some_and(|last| last.matches(&key.hash))
        {
            held.remove(&key.app);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;
    use cloudlet_store::sqlite::SqliteSystemStore;
    use cloudlet_store::{AppRow, Durability, SigningKeyRow};

    async fn with_apps(dir: &tempfile::TempDir, apps: &[(&str, &str)]) -> Access {
        let system: Arc<dyn SystemStore> = Arc::new(
            SqliteSystemStore::open(&dir.path().join("system.db"), Durability::Full).unwrap(),
        );
        for (name, key) in apps {
            let row = AppRow {
                name: (*name).into(),
                created_at_ms: 1,
                secret_key_hash: SecretHash::of(key).as_bytes().to_vec(),
                secret_key_hint: "cls_".into(),
                secret_key_created_at_ms: 1,
            };
            let signing = SigningKeyRow {
                kid: "k1".into(),
                secret: vec![7; 32],
                created_at_ms: 1,
            };
            system.insert_app(row, signing).await.unwrap();
        }
        let random = SeededRandom::new(1);
        Access::start(system, Some("an-admin-token-long-enough"), &random)
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn only_a_key_that_held_for_its_own_app_is_taken_to_check_and_forgetting_undoes_it() {
        let dir = tempfile::tempdir().unwrap();
        let access = with_apps(&dir, &[("shop", "cls_shop"), ("blog", "cls_blog")]).await;
        let (shop, blog) = (
            AppName::parse("shop").unwrap(),
            AppName::parse("blog").unwrap(),
        );
        // Nothing before a lookup found it.
        assert!(access.key_to_check("cls_shop", &shop).is_none());
        assert_eq!(
            access.authenticate(Some("cls_shop")).await.unwrap(),
            Caller::AppKey(shop.clone())
        );
        let key = access.key_to_check("cls_shop", &shop).unwrap();
        assert_eq!(key.app(), &shop);
        assert_eq!(key.hash(), SecretHash::of("cls_shop").as_bytes());
        // Not for another app, another key, the admin token, or a refused key.
        assert!(access.key_to_check("cls_shop", &blog).is_none());
        assert!(access.key_to_check("cls_blog", &shop).is_none());
        assert!(access.key_to_check("cls_other", &shop).is_none());
        assert!(
            access
                .key_to_check("an-admin-token-long-enough", &shop)
                .is_none()
        );
        assert!(access.authenticate(Some("cls_other")).await.is_err());
        assert!(access.key_to_check("cls_other", &shop).is_none());
        // A key that held once is checked again when asked.
        assert!(key.holds(&*access.system).await.unwrap());
        // Forgetting a key, its app, or everything: looked up again.
        access.forget(&key);
        assert!(access.key_to_check("cls_shop", &shop).is_none());
        access.authenticate(Some("cls_shop")).await.unwrap();
        access.authenticate(Some("cls_blog")).await.unwrap();
        access.forget_app(&shop);
        assert!(access.key_to_check("cls_shop", &shop).is_none());
        assert!(access.key_to_check("cls_blog", &blog).is_some());
        access.forget_all();
        assert!(access.key_to_check("cls_blog", &blog).is_none());
        // A newer key of the app replaces the older.
        access.authenticate(Some("cls_shop")).await.unwrap();
        access
            .system
            .replace_app_key(
                &shop,
                SecretHash::of("cls_new").as_bytes().to_vec(),
                "cls_".into(),
                2,
            )
            .await
            .unwrap();
        assert!(!key.holds(&*access.system).await.unwrap());
        access.authenticate(Some("cls_new")).await.unwrap();
        assert!(access.key_to_check("cls_shop", &shop).is_none());
        assert!(access.key_to_check("cls_new", &shop).is_some());
    }
}
