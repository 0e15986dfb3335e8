// `cloud.pay` against the real server and the emulator's WeChat Pay merchant platform and
// Alipay trade gateway: the app `shop` has the WeChat and Alipay logins, a merchant of each
// configured on the emulator, a `before` function that prices orders from a catalogue (for the
// provider of the user's login) and callable functions that make their own orders. The
// stand-in `wx.requestPayment` checks the parameters' signature as WeChat would, and "the user
// pays" by asking the emulator to pay the order the parameters belong to (their `package`, the
// prepay id WeChat knows the order by), then calls `success`. The stand-in `my.tradePay` does
// the same for the trade its `tradeNO` names, then calls `success` with a `resultCode`.
import assert from "node:assert/strict";
import { createVerify, generateKeyPairSync } from "node:crypto";
import { after, before, test } from "node:test";

import { CloudError, createClient } from "../dist/index.mjs";
import { createApp, standIn, startEmulator, startServer } from "./support.mjs";

const APPID = "wechat-shop";
const MCHID = "1900000109";
const SERIAL = "5157F09EFDC096DE15EBE81A47057A72";
const API_V3_KEY = "0123456789abcdef0123456789abcdef";
const ALIPAY_APP_ID = "2021000000000088";

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
  // Alipay: the mini program's key pair, registered with the emulator, whose answer is the key
  // Alipay signs with; the same app is the login provider and the merchant.
  const alipayKeys = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
    publicKeyEncoding: { type: "spki", format: "pem" },
  });
  const registered = await emulator.register({
    platform: "alipay",
    app_id: ALIPAY_APP_ID,
    app_public_key: alipayKeys.publicKey,
  });
  const alipay = {
    app_id: ALIPAY_APP_ID,
    private_key: alipayKeys.privateKey,
    alipay_public_key: registered.alipay_public_key,
    base_url: `${emulator.url}/alipay/gateway.do`,
  };
  await server.admin("PUT", "/v1/admin/apps/shop/auth/providers/alipay", alipay);
  const merchant = await server.admin("PUT", "/v1/admin/apps/shop/pay/merchants/alipay", alipay);
  assert.equal(merchant.app_id, ALIPAY_APP_ID);
  assert.equal(merchant.login_provider, "alipay");
  // The price is decided on the server, from what the client asks for; the provider too, from
  // the platform the user logged in with.
  await server.admin("PUT", "/v1/admin/apps/shop/functions/price", {
    source: `const CATALOGUE = { tea: { fen: 1200, name: "A pot of tea" }, cake: { fen: 800, name: "A slice of cake" } };
    export default async (event, ctx) => {
      const item = CATALOGUE[event.data && event.data.sku];
      if (!item) throw new Error("no such product");
      const qty = Math.max(1, Math.min(10, Math.floor(Number(event.data.qty) || 1)));
      const provider = ctx.auth.provider === "alipay" ? "alipay" : "wechat";
      return { provider, amount_fen: item.fen * qty, description: item.name + " x" + qty, metadata: { sku: event.data.sku, qty } };
    }`,
    triggers: [{ pay: ["before"] }],
  });
  // A callable function that makes the order itself.
  await server.admin("PUT", "/v1/admin/apps/shop/functions/gift", {
    source: `export default async (data, ctx) => ctx.pay.createOrder({
      amount_fen: 5000, description: "A gift card", user: ctx.auth.id, key: data.key, metadata: { to: data.to },
    })`,
  });
  // One that makes an Alipay order.
  await server.admin("PUT", "/v1/admin/apps/shop/functions/voucher", {
    source: `export default async (data, ctx) => ctx.pay.createOrder({
      provider: "alipay", amount_fen: 3000, description: "A tea voucher", user: ctx.auth.id, key: data.key,
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

/**
 * A stand-in `my` for `user` with `tradePay`. `api.user` says what the user does on the payment
 * sheet, answered as my.tradePay answers, through `success` with a `resultCode`: `pay` (the
 * emulator pays the trade, its notification dropped so that only a query finds it, then 9000),
 * `processing` (8000 at once, the emulator paid a second and a half later), `unpaid` (9000
 * though nothing was paid), `cancel` (6001), `network` (6002) or `fail` (4000).
 * `api.trades` records what `tradePay` was called with.
 */
function alipay(user) {
  const api = standIn("alipay", emulator, ALIPAY_APP_ID, user);
  // The orders the server answered, by their trade number, as Alipay knows them.
  const tradeNumbers = new Map();
  const request = api.request;
  api.request = ({ success, ...options }) =>
    request({
      ...options,
      success: (answer) => {
        const order = answer.data;
        if (order && order.payment && order.payment.tradeNO) tradeNumbers.set(order.payment.tradeNO, order.out_trade_no);
        success(answer);
      },
    });
  api.user = "pay";
  api.trades = [];
  api.tradePay = ({ success, fail, ...options }) => {
    api.trades.push(options);
    const outTradeNo = tradeNumbers.get(options.tradeNO);
    if (!outTradeNo) return fail({ error: 4, errorMessage: "no such trade" });
    const payTrade = () =>
      emulator.post("/emulator/alipay/pay", { app_id: ALIPAY_APP_ID, out_trade_no: outTradeNo, notify: "drop" });
    switch (api.user) {
      case "pay":
        payTrade().then(
          () => success({ resultCode: "9000" }),
          (e) => success({ resultCode: "4000", memo: e.message }),
        );
        break;
      case "processing":
        success({ resultCode: "8000" });
        sleep(1_500).then(payTrade);
        break;
      case "unpaid":
        success({ resultCode: "9000" });
        break;
      case "cancel":
        success({ resultCode: "6001" });
        break;
      case "network":
        success({ resultCode: "6002" });
        break;
      default:
        success({ resultCode: "4000" });
    }
  };
  return api;
}

async function alipayShopper(user) {
  const api = alipay(user);
  globalThis.my = api;
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

// Alipay mini programs pay Alipay orders through my.tradePay.

test("alipay: an order made by a function with ctx.pay.createOrder is paid through my.tradePay and confirmed by the server", async () => {
  const { api, cloud, me } = await alipayShopper("alice");
  try {
    assert.equal(cloud.adapter.name, "alipay");
    const order = await cloud.pay.request({ function: "voucher", data: { key: "voucher-1" } });
    assert.equal(order.state, "paid", JSON.stringify(order));
    assert.equal(order.provider, "alipay");
    assert.equal(order.amount_fen, 3000);
    assert.equal(order.user_id, me.id);
    assert.ok(order.paid_at);

    // my.tradePay got the trade the server created, and nothing else, once.
    assert.equal(api.trades.length, 1);
    assert.deepEqual(Object.keys(api.trades[0]), ["tradeNO"]);
    assert.equal(order.transaction_id, api.trades[0].tradeNO, "Alipay's trade number");
    // The notification was dropped: the server knew of the payment only because it was asked.
    assert.equal(confirms(api, order.id).length, 1);

    // The same key again: the same order, paid, so no payment sheet.
    const again = await cloud.pay.request({ function: "voucher", data: { key: "voucher-1" } });
    assert.equal(again.id, order.id);
    assert.equal(again.state, "paid");
    assert.equal(api.trades.length, 1, "nothing left to pay: no sheet");
    const detail = await server.admin("GET", `/v1/admin/apps/shop/pay/orders/${order.id}`);
    assert.deepEqual(detail.events.map((e) => [e.name, e.source]), [["paid", "query"]]);
  } finally {
    delete globalThis.my;
  }
});

test("alipay: resultCode 6001 rejects with payment_cancelled and 4000 with payment_failed, each with the order id; 6002 is asked of the server; the same key then pays the same order", async () => {
  const { api, cloud } = await alipayShopper("bruno");
  try {
    api.user = "cancel";
    let cancelled;
    await assert.rejects(cloud.pay.request({ function: "voucher", data: { key: "voucher-2" } }), (e) => {
      assert.ok(e instanceof CloudError);
      assert.equal(e.code, "payment_cancelled");
      assert.match(e.message, /resultCode 6001/);
      assert.match(e.order_id, /\S/);
      assert.equal(e.orderId, e.order_id);
      cancelled = e.order_id;
      return true;
    });
    assert.equal(confirms(api, cancelled).length, 0, "nothing to confirm after a cancel");
    assert.equal((await cloud.pay.order(cancelled)).state, "created", "still payable");

    api.user = "fail";
    await assert.rejects(cloud.pay.request({ function: "voucher", data: { key: "voucher-2" } }), (e) => {
      assert.equal(e.code, "payment_failed");
      assert.match(e.message, /resultCode 4000/);
      assert.equal(e.order_id, cancelled);
      return true;
    });
    assert.equal(confirms(api, cancelled).length, 0);
    // A network error may come after the money was taken: the server is asked, and says unpaid.
    api.user = "network";
    const unsure = await cloud.pay.request({ function: "voucher", data: { key: "voucher-2" } });
    assert.equal(unsure.id, cancelled);
    assert.equal(unsure.state, "created");
    assert.ok(confirms(api, cancelled).length > 0, "confirmed with the server");

    api.user = "pay";
    const paid = await cloud.pay.request({ function: "voucher", data: { key: "voucher-2" } });
    assert.equal(paid.id, cancelled, "the same order");
    assert.equal(paid.state, "paid");
    assert.equal(api.trades.length, 4);
    assert.equal(new Set(api.trades.map((t) => t.tradeNO)).size, 1, "the same trade each time");
  } finally {
    delete globalThis.my;
  }
});

test("alipay: the before function prices an Alipay order for an Alipay user; 8000 is confirmed until paid, and 9000 without a payment answers the order unpaid", async () => {
  const { api, cloud } = await alipayShopper("chen");
  try {
    // Paid at Alipay a moment after the sheet said "processing": found on a later confirm.
    api.user = "processing";
    const order = await cloud.pay.request({ data: { sku: "cake", qty: 3 }, key: "cake-ali-1" });
    assert.equal(order.provider, "alipay", "the before function chose it");
    assert.equal(order.amount_fen, 2400);
    assert.equal(order.description, "A slice of cake x3");
    assert.equal(order.state, "paid", JSON.stringify(order));
    const tries = confirms(api, order.id).length;
    assert.ok(tries >= 2 && tries <= 4, `confirmed ${tries} times`);

    // Said 9000, never paid: confirmed four times, answered unpaid; the caller checks the state.
    api.user = "unpaid";
    const unpaid = await cloud.pay.request({ data: { sku: "tea" } });
    assert.equal(unpaid.provider, "alipay");
    assert.equal(unpaid.state, "created");
    assert.equal(confirms(api, unpaid.id).length, 4);
  } finally {
    delete globalThis.my;
  }
});

test("an order of the other platform's provider rejects with payment_not_supported and its id, without a sheet", async () => {
  // A WeChat user's session, carried into an Alipay mini program: their orders are WeChat Pay's.
  const wechatUser = await shopper("dora");
  const wechatSession = wechatUser.api.storage.get("cloudlet.session:shop");
  delete globalThis.wx;
  const my = alipay("dora");
  my.storage.set("cloudlet.session:shop", wechatSession);
  globalThis.my = my;
  try {
    const cloud = createClient({ server: server.url, app: "shop" });
    assert.equal(cloud.adapter.name, "alipay");
    for (const request of [{ function: "gift", data: { key: "gift-dora" } }, { data: { sku: "tea" } }]) {
      await assert.rejects(cloud.pay.request(request), (e) => {
        assert.equal(e.code, "payment_not_supported");
        assert.match(e.message, /provider is wechat/);
        assert.match(e.order_id, /\S/);
        return true;
      });
    }
    assert.equal(my.trades.length, 0);
  } finally {
    delete globalThis.my;
  }

  // And an Alipay user's session in a WeChat mini program.
  const alipayUser = await alipayShopper("ed");
  const alipaySession = alipayUser.api.storage.get("cloudlet.session:shop");
  delete globalThis.my;
  const wx = wechat("ed");
  wx.storage.set("cloudlet.session:shop", alipaySession);
  globalThis.wx = wx;
  try {
    const cloud = createClient({ server: server.url, app: "shop" });
    assert.equal(cloud.adapter.name, "wechat");
    await assert.rejects(
      cloud.pay.request({ function: "voucher", data: { key: "voucher-ed" } }),
      (e) => e.code === "payment_not_supported" && /provider is alipay/.test(e.message) && typeof e.order_id === "string",
    );
    assert.equal(wx.payments.length, 0);
  } finally {
    delete globalThis.wx;
  }
});

// The other platforms have payment calls of their own, for their own providers: never called.
const elsewhere = [
  ["qq", "qq", ["requestPayment"]],
  ["tt", "douyin", ["pay", "requestPayment"]],
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
        assert.match(e.message, /can not pay/);
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
