// ctx.files and ctx.admin.files: the app's buckets from a function, under the caller's rules
// (ctx.files: the user who called, the owner of what it writes) or none (ctx.admin.files).
// write(bucket, data, { name, metadata }) takes a string, a typed array or an ArrayBuffer and
// answers the file; read(bucket, id) answers { file, bytes, text(), json() }; info, list, remove
// and urls answer what the HTTP API answers.
export default (host) => {
  const call = (admin, request, bytes) => host.call({ admin, request }, bytes);
  const bytesOf = (data) => {
    if (typeof data === "string") return new TextEncoder().encode(data);
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError("ctx.files.write: data is a string, a typed array or an ArrayBuffer");
  };
  const files = (admin) =>
    Object.freeze({
      write: (bucket, data, { name, metadata } = {}) =>
        call(admin, { op: "write", bucket: String(bucket), name, metadata }, bytesOf(data)).then((r) => r.value),
      read: (bucket, id) =>
        call(admin, { op: "read", bucket: String(bucket), id: String(id) }).then(({ value, bytes }) => ({
          file: value,
          bytes,
          text: () => new TextDecoder().decode(bytes),
          json: () => JSON.parse(new TextDecoder().decode(bytes)),
        })),
      info: (bucket, id) => call(admin, { op: "info", bucket: String(bucket), id: String(id) }).then((r) => r.value),
      list: (bucket, { mine, limit, cursor } = {}) =>
        call(admin, { op: "list", bucket: String(bucket), mine, limit, cursor }).then((r) => r.value),
      remove: (bucket, id) =>
        call(admin, { op: "remove", bucket: String(bucket), id: String(id) }).then(() => null),
      urls: (ids, { ttl } = {}) => call(admin, { op: "urls", ids, ttl_secs: ttl }).then((r) => r.value.urls),
    });
  return { ctx: { files: files(false), admin: Object.freeze({ files: files(true) }) } };
};
