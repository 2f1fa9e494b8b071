"""Sessions, bursts, filters, pseudonyms and the time split — the pure steps of preprocess."""

from __future__ import annotations

from collections import Counter

import pytest

from chatbot.data import conversation as conv
from chatbot.data.pii import PiiMasker
from chatbot.data.tokenizer import placeholder_marker
from chatbot.records import Kind

from tests.support.preprocess import rec, small_cfg


def _turns(records, **over):
    cfg = small_cfg(**over)
    speakers = conv.rank_speakers([records], cfg.max_speakers)
    dropped: Counter = Counter()
    msgs = conv.filter_records(records, cfg, speakers, PiiMasker(cfg.pii, speakers), dropped)
    return conv.build_sessions(msgs, cfg), speakers, dropped


def test_session_split_exactly_at_the_gap():
    records = [rec(0, "가람", "첫 메시지"), rec(60, "다온", "정확히 60분 뒤"), rec(121, "가람", "61분 뒤")]
    sessions, _, _ = _turns(records, session_gap_minutes=60)
    assert [len(s.turns) for s in sessions] == [2, 1]
    assert sessions[1].turns[0].text == "61분 뒤"


def test_burst_merge_exactly_at_the_gap():
    records = [rec(0, "가람", "하나"), rec(3, "가람", "셋 뒤"), rec(7, "가람", "넷 뒤"), rec(8, "다온", "응")]
    sessions, _, _ = _turns(records, merge_gap_minutes=3)
    turns = sessions[0].turns
    assert [t.text for t in turns] == ["하나\n셋 뒤", "넷 뒤", "응"]
    assert turns[0].messages == 2
    sessions, _, _ = _turns(records, merge_same_speaker=False)
    assert len(sessions[0].turns) == 4


def test_burst_merge_respects_max_merged_chars():
    a, b = "가" * 10, "나" * 9
    records = [rec(0, "가람", a), rec(1, "가람", b)]  # merged = 10 + newline + 9 = 20 chars
    assert len(_turns(records, max_merged_chars=20)[0][0].turns) == 1
    assert len(_turns(records, max_merged_chars=19)[0][0].turns) == 2


def test_a_different_speaker_breaks_the_burst():
    records = [rec(0, "가람", "a1"), rec(0, "다온", "b1"), rec(0, "가람", "a2")]
    assert [t.text for t in _turns(records)[0][0].turns] == ["a1", "b1", "a2"]


def test_drop_reasons_add_up_and_low_signal_is_sensible():
    records = [
        rec(0, "가람", "ㅋㅋㅋ"),  # kept: laughter is signal
        rec(1, "다온", "^^"),  # kept
        rec(2, "가람", "👍👍"),  # kept
        rec(3, "다온", "..."),  # low_signal
        rec(4, "가람", "https://example.com/x !!"),  # low_signal (a lone placeholder + punctuation)
        rec(5, "다온", "   "),  # empty
        rec(6, "가람", "가" * 50),  # too_long (max 40)
        rec(7, "다온", "사진", Kind.PHOTO),  # kept as <|photo|>
        rec(8, "가람", "삭제된 메시지입니다.", Kind.DELETED),  # deleted
        rec(9, "다온", "다온님이 들어왔습니다.", Kind.JOIN),  # system
        rec(10, "", "누군가 : 보낸이 없음"),  # no_speaker
        rec(11, "가람", "?"),  # too_short (min 2)
    ]
    sessions, _, dropped = _turns(records, max_message_chars=40, min_message_chars=2, merge_same_speaker=False)
    kept = [t.text for s in sessions for t in s.turns]
    assert kept == ["ㅋㅋㅋ", "^^", "👍👍", placeholder_marker("photo")]
    assert dropped == Counter(low_signal=2, empty=1, too_long=1, deleted=1, system=1, no_speaker=1, too_short=1)
    assert len(kept) + sum(dropped.values()) == len(records)
    assert set(dropped) <= set(conv.DROP_REASONS)


def test_media_and_system_as_tokens_or_dropped():
    records = [rec(0, "가람", "이거 봐"), rec(1, "가람", "사진", Kind.PHOTO), rec(2, "다온", "가람님이 나갔습니다.", Kind.LEAVE)]
    sessions, _, dropped = _turns(records, media="token", system="token")
    turns = sessions[0].turns
    assert turns[0].text == "이거 봐\n" + placeholder_marker("photo")
    assert turns[1].speaker == conv.SYSTEM_SPEAKER and turns[1].text == placeholder_marker("system")
    assert "가람" not in turns[1].text
    sessions, _, dropped = _turns(records, media="drop", system="drop")
    assert [t.text for t in sessions[0].turns] == ["이거 봐"]
    assert dropped == Counter(media=1, system=1)


def test_text_length_counts_a_placeholder_as_one():
    assert conv.text_length("ab " + placeholder_marker("url")) == 4
    assert conv.has_signal("ㅋ") and not conv.has_signal(placeholder_marker("url") + " ?!")


def test_pseudonyms_rank_by_messages_then_first_appearance():
    records = [rec(0, "라온", "x"), rec(1, "가람", "x"), rec(2, "가람", "x"), rec(3, "다온", "x"), rec(4, "라온", "x"),
               rec(5, "마루", "x"), rec(6, "다온", "나갔습니다", Kind.LEAVE)]
    ranks = conv.rank_speakers([records], max_speakers=3)
    assert ranks == {"라온": 1, "가람": 2, "다온": 3, "마루": 0}  # ties: first message first; past 3 → S0
    assert conv.rank_speakers([list(reversed(records))], 3) == ranks  # input order is irrelevant


def test_split_by_time_puts_the_latest_sessions_in_val():
    records = [rec(i * 100, "가람", f"세션{i}") for i in range(10)]
    sessions, _, _ = _turns(records, session_gap_minutes=10)
    shuffled = sessions[5:] + sessions[:5]
    train, val = conv.split_sessions(shuffled, 0.2)
    assert [s.turns[0].text for s in val] == ["세션8", "세션9"]
    assert [s.turns[0].text for s in train] == [f"세션{i}" for i in range(8)]
    assert conv.split_sessions(sessions, 0.0)[1] == []
    assert len(conv.split_sessions(sessions[:2], 0.9)[0]) == 1  # never all sessions


def test_a_single_session_is_cut_at_a_turn_boundary():
    records = [rec(i, "가람" if i % 2 else "다온", f"말{i}") for i in range(10)]
    sessions, _, _ = _turns(records)
    train, val = conv.split_sessions(sessions, 0.2)
    assert [t.text for t in val[0].turns] == ["말8", "말9"]
    assert len(train[0].turns) == 8


def test_resolve_target():
    speakers = {"가람": 1, "다온": 2, "마루": 0}
    assert conv.resolve_target("room", speakers) is None
    assert conv.resolve_target("다온", speakers) == 2
    assert conv.resolve_target("S1", speakers) == 1
    with pytest.raises(ValueError, match="unknown"):
        conv.resolve_target("없는사람", speakers)
    with pytest.raises(ValueError, match="overflow"):
        conv.resolve_target("마루", speakers)


def test_val_counts_only_sessions_with_a_target_turn():
    records = []
    for day in range(6):  # the persona (다온) is silent in the last two sessions
        records += [rec(day * 1000, "가람", f"질문{day}"), rec(day * 1000 + 1, "다온" if day < 4 else "마루", f"답{day}")]
    sessions, speakers, _ = _turns(records)
    cfg = small_cfg()
    target = speakers["다온"]
    useful = lambda s: any(conv.is_target(t, i, target, cfg) for i, t in enumerate(s.turns))  # noqa: E731
    train, val = conv.split_sessions(sessions, 0.25, useful=useful)
    assert [s.turns[0].text for s in val] == ["질문3", "질문4", "질문5"]  # one useful session + the later ones
    assert [s.turns[0].text for s in train] == ["질문0", "질문1", "질문2"]
    train, val = conv.split_sessions(sessions, 0.25)  # without the predicate: plain latest sessions
    assert [s.turns[0].text for s in val] == ["질문4", "질문5"]
