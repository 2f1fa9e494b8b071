"""The hardened standard-library HTTP layer under the bridge's transports (server.py adds the routes).

Why the standard library (``http.server.ThreadingHTTPServer``) rather than an ASGI stack: the bridge serves one
messenger platform or one phone — a few requests per second — and the expensive part is generation, which runs on
the bounded worker pool (pool.py), not in the HTTP layer. A thread per connection lets a request simply block on its
job's Event for the Kakao budget; with uvicorn + starlette we would add two dependencies to a tool that users install
on their own machine and still hand the blocking model call to a thread executor. The standard server's weak spots
are closed here: at most ``max_connections`` open connections and ``max_connections_per_client`` from one client
address (beyond that an immediate 503, so slow clients from one address cannot take every slot), an idle timeout
while waiting for a request (``IDLE_TIMEOUT_S``) and then one total deadline for the whole request — request line,
headers and body — from its first byte (``request_read_timeout_s``; a per-read timeout alone lets a client that
sends one byte every few seconds hold a thread forever), bodies only with Content-Length and bounded *before*
reading, and graceful shutdown that closes idle keep-alive connections instead of waiting out their timeout.
A client that resets its connection is one log line ``outcome=client_reset`` (no traceback).
"""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .core import Bridge

log = logging.getLogger("chatbot.bridge")

IDLE_TIMEOUT_S = 10.0  # waiting for the first byte of a request (a new or kept-alive connection); also per write
RESETS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
FAILED = object()  # read_json: the request was already answered (or cannot be); distinct from JSON null
DRAIN_LIMIT = 1 << 20  # an oversize body up to this size is read and discarded so the client can read its 413


class DeadlineReader(io.RawIOBase):
    """The connection's raw reader with two clocks: before a request's first byte each read may wait
    ``idle_s``; from the first byte on, every read shares one deadline ``total_s`` away (request line, headers and
    body together). ``expired`` tells that the deadline, not the idle timeout, ended the request."""

    def __init__(self, sock: socket.socket, idle_s: float, total_s: float):
        self.sock, self.idle_s, self.total_s = sock, idle_s, total_s
        self.deadline: float | None = None
        self.expired = False

    def readable(self) -> bool:
        return True

    def next_request(self) -> None:
        self.deadline, self.expired = None, False

    def readinto(self, buf) -> int:
        if self.deadline is None:
            timeout = self.idle_s
        else:
            timeout = self.deadline - time.monotonic()
            if timeout <= 0:
                self.expired = True
                raise TimeoutError("request deadline passed")
        self.sock.settimeout(timeout)
        try:
            n = self.sock.recv_into(buf)
        except TimeoutError:
            self.expired = self.deadline is not None
            raise
        finally:
            self.sock.settimeout(self.idle_s)  # writes keep the normal per-operation timeout
        if n and self.deadline is None:
            self.deadline = time.monotonic() + self.total_s
        return n


class BridgeServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with connection caps (in total and per client address) and shutdown that waits for
    in-flight answers."""

    daemon_threads = False  # server_close() joins the handler threads: in-flight answers are written
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], bridge: Bridge, handler: type[BaseHTTPRequestHandler]):
        self.bridge = bridge
        self.closing = threading.Event()
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, bool] = {}  # open connection -> busy answering a request
        self._addr_of: dict[socket.socket, str] = {}
        self._per_addr: dict[str, int] = {}  # open connections per client address
        super().__init__(address, handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def process_request(self, request, client_address) -> None:
        bc = self.bridge.bc
        addr = str(client_address[0]) if isinstance(client_address, tuple) and client_address else ""
        with self._conn_lock:
            per_addr = self._per_addr.get(addr, 0)
            if len(self._conns) >= bc.max_connections:
                why = "too many connections"
            elif bc.max_connections_per_client and per_addr >= bc.max_connections_per_client:
                why = "too many connections from this address"
            else:
                why = None
                self._conns[request] = False
                self._addr_of[request] = addr
                self._per_addr[addr] = per_addr + 1
        if why is not None:
            self._refuse(request, why)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started (e.g. out of threads): give the slot back
            self._forget(request)
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._conn_lock:
            self._conns.pop(request, None)
            addr = self._addr_of.pop(request, None)
            if addr is not None:
                left = self._per_addr.get(addr, 1) - 1
                if left > 0:
                    self._per_addr[addr] = left
                else:
                    self._per_addr.pop(addr, None)

    def _refuse(self, request: socket.socket, why: str) -> None:
        body = json.dumps({"error": why}).encode()
        try:
            request.settimeout(0.5)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        self.bridge.log_rejected(why, 503)
        self.shutdown_request(request)

    def set_busy(self, request: socket.socket, busy: bool) -> None:
        with self._conn_lock:
            if request in self._conns:
                self._conns[request] = busy

    def wait_answers_written(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) until no connection is busy answering: answers of just-finished jobs are
        being written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._conn_lock:
                if not any(self._conns.values()):
                    return
            time.sleep(0.02)

    def close_idle(self) -> None:
        """Wake idle keep-alive connections (blocked reading the next request) so their threads end now."""
        with self._conn_lock:
            idle = [s for s, busy in self._conns.items() if not busy]
        for s in idle:
            try:
                s.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], RESETS):  # the client hung up hard: expected, not a server fault
            self.bridge.log_connection("client_reset")
            return
        log.exception("room=- outcome=error http handler failed")


class RequestHandler(BaseHTTPRequestHandler):
    """One connection's requests, read under :class:`DeadlineReader`'s clocks; JSON answers with the outcome header.
    server.Handler adds the routes."""

    protocol_version = "HTTP/1.1"
    server_version = "chatbot-bridge"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    disable_nagle_algorithm = True  # headers and body go out in two writes: without this, +40 ms (delayed ACK)
    server: BridgeServer

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced by a reader with a whole-request deadline
        bc = self.server.bridge.bc
        self._reader = DeadlineReader(self.connection, IDLE_TIMEOUT_S, bc.request_read_timeout_s)
        self.rfile = io.BufferedReader(self._reader)
        self._answered = False

    def handle_one_request(self) -> None:
        self._reader.next_request()
        self._answered = False
        self.request_version, self.requestline, self.command = "HTTP/1.1", "", ""  # for a 408 before parsing
        try:
            super().handle_one_request()
        except RESETS:
            self.close_connection = True
            self.server.bridge.log_connection("client_reset")
            return
        if self._reader.expired:  # the stdlib closed the connection on the TimeoutError; tell the client why
            self.close_connection = True
            if not self._answered:
                self.reject(408, "request not received in time (bridge.request_read_timeout_s)", close=True)

    def log_message(self, format: str, *args) -> None:
        """Silenced: the default access log prints client addresses and paths; the bridge logs one line per
        message itself (core.Bridge._log)."""

    # ------------------------------------------------------------------ plumbing
    def send_json(self, status: int, obj: dict | None, outcome: str, headers: dict[str, str] | None = None) -> bool:
        """Write one JSON answer. False when the client is gone."""
        self._answered = True
        body = b"" if obj is None else json.dumps(obj, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            if obj is not None:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            if status != 204:
                self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Bridge-Outcome", outcome)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if self.close_connection or self.server.closing.is_set():
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if body:
                self.wfile.write(body)
            return True
        except OSError:
            self.close_connection = True
            return False

    def reject(self, status: int, reason: str, *, close: bool = False, headers: dict | None = None) -> None:
        if close:
            self.close_connection = True
        self.server.bridge.log_rejected(reason, status)
        self.send_json(status, {"error": reason}, "rejected", headers)

    def busy(self, outcome: str) -> None:
        self.send_json(503, {"error": outcome}, outcome, {"Retry-After": str(self.server.bridge.retry_after_s())})

    def _drain(self, n: int) -> bool:
        """Read and discard ``n`` body bytes (False when it is too much or the client stalls)."""
        if n > DRAIN_LIMIT:
            return False
        try:
            while n > 0:
                chunk = self.rfile.read(min(n, 65536))
                if not chunk:
                    return False
                n -= len(chunk)
        except RESETS:
            self._client_reset()
            return False
        except OSError:
            return False
        return True

    def _client_reset(self) -> None:
        self.close_connection = True
        self._answered = True  # nobody to answer
        self.server.bridge.log_connection("client_reset")

    def read_json(self) -> object:
        """The request body as JSON (``None`` for the JSON ``null``), or ``FAILED`` after answering
        400/411/413/415 (or when the client is gone or too slow: handle_one_request answers 408 then)."""
        bc = self.server.bridge.bc
        if self.headers.get("Transfer-Encoding"):
            self.reject(411, "send the body with a Content-Length (chunked bodies are not accepted)", close=True)
            return FAILED
        length = self.headers.get("Content-Length")
        if length is None:
            self.reject(411, "Content-Length required", close=True)
            return FAILED
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.reject(400, "bad Content-Length", close=True)
            return FAILED
        if n > bc.max_body_bytes:
            drained = self._drain(n)
            if not self._answered:
                self.reject(413, f"body larger than {bc.max_body_bytes} bytes (bridge.max_body_bytes)",
                             close=not drained)
            return FAILED
        try:
            body = self.rfile.read(n)
        except RESETS:
            self._client_reset()
            return FAILED
        except OSError:  # a timeout: 408 from handle_one_request when it was the request deadline
            self.close_connection = True
            return FAILED
        if len(body) < n:
            self.reject(400, "incomplete body", close=True)
            return FAILED
        if self.headers.get_content_type() != "application/json" or (
            self.headers.get_content_charset() not in (None, "utf-8", "utf8")
        ):
            self.reject(415, "Content-Type must be application/json (UTF-8)")
            return FAILED
        try:
            return json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON, huge integers
            self.reject(400, "body is not valid JSON")
            return FAILED
