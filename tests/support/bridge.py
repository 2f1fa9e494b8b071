"""Test helpers for the messenger bridge: a fake responder, a bridge server on 127.0.0.1:0, a fake Kakao callback
server, small HTTP clients, and (``python tests/support/bridge.py serve ...``) a bridge process with the fake
responder for the SIGTERM/restart test. Only loopback addresses are ever used. All texts are invented."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

if __name__ == "__main__":  # run as a script: the repo root replaces tests/support/ (whose modules would shadow)
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from chatbot.bridge import make_bridge
from chatbot.bridge.core import Bridge
from chatbot.bridge.server import BridgeServer, start_server, stop_server
from chatbot.config import BridgeConfig

LOOPBACK = "127.0.0.1"
# the fake callback servers listen on loopback, which the default callback policy refuses
LOOPBACK_CALLBACKS = dict(callback_hosts=[LOOPBACK], callback_allow_private=True)


@dataclass
class FakeReply:
    text: str
    confidence: float = -1.25
    n_tokens: int = 4
    latency_s: float = 0.0
    first_token_s: float = 0.0


class FakeResponder:
    """Answers ``"<number of history turns>|<last message reversed>"`` after ``delay`` seconds.

    The turn count makes the context visible in the reply (memory tests); ``calls`` keeps every history it got.
    ``text`` overrides the reply; ``fail`` raises instead; ``gate`` (an Event) holds every reply until it is set.
    """

    def __init__(self, delay: float = 0.0, text: str | None = None, fail: bool = False,
                 gate: threading.Event | None = None):
        self.delay, self.text, self.fail, self.gate = delay, text, fail, gate
        self.calls: list[list[tuple[str, str]]] = []
        self.lock = threading.Lock()

    def reply(self, history, *, seed=None, on_text=None, **policy) -> FakeReply:
        with self.lock:
            self.calls.append(list(history))
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("fake failure")
        text = self.text if self.text is not None else f"{len(history)}|{history[-1][1][::-1]}"
        return FakeReply(text, n_tokens=len(text))


def bridge_cfg(**over: Any) -> BridgeConfig:
    """Bridge settings for tests: short timeouts, port 0 on loopback, overrides applied."""
    base = dict(host=LOOPBACK, port=0, request_timeout_s=2.0, callback_after_s=1.0)
    base.update(over)
    return replace(BridgeConfig(), **base)


@dataclass
class Running:
    bridge: Bridge
    server: BridgeServer
    responder: FakeResponder

    @property
    def port(self) -> int:
        return self.server.port

    def post(self, path: str, obj: Any = None, **kw) -> "Resp":
        return request(self.port, "POST", path, obj, **kw)

    def get(self, path: str) -> "Resp":
        return request(self.port, "GET", path)

    def room_turns(self, room: str) -> list[dict]:
        store = self.bridge.store
        with store.room(store.room_hash(room)) as state:
            return list(state.turns)


@contextlib.contextmanager
def running_bridge(memory_dir: Path, responder: FakeResponder | None = None, *, send: bool = True,
                   **over: Any) -> Iterator[Running]:
    """A bridge HTTP server on 127.0.0.1:<free port>; stopped gracefully on exit."""
    responder = responder or FakeResponder()
    bc = bridge_cfg(**over)
    bridge = make_bridge(bc, memory_dir, send=send, responder=responder)
    server, _ = start_server(bridge, LOOPBACK, 0)
    try:
        yield Running(bridge, server, responder)
    finally:
        stop_server(server, bridge, timeout=10.0)


@dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def outcome(self) -> str | None:
        return self.headers.get("x-bridge-outcome")


def request(port: int, method: str, path: str, obj: Any = None, *, raw: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Resp:
    """One HTTP request on a fresh loopback connection. ``obj`` is sent as JSON, ``raw`` as is."""
    body = raw if raw is not None else (None if obj is None else json.dumps(obj, ensure_ascii=False).encode())
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, read everything the server answers (for malformed HTTP)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def skill_payload(text: str, user_id: str = "u-test-0001", callback_url: str | None = None) -> dict:
    """An invented SkillPayload with the fields Kakao i Open Builder sends."""
    ur: dict[str, Any] = {
        "timezone": "Asia/Seoul", "params": {"ignoreMe": "true"}, "block": {"id": "blk-1", "name": "폴백 블록"},
        "utterance": text, "lang": None,
        "user": {"id": user_id, "type": "botUserKey", "properties": {"botUserKey": user_id}},
    }
    if callback_url is not None:
        ur["callbackUrl"] = callback_url
    return {
        "intent": {"id": "int-1", "name": "폴백 블록"},
        "userRequest": ur,
        "bot": {"id": "bot-1", "name": "테스트봇"},
        "action": {"name": "skill-1", "clientExtra": None, "params": {}, "id": "act-1", "detailParams": {}},
    }


class CallbackServer:
    """A fake Kakao callback endpoint on 127.0.0.1: records every POST (path, JSON body)."""

    def __init__(self):
        self.received: list[tuple[str, Any]] = []
        self.event = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(n).decode("utf-8"))
                outer.received.append((self.path, body))
                out = b'{"taskId": "t-1", "status": "SUCCESS"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                outer.event.set()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), H)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, token: str = "cb-1") -> str:
        return f"http://{LOOPBACK}:{self.httpd.server_address[1]}/v1/callback/{token}"

    def __enter__(self) -> "CallbackServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_until(pred, timeout: float = 5.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ------------------------------------------------------------------------------------- subprocess entry point
def _serve_main(argv: list[str]) -> int:
    """``serve <memory_dir> <port_file> <delay> <send 0|1>``: a bridge (relay) with the fake responder, through
    the same serve_http as the CLI (signal handling, graceful stop)."""
    import logging

    from chatbot.bridge import serve_http

    memory_dir, port_file, delay, send = Path(argv[0]), Path(argv[1]), float(argv[2]), argv[3] == "1"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    bc = bridge_cfg(transport="relay", workers=2, queue_limit=8, request_timeout_s=5.0, memory_turns=200)
    bridge = make_bridge(bc, memory_dir, send=send)

    def on_listening(port: int) -> None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(port_file)

    serve_http(bridge, lambda: FakeResponder(delay=delay), host=LOOPBACK, port=0, on_listening=on_listening)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_serve_main(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} serve <memory_dir> <port_file> <delay> <send 0|1>")
