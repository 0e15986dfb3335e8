"""What the benchmarks in bench/ share: starting the release binary on a fresh data directory,
a keep-alive HTTP client, the oha load generator, percentiles, repeated runs folded into medians
with their spread, and writing results and the tables in docs/performance.md. Standard library
only."""

import contextlib
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TOKEN = "bench-admin-token-0123456789"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(values, p):
    return round(percentile(values, p) * 1000, 3)


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def thread_count(pid):
    return proc_status(pid, "Threads")


class Client:
    """One keep-alive HTTP/1.1 connection. `bearer` is sent unless a call says otherwise."""

    def __init__(self, port, bearer=TOKEN):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.bearer = bearer

    def call(self, method, path, body=None, auth=True, bearer=None):
        headers = {}
        token = bearer or (self.bearer if auth else None)
        if token:
            headers["authorization"] = f"Bearer {token}"
        if body is not None:
            body = json.dumps(body)
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        return response.status, response.read()

    def json(self, method, path, body=None, expect=200, **kwargs):
        status, data = self.call(method, path, body, **kwargs)
        if status != expect:
            raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None

    def timed_get(self, path):
        start = time.perf_counter()
        status, _ = self.call("GET", path, auth=False)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return elapsed


def wait_ready(port, process, path="/readyz"):
    deadline = time.time() + 30
    while True:
        try:
            if Client(port).call("GET", path, auth=False)[0] == 200:
                return
        except OSError:
            pass
        if time.time() > deadline or process.poll() is not None:
            raise RuntimeError(f"nothing became ready on port {port}")
        time.sleep(0.05)


@contextlib.contextmanager
def server(binary, port, config_text="", database=None, log=None):
    """`cloudlet serve` on a fresh data directory; yields the process. With `database` (a
    `postgres://` URL) the data lives there; with `log` (a path) the server's output goes to
    that file instead of nowhere."""
    data = tempfile.mkdtemp(prefix="cloudlet-bench-")
    config = os.path.join(data, "bench.toml")
    with open(config, "w") as f:
        f.write(config_text)
    env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=TOKEN, CLOUDLET_LOG_LEVEL="warn",
               CLOUDLET_CONSOLE_LISTEN="off")
    command = [binary, "serve", "--data-dir", os.path.join(data, "data"),
               "--listen", f"127.0.0.1:{port}", "--config", config]
    if database:
        command += ["--database", database]
        env.pop("CLOUDLET_DATABASE", None)
    output = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    try:
        wait_ready(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)
        if log:
            output.close()
        subprocess.run(["rm", "-rf", data], check=False)


@contextlib.contextmanager
def emulator(binary, port):
    """`cloudlet emulator`; yields the process."""
    process = subprocess.Popen(
        [binary, "emulator", "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, process, "/emulator/health")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)


def oha(url, seconds, connections, headers=(), method="GET", body=None, expect_status=None):
    """oha's figures for `url` under `connections` for `seconds`. oha counts any response as a
    success, whatever its status: with `expect_status`, every response must have that status,
    or this raises with the statuses and errors oha saw."""
    command = ["oha", "-z", f"{seconds}s", "-c", str(connections), "--no-tui", "--output-format", "json",
               "-m", method]
    for header in headers:
        command += ["-H", header]
    if body is not None:
        command += ["-d", body]
    out = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    statuses = report.get("statusCodeDistribution", {})
    if expect_status is not None and set(statuses) != {str(expect_status)}:
        raise RuntimeError(f"{method} {url}: expected only {expect_status}, oha saw statuses "
                           f"{statuses} and errors {report.get('errorDistribution', {})}")
    latency = report["latencyPercentiles"]
    return {
        "requests_per_sec": round(report["summary"]["requestsPerSec"]),
        "success_rate": report["summary"]["successRate"],
        "p50_ms": round(latency["p50"] * 1000, 3),
        "p99_ms": round(latency["p99"] * 1000, 3),
        "connections": connections,
        "seconds": seconds,
    }


def parse_args(parser):
    """Adds --runs to a script's options and parses them. A smoke run (--no-load) measures once
    unless told otherwise: it only checks that the script still works, and CI waits for it."""
    smoke = parser.get_default("no_load") is not None  # None: the script has no --no-load
    default = "3; 1 with --no-load, a smoke run that only checks that the script works" if smoke else "3"
    parser.add_argument(
        "--runs", type=int,
        help="measure this many times, each run on fresh servers, and report every figure as the "
             f"median of the runs with their spread (default: {default})")
    args = parser.parse_args()
    if args.runs is None:
        args.runs = 1 if smoke and args.no_load else 3
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def repeat(count, run):
    """Calls `run()` `count` times and folds what the runs return into one result (see `fold`)."""
    results = []
    for number in range(1, count + 1):
        if count > 1:
            print(f"== run {number} of {count}", file=sys.stderr)
        results.append(run())
    return fold(results)


def fold(runs):
    """One result from the results of several runs, all of the same shape: each number is the
    median of the runs' numbers, so that one noisy run can neither make nor break a figure. A
    dict whose numbers differed between runs gets a "spread" entry with, for each of those, the
    lowest and the highest run. Numbers that were the same in every run (settings such as
    `connections`, and everything after a single run) have no spread."""
    first = runs[0]
    if isinstance(first, dict):
        return fold_dict(runs)
    if is_number(first):
        return median(runs)
    return first  # text, or None for a phase a smoke run skips: the same in every run


def fold_dict(runs):
    folded, spread = {}, {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        folded[key] = fold(values)
        if is_number(values[0]) and min(values) != max(values):
            spread[key] = {"min": min(values), "max": max(values)}
    if spread:
        folded["spread"] = spread
    return folded


def is_number(value):
    return isinstance(value, (int, float))


def median(values):
    middle = statistics.median(values)
    # An even number of runs averages the middle two: keep integers integers, and no float noise.
    return round(middle) if all(isinstance(v, int) for v in values) else round(middle, 3)


def figure(section, key, unit=""):
    """`section[key]` as the tables show it: the median, then ± the largest deviation of a run
    from it, relative to the median (nothing when every run measured the same)."""
    value = section[key]
    text = f"{value:,}{unit}"
    spread = section.get("spread", {}).get(key)
    if spread and value:
        deviation = max(spread["max"] - value, value - spread["min"]) / value
        text += f" ±{deviation:.1%}"
    return text


def heading(meta):
    """The line above a results table: when, at which commit, on how many CPUs, how many runs."""
    runs = "One run" if meta["runs"] == 1 else f"Medians of {meta['runs']} runs"
    return f"{runs} finished {meta['date']} at commit `{meta['commit']}` on {meta['cpus']} CPUs"


def meta(runs, **extra):
    return {
        "runs": runs,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "cpus": os.cpu_count(),
        **extra,
    }


def write_results(path, results):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(json.dumps(results, indent=2))


def publish(section, result, table, out, no_docs, script=None):
    """A run's results: printed only (`no_docs`), or written to `out` and, where
    docs/performance.md has the section's markers, into it; then its table."""
    if no_docs:
        print(json.dumps(result, indent=2))
    else:
        write_results(out, result)
        doc = open(os.path.join(ROOT, "docs/performance.md")).read()
        if f"<!-- {section}:begin" in doc:
            replace_docs_section(section, table, script)
        else:
            print(f"docs/performance.md has no {section} markers: table not written there", file=sys.stderr)
    print("\n" + table)


def replace_docs_section(name, text, script=None):
    """Replaces what stands between `<!-- {name}:begin …` and `<!-- {name}:end -->`; the section
    says it was written by `bench/{script}.py` (by default, the section's name)."""
    path = os.path.join(ROOT, "docs/performance.md")
    doc = open(path).read()
    begin = doc.index(f"<!-- {name}:begin")
    end_marker = f"<!-- {name}:end -->"
    end = doc.index(end_marker) + len(end_marker)
    block = f"<!-- {name}:begin (written by bench/{script or name}.py; do not edit by hand) -->\n{text}\n{end_marker}"
    with open(path, "w") as out:
        out.write(doc[:begin] + block + doc[end:])
