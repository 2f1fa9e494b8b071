"""HTTP transports ``kakao-skill`` (POST /skill) and ``relay`` (POST /relay), plus GET /healthz.

The HTTP layer underneath (connection caps, request deadlines, bounded bodies, graceful shutdown) is
listener.py; how each transport waits for and answers a reply is transports.py.

Status codes: 200 reply / Kakao template, 204 relay "no reply", 400 malformed JSON (``null`` included) or
missing/wrong fields, 401 wrong or missing secret (when ``shared_secret`` is set: the ``X-Bridge-Secret`` header or
the path ``/skill/<secret>`` / ``/relay/<secret>``, compared in constant time as bytes), 404 unknown path (only the
configured transport's endpoint exists), 408 request not complete within ``request_read_timeout_s`` (the connection
is closed), 411 no Content-Length (chunked bodies are refused), 413 body over ``max_body_bytes``, 415 not
``application/json`` (UTF-8), 500 generation failed, 503 + ``Retry-After`` when loading, stopping, the pool and its
queue are full, or too many connections (Kakao then shows the block's fallback/error message: a 503 is kept for
Kakao too so load shedding is visible to monitoring), 504 relay reply not ready within ``request_timeout_s``.
A client that resets its connection is one log line ``outcome=client_reset`` (no traceback).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.parse

from .core import Bridge
from .listener import FAILED, BridgeServer, RequestHandler
from .transports import answer_relay, answer_skill
from .wire import BadRequest, parse_relay, parse_skill

__all__ = ["BridgeServer", "Handler", "start_server", "stop_server"]

log = logging.getLogger("chatbot.bridge")

ROUTES = {"kakao-skill": "/skill", "relay": "/relay"}


class Handler(RequestHandler):
    """The routes: GET /healthz, POST of the configured transport's endpoint (with its shared secret)."""

    def _match_route(self, route: str) -> tuple[bool, bytes | None]:
        """(the path is this transport's endpoint, the secret given as its last segment or None).
        ``<route>/<secret>`` exists only when a shared secret is configured."""
        path = self.path.split("?", 1)[0]
        if path == route:
            return True, None
        if self.server.bridge.bc.shared_secret and path.startswith(route + "/"):
            return True, urllib.parse.unquote_to_bytes(path[len(route) + 1:])
        return False, None

    def _secret_ok(self, in_path: bytes | None) -> bool:
        """Constant-time comparison of bytes: the path segment, else the header exactly as it came over the wire
        (http.server decodes header values as Latin-1, so encoding back gives the original bytes). Both sides are
        hashed first so that not even the secret's length shows in the timing."""
        secret = self.server.bridge.bc.shared_secret
        if not secret:
            return True
        given = in_path if in_path is not None else self.headers.get("X-Bridge-Secret", "").encode("latin-1")
        return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(secret.encode("utf-8")).digest())

    # ------------------------------------------------------------------ routes
    def do_GET(self) -> None:
        self.server.set_busy(self.connection, True)
        try:
            if self.path.split("?", 1)[0] != "/healthz":
                self.reject(404, "not found")
                return
            b = self.server.bridge
            if b.stopping.is_set() or self.server.closing.is_set():
                self.send_json(503, {"status": "stopping"}, "stopping", {"Retry-After": "5"})
            elif not b.ready.is_set():
                self.send_json(503, {"status": "loading"}, "not_ready", {"Retry-After": "5"})
            else:
                self.send_json(200, {"status": "ok", "transport": b.transport, "mode": "send" if b.send else "dry",
                                 "pending": b.pool.pending, "capacity": b.pool.capacity}, "ok")
        finally:
            self.server.set_busy(self.connection, False)

    def do_POST(self) -> None:
        self.server.set_busy(self.connection, True)
        t0 = time.monotonic()
        try:
            self._post(t0)
        except Exception:  # never crash the server; the exception type goes to the log, not the text
            log.exception("room=- outcome=error request handling failed")
            self.close_connection = True
            self.send_json(500, {"error": "internal error"}, "error")
        finally:
            self.server.set_busy(self.connection, False)

    def _post(self, t0: float) -> None:
        b = self.server.bridge
        route = ROUTES.get(b.transport)
        known, in_path = self._match_route(route)
        if not known:
            self.reject(404, f"not found (this bridge serves POST {route})", close=True)
            return
        if not self._secret_ok(in_path):
            self.reject(401, f"missing or wrong secret (X-Bridge-Secret header or POST {route}/<secret>)",
                         close=True)
            return
        data = self.read_json()
        if data is FAILED:
            return
        try:
            msg = parse_skill(data) if b.transport == "kakao-skill" else parse_relay(data)
        except BadRequest as exc:
            self.reject(400, str(exc))
            return
        msg.received = t0
        if b.transport == "kakao-skill":
            answer_skill(self, b, msg)
        else:
            answer_relay(self, b, msg)


def start_server(bridge: Bridge, host: str, port: int) -> tuple[BridgeServer, threading.Thread]:
    """Bind and serve on a background thread. Raises ChatbotError when the address cannot be bound."""
    from ..errors import ChatbotError

    try:
        server = BridgeServer((host, port), bridge, Handler)
    except OSError as exc:
        raise ChatbotError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); change bridge.host/port in "
                           f"configs/gen.yaml or stop the program using it") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="bridge-http",
                              daemon=True)
    thread.start()
    return server, thread


def stop_server(server: BridgeServer, bridge: Bridge, timeout: float = 30.0) -> bool:
    """Graceful stop: no new connections, admitted jobs finish and their answers are written, idle keep-alive
    connections are closed, handler threads joined. Returns False if jobs were still running at the timeout."""
    server.closing.set()
    server.shutdown()  # the accept loop ends; open connections keep being served
    finished = bridge.close(timeout)
    server.wait_answers_written(2.0)
    server.close_idle()
    server.server_close()
    return finished
