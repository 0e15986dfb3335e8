//! [`ConsoleStore`] on SQLite: tables of the system database.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row};

use super::system::SqliteSystemStore;
use crate::console::{
    AuditRow, ConsoleSessionRow, ConsoleStore, PersonRemoval, PersonRow, RoleRow,
};
use crate::{AppName, StoreError};

/// The system database's migration step that adds the console's tables.
pub(super) const MIGRATION: &str = "
    CREATE TABLE console_people (
        id             TEXT PRIMARY KEY,
        email          TEXT NOT NULL UNIQUE,
        name           TEXT NOT NULL,
        password_hash  TEXT NOT NULL,
        instance_role  TEXT NOT NULL,
        created_at     INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE console_roles (
        person  TEXT NOT NULL REFERENCES console_people(id) ON DELETE CASCADE,
        app     TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
        role    TEXT NOT NULL,
        PRIMARY KEY (person, app)
    ) STRICT;
    CREATE TABLE console_sessions (
        token_hash  BLOB PRIMARY KEY,
        person      TEXT NOT NULL REFERENCES console_people(id) ON DELETE CASCADE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
    CREATE TABLE console_audit (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        app     TEXT,
        action  TEXT NOT NULL,
        status  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX console_audit_by_app ON console_audit (app, seq);
";

const PERSON_COLUMNS: &str = "id, email, name, password_hash, instance_role, created_at";

fn person_from_row(row: &Row<'_>) -> rusqlite::Result<PersonRow> {
    Ok(PersonRow {
        id: row.get(0)?,
        email: row.get(1)?,
        name: row.get(2)?,
        password_hash: row.get(3)?,
        instance_role: row.get(4)?,
        created_at_ms: row.get(5)?,
    })
}

fn insert(c: &rusqlite::Connection, row: &PersonRow) -> Result<(), StoreError> {
    c.execute(
        &format!("INSERT INTO console_people ({PERSON_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        (
            &row.id,
            &row.email,
            &row.name,
            &row.password_hash,
            &row.instance_role,
            row.created_at_ms,
        ),
    )
    .map_err(super::from_write)?;
    Ok(())
}

#[async_trait]
impl ConsoleStore for SqliteSystemStore {
    async fn has_people(&self) -> Result<bool, StoreError> {
        self.database()
            .read(|c| {
                Ok(
                    c.query_row("SELECT EXISTS (SELECT 1 FROM console_people)", [], |r| {
                        r.get(0)
                    })?,
                )
            })
            .await
    }

    async fn insert_first_person(&self, row: PersonRow) -> Result<bool, StoreError> {
        // One writer: nothing comes between the look and the insert.
        self.database()
            .write(move |c| {
                let anybody: bool =
                    c.query_row("SELECT EXISTS (SELECT 1 FROM console_people)", [], |r| {
                        r.get(0)
                    })?;
                if anybody {
                    return Ok(false);
                }
                insert(c, &row)?;
                Ok(true)
            })
            .await
    }

    async fn insert_person(&self, row: PersonRow) -> Result<(), StoreError> {
        self.database().write(move |c| insert(c, &row)).await
    }

    async fn person(&self, id: &str) -> Result<Option<PersonRow>, StoreError> {
        let id = id.to_owned();
        self.database()
            .read(move |c| {
                let sql = format!("SELECT {PERSON_COLUMNS} FROM console_people WHERE id = ?1");
                Ok(c.prepare_cached(&sql)?
                    .query_row([&id], person_from_row)
                    .optional()?)
            })
            .await
    }

    async fn person_by_email(&self, email: &str) -> Result<Option<PersonRow>, StoreError> {
        let email = email.to_owned();
        self.database()
            .read(move |c| {
                let sql = format!("SELECT {PERSON_COLUMNS} FROM console_people WHERE email = ?1");
                Ok(c.prepare_cached(&sql)?
                    .query_row([&email], person_from_row)
                    .optional()?)
            })
            .await
    }

    async fn people(&self, limit: usize) -> Result<Vec<PersonRow>, StoreError> {
        self.database()
            .read(move |c| {
                let sql =
                    format!("SELECT {PERSON_COLUMNS} FROM console_people ORDER BY email LIMIT ?1");
                Ok(c.prepare_cached(&sql)?
                    .query_map([limit as i64], person_from_row)?
                    .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn delete_person(&self, id: &str) -> Result<PersonRemoval, StoreError> {
        let id = id.to_owned();
        self.database()
            .write(move |c| {
                let role: Option<String> = c
                    .query_row(
                        "SELECT instance_role FROM console_people WHERE id = ?1",
                        [&id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(role) = role else {
                    return Ok(PersonRemoval::NotFound);
                };
                if role == "owner" {
                    let owners: i64 = c.query_row(
                        "SELECT count(*) FROM console_people WHERE instance_role = 'owner'",
                        [],
                        |r| r.get(0),
                    )?;
                    if owners <= 1 {
                        return Ok(PersonRemoval::LastOwner);
                    }
                }
                c.execute("DELETE FROM console_people WHERE id = ?1", [&id])?;
                Ok(PersonRemoval::Removed)
            })
            .await
    }

    async fn set_role(
        &self,
        person: &str,
        app: &AppName,
        role: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (person, app, role) = (person.to_owned(), app.to_owned(), role.map(str::to_owned));
        self.database()
            .write(move |c| {
                let known: bool = c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM console_people WHERE id = ?1)
                        AND EXISTS (SELECT 1 FROM apps WHERE name = ?2)",
                    (&person, &app),
                    |r| r.get(0),
                )?;
                if !known {
                    return Ok(false);
                }
                match role {
                    Some(role) => c.execute(
                        "INSERT INTO console_roles (person, app, role) VALUES (?1, ?2, ?3)
                         ON CONFLICT (person, app) DO UPDATE SET role = excluded.role",
                        (&person, &app, &role),
                    )?,
                    None => c.execute(
                        "DELETE FROM console_roles WHERE person = ?1 AND app = ?2",
                        (&person, &app),
                    )?,
                };
                Ok(true)
            })
            .await
    }

    async fn roles(&self, person: Option<&str>) -> Result<Vec<RoleRow>, StoreError> {
        let person = person.map(str::to_owned);
        self.database()
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT person, app, role FROM console_roles
                     WHERE ?1 IS NULL OR person = ?1 ORDER BY person, app",
                )?
                .query_map([&person], |r| {
                    Ok(RoleRow {
                        person: r.get(0)?,
                        app: r.get(1)?,
                        role: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn insert_console_session(&self, row: ConsoleSessionRow) -> Result<(), StoreError> {
        self.database()
            .write(move |c| {
                c.execute(
                    "INSERT INTO console_sessions (token_hash, person, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    (
                        &row.token_hash,
                        &row.person,
                        row.created_at_ms,
                        row.expires_at_ms,
                    ),
                )
                .map_err(super::from_write)?;
                Ok(())
            })
            .await
    }

    async fn console_session(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(ConsoleSessionRow, PersonRow)>, StoreError> {
        let token_hash = token_hash.to_vec();
        self.database()
            .read(move |c| {
                let sql = format!(
                    "SELECT s.created_at, s.expires_at, {} FROM console_sessions s
                     JOIN console_people p ON p.id = s.person
                     WHERE s.token_hash = ?1 AND s.expires_at > ?2",
                    PERSON_COLUMNS
                        .split(", ")
                        .map(|column| format!("p.{column}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(c.prepare_cached(&sql)?
                    .query_row((&token_hash, now_ms), |r| {
                        let person = PersonRow {
                            id: r.get(2)?,
                            email: r.get(3)?,
                            name: r.get(4)?,
                            password_hash: r.get(5)?,
                            instance_role: r.get(6)?,
                            created_at_ms: r.get(7)?,
                        };
                        let session = ConsoleSessionRow {
                            token_hash: token_hash.clone(),
                            person: person.id.clone(),
                            created_at_ms: r.get(0)?,
                            expires_at_ms: r.get(1)?,
                        };
                        Ok((session, person))
                    })
                    .optional()?)
            })
            .await
    }

    async fn delete_console_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        let token_hash = token_hash.to_vec();
        self.database()
            .write(move |c| {
                c.execute(
                    "DELETE FROM console_sessions WHERE token_hash = ?1",
                    [&token_hash],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_expired_console_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.database()
            .write(move |c| {
                Ok(c.execute(
                    "DELETE FROM console_sessions WHERE expires_at <= ?1",
                    [now_ms],
                )? as u64)
            })
            .await
    }

    async fn append_audit(&self, row: AuditRow) -> Result<i64, StoreError> {
        self.database()
            .write(move |c| {
                c.execute(
                    "INSERT INTO console_audit (at, actor, app, action, status)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    (row.at_ms, &row.actor, &row.app, &row.action, row.status),
                )?;
                Ok(c.last_insert_rowid())
            })
            .await
    }

    async fn delete_audit_before(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        self.database()
            .write(move |c| {
                Ok(c.execute(
                    // The oldest `limit` entries by their key (no scan of the table), those of
                    // them made before `before_ms`.
                    "DELETE FROM console_audit WHERE at < ?1 AND seq IN (
                         SELECT seq FROM console_audit ORDER BY seq LIMIT ?2)",
                    (before_ms, limit as i64),
                )? as u64)
            })
            .await
    }

    async fn audit(
        &self,
        app: Option<&AppName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let app = app.map(|a| a.as_str().to_owned());
        let before = before.unwrap_or(i64::MAX);
        self.database()
            .read(move |c| {
                Ok(c.prepare_cached(
                    "SELECT seq, at, actor, app, action, status FROM console_audit
                     WHERE seq < ?1 AND (?2 IS NULL OR app = ?2)
                     ORDER BY seq DESC LIMIT ?3",
                )?
                .query_map((before, &app, limit as i64), |r| {
                    Ok(AuditRow {
                        seq: r.get(0)?,
                        at_ms: r.get(1)?,
                        actor: r.get(2)?,
                        app: r.get(3)?,
                        action: r.get(4)?,
                        status: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
