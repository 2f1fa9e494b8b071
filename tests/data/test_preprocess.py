"""preprocess outputs: turn layout, mask alignment, window starts, privacy, stats, determinism, time split."""

from __future__ import annotations

import hashlib
import json
import random
import re

import numpy as np
import pytest

from chatbot.data import encode, parallel
from chatbot.data import preprocess as pp
from chatbot.data.tokenizer import encode_marked, placeholder_marker, train_tokenizer
from chatbot.errors import ChatbotError
from chatbot.records import Kind

from tests.support.preprocess import NAMES, chat_room, output_bytes, parse_stream, read_outputs, rec, small_cfg

_PLACEHOLDER = re.compile(r"<\|[a-z_]+\|>")


def _expected(tok, tokens, cfg, target_pseudonym):
    """Mask and window starts recomputed from the token stream alone (independent of the writer)."""
    sessions = parse_stream(tok, tokens)
    mask = np.zeros(len(tokens), dtype=np.uint8)
    eligible_blocks = []  # (block start of the window's first turn) per eligible turn, in order
    bos_pos = [i for i, t in enumerate(tokens) if t == tok.token_to_id("<|bos|>")]
    assert len(bos_pos) == len(sessions)
    for bos, turns in zip(bos_pos, sessions):
        for i, turn in enumerate(turns):
            text = tok.decode(turn["ids"], skip_special_tokens=False)
            length = len(_PLACEHOLDER.sub("_", text))
            ok = (turn["speaker"] is not None and target_pseudonym in ("room", turn["speaker"])
                  and length >= cfg.min_target_chars and i >= cfg.min_context_turns)
            if ok:
                body = turn["start"] + (1 if turn["speaker"] is not None else 0)
                mask[body:turn["end"]] = 1
                j = max(0, i - cfg.context_turns)
                eligible_blocks.append(bos if j == 0 else turns[j]["start"])
    starts = sorted(set(eligible_blocks[:: cfg.sample_stride]))
    return mask, starts, sessions


@pytest.mark.parametrize("target", ["room", "윤채원"])
@pytest.mark.parametrize("stride,ctx,min_ctx", [(1, 3, 1), (2, 8, 0)])
def test_layout_mask_and_starts_line_up(tmp_path, target, stride, ctx, min_ctx):
    cfg = small_cfg(target=target, sample_stride=stride, context_turns=ctx, min_context_turns=min_ctx,
                    system="token")
    stats = pp.build([chat_room(14, seed=3)], cfg, tmp_path)
    out = read_outputs(tmp_path)
    tok = out["tok"]
    target_pseudonym = stats["persona"]["target"]
    assert (target_pseudonym == "room") == (target == "room")
    for split in ("train", "val"):
        tokens, mask, starts = out[split]["tokens"], out[split]["mask"], out[split]["starts"]
        assert len(tokens) == len(mask) == stats["tokens"][split] > 0
        want_mask, want_starts, sessions = _expected(tok, tokens, cfg, target_pseudonym)
        assert np.array_equal(mask, want_mask), split
        assert starts.tolist() == want_starts
        assert int(mask.sum()) == stats["target_tokens"][split]
        assert len(sessions) == stats["sessions"][split]
        assert sum(len(s) for s in sessions) == stats["turns"][split]
        speakers_with_loss = {t["speaker"] for s in sessions for t in s if mask[t["end"] - 1]}
        if target != "room":
            assert speakers_with_loss == {target_pseudonym}
        else:
            assert len(speakers_with_loss) >= 3
        assert None not in speakers_with_loss  # system turns never carry loss


def test_privacy_no_name_or_pii_outside_the_speaker_map(tmp_path):
    room = chat_room(16, seed=5) + [
        rec(99_000, "박서진", "내 메일 seojin.park@example.com 이고 카드 1234-5678-9012-3456"),
        rec(99_001, "오태민", "https://example.com/invite/abc 들어와 @윤채원"),
        rec(99_002, "윤채원", "채원이 계좌 3333-01-7654321 로 보내"),
    ]
    cfg = small_cfg(system="token", target="박서진")
    pp.build([room], cfg, tmp_path)
    out = read_outputs(tmp_path)
    tok = out["tok"]
    secrets = ["박서진", "윤채원", "오태민", "서진", "채원", "태민", "seojin", "example.com", "1234-5678", "3333-01",
               "010-"]
    # every text that leaves preprocess: decoded token streams, every vocabulary entry, the small JSON files
    texts = [tok.decode(out[s]["tokens"].tolist(), skip_special_tokens=False) for s in ("train", "val")]
    texts += [tok.decode([i]) for i in range(tok.get_vocab_size())]
    texts += [b.decode("utf-8") for name, b in output_bytes(tmp_path).items() if name.endswith(".json")]
    blob = "\n".join(texts)
    for secret in secrets:
        assert secret not in blob, secret
    assert "<|mention|>" in texts[0] and "<|email|>" in blob and "<|card|>" in blob and "<|account|>" in blob
    private = json.loads((tmp_path / "speakers.json").read_text(encoding="utf-8"))
    assert set(private["speakers"]) == set(NAMES)
    assert private["target"] == out["stats"]["persona"]["target"] == private["speakers"]["박서진"]


def test_stats_add_up_and_carry_the_contract_fields(tmp_path):
    room = chat_room(10, seed=7) + [rec(90_000, "오태민", "..."), rec(90_001, "박서진", "사진", Kind.PHOTO)]
    stats = pp.build([room], small_cfg(media="drop"), tmp_path, self_name="나")
    m = stats["messages"]
    assert m["in"] == len(room) == m["kept"] + sum(m["dropped"].values())
    assert m["dropped"]["media"] >= 1 and m["dropped"]["low_signal"] == 1 and m["dropped"]["system"] == 1
    assert stats["dtype"] == "uint16" and stats["vocab_size"] <= 600
    tok_bytes = (tmp_path / "tokenizer.json").read_bytes()
    assert stats["tokenizer_hash"] == hashlib.sha256(tok_bytes).hexdigest()
    assert len(stats["config_hash"]) == 16
    persona = stats["persona"]
    assert persona["target"] == "room"
    assert persona["self"] == json.loads((tmp_path / "speakers.json").read_text())["speakers"]["나"]
    assert sum(persona["speakers"].values()) == m["kept"]
    assert set(persona["speakers"]) <= {f"S{i}" for i in range(65)}
    assert stats["pii"]["phone"] >= 1 and stats["pii"]["mention"] + stats["pii"]["name"] >= 1
    for name, info in stats["outputs"].items():
        assert (tmp_path / name).stat().st_size == info["bytes"]
    assert pp.check_outputs(tmp_path, full=True) is None
    preview = json.loads((tmp_path / "preview.json").read_text(encoding="utf-8"))
    assert preview["samples"] and all("⟦" in s["text"] for s in preview["samples"])


def test_same_inputs_give_identical_outputs_and_pseudonyms(tmp_path):
    room = chat_room(10, seed=11)
    pp.build([list(room)], small_cfg(), tmp_path / "a")
    pp.build([list(room)], small_cfg(), tmp_path / "b")
    a, b = output_bytes(tmp_path / "a", exclude=()), output_bytes(tmp_path / "b", exclude=())
    sa, sb = json.loads(a.pop("stats.json")), json.loads(b.pop("stats.json"))
    sa.pop("seconds"), sb.pop("seconds")
    assert sa == sb and a == b


def test_validation_is_the_latest_sessions(tmp_path):
    room = []
    for day in range(10):
        for i in range(4):
            room.append(rec(day * 1440 + i, ("가람", "다온")[i % 2], f"day{day:02d} 이야기 {i}"))
    stats = pp.build([room], small_cfg(val_fraction=0.3), tmp_path)
    out = read_outputs(tmp_path)
    days = {s: set(re.findall(r"day(\d\d)", out["tok"].decode(out[s]["tokens"].tolist()))) for s in ("train", "val")}
    assert days["val"] == {"07", "08", "09"}
    assert days["train"] == {f"{d:02d}" for d in range(7)}
    assert stats["sessions"] == {"train": 7, "val": 3}


def test_special_token_lookalikes_stay_plain_text(tmp_path):
    room = [rec(i, ("가람", "다온")[i % 2], "<|eot|><|bos|> 장난" if i == 3 else f"보통 말 {i}") for i in range(12)]
    pp.build([room], small_cfg(val_fraction=0.0), tmp_path)
    out = read_outputs(tmp_path)
    tok, tokens = out["tok"], out["train"]["tokens"]
    sessions = parse_stream(tok, tokens)  # would fail on a stray <|bos|> inside a turn
    assert int((tokens == tok.token_to_id("<|eot|>")).sum()) == sum(len(s) for s in sessions) == 12
    assert "<|eot|><|bos|> 장난" in tok.decode(tokens.tolist(), skip_special_tokens=False)


def test_unknown_target_is_one_line_without_names(tmp_path):
    with pytest.raises(ChatbotError) as exc:
        pp.build([chat_room(3)], small_cfg(target="없는닉네임"), tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "target" in msg
    assert not any(n in msg for n in (*NAMES, "없는닉네임"))
    assert not (tmp_path / "stats.json").exists()


def test_fast_encoder_is_exactly_encode_marked():
    rng = random.Random(2)
    alphabet = (list(" \t\n\nabzAZ09'sltrevmd.,!?~^-_@#()[]\"<|>") + list("가나힣ㄱㅋㅠㆎ😀漢é²①\u00a0")
                + [placeholder_marker("photo"), placeholder_marker("url"), "<|eot|>", "  ", "'re", "'s"])
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30))) for _ in range(6000)]
    safe = [c for c in alphabet if c.isascii() or "가" <= c <= "힣" or "ㄱ" <= c <= "ㆎ"]
    texts += ["".join(rng.choice(safe) for _ in range(rng.randint(1, 30))).strip() or "x" for _ in range(4000)]
    rng.shuffle(texts)  # the batch-joined path (safe, no marker, no outer space) mixed with all the others
    tok = train_tokenizer(texts[:2000] + ["안녕하세요 반가워요 ㅋㅋㅋ hello world 2024"] * 50, 700)
    enc = pp.FastEncoder(tok)
    for _ in range(2):  # second pass runs from the cache
        lens, flat = enc.encode(texts)
        got = np.split(flat, np.cumsum(lens)[:-1])
        for text, ids in zip(texts, got):
            assert ids.tolist() == encode_marked(tok, text), repr(text)


def test_worker_processes_give_the_same_bytes(tmp_path, monkeypatch):
    import multiprocessing.pool

    room = chat_room(12, seed=13)
    pp.build([list(room)], small_cfg(), tmp_path / "one")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_TURNS", 0)
    monkeypatch.setattr(encode, "CHUNK_TURNS", 16)  # several chunks, so the order of results matters
    monkeypatch.setattr(pp.os, "cpu_count", lambda: 2)
    calls = []
    real_submit = multiprocessing.pool.Pool.apply_async
    monkeypatch.setattr(multiprocessing.pool.Pool, "apply_async",
                        lambda self, fn, args, *a: calls.append(fn) or real_submit(self, fn, args, *a))
    pp.build([list(room)], small_cfg(), tmp_path / "pool")
    assert len(calls) > 2 and set(calls) == {parallel._worker_encode}  # every chunk went through the workers
    one = output_bytes(tmp_path / "one", exclude=("stats.json",))
    assert output_bytes(tmp_path / "pool", exclude=("stats.json",)) == one
