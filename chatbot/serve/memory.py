"""``serve.memory: true``: conversations kept on the server, one per ``X-Conversation-Id``, like the bridge's rooms.

The store is the bridge's :class:`~chatbot.bridge.memory.MemoryStore` in ``<paths.bridge_memory>/serve/`` (its own
folder and lock, so a running bridge is not disturbed): ids are hashed with the store's salt before they name a
file or a log line, turns are written through atomically, old turns are archived.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..bridge.memory import MemoryStore

CONVERSATION_ID = re.compile(r"[A-Za-z0-9_.:-]{8,128}")


class Conversations:
    def __init__(self, root: Path, *, turns: int, max_turns: int):
        self.store = MemoryStore(root, max_turns=max_turns)
        self.turns = turns

    def begin(self, conv_id: str, new: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Store the request's new messages; return the context for the reply (stored turns + the new ones)."""
        rh = self.store.room_hash(conv_id)
        now = time.time()
        with self.store.room(rh) as room:
            history = room.context(self.turns) + new
            for speaker, text in new:  # a group member's slot is kept with the turn
                room.add_turn("bot" if speaker == "bot" else "user", text, now, speaker)
            self.store.save(room, now)
        return history

    def record_reply(self, conv_id: str, text: str) -> None:
        rh = self.store.room_hash(conv_id)
        now = time.time()
        with self.store.room(rh) as room:
            room.add_turn("bot", text, now)
            self.store.save(room, now)

    def hash(self, conv_id: str) -> str:
        return self.store.room_hash(conv_id)
