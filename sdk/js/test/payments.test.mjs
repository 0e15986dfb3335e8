// `cloud.pay` against the real server and the emulator's WeChat Pay merchant platform: the app
// `shop` has the WeChat login, a merchant configured on the emulator, a `before` function that
// prices orders from a catalogue and a callable function that makes its own order. The stand-in
// `wx.requestPayment` checks the parameters' signature as WeChat would, and "the user pays" by
// asking the emulator to pay the order the parameters belong to (their `package`, the prepay id
// WeChat knows the order by), then calls `success`.
import assert from "node:assert/strict";
import { createVerify, generateKeyPairSync } from "node:crypto";
import { after, before, test } from "node:test";

import { CloudError, createClient } from "../dist/index.mjs";
import { createApp, standIn, startEmulator, startServer } from "./support.mjs";

const APPID = "wechat-shop";
const MCHID = "1900000109";
const SERIAL = "5157F09EFDC096DE15EBE81A47057A72";
const API_V3_KEY = "0123456789abcdef0123456789abcdef";

let server;
let emulator;
let merchantPublicKey;
before(async () => {
  server = await startServer();
  emulator = await startEmulator();
  await createApp(server, "shop");
  await emulator.register({ platform: "wechat", appid: APPID, secret: "shop-secret" });
  await server.admin("PUT", "/v1/admin/apps/shop/auth/providers/wechat", {
    appid: APPID,
    secret: "shop-secret",
    base_url: `${emulator.url}/wechat`,
  });
  const { privateKey, publicKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  merchantPublicKey = publicKey;
  const platform = await emulator.post("/emulator/wechatpay/merchants", {
    mchid: MCHID,
    serial_no: SERIAL,
    api_v3_key: API_V3_KEY,
    public_key: publicKey,
  });
  await server.admin("PUT", "/v1/admin/apps/shop/pay/merchants/wechat", {
    mchid: MCHID,
    serial_no: SERIAL,
    private_key: privateKey,
    api_v3_key: API_V3_KEY,
    platform_keys: [{ serial: platform.public_key_id, public_key: platform.public_key }],
    base_url: `${emulator.url}/wechatpay`,
  });
  // The price is decided on the server, from what the client asks for.
  await server.admin("PUT", "/v1/admin/apps/shop/functions/price", {
    source: `const CATALOGUE = { tea: { fen: 1200, name: "A pot of tea" }, cake: { fen: 800, name: "A slice of cake" } };
    export default async (event, ctx) => {
      const item = CATALOGUE[event.data && event.data.sku];
      if (!item) throw new Error("no such product");
      const qty = Math.max(1, Math.min(10, Math.floor(Number(event.data.qty) || 1)));
      return { amount_fen: item.fen * qty, description: item.name + " x" + qty, metadata: { sku: event.data.sku, qty } };
    }`,
    triggers: [{ pay: ["before"] }],
  });
  // A callable function that makes the order itself.
  await server.admin("PUT", "/v1/admin/apps/shop/functions/gift", {
    source: `export default async (data, ctx) => ctx.pay.createOrder({
      amount_fen: 5000, description: "A gift card", user: ctx.auth.id, key: data.key, metadata: { to: data.to },
    })`,
  });
});
after(async () => {
  await emulator.stop();
  await server.stop();
});

/** Whether `payment` is signed by the merchant for the app, as `wx.requestPayment` checks. */
function signedByMerchant({ timeStamp, nonceStr, package: prepay, paySign }) {
  const verify = createVerify("RSA-SHA256");
  verify.update(`${APPID}\n${timeStamp}\n${nonceStr}\n${prepay}\n`);
  return verify.verify(merchantPublicKey, paySign, "base64");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A stand-in `wx` for `user` with `requestPayment`. `api.user` says what the user does on the
 * payment sheet: `pay` (the emulator pays the order, its notification dropped so that only a
 * query finds it, then `success`), `pay-notified` (the same with the notification sent),
 * `pay-late` (`success` at once, the emulator paid a second and a half later), `unpaid`
 * (`success` though nothing was paid), `cancel` or `fail`. `api.payments` records what
 * `requestPayment` was called with.
 */
function wechat(user) {
  const api = standIn("wechat", emulator, APPID, user);
  // The orders the server answered, by their prepay id, as WeChat knows them.
  const tradeNumbers = new Map();
  const request = api.request;
  api.request = ({ success, ...options }) =>
    request({
      ...options,
      success: (answer) => {
        const order = answer.data;
        if (order && order.payment) tradeNumbers.set(order.payment.package, order.out_trade_no);
        success(answer);
      },
    });
  api.user = "pay";
  api.payments = [];
  api.requestPayment = ({ success, fail, ...payment }) => {
    api.payments.push(payment);
    if (!signedByMerchant(payment)) return fail({ errMsg: "requestPayment:fail 支付验证签名失败" });
    const payOrder = (notify) =>
      emulator.post("/emulator/wechatpay/pay", { mchid: MCHID, out_trade_no: tradeNumbers.get(payment.package), notify });
    switch (api.user) {
      case "pay":
        payOrder("drop").then(() => success({ errMsg: "requestPayment:ok" }), (e) => fail({ errMsg: `requestPayment:fail ${e.message}` }));
        break;
      case "pay-notified":
        payOrder(undefined).then(() => success({ errMsg: "requestPayment:ok" }), (e) => fail({ errMsg: `requestPayment:fail ${e.message}` }));
        break;
      case "pay-late":
        success({ errMsg: "requestPayment:ok" });
        sleep(1_500).then(() => payOrder("drop"));
        break;
      case "unpaid":
        success({ errMsg: "requestPayment:ok" });
        break;
      case "cancel":
        fail({ errMsg: "requestPayment:fail cancel" });
        break;
      default:
        fail({ errMsg: "requestPayment:fail 系统错误" });
    }
  };
  return api;
}

/** The confirm requests `api` sent for order `id`. */
const confirms = (api, id) => api.requests.filter((r) => r.method === "POST" && r.url.endsWith(`/pay/orders/${id}/confirm`));

async function shopper(user) {
  const api = wechat(user);
  globalThis.wx = api;
  const cloud = createClient({ server: server.url, app: "shop" });
  const me = await cloud.auth.login();
  return { api, cloud, me };
}

test("wechat: an order priced by the before function is paid through wx.requestPayment and confirmed by the server", async () => {
  const { api, cloud, me } = await shopper("alice");
  try {
    assert.equal(cloud.adapter.name, "wechat");
    const order = await cloud.pay.request({ data: { sku: "tea", qty: 2 }, key: "tea-tap-1" });
    assert.equal(order.state, "paid", JSON.stringify(order));
    assert.equal(order.amount_fen, 2400, "priced on the server");
    assert.equal(order.description, "A pot of tea x2");
    assert.deepEqual(order.metadata, { sku: "tea", qty: 2 });
    assert.equal(order.user_id, me.id);
    assert.match(order.transaction_id, /^42000/);
    assert.ok(order.paid_at);

    // wx.requestPayment got exactly the server's signed parameters, once.
    assert.equal(api.payments.length, 1);
    assert.deepEqual(Object.keys(api.payments[0]).sort(), ["nonceStr", "package", "paySign", "signType", "timeStamp"]);
    assert.match(api.payments[0].package, /^prepay_id=/);
    assert.equal(api.payments[0].signType, "RSA");
    // The notification was dropped: the server knew of the payment only because it was asked.
    assert.equal(confirms(api, order.id).length, 1);

    assert.equal((await cloud.pay.order(order.id)).state, "paid");
    assert.equal((await cloud.pay.confirm(order.id)).state, "paid");
    // The same key again: the same order, paid, so no payment sheet.
    const again = await cloud.pay.request({ data: { sku: "tea", qty: 2 }, key: "tea-tap-1" });
    assert.equal(again.id, order.id);
    assert.equal(again.state, "paid");
    assert.equal(api.payments.length, 1, "nothing left to pay: no sheet");

    // Another user does not see the order.
    globalThis.wx = wechat("bob");
    const bob = createClient({ server: server.url, app: "shop" });
    await bob.auth.login();
    await assert.rejects(bob.pay.order(order.id), (e) => e.code === "order_not_found" && e.status === 404);
    await assert.rejects(bob.pay.confirm(order.id), (e) => e.code === "order_not_found");
    // What the before function refuses is not ordered.
    await assert.rejects(bob.pay.request({ data: { sku: "caviar" } }), (e) => e.code === "function_error");
    assert.equal(globalThis.wx.payments.length, 0);
  } finally {
    delete globalThis.wx;
  }
});

test("wechat: a function that makes its own order with ctx.pay.createOrder is paid the same way", async () => {
  const { api, cloud, me } = await shopper("carol");
  try {
    const order = await cloud.pay.request({ function: "gift", data: { to: "dan", key: "gift-1" } });
    assert.equal(order.state, "paid", JSON.stringify(order));
    assert.equal(order.amount_fen, 5000);
    assert.equal(order.user_id, me.id);
    assert.deepEqual(order.metadata, { to: "dan" });
    assert.equal(api.payments.length, 1);
    // A key goes to the function in its data, not to the route.
    await assert.rejects(
      cloud.pay.request({ function: "gift", data: {}, key: "k" }),
      (e) => e instanceof CloudError && e.code === "invalid_argument",
    );
    // A function that answers something else than an order.
    await assert.rejects(cloud.pay.request({ function: "stats" }), (e) => e.code === "not_an_order");
    assert.equal(api.payments.length, 1);
  } finally {
    delete globalThis.wx;
  }
});

test("wechat: the user cancelling rejects with payment_cancelled and the order id; the same key then pays the same order", async () => {
  const { api, cloud } = await shopper("erin");
  try {
    api.user = "cancel";
    let cancelled;
    await assert.rejects(cloud.pay.request({ data: { sku: "cake" }, key: "cake-tap-1" }), (e) => {
      assert.ok(e instanceof CloudError);
      assert.equal(e.code, "payment_cancelled");
      assert.match(e.message, /requestPayment:fail cancel/);
      assert.match(e.order_id, /\S/);
      assert.equal(e.orderId, e.order_id);
      cancelled = e.order_id;
      return true;
    });
    assert.equal(confirms(api, cancelled).length, 0, "nothing to confirm after a cancel");
    const waiting = await cloud.pay.order(cancelled);
    assert.equal(waiting.state, "created", "still payable");

    // The sheet failing otherwise: payment_failed, the same order.
    api.user = "fail";
    await assert.rejects(
      cloud.pay.request({ data: { sku: "cake" }, key: "cake-tap-1" }),
      (e) => e.code === "payment_failed" && e.order_id === cancelled,
    );

    api.user = "pay";
    const paid = await cloud.pay.request({ data: { sku: "cake" }, key: "cake-tap-1" });
    assert.equal(paid.id, cancelled, "the same order");
    assert.equal(paid.state, "paid");
    assert.equal(paid.amount_fen, 800);
    assert.equal(api.payments.length, 3);
    assert.equal(new Set(api.payments.map((p) => p.package)).size, 1, "the same prepay id");
    assert.equal(new Set(api.payments.map((p) => p.paySign)).size, 3, "parameters signed afresh each time");

    // A new key is a new order.
    api.user = "cancel";
    await assert.rejects(
      cloud.pay.request({ data: { sku: "cake" }, key: "cake-tap-2" }),
      (e) => e.code === "payment_cancelled" && e.order_id !== cancelled,
    );
  } finally {
    delete globalThis.wx;
  }
});

test("wechat: WeChat's ok is a hint: the server is confirmed with again while it says created, then the order is answered as it is", async () => {
  const { api, cloud } = await shopper("fay");
  try {
    // Paid at the platform a moment after the sheet said ok: found on a later confirm.
    api.user = "pay-late";
    const late = await cloud.pay.request({ data: { sku: "tea" } });
    assert.equal(late.state, "paid");
    const lateConfirms = confirms(api, late.id).length;
    assert.ok(lateConfirms >= 2 && lateConfirms <= 4, `confirmed ${lateConfirms} times`);

    // Said ok, never paid: confirmed four times (at once, then three more a second apart), and
    // answered unpaid; the caller checks the state.
    api.user = "unpaid";
    const started = Date.now();
    const unpaid = await cloud.pay.request({ data: { sku: "tea" } });
    assert.equal(unpaid.state, "created");
    assert.equal(confirms(api, unpaid.id).length, 4);
    assert.ok(Date.now() - started >= 3_000, "a second apart");

    // confirm: false answers the order as the server has it, without asking the platform; its
    // notification arrives on its own.
    api.user = "pay-notified";
    const unconfirmed = await cloud.pay.request({ data: { sku: "cake" }, confirm: false });
    assert.equal(confirms(api, unconfirmed.id).length, 0);
    assert.ok(["created", "paid"].includes(unconfirmed.state), unconfirmed.state);
    let state = unconfirmed.state;
    for (let i = 0; i < 100 && state !== "paid"; i += 1) {
      await sleep(100);
      state = (await cloud.pay.order(unconfirmed.id)).state;
    }
    assert.equal(state, "paid", "paid by the platform's notification");
  } finally {
    delete globalThis.wx;
  }
});

test("an app without a before function refuses client orders with client_orders_disabled", async () => {
  await createApp(server, "bare");
  const api = wechat("gus");
  globalThis.wx = api;
  try {
    const cloud = createClient({ server: server.url, app: "bare" });
    await cloud.auth.loginForDevelopment("gus");
    await assert.rejects(cloud.pay.request({ data: { sku: "tea" } }), (e) => {
      assert.equal(e.code, "client_orders_disabled");
      assert.equal(e.status, 403);
      assert.equal(e.order_id, undefined);
      return true;
    });
    assert.equal(api.payments.length, 0);
  } finally {
    delete globalThis.wx;
  }
});

// The other platforms have payment calls of their own, for their own providers: never called.
const elsewhere = [
  ["qq", "qq", ["requestPayment"]],
  ["tt", "douyin", ["pay", "requestPayment"]],
  ["my", "alipay", ["tradePay", "requestPayment"]],
];

for (const [global, platform, calls] of elsewhere) {
  test(`${platform}: cloud.pay.request rejects with payment_not_supported before ordering anything`, async () => {
    const api = standIn(platform, emulator, `${platform}-app`, "hal");
    const called = [];
    for (const call of calls) api[call] = (options) => called.push(call) && options.fail?.({ errMsg: `${call}:fail` });
    globalThis[global] = api;
    try {
      const cloud = createClient({ server: server.url, app: "shop" });
      assert.equal(cloud.adapter.name, platform);
      const me = await cloud.auth.loginForDevelopment(`${platform}-hal`);
      await assert.rejects(cloud.pay.request({ data: { sku: "tea" } }), (e) => {
        assert.ok(e instanceof CloudError);
        assert.equal(e.code, "payment_not_supported");
        assert.match(e.message, /only WeChat Pay/);
        assert.match(e.message, new RegExp(platform));
        return true;
      });
      assert.deepEqual(called, []);
      const orders = await server.admin("GET", `/v1/admin/apps/shop/pay/orders?user=${me.id}`);
      assert.deepEqual(orders.items, [], "no order was made");
    } finally {
      delete globalThis[global];
    }
  });
}

test("web: cloud.pay.request rejects with payment_not_supported; orders can still be read", async () => {
  const cloud = createClient({ server: server.url, app: "shop" });
  assert.equal(cloud.adapter.name, "web");
  await cloud.auth.loginForDevelopment("web-ivy");
  await assert.rejects(cloud.pay.request({ function: "gift", data: {} }), (e) => e.code === "payment_not_supported");
  await assert.rejects(cloud.pay.order("ord_missing"), (e) => e.code === "order_not_found");
  assert.throws(() => cloud.pay.order(""), (e) => e.code === "invalid_id");
});
