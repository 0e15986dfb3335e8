//! [`Relay`] on PostgreSQL: the control plane's `relay` table, ordered like an app's event log by
//! `(tx, seq)`, the writing transaction's id first, and read only below the oldest running
//! transaction (`super::records::XMIN`), so that no message can appear before one already read.
//! Messages are written without waiting for the disk: one lost to a crash of the database server
//! is a realtime message, which its history could not have kept either.
//!
//! Channels' presence on several nodes is the `presence` table (each member with its node), and
//! each node's lease the `nodes` table: a change of presence is written with the message that
//! tells the other nodes, in one transaction, and the members of a node whose lease ran out are
//! taken out, with a leave relayed for each, by whichever node sees it first.

use async_trait::async_trait;

use super::records::XMIN;
use super::{Postgres, SYSTEM_SCHEMA, execute, relax_commit, relaxed_rows, row, rows};
use std::collections::{HashMap, HashSet};

use crate::relay::{ChangeBody, LeaveBody, Present, PresentPage, Relay, RelayPage, Relayed};
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

/// The control plane's step that adds presence and the nodes' leases.
pub(super) const PRESENCE_MIGRATION: &str = "
    CREATE TABLE {s}.nodes (
        node        text COLLATE \"C\" PRIMARY KEY,
        expires_at  bigint NOT NULL
    );
    CREATE TABLE {s}.presence (
        app      text COLLATE \"C\" NOT NULL,
        channel  text COLLATE \"C\" NOT NULL,
        member   text COLLATE \"C\" NOT NULL,
        node     text COLLATE \"C\" NOT NULL,
        user_id  text,
        state    text NOT NULL,
        PRIMARY KEY (app, channel, member)
    );
    CREATE INDEX presence_by_node ON {s}.presence (node);
";

/// The database's clock, in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Inserts one relayed message (`$1` app, `$2` channel, `$3` body).
fn insert_relayed() -> String {
    format!("INSERT INTO {SYSTEM_SCHEMA}.relay (app, channel, body) VALUES ($1, $2, $3)")
}

#[async_trait]
impl Relay for Postgres {
    async fn relay(
        &self,
        app: &AppName,
        channel: &str,
        body: &str,
    ) -> Result<LogPosition, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.relay (app, channel, body) VALUES ($1, $2, $3)
             RETURNING tx, seq"
        );
        let found = relaxed_rows(&client, &sql, &[&app.as_str(), &channel, &body])
            .await?
            .pop()
            .ok_or_else(|| StoreError::Task("the relayed message has no place".into()))?;
        Ok(LogPosition {
            tx: found.try_get(0)?,
            seq: found.try_get(1)?,
        })
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

    async fn present(&self, node: &str, present: &Present, body: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        relax_commit(&tx).await?;
        put_present(&tx, node, present).await?;
        let app = present.app.as_str();
        execute(&tx, &insert_relayed(), &[&app, &present.channel, &body]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn absent(
        &self,
        app: &AppName,
        channel: &str,
        member: &str,
        body: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        relax_commit(&tx).await?;
        let sql = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.presence WHERE app = $1 AND channel = $2 AND member = $3"
        );
        if execute(&tx, &sql, &[&app.as_str(), &channel, &member]).await? > 0 {
            execute(&tx, &insert_relayed(), &[&app.as_str(), &channel, &body]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn presence_page(
        &self,
        app: &AppName,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<PresentPage, StoreError> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT count(*) FROM {SYSTEM_SCHEMA}.presence WHERE app = $1 AND channel = $2"
        );
        let count: i64 = row(&client, &sql, &[&app.as_str(), &channel])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let sql = format!(
            "SELECT member, user_id, state FROM {SYSTEM_SCHEMA}.presence
             WHERE app = $1 AND channel = $2 AND member > $3
             ORDER BY member LIMIT $4"
        );
        let members = rows(
            &client,
            &sql,
            &[&app.as_str(), &channel, &after.unwrap_or(""), &limit],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(Present {
                app: app.clone(),
                channel: channel.to_owned(),
                member: r.try_get(0)?,
                user: r.try_get(1)?,
                state: r.try_get(2)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
        Ok(PresentPage {
            count: usize::try_from(count).unwrap_or(0),
            members,
        })
    }

    async fn sync_node(
        &self,
        node: &str,
        lease_ms: i64,
        members: &[Present],
        body: ChangeBody<'_>,
    ) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!(
            "INSERT INTO {SYSTEM_SCHEMA}.nodes (node, expires_at) VALUES ($1, {NOW_MS} + $2)
             ON CONFLICT (node) DO UPDATE SET expires_at = excluded.expires_at"
        );
        execute(&tx, &sql, &[&node, &lease_ms]).await?;
        let sql = format!(
            "SELECT app, channel, member, user_id, state FROM {SYSTEM_SCHEMA}.presence
             WHERE node = $1 FOR UPDATE"
        );
        let mut stored: HashMap<(String, String, String), (Option<String>, String)> =
            HashMap::new();
        for r in rows(&tx, &sql, &[&node]).await? {
            stored.insert(
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
                (r.try_get(3)?, r.try_get(4)?),
            );
        }
        let mut changes: Vec<(&Present, bool)> = Vec::new();
        let mut kept = HashSet::new();
        for present in members {
            let key = (
                present.app.as_str().to_owned(),
                present.channel.clone(),
                present.member.clone(),
            );
            let same = stored
                .get(&key)
                .is_some_and(|(user, state)| *user == present.user && *state == present.state);
            if !same {
                changes.push((present, true));
            }
            kept.insert(key);
        }
        let gone: Vec<Present> = stored
            .into_iter()
            .filter(|(key, _)| !kept.contains(key))
            .filter_map(|((app, channel, member), (user, state))| {
                Some(Present {
                    app: AppName::parse(&app).ok()?,
                    channel,
                    member,
                    user,
                    state,
                })
            })
            .collect();
        changes.extend(gone.iter().map(|p| (p, false)));
        let delete = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.presence
             WHERE app = $1 AND channel = $2 AND member = $3 AND node = $4"
        );
        for (present, join) in &changes {
            let app = present.app.as_str();
            if *join {
                put_present(&tx, node, present).await?;
            } else {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&app, &present.channel, &present.member, &node];
                execute(&tx, &delete, &params).await?;
            }
            let text = body(present, *join);
            execute(&tx, &insert_relayed(), &[&app, &present.channel, &text]).await?;
        }
        tx.commit().await?;
        Ok(changes.len())
    }

    async fn drop_node(&self, node: &str, leave: LeaveBody<'_>) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.nodes WHERE node = $1");
        execute(&tx, &sql, &[&node]).await?;
        let sql = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.presence WHERE node = $1
             RETURNING app, channel, member, user_id, state"
        );
        let taken = presents(rows(&tx, &sql, &[&node]).await?)?;
        relay_leaves(&tx, &taken, leave).await?;
        tx.commit().await?;
        Ok(taken.len())
    }

    async fn drop_gone(&self, me: &str, leave: LeaveBody<'_>) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Whichever node deletes a lease takes its members out: one relays their leaves.
        let sql =
            format!("DELETE FROM {SYSTEM_SCHEMA}.nodes WHERE expires_at < {NOW_MS} AND node <> $1");
        execute(&tx, &sql, &[&me]).await?;
        let sql = format!(
            "DELETE FROM {SYSTEM_SCHEMA}.presence p
             WHERE p.node <> $1
               AND NOT EXISTS (SELECT 1 FROM {SYSTEM_SCHEMA}.nodes n WHERE n.node = p.node)
             RETURNING app, channel, member, user_id, state"
        );
        let taken = presents(rows(&tx, &sql, &[&me]).await?)?;
        relay_leaves(&tx, &taken, leave).await?;
        tx.commit().await?;
        Ok(taken.len())
    }

    async fn forget_presence(&self, app: &AppName) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sql = format!("DELETE FROM {SYSTEM_SCHEMA}.presence WHERE app = $1");
        execute(&client, &sql, &[&app.as_str()]).await?;
        Ok(())
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

/// Rows of `presence` as read (`app, channel, member, user_id, state`); those of an app whose
/// name is unreadable left out.
fn presents(found: Vec<tokio_postgres::Row>) -> Result<Vec<Present>, StoreError> {
    let mut taken = Vec::new();
    for r in found {
        let app: String = r.try_get(0)?;
        let Ok(app) = AppName::parse(&app) else {
            continue;
        };
        taken.push(Present {
            app,
            channel: r.try_get(1)?,
            member: r.try_get(2)?,
            user: r.try_get(3)?,
            state: r.try_get(4)?,
        });
    }
    Ok(taken)
}

/// Relays a leave for each of `taken`, in one statement.
async fn relay_leaves(
    tx: &deadpool_postgres::Transaction<'_>,
    taken: &[Present],
    leave: LeaveBody<'_>,
) -> Result<(), StoreError> {
    if taken.is_empty() {
        return Ok(());
    }
    let (mut apps, mut channels, mut bodies) = (Vec::new(), Vec::new(), Vec::new());
    for present in taken {
        apps.push(present.app.as_str());
        channels.push(present.channel.as_str());
        bodies.push(leave(present));
    }
    let sql = format!(
        "INSERT INTO {SYSTEM_SCHEMA}.relay (app, channel, body)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
    );
    execute(tx, &sql, &[&apps, &channels, &bodies]).await?;
    Ok(())
}

/// Puts a member in its channel's presence as node `node`'s (or replaces its state).
async fn put_present(
    tx: &deadpool_postgres::Transaction<'_>,
    node: &str,
    present: &Present,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {SYSTEM_SCHEMA}.presence (app, channel, member, node, user_id, state)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (app, channel, member)
         DO UPDATE SET node = excluded.node, user_id = excluded.user_id, state = excluded.state"
    );
    let app = present.app.as_str();
    execute(
        tx,
        &sql,
        &[
            &app,
            &present.channel,
            &present.member,
            &node,
            &present.user,
            &present.state,
        ],
    )
    .await?;
    Ok(())
}
