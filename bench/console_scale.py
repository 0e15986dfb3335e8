#!/usr/bin/env python3
"""The console's server side at scale: its data browser over 100,000 records, beside PocketBase
0.40.6's admin UI on the same records, and its Realtime page with 18,000 sockets open (no peer).

Each run starts Cloudlet anew on a fresh data directory, with its console listener
(`--console-listen`, and CLOUDLET_CONSOLE_LISTEN set to the same) and its first owner made
through `POST /console/api/setup`, whose `cloudlet_console` cookie goes with every measured
request. The measured requests go to the console's address, exactly as its page
(crates/console/assets/console.js) sends them; the seeding goes to the API's address with the
admin token.

- C2, the data browser (target: page and filter p95 ≤ 100 ms). A collection `items` (title,
  n, an integer, indexed; score, a number; done; a note), `--rows` records (100,000) written by
  `POST /v1/apps/{app}/batch`, 100 (the most a batch takes) at a time. Then, each
  `--requests` (200) times, the Data tab's requests, `GET /v1/apps/{app}/collections/items/records`
  with `limit=50`, the filter and sort typed in, and `cursor` from the previous answer's
  `next_cursor`: the first page; pages 1 to 40 one after the other (walked again until the count
  is reached); page 100; pages past row 90 % (90,000), each opened by the cursor the walk of
  every page gave (the walk is reported too); `filter=n > rows/2` sorted `-score` and `-n`, and
  `filter=title ~ 'amber'` (one record in 20) sorted `-n`, each walked as pages 1 to 40.
  PocketBase: `pocketbase serve` with the same records (its batch API, enabled for the seeding,
  500 a request) and the same index, then what its admin UI sends (read from its 0.40.6 bundle):
  the list, `page=N&perPage=…&skipTotal=1&filter=…&sort=-@rowid` (its UI asks 40 a page: 50 here,
  as Cloudlet's), its pages by offset (the UI scrolls with `page=N`), and beside each list the
  total it shows, a second request `page=1&perPage=1&filter=…&fields=id` that counts (reported
  on its own row: the console shows no total). The superuser's token goes with every request.
- C3, the Realtime page (target: the live-user count and the first page within 1 s).
  `--sockets` (18,000, fewer when `ulimit -n` is too low, as bench/realtime.py decides) authenticated
  WebSockets held by a separate Node.js process (bench/console_sockets.mjs, on npm `ws` as
  bench/realtime.mjs), ten a user (dev logins), each joined to `room:all` and present in it
  (`track`). Then, `--rt-requests` (50) times each, through the console:
  `GET /v1/admin/apps/{app}/realtime/sockets?limit=50` (the count, the users, the first page), the
  same from the middle of the ids, `GET …/realtime/channels/room%3Aall/presence?limit=100` and from
  the middle, the page's two requests one after the other (the settings, then the sockets), and
  the console's own socket (`/console/api/apps/{app}/live`) from its handshake to the first
  `sockets` frame. No peer: PocketBase's admin UI has no list of connections.

Latencies are the client's, from sending the request to the end of the answer, one request at
a time on a keep-alive connection over loopback: the server's time plus well under a
millisecond. Every figure, the ratios too, is the median of the runs with their spread. Writes
bench/results/console_scale.json and the `console_scale` section of docs/performance.md. Runs
nothing from cargo: it measures the binary it is given (by default target/release/cloudlet).
"""

import argparse
import contextlib
import datetime
import http.client
import json
import math
import os
import resource
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(__file__))

from common import (ROOT, Client, fold, heading, meta, ms, parse_args, publish,  # noqa: E402
                    replace_docs_section, rss_kib)
from console import cloudlet, free_ports  # noqa: E402
from data import PB_ADMIN, parallel, pocketbase  # noqa: E402
from realtime import CONFIG as REALTIME_CONFIG, harmonize  # noqa: E402

TARGETS = {"browse_p95_ms": 100, "realtime_ms": 1000}
APP, COLLECTION, PAGE = "bench", "items", 50
WALK_PAGES = 40
WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heron", "indigo", "juniper",
         "kelp", "lotus", "maple", "nectar", "onyx", "pebble", "quartz", "raven", "sorrel", "tundra"]
NOTE = "a note of the length a real record's free text has, so that a page weighs what one would"
CHANNEL = "room:all"
MIDDLE = "8000000000000000"  # a socket id (16 hex digits) half-way through the ids
CLOUDLET_BATCH, POCKETBASE_BATCH = 100, 500


# ---- the servers ------------------------------------------------------------------------------

class Timed:
    """One keep-alive connection sending GETs with fixed headers (the session cookie, or a
    PocketBase superuser's token); each answer with the time it took."""

    def __init__(self, port, headers):
        self.port, self.headers = port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def get(self, path):
        start = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"GET {path} on port {self.port}: {response.status} {body[:300]!r}")
        return elapsed, json.loads(body), len(body)


def summary(times, sizes):
    return {"requests": len(times), "p50_ms": ms(times, 50), "p95_ms": ms(times, 95), "max_ms": ms(times, 100),
            "answer_bytes": round(sorted(sizes)[len(sizes) // 2])}


def repeated(client, paths, wanted, check=None):
    """`wanted` requests, going round `paths`."""
    times, sizes = [], []
    while len(times) < wanted:
        for path in paths:
            elapsed, body, size = client.get(path)
            if check:
                check(body)
            times.append(elapsed)
            sizes.append(size)
            if len(times) >= wanted:
                break
    return summary(times, sizes)


def walked(client, first, follow, pages, wanted, check=None):
    """Pages 1 to `pages` one after the other (`follow(body)` is the next page's path, None
    after the last), again from the first until `wanted` requests were made."""
    times, sizes = [], []
    while len(times) < wanted:
        path = first
        for _ in range(pages):
            elapsed, body, size = client.get(path)
            if check:
                check(body)
            times.append(elapsed)
            sizes.append(size)
            path = follow(body)
            if path is None or len(times) >= wanted:
                break
    return summary(times, sizes)


def record(i, rows):
    step = next(p for p in (7919, 7927, 7933) if math.gcd(p, rows) == 1)  # n: a permutation of 0..rows-1
    return {"title": f"item {i:06d} {WORDS[i % len(WORDS)]}", "n": (i * step) % rows,
            "score": ((i * 2654435761) % 1000003) / 1000, "done": i % 3 == 0, "note": NOTE}


def browse_workloads(rows):
    """The filters and sorts typed into each side's data browser: the same on both."""
    half = rows // 2
    return {
        "filter_number": {"filter": f"n > {half}", "sort": "-score",
                          "check": lambda item: item["n"] > half},
        "filter_number_by_n": {"filter": f"n > {half}", "sort": "-n",
                               "check": lambda item: item["n"] > half},
        "filter_text": {"filter": "title ~ 'amber'", "sort": "-n",
                        "check": lambda item: "amber" in item["title"]},
    }


def items_check(key, check):
    """Every record of a filtered page matches (the last page may be empty: a full page before it
    answers a next page)."""
    def run(body):
        items = body[key]
        if not all(check(item) for item in items):
            raise RuntimeError(f"a filtered page with records that do not match: {json.dumps(items[:2])[:300]}")
    return run


def first_page_matches(client, path, key, check):
    _, body, _ = client.get(path)
    if not body[key]:
        raise RuntimeError(f"GET {path}: no records")
    items_check(key, check)(body)


# ---- C2: Cloudlet's data browser --------------------------------------------------------------

def seed_cloudlet(side, rows):
    admin = Client(side.api_port, bearer=side.token)
    admin.json("POST", "/v1/admin/apps", {"name": APP}, expect=201)
    admin.json("PUT", f"/v1/admin/apps/{APP}/collections/{COLLECTION}", {
        "fields": [
            {"name": "title", "type": "text"},
            {"name": "n", "type": "integer"},
            {"name": "score", "type": "number"},
            {"name": "done", "type": "bool"},
            {"name": "note", "type": "text"},
        ],
        "indexes": [{"fields": ["n"]}],
    }, expect=201)

    def batch(local, start):
        if not hasattr(local, "c"):
            local.c = Client(side.api_port, bearer=side.token)
        operations = [{"op": "create", "collection": COLLECTION, "data": record(i, rows)}
                      for i in range(start, min(start + CLOUDLET_BATCH, rows))]
        return len(local.c.json("POST", f"/v1/apps/{APP}/batch", {"operations": operations})["results"])

    start = time.perf_counter()
    written = sum(parallel(range(0, rows, CLOUDLET_BATCH), batch, workers=4))
    seconds = time.perf_counter() - start
    if written != rows:
        raise RuntimeError(f"Cloudlet: {written} records written, not {rows}")
    return {"seconds": round(seconds, 2), "records_per_sec": round(rows / seconds)}


def browse_cloudlet(side, rows, wanted):
    client = Timed(side.console_port, {"cookie": side.cookie})
    base = f"/v1/apps/{APP}/collections/{COLLECTION}/records"

    def q(**params):  # as console.js's query({ limit: PAGE_SIZE, ...filters, cursor })
        return base + "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})

    def follow(**filters):
        return lambda body: q(limit=PAGE, **filters, cursor=body["next_cursor"]) if body.get("next_cursor") else None

    results = {"first": repeated(client, [q(limit=PAGE)], wanted)}
    results["walk"] = walked(client, q(limit=PAGE), follow(), WALK_PAGES, wanted)
    # Every page once, by cursor: what a person paging to the end would wait, and the cursors
    # that open each page (cursors[i] opens page i + 1, as the console keeps them).
    cursors, times, sizes, seen = [None], [], [], 0
    while True:
        elapsed, body, size = client.get(q(limit=PAGE, cursor=cursors[-1]))
        times.append(elapsed)
        sizes.append(size)
        seen += len(body["items"])
        if not body.get("next_cursor"):
            break
        cursors.append(body["next_cursor"])
    if seen != rows:
        raise RuntimeError(f"the walk of every page saw {seen} records, not {rows}")
    results["every_page"] = summary(times, sizes)
    page_100 = min(100, len(cursors)) - 1
    results["page_100"] = repeated(client, [q(limit=PAGE, cursor=cursors[page_100])], wanted)
    deep = [q(limit=PAGE, cursor=c) for c in cursors[int(rows * 0.9) // PAGE:]] or [q(limit=PAGE, cursor=cursors[-1])]
    results["deep"] = repeated(client, deep, wanted)
    for name, w in browse_workloads(rows).items():
        filters = {"filter": w["filter"], "sort": w["sort"]}
        first_page_matches(client, q(limit=PAGE, **filters), "items", w["check"])
        results[name] = walked(client, q(limit=PAGE, **filters), follow(**filters), WALK_PAGES, wanted,
                               items_check("items", w["check"]))
    return results


# ---- C2: PocketBase's admin UI ----------------------------------------------------------------

def seed_pocketbase(port, rows):
    client = Client(port, bearer=None)
    token = client.json("POST", "/api/collections/_superusers/auth-with-password",
                        {"identity": PB_ADMIN[0], "password": PB_ADMIN[1]})["token"]
    su = Client(port, bearer=token)
    su.json("POST", "/api/collections", {
        "name": COLLECTION, "type": "base",
        "fields": [
            {"name": "title", "type": "text"},
            {"name": "n", "type": "number", "onlyInt": True},
            {"name": "score", "type": "number"},
            {"name": "done", "type": "bool"},
            {"name": "note", "type": "text"},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
        ],
        "indexes": [f"CREATE INDEX idx_{COLLECTION}_n ON {COLLECTION} (n)"],
        # Superusers only, as the admin UI reads it.
        "listRule": None, "viewRule": None, "createRule": None, "updateRule": None, "deleteRule": None,
    })
    su.json("PATCH", "/api/settings", {"batch": {"enabled": True, "maxRequests": POCKETBASE_BATCH,
                                                 "timeout": 120, "maxBodySize": 0}})

    def batch(local, start):
        if not hasattr(local, "c"):
            local.c = Client(port, bearer=token)
        requests = [{"method": "POST", "url": f"/api/collections/{COLLECTION}/records", "body": record(i, rows)}
                    for i in range(start, min(start + POCKETBASE_BATCH, rows))]
        return len(local.c.json("POST", "/api/batch", {"requests": requests}))

    start = time.perf_counter()
    written = sum(parallel(range(0, rows, POCKETBASE_BATCH), batch, workers=2))
    seconds = time.perf_counter() - start
    if written != rows:
        raise RuntimeError(f"PocketBase: {written} records written, not {rows}")
    return token, {"seconds": round(seconds, 2), "records_per_sec": round(rows / seconds)}


def browse_pocketbase(port, token, rows, wanted):
    client = Timed(port, {"authorization": token})
    base = f"/api/collections/{COLLECTION}/records"

    def q(**params):
        return base + "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v not in (None, "")})

    def page(n, filter=None, sort="-@rowid"):  # the records list of its 0.40.6 admin UI
        return q(page=n, perPage=PAGE, skipTotal=1, filter=filter, sort=sort)

    def count(filter=None):  # the total beside it
        return q(page=1, perPage=1, filter=filter, fields="id")

    def follow(filter=None, sort="-@rowid"):
        return lambda body: page(body["page"] + 1, filter, sort) if len(body["items"]) == PAGE else None

    pages = math.ceil(rows / PAGE)
    results = {"first": repeated(client, [page(1)], wanted)}
    results["walk"] = walked(client, page(1), follow(), WALK_PAGES, wanted)
    results["every_page"] = None  # by offset, it would take minutes: not measured
    results["page_100"] = repeated(client, [page(min(100, pages))], wanted)
    results["deep"] = repeated(client, [page(n) for n in range(int(rows * 0.9) // PAGE + 1, pages + 1)], wanted)
    totals = {}

    def total_is(expected):
        def run(body):
            if body["totalItems"] != expected:
                raise RuntimeError(f"PocketBase counted {body['totalItems']}, not {expected}")
        return run

    totals["count"] = repeated(client, [count()], wanted, total_is(rows))
    for name, w in browse_workloads(rows).items():
        first_page_matches(client, page(1, w["filter"], w["sort"]), "items", w["check"])
        results[name] = walked(client, page(1, w["filter"], w["sort"]), follow(w["filter"], w["sort"]),
                               WALK_PAGES, wanted, items_check("items", w["check"]))
        totals[f"count_{name}"] = repeated(client, [count(w["filter"])], wanted)
    results.update(totals)
    return results


def run_browse(args):
    print(f"== C2 Cloudlet: seeding {args.rows:,} records", file=sys.stderr)
    out = {}
    with cloudlet(args.binary, log=args.log) as side:
        seeded = seed_cloudlet(side, args.rows)
        print(f"== C2 Cloudlet: {seeded['records_per_sec']:,} records/s; browsing", file=sys.stderr)
        out["cloudlet"] = {**browse_cloudlet(side, args.rows, args.requests), "seed": seeded,
                           "server_rss_kib": rss_kib(side.process.pid)}
    if args.no_pocketbase:
        out["pocketbase"] = None
        return out
    print(f"== C2 PocketBase: seeding {args.rows:,} records", file=sys.stderr)
    (port,) = free_ports(1)
    with pocketbase(args.pocketbase, port) as process:
        token, seeded = seed_pocketbase(port, args.rows)
        print(f"== C2 PocketBase: {seeded['records_per_sec']:,} records/s; browsing", file=sys.stderr)
        out["pocketbase"] = {**browse_pocketbase(port, token, args.rows, args.requests), "seed": seeded,
                             "server_rss_kib": rss_kib(process.pid)}
    c, p = out["cloudlet"], out["pocketbase"]
    out["ratios"] = {name: round(c[name]["p95_ms"] / p[name]["p95_ms"], 3)
                     for name in ("first", "walk", "page_100", "deep", "filter_number", "filter_number_by_n",
                                  "filter_text")}
    return out


# ---- C3: the Realtime page --------------------------------------------------------------------

def run_realtime(args):
    print(f"== C3 Cloudlet: {args.sockets:,} sockets", file=sys.stderr)
    with cloudlet(args.binary, REALTIME_CONFIG, log=args.log) as side:
        admin = Client(side.api_port, bearer=side.token)
        admin.json("POST", "/v1/admin/apps", {"name": APP}, expect=201)
        status, body = admin.call("PUT", f"/v1/admin/apps/{APP}/auth/providers/dev", {"enabled": True})
        if status not in (200, 201):
            raise RuntimeError(f"dev provider: {status} {body[:200]!r}")
        admin.json("PUT", f"/v1/admin/apps/{APP}/realtime",
                   {"channels": {"room": {"rules": {"join": "@auth.id != null"}}}})
        settings = {"port": side.api_port, "console_port": side.console_port, "cookie": side.cookie,
                    "app": APP, "modules": args.modules, "sockets": args.sockets, "connect_width": 256,
                    "channel": CHANNEL}
        node = subprocess.Popen(["node", os.path.join(ROOT, "bench/console_sockets.mjs"), json.dumps(settings)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            def answer():
                line = node.stdout.readline()
                if not line:
                    raise RuntimeError(f"bench/console_sockets.mjs ended (exit {node.wait()})")
                return json.loads(line)

            ready = answer()
            if ready["failed"]:
                print(f"== {ready['failed']} sockets failed: {ready['first_errors']}", file=sys.stderr)
            time.sleep(1)
            rss_held = rss_kib(side.process.pid)
            print(f"== C3: {ready['connected']:,} sockets open in {ready['seconds']} s; measuring", file=sys.stderr)
            results = measure_realtime(side, ready, args.rt_requests)
            node.stdin.write(f"live {args.rt_requests}\n")
            node.stdin.flush()
            live = answer()
            node.stdin.write("close\n")
            node.stdin.flush()
            closed = answer()
        finally:
            if node.poll() is None:
                node.stdin.close()
                try:
                    node.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.kill()
                    node.wait()
    if live["errors"] and not live["requests"]:
        print(f"== the console's live socket: {live['errors']}", file=sys.stderr)
    return {
        "connections": {k: ready[k] for k in ("requested", "connected", "failed", "users", "seconds", "per_sec")},
        **results,
        "live": None if not live["requests"] else {
            "requests": live["requests"], "p50_ms": live["p50_ms"], "p95_ms": live["p95_ms"],
            "max_ms": live["max_ms"], "count": live["count"], "users": live["users"]},
        "live_errors": json.dumps(live["errors"]),
        "closed_meanwhile": closed["closed_meanwhile"],
        "server_rss_mb": round(rss_held / 1024, 1),
    }


def measure_realtime(side, ready, wanted):
    client = Timed(side.console_port, {"cookie": side.cookie})
    url = f"/v1/admin/apps/{APP}/realtime"
    channel = urllib.parse.quote(CHANNEL, safe="")  # console.js's path(): encodeURIComponent

    def q(path, **params):  # console.js's query({ after, limit })
        return path + "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})

    def counts(key, expected):
        def run(body):
            if body[key] != expected:
                raise RuntimeError(f"{key} {body[key]}, not {expected}")
        return run

    def full_page(key, size):
        def run(body):
            if len(body[key]) != min(size, ready["connected"]):
                raise RuntimeError(f"a page of {len(body[key])} {key}, not {size}")
        return run

    def sockets_check(body):
        counts("count", ready["connected"])(body)
        counts("users", ready["users"])(body)
        full_page("sockets", 50)(body)

    def presence_check(body):
        counts("count", ready["connected"])(body)
        full_page("members", 100)(body)

    results = {
        "sockets_first": repeated(client, [q(f"{url}/sockets", limit=50)], wanted, sockets_check),
        "sockets_middle": repeated(client, [q(f"{url}/sockets", after=MIDDLE, limit=50)], wanted,
                                   counts("count", ready["connected"])),
        "presence_first": repeated(client, [q(f"{url}/channels/{channel}/presence", limit=100)], wanted,
                                   presence_check),
        "presence_middle": repeated(client, [q(f"{url}/channels/{channel}/presence", after=MIDDLE, limit=100)],
                                    wanted, counts("count", ready["connected"])),
    }
    # What the Realtime page waits for before it shows the count and the first page: its
    # settings, then the sockets' first page.
    times, sizes = [], []
    for _ in range(wanted):
        first, _, a = client.get(url)
        second, body, b = client.get(q(f"{url}/sockets", limit=50))
        sockets_check(body)
        times.append(first + second)
        sizes.append(a + b)
    results["page"] = summary(times, sizes)
    return results


# ---- the tables -------------------------------------------------------------------------------

def spread_of(section, key, value):
    spread = section.get("spread", {}).get(key)
    if spread and value:
        deviation = max(spread["max"] - value, value - spread["min"]) / value
        return f" ±{deviation:.1%}"
    return ""


def num(section, key, unit=""):
    value = section[key]
    if value is None:
        return "—"
    if isinstance(value, float):
        text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    else:
        text = f"{value:,}"
    return f"{text}{unit}{spread_of(section, key, value)}"


def lat(section):
    """p50 / p95 / max, the p95 with its spread."""
    if not section:
        return "—"
    return f"{section['p50_ms']:,.1f} / **{num(section, 'p95_ms')}** / {section['max_ms']:,.1f} ms"


def met(ok):
    return "met" if ok else "**not met**"


def browse_table(r, m):
    c, p, q = r["cloudlet"], r["pocketbase"], r.get("ratios") or {}
    target = TARGETS["browse_p95_ms"]
    rows, half = m["rows"], m["rows"] // 2
    pages = math.ceil(rows / PAGE)
    deep_from = int(rows * 0.9)

    def line(label, name, with_target=True):
        ratio = num(q, name, "×") if name in q else ""
        goal = f"p95 ≤ {target} ms: {met(c[name]['p95_ms'] <= target)}" if with_target else "reported"
        return f"| {label} | {lat(c[name])} | {lat(p.get(name) if p else None)} | {ratio} | {goal} |"

    lines = [
        f"| the data browser, {rows:,} records, {PAGE} a page: ms, p50 / p95 / max over {m['requests']} requests "
        "| Cloudlet (cursor) | PocketBase (offset) | Cloudlet / PocketBase, p95 | the issue's target for Cloudlet |",
        "|---|---|---|---|---|",
        line("first page (`limit=50`; PocketBase `page=1&perPage=50&skipTotal=1&sort=-@rowid`)", "first"),
        line(f"pages 1 to {WALK_PAGES}, one after the other (`cursor=`; `page=N`)", "walk"),
        line("page 100 (the cursor of page 100; `page=100`)", "page_100"),
        line(f"pages past row {deep_from:,} (their cursors; `page={deep_from // PAGE + 1}` to `{pages}`)", "deep"),
        line(f"`filter=n > {half}` (indexed), `sort=-score` (not indexed: half the records sorted for each page), "
             f"pages 1 to {WALK_PAGES}", "filter_number"),
        line(f"`filter=n > {half}`, `sort=-n` (the index serves both), pages 1 to {WALK_PAGES}", "filter_number_by_n"),
        line(f"`filter=title ~ 'amber'` (1 in 20, not indexed), `sort=-n`, pages 1 to {WALK_PAGES}", "filter_text"),
        f"| every page once, 1 to {pages:,}, by cursor ({c['every_page']['requests']:,} requests) "
        f"| {lat(c['every_page'])} | not measured (offsets) | | reported |",
    ]
    if p:
        lines += [
            f"| PocketBase's total beside each list (`page=1&perPage=1&fields=id`, it counts): no filter "
            f"/ `n > {half}` / `title ~ 'amber'` | none (the console shows no total) "
            f"| {lat(p['count'])}; {lat(p['count_filter_number'])}; {lat(p['count_filter_text'])} | | |",
            f"| seeding (Cloudlet: batches of {CLOUDLET_BATCH}, 4 at once; PocketBase: `/api/batch`, "
            f"{POCKETBASE_BATCH} a request, 2 at once) | {num(c['seed'], 'seconds', ' s')}, "
            f"{num(c['seed'], 'records_per_sec', ' records/s')} | {num(p['seed'], 'seconds', ' s')}, "
            f"{num(p['seed'], 'records_per_sec', ' records/s')} | | |",
            f"| one answer's size (first page) | {c['first']['answer_bytes']:,} B | {p['first']['answer_bytes']:,} B | | |",
        ]
    return "\n".join(lines)


def realtime_table(r, m):
    target = TARGETS["realtime_ms"]
    conn = r["connections"]

    def line(label, section, with_target=False):
        goal = f"≤ {target:,} ms: {met(section['p95_ms'] <= target)}" if with_target and section else "reported"
        return f"| {label} | {lat(section)} | {goal} |"

    return "\n".join([
        f"| the Realtime page, {conn['connected']:,} sockets of {conn['users']:,} users, each present in "
        f"`{CHANNEL}`: ms, p50 / p95 / max over {m['rt_requests']} requests | Cloudlet | the issue's target |",
        "|---|---|---|",
        line("`GET …/realtime/sockets?limit=50`: the count, the users and the first page", r["sockets_first"], True),
        line(f"… `after={MIDDLE}&limit=50`, a page from the middle", r["sockets_middle"]),
        line(f"`GET …/realtime/channels/{urllib.parse.quote(CHANNEL, safe='')}/presence?limit=100`: the count and "
             "the first page", r["presence_first"], True),
        line(f"… `after={MIDDLE}&limit=100`", r["presence_middle"]),
        line("the page's two requests, one after the other (`GET …/realtime`, then the sockets' first page)",
             r["page"], True),
        line("the console's live socket (`/console/api/apps/{app}/live`): handshake to its first `sockets` frame",
             r["live"], True),
        f"| the sockets: opened at | {num(conn, 'per_sec', '/s')} (256 handshakes at a time, each joining and "
        f"`track`ing) | |",
        f"| … the server's RSS with them open | {num(r, 'server_rss_mb', ' MB')} | reported |",
        f"| … closed while the page was measured | {r['closed_meanwhile']} | 0 |",
    ])


def text(result):
    m = result["meta"]
    parts = [
        heading(m) + f"; `{m['binary']}` built {m['binary_built']}; PocketBase {m['versions']['pocketbase']}; "
        f"Node.js {m['versions']['node']} with ws {m['versions']['ws']} holding the sockets (a process of its own); "
        "client and servers on the same machine. Latencies are the client's, one request at a time on one "
        "keep-alive connection over loopback: the server's time plus well under a millisecond.",
    ]
    if result.get("browse"):
        parts += ["", browse_table(result["browse"], m),
                  "", "PocketBase's rows are what its admin UI sends (read from its bundle), but 50 a page as the "
                      "console's: its UI asks 40 (`perPage=40`) and scrolls by `page=N`. The console asks no total."]
    if result.get("realtime"):
        parts += ["", realtime_table(result["realtime"], m),
                  "", "No peer for the Realtime page: PocketBase's admin UI lists no connections; the target is "
                      "absolute."]
    return "\n".join(parts)


def versions(args):
    def out(command):
        try:
            return subprocess.run(command, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    try:
        ws = json.load(open(os.path.join(args.modules, "ws/package.json")))["version"]
    except OSError:
        ws = "?"
    pb = out([args.pocketbase, "--version"]).split()
    return {"pocketbase": pb[-1] if pb else "?", "node": out(["node", "--version"]) or "?", "ws": ws}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--pocketbase", default=os.path.join(ROOT, "bench/.tools/venv/bin/pocketbase"))
    parser.add_argument("--modules", default=os.path.join(ROOT, "bench/.tools/realtime/node_modules"),
                        help="a node_modules holding ws (bench/realtime.sh installs it there)")
    parser.add_argument("--rows", type=int, default=100000, help="records in the browsed collection (default 100,000)")
    parser.add_argument("--sockets", type=int,
                        help="sockets held for the Realtime page (default 18,000, or `ulimit -n` less 2,000 if lower)")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind in the data browser")
    parser.add_argument("--rt-requests", type=int, default=50, help="requests of each kind on the Realtime page")
    parser.add_argument("--only", choices=["browse", "realtime"], help="measure only one of the two")
    parser.add_argument("--no-pocketbase", action="store_true", help="the data browser without its peer")
    parser.add_argument("--log", help="append Cloudlet's output to this file")
    parser.add_argument("--no-docs", action="store_true",
                        help="print only: write neither bench/results/console_scale.json nor docs/performance.md")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/console_scale.json"))
    parser.add_argument("--docs-from", metavar="RESULTS", help="only write docs/performance.md's section again "
                                                               "from a results file")
    args = parse_args(parser)
    if args.docs_from:
        replace_docs_section("console_scale", text(json.load(open(args.docs_from))))
        return 0
    if not os.access(args.binary, os.X_OK):
        parser.error(f"no binary at {args.binary} (this bench never builds: pass --binary)")
    if args.only != "realtime" and not args.no_pocketbase and not os.access(args.pocketbase, os.X_OK):
        parser.error(f"no PocketBase at {args.pocketbase} (bench/console_scale.sh installs it; or --no-pocketbase)")
    if args.only != "browse" and not os.path.isdir(os.path.join(args.modules, "ws")):
        parser.error(f"no ws in {args.modules} (bench/console_scale.sh installs it)")
    if args.rows < PAGE:
        parser.error(f"--rows must be at least {PAGE}")
    args.modules = os.path.abspath(args.modules)
    # Every process started from here (the server, the socket holder) may hold the hard limit of
    # descriptors; as bench/realtime.py: the client holds one per socket, the server one per
    # socket and a few hundred of its own, so 2,000 are kept aside.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    budget = max(100, (hard - 2000) // 10 * 10) if hard > 4000 else hard // 2 // 10 * 10
    wanted = args.sockets or 18000
    args.sockets = min(wanted, budget)
    if args.sockets < wanted:
        print(f"== ulimit -n is {hard}: {args.sockets} sockets, not {wanted}", file=sys.stderr)

    runs = []
    for number in range(1, args.runs + 1):
        if args.runs > 1:
            print(f"== run {number} of {args.runs}", file=sys.stderr)
        runs.append({
            "browse": run_browse(args) if args.only != "realtime" else None,
            "realtime": run_realtime(args) if args.only != "browse" else None,
        })
    result = fold(harmonize(runs))
    binary = os.path.relpath(os.path.abspath(args.binary), ROOT)
    built = datetime.datetime.fromtimestamp(os.path.getmtime(args.binary), datetime.timezone.utc)
    result["meta"] = meta(args.runs, binary=binary, binary_built=built.isoformat(timespec="seconds"),
                          rows=args.rows, requests=args.requests, sockets=args.sockets, nofile=hard,
                          rt_requests=args.rt_requests, targets=TARGETS, versions=versions(args))
    table = text(result)
    publish("console_scale", result, table, args.out, args.no_docs)


if __name__ == "__main__":
    sys.exit(main())
