"""Training windows read straight from the processed memmaps (see docs/ARCHITECTURE.md, "Training windows").

Nothing here loads a split whole: token, mask and start files are ``np.memmap`` views and a batch reads only its
``block_size + 1`` tokens per window. Windows start only at the offsets listed in ``{split}_starts.bin`` (turn or
session boundaries chosen by preprocess), so every target turn is preceded by real context.

The sampler walks seeded per-epoch permutations of those offsets. Its position is counted in *global* windows
(across all ranks), so a checkpoint written by one world size resumes exactly where it stopped under another, and
an optimizer step always consumes the same windows however they are split into micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ChatbotError
from ..formats import processed
from ..formats.processed import PREPROCESS as _PREPROCESS


@dataclass
class Split:
    """One split's memmaps. ``tokens`` and ``mask`` have equal length; ``starts`` are offsets into them."""

    name: str
    tokens: np.ndarray
    mask: np.ndarray
    starts: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_windows(self) -> int:
        return int(self.starts.shape[0])


def _memmap(path: Path, dtype) -> np.ndarray:
    """Read-only memmap; an empty file gives an empty array (np.memmap refuses size 0)."""
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size % itemsize:
        raise ChatbotError(f"{path} is truncated ({size} bytes is not a multiple of {itemsize}); {_PREPROCESS} --force")
    if size == 0:
        return np.empty(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def read_stats(processed_dir: str | Path) -> dict:
    """stats.json with its contract fields checked (dtype, vocab_size, tokenizer_hash): see formats/processed.py."""
    return processed.read(processed_dir).stats


def open_split(processed_dir: str | Path, split: str, dtype: str, vocab_size: int) -> Split:
    """Memmap one split and check it against the contract; any mismatch is one clear ChatbotError.

    Checks: files present, tokens and masks of equal length, starts inside the token file, every token id below
    ``vocab_size`` (scanned in chunks, so a wrong dtype or a vocabulary larger than the model is caught here).
    """
    folder = Path(processed_dir)
    paths = {kind: folder / processed.split_name(split, suffix)
             for kind, suffix in (("tokens", processed.TOKENS), ("mask", processed.MASK), ("starts", processed.STARTS))}
    for path in paths.values():
        if not path.is_file():
            raise ChatbotError(f"{path} is missing: {_PREPROCESS} first")
    tokens = _memmap(paths["tokens"], processed.TOKEN_DTYPES[dtype])
    mask = _memmap(paths["mask"], processed.MASK_DTYPE)
    starts = _memmap(paths["starts"], processed.STARTS_DTYPE)
    if tokens.shape[0] != mask.shape[0]:
        raise ChatbotError(
            f"{paths['tokens'].name} has {tokens.shape[0]} tokens but {paths['mask'].name} has {mask.shape[0]} mask "
            f"bytes (they must match one to one); {_PREPROCESS} --force"
        )
    if starts.shape[0] and int(starts.max()) >= tokens.shape[0]:
        raise ChatbotError(f"{paths['starts'].name} points past the end of {paths['tokens'].name}; "
                           f"{_PREPROCESS} --force")
    chunk = 1 << 24
    for offset in range(0, tokens.shape[0], chunk):
        top = int(tokens[offset : offset + chunk].max())
        if top >= vocab_size:
            raise ChatbotError(
                f"{paths['tokens'].name} holds token id {top} but the vocabulary has {vocab_size} ids "
                f"(stats.json and the data disagree); {_PREPROCESS} --force"
            )
    return Split(split, tokens, mask, starts)


def read_windows(split: Split, starts: np.ndarray, block_size: int, pad_id: int, loss_mode: str):
    """Windows at token offsets ``starts`` → ``x`` (N, T) int64, ``y`` (N, T) int64, ``w`` (N, T) float32.

    A window is ``block_size + 1`` tokens; past the end of the file it is padded with ``pad_id`` and weight 0.
    ``w`` is the mask byte of each predicted token (``response_only``) or 1 for every real token (``all``).
    """
    count, width = len(starts), block_size + 1
    tok = np.full((count, width), pad_id, dtype=np.int64)
    msk = np.zeros((count, width), dtype=np.float32)
    real = np.zeros((count, width), dtype=bool)
    for row, start in enumerate(starts):
        start = int(start)
        end = min(start + width, split.n_tokens)
        tok[row, : end - start] = split.tokens[start:end]
        msk[row, : end - start] = split.mask[start:end]
        real[row, : end - start] = True
    inputs = torch.from_numpy(tok[:, :-1])
    targets = torch.from_numpy(tok[:, 1:])
    weights = msk[:, 1:] if loss_mode == "response_only" else real[:, 1:].astype(np.float32)
    return inputs, targets, torch.from_numpy(np.ascontiguousarray(weights))


class WindowSampler:
    """Seeded per-epoch permutations of a split's window starts, consumed in global order.

    ``take(count)`` returns the next ``count`` start *offsets* (crossing into the next epoch when needed). The state is
    ``(epoch, cursor)``, so saving and restoring it reproduces the exact stream of windows.
    """

    def __init__(self, split: Split, seed: int):
        if split.n_windows == 0:
            raise ChatbotError(f"the {split.name} split has no training windows (no eligible target turns); "
                               f"add more chat data or lower processed.preprocess.min_context_turns, then preprocess")
        self.split, self.seed = split, int(seed)
        self.epoch, self.cursor = 0, 0
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.split.n_windows)
            self._perm_epoch = epoch
        return self._perm

    def take(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            perm = self._permutation(self.epoch)
            taken = min(count, len(perm) - self.cursor)
            out.append(perm[self.cursor : self.cursor + taken])
            self.cursor += taken
            count -= taken
            if self.cursor == len(perm):
                self.epoch, self.cursor = self.epoch + 1, 0
        idx = np.concatenate(out) if out else np.empty(0, dtype=np.int64)
        return np.asarray(self.split.starts[idx], dtype=np.int64)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "n_windows": self.split.n_windows}

    def load_state_dict(self, state: dict) -> bool:
        """Restore the position. Returns False (and starts a fresh epoch) when the data changed under it."""
        if int(state.get("n_windows", -1)) != self.split.n_windows or int(state.get("seed", -1)) != self.seed:
            self.epoch, self.cursor = int(state.get("epoch", 0)) + 1, 0
            return False
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        return True


def eval_starts(split: Split, n_batches: int, batch_size: int, seed: int) -> np.ndarray:
    """Fixed validation windows: all of them (``n_batches == 0``) or a seeded sample, the same at every eval."""
    if n_batches == 0 or n_batches * batch_size >= split.n_windows:
        return np.asarray(split.starts[:], dtype=np.int64)
    idx = np.sort(np.random.default_rng([seed, 0xE7A1]).permutation(split.n_windows)[: n_batches * batch_size])
    return np.asarray(split.starts[idx], dtype=np.int64)
