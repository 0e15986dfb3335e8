// ctx.db and ctx.admin.db: the records API from a function, under the caller's rules (ctx.db)
// or none (ctx.admin.db). Every method answers a promise of what the HTTP API answers.
export default (host) => {
  const call = (admin, request) => host.call({ admin, request }).then((reply) => reply.value);
  const database = (admin) =>
    Object.freeze({
      collection(name) {
        const collection = String(name);
        return Object.freeze({
          get: (id, query = {}) => call(admin, { op: "get", collection, id, query }),
          add: (data) => call(admin, { op: "create", collection, data }),
          update: (id, data) => call(admin, { op: "update", collection, id, data }),
          remove: (id) => call(admin, { op: "delete", collection, id }),
          list: (query = {}) => call(admin, { op: "list", collection, query }),
        });
      },
      batch: (operations) => call(admin, { op: "batch", operations }),
    });
  return { ctx: { db: database(false), admin: Object.freeze({ db: database(true) }) } };
};
