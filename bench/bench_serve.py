"""Throughput and latency of ``serve`` (the OpenAI-compatible API) against calling the Responder in-process.

    python bench/bench_serve.py                        # the demo model (run `python -m chatbot.ops demo` first)
    python bench/bench_serve.py --model random         # a tiny random-weight model, no files needed
    python bench/bench_serve.py --requests 96 --max-tokens 32

The server runs in this process on 127.0.0.1 (port 0, no API key, ``serve:`` settings of the model's gen.yaml with
``queue_limit`` raised so that 32 concurrent clients are all admitted); the HTTP clients run in a separate process
(so they do not share the server's interpreter lock), each thread with its own keep-alive connection. Every
request asks for the same thing as the in-process baseline: the same prompts, ``max_tokens`` and seeds, so both
sides generate the same replies.

Printed per concurrency (1, 8, 32): requests/s and p50/p99 latency through the API, the same for
``Responder.reply`` called from as many threads in-process, and the HTTP overhead ratio (API time / in-process
time); then time-to-first-token of a streamed reply (the first content chunk at the client) against the first
``on_text`` callback of ``Responder.reply`` in-process (the same moment without HTTP).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import fixtures  # bench/fixtures.py
from fixtures import REPO

sys.path.insert(0, str(REPO))

PROMPTS = ["안녕 뭐해?", "오늘 저녁 뭐 먹을까?", "주말에 뭐 할 거야?", "영화 보러 갈래?", "내일 비 온대",
           "커피 한 잔 할래?", "배고프다 진짜", "ok see you soon"]  # invented


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ------------------------------------------------------------------------------------------------ client process
def client_main(url: str, concurrency: int, requests: int, max_tokens: int, stream: bool) -> None:
    """Runs in the child process: ``requests`` POSTs from ``concurrency`` threads; prints one JSON line."""
    import http.client

    local = threading.local()

    def conn() -> http.client.HTTPConnection:
        if getattr(local, "c", None) is None:
            host, port = url.split("//", 1)[1].split(":")
            local.c = http.client.HTTPConnection(host, int(port), timeout=300)
        return local.c

    def one(i: int) -> tuple[float, float, int]:
        body = json.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                           "max_tokens": max_tokens, "seed": i, "stream": stream})
        t0 = time.perf_counter()
        c = conn()
        c.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        first = 0.0
        if stream:
            while True:
                line = r.readline()
                if not line:
                    break
                if not first and line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line:
                    first = time.perf_counter() - t0
        else:
            r.read()
        return time.perf_counter() - t0, first, r.status

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, range(requests)))
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "lat": [r[0] for r in results], "first": [r[1] for r in results],
                      "status": [r[2] for r in results]}))


def run_client(url: str, concurrency: int, requests: int, max_tokens: int, stream: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--client", url, str(concurrency), str(requests),
                          str(max_tokens), "1" if stream else "0"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ server side
def load(model: str):
    """(cfg, responder): the demo workspace's model, or a tiny random one."""
    from chatbot.config import load_config
    from chatbot.infer.responder import Responder

    demo = REPO / "runs" / "demo" / "configs"
    if model == "demo":
        if not demo.is_dir():
            sys.exit("no demo workspace: run `python -m chatbot.ops demo` first, or use --model random")
        from chatbot.infer.loading import load_bundle

        cfg = load_config(demo)
        return cfg, Responder(load_bundle(cfg), cfg.gen, cfg.paths.processed.preprocess.pii)
    cfg = load_config(REPO / "configs")
    return cfg, fixtures.tiny_responder(cfg.gen, PROMPTS * 8, vocab_size=400, block_size=128, n_layer=2, n_head=4,
                                        n_kv_head=2, n_embd=128, source="random.pt",
                                        persona={"target": "room", "self": None, "speakers": {}})


def in_process(responder, concurrency: int, requests: int, sampling) -> dict:
    def one(i: int) -> tuple[float, float]:
        first: list[float] = []
        t0 = time.perf_counter()
        responder.reply([("user", PROMPTS[i % len(PROMPTS)])], seed=i, sampling=sampling,
                        on_text=lambda _: first or first.append(time.perf_counter() - t0))
        return time.perf_counter() - t0, first[0] if first else 0.0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(one, range(requests)))
    return {"wall": time.perf_counter() - t0, "lat": [r[0] for r in results], "first": [r[1] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["demo", "random"], default="demo")
    ap.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--levels", default="1,8,32")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    from chatbot.serve import build_state
    from chatbot.serve.app import create_app
    from chatbot.serve.server import Background

    cfg, responder = load(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    cfg.gen.serve = replace(cfg.gen.serve, queue_limit=max(levels) + 8)
    sampling = replace(cfg.gen.sampling, max_new_tokens=args.max_tokens)
    state = build_state(cfg, responder, None, model="bench", info={})
    print(f"model: {args.model} ({sum(p.numel() for p in responder.model.parameters()) / 1e6:.2f}M parameters), "
          f"max_tokens {args.max_tokens}, {args.requests} requests per level, torch threads "
          f"{torch.get_num_threads()}, serve.workers {cfg.gen.serve.workers}")
    in_process(responder, 1, 4, sampling)  # warm-up
    with Background(create_app(state), cfg.gen.serve) as srv:
        run_client(srv.url, 1, 4, args.max_tokens)  # warm-up
        print(f"{'conc':>4} | {'API req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | {'in-proc req/s':>13} {'p50 ms':>8} "
              f"{'p99 ms':>8} | overhead | non-200")
        for c in levels:
            api = run_client(srv.url, c, args.requests, args.max_tokens)
            base = in_process(responder, c, args.requests, sampling)
            api_rps, base_rps = args.requests / api["wall"], args.requests / base["wall"]
            bad = sum(1 for s in api["status"] if s != 200)
            print(f"{c:>4} | {api_rps:>9.1f} {pct(api['lat'], .5) * 1e3:>8.1f} {pct(api['lat'], .99) * 1e3:>8.1f} | "
                  f"{base_rps:>13.1f} {pct(base['lat'], .5) * 1e3:>8.1f} {pct(base['lat'], .99) * 1e3:>8.1f} | "
                  f"{base_rps / api_rps:>7.2f}x | {bad}")
        n = min(args.requests, 32)
        streamed = run_client(srv.url, 1, n, args.max_tokens, stream=True)
        base = in_process(responder, 1, n, sampling)
        ttft = [f for f in streamed["first"] if f > 0]
        local = [f for f in base["first"] if f > 0]
        print(f"time to first token (first text of a streamed reply, concurrency 1, {len(ttft)} replies with text): "
              f"API p50 {pct(ttft, .5) * 1e3:.1f} ms p99 {pct(ttft, .99) * 1e3:.1f} ms | in-process on_text p50 "
              f"{statistics.median(local) * 1e3:.1f} ms | overhead {pct(ttft, .5) - statistics.median(local):+.3f} s")
    state.engine.close(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        url, conc, reqs, max_tok, stream = sys.argv[2:7]
        client_main(url, int(conc), int(reqs), int(max_tok), stream == "1")
    else:
        main()
