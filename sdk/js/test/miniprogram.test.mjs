// Each mini-program adapter, driven through a stand-in `wx`, `qq`, `tt` or `my` global that
// does real HTTP: the SDK logs in with the platform's login call (a code from the platform
// emulator), the server trades the code with the emulator, and the data and functions calls go
// through the stand-in's `request`.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, test } from "node:test";

import { createClient } from "../dist/index.mjs";
import { createApp, standIn, startEmulator, startServer } from "./support.mjs";

let server;
let emulator;
before(async () => {
  server = await startServer();
  emulator = await startEmulator();
  await createApp(server, "mini");
  for (const [platform, provider] of [["wechat", "wechat"], ["qq", "qq"], ["douyin", "douyin"]]) {
    const appid = `${platform}-app`;
    await emulator.register({ platform, appid, secret: `${platform}-secret` });
    await server.admin("PUT", `/v1/admin/apps/mini/auth/providers/${provider}`, {
      appid,
      secret: `${platform}-secret`,
      base_url: `${emulator.url}/${platform}`,
    });
  }
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  const registered = await emulator.register({ platform: "alipay", app_id: "2021000000000001", app_public_key: publicKey });
  await server.admin("PUT", "/v1/admin/apps/mini/auth/providers/alipay", {
    app_id: "2021000000000001",
    private_key: privateKey,
    alipay_public_key: registered.alipay_public_key,
    base_url: `${emulator.url}/alipay/gateway.do`,
  });
});
after(async () => {
  await emulator.stop();
  await server.stop();
});

// Each platform's global, name, emulated app id, and the option its `request` takes headers in.
const platforms = [
  ["wx", "wechat", "wechat-app", "header"],
  ["qq", "qq", "qq-app", "header"],
  ["tt", "douyin", "douyin-app", "header"],
  ["my", "alipay", "2021000000000001", "headers"],
];

for (const [global, platform, appid] of platforms) {
  test(`${platform}: the ${global} adapter logs in with the platform and keeps its session in ${global}'s storage`, async () => {
    const api = standIn(platform, emulator, appid, "alice");
    globalThis[global] = api;
    try {
      const cloud = createClient({ server: server.url, app: "mini" });
      assert.equal(cloud.adapter.name, platform);
      const user = await cloud.auth.login();
      assert.deepEqual(api.calls[0], platform === "alipay" ? ["getAuthCode", "auth_base"] : ["login"]);
      assert.ok([...api.storage.keys()].includes("cloudlet.session:mini"), "the session is in the platform's storage");

      const todo = await cloud.db.collection("todos").add({ title: `from ${platform}` });
      assert.equal(todo.owner, user.id);
      const mine = await cloud.db.collection("todos").where({ title: `from ${platform}` }).get();
      assert.deepEqual(mine.items.map((t) => t.id), [todo.id]);
      const stats = await cloud.functions.call("stats");
      assert.equal(stats.user, user.id);

      // A new client on the same storage (the mini program restarted) is still logged in.
      const restarted = createClient({ server: server.url, app: "mini" });
      assert.equal((await restarted.auth.user()).id, user.id);
      // The same platform user logging in again is the same user.
      const again = await createClient({ server: server.url, app: "mini" }).auth.login();
      assert.equal(again.id, user.id);
      // Another platform user is another user, who does not see the todo.
      globalThis[global] = standIn(platform, emulator, appid, "bob");
      const bob = createClient({ server: server.url, app: "mini" });
      await bob.auth.login();
      await assert.rejects(bob.db.collection("todos").get(todo.id), (e) => e.code === "record_not_found");
    } finally {
      delete globalThis[global];
    }
  });
}

// How each platform spells what the SDK asks of it, as its stand-in global receives it.
for (const [global, platform, appid, headerOption] of platforms) {
  test(`${platform}: ${global}.request gets its headers as \`${headerOption}\`, and its failures read as network_error`, async () => {
    const api = standIn(platform, emulator, appid, "carol");
    globalThis[global] = api;
    try {
      const cloud = createClient({ server: server.url, app: "mini" });
      const user = await cloud.auth.login();
      await cloud.functions.call("stats");
      const otherOption = headerOption === "header" ? "headers" : "header";
      for (const options of api.requests) {
        assert.equal(typeof options[headerOption], "object", `${global}.request takes \`${headerOption}\``);
        assert.ok(!(otherOption in options), `${global}.request gets no \`${otherOption}\``);
        assert.equal(options.dataType, "json");
      }
      const last = api.requests.at(-1)[headerOption];
      assert.equal(last["content-type"], "application/json");
      assert.match(last.authorization, /^Bearer \S+$/);
      // Stored the platform's way (`setStorageSync(key, value)` or `({ key, data })`), as a string.
      assert.equal(JSON.parse(api.storage.get("cloudlet.session:mini")).user.id, user.id);

      // A request that fails the platform's way is a network_error carrying the platform's message.
      const offline = createClient({ server: "http://127.0.0.1:9", app: "mini" });
      await assert.rejects(offline.auth.loginForDevelopment("x"), (e) => {
        assert.equal(e.code, "network_error");
        assert.match(e.message, /^request:fail /);
        return true;
      });
    } finally {
      delete globalThis[global];
    }
  });
}

test("wechat: cloud.messages.requestSubscribe asks wx, reports each accept, and the server sends one message", async () => {
  await emulator.post("/emulator/wechat/templates", {
    appid: "wechat-app",
    template_id: "TPL_shipped",
    keys: { thing1: "thing" },
  });
  const api = standIn("wechat", emulator, "wechat-app", "dora");
  const asked = [];
  // Dora allows the first template and declines the second; WeChat records what she allowed.
  api.requestSubscribeMessage = ({ tmplIds, success, fail }) => {
    asked.push(tmplIds);
    emulator
      .post("/emulator/wechat/subscriptions", { appid: "wechat-app", user: "dora", template_id: tmplIds[0] })
      .then(() => success({ errMsg: "requestSubscribeMessage:ok", [tmplIds[0]]: "accept", [tmplIds[1]]: "reject" }))
      .catch((error) => fail({ errMsg: String(error) }));
  };
  globalThis.wx = api;
  try {
    const cloud = createClient({ server: server.url, app: "mini" });
    const user = await cloud.auth.login();
    const { answers, grants } = await cloud.messages.requestSubscribe(["TPL_shipped", "TPL_other"]);
    assert.deepEqual(asked, [["TPL_shipped", "TPL_other"]]);
    assert.deepEqual(answers, { TPL_shipped: "accept", TPL_other: "reject" });
    assert.deepEqual(grants.map((g) => [g.appid, g.template_id, g.remaining]), [["wechat-app", "TPL_shipped", 1]]);

    const receipt = await server.admin("POST", "/v1/admin/apps/mini/messages", {
      to: user.id,
      template_id: "TPL_shipped",
      data: { thing1: "Shipped" },
    });
    assert.match(receipt.id, /^msg_/);
    let inbox = [];
    for (let i = 0; i < 200 && inbox.length === 0; i++) {
      inbox = (await emulator.get("/emulator/wechat/messages?appid=wechat-app&template_id=TPL_shipped")).messages;
      if (inbox.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(inbox.map((m) => [m.user, m.data]), [["dora", { thing1: "Shipped" }]]);
    assert.deepEqual((await cloud.messages.grants()).map((g) => g.remaining), [0]);

    await assert.rejects(cloud.messages.requestSubscribe([]), (e) => e.code === "invalid_message");
    await assert.rejects(cloud.messages.requestSubscribe(["a", "b", "c", "d"]), (e) => e.code === "invalid_message");
    assert.equal(asked.length, 1, "nothing more was asked of wx");
  } finally {
    delete globalThis.wx;
  }
});

test("requestSubscribe is WeChat's: other platforms and the web refuse it as unsupported_on_platform", async () => {
  globalThis.qq = standIn("qq", emulator, "qq-app", "erin");
  try {
    const cloud = createClient({ server: server.url, app: "mini" });
    await cloud.auth.login();
    await assert.rejects(cloud.messages.requestSubscribe(["TPL"]), (e) => e.code === "unsupported_on_platform");
  } finally {
    delete globalThis.qq;
  }
  const web = createClient({ server: server.url, app: "mini" });
  await assert.rejects(web.messages.requestSubscribe(["TPL"]), (e) => e.code === "unsupported_on_platform");
});

// A 1×1 PNG, written where a mini program keeps the temporary file of a chosen image.
const PNG = Buffer.from(
  "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f1b1a20000000049454e44ae426082",
  "hex",
);

for (const [global, platform, appid] of platforms) {
  test(`${platform}: files go up through ${global}.uploadFile in the platform's form, and come back by signed URL`, async () => {
    const { mkdtempSync, writeFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    await server.admin("PUT", "/v1/admin/apps/mini/buckets/photos", { types: ["image/*"] });
    const tempFilePath = join(mkdtempSync(join(tmpdir(), "wxfile-")), "tmp_4f2a.jpg");
    writeFileSync(tempFilePath, PNG);
    const api = standIn(platform, emulator, appid, `${platform}-uploader`);
    globalThis[global] = api;
    try {
      const cloud = createClient({ server: server.url, app: "mini" });
      const user = await cloud.auth.login();
      const progress = [];
      const file = await cloud.files.upload("photos", tempFilePath, {
        name: "cat.png",
        metadata: { album: "trip" },
        onProgress: (p) => progress.push(p.progress),
      });
      assert.equal(file.type, "image/png", "sniffed, whatever the path says");
      assert.equal(file.name, "cat.png");
      assert.equal(file.owner, user.id);
      assert.deepEqual(file.metadata, { album: "trip" });
      assert.deepEqual(progress, [100]);
      const sent = api.uploads[0];
      assert.equal(sent.filePath, tempFilePath);
      assert.equal(sent.header.authorization.startsWith("Bearer "), true);
      if (platform === "alipay") assert.deepEqual([sent.fileName, sent.fileType], ["file", "image"]);
      else assert.equal(sent.name, "file");

      const [signed, hidden] = await cloud.files.urls([file.id, "fil_AAAAAAAAAAAAAAAAAAAAAA"]);
      assert.equal(hidden, null);
      const image = await fetch(signed.url);
      assert.equal(image.status, 200);
      assert.deepEqual(Buffer.from(await image.arrayBuffer()), PNG);
      assert.equal((await cloud.files.info("photos", file.id)).sha256, file.sha256);
      assert.deepEqual((await cloud.files.list("photos", { mine: true })).items.map((f) => f.id), [file.id]);
      await cloud.files.remove("photos", file.id);
      await assert.rejects(cloud.files.info("photos", file.id), (e) => e.code === "file_not_found" && e.status === 404);
      // A refusal comes back as the server's code.
      writeFileSync(tempFilePath, "<html></html>");
      await assert.rejects(cloud.files.upload("photos", tempFilePath), (e) => e.code === "file_type_not_allowed" && e.status === 415);
    } finally {
      delete globalThis[global];
    }
  });
}

for (const [global, platform, appid] of [platforms[0], platforms[3]]) {
  test(`${platform}: a watch over ${global}.connectSocket hears changes, and resumes after the socket is cut`, async () => {
    const api = standIn(platform, emulator, appid, `${platform}-watcher`);
    globalThis[global] = api;
    try {
      const cloud = createClient({ server: server.url, app: "mini" });
      await cloud.auth.login();
      const heard = [];
      const resets = [];
      let wake;
      const onChange = (change) => {
        heard.push(change);
        wake?.();
      };
      const next = () => new Promise((resolve) => (wake = resolve));
      const watching = cloud.db.collection("todos").watch(onChange, { onReset: (r) => resets.push(r) });
      await watching.ready;
      assert.equal(api.sockets.length, 1);
      assert.ok(!api.sockets[0].options.url.includes("token"), "no token in the URL");
      let heardOne = next();
      const first = await cloud.db.collection("todos").add({ title: "one" });
      await heardOne;
      assert.deepEqual([heard[0].event, heard[0].id], ["create", first.id]);

      // The socket drops (the app went to the background) and a todo is added meanwhile (over
      // HTTP, as another device would); the app comes back to the foreground.
      api.sockets[0].cut();
      await new Promise((r) => setTimeout(r, 100));
      const away = await cloud.db.collection("todos").add({ title: "while away" });
      heardOne = next();
      api.show();
      await heardOne;
      assert.equal(api.sockets.length, 2, "one new socket");
      assert.deepEqual([heard[1].event, heard[1].id, heard[1].seq], ["create", away.id, 2], "what was missed, numbered on");
      heardOne = next();
      const second = await cloud.db.collection("todos").add({ title: "two" });
      await heardOne;
      assert.deepEqual([heard[2].event, heard[2].id, heard[2].seq], ["create", second.id, 3]);
      assert.deepEqual(resets, [], "nothing was lost: no reason to list again");
      cloud.realtime.close();
    } finally {
      delete globalThis[global];
    }
  });
}

test("wechat: a channel over wx.connectSocket carries on where it left off after the socket is cut", async () => {
  const [global, platform, appid] = platforms[0];
  const api = standIn(platform, emulator, appid, `${platform}-channel`);
  globalThis[global] = api;
  try {
    await server.admin("PUT", "/v1/admin/apps/mini/realtime", {
      channels: { room: { rules: { join: "@auth.id != null" }, history: { count: 1000, age_secs: 300 } } },
    });
    const cloud = createClient({ server: server.url, app: "mini" });
    await cloud.auth.login();
    const heard = [];
    const resets = [];
    const room = cloud.realtime.channel("room:mp", { onReset: (r) => resets.push(r) }).on("message", (m) => heard.push(m));
    await room.ready;
    const publish = (data) => server.admin("POST", "/v1/admin/apps/mini/realtime/channels/room:mp/messages", { data });
    await publish(1);
    const until = async (test) => {
      const deadline = Date.now() + 5_000;
      while (!test() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(test(), JSON.stringify(heard));
    };
    await until(() => heard.length === 1);

    // Gone to the background: fifty messages are published meanwhile.
    api.sockets[0].cut();
    await new Promise((r) => setTimeout(r, 100));
    for (let n = 2; n <= 51; n += 1) await publish(n);
    api.show();
    await until(() => heard.length === 51);
    assert.deepEqual(heard.map((m) => m.seq), Array.from({ length: 51 }, (_, i) => i + 1), "every one, in order, once");
    assert.deepEqual(heard.map((m) => m.data), Array.from({ length: 51 }, (_, i) => i + 1));
    assert.deepEqual(resets, [], "nothing was lost: no reset");
    assert.equal(api.sockets.length, 2);
    cloud.realtime.close();
  } finally {
    delete globalThis[global];
  }
});
