"""Helpers for the preprocess tests: invented records, small configs, reading the outputs back.

Every name, number and sentence here is invented.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from chatbot.config import PiiConfig, PreprocessConfig
from chatbot.data.tokenizer import load_tokenizer
from chatbot.records import Kind, Record
from chatbot.tokens import BOS, EOT, SPEAKER_TOKENS

T0 = datetime(2024, 3, 1, 9, 0)
NAMES = ("박서진", "윤채원", "오태민", "나")  # invented nicknames; "나" is the exporter (self_name)
WORDS = ("오늘", "내일", "점심", "저녁", "뭐", "먹을까", "영화", "볼래", "좋아", "싫어", "ㅋㅋㅋ", "ㅠㅠ", "진짜",
         "대박", "회사", "끝나고", "연락해", "알았어", "그래", "고마워", "비와", "우산", "챙겨", "주말에", "산책")


def rec(minute: float, speaker: str, text: str, kind: Kind = Kind.MESSAGE) -> Record:
    return Record(T0 + timedelta(minutes=minute), speaker, text, kind)


def small_cfg(**over) -> PreprocessConfig:
    """A tiny-vocabulary config (fast tokenizer training); keyword overrides, ``pii`` may be a dict."""
    if isinstance(over.get("pii"), dict):
        over["pii"] = PiiConfig(**over["pii"])
    return replace(PreprocessConfig(vocab_size=600, val_fraction=0.2), **over)


def chat_room(n_sessions: int = 12, seed: int = 0, names=NAMES, turns=(4, 9)) -> list[Record]:
    """Sessions a day apart; bursts, media, a system event, PII and name mentions sprinkled in."""
    rng = random.Random(seed)
    out: list[Record] = []
    for s in range(n_sessions):
        minute = s * 24 * 60
        for i in range(rng.randint(*turns)):
            who = names[(i + rng.randint(0, 1)) % len(names)]
            for _ in range(rng.choice((1, 1, 2))):
                words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
                r = rng.random()
                if r < 0.05:
                    out.append(rec(minute, who, "사진", Kind.PHOTO))
                elif r < 0.08:
                    out.append(rec(minute, who, f"{words} 010-{rng.randint(2000, 9999)}-{rng.randint(1000, 9999)}"))
                elif r < 0.11:
                    out.append(rec(minute, who, f"@{rng.choice(names[:3])} {words}"))
                elif r < 0.13:
                    out.append(rec(minute, who, f"{names[rng.randint(0, 2)]} 어디야? {words}"))
                else:
                    out.append(rec(minute, who, words))
                minute += rng.choice((0, 1, 2))
            minute += rng.choice((1, 4, 10))
        if s == 2:
            out.append(rec(minute, names[1], f"{names[1]}님이 나갔습니다.", Kind.LEAVE))
    return out


def read_outputs(out_dir: Path) -> dict:
    """stats, tokenizer and per-split arrays (tokens, mask, starts) of a processed folder."""
    out_dir = Path(out_dir)
    stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(str(out_dir / "tokenizer.json"))
    data = {"stats": stats, "tok": tok}
    for split in ("train", "val"):
        data[split] = {
            "tokens": np.fromfile(out_dir / f"{split}.bin", dtype=stats["dtype"]).astype(np.int64),
            "mask": np.fromfile(out_dir / f"{split}_loss_mask.bin", dtype=np.uint8),
            "starts": np.fromfile(out_dir / f"{split}_starts.bin", dtype=np.uint64),
        }
    return data


def parse_stream(tok, tokens: np.ndarray) -> list[list[dict]]:
    """Re-read a token stream into sessions of turns: {speaker, start, end (exclusive, after EOT), text ids}.

    Independent of the writer: it only knows the layout ``<|bos|> (<|spk:Sx|>? text <|eot|>)*``.
    """
    bos, eot = tok.token_to_id(BOS), tok.token_to_id(EOT)
    spk = {tok.token_to_id(t): t[len("<|spk:"):-2] for t in SPEAKER_TOKENS}
    sessions: list[list[dict]] = []
    i, n = 0, len(tokens)
    turn = None
    while i < n:
        t = int(tokens[i])
        if turn is None:
            if t == bos:
                sessions.append([])
                i += 1
                continue
            turn = {"start": i, "speaker": spk.get(t), "ids": []}
            if t in spk:
                i += 1
                continue
        if t == eot:
            turn["end"] = i + 1
            sessions[-1].append(turn)
            turn = None
        else:
            assert t != bos and t not in spk, f"unexpected special token {t} inside a turn at {i}"
            turn["ids"].append(t)
        i += 1
    assert turn is None, "stream ends inside a turn"
    return sessions


def output_bytes(out_dir: Path, exclude=("speakers.json",)) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in Path(out_dir).iterdir() if p.is_file() and p.name not in exclude}
