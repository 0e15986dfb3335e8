//! Who is calling ([`Caller`]), and what they may do.
//!
//! Two kinds of bearer secret administer apps: the instance's admin token (everything) and each
//! app's secret key (everything the admin token may do, for that app only). Both are stored as
//! hashes; the admin token's hash is kept in memory so that the common check needs no database
//! read, and so are the app keys this node has seen work ([`KnownKeys`]) until they are
//! replaced or their app deleted, here or on another node. End users carry access tokens
//! instead, checked by [`crate::auth`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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
    keys: Arc<Mutex<KnownKeys>>,
}

/// The app keys this node has seen work, by hash, so that a backend's calls with its app's
/// key cost no database read each (on PostgreSQL, a round trip). Only keys that worked are
/// kept, at most one an app. A key is forgotten when it is replaced or its app deleted: here
/// at once, from another node when its ring arrives (all of them when rings may have been
/// missed). A read that began before a forgetting is not kept ([`KnownKeys::forgotten`]).
#[derive(Default)]
pub struct KnownKeys {
    apps: HashMap<SecretHash, AppName>,
    /// Counts forgettings: a key read from the database is kept only if none happened since
    /// the read began, lest it bring back a key replaced meanwhile.
    forgotten: u64,
}

impl KnownKeys {
    /// Keeps `hash` as `app`'s key, read when [`KnownKeys::forgotten`] was `since`: unless a
    /// key was forgotten since.
    fn keep(&mut self, hash: SecretHash, app: &AppName, since: u64) {
        if self.forgotten == since {
            // One key an app: the one it replaced, if still here, goes.
            self.apps.retain(|_, known| known != app);
            self.apps.insert(hash, app.clone());
        }
    }

    /// Forgets `app`'s key, or every app's.
    fn forget(&mut self, app: Option<&AppName>) {
        match app {
            Some(app) => self.apps.retain(|_, known| known != app),
            None => self.apps.clear(),
        }
        self.forgotten += 1;
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
        let keys = Arc::default();
        Ok((
            Access {
                system,
                admin,
                keys,
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
        let since = {
            let keys = self.known_keys();
            if let Some(app) = keys.apps.get(&hash) {
                return Ok(Caller::AppKey(app.clone()));
            }
            keys.forgotten
        };
        match self.system.app_by_key_hash(hash.as_bytes()).await? {
            Some(app) => {
                self.known_keys().keep(hash, &app, since);
                Ok(Caller::AppKey(app))
            }
            None => Err(AccessError::InvalidCredentials),
        }
    }

    /// Forgets the app's key: it was replaced, or the app deleted (here, or on another node).
    pub fn forget_key(&self, app: &AppName) {
        self.known_keys().forget(Some(app));
    }

    /// Forgets every app's key: another node's rings may have been missed.
    pub fn forget_keys(&self) {
        self.known_keys().forget(None);
    }

    fn known_keys(&self) -> std::sync::MutexGuard<'_, KnownKeys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use cloudlet_store::Durability;
    use cloudlet_store::sqlite::SqliteSystemStore;

    use super::*;
    use crate::random::SeededRandom;

    /// An app `shop` whose secret key is `key`, in a system store of its own.
    async fn with_app(key: &str) -> (tempfile::TempDir, Arc<dyn SystemStore>, AppName) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        let system: Arc<dyn SystemStore> =
            Arc::new(SqliteSystemStore::open(&path, Durability::Full).unwrap());
        let row = cloudlet_store::AppRow {
            name: "shop".into(),
            created_at_ms: 1,
            secret_key_hash: SecretHash::of(key).as_bytes().to_vec(),
            secret_key_hint: "cls_abcd".into(),
            secret_key_created_at_ms: 1,
        };
        let signing = cloudlet_store::SigningKeyRow {
            kid: "k1".into(),
            secret: vec![7; 32],
            created_at_ms: 1,
        };
        system.insert_app(row, signing).await.unwrap();
        (dir, system, AppName::parse("shop").unwrap())
    }

    #[tokio::test]
    async fn a_known_key_is_taken_until_it_is_forgotten() {
        let (_dir, system, shop) = with_app("cls_old").await;
        let random = SeededRandom::new(1);
        let (access, _) = Access::start(system.clone(), Some("admin-token-0123456789"), &random)
            .await
            .unwrap();
        let caller = access.authenticate(Some("cls_old")).await.unwrap();
        assert!(matches!(caller, Caller::AppKey(app) if app == shop));

        // Replaced in the database behind its back (as another node does): still known here,
        // until the ring says so.
        let new = SecretHash::of("cls_new").as_bytes().to_vec();
        assert!(
            system
                .replace_app_key(&shop, new, "x".into(), 2)
                .await
                .unwrap()
        );
        assert!(access.authenticate(Some("cls_old")).await.is_ok());
        access.forget_key(&shop);
        assert!(matches!(
            access.authenticate(Some("cls_old")).await,
            Err(AccessError::InvalidCredentials)
        ));
        assert!(access.authenticate(Some("cls_new")).await.is_ok());
        assert!(matches!(
            access.authenticate(Some("cls_other")).await,
            Err(AccessError::InvalidCredentials)
        ));
    }

    #[test]
    fn a_key_read_before_a_forgetting_is_not_kept() {
        let shop = AppName::parse("shop").unwrap();
        let mut keys = KnownKeys::default();
        let since = keys.forgotten;
        // Replaced while the read was on its way.
        keys.forget(Some(&shop));
        keys.keep(SecretHash::of("cls_old"), &shop, since);
        assert!(keys.apps.is_empty());

        keys.keep(SecretHash::of("cls_new"), &shop, keys.forgotten);
        assert_eq!(keys.apps.get(&SecretHash::of("cls_new")), Some(&shop));
        keys.forget(None);
        assert!(keys.apps.is_empty());
    }
}
