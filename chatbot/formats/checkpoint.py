"""The trainer's checkpoint file (``checkpoints/<run>/latest.pt``, ``best.pt``, ``snapshots/step_*.pt``).

One ``torch.save`` dict; every value is a plain tensor or Python value, so it is read with
``torch.load(..., weights_only=True)`` only (a model file is data, never code). Keys, in file order::

    format ("chatbot-ckpt-1"), model (state dict), model_args (ModelArgs dict; None for a run fine-tuned from a
    pretrained base), optimizer, step, best_val_loss, val_loss, train_loss, tokenizer_hash, vocab_size, rng,
    sampler, train_config, world_size, tokens_seen, scaler, lr, created, [base]

``base`` (id, revision, weight_hash, tokenizer_hash, adapter) is present only for a fine-tune of a pretrained base;
``model`` then holds the trainable tensors (LoRA or full). What goes *into* a checkpoint, and when, is the trainer's
policy (chatbot/train/checkpoint.py); this module only reads, checks and writes the file.

Readers differ in what they need: resuming needs every key (``complete=True``); publish and inference need the
weights only (files from before the ``format`` key existed are read too). ``mmap=True`` maps the file instead of
reading it, so the optimizer state publish never uses is never paged in.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ChatbotError
from ..fsio import atomic_torch_save

FORMAT = "chatbot-ckpt-1"
# what resuming needs (publish and inference need only model + model_args)
RESUME_KEYS = ("model", "model_args", "optimizer", "step", "tokenizer_hash", "sampler")
_SCALARS = ("step", "best_val_loss", "val_loss", "train_loss", "vocab_size", "world_size", "tokens_seen", "lr",
            "created")


@dataclass
class Checkpoint:
    """What a checkpoint file holds (field order = key order in the file; ``format`` is implied)."""

    model: dict[str, torch.Tensor]
    model_args: dict | None
    optimizer: dict | None = None
    step: int = 0
    best_val_loss: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    tokenizer_hash: str | None = None
    vocab_size: int | None = None
    rng: dict | None = None
    sampler: dict | None = None
    train_config: dict | None = None
    world_size: int = 1
    tokens_seen: int = 0
    scaler: dict | None = None
    lr: float | None = None
    created: float | None = None
    base: dict | None = None  # written only when set (a fine-tune of a pretrained base)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    @property
    def is_base(self) -> bool:
        return self.base is not None

    def to_dict(self) -> dict:
        """The dict that goes into the file (the trainer's key order, ``format`` first)."""
        out: dict[str, Any] = {"format": FORMAT}
        for f in dataclasses.fields(self):
            if f.name == "extra" or (f.name == "base" and self.base is None):
                continue
            out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Checkpoint:
        """From a loaded dict (unchecked; :func:`read` checks). One-element tensors become Python numbers."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: _plain(v) if k in _SCALARS else v for k, v in raw.items() if k in known}
        for key in ("step", "world_size", "tokens_seen"):
            if values.get(key) is None:
                values.pop(key, None)  # absent or None: the default
            else:
                values[key] = int(values[key])
        extra = {k: v for k, v in raw.items() if k not in known and k != "format"}
        return cls(**values, extra=extra)


def _plain(value: Any) -> Any:
    return value.item() if torch.is_tensor(value) and value.numel() == 1 else value


def read(path: str | os.PathLike, *, label: str | None = None, remedy: str = "retrain with "
         "`python -m chatbot.ops train`", complete: bool = False, mmap: bool = False) -> Checkpoint:
    """Read and check a checkpoint; any problem is one ChatbotError line naming ``label`` and ending in ``remedy``.

    ``complete``: every key resuming needs must be there (and the ``format`` key itself).
    """
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise ChatbotError(f"checkpoint {label} not found; {remedy}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # truncated zip, pickled code, not a torch file at all ...
        raise ChatbotError(f"{label} is not a readable checkpoint ({type(exc).__name__}); {remedy}") from None
    return checked(raw, label=label, remedy=remedy, complete=complete)


def checked(raw: object, *, label: str, remedy: str, complete: bool = False) -> Checkpoint:
    """:func:`read`'s checks on an object already loaded (weights_only) from a file named ``label``."""
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict) or "model_args" not in raw:
        raise ChatbotError(f"{label} is not a chatbot checkpoint (no model / model_args); {remedy}")
    fmt = raw.get("format")
    if fmt != FORMAT and (complete or fmt is not None):  # no format key: a file from before it existed
        raise ChatbotError(f"{label} has format {str(fmt)[:40]!r}, expected {FORMAT!r}; update the tool, or "
                           f"{remedy}")
    if complete:
        missing = [k for k in RESUME_KEYS if k not in raw]
        if missing:
            raise ChatbotError(f"{label} lacks '{missing[0]}' (incomplete checkpoint); {remedy}")
    return Checkpoint.from_dict(raw)


def write(path: str | os.PathLike, ck: Checkpoint) -> None:
    """Write ``ck`` atomically (temp file + fsync + rename: a kill leaves the previous complete file)."""
    atomic_torch_save(ck.to_dict(), path)


def strip_prefix(key: str) -> str:
    """A state-dict key without the wrappers' prefixes (a checkpoint of a compiled or DDP model has them)."""
    for prefix in ("_orig_mod.", "module."):  # torch.compile / DDP wrappers
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def strip_prefixes(state: dict) -> dict:
    return {strip_prefix(k): v for k, v in state.items()}
