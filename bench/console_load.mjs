// The browser side of the console benchmark (bench/console.py runs it once a run): one Chromium,
// driven by playwright-core, loads each target's page in a fresh browser context (empty cache,
// no cookies), twice: the first load, then a return visit in a new tab of the same context
// (cache warm). Everything is read from the DevTools protocol (a CDP session on each page):
//
// - a request is each `Network.requestWillBeSent` (each hop of a redirect too), `data:` URLs
//   aside; it went to the network unless the browser answered it from its cache
//   (`requestServedFromCache`, or a response `fromDiskCache` / `fromPrefetchCache`);
// - wire bytes: `Network.loadingFinished`'s encodedDataLength, what came over the socket for the
//   request, headers included (0 for an answer from the cache); body bytes: the same less the
//   response headers (the response's encodedDataLength when it arrived), i.e. the bodies as
//   sent, compressed or not; uncompressed bytes: the sum of `Network.dataReceived`'s dataLength,
//   the bodies after decoding;
// - compressed: a JS or CSS response (resource type Script or Stylesheet) with a
//   `content-encoding`; an empty one is not counted;
// - times, from the navigation's start, measured in the page: DOMContentLoaded
//   (`domContentLoadedEventEnd` of the navigation's timing entry), and the first frame or DOM
//   change at which the target's login input is in the document with a layout box and not
//   `visibility: hidden` (an init script polls on every animation frame and DOM mutation).
//
// A load counts every request until the login input is visible and the network has then been
// idle for 500 ms (Playwright's `networkidle`), so that what a page fetches after showing its
// form (fonts, icons, API calls) is counted too.
//
//   node bench/console_load.mjs '{"modules": "…/node_modules", "chromium": "/usr/bin/chromium",
//     "targets": [{"name": "cloudlet", "url": "http://…/console/", "selector": "…"}, …]}'
//
// Prints one JSON object: for each target, `first` and `repeat` (numbers) and their `assets`.
import { createRequire } from 'node:module';
import path from 'node:path';

const settings = JSON.parse(process.argv[2] || '{}');
const require = createRequire(path.join(path.resolve(settings.modules), 'noop.js'));
const { chromium } = require('playwright-core');

const COMPRESSED = new Set(['gzip', 'br', 'zstd', 'deflate']);

/** Marks `window.__benchVisible` with the first time `selector` is visible (init script). */
function watchVisible(selector) {
  const check = () => {
    if (window.__benchVisible !== undefined) return true;
    const element = document.querySelector(selector);
    if (element && element.getClientRects().length > 0 && getComputedStyle(element).visibility !== 'hidden') {
      window.__benchVisible = performance.now();
      return true;
    }
    return false;
  };
  const frame = () => { if (!check()) requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
  new MutationObserver((_, observer) => { if (check()) observer.disconnect(); })
    .observe(document, { childList: true, subtree: true, attributes: true });
}

/** One load of `target.url` in a new tab of `context`: its requests, bytes and times. */
async function load(context, target) {
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const requests = new Map(); // requestId -> the request's current hop
  const hops = []; // every hop, redirects included
  const hop = (id, url) => {
    const entry = { url, type: null, status: null, cached: false, headerBytes: 0, wire: 0, decoded: 0, headers: {}, done: false };
    requests.set(id, entry);
    hops.push(entry);
  };
  const headersOf = (response) =>
    Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
  cdp.on('Network.requestWillBeSent', (e) => {
    const previous = requests.get(e.requestId);
    if (previous && e.redirectResponse) {
      // The redirect's own response: its bytes are all headers and a small body.
      previous.status = e.redirectResponse.status;
      previous.headers = headersOf(e.redirectResponse);
      previous.wire = e.redirectResponse.encodedDataLength;
      previous.headerBytes = e.redirectResponse.encodedDataLength;
      previous.done = true;
    }
    if (!e.request.url.startsWith('data:')) hop(e.requestId, e.request.url);
    else requests.delete(e.requestId);
  });
  cdp.on('Network.requestServedFromCache', (e) => {
    const entry = requests.get(e.requestId);
    if (entry) entry.cached = true;
  });
  cdp.on('Network.responseReceived', (e) => {
    const entry = requests.get(e.requestId);
    if (!entry) return;
    entry.type = e.type;
    entry.status = e.response.status;
    entry.headers = headersOf(e.response);
    entry.headerBytes = e.response.encodedDataLength;
    if (e.response.fromDiskCache || e.response.fromPrefetchCache) entry.cached = true;
  });
  cdp.on('Network.dataReceived', (e) => {
    const entry = requests.get(e.requestId);
    if (entry) entry.decoded += e.dataLength;
  });
  cdp.on('Network.loadingFinished', (e) => {
    const entry = requests.get(e.requestId);
    if (entry) Object.assign(entry, { wire: e.encodedDataLength, done: true });
  });
  cdp.on('Network.loadingFailed', (e) => {
    const entry = requests.get(e.requestId);
    if (entry) Object.assign(entry, { failed: e.errorText, done: true });
  });
  await page.addInitScript(watchVisible, target.selector);

  const document = await page.goto(target.url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  if (document.status() !== 200) throw new Error(`${target.url} answered ${document.status()}`);
  await page.waitForSelector(target.selector, { state: 'visible', timeout: 60_000 });
  await page.waitForLoadState('networkidle', { timeout: 60_000 });
  const times = await page.evaluate(() => ({
    dcl: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
    visible: window.__benchVisible,
  }));
  await page.close();

  const network = hops.filter((h) => !h.cached);
  const sum = (list, key) => list.reduce((total, h) => total + h[key], 0);
  // An empty body (PocketBase's extensions.js) has nothing to compress.
  const jsCss = network.filter((h) => (h.type === 'Script' || h.type === 'Stylesheet') && h.decoded > 0);
  const figures = {
    requests: hops.length,
    network_requests: network.length,
    cached_requests: hops.length - network.length,
    wire_bytes: sum(network, 'wire'),
    body_bytes: network.reduce((total, h) => total + Math.max(0, h.wire - h.headerBytes), 0),
    uncompressed_bytes: sum(hops, 'decoded'),
    js_css: jsCss.length,
    js_css_compressed: jsCss.filter((h) => COMPRESSED.has((h.headers['content-encoding'] || '').trim())).length,
    failed: hops.filter((h) => h.failed).length,
    dom_content_loaded_ms: +times.dcl.toFixed(1),
    login_visible_ms: times.visible === undefined ? null : +times.visible.toFixed(1),
  };
  const origin = new URL(target.url).origin;
  const assets = hops.map((h) => ({
    path: h.url.startsWith(origin) ? h.url.slice(origin.length) : h.url,
    type: h.type,
    status: h.status,
    from_cache: h.cached,
    wire_bytes: h.wire,
    body_bytes: Math.max(0, h.wire - h.headerBytes),
    uncompressed_bytes: h.decoded,
    content_encoding: h.headers['content-encoding'] || null,
    cache_control: h.headers['cache-control'] || null,
    ...(h.failed ? { failed: h.failed } : {}),
  }));
  return { figures, assets };
}

const browser = await chromium.launch({
  executablePath: settings.chromium,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
const results = {};
try {
  for (const target of settings.targets) {
    const context = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 800 } });
    const first = await load(context, target);
    const repeat = await load(context, target);
    await context.close();
    results[target.name] = {
      first: first.figures,
      repeat: repeat.figures,
      assets: { first: first.assets, repeat: repeat.assets },
    };
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
