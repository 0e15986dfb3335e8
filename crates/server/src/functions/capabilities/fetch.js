// fetch(input, init): the web's fetch, through the server (which refuses private addresses
// unless the instance allows them). Request bodies may be strings, URLSearchParams or bytes; the
// Response reads its body as text, JSON or bytes.
export default (host) => {
  async function fetch(input, init = {}) {
    const url = String(input instanceof URL ? input.href : input);
    const headers = Object.fromEntries(new Headers(init.headers ?? {}).entries());
    let body = init.body;
    if (typeof body === "string") {
      body = new TextEncoder().encode(body);
    } else if (body instanceof URLSearchParams) {
      body = new TextEncoder().encode(body.toString());
      headers["content-type"] ??= "application/x-www-form-urlencoded";
    } else if (body !== undefined && body !== null && !ArrayBuffer.isView(body) && !(body instanceof ArrayBuffer)) {
      throw new TypeError("fetch: the body must be a string, URLSearchParams, a typed array or an ArrayBuffer");
    }
    const hasBody = body !== undefined && body !== null;
    const request = { url, method: (init.method ?? "GET").toUpperCase(), headers, body: hasBody };
    const { value, bytes } = await host.call(request, hasBody ? body : undefined);
    return new Response(bytes, { status: value.status, headers: value.headers, url: value.url });
  }
  return { global: { fetch } };
};
