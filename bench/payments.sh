#!/usr/bin/env bash
# The payments benchmark: WeChat Pay API v3 callbacks on Cloudlet's notify route against
# `cloudlet emulator`'s merchant platform: more than 10,000 forged or mismatched callbacks
# against real orders (every one must be refused); the latency and throughput of genuine
# pre-signed callbacks at 200 concurrent, beside a plain Node.js merchant backend
# (bench/peers/payments/server.mjs, node:crypto only, no npm dependency); orders whose
# notification was lost, found by the server's checks; a shuffled stream of duplicated and
# irrelevant callbacks with a `kill -9` of the server halfway; a day's trade bill of 100,000
# lines reconciled with the orders (the admin's reconciliation request timed; every difference
# injected into the bill, one of each kind the emulator can make, must be reported, and the
# count must be exact). Builds release; installs, if missing: OpenSSL (apt: openssl, makes the
# merchant's RSA key), Node.js (apt: nodejs). Then runs bench/payments.py. Results:
# bench/results/payments.json and the `payments` section of docs/performance.md. A measured run
# holds /tmp/bench-running while it runs.
#
#   bench/payments.sh                 # 3 runs, about 3½ minutes each (2½ of them waiting for
#                                     # lost callbacks): 10 minutes, plus the release build
#   bench/payments.sh --quick         # smoke run, under half a minute, writes nothing
#   bench/payments.sh --runs 1        # any option of bench/payments.py (--help lists them)
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/tools.sh

if ! command -v openssl >/dev/null; then
  echo "== installing OpenSSL (apt)"
  apt-get update && apt-get install -y openssl
fi
if ! command -v node >/dev/null; then
  echo "== installing Node.js (apt)"
  apt-get update && apt-get install -y nodejs
fi

exec python3 bench/payments.py --binary target/release/cloudlet "$@"
