#!/usr/bin/env bash
# Several nodes on one PostgreSQL database: how soon a rule changed on one node holds on
# another, and what keeping nodes in step costs the writes (bench/nodes.py). Installs oha (crates
# registry) and PostgreSQL (apt) if missing, builds release. Results: bench/results/nodes.json
# and the `nodes` section of docs/performance.md.
#
#   bench/nodes.sh                     # 3 runs
#   bench/nodes.sh --runs 1 --no-docs  # smoke run, prints only
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "== installing PostgreSQL (apt)"
  apt-get update && apt-get install -y postgresql
fi
exec python3 bench/nodes.py --binary target/release/cloudlet "$@"
