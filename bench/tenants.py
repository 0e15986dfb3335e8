#!/usr/bin/env python3
"""Many tenants on one server: memory and first-request latency.

Starts `cloudlet serve` on a fresh data directory, creates N apps through the admin API, then
measures, in the same run:

- the idle server's resident memory (RSS) with N apps, before and after a sweep that opens
  many of them, and after the idle timeout has closed them again;
- the latency of the first request to a cold app (its database closed), against the latency of
  the same request to a hot app, interleaved one for one on the same keep-alive connection so
  that both see the same machine noise;
- the hot app under concurrent load from a real load generator (oha).

Writes bench/results/tenants.json and the table between the markers in docs/performance.md.
Only the standard library is used.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TOKEN = "bench-admin-token-0123456789"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(values, p):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def thread_count(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return -1


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None, auth=True):
        headers = {}
        if auth:
            headers["authorization"] = f"Bearer {TOKEN}"
        if body is not None:
            body = json.dumps(body)
            headers["content-type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data

    def timed_get(self, path):
        start = time.perf_counter()
        status, _ = self.call("GET", path, auth=False)
        elapsed = time.perf_counter() - start
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        return elapsed


def metric(port, name):
    status, body = Client(port).call("GET", "/metrics", auth=False)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise RuntimeError(f"no metric {name}")


def create_apps(port, names, workers):
    local = threading.local()

    def create(name):
        if not hasattr(local, "client"):
            local.client = Client(port)
        status, body = local.client.call("POST", "/v1/admin/apps", {"name": name})
        if status != 201:
            raise RuntimeError(f"creating {name}: {status} {body[:200]}")

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, names))


def oha(url, seconds, connections):
    out = subprocess.run(
        ["oha", "-z", f"{seconds}s", "-c", str(connections), "--no-tui", "--output-format", "json", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--apps", type=int, default=10000)
    parser.add_argument("--cold-samples", type=int, default=2000)
    parser.add_argument("--port", type=int, default=18700)
    parser.add_argument("--idle-timeout", type=int, default=5)
    parser.add_argument("--load-seconds", type=int, default=10)
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/performance.md")
    parser.add_argument("--no-load", action="store_true", help="skip the oha load phase")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/tenants.json"))
    args = parser.parse_args()
    cold_samples = min(args.cold_samples, args.apps - 1)

    data = tempfile.mkdtemp(prefix="cloudlet-bench-")
    config = os.path.join(data, "bench.toml")
    with open(config, "w") as f:
        f.write(f"[apps]\nidle_timeout_secs = {args.idle_timeout}\n")
    env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=TOKEN, CLOUDLET_LOG_LEVEL="warn")
    server = subprocess.Popen(
        [args.binary, "serve", "--data-dir", os.path.join(data, "data"),
         "--listen", f"127.0.0.1:{args.port}", "--config", config],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                if Client(args.port).call("GET", "/readyz", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.05)
        results = run(args, server.pid, cold_samples, data)
    finally:
        server.terminate()
        server.wait(timeout=60)
        subprocess.run(["rm", "-rf", data], check=False)

    results["meta"] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "cpus": os.cpu_count(),
        "apps": args.apps,
        "cold_samples": cold_samples,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    print(json.dumps(results, indent=2))
    if not args.no_docs:
        write_docs(results)
    check(results)


def run(args, pid, cold_samples, data):
    rss_start = rss_kib(pid)
    names = [f"t{i:05d}" for i in range(args.apps)]
    started = time.perf_counter()
    create_apps(args.port, names, workers=8)
    create_seconds = time.perf_counter() - started
    time.sleep(1)
    rss_idle = rss_kib(pid)
    threads_idle = thread_count(pid)
    open_idle = metric(args.port, "cloudlet_open_apps")

    hot = names[0]
    client = Client(args.port)
    for _ in range(200):  # warm the hot app and the connection
        client.timed_get(f"/v1/apps/{hot}/health")
    cold_names = random.Random(7).sample(names[1:], cold_samples)
    cold, warm = [], []
    for name in cold_names:
        cold.append(client.timed_get(f"/v1/apps/{name}/health"))
        warm.append(client.timed_get(f"/v1/apps/{hot}/health"))
    rss_after_sweep = rss_kib(pid)
    threads_after_sweep = thread_count(pid)
    open_after_sweep = metric(args.port, "cloudlet_open_apps")

    load = None
    if not args.no_load:
        load = oha(f"http://127.0.0.1:{args.port}/v1/apps/{hot}/health", args.load_seconds, 16)

    deadline = time.time() + args.idle_timeout * 4 + 10
    while metric(args.port, "cloudlet_open_apps") > 0 and time.time() < deadline:
        time.sleep(0.5)
    # Idle threads of tokio's blocking pool exit after 10 s; wait them out too.
    time.sleep(12)
    rss_after_idle = rss_kib(pid)
    threads_after_idle = thread_count(pid)
    open_after_idle = metric(args.port, "cloudlet_open_apps")

    ms = lambda xs, p: round(percentile(xs, p) * 1000, 3)
    return {
        "create": {
            "apps": args.apps,
            "seconds": round(create_seconds, 2),
            "apps_per_sec": round(args.apps / create_seconds),
        },
        "memory": {
            "rss_mib_empty": round(rss_start / 1024, 1),
            "rss_mib_idle_with_apps": round(rss_idle / 1024, 1),
            "threads_idle": threads_idle,
            "open_apps_idle": open_idle,
            "rss_mib_after_sweep": round(rss_after_sweep / 1024, 1),
            "open_apps_after_sweep": open_after_sweep,
            "threads_after_sweep": threads_after_sweep,
            "rss_mib_after_idle_close": round(rss_after_idle / 1024, 1),
            "open_apps_after_idle_close": open_after_idle,
            "threads_after_idle_close": threads_after_idle,
        },
        "first_request": {
            "cold_p50_ms": ms(cold, 50),
            "cold_p99_ms": ms(cold, 99),
            "cold_max_ms": ms(cold, 100),
            "hot_p50_ms": ms(warm, 50),
            "hot_p99_ms": ms(warm, 99),
            "cold_over_hot_p50": round(statistics.median(cold) / statistics.median(warm), 2),
            "cold_over_hot_p99": round(percentile(cold, 99) / percentile(warm, 99), 2),
        },
        "hot_load": load,
    }


def check(r):
    """Fails the run when the measurements contradict themselves (not a speed assertion)."""
    m = r["memory"]
    problems = []
    if m["open_apps_idle"] != 0:
        problems.append("apps were open right after creation")
    if m["open_apps_after_sweep"] < 1:
        problems.append("the sweep opened no app")
    if m["open_apps_after_idle_close"] != 0:
        problems.append("idle apps were not closed")
    if problems:
        raise SystemExit("tenants benchmark: " + "; ".join(problems))


def write_docs(r):
    m, f, c, l = r["memory"], r["first_request"], r["create"], r["hot_load"]
    if l is None:
        raise SystemExit("docs need the load phase: run without --no-load")
    meta = r["meta"]
    table = f"""<!-- tenants:begin (written by bench/tenants.py; do not edit by hand) -->
Run of {meta['date']} at commit `{meta['commit']}` on {meta['cpus']} CPUs, {meta['apps']:,} apps.

| measure | value |
|---|---|
| create {c['apps']:,} apps through the API (8 clients) | {c['seconds']} s ({c['apps_per_sec']:,} apps/s) |
| RSS, empty server | {m['rss_mib_empty']} MiB |
| RSS, idle with {meta['apps']:,} apps (open: {m['open_apps_idle']:.0f}, threads: {m['threads_idle']}) | **{m['rss_mib_idle_with_apps']} MiB** |
| RSS after opening {meta['cold_samples']:,} cold apps (open: {m['open_apps_after_sweep']:.0f}, threads: {m['threads_after_sweep']}) | {m['rss_mib_after_sweep']} MiB |
| RSS after the idle timeout closed them (open: {m['open_apps_after_idle_close']:.0f}, threads: {m['threads_after_idle_close']}) | {m['rss_mib_after_idle_close']} MiB |
| first request to a cold app, p50 / p99 / max | **{f['cold_p50_ms']} / {f['cold_p99_ms']} ms** / {f['cold_max_ms']} ms |
| same request to a hot app, p50 / p99 (interleaved baseline) | {f['hot_p50_ms']} / {f['hot_p99_ms']} ms |
| cold ÷ hot, p50 / p99 | {f['cold_over_hot_p50']}× / {f['cold_over_hot_p99']}× |
| hot app under load (oha, {l['connections']} connections, {l['seconds']} s) | {l['requests_per_sec']:,} req/s, p50 {l['p50_ms']} ms, p99 {l['p99_ms']} ms |
<!-- tenants:end -->"""
    path = os.path.join(ROOT, "docs/performance.md")
    text = open(path).read()
    begin, end = text.index("<!-- tenants:begin"), text.index("<!-- tenants:end -->") + len("<!-- tenants:end -->")
    with open(path, "w") as out:
        out.write(text[:begin] + table + text[end:])


if __name__ == "__main__":
    sys.exit(main())
