const app = getApp();

/** Fen as yuan, for display: 1200 → "12.00". */
const yuan = (fen) => `${Math.floor(fen / 100)}.${String(fen % 100).padStart(2, "0")}`;

Page({
  data: { products: [], sales: [], busy: "", message: "", error: "" },

  async onShow() {
    try {
      // wx.login → a code → a Cloudlet session (WeChat Pay needs the buyer's openid).
      if (!app.cloud.auth.isLoggedIn()) await app.cloud.auth.login();
      await this.refresh();
    } catch (error) {
      this.setData({ error: `${error.message} (${error.code})` });
    }
  },

  async refresh() {
    const products = await app.cloud.db
      .collection("products")
      .where({ on_sale: true })
      .orderBy("name")
      .get();
    const sales = await app.cloud.db.collection("sales").orderBy("created_at", "desc").limit(20).get();
    this.setData({
      products: products.items.map((p) => ({ ...p, price: yuan(p.price_fen) })),
      sales: sales.items.map((s) => ({ ...s, paid: yuan(s.amount_fen) })),
      error: "",
    });
  },

  /**
   * Buys one of a product: the server prices the order (functions/price), WeChat's payment
   * sheet takes the money, and the server confirms with WeChat Pay before the page says "paid";
   * the sale itself is recorded by functions/record when the payment's notification arrives.
   */
  async buy(event) {
    const { id } = event.currentTarget.dataset;
    this.setData({ busy: id, message: "", error: "" });
    // One key per purchase: a double tap, or paying again after closing the sheet, is the same
    // order; the next purchase of the product is a new one.
    this.keys = this.keys || {};
    this.keys[id] = this.keys[id] || `buy-${id}-${Date.now()}`;
    try {
      const order = await app.cloud.pay.request({ data: { product: id, qty: 1 }, key: this.keys[id] });
      if (order.state === "created") {
        this.setData({ message: "Payment pending" });
      } else {
        delete this.keys[id];
        this.setData({ message: order.state === "paid" ? "Paid, thank you!" : `Order ${order.state}` });
      }
      await this.refresh();
    } catch (error) {
      if (error.code === "payment_cancelled") this.setData({ message: "Payment cancelled" });
      else this.setData({ error: `${error.message} (${error.code})` });
    } finally {
      this.setData({ busy: "" });
    }
  },
});
