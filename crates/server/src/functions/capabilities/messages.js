// ctx.messages: send({ to, template_id, data, page, miniprogram_state, lang, provider, key })
// answers a promise of { id, duplicate } once the message is queued; WeChat is called from the
// queue, with retries. It rejects with code no_subscription when the user has no grant left.
export default (host) => ({
  ctx: {
    messages: Object.freeze({
      send: (message) => host.call(message).then((reply) => reply.value),
    }),
  },
});
