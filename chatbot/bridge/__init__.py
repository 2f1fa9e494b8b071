"""Messenger bridge: ``python -m chatbot.ops bridge [--dry | --send]`` connects the bot to real KakaoTalk traffic.

Instead of driving the KakaoTalk window with mouse coordinates (fragile, Windows-only, untestable) the bridge speaks
protocols behind one small interface — a transport turns its wire format into :class:`core.Incoming` and writes
the answer; filters, per-room memory and logging are shared (core.py), and so is the bounded worker pool (pool.py):

- ``kakao-skill`` (server.py, transports.py, wire.py; the HTTP layer under both: listener.py): Kakao i Open
  Builder skill server, ``POST /skill``.
- ``relay`` (server.py, transports.py, wire.py): ``POST /relay`` with ``{"room", "sender", "msg"}`` for Android
  notification auto-reply apps; ``{"reply": ...}`` or 204.
- ``jsonl`` (jsonl.py): JSON lines on stdin or a followed file → JSON lines on stdout.

``--dry`` (default) runs everything — receive, context, generation — and only logs what would be sent;
``--send`` really replies, and on an HTTP transport only with ``bridge.shared_secret`` set (otherwise any local
user, or anyone who can reach the port, could talk to the bot; ``bridge-secret`` writes one into ``.env``).
Per-room memory lives in ``paths.bridge_memory`` (memory.py). Settings: gen.yaml ``bridge:``
(chatbot.config.BridgeConfig). Nothing here imports torch: the model is loaded by
``chatbot.infer.responder.load_responder`` after the password gate, and tests inject any object with ``.reply``.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from ..config import BridgeConfig, Config
from .core import Bridge, Incoming, Job
from .memory import MemoryStore
from .pool import WorkerPool
from .runtime import folder_lock, graceful_signals, is_loopback, stderr_logging

__all__ = ["run_bridge", "make_bridge", "serve_http", "is_loopback", "Bridge", "Incoming", "Job", "MemoryStore",
           "WorkerPool"]

log = logging.getLogger("chatbot.bridge")

MIN_SECRET_CHARS = 16  # shorter shared secrets are accepted with a warning


def make_bridge(bc: BridgeConfig, memory_dir: str | Path, *, send: bool, responder: Any = None) -> Bridge:
    """A Bridge over the memory folder with the settings of gen.yaml ``bridge:`` (``bc``)."""
    store = MemoryStore(memory_dir, max_turns=bc.memory_max_turns, archive=bc.memory_archive,
                        dedupe_window_s=bc.dedupe_window_s)
    return Bridge(bc, store, send=send, responder=responder)


def run_bridge(cfg: Config, send: bool) -> None:
    """The ``bridge`` verb: password gate, then serve the configured transport until EOF / SIGINT / SIGTERM."""
    from ..errors import ChatbotError
    from ..security import require_password

    bc = cfg.gen.bridge
    if send and bc.transport != "jsonl" and not bc.shared_secret:  # before the password prompt: fail fast
        raise ChatbotError(
            f"bridge --send on the {bc.transport} transport needs a shared secret, or anyone who can reach "
            f"{bc.host}:{bc.port} can talk to the bot: run `python -m chatbot.ops bridge-secret` (writes "
            f"CHATBOT_BRIDGE_SECRET into .env) or set bridge.shared_secret in gen.yaml; --dry runs without one")
    require_password(cfg)
    memory_dir = cfg.path(cfg.paths.bridge_memory)

    def load() -> Any:
        from ..infer.responder import load_responder

        return load_responder(cfg)

    with folder_lock(memory_dir, "bridge"), stderr_logging("bridge", ("chatbot.bridge",)):
        bridge = make_bridge(bc, memory_dir, send=send)
        if bc.transport == "jsonl":
            _run_jsonl(cfg, bridge, load, memory_dir)
        else:
            serve_http(bridge, load, host=bc.host, port=bc.port)


def _run_jsonl(cfg: Config, bridge: Bridge, load: Callable[[], Any], memory_dir: Path) -> None:
    from .jsonl import run_jsonl

    bc = bridge.bc
    stop = threading.Event()
    with graceful_signals(stop, log):
        bridge.set_responder(load())
        log.info("bridge ready: transport=jsonl mode=%s input=%s", _mode(bridge.send),
                 "file" if bc.jsonl_path else "stdin")
        follow = cfg.path(bc.jsonl_path) if bc.jsonl_path else None
        run_jsonl(bridge, sys.stdin if follow is None else None, sys.stdout, stop, follow=follow,
                  offset_file=memory_dir / "jsonl_offset.json")
    _log_summary(bridge)


def serve_http(bridge: Bridge, load: Callable[[], Any], *, host: str, port: int,
               stop: threading.Event | None = None, on_listening: Callable[[int], None] | None = None) -> None:
    """Listen first (GET /healthz says "loading"), load the model, serve until ``stop`` or SIGINT/SIGTERM, then
    stop gracefully: in-flight replies are finished and delivered, memory is on disk (written through)."""
    from .server import start_server, stop_server

    stop = stop or threading.Event()
    server, _ = start_server(bridge, host, port)
    secret = bridge.bc.shared_secret
    if not is_loopback(host) and not secret:
        log.warning("listening on %s without bridge.shared_secret: anyone who can reach it can talk to the bot", host)
    elif secret and len(secret) < MIN_SECRET_CHARS:
        log.warning("bridge.shared_secret has fewer than %d characters: easy to guess; "
                    "`python -m chatbot.ops bridge-secret --replace` makes a random one", MIN_SECRET_CHARS)
    log.info("bridge listening on http://%s:%d (transport=%s mode=%s); loading the model",
             host, server.port, bridge.transport, _mode(bridge.send))
    if on_listening is not None:
        on_listening(server.port)
    try:
        with graceful_signals(stop, log):
            if bridge.responder is None:
                bridge.set_responder(load())
            log.info("model loaded; ready")
            while not stop.wait(0.5):
                pass
            log.info("stopping: finishing %d admitted message(s)", bridge.pool.pending)
            finished = stop_server(server, bridge)
            if not finished:
                log.warning("stopped with replies still being generated (timeout)")
    finally:
        if not server.closing.is_set():  # model loading failed or a second signal: close without waiting
            server.closing.set()
            server.shutdown()
            bridge.close(timeout=5.0)
            server.close_idle()
            server.server_close()
    _log_summary(bridge)


def _log_summary(bridge: Bridge) -> None:
    counts = " ".join(f"{k}={v}" for k, v in sorted(bridge.counts.items())) or "none"
    log.info("bridge stopped; messages by outcome: %s; memory on disk (%d room writes)", counts, bridge.store.saves)


def _mode(send: bool) -> str:
    return "send" if send else "dry"
