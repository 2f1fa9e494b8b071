"""Speed of ``eval`` itself: seconds for N reply items (default 200) on the demo model. Target: < 60 s on the
2-core CPU, so that eval stays interactive.

    python -m chatbot.ops demo --workspace runs/demo      # once: the demo model and its processed data
    python bench/bench_eval.py [--workspace runs/demo] [--items 200] [--threads 2]

Runs ``chatbot.eval.evaluate`` in-process (the password gate is the verb's, not measured) and prints the total
and its parts: model loss over the whole validation split, reply generation (mean and p95 per reply), the
retrieval baseline, and the rest (loading, n-gram baselines, metrics). The box is shared: run it twice and keep
the lower figure if the first is disturbed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatbot.config import load_config  # noqa: E402
from chatbot.eval import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=REPO / "runs" / "demo")
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="torch threads before eval (which picks 1 for small models)")
    args = ap.parse_args()
    if not (args.workspace / "configs").is_dir():
        sys.exit(f"no demo workspace at {args.workspace}; run `python -m chatbot.ops demo --workspace {args.workspace}`")
    torch.set_num_threads(args.threads)
    cfg = load_config(args.workspace / "configs")
    t0 = time.perf_counter()
    r = evaluate(cfg, "", args.items)
    total = time.perf_counter() - t0
    rep = r["replies"]
    n = rep.get("items", 0)
    gen_s = rep["model"]["latency_mean_s"] * n if n else 0.0
    loss_s = r["loss"]["model"]["seconds"]
    retr_s = rep["retrieval"]["seconds"] if n else 0.0
    print(f"eval of {r['model']['source']} (step {r['model']['step']}, {r['model']['parameters']:,} parameters), "
          f"{args.threads} threads, {n} reply items, {r['data']['val_tokens']:,} validation tokens")
    print(f"  total            {total:7.2f} s   (target < 60 s: {'OK' if total < 60 else 'TOO SLOW'})")
    print(f"  model loss       {loss_s:7.2f} s")
    if n:
        print(f"  replies          {gen_s:7.2f} s   (mean {rep['model']['latency_mean_s']:.3f} s, "
              f"p95 {rep['model']['latency_p95_s']:.3f} s per reply)")
        print(f"  retrieval bot    {retr_s:7.2f} s   ({rep['retrieval']['train_items']} training replies indexed)")
    print(f"  rest             {total - loss_s - gen_s - retr_s:7.2f} s   (loading, n-gram baselines, metrics)")
    if 0 < n < args.items:  # the demo room's validation split holds fewer turns of the bot than asked for
        est = total + (args.items - n) * rep["model"]["latency_mean_s"]
        print(f"  only {n} items exist; {args.items} items ≈ {est:.1f} s (the measured mean reply time × "
              f"{args.items - n} more)  ({'OK' if est < 60 else 'TOO SLOW'})")


if __name__ == "__main__":
    main()
