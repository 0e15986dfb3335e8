#!/usr/bin/env bash
# The queues benchmark: Cloudlet's durable queues against BullMQ on Redis, side by side in the
# same run, both answering a send only once it is on disk (Cloudlet's default durability `full`;
# Redis with `appendonly yes`, `appendfsync always`). Builds release; installs, if missing: Redis
# (apt: redis-server; the benchmark starts its own throwaway server on a loopback port),
# Node.js and npm (apt), BullMQ (npm ci from bench/peers/bullmq into bench/.tools/bullmq). Then
# runs bench/queues.py. Results: bench/results/queues.json and the `queues` section of
# docs/performance.md.
#
# With --database postgres: Cloudlet on PostgreSQL against graphile-worker on the same throwaway
# PostgreSQL server (installs, if missing: PostgreSQL (apt: postgresql), graphile-worker (npm ci
# from bench/peers/graphile-worker into bench/.tools/graphile-worker)). Results:
# bench/results/queues_postgres.json and the `queues-postgres` section.
#
#   bench/queues.sh                              # 3 runs
#   bench/queues.sh --quick                      # smoke run, a few minutes, writes nothing
#   bench/queues.sh --database postgres          # on PostgreSQL, against graphile-worker
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/tools.sh

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing Redis (apt: redis-server)"
  apt-get update && apt-get install -y redis-server
fi
# Debian's package starts a system service on port 6379; the benchmark does not use it.

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing Node.js and npm (apt)"
  apt-get update && apt-get install -y nodejs npm
fi
# BullMQ and ioredis, exactly as locked in bench/peers/bullmq; again whenever the lock file
# changed (npm keeps a copy of the lock it installed in node_modules).
bullmq=bench/.tools/bullmq
if [ bench/peers/bullmq/package-lock.json -nt "$bullmq/node_modules/.package-lock.json" ]; then
  echo "== installing BullMQ (npm ci, bench/peers/bullmq) into $bullmq"
  mkdir -p "$bullmq"
  cp bench/peers/bullmq/package.json bench/peers/bullmq/package-lock.json "$bullmq/"
  (cd "$bullmq" && npm ci --no-audit --no-fund)
fi

if [[ " $* " == *" --database postgres "* || " $* " == *" --database=postgres "* ]]; then
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "== installing PostgreSQL (apt: postgresql)"
    apt-get update && apt-get install -y postgresql
  fi
  graphile=bench/.tools/graphile-worker
  if [ bench/peers/graphile-worker/package-lock.json -nt "$graphile/node_modules/.package-lock.json" ]; then
    echo "== installing graphile-worker (npm ci, bench/peers/graphile-worker) into $graphile"
    mkdir -p "$graphile"
    cp bench/peers/graphile-worker/package.json bench/peers/graphile-worker/package-lock.json "$graphile/"
    (cd "$graphile" && npm ci --no-audit --no-fund)
  fi
fi

exec python3 bench/queues.py --binary target/release/cloudlet --bullmq-modules "$bullmq/node_modules" "$@"
