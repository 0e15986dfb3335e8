// Runs once in every new runtime, before the function's modules. It builds what QuickJS lacks
// (console, timers, URL, Headers, Response, TextEncoder, atob, crypto) on a handful of native
// functions that the worker installs, then hides them. Everything a function does outside its
// runtime is a host call to one of the server's capabilities, answered by the server. The
// capabilities bring their own JavaScript (their shims: `ctx.db`, `fetch`, …), which the driver's
// `install` puts in place; this file knows none of them.
(() => {
  "use strict";
  const native = globalThis.__cloudlet;
  delete globalThis.__cloudlet;

  const pending = new Map();
  const timers = new Map();

  function hostError(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
  }

  const asBytes = (data) => {
    if (data === undefined || data === null) return undefined;
    if (data instanceof Uint8Array) return data;
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    throw new TypeError("bytes must be a Uint8Array, a typed array or an ArrayBuffer");
  };

  // A capability's side of the bridge: `call(args, bytes)` sends `args` (JSON) and `bytes` (as
  // they are) to the capability and resolves to `{ value, bytes }`, or rejects with an Error
  // whose `code` is the server's.
  function bridge(capability) {
    return Object.freeze({
      call(args, bytes) {
        return new Promise((resolve, reject) => {
          const json = JSON.stringify(args);
          const attached = asBytes(bytes);
          const call = attached ? native.call(capability, json, attached) : native.call(capability, json);
          if (call === -1) {
            reject(hostError("host_call_too_large", `a ${capability} call over 16 MiB`));
            return;
          }
          if (call < 0) {
            const why = "16 host calls, or 16 MiB of them, already wait for answers: await some first";
            reject(hostError("too_many_host_calls", why));
            return;
          }
          pending.set(call, { resolve, reject });
        });
      },
    });
  }

  // What the capabilities add, by where it goes.
  const capabilities = { ctx: {}, global: {} };
  const merge = (into, parts) => {
    for (const [key, value] of Object.entries(parts ?? {})) {
      const plain = value && typeof value === "object" && !Array.isArray(value);
      if (plain && into[key] && typeof into[key] === "object") {
        // Two capabilities may each add to one namespace (`ctx.admin.db`, `ctx.admin.files`):
        // one that froze it leaves a copy to add to, frozen again once added to.
        const frozen = Object.isFrozen(into[key]);
        if (frozen) into[key] = { ...into[key] };
        merge(into[key], value);
        if (frozen) Object.freeze(into[key]);
      } else into[key] = value;
    }
  };

  // The worker's side: installs capabilities, settles host calls and fires timers.
  const driver = {
    install(name, factory) {
      const parts = factory(bridge(name));
      merge(capabilities.ctx, parts.ctx);
      merge(capabilities.global, parts.global);
      Object.assign(globalThis, parts.global ?? {});
    },
    settle(call, ok, json, bytes) {
      const waiting = pending.get(call);
      if (!waiting) return;
      pending.delete(call);
      const value = JSON.parse(json);
      if (ok) waiting.resolve({ value, bytes: bytes ?? null });
      else waiting.reject(hostError(value.code, value.message));
    },
    fire(id) {
      const timer = timers.get(id);
      if (!timer) return;
      timers.delete(id);
      timer.callback(...timer.args);
    },
    async run(handler, eventJson, contextJson) {
      // What an earlier invocation left behind (host calls it did not await, its timers) is
      // forgotten: it never completes, and never for this caller.
      pending.clear();
      timers.clear();
      const result = await handler(JSON.parse(eventJson), makeContext(JSON.parse(contextJson)));
      const json = JSON.stringify(result);
      return json === undefined ? "null" : json;
    },
  };

  function format(args) {
    return args
      .map((a) => {
        if (typeof a === "string") return a;
        if (a instanceof Error) return a.stack ? `${a.name}: ${a.message}\n${a.stack}` : String(a);
        try {
          const json = JSON.stringify(a);
          return json === undefined ? String(a) : json;
        } catch {
          return String(a);
        }
      })
      .join(" ");
  }
  const console = {};
  for (const level of ["log", "info", "warn", "error", "debug"]) {
    console[level] = (...args) => native.log(level === "log" ? "info" : level, format(args));
  }
  globalThis.console = console;

  globalThis.setTimeout = (callback, ms = 0, ...args) => {
    if (typeof callback !== "function") throw new TypeError("setTimeout needs a function");
    const id = native.timer(Math.max(0, Number(ms) || 0));
    timers.set(id, { callback, args });
    return id;
  };
  globalThis.clearTimeout = (id) => {
    if (!timers.delete(id)) return;
    native.cancel(id);
  };

  // UTF-8 only, as on the web.
  class TextEncoder {
    get encoding() {
      return "utf-8";
    }
    encode(text = "") {
      const bytes = [];
      for (const char of String(text)) {
        let c = char.codePointAt(0);
        if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
        if (c < 0x80) bytes.push(c);
        else if (c < 0x800) bytes.push(0xc0 | (c >> 6), 0x80 | (c & 63));
        else if (c < 0x10000) bytes.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
        else bytes.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      }
      return new Uint8Array(bytes);
    }
  }
  class TextDecoder {
    get encoding() {
      return "utf-8";
    }
    decode(input = new Uint8Array()) {
      const bytes = ArrayBuffer.isView(input)
        ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength)
        : new Uint8Array(input);
      let out = "";
      let i = 0;
      while (i < bytes.length) {
        const b = bytes[i];
        const need = b < 0x80 ? 0 : b >= 0xc2 && b < 0xe0 ? 1 : b >= 0xe0 && b < 0xf0 ? 2 : b >= 0xf0 && b < 0xf5 ? 3 : -1;
        let c = need <= 0 ? b : b & (0x7f >> (need + 1));
        let k = 1;
        for (; k <= need; k++) {
          const next = bytes[i + k];
          if (next === undefined || (next & 0xc0) !== 0x80) break;
          c = (c << 6) | (next & 63);
        }
        const overlong = (need === 2 && c < 0x800) || (need === 3 && c < 0x10000);
        if (need < 0 || k <= need || overlong || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) {
          out += "\ufffd";
          i += 1;
          continue;
        }
        out += String.fromCodePoint(c);
        i += need + 1;
      }
      return out;
    }
  }
  globalThis.TextEncoder = TextEncoder;
  globalThis.TextDecoder = TextDecoder;

  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  globalThis.btoa = (text) => {
    text = String(text);
    let out = "";
    for (let i = 0; i < text.length; i += 3) {
      const codes = [text.charCodeAt(i), text.charCodeAt(i + 1), text.charCodeAt(i + 2)];
      for (const c of codes) if (c > 255) throw new DOMException("btoa: a character outside Latin-1", "InvalidCharacterError");
      const [a, b, c] = codes;
      out += B64[a >> 2] + B64[((a & 3) << 4) | (b >> 4 || 0)];
      out += Number.isNaN(b) ? "==" : B64[((b & 15) << 2) | (c >> 6 || 0)] + (Number.isNaN(c) ? "=" : B64[c & 63]);
    }
    return out;
  };
  globalThis.atob = (data) => {
    const text = String(data).replace(/[\t\n\f\r ]/g, "");
    if (text.length % 4 === 1 || /[^A-Za-z0-9+/=]/.test(text) || /=[^=]/.test(text)) {
      throw new DOMException("atob: not base64", "InvalidCharacterError");
    }
    let out = "";
    let bits = 0;
    let value = 0;
    for (const char of text.replace(/=+$/, "")) {
      value = (value << 6) | B64.indexOf(char);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += String.fromCharCode((value >> bits) & 255);
      }
    }
    return out;
  };
  class DOMException extends Error {
    constructor(message, name = "Error") {
      super(message);
      this.name = name;
    }
  }
  globalThis.DOMException = DOMException;

  // performance.now(): milliseconds since the runtime started, to a tenth of one (Date.now()
  // has whole milliseconds); performance.timeOrigin: when it started, in Unix milliseconds.
  const elapsed = native.elapsed;
  globalThis.performance = Object.freeze({ timeOrigin: native.origin, now: () => elapsed() });

  globalThis.crypto = {
    getRandomValues(array) {
      if (!ArrayBuffer.isView(array) || array instanceof Float32Array || array instanceof Float64Array) {
        throw new TypeError("getRandomValues needs an integer typed array");
      }
      if (array.byteLength > 65536) throw new DOMException("getRandomValues: over 65536 bytes", "QuotaExceededError");
      const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
      bytes.set(native.random(array.byteLength));
      return array;
    },
    randomUUID() {
      const b = native.random(16);
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const hex = b.map((x) => x.toString(16).padStart(2, "0"));
      return `${hex.slice(0, 4).join("")}-${hex.slice(4, 6).join("")}-${hex.slice(6, 8).join("")}-${hex.slice(8, 10).join("")}-${hex.slice(10).join("")}`;
    },
  };

  class URLSearchParams {
    #pairs = [];
    constructor(init = "") {
      if (typeof init === "string") {
        for (const part of init.replace(/^\?/, "").split("&")) {
          if (!part) continue;
          const at = part.indexOf("=");
          const [k, v] = at < 0 ? [part, ""] : [part.slice(0, at), part.slice(at + 1)];
          this.#pairs.push([decode(k), decode(v)]);
        }
      } else if (init && typeof init === "object") {
        const entries = Symbol.iterator in init ? init : Object.entries(init);
        for (const [k, v] of entries) this.#pairs.push([String(k), String(v)]);
      }
    }
    get(name) {
      const pair = this.#pairs.find(([k]) => k === name);
      return pair ? pair[1] : null;
    }
    getAll(name) {
      return this.#pairs.filter(([k]) => k === name).map(([, v]) => v);
    }
    has(name) {
      return this.#pairs.some(([k]) => k === name);
    }
    set(name, value) {
      this.delete(name);
      this.#pairs.push([String(name), String(value)]);
    }
    append(name, value) {
      this.#pairs.push([String(name), String(value)]);
    }
    delete(name) {
      this.#pairs = this.#pairs.filter(([k]) => k !== name);
    }
    entries() {
      return this.#pairs.map((p) => [...p])[Symbol.iterator]();
    }
    [Symbol.iterator]() {
      return this.entries();
    }
    toString() {
      return this.#pairs.map(([k, v]) => `${encode(k)}=${encode(v)}`).join("&");
    }
  }
  const decode = (s) => decodeURIComponent(s.replace(/\+/g, " "));
  const encode = (s) => encodeURIComponent(s).replace(/%20/g, "+");

  // Absolute http(s) URLs and paths relative to one: what a function builds requests with.
  class URL {
    constructor(url, base) {
      url = String(url);
      const match = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/(?:([^:@/]*)(?::([^@/]*))?@)?(\[[^\]]+\]|[^:/?#]*)(?::(\d*))?([^?#]*)(\?[^#]*)?(#.*)?$/.exec(url);
      if (!match) {
        if (base === undefined) throw new TypeError(`Invalid URL: ${url}`);
        const b = new URL(base);
        const path = url.startsWith("/") ? url : b.pathname.replace(/[^/]*$/, "") + url;
        return new URL(`${b.protocol}//${b.host}${path}`);
      }
      this.protocol = match[1].toLowerCase() + ":";
      this.username = match[2] ?? "";
      this.password = match[3] ?? "";
      this.hostname = match[4].toLowerCase();
      const port = match[5] ?? "";
      const defaults = { "http:": "80", "https:": "443" };
      this.port = port === defaults[this.protocol] ? "" : port;
      this.pathname = match[6] || "/";
      this.searchParams = new URLSearchParams(match[7] ?? "");
      this.hash = match[8] ?? "";
    }
    get host() {
      return this.port ? `${this.hostname}:${this.port}` : this.hostname;
    }
    get origin() {
      return `${this.protocol}//${this.host}`;
    }
    get search() {
      const query = this.searchParams.toString();
      return query ? `?${query}` : "";
    }
    get href() {
      const auth = this.username ? `${this.username}${this.password ? `:${this.password}` : ""}@` : "";
      return `${this.protocol}//${auth}${this.host}${this.pathname}${this.search}${this.hash}`;
    }
    toString() {
      return this.href;
    }
    toJSON() {
      return this.href;
    }
  }
  globalThis.URL = URL;
  globalThis.URLSearchParams = URLSearchParams;

  class Headers {
    #map = new Map();
    constructor(init = {}) {
      const entries = init instanceof Headers ? init.entries() : Array.isArray(init) ? init : Object.entries(init);
      for (const [k, v] of entries) this.append(k, v);
    }
    get(name) {
      return this.#map.get(String(name).toLowerCase()) ?? null;
    }
    has(name) {
      return this.#map.has(String(name).toLowerCase());
    }
    set(name, value) {
      this.#map.set(String(name).toLowerCase(), String(value));
    }
    append(name, value) {
      const key = String(name).toLowerCase();
      const old = this.#map.get(key);
      this.#map.set(key, old === undefined ? String(value) : `${old}, ${value}`);
    }
    delete(name) {
      this.#map.delete(String(name).toLowerCase());
    }
    entries() {
      return this.#map.entries();
    }
    [Symbol.iterator]() {
      return this.#map.entries();
    }
  }
  globalThis.Headers = Headers;

  // A response's body is text or bytes; it is read once, as either.
  class Response {
    #body;
    constructor(body, init = {}) {
      this.#body = body == null ? new Uint8Array() : typeof body === "string" ? body : asBytes(body);
      this.status = init.status ?? 200;
      this.statusText = init.statusText ?? "";
      this.headers = new Headers(init.headers);
      this.url = init.url ?? "";
    }
    get ok() {
      return this.status >= 200 && this.status < 300;
    }
    async text() {
      return typeof this.#body === "string" ? this.#body : new TextDecoder().decode(this.#body);
    }
    async json() {
      return JSON.parse(await this.text());
    }
    async bytes() {
      return typeof this.#body === "string" ? new TextEncoder().encode(this.#body) : this.#body.slice();
    }
    async arrayBuffer() {
      return (await this.bytes()).buffer;
    }
  }
  globalThis.Response = Response;

  function makeContext(context) {
    return Object.freeze({ ...context, log: console.log, ...capabilities.ctx });
  }

  return driver;
})();
