// ctx.realtime: publish(channel, data) and send(userId, data) answer a promise of { seq } (the
// message's number in the channel, or in the user's direct messages); presence(channel,
// { after, limit }) answers { count, members: [{ member, user, state }], next }.
export default (host) => {
  const call = (request) => host.call(request).then((reply) => reply.value);
  const data = (value) => (value === undefined ? null : value);
  return {
    ctx: {
      realtime: Object.freeze({
        publish: (channel, value) =>
          call({ op: 'publish', channel: String(channel), data: data(value) }),
        send: (user, value) => call({ op: 'send', user: String(user), data: data(value) }),
        presence: (channel, options = {}) =>
          call({
            op: 'presence',
            channel: String(channel),
            after: options.after === undefined ? null : String(options.after),
            limit: options.limit === undefined ? null : Number(options.limit),
          }),
      }),
    },
  };
};
