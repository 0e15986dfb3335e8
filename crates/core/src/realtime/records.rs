//! Record-change subscriptions, read from each app's event log: the hub keeps, for every app
//! whose records some subscription watches, how far its log has been delivered (its tail), and
//! reads on from there in commit order ([`Data::changes_after`]) when a write on this node rings,
//! on a timer for writes of other nodes, and shortly again while later events wait for an older
//! transaction. Each change goes out with its place in the log (`pos`), so a client that comes
//! back names where it left off and gets what it missed from the log, judged by today's rules,
//! numbered on from its last `seq`, in one answer; or a `reset` when the log no longer holds it.
//!
//! A place given to a client is signed for its app, collection and caller (an HMAC under a key
//! derived from the master key): a client can resume only from where this server let it be,
//! never read the log's history from a place of its choosing (which would replay old versions of
//! records, and deleted ones, that its rules happen to let it list today).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudlet_store::{AppName, LogPosition, StoreError};

use super::{Change, Hub, Joined, Outbound, RealtimeError, Resume, Subscription};
use crate::access::Caller;
use crate::data::{Seen, Watch};
use crate::realtime::MAX_SUBSCRIPTIONS;

/// How many events one read of a log takes.
const PULL: usize = 256;
/// The most events read to resume one subscription: a client gone longer than that refetches.
pub const MAX_REPLAY: usize = 10_000;
/// The most bytes of missed changes one resume sends (held until sent): beyond, a reset.
pub const MAX_REPLAY_BYTES: usize = 8 << 20;
/// How soon a log with events waiting for an older transaction is read again: first, and at
/// most while they keep waiting (doubling between).
pub(super) const PENDING_RETRY: Duration = Duration::from_millis(2);
pub(super) const PENDING_RETRY_MOST: Duration = Duration::from_millis(100);
/// How often the watched apps' logs are read for what other nodes wrote.
pub(super) const POLL_EVERY: Duration = Duration::from_secs(1);

impl Hub {
    /// Starts a subscription `sub` of the connection to `collection`'s changes (narrowed by
    /// `filter`): from now, or, with `after`, from where the client left off, what it missed
    /// first; a `reset` when the log no longer holds that.
    pub async fn subscribe(
        &self,
        id: super::ConnectionId,
        caller: &Caller,
        sub: &str,
        collection: &str,
        filter: Option<&str>,
        after: Option<Resume>,
    ) -> Result<Joined, RealtimeError> {
        let app = {
            let registry = self.0.registry.lock().await;
            let connection = registry.connections.get(&id).ok_or(RealtimeError::Closed)?;
            if connection.subscriptions.contains_key(sub) {
                return Err(RealtimeError::SubscriptionExists);
            }
            if connection.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                return Err(RealtimeError::TooManySubscriptions);
            }
            connection.app.clone()
        };
        // A place this server did not give this caller for this collection (another key, another
        // app, forged) is one it can not resume from: a reset, never history.
        let (resume, unsigned) = match after {
            None => (None, false),
            Some(resume) => {
                let text = resume.pos.as_deref().ok_or(RealtimeError::InvalidResume)?;
                match self.open(&app, collection, caller, text)? {
                    Some(at) => (Some((resume, at)), false),
                    None => (None, true),
                }
            }
        };
        // Checked without the registry held: it may read the collection's definition.
        let mut watch = self.0.data.watch(&app, caller, collection, filter).await?;
        let mut joined = Joined {
            epoch: self.epoch(),
            seq: 0,
            missed: Vec::new(),
            reset: None,
            pos: None,
            held: None,
        };
        if unsigned {
            joined.reset = Some("history");
        }
        // A client coming back first gets what it missed up to the tail as it is now, read
        // without the tail held: a long catch-up must not hold every other delivery back.
        // `caught` is where that reading reached and the last number it gave.
        let mut caught = None;
        if let Some((resume, at)) = resume {
            let kept = self.0.data.log_bounds(&app).await?.keeps(at);
            let tail = {
                let mut tails = self.0.tails.lock().await;
                self.tail(&mut tails, &app).await?
            };
            let replayed = match kept {
                true => {
                    self.replay(
                        &app,
                        caller,
                        &mut watch,
                        sub,
                        (at, tail),
                        resume.seq,
                        &mut joined.held,
                    )
                    .await?
                }
                false => None,
            };
            match replayed {
                Some((missed, seq)) => {
                    joined.epoch = resume.epoch;
                    joined.seq = resume.seq;
                    joined.missed = missed;
                    // A client that read past this node's tail (on another node) skips what
                    // it has.
                    caught = Some((at.max(tail), seq));
                }
                None => {
                    joined.reset = Some("history");
                    joined.held = None;
                }
            }
        }
        // Held until the subscription is registered: nothing is delivered meanwhile, so what
        // it replays and what the hub delivers to it next meet at the tail.
        let mut tails = self.0.tails.lock().await;
        let tail = self.tail(&mut tails, &app).await?;
        let mut from = tail;
        // The last number the subscription gave.
        let mut last = 0;
        if let Some((reached, seq)) = caught {
            // What came while the catch-up was read (usually little).
            match self
                .replay(
                    &app,
                    caller,
                    &mut watch,
                    sub,
                    (reached, tail),
                    seq,
                    &mut joined.held,
                )
                .await?
            {
                Some((mut missed, seq)) => {
                    joined.missed.append(&mut missed);
                    last = seq;
                    from = tail.max(reached);
                }
                None => {
                    joined.epoch = self.epoch();
                    joined.seq = 0;
                    joined.missed.clear();
                    joined.held = None;
                    joined.reset = Some("history");
                }
            }
        }
        joined.pos = Some(self.seal(&app, collection, caller, from));
        let mut registry = self.0.registry.lock().await;
        let connection = registry
            .connections
            .get_mut(&id)
            .ok_or(RealtimeError::Closed)?;
        if connection.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(RealtimeError::TooManySubscriptions);
        }
        if connection.subscriptions.contains_key(sub) {
            return Err(RealtimeError::SubscriptionExists);
        }
        connection.subscriptions.insert(
            sub.to_owned(),
            Subscription::Records {
                watch: Box::new(watch),
                seq: last,
                from,
            },
        );
        Ok(joined)
    }

    /// A place in `app`'s log as given to `caller` for `collection`: `{tx}.{seq}.{signature}`.
    pub(super) fn seal(
        &self,
        app: &AppName,
        collection: &str,
        caller: &Caller,
        position: LogPosition,
    ) -> String {
        let signature = self.signature(app, collection, caller, &position.to_string());
        format!("{position}.{}", hex::encode(signature))
    }

    /// The place a client names, if this server gave it to this caller for this collection;
    /// [`RealtimeError::InvalidResume`] for text that is no place at all.
    fn open(
        &self,
        app: &AppName,
        collection: &str,
        caller: &Caller,
        text: &str,
    ) -> Result<Option<LogPosition>, RealtimeError> {
        let (place, signature) = text.rsplit_once('.').ok_or(RealtimeError::InvalidResume)?;
        let position = LogPosition::parse(place).ok_or(RealtimeError::InvalidResume)?;
        let given = hex::decode(signature).map_err(|_| RealtimeError::InvalidResume)?;
        let expected = self.signature(app, collection, caller, place);
        // Compared in constant time.
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.iter())
                .fold(0u8, |d, (a, b)| d | (a ^ b))
                == 0;
        Ok(same.then_some(position))
    }

    fn signature(&self, app: &AppName, collection: &str, caller: &Caller, place: &str) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let key = *super::lock(&self.0.resume_key);
        let who = match caller {
            Caller::User(user) => user.user_id.as_str(),
            Caller::Anonymous => "~anonymous",
            Caller::Admin | Caller::AppKey(_) => "~server",
        };
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        for part in [app.as_str(), collection, who, place] {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        let mut signature = [0u8; 16];
        signature.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        signature
    }

    /// Signs the places in the log given to clients with a key of `master_key`'s, so that
    /// they hold across restarts and on every node of a database.
    pub fn set_resume_key(&self, master_key: &[u8; 32]) {
        *super::lock(&self.0.resume_key) =
            crate::sealing::derive_key(master_key, "cloudlet/realtime/resume/v1");
    }

    /// Where the app's log has been delivered to, followed from its end if it was not yet.
    async fn tail(
        &self,
        tails: &mut std::collections::HashMap<AppName, LogPosition>,
        app: &AppName,
    ) -> Result<LogPosition, RealtimeError> {
        if let Some(tail) = tails.get(app) {
            return Ok(*tail);
        }
        let end = self.0.data.log_bounds(app).await?.end();
        tails.insert(app.clone(), end);
        // Events committed after `end` but waiting for an older transaction (on PostgreSQL)
        // were rung before there was a tail to read on from: the hub reads on now, and keeps
        // reading until they are in order.
        self.0.data.heard(app);
        Ok(end)
    }

    /// What `watch` sees of the log after `at` up to `until`, as frames numbered on from
    /// `seq`, with the last number; `None` when that is more than [`MAX_REPLAY`] events read,
    /// [`MAX_REPLAY_BYTES`] to send, or more than the node's budget for catch-ups has left
    /// (what the frames take of it is added to `held`).
    #[allow(clippy::too_many_arguments)]
    async fn replay(
        &self,
        app: &AppName,
        caller: &Caller,
        watch: &mut Watch,
        sub: &str,
        (mut at, until): (LogPosition, LogPosition),
        mut seq: u64,
        held: &mut Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Option<(Vec<Bytes>, u64)>, RealtimeError> {
        let mut missed = Vec::new();
        let mut read = 0;
        let mut bytes_held = 0;
        while at < until {
            if read >= MAX_REPLAY {
                return Ok(None);
            }
            let page = self.0.data.changes_after(app, at, PULL).await?;
            read += PULL;
            for (position, event) in page.changes {
                if position > until {
                    break;
                }
                // Another collection's change (perhaps of one since dropped) is nothing to it.
                if event.collection != watch.collection() {
                    continue;
                }
                let change = self.0.data.prepare(&event).await?;
                let Some(seen) = self.0.data.judge(&change, watch)? else {
                    continue;
                };
                // Resumed from the number a client says it had: a huge one must not overflow.
                seq = seq.saturating_add(1);
                let record = matches!(seen, Seen::Create | Seen::Update)
                    .then(|| event.new.map(Arc::new))
                    .flatten();
                let pos = self.seal(app, &event.collection, caller, position);
                let frame = Outbound::Change(Box::new(Change {
                    sub: sub.to_owned(),
                    seq,
                    event: seen,
                    collection: event.collection,
                    id: event.id,
                    record,
                    pos,
                }));
                let bytes =
                    serde_json::to_vec(&frame).map_err(|e| StoreError::Task(e.to_string()))?;
                bytes_held += bytes.len();
                if bytes_held > MAX_REPLAY_BYTES {
                    return Ok(None);
                }
                let kib = u32::try_from(bytes.len().div_ceil(1024)).unwrap_or(u32::MAX);
                let Ok(share) = Arc::clone(&self.0.catch_ups).try_acquire_many_owned(kib) else {
                    // Other catch-ups hold the node's budget: this client refetches instead.
                    return Ok(None);
                };
                match held {
                    Some(held) => held.merge(share),
                    None => *held = Some(share),
                }
                missed.push(Bytes::from(bytes));
            }
            // Everything up to `until` was read in order once (it is the tail): a short page
            // means the log holds nothing more.
            if page.reached == at || !page.full {
                break;
            }
            at = page.reached;
        }
        Ok(Some((missed, seq)))
    }

    /// Reads each of `apps`' logs on from its tail and delivers what it holds; answers the
    /// apps whose later events wait for an older transaction.
    pub(super) async fn pull(&self, apps: HashSet<AppName>) -> HashSet<AppName> {
        let mut again = HashSet::new();
        if apps.is_empty() {
            return again;
        }
        let mut tails = self.0.tails.lock().await;
        for app in apps {
            let Some(mut at) = tails.get(&app).copied() else {
                continue;
            };
            loop {
                let page = match self.0.data.changes_after(&app, at, PULL).await {
                    Ok(page) => page,
                    Err(e) => {
                        // Read again at the next ring or poll (within a second), not in a
                        // tight loop while the database is out of reach.
                        tracing::warn!(app = %app, error = %e, "could not read the event log");
                        break;
                    }
                };
                for (position, event) in &page.changes {
                    self.deliver(event, *position).await;
                }
                at = page.reached;
                tails.insert(app.clone(), at);
                if page.pending {
                    again.insert(app.clone());
                }
                if !page.full {
                    break;
                }
            }
        }
        again
    }

    /// Reads every followed log on (what other nodes wrote may not have been rung).
    pub async fn catch_up(&self) {
        let tailed = self.tailed().await.into_iter().collect();
        self.pull(tailed).await;
    }

    /// The apps whose logs are followed.
    pub(super) async fn tailed(&self) -> Vec<AppName> {
        self.0.tails.lock().await.keys().cloned().collect()
    }

    /// Stops following the logs of apps that no subscription watches any more.
    pub(super) async fn untail(&self) {
        let mut tails = self.0.tails.lock().await;
        let registry = self.0.registry.lock().await;
        tails.retain(|app, _| {
            registry.by_app.get(app).is_some_and(|ids| {
                ids.iter().any(|id| {
                    registry.connections.get(id).is_some_and(|c| {
                        c.subscriptions
                            .values()
                            .any(|s| matches!(s, Subscription::Records { .. }))
                    })
                })
            })
        });
    }
}
