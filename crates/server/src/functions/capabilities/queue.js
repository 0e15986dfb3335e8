// ctx.queue: send(name, payload, { delay, key }) answers a promise of { id, duplicate };
// sendBatch(name, [{ payload, delay, key }]) sends up to 100 in one transaction and answers the
// list. `delay` is in seconds; `key` makes a repeated send a no-op within the queue's window.
export default (host) => {
  const message = (payload, options = {}) => {
    const out = { payload: payload === undefined ? null : payload };
    if (options.delay !== undefined) out.delay_secs = Number(options.delay);
    if (options.key !== undefined) out.key = String(options.key);
    return out;
  };
  const send = (queue, messages) =>
    host.call({ queue: String(queue), messages }).then((reply) => reply.value.sent);
  return {
    ctx: {
      queue: Object.freeze({
        send: (queue, payload, options) =>
          send(queue, [message(payload, options)]).then((sent) => sent[0]),
        sendBatch: (queue, messages) =>
          send(
            queue,
            Array.from(messages, (m) => message(m && m.payload, m || {})),
          ),
      }),
    },
  };
};
