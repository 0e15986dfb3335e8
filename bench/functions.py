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
- Fairness: a neighbour app's trivial call, timed one at a time, alone and then beside five
  hostile apps at the default worker settings. Each hostile app keeps 8 calls spinning in a CPU
  loop until their 10 s deadline, 8 calls awaiting a 9 s timer, and a flood of short calls
  (oha, 4 connections).

Each run starts a new server and new peers; every figure, the ratios too, is the median of the
runs, with their spread. Writes bench/results/functions.json and the tables between the markers
in docs/performance.md.
"""

import argparse
import os
import subprocess
import sys
import threading
import time

from common import (ROOT, Client, figure, heading, meta, oha, parse_args, repeat, replace_docs_section,
                    server, write_results)

SOURCE = "export default async (event, ctx) => ({ user: ctx.auth.id, n: event.n ?? 0 })"
IDLE_SECS = 0.3  # runtime_idle_secs: how long a warm runtime is kept, short for the idle samples
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
    result = oha(url, seconds, 16, headers, method="POST", body='{"n":1}')
    if result["success_rate"] < 1.0:
        raise SystemExit(f"{url}: some requests failed ({result['success_rate']})")
    return result


def warm_peers(port, token, seconds):
    """workerd and Node.js under the load Cloudlet had, one after the other, on the next ports."""
    workerd_port, node_port = port + 1, port + 2
    return {
        "workerd": warm_peer([WORKERD, "serve", "workerd.capnp", f"--socket-addr=http=127.0.0.1:{workerd_port}"],
                             workerd_port, token, seconds),
        "node": warm_peer(["node", "who-node.mjs", str(node_port)], node_port, token, seconds),
    }


def warm_peer(command, port, token, seconds):
    process = peer(command, port)
    try:
        return warm(f"http://127.0.0.1:{port}/", token, seconds)
    finally:
        process.terminate()
        process.wait(timeout=30)


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


HOSTILE_APPS = 5
HOSTILE_SOURCES = {
    "spin": "export default async () => { for (;;) {} }",
    "sleep": "export default async () => { await new Promise((r) => setTimeout(r, 9000)); return 1; }",
    "ping": "export default async (e) => ({ pong: e.n ?? 0 })",
}


def fairness(args):
    """The neighbour's calls alone and beside five hostile apps computing and awaiting, on one
    server; then beside the same apps also flooding, on another."""
    alone, busy = neighbour_calls(args, flood=False)
    _, flooded = neighbour_calls(args, flood=True)
    return {
        "alone_ms": summary(alone),
        "beside_hostile_ms": summary(busy),
        "beside_hostile_and_floods_ms": summary(flooded),
        "p99_beside_hostile_over_alone": round(summary(busy)["p99"] / summary(alone)["p99"], 2),
        "p99_beside_floods_over_alone": round(summary(flooded)["p99"] / summary(alone)["p99"], 2),
    }


def neighbour_calls(args, flood):
    """The neighbour's call times alone, then beside the hostile apps computing and awaiting (and
    flooding too if `flood`), once they have taken every worker they may."""
    config = "[auth]\nlogins_per_ip_per_minute = 1000000\n"
    with server(args.binary, args.port, config):
        admin = Client(args.port)
        for app in [f"hostile-{i}" for i in range(1, HOSTILE_APPS + 1)] + ["neighbour"]:
            admin.json("POST", "/v1/admin/apps", {"name": app}, expect=201)
            for name, source in HOSTILE_SOURCES.items():
                admin.json("PUT", f"/v1/admin/apps/{app}/functions/{name}",
                           {"source": source, "public": True}, expect=201)
        neighbour = Client(args.port, bearer=None)
        ping = lambda n: neighbour.json("POST", "/v1/apps/neighbour/functions/ping", {"n": n}, auth=False)
        for n in range(50):
            ping(n)
        alone = timed_calls(ping, args.fairness_samples)
        stop = threading.Event()
        loops = hostile_loops(args.port, stop)
        floods = [subprocess.Popen(
            ["oha", "-z", f"{args.seconds * 3}s", "-c", "4", "--no-tui", "-m", "POST",
             "-H", "Content-Type: application/json", "-d", '{"n":1}',
             f"http://127.0.0.1:{args.port}/v1/apps/hostile-{i}/functions/ping"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(1, HOSTILE_APPS + 1)] if flood else []
        try:
            time.sleep(4)  # the hostile calls take every worker they may, and start computing
            beside = timed_calls(ping, args.fairness_samples)
        finally:
            stop.set()
            for process in floods:
                process.terminate()
            for loop in loops:
                loop.join(timeout=15)
    return alone, beside


def timed_calls(call, samples):
    times = []
    for n in range(samples):
        started = time.perf_counter()
        call(n)
        times.append((time.perf_counter() - started) * 1000)
    return times


def hostile_loops(port, stop):
    """Per hostile app, 8 threads that keep a CPU-spinning call in, and 8 that keep a 9 s
    await in, until `stop`."""
    def keep_calling(app, name):
        while not stop.is_set():
            # Calls queued behind the app's own may wait past the client's timeout: start over.
            try:
                Client(port, bearer=None).call(
                    "POST", f"/v1/apps/{app}/functions/{name}", {}, auth=False)
            except OSError:
                pass
    loops = [threading.Thread(target=keep_calling, args=(f"hostile-{i}", name), daemon=True)
             for i in range(1, HOSTILE_APPS + 1) for name in ["spin", "sleep"] for _ in range(8)]
    for loop in loops:
        loop.start()
    return loops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--cold-samples", type=int, default=200)
    parser.add_argument("--idle-samples", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--fairness-samples", type=int, default=5000)
    parser.add_argument("--no-load", action="store_true",
                        help="cold starts only (no oha, no peers, no fairness)")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--port", type=int, default=18740,
                        help="Cloudlet's; workerd and Node.js listen on the next two")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/functions.json"))
    args = parse_args(parser)

    results = repeat(args.runs, lambda: run(args))
    results["meta"] = meta(args.runs, workerd=version([WORKERD, "--version"]),
                           node=version(["node", "--version"]), runtime_idle_secs=IDLE_SECS)
    write_results(args.out, results)
    if not args.no_docs and not args.no_load:
        write_docs(results)


def run(args):
    """One run: cold starts on a new server, then, unless --no-load, warm calls to Cloudlet,
    workerd and Node.js, one after the other."""
    config = f"[auth]\nlogins_per_ip_per_minute = 1000000\n[functions]\nruntime_idle_secs = {IDLE_SECS}\n"
    with server(args.binary, args.port, config):
        admin, token = setup(args.port)
        results = {
            "cold_after_deploy": cold_after_deploy(args.port, admin, token, args.cold_samples),
            "cold_after_idle": cold_after_idle(args.port, admin, token, args.idle_samples, IDLE_SECS),
        }
        if args.no_load:
            return results
        cloudlet = warm(f"http://127.0.0.1:{args.port}/v1/apps/bench/functions/who", token, args.seconds)
    results["warm"] = {"cloudlet": cloudlet, **warm_peers(args.port, token, args.seconds)}
    results["ratios"] = ratios(results["warm"])
    results["fairness"] = fairness(args)
    return results


def ratios(warm_results):
    """Cloudlet's throughput over each peer's within one run; the ratios reported are the medians
    of these, not ratios of medians."""
    rps = {name: result["requests_per_sec"] for name, result in warm_results.items()}
    return {
        "vs_workerd": round(rps["cloudlet"] / rps["workerd"], 2),
        "vs_node": round(rps["cloudlet"] / rps["node"], 2),
    }


def version(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, cwd=PEERS).stdout.strip()
    except OSError:
        return None


def write_docs(r):
    m, w, fair = r["meta"], r["warm"], r["fairness"]
    cold = "\n".join(
        f"| {label} | {figure(r[key]['inside_ms'], 'p50', ' ms')} | {figure(r[key]['inside_ms'], 'p99', ' ms')} "
        f"| {figure(r[key]['end_to_end_ms'], 'p50', ' ms')} | {figure(r[key]['end_to_end_ms'], 'p99', ' ms')} "
        f"| {r[key]['inside_ms']['samples']} |"
        for key, label in [("cold_after_deploy", "after deploy"), ("cold_after_idle", "after idle eviction")]
    )
    warm_rows = "\n".join(
        f"| {label} | {figure(w[key], 'requests_per_sec')} | {figure(w[key], 'p50_ms', ' ms')} | {figure(w[key], 'p99_ms', ' ms')} |"
        for key, label in [("cloudlet", "Cloudlet"), ("workerd", m['workerd']), ("node", f"Node.js {m['node']} `http`")]
    )
    ratios = r["ratios"]
    table = f"""{heading(m)}.

| cold start | inside p50 | inside p99 | end to end p50 | end to end p99 | samples per run |
|---|---|---|---|---|---|
{cold}

| warm, 16 connections | requests/s | p50 | p99 |
|---|---|---|---|
{warm_rows}

Cloudlet ÷ workerd: **{figure(ratios, 'vs_workerd', '×')}**; Cloudlet ÷ Node.js: **{figure(ratios, 'vs_node', '×')}**."""
    replace_docs_section("functions", table)
    fairness_table = f"""{heading(m)}, {fair['alone_ms']['samples']:,} calls per phase, default worker settings.

| a neighbour's trivial call, one at a time | p50 | p99 |
|---|---|---|
| alone | {figure(fair['alone_ms'], 'p50', ' ms')} | {figure(fair['alone_ms'], 'p99', ' ms')} |
| beside 5 hostile apps, each with 8 CPU loops and 8 awaits of 9 s | {figure(fair['beside_hostile_ms'], 'p50', ' ms')} | **{figure(fair['beside_hostile_ms'], 'p99', ' ms')}** |
| beside the same apps, each also flooding (oha, 4 connections) | {figure(fair['beside_hostile_and_floods_ms'], 'p50', ' ms')} | {figure(fair['beside_hostile_and_floods_ms'], 'p99', ' ms')} |

The neighbour's p99 beside the computing and awaiting apps is **{figure(fair, 'p99_beside_hostile_over_alone', '×')}**
its p99 alone; beside them flooding too, {figure(fair, 'p99_beside_floods_over_alone', '×')}."""
    replace_docs_section("fairness", fairness_table, script="functions")


if __name__ == "__main__":
    sys.exit(main())
