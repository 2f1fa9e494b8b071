"""Several exports of one room -> one timeline, without duplicates where they overlap.

Users re-export the same room every few months, sometimes from different platforms, so exports overlap. A
message is identified by a *key* that every platform writes the same way:

* user messages: (minute, normalised first line) — minute because only CSV has seconds; the first non-blank line
  with whitespace runs collapsed (NBSP, U+FEFF), because a platform that does not recognise some system line
  glues it to the end of the previous body; media placeholders and sender-deleted messages by category only
  (``사진`` / ``<Photo>`` / ``photo`` are one photo). The **speaker is not part of the key**: old mobile exports
  write the exporter as 회원님/you/You (mapped to the self name) where a Windows export has the real nickname;
* system events: (kind, subject, day) — Windows system lines carry no time of their own.

Repeated messages are legitimate (the same "ㅋㅋ" twice in one minute is two messages), so keys are counted as a
multiset: the merged timeline holds, for every key, the *maximum* count over the exports — the i-th occurrence of
a key in one export is the same message as the i-th occurrence in another.

Order: the largest export is the base; each other export's extra records are placed after the base record that
matched its nearest preceding matched message (and never before an earlier minute), so the conversation order of
both exports is kept where they interleave.

Self name: when matched messages show that one export's self name (from 회원님/you/You) is another export's real
nickname — consistently — the self name is replaced by the nickname in the merged timeline, so one person does not
become two speakers. Other differing names (a nickname changed between exports) are left as written.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Hashable, Sequence

from ..records import MEDIA_KINDS, SYSTEM_KINDS, Kind, Record


def norm_text(text: str) -> str:
    """Whitespace-insensitive form of a body (U+FEFF dropped, NBSP/newlines/runs of spaces -> one space)."""
    return " ".join(text.replace("\ufeff", "").split())


def _first_line(text: str) -> str:
    """A body's first non-blank line: platforms agree on it even where one glued an unrecognised system line
    or notice to the end of the body and another did not."""
    for line in text.split("\n"):
        if line.strip():
            return line
    return ""


def minute_of(ts: datetime) -> datetime:
    return ts - timedelta(seconds=ts.second, microseconds=ts.microsecond) if (ts.second or ts.microsecond) else ts


def record_key(r: Record) -> Hashable:
    """The cross-platform identity of a record (see module doc)."""
    k = r.kind
    if k in SYSTEM_KINDS:
        return ("s", k.value, norm_text(r.speaker), r.timestamp.date())
    if k is Kind.MESSAGE:
        return ("m", minute_of(r.timestamp), norm_text(_first_line(r.text)))
    return ("m", minute_of(r.timestamp), "\x00media" if k in MEDIA_KINDS else "\x00" + k.value)


def _aliases(a: Sequence[Record], b: Sequence[Record], pairs: list[tuple[int, int]], self_name: str
             ) -> tuple[dict[str, str], dict[str, str]]:
    """Renames for A and for B when a self name consistently (>= 2 matches, >= 80 %) pairs with one nickname."""
    by_b: dict[str, Counter] = defaultdict(Counter)
    by_a: dict[str, Counter] = defaultdict(Counter)
    for ia, ib in pairs:
        ra, rb = a[ia], b[ib]
        if ra.kind in SYSTEM_KINDS:
            continue
        by_b[rb.speaker][ra.speaker] += 1
        by_a[ra.speaker][rb.speaker] += 1
    ren_a: dict[str, str] = {}
    ren_b: dict[str, str] = {}
    for counts, ren in ((by_b, ren_b), (by_a, ren_a)):
        c = counts.get(self_name)
        if not c:
            continue
        other, n = c.most_common(1)[0]
        total = sum(c.values())
        if other != self_name and n >= 2 and n >= 0.8 * total:
            ren[self_name] = other
    return ren_a, ren_b


def _renamed(r: Record, ren: dict[str, str]) -> Record:
    new = ren.get(r.speaker)
    return r if new is None else Record(r.timestamp, new, r.text, r.kind)


def merge_two(a: Sequence[Record], b: Sequence[Record], self_name: str = "나") -> list[Record]:
    """Merge export ``b`` into export ``a`` (``a`` is the base). See the module doc."""
    keys_a = [record_key(r) for r in a]
    where: dict[Hashable, list[int]] = defaultdict(list)
    for i, k in enumerate(keys_a):
        where[k].append(i)
    taken: Counter = Counter()
    pairs: list[tuple[int, int]] = []
    extras: list[int] = []
    anchor_of: dict[int, int] = {}
    last_anchor = -1
    for ib, r in enumerate(b):
        k = record_key(r)
        j = taken[k]
        taken[k] = j + 1
        lst = where.get(k)
        if lst is not None and j < len(lst):
            pairs.append((lst[j], ib))
            if k[0] == "m":  # only timed messages anchor the order (system keys are per day)
                last_anchor = max(last_anchor, lst[j])
        else:
            extras.append(ib)
            anchor_of[ib] = last_anchor
    ren_a, ren_b = _aliases(a, b, pairs, self_name)

    # running max of base minutes (monotone even if the base is not perfectly sorted)
    mins: list[datetime] = []
    cur = None
    for r in a:
        m = minute_of(r.timestamp)
        cur = m if cur is None or m > cur else cur
        mins.append(cur)
    items: list[tuple[int, int, int, Record]] = [(i, 0, 0, _renamed(r, ren_a)) for i, r in enumerate(a)]
    for ib in extras:
        r = b[ib]
        by_time = bisect_left(mins, minute_of(r.timestamp)) - 1
        items.append((max(anchor_of[ib], by_time), 1, ib, _renamed(r, ren_b)))
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return [t[3] for t in items]


def merge_timelines(exports: list[list[Record]], self_name: str = "나") -> list[Record]:
    """Several exports of one room (each a record list in file order) -> one timeline without duplicates.

    ``self_name`` is the name the parser gave the exporter's placeholder (``paths.raw.self_name``); pass the
    same value used when parsing. Works across platforms (CSV seconds vs minutes, 회원님/you/You vs nickname).
    """
    parts = [list(e) for e in exports if e]
    if not parts:
        return []
    order = sorted(range(len(parts)), key=lambda i: (-sum(not r.is_system for r in parts[i]), i))
    merged = parts[order[0]]
    for i in order[1:]:
        merged = merge_two(merged, parts[i], self_name)
    return merged
