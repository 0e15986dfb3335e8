// Starts the real `cloudlet` binary (CLOUDLET_BIN, or the workspace's debug build) and its
// platform emulator for the SDK tests, and builds the stand-in mini-program globals: objects
// shaped like `wx`, `qq`, `tt` and `my` whose calls do real HTTP (requests to the server, login
// codes from the emulator, which the server then trades with the emulator as it would with the
// platform).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.CLOUDLET_BIN ?? resolve(here, "../../../target/debug/cloudlet");
export const ADMIN_TOKEN = "sdk-test-admin-token-0123456789";

/** Runs `cloudlet <args>` until it prints `… listening on http://ADDR`. */
function startProcess(args, env = {}) {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(BIN, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => reject(new Error(`${args[0]} did not start: ${out}${err}`)), 30_000);
    child.stderr.on("data", (chunk) => (err += chunk));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = out.match(/listening on (http:\/\/[0-9.:]+)/);
      if (match) {
        clearTimeout(timer);
        resolvePromise({ child, url: match[1] });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${args[0]} exited with ${code}: ${out}${err}`));
    });
  });
}

function stop(child) {
  return new Promise((resolvePromise) => {
    if (child.exitCode !== null) return resolvePromise();
    child.removeAllListeners("exit");
    child.on("exit", () => resolvePromise());
    child.kill("SIGTERM");
  });
}

/** The server on a fresh data directory, with `config` as its TOML file. */
export async function startServer(config = "") {
  const dir = mkdtempSync(join(tmpdir(), "cloudlet-sdk-"));
  const configPath = join(dir, "cloudlet.toml");
  await import("node:fs").then((fs) => fs.writeFileSync(configPath, config));
  const { child, url } = await startProcess(
    ["serve", "--data-dir", join(dir, "data"), "--listen", "127.0.0.1:0", "--config", configPath],
    { CLOUDLET_ADMIN_TOKEN: ADMIN_TOKEN, CLOUDLET_LOG_LEVEL: "warn" },
  );
  const admin = async (method, path, body) => {
    const response = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    url,
    admin,
    async stop() {
      await stop(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startEmulator() {
  const { child, url } = await startProcess(["emulator", "--listen", "127.0.0.1:0"]);
  const post = async (path, body) => {
    const response = await fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(data)}`);
    return data;
  };
  return {
    url,
    register: (app) => post("/emulator/apps", app),
    code: (platform, appid, user) => post("/emulator/codes", { platform, appid, user }),
    post,
    get: async (path) => (await fetch(`${url}${path}`)).json(),
    stop: () => stop(child),
  };
}

/** An app with a `todos` collection (owner-only rules), a `stats` function and the dev,
 * anonymous and password logins on. */
export async function createApp(server, app) {
  await server.admin("POST", "/v1/admin/apps", { name: app });
  for (const provider of ["dev", "anonymous"]) {
    await server.admin("PUT", `/v1/admin/apps/${app}/auth/providers/${provider}`, { enabled: true });
  }
  await server.admin("PUT", `/v1/admin/apps/${app}/collections/todos`, {
    fields: [
      { name: "title", type: "text", required: true, max_length: 200 },
      { name: "done", type: "bool", default: false },
      { name: "priority", type: "integer" },
    ],
  });
  await server.admin("PUT", `/v1/admin/apps/${app}/functions/stats`, {
    source: `export default async (event, ctx) => {
      const todos = ctx.db.collection("todos");
      const all = await todos.list({ count: true, limit: 1 });
      const open = await todos.list({ filter: "done = false", count: true, limit: 1 });
      return { user: ctx.auth.id, total: all.total, open: open.total, echo: event };
    }`,
  });
}

/** A stand-in for a mini-program platform's global: the calls the SDK makes, done for real.
 * `calls` records the login calls, `requests` the options of each request (callbacks left out). */
export function standIn(platform, emulator, appid, user) {
  const storage = new Map();
  // Alipay fails with `error` and `errorMessage`; the others with `errMsg`.
  const failure = (message) => (platform === "alipay" ? { error: 12, errorMessage: message } : { errMsg: message });
  const request = ({ success, fail, ...options }) => {
    api.requests.push(options);
    const { url, method = "GET", data, ...rest } = options;
    const headers = platform === "alipay" ? rest.headers : rest.header;
    fetch(url, {
      method,
      headers,
      body: data === undefined || method === "GET" ? undefined : JSON.stringify(data),
    })
      .then(async (response) => {
        const text = await response.text();
        let body = text;
        try {
          body = text ? JSON.parse(text) : "";
        } catch {}
        const headersOut = Object.fromEntries(response.headers);
        // Alipay answers `status` and `headers`; the others `statusCode` and `header`.
        if (platform === "alipay") success({ status: response.status, data: body, headers: headersOut });
        else success({ statusCode: response.status, data: body, header: headersOut });
      })
      .catch((error) => fail(failure(`request:fail ${error.message}`)));
  };
  const login = ({ success, fail }) => {
    emulator
      .code(platform, appid, user)
      .then((answer) =>
        platform === "alipay" ? success({ authCode: answer.code }) : success({ code: answer.code }),
      )
      .catch((error) => fail(failure(`login:fail ${error.message}`)));
  };
  // `uploadFile` as the platforms send it: `formData` fields, then the file read from its
  // temporary path under the field the options name (`name`; Alipay's `fileName`), answered with
  // the body as text; the task reports progress once, at the end.
  const uploadFile = ({ success, fail, ...options }) => {
    api.uploads.push(options);
    const listeners = [];
    const field = platform === "alipay" ? options.fileName : options.name;
    const form = new FormData();
    for (const [key, value] of Object.entries(options.formData ?? {})) form.append(key, value);
    if (platform === "alipay") {
      form.append("fileName", options.fileName);
      form.append("fileType", options.fileType);
    }
    import("node:fs/promises")
      .then((fs) => fs.readFile(options.filePath))
      .then((bytes) => {
        form.append(field, new Blob([bytes]), options.filePath.split("/").pop());
        return fetch(options.url, { method: "POST", headers: options.header, body: form }).then(async (response) => {
          const text = await response.text();
          for (const listener of listeners) {
            listener({ progress: 100, totalBytesSent: bytes.length, totalBytesExpectedToSend: bytes.length });
          }
          success({ statusCode: response.status, data: text, header: Object.fromEntries(response.headers) });
        });
      })
      .catch((error) => fail(failure(`uploadFile:fail ${error.message}`)));
    return { onProgressUpdate: (listener) => listeners.push(listener) };
  };
  // `connectSocket` as the platforms answer it: a task with `send`, `close` and listeners, over
  // a real WebSocket (Node's, `--experimental-websocket` on Node 20). Alipay's task hands a
  // message's text as `data.data`. `sockets` keeps each task, so a test can cut one.
  const connectSocket = (options) => {
    const ws = new WebSocket(options.url);
    const task = {
      options,
      cut: () => ws.close(4999, "cut by the test"),
      send: ({ data }) => ws.send(data),
      close: ({ code, reason } = {}) => ws.close(code, reason),
      onOpen: (fn) => ws.addEventListener("open", () => fn({})),
      onMessage: (fn) =>
        ws.addEventListener("message", (e) => fn(platform === "alipay" ? { data: { data: e.data } } : { data: e.data })),
      onClose: (fn) => ws.addEventListener("close", (e) => fn({ code: e.code, reason: e.reason })),
    };
    api.sockets.push(task);
    return task;
  };
  const shown = [];
  const api = {
    request,
    uploadFile,
    connectSocket,
    onAppShow: (fn) => shown.push(fn),
    show: () => shown.forEach((fn) => fn({})),
    calls: [],
    requests: [],
    uploads: [],
    sockets: [],
  };
  if (platform === "alipay") {
    api.getAuthCode = (options) => {
      api.calls.push(["getAuthCode", options.scopes]);
      login(options);
    };
    api.getStorageSync = ({ key }) => ({ data: storage.get(key) });
    api.setStorageSync = ({ key, data }) => storage.set(key, data);
    api.removeStorageSync = ({ key }) => storage.delete(key);
  } else {
    api.login = (options) => {
      api.calls.push(["login"]);
      login(options);
    };
    api.getStorageSync = (key) => (storage.has(key) ? storage.get(key) : "");
    api.setStorageSync = (key, value) => storage.set(key, value);
    api.removeStorageSync = (key) => storage.delete(key);
  }
  api.storage = storage;
  return api;
}
