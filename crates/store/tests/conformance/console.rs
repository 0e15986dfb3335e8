//! The console's people, roles, sessions and audit log behave the same on both backends;
//! the races that matter (two first-owner setups, two owners removing each other) are run on
//! PostgreSQL through two stores on one database, as two nodes would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::{
    AuditRow, ConsoleSessionRow, ConsoleStore, PersonRemoval, PersonRow, StoreError, SystemStore,
};

use crate::backends::{app_row, name, open_postgres, signing_key};

trait Control: ConsoleStore + SystemStore {}
impl<T: ConsoleStore + SystemStore> Control for T {}

fn person(id: &str, email: &str, role: &str) -> PersonRow {
    PersonRow {
        id: id.into(),
        email: email.into(),
        name: format!("Person {id}"),
        password_hash: "$argon2id$v=19$fake".into(),
        instance_role: role.into(),
        created_at_ms: 5,
    }
}

fn session(token: u8, person: &str, expires_at_ms: i64) -> ConsoleSessionRow {
    ConsoleSessionRow {
        token_hash: vec![token; 32],
        person: person.into(),
        created_at_ms: 10,
        expires_at_ms,
    }
}

fn entry(actor: &str, app: Option<&str>, action: &str) -> AuditRow {
    AuditRow {
        seq: 0,
        at_ms: 20,
        actor: actor.into(),
        app: app.map(str::to_owned),
        action: action.into(),
        status: 200,
    }
}

async fn people_and_roles(s: Arc<dyn Control>) {
    assert!(!s.has_people().await.unwrap());
    assert!(
        s.insert_first_person(person("cp_a", "a@x.io", "owner"))
            .await
            .unwrap()
    );
    assert!(s.has_people().await.unwrap());
    // Only the first setup adds anybody.
    assert!(
        !s.insert_first_person(person("cp_b", "b@x.io", "owner"))
            .await
            .unwrap()
    );
    assert!(s.person("cp_b").await.unwrap().is_none());

    s.insert_person(person("cp_v", "v@x.io", "member"))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_person(person("cp_w", "v@x.io", "member")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.person_by_email("v@x.io").await.unwrap(),
        Some(person("cp_v", "v@x.io", "member"))
    );
    let emails: Vec<_> = s
        .people(10)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.email)
        .collect();
    assert_eq!(emails, ["a@x.io", "v@x.io"]);
    assert_eq!(s.people(1).await.unwrap().len(), 1);

    s.insert_app(app_row("shop"), signing_key()).await.unwrap();
    let shop = name("shop");
    assert!(s.set_role("cp_v", &shop, Some("viewer")).await.unwrap());
    assert!(s.set_role("cp_v", &shop, Some("developer")).await.unwrap());
    assert!(
        !s.set_role("cp_nobody", &shop, Some("viewer"))
            .await
            .unwrap()
    );
    assert!(
        !s.set_role("cp_v", &name("nope"), Some("viewer"))
            .await
            .unwrap()
    );
    let roles = s.roles(Some("cp_v")).await.unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(
        (roles[0].app.as_str(), roles[0].role.as_str()),
        ("shop", "developer")
    );
    assert_eq!(s.roles(None).await.unwrap(), roles);

    // Deleting the app takes its roles with it.
    assert!(s.delete_app(&shop).await.unwrap());
    assert!(s.roles(None).await.unwrap().is_empty());

    // Removing the role again is not an error; a person's roles go with them.
    s.insert_app(app_row("blog"), signing_key()).await.unwrap();
    let blog = name("blog");
    assert!(s.set_role("cp_v", &blog, Some("owner")).await.unwrap());
    assert!(s.set_role("cp_v", &blog, None).await.unwrap());
    assert!(s.set_role("cp_v", &blog, None).await.unwrap());
    assert!(s.set_role("cp_v", &blog, Some("viewer")).await.unwrap());
    assert_eq!(
        s.delete_person("cp_v").await.unwrap(),
        PersonRemoval::Removed
    );
    assert_eq!(
        s.delete_person("cp_v").await.unwrap(),
        PersonRemoval::NotFound
    );
    assert!(s.roles(None).await.unwrap().is_empty());

    // The last owner stays; with a second one, either may go.
    assert_eq!(
        s.delete_person("cp_a").await.unwrap(),
        PersonRemoval::LastOwner
    );
    s.insert_person(person("cp_o", "o@x.io", "owner"))
        .await
        .unwrap();
    assert_eq!(
        s.delete_person("cp_a").await.unwrap(),
        PersonRemoval::Removed
    );
    assert_eq!(
        s.delete_person("cp_o").await.unwrap(),
        PersonRemoval::LastOwner
    );
}

async fn sessions_expire_and_go_with_their_person(s: Arc<dyn Control>) {
    s.insert_person(person("cp_a", "a@x.io", "owner"))
        .await
        .unwrap();
    s.insert_person(person("cp_b", "b@x.io", "member"))
        .await
        .unwrap();
    s.insert_console_session(session(1, "cp_a", 1_000))
        .await
        .unwrap();
    s.insert_console_session(session(2, "cp_b", 2_000))
        .await
        .unwrap();
    s.insert_console_session(session(3, "cp_b", 3_000))
        .await
        .unwrap();

    let (found, who) = s.console_session(&[1; 32], 999).await.unwrap().unwrap();
    assert_eq!(found, session(1, "cp_a", 1_000));
    assert_eq!(who, person("cp_a", "a@x.io", "owner"));
    // Expired is gone, whether or not it was swept.
    assert!(s.console_session(&[1; 32], 1_000).await.unwrap().is_none());
    assert!(s.console_session(&[9; 32], 0).await.unwrap().is_none());

    assert_eq!(s.delete_expired_console_sessions(2_000).await.unwrap(), 2);
    assert!(s.console_session(&[1; 32], 0).await.unwrap().is_none());
    assert!(s.console_session(&[3; 32], 0).await.unwrap().is_some());

    s.delete_console_session(&[3; 32]).await.unwrap();
    assert!(s.console_session(&[3; 32], 0).await.unwrap().is_none());

    s.insert_console_session(session(4, "cp_b", 9_000))
        .await
        .unwrap();
    assert_eq!(
        s.delete_person("cp_b").await.unwrap(),
        PersonRemoval::Removed
    );
    assert!(s.console_session(&[4; 32], 0).await.unwrap().is_none());
}

async fn the_audit_log_pages_newest_first(s: Arc<dyn Control>) {
    let mut seqs = Vec::new();
    for i in 0..5 {
        let app = if i % 2 == 0 { Some("shop") } else { None };
        seqs.push(
            s.append_audit(entry("a@x.io", app, &format!("action {i}")))
                .await
                .unwrap(),
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let newest = s.audit(None, None, 2).await.unwrap();
    let actions: Vec<_> = newest.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["action 4", "action 3"]);
    assert_eq!(newest[0].seq, seqs[4]);
    assert_eq!((newest[0].at_ms, newest[0].status), (20, 200));
    assert_eq!(newest[0].app.as_deref(), Some("shop"));
    assert_eq!(newest[1].app, None);

    let older = s.audit(None, Some(newest[1].seq), 10).await.unwrap();
    let actions: Vec<_> = older.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["action 2", "action 1", "action 0"]);

    let shop = s.audit(Some(&name("shop")), None, 10).await.unwrap();
    let actions: Vec<_> = shop.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["action 4", "action 2", "action 0"]);
}

async fn old_audit_entries_go_oldest_first_a_batch_at_a_time(s: Arc<dyn Control>) {
    for at_ms in [10, 11, 12, 30, 31] {
        let mut row = entry("a@x.io", Some("shop"), &format!("at {at_ms}"));
        row.at_ms = at_ms;
        s.append_audit(row).await.unwrap();
    }
    // Before 30: three entries, two at most at a time, the oldest first.
    assert_eq!(s.delete_audit_before(30, 2).await.unwrap(), 2);
    let left = s.audit(None, None, 10).await.unwrap();
    let actions: Vec<_> = left.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["at 31", "at 30", "at 12"]);
    assert_eq!(s.delete_audit_before(30, 2).await.unwrap(), 1);
    assert_eq!(s.delete_audit_before(30, 2).await.unwrap(), 0);
    assert_eq!(s.audit(None, None, 10).await.unwrap().len(), 2);
}

async fn sqlite() -> (Arc<dyn Control>, Arc<tempfile::TempDir>) {
    let (system, _tenants, dir) = crate::backends::sqlite().await;
    (system, dir)
}

async fn postgres() -> Arc<dyn Control> {
    open_postgres(&TestServer::shared().database(), 4).await
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                super::$scenario(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::postgres().await).await;
            }
        }
    )*};
}

on_both!(
    people_and_roles,
    sessions_expire_and_go_with_their_person,
    the_audit_log_pages_newest_first,
    old_audit_entries_go_oldest_first_a_batch_at_a_time,
);

/// Two nodes set up the first owner at once, many times: exactly one wins each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_first_owner_across_nodes_on_postgres() {
    for round in 0..5 {
        let url = TestServer::shared().database();
        let (one, two) = (open_postgres(&url, 2).await, open_postgres(&url, 2).await);
        let (a, b) = tokio::join!(
            one.insert_first_person(person("cp_a", &format!("a{round}@x.io"), "owner")),
            two.insert_first_person(person("cp_b", &format!("b{round}@x.io"), "owner")),
        );
        assert_ne!(
            a.unwrap(),
            b.unwrap(),
            "round {round}: exactly one setup wins"
        );
        assert_eq!(one.people(10).await.unwrap().len(), 1);
    }
}

/// Two owners remove each other at once: one of them stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_always_stays_across_nodes_on_postgres() {
    for _ in 0..5 {
        let url = TestServer::shared().database();
        let (one, two) = (open_postgres(&url, 2).await, open_postgres(&url, 2).await);
        one.insert_person(person("cp_a", "a@x.io", "owner"))
            .await
            .unwrap();
        one.insert_person(person("cp_b", "b@x.io", "owner"))
            .await
            .unwrap();
        let (a, b) = tokio::join!(one.delete_person("cp_b"), two.delete_person("cp_a"));
        let outcomes = [a.unwrap(), b.unwrap()];
        assert!(outcomes.contains(&PersonRemoval::Removed), "{outcomes:?}");
        assert!(outcomes.contains(&PersonRemoval::LastOwner), "{outcomes:?}");
        assert_eq!(one.people(10).await.unwrap().len(), 1);
    }
}
