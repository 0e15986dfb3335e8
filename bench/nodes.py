"""Several nodes on one PostgreSQL database (`bench/nodes.sh`): how soon a change made through
one node holds on another, and what keeping the nodes in step costs the writes.

One throwaway PostgreSQL server (bench/postgres_layout.py's `PostgresServer`: Debian's binaries,
a temporary directory, a loopback port, fsync and `synchronous_commit` on) holds a fresh
database per measurement.

- Rule propagation: two `cloudlet serve` nodes with `[database] shared = true` and one master
  key. Node A changes the `todos` collection's list rule, alternately owner-only and everyone's;
  a client polls node B as bob (who owns nothing) until B answers by the new rule (alice's todo
  listed, or not). The time from A's answer to B's first answer by the new rule, `--changes`
  changes per run (50). Target: p99 at most 200 ms. A poll takes about a millisecond, which is
  the resolution.
- Write cost: creates (as in bench/data.py, oha, 16 connections) on one node with
  `database.shared` on (every write rings the other nodes, gathered into one `NOTIFY` per node
  per 5 ms) against off (a node alone: no bell, no shared rate limits), each on a fresh
  database, in alternating order. Target: on at least 90% of off.

Medians of `--runs` runs (3). Writes bench/results/nodes.json and the `nodes` section of
docs/performance.md.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    Client, ROOT, figure, heading, meta, percentile, publish, repeat, server)
from data import measure_create, setup_cloudlet  # noqa: E402
from postgres_layout import PostgresServer  # noqa: E402

SETTINGS = "[auth]\nlogins_per_ip_per_minute = 1000000\nlogins_per_app_per_minute = 1000000\n"


def shared_settings(key_file):
    # Shared nodes share their files too: a directory beside the key, as a mounted volume.
    files = os.path.join(os.path.dirname(key_file), "files")
    return (f"master_key_file = {json.dumps(key_file)}\n[database]\nshared = true\n"
            f"[files]\nurl = {json.dumps('file://' + files)}\n" + SETTINGS)


def database(pg, name):
    pg.psql("postgres", f"CREATE DATABASE {name}")
    return pg.url.rsplit("/", 1)[0] + "/" + name


def propagation(args, pg, key_file, run):
    """Milliseconds from a rule change answered on A to B answering by it, per change."""
    url = database(pg, f"propagation{run}")
    config = shared_settings(key_file)
    with server(args.binary, args.port, config, database=url), \
            server(args.binary, args.port + 1, config, database=url):
        a, b = Client(args.port), Client(args.port + 1)
        a.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
        a.json("PUT", "/v1/admin/apps/bench/auth/providers/dev", {"enabled": True})
        fields = [{"name": "title", "type": "text"}]
        a.json("PUT", "/v1/admin/apps/bench/collections/todos", {"fields": fields}, expect=201)
        tokens = {}
        for user in ["alice", "bob"]:
            tokens[user] = Client(args.port, bearer=None).json(
                "POST", "/v1/apps/bench/auth/sessions", {"provider": "dev", "user": user},
                expect=201)["access_token"]
        Client(args.port, bearer=tokens["alice"]).json(
            "POST", "/v1/apps/bench/collections/todos/records", {"title": "alice's"}, expect=201)
        bob = Client(args.port + 1, bearer=tokens["bob"])
        path = "/v1/apps/bench/collections/todos/records"
        # B caches the rules: it has answered by them before every change.
        assert bob.json("GET", path)["items"] == []
        delays = []
        for change in range(args.changes):
            everyone = change % 2 == 0
            rules = {"list": "", "view": ""} if everyone else {}
            a.json("PUT", "/v1/admin/apps/bench/collections/todos",
                   {"fields": fields, "rules": rules})
            answered = time.perf_counter()
            while True:
                listed = len(bob.json("GET", path)["items"])
                if (listed == 1) == everyone:
                    break
                if time.perf_counter() - answered > 10:
                    raise SystemExit("node B did not take the rule changed on A within 10 s")
            delays.append((time.perf_counter() - answered) * 1000)
        return delays


def write_cost(args, pg, key_file, run):
    """Creates a second on one node, with the nodes' bell on and off, in alternating order."""
    results = {}
    modes = [("shared", shared_settings(key_file)), ("alone", SETTINGS)]
    if run % 2:
        modes.reverse()
    for name, config in modes:
        url = database(pg, f"writes_{name}{run}")
        with server(args.binary, args.port, config, database=url):
            setup = setup_cloudlet(args.port, args.others)
            results[name] = measure_create(args.port, setup, args.seconds, check_status=True)
    return results


def one_run(args, pg, key_file, counter=[0]):
    counter[0] += 1
    run = counter[0]
    delays = propagation(args, pg, key_file, run)
    writes = write_cost(args, pg, key_file, run)
    return {
        "propagation_ms": {"p50": round(percentile(delays, 50), 1),
                           "p99": round(percentile(delays, 99), 1),
                           "max": round(max(delays), 1)},
        "creates_shared": writes["shared"],
        "creates_alone": writes["alone"],
        "shared_over_alone": round(writes["shared"]["requests_per_sec"]
                                   / writes["alone"]["requests_per_sec"], 3),
    }


def table(results):
    m = results["meta"]
    p = results["propagation_ms"]
    return f"""{heading(m)}: two nodes on one PostgreSQL {m['postgres']} database, {m['changes']} rule
changes a run, creates under oha for {m['seconds']} s each (`bench/nodes.sh`).

| measure | figure | target |
|---|---|---|
| a rule changed on node A holds on node B, p50 | {p['p50']} ms | |
| the same, p99 | {p['p99']} ms | at most 200 ms |
| creates a second on one node, nodes in step (`shared = true`) | {figure(results['creates_shared'], 'requests_per_sec', '/s')} | |
| creates a second on one node alone | {figure(results['creates_alone'], 'requests_per_sec', '/s')} | |
| in step over alone | {results['shared_over_alone']}× | at least 0.9× |
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--port", type=int, default=18760)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/nodes.json"))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    pg = PostgresServer()
    key_dir = tempfile.mkdtemp(prefix="cloudlet-bench-key-")
    key_file = os.path.join(key_dir, "master.key")
    with open(key_file, "w") as f:
        f.write("3c" * 32)
    try:
        results = repeat(args.runs, lambda: one_run(args, pg, key_file))
    finally:
        pg.stop()
    results["meta"] = meta(args.runs, changes=args.changes, seconds=args.seconds,
                           postgres=pg.version)
    publish("nodes", results, table(results), args.out, args.no_docs)


if __name__ == "__main__":
    main()
