//! The server's life: idle apps closing, the bound on open apps, restarts, the admin token and
//! the data directory lock.

use std::time::{Duration, Instant};

use cloudlet_server::{AdminTokenSetup, StartError};
use reqwest::{Method, StatusCode};

use crate::support::{ADMIN_TOKEN, Expect, TestApp};

#[tokio::test]
async fn app_databases_open_on_demand_stay_bounded_and_close_when_idle() {
    let t = TestApp::builder()
        .config(|c| {
            c.apps.max_open = 2;
            c.apps.idle_timeout_secs = 1;
        })
        .start()
        .await;
    for name in ["one", "two", "three"] {
        t.create_app(name).await;
    }
    assert_eq!(t.open_apps().await, 0, "creating an app leaves it closed");
    for name in ["one", "two", "three"] {
        let path = format!("/v1/apps/{name}/health");
        t.request(Method::GET, &path).expect(StatusCode::OK).await;
    }
    assert_eq!(
        t.open_apps().await,
        2,
        "never more than max_open once requests are done"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while t.open_apps().await > 0 {
        assert!(Instant::now() < deadline, "idle apps were not closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A closed app opens again on its next request.
    t.request(Method::GET, "/v1/apps/one/health")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(t.open_apps().await, 1);
    t.stop().await;
}

#[tokio::test]
async fn apps_and_the_admin_token_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestApp::builder()
        .data_dir(dir.path())
        .without_admin_token()
        .start()
        .await;
    let AdminTokenSetup::Generated(token) = first.running().admin_token() else {
        panic!("a first start without CLOUDLET_ADMIN_TOKEN generates a token");
    };
    let token = token.clone();
    let key = first
        .request(Method::POST, "/v1/admin/apps")
        .bearer_auth(&token)
        .json(&serde_json::json!({ "name": "kept" }))
        .expect(StatusCode::CREATED)
        .await["secret_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !first.stored_anywhere(token.as_bytes()),
        "the admin token is stored only as a hash"
    );
    first.stop().await;

    let second = TestApp::builder()
        .data_dir(dir.path())
        .without_admin_token()
        .start()
        .await;
    assert_eq!(second.running().admin_token(), &AdminTokenSetup::Unchanged);
    for bearer in [&token, &key] {
        second
            .request(Method::GET, "/v1/admin/apps/kept")
            .bearer_auth(bearer)
            .expect(StatusCode::OK)
            .await;
    }
    second.stop().await;

    // CLOUDLET_ADMIN_TOKEN replaces a stored token: the way back in after losing it.
    let third = TestApp::builder().data_dir(dir.path()).start().await;
    assert_eq!(
        third.running().admin_token(),
        &AdminTokenSetup::FromEnvironment
    );
    third
        .request(Method::GET, "/v1/admin/apps")
        .bearer_auth(&token)
        .expect_error(StatusCode::UNAUTHORIZED, "invalid_credentials")
        .await;
    third
        .request(Method::GET, "/v1/admin/apps")
        .bearer_auth(ADMIN_TOKEN)
        .expect(StatusCode::OK)
        .await;
    third.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused_and_harms_nothing() {
    let first = TestApp::start().await;
    first.create_app("safe").await;
    let err = TestApp::builder()
        .data_dir(&first.data_dir)
        .try_start()
        .await
        .err()
        .expect("the second server must not start");
    assert!(matches!(err, StartError::Store(_)), "{err}");
    assert!(
        err.to_string()
            .contains("in use by another cloudlet process"),
        "{err}"
    );
    first
        .admin(Method::GET, "/v1/apps/safe/health")
        .expect(StatusCode::OK)
        .await;
    first.stop().await;
}

#[tokio::test]
async fn a_weak_admin_token_from_the_environment_is_refused() {
    let err = TestApp::builder()
        .admin_token("short")
        .try_start()
        .await
        .err()
        .expect("a 5-character admin token must be refused");
    assert!(err.to_string().contains("shorter than 16"), "{err}");
}

#[tokio::test]
async fn the_public_url_is_checked_at_start_and_names_the_server_in_the_contract() {
    for bad in [
        "api.example.com",
        "ftp://example.com",
        "https://example.com/?a=1",
    ] {
        let err = TestApp::builder()
            .config(|c| c.http.public_url = bad.into())
            .try_start()
            .await
            .err()
            .unwrap_or_else(|| panic!("{bad} must be refused"));
        assert!(err.to_string().contains("http.public_url"), "{err}");
    }
    let t = TestApp::builder()
        .config(|c| c.http.public_url = "https://api.example.com/cloud/".into())
        .start()
        .await;
    let contract = t
        .request(Method::GET, "/v1/openapi.json")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        contract["servers"][0]["url"],
        "https://api.example.com/cloud"
    );
    t.stop().await;
}

#[tokio::test]
async fn an_admin_token_with_a_dot_is_refused_since_it_would_read_as_a_user_token() {
    let err = TestApp::builder()
        .admin_token("review.admin.token.0123456789")
        .try_start()
        .await
        .err()
        .expect("a dotted admin token must be refused");
    assert!(err.to_string().contains("dot"), "{err}");
}

#[tokio::test]
async fn a_master_key_from_the_environment_replaces_the_file_and_must_match_one_that_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let t = TestApp::builder()
        .data_dir(dir.path())
        .master_key(key)
        .start()
        .await;
    t.create_app("sealed").await;
    let grant = t
        .request(Method::POST, "/v1/apps/sealed/auth/users")
        .json(
            &serde_json::json!({ "email": "kim@example.com", "password": "correct horse battery" }),
        )
        .expect(StatusCode::CREATED)
        .await;
    let access = grant["access_token"].as_str().unwrap().to_owned();
    assert!(
        !dir.path().join("master.key").exists(),
        "a given key is not written to the data directory"
    );
    t.stop().await;

    // A key that is not 64 hex digits is refused, naming the variable.
    let err = TestApp::builder()
        .data_dir(dir.path())
        .master_key("short")
        .try_start()
        .await
        .err()
        .expect("a malformed key is refused");
    assert!(err.to_string().contains("CLOUDLET_MASTER_KEY"), "{err}");

    // The same key again: tokens of the app sealed under it still verify after a restart.
    let t = TestApp::builder()
        .data_dir(dir.path())
        .master_key(key)
        .start()
        .await;
    let me = t
        .request(Method::GET, "/v1/apps/sealed/auth/user")
        .bearer_auth(&access)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(me["email"], "kim@example.com", "{me}");
    t.stop().await;

    // A data directory whose own master.key sealed its secrets refuses a different key.
    let other = tempfile::tempdir().unwrap();
    let t = TestApp::builder().data_dir(other.path()).start().await;
    t.stop().await;
    assert!(other.path().join("master.key").exists());
    let err = TestApp::builder()
        .data_dir(other.path())
        .master_key(key)
        .try_start()
        .await
        .err()
        .expect("a key that differs from master.key is refused");
    assert!(err.to_string().contains("master.key"), "{err}");
}

#[tokio::test]
async fn what_a_node_cached_of_an_app_is_dropped_when_the_app_idles_out() {
    let t = TestApp::builder()
        .config(|c| c.apps.idle_timeout_secs = 2)
        .start()
        .await;
    let bob = t.alice_and_bob("shop").await;
    assert_eq!(t.listed("shop", &bob).await, 0, "owners only");

    // Another node opened the list rule and its ring was lost: the database says so, this
    // node's cache does not.
    match &t.database {
        None => {
            let db = rusqlite::Connection::open(t.data_dir.join("apps/shop/data.db")).unwrap();
            db.execute(
                "UPDATE _collections SET definition = json_set(definition, '$.rules.list', '')
                 WHERE name = 'todos'",
                [],
            )
            .unwrap();
        }
        Some(url) => {
            let server = cloudlet_store::postgres::testing::TestServer::shared();
            server.sql(
                cloudlet_store::postgres::testing::TestServer::database_name(url),
                "UPDATE app_shop._collections
                 SET definition = jsonb_set(definition::jsonb, '{rules,list}', '\"\"')::text
                 WHERE name = 'todos'",
            );
        }
    }
    assert_eq!(
        t.listed("shop", &bob).await,
        0,
        "the cached rule holds while the app is in use"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.open_apps().await > 0 {
        assert!(Instant::now() < deadline, "the app did not idle out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The caches go just after the database closes: a request in between may still find them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.listed("shop", &bob).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the rule was not read again after the app idled out"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.stop().await;
}
