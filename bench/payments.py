#!/usr/bin/env python3
"""Payments: WeChat Pay API v3 callbacks on Cloudlet's notify route, against `cloudlet emulator`'s
merchant platform, with a plain Node.js merchant backend beside it for the callbacks' latency.

Every run sets up, on a fresh server and a fresh emulator per phase, what
crates/server/tests/api/payments.rs sets up: an app `shop` with the `wechat` login provider on
the emulator, users logged in with the emulator's codes, a merchant registered with the emulator
(an RSA key made by `openssl genpkey`) and configured on the app with the emulator's platform key.
Orders are created through `POST /v1/admin/apps/shop/pay/orders` (each placed with the
emulator). Callbacks are sent by a light asyncio HTTP/1.1 client (standard library, keep-alive,
requests serialized once beforehand) on the same machine. Then:

- forged: bad notifications against real orders, every one of which must be refused: signature
  probes, stale ones (signed ±301 to ±3600 s away), flipped GCM tags, bodies changed after
  signing (one byte of a genuine body), an unknown serial, another body's signature, and genuine
  signatures over resources with the wrong amount, appid, mchid, trade_state or an unknown
  out_trade_no. A few thousand distinct bodies are signed by the emulator's `forge` with its own
  platform key; the rest are derived from them (mutated bytes, other headers) or sent again.
  Afterwards every order must still be `created` with no events; then the untouched genuine
  bodies are sent as a control, and must each be taken and pay their order.
- latency: a genuine callback pre-signed for each of `--latency-orders` orders (each really pays
  its order) and `--duplicates` copies of each, shuffled, replayed at `--concurrency` (200) at
  once: p50/p99 of the notify route (verification, decryption, the durable commit) as the
  client sees them, and callbacks per second; the same bytes against the Node.js peer
  (bench/peers/payments/server.mjs: node:crypto's RSA-SHA256 and AES-256-GCM, an in-memory Map,
  nothing on disk). Then `--single-orders` more orders, one callback at a time, on both.
  Payment checks are held off (`check_delay_secs = 600`) so that only callbacks run.
- lost: with the server's default checks (first after 10 s, then 5 s doubling to 60 s, ±20 %
  jitter), `--lost-orders` orders are paid at the emulator with their notification dropped, each
  at a time spread uniformly over `--lost-spread` seconds after its creation; how long after
  its payment each order's `paid` event was written (the event's time on the server against the
  wall clock just before the payment was asked; same machine, same clock).
- crash: `--crash-orders` orders paid at the emulator (notification dropped), then for each 20
  callbacks in one shuffled stream at 64 at once: its genuine TRANSACTION.SUCCESS (two distinct
  signatures, sent 15 times) and a genuine REFUND.SUCCESS for a refund nobody asked for (5
  times), which must be refused. Halfway through, `kill -9` the server, start it again on the
  same data directory and go on, re-sending what got no answer (as the platform would). Checks
  are held off (`check_delay_secs = 600`) so that the callbacks alone move the orders. At the
  end every order must be `paid` (as at the emulator) with exactly one `paid` event and no
  refund.
- reconcile: a day's WeChat Pay trade bill compared with the orders (`POST
  /v1/admin/apps/shop/pay/reconciliations`: the server downloads the gzipped bill from the
  emulator, checks its SHA-1, parses it, looks up the orders and refunds it names, keeps the
  report). With the emulator's payment calendar at 20:00 yesterday, China time
  (`/emulator/wechatpay/clock`, about -86400 s), 10 orders are paid (9 notified, one with its
  notification dropped) and two partly refunded; the calendar is put back. The bill of that
  day is then set (`/emulator/wechatpay/bill`) to carry one difference of each kind the
  emulator can make (INJECTED below: `amounts`, an `omit`, five `extra` rows, and the order
  whose notification was dropped, `created` here with checks held off). First without
  generated rows, where every injected difference must be listed by kind and number and
  nothing else; then with `--reconcile-lines` (100,000) generated payment rows of orders nobody
  made (`extra_count`, each itself a `missing_here`): the request's wall clock,
  `--reconcile-calls` (3) times (each replaces the day's report), and `differences` must be
  exactly the generated rows plus the injected ones (only the first 1,000 are listed: the
  injected ones among them must have their kind).

Every figure is the median of the runs with their spread. Writes bench/results/payments.json and
the `payments` section of docs/performance.md.
"""

import argparse
import asyncio
import base64
import datetime
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from common import (ROOT, TOKEN, Client, emulator, figure, fold, heading, meta, parse_args, percentile,
                    replace_docs_section, server, wait_ready, write_results)

TARGETS = {"forged_accepted": 0, "callback_p99_ms": 20, "lost_within_secs": 120,
           "reconcile_lines": 100_000, "reconcile_secs": 5}

APP = "shop"
APPID = "wx-bench-shop"
MCHID = "1900000109"
SERIAL = "5157F09EFDC096DE15EBE81A47057A72"
# A merchant's APIv3 key: 32 characters, new for each invocation.
API_V3_KEY = secrets.token_hex(16)
NOTIFY = f"/v1/apps/{APP}/pay/wechat/notify"
PROBE = "WECHATPAY/SIGNTEST/"
TRADE_STATES = ["NOTPAY", "CLOSED", "REFUND", "PAYERROR", "USERPAYING", "REVOKED"]

CONFIG = """
[auth]
logins_per_ip_per_minute = 1000000
logins_per_app_per_minute = 10000000
"""
# Checks held off: only callbacks move orders.
CONFIG_HELD = CONFIG + """
[payments]
check_delay_secs = 600
"""

# What each forged category sends, for the full run (--quick: a tenth). `signed`: whether the
# emulator signs bodies of its own for it (one per order, two for stale ones: one from the past,
# one from the future), sent again as needed; else each is derived from a genuine body signed
# for an order. `sent`: how many go to the server.
CATEGORIES = [
    # name, label, signed, sent
    ("probe", "signature probe (`WECHATPAY/SIGNTEST/…`)", 1, 1000),
    ("stale", "stale: signed more than 300 s away (up to 3,600 s)", 2, 1200),
    ("flipped_tag", "flipped GCM tag, signed after the flip", 1, 1000),
    ("body_changed", "body changed after signing (one byte)", 0, 3000),
    ("unknown_serial", "unknown `Wechatpay-Serial`", 0, 1000),
    ("other_signature", "another body's signature", 0, 1000),
    ("wrong_amount", "genuine signature, wrong amount", 1, 600),
    ("wrong_appid", "genuine signature, wrong appid", 1, 600),
    ("wrong_mchid", "genuine signature, wrong mchid", 1, 600),
    ("wrong_trade_state", "genuine signature, trade_state not SUCCESS", 1, 600),
    ("unknown_order", "genuine signature, unknown out_trade_no", 1, 600),
]


# ---- a light asyncio HTTP/1.1 client ------------------------------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection: sends bytes made beforehand, reads one answer."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def exchange(self, data):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        body = b""
        match = re.search(rb"\r\ncontent-length: *(\d+)", lower)
        if match:
            body = await self.reader.readexactly(int(match.group(1)))
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def request_bytes(method, path, body=b"", headers=()):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def callback(body, headers, path=NOTIFY):
    """A notification as the platform posts it: `body` (bytes) and its `Wechatpay-*` headers."""
    names = ["wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial",
             "wechatpay-signature-type"]
    return request_bytes("POST", path, body, [(n, headers[n]) for n in names if n in headers])


class Crash:
    """Kills the server (SIGKILL) once `after` answers came, starts it again, and lets the
    senders go on."""

    def __init__(self, node, after):
        self.node, self.after = node, after
        self.up = asyncio.Event()
        self.up.set()
        self.done = asyncio.Event()
        self.task = None
        self.lost = 0
        self.killed_at_answers = self.restart_secs = None

    def answered(self, count):
        if self.task is None and count >= self.after:
            self.up.clear()
            self.node.kill()
            self.killed_at_answers = count
            self.task = asyncio.ensure_future(self.restart())

    async def restart(self):
        start = time.perf_counter()
        self.node.start()
        while True:
            try:
                status, _ = await Conn(self.node.port).exchange(request_bytes("GET", "/readyz"))
                if status == 200:
                    break
            except (OSError, asyncio.IncompleteReadError):
                pass
            if self.node.process.poll() is not None:
                raise RuntimeError("the server did not start again after kill -9")
            await asyncio.sleep(0.02)
        self.restart_secs = round(time.perf_counter() - start, 3)
        self.up.set()
        self.done.set()


async def send_all(port, requests, concurrency, crash=None):
    """Sends every request (bytes) on `concurrency` keep-alive connections at once; answers
    [(status, body, seconds)] in the requests' order, and the wall time. A request that gets no
    answer (the connection broke) is sent again, on a new connection: after the restart when
    `crash` killed the server, else up to 3 times."""
    answers = [None] * len(requests)
    order = iter(range(len(requests)))
    count = 0

    async def worker(conn):
        nonlocal count
        for i in order:
            tries = 0
            while True:
                if crash:
                    await crash.up.wait()
                start = time.perf_counter()
                try:
                    status, body = await conn.exchange(requests[i])
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                    conn.close()
                    conn = Conn(port)
                    tries += 1
                    if crash and not crash.up.is_set():
                        crash.lost += 1
                        continue
                    if tries > 3:
                        raise
                    await asyncio.sleep(0.05)
                    continue
                answers[i] = (status, body, time.perf_counter() - start)
                count += 1
                if crash:
                    crash.answered(count)
                break
        conn.close()

    # Every connection open before the clock starts.
    conns = [Conn(port) for _ in range(min(concurrency, len(requests)))]
    for conn in conns:
        conn.reader, conn.writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    await asyncio.gather(*(worker(conn) for conn in conns))
    wall = time.perf_counter() - start
    if crash and crash.task:
        await crash.task
    return answers, wall


def run(coroutine):
    return asyncio.run(coroutine)


async def json_calls(port, calls, concurrency, token=TOKEN):
    """[(method, path, body)] as JSON with the admin token: [(status, parsed answer)]."""
    requests = []
    for method, path, body in calls:
        data = json.dumps(body).encode() if body is not None else b""
        requests.append(request_bytes(method, path, data, [("Authorization", f"Bearer {token}")] if token else []))
    answers, _ = await send_all(port, requests, concurrency)
    return [(status, json.loads(body) if body else None) for status, body, _ in answers]


def latency_figures(answers, wall):
    seconds = [a[2] for a in answers]
    return {"requests": len(answers), "per_sec": round(len(answers) / wall),
            "p50_ms": round(percentile(seconds, 50) * 1000, 2), "p99_ms": round(percentile(seconds, 99) * 1000, 2),
            "max_ms": round(max(seconds) * 1000, 2)}


# ---- the shop -----------------------------------------------------------------------------------

def openssl_key_pair():
    """(private PEM, public PEM): a 2048-bit RSA key made by OpenSSL, as a merchant makes one."""
    with tempfile.TemporaryDirectory() as d:
        key, pub = os.path.join(d, "key.pem"), os.path.join(d, "pub.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                        "-out", key], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
        return open(key).read(), open(pub).read()


class Shop:
    """App `shop` on a server, WeChat login and WeChat Pay on an emulator, some users."""

    def __init__(self, args, port, emulator_port, users=8):
        self.port, self.emulator_port, self.args = port, emulator_port, args
        admin = Client(port)
        platform = Client(emulator_port, bearer=None)
        admin.json("POST", "/v1/admin/apps", {"name": APP}, expect=201)
        platform.json("POST", "/emulator/apps", {"platform": "wechat", "appid": APPID, "secret": "s"}, expect=201)
        admin.json("PUT", f"/v1/admin/apps/{APP}/auth/providers/wechat", {
            "appid": APPID, "secret": "s", "base_url": f"http://127.0.0.1:{emulator_port}/wechat"})
        private_key, public_key = args.merchant_key
        self.platform = platform.json("POST", "/emulator/wechatpay/merchants", {
            "mchid": MCHID, "serial_no": SERIAL, "public_key": public_key, "api_v3_key": API_V3_KEY})
        admin.json("PUT", f"/v1/admin/apps/{APP}/pay/merchants/wechat", {
            "mchid": MCHID, "serial_no": SERIAL, "private_key": private_key, "api_v3_key": API_V3_KEY,
            "platform_keys": [{"serial": self.platform["public_key_id"], "public_key": self.platform["public_key"]}],
            "base_url": f"http://127.0.0.1:{emulator_port}/wechatpay"})
        self.users = []
        for n in range(users):
            code = platform.json("POST", "/emulator/codes",
                                 {"platform": "wechat", "appid": APPID, "user": f"buyer{n}"}, expect=201)["code"]
            grant = Client(port, bearer=None).json("POST", f"/v1/apps/{APP}/auth/sessions",
                                                   {"provider": "wechat", "code": code}, expect=201)
            self.users.append(grant["user"]["id"])
        self.rng = random.Random(f"{port}-{time.time()}")

    def orders(self, count, concurrency=16):
        """`count` orders placed with the emulator: [{id, out_trade_no, amount_fen, created}]."""
        calls = [("POST", f"/v1/admin/apps/{APP}/pay/orders",
                  {"amount_fen": self.rng.randint(1, 100_000), "description": f"Bench order {n}",
                   "user": self.users[n % len(self.users)]}) for n in range(count)]
        made = []
        for status, order in run(json_calls(self.port, calls, concurrency)):
            if status != 201:
                raise RuntimeError(f"an order was not created: {status} {order}")
            made.append({"id": order["id"], "out_trade_no": order["out_trade_no"],
                         "amount_fen": order["amount_fen"], "created": parse_time(order["created_at"])})
        return made

    def details(self, orders, port=None):
        calls = [("GET", f"/v1/admin/apps/{APP}/pay/orders/{o['id']}", None) for o in orders]
        answers = run(json_calls(port or self.port, calls, 16))
        for status, detail in answers:
            if status != 200:
                raise RuntimeError(f"an order could not be read: {status} {detail}")
        return [detail for _, detail in answers]

    def forge(self, asks, concurrency=8):
        """Notifications the emulator signs with its platform key: [(body bytes, headers)]."""
        calls = [("POST", "/emulator/wechatpay/forge", {"mchid": MCHID, **ask}) for ask in asks]
        forged = []
        for status, answer in run(json_calls(self.emulator_port, calls, concurrency, token=None)):
            if status != 200:
                raise RuntimeError(f"the emulator did not forge: {status} {answer}")
            forged.append((answer["body"].encode(), answer["headers"]))
        return forged

    def pay(self, order, drop=True):
        """The user pays at the emulator; the wall clock just before, and the transaction id."""
        at = time.time()
        body = {"mchid": MCHID, "out_trade_no": order["out_trade_no"]}
        if drop:
            body["notify"] = "drop"
        answer = Client(self.emulator_port, bearer=None).json("POST", "/emulator/wechatpay/pay", body)
        return at, answer["transaction_id"]


def china_now():
    return datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).replace(microsecond=0).isoformat()


def parse_time(text):
    """Seconds since the epoch of an RFC 3339 time, with any number of fractional digits."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    base, fraction, zone = match.groups()
    stamp = datetime.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone)).timestamp()
    return stamp + (float("0" + fraction) if fraction else 0.0)


def transaction(order, transaction_id=None, **change):
    """A TRANSACTION.SUCCESS resource for `order`, as the platform sends it, with `change`."""
    total = order["amount_fen"]
    resource = {
        "appid": APPID, "mchid": MCHID, "out_trade_no": order["out_trade_no"],
        "transaction_id": transaction_id or f"42000{random.randrange(10**22, 10**23)}",
        "trade_type": "JSAPI", "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": china_now(), "payer": {"openid": "o-bench-buyer"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    }
    resource.update(change)
    return resource


def answer_code(status, body):
    """`status code (why)` of an answer: its error's code, and the reason its message gives after
    the last colon (which check refused it)."""
    code = ""
    if body:
        try:
            error = json.loads(body)["error"]
            code = error["code"]
            message = error.get("message", "")
            if ": " in message:
                code += f" ({message.rsplit(': ', 1)[1]})"
        except (ValueError, KeyError, TypeError, AttributeError):
            code = "?"
    return f"{status} {code}".strip()


def tally(codes):
    counted = {}
    for code in codes:
        counted[code] = counted.get(code, 0) + 1
    return ", ".join(f"{code} ×{n:,}" for code, n in sorted(counted.items()))


# ---- forged callbacks ---------------------------------------------------------------------------

def measure_forged(args, port, emulator_port):
    scale = 10 if args.quick else 1
    with emulator(args.binary, emulator_port), server(args.binary, port, CONFIG, log=args.log):
        shop = Shop(args, port, emulator_port)
        orders = shop.orders(args.forged_orders)
        rng = shop.rng
        asks, kinds = [], []

        def ask(kind, order, **fields):
            asks.append(fields)
            kinds.append((kind, order))

        for order in orders:
            good = transaction(order)
            ask("genuine", order, resource=good)
            ask("probe", order, resource=good, probe=True)
            ask("stale", order, resource=good, time_offset_secs=-rng.randint(301, 3600))
            # From the future: far enough ahead to be 300 s away still when it is sent.
            ask("stale", order, resource=good, time_offset_secs=rng.randint(301 + args.stale_margin, 3600))
            ask("flipped_tag", order, resource=good, flip_tag=True)
            ask("wrong_amount", order, resource=transaction(order, amount={
                "total": order["amount_fen"] + rng.randint(1, 100), "currency": "CNY"}))
            ask("wrong_appid", order, resource=transaction(order, appid="wx-another-shop"))
            ask("wrong_mchid", order, resource=transaction(order, mchid="1900000999"))
            ask("wrong_trade_state", order, resource=transaction(order, trade_state=rng.choice(TRADE_STATES)))
            ask("unknown_order", order, resource=transaction(
                {**order, "out_trade_no": f"nobody_{rng.randrange(16**12):012x}"}))
        start = time.perf_counter()
        forged = shop.forge(asks)
        forge_secs = time.perf_counter() - start
        signed = {}
        for (kind, order), (body, headers) in zip(kinds, forged):
            signed.setdefault(kind, []).append((order, body, headers))
        genuine = signed.pop("genuine")

        plan = {}  # category -> [(body, headers)]
        distinct = {}  # category -> distinct bodies signed by the emulator in it
        for name, _, own, sent in CATEGORIES:
            want = max(1, sent // scale)
            made = []
            if own:
                bodies = [(b, h) for _, b, h in signed[name]]
                if name == "probe":
                    # The emulator's probes, then probes as WeChat Pay sends them: any signature
                    # after the prefix.
                    made = bodies[:want]
                    distinct[name] = len(made)
                    while len(made) < want:
                        _, body, headers = rng.choice(genuine)
                        h = dict(headers)
                        h["wechatpay-signature"] = PROBE + base64.b64encode(rng.randbytes(256)).decode()
                        made.append((body, h))
                else:
                    made = [bodies[i % len(bodies)] for i in range(want)]
                    distinct[name] = min(want, len(bodies))
            elif name == "body_changed":
                for _ in range(want):
                    _, body, headers = rng.choice(genuine)
                    changed = bytearray(body)
                    at = rng.randrange(len(changed))
                    changed[at] ^= rng.randint(1, 255)
                    made.append((bytes(changed), headers))
            elif name == "unknown_serial":
                for _ in range(want):
                    _, body, headers = rng.choice(genuine)
                    h = dict(headers)
                    h["wechatpay-serial"] = rng.choice([
                        f"PUB_KEY_ID_{rng.randrange(10**30):030d}",
                        f"{rng.randrange(16**32):032X}",
                        headers["wechatpay-serial"][:-1] + "X"])
                    made.append((body, h))
            elif name == "other_signature":
                for _ in range(want):
                    (_, body, headers), (_, _, other) = rng.sample(genuine, 2)
                    h = dict(headers)
                    h["wechatpay-signature"] = other["wechatpay-signature"]
                    made.append((body, h))
            plan[name] = made

        stream = [(name, callback(body, headers)) for name, made in plan.items() for body, headers in made]
        rng.shuffle(stream)
        stale_skews = [int(h["wechatpay-timestamp"]) - time.time() for _, _, h in signed["stale"]]
        start = time.perf_counter()
        answers, wall = run(send_all(port, [r for _, r in stream], args.forged_concurrency))
        send_secs = time.perf_counter() - start
        # Stale ones are still stale now that every one was sent.
        end_skews = [int(h["wechatpay-timestamp"]) - time.time() for _, _, h in signed["stale"]]
        closest = min(min(abs(s) for s in stale_skews), min(abs(s) for s in end_skews))
        if closest < 300:
            raise RuntimeError(f"a stale notification came within {closest:.0f} s of now: raise --stale-margin")

        categories = {}
        for (name, _), (status, body, _) in zip(stream, answers):
            c = categories.setdefault(name, {"sent": 0, "accepted": 0, "codes": []})
            c["sent"] += 1
            c["accepted"] += 1 if 200 <= status < 300 else 0
            c["codes"].append(answer_code(status, body))
        for name, c in categories.items():
            c["answers"] = tally(c.pop("codes"))
            c["distinct_signed"] = distinct.get(name, 0)
        details = shop.details(orders)
        untouched = sum(1 for d in details if d["state"] == "created" and d["events"] == [])

        # The control: the genuine bodies, untouched, are taken and pay their orders.
        control, _ = run(send_all(port, [callback(b, h) for _, b, h in genuine], 16))
        taken = sum(1 for status, _, _ in control if status == 204)
        by_id = {d["id"]: d for d in shop.details([o for o, _, _ in genuine])}
        paid = sum(1 for o, _, _ in genuine if by_id[o["id"]]["state"] == "paid"
                   and [e["name"] for e in by_id[o["id"]]["events"]] == ["paid"])
        return {
            "orders": len(orders),
            "sent": len(stream),
            "accepted": sum(c["accepted"] for c in categories.values()),
            "forged_by_emulator": len(forged),
            "forge_secs": round(forge_secs, 2),
            "send_secs": round(send_secs, 2),
            "per_sec": round(len(stream) / wall),
            "orders_untouched": untouched,
            "stale_closest_secs": round(closest),
            "control": {"sent": len(genuine), "taken": taken, "paid_once": paid},
            "categories": {name: categories[name] for name, *_ in CATEGORIES},
        }


# ---- callback latency, against the Node.js peer -------------------------------------------------

def start_peer(args, port, shop, orders):
    settings = {"mchid": MCHID, "appid": APPID, "api_v3_key": API_V3_KEY,
                "platform_serial": shop.platform["public_key_id"],
                "platform_public_key": shop.platform["public_key"],
                "orders": [{"out_trade_no": o["out_trade_no"], "amount_fen": o["amount_fen"]} for o in orders]}
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="payments-peer-", delete=False)
    json.dump(settings, handle)
    handle.close()
    process = subprocess.Popen(["node", os.path.join(ROOT, "bench/peers/payments/server.mjs"), str(port), handle.name],
                               stdout=subprocess.DEVNULL, stderr=sys.stderr)
    try:
        wait_ready(port, process)
    except Exception:
        process.kill()
        raise
    return process, handle.name


def measure_latency(args, port, emulator_port, peer_port):
    with emulator(args.binary, emulator_port), server(args.binary, port, CONFIG_HELD, log=args.log) as process:
        shop = Shop(args, port, emulator_port)
        loaded = shop.orders(args.latency_orders)
        single = shop.orders(args.single_orders)
        forged = shop.forge([{"resource": transaction(o)} for o in loaded + single])
        first = [callback(b, h) for b, h in forged[:len(loaded)]]
        stream = first * (1 + args.duplicates)
        shop.rng.shuffle(stream)
        singles = [callback(b, h) for b, h in forged[len(loaded):]]

        peer, settings_file = start_peer(args, peer_port, shop, loaded + single)
        try:
            results = {}
            for side, target, pid in (("cloudlet", port, process.pid), ("peer", peer_port, peer.pid)):
                cpu = cpu_secs(pid)
                answers, wall = run(send_all(target, stream, args.concurrency))
                cpu = cpu_secs(pid) - cpu
                bad = [answer_code(s, b) for s, b, _ in answers if s != 204]
                if bad:
                    raise RuntimeError(f"{side}: {len(bad)} callbacks not taken: {tally(bad)}")
                one, one_wall = run(send_all(target, singles, 1))
                bad = [answer_code(s, b) for s, b, _ in one if s != 204]
                if bad:
                    raise RuntimeError(f"{side}: {len(bad)} single callbacks not taken: {tally(bad)}")
                results[side] = {"loaded": latency_figures(answers, wall), "single": latency_figures(one, one_wall)}
                # The server's CPU time per callback under load (both processors: at most 2 s a second).
                results[side]["loaded"]["cpu_ms_per_callback"] = round(cpu * 1000 / len(stream), 3)
                results[side]["loaded"]["cpu_busy"] = round(cpu / wall, 2)
            stats = Client(peer_port).json("GET", "/stats")
            results["peer"]["paid"] = stats["paid"]
            results["peer"]["paid_changes"] = stats["paid_changes"]
        finally:
            peer.terminate()
            peer.wait(timeout=30)
            os.unlink(settings_file)
        details = shop.details(loaded + single)
        results["cloudlet"]["paid"] = sum(1 for d in details if d["state"] == "paid")
        results["cloudlet"]["paid_once"] = sum(
            1 for d in details if d["state"] == "paid" and [e["name"] for e in d["events"]] == ["paid"])
        results["cloudlet"]["rss_mb"] = round(rss_kib(process.pid) / 1024, 1)
        results["orders"] = len(loaded)
        results["single_orders"] = len(single)
        results["callbacks"] = len(stream)
        c, p = results["cloudlet"], results["peer"]
        results["ratios"] = {
            "per_sec": round(c["loaded"]["per_sec"] / p["loaded"]["per_sec"], 2),
            "p99": round(c["loaded"]["p99_ms"] / p["loaded"]["p99_ms"], 2),
            "single_p50": round(c["single"]["p50_ms"] / p["single"]["p50_ms"], 2),
        }
        return results


def cpu_secs(pid):
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- lost callbacks -----------------------------------------------------------------------------

def measure_lost(args, port, emulator_port):
    # The server's defaults for checks: no [payments] section.
    with emulator(args.binary, emulator_port), server(args.binary, port, CONFIG, log=args.log):
        shop = Shop(args, port, emulator_port)
        orders = shop.orders(args.lost_orders)
        for order in orders:
            order["pay_due"] = order["created"] + shop.rng.uniform(0, args.lost_spread)
        paid_at = {}
        for order in sorted(orders, key=lambda o: o["pay_due"]):
            wait = order["pay_due"] - time.time()
            if wait > 0:
                time.sleep(wait)
            paid_at[order["id"]], _ = shop.pay(order, drop=True)
        last_paid = max(paid_at.values())
        admin = Client(port)
        deadline = last_paid + args.lost_wait
        while True:
            left = admin.json("GET", f"/v1/admin/apps/{APP}/pay/orders?state=created&limit=200")["items"]
            if not left or time.time() > deadline:
                break
            time.sleep(0.5)
        details = shop.details(orders)
        delays, sources, missing, last_event = [], {}, 0, 0.0
        for d in details:
            paid = [e for e in d["events"] if e["name"] == "paid"]
            if d["state"] != "paid" or len(paid) != 1:
                missing += 1
                continue
            at = parse_time(paid[0]["at"])
            last_event = max(last_event, at)
            delays.append(at - paid_at[d["id"]])
            sources[paid[0]["source"]] = sources.get(paid[0]["source"], 0) + 1
        if not delays:
            raise RuntimeError("no order was found paid")
        return {
            "orders": len(orders),
            "paid": len(delays),
            "not_paid": missing,
            "by_query": sources.get("query", 0),
            "p50_secs": round(percentile(delays, 50), 2),
            "p99_secs": round(percentile(delays, 99), 2),
            "max_secs": round(max(delays), 2),
            "within_target": sum(1 for d in delays if d <= TARGETS["lost_within_secs"]),
            "all_paid_after_last_payment_secs": round(last_event - last_paid, 2),
            "phase_secs": round(time.time() - min(o["created"] for o in orders)),
        }


# ---- duplicates and a crash ---------------------------------------------------------------------

class Node:
    """`cloudlet serve` on a data directory that outlives the process, so it can be killed and
    started again on the same data."""

    def __init__(self, args, port, config_text):
        self.args, self.port = args, port
        self.dir = tempfile.mkdtemp(prefix="cloudlet-bench-")
        self.config = os.path.join(self.dir, "bench.toml")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.process = None

    def start(self):
        env = dict(os.environ, CLOUDLET_ADMIN_TOKEN=TOKEN, CLOUDLET_LOG_LEVEL="warn",
                   CLOUDLET_CONSOLE_LISTEN="off")
        output = open(self.args.log, "ab") if self.args.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [self.args.binary, "serve", "--data-dir", os.path.join(self.dir, "data"),
             "--listen", f"127.0.0.1:{self.port}", "--config", self.config],
            env=env, stdout=output, stderr=output)
        if self.args.log:
            output.close()

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        subprocess.run(["rm", "-rf", self.dir], check=False)


def measure_crash(args, port, emulator_port):
    node = Node(args, port, CONFIG_HELD)
    with emulator(args.binary, emulator_port):
        try:
            node.start()
            wait_ready(port, node.process)
            shop = Shop(args, port, emulator_port)
            orders = shop.orders(args.crash_orders)
            ids = {}
            for order in orders:
                _, ids[order["out_trade_no"]] = shop.pay(order, drop=True)
            asks = []
            for order in orders:
                resource = transaction(order, transaction_id=ids[order["out_trade_no"]])
                asks += [{"resource": resource}, {"resource": resource}]
                asks.append({"event_type": "REFUND.SUCCESS", "resource": {
                    "mchid": MCHID, "out_trade_no": order["out_trade_no"],
                    "transaction_id": ids[order["out_trade_no"]],
                    "out_refund_no": f"RF{shop.rng.randrange(16**16):016x}", "refund_id": f"50300{shop.rng.randrange(10**20)}",
                    "refund_status": "SUCCESS", "success_time": china_now(), "user_received_account": "支付用户零钱",
                    "amount": {"total": order["amount_fen"], "refund": order["amount_fen"],
                               "payer_total": order["amount_fen"], "payer_refund": order["amount_fen"]}}})
            forged = shop.forge(asks)
            stream = []
            for n in range(len(orders)):
                pay_a, pay_b, refund = forged[3 * n:3 * n + 3]
                stream += [("paid", callback(*pay_a))] * 8 + [("paid", callback(*pay_b))] * 7
                stream += [("refund", callback(*refund))] * 5
            shop.rng.shuffle(stream)
            crash = Crash(node, len(stream) // 2)
            start = time.perf_counter()
            answers, _ = run(send_all(port, [r for _, r in stream], 64, crash))
            stream_secs = time.perf_counter() - start
            codes = {"paid": [], "refund": []}
            for (kind, _), (status, body, _) in zip(stream, answers):
                codes[kind].append(answer_code(status, body))
            details = shop.details(orders)
            paid_once = sum(1 for d in details if d["state"] == "paid"
                            and [e["name"] for e in d["events"]] == ["paid"]
                            and d["transaction_id"] == ids[d["out_trade_no"]])
            refund_effects = sum(1 for d in details if d["refunds"] or d["refunded_fen"]
                                 or any(e["name"] != "paid" for e in d["events"]))
            return {
                "orders": len(orders),
                "callbacks": len(stream),
                "paid_callbacks_taken": sum(1 for c in codes["paid"] if c == "204"),
                "paid_callbacks": len(codes["paid"]),
                "refund_callbacks": len(codes["refund"]),
                "refund_callbacks_taken": sum(1 for c in codes["refund"] if c.startswith("2")),
                "refund_answers": tally(codes["refund"]),
                "killed_at": crash.killed_at_answers or 0,
                "resent_after_crash": crash.lost,
                "restart_secs": crash.restart_secs or 0,
                "stream_secs": round(stream_secs, 2),
                "paid_once": paid_once,
                "refund_effects": refund_effects,
            }
        finally:
            node.stop()


# ---- reconciliation -----------------------------------------------------------------------------

# The differences injected into the bill, by kind, in the order the docs list them: the emulator
# can make each of these; not `refund_state` (its refunds succeed at once), `refund_missing_there`
# (the server dates a refund by its own clock, not the emulator's calendar) or `unknown_row` (its
# rows are SUCCESS or REFUND).
INJECTED = [
    ("amount", "`amounts`: another amount on a paid order's row"),
    ("missing_there", "`omit`: a paid order left out"),
    ("missing_here", "`extra`: a payment of an order nobody made"),
    ("state", "paid there, `created` here (its notification dropped, checks held off)"),
    ("transaction_id", "`extra`: a paid order's payment under another transaction, listed first"),
    ("duplicate", "… and so its own row, listed after, a second payment"),
    ("refund_missing_here", "`extra`: a refund nobody asked for"),
    ("refund_amount", "`extra`: a real refund with another amount"),
    ("refund_order", "`extra`: a real refund on another order"),
]
INJECTED_KINDS = [kind for kind, _ in INJECTED]
# The China time of day the payments are dated, the day before: after noon, where the bill's
# `extra` rows are, so that the one under another transaction comes first.
PAID_AT_CHINA = datetime.time(20, 0)


def china_day(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone(datetime.timedelta(hours=8))).date().isoformat()


def wait_states(shop, orders, states, timeout=60):
    """Waits until every order is in one of `states`; their details."""
    deadline = time.time() + timeout
    while True:
        details = shop.details(orders)
        if all(d["state"] in states for d in details):
            return details
        if time.time() > deadline:
            raise RuntimeError(f"orders not {'/'.join(states)} after {timeout} s: "
                               f"{[d['state'] for d in details]}")
        time.sleep(0.2)


def measure_reconcile(args, port, emulator_port):
    # Checks held off: the order whose notification is dropped stays `created` here.
    with emulator(args.binary, emulator_port) as emulator_process, \
            server(args.binary, port, CONFIG_HELD, log=args.log) as process:
        shop = Shop(args, port, emulator_port)
        platform = Client(emulator_port, bearer=None)
        admin = Client(port)
        admin.conn.timeout = 300
        china = datetime.timezone(datetime.timedelta(hours=8))
        yesterday = datetime.datetime.now(china).date() - datetime.timedelta(days=1)
        paid_at = datetime.datetime.combine(yesterday, PAID_AT_CHINA, china).timestamp()
        # The emulator's payment calendar at 20:00 yesterday (China time) while the orders are
        # placed, paid and refunded: a day back, give or take 12 hours.
        offset = round(paid_at - time.time())
        platform.json("POST", "/emulator/wechatpay/clock", {"offset_secs": offset})
        try:
            orders = shop.orders(10, concurrency=4)
            dropped, notified = orders[0], orders[1:]
            _, dropped_transaction = shop.pay(dropped, drop=True)
            transactions = {}
            for order in notified:
                _, transactions[order["out_trade_no"]] = shop.pay(order, drop=False)
            wait_states(shop, notified, ("paid",))
            refunded = notified[4:6]
            refunds = []
            for order in refunded:
                refund = {"amount_fen": max(1, order["amount_fen"] // 3),
                          "out_refund_no": f"RB{shop.rng.randrange(16**16):016x}"}
                admin.json("POST", f"/v1/admin/apps/{APP}/pay/orders/{order['id']}/refunds", refund)
                refunds.append(refund)
            wait_states(shop, refunded, ("partly_refunded", "refunded"))
        finally:
            platform.json("POST", "/emulator/wechatpay/clock", {"offset_secs": 0})
        details = {d["out_trade_no"]: d for d in shop.details(orders)}
        if details[dropped["out_trade_no"]]["state"] != "created":
            raise RuntimeError("the order whose notification was dropped is not `created` here")
        days = {china_day(parse_time(details[o["out_trade_no"]]["paid_at"])) for o in notified}
        if days != {yesterday.isoformat()}:
            raise RuntimeError(f"the payments were dated {sorted(days)}, not {yesterday}")
        day = yesterday.isoformat()

        # One difference of each kind; notified[6] and [7] agree (notified[6] is named by two
        # refund rows that are not its own).
        amount, omitted, doubled, ghost_refunded = notified[0], notified[1], notified[2], notified[6]
        (refunded_a, refund_a), (refunded_b, refund_b) = zip(refunded, refunds)
        ghost = f"BENCH-GHOST-{shop.rng.randrange(16**12):012x}"
        ghost_refund = f"RB-GHOST-{shop.rng.randrange(16**12):012x}"

        def refund_row(order, out_refund_no, refund_fen):
            return {"out_trade_no": order["out_trade_no"], "transaction_id": transactions[order["out_trade_no"]],
                    "amount_fen": order["amount_fen"], "state": "REFUND", "out_refund_no": out_refund_no,
                    "refund_id": f"50300{shop.rng.randrange(10**20, 10**21)}", "refund_fen": refund_fen}

        setting = {
            "mchid": MCHID, "bill_date": day,
            "amounts": {amount["out_trade_no"]: amount["amount_fen"] + 1},
            "omit": [omitted["out_trade_no"]],
            "extra": [
                {"out_trade_no": ghost, "transaction_id": f"42000{shop.rng.randrange(10**22, 10**23)}",
                 "amount_fen": 500},
                {"out_trade_no": doubled["out_trade_no"], "transaction_id": f"42000{shop.rng.randrange(10**22, 10**23)}",
                 "amount_fen": doubled["amount_fen"]},
                refund_row(ghost_refunded, ghost_refund, 1),
                refund_row(refunded_a, refund_a["out_refund_no"], refund_a["amount_fen"] + 1),
                refund_row(ghost_refunded, refund_b["out_refund_no"], refund_b["amount_fen"]),
            ],
        }
        expected = {
            ("amount", amount["out_trade_no"]), ("missing_there", omitted["out_trade_no"]),
            ("missing_here", ghost), ("state", dropped["out_trade_no"]),
            ("transaction_id", doubled["out_trade_no"]), ("duplicate", doubled["out_trade_no"]),
            ("refund_missing_here", ghost_refund), ("refund_amount", refund_a["out_refund_no"]),
            ("refund_order", refund_b["out_refund_no"]),
        }
        assert sorted(k for k, _ in expected) == sorted(INJECTED_KINDS)
        numbers = {number for _, number in expected}

        def found(report):
            return [(d["kind"], d.get("out_refund_no") or d["out_trade_no"]) for d in report["items"]]

        def reconcile():
            start = time.perf_counter()
            report = admin.json("POST", f"/v1/admin/apps/{APP}/pay/reconciliations",
                                {"provider": "wechat", "date": day})
            return report, time.perf_counter() - start

        # The injected differences alone: each listed, by kind and number, and nothing else.
        platform.json("POST", "/emulator/wechatpay/bill", setting)
        small, small_secs = reconcile()
        small_found = found(small)
        if sorted(small_found) != sorted(expected) or small["differences"] != len(expected):
            raise RuntimeError(f"the injected differences were not reported as injected: "
                               f"{small['differences']} differences, {sorted(small_found)}; expected {sorted(expected)}")

        # The same with generated rows: a bill of at least --reconcile-lines lines.
        platform.json("POST", "/emulator/wechatpay/bill", {**setting, "extra_count": args.reconcile_lines})
        want = args.reconcile_lines + len(expected)
        server_cpu, emulator_cpu = cpu_secs(process.pid), cpu_secs(emulator_process.pid)
        seconds, reports = [], []
        for _ in range(args.reconcile_calls):
            report, secs = reconcile()
            seconds.append(secs)
            reports.append(report)
        server_cpu = cpu_secs(process.pid) - server_cpu
        emulator_cpu = cpu_secs(emulator_process.pid) - emulator_cpu
        for report in reports:
            if report["differences"] != want:
                raise RuntimeError(f"{report['differences']:,} differences reported of {want:,} expected")
        report = reports[-1]
        listed = found(report)
        listed_injected = [f for f in listed if f[1] in numbers]
        wrong = [f for f in listed_injected if f not in expected]
        wrong += [(k, n) for k, n in listed if n not in numbers
                  and not (k == "missing_here" and re.fullmatch(r"GEN\d+", n))]
        if wrong or len(listed_injected) != len(set(listed_injected)):
            raise RuntimeError(f"differences listed that were not injected as such: {wrong[:10]}")
        kept = admin.json("GET", f"/v1/admin/apps/{APP}/pay/reconciliations/wechat/{day}")
        if kept["differences"] != want:
            raise RuntimeError(f"the kept report has {kept['differences']:,} differences, not {want:,}")
        lines = report["bill"]["payments"] + report["bill"]["refunds"]
        return {
            "lines": lines,
            "generated": args.reconcile_lines,
            "extra_lines": len(setting["extra"]),
            "real_lines": lines - args.reconcile_lines - len(setting["extra"]),
            "bill_payments": report["bill"]["payments"],
            "bill_refunds": report["bill"]["refunds"],
            "here_payments": report["here"]["payments"],
            "injected": len(expected),
            "injected_found_alone": sum(1 for f in small_found if f in expected),
            "small_bill_secs": round(small_secs, 3),
            "differences": report["differences"],
            "expected_differences": want,
            "listed": len(listed),
            "injected_listed": len(listed_injected),
            "calls": len(seconds),
            "secs": round(statistics.median(seconds), 3),
            "secs_max": round(max(seconds), 3),
            "server_cpu_secs": round(server_cpu / len(seconds), 3),
            "emulator_cpu_secs": round(emulator_cpu / len(seconds), 3),
            "server_peak_rss_mb": round(peak_rss_kib(process.pid) / 1024, 1),
        }


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# ---- runs, results, docs ------------------------------------------------------------------------

def one_run(args):
    p = args.port
    results = {}
    print("== forged callbacks", file=sys.stderr)
    results["forged"] = measure_forged(args, p, p + 1)
    print("== callback latency, against the Node.js peer", file=sys.stderr)
    results["latency"] = measure_latency(args, p, p + 1, p + 2)
    print("== duplicates and a crash", file=sys.stderr)
    results["crash"] = measure_crash(args, p, p + 1)
    print(f"== reconciliation: a bill of {args.reconcile_lines:,} generated lines", file=sys.stderr)
    results["reconcile"] = measure_reconcile(args, p, p + 1)
    print(f"== lost callbacks (up to {args.lost_spread + 80:.0f} s)", file=sys.stderr)
    results["lost"] = measure_lost(args, p, p + 1)
    return results


def harmonize(runs):
    """Makes the runs foldable (common.fold wants the same keys, and numbers or the same thing,
    in every run): a value that is not a number in every run becomes the list of every run's."""
    if all(isinstance(r, dict) for r in runs):
        keys = list(dict.fromkeys(k for r in runs for k in r))
        out = [{} for _ in runs]
        for k in keys:
            for o, v in zip(out, harmonize([r.get(k) for r in runs])):
                o[k] = v
        return out
    if all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in runs):
        return runs
    if all(r == runs[0] for r in runs):
        return runs
    return [json.dumps(runs, ensure_ascii=False)] * len(runs)


def versions():
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()[1]
    return {"node": node, "openssl": openssl, "python": sys.version.split()[0]}


def met(ok):
    return "met" if ok else "**not met**"


def write_docs(r):
    f, lat, lost, crash, m = r["forged"], r["latency"], r["lost"], r["crash"], r["meta"]
    v, t = m["versions"], m["targets"]
    c, p, ratio = lat["cloudlet"], lat["peer"], lat["ratios"]
    control = f["control"]
    rows = [
        f"| forged or mismatched callbacks accepted, of {f['sent']:,} against {f['orders']} real orders "
        f"({f['forged_by_emulator']:,} signed by the emulator, the rest derived; by category below) "
        f"| **{f['accepted']}** | | | 0: {met(f['accepted'] == 0)} |",
        f"| … the orders afterwards: still `created`, no event | {f['orders_untouched']} of {f['orders']} | | | all |",
        f"| … then the untouched genuine bodies (the control): taken, order paid with one event "
        f"| {control['taken']} taken, {control['paid_once']} paid of {control['sent']} | | | all |",
        f"| callback latency at {m['concurrency']} concurrent: {lat['callbacks']:,} pre-signed callbacks "
        f"({lat['orders']:,} orders, each {1 + m['duplicates']}×, shuffled), p99 "
        f"| **{figure(c['loaded'], 'p99_ms', ' ms')}** (p50 {figure(c['loaded'], 'p50_ms', ' ms')}) "
        f"| {figure(p['loaded'], 'p99_ms', ' ms')} (p50 {figure(p['loaded'], 'p50_ms', ' ms')}) "
        f"| {figure(ratio, 'p99', '×')} | ≤ {t['callback_p99_ms']} ms: {met(c['loaded']['p99_ms'] <= t['callback_p99_ms'])} |",
        f"| … callbacks taken per second | {figure(c['loaded'], 'per_sec', '/s')} | {figure(p['loaded'], 'per_sec', '/s')} "
        f"| {figure(ratio, 'per_sec', '×')} | reported |",
        f"| … the server's CPU time per callback (busy cores over the replay) "
        f"| {figure(c['loaded'], 'cpu_ms_per_callback', ' ms')} ({c['loaded']['cpu_busy']}) "
        f"| {figure(p['loaded'], 'cpu_ms_per_callback', ' ms')} ({p['loaded']['cpu_busy']}; one JavaScript thread) "
        f"| | reported |",
        f"| … orders paid, with exactly one `paid` event | {c['paid_once']:,} of {lat['orders'] + lat['single_orders']:,} "
        f"| {p['paid']:,} of {lat['orders'] + lat['single_orders']:,} (in memory) | | all |",
        f"| one callback at a time ({lat['single_orders']} orders), p50 / p99 "
        f"| {figure(c['single'], 'p50_ms', ' ms')} / {figure(c['single'], 'p99_ms', ' ms')} "
        f"| {figure(p['single'], 'p50_ms', ' ms')} / {figure(p['single'], 'p99_ms', ' ms')} "
        f"| {figure(ratio, 'single_p50', '×')} (p50) | reported |",
        f"| lost callbacks: {lost['orders']} orders paid with the notification dropped, paid "
        f"0–{m['lost_spread']:g} s after creation; paid event − payment, max "
        f"| **{figure(lost, 'max_secs', ' s')}** (p50 {figure(lost, 'p50_secs', ' s')}; "
        f"{lost['paid']} of {lost['orders']} paid, {lost['by_query']} by query; the last "
        f"{figure(lost, 'all_paid_after_last_payment_secs', ' s')} after the last payment) | | "
        f"| ≤ {t['lost_within_secs']} s: {met(lost['not_paid'] == 0 and lost['max_secs'] <= t['lost_within_secs'])} |",
        f"| duplicates and a crash: {crash['orders']:,} orders × 20 callbacks ({crash['callbacks']:,}), "
        f"`kill -9` after {crash['killed_at']:,} answers, restarted on the same data in "
        f"{figure(crash, 'restart_secs', ' s')}, {crash['resent_after_crash']} sent again: orders `paid` "
        f"with exactly one `paid` event and the emulator's transaction id "
        f"| **{crash['paid_once']:,} of {crash['orders']:,}** | | | all: {met(crash['paid_once'] == crash['orders'])} |",
        f"| … the {crash['refund_callbacks']:,} REFUND.SUCCESS callbacks for refunds nobody asked for "
        f"| {crash['refund_callbacks_taken']} taken ({crash['refund_answers']}); "
        f"{crash['refund_effects']} orders with a refund or another event | | | refused, no effect: "
        f"{met(crash['refund_callbacks_taken'] == 0 and crash['refund_effects'] == 0)} |",
    ]
    rc = r.get("reconcile")  # absent from results written before P5 was measured
    if rc:
        kinds = ", ".join(f"`{k}`" for k in INJECTED_KINDS)
        found_all = (rc["differences"] == rc["expected_differences"]
                     and rc["injected_found_alone"] == rc["injected"])
        rows += [
            f"| reconciliation: a day's WeChat Pay trade bill of {rc['lines']:,} lines "
            f"({rc['generated']:,} generated payments of orders nobody made here, {rc['real_lines']} of the day's "
            f"real payments and refunds, {rc['extra_lines']} injected), downloaded gzipped from the emulator, "
            f"SHA-1 checked, parsed and compared with the orders: `POST …/pay/reconciliations`, wall clock, "
            f"median of {rc['calls']} calls a run "
            f"| **{figure(rc, 'secs', ' s')}** (the server's CPU {figure(rc, 'server_cpu_secs', ' s')}, the "
            f"emulator's making the bill {figure(rc, 'emulator_cpu_secs', ' s')}; the server's peak RSS "
            f"{figure(rc, 'server_peak_rss_mb', ' MB')}) | | "
            f"| ≤ {t['reconcile_secs']} s for {t['reconcile_lines']:,} lines: "
            f"{met(rc['lines'] >= t['reconcile_lines'] and rc['secs'] <= t['reconcile_secs'])} |",
            f"| … differences reported: each generated row (`missing_here`) and {rc['injected']} injected, one of "
            f"each kind the emulator can make ({kinds}) "
            f"| **{rc['differences']:,} of {rc['expected_differences']:,}**; the same bill without the generated "
            f"rows: {rc['injected_found_alone']} of {rc['injected']} listed, each by kind and number, nothing else; "
            f"on the big bill {rc['injected_listed']} of them among the {rc['listed']:,} listed, of their kind "
            f"(a report lists up to 1,000, by kind: see docs/payments.md) "
            f"| | | 100 %: {met(found_all)} |",
        ]
    cat_rows = []
    labels = {name: label for name, label, *_ in CATEGORIES}
    for name, cat in f["categories"].items():
        cat_rows.append(f"| {labels[name]} | {cat['distinct_signed'] or 'derived'} | {cat['sent']:,} "
                        f"| {cat['accepted']} | {cat['answers']} |")
    cat_rows.append(f"| **all** | {f['forged_by_emulator']:,} (with the {control['sent']} genuine bodies "
                    f"mutated for the derived ones) | **{f['sent']:,}** | **{f['accepted']}** | |")
    text = (f"{heading(m)}; Cloudlet's release binary against `cloudlet emulator`'s WeChat Pay (its "
            f"platform key: RSA 2048; the merchant's made by OpenSSL {v['openssl']}), a plain Node.js "
            f"{v['node']} merchant backend as the peer (bench/peers/payments/server.mjs, state in memory), "
            f"and one Python {v['python']} asyncio client (bench/payments.py), all on the same "
            f"{m['cpus']} CPUs" + (f" (1-minute load average as each run began: "
                                   f"{', '.join(f'{x:.2f}' for x in m['load'])})" if m.get("load") else "") +
            ".\n\n"
            "| measure | Cloudlet | Node.js peer | Cloudlet / peer | the issue's target for Cloudlet |\n"
            "|---|---|---|---|---|\n" + "\n".join(rows) +
            "\n\nForged callbacks by category (each sent at "
            f"{m['forged_concurrency']} at once, shuffled together):\n\n"
            "| category | distinct bodies signed by the emulator | sent | accepted | answers |\n"
            "|---|---|---|---|---|\n" + "\n".join(cat_rows))
    replace_docs_section("payments", text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=os.path.join(ROOT, "target/release/cloudlet"))
    parser.add_argument("--port", type=int, default=18790,
                        help="Cloudlet's; the emulator's is the next, the Node.js peer's the one after")
    parser.add_argument("--forged-orders", type=int, help="orders the forged callbacks aim at (default 200; 20 with --quick)")
    parser.add_argument("--forged-concurrency", type=int, default=32)
    parser.add_argument("--stale-margin", type=int, default=120,
                        help="callbacks from the future are signed at least 301 + this many seconds ahead")
    parser.add_argument("--latency-orders", type=int, help="orders paid by the latency callbacks (default 2,000; 200 with --quick)")
    parser.add_argument("--duplicates", type=int, help="copies of each latency callback besides itself (default 2; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, default=200, help="latency callbacks in flight at once")
    parser.add_argument("--single-orders", type=int, help="orders paid one callback at a time (default 300; 30 with --quick)")
    parser.add_argument("--lost-orders", type=int, help="orders whose notification is dropped (default 200; 10 with --quick)")
    parser.add_argument("--lost-spread", type=float, help="their payments spread over this many seconds after creation (default 90; 3 with --quick)")
    parser.add_argument("--lost-wait", type=float, default=240, help="how long to wait for them after the last payment")
    parser.add_argument("--crash-orders", type=int, help="orders of the duplicates-and-crash stream (default 1,000; 50 with --quick)")
    parser.add_argument("--reconcile-lines", type=int, help="generated rows of the reconciled bill (default 100,000; 10,000 with --quick)")
    parser.add_argument("--reconcile-calls", type=int, default=3, help="times the big bill is reconciled per run (the median is reported)")
    parser.add_argument("--log", help="Cloudlet's output goes to this file")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one run, small counts; no docs, no results file")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", help="results file (default bench/results/payments.json; none with --quick)")
    parser.add_argument("--docs-from", metavar="RESULTS", help="only write docs/performance.md's section again from a results file")
    explicit_runs = any(a == "--runs" or a.startswith("--runs=") for a in sys.argv[1:])
    args = parse_args(parser)
    if args.docs_from:
        write_docs(json.load(open(args.docs_from)))
        return 0
    if args.quick and not explicit_runs:
        args.runs = 1
    q = args.quick
    args.forged_orders = args.forged_orders or (20 if q else 200)
    args.latency_orders = args.latency_orders or (200 if q else 2000)
    args.duplicates = args.duplicates if args.duplicates is not None else (1 if q else 2)
    args.single_orders = args.single_orders or (30 if q else 300)
    args.lost_orders = args.lost_orders or (10 if q else 200)
    args.lost_spread = args.lost_spread if args.lost_spread is not None else (3 if q else 90)
    args.crash_orders = args.crash_orders or (50 if q else 1000)
    args.reconcile_lines = args.reconcile_lines or (10_000 if q else 100_000)
    args.binary = os.path.abspath(args.binary)
    if args.out is None and not q:
        args.out = os.path.join(ROOT, "bench/results/payments.json")
    args.merchant_key = openssl_key_pair()

    runs, loads = [], []
    marker = None if q else "/tmp/bench-running"
    try:
        if marker:
            open(marker, "w").close()
        for number in range(1, args.runs + 1):
            if args.runs > 1:
                print(f"== run {number} of {args.runs}", file=sys.stderr)
            loads.append(os.getloadavg()[0])
            runs.append(one_run(args))
    finally:
        if marker and os.path.exists(marker):
            os.remove(marker)
    results = fold(harmonize(runs))
    results["meta"] = meta(args.runs, concurrency=args.concurrency, duplicates=args.duplicates,
                           forged_concurrency=args.forged_concurrency, lost_spread=args.lost_spread,
                           versions=versions(), targets=TARGETS, load=loads)
    if args.out:
        write_results(args.out, results)
    else:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    if not (q or args.no_docs):
        write_docs(results)


if __name__ == "__main__":
    sys.exit(main())
