# workerd serving bench/peers/who.js; the benchmark sets the address with --socket-addr.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .who)],
  sockets = [(name = "http", address = "127.0.0.1:18741", http = (), service = "main")],
);

const who :Workerd.Worker = (
  modules = [(name = "who.js", esModule = embed "who.js")],
  compatibilityDate = "2024-09-01",
);
