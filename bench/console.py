#!/usr/bin/env python3
"""The console's first load: Cloudlet's web console against PocketBase 0.40.6's admin UI, side by
side in the same run, each in Debian's Chromium driven by playwright-core (bench/console_load.mjs).

Each run starts both anew on fresh data directories, each with its first administrator already
made, so that both pages show their login form:

- Cloudlet: `cloudlet serve --listen … --console-listen …` (the admin token in
  CLOUDLET_ADMIN_TOKEN), the first owner made through `POST /console/api/setup`; the page is
  `http://127.0.0.1:P/console/`, the login input `[data-test=login-email]`;
- PocketBase: `pocketbase superuser upsert`, then `pocketbase serve --http 127.0.0.1:P`; the page
  is `http://127.0.0.1:P/_/`, the login input `#login_identity`.

Then one Chromium (one per run, the side that goes first alternating between runs) loads each
page in a fresh browser context (empty cache): the first load, then a return visit in a new tab
of the same context with the cache warm. For each: requests (`data:` URLs aside), those that
went to the network, bytes on the wire (CDP `Network.loadingFinished` encodedDataLength, headers
included), the bodies as sent and uncompressed, whether each JS and CSS response was compressed,
and the times to DOMContentLoaded and to the login input being visible (see console_load.mjs).

Every figure, the ratios too, is the median of the runs with their spread. Writes
bench/results/console.json and the table between the `console` markers in docs/performance.md.
Runs nothing from cargo: it measures the binary it is given (by default target/debug/cloudlet).
"""

import argparse
import contextlib
import datetime
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import ROOT, fold, heading, meta, parse_args, publish  # noqa: E402
from data import pocketbase  # noqa: E402

# Issue's targets for Cloudlet's console: the whole first load.
TARGETS = {"requests": 6, "kb": 150}
KB = 1000
OWNER = {"email": "owner@bench.io", "name": "Bench Owner", "password": "seven quiet lanterns drift north"}
SELECTORS = {"cloudlet": "[data-test=login-email]", "pocketbase": "#login_identity"}


def free_ports(count):
    """Ports nobody listens on: all held open at once so that they differ, then let go."""
    probes = [socket.socket() for _ in range(count)]
    for probe in probes:
        probe.bind(("127.0.0.1", 0))
    ports = [probe.getsockname()[1] for probe in probes]
    for probe in probes:
        probe.close()
    return ports


def answers(port, path):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False


class Cloudlet:
    def __init__(self, process, api_port, console_port, token, cookie):
        self.process, self.api_port, self.console_port = process, api_port, console_port
        self.token, self.cookie = token, cookie


@contextlib.contextmanager
def cloudlet(binary, config_text="", log=None):
    """`cloudlet serve` with its console listener on a fresh data directory, its first owner
    made; yields a `Cloudlet` with its ports, the admin token and the session cookie."""
    api_port, console_port = free_ports(2)
    data = tempfile.mkdtemp(prefix="cloudlet-bench-console-")
    config = os.path.join(data, "bench.toml")
    with open(config, "w") as f:
        f.write(config_text)
    token = secrets.token_hex(20)  # 40 characters: the server wants 32 or more
    listen = f"127.0.0.1:{console_port}"
    env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=token, CLOUDLET_LOG_LEVEL="warn", CLOUDLET_CONSOLE_LISTEN=listen)
    output = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", os.path.join(data, "data"), "--listen", f"127.0.0.1:{api_port}",
         "--console-listen", listen, "--config", config],
        env=env, stdout=output, stderr=output)
    try:
        deadline = time.time() + 60
        while not (answers(api_port, "/readyz") and answers(console_port, "/console/")):
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"{binary} did not start (exit {process.poll()})")
            time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", console_port, timeout=30)
        conn.request("POST", "/console/api/setup", body=json.dumps({"admin_token": token, **OWNER}),
                     headers={"content-type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST /console/api/setup: {response.status} {body[:300]!r}")
        cookies = [c.split(";", 1)[0].strip() for c in response.headers.get_all("set-cookie") or []]
        cookie = next((c for c in cookies if c.startswith("cloudlet_console=")), None)
        if not cookie:
            raise RuntimeError(f"POST /console/api/setup set no cloudlet_console cookie: {cookies}")
        yield Cloudlet(process, api_port, console_port, token, cookie)
    finally:
        process.terminate()
        process.wait(timeout=60)
        if log:
            output.close()
        shutil.rmtree(data, ignore_errors=True)


def browse(args, targets):
    """One Chromium loading each target (console_load.mjs); its JSON."""
    settings = {"modules": args.modules, "chromium": args.chromium, "targets": targets}
    out = subprocess.run(["node", os.path.join(ROOT, "bench/console_load.mjs"), json.dumps(settings)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def run(args, number):
    with cloudlet(args.binary, log=args.log) as server:
        console_port = server.console_port
        (pb_port,) = free_ports(1)
        with pocketbase(args.pocketbase, pb_port):
            targets = [
                {"name": "cloudlet", "url": f"http://127.0.0.1:{console_port}/console/",
                 "selector": SELECTORS["cloudlet"]},
                {"name": "pocketbase", "url": f"http://127.0.0.1:{pb_port}/_/",
                 "selector": SELECTORS["pocketbase"]},
            ]
            if number % 2 == 0:  # alternate which side the browser loads first
                targets.reverse()
            seen = browse(args, targets)
    c, p = seen["cloudlet"], seen["pocketbase"]
    for side in (c, p):
        if side["first"]["failed"] or side["repeat"]["failed"]:
            raise RuntimeError(f"failed requests: {json.dumps(side['assets'])}")
    return {
        "cloudlet": c,
        "pocketbase": p,
        "ratios": {
            "first_requests": ratio(c["first"]["requests"], p["first"]["requests"]),
            "first_wire_bytes": ratio(c["first"]["wire_bytes"], p["first"]["wire_bytes"]),
            "first_uncompressed_bytes": ratio(c["first"]["uncompressed_bytes"], p["first"]["uncompressed_bytes"]),
            "first_login_visible": ratio(c["first"]["login_visible_ms"], p["first"]["login_visible_ms"]),
            "repeat_wire_bytes": ratio(c["repeat"]["wire_bytes"], p["repeat"]["wire_bytes"]),
        },
    }


# ---- the table ------------------------------------------------------------------------------

def spread_of(section, key, value):
    spread = section.get("spread", {}).get(key)
    if spread and value:
        deviation = max(spread["max"] - value, value - spread["min"]) / value
        return f" ±{deviation:.1%}"
    return ""


def num(section, key, unit=""):
    """`section[key]` with ± the largest deviation of a run from the median (as common.figure)."""
    value = section[key]
    return f"{value:,}{unit}{spread_of(section, key, value)}"


def kb(section, key):
    value = section[key]
    return f"{value / KB:,.1f} KB{spread_of(section, key, value)}"


def times(section, key):
    value = section[key]
    return "?" if value is None else f"{value:,.0f} ms{spread_of(section, key, value)}"


def encodings(side):
    """How each JS and CSS response of the first load came: "2 of 2 (gzip)"."""
    first = side["first"]
    used = sorted({a["content_encoding"] or "none" for a in side["assets"]["first"]
                   if a["type"] in ("Script", "Stylesheet") and not a["from_cache"] and a["uncompressed_bytes"]})
    return f"{first['js_css_compressed']} of {first['js_css']} ({', '.join(used)})"


def table(r):
    c, p, m, q = r["cloudlet"], r["pocketbase"], r["meta"], r["ratios"]
    cf, pf, cr, pr = c["first"], p["first"], c["repeat"], p["repeat"]
    requests_met = cf["requests"] <= TARGETS["requests"]
    bytes_met = cf["wire_bytes"] <= TARGETS["kb"] * KB
    return "\n".join([
        heading(m) + f"; `{m['binary']}` built {m['binary_built']} (console files {', '.join(m['console_assets'])}); "
        f"PocketBase {m['pocketbase']}; {m['chromium']} (playwright-core), a fresh browser context "
        "per side and run, the client and both servers on the same machine. KB = 1,000 bytes.",
        "",
        "| the console's page, with its login form | Cloudlet | PocketBase | Cloudlet / PocketBase "
        "| the issue's target for Cloudlet |",
        "|---|---|---|---|---|",
        f"| first load (empty cache): requests | {num(cf, 'requests')} | {num(pf, 'requests')} "
        f"| {num(q, 'first_requests', '×')} | ≤ {TARGETS['requests']}: {'met' if requests_met else '**not met**'} |",
        f"| … bytes on the wire (CDP encodedDataLength: bodies as sent and response headers) "
        f"| {kb(cf, 'wire_bytes')} | {kb(pf, 'wire_bytes')} | {num(q, 'first_wire_bytes', '×')} "
        f"| ≤ {TARGETS['kb']} KB compressed: {'met' if bytes_met else '**not met**'} |",
        f"| … of which bodies as sent | {kb(cf, 'body_bytes')} | {kb(pf, 'body_bytes')} | | |",
        f"| … bodies uncompressed | {kb(cf, 'uncompressed_bytes')} | {kb(pf, 'uncompressed_bytes')} "
        f"| {num(q, 'first_uncompressed_bytes', '×')} | |",
        f"| … JS and CSS responses compressed | {encodings(c)} | {encodings(p)} | | all |",
        f"| … DOMContentLoaded | {times(cf, 'dom_content_loaded_ms')} | {times(pf, 'dom_content_loaded_ms')} "
        "| | |",
        f"| … login input visible | {times(cf, 'login_visible_ms')} | {times(pf, 'login_visible_ms')} "
        f"| {num(q, 'first_login_visible', '×')} | reported |",
        f"| return visit (new tab, same context, cache warm): requests that went to the network "
        f"| {num(cr, 'network_requests')} of {num(cr, 'requests')} | {num(pr, 'network_requests')} of "
        f"{num(pr, 'requests')} | | |",
        f"| … bytes on the wire | {kb(cr, 'wire_bytes')} | {kb(pr, 'wire_bytes')} "
        f"| {num(q, 'repeat_wire_bytes', '×')} | |",
        f"| … login input visible | {times(cr, 'login_visible_ms')} | {times(pr, 'login_visible_ms')} | | |",
    ])


def assets_table(side, name):
    rows = [f"{name}, first load / return visit:"]
    repeat = {a["path"]: a for a in side["assets"]["repeat"]}
    for a in side["assets"]["first"]:
        again = repeat.get(a["path"])
        later = "—" if again is None else ("cache" if again["from_cache"] else f"network {again['wire_bytes']:,} B")
        rows.append(f"  {a['status']} {a['path'][:70]:<70} {a['type'] or '?':<10} {a['wire_bytes']:>9,} B wire "
                    f"{a['uncompressed_bytes']:>9,} B raw {a['content_encoding'] or '-':<5} | {later}")
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/debug/cloudlet"))
    parser.add_argument("--pocketbase", default=os.path.join(ROOT, "bench/.tools/venv/bin/pocketbase"))
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--modules", default=os.path.join(ROOT, "crates/console/e2e/node_modules"),
                        help="a node_modules holding playwright-core")
    parser.add_argument("--log", help="append Cloudlet's output to this file")
    parser.add_argument("--no-docs", action="store_true",
                        help="print only: write neither bench/results/console.json nor docs/performance.md")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/console.json"))
    args = parse_args(parser)
    if not os.access(args.binary, os.X_OK):
        parser.error(f"no binary at {args.binary} (this bench never builds: pass --binary)")

    runs = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"== run {number} of {args.runs}", file=sys.stderr)
        runs.append(run(args, number))
    result = fold(runs)
    version = subprocess.run([args.pocketbase, "--version"], capture_output=True, text=True).stdout.split()
    chromium = subprocess.run([args.chromium, "--version"], capture_output=True, text=True).stdout.strip()
    binary = os.path.relpath(os.path.abspath(args.binary), ROOT)
    # The binary may hold a working tree's console files rather than the commit's: say when it
    # was built, and which files it served.
    built = datetime.datetime.fromtimestamp(os.path.getmtime(args.binary), datetime.timezone.utc)
    result["meta"] = meta(
        args.runs, binary=binary, binary_built=built.isoformat(timespec="seconds"), pocketbase=(version or ["?"])[-1], chromium=chromium or "Chromium",
        console_assets=[a["path"].rsplit("/", 1)[-1] for a in result["cloudlet"]["assets"]["first"]
                        if "/assets/" in a["path"]],
        order="each run loads both pages in one Chromium, the side that goes first alternating")

    print(assets_table(result["cloudlet"], "Cloudlet"), file=sys.stderr)
    print(assets_table(result["pocketbase"], "PocketBase"), file=sys.stderr)
    text = table(result)
    publish("console", result, text, args.out, args.no_docs)


if __name__ == "__main__":
    main()
