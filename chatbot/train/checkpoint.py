"""Checkpoint files of a run: what goes in them, when they are written, snapshots and pruning (docs/ARCHITECTURE.md).

The file format itself (keys, reading with checks, the atomic write) is :mod:`chatbot.formats.checkpoint`: a kill at
any moment leaves the previous complete file. Everything inside is a plain tensor or Python value (RNG states as
tensors and lists, no numpy objects) so ``torch.load(..., weights_only=True)`` reads it.
Snapshots are hard links to the ``latest.pt`` just written (no second copy on disk), with a copy as fallback.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig, to_dict
from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint
from ..formats.checkpoint import read as read_checkpoint
from ..formats.checkpoint import write as write_checkpoint
from ..fsio import atomic_open, fsync_dir, private_mkdir
from ..model import ModelArgs
from .dist import Dist, gather_objects

SNAPSHOT_RE = re.compile(r"^step_(\d+)\.pt$")
# model fields that may change between runs without touching the weights
MUTABLE_MODEL_FIELDS = ("dropout",)


# ------------------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    """This process's python / numpy / torch / CUDA generator states as plain values."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": [int(version), list(internal), gauss],
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.cpu() for s in states])


def rng_of_all_ranks(ranks: Dist) -> dict:
    """Rank 0's generators, plus every rank's torch / CUDA state under ``per_rank`` (collective: all ranks call)."""
    states = gather_objects(rng_state(), ranks)
    rng = dict(states[0])
    rng["per_rank"] = [{"torch": s["torch"], "cuda": s["cuda"]} for s in states]
    return rng


def restore_rng(rng: dict | None, ranks: Dist, seed: int, step: int) -> None:
    """Put back this rank's generators; a rank the checkpoint did not have gets a fresh deterministic seed."""
    if not isinstance(rng, dict) or "torch" not in rng:
        return
    per_rank = rng.get("per_rank") or []
    state = dict(rng)
    if ranks.rank < len(per_rank):
        state.update(per_rank[ranks.rank])
        set_rng_state(state)
    else:
        set_rng_state(state)
        torch.manual_seed(seed + 1000 * ranks.rank + step)


# ------------------------------------------------------------------------------------------------- contents
@dataclass
class Progress:
    """Where a run stands: the counters a checkpoint records and a resume puts back."""

    step: int = 0  # optimizer steps done (= the schedule position)
    best_val_loss: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    tokens_seen: int = 0

    @classmethod
    def of(cls, ck: Checkpoint) -> "Progress":
        return cls(step=ck.step, best_val_loss=ck.best_val_loss, val_loss=ck.val_loss, train_loss=ck.train_loss,
                   tokens_seen=ck.tokens_seen)


def checkpoint_payload(*, weights: dict, model_args: dict | None, optimizer: dict, sampler: dict,
                       scaler: dict | None, rng: dict, progress: Progress, tokenizer_hash: str, vocab_size: int,
                       train_config: TrainConfig, world_size: int, lr: float, base: dict | None) -> Checkpoint:
    """Everything a checkpoint of this moment holds, on the CPU (shared tensors stay shared); ``base`` only for a
    fine-tune of a pretrained base. ``lr`` is the rate of the last step taken. formats/checkpoint.py writes it."""
    return Checkpoint(**to_cpu({
        "model": weights, "model_args": model_args, "optimizer": optimizer, "step": progress.step,
        "best_val_loss": progress.best_val_loss, "val_loss": progress.val_loss, "train_loss": progress.train_loss,
        "tokenizer_hash": tokenizer_hash, "vocab_size": vocab_size, "rng": rng, "sampler": sampler,
        "train_config": to_dict(train_config), "world_size": world_size, "tokens_seen": progress.tokens_seen,
        "scaler": scaler, "lr": lr, "created": time.time(), "base": base,
    }))


# ---------------------------------------------------------------------------------------------- plain values
def to_cpu(obj, _memo: dict | None = None):
    """Nested containers with every tensor on the CPU (shared tensors stay shared, e.g. tied embeddings)."""
    memo = {} if _memo is None else _memo
    if isinstance(obj, torch.Tensor):
        if obj.device.type == "cpu":
            return obj.detach()
        key = (obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), obj.dtype)
        if key not in memo:
            memo[key] = obj.detach().cpu()
        return memo[key]
    if isinstance(obj, dict):
        return {k: to_cpu(v, memo) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v, memo) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------- read / write
def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint to resume from (or to start from, ``init_from``), with every key resuming needs."""
    path = Path(path)
    return read_checkpoint(path, complete=True, remedy=f"set train.yaml resume_path to an older file in "
                           f"{path.parent / 'snapshots'}, or move it away to start over")


def save_checkpoint(ck: Checkpoint, path: Path, also: tuple[Path, ...] = ()) -> None:
    """Write ``ck`` atomically to ``path``, then give each path in ``also`` the same bytes (hard link or copy)."""
    write_checkpoint(path, ck)
    for other in also:
        link_or_copy(path, other)


def link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` hold ``src``'s bytes: a hard link when the file system allows, else a copy."""
    private_mkdir(dst.parent)
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
        return
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with open(src, "rb") as fin, atomic_open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def snapshot_path(run_dir: Path, step: int) -> Path:
    return run_dir / "snapshots" / f"step_{step:08d}.pt"


def prune_snapshots(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest snapshots; returns what was removed."""
    snap_dir = run_dir / "snapshots"
    if not snap_dir.is_dir():
        return []
    snaps = sorted((int(m.group(1)), p) for p in snap_dir.iterdir() if (m := SNAPSHOT_RE.match(p.name)))
    doomed = [p for _, p in snaps[: max(0, len(snaps) - keep)]]
    for p in doomed:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return doomed


def clean_temp_files(run_dir: Path) -> int:
    """Remove temp files a killed save left behind (only ever called while holding the run lock)."""
    n = 0
    for folder in (run_dir, run_dir / "snapshots"):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                        n += 1
    return n


# -------------------------------------------------------------------------------------------- compatibility
def check_compatible(ck: Checkpoint, args: ModelArgs, tokenizer_hash: str, path: Path) -> list[str]:
    """Refuse a checkpoint that cannot continue on this data / model config; return notes on harmless changes."""
    name = path.name
    if ck.tokenizer_hash != tokenizer_hash:
        raise ChatbotError(
            f"{name} was trained with a different tokenizer (hash {str(ck.tokenizer_hash)[:12]}…) than the "
            f"processed data (hash {tokenizer_hash[:12]}…); the data was rebuilt: set a new run_name to start a "
            f"new run, or restore the old processed data"
        )
    old = ModelArgs.from_dict(ck.model_args).to_dict()
    new = args.to_dict()
    if old["vocab_size"] != new["vocab_size"]:
        raise ChatbotError(
            f"the processed data has a vocabulary of {new['vocab_size']} but {name}'s model has "
            f"{old['vocab_size']}; set a new run_name to train a fresh model on this data"
        )
    notes = []
    for key, value in new.items():
        if old.get(key) == value:
            continue
        if key in MUTABLE_MODEL_FIELDS:
            notes.append(f"model.{key}: {old.get(key)} → {value} (applied)")
            continue
        raise ChatbotError(
            f"train.yaml model.{key} is {value} but {name} was trained with {old.get(key)}: a checkpoint cannot "
            f"change shape; restore model.{key}: {old.get(key)}, or set a new run_name to start a new model"
        )
    return notes


def config_changes(old: dict | None, new: dict, prefix: str = "") -> list[str]:
    """``section.key: old → new`` for each differing leaf of two train-config dicts (for the resume notes)."""
    if not isinstance(old, dict):
        return []
    out = []
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key == "model":
            continue  # checked (and refused) by check_compatible
        if key not in old:
            continue  # a key added by a newer version: the checkpoint ran with its default
        before = old.get(key)
        if isinstance(value, dict):
            out += config_changes(before, value, dotted + ".")
        elif before != value and key != "sample_prompts":
            out.append(f"{dotted}: {before} → {value}")
    return out
