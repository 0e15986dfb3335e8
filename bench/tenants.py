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

Each run starts a new server; every figure is the median of the runs, with their spread.
Writes bench/results/tenants.json and the table between the markers in docs/performance.md.
Only the standard library is used.
"""

import argparse
import concurrent.futures
import os
import random
import statistics
import sys
import threading
import time

from common import (ROOT, Client, figure, heading, meta, ms, oha, parse_args, percentile, repeat,
                    replace_docs_section, rss_kib, server, thread_count, write_results)


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
    args = parse_args(parser)
    cold_samples = min(args.cold_samples, args.apps - 1)

    results = repeat(args.runs, lambda: run_on_new_server(args, cold_samples))
    results["meta"] = meta(args.runs, apps=args.apps, cold_samples=cold_samples)
    write_results(args.out, results)
    if not args.no_docs:
        write_docs(results)


def run_on_new_server(args, cold_samples):
    """One run, checked on its own: a run that contradicts itself must not hide in a median."""
    config = f"[apps]\nidle_timeout_secs = {args.idle_timeout}\n"
    with server(args.binary, args.port, config) as process:
        results = run(args, process.pid, cold_samples)
    check(results)
    return results


def run(args, pid, cold_samples):
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
    table = f"""{heading(meta)}, {meta['apps']:,} apps.

| measure | value |
|---|---|
| create {c['apps']:,} apps through the API (8 clients) | {figure(c, 'seconds', ' s')} ({figure(c, 'apps_per_sec', ' apps/s')}) |
| RSS, empty server | {figure(m, 'rss_mib_empty', ' MiB')} |
| RSS, idle with {meta['apps']:,} apps (open: {m['open_apps_idle']:.0f}, threads: {m['threads_idle']}) | **{figure(m, 'rss_mib_idle_with_apps', ' MiB')}** |
| RSS after opening {meta['cold_samples']:,} cold apps (open: {m['open_apps_after_sweep']:.0f}, threads: {m['threads_after_sweep']}) | {figure(m, 'rss_mib_after_sweep', ' MiB')} |
| RSS after the idle timeout closed them (open: {m['open_apps_after_idle_close']:.0f}, threads: {m['threads_after_idle_close']}) | {figure(m, 'rss_mib_after_idle_close', ' MiB')} |
| first request to a cold app, p50 / p99 / max | **{figure(f, 'cold_p50_ms', ' ms')} / {figure(f, 'cold_p99_ms', ' ms')}** / {figure(f, 'cold_max_ms', ' ms')} |
| same request to a hot app, p50 / p99 (interleaved baseline) | {figure(f, 'hot_p50_ms', ' ms')} / {figure(f, 'hot_p99_ms', ' ms')} |
| cold ÷ hot, p50 / p99 | {figure(f, 'cold_over_hot_p50', '×')} / {figure(f, 'cold_over_hot_p99', '×')} |
| hot app under load (oha, {l['connections']} connections, {l['seconds']} s) | {figure(l, 'requests_per_sec', ' req/s')}, p50 {figure(l, 'p50_ms', ' ms')}, p99 {figure(l, 'p99_ms', ' ms')} |"""
    replace_docs_section("tenants", table)


if __name__ == "__main__":
    sys.exit(main())
