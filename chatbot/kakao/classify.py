"""What a body or an un-stamped line *is*: media placeholder, sender-deleted message, system event, notice.

Everything here is language-agnostic (Korean and English texts are recognised in every format) because mixed
locales are real: a Korean-UI CSV writes English system rows, an English-UI iOS export may keep Korean system
texts. Placeholders match the *whole* trimmed body (``(굿)`` inside ``좋아(굿)`` stays text); system texts match
KakaoTalk's fixed sentences. See ../shared/docs/kakao-export-formats.md §4.3, §6, §7.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..records import Kind

# The exporter's own messages in old mobile exports (§4.4); replaced by the configured self name.
SELF_PLACEHOLDERS = frozenset({"회원님", "you", "You"})

# ------------------------------------------------------------------------------------------- media placeholders
_EXACT: dict[str, Kind] = {}
for _k, _words in {
    Kind.PHOTO: ["사진", "<사진 읽지 않음>", "(사진)", "<사진>", "<Photo>", "<Photo Unread>", "Photo", "photo",
                 "(Photo)", "Photos", "photos", "<Photos>"],
    Kind.VIDEO: ["동영상", "<동영상 읽지 않음>", "(동영상)", "<동영상>", "Video", "video", "<Video>", "<Video Unread>",
                 "(Video)", "Videos"],
    Kind.EMOTICON: ["(이모티콘)", "이모티콘", "(emoticon)", "(Emoticon)", "Emoticon", "Emoticons", "emoticon",
                    "<이모티콘>", "<Emoticon>", "(스티커)", "(Sticker)"],
    Kind.AUDIO: ["음성메시지", "음성 메시지", "Voice Message", "Voice message", "(음성메시지)"],
    Kind.CALL: ["보이스톡 해요", "보이스톡 응답없음", "보이스톡 취소", "보이스톡 부재중", "페이스톡 해요", "페이스톡 응답없음",
                "페이스톡 취소", "페이스톡 부재중", "Voice Call", "Missed Voice Call", "Canceled Voice Call",
                "Cancelled Voice Call", "Face Talk", "Missed Face Talk", "Video Call", "Missed Video Call"],
    Kind.DELETED: ["삭제된 메시지입니다.", "This message was deleted.", "This message has been deleted.",
                   "삭제된 메시지입니다"],
    Kind.PAYMENT: ["정산하기를 요청했어요."],
}.items():
    for _w in _words:
        _EXACT[_w] = _k

# Prefix / shape rules, tried only when the exact lookup misses: one combined regex, one named group per kind.
_MEDIA_RX = re.compile(
    r"(?P<photo>사진 \d+장$|\d+ [Pp]hotos$|Photo \d+$|[0-9a-fA-F]{16,}\.(?:jpe?g|png|gif|webp|heic|JPE?G|PNG)$)"
    r"|(?P<video>동영상 \d+개$|\d+ [Vv]ideos$|[0-9a-fA-F]{16,}\.(?:mp4|mov|avi|3gp|MP4|MOV)$)"
    r"|(?P<audio>[0-9a-fA-F]{16,}\.(?:m4a|aac|amr|mp3)$)"
    r"|(?P<emoticon>\((?:이모티콘|emoticon|Emoticon)(?:_[^)\n]*)?\)(?: |$))"
    r"|(?P<file>(?:파일|File): )"
    r"|(?P<call>(?:보이스톡|페이스톡|그룹콜|Voice Call|Face Talk|Group Call) (?:\d{1,2}:)?\d{1,2}:\d{2}$)"
    r"|(?P<poll>톡게시판 '|[A-Z][^\n]{0,40} in Boards: )"
    r"|(?P<search>샵검색 ?: )"
    r"|(?P<payment>정산하기를 요청했어요\.|송금봉투 받기 완료!|[\d,]+원을 (?:받으세요|보냈어요)\.)"
)
_KIND_OF_GROUP = {k.value: k for k in (Kind.PHOTO, Kind.VIDEO, Kind.AUDIO, Kind.EMOTICON, Kind.FILE, Kind.CALL,
                                        Kind.POLL, Kind.SEARCH, Kind.PAYMENT)}
# Hangul syllables a rule can start with; a body starting with any other syllable is plain text (fast path).
_KO_FIRST = frozenset("사동파보페그톡샵정송")
KO_FIRST = _KO_FIRST
EXACT_KINDS = _EXACT  # (the parsers' hot loop inlines body_kind's first two steps)
_MESSAGE = Kind.MESSAGE


def body_kind(text: str) -> Kind:
    """Kind of a message body: a media placeholder, a sender-deleted message, or plain ``MESSAGE``.

    An empty body is an emoticon: Android-en 2018 writes ``지안 : `` where Windows shows ``(이모티콘)``.
    Expects ``text`` already stripped at the end (the parsers rstrip bodies).
    """
    kind = _EXACT.get(text)
    if kind is not None:
        return kind
    if not text or text[0] in " \t\n\u3000\ufeff":
        text = text.strip()
        if not text:
            return Kind.EMOTICON
        kind = _EXACT.get(text)
        if kind is not None:
            return kind
    char = text[0]
    if "\uac00" <= char <= "\ud7a3" and char not in _KO_FIRST:
        return _MESSAGE
    match = _MEDIA_RX.match(text)
    if match is None:
        return _MESSAGE
    return _KIND_OF_GROUP[match.lastgroup]


# -------------------------------------------------------------------------------------------------- system texts
_SYSTEM_RULES: list[tuple[re.Pattern, Kind]] = [
    (re.compile(r"^(?P<s>.+?)님이 (?:들어왔습니다|입장했습니다|입장하셨습니다)\.$"), Kind.JOIN),
    (re.compile(r"^(?P<s>.+?) (?:joined this chatroom|has joined this chatroom|entered this chatroom)\.$"), Kind.JOIN),
    (re.compile(r"^(?P<s>.+?)님이 (?:나갔습니다|퇴장했습니다|퇴장하셨습니다)\.$"), Kind.LEAVE),
    (re.compile(r"^(?P<s>.+?) (?:left this chatroom|has left this chatroom|left the chatroom)\.$"), Kind.LEAVE),
    (re.compile(r"^(?P<s>.+?)님이 .+(?:초대했습니다|초대하였습니다)\.$"), Kind.INVITE),
    (re.compile(r"^(?P<s>.+?) invited .*\.$"), Kind.INVITE),
    (re.compile(r"^(?P<s>.+?)님을 (?:내보냈습니다|내보내었습니다)\.$"), Kind.KICK),
    (re.compile(r"^(?P<s>.+?) (?:has been|was) removed from this chatroom\.$"), Kind.KICK),
    (re.compile(r"^(?P<s>.+?)님이 (?:부방장이|방장이) 되었습니다\.$"), Kind.HOST),
    (re.compile(r"^(?P<s>.+?) (?:is now the host|became the host|is now a co-host)\.$"), Kind.HOST),
    (re.compile(r"^(?:메시지가 삭제되었습니다|The message has been deleted|채팅방 관리자가 메시지를 가렸습니다)\.$"), Kind.HIDDEN),
]
# Endings every system sentence above has; a cheap filter before the regexes (hot path for Windows lines).
_SYSTEM_ENDINGS = ("습니다.", "chatroom.", "host.", "deleted.", "다.")
# Every rule above contains one of these; one C-level search rejects ordinary sentences ending in ".".
_SYSTEM_HINT = re.compile(r"님이 |님을 | chatroom\.| invited | host\.| co-host\.")

# Open-chat policy notices: un-timestamped lines KakaoTalk inserts after a join (§4.3). Matched by prefix.
NOTICE_PREFIXES = (
    "You may temporarily be banned from using ",
    "타인, 기관 등의 사칭에 유의해 주세요",
    "운영정책을 위반한 메시지로 신고 접수 시",
)
NOTICE_CONT_PREFIXES = ("운영정책을 위반한 메시지로 신고 접수 시",)
HIDDEN_LINES = frozenset({"메시지가 삭제되었습니다.", "The message has been deleted.", "채팅방 관리자가 메시지를 가렸습니다."})


def system_kind(text: str) -> tuple[Kind, str] | None:
    """(kind, subject) when ``text`` is one of KakaoTalk's system sentences, else None."""
    stripped = text.strip()
    if stripped in HIDDEN_LINES:
        return Kind.HIDDEN, ""
    if stripped[-1:] != "." or _SYSTEM_HINT.search(stripped) is None:
        return None
    for pattern, kind in _SYSTEM_RULES:
        match = pattern.match(stripped)
        if match:
            return kind, match.groupdict().get("s") or ""
    return None


def windows_system(line: str) -> tuple[Kind, str] | None:
    """A Windows un-stamped line that is a system event (join/leave/invite/kick/host/hidden) — else None.

    Windows system lines have no stamp, so by shape they look like continuation lines; only KakaoTalk's fixed
    Korean/English sentences are accepted, and English ``invited`` only in its exact ``X invited Y.`` shape.
    """
    if not line.endswith(_SYSTEM_ENDINGS) or line[:1].isspace():
        return None
    return system_kind(line)


def is_notice(line: str) -> bool:
    return line.startswith(NOTICE_PREFIXES)


# ------------------------------------------------------------------------------------------------------ titles
_TXT_SUFFIX = re.compile(r"(?:-\d+)?\.txt$", re.I)
_EN_TITLE = re.compile(r"^KakaoTalk Chats(?: with)?(?: (?P<r>.*?))?(?: \((?P<n>\d+)(?: people| members)?\))?$")
_WIN_EN_TITLE = re.compile(r"^(?P<r>.*?) ?with KakaoTalk Chats$")
_COUNT_PAREN = re.compile(r"^(?P<r>.*?) ?\((?P<n>\d+)(?:명|人| people| members)?\)$")
_COUNT_BARE = re.compile(r"^(?P<r>.+?) (?P<n>\d+)$")


_CSV_NAME = re.compile(r"^KakaoTalk_Chat_(?P<r>.+)_\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}(?: ?\(\d+\))?\.csv$", re.I)


def csv_room(file_name: str) -> str:
    """Room name from KakaoTalk's CSV file name ``KakaoTalk_Chat_<room>_YYYY-MM-DD-HH-MM-SS.csv`` ("" if other)."""
    match = _CSV_NAME.match(Path(file_name).name)
    return match["r"].strip() if match else ""


def is_title_line(line: str) -> bool:
    """Does this line look like line 1 of some export (used to spot concatenated exports)?"""
    text = line.replace("\ufeff", "").strip()
    return (text.endswith("카카오톡 대화") or text.endswith("with KakaoTalk Chats")
            or text.startswith("KakaoTalk Chats")
            or (text.lower().endswith(".txt") and ("카카오톡 대화" in text or text.startswith(("Talk_", "KakaoTalk")))))


def parse_title(line: str, family: str) -> tuple[str, int | None]:
    """(room name, member count) from an export's first line; ("", None) when it names no room (``Talk_…``).

    ``family`` is windows / android / ios / csv: a bare trailing number is a member count only in Android
    titles (``캡스톤 팀 3 카카오톡 대화``); Windows titles carry no count, so ``… 2기 님과`` keeps its number.
    """
    text = line.replace("\ufeff", "").strip()
    members: int | None = None
    if text.lower().endswith(".txt"):
        text = _TXT_SUFFIX.sub("", text).strip()
        if text.startswith("Talk_"):
            return "", None
    match = _EN_TITLE.match(text)
    if match:
        return (match["r"] or "").strip(), int(match["n"]) if match["n"] else None
    match = _WIN_EN_TITLE.match(text)
    if match:
        return match["r"].strip(), None
    if text.endswith("카카오톡 대화"):
        core = text[: -len("카카오톡 대화")].rstrip()
        if core.endswith("님과"):
            core = core[:-2].rstrip()
        elif core.endswith(")과"):  # iOS: "여름 캠프방 (4명)과"
            core = core[:-1]
        match = _COUNT_PAREN.match(core)
        if match:
            core, members = match["r"].strip(), int(match["n"])
        elif family == "android":
            match = _COUNT_BARE.match(core)
            if match:
                core, members = match["r"].strip(), int(match["n"])
        return core, members
    return text, None
