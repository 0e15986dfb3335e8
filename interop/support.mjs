// What both suites share: the running emulator (started by run.sh), the keys it made with
// openssl, and a tiny notify_url server that records what the emulator posts to it.
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

export const EMULATOR = process.env.EMULATOR_URL;
const KEYS = process.env.INTEROP_KEYS;
if (!EMULATOR || !KEYS) {
  throw new Error('EMULATOR_URL and INTEROP_KEYS are set by interop/run.sh: run that');
}

/** A PEM file that run.sh made: `<name>.pem` (PKCS#8 private) or `<name>.pub.pem` (SPKI). */
export function key(name) {
  return readFileSync(join(KEYS, name), 'utf8');
}

/** A JSON call to one of the emulator's control routes; throws unless 2xx. */
export async function control(method, path, body) {
  const response = await fetch(`${EMULATOR}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

/**
 * A notify_url on a free loopback port. Every POST is kept as {headers, body} (the body as
 * the exact text received) and answered with `answer`; `next()` waits for the next one.
 */
export async function notifyServer(answer) {
  const received = [];
  const waiting = [];
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      const item = { headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
      answer(response);
      const waiter = waiting.shift();
      if (waiter) waiter(item);
      else received.push(item);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/notify`,
    next(timeoutMs = 10_000) {
      if (received.length > 0) return Promise.resolve(received.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no notification came')), timeoutMs);
        waiting.push((item) => {
          clearTimeout(timer);
          resolve(item);
        });
      });
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A number nobody used before in this run, of the given length. */
export function unique(prefix) {
  return `${prefix}${Date.now()}${Math.floor(Math.random() * 1e6)}`;
}
