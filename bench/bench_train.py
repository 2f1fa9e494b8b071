"""Training throughput: the trainer's step vs a plain PyTorch reference loop of the same model, in one run.

    python bench/bench_train.py                 # default (configs/train.yaml) and tiny configs
    python bench/bench_train.py --only default --steps 4 --repeats 2

For each config it synthesises a processed folder (random token ids with a turn structure, ~80 % target tokens,
window starts at turn boundaries), then times

* trainer:   ``chatbot.train.loop.train`` itself (its own per-step tokens/s from metrics.jsonl, evals excluded);
* reference: a straightforward nanoGPT-style loop on the same model class: random windows from the memmap (no
  boundary-aligned sampler), full logits + ``masked_cross_entropy``, plain non-fused ``torch.optim.AdamW``,
  gradient accumulation and clipping, same batch shape, threads and dtype.

It prints tokens/s, the ratio, and MFU against the machine's *measured* fp32 matmul peak on CPU (or the bf16
table peak on CUDA). Two MFU figures are given for the trainer: "model" uses the usual 6N+attention FLOPs per
token; "executed" subtracts the vocabulary projections the trainer skips for weight-0 positions, i.e. the work
really done (the honest hardware-utilisation figure). Steps are alternated (reference, trainer, …) and the best
of ``--repeats`` is kept, because this machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from fixtures import REPO, copy_configs  # bench/fixtures.py

sys.path.insert(0, str(REPO))

from chatbot.config import load_config  # noqa: E402
from chatbot.data.tokenizer import train_tokenizer  # noqa: E402
from chatbot.model import ModelArgs, Transformer  # noqa: E402
from chatbot.device import pick_device, pick_dtype  # noqa: E402
from chatbot.train.loop import cpu_threads  # noqa: E402
from chatbot.train.report import _GPU_PEAK_BF16, measure_matmul_peak  # noqa: E402



def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The plain loop's loss: mean cross-entropy over the positions whose weight is 1, from the full logits."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    w = weights.reshape(-1).to(loss.dtype)
    return (loss * w).sum() / w.sum().clamp(min=1.0)


TINY = {"block_size": 64, "n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 64, "multiple_of": 32}
# "default" = the shape configs/train.yaml shipped before model.size: auto (6 × 384), kept for comparable figures
DEFAULT = {"n_layer": 6, "n_head": 6, "n_kv_head": 2, "n_embd": 384}


def synth_processed(out: Path, vocab: int, n_tokens: int, target_frac: float = 0.8, seed: int = 0) -> None:
    """A contract-shaped processed folder with random ids (content is irrelevant to speed)."""
    rng = np.random.default_rng(seed)
    tok = train_tokenizer(["filler text for the benchmark tokenizer"] * 4, 400)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    for split, n in (("train", n_tokens), ("val", max(4096, n_tokens // 20))):
        ids = rng.integers(400, vocab, size=n, dtype=np.int64)
        mask = np.zeros(n, dtype=np.uint8)
        starts, pos, turn = [], 0, 0
        while pos < n:
            length = int(rng.integers(4, 40))
            ids[pos] = 3 + turn % 2  # a speaker token: never a target
            if turn % 10 and rng.random() < target_frac:
                mask[pos + 1 : pos + length] = 1  # the turn's text (+ end token) is a target
            if turn % 3 == 0:
                starts.append(pos)
            pos += length
            turn += 1
        ids.astype(np.uint16).tofile(out / f"{split}.bin")
        mask.tofile(out / f"{split}_loss_mask.bin")
        np.asarray(starts, dtype=np.uint64).tofile(out / f"{split}_starts.bin")
    stats = {"dtype": "uint16", "vocab_size": vocab, "persona": {"target": "room", "self": None, "speakers": {}},
             "tokenizer_hash": hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()}
    (out / "stats.json").write_text(json.dumps(stats), encoding="utf-8")


def make_project(root: Path, model: dict | None, steps: int, compile_: bool) -> tuple:
    copy_configs(root)
    path = root / "configs" / "train.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["model"].update(model or DEFAULT)
    data["optimization"].update(learning_rate=6e-4, min_lr=6e-5, warmup_steps=10, lr_decay_steps=5000)
    data["runtime"]["compile"] = compile_
    data["optimization"]["max_steps"] = steps
    data["logging"].update({"log_interval": 1, "eval_interval": 10**6, "save_interval": 10**6, "eval_iters": 1,
                            "sample_prompts": []})
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    cfg = load_config(root / "configs")
    vocab = 8000
    synth_processed(cfg.processed_dir, vocab, n_tokens=400_000)
    return cfg, vocab


class TrainerRuns:
    """The real ``chatbot.train.loop.train``, advanced a few steps per call (it resumes from its own latest.pt)."""

    def __init__(self, cfg):
        self.cfg, self.done = cfg, 0
        shutil.rmtree(cfg.run_dir, ignore_errors=True)

    def run(self, steps: int) -> list[float]:
        """tokens/s of ``steps`` new steps, from the trainer's own metrics.jsonl (log_interval 1, evals excluded).

        One extra step is run first and not counted: the first step after a resume touches freshly allocated
        memory, which the reference loop (one long-lived process state) never pays again."""
        from chatbot.train.loop import train

        self.cfg.train.optimization.max_steps = self.done + steps + 1
        with contextlib.redirect_stdout(open("/dev/null", "w")):
            code = train(self.cfg)
        assert code == 0, code
        recs = [json.loads(line) for line in (self.cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
        out = [r["tokens_per_s"] for r in recs if r["kind"] == "train" and r["step"] > self.done + 1]
        self.done += steps + 1
        return out


class ReferenceLoop:
    """A plain loop: random windows, full logits, masked CE, non-fused AdamW (nanoGPT style)."""

    def __init__(self, cfg, vocab: int):
        tc = cfg.train
        self.o = tc.optimization
        self.device = pick_device(tc.runtime.device)
        dtype = pick_dtype(tc.runtime.dtype, self.device)
        self.args = ModelArgs.from_dict({**vars(tc.model), "vocab_size": vocab})
        torch.manual_seed(0)
        self.model = Transformer(self.args).to(self.device)
        o = self.o
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=o.learning_rate, betas=(o.beta1, o.beta2),
                                     weight_decay=o.weight_decay, foreach=False, fused=False)
        self.data = np.memmap(cfg.processed_dir / "train.bin", dtype=np.uint16, mode="r")
        self.mask = np.memmap(cfg.processed_dir / "train_loss_mask.bin", dtype=np.uint8, mode="r")
        self.ctx = (torch.autocast(self.device.type, dtype=dtype) if dtype != torch.float32
                    else contextlib.nullcontext())

    def run(self, steps: int) -> list[float]:
        o, T, B, dev = self.o, self.args.block_size, self.o.batch_size, self.device
        data, mask = self.data, self.mask
        out = []
        for _ in range(steps):
            t0 = time.perf_counter()
            for _ in range(o.grad_accum_steps):
                ix = torch.randint(len(data) - T - 1, (B,))
                x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix]).to(dev)
                y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix]).to(dev)
                w = torch.stack([torch.from_numpy(mask[i + 1 : i + 1 + T].astype(np.float32)) for i in ix]).to(dev)
                with self.ctx:
                    loss = masked_cross_entropy(self.model(x), y, w) / o.grad_accum_steps
                loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            out.append(B * o.grad_accum_steps * T / (time.perf_counter() - t0))
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["default", "tiny"], default=None)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per measurement (after 1 warm-up step)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="runtime.compile for the trainer")
    a = ap.parse_args()
    device = pick_device("auto")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in _GPU_PEAK_BF16.items() if k in name), None)
        print(f"device {name}; bf16 peak (table) {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s")
    else:
        peak = max(measure_matmul_peak(device, torch.float32, n=n, seconds=1.0) for n in (1024, 2048, 1024))
        print(f"device cpu, {torch.get_num_threads()} threads; measured fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    configs = {"default": None, "tiny": TINY}
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        for name, model in configs.items():
            if a.only and name != a.only:
                continue
            cfg, vocab = make_project(tmp / name, model, 1, a.compile)
            threads = torch.get_num_threads()
            if device.type == "cpu":  # the reference gets the trainer's thread choice too
                torch.set_num_threads(cpu_threads(cfg.train, type("D", (), {"enabled": False, "world_size": 1})()))
            ref_loop, trainer = ReferenceLoop(cfg, vocab), TrainerRuns(cfg)
            ref_loop.run(1)  # warm-up step, not timed (the trainer discards its first step of every call)
            ref, tr, peaks = [], [], [peak] if peak else []
            for _ in range(a.repeats):  # interleaved: this machine is shared and its speed drifts
                ref += ref_loop.run(a.steps)
                tr += trainer.run(a.steps)
                if device.type == "cpu":
                    torch.set_num_threads(threads)
                    peaks.append(measure_matmul_peak(device, torch.float32, n=1024, seconds=0.5))
                    torch.set_num_threads(cpu_threads(cfg.train, type("D", (), {"enabled": False,
                                                                                 "world_size": 1})()))
            torch.set_num_threads(threads)
            pk = max(peaks) if peaks else None
            args = ref_loop.args
            fpt = ref_loop.model.flops_per_token()
            frac = float(np.fromfile(cfg.processed_dir / "train_loss_mask.bin", dtype=np.uint8).mean())
            executed = fpt - 6 * args.n_embd * vocab * (1 - frac)
            o = cfg.train.optimization
            print(f"\n[{name}] {ref_loop.model.num_params() / 1e6:.2f}M params "
                  f"(+{vocab * args.n_embd / 1e6:.2f}M embedding), batch {o.batch_size}×{o.grad_accum_steps}×"
                  f"{args.block_size} tokens, {fpt / 1e6:.1f} MFLOP/token, target-token fraction {frac:.2f}, "
                  f"{torch.get_num_threads() if device.type != 'cpu' else cpu_threads(cfg.train, type('D', (), {'enabled': False, 'world_size': 1})())} thread(s)")
            for label, xs in (("reference", ref), ("trainer", tr)):
                best, med = max(xs), statistics.median(xs)
                line = f"  {label:9s}  best {best:9,.0f} tok/s  median {med:9,.0f} tok/s"
                if pk:
                    line += f"   MFU(best) model {best * fpt / pk:6.1%}"
                    if label == "trainer":
                        line += f", executed {best * executed / pk:6.1%}"
                print(line)
            print(f"  ratio trainer/reference: best {max(tr) / max(ref):.2f}x, median "
                  f"{statistics.median(tr) / statistics.median(ref):.2f}x   (peak used {pk / 1e9 if pk else 0:.1f} "
                  f"GFLOP/s, best of {len(peaks)})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
