"""The processed-data folder (``paths.processed.dir``, ``data/processed/`` by default): written by preprocess, read
by train, inference, publish and status. This module is the one place that knows its file names, dtypes and the
checks a reader needs.

Files (``{split}`` is ``train`` or ``val``)::

    tokenizer.json            the tokenizer (UTF-8 JSON); its sha256 is ``tokenizer_hash``
    {split}.bin               token ids, ``dtype`` of stats.json (uint16 while the vocabulary fits, else uint32)
    {split}_loss_mask.bin     uint8, one byte per token: 1 where the token is a training target
    {split}_starts.bin        uint64 token offsets where a training window may start
    preview.json              a few decoded windows (pseudonyms only)
    speakers.json             PRIVATE: real name -> pseudonym table (never published)
    stats.json                written last: format, version, dtype, vocab_size, tokenizer_hash, persona, counts,
                              base (when made for a pretrained base) and ``outputs`` (bytes + sha256 of every
                              other file), so a half-written folder is never taken for a complete one

Readers: :func:`read` for the training contract (every field train needs, checked), :func:`load_stats` for the raw
object (publish, inference and status read the persona and counts and stay lenient about the rest),
:func:`check_outputs` for preprocess's own "is this folder complete and current" test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ChatbotError
from ..fsio import atomic_write_bytes, read_json, sha256_file

FORMAT = "chatbot-processed-1"
VERSION = 1  # bump when the output of the same inputs + config changes

TOKENIZER = "tokenizer.json"
STATS = "stats.json"
PREVIEW = "preview.json"
SPEAKERS = "speakers.json"  # PRIVATE: real names
SPLITS = ("train", "val")
TOKENS, MASK, STARTS = ".bin", "_loss_mask.bin", "_starts.bin"  # suffixes after the split name
SPLIT_SUFFIXES = (TOKENS, MASK, STARTS)
BIN_FILES = tuple(f"{split}{suffix}" for split in SPLITS for suffix in SPLIT_SUFFIXES)
OUTPUT_FILES = (TOKENIZER, *BIN_FILES, PREVIEW, SPEAKERS, STATS)  # commit order: stats.json last
JOURNAL = ".preprocess-commit.json"  # present only while preprocess renames its outputs into place

TOKEN_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
MASK_DTYPE = np.uint8
STARTS_DTYPE = np.uint64
CONTRACT_KEYS = ("dtype", "vocab_size", "tokenizer_hash")
DEFAULT_PERSONA = {"target": "room", "self": None, "speakers": {}}

PREPROCESS = "run `python -m chatbot.ops preprocess`"

Show = Callable[[Path], str]  # how a path appears in an error message (callers pass a project-relative form)


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest token dtype that holds every id of a ``vocab_size`` vocabulary."""
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def split_name(split: str, suffix: str) -> str:
    """``split_name("train", MASK)`` -> ``train_loss_mask.bin``."""
    return f"{split}{suffix}"


@dataclass(frozen=True)
class ProcessedData:
    """A processed folder whose stats.json passed :func:`read`. ``stats`` is the whole object (counts, persona...)."""

    folder: Path
    dtype: str
    vocab_size: int
    tokenizer_hash: str
    persona: dict
    base: dict | None
    stats: dict = field(repr=False)

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / TOKENIZER

    @property
    def stats_path(self) -> Path:
        return self.folder / STATS

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(TOKEN_DTYPES[self.dtype])

    def split_path(self, split: str, suffix: str) -> Path:
        return self.folder / split_name(split, suffix)

    def check_tokenizer(self) -> None:
        """tokenizer.json must be the file stats.json was written with (not one from another preprocess run)."""
        if sha256_file(self.tokenizer_path) != self.tokenizer_hash:
            raise ChatbotError(f"{self.tokenizer_path} does not match the tokenizer_hash in stats.json (files from "
                               f"two different preprocess runs); {PREPROCESS} --force")


def load_stats(folder: str | os.PathLike, show: Show = str) -> dict:
    """stats.json as a dict: present, valid JSON, an object. Nothing else is checked (see :func:`read`)."""
    path = Path(folder) / STATS
    if not path.is_file():
        raise ChatbotError(f"{show(path)} is missing: {PREPROCESS} first")
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        raise ChatbotError(f"{show(path)} is unreadable or not valid JSON; {PREPROCESS} --force") from None
    if not isinstance(stats, dict):
        raise ChatbotError(f"{show(path)} is not a stats object; {PREPROCESS} --force")
    return stats


def read(folder: str | os.PathLike, show: Show = str) -> ProcessedData:
    """The training contract of a processed folder, checked; any problem is one clear ChatbotError.

    Checks: tokenizer.json and stats.json present, stats.json an object with ``dtype`` (a known token dtype),
    ``vocab_size`` (a positive integer) and ``tokenizer_hash`` (a string). The split files are opened (and checked
    against this) by :func:`chatbot.data.dataset.open_split`; the tokenizer file against the hash by
    :meth:`ProcessedData.check_tokenizer`.
    """
    folder = Path(folder)
    if not (folder / STATS).is_file() or not (folder / TOKENIZER).is_file():
        raise ChatbotError(f"no processed data in {show(folder)}: {PREPROCESS} first")
    stats = load_stats(folder, show)
    path = show(folder / STATS)
    missing = [key for key in CONTRACT_KEYS if key not in stats]
    if missing:
        raise ChatbotError(f"{path} lacks '{missing[0]}' (made by an older version?); {PREPROCESS} --force")
    if stats["dtype"] not in TOKEN_DTYPES:
        raise ChatbotError(f"{path}: unknown token dtype {stats['dtype']!r}; {PREPROCESS} --force")
    vocab = stats["vocab_size"]
    if not isinstance(vocab, int) or isinstance(vocab, bool) or vocab <= 0:
        raise ChatbotError(f"{path}: vocab_size {vocab!r} is not a positive integer; {PREPROCESS} --force")
    if not isinstance(stats["tokenizer_hash"], str):
        raise ChatbotError(f"{path}: tokenizer_hash is not a string; {PREPROCESS} --force")
    base = stats.get("base")
    return ProcessedData(folder=folder, dtype=stats["dtype"], vocab_size=vocab,
                         tokenizer_hash=stats["tokenizer_hash"], persona=stats.get("persona") or dict(DEFAULT_PERSONA),
                         base=base if isinstance(base, dict) and base else None, stats=stats)


def stats_bytes(stats: dict[str, Any]) -> bytes:
    """stats.json's bytes: key order as given, 2-space indent, UTF-8 (names stay readable), newline-terminated."""
    return (json.dumps(stats, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write(folder: str | os.PathLike, stats: dict[str, Any]) -> Path:
    """Write stats.json atomically (preprocess instead commits :func:`stats_bytes` with its other outputs)."""
    path = Path(folder) / STATS
    atomic_write_bytes(path, stats_bytes(stats))
    return path


def check_outputs(folder: str | os.PathLike, *, full: bool = False) -> str | None:
    """None when ``folder`` holds a complete, consistent set of outputs, else a short reason (no private data).

    Sizes (and the tokenizer hash) are always checked; ``full=True`` also re-hashes every file.
    """
    folder = Path(folder)
    if (folder / JOURNAL).exists():
        return "an interrupted commit is pending"
    try:
        stats = read_json(folder / STATS)
    except FileNotFoundError:
        return "no previous outputs"
    except (OSError, ValueError):
        return "stats.json is unreadable"
    if not isinstance(stats, dict) or stats.get("format") != FORMAT or stats.get("version") != VERSION:
        return "outputs were made by another version"
    outputs = stats.get("outputs")
    outputs = outputs if isinstance(outputs, dict) else {}
    for name in OUTPUT_FILES[:-1]:
        info = outputs.get(name)
        path = folder / name
        if not isinstance(info, dict) or not path.is_file() or path.stat().st_size != info.get("bytes"):
            return f"{name} is missing or does not match stats.json"
        if (full or name == TOKENIZER) and sha256_file(path) != info.get("sha256"):
            return f"{name} does not match stats.json"
    if outputs[TOKENIZER]["sha256"] != stats.get("tokenizer_hash"):
        return "tokenizer.json does not match stats.json"
    return None
