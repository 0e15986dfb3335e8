const app = getApp();

Page({
  data: { todos: [], photos: {}, title: "", stats: null, error: "" },

  async onShow() {
    try {
      // wx.login → a code → a Cloudlet session; kept in the mini program's storage.
      if (!app.cloud.auth.isLoggedIn()) await app.cloud.auth.login();
      await this.refresh();
      // Live: a change made elsewhere (the web, another phone, a function) shows at once.
      if (!this.watching) {
        const again = () => {
          clearTimeout(this.soon);
          this.soon = setTimeout(() => this.refresh().catch(() => {}), 50);
        };
        this.watching = app.cloud.db.collection("todos").watch(again, { onReset: again });
      }
    } catch (error) {
      this.setData({ error: `${error.message} (${error.code})` });
    }
  },

  onUnload() {
    if (this.watching) this.watching.close();
    this.watching = null;
  },

  async refresh() {
    const todos = app.cloud.db.collection("todos");
    // The photos' thumbnails come signed with the page, for <image src> (no header there).
    const page = await todos.orderBy("created_at").limit(200).fileUrls("120x120").get();
    const photos = {};
    for (const todo of page.items) {
      const signed = todo.photo && page.file_urls[todo.photo];
      if (signed) photos[todo.id] = signed.url;
    }
    const stats = await app.cloud.functions.call("stats");
    this.setData({ todos: page.items, photos, stats, error: "" });
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

  /** Picks a photo (camera or album), uploads it with wx.uploadFile and puts it on the todo. */
  async attach(event) {
    const { id } = event.currentTarget.dataset;
    try {
      const picked = await wx.chooseMedia({ count: 1, mediaType: ["image"], sizeType: ["compressed"] });
      const file = await app.cloud.files.upload("photos", picked.tempFiles[0].tempFilePath);
      await app.cloud.db.collection("todos").update(id, { photo: file.id });
      await this.refresh();
    } catch (error) {
      // Closing the picker is no error.
      if (error.errMsg && error.errMsg.includes("cancel")) return;
      this.setData({ error: `${error.message ?? error.errMsg} (${error.code ?? "chooseMedia"})` });
    }
  },

  async remove(event) {
    await app.cloud.db.collection("todos").remove(event.currentTarget.dataset.id);
    await this.refresh();
  },
});
