"""Generation for the API: a bounded worker pool around the Responder, with streaming and cancellation.

The request handlers run on the asyncio event loop and must never block it, so every reply is generated on one of
``serve.workers`` threads (the bridge's :class:`~chatbot.bridge.pool.WorkerPool`: at most ``workers +
queue_limit`` jobs exist; a full pool refuses at once and the handler answers 503 + Retry-After). A job reports
back to the loop through ``loop.call_soon_threadsafe``: ``("start",)`` when a worker picks it up, ``("text",
chunk)`` as the reply grows, then ``("done", reply)`` or ``("error", name)``.

Cancellation: a client that disconnects, or a reply past ``request_timeout_s``, sets ``job.cancelled``; the
Responder checks it after every token (``cancel=``), so the worker is free again within one decoding step, and a
job cancelled while still queued is skipped without generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import replace
from typing import Any

from ..bridge.pool import WorkerPool, moving_average, retry_after_s
from .wire import StopScanner


class GenJob:
    """One reply being generated; its events arrive on ``events`` (an asyncio.Queue of the handler's loop)."""

    room_hash = "-"  # WorkerPool names this in its log line if a worker crashes; API jobs have no room

    def __init__(self, history: list[tuple[str, str]], sampling: Any, seed: int | None, stops: list[str],
                 loop: asyncio.AbstractEventLoop):
        self.history, self.sampling, self.seed = history, sampling, seed
        self.scanner = StopScanner(stops)
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.created = time.monotonic()
        self.watched = self.created  # when its handler last checked that the client is still there
        self.queued_s = 0.0
        self.gen_s = 0.0

    def cancel(self) -> None:
        self.cancelled.set()

    def stop_now(self) -> bool:
        """Polled by the Responder after every token."""
        return self.cancelled.is_set() or self.scanner.stopped

    def emit(self, *event: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server stopped): nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Engine:
    """The Responder behind a bounded pool. ``concurrent_replies`` on the responder is honoured as in the bridge
    (without it the Responder's own lock serializes generation; extra workers only queue behind it)."""

    def __init__(self, responder: Any, workers: int, queue_limit: int):
        self.responder = responder
        self.pool = WorkerPool(workers, queue_limit, self._work)
        self.ewma_gen_s = 0.0
        self.busy = 0  # jobs generating right now
        self._busy_lock = threading.Lock()

    # admission: ``pool.reserve()`` (False = full, answer 503), then ``pool.put(job)`` or ``pool.release()``

    def retry_after_s(self) -> int:
        concurrency = self.pool.workers if getattr(self.responder, "concurrent_replies", False) else 1
        return retry_after_s(self.pool.expected_wait_s(self.ewma_gen_s, concurrency), 60)

    def sampling_for(self, base: Any, temperature: float | None, top_p: float | None,
                     max_tokens: int | None, block_size: int) -> Any:
        """gen.yaml sampling with a request's overrides (top_p 0 = greedy, as OpenAI treats it)."""
        over: dict[str, Any] = {}
        if temperature is not None:
            over["temperature"] = temperature
        if top_p is not None:
            if top_p <= 0.0:
                over["temperature"] = 0.0
            else:
                over["top_p"] = top_p
        if max_tokens is not None:
            over["max_new_tokens"] = max(1, min(max_tokens, block_size))
        return replace(base, **over) if over else base

    def close(self, timeout: float | None = None) -> bool:
        """No new jobs; admitted ones finish (graceful shutdown)."""
        return self.pool.close(timeout)

    # ------------------------------------------------------------------ worker threads
    def _work(self, job: GenJob) -> None:
        start = time.monotonic()
        job.queued_s = start - job.created
        if job.cancelled.is_set():  # its client left (or its time ran out) while it waited
            job.emit("error", "cancelled")
            return
        job.emit("start")
        with self._busy_lock:
            self.busy += 1

        def on_text(chunk: str) -> None:
            out = job.scanner.feed(chunk)
            if out:
                job.emit("text", out)

        try:
            # an API request asks for the bot's turn: always answered, whatever gen.reply_policy says
            kw = {"policy": "always"} if getattr(self.responder, "plan", None) is not None else {}
            reply = self.responder.reply(list(job.history), seed=job.seed, on_text=on_text, sampling=job.sampling,
                                         cancel=job.stop_now, **kw)
            event: tuple = ("done", reply)
        except Exception as exc:  # a broken reply must not take the server down; only the type is logged
            event = ("error", type(exc).__name__)
        finally:
            with self._busy_lock:
                self.busy -= 1
        job.gen_s = time.monotonic() - start  # before the last event: the handler logs it
        self.ewma_gen_s = moving_average(self.ewma_gen_s, job.gen_s)
        tail = job.scanner.finish() if event[0] == "done" else ""
        if tail:
            job.emit("text", tail)
        job.emit(*event)
