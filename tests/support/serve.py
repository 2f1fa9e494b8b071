"""Test helpers for ``serve``: a fake streaming responder, a project with an API key, and a running server on
127.0.0.1:0 (in a thread of the test process). All texts are invented; only loopback addresses are used."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from chatbot.security import hash_password

API_KEY = "sk-test-serve-0123456789abcdef"  # invented


@dataclass
class FakeReply:
    text: str
    confidence: float = -1.0
    n_tokens: int = 0
    latency_s: float = 0.0
    first_token_s: float = 0.0
    stop_reason: str = "eot"
    prompt_tokens: int = 0


class FakeResponder:
    """Streams ``"<turns>|<last message reversed>"`` one character per "token", ``step_s`` apart.

    Honours ``sampling.max_new_tokens`` (stop_reason "max_new_tokens") and ``cancel()`` (checked after every
    token, stop_reason "callback"). ``forever`` pads the reply with "." up to max_new_tokens (a long reply). ``calls`` keeps
    every (history, sampling, seed); ``active`` counts replies being generated right now.
    """

    block_size = 64
    bot_speaker = "S1"

    def __init__(self, step_s: float = 0.0, forever: bool = False, fail: bool = False):
        self.step_s, self.forever, self.fail = step_s, forever, fail
        self.calls: list[tuple[list, Any, Any]] = []
        self.active = 0
        self.lock = threading.Lock()  # one generation at a time, like the real Responder

    def reply(self, history, *, seed=None, on_text=None, sampling=None, cancel=None) -> FakeReply:
        with self.lock:
            self.calls.append((list(history), sampling, seed))
            self.active += 1
            try:
                return self._generate(history, sampling, on_text, cancel)
            finally:
                self.active -= 1

    def _generate(self, history, sampling, on_text, cancel) -> FakeReply:
        if self.fail:
            raise RuntimeError("fake failure")
        limit = sampling.max_new_tokens if sampling is not None else 64
        target = f"{len(history)}|{history[-1][1][::-1]}"
        text, reason = "", "eot"
        for i in range(100_000):
            if not self.forever and i >= len(target):
                break
            if i >= limit:
                reason = "max_new_tokens"
                break
            piece = target[i] if i < len(target) else "."
            text += piece
            if on_text is not None:
                on_text(piece)
            if self.step_s:
                time.sleep(self.step_s)
            if cancel is not None and cancel():
                reason = "callback"
                break
        prompt = sum(len(t) for _, t in history) + 2 * len(history)
        return FakeReply(text, n_tokens=len(text), stop_reason=reason, prompt_tokens=prompt)


def serve_project(tmp_path: Path, *, serve: dict | None = None, key: bool = True):
    """A workspace with the gate password (tests.support.workspace) whose .env also holds the API key's hash."""
    from tests.support.workspace import make_workspace

    over = {"serve": {"header_timeout_s": 2, "body_timeout_s": 2, "shutdown_timeout_s": 5, **(serve or {})}}
    cfg = make_workspace(tmp_path, gen=over, password=True)
    if key:
        with (tmp_path / ".env").open("a", encoding="utf-8") as fh:
            fh.write(f"CHATBOT_API_KEY_HASH='{hash_password(API_KEY, n=2**10)}'\n")
        from chatbot.config import load_config

        cfg = load_config(tmp_path / "configs")
    return cfg


@contextlib.contextmanager
def running(cfg, responder: Any, *, no_auth: bool = False, model: str = "model_latest") -> Iterator[Any]:
    """The app over ``responder`` served on 127.0.0.1:0 in a thread; yields the Background (``.url``, and
    ``.state`` added for assertions)."""
    from chatbot.serve import api_key_check, build_state
    from chatbot.serve.app import create_app
    from chatbot.serve.server import Background

    auth = api_key_check(cfg, "127.0.0.1", no_auth)
    state = build_state(cfg, responder, auth, model=model,
                        info={"bot_speaker": "S1", "step": 7, "context_tokens": 64, "created": 1700000000})
    srv = Background(create_app(state), cfg.gen.serve)
    srv.state = state
    with srv:
        try:
            yield srv
        finally:
            state.engine.close(timeout=5)


def wait_until(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()
