"""HTTP transports ``kakao-skill`` (POST /skill) and ``relay`` (POST /relay), plus GET /healthz.

Why the standard library (``http.server.ThreadingHTTPServer``) rather than an ASGI stack: the bridge serves one
messenger platform or one phone — a few requests per second — and the expensive part is generation, which runs on
the bounded worker pool (core.py), not in the HTTP layer. A thread per connection lets a request simply block on its
job's Event for the Kakao budget; with uvicorn + starlette we would add two dependencies to a tool that users install
on their own machine and still hand the blocking model call to a thread executor. The standard server's weak spots
are closed here: at most ``max_connections`` open connections and ``max_connections_per_client`` from one client
address (beyond that an immediate 503, so slow clients from one address cannot take every slot), an idle timeout
while waiting for a request (``IDLE_TIMEOUT_S``) and then one total deadline for the whole request — request line,
headers and body — from its first byte (``request_read_timeout_s``; a per-read timeout alone lets a client that
sends one byte every few seconds hold a thread forever), bodies only with Content-Length and bounded *before*
reading, and graceful shutdown that closes idle keep-alive connections instead of waiting out their timeout.

Status codes: 200 reply / Kakao template, 204 relay "no reply", 400 malformed JSON (``null`` included) or
missing/wrong fields, 401 wrong or missing secret (when ``shared_secret`` is set: the ``X-Bridge-Secret`` header or
the path ``/skill/<secret>`` / ``/relay/<secret>``, compared in constant time as bytes), 404 unknown path (only the
configured transport's endpoint exists), 408 request not complete within ``request_read_timeout_s`` (the connection
is closed), 411 no Content-Length (chunked bodies are refused), 413 body over ``max_body_bytes``, 415 not
``application/json`` (UTF-8), 500 generation failed, 503 + ``Retry-After`` when loading, stopping, the pool and its
queue are full, or too many connections (Kakao then shows the block's fallback/error message: a 503 is kept for
Kakao too so load shedding is visible to monitoring), 504 relay reply not ready within ``request_timeout_s``.
A client that resets its connection is one log line ``outcome=client_reset`` (no traceback).
Kakao requests never wait past ``request_timeout_s`` (default 4.5 s, under the platform's 5 s): with a callbackUrl
the bridge answers ``useCallback`` — at once when the expected wait (queue ahead × average generation time) exceeds
``callback_after_s``, otherwise after waiting ``callback_after_s`` — and POSTs the reply to the callback URL once;
without one it answers the empty template when time runs out.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .callback import CallbackRefused, post_json, url_problem
from .core import NO_QUEUE, Bridge, Incoming, Job
from .wire import BadRequest, empty_template, parse_relay, parse_skill, simple_text, use_callback

log = logging.getLogger("chatbot.bridge")

IDLE_TIMEOUT_S = 10.0  # waiting for the first byte of a request (a new or kept-alive connection); also per write
RESETS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
_FAILED = object()  # _read_json: the request was already answered (or cannot be); distinct from JSON null
DRAIN_LIMIT = 1 << 20  # an oversize body up to this size is read and discarded so the client can read its 413
CALLBACK_VALID_S = 60.0  # a Kakao callback URL is valid for one minute
ROUTES = {"kakao-skill": "/skill", "relay": "/relay"}


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

    def __init__(self, address: tuple[str, int], bridge: Bridge):
        self.bridge = bridge
        self.closing = threading.Event()
        self._conn_lock = threading.Lock()
        self._conns: dict[socket.socket, bool] = {}  # open connection -> busy answering a request
        self._addr_of: dict[socket.socket, str] = {}
        self._per_addr: dict[str, int] = {}  # open connections per client address
        super().__init__(address, Handler)

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


class Handler(BaseHTTPRequestHandler):
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
                self._reject(408, "request not received in time (bridge.request_read_timeout_s)", close=True)

    def log_message(self, format: str, *args) -> None:
        """Silenced: the default access log prints client addresses and paths; the bridge logs one line per
        message itself (core.Bridge._log)."""

    # ------------------------------------------------------------------ plumbing
    def _send(self, status: int, obj: dict | None, outcome: str, headers: dict[str, str] | None = None) -> bool:
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

    def _reject(self, status: int, reason: str, *, close: bool = False, headers: dict | None = None) -> None:
        if close:
            self.close_connection = True
        self.server.bridge.log_rejected(reason, status)
        self._send(status, {"error": reason}, "rejected", headers)

    def _busy(self, outcome: str) -> None:
        self._send(503, {"error": outcome}, outcome, {"Retry-After": str(self.server.bridge.retry_after_s())})

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

    def _read_json(self) -> object:
        """The request body as JSON (``None`` for the JSON ``null``), or ``_FAILED`` after answering
        400/411/413/415 (or when the client is gone or too slow: handle_one_request answers 408 then)."""
        bc = self.server.bridge.bc
        if self.headers.get("Transfer-Encoding"):
            self._reject(411, "send the body with a Content-Length (chunked bodies are not accepted)", close=True)
            return _FAILED
        length = self.headers.get("Content-Length")
        if length is None:
            self._reject(411, "Content-Length required", close=True)
            return _FAILED
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self._reject(400, "bad Content-Length", close=True)
            return _FAILED
        if n > bc.max_body_bytes:
            drained = self._drain(n)
            if not self._answered:
                self._reject(413, f"body larger than {bc.max_body_bytes} bytes (bridge.max_body_bytes)",
                             close=not drained)
            return _FAILED
        try:
            body = self.rfile.read(n)
        except RESETS:
            self._client_reset()
            return _FAILED
        except OSError:  # a timeout: 408 from handle_one_request when it was the request deadline
            self.close_connection = True
            return _FAILED
        if len(body) < n:
            self._reject(400, "incomplete body", close=True)
            return _FAILED
        if self.headers.get_content_type() != "application/json" or (
            self.headers.get_content_charset() not in (None, "utf-8", "utf8")
        ):
            self._reject(415, "Content-Type must be application/json (UTF-8)")
            return _FAILED
        try:
            return json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON, huge integers
            self._reject(400, "body is not valid JSON")
            return _FAILED

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
                self._reject(404, "not found")
                return
            b = self.server.bridge
            if b.stopping.is_set() or self.server.closing.is_set():
                self._send(503, {"status": "stopping"}, "stopping", {"Retry-After": "5"})
            elif not b.ready.is_set():
                self._send(503, {"status": "loading"}, "not_ready", {"Retry-After": "5"})
            else:
                self._send(200, {"status": "ok", "transport": b.transport, "mode": "send" if b.send else "dry",
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
            self._send(500, {"error": "internal error"}, "error")
        finally:
            self.server.set_busy(self.connection, False)

    def _post(self, t0: float) -> None:
        b = self.server.bridge
        route = ROUTES.get(b.transport)
        known, in_path = self._match_route(route)
        if not known:
            self._reject(404, f"not found (this bridge serves POST {route})", close=True)
            return
        if not self._secret_ok(in_path):
            self._reject(401, f"missing or wrong secret (X-Bridge-Secret header or POST {route}/<secret>)",
                         close=True)
            return
        data = self._read_json()
        if data is _FAILED:
            return
        try:
            msg = parse_skill(data) if b.transport == "kakao-skill" else parse_relay(data)
        except BadRequest as exc:
            self._reject(400, str(exc))
            return
        msg.received = t0
        if b.transport == "kakao-skill":
            self._skill(b, msg)
        else:
            self._relay(b, msg)

    # ------------------------------------------------------------------ kakao-skill
    def _skill(self, b: Bridge, msg: Incoming) -> None:
        bc = b.bc
        problem = msg.callback_url and url_problem(msg.callback_url, bc.callback_hosts, bc.callback_allow_private)
        if problem:
            self._reject(400, problem)
            return
        expected = b.estimate_wait_s()
        res = b.accept(msg)
        if isinstance(res, str):
            if res in NO_QUEUE:
                self._busy(res)
            else:
                self._send(200, empty_template(), res)
            return
        job = res
        remaining = bc.request_timeout_s - (time.monotonic() - msg.received)
        if msg.callback_url:
            deliver = self._callback_deliver(b, msg.callback_url) if b.send else self._dry_deliver(b)
            wait = 0.0 if expected > bc.callback_after_s else min(bc.callback_after_s, remaining)
            if not job.done.wait(wait) and job.hand_off("async", deliver):
                # send: Kakao waits for our POST; dry: nothing will be POSTed, so answer the dry template now
                self._send(200, use_callback() if b.send else self._dry_template(b, job), "callback")
                return
        elif not job.done.wait(max(0.0, remaining)) and job.hand_off("abandoned"):
            self._send(200, empty_template(), "timeout")  # the worker logs the message's line
            return
        self._answer(b, job, lambda text: (200, simple_text(text) if text else empty_template()))

    @staticmethod
    def _dry_template(b: Bridge, job: Job) -> dict:
        text = b.bc.dry_reply.strip()[: job.limit]
        return simple_text(text) if text else empty_template()

    @staticmethod
    def _dry_deliver(b: Bridge):
        def deliver(job: Job) -> None:
            outcome, _, generated = b.result(job)
            b.finish(job, outcome, generated=generated, via="callback")  # dry: log only, no POST
        return deliver

    @staticmethod
    def _callback_deliver(b: Bridge, url: str):
        def deliver(job: Job) -> None:
            outcome, text, generated = b.result(job)
            left = CALLBACK_VALID_S - (time.monotonic() - job.msg.received)
            if left <= 0:
                b.finish(job, "callback_expired", generated=generated, via="callback")
                return
            # after useCallback Kakao waits for exactly one POST: an empty/failed reply closes it with no output
            payload = simple_text(text) if text else empty_template()
            bc = b.bc
            try:
                status, why = post_json(url, payload, timeout=min(bc.callback_timeout_s, left),
                                        allow_private=bc.callback_allow_private), ""
            except CallbackRefused:
                b.finish(job, "callback_refused", generated=generated, via="callback:address")
                return
            except TimeoutError:  # callback_timeout_s (or the URL's minute) passed
                status, why = 0, "timeout"
            except Exception as exc:  # network trouble: the URL is single-use, no retry
                status, why = 0, type(exc).__name__
            if 200 <= status < 300:
                b.finish(job, outcome, sent=text, generated=generated, via="callback")
            else:
                b.finish(job, "callback_failed", generated=generated, via=f"callback:{why or status}")
        return deliver

    # ------------------------------------------------------------------ relay
    def _relay(self, b: Bridge, msg: Incoming) -> None:
        res = b.accept(msg)
        if isinstance(res, str):
            if res in NO_QUEUE:
                self._busy(res)
            else:
                self._send(204, None, res)
            return
        job = res
        remaining = b.bc.request_timeout_s - (time.monotonic() - msg.received)
        if not job.done.wait(max(0.0, remaining)) and job.hand_off("abandoned"):
            self._send(504, {"error": "no reply in time (bridge.request_timeout_s)"}, "timeout")
            return
        self._answer(b, job, lambda text: (200, {"reply": text}) if text else (204, None))

    def _answer(self, b: Bridge, job: Job, response) -> None:
        """Store and send a finished job's reply; ``response(text)`` gives the transport's (status, body)."""
        outcome, text, generated = b.result(job)
        if outcome == "replied":
            b.record_reply(job, text)
        if outcome == "error":
            ok = self._send(500, {"error": "generation failed"}, outcome)
        else:
            ok = self._send(*response(text), outcome)
        b.finish(job, outcome if ok else "client_gone", generated=generated)


def start_server(bridge: Bridge, host: str, port: int) -> tuple[BridgeServer, threading.Thread]:
    """Bind and serve on a background thread. Raises ChatbotError when the address cannot be bound."""
    from ..errors import ChatbotError

    try:
        server = BridgeServer((host, port), bridge)
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
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # answers of just-finished jobs are being written
        with server._conn_lock:
            if not any(server._conns.values()):
                break
        time.sleep(0.02)
    server.close_idle()
    server.server_close()
    return finished
