// The web console end to end, as its users meet it: a real `cloudlet serve` with its console
// listener, Debian's Chromium driven by Playwright. The first owner sets the instance up,
// creates an app, rotates its key and gives a viewer a role; the viewer sees only what a
// viewer may and is refused by the server when trying more; the audit log shows what happened.
// Also measures the console's first load (requests and bytes, printed for the docs) and takes a
// screenshot of every page (into $CONSOLE_SCREENSHOTS, default ./screenshots).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CLOUDLET_BIN ?? resolve(here, "../../../target/debug/cloudlet");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = process.env.CONSOLE_SCREENSHOTS ?? join(here, "screenshots");
const TOKEN = randomBytes(20).toString("hex"); // 40 characters; the server wants 32 or more
const OWNER = { email: "owner@example.com", name: "Olivia Owner", password: "seven quiet lanterns drift north" };
const VIEWER = { email: "viewer@example.com", name: "Victor Viewer", password: "amber kettles hum in winter rain" };
const APP = "shop-demo";

// First load budget (the console's whole page: document, script, stylesheet, state).
const MAX_REQUESTS = 6;
const MAX_BYTES = 150_000;

let dir;
let server;
let serverOutput = "";
let serverExit = null;
let api; // http://127.0.0.1:<port>: the API listener
let consoleBase; // http://127.0.0.1:<port>: the console listener
let browser;
const problems = []; // page errors and CSP violations, from every page

// ---------------------------------------------------------------------------------------------
// The server and the browser

/** Ports nobody listens on: all held open at once so that they differ, then let go. */
async function freePorts(count) {
  const probes = await Promise.all(
    Array.from({ length: count }, () =>
      new Promise((resolveProbe, reject) => {
        const probe = createServer();
        probe.on("error", reject);
        probe.listen(0, "127.0.0.1", () => resolveProbe(probe));
      }),
    ),
  );
  const ports = probes.map((probe) => probe.address().port);
  await Promise.all(probes.map((probe) => new Promise((closed) => probe.close(closed))));
  return ports;
}

/** Polls `check` until it is true; fails early with the server's output if the server exits. */
async function waitUntil(what, check, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (serverExit !== null) throw new Error(`the server exited (${serverExit}) before ${what}:\n${serverOutput}`);
    try {
      if (await check()) return;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${serverOutput}`);
    await sleep(100);
  }
}

const answers = async (url) => (await fetch(url, { signal: AbortSignal.timeout(2_000) })).status === 200;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "cloudlet-console-e2e-"));
  mkdirSync(SHOTS, { recursive: true });
  const [apiPort, consolePort] = await freePorts(2);
  api = `http://127.0.0.1:${apiPort}`;
  consoleBase = `http://127.0.0.1:${consolePort}`;
  server = spawn(
    BIN,
    [
      "serve",
      "--data-dir", join(dir, "data"),
      "--listen", `127.0.0.1:${apiPort}`,
      "--console-listen", `127.0.0.1:${consolePort}`,
    ],
    {
      env: { ...process.env, CLOUDLET_ADMIN_TOKEN: TOKEN, CLOUDLET_LOG_LEVEL: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  server.stdout.on("data", (chunk) => (serverOutput += chunk));
  server.stderr.on("data", (chunk) => (serverOutput += chunk));
  server.on("exit", (code, signal) => (serverExit = code ?? signal));
  server.on("error", (error) => (serverExit = `${error.message}: build it (cargo build) or set CLOUDLET_BIN`));
  await waitUntil("the API answered /healthz", () => answers(`${api}/healthz`));
  await waitUntil("the console answered /console/", () => answers(`${consoleBase}/console/`));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  await stopServer();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function stopServer() {
  if (!server || serverExit !== null) return;
  const exited = new Promise((resolveExit) => server.once("exit", resolveExit));
  server.kill("SIGTERM");
  const timedOut = await Promise.race([exited.then(() => false), sleep(10_000).then(() => true)]);
  if (timedOut) server.kill("SIGKILL");
}

// Should the test runner itself be torn down, the server does not outlive it.
process.on("exit", () => {
  if (server && serverExit === null) server.kill("SIGKILL");
});

/** A fresh browser profile (no cookies) with one page, in English, watched for errors. */
async function newPage() {
  const context = await browser.newContext({ locale: "en-US", viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content[ -]Security[ -]Policy|Refused to/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
const text = (page, selector) => page.locator(selector).first().innerText();

// ---------------------------------------------------------------------------------------------
// The API, called straight (not through the console)

async function adminGet(path, bearer) {
  const response = await fetch(`${api}${path}`, { headers: { authorization: `Bearer ${bearer}` } });
  return response.status;
}

/** A call with a bearer token (or none): its status and its JSON (null for none). */
async function call(method, path, bearer, body) {
  const headers = bearer ? { authorization: `Bearer ${bearer}` } : {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(`${api}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const answer = await response.text();
  return { status: response.status, body: answer ? JSON.parse(answer) : null };
}

// ---------------------------------------------------------------------------------------------
// Steps: each one builds on the ones before, so after a failure the rest are skipped.

let broken = false;
function step(name, body) {
  test(name, async (t) => {
    if (broken) return t.skip("an earlier step failed");
    try {
      await body();
    } catch (error) {
      broken = true;
      // What the pages said often explains what the test saw.
      if (problems.length) error.message += `\nfrom the pages:\n${problems.join("\n")}`;
      throw error;
    }
  });
}

let owner; // the owner's page
let viewer; // the viewer's page
let firstKey;
let secondKey;

step("the first load is small: few requests, few bytes, compressed assets, a strict CSP", async () => {
  owner = await newPage();
  const requests = [];
  const responses = [];
  const onRequest = (request) => {
    if (!request.url().startsWith("data:")) requests.push(request);
  };
  const onResponse = (response) => {
    if (!response.url().startsWith("data:")) responses.push(response);
  };
  owner.on("request", onRequest);
  owner.on("response", onResponse);
  const document = await owner.goto(`${consoleBase}/console/`, { waitUntil: "networkidle" });
  await owner.waitForSelector("[data-test=setup-form]");
  owner.off("request", onRequest);
  owner.off("response", onResponse);

  assert.equal(document.status(), 200);
  const csp = (await document.allHeaders())["content-security-policy"] ?? "";
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self'/);

  let bytes = 0;
  const lines = [];
  for (const response of responses) {
    const headers = await response.allHeaders();
    let size = Number(headers["content-length"]);
    if (!Number.isFinite(size) || headers["content-length"] === undefined) {
      size = await response.body().then((body) => body.length, () => 0);
    }
    bytes += size;
    lines.push(`  ${response.status()} ${new URL(response.url()).pathname} ${size} bytes ${headers["content-encoding"] ?? ""}`);
  }
  const asset = (pattern) => responses.find((r) => pattern.test(new URL(r.url()).pathname));
  for (const [kind, pattern] of [["JS", /^\/console\/assets\/console\.[^/]+\.js$/], ["CSS", /^\/console\/assets\/console\.[^/]+\.css$/]]) {
    const response = asset(pattern);
    assert.ok(response, `the ${kind} asset was loaded from /console/assets/console.<hash>: ${lines.join("\n")}`);
    assert.equal((await response.allHeaders())["content-encoding"], "gzip", `the ${kind} asset is gzipped`);
  }
  console.log(`console first load: ${requests.length} requests, ${bytes} bytes\n${lines.join("\n")}`);
  assert.ok(requests.length <= MAX_REQUESTS, `${requests.length} requests on the first load`);
  assert.ok(bytes <= MAX_BYTES, `${bytes} bytes on the first load`);
  await shot(owner, "1-setup");
});

step("the first owner sets the instance up with the admin token and lands on Apps", async () => {
  await owner.fill("[data-test=setup-token]", TOKEN);
  await owner.fill("[data-test=setup-email]", OWNER.email);
  await owner.fill("[data-test=setup-name]", OWNER.name);
  await owner.fill("[data-test=setup-password]", OWNER.password);
  await owner.click("[data-test=setup-submit]");
  await owner.waitForSelector("[data-test=apps-page]");
  assert.equal(new URL(owner.url()).hash, "#/apps");
  assert.match(await text(owner, "[data-test=whoami]"), /Olivia Owner/);
  await owner.waitForSelector("[data-test=nav-people]");
});

step("the owner creates an app and is shown its secret key once; the key works", async () => {
  await owner.fill("[data-test=new-app-name]", APP);
  await owner.click("[data-test=new-app-submit]");
  await owner.waitForSelector("[data-test=secret-key]");
  firstKey = (await owner.textContent("[data-test=secret-key]")).trim();
  assert.ok(firstKey.length >= 16, `a secret key: ${firstKey}`);
  await owner.waitForSelector(`[data-test=app-row][data-app=${APP}][data-role=owner]`);
  await shot(owner, "2-apps");

  assert.equal(await adminGet(`/v1/admin/apps/${APP}`, TOKEN), 200);
  assert.equal(await adminGet(`/v1/admin/apps/${APP}`, firstKey), 200);
});

step("the owner rotates the app's key on its page: the old key stops working, the new one works", async () => {
  await owner.click(`[data-test=app-link][data-app=${APP}]`);
  await owner.waitForSelector("[data-test=app-details]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}`);
  assert.equal(await owner.locator("[data-test=delete-app]").count(), 1);
  await owner.click("[data-test=rotate-key]");
  await owner.click("[data-test=rotate-confirm]");
  await owner.waitForSelector("[data-test=secret-key]");
  secondKey = (await owner.textContent("[data-test=secret-key]")).trim();
  assert.notEqual(secondKey, firstKey);
  await owner.waitForSelector("[data-test=key-hint]");
  const hint = (await owner.textContent("[data-test=key-hint]")).replace("…", "").trim();
  assert.ok(hint && secondKey.startsWith(hint), `the key hint ${hint} is the new key's`);
  await owner.waitForSelector("[data-test=collections]");
  await shot(owner, "3-app");

  assert.equal(await adminGet(`/v1/admin/apps/${APP}`, firstKey), 401);
  assert.equal(await adminGet(`/v1/admin/apps/${APP}`, secondKey), 200);
});

step("the owner adds a viewer and gives them the viewer role on the app", async () => {
  await owner.click("[data-test=nav-people]");
  await owner.waitForSelector("[data-test=people-table]");
  await owner.fill("[data-test=person-email]", VIEWER.email);
  await owner.fill("[data-test=person-name]", VIEWER.name);
  await owner.fill("[data-test=person-password]", VIEWER.password);
  await owner.selectOption("[data-test=person-role]", "member");
  await owner.click("[data-test=person-submit]");
  const row = `[data-test=person-row][data-email="${VIEWER.email}"]`;
  await owner.waitForSelector(row);
  assert.equal(await owner.getAttribute(`${row} [data-test=instance-role] .badge`, "class"), "badge badge-member");

  await owner.selectOption(`${row} [data-test=grant-app]`, APP);
  await owner.selectOption(`${row} [data-test=grant-role]`, "viewer");
  await owner.click(`${row} [data-test=grant-submit]`);
  await owner.waitForSelector(`${row} [data-test=person-app-role][data-app=${APP}][data-role=viewer]`);
  await shot(owner, "4-people");

  const people = await owner.evaluate(async () => {
    const response = await fetch("/console/api/people", { credentials: "same-origin" });
    return response.json();
  });
  const person = people.items.find((p) => p.email === "viewer@example.com");
  assert.equal(person?.instance_role, "member");
  assert.deepEqual(person?.apps, { [APP]: "viewer" });
});

step("the viewer signs in and sees the app as a viewer, with nothing to create, rotate or delete", async () => {
  await owner.click("[data-test=logout]");
  await owner.waitForSelector("[data-test=login-form]");
  await shot(owner, "5-login");

  viewer = await newPage();
  await viewer.goto(`${consoleBase}/console/`);
  await viewer.waitForSelector("[data-test=login-form]");
  // A wrong password: the server's error, with its code, in a banner.
  await viewer.fill("[data-test=login-email]", VIEWER.email);
  await viewer.fill("[data-test=login-password]", "not the password at all");
  await viewer.click("[data-test=login-submit]");
  await viewer.waitForSelector("[data-test=error][data-code=invalid_login]");
  await viewer.fill("[data-test=login-password]", VIEWER.password);
  await viewer.click("[data-test=login-submit]");
  await viewer.waitForSelector(`[data-test=app-row][data-app=${APP}][data-role=viewer]`);
  assert.equal(await viewer.locator("[data-test=app-row]").count(), 1);
  assert.equal(await text(viewer, `[data-test=app-row][data-app=${APP}] [data-test=app-role]`), "Viewer");
  assert.equal(await viewer.locator("[data-test=new-app-name]").count(), 0);
  assert.equal(await viewer.locator("[data-test=nav-people]").count(), 0);

  await viewer.click(`[data-test=app-link][data-app=${APP}]`);
  await viewer.waitForSelector("[data-test=app-details]");
  assert.equal(await viewer.locator("[data-test=rotate-key]").count(), 0);
  assert.equal(await viewer.locator("[data-test=delete-app]").count(), 0);
});

step("the server refuses the viewer's admin calls: forbidden with the CSRF header, csrf_failed without", async () => {
  const probe = await viewer.evaluate(async (app) => {
    const state = await (await fetch("/console/api/state", { credentials: "same-origin" })).json();
    const post = async (url, headers, body = "{}") => {
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json", ...headers },
        body,
      });
      const answer = await response.json().catch(() => null);
      return { status: response.status, code: answer?.error?.code ?? null };
    };
    const csrf = { "x-cloudlet-csrf": state.csrf };
    return {
      rotate: await post(`/v1/admin/apps/${app}/keys/rotate`, csrf),
      rotateWithoutCsrf: await post(`/v1/admin/apps/${app}/keys/rotate`, {}),
      create: await post("/v1/admin/apps", csrf, JSON.stringify({ name: "viewer-app" })),
    };
  }, APP);
  assert.deepEqual(probe.rotate, { status: 403, code: "forbidden" });
  assert.deepEqual(probe.rotateWithoutCsrf, { status: 403, code: "csrf_failed" });
  assert.equal(probe.create.status, 403);
  // Nothing changed: the key the owner got is still the one.
  assert.equal(await adminGet(`/v1/admin/apps/${APP}`, secondKey), 200);
});

step("the console speaks Chinese when asked, remembers it, and stores nothing else", async () => {
  await viewer.selectOption("#lang", "zh-CN");
  await viewer.click("[data-test=nav-apps]");
  await viewer.waitForSelector("[data-test=apps-table]");
  assert.equal(await text(viewer, "[data-test=page-title]"), "应用");
  assert.equal(await text(viewer, `[data-test=app-row][data-app=${APP}] [data-test=app-role]`), "查看者");
  assert.equal(await viewer.evaluate(() => document.documentElement.lang), "zh-CN");
  await shot(viewer, "6-apps-zh");

  await viewer.reload();
  await viewer.waitForSelector("[data-test=apps-table]");
  assert.equal(await text(viewer, "[data-test=page-title]"), "应用");
  const stored = await viewer.evaluate(() => ({ local: { ...localStorage }, session: { ...sessionStorage } }));
  assert.deepEqual(stored, { local: { "cloudlet.console.lang": "zh-CN" }, session: {} });
});

step("back as the owner, the audit log shows the app's creation and the key rotation", async () => {
  await owner.fill("[data-test=login-email]", OWNER.email);
  await owner.fill("[data-test=login-password]", OWNER.password);
  await owner.click("[data-test=login-submit]");
  await owner.waitForSelector("[data-test=apps-page]");
  await owner.click("[data-test=nav-audit]");

  const entries = () =>
    owner.$$eval("[data-test=audit-row]", (rows) =>
      rows.map((row) => ({
        actor: row.querySelector("[data-test=audit-actor]").textContent,
        app: row.querySelector("[data-test=audit-entry-app]").textContent,
        action: row.querySelector("[data-test=audit-action]").textContent,
        status: Number(row.querySelector("[data-test=audit-status]").textContent),
      })),
    );
  const created = (e) => /^POST \/v1\/admin\/apps(\?.*)?$/.test(e.action) && e.status === 201;
  const rotated = (e) => e.action.includes("keys/rotate") && e.status === 200;
  let log = [];
  for (let attempt = 0; attempt < 20; attempt += 1) {
    await owner.waitForSelector("[data-test=audit-table]");
    await owner.waitForFunction(() => !document.querySelector("[data-test=audit-page] [role=status]"));
    log = await entries();
    if (log.some(created) && log.some(rotated)) break;
    await sleep(250);
    await owner.reload();
  }
  const creation = log.find(created);
  const rotation = log.find(rotated);
  assert.ok(creation, `the creation is in the log: ${JSON.stringify(log)}`);
  assert.ok(rotation, `the rotation is in the log: ${JSON.stringify(log)}`);
  assert.equal(creation.actor, OWNER.email);
  assert.equal(rotation.actor, OWNER.email);
  assert.equal(rotation.app, APP);
  await shot(owner, "7-audit");

  // Filtered to the app, every entry is the app's.
  await owner.selectOption("[data-test=audit-app]", APP);
  await owner.waitForFunction(
    (app) => {
      const rows = [...document.querySelectorAll("[data-test=audit-row] [data-test=audit-entry-app]")];
      return rows.length > 0 && rows.every((cell) => cell.textContent === app);
    },
    APP,
  );
});

// ---------------------------------------------------------------------------------------------
// An app's data, functions and queues

const NOTES = `/v1/apps/${APP}/collections/notes/records`;
const rowIds = (page) => page.$$eval("[data-test=record-row]", (rows) => rows.map((row) => row.dataset.id));
const titles = (page) =>
  page.$$eval("[data-test=record-row] [data-test=record-field][data-field=title]", (cells) => cells.map((c) => c.textContent));

/** Clicks `selector` (which swaps the list for "loading") and waits for the records of `page`. */
async function showRecords(page, selector, number) {
  await page.click(selector);
  await page.waitForSelector(`[data-test=records][data-page="${number}"]`);
}

step("the owner creates a collection on the Data page and pages, filters, creates, edits and deletes records", async () => {
  await owner.click("[data-test=nav-apps]");
  await owner.click(`[data-test=app-link][data-app=${APP}]`);
  await owner.waitForSelector("[data-test=tab-data]");
  await owner.click("[data-test=tab-data]");
  const form = "[data-test=new-collection-form]";
  await owner.waitForSelector(form);
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/data`);
  assert.equal(await owner.getAttribute("[data-test=tab-data]", "aria-current"), "page");

  // The schema editor: nothing to check before a name; then a field name the server refuses,
  // said as it is typed (above the form: it is not a rule's), and again on saving.
  assert.equal(await owner.getAttribute(`${form} [data-test=schema-check]`, "data-valid"), null);
  await owner.fill(`${form} [data-test=new-collection-name]`, "notes");
  const fieldA = `${form} [data-test=schema-field] >> nth=0`;
  await owner.fill(`${fieldA} >> [data-test=field-name]`, "Bad Name");
  await owner.waitForSelector(`${form} [data-test=schema-check][data-valid=false]`);
  await owner.waitForSelector(`${form} [data-test=schema-problem] [data-test=error][data-code=invalid_collection]`);
  assert.match(await text(owner, `${form} [data-test=schema-problem]`), /Bad Name/);
  await owner.click(`${form} [data-test=schema-save]`);
  await owner.waitForSelector(`${form} [data-test=schema-problem] [data-test=error][data-code=invalid_collection]`);
  assert.equal(await owner.locator("[data-test=collection][data-collection=notes]").count(), 0);

  // title: text, required; done: bool. Only what applies to a type is offered.
  await owner.fill(`${fieldA} >> [data-test=field-name]`, "title");
  await owner.check(`${fieldA} >> [data-test=field-required]`);
  assert.ok(await owner.isVisible(`${fieldA} >> [data-test=field-constraint][data-key=max_length]`));
  assert.ok(!(await owner.isVisible(`${fieldA} >> [data-test=field-constraint][data-key=min]`)));
  await owner.click(`${form} [data-test=add-field]`);
  const fieldB = `${form} [data-test=schema-field] >> nth=1`;
  await owner.fill(`${fieldB} >> [data-test=field-name]`, "done");
  await owner.selectOption(`${fieldB} >> [data-test=field-type]`, "bool");
  assert.ok(!(await owner.isVisible(`${fieldB} >> [data-test=field-constraint][data-key=max_length]`)));
  // Rules left at "Default": the server's.
  assert.equal(await owner.inputValue(`${form} [data-test=rule-mode][data-rule=list]`), "default");
  await owner.waitForSelector(`${form} [data-test=schema-check][data-valid=true][data-plan=create]`);
  await owner.click(`${form} [data-test=schema-save]`);
  const card = "[data-test=collection][data-collection=notes]";
  await owner.waitForSelector(card);
  await owner.waitForSelector("[data-test=notice]");
  assert.deepEqual(await owner.$$eval(`${card} [data-test=field-row]`, (rows) => rows.map((r) => r.dataset.field)), ["title", "done"]);
  assert.match(await text(owner, `${card} [data-test=field-row][data-field=title]`), /text\s+required/);
  assert.equal(await text(owner, `${card} [data-test=rule-list]`), "owner = @auth.id");
  assert.equal(await text(owner, `${card} [data-test=rule-create]`), "@auth.id != null");

  // 120 records through the API, with the app's key.
  for (let start = 1; start <= 120; start += 10) {
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) => call("POST", NOTES, secondKey, { title: `note ${start + i}`, done: (start + i) % 2 === 0 })),
    );
    for (const answer of answers) assert.equal(answer.status, 201, JSON.stringify(answer.body));
  }

  // Pages of 50, by cursor.
  await showRecords(owner, `${card} [data-test=collection-link]`, 1);
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/data/notes`);
  const first = await rowIds(owner);
  assert.equal(first.length, 50);
  assert.ok(await owner.isDisabled("[data-test=page-prev]"));
  await showRecords(owner, "[data-test=page-next]", 2);
  const second = await rowIds(owner);
  assert.equal(second.length, 50);
  assert.ok(second.every((id) => !first.includes(id)), "the second page shows other records than the first");
  await showRecords(owner, "[data-test=page-next]", 3);
  const third = await rowIds(owner);
  assert.equal(third.length, 20);
  assert.ok(await owner.isDisabled("[data-test=page-next]"));
  assert.equal(new Set([...first, ...second, ...third]).size, 120);
  await showRecords(owner, "[data-test=page-prev]", 2);
  assert.deepEqual(await rowIds(owner), second);

  // A filter in the filter language: `~` is "contains".
  await owner.fill("[data-test=filter]", 'title ~ "7"');
  await showRecords(owner, "[data-test=apply-filter]", 1);
  const matching = await titles(owner);
  const expected = Array.from({ length: 120 }, (_, i) => `note ${i + 1}`).filter((title) => title.includes("7"));
  assert.deepEqual([...matching].sort(), [...expected].sort());
  assert.ok(await owner.isDisabled("[data-test=page-next]"));

  // A filter that does not parse: the server's code and message.
  await owner.fill("[data-test=filter]", "title = ");
  await owner.click("[data-test=apply-filter]");
  await owner.waitForSelector("[data-test=error][data-code=invalid_filter]");
  assert.match(await text(owner, "[data-test=error]"), /invalid_filter/);
  assert.equal(await owner.locator("[data-test=record-row]").count(), 0);

  // A record made in the console is there for the API.
  await owner.fill("[data-test=filter]", "");
  await showRecords(owner, "[data-test=apply-filter]", 1);
  await owner.fill("[data-test=new-record]", JSON.stringify({ title: "from the console", done: true }));
  await owner.click("[data-test=new-record-submit]");
  await owner.waitForSelector("[data-test=notice]");
  const made = await call("GET", `${NOTES}?${new URLSearchParams({ filter: 'title = "from the console"' })}`, secondKey);
  assert.equal(made.status, 200);
  assert.equal(made.body.items.length, 1);
  const id = made.body.items[0].id;
  assert.equal(made.body.items[0].done, true);

  // Edited: the editor holds its fields; the change reaches the API.
  const row = `[data-test=record-row][data-id="${id}"]`;
  await owner.fill("[data-test=filter]", `id = "${id}"`);
  await showRecords(owner, "[data-test=apply-filter]", 1);
  await owner.click(`${row} [data-test=edit-record]`);
  const editor = `[data-test=record-editor][data-id="${id}"]`;
  assert.deepEqual(JSON.parse(await owner.inputValue(`${editor} [data-test=record-json]`)), { title: "from the console", done: true });
  await owner.fill(`${editor} [data-test=record-json]`, JSON.stringify({ title: "edited in the console", done: false }));
  await owner.click(`${editor} [data-test=save-record]`);
  await owner.waitForFunction(
    (selector) => document.querySelector(selector)?.textContent === "edited in the console",
    `${row} [data-test=record-field][data-field=title]`,
  );
  const edited = await call("GET", `${NOTES}/${id}`, secondKey);
  assert.equal(edited.status, 200);
  assert.equal(edited.body.title, "edited in the console");
  assert.equal(edited.body.done, false);

  // Deleted, after a confirmation: the API answers 404.
  await owner.click(`${row} [data-test=delete-record]`);
  await owner.click(`${row} [data-test=delete-record-confirm]`);
  await owner.waitForSelector("p[data-test=records]");
  const gone = await call("GET", `${NOTES}/${id}`, secondKey);
  assert.equal(gone.status, 404);
  assert.equal(gone.body.error.code, "record_not_found");

  // A filter and a sort: the page is the API's.
  const query = { filter: "done = true", sort: "-created_at,title" };
  await owner.fill("[data-test=filter]", query.filter);
  await owner.fill("[data-test=sort]", query.sort);
  await showRecords(owner, "[data-test=apply-filter]", 1);
  const page = await call("GET", `${NOTES}?${new URLSearchParams({ ...query, limit: "50" })}`, secondKey);
  assert.deepEqual(await rowIds(owner), page.body.items.map((record) => record.id));
  await shot(owner, "8-data");
});

step("the owner edits a collection's schema: rules checked as they are typed, fields added and removed", async () => {
  const NOTES_ADMIN = `/v1/admin/apps/${APP}/collections/notes`;
  const card = "[data-test=collection][data-collection=notes]";
  const editor = "[data-test=schema-editor][data-collection=notes]";
  const check = `${editor} [data-test=schema-check]`;
  const planned = (plan) => owner.waitForSelector(`${check}[data-valid=true][data-plan=${plan}]`);
  const open = async () => {
    await owner.click(`${card} [data-test=edit-schema]`);
    await owner.waitForSelector(editor);
    await planned("unchanged"); // as it is, it is checked too
  };
  await owner.click("[data-test=tab-data]");
  await open();
  // The editor holds the collection as it is, its rules as they are.
  assert.deepEqual(await owner.$$eval(`${editor} [data-test=field-name]`, (inputs) => inputs.map((i) => i.value)), ["title", "done"]);
  assert.equal(await owner.inputValue(`${editor} [data-test=rule-mode][data-rule=list]`), "when");
  assert.equal(await owner.inputValue(`${editor} [data-test=rule-input][data-rule=list]`), "owner = @auth.id");
  assert.equal(await owner.locator(`${editor} [data-test=rule-mode][data-rule=list] option[value=default]`).count(), 0);

  // A list rule with an unknown field: said under that rule, the character the server points at marked.
  const bad = "title = 'é' && nope = 1";
  const input = `${editor} [data-test=rule-input][data-rule=list]`;
  await owner.fill(input, bad);
  const error = `${editor} [data-test=rule-error][data-rule=list]`;
  await owner.waitForSelector(error);
  await owner.waitForSelector(`${check}[data-valid=false]`);
  const stored = (await call("GET", NOTES_ADMIN, TOKEN)).body;
  const definition = (list) => ({ fields: stored.fields, indexes: stored.indexes, rules: { ...stored.rules, list } });
  const server = await call("POST", `${NOTES_ADMIN}/check`, TOKEN, definition(bad));
  assert.equal(server.status, 200, JSON.stringify(server.body));
  assert.equal(server.body.valid, false);
  assert.equal(server.body.problem.rule, "list");
  const position = server.body.problem.position;
  assert.equal([...bad][position], "n", `the server points at the n of nope: ${JSON.stringify(server.body)}`);
  const at = `${error} [data-test=rule-error-at]`;
  assert.equal(Number(await owner.getAttribute(at, "data-position")), position);
  assert.equal(await text(owner, at), "n");
  assert.equal(await owner.getAttribute(input, "aria-invalid"), "true");
  assert.ok((await text(owner, error)).includes(server.body.problem.message), await text(owner, error));
  assert.equal(await owner.locator(`${editor} [data-test=schema-problem] [data-test=error]`).count(), 0);
  // Clicking where it is puts the cursor on it.
  await owner.click(`${error} .rule-where`);
  assert.deepEqual(await owner.$eval(input, (el) => [el.selectionStart, el.selectionEnd]), [position, position + 1]);
  await shot(owner, "17-schema");

  // Fixed: valid, an alteration; saved, and the API has the rule.
  const good = "title != 'é' && owner = @auth.id";
  await owner.fill(input, good);
  await planned("alter");
  assert.equal(await owner.locator(error).count(), 0);
  assert.equal(await owner.getAttribute(input, "aria-invalid"), null);
  assert.ok(await owner.isEnabled(`${editor} [data-test=schema-save]`));
  await owner.click(`${editor} [data-test=schema-save]`);
  await owner.waitForSelector(`${card} [data-test=notice]`);
  assert.equal(await owner.locator(editor).count(), 0);
  assert.equal(await text(owner, `${card} [data-test=rule-list]`), good);
  let saved = (await call("GET", NOTES_ADMIN, TOKEN)).body;
  assert.equal(saved.rules.list, good);
  assert.equal(saved.rules.view, "owner = @auth.id");
  const version = saved.version;

  // A field added (an integer from 0 to 5), an index, a rule opened to everyone: an alteration.
  await open();
  await owner.click(`${editor} [data-test=add-field]`);
  const added = `${editor} [data-test=schema-field] >> nth=2`;
  await owner.fill(`${added} >> [data-test=field-name]`, "priority");
  await owner.selectOption(`${added} >> [data-test=field-type]`, "integer");
  await owner.fill(`${added} >> [data-test=field-constraint][data-key=min]`, "0");
  await owner.fill(`${added} >> [data-test=field-constraint][data-key=max]`, "5");
  await owner.fill(`${added} >> [data-test=field-constraint][data-key=default]`, "nope");
  await owner.waitForSelector(`${check}[data-valid=false]`);
  await owner.waitForSelector(`${editor} [data-test=schema-problem] [data-test=error]`);
  await owner.fill(`${added} >> [data-test=field-constraint][data-key=default]`, "1");
  await owner.click(`${editor} [data-test=add-index]`);
  await owner.fill(`${editor} [data-test=index-fields]`, "done, priority");
  await owner.selectOption(`${editor} [data-test=rule-mode][data-rule=view]`, "everyone");
  await planned("alter");
  await owner.click(`${editor} [data-test=schema-save]`);
  await owner.waitForSelector(`${card} [data-test=notice]`);
  await owner.waitForSelector(`${card} [data-test=field-row][data-field=priority]`);
  saved = (await call("GET", NOTES_ADMIN, TOKEN)).body;
  assert.equal(saved.version, version + 1);
  assert.deepEqual(
    saved.fields.find((f) => f.name === "priority"),
    { name: "priority", type: "integer", default: 1, min: 0, max: 5 },
  );
  assert.deepEqual(saved.indexes, [{ fields: ["done", "priority"], unique: false }]);
  assert.equal(saved.rules.view, "");
  assert.equal(saved.rules.list, good);

  // Removing it loses its values: the plan says so, and saving waits for the confirmation.
  await open();
  await owner.click(`${editor} [data-test=schema-index] [data-test=remove-index]`);
  await owner.click(`${editor} [data-test=schema-field][data-field=priority] [data-test=remove-field]`);
  await planned("destroy");
  assert.ok(await owner.isDisabled(`${editor} [data-test=schema-save]`));
  assert.ok(await owner.isVisible(`${editor} [data-test=schema-force]`));
  await owner.check(`${editor} [data-test=schema-force]`);
  await owner.click(`${editor} [data-test=schema-save]`);
  await owner.waitForSelector(`${card} [data-test=notice]`);
  saved = (await call("GET", NOTES_ADMIN, TOKEN)).body;
  assert.deepEqual(saved.fields.map((f) => f.name), ["title", "done"]);
  assert.deepEqual(saved.indexes, []);
  assert.equal(saved.version, version + 2);
  assert.deepEqual(await owner.$$eval(`${card} [data-test=field-row]`, (rows) => rows.map((r) => r.dataset.field)), ["title", "done"]);

  // Cancel leaves it as it was.
  await open();
  await owner.fill(`${editor} [data-test=field-name] >> nth=0`, "renamed");
  await owner.click(`${editor} [data-test=schema-cancel]`);
  await owner.waitForSelector(`${card} [data-test=field-row][data-field=title]`);
  assert.equal((await call("GET", NOTES_ADMIN, TOKEN)).body.version, version + 2);
});

const GREET = (version) => `export default async function (event, ctx) {
  console.log("greeting", event.name);
  if (event.fail) throw new Error("asked to fail");
  return { hello: event.name ?? "world", version: ${version} };
}
`;

step("the owner sees a function deployed through the API, rolls it back, invokes it and reads its logs", async () => {
  for (const version of [1, 2]) {
    const deployed = await call("PUT", `/v1/admin/apps/${APP}/functions/greet`, TOKEN, { source: GREET(version) });
    assert.equal(deployed.status, 201, JSON.stringify(deployed.body));
    assert.equal(deployed.body.version, version);
  }
  await owner.click("[data-test=tab-functions]");
  const row = "[data-test=function-row][data-fn=greet]";
  await owner.waitForSelector(row);
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/functions`);
  assert.equal(await text(owner, `${row} [data-test=function-version]`), "2");

  await owner.click(`${row} [data-test=function-link]`);
  await owner.waitForSelector("[data-test=function-source][data-file='index.js']");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/functions/greet`);
  assert.equal(await owner.textContent("[data-test=function-source]"), GREET(2));

  // Back to version 1: it is the active one, here and for the API.
  await owner.click("[data-test=rollback][data-version='1']");
  await owner.waitForSelector("[data-test=version-row][data-version='1'][data-active=true]");
  assert.equal(await owner.textContent("[data-test=function-source]"), GREET(1));
  assert.equal(await text(owner, "[data-test=function-active-version]"), "1");
  assert.equal((await call("GET", `/v1/admin/apps/${APP}/functions/greet`, TOKEN)).body.version, 1);

  // Invoked with an event: its result; and a failure: its error.
  await owner.fill("[data-test=invoke-event]", JSON.stringify({ name: "Ada" }));
  await owner.click("[data-test=invoke-submit]");
  await owner.waitForSelector("[data-test=invoke-result]");
  assert.deepEqual(JSON.parse(await owner.textContent("[data-test=invoke-result]")), { hello: "Ada", version: 1 });
  await owner.fill("[data-test=invoke-event]", JSON.stringify({ fail: true }));
  await owner.click("[data-test=invoke-submit]");
  await owner.waitForSelector("[data-test=invoke-form] >> xpath=.. >> [data-test=error][data-code=function_error]");
  assert.match(await text(owner, "[data-test=error]"), /asked to fail/);

  // The log has both calls (it is written a few milliseconds after them).
  let outcomes = [];
  for (let attempt = 0; attempt < 40 && outcomes.length < 2; attempt += 1) {
    await sleep(250);
    await owner.click("[data-test=logs-refresh]");
    await owner.waitForSelector("[data-test=logs-section] :is([data-test=logs], p:not([role=status]))");
    outcomes = await owner.$$eval("[data-test=log-row]", (rows) => rows.map((r) => r.dataset.outcome));
  }
  assert.deepEqual(outcomes, ["error", "ok"]);

  // Followed: a call made elsewhere (through the API) comes on top within seconds, without a
  // reload (the mark on the window would be gone) and without Refresh; then no more once off.
  const follow = "[data-test=logs-follow]";
  assert.equal(await owner.getAttribute(follow, "aria-pressed"), "false");
  assert.equal(await text(owner, follow), "Follow");
  await owner.evaluate(() => (window.notReloaded = true));
  await owner.click(follow);
  assert.equal(await owner.getAttribute(follow, "aria-pressed"), "true");
  assert.equal(await text(owner, follow), "Following");
  const called = await call("POST", `/v1/apps/${APP}/functions/greet`, TOKEN, { name: "Bea" });
  assert.equal(called.status, 200, JSON.stringify(called.body));
  await owner.waitForFunction(() => document.querySelectorAll("[data-test=log-row]").length === 3, null, { timeout: 10_000 });
  assert.match(await text(owner, "[data-test=log-row]"), /greeting Bea/);
  assert.equal(await owner.evaluate(() => window.notReloaded), true);
  await owner.click(follow);
  assert.equal(await owner.getAttribute(follow, "aria-pressed"), "false");
  assert.equal((await call("POST", `/v1/apps/${APP}/functions/greet`, TOKEN, { name: "Cy" })).status, 200);
  await sleep(3_000);
  const dump = await owner.$$eval("[data-test=log-row]", (rows) => rows.map((r) => `${r.dataset.id} ${r.innerText.replace(/\s+/g, " ").slice(0, 80)}`));
  assert.equal(dump.length, 3, `nothing new once off: ${dump.join(" | ")}`);
  await shot(owner, "9-functions");
});

/** The ids of the log rows shown, top to bottom. */
const logIds = (page) => page.$$eval("[data-test=log-row]", (rows) => rows.map((row) => Number(row.dataset.id)));

step("the owner edits and deploys a function in the console, creates another, and filters and pages the logs", async () => {
  const greet = `/v1/admin/apps/${APP}/functions/greet`;
  const active = (await call("GET", greet, TOKEN)).body;
  assert.equal(active.version, 1, "rolled back to 1 in the step before");

  // The editor holds the active version: its source and its settings.
  await owner.click("[data-test=edit-function]");
  await owner.waitForSelector("[data-test=deploy-form]");
  assert.equal(await owner.inputValue("[data-test=deploy-source]"), GREET(1));
  assert.equal(await owner.getAttribute("[data-test=deploy-source]", "spellcheck"), "false");
  assert.equal(await owner.getAttribute("[data-test=deploy-source]", "data-file"), "index.js");
  assert.equal(await owner.locator("[data-test=deploy-file]").count(), 0, "one file: nothing to choose");
  assert.equal(await owner.isChecked("[data-test=deploy-public]"), false);
  assert.equal(await owner.inputValue("[data-test=deploy-timeout]"), String(active.timeout_ms));
  assert.equal(await owner.inputValue("[data-test=deploy-memory]"), String(active.memory_mb));
  assert.deepEqual(JSON.parse(await owner.inputValue("[data-test=deploy-settings]")), { triggers: [], schedules: [] });

  // Deployed: version 3, active here and for the API, with what was typed.
  await owner.fill("[data-test=deploy-source]", GREET(3));
  await owner.fill("[data-test=deploy-timeout]", "4000");
  await owner.fill("[data-test=deploy-settings]", JSON.stringify({ triggers: [], schedules: [], max_concurrency: 3 }));
  await owner.click("[data-test=deploy-submit]");
  await owner.waitForSelector("[data-test=version-row][data-version='3'][data-active=true]");
  assert.match(await text(owner, "[data-test=notice]"), /^Version 3 is deployed/);
  assert.equal(await owner.locator("[data-test=deploy-form]").count(), 0, "the editor is closed");
  assert.equal(await owner.textContent("[data-test=function-source]"), GREET(3));
  assert.equal(await text(owner, "[data-test=function-active-version]"), "3");
  const deployed = (await call("GET", greet, TOKEN)).body;
  assert.equal(deployed.version, 3);
  assert.deepEqual(deployed.versions.filter((v) => v.active).map((v) => v.version), [3]);
  assert.deepEqual(deployed.files, { "index.js": GREET(3) });
  assert.equal(deployed.entry, "index.js");
  assert.deepEqual(
    [deployed.public, deployed.timeout_ms, deployed.memory_mb, deployed.max_concurrency],
    [false, 4000, active.memory_mb, 3],
  );

  // Invoked in the console: the new version answers.
  await owner.fill("[data-test=invoke-event]", JSON.stringify({ name: "Dee" }));
  await owner.click("[data-test=invoke-submit]");
  await owner.waitForSelector("[data-test=invoke-result]");
  assert.deepEqual(JSON.parse(await owner.textContent("[data-test=invoke-result]")), { hello: "Dee", version: 3 });
  // Its log entry, on top once written, at version 3.
  for (let attempt = 0; attempt < 40 && !/greeting Dee/.test(await text(owner, "[data-test=log-row]")); attempt += 1) {
    await sleep(250);
    await owner.click("[data-test=logs-refresh]");
  }
  assert.match(await text(owner, "[data-test=log-row]"), /^\S.*\t3\tcall\tok\t.*greeting Dee/s);

  // A syntax error: refused with the server's code, nothing typed lost, version 3 still active.
  const broken = "export default async (event) => {\n  return { hello: \n";
  await owner.click("[data-test=edit-function]");
  assert.equal(await owner.inputValue("[data-test=deploy-source]"), GREET(3));
  await owner.fill("[data-test=deploy-source]", broken);
  await owner.click("[data-test=deploy-submit]");
  await owner.waitForSelector("[data-test=deploy-form] [data-test=error][data-code=function_syntax_error]");
  assert.equal(await owner.inputValue("[data-test=deploy-source]"), broken);
  assert.equal(await owner.inputValue("[data-test=deploy-timeout]"), "4000");
  const refused = (await call("GET", greet, TOKEN)).body;
  assert.equal(refused.version, 3);
  assert.equal(refused.versions.length, 3, "nothing stored");
  assert.deepEqual(refused.files, { "index.js": GREET(3) });
  await shot(owner, "18-deploy");
  await owner.click("[data-test=deploy-cancel]");
  await owner.waitForSelector("[data-test=function-source]");
  assert.equal(await owner.textContent("[data-test=function-source]"), GREET(3));

  // The log searched: an error made through the API, and calls enough for a second page.
  const invoke = (event) => call("POST", `/v1/apps/${APP}/functions/greet`, TOKEN, event);
  const logged = async (outcome = "") =>
    (await call("GET", `/v1/admin/apps/${APP}/logs?function=greet&limit=500${outcome && `&outcome=${outcome}`}`, TOKEN)).body.items;
  assert.equal((await invoke({ fail: true })).status, 422);
  for (let n = 0; n < 20; n += 1) assert.equal((await invoke({ name: `n${n}` })).status, 200);
  // Ada, the failure, Bea, Cy (the step before), Dee, this failure and the 20.
  await waitUntil("the calls are logged", async () => (await logged()).length === 26, 10_000);
  const errors = await logged("error");
  assert.equal(errors.length, 2);

  await owner.selectOption("[data-test=logs-outcome]", "error");
  await owner.waitForFunction(
    (n) => {
      const rows = [...document.querySelectorAll("[data-test=log-row]")];
      return rows.length === n && rows.every((row) => row.dataset.outcome === "error");
    },
    errors.length,
  );
  assert.deepEqual(await logIds(owner), errors.map((e) => e.id));
  assert.equal(await owner.isVisible("[data-test=logs-older]"), false, "one page of errors");

  // Followed with the filter: a new error comes on top, a success does not.
  const follow = "[data-test=logs-follow]";
  await owner.click(follow);
  assert.equal(await owner.getAttribute(follow, "aria-pressed"), "true");
  assert.equal((await invoke({ name: "Ola" })).status, 200);
  assert.equal((await invoke({ fail: true })).status, 422);
  await owner.waitForFunction((n) => document.querySelectorAll("[data-test=log-row]").length === n, errors.length + 1, { timeout: 10_000 });
  assert.deepEqual(
    await owner.$$eval("[data-test=log-row]", (rows) => rows.map((row) => row.dataset.outcome)),
    ["error", "error", "error"],
  );
  await owner.click(follow);
  assert.equal(await owner.getAttribute(follow, "aria-pressed"), "false");

  // All outcomes again: the newest 20, then Older adds the rest, and is gone at the end.
  const everything = await logged();
  assert.equal(everything.length, 28);
  await owner.selectOption("[data-test=logs-outcome]", "");
  await owner.waitForFunction(
    () => document.querySelectorAll("[data-test=log-row]").length === 20 && document.querySelector("[data-test=log-row][data-outcome=ok]"),
  );
  assert.deepEqual(await logIds(owner), everything.slice(0, 20).map((e) => e.id));
  await owner.waitForSelector("[data-test=logs-older]", { state: "visible" });
  await owner.click("[data-test=logs-older]");
  await owner.waitForFunction((n) => document.querySelectorAll("[data-test=log-row]").length === n, everything.length);
  assert.deepEqual(await logIds(owner), everything.map((e) => e.id));
  await owner.waitForSelector("[data-test=logs-older]", { state: "hidden" });

  // A new function from the list: a taken name is refused, a new one deployed and opened.
  await owner.click("[data-test=tab-functions]");
  await owner.click("[data-test=new-function]");
  const form = "[data-test=new-function-form]";
  await owner.waitForSelector(form);
  assert.match(await owner.inputValue("[data-test=new-function-source]"), /^export default async \(event, ctx\) =>/);
  await owner.fill("[data-test=new-function-name]", "greet");
  await owner.click("[data-test=new-function-submit]");
  await owner.waitForSelector(`${form} [data-test=error]`);
  assert.match(await text(owner, `${form} [data-test=error]`), /greet/);
  assert.equal((await call("GET", greet, TOKEN)).body.version, 3, "greet is left alone");
  await owner.fill("[data-test=new-function-name]", "welcome");
  await owner.check("[data-test=new-function-public]");
  await shot(owner, "19-new-function");
  await owner.click("[data-test=new-function-submit]");
  await owner.waitForSelector("[data-test=function-page] [data-test=function-source][data-file='index.js']");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/functions/welcome`);
  assert.match(await text(owner, "[data-test=notice]"), /welcome.*version 1/);
  assert.equal(await text(owner, "[data-test=function-active-version]"), "1");
  const welcome = await call("POST", `/v1/apps/${APP}/functions/welcome`, TOKEN, { name: "Fay" });
  assert.equal(welcome.status, 200, JSON.stringify(welcome.body));
  assert.deepEqual(welcome.body, { hello: "Fay" });
  const anybody = await call("POST", `/v1/apps/${APP}/functions/welcome`, null, {});
  assert.deepEqual([anybody.status, anybody.body], [200, { hello: "world" }], "public: callable without a token");

  // Several files: one shown at a time, each one's text kept; the settings not shown as fields
  // (a schedule) go back as they were.
  const INDEX = 'import { price } from "./lib/price.js";\nexport default async (event) => ({ total: price(event.n ?? 1) });\n';
  const PRICE = (each) => `export const price = (n) => n * ${each};\n`;
  const schedules = [{ cron: "0 4 1 1 *", timezone: "Asia/Shanghai", data: { tidy: true } }];
  const priced = `/v1/admin/apps/${APP}/functions/priced`;
  const first = await call("PUT", priced, TOKEN, { files: { "index.js": INDEX, "lib/price.js": PRICE(2) }, entry: "index.js", schedules });
  assert.equal(first.status, 201, JSON.stringify(first.body));
  await owner.click("[data-test=tab-functions]");
  await owner.click("[data-test=function-link][data-fn=priced]");
  await owner.click("[data-test=edit-function]");
  const source = "[data-test=deploy-source]";
  const file = "[data-test=deploy-file]";
  await owner.waitForSelector(source);
  assert.deepEqual(await owner.$$eval(`${file} option`, (options) => options.map((o) => o.value)), ["index.js", "lib/price.js"]);
  assert.deepEqual([await owner.getAttribute(source, "data-file"), await owner.inputValue(source)], ["index.js", INDEX]);
  assert.deepEqual(JSON.parse(await owner.inputValue("[data-test=deploy-settings]")), { triggers: [], schedules });
  await owner.selectOption(file, "lib/price.js");
  assert.deepEqual([await owner.getAttribute(source, "data-file"), await owner.inputValue(source)], ["lib/price.js", PRICE(2)]);
  await owner.fill(source, PRICE(5));
  await owner.selectOption(file, "index.js");
  assert.equal(await owner.inputValue(source), INDEX);
  await owner.selectOption(file, "lib/price.js");
  assert.equal(await owner.inputValue(source), PRICE(5), "the edit was kept");
  await owner.click("[data-test=deploy-submit]");
  await owner.waitForSelector("[data-test=version-row][data-version='2'][data-active=true]");
  const repriced = (await call("GET", priced, TOKEN)).body;
  assert.deepEqual(repriced.files, { "index.js": INDEX, "lib/price.js": PRICE(5) });
  assert.deepEqual([repriced.entry, repriced.schedules], ["index.js", schedules]);
  assert.deepEqual((await call("POST", `/v1/apps/${APP}/functions/priced`, TOKEN, { n: 3 })).body, { total: 15 });
});

step("the owner sees the queues with their counts, replays a dead letter and purges", async () => {
  const queues = `/v1/admin/apps/${APP}/queues`;
  assert.equal((await call("PUT", `${queues}/emails`, TOKEN, {})).status, 201);
  const messages = [1, 2, 3].map((n) => ({ payload: { to: `person${n}@example.com` } }));
  assert.equal((await call("POST", `${queues}/emails/messages`, TOKEN, { messages })).status, 201);
  // A message that failed its one attempt: a dead letter with its error.
  assert.equal((await call("PUT", `${queues}/flaky`, TOKEN, { max_attempts: 1 })).status, 201);
  assert.equal((await call("POST", `${queues}/flaky/messages`, TOKEN, { messages: [{ payload: { n: 1 } }] })).status, 201);
  const [delivery] = (await call("POST", `${queues}/flaky/claims`, TOKEN, { max: 1 })).body.deliveries;
  const failed = await call("POST", `${queues}/flaky/messages/${delivery.id}/fail`, TOKEN, { lease: delivery.lease, attempt: 1, error: "smtp down" });
  assert.deepEqual(failed.body, { state: "dead" });

  await owner.click("[data-test=tab-queues]");
  const emails = "[data-test=queue-row][data-queue=emails]";
  await owner.waitForSelector(emails);
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/queues`);
  assert.equal(await text(owner, `${emails} [data-test=queue-ready]`), "3");
  assert.equal(await text(owner, `${emails} [data-test=queue-dead]`), "0");
  assert.equal(await text(owner, "[data-test=queue-row][data-queue=flaky] [data-test=queue-dead]"), "1");

  await owner.click("[data-test=queue-link][data-queue=flaky]");
  await owner.waitForSelector(`[data-test=dead-row][data-id=${delivery.id}]`);
  assert.equal(await text(owner, "[data-test=dead-error]"), "smtp down");
  await owner.click("[data-test=replay-all]");
  await owner.waitForSelector("p[data-test=dead]");
  assert.match(await text(owner, "[data-test=notice]"), /^1 /);
  assert.equal(await text(owner, "[data-test=queue-details] [data-test=queue-ready]"), "1");

  await owner.selectOption("[data-test=purge-state]", "waiting");
  await owner.click("[data-test=purge]");
  await owner.click("[data-test=purge-confirm]");
  await owner.waitForFunction(() => document.querySelector("[data-test=queue-details] [data-test=queue-ready]")?.textContent === "0");
  const flaky = (await call("GET", `${queues}/flaky`, TOKEN)).body;
  assert.deepEqual([flaky.ready, flaky.dead], [0, 0]);

  await owner.click("[data-test=tab-queues]");
  await owner.waitForSelector(emails);
  await shot(owner, "10-queues");
});

step("the viewer sees records, functions and queues, with nothing to change them", async () => {
  await viewer.click(`[data-test=app-link][data-app=${APP}]`);
  await viewer.click("[data-test=tab-data]");
  await viewer.waitForSelector("[data-test=collection][data-collection=notes]");
  for (const control of ["new-collection-form", "edit-schema", "schema-editor"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  await showRecords(viewer, "[data-test=collection-link][data-collection=notes]", 1);
  assert.equal((await rowIds(viewer)).length, 50);
  for (const control of ["new-record-form", "new-record", "edit-record", "delete-record"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  await showRecords(viewer, "[data-test=page-next]", 2);

  await viewer.click("[data-test=tab-functions]");
  await viewer.waitForSelector("[data-test=function-row][data-fn=greet]");
  for (const control of ["new-function", "new-function-form"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  await viewer.click("[data-test=function-link][data-fn=greet]");
  await viewer.waitForSelector("[data-test=function-source]");
  for (const control of ["invoke-form", "rollback", "logs-section", "logs-outcome", "edit-function", "deploy-form"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }

  await viewer.click("[data-test=tab-queues]");
  await viewer.click("[data-test=queue-link][data-queue=emails]");
  await viewer.waitForSelector("[data-test=queue-details]");
  // The messages themselves: shown, or said to be for developers, as the server decides.
  await viewer.waitForSelector("[data-test=dead-letters] :is([data-test=dead], [data-test=dead-hidden])");
  for (const control of ["replay-all", "purge", "purge-state"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
});

// ---------------------------------------------------------------------------------------------
// An app's traffic, its users, and who sees them

/** The overview's totals, from the tiles' raw values. */
const usageTotals = (page) =>
  page.$eval("[data-test=usage]", (usage) =>
    Object.fromEntries(
      ["requests-total", "errors-total", "invocations-total", "connections", "files"].map((key) => [
        key,
        Number(usage.querySelector(`[data-test=usage-${key}]`).dataset.value),
      ]),
    ),
  );

step("the owner's overview shows the app's traffic: totals and charts, over the last hour and the last day", async () => {
  await owner.click("[data-test=tab-overview]");
  await owner.waitForSelector("[data-test=usage][data-range=hour] [data-test=usage-requests-total]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}`);
  const hour = await usageTotals(owner);
  // The records, function calls and queue calls of the steps before, through the API.
  assert.ok(hour["requests-total"] > 0, JSON.stringify(hour));
  assert.ok(hour["invocations-total"] >= 2, `the two invocations are counted: ${JSON.stringify(hour)}`);
  assert.equal(hour.connections, 0);
  assert.equal(hour.files, 0);
  for (const name of ["requests", "p99", "invocations"]) {
    assert.equal(await owner.locator(`svg[data-test=chart-${name}]`).count(), 1, `the ${name} chart`);
  }
  assert.equal(await owner.locator("svg[data-test=chart-requests] g").count(), 60, "a bar a minute");
  assert.ok((await owner.locator("svg[data-test=chart-requests] rect.bar").count()) > 0, "some minute has requests");
  assert.ok((await owner.locator("svg[data-test=chart-p99] rect.bar").count()) > 0, "some minute has a p99");
  assert.match(await text(owner, "[data-test=usage-p99]"), /^(\d[\d,.]* (ms|s)|> 2 s)$/);

  await owner.click("[data-test=usage-range] [data-range=day]");
  await owner.waitForSelector("[data-test=usage][data-range=day]");
  assert.equal(await owner.getAttribute("[data-test=usage-range] [data-range=day]", "aria-pressed"), "true");
  assert.equal(await owner.locator("svg[data-test=chart-requests] g").count(), 24, "a bar an hour");
  const day = await usageTotals(owner);
  for (const key of ["requests-total", "errors-total", "invocations-total"]) {
    assert.ok(day[key] >= hour[key], `${key}: the day's ${day[key]}, the hour's ${hour[key]}`);
  }

  // Refreshed: at least as much as before (the refresh itself may count).
  await owner.click("[data-test=usage-refresh]");
  await owner.waitForSelector("[data-test=usage-refresh]:not([disabled])");
  assert.ok((await usageTotals(owner))["requests-total"] >= day["requests-total"]);

  await owner.click("[data-test=usage-range] [data-range=hour]");
  await owner.waitForSelector("[data-test=usage][data-range=hour]");
  await shot(owner, "11-overview");
});

step("the owner finds a user on the Users page, revokes their session and deletes another user", async () => {
  const enabled = await call("PUT", `/v1/admin/apps/${APP}/auth/providers/dev`, TOKEN, { enabled: true });
  assert.equal(enabled.status, 200, JSON.stringify(enabled.body));
  const users = {};
  for (const name of ["ann", "bob", "cat"]) {
    const login = await call("POST", `/v1/apps/${APP}/auth/sessions`, null, { provider: "dev", user: name });
    assert.equal(login.status, 201, JSON.stringify(login.body));
    users[name] = login.body;
  }
  const ids = (page) => page.$$eval("[data-test=user-row]", (rows) => rows.map((row) => row.dataset.id));

  await owner.click("[data-test=tab-users]");
  await owner.waitForSelector("[data-test=users-page] [data-test=user-row]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/users`);
  assert.equal(await owner.getAttribute("[data-test=tab-users]", "aria-current"), "page");
  assert.deepEqual((await ids(owner)).sort(), Object.values(users).map((u) => u.user.id).sort());
  assert.ok(await owner.isDisabled("[data-test=users-prev]"));
  assert.ok(await owner.isDisabled("[data-test=users-next]"));

  // The dev provider's subject is the name: a search finds bob, and only him.
  await owner.fill("[data-test=user-search]", "bob");
  await owner.click("[data-test=user-search-submit]");
  await owner.waitForFunction(() => document.querySelectorAll("[data-test=user-row]").length === 1);
  assert.deepEqual(await ids(owner), [users.bob.user.id]);

  await owner.click("[data-test=user-link]");
  await owner.waitForSelector("[data-test=user-page] [data-test=session-row]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/users/${users.bob.user.id}`);
  assert.equal(await owner.locator("[data-test=identity-row]").count(), 1);
  assert.equal(await text(owner, "[data-test=identity-row][data-provider=dev] [data-test=identity-subject]"), "bob");
  assert.equal(await owner.locator("[data-test=session-row]").count(), 1);
  const session = await owner.getAttribute("[data-test=session-row]", "data-id");
  assert.equal(await owner.getAttribute("[data-test=session-row]", "data-revoked"), "false");
  assert.equal((await call("GET", `/v1/apps/${APP}/auth/user`, users.bob.access_token)).status, 200);

  // Revoked in the console: his access token stops working at once.
  await owner.click(`[data-test=revoke-session][data-id="${session}"]`);
  await owner.click(`[data-test=revoke-session-confirm][data-id="${session}"]`);
  await owner.waitForSelector(`[data-test=session-row][data-id="${session}"][data-revoked=true]`);
  await owner.waitForSelector("[data-test=notice]");
  assert.equal(await owner.locator("[data-test=revoke-session]").count(), 0);
  const revoked = await call("GET", `/v1/apps/${APP}/auth/user`, users.bob.access_token);
  assert.equal(revoked.status, 401, JSON.stringify(revoked.body));
  assert.equal(revoked.body.error.code, "session_revoked");

  // Ann deleted after a second click: back on the list, without her; the API has no such user.
  await owner.click("[data-test=tab-users]");
  await owner.click(`[data-test=user-row][data-id="${users.ann.user.id}"] [data-test=user-link]`);
  await owner.waitForSelector("[data-test=user-page] [data-test=sessions]");
  await owner.click("[data-test=delete-user]");
  await owner.click("[data-test=delete-user-confirm]");
  await owner.waitForSelector("[data-test=users-page] [data-test=user-row]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/users`);
  assert.match(await text(owner, "[data-test=notice]"), new RegExp(users.ann.user.id));
  assert.deepEqual((await ids(owner)).sort(), [users.bob.user.id, users.cat.user.id].sort());
  const gone = await call("GET", `/v1/admin/apps/${APP}/users/${users.ann.user.id}`, TOKEN);
  assert.equal(gone.status, 404, JSON.stringify(gone.body));
  assert.equal(gone.body.error.code, "user_not_found");
  await shot(owner, "12-users");
});

step("an app owner who is not an instance owner sees the Users tab, but neither Rotate nor Delete", async () => {
  const APP_OWNER = { email: "app-owner@example.com", name: "Ada Appowner", password: "crimson ferries sail past the harbour" };
  const made = await owner.evaluate(async ({ person, app }) => {
    const { csrf } = await (await fetch("/console/api/state", { credentials: "same-origin" })).json();
    const send = async (method, url, body) => {
      const headers = { "content-type": "application/json", "x-cloudlet-csrf": csrf };
      const response = await fetch(url, { method, credentials: "same-origin", headers, body: JSON.stringify(body) });
      return { status: response.status, body: await response.json().catch(() => null) };
    };
    const added = await send("POST", "/console/api/people", { ...person, instance_role: "member" });
    const id = added.body?.id ?? added.body?.person?.id;
    const granted = await send("PUT", `/console/api/people/${encodeURIComponent(id)}/apps/${app}`, { role: "owner" });
    return { added, granted };
  }, { person: APP_OWNER, app: APP });
  assert.equal(made.added.status, 201, JSON.stringify(made.added));
  assert.ok(made.granted.status < 300, JSON.stringify(made.granted));

  const page = await newPage();
  await page.goto(`${consoleBase}/console/`);
  await page.fill("[data-test=login-email]", APP_OWNER.email);
  await page.fill("[data-test=login-password]", APP_OWNER.password);
  await page.click("[data-test=login-submit]");
  await page.click(`[data-test=app-row][data-app=${APP}][data-role=owner] [data-test=app-link]`);
  await page.waitForSelector("[data-test=app-details] [data-test=app-role]");
  await page.waitForSelector("[data-test=usage-requests-total]");
  await page.waitForSelector("[data-test=tab-users]");
  assert.equal(await page.locator("[data-test=rotate-key]").count(), 0);
  assert.equal(await page.locator("[data-test=delete-app]").count(), 0);
  await page.click("[data-test=tab-users]");
  await page.waitForSelector("[data-test=user-row]");
  await page.context().close();
});

step("the viewer sees the traffic but no Users tab and no Rotate button; the users are refused", async () => {
  await viewer.click("[data-test=tab-overview]");
  await viewer.waitForSelector("[data-test=app-details]");
  await viewer.waitForSelector("[data-test=usage-requests-total]");
  for (const control of ["tab-users", "rotate-key", "delete-app"]) {
    assert.equal(await viewer.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  assert.equal(await viewer.locator("[data-test=tab-queues]").count(), 1);
  // Typed into the address bar: the server's refusal.
  await viewer.evaluate((app) => (location.hash = `#/apps/${app}/users`), APP);
  await viewer.waitForSelector("[data-test=users-page] [data-test=error][data-code=forbidden]");
  assert.equal(await viewer.locator("[data-test=tab-users]").count(), 0);
  await viewer.context().close();
  await owner.context().close();
});

// ---------------------------------------------------------------------------------------------
// Payments, realtime and the app's settings

/** A fresh page signed in as `person`, on the app's `tab`. */
async function signedInOn(person, tab) {
  const page = await newPage();
  await page.goto(`${consoleBase}/console/`);
  await page.fill("[data-test=login-email]", person.email);
  await page.fill("[data-test=login-password]", person.password);
  await page.click("[data-test=login-submit]");
  await page.click(`[data-test=app-link][data-app=${APP}]`);
  await page.waitForSelector(`[data-test=tab-${tab}]`);
  await page.click(`[data-test=tab-${tab}]`);
  return page;
}

step("the owner's Payments tab: no orders, no reports, and without a merchant the server refuses to compare a day", async () => {
  owner = await signedInOn(OWNER, "payments");
  await owner.waitForSelector("[data-test=payments-page] p[data-test=orders]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/payments`);
  assert.equal(await owner.getAttribute("[data-test=tab-payments]", "aria-current"), "page");
  assert.equal(await owner.locator("[data-test=order-row]").count(), 0);
  await owner.waitForSelector("[data-test=payments-page] p[data-test=callbacks]");
  // The kept reports: none (or the server's refusal, in a banner, should it want a merchant).
  await owner.waitForSelector("[data-test=payments-page] :is(p[data-test=reports], [data-test=error])");
  // Yesterday (the form's default): the app has no WeChat Pay merchant.
  assert.match(await owner.inputValue("[data-test=reconcile-date]"), /^\d{4}-\d{2}-\d{2}$/);
  await owner.click("[data-test=reconcile-submit]");
  await owner.waitForSelector("[data-test=error][data-code=pay_not_configured]");
  assert.equal(await owner.locator("[data-test=report]").count(), 0);
  await shot(owner, "13-payments");
});

step("the owner saves realtime settings with a kind of channel, looks at its presence and sends it a message", async () => {
  await owner.click("[data-test=tab-realtime]");
  await owner.waitForSelector("[data-test=realtime-page] textarea[data-test=realtime-json]");
  assert.equal(await owner.locator("[data-test=kind-row]").count(), 0);
  const settings = JSON.parse(await owner.inputValue("[data-test=realtime-json]"));
  assert.deepEqual(settings.channels, {});

  // A kind the server refuses: its code, and nothing saved.
  await owner.fill("[data-test=realtime-json]", JSON.stringify({ channels: { Room: {} } }));
  await owner.click("[data-test=realtime-save]");
  await owner.waitForSelector("[data-test=error][data-code=invalid_realtime_settings]");

  const rules = { join: "@auth.id != null", publish: "@auth.id != null", presence: "" };
  settings.channels.room = { rules, history: { count: 50, age_secs: 60 } };
  await owner.fill("[data-test=realtime-json]", JSON.stringify(settings, null, 2));
  await owner.click("[data-test=realtime-save]");
  await owner.waitForSelector("[data-test=kind-row][data-kind=room]");
  await owner.waitForSelector("[data-test=notice]");
  const saved = await call("GET", `/v1/admin/apps/${APP}/realtime`, TOKEN);
  assert.equal(saved.status, 200, JSON.stringify(saved.body));
  assert.deepEqual(Object.keys(saved.body.channels), ["room"]);
  assert.deepEqual(saved.body.channels.room.rules, rules);
  assert.deepEqual(saved.body.channels.room.history, { count: 50, age_secs: 60 });

  // Nobody is in room:1; a message to it is numbered all the same.
  await owner.fill("[data-test=presence-channel]", "room:1");
  await owner.click("[data-test=presence-submit]");
  await owner.waitForSelector("[data-test=presence-count][data-value='0']");
  await owner.selectOption("[data-test=send-target]", "channels");
  await owner.fill("[data-test=send-to]", "room:1");
  await owner.fill("[data-test=send-data]", JSON.stringify({ text: "hello from the console" }));
  await owner.click("[data-test=send-submit]");
  await owner.waitForSelector("[data-test=send-section] [data-test=notice]");

  // Watched live over the console's own socket: what the server side publishes comes as it
  // happens; the console's watch is itself a socket of the app, counted and listed.
  await owner.waitForSelector("[data-test=sockets-count][data-value='0']");
  await owner.fill("[data-test=watch-channel]", "room:1");
  await owner.click("[data-test=watch-submit]");
  await owner.waitForSelector("[data-test=watched-channel][data-channel='room:1']");
  const published = await call("POST", `/v1/admin/apps/${APP}/realtime/channels/room:1/messages`, TOKEN, { data: { text: "seen live" } });
  assert.equal(published.status, 200, JSON.stringify(published.body));
  await owner.waitForSelector("[data-test=traffic-row][data-kind=message][data-channel='room:1']");
  assert.match(await text(owner, "[data-test=traffic-row]"), /seen live/);
  await owner.waitForSelector("[data-test=sockets-count][data-value='1']", { timeout: 10_000 });
  // The live channels: room:1, with the console's watch as its subscriber and two messages.
  await owner.click("[data-test=channels-section] .card-head button");
  await owner.waitForSelector("[data-test=channel-row][data-channel='room:1']");
  const channels = await call("GET", `/v1/admin/apps/${APP}/realtime/channels`, TOKEN);
  assert.equal(channels.status, 200, JSON.stringify(channels.body));
  assert.deepEqual(channels.body.channels, [{ name: "room:1", subscribers: 1, present: 0, seq: 2 }]);
  assert.match(await text(owner, "[data-test=channel-row][data-channel='room:1']"), /room:1\s+1\s+0\s+2/);
  await owner.click("[data-test=sockets-section] .card-head button");
  await owner.waitForSelector("[data-test=socket-row]");
  const sockets = await call("GET", `/v1/admin/apps/${APP}/realtime/sockets`, TOKEN);
  assert.equal(sockets.body.count, 1, JSON.stringify(sockets.body));
  assert.equal(await owner.getAttribute("[data-test=socket-row]", "data-socket"), sockets.body.sockets[0].id);
  await shot(owner, "14-realtime");

  // Unwatched: no more traffic rows.
  await owner.click("[data-test=watched-channel][data-channel='room:1'] [data-test=unwatch]");
  await owner.waitForSelector("[data-test=watched-channel]", { state: "detached" });
  await call("POST", `/v1/admin/apps/${APP}/realtime/channels/room:1/messages`, TOKEN, { data: { text: "unseen" } });
  await sleep(1_000);
  assert.equal(await owner.locator("[data-test=traffic-row]").count(), 1);
});

step("the owner turns the dev login on in Settings and sets a function secret; the API agrees, and secrets are never shown", async () => {
  // Off first: the users' step turned it on through the API.
  const off = await call("PUT", `/v1/admin/apps/${APP}/auth/providers/dev`, TOKEN, { enabled: false });
  assert.equal(off.status, 200, JSON.stringify(off.body));
  await owner.click("[data-test=tab-settings]");
  await owner.waitForSelector("[data-test=provider-row][data-provider=dev][data-enabled=false]");
  assert.equal(await owner.getAttribute("[data-test=tab-settings]", "aria-current"), "page");
  await owner.click("[data-test=edit-provider][data-provider=dev]");
  await owner.check("[data-test=provider-form][data-provider=dev] [data-test=provider-input][data-field=enabled]");
  await owner.click("[data-test=provider-save]");
  await owner.waitForSelector("[data-test=provider-row][data-provider=dev][data-enabled=true]");
  const dev = await call("GET", `/v1/admin/apps/${APP}/auth/providers/dev`, TOKEN);
  assert.equal(dev.status, 200, JSON.stringify(dev.body));
  assert.equal(dev.body.enabled, true);

  // WeChat with its secret: the row says a secret is set; the form never shows it.
  const input = (name) => `[data-test=provider-form][data-provider=wechat] [data-test=provider-input][data-field=${name}]`;
  await owner.click("[data-test=edit-provider][data-provider=wechat]");
  assert.equal(await owner.inputValue(input("secret")), "");
  await owner.check(input("enabled"));
  await owner.fill(input("appid"), "wx-console");
  await owner.fill(input("secret"), "console-secret-value");
  await owner.click("[data-test=provider-save]");
  await owner.waitForSelector("[data-test=provider-row][data-provider=wechat][data-enabled=true] [data-test=provider-secret-set]");
  const wechat = await call("GET", `/v1/admin/apps/${APP}/auth/providers/wechat`, TOKEN);
  assert.equal(wechat.body.appid, "wx-console");
  assert.equal(wechat.body.secret, "********");
  await owner.click("[data-test=edit-provider][data-provider=wechat]");
  assert.equal(await owner.inputValue(input("appid")), "wx-console");
  assert.equal(await owner.inputValue(input("secret")), "");
  assert.ok(!(await owner.content()).includes("console-secret-value"), "the secret is nowhere on the page");

  // A function secret: its name listed, its value never.
  await owner.fill("[data-test=env-name]", "CONSOLE_SECRET");
  await owner.fill("[data-test=env-value]", "a sealed value");
  await owner.click("[data-test=env-submit]");
  await owner.waitForSelector("[data-test=env-row][data-name=CONSOLE_SECRET]");
  const env = await call("GET", `/v1/admin/apps/${APP}/env`, TOKEN);
  assert.ok(env.body.names.includes("CONSOLE_SECRET"), JSON.stringify(env.body));
  assert.ok(!(await owner.content()).includes("a sealed value"));

  // Schedules, as a deploy declares them; the limits, as the server says.
  const nightly = await call("PUT", `/v1/admin/apps/${APP}/functions/nightly`, TOKEN, {
    source: "export default async () => 'tidied'",
    schedules: [{ cron: "0 3 * * *", timezone: "Asia/Shanghai" }],
  });
  assert.equal(nightly.status, 201, JSON.stringify(nightly.body));
  await owner.reload();
  await owner.waitForSelector("[data-test=schedule-row][data-function=nightly]");
  assert.match(await text(owner, "[data-test=schedule-row][data-function=nightly]"), /0 3 \* \* \*.*Asia\/Shanghai/);
  const limits = await call("GET", `/v1/admin/apps/${APP}/limits`, TOKEN);
  assert.equal(limits.status, 200, JSON.stringify(limits.body));
  const sockets = await text(owner, "[data-test=limit-row][data-limit='lim.userSockets']");
  assert.match(sockets, new RegExp(`${limits.body.realtime_max_connections_per_user}$`));
  await shot(owner, "15-settings");
});

step("a viewer reads the realtime settings, with nothing to change, and has neither Payments nor Settings", async () => {
  const page = await signedInOn(VIEWER, "realtime");
  await page.waitForSelector("[data-test=realtime-page] pre[data-test=realtime-json]");
  await page.waitForSelector("[data-test=kind-row][data-kind=room]");
  for (const control of ["tab-payments", "tab-settings", "realtime-save", "presence-channel", "send-submit"]) {
    assert.equal(await page.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  // Typed into the address bar: the server's refusal.
  await page.evaluate((app) => (location.hash = `#/apps/${app}/payments`), APP);
  await page.waitForSelector("[data-test=payments-page] [data-test=error][data-code=forbidden]");
  await page.context().close();
  await owner.context().close();
});

// ---------------------------------------------------------------------------------------------
// Files

/** A 2×2 PNG of four colours. */
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR42mNQCT8qWOHFsEVZ4sWhKAAffAUHwdz5ZgAAAABJRU5ErkJggg==";

step("the owner uploads an image into a bucket on the Files page, sees its preview and deletes it; a viewer sees the buckets but cannot upload", async () => {
  const bucket = await call("PUT", `/v1/admin/apps/${APP}/buckets/photos`, TOKEN, {
    types: ["image/*"],
    max_bytes: 1048576,
    thumbs: ["400x0", "64x64"],
  });
  assert.equal(bucket.status, 200, JSON.stringify(bucket.body));
  const listed = async () => {
    const answer = await call("GET", `/v1/apps/${APP}/buckets/photos/files`, TOKEN);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.items;
  };

  owner = await signedInOn(OWNER, "files");
  await owner.waitForSelector("[data-test=files-page] [data-test=bucket-row][data-bucket=photos]");
  assert.equal(await owner.getAttribute("[data-test=tab-files]", "aria-current"), "page");
  assert.match(await text(owner, "[data-test=bucket-row][data-bucket=photos]"), /image\/\*[\s\S]*1 MB[\s\S]*400x0/);
  await owner.click("[data-test=bucket-link][data-bucket=photos]");
  await owner.waitForSelector("[data-test=bucket-page] p[data-test=files]");
  assert.equal(new URL(owner.url()).hash, `#/apps/${APP}/files/photos`);
  assert.equal(await owner.locator("[data-test=files-next]").isDisabled(), true);

  const file = join(dir, "dots.png");
  writeFileSync(file, Buffer.from(PNG, "base64"));
  await owner.setInputFiles("[data-test=upload-input]", file);
  await owner.click("[data-test=upload-submit]");
  await owner.waitForSelector("[data-test=notice]");
  const row = owner.locator("[data-test=file-row]");
  await row.first().waitFor();
  assert.equal(await row.count(), 1);
  const id = await row.getAttribute("data-id");
  const [stored] = await listed();
  assert.equal(stored.id, id);
  assert.equal(stored.name, "dots.png");
  assert.equal(stored.type, "image/png");
  assert.match(await row.innerText(), /dots\.png[\s\S]*image\/png[\s\S]*79 B/);

  // The preview: the bucket's smallest thumbnail, loaded lazily, from the console's origin.
  const url = `/v1/apps/${APP}/files/photos/${id}`;
  const preview = row.locator("[data-test=file-preview]");
  assert.equal(await preview.getAttribute("src"), `${url}?thumb=64x64`);
  assert.equal(await preview.getAttribute("loading"), "lazy");
  await owner.waitForFunction(() => {
    const image = document.querySelector("[data-test=file-preview]");
    return image?.complete && image.naturalWidth > 0;
  });
  assert.equal(await row.locator("[data-test=file-link]").getAttribute("href"), url);
  const bytes = await owner.evaluate(async (href) => {
    const response = await fetch(href);
    return { status: response.status, type: response.headers.get("content-type"), size: (await response.arrayBuffer()).byteLength };
  }, url);
  assert.deepEqual(bytes, { status: 200, type: "image/png", size: 79 });
  await shot(owner, "16-files");

  await owner.click("[data-test=delete-file]");
  await owner.click("[data-test=delete-file-confirm]");
  await owner.waitForSelector("[data-test=bucket-page] p[data-test=files]");
  assert.deepEqual(await listed(), []);

  const page = await signedInOn(VIEWER, "files");
  await page.click("[data-test=bucket-link][data-bucket=photos]");
  await page.waitForSelector("[data-test=bucket-page] [data-test=bucket-details]");
  await page.waitForSelector("[data-test=bucket-page] p[data-test=files]");
  for (const control of ["upload-form", "upload-input", "upload-submit", "delete-file"]) {
    assert.equal(await page.locator(`[data-test=${control}]`).count(), 0, `the viewer has no ${control}`);
  }
  await page.context().close();
  await owner.context().close();
});

step("no page error and no CSP violation on any page", () => {
  assert.deepEqual(problems, []);
});
