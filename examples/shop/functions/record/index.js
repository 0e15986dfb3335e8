// Records a sale when its order is paid, and its refunds. Deliveries come at least once: the
// paid event's id is unique in `sales`, so a repeated delivery adds nothing.
export default async function (event, ctx) {
  // Any logged-in user may call a function by name: only the payment events may record sales.
  if (ctx.trigger !== "pay") throw new Error("recorded only on payment events");
  // Triggers run as the admin; ctx.admin.db says so (no client may write sales).
  const sales = ctx.admin.db.collection("sales");
  const order = event.order;
  if (event.event === "pay.paid") {
    try {
      await sales.add({
        order_id: order.id,
        buyer: order.user_id,
        product: order.metadata.product,
        qty: order.metadata.qty,
        amount_fen: order.amount_fen,
        event_id: event.event_id,
      });
    } catch (error) {
      if (error.code !== "unique_violation") throw error;
    }
    return;
  }
  // pay.refunded: the order's refunded total, as the refund left it. Order ids are `ord_` and
  // hex digits; anything else is refused before it reaches the filter.
  if (!/^ord_[0-9a-f]+$/.test(order.id)) throw new Error("not an order id");
  const found = await sales.list({ filter: `order_id = "${order.id}"`, limit: 1 });
  if (found.items.length > 0) {
    await sales.update(found.items[0].id, { refunded_fen: order.refunded_fen });
  }
}
