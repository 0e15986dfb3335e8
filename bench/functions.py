#!/usr/bin/env python3
"""Functions: cold starts inside Cloudlet, and warm invocations against workerd and Node.js.

One function, `export default async (event, ctx) => ({ user: ctx.auth.id, n: event.n ?? 0 })`,
called by a logged-in user with `{"n": 1}`.

- Cold start after deploy: each sample deploys a new version, then calls it once. Inside the
  server is the worker's own time for the invocation (new runtime, prelude, modules from
  bytecode, the call, the result), as the invocation log records it; end to end is the
  client's round trip.
- Cold start after idle eviction: the server drops warm runtimes after `runtime_idle_secs`
  (here 0.3 s); each sample waits past that and calls again.
- Warm: oha, 16 connections, against Cloudlet, against the same function on Cloudflare's workerd
  (npm package `workerd`), and on a plain Node.js `http` server, one after the other in this run.
  workerd and Node decode the token without verifying it; Cloudlet verifies it.

Writes bench/results/functions.json and the tables between the markers in docs/performance.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from common import ROOT, TOKEN, Client, meta, oha, replace_docs_section, server, wait_ready, write_results

SOURCE = "export default async (event, ctx) => ({ user: ctx.auth.id, n: event.n ?? 0 })"
PEERS = os.path.join(ROOT, "bench/peers")
WORKERD = os.path.join(PEERS, "node_modules/@cloudflare/workerd-linux-64/bin/workerd")


def percentile(values, p):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p / 100))], 3)


def summary(values):
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "samples": len(values)}


def setup(port):
    admin = Client(port)
    admin.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
    admin.json("PUT", "/v1/admin/apps/bench/auth/providers/dev", {"enabled": True})
    token = Client(port, bearer=None).json(
        "POST", "/v1/apps/bench/auth/sessions", {"provider": "dev", "user": "alice"}, expect=201)["access_token"]
    return admin, token


def logged_cold_micros(admin, count):
    """The in-worker micros of the last `count` invocations, which must all have been cold."""
    deadline = time.time() + 10
    while True:
        items = admin.json("GET", f"/v1/admin/apps/bench/logs?function=who&limit={count}")["items"]
        if len(items) >= count or time.time() > deadline:
            break
        time.sleep(0.05)
    if len(items) < count or not all(item["cold"] for item in items):
        raise SystemExit(f"expected {count} cold invocations in the log, found {items[:3]}…")
    return [item["micros"] / 1000 for item in items]


def cold_after_deploy(port, admin, token, samples):
    user = Client(port, bearer=token)
    end_to_end = []
    for i in range(samples):
        admin.json("PUT", "/v1/admin/apps/bench/functions/who", {"source": SOURCE}, expect=201)
        started = time.perf_counter()
        answer = user.json("POST", "/v1/apps/bench/functions/who", {"n": i})
        end_to_end.append((time.perf_counter() - started) * 1000)
        assert answer["n"] == i, answer
    return {"inside_ms": summary(logged_cold_micros(admin, samples)), "end_to_end_ms": summary(end_to_end)}


def cold_after_idle(port, admin, token, samples, idle):
    user = Client(port, bearer=token)
    admin.json("PUT", "/v1/admin/apps/bench/functions/who", {"source": SOURCE}, expect=201)
    user.json("POST", "/v1/apps/bench/functions/who", {"n": 0})
    end_to_end = []
    for i in range(samples):
        time.sleep(idle * 2.5)
        started = time.perf_counter()
        user.json("POST", "/v1/apps/bench/functions/who", {"n": i})
        end_to_end.append((time.perf_counter() - started) * 1000)
    return {"inside_ms": summary(logged_cold_micros(admin, samples)), "end_to_end_ms": summary(end_to_end)}


def warm(url, token, seconds):
    headers = [f"Authorization: Bearer {token}", "Content-Type: application/json"]
    return oha(url, seconds, 16, headers, method="POST", body='{"n":1}')


def peer(command, port):
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=PEERS)
    deadline = time.time() + 30
    while True:
        try:
            # A token-shaped bearer whose payload is {"sub":"probe"}, as the peers expect one.
            Client(port, bearer="h.eyJzdWIiOiJwcm9iZSJ9.s").call("POST", "/", {"n": 0})
            return process
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise SystemExit(f"{command[0]} did not start")
            time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--cold-samples", type=int, default=200)
    parser.add_argument("--idle-samples", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-load", action="store_true", help="cold starts only (no oha, no peers)")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--port", type=int, default=18740)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/functions.json"))
    args = parser.parse_args()

    idle = 0.3
    config = f"[auth]\nlogins_per_ip_per_minute = 1000000\n[functions]\nruntime_idle_secs = {idle}\n"
    results = {}
    with server(args.binary, args.port, config):
        admin, token = setup(args.port)
        results["cold_after_deploy"] = cold_after_deploy(args.port, admin, token, args.cold_samples)
        results["cold_after_idle"] = cold_after_idle(args.port, admin, token, args.idle_samples, idle)
        if not args.no_load:
            results["warm"] = {"cloudlet": warm(f"http://127.0.0.1:{args.port}/v1/apps/bench/functions/who", token, args.seconds)}
    if not args.no_load:
        workerd_port, node_port = args.port + 1, args.port + 2
        process = peer([WORKERD, "serve", "workerd.capnp", f"--socket-addr=http=127.0.0.1:{workerd_port}"], workerd_port)
        try:
            results["warm"]["workerd"] = warm(f"http://127.0.0.1:{workerd_port}/", token, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
        process = peer(["node", "who-node.mjs", str(node_port)], node_port)
        try:
            results["warm"]["node"] = warm(f"http://127.0.0.1:{node_port}/", token, args.seconds)
        finally:
            process.terminate()
            process.wait(timeout=30)
        for name, result in results["warm"].items():
            if result["success_rate"] < 1.0:
                raise SystemExit(f"{name}: some requests failed ({result['success_rate']})")
        rps = {name: r["requests_per_sec"] for name, r in results["warm"].items()}
        results["ratios"] = {
            "vs_workerd": round(rps["cloudlet"] / rps["workerd"], 2),
            "vs_node": round(rps["cloudlet"] / rps["node"], 2),
        }
    results["meta"] = meta(workerd=version([WORKERD, "--version"]), node=version(["node", "--version"]),
                           runtime_idle_secs=idle)
    write_results(args.out, results)
    if not args.no_docs and not args.no_load:
        write_docs(results)


def version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=PEERS).stdout.strip()
    except OSError:
        return None


def write_docs(r):
    m, w = r["meta"], r["warm"]
    cold = "\n".join(
        f"| {label} | {r[key]['inside_ms']['p50']} ms | {r[key]['inside_ms']['p99']} ms "
        f"| {r[key]['end_to_end_ms']['p50']} ms | {r[key]['end_to_end_ms']['p99']} ms | {r[key]['inside_ms']['samples']} |"
        for key, label in [("cold_after_deploy", "after deploy"), ("cold_after_idle", "after idle eviction")]
    )
    warm_rows = "\n".join(
        f"| {label} | {w[key]['requests_per_sec']:,} | {w[key]['p50_ms']} ms | {w[key]['p99_ms']} ms |"
        for key, label in [("cloudlet", "Cloudlet"), ("workerd", m['workerd']), ("node", f"Node.js {m['node']} `http`")]
    )
    table = f"""Run of {m['date']} at commit `{m['commit']}` on {m['cpus']} CPUs.

| cold start | inside p50 | inside p99 | end to end p50 | end to end p99 | samples |
|---|---|---|---|---|---|
{cold}

| warm, 16 connections | requests/s | p50 | p99 |
|---|---|---|---|
{warm_rows}

Cloudlet ÷ workerd: **{r['ratios']['vs_workerd']}×**; Cloudlet ÷ Node.js: **{r['ratios']['vs_node']}×**."""
    replace_docs_section("functions", table)


if __name__ == "__main__":
    sys.exit(main())
