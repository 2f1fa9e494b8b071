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


def minute_of(stamp: datetime) -> datetime:
    if not (stamp.second or stamp.microsecond):
        return stamp
    return stamp - timedelta(seconds=stamp.second, microseconds=stamp.microsecond)


def record_key(record: Record) -> Hashable:
    """The cross-platform identity of a record (see module doc)."""
    kind = record.kind
    if kind in SYSTEM_KINDS:
        return ("s", kind.value, norm_text(record.speaker), record.timestamp.date())
    if kind is Kind.MESSAGE:
        return ("m", minute_of(record.timestamp), norm_text(_first_line(record.text)))
    return ("m", minute_of(record.timestamp), "\x00media" if kind in MEDIA_KINDS else "\x00" + kind.value)


def _aliases(base: Sequence[Record], incoming: Sequence[Record], pairs: list[tuple[int, int]], self_name: str
             ) -> tuple[dict[str, str], dict[str, str]]:
    """Renames for A (``base``) and B (``incoming``): a self name that consistently (>= 2 matches, >= 80 %)
    pairs with one nickname."""
    by_b: dict[str, Counter] = defaultdict(Counter)
    by_a: dict[str, Counter] = defaultdict(Counter)
    for base_index, incoming_index in pairs:
        base_record, incoming_record = base[base_index], incoming[incoming_index]
        if base_record.kind in SYSTEM_KINDS:
            continue
        by_b[incoming_record.speaker][base_record.speaker] += 1
        by_a[base_record.speaker][incoming_record.speaker] += 1
    ren_a: dict[str, str] = {}
    ren_b: dict[str, str] = {}
    for counts, ren in ((by_b, ren_b), (by_a, ren_a)):
        partners = counts.get(self_name)
        if not partners:
            continue
        other, count = partners.most_common(1)[0]
        total = sum(partners.values())
        if other != self_name and count >= 2 and count >= 0.8 * total:
            ren[self_name] = other
    return ren_a, ren_b


def _renamed(record: Record, ren: dict[str, str]) -> Record:
    new = ren.get(record.speaker)
    return record if new is None else Record(record.timestamp, new, record.text, record.kind)


def merge_two(base: Sequence[Record], incoming: Sequence[Record], self_name: str = "나") -> list[Record]:
    """Merge export ``incoming`` into export ``base`` (B into A of the module doc)."""
    keys_a = [record_key(record) for record in base]
    where: dict[Hashable, list[int]] = defaultdict(list)
    for position, key in enumerate(keys_a):
        where[key].append(position)
    taken: Counter = Counter()
    pairs: list[tuple[int, int]] = []
    extras: list[int] = []
    anchor_of: dict[int, int] = {}
    last_anchor = -1
    for incoming_index, record in enumerate(incoming):
        key = record_key(record)
        seen = taken[key]
        taken[key] = seen + 1
        lst = where.get(key)
        if lst is not None and seen < len(lst):
            pairs.append((lst[seen], incoming_index))
            if key[0] == "m":  # only timed messages anchor the order (system keys are per day)
                last_anchor = max(last_anchor, lst[seen])
        else:
            extras.append(incoming_index)
            anchor_of[incoming_index] = last_anchor
    ren_a, ren_b = _aliases(base, incoming, pairs, self_name)

    # running max of base minutes (monotone even if the base is not perfectly sorted)
    mins: list[datetime] = []
    cur = None
    for record in base:
        minute = minute_of(record.timestamp)
        cur = minute if cur is None or minute > cur else cur
        mins.append(cur)
    items: list[tuple[int, int, int, Record]] = [(position, 0, 0, _renamed(record, ren_a))
                                                 for position, record in enumerate(base)]
    for incoming_index in extras:
        record = incoming[incoming_index]
        by_time = bisect_left(mins, minute_of(record.timestamp)) - 1
        items.append((max(anchor_of[incoming_index], by_time), 1, incoming_index, _renamed(record, ren_b)))
    items.sort(key=lambda item: (item[0], item[1], item[2]))
    return [item[3] for item in items]


def merge_timelines(exports: list[list[Record]], self_name: str = "나") -> list[Record]:
    """Several exports of one room (each a record list in file order) -> one timeline without duplicates.

    ``self_name`` is the name the parser gave the exporter's placeholder (``paths.raw.self_name``); pass the
    same value used when parsing. Works across platforms (CSV seconds vs minutes, 회원님/you/You vs nickname).
    """
    parts = [list(export) for export in exports if export]
    if not parts:
        return []
    order = sorted(range(len(parts)), key=lambda index: (-sum(not record.is_system for record in parts[index]), index))
    merged = parts[order[0]]
    for index in order[1:]:
        merged = merge_two(merged, parts[index], self_name)
    return merged
