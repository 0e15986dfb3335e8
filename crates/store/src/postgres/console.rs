//! [`ConsoleStore`] on PostgreSQL: tables of schema `cloudlet`, shared by every node.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Postgres, SYSTEM_SCHEMA, execute, row, rows};
use crate::console::{
    AuditRow, ConsoleSessionRow, ConsoleStore, PersonRemoval, PersonRow, RoleRow,
};
use crate::{AppName, StoreError};

/// The control plane's migration step that adds the console's tables.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}.console_people (
        id             text COLLATE \"C\" PRIMARY KEY,
        email          text COLLATE \"C\" NOT NULL UNIQUE,
        name           text NOT NULL,
        password_hash  text NOT NULL,
        instance_role  text NOT NULL,
        created_at     bigint NOT NULL
    );
    CREATE TABLE {s}.console_roles (
        person  text COLLATE \"C\" NOT NULL REFERENCES {s}.console_people (id) ON DELETE CASCADE,
        app     text COLLATE \"C\" NOT NULL REFERENCES {s}.apps (name) ON DELETE CASCADE,
        role    text NOT NULL,
        PRIMARY KEY (person, app)
    );
    CREATE TABLE {s}.console_sessions (
        token_hash  bytea PRIMARY KEY,
        person      text COLLATE \"C\" NOT NULL
                    REFERENCES {s}.console_people (id) ON DELETE CASCADE,
        created_at  bigint NOT NULL,
        expires_at  bigint NOT NULL
    );
    CREATE INDEX console_sessions_by_expiry ON {s}.console_sessions (expires_at);
    CREATE TABLE {s}.console_audit (
        seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at      bigint NOT NULL,
        actor   text NOT NULL,
        app     text COLLATE \"C\",
        action  text NOT NULL,
        status  bigint NOT NULL
    );
    CREATE INDEX console_audit_by_app ON {s}.console_audit (app, seq);
";

const PERSON_COLUMNS: &str = "id, email, name, password_hash, instance_role, created_at";

/// A person from `r`, its columns starting at `at`.
fn person_from_row(r: &Row, at: usize) -> Result<PersonRow, StoreError> {
    Ok(PersonRow {
        id: r.try_get(at)?,
        email: r.try_get(at + 1)?,
        name: r.try_get(at + 2)?,
        password_hash: r.try_get(at + 3)?,
        instance_role: r.try_get(at + 4)?,
        created_at_ms: r.try_get(at + 5)?,
    })
}

fn insert_sql() -> String {
    format!(
        "INSERT INTO {SYSTEM_SCHEMA}.console_people ({PERSON_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
}

async fn insert(
    client: &impl deadpool_postgres::GenericClient,
    p: &PersonRow,
) -> Result<(), StoreError> {
    execute(
        client,
        &insert_sql(),
        &[
            &p.id,
            &p.email,
            &p.name,
            &p.password_hash,
            &p.instance_role,
            &p.created_at_ms,
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl ConsoleStore for Postgres {
    async fn has_people(&self) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {SYSTEM_SCHEMA}.console_people)");
        let found = row(&client, &sql, &[]).await?.ok_or(StoreError::NotFound)?;
        Ok(found.try_get(0)?)
    }

    async fn insert_first_person(&self, person: PersonRow) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Two nodes setting up at once: the lock orders them, and the second finds the first.
        tx.batch_execute(&format!(
            "LOCK TABLE {SYSTEM_SCHEMA}.console_people IN EXCLUSIVE MODE"
        ))
        .await?;
        let sql = format!("SELECT EXISTS (SELECT 1 FROM {SYSTEM_SCHEMA}.console_people)");
        let anybody: bool = row(&tx, &sql, &[])
            .await?
            .ok_or(StoreError::NotFound)?
            .try_get(0)?;
        if anybody {
            return Ok(false);
        }
        insert(&tx, &person).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn insert_person(&self, person: PersonRow) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert(&client, &person).await
    }

    async fn person(&self, id: &str) -> Result<Option<PersonRow>, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {PERSON_COLUMNS} FROM {SYSTEM_SCHEMA}.console_people WHERE id = $1");
        row(&client, &sql, &[&id])
            .await?
            .map(|r| person_from_row(&r, 0))
            .transpose()
    }

    async fn person_by_email(&self, email: &str) -> Result<Option<PersonRow>, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {PERSON_COLUMNS} FROM {SYSTEM_SCHEMA}.console_people WHERE email = $1");
        row(&client, &sql, &[&email])
            .await?
            .map(|r| person_from_row(&r, 0))
            .transpose()
    }

    async fn people(&self, limit: usize) -> Result<Vec<PersonRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {PERSON_COLUMNS} FROM {SYSTEM_SCHEMA}.console_people ORDER BY email LIMIT $1"
        );
        rows(&client, &sql, &[&(limit as i64)])
            .await?
            .iter()
            .map(|r| person_from_row(r, 0))
            .collect()
    }

    async fn delete_person(&self, id: &str) -> Result<PersonRemoval, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The owners are locked: two owners removing each other at once cannot both succeed.
        let sql = format!(
            "SELECT id FROM {SYSTEM_SCHEMA}.console_people WHERE instance_role = 'owner'
             ORDER BY id FOR UPDATE"
        );
        let owners: Vec<String> = rows(&tx, &sql, &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if owners.len() <= 1 && owners.iter().any(|owner| owner == id) {
            return Ok(PersonRemoval::LastOwner);
        }
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.console_people WHERE id = $1");
        let removed = execute(&tx, &sql, &[&id]).await?;
        tx.commit().await?;
        Ok(if removed == 1 {
            PersonRemoval::Removed
        } else {
            PersonRemoval::NotFound
        })
    }

    async fn set_role(
        &self,
        person: &str,
        app: &AppName,
        role: Option<&str>,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        match role {
            // The foreign keys decide whether the person and the app exist.
            Some(role) => {
                let sql = format!(
                    "INSERT INTO {SYSTEM_SCHEMA}.console_roles (person, app, role)
                     SELECT p.id, a.name, $3 FROM {SYSTEM_SCHEMA}.console_people p,
                          {SYSTEM_SCHEMA}.apps a
                     WHERE p.id = $1 AND a.name = $2
                     ON CONFLICT (person, app) DO UPDATE SET role = excluded.role"
                );
                Ok(execute(&client, &sql, &[&person, &app.as_str(), &role]).await? == 1)
            }
            None => {
                let sql = format!(
                    "SELECT EXISTS (SELECT 1 FROM {SYSTEM_SCHEMA}.console_people WHERE id = $1)
                        AND EXISTS (SELECT 1 FROM {SYSTEM_SCHEMA}.apps WHERE name = $2)"
                );
                let known: bool = row(&client, &sql, &[&person, &app.as_str()])
                    .await?
                    .ok_or(StoreError::NotFound)?
                    .try_get(0)?;
                let sql = format!(
                    "DELETE FROM {SYSTEM_SCHEMA}.console_roles WHERE person = $1 AND app = $2"
                );
                execute(&client, &sql, &[&person, &app.as_str()]).await?;
                Ok(known)
            }
        }
    }

    async fn roles(&self, person: Option<&str>) -> Result<Vec<RoleRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT person, app, role FROM {SYSTEM_SCHEMA}.console_roles
             WHERE $1::text IS NULL OR person = $1 ORDER BY person, app"
        );
        rows(&client, &sql, &[&person])
            .await?
            .iter()
            .map(|r| {
                Ok(RoleRow {
                    person: r.try_get(0)?,
                    app: r.try_get(1)?,
                    role: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn insert_console_session(&self, s: ConsoleSessionRow) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.console_sessions (token_hash, person, created_at, expires_at)
             VALUES ($1, $2, $3, $4)"
        );
        execute(
            &client,
            &sql,
            &[&s.token_hash, &s.person, &s.created_at_ms, &s.expires_at_ms],
        )
        .await?;
        Ok(())
    }

    async fn console_session(
        &self,
        token_hash: &[u8],
        now_ms: i64,
    ) -> Result<Option<(ConsoleSessionRow, PersonRow)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT s.created_at, s.expires_at,
                    p.id, p.email, p.name, p.password_hash, p.instance_role, p.created_at
             FROM {SYSTEM_SCHEMA}.console_sessions s
             JOIN {SYSTEM_SCHEMA}.console_people p ON p.id = s.person
             WHERE s.token_hash = $1 AND s.expires_at > $2"
        );
        let Some(r) = row(&client, &sql, &[&token_hash, &now_ms]).await? else {
            return Ok(None);
        };
        let person = person_from_row(&r, 2)?;
        let session = ConsoleSessionRow {
            token_hash: token_hash.to_vec(),
            person: person.id.clone(),
            created_at_ms: r.try_get(0)?,
            expires_at_ms: r.try_get(1)?,
        };
        Ok(Some((session, person)))
    }

    async fn delete_console_session(&self, token_hash: &[u8]) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.console_sessions WHERE token_hash = $1");
        execute(&client, &sql, &[&token_hash]).await?;
        Ok(())
    }

    async fn delete_expired_console_sessions(&self, now_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.console_sessions WHERE expires_at <= $1");
        execute(&client, &sql, &[&now_ms]).await
    }

    async fn append_audit(&self, a: AuditRow) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.console_audit (at, actor, app, action, status)
             VALUES ($1, $2, $3, $4, $5) RETURNING seq"
        );
        let added = row(
            &client,
            &sql,
            &[&a.at_ms, &a.actor, &a.app, &a.action, &a.status],
        )
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(added.try_get(0)?)
    }

    async fn delete_audit_before(&self, before_ms: i64, limit: usize) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.console_audit WHERE at < $1 AND seq IN (
                 SELECT seq FROM {SYSTEM_SCHEMA}.console_audit ORDER BY seq LIMIT $2)"
        );
        execute(&client, &sql, &[&before_ms, &(limit as i64)]).await
    }

    async fn audit(
        &self,
        app: Option<&AppName>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT seq, at, actor, app, action, status FROM {SYSTEM_SCHEMA}.console_audit
             WHERE seq < $1 AND ($2::text IS NULL OR app = $2)
             ORDER BY seq DESC LIMIT $3"
        );
        let app = app.map(AppName::as_str);
        rows(
            &client,
            &sql,
            &[&before.unwrap_or(i64::MAX), &app, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(AuditRow {
                seq: r.try_get(0)?,
                at_ms: r.try_get(1)?,
                actor: r.try_get(2)?,
                app: r.try_get(3)?,
                action: r.try_get(4)?,
                status: r.try_get(5)?,
            })
        })
        .collect()
    }
}
