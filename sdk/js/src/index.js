// Cloudlet's client SDK: one file, no dependencies. It finds the platform it runs on (a WeChat,
// Alipay, Douyin or QQ mini program, or a browser), logs the user in with that platform's login
// call, keeps the session in the platform's storage, refreshes the access token before it
// expires (and once, single-flight, on a 401), and wraps the records and functions APIs.
//
// How it is put together, section by section:
// - Platforms: each mini-program platform described once (its global, its login, its storage,
//   where its calls spell options differently from WeChat's).
// - Capabilities: what the client needs from a platform (`request`, `storage`, `login`), each
//   implemented for mini programs from those descriptions and for the web; a platform lacks a
//   capability it has no implementation of, and the client refuses it with
//   `unsupported_on_platform`.
// - The client: sessions, token refresh and the calls every feature makes.
// - Client features: the `cloud.*` namespaces (`auth`, `db`, `functions`), each built over the
//   client.
// - Registries, at the end: the capabilities and the features, each listed in one place.
// docs/sdk.md ("Extending the SDK") says how to add a platform, a capability or a feature.

const SESSION_KEY = "cloudlet.session";
/// Refresh this long before the access token expires.
const REFRESH_EARLY_MS = 60_000;

/** One error type for everything the server (or the network) refuses. */
class CloudError extends Error {
  constructor(code, message, { status = 0, requestId = null } = {}) {
    super(message);
    this.name = "CloudError";
    this.code = code;
    this.status = status;
    // The server's names, and the camel-case one JavaScript code expects.
    this.request_id = requestId;
    this.requestId = requestId;
  }
}

// ---- Platforms ---------------------------------------------------------------------------
//
// Capabilities call the platforms' APIs in WeChat's spelling (QQ and Douyin copied it); a
// platform that spells a call differently says so in its description, under `calls`, and
// `callApi` translates.

/** Storage called with the key as argument: `wx.getStorageSync(key)`, `wx.setStorageSync(key, value)`. */
const STORAGE_BY_ARGUMENTS = {
  get: (api, key) => api.getStorageSync(key),
  set: (api, key, value) => api.setStorageSync(key, value),
  remove: (api, key) => api.removeStorageSync(key),
};

/** Storage called with options: `my.getStorageSync({ key })` answering `{ data }`,
 * `my.setStorageSync({ key, data })`. */
const STORAGE_BY_OPTIONS = {
  get: (api, key) => api.getStorageSync({ key }).data,
  set: (api, key, data) => api.setStorageSync({ key, data }),
  remove: (api, key) => api.removeStorageSync({ key }),
};

/**
 * The mini-program platforms, in the order they are looked for. Each one:
 * - `name`: the adapter's name;
 * - `global`: the object its API hangs on; taken for the platform only with its login call on
 *   it, so that a web page's own global of that name is not;
 * - `login`: that call, its options, and its answer as the body of `POST …/auth/sessions`;
 * - `storage`: how its synchronous storage is called;
 * - `payment` (where the server makes orders for the platform's payment provider): the
 *   provider (an order's `provider`), the call that shows the payment sheet for the order's
 *   `payment`, and how its outcome is read: `answered(answer)` for what `success` gives and
 *   `failed(error)` for what `fail` gives (in WeChat's spelling), each `null` where the sheet
 *   says it was paid (a hint: the server is asked next) or `{ code, message }` to reject with;
 * - `calls` (where it differs from WeChat): for each call, `options` turns WeChat's options into
 *   its own and `answer` its answer into WeChat's; `failure` does the same for what every call
 *   fails with.
 */
const MINI_PROGRAMS = [
  {
    name: "wechat",
    global: "wx",
    login: { call: "login", body: ({ code }) => ({ provider: "wechat", code }) },
    storage: STORAGE_BY_ARGUMENTS,
    // WeChat Pay's, with the `{ timeStamp, nonceStr, package, signType, paySign }` the server
    // signs. QQ's and Douyin's own payments (`qq.requestPayment`, `tt.pay`) take their
    // providers' orders, which the server does not make: those platforms have no `payment`.
    payment: {
      provider: "wechat",
      call: "requestPayment",
      answered: () => null,
      // `requestPayment:fail cancel` when the user closed the sheet.
      failed: (error) => {
        const message = (error && error.errMsg) || "requestPayment failed";
        return { code: /\bcancel\b/.test(message) ? "payment_cancelled" : "payment_failed", message };
      },
    },
  },
  {
    name: "qq",
    global: "qq",
    login: { call: "login", body: ({ code }) => ({ provider: "qq", code }) },
    storage: STORAGE_BY_ARGUMENTS,
  },
  {
    name: "douyin",
    global: "tt",
    login: {
      call: "login",
      // Someone not logged in to Douyin itself gets only an anonymous code.
      body: ({ code, anonymousCode }) =>
        !code && anonymousCode
          ? { provider: "douyin", anonymous_code: anonymousCode }
          : { provider: "douyin", code },
    },
    storage: STORAGE_BY_ARGUMENTS,
  },
  {
    name: "alipay",
    global: "my",
    login: {
      call: "getAuthCode",
      options: { scopes: "auth_base" },
      body: ({ authCode }) => ({ provider: "alipay", code: authCode }),
    },
    storage: STORAGE_BY_OPTIONS,
    calls: {
      // my.request alone names the header option `headers` (my.uploadFile takes `header`, as
      // wx does), and answers `status` and `headers`.
      request: {
        options: ({ header, ...options }) => ({ ...options, headers: header }),
        answer: ({ status, headers, ...answer }) => ({ statusCode: status, header: headers, ...answer }),
      },
    },
    failure: (error) => ({ errMsg: error && error.errorMessage, ...error }),
    // Alipay's, with the `{ tradeNO }` of the trade the server created (`alipay.trade.create`).
    // my.tradePay calls `success` whatever the user did, with a `resultCode`.
    payment: {
      provider: "alipay",
      call: "tradePay",
      answered: (answer) => alipayOutcome(answer && answer.resultCode),
      failed: (error) =>
        error && error.resultCode !== undefined
          ? alipayOutcome(error.resultCode)
          : { code: "payment_failed", message: `my.tradePay failed: ${(error && error.errMsg) || "no reason given"}` },
    },
  },
];

/**
 * What my.tradePay's `resultCode` means: 9000 paid, 8000 processing, 6004 unknown and 6002 a
 * network error (each only a hint, and a network error may come after the money was taken: the
 * server is asked, as after WeChat's "ok"), 6001 the user cancelled, and 4000 (or anything
 * else) a failed payment.
 */
const ALIPAY_RESULTS = {
  9000: null,
  8000: null,
  6004: null,
  6001: { code: "payment_cancelled", reason: "the user cancelled" },
  6002: null,
  4000: { code: "payment_failed", reason: "the payment failed" },
};

function alipayOutcome(resultCode) {
  const code = String(resultCode);
  const known = ALIPAY_RESULTS[code];
  if (known === null) return null;
  const { code: failure, reason } = known ?? { code: "payment_failed", reason: "an unknown result" };
  return { code: failure, message: `my.tradePay resultCode ${code}: ${reason}` };
}

/**
 * `api[method](options)` of a mini-program platform, waiting for its `success` or `fail`
 * callback. Options go in and answers come out in WeChat's spelling.
 */
function callApi(platform, api, method, options) {
  const spelling = platform.calls?.[method] ?? {};
  return new Promise((resolve, reject) => {
    api[method]({
      ...(spelling.options ? spelling.options(options) : options),
      success: (answer) => resolve(spelling.answer ? spelling.answer(answer) : answer),
      fail: (error) => reject(platform.failure ? platform.failure(error) : error),
    });
  });
}

// ---- Capabilities ------------------------------------------------------------------------
//
// A capability is what the client needs from the platform it runs on, as the adapter methods
// that make it up (`methods`) and how each kind of platform provides them:
// `miniProgram(platform, api)` from a mini-program platform's description and global, `web()`
// in a browser or Node. A platform lacks a capability that has no implementation for it (write
// `web: null`, or answer `null` from `miniProgram` for that platform, and say why): its adapter
// has no such methods, and the client refuses them with `unsupported_on_platform`.

/** HTTP with a JSON body: `request({ url, method, headers, body })` → `{ status, data, headers }`. */
const request = {
  methods: ["request"],
  miniProgram: (platform, api) => ({
    async request({ url, method, headers, body }) {
      const options = { url, method, header: headers, data: body, dataType: "json" };
      const answer = await callApi(platform, api, "request", options).catch((error) => {
        throw new CloudError("network_error", (error && error.errMsg) || "the request failed");
      });
      return { status: answer.statusCode, data: answer.data, headers: answer.header ?? {} };
    },
  }),
  web: () => ({
    async request({ url, method, headers, body }) {
      let response;
      try {
        response = await fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (error) {
        throw new CloudError("network_error", String(error && error.message ? error.message : error));
      }
      const text = await response.text();
      let data = null;
      try {
        data = text ? JSON.parse(text) : null;
      } catch {
        data = text;
      }
      return { status: response.status, data, headers: Object.fromEntries(response.headers) };
    },
  }),
};

/** Strings kept across restarts: `getItem(key)` (null when absent), `setItem`, `removeItem`. */
const storage = {
  methods: ["getItem", "setItem", "removeItem"],
  miniProgram: (platform, api) => ({
    getItem(key) {
      try {
        const value = platform.storage.get(api, key);
        // A key never set reads as "" on wx, as nothing on my.
        return value === "" || value === undefined ? null : value;
      } catch {
        return null;
      }
    },
    setItem: (key, value) => platform.storage.set(api, key, value),
    removeItem: (key) => platform.storage.remove(api, key),
  }),
  // `localStorage`, or memory where there is none (Node).
  web: () => {
    const memory = new Map();
    const local = typeof localStorage === "undefined" ? null : localStorage;
    return {
      getItem: (key) => (local ? local.getItem(key) : memory.get(key) ?? null),
      setItem: (key, value) => (local ? local.setItem(key, value) : memory.set(key, value)),
      removeItem: (key) => (local ? local.removeItem(key) : memory.delete(key)),
    };
  },
};

/** The platform's own login: `login()` → the body of `POST …/auth/sessions`. */
const login = {
  methods: ["login"],
  miniProgram: (platform, api) => ({
    async login() {
      const { call, options = {}, body } = platform.login;
      return body(await callApi(platform, api, call, options));
    },
  }),
  // The web has no login of its own, yet implements this to refuse with `unsupported`: that
  // code is older than `unsupported_on_platform`, and callers may switch on it.
  web: () => ({
    async login() {
      throw new CloudError("unsupported", "the web has no platform login: use loginWithPassword or loginAnonymously");
    },
  }),
};

/**
 * Asking the user to allow subscribe messages: `requestSubscribe(templateIds)` → WeChat's
 * answers, `{ [templateId]: "accept" | "reject" | "ban" | "filter" }`. WeChat only: Cloudlet
 * sends subscribe messages through WeChat's API alone (docs/messages.md says why not the
 * others yet); the web has no such thing.
 */
const subscribe = {
  methods: ["requestSubscribe"],
  miniProgram: (platform, api) =>
    platform.name === "wechat" && typeof api.requestSubscribeMessage === "function"
      ? {
          async requestSubscribe(tmplIds) {
            const answer = await callApi(platform, api, "requestSubscribeMessage", { tmplIds }).catch((error) => {
              throw new CloudError("subscribe_failed", (error && error.errMsg) || "requestSubscribeMessage failed");
            });
            const answers = {};
            for (const id of tmplIds) if (typeof answer[id] === "string") answers[id] = answer[id];
            return answers;
          },
        }
      : null,
  web: null,
};

/**
 * Paying: `requestPayment(payment, provider)` shows the platform's payment sheet for the
 * `payment` the server made with an order of `provider` (`wx.requestPayment` for `wechat`,
 * `my.tradePay` for `alipay`) and resolves when the platform says it was paid, or may have been
 * (a hint only: the server is asked next). It rejects with `payment_cancelled` when the user
 * closed the sheet, `payment_failed` otherwise, and `payment_not_supported`, before any sheet,
 * for an order of another provider than the platform's (a WeChat Pay order in an Alipay mini
 * program). Only where the platform's description names its `payment` (WeChat's and Alipay's);
 * the web has none.
 */
const payment = {
  methods: ["requestPayment"],
  miniProgram: (platform, api) =>
    platform.payment && typeof api[platform.payment.call] === "function"
      ? {
          async requestPayment(parameters, provider) {
            const { provider: own, call, answered, failed } = platform.payment;
            if (provider !== undefined && provider !== own) {
              throw new CloudError(
                "payment_not_supported",
                `the order's provider is ${provider}: ${platform.global}.${call} pays ${own} orders only`,
              );
            }
            const outcome = await callApi(platform, api, call, { ...parameters }).then(answered, failed);
            if (outcome) throw new CloudError(outcome.code, outcome.message);
          },
        }
      : null,
  web: null,
};

/**
 * Uploading one file in the form every platform's `uploadFile` sends: `uploadFile({ url, file,
 * name, formData, headers, onProgress })` → `{ status, data }` (`data` parsed from JSON). In a
 * mini program `file` is a temporary path (`wx.chooseMedia`'s `tempFilePath`), sent under the
 * form field `file` with `formData` before it; on the web a `Blob` or `File`, through `fetch`
 * and `FormData` (whose progress is reported once, when done).
 */
const upload = {
  methods: ["uploadFile"],
  miniProgram: (platform, api) =>
    typeof api.uploadFile === "function"
      ? {
          uploadFile({ url, file, kind, formData, headers, onProgress }) {
            return new Promise((resolve, reject) => {
              const options = { url, filePath: file, header: headers, formData };
              // Alipay names the file's form field `fileName` and wants a `fileType`.
              if (platform.name === "alipay") Object.assign(options, { fileName: "file", fileType: kind ?? "image" });
              else options.name = "file";
              const task = api.uploadFile({
                ...options,
                success: (answer) => resolve({ status: answer.statusCode, data: parsed(answer.data) }),
                fail: (error) => {
                  const failure = platform.failure ? platform.failure(error) : error;
                  reject(new CloudError("network_error", (failure && failure.errMsg) || "the upload failed"));
                },
              });
              if (onProgress && task && typeof task.onProgressUpdate === "function") {
                task.onProgressUpdate((p) =>
                  onProgress({ progress: p.progress, sent: p.totalBytesSent, total: p.totalBytesExpectedToSend }),
                );
              }
            });
          },
        }
      : null,
  web: () => ({
    async uploadFile({ url, file, name, formData, headers, onProgress }) {
      const form = new FormData();
      for (const [key, value] of Object.entries(formData ?? {})) form.append(key, value);
      form.append("file", file, name ?? file.name ?? "file");
      let response;
      try {
        response = await fetch(url, { method: "POST", headers, body: form });
      } catch (error) {
        throw new CloudError("network_error", String(error && error.message ? error.message : error));
      }
      const data = parsed(await response.text());
      if (onProgress) onProgress({ progress: 100, sent: file.size, total: file.size });
      return { status: response.status, data };
    },
  }),
};

/**
 * A WebSocket: `connectSocket({ url })` → `{ send(text), close(code, reason), onOpen(fn),
 * onMessage(fn(text)), onClose(fn(code, reason)) }`. Through each platform's `connectSocket`
 * (Alipay's with `multiple: true`, for a task of its own) or the browser's `WebSocket`. The
 * token goes in the first message, never in the URL, so no platform needs to send headers.
 */
const socket = {
  methods: ["connectSocket"],
  miniProgram: (platform, api) =>
    typeof api.connectSocket === "function"
      ? {
          connectSocket({ url }) {
            const options = { url };
            if (platform.name === "alipay") options.multiple = true;
            const task = api.connectSocket(options);
            // Alipay's task hands the text as `data.data` in older base libraries.
            const text = (data) => (data && typeof data === "object" && "data" in data ? data.data : data);
            return {
              send: (data) => task.send({ data }),
              close: (code, reason) => task.close({ code, reason }),
              onOpen: (fn) => task.onOpen(() => fn()),
              onMessage: (fn) => task.onMessage((message) => fn(text(message.data))),
              onClose: (fn) => task.onClose((event) => fn(event && event.code, event && event.reason)),
            };
          },
        }
      : null,
  web: () =>
    typeof WebSocket === "function"
      ? {
          connectSocket({ url }) {
            const ws = new WebSocket(url);
            return {
              send: (data) => ws.send(data),
              close: (code, reason) => ws.close(code, reason),
              onOpen: (fn) => ws.addEventListener("open", () => fn()),
              onMessage: (fn) => ws.addEventListener("message", (event) => fn(event.data)),
              onClose: (fn) => ws.addEventListener("close", (event) => fn(event.code, event.reason)),
            };
          },
        }
      : null,
};

/** A body as JSON when it is JSON (mini programs hand `uploadFile`'s answer over as text). */
function parsed(data) {
  if (typeof data !== "string") return data;
  try {
    return data ? JSON.parse(data) : null;
  } catch {
    return data;
  }
}

/** An adapter: the platform's name and the methods of each capability `implement` gives. */
function adapterOf(name, implement) {
  const adapter = { name };
  for (const capability of Object.values(CAPABILITIES)) Object.assign(adapter, implement(capability));
  return adapter;
}

/** The adapter of the platform this code runs on: the first mini program found, else the web. */
function detectAdapter() {
  const g = typeof globalThis === "undefined" ? {} : globalThis;
  for (const platform of MINI_PROGRAMS) {
    const api = g[platform.global];
    if (typeof api === "object" && api && typeof api[platform.login.call] === "function") {
      return adapterOf(platform.name, (capability) => capability.miniProgram?.(platform, api));
    }
  }
  return adapterOf("web", (capability) => capability.web?.());
}

/**
 * What the client calls instead of the adapter itself: every method of every capability,
 * forwarded to the adapter, or refused with `unsupported_on_platform` where the adapter has no
 * such method (its platform lacks the capability, or a custom adapter left it out).
 */
function capabilitiesOf(adapter) {
  const methods = {};
  for (const [capability, { methods: names }] of Object.entries(CAPABILITIES)) {
    for (const name of names) {
      methods[name] = (...args) => {
        if (typeof adapter[name] !== "function") {
          throw new CloudError("unsupported_on_platform", `${capability} is not available on ${adapter.name}`);
        }
        return adapter[name](...args);
      };
    }
  }
  return methods;
}

// ---- Filters -----------------------------------------------------------------------------

/** A value as a literal of the filter language: quoted and escaped, so it stays a value. */
function literal(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") {
    const text = String(value);
    // The language has no exponents (1e21, 1e-7): such numbers are refused, not mangled.
    if (!Number.isFinite(value) || /e/i.test(text)) {
      throw new CloudError("invalid_filter", `${value} is not a number a filter can hold`);
    }
    return text;
  }
  if (value instanceof Date) return literal(value.toISOString());
  if (typeof value === "string") {
    return `'${value.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n").replace(/\t/g, "\\t")}'`;
  }
  throw new CloudError("invalid_filter", `a ${typeof value} can not be compared in a filter`);
}

const OPERATORS = new Set(["=", "!=", "<", "<=", ">", ">=", "~", "!~", "in"]);
const FIELD = /^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$/;

function field(name) {
  if (typeof name !== "string" || !FIELD.test(name)) {
    throw new CloudError("invalid_filter", `${JSON.stringify(name)} is not a field name`);
  }
  return name;
}

/** `where('done', '=', false)` or `where({ done: false, priority: 3 })` as filter text. */
function condition(args) {
  if (args.length === 1 && args[0] && typeof args[0] === "object" && !Array.isArray(args[0])) {
    const parts = Object.entries(args[0]).map(([name, value]) => `${field(name)} = ${literal(value)}`);
    if (parts.length === 0) throw new CloudError("invalid_filter", "where({}) names no field");
    return parts.join(" && ");
  }
  if (args.length === 2) return condition([args[0], "=", args[1]]);
  const [name, op, value] = args;
  if (!OPERATORS.has(op)) throw new CloudError("invalid_filter", `${JSON.stringify(op)} is not an operator`);
  if (op === "in") {
    if (!Array.isArray(value)) throw new CloudError("invalid_filter", "`in` takes an array");
    return `${field(name)} in [${value.map(literal).join(", ")}]`;
  }
  return `${field(name)} ${op} ${literal(value)}`;
}

// ---- Collections and queries (`cloud.db`) ------------------------------------------------

class Query {
  constructor(collection, state = {}) {
    this._collection = collection;
    this._state = { where: [], sort: [], ...state };
  }

  _with(change) {
    return new Query(this._collection, { ...this._state, ...change });
  }

  /** `where('done', '=', false)`, `where('done', false)`, `where({ done: false })`; several AND. */
  where(...args) {
    return this._with({ where: [...this._state.where, `(${condition(args)})`] });
  }

  /** A filter written in the language itself (see docs/data.md); values are yours to quote. */
  filter(text) {
    return this._with({ where: [...this._state.where, `(${text})`] });
  }

  /** `orderBy('priority', 'desc')`; several sort in turn. */
  orderBy(name, direction = "asc") {
    const descending = String(direction).toLowerCase() === "desc";
    return this._with({ sort: [...this._state.sort, `${descending ? "-" : ""}${field(name)}`] });
  }

  limit(n) {
    return this._with({ limit: n });
  }

  /** Page `page` (from 1) of `size` records. */
  paginate(page, size = 20) {
    return this._with({ limit: size, offset: Math.max(0, (page - 1) * size) || 0 });
  }

  fields(...names) {
    return this._with({ fields: names.flat().map(field).join(",") });
  }

  expand(...names) {
    return this._with({ expand: names.flat().map(field).join(",") });
  }

  /**
   * Signed URLs of the files the page's `file` fields hold, under `file_urls` by file id
   * (`{ url, expires_at }`, `url` absolute): of the files, or of thumbnails of `thumb`
   * (`"200x200"`, a size their bucket declares).
   */
  fileUrls(thumb) {
    return this._with({ fileUrls: thumb === undefined ? "true" : String(thumb) });
  }

  _params(extra = {}) {
    const s = this._state;
    const params = {};
    if (s.where.length) params.filter = s.where.join(" && ");
    if (s.sort.length) params.sort = s.sort.join(",");
    if (s.limit !== undefined) params.limit = s.limit;
    // Paging by offset says so even for the first page (`offset=0`): a page past the server's
    // bytes is then refused rather than cut short, which would skip records between pages.
    if (s.offset !== undefined) params.offset = s.offset;
    if (s.fields) params.fields = s.fields;
    if (s.expand) params.expand = s.expand;
    if (s.cursor) params.cursor = s.cursor;
    if (s.fileUrls) params.file_urls = s.fileUrls;
    return { ...params, ...extra };
  }

  /** The first page: `{ items, next_cursor, next() }`; `next()` fetches the page after it. */
  async get() {
    const page = await this._collection._list(this._params());
    return this._page(page);
  }

  _page(page) {
    const cursor = page.next_cursor;
    const server = this._collection._client.server;
    const fileUrls = page.file_urls && {};
    for (const [id, signed] of Object.entries(page.file_urls ?? {})) {
      fileUrls[id] = signed && { ...signed, url: `${server}${signed.url}` };
    }
    return {
      ...page,
      ...(fileUrls ? { file_urls: fileUrls } : {}),
      next: cursor ? () => this._with({ cursor, offset: undefined }).get() : null,
    };
  }

  /** Watches the records this query's filter matches (its sort and limits do not apply):
   * `cloud.realtime.watch` with the query's filter. */
  watch(onChange, options = {}) {
    const filter = this._state.where.length ? this._state.where.join(" && ") : undefined;
    return this._collection._client.realtime.watch(this._collection.name, onChange, { ...options, filter });
  }

  /** How many records match (under the caller's rules). */
  async count() {
    const page = await this._collection._list(this._params({ count: true, limit: 1 }));
    return page.total;
  }
}

class Collection {
  constructor(client, name) {
    if (typeof name !== "string" || !/^[a-z][a-z0-9_]{0,39}$/.test(name)) {
      throw new CloudError("invalid_collection", `${JSON.stringify(name)} is not a collection name`);
    }
    this._client = client;
    this.name = name;
  }

  _path(id) {
    const base = `/collections/${this.name}/records`;
    if (id === undefined) return base;
    // "." and ".." would be taken out of the URL on the way, naming another route.
    if (typeof id !== "string" || id === "" || id === "." || id === "..") {
      throw new CloudError("invalid_id", `${JSON.stringify(id)} is not a record id`);
    }
    return `${base}/${encodeURIComponent(id)}`;
  }

  add(data) {
    return this._client._call("POST", this._path(), data);
  }

  get(id) {
    return this._client._call("GET", this._path(id));
  }

  update(id, data) {
    return this._client._call("PATCH", this._path(id), data);
  }

  remove(id) {
    return this._client._call("DELETE", this._path(id));
  }

  _list(params) {
    const query = Object.entries(params)
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`)
      .join("&");
    return this._client._call("GET", `${this._path()}${query ? `?${query}` : ""}`);
  }

  where(...args) {
    return new Query(this).where(...args);
  }
  filter(text) {
    return new Query(this).filter(text);
  }
  orderBy(name, direction) {
    return new Query(this).orderBy(name, direction);
  }
  limit(n) {
    return new Query(this).limit(n);
  }
  paginate(page, size) {
    return new Query(this).paginate(page, size);
  }
  fields(...names) {
    return new Query(this).fields(...names);
  }
  expand(...names) {
    return new Query(this).expand(...names);
  }
  fileUrls(thumb) {
    return new Query(this).fileUrls(thumb);
  }
  /** Watches the collection's records: see `cloud.realtime.watch`. */
  watch(onChange, options) {
    return this._client.realtime.watch(this.name, onChange, options);
  }

  count() {
    return new Query(this).count();
  }
  /** Every record (first page) the caller may see, newest rules applied. */
  list() {
    return new Query(this).get();
  }
}

// ---- The client --------------------------------------------------------------------------

class Client {
  constructor({ server, app, adapter, storageKey, realtime: realtimeOptions } = {}) {
    if (!server || !app) throw new CloudError("invalid_config", "createClient needs { server, app }");
    this.server = String(server).replace(/\/+$/, "");
    this.app = app;
    this.adapter = adapter ?? detectAdapter();
    this._platform = capabilitiesOf(this.adapter);
    this._storageKey = `${storageKey ?? SESSION_KEY}:${app}`;
    this._refreshing = null;
    // Whether the realtime socket may open without a login (where the app allows it).
    this._realtimeAnonymous = Boolean(realtimeOptions?.anonymous);
    for (const [name, build] of FEATURES) {
      // A feature must not hide what every client has: its server, app, adapter, methods.
      if (name in this) throw new CloudError("invalid_feature", `a client already has ${name}`);
      this[name] = build(this);
    }
  }

  _session() {
    const raw = this._platform.getItem(this._storageKey);
    if (!raw) return null;
    try {
      return typeof raw === "string" ? JSON.parse(raw) : raw;
    } catch {
      return null;
    }
  }

  _save(grant) {
    const session = {
      session_id: grant.session_id,
      access_token: grant.access_token,
      expires_at: Date.now() + grant.expires_in * 1000,
      user: grant.user,
    };
    this._platform.setItem(this._storageKey, JSON.stringify(session));
    return session;
  }

  async _login(body) {
    const request = typeof body === "function" ? await body() : body;
    const grant = await this._request("POST", `/v1/apps/${this.app}/auth/sessions`, request, false);
    this._save(grant);
    return grant.user;
  }

  async _logout() {
    const session = this._session();
    this._platform.removeItem(this._storageKey);
    if (!session) return;
    try {
      await this._request("DELETE", `/v1/apps/${this.app}/auth/sessions/current`, undefined, session.access_token);
    } catch (error) {
      // Logged out here either way; an expired session is already gone there.
      if (!(error instanceof CloudError) || error.status !== 401) throw error;
    }
  }

  /** Refreshes the access token once, however many callers ask at the same time (in a browser,
   * across tabs too: a session id sent twice would be taken as stolen and revoked). */
  _refresh() {
    if (!this._refreshing) {
      const stale = this._session();
      const locks = typeof navigator !== "undefined" && navigator.locks;
      const refresh = () => {
        // Another tab may have refreshed while this one waited for the lock.
        const now = this._session();
        if (now && stale && now.session_id !== stale.session_id && now.expires_at - Date.now() >= REFRESH_EARLY_MS) {
          return now;
        }
        return this._refreshNow();
      };
      this._refreshing = (locks ? locks.request(this._storageKey, refresh) : refresh()).finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async _refreshNow() {
    const session = this._session();
    if (!session) throw new CloudError("missing_credentials", "not logged in", { status: 401 });
    try {
      const grant = await this._request(
        "POST",
        `/v1/apps/${this.app}/auth/refresh`,
        { session_id: session.session_id },
        false,
      );
      return this._save(grant);
    } catch (error) {
      if (error instanceof CloudError && error.status === 401) this._platform.removeItem(this._storageKey);
      throw error;
    }
  }

  /** The access token to send, refreshed first when it is about to expire. */
  async _token() {
    let session = this._session();
    if (!session) return null;
    if (session.expires_at - Date.now() < REFRESH_EARLY_MS) session = await this._refresh();
    return session.access_token;
  }

  /** An app route (`/collections/…`, `/functions/…`) with the user's token; one retry after a
   * refresh when the token was refused. */
  async _call(method, path, body) {
    const url = `/v1/apps/${this.app}${path}`;
    const token = await this._token();
    try {
      return await this._request(method, url, body, token);
    } catch (error) {
      const stale = ["token_expired", "invalid_token", "session_revoked"].includes(error.code);
      if (!token || !(error instanceof CloudError) || error.status !== 401 || !stale) throw error;
      const session = await this._refresh();
      return this._request(method, url, body, session.access_token);
    }
  }

  /** A response's error as a `CloudError`. */
  _failure(response) {
    const error = response.data && response.data.error;
    if (error && error.code) {
      return new CloudError(error.code, error.message, { status: response.status, requestId: error.request_id });
    }
    return new CloudError("http_error", `the server answered ${response.status}`, { status: response.status });
  }

  async _request(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await this._platform.request({ url: `${this.server}${path}`, method, headers, body });
    if (response.status >= 200 && response.status < 300) {
      return response.status === 204 ? null : response.data;
    }
    throw this._failure(response);
  }
}

// ---- Client features ---------------------------------------------------------------------
//
// Each namespace of the client (`cloud.auth`, `cloud.db`, …) is a feature: a function that
// builds it over the client. What a feature builds on: `client._call(method, path, body)` for
// an app route as the user (token refreshed, retried once), `client._token()` for the user's
// access token, `client._request(method, path, body, token)` for any route, and
// `client._platform` for the capabilities of the platform it runs on.

/** `cloud.auth`: the logins, the session, the user. */
function auth(client) {
  return {
    login: () => client._login(() => client._platform.login()),
    loginWithPassword: (email, password) => client._login({ provider: "password", email, password }),
    signUp: async (email, password) => {
      await client._request("POST", `/v1/apps/${client.app}/auth/users`, { email, password }, false);
      return client._login({ provider: "password", email, password });
    },
    loginAnonymously: () => client._login({ provider: "anonymous" }),
    loginForDevelopment: (user) => client._login({ provider: "dev", user }),
    logout: () => client._logout(),
    user: () => client._call("GET", "/auth/user"),
    /** The stored session, if any: `{ user, expires_at }` (no secrets). */
    session: () => {
      const s = client._session();
      return s ? { user: s.user, expires_at: s.expires_at } : null;
    },
    isLoggedIn: () => client._session() !== null,
  };
}

/** `cloud.db`: the app's collections. */
function db(client) {
  return { collection: (name) => new Collection(client, name) };
}

/** `cloud.functions`: the app's functions, called as the user. */
function functions(client) {
  return {
    call: (name, data = {}) => client._call("POST", `/functions/${encodeURIComponent(name)}`, data),
  };
}

/** `cloud.messages`: subscribe messages the user allows (sending is the server's: `ctx.messages`). */
function messages(client) {
  return {
    /**
     * Shows WeChat's "allow messages" sheet for up to 3 templates (call it from a tap, or after
     * a payment, as WeChat requires), reports the answers so that each "accept" allows one
     * message, and answers `{ answers, grants }`.
     */
    requestSubscribe: async (templateIds, { provider } = {}) => {
      const ids = Array.from(templateIds ?? [], String);
      if (ids.length < 1 || ids.length > 3) {
        throw new CloudError("invalid_message", "requestSubscribe takes 1 to 3 template ids, as WeChat does");
      }
      const answers = await client._platform.requestSubscribe(ids);
      if (Object.keys(answers).length === 0) {
        const { grants } = await client._call("GET", "/messages/subscriptions");
        return { answers, grants };
      }
      const body = provider === undefined ? { answers } : { provider, answers };
      const { grants } = await client._call("POST", "/messages/subscriptions", body);
      return { answers, grants };
    },
    /** What may still be sent to the user: `[{ appid, template_id, remaining, updated_at }]`. */
    grants: async () => (await client._call("GET", "/messages/subscriptions")).grants,
  };
}

/** `cloud.files`: the app's buckets, as the user (docs/files.md). */
function files(client) {
  const path = (bucket, id) => `/files/${encodeURIComponent(bucket)}/${encodeURIComponent(id)}`;
  const send = async (bucket, file, { name, metadata, kind, onProgress }, token) => {
    const formData = {};
    if (metadata !== undefined) formData.metadata = JSON.stringify(metadata);
    if (name !== undefined) formData.filename = String(name);
    const response = await client._platform.uploadFile({
      url: `${client.server}/v1/apps/${client.app}/files/${encodeURIComponent(bucket)}`,
      file,
      name,
      kind,
      formData,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      onProgress,
    });
    if (response.status === 201) return response.data;
    throw client._failure(response);
  };
  return {
    /**
     * Uploads `file` (a mini program's temporary path, or a web `Blob`/`File`) into `bucket`
     * through the platform's `uploadFile`; answers the file (`id`, `type` sniffed from its
     * bytes, `size`, …). `name` names it, `metadata` (an object) is kept with it for rules and
     * lists, `onProgress({ progress, sent, total })` follows it; `kind` (`image`, `video`,
     * `audio`) is Alipay's `fileType` (the server sniffs the real type either way).
     */
    upload: async (bucket, file, options = {}) => {
      const token = await client._token();
      try {
        return await send(bucket, file, options, token);
      } catch (error) {
        const stale = ["token_expired", "invalid_token", "session_revoked"].includes(error.code);
        if (!token || !(error instanceof CloudError) || !stale) throw error;
        const session = await client._refresh();
        return send(bucket, file, options, session.access_token);
      }
    },
    /**
     * Signed URLs for a list of files, for `<image src>` (one call, like
     * `wx.cloud.getTempFileURL`): `[{ id, url, expires_at } | null]`, with `url` absolute;
     * of thumbnails of size `thumb` (`"200x200"`) when given.
     */
    urls: async (ids, { ttl, thumb } = {}) => {
      const body = { ids };
      if (ttl !== undefined) body.ttl_secs = ttl;
      if (thumb !== undefined) body.thumb = String(thumb);
      const { urls } = await client._call("POST", "/file-urls", body);
      return urls.map((u) => (u ? { ...u, url: `${client.server}${u.url}` } : null));
    },
    /** The plain URL of a file (or its `thumb`), for a public bucket (no token or signature). */
    url: (bucket, id, { thumb } = {}) =>
      `${client.server}/v1/apps/${client.app}${path(bucket, id)}` +
      (thumb === undefined ? "" : `?thumb=${encodeURIComponent(thumb)}`),
    /** The file's record. */
    info: (bucket, id) => client._call("GET", `${path(bucket, id)}/info`),
    /** A page of the bucket's files the user may see, newest first: `{ items, next_cursor }`. */
    list: (bucket, { mine, limit, cursor } = {}) => {
      const query = new URLSearchParams();
      if (mine) query.set("mine", "true");
      if (limit !== undefined) query.set("limit", String(limit));
      if (cursor) query.set("cursor", cursor);
      const q = query.toString();
      return client._call("GET", `/buckets/${encodeURIComponent(bucket)}/files${q ? `?${q}` : ""}`);
    },
    /** Deletes a file the bucket's delete rule lets the user delete. */
    remove: (bucket, id) => client._call("DELETE", path(bucket, id)),
  };
}

/** How many more times `cloud.pay.request` confirms an order the server still has unpaid after
 * the platform said "ok" (its notification may be on the way), and how far apart. */
const PAY_CONFIRM_RETRIES = 3;
const PAY_CONFIRM_WAIT_MS = 1_000;

/** `error` about the order `id`: a `CloudError` with `order_id` (and `orderId`) set. */
function aboutOrder(error, id) {
  const failure =
    error instanceof CloudError
      ? error
      : new CloudError("payment_failed", String(error && error.message ? error.message : error));
  failure.order_id = id;
  failure.orderId = id;
  return failure;
}

/**
 * `cloud.pay`: the user's orders, priced on the server (docs/sdk.md, "Payments"). WeChat Pay in
 * WeChat mini programs and Alipay in Alipay mini programs: elsewhere `request` rejects with
 * `payment_not_supported` before any order is made.
 */
function pay(client) {
  const path = (id, action = "") => {
    if (typeof id !== "string" || id === "" || id === "." || id === "..") {
      throw new CloudError("invalid_id", `${JSON.stringify(id)} is not an order id`);
    }
    return `/pay/orders/${encodeURIComponent(id)}${action}`;
  };
  const order = (id) => client._call("GET", path(id));
  const confirm = (id) => client._call("POST", path(id, "/confirm"));
  // The platform's "ok" is a hint: the server asks the platform, and while it still says
  // `created` it is asked again a few times, a second apart; then the order is answered as is.
  const confirmed = async (id) => {
    let answer = await confirm(id);
    for (let tries = 0; tries < PAY_CONFIRM_RETRIES && answer.state === "created"; tries += 1) {
      await new Promise((resolve) => setTimeout(resolve, PAY_CONFIRM_WAIT_MS));
      answer = await confirm(id);
    }
    return answer;
  };
  return {
    /**
     * Orders and pays: `{ data, key }` asks the app's `before` function to price an order
     * (`POST …/pay/orders`; the same `key` again is the same order), `{ function, data }` calls a
     * function that answers one (`ctx.pay.createOrder`); the server decides the order's
     * provider. Then the platform's payment sheet (`wx.requestPayment` for a WeChat Pay order,
     * `my.tradePay` for an Alipay one), then the server's word (`confirm: false`: the order as
     * the server has it, without asking the platform). Answers the order: check
     * `state === "paid"`. An order with nothing left to pay (paid already) is answered without
     * the sheet. Rejects with `payment_cancelled` or `payment_failed` carrying `order_id` (the
     * order stays payable), with `payment_not_supported` on platforms other than WeChat and
     * Alipay (before ordering), and with `payment_not_supported` carrying `order_id` for an
     * order of the other provider (a WeChat Pay order in an Alipay mini program).
     */
    request: async ({ function: name, data, key, confirm: confirming = true } = {}) => {
      if (typeof client.adapter.requestPayment !== "function") {
        throw new CloudError(
          "payment_not_supported",
          `${client.adapter.name} can not pay: payments are WeChat Pay in a WeChat mini program (wx.requestPayment) and Alipay in an Alipay mini program (my.tradePay)`,
        );
      }
      let placed;
      if (name === undefined) {
        const body = { data: data ?? null };
        if (key !== undefined) body.key = String(key);
        placed = await client._call("POST", "/pay/orders", body);
      } else {
        if (key !== undefined) {
          throw new CloudError("invalid_argument", "a function makes its own order: pass its key in data");
        }
        placed = await client.functions.call(name, data);
        if (!placed || typeof placed !== "object" || typeof placed.id !== "string") {
          throw new CloudError("not_an_order", `the function ${name} answered no order (return what ctx.pay.createOrder answers)`);
        }
      }
      if (!placed.payment) return placed;
      try {
        await client._platform.requestPayment(placed.payment, placed.provider);
        return await (confirming ? confirmed(placed.id) : order(placed.id));
      } catch (error) {
        throw aboutOrder(error, placed.id);
      }
    },
    /** One of the user's orders, as the server has it. */
    order,
    /** Has the server ask the payment platform about one of the user's orders; answers it then. */
    confirm,
  };
}

// ---- Registries --------------------------------------------------------------------------
//
// A new capability or feature is a section above and one entry here.

/** The capabilities an adapter may have, by name. */
/** Close codes after which reconnecting would not help: the user must log in again. */
const FINAL_CLOSES = new Set([4000, 4003]);
/** Reconnection waits, from half a second up to half a minute, with jitter. */
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 30_000;
/** The later of two places in an app's event log (`"{tx}.{seq}"`, either may be missing). */
function laterPosition(a, b) {
  if (!a) return b;
  if (!b) return a;
  const [at, as] = a.split(".").map(Number);
  const [bt, bs] = b.split(".").map(Number);
  return at > bt || (at === bt && as >= bs) ? a : b;
}

/** How long a socket may stay silent (the server pings every 25 s) before it counts as dead. */
const SILENCE_MS = 60_000;

/**
 * `cloud.realtime`: one shared socket for the whole client (WeChat allows five per mini
 * program), opened on the first `watch`, `channel` or `onMessage` and closed after the last. It
 * authenticates with the user's token (or none, where the app lets anonymous sockets in),
 * refreshes it in-band before it expires, reconnects with jittered backoff after a drop (and at
 * once when a mini program comes back to the foreground), and subscribes again to everything
 * watched, resuming where it left off: the server sends what was missed, in order, once (record
 * changes from the app's event log; channel and direct messages from their kept history), or a
 * `reset` when it no longer holds it, and the watcher lists again.
 */
function realtime(client) {
  // Every subscription by its id: `{ kind: "records" | "channel" | "direct", … }`.
  const watches = new Map();
  // Requests waiting for their answer (publish, send, track, presence), by request id.
  const pending = new Map();
  let counter = 0;
  let socket = null;
  let ready = false;
  let attempts = 0;
  let reconnectTimer = null;
  let refreshTimer = null;
  let silenceTimer = null;
  let stopped = true;

  const send = (message) => {
    if (socket && ready) socket.send(JSON.stringify(message));
  };
  const subscribeMessage = (id, w) => {
    const target =
      w.kind === "records"
        ? { collection: w.collection, filter: w.filter }
        : w.kind === "channel"
          ? { channel: w.channel, presence: w.presence }
          : { direct: true };
    return { type: "subscribe", id, ...target, after: w.last ?? undefined };
  };
  const streamOf = (message) => {
    for (const w of watches.values()) {
      if (message.type === "message" ? w.channel === message.channel : w.kind === "direct") return w;
    }
    return null;
  };
  // Sends a request once the socket is ready; answers with the server's reply to it, which
  // names the request by its id (a fresh one, or for `track` and `untrack` their
  // subscription's: those are answered in the order sent).
  const ask = (message) =>
    new Promise((resolve, reject) => {
      stopped = false;
      counter += 1;
      const request = { resolve, reject, message: message.id ? message : { ...message, id: `q${counter}` } };
      const id = request.message.id;
      pending.set(id, [...(pending.get(id) ?? []), request]);
      if (ready) send(request.message);
      else connect();
    });
  // The oldest request waiting under `id`, taken out.
  const answered = (id) => {
    const waiting = pending.get(id);
    if (!waiting) return null;
    const request = waiting.shift();
    if (waiting.length === 0) pending.delete(id);
    return request;
  };
  const failPending = (error) => {
    for (const waiting of pending.values()) for (const request of waiting) request.reject(error);
    pending.clear();
  };
  const clearTimers = () => {
    for (const timer of [reconnectTimer, refreshTimer, silenceTimer]) if (timer) clearTimeout(timer);
    reconnectTimer = refreshTimer = silenceTimer = null;
  };
  const heard = () => {
    if (silenceTimer) clearTimeout(silenceTimer);
    // A half-open socket says nothing: drop it and connect again.
    silenceTimer = setTimeout(() => drop(), SILENCE_MS);
  };
  const drop = () => {
    const old = socket;
    socket = null;
    ready = false;
    if (old) {
      try {
        old.close(1000, "reconnecting");
      } catch {
        // Already closed.
      }
    }
    scheduleReconnect();
  };
  const scheduleReconnect = () => {
    if (stopped || reconnectTimer || (watches.size === 0 && pending.size === 0)) return;
    const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** attempts);
    attempts += 1;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, ceiling / 2 + Math.random() * (ceiling / 2));
  };
  const fail = (error) => {
    for (const w of watches.values()) w.onError?.(error);
    failPending(error);
  };

  const onMessage = (text) => {
    heard();
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.type) {
      case "ready": {
        const first = !ready;
        ready = true;
        attempts = 0;
        if (first) {
          for (const [id, w] of watches) send(subscribeMessage(id, w));
          for (const waiting of pending.values()) for (const request of waiting) send(request.message);
        }
        if (message.expires_at) {
          const wait = Date.parse(message.expires_at) - Date.now() - REFRESH_EARLY_MS;
          if (refreshTimer) clearTimeout(refreshTimer);
          refreshTimer = setTimeout(async () => {
            try {
              const session = await client._refresh();
              send({ type: "auth", token: session.access_token });
            } catch (error) {
              fail(error);
            }
          }, Math.max(wait, 1_000));
        }
        break;
      }
      case "subscribed": {
        const w = watches.get(message.id);
        if (!w) break;
        // It carries on from here: what was missed follows, in order (or a `reset`).
        w.last = { epoch: message.epoch, seq: message.seq };
        if (w.kind === "records") {
          // Where the server starts it: kept for a reset, which starts over from there.
          w.started = message.pos;
          w.pos = laterPosition(w.pos, message.pos);
          w.last.pos = w.pos;
        } else if (w.state !== undefined) {
          // Presence is per socket: be present again.
          send({ type: "track", id: message.id, state: w.state });
        }
        w.active = true;
        w.subscribed();
        break;
      }
      case "message":
      case "direct": {
        const w = streamOf(message);
        // Never twice: a message at or before the last one heard is a repeat.
        if (!w || (w.last && message.seq <= w.last.seq)) break;
        w.last = { epoch: w.last?.epoch, seq: message.seq };
        for (const listener of w.listeners.message) listener({ data: message.data, from: message.from, seq: message.seq });
        break;
      }
      case "presence_diff": {
        const w = streamOf({ type: "message", channel: message.channel });
        if (w) for (const listener of w.listeners.presence) listener(message.join ? { join: message.join } : { leave: message.leave });
        break;
      }
      case "published":
      case "sent":
      case "presence":
      case "tracked":
      case "untracked": {
        const request = answered(message.id);
        if (request) {
          const { type: _type, id: _id, ...answer } = message;
          request.resolve(answer);
        }
        break;
      }
      case "change": {
        const w = watches.get(message.sub);
        // Never twice: a change at or before the last one heard is a repeat.
        if (!w || (w.last && message.seq <= w.last.seq)) break;
        w.pos = laterPosition(w.pos, message.pos);
        w.last = { epoch: w.last?.epoch, seq: message.seq, pos: w.pos };
        w.onChange({ event: message.event, id: message.id, record: message.record ?? null, seq: message.seq });
        break;
      }
      case "reset": {
        const w = watches.get(message.sub);
        if (w && w.kind === "records") {
          // Starting over: from where the server started it, not a place it could not serve.
          w.pos = w.started;
          w.last = { epoch: message.epoch, seq: 0, pos: w.pos };
        } else if (w) {
          w.last = { epoch: message.epoch, seq: w.last?.seq ?? 0 };
        }
        w?.onReset?.(message.reason);
        break;
      }
      case "ended":
      case "error": {
        const error = new CloudError(message.code, message.message);
        const w = message.id ?? message.sub;
        if (w && message.type === "error" && pending.has(w)) {
          answered(w).reject(error);
        } else if (w && watches.has(w)) {
          watches.get(w).onError?.(error);
          if (message.type === "ended") watches.delete(w);
        } else {
          fail(error);
        }
        break;
      }
      case "ping":
        send({ type: "pong" });
        break;
      default:
        break;
    }
  };

  async function connect() {
    if (socket || stopped) return;
    let token;
    try {
      token = await client._token();
    } catch (error) {
      fail(error);
      scheduleReconnect();
      return;
    }
    if (!token && !client._realtimeAnonymous) {
      fail(new CloudError("missing_credentials", "log in before watching"));
      return;
    }
    if (socket || stopped) return;
    const url = `${client.server.replace(/^http/, "ws")}/v1/apps/${client.app}/realtime`;
    let opened;
    try {
      opened = client._platform.connectSocket({ url });
    } catch (error) {
      fail(error);
      return;
    }
    socket = opened;
    ready = false;
    opened.onOpen(() => {
      heard();
      // Without a token, a first message that is not `auth` makes the socket anonymous.
      opened.send(JSON.stringify(token ? { type: "auth", token } : { type: "ping", id: 0 }));
    });
    opened.onMessage((text) => {
      if (socket === opened) onMessage(text);
    });
    opened.onClose((code, reason) => {
      if (socket !== opened) return;
      socket = null;
      ready = false;
      clearTimers();
      // Requests in flight may or may not have been acted on: their callers decide.
      failPending(new CloudError("disconnected", `the socket closed (${code}) before the answer`));
      if (FINAL_CLOSES.has(code)) {
        fail(new CloudError(reason || "closed", `the server closed the socket (${code})`));
        return;
      }
      scheduleReconnect();
    });
  }

  // A mini program's network is cut in the background: come back at once in the foreground.
  const g = typeof globalThis === "undefined" ? {} : globalThis;
  for (const name of ["wx", "qq", "tt", "my"]) {
    const api = g[name];
    if (api && typeof api.onAppShow === "function" && client.adapter.name !== "web") {
      api.onAppShow(() => {
        if (!stopped && !socket) {
          if (reconnectTimer) clearTimeout(reconnectTimer);
          reconnectTimer = null;
          attempts = 0;
          connect();
        }
      });
      break;
    }
  }

  return {
    /**
     * Watches a collection: `onChange({ event, id, record, seq })` for each change the user may
     * see (`event`: create, update, delete, leave). Options: `filter` (the filter language),
     * `onError(CloudError)`, `onReset(reason)` (changes may have been missed: list again).
     * Answers `{ close() }`.
     */
    watch(collection, onChange, { filter, onError, onReset } = {}) {
      if (typeof onChange !== "function") throw new CloudError("invalid_argument", "watch needs an onChange function");
      counter += 1;
      const id = `w${counter}`;
      let subscribed;
      const started = new Promise((resolve) => (subscribed = resolve));
      const w = { kind: "records", collection, filter, onChange, onError, onReset, subscribed, active: false };
      const { ready: subscribed_, close } = start(id, w, started);
      return { ready: subscribed_, close };
    },
    /**
     * Joins a channel (`room:42`): `on("message", ({ data, from, seq }) => …)`,
     * `on("presence", ({ join } | { leave }) => …)` (with `presence: true`), `publish(data)`,
     * `track(state)`, `untrack()`, `presence({ after, limit })`, `close()`. Options: `presence`,
     * `onError(CloudError)`, `onReset(reason)` (messages were missed beyond what the server
     * keeps). After a reconnect it carries on where it left off, and tracks its state again.
     */
    channel(name, { presence = false, onError, onReset } = {}) {
      counter += 1;
      const id = `c${counter}`;
      let subscribed;
      const started = new Promise((resolve) => (subscribed = resolve));
      const w = {
        kind: "channel", channel: String(name), presence: Boolean(presence), onError, onReset, subscribed,
        active: false, listeners: { message: [], presence: [] },
      };
      const { ready: joined, close } = start(id, w, started);
      const handle = {
        ready: joined,
        on(event, listener) {
          if (!w.listeners[event]) throw new CloudError("invalid_argument", "a channel's events are message and presence");
          w.listeners[event].push(listener);
          return handle;
        },
        publish: (data) => ask({ type: "publish", channel: w.channel, data: data ?? null }),
        track(state) {
          w.state = state ?? {};
          return joined.then(() => ask({ type: "track", id, state: w.state }).then(() => undefined));
        },
        untrack() {
          w.state = undefined;
          return joined.then(() => ask({ type: "untrack", id }).then(() => undefined));
        },
        presence: ({ after, limit } = {}) => ask({ type: "presence", channel: w.channel, after, limit }),
        close,
      };
      return handle;
    },
    /**
     * Listens to the user's direct messages (`({ data, from, seq }) => …`), on this and every
     * other socket of the user. Answers `{ ready, close() }`.
     */
    onMessage(listener, { onError, onReset } = {}) {
      counter += 1;
      const id = `d${counter}`;
      let subscribed;
      const started = new Promise((resolve) => (subscribed = resolve));
      const w = { kind: "direct", onError, onReset, subscribed, active: false, listeners: { message: [listener], presence: [] } };
      return start(id, w, started);
    },
    /** Sends a direct message to a user, where the app's `direct` rule allows it. */
    send: (to, data) => ask({ type: "send", to: String(to), data: data ?? null }).then(() => undefined),
    /** Publishes to a channel without joining it. Answers `{ seq }`. */
    publish: (channel, data) => ask({ type: "publish", channel: String(channel), data: data ?? null }),
    /** Closes the socket and forgets every watch. */
    close: () => closeAll(),
  };

  function start(id, w, started) {
    watches.set(id, w);
    stopped = false;
    if (ready) send(subscribeMessage(id, w));
    else connect();
    return {
      /** Resolves once the server has started the subscription: what follows arrives. */
      ready: started,
      close() {
        if (!watches.delete(id)) return;
        send({ type: "unsubscribe", id });
        if (watches.size === 0) closeAll();
      },
    };
  }

  function closeAll() {
    watches.clear();
    failPending(new CloudError("closed", "the realtime socket was closed"));
    stopped = true;
    clearTimers();
    const old = socket;
    socket = null;
    ready = false;
    if (old) old.close(1000, "done");
  }
}

const CAPABILITIES = { request, storage, login, subscribe, upload, socket, payment };

/** The client's namespaces, by name, in the order a client builds them. */
const FEATURES = new Map(Object.entries({ auth, db, functions, messages, files, realtime, pay }));

/** Adds `cloud[name] = build(cloud)` to every client created from now on. */
function registerFeature(name, build) {
  if (FEATURES.has(name)) {
    throw new CloudError("invalid_feature", `the ${JSON.stringify(name)} feature is already registered`);
  }
  FEATURES.set(name, build);
}

/** `createClient({ server: 'https://api.example.com', app: 'todo' })`. */
function createClient(options) {
  return new Client(options);
}

export { createClient, CloudError, literal, registerFeature };
