"""Artifacts of runs that start from a pretrained base: one container, written and read one tensor at a time.

A from-scratch artifact is a ``torch.save`` dict, which needs every tensor in memory at once to write and a second
copy to read. A pretrained base is gigabytes, so its artifact uses the safetensors layout instead::

    u64 little-endian header length | JSON header {"__metadata__": {...}, name: {dtype, shape, data_offsets}} | data

which can be produced tensor by tensor (merge one weight, write it, drop it) straight into the
:class:`~chatbot.crypto.EncryptingWriter`, and read back as zero-copy views of one buffer (the decrypted plaintext
or the file's bytes): publishing holds one tensor at a time, loading holds the weights once. The plaintext is a
valid ``.safetensors`` file. ``__metadata__`` holds ``format`` (:data:`HF_ARTIFACT_FORMAT`) and ``chatbot`` (a JSON
document: what the weights are, the base's HF config and tokenizer files, persona, base id/revision/hash, step).

``weights`` in that document is ``merged`` (the adapter folded into the base: the artifact stands alone) or
``adapter`` (LoRA tensors only, applied at load time on top of the locally present base, which must hash to the
recorded ``base.weight_hash``).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import torch

from ..errors import ChatbotError
from .checkpoint import strip_prefix

HF_ARTIFACT_FORMAT = "chatbot-artifact-hf-1"
TORCH_ZIP_MAGIC = b"PK\x03\x04"

_ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
              torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
              torch.bool: "BOOL"}
for _name, _code in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2")):  # FP8 checkpoints
    if hasattr(torch, _name):
        _ST_DTYPES[getattr(torch, _name)] = _code
_TORCH_DTYPES = {v: k for k, v in _ST_DTYPES.items()}
_MAX_HEADER = 100 << 20  # the safetensors limit; a corrupted length must not allocate gigabytes
# the tokenizer's own files travel inside the artifact (text only; a tokenizer.json is required)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "chat_template.jinja", "generation_config.json")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


# ---------------------------------------------------------------------------------------------------- writing
class ContainerWriter:
    """Write the container to ``sink`` (any object with ``write``): the header first — every name, dtype and
    shape must be known up front — then :meth:`add` each tensor in the declared order."""

    def __init__(self, sink: BinaryIO, entries: list[tuple[str, torch.dtype, tuple[int, ...]]],
                 metadata: dict[str, str]):
        header: dict = {"__metadata__": dict(metadata)}
        offset = 0
        self._order: list[tuple[str, torch.dtype, tuple[int, ...], int]] = []
        for name, dtype, shape in entries:
            if name in header or dtype not in _ST_DTYPES:
                raise ValueError(f"duplicate tensor name or unsupported dtype: {name} {dtype}")
            n = _numel(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": _ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
            self._order.append((name, dtype, tuple(shape), n))
            offset += n
        raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned (as safetensors writes it)
        self.sink, self._next, self.data_bytes = sink, 0, offset
        sink.write(struct.pack("<Q", len(raw)))
        sink.write(raw)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        want, dtype, shape, n = self._order[self._next]
        if name != want or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise ValueError(f"tensor {name} {tensor.dtype} {tuple(tensor.shape)} does not match the header "
                             f"({want} {dtype} {shape})")
        t = tensor.detach().to("cpu").contiguous()
        if t.numel():
            self.sink.write(memoryview(t.view(torch.uint8).reshape(-1).numpy()))
        self._next += 1

    def done(self) -> None:
        if self._next != len(self._order):
            raise ValueError(f"{len(self._order) - self._next} declared tensors were never written")


def artifact_metadata(meta: dict) -> dict[str, str]:
    """``__metadata__`` of a chatbot artifact (safetensors allows only string values)."""
    return {"format": HF_ARTIFACT_FORMAT, "chatbot": json.dumps(meta, ensure_ascii=False, sort_keys=True)}


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---------------------------------------------------------------------------------------------------- reading
def looks_like_container(head: bytes) -> bool:
    """Whether the first bytes of a (plaintext) file are this container's (a safetensors header)."""
    return len(head) >= 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= _MAX_HEADER


def read_container(buf, name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(chatbot metadata, {tensor name: tensor}) from a writable bytes-like buffer; the tensors are views of
    ``buf`` (no copy). ``name`` is the file name for error messages."""
    bad = ChatbotError(f"{name} is not a readable model artifact (damaged container); "
                       "publish it again with `python -m chatbot.ops publish`")
    mv = memoryview(buf).cast("B")
    if len(mv) < 8:
        raise bad
    (n,) = struct.unpack("<Q", mv[:8])
    if not 0 < n <= min(_MAX_HEADER, len(mv) - 8):
        raise bad
    try:
        header = json.loads(bytes(mv[8:8 + n]).decode("utf-8"))
        meta = header.pop("__metadata__")
        fmt, doc = meta.get("format"), json.loads(meta["chatbot"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise bad from None
    if fmt != HF_ARTIFACT_FORMAT or not isinstance(doc, dict):
        raise ChatbotError(f"{name} has format {str(fmt)[:40]!r}, expected {HF_ARTIFACT_FORMAT!r}; update the tool "
                           "or publish it again with `python -m chatbot.ops publish`")
    start, size = 8 + n, len(mv) - 8 - n
    tensors = {}
    for key, info in header.items():
        try:
            dtype = _TORCH_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            lo, hi = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad from None
        width = torch.empty((), dtype=dtype).element_size()
        if not 0 <= lo <= hi <= size or hi - lo != _numel(shape) * width:
            raise bad
        if hi == lo:
            tensors[key] = torch.empty(shape, dtype=dtype)
            continue
        flat = torch.frombuffer(buf, dtype=torch.uint8, count=hi - lo, offset=start + lo)
        if (start + lo) % width:  # safetensors does not promise alignment; a misaligned tensor is copied
            flat = flat.clone()
        tensors[key] = flat.view(dtype).reshape(shape)
    return doc, tensors


# ---------------------------------------------------------------------------------------------- base weights
def base_weight_files(base_dir: Path) -> list[Path]:
    """The base's safetensors files (one file, or the shards its index names), in a stable order."""
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, AttributeError):
            raise ChatbotError(f"{index.name} in the base folder is not a safetensors index; download the base again") from None
        files = [base_dir / n for n in names]
    else:
        files = sorted(base_dir.glob("*.safetensors"))
    missing = [f.name for f in files if not f.is_file()]
    if not files or missing:
        raise ChatbotError(f"the base folder has no complete safetensors weights ({missing[0] if missing else 'none'} "
                           "missing); download the base again")
    return files


def _file_header(path: Path) -> tuple[int, list[tuple[str, torch.dtype, tuple[int, ...], int, int]]]:
    """(data start, [(name, dtype, shape, begin, end)] in file order) of one safetensors file."""
    bad = ChatbotError(f"{path.name} in the base folder is not a valid safetensors file; download the base again")
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if not 0 < n <= _MAX_HEADER:
                raise bad
            header = json.loads(fh.read(n).decode("utf-8"))
        header.pop("__metadata__", None)
        entries = [(k, _TORCH_DTYPES[v["dtype"]], tuple(int(d) for d in v["shape"]), *map(int, v["data_offsets"]))
                   for k, v in header.items()]
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        raise bad from None
    return 8 + n, sorted(entries, key=lambda e: e[3])


def iter_base_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every base weight, one at a time, each read into its own fresh buffer.

    Plain reads rather than a memory map: a mapped multi-GB file would count fully towards the process's resident
    memory once every page was touched; this way only the tensor being merged is in memory."""
    for f in files:
        start, entries = _file_header(f)
        with open(f, "rb", buffering=0) as fh:
            for name, dtype, shape, lo, hi in entries:
                t = torch.empty(shape, dtype=dtype)
                view = memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else memoryview(b"")
                if len(view) != hi - lo:
                    raise ChatbotError(f"{f.name} in the base folder is damaged ({name[:60]}); download the base again")
                fh.seek(start + lo)
                got = 0
                while got < len(view):
                    n = fh.readinto(view[got:])
                    if not n:
                        raise ChatbotError(f"{f.name} in the base folder is truncated; download the base again")
                    got += n
                yield name, t


def base_weight_shapes(files: list[Path]) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(name, dtype, shape) of every base weight, in :func:`iter_base_tensors` order, without reading any data."""
    return [(name, dtype, shape) for f in files for name, dtype, shape, _, _ in _file_header(f)[1]]


# ------------------------------------------------------------------------------------------------------ LoRA
def lora_pairs(adapter: dict[str, torch.Tensor], label: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{base weight name: (A, B)} from a peft LoRA state dict (``...q_proj.lora_A.weight`` keys)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in adapter.items():
        m = _LORA_KEY.match(strip_prefix(key))
        if m is None or not torch.is_tensor(t):
            raise ChatbotError(f"{label}: adapter tensor {key[:80]!r} is not a LoRA A/B weight "
                               "(only plain LoRA adapters can be published)")
        parts.setdefault(f"{m['mod']}.weight", {})[m["ab"]] = t
    broken = [k for k, v in parts.items() if set(v) != {"A", "B"}]
    if broken or not parts:
        raise ChatbotError(f"{label}: the adapter is incomplete ({broken[0] if broken else 'no LoRA weights'}); "
                           "retrain or publish another checkpoint")
    return {k: (v["A"], v["B"]) for k, v in parts.items()}


def merge_lora(weight: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """``W + scale · B A`` computed in float32 (the caller casts)."""
    return torch.addmm(weight.float(), b.float(), a.float(), alpha=scale)


def lora_scale(adapter_info: dict) -> float:
    return float(adapter_info["alpha"]) / float(adapter_info["r"])


# ---------------------------------------------------------------------------------------------- tokenizer files
def tokenizer_files(base_dir: Path) -> dict[str, str]:
    """The text files that make up the base's tokenizer (tokenizer.json required)."""
    out = {}
    for name in TOKENIZER_FILES:
        p = base_dir / name
        if p.is_file():
            try:
                out[name] = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise ChatbotError(f"{name} in the base folder is not readable UTF-8 text; download the base again") from None
    if "tokenizer.json" not in out:
        raise ChatbotError("the base folder has no tokenizer.json (a fast tokenizer is needed); "
                           "use a base that ships one")
    return out
