"""Line parsers of the ``.txt`` families (Windows, Android, iOS) and the CSV reader.

Each is a generator ``(stream, ctx) -> Iterator[Record]`` that streams: memory is bounded by the longest message.
Speed matters (>= 20 MB/s on one core for 100 MB exports): the common record line of each family is found by one
``^``-anchored multi-line regex over 1 MB chunks and handled inline; every other line goes through the per-line
rules of :class:`_Emitter`.

Continuation rule (formats doc §8): only a line with a complete, valid record prefix starts a record; every other
line belongs to the open record, except

* KakaoTalk's un-stamped events: Windows system sentences (join/leave/invite/kick …), open-chat policy notices,
  a standalone ``메시지가 삭제되었습니다.`` — these become system records with the previous record's time;
* a repeated export header (title line + ``저장한 날짜 :`` / ``Date Saved :``) of a concatenated file — dropped,
  and a new segment starts;
* day separators / day headers — they set the date and are not text.

Blank lines inside a body are kept; trailing blank lines (the ones before a day header) are trimmed.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Iterable, Iterator

from ..errors import FormatError
from ..records import Kind, Record
from . import stamps as S
from .classify import (EXACT_KINDS, HIDDEN_LINES, KO_FIRST, NOTICE_CONT_PREFIXES, NOTICE_PREFIXES, SELF_PLACEHOLDERS,
                       body_kind, is_title_line, system_kind, windows_system)

SAVED_PREFIXES = ("저장한 날짜 : ", "저장한 날짜: ", "Date Saved : ", "Date Saved: ")
_CACHE_MAX = 20_000  # stamp -> datetime entries kept (cleared when full; bounded memory)
csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))  # long pasted messages


# Records are built millions of times per big export; the frozen dataclass __init__ (object.__setattr__ per
# field) is the single largest cost, so the hot paths fill the slots directly. Same object, same equality.
try:
    _new = object.__new__
    _s_ts, _s_sp, _s_tx, _s_kd = (Record.__dict__[f].__set__ for f in ("timestamp", "speaker", "text", "kind"))

    def make_record(ts: datetime, speaker: str, text: str, kind: Kind) -> Record:
        r = _new(Record)
        _s_ts(r, ts)
        _s_sp(r, speaker)
        _s_tx(r, text)
        _s_kd(r, kind)
        return r

    make_record(datetime(2000, 1, 1), "", "", Kind.MESSAGE)
except (KeyError, AttributeError, TypeError):  # Record without slots: the plain constructor
    make_record = Record  # type: ignore[assignment]


@dataclass
class Ctx:
    """Per-file parse settings and what the parser learns on the way."""

    format: str
    self_name: str
    saved_at: datetime | None = None
    ios_time_only: bool = False
    segments: list[int] = field(default_factory=lambda: [0])  # record index where each concatenated export starts
    reference: bool = False  # tests: skip the fast paths (every line through the per-line rules)


class _Emitter:
    """The open record, continuation lines and un-stamped events of the ``.txt`` parsers.

    Hot paths (a record line of a known sender) are inlined in the parsers; everything rare goes through
    :meth:`other` / :meth:`event`, which put finished records into ``out`` for the parser to yield.
    """

    __slots__ = ("ctx", "out", "ts", "speaker", "kind", "parts", "last_ts", "floor", "undated", "n", "mobile",
                 "self_name", "title_at", "prev_blank")

    def __init__(self, ctx: Ctx, mobile: bool):
        self.ctx = ctx
        self.out: list[Record] = []
        self.ts: datetime | None = None  # open record (None = no open record)
        self.speaker = ""
        self.kind: Kind | None = None  # None = a message whose kind is decided from its body when closed
        self.parts: list[str] = []
        self.last_ts: datetime | None = None
        self.floor: datetime | None = None  # start of the current day (separator / day header)
        self.undated: list[tuple[str, str, Kind]] = []
        self.n = 0
        self.mobile = mobile
        self.self_name = ctx.self_name
        self.title_at: int | None = None  # index in parts of a title-looking line (-1: no open record)
        self.prev_blank = True

    def who(self, name: str) -> str:
        return self.self_name if self.mobile and name in SELF_PLACEHOLDERS else name

    def close(self) -> Record | None:
        """Close the open record and return it (None when there is none)."""
        ts = self.ts
        if ts is None:
            return None
        parts = self.parts
        text = (parts[0] if len(parts) == 1 else "\n".join(parts)).rstrip()
        self.ts = None
        self.n += 1
        return make_record(ts, self.speaker, text, self.kind or body_kind(text))

    def flush(self) -> None:
        r = self.close()
        if r is not None:
            self.out.append(r)

    def start(self, ts: datetime, speaker: str, kind: Kind | None, text: str) -> None:
        self.flush()
        if self.undated:
            self._flush_undated(ts)
        self.ts, self.speaker, self.kind, self.parts = ts, speaker, kind, [text]
        self.last_ts = ts
        self.title_at = None
        self.prev_blank = False

    def anchor(self) -> datetime | None:
        """Time for an un-stamped event: the previous record's, or the day start if that is later."""
        if self.last_ts is None:
            return self.floor
        if self.floor is not None and self.floor > self.last_ts:
            return self.floor
        return self.last_ts

    def event(self, kind: Kind, speaker: str, text: str) -> None:
        """An un-stamped system event. It stays open, so a following continuation line (the second line of
        the Korean open-chat notice) joins it."""
        self.flush()
        self.title_at = None
        self.prev_blank = False
        ts = self.anchor()
        if ts is None:
            self.undated.append((speaker, text, kind))
            return
        self.ts, self.speaker, self.kind, self.parts = ts, speaker, kind, [text]

    def _flush_undated(self, ts: datetime) -> None:
        for speaker, text, kind in self.undated:
            self.out.append(make_record(ts, speaker, text, kind))
            self.n += 1
        self.undated = []

    def finish(self) -> None:
        self.flush()
        if self.undated:
            ts = self.floor or self.ctx.saved_at
            if ts is not None:
                self._flush_undated(ts)
            self.undated = []

    def other(self, line: str, ml: str) -> None:
        """A line with no record prefix: blank, notice, hidden, repeated header, or a continuation.
        ``ml`` is the line without leading U+FEFF (for matching); ``line`` is kept verbatim in bodies."""
        s = ml.strip()
        if not s:
            if self.ts is not None:
                self.parts.append(line)
            self.prev_blank = True
            return
        self.prev_blank = False
        if s in HIDDEN_LINES:
            self.event(Kind.HIDDEN, "", s)
            return
        if self.title_at is not None and ml.startswith(SAVED_PREFIXES):
            # a concatenated export: drop its title line from the open body; a new segment starts
            if self.ts is not None and self.title_at > 0:
                del self.parts[self.title_at:]
            self.flush()
            self.title_at = None
            k = self.n + len(self.undated)
            if self.ctx.segments[-1] != k:
                self.ctx.segments.append(k)
            self.prev_blank = True
            return
        if s.startswith(NOTICE_PREFIXES):
            if (self.kind is Kind.NOTICE and self.ts is not None and len(self.parts) == 1
                    and s.startswith(NOTICE_CONT_PREFIXES) and not self.parts[0].startswith(NOTICE_CONT_PREFIXES)):
                self.parts.append(s)  # second line of the two-line Korean notice
            else:
                self.event(Kind.NOTICE, "", s)
            return
        if self.ts is not None:
            self.parts.append(line)
        if is_title_line(ml):
            # maybe line 1 of a concatenated export; confirmed only if a saved-date line follows
            self.title_at = len(self.parts) - 1 if self.ts is not None else -1
        else:
            self.title_at = None


_NEVER = re.compile(r"(?!)")  # the fast pattern of the reference (per-line only) parse


# --------------------------------------------------------------------------------------------------- input
class TextStream:
    """The decoded text of an export after its header: as lines (CSV) or as line-aligned chunks (``.txt``).

    Chunks end at a line boundary and every line in them ends with ``\n``, so the ``.txt`` parsers can let one
    multi-line regex find the common record lines in C and hand only the rest to per-line Python code.
    """

    CHUNK = 1 << 20

    def __init__(self, head: list[str], rest: IO[str] | None = None):
        self.head, self.rest = head, rest

    @classmethod
    def from_text(cls, text: str) -> "TextStream":
        return cls([text])

    def lines(self) -> Iterator[str]:
        for block in self.head:
            yield from block.splitlines(keepends=True) if block.count("\n") > 1 else (block,)
        if self.rest is not None:
            yield from self.rest

    def chunks(self) -> Iterator[str]:
        buf = "".join(self.head)
        while True:
            data = self.rest.read(self.CHUNK) if self.rest is not None else ""
            if not data:
                if buf:
                    yield buf if buf.endswith("\n") else buf + "\n"
                return
            buf += data
            cut = buf.rfind("\n")
            if cut >= 0:
                yield buf[: cut + 1]
                buf = buf[cut + 1:]


def _scan(chunks: Iterable[str], fast: re.Pattern, on_fast, on_line, out: list[Record]) -> Iterator[Record]:
    """Drive a ``.txt`` parser: ``fast`` (a ``^``-anchored multi-line regex) finds the common record lines of
    each chunk; ``on_fast(m, chunk, eol)`` handles one (returns a closed Record, None, or False = "not mine,
    treat as an ordinary line"); every other line goes to ``on_line(line)``, in file order."""
    for chunk in chunks:
        pos = 0
        find = chunk.find
        for m in fast.finditer(chunk):
            st = m.start()
            if st > pos:
                for line in chunk[pos:st - 1].split("\n"):
                    on_line(line)
                if out:
                    yield from out
                    out.clear()
            eol = find("\n", m.end())
            pos = eol + 1
            r = on_fast(m, chunk, eol)
            if r is False:
                on_line(chunk[st:eol])
            elif r is not None:
                yield r
            if out:
                yield from out
                out.clear()
        if pos < len(chunk):
            for line in chunk[pos:-1].split("\n"):
                on_line(line)
            if out:
                yield from out
                out.clear()


# --------------------------------------------------------------------------------------------------- Windows
_WIN_FAST = re.compile(r"^\[([^\n]*?)\] \[((?:오전|오후) \d{1,2}:\d{2})\](?: |$)", re.M)


class _Windows(_Emitter):
    """Windows ``.txt``: ``[sender] [time] body`` under ``--- date ---`` separators; un-stamped system lines."""

    __slots__ = ("date", "times")

    def __init__(self, ctx: Ctx):
        super().__init__(ctx, mobile=False)
        self.date: datetime | None = None
        self.times: dict[str, timedelta | None] = {}  # "오후 3:05" -> offset from midnight

    def on_fast(self, m: re.Match, chunk: str, eol: int):
        date = self.date
        if date is None:
            return False
        key = m.group(2)
        off = self.times.get(key, False)
        if off is False:
            ap, hm = key.split(" ")
            h, mi = hm.split(":")
            off = self.times[key] = _offset(h, mi, ap)
        if off is None:
            return False
        ts = date + off
        r = None
        if self.ts is not None:  # close the open record (inlined close())
            parts = self.parts
            text = (parts[0] if len(parts) == 1 else "\n".join(parts)).rstrip()
            self.n += 1
            r = make_record(self.ts, self.speaker, text, self.kind or body_kind(text))
        if self.undated:
            if r is not None:
                self.out.append(r)
                r = None
            self._flush_undated(ts)
        self.ts, self.speaker, self.kind, self.parts = ts, m.group(1), None, [chunk[m.end():eol]]
        self.last_ts = ts
        self.title_at = None
        self.prev_blank = False
        return r

    def on_line(self, line: str) -> None:
        ml = line.lstrip("\ufeff") if line[:1] == "\ufeff" else line
        c = ml[:1]
        if c == "[" and self.date is not None:
            m = S.WIN_MSG.match(ml)
            if m is not None:
                hm = S.win_time(m)
                if hm is not None:
                    d = self.date
                    self.start(datetime(d.year, d.month, d.day, hm[0], hm[1]), m.group("s"), None, m.group("b") or "")
                    return
        elif c == "-":
            m = S.WIN_SEP.match(ml)
            d = S.win_sep_date(m.group("d")) if m else None
            if d is not None:
                self.date = d[0]
                self.floor = d[0]
                self.prev_blank = False
                return
        sysk = windows_system(ml) if ml[-1:] == "." else None
        if sysk is not None:
            self.event(sysk[0], sysk[1], ml.strip())
        else:
            self.other(line, ml)


# long-function: the per-line hot loop of the parser; split into calls it measurably slows bench_parse.
def parse_windows(stream: TextStream, ctx: Ctx) -> Iterator[Record]:
    """The chunk loop; like :func:`_parse_mobile`, consecutive ``[sender] [오전/오후 h:mm] body`` lines are handled
    inline with the open record in local variables (:meth:`_Windows.on_fast` is the same logic, kept for
    clarity and for the reference path)."""
    p = _Windows(ctx)
    out, times, on_line = p.out, p.times, p.on_line
    mk, kind_of, exact, ko_first, message = make_record, body_kind, EXACT_KINDS, KO_FIRST, Kind.MESSAGE
    fast = _NEVER if ctx.reference else _WIN_FAST
    mine = False
    o_ts: datetime | None = None
    o_sp = o_first = ""
    n_fast = 0
    for chunk in stream.chunks():
        pos = 0
        find = chunk.find
        for m in fast.finditer(chunk):
            st = m.start()
            date = p.date
            key = m.group(2)
            off = times.get(key, False)
            if off is False:
                ap, hm = key.split(" ")
                h, mi = hm.split(":")
                off = times[key] = _offset(h, mi, ap)
            if st > pos or date is None or off is None or p.undated:
                # other lines first, or an unusual case: hand over to the state machine for this line too
                if mine:
                    p.ts = p.last_ts = o_ts
                    p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
                    mine = False
                p.n += n_fast
                n_fast = 0
                if st > pos:
                    for line in chunk[pos:st - 1].split("\n"):
                        on_line(line)
                    if out:
                        yield from out
                        out.clear()
                eol = find("\n", m.end())
                pos = eol + 1
                r = p.on_fast(m, chunk, eol)
                if r is False:
                    on_line(chunk[st:eol])
                elif r is not None:
                    yield r
                if out:
                    yield from out
                    out.clear()
                continue
            e = m.end()
            eol = find("\n", e)
            pos = eol + 1
            ts = date + off
            if mine:
                text = o_first.rstrip()
                k = exact.get(text)
                if k is None:
                    c = text[:1]
                    k = message if "\uac00" <= c <= "\ud7a3" and c not in ko_first else kind_of(text)
                n_fast += 1
                yield mk(o_ts, o_sp, text, k)
            else:
                if p.ts is not None:
                    parts = p.parts
                    text = (parts[0] if len(parts) == 1 else "\n".join(parts)).rstrip()
                    p.n += 1
                    yield mk(p.ts, p.speaker, text, p.kind or kind_of(text))
                    p.ts = None
                mine = True
            o_ts, o_sp, o_first = ts, m.group(1), chunk[e:eol]
        if pos < len(chunk):
            if mine:
                p.ts = p.last_ts = o_ts
                p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
                mine = False
            p.n += n_fast
            n_fast = 0
            for line in chunk[pos:-1].split("\n"):
                on_line(line)
            if out:
                yield from out
                out.clear()
    if mine:
        p.ts = p.last_ts = o_ts
        p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
    p.n += n_fast
    p.finish()
    yield from out


# --------------------------------------------------------------------------------------------------- Android / iOS
def _mobile_rest(em: _Emitter, ts: datetime, rest: str, message_sep: bool, seen: dict[str, str]) -> None:
    """Open the record of a stamped mobile line from the text after its stamp.

    ``sender : body`` is a message: split on the FIRST `` : `` (bodies contain more). Text without one, the iOS
    ``stamp: text`` shape, or an empty sender is a system line. A text *with* `` : `` whose sender has not spoken
    before and that is a whole KakaoTalk system sentence is a system line too (a nickname containing `` : ``).
    """
    if message_sep:
        i = rest.find(" : ")
        if i < 0 and rest.endswith(" :"):
            i = len(rest) - 2
        if i > 0 and rest[:i].strip():
            sender = rest[:i]
            sp = seen.get(sender)
            if sp is None and not (rest.endswith(".") and system_kind(rest) is not None):
                sp = seen[sender] = em.who(sender)
            if sp is not None:
                em.start(ts, sp, None, rest[i + 3:])
                return
    text = rest.strip()
    if text.startswith(":"):  # "오전 12:05,  : 시스템 알림" (empty sender)
        text = text[1:].strip()
    k = system_kind(text)
    kind, subject = k if k is not None else (Kind.SYSTEM, "")
    em.start(ts, em.who(subject), kind, text)


# The common message line of each stamp style: stamp, ", ", sender (no newline), " : ". Named groups: dk = the
# date part (cached -> midnight), tk = the time part (cached -> offset), s = the sender, and the pieces the
# converters need (y, mo|mon, d, h, mi, ap). A file's fast pattern is the style its first lines use most; lines
# of any other shape still parse through the full regexes (slower).
def _fast(pattern: str) -> re.Pattern:
    return re.compile("^" + pattern + r", (?P<s>[^\n]*?) : ", re.M)


_KO_TIME = r"(?P<tk>(?P<ap>오전|오후) (?P<h>\d{1,2}):(?P<mi>\d{2}))"
_EN_TIME = r"(?P<tk>(?P<h>\d{1,2}):(?P<mi>\d{2}) ?(?P<ap>[AaPp])[Mm])"
FAST = {
    "android_ko": [_fast(r"(?P<dk>(?P<y>\d{4})년 (?P<mo>\d{1,2})월 (?P<d>\d{1,2})일) " + _KO_TIME)],
    "android_en": [
        _fast(r"(?P<dk>(?P<mon>[A-Z][a-z]{2,8}) (?P<d>\d{1,2}), (?P<y>\d{4})), " + _EN_TIME),  # 2018-2023
        _fast(_EN_TIME + r", (?P<dk>(?P<mon>[A-Z][a-z]{2,8}) (?P<d>\d{1,2}), (?P<y>\d{4}))"),  # 2014-2015
        _fast(r"(?P<dk>(?P<d>\d{1,2}) (?P<mon>[A-Z][a-z]{2,8}) (?P<y>\d{4})), " + _EN_TIME),  # day-first regions
    ],
    "ios_ko": [_fast(r"(?P<dk>(?P<y>\d{4})\. (?P<mo>\d{1,2})\. (?P<d>\d{1,2})\.) "
                     r"(?P<tk>(?:(?P<ap>오전|오후) )?(?P<h>\d{1,2}):(?P<mi>\d{2}))")],
    "ios_en": [
        _fast(r"(?P<dk>(?P<mon>[A-Z][a-z]{2}) (?P<d>\d{1,2}), (?P<y>\d{4})), " + _EN_TIME),  # 2015
        _fast(r"(?P<dk>(?P<mon>[A-Z][a-z]{2}) (?P<d>\d{1,2}), (?P<y>\d{4})) at "
              r"(?P<tk>(?P<h>\d{1,2}):(?P<mi>\d{2})(?: (?P<ap>[AP])M)?)"),  # 2026 "at" style
    ],
}


def _pick_fast(fmt: str, head: list[str]) -> re.Pattern:
    cands = FAST[fmt]
    if len(cands) == 1:
        return cands[0]
    text = "".join(head)
    return max(cands, key=lambda rx: len(rx.findall(text)))


def _day_conv(m: re.Match) -> datetime | None:
    g = m.groupdict()
    mo = g.get("mo") or S.month_of(g.get("mon"))
    return S.make_dt(g["y"], mo, g["d"]) if mo else None


def _offset(h: str, mi: str, ap: str | None) -> timedelta | None:
    hh = S.hour_of(int(h), ap)
    return None if hh is None or int(mi) > 59 else timedelta(hours=hh, minutes=int(mi))


def _time_conv(m: re.Match) -> timedelta | None:
    return _offset(m.group("h"), m.group("mi"), m.group("ap"))


class _Mobile(_Emitter):
    """Android and iOS ``.txt``: every record carries its own stamp. They differ in stamp shapes, day headers
    (Android: a bare stamp; iOS: a dated weekday line) and iOS's ``stamp: text`` system lines.

    A line shaped like a day header is one when it follows a blank line (or comes before the first record), as
    in every real export; otherwise it is held until the next line: followed by a record it was a day header
    (an edited file that lost the blank line), followed by anything else it was text of the open message."""

    __slots__ = ("days", "times", "stamps", "seen", "full", "full_conv", "ios", "time_rx", "day", "held")

    def __init__(self, ctx: Ctx, full: re.Pattern, full_conv, ios: bool, time_rx: re.Pattern | None):
        super().__init__(ctx, mobile=True)
        self.days: dict[str, datetime | None] = {}  # "2023년 2월 9일" -> midnight (None = impossible date)
        self.times: dict[str, timedelta | None] = {}  # "오후 3:05" -> offset from midnight
        self.stamps: dict[str, datetime | None] = {}  # whole stamps of the less common shapes
        self.seen: dict[str, str] = {}  # sender as written -> speaker (self placeholder mapped)
        self.full, self.full_conv = full, full_conv
        self.ios, self.time_rx = ios, time_rx
        self.day: datetime | None = None
        self.held: tuple[str, str, datetime] | None = None  # a day-header-shaped line awaiting the next line

    def resolve_held(self, record_follows: bool) -> None:
        line, ml, when = self.held
        self.held = None
        if record_follows:
            self.floor = when
            if self.ios:
                self.day = when
        else:
            self.other(line, ml)

    def _header(self, line: str, ml: str, when: datetime) -> None:
        if self.prev_blank or (self.n == 0 and self.ts is None):
            self.floor = when
            if self.ios:
                self.day = when
            self.prev_blank = False
        else:
            self.held = (line, ml, when)

    def on_line(self, line: str) -> None:
        ml = line.lstrip("\ufeff") if line[:1] == "\ufeff" else line
        m = self.full.match(ml)
        ts = None
        if m is not None:
            st = m.group("st")
            ts = self.stamps.get(st, False)
            if ts is False:
                if len(self.stamps) > _CACHE_MAX:
                    self.stamps.clear()
                ts = self.stamps[st] = self.full_conv(m)
        elif self.time_rx is not None and self.day is not None:
            m = self.time_rx.match(ml)
            if m is not None:
                g = m.groupdict()
                hh = S.hour_of(int(g["h"]), g.get("ko") or g.get("ap"))
                if hh is not None and int(g["mi"]) < 60:
                    ts = self.day.replace(hour=hh, minute=int(g["mi"]))
        rest = m.group("rest") if ts is not None else None
        if self.held is not None:
            self.resolve_held(ts is not None and (self.ios or rest is not None))
        if ts is not None:
            if self.ios:
                _mobile_rest(self, ts, rest or "", m.group("sep") == ",", self.seen)
            elif rest is not None:
                _mobile_rest(self, ts, rest, True, self.seen)
            else:
                self._header(line, ml, ts)  # Android day header: date + time of the day's first record
            return
        if self.ios and (ml[:1].isdigit() or ml[:1].isupper()):
            d = S.day_header_date(ml)
            if d is not None:
                self._header(line, ml, d[0])
                return
        self.other(line, ml)

    def finish(self) -> None:
        if self.held is not None:
            self.resolve_held(False)
        super().finish()


# long-function: the per-line hot loop of the parser; split into calls it measurably slows bench_parse.
def _parse_mobile(stream: TextStream, ctx: Ctx, full: re.Pattern, full_conv, ios: bool,
                  time_rx: re.Pattern | None = None) -> Iterator[Record]:
    """The chunk loop. This is the parser's hot path: a record line of the file's common shape from a known
    sender is handled inline, and while consecutive records are all of that kind the open record lives in local
    variables (``o_*``); it is handed to the :class:`_Mobile` state machine only when other lines (continuations,
    day headers, system lines …) need it."""
    p = _Mobile(ctx, full, full_conv, ios, time_rx)
    fast = _NEVER if ctx.reference else _pick_fast(ctx.format, stream.head)
    day_conv, time_conv = _day_conv, _time_conv
    out, days, times, seen, on_line = p.out, p.days, p.times, p.seen, p.on_line
    mk, kind_of, exact, ko_first, message = make_record, body_kind, EXACT_KINDS, KO_FIRST, Kind.MESSAGE
    mine = False  # is the open record the local one?
    o_ts: datetime | None = None
    o_sp = o_first = ""
    n_fast = 0  # records closed here, not yet counted in p.n
    held = undated = False
    for chunk in stream.chunks():
        pos = 0
        find = chunk.find
        for m in fast.finditer(chunk):
            st = m.start()
            if st > pos:
                if mine:  # hand the open record to the state machine
                    p.ts = p.last_ts = o_ts
                    p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
                    mine = False
                p.n += n_fast
                n_fast = 0
                for line in chunk[pos:st - 1].split("\n"):
                    on_line(line)
                if out:
                    yield from out
                    out.clear()
                held, undated = p.held is not None, bool(p.undated)
            e = m.end()
            eol = find("\n", e)
            pos = eol + 1
            dk, tk, sender = m.group("dk", "tk", "s")
            sp = seen.get(sender)
            day = days.get(dk, False)
            if day is False:
                day = days[dk] = day_conv(m)
            off = times.get(tk, False)
            if off is False:
                off = times[tk] = time_conv(m)
            if sp is None or day is None or off is None:
                if mine:
                    p.ts = p.last_ts = o_ts
                    p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
                    mine = False
                p.n += n_fast
                n_fast = 0
                on_line(chunk[st:eol])  # unseen sender or odd stamp: the full rules decide
                if out:
                    yield from out
                    out.clear()
                held, undated = p.held is not None, bool(p.undated)
                continue
            ts = day + off
            if mine:  # close the local open record
                text = o_first.rstrip()
                k = exact.get(text)
                if k is None:
                    c = text[:1]
                    k = message if "\uac00" <= c <= "\ud7a3" and c not in ko_first else kind_of(text)
                n_fast += 1
                yield mk(o_ts, o_sp, text, k)
            else:
                if held:
                    p.resolve_held(True)
                    held = False
                    if out:
                        yield from out
                        out.clear()
                if p.ts is not None:  # close the state machine's open record
                    parts = p.parts
                    text = (parts[0] if len(parts) == 1 else "\n".join(parts)).rstrip()
                    p.n += 1
                    yield mk(p.ts, p.speaker, text, p.kind or kind_of(text))
                    p.ts = None
                if undated:
                    p._flush_undated(ts)
                    undated = False
                    yield from out
                    out.clear()
                mine = True
            o_ts, o_sp, o_first = ts, sp, chunk[e:eol]
        if pos < len(chunk):
            if mine:
                p.ts = p.last_ts = o_ts
                p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
                mine = False
            p.n += n_fast
            n_fast = 0
            for line in chunk[pos:-1].split("\n"):
                on_line(line)
            if out:
                yield from out
                out.clear()
            held, undated = p.held is not None, bool(p.undated)
    if mine:
        p.ts = p.last_ts = o_ts
        p.speaker, p.kind, p.parts, p.title_at, p.prev_blank = o_sp, None, [o_first], None, False
    p.n += n_fast
    p.finish()
    yield from out


def parse_android(stream: TextStream, ctx: Ctx) -> Iterator[Record]:
    if ctx.format == "android_en":
        return _parse_mobile(stream, ctx, S.AND_EN, S.and_en_dt, False)
    return _parse_mobile(stream, ctx, S.AND_KO, S.and_ko_dt, False)


def parse_ios(stream: TextStream, ctx: Ctx) -> Iterator[Record]:
    en = ctx.format == "ios_en"
    time_rx = (S.IOS_TIME_EN if en else S.IOS_TIME_KO) if ctx.ios_time_only else None
    return _parse_mobile(stream, ctx, S.IOS_EN if en else S.IOS_KO, S.ios_en_dt if en else S.ios_ko_dt, True, time_rx)


# --------------------------------------------------------------------------------------------------- CSV
_SECONDS = {f"{i:02d}": timedelta(seconds=i) for i in range(60)}
_CSV_SPECIAL = (Kind.KICK, Kind.HIDDEN, Kind.HOST)


# long-function: the per-line hot loop of the parser; split into calls it measurably slows bench_parse.
def parse_csv(stream: TextStream, ctx: Ctx) -> Iterator[Record]:
    """PC/Mac CSV (``Date,User,Message``; RFC 4180 quoting, read with the csv module: quoted newlines, doubled
    quotes). Bodies are right-trimmed like the ``.txt`` parsers'.

    System rows are recognised by KakaoTalk's sentences whose subject is the row's User (``박서준 joined this
    chatroom.``), or any system sentence in a row with an empty User; rows with an empty Date take the previous
    row's time. A repeated header row (concatenated CSVs) starts a new segment. A line that is not a row of
    this format (quoting broken by an editor) is kept as text of the previous row.
    """
    last_ts: datetime | None = None
    undated: list[tuple[str, str, Kind]] = []
    days: dict[str, datetime | None] = {}  # "2018-04-11" -> midnight
    hms: dict[str, timedelta | None] = {}  # "09:21" -> offset
    date_rx = S.CSV_DATE.match
    secs = _SECONDS
    kind_of, exact, ko_first, message = body_kind, EXACT_KINDS, KO_FIRST, Kind.MESSAGE
    # the last row is held back one step: a broken (unquoted) line after it may still extend its text
    p_ts: datetime | None = None
    p_sp = p_tx = ""
    p_kd = Kind.MESSAGE
    done = 0  # records yielded so far
    try:
        for row in csv.reader(stream.lines()):
            if len(row) != 3:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
            date = row[0]
            if not date[:1].isdigit():
                date = date.lstrip("\ufeff").strip()
                if len(row) >= 3 and (date.lower() == "date" or date == "날짜"):
                    if p_ts is not None:
                        yield make_record(p_ts, p_sp, p_tx, p_kd)
                        done += 1
                        p_ts = None
                    if done and ctx.segments[-1] != done:
                        ctx.segments.append(done)
                    continue
            # "2018-04-11 09:21:40" = cached day + cached hour:minute + seconds
            ts = None
            if len(date) == 19 and date[16] == ":" and date[10] == " ":
                day = days.get(date[:10], False)
                if day is False:
                    m = date_rx(date)
                    day = days[date[:10]] = S.make_dt(m["y"], m["m"], m["d"]) if m else None
                hm = hms.get(date[11:16], False)
                if hm is False:
                    m = date_rx(date)
                    hm = hms[date[11:16]] = (_offset(m["h"], m["mi"], None) if m else None)
                off = secs.get(date[17:])
                if day is not None and hm is not None and off is not None:
                    ts = day + hm + off
            elif date:
                m = date_rx(date)
                ts = S.make_dt(m["y"], m["m"], m["d"], m["h"], m["mi"], m["s"] or 0) if m else None
            if (ts is None and date) or len(row) < 3:
                if p_ts is not None:
                    p_tx += "\n" + ",".join(row)
                continue
            user = row[1]
            text = (row[2] if len(row) == 3 else ",".join(row[2:])).rstrip()
            kind = None
            speaker = user
            if text[-1:] == ".":
                k = system_kind(text)
                if k is not None and (not user or k[1] == user or k[0] in _CSV_SPECIAL):
                    kind, speaker = k[0], k[1] or user
            elif text.startswith(NOTICE_PREFIXES) or (text[:1].isspace() and text.lstrip().startswith(NOTICE_PREFIXES)):
                kind, speaker = Kind.NOTICE, ""
            if kind is None:
                if not user or user.isspace():
                    kind = Kind.SYSTEM
                else:
                    kind = exact.get(text)
                    if kind is None:
                        c = text[:1]
                        kind = message if "\uac00" <= c <= "\ud7a3" and c not in ko_first else kind_of(text)
            if p_ts is not None:
                yield make_record(p_ts, p_sp, p_tx, p_kd)
                done += 1
                p_ts = None
            if ts is None:
                if last_ts is None:
                    undated.append((speaker, text, kind))
                    continue
                ts = last_ts
            elif undated:
                for sp, tx, kd in undated:
                    yield make_record(ts, sp, tx, kd)
                    done += 1
                undated = []
            last_ts = p_ts = ts
            p_sp, p_tx, p_kd = speaker, text, kind
    except csv.Error as exc:
        raise FormatError(f"broken CSV row ({exc}); re-export the chat") from None
    if p_ts is not None:
        yield make_record(p_ts, p_sp, p_tx, p_kd)


PARSERS = {
    "windows_ko": parse_windows, "windows_en": parse_windows, "csv": parse_csv,
    "android_ko": parse_android, "android_en": parse_android, "ios_ko": parse_ios, "ios_en": parse_ios,
}
