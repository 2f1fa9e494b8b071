"""preprocess with a pretrained base: the base tokenizer, the layout of chatbot/base/layout.py, stats.json's base
record — and the ids inference's prompt builder makes equal what preprocess wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chatbot.base import tokenizer_hash
from chatbot.base.layout import BaseLayout
from chatbot.config import PreprocessConfig
from chatbot.data.preprocess import BaseTokenizer, build, check_outputs
from chatbot.errors import ChatbotError
from chatbot.records import Kind
from tests.support.base import make_tokenizer
from tests.support.preprocess import chat_room, rec

# two invented sessions a day apart; A talks most (S1), B second (S2)
ROOM = [
    rec(0, "가나", "안녕 뭐해?"), rec(1, "다라", "집에 가는 중 ㅋㅋ 010-1234-5678"), rec(2, "가나", "사진", Kind.PHOTO),
    rec(3, "다라", "<|im_end|> 장난이야 </s>"), rec(4, "가나", "배고파 치킨 시켜 먹자"),
    rec(1440, "다라", "주말에 영화 보러 갈래?"), rec(1441, "가나", "좋아 일곱 시에 만나"),
]
SESSIONS = [
    [("S1", "안녕 뭐해?", False), ("S2", "집에 가는 중 ㅋㅋ <phone>", True), ("S1", "<photo>", False),
     ("S2", "<|im_end|> 장난이야 </s>", True), ("S1", "배고파 치킨 시켜 먹자", True)],
    [("S2", "주말에 영화 보러 갈래?", False), ("S1", "좋아 일곱 시에 만나", True)],
]


def pcfg(**kw) -> PreprocessConfig:
    return PreprocessConfig(merge_same_speaker=False, val_fraction=0.5, min_target_chars=2, **kw)


def read(out: Path, split: str, dtype: str) -> tuple[list[int], list[int]]:
    return (np.fromfile(out / f"{split}.bin", dtype=dtype).astype(np.int64).tolist(),
            np.fromfile(out / f"{split}_loss_mask.bin", dtype=np.uint8).tolist())


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_preprocess_writes_the_base_layout_and_prompts_match_it(tmp_path: Path, family: str) -> None:
    tok = make_tokenizer(family)
    stats = build([list(ROOM)], pcfg(), tmp_path, base=BaseTokenizer("tiny/" + family, "v1", tok))
    lay = BaseLayout(tok)
    assert stats["base"] == {"id": "tiny/" + family, "revision": "v1", "tokenizer_hash": tokenizer_hash(tok),
                             "layout": "base-1"}
    assert stats["tokenizer_hash"] == tokenizer_hash(tok) and stats["dtype"] == "uint16"
    assert check_outputs(tmp_path, full=True) is None
    for split, session in zip(("train", "val"), SESSIONS):
        ids, mask = read(tmp_path, split, stats["dtype"])
        want_ids, want_mask = lay.encode_session(session)
        assert ids == want_ids and mask == want_mask
        # the prompt inference builds for each turn = exactly the ids preprocess wrote before that turn's text
        for k in range(1, len(session)):
            history = [(spk, text) for spk, text, _ in session[:k]]
            prompt = lay.prompt(history, session[k][0])
            assert ids[: len(prompt)] == prompt
            assert ids[len(prompt): len(prompt) + len(lay.enc(session[k][1])) + 1] == lay.enc(session[k][1]) + [lay.eos_id]
    # special-token look-alikes typed in chat never became control tokens
    train_ids, _ = read(tmp_path, "train", stats["dtype"])
    assert train_ids.count(lay.eos_id) == len(SESSIONS[0])
    preview = json.loads((tmp_path / "preview.json").read_text(encoding="utf-8"))
    assert any("<phone>" in s["text"] and "⟦" in s["text"] for s in preview["samples"])


def test_base_preprocess_keeps_pseudonyms_masking_and_targets_of_a_realistic_room(tmp_path: Path) -> None:
    tok = make_tokenizer("qwen3")
    scratch = build([chat_room(seed=3)], PreprocessConfig(vocab_size=600, val_fraction=0.2), tmp_path / "s")
    based = build([chat_room(seed=3)], PreprocessConfig(vocab_size=600, val_fraction=0.2), tmp_path / "b",
                  base=BaseTokenizer("tiny", "", tok))
    for key in ("persona", "messages", "pii", "sessions", "turns", "target_turns", "windows"):
        assert based[key] == scratch[key], key
    ids, mask = read(tmp_path / "b", "train", based["dtype"])
    text = BaseLayout(tok).decode(ids)
    assert "010-" not in text and "<phone>" in text and "S1: " in text
    assert based["target_tokens"]["train"] == sum(mask)
    # every target span ends with eos
    edges = np.flatnonzero(np.diff(np.r_[np.asarray(mask), 0]) == -1)
    assert all(ids[i] == tok.eos_token_id for i in edges)


def test_big_vocabulary_is_written_as_uint32(tmp_path: Path) -> None:
    tok = make_tokenizer("qwen2")
    tok.add_tokens([f"w{i}x" for i in range(65_600)])
    stats = build([list(ROOM)], pcfg(), tmp_path, base=BaseTokenizer("big", "", tok))
    assert stats["dtype"] == "uint32" and stats["vocab_size"] > 65_536
    ids, _ = read(tmp_path, "train", "uint32")
    assert ids == BaseLayout(tok).encode_session(SESSIONS[0])[0]


def test_preprocess_entry_point_follows_model_base(exports, tmp_path: Path, capsys) -> None:
    from chatbot.data import preprocess as pp
    from tests.support.base import cached_base

    cfg, _state = exports
    cfg.train.model.base = str(tmp_path / "missing")
    with pytest.raises(ChatbotError, match="model.base folder .* does not exist"):
        pp.preprocess(cfg)
    assert not (cfg.processed_dir / "stats.json").exists()
    cfg.train.model.base = str(cached_base("llama"))
    pp.preprocess(cfg)
    stats = json.loads((cfg.processed_dir / "stats.json").read_text(encoding="utf-8"))
    assert stats["base"]["id"] == cfg.train.model.base and stats["base"]["layout"] == "base-1"
    assert pp.stale_reason(cfg) is None
    cfg.train.model.base_revision = "other"
    assert pp.stale_reason(cfg) == "exports or settings changed"
    cfg.train.model.base, cfg.train.model.base_revision = "", ""
    assert pp.stale_reason(cfg) == "exports or settings changed"
    pp.preprocess(cfg)
    assert "base" not in json.loads((cfg.processed_dir / "stats.json").read_text(encoding="utf-8"))
