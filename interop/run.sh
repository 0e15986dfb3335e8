#!/usr/bin/env bash
# The emulator's signatures against the platforms' own SDKs: Alipay's `alipay-sdk` and the
# WeChat Pay API v3 SDK `wechatpay-axios-plugin` (both from npm, pinned in package-lock.json).
# Starts `$CLOUDLET_BIN emulator` on a free loopback port, runs `node --test` against it, and
# stops it. Needs node/npm and openssl; installs the rest (npm ci) itself.
#
#   CLOUDLET_BIN=target/debug/cloudlet interop/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

CLOUDLET_BIN="${CLOUDLET_BIN:-target/debug/cloudlet}"
CLOUDLET_BIN="$(cd "$(dirname "$CLOUDLET_BIN")" && pwd)/$(basename "$CLOUDLET_BIN")"
[ -x "$CLOUDLET_BIN" ] || { echo "interop: no cloudlet binary at $CLOUDLET_BIN (cargo build -p cloudlet)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "interop: openssl is needed to make the test keys" >&2; exit 1; }

(cd interop && npm ci --no-audit --no-fund --loglevel=error)

work="$(mktemp -d)"
emulator_pid=""
cleanup() {
  if [ -n "$emulator_pid" ]; then
    kill "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# RSA 2048 keys: the Alipay app's, the WeChat Pay merchant's, and a stranger's for the
# "wrong key" checks. PKCS#8 private keys, SPKI public keys.
mkdir "$work/keys"
for name in alipay-app wechatpay-merchant stranger; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/keys/$name.pem" 2>/dev/null
  openssl pkey -in "$work/keys/$name.pem" -pubout -out "$work/keys/$name.pub.pem"
done

# Port 0: the emulator binds a free port and prints the address it listens on.
"$CLOUDLET_BIN" emulator --listen 127.0.0.1:0 >"$work/emulator.log" 2>&1 &
emulator_pid=$!
url=""
for _ in $(seq 100); do
  url="$(sed -n 's/^Cloudlet emulator is listening on \(http:[^ ]*\).*/\1/p' "$work/emulator.log")"
  [ -n "$url" ] && break
  kill -0 "$emulator_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "interop: the emulator did not start:" >&2
  cat "$work/emulator.log" >&2
  exit 1
fi
echo "interop: emulator at $url"

# TZ: the Alipay SDK writes the request's `timestamp` in local time, which Alipay reads as
# China time (GMT+8); a merchant's server in China runs so, and the emulator checks it.
(cd interop && EMULATOR_URL="$url" INTEROP_KEYS="$work/keys" TZ=Asia/Shanghai \
  node --test test/alipay.test.mjs test/wechatpay.test.mjs)
