"""The bridge's room file (``<paths.bridge_memory>/rooms/<hash>.json``) and its archive chunks
(``archive/<hash>/<time_ns>.json``); where they live and when they are written is chatbot/bridge/memory.py.

A room file (format 2)::

    {"format": "chatbot-bridge-room-2", "room": <hash>, "turns": [{"role", "text", "ts", "speaker"?}],
     "seen": [[key, ts, windowed]], "speakers": {sender_key: [slot, messages]}, "overflow_noted": bool}

``speaker`` (on user turns only) is the sender's pseudonym slot when it is not the room's first person; sender keys
are keyed hashes, never names. Format-1 files (two roles, no speakers) still read: every user turn is "user". An
archive chunk is ``{"format", "room", "turns"}``. Written atomically (temp file + fsync + rename), so a crash
leaves the previous complete file.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fsio import atomic_write_json
from ..tokens import is_pseudonym

FORMAT = "chatbot-bridge-room-2"
READ_FORMATS = ("chatbot-bridge-room-1", FORMAT)  # format 1: two roles only, no speaker slots
ROLES = ("user", "bot")


class RoomFileError(ValueError):
    """A room file that exists but cannot be used (damaged, or another format); the caller decides what to do."""


@dataclass
class RoomFile:
    """What a room file holds. ``seen`` maps idempotency key -> (wall time, windowed); ``speakers`` is the JSON
    form of the room's speaker slots (chatbot/infer/speakers.py reads and writes it)."""

    room: str
    turns: list[dict] = field(default_factory=list)
    seen: OrderedDict[str, tuple[float, bool]] = field(default_factory=OrderedDict)
    speakers: Any = None
    overflow_noted: bool = False


def read(path: str | os.PathLike) -> RoomFile | None:
    """The room file at ``path`` (turns normalised), None when there is none; RoomFileError when unusable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RoomFileError(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") not in READ_FORMATS:
        raise RoomFileError("unknown format")
    try:
        turns = [_turn(t) for t in data.get("turns", []) if t.get("role") in ROLES]
        seen = OrderedDict((str(k), (float(ts), bool(w))) for k, ts, w in data.get("seen", []))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RoomFileError(f"damaged ({type(exc).__name__})") from None
    return RoomFile(str(data.get("room", path.stem)), turns, seen, data.get("speakers"),
                    bool(data.get("overflow_noted", False)))


def _turn(t: dict) -> dict:
    out = {"role": str(t["role"]), "text": str(t["text"]), "ts": float(t.get("ts", 0.0))}
    speaker = t.get("speaker")  # a slot: "user", "bot" or a pseudonym (as chatbot/infer/speakers.py is_slot)
    if out["role"] == "user" and isinstance(speaker, str) and (speaker in ROLES or is_pseudonym(speaker)):
        out["speaker"] = speaker
    return out


def write(path: str | os.PathLike, room: RoomFile) -> None:
    """Write the room file atomically (format 2)."""
    atomic_write_json(path, {
        "format": FORMAT, "room": room.room, "turns": room.turns,
        "seen": [[k, round(ts, 3), w] for k, (ts, w) in room.seen.items()],
        "speakers": room.speakers, "overflow_noted": room.overflow_noted,
    })


def write_archive(path: str | os.PathLike, room: str, turns: list[dict]) -> None:
    """Write one archive chunk (turns trimmed from a room) atomically."""
    atomic_write_json(path, {"format": FORMAT, "room": room, "turns": turns})


def read_archive(path: str | os.PathLike) -> list[dict]:
    """The turns of one archive chunk."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["turns"]
