//! Apps (tenants): their names, lifecycle and secret keys.
//!
//! An app is a row in the system database plus its own database. Creating one inserts the row
//! (the name's uniqueness is settled there, atomically) and then provisions the database; a
//! failed provisioning removes the row again, so no half-made app stays behind.

use std::fmt;
use std::sync::Arc;

pub use cloudlet_store::{AppName, InvalidAppName};
use cloudlet_store::{AppRow, SigningKeyRow, StoreError, SystemStore, TenantStore};
use serde::Serialize;

use crate::clock::{Clock, Timestamp};
use crate::random::Random;
use crate::sealing::Sealer;
use crate::secrets::NewSecret;

/// The most apps one listing page returns.
pub const MAX_PAGE: usize = 500;

/// Prefix of app secret keys.
const SECRET_KEY_PREFIX: &str = "cls_";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid app name {name:?}: {reason}")]
    InvalidName {
        name: String,
        reason: InvalidAppName,
    },
    #[error("an app named {0:?} already exists")]
    AlreadyExists(String),
    #[error("no app named {0:?}")]
    NotFound(String),
    #[error("a page holds 1 to {MAX_PAGE} apps, not {0}")]
    InvalidPageSize(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An app as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct App {
    pub name: String,
    pub created_at: Timestamp,
    /// The first characters of the current secret key.
    pub secret_key_hint: String,
    pub secret_key_created_at: Timestamp,
}

impl From<AppRow> for App {
    fn from(row: AppRow) -> Self {
        App {
            name: row.name,
            created_at: Timestamp::from_unix_ms(row.created_at_ms),
            secret_key_hint: row.secret_key_hint,
            secret_key_created_at: Timestamp::from_unix_ms(row.secret_key_created_at_ms),
        }
    }
}

/// A new app, with its secret key: the only time the key is shown. (`Debug` hides the key.)
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApp {
    pub name: String,
    pub created_at: Timestamp,
    pub secret_key: String,
}

/// A new secret key; the previous one stopped working when this was made. (`Debug` hides the
/// key.)
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedKey {
    pub name: String,
    pub secret_key: String,
    pub secret_key_created_at: Timestamp,
}

impl fmt::Debug for CreatedApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApp")
            .field("name", &self.name)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatedKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppPage {
    pub items: Vec<App>,
    pub next_cursor: Option<String>,
}

/// What reading an app's own database found.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppHealth {
    pub app: String,
    pub status: &'static str,
    pub schema_version: i64,
}

/// The apps service. Cheap to clone.
#[derive(Clone)]
pub struct Apps {
    system: Arc<dyn SystemStore>,
    tenants: Arc<dyn TenantStore>,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
    sealer: Sealer,
}

/// Where an app's token-signing key is sealed: it opens only as that app's key of that id.
pub fn signing_key_place(app: &str, kid: &str) -> String {
    format!("{app}/signing-key/{kid}")
}

/// The length of a signing key stored unsealed, before keys were sealed; a sealed key is longer
/// by its nonce and tag.
pub const UNSEALED_SIGNING_KEY_LEN: usize = 32;

/// `key` sealed: one stored before keys were sealed is sealed now, a sealed one kept as it is.
pub fn sealed_signing_key(
    sealer: &Sealer,
    random: &dyn Random,
    app: &str,
    key: SigningKeyRow,
) -> SigningKeyRow {
    if key.secret.len() != UNSEALED_SIGNING_KEY_LEN {
        return key;
    }
    SigningKeyRow {
        secret: sealer.seal(&key.secret, &signing_key_place(app, &key.kid), random),
        ..key
    }
}

impl Apps {
    pub fn new(
        system: Arc<dyn SystemStore>,
        tenants: Arc<dyn TenantStore>,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
        sealer: Sealer,
    ) -> Self {
        Apps {
            system,
            tenants,
            clock,
            random,
            sealer,
        }
    }

    pub async fn create(&self, name: &str) -> Result<CreatedApp, AppError> {
        let name = AppName::parse(name).map_err(|reason| AppError::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        })?;
        let now = self.clock.now();
        let key = NewSecret::generate(SECRET_KEY_PREFIX, &*self.random);
        let mut signing_secret = vec![0u8; 32];
        self.random.fill(&mut signing_secret);
        let row = AppRow {
            name: name.to_string(),
            created_at_ms: now.unix_ms(),
            secret_key_hash: key.hash.as_bytes().to_vec(),
            secret_key_hint: key.hint,
            secret_key_created_at_ms: now.unix_ms(),
        };
        let mut kid = [0u8; 6];
        self.random.fill(&mut kid);
        let kid: String = kid.iter().map(|b| format!("{b:02x}")).collect();
        // Sealed like provider secrets: a database shared by several nodes (or its backups)
        // must not be enough to forge tokens.
        let signing_key = SigningKeyRow {
            secret: self.sealer.seal(
                &signing_secret,
                &signing_key_place(&name, &kid),
                &*self.random,
            ),
            kid,
            created_at_ms: now.unix_ms(),
        };
        match self.system.insert_app(row, signing_key).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(AppError::AlreadyExists(name.to_string())),
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = self.tenants.provision(&name).await {
            tracing::error!(app = %name, error = %e, "provisioning failed; removing the app");
            let _ = self.system.delete_app(&name).await;
            let _ = self.tenants.destroy(&name).await;
            return Err(e.into());
        }
        tracing::info!(app = %name, "app created");
        Ok(CreatedApp {
            name: name.to_string(),
            created_at: now,
            secret_key: key.plain,
        })
    }

    /// Apps in name order, `limit` (1 to [`MAX_PAGE`]) at a time. `cursor` is the
    /// `next_cursor` of the previous page.
    pub async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<AppPage, AppError> {
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(AppError::InvalidPageSize(limit));
        }
        let page = self.system.list_apps(cursor, limit).await?;
        Ok(AppPage {
            items: page.items.into_iter().map(App::from).collect(),
            next_cursor: page.next_after,
        })
    }

    pub async fn get(&self, name: &AppName) -> Result<App, AppError> {
        self.row(name).await.map(App::from)
    }

    /// Deletes the app, its keys and its database, with every record and file in it.
    pub async fn delete(&self, name: &AppName) -> Result<(), AppError> {
        if !self.system.delete_app(name).await? {
            return Err(AppError::NotFound(name.to_string()));
        }
        self.tenants.destroy(name).await?;
        tracing::info!(app = %name, "app deleted");
        Ok(())
    }

    /// Replaces the app's secret key; the old one stops working at once.
    pub async fn rotate_key(&self, name: &AppName) -> Result<RotatedKey, AppError> {
        let now = self.clock.now();
        let key = NewSecret::generate(SECRET_KEY_PREFIX, &*self.random);
        let replaced = self
            .system
            .replace_app_key(name, key.hash.as_bytes().to_vec(), key.hint, now.unix_ms())
            .await?;
        if !replaced {
            return Err(AppError::NotFound(name.to_string()));
        }
        tracing::info!(app = %name, "app secret key rotated");
        Ok(RotatedKey {
            name: name.to_string(),
            secret_key: key.plain,
            secret_key_created_at: now,
        })
    }

    /// Reads from the app's own database, opening it if it is closed.
    pub async fn health(&self, name: &AppName) -> Result<AppHealth, AppError> {
        let row = self.row(name).await?;
        let health = match self.tenants.health(name).await {
            Ok(health) => health,
            // Deleted while this request was on its way.
            Err(StoreError::NoSuchTenant) => return Err(AppError::NotFound(row.name)),
            Err(e) => return Err(e.into()),
        };
        Ok(AppHealth {
            app: row.name,
            status: "ok",
            schema_version: health.schema_version,
        })
    }

    /// How many app databases are open now.
    pub fn open_databases(&self) -> usize {
        self.tenants.open_count()
    }

    async fn row(&self, name: &AppName) -> Result<AppRow, AppError> {
        self.system
            .app(name)
            .await?
            .ok_or_else(|| AppError::NotFound(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SeededRandom;

    #[test]
    fn an_unsealed_signing_key_is_sealed_in_its_place_and_a_sealed_one_kept() {
        let sealer = Sealer::new(&[7; 32]);
        let random = SeededRandom::new(1);
        let clear = SigningKeyRow {
            kid: "k1".into(),
            secret: vec![42; UNSEALED_SIGNING_KEY_LEN],
            created_at_ms: 5,
        };
        let sealed = sealed_signing_key(&sealer, &random, "shop", clear.clone());
        assert_ne!(sealed.secret, clear.secret);
        assert_eq!((sealed.kid.as_str(), sealed.created_at_ms), ("k1", 5));
        let place = signing_key_place("shop", "k1");
        assert_eq!(sealer.open(&sealed.secret, &place).unwrap(), clear.secret);
        assert!(
            sealer
                .open(&sealed.secret, &signing_key_place("other", "k1"))
                .is_err()
        );
        let again = sealed_signing_key(&sealer, &random, "shop", sealed.clone());
        assert_eq!(again, sealed, "a sealed key is not sealed twice");
    }
}
