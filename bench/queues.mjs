// The load side of the queues benchmark (bench/queues.py runs it): one Node.js process drives
// either Cloudlet (its admin HTTP API with the app's secret key, through node:http with keep-alive
// connections) or BullMQ (on the Redis server bench/queues.py started), so that both are driven
// by the same runtime.
//
//   node bench/queues.mjs MODE '{"json": "settings"}'   # prints one JSON object
//
// Modes: cloudlet-enqueue, cloudlet-claim, cloudlet-fill, cloudlet-latency-send,
// cloudlet-delayed-send, bullmq-enqueue, bullmq-work, bullmq-latency, bullmq-delayed,
// graphile-enqueue, graphile-work, graphile-latency, graphile-delayed. BullMQ is loaded from `settings.modules` (the
// node_modules that `npm ci` filled from bench/peers/bullmq).
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

const [mode, settingsText] = process.argv.slice(2);
const s = JSON.parse(settingsText || '{}');

// Wall-clock milliseconds with sub-millisecond resolution.
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------- Cloudlet
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
let httpErrors = {};

function call(method, urlPath, body) {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: s.port, path: urlPath, method, agent,
      headers: {
        authorization: `Bearer ${s.token}`,
        ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}),
      },
    }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, body: text ? JSON.parse(text) : null });
      });
    });
    req.on('error', reject);
    if (data) req.write(data);
    req.end();
  });
}

// A call that must answer `expect`; anything else is counted, and the first few are kept.
async function must(method, urlPath, body, expect) {
  const res = await call(method, urlPath, body);
  if (res.status !== expect) {
    const key = `${method} ${res.status}`;
    httpErrors[key] = (httpErrors[key] || 0) + 1;
    if (httpErrors[key] <= 3) console.error(`${method} ${urlPath}: ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    return null;
  }
  return res.body;
}

const queuePath = () => `/v1/admin/apps/${s.app}/queues/${s.queue}`;
const batchBody = (n, start) => ({
  messages: Array.from({ length: n }, (_, i) => ({ payload: { n: start + i, body: 'x'.repeat(s.payload_bytes || 64) } })),
});

async function cloudletEnqueue() {
  // `clients` loops, each sending batches of `batch` for `seconds`; messages per second.
  const end = now() + s.seconds * 1000;
  let sent = 0, requests = 0;
  const latencies = [];
  const start = now();
  await Promise.all(Array.from({ length: s.clients }, async () => {
    while (now() < end) {
      const t = now();
      const body = await must('POST', `${queuePath()}/messages`, batchBody(s.batch, sent), 201);
      latencies.push(now() - t);
      requests++;
      if (body) sent += body.sent.length;
    }
  }));
  const elapsed = (now() - start) / 1000;
  return { messages_per_sec: Math.round(sent / elapsed), messages: sent, requests,
           request_p50_ms: pct(latencies, 50), request_p99_ms: pct(latencies, 99), errors: httpErrors };
}

async function cloudletFill() {
  // `count` messages in batches of 100 from 8 loops, as fast as they go (not measured).
  let next = 0;
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < s.count) {
      const n = Math.min(100, s.count - next);
      const start = next;
      next += n;
      if (!(await must('POST', `${queuePath()}/messages`, batchBody(n, start), 201))) throw new Error('fill failed');
    }
  }));
  return { filled: s.count };
}

async function cloudletClaim() {
  // `consumers` loops, each claiming up to `max` and acknowledging the batch in one call, until
  // the claims come back empty; `count` messages were sent beforehand (cloudlet-fill).
  let acked = 0, claims = 0, emptyClaims = 0;
  const start = now();
  await Promise.all(Array.from({ length: s.consumers }, async () => {
    for (;;) {
      const body = await must('POST', `${queuePath()}/claims`, { max: s.max }, 200);
      claims++;
      if (!body) continue;
      if (body.deliveries.length === 0) { emptyClaims++; return; }
      const acks = body.deliveries.map((d) => ({ id: d.id, lease: d.lease }));
      const answer = await must('POST', `${queuePath()}/acks`, { acks }, 200);
      for (const ok of answer ? answer.acked : []) {
        if (ok) acked++;
        else httpErrors['ack'] = (httpErrors['ack'] || 0) + 1;
      }
    }
  }));
  const elapsed = (now() - start) / 1000;
  return { messages_per_sec: Math.round(acked / elapsed), acked, claims, seconds: round(elapsed), errors: httpErrors };
}

async function cloudletLatencySend() {
  // One message at a time, `gap_ms` apart, each carrying the time it was sent; the function
  // consumer writes down when it started.
  for (let i = 0; i < s.count; i++) {
    if (!(await must('POST', `${queuePath()}/messages`, { messages: [{ payload: { i, sent: now() } }] }, 201))) {
      throw new Error('send failed');
    }
    await sleep(s.gap_ms);
  }
  return { sent: s.count, errors: httpErrors };
}

// `count` messages with random delays in [0, window_s), sent in batches of 100 at once; each
// carries its due time (taken before its request leaves, so lateness reads long, never short).
// `delays` is the same list of delays on both sides (from the Python driver), for a fair race.
async function cloudletDelayedSend() {
  for (let i = 0; i < s.delays.length; i += 100) {
    const sentAt = now();
    const messages = s.delays.slice(i, i + 100).map((delay) => ({
      payload: { due: sentAt + delay * 1000 }, delay_secs: delay,
    }));
    if (!(await must('POST', `${queuePath()}/messages`, { messages }, 201))) throw new Error('send failed');
  }
  return { sent: s.delays.length, errors: httpErrors };
}

// ------------------------------------------------------------------------------------ BullMQ
function bullmq() {
  const require = createRequire(path.join(s.modules, 'noop.js'));
  return require('bullmq');
}
const connection = () => ({ host: '127.0.0.1', port: s.redis_port, maxRetriesPerRequest: null });

async function bullmqEnqueue() {
  const { Queue } = bullmq();
  // One Queue, so one Redis connection, per client.
  const queues = Array.from({ length: s.clients }, () => new Queue(s.queue, { connection: connection() }));
  await Promise.all(queues.map((q) => q.waitUntilReady()));
  const end = now() + s.seconds * 1000;
  let sent = 0, requests = 0;
  const latencies = [];
  const start = now();
  await Promise.all(queues.map(async (q) => {
    while (now() < end) {
      const t = now();
      const jobs = Array.from({ length: s.batch }, (_, i) => ({
        name: 'm', data: { n: sent + i, body: 'x'.repeat(s.payload_bytes || 64) },
        opts: { removeOnComplete: true },
      }));
      const added = await q.addBulk(jobs);
      sent += added.length;
      latencies.push(now() - t);
      requests++;
    }
  }));
  const elapsed = (now() - start) / 1000;
  await Promise.all(queues.map((q) => q.close()));
  return { messages_per_sec: Math.round(sent / elapsed), messages: sent, requests,
           request_p50_ms: pct(latencies, 50), request_p99_ms: pct(latencies, 99) };
}

async function bullmqWork() {
  // `count` jobs sent beforehand (not measured), then a Worker with `concurrency` and a no-op
  // processor until every one has completed (each completion is removed, like an ack).
  const { Queue, Worker } = bullmq();
  const queue = new Queue(s.queue, { connection: connection() });
  for (let i = 0; i < s.count; i += 100) {
    await queue.addBulk(Array.from({ length: Math.min(100, s.count - i) }, (_, j) => ({
      name: 'm', data: { n: i + j, body: 'x'.repeat(s.payload_bytes || 64) }, opts: { removeOnComplete: true },
    })));
  }
  let done = 0, failed = 0, finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const start = now();
  const worker = new Worker(s.queue, async () => {}, { connection: connection(), concurrency: s.concurrency });
  worker.on('completed', () => { if (++done === s.count) finish(); });
  worker.on('failed', () => { failed++; });
  await finished;
  const elapsed = (now() - start) / 1000;
  await worker.close();
  await queue.close();
  return { messages_per_sec: Math.round(done / elapsed), completed: done, failed, seconds: round(elapsed) };
}

async function bullmqLatency() {
  // An idle Worker (concurrency 1); one job at a time, `gap_ms` apart; the processor writes down
  // when it started. Producer and worker share this process, hence this clock.
  const { Queue, Worker } = bullmq();
  const queue = new Queue(s.queue, { connection: connection() });
  const delays = [];
  const worker = new Worker(s.queue, async (job) => { delays.push(now() - job.data.sent); },
                            { connection: connection(), concurrency: 1 });
  await worker.waitUntilReady();
  await queue.waitUntilReady();
  await sleep(500);
  for (let i = 0; i < s.count; i++) {
    await queue.add('m', { i, sent: now() }, { removeOnComplete: true });
    await sleep(s.gap_ms);
  }
  while (delays.length < s.count) await sleep(10);
  await worker.close();
  await queue.close();
  return { p50_ms: pct(delays, 50), p99_ms: pct(delays, 99), max_ms: pct(delays, 100), samples: delays.length };
}

async function bullmqDelayed() {
  // The same delays through `Queue.addBulk` with `opts.delay`; a Worker (concurrency
  // `concurrency`) in this process writes down how late each job started.
  const { Queue, Worker } = bullmq();
  const queue = new Queue(s.queue, { connection: connection() });
  const late = [];
  const worker = new Worker(s.queue, async (job) => { late.push(now() - job.data.due); },
                            { connection: connection(), concurrency: s.concurrency });
  await worker.waitUntilReady();
  await queue.waitUntilReady();
  for (let i = 0; i < s.delays.length; i += 100) {
    const sentAt = now();
    await queue.addBulk(s.delays.slice(i, i + 100).map((delay) => ({
      name: 'm', data: { due: sentAt + delay * 1000 },
      opts: { delay: Math.round(delay * 1000), removeOnComplete: true },
    })));
  }
  const deadline = now() + (Math.max(...s.delays) + 30) * 1000;
  while (late.length < s.delays.length && now() < deadline) await sleep(50);
  await worker.close();
  await queue.close();
  return { p50_ms: pct(late, 50), p99_ms: pct(late, 99), max_ms: pct(late, 100), started: late.length,
           sent: s.delays.length };
}

// --------------------------------------------------------------------------- graphile-worker
// On the PostgreSQL server bench/queues.py started (`settings.database`, its own database),
// with its defaults but for a silent logger: a pool of 10 connections, `pollInterval` 2 s
// (new jobs are announced by LISTEN/NOTIFY; jobs due later are found by that poll).
function graphile() {
  const require = createRequire(path.join(s.modules, 'noop.js'));
  return require('graphile-worker');
}
const quiet = () => new (graphile().Logger)(() => () => {});

async function graphileUtils() {
  const utils = await graphile().makeWorkerUtils({ connectionString: s.database, logger: quiet() });
  await utils.migrate();
  return utils;
}

// A runner whose task `m` calls `onJob(payload)`; `done` counts its successes.
async function graphileRunner(concurrency, onJob) {
  const counter = { done: 0, failed: 0 };
  const runner = await graphile().run({
    connectionString: s.database, concurrency, noHandleSignals: true, logger: quiet(),
    taskList: { m: async (payload) => { onJob(payload); } },
  });
  runner.events.on('job:success', () => { counter.done++; });
  runner.events.on('job:failed', () => { counter.failed++; });
  return { runner, counter };
}

async function graphileEnqueue() {
  // `clients` loops sharing one WorkerUtils (its pool of 10), each adding batches of `batch`
  // with `addJobs` for `seconds`.
  const utils = await graphileUtils();
  const end = now() + s.seconds * 1000;
  let sent = 0, requests = 0;
  const latencies = [];
  const start = now();
  await Promise.all(Array.from({ length: s.clients }, async () => {
    while (now() < end) {
      const t = now();
      const jobs = Array.from({ length: s.batch }, (_, i) => ({
        identifier: 'm', payload: { n: sent + i, body: 'x'.repeat(s.payload_bytes || 64) },
      }));
      sent += (await utils.addJobs(jobs)).length;
      latencies.push(now() - t);
      requests++;
    }
  }));
  const elapsed = (now() - start) / 1000;
  await utils.release();
  return { messages_per_sec: Math.round(sent / elapsed), messages: sent, requests,
           request_p50_ms: pct(latencies, 50), request_p99_ms: pct(latencies, 99) };
}

async function graphileWork() {
  // `count` jobs added beforehand (not measured), then a runner with `concurrency` and a no-op
  // task until every one has succeeded (graphile-worker deletes a job when it succeeds).
  const utils = await graphileUtils();
  for (let i = 0; i < s.count; i += 100) {
    await utils.addJobs(Array.from({ length: Math.min(100, s.count - i) }, (_, j) => ({
      identifier: 'm', payload: { n: i + j, body: 'x'.repeat(s.payload_bytes || 64) },
    })));
  }
  const start = now();
  const { runner, counter } = await graphileRunner(s.concurrency, () => {});
  while (counter.done < s.count) await sleep(5);
  const elapsed = (now() - start) / 1000;
  await runner.stop();
  await utils.release();
  return { messages_per_sec: Math.round(counter.done / elapsed), completed: counter.done,
           failed: counter.failed, seconds: round(elapsed) };
}

async function graphileLatency() {
  // An idle runner (concurrency 1); one job at a time, `gap_ms` apart; the task writes down
  // how long after its sending it started.
  const utils = await graphileUtils();
  const delays = [];
  const { runner } = await graphileRunner(1, (payload) => { delays.push(now() - payload.sent); });
  await sleep(500);
  for (let i = 0; i < s.count; i++) {
    await utils.addJob('m', { i, sent: now() });
    await sleep(s.gap_ms);
  }
  while (delays.length < s.count) await sleep(10);
  await runner.stop();
  await utils.release();
  return { p50_ms: pct(delays, 50), p99_ms: pct(delays, 99), max_ms: pct(delays, 100), samples: delays.length };
}

async function graphileDelayed() {
  // The same delays as `runAt` dates through `addJobs`; a runner (concurrency `concurrency`).
  const utils = await graphileUtils();
  const late = [];
  const { runner } = await graphileRunner(s.concurrency, (payload) => { late.push(now() - payload.due); });
  for (let i = 0; i < s.delays.length; i += 100) {
    const sentAt = now();
    await utils.addJobs(s.delays.slice(i, i + 100).map((delay) => {
      const due = sentAt + delay * 1000;
      return { identifier: 'm', payload: { due }, runAt: new Date(due) };
    }));
  }
  const deadline = now() + (Math.max(...s.delays) + 30) * 1000;
  while (late.length < s.delays.length && now() < deadline) await sleep(50);
  await runner.stop();
  await utils.release();
  return { p50_ms: pct(late, 50), p99_ms: pct(late, 99), max_ms: pct(late, 100), started: late.length,
           sent: s.delays.length };
}

// ----------------------------------------------------------------------------------- helpers
function pct(values, p) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))))]);
}
function round(x) { return Math.round(x * 1000) / 1000; }

const modes = {
  'cloudlet-enqueue': cloudletEnqueue, 'cloudlet-fill': cloudletFill, 'cloudlet-claim': cloudletClaim,
  'cloudlet-latency-send': cloudletLatencySend, 'cloudlet-delayed-send': cloudletDelayedSend,
  'bullmq-enqueue': bullmqEnqueue, 'bullmq-work': bullmqWork, 'bullmq-latency': bullmqLatency,
  'bullmq-delayed': bullmqDelayed,
  'graphile-enqueue': graphileEnqueue, 'graphile-work': graphileWork, 'graphile-latency': graphileLatency,
  'graphile-delayed': graphileDelayed,
};
const result = await modes[mode]();
console.log(JSON.stringify(result));
agent.destroy();
process.exit(0);
