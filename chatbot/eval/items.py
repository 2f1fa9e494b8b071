"""Turns and reply items read back from the processed token streams (data/processed/{train,val}.bin).

From scratch (:func:`sessions`): a session is ``<|bos|> (<|spk:S|> text <|eot|>)*``; a system event is
``<|system|> <|eot|>`` (no speaker). A pretrained base (:func:`base_sessions`, the layout of chatbot/base/layout.py):
``[bos]`` when the tokenizer has one, then per turn ``enc("S1: ") + enc(text) + [eos]``; a system event has no
prefix. The text tokens were cleaned, PII-masked and encoded by preprocess with the same functions ``chat`` applies
to typed messages, so a prompt built from these turns is exactly what the model sees in a chat. This module is the
one place where the two layouts differ for ``eval``; everything downstream handles :class:`Turn` only.
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
    prefix: int = 1       # leading ids that name the speaker (1 speaker token; a base's ``enc("S1: ")``; 0 = none)

    @property
    def text_ids(self) -> list[int]:
        return self.ids[self.prefix:-1] if self.speaker is not None else []

    def encoded(self, pairs: bool):
        """The turn as the Responder takes it: the ids, or (speaker prefix, text + eos) for a pretrained base."""
        return (self.ids[:self.prefix], self.ids[self.prefix:]) if pairs else self.ids


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


def base_sessions(tokens: np.ndarray, mask: np.ndarray, bos: int | None, eos: int,
                  prefixes: dict[str, list[int]]) -> list[list[Turn]]:
    """The token stream of a pretrained base's processed data cut into turns at ``eos``; a turn's speaker is the
    pseudonym whose ``enc("S1: ")`` ids (``prefixes``) open it (none: a system event). A ``bos`` opens a session;
    a tokenizer without one (Qwen) leaves no session boundary in the stream, so the whole split is one session
    (callers bound the context with ``reply_items(max_context=...)``)."""
    toks = np.asarray(tokens).tolist()
    msk = np.asarray(mask)
    ordered = sorted(((tuple(ids), name) for name, ids in prefixes.items() if ids), key=lambda x: -len(x[0]))
    out: list[list[Turn]] = []
    current: list[Turn] = []
    start = 0
    ends = np.flatnonzero(np.asarray(tokens) == eos).tolist()
    for end in ends:
        if bos is not None and toks[start] == bos:
            if current:
                out.append(current)
            current = []
            start += 1
        ids = toks[start:end + 1]
        speaker, n_pre = None, 0
        for pre, name in ordered:
            if tuple(ids[:len(pre)]) == pre and len(ids) > len(pre):
                speaker, n_pre = name, len(pre)
                break
        current.append(Turn(speaker, ids, bool(msk[start:end + 1].any()), n_pre))
        start = end + 1
    if current:
        out.append(current)
    return out


def reply_items(sess: list[list[Turn]], bot: str | None, min_context: int = 1,
                max_context: int | None = None) -> list[Item]:
    """Target turns (of speaker ``bot``; any speaker when None) with at least ``min_context`` turns before them
    (and at most ``max_context`` of them kept, the newest; None = the whole session so far)."""
    items = []
    for turns in sess:
        for j, turn in enumerate(turns):
            if j >= min_context and turn.target and turn.speaker is not None and (bot is None or turn.speaker == bot):
                first = 0 if max_context is None else max(0, j - max_context)
                items.append(Item(turns[first:j], turn))
    return items


def pick(items: list[Item], n: int, seed: int) -> list[Item]:
    """``n`` items chosen with a fixed seed, in corpus order (all of them when there are fewer; none for 0)."""
    if n <= 0:
        return []
    if n >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]
