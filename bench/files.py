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

- thumbnails of a 4000×3000 JPEG photo (made by Pillow, about 2 MB), each of a file uploaded
  anew so that nothing is cached: the p50 of `--photos` made one after another at 200×200; the
  throughput of `--photos` more made 8 at a time; the server's memory growth while eight
  different sizes of one photo are made at once; and, for Cloudlet, fifty identical requests at
  once for a new photo's thumbnail, with the decodes they caused (`cloudlet_thumbnails_made_total`);
- Cloudlet's uploads again with the bytes in S3 (`rclone serve s3` on this machine, `--rclone`):
  throughput and memory growth, against the bound its multipart parts imply (5 MiB parts, two in
  flight: 15 MiB per upload at most, 16 uploads streaming at once).
"""

import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import (ROOT, TOKEN, Client, figure, heading, meta, oha, parse_args, percentile,  # noqa: E402
                    repeat, replace_docs_section, rss_kib, server, write_results)
from data import PB_ADMIN, pocketbase  # noqa: E402

# Uploads streaming to S3 at once (`MAX_PUTS` in crates/store/src/blobs/s3.rs), each holding at
# most three 5 MiB parts.
S3_PUTS = 16
TARGETS = {"signed_get": 20000, "upload_memory_mb": 50, "thumb_p50_ms": 60, "thumb_sizes_mb": 300,
           "thumb_ratio": 3}
SIZES = ["200x200", "100x100", "300x300", "400x400", "600x600", "800x0", "1200x0", "1600x0"]
BOUNDARY = "----wxbench7MA4YWxkTrZu0gW"
KB = b"x" * 1024


def form_parts(field, name, size, content_type="application/octet-stream"):
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"album\"\r\n\r\nbench\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


def stream(head, data, tail):
    yield head
    view = memoryview(data)
    for start in range(0, len(data), 1 << 20):
        yield view[start:start + (1 << 20)]
    yield tail


def upload(port, path, headers, field, data, name="upload.bin", content_type="application/octet-stream"):
    """One upload of `data` in a multipart form, streamed; answers the status and body."""
    head, tail, length = form_parts(field, name, len(data), content_type)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", path, body=stream(head, data, tail), headers={
        **headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}",
        "content-length": str(length)})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


class PeakRss:
    """The server's RSS sampled every 20 ms while in the `with` block: `growth_mb` is the peak
    minus the RSS before."""

    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.before = self.peak = rss_kib(self.pid)
        self.done = threading.Event()

        def sample():
            while not self.done.is_set():
                self.peak = max(self.peak, rss_kib(self.pid))
                time.sleep(0.02)

        self.sampler = threading.Thread(target=sample)
        self.sampler.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.sampler.join()
        self.peak = max(self.peak, rss_kib(self.pid))

    def growth_mb(self):
        return round((self.peak - self.before) / 1024, 1)


def get(port, path, headers=None):
    """One GET: its status, body and seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - start
    conn.close()
    return response.status, body, elapsed


def at_once(count, work):
    """`work(i)` for i in 0..count, each on its own thread; their results in order."""
    results = [None] * count

    def one(i):
        results[i] = work(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def thumbnails(port, pid, photo, upload_one, thumb_path, count, made=None):
    """The thumbnail figures of one server: `upload_one()` uploads `photo` and answers what
    `thumb_path(it, size)` needs; `made()` (Cloudlet's) answers how many it has decoded."""

    def fetch(path):
        status, body, seconds = get(port, path)
        if status != 200 or len(body) < 100:
            raise RuntimeError(f"thumbnail {path}: {status} {body[:200]!r}")
        return seconds

    # One after another, each of a new file.
    files = [upload_one() for _ in range(count)]
    latencies = sorted(fetch(thumb_path(f, "200x200")) for f in files)
    # Eight at a time, each of a new file.
    files = [upload_one() for _ in range(count)]
    start = time.perf_counter()
    for first in range(0, count, 8):
        batch = files[first:first + 8]
        at_once(len(batch), lambda i: fetch(thumb_path(batch[i], "200x200")))
    throughput = count / (time.perf_counter() - start)
    # Eight sizes of one new photo at once.
    one = upload_one()
    with PeakRss(pid) as rss:
        at_once(len(SIZES), lambda i: fetch(thumb_path(one, SIZES[i])))
    result = {
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "per_sec": round(throughput, 2),
        "sizes_rss_growth_mb": rss.growth_mb(),
    }
    if made is not None:
        one = upload_one()
        before = made()
        at_once(50, lambda i: fetch(thumb_path(one, "200x200")))
        result["decodes_for_50"] = made() - before
    return result


def concurrent_uploads(port, pid, path, headers, field, count, data):
    """`count` uploads at once: MB/s over them all, and the server's memory growth."""
    with PeakRss(pid) as peak:
        start = time.perf_counter()
        statuses = at_once(count, lambda _: upload(port, path, headers, field, data))
        elapsed = time.perf_counter() - start
    bad = [(status, body[:200]) for status, body in statuses if status not in (200, 201)]
    if bad:
        raise RuntimeError(f"{len(bad)} uploads failed, e.g. {bad[0]}")
    return {
        "uploads": count,
        "seconds": round(elapsed, 3),
        "mb_per_sec": round(count * len(data) / 1e6 / elapsed, 1),
        "rss_growth_mb": peak.growth_mb(),
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
        admin.json("PUT", "/v1/admin/apps/bench/buckets/photos",
                   {"types": ["image/*"], "max_bytes": 64 * 1024 * 1024, "thumbs": SIZES,
                    "rules": {"view": ""}})

        def upload_photo():
            status, body = upload(port, "/v1/apps/bench/files/photos", headers, "file", args.photo_bytes,
                                  "photo.jpg", "image/jpeg")
            if status != 201:
                raise RuntimeError(f"photo upload: {status} {body[:200]!r}")
            return json.loads(body)["id"]

        def made():
            for line in admin.call("GET", "/metrics")[1].decode().splitlines():
                if line.startswith("cloudlet_thumbnails_made_total "):
                    return int(line.split()[1])
            raise RuntimeError("no cloudlet_thumbnails_made_total in /metrics")

        thumbs = thumbnails(port, process.pid, args.photo_bytes, upload_photo,
                            lambda id, size: f"/v1/apps/bench/files/photos/{id}?thumb={size}",
                            args.photos, made)
        return {"signed_get": get, "uploads": uploads, "thumbs": thumbs}


S3_KEYS = ("benchkey", "bench-secret-key-0123456789")


@contextlib.contextmanager
def rclone_s3(binary, port):
    """`rclone serve s3` on a temporary directory with one bucket, `bench`; yields its URL."""
    data = tempfile.mkdtemp(prefix="rclone-bench-")
    os.mkdir(os.path.join(data, "bench"))
    process = subprocess.Popen([binary, "serve", "s3", "--addr", f"127.0.0.1:{port}",
                                "--auth-key", ",".join(S3_KEYS), data],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError("rclone serve s3 did not start")
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def run_cloudlet_s3(args, port):
    """Cloudlet's concurrent uploads with the bytes in S3."""
    with rclone_s3(args.rclone, port + 10) as endpoint:
        config = (f'[files]\nurl = "s3://bench/cloudlet"\nendpoint = "{endpoint}"\n'
                  f'region = "us-east-1"\npath_style = true\naccess_key_id = "{S3_KEYS[0]}"\n'
                  f'secret_access_key = "{S3_KEYS[1]}"\n')
        with server(args.binary, port, config_text=config, log=args.log) as process:
            admin = Client(port)
            admin.json("POST", "/v1/admin/apps", {"name": "bench"}, expect=201)
            admin.json("PUT", "/v1/admin/apps/bench/buckets/docs", {"max_bytes": 64 * 1024 * 1024})
            headers = {"authorization": f"Bearer {TOKEN}"}
            data = os.urandom(int(args.upload_mb * 1e6))
            return concurrent_uploads(port, process.pid, "/v1/apps/bench/files/docs", headers, "file",
                                      args.uploads, data)


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
        su.json("POST", "/api/collections", {
            "name": "photos", "type": "base",
            "fields": [{"name": "file", "type": "file", "maxSelect": 1, "maxSize": 64 * 1024 * 1024,
                        "thumbs": SIZES},
                       {"name": "album", "type": "text"}],
            "viewRule": "", "createRule": "",
        })

        def upload_photo():
            status, body = upload(port, "/api/collections/photos/records", headers, "file",
                                  args.photo_bytes, "photo.jpg", "image/jpeg")
            if status != 200:
                raise RuntimeError(f"photo upload: {status} {body[:200]!r}")
            record = json.loads(body)
            return f"{record['id']}/{record['file']}"

        thumbs = thumbnails(port, process.pid, args.photo_bytes, upload_photo,
                            lambda it, size: f"/api/files/photos/{it}?thumb={size}", args.photos)
        return {"signed_get": get, "uploads": uploads, "thumbs": thumbs}


def write_docs(r):
    c, p, m, ratio = r["cloudlet"], r["pocketbase"], r["meta"], r["ratios"]
    up = c["uploads"]
    get_met = c["signed_get"]["requests_per_sec"] >= TARGETS["signed_get"]
    memory_met = up["rss_growth_mb"] <= TARGETS["upload_memory_mb"]
    thumb_met = c["thumbs"]["p50_ms"] <= TARGETS["thumb_p50_ms"]
    ratio_met = ratio["thumbs"] >= TARGETS["thumb_ratio"]
    sizes_met = c["thumbs"]["sizes_rss_growth_mb"] <= TARGETS["thumb_sizes_mb"]
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
        *([f"| the same uploads to S3 (`rclone serve s3` here), throughput "
           f"| {figure(c['uploads_s3'], 'mb_per_sec', ' MB/s')} | | | reported |",
           f"| the same, server memory growth (peak RSS) | {figure(c['uploads_s3'], 'rss_growth_mb', ' MB')} "
           f"| | | the bound: {min(m['uploads'], S3_PUTS)} uploads streaming at once × 15 MiB = "
           f"{min(m['uploads'], S3_PUTS) * 15 * 1.048576:,.0f} MB |"]
          if "uploads_s3" in c else []),
        f"| a {m['photo_mb']:g} MB 4000×3000 JPEG to a 200×200 thumbnail, one at a time, p50 "
        f"| {figure(c['thumbs'], 'p50_ms', ' ms')} | {figure(p['thumbs'], 'p50_ms', ' ms')} | "
        f"| ≤ {TARGETS['thumb_p50_ms']} ms: {'met' if thumb_met else '**not met**'} |",
        f"| the same, p99 | {figure(c['thumbs'], 'p99_ms', ' ms')} "
        f"| {figure(p['thumbs'], 'p99_ms', ' ms')} | | |",
        f"| thumbnails of distinct, uncached photos, 8 at a time | {figure(c['thumbs'], 'per_sec', '/s')} "
        f"| {figure(p['thumbs'], 'per_sec', '/s')} | {figure(ratio, 'thumbs', '×')} "
        f"| ≥ {TARGETS['thumb_ratio']}×: {'met' if ratio_met else '**not met**'} |",
        f"| eight sizes of one photo at once ({', '.join(SIZES)}), server memory growth "
        f"| {figure(c['thumbs'], 'sizes_rss_growth_mb', ' MB')} "
        f"| {figure(p['thumbs'], 'sizes_rss_growth_mb', ' MB')} | "
        f"| ≤ {TARGETS['thumb_sizes_mb']} MB: {'met' if sizes_met else '**not met**'} |",
        f"| fifty identical requests at once for a new photo's thumbnail: decodes "
        f"| {figure(c['thumbs'], 'decodes_for_50')} | | | 1 |",
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
    parser.add_argument("--photos", type=int, default=16,
                        help="photos made into thumbnails one after another, and as many 8 at a time")
    parser.add_argument("--rclone", default=os.path.join(ROOT, "bench/.tools/venv/bin/rclone"),
                        help="rclone, for the uploads to S3 (skipped when it is not there)")
    parser.add_argument("--photo", default=os.path.join(ROOT, "bench/.tools/photo-4000x3000.jpg"),
                        help="a 4000x3000 JPEG (bench/files.sh makes one with Pillow)")
    parser.add_argument("--log")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench/results/files.json"))
    args = parse_args(parser)
    with open(args.photo, "rb") as photo:
        args.photo_bytes = photo.read()

    def one():
        cloudlet = run_cloudlet(args, args.port)
        if os.path.exists(args.rclone):
            cloudlet["uploads_s3"] = run_cloudlet_s3(args, args.port + 2)
        peer = run_pocketbase(args, args.port + 1)
        return {
            "cloudlet": cloudlet,
            "pocketbase": peer,
            "ratios": {
                "signed_get": round(cloudlet["signed_get"]["requests_per_sec"]
                                    / peer["signed_get"]["requests_per_sec"], 3),
                "uploads": round(cloudlet["uploads"]["mb_per_sec"] / peer["uploads"]["mb_per_sec"], 3),
                "thumbs": round(cloudlet["thumbs"]["per_sec"] / peer["thumbs"]["per_sec"], 3),
            },
        }

    result = repeat(args.runs, one)
    version = os.popen(f"{args.pocketbase} --version 2>/dev/null").read().strip().split()[-1:] or ["?"]
    result["meta"] = meta(args.runs, pocketbase=version[0], uploads=args.uploads, upload_mb=args.upload_mb,
                          seconds=args.seconds, photos=args.photos,
                          photo_mb=round(len(args.photo_bytes) / 1e6, 2))
    if args.out and not args.no_docs:
        write_results(args.out, result)
        write_docs(result)
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
