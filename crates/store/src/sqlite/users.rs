//! [`UserStore`] on SQLite: users, identities and sessions in each app's own database.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::SqliteTenants;
use super::records::record_event;
use crate::users::user_event;
use crate::{
    AppName, Emit, GrantKey, GrantRow, IdentityRow, Rotation, SessionRow, StoreError, USER_CREATED,
    USER_DELETED, UserRow, UserStore,
};

/// Schema step 2 of an app database.
/// What an administrator's search of users looks up: each by an index.
pub(super) const SEARCH: &str = "
    CREATE INDEX users_by_phone ON users (phone) WHERE phone IS NOT NULL;
    CREATE INDEX identities_by_subject ON identities (subject);
    CREATE INDEX identities_by_unionid_alone ON identities (unionid) WHERE unionid IS NOT NULL;
";

pub(super) const MIGRATION: &str = "
    CREATE TABLE users (
        id             TEXT PRIMARY KEY,
        created_at     INTEGER NOT NULL,
        last_login_at  INTEGER NOT NULL,
        email          TEXT UNIQUE,
        password_hash  TEXT,
        phone          TEXT,
        profile        TEXT NOT NULL
    ) STRICT;
    CREATE TABLE identities (
        provider    TEXT NOT NULL,
        subject     TEXT NOT NULL,
        user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        unionid     TEXT,
        family      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        PRIMARY KEY (provider, subject)
    ) STRICT;
    CREATE INDEX identities_by_unionid ON identities (family, unionid) WHERE unionid IS NOT NULL;
    CREATE INDEX identities_by_user ON identities (user_id);
    CREATE TABLE sessions (
        id                   TEXT PRIMARY KEY,
        user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        provider             TEXT NOT NULL,
        secret_hash          BLOB NOT NULL UNIQUE,
        created_at           INTEGER NOT NULL,
        refreshed_at         INTEGER NOT NULL,
        expires_at           INTEGER NOT NULL,
        revoked_at           INTEGER,
        sealed_platform_key  BLOB
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (user_id);
    CREATE INDEX sessions_by_revocation ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE retired_session_secrets (
        secret_hash  BLOB PRIMARY KEY,
        session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE
    ) STRICT;
";

/// Schema step 3: the sessions of deleted users, remembered until their tokens have expired,
/// so that a restart does not bring those tokens back.
pub(super) const TOMBSTONES: &str = "
    CREATE TABLE session_tombstones (
        session_id  TEXT PRIMARY KEY,
        revoked_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX session_tombstones_by_time ON session_tombstones (revoked_at);
";

/// Schema step 9: the consent ledger of subscribe messages. Keyed as the platform keys it (the
/// user's openid in a mini program, and a template); the user id deletes it with the user.
pub(super) const GRANTS: &str = "
    CREATE TABLE subscription_grants (
        appid        TEXT NOT NULL,
        openid       TEXT NOT NULL,
        template_id  TEXT NOT NULL,
        user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        remaining    INTEGER NOT NULL,
        updated_at   INTEGER NOT NULL,
        PRIMARY KEY (appid, openid, template_id)
    ) STRICT;
    CREATE INDEX subscription_grants_by_user ON subscription_grants (user_id);
";

const USER_COLUMNS: &str = "id, created_at, last_login_at, email, phone, profile";
const SESSION_COLUMNS: &str = "id, user_id, provider, secret_hash, created_at, refreshed_at, \
                               expires_at, revoked_at, sealed_platform_key";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: row.get(0)?,
        created_at_ms: row.get(1)?,
        last_login_at_ms: row.get(2)?,
        email: row.get(3)?,
        phone: row.get(4)?,
        profile: row.get(5)?,
    })
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(0)?,
        user_id: row.get(1)?,
        provider: row.get(2)?,
        secret_hash: row.get(3)?,
        created_at_ms: row.get(4)?,
        refreshed_at_ms: row.get(5)?,
        expires_at_ms: row.get(6)?,
        revoked_at_ms: row.get(7)?,
        sealed_platform_key: row.get(8)?,
    })
}

fn select_user(conn: &Connection, id: &str) -> Result<Option<UserRow>, StoreError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], user_from_row)
        .optional()?)
}

fn select_session(conn: &Connection, id: &str) -> Result<Option<SessionRow>, StoreError> {
    let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], session_from_row)
        .optional()?)
}

fn insert_identity(conn: &Connection, identity: &IdentityRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO identities (provider, subject, user_id, unionid, family, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        identity.provider,
        identity.subject,
        identity.user_id,
        identity.unionid,
        identity.family,
        identity.created_at_ms
    ])
    .map_err(super::from_write)?;
    Ok(())
}

impl SqliteTenants {
    pub(crate) async fn read_app<T: Send + 'static>(
        &self,
        app: &AppName,
        read: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.lease(app).await?.db.read(read).await
    }

    /// [`SqliteTenants::read_app`] for a read whose result leaves the process to be relied on
    /// later: answered once what it read is on disk (see
    /// [`Database::wait_on_disk`](super::Database::wait_on_disk)).
    pub(crate) async fn read_app_on_disk<T: Send + 'static>(
        &self,
        app: &AppName,
        read: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let lease = self.lease(app).await?;
        let value = lease.db.read(read).await?;
        lease.db.wait_on_disk().await?;
        Ok(value)
    }

    pub(super) async fn write_app<T: Send + 'static>(
        &self,
        app: &AppName,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.lease(app).await?.db.write(write).await
    }

    /// [`SqliteTenants::write_app`] through [`Database::write_committed`](super::Database::write_committed).
    pub(super) async fn write_app_committed<T: Send + 'static>(
        &self,
        app: &AppName,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(T, crate::OnDisk), StoreError> {
        self.lease(app).await?.db.write_committed(write).await
    }

    /// [`SqliteTenants::write_app`] through
    /// [`Database::write_committed_small`](super::Database::write_committed_small).
    pub(super) async fn write_app_committed_small<T: Send + 'static>(
        &self,
        app: &AppName,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<(T, crate::OnDisk), StoreError> {
        self.lease(app).await?.db.write_committed_small(write).await
    }

    /// [`SqliteTenants::write_app`] through [`Database::write_relaxed`](super::Database::write_relaxed).
    pub(super) async fn write_app_relaxed<T: Send + 'static>(
        &self,
        app: &AppName,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.lease(app).await?.db.write_relaxed(write).await
    }

    /// [`SqliteTenants::write_app`] through [`Database::write_durable`](super::Database::write_durable).
    pub(super) async fn write_app_durable<T: Send + 'static>(
        &self,
        app: &AppName,
        write: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.lease(app).await?.db.write_durable(write).await
    }
}

#[async_trait]
impl UserStore for SqliteTenants {
    async fn user(&self, app: &AppName, id: &str) -> Result<Option<UserRow>, StoreError> {
        let id = id.to_owned();
        self.read_app(app, move |c| select_user(c, &id)).await
    }

    async fn list_users(
        &self,
        app: &AppName,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRow>, StoreError> {
        let (search, after) = (
            search.map(str::to_owned),
            after.unwrap_or_default().to_owned(),
        );
        self.read_app(app, move |c| {
            // Each name a search may be is looked up by its own index, never a scan. (Without
            // a search ?1 is bound and unused: SQLite counts parameters by the highest index.)
            let sql = match search {
                None => {
                    format!("SELECT {USER_COLUMNS} FROM users WHERE id > ?2 ORDER BY id LIMIT ?3")
                }
                Some(_) => format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE id > ?2 AND id IN (
                        SELECT id FROM users WHERE id = ?1
                        UNION SELECT id FROM users WHERE email = ?1
                        UNION SELECT id FROM users WHERE phone = ?1
                        UNION SELECT user_id FROM identities WHERE subject = ?1
                        UNION SELECT user_id FROM identities WHERE unionid = ?1)
                     ORDER BY id LIMIT ?3"
                ),
            };
            Ok(c.prepare_cached(&sql)?
                .query_map(params![search, after, limit as i64], user_from_row)?
                .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn identities_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<IdentityRow>, StoreError> {
        let user_id = user_id.to_owned();
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT provider, subject, user_id, unionid, family, created_at FROM identities
                 WHERE user_id = ?1 ORDER BY created_at, provider",
            )?
            .query_map([&user_id], |r| {
                Ok(IdentityRow {
                    provider: r.get(0)?,
                    subject: r.get(1)?,
                    user_id: r.get(2)?,
                    unionid: r.get(3)?,
                    family: r.get(4)?,
                    created_at_ms: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn user_by_identity(
        &self,
        app: &AppName,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let (provider, subject) = (provider.to_owned(), subject.to_owned());
        self.read_app(app, move |c| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id =
                 (SELECT user_id FROM identities WHERE provider = ?1 AND subject = ?2)"
            );
            Ok(c.prepare_cached(&sql)?
                .query_row([&provider, &subject], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn identity_of(
        &self,
        app: &AppName,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let (user_id, provider) = (user_id.to_owned(), provider.to_owned());
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT subject, unionid FROM identities WHERE user_id = ?1 AND provider = ?2",
            )?
            .query_row([&user_id, &provider], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
        })
        .await
    }

    async fn user_by_unionid(
        &self,
        app: &AppName,
        family: &str,
        unionid: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let (family, unionid) = (family.to_owned(), unionid.to_owned());
        self.read_app(app, move |c| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id =
                 (SELECT user_id FROM identities WHERE family = ?1 AND unionid = ?2 LIMIT 1)"
            );
            Ok(c.prepare_cached(&sql)?
                .query_row([&family, &unionid], user_from_row)
                .optional()?)
        })
        .await
    }

    async fn user_by_email(
        &self,
        app: &AppName,
        email: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, StoreError> {
        let email = email.to_owned();
        self.read_app(app, move |c| {
            let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([&email], |r| Ok((user_from_row(r)?, r.get(6)?)))
                .optional()?)
        })
        .await
    }

    async fn create_user(
        &self,
        app: &AppName,
        user: UserRow,
        password_hash: Option<String>,
        identity: Option<IdentityRow>,
        emit: Option<Emit>,
    ) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.prepare_cached(
                "INSERT INTO users (id, created_at, last_login_at, email, password_hash, phone, profile)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                user.id,
                user.created_at_ms,
                user.last_login_at_ms,
                user.email,
                password_hash,
                user.phone,
                user.profile
            ])
            .map_err(super::from_write)?;
            if let Some(identity) = &identity {
                insert_identity(c, identity)?;
            }
            if let Some(emit) = &emit {
                let provider = identity.as_ref().map_or("password", |i| i.provider.as_str());
                let (kind, payload) = user_event(USER_CREATED, &user, Some(provider));
                record_event(c, &kind, &user.id, &payload, emit)?;
            }
            Ok(())
        })
        .await
    }

    async fn add_identity(&self, app: &AppName, identity: IdentityRow) -> Result<(), StoreError> {
        self.write_app(app, move |c| insert_identity(c, &identity))
            .await
    }

    async fn record_login(
        &self,
        app: &AppName,
        user_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        self.write_app(app, move |c| {
            c.prepare_cached("UPDATE users SET last_login_at = ?2 WHERE id = ?1")?
                .execute(params![user_id, at_ms])?;
            Ok(())
        })
        .await
    }

    async fn set_phone(
        &self,
        app: &AppName,
        user_id: &str,
        phone: String,
    ) -> Result<Option<UserRow>, StoreError> {
        let user_id = user_id.to_owned();
        self.write_app(app, move |c| {
            c.prepare_cached("UPDATE users SET phone = ?2 WHERE id = ?1")?
                .execute(params![user_id, phone])?;
            select_user(c, &user_id)
        })
        .await
    }

    async fn update_profile(
        &self,
        app: &AppName,
        user_id: &str,
        profile: String,
    ) -> Result<Option<UserRow>, StoreError> {
        let user_id = user_id.to_owned();
        self.write_app(app, move |c| {
            c.prepare_cached("UPDATE users SET profile = ?2 WHERE id = ?1")?
                .execute(params![user_id, profile])?;
            select_user(c, &user_id)
        })
        .await
    }

    async fn delete_user(
        &self,
        app: &AppName,
        user_id: &str,
        now_ms: i64,
        emit: Option<Emit>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let user_id = user_id.to_owned();
        self.write_app(app, move |c| {
            let Some(user) = select_user(c, &user_id)? else {
                return Ok(None);
            };
            let live: Vec<String> = c
                .prepare_cached(
                    "SELECT id FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL",
                )?
                .query_map([&user_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            // Every session, revoked ones too: their tokens may still be unexpired.
            c.prepare_cached(
                "INSERT OR REPLACE INTO session_tombstones (session_id, revoked_at)
                 SELECT id, COALESCE(revoked_at, ?2) FROM sessions WHERE user_id = ?1",
            )?
            .execute(params![user_id, now_ms])?;
            let deleted = c
                .prepare_cached("DELETE FROM users WHERE id = ?1")?
                .execute([&user_id])?;
            if let Some(emit) = &emit {
                let (kind, payload) = user_event(USER_DELETED, &user, None);
                record_event(c, &kind, &user.id, &payload, emit)?;
            }
            Ok((deleted == 1).then_some(live))
        })
        .await
    }

    async fn insert_session(&self, app: &AppName, session: SessionRow) -> Result<(), StoreError> {
        self.write_app(app, move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                session.id,
                session.user_id,
                session.provider,
                session.secret_hash,
                session.created_at_ms,
                session.refreshed_at_ms,
                session.expires_at_ms,
                session.revoked_at_ms,
                session.sealed_platform_key
            ])
            .map_err(super::from_write)?;
            Ok(())
        })
        .await
    }

    async fn rotate_session(
        &self,
        app: &AppName,
        presented: Vec<u8>,
        next: Vec<u8>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<Rotation, StoreError> {
        self.write_app(app, move |c| {
            let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE secret_hash = ?1");
            let current = c
                .prepare_cached(&sql)?
                .query_row([&presented], session_from_row)
                .optional()?;
            if let Some(session) = current {
                if session.revoked_at_ms.is_some() || session.expires_at_ms <= now_ms {
                    return Ok(Rotation::Unknown);
                }
                c.prepare_cached(
                    "INSERT INTO retired_session_secrets (secret_hash, session_id) VALUES (?1, ?2)",
                )?
                .execute(params![presented, session.id])?;
                c.prepare_cached(
                    "UPDATE sessions SET secret_hash = ?2, refreshed_at = ?3, expires_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![session.id, next, now_ms, expires_at_ms])?;
                return Ok(select_session(c, &session.id)?
                    .map(Rotation::Rotated)
                    .unwrap_or(Rotation::Unknown));
            }
            let replayed: Option<String> = c
                .prepare_cached(
                    "SELECT session_id FROM retired_session_secrets WHERE secret_hash = ?1",
                )?
                .query_row([&presented], |r| r.get(0))
                .optional()?;
            match replayed {
                Some(session_id) => {
                    c.prepare_cached(
                        "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                    )?
                    .execute(params![session_id, now_ms])?;
                    Ok(Rotation::Reused { session_id })
                }
                None => Ok(Rotation::Unknown),
            }
        })
        .await
    }

    async fn revoke_session(
        &self,
        app: &AppName,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let session_id = session_id.to_owned();
        self.write_app(app, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![session_id, now_ms])?;
            if changed == 0 {
                return Ok(None);
            }
            select_session(c, &session_id)
        })
        .await
    }

    async fn session(
        &self,
        app: &AppName,
        session_id: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        let session_id = session_id.to_owned();
        self.read_app(app, move |c| select_session(c, &session_id))
            .await
    }

    async fn sessions_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let user_id = user_id.to_owned();
        self.read_app(app, move |c| {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = ?1 ORDER BY created_at DESC"
            );
            Ok(c.prepare_cached(&sql)?
                .query_map([&user_id], session_from_row)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn revoked_since(&self, app: &AppName, since_ms: i64) -> Result<Vec<String>, StoreError> {
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT id FROM sessions WHERE revoked_at >= ?1
                     UNION ALL SELECT session_id FROM session_tombstones WHERE revoked_at >= ?1",
            )?
            .query_map([since_ms], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn add_grants(
        &self,
        app: &AppName,
        user_id: &str,
        keys: &[GrantKey<'_>],
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError> {
        let user_id = user_id.to_owned();
        let keys = owned_keys(keys);
        self.write_app(app, move |c| {
            let mut statement = c.prepare_cached(
                "INSERT INTO subscription_grants
                     (appid, openid, template_id, user_id, remaining, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5)
                 ON CONFLICT (appid, openid, template_id) DO UPDATE
                 SET remaining = min(remaining + 1, ?6), user_id = excluded.user_id,
                     updated_at = excluded.updated_at",
            )?;
            for (appid, openid, template) in &keys {
                statement.execute(params![appid, openid, template, user_id, now_ms, cap])?;
            }
            Ok(())
        })
        .await
    }

    async fn take_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let (appid, openid, template) = owned_key(key);
        self.write_app(app, move |c| {
            let taken = c
                .prepare_cached(
                    "UPDATE subscription_grants SET remaining = remaining - 1, updated_at = ?4
                     WHERE appid = ?1 AND openid = ?2 AND template_id = ?3 AND remaining > 0",
                )?
                .execute(params![appid, openid, template, now_ms])?;
            Ok(taken == 1)
        })
        .await
    }

    async fn return_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError> {
        let (appid, openid, template) = owned_key(key);
        self.write_app(app, move |c| {
            c.prepare_cached(
                "UPDATE subscription_grants SET remaining = min(remaining + 1, ?5), updated_at = ?4
                 WHERE appid = ?1 AND openid = ?2 AND template_id = ?3",
            )?
            .execute(params![appid, openid, template, now_ms, cap])?;
            Ok(())
        })
        .await
    }

    async fn clear_grants(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (appid, openid, template) = owned_key(key);
        self.write_app(app, move |c| {
            c.prepare_cached(
                "UPDATE subscription_grants SET remaining = 0, updated_at = ?4
                 WHERE appid = ?1 AND openid = ?2 AND template_id = ?3",
            )?
            .execute(params![appid, openid, template, now_ms])?;
            Ok(())
        })
        .await
    }

    async fn grants_of(&self, app: &AppName, user_id: &str) -> Result<Vec<GrantRow>, StoreError> {
        let user_id = user_id.to_owned();
        self.read_app(app, move |c| {
            let mut statement = c.prepare_cached(
                "SELECT appid, template_id, remaining, updated_at FROM subscription_grants
                 WHERE user_id = ?1 ORDER BY appid, template_id",
            )?;
            let rows = statement
                .query_map([&user_id], |r| {
                    Ok(GrantRow {
                        appid: r.get(0)?,
                        template_id: r.get(1)?,
                        remaining: r.get(2)?,
                        updated_at_ms: r.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

fn owned_key(key: GrantKey<'_>) -> (String, String, String) {
    (
        key.appid.to_owned(),
        key.openid.to_owned(),
        key.template_id.to_owned(),
    )
}

fn owned_keys(keys: &[GrantKey<'_>]) -> Vec<(String, String, String)> {
    keys.iter().copied().map(owned_key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> crate::AppName {
        crate::AppName::parse(text).expect("a valid app name")
    }
    use crate::{TenantStore, sqlite::TenantPoolOptions};

    async fn tenants() -> (tempfile::TempDir, SqliteTenants) {
        let dir = tempfile::tempdir().unwrap();
        let tenants = SqliteTenants::open(
            dir.path().to_path_buf(),
            TenantPoolOptions {
                max_open: 4,
                readers: 1,
                durability: crate::sqlite::Durability::Process,
            },
        )
        .unwrap();
        tenants.provision(&name("app")).await.unwrap();
        (dir, tenants)
    }

    fn user(id: &str, email: Option<&str>) -> UserRow {
        UserRow {
            id: id.into(),
            created_at_ms: 1,
            last_login_at_ms: 1,
            email: email.map(Into::into),
            phone: None,
            profile: "{}".into(),
        }
    }

    fn identity(subject: &str, user_id: &str, unionid: Option<&str>) -> IdentityRow {
        IdentityRow {
            provider: "wechat".into(),
            subject: subject.into(),
            user_id: user_id.into(),
            unionid: unionid.map(Into::into),
            family: "wechat".into(),
            created_at_ms: 1,
        }
    }

    fn session(id: &str, user_id: &str, secret: u8) -> SessionRow {
        SessionRow {
            id: id.into(),
            user_id: user_id.into(),
            provider: "wechat".into(),
            secret_hash: vec![secret; 32],
            created_at_ms: 1,
            refreshed_at_ms: 1,
            expires_at_ms: 1_000,
            revoked_at_ms: None,
            sealed_platform_key: None,
        }
    }

    #[tokio::test]
    async fn users_are_found_by_identity_unionid_and_email_and_unique() {
        let (_dir, t) = tenants().await;
        t.create_user(
            &name("app"),
            user("u1", Some("a@x.io")),
            Some("hash".into()),
            Some(identity("o1", "u1", Some("un1"))),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            t.user_by_identity(&name("app"), "wechat", "o1")
                .await
                .unwrap()
                .unwrap()
                .id,
            "u1"
        );
        assert_eq!(
            t.user_by_unionid(&name("app"), "wechat", "un1")
                .await
                .unwrap()
                .unwrap()
                .id,
            "u1"
        );
        let (found, hash) = t
            .user_by_email(&name("app"), "a@x.io")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((found.id.as_str(), hash.as_deref()), ("u1", Some("hash")));
        assert!(matches!(
            t.create_user(&name("app"), user("u2", Some("a@x.io")), None, None, None)
                .await,
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            t.create_user(
                &name("app"),
                user("u3", None),
                None,
                Some(identity("o1", "u3", None)),
                None
            )
            .await,
            Err(StoreError::Conflict)
        ));
        assert!(
            t.user(&name("app"), "u3").await.unwrap().is_none(),
            "a failed create leaves nothing"
        );
    }

    #[tokio::test]
    async fn rotation_replaces_the_secret_and_a_replay_revokes_the_session() {
        let (_dir, t) = tenants().await;
        t.create_user(&name("app"), user("u1", None), None, None, None)
            .await
            .unwrap();
        t.insert_session(&name("app"), session("s1", "u1", 1))
            .await
            .unwrap();

        let rotated = t
            .rotate_session(&name("app"), vec![1; 32], vec![2; 32], 10, 2_000)
            .await
            .unwrap();
        let Rotation::Rotated(s) = rotated else {
            panic!("{rotated:?}")
        };
        assert_eq!((s.secret_hash, s.expires_at_ms), (vec![2; 32], 2_000));
        assert_eq!(
            t.rotate_session(&name("app"), vec![9; 32], vec![3; 32], 11, 2_000)
                .await
                .unwrap(),
            Rotation::Unknown
        );
        assert_eq!(
            t.rotate_session(&name("app"), vec![1; 32], vec![3; 32], 12, 2_000)
                .await
                .unwrap(),
            Rotation::Reused {
                session_id: "s1".into()
            }
        );
        assert_eq!(
            t.session(&name("app"), "s1")
                .await
                .unwrap()
                .unwrap()
                .revoked_at_ms,
            Some(12)
        );
        // The current secret of a revoked session no longer refreshes.
        assert_eq!(
            t.rotate_session(&name("app"), vec![2; 32], vec![4; 32], 13, 2_000)
                .await
                .unwrap(),
            Rotation::Unknown
        );
        assert_eq!(t.revoked_since(&name("app"), 12).await.unwrap(), ["s1"]);
    }

    #[tokio::test]
    async fn deleting_a_user_reports_their_live_sessions_and_removes_everything() {
        let (_dir, t) = tenants().await;
        t.create_user(
            &name("app"),
            user("u1", None),
            None,
            Some(identity("o1", "u1", None)),
            None,
        )
        .await
        .unwrap();
        t.insert_session(&name("app"), session("s1", "u1", 1))
            .await
            .unwrap();
        t.insert_session(&name("app"), session("s2", "u1", 2))
            .await
            .unwrap();
        assert!(
            t.revoke_session(&name("app"), "s2", 5)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            t.revoke_session(&name("app"), "s2", 6)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            t.delete_user(&name("app"), "u1", 7, None).await.unwrap(),
            Some(vec!["s1".to_owned()])
        );
        let mut revoked = t.revoked_since(&name("app"), 5).await.unwrap();
        revoked.sort();
        assert_eq!(
            revoked,
            ["s1", "s2"],
            "a deleted user's sessions stay revoked"
        );
        assert!(
            t.user_by_identity(&name("app"), "wechat", "o1")
                .await
                .unwrap()
                .is_none()
        );
        assert!(t.session(&name("app"), "s1").await.unwrap().is_none());
        assert_eq!(
            t.delete_user(&name("app"), "u1", 8, None).await.unwrap(),
            None
        );
    }
}
