//! [`UserStore`] on PostgreSQL: users, identities and sessions in each app's schema.
//!
//! The SQLite implementation is the specification. It runs every write on one writer thread;
//! here writes run concurrently, so each read-then-write is one conditional statement or a
//! transaction that locks the rows it reads (`FOR UPDATE`).

use async_trait::async_trait;
use tokio_postgres::Row;

use super::records::record_event;
use super::{Postgres, execute, row, rows, schema};
use crate::users::user_event;
use crate::{
    AppName, Emit, GrantKey, GrantRow, IdentityRow, Rotation, SessionRow, StoreError, USER_CREATED,
    USER_DELETED, UserRow, UserStore,
};

/// Schema step 1 of an app: SQLite's steps 2 (users, identities, sessions) and 3 (tombstones).
/// What an administrator's search of users looks up: each by an index.
pub(super) const SEARCH: &str = "
    CREATE INDEX users_by_phone ON {s}.users (phone) WHERE phone IS NOT NULL;
    CREATE INDEX identities_by_subject ON {s}.identities (subject);
    CREATE INDEX identities_by_unionid_alone ON {s}.identities (unionid) WHERE unionid IS NOT NULL;
";

pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}.users (
        id             text PRIMARY KEY,
        created_at     bigint NOT NULL,
        last_login_at  bigint NOT NULL,
        email          text UNIQUE,
        password_hash  text,
        phone          text,
        profile        text NOT NULL
    );
    CREATE TABLE {s}.identities (
        provider    text NOT NULL,
        subject     text NOT NULL,
        user_id     text NOT NULL REFERENCES {s}.users(id) ON DELETE CASCADE,
        unionid     text,
        family      text NOT NULL,
        created_at  bigint NOT NULL,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identities_by_unionid ON {s}.identities (family, unionid)
        WHERE unionid IS NOT NULL;
    CREATE INDEX identities_by_user ON {s}.identities (user_id);
    CREATE TABLE {s}.sessions (
        id                   text PRIMARY KEY,
        user_id              text NOT NULL REFERENCES {s}.users(id) ON DELETE CASCADE,
        provider             text NOT NULL,
        secret_hash          bytea NOT NULL UNIQUE,
        created_at           bigint NOT NULL,
        refreshed_at         bigint NOT NULL,
        expires_at           bigint NOT NULL,
        revoked_at           bigint,
        sealed_platform_key  bytea
    );
    CREATE INDEX sessions_by_user ON {s}.sessions (user_id);
    CREATE INDEX sessions_by_revocation ON {s}.sessions (revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE {s}.retired_session_secrets (
        secret_hash  bytea PRIMARY KEY,
        session_id   text NOT NULL REFERENCES {s}.sessions(id) ON DELETE CASCADE
    );
    CREATE TABLE {s}.session_tombstones (
        session_id  text PRIMARY KEY,
        revoked_at  bigint NOT NULL
    );
    CREATE INDEX session_tombstones_by_time ON {s}.session_tombstones (revoked_at);
";

/// Schema step 7 of an app: SQLite's step 9, the consent ledger of subscribe messages.
pub(super) const GRANTS: &str = "
    CREATE TABLE {s}.subscription_grants (
        appid        text COLLATE \"C\" NOT NULL,
        openid       text COLLATE \"C\" NOT NULL,
        template_id  text COLLATE \"C\" NOT NULL,
        user_id      text NOT NULL REFERENCES {s}.users(id) ON DELETE CASCADE,
        remaining    bigint NOT NULL,
        updated_at   bigint NOT NULL,
        PRIMARY KEY (appid, openid, template_id)
    );
    CREATE INDEX subscription_grants_by_user ON {s}.subscription_grants (user_id);
";

const USER_COLUMNS: &str = "id, created_at, last_login_at, email, phone, profile";
const SESSION_COLUMNS: &str = "id, user_id, provider, secret_hash, created_at, refreshed_at, \
                               expires_at, revoked_at, sealed_platform_key";

fn user_from_row(row: &Row) -> Result<UserRow, StoreError> {
    Ok(UserRow {
        id: row.try_get(0)?,
        created_at_ms: row.try_get(1)?,
        last_login_at_ms: row.try_get(2)?,
        email: row.try_get(3)?,
        phone: row.try_get(4)?,
        profile: row.try_get(5)?,
    })
}

fn session_from_row(row: &Row) -> Result<SessionRow, StoreError> {
    Ok(SessionRow {
        id: row.try_get(0)?,
        user_id: row.try_get(1)?,
        provider: row.try_get(2)?,
        secret_hash: row.try_get(3)?,
        created_at_ms: row.try_get(4)?,
        refreshed_at_ms: row.try_get(5)?,
        expires_at_ms: row.try_get(6)?,
        revoked_at_ms: row.try_get(7)?,
        sealed_platform_key: row.try_get(8)?,
    })
}

/// The user a query on `users` (selecting [`USER_COLUMNS`]) found, if any.
fn user_of(found: Option<Row>) -> Result<Option<UserRow>, StoreError> {
    found.as_ref().map(user_from_row).transpose()
}

/// The session a query on `sessions` (selecting [`SESSION_COLUMNS`]) found, if any.
fn session_of(found: Option<Row>) -> Result<Option<SessionRow>, StoreError> {
    found.as_ref().map(session_from_row).transpose()
}

async fn insert_identity(
    client: &impl deadpool_postgres::GenericClient,
    app: &AppName,
    identity: &IdentityRow,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {}.identities (provider, subject, user_id, unionid, family, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        schema(app)
    );
    execute(
        client,
        &sql,
        &[
            &identity.provider,
            &identity.subject,
            &identity.user_id,
            &identity.unionid,
            &identity.family,
            &identity.created_at_ms,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl UserStore for Postgres {
    async fn user(&self, app: &AppName, id: &str) -> Result<Option<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM {}.users WHERE id = $1",
            schema(app)
        );
        user_of(row(&*client, &sql, &[&id]).await?)
    }

    async fn list_users(
        &self,
        app: &AppName,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let (after, limit) = (after.unwrap_or_default(), limit as i64);
        // Each name a search may be is looked up by its own index, never a scan.
        let found = match search {
            None => {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM {s}.users WHERE id > $1 ORDER BY id LIMIT $2"
                );
                rows(&*client, &sql, &[&after, &limit]).await?
            }
            Some(search) => {
                let sql = format!(
                    "SELECT {USER_COLUMNS} FROM {s}.users WHERE id > $2 AND id IN (
                        SELECT id FROM {s}.users WHERE id = $1
                        UNION SELECT id FROM {s}.users WHERE email = $1
                        UNION SELECT id FROM {s}.users WHERE phone = $1
                        UNION SELECT user_id FROM {s}.identities WHERE subject = $1
                        UNION SELECT user_id FROM {s}.identities WHERE unionid = $1)
                     ORDER BY id LIMIT $3"
                );
                rows(&*client, &sql, &[&search, &after, &limit]).await?
            }
        };
        found.iter().map(user_from_row).collect()
    }

    async fn identities_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<IdentityRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT provider, subject, user_id, unionid, family, created_at FROM {}.identities
             WHERE user_id = $1 ORDER BY created_at, provider",
            schema(app)
        );
        rows(&*client, &sql, &[&user_id])
            .await?
            .iter()
            .map(|r| {
                Ok(IdentityRow {
                    provider: r.try_get(0)?,
                    subject: r.try_get(1)?,
                    user_id: r.try_get(2)?,
                    unionid: r.try_get(3)?,
                    family: r.try_get(4)?,
                    created_at_ms: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn user_by_identity(
        &self,
        app: &AppName,
        provider: &str,
        subject: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM {s}.users WHERE id =
             (SELECT user_id FROM {s}.identities WHERE provider = $1 AND subject = $2)"
        );
        user_of(row(&*client, &sql, &[&provider, &subject]).await?)
    }

    async fn identity_of(
        &self,
        app: &AppName,
        user_id: &str,
        provider: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT subject, unionid FROM {}.identities WHERE user_id = $1 AND provider = $2",
            schema(app)
        );
        row(&*client, &sql, &[&user_id, &provider])
            .await?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
    }

    async fn user_by_unionid(
        &self,
        app: &AppName,
        family: &str,
        unionid: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM {s}.users WHERE id =
             (SELECT user_id FROM {s}.identities WHERE family = $1 AND unionid = $2 LIMIT 1)"
        );
        user_of(row(&*client, &sql, &[&family, &unionid]).await?)
    }

    async fn user_by_email(
        &self,
        app: &AppName,
        email: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {USER_COLUMNS}, password_hash FROM {}.users WHERE email = $1",
            schema(app)
        );
        row(&*client, &sql, &[&email])
            .await?
            .map(|r| Ok((user_from_row(&r)?, r.try_get(6)?)))
            .transpose()
    }

    async fn create_user(
        &self,
        app: &AppName,
        user: UserRow,
        password_hash: Option<String>,
        identity: Option<IdentityRow>,
        emit: Option<Emit>,
    ) -> Result<(), StoreError> {
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "INSERT INTO {}.users
                 (id, created_at, last_login_at, email, password_hash, phone, profile)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            schema(app)
        );
        execute(
            &tx,
            &sql,
            &[
                &user.id,
                &user.created_at_ms,
                &user.last_login_at_ms,
                &user.email,
                &password_hash,
                &user.phone,
                &user.profile,
            ],
        )
        .await?;
        if let Some(identity) = &identity {
            insert_identity(&tx, app, identity).await?;
        }
        if let Some(emit) = &emit {
            let provider = identity
                .as_ref()
                .map_or("password", |i| i.provider.as_str());
            let (kind, payload) = user_event(USER_CREATED, &user, Some(provider));
            record_event(&tx, &schema(app), &kind, &user.id, &payload, emit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn add_identity(&self, app: &AppName, identity: IdentityRow) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        insert_identity(&*client, app, &identity).await
    }

    async fn record_login(
        &self,
        app: &AppName,
        user_id: &str,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.users SET last_login_at = $2 WHERE id = $1",
            schema(app)
        );
        execute(&*client, &sql, &[&user_id, &at_ms]).await?;
        Ok(())
    }

    async fn set_phone(
        &self,
        app: &AppName,
        user_id: &str,
        phone: String,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.users SET phone = $2 WHERE id = $1 RETURNING {USER_COLUMNS}",
            schema(app)
        );
        user_of(row(&*client, &sql, &[&user_id, &phone]).await?)
    }

    async fn update_profile(
        &self,
        app: &AppName,
        user_id: &str,
        profile: String,
    ) -> Result<Option<UserRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.users SET profile = $2 WHERE id = $1 RETURNING {USER_COLUMNS}",
            schema(app)
        );
        user_of(row(&*client, &sql, &[&user_id, &profile]).await?)
    }

    async fn delete_user(
        &self,
        app: &AppName,
        user_id: &str,
        now_ms: i64,
        emit: Option<Emit>,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // Locking the user holds off new sessions (their foreign key check waits for it);
        // locking the live sessions holds off their revocation and rotation.
        let sql = format!("SELECT {USER_COLUMNS} FROM {s}.users WHERE id = $1 FOR UPDATE");
        let Some(user) = user_of(row(&tx, &sql, &[&user_id]).await?)? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT id FROM {s}.sessions WHERE user_id = $1 AND revoked_at IS NULL FOR UPDATE"
        );
        let live = rows(&tx, &sql, &[&user_id])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        // Every session, revoked ones too: their tokens may still be unexpired.
        let sql = format!(
            "INSERT INTO {s}.session_tombstones (session_id, revoked_at)
             SELECT id, COALESCE(revoked_at, $2) FROM {s}.sessions WHERE user_id = $1
             ON CONFLICT (session_id) DO UPDATE SET revoked_at = excluded.revoked_at"
        );
        execute(&tx, &sql, &[&user_id, &now_ms]).await?;
        let sql = format!("DELETE FROM {s}.users WHERE id = $1");
        let deleted = execute(&tx, &sql, &[&user_id]).await?;
        if let Some(emit) = &emit {
            let (kind, payload) = user_event(USER_DELETED, &user, None);
            record_event(&tx, &s, &kind, &user.id, &payload, emit).await?;
        }
        tx.commit().await?;
        Ok((deleted == 1).then_some(live))
    }

    async fn insert_session(&self, app: &AppName, session: SessionRow) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {}.sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[
                &session.id,
                &session.user_id,
                &session.provider,
                &session.secret_hash,
                &session.created_at_ms,
                &session.refreshed_at_ms,
                &session.expires_at_ms,
                &session.revoked_at_ms,
                &session.sealed_platform_key,
            ],
        )
        .await?;
        Ok(())
    }

    async fn rotate_session(
        &self,
        app: &AppName,
        presented: Vec<u8>,
        next: Vec<u8>,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> Result<Rotation, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // A concurrent rotation of the same secret waits here for this one's lock, then finds
        // the secret replaced (the row no longer matches) and falls through to the retired
        // secrets, which it sees once this one has committed: exactly one of them rotates.
        let sql =
            format!("SELECT {SESSION_COLUMNS} FROM {s}.sessions WHERE secret_hash = $1 FOR UPDATE");
        if let Some(session) = session_of(row(&tx, &sql, &[&presented]).await?)? {
            if session.revoked_at_ms.is_some() || session.expires_at_ms <= now_ms {
                return Ok(Rotation::Unknown);
            }
            let sql = format!(
                "INSERT INTO {s}.retired_session_secrets (secret_hash, session_id) VALUES ($1, $2)"
            );
            execute(&tx, &sql, &[&presented, &session.id]).await?;
            let sql = format!(
                "UPDATE {s}.sessions SET secret_hash = $2, refreshed_at = $3, expires_at = $4
                 WHERE id = $1 RETURNING {SESSION_COLUMNS}"
            );
            let rotated =
                session_of(row(&tx, &sql, &[&session.id, &next, &now_ms, &expires_at_ms]).await?)?;
            tx.commit().await?;
            return Ok(rotated.map(Rotation::Rotated).unwrap_or(Rotation::Unknown));
        }
        let sql =
            format!("SELECT session_id FROM {s}.retired_session_secrets WHERE secret_hash = $1");
        let Some(replayed) = row(&tx, &sql, &[&presented]).await? else {
            return Ok(Rotation::Unknown);
        };
        let session_id: String = replayed.try_get(0)?;
        let sql =
            format!("UPDATE {s}.sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL");
        execute(&tx, &sql, &[&session_id, &now_ms]).await?;
        tx.commit().await?;
        Ok(Rotation::Reused { session_id })
    }

    async fn revoke_session(
        &self,
        app: &AppName,
        session_id: &str,
        now_ms: i64,
    ) -> Result<Option<SessionRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL
             RETURNING {SESSION_COLUMNS}",
            schema(app)
        );
        session_of(row(&*client, &sql, &[&session_id, &now_ms]).await?)
    }

    async fn session(
        &self,
        app: &AppName,
        session_id: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM {}.sessions WHERE id = $1",
            schema(app)
        );
        session_of(row(&*client, &sql, &[&session_id]).await?)
    }

    async fn sessions_of(
        &self,
        app: &AppName,
        user_id: &str,
    ) -> Result<Vec<SessionRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM {}.sessions WHERE user_id = $1 ORDER BY created_at DESC",
            schema(app)
        );
        rows(&*client, &sql, &[&user_id])
            .await?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn revoked_since(&self, app: &AppName, since_ms: i64) -> Result<Vec<String>, StoreError> {
        let client = self.app_client(app).await?;
        let s = schema(app);
        let sql = format!(
            "SELECT id FROM {s}.sessions WHERE revoked_at >= $1
             UNION ALL SELECT session_id FROM {s}.session_tombstones WHERE revoked_at >= $1"
        );
        Ok(rows(&*client, &sql, &[&since_ms])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?)
    }

    async fn add_grants(
        &self,
        app: &AppName,
        user_id: &str,
        keys: &[GrantKey<'_>],
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.app_client(app).await?;
        let sql = format!(
            "INSERT INTO {s}.subscription_grants AS g
                 (appid, openid, template_id, user_id, remaining, updated_at)
             VALUES ($1, $2, $3, $4, 1, $5)
             ON CONFLICT (appid, openid, template_id) DO UPDATE
             SET remaining = LEAST(g.remaining + 1, $6), user_id = excluded.user_id,
                 updated_at = excluded.updated_at",
            s = schema(app)
        );
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(&sql).await?;
        for key in keys {
            tx.execute(
                &statement,
                &[
                    &key.appid,
                    &key.openid,
                    &key.template_id,
                    &user_id,
                    &now_ms,
                    &cap,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn take_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.subscription_grants SET remaining = remaining - 1, updated_at = $4
             WHERE appid = $1 AND openid = $2 AND template_id = $3 AND remaining > 0",
            schema(app)
        );
        let taken = execute(
            &*client,
            &sql,
            &[&key.appid, &key.openid, &key.template_id, &now_ms],
        )
        .await?;
        Ok(taken == 1)
    }

    async fn return_grant(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
        cap: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.subscription_grants SET remaining = LEAST(remaining + 1, $5),
                 updated_at = $4
             WHERE appid = $1 AND openid = $2 AND template_id = $3",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[&key.appid, &key.openid, &key.template_id, &now_ms, &cap],
        )
        .await?;
        Ok(())
    }

    async fn clear_grants(
        &self,
        app: &AppName,
        key: GrantKey<'_>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}.subscription_grants SET remaining = 0, updated_at = $4
             WHERE appid = $1 AND openid = $2 AND template_id = $3",
            schema(app)
        );
        execute(
            &*client,
            &sql,
            &[&key.appid, &key.openid, &key.template_id, &now_ms],
        )
        .await?;
        Ok(())
    }

    async fn grants_of(&self, app: &AppName, user_id: &str) -> Result<Vec<GrantRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT appid, template_id, remaining, updated_at FROM {}.subscription_grants
             WHERE user_id = $1 ORDER BY appid, template_id",
            schema(app)
        );
        rows(&*client, &sql, &[&user_id])
            .await?
            .iter()
            .map(|r| {
                Ok(GrantRow {
                    appid: r.try_get(0)?,
                    template_id: r.try_get(1)?,
                    remaining: r.try_get(2)?,
                    updated_at_ms: r.try_get(3)?,
                })
            })
            .collect()
    }
}
