"""A bridge process (tests/support/bridge.py serve: the real serve_http with signal handling, fake responder) gets
SIGTERM in the middle of traffic: in-flight replies are still answered, every answered message is in the room memory,
the process exits cleanly, and a restarted process continues each room's conversation. Loopback only."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.support.bridge import request, wait_until
from tests.support.workspace import REPO

# SIGTERM/SIGKILL to another process; Windows' Ctrl+Break path of serve_http: tests/foundation/test_portable.py
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends POSIX signals to the bridge process")

from chatbot.bridge.memory import MemoryStore

HELPER = REPO / "tests" / "support" / "bridge.py"


def _start(memory_dir: Path, port_file: Path, delay: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, str(HELPER), "serve", str(memory_dir), str(port_file), str(delay), "1"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_until(port_file.exists, timeout=20), "bridge process did not start"
    port = int(port_file.read_text())
    assert wait_until(lambda: request(port, "GET", "/healthz").status == 200, timeout=10)
    return proc, port


def test_sigterm_mid_traffic_loses_no_room_memory(tmp_path) -> None:
    memory = tmp_path / "bridge"
    proc, port = _start(memory, tmp_path / "port1", delay=0.03)
    rooms = [f"방{i}" for i in range(4)]
    answers: dict[str, list[tuple[str, int, str | None]]] = {r: [] for r in rooms}
    stop = threading.Event()

    def client(room: str) -> None:
        i = 0
        while not stop.is_set():
            text = f"{room} 메시지 {i}"
            try:
                r = request(port, "POST", "/relay", {"room": room, "sender": "손님", "msg": text}, timeout=10)
            except OSError:  # the listener is gone: the bridge has stopped
                return
            answers[room].append((text, r.status, r.json["reply"] if r.status == 200 else None))
            if r.status == 503:
                return
            i += 1

    threads = [threading.Thread(target=client, args=(r,)) for r in rooms]
    for t in threads:
        t.start()
    assert wait_until(lambda: all(len(a) >= 3 for a in answers.values()), timeout=10)
    proc.send_signal(signal.SIGTERM)  # in the middle of traffic
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert proc.returncode == 0, err[-2000:]
    assert "stopping" in err and "bridge stopped" in err
    assert "메시지" not in err and "방" not in err and "손님" not in err  # logs carry hashes, not text or names

    store = MemoryStore(memory, max_turns=500)
    replied: dict[str, int] = {}
    for room, got in answers.items():
        assert {status for _, status, _ in got} <= {200, 503}  # every request that reached it was answered
        ok = [(text, reply) for text, status, reply in got if status == 200]
        with store.room(store.room_hash(room)) as state:
            turns = [(t["role"], t["text"]) for t in state.turns]
        expected = [turn for text, reply in ok for turn in (("user", text), ("bot", reply))]
        assert turns == expected, room  # every answered message and its reply is on disk, nothing else
        replied[room] = len(ok)

    proc2, port2 = _start(memory, tmp_path / "port2", delay=0.0)
    try:
        for room in rooms:
            r = request(port2, "POST", "/relay", {"room": room, "sender": "손님", "msg": "다시 왔어"})
            assert r.status == 200
            n_context = int(r.json["reply"].split("|")[0])
            assert n_context == min(2 * replied[room] + 1, 200 + 1), room  # the conversation continues
    finally:
        proc2.send_signal(signal.SIGINT)
        proc2.communicate(timeout=20)
    assert proc2.returncode == 0
    assert not list(memory.glob("rooms/.*.tmp")), "no temp files left behind"


def test_sigkill_mid_traffic_keeps_every_answered_message(tmp_path) -> None:
    """Even a kill -9 loses nothing that was answered: turns are written through (atomically) before the answer."""
    memory = tmp_path / "bridge"
    proc, port = _start(memory, tmp_path / "port", delay=0.02)
    answers: list[tuple[str, str]] = []
    stop = threading.Event()

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            text = f"방 메시지 {k}-{i}"
            try:
                r = request(port, "POST", "/relay", {"room": "방", "sender": f"손님{k}", "msg": text}, timeout=10)
            except OSError:
                return
            if r.status == 200:
                answers.append((text, r.json["reply"]))
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    assert wait_until(lambda: len(answers) >= 6, timeout=10)
    proc.kill()
    proc.communicate(timeout=10)
    stop.set()
    for t in threads:
        t.join(10)
    store = MemoryStore(memory, max_turns=500)
    with store.room(store.room_hash("방")) as state:
        turns = [(t["role"], t["text"]) for t in state.turns]
    for text, reply in answers:
        i = turns.index(("user", text))
        assert ("bot", reply) in turns[i + 1:], text  # the reply the client saw is on disk, after its message
    assert not list(memory.rglob("*.corrupt-*")) and not list(memory.rglob(".*.tmp"))
