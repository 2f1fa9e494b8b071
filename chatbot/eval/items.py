"""Turns and reply items read back from the processed token streams (data/processed/{train,val}.bin).

A session is ``<|bos|> (<|spk:S|> text <|eot|>)*``; a system event is ``<|system|> <|eot|>`` (no speaker). The
text tokens were cleaned, PII-masked and encoded by preprocess with the same functions ``chat`` applies to typed
messages, so a prompt built from these turns is exactly what the model sees in a chat.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass
class Turn:
    speaker: str | None   # pseudonym ("S1"), None for a system event
    ids: list[int]        # the whole turn as encoded: speaker token (if any), text, <|eot|>
    target: bool          # carries loss in the processed data (mask = 1)

    @property
    def text_ids(self) -> list[int]:
        return self.ids[1:-1] if self.speaker is not None else []


@dataclass
class Item:
    """One reply to predict: the session's turns before it (oldest first) and the real reply."""

    context: list[Turn]
    reply: Turn


def sessions(tokens: np.ndarray, mask: np.ndarray, bos: int, eot: int, speakers: dict[int, str]) -> list[list[Turn]]:
    """The token stream cut into sessions of turns (tokens outside any turn are ignored)."""
    toks = np.asarray(tokens).tolist()
    msk = np.asarray(mask)
    out: list[list[Turn]] = []
    current: list[Turn] = []
    start = None
    for i, t in enumerate(toks):
        if t == bos:
            if current:
                out.append(current)
            current, start = [], None
        elif start is None:
            start = i
        if t == eot and start is not None:
            first = toks[start]
            speaker = speakers.get(first)
            current.append(Turn(speaker, toks[start:i + 1], bool(msk[start:i + 1].any())))
            start = None
    if current:
        out.append(current)
    return out


def reply_items(sess: list[list[Turn]], bot: str | None, min_context: int = 1) -> list[Item]:
    """Target turns (of speaker ``bot``; any speaker when None) with at least ``min_context`` turns before them."""
    items = []
    for turns in sess:
        for j, turn in enumerate(turns):
            if j >= min_context and turn.target and turn.speaker is not None and (bot is None or turn.speaker == bot):
                items.append(Item(turns[:j], turn))
    return items


def pick(items: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items chosen with a fixed seed, in corpus order (all of them when there are fewer; none for 0)."""
    if n <= 0:
        return []
    if n >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]
