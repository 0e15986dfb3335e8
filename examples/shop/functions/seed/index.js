// Adds three products to an empty shop: `cloudlet fn call shop seed` with the app's key.
export default async function (event, ctx) {
  if (!ctx.auth.admin) throw new Error("only the app's admin seeds the shop");
  const products = ctx.admin.db.collection("products");
  const existing = await products.list({ count: true, limit: 1 });
  if (existing.total > 0) return { added: 0 };
  for (const product of [
    { name: "Green tea", price_fen: 1200 },
    { name: "Oolong", price_fen: 1800 },
    { name: "Tea cup", price_fen: 3500 },
  ]) {
    await products.add(product);
  }
  return { added: 3 };
}
