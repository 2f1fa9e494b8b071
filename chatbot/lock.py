"""The run lock: one trainer per run folder, and `archive` refuses while one is running.

The lock is a JSON file (pid, host, start time) created with O_EXCL. A lock whose process is gone (same host,
pid not alive) is stale and is taken over; a lock from another host is never taken over automatically.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from . import portable
from .errors import LockedError
from .fsio import PRIVATE_FILE_MODE, make_private, private_mkdir

LOCK_NAME = "run.lock"


@dataclass
class LockInfo:
    pid: int
    host: str
    started: float

    @property
    def alive(self) -> bool:
        if self.host != socket.gethostname():
            return True  # cannot check another machine: assume it is running
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this machine (a zombie counts as dead); see chatbot.portable.pid_alive."""
    return portable.pid_alive(pid)


def read_lock(run_dir: str | os.PathLike) -> LockInfo | None:
    """The lock in ``run_dir`` or None when there is none (an unreadable lock counts as stale)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LockInfo(int(data["pid"]), str(data["host"]), float(data["started"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return LockInfo(-1, socket.gethostname(), 0.0)


def active_lock(run_dir: str | os.PathLike) -> LockInfo | None:
    """The lock if a live process holds it, else None."""
    info = read_lock(run_dir)
    return info if info is not None and info.alive else None


class RunLock:
    """Context manager holding ``<run_dir>/run.lock``; takes over a stale lock, refuses a live one."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self.took_over_stale = False
        self._held = False

    def acquire(self) -> "RunLock":
        private_mkdir(self.path.parent)  # the run folder is often created here first: 0700, not umask-default
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})
        for _ in range(3):
            try:
                fd = os.open(str(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
            except FileExistsError:
                info = read_lock(self.path.parent)
                if info is not None and info.alive:
                    raise LockedError(
                        f"run '{self.path.parent.name}' is locked by a running trainer (pid {info.pid} on {info.host}); "
                        f"stop it first (create {self.path.parent / 'STOP'}) or wait for it to finish"
                    )
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self.took_over_stale = True
                continue
            make_private(self.path)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            self._held = True
            return self
        raise LockedError(f"could not take the run lock {self.path}; remove it by hand if no trainer is running")

    def release(self) -> None:
        if self._held:
            info = read_lock(self.path.parent)
            if info is not None and info.pid == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self._held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
