//! [`SystemStore`] on SQLite: `data-dir/system.db`.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row};

use super::{Database, DatabaseOptions, Durability, migrate};
use crate::{
    AppName, AppRow, DueApp, Page, ProviderRow, ScheduleRow, SigningKeyRow, StoreError, SystemStore,
};

const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
    CREATE TABLE apps (
        name                   TEXT PRIMARY KEY,
        created_at             INTEGER NOT NULL,
        secret_key_hash        BLOB NOT NULL UNIQUE,
        secret_key_hint        TEXT NOT NULL,
        secret_key_created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE app_signing_keys (
        app         TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        kid         TEXT NOT NULL,
        secret      BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (app, kid)
    ) STRICT;
",
    "
    CREATE TABLE app_providers (
        app             TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        provider        TEXT NOT NULL,
        settings        TEXT NOT NULL,
        sealed_secrets  BLOB,
        updated_at      INTEGER NOT NULL,
        PRIMARY KEY (app, provider)
    ) STRICT;
",
    "
    CREATE TABLE schedules (
        app       TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        function  TEXT NOT NULL,
        idx       INTEGER NOT NULL,
        cron      TEXT NOT NULL,
        timezone  TEXT NOT NULL,
        data      TEXT NOT NULL,
        next_at   INTEGER NOT NULL,
        PRIMARY KEY (app, function, idx)
    ) STRICT;
    CREATE INDEX schedules_by_next ON schedules (next_at);
",
    "
    CREATE TABLE due_work (
        app      TEXT PRIMARY KEY REFERENCES apps(name) ON DELETE CASCADE,
        at       INTEGER NOT NULL,
        version  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX due_work_by_at ON due_work (at);
",
    // Not tied to `apps`: the rows outlive their app on purpose.
    "
    CREATE TABLE buried_providers (
        app             TEXT NOT NULL,
        provider        TEXT NOT NULL,
        settings        TEXT NOT NULL,
        sealed_secrets  BLOB,
        updated_at      INTEGER NOT NULL,
        until           INTEGER NOT NULL,
        PRIMARY KEY (app, provider)
    ) STRICT;
",
    super::console::MIGRATION,
];

const ADMIN_TOKEN_HASH: &str = "admin_token_hash";
/// Set while a process has the system database open; cleared by a clean close. Found at open,
/// it tells that the last stop was a crash or a power cut (see [`recover_hints`]).
pub(crate) const OPEN_MARK: &str = "sqlite-open";
const APP_COLUMNS: &str =
    "name, created_at, secret_key_hash, secret_key_hint, secret_key_created_at";

pub struct SqliteSystemStore {
    db: Database,
}

impl SqliteSystemStore {
    /// The database, for copying it elsewhere.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

impl SqliteSystemStore {
    /// Opens (creating and migrating) the system database. Blocking.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let options = DatabaseOptions {
            readers: 4,
            durability,
            create: true,
            migrate: |conn, path| {
                migrate::apply(conn, path, MIGRATIONS)?;
                recover_hints(conn)
            },
        };
        Ok(SqliteSystemStore {
            db: Database::open(path, options)?,
        })
    }
}

/// Makes the hint of `app` no later than `at_ms`, and moves its version.
fn lower_hint(c: &Connection, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO due_work (app, at, version) VALUES (?1, ?2, 1)
         ON CONFLICT (app) DO UPDATE
         SET at = min(at, excluded.at), version = version + 1",
    )?
    .execute(rusqlite::params![app, at_ms])?;
    Ok(())
}

/// The hints of due work are written relaxed (no fsync: they are on the path of every send and
/// claim), so a power cut may lose the last of them while the app database keeps the message
/// they announced. After a stop that did not close the database (the mark is still there), every
/// app is hinted due at once: the dispatcher looks at each once and settles its hint from the
/// app's own database, the truth. A crash of the process alone loses no relaxed commit, so this
/// look is only ever early, never needed late.
fn recover_hints(conn: &Connection) -> Result<(), StoreError> {
    let unclean = conn
        .query_row("SELECT 1 FROM settings WHERE key = ?1", [OPEN_MARK], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if unclean {
        let hinted = conn.execute(
            "INSERT INTO due_work (app, at, version) SELECT name, 0, 1 FROM apps WHERE true
             ON CONFLICT (app) DO UPDATE SET at = 0, version = version + 1",
            [],
        )?;
        tracing::info!(
            apps = hinted,
            "the last stop was not clean: every app gets a look"
        );
    }
    conn.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES (?1, x'01')",
        [OPEN_MARK],
    )?;
    Ok(())
}

fn app_from_row(row: &Row<'_>) -> rusqlite::Result<AppRow> {
    Ok(AppRow {
        name: row.get(0)?,
        created_at_ms: row.get(1)?,
        secret_key_hash: row.get(2)?,
        secret_key_hint: row.get(3)?,
        secret_key_created_at_ms: row.get(4)?,
    })
}

fn provider_from_row(row: &Row<'_>) -> rusqlite::Result<ProviderRow> {
    Ok(ProviderRow {
        provider: row.get(0)?,
        settings: row.get(1)?,
        sealed_secrets: row.get(2)?,
        updated_at_ms: row.get(3)?,
    })
}

fn select_app(conn: &Connection, name: &str) -> Result<Option<AppRow>, StoreError> {
    let sql = format!("SELECT {APP_COLUMNS} FROM apps WHERE name = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([name], app_from_row)
        .optional()?)
}

#[async_trait]
impl SystemStore for SqliteSystemStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn admin_token_hash(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    [ADMIN_TOKEN_HASH],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await
    }

    async fn set_admin_token_hash(&self, hash: Vec<u8>) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (ADMIN_TOKEN_HASH, hash),
                )?;
                Ok(())
            })
            .await
    }

    async fn settle_setting(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let key = key.to_owned();
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                    (&key, &value),
                )?;
                Ok(c.query_row("SELECT value FROM settings WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })?)
            })
            .await
    }

    async fn insert_app(&self, app: AppRow, key: SigningKeyRow) -> Result<(), StoreError> {
        self.db
            .write(move |c| {
                c.execute(
                    &format!("INSERT INTO apps ({APP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
                    (
                        &app.name,
                        app.created_at_ms,
                        &app.secret_key_hash,
                        &app.secret_key_hint,
                        app.secret_key_created_at_ms,
                    ),
                )
                .map_err(super::from_write)?;
                c.execute(
                    "INSERT INTO app_signing_keys (app, kid, secret, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    (&app.name, &key.kid, &key.secret, key.created_at_ms),
                )?;
                Ok(())
            })
            .await
    }

    async fn app(&self, name: &AppName) -> Result<Option<AppRow>, StoreError> {
        let name = name.to_owned();
        self.db.read(move |c| select_app(c, &name)).await
    }

    async fn app_by_key_hash(&self, hash: &[u8]) -> Result<Option<AppName>, StoreError> {
        let hash = hash.to_vec();
        self.db
            .read(move |c| {
                Ok(
                    c.prepare_cached("SELECT name FROM apps WHERE secret_key_hash = ?1")?
                        .query_row([&hash], |r| r.get(0))
                        .optional()?,
                )
            })
            .await
    }

    async fn list_apps(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<AppRow>, StoreError> {
        let after = after.unwrap_or_default().to_owned();
        self.db
            .read(move |c| {
                let sql = format!(
                    "SELECT {APP_COLUMNS} FROM apps WHERE name > ?1 ORDER BY name LIMIT ?2"
                );
                // One row more than asked tells whether there is a next page.
                let mut items = c
                    .prepare_cached(&sql)?
                    .query_map((&after, limit as i64 + 1), app_from_row)?
                    .collect::<Result<Vec<_>, _>>()?;
                let next_after = if items.len() > limit {
                    items.truncate(limit);
                    items.last().map(|a| a.name.clone())
                } else {
                    None
                };
                Ok(Page { items, next_after })
            })
            .await
    }

    async fn delete_app(&self, name: &AppName) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.db
            .write(move |c| Ok(c.execute("DELETE FROM apps WHERE name = ?1", [name])? == 1))
            .await
    }

    async fn replace_app_key(
        &self,
        name: &AppName,
        hash: Vec<u8>,
        hint: String,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.db
            .write(move |c| {
                let changed = c
                    .execute(
                        "UPDATE apps SET secret_key_hash = ?2, secret_key_hint = ?3,
                         secret_key_created_at = ?4 WHERE name = ?1",
                        (name, hash, hint, at_ms),
                    )
                    .map_err(super::from_write)?;
                Ok(changed == 1)
            })
            .await
    }

    async fn put_provider(&self, app: &AppName, row: ProviderRow) -> Result<(), StoreError> {
        let app = app.to_owned();
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO app_providers (app, provider, settings, sealed_secrets, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (app, provider) DO UPDATE SET settings = excluded.settings,
                       sealed_secrets = excluded.sealed_secrets, updated_at = excluded.updated_at",
                    (&app, &row.provider, &row.settings, &row.sealed_secrets, row.updated_at_ms),
                )
                .map_err(super::from_write)?;
                Ok(())
            })
            .await
    }

    async fn provider(
        &self,
        app: &AppName,
        provider: &str,
    ) -> Result<Option<ProviderRow>, StoreError> {
        let (app, provider) = (app.to_owned(), provider.to_owned());
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT provider, settings, sealed_secrets, updated_at FROM app_providers
                     WHERE app = ?1 AND provider = ?2",
                )?
                .query_row((&app, &provider), provider_from_row)
                .optional()?)
            })
            .await
    }

    async fn bury_providers(
        &self,
        app: &AppName,
        prefix: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<u64, StoreError> {
        let (app, prefix) = (app.to_owned(), prefix.to_owned());
        self.db
            .write(move |c| {
                c.execute("DELETE FROM buried_providers WHERE until <= ?1", [now_ms])?;
                let buried = c.execute(
                    "INSERT INTO buried_providers
                         (app, provider, settings, sealed_secrets, updated_at, until)
                     SELECT app, provider, settings, sealed_secrets, updated_at, ?3
                     FROM app_providers WHERE app = ?1 AND substr(provider, 1, length(?2)) = ?2
                     ON CONFLICT (app, provider) DO UPDATE SET settings = excluded.settings,
                         sealed_secrets = excluded.sealed_secrets,
                         updated_at = excluded.updated_at, until = excluded.until",
                    (&app, &prefix, until_ms),
                )?;
                Ok(buried as u64)
            })
            .await
    }

    async fn forget_buried(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.db
            .write(move |c| {
                Ok(c.execute("DELETE FROM buried_providers WHERE until <= ?1", [now_ms])? as u64)
            })
            .await
    }

    async fn buried_provider(
        &self,
        app: &AppName,
        provider: &str,
        now_ms: i64,
    ) -> Result<Option<ProviderRow>, StoreError> {
        let (app, provider) = (app.to_owned(), provider.to_owned());
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT provider, settings, sealed_secrets, updated_at FROM buried_providers
                     WHERE app = ?1 AND provider = ?2 AND until > ?3",
                )?
                .query_row((&app, &provider, now_ms), provider_from_row)
                .optional()?)
            })
            .await
    }

    async fn providers(&self, app: &AppName) -> Result<Vec<ProviderRow>, StoreError> {
        let app = app.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT provider, settings, sealed_secrets, updated_at FROM app_providers
                     WHERE app = ?1 ORDER BY provider",
                )?
                .query_map([&app], provider_from_row)?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn replace_schedules(
        &self,
        app: &AppName,
        function: &str,
        schedules: Vec<ScheduleRow>,
    ) -> Result<(), StoreError> {
        let (app, function) = (app.to_owned(), function.to_owned());
        self.db
            .write(move |c| {
                c.execute(
                    "DELETE FROM schedules WHERE app = ?1 AND function = ?2",
                    (&app, &function),
                )?;
                let mut insert = c.prepare_cached(
                    "INSERT INTO schedules (app, function, idx, cron, timezone, data, next_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for s in &schedules {
                    insert.execute(rusqlite::params![
                        s.app,
                        s.function,
                        s.index,
                        s.cron,
                        s.timezone,
                        s.data,
                        s.next_at_ms
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn due_schedules(
        &self,
        now_ms: i64,
        limit: usize,
        per_app: usize,
    ) -> Result<Vec<ScheduleRow>, StoreError> {
        let per_app = i64::try_from(per_app).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    // The window over keys alone: a row's data is read only once chosen.
                    "SELECT s.app, s.function, s.idx, s.cron, s.timezone, s.data, s.next_at
                     FROM (
                         SELECT app, function, idx, next_at,
                             row_number() OVER (PARTITION BY app
                                 ORDER BY next_at, function, idx) AS n
                         FROM schedules WHERE next_at <= ?1) due
                     JOIN schedules s
                         ON s.app = due.app AND s.function = due.function AND s.idx = due.idx
                     WHERE due.n <= ?3
                     ORDER BY due.next_at, due.app, due.function, due.idx LIMIT ?2",
                )?
                .query_map(rusqlite::params![now_ms, limit, per_app], |r| {
                    Ok(ScheduleRow {
                        app: r.get(0)?,
                        function: r.get(1)?,
                        index: r.get(2)?,
                        cron: r.get(3)?,
                        timezone: r.get(4)?,
                        data: r.get(5)?,
                        next_at_ms: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn advance_schedule(&self, row: &ScheduleRow, to_ms: i64) -> Result<bool, StoreError> {
        let row = row.clone();
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE schedules SET next_at = ?5
                     WHERE app = ?1 AND function = ?2 AND idx = ?3 AND next_at = ?4",
                    rusqlite::params![row.app, row.function, row.index, row.next_at_ms, to_ms],
                )? == 1)
            })
            .await
    }

    async fn hint_due(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
        let app = app.to_owned();
        // Relaxed: see `recover_hints`.
        self.db
            .write_relaxed(move |c| lower_hint(c, &app, at_ms))
            .await
    }

    async fn hint_due_durably(&self, app: &AppName, at_ms: i64) -> Result<(), StoreError> {
        let app = app.to_owned();
        self.db.write(move |c| lower_hint(c, &app, at_ms)).await
    }

    /// See [`recover_hints`].
    fn hints_repaired_at_start(&self) -> bool {
        true
    }

    async fn due_apps(&self, now_ms: i64, limit: usize) -> Result<Vec<DueApp>, StoreError> {
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT app, at, version FROM due_work WHERE at <= ?1 ORDER BY at LIMIT ?2",
                )?
                .query_map(rusqlite::params![now_ms, limit as i64], |r| {
                    Ok(DueApp {
                        app: r.get(0)?,
                        at_ms: r.get(1)?,
                        version: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn settle_due(
        &self,
        app: &AppName,
        version: i64,
        next: Option<i64>,
    ) -> Result<bool, StoreError> {
        let app = app.to_owned();
        // Relaxed: a settle undone by a power cut leaves the hint early, never late.
        self.db
            .write_relaxed(move |c| {
                let changed = match next {
                    Some(at) => c
                        .prepare_cached(
                            "UPDATE due_work SET at = ?3 WHERE app = ?1 AND version = ?2",
                        )?
                        .execute(rusqlite::params![app, version, at])?,
                    None => c
                        .prepare_cached("DELETE FROM due_work WHERE app = ?1 AND version = ?2")?
                        .execute(rusqlite::params![app, version])?,
                };
                Ok(changed == 1)
            })
            .await
    }

    async fn next_hint(&self) -> Result<Option<i64>, StoreError> {
        self.db
            .read(|c| Ok(c.query_row("SELECT min(at) FROM due_work", [], |r| r.get(0))?))
            .await
    }

    async fn signing_keys(&self, app: &AppName) -> Result<Vec<SigningKeyRow>, StoreError> {
        let app = app.to_owned();
        self.db
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT kid, secret, created_at FROM app_signing_keys
                     WHERE app = ?1 ORDER BY created_at DESC",
                )?
                .query_map([&app], |r| {
                    Ok(SigningKeyRow {
                        kid: r.get(0)?,
                        secret: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn close(&self) {
        // An ordinary commit: its fsync also takes every relaxed one before it to disk.
        let unmark = self
            .db
            .write(|c| {
                c.execute("DELETE FROM settings WHERE key = ?1", [OPEN_MARK])?;
                Ok(())
            })
            .await;
        if let Err(e) = unmark {
            tracing::warn!(error = %e, "could not mark the system database closed");
        }
        self.db.close_async().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> crate::AppName {
        crate::AppName::parse(text).expect("a valid app name")
    }

    fn app(name: &str, hash: u8) -> AppRow {
        AppRow {
            name: name.into(),
            created_at_ms: 1,
            secret_key_hash: vec![hash; 32],
            secret_key_hint: "cls_abcd".into(),
            secret_key_created_at_ms: 1,
        }
    }

    fn key() -> SigningKeyRow {
        SigningKeyRow {
            kid: "k1".into(),
            secret: vec![7; 32],
            created_at_ms: 1,
        }
    }

    #[tokio::test]
    async fn apps_round_trip_page_and_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteSystemStore::open(&dir.path().join("system.db"), Durability::Full).unwrap();
        for (i, name) in ["bb", "aa", "cc"].iter().enumerate() {
            store.insert_app(app(name, i as u8), key()).await.unwrap();
        }
        assert!(matches!(
            store.insert_app(app("aa", 9), key()).await,
            Err(StoreError::Conflict)
        ));
        assert!(
            matches!(
                store.insert_app(app("dd", 0), key()).await,
                Err(StoreError::Conflict)
            ),
            "a duplicate key hash is a conflict too"
        );

        let first = store.list_apps(None, 2).await.unwrap();
        let names: Vec<_> = first.items.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["aa", "bb"]);
        assert_eq!(first.next_after.as_deref(), Some("bb"));
        let second = store.list_apps(Some("bb"), 2).await.unwrap();
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.next_after, None);

        assert_eq!(
            store.app_by_key_hash(&[2; 32]).await.unwrap().as_deref(),
            Some("cc")
        );
        assert!(
            store
                .replace_app_key(&name("cc"), vec![5; 32], "x".into(), 2)
                .await
                .unwrap()
        );
        assert_eq!(store.app_by_key_hash(&[2; 32]).await.unwrap(), None);
        assert!(store.delete_app(&name("cc")).await.unwrap());
        assert!(!store.delete_app(&name("cc")).await.unwrap());
        assert_eq!(store.app(&name("cc")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn after_a_stop_that_did_not_close_every_app_is_hinted_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        let due_at = |store: SqliteSystemStore| async move {
            let mut due: Vec<(String, i64)> = store
                .due_apps(1_000, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.app.as_str().to_owned(), d.at_ms))
                .collect();
            due.sort();
            (store, due)
        };
        let store = SqliteSystemStore::open(&path, Durability::Full).unwrap();
        store.insert_app(app("aa", 1), key()).await.unwrap();
        store.insert_app(app("bb", 2), key()).await.unwrap();
        store.hint_due(&name("aa"), 5_000).await.unwrap();
        store.hint_due_durably(&name("aa"), 6_000).await.unwrap();
        store.close().await;

        // A clean stop: the hints are as they were.
        let store = SqliteSystemStore::open(&path, Durability::Full).unwrap();
        let (store, due) = due_at(store).await;
        assert_eq!(due, []);
        assert_eq!(store.next_hint().await.unwrap(), Some(5_000));

        // A crash: the file is closed without the store's close. Which is what lets a hint
        // follow the write it announces on SQLite.
        assert!(store.hints_repaired_at_start());
        store.db.close();
        let store = SqliteSystemStore::open(&path, Durability::Full).unwrap();
        let (store, due) = due_at(store).await;
        assert_eq!(due, [("aa".to_owned(), 0), ("bb".to_owned(), 0)]);
        store.close().await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let err = SqliteSystemStore::open(&path, Durability::Full)
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::SchemaTooNew { found: 99, .. }));
    }
}
