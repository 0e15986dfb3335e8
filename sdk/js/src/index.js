// Cloudlet's client SDK: one file, no dependencies. It finds the platform it runs on (a WeChat,
// Alipay, Douyin or QQ mini program, or a browser), logs the user in with that platform's login
// call, keeps the session in the platform's storage, refreshes the access token before it
// expires (and once, single-flight, on a 401), and wraps the records and functions APIs.

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

// ---- Platform adapters -------------------------------------------------------------------

/**
 * A mini-program platform's global (`wx`, `my`, `tt`, `qq`) as an adapter: HTTP, storage and
 * the login call, each returning promises.
 */
function miniProgramAdapter(name, api) {
  const call = (method, options) =>
    new Promise((resolve, reject) => {
      api[method]({ ...options, success: resolve, fail: reject });
    });
  return {
    name,
    async request({ url, method, headers, body }) {
      const options = { url, method, data: body, dataType: "json" };
      // Alipay names the header option `headers`; the others `header`.
      if (name === "alipay") options.headers = headers;
      else options.header = headers;
      const response = await call("request", options).catch((error) => {
        throw new CloudError("network_error", (error && (error.errMsg || error.errorMessage)) || "the request failed");
      });
      return {
        status: response.statusCode ?? response.status,
        data: response.data,
        headers: response.header ?? response.headers ?? {},
      };
    },
    getItem(key) {
      try {
        const value = name === "alipay" ? api.getStorageSync({ key }).data : api.getStorageSync(key);
        return value === "" || value === undefined ? null : value;
      } catch {
        return null;
      }
    },
    setItem(key, value) {
      if (name === "alipay") api.setStorageSync({ key, data: value });
      else api.setStorageSync(key, value);
    },
    removeItem(key) {
      if (name === "alipay") api.removeStorageSync({ key });
      else api.removeStorageSync(key);
    },
    /** The platform's login: the body of `POST …/auth/sessions`. */
    async login() {
      if (name === "alipay") {
        const { authCode } = await call("getAuthCode", { scopes: "auth_base" });
        return { provider: "alipay", code: authCode };
      }
      const result = await call("login", {});
      if (name === "douyin" && !result.code && result.anonymousCode) {
        return { provider: "douyin", anonymous_code: result.anonymousCode };
      }
      return { provider: name, code: result.code };
    },
  };
}

/** The browser (or Node 18+): `fetch` and `localStorage` (in memory when there is none). */
function webAdapter() {
  const memory = new Map();
  const storage = typeof localStorage === "undefined" ? null : localStorage;
  return {
    name: "web",
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
    getItem: (key) => (storage ? storage.getItem(key) : memory.get(key) ?? null),
    setItem: (key, value) => (storage ? storage.setItem(key, value) : memory.set(key, value)),
    removeItem: (key) => (storage ? storage.removeItem(key) : memory.delete(key)),
    async login() {
      throw new CloudError("unsupported", "the web has no platform login: use loginWithPassword or loginAnonymously");
    },
  };
}

/** The platform this code runs on, most specific first. */
function detectAdapter() {
  const g = typeof globalThis === "undefined" ? {} : globalThis;
  if (typeof g.wx === "object" && g.wx && typeof g.wx.login === "function") return miniProgramAdapter("wechat", g.wx);
  if (typeof g.qq === "object" && g.qq && typeof g.qq.login === "function") return miniProgramAdapter("qq", g.qq);
  if (typeof g.tt === "object" && g.tt && typeof g.tt.login === "function") return miniProgramAdapter("douyin", g.tt);
  if (typeof g.my === "object" && g.my && typeof g.my.getAuthCode === "function") return miniProgramAdapter("alipay", g.my);
  return webAdapter();
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

// ---- The client --------------------------------------------------------------------------

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
    return this._with({ limit: size, offset: Math.max(0, (page - 1) * size) });
  }

  fields(...names) {
    return this._with({ fields: names.flat().map(field).join(",") });
  }

  expand(...names) {
    return this._with({ expand: names.flat().map(field).join(",") });
  }

  _params(extra = {}) {
    const s = this._state;
    const params = {};
    if (s.where.length) params.filter = s.where.join(" && ");
    if (s.sort.length) params.sort = s.sort.join(",");
    if (s.limit !== undefined) params.limit = s.limit;
    if (s.offset) params.offset = s.offset;
    if (s.fields) params.fields = s.fields;
    if (s.expand) params.expand = s.expand;
    if (s.cursor) params.cursor = s.cursor;
    return { ...params, ...extra };
  }

  /** The first page: `{ items, next_cursor, next() }`; `next()` fetches the page after it. */
  async get() {
    const page = await this._collection._list(this._params());
    return this._page(page);
  }

  _page(page) {
    const cursor = page.next_cursor;
    return {
      ...page,
      next: cursor ? () => this._with({ cursor, offset: 0 }).get() : null,
    };
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
  count() {
    return new Query(this).count();
  }
  /** Every record (first page) the caller may see, newest rules applied. */
  list() {
    return new Query(this).get();
  }
}

class Client {
  constructor({ server, app, adapter, storageKey } = {}) {
    if (!server || !app) throw new CloudError("invalid_config", "createClient needs { server, app }");
    this.server = String(server).replace(/\/+$/, "");
    this.app = app;
    this.adapter = adapter ?? detectAdapter();
    this._storageKey = `${storageKey ?? SESSION_KEY}:${app}`;
    this._refreshing = null;
    this.auth = {
      login: () => this._login(() => this.adapter.login()),
      loginWithPassword: (email, password) => this._login({ provider: "password", email, password }),
      signUp: async (email, password) => {
        await this._request("POST", `/v1/apps/${this.app}/auth/users`, { email, password }, false);
        return this._login({ provider: "password", email, password });
      },
      loginAnonymously: () => this._login({ provider: "anonymous" }),
      loginForDevelopment: (user) => this._login({ provider: "dev", user }),
      logout: () => this._logout(),
      user: () => this._call("GET", "/auth/user"),
      /** The stored session, if any: `{ user, expires_at }` (no secrets). */
      session: () => {
        const s = this._session();
        return s ? { user: s.user, expires_at: s.expires_at } : null;
      },
      isLoggedIn: () => this._session() !== null,
    };
    this.db = { collection: (name) => new Collection(this, name) };
    this.functions = {
      call: (name, data = {}) => this._call("POST", `/functions/${encodeURIComponent(name)}`, data),
    };
  }

  _session() {
    const raw = this.adapter.getItem(this._storageKey);
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
    this.adapter.setItem(this._storageKey, JSON.stringify(session));
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
    this.adapter.removeItem(this._storageKey);
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
      if (error instanceof CloudError && error.status === 401) this.adapter.removeItem(this._storageKey);
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

  async _request(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await this.adapter.request({ url: `${this.server}${path}`, method, headers, body });
    if (response.status >= 200 && response.status < 300) {
      return response.status === 204 ? null : response.data;
    }
    const error = response.data && response.data.error;
    if (error && error.code) {
      throw new CloudError(error.code, error.message, { status: response.status, requestId: error.request_id });
    }
    throw new CloudError("http_error", `the server answered ${response.status}`, { status: response.status });
  }
}

/** `createClient({ server: 'https://api.example.com', app: 'todo' })`. */
function createClient(options) {
  return new Client(options);
}

export { createClient, CloudError, literal };
