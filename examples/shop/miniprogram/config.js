// Where the server is. In the developer tools, turn off domain checks for local development;
// in production, add the server's HTTPS domain to the mini program's request domains.
module.exports = { server: "http://127.0.0.1:8700", app: "shop" };
