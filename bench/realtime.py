#!/usr/bin/env python3
"""Realtime: Cloudlet's WebSocket channels against a plain Node.js `ws` server and PocketBase
0.40.6's realtime (Server-Sent Events), side by side, in the same run.

One Node.js process (bench/realtime.mjs, on npm `ws` as locked in bench/peers/realtime) is the
load client of every side; it is a separate process from the server, and both share the
machine's processors. Each run, on fresh servers:

- connections: as many authenticated sockets as the descriptor limit allows (`ulimit -n`, less
  2,000 for the server's own and the client's: 18,000 under 20,000), opened 256 at a time, each
  subscribed to a personal channel `p:{n}` and a ten-member group channel `g:{n/10}` (1 user per
  ten sockets, dev logins); then one message in each group channel (kept in its history, the
  default 100 messages / 120 s). The connect rate, and the server's RSS growth from before the
  first socket to after the group messages. PocketBase: the same number of SSE clients, each
  subscribing to three topics of a collection with an empty list rule.
- fan-out: one server-side publish (`POST /v1/admin/apps/{app}/realtime/channels/{c}/messages`,
  the same route on the peer) to `--fan-small` (2,000) subscribers of one channel, from the
  publish request to the last subscriber's receipt, `--publishes` times, one at a time; the
  same to `--fan-big` (10,000); then `--window` publishes in flight at once to the 10,000 for
  `--sustain-seconds`: deliveries per second, and messages lost (a gap in some socket's `seq`s,
  or a receipt that never came).
- a slow consumer: one more socket joins the 2,000-subscriber channel and a channel of its own,
  whose channel gets 32 KiB messages (`--flood-rate` a second); the 2,000-subscriber fan-out is
  measured again while it still reads (the control: the flood's own cost on the shared
  processors), then it stops reading, and 4 s later (its buffers have filled) the fan-out is
  measured once more (the slow socket's receipts aside), against the control.
  When (and with which code) the server closed the slow socket, and the server's peak RSS
  growth over the phase.
- resume: a socket in a channel that keeps 2,000 messages leaves, `--resume-messages` are
  published, and after `--absence-seconds` it comes back with `after: {epoch, seq}`: what it
  received, in order, without duplicates or reset, and how long it took (connect included).
- record changes (Cloudlet only, once the sockets above are gone): a collection `todos` under its
  default rules (a user lists only their own records; checked first), `--records-subscribers`
  (1,000) sockets of `--records-users` (100) users subscribed to it, while `--records-writes`
  (2,000; the issue's is 10,000) records are created at `--records-rate` (200) a second, paced,
  each by a random one of the users: from each write's 201 answer to each receipt (p50, p99,
  max; a receipt before the answer counts as 0 ms), deliveries to a socket of another user than
  the writer, writes that did not reach every socket of their writer within 5 s, repeats.
- the two fan-outs again, measured by a client in Rust that takes frames in on one thread
  (crates/cloudlet/examples/realtime_fanout.rs, built by bench/realtime.sh), once the Node.js
  client has closed its sockets (after record changes, for Cloudlet): `--fan-big` new sockets
  of a tenth as many users, the first `--fan-small` of them in the small channel, one untimed
  publish to each channel first. JavaScript's own time per frame is most of what the Node.js
  client measures; this one measures mostly the server (and the kernel), with fewer sockets
  open than the Node.js client's 18,000.

Every figure is the median of the runs with their spread. Writes bench/results/realtime.json
and the `realtime` section of docs/performance.md.
"""

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

from common import (ROOT, TOKEN, Client, figure, fold, heading, meta, parse_args, replace_docs_section, server,
                    wait_ready, write_results)

TARGETS = {"connect_per_sec": 2000, "growth_mb": 180, "fanout_p99_ms": 20, "slow_worse": 0.10,
           "records_p99_ms": 20, "records_wrong": 0}

CONFIG = """
[auth]
logins_per_ip_per_minute = 1000000
logins_per_app_per_minute = 10000000

[realtime]
max_connections_per_app = 1000000
max_connections_per_user = 16

# Few app databases and workers, so that the descriptors go to connections.
[apps]
max_open = 10

[functions]
workers = 4
workers_per_app = 2
reserved_workers = 2
"""

SETTINGS = {
    "channels": {
        "p": {"rules": {"join": "@auth.id != null"}},
        "g": {"rules": {"join": "@auth.id != null"}},
        "f": {"rules": {"join": "@auth.id != null"}},
        "s": {"rules": {"join": "@auth.id != null"}},
        "r": {"rules": {"join": "@auth.id != null"}, "history": {"count": 2000, "age_secs": 600}},
    }
}


def node(mode, settings):
    out = subprocess.run(["node", os.path.join(ROOT, "bench/realtime.mjs"), mode, json.dumps(settings)],
                         capture_output=True, text=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"bench/realtime.mjs {mode} failed ({out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fanout_client(args, port, tokens):
    """The two fan-outs again, measured by a client in Rust that takes frames in on one thread
    (crates/cloudlet/examples/realtime_fanout.rs), once bench/realtime.mjs has closed its
    sockets: its subscribers are new sockets of `tokens`' users."""
    with tempfile.NamedTemporaryFile("w", suffix=".tokens") as f:
        f.write("\n".join(tokens))
        f.flush()
        settings = {"port": port, "app": "rt", "admin_token": TOKEN, "tokens_file": f.name,
                    "small": args.fan_small, "big": args.fan_big, "publishes": args.publishes,
                    "big_publishes": args.big_publishes, "gap_ms": 20}
        out = subprocess.run([args.fanout_client, json.dumps(settings)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{args.fanout_client} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["gaps"] or result["repeats"]:
        raise RuntimeError(f"the Rust client lost or repeated messages: {result}")
    return result


def fanout_users(args):
    return -(-args.fan_big // 10)


def client_settings(args, port, pid, **extra):
    return {"port": port, "server_pid": pid, "modules": args.modules,
            "connections": args.connections, "connect_width": 256, "fan_small": args.fan_small,
            "fan_big": args.fan_big, "publishes": args.publishes, "big_publishes": args.big_publishes,
            "gap_ms": 20, "sustain_seconds": args.sustain_seconds, "window": args.window,
            "flood_rate": args.flood_rate, "slow_wait": args.slow_wait, "fill_seconds": 4,
            "absence_seconds": args.absence_seconds, "resume_messages": args.resume_messages,
            "records_subscribers": args.records_subscribers, "records_users": args.records_users,
            "records_writes": args.records_writes, "records_rate": args.records_rate, **extra}


def run_cloudlet(args):
    with server(args.binary, args.port, CONFIG, log=args.log) as process:
        admin = Client(args.port)
        admin.json("POST", "/v1/admin/apps", {"name": "rt"}, expect=201)
        status, body = admin.call("PUT", "/v1/admin/apps/rt/auth/providers/dev", {"enabled": True})
        if status not in (200, 201):
            raise RuntimeError(f"dev provider: {status} {body[:200]!r}")
        admin.json("PUT", "/v1/admin/apps/rt/realtime", SETTINGS)
        result = node("cloudlet", client_settings(args, args.port, process.pid, app="rt", token=TOKEN))
        users = Client(args.port, bearer=None)
        tokens = [users.json("POST", "/v1/apps/rt/auth/sessions", {"provider": "dev", "user": f"r{i}"},
                             expect=201)["access_token"] for i in range(fanout_users(args))]
        result["fanout_rust"] = fanout_client(args, args.port, tokens)
        return result


@contextlib.contextmanager
def peer(args, port, secret):
    process = subprocess.Popen(["node", os.path.join(ROOT, "bench/peers/realtime/server.mjs"), str(port), secret,
                                args.modules], stdout=subprocess.DEVNULL, stderr=sys.stderr)
    try:
        wait_ready(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def run_peer(args):
    secret = secrets.token_hex(16)
    port = args.port + 1
    with peer(args, port, secret) as process:
        result = node("peer", client_settings(args, port, process.pid, app="rt", token=TOKEN, secret=secret))
        result["fanout_rust"] = fanout_client(args, port, [peer_token(secret, f"r{i}")
                                                          for i in range(fanout_users(args))])
        return result


def peer_token(secret, user):
    """A token the peer accepts: as bench/realtime.mjs makes them, an HMAC-SHA256 signature
    over the claims."""
    claims = json.dumps({"sub": user, "exp": int(time.time()) + 3600}, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
    mac = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def run_pocketbase(args):
    from data import PB_ADMIN, pocketbase
    port = args.port + 2
    with pocketbase(args.pocketbase, port) as process:
        client = Client(port, bearer=None)
        su_token = client.json("POST", "/api/collections/_superusers/auth-with-password",
                               {"identity": PB_ADMIN[0], "password": PB_ADMIN[1]})["token"]
        Client(port, bearer=su_token).json("POST", "/api/collections", {
            "name": "msgs", "type": "base", "fields": [{"name": "text", "type": "text"}],
            "listRule": "", "viewRule": "", "createRule": "",
        })
        return node("pocketbase", client_settings(args, port, process.pid))


def side_by_side(args):
    print("== Cloudlet", file=sys.stderr)
    c = run_cloudlet(args)
    print("== Node.js ws", file=sys.stderr)
    p = run_peer(args)
    pb = None
    if not args.no_pocketbase:
        print("== PocketBase", file=sys.stderr)
        pb = run_pocketbase(args)
    for side in (c, p):
        for key in ("errors", "closes"):
            side[key] = json.dumps(side[key], sort_keys=True)
        slow = side["slow_consumer"]
        slow["close_code"] = str(slow["close_code"])
        slow["p99_worse"] = round(slow["p99_ms"] / side["fanout_small"]["p99_ms"] - 1, 3)
        slow["p99_worse_control"] = round(slow["p99_ms"] / slow["control_p99_ms"] - 1, 3)
    ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
    results = {
        "cloudlet": c, "peer": p, "pocketbase": pb,
        "ratios": {
            "connect_per_sec": ratio(c["connections"]["per_sec"], p["connections"]["per_sec"]),
            "growth_mb": ratio(c["connections"]["growth_mb"], p["connections"]["growth_mb"]),
            "fanout_small_p99": ratio(c["fanout_small"]["p99_ms"], p["fanout_small"]["p99_ms"]),
            "fanout_big_p99": ratio(c["fanout_big"]["p99_ms"], p["fanout_big"]["p99_ms"]),
            "fanout_rust_small_p99": ratio(c["fanout_rust"]["fanout_small"]["p99_ms"],
                                           p["fanout_rust"]["fanout_small"]["p99_ms"]),
            "fanout_rust_big_p99": ratio(c["fanout_rust"]["fanout_big"]["p99_ms"],
                                         p["fanout_rust"]["fanout_big"]["p99_ms"]),
            "deliveries_per_sec": ratio(c["sustained"]["deliveries_per_sec"], p["sustained"]["deliveries_per_sec"]),
            "resume_ms": ratio(c["resume"]["resume_ms"], p["resume"]["resume_ms"]),
        },
    }
    if pb:
        results["ratios"]["growth_mb_pocketbase"] = ratio(c["connections"]["growth_mb"], pb["connections"]["growth_mb"])
        results["ratios"]["connect_per_sec_pocketbase"] = ratio(c["connections"]["per_sec"],
                                                                pb["connections"]["per_sec"])
    return results


def harmonize(runs):
    """Makes the runs foldable (common.fold wants the same keys, and numbers or the same thing,
    in every run): a value that is not a number in every run becomes the list of every run's."""
    if all(isinstance(r, dict) for r in runs):
        keys = list(dict.fromkeys(k for r in runs for k in r))
        out = [{} for _ in runs]
        for k in keys:
            for o, v in zip(out, harmonize([r.get(k) for r in runs])):
                o[k] = v
        return out
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in runs):
        return runs
    if all(r == runs[0] for r in runs):
        return runs
    return [json.dumps(runs)] * len(runs)


def versions(args):
    ws = json.load(open(os.path.join(args.modules, "ws/package.json")))["version"]
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    pb = os.popen(f"{args.pocketbase} --version 2>/dev/null").read().strip().split()[-1:] or ["?"]
    return {"ws": ws, "node": node_version, "pocketbase": pb[0]}


def met(ok):
    return "met" if ok else "**not met**"


def mb(kib):
    return round(kib / 1024, 1)


def mb_figure(section, key):
    """`figure` of a KiB figure, in MB."""
    spread = section.get("spread", {}).get(key)
    converted = {"v": mb(section[key])}
    if spread:
        converted["spread"] = {"v": {"min": mb(spread["min"]), "max": mb(spread["max"])}}
    return figure(converted, "v", " MB")


def record_rows(rec, t):
    """The rows of the record changes, which only Cloudlet has."""
    return [
        f"| record changes, {rec['subscribers']:,} subscribers (owner rule) of {rec['users']:,} users, "
        f"{rec['rate']:,} writes/s: change (201 answer) to delivery, p99 "
        f"| {figure(rec, 'p99_ms', ' ms')} (p50 {figure(rec, 'p50_ms', ' ms')}, max {figure(rec, 'max_ms', ' ms')}; "
        f"{rec['deliveries']:,} deliveries, {figure(rec, 'writes_per_sec', ' writes/s')}) | n/a | | "
        f"| ≤ {t['records_p99_ms']} ms: {met(rec['p99_ms'] <= t['records_p99_ms'])} |",
        f"| deliveries to a user who may not list the record (of {rec['writes']:,} writes); writes lost, repeats "
        f"| {rec['wrong']:,} ({rec['lost']:,} lost, {rec['duplicates']:,} duplicates) | n/a | | "
        f"| {t['records_wrong']}: {met(rec['wrong'] <= t['records_wrong'])} |",
    ]


def fanout_rust_rows(c, p, ratio, m, t):
    """The two fan-outs as the Rust client measured them; the issue's target is judged here."""
    cs, ps = c["fanout_rust"]["fanout_small"], p["fanout_rust"]["fanout_small"]
    cb, pb = c["fanout_rust"]["fanout_big"], p["fanout_rust"]["fanout_big"]
    return [
        f"| the same, measured by the Rust client: one publish to {m['fan_small']:,} subscribers, p99 "
        f"| {figure(cs, 'p99_ms', ' ms')} (p50 {figure(cs, 'p50_ms', ' ms')}) "
        f"| {figure(ps, 'p99_ms', ' ms')} (p50 {figure(ps, 'p50_ms', ' ms')}) | "
        f"| {figure(ratio, 'fanout_rust_small_p99', '×')} "
        f"| ≤ {t['fanout_p99_ms']} ms: {met(cs['p99_ms'] <= t['fanout_p99_ms'])} |",
        f"| the same, measured by the Rust client: one publish to {m['fan_big']:,} subscribers, p99 "
        f"| {figure(cb, 'p99_ms', ' ms')} (p50 {figure(cb, 'p50_ms', ' ms')}) "
        f"| {figure(pb, 'p99_ms', ' ms')} (p50 {figure(pb, 'p50_ms', ' ms')}) | "
        f"| {figure(ratio, 'fanout_rust_big_p99', '×')} | reported |",
    ]


def write_docs(r):
    c, p, pb, ratio, m = r["cloudlet"], r["peer"], r["pocketbase"], r["ratios"], r["meta"]
    v, t = m["versions"], m["targets"]
    cc, pc = c["connections"], p["connections"]
    pbc = pb["connections"] if pb else None

    def pct(side, key="p99_worse"):
        return f"{side['slow_consumer'][key]:+.0%}"

    control = "control_p99_ms" in c["slow_consumer"]  # results from before the control have none
    worse = "p99_worse_control" if control else "p99_worse"

    def slow_end(side):
        s = side["slow_consumer"]
        if s["closed_after_secs"] in (None, "null"):
            return f"still open after {s['waited_secs']} s"
        return f"closed after {figure(s, 'closed_after_secs', ' s')} (code {s['close_code']})"

    def resume(side):
        s = side["resume"]
        return (f"{s['received']:,} of {s['expected']:,}, {'in order' if s['in_order'] in (True, 1) else '**not in order**'}, "
                f"{s['duplicates']} duplicates, {s['resets']} resets, {figure(s, 'resume_ms', ' ms')}")

    fs, fb = m["fan_small"], m["fan_big"]
    rust = "fanout_rust" in c  # results from before the Rust client have none
    rows = [
        f"| authenticated connections held, each in `p:{{n}}` and `g:{{n/10}}` | {cc['connected']:,} "
        f"| {pc['connected']:,} | {pbc['connected']:,} (SSE) | | ~18,000 (the descriptor budget) |" if pbc else
        f"| authenticated connections held | {cc['connected']:,} | {pc['connected']:,} | | | |",
        f"| connect rate (handshake, `ready`, two subscriptions; 256 at a time) "
        f"| {figure(cc, 'per_sec', '/s')} | {figure(pc, 'per_sec', '/s')} "
        f"| {figure(pbc, 'per_sec', '/s') if pbc else ''} | {figure(ratio, 'connect_per_sec', '×')} "
        f"| ≥ {t['connect_per_sec']:,}/s: {met(cc['per_sec'] >= t['connect_per_sec'])} |",
        f"| server RSS growth for them, a message kept in each group channel "
        f"| {figure(cc, 'growth_mb', ' MB')} ({cc['per_connection_kib']} KiB each) "
        f"| {figure(pc, 'growth_mb', ' MB')} ({pc['per_connection_kib']} KiB each) "
        f"| {figure(pbc, 'growth_mb', ' MB') + ' (' + str(pbc['per_connection_kib']) + ' KiB each)' if pbc else ''} "
        f"| {figure(ratio, 'growth_mb', '×')} | ≤ {t['growth_mb']} MB: {met(cc['growth_mb'] <= t['growth_mb'])} |",
        f"| one publish to {fs:,} subscribers, publish to last receipt, p99 ({m['publishes']} publishes) "
        f"| {figure(c['fanout_small'], 'p99_ms', ' ms')} (p50 {figure(c['fanout_small'], 'p50_ms', ' ms')}) "
        f"| {figure(p['fanout_small'], 'p99_ms', ' ms')} (p50 {figure(p['fanout_small'], 'p50_ms', ' ms')}) | "
        f"| {figure(ratio, 'fanout_small_p99', '×')} "
        + ("| reported (the Node.js client's own time included) |" if rust else
           f"| ≤ {t['fanout_p99_ms']} ms: {met(c['fanout_small']['p99_ms'] <= t['fanout_p99_ms'])} |"),
        f"| one publish to {fb:,} subscribers, last receipt, p99 ({m['big_publishes']} publishes) "
        f"| {figure(c['fanout_big'], 'p99_ms', ' ms')} (p50 {figure(c['fanout_big'], 'p50_ms', ' ms')}) "
        f"| {figure(p['fanout_big'], 'p99_ms', ' ms')} (p50 {figure(p['fanout_big'], 'p50_ms', ' ms')}) | "
        f"| {figure(ratio, 'fanout_big_p99', '×')} | reported |",
        *(fanout_rust_rows(c, p, ratio, m, t) if rust else []),
        f"| sustained fan-out to {fb:,} for {m['sustain_seconds']} s, {m['window']} publishes in flight: deliveries/s "
        f"| {figure(c['sustained'], 'deliveries_per_sec', '/s')} ({c['sustained']['lost']:,} lost) "
        f"| {figure(p['sustained'], 'deliveries_per_sec', '/s')} ({p['sustained']['lost']:,} lost) | "
        f"| {figure(ratio, 'deliveries_per_sec', '×')} | 0 lost: {met(c['sustained']['lost'] == 0 and c['sustained']['gaps'] == 0)} |",
        *([f"| the {fs:,}-subscriber p99 again with one more subscriber, still reading, whose own channel gets "
           f"{m['flood_rate']} messages of 32 KiB a second (the control for the row below) "
           f"| {figure(c['slow_consumer'], 'control_p99_ms', ' ms')} ({pct(c, 'p99_worse_control')} below: "
           f"the slow one's cost) "
           f"| {figure(p['slow_consumer'], 'control_p99_ms', ' ms')} ({pct(p, 'p99_worse_control')} below) | | | |"]
          if control else []),
        f"| the {fs:,}-subscriber p99 again, that subscriber not reading (its buffers filled) "
        f"| {figure(c['slow_consumer'], 'p99_ms', ' ms')} ({pct(c)} against the first fan-out row) "
        f"| {figure(p['slow_consumer'], 'p99_ms', ' ms')} ({pct(p)}) | "
        f"| | < 10% worse{' than the control' if control else ''}: "
        f"{met(c['slow_consumer'][worse] < t['slow_worse'])} |",
        f"| the slow subscriber, and the server's RSS growth meanwhile "
        f"| {slow_end(c)}; {mb_figure(c['slow_consumer'], 'rss_growth_kib')} "
        f"| {slow_end(p)}; {mb_figure(p['slow_consumer'], 'rss_growth_kib')} | | "
        f"| closed (4008), memory bounded |",
        f"| resume after {m['absence_seconds']} s away, {m['resume_messages']:,} messages missed "
        f"(received, order, duplicates, resets, reconnect to last message) "
        f"| {resume(c)} | {resume(p)} | | | all, in order, no duplicate, no reset |",
        *(record_rows(c["records"], t) if "records" in c else []),  # results from before the phase
    ]
    text = (f"{heading(m)}; Cloudlet against a plain Node.js {v['node']} server on ws {v['ws']} "
            f"(bench/peers/realtime/server.mjs) and PocketBase {v['pocketbase']}'s realtime (SSE); "
            f"one Node.js client process (bench/realtime.mjs, ws {v['ws']}) on the same {m['cpus']} CPUs as "
            f"the server; `ulimit -n` {m['nofile']:,}, so {m['connections']:,} connections"
            + ("; the fan-outs again with a client in Rust on one thread "
               "(crates/cloudlet/examples/realtime_fanout.rs), once the Node.js client's sockets are closed"
               if rust else "") + ".\n\n"
            "| workload | Cloudlet | Node.js ws | PocketBase | Cloudlet / ws | the issue's target for Cloudlet |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(rows))
    replace_docs_section("realtime", text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--modules", default=os.path.join(ROOT, "bench/.tools/realtime/node_modules"))
    parser.add_argument("--pocketbase", default=os.path.join(ROOT, "bench/.tools/venv/bin/pocketbase"))
    parser.add_argument("--port", type=int, default=18780, help="Cloudlet's; the peer's is the next, PocketBase's the one after")
    parser.add_argument("--connections", type=int,
                        help="sockets to hold (default: 18,000, or `ulimit -n` less 2,000 if that is lower; 2,000 with --quick)")
    parser.add_argument("--fan-small", type=int, help="subscribers of the small fan-out (default 2,000; 500 with --quick)")
    parser.add_argument("--fan-big", type=int, help="subscribers of the big fan-out (default 10,000; 1,000 with --quick)")
    parser.add_argument("--publishes", type=int, help="publishes to the small fan-out (default 50; 10 with --quick)")
    parser.add_argument("--big-publishes", type=int, help="publishes to the big fan-out (default 20; 5 with --quick)")
    parser.add_argument("--sustain-seconds", type=float, help="sustained fan-out (default 10, the issue's is 60; 2 with --quick)")
    parser.add_argument("--window", type=int, default=8, help="publishes in flight in the sustained fan-out")
    parser.add_argument("--flood-rate", type=int, default=50, help="32 KiB messages a second to the slow consumer")
    parser.add_argument("--slow-wait", type=float, default=20, help="seconds to wait for the slow consumer's closing")
    parser.add_argument("--absence-seconds", type=float, help="resume: time away (default 5, the issue's is 60; 1 with --quick)")
    parser.add_argument("--resume-messages", type=int, default=1000, help="resume: messages missed")
    parser.add_argument("--records-subscribers", type=int,
                        help="record changes: subscribed sockets (default 1,000; 200 with --quick)")
    parser.add_argument("--records-users", type=int,
                        help="record changes: users the sockets are spread over (default 100; 20 with --quick)")
    parser.add_argument("--records-writes", type=int,
                        help="record changes: records created (default 2,000, the issue's is 10,000; 400 with --quick)")
    parser.add_argument("--records-rate", type=int, default=200, help="record changes: writes a second")
    parser.add_argument("--fanout-client", default=os.path.join(ROOT, "target/release/examples/realtime_fanout"),
                        help="the Rust fan-out client (bench/realtime.sh builds it)")
    parser.add_argument("--no-pocketbase", action="store_true")
    parser.add_argument("--log", help="Cloudlet's output goes to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one run, small counts; no docs, no results file")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", help="results file (default bench/results/realtime.json; none with --quick)")
    parser.add_argument("--docs-from", metavar="RESULTS", help="only write docs/performance.md's section again from a results file")
    explicit_runs = any(a == "--runs" or a.startswith("--runs=") for a in sys.argv[1:])
    args = parse_args(parser)
    if args.docs_from:
        write_docs(json.load(open(args.docs_from)))
        return 0
    if args.quick and not explicit_runs:
        args.runs = 1
    args.modules = os.path.abspath(args.modules)
    if not os.access(args.fanout_client, os.X_OK):
        parser.error(f"no {args.fanout_client}: cargo build --release -p cloudlet --example realtime_fanout")
    # Every process started from here may hold the hard limit of descriptors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.nofile = hard
    # The client holds one descriptor per socket, the server one per socket and a few hundred of
    # its own (Cloudlet here: 256 + 10 app databases × 9 + 4 workers × 3): keep 2,000 aside.
    budget = max(100, (hard - 2000) // 10 * 10) if hard > 4000 else hard // 2 // 10 * 10
    wanted = args.connections or (2000 if args.quick else 18000)
    args.connections = min(wanted, budget)
    if args.connections < wanted:
        print(f"== ulimit -n is {hard}: {args.connections} connections, not {wanted}", file=sys.stderr)
    args.fan_small = min(args.fan_small or (500 if args.quick else 2000), args.connections)
    args.fan_big = min(args.fan_big or (1000 if args.quick else 10000), args.connections)
    args.publishes = args.publishes or (10 if args.quick else 50)
    args.big_publishes = args.big_publishes or (5 if args.quick else 20)
    args.sustain_seconds = args.sustain_seconds or (2 if args.quick else 10)
    args.absence_seconds = args.absence_seconds or (1 if args.quick else 5)
    args.records_subscribers = args.records_subscribers or (200 if args.quick else 1000)
    args.records_users = args.records_users or (20 if args.quick else 100)
    args.records_writes = args.records_writes or (400 if args.quick else 2000)
    # Every user needs a socket, two users for the rule check, and the sockets of one user stay
    # within CONFIG's max_connections_per_user.
    if not 2 <= args.records_users <= args.records_subscribers <= 16 * args.records_users:
        parser.error("--records-users must be at least 2, and --records-subscribers 1 to 16 times as many")
    if args.out is None and not args.quick:
        args.out = os.path.join(ROOT, "bench/results/realtime.json")

    runs = []
    marker = None if args.quick else "/tmp/bench-running"
    try:
        if marker:
            open(marker, "w").close()
        for number in range(1, args.runs + 1):
            if args.runs > 1:
                print(f"== run {number} of {args.runs}", file=sys.stderr)
            runs.append(side_by_side(args))
    finally:
        if marker and os.path.exists(marker):
            os.remove(marker)
    results = fold(harmonize(runs))
    results["meta"] = meta(args.runs, connections=args.connections, nofile=args.nofile, fan_small=args.fan_small,
                           fan_big=args.fan_big, publishes=args.publishes, big_publishes=args.big_publishes,
                           sustain_seconds=args.sustain_seconds, window=args.window, flood_rate=args.flood_rate,
                           absence_seconds=args.absence_seconds, resume_messages=args.resume_messages,
                           records_subscribers=args.records_subscribers, records_users=args.records_users,
                           records_writes=args.records_writes, records_rate=args.records_rate,
                           versions=versions(args), targets=TARGETS)
    if args.out:
        write_results(args.out, results)
    else:
        print(json.dumps(results, indent=2))
    if not (args.quick or args.no_docs):
        write_docs(results)


if __name__ == "__main__":
    sys.exit(main())
