"""Fixtures for the preprocess tests."""

from __future__ import annotations

import sys
import types

import pytest

from chatbot.config import load_config
from tests.support.preprocess import chat_room


@pytest.fixture
def exports(project, monkeypatch):
    """A stand-in for organize's manifest + room loader: {room: (sha256, records)} editable by the test."""
    state: dict[str, tuple[str, list]] = {"room-a": ("a" * 64, chat_room(8, seed=1)),
                                          "room-b": ("b" * 64, chat_room(5, seed=2, names=("민트", "나")))}
    fake = types.ModuleType("chatbot.kakao.organize")
    fake.load_manifest = lambda cfg: [{"path": f"x/{k}.txt", "sha256": v[0], "room": k, "format": "csv",
                                       "messages": len(v[1])} for k, v in state.items()]
    fake.room_records = lambda cfg, room: list(state[room][1])
    monkeypatch.setitem(sys.modules, "chatbot.kakao.organize", fake)
    cfg = load_config(project / "configs")
    cfg.paths.processed.preprocess.vocab_size = 600
    manifest = cfg.path(cfg.paths.raw.manifest)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text("{}", encoding="utf-8")
    return cfg, state
