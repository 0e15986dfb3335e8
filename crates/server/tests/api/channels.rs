//! Channels on the realtime socket, over real WebSockets: the app's rules deciding who joins,
//! publishes and sees presence; one diff per presence change; direct messages to every socket
//! of a user; catching up after a reconnect (and `reset` beyond what is kept); anonymous
//! sockets only where the app allows; the server side's routes; and every refusal's code.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::realtime::{Scene, Socket, closed, next, quiet, scene, send};
use crate::support::Expect;

const SETTINGS: &str = "/v1/admin/apps/notes/realtime";

async fn configure(s: &Scene, settings: Value) -> Value {
    s.t.admin(Method::PUT, SETTINGS)
        .json(&settings)
        .expect(StatusCode::OK)
        .await
}

/// Rooms anyone logged in joins, publishes to and sees; each user's own `user:` channel.
async fn rooms(s: &Scene) {
    configure(
        s,
        json!({
            "direct": "to != @auth.id",
            "channels": {
                "room": { "rules": {
                    "join": "@auth.id != null",
                    "publish": "@auth.id != null",
                    "presence": "@auth.id != null"
                } },
                "user": { "rules": { "join": "key = @auth.id" } }
            }
        }),
    )
    .await;
}

async fn user_id(s: &Scene, token: &str) -> String {
    let me =
        s.t.request(Method::GET, "/v1/apps/notes/auth/user")
            .bearer_auth(token)
            .expect(StatusCode::OK)
            .await;
    me["id"].as_str().unwrap().to_owned()
}

/// Subscribes `id` to `channel`; the answer (`subscribed`, or the error).
async fn join(socket: &mut Socket, id: &str, body: Value) -> Value {
    let mut message = json!({ "type": "subscribe", "id": id });
    message
        .as_object_mut()
        .unwrap()
        .extend(body.as_object().unwrap().clone());
    send(socket, message).await;
    next(socket).await
}

async fn joined(socket: &mut Socket, id: &str, channel: &str) -> Value {
    let answer = join(socket, id, json!({ "channel": channel })).await;
    assert_eq!(
        (answer["type"].as_str(), answer["id"].as_str()),
        (Some("subscribed"), Some(id)),
        "{answer}"
    );
    answer
}

fn refused(answer: &Value, code: &str) {
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["code"], code, "{answer}");
}

async fn admin_publish(s: &Scene, channel: &str, data: Value) -> u64 {
    let answer =
        s.t.admin(
            Method::POST,
            &format!("/v1/admin/apps/notes/realtime/channels/{channel}/messages"),
        )
        .json(&json!({ "data": data }))
        .expect(StatusCode::OK)
        .await;
    answer["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn channels_carry_messages_to_those_their_rules_let_in() {
    let s = scene().await;
    rooms(&s).await;
    let alice_id = user_id(&s, &s.alice).await;
    let mut alice = s.open(&s.alice).await;
    let mut bob = s.open(&s.bob).await;
    let first = joined(&mut alice, "r", "room:1").await;
    assert_eq!(first["seq"], 0);
    joined(&mut bob, "r", "room:1").await;
    joined(&mut alice, "me", &format!("user:{alice_id}")).await;

    refused(
        &join(
            &mut bob,
            "x",
            json!({ "channel": format!("user:{alice_id}") }),
        )
        .await,
        "forbidden",
    );
    refused(
        &join(&mut bob, "x", json!({ "channel": "nope:1" })).await,
        "channel_not_found",
    );
    refused(
        &join(&mut bob, "x", json!({ "channel": "Room 1" })).await,
        "invalid_channel",
    );
    refused(
        &join(&mut bob, "r2", json!({ "channel": "room:1" })).await,
        "subscription_exists",
    );
    refused(
        &join(
            &mut bob,
            "x",
            json!({ "channel": "room:2", "collection": "todos" }),
        )
        .await,
        "invalid_message",
    );

    // A user's publish reaches every subscriber, numbered by the channel, from its user.
    send(
        &mut alice,
        json!({ "type": "publish", "id": "p1", "channel": "room:1", "data": { "hi": 1 } }),
    )
    .await;
    let mut answers = [next(&mut alice).await, next(&mut alice).await];
    answers.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(answers[0]["type"], "message");
    assert_eq!(
        (&answers[1]["type"], &answers[1]["id"], &answers[1]["seq"]),
        (&json!("published"), &json!("p1"), &json!(1))
    );
    let heard = next(&mut bob).await;
    assert_eq!(
        heard,
        json!({ "type": "message", "channel": "room:1", "seq": 1, "from": alice_id, "data": { "hi": 1 } })
    );
    assert_eq!(answers[0], heard);

    // The server's publishes go through whatever the rules say; `from` is null.
    assert_eq!(
        admin_publish(&s, &format!("user:{alice_id}"), json!("for you")).await,
        1
    );
    let mine = next(&mut alice).await;
    assert_eq!(
        (&mine["channel"], &mine["from"], &mine["data"]),
        (
            &json!(format!("user:{alice_id}")),
            &Value::Null,
            &json!("for you")
        )
    );
    quiet(&mut bob).await;

    // Bob may not publish to Alice's channel (its publish rule is left out: the server's).
    send(
        &mut bob,
        json!({ "type": "publish", "id": "p", "channel": format!("user:{alice_id}"), "data": 1 }),
    )
    .await;
    refused(&next(&mut bob).await, "forbidden");

    // After an unsubscribe nothing more arrives.
    send(&mut bob, json!({ "type": "unsubscribe", "id": "r" })).await;
    assert_eq!(next(&mut bob).await["type"], "unsubscribed");
    assert_eq!(admin_publish(&s, "room:1", json!(2)).await, 2);
    assert_eq!(next(&mut alice).await["seq"], 2);
    quiet(&mut bob).await;
}

#[tokio::test]
async fn presence_changes_cost_one_diff_and_are_listed_in_pages() {
    let s = scene().await;
    rooms(&s).await;
    let bob_id = user_id(&s, &s.bob).await;
    let mut alice = s.open(&s.alice).await;
    let mut bob = s.open(&s.bob).await;
    let answer = join(
        &mut alice,
        "r",
        json!({ "channel": "room:1", "presence": true }),
    )
    .await;
    assert_eq!(answer["type"], "subscribed");
    joined(&mut bob, "r", "room:1").await;

    send(
        &mut bob,
        json!({ "type": "track", "id": "r", "state": { "typing": false } }),
    )
    .await;
    assert_eq!(
        next(&mut bob).await,
        json!({ "type": "tracked", "id": "r" })
    );
    let diff = next(&mut alice).await;
    assert_eq!(diff["type"], "presence_diff");
    assert_eq!(diff["join"]["user"], bob_id.as_str());
    assert_eq!(diff["join"]["state"], json!({ "typing": false }));
    let member = diff["join"]["member"].as_str().unwrap().to_owned();
    // Bob does not watch presence: he hears of no diff.
    quiet(&mut bob).await;

    // A new state is a join again, for the same member.
    send(
        &mut bob,
        json!({ "type": "track", "id": "r", "state": { "typing": true } }),
    )
    .await;
    next(&mut bob).await;
    let diff = next(&mut alice).await;
    assert_eq!(
        (&diff["join"]["member"], &diff["join"]["state"]["typing"]),
        (&json!(member), &json!(true))
    );

    // The list, from the socket and from the server side, alike.
    send(
        &mut alice,
        json!({ "type": "presence", "id": "q", "channel": "room:1" }),
    )
    .await;
    let page = next(&mut alice).await;
    assert_eq!(
        (&page["type"], &page["id"], &page["count"]),
        (&json!("presence"), &json!("q"), &json!(1))
    );
    assert_eq!(page["members"][0]["member"], member.as_str());
    assert_eq!(page["next"], Value::Null);
    let listed =
        s.t.admin(
            Method::GET,
            "/v1/admin/apps/notes/realtime/channels/room:1/presence?limit=1",
        )
        .expect(StatusCode::OK)
        .await;
    assert_eq!(
        (&listed["count"], &listed["members"], &listed["next"]),
        (&page["count"], &page["members"], &page["next"])
    );
    s.t.admin(
        Method::GET,
        "/v1/admin/apps/notes/realtime/channels/room:1/presence?limit=0",
    )
    .expect_error(StatusCode::BAD_REQUEST, "invalid_query")
    .await;

    // Bob's socket closing is one leave.
    drop(bob);
    let diff = next(&mut alice).await;
    assert_eq!(
        diff,
        json!({ "type": "presence_diff", "channel": "room:1", "leave": { "member": member } })
    );
    send(
        &mut alice,
        json!({ "type": "presence", "id": "q", "channel": "room:1" }),
    )
    .await;
    assert_eq!(next(&mut alice).await["count"], 0);

    // Refusals: presence where the rule refuses it, a state too large or not an object, a
    // track on a subscription that is no channel's.
    configure(
        &s,
        json!({ "channels": { "room": { "rules": { "join": "" } } } }),
    )
    .await;
    let ended = next(&mut alice).await;
    assert_eq!(
        (&ended["type"], &ended["sub"], &ended["code"]),
        (&json!("ended"), &json!("r"), &json!("forbidden"))
    );
    refused(
        &join(
            &mut alice,
            "p",
            json!({ "channel": "room:2", "presence": true }),
        )
        .await,
        "forbidden",
    );
    joined(&mut alice, "r", "room:2").await;
    send(
        &mut alice,
        json!({ "type": "track", "id": "r", "state": { "big": "x".repeat(1100) } }),
    )
    .await;
    refused(&next(&mut alice).await, "invalid_message");
    send(
        &mut alice,
        json!({ "type": "track", "id": "r", "state": [1] }),
    )
    .await;
    refused(&next(&mut alice).await, "invalid_message");
    send(
        &mut alice,
        json!({ "type": "subscribe", "id": "t", "collection": "todos" }),
    )
    .await;
    assert_eq!(next(&mut alice).await["type"], "subscribed");
    send(
        &mut alice,
        json!({ "type": "track", "id": "t", "state": {} }),
    )
    .await;
    refused(&next(&mut alice).await, "invalid_message");
    send(
        &mut alice,
        json!({ "type": "presence", "channel": "room:2" }),
    )
    .await;
    refused(&next(&mut alice).await, "forbidden");
    send(
        &mut alice,
        json!({ "type": "presence", "id": "q", "channel": "room:2", "limit": 0 }),
    )
    .await;
    refused(&next(&mut alice).await, "invalid_message");
    send(&mut alice, json!({ "type": "untrack", "id": "not an id" })).await;
    refused(&next(&mut alice).await, "invalid_message");
}

#[tokio::test]
async fn a_client_that_comes_back_gets_what_it_missed_once_or_a_reset() {
    let s = scene().await;
    configure(
        &s,
        json!({ "channels": {
            "room": { "rules": { "join": "" }, "history": { "count": 1000, "age_secs": 300 } },
            "small": { "rules": { "join": "" }, "history": { "count": 3 } }
        } }),
    )
    .await;
    let mut alice = s.open(&s.alice).await;
    let start = joined(&mut alice, "r", "room:1").await;
    let epoch = start["epoch"].as_str().unwrap().to_owned();
    assert_eq!(admin_publish(&s, "room:1", json!(1)).await, 1);
    assert_eq!(next(&mut alice).await["seq"], 1);
    drop(alice);

    for n in 2..=300 {
        assert_eq!(admin_publish(&s, "room:1", json!(n)).await, n);
    }
    let mut alice = s.open(&s.alice).await;
    let back = join(
        &mut alice,
        "r",
        json!({ "channel": "room:1", "after": { "epoch": epoch, "seq": 1 } }),
    )
    .await;
    assert_eq!(
        (&back["type"], &back["epoch"], &back["seq"]),
        (&json!("subscribed"), &json!(epoch), &json!(1))
    );
    for n in 2..=300u64 {
        let message = next(&mut alice).await;
        assert_eq!(
            (&message["seq"], &message["data"]),
            (&json!(n), &json!(n)),
            "{message}"
        );
    }
    quiet(&mut alice).await;
    assert_eq!(admin_publish(&s, "room:1", json!(301)).await, 301);
    assert_eq!(next(&mut alice).await["seq"], 301);

    // Already up to date: nothing to catch up on, nothing reset.
    let mut again = s.open(&s.alice).await;
    let up = join(
        &mut again,
        "r",
        json!({ "channel": "room:1", "after": { "epoch": epoch, "seq": 301 } }),
    )
    .await;
    assert_eq!(up["seq"], 301);
    quiet(&mut again).await;

    // Beyond what is kept: a reset, never silent loss.
    let mut bob = s.open(&s.bob).await;
    let small = joined(&mut bob, "s", "small:1").await;
    let small_epoch = small["epoch"].as_str().unwrap().to_owned();
    send(&mut bob, json!({ "type": "unsubscribe", "id": "s" })).await;
    next(&mut bob).await;
    for n in 1..=5 {
        admin_publish(&s, "small:1", json!(n)).await;
    }
    join(
        &mut bob,
        "s",
        json!({ "channel": "small:1", "after": { "epoch": small_epoch, "seq": 0 } }),
    )
    .await;
    let reset = next(&mut bob).await;
    assert_eq!(
        (&reset["type"], &reset["sub"], &reset["reason"]),
        (&json!("reset"), &json!("s"), &json!("history"))
    );
    send(&mut bob, json!({ "type": "unsubscribe", "id": "s" })).await;
    next(&mut bob).await;
    // From two back, the kept three serve it.
    join(
        &mut bob,
        "s",
        json!({ "channel": "small:1", "after": { "epoch": small_epoch, "seq": 2 } }),
    )
    .await;
    for n in 3..=5 {
        assert_eq!(next(&mut bob).await["seq"], n);
    }
    quiet(&mut bob).await;
    // Another epoch (the server restarted, or forgot the channel): a reset.
    let mut carol = s.open(&s.alice).await;
    join(
        &mut carol,
        "s",
        json!({ "channel": "small:1", "after": { "epoch": "0000000000000000", "seq": 5 } }),
    )
    .await;
    assert_eq!(next(&mut carol).await["reason"], "epoch");

    // A history turned off hides the past at once, not at the channel's next message, even
    // with nobody connected when it changes.
    for socket in [alice, again, bob, carol] {
        drop(socket);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let sockets =
            s.t.admin(Method::GET, "/v1/admin/apps/notes/realtime/sockets")
                .expect(StatusCode::OK)
                .await;
        if sockets["count"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{sockets}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    configure(
        &s,
        json!({ "channels": {
            "room": { "rules": { "join": "" }, "history": { "count": 1000, "age_secs": 300 } },
            "small": { "rules": { "join": "" }, "history": { "count": 0 } }
        } }),
    )
    .await;
    let mut dave = s.open(&s.bob).await;
    join(
        &mut dave,
        "s",
        json!({ "channel": "small:1", "after": { "epoch": small_epoch, "seq": 2 } }),
    )
    .await;
    assert_eq!(next(&mut dave).await["reason"], "history");
}

#[tokio::test]
async fn direct_messages_reach_every_socket_of_their_user() {
    let s = scene().await;
    rooms(&s).await;
    let alice_id = user_id(&s, &s.alice).await;
    let bob_id = user_id(&s, &s.bob).await;
    let mut phone = s.open(&s.alice).await;
    let mut laptop = s.open(&s.alice).await;
    for socket in [&mut phone, &mut laptop] {
        let answer = join(socket, "dm", json!({ "direct": true })).await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
    }
    let mut bob = s.open(&s.bob).await;
    send(
        &mut bob,
        json!({ "type": "send", "id": "m1", "to": alice_id, "data": { "text": "hi" } }),
    )
    .await;
    assert_eq!(next(&mut bob).await, json!({ "type": "sent", "id": "m1" }));
    for socket in [&mut phone, &mut laptop] {
        let message = next(socket).await;
        assert_eq!(
            message,
            json!({ "type": "direct", "seq": 1, "from": bob_id, "data": { "text": "hi" } })
        );
    }
    // The rule: not to oneself. A recipient that is no user id is refused.
    send(
        &mut phone,
        json!({ "type": "send", "to": alice_id, "data": 1 }),
    )
    .await;
    refused(&next(&mut phone).await, "forbidden");
    send(&mut bob, json!({ "type": "send", "to": "a b", "data": 1 })).await;
    refused(&next(&mut bob).await, "invalid_recipient");

    // The server side sends to a user whatever the rule.
    let sent =
        s.t.admin(
            Method::POST,
            &format!("/v1/admin/apps/notes/realtime/users/{alice_id}/messages"),
        )
        .json(&json!({ "data": "from the server" }))
        .expect(StatusCode::OK)
        .await;
    assert_eq!(sent["seq"], 2);
    assert_eq!(next(&mut laptop).await["data"], "from the server");
    s.t.admin(
        Method::POST,
        "/v1/admin/apps/notes/realtime/users/a%20b/messages",
    )
    .json(&json!({ "data": 1 }))
    .expect_error(StatusCode::BAD_REQUEST, "invalid_recipient")
    .await;
    quiet(&mut bob).await;

    // Without a `direct` rule, only the server sends.
    configure(&s, json!({})).await;
    send(
        &mut bob,
        json!({ "type": "send", "to": alice_id, "data": 1 }),
    )
    .await;
    refused(&next(&mut bob).await, "forbidden");
}

#[tokio::test]
async fn anonymous_sockets_only_where_the_app_allows() {
    let s = scene().await;
    // By default a socket without a token must authenticate first.
    let mut bare = s.open_bare().await;
    send(
        &mut bare,
        json!({ "type": "subscribe", "id": "r", "channel": "lobby" }),
    )
    .await;
    refused(&next(&mut bare).await, "auth_required");
    assert_eq!(closed(&mut bare).await.0, 4000);

    configure(
        &s,
        json!({ "anonymous": true, "channels": { "lobby": { "rules": { "join": "", "publish": "@auth.id != null" } } } }),
    )
    .await;
    let mut bare = s.open_bare().await;
    send(
        &mut bare,
        json!({ "type": "subscribe", "id": "r", "channel": "lobby" }),
    )
    .await;
    assert_eq!(
        next(&mut bare).await,
        json!({ "type": "ready", "user": null, "expires_at": null })
    );
    assert_eq!(next(&mut bare).await["type"], "subscribed");
    send(
        &mut bare,
        json!({ "type": "publish", "channel": "lobby", "data": 1 }),
    )
    .await;
    refused(&next(&mut bare).await, "forbidden");
    refused(
        &join(&mut bare, "dm", json!({ "direct": true })).await,
        "forbidden",
    );
    admin_publish(&s, "lobby", json!("welcome")).await;
    assert_eq!(next(&mut bare).await["data"], "welcome");
    // It may log in on the same socket, and then publish.
    send(&mut bare, json!({ "type": "auth", "token": s.alice })).await;
    assert_eq!(next(&mut bare).await["type"], "ready");
    send(
        &mut bare,
        json!({ "type": "publish", "id": "p", "channel": "lobby", "data": 2 }),
    )
    .await;
    let mut got = [next(&mut bare).await, next(&mut bare).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(
        (&got[0]["type"], &got[1]["type"]),
        (&json!("message"), &json!("published"))
    );

    // Where anonymous sockets may publish, their messages say so: `null` is the server's.
    configure(
        &s,
        json!({ "anonymous": true, "channels": { "lobby": { "rules": { "join": "", "publish": "" } } } }),
    )
    .await;
    let mut guest = s.open_bare().await;
    send(
        &mut guest,
        json!({ "type": "subscribe", "id": "r", "channel": "lobby" }),
    )
    .await;
    next(&mut guest).await;
    assert_eq!(next(&mut guest).await["type"], "subscribed");
    send(
        &mut guest,
        json!({ "type": "publish", "channel": "lobby", "data": "hi" }),
    )
    .await;
    let heard = next(&mut bare).await;
    assert_eq!(
        (&heard["from"], &heard["data"]),
        (&json!("anonymous"), &json!("hi"))
    );

    // Turning anonymous sockets off closes those open; a logged-in one stays. One that was
    // still waiting to be let in (no first message yet) is not let in after.
    let mut waiting = s.open_bare().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    configure(
        &s,
        json!({ "channels": { "lobby": { "rules": { "join": "" } } } }),
    )
    .await;
    assert_eq!(closed(&mut guest).await, (4000, "auth_required".to_owned()));
    send(
        &mut waiting,
        json!({ "type": "subscribe", "id": "r", "channel": "lobby" }),
    )
    .await;
    assert_eq!(
        closed(&mut waiting).await,
        (4000, "auth_required".to_owned())
    );
    send(&mut bare, json!({ "type": "ping", "id": 1 })).await;
    let mut answers = Vec::new();
    while answers.last().is_none_or(|m: &Value| m["type"] != "pong") {
        answers.push(next(&mut bare).await);
    }
}

#[tokio::test]
async fn a_socket_that_logs_in_leaves_the_channels_its_rules_now_refuse() {
    let s = scene().await;
    configure(
        &s,
        json!({ "anonymous": true, "channels": {
            "guests": { "rules": { "join": "@auth.id = null" } },
            "lobby": { "rules": { "join": "" } }
        } }),
    )
    .await;
    let mut socket = s.open_bare().await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "g", "channel": "guests:1" }),
    )
    .await;
    assert_eq!(next(&mut socket).await["type"], "ready");
    assert_eq!(next(&mut socket).await["type"], "subscribed");
    assert_eq!(
        joined(&mut socket, "l", "lobby").await["type"],
        "subscribed"
    );

    send(&mut socket, json!({ "type": "auth", "token": s.alice })).await;
    let mut got = [next(&mut socket).await, next(&mut socket).await];
    got.sort_by_key(|m| m["type"].as_str().unwrap().to_owned());
    assert_eq!(
        (&got[0]["type"], &got[0]["sub"], &got[0]["code"]),
        (&json!("ended"), &json!("g"), &json!("forbidden"))
    );
    assert_eq!(got[1]["type"], "ready");
    // Its guests' channel says nothing more to it; the lobby goes on.
    admin_publish(&s, "guests:1", json!("guests only")).await;
    admin_publish(&s, "lobby", json!("everyone")).await;
    let heard = next(&mut socket).await;
    assert_eq!(
        (&heard["type"], &heard["channel"], &heard["data"]),
        (&json!("message"), &json!("lobby"), &json!("everyone"))
    );
}

/// Sockets without a login take at most half of the app's: a flood of them leaves its users
/// room.
#[tokio::test]
async fn sockets_without_a_login_take_at_most_half_of_the_apps() {
    let s = crate::realtime::scene_with(|c| {
        c.realtime.max_connections_per_app = 4;
        c.realtime.max_connections_per_user = 1;
    })
    .await;
    configure(&s, json!({ "anonymous": true })).await;
    let anonymous = || async {
        let mut socket = s.open_bare().await;
        send(&mut socket, json!({ "type": "ping", "id": 1 })).await;
        let first = next(&mut socket).await;
        (socket, first)
    };
    let (mut guest, first) = anonymous().await;
    assert_eq!(first["type"], "ready");
    let (_other, first) = anonymous().await;
    assert_eq!(first["type"], "ready");
    let (mut refused_one, first) = anonymous().await;
    assert_eq!(first["code"], "too_many_connections", "{first}");
    assert_eq!(closed(&mut refused_one).await.0, 4009);
    // The users' half is theirs.
    let _alice = s.open(&s.alice).await;
    // A guest that logs in is one of them: its place among the guests is free again.
    assert_eq!(next(&mut guest).await["type"], "pong");
    send(&mut guest, json!({ "type": "auth", "token": s.bob })).await;
    assert_eq!(next(&mut guest).await["type"], "ready");
    let (_again, first) = anonymous().await;
    assert_eq!(first["type"], "ready", "{first}");
}

#[tokio::test]
async fn a_socket_that_logs_in_counts_against_its_users_limit() {
    let s = crate::realtime::scene_with(|c| c.realtime.max_connections_per_user = 1).await;
    configure(&s, json!({ "anonymous": true })).await;
    let _alice = s.open(&s.alice).await;
    let mut guest = s.open_bare().await;
    send(&mut guest, json!({ "type": "ping", "id": 1 })).await;
    assert_eq!(next(&mut guest).await["type"], "ready");
    assert_eq!(next(&mut guest).await["type"], "pong");
    send(&mut guest, json!({ "type": "auth", "token": s.alice })).await;
    refused(&next(&mut guest).await, "too_many_connections");
    // It stays what it was: anonymous.
    send(
        &mut guest,
        json!({ "type": "subscribe", "id": "dm", "direct": true }),
    )
    .await;
    refused(&next(&mut guest).await, "forbidden");
}

#[tokio::test]
async fn publishes_are_rate_limited_without_closing_the_socket() {
    let s = scene().await;
    configure(
        &s,
        json!({ "channels": { "room": { "rules": { "publish": "" } } } }),
    )
    .await;
    let mut alice = s.open(&s.alice).await;
    for n in 0..25 {
        send(
            &mut alice,
            json!({ "type": "publish", "id": format!("p{n}"), "channel": "room:1", "data": n }),
        )
        .await;
    }
    let mut codes = Vec::new();
    for _ in 0..25 {
        let answer = next(&mut alice).await;
        codes.push(
            answer["code"]
                .as_str()
                .unwrap_or(answer["type"].as_str().unwrap())
                .to_owned(),
        );
    }
    assert!(
        codes.iter().filter(|c| *c == "published").count() <= 20,
        "{codes:?}"
    );
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    send(&mut alice, json!({ "type": "ping", "id": 1 })).await;
    assert_eq!(next(&mut alice).await["type"], "pong");
}

#[tokio::test]
async fn the_server_side_routes_check_what_they_are_given() {
    let s = scene().await;
    // A kind nobody declares: the server may publish, nobody can join to hear it, and nothing
    // of it is kept or remembered.
    assert_eq!(admin_publish(&s, "undeclared:1", json!(1)).await, 1);
    assert_eq!(admin_publish(&s, "undeclared:1", json!(2)).await, 1);
    let empty =
        s.t.admin(Method::GET, SETTINGS)
            .expect(StatusCode::OK)
            .await;
    assert_eq!(empty["anonymous"], false);
    assert_eq!(empty["channels"], json!({}));
    let error =
        s.t.admin(Method::PUT, SETTINGS)
            .json(&json!({ "channels": { "room": { "rules": { "join": "nope = 1" } } } }))
            .expect_error(StatusCode::BAD_REQUEST, "invalid_realtime_settings")
            .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("channels.room.rules.join"),
        "{error}"
    );
    s.t.admin(Method::PUT, SETTINGS)
        .json(&json!({ "channel": {} }))
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
        .await;
    s.t.admin(Method::PUT, SETTINGS)
        .json(&json!({ "channels": { "room": { "history": { "count": 10001 } } } }))
        .expect_error(StatusCode::BAD_REQUEST, "invalid_realtime_settings")
        .await;
    // A user's token is no server's.
    s.t.request(Method::GET, SETTINGS)
        .bearer_auth(&s.alice)
        .expect_error(StatusCode::FORBIDDEN, "forbidden")
        .await;
    s.t.admin(
        Method::POST,
        "/v1/admin/apps/notes/realtime/channels/Bad%20Name/messages",
    )
    .json(&json!({ "data": 1 }))
    .expect_error(StatusCode::BAD_REQUEST, "invalid_channel")
    .await;
    s.t.admin(
        Method::POST,
        "/v1/admin/apps/notes/realtime/channels/room:1/messages",
    )
    .json(&json!({ "data": "x".repeat(70_000) }))
    .expect_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    .await;
    s.t.admin(
        Method::POST,
        "/v1/admin/apps/nope/realtime/channels/room:1/messages",
    )
    .json(&json!({ "data": 1 }))
    .expect_error(StatusCode::NOT_FOUND, "app_not_found")
    .await;
    // The settings stay as written.
    let settings = json!({ "anonymous": true, "direct": "", "direct_history": { "count": 5, "age_secs": 60 },
        "channels": { "room": { "rules": { "join": "", "publish": null, "presence": "key = 'x'" }, "history": { "count": 100, "age_secs": 120 } } } });
    assert_eq!(configure(&s, settings.clone()).await, settings);
    assert_eq!(
        s.t.admin(Method::GET, SETTINGS)
            .expect(StatusCode::OK)
            .await,
        settings
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_and_the_others_get_everything() {
    let s = scene().await;
    configure(
        &s,
        json!({ "channels": { "room": { "rules": { "join": "" } } } }),
    )
    .await;
    let mut reader = s.open(&s.alice).await;
    let mut stalled = s.open(&s.bob).await;
    joined(&mut reader, "r", "room:1").await;
    joined(&mut stalled, "r", "room:1").await;
    // Bob stops reading. Big messages fill the socket's buffers, then his queue (256).
    let big = "x".repeat(50_000);
    let publishes = 400u64;
    let publishing = async {
        for n in 1..=publishes {
            admin_publish(&s, "room:1", json!({ "n": n, "pad": big })).await;
        }
    };
    let reading = async {
        for n in 1..=publishes {
            let message = next(&mut reader).await;
            assert_eq!(
                (&message["seq"], &message["data"]["n"]),
                (&json!(n), &json!(n))
            );
        }
    };
    tokio::join!(publishing, reading);
    // What reached Bob before the cut is in order; then the socket ends: with 4008 if the close
    // frame could still reach him, dropped if his buffers were full.
    let mut last = 0;
    let code = loop {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(15), {
            use futures_util::StreamExt;
            stalled.next()
        })
        .await
        .expect("the cut within 15 s");
        match frame {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["type"] == "message" {
                    let seq = message["seq"].as_u64().unwrap();
                    assert_eq!(seq, last + 1, "in order, without a gap");
                    last = seq;
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                break frame.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            // Cut while its buffers were full: no close frame could reach it.
            Some(Err(_)) | None => break None,
        }
    };
    assert!(matches!(code, Some(4008) | None), "{code:?}");
    assert!(last < publishes, "bob was cut before the end ({last})");
    // The reader is still served.
    admin_publish(&s, "room:1", json!("after")).await;
    assert_eq!(next(&mut reader).await["data"], "after");
}
