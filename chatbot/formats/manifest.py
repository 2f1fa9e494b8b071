"""The export manifest (``paths.raw.manifest``, ``data/raw/manifest.json`` by default): written by organize, read by
organize, preprocess and status (archive only moves the file).

A JSON list, one object per export (a file, or one member of a zip), in the order organize filed them. Every entry
has ``path`` (the organized copy, relative to the project root, ``/``-separated); organize also writes
:data:`ENTRY_KEYS` (see ``chatbot.kakao.organize.manifest_entry``). An object ``{"files": [...]}`` is read as
well (the shape of early versions). Entries are kept as dicts so a reader never drops a key it does not know.
PRIVATE: it holds room titles and participant names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ChatbotError
from ..fsio import atomic_write_json, read_json

ENTRY_KEYS = ("path", "sha256", "format", "room", "room_id", "title_room", "saved_at", "messages", "system",
              "speakers", "first", "last", "kinds", "encoding", "source", "member", "members", "segments", "size")
REMEDY = "move it aside and run organize again"


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The manifest's entries ([] when organize has not run yet); an unreadable one is one ChatbotError."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise ChatbotError(f"{path}: unreadable manifest ({type(exc).__name__}); {REMEDY}") from None
    entries = data.get("files") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and "path" in entry for entry in entries):
        raise ChatbotError(f"{path}: not a manifest written by organize; {REMEDY}")
    return entries


def write(path: str | os.PathLike, entries: list[dict[str, Any]]) -> None:
    """Replace the manifest atomically (private file; 2-space indented UTF-8 JSON, keys in the given order)."""
    atomic_write_json(path, entries)
