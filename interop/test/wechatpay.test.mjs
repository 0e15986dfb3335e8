// The emulator's WeChat Pay API v3 against a third-party SDK (npm `wechatpay-axios-plugin`), in
// its "WeChat Pay public key" mode (PUB_KEY_ID_…): the SDK signs the requests' Authorization,
// verifies every reply's Wechatpay-* signature, and here also checks the payment notification
// with its own reply verifier and decrypts the resource with its AES-256-GCM.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';

import { Aes, Decorator, Wechatpay } from 'wechatpay-axios-plugin';

import { EMULATOR, control, key, notifyServer, unique } from '../support.mjs';

const MCHID = '1900000777';
const APPID = 'wx-interop';
const SERIAL = randomBytes(20).toString('hex').toUpperCase();
const API_V3_KEY = randomBytes(16).toString('hex'); // 32 characters

let platform; // { public_key_id, public_key }
let notify;

/** The SDK pointed at the emulator; `certs` is its { PUB_KEY_ID_…: public key } map. */
function client({ privateKey = key('wechatpay-merchant.pem'), publicKey = platform.public_key } = {}) {
  return new Wechatpay({
    mchid: MCHID,
    serial: SERIAL,
    privateKey,
    certs: { [platform.public_key_id]: publicKey },
    baseURL: `${EMULATOR}/wechatpay/`,
  });
}

function order(outTradeNo, total) {
  return {
    appid: APPID,
    mchid: MCHID,
    description: 'interop: a cup of tea',
    out_trade_no: outTradeNo,
    notify_url: notify.url,
    amount: { total, currency: 'CNY' },
    payer: { openid: 'o_interop_payer_0001' },
  };
}

before(async () => {
  notify = await notifyServer((response) => {
    response.statusCode = 204;
    response.end();
  });
  platform = await control('POST', '/emulator/wechatpay/merchants', {
    mchid: MCHID, serial_no: SERIAL, public_key: key('wechatpay-merchant.pub.pem'), api_v3_key: API_V3_KEY,
  });
  assert.match(platform.public_key_id, /^PUB_KEY_ID_/);
  assert.match(platform.public_key, /-----BEGIN PUBLIC KEY-----/);
});

after(() => notify.close());

test('a jsapi order signed by the SDK is taken, and its reply verifies in the SDK', async () => {
  const { status, headers, data } = await client().v3.pay.transactions.jsapi.post(order(unique('wx_'), 1999));
  assert.equal(status, 200);
  assert.match(data.prepay_id, /^wx\w+$/);
  assert.equal(headers['wechatpay-serial'], platform.public_key_id);
});

test('the emulator does check the SDK\'s signature: another merchant key is 401 SIGN_ERROR', async () => {
  await assert.rejects(
    client({ privateKey: key('stranger.pem') }).v3.pay.transactions.jsapi.post(order(unique('wx_'), 1)),
    (error) => error.response?.status === 401 && error.response.data.code === 'SIGN_ERROR',
  );
});

test('the SDK does verify: a genuine reply checked with another public key is refused', async () => {
  await assert.rejects(
    client({ publicKey: key('stranger.pub.pem') }).v3.pay.transactions.jsapi.post(order(unique('wx_'), 1)),
    (error) => error.code === 'EV3_RES_HEADER_SIGNATURE_DIGEST',
  );
});

test('the payment notification verifies and decrypts with the SDK, and a changed one does not', async () => {
  const outTradeNo = unique('wx_');
  const wxpay = client();
  await wxpay.v3.pay.transactions.jsapi.post(order(outTradeNo, 4321));

  const paid = await control('POST', '/emulator/wechatpay/pay', { mchid: MCHID, out_trade_no: outTradeNo });
  const { headers, body } = await notify.next();
  assert.equal(headers['wechatpay-serial'], platform.public_key_id);

  // The SDK's own check of a signed answer (time window, serial, signature over
  // timestamp\nnonce\nbody\n), applied to the notification's headers and exact body.
  const verify = Decorator.responseVerifier({ [platform.public_key_id]: platform.public_key });
  const checked = verify.call({}, body, headers);
  assert.equal(checked, body, `the SDK refused the notification: ${checked?.message}`);

  const notification = JSON.parse(body);
  assert.equal(notification.event_type, 'TRANSACTION.SUCCESS');
  const { ciphertext, nonce, associated_data: aad, algorithm } = notification.resource;
  assert.equal(algorithm, 'AEAD_AES_256_GCM');
  const transaction = JSON.parse(Aes.AesGcm.decrypt(ciphertext, API_V3_KEY, nonce, aad));
  assert.equal(transaction.out_trade_no, outTradeNo);
  assert.equal(transaction.amount.total, 4321);
  assert.equal(transaction.trade_state, 'SUCCESS');
  assert.equal(transaction.mchid, MCHID);
  assert.equal(transaction.transaction_id, paid.transaction_id);

  // One byte changed in the body: the SDK refuses it.
  const at = body.indexOf('TRANSACTION.SUCCESS');
  const changed = `${body.slice(0, at)}t${body.slice(at + 1)}`;
  assert.equal(changed.length, body.length);
  const refused = verify.call({}, changed, headers);
  assert.equal(refused?.code, 'EV3_RES_HEADER_SIGNATURE_DIGEST');
  // Checked with another public key under the same id: refused too.
  const stranger = Decorator.responseVerifier({ [platform.public_key_id]: key('stranger.pub.pem') });
  assert.equal(stranger.call({}, body, headers)?.code, 'EV3_RES_HEADER_SIGNATURE_DIGEST');
  // The resource under another APIv3 key does not decrypt.
  assert.throws(() => Aes.AesGcm.decrypt(ciphertext, randomBytes(16).toString('hex'), nonce, aad));

  // A signed GET with a query string (`?mchid=`): the order is paid, as the SDK reads it.
  const { data } = await wxpay.v3.pay.transactions.outTradeNo._out_trade_no_.get({
    params: { mchid: MCHID }, out_trade_no: outTradeNo,
  });
  assert.equal(data.trade_state, 'SUCCESS');
  assert.equal(data.transaction_id, paid.transaction_id);
});
