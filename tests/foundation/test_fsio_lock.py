"""Atomic writes and the run lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.errors import LockedError
from chatbot.fsio import atomic_open, atomic_write_json, atomic_write_text
from chatbot.lock import LOCK_NAME, RunLock, active_lock


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w", encoding="utf-8") as fh:
            fh.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_lock_refuses_live_holder_and_takes_over_stale(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run) as lock:
        assert not lock.took_over_stale
        assert active_lock(run) is not None
        # a live process (this one) holds it: a second lock is refused
        with pytest.raises(LockedError, match="locked by a running trainer"):
            RunLock(run).acquire()
    assert not (run / LOCK_NAME).exists()

    # a lock left by a dead process is stale
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": 0}))
    assert active_lock(run) is None
    with RunLock(run) as lock:
        assert lock.took_over_stale
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_garbage_lock_file_counts_as_stale(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text("not json")
    assert active_lock(tmp_path) is None
    with RunLock(tmp_path) as lock:
        assert lock.took_over_stale
