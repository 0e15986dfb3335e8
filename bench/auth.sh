#!/usr/bin/env bash
# The auth benchmark: builds release, installs oha if missing, runs bench/auth.py.
# Results: bench/results/auth.json and the table in docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/tools.sh
python3 bench/auth.py --binary target/release/cloudlet "$@"
