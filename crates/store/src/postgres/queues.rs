//! [`QueueStore`] on PostgreSQL, in each app's schema: declared queues, their messages and
//! idempotency keys, with the same rows and the same outcomes as on SQLite.
//!
//! On SQLite one writer thread serialises every step; here several nodes, each with several
//! connections, claim and settle at once, so each step is made safe on its own:
//!
//! - a claim is one short transaction that locks the messages it takes with
//!   `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint messages and never wait on
//!   each other; expired claims whose attempts are spent are buried the same way first, and a
//!   claim never takes one of those even if it could not bury it (another claimer holds it);
//! - acknowledging, extending and failing are one conditional statement each on the message's
//!   row (its state and current lease), so of two settlements of one delivery exactly one
//!   changes the row, and a failure decides retry or dead on the row it locked;
//! - a send takes an idempotency key with one `INSERT … ON CONFLICT DO UPDATE … WHERE` that
//!   only replaces an expired key: of two concurrent sends of one key the second waits for the
//!   first, then finds the key alive and reports it a duplicate. A send takes its keys in key
//!   order, so that two sends of overlapping keys can not deadlock;
//! - the sweep skips rows that others hold: what it skips is swept next time.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{Postgres, execute, relaxed_rows, row, rows, schema};
use crate::queues::{
    ClaimAtSend, Claimed, EXPIRED, Failed, MessageRow, MessageState, NewMessage, QueueRow,
    QueueStats, QueueStore, Sent, claim_after_send, must_be_declared,
};
use crate::{AppName, OnDisk, StoreError};

/// Schema step 8 of an app: SQLite's step 10, the trigger depth a message was sent at.
pub(super) const DEPTH: &str = "
    ALTER TABLE {s}._queue_messages ADD COLUMN depth bigint NOT NULL DEFAULT 0;
";

/// Schema step 16 of an app: SQLite's step 18, the index across queues gone and the index of
/// spent claims added.
pub(super) const SPENT: &str = "
    DROP INDEX {s}._queue_messages_next;
    CREATE INDEX _queue_messages_spent ON {s}._queue_messages (queue, visible_at)
        WHERE state = 1 AND attempt >= max_attempts;
";

/// The schema step of an app's queues. Message states are SQLite's codes (0 waiting,
/// 1 claimed, 2 dead); statements spell them as literals, so that the planner can match the
/// partial indexes. `rowid` stands for SQLite's own: the order of sending, by which messages
/// due at the same moment are claimed (and under that name `cloudlet migrate` copies SQLite's
/// values into it).
pub(super) const MIGRATION: &str = "
    CREATE TABLE {s}._queues (
        name        text COLLATE \"C\" PRIMARY KEY,
        settings    text NOT NULL,
        created_at  bigint NOT NULL
    );
    CREATE TABLE {s}._queue_messages (
        id            text COLLATE \"C\" PRIMARY KEY,
        rowid         bigint GENERATED ALWAYS AS IDENTITY,
        queue         text COLLATE \"C\" NOT NULL,
        payload       text NOT NULL,
        state         bigint NOT NULL,
        visible_at    bigint NOT NULL,
        attempt       bigint NOT NULL,
        max_attempts  bigint NOT NULL,
        lease         text,
        last_error    text,
        created_at    bigint NOT NULL,
        updated_at    bigint NOT NULL
    );
    CREATE INDEX _queue_messages_due ON {s}._queue_messages (queue, visible_at, rowid)
        WHERE state < 2;
    CREATE INDEX _queue_messages_next ON {s}._queue_messages (visible_at) WHERE state < 2;
    CREATE INDEX _queue_messages_by_state ON {s}._queue_messages (queue, state, id);
    CREATE TABLE {s}._queue_keys (
        queue       text COLLATE \"C\" NOT NULL,
        key         text COLLATE \"C\" NOT NULL,
        message_id  text NOT NULL,
        expires_at  bigint NOT NULL,
        PRIMARY KEY (queue, key)
    );
";

/// How many times `put_queue` tries when a concurrent put or delete keeps changing its answer.
const PUT_TRIES: usize = 4;

const MESSAGE_COLUMNS: &str =
    "id, queue, payload, state, visible_at, attempt, max_attempts, last_error, created_at";

fn message_from_row(r: &Row) -> Result<MessageRow, StoreError> {
    Ok(MessageRow {
        id: r.try_get(0)?,
        queue: r.try_get(1)?,
        payload: r.try_get(2)?,
        state: MessageState::from_code(r.try_get(3)?),
        visible_at_ms: r.try_get(4)?,
        attempt: r.try_get(5)?,
        max_attempts: r.try_get(6)?,
        last_error: r.try_get(7)?,
        created_at_ms: r.try_get(8)?,
    })
}

/// Inserts the messages of a send that are not duplicates, in one statement.
async fn insert_messages(
    client: &impl GenericClient,
    s: &str,
    queue: &str,
    now_ms: i64,
    messages: &[NewMessage],
    duplicates: &[Option<String>],
) -> Result<(), StoreError> {
    let columns = Columns::of(messages, duplicates);
    if columns.ids.is_empty() {
        return Ok(());
    }
    let inserted = execute(
        client,
        &insert_sql(s, queue),
        &columns.params(&queue, &now_ms),
    )
    .await?;
    all_inserted(inserted, &columns)
}

/// The inserts of messages, as the columns of [`insert_sql`].
struct Columns<'a> {
    ids: Vec<&'a str>,
    payloads: Vec<&'a str>,
    visible: Vec<i64>,
    attempts: Vec<i64>,
    depths: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// The messages that are not duplicates.
    fn of(messages: &'a [NewMessage], duplicates: &[Option<String>]) -> Self {
        let mut columns = Columns {
            ids: Vec::new(),
            payloads: Vec::new(),
            visible: Vec::new(),
            attempts: Vec::new(),
            depths: Vec::new(),
        };
        for (message, duplicate) in messages.iter().zip(duplicates) {
            if duplicate.is_none() {
                columns.ids.push(message.id.as_str());
                columns.payloads.push(message.payload.as_str());
                columns.visible.push(message.visible_at_ms);
                columns.attempts.push(message.max_attempts);
                columns.depths.push(message.depth);
            }
        }
        columns
    }

    fn params<'p>(
        &'p self,
        queue: &'p (dyn ToSql + Sync),
        now_ms: &'p (dyn ToSql + Sync),
    ) -> [&'p (dyn ToSql + Sync); 7] {
        [
            queue,
            now_ms,
            &self.ids,
            &self.payloads,
            &self.visible,
            &self.attempts,
            &self.depths,
        ]
    }
}

/// The insert of messages into queue `$1` at `$2`, their columns `$3` to `$7` ([`Columns`]).
/// Into a queue that [`must_be_declared`], only while it is: the insert holds the declaration
/// (a key share lock) until it commits, so that a delete of the queue waits for it and then
/// takes its messages too, or goes first and leaves it nothing to insert ([`all_inserted`]).
fn insert_sql(s: &str, queue: &str) -> String {
    let declared = if must_be_declared(queue) {
        format!("WHERE EXISTS (SELECT FROM {s}._queues WHERE name = $1 FOR KEY SHARE)")
    } else {
        String::new()
    };
    format!(
        "INSERT INTO {s}._queue_messages (id, queue, payload, state, visible_at, attempt,
             max_attempts, created_at, updated_at, depth)
         SELECT m.id, $1, m.payload, 0, m.visible_at, 0, m.max_attempts, $2, $2, m.depth
         FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
             WITH ORDINALITY AS m (id, payload, visible_at, max_attempts, depth, n)
         {declared}
         ORDER BY m.n"
    )
}

/// Whether [`insert_sql`] inserted every message of `columns`: if not, the queue was not
/// declared.
fn all_inserted(inserted: u64, columns: &Columns) -> Result<(), StoreError> {
    if inserted < columns.ids.len() as u64 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The claim of up to `$3` due messages of queue `$1` at `$2`, hidden until `$4`, with the
/// leases `$5` (`$6`: what a spent claim records). Its rows go to [`claimed_of`].
fn claim_sql(s: &str) -> String {
    // One statement. First, expired claims with their attempts spent die; one held by
    // someone else (a claimer burying it, its holder settling it) is theirs: skipped here,
    // and never claimed below. Then the due messages by due time, then order of sending,
    // numbered to pair with the leases. Rows another transaction holds are skipped; one
    // changed by a transaction that committed since this statement began is checked again,
    // and left if no longer due. Both parts see one snapshot, and take disjoint rows.
    // Relaxed: a claim lost to a crash of PostgreSQL only means its messages are delivered
    // again under the same attempt number.
    format!(
        "WITH buried AS (
                 UPDATE {s}._queue_messages
                 SET state = 2, lease = NULL, last_error = $6, updated_at = $2
                 WHERE id IN (
                     SELECT id FROM {s}._queue_messages
                     WHERE queue = $1 AND state = 1 AND visible_at <= $2
                       AND attempt >= max_attempts
                     FOR UPDATE SKIP LOCKED)
             ), picked AS (
                 SELECT id, row_number() OVER (ORDER BY visible_at, rowid) AS n FROM (
                     SELECT id, visible_at, rowid FROM {s}._queue_messages
                     WHERE queue = $1 AND state < 2 AND visible_at <= $2
                       AND (state = 0 OR attempt < max_attempts)
                     ORDER BY visible_at, rowid LIMIT $3
                     FOR UPDATE SKIP LOCKED) due
             )
             UPDATE {s}._queue_messages m
             SET state = 1, lease = l.lease, visible_at = $4, attempt = m.attempt + 1,
                 updated_at = $2
             FROM picked JOIN unnest($5::text[]) WITH ORDINALITY AS l (lease, n) USING (n)
             WHERE m.id = picked.id
             RETURNING picked.n, m.id, m.payload, m.attempt, m.max_attempts, m.lease, m.created_at,
                 m.depth"
    )
}

/// The claims a [`claim_sql`] statement returned, in lease order.
fn claimed_of(taken: &[Row]) -> Result<Vec<Claimed>, StoreError> {
    let mut claimed = taken
        .iter()
        .map(|r| {
            let n: i64 = r.try_get(0)?;
            Ok((
                n,
                Claimed {
                    id: r.try_get(1)?,
                    payload: r.try_get(2)?,
                    attempt: r.try_get(3)?,
                    max_attempts: r.try_get(4)?,
                    lease: r.try_get(5)?,
                    created_at_ms: r.try_get(6)?,
                    depth: r.try_get(7)?,
                },
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    claimed.sort_unstable_by_key(|(n, _)| *n);
    Ok(claimed.into_iter().map(|(_, c)| c).collect())
}

#[async_trait]
impl QueueStore for Postgres {
    fn hints_at_send(&self) -> bool {
        true
    }

    fn checks_app_key_at_send(&self) -> bool {
        true
    }

    async fn queues(&self, app: &AppName) -> Result<Vec<QueueRow>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT name, settings, created_at FROM {}._queues ORDER BY name",
            schema(app)
        );
        rows(&*client, &sql, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(QueueRow {
                    name: r.try_get(0)?,
                    settings: r.try_get(1)?,
                    created_at_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn put_queue(&self, app: &AppName, queue: QueueRow) -> Result<bool, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let update = format!("UPDATE {s}._queues SET settings = $2 WHERE name = $1");
        let insert = format!(
            "INSERT INTO {s}._queues (name, settings, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING"
        );
        // Updated, or else created: a concurrent put may create it between the two (then this
        // one updates it), or a concurrent delete remove it (then this one creates it).
        for _ in 0..PUT_TRIES {
            if execute(&*client, &update, &[&queue.name, &queue.settings]).await? == 1 {
                return Ok(false);
            }
            let params: [&(dyn ToSql + Sync); 3] =
                [&queue.name, &queue.settings, &queue.created_at_ms];
            if execute(&*client, &insert, &params).await? == 1 {
                return Ok(true);
            }
        }
        Err(StoreError::Conflict)
    }

    async fn delete_queue(&self, app: &AppName, name: &str) -> Result<bool, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        let sql = format!("DELETE FROM {s}._queues WHERE name = $1");
        let removed = execute(&tx, &sql, &[&name]).await?;
        // Only a declared queue's messages (as on SQLite).
        if removed == 1 {
            let sql = format!("DELETE FROM {s}._queue_messages WHERE queue = $1");
            execute(&tx, &sql, &[&name]).await?;
            let sql = format!("DELETE FROM {s}._queue_keys WHERE queue = $1");
            execute(&tx, &sql, &[&name]).await?;
        }
        tx.commit().await?;
        Ok(removed == 1)
    }

    async fn send(
        &self,
        app: &AppName,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        key_ttl_ms: i64,
    ) -> Result<Vec<Sent>, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        // The keys first, in key order (then message order, so that within a send the first
        // message of a key wins, as on SQLite): concurrent sends lock keys in one order.
        let mut keyed: Vec<(&str, usize)> = messages
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.key.as_deref().map(|key| (key, i)))
            .collect();
        keyed.sort_unstable();
        let mut duplicates: Vec<Option<String>> = vec![None; messages.len()];
        if keyed.is_empty() {
            // Without keys one statement is the whole send, its own transaction: one round
            // trip where a transaction block takes three.
            insert_messages(&*client, &s, queue, now_ms, &messages, &duplicates).await?;
            return Ok(messages
                .into_iter()
                .map(|message| Sent::Queued(message.id))
                .collect());
        }
        let tx = client.transaction().await?;
        // The declaration before the keys, as a delete of the queue takes them: the other way
        // round, a delete waiting for a key this send holds would wait for each other.
        if must_be_declared(queue) {
            let declared = format!("SELECT FROM {s}._queues WHERE name = $1 FOR KEY SHARE");
            if row(&tx, &declared, &[&queue]).await?.is_none() {
                return Err(StoreError::NotFound);
            }
        }
        // Takes the key if it is new or expired; an unexpired key is left alone (and locked,
        // so that it can not expire or go before it is read below).
        let take = format!(
            "INSERT INTO {s}._queue_keys AS k (queue, key, message_id, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (queue, key) DO UPDATE
             SET message_id = excluded.message_id, expires_at = excluded.expires_at
             WHERE k.expires_at <= $5
             RETURNING k.message_id"
        );
        let seen = format!("SELECT message_id FROM {s}._queue_keys WHERE queue = $1 AND key = $2");
        let expires_at = now_ms + key_ttl_ms;
        for (key, i) in keyed {
            let id = &messages[i].id;
            let params: [&(dyn ToSql + Sync); 5] = [&queue, &key, id, &expires_at, &now_ms];
            if row(&tx, &take, &params).await?.is_some() {
                continue;
            }
            let first: String = row(&tx, &seen, &[&queue, &key])
                .await?
                .ok_or(StoreError::Conflict)?
                .try_get(0)?;
            duplicates[i] = Some(first);
        }
        insert_messages(&tx, &s, queue, now_ms, &messages, &duplicates).await?;
        tx.commit().await?;
        Ok(messages
            .into_iter()
            .zip(duplicates)
            .map(|(message, duplicate)| match duplicate {
                Some(first) => Sent::Duplicate(first),
                None => Sent::Queued(message.id),
            })
            .collect())
    }

    async fn claim(
        &self,
        app: &AppName,
        queue: &str,
        leases: Vec<String>,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<Claimed>, StoreError> {
        let client = self.app_client(app).await?;
        let limit = leases.len() as i64;
        let params: [&(dyn ToSql + Sync); 6] =
            [&queue, &now_ms, &limit, &until_ms, &leases, &EXPIRED];
        let taken = relaxed_rows(&client, &claim_sql(&schema(app)), &params).await?;
        claimed_of(&taken)
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
        // The hint first, as `hints_at_send` promises.
        let due = messages
            .iter()
            .map(|m| m.visible_at_ms)
            .min()
            .unwrap_or(now_ms);
        if messages.iter().any(|m| m.key.is_some()) {
            // Keys take a transaction of their own (see `send`); the claim follows it. The app
            // key is looked up first: this send takes several round trips anyway.
            if let Some(hash) = app_key
                && crate::SystemStore::app_by_key_hash(self, hash)
                    .await?
                    .as_ref()
                    != Some(app)
            {
                return Err(StoreError::KeyRefused);
            }
            crate::SystemStore::hint_due(self, app, due).await?;
            let sent = self.send(app, queue, messages, now_ms, key_ttl_ms).await?;
            let claimed = claim_after_send(self, app, queue, now_ms, claim).await;
            return Ok((sent, claimed, OnDisk::now()));
        }
        let s = schema(app);
        let client = self.app_client(app).await?;
        let hint = match app_key {
            Some(_) => super::system::lower_hint_if_key_sql(),
            None => super::system::lower_hint_sql(),
        };
        // The hint on a connection of its own if one is idle, alongside the send, so that its
        // statements are off the run's path (the send's `COMMIT` goes once the hint's is
        // answered, so the hint still commits first); otherwise first on the send's.
        let own = match self.idle_client().await {
            Some(other) => match other.prepare_cached(&hint).await {
                Ok(statement) => Some((other, statement)),
                Err(_) => None,
            },
            None => None,
        };
        let (own, hint) = match own {
            Some((other, statement)) => (Some(other), statement),
            None => (None, client.prepare_cached(&hint).await?),
        };
        let insert = client.prepare_cached(&insert_sql(&s, queue)).await?;
        let take = client.prepare_cached(&claim_sql(&s)).await?;
        let key_holds = match app_key {
            Some(_) => Some(
                client
                    .prepare_cached(&super::system::key_holds_sql())
                    .await?,
            ),
            None => None,
        };
        let app_key = app_key.map(<[u8]>::to_vec);
        let sent = messages
            .iter()
            .map(|m| Sent::Queued(m.id.clone()))
            .collect();
        // The claim is answered before the commit is: its deliveries may start while the WAL's
        // flush runs (on SQLite a run starts before the fsync), and the sender is answered once
        // the commit is (`OnDisk`). Unlike SQLite's, this commit is seen by no other connection
        // before it is answered, so the run settles its deliveries only after (see
        // `send_and_claim`'s contract). Should the commit fail after all (PostgreSQL gone), a
        // run may have started on a message that was never sent, whose sender was told so: at
        // least once. The statements go on in a task of their own, so that the commit is
        // awaited whether or not anyone still waits for it.
        let (claimed_tx, claimed_rx) = oneshot::channel();
        let (committed_tx, committed_rx) = oneshot::channel();
        let (app_name, queue) = (app.as_str().to_owned(), queue.to_owned());
        tokio::spawn(async move {
            let columns = Columns::of(&messages, &vec![None; messages.len()]);
            let limit = claim.leases.len() as i64;
            let claim_params: [&(dyn ToSql + Sync); 6] = [
                &queue,
                &now_ms,
                &limit,
                &claim.until_ms,
                &claim.leases,
                &EXPIRED,
            ];
            let mut hint_params: Vec<&(dyn ToSql + Sync)> = vec![&app_name, &due];
            if app_key.is_some() {
                hint_params.push(&app_key);
            }
            let key_params: [&(dyn ToSql + Sync); 2] = [&app_name, &app_key];
            let insert_params = columns.params(&queue, &now_ms);
            // Two transactions in one round trip (tokio-postgres pipelines what is polled at
            // once, and `join!` polls in order): the hint's, relaxed, whose commit the send's
            // flush takes to disk (on a connection of its own at the same time, or first on
            // this one); then the insert, the claim, which sees it, and a commit that waits for
            // the WAL's flush as a send's does. With an app key to check, the check comes first
            // in the send's transaction. Should the check or the insert fail, what follows
            // fails with it and PostgreSQL answers the `COMMIT` of the aborted transaction with
            // a rollback.
            let separate = own.is_some();
            let (hint_answered, hint_done) = oneshot::channel();
            let hinted = async {
                // A connection of its own goes back to the pool as soon as the hint is done.
                let hinted = match own {
                    Some(other) => super::relaxed(&other, other.execute(&hint, &hint_params)).await,
                    None => super::relaxed(&client, client.execute(&hint, &hint_params)).await,
                };
                let _ = hint_answered.send(());
                hinted.err()
            };
            let key_checked = async {
                match &key_holds {
                    Some(statement) => client.execute(statement, &key_params).await.map(drop),
                    None => Ok(()),
                }
            };
            // The run may start on the claims before the hint is answered: nothing of the send
            // is seen before its commit, which comes after the hint's.
            let claimed = async {
                let (begun, key_held, inserted, taken) = futures_util::join!(
                    client.batch_execute("BEGIN"),
                    key_checked,
                    client.execute(&insert, &insert_params),
                    client.query(&take, &claim_params),
                );
                let claimed = begun
                    .and(key_held)
                    .map_err(StoreError::from)
                    .and_then(|()| Ok((inserted?, taken?)))
                    // A queue deleted since its sender looked: nothing was sent, and nothing
                    // of it is left to claim.
                    .and_then(|(inserted, taken)| {
                        all_inserted(inserted, &columns)?;
                        claimed_of(&taken)
                    });
                let sent = claimed.is_ok();
                let _ = claimed_tx.send(claimed);
                sent
            };
            let committed = async {
                // On another connection the send's commit waits for the hint's; on this one
                // the hint's comes first anyway.
                if separate {
                    let _ = hint_done.await;
                }
                client.batch_execute("COMMIT").await
            };
            // Polled in order: on a shared connection the hint's statements go first.
            let (unhinted, sent, committed) = futures_util::join!(hinted, claimed, committed);
            let committed = committed.map_err(StoreError::from);
            if let (Some(e), true, Ok(())) = (unhinted, sent, &committed) {
                // The send went on without its hint: it is written now, on the send's own
                // connection, as an ordinary commit (no later one of the send takes it to
                // disk), before the sender is answered, rather than the send undone or its
                // sender told of a failure it would answer by sending again. Should that fail
                // too, the run's end hints the app again; only this node dying mid-run would
                // leave its claims without a hint until another write of the app.
                tracing::warn!(app = app_name, error = %e, "could not hint a send before it; hinting after");
                let sql = super::system::lower_hint_sql();
                let params: [&(dyn ToSql + Sync); 2] = [&app_name, &due];
                if let Err(e) = super::execute(&*client, &sql, &params).await {
                    tracing::warn!(app = app_name, error = %e, "could not hint a send");
                }
            }
            let _ = committed_tx.send(committed);
        });
        let claimed = claimed_rx
            .await
            .map_err(|_| StoreError::Task("the task of a send ended before its claim".into()))??;
        Ok((sent, claimed, OnDisk::commit(committed_rx)))
    }

    async fn ack(&self, app: &AppName, id: &str, lease: &str) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        // Relaxed: an acknowledgement lost to a crash of PostgreSQL only means its message is
        // delivered again (at least once).
        let sql = format!(
            "DELETE FROM {}._queue_messages WHERE id = $1 AND state = 1 AND lease = $2
             RETURNING id",
            schema(app)
        );
        Ok(relaxed_rows(&client, &sql, &[&id, &lease]).await?.len() == 1)
    }

    async fn ack_many(
        &self,
        app: &AppName,
        acks: Vec<(String, String)>,
    ) -> Result<Vec<bool>, StoreError> {
        let client = self.app_client(app).await?;
        // One statement: the messages whose lease is current go, in one commit, relaxed as
        // `ack`'s.
        let sql = format!(
            "DELETE FROM {}._queue_messages m
             USING unnest($1::text[], $2::text[]) AS a (id, lease)
             WHERE m.id = a.id AND m.state = 1 AND m.lease = a.lease
             RETURNING m.id",
            schema(app)
        );
        let (ids, leases): (Vec<&str>, Vec<&str>) = acks
            .iter()
            .map(|(id, lease)| (id.as_str(), lease.as_str()))
            .unzip();
        let gone: std::collections::HashSet<String> = relaxed_rows(&client, &sql, &[&ids, &leases])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(acks.iter().map(|(id, _)| gone.contains(id)).collect())
    }

    async fn extend(
        &self,
        app: &AppName,
        id: &str,
        lease: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "UPDATE {}._queue_messages SET visible_at = $3
             WHERE id = $1 AND state = 1 AND lease = $2",
            schema(app)
        );
        Ok(execute(&*client, &sql, &[&id, &lease, &until_ms]).await? == 1)
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
        let client = self.app_client(app).await?;
        // Retry or dead is decided on the row this locks, from its attempts before the update.
        let sql = format!(
            "UPDATE {}._queue_messages
             SET state = CASE WHEN attempt >= max_attempts OR $4::bigint IS NULL THEN 2 ELSE 0 END,
                 lease = NULL, last_error = $3, visible_at = COALESCE($4, $5), updated_at = $5
             WHERE id = $1 AND state = 1 AND lease = $2
             RETURNING state",
            schema(app)
        );
        let params: [&(dyn ToSql + Sync); 5] = [&id, &lease, &error, &retry_at_ms, &now_ms];
        Ok(match row(&*client, &sql, &params).await? {
            None => Failed::Stale,
            Some(r) => match MessageState::from_code(r.try_get(0)?) {
                MessageState::Dead => Failed::Dead,
                _ => Failed::Retrying,
            },
        })
    }

    async fn queue_stats(&self, app: &AppName, now_ms: i64) -> Result<Vec<QueueStats>, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT q.name,
                count(m.id) FILTER (WHERE m.state = 0 AND m.visible_at <= $1),
                count(m.id) FILTER (WHERE m.state = 0 AND m.visible_at > $1),
                count(m.id) FILTER (WHERE m.state = 1),
                count(m.id) FILTER (WHERE m.state = 2),
                min(m.visible_at) FILTER (WHERE m.state < 2)
             FROM {s}._queues q LEFT JOIN {s}._queue_messages m ON m.queue = q.name
             GROUP BY q.name ORDER BY q.name"
        );
        rows(&*client, &sql, &[&now_ms])
            .await?
            .iter()
            .map(|r| {
                Ok(QueueStats {
                    queue: r.try_get(0)?,
                    ready: r.try_get(1)?,
                    delayed: r.try_get(2)?,
                    in_flight: r.try_get(3)?,
                    dead: r.try_get(4)?,
                    next_at_ms: r.try_get(5)?,
                })
            })
            .collect()
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
        let client = self.app_client(app).await?;
        // The page ends where the payloads before a message hold `max_bytes`: counted by the
        // server, so that the rows past it are never sent.
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM (
                 SELECT {MESSAGE_COLUMNS},
                        sum(octet_length(payload)) OVER (ORDER BY id) - octet_length(payload)
                            AS before
                 FROM {}._queue_messages
                 WHERE queue = $1 AND state = $2 AND id > $3 ORDER BY id LIMIT $4
             ) page WHERE before < $5 ORDER BY id",
            schema(app)
        );
        let after = after.unwrap_or("");
        // At least 1: no payload is empty (JSON), so the first is always under it.
        let max_bytes = i64::try_from(max_bytes.max(1)).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 5] =
            [&queue, &state.code(), &after, &(limit as i64), &max_bytes];
        rows(&*client, &sql, &params)
            .await?
            .iter()
            .map(message_from_row)
            .collect()
    }

    async fn replay(
        &self,
        app: &AppName,
        queue: &str,
        ids: Option<Vec<String>>,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let s = schema(app);
        let client = self.app_client(app).await?;
        let set = format!(
            "UPDATE {s}._queue_messages
             SET state = 0, attempt = 0, visible_at = $2, updated_at = $2, created_at = $2
             WHERE queue = $1 AND state = 2"
        );
        match ids {
            None => execute(&*client, &set, &[&queue, &now_ms]).await,
            Some(ids) => {
                let sql = format!("{set} AND id = ANY($3::text[])");
                execute(&*client, &sql, &[&queue, &now_ms, &ids]).await
            }
        }
    }

    async fn purge(
        &self,
        app: &AppName,
        queue: &str,
        state: Option<MessageState>,
    ) -> Result<u64, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "DELETE FROM {}._queue_messages WHERE queue = $1",
            schema(app)
        );
        match state {
            None => execute(&*client, &sql, &[&queue]).await,
            Some(state) => {
                let sql = format!("{sql} AND state = $2");
                execute(&*client, &sql, &[&queue, &state.code()]).await
            }
        }
    }

    async fn keyed(
        &self,
        app: &AppName,
        queue: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        let client = self.app_client(app).await?;
        let sql = format!(
            "SELECT message_id FROM {}._queue_keys
             WHERE queue = $1 AND key = $2 AND expires_at > $3",
            schema(app)
        );
        match row(&*client, &sql, &[&queue, &key, &now_ms]).await? {
            Some(r) => Ok(Some(r.try_get(0)?)),
            None => Ok(None),
        }
    }

    async fn next_due(
        &self,
        app: &AppName,
        queues: Vec<String>,
    ) -> Result<Option<i64>, StoreError> {
        let client = self.app_client(app).await?;
        // Each queue's first through `_queue_messages_due`, one statement per queue, all on
        // one round trip (polled together, they go out pipelined). One statement over an
        // array of queues was planned again on every call (about 0.1 ms of PostgreSQL's
        // time, where running it took a tenth of that), and the dispatcher asks after
        // every look.
        let sql = format!(
            "SELECT visible_at FROM {}._queue_messages
             WHERE queue = $1 AND state < 2 ORDER BY visible_at LIMIT 1",
            schema(app)
        );
        let statement = client.prepare_cached(&sql).await?;
        let params: Vec<[&(dyn ToSql + Sync); 1]> = queues.iter().map(|q| [q as _]).collect();
        let firsts = futures_util::future::try_join_all(
            params
                .iter()
                .map(|queue| client.query_opt(&statement, queue)),
        )
        .await?;
        let mut next: Option<i64> = None;
        for first in firsts.into_iter().flatten() {
            let at: i64 = first.try_get(0)?;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    }

    async fn sweep_queues(
        &self,
        app: &AppName,
        queue: &str,
        now_ms: i64,
        dead_before_ms: i64,
        created_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let s = schema(app);
        let mut client = self.app_client(app).await?;
        let tx = client.transaction().await?;
        // Rows someone else holds (a claim in flight, a send taking an expired key) are left
        // for the next sweep rather than waited for.
        let sql = format!(
            "DELETE FROM {s}._queue_messages WHERE id IN (
                 SELECT id FROM {s}._queue_messages
                 WHERE queue = $2 AND state = 2 AND updated_at < $1
                 FOR UPDATE SKIP LOCKED)"
        );
        let dead = execute(&tx, &sql, &[&dead_before_ms, &queue]).await?;
        let sql = format!(
            "DELETE FROM {s}._queue_messages WHERE id IN (
                 SELECT id FROM {s}._queue_messages
                 WHERE queue = $2 AND state = 0 AND created_at < $1
                 FOR UPDATE SKIP LOCKED)"
        );
        let old = execute(&tx, &sql, &[&created_before_ms, &queue]).await?;
        let sql = format!(
            "DELETE FROM {s}._queue_keys WHERE (queue, key) IN (
                 SELECT queue, key FROM {s}._queue_keys WHERE queue = $2 AND expires_at <= $1
                 FOR UPDATE SKIP LOCKED)"
        );
        execute(&tx, &sql, &[&now_ms, &queue]).await?;
        tx.commit().await?;
        Ok(dead + old)
    }
}
