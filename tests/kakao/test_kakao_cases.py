"""The 40 edge cases of ../shared/docs/kakao-export-formats.md §12, one test each (numbers in the names), plus
zip / encoding / error handling. Every line is invented."""

from __future__ import annotations

import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from chatbot.errors import FormatError
from chatbot.kakao import parse_file
from chatbot.kakao.classify import parse_title
from chatbot.records import Kind

WIN_KO = "테스트방 님과 카카오톡 대화\r\n저장한 날짜 : 2023-01-01 10:00:00\r\n\r\n"
AND_KO = "\ufeff테스트방 3 카카오톡 대화\r\n저장한 날짜 : 2023년 5월 1일 오후 1:00\n\n\r\n"
AND_EN = "\ufeffKakaoTalk Chats with Bob\r\nDate Saved : May 19, 2018, 10:32 AM\n\n\r\n"
IOS_KO = "\ufeffTalk_2022.6.4 21:37-1.txt\n저장한 날짜 : 2022. 6. 5. 오전 1:12\n\n\n\n"
IOS_EN = "\ufeffTalk_2026.2.13 18:42-1.txt\nDate Saved : Feb 13, 2026 at 18:42\n\n\n\n"


def parse(tmp_path: Path, text: str, name: str = "export.txt", encoding: str = "utf-8"):
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return parse_file(p, self_name="나")


def crlf(*lines: str) -> str:
    return "".join(x + "\r\n" for x in lines)


def users(px):
    return [r for r in px.records if r.is_user_message]


# ------------------------------------------------------------------------------------------------ Windows 1-9
def test_01_windows_am_12_is_midnight(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[이서연] [오전 12:05] 아직 안 자?"))
    assert p.records[0].timestamp == datetime(2023, 2, 9, 0, 5)


def test_02_windows_pm_12_is_noon(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[박지호] [오후 12:30] 점심 먹자"))
    assert p.records[0].timestamp == datetime(2023, 2, 9, 12, 30)


def test_03_windows_english_12h_date_from_english_separator(tmp_path):
    p = parse(tmp_path, "방 with KakaoTalk Chats\r\nDate Saved : 2015-08-09 01:12:36\r\n\r\n" + crlf(
        "--------------- Saturday, August 8, 2015 ---------------", "[Alice] [11:58 PM] good night",
        "[Alice] [12:01 AM] still here"))
    assert p.format == "windows_en"
    assert [r.timestamp for r in p.records] == [datetime(2015, 8, 8, 23, 58), datetime(2015, 8, 8, 0, 1)]


def test_04_windows_mixed_locale_english_header_korean_body(tmp_path):
    p = parse(tmp_path, "여름 캠프방 with KakaoTalk Chats\r\nDate Saved : 2015-08-09 00:41:27\r\n\r\n" + crlf(
        "--------------- 2015년 8월 8일 토요일 ---------------", "[민ㅈ] [오후 3:12] 안녕"))
    assert (p.format, p.room) == ("windows_ko", "여름 캠프방")
    assert p.records[0].timestamp == datetime(2015, 8, 8, 15, 12)


def test_05_windows_24h(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[김민준] [20:36] 도착했어"))
    assert p.records[0].timestamp == datetime(2023, 2, 9, 20, 36) and p.records[0].text == "도착했어"


def test_06_windows_system_line_takes_previous_time(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[김민준] [오후 9:10] 어서 와요", "이도현(Leo)님이 들어왔습니다.",
                                      "[김민준] [오후 9:12] 반가워요"))
    assert [(r.kind, r.speaker, r.timestamp.hour, r.timestamp.minute) for r in p.records] == [
        (Kind.MESSAGE, "김민준", 21, 10), (Kind.JOIN, "이도현(Leo)", 21, 10), (Kind.MESSAGE, "김민준", 21, 12)]
    assert p.records[0].text == "어서 와요"  # not glued as a continuation


def test_07_windows_unknown_sender(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[(알 수 없음)] [오후 10:03] ㅋㅋ"))
    assert (p.records[0].speaker, p.records[0].kind) == ("(알 수 없음)", Kind.MESSAGE)


def test_08_windows_bracket_continuation(tmp_path):
    p = parse(tmp_path, WIN_KO + "--------------- 2023년 2월 9일 목요일 ---------------\r\n"
              "[김민준] [오후 1:10] 문자 왔어\n[Web발신]\n택배 도착 예정\r\n")
    assert len(p.records) == 1 and p.records[0].text == "문자 왔어\n[Web발신]\n택배 도착 예정"


def test_09_windows_bracket_in_nickname(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[민준[MJ]] [오후 1:00] 안녕"))
    assert (p.records[0].speaker, p.records[0].text) == ("민준[MJ]", "안녕")


# ------------------------------------------------------------------------------------------------ continuations 10-12
def test_10_continuation_lines_with_colon(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2023년 4월 2일 오후 3:10", "2023년 4월 2일 오후 3:10, 김민준 : 준비물\n우산 : 각자\n간식 : 이서연",
                                      "2023년 4월 2일 오후 3:11, 이서연 : 네"))
    assert [r.text for r in p.records] == ["준비물\n우산 : 각자\n간식 : 이서연", "네"]


def test_11_body_that_looks_like_a_header(tmp_path):
    p = parse(tmp_path, AND_KO + crlf(
        "2021년 5월 1일 오후 9:00", "2021년 5월 1일 오후 9:00, 박지호 : [박지호,이서연,김민준 (3명) 님과 카카오톡 대화]방 분석 결과",
        "2021년 5월 1일 오후 9:01, 박지호 : 결과 공유\n박지호,이서연 님과 카카오톡 대화\n재밌네"))
    assert p.format == "android_ko" and p.segments == [0]
    assert [r.text for r in p.records] == ["[박지호,이서연,김민준 (3명) 님과 카카오톡 대화]방 분석 결과",
                                           "결과 공유\n박지호,이서연 님과 카카오톡 대화\n재밌네"]


def test_12_blank_line_inside_body_then_day_break(tmp_path):
    p = parse(tmp_path, IOS_KO + "\n".join([
        "2022년 3월 4일 금요일", "2022. 3. 4. 오후 7:43, 정우진 : 정산하기를 요청했어요.", "", "요청인원 : 4명", "", "",
        "2022년 3월 5일 토요일", "2022. 3. 5. 오전 9:00, 정우진 : 입금 부탁해요", ""]))
    assert [r.text for r in p.records] == ["정산하기를 요청했어요.\n\n요청인원 : 4명", "입금 부탁해요"]
    assert p.records[0].kind is Kind.PAYMENT


# ------------------------------------------------------------------------------------------------ Android 13-24
def test_13_android_noon(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2013년 5월 3일 정오", "2013년 5월 3일 정오, 회원님 : 점심 뭐 먹지?",
                                      "2013년 5월 3일 오후 12:00, 서지안 : 콜"))
    assert [(r.timestamp, r.speaker) for r in p.records] == [(datetime(2013, 5, 3, 12, 0), "나"),
                                                             (datetime(2013, 5, 3, 12, 0), "서지안")]


def test_14_android_day_header_is_not_a_record(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2023년 2월 11일 오후 1:30", "2023년 2월 11일 오후 1:30, 이서연 : 오늘 저녁 뭐 먹을까?"))
    assert len(p.records) == 1 and p.records[0].text == "오늘 저녁 뭐 먹을까?"


def test_15_android_empty_sender(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2021년 1월 1일 오전 12:05", "2021년 1월 1일 오전 12:05,  : 시스템 알림"))
    r = p.records[0]
    assert (r.speaker, r.text, r.timestamp) == ("", "시스템 알림", datetime(2021, 1, 1, 0, 5))
    assert r.is_system


def test_16_android_empty_body_is_an_emoticon(tmp_path):
    p = parse(tmp_path, AND_EN + crlf("April 7, 2018, 9:40 PM", "April 7, 2018, 9:40 PM, 지안 : ",
                                      "April 7, 2018, 9:41 PM, 지안 :"))
    assert [(r.speaker, r.text, r.kind) for r in p.records] == [("지안", "", Kind.EMOTICON)] * 2


def test_17_android_en_time_first_glued(tmp_path):
    p = parse(tmp_path, AND_EN + crlf("11:05PM, November 16, 2013", "11:05PM, November 16, 2013, you : lunch tmrw?"))
    r = p.records[0]
    assert (p.format, r.timestamp, r.speaker) == ("android_en", datetime(2013, 11, 16, 23, 5), "나")


def test_18_android_en_time_first_lower_case(tmp_path):
    p = parse(tmp_path, AND_EN + crlf("9:15pm, May 2, 2015", "9:15pm, May 2, 2015, you : see you soon"))
    assert (p.records[0].timestamp, p.records[0].speaker) == (datetime(2015, 5, 2, 21, 15), "나")


def test_19_android_en_day_first(tmp_path):
    p = parse(tmp_path, AND_EN + crlf("3 June 2019, 9:05 AM", "3 June 2019, 9:05 AM, Alice : Bonjour",
                                      "3 June 2019, 9:07 pm, Alice : Bonsoir"))
    assert [r.timestamp for r in p.records] == [datetime(2019, 6, 3, 9, 5), datetime(2019, 6, 3, 21, 7)]


def test_20_english_at_style_narrow_nbsp(tmp_path):
    p = parse(tmp_path, AND_EN + crlf("March 3, 2023 at 12:52\u202fp.m.", "March 3, 2023 at 12:52\u202fp.m., Bob : ok"))
    assert (p.records[0].timestamp, p.records[0].text) == (datetime(2023, 3, 3, 12, 52), "ok")


def test_21_nickname_with_slashes(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2025년 6월 1일 오후 8:00", "2025년 6월 1일 오후 8:00, 산책러/서울/3기 : 내일 봬요"))
    assert (p.records[0].speaker, p.records[0].text) == ("산책러/서울/3기", "내일 봬요")


def test_22_nim_doubling(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2020년 4월 1일 오후 2:00", "2020년 4월 1일 오후 2:00, 선생님님이 들어왔습니다."))
    assert (p.records[0].kind, p.records[0].speaker) == (Kind.JOIN, "선생님")


def test_23_old_leave_text(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2013년 3월 9일 오후 6:20", "2013년 3월 9일 오후 6:20, 문성호님이 퇴장했습니다.",
                                      "2013년 3월 9일 오후 6:21, 강태윤님이 나갔습니다."))
    assert [(r.kind, r.speaker) for r in p.records] == [(Kind.LEAVE, "문성호"), (Kind.LEAVE, "강태윤")]


def test_24_open_chat_notice_after_join(tmp_path):
    notice = ("You may temporarily be banned from using the service if other members report you for sending "
              "inappropriate messages.")
    p = parse(tmp_path, AND_EN + crlf("April 7, 2018, 6:00 PM", "April 7, 2018, 6:00 PM, 김도윤 : hi all",
                                      "April 7, 2018, 6:03 PM, Happy coder joined this chatroom.", notice,
                                      "April 7, 2018, 6:04 PM, 김도윤 : welcome"))
    assert [(r.kind, r.text) for r in p.records] == [
        (Kind.MESSAGE, "hi all"), (Kind.JOIN, "Happy coder joined this chatroom."), (Kind.NOTICE, notice),
        (Kind.MESSAGE, "welcome")]
    assert p.records[2].timestamp == datetime(2018, 4, 7, 18, 3) and p.records[2].speaker == ""


def test_24b_korean_two_line_notice_is_one_event(tmp_path):
    p = parse(tmp_path, AND_KO + crlf(
        "2025년 6월 1일 오후 8:01", "2025년 6월 1일 오후 8:01, 김민준님이 들어왔습니다.",
        "타인, 기관 등의 사칭에 유의해 주세요. 의심되면 신고해 주세요.",
        "운영정책을 위반한 메시지로 신고 접수 시 카카오톡 이용에 제한이 있을 수 있습니다. 운영정책 보기",
        "2025년 6월 1일 오후 8:02, 김민준 : 안녕하세요"))
    assert [r.kind for r in p.records] == [Kind.JOIN, Kind.NOTICE, Kind.MESSAGE]
    assert p.records[2].text == "안녕하세요"


def test_25_standalone_deleted_line_is_a_hidden_event(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2025년 6월 1일 오후 8:01", "2025년 6월 1일 오후 8:01, 김민준 : 안녕", "메시지가 삭제되었습니다.",
                                      "2025년 6월 1일 오후 8:02, 김민준 : 다시"))
    assert [(r.kind, r.speaker, r.text) for r in p.records] == [
        (Kind.MESSAGE, "김민준", "안녕"), (Kind.HIDDEN, "", "메시지가 삭제되었습니다."), (Kind.MESSAGE, "김민준", "다시")]


def test_26_sender_deleted_message(tmp_path):
    p = parse(tmp_path, WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------",
                                      "[김민준] [오후 3:00] 삭제된 메시지입니다."))
    r = p.records[0]
    assert (r.kind, r.speaker, r.is_user_message) == (Kind.DELETED, "김민준", True)


# ------------------------------------------------------------------------------------------------ iOS 27-30
def test_27_ios_24h_record(tmp_path):
    p = parse(tmp_path, IOS_KO + "2015년 3월 2일 월요일\n2015. 3. 2. 17:46, 회원님 : 퇴근!\n")
    assert (p.format, p.records[0].timestamp, p.records[0].speaker) == ("ios_ko", datetime(2015, 3, 2, 17, 46), "나")


def test_28_ios_system_colon(tmp_path):
    p = parse(tmp_path, IOS_KO + "2015. 3. 2. 17:47: 김민준님이 이서연님을 초대했습니다.\n")
    assert (p.records[0].kind, p.records[0].speaker) == (Kind.INVITE, "김민준")


def test_29_ios_en_2015_you_and_at_style(tmp_path):
    old = parse(tmp_path, "\ufeffKakaoTalk Chats with 여름 캠프방 (4 people)-1.txt\nDate Saved : Aug 9, 2015, 12:52 AM\n"
                "\n\n\nSunday, July 12, 2015\nJul 12, 2015, 8:17 PM, You : 곧 도착\n", name="a.txt")
    new = parse(tmp_path, IOS_EN + "Sunday, February 1, 2026\nFeb 1, 2026 at 20:35, 최유나 : 곧 도착\n", name="b.txt")
    a, b = old.records[0], new.records[0]
    assert (old.format, a.speaker, a.timestamp) == ("ios_en", "나", datetime(2015, 7, 12, 20, 17))
    assert (new.format, b.speaker, b.timestamp) == ("ios_en", "최유나", datetime(2026, 2, 1, 20, 35))


def test_30_ios_concatenated_exports(tmp_path):
    p = parse(tmp_path, "\ufeff송하늘님과 카카오톡 대화.txt\n저장한 날짜 : 2015. 1. 24. 18:09\n\n\n\n" + "\n".join([
        "2015. 1. 18. 16:27, 회원님 : 다들 잘 지내지~", "\ufeff송하늘님과 카카오톡 대화.txt", "저장한 날짜 : 2015. 3. 5. 09:00",
        "", "", "", "2015. 1. 18. 16:27, 회원님 : 다들 잘 지내지~", "2015. 3. 3. 08:10, 송하늘 : 좋은 아침", ""]))
    assert [r.text for r in p.records] == ["다들 잘 지내지~", "다들 잘 지내지~", "좋은 아침"]
    assert p.segments == [0, 1]
    assert [len(s) for s in p.segment_records()] == [1, 2]


# ------------------------------------------------------------------------------------------------ CSV 31-35
def test_31_csv_quoted_newline_and_doubled_quotes(tmp_path):
    p = parse(tmp_path, 'Date,User,Message\n2018-04-02 12:44:03,"정하린","Run ""ls"" first!\n then try again"\n',
              name="a.csv")
    assert [(r.timestamp, r.text) for r in p.records] == [
        (datetime(2018, 4, 2, 12, 44, 3), 'Run "ls" first!\n then try again')]


def test_32_csv_system_row_truncated_invite(tmp_path):
    p = parse(tmp_path, 'Date,User,Message\n2015-07-12 20:18:33,"오지훈","오지훈 invited 윤하은 and."\n', name="a.csv")
    assert (p.records[0].kind, p.records[0].speaker) == (Kind.INVITE, "오지훈")


def test_33_csv_empty_date_row(tmp_path):
    p = parse(tmp_path, 'Date,User,Message\n2020-11-02 18:03:00,"박지호","안녕"\n,"","The message has been deleted."\n',
              name="a.csv")
    assert [(r.kind, r.speaker, r.timestamp) for r in p.records] == [
        (Kind.MESSAGE, "박지호", datetime(2020, 11, 2, 18, 3)), (Kind.HIDDEN, "", datetime(2020, 11, 2, 18, 3))]


def test_34_csv_without_header_row(tmp_path):
    p = parse(tmp_path, '2016-05-01 10:00:00,"김민준","안녕"\n2016-05-01 10:00:05,"이서연","반가워"\n', name="x.txt")
    assert p.format == "csv" and [r.speaker for r in p.records] == ["김민준", "이서연"]


def test_35_csv_placeholders(tmp_path):
    p = parse(tmp_path, 'Date,User,Message\n2020-11-02 18:00:01,"이서연","사진 3장"\n'
              '2020-11-02 18:00:05,"박지호","보이스톡 해요"\n2015-07-15 21:40:19,"민ㅈ","(Photo)"\n', name="a.csv")
    assert [r.kind for r in p.records] == [Kind.PHOTO, Kind.CALL, Kind.PHOTO]


# ------------------------------------------------------------------------------------------------ bytes 36-39
def test_36_bom_inner_feff_and_nbsp(tmp_path):
    p = parse(tmp_path, "\ufeff" + WIN_KO + crlf("\ufeff--------------- 2023년 2월 9일 목요일 ---------------",
                                                 "[김민준] [오후 2:00] 안녕\ufeff하세요 10\u00a0시"))
    assert p.format == "windows_ko" and p.room == "테스트방"
    assert p.records[0].text == "안녕\ufeff하세요 10\u00a0시"  # body characters kept


def test_37_crlf_records_lf_inside_body(tmp_path):
    p = parse(tmp_path, WIN_KO + "--------------- 2023년 2월 9일 목요일 ---------------\r\n"
              "[김민준] [오후 2:00] 첫 줄\n둘째 줄\r\n[이서연] [오후 2:01] 응\r\n")
    assert [r.text for r in p.records] == ["첫 줄\n둘째 줄", "응"]


def test_38_android_header_line_endings(tmp_path):
    p = parse(tmp_path, "\ufeff방 이름 카카오톡 대화\r\n저장한 날짜 : 2025년 3월 9일 오후 5:47\n\n\r\n"
              "2023년 2월 9일 오전 8:15\r\n2023년 2월 9일 오전 8:15, 김민준 : 좋은 아침\r\n")
    assert (p.room, p.saved_at) == ("방 이름", datetime(2025, 3, 9, 17, 47))
    assert [r.text for r in p.records] == ["좋은 아침"]


def test_39_cp949_file(tmp_path):
    text = WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------", "[김민준] [오후 2:00] 안녕하세요")
    p = parse(tmp_path, text, encoding="cp949")
    assert (p.encoding, p.format, p.records[0].text) == ("cp949", "windows_ko", "안녕하세요")
    assert parse(tmp_path, text, name="u.txt").encoding == "utf-8"


@pytest.mark.parametrize("title,family,room,members", [
    ("캡스톤 팀 3 카카오톡 대화", "android", "캡스톤 팀", 3),
    ("김민준,이서연,박지호 (4명) 님과 카카오톡 대화", "android", "김민준,이서연,박지호", 4),
    ("김민준,이서연,박지호 4 님과 카카오톡 대화", "android", "김민준,이서연,박지호", 4),
    ("동네 중고거래 알림방 812 님과 카카오톡 대화", "android", "동네 중고거래 알림방", 812),
    ("예시증권 님과 카카오톡 대화", "android", "예시증권", None),
    ("한빛마을 독서모임 2기 님과 카카오톡 대화", "windows", "한빛마을 독서모임 2기", None),
    ("여름 캠프방 with KakaoTalk Chats", "windows", "여름 캠프방", None),
    ("KakaoTalk Chats with 여름 캠프방 (4 people)-1.txt", "ios", "여름 캠프방", 4),
    ("여름 캠프방 (4명)과 카카오톡 대화-1.txt", "ios", "여름 캠프방", 4),
    ("송하늘님과 카카오톡 대화.txt", "ios", "송하늘", None),
    ("Talk_2022.8.13 11:20-1.txt", "ios", "", None),
    ("KakaoTalk Chats Happy Coders (24)", "android", "Happy Coders", 24),
    ("KakaoTalk Chats Crew", "android", "Crew", None),
    ("KakaoTalk Chats with 민ㅈ", "android", "민ㅈ", None),
])
def test_40_title_variants(title, family, room, members):
    assert parse_title(title, family) == (room, members)


# ------------------------------------------------------------------------------------------------ containers, errors
def test_zip_holding_an_android_export(tmp_path):
    z = tmp_path / "KakaoTalk_chat.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("photo_001.jpg", b"\xff\xd8\xff not text")
        zf.writestr("KakaoTalkChats.txt", (AND_KO + crlf("2023년 2월 9일 오전 8:15",
                                                          "2023년 2월 9일 오전 8:15, 김민준 : 안녕")).encode())
    p = parse_file(z)
    assert (p.format, p.member, [r.text for r in p.records]) == ("android_ko", "KakaoTalkChats.txt", ["안녕"])


@pytest.mark.parametrize("content", [b"PK\x03\x04 broken zip", b""])
def test_broken_zip_or_empty_file_is_refused(tmp_path, content):
    p = tmp_path / ("x.zip" if content else "empty.txt")
    p.write_bytes(content)
    with pytest.raises(FormatError) as exc:
        parse_file(p)
    assert p.name in str(exc.value) and "\n" not in str(exc.value)
    assert p.read_bytes() == content


def test_zip_without_an_export_is_refused(tmp_path):
    z = tmp_path / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.jpg", b"\xff\xd8")
    with pytest.raises(FormatError, match="photos.zip"):
        parse_file(z)


def test_continuation_stamp_lookalikes_need_the_full_prefix(tmp_path):
    """Body lines that start like a stamp but are not a complete, valid one stay text."""
    p = parse(tmp_path, AND_KO + crlf("2023년 2월 9일 오전 8:15", "2023년 2월 9일 오전 8:15, 김민준 : 일정",
                                      "2023년 2월 30일 오후 3:00, 회의 : 취소", "2023년 2월 9일 오후 13:99, 장소 : 본관",
                                      "2023년 2월 9일 저녁, 약속"))
    assert len(p.records) == 1
    assert p.records[0].text.count("\n") == 3


def test_android_day_header_lookalike_inside_a_body_stays_text(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2023년 2월 9일 오전 8:15", "2023년 2월 9일 오전 8:15, 김민준 : 약속 시간",
                                      "2023년 2월 10일 오후 3:00", "어때?"))
    assert [r.text for r in p.records] == ["약속 시간\n2023년 2월 10일 오후 3:00\n어때?"]


def test_system_sentence_inside_a_known_speakers_message_stays_a_message(tmp_path):
    p = parse(tmp_path, AND_KO + crlf("2025년 6월 3일 오후 7:55", "2025년 6월 3일 오후 7:55, 김민준 : 안녕",
                                      "2025년 6월 3일 오후 7:56, 김민준 : 선생님이 나갔습니다."))
    assert [r.kind for r in p.records] == [Kind.MESSAGE, Kind.MESSAGE]


def test_day_header_without_blank_line_before_a_record(tmp_path):
    """An edited file lost the blank line: a header-shaped line followed by a record is still a day header."""
    android = parse(tmp_path, AND_KO + crlf("2023년 2월 9일 오전 8:15 ", "2023년 2월 9일 오전 8:15, 김민준 : 안녕",
                                            "2023년 2월 10일 오후 3:00", "2023년 2월 10일 오후 3:00, 김민준 : 또 안녕"), name="a.txt")
    assert [r.text for r in android.records] == ["안녕", "또 안녕"]
    ios = parse(tmp_path, IOS_KO + "\n".join(["2022. 3. 4. 오후 7:43, 정우진 : 안녕", "2022년 3월 5일 토요일 ",
                                              "2022. 3. 5. 오전 9:00, 정우진 : 또 안녕", ""]), name="b.txt")
    assert [r.text for r in ios.records] == ["안녕", "또 안녕"]


@pytest.mark.parametrize("text,fmt", [
    (WIN_KO, "windows_ko"), (AND_KO, "android_ko"), (AND_EN, "android_en"), (IOS_KO, "ios_ko"),
    (IOS_EN, "ios_en"), ("\ufeffDate,User,Message\n", "csv")])
def test_export_of_an_empty_room(tmp_path, text, fmt):
    p = parse(tmp_path, text)
    assert (p.format, p.records) == (fmt, [])


def test_a_title_alone_is_not_an_export(tmp_path):
    with pytest.raises(FormatError):
        parse(tmp_path, "Talk_notes.txt\nsome text\nmore text\nand more\n")
    with pytest.raises(FormatError):
        parse(tmp_path, "저장한 날짜 : 어제\n회의 : 3시\n", name="b.txt")


def test_utf16_resave(tmp_path):
    text = WIN_KO + crlf("--------------- 2023년 2월 9일 목요일 ---------------", "[김민준] [오후 2:00] 안녕하세요")
    p = parse(tmp_path, text, encoding="utf-16")
    assert (p.encoding, p.format, p.records[0].text) == ("utf-16", "windows_ko", "안녕하세요")
