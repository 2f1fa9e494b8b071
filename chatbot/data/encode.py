"""Encoding the splits: texts to ids (:class:`FastEncoder`, exactly the tokenizer's ids), the token layout of a
from-scratch model (:func:`scratch_chunks`) or a pretrained base (:func:`base_chunks`), and :func:`write_split`,
which streams either into a split's token, loss-mask and window-start files chunk by chunk."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import chain, repeat
from collections import deque
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..config import PreprocessConfig
from ..formats import processed
from ..tokens import BOS, EOT, MAX_SPEAKERS, MEDIA_TOKENS, PII_TOKENS, speaker_token
from . import conversation as conv
from .outputs import TempOut, discard
from .tokenizer import special_id

TOKENIZER_SAMPLE_CHARS = 2_500_000  # train the BPE on at most ~this many characters of the train split
CHUNK_TURNS = 32_768  # turns encoded per batch

_SEGMENT_RE = re.compile("(\ue000[a-z_]+\ue001)")


@dataclass
class SplitOut:
    """What encoding one split produced: counts for stats.json and its temp files."""

    tokens: int = 0
    target_tokens: int = 0
    windows: int = 0
    sessions: int = 0
    turns: int = 0
    target_turns: int = 0
    files: dict = field(default_factory=dict)  # output name -> temp path


def tokenizer_corpus(train: Sequence[conv.Session]) -> Iterator[str]:
    """Train-split turn texts without placeholder markers, sampled evenly to about TOKENIZER_SAMPLE_CHARS."""
    total = sum(len(turn.text) for session in train for turn in session.turns)
    step = max(1, -(-total // TOKENIZER_SAMPLE_CHARS))
    batch: list[str] = []
    counter = 0
    for session in train:
        for turn in session.turns:
            counter += 1
            if counter % step or turn.speaker < 0:
                continue
            text = turn.text
            if "\ue000" in text:
                text = "\n".join(seg for seg in _SEGMENT_RE.split(text)[::2] if seg)
            batch.append(text)
            if len(batch) >= 2048:
                yield "\n".join(batch)
                batch = []
    if batch:
        yield "\n".join(batch)


def encode_texts(tok, texts: list[str]) -> list[list[int]]:
    """Marked texts → ids (placeholders as their token ids, everything typed as plain text), in two batch calls."""
    tok.encode_special_tokens = True
    out: list[list[int] | None] = [None] * len(texts)
    plain = [position for position, text in enumerate(texts) if "\ue000" not in text]
    if plain:
        encoded = tok.encode_batch([texts[position] for position in plain], add_special_tokens=False)
        for position, enc in zip(plain, encoded):
            out[position] = enc.ids
    if len(plain) < len(texts):
        marked = [position for position, text in enumerate(texts) if "\ue000" in text]
        pieces = [_SEGMENT_RE.split(texts[position]) for position in marked]
        segs = [seg for split_text in pieces for seg in split_text[::2] if seg]
        seg_ids = iter(tok.encode_batch(segs, add_special_tokens=False)) if segs else iter(())
        for position, split_text in zip(marked, pieces):
            ids: list[int] = []
            for part_index, seg in enumerate(split_text):
                if part_index % 2:
                    ids.append(special_id(tok, f"<|{seg[1:-1]}|>"))
                elif seg:
                    ids.extend(next(seg_ids).ids)
            out[position] = ids
    return out  # type: ignore[return-value]


class FastEncoder:
    """Exactly :func:`~chatbot.data.tokenizer.encode_marked`, several times faster on Korean chat.

    The byte-level pre-tokenizer splits text with the GPT-2 regex before BPE sees it, and BPE is applied to each
    piece independently; so ids(text) = concat(ids(piece)). For text made only of ASCII, Hangul syllables and
    compatibility jamo (almost every chat message) the split is reproduced here with Python's ``re`` (identical
    character classes), each distinct piece is encoded once by the real tokenizer and cached in numpy arrays, and
    a chunk's ids are gathered with numpy. Any other text (emoji, CJK, …) goes through the tokenizer itself.
    Tests compare both paths on random text.
    """

    _LETTERS = "A-Za-z\uac00-\ud7a3\u3131-\u318e"
    PIECE = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?[{_LETTERS}]+| ?[0-9]+| ?[^\s{_LETTERS}0-9]+|\s+(?!\S)|\s+")
    UNSAFE = re.compile(r"[^\t\n\x20-\x7e\uac00-\ud7a3\u3131-\u318e\ue000\ue001]")
    MAX_PIECES = 2_000_000  # cache bound (memory); the cache restarts when full
    SEP = "\x1c"  # batch separator: a control character, so never inside a text taking the joined path

    def __init__(self, tok):
        self.tok = tok
        tok.encode_special_tokens = True
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
        self.w_off = np.zeros(0, dtype=np.int64)
        self.w_len = np.zeros(0, dtype=np.int64)
        self.w_tok = np.zeros(0, dtype=np.int64)
        self._add([self.SEP], [[]])  # zero tokens
        self.sep_row = self.index[self.SEP]
        for name in (*MEDIA_TOKENS, *PII_TOKENS):
            marker = f"\ue000{name}\ue001"
            if self.tok.token_to_id(f"<|{name}|>") is not None:
                self._add([marker], [[special_id(self.tok, f"<|{name}|>")]])

    def _add(self, words: list[str], ids: list[list[int]]) -> None:
        base = len(self.index)
        self.index.update(zip(words, range(base, base + len(words))))
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.w_off = np.concatenate([self.w_off, len(self.w_tok) + np.cumsum(lens) - lens])
        self.w_len = np.concatenate([self.w_len, lens])
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(lens.sum()))
        self.w_tok = np.concatenate([self.w_tok, flat])

    def _pieces(self, text: str) -> list[str]:
        if "\ue000" not in text:
            return self.PIECE.findall(text)
        out: list[str] = []
        for part_index, seg in enumerate(_SEGMENT_RE.split(text)):
            if part_index % 2:
                out.append(seg)
            elif seg:
                out.extend(self.PIECE.findall(seg))
        return out

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids per text as lengths, all ids concatenated) for a batch of marked texts.

        Marker-free texts without surrounding whitespace are split by one regex pass over the whole batch joined
        with SEP: between two such texts SEP is a piece of its own, so the split is the same as text by text.
        """
        n_texts = len(texts)
        unsafe = self.UNSAFE.search
        joined: list[int] = []
        single: list[int] = []
        slow: list[int] = []
        for position, text in enumerate(texts):
            if unsafe(text) is not None:
                slow.append(position)
            elif text and "\ue000" not in text and not text[0].isspace() and not text[-1].isspace():
                joined.append(position)
            else:
                single.append(position)
        lens = np.zeros(n_texts, dtype=np.int64)
        parts: list[tuple[np.ndarray, np.ndarray]] = []  # (text indices, ids of those texts in order)
        fast = joined + single
        if fast:
            sep = self.SEP
            pieces = self.PIECE.findall(sep.join([texts[position] for position in joined])) if joined else []
            for number, position in enumerate(single):
                if joined or number:
                    pieces.append(sep)
                pieces.extend(self._pieces(texts[position]))
            rows = np.fromiter(map(self.index.get, pieces, repeat(-1)), dtype=np.int64, count=len(pieces))
            miss = np.flatnonzero(rows < 0)
            if miss.size:
                new = list(dict.fromkeys(pieces[number] for number in miss.tolist()))
                if len(self.index) + len(new) > self.MAX_PIECES:
                    self._reset()
                    new = [word for word in dict.fromkeys(pieces) if word not in self.index]
                    miss = np.arange(len(pieces))
                self._add(new, [encoding.ids for encoding in self.tok.encode_batch(new, add_special_tokens=False)])
                get = self.index.__getitem__
                rows[miss] = np.fromiter((get(pieces[number]) for number in miss.tolist()), dtype=np.int64,
                                         count=miss.size)
            del pieces
            seps = np.flatnonzero(rows == self.sep_row)
            assert seps.size == len(fast) - 1
            piece_lens = self.w_len[rows]
            cum = np.concatenate([[0], np.cumsum(piece_lens)])
            lens[np.asarray(fast, dtype=np.int64)] = (cum[np.append(seps, len(rows))]
                                                       - cum[np.concatenate([[0], seps + 1])])
            total = int(cum[-1])
            gather = np.repeat(self.w_off[rows] - cum[:-1], piece_lens) + np.arange(total, dtype=np.int64)
            parts.append((np.asarray(fast, dtype=np.int64), self.w_tok[gather]))
        if slow:
            encs = encode_texts(self.tok, [texts[position] for position in slow])
            idx = np.asarray(slow, dtype=np.int64)
            lens[idx] = np.fromiter(map(len, encs), dtype=np.int64, count=len(encs))
            parts.append((idx, np.fromiter(chain.from_iterable(encs), dtype=np.int64, count=int(lens[idx].sum()))))
        if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(n_texts)):
            return lens, parts[0][1]
        flat = np.empty(int(lens.sum()), dtype=np.int64)
        dest_start = np.cumsum(lens) - lens
        for idx, ids in parts:
            lengths = lens[idx]
            src_start = np.cumsum(lengths) - lengths
            flat[np.repeat(dest_start[idx] - src_start, lengths) + np.arange(len(ids), dtype=np.int64)] = ids
        return lens, flat


@dataclass
class Chunk:
    """Up to CHUNK_TURNS consecutive turns of a split: their texts and per-turn layout facts."""

    texts: list[str]
    first: np.ndarray  # bool: the turn opens its session (gets <|bos|>)
    spk: np.ndarray  # int: pseudonym number, -1 = system turn (no speaker token)
    elig: np.ndarray  # bool: an eligible target turn (loss on its text and <|eot|>)
    sess_first: np.ndarray  # int: split-wide index of the first turn of the turn's session


def plan_chunks(sessions: Iterable[conv.Session], target: int | None, pcfg: PreprocessConfig) -> Iterator[Chunk]:
    """Chunks of whole sessions, made lazily (one chunk's texts in memory at a time)."""
    chunks: list[Chunk] = []  # 0 or 1 chunk waiting to be yielded
    texts: list[str] = []
    spk: list[int] = []
    first: list[bool] = []
    elig: list[bool] = []
    sess_first: list[int] = []
    n_turns = 0

    def cut() -> None:
        chunks.append(Chunk(list(texts), np.array(first, dtype=bool), np.array(spk, dtype=np.int64),
                             np.array(elig, dtype=bool), np.array(sess_first, dtype=np.int64)))
        for lst in (texts, spk, first, elig, sess_first):
            lst.clear()

    for session in sessions:
        base = n_turns
        for index, turn in enumerate(session.turns):
            texts.append(turn.text)
            spk.append(turn.speaker)
            first.append(index == 0)
            elig.append(conv.is_target(turn, index, target, pcfg))
            sess_first.append(base)
            n_turns += 1
        if len(texts) >= CHUNK_TURNS:
            cut()
            yield chunks.pop()
    if texts:
        cut()
        yield chunks.pop()


class Windows:
    """A split's window starts, written chunk by chunk: every ``sample_stride``-th eligible target turn of the
    split (numbered split-wide) gives a window starting ``context_turns`` turns before it, but not before its
    session's first turn (a session never spans two chunks, so both are in the same chunk)."""

    def __init__(self, pcfg: PreprocessConfig, out: TempOut) -> None:
        self.stride, self.context, self.out = pcfg.sample_stride, pcfg.context_turns, out
        self.turns = self.targets = self.windows = 0  # so far in the split

    def add(self, chunk: Chunk, turn_offsets: np.ndarray) -> None:
        """``turn_offsets``: split-wide token offset of each of the chunk's turns (its BOS for a first turn)."""
        eligible = np.flatnonzero(chunk.elig)
        picked = eligible[(self.targets + np.arange(eligible.size)) % self.stride == 0]
        start_turn = np.maximum(chunk.sess_first[picked] - self.turns, picked - self.context)
        starts = np.unique(turn_offsets[start_turn]).astype(np.uint64)
        self.out.write(starts)
        self.windows += int(starts.size)
        self.targets += int(eligible.size)
        self.turns += len(chunk.first)


def write_split(split: str, sessions: Sequence[conv.Session], encoded: Iterator[tuple], pcfg: PreprocessConfig,
                 dtype, out_dir: Path) -> SplitOut:
    """Stream one split into temp ``.bin`` files chunk by chunk (numpy arrays; never a Python list of all tokens).

    ``encoded`` yields ``(chunk, ids, mask, turn_starts)`` per chunk in order: the chunk's token ids and mask bytes
    and the offset of each of its turns within them (see :func:`scratch_chunks`, :func:`base_chunks`).
    """
    res = SplitOut(sessions=len(sessions))
    suffixes = (processed.TOKENS, processed.MASK, processed.STARTS)
    outs = {suffix: TempOut(out_dir, processed.split_name(split, suffix)) for suffix in suffixes}
    try:
        offset = 0  # tokens written so far
        windows = Windows(pcfg, outs[processed.STARTS])
        for chunk, toks, mask, turn_starts in encoded:
            outs[processed.TOKENS].write(toks.astype(dtype))
            outs[processed.MASK].write(mask)
            res.target_tokens += int(mask.sum(dtype=np.int64))
            windows.add(chunk, turn_starts + offset)
            offset += int(toks.size)
        res.tokens = offset
        res.turns, res.target_turns, res.windows = windows.turns, windows.targets, windows.windows
        for suffix, out in outs.items():
            res.files[processed.split_name(split, suffix)] = out.close()
    except BaseException:
        discard(outs.values())
        raise
    return res


def scratch_chunks(sessions: Sequence[conv.Session], tok, encode_chunks, target: int | None,
                    pcfg: PreprocessConfig) -> Iterator[tuple]:
    """The from-scratch layout, per chunk for :func:`write_split`.

    Per session ``<|bos|>`` then per turn ``<|spk:Sn|> text <|eot|>`` (a system turn has no speaker token). Mask 1
    on the text and ``<|eot|>`` of eligible target turns, 0 elsewhere. ``encode_chunks`` maps a list of text
    lists to ``(lengths, ids)`` pairs in order (in this process or in worker processes).
    """
    bos, eot = special_id(tok, BOS), special_id(tok, EOT)
    spk_ids = np.array([special_id(tok, speaker_token(conv.pseudonym(number))) for number in range(MAX_SPEAKERS + 1)],
                       dtype=np.int64)
    waiting: deque[Chunk] = deque()  # chunks handed to the encoder, in order, until their ids come back

    def texts_of_chunks() -> Iterator[list[str]]:
        for planned in plan_chunks(sessions, target, pcfg):
            waiting.append(planned)
            yield planned.texts

    for lens, flat in encode_chunks(texts_of_chunks()):
        chunk = waiting.popleft()
        chunk.texts = []  # release as we go
        lens = lens.astype(np.int64, copy=False)
        n_body = int(flat.size)
        first, spk, elig = chunk.first, chunk.spk, chunk.elig
        has_spk = spk >= 0
        pre = first.astype(np.int64) + has_spk
        tot = pre + lens + 1
        ends = np.cumsum(tot)
        starts = ends - tot
        toks = np.empty(int(ends[-1]), dtype=np.int64)
        toks[starts[first]] = bos
        spk_pos = (starts + first)[has_spk]
        toks[spk_pos] = spk_ids[spk[has_spk]]
        if n_body:
            body_cum = np.cumsum(lens) - lens
            toks[np.repeat(starts + pre - body_cum, lens) + np.arange(n_body)] = flat
        toks[ends - 1] = eot
        mask = np.repeat(elig.astype(np.uint8), tot)
        mask[starts[first]] = 0
        mask[spk_pos] = 0
        if pcfg.learn_turn_taking:  # who speaks next: the speaker token of every turn after another turn
            mask[(starts + first)[has_spk & ~first]] = 1
        yield chunk, toks, mask, starts


def base_chunks(sessions: Sequence[conv.Session], layout, target: int | None,
                 pcfg: PreprocessConfig) -> Iterator[tuple]:
    """The layout of a pretrained base (:mod:`chatbot.base.layout`), per chunk for :func:`write_split`: per
    session ``[bos]`` (when the tokenizer has one), per turn ``enc("Sn: ") + enc(text) + [eos]`` (a system event has
    no prefix); mask 1 on ``enc(text) + [eos]`` of eligible target turns. Texts are encoded by the tokenizer's
    (multi-threaded) batch encoder, pieces joined with numpy."""
    from ..base.layout import render

    start = layout.session_start()
    prefixes = [layout.prefix(conv.pseudonym(number)) for number in range(MAX_SPEAKERS + 1)] + [layout.prefix(None)]
    eos = [layout.eos_id]
    for chunk in plan_chunks(sessions, target, pcfg):
        bodies = layout.enc_batch([render(text) for text in chunk.texts])
        pres = [(start if first else []) + prefixes[speaker]
                for first, speaker in zip(chunk.first.tolist(), chunk.spk.tolist())]
        pre_len = np.fromiter(map(len, pres), dtype=np.int64, count=len(pres))
        body_len = np.fromiter(map(len, bodies), dtype=np.int64, count=len(bodies)) + 1
        pieces = chain.from_iterable(chain.from_iterable(zip(pres, bodies, repeat(eos))))
        toks = np.fromiter(pieces, dtype=np.int64, count=int(pre_len.sum() + body_len.sum()))
        lengths = np.stack([pre_len, body_len], axis=1).reshape(-1)
        flags = np.stack([np.zeros_like(chunk.elig), chunk.elig], axis=1).reshape(-1).astype(np.uint8)
        mask = np.repeat(flags, lengths)
        tot = pre_len + body_len
        chunk.texts = []
        yield chunk, toks, mask, np.cumsum(tot) - tot
