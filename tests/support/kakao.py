"""Test helpers for the KakaoTalk parser: invented conversations rendered in every export format.

``render(fmt, room, events, ...)`` writes one conversation the way each platform's exporter would (header,
BOM, day separators/headers, CRLF/LF habits, stamp shapes), so the same room can be "exported" from several
platforms with overlapping periods. All names and texts are invented.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from tests.support.workspace import REPO

FIXTURES = REPO / "tests" / "fixtures" / "kakao"
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
KO_WEEKDAYS = "월화수목금토일"
SELF_PLACEHOLDER = {"android_ko": "회원님", "ios_ko": "회원님", "android_en": "you", "ios_en": "You"}


@dataclass(frozen=True)
class Ev:
    """One invented event: a message (``join`` False) or a join system event of ``speaker``."""

    ts: datetime
    speaker: str
    text: str = ""
    join: bool = False


def conversation(start: datetime, n: int, speakers: list[str], seed: int = 0, step_s: int = 50) -> list[Ev]:
    """A deterministic invented conversation of ``n`` messages (some repeated "ㅋㅋ", some multi-line)."""
    import random

    rng = random.Random(seed)
    words = ["오늘", "점심", "뭐", "먹을까", "좋아", "회의", "자료", "확인", "내일", "비", "온대", "우산", "챙겨",
             "주말에", "영화", "볼래", "커피", "한잔", "ok", "see you"]
    out, t = [], start
    for i in range(n):
        t += timedelta(seconds=rng.randint(5, step_s * 2))
        sp = speakers[i % len(speakers)] if rng.random() < 0.6 else rng.choice(speakers)
        r = rng.random()
        if r < 0.1:
            text = "ㅋㅋ"
        elif r < 0.15:
            text = "사진"
        elif r < 0.2:
            text = " ".join(rng.choice(words) for _ in range(3)) + "\n준비물 : 우산\n\n끝"
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) + f" {i}"
        out.append(Ev(t, sp, text))
    return out


def _ko_time(t: datetime) -> str:
    return f"{'오전' if t.hour < 12 else '오후'} {t.hour % 12 or 12}:{t.minute:02d}"


def _en_time(t: datetime) -> str:
    return f"{t.hour % 12 or 12}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"


def _photo(fmt: str) -> str:
    return {"windows_en": "photo", "android_en": "<Photo>", "ios_en": "Photo", "csv": "Photo"}.get(fmt, "사진")


def render(fmt: str, room: str, events: list[Ev], saved: datetime, self_name: str | None = None,
           members: int = 3, talk_name: bool = False) -> str:
    """Text of an export of ``events`` in ``fmt``. ``self_name``: the exporter's real nickname; mobile formats
    write it as their placeholder (회원님/you/You), Windows and CSV keep it."""
    lines: list[str] = []
    rec_end = "\r\n" if fmt in ("windows_ko", "windows_en", "android_ko", "android_en") else "\n"

    def who(sp: str) -> str:
        return SELF_PLACEHOLDER.get(fmt, sp) if self_name is not None and sp == self_name else sp

    def body(ev: Ev) -> str:
        return _photo(fmt) if ev.text == "사진" else ev.text

    day = None
    if fmt == "windows_ko":
        head = f"{room} 님과 카카오톡 대화\r\n저장한 날짜 : {saved:%Y-%m-%d %H:%M:%S}\r\n\r\n"
        for ev in events:
            if ev.ts.date() != day:
                day = ev.ts.date()
                lines.append(f"--------------- {day.year}년 {day.month}월 {day.day}일 "
                             f"{KO_WEEKDAYS[day.weekday()]}요일 ---------------")
            lines.append(f"{ev.speaker}님이 들어왔습니다." if ev.join else f"[{ev.speaker}] [{_ko_time(ev.ts)}] {body(ev)}")
    elif fmt == "windows_en":
        head = f"{room} with KakaoTalk Chats\r\nDate Saved : {saved:%Y-%m-%d %H:%M:%S}\r\n"
        for ev in events:
            if ev.ts.date() != day:
                day = ev.ts.date()
                lines.append("")
                lines.append(f"--------------- {WEEKDAYS[day.weekday()]}, {MONTHS[day.month - 1]} {day.day}, "
                             f"{day.year} ---------------")
            lines.append(f"{ev.speaker} joined this chatroom." if ev.join
                         else f"[{ev.speaker}] [{_en_time(ev.ts)}] {body(ev)}")
    elif fmt == "csv":
        head = "\ufeffDate,User,Message\n"
        for ev in events:
            text = f"{ev.speaker} joined this chatroom." if ev.join else body(ev)
            q = text.replace('"', '""')
            lines.append(f'{ev.ts:%Y-%m-%d %H:%M:%S},"{ev.speaker}","{q}"')
    elif fmt in ("android_ko", "android_en"):
        ko = fmt == "android_ko"

        def stamp(t: datetime) -> str:
            if ko:
                return f"{t.year}년 {t.month}월 {t.day}일 {_ko_time(t)}"
            return f"{MONTHS[t.month - 1]} {t.day}, {t.year}, {_en_time(t)}"

        title = f"{room} {members} 카카오톡 대화" if ko else f"KakaoTalk Chats {room} ({members})"
        head = f"\ufeff{title}\r\n{'저장한 날짜' if ko else 'Date Saved'} : {stamp(saved)}\n\n"
        for ev in events:
            if ev.ts.date() != day:
                day = ev.ts.date()
                lines.append("")
                lines.append(stamp(ev.ts))
            if ev.join:
                lines.append(f"{stamp(ev.ts)}, {ev.speaker}님이 들어왔습니다." if ko
                             else f"{stamp(ev.ts)}, {ev.speaker} joined this chatroom.")
            else:
                lines.append(f"{stamp(ev.ts)}, {who(ev.speaker)} : {body(ev)}")
    elif fmt in ("ios_ko", "ios_en"):
        ko = fmt == "ios_ko"

        def stamp(t: datetime) -> str:
            if ko:
                return f"{t.year}. {t.month}. {t.day}. {_ko_time(t)}"
            return f"{MONTHS[t.month - 1][:3]} {t.day}, {t.year}, {_en_time(t)}"

        if talk_name:
            title = f"Talk_{saved.year}.{saved.month}.{saved.day} {saved:%H:%M}-1.txt"
        else:
            title = (f"{room} ({members}명)과 카카오톡 대화.txt" if ko
                     else f"KakaoTalk Chats with {room} ({members} people)-1.txt")
        head = f"\ufeff{title}\n{'저장한 날짜' if ko else 'Date Saved'} : {stamp(saved)}\n\n\n"
        for ev in events:
            if ev.ts.date() != day:
                day = ev.ts.date()
                lines.append("")
                lines.append(f"{day.year}년 {day.month}월 {day.day}일 {KO_WEEKDAYS[day.weekday()]}요일" if ko
                             else f"{WEEKDAYS[day.weekday()]}, {MONTHS[day.month - 1]} {day.day}, {day.year}")
            lines.append(f"{stamp(ev.ts)}: {ev.speaker}님이 들어왔습니다." if ev.join
                         else f"{stamp(ev.ts)}, {who(ev.speaker)} : {body(ev)}")
    else:
        raise ValueError(fmt)
    return head + "".join(line + rec_end for line in lines)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes): to prove a command changed nothing."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
