//! `cloudlet migrate`: moves an instance from its SQLite data directory to PostgreSQL, with
//! apps, users, sessions, records, functions and sites intact, verified by counts and
//! checksums (`cloudlet_store::transfer`). The data directory is locked for the whole run, so
//! no server writes to it meanwhile, and it is only read. Each app moves in one transaction: a
//! run cut short leaves whole apps behind, and running it again verifies those and moves the
//! rest.

use std::path::Path;

use cloudlet_core::apps::sealed_signing_key;
use cloudlet_core::data::table_of;
use cloudlet_core::random::OsRandom;
use cloudlet_core::sealing::Sealer;
use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::sqlite::{SqliteSystemStore, SqliteTenants, TenantPoolOptions};
use cloudlet_store::transfer::{
    AppTransfer, TableCheck, transfer_app, transfer_console, transfer_settings,
};
use cloudlet_store::{
    AppName, DataDir, Durability, QueueStore, RecordStore, SigningKeyRow, StoreError, SystemStore,
    TenantStore,
};

use crate::StartError;

/// What a migration did.
#[derive(Debug)]
pub struct MigrateReport {
    /// Each app, and what moving it did (copied now, or verified as copied before).
    pub apps: Vec<(String, AppTransfer)>,
    /// Control-plane settings copied (the admin token's hash).
    pub settings: u64,
    /// The console's people, roles and audit log, copied or verified.
    pub console: Vec<TableCheck>,
}

/// Moves the instance in `data_dir` into the PostgreSQL database at `url`. `progress` hears of
/// each app as it is done.
pub async fn migrate_to_postgres(
    data_dir: &Path,
    url: &str,
    mut progress: impl FnMut(&str, &AppTransfer),
) -> Result<MigrateReport, StartError> {
    let path = data_dir.to_path_buf();
    let (dir, master_key, system, tenants) = tokio::task::spawn_blocking(move || {
        if !path.join("system.db").is_file() {
            return Err(StartError::NotADataDir(path));
        }
        let dir = DataDir::open(&path)?;
        let master_key = dir.stored_master_key()?.ok_or_else(|| {
            StartError::MasterKey(format!("{} has no master.key", path.display()))
        })?;
        let system = SqliteSystemStore::open(&dir.system_db(), Durability::Full)?;
        let tenants = SqliteTenants::open(
            dir.apps_dir(),
            TenantPoolOptions {
                max_open: 4,
                readers: 1,
                durability: Durability::Full,
            },
        )?;
        Ok((dir, master_key, system, tenants))
    })
    .await
    .map_err(|e| StoreError::Task(e.to_string()))??;
    let target = Postgres::open(PostgresOptions {
        url: url.to_owned(),
        pool_size: 2,
        wait: std::time::Duration::from_secs(30),
        durability: Durability::Full,
        max_open: 4,
    })
    .await?;
    // No node may serve the database while it is being filled.
    target.claim_sole_node().await?;
    let sealer = Sealer::new(&master_key);
    let random = OsRandom;
    // The target takes this instance's master key, or refuses before anything is copied.
    sealer
        .check_key(&target, &random)
        .await
        .map_err(|e| StartError::MasterKey(e.to_string()))?;

    let source_apps = all_apps(&system).await?;
    let foreign: Vec<String> = all_apps(&target)
        .await?
        .into_iter()
        .filter(|name| !source_apps.contains(name))
        .collect();
    if !foreign.is_empty() {
        return Err(StartError::Migrate(format!(
            "the target already holds apps this data directory does not ({}): migrate into an \
             empty database, or one an earlier run of this migration filled",
            foreign.join(", ")
        )));
    }

    let mut report = MigrateReport {
        apps: Vec::new(),
        settings: 0,
        console: Vec::new(),
    };
    for name in source_apps {
        let app = AppName::parse(&name)
            .map_err(|e| StartError::Migrate(format!("stored app name {name:?}: {e}")))?;
        let mut collections = Vec::new();
        for row in RecordStore::collections(&tenants, &app).await? {
            let table = table_of(&row)
                .map_err(|e| StartError::Migrate(format!("{name}/{}: {e}", row.name)))?;
            collections.push((row, table));
        }
        let keys: Vec<SigningKeyRow> = system
            .signing_keys(&app)
            .await?
            .into_iter()
            .map(|key| sealed_signing_key(&sealer, &random, &app, key))
            .collect();
        let moved = transfer_app(&system, &tenants, &target, &app, &collections, &keys)
            .await
            .map_err(|e| StartError::Migrate(format!("app {name}: {e}")))?;
        // The moved app's queued work, if any, must be found on time there too: on its declared
        // queues and on Cloudlet's own (trigger deliveries, subscribe messages, payment checks).
        let mut queues: Vec<String> = QueueStore::queues(&target, &app)
            .await?
            .into_iter()
            .map(|q| q.name)
            .collect();
        queues.extend(
            [
                cloudlet_store::TRIGGER_QUEUE,
                cloudlet_core::queues::MESSAGE_QUEUE,
                cloudlet_core::queues::PAYMENT_QUEUE,
            ]
            .map(str::to_owned),
        );
        if let Some(at) = QueueStore::next_due(&target, &app, queues).await? {
            SystemStore::hint_due(&target, &app, at).await?;
        }
        progress(&name, &moved);
        report.apps.push((name, moved));
    }
    report.settings = transfer_settings(&system, &target).await?;
    report.console = transfer_console(&system, &target).await.map_err(|e| {
        StartError::Migrate(format!(
            "the console's people: {e}. The apps are moved; the target has console people \
                 other than this instance's. To copy this instance's, empty the target's \
                 console_audit, console_roles and console_people (schema cloudlet) and run \
                 again"
        ))
    })?;
    tenants.close_all().await;
    system.close().await;
    target.close_all().await;
    drop(dir);
    Ok(report)
}

/// Every app's name, in order.
async fn all_apps(system: &dyn SystemStore) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = system.list_apps(after.as_deref(), 100).await?;
        names.extend(page.items.into_iter().map(|app| app.name));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return Ok(names),
        }
    }
}
