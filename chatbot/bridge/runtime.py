"""What a long-running front end needs around its work, shared by the ``bridge`` and ``serve`` verbs.

- :func:`is_loopback`: whether a listen address is this machine only (both verbs relax a rule there).
- :func:`folder_lock`: one process per memory folder (``run.lock``), refused with one line naming the folder.
- :func:`stderr_logging`: one line per message / request on standard error while the verb runs (standard output
  stays clean: the jsonl transport writes its answers there), the loggers restored afterwards.
- :func:`graceful_signals`: first SIGINT/SIGTERM (Ctrl+Break on Windows) asks for a graceful stop, a second one
  forces (the bridge's; serve gets the same behaviour from its uvicorn.Server subclass).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Iterator

from ..errors import ChatbotError, LockedError
from ..lock import RunLock
from ..portable import signal_name, stop_signals


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def folder_lock(folder: Path, verb: str) -> Iterator[None]:
    """Hold ``folder``'s run lock while the verb runs; a second ``verb`` on the same folder is refused."""
    try:
        lock = RunLock(folder).acquire()
    except LockedError:
        raise ChatbotError(f"another {verb} is using {folder} (see its run.lock); stop it first") from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def stderr_logging(label: str, names: tuple[str, ...]) -> Iterator[None]:
    """Log records of the loggers ``names`` to standard error as ``<time> <label> <message>``, not to the root
    logger; the first logger is raised to INFO (the others keep their level: uvicorn's warnings only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {label} %(message)s"))
    loggers = [logging.getLogger(name) for name in names]
    old = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False
    loggers[0].setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, (level, propagate) in zip(loggers, old):
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


@contextlib.contextmanager
def graceful_signals(stop: threading.Event, log: logging.Logger) -> Iterator[None]:
    """First SIGINT/SIGTERM (or Ctrl+Break on Windows): ``stop`` is set. Second: KeyboardInterrupt (the bridge's
    memory is already on disk). The main thread only ever waits with a timeout, so on Windows too the handler runs
    promptly. Off the main thread (tests) nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("signal %s: stopping gracefully (again to force)", signal_name(signum))
        stop.set()

    old = {sig: signal.signal(sig, handler) for sig in stop_signals()}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
