"""chatbot/formats/roomfile.py: room files round-trip byte for byte, format-1 files from older bridges still read, and
a damaged file is reported (never half-read)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import pytest

from chatbot.formats import roomfile
from chatbot.formats.roomfile import RoomFile, RoomFileError

ROOMS = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_v1" / "workspace" / "data" / "bridge" / "rooms"


def _legacy(fmt: str) -> Path:
    return next(p for p in sorted(ROOMS.glob("*.json"))
                if json.loads(p.read_text(encoding="utf-8"))["format"] == fmt)


def test_a_format_2_file_is_rewritten_byte_for_byte(tmp_path: Path) -> None:
    legacy = _legacy(roomfile.FORMAT)
    room = roomfile.read(legacy)
    assert room.room == legacy.stem and room.turns and room.speakers
    roomfile.write(tmp_path / legacy.name, room)
    assert (tmp_path / legacy.name).read_bytes() == legacy.read_bytes()


def test_a_format_1_file_reads_and_is_saved_as_format_2(tmp_path: Path) -> None:
    room = roomfile.read(_legacy(roomfile.READ_FORMATS[0]))
    assert [t["role"] for t in room.turns] == ["user", "bot", "user"]
    assert all("speaker" not in t for t in room.turns) and room.speakers is None and not room.overflow_noted
    roomfile.write(tmp_path / "r.json", room)
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["format"] == roomfile.FORMAT


def test_round_trip_and_turn_clean_up(tmp_path: Path) -> None:
    room = RoomFile("abc", [{"role": "user", "text": "hi", "ts": 1.0, "speaker": "S3"},
                            {"role": "bot", "text": "yo", "ts": 2.0}],
                    OrderedDict([("k1", (3.14159, True))]), {"x": ["S3", 1]}, True)
    path = tmp_path / "abc.json"
    roomfile.write(path, room)
    back = roomfile.read(path)
    assert back.turns == room.turns and back.speakers == room.speakers and back.overflow_noted
    assert back.seen == OrderedDict([("k1", (3.142, True))])  # stored to the millisecond
    data = json.loads(path.read_text(encoding="utf-8"))
    data["turns"] += [{"role": "system", "text": "dropped"}, {"role": "bot", "text": "x", "speaker": "S1"},
                      {"role": "user", "text": "y", "speaker": "Alice"}]
    path.write_text(json.dumps(data), encoding="utf-8")
    turns = roomfile.read(path).turns
    assert [t["role"] for t in turns] == ["user", "bot", "bot", "user"]
    assert "speaker" not in turns[2] and "speaker" not in turns[3]  # slots only, and only on user turns


def test_archive_chunks(tmp_path: Path) -> None:
    path = tmp_path / "archive" / "abc" / "1.json"
    roomfile.write_archive(path, "abc", [{"role": "user", "text": "old", "ts": 0.0}])
    assert roomfile.read_archive(path) == [{"role": "user", "text": "old", "ts": 0.0}]
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == roomfile.FORMAT


@pytest.mark.parametrize("content", ['{not json', '\udcff', '[]', '{"format": "chatbot-bridge-room-9"}',
                                     '{"format": "%s", "turns": 5}', '{"format": "%s", "turns": [{"role": "user"}]}',
                                     '{"format": "%s", "seen": [[1, 2]]}'])
def test_damaged_files_raise_room_file_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "r.json"
    path.write_bytes(content.replace("%s", roomfile.FORMAT).encode("utf-8", "surrogateescape"))
    with pytest.raises(RoomFileError):
        roomfile.read(path)
    assert roomfile.read(tmp_path / "missing.json") is None
