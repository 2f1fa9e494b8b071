"""preprocess(cfg) as the CLI runs it: manifest, up-to-date no-op, rebuilds, interruption and recovery."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import types

import pytest

from chatbot.config import load_config
from chatbot.data import dataset
from chatbot.data import preprocess as pp
from chatbot.errors import ChatbotError

from helpers_preprocess import chat_room, output_bytes, rec


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


def _mtimes(d):
    return {p.name: p.stat().st_mtime_ns for p in d.iterdir() if not p.name.startswith(".")}


def test_second_run_is_a_noop_and_changes_rebuild(exports, capsys):
    cfg, state = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    first = json.loads((out / "stats.json").read_text())
    assert first["rooms"] == 2 and first["files"] == 2
    before = _mtimes(out)
    capsys.readouterr()
    pp.preprocess(cfg)
    assert "up to date" in capsys.readouterr().out
    assert _mtimes(out) == before
    # a changed setting rebuilds
    cfg.paths.processed.preprocess.min_target_chars = 4
    pp.preprocess(cfg)
    assert "settings changed" in capsys.readouterr().out
    changed = json.loads((out / "stats.json").read_text())
    assert changed["config_hash"] != first["config_hash"]
    # a new export rebuilds
    state["room-c"] = ("c" * 64, [rec(50_000 + i, ("가람", "나")[i % 2], f"새 방 이야기 {i}") for i in range(10)])
    pp.preprocess(cfg)
    grown = json.loads((out / "stats.json").read_text())
    assert grown["messages"]["in"] == changed["messages"]["in"] + 10 and grown["rooms"] == 3
    assert grown["inputs_hash"] != changed["inputs_hash"]
    # --force rebuilds unchanged inputs
    before = _mtimes(out)
    pp.preprocess(cfg, force=True)
    assert "--force" in capsys.readouterr().out
    assert _mtimes(out)["stats.json"] != before["stats.json"]


def _readable(out):
    stats = dataset.read_stats(out)
    for split in ("train", "val"):
        dataset.open_split(out, split, stats["dtype"], stats["vocab_size"])
    assert pp.check_outputs(out, full=True) is None
    return stats


def test_interrupted_build_leaves_previous_outputs_intact(exports, monkeypatch):
    cfg, _ = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    snapshot = output_bytes(out, exclude=())
    cfg.paths.processed.preprocess.context_turns = 2

    def crash(*a, **k):
        raise KeyboardInterrupt  # Ctrl+C after the new token files were written to temp files

    real_preview = pp._preview
    monkeypatch.setattr(pp, "_preview", crash)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(cfg)
    assert output_bytes(out, exclude=()) == snapshot
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    _readable(out)
    # a killed run leaves temp files behind; the next run removes them and builds
    (out / ".train.bin.killed.tmp").write_bytes(b"partial")
    monkeypatch.setattr(pp, "_preview", real_preview)
    pp.preprocess(cfg)
    assert not (out / ".train.bin.killed.tmp").exists()
    assert _readable(out)["config_hash"] != json.loads(snapshot["stats.json"])["config_hash"]


def test_crash_during_commit_is_rolled_forward(exports, monkeypatch, capsys):
    cfg, _ = exports
    out = cfg.processed_dir
    pp.preprocess(cfg)
    old = json.loads((out / "stats.json").read_text())
    cfg.paths.processed.preprocess.sample_stride = 2
    real_apply = pp._apply

    def apply_then_die(out_dir, journal):
        real_apply(out_dir, {"renames": journal["renames"][:3]})
        raise KeyboardInterrupt  # killed after three of the renames

    monkeypatch.setattr(pp, "_apply", apply_then_die)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess(cfg)
    assert pp.check_outputs(out) == "an interrupted commit is pending"
    monkeypatch.setattr(pp, "_apply", real_apply)
    capsys.readouterr()
    pp.preprocess(cfg)  # finishes the commit; the result is the new build, so there is nothing else to do
    said = capsys.readouterr().out
    assert "interrupted commit" in said and "up to date" in said
    stats = _readable(out)
    assert stats["config_hash"] != old["config_hash"]  # the new build (stride 2) is the one in force
    assert stats["windows"]["train"] < old["windows"]["train"]


def test_manifest_missing_or_empty_says_run_organize(exports):
    cfg, state = exports
    state.clear()
    with pytest.raises(ChatbotError, match="organize"):
        pp.preprocess(cfg)
    os.unlink(cfg.path(cfg.paths.raw.manifest))
    with pytest.raises(ChatbotError, match="organize"):
        pp.preprocess(cfg)


def test_one_preprocess_at_a_time(exports):
    cfg, _ = exports
    out = cfg.processed_dir
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(out / pp.LOCK), os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(ChatbotError, match="another preprocess"):
            pp.preprocess(cfg)
    finally:
        os.close(fd)
