//! [`UserStore`] conformance: every scenario runs through the trait on both backends, SQLite on
//! a temporary directory and PostgreSQL on the throwaway test server (see `postgres::testing`),
//! and must give the same results on each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::sqlite::{SqliteTenants, TenantPoolOptions};
use cloudlet_store::{
    AppName, Durability, GrantKey, GrantRow, IdentityRow, Rotation, SessionRow, StoreError,
    TenantStore, UserRow, UserStore,
};

fn app() -> AppName {
    AppName::parse("shop").unwrap()
}

/// A provisioned app on SQLite; the directory lives as long as the store is used.
async fn sqlite() -> (tempfile::TempDir, SqliteTenants) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteTenants::open(
        dir.path().to_path_buf(),
        TenantPoolOptions {
            max_open: 8,
            readers: 2,
            durability: Durability::Full,
        },
    )
    .unwrap();
    store.provision(&app()).await.unwrap();
    (dir, store)
}

/// A provisioned app on a fresh PostgreSQL database.
async fn postgres() -> Postgres {
    let store = Postgres::open(PostgresOptions {
        url: TestServer::shared().database(),
        pool_size: 8,
        wait: Duration::from_secs(5),
        durability: Durability::Full,
        max_open: 1000,
    })
    .await
    .unwrap();
    store.provision(&app()).await.unwrap();
    store
}

fn user(id: &str, email: Option<&str>) -> UserRow {
    UserRow {
        id: id.into(),
        created_at_ms: 1,
        last_login_at_ms: 1,
        email: email.map(Into::into),
        phone: None,
        profile: "{}".into(),
    }
}

fn identity(provider: &str, subject: &str, user_id: &str, unionid: Option<&str>) -> IdentityRow {
    IdentityRow {
        provider: provider.into(),
        subject: subject.into(),
        user_id: user_id.into(),
        unionid: unionid.map(Into::into),
        family: "wechat".into(),
        created_at_ms: 1,
    }
}

fn session(id: &str, user_id: &str, secret: u8, created_at_ms: i64) -> SessionRow {
    SessionRow {
        id: id.into(),
        user_id: user_id.into(),
        provider: "wechat".into(),
        secret_hash: vec![secret; 32],
        created_at_ms,
        refreshed_at_ms: created_at_ms,
        expires_at_ms: 1_000,
        revoked_at_ms: None,
        sealed_platform_key: None,
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

async fn users_are_listed_by_id_and_found_by_search(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    for i in 0..5 {
        let mut row = user(&format!("u{i}"), Some(&format!("person{i}@example.com")));
        row.phone = (i == 3).then(|| "+8613800000000".to_owned());
        let id = (i < 2).then(|| {
            identity(
                "wechat",
                &format!("openid-{i}"),
                &row.id,
                Some(&format!("union-{i}")),
            )
        });
        s.create_user(a, row, None, id, None).await.unwrap();
    }
    s.add_identity(a, identity("qq", "qq-openid-0", "u0", None))
        .await
        .unwrap();
    let ids = |rows: Vec<UserRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(
        ids(s.list_users(a, None, None, 3).await.unwrap()),
        ["u0", "u1", "u2"]
    );
    assert_eq!(
        ids(s.list_users(a, None, Some("u2"), 3).await.unwrap()),
        ["u3", "u4"]
    );
    assert!(
        s.list_users(a, None, Some("u4"), 3)
            .await
            .unwrap()
            .is_empty()
    );
    for (search, found) in [
        ("u2", vec!["u2"]),
        ("openid-1", vec!["u1"]),
        ("union-0", vec!["u0"]),
        ("qq-openid-0", vec!["u0"]),
        ("+8613800000000", vec!["u3"]),
        ("person4@example.com", vec!["u4"]),
        ("person4@", vec![]),
        ("person", vec![]),
        ("%", vec![]),
        ("openid", vec![]),
    ] {
        assert_eq!(
            ids(s.list_users(a, Some(search), None, 10).await.unwrap()),
            found,
            "{search}"
        );
    }
    // A search pages like the listing.
    let found = s.list_users(a, Some("u4"), Some("u3"), 10).await.unwrap();
    assert_eq!(ids(found), ["u4"]);
    assert!(
        s.list_users(a, Some("u3"), Some("u3"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let identities = s.identities_of(a, "u0").await.unwrap();
    let providers: Vec<_> = identities.iter().map(|i| i.provider.as_str()).collect();
    assert_eq!(providers, ["qq", "wechat"]);
    assert_eq!(
        identities[1],
        identity("wechat", "openid-0", "u0", Some("union-0"))
    );
    assert!(s.identities_of(a, "u4").await.unwrap().is_empty());
    assert!(s.identities_of(a, "nobody").await.unwrap().is_empty());
}

async fn users_are_found_by_identity_unionid_and_email(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    let u1 = UserRow {
        last_login_at_ms: 2,
        phone: Some("+86 100".into()),
        profile: r#"{"name":"Ann"}"#.into(),
        ..user("u1", Some("a@x.io"))
    };
    s.create_user(
        a,
        u1.clone(),
        Some("hash".into()),
        Some(identity("wechat", "o1", "u1", Some("un1"))),
        None,
    )
    .await
    .unwrap();
    s.create_user(a, user("u2", None), None, None, None)
        .await
        .unwrap();

    assert_eq!(s.user(a, "u1").await.unwrap(), Some(u1.clone()));
    assert_eq!(s.user(a, "u2").await.unwrap(), Some(user("u2", None)));
    assert_eq!(s.user(a, "nobody").await.unwrap(), None);
    assert_eq!(
        s.user_by_identity(a, "wechat", "o1").await.unwrap(),
        Some(u1.clone())
    );
    assert_eq!(s.user_by_identity(a, "wechat", "o2").await.unwrap(), None);
    assert_eq!(s.user_by_identity(a, "qq", "o1").await.unwrap(), None);
    assert_eq!(
        s.user_by_unionid(a, "wechat", "un1").await.unwrap(),
        Some(u1.clone())
    );
    assert_eq!(s.user_by_unionid(a, "qq", "un1").await.unwrap(), None);
    assert_eq!(s.user_by_unionid(a, "wechat", "un2").await.unwrap(), None);
    assert_eq!(
        s.user_by_email(a, "a@x.io").await.unwrap(),
        Some((u1.clone(), Some("hash".into())))
    );
    assert_eq!(s.user_by_email(a, "A@x.io").await.unwrap(), None);

    s.record_login(a, "u1", 50).await.unwrap();
    s.record_login(a, "nobody", 50).await.unwrap();
    assert_eq!(s.user(a, "u1").await.unwrap().unwrap().last_login_at_ms, 50);
}

async fn duplicates_conflict_and_leave_nothing(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    s.create_user(
        a,
        user("u1", Some("a@x.io")),
        None,
        Some(identity("wechat", "o1", "u1", None)),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.create_user(a, user("u2", Some("a@x.io")), None, None, None)
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.create_user(a, user("u1", None), None, None, None).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.create_user(
            a,
            user("u3", Some("c@x.io")),
            None,
            Some(identity("wechat", "o1", "u3", None)),
            None
        )
        .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.user(a, "u2").await.unwrap(), None);
    assert_eq!(
        s.user(a, "u3").await.unwrap(),
        None,
        "a failed create leaves nothing"
    );
    assert_eq!(s.user_by_email(a, "c@x.io").await.unwrap(), None);
    // Users without an email do not collide.
    s.create_user(a, user("u4", None), None, None, None)
        .await
        .unwrap();
    s.create_user(a, user("u5", None), None, None, None)
        .await
        .unwrap();
}

async fn identities_link_to_users(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    s.create_user(a, user("u2", None), None, None, None)
        .await
        .unwrap();
    assert_eq!(s.identity_of(a, "u1", "wechat").await.unwrap(), None);
    s.add_identity(a, identity("wechat", "o1", "u1", Some("un1")))
        .await
        .unwrap();
    s.add_identity(a, identity("qq", "q1", "u1", None))
        .await
        .unwrap();
    assert_eq!(
        s.identity_of(a, "u1", "wechat").await.unwrap(),
        Some(("o1".into(), Some("un1".into())))
    );
    assert_eq!(
        s.identity_of(a, "u1", "qq").await.unwrap(),
        Some(("q1".into(), None))
    );
    assert_eq!(s.identity_of(a, "u2", "wechat").await.unwrap(), None);
    assert!(matches!(
        s.add_identity(a, identity("wechat", "o1", "u2", None))
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        s.user_by_identity(a, "wechat", "o1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "u1"
    );
    assert_eq!(
        s.user_by_identity(a, "qq", "q1").await.unwrap().unwrap().id,
        "u1"
    );
    // The same subject at another provider is another identity.
    s.add_identity(a, identity("qq", "o1", "u2", None))
        .await
        .unwrap();
    assert_eq!(
        s.user_by_identity(a, "qq", "o1").await.unwrap().unwrap().id,
        "u2"
    );
    // An identity of no user is refused, but not as a conflict.
    let orphan = s
        .add_identity(a, identity("wechat", "o9", "nobody", None))
        .await;
    assert!(matches!(orphan, Err(StoreError::Database(_))), "{orphan:?}");
}

async fn phone_and_profile_update_existing_users_only(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    s.create_user(a, user("u1", Some("a@x.io")), None, None, None)
        .await
        .unwrap();
    let with_phone = s
        .set_phone(a, "u1", "+86 138".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        with_phone,
        UserRow {
            phone: Some("+86 138".into()),
            ..user("u1", Some("a@x.io"))
        }
    );
    let with_profile = s
        .update_profile(a, "u1", r#"{"name":"Bo"}"#.into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        with_profile,
        UserRow {
            phone: Some("+86 138".into()),
            profile: r#"{"name":"Bo"}"#.into(),
            ..user("u1", Some("a@x.io"))
        }
    );
    assert_eq!(s.user(a, "u1").await.unwrap(), Some(with_profile));
    assert_eq!(s.set_phone(a, "nobody", "+1".into()).await.unwrap(), None);
    assert_eq!(
        s.update_profile(a, "nobody", "{}".into()).await.unwrap(),
        None
    );
    assert_eq!(s.user(a, "nobody").await.unwrap(), None);
}

async fn sessions_are_stored_listed_and_revoked(s: &(impl UserStore + TenantStore)) {
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    s.create_user(a, user("u2", None), None, None, None)
        .await
        .unwrap();
    let s1 = SessionRow {
        sealed_platform_key: Some(vec![0, 7, 255]),
        ..session("s1", "u1", 1, 10)
    };
    s.insert_session(a, s1.clone()).await.unwrap();
    s.insert_session(a, session("s2", "u1", 2, 30))
        .await
        .unwrap();
    s.insert_session(a, session("s3", "u1", 3, 20))
        .await
        .unwrap();
    s.insert_session(a, session("s4", "u2", 4, 40))
        .await
        .unwrap();
    assert!(matches!(
        s.insert_session(a, session("s1", "u2", 5, 1)).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.insert_session(a, session("s5", "u2", 1, 1)).await,
        Err(StoreError::Conflict)
    ));

    assert_eq!(s.session(a, "s1").await.unwrap(), Some(s1.clone()));
    assert_eq!(s.session(a, "s5").await.unwrap(), None);
    let listed: Vec<String> = s
        .sessions_of(a, "u1")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ["s2", "s3", "s1"], "newest first");
    assert_eq!(s.sessions_of(a, "nobody").await.unwrap(), []);

    let revoked = s.revoke_session(a, "s1", 50).await.unwrap();
    assert_eq!(
        revoked,
        Some(SessionRow {
            revoked_at_ms: Some(50),
            ..s1.clone()
        })
    );
    assert_eq!(s.revoke_session(a, "s1", 60).await.unwrap(), None);
    assert_eq!(
        s.session(a, "s1").await.unwrap().unwrap().revoked_at_ms,
        Some(50),
        "a second revocation keeps the first time"
    );
    assert_eq!(s.revoke_session(a, "s9", 60).await.unwrap(), None);
    s.revoke_session(a, "s4", 70).await.unwrap().unwrap();
    assert_eq!(sorted(s.revoked_since(a, 50).await.unwrap()), ["s1", "s4"]);
    assert_eq!(s.revoked_since(a, 51).await.unwrap(), ["s4"]);
    assert_eq!(s.revoked_since(a, 71).await.unwrap(), Vec::<String>::new());
}

async fn rotation_replaces_the_secret_and_a_replay_revokes_the_session(
    s: &(impl UserStore + TenantStore),
) {
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    s.insert_session(a, session("s1", "u1", 1, 1))
        .await
        .unwrap();

    let rotated = s
        .rotate_session(a, vec![1; 32], vec![2; 32], 10, 2_000)
        .await
        .unwrap();
    assert_eq!(
        rotated,
        Rotation::Rotated(SessionRow {
            secret_hash: vec![2; 32],
            refreshed_at_ms: 10,
            expires_at_ms: 2_000,
            ..session("s1", "u1", 1, 1)
        })
    );
    assert_eq!(
        s.rotate_session(a, vec![9; 32], vec![3; 32], 11, 2_000)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    // The current secret keeps rotating.
    let Rotation::Rotated(again) = s
        .rotate_session(a, vec![2; 32], vec![3; 32], 12, 3_000)
        .await
        .unwrap()
    else {
        panic!("the current secret must rotate");
    };
    assert_eq!(
        (again.secret_hash, again.expires_at_ms),
        (vec![3; 32], 3_000)
    );
    assert_eq!(s.revoked_since(a, 0).await.unwrap(), Vec::<String>::new());

    // Any retired secret is a replay.
    assert_eq!(
        s.rotate_session(a, vec![1; 32], vec![4; 32], 13, 4_000)
            .await
            .unwrap(),
        Rotation::Reused {
            session_id: "s1".into()
        }
    );
    assert_eq!(
        s.session(a, "s1").await.unwrap().unwrap().revoked_at_ms,
        Some(13)
    );
    // The current secret of a revoked session no longer refreshes; a replay still reports.
    assert_eq!(
        s.rotate_session(a, vec![3; 32], vec![4; 32], 14, 4_000)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        s.rotate_session(a, vec![2; 32], vec![4; 32], 15, 4_000)
            .await
            .unwrap(),
        Rotation::Reused {
            session_id: "s1".into()
        }
    );
    assert_eq!(
        s.session(a, "s1").await.unwrap().unwrap().revoked_at_ms,
        Some(13),
        "the first revocation stands"
    );
    assert_eq!(s.revoked_since(a, 13).await.unwrap(), ["s1"]);

    // An expired session does not refresh.
    s.insert_session(a, session("s2", "u1", 5, 1))
        .await
        .unwrap();
    assert_eq!(
        s.rotate_session(a, vec![5; 32], vec![6; 32], 1_000, 5_000)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    assert_eq!(
        s.session(a, "s2").await.unwrap().unwrap().secret_hash,
        vec![5; 32]
    );
}

async fn deleting_a_user_reports_live_sessions_and_leaves_tombstones(
    s: &(impl UserStore + TenantStore),
) {
    let a = &app();
    s.create_user(
        a,
        user("u1", Some("a@x.io")),
        None,
        Some(identity("wechat", "o1", "u1", Some("un1"))),
        None,
    )
    .await
    .unwrap();
    s.create_user(a, user("u2", None), None, None, None)
        .await
        .unwrap();
    s.insert_session(a, session("s1", "u1", 1, 1))
        .await
        .unwrap();
    s.insert_session(a, session("s2", "u1", 2, 2))
        .await
        .unwrap();
    s.insert_session(a, session("s3", "u1", 3, 3))
        .await
        .unwrap();
    s.insert_session(a, session("s4", "u2", 4, 4))
        .await
        .unwrap();
    s.rotate_session(a, vec![3; 32], vec![7; 32], 4, 1_000)
        .await
        .unwrap();
    s.revoke_session(a, "s2", 5).await.unwrap().unwrap();

    let live = s.delete_user(a, "u1", 7, None).await.unwrap().unwrap();
    assert_eq!(sorted(live), ["s1", "s3"]);
    assert_eq!(
        sorted(s.revoked_since(a, 5).await.unwrap()),
        ["s1", "s2", "s3"],
        "a deleted user's sessions stay revoked"
    );
    assert_eq!(
        s.revoked_since(a, 6).await.unwrap().len(),
        2,
        "live sessions are revoked at the deletion"
    );
    assert_eq!(s.revoked_since(a, 8).await.unwrap(), Vec::<String>::new());

    assert_eq!(s.user(a, "u1").await.unwrap(), None);
    assert_eq!(s.user_by_email(a, "a@x.io").await.unwrap(), None);
    assert_eq!(s.user_by_identity(a, "wechat", "o1").await.unwrap(), None);
    assert_eq!(s.user_by_unionid(a, "wechat", "un1").await.unwrap(), None);
    assert_eq!(s.identity_of(a, "u1", "wechat").await.unwrap(), None);
    assert_eq!(s.session(a, "s1").await.unwrap(), None);
    assert_eq!(s.sessions_of(a, "u1").await.unwrap(), []);
    assert_eq!(
        s.rotate_session(a, vec![3; 32], vec![8; 32], 9, 1_000)
            .await
            .unwrap(),
        Rotation::Unknown,
        "retired secrets go with their sessions"
    );
    // The other user is untouched; the freed email and identity can be taken again.
    assert_eq!(s.sessions_of(a, "u2").await.unwrap().len(), 1);
    s.create_user(
        a,
        user("u3", Some("a@x.io")),
        None,
        Some(identity("wechat", "o1", "u3", None)),
        None,
    )
    .await
    .unwrap();

    assert_eq!(s.delete_user(a, "u1", 8, None).await.unwrap(), None);
    assert_eq!(s.delete_user(a, "nobody", 8, None).await.unwrap(), None);
    // A user without sessions is deleted with nothing to report.
    assert_eq!(s.delete_user(a, "u3", 9, None).await.unwrap(), Some(vec![]));
    assert_eq!(s.user(a, "u3").await.unwrap(), None);
}

/// Many refreshes presenting one secret at once, as a replaying thief racing the client: one
/// rotates, every other sees the secret retired, and the session ends revoked.
async fn concurrent_rotations_of_one_secret_rotate_once<S>(s: Arc<S>)
where
    S: UserStore + TenantStore + 'static,
{
    const ROUNDS: u8 = 10;
    const RACERS: u8 = 12;
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    for round in 0..ROUNDS {
        let id = format!("s{round}");
        s.insert_session(a, session(&id, "u1", round, 1))
            .await
            .unwrap();
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let s = Arc::clone(&s);
                let next = vec![round, racer + 1, 0xAB];
                tokio::spawn(async move {
                    s.rotate_session(&app(), vec![round; 32], next, 10, 2_000)
                        .await
                })
            })
            .collect();
        let mut rotated = 0;
        for racer in racers {
            match racer.await.unwrap().unwrap() {
                Rotation::Rotated(session) => {
                    assert_eq!(session.id, id);
                    rotated += 1;
                }
                Rotation::Reused { session_id } => assert_eq!(session_id, id),
                Rotation::Unknown => panic!("a racer saw the secret as unknown"),
            }
        }
        assert_eq!(rotated, 1, "round {round}: exactly one rotation");
        assert_eq!(
            s.session(a, &id).await.unwrap().unwrap().revoked_at_ms,
            Some(10),
            "the replays revoked the session"
        );
    }
}

fn grant<'a>(appid: &'a str, openid: &'a str, template_id: &'a str) -> GrantKey<'a> {
    GrantKey {
        appid,
        openid,
        template_id,
    }
}

fn remaining(rows: &[GrantRow]) -> Vec<(&str, &str, i64)> {
    rows.iter()
        .map(|g| (g.appid.as_str(), g.template_id.as_str(), g.remaining))
        .collect()
}

async fn grants_accumulate_up_to_the_cap_and_are_taken_one_by_one(
    s: &(impl UserStore + TenantStore),
) {
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    let (t1, t2) = (grant("wx1", "o1", "T1"), grant("wx1", "o1", "T2"));
    s.add_grants(a, "u1", &[t1, t2], 10, 3).await.unwrap();
    s.add_grants(a, "u1", &[t1], 11, 3).await.unwrap();
    assert_eq!(
        remaining(&s.grants_of(a, "u1").await.unwrap()),
        [("wx1", "T1", 2), ("wx1", "T2", 1)]
    );
    // The cap holds however often the user taps "allow".
    for at in 12..20 {
        s.add_grants(a, "u1", &[t2], at, 3).await.unwrap();
    }
    let rows = s.grants_of(a, "u1").await.unwrap();
    assert_eq!(remaining(&rows), [("wx1", "T1", 2), ("wx1", "T2", 3)]);
    assert_eq!(rows[1].updated_at_ms, 19);

    assert!(s.take_grant(a, t1, 30).await.unwrap());
    assert!(s.take_grant(a, t1, 31).await.unwrap());
    assert!(!s.take_grant(a, t1, 32).await.unwrap(), "none left");
    assert!(!s.take_grant(a, grant("wx2", "o1", "T1"), 32).await.unwrap());
    assert!(!s.take_grant(a, grant("wx1", "o2", "T1"), 32).await.unwrap());
    s.return_grant(a, t1, 33, 3).await.unwrap();
    s.return_grant(a, grant("wx9", "o9", "T9"), 33, 3)
        .await
        .unwrap();
    s.clear_grants(a, t2, 34).await.unwrap();
    let rows = s.grants_of(a, "u1").await.unwrap();
    assert_eq!(remaining(&rows), [("wx1", "T1", 1), ("wx1", "T2", 0)]);
    assert_eq!((rows[0].updated_at_ms, rows[1].updated_at_ms), (33, 34));
    s.return_grant(a, t1, 35, 1).await.unwrap();
    assert_eq!(
        remaining(&s.grants_of(a, "u1").await.unwrap())[0],
        ("wx1", "T1", 1),
        "a returned grant keeps to the cap"
    );
    assert!(s.grants_of(a, "nobody").await.unwrap().is_empty());

    // Deleting the user deletes their grants.
    s.delete_user(a, "u1", 40, None).await.unwrap();
    assert!(!s.take_grant(a, t1, 41).await.unwrap());
    assert!(s.grants_of(a, "u1").await.unwrap().is_empty());
    // A grant for a user that does not exist is refused.
    assert!(s.add_grants(a, "u1", &[t1], 42, 3).await.is_err());
}

async fn concurrent_takes_use_each_grant_once<S>(s: Arc<S>)
where
    S: UserStore + TenantStore + 'static,
{
    const GRANTS: i64 = 5;
    const RACERS: usize = 16;
    let a = &app();
    s.create_user(a, user("u1", None), None, None, None)
        .await
        .unwrap();
    for at in 0..GRANTS {
        s.add_grants(a, "u1", &[grant("wx1", "o1", "T")], at, 100)
            .await
            .unwrap();
    }
    let racers: Vec<_> = (0..RACERS)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.take_grant(&app(), grant("wx1", "o1", "T"), 50).await })
        })
        .collect();
    let mut taken = 0;
    for racer in racers {
        taken += i64::from(racer.await.unwrap().unwrap());
    }
    assert_eq!(taken, GRANTS, "each grant taken exactly once");
    assert_eq!(s.grants_of(a, "u1").await.unwrap()[0].remaining, 0);
}

/// One test per scenario and backend.
macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (_dir, store) = super::sqlite().await;
                    super::$scenario(&store).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_rotations_of_one_secret_rotate_once() {
                let (_dir, store) = super::sqlite().await;
                super::concurrent_rotations_of_one_secret_rotate_once(std::sync::Arc::new(store))
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_takes_use_each_grant_once() {
                let (_dir, store) = super::sqlite().await;
                super::concurrent_takes_use_each_grant_once(std::sync::Arc::new(store)).await;
            }
        }

        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let store = super::postgres().await;
                    super::$scenario(&store).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_rotations_of_one_secret_rotate_once() {
                let store = super::postgres().await;
                super::concurrent_rotations_of_one_secret_rotate_once(std::sync::Arc::new(store))
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_takes_use_each_grant_once() {
                let store = super::postgres().await;
                super::concurrent_takes_use_each_grant_once(std::sync::Arc::new(store)).await;
            }
        }
    };
}

conformance!(
    users_are_listed_by_id_and_found_by_search,
    users_are_found_by_identity_unionid_and_email,
    duplicates_conflict_and_leave_nothing,
    identities_link_to_users,
    phone_and_profile_update_existing_users_only,
    sessions_are_stored_listed_and_revoked,
    rotation_replaces_the_secret_and_a_replay_revokes_the_session,
    deleting_a_user_reports_live_sessions_and_leaves_tombstones,
    grants_accumulate_up_to_the_cap_and_are_taken_one_by_one,
);
