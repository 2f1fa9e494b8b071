"""archive: moves processed data, checkpoints, artifacts (and raw data on request); never deletes; refuses under
a live run lock; --dry changes nothing."""

from __future__ import annotations

import json
import os
import socket

import pytest

from chatbot.kakao.archive import archive
from chatbot.errors import ChatbotError, LockedError
from chatbot.lock import LOCK_NAME, RunLock
from tests.support.kakao import snapshot, write
from tests.support.workspace import make_workspace


def populate(cfg):
    root = cfg.root
    write(cfg.processed_dir / "train.bin", "tokens")
    write(cfg.processed_dir / "stats.json", "{}")
    write(cfg.path(cfg.paths.checkpoints) / ".gitkeep", "")
    write(cfg.path(cfg.paths.checkpoints) / "run1" / "latest.pt", "weights")
    write(cfg.path(cfg.paths.checkpoints) / "run1" / "snapshots" / "step_00000010.pt", "old weights")
    write(cfg.path(cfg.paths.artifacts) / ".gitkeep", "")
    write(cfg.path(cfg.paths.artifacts) / "model_latest.pt", "artifact")
    write(cfg.path(cfg.paths.raw.organized) / "가족" / "KakaoTalkChats.txt", "export")
    write(cfg.path(cfg.paths.raw.manifest), "[]")
    write(cfg.path(cfg.paths.raw.inbox) / "new.txt", "new export")
    return root


def contents(root):
    """bytes -> count of every file under root (to show nothing was lost, wherever it moved)."""
    out: dict[bytes, int] = {}
    for data in snapshot(root).values():
        out[data] = out.get(data, 0) + 1
    return out


def test_archive_moves_and_never_deletes(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    populate(cfg)
    before = contents(tmp_path)
    archive(cfg, dry=False, tag="exp1", include_raw=False)
    (dest,) = list(cfg.path(cfg.paths.archive).iterdir())
    assert dest.name.endswith("-exp1") and len(dest.name) == len("20250101-120000-exp1")
    assert (dest / "data" / "processed" / "train.bin").read_text() == "tokens"
    assert (dest / "checkpoints" / "run1" / "snapshots" / "step_00000010.pt").read_text() == "old weights"
    assert (dest / "artifacts" / "model_latest.pt").read_text() == "artifact"
    # placeholders stay, the rest is gone from the working tree; raw data untouched without --include-raw
    assert sorted(p.name for p in cfg.path(cfg.paths.checkpoints).iterdir()) == [".gitkeep"]
    assert sorted(p.name for p in cfg.path(cfg.paths.artifacts).iterdir()) == [".gitkeep"]
    assert not any(cfg.processed_dir.iterdir())
    assert cfg.path(cfg.paths.raw.manifest).is_file()
    after = contents(tmp_path)
    for data, n in before.items():  # every file still exists (ARCHIVE.json is the only addition)
        assert after.get(data, 0) >= n
    moved = json.loads((dest / "ARCHIVE.json").read_text(encoding="utf-8"))["moved"]
    assert {m["from"] for m in moved} == {"data/processed/train.bin", "data/processed/stats.json",
                                          "checkpoints/run1", "artifacts/model_latest.pt"}


def test_include_raw(tmp_path):
    cfg = make_workspace(tmp_path)
    populate(cfg)
    archive(cfg, dry=False, tag="", include_raw=True)
    (dest,) = list(cfg.path(cfg.paths.archive).iterdir())
    assert (dest / "data" / "raw" / "organized" / "가족" / "KakaoTalkChats.txt").read_text() == "export"
    raw = dest / "data" / "raw"
    assert (raw / "manifest.json").is_file() and (raw / "inbox" / "new.txt").is_file()
    assert not cfg.path(cfg.paths.raw.manifest).exists()


def test_refuses_while_a_trainer_holds_the_lock(tmp_path):
    cfg = make_workspace(tmp_path)
    populate(cfg)
    before = snapshot(tmp_path)
    with RunLock(cfg.path(cfg.paths.checkpoints) / "run1"):
        with pytest.raises(LockedError, match="run1"):
            archive(cfg, dry=False, tag="", include_raw=False)
        with pytest.raises(LockedError):
            archive(cfg, dry=True, tag="", include_raw=False)
        lock_bytes = (cfg.path(cfg.paths.checkpoints) / "run1" / LOCK_NAME).read_bytes()
    assert snapshot(tmp_path) == before  # nothing moved (the lock file came and went)
    assert lock_bytes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a short-lived process (POSIX only)")
def test_stale_lock_does_not_block(tmp_path):
    cfg = make_workspace(tmp_path)
    populate(cfg)
    lock = cfg.path(cfg.paths.checkpoints) / "run1" / LOCK_NAME
    pid = os.fork()
    if pid == 0:  # a process that is gone by the time archive looks
        os._exit(0)
    os.waitpid(pid, 0)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0.0}))
    archive(cfg, dry=False, tag="", include_raw=False)
    (dest,) = list(cfg.path(cfg.paths.archive).iterdir())
    assert (dest / "checkpoints" / "run1" / LOCK_NAME).is_file()


def test_dry_changes_nothing(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    populate(cfg)
    before = snapshot(tmp_path)
    archive(cfg, dry=True, tag="t", include_raw=True)
    assert snapshot(tmp_path) == before and not cfg.path(cfg.paths.archive).exists()
    assert "dry run" in capsys.readouterr().out


def test_nothing_to_archive(tmp_path, capsys):
    cfg = make_workspace(tmp_path)
    write(cfg.path(cfg.paths.artifacts) / ".gitkeep", "")
    archive(cfg, dry=False, tag="", include_raw=False)
    assert "nothing to archive" in capsys.readouterr().out
    assert not cfg.path(cfg.paths.archive).exists()


def test_bad_tag(tmp_path):
    cfg = make_workspace(tmp_path)
    with pytest.raises(ChatbotError, match="--tag"):
        archive(cfg, dry=False, tag="../escape", include_raw=False)
