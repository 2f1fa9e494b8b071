"""Trainer test helpers: a tiny processed-data folder built to the contract, and a throw-away project around it.

The dialogue is invented filler (no real chat). The processed folder follows docs/ARCHITECTURE.md exactly:
tokenizer.json, {train,val}.bin (uint16), {train,val}_loss_mask.bin (uint8), {train,val}_starts.bin (uint64),
stats.json with dtype / vocab_size / tokenizer_hash / persona.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from chatbot.config import Config
from chatbot.data.tokenizer import encode_text, special_id, train_tokenizer
from chatbot.tokens import BOS, EOT, speaker_token
from tests.support.workspace import REPO, make_workspace, merged


PHRASES = [
    "hello there", "what are you doing", "just got home", "did you eat yet", "not yet, maybe noodles",
    "the weather is nice today", "want to walk later", "sure, after six", "I am so tired", "go to sleep early",
    "see you tomorrow", "good night", "안녕 뭐해?", "밥 먹었어?", "오늘 날씨 좋다", "내일 보자", "ㅋㅋㅋ 그래",
    "영화 볼래?", "좋아 몇 시?", "일곱 시 어때",
]

TINY_TRAIN = {
    "runtime": {"seed": 7, "device": "cpu", "dtype": "float32", "compile": False},
    "model": {"block_size": 32, "n_layer": 2, "n_head": 2, "n_kv_head": 1, "n_embd": 32, "multiple_of": 16},
    "optimization": {"batch_size": 4, "grad_accum_steps": 2, "max_steps": 8, "learning_rate": 3e-3,
                     "min_lr": 3e-4, "warmup_steps": 2, "lr_decay_steps": 8},
    "logging": {"log_interval": 2, "eval_interval": 4, "eval_iters": 2, "save_interval": 4,
                "keep_last_n_snapshots": 2, "sample_prompts": ["hello there"]},
}

_CACHE: dict[tuple, Path] = {}


def _sessions(n_sessions: int, seed: int, repeat: bool) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)
    out = []
    for s in range(n_sessions):
        n = 6 if repeat else rng.randint(4, 9)
        turns = []
        for t in range(n):
            spk = "S1" if t % 2 == 0 else "S2"
            text = PHRASES[t % 6] if repeat else rng.choice(PHRASES)
            turns.append((spk, text))
        out.append(turns)
    return out


def _encode_split(tok, sessions, context_turns: int = 4):
    """Token ids, loss mask and window starts of a list of sessions (every turn after the first is a target)."""
    bos, eot = special_id(tok, BOS), special_id(tok, EOT)
    ids: list[int] = []
    mask: list[int] = []
    starts: list[int] = []
    for turns in sessions:
        session_start = len(ids)
        ids.append(bos)
        mask.append(0)
        turn_offsets = []
        for t, (spk, text) in enumerate(turns):
            turn_offsets.append(len(ids) if t else session_start)
            body = encode_text(tok, text) + [eot]
            ids.append(special_id(tok, speaker_token(spk)))
            mask.append(0)
            ids.extend(body)
            mask.extend([1 if t >= 1 else 0] * len(body))
            if t >= 1:
                starts.append(turn_offsets[max(0, t - context_turns)])
    return (np.asarray(ids, dtype=np.uint16), np.asarray(mask, dtype=np.uint8),
            np.asarray(sorted(set(starts)), dtype=np.uint64))


def make_processed(out_dir: Path, *, n_sessions: int = 40, val_sessions: int = 6, seed: int = 0,
                   vocab_size: int = 400, repeat: bool = False) -> dict:
    """Write a contract-exact processed folder to ``out_dir``; returns stats.json's content."""
    key = (n_sessions, val_sessions, seed, vocab_size, repeat)
    out_dir = Path(out_dir)
    if key in _CACHE:
        shutil.copytree(_CACHE[key], out_dir, dirs_exist_ok=True)
        return json.loads((out_dir / "stats.json").read_text())
    sessions = _sessions(n_sessions, seed, repeat)
    tok = train_tokenizer((text for turns in sessions for _, text in turns), vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
    counts = {"S1": 0, "S2": 0}
    for turns in sessions:
        for spk, _ in turns:
            counts[spk] += 1
    split_at = n_sessions - val_sessions
    n_tok = {}
    for name, part in (("train", sessions[:split_at]), ("val", sessions[split_at:])):
        ids, mask, starts = _encode_split(tok, part)
        ids.tofile(out_dir / f"{name}.bin")
        mask.tofile(out_dir / f"{name}_loss_mask.bin")
        starts.tofile(out_dir / f"{name}_starts.bin")
        n_tok[name] = int(len(ids))
    stats = {
        "dtype": "uint16", "vocab_size": tok.get_vocab_size(),
        "tokenizer_hash": hashlib.sha256((out_dir / "tokenizer.json").read_bytes()).hexdigest(),
        "config_hash": "test", "persona": {"target": "room", "self": None, "speakers": counts},
        "tokens": n_tok,
    }
    (out_dir / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    cache = Path(tempfile.mkdtemp(prefix="chatbot-train-helper-"))
    atexit.register(shutil.rmtree, cache, True)
    shutil.copytree(out_dir, cache, dirs_exist_ok=True)
    _CACHE[key] = cache
    return stats


def make_train_project(root: Path, overrides: dict | None = None, **data_kw) -> Config:
    """A workspace (tests.support.workspace) with a tiny train.yaml (TINY_TRAIN, then ``overrides``) and
    data/processed/ (make_processed with ``data_kw``); returns the loaded Config."""
    make_processed(Path(root) / "data" / "processed", **data_kw)
    return make_workspace(root, train=merged(TINY_TRAIN, overrides or {}))


def reload(cfg: Config, overrides: dict | None = None) -> Config:
    """Merge new overrides into the project's current train.yaml and load the config again."""
    return make_workspace(cfg.root, train=overrides)


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def train_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "chatbot.ops", "train", "--config-dir", str(root / "configs")]


def spawn_train(root: Path, cmd: list[str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd or train_cmd(root), cwd=root, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


class ForkedCLI:
    """``python -m chatbot.ops <argv>`` in a forked child process (the CLI's own ``main``), output to a file.

    Forking the test process skips a fresh interpreter + torch import per child (seconds on a busy 2-core box);
    the child is still a separate process that receives real signals and exits with the CLI's exit code.
    """

    def __init__(self, argv: list[str], log_path: Path):
        self.log_path = Path(log_path)
        import chatbot.ops  # noqa: F401  (imports happen once, in the parent, not in every child)
        import chatbot.train.loop  # noqa: F401
        import torch._dynamo  # noqa: F401  (the optimizer's first step imports it: ~2 s)

        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.pid = os.fork()
        if self.pid == 0:  # child
            code = 99
            try:
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)
                sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                from chatbot.ops import main

                code = main(argv)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(fd)
        self.returncode: int | None = None

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"child did not exit in {timeout}s; output:\n{self.output()}")
            time.sleep(0.01)
        return self.returncode

    def wait_for_output(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"never saw {text!r}; output:\n{self.output()}")
            time.sleep(0.01)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait()


def fork_train(root: Path) -> ForkedCLI:
    return ForkedCLI(["train", "--config-dir", str(root / "configs")], root / "train.log")


def load_ckpt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
