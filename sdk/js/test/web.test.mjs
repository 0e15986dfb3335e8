// The SDK in Node (the web adapter: fetch, in-memory storage) against the real server.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { CloudError, createClient, literal } from "../dist/index.mjs";
import { createApp, startServer } from "./support.mjs";

let server;
before(async () => {
  server = await startServer();
  await createApp(server, "todo");
});
after(() => server.stop());

const client = () => createClient({ server: server.url, app: "todo" });

describe("auth", () => {
  test("development and anonymous logins keep a session; logout forgets it", async () => {
    const cloud = client();
    assert.equal(cloud.adapter.name, "web");
    assert.equal(cloud.auth.isLoggedIn(), false);
    const alice = await cloud.auth.loginForDevelopment("alice");
    assert.match(alice.id, /\S/);
    assert.equal(cloud.auth.isLoggedIn(), true);
    assert.deepEqual((await cloud.auth.user()).id, alice.id);
    const again = await client().auth.loginForDevelopment("alice");
    assert.equal(again.id, alice.id, "the same name is the same user");
    await cloud.auth.logout();
    assert.equal(cloud.auth.isLoggedIn(), false);
    await assert.rejects(cloud.auth.user(), (e) => e instanceof CloudError && e.code === "missing_credentials");

    const guest = await cloud.auth.loginAnonymously();
    assert.notEqual(guest.id, alice.id);
  });

  test("passwords: sign up, log in, and a wrong password is a CloudError with its code", async () => {
    const cloud = client();
    const user = await cloud.auth.signUp("ada@example.com", "correct horse battery");
    assert.equal(user.email, "ada@example.com");
    const again = await client().auth.loginWithPassword("ada@example.com", "correct horse battery");
    assert.equal(again.id, user.id);
    await assert.rejects(client().auth.loginWithPassword("ada@example.com", "wrong password!"), (e) => {
      assert.ok(e instanceof CloudError);
      assert.equal(e.code, "invalid_login");
      assert.equal(e.status, 401);
      assert.match(e.request_id, /\S/);
      assert.equal(e.requestId, e.request_id);
      return true;
    });
    await assert.rejects(client().auth.login(), (e) => e.code === "unsupported");
  });

  test("an access token about to expire is refreshed once for many callers, and the rotated session is kept", async () => {
    const cloud = client();
    await cloud.auth.loginForDevelopment("carol");
    const key = `cloudlet.session:todo`;
    const stored = JSON.parse(cloud.adapter.getItem(key));
    // As if the token were about to expire.
    cloud.adapter.setItem(key, JSON.stringify({ ...stored, expires_at: Date.now() + 5_000 }));
    // Refreshing twice with the same session id would be a replay, which revokes the session:
    // these succeed only if the refresh is single-flight.
    const results = await Promise.all([1, 2, 3, 4, 5].map(() => cloud.auth.user()));
    assert.ok(results.every((u) => u.id === stored.user.id));
    const rotated = JSON.parse(cloud.adapter.getItem(key));
    assert.notEqual(rotated.session_id, stored.session_id);
    assert.ok(rotated.expires_at > Date.now() + 60_000);
    assert.equal((await cloud.auth.user()).id, stored.user.id);
  });

  test("a refused access token is refreshed once and the call retried", async () => {
    const cloud = client();
    await cloud.auth.loginForDevelopment("dave");
    const key = `cloudlet.session:todo`;
    const stored = JSON.parse(cloud.adapter.getItem(key));
    cloud.adapter.setItem(key, JSON.stringify({ ...stored, access_token: `${stored.access_token}x` }));
    assert.equal((await cloud.auth.user()).id, stored.user.id);
    // A session that can not be refreshed any more ends the login.
    cloud.adapter.setItem(key, JSON.stringify({ ...stored, session_id: "nope", access_token: "a.b.c" }));
    await assert.rejects(cloud.auth.user(), (e) => e.code === "invalid_session");
    assert.equal(cloud.auth.isLoggedIn(), false);
  });
});

describe("db", () => {
  test("add, get, update, remove; each user sees only their own", async () => {
    const alice = client();
    await alice.auth.loginForDevelopment("alice-db");
    const bob = client();
    await bob.auth.loginForDevelopment("bob-db");
    const todos = alice.db.collection("todos");
    const milk = await todos.add({ title: "milk", priority: 2 });
    assert.equal(milk.done, false);
    assert.equal((await todos.get(milk.id)).title, "milk");
    const done = await todos.update(milk.id, { done: true });
    assert.equal(done.done, true);
    await assert.rejects(bob.db.collection("todos").get(milk.id), (e) => e.code === "record_not_found" && e.status === 404);
    assert.equal((await bob.db.collection("todos").list()).items.length, 0);
    assert.equal(await todos.remove(milk.id), null);
    await assert.rejects(todos.get(milk.id), (e) => e.code === "record_not_found");
    await assert.rejects(todos.add({ title: 42 }), (e) => e.code === "invalid_field_value");
  });

  test("queries: where in both styles, orderBy, limit, paginate, cursor pages, fields, count", async () => {
    const cloud = client();
    await cloud.auth.loginForDevelopment("erin");
    const todos = cloud.db.collection("todos");
    for (let i = 0; i < 7; i++) {
      await todos.add({ title: `todo ${i}`, priority: i % 3, done: i % 2 === 0 });
    }
    const open = await todos.where("done", "=", false).orderBy("title").get();
    assert.deepEqual(open.items.map((t) => t.title), ["todo 1", "todo 3", "todo 5"]);
    const same = await todos.where({ done: false }).orderBy("title", "asc").get();
    assert.deepEqual(same.items.map((t) => t.id), open.items.map((t) => t.id));
    const urgent = await todos.where("priority", ">=", 2).where("done", false).get();
    assert.deepEqual(urgent.items.map((t) => t.title), ["todo 5"]);
    const some = await todos.where("title", "in", ["todo 0", "todo 6"]).orderBy("title", "desc").get();
    assert.deepEqual(some.items.map((t) => t.title), ["todo 6", "todo 0"]);

    // Cursor pages: 3 + 3 + 1, every record once.
    let page = await todos.orderBy("title").limit(3).get();
    const seen = [...page.items];
    while (page.next) {
      page = await page.next();
      seen.push(...page.items);
    }
    assert.deepEqual(seen.map((t) => t.title), [0, 1, 2, 3, 4, 5, 6].map((i) => `todo ${i}`));
    const second = await todos.orderBy("title").paginate(2, 3).get();
    assert.deepEqual(second.items.map((t) => t.title), ["todo 3", "todo 4", "todo 5"]);
    const slim = await todos.fields("title").limit(1).get();
    assert.deepEqual(Object.keys(slim.items[0]).sort(), ["id", "title"]);
    assert.equal(await todos.count(), 7);
    assert.equal(await todos.where("done", true).count(), 4);
  });

  test("values can not change a filter: quotes and operators stay inside the value", async () => {
    const alice = client();
    await alice.auth.loginForDevelopment("injector");
    const todos = alice.db.collection("todos");
    await todos.add({ title: "it's mine" });
    const tricky = ["x' || title != '", "\\' || true || '", "a\nb", "%", "' = '"];
    for (const title of tricky) {
      assert.equal(await todos.where("title", title).count(), 0, title);
      await todos.add({ title });
      assert.equal((await todos.where({ title }).get()).items.length, 1, title);
    }
    assert.equal((await todos.where("title", "it's mine").get()).items.length, 1);
    assert.equal(literal("it's"), "'it\\'s'");
    assert.equal(literal(new Date("2026-11-21T00:00:00Z")), "'2026-11-21T00:00:00.000Z'");
    assert.throws(() => todos.where("title) || (1", "=", 1), (e) => e.code === "invalid_filter");
    assert.throws(() => todos.where("title", "== 1 ||", 1), (e) => e.code === "invalid_filter");
    assert.throws(() => todos.where("title", "=", { $ne: 1 }), (e) => e.code === "invalid_filter");
    assert.throws(() => alice.db.collection("../apps"), (e) => e.code === "invalid_collection");
    assert.throws(() => todos.where("priority", "=", 1e21), (e) => e.code === "invalid_filter");
    assert.throws(() => todos.where("priority", "=", NaN), (e) => e.code === "invalid_filter");
    assert.throws(() => todos.get(".."), (e) => e.code === "invalid_id");
  });
});

describe("functions", () => {
  test("call a function with the user's identity; its errors are CloudErrors", async () => {
    const cloud = client();
    const user = await cloud.auth.loginForDevelopment("frank");
    await cloud.db.collection("todos").add({ title: "a" });
    await cloud.db.collection("todos").add({ title: "b", done: true });
    const stats = await cloud.functions.call("stats", { hello: "world" });
    assert.deepEqual(stats, { user: user.id, total: 2, open: 1, echo: { hello: "world" } });
    await assert.rejects(cloud.functions.call("missing"), (e) => e.code === "function_not_found");
    await cloud.auth.logout();
    await assert.rejects(cloud.functions.call("stats"), (e) => e.code === "missing_credentials");
  });

  test("a server that can not be reached is a network_error", async () => {
    const cloud = createClient({ server: "http://127.0.0.1:9", app: "todo" });
    await assert.rejects(cloud.auth.loginForDevelopment("x"), (e) => e instanceof CloudError && e.code === "network_error");
  });
});

test("files: the web uploads a Blob with fetch and FormData, signs URLs, lists and removes", async () => {
  await server.admin("PUT", "/v1/admin/apps/todo/buckets/docs", { types: ["*/*"] });
  const cloud = createClient({ server: server.url, app: "todo" });
  await cloud.auth.loginForDevelopment("wendy");
  const pdf = new Blob(["%PDF-1.7\n%\u00e2\u00e3\n1 0 obj\n<<>>\nendobj\n"]);
  const file = await cloud.files.upload("docs", pdf, { name: "notes.pdf", metadata: { topic: "maths" } });
  assert.equal(file.type, "application/pdf");
  assert.equal(file.name, "notes.pdf");
  assert.deepEqual(file.metadata, { topic: "maths" });
  const [signed] = await cloud.files.urls([file.id], { ttl: 60 });
  const answer = await fetch(signed.url);
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get("content-disposition"), "attachment; filename*=UTF-8''notes%2Epdf");
  assert.equal((await cloud.files.list("docs")).items.length, 1);
  await cloud.files.remove("docs", file.id);
  assert.deepEqual((await cloud.files.list("docs")).items, []);
  await assert.rejects(cloud.files.upload("nowhere", pdf), (e) => e.code === "bucket_not_found");
});

test("files in records: a page signs its files, or their thumbnails", async () => {
  await server.admin("PUT", "/v1/admin/apps/todo/buckets/pictures", { types: ["image/*"], thumbs: ["10x10"] });
  await server.admin("PUT", "/v1/admin/apps/todo/collections/albums", { fields: [{ name: "cover", type: "file" }] });
  const cloud = createClient({ server: server.url, app: "todo" });
  await cloud.auth.loginForDevelopment("xavier");
  // A 1x1 PNG.
  const png = Uint8Array.from(
    atob("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="),
    (c) => c.charCodeAt(0),
  );
  const file = await cloud.files.upload("pictures", new Blob([png]), { name: "dot.png" });
  assert.equal(file.type, "image/png");
  await cloud.db.collection("albums").add({ cover: file.id });
  const page = await cloud.db.collection("albums").fileUrls("10x10").get();
  const signed = page.file_urls[file.id];
  assert.match(signed.url, /^http:\/\/127\.0\.0\.1:\d+\/v1\/apps\/todo\/files\/pictures\/fil_.*thumb=10x10/);
  const thumb = await fetch(signed.url);
  assert.equal(thumb.status, 200);
  assert.equal(thumb.headers.get("content-type"), "image/png");
  const plain = await cloud.db.collection("albums").list();
  assert.equal(plain.file_urls, undefined);
  const [original] = await cloud.files.urls([file.id], { thumb: "10x10" });
  assert.equal((await fetch(original.url)).status, 200);
  // A size the bucket does not declare: no URL for that file, the page all the same.
  const undeclared = await cloud.db.collection("albums").fileUrls("99x99").get();
  assert.equal(undeclared.file_urls[file.id], null);
  await assert.rejects(
    cloud.db.collection("albums").fileUrls("big").get(),
    (e) => e instanceof CloudError && e.code === "invalid_query",
  );
});

/** Calls `fn` with each change heard, and resolves with the first for which it answers true. */
function listener() {
  const heard = [];
  const waiting = [];
  const onChange = (change) => {
    heard.push(change);
    for (const w of waiting.splice(0)) {
      if (!w.test(change)) waiting.push(w);
      else w.resolve(change);
    }
  };
  const until = (test, ms = 5_000) =>
    new Promise((resolve, reject) => {
      const found = heard.find(test);
      if (found) return resolve(found);
      waiting.push({ test, resolve });
      setTimeout(() => reject(new Error(`not heard within ${ms} ms: ${JSON.stringify(heard)}`)), ms);
    });
  return { heard, onChange, until };
}

describe("realtime", () => {
  test("a watch hears the user's changes live, under the rules and the filter, until closed", async () => {
    const alice = client();
    await alice.auth.loginForDevelopment("rt-alice");
    const bob = client();
    await bob.auth.loginForDevelopment("rt-bob");
    const open = listener();
    const resets = [];
    const watching = alice.db
      .collection("todos")
      .where("done", false)
      .watch(open.onChange, { onReset: (reason) => resets.push(reason) });
    await watching.ready;
    await bob.db.collection("todos").add({ title: "bob's" });
    const milk = await alice.db.collection("todos").add({ title: "milk" });
    const created = await open.until((c) => c.id === milk.id);
    assert.equal(created.event, "create");
    assert.equal(created.record.title, "milk");
    assert.equal(created.seq, 1, "bob's todo was never sent to alice");
    await alice.db.collection("todos").update(milk.id, { done: true });
    const left = await open.until((c) => c.event === "leave");
    assert.deepEqual([left.id, left.record, left.seq], [milk.id, null, 2]);
    watching.close();
    await alice.db.collection("todos").add({ title: "after" });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(open.heard.length, 2);
    assert.deepEqual(resets, []);
    alice.realtime.close();
  });

  test("channels: messages in order from their user, presence diffs and pages, direct messages", async () => {
    await server.admin("PUT", "/v1/admin/apps/todo/realtime", {
      direct: "to != @auth.id",
      channels: { room: { rules: { join: "@auth.id != null", publish: "@auth.id != null", presence: "@auth.id != null" } } },
    });
    const alice = client();
    const a = await alice.auth.loginForDevelopment("ch-alice");
    const bob = client();
    const b = await bob.auth.loginForDevelopment("ch-bob");
    const heard = [];
    const diffs = [];
    const room = alice.realtime
      .channel("room:sdk", { presence: true })
      .on("message", (m) => heard.push(m))
      .on("presence", (d) => diffs.push(d));
    await room.ready;
    const bobs = bob.realtime.channel("room:sdk");
    await bobs.ready;
    await bobs.track({ typing: true });
    assert.deepEqual(await bobs.publish({ text: "hi" }), { seq: 1 });
    assert.deepEqual(await bob.realtime.publish("room:sdk", "again"), { seq: 2 });
    const until = async (test) => {
      const deadline = Date.now() + 5_000;
      while (!test() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(test(), JSON.stringify({ heard, diffs }));
    };
    await until(() => heard.length === 2 && diffs.length === 1);
    assert.deepEqual(heard, [
      { data: { text: "hi" }, from: b.id, seq: 1 },
      { data: "again", from: b.id, seq: 2 },
    ]);
    assert.deepEqual([diffs[0].join.user, diffs[0].join.state], [b.id, { typing: true }]);
    const page = await room.presence();
    assert.deepEqual([page.count, page.members[0].member, page.next], [1, diffs[0].join.member, null]);

    const inbox = [];
    const listening = alice.realtime.onMessage((m) => inbox.push(m));
    await listening.ready;
    await bob.realtime.send(a.id, "psst");
    await until(() => inbox.length === 1);
    assert.deepEqual(inbox[0], { data: "psst", from: b.id, seq: 1 });
    await assert.rejects(alice.realtime.send(a.id, "to myself"), (e) => e instanceof CloudError && e.code === "forbidden");
    await assert.rejects(alice.realtime.channel("nope:1").publish(1), (e) => e.code === "channel_not_found");

    bob.realtime.close();
    await until(() => diffs.length === 2);
    assert.deepEqual(diffs[1], { leave: { member: diffs[0].join.member } });
    alice.realtime.close();
  });

  test("watching needs a login", async () => {
    const errors = [];
    const cloud = client();
    cloud.realtime.watch("todos", () => {}, { onError: (e) => errors.push(e) });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(errors[0]?.code, "missing_credentials");
    cloud.realtime.close();
  });
});
