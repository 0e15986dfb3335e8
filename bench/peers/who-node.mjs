// The benchmark's function on a plain Node.js `http` server: the same work as bench/peers/who.js.
import http from "node:http";

const port = Number(process.argv[2] ?? 18742);
http
  .createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      const event = JSON.parse(body || "{}");
      const token = (request.headers.authorization ?? "").replace(/^Bearer /, "");
      const payload = JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString());
      const json = JSON.stringify({ user: payload.sub, n: event.n ?? 0 });
      response.writeHead(200, { "content-type": "application/json" });
      response.end(json);
    });
  })
  .listen(port, "127.0.0.1");
