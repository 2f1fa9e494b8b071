"""The few places where Windows, macOS and Linux differ, each behind one small function with a working fallback.

Nothing POSIX-only (``fcntl``, ``fork``, ``SIGHUP``/``SIGKILL``, ``os.getuid``, ``resource``) is imported or
touched at module level anywhere in the package: code that needs one of them asks this module, which checks the
platform first. tests/e2e/test_platforms.py runs the whole pipeline where ``fcntl`` cannot be imported and ``fork``
does not exist, with a cp949 console, and compares the outputs byte for byte with a normal Linux run.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import unicodedata
from typing import IO

IS_WINDOWS = os.name == "nt"


# ------------------------------------------------------------------------------------------------ console
def setup_console(streams: tuple[IO[str], ...] | None = None) -> None:
    """Make stdout/stderr unable to crash on a character their encoding lacks.

    A Windows console redirected to a file or pipe writes in the ANSI code page (cp949 on Korean Windows), which
    has no emoji: a room name or reply with one would raise UnicodeEncodeError in the middle of a command. Such
    characters become ``?`` instead; Korean text stays readable (cp949 has Hangul). UTF-8 streams are unchanged.
    Called once when the CLI starts.
    """
    for stream in streams if streams is not None else (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("_", "-")
        if encoding in ("utf-8", "utf8") or not hasattr(stream, "reconfigure"):
            continue
        if getattr(stream, "errors", "strict") in ("strict", None):
            with contextlib.suppress(Exception):  # a stream that refuses (already wrapped) stays as it is
                stream.reconfigure(errors="replace")


# ------------------------------------------------------------------------------------------------ signals
def stop_signals() -> tuple[signal.Signals, ...]:
    """Signals that mean "stop gracefully": Ctrl+C (SIGINT) everywhere, SIGTERM (kill, systemd, docker), and
    Ctrl+Break (SIGBREAK) on Windows, where a console's Ctrl+Break would otherwise end the process at once."""
    names = ("SIGINT", "SIGTERM", "SIGBREAK")
    return tuple(getattr(signal, n) for n in names if getattr(signal, n, None) is not None)


def signal_name(signum: int) -> str:
    """``SIGINT``, ``SIGTERM``, ``SIGBREAK`` ... for messages (Ctrl+Break's number is another signal's on Linux)."""
    brk = getattr(signal, "SIGBREAK", None)
    if brk is not None and signum == brk:
        return "SIGBREAK"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ------------------------------------------------------------------------------------------------ processes
def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this machine is still running (a zombie counts as gone)."""
    if pid <= 0:
        return False
    if IS_WINDOWS:
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: existence check only (never on Windows, where 0 is CTRL_C_EVENT)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    with contextlib.suppress(OSError, IndexError):  # Linux: an exited, not yet reaped process is a zombie
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    return True


def _windows_pid_alive(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    process_query_limited_information, still_active, access_denied = 0x1000, 259, 5
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == access_denied  # exists, owned by someone else
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def pool_start_method() -> str:
    """Start method for worker pools: ``fork`` on Linux (cheap, no re-import of ``__main__``), else ``spawn``
    (Windows has no fork; macOS forks unsafely). Workers must therefore be spawn-safe: module-level functions
    and picklable arguments only."""
    import multiprocessing

    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


# ------------------------------------------------------------------------------------------------ file locks
def try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking OS lock on the open file ``fd``; False when another process holds it.

    The OS releases it when the file is closed or the process dies (kill -9 included), so it never goes stale.
    POSIX: ``flock``; Windows: ``msvcrt.locking`` on the first byte. Where neither exists the lock is advisory
    only and always succeeds (never seen in practice; documented rather than faked).
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None  # type: ignore[assignment]
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True
    try:
        import msvcrt
    except ImportError:
        return True
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ file names
# Windows forbids these in names; control characters are refused everywhere or at least unreadable.
_FORBIDDEN = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]+')
_EDGES = re.compile(r"^[\s.]+|[\s.]+$")  # Windows drops trailing dots/spaces; a leading dot hides the file
_RESERVED = {"con", "prn", "aux", "nul", "conin$", "conout$",
             *(f"com{i}" for i in "123456789\u00b9\u00b2\u00b3"), *(f"lpt{i}" for i in "123456789\u00b9\u00b2\u00b3")}


def safe_name(name: str, max_bytes: int, fallback: str = "room") -> str:
    """A file or folder name made from free text (a room title) that every common file system accepts.

    NFC-normalised; each run of characters Windows forbids (``<>:"/\\|?*``, control characters) becomes one
    ``_``; no leading/trailing dots or spaces; at most ``max_bytes`` bytes of UTF-8, cut on a character boundary
    (file systems count bytes: 255 on ext4/APFS, so 90 emoji do not fit); not a reserved device name (``CON``,
    ``nul.txt`` ... become ``CON_``, ``nul_.txt``). Empty or all-forbidden text gives ``fallback``.
    """
    out = _EDGES.sub("", _FORBIDDEN.sub("_", unicodedata.normalize("NFC", name)))
    out = _EDGES.sub("", cut_bytes(out, max_bytes))
    if not out.strip("_"):
        out = fallback
    stem, dot, rest = out.partition(".")
    if stem.rstrip().lower() in _RESERVED:
        out = cut_bytes(f"{stem}_{dot}{rest}", max_bytes)
    return out


def cut_bytes(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes`` (never half a character; a
    combining mark is not separated from its base character)."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    cut = data[:max_bytes].decode("utf-8", "ignore")
    while cut and unicodedata.combining(cut[-1]):
        cut = cut[:-1]
    # a zero-width joiner / variation selector left dangling would render as a broken emoji
    return cut.rstrip("\u200d\ufe0f\ufe0e")


def name_key(name: str) -> str:
    """How file systems compare names: Windows and macOS ignore case, macOS ignores Unicode normalisation. Two
    names with the same key would be one file there."""
    return unicodedata.normalize("NFC", name).casefold()
