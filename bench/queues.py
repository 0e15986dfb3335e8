#!/usr/bin/env python3
"""Durable queues: Cloudlet against BullMQ on Redis (or, with `--database postgres`, against
graphile-worker on PostgreSQL), side by side, in the same run.

Both answer a send only once it is on disk: Cloudlet on SQLite with its default durability
(`full`; its claims and acknowledgements are relaxed writes, docs/operations.md), Redis with
`appendonly yes` and `appendfsync always`. Redis is Debian's `redis-server`, started here on a temporary directory
and a loopback port; BullMQ is npm `bullmq` (with `ioredis`) as locked in bench/peers/bullmq.
One Node.js process (bench/queues.mjs) drives either side. Each run measures, on fresh servers
(a fresh app, or a flushed Redis, per workload):

- enqueue: 8 concurrent clients sending batches of 100 for `--seconds`; Cloudlet through
  `POST /v1/admin/apps/{app}/queues/{q}/messages`, BullMQ through `Queue.addBulk`;
- claim and acknowledge, 16 no-op consumers, on `--messages` messages sent beforehand; Cloudlet
  through the HTTP API (16 loops, each `POST …/claims {"max": 16}` then one `POST …/acks` for
  the batch, until the claims come back empty) and through a no-op function consumer
  (`batch: 10, concurrency: 16`, until `GET …/queues/{q}` counts nothing left); BullMQ through a
  `Worker` with concurrency 16, a no-op processor and `removeOnComplete`;
- enqueue to start, an idle consumer: one message at a time, `--gap-ms` apart; the consumer
  notes when it starts. Cloudlet: a function consumer (`batch: 1`), writing its start time into
  a record; BullMQ: a `Worker` (concurrency 1) in the sending process.
- delayed messages: `--delayed` messages (10,000) with random delays spread over
  `--delayed-window` seconds (60), sent at once in batches of 100, the same delays on both
  sides; how late each starts after its due time. Cloudlet: a function consumer (`batch: 10,
  concurrency: 4`) writing its start time into a record; BullMQ: `addBulk` with `opts.delay` and
  a `Worker` (concurrency 4) in the sending process.

With `--database postgres`, Cloudlet stores its queues on PostgreSQL and the peer is
graphile-worker (npm, as locked in bench/peers/graphile-worker) on the same throwaway server
(Debian's PostgreSQL, default settings: fsync on, synchronous_commit on; `track_wal_io_timing`
on, to time the WAL's flushes, which each send's commit waits for), each in its own
database; the same workloads, through `WorkerUtils.addJobs`, a runner with the same
concurrency and `runAt` for the delayed messages.

Every figure, the ratios too, is the median of the runs with their spread. Writes
bench/results/queues.json and the `queues` section of docs/performance.md (or
queues_postgres.json and `queues-postgres`).
"""

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

from common import (ROOT, Client, figure, heading, meta, parse_args, repeat, replace_docs_section,
                    server)

TARGETS = {"enqueue": 20000, "claim_ack": 10000, "latency_p50_ms": 1.0, "latency_p99_ms": 5.0,
           "delayed_p99_ms": 100.0}

DELAYED_FUNCTION = """
export default async (event, ctx) => {
  // The clock as it reads, in steps of 0.1 ms: a lateness reads up to 0.1 ms short.
  const started = performance.timeOrigin + performance.now();
  await ctx.db.batch(event.messages.map((m) => ({
    op: 'create', collection: 'starts', data: { sent: m.payload.due, started },
  })));
};
"""

LATENCY_FUNCTION = """
export default async (event, ctx) => {
  // The start, read between the steps of the function's own clock (0.1 ms): at the first
  // line the clock reads `first`; a busy loop counts its turns until the clock moves to the
  // next step's edge (`edge`), then the turns of the whole step after it. The driver puts the
  // start `turns` turns before the edge, a turn being a step over the runs' median `step` (a
  // run preempted while counting `step` would otherwise put its start too early).
  const first = performance.now();
  let turns = 0;
  while (performance.now() === first) turns++;
  const next = performance.now();
  let step = 0;
  while (performance.now() === next) step++;
  const edge = performance.timeOrigin + next;
  for (const m of event.messages) {
    await ctx.db.collection('starts').add({ sent: m.payload.sent, edge, turns, step });
  }
};
"""


def node(mode, settings):
    out = subprocess.run(["node", os.path.join(ROOT, "bench/queues.mjs"), mode, json.dumps(settings)],
                         check=True, capture_output=True, text=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis(port):
    """redis-server on a temporary directory: every write in the append-only file, fsynced before
    it is acknowledged; no RDB snapshots."""
    data = tempfile.mkdtemp(prefix="redis-bench-")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
         "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
         "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        settings = {key: redis_cli(port, "config", "get", key).split("\n")[1]
                    for key in ["appendonly", "appendfsync"]}
        if settings != {"appendonly": "yes", "appendfsync": "always"}:
            raise RuntimeError(f"redis-server runs with {settings}")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def redis_cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def new_app(port, name, queue, **queue_settings):
    admin = Client(port)
    key = admin.json("POST", "/v1/admin/apps", {"name": name}, expect=201)
    admin.json("PUT", f"/v1/admin/apps/{name}/queues/{queue}", queue_settings, expect=201)
    return key


def counts(admin, app, queue):
    return admin.json("GET", f"/v1/admin/apps/{app}/queues/{queue}")


def deploy(admin, app, name, source, trigger):
    status, body = admin.call("PUT", f"/v1/admin/apps/{app}/functions/{name}",
                              {"source": source, "triggers": [trigger]})
    if status not in (200, 201):
        raise RuntimeError(f"deploy {name}: {status} {body[:300]!r}")


def left(queue_counts):
    return sum(queue_counts.get(k, 0) for k in ["ready", "delayed", "in_flight"])


def measure_cloudlet(args):
    port = args.port
    results = {}
    with server(args.binary, port, log=args.log, database=args.database_url):
        admin = Client(port)

        def base(key):
            # The load clients hold the app's secret key, as a backend does (the admin token is
            # the whole instance's).
            return {"port": port, "token": key["secret_key"], "queue": "q"}

        key = new_app(port, "enqueue", "q")
        results["enqueue"] = node("cloudlet-enqueue", {**base(key), "app": "enqueue", "clients": 8,
                                                       "batch": 100, "seconds": args.seconds})

        key = new_app(port, "claim", "q")
        node("cloudlet-fill", {**base(key), "app": "claim", "count": args.messages})
        results["claim_ack_http"] = node("cloudlet-claim", {**base(key), "app": "claim", "consumers": 16,
                                                            "max": 16})
        results["claim_ack_http"]["left"] = left(counts(admin, "claim", "q"))

        key = new_app(port, "drain", "q")
        node("cloudlet-fill", {**base(key), "app": "drain", "count": args.messages})
        start = time.perf_counter()
        deploy(admin, "drain", "noop", "export default async () => {}",
               {"queue": "q", "batch": 10, "concurrency": 16})
        deadline = start + max(120, args.messages / 100)
        while True:
            c = counts(admin, "drain", "q")
            if left(c) == 0:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the function consumer did not drain the queue: {c}")
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        results["claim_ack_function"] = {"messages_per_sec": round(args.messages / elapsed),
                                         "seconds": round(elapsed, 3), "dead": c.get("dead", 0)}

        key = new_app(port, "latency", "q")
        admin.json("PUT", "/v1/admin/apps/latency/collections/starts", {
            "fields": [{"name": "sent", "type": "number"}, {"name": "edge", "type": "number"},
                       {"name": "turns", "type": "integer"}, {"name": "step", "type": "integer"}]},
            expect=201)
        deploy(admin, "latency", "stamp", LATENCY_FUNCTION, {"queue": "q", "batch": 1, "concurrency": 1})
        # One warm-up message (the first run compiles the function), not counted.
        node("cloudlet-latency-send", {**base(key), "app": "latency", "count": 1, "gap_ms": 500})
        if args.pg:
            quiet(args.pg)
        flushes = wal_flushes(args.pg) if args.pg else None
        node("cloudlet-latency-send", {**base(key), "app": "latency", "count": args.latency_messages,
                                       "gap_ms": args.gap_ms})
        wal_flush = flush_ms(flushes, wal_flushes(args.pg)) if args.pg else None
        time.sleep(1)
        records = list_records(port, key["secret_key"], "latency", "starts")
        records.sort(key=lambda r: r["sent"])
        samples = records[1:]
        if len(samples) != args.latency_messages:
            raise RuntimeError(f"{len(samples)} of {args.latency_messages} latency messages started")
        # Turns of the busy loop in one 0.1 ms step of the function's clock, the median: a
        # start lies that share of a step before its edge, at most one step. A run preempted
        # while it counted up to the edge counts fewer turns, and its start reads late.
        step = sorted(r["step"] for r in samples)[len(samples) // 2]
        delays = [r["edge"] - 0.1 * min(r["turns"] / step, 1.0) - r["sent"] for r in samples]
        results["latency_function"] = {
            "p50_ms": percentile(delays, 50), "p99_ms": percentile(delays, 99),
            "max_ms": percentile(delays, 100), "samples": len(delays),
            "clock": "interpolated",
            "turns_per_step_p50": step,
            # Runs whose count up to the edge outran the median step (capped at one step).
            "turns_over_a_step": sum(r["turns"] > step for r in samples),
        }
        if wal_flush is not None:
            results["latency_function"]["wal_flush_ms"] = wal_flush

        key = new_app(port, "delayed", "q")
        admin.json("PUT", "/v1/admin/apps/delayed/collections/starts", {
            "fields": [{"name": "sent", "type": "number"}, {"name": "started", "type": "number"}]},
            expect=201)
        deploy(admin, "delayed", "stamp", DELAYED_FUNCTION, {"queue": "q", "batch": 10, "concurrency": 4})
        node("cloudlet-delayed-send", {**base(key), "app": "delayed", "delays": args.delays})
        deadline = time.perf_counter() + max(args.delays) + 60
        while left(counts(admin, "delayed", "q")) > 0 and time.perf_counter() < deadline:
            time.sleep(0.5)
        records = list_records(port, key["secret_key"], "delayed", "starts")
        late = [r["started"] - r["sent"] for r in records]
        results["delayed"] = {"p50_ms": percentile(late, 50), "p99_ms": percentile(late, 99),
                              "max_ms": percentile(late, 100), "started": len(late),
                              "sent": len(args.delays)}
    return results


def list_records(port, key, app, collection):
    client, records, cursor = Client(port, bearer=key), [], None
    while True:
        path = f"/v1/apps/{app}/collections/{collection}/records?limit=100" + ("&cursor=" + urllib.parse.quote(cursor) if cursor else "")
        page = client.json("GET", path)
        records += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return records


def percentile(values, p):
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))], 3)


def measure_bullmq(args):
    port = free_port()
    base = {"redis_port": port, "modules": args.bullmq_modules, "queue": "q"}
    results = {}
    with redis(port):
        results["enqueue"] = node("bullmq-enqueue", {**base, "clients": 8, "batch": 100, "seconds": args.seconds})
        redis_cli(port, "flushall")
        results["claim_ack"] = node("bullmq-work", {**base, "count": args.messages, "concurrency": 16})
        redis_cli(port, "flushall")
        results["latency"] = node("bullmq-latency", {**base, "count": args.latency_messages, "gap_ms": args.gap_ms})
        redis_cli(port, "flushall")
        results["delayed"] = node("bullmq-delayed", {**base, "delays": args.delays, "concurrency": 4})
        results["redis_aof"] = {key: redis_cli(port, "config", "get", key).split("\n")[1]
                                for key in ["appendonly", "appendfsync"]}
    return results


def measure_graphile(args):
    base = {"database": args.peer_database, "modules": args.graphile_modules}
    results = {}
    args.pg.psql("postgres", "DROP DATABASE IF EXISTS graphile WITH (FORCE)")
    args.pg.psql("postgres", "CREATE DATABASE graphile")
    results["enqueue"] = node("graphile-enqueue", {**base, "clients": 8, "batch": 100, "seconds": args.seconds})
    graphile_reset(args)
    results["claim_ack"] = node("graphile-work", {**base, "count": args.messages, "concurrency": 16})
    graphile_reset(args)
    quiet(args.pg)
    flushes = wal_flushes(args.pg)
    results["latency"] = node("graphile-latency", {**base, "count": args.latency_messages, "gap_ms": args.gap_ms})
    results["latency"]["wal_flush_ms"] = flush_ms(flushes, wal_flushes(args.pg))
    graphile_reset(args)
    results["delayed"] = node("graphile-delayed", {**base, "delays": args.delays, "concurrency": 4})
    return results


def quiet(pg):
    """Lets PostgreSQL finish what the workloads before left it, on both sides before the latency
    samples (one message at a time, which time the queue, not a neighbour's cleanup): the
    checkpoint that an enqueue's hundreds of thousands of rows started, spread over minutes
    (`CHECKPOINT` ends it now), and autovacuum's pass over those rows (waited for, up to a
    minute)."""
    pg.psql("postgres", "CHECKPOINT")
    deadline = time.time() + 60
    while time.time() < deadline and int(pg.query(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")[0][0]):
        time.sleep(0.5)


def wal_flushes(pg):
    """PostgreSQL's WAL flushes so far and the milliseconds they took, from `pg_stat_wal` (the
    benchmark's server times them: `track_wal_io_timing` on)."""
    syncs, ms = pg.query("SELECT wal_sync, wal_sync_time FROM pg_stat_wal")[0]
    return int(syncs), float(ms)


def flush_ms(before, after):
    """The mean time of one WAL flush between two `wal_flushes` readings: what a commit that
    waits for the disk waits at least."""
    syncs = after[0] - before[0]
    return round((after[1] - before[1]) / syncs, 3) if syncs else 0.0


def graphile_reset(args):
    """Empties graphile-worker's tables between workloads, as a flushed Redis for BullMQ."""
    args.pg.psql("graphile", "TRUNCATE graphile_worker._private_jobs CASCADE")


def run_side_by_side(args):
    if args.database == "postgres":
        # A fresh database for Cloudlet each run.
        args.pg.psql("postgres", "DROP DATABASE IF EXISTS cloudlet WITH (FORCE)")
        args.pg.psql("postgres", "CREATE DATABASE cloudlet")
        results = {"cloudlet": measure_cloudlet(args), "peer": measure_graphile(args)}
    else:
        results = {"cloudlet": measure_cloudlet(args), "peer": measure_bullmq(args)}
    c, b = results["cloudlet"], results["peer"]
    results["ratios"] = {
        "enqueue": round(c["enqueue"]["messages_per_sec"] / b["enqueue"]["messages_per_sec"], 2),
        "claim_ack_http": round(c["claim_ack_http"]["messages_per_sec"] / b["claim_ack"]["messages_per_sec"], 2),
        "claim_ack_function": round(c["claim_ack_function"]["messages_per_sec"] / b["claim_ack"]["messages_per_sec"], 2),
        "latency_p50": round(c["latency_function"]["p50_ms"] / b["latency"]["p50_ms"], 2),
        "latency_p99": round(c["latency_function"]["p99_ms"] / b["latency"]["p99_ms"], 2),
        # Three places: on PostgreSQL, graphile-worker's poll makes this ratio small.
        "delayed_p99": round(c["delayed"]["p99_ms"] / b["delayed"]["p99_ms"], 3),
    }
    return results


def versions(args):
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    if args.database == "postgres":
        graphile = json.load(open(os.path.join(args.graphile_modules, "graphile-worker/package.json")))["version"]
        pg = json.load(open(os.path.join(args.graphile_modules, "pg/package.json")))["version"]
        return {"graphile_worker": graphile, "pg": pg, "postgres": args.pg.version, "node": node_version}
    bullmq = json.load(open(os.path.join(args.bullmq_modules, "bullmq/package.json")))["version"]
    ioredis = json.load(open(os.path.join(args.bullmq_modules, "ioredis/package.json")))["version"]
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    return {"bullmq": bullmq, "ioredis": ioredis, "redis": redis_version.removeprefix("v="),
            "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()}


def met(value, target, lower_is_better=False, resolution=0.0):
    """With `resolution` (a latency taken from a clock that truncates the start time to its
    steps), the true value lies in [value, value + resolution)."""
    if lower_is_better and value <= target < value + resolution:
        return f"undetermined: {value} to {round(value + resolution, 3)} ms with a {resolution:g} ms clock"
    ok = value <= target if lower_is_better else value >= target
    return "met" if ok else "**not met**"


def write_docs(r):
    c, b, ratio, m = r["cloudlet"], r["peer"], r["ratios"], r["meta"]
    v = m["versions"]
    postgres = m.get("database") == "postgres"
    peer = "graphile-worker" if postgres else "BullMQ"
    api = ({"enqueue": "`WorkerUtils.addJobs`", "work": "runner, concurrency 16",
            "latency": "runner, concurrency 1", "delayed": "`runAt`, runner concurrency 4"}
           if postgres else
           {"enqueue": "`Queue.addBulk`", "work": "`Worker`, concurrency 16", "latency": "`Worker`",
            "delayed": "`opts.delay`, `Worker` concurrency 4"})
    t = TARGETS
    # Results taken by the function's own clock read short by up to its step (a Date.now()
    # fallback, 1 ms, or performance.now(), 0.1 ms); a console line's time is to the microsecond.
    clock = c["latency_function"]["clock"]
    res = 1.0 if clock.startswith("Date.now") else 0.1 if clock.startswith("performance") else 0.0
    turns = c["latency_function"].get("turns_per_step_p50")
    over = c["latency_function"].get("turns_over_a_step", 0)
    rows = [
        f"| enqueue, 8 clients × batches of 100 | admin HTTP `POST …/queues/q/messages`: "
        f"{figure(c['enqueue'], 'messages_per_sec', ' msg/s')} | {api['enqueue']}: "
        f"{figure(b['enqueue'], 'messages_per_sec', ' msg/s')} | {figure(ratio, 'enqueue', '×')} "
        f"| ≥ {t['enqueue']:,} msg/s: {met(c['enqueue']['messages_per_sec'], t['enqueue'])} |",
        f"| claim + ack, 16 no-op consumers | HTTP `…/claims {{\"max\": 16}}` + `…/acks` per batch: "
        f"{figure(c['claim_ack_http'], 'messages_per_sec', ' msg/s')} | {api['work']}: "
        f"{figure(b['claim_ack'], 'messages_per_sec', ' msg/s')} | {figure(ratio, 'claim_ack_http', '×')} "
        f"| ≥ {t['claim_ack']:,} msg/s: {met(c['claim_ack_http']['messages_per_sec'], t['claim_ack'])} |",
        f"| drain, no-op consumer | function trigger `batch: 10, concurrency: 16`: "
        f"{figure(c['claim_ack_function'], 'messages_per_sec', ' msg/s')} | (the same {api['work'].split(',')[0]}) "
        f"| {figure(ratio, 'claim_ack_function', '×')} "
        f"| ≥ {t['claim_ack']:,} msg/s: {met(c['claim_ack_function']['messages_per_sec'], t['claim_ack'])} |",
        f"| enqueue to start, idle consumer, p50 | function trigger (`batch: 1`): "
        f"{figure(c['latency_function'], 'p50_ms', ' ms')} | {api['latency']}: {figure(b['latency'], 'p50_ms', ' ms')} "
        f"| {figure(ratio, 'latency_p50', '×')} "
        f"| ≤ {t['latency_p50_ms']} ms: {met(c['latency_function']['p50_ms'], t['latency_p50_ms'], True, res)} |",
        f"| enqueue to start, idle consumer, p99 | function trigger (`batch: 1`): "
        f"{figure(c['latency_function'], 'p99_ms', ' ms')} | {api['latency']}: {figure(b['latency'], 'p99_ms', ' ms')} "
        f"| {figure(ratio, 'latency_p99', '×')} "
        f"| ≤ {t['latency_p99_ms']} ms: {met(c['latency_function']['p99_ms'], t['latency_p99_ms'], True, res)} |",
        f"| {m['delayed']:,} delayed messages over {m['delayed_window']} s, start after due, p99 "
        f"| function trigger (`batch: 10, concurrency: 4`): {figure(c['delayed'], 'p99_ms', ' ms')} "
        f"(p50 {figure(c['delayed'], 'p50_ms', ' ms')}) | {api['delayed']}: "
        f"{figure(b['delayed'], 'p99_ms', ' ms')} (p50 {figure(b['delayed'], 'p50_ms', ' ms')}) "
        f"| {figure(ratio, 'delayed_p99', '×')} "
        f"| ≤ {t['delayed_p99_ms']:g} ms: {met(c['delayed']['p99_ms'], t['delayed_p99_ms'], True, 0.1)} |",
    ]
    if res:
        started = (f"Cloudlet's start time: {clock} inside the function, so its delays read up to "
                   f"{res:g} ms short")
    else:
        started = ("Cloudlet's start time: the function's own clock at its first line "
                   "(`performance.timeOrigin + performance.now()`, which counts in steps of 0.1 ms), "
                   "read between its steps by counting a busy loop's turns up to the next step and "
                   f"through the step after (a turn is a step over the samples' median count, "
                   f"{turns}; a median {over:g} of a run's {m['latency_messages']} samples counted "
                   "more turns than that up to the edge, and were put one step before it, the "
                   "earliest they can be); "
                   "for the delayed "
                   "messages, the clock as it reads, so they read up to 0.1 ms short")
    if postgres:
        setup = (f"graphile-worker {v['graphile_worker']} (pg {v['pg']}, its defaults: a pool of 10, "
                 f"`pollInterval` 2 s) and Cloudlet (`database.pool_size` 16, the default) on one "
                 f"PostgreSQL {v['postgres']} server with its default settings (fsync on, "
                 f"synchronous_commit on; `track_wal_io_timing` on to time the WAL's flushes), each in its own database"
                 + ("; before each side's latency samples the benchmark ends the checkpoint the "
                    "workloads before them started (`CHECKPOINT`) and waits for autovacuum to finish"
                    if m.get("quiet_before_latency") else "")
                 + "; both driven")
    else:
        setup = (f"BullMQ {v['bullmq']} (ioredis {v['ioredis']}) on Redis {v['redis']} with `appendonly yes`, "
                 f"`appendfsync always`; Cloudlet on SQLite, `durability = \"full\"` (the default); both driven")
    table = f"""{heading(m)}; {setup} by one Node.js {v['node']} process (bench/queues.mjs) on the same machine. {m['messages']:,} messages for the claim and drain rows, {m['seconds']} s of enqueueing, {m['latency_messages']} latency samples {m['gap_ms']} ms apart; Cloudlet's clients hold each app's secret key ({started}; {peer}'s: `performance.now()` in the sending process).

| workload | Cloudlet | {peer} | Cloudlet / {peer} | issue 15's target for Cloudlet |
|---|---|---|---|---|
""" + "\n".join(rows)
    flushes = c["latency_function"].get("wal_flush_ms"), b["latency"].get("wal_flush_ms")
    if postgres and None not in flushes:
        table += (f"\n\nEach send's commit waits for PostgreSQL's WAL flush (Cloudlet's consumer may start "
                  f"before it; its sender is answered after): during the latency samples one "
                  f"flush took {figure(c['latency_function'], 'wal_flush_ms', ' ms')} on average "
                  f"under Cloudlet's, {figure(b['latency'], 'wal_flush_ms', ' ms')} under {peer}'s "
                  f"(`pg_stat_wal`: `wal_sync_time` over `wal_sync`).")
    replace_docs_section("queues-postgres" if postgres else "queues", table, script="queues")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--bullmq-modules", default=os.path.join(ROOT, "bench/.tools/bullmq/node_modules"))
    parser.add_argument("--graphile-modules",
                        default=os.path.join(ROOT, "bench/.tools/graphile-worker/node_modules"))
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="Cloudlet's storage, and so the peer: BullMQ, or graphile-worker")
    parser.add_argument("--port", type=int, default=18760, help="Cloudlet's")
    parser.add_argument("--seconds", type=int, help="enqueue duration (default 10; 2 with --quick)")
    parser.add_argument("--messages", type=int, help="messages to claim and drain (default 20,000; 2,000 with --quick)")
    parser.add_argument("--latency-messages", type=int, help="latency samples (default 500; 50 with --quick)")
    parser.add_argument("--gap-ms", type=int, default=20, help="between latency messages")
    parser.add_argument("--delayed", type=int, help="delayed messages (default 10,000; 500 with --quick)")
    parser.add_argument("--delayed-window", type=int, help="their delays' spread in seconds (default 60; 5 with --quick)")
    parser.add_argument("--log", help="Cloudlet's output goes to this file")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: one run, small counts; no docs, no results file")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", help="results file (default bench/results/queues.json; none with --quick)")
    parser.add_argument("--docs-from", metavar="RESULTS",
                        help="only write docs/performance.md's section again from a results file")
    explicit_runs = any(a == "--runs" or a.startswith("--runs=") for a in sys.argv[1:])
    args = parse_args(parser)
    if args.docs_from:
        write_docs(json.load(open(args.docs_from)))
        return 0
    args.bullmq_modules = os.path.abspath(args.bullmq_modules)
    if args.quick and not explicit_runs:
        args.runs = 1
    args.seconds = args.seconds or (2 if args.quick else 10)
    args.messages = args.messages or (2000 if args.quick else 20000)
    args.latency_messages = args.latency_messages or (50 if args.quick else 500)
    args.delayed = args.delayed or (500 if args.quick else 10000)
    args.delayed_window = args.delayed_window or (5 if args.quick else 60)
    # The same random delays on both sides (and in every run), so that both race one schedule.
    rng = random.Random(15)
    args.delays = [round(rng.uniform(0, args.delayed_window), 3) for _ in range(args.delayed)]
    args.graphile_modules = os.path.abspath(args.graphile_modules)
    if args.out is None and not args.quick:
        name = "queues_postgres.json" if args.database == "postgres" else "queues.json"
        args.out = os.path.join(ROOT, "bench/results", name)

    args.database_url = args.pg = None
    if args.database == "postgres":
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        from postgres_layout import PostgresServer
        args.pg = PostgresServer()
        # The time of each WAL flush, which every send's commit waits for (a latency's floor).
        args.pg.psql("postgres", "ALTER SYSTEM SET track_wal_io_timing = on")
        args.pg.psql("postgres", "SELECT pg_reload_conf()")
        args.database_url = args.pg.url
        args.peer_database = f"postgres://cloudlet@127.0.0.1:{args.pg.port}/graphile"
    try:
        results = repeat(args.runs, lambda: run_side_by_side(args))
        version_info = versions(args)
    finally:
        if args.pg:
            args.pg.stop()
    results["meta"] = meta(args.runs, seconds=args.seconds, messages=args.messages, database=args.database,
                           latency_messages=args.latency_messages, gap_ms=args.gap_ms,
                           delayed=args.delayed, delayed_window=args.delayed_window,
                           quiet_before_latency=args.pg is not None,
                           versions=version_info, targets=TARGETS)
    if args.out:
        from common import write_results
        write_results(args.out, results)
    else:
        print(json.dumps(results, indent=2))
    if not (args.quick or args.no_docs):
        write_docs(results)


if __name__ == "__main__":
    sys.exit(main())
