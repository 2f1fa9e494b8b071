"""preview.json: a few decoded windows per split with the loss-carrying spans marked (pseudonyms only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats import processed
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
    for split, count in PREVIEW_WINDOWS.items():
        if results[split].tokens == 0 or results[split].windows == 0:
            continue
        toks = np.memmap(temps[processed.split_name(split, processed.TOKENS)], dtype=dtype, mode="r")
        mask = np.memmap(temps[processed.split_name(split, processed.MASK)], dtype=processed.MASK_DTYPE, mode="r")
        starts = np.fromfile(temps[processed.split_name(split, processed.STARTS)], dtype=processed.STARTS_DTYPE)
        positions = np.linspace(0, len(starts) - 1, num=min(count, len(starts)))
        picks = sorted({int(starts[int(position)]) for position in positions})
        if eot is None:
            eot = special_id(tok, EOT)
        for start in picks:
            end = min(len(toks), start + PREVIEW_TOKENS)
            ids = np.asarray(toks[start:end], dtype=np.int64)
            hits = np.flatnonzero(ids == eot)
            if hits.size:  # end on a turn boundary so no character is cut
                end = start + int(hits[-1]) + 1
            ids = np.asarray(toks[start:end], dtype=np.int64)
            carries_loss = np.asarray(mask[start:end], dtype=np.uint8)
            parts = []
            change = np.flatnonzero(np.diff(carries_loss)) + 1
            for span_start, span_end in zip(np.r_[0, change], np.r_[change, len(ids)]):
                text = decode_fn(ids[span_start:span_end].tolist())
                parts.append(f"⟦{text}⟧" if carries_loss[span_start] else text)
            samples.append({"split": split, "start": start, "tokens": int(len(ids)),
                            "target_tokens": int(carries_loss.sum()), "text": "".join(parts)})
        del toks, mask
    return {"legend": "⟦…⟧ = tokens that carry loss (a target turn's text and its <|eot|>); the rest is context",
            "samples": samples}
