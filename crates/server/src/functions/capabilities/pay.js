// ctx.pay: createOrder({ amount_fen, description, user, out_trade_no, metadata, key,
// expires_in_secs }) answers a promise of the order with `payment` (what wx.requestPayment
// takes); order(id) the order with its refunds and events; close(id) closes an unpaid order;
// refund(id, { amount_fen, out_refund_no, reason }) answers the refund, `pending` until the
// platform confirms it. Amounts are integer fen.
export default (host) => {
  const call = (args) => host.call(args).then((reply) => reply.value);
  return {
    ctx: {
      pay: Object.freeze({
        createOrder: (order) => call({ op: "create_order", order }),
        order: (id) => call({ op: "order", id: String(id) }),
        close: (id) => call({ op: "close", id: String(id) }),
        refund: (id, refund) => call({ op: "refund", id: String(id), refund }),
      }),
    },
  };
};
