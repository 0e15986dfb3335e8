#!/usr/bin/env python3
"""The files benchmark: Cloudlet's files against PocketBase's, side by side in the same run, both
on local disk.

- signed GET of a 1 KB file, 32 connections, `--seconds` each (oha): Cloudlet's signed URL
  (`POST /v1/apps/{app}/file-urls`, then `GET …/files/{bucket}/{id}?expires=…&sig=…`) against
  PocketBase's protected file with a file token (`POST /api/files/token`, then `GET
  /api/files/{collection}/{record}/{file}?token=…`); then one request each with `Range` and
  `If-None-Match`, checked for 206 and 304;
- `--uploads` concurrent uploads of a `--upload-mb` MB file in the form `wx.uploadFile` sends
  (multipart, the file under `file`), each on its own connection, streamed from memory shared
  by all: aggregate MB/s, and the server's memory growth (peak RSS while uploading, minus RSS
  before) sampled every 20 ms.

Thumbnails are not built yet: that row of issue 13's figures is left out.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import (ROOT, TOKEN, Client, figure, heading, meta, oha, parse_args, repeat,  # noqa: E402
                    replace_docs_section, rss_kib, server, write_results)
from data import PB_ADMIN, pocketbase  # noqa: E402

TARGETS = {"signed_get": 20000, "upload_memory_mb": 50}
BOUNDARY = "----wxbench7MA4YWxkTrZu0gW"
KB = b"x" * 1024


def form_parts(field, name, size):
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"album\"\r\n\r\nbench\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


def stream(head, data, tail):
    yield head
    view = memoryview(data)
    for start in range(0, len(data), 1 << 20):
        yield view[start:start + (1 << 20)]
    yield tail


def upload(port, path, headers, field, data):
    """One upload of `data` in a multipart form, streamed; answers the status and body."""
    head, tail, length = form_parts(field, "upload.bin", len(data))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", path, body=stream(head, data, tail), headers={
        **headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(length)})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def concurrent_uploads(port, pid, path, headers, field, count, data):
    """`count` uploads at once: MB/s over them all, and the server's memory growth."""
    before = rss_kib(pid)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    statuses = []
    lock = threading.Lock()

    def one():
        status, body = upload(port, path, headers, field, data)
        with lock:
            statuses.append((status, body[:200]))

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    done.set()
    sampler.join()
    bad = [s for s in statuses if s[0] not in (200, 201)]
    if bad:
        raise RuntimeError(f"{len(bad)} uploads failed, e.g. {bad[0]}")
    return {
        "uploads": count,
        "seconds": round(elapsed, 3),
        "mb_per_sec": round(count * len(data) / 1e6 / elapsed, 1),
        "rss_growth_mb": round((peak[0] - before) / 1024, 1),
    }


def check_range_and_etag(port, path):
    """One GET with `Range: bytes=0-9` (206, 10 bytes) and one with the ETag (304): 1 when both
    are honoured, else 0."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers={"range": "bytes=0-9"})
    r = conn.getresponse()
    partial = r.read()
    ranged = r.status == 206 and len(partial) == 10
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    etag = r.getheader("etag")
    conn.request("GET", path, headers={"if-none-match": etag or ""})
    r = conn.getresponse()
    r.read()
    return {"range_and_etag": int(ranged and r.status == 304)}


def run_cloudlet(args, port):
    with server(args.binary, port, log=args.log) as process:
        admin = Client(port)
        admin.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
        admin.json("PUT", "/v1/admin/apps/bench/buckets/docs", {"max_bytes": 64 * 1024 * 1024})
        headers = {"authorization": f"Bearer {TOKEN}"}
        status, body = upload(port, "/v1/apps/bench/files/docs", headers, "file", KB)
        if status != 201:
            raise RuntimeError(f"upload: {status} {body[:200]!r}")
        file_id = json.loads(body)["id"]
        signed = admin.json("POST", "/v1/apps/bench/file-urls", {"ids": [file_id]})["urls"][0]["url"]
        get = oha(f"http://127.0.0.1:{port}{signed}", args.seconds, 32, expect_status=200)
        get.update(check_range_and_etag(port, signed))
        data = os.urandom(int(args.upload_mb * 1e6))
        uploads = concurrent_uploads(port, process.pid, "/v1/apps/bench/files/docs", headers, "file",
                                     args.uploads, data)
        return {"signed_get": get, "uploads": uploads}


def run_pocketbase(args, port):
    with pocketbase(args.pocketbase, port) as process:
        client = Client(port, bearer=None)
        su_token = client.json("POST", "/api/collections/_superusers/auth-with-password",
                               {"identity": PB_ADMIN[0], "password": PB_ADMIN[1]})["token"]
        su = Client(port, bearer=su_token)
        su.json("POST", "/api/collections", {
            "name": "docs", "type": "base",
            "fields": [{"name": "file", "type": "file", "maxSelect": 1, "maxSize": 64 * 1024 * 1024,
                        "protected": True},
                       {"name": "album", "type": "text"}],
            "viewRule": "", "createRule": "",
        })
        headers = {"authorization": su_token}
        status, body = upload(port, "/api/collections/docs/records", headers, "file", KB)
        if status != 200:
            raise RuntimeError(f"upload: {status} {body[:200]!r}")
        record = json.loads(body)
        file_token = su.json("POST", "/api/files/token")["token"]
        path = f"/api/files/docs/{record['id']}/{record['file']}?token={file_token}"
        get = oha(f"http://127.0.0.1:{port}{path}", args.seconds, 32, expect_status=200)
        get.update(check_range_and_etag(port, path))
        data = os.urandom(int(args.upload_mb * 1e6))
        uploads = concurrent_uploads(port, process.pid, "/api/collections/docs/records", headers,
                                     "file", args.uploads, data)
        return {"signed_get": get, "uploads": uploads}


def write_docs(r):
    c, p, m, ratio = r["cloudlet"], r["pocketbase"], r["meta"], r["ratios"]
    up = c["uploads"]
    get_met = c["signed_get"]["requests_per_sec"] >= TARGETS["signed_get"]
    memory_met = up["rss_growth_mb"] <= TARGETS["upload_memory_mb"]
    rows = [
        heading(m) + f"; PocketBase {m['pocketbase']}; both on local disk; {m['uploads']} uploads of "
        f"{m['upload_mb']} MB, {m['seconds']} s of GETs per run, one Python or oha client on the same "
        "machine.",
        "",
        "| workload | Cloudlet | PocketBase | Cloudlet / PocketBase | issue 13's target for Cloudlet |",
        "|---|---|---|---|---|",
        f"| signed GET of a 1 KB file, 32 connections (`?expires&sig`; PocketBase: `?token`) "
        f"| {figure(c['signed_get'], 'requests_per_sec', ' req/s')} "
        f"| {figure(p['signed_get'], 'requests_per_sec', ' req/s')} | {figure(ratio, 'signed_get', '×')} "
        f"| ≥ {TARGETS['signed_get']:,} req/s: {'met' if get_met else '**not met**'} |",
        f"| {m['uploads']} concurrent {m['upload_mb']:g} MB uploads in `wx.uploadFile`'s form, throughput "
        f"| {figure(up, 'mb_per_sec', ' MB/s')} | {figure(p['uploads'], 'mb_per_sec', ' MB/s')} "
        f"| {figure(ratio, 'uploads', '×')} | reported |",
        f"| the same, server memory growth (peak RSS) | {figure(up, 'rss_growth_mb', ' MB')} "
        f"| {figure(p['uploads'], 'rss_growth_mb', ' MB')} | | ≤ {TARGETS['upload_memory_mb']} MB: "
        f"{'met' if memory_met else '**not met**'} |",
        "",
        f"`Range` (206) and `If-None-Match` (304) honoured: Cloudlet "
        f"{'yes' if c['signed_get']['range_and_etag'] else 'no'}, PocketBase "
        f"{'yes' if p['signed_get']['range_and_etag'] else 'no'}.",
    ]
    replace_docs_section("files", "\n".join(rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--pocketbase", default=os.path.join(ROOT, "bench/.tools/venv/bin/pocketbase"))
    parser.add_argument("--port", type=int, default=18770)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--upload-mb", type=float, default=10)
    parser.add_argument("--log")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/files.json"))
    args = parse_args(parser)

    def one():
        cloudlet = run_cloudlet(args, args.port)
        peer = run_pocketbase(args, args.port + 1)
        return {
            "cloudlet": cloudlet,
            "pocketbase": peer,
            "ratios": {
                "signed_get": round(cloudlet["signed_get"]["requests_per_sec"]
                                    / peer["signed_get"]["requests_per_sec"], 3),
                "uploads": round(cloudlet["uploads"]["mb_per_sec"] / peer["uploads"]["mb_per_sec"], 3),
            },
        }

    result = repeat(args.runs, one)
    version = os.popen(f"{args.pocketbase} --version 2>/dev/null").read().strip().split()[-1:] or ["?"]
    result["meta"] = meta(args.runs, pocketbase=version[0], uploads=args.uploads, upload_mb=args.upload_mb,
                          seconds=args.seconds)
    if args.out and not args.no_docs:
        write_results(args.out, result)
        write_docs(result)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
