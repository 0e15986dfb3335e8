#!/usr/bin/env python3
"""Login and authenticated requests: what identity costs.

Starts `cloudlet emulator` and `cloudlet serve` (rate limits lifted), sets up an app whose
WeChat provider points at the emulator, then measures in the same run:

- session creation per second through the emulator (a code traded with the "platform" over
  HTTP, the user found or created, a session stored, a token signed), against dev logins
  (the same without the platform call), from the same concurrent clients;
- an authenticated request (`GET /v1/apps/{app}/auth/user`: token checked in memory, one read
  of the app's database) against an unauthenticated one of the same shape
  (`GET /v1/apps/{app}/health`: one read of the app's database), under the same oha load.

Each run starts a new emulator and server; every figure is the median of the runs, with their
spread. Writes bench/results/auth.json and the table between the markers in docs/performance.md.
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import threading
import time

from common import (ROOT, Client, emulator, figure, heading, meta, ms, oha, parse_args, repeat,
                    replace_docs_section, server, write_results)


def timed_logins(port, bodies, workers):
    """Logs in with each body from `workers` threads; returns (logins/s, latencies)."""
    local = threading.local()
    latencies = []
    lock = threading.Lock()

    def login(body):
        if not hasattr(local, "client"):
            local.client = Client(port, bearer=None)
        start = time.perf_counter()
        local.client.json("POST", "/v1/apps/bench/auth/sessions", body, expect=201)
        elapsed = time.perf_counter() - start
        with lock:
            latencies.append(elapsed)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(login, bodies))
    return len(bodies) / (time.perf_counter() - started), latencies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--logins", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--port", type=int, default=18710)
    parser.add_argument("--emulator-port", type=int, default=18711)
    parser.add_argument("--load-seconds", type=int, default=10)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--no-load", action="store_true", help="skip the oha load phase")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/auth.json"))
    args = parse_args(parser)

    results = repeat(args.runs, lambda: run_on_new_servers(args))
    results["meta"] = meta(args.runs, logins=args.logins, workers=args.workers)
    write_results(args.out, results)
    if not args.no_docs:
        write_docs(results)


def run_on_new_servers(args):
    config = "[auth]\nlogins_per_ip_per_minute = 1000000\nlogins_per_app_per_minute = 10000000\n"
    with emulator(args.binary, args.emulator_port), server(args.binary, args.port, config):
        return run(args)


def run(args):
    admin = Client(args.port)
    platform = Client(args.emulator_port, bearer=None)
    admin.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
    platform.json("POST", "/emulator/apps",
                  {"platform": "wechat", "appid": "wx-bench", "secret": "s"}, expect=201)
    admin.json("PUT", "/v1/admin/apps/bench/auth/providers/wechat", {
        "appid": "wx-bench", "secret": "s",
        "base_url": f"http://127.0.0.1:{args.emulator_port}/wechat",
    })
    admin.json("PUT", "/v1/admin/apps/bench/auth/providers/dev", {"enabled": True})

    # 500 distinct users, each logging in several times: new users and returning ones.
    users = [f"user{i % 500}" for i in range(args.logins)]
    codes = [
        platform.json("POST", "/emulator/codes",
                      {"platform": "wechat", "appid": "wx-bench", "user": u}, expect=201)["code"]
        for u in users
    ]
    wechat_rate, wechat_latency = timed_logins(
        args.port, [{"provider": "wechat", "code": c} for c in codes], args.workers)
    dev_rate, dev_latency = timed_logins(
        args.port, [{"provider": "dev", "user": u} for u in users], args.workers)

    results = {
        "logins": {
            "wechat_per_sec": round(wechat_rate),
            "wechat_p50_ms": ms(wechat_latency, 50),
            "wechat_p99_ms": ms(wechat_latency, 99),
            "dev_per_sec": round(dev_rate),
            "dev_p50_ms": ms(dev_latency, 50),
            "dev_p99_ms": ms(dev_latency, 99),
            "wechat_over_dev_p50": round(statistics.median(wechat_latency) / statistics.median(dev_latency), 2),
        },
        "requests": None,
    }
    if not args.no_load:
        grant = Client(args.port, bearer=None).json(
            "POST", "/v1/apps/bench/auth/sessions", {"provider": "dev", "user": "loaded"}, expect=201)
        base = f"http://127.0.0.1:{args.port}/v1/apps/bench"
        plain = oha(f"{base}/health", args.load_seconds, 16)
        authed = oha(f"{base}/auth/user", args.load_seconds, 16,
                     headers=[f"Authorization: Bearer {grant['access_token']}"])
        results["requests"] = {
            "unauthenticated": plain,
            "authenticated": authed,
            "authenticated_over_unauthenticated_rps": round(authed["requests_per_sec"] / plain["requests_per_sec"], 2),
        }
    return results


def write_docs(r):
    lg, rq, m = r["logins"], r["requests"], r["meta"]
    if rq is None:
        raise SystemExit("docs need the load phase: run without --no-load")
    a, u = rq["authenticated"], rq["unauthenticated"]
    table = f"""{heading(m)}; {m['logins']:,} logins of 500 users from {m['workers']} clients.

| measure | value |
|---|---|
| WeChat logins through the emulator | **{figure(lg, 'wechat_per_sec', '/s')}**, p50 {figure(lg, 'wechat_p50_ms', ' ms')}, p99 {figure(lg, 'wechat_p99_ms', ' ms')} |
| dev logins, no platform call (baseline) | {figure(lg, 'dev_per_sec', '/s')}, p50 {figure(lg, 'dev_p50_ms', ' ms')}, p99 {figure(lg, 'dev_p99_ms', ' ms')} |
| WeChat ÷ dev login latency, p50 | {figure(lg, 'wechat_over_dev_p50', '×')} |
| authenticated `GET …/auth/user` (oha, {a['connections']} connections, {a['seconds']} s) | **{figure(a, 'requests_per_sec', ' req/s')}**, p50 {figure(a, 'p50_ms', ' ms')}, p99 {figure(a, 'p99_ms', ' ms')} |
| unauthenticated `GET …/health` (same load) | {figure(u, 'requests_per_sec', ' req/s')}, p50 {figure(u, 'p50_ms', ' ms')}, p99 {figure(u, 'p99_ms', ' ms')} |
| authenticated ÷ unauthenticated throughput | {figure(rq, 'authenticated_over_unauthenticated_rps', '×')} |"""
    replace_docs_section("auth", table)


if __name__ == "__main__":
    sys.exit(main())
