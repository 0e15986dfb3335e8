#!/usr/bin/env python3
"""The PostgreSQL layout at many apps: what a schema per app costs.

On PostgreSQL each app is a schema `app_{name}` of about ten tables, so the catalog grows with
every app, and every server process (backend) that touches an app's tables loads their
definitions into its own caches. This script measures those costs, in one run:

- creating N apps through the admin API (each: the app, one collection `todos` with a text and
  a bool field, one record), on a throwaway PostgreSQL server (Debian's binaries, fsync on,
  otherwise default settings) and on SQLite, with the rate over the first and last tenth;
- the catalog with N apps against the empty database: rows of `pg_class`, `pg_attribute`,
  `pg_depend` (and `pg_type`, `pg_index`, `pg_constraint`), their sizes with their indexes,
  `pg_catalog` in all, `pg_database_size` and the files of the database's directory; on SQLite,
  the data directory's size and files;
- memory per PostgreSQL connection: Cloudlet runs with `database.pool_size = 4`, and each app is
  requested once per connection of the pool, so that every backend serves every app; after 100,
  1,000 and all N apps each backend's PSS and private memory (`/proc/<pid>/smaps_rollup`) and its
  memory contexts (`pg_log_backend_memory_contexts`: the grand total and `CacheMemoryContext`,
  where the relation and catalog caches live);
- the first request to a cold app: Cloudlet restarted (new connections, empty caches), a few
  requests to other apps to warm the server, then for each of M random apps never touched by
  that server, `GET …/collections/todos/records` (cold) followed by the same request (warm);
  the same on SQLite (the app's database closed, then open).

Creating and measuring the catalog and memory happen once per invocation (creating 10,000 apps
takes minutes); the latencies are measured `--runs` times on restarted servers, each run on
other apps, and reported as medians of the runs with their spread.

Writes bench/results/postgres_layout.json and the section between the `postgres-layout` markers
in docs/performance.md. Only the standard library is used.
"""

import argparse
import concurrent.futures
import glob
import os
import random
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from common import (ROOT, TOKEN, Client, figure, fold, meta, ms, percentile,
                    replace_docs_section, wait_ready, write_results)

COLLECTION = {
    "fields": [
        {"name": "title", "type": "text", "max_length": 200},
        {"name": "done", "type": "bool", "default": False},
    ],
    # Public list, view and create, so that requests need no login: what is measured is the
    # app's tables being reached, not authentication.
    "rules": {"list": "", "view": "", "create": "", "update": None, "delete": None},
}
POOL_SIZE = 4
WARMUP_APPS = 4  # the first apps created: touched to warm each restarted server, never sampled


# ---------------------------------------------------------------------------------------------
# A throwaway PostgreSQL server


def postgres_bin():
    found = sorted(
        (p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(p, "postgres"))),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
    )
    if not found:
        raise SystemExit("PostgreSQL is not installed: apt-get install postgresql "
                         "(bench/postgres_layout.sh does)")
    return found[-1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root():
    return os.geteuid() == 0


def as_postgres(command):
    """The server refuses to run as root: as root, run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] + command if is_root() else command


class PostgresServer:
    """initdb on a temporary directory, the server on a loopback port with its default settings
    (fsync on), and a database `cloudlet` owned by superuser `cloudlet` (trust authentication).
    The server runs under a shell that stops it when its standard input closes, so it stops
    even if this script is killed."""

    def __init__(self):
        self.bin = postgres_bin()
        self.dir = tempfile.mkdtemp(prefix="cloudlet-bench-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "log")
        os.mkdir(self.data)
        if is_root():
            subprocess.run(["chown", "-R", "postgres", self.dir], check=True)
        subprocess.run(
            as_postgres([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "cloudlet",
                         "--auth=trust", "-E", "UTF8", "--locale=C"]),
            check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        script = (f"{self.bin}/postgres -D {self.data} -p {self.port} "
                  f"-c listen_addresses=127.0.0.1 -k {self.dir} >{self.log} 2>&1 & pid=$!; "
                  f"cat >/dev/null; kill -INT $pid; wait $pid")
        self.shell = subprocess.Popen(as_postgres(["sh", "-c", script]), stdin=subprocess.PIPE)
        deadline = time.time() + 30
        while self.psql("postgres", "SELECT 1", check=False).returncode != 0:
            if time.time() > deadline or self.shell.poll() is not None:
                raise RuntimeError(f"PostgreSQL did not start: see {self.log}")
            time.sleep(0.1)
        self.psql("postgres", "CREATE DATABASE cloudlet")
        self.version = self.query("SHOW server_version")[0][0]

    @property
    def url(self):
        return f"postgres://cloudlet@127.0.0.1:{self.port}/cloudlet"

    def psql(self, db, sql, check=True):
        result = subprocess.run(
            [os.path.join(self.bin, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
             "cloudlet", "-d", db, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1",
             "-c", sql],
            capture_output=True, text=True, env=dict(os.environ, PGCONNECT_TIMEOUT="2"))
        if check and result.returncode != 0:
            raise RuntimeError(f"psql: {sql}\n{result.stderr}")
        return result

    def query(self, sql):
        """Rows of `sql` in database `cloudlet`, as lists of strings."""
        out = self.psql("cloudlet", sql).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def database_dir(self):
        oid = self.query("SELECT oid FROM pg_database WHERE datname = 'cloudlet'")[0][0]
        return os.path.join(self.data, "base", oid)

    def log_size(self):
        return os.path.getsize(self.log)

    def read_log(self, offset):
        with open(self.log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def stop(self):
        if self.shell.poll() is None:
            self.shell.stdin.close()
            self.shell.wait(timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Cloudlet


class Cloudlet:
    """`cloudlet serve` on a data directory that outlives restarts; PostgreSQL if `database`."""

    def __init__(self, binary, port, database=None, max_open=None):
        self.binary, self.port, self.database = binary, port, database
        self.dir = tempfile.mkdtemp(prefix="cloudlet-bench-layout-")
        self.config = os.path.join(self.dir, "bench.toml")
        with open(self.config, "w") as f:
            if max_open:
                f.write(f"[apps]\nmax_open = {max_open}\n")
            if database:
                f.write(f"[database]\npool_size = {POOL_SIZE}\n")
        self.process = None

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    def start(self):
        command = [self.binary, "serve", "--data-dir", self.data,
                   "--listen", f"127.0.0.1:{self.port}", "--config", self.config]
        if self.database:
            command += ["--database", self.database]
        env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=TOKEN, CLOUDLET_LOG_LEVEL="warn",
                   CLOUDLET_CONSOLE_LISTEN="off")
        env.pop("CLOUDLET_DATABASE", None)
        with open(os.path.join(self.dir, "server.log"), "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            wait_ready(self.port, self.process)
        except RuntimeError:
            raise RuntimeError(f"cloudlet did not start: see {self.dir}/server.log")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=120)
        self.process = None

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def records_path(app):
    return f"/v1/apps/{app}/collections/todos/records"


def create_apps(port, names, workers, cpu=None):
    """Creates each app with its collection and one record; returns when each app was done,
    in seconds from the start, and how long each took; with `cpu` (a function returning CPU
    seconds by process), also the CPU seconds per app spent in each tenth of the apps."""
    local = threading.local()
    start = time.perf_counter()

    def create(name):
        if not hasattr(local, "client"):
            local.client = Client(port)
        c = local.client
        began = time.perf_counter()
        c.json("POST", "/v1/admin/apps", {"name": name}, expect=201)
        c.json("PUT", f"/v1/admin/apps/{name}/collections/todos", COLLECTION, expect=201)
        c.json("POST", records_path(name), {"title": f"first todo of {name}"}, expect=201,
               auth=False)
        done = time.perf_counter()
        return done - start, done - began

    progress_every = max(1000, len(names) // 10)
    tenth = max(1, len(names) // 10)
    finished, cpu_tenths = [], {}
    last_cpu = cpu() if cpu else None
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for result in pool.map(create, names):
            finished.append(result)
            if cpu and len(finished) % tenth == 0 and len(finished) // tenth <= 10:
                now = cpu()
                for who, seconds in now.items():
                    cpu_tenths.setdefault(who, []).append(
                        round((seconds - last_cpu[who]) * 1000 / tenth, 2))
                last_cpu = now
            if len(finished) % progress_every == 0:
                rate = progress_every / (finished[-1][0] - (finished[-1 - progress_every][0]
                                                            if len(finished) > progress_every else 0))
                print(f"   {len(finished):,} apps, {finished[-1][0]:.0f} s, "
                      f"{rate:.0f} apps/s lately", file=sys.stderr)
    return finished, cpu_tenths


def summarize_creation(created):
    """Total time and rate, and the rate, median latency and CPU per app over the first and the
    last tenth (does creating get slower as the catalog grows? CPU time answers even when
    other work on the machine slows the clock)."""
    finished, cpu_tenths = created
    ends = sorted(end for end, _ in finished)
    durations = [d for _, d in sorted(finished)]
    n = len(ends)
    tenth = max(1, n // 10)
    first_rate = tenth / ends[tenth - 1]
    last_rate = tenth / (ends[-1] - ends[-tenth - 1]) if n > tenth else first_rate
    return {
        "apps": n,
        "seconds": round(ends[-1], 1),
        "apps_per_sec": round(n / ends[-1], 1),
        "first_tenth_apps_per_sec": round(first_rate, 1),
        "last_tenth_apps_per_sec": round(last_rate, 1),
        "first_tenth_p50_ms": ms(durations[:tenth], 50),
        "last_tenth_p50_ms": ms(durations[-tenth:], 50),
        # apps per second in each tenth of the apps, in the order they finished
        "tenths_apps_per_sec": [
            round(tenth / (ends[(i + 1) * tenth - 1] - (ends[i * tenth - 1] if i else 0)), 1)
            for i in range(n // tenth) if (i + 1) * tenth <= n],
        # CPU milliseconds per app in each tenth, by process
        "cpu_ms_per_app_tenths": cpu_tenths,
    }


def dir_usage(path):
    files, size = 0, 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            files += 1
            size += st.st_size
    return files, size


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, reaped_children=False):
    """CPU seconds of a process (all its threads), with those of its exited and reaped children
    if asked."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def postgres_cpu(pg):
    """CPU seconds of the whole PostgreSQL server: the postmaster with the backends and workers
    that have exited, and every process still running under it."""
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    total = proc_cpu(postmaster, reaped_children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == postmaster:
                total += proc_cpu(int(entry))
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
    return total


# ---------------------------------------------------------------------------------------------
# PostgreSQL measurements

CATALOG_SQL = """
SELECT (SELECT count(*) FROM pg_class),
       (SELECT count(*) FROM pg_attribute),
       (SELECT count(*) FROM pg_depend),
       (SELECT count(*) FROM pg_type),
       (SELECT count(*) FROM pg_index),
       (SELECT count(*) FROM pg_constraint),
       (SELECT count(*) FROM pg_namespace),
       pg_total_relation_size('pg_catalog.pg_class'),
       pg_total_relation_size('pg_catalog.pg_attribute'),
       pg_total_relation_size('pg_catalog.pg_depend'),
       (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
         WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r'),
       pg_database_size(current_database())
"""
CATALOG_KEYS = ["pg_class_rows", "pg_attribute_rows", "pg_depend_rows", "pg_type_rows",
                "pg_index_rows", "pg_constraint_rows", "pg_namespace_rows", "pg_class_bytes",
                "pg_attribute_bytes", "pg_depend_bytes", "pg_catalog_bytes", "database_bytes"]


def wal_stats(pg):
    """WAL written and checkpoints since the server started."""
    row = pg.query("SELECT wal_bytes, (SELECT checkpoints_timed + checkpoints_req "
                   "FROM pg_stat_bgwriter) FROM pg_stat_wal")[0]
    return int(float(row[0])), int(row[1])


def catalog(pg):
    pg.psql("cloudlet", "CHECKPOINT")
    row = pg.query(CATALOG_SQL)[0]
    result = dict(zip(CATALOG_KEYS, (int(v) for v in row)))
    result["database_files"], _ = dir_usage(pg.database_dir())
    return result


def whole_dump(pg):
    """`pg_dump --schema-only` of the whole database, as a backup would run it: it locks every
    table in one transaction, so it needs a lock slot per table (the lock table holds about
    `max_locks_per_transaction` × `max_connections`)."""
    started = time.perf_counter()
    result = subprocess.run(
        [os.path.join(pg.bin, "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "cloudlet",
         "--schema-only", "-f", os.devnull, "cloudlet"],
        capture_output=True, text=True, timeout=3600)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    return {
        "ok": result.returncode == 0,
        "seconds": round(time.perf_counter() - started, 1),
        "error": errors[0].split("ERROR:", 1)[1].strip() if errors else None,
        "tables": int(pg.query("SELECT count(*) FROM pg_class WHERE relkind = 'r'")[0][0]),
        "max_locks_per_transaction": int(pg.query("SHOW max_locks_per_transaction")[0][0]),
        "max_connections": int(pg.query("SHOW max_connections")[0][0]),
    }


def cloudlet_backends(pg):
    return [int(r[0]) for r in pg.query(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'cloudlet' "
        "AND datname = 'cloudlet' ORDER BY pid")]


def smaps_rollup(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields


CONTEXT_LINE = re.compile(
    r"\[(\d+)\] LOG:\s+level: (\d+); (?:(\d+) more child contexts containing|(.*?):) (\d+) total in")
GRAND_TOTAL = re.compile(r"\[(\d+)\] LOG:\s+Grand total: (\d+) bytes")


def parse_contexts(text, pid):
    """The memory contexts a backend logged: bytes under each context of level 1, its children
    included (a line "N more child contexts containing …" at level L sums the children that
    were not listed of the context above it at level L), and the grand total."""
    subtrees, current, grand = {}, None, None
    for line in text.splitlines():
        total = GRAND_TOTAL.search(line)
        if total and int(total.group(1)) == pid:
            grand = int(total.group(2))
            continue
        m = CONTEXT_LINE.search(line)
        if not m or int(m.group(1)) != pid:
            continue
        level, more, name, size = int(m.group(2)), m.group(3), m.group(4), int(m.group(5))
        if level == 1 and not more:
            current = name
            subtrees[current] = subtrees.get(current, 0) + size
        elif level >= 1 and current is not None:
            subtrees[current] += size
        elif level == 0 and more:
            subtrees["(children of TopMemoryContext not listed)"] = size
    return grand, subtrees


def memory_contexts(pg, pids):
    """Asks each backend to log its memory contexts and reads them back from the server log:
    {pid: (grand total, {level-1 context: bytes with its children})}."""
    offset = pg.log_size()
    pg.query("SELECT " + ", ".join(f"pg_log_backend_memory_contexts({p})" for p in pids))
    deadline = time.time() + 20
    while True:
        time.sleep(0.2)
        text = pg.read_log(offset)
        parsed = {pid: parse_contexts(text, pid) for pid in pids}
        if all(grand is not None for grand, _ in parsed.values()):
            return parsed
        if time.time() > deadline:
            raise RuntimeError(f"memory contexts of {pids} not logged in time: see {pg.log}")


def backend_memory(pg, pids, apps_served):
    """Each backend's memory, then their mean: what one connection of the pool holds."""
    contexts = memory_contexts(pg, pids)
    rows, subtrees = [], {}
    for pid in pids:
        m = smaps_rollup(pid)
        grand, trees = contexts[pid]
        for name, size in trees.items():
            subtrees.setdefault(name, []).append(size)
        rows.append({
            "pss_kib": m["Pss"],
            "private_kib": m.get("Private_Clean", 0) + m.get("Private_Dirty", 0),
            "pss_anon_kib": m.get("Pss_Anon", 0),
            "pss_shmem_kib": m.get("Pss_Shmem", 0),
            "contexts_kib": grand / 1024,
            "cache_context_kib": trees.get("CacheMemoryContext", 0) / 1024,
        })
    result = {k.replace("_kib", "_mib"): round(statistics.mean(r[k] for r in rows) / 1024, 2)
              for k in rows[0]}
    result["apps_served"] = apps_served
    result["backends"] = len(pids)
    result["pss_mib_max"] = round(max(r["pss_kib"] for r in rows) / 1024, 2)
    result["cache_context_mib_min"] = round(min(r["cache_context_kib"] for r in rows) / 1024, 2)
    result["cache_context_mib_max"] = round(max(r["cache_context_kib"] for r in rows) / 1024, 2)
    largest = sorted(subtrees.items(), key=lambda kv: -statistics.mean(kv[1]))[:6]
    result["largest_contexts_mib"] = {name: round(statistics.mean(sizes) / 1048576, 2)
                                      for name, sizes in largest}
    return result


def fill_pool(port, app, pg, want):
    """Concurrent requests until the pool holds `want` connections; returns their backends."""
    stop = threading.Event()

    def hammer():
        c = Client(port)
        while not stop.is_set():
            c.timed_get(records_path(app))

    threads = [threading.Thread(target=hammer) for _ in range(want * 2)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            pids = cloudlet_backends(pg)
            if len(pids) >= want:
                return pids
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    raise RuntimeError(f"the pool did not open {want} connections")


def memory_phase(args, pg, server, names):
    """Backends of a pool of 4 serving 100, 1,000 and all apps, each app once per connection."""
    server.start()
    try:
        warm = names[0]
        pids = fill_pool(server.port, warm, pg, POOL_SIZE)
        time.sleep(0.5)
        steps = [backend_memory(pg, pids, 1)]
        order = names[1:]
        random.Random(11).shuffle(order)
        marks = sorted({m for m in (100, 1000, len(order)) if m <= len(order)})
        done = 0
        # One request at a time: the pool hands out its connections in turn (first in, first
        # out), so POOL_SIZE requests to an app in a row reach every connection once. Checked
        # after the last step: every backend must have grown alike.
        client = Client(server.port)
        for mark in marks:
            for app in order[done:mark]:
                for _ in range(POOL_SIZE):
                    client.timed_get(records_path(app))
            done = mark
            if cloudlet_backends(pg) != pids:
                raise RuntimeError("the pool's connections changed during the memory phase")
            steps.append(backend_memory(pg, pids, mark + 1))
            print(f"   backends after {mark + 1:,} apps: PSS {steps[-1]['pss_mib']} MiB, "
                  f"contexts {steps[-1]['contexts_mib']} MiB", file=sys.stderr)
        last = steps[-1]
        if last["cache_context_mib_min"] < 0.7 * last["cache_context_mib_max"]:
            raise RuntimeError(f"the backends did not all serve every app: caches of "
                               f"{last['cache_context_mib_min']} to {last['cache_context_mib_max']} MiB")
        return steps
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# Latency of the first request to a cold app


REQUESTS_PER_APP = POOL_SIZE + 1


def latency_run(server, warmups, sample, pg=None):
    """Cloudlet restarted; on PostgreSQL its pool filled (as under load); the server warmed on
    other apps; then, one app after the other, REQUESTS_PER_APP requests in a row to each sampled
    app. The first is cold. The pool hands out its connections in turn, so on PostgreSQL the
    second lands on a connection that has not served the app yet, and the last on one that has:
    it is warm everywhere."""
    server.start()
    try:
        if pg:
            pids = fill_pool(server.port, warmups[0], pg, POOL_SIZE)
        client = Client(server.port)
        for _ in range(10):
            for app in warmups:
                client.timed_get(records_path(app))
                client.timed_get(f"/v1/apps/{app}/health")
        series = [[] for _ in range(REQUESTS_PER_APP)]
        for app in sample:
            for times in series:
                times.append(client.timed_get(records_path(app)))
        if pg and cloudlet_backends(pg) != pids:
            raise RuntimeError("the pool's connections changed during a latency run")
    finally:
        server.stop()
    cold, second, warm = series[0], series[1], series[-1]
    return {
        "cold_p50_ms": ms(cold, 50),
        "cold_p90_ms": ms(cold, 90),
        "second_p50_ms": ms(second, 50),
        "second_p90_ms": ms(second, 90),
        "warm_p50_ms": ms(warm, 50),
        "warm_p90_ms": ms(warm, 90),
        "cold_over_warm_p50": round(statistics.median(cold) / statistics.median(warm), 2),
        "samples": len(sample),
    }


def latency_runs(args, server, names, pg=None):
    pool = names[WARMUP_APPS:]
    order = random.Random(7).sample(pool, len(pool))
    per_run = min(args.cold_samples, len(pool) // args.runs)
    runs = []
    for number in range(args.runs):
        sample = order[number * per_run:(number + 1) * per_run]
        runs.append(latency_run(server, names[:WARMUP_APPS], sample, pg))
        r = runs[-1]
        print(f"   run {number + 1}: cold p50 {r['cold_p50_ms']} ms, p90 {r['cold_p90_ms']} ms; "
              f"second p50 {r['second_p50_ms']} ms; warm p50 {r['warm_p50_ms']} ms", file=sys.stderr)
    return fold(runs)


# ---------------------------------------------------------------------------------------------


def descriptor_budget():
    """Raises the soft descriptor limit to the hard one (children inherit it) and returns
    `apps.max_open` to give the servers if the default (1,000) would not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    # Cloudlet sets aside 3 descriptors per SQLite connection of each app that may be open
    # (1 + 2 readers) and one for its WAL, 3 per function worker (32) and 256 for the rest,
    # and wants at least 64 connections on top (docs/configuration.md).
    needed = 1000 * (3 * 3 + 1) + 32 * 3 + 256 + 64
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, None
    max_open = max(8, (soft - 32 * 3 - 256 - 256) // 10)
    print(f"== ulimit -n is {soft}: apps.max_open lowered to {max_open}", file=sys.stderr)
    return soft, max_open


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--apps", type=int, help="apps to create (default: 10,000; 200 with --quick)")
    parser.add_argument("--cold-samples", type=int,
                        help="cold apps per latency run (default: 200; 50 with --quick)")
    parser.add_argument("--runs", type=int,
                        help="latency runs, each on a restarted server (default: 3; 1 with --quick)")
    parser.add_argument("--workers", type=int, default=8, help="clients creating apps (default 8)")
    parser.add_argument("--port", type=int, default=18760)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 200 apps, one latency run, no docs, no results file")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--out", help="results file (default: bench/results/postgres_layout.json; "
                                      "none with --quick)")
    args = parser.parse_args()
    if args.apps is None:
        args.apps = 200 if args.quick else 10000
    if args.cold_samples is None:
        args.cold_samples = 50 if args.quick else 200
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.out is None and not args.quick:
        args.out = os.path.join(ROOT, "bench/results/postgres_layout.json")
    if args.apps < WARMUP_APPS + args.runs * 2:
        parser.error(f"--apps must be at least {WARMUP_APPS + args.runs * 2}")
    if args.runs < 1 or args.cold_samples < 1:
        parser.error("--runs and --cold-samples must be at least 1")
    if not os.access(args.binary, os.X_OK):
        parser.error(f"no executable {args.binary}: cargo build --release -p cloudlet")

    # PostgreSQL takes about 0.5 MiB of files and 0.25 MiB of WAL per app, SQLite 0.15 MiB.
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < args.apps * 1.5 * 1048576 + 2 * 1073741824:
        raise SystemExit(f"{free / 1073741824:.1f} GiB free in {tempfile.gettempdir()} is too little "
                         f"for {args.apps:,} apps (about 1.5 MiB each, and 2 GiB of WAL): use --apps "
                         "or point TMPDIR elsewhere")
    descriptors, max_open = descriptor_budget()
    names = [f"a{i:05d}" for i in range(args.apps)]
    started, load_at_start = time.time(), round(os.getloadavg()[0], 2)
    results = {"postgres": run_postgres(args, names, max_open),
               "sqlite": run_sqlite(args, names, max_open)}
    results["meta"] = meta(args.runs, apps=args.apps, pool_size=POOL_SIZE,
                           workers=args.workers, descriptor_limit=descriptors,
                           max_open=max_open or 1000,
                           postgres_version=results["postgres"].pop("version"),
                           seconds=round(time.time() - started),
                           load_at_start=load_at_start, load_at_end=round(os.getloadavg()[0], 2))
    print_table(results)
    if args.out:
        write_results(args.out, results)
    if not (args.quick or args.no_docs):
        write_docs(results)


def run_postgres(args, names, max_open):
    print("== PostgreSQL: starting a throwaway server", file=sys.stderr)
    pg = PostgresServer()
    server = Cloudlet(args.binary, args.port, database=pg.url, max_open=max_open)
    try:
        print(f"   PostgreSQL {pg.version} on port {pg.port}, data in {pg.data}", file=sys.stderr)
        server.start()
        empty = catalog(pg)
        wal_before, checkpoints_before = wal_stats(pg)
        print(f"== PostgreSQL: creating {len(names):,} apps ({args.workers} clients)", file=sys.stderr)
        cpu = lambda: {"postgres": postgres_cpu(pg), "cloudlet": proc_cpu(server.process.pid, True)}
        create = summarize_creation(create_apps(server.port, names, args.workers, cpu))
        server.stop()
        wal_after, checkpoints_after = wal_stats(pg)
        create["wal_bytes"] = wal_after - wal_before
        create["wal_bytes_per_app"] = round((wal_after - wal_before) / len(names))
        create["checkpoints"] = checkpoints_after - checkpoints_before
        full = catalog(pg)
        per_app = {k: round((full[k] - empty[k]) / len(names), 1) for k in full}
        dump = whole_dump(pg)
        print(f"   pg_dump --schema-only: {'ok' if dump['ok'] else dump['error']}", file=sys.stderr)
        print(f"== PostgreSQL: first requests to cold apps, {args.runs} run(s)", file=sys.stderr)
        latency = latency_runs(args, server, names, pg)
        print("== PostgreSQL: memory per connection", file=sys.stderr)
        memory = memory_phase(args, pg, server, names)
        return {"version": pg.version, "create": create, "catalog_empty": empty,
                "catalog_full": full, "catalog_per_app": per_app, "dump": dump, "memory": memory,
                "latency": latency}
    finally:
        server.remove()
        pg.stop()


def run_sqlite(args, names, max_open):
    server = Cloudlet(args.binary, args.port, max_open=max_open)
    try:
        server.start()
        print(f"== SQLite: creating {len(names):,} apps ({args.workers} clients)", file=sys.stderr)
        cpu = lambda: {"cloudlet": proc_cpu(server.process.pid, True)}
        create = summarize_creation(create_apps(server.port, names, args.workers, cpu))
        server.stop()
        files, size = dir_usage(os.path.join(server.data, "apps"))
        disk = {"apps_files": files, "apps_bytes": size,
                "bytes_per_app": round(size / len(names)), "files_per_app": round(files / len(names), 1)}
        print(f"== SQLite: first requests to cold apps, {args.runs} run(s)", file=sys.stderr)
        latency = latency_runs(args, server, names)
        return {"create": create, "disk": disk, "latency": latency}
    finally:
        server.remove()


# ---------------------------------------------------------------------------------------------
# Output


def mib(n):
    return f"{n / 1048576:,.1f} MiB"


def kib(n):
    return f"{n / 1024:,.1f} KiB"


def tables(r):
    m, pg, lite = r["meta"], r["postgres"], r["sqlite"]
    n = m["apps"]
    e, f, p = pg["catalog_empty"], pg["catalog_full"], pg["catalog_per_app"]
    pc, sc = pg["create"], lite["create"]

    def cpu_cell(c, who):
        tenths = c["cpu_ms_per_app_tenths"].get(who)
        return f"{tenths[0]:,.1f} → {tenths[-1]:,.1f} ms" if tenths else ""

    def create_row(label, c):
        return (f"| {label} | {c['seconds']:,} s | {c['apps_per_sec']:,} | "
                f"{c['first_tenth_apps_per_sec']:,} → {c['last_tenth_apps_per_sec']:,} | "
                f"{c['first_tenth_p50_ms']:,.1f} → {c['last_tenth_p50_ms']:,.1f} ms | "
                f"{cpu_cell(c, 'postgres')} | {cpu_cell(c, 'cloudlet')} |")

    out = [f"| create {n:,} apps ({m['workers']} clients; app, collection, record) | time | apps/s | "
           "apps/s, first → last tenth | time per app p50, first → last tenth | "
           "PostgreSQL CPU per app, first → last tenth | Cloudlet CPU per app, first → last tenth |",
           "|---|---|---|---|---|---|---|",
           create_row("PostgreSQL", pc),
           create_row("SQLite", sc),
           "",
           f"Creating them on PostgreSQL wrote {mib(pc['wal_bytes'])} of WAL "
           f"({kib(pc['wal_bytes_per_app'])} per app) and ran {pc['checkpoints']} checkpoints.",
           "",
           f"| PostgreSQL catalog | empty database | with {n:,} apps | per app |",
           "|---|---|---|---|"]
    for key, label in [("pg_class_rows", "`pg_class` rows"), ("pg_attribute_rows", "`pg_attribute` rows"),
                       ("pg_depend_rows", "`pg_depend` rows"), ("pg_type_rows", "`pg_type` rows"),
                       ("pg_index_rows", "`pg_index` rows"), ("pg_constraint_rows", "`pg_constraint` rows")]:
        out.append(f"| {label} | {e[key]:,} | {f[key]:,} | {p[key]:,g} |")
    for key, label in [("pg_class_bytes", "`pg_class` size, with indexes"),
                       ("pg_attribute_bytes", "`pg_attribute` size, with indexes"),
                       ("pg_depend_bytes", "`pg_depend` size, with indexes"),
                       ("pg_catalog_bytes", "all of `pg_catalog`")]:
        out.append(f"| {label} | {mib(e[key])} | {mib(f[key])} | {kib(p[key])} |")
    out.append(f"| `pg_database_size` | {mib(e['database_bytes'])} | {mib(f['database_bytes'])} | "
               f"**{kib(p['database_bytes'])}** |")
    out.append(f"| files in the database's directory | {e['database_files']:,} | "
               f"{f['database_files']:,} | {p['database_files']:,g} |")
    d = lite["disk"]
    out.append(f"| SQLite, for comparison: the apps' directories | | {mib(d['apps_bytes'])}, "
               f"{d['apps_files']:,} files | **{kib(d['bytes_per_app'])}**, {d['files_per_app']} files |")
    dump = pg["dump"]
    outcome = (f"done in {dump['seconds']:,} s" if dump["ok"]
               else f"**fails** after {dump['seconds']:,} s: `{dump['error']}`")
    out += ["",
            f"`pg_dump --schema-only` of the whole database ({dump['tables']:,} tables; "
            f"`max_locks_per_transaction` {dump['max_locks_per_transaction']}, `max_connections` "
            f"{dump['max_connections']}): {outcome}."]
    out += ["",
            f"| one PostgreSQL connection (mean of the pool's {m['pool_size']}) after serving | PSS | private | memory contexts | of which caches (`CacheMemoryContext`) |",
            "|---|---|---|---|---|"]
    for step in pg["memory"]:
        label = "1 app (fresh)" if step["apps_served"] == 1 else f"{step['apps_served']:,} apps"
        out.append(f"| {label} | {step['pss_mib']:,} MiB | {step['private_mib']:,} MiB | "
                   f"{step['contexts_mib']:,} MiB | {step['cache_context_mib']:,} MiB |")
    if len(pg["memory"]) >= 3:
        a, b = pg["memory"][-2], pg["memory"][-1]
        apps = b["apps_served"] - a["apps_served"]
        cells = [f"{(b[k] - a[k]) * 1024 / apps:,.1f} KiB"
                 for k in ("pss_mib", "private_mib", "contexts_mib", "cache_context_mib")]
        out.append(f"| each app served from {a['apps_served']:,} to {b['apps_served']:,} | "
                   + " | ".join(cells) + " |")
    pl, sl = pg["latency"], lite["latency"]
    out += ["",
            f"| `GET …/records`, one at a time, {pl['samples']} apps a run | 1st request (cold), p50 / p90 | 2nd, p50 / p90 | {REQUESTS_PER_APP}th (warm), p50 / p90 | cold ÷ warm, p50 |",
            "|---|---|---|---|---|"]
    for label, l in [(f"PostgreSQL (pool of {m['pool_size']})", pl), ("SQLite", sl)]:
        out.append(f"| {label} | **{figure(l, 'cold_p50_ms', ' ms')}** / {figure(l, 'cold_p90_ms', ' ms')} | "
                   f"{figure(l, 'second_p50_ms', ' ms')} / {figure(l, 'second_p90_ms', ' ms')} | "
                   f"{figure(l, 'warm_p50_ms', ' ms')} / {figure(l, 'warm_p90_ms', ' ms')} | "
                   f"{figure(l, 'cold_over_warm_p50', '×')} |")
    return "\n".join(out)


def print_table(r):
    print(tables(r))


def write_docs(r):
    m = r["meta"]
    runs = "one run" if m["runs"] == 1 else f"medians of {m['runs']} runs"
    text = (f"Run finished {m['date']} at commit `{m['commit']}` on {m['cpus']} CPUs "
            f"({m['seconds'] / 60:.0f} minutes; load average {m['load_at_start']} at the start, "
            f"{m['load_at_end']} at the end): {m['apps']:,} apps, each with one collection "
            f"and one record; PostgreSQL {m['postgres_version']} with its default settings; "
            f"Cloudlet's pool {m['pool_size']} connections. Creation, catalog and memory from one "
            f"pass; latencies {runs}, each on a restarted server and other apps.\n\n" + tables(r))
    replace_docs_section("postgres-layout", text, script="postgres_layout")


if __name__ == "__main__":
    sys.exit(main())
