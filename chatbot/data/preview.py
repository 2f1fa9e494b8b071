"""preview.json: a few decoded windows per split with the loss-carrying spans marked (pseudonyms only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..tokens import EOT
from .encode import SplitOut
from .tokenizer import decode, special_id

PREVIEW_WINDOWS = {"train": 3, "val": 2}
PREVIEW_TOKENS = 120


def preview(tok, temps: dict[str, Path], dtype, results: dict[str, SplitOut], *, eot: int | None = None,
             decode_fn=None) -> dict:
    """A few windows per split, decoded, with the loss-carrying spans wrapped in ⟦ ⟧ (``eot``/``decode_fn``: the
    turn end and decoder of a base model's layout)."""
    if decode_fn is None:
        def decode_fn(ids):
            return decode(tok, ids)
    samples = []
    for split, n in PREVIEW_WINDOWS.items():
        if results[split].tokens == 0 or results[split].windows == 0:
            continue
        toks = np.memmap(temps[f"{split}.bin"], dtype=dtype, mode="r")
        mask = np.memmap(temps[f"{split}_loss_mask.bin"], dtype=np.uint8, mode="r")
        starts = np.fromfile(temps[f"{split}_starts.bin"], dtype=np.uint64)
        picks = sorted({int(starts[int(i)]) for i in np.linspace(0, len(starts) - 1, num=min(n, len(starts)))})
        if eot is None:
            eot = special_id(tok, EOT)
        for s in picks:
            end = min(len(toks), s + PREVIEW_TOKENS)
            ids = np.asarray(toks[s:end], dtype=np.int64)
            hits = np.flatnonzero(ids == eot)
            if hits.size:  # end on a turn boundary so no character is cut
                end = s + int(hits[-1]) + 1
            ids = np.asarray(toks[s:end], dtype=np.int64)
            m = np.asarray(mask[s:end], dtype=np.uint8)
            parts = []
            change = np.flatnonzero(np.diff(m)) + 1
            for a, b in zip(np.r_[0, change], np.r_[change, len(ids)]):
                text = decode_fn(ids[a:b].tolist())
                parts.append(f"⟦{text}⟧" if m[a] else text)
            samples.append({"split": split, "start": s, "tokens": int(len(ids)), "target_tokens": int(m.sum()),
                            "text": "".join(parts)})
        del toks, mask
    return {"legend": "⟦…⟧ = tokens that carry loss (a target turn's text and its <|eot|>); the rest is context",
            "samples": samples}
