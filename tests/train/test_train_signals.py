"""The CLI (`chatbot.ops main`) in a child process: Ctrl+C stops cleanly with exit code 3; kill -9 in the middle
of a save leaves a loadable latest.pt and the next run resumes from it."""

from __future__ import annotations

import os
import signal
import time

import pytest

from chatbot.formats import checkpoint as checkpoint_format
from chatbot.train.loop import EXIT_DONE, train
from tests.support.train import fork_train, load_ckpt, make_train_project, reload

# the trainer is forked and sent POSIX signals; Windows' Ctrl+Break path: tests/foundation/test_portable.py
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the trainer and signals it (POSIX only)")


def test_sigint_finishes_the_step_saves_and_exits_3(tmp_path):
    cfg = make_train_project(tmp_path, {"optimization": {"max_steps": 100000},
                                  "logging": {"log_interval": 1, "save_interval": 100000, "eval_interval": 100000}})
    proc = fork_train(tmp_path)
    try:
        proc.wait_for_output("step 2/")
        proc.send_signal(signal.SIGINT)
        assert proc.wait() == 3, proc.output()
    finally:
        proc.kill()
    out = proc.output()
    assert "SIGINT: stopping after the current step" in out and "Resume with: python -m chatbot.ops train" in out
    assert "Traceback" not in out
    ck = load_ckpt(cfg.run_dir / "latest.pt")
    assert ck["step"] >= 2 and f"stopped at step {ck['step']}/" in out
    assert not (cfg.run_dir / "STOP").exists() and not (cfg.run_dir / "run.lock").exists()


def test_kill_9_during_a_save_leaves_a_loadable_latest_and_resume_continues(tmp_path, capsys):
    # a model big enough that writing a checkpoint takes a noticeable share of each step
    cfg = make_train_project(tmp_path, {"model": {"n_embd": 256, "n_head": 4, "n_kv_head": 2},
                                  "optimization": {"max_steps": 100000, "batch_size": 2, "grad_accum_steps": 1},
                                  "logging": {"log_interval": 1000, "save_interval": 1, "eval_interval": 100000,
                                              "keep_last_n_snapshots": 0}})
    latest = cfg.run_dir / "latest.pt"
    caught_mid_save = 0
    for _ in range(3):  # up to 3 kills, until one lands in the middle of a save
        proc = fork_train(tmp_path)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                names = os.listdir(cfg.run_dir) if cfg.run_dir.is_dir() else []
                if latest.exists() and any(n.startswith(".latest.pt.") and n.endswith(".tmp") for n in names):
                    break
                time.sleep(0.001)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL, proc.output()
        finally:
            proc.kill()
        caught_mid_save += any(n.startswith(".latest.pt.") for n in os.listdir(cfg.run_dir))
        ck = load_ckpt(latest)  # never half-written
        assert ck["format"] == checkpoint_format.FORMAT and ck["step"] >= 1
        if caught_mid_save:
            break
    assert caught_mid_save >= 1
    step = ck["step"]
    cfg = reload(cfg, {"optimization": {"max_steps": step + 2}})
    assert train(cfg) == EXIT_DONE  # the stale lock of the killed trainer is taken over
    out = capsys.readouterr().out
    assert f"resuming latest.pt at step {step}" in out and "removed temp files" in out
    assert load_ckpt(latest)["step"] == step + 2
    assert not any(n.endswith(".tmp") for n in os.listdir(cfg.run_dir))
