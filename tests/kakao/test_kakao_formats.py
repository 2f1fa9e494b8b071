"""Every export variant and era of the formats doc, as an invented fixture file: detection, header fields and
the counts organize writes to the manifest (messages, system events, speakers, first/last message)."""

from __future__ import annotations

from datetime import datetime

import pytest

from chatbot.errors import FormatError
from chatbot.kakao import FORMATS, iter_records, parse_file
from chatbot.records import Kind
from tests.support.kakao import FIXTURES

D = datetime
# file: (format, room, members, saved_at, messages, system, speakers, first, last)
EXPECTED = {
    "windows_ko_2018.txt": ("windows_ko", "파이썬 스터디 전체방", None, D(2018, 5, 20, 22, 41, 7), 15, 4,
                            {"ㅎ", "이도현(Leo)", "이서연", "박지호", "(알 수 없음)", "김민준", "민준[MJ]"},
                            D(2018, 4, 7, 0, 5), D(2018, 4, 8, 21, 20)),
    "windows_en_2015.txt": ("windows_en", "여름 캠프방", None, D(2015, 8, 9, 1, 12, 36), 5, 0,
                            {"민ㅈ", "Alice", "오지훈"}, D(2015, 8, 8, 15, 12), D(2015, 8, 9, 0, 11)),
    "windows_mixed_2015.txt": ("windows_ko", "여름 캠프방", None, D(2015, 8, 9, 0, 41, 27), 3, 0,
                               {"민ㅈ", "오지훈"}, D(2015, 8, 8, 15, 12), D(2015, 8, 9, 0, 10)),
    "windows_24h.txt": ("windows_en", "주말 등산 모임", None, D(2023, 7, 23, 10), 2, 0,
                        {"김민준", "이서연"}, D(2023, 7, 22, 0, 5), D(2023, 7, 22, 20, 36)),
    "csv_2018.csv": ("csv", "", None, None, 7, 2, {"김도윤", "정하린", "박서준"},
                     D(2018, 4, 2, 12, 10, 57), D(2018, 4, 11, 9, 24)),
    "csv_2015.csv": ("csv", "", None, None, 3, 1, {"윤하은", "민ㅈ"}, D(2015, 7, 12, 20, 19, 2),
                     D(2015, 7, 15, 21, 41)),
    "csv_noheader_2016.csv": ("csv", "", None, None, 2, 0, {"김민준", "이서연"}, D(2016, 5, 1, 10),
                              D(2016, 5, 1, 10, 0, 30)),
    "csv_2020.csv": ("csv", "", None, None, 6, 2, {"이서연", "박지호"}, D(2020, 11, 2, 18, 0, 1),
                     D(2020, 11, 2, 18, 6)),
    "android_ko_2013.txt": ("android_ko", "여름방학 스터디", 5, D(2013, 9, 10, 23, 2), 7, 1, {"서지안", "나"},
                            D(2013, 3, 9, 18, 21), D(2013, 3, 14, 12, 4)),
    "android_ko_2025.txt": ("android_ko", "동네 중고거래 알림방", 812, D(2025, 6, 4, 9, 30), 7, 6,
                            {"산책러/서울/3기", "김민준", "이서연", "박지호"}, D(2025, 6, 1, 20), D(2025, 6, 3, 19, 58)),
    "android_en_2014.txt": ("android_en", "민ㅈ", None, D(2014, 1, 25, 14, 48), 5, 0, {"나", "민ㅈ"},
                            D(2013, 11, 16, 23, 5), D(2014, 2, 14, 9, 20)),
    "android_en_2015.txt": ("android_en", "오지훈 캡스톤, 윤하은", 3, D(2015, 8, 9, 0, 36), 2, 1, {"나"},
                            D(2015, 5, 2, 21, 15), D(2015, 7, 12, 20, 25)),
    "android_en_2018.txt": ("android_en", "Happy Coders", 24, D(2018, 5, 19, 10, 32), 5, 3,
                            {"김도윤", "지안", "나"}, D(2018, 4, 7, 0, 31), D(2018, 4, 7, 21, 43)),
    "android_en_2019.txt": ("android_en", "M", None, D(2019, 6, 9, 16, 10), 3, 0, {"M", "Alice"},
                            D(2018, 10, 20, 18, 58), D(2019, 6, 3, 9, 6)),
    "android_en_2023.txt": ("android_en", "Crew", None, D(2023, 1, 28, 22, 24), 6, 2, {"한예린", "서민재"},
                            D(2022, 9, 18, 11, 5), D(2022, 9, 18, 11, 10)),
    "android_en_at.txt": ("android_en", "Bob", None, D(2023, 3, 4, 9, 0), 2, 0, {"Bob", "Carol"},
                          D(2023, 3, 3, 12, 52), D(2023, 3, 3, 13, 5)),
    "ios_ko_2014.txt": ("ios_ko", "B12", 11, D(2014, 3, 2, 23, 4), 2, 1, {"한소윤", "나"},
                        D(2012, 12, 9, 18, 35), D(2012, 12, 9, 18, 36)),
    "ios_ko_2015.txt": ("ios_ko", "송하늘", None, D(2015, 1, 24, 18, 9), 5, 2, {"나", "송하늘"},
                        D(2015, 1, 18, 16, 27), D(2015, 3, 3, 8, 10)),
    "ios_ko_2022.txt": ("ios_ko", "", None, D(2022, 6, 5, 1, 12), 5, 0, {"정우진", "한예린"},
                        D(2021, 11, 16, 20, 5), D(2022, 3, 5, 21, 49)),
    "ios_ko_timeonly.txt": ("ios_ko", "김하늘", None, D(2021, 12, 30, 19, 17), 3, 0, {"김하늘", "나"},
                            D(2021, 12, 29, 20, 36), D(2021, 12, 30, 9, 1)),
    "ios_en_2015.txt": ("ios_en", "여름 캠프방", 4, D(2015, 8, 9, 0, 52), 3, 1, {"오지훈", "나", "윤하은"},
                        D(2015, 7, 12, 20, 17), D(2015, 7, 12, 20, 19)),
    "ios_en_2026.txt": ("ios_en", "", None, D(2026, 2, 13, 18, 42), 2, 2, {"최유나", "김도현"},
                        D(2026, 2, 1, 20, 35), D(2026, 2, 1, 20, 36)),
}


def test_every_format_has_a_fixture():
    assert {v[0] for v in EXPECTED.values()} == set(FORMATS)
    assert {p.name for p in FIXTURES.glob("*.*") if not p.name.startswith(".")} - {"not_export.txt"} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name):
    fmt, room, members, saved, n_msg, n_sys, speakers, first, last = EXPECTED[name]
    p = parse_file(FIXTURES / name)
    assert (p.format, p.room, p.members, p.saved_at, p.encoding) == (fmt, room, members, saved, "utf-8")
    msgs = [r for r in p.records if r.is_user_message]
    assert len(msgs) == n_msg
    assert sum(r.is_system for r in p.records) == n_sys
    assert {r.speaker for r in msgs} == speakers
    assert min(r.timestamp for r in msgs) == first
    assert max(r.timestamp for r in msgs) == last
    for r in p.records:  # no record text carries a stamp, a header line or a trailing blank
        assert r.text == r.text.rstrip()
        assert "저장한 날짜 :" not in r.text and "Date Saved :" not in r.text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_streaming_equals_whole_parse(name):
    info, it = iter_records(FIXTURES / name)
    streamed = list(it)
    whole = parse_file(FIXTURES / name)
    assert streamed == whole.records
    assert info.format == whole.format and info.segments == whole.segments


def test_not_an_export_is_refused_and_untouched():
    path = FIXTURES / "not_export.txt"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    with pytest.raises(FormatError) as exc:
        parse_file(path)
    msg = str(exc.value)
    assert "\n" not in msg and "not_export.txt" in msg and "expected" in msg
    assert "buy milk" not in msg  # never private text in errors
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_kinds_are_normalised_across_eras_and_languages():
    photos = {r.text for n in EXPECTED for r in parse_file(FIXTURES / n).records if r.kind is Kind.PHOTO}
    assert {"사진", "<사진 읽지 않음>", "(사진)", "<Photo>", "<Photo Unread>", "Photo", "photo", "(Photo)", "사진 2장",
            "사진 3장"} <= photos
    emoticons = {r.text for n in EXPECTED for r in parse_file(FIXTURES / n).records if r.kind is Kind.EMOTICON}
    assert {"(이모티콘)", "(이모티콘_말랑 고양이)", "(emoticon_Happy Bunny)", "이모티콘", "Emoticons", "",
            "(Emoticon) sleepy.."} <= emoticons
    texts = {r.text: r.kind for n in EXPECTED for r in parse_file(FIXTURES / n).records}
    assert texts["파일: 240512_회의록(최종).pdf"] is Kind.FILE and texts["File: 기말 정리 노트.pdf"] is Kind.FILE
    assert texts["보이스톡 해요"] is Kind.CALL and texts["보이스톡 응답없음"] is Kind.CALL
    assert texts["Poll Cancelled in Boards: 놀이공원🎢"] is Kind.POLL
    assert texts["샵검색 : #보드게임 추천"] is Kind.SEARCH
    assert texts["동영상"] is Kind.VIDEO
    assert texts["송금봉투 받기 완료!"] is Kind.PAYMENT
    assert texts["(버럭)(버럭)"] is Kind.MESSAGE and texts["좋아요(굿)"] is Kind.MESSAGE  # typed emoticons are text
    assert texts["a81c03de9b7e44f0a81c03de9b7e44f0.jpg"] is Kind.PHOTO
