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
    text = line.strip()
    if not text.startswith(SAVED_PREFIXES) or ":" not in text:
        return None
    return text.split(":", 1)[1].strip()


def detect(head: list[str]) -> Detected | None:
    """Detect the format from the first lines (raw, with newlines). None when it is no known export."""
    lines = [_strip(line) for line in head]
    start = next((index for index, line in enumerate(lines) if line.strip()), None)
    if start is None:
        return None
    first = lines[start].strip()
    if _csv_header(first) or S.CSV_FIRST_LINE.match(first):
        return Detected("csv", "", "", None, None, 0)
    header = _read_header(lines, start)
    counts, nonblank = _body_evidence(lines[header.skip:])
    scores = _scores(counts, header)
    best = max(scores, key=lambda name: scores[name])
    if not _is_export(scores[best], best, header, nonblank):
        return None
    if best == "windows":
        fmt, family = _windows_language(counts, header, lines), "windows"
    else:
        fmt, family = best, best.split("_")[0]
    room, members = parse_title(header.title, family) if header.title else ("", None)
    ios_time = _ios_time(counts)
    return Detected(fmt, header.title, room, members, header.saved_at, header.skip,
                    ios_time_only=(family == "ios" and ios_time > 0
                                   and counts["ios_ko"] + counts["ios_en"] + counts["en_shared"] == 0))


@dataclass
class _Header:
    """The export's header as found: title line (or ""), the text after ``저장한 날짜 :`` (or None), lines to skip."""

    title: str
    saved_text: str | None
    skip: int

    @property
    def saved_at(self) -> datetime | None:
        return S.parse_saved(self.saved_text) if self.saved_text else None

    @property
    def style(self) -> str | None:
        """The family the saved-date line's style points to (a hint only)."""
        return S.saved_style(self.saved_text) if self.saved_text else None

    @property
    def ios_title(self) -> bool:
        """Line 1 is the attachment's file name: only iPhone exports do that."""
        return bool(self.title) and (self.title.lower().endswith(".txt") or self.title.startswith("Talk_"))


def _read_header(lines: list[str], start: int) -> _Header:
    """Title line + saved line at ``lines[start]`` (either may be missing)."""
    first = lines[start].strip()
    if _saved_text(first) is not None:
        return _Header("", _saved_text(first), start + 1)
    saved_line = next((index for index in range(start + 1, min(start + 4, len(lines))) if lines[index].strip()), None)
    if saved_line is not None and _saved_text(lines[saved_line]) is not None:
        return _Header(first, _saved_text(lines[saved_line]), saved_line + 1)
    if is_title_line(first):
        return _Header(first, None, start + 1)
    return _Header("", None, start)


def _body_evidence(body: list[str]) -> tuple[Counter, int]:
    """(how many lines look like each family's records / separators, number of non-blank lines)."""
    counts: Counter = Counter()
    nonblank = 0
    for line in body:
        if not line.strip():
            continue
        nonblank += 1
        _count_line(line, counts)
    return counts, nonblank


def _count_line(line: str, counts: Counter) -> None:
    """Add the evidence of one non-blank line (the first shape that matches wins, as the parsers would read it)."""
    lead = line[0]
    if lead == "[":
        match = S.WIN_MSG.match(line)
        if match and S.win_time(match):
            counts["win_msg"] += 1
            counts["win_t_ko" if match["ko"] else "win_t_en" if (match["ap"] or match["ap3"]) else "win_t_24"] += 1
        return
    if lead == "-":
        match = S.WIN_SEP.match(line)
        day = S.win_sep_date(match["d"]) if match else None
        if day:
            counts["win_sep_" + day[1]] += 1
        return
    match = S.AND_KO.match(line)
    if match and S.and_ko_dt(match):
        counts["and_ko"] += 1
        return
    match = S.IOS_KO.match(line)
    if match and S.ios_ko_dt(match):
        counts["ios_ko"] += 1
        return
    if _count_english(line, counts):
        return
    day = S.day_header_date(line)
    if day:
        counts["day_" + day[1]] += 1
        return
    if S.IOS_TIME_KO.match(line) or S.IOS_TIME_EN.match(line):
        counts["ios_time"] += 1


def _count_english(line: str, counts: Counter) -> bool:
    """Android-en and iOS-en record lines (they can be identical: then ``en_shared``). True if either matched."""
    android = S.AND_EN.match(line)
    android_ok = bool(android and S.and_en_dt(android))
    ios = S.IOS_EN.match(line)
    ios_ok = bool(ios and S.ios_en_dt(ios))
    if android_ok and ios_ok:
        counts["en_shared"] += 1
        abbreviated = len(android["mon"] or "") == 3 and android["mon"].lower() != "may"
        counts["en_abbr" if abbreviated else "en_full"] += 1
    elif android_ok:
        counts["and_en"] += 1
    elif ios_ok:
        counts["ios_en"] += 1
    return android_ok or ios_ok


def _ios_time(counts: Counter) -> int:
    """Time-only iOS record lines, counted only under day headers (alone they could be anything)."""
    return counts["ios_time"] if (counts["day_ko"] or counts["day_en"]) else 0


def _scores(counts: Counter, header: _Header) -> dict[str, float]:
    """Evidence per family (windows) or format; header hints break ties and decide for exports with no records."""
    ios_time, shared = _ios_time(counts), counts["en_shared"]
    scores = {
        "windows": counts["win_msg"] + 3 * (counts["win_sep_ko"] + counts["win_sep_en"]),
        "android_ko": counts["and_ko"],
        "android_en": counts["and_en"] + shared,
        "ios_ko": (counts["ios_ko"] + (counts["day_ko"] if counts["ios_ko"] or ios_time else 0)
                   + (ios_time if counts["day_ko"] else 0)),
        "ios_en": (counts["ios_en"] + shared + (counts["day_en"] if counts["ios_en"] or shared or ios_time else 0)
                   + (ios_time if counts["day_en"] else 0)),
    }
    if header.ios_title:
        scores["ios_ko"] += 2
        scores["ios_en"] += 2
    if header.style:
        scores[header.style] += 0.5
    if shared and counts["en_abbr"] > counts["en_full"]:
        scores["ios_en"] += 0.25
    elif shared:
        scores["android_en"] += 0.25
    return scores


def _is_export(score: float, best: str, header: _Header, nonblank: int) -> bool:
    """Enough evidence for ``best``: records under the header, or a complete header with (almost) nothing under it."""
    evidence = score - (2 if header.ios_title and best.startswith("ios") else 0) - (0.5 if header.style == best else 0)
    has_header = bool(header.saved_text) or bool(header.title and is_title_line(header.title))
    if score <= 0.25:
        return False
    if evidence <= 0.25 and (header.saved_at is None or nonblank > 2):
        return False  # no record at all: only a complete header with (almost) nothing under it is an empty export
    if not has_header and evidence < max(2, 0.05 * nonblank):
        return False  # a stray date-looking line in prose is not an export
    return True


def _windows_language(counts: Counter, header: _Header, lines: list[str]) -> str:
    """windows_ko or windows_en: the day separators, then the time style, then the header's language."""
    ko = counts["win_sep_ko"] + counts["win_t_ko"] * 0.01
    en = counts["win_sep_en"] + counts["win_t_en"] * 0.01
    if ko == en:  # no separators and only 24 h times: the header language
        en = 1 if (header.saved_text is not None and header.title and "Date Saved" in lines[header.skip - 1]) else 0
        ko = 1 - en
    return "windows_ko" if ko >= en else "windows_en"
