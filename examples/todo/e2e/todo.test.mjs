// The todo template end to end, as a user meets it: `cloudlet init` and `cloudlet deploy` a
// project onto a real server, then two people sign up in Debian's Chromium (driven by
// Playwright), add, complete, photograph and delete todos, and neither sees the other's.
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const BIN = process.env.CLOUDLET_BIN ?? resolve(here, "../../../target/debug/cloudlet");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const TOKEN = "e2e-admin-token-0123456789";

let dir;
let server;
let base;
let browser;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "cloudlet-e2e-"));
  server = spawn(BIN, ["serve", "--data-dir", join(dir, "data"), "--listen", "127.0.0.1:0"], {
    env: { ...process.env, CLOUDLET_ADMIN_TOKEN: TOKEN, CLOUDLET_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((resolvePromise, reject) => {
    let out = "";
    server.stdout.on("data", (chunk) => {
      out += chunk;
      const match = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (match) resolvePromise(match[1]);
    });
    server.on("exit", (code) => reject(new Error(`the server exited: ${code} ${out}`)));
  });
  const cli = (...args) =>
    execFileSync(BIN, args, { env: { ...process.env, CLOUDLET_SERVER: base, CLOUDLET_TOKEN: TOKEN }, encoding: "utf8" });
  const project = join(dir, "todo");
  cli("init", project, "--template", "todo");
  const deployed = cli("deploy", project);
  assert.match(deployed, /Deployed app todo/);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A person with their own browser profile, signed up and looking at their todos. */
async function person(email) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  await page.goto(`${base}/sites/todo/`);
  await page.fill("#email", email);
  await page.fill("#password", "a good long password");
  await page.click("#sign-up");
  await page.waitForSelector("#todos:not([hidden])");
  assert.equal(await page.textContent("#user"), email);
  return { page, errors, context };
}

const titles = (page) => page.$$eval("#list li .title", (items) => items.map((i) => i.textContent));

async function add(page, title) {
  const before = (await titles(page)).length;
  await page.fill("#title", title);
  await page.click("#add button");
  await page.waitForFunction((n) => document.querySelectorAll("#list li").length === n, before + 1);
}

test("two people each keep their own todos: add, complete, attach a photo, delete", async () => {
  const alice = await person("alice@example.com");
  const bob = await person("bob@example.com");

  await add(alice.page, "Buy milk");
  await add(alice.page, "Walk the dog");
  await add(bob.page, "Bob's secret plan");
  assert.deepEqual(await titles(alice.page), ["Buy milk", "Walk the dog"]);
  assert.deepEqual(await titles(bob.page), ["Bob's secret plan"]);

  // Complete one: it is struck through and counted by the stats function.
  await alice.page.check('#list li:has-text("Buy milk") input[type=checkbox]');
  await alice.page.waitForSelector('#list li.done:has-text("Buy milk")');
  await alice.page.waitForFunction(() => document.querySelector("#stats").textContent === "1 open, 1 done");

  // A photo on a todo: uploaded from a file input, then shown as its thumbnail, whose signed
  // URL came with the list.
  const dot = Buffer.from(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==",
    "base64",
  );
  await alice.page.setInputFiles('#list li:has-text("Buy milk") input[type=file]', {
    name: "milk.png",
    mimeType: "image/png",
    buffer: dot,
  });
  const photoLoaded = () => {
    const image = document.querySelector("#list li img.photo");
    return Boolean(image && image.complete && image.naturalWidth === 1);
  };
  await alice.page.waitForFunction(photoLoaded);
  const src = await alice.page.getAttribute("#list li img.photo", "src");
  assert.match(src, /\/v1\/apps\/todo\/files\/photos\/fil_[^?]+\?expires=\d+&thumb=120x120&sig=/);
  // Without its signature the photo is Alice's alone: to Bob it does not exist.
  const unsigned = await bob.page.evaluate(async (url) => (await fetch(url)).status, src.split("?")[0]);
  assert.equal(unsigned, 404);

  // Delete one.
  await alice.page.click('#list li:has-text("Walk the dog") button');
  await alice.page.waitForFunction(() => document.querySelectorAll("#list li").length === 1);
  assert.deepEqual(await titles(alice.page), ["Buy milk"]);

  // After a reload (the session is kept), each still sees only their own.
  await bob.page.reload();
  await bob.page.waitForSelector("#todos:not([hidden])");
  await bob.page.waitForFunction(() => document.querySelector("#stats").textContent !== "");
  assert.deepEqual(await titles(bob.page), ["Bob's secret plan"]);
  assert.equal(await bob.page.textContent("#stats"), "1 open, 0 done");
  await alice.page.reload();
  await alice.page.waitForSelector('#list li.done:has-text("Buy milk")');
  assert.deepEqual(await titles(alice.page), ["Buy milk"]);
  await alice.page.waitForFunction(photoLoaded);

  // Bob can not reach Alice's todo even by asking for it: the API says it does not exist.
  const aliceId = await alice.page.getAttribute("#list li", "data-id");
  const answer = await bob.page.evaluate(async (id) => {
    const { createClient } = await import("/sdk/cloudlet.js");
    const cloud = createClient({ server: location.origin, app: "todo" });
    try {
      await cloud.db.collection("todos").get(id);
      return "found";
    } catch (error) {
      return error.code;
    }
  }, aliceId);
  assert.equal(answer, "record_not_found");

  // Live: what Alice adds in a second tab shows in the first without a reload, and no change
  // of Alice's reaches Bob's list.
  const second = await alice.context.newPage();
  second.on("pageerror", (error) => alice.errors.push(error));
  await second.goto(`${base}/sites/todo/`);
  await second.waitForSelector("#todos:not([hidden])");
  await add(second, "Added in another tab");
  await alice.page.waitForFunction(() =>
    [...document.querySelectorAll("#list li .title")].some((t) => t.textContent === "Added in another tab"),
  );
  assert.deepEqual(await titles(bob.page), ["Bob's secret plan"]);
  await second.close();

  // Logging out shows the login form again.
  await bob.page.click("#logout");
  await bob.page.waitForSelector("#login:not([hidden])");
  assert.deepEqual(alice.errors, []);
  assert.deepEqual(bob.errors, []);
  await alice.context.close();
  await bob.context.close();
});
