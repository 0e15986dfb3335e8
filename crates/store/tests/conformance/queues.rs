//! [`QueueStore`] and the control plane's due hints behave the same on both backends: each
//! scenario is written once against the traits and run on SQLite (a temporary data directory)
//! and on PostgreSQL (a fresh database on the test server, see `postgres::testing`), as
//! `on_sqlite::{scenario}` and `on_postgres::{scenario}`.
//!
//! The other `on_postgres` tests are PostgreSQL's own: several stores on one database, as
//! several nodes would be, claim, settle, send and declare at once (`concurrent_*`), and each
//! message must still be delivered once, each delivery settled once, each key and each queue
//! taken once; claims and sweeps pass over rows another session holds rather than wait for
//! them; and an app's queues survive `cloudlet migrate` from SQLite.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::postgres::Postgres;
use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::{
    AppName, ClaimAtSend, Claimed, DueApp, Failed, MessageRow, MessageState, NewMessage, QueueRow,
    QueueStats, QueueStore, Sent, StoreError, SystemStore, TenantStore,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::backends::{self, add_app, name, open_postgres, signing_key};

/// What an expired claim whose attempts are spent records (the same text on both backends).
const EXPIRED: &str = "the claim expired before it was acknowledged";

/// The stores of one backend, with an app provisioned in both the control plane and its own
/// database.
#[derive(Clone)]
struct Stores {
    queues: Arc<dyn QueueStore>,
    system: Arc<dyn SystemStore>,
    tenants: Arc<dyn TenantStore>,
    app: AppName,
    /// The SQLite data directory, removed when the last clone goes.
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn sqlite() -> Stores {
    let (system, tenants, dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "shop").await;
    Stores {
        queues: tenants.clone(),
        system,
        tenants,
        app,
        _dir: Some(dir),
    }
}

async fn postgres() -> Stores {
    let store = open_postgres(&TestServer::shared().database(), 8).await;
    let app = add_app(&*store, &*store, "shop").await;
    Stores {
        queues: store.clone(),
        system: store.clone(),
        tenants: store,
        app,
        _dir: None,
    }
}

/// Runs each scenario on each backend.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::sqlite().await).await;
                }
            )*
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::postgres().await).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_claimers_deliver_each_message_once() {
                super::concurrent_claimers_deliver_each_message_once().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_settlements_of_one_delivery_settle_once() {
                super::concurrent_settlements_of_one_delivery_settle_once().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_sends_of_one_key_queue_once() {
                super::concurrent_sends_of_one_key_queue_once().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn claims_and_sweeps_pass_over_rows_another_transaction_holds() {
                super::claims_and_sweeps_pass_over_rows_another_transaction_holds().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn queues_move_from_sqlite_in_order() {
                super::queues_move_from_sqlite_in_order().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn a_send_waits_for_a_delete_of_its_queue_and_takes_nothing() {
                super::a_send_waits_for_a_delete_of_its_queue_and_takes_nothing().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_puts_of_one_queue_create_it_once() {
                super::concurrent_puts_of_one_queue_create_it_once().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_sends_of_crossed_keys_do_not_deadlock() {
                super::concurrent_sends_of_crossed_keys_do_not_deadlock().await;
            }
        }
    };
}

conformance!(
    queues_are_declared_replaced_and_deleted,
    claims_take_due_messages_in_order,
    a_send_claims_what_is_due_first_for_its_consumer,
    a_send_with_an_app_key_goes_only_while_the_key_is_the_apps,
    a_send_claims_its_own_and_older_messages_in_due_order,
    a_send_to_an_idle_queue_claims_its_due_messages_as_a_claim_would,
    an_expired_claim_goes_to_the_next_consumer,
    extend_keeps_a_claim_hidden,
    failures_retry_then_die_once,
    a_batch_is_acknowledged_at_once_and_stale_leases_change_nothing,
    expired_claims_with_attempts_spent_die,
    a_failure_without_retry_dies_at_once,
    idempotency_keys_hold_for_their_window,
    a_failed_send_enqueues_nothing,
    a_send_to_a_queue_not_declared_takes_nothing,
    stats_count_each_state,
    messages_page_by_id_per_state,
    replay_moves_dead_letters_back,
    purge_deletes_by_state,
    next_due_is_the_earliest_pending,
    sweep_deletes_old_messages_and_keys,
    due_hints,
    an_app_never_provisioned_is_no_tenant,
);

fn payload(id: &str) -> String {
    format!(r#"{{"n":"{id}"}}"#)
}

/// A message due at `visible_at_ms` with three attempts.
fn msg(id: &str, visible_at_ms: i64) -> NewMessage {
    NewMessage {
        id: id.into(),
        payload: payload(id),
        key: None,
        visible_at_ms,
        max_attempts: 3,
        depth: 0,
    }
}

fn with_attempts(message: NewMessage, max_attempts: i64) -> NewMessage {
    NewMessage {
        max_attempts,
        ..message
    }
}

fn keyed(id: &str, key: &str) -> NewMessage {
    NewMessage {
        key: Some(key.into()),
        ..msg(id, 0)
    }
}

fn queue(name: &str, settings: &str, created_at_ms: i64) -> QueueRow {
    QueueRow {
        name: name.into(),
        settings: settings.into(),
        created_at_ms,
    }
}

fn leases(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn ids_of(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.id.as_str()).collect()
}

fn row_ids(rows: &[MessageRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

fn queued(ids: &[&str]) -> Vec<Sent> {
    ids.iter().map(|id| Sent::Queued((*id).into())).collect()
}

impl Stores {
    fn q(&self) -> &dyn QueueStore {
        &*self.queues
    }

    async fn put(&self, name: &str) {
        self.q()
            .put_queue(&self.app, queue(name, "{}", 1))
            .await
            .unwrap();
    }

    async fn send(&self, queue: &str, messages: Vec<NewMessage>, now_ms: i64) -> Vec<Sent> {
        self.q()
            .send(&self.app, queue, messages, now_ms, 1_000)
            .await
            .unwrap()
    }

    /// A send handed to a consumer (no app key to check), once it is on disk: what it sent, and
    /// what it claimed with the leases `names`, hidden until `until_ms`.
    async fn send_claiming(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
        now_ms: i64,
        names: &[&str],
        until_ms: i64,
    ) -> (Vec<Sent>, Vec<Claimed>) {
        let claim = ClaimAtSend {
            leases: leases(names),
            until_ms,
        };
        let (sent, claimed, on_disk) = self
            .q()
            .send_and_claim(&self.app, queue, messages, now_ms, 100, claim, None)
            .await
            .unwrap();
        on_disk.wait().await.unwrap();
        (sent, claimed)
    }

    async fn claim(&self, queue: &str, names: &[&str], now_ms: i64, until_ms: i64) -> Vec<Claimed> {
        self.q()
            .claim(&self.app, queue, leases(names), now_ms, until_ms)
            .await
            .unwrap()
    }

    async fn messages(&self, queue: &str, state: MessageState) -> Vec<MessageRow> {
        self.q()
            .messages(&self.app, queue, state, None, 100, usize::MAX)
            .await
            .unwrap()
    }

    async fn ack(&self, id: &str, lease: &str) -> bool {
        self.q().ack(&self.app, id, lease).await.unwrap()
    }

    async fn fail(&self, id: &str, lease: &str, error: &str, now_ms: i64, retry: i64) -> Failed {
        self.q()
            .fail(&self.app, id, lease, error, now_ms, Some(retry))
            .await
            .unwrap()
    }

    /// Claims the one due message of `queue` and fails it for good (it has one attempt).
    async fn kill(&self, queue: &str, id: &str, now_ms: i64) {
        let claimed = self.claim(queue, &["kill"], now_ms, now_ms + 10_000).await;
        assert_eq!(ids_of(&claimed), [id]);
        assert_eq!(
            self.fail(id, "kill", "fatal", now_ms, now_ms).await,
            Failed::Dead
        );
    }
}

async fn queues_are_declared_replaced_and_deleted(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    assert_eq!(q.queues(a).await.unwrap(), []);
    assert!(
        q.put_queue(a, queue("jobs", r#"{"v":1}"#, 10))
            .await
            .unwrap()
    );
    assert!(q.put_queue(a, queue("mail", "{}", 20)).await.unwrap());
    assert!(q.put_queue(a, queue("Audit", "{}", 30)).await.unwrap());
    assert!(q.put_queue(a, queue("a-b", "{}", 40)).await.unwrap());
    // Replacing keeps when it was created.
    assert!(
        !q.put_queue(a, queue("jobs", r#"{"v":2}"#, 99))
            .await
            .unwrap()
    );
    assert_eq!(
        q.queues(a).await.unwrap(),
        [
            queue("Audit", "{}", 30),
            queue("a-b", "{}", 40),
            queue("jobs", r#"{"v":2}"#, 10),
            queue("mail", "{}", 20),
        ],
        "in byte order of the name"
    );

    st.send("jobs", vec![keyed("j1", "k"), msg("j2", 5)], 0)
        .await;
    st.send("mail", vec![keyed("m1", "k"), msg("m2", 7)], 0)
        .await;
    st.claim("jobs", &["l"], 0, 100).await;
    assert!(q.delete_queue(a, "jobs").await.unwrap());
    assert!(!q.delete_queue(a, "jobs").await.unwrap());
    assert!(!q.delete_queue(a, "never").await.unwrap());
    assert_eq!(
        q.queues(a)
            .await
            .unwrap()
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["Audit", "a-b", "mail"]
    );
    for state in [MessageState::Waiting, MessageState::Claimed] {
        assert_eq!(st.messages("jobs", state).await, []);
    }
    assert!(!st.ack("j1", "l").await, "its messages went with it");
    assert_eq!(
        q.next_due(a, vec!["jobs".into(), "mail".into()])
            .await
            .unwrap(),
        Some(0),
        "mail's messages stay"
    );
    assert_eq!(
        row_ids(&st.messages("mail", MessageState::Waiting).await),
        ["m1", "m2"]
    );

    // Its keys went too: declared again, the key is new.
    assert!(q.put_queue(a, queue("jobs", "{}", 50)).await.unwrap());
    assert_eq!(
        st.send("jobs", vec![keyed("j3", "k")], 1).await,
        queued(&["j3"])
    );
    assert_eq!(
        st.send("mail", vec![keyed("m3", "k")], 1).await,
        [Sent::Duplicate("m1".into())]
    );
}

async fn claims_take_due_messages_in_order(st: Stores) {
    st.put("work").await;
    st.put("other").await;
    let sent = st
        .send(
            "work",
            vec![
                msg("c", 100),
                NewMessage {
                    depth: 2,
                    ..msg("b", 50)
                },
                msg("a", 50),
                msg("later", 500),
            ],
            7,
        )
        .await;
    assert_eq!(sent, queued(&["c", "b", "a", "later"]));
    st.send("other", vec![msg("o", 0)], 7).await;

    assert_eq!(st.claim("work", &["early"], 49, 1_000).await, []);
    let claimed = st.claim("work", &["l1", "l2"], 100, 1_000).await;
    assert_eq!(
        claimed,
        [
            Claimed {
                id: "b".into(),
                payload: payload("b"),
                attempt: 1,
                max_attempts: 3,
                lease: "l1".into(),
                created_at_ms: 7,
                depth: 2,
            },
            Claimed {
                id: "a".into(),
                payload: payload("a"),
                attempt: 1,
                max_attempts: 3,
                lease: "l2".into(),
                created_at_ms: 7,
                depth: 0,
            },
        ],
        "by visible_at, then first sent first (not by id); leases in order"
    );
    let claimed = st.claim("work", &["l3", "l4", "l5"], 100, 1_000).await;
    assert_eq!(ids_of(&claimed), ["c"]);
    assert_eq!(claimed[0].lease, "l3");
    assert_eq!(st.claim("work", &["l6"], 499, 1_000).await, [], "delayed");
    assert_eq!(st.claim("work", &[], 10_000, 20_000).await, [], "no leases");
    let claimed = st.claim("work", &["l7"], 500, 1_000).await;
    assert_eq!(ids_of(&claimed), ["later"]);
    assert_eq!(
        st.claim("work", &["l8"], 999, 2_000).await,
        [],
        "all hidden"
    );
    assert_eq!(ids_of(&st.claim("other", &["l9"], 0, 1_000).await), ["o"]);
    assert_eq!(st.claim("nothing", &["l10"], 0, 1_000).await, []);
}

async fn an_expired_claim_goes_to_the_next_consumer(st: Stores) {
    st.put("q").await;
    st.send("q", vec![msg("m", 0)], 0).await;
    let first = st.claim("q", &["old"], 0, 100).await;
    assert_eq!((first[0].attempt, first[0].lease.as_str()), (1, "old"));
    assert_eq!(st.claim("q", &["x"], 99, 200).await, [], "hidden until 100");

    let second = st.claim("q", &["new"], 100, 200).await;
    assert_eq!(ids_of(&second), ["m"]);
    assert_eq!((second[0].attempt, second[0].lease.as_str()), (2, "new"));

    let (q, a) = (st.q(), &st.app);
    assert!(!st.ack("m", "old").await);
    assert!(!q.extend(a, "m", "old", 5_000).await.unwrap());
    assert_eq!(st.fail("m", "old", "late", 150, 150).await, Failed::Stale);
    let rows = st.messages("q", MessageState::Claimed).await;
    assert_eq!(
        rows,
        [MessageRow {
            id: "m".into(),
            queue: "q".into(),
            payload: payload("m"),
            state: MessageState::Claimed,
            visible_at_ms: 200,
            attempt: 2,
            max_attempts: 3,
            last_error: None,
            created_at_ms: 0,
        }],
        "the stale lease changed nothing"
    );

    assert!(st.ack("m", "new").await, "the acknowledgement deletes it");
    for state in [
        MessageState::Waiting,
        MessageState::Claimed,
        MessageState::Dead,
    ] {
        assert_eq!(st.messages("q", state).await, []);
    }
    assert!(!st.ack("m", "new").await, "once");
    assert!(!q.extend(a, "m", "new", 500).await.unwrap());
    assert_eq!(st.fail("m", "new", "e", 150, 150).await, Failed::Stale);
    assert!(!st.ack("nobody", "new").await);
    assert_eq!(st.claim("q", &["y"], 10_000, 20_000).await, []);
}

async fn extend_keeps_a_claim_hidden(st: Stores) {
    st.put("q").await;
    st.send("q", vec![msg("m", 0)], 0).await;
    st.claim("q", &["l"], 0, 100).await;
    assert!(st.q().extend(&st.app, "m", "l", 300).await.unwrap());
    assert_eq!(st.claim("q", &["x"], 200, 400).await, []);
    let rows = st.messages("q", MessageState::Claimed).await;
    assert_eq!((rows[0].visible_at_ms, rows[0].attempt), (300, 1));
    assert!(st.q().extend(&st.app, "m", "l", 250).await.unwrap());
    let claimed = st.claim("q", &["next"], 250, 400).await;
    assert_eq!((claimed[0].attempt, claimed[0].lease.as_str()), (2, "next"));
}

async fn a_batch_is_acknowledged_at_once_and_stale_leases_change_nothing(st: Stores) {
    st.put("q").await;
    st.send(
        "q",
        vec![msg("a", 0), msg("b", 0), msg("c", 0), msg("d", 0)],
        0,
    )
    .await;
    st.claim("q", &["la", "lb", "lc"], 0, 100).await;
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(id, lease)| ((*id).to_owned(), (*lease).to_owned()))
            .collect()
    };
    let acked = st
        .q()
        .ack_many(
            &st.app,
            pairs(&[
                ("a", "la"),
                ("b", "stale"),
                ("c", "lc"),
                ("d", "ld"),
                ("x", "lx"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(acked, [true, false, true, false, false]);
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["b"],
        "the stale lease left b claimed"
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["d"]
    );
    assert_eq!(
        st.q()
            .ack_many(&st.app, pairs(&[("a", "la")]))
            .await
            .unwrap(),
        [false],
        "once only"
    );
    assert!(
        st.q()
            .ack_many(&st.app, Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn failures_retry_then_die_once(st: Stores) {
    st.put("q").await;
    st.send("q", vec![with_attempts(msg("m", 0), 2)], 0).await;
    st.claim("q", &["l1"], 0, 100).await;
    assert_eq!(st.fail("m", "l1", "boom 1", 10, 50).await, Failed::Retrying);
    assert_eq!(
        st.messages("q", MessageState::Waiting).await,
        [MessageRow {
            id: "m".into(),
            queue: "q".into(),
            payload: payload("m"),
            state: MessageState::Waiting,
            visible_at_ms: 50,
            attempt: 1,
            max_attempts: 2,
            last_error: Some("boom 1".into()),
            created_at_ms: 0,
        }]
    );
    assert_eq!(st.fail("m", "l1", "again", 10, 50).await, Failed::Stale);
    assert!(!st.ack("m", "l1").await, "settled already");
    assert_eq!(
        st.claim("q", &["x"], 49, 100).await,
        [],
        "not before the retry"
    );

    let claimed = st.claim("q", &["l2"], 50, 150).await;
    assert_eq!((claimed[0].attempt, claimed[0].max_attempts), (2, 2));
    assert_eq!(st.fail("m", "l2", "boom 2", 60, 70).await, Failed::Dead);
    assert_eq!(st.fail("m", "l2", "boom 3", 60, 70).await, Failed::Stale);
    assert!(!st.ack("m", "l2").await);
    let dead = st.messages("q", MessageState::Dead).await;
    assert_eq!(row_ids(&dead), ["m"]);
    assert_eq!(dead[0].state, MessageState::Dead);
    assert_eq!(dead[0].attempt, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("boom 2"));
    assert_eq!(st.messages("q", MessageState::Waiting).await, []);
    assert_eq!(
        st.claim("q", &["y"], 10_000, 20_000).await,
        [],
        "dead is dead"
    );
    let stats = st.q().queue_stats(&st.app, 10_000).await.unwrap();
    assert_eq!((stats[0].dead, stats[0].next_at_ms), (1, None));
}

async fn a_failure_without_retry_dies_at_once(st: Stores) {
    st.put("q").await;
    st.send("q", vec![with_attempts(msg("m", 0), 5)], 0).await;
    st.claim("q", &["l1"], 0, 100).await;
    assert_eq!(
        st.q()
            .fail(&st.app, "m", "l1", "refused", 10, None)
            .await
            .unwrap(),
        Failed::Dead
    );
    let dead = st.messages("q", MessageState::Dead).await;
    assert_eq!(row_ids(&dead), ["m"]);
    assert_eq!(
        (
            dead[0].attempt,
            dead[0].visible_at_ms,
            dead[0].last_error.as_deref()
        ),
        (1, 10, Some("refused"))
    );
    assert!(st.messages("q", MessageState::Waiting).await.is_empty());
    assert_eq!(
        st.q()
            .fail(&st.app, "m", "l1", "again", 11, None)
            .await
            .unwrap(),
        Failed::Stale
    );
}

async fn expired_claims_with_attempts_spent_die(st: Stores) {
    st.put("q").await;
    st.send(
        "q",
        vec![with_attempts(msg("m", 0), 1), with_attempts(msg("n", 0), 2)],
        0,
    )
    .await;
    let claimed = st.claim("q", &["l1", "l2"], 0, 100).await;
    assert_eq!(ids_of(&claimed), ["m", "n"]);
    // Nothing happens to them before someone claims again.
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["m", "n"]
    );

    let again = st.claim("q", &["x", "y"], 100, 200).await;
    assert_eq!(ids_of(&again), ["n"], "m's one attempt was spent");
    assert_eq!(again[0].attempt, 2);
    let dead = st.messages("q", MessageState::Dead).await;
    assert_eq!(row_ids(&dead), ["m"]);
    assert_eq!(dead[0].last_error.as_deref(), Some(EXPIRED));
    assert_eq!(dead[0].attempt, 1);
    assert!(!st.ack("m", "l1").await);
    assert_eq!(st.fail("m", "l1", "late", 100, 100).await, Failed::Stale);
    assert_eq!(
        st.messages("q", MessageState::Dead).await[0]
            .last_error
            .as_deref(),
        Some(EXPIRED),
        "buried once"
    );
    // n, on its last attempt, dies the same way.
    assert_eq!(st.claim("q", &["z"], 200, 300).await, []);
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Dead).await),
        ["m", "n"]
    );
    assert_eq!(st.messages("q", MessageState::Claimed).await, []);
}

async fn a_send_claims_what_is_due_first_for_its_consumer(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    let claim = |names: &[&str]| ClaimAtSend {
        leases: leases(names),
        until_ms: 60_000,
    };
    // An empty queue: the send's own messages, at most one per lease, first sent first.
    let (sent, claimed) = st
        .send_claiming(
            "q",
            vec![msg("a", 1_000), msg("b", 1_000), msg("c", 1_000)],
            1_000,
            &["l1", "l2"],
            60_000,
        )
        .await;
    assert_eq!(sent, queued(&["a", "b", "c"]));
    assert_eq!(ids_of(&claimed), ["a", "b"]);
    // A store that hints its sends has lowered the app's hint to their due time; one that does
    // not has left the hints alone.
    let hinted = st
        .system
        .due_apps(i64::MAX, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|d| &d.app == a)
        .map(|d| d.at_ms);
    assert_eq!(hinted, q.hints_at_send().then_some(1_000));
    assert_eq!(
        claimed
            .iter()
            .map(|c| (c.lease.as_str(), c.attempt, c.payload.as_str()))
            .collect::<Vec<_>>(),
        [
            ("l1", 1, payload("a").as_str()),
            ("l2", 1, payload("b").as_str())
        ]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["a", "b"]
    );
    // Behind a backlog (c), a send hands over the backlog first; a duplicate of a key, or a
    // message due later, is not claimed.
    let (sent, claimed) = st
        .send_claiming(
            "q",
            vec![
                NewMessage {
                    key: Some("k".into()),
                    ..msg("d", 2_000)
                },
                NewMessage {
                    key: Some("k".into()),
                    ..msg("e", 2_000)
                },
                msg("f", 5_000),
            ],
            2_000,
            &["l3", "l4", "l5"],
            60_000,
        )
        .await;
    assert_eq!(
        sent,
        [
            Sent::Queued("d".into()),
            Sent::Duplicate("d".into()),
            Sent::Queued("f".into())
        ]
    );
    assert_eq!(ids_of(&claimed), ["c", "d"]);
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["f"]
    );
    // The claims are ordinary ones: their leases acknowledge them; they hide until `until_ms`.
    assert!(st.ack("a", "l1").await);
    assert!(!st.ack("b", "l3").await);
    assert_eq!(
        ids_of(&st.claim("q", &["x", "y"], 59_999, 70_000).await),
        ["f"]
    );
    assert_eq!(
        ids_of(&st.claim("q", &["z1", "z2", "z3"], 60_000, 70_000).await),
        ["b", "c", "d"]
    );
    // Nothing due: nothing claimed, the message kept.
    let (sent, claimed) = st
        .send_claiming("q", vec![msg("g", 90_000)], 61_000, &["l6"], 60_000)
        .await;
    assert_eq!((sent, claimed.len()), (queued(&["g"]), 0));
    // A send that fails (an id taken) neither enqueues nor claims anything.
    let err = q
        .send_and_claim(
            a,
            "q",
            vec![msg("h", 0), msg("g", 0)],
            95_000,
            100,
            claim(&["l7", "l8"]),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["g"]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["b", "c", "d", "f"]
    );
}

/// The claim of a send takes its own messages and the older ones in one order, by due time
/// then by sending, as if the send had been committed first: a new message due before an
/// older one goes first; one not due yet stays.
async fn a_send_claims_its_own_and_older_messages_in_due_order(st: Stores) {
    st.put("q").await;
    assert_eq!(
        st.send("q", vec![msg("old-late", 1_500), msg("old-early", 500)], 0)
            .await,
        queued(&["old-late", "old-early"])
    );
    let (sent, claimed) = st
        .send_claiming(
            "q",
            vec![
                msg("new-due", 1_000),
                msg("new-later", 9_000),
                msg("new-now", 2_000),
            ],
            2_000,
            &["l1", "l2", "l3"],
            60_000,
        )
        .await;
    assert_eq!(sent, queued(&["new-due", "new-later", "new-now"]));
    assert_eq!(ids_of(&claimed), ["old-early", "new-due", "old-late"]);
    assert_eq!(
        claimed
            .iter()
            .map(|c| (c.lease.as_str(), c.attempt))
            .collect::<Vec<_>>(),
        [("l1", 1), ("l2", 1), ("l3", 1)]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["new-later", "new-now"]
    );
    // The claims are ordinary ones: their leases settle them.
    assert!(st.ack("new-due", "l2").await);
    assert!(!st.ack("old-late", "l2").await);
    assert!(st.ack("old-late", "l3").await);
    // The rest keeps its order: the one due now first.
    assert_eq!(
        ids_of(&st.claim("q", &["x", "y"], 9_000, 70_000).await),
        ["new-now", "new-later"]
    );
}

async fn a_send_to_an_idle_queue_claims_its_due_messages_as_a_claim_would(st: Stores) {
    st.put("q").await;
    // Nothing else due, and a lease for every due message: they are claimed in order of due
    // time, then of sending (not of id), one lease each, hidden until the claim's expiry; the
    // one due later waits.
    let messages = vec![
        msg("c", 1_000),
        msg("later", 5_000),
        msg("b", 400),
        msg("a", 1_000),
    ];
    let (sent, claimed) = st
        .send_claiming("q", messages, 1_000, &["l1", "l2", "l3", "l4"], 60_000)
        .await;
    assert_eq!(sent, queued(&["c", "later", "b", "a"]));
    assert_eq!(
        claimed
            .iter()
            .map(|c| (
                c.id.as_str(),
                c.lease.as_str(),
                c.attempt,
                c.max_attempts,
                c.payload.as_str()
            ))
            .collect::<Vec<_>>(),
        [
            ("b", "l1", 1, 3, payload("b").as_str()),
            ("c", "l2", 1, 3, payload("c").as_str()),
            ("a", "l3", 1, 3, payload("a").as_str()),
        ]
    );
    let rows = st.messages("q", MessageState::Claimed).await;
    let mut hidden: Vec<(&str, i64, i64)> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.visible_at_ms, r.attempt))
        .collect();
    hidden.sort_unstable();
    assert_eq!(
        hidden,
        [("a", 60_000, 1), ("b", 60_000, 1), ("c", 60_000, 1)]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["later"]
    );
    // Ordinary claims: hidden from other claims until they expire, settled by their leases.
    assert_eq!(
        ids_of(&st.claim("q", &["x"], 5_000, 70_000).await),
        ["later"]
    );
    assert!(!st.ack("c", "l1").await);
    assert!(st.ack("c", "l2").await);
    assert_eq!(
        st.fail("b", "l1", "no", 2_000, 3_000).await,
        Failed::Retrying
    );
    assert_eq!(
        ids_of(&st.claim("q", &["y", "z"], 3_000, 70_000).await),
        ["b"]
    );
    assert_eq!(ids_of(&st.claim("q", &["w"], 60_000, 70_000).await), ["a"]);
}

async fn a_send_with_an_app_key_goes_only_while_the_key_is_the_apps(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    let claim = |lease: &str| ClaimAtSend {
        leases: leases(&[lease]),
        until_ms: 60_000,
    };
    // A backlog, which a send's claim would take first.
    assert_eq!(st.send("q", vec![msg("w", 0)], 0).await, queued(&["w"]));
    let key = a.as_str().as_bytes().to_vec();
    let send = |id: &'static str, lease: &'static str, key: Vec<u8>| async move {
        q.send_and_claim(a, "q", vec![msg(id, 0)], 0, 100, claim(lease), Some(&key))
            .await
    };
    if !q.checks_app_key_at_send() {
        // Its caller checks the key first: one handed over anyway is refused, never taken.
        let refused = send("x", "l1", key).await;
        assert!(
            matches!(refused, Err(StoreError::KeyRefused)),
            "{refused:?}"
        );
        assert_eq!(
            row_ids(&st.messages("q", MessageState::Waiting).await),
            ["w"]
        );
        return;
    }
    let (sent, claimed, on_disk) = send("x", "l1", key.clone()).await.unwrap();
    on_disk.wait().await.unwrap();
    assert_eq!((sent, ids_of(&claimed)), (queued(&["x"]), vec!["w"]));
    // Another app's key, and the app's old key once replaced: nothing sent, nothing claimed,
    // the app's hint untouched.
    st.system
        .replace_app_key(a, vec![9; 32], "cls_new".into(), 2)
        .await
        .unwrap();
    let hint = || async {
        st.system
            .due_apps(i64::MAX, 100)
            .await
            .unwrap()
            .into_iter()
            .find(|d| &d.app == a)
            .map(|d| (d.at_ms, d.version))
    };
    let before = hint().await;
    for wrong in [b"other".to_vec(), key, Vec::new()] {
        let refused = send("y", "l2", wrong).await;
        assert!(
            matches!(refused, Err(StoreError::KeyRefused)),
            "{refused:?}"
        );
    }
    assert_eq!(hint().await, before);
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["x"]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["w"]
    );
    // The new key sends, and its claim takes what is due first.
    let (sent, claimed, on_disk) = send("z", "l3", vec![9; 32]).await.unwrap();
    on_disk.wait().await.unwrap();
    assert_eq!((sent, ids_of(&claimed)), (queued(&["z"]), vec!["x"]));
    // A keyed send checks it too.
    let keyed_send = |key: Vec<u8>| async move {
        q.send_and_claim(
            a,
            "q",
            vec![keyed("k1", "k")],
            0,
            100,
            claim("l4"),
            Some(&key),
        )
        .await
    };
    let refused = keyed_send(a.as_str().as_bytes().to_vec()).await;
    assert!(
        matches!(refused, Err(StoreError::KeyRefused)),
        "{refused:?}"
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["z"]
    );
    let (sent, _, _) = keyed_send(vec![9; 32]).await.unwrap();
    assert_eq!(sent, queued(&["k1"]));
}

async fn idempotency_keys_hold_for_their_window(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.put("other").await;
    let sent = q
        .send(
            a,
            "q",
            vec![
                keyed("a", "k1"),
                keyed("b", "k1"),
                msg("c", 0),
                keyed("d", "k2"),
            ],
            1_000,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        sent,
        [
            Sent::Queued("a".into()),
            Sent::Duplicate("a".into()),
            Sent::Queued("c".into()),
            Sent::Queued("d".into()),
        ],
        "the first of a key in one send wins"
    );
    // A key is looked up without sending, while it lives (1,000 + 100 ms) and in its queue only.
    assert_eq!(
        q.keyed(a, "q", "k1", 1_099).await.unwrap(),
        Some("a".into())
    );
    assert_eq!(q.keyed(a, "q", "k1", 1_100).await.unwrap(), None);
    assert_eq!(q.keyed(a, "other", "k1", 1_050).await.unwrap(), None);
    assert_eq!(q.keyed(a, "q", "k9", 1_050).await.unwrap(), None);
    let again = q
        .send(a, "q", vec![keyed("e", "k1")], 1_099, 100)
        .await
        .unwrap();
    assert_eq!(again, [Sent::Duplicate("a".into())], "within the window");
    // The key outlives its message.
    let claimed = st.claim("q", &["l"], 1_099, 2_000).await;
    assert_eq!(ids_of(&claimed), ["a"]);
    assert!(st.ack("a", "l").await);
    let again = q
        .send(a, "q", vec![keyed("f", "k1")], 1_099, 100)
        .await
        .unwrap();
    assert_eq!(again, [Sent::Duplicate("a".into())]);
    // Keys are per queue.
    let other = q
        .send(a, "other", vec![keyed("g", "k1")], 1_050, 100)
        .await
        .unwrap();
    assert_eq!(other, queued(&["g"]));
    // The same id sent again with the key is a duplicate, not a conflict.
    let same = q
        .send(a, "q", vec![keyed("d", "k2")], 1_050, 100)
        .await
        .unwrap();
    assert_eq!(same, [Sent::Duplicate("d".into())]);

    // At the end of the window the key is free; the new message holds it from then on.
    let later = q
        .send(a, "q", vec![keyed("h", "k1")], 1_100, 100)
        .await
        .unwrap();
    assert_eq!(later, queued(&["h"]));
    let after = q
        .send(a, "q", vec![keyed("i", "k1"), keyed("j", "k2")], 1_150, 100)
        .await
        .unwrap();
    assert_eq!(
        after,
        [Sent::Duplicate("h".into()), Sent::Queued("j".into())]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["c", "d", "h", "j"]
    );
}

async fn a_failed_send_enqueues_nothing(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.send("q", vec![msg("taken", 0)], 0).await;
    let err = q
        .send(
            a,
            "q",
            vec![keyed("new", "k"), msg("other", 0), msg("taken", 0)],
            0,
            1_000,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["taken"]
    );
    assert_eq!(
        st.send("q", vec![keyed("again", "k")], 0).await,
        queued(&["again"]),
        "the key was not taken"
    );
}

async fn a_send_to_a_queue_not_declared_takes_nothing(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.send("q", vec![keyed("before", "k")], 0).await;
    assert!(q.delete_queue(a, "q").await.unwrap());
    let claim = || ClaimAtSend {
        leases: leases(&["l"]),
        until_ms: 100,
    };
    for queue in ["q", "never"] {
        let plain = q.send(a, queue, vec![msg("plain", 0)], 0, 1_000).await;
        assert!(matches!(plain, Err(StoreError::NotFound)), "{plain:?}");
        let keyed = q.send(a, queue, vec![keyed("keyed", "k")], 0, 1_000).await;
        assert!(matches!(keyed, Err(StoreError::NotFound)), "{keyed:?}");
        let committed = q
            .send_committed(a, queue, vec![msg("committed", 0)], 0, 1_000)
            .await;
        assert!(
            matches!(committed, Err(StoreError::NotFound)),
            "{committed:?}"
        );
        let claimed = q
            .send_and_claim(a, queue, vec![msg("claimed", 0)], 0, 1_000, claim(), None)
            .await;
        assert!(matches!(claimed, Err(StoreError::NotFound)), "{claimed:?}");
    }
    // Declared again, the queue is empty and its key new.
    st.put("q").await;
    for state in [MessageState::Waiting, MessageState::Claimed] {
        assert_eq!(st.messages("q", state).await, []);
        assert_eq!(st.messages("never", state).await, []);
    }
    assert_eq!(
        st.send("q", vec![keyed("after", "k")], 0).await,
        queued(&["after"])
    );
    // Cloudlet's own queues are never declared.
    assert_eq!(
        st.send("_triggers", vec![msg("own", 0)], 0).await,
        queued(&["own"])
    );
}

async fn stats_count_each_state(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    for name in ["c", "a", "b"] {
        st.put(name).await;
    }
    st.send(
        "a",
        vec![
            with_attempts(msg("dead", 0), 1),
            msg("flight", 1),
            msg("ready1", 2),
            msg("ready2", 100),
            msg("later", 500),
        ],
        0,
    )
    .await;
    st.kill("a", "dead", 0).await;
    assert_eq!(ids_of(&st.claim("a", &["l"], 1, 300).await), ["flight"]);
    st.send("b", vec![msg("b1", 50)], 0).await;

    assert_eq!(
        q.queue_stats(a, 100).await.unwrap(),
        [
            QueueStats {
                queue: "a".into(),
                ready: 2,
                delayed: 1,
                in_flight: 1,
                dead: 1,
                next_at_ms: Some(2),
            },
            QueueStats {
                queue: "b".into(),
                ready: 1,
                delayed: 0,
                in_flight: 0,
                dead: 0,
                next_at_ms: Some(50),
            },
            QueueStats {
                queue: "c".into(),
                ..QueueStats::default()
            },
        ],
        "declared queues only, by name"
    );
    let early = q.queue_stats(a, 10).await.unwrap();
    assert_eq!((early[0].ready, early[0].delayed), (1, 2));
    assert_eq!((early[1].ready, early[1].delayed), (0, 1));
}

async fn messages_page_by_id_per_state(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.put("other").await;
    let ids = ["m01", "m02", "m03", "m04", "m05", "m06", "m07"];
    st.send("q", ids.iter().map(|id| msg(id, 0)).collect(), 3)
        .await;
    st.send("other", vec![msg("m00", 0)], 3).await;
    st.claim("q", &["l1", "l2"], 10, 500).await;

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = q
            .messages(
                a,
                "q",
                MessageState::Waiting,
                after.as_deref(),
                2,
                usize::MAX,
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|r| r.id.clone());
        seen.extend(page.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, ["m03", "m04", "m05", "m06", "m07"]);
    let page = q
        .messages(a, "q", MessageState::Waiting, Some("m04"), 2, usize::MAX)
        .await
        .unwrap();
    assert_eq!(row_ids(&page), ["m05", "m06"]);
    // A page ends at the first message whose predecessors hold the bytes (each payload here is
    // 11 bytes); the first always comes.
    assert_eq!(payload("m03").len(), 11);
    for (max_bytes, expected) in [
        (0, &["m03"][..]),
        (1, &["m03"]),
        (11, &["m03"]),
        (12, &["m03", "m04"]),
        (23, &["m03", "m04", "m05"]),
    ] {
        let page = q
            .messages(a, "q", MessageState::Waiting, None, 100, max_bytes)
            .await
            .unwrap();
        assert_eq!(row_ids(&page), expected, "{max_bytes} bytes");
    }
    assert_eq!(
        st.messages("q", MessageState::Claimed).await,
        ["m01", "m02"]
            .iter()
            .map(|id| MessageRow {
                id: (*id).into(),
                queue: "q".into(),
                payload: payload(id),
                state: MessageState::Claimed,
                visible_at_ms: 500,
                attempt: 1,
                max_attempts: 3,
                last_error: None,
                created_at_ms: 3,
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(st.messages("q", MessageState::Dead).await, []);
    assert_eq!(
        q.messages(a, "q", MessageState::Waiting, None, 0, usize::MAX)
            .await
            .unwrap(),
        []
    );
}

async fn replay_moves_dead_letters_back(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.send(
        "q",
        ["d1", "d2", "d3"]
            .iter()
            .map(|id| with_attempts(msg(id, 0), 1))
            .collect(),
        0,
    )
    .await;
    let claimed = st.claim("q", &["l1", "l2", "l3"], 0, 100).await;
    for c in &claimed {
        assert_eq!(st.fail(&c.id, &c.lease, "e", 10, 10).await, Failed::Dead);
    }
    let some = Some(vec!["d2".to_owned(), "nope".to_owned(), "d2".to_owned()]);
    assert_eq!(q.replay(a, "q", some, 500).await.unwrap(), 1);
    assert_eq!(
        st.messages("q", MessageState::Waiting).await,
        [MessageRow {
            id: "d2".into(),
            queue: "q".into(),
            payload: payload("d2"),
            state: MessageState::Waiting,
            visible_at_ms: 500,
            attempt: 0,
            max_attempts: 1,
            last_error: Some("e".into()),
            // Its retention counts from the replay.
            created_at_ms: 500,
        }]
    );
    assert_eq!(q.replay(a, "other", None, 600).await.unwrap(), 0);
    assert_eq!(q.replay(a, "q", Some(vec![]), 600).await.unwrap(), 0);
    assert_eq!(q.replay(a, "q", None, 600).await.unwrap(), 2);
    assert_eq!(q.replay(a, "q", None, 600).await.unwrap(), 0);
    assert_eq!(st.messages("q", MessageState::Dead).await, []);
    let claimed = st.claim("q", &["a", "b", "c"], 600, 700).await;
    assert_eq!(ids_of(&claimed), ["d2", "d1", "d3"]);
    assert!(claimed.iter().all(|c| c.attempt == 1));
}

async fn purge_deletes_by_state(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.put("other").await;
    st.send(
        "q",
        vec![
            with_attempts(msg("p1", 0), 1),
            msg("p2", 1),
            msg("p3", 2),
            msg("p4", 3),
        ],
        0,
    )
    .await;
    st.send("other", vec![msg("o1", 0)], 0).await;
    st.kill("q", "p1", 0).await;
    assert_eq!(ids_of(&st.claim("q", &["l"], 1, 100).await), ["p2"]);

    assert_eq!(q.purge(a, "q", Some(MessageState::Dead)).await.unwrap(), 1);
    assert_eq!(q.purge(a, "q", Some(MessageState::Dead)).await.unwrap(), 0);
    assert_eq!(
        q.purge(a, "q", Some(MessageState::Claimed)).await.unwrap(),
        1
    );
    assert!(!st.ack("p2", "l").await, "purged in flight");
    st.send("q", vec![msg("p5", 0)], 0).await;
    assert_eq!(
        q.purge(a, "q", Some(MessageState::Waiting)).await.unwrap(),
        3
    );
    st.send("q", vec![msg("p6", 0)], 0).await;
    st.claim("q", &["l6"], 0, 100).await;
    st.send("q", vec![msg("p7", 0)], 0).await;
    assert_eq!(q.purge(a, "q", None).await.unwrap(), 2);
    assert_eq!(q.purge(a, "q", None).await.unwrap(), 0);
    assert_eq!(
        row_ids(&st.messages("other", MessageState::Waiting).await),
        ["o1"]
    );
}

async fn next_due_is_the_earliest_pending(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    let both = || vec!["q1".to_owned(), "q2".to_owned()];
    assert_eq!(q.next_due(a, both()).await.unwrap(), None);
    st.put("q1").await;
    st.put("q2").await;
    st.send("q1", vec![msg("a", 300), msg("b", 200)], 0).await;
    st.send("q2", vec![with_attempts(msg("c", 100), 1)], 0)
        .await;
    assert_eq!(q.next_due(a, both()).await.unwrap(), Some(100));
    assert_eq!(
        q.next_due(a, vec!["q1".into()]).await.unwrap(),
        Some(200),
        "only the queues asked about"
    );
    assert_eq!(
        q.next_due(a, Vec::new()).await.unwrap(),
        None,
        "no queue asked about"
    );
    st.claim("q2", &["lc"], 100, 250).await;
    assert_eq!(q.next_due(a, both()).await.unwrap(), Some(200));
    st.claim("q1", &["lb"], 200, 1_000).await;
    assert_eq!(
        q.next_due(a, both()).await.unwrap(),
        Some(250),
        "a claim's expiry"
    );
    assert_eq!(st.fail("c", "lc", "e", 210, 50).await, Failed::Dead);
    assert_eq!(
        q.next_due(a, both()).await.unwrap(),
        Some(300),
        "not the dead"
    );
    assert!(st.ack("b", "lb").await);
    st.claim("q1", &["la"], 300, 400).await;
    assert!(st.ack("a", "la").await);
    assert_eq!(q.next_due(a, both()).await.unwrap(), None);
}

async fn sweep_deletes_old_messages_and_keys(st: Stores) {
    let (q, a) = (st.q(), &st.app);
    st.put("q").await;
    st.put("other").await;
    // Sent at 100: one to die at 150, one to stay claimed, one waiting (delayed), a keyed one.
    st.send(
        "q",
        vec![
            with_attempts(msg("d-old", 0), 1),
            msg("c-old", 1),
            msg("w-old", 5_000),
        ],
        100,
    )
    .await;
    let sent = q
        .send(
            a,
            "q",
            vec![NewMessage {
                visible_at_ms: 5_000,
                ..keyed("k-old", "short")
            }],
            100,
            50,
        )
        .await
        .unwrap();
    assert_eq!(sent, queued(&["k-old"]));
    let sent = q
        .send(
            a,
            "q",
            vec![NewMessage {
                visible_at_ms: 5_000,
                ..keyed("k-new", "long")
            }],
            300,
            10_000,
        )
        .await
        .unwrap();
    assert_eq!(sent, queued(&["k-new"]));
    st.kill("q", "d-old", 150).await;
    assert_eq!(ids_of(&st.claim("q", &["l"], 150, 10_000).await), ["c-old"]);
    // Sent at 300: one to die at 300, one waiting.
    st.send(
        "q",
        vec![with_attempts(msg("d-new", 0), 1), msg("w-new", 5_000)],
        300,
    )
    .await;
    st.kill("q", "d-new", 300).await;
    // Another queue's old message is its own queue's to sweep.
    st.send("other", vec![msg("o-old", 0)], 0).await;

    // Dead before 300 and waiting since before 300 go; keys expired at 500 go.
    assert_eq!(q.sweep_queues(a, "q", 500, 300, 300).await.unwrap(), 3);
    assert_eq!(
        row_ids(&st.messages("other", MessageState::Waiting).await),
        ["o-old"]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Dead).await),
        ["d-new"]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Claimed).await),
        ["c-old"]
    );
    assert_eq!(
        row_ids(&st.messages("q", MessageState::Waiting).await),
        ["k-new", "w-new"]
    );
    assert_eq!(q.sweep_queues(a, "q", 500, 300, 300).await.unwrap(), 0);
    let sent = q
        .send(
            a,
            "q",
            vec![keyed("x", "long"), keyed("y", "short")],
            500,
            50,
        )
        .await
        .unwrap();
    assert_eq!(
        sent,
        [Sent::Duplicate("k-new".into()), Sent::Queued("y".into())],
        "a live key stays"
    );
}

async fn due_hints(st: Stores) {
    let system = &*st.system;
    let [alpha, beta, gamma] = {
        let mut apps = Vec::new();
        for text in ["alpha", "beta", "gamma"] {
            apps.push(add_app(system, &*st.tenants, text).await);
        }
        <[AppName; 3]>::try_from(apps).unwrap()
    };
    let due = |app: &AppName, at_ms: i64, version: i64| DueApp {
        app: app.clone(),
        at_ms,
        version,
    };
    assert_eq!(system.next_hint().await.unwrap(), None);
    assert_eq!(system.due_apps(i64::MAX, 10).await.unwrap(), []);

    system.hint_due(&alpha, 500).await.unwrap();
    assert_eq!(
        system.due_apps(1_000, 10).await.unwrap(),
        [due(&alpha, 500, 1)]
    );
    system.hint_due(&alpha, 700).await.unwrap();
    assert_eq!(
        system.due_apps(1_000, 10).await.unwrap(),
        [due(&alpha, 500, 2)],
        "the earlier stays, the version moves"
    );
    system.hint_due(&alpha, 300).await.unwrap();
    system.hint_due(&beta, 100).await.unwrap();
    system.hint_due(&gamma, 200).await.unwrap();
    system.hint_due(&gamma, 900).await.unwrap();
    assert_eq!(
        system.due_apps(1_000, 10).await.unwrap(),
        [due(&beta, 100, 1), due(&gamma, 200, 2), due(&alpha, 300, 3)]
    );
    assert_eq!(
        system.due_apps(1_000, 2).await.unwrap(),
        [due(&beta, 100, 1), due(&gamma, 200, 2)]
    );
    assert_eq!(
        system.due_apps(250, 10).await.unwrap(),
        [due(&beta, 100, 1), due(&gamma, 200, 2)]
    );
    assert_eq!(system.due_apps(99, 10).await.unwrap(), []);
    assert_eq!(system.next_hint().await.unwrap(), Some(100));

    assert!(!system.settle_due(&alpha, 2, Some(2_000)).await.unwrap());
    assert!(!system.settle_due(&alpha, 2, None).await.unwrap());
    assert_eq!(
        system.due_apps(1_000, 10).await.unwrap()[2],
        due(&alpha, 300, 3),
        "a stale version changes nothing"
    );
    assert!(system.settle_due(&alpha, 3, Some(2_000)).await.unwrap());
    assert_eq!(
        system.due_apps(i64::MAX, 10).await.unwrap(),
        [
            due(&beta, 100, 1),
            due(&gamma, 200, 2),
            due(&alpha, 2_000, 3)
        ]
    );
    assert!(system.settle_due(&beta, 1, None).await.unwrap());
    assert!(!system.settle_due(&beta, 1, None).await.unwrap());
    assert!(
        !system.settle_due(&st.app, 1, None).await.unwrap(),
        "no hint"
    );
    assert_eq!(system.next_hint().await.unwrap(), Some(200));
    system.hint_due(&beta, 50).await.unwrap();
    assert_eq!(system.due_apps(60, 10).await.unwrap(), [due(&beta, 50, 1)]);
    assert_eq!(system.next_hint().await.unwrap(), Some(50));

    // A deleted app's hint goes with it.
    assert!(system.delete_app(&gamma).await.unwrap());
    assert_eq!(
        system.due_apps(i64::MAX, 10).await.unwrap(),
        [due(&beta, 50, 1), due(&alpha, 2_000, 3)]
    );
    assert!(system.settle_due(&beta, 1, None).await.unwrap());
    assert!(system.settle_due(&alpha, 3, None).await.unwrap());
    assert_eq!(system.next_hint().await.unwrap(), None);
}

async fn an_app_never_provisioned_is_no_tenant(st: Stores) {
    let ghost = name("ghost");
    let err = st.q().queues(&ghost).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchTenant), "{err:?}");
    let err = st
        .q()
        .claim(&ghost, "q", leases(&["l"]), 0, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchTenant), "{err:?}");
}

/// `count` stores on one fresh PostgreSQL database, as `count` nodes, with one app provisioned
/// and its queues `q` and `keys` declared.
async fn nodes(count: usize, pool_size: usize) -> (Vec<Arc<Postgres>>, AppName) {
    nodes_at(&TestServer::shared().database(), count, pool_size).await
}

async fn nodes_at(url: &str, count: usize, pool_size: usize) -> (Vec<Arc<Postgres>>, AppName) {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(open_postgres(url, pool_size).await);
    }
    let app = add_app(&*nodes[0], &*nodes[0], "busy").await;
    for name in ["q", "keys"] {
        let declared = queue(name, "{}", 1);
        nodes[0].put_queue(&app, declared).await.unwrap();
    }
    (nodes, app)
}

async fn concurrent_claimers_deliver_each_message_once() {
    const MESSAGES: usize = 500;
    const CLAIMERS: usize = 8;
    let (nodes, app) = nodes(CLAIMERS, 2).await;
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|i| msg(&format!("m{i:04}"), (i % 7) as i64))
        .collect();
    nodes[0].send(&app, "q", messages, 0, 1_000).await.unwrap();

    let barrier = Arc::new(Barrier::new(CLAIMERS));
    let mut tasks = JoinSet::new();
    for (c, node) in nodes.iter().enumerate() {
        let (node, app, barrier) = (node.clone(), app.clone(), barrier.clone());
        tasks.spawn(async move {
            barrier.wait().await;
            let mut got = Vec::new();
            let mut round = 0;
            loop {
                round += 1;
                let leases: Vec<String> = (0..3).map(|i| format!("c{c}-r{round}-{i}")).collect();
                let claimed = node.claim(&app, "q", leases, 100, 1_000_000).await.unwrap();
                if claimed.is_empty() {
                    // Empty while others hold the rest: done once nothing waits.
                    let waiting = node
                        .messages(&app, "q", MessageState::Waiting, None, 1, usize::MAX)
                        .await
                        .unwrap();
                    if waiting.is_empty() {
                        break;
                    }
                    tokio::task::yield_now().await;
                    continue;
                }
                for delivery in claimed {
                    assert!(
                        node.ack(&app, &delivery.id, &delivery.lease).await.unwrap(),
                        "{} was acknowledged by its only holder",
                        delivery.id
                    );
                    got.push(delivery);
                }
            }
            got
        });
    }
    let mut deliveries: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut per_claimer = Vec::new();
    for got in tasks.join_all().await {
        per_claimer.push(got.len());
        for delivery in got {
            deliveries
                .entry(delivery.id)
                .or_default()
                .push(delivery.attempt);
        }
    }
    let twice: Vec<_> = deliveries.iter().filter(|(_, a)| a != &&[1]).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(deliveries.len(), MESSAGES, "none lost");
    assert_eq!(per_claimer.iter().sum::<usize>(), MESSAGES);
    let pending = nodes[1].next_due(&app, vec!["q".into()]).await.unwrap();
    assert_eq!(pending, None, "all acknowledged");
}

async fn concurrent_settlements_of_one_delivery_settle_once() {
    const ROUNDS: usize = 40;
    let (nodes, app) = nodes(2, 4).await;
    // Each round: one delivery, settled at once by two holders of its lease, in three pairs.
    for round in 0..ROUNDS {
        let id = format!("m{round:03}");
        let max_attempts = if round % 2 == 0 { 1 } else { 3 };
        let message = with_attempts(msg(&id, 0), max_attempts);
        nodes[0]
            .send(&app, "q", vec![message], 0, 1_000)
            .await
            .unwrap();
        let lease = format!("lease-{round}");
        let claimed = nodes[1]
            .claim(&app, "q", vec![lease.clone()], 0, 1_000)
            .await
            .unwrap();
        assert_eq!(ids_of(&claimed), [id.as_str()]);

        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = JoinSet::new();
        for (side, node) in nodes.iter().enumerate() {
            let (node, app, barrier) = (node.clone(), app.clone(), barrier.clone());
            let (id, lease) = (id.clone(), lease.clone());
            // Pairs: ack/fail, fail/fail, ack/ack.
            let acks = match round % 3 {
                0 => side == 0,
                1 => false,
                _ => true,
            };
            tasks.spawn(async move {
                barrier.wait().await;
                if acks {
                    node.ack(&app, &id, &lease).await.unwrap()
                } else {
                    let failed = node
                        .fail(&app, &id, &lease, &format!("side {side}"), 10, Some(10_000))
                        .await
                        .unwrap();
                    failed != Failed::Stale
                }
            });
        }
        let wins = tasks.join_all().await.into_iter().filter(|w| *w).count();
        assert_eq!(wins, 1, "round {round}: exactly one settlement wins");
        // Leave nothing behind for the next round.
        nodes[0].purge(&app, "q", None).await.unwrap();
    }
}

async fn concurrent_sends_of_one_key_queue_once() {
    const ROUNDS: usize = 30;
    const SENDERS: usize = 6;
    let (nodes, app) = nodes(SENDERS, 2).await;
    for round in 0..ROUNDS {
        let key = format!("key-{round}");
        let barrier = Arc::new(Barrier::new(SENDERS));
        let mut tasks = JoinSet::new();
        for (s, node) in nodes.iter().enumerate() {
            let (node, app, barrier) = (node.clone(), app.clone(), barrier.clone());
            let message = keyed(&format!("r{round}-s{s}"), &key);
            tasks.spawn(async move {
                barrier.wait().await;
                node.send(&app, "q", vec![message], 1_000, 60_000)
                    .await
                    .unwrap()
            });
        }
        let sent: Vec<Sent> = tasks.join_all().await.into_iter().flatten().collect();
        let queued: Vec<&String> = sent
            .iter()
            .filter_map(|s| match s {
                Sent::Queued(id) => Some(id),
                Sent::Duplicate(_) => None,
            })
            .collect();
        assert_eq!(queued.len(), 1, "round {round}: one queued of {sent:?}");
        let first = queued[0].clone();
        for s in &sent {
            if let Sent::Duplicate(id) = s {
                assert_eq!(id, &first, "round {round}: duplicates name the first");
            }
        }
    }
    let waiting = nodes[0]
        .messages(&app, "q", MessageState::Waiting, None, 1_000, usize::MAX)
        .await
        .unwrap();
    assert_eq!(waiting.len(), ROUNDS, "one message per key");
}

async fn concurrent_sends_of_crossed_keys_do_not_deadlock() {
    const ROUNDS: usize = 30;
    let (nodes, app) = nodes(2, 2).await;
    for round in 0..ROUNDS {
        let keys: Vec<String> = (0..4).map(|k| format!("r{round}-k{k}")).collect();
        let barrier = Arc::new(Barrier::new(2));
        let mut tasks = JoinSet::new();
        for (side, node) in nodes.iter().enumerate() {
            let (node, app, barrier) = (node.clone(), app.clone(), barrier.clone());
            // One side sends the keys in order, the other in reverse.
            let mut order = keys.clone();
            if side == 1 {
                order.reverse();
            }
            let messages: Vec<NewMessage> = order
                .iter()
                .map(|key| keyed(&format!("{key}-s{side}"), key))
                .collect();
            tasks.spawn(async move {
                barrier.wait().await;
                node.send(&app, "q", messages, 1_000, 60_000).await
            });
        }
        let mut queued = BTreeSet::new();
        for result in tasks.join_all().await {
            let sent = result.unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            for s in sent {
                if let Sent::Queued(id) = s {
                    queued.insert(id);
                }
            }
        }
        assert_eq!(queued.len(), keys.len(), "round {round}: one per key");
    }
}

/// A send that reads the queue declared while a delete of it is under way waits for the delete
/// and then takes nothing, rather than leave messages behind it. A send with a key takes the
/// declaration before the key, as the delete does: the other way round, a key used before
/// (and expired) would be held by the send while the delete waits for it, and the send waits
/// for the delete.
async fn a_send_waits_for_a_delete_of_its_queue_and_takes_nothing() {
    let url = TestServer::shared().database();
    let (nodes, app) = nodes_at(&url, 1, 4).await;
    let node = Arc::clone(&nodes[0]);
    let (other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for (i, keys) in [false, true].into_iter().enumerate() {
        let name = format!("doomed{i}");
        node.put_queue(&app, queue(&name, "{}", 1)).await.unwrap();
        // A key used before, expired by the time of the send.
        let used = node.send(&app, &name, vec![keyed("m0", "k")], 0, 1);
        used.await.unwrap();
        other.batch_execute("BEGIN").await.unwrap();
        let deleted = other
            .execute("DELETE FROM \"app_busy\"._queues WHERE name = $1", &[&name])
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        let message = if keys { keyed("m", "k") } else { msg("m", 0) };
        let send = {
            let (node, app, name) = (Arc::clone(&node), app.clone(), name.clone());
            tokio::spawn(async move { node.send(&app, &name, vec![message], 10, 1_000).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!send.is_finished(), "the send waits for the delete");
        // The rest of the delete, as `delete_queue` does it, is not held up by the send.
        for table in ["_queue_messages", "_queue_keys"] {
            let sql = format!("DELETE FROM \"app_busy\".{table} WHERE queue = $1");
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&name];
            let rest = other.execute(&sql, &params);
            let rest = tokio::time::timeout(Duration::from_millis(500), rest).await;
            assert_eq!(rest.expect("not held up").unwrap(), 1, "{table}");
        }
        other.batch_execute("COMMIT").await.unwrap();
        let sent = send.await.unwrap();
        assert!(matches!(sent, Err(StoreError::NotFound)), "{sent:?}");
        let left = node
            .messages(&app, &name, MessageState::Waiting, None, 10, usize::MAX)
            .await
            .unwrap();
        assert_eq!(left, []);
    }
}

/// A claim or a sweep that waited for a row another transaction holds would stall every
/// consumer behind one slow one: they pass over it, and take it once it is free.
async fn claims_and_sweeps_pass_over_rows_another_transaction_holds() {
    let url = TestServer::shared().database();
    let (nodes, app) = nodes_at(&url, 1, 4).await;
    let node = &nodes[0];
    let spent = vec![
        with_attempts(msg("dead", 0), 1),
        with_attempts(msg("spent", 0), 1),
    ];
    node.send(&app, "q", spent, 0, 1_000).await.unwrap();
    let claimed = node
        .claim(&app, "q", leases(&["l1", "l2"]), 0, 10)
        .await
        .unwrap();
    assert_eq!(ids_of(&claimed), ["dead", "spent"]);
    let failed = node
        .fail(&app, "dead", "l1", "e", 0, Some(0))
        .await
        .unwrap();
    assert_eq!(failed, Failed::Dead);
    let fresh = vec![msg("m1", 20), msg("m2", 20), msg("m3", 20)];
    node.send(&app, "q", fresh, 0, 1_000).await.unwrap();
    let sent = node
        .send(&app, "keys", vec![keyed("k1", "k")], 5, 1)
        .await
        .unwrap();
    assert_eq!(sent, queued(&["k1"]));

    // Another session holds a dead letter, an expired claim to bury, a due message (old
    // enough to be swept) and an expired key.
    let (other, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    other.batch_execute("BEGIN").await.unwrap();
    let held = other
        .query(
            "SELECT id FROM \"app_busy\"._queue_messages
             WHERE id IN ('dead', 'spent', 'm1') FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let held = other
        .query(
            "SELECT key FROM \"app_busy\"._queue_keys WHERE key = 'k' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);

    let patience = Duration::from_secs(5);
    let claimed = tokio::time::timeout(
        patience,
        node.claim(&app, "q", leases(&["a", "b", "c"]), 20, 1_000),
    )
    .await
    .expect("the claim waited for a held row")
    .unwrap();
    assert_eq!(ids_of(&claimed), ["m2", "m3"]);
    let swept = tokio::time::timeout(patience, async {
        let q = node.sweep_queues(&app, "q", 20, 1_000, 1).await.unwrap();
        let keys = node.sweep_queues(&app, "keys", 20, 1_000, 1).await.unwrap();
        q + keys
    })
    .await
    .expect("the sweep waited for a held row");
    assert_eq!(swept, 0);
    let dead = node
        .messages(&app, "q", MessageState::Dead, None, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        row_ids(&dead),
        ["dead"],
        "the held expired claim is not buried yet"
    );

    other.batch_execute("COMMIT").await.unwrap();
    let claimed = node
        .claim(&app, "q", leases(&["d", "e"]), 20, 1_000)
        .await
        .unwrap();
    assert_eq!(ids_of(&claimed), ["m1"], "never the spent one");
    let dead = node
        .messages(&app, "q", MessageState::Dead, None, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(row_ids(&dead), ["dead", "spent"]);
    assert_eq!(dead[1].last_error.as_deref(), Some(EXPIRED));
    assert_eq!(node.sweep_queues(&app, "q", 20, 1_000, 1).await.unwrap(), 2);
    assert_eq!(
        node.sweep_queues(&app, "keys", 20, 1_000, 1).await.unwrap(),
        0
    );
    let sent = node
        .send(&app, "keys", vec![keyed("k2", "k")], 20, 1)
        .await
        .unwrap();
    assert_eq!(sent, queued(&["k2"]));
}

async fn concurrent_puts_of_one_queue_create_it_once() {
    const ROUNDS: usize = 20;
    const PUTS: usize = 4;
    let (nodes, app) = nodes(PUTS, 2).await;
    for round in 0..ROUNDS {
        let name = format!("q{round}");
        let barrier = Arc::new(Barrier::new(PUTS));
        let mut tasks = JoinSet::new();
        for (p, node) in nodes.iter().enumerate() {
            let (node, app, barrier) = (node.clone(), app.clone(), barrier.clone());
            let row = queue(&name, &format!("{{\"put\":{p}}}"), p as i64);
            tasks.spawn(async move {
                barrier.wait().await;
                node.put_queue(&app, row).await.unwrap()
            });
        }
        let created = tasks.join_all().await.into_iter().filter(|c| *c).count();
        assert_eq!(created, 1, "round {round}: created once");
    }
    // With `q` and `keys`, which `nodes` declares.
    assert_eq!(nodes[0].queues(&app).await.unwrap().len(), ROUNDS + 2);
}

/// `cloudlet migrate` copies an app's queues as they are: PostgreSQL's `rowid` takes SQLite's,
/// so messages due at the same moment keep their order, and later sends come after them.
async fn queues_move_from_sqlite_in_order() {
    let (system, tenants, _dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "moving").await;
    tenants
        .put_queue(&app, queue("q", r#"{"v":1}"#, 3))
        .await
        .unwrap();
    let messages = vec![
        msg("z", 0),
        msg("y", 0),
        with_attempts(msg("x", 0), 1),
        msg("w", 0),
    ];
    tenants.send(&app, "q", messages, 1, 1_000).await.unwrap();
    tenants
        .send(&app, "q", vec![keyed("v", "k")], 1, 1_000)
        .await
        .unwrap();
    let claimed = tenants
        .claim(&app, "q", leases(&["l1", "l2", "l3"]), 5, 100)
        .await
        .unwrap();
    assert_eq!(ids_of(&claimed), ["z", "y", "x"]);
    assert_eq!(
        tenants
            .fail(&app, "x", "l3", "e", 6, Some(6))
            .await
            .unwrap(),
        Failed::Dead
    );
    assert!(tenants.ack(&app, "y", "l2").await.unwrap());

    let target = open_postgres(&TestServer::shared().database(), 2).await;
    let moved = cloudlet_store::transfer::transfer_app(
        &system,
        &tenants,
        &target,
        &app,
        &[],
        &[signing_key()],
    )
    .await
    .unwrap();
    assert!(moved.copied);
    let from: &dyn QueueStore = &*tenants;
    let to: &dyn QueueStore = &*target;
    assert_eq!(
        to.queues(&app).await.unwrap(),
        from.queues(&app).await.unwrap()
    );
    for state in [
        MessageState::Waiting,
        MessageState::Claimed,
        MessageState::Dead,
    ] {
        assert_eq!(
            to.messages(&app, "q", state, None, 10, usize::MAX)
                .await
                .unwrap(),
            from.messages(&app, "q", state, None, 10, usize::MAX)
                .await
                .unwrap()
        );
    }
    assert_eq!(
        to.send(&app, "q", vec![keyed("u", "k"), msg("t", 0)], 2, 1_000)
            .await
            .unwrap(),
        [Sent::Duplicate("v".into()), Sent::Queued("t".into())],
        "the keys came too"
    );
    // Due at 0 first sent first: w and v as sent on SQLite, t after them; then z, whose claim
    // expired at 100.
    let claimed = to
        .claim(&app, "q", leases(&["a", "b", "c", "d", "e"]), 100, 200)
        .await
        .unwrap();
    assert_eq!(ids_of(&claimed), ["w", "v", "t", "z"]);
    assert_eq!(claimed[3].attempt, 2);
}
