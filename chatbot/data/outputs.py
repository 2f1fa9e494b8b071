"""Writing the processed folder safely: temp files next to the outputs, a journal of renames, recovery.

Every output is first written to a temp file in the output folder (:class:`TempOut`, the name scheme of
chatbot.fsio, so :func:`recover` can tell leftovers); :func:`commit` then renames them over the outputs through a
journal, ``stats.json`` last. A crash before the journal exists leaves the previous outputs untouched; a crash
during the renames is rolled forward by the next run's :func:`recover`. :func:`exclusive` keeps a second preprocess
out of the folder meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ChatbotError
from ..formats.processed import JOURNAL, OUTPUT_FILES
from ..fsio import atomic_write_json, fsync_dir, read_json
from ..portable import try_lock

LOCK = ".preprocess.lock"
SPILL_NAME = "sessions.spill"  # the session spill of a build (chatbot.data.spill), removed by recover() if left


class TempOut:
    """A temp file in the output folder (same name scheme as chatbot.fsio, so recover() cleans leftovers)."""

    def __init__(self, out_dir: Path, name: str):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=str(out_dir))
        self.path = Path(tmp)
        self.fh = os.fdopen(fd, "wb")

    def write(self, arr: np.ndarray) -> None:
        self.fh.write(memoryview(np.ascontiguousarray(arr)).cast("B"))

    def close(self) -> Path:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        return self.path


def write_temp(out_dir: Path, name: str, data: bytes) -> Path:
    out = TempOut(out_dir, name)
    out.fh.write(data)
    return out.close()


def discard(outs) -> None:
    """Close and remove the temp outputs of a split that failed half-way (the previous outputs stay intact)."""
    for out in outs:
        with contextlib.suppress(Exception):
            out.fh.close()
        with contextlib.suppress(FileNotFoundError):
            out.path.unlink()


def commit(out_dir: str | os.PathLike, temps: dict[str, Path]) -> None:
    """Rename the complete temp files over the outputs, ``stats.json`` last, through a journal.

    The journal is written (atomically) only once every temp file is complete and fsynced, so whatever happens
    during the renames, :func:`recover` can finish them.
    """
    out_dir = Path(out_dir)
    order = [name for name in OUTPUT_FILES if name in temps]
    order += sorted(name for name in temps if name not in OUTPUT_FILES)
    journal = {"renames": [[temps[name].name, name] for name in order]}
    atomic_write_json(out_dir / JOURNAL, journal)
    _apply(out_dir, journal)
    (out_dir / JOURNAL).unlink()
    fsync_dir(out_dir)


def _apply(out_dir: Path, journal: dict) -> None:
    for tmp, final in journal["renames"]:
        src = out_dir / tmp
        if src.exists():
            os.replace(src, out_dir / final)
    fsync_dir(out_dir)


def recover(out_dir: str | os.PathLike) -> bool:
    """Finish a commit that a crash interrupted (roll forward) and remove temp files of an interrupted build.
    True when there was a commit to finish (the caller says so)."""
    out_dir = Path(out_dir)
    journal_path = out_dir / JOURNAL
    pending = journal_path.exists()
    if pending:
        try:
            journal = read_json(journal_path)
            _apply(out_dir, journal)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # an unreadable journal was never completed: nothing was renamed yet
        journal_path.unlink(missing_ok=True)
    for leftover in out_dir.glob(".*.tmp"):
        if any(leftover.name.startswith(f".{name}.") for name in (*OUTPUT_FILES, SPILL_NAME)):
            leftover.unlink(missing_ok=True)
    return pending


@contextlib.contextmanager
def exclusive(out_dir: Path) -> Iterator[None]:
    """One preprocess at a time per output folder (an OS lock: released even if the process is killed; flock on
    POSIX, msvcrt.locking on Windows — see chatbot.portable.try_lock)."""
    fd = os.open(str(out_dir / LOCK), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        if not try_lock(fd):
            raise ChatbotError(f"another preprocess is writing {out_dir}; wait for it to finish")
        yield
    finally:
        os.close(fd)
