// The Node.js peer of the payments benchmark (bench/payments.sh): what a hand-written merchant
// backend does with one WeChat Pay API v3 callback, on node:http and node:crypto alone (no npm
// dependency), written simply and fairly.
//
//   node bench/peers/payments/server.mjs PORT SETTINGS_JSON
//
// SETTINGS_JSON (a file): {mchid, appid, api_v3_key, platform_serial, platform_public_key (PEM),
// orders: [{out_trade_no, amount_fen}]}.
//
// - `POST` on any path: a callback. The `Wechatpay-*` headers: a signature probe refused, the
//   timestamp within 300 s, the serial the platform's, then RSA-SHA256 (PKCS#1 v1.5) over
//   `timestamp\nnonce\nbody\n` with the platform's public key (a KeyObject made once); the
//   envelope parsed, its resource decrypted with AES-256-GCM (the APIv3 key, the resource's
//   nonce and associated data, the tag the ciphertext's last 16 bytes); the transaction bound to
//   the order (mchid, appid, out_trade_no, amount, trade_state); the order marked paid in an
//   in-memory Map, once. 204 when taken (a repeat too), 401/400/404 with a JSON error otherwise.
//   Nothing is written to disk: the state lives in memory only.
// - `GET /readyz`: 200. `GET /stats`: {orders, paid, paid_changes, taken, refused}.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const [portText, settingsPath] = process.argv.slice(2);
const settings = JSON.parse(fs.readFileSync(settingsPath, 'utf8'));
const platformKey = crypto.createPublicKey(settings.platform_public_key);
const apiV3Key = Buffer.from(settings.api_v3_key, 'utf8');
const PROBE = 'WECHATPAY/SIGNTEST/';
const MAX_SKEW_SECS = 300;

// out_trade_no -> {amount_fen, state, transaction_id}
const orders = new Map();
for (const o of settings.orders) {
  orders.set(o.out_trade_no, { amount_fen: o.amount_fen, state: 'created', transaction_id: null });
}
const stats = { taken: 0, refused: 0, paid_changes: 0 };

class Refused extends Error {
  constructor(status, code) {
    super(code);
    this.status = status;
    this.code = code;
  }
}

function handle(headers, body) {
  const timestamp = headers['wechatpay-timestamp'] || '';
  const nonce = headers['wechatpay-nonce'] || '';
  const signature = headers['wechatpay-signature'] || '';
  const serial = headers['wechatpay-serial'] || '';
  if (signature.startsWith(PROBE)) throw new Refused(401, 'signature_probe');
  const at = Number.parseInt(timestamp, 10);
  if (!Number.isFinite(at) || Math.abs(Math.floor(Date.now() / 1000) - at) >= MAX_SKEW_SECS) {
    throw new Refused(401, 'stale');
  }
  if (serial !== settings.platform_serial) throw new Refused(401, 'unknown_serial');
  const message = Buffer.concat([Buffer.from(`${timestamp}\n${nonce}\n`), body, Buffer.from('\n')]);
  const ok = crypto.verify('RSA-SHA256', message, platformKey, Buffer.from(signature, 'base64'));
  if (!ok) throw new Refused(401, 'bad_signature');

  let envelope;
  let resource;
  try {
    envelope = JSON.parse(body.toString('utf8'));
    const r = envelope.resource;
    if (r.algorithm !== 'AEAD_AES_256_GCM') throw new Error('algorithm');
    const sealed = Buffer.from(r.ciphertext, 'base64');
    const decipher = crypto.createDecipheriv('aes-256-gcm', apiV3Key, Buffer.from(r.nonce, 'utf8'));
    decipher.setAAD(Buffer.from(r.associated_data || '', 'utf8'));
    decipher.setAuthTag(sealed.subarray(sealed.length - 16));
    const plain = Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final()]);
    resource = JSON.parse(plain.toString('utf8'));
  } catch {
    throw new Refused(401, 'does_not_decrypt');
  }
  if (envelope.event_type !== 'TRANSACTION.SUCCESS') {
    // A hand-written backend that takes no refunds: anything else is not its business.
    throw new Refused(404, 'not_handled');
  }
  const order = orders.get(resource.out_trade_no);
  if (!order) throw new Refused(404, 'order_not_found');
  if (resource.mchid !== settings.mchid || resource.appid !== settings.appid
      || resource.amount?.total !== order.amount_fen || resource.trade_state !== 'SUCCESS'
      || typeof resource.transaction_id !== 'string') {
    throw new Refused(400, 'mismatch');
  }
  if (order.state === 'created') {
    order.state = 'paid';
    order.transaction_id = resource.transaction_id;
    stats.paid_changes += 1;
  }
}

const server = http.createServer((req, res) => {
  if (req.method === 'GET') {
    if (req.url === '/readyz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    } else if (req.url === '/stats') {
      let paid = 0;
      for (const o of orders.values()) if (o.state === 'paid') paid += 1;
      res.writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ orders: orders.size, paid, ...stats }));
    } else {
      res.writeHead(404).end();
    }
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    try {
      handle(req.headers, Buffer.concat(chunks));
      stats.taken += 1;
      res.writeHead(204).end();
    } catch (e) {
      if (!(e instanceof Refused)) throw e;
      stats.refused += 1;
      res.writeHead(e.status, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code: e.code } }));
    }
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(portText), '127.0.0.1');
