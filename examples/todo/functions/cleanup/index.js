// Runs on a schedule (see cloudlet.toml): removes every user's finished todos older than
// `older_than_days`, as the admin.
export default async function (event, ctx) {
  const days = event.data?.older_than_days ?? 30;
  const before = new Date(Date.parse(event.scheduled_at) - days * 86_400_000).toISOString();
  const todos = ctx.admin.db.collection("todos");
  let removed = 0;
  for (;;) {
    const page = await todos.list({ filter: `done = true && done_at < '${before}'`, limit: 100 });
    for (const todo of page.items) {
      await todos.remove(todo.id);
      removed += 1;
    }
    if (page.items.length < 100) break;
  }
  console.log(`removed ${removed} finished todos older than ${days} days`);
  return { removed };
}
