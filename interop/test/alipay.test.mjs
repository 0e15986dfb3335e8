// The emulator's Alipay gateway against Alipay's own Node SDK (npm `alipay-sdk`): the SDK signs
// the requests (RSA2) and verifies the replies and the payment notification with the
// emulator's Alipay public key. A success here means the emulator's string-to-sign agrees with
// the SDK's, both ways.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { AlipaySdk, AlipayRequestError } from 'alipay-sdk';

import { EMULATOR, control, key, notifyServer, unique } from '../support.mjs';

const APP_ID = '2021000000000777';
const BUYER = 'o_interop_buyer_0001';
// Verification of replies is opt-in in the SDK (`validateSign`); every call here turns it on.
const VERIFY = { validateSign: true };

let alipayPublicKey;
let notify;

/** The official SDK pointed at the emulator, as an app would configure it. */
function sdk({ privateKey = key('alipay-app.pem'), publicKey = alipayPublicKey } = {}) {
  return new AlipaySdk({
    appId: APP_ID,
    privateKey,
    keyType: 'PKCS8',
    alipayPublicKey: publicKey,
    gateway: `${EMULATOR}/alipay/gateway.do`,
    endpoint: EMULATOR,
  });
}

async function createTrade(client, outTradeNo, total = '88.88') {
  return client.exec('alipay.trade.create', {
    notify_url: notify.url,
    bizContent: {
      out_trade_no: outTradeNo,
      total_amount: total,
      subject: 'interop: a cup of tea',
      product_code: 'JSAPI_PAY',
      buyer_open_id: BUYER,
    },
  }, VERIFY);
}

before(async () => {
  notify = await notifyServer((response) => response.end('success'));
  const app = await control('POST', '/emulator/apps', {
    platform: 'alipay', app_id: APP_ID, app_public_key: key('alipay-app.pub.pem'), open_id_mode: true,
  });
  alipayPublicKey = app.alipay_public_key;
  assert.match(alipayPublicKey, /-----BEGIN PUBLIC KEY-----/);
});

after(() => notify.close());

test('alipay.trade.create and .query: signed by the SDK, replies verified by the SDK', async () => {
  const client = sdk();
  const outTradeNo = unique('ali_');
  const created = await createTrade(client, outTradeNo);
  assert.equal(created.code, '10000', JSON.stringify(created));
  assert.equal(created.outTradeNo, outTradeNo);
  assert.match(created.tradeNo, /^2026\d{24}$/);

  const queried = await client.exec('alipay.trade.query', { bizContent: { out_trade_no: outTradeNo } }, VERIFY);
  assert.equal(queried.code, '10000', JSON.stringify(queried));
  assert.equal(queried.tradeNo, created.tradeNo);
  assert.equal(queried.tradeStatus, 'WAIT_BUYER_PAY');
  assert.equal(queried.totalAmount, '88.88');
  assert.equal(queried.buyerOpenId, BUYER);
});

test('the SDK does verify: a genuine reply checked with another Alipay public key is refused', async () => {
  const outTradeNo = unique('ali_');
  const created = await createTrade(sdk(), outTradeNo);
  assert.equal(created.code, '10000', JSON.stringify(created));
  const wrong = sdk({ publicKey: key('stranger.pub.pem') });
  const query = { bizContent: { out_trade_no: outTradeNo } };
  await assert.rejects(
    wrong.exec('alipay.trade.query', query, VERIFY),
    (error) => error instanceof AlipayRequestError && /验签失败/.test(error.message),
  );
  // The same reply, read without verification: it was a success all along.
  assert.equal((await wrong.exec('alipay.trade.query', query)).tradeNo, created.tradeNo);
  // And with the emulator's key it verifies.
  assert.equal((await sdk().exec('alipay.trade.query', query, VERIFY)).tradeNo, created.tradeNo);
});

test('the emulator does check the SDK\'s signature: another app key is isv.invalid-signature', async () => {
  const impostor = sdk({ privateKey: key('stranger.pem') });
  // Not verified: a gateway refusal comes back as `error_response`, which is not signed.
  const answer = await impostor.exec('alipay.trade.query', { bizContent: { out_trade_no: unique('ali_') } });
  assert.equal(answer.code, '40002');
  assert.equal(answer.subCode, 'isv.invalid-signature');
});

test('the payment notification passes checkNotifySign and checkNotifySignV2, and a changed one fails', async () => {
  const client = sdk();
  const outTradeNo = unique('ali_');
  const created = await createTrade(client, outTradeNo, '12.30');
  assert.equal(created.code, '10000', JSON.stringify(created));

  const paid = await control('POST', '/emulator/alipay/pay', { app_id: APP_ID, out_trade_no: outTradeNo });
  assert.equal(paid.trade_no, created.tradeNo);

  const { headers, body } = await notify.next();
  assert.match(headers['content-type'], /application\/x-www-form-urlencoded/);
  // As a web framework hands it over: the form, decoded.
  const form = Object.fromEntries(new URLSearchParams(body));
  assert.equal(form.out_trade_no, outTradeNo);
  assert.equal(form.trade_no, created.tradeNo);
  assert.equal(form.trade_status, 'TRADE_SUCCESS');
  assert.equal(form.total_amount, '12.30');
  assert.equal(form.app_id, APP_ID);

  assert.equal(client.checkNotifySign({ ...form }), true, 'checkNotifySign');
  assert.equal(client.checkNotifySignV2({ ...form }), true, 'checkNotifySignV2');

  for (const [name, value] of [['total_amount', '0.01'], ['trade_status', 'TRADE_CLOSED'], ['out_trade_no', `${outTradeNo}9`]]) {
    const changed = { ...form, [name]: value };
    assert.equal(client.checkNotifySign(changed), false, `checkNotifySign with ${name} changed`);
    assert.equal(client.checkNotifySignV2(changed), false, `checkNotifySignV2 with ${name} changed`);
  }
  const wrong = sdk({ publicKey: key('stranger.pub.pem') });
  assert.equal(wrong.checkNotifySignV2({ ...form }), false, 'checked with another Alipay public key');

  // The trade is paid, as the SDK reads it (the reply verified).
  const queried = await client.exec('alipay.trade.query', { bizContent: { out_trade_no: outTradeNo } }, VERIFY);
  assert.equal(queried.tradeStatus, 'TRADE_SUCCESS');
  assert.match(queried.sendPayDate, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);

  // The emulator took the SDK-side answer `success` as the end of the notification.
  const { items } = await control('GET', '/emulator/alipay/notifications');
  const ours = items.filter((item) => item.body.includes(outTradeNo));
  assert.equal(ours.length, 1);
  assert.equal(ours[0].answer, 'success');
});

// Found by this check, and fixed: Alipay answers a business failure (code 40004) under
// `<method>_response`, signed, and the SDK verifies that object; the emulator answered it under
// `error_response`, so the SDK cut the wrong text out of the reply and threw 验签失败.
test('a business failure (ACQ.TRADE_NOT_EXIST) reaches the app through a verifying SDK', async () => {
  const answer = await sdk().exec('alipay.trade.query', { bizContent: { out_trade_no: unique('ali_') } }, VERIFY);
  assert.equal(answer.code, '40004');
  assert.equal(answer.subCode, 'ACQ.TRADE_NOT_EXIST');
});
