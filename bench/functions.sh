#!/usr/bin/env bash
# The functions benchmark: cold starts inside Cloudlet, warm invocations against workerd and
# Node.js. Builds release, installs oha (crates.io) and workerd (npm, bench/peers) if missing,
# then runs bench/functions.py. Results: bench/results/functions.json and docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
if [ ! -x bench/peers/node_modules/@cloudflare/workerd-linux-64/bin/workerd ]; then
  echo "== installing workerd (npm) into bench/peers"
  (cd bench/peers && npm ci --no-audit --no-fund)
fi
python3 bench/functions.py --binary target/release/cloudlet "$@"
