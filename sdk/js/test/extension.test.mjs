// The SDK's extension points against the real server: a platform that lacks a capability, and a
// client feature registered from outside (the way `files`, `realtime` and `pay` will be added).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { CloudError, createClient, registerFeature } from "../dist/index.mjs";
import { createApp, startServer } from "./support.mjs";

let server;
before(async () => {
  server = await startServer();
  await createApp(server, "kiosk");
});
after(() => server.stop());

test("a capability the platform lacks is refused with unsupported_on_platform; the others work", async () => {
  // A kiosk's adapter: the web's requests and storage, and no login of its own.
  const { login, ...web } = createClient({ server: server.url, app: "kiosk" }).adapter;
  const cloud = createClient({ server: server.url, app: "kiosk", adapter: { ...web, name: "kiosk" } });
  await assert.rejects(cloud.auth.login(), (e) => {
    assert.ok(e instanceof CloudError);
    assert.equal(e.code, "unsupported_on_platform");
    assert.equal(e.status, 0);
    assert.match(e.message, /\blogin\b.*\bkiosk\b/);
    return true;
  });
  const user = await cloud.auth.signUp("kiosk@example.com", "tangerine lighthouse 42 orbit");
  assert.equal((await cloud.auth.user()).id, user.id);
});

test("a registered feature is a namespace of every client created after, built over the client", async () => {
  const earlier = createClient({ server: server.url, app: "kiosk" });
  registerFeature("todos", (client) => ({
    add: (title) => client._call("POST", "/collections/todos/records", { title }),
  }));
  assert.equal(earlier.todos, undefined);

  const cloud = createClient({ server: server.url, app: "kiosk" });
  const user = await cloud.auth.loginForDevelopment("feature-user");
  const todo = await cloud.todos.add("registered");
  assert.equal(todo.owner, user.id, "the feature calls as the logged-in user");
  assert.equal((await cloud.db.collection("todos").get(todo.id)).title, "registered");

  for (const name of ["todos", "auth"]) {
    assert.throws(() => registerFeature(name, () => ({})), (e) => e instanceof CloudError && e.code === "invalid_feature");
  }
});
