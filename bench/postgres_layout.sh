#!/usr/bin/env bash
# The PostgreSQL layout benchmark: what a schema per app costs at 10,000 apps (catalog size,
# memory per PostgreSQL connection, first request to a cold app), with SQLite beside it.
# Installs PostgreSQL (apt) if missing, builds release, then runs bench/postgres_layout.py, which
# starts a throwaway PostgreSQL server on a temporary directory and a loopback port.
# Results: bench/results/postgres_layout.json and the tables in docs/performance.md.
#
#   bench/postgres_layout.sh                # 10,000 apps (about 4 minutes on 2 CPUs, after the build)
#   bench/postgres_layout.sh --apps 2000    # a quicker run
#   bench/postgres_layout.sh --quick        # smoke run: 200 apps, under a minute, writes nothing
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "== installing PostgreSQL (apt)"
  apt-get update && apt-get install -y postgresql
fi
echo "== building cloudlet (release)"
cargo build --release --locked -p cloudlet
python3 bench/postgres_layout.py --binary target/release/cloudlet "$@"
