"""What the benchmarks in bench/ share: starting the release binary on a fresh data directory,
a keep-alive HTTP client, the oha load generator, percentiles, and writing results and the
tables in docs/performance.md. Standard library only."""

import contextlib
import datetime
import http.client
import json
import os
import subprocess
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
def server(binary, port, config_text=""):
    """`cloudlet serve` on a fresh data directory; yields the process."""
    data = tempfile.mkdtemp(prefix="cloudlet-bench-")
    config = os.path.join(data, "bench.toml")
    with open(config, "w") as f:
        f.write(config_text)
    env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=TOKEN, CLOUDLET_LOG_LEVEL="warn")
    process = subprocess.Popen(
        [binary, "serve", "--data-dir", os.path.join(data, "data"),
         "--listen", f"127.0.0.1:{port}", "--config", config],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, process)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=60)
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


def oha(url, seconds, connections, headers=(), method="GET", body=None):
    command = ["oha", "-z", f"{seconds}s", "-c", str(connections), "--no-tui", "--output-format", "json",
               "-m", method]
    for header in headers:
        command += ["-H", header]
    if body is not None:
        command += ["-d", body]
    out = subprocess.run(command + [url], check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    latency = report["latencyPercentiles"]
    return {
        "requests_per_sec": round(report["summary"]["requestsPerSec"]),
        "success_rate": report["summary"]["successRate"],
        "p50_ms": round(latency["p50"] * 1000, 3),
        "p99_ms": round(latency["p99"] * 1000, 3),
        "connections": connections,
        "seconds": seconds,
    }


def meta(**extra):
    return {
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


def replace_docs_section(name, text):
    """Replaces what stands between `<!-- {name}:begin …` and `<!-- {name}:end -->`."""
    path = os.path.join(ROOT, "docs/performance.md")
    doc = open(path).read()
    begin = doc.index(f"<!-- {name}:begin")
    end_marker = f"<!-- {name}:end -->"
    end = doc.index(end_marker) + len(end_marker)
    block = f"<!-- {name}:begin (written by bench/{name}.py; do not edit by hand) -->\n{text}\n{end_marker}"
    with open(path, "w") as out:
        out.write(doc[:begin] + block + doc[end:])
