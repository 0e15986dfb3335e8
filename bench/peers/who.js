// The benchmark's function for Cloudflare's workerd: read who calls (the subject of the bearer
// token, decoded but, unlike Cloudlet, not verified) and answer JSON. Same work as Cloudlet's
// `export default async (event, ctx) => ({ user: ctx.auth.id, n: event.n ?? 0 })`, less the
// signature check.
export default {
  async fetch(request) {
    const event = await request.json();
    const token = (request.headers.get("authorization") ?? "").replace(/^Bearer /, "");
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return Response.json({ user: payload.sub, n: event.n ?? 0 });
  },
};
