//! Collections, records and rules, for two users and an admin, through real HTTP on SQLite.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Expect, TestApp};

struct Scene {
    t: TestApp,
    key: String,
    alice: String,
    bob: String,
    alice_id: String,
    bob_id: String,
}

/// The scene's `todos` collection, with `rules`.
fn todos(rules: Value) -> Value {
    json!({
        "fields": [
            { "name": "title", "type": "text", "required": true, "max_length": 200 },
            { "name": "done", "type": "bool", "default": false },
            { "name": "priority", "type": "integer", "min": 0, "max": 5 },
            { "name": "meta", "type": "json" },
            { "name": "due", "type": "datetime" }
        ],
        "indexes": [{ "fields": ["done"] }],
        "rules": rules
    })
}

async fn scene() -> Scene {
    let t = TestApp::start().await;
    let key = t.create_app("notes").await;
    t.admin(Method::PUT, "/v1/admin/apps/notes/auth/providers/dev")
        .json(&json!({ "enabled": true }))
        .expect(StatusCode::OK)
        .await;
    let login = |user: &str| {
        t.request(Method::POST, "/v1/apps/notes/auth/sessions")
            .json(&json!({ "provider": "dev", "user": user }))
    };
    let alice = login("alice").expect(StatusCode::CREATED).await;
    let bob = login("bob").expect(StatusCode::CREATED).await;
    let created = t
        .admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&todos(json!({})))
        .expect(StatusCode::CREATED)
        .await;
    assert_eq!(
        created["rules"]["list"], "owner = @auth.id",
        "the default: only the owner"
    );
    Scene {
        alice_id: alice["user"]["id"].as_str().unwrap().to_owned(),
        bob_id: bob["user"]["id"].as_str().unwrap().to_owned(),
        alice: alice["access_token"].as_str().unwrap().to_owned(),
        bob: bob["access_token"].as_str().unwrap().to_owned(),
        key,
        t,
    }
}

impl Scene {
    fn records(&self, method: Method, token: Option<&str>, path: &str) -> reqwest::RequestBuilder {
        let request = self.t.request(
            method,
            &format!("/v1/apps/notes/collections/todos/records{path}"),
        );
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn create(&self, token: &str, body: Value) -> Value {
        self.records(Method::POST, Some(token), "")
            .json(&body)
            .expect(StatusCode::CREATED)
            .await
    }

    async fn list(&self, token: Option<&str>, query: &str) -> Value {
        self.records(Method::GET, token, &format!("?{query}"))
            .expect(StatusCode::OK)
            .await
    }
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_user_sees_and_changes_only_their_own_records() {
    let s = scene().await;
    for (title, priority) in [("milk", 1), ("rent", 4), ("dog", 2)] {
        let record = s
            .create(&s.alice, json!({ "title": title, "priority": priority }))
            .await;
        assert_eq!(record["owner"], s.alice_id.as_str());
        assert_eq!(record["done"], false, "the default applies");
        assert!(record["created_at"].as_str().unwrap().ends_with('Z'));
    }
    let bobs = s
        .create(
            &s.bob,
            json!({ "title": "bob's", "meta": { "tags": ["x"] } }),
        )
        .await;
    s.create(&s.bob, json!({ "title": "bob's too" })).await;

    assert_eq!(s.list(Some(&s.alice), "count=true").await["total"], 3);
    assert_eq!(s.list(Some(&s.bob), "count=true").await["total"], 2);
    assert_eq!(
        s.list(None, "count=true").await["total"],
        0,
        "nobody sees nothing"
    );
    assert_eq!(
        s.list(Some(&s.key), "count=true").await["total"],
        5,
        "the secret key sees all"
    );

    // Another user's record answers exactly as a missing one.
    let theirs = format!("/{}", bobs["id"].as_str().unwrap());
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "done": true }))),
        (Method::DELETE, None),
    ] {
        let mut request = s.records(method.clone(), Some(&s.alice), &theirs);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .expect_error(StatusCode::NOT_FOUND, "record_not_found")
            .await;
        s.records(method, Some(&s.alice), "/no-such-id")
            .json(&json!({}))
            .expect_error(StatusCode::NOT_FOUND, "record_not_found")
            .await;
    }
    // A filter can not widen the rule: it is ANDed into it.
    let widened = s
        .list(
            Some(&s.alice),
            &format!(
                "filter={}",
                urlencode(&format!("owner = '{}' || true", s.bob_id))
            ),
        )
        .await;
    assert!(
        titles(&widened).iter().all(|t| !t.starts_with("bob")),
        "{widened}"
    );
    let bobs_view = s
        .records(Method::GET, Some(&s.bob), &theirs)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(bobs_view["meta"], json!({ "tags": ["x"] }));

    // The owner may change and delete.
    let updated = s
        .records(Method::PATCH, Some(&s.bob), &theirs)
        .json(&json!({ "done": true }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(updated["done"], true);
    assert_eq!(updated["title"], "bob's");
    let response = s
        .records(Method::DELETE, Some(&s.bob), &theirs)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.list(Some(&s.bob), "count=true").await["total"], 1);
    s.t.stop().await;
}

#[tokio::test]
async fn filters_sorts_and_cursor_pages() {
    let s = scene().await;
    for (i, title) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
        let body =
            json!({ "title": title, "priority": i % 3, "done": i % 2 == 0, "meta": { "n": i } });
        s.create(&s.alice, body).await;
    }
    let page = s
        .list(
            Some(&s.alice),
            &format!(
                "filter={}&sort=-priority,title",
                urlencode("done = true && priority >= 1")
            ),
        )
        .await;
    assert_eq!(titles(&page), ["c", "e"]);
    let page = s
        .list(
            Some(&s.alice),
            &format!(
                "filter={}&sort=title",
                urlencode("meta.n > 4 || title ~ 'B'")
            ),
        )
        .await;
    assert_eq!(titles(&page), ["b", "f", "g"]);

    let mut seen = Vec::new();
    let mut query = "sort=-priority,title&limit=3".to_owned();
    loop {
        let page = s.list(Some(&s.alice), &query).await;
        seen.extend(titles(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("sort=-priority,title&limit=3&cursor={cursor}"),
            None => break,
        }
        // A record created between pages does not shift the pages.
        s.create(&s.alice, json!({ "title": "zz", "priority": 0 }))
            .await;
    }
    assert_eq!(&seen[..7], ["c", "f", "b", "e", "a", "d", "g"]);
    let offset = s.list(Some(&s.alice), "sort=title&limit=2&offset=2").await;
    assert_eq!(titles(&offset), ["c", "d"]);
    s.t.stop().await;
}

#[tokio::test]
async fn bad_records_bad_queries_and_bypass_attempts_get_their_codes() {
    let s = scene().await;
    let post = |body: Value| s.records(Method::POST, Some(&s.alice), "").json(&body);
    for (body, code) in [
        (
            json!({ "title": "x", "owner": "someone" }),
            "read_only_field",
        ),
        (json!({ "title": "x", "id": "mine" }), "read_only_field"),
        (
            json!({ "title": "x", "created_at": "2020-01-01T00:00:00Z" }),
            "read_only_field",
        ),
        (json!({ "title": "x", "colour": "red" }), "unknown_field"),
        (json!({ "priority": 1 }), "missing_field"),
        (json!({ "title": 42 }), "invalid_field_value"),
        (json!({ "title": ["x"] }), "invalid_field_value"),
        (
            json!({ "title": "x", "priority": 9 }),
            "invalid_field_value",
        ),
        (
            json!({ "title": "x", "priority": 1.5 }),
            "invalid_field_value",
        ),
        (
            json!({ "title": "x", "due": "tomorrow" }),
            "invalid_field_value",
        ),
        (json!({ "title": "x".repeat(201) }), "invalid_field_value"),
    ] {
        post(body.clone())
            .expect_error(StatusCode::BAD_REQUEST, code)
            .await;
    }
    s.records(Method::POST, None, "")
        .json(&json!({ "title": "x" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let mine = s.create(&s.alice, json!({ "title": "kept" })).await;
    s.records(
        Method::PATCH,
        Some(&s.alice),
        &format!("/{}", mine["id"].as_str().unwrap()),
    )
    .json(&json!({ "title": null }))
    .expect_error(StatusCode::BAD_REQUEST, "missing_field")
    .await;
    s.records(
        Method::PATCH,
        Some(&s.alice),
        &format!("/{}", mine["id"].as_str().unwrap()),
    )
    .json(&json!({ "owner": s.bob_id }))
    .expect_error(StatusCode::BAD_REQUEST, "read_only_field")
    .await;

    for (query, code) in [
        ("filter=title%20%3D", "invalid_filter"),
        ("filter=nope%20%3D%201", "unknown_field"),
        ("filter=priority%20%3D%20'high'", "type_mismatch"),
        ("filter=title%20%3D%20'x''%20OR%201%3D1", "invalid_filter"),
        ("sort=title%3B%20DROP%20TABLE%20r_todos", "invalid_sort"),
        ("sort=meta", "invalid_sort"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("limit=501", "invalid_query"),
        ("limit=0", "invalid_query"),
        ("colour=red", "invalid_query"),
    ] {
        s.records(Method::GET, Some(&s.alice), &format!("?{query}"))
            .expect_error(StatusCode::BAD_REQUEST, code)
            .await;
    }
    let long = urlencode(&format!("title = '{}'", "x".repeat(5000)));
    s.records(Method::GET, Some(&s.alice), &format!("?filter={long}"))
        .expect_error(StatusCode::BAD_REQUEST, "filter_too_long")
        .await;
    // Nothing above changed a row.
    assert_eq!(titles(&s.list(Some(&s.alice), "").await), ["kept"]);
    assert_eq!(s.list(Some(&s.key), "count=true").await["total"], 1);
    s.t.stop().await;
}

#[tokio::test]
async fn collections_declare_their_rules_and_constraints() {
    let s = scene().await;
    let put = |name: &str, body: Value| {
        s.t.admin(
            Method::PUT,
            &format!("/v1/admin/apps/notes/collections/{name}"),
        )
        .json(&body)
    };
    // Public reading, signed-in writing, a unique field.
    put(
        "posts",
        json!({
            "fields": [{ "name": "slug", "type": "text", "unique": true, "required": true }],
            "rules": { "list": "", "view": "" }
        }),
    )
    .expect(StatusCode::CREATED)
    .await;
    let posts = |token: Option<&str>| {
        let request =
            s.t.request(Method::POST, "/v1/apps/notes/collections/posts/records");
        match token {
            Some(token) => request.bearer_auth(token.to_owned()),
            None => request,
        }
    };
    posts(Some(&s.alice))
        .json(&json!({ "slug": "hello" }))
        .expect(StatusCode::CREATED)
        .await;
    posts(Some(&s.bob))
        .json(&json!({ "slug": "hello" }))
        .expect_error(StatusCode::CONFLICT, "unique_violation")
        .await;
    let public =
        s.t.request(Method::GET, "/v1/apps/notes/collections/posts/records")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(
        public["items"].as_array().unwrap().len(),
        1,
        "anyone may list"
    );

    // Locked: only the admin token and the secret key.
    put(
        "audit",
        json!({
            "fields": [{ "name": "line", "type": "text" }],
            "rules": { "list": null, "view": null, "create": null, "update": null, "delete": null }
        }),
    )
    .expect(StatusCode::CREATED)
    .await;
    let audit = "/v1/apps/notes/collections/audit/records";
    s.t.request(Method::POST, audit)
        .bearer_auth(&s.alice)
        .json(&json!({ "line": "x" }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    s.t.request(Method::POST, audit)
        .bearer_auth(&s.key)
        .json(&json!({ "line": "by the server" }))
        .expect(StatusCode::CREATED)
        .await;
    let seen =
        s.t.request(Method::GET, audit)
            .bearer_auth(&s.alice)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(seen["items"].as_array().unwrap().len(), 0);

    // A create rule on the written data.
    put(
        "votes",
        json!({
            "fields": [{ "name": "stars", "type": "integer" }],
            "rules": { "create": "@auth.id != null && @request.data.stars <= 5" }
        }),
    )
    .expect(StatusCode::CREATED)
    .await;
    let votes = "/v1/apps/notes/collections/votes/records";
    s.t.request(Method::POST, votes)
        .bearer_auth(&s.alice)
        .json(&json!({ "stars": 5 }))
        .expect(StatusCode::CREATED)
        .await;
    s.t.request(Method::POST, votes)
        .bearer_auth(&s.alice)
        .json(&json!({ "stars": 6 }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;

    // Definitions are checked; the same one again is a no-op; another is refused.
    for (body, code) in [
        (
            json!({ "fields": [{ "name": "Bad Name", "type": "text" }] }),
            "invalid_collection",
        ),
        (
            json!({ "fields": [{ "name": "owner", "type": "text" }] }),
            "invalid_collection",
        ),
        (
            json!({ "fields": [{ "name": "x", "type": "colour" }] }),
            "invalid_body",
        ),
        (
            json!({ "rules": { "list": "nope = 1" } }),
            "invalid_collection",
        ),
        (json!({ "rules": { "peek": "" } }), "invalid_collection"),
        (
            json!({ "fields": [{ "name": "n", "type": "integer", "default": "one" }] }),
            "invalid_collection",
        ),
    ] {
        let status = if code == "invalid_body" {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        put("broken", body).expect_error(status, code).await;
    }
    put("votes", json!({ "fields": [{ "name": "stars", "type": "integer" }], "rules": { "create": "@auth.id != null && @request.data.stars <= 5" } }))
        .expect(StatusCode::OK)
        .await;
    put("votes", json!({ "fields": [] }))
        .expect_error(StatusCode::CONFLICT, "destructive_change")
        .await;
    let listed =
        s.t.admin(Method::GET, "/v1/admin/apps/notes/collections")
            .expect(StatusCode::OK)
            .await;
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "posts", "todos", "votes"]);
    let response =
        s.t.admin(Method::DELETE, "/v1/admin/apps/notes/collections/votes")
            .send()
            .await
            .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    s.t.request(Method::GET, votes)
        .bearer_auth(&s.alice)
        .expect_error(StatusCode::NOT_FOUND, "collection_not_found")
        .await;
    s.t.request(Method::GET, "/v1/apps/ghost/collections/todos/records")
        .expect_error(StatusCode::NOT_FOUND, "app_not_found")
        .await;
    s.t.stop().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn collections_alter_without_rewriting_and_lose_data_only_when_forced() {
    let s = scene().await;
    let first = s
        .create(&s.alice, json!({ "title": "kept", "priority": 3 }))
        .await;
    let id = format!("/{}", first["id"].as_str().unwrap());
    let put = |body: Value| {
        s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
            .json(&body)
    };
    let fields = |extra: Value| {
        let mut fields = vec![
            json!({ "name": "title", "type": "text", "required": true, "max_length": 200 }),
            json!({ "name": "done", "type": "bool", "default": false }),
            json!({ "name": "priority", "type": "integer", "min": 0, "max": 5 }),
            json!({ "name": "meta", "type": "json" }),
            json!({ "name": "due", "type": "datetime" }),
        ];
        if let Value::Array(more) = extra {
            fields.extend(more);
        }
        fields
    };

    // A new field and an open list rule: no row rewritten, the record still there.
    let altered = put(json!({
        "fields": fields(json!([{ "name": "tags", "type": "json" }])),
        "indexes": [{ "fields": ["done"] }],
        "rules": { "list": "" }
    }))
    .expect(StatusCode::OK)
    .await;
    assert_eq!(altered["version"], 2);
    let seen = s
        .records(Method::GET, Some(&s.alice), &id)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (
            seen["title"].as_str(),
            seen["priority"].as_i64(),
            seen["tags"].is_null()
        ),
        (Some("kept"), Some(3), true)
    );
    assert_eq!(
        s.list(None, "count=true").await["total"],
        1,
        "the list rule changed"
    );

    // Dropping a field or changing a type loses values: only with force.
    let without_priority: Vec<Value> = fields(json!([]))
        .into_iter()
        .filter(|f| f["name"] != "priority")
        .collect();
    put(json!({ "fields": without_priority }))
        .expect_error(StatusCode::CONFLICT, "destructive_change")
        .await;
    let mut retyped = fields(json!([]));
    retyped[0] = json!({ "name": "title", "type": "integer" });
    put(json!({ "fields": retyped }))
        .expect_error(StatusCode::CONFLICT, "destructive_change")
        .await;
    assert_eq!(
        s.records(Method::GET, Some(&s.alice), &id)
            .expect(StatusCode::OK)
            .await["priority"],
        3
    );
    put(json!({ "fields": without_priority, "force": true }))
        .expect(StatusCode::OK)
        .await;
    let seen = s
        .records(Method::GET, Some(&s.alice), &id)
        .expect(StatusCode::OK)
        .await;
    assert!(seen.get("priority").is_none(), "{seen}");
    s.create(&s.alice, json!({ "title": "kept" })).await;

    // A unique constraint over duplicate values is refused, and nothing changes.
    let mut unique_title: Vec<Value> = without_priority.clone();
    unique_title[0] = json!({ "name": "title", "type": "text", "required": true, "unique": true });
    put(json!({ "fields": unique_title }))
        .expect_error(StatusCode::CONFLICT, "unique_violation")
        .await;
    let shown =
        s.t.admin(Method::GET, "/v1/admin/apps/notes/collections/todos")
            .expect(StatusCode::OK)
            .await;
    assert_eq!(shown["version"], 3);
    s.t.stop().await;
}

#[tokio::test]
async fn a_batch_writes_everything_or_nothing() {
    let s = scene().await;
    let mine = s.create(&s.alice, json!({ "title": "old" })).await;
    let bobs = s.create(&s.bob, json!({ "title": "bob's" })).await;
    let batch = |operations: Value| {
        s.t.request(Method::POST, "/v1/apps/notes/batch")
            .bearer_auth(&s.alice)
            .json(&json!({ "operations": operations }))
    };
    let done = batch(json!([
        { "op": "create", "collection": "todos", "data": { "title": "new" } },
        { "op": "update", "collection": "todos", "id": mine["id"], "data": { "done": true } },
    ]))
    .expect(StatusCode::OK)
    .await;
    assert_eq!(done["results"][0]["title"], "new");
    assert_eq!(done["results"][1]["done"], true);

    // The third operation touches bob's record: nothing of the batch is written.
    let before = s.list(Some(&s.alice), "count=true").await["total"].clone();
    let refused = batch(json!([
        { "op": "create", "collection": "todos", "data": { "title": "ghost" } },
        { "op": "delete", "collection": "todos", "id": mine["id"] },
        { "op": "update", "collection": "todos", "id": bobs["id"], "data": { "title": "mine now" } },
    ]))
    .expect_error(StatusCode::NOT_FOUND, "record_not_found")
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("operation 2:"),
        "{refused}"
    );
    assert_eq!(s.list(Some(&s.alice), "count=true").await["total"], before);
    s.records(
        Method::GET,
        Some(&s.alice),
        &format!("/{}", mine["id"].as_str().unwrap()),
    )
    .expect(StatusCode::OK)
    .await;
    assert_eq!(
        s.records(
            Method::GET,
            Some(&s.bob),
            &format!("/{}", bobs["id"].as_str().unwrap())
        )
        .expect(StatusCode::OK)
        .await["title"],
        "bob's"
    );

    for (operations, status, code) in [
        (json!([]), StatusCode::BAD_REQUEST, "invalid_batch"),
        (
            json!([{ "op": "create", "collection": "todos", "data": { "owner": "x", "title": "t" } }]),
            StatusCode::BAD_REQUEST,
            "read_only_field",
        ),
        (
            json!([{ "op": "create", "collection": "nope", "data": {} }]),
            StatusCode::NOT_FOUND,
            "collection_not_found",
        ),
        (
            json!([{ "op": "upsert", "collection": "todos" }]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        batch(operations).expect_error(status, code).await;
    }
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({ "op": "create", "collection": "todos", "data": { "title": format!("t{i}") } }))
        .collect();
    batch(Value::Array(too_many))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_batch")
        .await;
    s.t.stop().await;
}

#[tokio::test]
async fn an_update_answers_only_what_the_callers_view_rule_shows() {
    let s = scene().await;
    let alices = s
        .create(
            &s.alice,
            json!({ "title": "secret", "meta": { "pin": 1234 } }),
        )
        .await;
    let id = alices["id"].as_str().unwrap();
    // Anyone may update (mark a record done); only its owner views it (the default).
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&todos(json!({ "update": "" })))
        .expect(StatusCode::OK)
        .await;
    let empty = s
        .records(Method::PATCH, Some(&s.bob), &format!("/{id}"))
        .json(&json!({}))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        empty,
        json!({ "id": id }),
        "an empty update reads nothing out"
    );
    let batch =
        s.t.request(Method::POST, "/v1/apps/notes/batch")
            .bearer_auth(&s.bob)
            .json(&json!({ "operations": [
            { "op": "update", "collection": "todos", "id": id, "data": { "done": true } },
            { "op": "create", "collection": "todos", "data": { "title": "bob's own" } },
        ] }))
            .expect(StatusCode::OK)
            .await;
    assert_eq!(batch["results"][0], json!({ "id": id }), "{batch}");
    assert_eq!(batch["results"][1]["title"], "bob's own", "{batch}");
    // The owner, who may view it, is answered the whole record, bob's change in it.
    let own = s
        .records(Method::PATCH, Some(&s.alice), &format!("/{id}"))
        .json(&json!({ "priority": 2 }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (&own["title"], &own["done"], &own["meta"]["pin"]),
        (&json!("secret"), &json!(true), &json!(1234))
    );
    s.t.stop().await;
}

/// `@request.data.x = null` asks whether the body leaves x out: a body that sets x to null sets
/// it (clears it), so an owner may not clear what only the admin sets. `!= null` asks for a
/// value, which null is not.
#[tokio::test]
async fn a_rule_that_keeps_a_field_unchanged_refuses_setting_it_to_null() {
    let s = scene().await;
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/todos")
        .json(&todos(json!({
            "update": "owner = @auth.id && @request.data.priority = null && @request.data.meta = null",
            "create": "@auth.id != null && @request.data.due != null",
        })))
        .expect(StatusCode::OK)
        .await;
    let created = s
        .create(
            &s.alice,
            json!({ "title": "ship", "due": "2026-12-24T00:00:00Z" }),
        )
        .await;
    s.records(Method::POST, Some(&s.alice), "")
        .json(&json!({ "title": "no date", "due": null }))
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    let id = created["id"].as_str().unwrap();
    // The admin hides it from its owner's edits with a priority and a note.
    s.t.admin(
        Method::PATCH,
        &format!("/v1/apps/notes/collections/todos/records/{id}"),
    )
    .json(&json!({ "priority": 5, "meta": { "by": "moderator" } }))
    .expect(StatusCode::OK)
    .await;
    for cleared in [json!({ "priority": null }), json!({ "meta": null })] {
        s.records(Method::PATCH, Some(&s.alice), &format!("/{id}"))
            .json(&cleared)
            .expect_error(StatusCode::NOT_FOUND, "record_not_found")
            .await;
    }
    let renamed = s
        .records(Method::PATCH, Some(&s.alice), &format!("/{id}"))
        .json(&json!({ "title": "shipped" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (&renamed["title"], &renamed["priority"], &renamed["meta"]),
        (&json!("shipped"), &json!(5), &json!({ "by": "moderator" }))
    );
    s.t.stop().await;
}

/// A page ends early at 4 MiB of stored records, with a cursor to the rest; expansions that
/// would read and copy more than 16 MiB into a page are refused, and fewer records at once pass.
#[tokio::test]
async fn a_page_of_large_records_ends_at_its_bytes_and_large_expansions_are_refused() {
    let s = scene().await;
    let big = "x".repeat(250_000);
    for i in 0..20 {
        s.create(
            &s.alice,
            json!({ "title": format!("t{i:02}"), "meta": big }),
        )
        .await;
    }
    let first = s.list(Some(&s.alice), "limit=100&sort=title").await;
    let count = first["items"].as_array().unwrap().len();
    assert!(
        (10..20).contains(&count),
        "{count} records on the first page"
    );
    let cursor = first["next_cursor"].as_str().expect("a cursor to the rest");
    let rest = s
        .list(
            Some(&s.alice),
            &format!("limit=100&sort=title&cursor={cursor}"),
        )
        .await;
    let mut seen = titles(&first);
    seen.extend(titles(&rest));
    let expected: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    assert_eq!(seen, expected, "every record once, in order");
    assert_eq!(rest["next_cursor"], Value::Null);
    // Paging by offset, a page cut short would skip records: it is refused instead.
    s.records(
        Method::GET,
        Some(&s.alice),
        "?limit=100&offset=0&sort=title",
    )
    .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
    .await;
    let by_offset = s
        .list(Some(&s.alice), "limit=10&offset=10&sort=title")
        .await;
    assert_eq!(titles(&by_offset), expected[10..]);
    // Past 4 MiB but the last page: nothing left out, nothing refused.
    let last = s
        .list(Some(&s.alice), "limit=100&offset=3&sort=title")
        .await;
    assert_eq!(titles(&last), expected[3..]);

    // A hundred small records pointing at one large one: each would hold a copy of it.
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/links")
        .json(&json!({ "fields": [{ "name": "to", "type": "relation", "collection": "todos" }] }))
        .expect(StatusCode::CREATED)
        .await;
    let target = first["items"][0]["id"].as_str().unwrap();
    let links = "/v1/apps/notes/collections/links/records";
    for _ in 0..100 {
        s.t.request(Method::POST, links)
            .bearer_auth(&s.alice)
            .json(&json!({ "to": target }))
            .expect(StatusCode::CREATED)
            .await;
    }
    let list = |query: &str| {
        s.t.request(Method::GET, &format!("{links}?{query}"))
            .bearer_auth(&s.alice)
    };
    list("limit=100&expand=to")
        .expect_error(StatusCode::BAD_REQUEST, "invalid_expand")
        .await;
    let fewer = list("limit=20&expand=to").expect(StatusCode::OK).await;
    assert!(
        fewer["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|link| link["expand"]["to"]["meta"] == big)
    );
    s.t.stop().await;
}

/// A body is at most 256 KiB, and so is what updates make of a record: one field at a time
/// must not grow it past that. An update that leaves it smaller is always taken.
#[tokio::test]
async fn updates_may_not_grow_a_record_past_its_size_limit() {
    let s = scene().await;
    let fields = json!([
        { "name": "a", "type": "json" },
        { "name": "b", "type": "json" },
        { "name": "c", "type": "json" }
    ]);
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/parts")
        .json(&json!({ "fields": fields }))
        .expect(StatusCode::CREATED)
        .await;
    let parts = "/v1/apps/notes/collections/parts/records";
    let big = "x".repeat(200_000);
    let created =
        s.t.request(Method::POST, parts)
            .bearer_auth(&s.alice)
            .json(&json!({ "a": big }))
            .expect(StatusCode::CREATED)
            .await;
    let record = format!("{parts}/{}", created["id"].as_str().unwrap());
    let patch = |body: Value| {
        s.t.request(Method::PATCH, &record)
            .bearer_auth(&s.alice)
            .json(&body)
    };
    // Measured as written: PostgreSQL answers 1e308 as 309 digits, 10 KB of them as 530 KB.
    let huge = vec![1e308; 1_700];
    patch(json!({ "c": huge })).expect(StatusCode::OK).await;
    patch(json!({ "c": null })).expect(StatusCode::OK).await;
    // 400 KB stored: within the 512 KiB an update may grow a record to; 600 KB is not.
    patch(json!({ "b": big })).expect(StatusCode::OK).await;
    patch(json!({ "c": big }))
        .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "record_too_large")
        .await;
    let kept =
        s.t.request(Method::GET, &record)
            .bearer_auth(&s.alice)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(
        kept["c"],
        Value::Null,
        "nothing of the refused update was kept"
    );
    patch(json!({ "a": "small" })).expect(StatusCode::OK).await;
    let grown = patch(json!({ "c": big })).expect(StatusCode::OK).await;
    assert_eq!((&grown["a"], &grown["c"]), (&json!("small"), &json!(big)));
    s.t.stop().await;
}

#[tokio::test]
async fn a_create_the_rule_refuses_never_tells_whether_a_unique_value_exists() {
    let s = scene().await;
    // Only the app's backend adds people; nobody may list them.
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/people")
        .json(&json!({
            "fields": [{ "name": "email", "type": "text", "unique": true }],
            "rules": { "create": "@auth.id = 'nobody'", "list": null, "view": null }
        }))
        .expect(StatusCode::CREATED)
        .await;
    s.t.request(Method::POST, "/v1/apps/notes/collections/people/records")
        .bearer_auth(&s.key)
        .json(&json!({ "email": "ceo@example.com" }))
        .expect(StatusCode::CREATED)
        .await;
    for email in ["ceo@example.com", "nobody@example.com"] {
        s.t.request(Method::POST, "/v1/apps/notes/collections/people/records")
            .bearer_auth(&s.alice)
            .json(&json!({ "email": email }))
            .expect_error(StatusCode::FORBIDDEN, "forbidden")
            .await;
        let batch =
            s.t.request(Method::POST, "/v1/apps/notes/batch")
                .bearer_auth(&s.alice)
                .json(&json!({ "operations": [
                { "op": "create", "collection": "people", "data": { "email": email } },
            ] }))
                .expect_error(StatusCode::FORBIDDEN, "forbidden")
                .await;
        assert!(
            batch["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("operation 0:")
        );
    }
    // Whoever may create still learns of a duplicate: that is what a unique field is.
    s.t.request(Method::POST, "/v1/apps/notes/collections/people/records")
        .bearer_auth(&s.key)
        .json(&json!({ "email": "ceo@example.com" }))
        .expect_error(StatusCode::CONFLICT, "unique_violation")
        .await;
    s.t.stop().await;
}

#[tokio::test]
async fn fields_pick_and_relations_expand_under_the_targets_view_rules() {
    let s = scene().await;
    let put = |name: &str, body: Value| {
        s.t.admin(
            Method::PUT,
            &format!("/v1/admin/apps/notes/collections/{name}"),
        )
        .json(&body)
        .expect(StatusCode::CREATED)
    };
    put("teams", json!({ "fields": [{ "name": "name", "type": "text" }], "rules": { "list": "", "view": "" } })).await;
    put("people", json!({
        "fields": [{ "name": "name", "type": "text" }, { "name": "team", "type": "relation", "collection": "teams" }],
        "rules": { "list": "", "view": "" }
    }))
    .await;
    put(
        "secrets",
        json!({ "fields": [{ "name": "text", "type": "text" }] }),
    )
    .await;
    put(
        "tasks",
        json!({ "fields": [
        { "name": "title", "type": "text" },
        { "name": "assignee", "type": "relation", "collection": "people" },
        { "name": "secret", "type": "relation", "collection": "secrets" },
        { "name": "meta", "type": "json" }
    ] }),
    )
    .await;
    let as_key = |method: Method, path: &str| s.t.request(method, path).bearer_auth(&s.key);
    let team = as_key(Method::POST, "/v1/apps/notes/collections/teams/records")
        .json(&json!({ "name": "Core" }))
        .expect(StatusCode::CREATED)
        .await;
    let person = as_key(Method::POST, "/v1/apps/notes/collections/people/records")
        .json(&json!({ "name": "Pat", "team": team["id"] }))
        .expect(StatusCode::CREATED)
        .await;
    let bobs_secret =
        s.t.request(Method::POST, "/v1/apps/notes/collections/secrets/records")
            .bearer_auth(&s.bob)
            .json(&json!({ "text": "bob only" }))
            .expect(StatusCode::CREATED)
            .await;
    let task = s.t
        .request(Method::POST, "/v1/apps/notes/collections/tasks/records")
        .bearer_auth(&s.alice)
        .json(&json!({ "title": "ship", "assignee": person["id"], "secret": bobs_secret["id"], "meta": { "a": { "b": 1 }, "c": 2 } }))
        .expect(StatusCode::CREATED)
        .await;
    let task_path = format!(
        "/v1/apps/notes/collections/tasks/records/{}",
        task["id"].as_str().unwrap()
    );
    let get = |query: &str| {
        s.t.request(Method::GET, &format!("{task_path}?{query}"))
            .bearer_auth(&s.alice)
    };

    let expanded = get("expand=assignee.team,secret")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(expanded["expand"]["assignee"]["name"], "Pat");
    assert_eq!(
        expanded["expand"]["assignee"]["expand"]["team"]["name"],
        "Core"
    );
    assert!(
        expanded["expand"].get("secret").is_none(),
        "bob's secret stays bob's: {expanded}"
    );

    let picked = get("fields=title,meta.a.b").expect(StatusCode::OK).await;
    assert_eq!(
        picked,
        json!({ "id": task["id"], "title": "ship", "meta": { "a": { "b": 1 } } })
    );
    // Asked twice, or inside another asked-for path: each value comes once.
    let repeated = get("fields=title,meta.a.b,title,meta,meta.a")
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        repeated,
        get("fields=title,meta").expect(StatusCode::OK).await
    );
    let many: Vec<String> = (0..33).map(|i| format!("meta.k{i}")).collect();
    get(&format!("fields={}", many.join(",")))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_fields")
        .await;
    get(&format!("fields={}", many[..32].join(",")))
        .expect(StatusCode::OK)
        .await;
    get(&format!("expand={}", ["assignee"; 40].join(",")))
        .expect(StatusCode::OK)
        .await;
    let listed =
        s.t.request(
            Method::GET,
            "/v1/apps/notes/collections/tasks/records?fields=title,expand&expand=assignee",
        )
        .bearer_auth(&s.alice)
        .expect(StatusCode::OK)
        .await;
    assert_eq!(listed["items"][0]["expand"]["assignee"]["name"], "Pat");
    assert!(listed["items"][0].get("assignee").is_none());

    for (query, code) in [
        ("expand=title", "invalid_expand"),
        ("expand=assignee.team.x", "invalid_expand"),
        ("fields=nope", "invalid_fields"),
        ("fields=title.x", "invalid_fields"),
    ] {
        get(query).expect_error(StatusCode::BAD_REQUEST, code).await;
    }
    s.t.admin(Method::PUT, "/v1/admin/apps/notes/collections/loose")
        .json(&json!({ "fields": [{ "name": "ref", "type": "relation" }] }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_collection")
        .await;
    s.t.stop().await;
}
