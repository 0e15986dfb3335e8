//! [`FileStore`] behaves the same on both backends: each scenario is written once against the
//! traits and run on SQLite and on PostgreSQL (`on_sqlite::{scenario}`,
//! `on_postgres::{scenario}`). PostgreSQL's own test completes uploads of one owner from
//! several stores at once, as several nodes would, and the quota must hold exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use cloudlet_query::{Bindings, Limits, Predicate, Schema};
use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::{
    AppName, BucketRow, Condition, FileQuery, FileQuota, FileRow, FileStore, FileUsage, NewFile,
    StoreError, StoredBytes, UserRow, UserStore,
};
use tokio::task::JoinSet;

use crate::backends::{self, add_app, open_postgres};

#[derive(Clone)]
struct Stores {
    files: Arc<dyn FileStore>,
    users: Arc<dyn UserStore>,
    app: AppName,
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn sqlite() -> Stores {
    let (system, tenants, dir) = backends::sqlite().await;
    let app = add_app(&*system, &*tenants, "shop").await;
    Stores {
        files: tenants.clone(),
        users: tenants,
        app,
        _dir: Some(dir),
    }
}

async fn postgres() -> Stores {
    let store = open_postgres(&TestServer::shared().database(), 8).await;
    let app = add_app(&*store, &*store, "shop").await;
    Stores {
        files: store.clone(),
        users: store,
        app,
        _dir: None,
    }
}

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
            async fn concurrent_completions_of_one_owner_hold_the_quota() {
                super::concurrent_completions_of_one_owner_hold_the_quota().await;
            }
        }
    };
}

conformance!(
    buckets_are_declared_replaced_and_deleted,
    an_upload_is_invisible_until_completed_and_then_counted,
    a_completion_past_a_quota_changes_nothing,
    every_deletion_trashes_the_blob_and_uncounts_its_bytes,
    thumbnails_count_in_the_apps_usage_until_their_file_goes,
    files_page_newest_first_and_by_owner,
    rules_narrow_what_a_caller_reaches,
    a_create_rule_refuses_before_the_bytes_and_after,
);

fn bucket(name: &str, settings: &str, at: i64) -> BucketRow {
    BucketRow {
        name: name.into(),
        settings: settings.into(),
        created_at_ms: at,
        updated_at_ms: at,
    }
}

fn new_file(id: &str, bucket: &str, owner: Option<&str>, at: i64) -> NewFile {
    NewFile {
        id: id.into(),
        bucket: bucket.into(),
        owner: owner.map(Into::into),
        name: format!("{id}.jpg"),
        metadata: r#"{"album":"trip"}"#.into(),
        declared_type: "image/jpeg".into(),
        declared_size: 0,
        created_at_ms: at,
    }
}

fn bytes(size: i64) -> StoredBytes {
    StoredBytes {
        content_type: "image/jpeg".into(),
        size,
        sha256: format!("{size:064x}"),
    }
}

async fn add_user(st: &Stores, id: &str) {
    let user = UserRow {
        id: id.into(),
        created_at_ms: 1,
        last_login_at_ms: 1,
        email: None,
        phone: None,
        profile: "{}".into(),
    };
    st.users
        .create_user(&st.app, user, None, None, None)
        .await
        .unwrap();
}

/// Begins and completes an upload without limits.
async fn upload(st: &Stores, id: &str, bucket: &str, owner: Option<&str>, at: i64, size: i64) {
    let f = &st.files;
    f.begin_upload(&st.app, new_file(id, bucket, owner, at), always())
        .await
        .unwrap();
    f.complete_upload(
        &st.app,
        id,
        bytes(size),
        FileQuota::default(),
        always(),
        None,
    )
    .await
    .unwrap();
}

async fn usage(st: &Stores, owner: Option<&str>) -> (i64, i64) {
    let FileUsage { bytes, files } = st.files.file_usage(&st.app, owner).await.unwrap();
    (bytes, files)
}

async fn trashed(st: &Stores) -> Vec<String> {
    st.files.trashed(&st.app, 100).await.unwrap()
}

fn always() -> Condition {
    Condition::always()
}

/// A file row with its metadata written as this test writes JSON: PostgreSQL's `jsonb` spaces
/// it its own way.
fn same_json(mut row: FileRow) -> FileRow {
    let value: serde_json::Value = serde_json::from_str(&row.metadata).unwrap();
    row.metadata = value.to_string();
    row
}

/// `rule` over a file's columns, for `auth` at time 100.
fn rule(rule: &str, auth: Option<&str>) -> Condition {
    use cloudlet_query::FieldType;
    let schema = Schema::new()
        .with("bucket", FieldType::Text)
        .with("name", FieldType::Text)
        .with("type", FieldType::Text)
        .with("size", FieldType::Integer)
        .with("metadata", FieldType::Json);
    let expr = cloudlet_query::parse(rule, Limits::default()).unwrap();
    let predicate = Predicate::new(expr, Arc::new(schema)).unwrap();
    Condition::with_bindings(Bindings {
        auth_id: auth.map(Into::into),
        auth_provider: None,
        now_ms: 100,
        request_data: Default::default(),
    })
    .and(Arc::new(predicate))
}

fn ids(rows: &[FileRow]) -> Vec<&str> {
    rows.iter().map(|r| r.id.as_str()).collect()
}

async fn buckets_are_declared_replaced_and_deleted(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    assert_eq!(f.buckets(a).await.unwrap(), []);
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    f.put_bucket(a, bucket("avatars", "{}", 2)).await.unwrap();
    f.put_bucket(a, bucket("photos", r#"{"max_bytes":5}"#, 3))
        .await
        .unwrap();
    let photos = f.bucket(a, "photos").await.unwrap().unwrap();
    assert_eq!(photos.settings, r#"{"max_bytes":5}"#);
    assert_eq!((photos.created_at_ms, photos.updated_at_ms), (1, 3));
    let names: Vec<String> = f
        .buckets(a)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["avatars", "photos"]);
    assert!(f.delete_bucket(a, "avatars").await.unwrap());
    assert!(!f.delete_bucket(a, "avatars").await.unwrap());
    assert_eq!(f.bucket(a, "avatars").await.unwrap(), None);
}

async fn an_upload_is_invisible_until_completed_and_then_counted(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    assert!(matches!(
        f.begin_upload(a, new_file("f1", "photos", Some("u1"), 10), always())
            .await,
        Err(StoreError::NotFound)
    ));
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    f.begin_upload(a, new_file("f1", "photos", Some("u1"), 10), always())
        .await
        .unwrap();
    assert!(matches!(
        f.begin_upload(a, new_file("f1", "photos", None, 11), always())
            .await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        f.file(a, "f1", always()).await.unwrap(),
        None,
        "pending: not visible"
    );
    assert!(
        f.files_by_id(a, vec!["f1".into()])
            .await
            .unwrap()
            .is_empty(),
        "pending: not found by id either"
    );
    assert_eq!(usage(&st, None).await, (0, 0));

    let done = f
        .complete_upload(a, "f1", bytes(300), FileQuota::default(), always(), None)
        .await
        .unwrap();
    let expected = FileRow {
        id: "f1".into(),
        bucket: "photos".into(),
        owner: Some("u1".into()),
        name: "f1.jpg".into(),
        content_type: "image/jpeg".into(),
        size: 300,
        sha256: format!("{:064x}", 300),
        metadata: r#"{"album":"trip"}"#.into(),
        created_at_ms: 10,
        updated_at_ms: 10,
    };
    assert_eq!(same_json(done), expected);
    let found = f.file(a, "f1", always()).await.unwrap().unwrap();
    assert_eq!(same_json(found), expected);
    assert_eq!(usage(&st, None).await, (300, 1));
    assert_eq!(usage(&st, Some("u1")).await, (300, 1));
    assert!(matches!(
        f.complete_upload(a, "f1", bytes(300), FileQuota::default(), always(), None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        usage(&st, None).await,
        (300, 1),
        "completed once, counted once"
    );
    // An admin upload counts for the app alone.
    upload(&st, "f2", "photos", None, 20, 50).await;
    assert_eq!(usage(&st, None).await, (350, 2));
    assert_eq!(usage(&st, Some("u1")).await, (300, 1));
    assert_eq!(trashed(&st).await, Vec::<String>::new());
    // By id, in one read: the ready ones, each once, unknown ids left out.
    let ids = ["f2", "nope", "f1", "f2"].map(String::from).to_vec();
    let mut found: Vec<String> = f
        .files_by_id(a, ids)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect();
    found.sort();
    assert_eq!(found, ["f1", "f2"]);
    assert!(f.files_by_id(a, Vec::new()).await.unwrap().is_empty());
}

async fn a_completion_past_a_quota_changes_nothing(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    add_user(&st, "u2").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    upload(&st, "f1", "photos", Some("u1"), 1, 60).await;
    let quota = FileQuota {
        app_bytes: Some(1_000),
        app_files: Some(3),
        owner_bytes: Some(100),
        owner_files: None,
    };
    // u1 holds 60 of 100 bytes: 41 more is one too many, 40 fits exactly.
    f.begin_upload(a, new_file("f2", "photos", Some("u1"), 2), always())
        .await
        .unwrap();
    assert!(matches!(
        f.complete_upload(a, "f2", bytes(41), quota, always(), None)
            .await,
        Err(StoreError::OverQuota)
    ));
    assert_eq!(f.file(a, "f2", always()).await.unwrap(), None);
    assert_eq!(usage(&st, Some("u1")).await, (60, 1));
    assert_eq!(usage(&st, None).await, (60, 1));
    let done = f
        .complete_upload(a, "f2", bytes(40), quota, always(), None)
        .await
        .unwrap();
    assert_eq!(done.size, 40);
    assert_eq!(usage(&st, Some("u1")).await, (100, 2));

    // The app's file count: a third file fits, a fourth does not, whoever uploads it.
    f.begin_upload(a, new_file("f3", "photos", Some("u2"), 3), always())
        .await
        .unwrap();
    f.complete_upload(a, "f3", bytes(1), quota, always(), None)
        .await
        .unwrap();
    f.begin_upload(a, new_file("f4", "photos", Some("u2"), 4), always())
        .await
        .unwrap();
    assert!(matches!(
        f.complete_upload(a, "f4", bytes(1), quota, always(), None)
            .await,
        Err(StoreError::OverQuota)
    ));
    assert_eq!(usage(&st, None).await, (101, 3));
    assert_eq!(usage(&st, Some("u2")).await, (1, 1));
    // The refused upload is abandoned: its id goes to the trash.
    assert!(f.abandon_upload(a, "f4").await.unwrap());
    assert_eq!(trashed(&st).await, ["f4"]);
    // A ready file is no pending upload: abandoning it (after a completion whose answer was
    // lost) leaves it, and its blob, alone.
    assert!(!f.abandon_upload(a, "f1").await.unwrap());
    assert!(!f.abandon_upload(a, "f4").await.unwrap(), "once");
    assert_eq!(trashed(&st).await, ["f4"]);
    assert!(f.file(a, "f1", always()).await.unwrap().is_some());
    assert_eq!(
        usage(&st, None).await,
        (101, 3),
        "a pending file was never counted"
    );
}

async fn every_deletion_trashes_the_blob_and_uncounts_its_bytes(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    add_user(&st, "u2").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    f.put_bucket(a, bucket("tmp", "{}", 1)).await.unwrap();
    upload(&st, "f1", "photos", Some("u1"), 1, 10).await;
    upload(&st, "f2", "photos", Some("u2"), 2, 20).await;
    upload(&st, "f3", "photos", Some("u2"), 3, 30).await;
    upload(&st, "f4", "tmp", None, 4, 40).await;
    f.begin_upload(a, new_file("old", "photos", Some("u1"), 5), always())
        .await
        .unwrap();
    f.begin_upload(a, new_file("new", "photos", Some("u1"), 50), always())
        .await
        .unwrap();
    assert_eq!(usage(&st, None).await, (100, 4));

    // A file deleted.
    let gone = f
        .delete_file(a, "f1", always(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.size, 10);
    assert_eq!(f.delete_file(a, "f1", always(), None).await.unwrap(), None);
    assert_eq!(
        f.delete_file(a, "new", always(), None).await.unwrap(),
        None,
        "not ready"
    );
    assert_eq!(trashed(&st).await, ["f1"]);
    assert_eq!(usage(&st, None).await, (90, 3));
    assert_eq!(usage(&st, Some("u1")).await, (0, 0));

    // Its owner's account deleted: their files go by cascade.
    assert!(
        st.users
            .delete_user(a, "u2", 10, None)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(trashed(&st).await, ["f1", "f2", "f3"]);
    assert_eq!(usage(&st, None).await, (40, 1));

    // A bucket deleted, with its files.
    assert!(f.delete_bucket(a, "tmp").await.unwrap());
    assert_eq!(trashed(&st).await, ["f1", "f2", "f3", "f4"]);
    assert_eq!(usage(&st, None).await, (0, 0));

    // Uploads begun before 10 and never completed.
    assert_eq!(f.drop_stale_uploads(a, 10).await.unwrap(), 1);
    assert_eq!(trashed(&st).await, ["f1", "f2", "f3", "f4", "old"]);
    assert!(
        f.complete_upload(a, "new", bytes(5), FileQuota::default(), always(), None)
            .await
            .is_ok()
    );

    // Once their blobs are deleted, the sweep forgets them.
    f.forget_trashed(a, vec!["f1".into(), "f2".into(), "nothing".into()])
        .await
        .unwrap();
    assert_eq!(trashed(&st).await, ["f3", "f4", "old"]);
    assert_eq!(st.files.trashed(a, 2).await.unwrap(), ["f3", "f4"]);
}

async fn thumbnails_count_in_the_apps_usage_until_their_file_goes(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    upload(&st, "f1", "photos", Some("u1"), 1, 100).await;
    f.begin_upload(a, new_file("half", "photos", Some("u1"), 2), always())
        .await
        .unwrap();
    assert!(f.count_thumb(a, "f1", 7).await.unwrap());
    assert!(f.count_thumb(a, "f1", 5).await.unwrap());
    assert!(!f.count_thumb(a, "half", 5).await.unwrap(), "not ready");
    assert!(!f.count_thumb(a, "nothing", 5).await.unwrap());
    // The app's usage, not the owner's.
    assert_eq!(usage(&st, None).await, (112, 1));
    assert_eq!(usage(&st, Some("u1")).await, (100, 1));
    f.delete_file(a, "f1", always(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(usage(&st, None).await, (0, 0));
    assert_eq!(usage(&st, Some("u1")).await, (0, 0));
    assert!(!f.count_thumb(a, "f1", 5).await.unwrap(), "gone");
    assert_eq!(usage(&st, None).await, (0, 0));
}

async fn files_page_newest_first_and_by_owner(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    f.put_bucket(a, bucket("other", "{}", 1)).await.unwrap();
    upload(&st, "a", "photos", Some("u1"), 1, 1).await;
    upload(&st, "b", "photos", None, 2, 1).await;
    upload(&st, "c", "photos", Some("u1"), 2, 1).await;
    upload(&st, "d", "photos", Some("u1"), 3, 1).await;
    upload(&st, "e", "other", Some("u1"), 4, 1).await;
    f.begin_upload(a, new_file("p", "photos", Some("u1"), 9), always())
        .await
        .unwrap();
    let page = |owner: Option<&str>, after: Option<(i64, &str)>, limit| FileQuery {
        bucket: "photos".into(),
        owner: owner.map(Into::into),
        after: after.map(|(at, id)| (at, id.to_owned())),
        limit,
    };
    let first = f.files(a, page(None, None, 3), always()).await.unwrap();
    assert_eq!(ids(&first), ["d", "c", "b"]);
    let second = f
        .files(a, page(None, Some((2, "b")), 3), always())
        .await
        .unwrap();
    assert_eq!(ids(&second), ["a"]);
    let mine = f
        .files(a, page(Some("u1"), None, 10), always())
        .await
        .unwrap();
    assert_eq!(ids(&mine), ["d", "c", "a"]);
    let after = f
        .files(a, page(Some("u1"), Some((2, "c")), 10), always())
        .await
        .unwrap();
    assert_eq!(ids(&after), ["a"]);
}

async fn concurrent_completions_of_one_owner_hold_the_quota() {
    let url = TestServer::shared().database();
    let first = open_postgres(&url, 8).await;
    let app = add_app(&*first, &*first, "shop").await;
    let st = Stores {
        files: first.clone(),
        users: first.clone(),
        app: app.clone(),
        _dir: None,
    };
    add_user(&st, "u1").await;
    st.files
        .put_bucket(&app, bucket("photos", "{}", 1))
        .await
        .unwrap();
    // Four stores, as four nodes; 40 uploads of 10 bytes against a quota of 100.
    let mut nodes = vec![first];
    for _ in 0..3 {
        nodes.push(open_postgres(&url, 8).await);
    }
    for i in 0..40 {
        st.files
            .begin_upload(
                &app,
                new_file(&format!("f{i}"), "photos", Some("u1"), i),
                always(),
            )
            .await
            .unwrap();
    }
    let quota = FileQuota {
        owner_bytes: Some(100),
        ..FileQuota::default()
    };
    let mut runs = JoinSet::new();
    for i in 0..40 {
        let (node, app) = (Arc::clone(&nodes[i % nodes.len()]), app.clone());
        runs.spawn(async move {
            node.complete_upload(&app, &format!("f{i}"), bytes(10), quota, always(), None)
                .await
        });
    }
    let (mut completed, mut refused) = (0, 0);
    while let Some(outcome) = runs.join_next().await {
        match outcome.unwrap() {
            Ok(_) => completed += 1,
            Err(StoreError::OverQuota) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((completed, refused), (10, 30));
    assert_eq!(usage(&st, Some("u1")).await, (100, 10));
    assert_eq!(usage(&st, None).await, (100, 10));
}

async fn rules_narrow_what_a_caller_reaches(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    add_user(&st, "u2").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    upload(&st, "a", "photos", Some("u1"), 1, 10).await;
    upload(&st, "b", "photos", Some("u2"), 2, 2_000).await;
    let all = FileQuery {
        bucket: "photos".into(),
        owner: None,
        after: None,
        limit: 10,
    };
    let owner = "owner = @auth.id";
    let listed = f
        .files(a, all.clone(), rule(owner, Some("u1")))
        .await
        .unwrap();
    assert_eq!(ids(&listed), ["a"]);
    let nobody = f.files(a, all.clone(), rule(owner, None)).await.unwrap();
    assert_eq!(ids(&nobody), Vec::<&str>::new());
    let small = "size < 1000 && type = 'image/jpeg' && metadata.album = 'trip'";
    let listed = f.files(a, all, rule(small, None)).await.unwrap();
    assert_eq!(ids(&listed), ["a"]);
    assert!(
        f.file(a, "b", rule(owner, Some("u1")))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.file(a, "b", rule(owner, Some("u2")))
            .await
            .unwrap()
            .is_some()
    );
    // A delete the rule refuses deletes nothing.
    assert_eq!(
        f.delete_file(a, "b", rule(owner, Some("u1")), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(trashed(&st).await, Vec::<String>::new());
    let gone = f
        .delete_file(a, "b", rule(owner, Some("u2")), None)
        .await
        .unwrap();
    assert_eq!(gone.map(|r| r.id), Some("b".to_owned()));
    assert_eq!(trashed(&st).await, ["b"]);
}

async fn a_create_rule_refuses_before_the_bytes_and_after(st: Stores) {
    let (f, a) = (&st.files, &st.app);
    add_user(&st, "u1").await;
    f.put_bucket(a, bucket("photos", "{}", 1)).await.unwrap();
    let create = "@auth.id != null && type = 'image/jpeg' && size < 100";
    // Anonymous: refused before any byte; nothing is left.
    assert!(matches!(
        f.begin_upload(a, new_file("f1", "photos", None, 1), rule(create, None))
            .await,
        Err(StoreError::CheckFailed)
    ));
    f.begin_upload(
        a,
        new_file("f1", "photos", Some("u1"), 1),
        rule(create, Some("u1")),
    )
    .await
    .unwrap();
    assert_eq!(trashed(&st).await, Vec::<String>::new());
    // The bytes turn out to be a PNG: refused again, nothing counted, still pending.
    let png = StoredBytes {
        content_type: "image/png".into(),
        ..bytes(10)
    };
    assert!(matches!(
        f.complete_upload(
            a,
            "f1",
            png,
            FileQuota::default(),
            rule(create, Some("u1")),
            None
        )
        .await,
        Err(StoreError::CheckFailed)
    ));
    assert_eq!(usage(&st, None).await, (0, 0));
    assert!(f.file(a, "f1", always()).await.unwrap().is_none());
    let done = f
        .complete_upload(
            a,
            "f1",
            bytes(10),
            FileQuota::default(),
            rule(create, Some("u1")),
            None,
        )
        .await
        .unwrap();
    assert_eq!((done.content_type.as_str(), done.size), ("image/jpeg", 10));
    assert_eq!(usage(&st, Some("u1")).await, (10, 1));
}
