// The sockets of the console-at-scale benchmark (bench/console_scale.py runs it): one Node.js
// process with npm `ws` (as bench/realtime.mjs, from bench/peers/realtime) holds an app's
// authenticated WebSockets while the Python side measures the console's Realtime page.
//
//   node bench/console_sockets.mjs '{"json": "settings"}'
//
// It logs in `sockets / 10` users (dev logins, ten sockets each, as bench/realtime.mjs), opens
// `sockets` sockets `connect_width` at a time, each joining `channel` and present in it
// (`track`, a small state; no socket watches presence, so that nobody gets 18,000² diffs), then
// prints one JSON line (`{"phase": "ready", …}`) and waits for orders on its standard input, one
// a line, each answered by one JSON line:
//
//   live N   open the console's own socket (`/console/api/apps/{app}/live`, with the console's
//            Origin and the session cookie) N times, one after the other: the time from the
//            handshake's start to its first `sockets` frame (the live count), and what it said;
//   close    close every socket, answer what happened to them meanwhile, and exit.
//
// Standard input closed is `close`.
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { pool } from './pool.mjs';

const s = JSON.parse(process.argv[2] || '{}');
const require = createRequire(path.join(path.resolve(s.modules), 'noop.js'));
const WebSocket = require('ws');

const now = () => performance.now();
const log = (...args) => console.error('[console_sockets]', ...args);
const say = (object) => process.stdout.write(JSON.stringify(object) + '\n');
const pct = (values, p) => {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return +sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))))].toFixed(3);
};

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function call(method, urlPath, body) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: s.port, path: urlPath, method, agent,
      headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json = null;
        try { json = text ? JSON.parse(text) : null; } catch { json = text; }
        resolve({ status: res.statusCode, body: json });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

async function tokens(users) {
  const out = new Array(users);
  const result = await pool(users, 8, async (i) => {
    const res = await call('POST', `/v1/apps/${s.app}/auth/sessions`, { provider: 'dev', user: `u${i}` });
    if (res.status !== 201) throw new Error(`login: ${res.status} ${JSON.stringify(res.body).slice(0, 200)}`);
    out[i] = res.body.access_token;
  });
  if (result.failed) throw new Error(`logins failed: ${result.failed}: ${result.firstErrors}`);
  return out;
}

const stats = { closes: {}, errors: {} };

// One socket: `ready`, then the channel joined, then present in it.
function open(token, i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${s.port}/v1/apps/${s.app}/realtime`, {
      headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false, handshakeTimeout: 30000,
    });
    const sock = { ws, closed: null };
    const timer = setTimeout(() => reject(new Error('timeout before tracked')), 60000);
    const fail = (e) => { clearTimeout(timer); reject(e); };
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.type === 'ready') {
        ws.send(JSON.stringify({ type: 'subscribe', id: 'r', channel: s.channel }));
      } else if (m.type === 'subscribed') {
        ws.send(JSON.stringify({ type: 'track', id: 'r', state: { n: i } }));
      } else if (m.type === 'tracked') {
        clearTimeout(timer);
        resolve(sock);
      } else if (m.type === 'error') {
        stats.errors[m.code] = (stats.errors[m.code] || 0) + 1;
        fail(new Error(`error ${m.code}: ${m.message}`));
      } else if (m.type === 'ping') {
        ws.send('{"type":"pong"}');
      }
    });
    ws.on('close', (code) => {
      sock.closed = code;
      stats.closes[code] = (stats.closes[code] || 0) + 1;
      fail(new Error(`closed ${code}`));
    });
    ws.on('error', fail);
  });
}

// The console's own socket, as its Realtime page opens it: time to the first `sockets` frame.
function liveOnce() {
  return new Promise((resolve) => {
    const t0 = now();
    const origin = `http://127.0.0.1:${s.console_port}`;
    const ws = new WebSocket(`ws://127.0.0.1:${s.console_port}/console/api/apps/${s.app}/live`, {
      headers: { origin, cookie: s.cookie }, perMessageDeflate: false, handshakeTimeout: 10000,
    });
    const done = (result) => { clearTimeout(timer); ws.terminate(); resolve(result); };
    const timer = setTimeout(() => done({ error: 'no sockets frame within 10 s' }), 10000);
    ws.on('message', (raw) => {
      const m = JSON.parse(raw.toString());
      if (m.type === 'sockets') done({ ms: now() - t0, count: m.count, users: m.users });
    });
    ws.on('unexpected-response', (req, res) => done({ error: `handshake answered ${res.statusCode}` }));
    ws.on('error', (e) => done({ error: String(e.message || e) }));
  });
}

async function live(times) {
  const ms = [], errors = [];
  let last = null;
  for (let k = 0; k < times; k++) {
    const r = await liveOnce();
    if (r.error) { errors.push(r.error); if (errors.length >= 3) break; continue; }
    ms.push(r.ms);
    last = r;
  }
  return {
    phase: 'live', requests: ms.length, p50_ms: pct(ms, 50), p95_ms: pct(ms, 95), max_ms: pct(ms, 100),
    count: last?.count ?? null, users: last?.users ?? null, errors,
  };
}

async function main() {
  const n = s.sockets;
  const users = Math.ceil(n / 10);
  const t = await tokens(users);
  log(`${users} users logged in; opening ${n} sockets, each in ${s.channel} and present`);
  const sockets = [];
  const start = now();
  const connect = await pool(n, s.connect_width, async (i) => { sockets.push(await open(t[i % users], i)); });
  const seconds = (now() - start) / 1000;
  const closesBefore = Object.values(stats.closes).reduce((a, b) => a + b, 0);
  say({
    phase: 'ready', requested: n, connected: sockets.length, failed: connect.failed, first_errors: connect.firstErrors,
    users, seconds: +seconds.toFixed(3), per_sec: Math.round(sockets.length / seconds),
    client_rss_mb: Math.round(process.memoryUsage().rss / 1048576),
  });
  const finish = () => {
    const closed = sockets.filter((x) => x.closed !== null).length;
    say({ phase: 'closed', closed_meanwhile: closed, closes: stats.closes, errors: stats.errors, closes_before: closesBefore });
    for (const x of sockets) x.ws.terminate();
    process.exit(0);
  };
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', async (line) => {
    const [order, arg] = line.trim().split(/\s+/);
    if (order === 'live') say(await live(Number(arg) || 1));
    else if (order === 'close') finish();
  });
  lines.on('close', finish);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
