#!/usr/bin/env bash
# The functions benchmark: cold starts inside Cloudlet, warm invocations against workerd and
# Node.js. Builds release, installs oha (crates.io), Node.js and npm (apt) and workerd (npm,
# bench/peers) if missing, then runs bench/functions.py. Results: bench/results/functions.json
# and docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Node.js (one of the peers) and npm (installs workerd)"
  apt-get update && apt-get install -y nodejs npm
fi
# npm keeps a copy of the lock file it installed in node_modules: install again when ours changed.
if [ bench/peers/package-lock.json -nt bench/peers/node_modules/.package-lock.json ]; then
  echo "== installing workerd (npm) into bench/peers"
  (cd bench/peers && npm ci --no-audit --no-fund)
fi
python3 bench/functions.py --binary target/release/cloudlet "$@"
