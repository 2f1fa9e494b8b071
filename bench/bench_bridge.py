"""Load test of the messenger bridge on loopback (127.0.0.1 only).

    python bench/bench_bridge.py                      # 1,000 requests, concurrency 32, real tiny model
    python bench/bench_bridge.py --fake               # fake responder (50 ms per reply) instead of the model
    python bench/bench_bridge.py --transport kakao-skill --requests 500
    python bench/bench_bridge.py --pace               # clients wait (part of) Retry-After after a 503
    python bench/bench_bridge.py --slowloris 200      # ... while 200 connections dribble one header byte every 2 s

The bridge runs in this process with the settings of configs/gen.yaml ``bridge:`` (port 0, a temporary memory
folder; ``--send`` mode so replies are stored as the bot's turns). The model is a real ``chatbot.infer.responder.Responder``
over a tiny random-weight Transformer (2 layers, 64 dims, block 64, the repo's BPE tokenizer trained on a small
invented corpus) — random weights mean most replies run to ``max_new_tokens``, the slow case. Requests go in two
equal rounds from ``--concurrency`` client threads in a separate client process (so the clients do not share the
server's interpreter lock), each with a keep-alive connection, spread over ``--rooms`` rooms; a 503 is not retried.

Printed: answered (reply / no reply / 503) and failed counts, p50/p99 latency of answered requests (and of 503s),
throughput, RSS and thread count after loading, after round 1 and after round 2 — growth between the rounds is the
leak indicator (round 1 pays allocator and cache warm-up), room memory writes, and the verdict lines:
every request answered, no crash, no leaked memory growth. Bounded: ``--max-seconds`` stops sending.

``--slowloris N``: during the load, N more connections from another loopback address (127.0.0.2 where the system
allows it) each send one byte of a request every 2 s and never finish it. Printed: how many the server took and
refused, how long the taken ones stayed open (until the server closed them), and the real clients' figures as
above — with a total request deadline and a per-address connection cap the real clients are not starved.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace

import fixtures  # bench/fixtures.py
from fixtures import REPO, rss_mb

sys.path.insert(0, str(REPO))

CORPUS = [
    "안녕 뭐해?", "오늘 저녁 뭐 먹을까?", "주말에 뭐 할 거야?", "나는 집에서 쉬는 중이야", "라면 먹자 ㅋㅋㅋ",
    "영화 보러 갈래?", "좋아 몇 시에 만날까", "내일 비 온대", "우산 챙겨 가", "커피 한 잔 할래?", "응 좋아 좋아",
    "배고프다 진짜", "치킨 시킬까", "ok see you soon", "hello there, how are you",
]  # invented


@dataclass
class FakeReply:
    text: str
    confidence: float
    n_tokens: int
    latency_s: float
    first_token_s: float


class FakeResponder:
    """Stand-in with realistic latency (used with --fake or when chatbot.infer.responder is unavailable)."""

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def reply(self, history, *, seed=None, on_text=None):
        time.sleep(self.latency_s)
        return FakeReply("응 " + history[-1][1][:20], -1.0, 8, self.latency_s, self.latency_s / 4)


def tiny_responder(gen_cfg):
    """A real Responder over a tiny random-weight model (no files: the Bundle is built in memory)."""
    return fixtures.tiny_responder(gen_cfg, CORPUS * 4, vocab_size=420, block_size=64, n_layer=2, n_head=2,
                                   n_kv_head=1, n_embd=64, source="bench-in-memory",
                                   persona={"target": "room", "self": "S2", "speakers": {"S1": 40, "S2": 30}})


def run_round(port: int, n: int, concurrency: int, rooms: int, transport: str, deadline: float,
              seq0: int, pace: bool = False) -> dict:
    path = "/skill" if transport == "kakao-skill" else "/relay"
    counter = iter(range(seq0, seq0 + n))
    lock = threading.Lock()
    stats = {"reply": 0, "no_reply": 0, "busy": 0, "conn_refused": 0, "other": 0, "failed": 0, "lat_ok": [],
             "lat_busy": [], "sent": 0}

    def body(i: int) -> bytes:
        room = f"room-{i % rooms}"
        text = random.Random(i).choice(CORPUS) + f" #{i}"
        if transport == "kakao-skill":
            obj = {"userRequest": {"utterance": text, "user": {"id": room, "type": "botUserKey"}},
                   "bot": {"id": "b"}, "action": {"id": "a"}}
        else:
            obj = {"room": room, "sender": "손님", "msg": text, "id": f"bench-{i}"}
        return json.dumps(obj, ensure_ascii=False).encode()

    def client() -> None:
        conn = None
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            data = body(i)
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                payload = r.read()
                dt = time.perf_counter() - t0
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                dt = None
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                stats["sent"] += 1
                if dt is None:
                    stats["failed"] += 1
                elif r.status == 503:
                    stats["busy"] += 1
                    if b"too many connections" in payload:
                        stats["conn_refused"] += 1
                    stats["lat_busy"].append(dt)
                elif r.status in (200, 204):
                    empty = r.status == 204 or (transport == "kakao-skill"
                                                and not json.loads(payload)["template"]["outputs"])
                    stats["no_reply" if empty else "reply"] += 1
                    stats["lat_ok"].append(dt)
                else:
                    stats["other"] += 1
            if pace and dt is not None and r.status == 503:  # a polite client: wait as told (capped at 1 s)
                time.sleep(min(1.0, float(r.getheader("Retry-After", "1"))) * random.random())
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["wall_s"] = time.perf_counter() - t0
    return stats  # JSON-serialisable: crosses the process boundary


def remote_round(port: int, n: int, concurrency: int, rooms: int, transport: str, max_s: float, seq0: int,
                 pace: bool) -> dict:
    """run_round in a child process (this file with --client); returns its stats."""
    cmd = [sys.executable, __file__, "--client",
           json.dumps([port, n, concurrency, rooms, transport, max_s, seq0, pace])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=max_s + 120).stdout
    return json.loads(out.strip().splitlines()[-1])


class SlowLoris:
    """``n`` connections that dribble a request one byte per ``every`` seconds until the server ends them."""

    REQUEST = b"POST /relay HTTP/1.1\r\nHost: bench\r\n" + b"X-Slow: " + b"s" * 4000

    def __init__(self, port: int, n: int, every: float = 2.0):
        import socket

        self.source = "127.0.0.2"
        try:
            with socket.socket() as probe:
                probe.bind((self.source, 0))
        except OSError:
            self.source = "127.0.0.1"  # then the per-address cap also limits the real clients
        self.port, self.n, self.every = port, n, every
        self.stop = threading.Event()
        self.opened = self.connect_failed = 0
        self.ended: dict[str, list[float]] = {}  # how the server ended a connection -> seconds it was open
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import socket

        live = []  # [socket, opened_at, bytes sent, last send]
        for _ in range(self.n):
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=2, source_address=(self.source, 0))
                s.setblocking(False)
                live.append([s, time.monotonic(), 0, 0.0])
                self.opened += 1
            except OSError:
                self.connect_failed += 1
        while live and not self.stop.is_set():
            now = time.monotonic()
            for item in list(live):
                s, t0, sent, last = item
                try:
                    head = s.recv(64)
                    how = head.split(b" ", 2)[1].decode("ascii", "replace") if head.startswith(b"HTTP/") else "closed"
                except BlockingIOError:  # nothing from the server: keep dribbling
                    if now - last >= self.every:
                        try:
                            s.send(self.REQUEST[sent % len(self.REQUEST):][:1])
                            item[2], item[3] = sent + 1, now
                            continue
                        except OSError:
                            how = "closed"
                    else:
                        continue
                except OSError:
                    how = "closed"
                self.ended.setdefault(how, []).append(now - t0)
                s.close()
                live.remove(item)
            self.stop.wait(0.1)
        for item in live:
            item[0].close()

    def report(self) -> str:
        parts = [f"{how}: {len(v)} after p50 {pct(v, 0.5) / 1000:.1f} s / max {pct(v, 1.0) / 1000:.1f} s"
                 for how, v in sorted(self.ended.items())]
        still = self.opened - sum(len(v) for v in self.ended.values())
        return (f"slow-loris: {self.n} connections from {self.source} dribbling 1 byte / {self.every:.0f} s; "
                f"connected {self.opened}, connect failed {self.connect_failed}; ended by the server with "
                f"{'; '.join(parts) or 'nothing'}; still open at the end: {still}")

    def __enter__(self) -> "SlowLoris":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rooms", type=int, default=64)
    ap.add_argument("--transport", choices=["relay", "kakao-skill"], default="relay")
    ap.add_argument("--fake", action="store_true", help="fake responder with --fake-latency instead of the model")
    ap.add_argument("--fake-latency", type=float, default=0.05)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--pace", action="store_true", help="clients wait a random part of Retry-After after a 503")
    ap.add_argument("--slowloris", type=int, default=0, metavar="N", help="N dribbling connections during the load")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run one round of clients, print JSON stats
    args = ap.parse_args()
    if args.client:
        port, n, conc, rooms, transport, max_s, seq0, pace = json.loads(args.client)
        print(json.dumps(run_round(port, n, conc, rooms, transport, time.monotonic() + max_s, seq0, pace)))
        return 0

    from chatbot.bridge import make_bridge
    from chatbot.bridge.server import start_server, stop_server
    from chatbot.config import load_config

    cfg = load_config(REPO / "configs")
    bc = replace(cfg.gen.bridge, transport=args.transport, host="127.0.0.1", port=0)
    what = "fake responder"
    responder = None
    if not args.fake:
        try:
            responder = tiny_responder(cfg.gen)
            what = "real tiny model (chatbot.infer.responder.Responder, 2 layers x 64 dims, random weights)"
        except ImportError as exc:
            print(f"chatbot.infer.responder unavailable ({exc}); using the fake responder")
    if responder is None:
        responder = FakeResponder(args.fake_latency)
        what = f"fake responder ({args.fake_latency * 1000:.0f} ms per reply)"
        import torch  # noqa: F401  (same baseline RSS as the model run)

    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        bridge = make_bridge(bc, tmp, send=True, responder=responder)
        server, _ = start_server(bridge, "127.0.0.1", 0)
        # warm-up: a few sequential replies (first-call allocations, generation-time estimate)
        warm = run_round(server.port, 8, 1, 4, args.transport, time.monotonic() + 60, seq0=10_000_000)
        loris = SlowLoris(server.port, args.slowloris).__enter__() if args.slowloris else None
        if loris is not None:
            time.sleep(1.0)  # the dribblers are connected before the real clients start
        rss0, threads0 = rss_mb(), threading.active_count()
        half = args.requests // 2
        r1 = remote_round(server.port, half, args.concurrency, args.rooms, args.transport, args.max_seconds / 2, 0,
                          args.pace)
        rss1, threads1 = rss_mb(), threading.active_count()
        r2 = remote_round(server.port, args.requests - half, args.concurrency, args.rooms, args.transport,
                          args.max_seconds / 2, half, args.pace)
        rss2, threads2 = rss_mb(), threading.active_count()
        if loris is not None:
            loris.__exit__(None, None, None)
        health = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        health.request("GET", "/healthz")
        alive = health.getresponse().status == 200
        health.close()
        stop_server(server, bridge, timeout=60)
        saves = bridge.store.saves

    total = {k: r1[k] + r2[k] for k in ("reply", "no_reply", "busy", "conn_refused", "other", "failed", "sent")}
    lat_ok = r1["lat_ok"] + r2["lat_ok"]
    lat_busy = r1["lat_busy"] + r2["lat_busy"]
    wall = r1["wall_s"] + r2["wall_s"]
    answered = total["reply"] + total["no_reply"] + total["busy"]
    print(f"bridge load test: transport={args.transport} responder={what}"
          f"{' clients honour Retry-After' if args.pace else ' clients never wait'}")
    print(f"settings: workers={bc.workers} queue_limit={bc.queue_limit} request_timeout_s={bc.request_timeout_s} "
          f"concurrency={args.concurrency} rooms={args.rooms} cpu_count={os.cpu_count()}")
    print(f"warm-up: {warm['reply'] + warm['no_reply']} replies, mean generation {bridge.ewma_gen_s * 1000:.0f} ms (ewma)")
    print(f"requests sent {total['sent']} / {args.requests}: reply {total['reply']}, no reply {total['no_reply']}, "
          f"503 {total['busy']} (too many connections: {total['conn_refused']}), other status {total['other']}, "
          f"failed (no answer) {total['failed']}")
    print(f"answered {answered}/{total['sent']} ({answered / max(1, total['sent']):.1%}); "
          f"503 share {total['busy'] / max(1, total['sent']):.1%}")
    print(f"latency of answered requests (200/204): p50 {pct(lat_ok, 0.5):.0f} ms, p99 {pct(lat_ok, 0.99):.0f} ms, "
          f"max {pct(lat_ok, 1.0):.0f} ms (n={len(lat_ok)})")
    print(f"latency of 503 answers: p50 {pct(lat_busy, 0.5):.1f} ms, p99 {pct(lat_busy, 0.99):.1f} ms (n={len(lat_busy)})")
    print(f"throughput: {total['sent'] / wall:.0f} requests/s, {(total['reply'] + total['no_reply']) / wall:.1f} "
          f"generated replies/s over {wall:.1f} s")
    print(f"RSS MB: after warm-up {rss0:.1f}, after round 1 {rss1:.1f} (+{rss1 - rss0:.1f}), after round 2 "
          f"{rss2:.1f} (+{rss2 - rss1:.1f} vs round 1; ratio {rss2 / rss1:.3f})")
    print(f"threads: {threads0} / {threads1} / {threads2} (after warm-up / round 1 / round 2)")
    print(f"room memory writes (atomic, fsynced): {saves}")
    if loris is not None:
        print(loris.report())
    ok_all = total["failed"] == 0 and total["other"] == 0 and total["sent"] == args.requests
    no_leak = rss2 - rss1 <= max(8.0, 0.05 * rss1) and threads2 <= threads1 + 2
    print(f"every request answered: {'yes' if ok_all else 'NO'}; server alive after the load: "
          f"{'yes' if alive else 'NO'}; no leaked memory growth: {'yes' if no_leak else 'NO'}")
    return 0 if ok_all and alive and no_leak else 1


if __name__ == "__main__":
    sys.exit(main())
