"""From a room's merged timeline of records to sessions of turns (pure functions; preprocess.py drives them).

Steps, each one documented where it is implemented:

1. :func:`rank_speakers` — real names → pseudonym numbers (1 = most messages; past ``max_speakers`` → 0 = "S0").
2. :func:`filter_records` — clean, mask PII, apply the media/system/length/low-signal rules; every input record is
   either kept (as a :class:`Message`) or counted under exactly one drop reason.
3. :func:`build_sessions` — split at silences longer than ``session_gap_minutes`` and merge one speaker's bursts
   into turns.
4. :func:`split_sessions` — the latest sessions (by start time) become the validation split.

Turn text uses :func:`~chatbot.data.tokenizer.placeholder_marker` markers for placeholders, so the encoder can
insert the real placeholder token ids while anything a user typed stays plain text.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

import numpy as np

from ..config import PreprocessConfig
from ..records import MEDIA_KINDS, SYSTEM_KINDS, Kind, Record
from .pii import PiiMasker
from .tokenizer import placeholder_marker, strip_markers

SYSTEM_SPEAKER = -1  # pseudonym number of a system-event turn (no speaker token)
OVERFLOW_SPEAKER = 0  # "S0": everyone past max_speakers

DROP_REASONS = ("system", "media", "deleted", "no_speaker", "empty", "too_short", "too_long", "low_signal")

_MARK = placeholder_marker("x")[0]
_MARKER_RE = re.compile(re.escape(_MARK) + r"[a-z_]+" + re.escape(placeholder_marker("x")[-1]))
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u2028\u2029"), None) | {0xA0: " ", 0x202F: " ", 0x3000: " "}
_NEEDS_WORK = re.compile("[\ue000\ue001\ufeff\u200b\u2028\u2029\xa0\u202f\u3000\r]|\n")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


@dataclass(slots=True)
class Message:
    """One kept record: pseudonym number, time, cleaned + masked text (with markers), length in characters."""

    ts: datetime
    speaker: int
    text: str
    length: int


@dataclass(slots=True)
class Turn:
    """One or more consecutive messages of one speaker (``speaker`` = pseudonym number, -1 = system event)."""

    speaker: int
    text: str
    length: int
    start: datetime
    end: datetime
    messages: int = 1


@dataclass
class Session:
    """Turns with no silence longer than ``session_gap_minutes`` between consecutive messages."""

    room: int
    turns: list[Turn] = field(default_factory=list)

    @property
    def start(self) -> datetime:
        return self.turns[0].start

    @property
    def end(self) -> datetime:
        return self.turns[-1].end


def pseudonym(number: int) -> str:
    return f"S{number}"


def clean_text(text: str) -> str:
    """NFC, no forged markers, no BOM/zero-width noise, NBSPs → spaces, trimmed lines, at most one blank line."""
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if _NEEDS_WORK.search(text) is None:
        return text.strip()
    text = strip_markers(text).translate(_INVISIBLE)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\n" in text:
        text = _MANY_NEWLINES.sub("\n\n", _TRAILING_SPACE.sub("\n", text))
    return text.strip()


def text_length(text: str) -> int:
    """Characters of marked text, each placeholder counting as one."""
    if _MARK not in text:
        return len(text)
    return len(_MARKER_RE.sub("_", text))


def has_signal(text: str) -> bool:
    """True when marked text has content beyond placeholders, punctuation, spaces and control characters.

    "ㅋㅋㅋ", "ㅠㅠ", "^^", "~", "👍" and any letter or digit are signal; "...", "?!", "" and a lone masked URL are not.
    """
    if _MARK in text:
        text = _MARKER_RE.sub("", text)
    for char in text:
        cat = unicodedata.category(char)
        if cat[0] not in "PZC":
            return True
    return False


def rank_speakers(rooms: Iterable[Sequence[Record]], max_speakers: int) -> dict[str, int]:
    """Real name → pseudonym number, ranked over every room by user-message count (ties: first message, then name).

    Counted before any filtering, so changing a filter setting never renames a speaker. Ranks past
    ``max_speakers`` map to 0 ("S0"). Records with an empty speaker are not people and get no pseudonym.
    """
    counts = SpeakerCounts()
    for room_index, records in enumerate(rooms):
        counts.add(room_index, records)
    return counts.ranking(max_speakers)


class SpeakerCounts:
    """:func:`rank_speakers` one room at a time (preprocess holds only one room's records in memory)."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.first: dict[str, tuple[datetime, int]] = {}

    def add(self, room_index: int, records: Sequence[Record]) -> None:
        people = [record for record in records if record.kind not in SYSTEM_KINDS and record.speaker]
        self.counts.update(record.speaker for record in people)
        # the earliest message of each speaker in this room (later assignments win, so walk newest first)
        newest_first = sorted(people, key=lambda record: record.timestamp, reverse=True)
        earliest = {record.speaker: record.timestamp for record in newest_first}
        first = self.first
        for name, stamp in earliest.items():
            if name not in first or (stamp, room_index) < first[name]:
                first[name] = (stamp, room_index)

    def ranking(self, max_speakers: int) -> dict[str, int]:
        counts, first = self.counts, self.first
        order = sorted(counts, key=lambda speaker: (-counts[speaker], first[speaker], speaker))
        return {name: (rank if rank <= max_speakers else OVERFLOW_SPEAKER) for rank, name in enumerate(order, 1)}


def filter_records(
    records: Iterable[Record],
    cfg: PreprocessConfig,
    speakers: dict[str, int],
    masker: PiiMasker,
    dropped: Counter,
) -> list[Message]:
    """Keep or drop each record; dropped ones are counted in ``dropped`` under exactly one reason (first that applies):

    ``system``      a system event (join, leave, invite, hidden, notice ...) while ``system: drop``
    ``media``       a media placeholder (photo, video, emoticon, file, call ...) while ``media: drop``
    ``deleted``     a message its sender deleted, while ``drop_low_signal`` (a lone placeholder) or ``media: drop``
    ``no_speaker``  a user message without a sender name
    ``empty``       a text message that is empty after cleaning
    ``too_short``   fewer than ``min_message_chars`` characters after cleaning and masking (a placeholder = 1)
    ``too_long``    more than ``max_message_chars`` characters (pasted articles, logs)
    ``low_signal``  ``drop_low_signal`` and nothing but punctuation, spaces and placeholders (see :func:`has_signal`)

    Kept media become a message whose text is the typed placeholder (``<|photo|>`` …); kept system events a
    message of speaker -1 with ``<|system|>`` (the event text, which names people, is never kept).
    """
    out: list[Message] = []
    media_marker = {media_kind: placeholder_marker(media_kind.value) for media_kind in MEDIA_KINDS}
    deleted_marker = placeholder_marker("deleted")
    system_marker = placeholder_marker("system")
    keep_media = cfg.media == "token"
    keep_system = cfg.system == "token"
    min_chars, max_chars = cfg.min_message_chars, cfg.max_message_chars
    low_signal = cfg.drop_low_signal
    mask = masker.mask
    for record in records:
        kind = record.kind
        if kind is Kind.MESSAGE:
            spk = speakers.get(record.speaker)
            if spk is None:
                dropped["no_speaker"] += 1
                continue
            text = clean_text(record.text)
            if not text:
                dropped["empty"] += 1
                continue
            text = mask(text)
            length = text_length(text)
            if length < min_chars:
                dropped["too_short"] += 1
            elif length > max_chars:
                dropped["too_long"] += 1
            elif low_signal and not has_signal(text):
                dropped["low_signal"] += 1
            else:
                out.append(Message(record.timestamp, spk, text, length))
        elif kind in SYSTEM_KINDS:
            if keep_system:
                out.append(Message(record.timestamp, SYSTEM_SPEAKER, system_marker, 1))
            else:
                dropped["system"] += 1
        elif kind is Kind.DELETED:
            spk = speakers.get(record.speaker)
            if low_signal or not keep_media:
                dropped["deleted"] += 1
            elif spk is None:
                dropped["no_speaker"] += 1
            else:
                out.append(Message(record.timestamp, spk, deleted_marker, 1))
        else:  # media placeholder
            spk = speakers.get(record.speaker)
            if not keep_media:
                dropped["media"] += 1
            elif spk is None:
                dropped["no_speaker"] += 1
            else:
                out.append(Message(record.timestamp, spk, media_marker.get(kind, placeholder_marker("media")), 1))
    return out


def build_sessions(messages: Sequence[Message], cfg: PreprocessConfig, room: int = 0) -> list[Session]:
    """Sessions and turns from one room's kept messages (in time order).

    * A new session starts when the gap to the previous kept message is **longer than** ``session_gap_minutes``
      (a gap of exactly that many minutes stays in the session).
    * With ``merge_same_speaker``, a message joins the previous turn (text joined with a newline) when it has the
      same speaker, follows the turn's last message **within** ``merge_gap_minutes`` (gap ≤ the setting), and the
      merged text stays within ``max_merged_chars`` characters. System events are never merged.
    """
    gap = timedelta(minutes=cfg.session_gap_minutes)
    merge_gap = timedelta(minutes=cfg.merge_gap_minutes)
    max_chars = cfg.max_merged_chars
    merge = cfg.merge_same_speaker
    sessions: list[Session] = []
    cur: Session | None = None
    last_ts: datetime | None = None
    for message in messages:
        if cur is None or message.ts - last_ts > gap:  # type: ignore[operator]
            cur = Session(room)
            sessions.append(cur)
            prev = None
        else:
            prev = cur.turns[-1]
        if (
            merge
            and prev is not None
            and prev.speaker == message.speaker
            and message.speaker != SYSTEM_SPEAKER
            and message.ts - prev.end <= merge_gap
            and prev.length + 1 + message.length <= max_chars
        ):
            prev.text = prev.text + "\n" + message.text
            prev.length += 1 + message.length
            prev.end = message.ts
            prev.messages += 1
        else:
            cur.turns.append(Turn(message.speaker, message.text, message.length, message.ts, message.ts))
        last_ts = message.ts
    return sessions


def is_target(turn: Turn, index: int, target: int | None, cfg: PreprocessConfig) -> bool:
    """An eligible target turn: a person's turn (not a system event) by the target speaker (any, for ``room``) with
    at least ``min_target_chars`` characters and at least ``min_context_turns`` turns before it in its session."""
    return (turn.speaker >= 0 and (target is None or turn.speaker == target)
            and turn.length >= cfg.min_target_chars and index >= cfg.min_context_turns)


def split_sessions(sessions: list[Session], val_fraction: float,
                   useful=None) -> tuple[list[Session], list[Session]]:
    """(train, val) by time, never by random window: sessions sorted by start (ties by room) and cut at one point
    in time; validation is everything after the cut.

    The cut leaves ``round(val_fraction · u)`` *useful* sessions in validation (at least one when ``val_fraction >
    0`` and u ≥ 2, never all u), where u counts the sessions for which ``useful(session)`` is true (default: every
    session; preprocess passes "has an eligible target turn", so a persona's validation split is not empty just
    because the latest sessions lack that person). When only one session is useful it is cut in two at the turn
    boundary nearest ``1 - val_fraction`` of its turns (the later part becomes its own session), so a small room
    still gets a validation split.
    """
    ordered = sorted(sessions, key=lambda session: (session.start, session.room))
    flags = [True] * len(ordered) if useful is None else [bool(useful(session)) for session in ordered]
    cut, cut_turn = split_point(flags, val_fraction, lambda index: len(ordered[index].turns))
    if cut_turn is None:
        return ordered[:cut], ordered[cut:]
    room, turns = ordered[cut].room, ordered[cut].turns
    return ordered[:cut] + [Session(room, turns[:cut_turn])], [Session(room, turns[cut_turn:])] + ordered[cut + 1 :]


def split_point(flags: Sequence[bool], val_fraction: float, n_turns: Callable[[int], int]) -> tuple[int, int | None]:
    """Where :func:`split_sessions` cuts sessions sorted by time: ``(k, None)`` — train is the first ``k``
    sessions, validation the rest; ``(k, t)`` — session ``k`` (the only useful one) is cut before its turn ``t``:
    train = the first ``k`` sessions + its turns ``[:t]``, validation = its turns ``[t:]`` + the sessions after it.

    ``flags[i]``: the i-th session in time order is useful; ``n_turns(i)``: its number of turns. Works on plain
    arrays, so preprocess can split sessions whose turns are not in memory."""
    n_sessions = len(flags)
    if val_fraction <= 0 or n_sessions == 0:
        return n_sessions, None
    positions = np.flatnonzero(np.asarray(flags, dtype=bool))
    n_useful = len(positions)
    if n_useful >= 2:
        n_val = min(n_useful - 1, max(1, round(val_fraction * n_useful)))
        return int(positions[n_useful - n_val]), None
    if n_useful == 0:
        return n_sessions, None
    only = int(positions[0])
    turns = n_turns(only)
    if turns < 2:
        return n_sessions, None
    return only, min(turns - 1, max(1, round(turns * (1 - val_fraction))))


def resolve_target(target: str, speakers: dict[str, int]) -> int | None:
    """``room`` → None (every speaker is a target); a real name (or a pseudonym such as ``S2``) → its number.

    Raises ValueError with a message that never echoes any name.
    """
    wanted = unicodedata.normalize("NFC", target.strip())
    if wanted.lower() == "room":
        return None
    number = speakers.get(wanted)
    if number is None:
        by_nfc = {unicodedata.normalize("NFC", name.strip()): speaker_number
                  for name, speaker_number in speakers.items()}
        number = by_nfc.get(wanted)
    if number is None and re.fullmatch(r"S([1-9]\d*)", wanted):
        candidate = int(wanted[1:])
        if candidate in set(speakers.values()):
            number = candidate
    if number is None:
        raise ValueError("unknown")
    if number == OVERFLOW_SPEAKER:
        raise ValueError("overflow")
    return number


__all__ = [
    "DROP_REASONS", "Message", "Turn", "Session", "SYSTEM_SPEAKER", "OVERFLOW_SPEAKER", "pseudonym", "clean_text",
    "text_length", "has_signal", "rank_speakers", "SpeakerCounts", "filter_records", "build_sessions", "is_target",
    "split_sessions", "split_point",
    "resolve_target",
]
