// Prices a client's order (`cloud.pay.request({ data: { product, qty } })`): the amount is the
// product's price from the database, never the client's. Throwing refuses the order.
export default async function (event, ctx) {
  const { product, qty = 1 } = event.data || {};
  if (typeof product !== "string" || !Number.isInteger(qty) || qty < 1 || qty > 10) {
    throw new Error("order 1 to 10 of a product");
  }
  let row = null;
  try {
    row = await ctx.db.collection("products").get(product);
  } catch (error) {
    if (error.code !== "record_not_found") throw error;
  }
  if (!row || !row.on_sale) throw new Error("no such product on sale");
  return {
    amount_fen: row.price_fen * qty,
    description: qty === 1 ? row.name : `${row.name} x${qty}`,
    metadata: { product: row.id, qty },
  };
}
