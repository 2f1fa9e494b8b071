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
from pathlib import Path

import numpy as np
import torch

from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint
from ..formats.checkpoint import read as read_checkpoint
from ..formats.checkpoint import write as write_checkpoint
from ..fsio import atomic_open, fsync_dir, private_mkdir
from ..model import ModelArgs

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
