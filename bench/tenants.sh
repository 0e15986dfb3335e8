#!/usr/bin/env bash
# The tenants benchmark: builds a release binary, installs the load generator (oha, from the
# crate registry) if it is missing, then runs bench/tenants.py, which starts the server, creates
# 10,000 apps and measures memory and first-request latency. Results: bench/results/tenants.json
# and the table in docs/performance.md.
#
#   bench/tenants.sh                 # 10,000 apps
#   APPS=1000 bench/tenants.sh       # a quicker run
set -euo pipefail
cd "$(dirname "$0")/.."

OHA_VERSION=1.16.0
TOOLS="$PWD/bench/.tools"
if ! command -v oha >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/oha" ]; then
  echo "== installing oha $OHA_VERSION into $TOOLS"
  cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH"

echo "== building cloudlet (release)"
cargo build --release --locked -p cloudlet

python3 bench/tenants.py --binary target/release/cloudlet --apps "${APPS:-10000}" "$@"
