// The load side of the realtime benchmark (bench/realtime.py runs it): one Node.js process with
// npm `ws` holds every socket and drives one server through a whole run, so that Cloudlet and
// the Node.js peer (bench/peers/realtime/server.mjs) are driven by the same client. PocketBase
// (Server-Sent Events) gets the connection phase only.
//
//   node bench/realtime.mjs MODE '{"json": "settings"}'   # prints one JSON object
//
// Modes: cloudlet, peer (the same protocol; logins differ), pocketbase. Cloudlet's run ends with
// record changes (a collection's subscribers under its owner rule, while records are written),
// which the peer does not have.
//
// To keep up with 10,000 subscribers, a channel's message is not JSON-parsed: its `channel` and
// `seq` are read from the text, and each socket checks that its `seq`s follow on, one by one
// (a gap is a loss, a repeat a duplicate). Every other message is parsed.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { pool } from './pool.mjs';

const [mode, settingsText] = process.argv.slice(2);
const s = JSON.parse(settingsText || '{}');
const require = createRequire(path.join(path.resolve(s.modules), 'noop.js'));
const WebSocket = require('ws');

const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pct = (values, p) => {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return +sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))))].toFixed(3);
};
const rssKib = (pid) => {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(text)[1]);
};
const log = (...args) => console.error(`[${mode}]`, ...args);

// --------------------------------------------------------------------------------- HTTP calls
// Every socket from 127.0.0.1 without bind(): binding each to an address of its own made the
// kernel's search for a free port the bottleneck (about 230 connections/s at 18,000).
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function call(method, urlPath, body, headers = {}) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: s.port, path: urlPath, method, agent,
      headers: {
        ...headers,
        ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
      },
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

async function must(method, urlPath, body, expect, headers) {
  const res = await call(method, urlPath, body, headers);
  if (res.status !== expect) throw new Error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  return res.body;
}

const admin = { authorization: `Bearer ${s.token}` };
const publishPath = (channel) => `/v1/admin/apps/${s.app}/realtime/channels/${encodeURIComponent(channel)}/messages`;
const publish = (channel, data) => must('POST', publishPath(channel), { data }, 200, admin);

// ------------------------------------------------------------------------------------ tokens
async function tokens(users, prefix = 'u') {
  if (mode === 'peer') {
    // The peer checks an HMAC-SHA256 signature, as Cloudlet checks its JWTs' (HS256).
    return Array.from({ length: users }, (_, i) => {
      const payload = Buffer.from(JSON.stringify({ sub: `u${i}`, exp: Math.floor(Date.now() / 1000) + 3600 })).toString('base64url');
      return `${payload}.${crypto.createHmac('sha256', s.secret).update(payload).digest('base64url')}`;
    });
  }
  const out = new Array(users);
  const result = await pool(users, 8, async (i) => {
    const body = await must('POST', `/v1/apps/${s.app}/auth/sessions`, { provider: 'dev', user: `${prefix}${i}` }, 201);
    out[i] = body.access_token;
  });
  if (result.failed) throw new Error(`logins failed: ${result.failed}: ${result.firstErrors}`);
  return out;
}

// ----------------------------------------------------------------------------------- sockets
const stats = { deliveries: 0, gaps: 0, duplicates: 0, resets: 0, errors: {}, closes: {} };
let onDelivery = null; // (channel, seq, sock)
let onChange = null; // (change message, sock)

function handle(sock, raw) {
  const text = raw.toString();
  if (text.includes('"type":"message"')) {
    const c = text.indexOf('"channel":"') + 11;
    const channel = text.slice(c, text.indexOf('"', c));
    const seq = parseInt(text.slice(text.indexOf('"seq":') + 6, text.indexOf('"seq":') + 26), 10);
    const last = sock.last.get(channel);
    if (last !== undefined) {
      if (seq <= last) { stats.duplicates++; sock.duplicates++; return; }
      if (seq !== last + 1) { stats.gaps += seq - last - 1; sock.gaps += seq - last - 1; }
    }
    sock.last.set(channel, seq);
    stats.deliveries++;
    if (sock.onMessage) sock.onMessage(channel, seq);
    if (onDelivery) onDelivery(channel, seq, sock);
    return;
  }
  const m = JSON.parse(text);
  if (m.type === 'ready') {
    sock.user = m.user;
    sock.resolve('ready', m);
  } else if (m.type === 'subscribed') {
    const channel = sock.subs.get(m.id);
    if (channel !== undefined && m.seq !== undefined) sock.last.set(channel, m.seq);
    sock.resolve(`subscribed:${m.id}`, m);
  } else if (m.type === 'reset') {
    stats.resets++;
    sock.resets++;
  } else if (m.type === 'error') {
    stats.errors[m.code] = (stats.errors[m.code] || 0) + 1;
    sock.reject(`subscribed:${m.id}`, new Error(`error ${m.code}: ${m.message}`));
  } else if (m.type === 'change') {
    if (onChange) onChange(m, sock);
  } else if (m.type === 'ping') {
    sock.ws.send('{"type":"pong"}');
  }
}

function waiter(sock, key, ms = 30000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sock.waiters.delete(key); reject(new Error(`timeout waiting for ${key}`)); }, ms);
    sock.waiters.set(key, {
      resolve: (v) => { clearTimeout(timer); resolve(v); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
  });
}

function open(token) {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/v1/apps/${s.app}/realtime`, {
    headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false,
    handshakeTimeout: 30000,
  });
  const sock = {
    ws, last: new Map(), subs: new Map(), waiters: new Map(), gaps: 0, duplicates: 0, resets: 0,
    closed: null, onMessage: null,
    resolve(key, v) { const w = this.waiters.get(key); if (w) { this.waiters.delete(key); w.resolve(v); } },
    reject(key, e) { const w = this.waiters.get(key); if (w) { this.waiters.delete(key); w.reject(e); } },
  };
  const ready = waiter(sock, 'ready');
  ws.on('message', (raw) => handle(sock, raw));
  ws.on('close', (code) => {
    sock.closed = code;
    stats.closes[code] = (stats.closes[code] || 0) + 1;
    for (const key of [...sock.waiters.keys()]) sock.reject(key, new Error(`closed ${code}`));
    if (sock.onClose) sock.onClose(code);
  });
  ws.on('error', (e) => { for (const key of [...sock.waiters.keys()]) sock.reject(key, e); });
  return ready.then(() => sock);
}

function subscribe(sock, id, channel, after) {
  sock.subs.set(id, channel);
  const done = waiter(sock, `subscribed:${id}`);
  sock.ws.send(JSON.stringify({ type: 'subscribe', id, channel, ...(after ? { after } : {}) }));
  return done;
}

function subscribeCollection(sock, id, collection) {
  const done = waiter(sock, `subscribed:${id}`);
  sock.ws.send(JSON.stringify({ type: 'subscribe', id, collection }));
  return done;
}

function closeSocket(sock) {
  if (sock.closed !== null) return Promise.resolve(sock.closed);
  return new Promise((resolve) => { sock.onClose = resolve; sock.ws.close(1000); });
}

// One publish at a time to `channel`, each waiting for all `expected` subscribers (`skip`
// aside): the time from the publish request to the last receipt.
async function fanout(channel, expected, count, gapMs, skip = null) {
  const latencies = [];
  let timeouts = 0;
  for (let k = 0; k < count; k++) {
    let got = 0, finish;
    const done = new Promise((resolve) => { finish = resolve; });
    onDelivery = (ch, seq, sock) => {
      if (ch === channel && sock !== skip && ++got === expected) finish(now());
    };
    const t0 = now();
    await publish(channel, { k, t: Date.now() });
    const end = await Promise.race([done, sleep(10000).then(() => null)]);
    if (end === null) timeouts++;
    else latencies.push(end - t0);
    onDelivery = null;
    await sleep(gapMs);
  }
  return {
    subscribers: expected, publishes: count, p50_ms: pct(latencies, 50), p99_ms: pct(latencies, 99),
    max_ms: pct(latencies, 100), timeouts,
  };
}

// `window` publishes in flight at once, each in flight until all `expected` subscribers have it,
// for `seconds`: deliveries per second, and what never arrived.
async function sustain(channel, expected, seconds, window) {
  const counts = new Map(), complete = new Set(), waiting = new Map();
  let delivered = 0, published = 0, stalled = 0, lastReceipt = 0;
  onDelivery = (ch, seq) => {
    if (ch !== channel) return;
    delivered++;
    lastReceipt = now();
    const n = (counts.get(seq) || 0) + 1;
    if (n === expected) {
      counts.delete(seq);
      complete.add(seq);
      const w = waiting.get(seq);
      if (w) { waiting.delete(seq); w(); }
    } else {
      counts.set(seq, n);
    }
  };
  const start = now(), end = start + seconds * 1000;
  const payload = 'x'.repeat(64);
  await Promise.all(Array.from({ length: window }, async () => {
    while (now() < end && !stalled) {
      published++;
      const { seq } = await publish(channel, { p: payload });
      if (!complete.has(seq)) {
        const ok = await Promise.race([new Promise((resolve) => waiting.set(seq, () => resolve(true))),
                                       sleep(10000).then(() => false)]);
        if (!ok) { stalled++; waiting.delete(seq); }
      }
      complete.delete(seq);
    }
  }));
  const elapsed = (lastReceipt - start) / 1000;
  onDelivery = null;
  return {
    subscribers: expected, seconds, window, published, deliveries: delivered,
    deliveries_per_sec: Math.round(delivered / elapsed), publishes_per_sec: Math.round(published / elapsed),
    lost: published * expected - delivered, stalled_publishes: stalled,
  };
}

// Has the server closed the TCP connection to our `localPort`? The socket is paused and its
// buffers are full, so neither ws nor our kernel can tell yet: look at the server's side of it
// (gone, or closing: its FIN waits behind the data we do not read).
function serverClosed(localPort) {
  const filter = `( dst 127.0.0.1:${localPort} and sport = :${s.port} )`;
  const out = execFileSync('ss', ['-tnH', 'state', 'all', filter], { encoding: 'utf8' }).trim();
  return out === '' || !/^ESTAB/.test(out);
}

async function slowConsumer(token, fanSmall) {
  // One more socket joins the fan-out channel and a channel of its own, then stops reading;
  // its own channel gets `flood_rate` messages of 32 KiB a second, so that its buffers fill.
  // The same fan-out is measured first with the flood on and the socket still reading (the
  // control): what the flood's publishing costs on the shared processors, apart from the
  // socket that stops.
  const before = rssKib(s.server_pid);
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, rssKib(s.server_pid)); }, 100);
  const slow = await open(token);
  await subscribe(slow, 'fa', 'f:a');
  await subscribe(slow, 's', 's:slow');
  const localPort = slow.ws._socket.localPort;
  let flooding = true, flooded = 0;
  const big = 'y'.repeat(32 * 1024 - 64);
  const flood = (async () => {
    const gap = 1000 / s.flood_rate;
    while (flooding) {
      const t = now();
      await publish('s:slow', { big });
      flooded++;
      await sleep(Math.max(0, gap - (now() - t)));
    }
  })();
  await sleep(1000);
  const control = await fanout('f:a', fanSmall, s.publishes, s.gap_ms, slow);
  slow.ws._socket.pause();
  const paused = now();
  // Its kernel buffers fill first (about 4 MB on loopback here); measure once they have.
  await sleep(s.fill_seconds * 1000);
  const withSlow = await fanout('f:a', fanSmall, s.publishes, s.gap_ms, slow);
  let closedAfter = null;
  while (now() - paused < s.slow_wait * 1000) {
    if (serverClosed(localPort)) { closedAfter = (now() - paused) / 1000; break; }
    await sleep(250);
  }
  flooding = false;
  await flood;
  clearInterval(sampler);
  peak = Math.max(peak, rssKib(s.server_pid));
  // Read what waited, to learn how it ended.
  const code = closedAfter === null ? null : await new Promise((resolve) => {
    slow.onClose = resolve;
    slow.ws._socket.resume();
    setTimeout(() => resolve(slow.closed ?? 'no close frame'), 5000);
  });
  if (slow.closed === null) slow.ws.terminate();
  return {
    ...withSlow, control_p50_ms: control.p50_ms, control_p99_ms: control.p99_ms, flood_messages: flooded, flood_kib: flooded * 32, closed_after_secs: closedAfter === null ? null : +closedAfter.toFixed(2),
    close_code: code, rss_growth_kib: peak - before, waited_secs: s.slow_wait,
  };
}

async function resume(token) {
  const expected = s.resume_messages;
  let sock = await open(token);
  const first = await subscribe(sock, 'r', 'r:resume');
  let got = 0, gotIt;
  const one = new Promise((resolve) => { gotIt = resolve; });
  sock.onMessage = (ch, seq) => { if (ch === 'r:resume') gotIt(seq); };
  await publish('r:resume', { n: 0 });
  const left = await one;
  await closeSocket(sock);
  const gone = now();
  for (let n = 1; n <= expected; n++) await publish('r:resume', { n });
  const publishedIn = (now() - gone) / 1000;
  await sleep(Math.max(0, s.absence_seconds * 1000 - (now() - gone)));
  const seqs = [];
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const t0 = now();
  sock = await open(token);
  sock.onMessage = (ch, seq) => { if (ch === 'r:resume') { seqs.push(seq); if (seqs.length === expected) finish(now()); } };
  const sub = await subscribe(sock, 'r', 'r:resume', { epoch: first.epoch, seq: left });
  const end = await Promise.race([done, sleep(15000).then(() => null)]);
  await sleep(200); // anything after the last expected message would be a duplicate
  const inOrder = seqs.length === expected && seqs.every((q, i) => q === left + 1 + i);
  await closeSocket(sock);
  return {
    expected, received: seqs.length, in_order: inOrder, duplicates: sock.duplicates + (seqs.length - new Set(seqs).size),
    gaps: sock.gaps, resets: sock.resets, resumed_from_seq: sub.seq, absent_secs: +((t0 - gone) / 1000).toFixed(2),
    published_in_secs: +publishedIn.toFixed(2), resume_ms: end === null ? null : +(end - t0).toFixed(1),
  };
}

// ---------------------------------------------------------------------------- record changes
// Cloudlet only. `records_subscribers` sockets of `records_users` users subscribe to `todos`,
// whose default rules let each user list only their own records, while records are created at
// `records_rate` a second, each by a random one of the users.
const todosPath = `/v1/apps/${s.app}/collections/todos/records`;
const bearer = (token) => ({ authorization: `Bearer ${token}` });
const LOST_AFTER_MS = 5000;

// Creates `todos` and checks that its default rules keep one user's records from another.
async function createTodos(t) {
  await must('PUT', `/v1/admin/apps/${s.app}/collections/todos`,
    { fields: [{ name: 'title', type: 'text' }, { name: 'n', type: 'number' }] }, 201, admin);
  // Made before anyone subscribes, so that no socket receives it.
  const mine = await must('POST', todosPath, { title: 'check', n: -1 }, 201, bearer(t[0]));
  const lists = async (token) => {
    const page = await must('GET', todosPath, undefined, 200, bearer(token));
    return page.items.some((r) => r.id === mine.id);
  };
  if (!(await lists(t[0])) || (await lists(t[1]))) throw new Error("todos: rec0's record is not listed for rec0, or is for rec1");
}

// The subscribers: socket i is user i % users's; each keeps the first receipt time of every
// record (by its `n`) in `got`.
async function todoSubscribers(t) {
  const sockets = new Array(s.records_subscribers);
  const connect = await pool(sockets.length, s.connect_width, async (i) => {
    const sock = await open(t[i % t.length]);
    sock.got = new Map();
    await subscribeCollection(sock, 't', 'todos');
    sockets[i] = sock;
  });
  if (connect.failed) throw new Error(`todos subscribers failed: ${connect.failed} ${connect.firstErrors}`);
  return sockets;
}

// Creates `records_writes` records, paced by the clock: write n is sent at start + n / rate,
// whether or not the ones before it were answered, so that several may be in flight. Each
// write is { user, acked }: `acked` is when its 201 arrived (its change committed by then).
// Returns when the writes began.
async function writeTodos(t, writes) {
  const answers = [];
  let failed = 0, firstError = null;
  const start = now();
  for (let n = 0; n < s.records_writes; n++) {
    const wait = start + (n * 1000) / s.records_rate - now();
    if (wait > 0) await sleep(wait);
    const user = Math.floor(Math.random() * t.length);
    writes[n] = { user, acked: null };
    answers.push(must('POST', todosPath, { title: 'w', n }, 201, bearer(t[user])).then(
      () => { writes[n].acked = now(); },
      (e) => { failed++; firstError = firstError || e.message; }));
  }
  await Promise.all(answers);
  if (failed) throw new Error(`${failed} writes failed: ${firstError}`);
  return start;
}

// Latencies (receipt − 201 answer) of every delivery, and the writes that did not reach every
// socket of their owner within LOST_AFTER_MS.
function judge(writes, byUser, sockets) {
  const latencies = [];
  let early = 0, lost = 0;
  for (const sock of sockets) {
    for (const [n, at] of sock.got) {
      const latency = at - writes[n].acked;
      // The change can arrive before the 201 does (client and server share the processors, and
      // the answer and the change travel apart): such a delivery counts as 0 ms.
      if (latency < 0) early++;
      latencies.push(Math.max(0, latency));
    }
  }
  writes.forEach((w, n) => {
    const late = (sock) => !sock.got.has(n) || sock.got.get(n) - w.acked > LOST_AFTER_MS;
    if (byUser[w.user].some(late)) lost++;
  });
  return { latencies, early, lost };
}

async function recordChanges() {
  const t = await tokens(s.records_users, 'rec');
  await createTodos(t);
  const sockets = await todoSubscribers(t);
  const byUser = t.map((_, u) => sockets.filter((_, i) => i % t.length === u));
  const userIds = byUser.map((own) => own[0].user);
  log(`${sockets.length} sockets of ${t.length} users subscribed to todos; ${s.records_writes} writes at ${s.records_rate}/s`);

  const writes = new Array(s.records_writes);
  let delivered = 0, wrong = 0, duplicates = 0;
  onChange = (m, sock) => {
    const at = now(), n = m.record.n;
    if (sock.got.has(n)) { duplicates++; return; }
    sock.got.set(n, at);
    // Wrong: a socket of anyone but the writer (the record's owner), or a record whose owner
    // is not its writer.
    const owner = userIds[writes[n].user];
    if (sock.user !== owner || m.record.owner !== owner) wrong++;
    else delivered++;
  };
  const start = await writeTodos(t, writes);
  const lastAck = Math.max(...writes.map((w) => w.acked));
  const expected = writes.reduce((sum, w) => sum + byUser[w.user].length, 0);
  while (delivered < expected && now() < lastAck + LOST_AFTER_MS) await sleep(20);
  await sleep(200); // anything after the last expected delivery would be a duplicate
  onChange = null;
  await Promise.all(sockets.map(closeSocket));

  const { latencies, early, lost } = judge(writes, byUser, sockets);
  return {
    subscribers: sockets.length, users: t.length, writes: s.records_writes, rate: s.records_rate,
    writes_per_sec: Math.round((writes.length * 1000) / (lastAck - start)), deliveries: latencies.length,
    p50_ms: pct(latencies, 50), p99_ms: pct(latencies, 99), max_ms: pct(latencies, 100), before_answer: early,
    wrong, lost, duplicates,
  };
}

async function websocketRun() {
  const n = s.connections;
  const users = Math.ceil(n / 10);
  const t = await tokens(users + 2);
  const baseline = rssKib(s.server_pid);
  log(`${users} users logged in; connecting ${n} sockets`);
  const sockets = new Array(n);
  const start = now();
  const connect = await pool(n, s.connect_width, async (i) => {
    const sock = await open(t[i % users]);
    await Promise.all([subscribe(sock, 'p', `p:${i}`), subscribe(sock, 'g', `g:${Math.floor(i / 10)}`)]);
    sockets[i] = sock;
  });
  const elapsed = (now() - start) / 1000;
  const connected = n - connect.failed;
  await sleep(1000);
  const rssConnected = rssKib(s.server_pid);
  log(`${connected} connected in ${elapsed.toFixed(1)} s; one message to each group channel`);
  // One message in each group channel, kept in its history: every socket must get one.
  const groups = Math.ceil(n / 10);
  const before = stats.deliveries;
  await pool(groups, 8, (g) => publish(`g:${g}`, { hello: g }));
  const deadline = now() + 30000;
  while (stats.deliveries - before < connected && now() < deadline) await sleep(50);
  const groupDeliveries = stats.deliveries - before;
  await sleep(1000);
  const rssHistory = rssKib(s.server_pid);
  const connections = {
    requested: n, connected, failed: connect.failed, first_errors: connect.firstErrors, users,
    seconds: +elapsed.toFixed(3), per_sec: Math.round(connected / elapsed),
    rss_baseline_kib: baseline, rss_connected_kib: rssConnected, rss_history_kib: rssHistory,
    growth_mb: +((rssHistory - baseline) / 1024).toFixed(1),
    growth_connected_mb: +((rssConnected - baseline) / 1024).toFixed(1),
    per_connection_kib: +((rssHistory - baseline) / connected).toFixed(2),
    group_messages: groups, group_deliveries: groupDeliveries,
    client_rss_mb: Math.round(process.memoryUsage().rss / 1048576),
  };
  if (connect.failed) log('connect failures', connect.failed, connect.firstErrors);

  const live = sockets.filter(Boolean);
  const small = Math.min(s.fan_small, live.length), bigN = Math.min(s.fan_big, live.length);
  log(`subscribing ${bigN} sockets to f:b and ${small} to f:a`);
  const subs = await pool(bigN, s.connect_width, async (i) => {
    await subscribe(live[i], 'fb', 'f:b');
    if (i < small) await subscribe(live[i], 'fa', 'f:a');
  });
  if (subs.failed) throw new Error(`fan-out subscriptions failed: ${subs.failed} ${subs.firstErrors}`);
  const gapsBefore = stats.gaps;
  log('fan-out');
  const fanSmall = await fanout('f:a', small, s.publishes, s.gap_ms);
  const fanBig = await fanout('f:b', bigN, s.big_publishes, s.gap_ms);
  log('sustained fan-out');
  const sustained = await sustain('f:b', bigN, s.sustain_seconds, s.window);
  sustained.gaps = stats.gaps - gapsBefore;
  sustained.duplicates = stats.duplicates;
  log('slow consumer');
  const slow = await slowConsumer(t[users], small);
  log('resume');
  const resumed = await resume(t[users + 1]);
  const result = {
    connections, fanout_small: fanSmall, fanout_big: fanBig, sustained, slow_consumer: slow, resume: resumed,
    gaps: stats.gaps, duplicates: stats.duplicates, resets: stats.resets, errors: stats.errors, closes: stats.closes,
    server_rss_end_kib: rssKib(s.server_pid),
  };
  for (const sock of live) sock.ws.terminate();
  if (mode === 'cloudlet') {
    await sleep(1000); // the server lets go of those sockets first
    log('record changes');
    result.records = await recordChanges();
  }
  return result;
}

// ------------------------------------------------------------------------------- PocketBase
// One Server-Sent Events stream per client (`GET /api/realtime`, whose first event,
// PB_CONNECT, names the client), then its subscriptions (`POST /api/realtime`).
function pbConnect(i, streams) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: s.port, path: '/api/realtime', agent: false,
                           headers: { accept: 'text/event-stream' } }, (res) => {
      if (res.statusCode !== 200) { reject(new Error(`GET /api/realtime: ${res.statusCode}`)); res.resume(); return; }
      let buffer = '', id = null;
      res.on('data', (chunk) => {
        if (id !== null) { streams.events++; return; }
        buffer += chunk.toString();
        const m = /event:\s*PB_CONNECT[\s\S]*?data:\s*(\{.*\})/.exec(buffer);
        if (m) {
          id = JSON.parse(m[1]).clientId;
          call('POST', '/api/realtime', { clientId: id, subscriptions: ['msgs/*', `msgs/p${i}`, `msgs/g${Math.floor(i / 10)}`] })
            .then((r) => (r.status === 204 || r.status === 200 ? resolve(req) : reject(new Error(`POST /api/realtime: ${r.status} ${JSON.stringify(r.body)}`))), reject);
        }
      });
      res.on('error', reject);
      res.on('close', () => { streams.closed++; });
    });
    req.on('error', reject);
    req.setTimeout(60000, () => reject(new Error('timeout')));
  });
}

async function pocketbaseRun() {
  const n = s.connections;
  const baseline = rssKib(s.server_pid);
  const streams = { events: 0, closed: 0 };
  const reqs = [];
  const start = now();
  const connect = await pool(n, s.connect_width, async (i) => { reqs.push(await pbConnect(i, streams)); });
  const elapsed = (now() - start) / 1000;
  const connected = n - connect.failed;
  await sleep(1000);
  const rss = rssKib(s.server_pid);
  if (connect.failed) log('connect failures', connect.failed, connect.firstErrors);
  const result = {
    connections: {
      requested: n, connected, failed: connect.failed, first_errors: connect.firstErrors,
      seconds: +elapsed.toFixed(3), per_sec: Math.round(connected / elapsed),
      rss_baseline_kib: baseline, rss_connected_kib: rss, growth_mb: +((rss - baseline) / 1024).toFixed(1),
      per_connection_kib: +((rss - baseline) / Math.max(1, connected)).toFixed(2), streams_closed: streams.closed,
      client_rss_mb: Math.round(process.memoryUsage().rss / 1048576),
    },
  };
  for (const req of reqs) req.destroy();
  return result;
}

const run = mode === 'pocketbase' ? pocketbaseRun : websocketRun;
run().then((result) => {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}, (e) => {
  console.error(e);
  process.exit(1);
});
