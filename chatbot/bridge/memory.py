"""Per-room memory of the bridge: recent turns (the chat context) and recent idempotency keys, on disk.

Layout under ``paths.bridge_memory`` (``data/bridge/``, git-ignored):

- ``salt`` — 32 random bytes (hex) created once. Room ids are hashed with HMAC-SHA256(salt, room) so that file
  names and log lines never reveal a room name or user id, and a hash cannot be confirmed by guessing names
  without the salt. Losing the salt orphans the stored rooms (they are kept, just no longer found).
- ``rooms/<hash>.json`` — ``{"format", "room", "turns": [{"role", "speaker"?, "text", "ts"}], "seen": [[key, ts,
  windowed]], "speakers": {sender_key: [slot, messages]}, "overflow_noted": bool}`` (format 2). ``speaker`` is the
  sender's pseudonym slot (chatbot/infer/speakers.py) when it is not the room's first person ("user"); sender keys are
  keyed hashes, never names. Format-1 files (no speakers) still load: every user turn is "user".
  Read and written only by chatbot/formats/roomfile.py. Written through on every change with an atomic replace
  (chatbot.fsio), so a crash or kill -9 in the middle of traffic loses at most the message being handled, never a
  room.
- ``archive/<hash>/<time_ns>.json`` — turns trimmed from a room once it holds more than ``memory_max_turns``
  (``memory_archive: false`` drops them instead). The archive chunk is written before the room file shrinks, so
  a crash between the two duplicates turns rather than losing them.

Concurrency: every read-modify-write of one room happens under one of 64 striped locks (bounded, whatever the
number of rooms); states are cached in a bounded LRU — safe to evict at any time because they are written through.
An unreadable room file is moved aside (``.corrupt-<time>``) and the room starts empty: never a crash, never a
silent overwrite.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..formats import roomfile
from ..fsio import atomic_write_text, private_mkdir
from ..infer.speakers import RoomSpeakers
SEEN_KEEP = 256  # idempotency keys remembered per room (message ids / platform timestamps)
STRIPES = 64
log = logging.getLogger("chatbot.bridge")


@dataclass
class RoomState:
    """One room: ``turns`` oldest first; ``seen`` maps idempotency key -> (wall time, windowed)."""

    hash: str
    turns: list[dict] = field(default_factory=list)
    seen: "OrderedDict[str, tuple[float, bool]]" = field(default_factory=OrderedDict)
    speakers: RoomSpeakers = field(default_factory=RoomSpeakers)
    overflow_noted: bool = False

    def add_turn(self, role: str, text: str, ts: float, speaker: str | None = None) -> None:
        turn = {"role": role, "text": text, "ts": round(ts, 3)}
        if role == "user" and speaker and speaker != "user":
            turn["speaker"] = speaker
        self.turns.append(turn)

    def context(self, n: int) -> list[tuple[str, str]]:
        """The last ``n`` turns as (speaker, text) pairs: "bot", "user" (the room's first person) or a slot."""
        return [(t.get("speaker") or t["role"], t["text"]) for t in self.turns[-n:]] if n > 0 else []

    def is_duplicate(self, key: str, now: float, window_s: float) -> bool:
        """A key seen before is a duplicate; a windowed key (no id / timestamp in the payload) only within window_s."""
        got = self.seen.get(key)
        if got is None:
            return False
        ts, windowed = got
        return (not windowed) or (now - ts) <= window_s

    def mark_seen(self, key: str, now: float, windowed: bool) -> None:
        self.seen.pop(key, None)
        self.seen[key] = (now, windowed)

    def prune_seen(self, now: float, window_s: float) -> None:
        for key in [k for k, (ts, w) in self.seen.items() if w and now - ts > window_s]:
            del self.seen[key]
        while len(self.seen) > SEEN_KEEP:
            self.seen.popitem(last=False)


class MemoryStore:
    """Room states on disk under ``root``; see the module docstring for the layout and guarantees."""

    def __init__(self, root: str | os.PathLike, *, max_turns: int, archive: bool = True, dedupe_window_s: float = 5.0,
                 cache_rooms: int = 1024):
        self.root = Path(root)
        self.rooms_dir = self.root / "rooms"
        self.archive_dir = self.root / "archive"
        self.max_turns = max(1, int(max_turns))
        self.archive = archive
        self.dedupe_window_s = dedupe_window_s
        self.cache_rooms = cache_rooms
        private_mkdir(self.rooms_dir)  # private chat text, and room folders: owner only (files are 0600 already)
        for stale in self.rooms_dir.glob(".*.tmp"):  # temp files of a writer killed mid-save (one bridge per folder)
            with contextlib.suppress(OSError):
                stale.unlink()
        self._salt = self._load_salt()
        self._stripes = [threading.Lock() for _ in range(STRIPES)]
        self._cache: OrderedDict[str, RoomState] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.saves = 0

    # ------------------------------------------------------------------ hashing
    def _load_salt(self) -> bytes:
        path = self.root / "salt"
        if not path.exists():
            atomic_write_text(path, secrets.token_hex(32) + "\n")
        try:
            return bytes.fromhex(path.read_text(encoding="ascii").strip())
        except (ValueError, UnicodeDecodeError):
            from ..errors import ChatbotError

            raise ChatbotError(f"{path}: damaged bridge salt file; move it away (stored rooms will start fresh)") from None

    def room_hash(self, room: str) -> str:
        """Keyed hash of a room id (16 hex chars): used in file names and logs instead of the id."""
        return hmac.new(self._salt, room.encode("utf-8"), hashlib.sha256).hexdigest()[:16]

    def key_hash(self, *parts: str) -> str:
        """Keyed hash of an idempotency key (message text never reaches the disk through ``seen``)."""
        return hmac.new(self._salt, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()[:24]

    # ------------------------------------------------------------------ access
    def _path(self, rh: str) -> Path:
        return self.rooms_dir / f"{rh}.json"

    @contextlib.contextmanager
    def room(self, rh: str) -> Iterator[RoomState]:
        """Hold the room's lock and yield its state (loaded from disk on a cache miss). Call save() to persist."""
        with self._stripes[int(rh[:4], 16) % STRIPES]:
            with self._cache_lock:
                state = self._cache.get(rh)
                if state is not None:
                    self._cache.move_to_end(rh)
            if state is None:
                state = self._load(rh)
                with self._cache_lock:
                    self._cache[rh] = state
                    while len(self._cache) > self.cache_rooms:
                        self._cache.popitem(last=False)  # written through: eviction loses nothing
            yield state

    def _load(self, rh: str) -> RoomState:
        path = self._path(rh)
        try:
            stored = roomfile.read(path)
            if stored is None:
                return RoomState(rh)
            speakers = RoomSpeakers.from_json(stored.speakers)
            return RoomState(rh, stored.turns, stored.seen, speakers, stored.overflow_noted)
        except (roomfile.RoomFileError, ValueError, TypeError, KeyError, AttributeError):
            aside = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
            with contextlib.suppress(OSError):
                os.replace(path, aside)
            log.warning("room=%s memory file unreadable; moved aside to %s, starting empty", rh, aside.name)
            return RoomState(rh)

    def save(self, state: RoomState, now: float | None = None) -> None:
        """Trim (archiving the oldest turns) beyond max_turns, prune old keys, write the room file atomically.

        Call with the room's lock held (inside ``room()``).
        """
        now = time.time() if now is None else now
        if len(state.turns) > self.max_turns:
            keep = self.max_turns - self.max_turns // 4  # trim in chunks: one archive file per ~max_turns/4 turns
            old, state.turns = state.turns[:-keep], state.turns[-keep:]
            if self.archive:
                try:
                    roomfile.write_archive(self.archive_dir / state.hash / f"{time.time_ns()}.json", state.hash, old)
                except BaseException:
                    state.turns = old + state.turns  # keep them in the room rather than lose them
                    raise
        state.prune_seen(now, self.dedupe_window_s)
        roomfile.write(self._path(state.hash), roomfile.RoomFile(
            state.hash, state.turns, state.seen, state.speakers.to_json(), state.overflow_noted))
        self.saves += 1

    def flush(self) -> int:
        """Every change is already on disk (write-through); returns the number of rooms in the cache."""
        with self._cache_lock:
            return len(self._cache)

    def archived_turns(self, rh: str) -> list[dict]:
        """All archived turns of a room, oldest first (for tests and tools)."""
        out: list[dict] = []
        folder = self.archive_dir / rh
        if folder.is_dir():
            for path in sorted(folder.glob("*.json"), key=lambda p: int(p.stem)):
                out.extend(roomfile.read_archive(path))
        return out
