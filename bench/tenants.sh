#!/usr/bin/env bash
# The tenants benchmark: builds release, installs oha if missing, runs bench/tenants.py, which
# starts the server, creates 10,000 apps and measures memory and first-request latency.
# Results: bench/results/tenants.json and the table in docs/performance.md.
#
#   bench/tenants.sh                 # 10,000 apps
#   APPS=1000 bench/tenants.sh       # a quicker run
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
python3 bench/tenants.py --binary target/release/cloudlet --apps "${APPS:-10000}" "$@"
