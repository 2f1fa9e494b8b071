"""``model.size: auto``: pick the model and the schedule from the amount of training text and the device.

Only values left at 0 in train.yaml are picked (an explicit n_layer, max_steps, learning_rate ... always wins;
with ``model.base`` set the architecture is the pretrained model's, and an auto learning rate is 1e-4):

* model: n_layer / n_head / n_kv_head / n_embd from the preset for the corpus size and device;
* optimization: learning_rate (the preset's), max_steps (about an hour on a 2-core CPU, 5000 on a GPU, never
  more than 10 passes over the training tokens), lr_decay_steps (= max_steps), warmup_steps (5 % of the run, at most 200);
* logging: eval_interval (a tenth of the run) and save_interval (= eval_interval).

The presets and thresholds come from the measurements in docs/MODEL_SIZE.md (bench/bench_model_size.py). The
choice is written to ``<run>/auto_size.json`` on the first start and reused when the run resumes, so new exports
arriving later never change the shape of a model that is half trained.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config import TrainConfig
from ..fsio import atomic_write_json, private_mkdir

# name: (n_layer, n_head, n_kv_head, n_embd, learning rate)
PRESETS = {
    "tiny": (2, 4, 2, 128, 3e-3),
    "small": (4, 4, 2, 256, 1.5e-3),
    "base": (6, 6, 2, 384, 6e-4),
}
CPU_SMALL_FROM = 3_000_000     # training tokens from which a CPU run uses "small" (below: "tiny"; extrapolated)
GPU_BASE_FROM = 1_000_000      # training tokens from which a GPU run uses "base" (below: "small")
CPU_TOKENS_PER_S = {"tiny": 6000, "small": 1200, "base": 400}   # measured on the 2-core box, see the docs
GPU_STEPS = 5000
PRETRAINED_LR = 1e-4           # learning_rate 0 with model.base (fine-tuning): a common LoRA rate, not measured here
HOUR_S = 3600
MAX_PASSES = 10                # never more than this many passes over the training tokens (the demo room
                               # overfits past ~10 at the tiny rate)
MIN_STEPS = 20


def train_tokens(processed_dir: Path) -> int | None:
    """Training tokens of the processed data (train.bin's size in ids, nothing read), or None without data."""
    import numpy as np

    from ..data.dataset import read_stats
    from ..errors import ChatbotError

    try:
        stats = read_stats(processed_dir)
        return (Path(processed_dir) / "train.bin").stat().st_size // np.dtype(stats["dtype"]).itemsize
    except (OSError, ValueError, TypeError, ChatbotError):
        return None


def choose(train_tokens: int, device_type: str) -> str:
    if device_type == "cuda":
        return "base" if train_tokens >= GPU_BASE_FROM else "small"
    return "small" if train_tokens >= CPU_SMALL_FROM else "tiny"


def plan(train_tokens: int, device_type: str, tokens_per_step: int) -> dict:
    """The automatic choice for a corpus of ``train_tokens`` on ``device_type`` (cuda | mps | cpu)."""
    preset = choose(train_tokens, device_type)
    n_layer, n_head, n_kv_head, n_embd, lr = PRESETS[preset]
    passes = MAX_PASSES * max(train_tokens, 1) // max(tokens_per_step, 1)
    if device_type == "cuda":
        steps = min(GPU_STEPS, passes)
    else:  # about an hour of CPU time
        steps = min(HOUR_S * CPU_TOKENS_PER_S[preset] // max(tokens_per_step, 1), passes)
    steps = max(MIN_STEPS, int(steps))
    return {"preset": preset, "n_layer": n_layer, "n_head": n_head, "n_kv_head": n_kv_head, "n_embd": n_embd,
            "learning_rate": lr, "max_steps": steps, "train_tokens": int(train_tokens), "device": device_type}


def resolve(train_cfg: TrainConfig, train_tokens: int, device_type: str, run_dir: Path | None = None,
            write: bool = True) -> tuple[TrainConfig, dict | None]:
    """(TrainConfig with every auto value filled in, the plan or None when nothing was automatic).

    ``run_dir``: where auto_size.json is read (a resumed run keeps its first choice) and, with ``write``, saved.
    """
    model, optimization, logging = train_cfg.model, train_cfg.optimization, train_cfg.logging
    if model.size == "custom" and not getattr(model, "base", ""):
        missing = [k for k in ("n_layer", "n_head", "n_embd") if getattr(model, k) == 0]
        if missing:
            raise_config(f"train.yaml: model.size is custom but model.{missing[0]} is 0; set it, or use size: auto")
    pretrained = bool(getattr(model, "base", ""))  # fine-tuning: the base's architecture, not ours
    auto_model = model.size == "auto" and not pretrained and 0 in (model.n_layer, model.n_head, model.n_embd)
    needs = auto_model or optimization.max_steps == 0 or optimization.learning_rate == 0
    if not needs and optimization.lr_decay_steps and optimization.warmup_steps and logging.eval_interval \
            and logging.save_interval:
        return train_cfg, None
    tokens_per_step = optimization.batch_size * optimization.grad_accum_steps * model.block_size
    saved = run_dir / "auto_size.json" if run_dir is not None else None
    chosen = _read(saved) or plan(train_tokens, device_type, tokens_per_step)
    if auto_model:
        model = dataclasses.replace(
            model, n_layer=model.n_layer or chosen["n_layer"], n_head=model.n_head or chosen["n_head"],
            n_embd=model.n_embd or chosen["n_embd"],
            n_kv_head=model.n_kv_head or (chosen["n_kv_head"] if not model.n_head else 0))
    steps = optimization.max_steps or chosen["max_steps"]
    lr = optimization.learning_rate or (PRETRAINED_LR if pretrained else chosen["learning_rate"])
    min_lr = optimization.min_lr if optimization.learning_rate else (optimization.min_lr or lr / 10)
    optimization = dataclasses.replace(optimization, max_steps=steps, learning_rate=lr, min_lr=min_lr,
                                       lr_decay_steps=optimization.lr_decay_steps or steps,
                                       warmup_steps=optimization.warmup_steps or max(1, min(200, steps // 20)))
    every = logging.eval_interval or max(1, steps // 10)
    logging = dataclasses.replace(logging, eval_interval=every, save_interval=logging.save_interval or every)
    if saved is not None and write and needs and not saved.is_file():
        private_mkdir(saved.parent)  # the run folder: 0700 whatever the umask
        atomic_write_json(saved, chosen)
    return (dataclasses.replace(train_cfg, model=model, optimization=optimization, logging=logging),
            chosen if needs else None)


def describe(chosen: dict, train_cfg: TrainConfig) -> str:
    model, optimization = train_cfg.model, train_cfg.optimization
    return (f"model.size auto: {chosen['train_tokens']:,} training tokens on {chosen['device']} → {model.n_layer} "
            f"layers × {model.n_embd} wide ({chosen['preset']}), {optimization.max_steps} steps, learning rate "
            f"{optimization.learning_rate:g} (explicit values in train.yaml win; see docs/MODEL_SIZE.md)")


def _read(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = ("n_layer", "n_head", "n_kv_head", "n_embd", "learning_rate", "max_steps")
    return data if isinstance(data, dict) and all(isinstance(data.get(k), (int, float)) for k in keys) else None


def raise_config(msg: str) -> None:
    from ..errors import ChatbotError

    raise ChatbotError(msg)
