"""Which of the seven formats a file is, decided from its content (never its name).

Order (formats doc §10): a ``Date,User,Message`` header or a dated first CSV row -> csv. Otherwise the header
(title line + ``저장한 날짜 :`` / ``Date Saved :`` line) gives hints, and the first few hundred lines are scored
against every family's record shapes. The header language and the body language are decided independently
(real 2015 Windows exports have an English header over Korean separators and times); the ``_ko``/``_en`` suffix
follows the timestamps and day separators.

Android-en and iOS-en message lines can be identical (``Jul 12, 2015, 8:17 PM, X : y``); the lines only one of
them writes (Android stamp-only day headers, time-first / day-first stamps; iOS ``stamp: system`` lines and
``Sunday, July 12, 2015`` day headers) and the header (iOS line 1 is a ``….txt`` file name) break the tie.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from . import stamps as S
from .classify import is_title_line, parse_title

FORMATS = ("windows_ko", "windows_en", "csv", "android_ko", "android_en", "ios_ko", "ios_en")
SAVED_PREFIXES = ("저장한 날짜", "Date Saved")


@dataclass
class Detected:
    format: str
    title: str  # line 1 as written ("" if none)
    room: str
    members: int | None
    saved_at: datetime | None
    skip: int  # header lines (title, saved) to skip before parsing
    ios_time_only: bool = False  # tests-only iOS variant: records without a date under day headers


def _strip(line: str) -> str:
    return line.rstrip("\r\n").lstrip("\ufeff")


def _csv_header(first: str) -> bool:
    low = first.strip().lower().replace('"', "")
    return low.startswith("date,user,message") or (low.startswith("날짜,") and low.count(",") >= 2)


def _saved_text(line: str) -> str | None:
    t = line.strip()
    if not t.startswith(SAVED_PREFIXES) or ":" not in t:
        return None
    return t.split(":", 1)[1].strip()


def detect(head: list[str]) -> Detected | None:
    """Detect the format from the first lines (raw, with newlines). None when it is no known export."""
    lines = [_strip(x) for x in head]
    i0 = next((i for i, x in enumerate(lines) if x.strip()), None)
    if i0 is None:
        return None
    first = lines[i0].strip()
    if _csv_header(first) or S.CSV_FIRST_LINE.match(first):
        return Detected("csv", "", "", None, None, 0)

    # ---- header: title line + saved line
    title, saved_text, skip = "", None, i0
    if _saved_text(first) is not None:
        saved_text, skip = _saved_text(first), i0 + 1
    else:
        j = next((k for k in range(i0 + 1, min(i0 + 4, len(lines))) if lines[k].strip()), None)
        if j is not None and _saved_text(lines[j]) is not None:
            title, saved_text, skip = first, _saved_text(lines[j]), j + 1
        elif is_title_line(first):
            title, skip = first, i0 + 1
    saved_at = S.parse_saved(saved_text) if saved_text else None
    style = S.saved_style(saved_text) if saved_text else None
    title_ios = bool(title) and (title.lower().endswith(".txt") or title.startswith("Talk_"))

    # ---- evidence from the body
    c: Counter = Counter()
    nonblank = 0
    for x in lines[skip:]:
        if not x.strip():
            continue
        nonblank += 1
        ch = x[0]
        if ch == "[":
            m = S.WIN_MSG.match(x)
            if m and S.win_time(m):
                c["win_msg"] += 1
                c["win_t_ko" if m["ko"] else "win_t_en" if (m["ap"] or m["ap3"]) else "win_t_24"] += 1
            continue
        if ch == "-":
            m = S.WIN_SEP.match(x)
            d = S.win_sep_date(m["d"]) if m else None
            if d:
                c["win_sep_" + d[1]] += 1
            continue
        m = S.AND_KO.match(x)
        if m and S.and_ko_dt(m):
            c["and_ko"] += 1
            continue
        m = S.IOS_KO.match(x)
        if m and S.ios_ko_dt(m):
            c["ios_ko"] += 1
            continue
        a = S.AND_EN.match(x)
        a_ok = bool(a and S.and_en_dt(a))
        i = S.IOS_EN.match(x)
        i_ok = bool(i and S.ios_en_dt(i))
        if a_ok and i_ok:
            c["en_shared"] += 1
            c["en_abbr" if len(a["mon"] or "") == 3 and a["mon"].lower() != "may" else "en_full"] += 1
        elif a_ok:
            c["and_en"] += 1
        elif i_ok:
            c["ios_en"] += 1
        if a_ok or i_ok:
            continue
        d = S.day_header_date(x)
        if d:
            c["day_" + d[1]] += 1
            continue
        m = S.IOS_TIME_KO.match(x) or S.IOS_TIME_EN.match(x)
        if m:
            c["ios_time"] += 1

    ios_time = c["ios_time"] if (c["day_ko"] or c["day_en"]) else 0
    shared = c["en_shared"]
    scores = {
        "windows": c["win_msg"] + 3 * (c["win_sep_ko"] + c["win_sep_en"]),
        "android_ko": c["and_ko"],
        "android_en": c["and_en"] + shared,
        "ios_ko": c["ios_ko"] + (c["day_ko"] if c["ios_ko"] or ios_time else 0) + (ios_time if c["day_ko"] else 0),
        "ios_en": c["ios_en"] + shared + (c["day_en"] if c["ios_en"] or shared or ios_time else 0)
        + (ios_time if c["day_en"] else 0),
    }
    # header hints break ties (and decide for exports with no records at all)
    if title_ios:  # line 1 is the attachment's file name: only iPhone exports do that
        scores["ios_ko"] += 2
        scores["ios_en"] += 2
    if style:
        scores[style] += 0.5
    if shared and c["en_abbr"] > c["en_full"]:
        scores["ios_en"] += 0.25
    elif shared:
        scores["android_en"] += 0.25

    best = max(scores, key=lambda k: scores[k])
    evidence = scores[best] - (2 if title_ios and best.startswith("ios") else 0) - (0.5 if style == best else 0)
    has_header = bool(saved_text) or bool(title and is_title_line(title))
    if scores[best] <= 0.25:
        return None
    if evidence <= 0.25 and (saved_at is None or nonblank > 2):
        return None  # no record at all: only a complete header with (almost) nothing under it is an empty export
    if not has_header and evidence < max(2, 0.05 * nonblank):
        return None  # a stray date-looking line in prose is not an export

    if best == "windows":
        ko = c["win_sep_ko"] + c["win_t_ko"] * 0.01
        en = c["win_sep_en"] + c["win_t_en"] * 0.01
        if ko == en:  # no separators and only 24 h times: the header language
            en = 1 if (saved_text is not None and title and "Date Saved" in lines[skip - 1]) else 0
            ko = 1 - en
        fmt = "windows_ko" if ko >= en else "windows_en"
        family = "windows"
    else:
        fmt = best
        family = best.split("_")[0]
    room, members = parse_title(title, family) if title else ("", None)
    return Detected(fmt, title, room, members, saved_at, skip,
                    ios_time_only=family == "ios" and ios_time > 0 and c["ios_ko"] + c["ios_en"] + shared == 0)
