"""Transport ``jsonl``: one JSON message per input line, one JSON answer per line on standard output.

Input lines have the relay shape (wire.py): ``{"room", "sender", "msg", "id"?, "ts"?}``. Every input line gets
exactly one output line (replies of different rooms may come out of order; ``line`` says which input it answers)::

    {"line": 3, "id": "m-17", "room": "<room>", "reply": "<text>" | null, "outcome": "replied" | "dry" | ...}
    {"line": 4, "error": "msg must be a string"}                       # a malformed line; the stream goes on

``reply`` is null whenever nothing is sent: --dry (unless ``dry_reply`` is set), own message, duplicate, room not
allowed, rate-limited, empty reply. The room is echoed so scripts can route the reply (this is the send channel,
not a log). The input is standard input (EOF = finish pending replies and stop) or, with ``bridge.jsonl_path``, a
file followed like ``tail -f``: the byte offset of the last accepted line is saved (atomically) in
``<bridge memory>/jsonl_offset.json``, so a restart continues where it stopped instead of answering old lines
again (a truncated or replaced file is read from the start). Input is back-pressured: a full worker pool pauses
reading instead of answering 503.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import IO, Iterator

from ..fsio import atomic_write_json
from .core import Bridge, Job
from .wire import BadRequest, parse_relay

POLL_S = 0.2


class JsonlWriter:
    """Thread-safe writer of output lines (workers finish in any order)."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.lock = threading.Lock()

    def write(self, obj: dict) -> None:
        line = json.dumps(obj, ensure_ascii=False)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def _stream_lines(inp: IO[str]) -> Iterator[tuple[str, int, int]]:
    for line in inp:
        yield line, -1, 0


def _follow_lines(path: Path, offset_file: Path, stop: threading.Event) -> Iterator[tuple[str, int, int]]:
    """Lines appended to ``path`` (from the saved offset), with the byte offset after each line and the inode."""
    saved = _read_offset(offset_file, path)
    while not stop.is_set():
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            time.sleep(POLL_S)
            continue
        with fh:
            st = os.fstat(fh.fileno())
            pos = saved[1] if saved is not None and saved[0] == st.st_ino and saved[1] <= st.st_size else 0
            saved = None
            fh.seek(pos)
            partial = b""
            while not stop.is_set():
                chunk = fh.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith(b"\n"):
                        pos += len(partial)
                        yield partial.decode("utf-8", "replace"), pos, st.st_ino
                        partial = b""
                    continue
                try:  # at EOF: replaced (other inode) or truncated file → start again from its beginning
                    now = os.stat(path)
                except FileNotFoundError:
                    break
                if now.st_ino != st.st_ino or now.st_size < pos:
                    break
                time.sleep(POLL_S)


def _read_offset(offset_file: Path, path: Path) -> tuple[int, int] | None:
    try:
        data = json.loads(offset_file.read_text(encoding="utf-8"))
        if data.get("path") == str(path.resolve()):
            return int(data["inode"]), int(data["offset"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def run_jsonl(bridge: Bridge, inp: IO[str] | None, out: IO[str], stop: threading.Event, *,
              follow: Path | None = None, offset_file: Path | None = None, drain_timeout: float | None = 60.0) -> None:
    """Answer every line of ``inp`` (or of the followed file) until EOF or ``stop``; then finish pending replies."""
    writer = JsonlWriter(out)
    lines: "queue.Queue[tuple[str, int, int] | None]" = queue.Queue(maxsize=64)

    def reader() -> None:  # a blocking read of stdin must not block shutdown: it lives on a daemon thread
        try:
            source = _follow_lines(follow, offset_file, stop) if follow is not None else _stream_lines(inp)
            for item in source:
                while not stop.is_set():
                    try:
                        lines.put(item, timeout=POLL_S)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        finally:
            lines.put(None)

    threading.Thread(target=reader, name="bridge-jsonl-reader", daemon=True).start()
    n = 0
    while not stop.is_set():
        try:
            item = lines.get(timeout=POLL_S)
        except queue.Empty:
            continue
        if item is None:
            break
        text, offset, inode = item
        n += 1
        _handle_line(bridge, writer, n, text)
        if follow is not None and offset_file is not None and offset >= 0:
            atomic_write_json(offset_file, {"path": str(follow.resolve()), "inode": inode, "offset": offset})
    bridge.close(drain_timeout)


def _handle_line(bridge: Bridge, writer: JsonlWriter, n: int, text: str) -> None:
    text = text.strip()
    if not text:
        return
    try:
        msg = parse_relay(json.loads(text))
    except BadRequest as exc:  # (a ValueError too: caught first)
        bridge.log_rejected(str(exc), 400)
        writer.write({"line": n, "error": str(exc)})
        return
    except (ValueError, RecursionError):
        bridge.log_rejected("line is not valid JSON", 400)
        writer.write({"line": n, "error": "not valid JSON"})
        return
    head = {"line": n, **({"id": msg.msg_id} if msg.msg_id is not None else {}), "room": msg.room}

    def deliver(job: Job) -> None:
        outcome, reply, generated = bridge.result(job)
        if outcome == "replied":
            bridge.record_reply(job, reply)
        try:
            writer.write({**head, "reply": reply, "outcome": outcome,
                          **({"reason": "silent"} if outcome == "silent" else {})})
            ok = True
        except (OSError, ValueError):  # stdout closed
            ok = False
        bridge.finish(job, outcome if ok else "client_gone", generated=generated)

    res = bridge.accept(msg, deliver=deliver, block=True)
    if isinstance(res, str):
        writer.write({**head, "reply": None, "outcome": res})
