//! [`Relay`] on PostgreSQL: the control plane's `relay` table, ordered like an app's event log by
//! `(tx, seq)`, the writing transaction's id first, and read only below the oldest running
//! transaction (`super::records::XMIN`), so that no message can appear before one already read.
//! Messages are written without waiting for the disk: one lost to a crash of the database server
//! is a realtime message, which its history could not have kept either.

use async_trait::async_trait;

use super::records::XMIN;
use super::{Postgres, SYSTEM_SCHEMA, execute, relax_commit, row, rows};
use crate::relay::{Relay, RelayPage, Relayed};
use crate::{AppName, LogPosition, StoreError};

/// The control plane's step that adds the table.
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}.relay (
        tx       bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
        seq      bigserial,
        app      text COLLATE \"C\" NOT NULL,
        channel  text COLLATE \"C\" NOT NULL,
        body     text NOT NULL,
        at       bigint NOT NULL DEFAULT ((extract(epoch FROM clock_timestamp()) * 1000)::bigint),
        PRIMARY KEY (tx, seq)
    );
    CREATE INDEX relay_by_at ON {s}.relay (at);
";

#[async_trait]
impl Relay for Postgres {
    async fn relay(
        &self,
        app: &AppName,
        channel: &str,
        body: &str,
    ) -> Result<LogPosition, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        relax_commit(&tx).await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.relay (app, channel, body) VALUES ($1, $2, $3)
             RETURNING tx, seq"
        );
        let found = row(&tx, &sql, &[&app.as_str(), &channel, &body])
            .await?
            .ok_or_else(|| StoreError::Task("the relayed message has no place".into()))?;
        let at = LogPosition {
            tx: found.try_get(0)?,
            seq: found.try_get(1)?,
        };
        tx.commit().await?;
        Ok(at)
    }

    async fn relayed_after(
        &self,
        after: LogPosition,
        limit: usize,
    ) -> Result<RelayPage, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT tx, seq, app, channel, body, tx < {XMIN} FROM {SYSTEM_SCHEMA}.relay
             WHERE (tx, seq) > ($1, $2) ORDER BY tx, seq LIMIT $3"
        );
        let found = rows(&client, &sql, &[&after.tx, &after.seq, &limit]).await?;
        let mut page = RelayPage {
            full: found.len() as i64 == limit,
            reached: after,
            ..RelayPage::default()
        };
        for r in found {
            // Not below every running transaction: one committing later may come before it.
            let in_order: bool = r.try_get(5)?;
            if !in_order {
                page.pending = true;
                page.full = false;
                break;
            }
            let at = LogPosition {
                tx: r.try_get(0)?,
                seq: r.try_get(1)?,
            };
            page.reached = at;
            let app: String = r.try_get(2)?;
            let Ok(app) = AppName::parse(&app) else {
                continue;
            };
            page.messages.push(Relayed {
                at,
                app,
                channel: r.try_get(3)?,
                body: r.try_get(4)?,
            });
        }
        Ok(page)
    }

    async fn relay_end(&self) -> Result<LogPosition, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT tx, seq FROM {SYSTEM_SCHEMA}.relay WHERE tx < {XMIN}
             ORDER BY tx DESC, seq DESC LIMIT 1"
        );
        Ok(match row(&client, &sql, &[]).await? {
            Some(r) => LogPosition {
                tx: r.try_get(0)?,
                seq: r.try_get(1)?,
            },
            None => LogPosition::default(),
        })
    }

    async fn sweep_relay(&self, keep_ms: i64) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.relay
             WHERE tx < {XMIN}
               AND at < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1"
        );
        execute(&client, &sql, &[&keep_ms]).await
    }
}
