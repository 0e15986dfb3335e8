//! What the scenarios of every store share: an app row and its key, an app added to a control
//! plane and provisioned, SQLite stores on a temporary data directory, and a PostgreSQL store on
//! the test server.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::sqlite::{SqliteSystemStore, SqliteTenants, TenantPoolOptions};
use cloudlet_store::{AppName, AppRow, Durability, SigningKeyRow, SystemStore, TenantStore};

pub fn name(text: &str) -> AppName {
    AppName::parse(text).unwrap()
}

pub fn app_row(name: &str) -> AppRow {
    AppRow {
        name: name.into(),
        created_at_ms: 1,
        secret_key_hash: name.as_bytes().to_vec(),
        secret_key_hint: format!("cls_{name}"),
        secret_key_created_at_ms: 1,
    }
}

pub fn signing_key() -> SigningKeyRow {
    SigningKeyRow {
        kid: "k1".into(),
        secret: vec![7; 32],
        created_at_ms: 1,
    }
}

/// Adds `text` to the control plane and gives it its database.
pub async fn add_app(system: &dyn SystemStore, tenants: &dyn TenantStore, text: &str) -> AppName {
    system
        .insert_app(app_row(text), signing_key())
        .await
        .unwrap();
    let app = name(text);
    tenants.provision(&app).await.unwrap();
    app
}

/// The control plane and the app databases of a new temporary data directory, which lives as
/// long as the last clone of the `Arc` returned with them.
pub async fn sqlite() -> (
    Arc<SqliteSystemStore>,
    Arc<SqliteTenants>,
    Arc<tempfile::TempDir>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (system_path, apps_dir) = (dir.path().join("system.db"), dir.path().join("apps"));
    std::fs::create_dir(&apps_dir).unwrap();
    let (system, tenants) = tokio::task::spawn_blocking(move || {
        let system = SqliteSystemStore::open(&system_path, Durability::Full).unwrap();
        let options = TenantPoolOptions {
            max_open: 8,
            readers: 2,
            durability: Durability::Full,
        };
        (system, SqliteTenants::open(apps_dir, options).unwrap())
    })
    .await
    .unwrap();
    (Arc::new(system), Arc::new(tenants), Arc::new(dir))
}

/// A store on the PostgreSQL database at `url`, as one node would open it.
pub async fn open_postgres(url: &str, pool_size: usize) -> Arc<Postgres> {
    Arc::new(
        Postgres::open(PostgresOptions {
            url: url.to_owned(),
            pool_size,
            wait: Duration::from_secs(10),
            durability: Durability::Full,
            max_open: 64,
        })
        .await
        .unwrap(),
    )
}
