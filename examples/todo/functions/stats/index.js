// How many todos the caller has, and how many are open: `cloud.functions.call("stats")`.
export default async function (event, ctx) {
  const todos = ctx.db.collection("todos");
  const all = await todos.list({ count: true, limit: 1 });
  const open = await todos.list({ filter: "done = false", count: true, limit: 1 });
  return { total: all.total, open: open.total, done: all.total - open.total };
}
