"""Timestamp shapes of every export family, as compiled regexes plus small converters.

Each regex captures the whole stamp as group ``st`` so the parsers can cache ``stamp string -> datetime``: in a
real export hundreds of consecutive records share one minute, so the cache turns most datetime constructions into
one dict lookup (this is what keeps parsing above 20 MB/s). Invalid dates/times (``2023년 2월 30일``, ``25:61``)
convert to ``None`` and the line is then treated as ordinary text, never as a record.

Shapes (see ../shared/docs/kakao-export-formats.md §2-§5, §10):

* Windows separator  ``--------------- 2018년 4월 7일 토요일 ---------------`` / ``… Saturday, August 8, 2015 …``
* Windows record     ``[sender] [오후 9:12] body`` / ``[sender] [3:12 PM] body`` / ``[sender] [20:36] body``
* Android ko         ``2023년 2월 9일 오전 8:15, rest`` (``정오`` = 12:00, ``자정`` = 00:00); no rest = day header
* Android en         ``April 7, 2018, 9:12 PM, rest`` / ``20 October 2018, 6:58 PM, rest`` /
                     ``11:05PM, November 16, 2013, rest`` / ``March 3, 2023 at 12:52 p.m., rest``
* iOS ko             ``2022. 2. 19. 오후 9:48, rest`` (message) / ``…: rest`` (system); 24 h ``2015. 1. 18. 16:27``
* iOS en             ``Jul 12, 2015, 8:17 PM, rest`` / ``Feb 1, 2026 at 20:35: rest``
* iOS day header     ``2021년 11월 16일 화요일`` / ``Sunday, July 12, 2015``
* CSV                ``2018-04-11 09:21:40``
"""

from __future__ import annotations

import re
from datetime import datetime

MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")]
    )
    for name in names
}
WEEKDAYS_EN = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

# 12 h suffix: AM/PM, am/pm, a.m./p.m., glued or after a space / NBSP / narrow NBSP.
_AP = r"(?:[ \u00a0\u202f]?(?P<ap>[AaPp])\.?[Mm]\.?)"
_MON = r"(?P<mon>[A-Za-z]{3,9})\.?"

# ---------------------------------------------------------------------------------------------------- Windows
WIN_SEP = re.compile(r"^-{10,} (?P<d>.+?) -{10,}\s*$")
WIN_SEP_KO = re.compile(r"^(?P<y>\d{4})년 (?P<m>\d{1,2})월 (?P<d>\d{1,2})일(?: .요일)?$")
WIN_SEP_EN = re.compile(
    r"^(?:[A-Za-z]+, )?(?:(?P<mon>[A-Za-z]{3,9})\.? (?P<d>\d{1,2}), (?P<y>\d{4})"
    r"|(?P<d2>\d{1,2}) (?P<mon2>[A-Za-z]{3,9})\.? (?P<y2>\d{4}))$"
)
WIN_MSG = re.compile(
    r"^\[(?P<s>.*?)\] \[(?P<st>(?P<ko>오전|오후) (?P<h>\d{1,2}):(?P<mi>\d{2})"
    r"|(?P<h2>\d{1,2}):(?P<mi2>\d{2})" + _AP + r"?"
    r"|(?P<ap3>[AaPp])[Mm] (?P<h3>\d{1,2}):(?P<mi3>\d{2}))\](?: (?P<b>.*))?$"
)
# Windows/CSV "saved" stamp: 2018-05-20 22:41:07
DASH_STAMP = re.compile(r"^(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2}) (?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?$")

# ---------------------------------------------------------------------------------------------------- Android
AND_KO = re.compile(
    r"^(?P<st>(?P<y>\d{4})년 (?P<m>\d{1,2})월 (?P<d>\d{1,2})일 "
    r"(?:(?:(?P<ko>오전|오후) )?(?P<h>\d{1,2}):(?P<mi>\d{2})|(?P<noon>정오|자정)))(?:, (?P<rest>.*)|[ \t]*)$"
)
_T = r"(?P<h>\d{1,2}):(?P<mi>\d{2})" + _AP + r"?"
AND_EN = re.compile(
    r"^(?P<st>"
    + _MON + r" (?P<d>\d{1,2}), (?P<y>\d{4}),? (?:at )?" + _T
    + r"|(?P<d2>\d{1,2}) (?P<mon2>[A-Za-z]{3,9})\.? (?P<y2>\d{4}),? (?:at )?(?P<h2>\d{1,2}):(?P<mi2>\d{2})"
    + r"(?:[ \u00a0\u202f]?(?P<ap2>[AaPp])\.?[Mm]\.?)?"
    + r"|(?P<h3>\d{1,2}):(?P<mi3>\d{2})(?:[ \u00a0\u202f]?(?P<ap3>[AaPp])\.?[Mm]\.?)?, "
    r"(?P<mon3>[A-Za-z]{3,9})\.? (?P<d3>\d{1,2}), (?P<y3>\d{4})"
    r")(?:, (?P<rest>.*)|[ \t]*)$"
)

# ---------------------------------------------------------------------------------------------------- iOS
IOS_KO = re.compile(
    r"^(?P<st>(?P<y>\d{4})\. ?(?P<m>\d{1,2})\. ?(?P<d>\d{1,2})\.? (?:(?P<ko>오전|오후) )?(?P<h>\d{1,2}):(?P<mi>\d{2}))"
    r"(?P<sep>[,:])(?: (?P<rest>.*))?$"
)
IOS_EN = re.compile(
    r"^(?P<st>" + _MON + r" (?P<d>\d{1,2}), (?P<y>\d{4})(?:,| at) " + _T + r")(?P<sep>[,:])(?: (?P<rest>.*))?$"
)
IOS_TIME_KO = re.compile(r"^(?P<st>(?P<ko>오전|오후) (?P<h>\d{1,2}):(?P<mi>\d{2}))(?P<sep>[,:])(?: (?P<rest>.*))?$")
IOS_TIME_EN = re.compile(r"^(?P<st>" + _T + r")(?P<sep>[,:])(?: (?P<rest>.*))?$")
DAY_KO = re.compile(r"^(?P<y>\d{4})년 (?P<m>\d{1,2})월 (?P<d>\d{1,2})일 [월화수목금토일]요일[ \t]*$")
DAY_EN = re.compile(
    r"^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
    r"(?:(?P<mon>[A-Za-z]{3,9})\.? (?P<d>\d{1,2}), (?P<y>\d{4})"
    r"|(?P<d2>\d{1,2}) (?P<mon2>[A-Za-z]{3,9})\.? (?P<y2>\d{4}))"
    r"[ \t]*$"
)

# ---------------------------------------------------------------------------------------------------- CSV
CSV_DATE = re.compile(
    r"^(?P<y>\d{4})[-./](?P<m>\d{1,2})[-./](?P<d>\d{1,2})[ T](?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2}))?$"
)
CSV_FIRST_LINE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2} \d{1,2}:\d{2}(?::\d{2})?,")


def hour_of(h: int, ap: str | None) -> int | None:
    """12 h -> 24 h. ``ap`` is 오전/오후/a/p (any case) or None for a 24 h clock. None when out of range."""
    if ap is None:
        return h if 0 <= h <= 23 else None
    if not 1 <= h <= 12 and h != 0:
        return None
    pm = ap in ("오후", "p", "P")
    return (h % 12) + (12 if pm else 0)


def month_of(name: str | None) -> int | None:
    return MONTHS.get(name.lower()) if name else None


def make_dt(y, m, d, h=0, mi=0, s=0) -> datetime | None:
    try:
        return datetime(int(y), int(m), int(d), int(h), int(mi), int(s))
    except (TypeError, ValueError):
        return None


def win_time(m: re.Match) -> tuple[int, int] | None:
    """(hour, minute) of a WIN_MSG match, or None when the time is impossible."""
    if m.group("ko"):
        h, mi, ap = m.group("h"), m.group("mi"), m.group("ko")
    elif m.group("h2"):
        h, mi, ap = m.group("h2"), m.group("mi2"), m.group("ap")
    else:
        h, mi, ap = m.group("h3"), m.group("mi3"), m.group("ap3")
    hh = hour_of(int(h), ap)
    if hh is None or int(mi) > 59:
        return None
    return hh, int(mi)


def win_sep_date(inner: str) -> tuple[datetime, str] | None:
    """Date of a Windows day separator's inner text and its language ("ko"/"en")."""
    inner = inner.replace("\ufeff", "").strip()
    m = WIN_SEP_KO.match(inner)
    if m:
        dt = make_dt(m["y"], m["m"], m["d"])
        return (dt, "ko") if dt else None
    m = WIN_SEP_EN.match(inner)
    if m:
        if m["y"]:
            dt = make_dt(m["y"], month_of(m["mon"]), m["d"])
        else:
            dt = make_dt(m["y2"], month_of(m["mon2"]), m["d2"])
        return (dt, "en") if dt else None
    return None


def and_ko_dt(m: re.Match) -> datetime | None:
    if m.group("noon"):
        h = 12 if m.group("noon") == "정오" else 0
        return make_dt(m["y"], m["m"], m["d"], h, 0)
    if int(m["mi"]) > 59:
        return None
    h = hour_of(int(m["h"]), m.group("ko"))
    return None if h is None else make_dt(m["y"], m["m"], m["d"], h, m["mi"])


def and_en_dt(m: re.Match) -> datetime | None:
    if m.group("y"):
        y, mon, d, h, mi, ap = m["y"], m["mon"], m["d"], m["h"], m["mi"], m["ap"]
    elif m.group("y2"):
        y, mon, d, h, mi, ap = m["y2"], m["mon2"], m["d2"], m["h2"], m["mi2"], m["ap2"]
    else:
        y, mon, d, h, mi, ap = m["y3"], m["mon3"], m["d3"], m["h3"], m["mi3"], m["ap3"]
    mo = month_of(mon)
    hh = hour_of(int(h), ap)
    if mo is None or hh is None or int(mi) > 59:
        return None
    return make_dt(y, mo, d, hh, mi)


def ios_ko_dt(m: re.Match) -> datetime | None:
    hh = hour_of(int(m["h"]), m.group("ko"))
    if hh is None or int(m["mi"]) > 59:
        return None
    return make_dt(m["y"], m["m"], m["d"], hh, m["mi"])


def ios_en_dt(m: re.Match) -> datetime | None:
    mo = month_of(m["mon"])
    hh = hour_of(int(m["h"]), m["ap"])
    if mo is None or hh is None or int(m["mi"]) > 59:
        return None
    return make_dt(m["y"], mo, m["d"], hh, m["mi"])


def day_header_date(line: str) -> tuple[datetime, str] | None:
    """iOS day header (``2021년 11월 16일 화요일`` / ``Sunday, July 12, 2015``) -> (midnight, lang)."""
    m = DAY_KO.match(line)
    if m:
        dt = make_dt(m["y"], m["m"], m["d"])
        return (dt, "ko") if dt else None
    m = DAY_EN.match(line)
    if m:
        dt = make_dt(m["y"], month_of(m["mon"]), m["d"]) if m["y"] else make_dt(m["y2"], month_of(m["mon2"]), m["d2"])
        return (dt, "en") if dt else None
    return None


def parse_saved(text: str) -> datetime | None:
    """The stamp of a ``저장한 날짜 : …`` / ``Date Saved : …`` line, whatever the family wrote."""
    t = text.replace("\ufeff", "").replace("\u00a0", " ").replace("\u202f", " ").strip()
    m = DASH_STAMP.match(t)
    if m:
        return make_dt(m["y"], m["m"], m["d"], m["h"], m["mi"], m["s"] or 0)
    m = AND_KO.match(t)
    if m and not m["rest"]:
        return and_ko_dt(m)
    m = IOS_KO.match(t + ", x")
    if m:
        return ios_ko_dt(m)
    m = IOS_EN.match(t + ", x")
    if m:
        return ios_en_dt(m)
    m = AND_EN.match(t)
    if m and not m["rest"]:
        return and_en_dt(m)
    return None


def saved_style(text: str) -> str | None:
    """Which family wrote a saved-date stamp: windows, android_ko, android_en, ios_ko, ios_en (None = unknown).

    ``May 19, 2018, 10:32 AM`` is both Android-en and iOS-en; it reports android_en and the title decides.
    """
    t = text.replace("\ufeff", "").replace("\u00a0", " ").replace("\u202f", " ").strip()
    if DASH_STAMP.match(t):
        return "windows"
    m = AND_KO.match(t)
    if m and not m["rest"] and and_ko_dt(m):
        return "android_ko"
    m = IOS_KO.match(t + ", x")
    if m and ios_ko_dt(m):
        return "ios_ko"
    m = AND_EN.match(t)
    if m and not m["rest"] and and_en_dt(m):
        if m["mon"] and len(m["mon"]) == 3 and m["mon"].lower() != "may":
            return "ios_en"  # iOS abbreviates months (Aug 9, 2015 / Feb 13, 2026 at 18:42)
        return "android_en"
    m = IOS_EN.match(t + ", x")
    if m and ios_en_dt(m):
        return "ios_en"
    return None
