"""The published model artifact (``artifacts/model_latest.pt``, or ``model_latest.enc`` encrypted).

Two layouts share these file names, told apart by their first bytes:

* a from-scratch run: one ``torch.save`` dict (:class:`Artifact`; keys in file order: :data:`KEYS`, ``format`` =
  :data:`FORMAT`) holding what chatting needs and nothing else — weights in the publish dtype, model args, the
  tokenizer JSON, the special tokens, the persona *pseudonyms*, the tokenizer hash, step, val_loss, created;
* a run fine-tuned from a pretrained base: the safetensors-layout container of :mod:`chatbot.formats.hf_artifact`
  (format :data:`HF_FORMAT`), returned as a :class:`Container` (the plaintext buffer; its tensors become views).

``.enc`` wraps either in the streaming authenticated encryption of :mod:`chatbot.crypto`: written through
:class:`~chatbot.crypto.EncryptingWriter` (plaintext never touches the disk) and decrypted in memory only on read.
Every torch file is read with ``weights_only=True``: a model file is data, never code. Publish writes the file,
inference and the tests read it; nothing else opens it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch

from ..errors import ChatbotError
from ..fsio import atomic_open
from ..tokens import is_pseudonym
from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import Checkpoint
from .checkpoint import checked as checked_checkpoint
from .hf_artifact import HF_ARTIFACT_FORMAT as HF_FORMAT
from .hf_artifact import looks_like_container

FORMAT = "chatbot-artifact-1"
PT_NAME, ENC_NAME, INFO_NAME = "model_latest.pt", "model_latest.enc", "model_info.json"
KEYS = ("format", "model", "model_args", "tokenizer_json", "special_tokens", "persona", "tokenizer_hash", "step",
        "val_loss", "created")
DEFAULT_REMEDY = "publish it again with `python -m chatbot.ops publish`"
__all__ = ["FORMAT", "HF_FORMAT", "PT_NAME", "ENC_NAME", "INFO_NAME", "KEYS", "Artifact", "Container", "read", "load",
           "write", "open_sink", "is_container_file", "read_plain", "check_persona", "finite_number"]


@dataclass
class Artifact:
    """A from-scratch run's artifact (field order = key order in the file; ``format`` is implied)."""

    model: dict[str, torch.Tensor]
    model_args: dict
    tokenizer_json: str
    special_tokens: list[str]
    persona: dict
    tokenizer_hash: str
    step: int
    val_loss: float | None
    created: str
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they are

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"format": FORMAT}
        out.update((f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra")
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> Artifact:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        extra = {k: v for k, v in raw.items() if k not in known and k != "format"}
        return cls(**{k: v for k, v in raw.items() if k in known}, extra=extra)


@dataclass
class Container:
    """A pretrained-base run's artifact: the whole plaintext in one writable buffer (read it with
    :func:`chatbot.formats.hf_artifact.read_container`; tensors become views of it)."""

    buf: bytearray
    encrypted: bool


# ------------------------------------------------------------------------------------------------------ read
def read(path: str | os.PathLike, key: str | None = None, *, label: str | None = None, remedy: str = DEFAULT_REMEDY,
         checkpoint_ok: bool = False) -> Artifact | Container | Checkpoint:
    """Read an artifact (``.enc``: decrypted in memory with ``key``); any problem is one ChatbotError line.

    ``checkpoint_ok``: a trainer checkpoint copied to an artifact path is returned as a :class:`Checkpoint`
    (inference accepts one there) instead of being refused.
    """
    from ..crypto import DecryptError, MemoryReader, decrypt_to_bytes, is_encrypted

    path = Path(path)
    label = label or path.name
    if not path.is_file():
        raise ChatbotError(f"{label} not found; create it with `python -m chatbot.ops publish`")
    encrypted = is_encrypted(path)
    if not encrypted and path.suffix == ".enc":
        raise DecryptError(f"{label} is not an encrypted chatbot model (bad magic bytes); "
                           "publish it again with `python -m chatbot.ops publish --encrypt`")
    if encrypted:
        if not key:
            raise ChatbotError(f"{label} is encrypted; set CHATBOT_MODEL_KEY in .env to the key it was published with")
        buf = decrypt_to_bytes(path, key)
        if looks_like_container(bytes(buf[:16])):
            return Container(buf, encrypted=True)
        with MemoryReader(buf) as src:
            obj = _torch_load(src, label, remedy)
        del buf
    elif is_container_file(path):
        return Container(read_plain(path), encrypted=False)
    else:
        obj = _torch_load(path, label, remedy)
    if checkpoint_ok and _holds_checkpoint(obj):
        return checked_checkpoint(obj, label=label, remedy=remedy)
    return _checked(obj, label, remedy)


def load(path: str | os.PathLike, key: str | None = None) -> Artifact:
    """A from-scratch artifact only: a pretrained-base container is refused with one line (tests, benches)."""
    got = read(path, key)
    if isinstance(got, Container):
        raise ChatbotError(f"{Path(path).name} is the artifact of a run fine-tuned from a pretrained base "
                           f"(format {HF_FORMAT}); load it with reply / chat / smoke / bridge")
    return got


def _torch_load(src, label: str, remedy: str) -> object:
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle with code in it, not a torch file at all ...
        raise ChatbotError(f"{label} is not a readable model artifact ({type(exc).__name__}); {remedy}") from None


def _holds_checkpoint(obj: object) -> bool:
    """A checkpoint by its format (or, from before the format key, by the absence of a tokenizer)."""
    if not isinstance(obj, dict):
        return False
    fmt = obj.get("format")
    return fmt == CHECKPOINT_FORMAT or (fmt is None and "tokenizer_json" not in obj and "model" in obj)


def _checked(obj: object, label: str, remedy: str) -> Artifact:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else None
        raise ChatbotError(f"{label} is not a chatbot artifact (format {str(fmt)[:40]!r}, expected {FORMAT!r}); "
                           f"{remedy}")
    missing = [k for k in KEYS if k not in obj]
    if missing or not isinstance(obj["model"], dict) or not isinstance(obj["tokenizer_json"], str):
        raise ChatbotError(f"{label} is incomplete (missing {missing[0] if missing else 'model/tokenizer'}); {remedy}")
    return Artifact.from_dict(obj)


def is_container_file(path: str | os.PathLike) -> bool:
    """Whether a plaintext file starts like a pretrained-base container (cheap: 16 bytes)."""
    try:
        with open(path, "rb") as fh:
            return looks_like_container(fh.read(16))
    except OSError:
        return False


def read_plain(path: str | os.PathLike) -> bytearray:
    """The whole file in one writable buffer (tensors become views of it)."""
    path = Path(path)
    size = path.stat().st_size
    buf = bytearray(size)
    with open(path, "rb", buffering=0) as fh:
        view, got = memoryview(buf), 0
        while got < size:
            n = fh.readinto(view[got:])
            if not n:
                raise ChatbotError(f"{path.name} changed while reading; try again")
            got += n
        view.release()
    return buf


# ----------------------------------------------------------------------------------------------------- write
def write(path: str | os.PathLike, artifact: Artifact, key: str | None = None) -> None:
    """Write ``artifact``: atomically as plaintext, or streamed through the encryption with ``key``."""
    with open_sink(path, key) as sink:
        torch.save(artifact.to_dict(), sink)


@contextlib.contextmanager
def open_sink(path: str | os.PathLike, key: str | None = None) -> Iterator[BinaryIO]:
    """Where an artifact's bytes go: a temp file renamed over ``path`` on success, or with ``key`` the streaming
    encryption (the plaintext never touches the disk, not even a temp file). Also used for the container that
    publish writes tensor by tensor."""
    if key is None:
        with atomic_open(path, "wb") as fh:
            yield fh
        return
    from ..crypto import EncryptingWriter

    with EncryptingWriter(path, key) as writer:
        yield writer


# ------------------------------------------------------------------------------------------- field contracts
def check_persona(persona: object) -> dict | None:
    """The persona block an artifact may carry — pseudonyms only — normalised; None when anything looks like a
    name or has the wrong type (the caller says what to do)."""
    if not isinstance(persona, dict):
        return None
    target, self_ = persona.get("target", "room"), persona.get("self")
    speakers = persona.get("speakers") or {}
    if (not isinstance(target, str) or not (target == "room" or is_pseudonym(target))
            or not (self_ is None or is_pseudonym(self_))
            or not isinstance(speakers, dict)
            or not all(is_pseudonym(k) for k in speakers)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in speakers.values())):
        return None
    return {"target": target, "self": self_, "speakers": {k: int(v) for k, v in speakers.items()}}


def finite_number(x: object) -> float | None:
    """A finite float from a Python or one-element tensor number (step, losses); None for anything else."""
    if torch.is_tensor(x) and x.numel() == 1:
        x = x.item()
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None
