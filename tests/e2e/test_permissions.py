"""Private files: every folder the pipeline creates under data/, checkpoints/, artifacts/ is 0700 and every file
0600, whatever the umask (here the common 022, which would give 0755 / 0644); the Windows guard never fails."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path

import pytest

from chatbot import fsio
from chatbot.lock import RunLock
from tests.support.kakao import conversation, render, write
from tests.support.workspace import make_workspace

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def not_private(*roots: Path) -> list[str]:
    """Every folder that is not 0700 and every file that is not 0600 below ``roots``."""
    bad = []
    for root in roots:
        for p in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            want = fsio.PRIVATE_DIR_MODE if p.is_dir() else fsio.PRIVATE_FILE_MODE
            if mode != want:
                bad.append(f"{p.relative_to(root.parent)} {mode:o}")
    return bad


def test_helpers_create_private_folders_and_files(tmp_path, umask_022):
    deep = fsio.private_mkdir(tmp_path / "a" / "b" / "c")
    fsio.atomic_write_text(deep / "x.txt", "x")
    with fsio.private_open(deep / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write("{}\n")
    with fsio.private_open(deep / "log.jsonl", "a", encoding="utf-8") as fh:  # appends, stays private
        fh.write("{}\n")
    assert (deep / "log.jsonl").read_text() == "{}\n{}\n"
    assert not_private(tmp_path / "a") == []
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)  # a folder that existed before is the user's: left as it is
    fsio.private_mkdir(mine / "sub")
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755 and not_private(mine / "sub") == []
    with pytest.raises(OSError):
        fsio.private_mkdir(deep / "x.txt")  # a file in the way: the usual error


def test_chmod_is_skipped_where_modes_mean_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(fsio, "_POSIX_MODES", False)
    calls = []
    monkeypatch.setattr(fsio.os, "chmod", lambda *a: calls.append(a))
    fsio.atomic_write_text(fsio.private_mkdir(tmp_path / "w") / "f", "x")
    assert calls == []


def test_the_run_lock_creates_a_private_folder(tmp_path, umask_022):
    with RunLock(tmp_path / "data" / "bridge"):
        assert not_private(tmp_path / "data") == []


def test_pipeline_outputs_are_private_under_umask_022(tmp_path, umask_022, monkeypatch, capsys):
    """organize → preprocess → train → publish --encrypt → bridge memory, all under umask 022."""
    from chatbot.bridge.memory import MemoryStore
    from chatbot.data.preprocess import preprocess
    from chatbot.kakao.organize import organize
    from chatbot.artifact.publish import publish
    from chatbot.train.loop import train
    from tests.support.publish import KEY, fast_crypto
    from tests.support.train import reload

    cfg = make_workspace(tmp_path)
    # exported straight into the project folder (raw.root_globs), readable by all as exports usually are
    events = conversation(datetime(2021, 3, 1, 9, 0), 600, ["김하늘", "박서준"], seed=3)
    src = write(tmp_path / "KakaoTalk_20210401_1200_00_000.txt", render("windows_ko", "우리방", events, datetime(2021, 4, 1)))
    src.chmod(0o644)
    organize(cfg)
    cfg.paths.processed.preprocess.vocab_size = 400
    preprocess(cfg)
    cfg = reload(cfg, {"model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_kv_head": 1, "n_embd": 32},
                       "optimization": {"max_steps": 4, "lr_decay_steps": 4, "batch_size": 2, "grad_accum_steps": 1},
                       "logging": {"eval_interval": 2, "save_interval": 2, "log_interval": 2, "eval_iters": 1,
                                   "sample_prompts": []}})
    cfg.paths.processed.preprocess.vocab_size = 400
    assert train(cfg) == 0
    fast_crypto(monkeypatch)
    monkeypatch.setenv("CHATBOT_MODEL_KEY", KEY)
    publish(cfg, encrypt=True, fmt="pt", dry=False)
    MemoryStore(cfg.path(cfg.paths.bridge_memory), max_turns=4)
    capsys.readouterr()

    roots = [tmp_path / "data", tmp_path / "checkpoints", tmp_path / "artifacts"]
    assert all(r.is_dir() for r in roots)
    assert (tmp_path / "artifacts" / "model_latest.enc").is_file()
    organized = [p for p in (tmp_path / "data" / "raw" / "organized").rglob("*.txt")]
    assert organized and stat.S_IMODE(src.stat().st_mode) == 0o644  # the source is the user's: untouched
    assert not_private(*roots) == []
