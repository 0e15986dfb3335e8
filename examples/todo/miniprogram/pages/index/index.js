const app = getApp();

Page({
  data: { todos: [], title: "", stats: null, error: "" },

  async onShow() {
    try {
      // wx.login → a code → a Cloudlet session; kept in the mini program's storage.
      if (!app.cloud.auth.isLoggedIn()) await app.cloud.auth.login();
      await this.refresh();
    } catch (error) {
      this.setData({ error: `${error.message} (${error.code})` });
    }
  },

  async refresh() {
    const todos = app.cloud.db.collection("todos");
    const page = await todos.orderBy("created_at").limit(200).get();
    const stats = await app.cloud.functions.call("stats");
    this.setData({ todos: page.items, stats, error: "" });
  },

  onInput(event) {
    this.setData({ title: event.detail.value });
  },

  async add() {
    const title = this.data.title.trim();
    if (!title) return;
    await app.cloud.db.collection("todos").add({ title });
    this.setData({ title: "" });
    await this.refresh();
  },

  async toggle(event) {
    const { id, done } = event.currentTarget.dataset;
    await app.cloud.db
      .collection("todos")
      .update(id, { done: !done, done_at: done ? null : new Date().toISOString() });
    await this.refresh();
  },

  async remove(event) {
    await app.cloud.db.collection("todos").remove(event.currentTarget.dataset.id);
    await this.refresh();
  },
});
