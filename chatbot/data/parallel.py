"""Encoding in worker processes for a big corpus (encoding is the longest step of preprocess, and pure CPU)."""

from __future__ import annotations

import contextlib
import os
from collections import deque
from typing import Callable, Iterable, Iterator

import numpy as np

from ..portable import pool_start_method
from .encode import FastEncoder

PARALLEL_MIN_TURNS = 200_000  # encode in worker processes from this many turns on

_WORKER: FastEncoder | None = None


def _worker_init(tok_json: str) -> None:
    """Runs in each worker (module-level and with a str argument, so a spawned worker can receive it)."""
    global _WORKER
    import signal

    from tokenizers import Tokenizer

    # Ctrl+C / Ctrl+Break reach every process of the console: the parent alone handles them (and ends the pool)
    for name in ("SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)

    _WORKER = FastEncoder(Tokenizer.from_str(tok_json))


def _worker_encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lens, flat = _WORKER.encode(texts)  # type: ignore[union-attr]
    return lens.astype(np.int32), flat.astype(np.int32)


@contextlib.contextmanager
def chunk_encoder(tok, n_turns: int, log: Callable[[str], None]) -> Iterator:
    """``encode_chunks`` for :func:`scratch_chunks`: worker processes (one per CPU) for a big corpus — encoding is
    the longest step and pure CPU — else this process. Both give identical ids (tests compare them).

    Workers are forked on Linux (no re-import of ``__main__``) and spawned elsewhere (Windows has no fork, macOS
    forks unsafely): the initialiser and its argument (the tokenizer as JSON text) are picklable module-level
    objects, so both start methods run the same code. The tokenizer library turns its own thread pool off in a
    forked child; TOKENIZERS_PARALLELISM=false is set around the start only to silence its warning about that.
    """
    import multiprocessing

    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or n_turns < PARALLEL_MIN_TURNS:
        encoder = FastEncoder(tok)
        yield lambda chunks: map(encoder.encode, chunks)
        return
    method = pool_start_method()
    log(f"encoding {n_turns} turns in {workers} worker processes ({method})")
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = multiprocessing.get_context(method).Pool(workers, _worker_init, (tok.to_str(),))
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old
    with pool:
        yield lambda chunks: _bounded_imap(pool, _worker_encode, chunks, 2 * workers)


def _bounded_imap(pool, fn, items: Iterable, ahead: int) -> Iterator:
    """``pool.imap(fn, items)`` that takes at most ``ahead`` items from ``items`` before their results are
    consumed (``imap`` would read the whole iterable into its task queue: every chunk's texts at once)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= ahead:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()
