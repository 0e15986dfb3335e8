//! The doorbell on PostgreSQL ([`crate::Bell`]): rings gathered for [`GATHER`] and sent as one
//! `NOTIFY` on the channel [`CHANNEL`] (a `NOTIFY` takes a lock held to the end of the
//! notifying transaction, so one per write would serialise every write of the database; one
//! per node every few milliseconds costs nothing), and heard on a connection of the node's own
//! that `LISTEN`s. When that connection is lost the node reconnects by itself, and hears
//! [`Ring::Everything`] once it listens again: whatever was rung meanwhile is unknown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use crate::AppName;
use crate::bell::{Bell, Ring, Topic, Topics, messages, parse_message};
use crate::sqlite::lock;

/// The channel every node listens on.
pub const CHANNEL: &str = "cloudlet_bell";
/// How long rings are gathered before they are sent.
const GATHER: Duration = Duration::from_millis(5);
/// How long a node waits before it connects again to listen.
const RECONNECT: Duration = Duration::from_secs(1);

/// A node's bell on PostgreSQL. Its tasks end when it is dropped.
pub struct PgBell {
    node: String,
    pool: Pool,
    /// Held while rings taken from `pending` are being sent, so that a flush waits for what
    /// the send task already took.
    sending: tokio::sync::Mutex<()>,
    pending: Mutex<BTreeMap<AppName, Topics>>,
    wake: Notify,
    heard: broadcast::Sender<Ring>,
    /// Told when the bell is dropped, for the listening task.
    stop: Arc<Notify>,
}

impl Drop for PgBell {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

#[async_trait::async_trait]
impl Bell for PgBell {
    fn ring(&self, app: &AppName, topic: Topic) {
        let mut pending = lock(&self.pending);
        let topics = pending.entry(app.clone()).or_default();
        *topics = topics.with(topic);
        drop(pending);
        self.wake.notify_one();
    }

    fn rings(&self) -> broadcast::Receiver<Ring> {
        self.heard.subscribe()
    }

    async fn flush(&self) {
        if let Err((e, _)) = self.send_pending().await {
            tracing::warn!(error = %e, "could not ring the other nodes before stopping");
        }
    }
}

impl PgBell {
    /// Starts the bell of node `node` (a name no other node has): sends over `pool`, listens
    /// on a connection of its own made with `config`.
    pub(super) fn start(pool: Pool, config: tokio_postgres::Config, node: String) -> Arc<PgBell> {
        let stop = Arc::new(Notify::new());
        let bell = Arc::new(PgBell {
            node,
            pool: pool.clone(),
            sending: tokio::sync::Mutex::new(()),
            pending: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            heard: broadcast::channel(4096).0,
            stop: Arc::clone(&stop),
        });
        tokio::spawn(send(Arc::downgrade(&bell)));
        tokio::spawn(listen(Arc::downgrade(&bell), pool, config, stop));
        bell
    }
}

/// Sends what is rung, gathered, until the bell is dropped.
async fn send(bell: Weak<PgBell>) {
    loop {
        let Some(strong) = bell.upgrade() else {
            return;
        };
        // Woken by a ring, or every second to notice that the bell is gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), strong.wake.notified()).await;
        tokio::time::sleep(GATHER).await;
        if let Err((e, rings)) = strong.send_pending().await {
            tracing::warn!(error = %e, "could not ring the other nodes; ringing again");
            // Never dropped: rung again (a ring twice only drops a cache twice) once the
            // database answers, while the other nodes' caches may be stale meanwhile.
            {
                let mut pending = lock(&strong.pending);
                for (app, topics) in rings {
                    let merged = pending.entry(app).or_default();
                    *merged = merged.union(topics);
                }
            }
            strong.wake.notify_one();
            drop(strong);
            tokio::time::sleep(RECONNECT).await;
        }
    }
}

impl PgBell {
    /// Sends what was rung and not sent yet; on failure, what it took. One send at a time, so
    /// that a flush waits for what the send task already took.
    async fn send_pending(&self) -> Result<(), (String, BTreeMap<AppName, Topics>)> {
        let _sending = self.sending.lock().await;
        let rings = std::mem::take(&mut *lock(&self.pending));
        notify(&self.pool, &self.node, &rings)
            .await
            .map_err(|e| (e, rings))
    }
}

/// Sends `rings` as node `node`'s, in as many messages as they take.
async fn notify(pool: &Pool, node: &str, rings: &BTreeMap<AppName, Topics>) -> Result<(), String> {
    for message in messages(node, rings) {
        let client = pool.get().await.map_err(|e| e.to_string())?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &message])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Listens for the other nodes' rings until the bell is dropped, connecting again whenever
/// the connection is lost.
async fn listen(bell: Weak<PgBell>, pool: Pool, config: tokio_postgres::Config, stop: Arc<Notify>) {
    loop {
        tokio::select! {
            () = stop.notified() => return,
            () = listen_once(&bell, &pool, &config) => {}
        }
        if bell.upgrade().is_none() {
            return;
        }
        tokio::select! {
            () = stop.notified() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

/// Passes a ring on, after what the store itself must do on it: a collection changed by
/// another node (columns added or dropped) makes this node's prepared statements of it
/// (`SELECT *`, `RETURNING *`) fail with "cached plan must not change result type", so they
/// are forgotten, as the changing node forgets its own.
fn hear(bell: &PgBell, pool: &Pool, ring: Ring) {
    let collections = match &ring {
        Ring::App(_, topics) => topics.has(Topic::Collections),
        Ring::Everything => true,
    };
    if collections {
        pool.manager().statement_caches.clear();
    }
    let _ = bell.heard.send(ring);
}

/// One listening connection, until it ends.
async fn listen_once(bell: &Weak<PgBell>, pool: &Pool, config: &tokio_postgres::Config) {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(connected) => connected,
        Err(e) => {
            tracing::warn!(error = %e, "could not connect to hear the other nodes");
            return;
        }
    };
    let (heard, mut messages) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = stream.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection that hears the other nodes");
                    return;
                }
            }
        }
    });
    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
        tracing::warn!(error = %e, "could not listen to the other nodes");
        driver.abort();
        return;
    }
    // Listening from here: what was rung before is unknown.
    match bell.upgrade() {
        Some(bell) => hear(&bell, pool, Ring::Everything),
        None => {
            driver.abort();
            return;
        }
    }
    while let Some(message) = messages.recv().await {
        let Some(bell) = bell.upgrade() else {
            break;
        };
        let (node, rings) = parse_message(&message);
        if node == bell.node {
            continue;
        }
        for ring in rings {
            if ring == Ring::Everything {
                tracing::warn!("a ring that is not one was heard: every cache is dropped");
            }
            hear(&bell, pool, ring);
        }
    }
    driver.abort();
    drop(client);
}
