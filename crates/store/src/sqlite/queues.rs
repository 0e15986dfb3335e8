//! [`QueueStore`] on SQLite, in each app's database. Every step is one write of the app's
//! writer thread, so claims, acknowledgements and failures are serialised by construction.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteTenants;
use crate::queues::{
    ClaimAtSend, Claimed, EXPIRED, Failed, MessageRow, MessageState, NewMessage, QueueRow,
    QueueStats, QueueStore, Sent, must_be_declared,
};
use crate::{AppName, OnDisk, StoreError};

/// Schema step 10 of an app database: the trigger depth a message was sent at.
pub(super) const DEPTH: &str = "
    ALTER TABLE _queue_messages ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
";

/// Schema step 18 of an app database: the index by due time across queues goes (each queue's
/// next due message is found through `_queue_messages_due`, and every send and claim paid for
/// it), and expired claims with their attempts spent are found through an index of the claims
/// on their last attempt alone, where the search went through every claimed message of the
/// queue (on PostgreSQL also those acknowledged since the last vacuum).
pub(super) const SPENT: &str = "
    DROP INDEX _queue_messages_next;
    CREATE INDEX _queue_messages_spent ON _queue_messages (queue, visible_at)
        WHERE state = 1 AND attempt >= max_attempts;
";

/// Schema step 7 of an app database.
pub(super) const MIGRATION: &str = "
    CREATE TABLE _queues (
        name        TEXT PRIMARY KEY,
        settings    TEXT NOT NULL,
        created_at  INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE _queue_messages (
        id            TEXT PRIMARY KEY,
        queue         TEXT NOT NULL,
        payload       TEXT NOT NULL,
        state         INTEGER NOT NULL,
        visible_at    INTEGER NOT NULL,
        attempt       INTEGER NOT NULL,
        max_attempts  INTEGER NOT NULL,
        lease         TEXT,
        last_error    TEXT,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX _queue_messages_due ON _queue_messages (queue, visible_at) WHERE state < 2;
    CREATE INDEX _queue_messages_next ON _queue_messages (visible_at) WHERE state < 2;
    CREATE INDEX _queue_messages_by_state ON _queue_messages (queue, state, id);
    CREATE TABLE _queue_keys (
        queue       TEXT NOT NULL,
        key         TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (queue, key)
    ) STRICT;
";

const WAITING: i64 = 0;
const CLAIMED: i64 = 1;
const DEAD: i64 = 2;

/// The most messages, and payload bytes, of a send small enough to commit on its sender's task
/// when the writer is idle ([`Database::write_committed_small`](super::Database::write_committed_small)):
/// a few rows, written in tens of microseconds. (A claim in the same write first buries the
/// queue's expired claims that have no attempt left; a backlog of those, which only the app's
/// own consumers leave, is buried once, by whichever claim comes first.)
const SMALL_SEND: (usize, usize) = (16, 16 * 1024);

/// Whether a send is small enough to commit on its sender's task.
fn small(messages: &[NewMessage]) -> bool {
    messages.len() <= SMALL_SEND.0
        && messages.iter().map(|m| m.payload.len()).sum::<usize>() <= SMALL_SEND.1
}

const MESSAGE_COLUMNS: &str =
    "id, queue, payload, state, visible_at, attempt, max_attempts, last_error, created_at";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        queue: r.get(1)?,
        payload: r.get(2)?,
        state: MessageState::from_code(r.get(3)?),
        visible_at_ms: r.get(4)?,
        attempt: r.get(5)?,
        max_attempts: r.get(6)?,
        last_error: r.get(7)?,
        created_at_ms: r.get(8)?,
    })
}

/// Moves expired claims of `queue` whose attempts are spent to the dead letters.
fn bury_expired(c: &Connection, queue: &str, now_ms: i64) -> Result<(), StoreError> {
    // The claimed state written out, so that the statement matches the partial index.
    c.prepare_cached(
        "UPDATE _queue_messages INDEXED BY _queue_messages_spent
         SET state = ?3, lease = NULL, last_error = ?4, updated_at = ?2
         WHERE queue = ?1 AND state = 1 AND visible_at <= ?2 AND attempt >= max_attempts",
    )?
    .execute(params![queue, now_ms, DEAD, EXPIRED])?;
    Ok(())
}

#[async_trait]
impl QueueStore for SqliteTenants {
    async fn queues(&self, app: &AppName) -> Result<Vec<QueueRow>, StoreError> {
        self.read_app(app, |c| {
            let mut statement =
                c.prepare_cached("SELECT name, settings, created_at FROM _queues ORDER BY name")?;
            let rows = statement
                .query_map([], |r| {
                    Ok(QueueRow {
                        name: r.get(0)?,
                        settings: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn put_queue(&self, app: &AppName, queue: QueueRow) -> Result<bool, StoreError> {
        self.write_app(app, move |c| {
            let updated = c
                .prepare_cached("UPDATE _queues SET settings = ?2 WHERE name = ?1")?
                .execute(params![queue.name, queue.settings])?;
            if updated == 1 {
                return Ok(false);
            }
            c.prepare_cached(
                "INSERT INTO _queues (name, settings, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![queue.name, queue.settings, queue.created_at_ms])?;
            Ok(true)
        })
        .await
    }

    async fn delete_queue(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.write_app(app, move |c| {
            let removed = c
                .prepare_cached("DELETE FROM _queues WHERE name = ?1")?
                .execute([&name])?;
            // Only a declared queue's messages: the triggers' queue, and messages of a name
            // nobody declared, are not this call's to delete.
            if removed == 1 {
                c.prepare_cached("DELETE FROM _queue_messages WHERE queue = ?1")?
                    .execute([&name])?;
                c.prepare_cached("DELETE FROM _queue_keys WHERE queue = ?1")?
                    .execute([&name])?;
            }
            Ok(removed == 1)
        })
        .await
    }

    async fn send(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
    ) -> Result<Vec<Sent>, StoreError> {
        let (sent, on_disk) = self
            .send_committed(app, queue, messages, now_ms, key_ttl_ms)
            .await?;
        on_disk.wait().await?;
        Ok(sent)
    }

    async fn send_committed(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
    ) -> Result<(Vec<Sent>, OnDisk), StoreError> {
        let queue = queue.to_owned();
        let small = small(&messages);
        let write = move |c: &Connection| insert_messages(c, &queue, &messages, now_ms, key_ttl_ms);
        if small {
            self.write_app_committed_small(app, write).await
        } else {
            self.write_app_committed(app, write).await
        }
    }

    async fn send_and_claim(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
        claim: ClaimAtSend,
        app_key: Option<&[u8]>,
    ) -> Result<(Vec<Sent>, Vec<Claimed>, OnDisk), StoreError> {
        // The apps' keys are in another file: its caller checks them first
        // (`checks_app_key_at_send`).
        if app_key.is_some() {
            return Err(StoreError::KeyRefused);
        }
        let queue = queue.to_owned();
        // The claim reads and rewrites what it takes: one message at most (whose payload is
        // bounded) keeps the write small; a consumer that takes batches queues for the writer.
        let small = small(&messages) && claim.leases.len() <= 1;
        let write = move |c: &Connection| {
            let sent = insert_messages(c, &queue, &messages, now_ms, key_ttl_ms)?;
            let claimed = claim_messages(c, &queue, claim.leases, now_ms, claim.until_ms)?;
            Ok((sent, claimed))
        };
        let ((sent, claimed), on_disk) = if small {
            self.write_app_committed_small(app, write).await?
        } else {
            self.write_app_committed(app, write).await?
        };
        Ok((sent, claimed, on_disk))
    }

    async fn claim(
        &self,
        app: &AppName,
        queue: &str,
        leases: Vec<String>,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let queue = queue.to_owned();
        // Relaxed: a claim lost to a power cut (not to a crash of the process) only means its
        // messages are delivered again under the same attempt number.
        self.write_app_relaxed(app, move |c| {
            claim_messages(c, &queue, leases, now_ms, until_ms)
        })
        .await
    }

    async fn ack(&self, app: &AppName, id: &str, lease: &str) -> Result<bool, StoreError> {
        let (id, lease) = (id.to_owned(), lease.to_owned());
        // Relaxed: an acknowledgement lost to a power cut (not to a crash of the process) only
        // means its message is delivered again (at least once).
        self.write_app_relaxed(app, move |c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM _queue_messages WHERE id = ?1 AND state = ?2 AND lease = ?3",
                )?
                .execute(params![id, CLAIMED, lease])?;
            Ok(deleted == 1)
        })
        .await
    }

    async fn ack_many(
        &self,
        app: &AppName,
        acks: Vec<(String, String)>,
    ) -> Result<Vec<bool>, StoreError> {
        // Relaxed, as `ack`.
        self.write_app_relaxed(app, move |c| {
            let mut delete = c.prepare_cached(
                "DELETE FROM _queue_messages WHERE id = ?1 AND state = ?2 AND lease = ?3",
            )?;
            acks.iter()
                .map(|(id, lease)| Ok(delete.execute(params![id, CLAIMED, lease])? == 1))
                .collect()
        })
        .await
    }

    async fn extend(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let (id, lease) = (id.to_owned(), lease.to_owned());
        self.write_app(app, move |c| {
            let changed = c
                .prepare_cached(
                    "UPDATE _queue_messages SET visible_at = ?4
                     WHERE id = ?1 AND state = ?2 AND lease = ?3",
                )?
                .execute(params![id, CLAIMED, lease, until_ms])?;
            Ok(changed == 1)
        })
        .await
    }

    async fn fail(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        error: &str,
        now_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<Failed, StoreError> {
        let (id, lease, error) = (id.to_owned(), lease.to_owned(), error.to_owned());
        self.write_app(app, move |c| {
            let spent: Option<bool> = c
                .prepare_cached(
                    "SELECT attempt >= max_attempts FROM _queue_messages
                     WHERE id = ?1 AND state = ?2 AND lease = ?3",
                )?
                .query_row(params![id, CLAIMED, lease], |r| r.get(0))
                .optional()?;
            let Some(spent) = spent else {
                return Ok(Failed::Stale);
            };
            let spent = spent || retry_at_ms.is_none();
            let state = if spent { DEAD } else { WAITING };
            c.prepare_cached(
                "UPDATE _queue_messages
                 SET state = ?2, lease = NULL, last_error = ?3, visible_at = ?4, updated_at = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                state,
                error,
                retry_at_ms.unwrap_or(now_ms),
                now_ms
            ])?;
            Ok(if spent {
                Failed::Dead
            } else {
                Failed::Retrying
            })
        })
        .await
    }

    async fn queue_stats(&self, app: &AppName, now_ms: i64) -> Result<Vec<QueueStats>, StoreError> {
        self.read_app(app, move |c| {
            let mut statement = c.prepare_cached(
                "SELECT q.name,
                    count(m.id) FILTER (WHERE m.state = 0 AND m.visible_at <= ?1),
                    count(m.id) FILTER (WHERE m.state = 0 AND m.visible_at > ?1),
                    count(m.id) FILTER (WHERE m.state = 1),
                    count(m.id) FILTER (WHERE m.state = 2),
                    min(m.visible_at) FILTER (WHERE m.state < 2)
                 FROM _queues q LEFT JOIN _queue_messages m ON m.queue = q.name
                 GROUP BY q.name ORDER BY q.name",
            )?;
            let rows = statement
                .query_map([now_ms], |r| {
                    Ok(QueueStats {
                        queue: r.get(0)?,
                        ready: r.get(1)?,
                        delayed: r.get(2)?,
                        in_flight: r.get(3)?,
                        dead: r.get(4)?,
                        next_at_ms: r.get(5)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn messages(
        &self,
        app: &AppName,
        queue: &str,
        state: MessageState,
        after: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let queue = queue.to_owned();
        let after = after.unwrap_or("").to_owned();
        self.read_app(app, move |c| {
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} FROM _queue_messages
                 WHERE queue = ?1 AND state = ?2 AND id > ?3 ORDER BY id LIMIT ?4"
            );
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(
                params![queue, state.code(), after, limit as i64],
                message_from_row,
            )?;
            // Read one at a time, so that the rows past the bytes are never read.
            let (mut page, mut bytes) = (Vec::new(), 0);
            for row in rows {
                if !page.is_empty() && bytes >= max_bytes {
                    break;
                }
                let row = row?;
                bytes += row.payload.len();
                page.push(row);
            }
            Ok(page)
        })
        .await
    }

    async fn replay(
        &self,
        app: &AppName,
        queue: &str,
        ids: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let queue = queue.to_owned();
        self.write_app(app, move |c| {
            let mut update = c.prepare_cached(
                "UPDATE _queue_messages
                 SET state = ?3, attempt = 0, visible_at = ?4, updated_at = ?4, created_at = ?4
                 WHERE queue = ?1 AND state = ?2 AND (?5 IS NULL OR id = ?5)",
            )?;
            let moved = match &ids {
                None => update.execute(params![queue, DEAD, WAITING, now_ms, None::<String>])?,
                Some(ids) => {
                    let mut moved = 0;
                    for id in ids {
                        moved += update.execute(params![queue, DEAD, WAITING, now_ms, id])?;
                    }
                    moved
                }
            };
            Ok(moved as u64)
        })
        .await
    }

    async fn purge(
        &self,
        app: &AppName,
        queue: &str,
        state: Option<MessageState>,
    ) -> Result<u64, StoreError> {
        let queue = queue.to_owned();
        self.write_app(app, move |c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM _queue_messages WHERE queue = ?1 AND (?2 IS NULL OR state = ?2)",
                )?
                .execute(params![queue, state.map(MessageState::code)])?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn keyed(
        &self,
        app: &AppName,
        queue: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let (queue, key) = (queue.to_owned(), key.to_owned());
        self.read_app(app, move |c| {
            Ok(c.prepare_cached(
                "SELECT message_id FROM _queue_keys
                 WHERE queue = ?1 AND key = ?2 AND expires_at > ?3",
            )?
            .query_row(params![queue, key, now_ms], |r| r.get(0))
            .optional()?)
        })
        .await
    }

    async fn next_due(
        &self,
        app: &AppName,
        queues: Vec<String>,
    ) -> Result<Option<i64>, StoreError> {
        self.read_app(app, move |c| {
            let mut next: Option<i64> = None;
            let mut statement = c.prepare_cached(
                "SELECT visible_at FROM _queue_messages INDEXED BY _queue_messages_due
                 WHERE queue = ?1 AND state < 2 ORDER BY visible_at LIMIT 1",
            )?;
            for queue in &queues {
                let at: Option<i64> = statement.query_row([queue], |r| r.get(0)).optional()?;
                next = match (next, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            Ok(next)
        })
        .await
    }

    async fn sweep_queues(
        &self,
        app: &AppName,
        queue: &str,
        now_ms: i64,
        dead_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let queue = queue.to_owned();
        self.write_app(app, move |c| {
            let dead = c
                .prepare_cached(
                    "DELETE FROM _queue_messages
                     WHERE queue = ?1 AND state = ?2 AND updated_at < ?3",
                )?
                .execute(params![queue, DEAD, dead_before_ms])?;
            let old = c
                .prepare_cached(
                    "DELETE FROM _queue_messages
                     WHERE queue = ?1 AND state = ?2 AND created_at < ?3",
                )?
                .execute(params![queue, WAITING, created_before_ms])?;
            c.prepare_cached("DELETE FROM _queue_keys WHERE queue = ?1 AND expires_at <= ?2")?
                .execute(params![queue, now_ms])?;
            Ok((dead + old) as u64)
        })
        .await
    }
}

/// Inserts new messages of `queue` (a key used within `key_ttl_ms` makes a duplicate).
fn insert_messages(
    c: &Connection,
    queue: &str,
    messages: &[NewMessage],
    now_ms: i64,
    key_ttl_ms: i64,
) -> Result<Vec<Sent>, StoreError> {
    // In the send's transaction: a delete of the queue is before it or after it, whole.
    if must_be_declared(queue)
        && !c
            .prepare_cached("SELECT 1 FROM _queues WHERE name = ?1")?
            .exists([queue])?
    {
        return Err(StoreError::NotFound);
    }
    let mut sent = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(key) = &message.key {
            let seen: Option<String> = c
                .prepare_cached(
                    "SELECT message_id FROM _queue_keys
                     WHERE queue = ?1 AND key = ?2 AND expires_at > ?3",
                )?
                .query_row(params![queue, key, now_ms], |r| r.get(0))
                .optional()?;
            if let Some(id) = seen {
                sent.push(Sent::Duplicate(id));
                continue;
            }
            c.prepare_cached(
                "INSERT INTO _queue_keys (queue, key, message_id, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (queue, key) DO UPDATE
                 SET message_id = excluded.message_id, expires_at = excluded.expires_at",
            )?
            .execute(params![queue, key, message.id, now_ms + key_ttl_ms])?;
        }
        c.prepare_cached(
            "INSERT INTO _queue_messages (id, queue, payload, state, visible_at, attempt,
                 max_attempts, created_at, updated_at, depth)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?7, ?8)",
        )?
        .execute(params![
            message.id,
            queue,
            message.payload,
            WAITING,
            message.visible_at_ms,
            message.max_attempts,
            now_ms,
            message.depth
        ])
        .map_err(super::from_write)?;
        sent.push(Sent::Queued(message.id.clone()));
    }
    Ok(sent)
}

/// Claims up to `leases.len()` due messages of `queue`, first due first, once the expired
/// claims with their attempts spent are buried.
fn claim_messages(
    c: &Connection,
    queue: &str,
    leases: Vec<String>,
    now_ms: i64,
    until_ms: i64,
) -> Result<Vec<Claimed>, StoreError> {
    bury_expired(c, queue, now_ms)?;
    let ids: Vec<String> = c
        .prepare_cached(
            // `state < 2` written out, so that the partial index serves the claim in
            // due order instead of a sort of the whole backlog.
            "SELECT id FROM _queue_messages INDEXED BY _queue_messages_due
             WHERE queue = ?1 AND state < 2 AND visible_at <= ?2
             ORDER BY visible_at, rowid LIMIT ?3",
        )?
        .query_map(params![queue, now_ms, leases.len() as i64], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut claimed = Vec::with_capacity(ids.len());
    let mut update = c.prepare_cached(
        "UPDATE _queue_messages
         SET state = ?2, lease = ?3, visible_at = ?4, attempt = attempt + 1, updated_at = ?5
         WHERE id = ?1
         RETURNING payload, attempt, max_attempts, created_at, depth",
    )?;
    for (id, lease) in ids.into_iter().zip(leases) {
        let (payload, attempt, max_attempts, created_at_ms, depth) = update
            .query_row(params![id, CLAIMED, lease, until_ms, now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
        claimed.push(Claimed {
            id,
            payload,
            attempt,
            max_attempts,
            lease,
            created_at_ms,
            depth,
        });
    }
    Ok(claimed)
}
