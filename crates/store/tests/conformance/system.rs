//! The control plane, functions and sites behave the same on both backends: each scenario is
//! written once against the traits and run on SQLite (a temporary data directory) and on
//! PostgreSQL (a fresh database on the test server, see `postgres::testing`). The concurrent
//! scenarios run on PostgreSQL through two stores on one database, as two nodes would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use cloudlet_store::postgres::testing::TestServer;
use cloudlet_store::postgres::{Postgres, PostgresOptions};
use cloudlet_store::{
    AppName, AppRow, Durability, FunctionLogRow, FunctionRow, FunctionStore, FunctionVersionRow,
    LogQuery, ProviderRow, ScheduleRow, SigningKeyRow, SiteFile, SitePut, SiteRoom, SiteStore,
    StoreError, SystemStore, TenantStore,
};
use tokio::task::JoinSet;

/// Every store a scenario uses, on one backend.
#[derive(Clone)]
struct Stores {
    system: Arc<dyn SystemStore>,
    tenants: Arc<dyn TenantStore>,
    functions: Arc<dyn FunctionStore>,
    sites: Arc<dyn SiteStore>,
    /// The SQLite data directory, removed when the last clone goes.
    _dir: Option<Arc<tempfile::TempDir>>,
}

async fn sqlite() -> Stores {
    let (system, tenants, dir) = crate::backends::sqlite().await;
    Stores {
        system,
        tenants: tenants.clone(),
        functions: tenants.clone(),
        sites: tenants,
        _dir: Some(dir),
    }
}

async fn postgres_at(url: String) -> Stores {
    let store = Arc::new(
        Postgres::open(PostgresOptions {
            url,
            pool_size: 8,
            wait: Duration::from_secs(5),
            durability: Durability::Full,
            max_open: 64,
        })
        .await
        .unwrap(),
    );
    Stores {
        system: store.clone(),
        tenants: store.clone(),
        functions: store.clone(),
        sites: store,
        _dir: None,
    }
}

async fn postgres() -> Stores {
    postgres_at(TestServer::shared().database()).await
}

/// Runs a scenario on each backend, as tests `{scenario}::sqlite` and `{scenario}::postgres`.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$scenario(super::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$scenario(super::postgres().await).await;
            }
        }
    )*};
}

on_both!(
    admin_token_and_apps,
    providers_and_signing_keys,
    schedules,
    functions_and_versions,
    an_app_holds_so_many_functions_even_deployed_at_once,
    logs,
    environment,
    site_files,
    site_room,
    app_settings,
    an_app_never_provisioned_is_no_tenant,
    concurrent_writes,
    buried_providers_outlive_their_app_for_a_while,
);

fn name(text: &str) -> AppName {
    AppName::parse(text).unwrap()
}

fn app_row(name: &str, hash: u8) -> AppRow {
    AppRow {
        name: name.into(),
        created_at_ms: 1_000 + i64::from(hash),
        secret_key_hash: vec![hash; 32],
        secret_key_hint: format!("cls_{name}"),
        secret_key_created_at_ms: 2_000 + i64::from(hash),
    }
}

fn signing_key(kid: &str) -> SigningKeyRow {
    SigningKeyRow {
        kid: kid.into(),
        secret: vec![7; 32],
        created_at_ms: 5,
    }
}

/// An app in the control plane with its own database.
async fn new_app(stores: &Stores, text: &str, hash: u8) -> AppName {
    stores
        .system
        .insert_app(app_row(text, hash), signing_key("k1"))
        .await
        .unwrap();
    let app = name(text);
    stores.tenants.provision(&app).await.unwrap();
    app
}

async fn admin_token_and_apps(stores: Stores) {
    let system = &*stores.system;
    system.ping().await.unwrap();
    assert_eq!(system.admin_token_hash().await.unwrap(), None);
    system.set_admin_token_hash(vec![1, 2, 3]).await.unwrap();
    system.set_admin_token_hash(vec![4, 5]).await.unwrap();
    assert_eq!(system.admin_token_hash().await.unwrap(), Some(vec![4, 5]));

    for (i, text) in ["bb", "b-b", "aa", "b1", "cc"].iter().enumerate() {
        system
            .insert_app(app_row(text, i as u8), signing_key("k1"))
            .await
            .unwrap();
    }
    assert!(matches!(
        system.insert_app(app_row("aa", 9), signing_key("k1")).await,
        Err(StoreError::Conflict)
    ));
    assert!(
        matches!(
            system.insert_app(app_row("dd", 0), signing_key("k1")).await,
            Err(StoreError::Conflict)
        ),
        "a key hash taken by another app is a conflict too"
    );
    assert_eq!(system.app(&name("dd")).await.unwrap(), None, "nothing kept");
    assert_eq!(
        system.app(&name("aa")).await.unwrap(),
        Some(app_row("aa", 2))
    );
    assert_eq!(system.app(&name("zz")).await.unwrap(), None);

    // Names in byte order, three pages of two.
    let first = system.list_apps(None, 2).await.unwrap();
    assert_eq!(first.items, [app_row("aa", 2), app_row("b-b", 1)]);
    assert_eq!(first.next_after.as_deref(), Some("b-b"));
    let second = system.list_apps(Some("b-b"), 2).await.unwrap();
    let names: Vec<_> = second.items.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["b1", "bb"]);
    assert_eq!(second.next_after.as_deref(), Some("bb"));
    let third = system.list_apps(Some("bb"), 2).await.unwrap();
    assert_eq!(third.items, [app_row("cc", 4)]);
    assert_eq!(third.next_after, None);
    let exact = system.list_apps(Some("b1"), 2).await.unwrap();
    assert_eq!(exact.items.len(), 2);
    assert_eq!(exact.next_after, None, "no next page when it ends exactly");
    assert!(
        system
            .list_apps(Some("zz"), 5)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    assert_eq!(
        system.app_by_key_hash(&[4; 32]).await.unwrap().as_deref(),
        Some("cc")
    );
    assert_eq!(system.app_by_key_hash(&[9; 32]).await.unwrap(), None);
    assert!(
        system
            .replace_app_key(&name("cc"), vec![8; 32], "cls_new".into(), 77)
            .await
            .unwrap()
    );
    assert_eq!(system.app_by_key_hash(&[4; 32]).await.unwrap(), None);
    assert_eq!(
        system.app_by_key_hash(&[8; 32]).await.unwrap().as_deref(),
        Some("cc")
    );
    let cc = system.app(&name("cc")).await.unwrap().unwrap();
    assert_eq!(
        (
            cc.secret_key_hash,
            cc.secret_key_hint.as_str(),
            cc.secret_key_created_at_ms,
            cc.created_at_ms
        ),
        (vec![8; 32], "cls_new", 77, 1_004)
    );
    assert!(matches!(
        system
            .replace_app_key(&name("cc"), vec![0; 32], "x".into(), 78)
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(
        !system
            .replace_app_key(&name("zz"), vec![9; 32], "x".into(), 78)
            .await
            .unwrap()
    );

    assert!(system.delete_app(&name("cc")).await.unwrap());
    assert!(!system.delete_app(&name("cc")).await.unwrap());
    assert_eq!(system.app(&name("cc")).await.unwrap(), None);
    assert_eq!(system.app_by_key_hash(&[8; 32]).await.unwrap(), None);
    assert!(system.signing_keys(&name("cc")).await.unwrap().is_empty());
    // The name and the hash are free again.
    system
        .insert_app(app_row("cc", 8), signing_key("k2"))
        .await
        .unwrap();
    system.close().await;
}

fn provider(name: &str, settings: &str, secrets: Option<Vec<u8>>, at: i64) -> ProviderRow {
    ProviderRow {
        provider: name.into(),
        settings: settings.into(),
        sealed_secrets: secrets,
        updated_at_ms: at,
    }
}

async fn providers_and_signing_keys(stores: Stores) {
    let system = &*stores.system;
    let app = name("shop");
    system
        .insert_app(app_row("shop", 1), signing_key("kid-1"))
        .await
        .unwrap();
    assert_eq!(
        system.signing_keys(&app).await.unwrap(),
        [signing_key("kid-1")]
    );
    assert!(
        system
            .signing_keys(&name("ghost"))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(system.provider(&app, "google").await.unwrap(), None);
    assert!(system.providers(&app).await.unwrap().is_empty());
    let google = provider("google", r#"{"client_id":"a"}"#, Some(vec![1, 2]), 10);
    let github = provider("github", "{}", None, 11);
    let apple = provider("Apple", "{}", Some(vec![]), 12);
    for row in [&google, &github, &apple] {
        system.put_provider(&app, row.clone()).await.unwrap();
    }
    assert_eq!(
        system.provider(&app, "google").await.unwrap(),
        Some(google.clone())
    );
    assert_eq!(
        system.providers(&app).await.unwrap(),
        [apple.clone(), github.clone(), google],
        "by name, in byte order"
    );
    let google = provider("google", r#"{"client_id":"b"}"#, None, 20);
    system.put_provider(&app, google.clone()).await.unwrap();
    assert_eq!(
        system.provider(&app, "google").await.unwrap(),
        Some(google.clone())
    );
    assert_eq!(
        system.providers(&app).await.unwrap(),
        [apple, github, google]
    );
    // Not a conflict, although the trait says so: both backends refuse it as a database error.
    assert!(
        system
            .put_provider(&name("ghost"), provider("google", "{}", None, 1))
            .await
            .is_err()
    );

    assert!(system.delete_app(&app).await.unwrap());
    assert!(system.providers(&app).await.unwrap().is_empty());
    assert!(system.signing_keys(&app).await.unwrap().is_empty());
}

async fn buried_providers_outlive_their_app_for_a_while(stores: Stores) {
    let system = &*stores.system;
    let app = name("shop");
    system
        .insert_app(app_row("shop", 1), signing_key("kid-1"))
        .await
        .unwrap();
    let wechat = provider("pay.wechat", r#"{"mchid":"1"}"#, Some(vec![9, 9]), 10);
    let alipay = provider("pay.alipay", "{}", Some(vec![8]), 11);
    let login = provider("wechat", "{}", Some(vec![7]), 12);
    for row in [&wechat, &alipay, &login] {
        system.put_provider(&app, row.clone()).await.unwrap();
    }
    assert_eq!(
        system.buried_provider(&app, "pay.wechat", 0).await.unwrap(),
        None
    );
    assert_eq!(
        system
            .bury_providers(&app, "pay.", 100, 1_000)
            .await
            .unwrap(),
        2
    );
    assert!(system.delete_app(&app).await.unwrap());
    assert_eq!(system.provider(&app, "pay.wechat").await.unwrap(), None);
    // Gone with the app: the login provider. Kept until their time: the merchants.
    assert_eq!(
        system
            .buried_provider(&app, "pay.wechat", 999)
            .await
            .unwrap(),
        Some(wechat.clone())
    );
    assert_eq!(
        system
            .buried_provider(&app, "pay.alipay", 500)
            .await
            .unwrap(),
        Some(alipay)
    );
    assert_eq!(
        system.buried_provider(&app, "wechat", 500).await.unwrap(),
        None
    );
    assert_eq!(
        system
            .buried_provider(&app, "pay.wechat", 1_000)
            .await
            .unwrap(),
        None
    );
    // An app of the same name, made and deleted again: its merchant replaces the first's,
    // and burying forgets what is past its time.
    system
        .insert_app(app_row("shop", 2), signing_key("kid-2"))
        .await
        .unwrap();
    let second = provider("pay.wechat", r#"{"mchid":"2"}"#, Some(vec![1]), 20);
    system.put_provider(&app, second.clone()).await.unwrap();
    assert_eq!(
        system
            .bury_providers(&app, "pay.", 2_000, 3_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        system
            .buried_provider(&app, "pay.wechat", 2_500)
            .await
            .unwrap(),
        Some(second)
    );
    assert_eq!(
        system.buried_provider(&app, "pay.alipay", 0).await.unwrap(),
        None,
        "forgotten"
    );
    // Forgotten on their own too, once their time passed.
    assert_eq!(system.forget_buried(2_999).await.unwrap(), 0);
    assert_eq!(system.forget_buried(3_000).await.unwrap(), 1);
    assert_eq!(
        system.buried_provider(&app, "pay.wechat", 0).await.unwrap(),
        None
    );
}

fn schedule(app: &str, function: &str, index: i64, next_at_ms: i64) -> ScheduleRow {
    ScheduleRow {
        app: name(app),
        function: function.into(),
        index,
        cron: format!("*/{} * * * *", index + 1),
        timezone: "Europe/Paris".into(),
        data: format!(r#"{{"n":{index}}}"#),
        next_at_ms,
    }
}

async fn schedules(stores: Stores) {
    let system = &*stores.system;
    let app = name("cron");
    system
        .insert_app(app_row("cron", 1), signing_key("k"))
        .await
        .unwrap();
    let tick = [
        schedule("cron", "tick", 0, 100),
        schedule("cron", "tick", 1, 300),
    ];
    system
        .replace_schedules(&app, "tick", tick.to_vec())
        .await
        .unwrap();
    let tock = schedule("cron", "tock", 0, 200);
    system
        .replace_schedules(&app, "tock", vec![tock.clone()])
        .await
        .unwrap();

    assert_eq!(
        system.due_schedules(250, 10, 10).await.unwrap(),
        [tick[0].clone(), tock.clone()]
    );
    assert_eq!(
        system.due_schedules(200, 10, 10).await.unwrap(),
        [tick[0].clone(), tock.clone()],
        "due at the very millisecond"
    );
    assert_eq!(
        system.due_schedules(1_000, 1, 10).await.unwrap(),
        [tick[0].clone()]
    );
    assert!(system.due_schedules(99, 10, 10).await.unwrap().is_empty());

    // A compare-and-set: the second claim of one run fails.
    assert!(system.advance_schedule(&tick[0], 400).await.unwrap());
    assert!(!system.advance_schedule(&tick[0], 500).await.unwrap());
    let moved = schedule("cron", "tick", 0, 400);
    assert_eq!(
        system.due_schedules(1_000, 10, 10).await.unwrap(),
        [tock.clone(), tick[1].clone(), moved.clone()]
    );
    assert!(
        !system
            .advance_schedule(&schedule("cron", "gone", 0, 400), 500)
            .await
            .unwrap()
    );

    // Replacing drops the function's schedules that are not in the new list.
    let fresh = schedule("cron", "tick", 0, 150);
    system
        .replace_schedules(&app, "tick", vec![fresh.clone()])
        .await
        .unwrap();
    assert_eq!(
        system.due_schedules(1_000, 10, 10).await.unwrap(),
        [fresh, tock]
    );
    system
        .replace_schedules(&app, "tock", Vec::new())
        .await
        .unwrap();
    assert_eq!(system.due_schedules(1_000, 10, 10).await.unwrap().len(), 1);

    assert!(system.delete_app(&app).await.unwrap());
    assert!(
        system
            .due_schedules(i64::MAX, 10, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // One app with many schedules due takes at most `per_app` of a look: its earliest.
    let (busy, quiet) = (name("busy"), name("quiet"));
    system
        .insert_app(app_row("busy", 2), signing_key("b"))
        .await
        .unwrap();
    system
        .insert_app(app_row("quiet", 3), signing_key("q"))
        .await
        .unwrap();
    let many: Vec<ScheduleRow> = (0..8)
        .map(|i| schedule("busy", "flood", i, 10 + i))
        .collect();
    system
        .replace_schedules(&busy, "flood", many.clone())
        .await
        .unwrap();
    let late = schedule("quiet", "daily", 0, 50);
    system
        .replace_schedules(&quiet, "daily", vec![late.clone()])
        .await
        .unwrap();
    assert_eq!(
        system.due_schedules(1_000, 5, 2).await.unwrap(),
        [many[0].clone(), many[1].clone(), late.clone()]
    );
    assert_eq!(system.due_schedules(1_000, 2, 2).await.unwrap(), many[..2]);
    assert_eq!(
        system.due_schedules(1_000, 100, 100).await.unwrap().len(),
        9
    );
}

fn version_row(source: &str, at: i64) -> FunctionVersionRow {
    FunctionVersionRow {
        version: 0,
        source: format!(r#"{{"main":"{source}"}}"#),
        bundle: format!(r#"{{"code":"{source}"}}"#),
        created_at_ms: at,
    }
}

/// A deploy of one function more than an app may hold is refused, however many come at
/// once; a function it holds deploys again.
async fn an_app_holds_so_many_functions_even_deployed_at_once(stores: Stores) {
    let app = new_app(&stores, "many", 1).await;
    let functions = Arc::clone(&stores.functions);
    for n in 0..cloudlet_store::MAX_FUNCTIONS_PER_APP - 4 {
        functions
            .deploy_function(&app, &format!("f{n}"), "{}".into(), version_row("x", 1))
            .await
            .unwrap();
    }
    let mut deploys = JoinSet::new();
    for n in 0..12 {
        let (functions, app) = (Arc::clone(&functions), app.clone());
        deploys.spawn(async move {
            functions
                .deploy_function(&app, &format!("new{n}"), "{}".into(), version_row("x", 2))
                .await
        });
    }
    let (mut taken, mut refused) = (0, 0);
    while let Some(outcome) = deploys.join_next().await {
        match outcome.unwrap() {
            Ok(_) => taken += 1,
            Err(StoreError::OverQuota) => refused += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!((taken, refused), (4, 8));
    assert_eq!(
        functions.functions(&app).await.unwrap().len(),
        cloudlet_store::MAX_FUNCTIONS_PER_APP
    );
    let again = functions
        .deploy_function(&app, "f0", "{}".into(), version_row("y", 3))
        .await
        .unwrap();
    assert_eq!(again, 2, "a function the app holds deploys again");
}

async fn functions_and_versions(stores: Stores) {
    let app = new_app(&stores, "funcs", 1).await;
    let functions = &*stores.functions;
    assert_eq!(functions.function(&app, "hello").await.unwrap(), None);
    assert!(functions.functions(&app).await.unwrap().is_empty());
    assert!(
        functions
            .function_versions(&app, "hello")
            .await
            .unwrap()
            .is_empty()
    );

    let deploy = |name: &'static str, settings: &'static str, source: &'static str, at: i64| {
        let app = app.clone();
        async move {
            functions
                .deploy_function(&app, name, settings.into(), version_row(source, at))
                .await
                .unwrap()
        }
    };
    assert_eq!(deploy("hello", r#"{"public":false}"#, "v1", 10).await, 1);
    assert_eq!(deploy("hello", r#"{"public":true}"#, "v2", 20).await, 2);
    let (row, version) = functions.function(&app, "hello").await.unwrap().unwrap();
    assert_eq!(
        row,
        FunctionRow {
            name: "hello".into(),
            version: 2,
            settings: r#"{"public":true}"#.into(),
            updated_at_ms: 20,
        }
    );
    assert_eq!(
        version,
        FunctionVersionRow {
            version: 2,
            ..version_row("v2", 20)
        }
    );
    assert_eq!(
        functions.function_versions(&app, "hello").await.unwrap(),
        [(2, 20), (1, 10)]
    );

    // Activating an old version keeps the latest settings.
    assert!(
        functions
            .activate_version(&app, "hello", 1, 30)
            .await
            .unwrap()
    );
    let (row, version) = functions.function(&app, "hello").await.unwrap().unwrap();
    assert_eq!(
        (row.version, row.settings.as_str(), row.updated_at_ms),
        (1, r#"{"public":true}"#, 30)
    );
    assert_eq!(
        version,
        FunctionVersionRow {
            version: 1,
            ..version_row("v1", 10)
        }
    );
    assert!(
        !functions
            .activate_version(&app, "hello", 9, 31)
            .await
            .unwrap()
    );
    assert!(
        !functions
            .activate_version(&app, "nope", 1, 31)
            .await
            .unwrap()
    );
    assert_eq!(
        functions
            .function(&app, "hello")
            .await
            .unwrap()
            .unwrap()
            .0
            .updated_at_ms,
        30
    );
    // A new deploy numbers after the newest version, not the active one.
    assert_eq!(deploy("hello", "{}", "v3", 40).await, 3);

    assert_eq!(deploy("beta", "{}", "b", 50).await, 1);
    assert_eq!(deploy("Alpha", "{}", "a", 60).await, 1);
    let names: Vec<_> = functions
        .functions(&app)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect();
    assert_eq!(
        names,
        [
            ("Alpha".to_owned(), 1),
            ("beta".to_owned(), 1),
            ("hello".to_owned(), 3)
        ]
    );

    assert!(functions.delete_function(&app, "hello").await.unwrap());
    assert!(!functions.delete_function(&app, "hello").await.unwrap());
    assert_eq!(functions.function(&app, "hello").await.unwrap(), None);
    assert!(
        functions
            .function_versions(&app, "hello")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        deploy("hello", "{}", "again", 70).await,
        1,
        "a deleted function starts over"
    );
    assert_eq!(functions.functions(&app).await.unwrap().len(), 3);
}

fn log_entry(request: &str, function: &str, outcome: &str, at: i64) -> FunctionLogRow {
    FunctionLogRow {
        id: 0,
        at_ms: at,
        request_id: request.into(),
        function: function.into(),
        version: at % 3 + 1,
        trigger: "http".into(),
        outcome: outcome.into(),
        micros: at * 10,
        memory_bytes: at * 1_000,
        cold: at % 2 == 0,
        detail: format!(r#"{{"console":["{request}"]}}"#),
    }
}

/// The request ids of log rows.
fn requests(rows: &[FunctionLogRow]) -> Vec<&str> {
    rows.iter().map(|r| r.request_id.as_str()).collect()
}

async fn logs(stores: Stores) {
    let app = new_app(&stores, "logs", 1).await;
    let functions = &*stores.functions;
    let query = |limit: usize| LogQuery {
        limit,
        ..LogQuery::default()
    };
    assert!(
        functions
            .function_logs(&app, query(10))
            .await
            .unwrap()
            .is_empty()
    );

    let entry = |i: i64| {
        let function = if i % 2 == 0 { "a" } else { "b" };
        let outcome = if i % 3 == 0 { "error" } else { "ok" };
        log_entry(&format!("r{i}"), function, outcome, i)
    };
    functions
        .append_logs(&app, (1..=5).map(entry).collect(), 100)
        .await
        .unwrap();
    let all = functions.function_logs(&app, query(100)).await.unwrap();
    assert_eq!(requests(&all), ["r5", "r4", "r3", "r2", "r1"]);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "ids increase");
    assert_eq!(
        all[0],
        FunctionLogRow {
            id: all[0].id,
            ..entry(5)
        }
    );
    assert_eq!(
        all[1],
        FunctionLogRow {
            id: all[1].id,
            ..entry(4)
        }
    );

    // Appending trims to the newest `keep`.
    functions
        .append_logs(&app, (6..=8).map(entry).collect(), 6)
        .await
        .unwrap();
    let all = functions.function_logs(&app, query(100)).await.unwrap();
    assert_eq!(requests(&all), ["r8", "r7", "r6", "r5", "r4", "r3"]);
    let id = |request: &str| all.iter().find(|r| r.request_id == request).unwrap().id;

    let page = functions.function_logs(&app, query(2)).await.unwrap();
    assert_eq!(requests(&page), ["r8", "r7"]);
    let older = LogQuery {
        before_id: Some(id("r7")),
        limit: 2,
        ..LogQuery::default()
    };
    let page = functions.function_logs(&app, older).await.unwrap();
    assert_eq!(requests(&page), ["r6", "r5"]);
    let newer = LogQuery {
        after_id: Some(id("r4")),
        limit: 3,
        ..LogQuery::default()
    };
    let page = functions.function_logs(&app, newer).await.unwrap();
    assert_eq!(requests(&page), ["r5", "r6", "r7"], "oldest first");
    let between = LogQuery {
        after_id: Some(id("r4")),
        before_id: Some(id("r7")),
        limit: 10,
        ..LogQuery::default()
    };
    let page = functions.function_logs(&app, between).await.unwrap();
    assert_eq!(requests(&page), ["r5", "r6"]);
    let of_a = LogQuery {
        function: Some("a".into()),
        limit: 10,
        ..LogQuery::default()
    };
    let page = functions.function_logs(&app, of_a).await.unwrap();
    assert_eq!(requests(&page), ["r8", "r6", "r4"]);
    let errors = LogQuery {
        outcome: Some("error".into()),
        limit: 10,
        ..LogQuery::default()
    };
    let page = functions.function_logs(&app, errors).await.unwrap();
    assert_eq!(requests(&page), ["r6", "r3"]);
    let older_errors_of_a = LogQuery {
        function: Some("a".into()),
        outcome: Some("error".into()),
        before_id: Some(id("r8")),
        limit: 10,
        ..LogQuery::default()
    };
    let page = functions
        .function_logs(&app, older_errors_of_a)
        .await
        .unwrap();
    assert_eq!(requests(&page), ["r6"]);
    let of_nothing = LogQuery {
        function: Some("c".into()),
        limit: 10,
        ..LogQuery::default()
    };
    assert!(
        functions
            .function_logs(&app, of_nothing)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        functions
            .function_logs(&app, query(0))
            .await
            .unwrap()
            .is_empty()
    );

    // Later appends keep increasing the ids; an empty append only trims.
    functions
        .append_logs(&app, vec![entry(9)], 6)
        .await
        .unwrap();
    let all = functions.function_logs(&app, query(100)).await.unwrap();
    assert_eq!(requests(&all), ["r9", "r8", "r7", "r6", "r5", "r4"]);
    assert!(all[0].id > id("r8"));
    functions.append_logs(&app, Vec::new(), 2).await.unwrap();
    let all = functions.function_logs(&app, query(100)).await.unwrap();
    assert_eq!(requests(&all), ["r9", "r8"]);
}

async fn environment(stores: Stores) {
    let app = new_app(&stores, "env", 1).await;
    let functions = &*stores.functions;
    assert!(functions.env(&app).await.unwrap().is_empty());
    assert!(
        functions
            .set_env(&app, "TOKEN", Some(vec![1]))
            .await
            .unwrap()
    );
    assert!(
        functions
            .set_env(&app, "api_key", Some(vec![2, 2]))
            .await
            .unwrap()
    );
    assert!(
        functions
            .set_env(&app, "TOKEN", Some(vec![3]))
            .await
            .unwrap()
    );
    assert_eq!(
        functions.env(&app).await.unwrap(),
        [
            ("TOKEN".to_owned(), vec![3]),
            ("api_key".to_owned(), vec![2, 2])
        ]
    );
    assert!(functions.set_env(&app, "TOKEN", None).await.unwrap());
    assert!(!functions.set_env(&app, "TOKEN", None).await.unwrap());
    assert!(!functions.set_env(&app, "missing", None).await.unwrap());
    assert_eq!(
        functions.env(&app).await.unwrap(),
        [("api_key".to_owned(), vec![2, 2])]
    );
    assert!(
        functions
            .set_env(&app, "empty", Some(Vec::new()))
            .await
            .unwrap()
    );
    assert_eq!(
        functions.env(&app).await.unwrap()[1],
        ("empty".to_owned(), vec![])
    );
}

fn site_file(path: &str, content: &[u8], at: i64) -> SiteFile {
    SiteFile {
        path: path.into(),
        content_type: "text/plain".into(),
        sha256: format!("{:064x}", content.len()),
        size: content.len() as i64,
        updated_at_ms: at,
    }
}

/// Room enough for every site of these tests but the one that tests the room.
const ROOM: SiteRoom = SiteRoom {
    max_files: 100,
    max_bytes: 1 << 20,
};

async fn site_files(stores: Stores) {
    let app = new_app(&stores, "site", 1).await;
    let sites = &*stores.sites;
    assert!(sites.site_files(&app).await.unwrap().is_empty());
    assert_eq!(sites.site_file(&app, "index.html").await.unwrap(), None);

    let index = site_file("index.html", b"<h1>hi</h1>", 1);
    let style = site_file("Style.css", b"body{}", 2);
    let logo = site_file("img/logo.png", &[0, 159, 146, 150, 255], 3);
    sites
        .put_site_file(&app, index.clone(), b"<h1>hi</h1>".to_vec(), ROOM)
        .await
        .unwrap();
    sites
        .put_site_file(&app, style.clone(), b"body{}".to_vec(), ROOM)
        .await
        .unwrap();
    sites
        .put_site_file(&app, logo.clone(), vec![0, 159, 146, 150, 255], ROOM)
        .await
        .unwrap();
    assert_eq!(
        sites.site_files(&app).await.unwrap(),
        [style.clone(), logo.clone(), index.clone()],
        "by path, in byte order"
    );
    assert_eq!(
        sites.site_file(&app, "img/logo.png").await.unwrap(),
        Some((logo.clone(), vec![0, 159, 146, 150, 255]))
    );
    assert_eq!(
        sites.site_file_info(&app, "img/logo.png").await.unwrap(),
        Some(logo.clone()),
        "without its content"
    );

    let index = SiteFile {
        content_type: "text/html".into(),
        ..site_file("index.html", b"<h1>bye</h1>", 4)
    };
    sites
        .put_site_file(&app, index.clone(), b"<h1>bye</h1>".to_vec(), ROOM)
        .await
        .unwrap();
    assert_eq!(
        sites.site_file(&app, "index.html").await.unwrap(),
        Some((index.clone(), b"<h1>bye</h1>".to_vec()))
    );

    assert!(sites.delete_site_file(&app, "Style.css").await.unwrap());
    assert!(!sites.delete_site_file(&app, "Style.css").await.unwrap());
    assert!(!sites.delete_site_file(&app, "style.css").await.unwrap());
    assert_eq!(sites.site_file(&app, "Style.css").await.unwrap(), None);
    assert_eq!(sites.site_file_info(&app, "Style.css").await.unwrap(), None);
    assert_eq!(sites.site_files(&app).await.unwrap(), [logo, index]);
}

/// A site keeps within its room of files and bytes, a file replaced counting only its new
/// size, and puts at once from many clients (nodes, on PostgreSQL) can not pass it together.
async fn site_room(stores: Stores) {
    let app = new_app(&stores, "siteroom", 1).await;
    let sites = &*stores.sites;
    let room = SiteRoom {
        max_files: 3,
        max_bytes: 10,
    };
    let put = |path: &'static str, content: &'static [u8]| {
        sites.put_site_file(&app, site_file(path, content, 1), content.to_vec(), room)
    };
    assert_eq!(put("a", b"1234").await.unwrap(), SitePut::Stored);
    assert_eq!(put("b", b"1234").await.unwrap(), SitePut::Stored);
    assert_eq!(put("c", b"123").await.unwrap(), SitePut::TooManyBytes);
    assert_eq!(put("c", b"12").await.unwrap(), SitePut::Stored);
    assert_eq!(put("d", b"").await.unwrap(), SitePut::TooManyFiles);
    // Replacing a file counts its new size instead of its old one, and no file more.
    assert_eq!(put("a", b"12").await.unwrap(), SitePut::Stored);
    assert_eq!(put("a", b"12345").await.unwrap(), SitePut::TooManyBytes);
    // Full to the byte: 10 bytes, which counting the old size too would make 12.
    assert_eq!(put("a", b"1234").await.unwrap(), SitePut::Stored);
    // A room made smaller than the site: its files may still be replaced, not grown.
    let smaller = SiteRoom {
        max_files: 2,
        max_bytes: 8,
    };
    let put_in = |path: &'static str, content: &'static [u8], room| {
        sites.put_site_file(&app, site_file(path, content, 1), content.to_vec(), room)
    };
    assert_eq!(put_in("c", b"12", smaller).await.unwrap(), SitePut::Stored);
    assert_eq!(
        put_in("c", b"123", smaller).await.unwrap(),
        SitePut::TooManyBytes
    );
    assert_eq!(
        put_in("d", b"", smaller).await.unwrap(),
        SitePut::TooManyFiles
    );
    let files = sites.site_files(&app).await.unwrap();
    let sizes: Vec<(String, i64)> = files.into_iter().map(|f| (f.path, f.size)).collect();
    let expected = [("a", 4), ("b", 4), ("c", 2)].map(|(p, n)| (p.to_owned(), n));
    assert_eq!(sizes, expected, "what was refused changed nothing");
    assert_eq!(
        sites.site_file(&app, "a").await.unwrap().map(|(_, c)| c),
        Some(b"1234".to_vec())
    );

    // Twenty puts of new files at once into a site with room for five more.
    let other = new_app(&stores, "siterace", 2).await;
    let room = SiteRoom {
        max_files: 5,
        max_bytes: 1 << 20,
    };
    let mut puts = JoinSet::new();
    for i in 0..20 {
        let sites = Arc::clone(&stores.sites);
        let other = other.clone();
        puts.spawn(async move {
            let path = format!("f{i}");
            let file = SiteFile {
                path: path.clone(),
                ..site_file("x", b"x", 1)
            };
            sites.put_site_file(&other, file, b"x".to_vec(), room).await
        });
    }
    let mut stored = 0;
    while let Some(put) = puts.join_next().await {
        if put.unwrap().unwrap() == SitePut::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 5);
    assert_eq!(sites.site_files(&other).await.unwrap().len(), 5);
}

async fn app_settings(stores: Stores) {
    let app = new_app(&stores, "settings", 1).await;
    let other = new_app(&stores, "others", 2).await;
    let tenants = &*stores.tenants;
    assert_eq!(tenants.setting(&app, "realtime").await.unwrap(), None);
    tenants
        .put_setting(&app, "realtime", r#"{"channels":{}}"#, 10)
        .await
        .unwrap();
    tenants
        .put_setting(&app, "realtime", r#"{"anonymous":true}"#, 11)
        .await
        .unwrap();
    tenants
        .put_setting(&app, "Realtime", "[]", 12)
        .await
        .unwrap();
    assert_eq!(
        tenants.setting(&app, "realtime").await.unwrap().as_deref(),
        Some(r#"{"anonymous":true}"#)
    );
    assert_eq!(
        tenants.setting(&app, "Realtime").await.unwrap().as_deref(),
        Some("[]")
    );
    assert_eq!(tenants.setting(&other, "realtime").await.unwrap(), None);
}

async fn an_app_never_provisioned_is_no_tenant(stores: Stores) {
    let ghost = name("ghost");
    assert!(matches!(
        stores.functions.functions(&ghost).await,
        Err(StoreError::NoSuchTenant)
    ));
    assert!(matches!(
        stores
            .functions
            .deploy_function(&ghost, "f", "{}".into(), version_row("x", 1))
            .await,
        Err(StoreError::NoSuchTenant)
    ));
    assert!(matches!(
        stores.sites.site_file(&ghost, "index.html").await,
        Err(StoreError::NoSuchTenant)
    ));
    let app = new_app(&stores, "gone", 1).await;
    assert!(stores.system.delete_app(&app).await.unwrap());
    stores.tenants.destroy(&app).await.unwrap();
    assert!(matches!(
        stores.functions.env(&app).await,
        Err(StoreError::NoSuchTenant)
    ));
}

/// Writes that race: each deploy gets its own version, each run of a schedule is claimed once,
/// schedule replacements and log appends never interleave.
async fn concurrent_writes(stores: Stores) {
    concurrently(stores.clone(), stores).await;
}

async fn concurrently(node_a: Stores, node_b: Stores) {
    let app = new_app(&node_a, "busy", 1).await;
    let nodes = [node_a, node_b];
    let node = |i: usize| nodes[i % 2].clone();

    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let (stores, app) = (node(i), app.clone());
        tasks.spawn(async move {
            let row = version_row(&format!("v{i}"), i as i64);
            stores
                .functions
                .deploy_function(&app, "f", "{}".into(), row)
                .await
                .unwrap()
        });
    }
    let mut versions = tasks.join_all().await;
    versions.sort_unstable();
    assert_eq!(versions, (1..=8).collect::<Vec<i64>>());
    let versions = nodes[1]
        .functions
        .function_versions(&app, "f")
        .await
        .unwrap();
    assert_eq!(versions.len(), 8);
    let (row, _) = nodes[1]
        .functions
        .function(&app, "f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.version, 8, "the last deploy is the active one");

    let run = schedule("busy", "f", 0, 100);
    nodes[0]
        .system
        .replace_schedules(&app, "f", vec![run.clone()])
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let (stores, run) = (node(i), run.clone());
        tasks.spawn(async move {
            let claimed = stores
                .system
                .advance_schedule(&run, 1_000 + i as i64)
                .await
                .unwrap();
            claimed.then_some(1_000 + i as i64)
        });
    }
    let claims: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(claims.len(), 1, "one claim of the run: {claims:?}");
    let due = nodes[1]
        .system
        .due_schedules(i64::MAX, 10, 10)
        .await
        .unwrap();
    assert_eq!(due, [schedule("busy", "f", 0, claims[0])]);

    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let (stores, app) = (node(i), app.clone());
        tasks.spawn(async move {
            let at = i as i64;
            let rows = vec![schedule("busy", "f", 0, at), schedule("busy", "f", 1, at)];
            stores.system.replace_schedules(&app, "f", rows).await
        });
    }
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let due = nodes[0]
        .system
        .due_schedules(i64::MAX, 10, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(
        due[0].next_at_ms, due[1].next_at_ms,
        "one replacement won whole"
    );

    let mut tasks = JoinSet::new();
    for i in 0..8 {
        let (stores, app) = (node(i), app.clone());
        tasks.spawn(async move {
            let batch = (0..5)
                .map(|j| log_entry(&format!("b{i}-{j}"), "f", "ok", j))
                .collect();
            stores.functions.append_logs(&app, batch, 30).await
        });
    }
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let query = LogQuery {
        limit: 100,
        ..LogQuery::default()
    };
    let logs = nodes[0].functions.function_logs(&app, query).await.unwrap();
    assert_eq!(logs.len(), 30, "trimmed to exactly `keep`");
    // Newest first, each batch in one run of ids: batches never interleave.
    for chunk in logs.chunks(5) {
        let batch = &chunk[0].request_id[..2];
        let expected: Vec<String> = (0..5).rev().map(|j| format!("{batch}-{j}")).collect();
        assert_eq!(requests(chunk), expected);
        assert_eq!(chunk[0].id - chunk[4].id, 4);
    }
}

/// Two nodes (two pools) on one database race each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_nodes_race_without_losing_writes() {
    let url = TestServer::shared().database();
    let node_a = postgres_at(url.clone()).await;
    let node_b = postgres_at(url).await;
    concurrently(node_a, node_b).await;
}

/// A session outside the stores, to hold locks while stores race for them.
async fn session(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_run_held_by_another_transaction_is_claimed_once() {
    let url = TestServer::shared().database();
    let stores = postgres_at(url.clone()).await;
    let app = new_app(&stores, "cas", 1).await;
    let run = schedule("cas", "f", 0, 100);
    stores
        .system
        .replace_schedules(&app, "f", vec![run.clone()])
        .await
        .unwrap();

    // While another transaction holds the row, both claims read it at `from` and wait.
    let mut holder = session(&url).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM cloudlet.schedules WHERE app = 'cas' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let mut claims = JoinSet::new();
    for to in [1_000, 2_000] {
        let (system, run) = (stores.system.clone(), run.clone());
        claims.spawn(async move { (to, system.advance_schedule(&run, to).await.unwrap()) });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(claims.len(), 2);
    assert!(claims.try_join_next().is_none(), "both claims wait");
    tx.commit().await.unwrap();

    let outcomes = claims.join_all().await;
    let won: Vec<i64> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
    assert_eq!(won.len(), 1, "{outcomes:?}");
    assert_eq!(
        stores.system.due_schedules(i64::MAX, 10, 10).await.unwrap(),
        [schedule("cas", "f", 0, won[0])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deploys_waiting_on_one_function_get_distinct_versions() {
    let url = TestServer::shared().database();
    let stores = postgres_at(url.clone()).await;
    let app = new_app(&stores, "deploys", 1).await;
    let functions = &stores.functions;
    let first = functions
        .deploy_function(&app, "f", "{}".into(), version_row("v1", 1))
        .await
        .unwrap();
    assert_eq!(first, 1);

    let mut holder = session(&url).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "SELECT 1 FROM \"app_deploys\"._functions WHERE name = 'f' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let mut deploys = JoinSet::new();
    for i in 0..2 {
        let (functions, app) = (functions.clone(), app.clone());
        deploys.spawn(async move {
            let row = version_row(&format!("w{i}"), 10 + i);
            functions
                .deploy_function(&app, "f", "{}".into(), row)
                .await
                .unwrap()
        });
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(deploys.try_join_next().is_none(), "both deploys wait");
    tx.commit().await.unwrap();

    let mut versions = deploys.join_all().await;
    versions.sort_unstable();
    assert_eq!(versions, [2, 3]);
    assert_eq!(
        functions.function_versions(&app, "f").await.unwrap().len(),
        3
    );
}

/// Identity ids have gaps where an append was rolled back; trimming still keeps `keep` rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_counts_rows_across_gaps_in_ids() {
    let url = TestServer::shared().database();
    let stores = postgres_at(url.clone()).await;
    let app = new_app(&stores, "gaps", 1).await;
    let functions = &stores.functions;
    let entries = |from: i64| {
        (from..from + 3)
            .map(|i| log_entry(&format!("r{i}"), "f", "ok", i))
            .collect::<Vec<_>>()
    };
    functions.append_logs(&app, entries(0), 5).await.unwrap();
    // Text may not hold NUL on PostgreSQL: the batch fails, and none of it is written.
    let mut bad = entries(10);
    bad[2].detail = "\0".into();
    assert!(functions.append_logs(&app, bad, 5).await.is_err());
    // An append rolled back after drawing its ids leaves a gap.
    let mut raw = session(&url).await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO \"app_gaps\"._function_logs
         (at, request_id, function, version, trigger, outcome, micros, memory, cold, detail)
         SELECT 0, 'x', 'f', 1, 'call', 'ok', 0, 0, false, '{}' FROM generate_series(1, 3)",
        &[],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    functions.append_logs(&app, entries(3), 5).await.unwrap();
    let query = LogQuery {
        limit: 100,
        ..LogQuery::default()
    };
    let logs = functions.function_logs(&app, query).await.unwrap();
    assert_eq!(requests(&logs), ["r5", "r4", "r3", "r2", "r1"]);
    assert!(
        logs[2].id - logs[3].id > 1,
        "a gap of the rolled back append"
    );
}

/// Listings sort by bytes, as on SQLite, even in a database whose collation sorts `apple`
/// before `Zoom`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_sort_by_bytes_whatever_the_database_locale() {
    let server = TestServer::shared();
    let db = format!("icu_{}", std::process::id());
    server.sql(
        "postgres",
        &format!("CREATE DATABASE {db} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"),
    );
    let natural = server.sql(
        &db,
        "SELECT string_agg(x, ',' ORDER BY x) FROM (VALUES ('Zoom'), ('apple')) v (x)",
    );
    assert_eq!(natural.trim(), "apple,Zoom", "the database's own order");

    let stores = postgres_at(server.url(&db)).await;
    let app = new_app(&stores, "locale", 1).await;
    for name in ["apple", "Zoom"] {
        let row = provider(name, "{}", None, 1);
        stores.system.put_provider(&app, row).await.unwrap();
        stores
            .functions
            .deploy_function(&app, name, "{}".into(), version_row(name, 1))
            .await
            .unwrap();
        stores
            .functions
            .set_env(&app, name, Some(vec![1]))
            .await
            .unwrap();
        let file = site_file(name, b"x", 1);
        stores
            .sites
            .put_site_file(&app, file, b"x".to_vec(), ROOM)
            .await
            .unwrap();
    }
    let providers = stores.system.providers(&app).await.unwrap();
    let functions = stores.functions.functions(&app).await.unwrap();
    let env = stores.functions.env(&app).await.unwrap();
    let files = stores.sites.site_files(&app).await.unwrap();
    let bytes_order = ["Zoom", "apple"];
    assert_eq!(
        providers.iter().map(|p| &p.provider).collect::<Vec<_>>(),
        bytes_order
    );
    assert_eq!(
        functions.iter().map(|f| &f.name).collect::<Vec<_>>(),
        bytes_order
    );
    assert_eq!(env.iter().map(|e| &e.0).collect::<Vec<_>>(), bytes_order);
    assert_eq!(
        files.iter().map(|f| &f.path).collect::<Vec<_>>(),
        bytes_order
    );
}
