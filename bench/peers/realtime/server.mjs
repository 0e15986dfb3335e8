// The Node.js peer of the realtime benchmark (bench/realtime.sh): a plain WebSocket server on
// npm `ws` doing what Cloudlet's channels do in the benchmark, written simply and fairly.
//
//   node bench/peers/realtime/server.mjs PORT SECRET WS_MODULE_DIR
//
// - the same routes: `GET /v1/apps/{app}/realtime` (WebSocket, `Authorization: Bearer` token:
//   `payload.signature`, HMAC-SHA256 with SECRET, checked at the handshake as Cloudlet checks its
//   JWTs), and `POST /v1/admin/apps/{app}/realtime/channels/{channel}/messages` `{"data": …}`
//   answering `{"seq"}`; `GET /readyz`.
// - the same messages: `ready`, `subscribe` (with `after: {epoch, seq}` to resume), `subscribed`,
//   `message` frames `{"type","channel","seq","from","data"}`, `reset`, `publish`/`published`.
// - a channel numbers its messages and keeps its last 100 (the `r` kind: 2,000) for resume.
// - a publish serializes its frame once, into one Buffer, and sends that to every subscriber.
// - no slow-consumer guard: what a client does not read waits in `ws`'s buffers (as in most
//   plain servers); no presence, rules, rate limits or application pings.
import crypto from 'node:crypto';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

const [portText, secret, modules] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modules), 'noop.js'));
const { WebSocketServer } = require('ws');

const HISTORY = { r: 2000 };
const DEFAULT_HISTORY = 100;
const epoch = crypto.randomBytes(8).toString('hex');
const channels = new Map(); // name -> {seq, subs: Set<ws>, history: [{seq, frame}], keep}

function channel(name) {
  let c = channels.get(name);
  if (!c) {
    const kind = name.split(':')[0];
    c = { seq: 0, subs: new Set(), history: [], keep: HISTORY[kind] ?? DEFAULT_HISTORY };
    channels.set(name, c);
  }
  return c;
}

function publish(name, data, from = null) {
  const c = channel(name);
  const seq = ++c.seq;
  const frame = Buffer.from(JSON.stringify({ type: 'message', channel: name, seq, from, data }));
  c.history.push({ seq, frame });
  if (c.history.length > c.keep) c.history.splice(0, c.history.length - c.keep);
  for (const ws of c.subs) ws.send(frame, { binary: false });
  return seq;
}

function verify(header) {
  const token = (header || '').startsWith('Bearer ') ? header.slice(7) : '';
  const dot = token.lastIndexOf('.');
  if (dot < 1) return null;
  const payload = token.slice(0, dot);
  const expected = crypto.createHmac('sha256', secret).update(payload).digest('base64url');
  const given = Buffer.from(token.slice(dot + 1));
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, Buffer.from(expected))) return null;
  try {
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    return claims.exp * 1000 > Date.now() ? claims.sub : null;
  } catch {
    return null;
  }
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 16 * 1024 });

wss.on('connection', (ws, user) => {
  ws.user = user;
  ws.joined = new Map(); // subscription id -> channel
  ws.send(JSON.stringify({ type: 'ready', user }));
  ws.on('message', (raw, binary) => {
    let m;
    try {
      m = JSON.parse(raw.toString());
    } catch {
      return ws.send(JSON.stringify({ type: 'error', code: 'invalid_json' }));
    }
    if (m.type === 'subscribe' && typeof m.channel === 'string' && typeof m.id === 'string') {
      if (ws.joined.has(m.id)) return ws.send(JSON.stringify({ type: 'error', code: 'subscription_exists', id: m.id }));
      const c = channel(m.channel);
      ws.joined.set(m.id, m.channel);
      c.subs.add(ws);
      const after = m.after;
      if (after && after.epoch === epoch && Number.isInteger(after.seq) && after.seq <= c.seq) {
        const first = c.history.length ? c.history[0].seq : c.seq + 1;
        if (after.seq + 1 >= first || after.seq === c.seq) {
          ws.send(JSON.stringify({ type: 'subscribed', id: m.id, epoch, seq: after.seq }));
          for (const h of c.history) if (h.seq > after.seq) ws.send(h.frame, { binary: false });
          return;
        }
      }
      ws.send(JSON.stringify({ type: 'subscribed', id: m.id, epoch, seq: c.seq }));
      if (after) ws.send(JSON.stringify({ type: 'reset', sub: m.id, epoch, reason: 'history' }));
    } else if (m.type === 'unsubscribe' && ws.joined.has(m.id)) {
      channels.get(ws.joined.get(m.id))?.subs.delete(ws);
      ws.joined.delete(m.id);
      ws.send(JSON.stringify({ type: 'unsubscribed', id: m.id }));
    } else if (m.type === 'publish' && typeof m.channel === 'string') {
      const seq = publish(m.channel, m.data, ws.user);
      ws.send(JSON.stringify({ type: 'published', id: m.id, seq }));
    } else if (m.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', id: m.id }));
    } else {
      ws.send(JSON.stringify({ type: 'error', code: 'unknown_type' }));
    }
  });
  ws.on('close', () => {
    for (const name of ws.joined.values()) channels.get(name)?.subs.delete(ws);
  });
  ws.on('error', () => {});
});

const PUBLISH = /^\/v1\/admin\/apps\/[^/]+\/realtime\/channels\/([^/]+)\/messages$/;

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/readyz') return res.end('ok');
  const match = req.method === 'POST' && PUBLISH.exec(req.url);
  if (!match) {
    res.statusCode = 404;
    return res.end();
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch {
      res.statusCode = 400;
      return res.end();
    }
    const seq = publish(decodeURIComponent(match[1]), body.data);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ seq }));
  });
});
server.keepAliveTimeout = 60_000;
server.maxConnections = Infinity;

server.on('upgrade', (req, socket, head) => {
  const user = /^\/v1\/apps\/[^/]+\/realtime$/.test(req.url) && verify(req.headers.authorization);
  if (!user) {
    socket.end('HTTP/1.1 401 Unauthorized\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, user));
});

server.listen(Number(portText), '127.0.0.1', 4096);
