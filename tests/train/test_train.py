"""The trainer in-process: learning, exact resume, stop/abort, checkpoints, refusals, schedule, sampler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from chatbot.data.dataset import WindowSampler, open_split, read_windows
from chatbot.errors import ChatbotError, LockedError
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.train.loop import EXIT_ABORTED, EXIT_DONE, EXIT_STOPPED, lr_at, train
from chatbot.train.dist import Abort, StopSignals
from tests.support.train import load_ckpt, make_train_project, reload

CKPT_KEYS = {"format", "model", "model_args", "optimizer", "step", "best_val_loss", "val_loss", "train_loss",
             "tokenizer_hash", "vocab_size", "rng", "sampler", "train_config", "world_size", "tokens_seen"}


def metrics(cfg) -> list[dict]:
    return [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]


def stop_at(cfg, k):
    def hook(step):
        if step == k:
            (cfg.run_dir / cfg.train.stop_file_name).touch()
    return hook


def test_loss_decreases_on_a_tiny_repeated_dataset(tmp_path, capsys):
    cfg = make_train_project(tmp_path, {"optimization": {"max_steps": 40, "lr_decay_steps": 40, "learning_rate": 1e-2},
                                  "logging": {"log_interval": 5, "eval_interval": 20, "save_interval": 20}},
                       repeat=True, n_sessions=12, val_sessions=2)
    assert train(cfg) == EXIT_DONE
    losses = [r["loss"] for r in metrics(cfg) if r["kind"] == "train"]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]
    out = capsys.readouterr().out
    assert "step 5/40 | loss" in out and "tok/s" in out and "MFU" in out and "next eval in" in out
    assert "sample: hello there →" in out
    evals = [r for r in metrics(cfg) if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [20, 40] and evals[1]["val_loss"] < evals[0]["val_loss"]
    ET.fromstring((cfg.run_dir / "loss.svg").read_text())  # well-formed SVG
    assert "<polyline" in (cfg.run_dir / "loss.svg").read_text()


def test_resume_after_stop_is_bit_identical_and_checkpoints_follow_the_contract(tmp_path, capsys):
    over = {"model": {"dropout": 0.1}, "logging": {"save_interval": 2, "keep_last_n_snapshots": 2}}
    straight = make_train_project(tmp_path / "a", over)
    assert train(straight) == EXIT_DONE
    split = make_train_project(tmp_path / "b", over)
    assert train(split, on_step=stop_at(split, 3)) == EXIT_STOPPED
    out = capsys.readouterr().out
    assert "stopped at step 3/8" in out and "Resume with: python -m chatbot.ops train" in out
    assert not (split.run_dir / "STOP").exists() and not (split.run_dir / "run.lock").exists()
    assert load_ckpt(split.run_dir / "latest.pt")["step"] == 3
    assert train(split) == EXIT_DONE
    assert "resuming latest.pt at step 3" in capsys.readouterr().out

    a, b = load_ckpt(straight.run_dir / "latest.pt"), load_ckpt(split.run_dir / "latest.pt")
    assert CKPT_KEYS <= set(a) and a["format"] == checkpoint_format.FORMAT and a["step"] == 8
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for name, t in s.items():
            assert torch.equal(t, b["optimizer"]["state"][i][name])
    assert a["sampler"] == b["sampler"] and a["tokens_seen"] == b["tokens_seen"] == 8 * 8 * 32
    assert a["best_val_loss"] == b["best_val_loss"] and a["val_loss"] == pytest.approx(b["val_loss"])
    assert a["model_args"]["dropout"] == 0.1 and a["vocab_size"] == a["model_args"]["vocab_size"]
    snaps = sorted(p.name for p in (straight.run_dir / "snapshots").iterdir())
    assert snaps == ["step_00000006.pt", "step_00000008.pt"]
    assert load_ckpt(straight.run_dir / "best.pt")["step"] in (4, 8)
    # the resumed run's metrics continue the same curve (no duplicated steps)
    steps = [r["step"] for r in metrics(split) if r["kind"] == "train"]
    assert steps == [2, 4, 6, 8]


def test_raised_max_steps_and_changed_lr_continue_and_are_announced(tmp_path, capsys):
    cfg = make_train_project(tmp_path, {"optimization": {"max_steps": 4}})
    assert train(cfg) == EXIT_DONE
    assert train(cfg) == EXIT_DONE
    assert "already at step 4" in capsys.readouterr().out
    cfg = reload(cfg, {"optimization": {"max_steps": 6, "learning_rate": 1e-3}})
    assert train(cfg) == EXIT_DONE
    out = capsys.readouterr().out
    assert "optimization.learning_rate: 0.003 → 0.001 (applied)" in out
    assert "optimization.max_steps: 4 → 6 (applied)" in out
    ck = load_ckpt(cfg.run_dir / "latest.pt")
    assert ck["step"] == 6 and ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr_at(5, cfg.train.optimization))


def test_second_interrupt_aborts_at_once_and_keeps_the_previous_checkpoint(tmp_path, capsys):
    cfg = make_train_project(tmp_path, {"logging": {"save_interval": 2}})

    def storm(step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)

    assert train(cfg, on_step=storm) == EXIT_ABORTED
    assert load_ckpt(cfg.run_dir / "latest.pt")["step"] == 2
    assert not (cfg.run_dir / "run.lock").exists()
    assert "aborted" in capsys.readouterr().err
    assert train(cfg) == EXIT_DONE  # resumes from step 2


def test_stop_signals_first_requests_second_aborts():
    with StopSignals(announce=False) as s:
        signal.raise_signal(signal.SIGTERM)
        assert s.requested
        with pytest.raises(Abort):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_live_lock_is_refused_and_stale_lock_taken_over(tmp_path, capsys):
    cfg = make_train_project(tmp_path, {"optimization": {"max_steps": 2}})
    cfg.run_dir.mkdir(parents=True)
    lock = cfg.run_dir / "run.lock"
    import socket

    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 0}))
    with pytest.raises(LockedError, match="locked by a running trainer"):
        train(cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    assert train(cfg) == EXIT_DONE
    assert "took over a stale run lock" in capsys.readouterr().out
    assert not lock.exists()


def _break(path, fn):
    fn(path)


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"run `python -m chatbot.ops preprocess`"),
    ("mask_length", r"train.bin has \d+ tokens but train_loss_mask.bin has \d+ mask bytes"),
    ("vocab", r"the tokenizer has 400 tokens but stats.json says vocab_size 300"),
    ("token_id", r"train.bin holds token id 65000 but the vocabulary has 400 ids"),
    ("tokenizer_file", r"tokenizer.json does not match the tokenizer_hash"),
])
def test_bad_processed_data_is_refused_with_one_line(tmp_path, case, pattern):
    cfg = make_train_project(tmp_path)
    p = cfg.processed_dir
    if case == "missing":
        (p / "stats.json").unlink()
    elif case == "mask_length":
        with open(p / "train_loss_mask.bin", "ab") as fh:
            fh.write(b"\x01")
    elif case == "vocab":
        stats = json.loads((p / "stats.json").read_text())
        stats["vocab_size"] = 300
        (p / "stats.json").write_text(json.dumps(stats))
    elif case == "token_id":
        with open(p / "train.bin", "r+b") as fh:
            fh.seek(20)
            fh.write(np.array([65000], dtype=np.uint16).tobytes())
    else:
        (p / "tokenizer.json").write_text((p / "tokenizer.json").read_text() + " ")
    with pytest.raises(ChatbotError, match=pattern) as info:
        train(cfg)
    assert "\n" not in str(info.value)
    assert not (cfg.run_dir / "latest.pt").exists()


def test_checkpoint_mismatches_are_refused(tmp_path):
    cfg = make_train_project(tmp_path, {"optimization": {"max_steps": 2}})
    assert train(cfg) == EXIT_DONE
    before = (cfg.run_dir / "latest.pt").read_bytes()
    shape = reload(cfg, {"optimization": {"max_steps": 4}, "model": {"n_layer": 3}})
    with pytest.raises(ChatbotError, match=r"model.n_layer is 3 but latest.pt was trained with 2"):
        train(shape)
    cfg = reload(cfg, {"optimization": {"max_steps": 4}})
    stats = json.loads((cfg.processed_dir / "stats.json").read_text())
    tok = (cfg.processed_dir / "tokenizer.json").read_text()
    (cfg.processed_dir / "tokenizer.json").write_text(tok + "\n")
    import hashlib

    (cfg.processed_dir / "stats.json").write_text(json.dumps(
        {**stats, "tokenizer_hash": hashlib.sha256((tok + "\n").encode()).hexdigest()}))
    with pytest.raises(ChatbotError, match="different tokenizer"):
        train(cfg)
    (cfg.processed_dir / "tokenizer.json").write_text(tok)
    (cfg.processed_dir / "stats.json").write_text(json.dumps({**stats, "vocab_size": stats["vocab_size"] + 8}))
    with pytest.raises(ChatbotError, match=r"vocabulary of \d+ but latest.pt's model has"):
        train(cfg)
    no_resume = reload(cfg, {"auto_resume": False})
    (cfg.processed_dir / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ChatbotError, match="auto_resume is false"):
        train(no_resume)
    (cfg.run_dir / "latest.pt").write_bytes(b"garbage")
    with pytest.raises(ChatbotError, match="not a readable checkpoint"):
        train(cfg)
    (cfg.run_dir / "latest.pt").write_bytes(before)


def test_lr_schedule_depends_on_decay_steps_not_max_steps():
    o = SimpleNamespace(learning_rate=1.0, min_lr=0.1, warmup_steps=4, lr_decay_steps=20, lr_schedule="cosine",
                        max_steps=10)
    lrs = [lr_at(s, o) for s in range(30)]
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:])) and lrs[20:] == [0.1] * 10
    assert lr_at(12, SimpleNamespace(**{**vars(o), "max_steps": 1000})) == lrs[12]
    lin = SimpleNamespace(**{**vars(o), "lr_schedule": "linear"})
    assert lr_at(12, lin) == pytest.approx(1.0 - 0.5 * 0.9)
    assert lr_at(25, SimpleNamespace(**{**vars(o), "lr_schedule": "constant"})) == 1.0


def test_sampler_streams_deterministically_and_resumes_from_its_state(tmp_path):
    cfg = make_train_project(tmp_path)
    split = open_split(cfg.processed_dir, "train", "uint16", 10_000)
    a = WindowSampler(split, seed=3)
    stream = np.concatenate([a.take(7) for _ in range(30)])  # crosses several epochs
    n = split.n_windows
    assert sorted(stream[:n].tolist()) == sorted(np.asarray(split.starts).tolist())  # one epoch = every start once
    b = WindowSampler(split, seed=3)
    b.take(50)
    c = WindowSampler(split, seed=3)
    c.load_state_dict(b.state_dict())
    assert np.array_equal(c.take(60), stream[50:110])
    assert not np.array_equal(WindowSampler(split, seed=4).take(20), stream[:20])


def test_windows_are_shifted_and_padded_past_the_end(tmp_path):
    cfg = make_train_project(tmp_path)
    split = open_split(cfg.processed_dir, "train", "uint16", 10_000)
    T, last = 32, split.n_tokens - 5
    x, y, w = read_windows(split, np.array([0, last]), T, pad_id=0, loss_mode="response_only")
    toks, mask = np.asarray(split.tokens), np.asarray(split.mask)
    assert x.shape == y.shape == w.shape == (2, T)
    assert x[0].tolist() == toks[:T].tolist() and y[0].tolist() == toks[1 : T + 1].tolist()
    assert w[0].tolist() == mask[1 : T + 1].tolist()
    assert x[1, :5].tolist() == toks[last:].tolist() and (x[1, 5:] == 0).all() and (w[1, 4:] == 0).all()
    _, _, w_all = read_windows(split, np.array([last]), T, pad_id=0, loss_mode="all")
    assert w_all[0].tolist() == [1.0] * 4 + [0.0] * (T - 4)
