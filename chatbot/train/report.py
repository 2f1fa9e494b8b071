"""What the trainer shows: progress lines, ``metrics.jsonl``, ``loss.svg``, MFU, and sample replies at eval time.

The loss curve is a small hand-written SVG (no plotting dependency). ``metrics.jsonl`` is an append-only log of
one JSON object per line; on resume it is cut back to the resumed step (the steps after it are trained again),
which also drops a line half-written by a killed process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from ..config import GenConfig, PiiConfig
from ..fsio import atomic_write_text, private_open


# ---------------------------------------------------------------------------------------------- metrics.jsonl
def load_metrics(path: Path, upto_step: int) -> list[dict]:
    """Valid records with ``step <= upto_step`` (the file is only read; :func:`repair_metrics` mends it)."""
    return _read_metrics(path, upto_step)[0]


def repair_metrics(path: Path, upto_step: int) -> bool:
    """Cut ``metrics.jsonl`` back to the valid records with ``step <= upto_step``, atomically; True if it changed.

    A resumed run trains the steps after its checkpoint again, so their old records would appear twice; a killed
    process may have left a half-written last line, which the next appended record would otherwise be glued to.
    The trainer calls this once, before it appends (rank 0, holding the run lock)."""
    records, clean = _read_metrics(path, upto_step)
    if clean:
        return False
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
    return True


def _read_metrics(path: Path, upto_step: int) -> tuple[list[dict], bool]:
    """(records with ``step <= upto_step``, whether the file is exactly those lines, each ending in a newline)."""
    if not path.is_file():
        return [], True
    text = path.read_text(encoding="utf-8", errors="replace")
    records, clean = [], not text or text.endswith("\n")
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            clean = False
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= upto_step:
            records.append(rec)
        else:
            clean = False
    return records, clean


def append_metrics(path: Path, record: dict) -> None:
    with private_open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()


# --------------------------------------------------------------------------------------------------- loss.svg
def loss_svg(records: list[dict], title: str = "loss") -> str:
    """An SVG line chart of train loss (blue) and validation loss (orange) against the step."""
    W, H, L, R, T, B = 720, 360, 60, 20, 30, 40
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and _finite(r.get("loss"))]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval" and _finite(r.get("val_loss"))]
    pts = train + val
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="13">{_esc(title)}</text>']
    if pts:
        x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
        ys = sorted(p[1] for p in pts)
        y0, y1 = ys[0], ys[min(len(ys) - 1, int(0.98 * len(ys)))]  # ignore the first spike when scaling
        x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)

        def sx(x):
            return L + (x - x0) / (x1 - x0) * (W - L - R)

        def sy(y):
            return T + (1 - (min(y, y1) - y0) / (y1 - y0)) * (H - T - B)

        parts.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#999"/>')
        for i in range(5):
            yv = y0 + (y1 - y0) * i / 4
            parts.append(f'<text x="{L - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
            xv = x0 + (x1 - x0) * i / 4
            parts.append(f'<text x="{sx(xv):.1f}" y="{H - B + 16}" text-anchor="middle">{int(round(xv))}</text>')
        parts.append(f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">step</text>')
        for series, color, label, ly in ((train, "#1f77b4", "train", 40), (val, "#ff7f0e", "val", 56)):
            if not series:
                continue
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
            parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
            if len(series) < 40:
                parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in series]
            parts.append(f'<text x="{W - R - 50}" y="{ly}" fill="{color}">{label} {series[-1][1]:.4f}</text>')
    else:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data yet</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_loss_svg(path: Path, records: list[dict], title: str) -> None:
    atomic_write_text(path, loss_svg(records, title))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------------- progress / MFU
_GPU_PEAK_BF16 = {  # dense bf16/fp16 tensor-core peak FLOP/s by marketing name (for the MFU estimate only)
    "H200": 989e12, "H100": 989e12, "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12,
    "A10": 125e12, "A6000": 155e12, "4090": 165e12, "4080": 97e12, "4070": 58e12, "3090": 71e12, "3080": 59e12,
    "V100": 125e12, "T4": 65e12,
}


def measure_matmul_peak(device: torch.device, dtype=torch.float32, n: int = 1024, seconds: float = 0.3) -> float:
    """Measured matmul FLOP/s on ``device`` (best of several timed batches of n×n products)."""
    g = torch.Generator().manual_seed(0)  # never touch the global RNG (exact resume)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    _sync(device)
    a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s for MFU: a table for known GPUs (bf16/fp16), measured fp32 matmul peak on CPU, else None."""
    if device.type == "cuda":
        if dtype not in (torch.bfloat16, torch.float16):
            return None
        name = torch.cuda.get_device_name(device)
        return next((v for k, v in _GPU_PEAK_BF16.items() if k in name), None)
    if device.type == "cpu":
        key = torch.get_num_threads()
        if key not in _CPU_PEAK:  # measured once per process and thread count
            _CPU_PEAK[key] = measure_matmul_peak(device, torch.float32, n=1024, seconds=0.3)
        return _CPU_PEAK[key]
    return None


_CPU_PEAK: dict[int, float] = {}


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(step: int, max_steps: int, loss: float, val_loss: float | None, lr: float, tok_s: float,
                  mfu: float | None, eta_eval: float) -> str:
    val = f"{val_loss:.4f}" if val_loss is not None else "-"
    mfu_s = f"{mfu * 100:.1f}%" if mfu is not None else "-"
    return (f"step {step}/{max_steps} | loss {loss:.4f} | val {val} | lr {lr:.2e} | {tok_s:,.0f} tok/s | "
            f"MFU {mfu_s} | next eval in {fmt_duration(eta_eval)}")


# -------------------------------------------------------------------------------------------- sample replies
def sample_replies(model, tok, persona: dict | None, prompts: list[str], gen: GenConfig, pii: PiiConfig,
                   max_new_tokens: int = 32) -> list[tuple[str, str]]:
    """The model's greedy reply to each prompt as one message of the user, through the Responder that ``chat``
    uses: the same speakers (chatbot/infer/persona.py), clean → mask → encode, prompt layout, cached decode, stop
    rules and clean-up. ``model`` is our Transformer or, fine-tuned from a pretrained base, its causal LM (with
    that base's tokenizer as ``tok``)."""
    from ..infer.loading import Bundle
    from ..infer.responder import Responder

    if not prompts:
        return []
    greedy = dataclasses.replace(gen.sampling, temperature=0.0, max_new_tokens=max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        responder = Responder(Bundle(model, tok, persona or {}, Path("training"), 0), gen, pii)  # current weights
        return [(prompt, responder.reply([("user", prompt)], sampling=greedy, policy="always").text)
                for prompt in prompts]
    finally:
        model.train(was_training)
