"""chatbot.portable: the platform checks, each with its fallback; and no POSIX-only name anywhere else."""

from __future__ import annotations

import ast
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot import portable
from chatbot.portable import cut_bytes, name_key, safe_name, setup_console, stop_signals, try_lock
from tests.support.workspace import REPO

PACKAGE = REPO / "chatbot"
POSIX_ONLY_MODULES = {"fcntl", "resource", "termios", "pty", "tty", "grp", "pwd"}
POSIX_ONLY_NAMES = {"fork", "forkpty", "getuid", "geteuid", "getgid", "getegid", "setsid", "killpg", "getpgid",
                    "SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGQUIT", "alarm", "setitimer",
                    "fchmod", "lchmod", "fchown", "lchown", "chown"}  # (os.fchmod: Windows only from Python 3.13)


def test_no_posix_only_code_outside_the_portable_module() -> None:
    """fcntl & co. are imported, and os.fork / signal.SIGKILL & co. used, only in chatbot/portable.py (inside a
    function, behind its platform check)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(PACKAGE.parent).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]} if node.level == 0 else set()
            elif isinstance(node, ast.Attribute) and node.attr in POSIX_ONLY_NAMES:
                found.append(f"{rel}:{node.lineno} .{node.attr}")
                continue
            else:
                continue
            if names & POSIX_ONLY_MODULES and rel != "chatbot/portable.py":
                found.append(f"{rel}:{node.lineno} import {sorted(names & POSIX_ONLY_MODULES)}")
            if names & POSIX_ONLY_MODULES and rel == "chatbot/portable.py" and node.col_offset == 0:
                found.append(f"{rel}:{node.lineno} module-level import")
    assert found == []


def test_cp949_console_survives_emoji() -> None:
    """Without setup_console an emoji in a room name or reply ends the command with UnicodeEncodeError."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="cp949", errors="strict")
    with pytest.raises(UnicodeEncodeError):
        print("방 🎮", file=stream)
    setup_console((stream,))
    print("게임방 🎮 → 안녕", file=stream)
    stream.flush()
    assert raw.getvalue().decode("cp949").endswith("게임방 ? → 안녕\n")


def test_utf8_console_is_left_alone() -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    setup_console((stream,))
    assert stream.errors == "strict"


def test_cli_on_a_cp949_stdout_prints_a_room_name_with_emoji(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONIOENCODING": "cp949", "PYTHONPATH": str(PACKAGE.parent)}
    code = "from chatbot.ops import main; import sys; main(['--help']); print('방 🎮 끝')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode("cp949", "replace")
    assert proc.stdout.decode("cp949").endswith("방 ? 끝\n")


def test_ctrl_break_stops_training_like_ctrl_c(monkeypatch) -> None:
    """On Windows Ctrl+Break is SIGBREAK; Linux has none, so an unused signal stands in for it."""
    from chatbot.train.dist import Abort, StopSignals

    sig = _ctrl_break(monkeypatch)
    assert stop_signals() == (signal.SIGINT, signal.SIGTERM, sig)
    before = signal.getsignal(sig)
    with StopSignals(announce=False) as s:
        signal.raise_signal(sig)
        assert s.requested
        with pytest.raises(Abort):
            signal.raise_signal(sig)
    assert signal.getsignal(sig) == before


def test_file_lock_is_exclusive_between_processes(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        assert try_lock(fd)
        other = "import os, sys; from chatbot.portable import try_lock; " \
                f"sys.exit(0 if try_lock(os.open({str(lock)!r}, os.O_RDWR)) else 7)"
        env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
        assert subprocess.run([sys.executable, "-c", other], env=env, timeout=60).returncode == 7
    finally:
        os.close(fd)
    assert subprocess.run([sys.executable, "-c", other], env=env, timeout=60).returncode == 0  # released


def test_pid_alive() -> None:
    assert portable.pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not portable.pid_alive(proc.pid)
    assert not portable.pid_alive(0) and not portable.pid_alive(-5)


@pytest.mark.parametrize("text, limit", [("🎉" * 90, 255), ("가나다라", 7), ("e\u0301" * 10, 5), ("👍\u200d" * 5, 9)])
def test_cut_bytes_never_splits_a_character(text: str, limit: int) -> None:
    cut = cut_bytes(text, limit)
    assert len(cut.encode("utf-8")) <= limit and text.startswith(cut)
    assert not cut.endswith(("\u0301", "\u200d"))


def test_safe_names_compare_like_windows_and_macos() -> None:
    assert name_key("Family") == name_key("FAMILY")
    assert name_key("가\u11a8") == name_key("각")  # NFD (macOS) and NFC spell the same name
    assert safe_name("a" * 300, 100) == "a" * 100
    assert safe_name("LPT1.log", 50) == "LPT1_.log" and safe_name("con ", 50) == "con_"


def _ctrl_break(monkeypatch) -> int:
    """Windows' SIGBREAK, or on Linux an unused signal standing in for it (stop_signals picks it up)."""
    if not hasattr(signal, "SIGBREAK"):
        monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR2, raising=False)
    return signal.SIGBREAK


def test_ctrl_break_stops_the_bridge_gracefully(tmp_path: Path, monkeypatch) -> None:
    """serve_http in the main thread, as the CLI runs it: Ctrl+Break finishes the admitted reply, writes the room
    memory and returns (the main thread waits with a timeout, so the handler runs on Windows too)."""
    import threading

    from chatbot.bridge import make_bridge, serve_http
    from tests.support.bridge import LOOPBACK, FakeResponder, bridge_cfg, request

    sig = _ctrl_break(monkeypatch)
    bridge = make_bridge(bridge_cfg(transport="relay"), tmp_path / "bridge", send=True)
    answers = []

    def client(port: int) -> None:
        answers.append(request(port, "POST", "/relay", {"room": "방", "sender": "손님", "msg": "안녕"}))
        signal.raise_signal(sig)

    serve_http(bridge, lambda: FakeResponder(delay=0.2), host=LOOPBACK, port=0,
               on_listening=lambda port: threading.Thread(target=client, args=(port,), daemon=True).start())
    assert [a.status for a in answers] == [200]
    with bridge.store.room(bridge.store.room_hash("방")) as state:
        assert [t["role"] for t in state.turns] == ["user", "bot"]
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler)
