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
