"""Crash-safe, private file writing: temp file in the same folder, flush + fsync, rename over the target, fsync
the folder.

A reader therefore sees either the old complete file or the new complete file, never a half-written one.

Everything the pipeline writes (data/, checkpoints/, artifacts/: chat text, names, models trained on them) is for
the owner only: files are created 0600 and folders 0700 *whatever the umask* (:func:`private_mkdir`,
:func:`private_open`, :func:`make_private`); even folder names are private (they are room names). On Windows
these modes mean little (ACLs decide): the chmod calls are skipped there and never fail a command anywhere.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator


PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600
_POSIX_MODES = os.name == "posix"


def make_private(path: str | os.PathLike, mode: int = PRIVATE_FILE_MODE) -> None:
    """chmod ``path`` to ``mode`` where POSIX modes exist; never raises (a file system may refuse)."""
    if _POSIX_MODES:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def private_mkdir(path: str | os.PathLike) -> Path:
    """``path.mkdir(parents=True, exist_ok=True)``, but every folder it creates is 0700 whatever the umask.
    Folders that exist already are left as they are (this may be a folder the user made for other things)."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made by someone else meanwhile
        make_private(folder, PRIVATE_DIR_MODE)  # mkdir's mode is cut by the umask
    if not path.is_dir():
        path.mkdir()  # raises the usual error (a file is in the way)
    return path


def private_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = None) -> IO[Any]:
    """``open(path, mode)`` for a private file: created 0600 (whatever the umask), parent folders 0700."""
    path = Path(path)
    private_mkdir(path.parent)
    flags = os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC) | (os.O_RDWR if "+" in mode else os.O_WRONLY)
    flags |= getattr(os, "O_BINARY", 0)  # Windows: Python's io layer does the newline translation itself
    fd = os.open(str(path), flags, PRIVATE_FILE_MODE)
    try:
        make_private(path)
        return os.fdopen(fd, mode, encoding=encoding)
    except BaseException:
        os.close(fd)
        raise


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives power loss (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def relative_path(root: str | os.PathLike, path: str | os.PathLike) -> Path | None:
    """``path`` relative to ``root`` (both resolved, so links and ``..`` count where they lead), or None when it
    lies outside ``root``. Callers choose how to show an outside path (their messages and layouts differ)."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; on clean exit fsync it and rename it over ``path``.

    On an exception the temp file is removed and ``path`` is untouched. The file is 0600; missing folders 0700.
    """
    path = Path(path)
    private_mkdir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    make_private(tmp)  # mkstemp asks for 0600, but the umask could take the owner's bits too
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_open` (a kill during the save leaves the old file intact)."""
    import torch

    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
