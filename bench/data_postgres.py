"""Records under rules on PostgreSQL: Cloudlet's PostgreSQL backend beside Parse Server on the
same PostgreSQL server, and Cloudlet on SQLite, in the same run (`bench/data.py --database
postgres`, which bench/data.sh calls).

One throwaway PostgreSQL server (Debian's binaries, bench/postgres_layout.py's `PostgresServer`:
a temporary directory, a loopback port, fsync on, `synchronous_commit` on, every other setting
its default) holds, in each run, a fresh database for Cloudlet and one for each Parse Server
configuration (with `CREATE EXTENSION postgis`, which Parse's PostgreSQL adapter wants); each is
dropped after its server stopped. Every server gets the workload of bench/data.py: a `todos`
collection (Parse: a class `Todo`) whose records only their owner can read and change, the same
indexes, 11,000 records of which 1,000 are alice's; then, as alice, under the same oha load,
list (her not-done todos by priority, 20 a page, not counted), get (one of hers by id) and
create (a new one, owned by her). Before the load, each server is checked: alice's list has a
page, bob reading alice's todo is refused. Under the load, every response must be a success.

Parse Server 9 (npm, bench/peers/parse, installed by bench/data.sh into bench/.tools/parse) runs
from its command line in production mode (NODE_ENV=production, log level warn, no dashboard,
GraphQL or LiveQuery), with its default pool of 10 PostgreSQL connections per
process; `--parse-processes 1,2` measures it as one process and with its cluster option at 2
processes, both in every run, and the ratios are taken against the faster of the two on each
workload in each run. Owner-only access on Parse: class-level permissions with pointer
permissions on `owner` (find, get, update and delete only where `owner` is the caller; create
only when logged in; no client may add fields) and a `beforeSave` trigger that sets `owner` to
the caller (bench/peers/parse/cloud.js); `--parse-access acl` uses per-object ACLs instead.
Users sign up beforehand and send their session token (`X-Parse-Session-Token`).

The servers take turns in an order that rotates from run to run. Before its load, each
PostgreSQL database is vacuumed and analysed (as autovacuum would have done by then) and a
checkpoint is forced, so that no server pays for the writes of the one before.

Writes bench/results/data_postgres.json and the section between the `data-postgres` markers in
docs/performance.md.
"""

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

from common import ROOT, figure, fold, meta, replace_docs_section, server, wait_ready, write_results
from data import measure, parallel, setup_cloudlet
from postgres_layout import PostgresServer, postgres_cpu, proc_cpu

PARSE_APP_ID = "bench"
PARSE_MASTER_KEY = "bench-parse-master-key-0123456789"
USER_PASSWORD = "benchpassword123"
OPERATIONS = ["list", "get", "create"]
CLOUD_CODE = os.path.join(ROOT, "bench/peers/parse/cloud.js")
CLOUDLET_SETTINGS = "[auth]\nlogins_per_ip_per_minute = 1000000\n"


# ---------------------------------------------------------------------------------------------
# Parse Server


class ParseClient:
    """One keep-alive connection to Parse Server's REST API, as the master or as a user."""

    def __init__(self, port, master=False, session=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"X-Parse-Application-Id": PARSE_APP_ID}
        if master:
            self.headers["X-Parse-Master-Key"] = PARSE_MASTER_KEY
        if session:
            self.headers["X-Parse-Session-Token"] = session

    def call(self, method, path, body=None):
        headers = dict(self.headers)
        if body is not None:
            body = json.dumps(body)
            headers["Content-Type"] = "application/json"
        self.conn.request(method, "/parse" + path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, method, path, body=None, expect=200):
        status, data = self.call(method, path, body)
        if status != expect:
            raise RuntimeError(f"Parse {method} {path}: {status} {data[:300]!r}")
        return json.loads(data)


def parse_version(parse_dir):
    with open(os.path.join(parse_dir, "node_modules/parse-server/package.json")) as f:
        return json.load(f)["version"]


@contextlib.contextmanager
def parse_server(parse_dir, database_url, port, processes, access, log):
    """Parse Server from its command line, in production mode, on `database_url`; with
    `processes` > 1, its cluster option forks that many workers. Yields once every process
    listens. The server runs in its own process group, stopped as a whole."""
    work = tempfile.mkdtemp(prefix="parse-bench-")
    config = {
        "appId": PARSE_APP_ID,
        "masterKey": PARSE_MASTER_KEY,
        "databaseURI": database_url,
        "serverURL": f"http://127.0.0.1:{port}/parse",
        "host": "127.0.0.1",
        "port": port,
        "mountPath": "/parse",
        "cloud": CLOUD_CODE,
        # No client may create classes or add fields (the default, said again).
        "allowClientClassCreation": False,
        # Warnings and errors only (Cloudlet runs at its `warn` level too): to the console (a
        # file here) and to Parse's log files, which stay empty under the load. (The command
        # line puts its default back for `"logsFolder": null`, and takes the environment's
        # `null` for a folder's name: it always writes log files.)
        "logLevel": "warn",
        "logsFolder": os.path.join(work, "logs"),
        "mountGraphQL": False,
        "mountPlayground": False,
        "startLiveQueryServer": False,
    }
    if processes > 1:
        config["cluster"] = processes
    config_path = os.path.join(work, "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    env = dict(os.environ, NODE_ENV="production", BENCH_ACCESS=access)
    for name in ("VERBOSE", "PARSE_SERVER_LOG_LEVEL", "TESTING"):
        env.pop(name, None)
    binary = os.path.join(parse_dir, "node_modules/parse-server/bin/parse-server")
    with open(log, "ab") as out:
        process = subprocess.Popen(["node", binary, config_path], cwd=work, env=env, stdout=out,
                                   stderr=out, start_new_session=True)
    try:
        wait_ready(port, process, "/parse/health")
        # Each process says so when it listens; the cluster's primary hands connections only
        # to workers that do.
        deadline = time.time() + 60
        while read_text(log).count("parse-server running on") < processes:
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"Parse Server did not start {processes} process(es): see {log}")
            time.sleep(0.1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        # The cluster's workers leave when their primary does; wait for the whole group.
        deadline = time.time() + 30
        while group_alive(process.pid) and time.time() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(work, ignore_errors=True)


def group_cpu(pgid):
    """CPU seconds of the processes still running in a process group (Parse's primary and its
    workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if os.getpgid(int(entry)) == pgid:
                    total += proc_cpu(int(entry))
    return total


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def setup_parse(port, others, access):
    """The class `Todo` with its permissions and indexes, alice and bob signed up (their
    session tokens kept), and the records, created in batches with the master key."""
    master = ParseClient(port, master=True)
    if access == "pointer":
        # find, count and get only where `owner` is the caller (readUserFields); update and
        # delete likewise (writeUserFields); create for anyone logged in, the trigger making
        # them the owner; no new fields from clients.
        permissions = {"find": {}, "count": {}, "get": {}, "update": {}, "delete": {},
                       "create": {"requiresAuthentication": True}, "addField": {},
                       "readUserFields": ["owner"], "writeUserFields": ["owner"],
                       "protectedFields": {"*": []}}
    else:
        # Everything for anyone logged in, and each record's ACL decides.
        logged_in = {"requiresAuthentication": True}
        permissions = {"find": logged_in, "count": logged_in, "get": logged_in,
                       "update": logged_in, "delete": logged_in, "create": logged_in,
                       "addField": {}, "protectedFields": {"*": []}}
    master.json("POST", "/schemas/Todo", {
        "className": "Todo",
        "fields": {
            "title": {"type": "String"},
            "done": {"type": "Boolean"},
            "priority": {"type": "Number"},
            "owner": {"type": "Pointer", "targetClass": "_User"},
        },
        "classLevelPermissions": permissions,
        # Cloudlet's default owner index, and the index the list reads its page from.
        "indexes": {"todo_owner_created": {"owner": 1, "createdAt": 1},
                    "todo_list": {"owner": 1, "done": 1, "priority": 1}},
    })
    users = {}
    for name in ["alice", "bob"]:
        user = ParseClient(port).json("POST", "/users", {"username": name, "password": USER_PASSWORD},
                                      expect=201)
        users[name] = {"id": user["objectId"], "token": user["sessionToken"]}

    def batch(local, start):
        if not hasattr(local, "c"):
            local.c = ParseClient(port, master=True)
        owner = "alice" if start < 1000 else "bob"
        end = min(start + 100, 1000 + others if start >= 1000 else 1000)
        requests = []
        for i in range(start, end):
            body = {"title": f"todo {i}", "done": i % 3 == 0, "priority": i % 5,
                    "owner": {"__type": "Pointer", "className": "_User", "objectId": users[owner]["id"]}}
            if access == "acl":
                body["ACL"] = {users[owner]["id"]: {"read": True, "write": True}}
            requests.append({"method": "POST", "path": "/parse/classes/Todo", "body": body})
        results = local.c.json("POST", "/batch", {"requests": requests})
        failed = [r for r in results if "success" not in r]
        if failed:
            raise RuntimeError(f"Parse batch: {failed[:3]}")
        return [r["success"]["objectId"] for r in results]

    pages = parallel(list(range(0, 1000, 100)) + list(range(1000, 1000 + others, 100)), batch)
    headers = [f"X-Parse-Application-Id: {PARSE_APP_ID}",
               f"X-Parse-Session-Token: {users['alice']['token']}"]
    return {
        "headers": headers,
        "token": users["alice"]["token"],
        "other_token": users["bob"]["token"],
        "one_id": pages[0][1],
        "list": "/parse/classes/Todo?" + urllib.parse.urlencode(
            {"where": json.dumps({"done": False}), "order": "-priority", "limit": 20}),
        "get": "/parse/classes/Todo/{id}",
        "create_path": "/parse/classes/Todo",
        "create_body": json.dumps({"title": "new", "priority": 1}),
        "create_status": 201,
    }


def check_parse(port, setup, processes):
    """Alice's list has a full page, and bob can not read alice's todo: asked on new
    connections, so that every process of a cluster answers."""
    for _ in range(2 * processes + 2):
        alice = ParseClient(port, session=setup["token"])
        page = alice.json("GET", setup["list"].removeprefix("/parse"))["results"]
        if len(page) != 20:
            raise RuntimeError(f"Parse: alice's list has {len(page)} todos, not 20")
        status, body = ParseClient(port, session=setup["other_token"]).call(
            "GET", setup["get"].removeprefix("/parse").format(id=setup["one_id"]))
        if status != 404:
            raise RuntimeError(f"Parse: bob reading alice's todo answered {status} {body[:200]!r}")


def check_cloudlet(port, setup):
    """Alice's list has a full page, and bob can not read alice's todo."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", setup["list"], headers={"Authorization": f"Bearer {setup['token']}"})
    response = conn.getresponse()
    page = json.loads(response.read())
    items = page.get("items", page.get("records"))
    if response.status != 200 or items is None or len(items) != 20:
        raise RuntimeError(f"Cloudlet: alice's list answered {response.status}: {str(page)[:200]}")
    conn.request("GET", setup["get"].format(id=setup["one_id"]),
                 headers={"Authorization": f"Bearer {setup['other_token']}"})
    response = conn.getresponse()
    body = response.read()
    if response.status not in (403, 404):
        raise RuntimeError(f"Cloudlet: bob reading alice's todo answered {response.status} {body[:200]!r}")


# ---------------------------------------------------------------------------------------------
# One run


class Context:
    def __init__(self, args, pg, logs):
        self.args, self.pg, self.logs = args, pg, logs
        self.processes = [int(p) for p in args.parse_processes.split(",")]
        self.run = 0

    def database(self, name, postgis=False):
        self.pg.psql("postgres", f"CREATE DATABASE {name}")
        if postgis:
            self.pg.psql(name, "CREATE EXTENSION postgis")
        return f"postgres://cloudlet@127.0.0.1:{self.pg.port}/{name}"

    def drop(self, name):
        self.pg.psql("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def settle(self, name):
        """What autovacuum would have done by now (statistics for the planner, the visibility
        map), and a checkpoint, so that the load does not pay for the setup's writes."""
        self.pg.psql(name, "VACUUM ANALYZE")
        self.pg.psql(name, "CHECKPOINT")

    def connections(self, name):
        return int(self.pg.query(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'")[0][0])

    def log(self, name):
        return os.path.join(self.logs, f"run{self.run}-{name}.log")


def run_cloudlet_postgres(ctx):
    name = f"cloudlet_r{ctx.run}"
    url = ctx.database(name)
    log = ctx.log("cloudlet-postgres")
    try:
        with server(ctx.args.binary, ctx.args.port, CLOUDLET_SETTINGS, database=url, log=log) as process:
            setup = setup_cloudlet(ctx.args.port, ctx.args.others)
            check_cloudlet(ctx.args.port, setup)
            ctx.settle(name)
            cpu = lambda: {"server": proc_cpu(process.pid), "postgres": postgres_cpu(ctx.pg)}
            try:
                result = measure(ctx.args.port, setup, ctx.args.seconds, check_status=True, cpu=cpu)
            except (RuntimeError, SystemExit) as e:
                raise SystemExit(f"Cloudlet on PostgreSQL failed under load: {e}\n"
                                 f"its log ({log}) ends with:\n{read_text(log)[-3000:]}")
            result["connections_after"] = ctx.connections(name)
            return result
    finally:
        ctx.drop(name)


def run_parse(ctx, processes):
    name = f"parse_r{ctx.run}_p{processes}"
    url = ctx.database(name, postgis=True)
    log = ctx.log(f"parse-{processes}")
    port = ctx.args.port + 1
    try:
        with parse_server(ctx.args.parse, url, port, processes, ctx.args.parse_access, log) as process:
            setup = setup_parse(port, ctx.args.others, ctx.args.parse_access)
            check_parse(port, setup, processes)
            ctx.settle(name)
            cpu = lambda: {"server": group_cpu(process.pid), "postgres": postgres_cpu(ctx.pg)}
            try:
                result = measure(port, setup, ctx.args.seconds, check_status=True, cpu=cpu)
            except (RuntimeError, SystemExit) as e:
                raise SystemExit(f"Parse Server ({processes} process(es)) failed under load: {e}\n"
                                 f"its log ({log}) ends with:\n{read_text(log)[-3000:]}")
            result["connections_after"] = ctx.connections(name)
            return result
    finally:
        ctx.drop(name)


def run_cloudlet_sqlite(ctx):
    log = ctx.log("cloudlet-sqlite")
    with server(ctx.args.binary, ctx.args.port, CLOUDLET_SETTINGS, log=log) as process:
        setup = setup_cloudlet(ctx.args.port, ctx.args.others)
        check_cloudlet(ctx.args.port, setup)
        return measure(ctx.args.port, setup, ctx.args.seconds, check_status=True,
                       cpu=lambda: {"server": proc_cpu(process.pid)})


def one_run(ctx):
    """Every server once, in an order that rotates from run to run."""
    steps = [("cloudlet_postgres", lambda: run_cloudlet_postgres(ctx))]
    steps += [(f"parse_{p}", lambda p=p: run_parse(ctx, p)) for p in ctx.processes]
    steps += [("cloudlet_sqlite", lambda: run_cloudlet_sqlite(ctx))]
    shift = (ctx.run - 1) % len(steps)
    results = {}
    for key, step in steps[shift:] + steps[:shift]:
        print(f"   {key}", file=sys.stderr)
        results[key] = step()
        print("     " + ", ".join(f"{op} {results[key][op]['requests_per_sec']:,}/s "
                                  f"p99 {results[key][op]['p99_ms']} ms" for op in OPERATIONS),
              file=sys.stderr)
    return results


def ratios(results, processes):
    """Within one run: Cloudlet on PostgreSQL over the faster Parse configuration on each
    workload (its p99 over that configuration's p99), over each Parse configuration, and
    Cloudlet on SQLite over Cloudlet on PostgreSQL."""
    c = results["cloudlet_postgres"]
    out = {"parse": {}, "parse_best": {}, "sqlite_over_postgres": {}}
    best = {}
    for op in OPERATIONS:
        key = max((f"parse_{p}" for p in processes), key=lambda k: results[k][op]["requests_per_sec"])
        best[op] = int(key.split("_")[1])
        p = results[key][op]
        out["parse"][op] = {"rps": round(c[op]["requests_per_sec"] / p["requests_per_sec"], 2),
                            "p99": round(c[op]["p99_ms"] / p["p99_ms"], 2)}
        out["parse_best"][op] = {"rps": p["requests_per_sec"], "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"]}
        s = results["cloudlet_sqlite"][op]
        out["sqlite_over_postgres"][op] = {
            "rps": round(s["requests_per_sec"] / c[op]["requests_per_sec"], 2),
            "p99": round(s["p99_ms"] / c[op]["p99_ms"], 2)}
    for n in processes:
        out[f"parse_{n}"] = {op: {
            "rps": round(c[op]["requests_per_sec"] / results[f"parse_{n}"][op]["requests_per_sec"], 2),
            "p99": round(c[op]["p99_ms"] / results[f"parse_{n}"][op]["p99_ms"], 2)} for op in OPERATIONS}
    return out, best


# ---------------------------------------------------------------------------------------------


def server_log_notes(logs):
    """What the servers logged beyond starting (Cloudlet logs at `warn`, Parse at `warn`): the
    first lines of each log that has more, leaving out Parse's deprecation notices at start, the
    `Object not found` of the checks (bob reading alice's todo) and its shutdown."""
    notes = {}
    for name in sorted(os.listdir(logs)):
        lines = read_text(os.path.join(logs, name)).splitlines()
        if "cloudlet" in name:
            interesting = [line for line in lines if not line.startswith("Cloudlet is listening")]
        else:
            interesting = [line for line in lines if line.startswith("error:")
                           and not line.startswith("error: Object not found.")]
        if interesting:
            notes[name.removesuffix(".log")] = [line[:300] for line in interesting[:5]]
            print(f"   {name}: {len(interesting)} line(s) logged, the first: {interesting[0][:300]}",
                  file=sys.stderr)
    return notes


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True).stdout


def machine():
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) // 1024
    return {"cpu_model": model, "memory_mib": memory, "kernel": platform.release()}


def main(args):
    processes = [int(p) for p in args.parse_processes.split(",")]
    if not processes or min(processes) < 1:
        raise SystemExit("--parse-processes: one or more counts, each at least 1")
    if not os.access(args.binary, os.X_OK):
        raise SystemExit(f"no executable {args.binary}: cargo build --release -p cloudlet")
    if not os.path.exists(os.path.join(args.parse, "node_modules/parse-server/bin/parse-server")):
        raise SystemExit(f"Parse Server is not installed in {args.parse}: bench/data.sh installs it")
    os.environ.pop("CLOUDLET_DATABASE", None)
    # What the binary was presumably built from: the commit, and any uncommitted changes to the
    # Rust sources, as they stand when the run starts.
    commit = git("rev-parse", "--short", "HEAD").strip()
    uncommitted = git("status", "--porcelain", "--", "crates", "Cargo.toml", "Cargo.lock").splitlines()
    logs = tempfile.mkdtemp(prefix="data-postgres-logs-")
    print("== starting a throwaway PostgreSQL server", file=sys.stderr)
    pg = PostgresServer()
    started, load_at_start = time.time(), round(os.getloadavg()[0], 2)
    try:
        settings = {row[0]: row[1] for row in pg.query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
            "'shared_buffers', 'max_connections', 'wal_level', 'full_page_writes')")}
        pg.psql("postgres", "CREATE DATABASE postgis_version")
        pg.psql("postgis_version", "CREATE EXTENSION postgis")
        postgis = pg.psql("postgis_version", "SELECT postgis_lib_version()").stdout.strip()
        pg.psql("postgres", "DROP DATABASE postgis_version")
        print(f"   PostgreSQL {pg.version}, PostGIS {postgis}, port {pg.port}; logs in {logs}",
              file=sys.stderr)
        ctx = Context(args, pg, logs)
        runs, best = [], {op: {} for op in OPERATIONS}
        for number in range(1, args.runs + 1):
            ctx.run = number
            print(f"== run {number} of {args.runs}", file=sys.stderr)
            result = one_run(ctx)
            result["ratios"], faster = ratios(result, processes)
            for op, n in faster.items():
                best[op][str(n)] = best[op].get(str(n), 0) + 1
            runs.append(result)
    finally:
        pg.stop()
    results = fold(runs)
    log_notes = server_log_notes(logs)
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    results["meta"] = meta(
        args.runs, records=1000 + args.others, alices=1000, seconds=args.seconds, connections=16,
        postgres_version=pg.version, postgis_version=postgis, postgres_settings=settings,
        parse_version=parse_version(args.parse), node_version=node,
        parse_processes=processes, parse_access=args.parse_access,
        parse_faster_processes=best, minutes=round((time.time() - started) / 60, 1),
        load_at_start=load_at_start, load_at_end=round(os.getloadavg()[0], 2),
        uncommitted_sources=[line[3:] for line in uncommitted], server_log_notes=log_notes,
        **machine())
    results["meta"]["commit"] = commit
    if args.out:
        write_results(args.out, results)
    else:
        print(json.dumps(results, indent=2))
    print(table(results), file=sys.stderr)
    if not (args.quick or args.no_docs):
        write_docs(results)
    shutil.rmtree(logs, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Output


def table(r):
    m = r["meta"]
    processes = m["parse_processes"]
    columns = [("cloudlet_postgres", "Cloudlet on PostgreSQL")]
    for n in processes:
        columns.append((f"parse_{n}", f"Parse Server {m['parse_version']}, "
                        + ("1 process" if n == 1 else f"cluster of {n}")))
    columns.append(("cloudlet_sqlite", "Cloudlet on SQLite"))
    out = ["| workload | server | requests/s | p50 | p99 | CPU per request: server | PostgreSQL |",
           "|---|---|---|---|---|---|---|"]
    for op in OPERATIONS:
        for key, label in columns:
            s = r[key][op]
            cpu = s["cpu_us_per_request"]
            postgres = figure(cpu, "postgres", " µs") if "postgres" in cpu else ""
            out.append(f"| {op} | {label} | {figure(s, 'requests_per_sec')} | "
                       f"{figure(s, 'p50_ms', ' ms')} | {figure(s, 'p99_ms', ' ms')} | "
                       f"{figure(cpu, 'server', ' µs')} | {postgres} |")
    out += ["", "| workload | Cloudlet on PostgreSQL ÷ Parse: throughput | p99 | 5× target "
                "(and a lower p99) | Parse's faster configuration | Cloudlet on SQLite ÷ on PostgreSQL: throughput |",
            "|---|---|---|---|---|---|"]
    for op in OPERATIONS:
        ratio = r["ratios"]["parse"][op]
        met = ratio["rps"] >= 5 and ratio["p99"] < 1
        faster = m["parse_faster_processes"][op]
        which = ", ".join(
            f"{'1 process' if n == '1' else f'cluster of {n}'} in {count} of {m['runs']}"
            for n, count in sorted(faster.items(), key=lambda kv: -kv[1]))
        out.append(f"| {op} | **{figure(ratio, 'rps', '×')}** | {figure(ratio, 'p99', '×')} | "
                   f"{'met' if met else '**not met**'} | {which} | "
                   f"{figure(r['ratios']['sqlite_over_postgres'][op], 'rps', '×')} |")
    return "\n".join(out)


def write_docs(r):
    m = r["meta"]
    s = m["postgres_settings"]
    runs = "One run" if m["runs"] == 1 else f"Medians of {m['runs']} runs"
    access = ("pointer permissions on `owner` and a `beforeSave` trigger setting it"
              if m["parse_access"] == "pointer" else "per-object ACLs set by a `beforeSave` trigger")
    cpus = f"{m['cpus']} CPUs ({m['cpu_model']}), {m['memory_mib'] / 1024:.0f} GiB"
    text = (
        f"{runs} finished {m['date']} at commit `{m['commit']}`"
        + (f" (the working tree also had uncommitted changes to "
           f"{', '.join(f'`{f}`' for f in m['uncommitted_sources'])})"
           if m["uncommitted_sources"] else "")
        + f" on {cpus}, shared with other "
        f"work (load average {m['load_at_start']} at the start, {m['load_at_end']} at the end; "
        f"{m['minutes']:.0f} minutes); {m['records']:,} records, {m['alices']:,} of them the "
        f"caller's; oha, {m['connections']} connections, {m['seconds']} s each. PostgreSQL "
        f"{m['postgres_version']} with PostGIS {m['postgis_version']}, one server for all: "
        f"fsync {s.get('fsync')}, synchronous_commit {s.get('synchronous_commit')}, "
        f"shared_buffers {int(s.get('shared_buffers', 0)) * 8 // 1024} MiB, max_connections "
        f"{s.get('max_connections')}. Cloudlet: release build, `durability = \"full\"` (the "
        f"default), `database.pool_size` 16 (the default). Parse Server {m['parse_version']} on "
        f"Node.js {m['node_version']}, NODE_ENV=production, log level warn (nothing logged under "
        f"the load), its "
        f"default 10 PostgreSQL connections per process; owner-only through {access}; session "
        f"tokens from users signed up beforehand. The ratios compare Cloudlet on PostgreSQL with "
        f"the faster Parse configuration on each workload within each run. CPU per request: the "
        f"CPU time the server's processes (and all of PostgreSQL's) spent during the workload, "
        f"over its requests; oha ran on the same 2 cores.\n\n" + table(r))
    replace_docs_section("data-postgres", text, script="data")
