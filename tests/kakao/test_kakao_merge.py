"""merge_timelines: overlapping exports of one room (same or different platforms) -> one timeline."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chatbot.kakao import parse_file
from chatbot.kakao.merge import merge_timelines
from chatbot.records import Kind, Record
from tests.support.kakao import Ev, conversation, render, write

T0 = datetime(2018, 4, 7, 23, 40)
PEOPLE = ["이도현(Leo)", "김민준", "이서연"]
EVENTS = conversation(T0, 240, PEOPLE, seed=3)


def exported(tmp_path, fmt, events, name, **kw):
    return parse_file(write(tmp_path / name, render(fmt, "스터디 모임", events, datetime(2018, 6, 1), **kw))).records


def timeline(records):
    """(minute, speaker, text-or-kind) of user messages: what must agree whatever the platforms."""
    return [(r.timestamp.replace(second=0), r.speaker, r.text if r.kind is Kind.MESSAGE else r.kind.value)
            for r in records if r.is_user_message]


def expected(events):
    return [(e.ts.replace(second=0, microsecond=0), e.speaker, "photo" if e.text == "사진" else e.text)
            for e in events if not e.join]


def test_overlapping_exports_of_one_platform(tmp_path):
    a = exported(tmp_path, "windows_ko", EVENTS[:150], "a.txt")
    b = exported(tmp_path, "windows_ko", EVENTS[90:], "b.txt")
    assert timeline(merge_timelines([a, b])) == expected(EVENTS)
    assert timeline(merge_timelines([b, a])) == expected(EVENTS)


@pytest.mark.parametrize("fmts", [("windows_ko", "android_en"), ("android_ko", "csv"), ("ios_ko", "windows_ko"),
                                  ("csv", "ios_en", "android_ko")])
def test_overlap_across_platforms_gives_the_original_timeline(tmp_path, fmts):
    cuts = [(0, 140), (80, 200), (60, 240)]
    parts = [exported(tmp_path, f, EVENTS[lo:hi], f"{i}_{f}.txt", self_name="이도현(Leo)")
             for i, (f, (lo, hi)) in enumerate(zip(fmts, cuts))]
    hi = max(h for _, h in cuts[:len(fmts)])
    got = timeline(merge_timelines(parts, self_name="나"))
    # the exporter's 회원님/you/You ("나") is recognised as the nickname the Windows/CSV export shows
    assert got == expected(EVENTS[:hi])


def test_self_name_kept_when_no_export_shows_the_real_nickname(tmp_path):
    a = exported(tmp_path, "android_ko", EVENTS[:120], "a.txt", self_name="이도현(Leo)")
    b = exported(tmp_path, "ios_ko", EVENTS[100:], "b.txt", self_name="이도현(Leo)")
    merged = merge_timelines([a, b], self_name="나")
    assert {r.speaker for r in merged} == {"나", "김민준", "이서연"}
    assert len(timeline(merged)) == len(EVENTS)


def test_repeated_messages_are_kept(tmp_path):
    t = datetime(2021, 3, 1, 12, 0)
    ev = [Ev(t, "김민준", "ㅋㅋ"), Ev(t + timedelta(seconds=10), "김민준", "ㅋㅋ"), Ev(t + timedelta(seconds=20), "이서연", "ㅋㅋ"),
          Ev(t + timedelta(minutes=1), "이서연", "밥 먹자")]
    a = exported(tmp_path, "windows_ko", ev[:3], "a.txt")  # all three "ㅋㅋ"
    b = exported(tmp_path, "android_ko", ev[1:], "b.txt")  # two of them + one more
    merged = merge_timelines([a, b])
    assert [r.text for r in merged] == ["ㅋㅋ", "ㅋㅋ", "ㅋㅋ", "밥 먹자"]
    # within one export, the same text twice in a minute is two messages (never collapsed)
    assert len(merge_timelines([a])) == 3


def test_media_placeholders_match_across_languages(tmp_path):
    t = datetime(2021, 3, 1, 12, 0)
    ev = [Ev(t, "김민준", "사진"), Ev(t + timedelta(minutes=1), "이서연", "예쁘다")]
    a = exported(tmp_path, "windows_ko", ev, "a.txt")  # 사진
    b = exported(tmp_path, "android_en", ev, "b.txt")  # <Photo>
    merged = merge_timelines([a, b])
    assert [r.kind for r in merged] == [Kind.PHOTO, Kind.MESSAGE]


def test_system_events_are_not_duplicated(tmp_path):
    t = datetime(2021, 3, 1, 12, 0)
    ev = [Ev(t, "김민준", "안녕"), Ev(t + timedelta(minutes=5), "박지호", join=True),
          Ev(t + timedelta(minutes=6), "박지호", "반가워")]
    a = exported(tmp_path, "windows_ko", ev, "a.txt")  # join without a time of its own
    b = exported(tmp_path, "android_ko", ev, "b.txt")
    merged = merge_timelines([a, b])
    assert [r.kind for r in merged] == [Kind.MESSAGE, Kind.JOIN, Kind.MESSAGE]


def test_disjoint_exports_are_concatenated_in_time_order(tmp_path):
    a = exported(tmp_path, "windows_ko", EVENTS[150:], "a.txt")
    b = exported(tmp_path, "windows_ko", EVENTS[:100], "b.txt")
    merged = merge_timelines([a, b])
    assert timeline(merged) == expected(EVENTS[:100] + EVENTS[150:])


def test_empty_and_single_inputs():
    r = Record(datetime(2020, 1, 1), "a", "b", Kind.MESSAGE)
    assert merge_timelines([]) == [] and merge_timelines([[], []]) == []
    assert merge_timelines([[r, r]]) == [r, r]


def test_a_line_glued_by_one_platform_does_not_duplicate_the_message():
    t = datetime(2021, 3, 1, 12, 0)
    win = [Record(t, "김민준", "안녕\n채팅방 이름을 바꿨습니다", Kind.MESSAGE), Record(t, "이서연", "응", Kind.MESSAGE)]
    andr = [Record(t, "김민준", "안녕", Kind.MESSAGE), Record(t, "", "채팅방 이름을 바꿨습니다", Kind.SYSTEM),
            Record(t, "이서연", "응", Kind.MESSAGE)]
    merged = merge_timelines([win, andr])
    assert [r.text for r in merged if r.is_user_message] == ["안녕\n채팅방 이름을 바꿨습니다", "응"]
