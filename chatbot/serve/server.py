"""uvicorn around the app: connection limits, deadlines for slow clients, graceful shutdown.

- ``max_connections`` → uvicorn's ``limit_concurrency`` (more open connections are answered 503 at once).
- ``header_timeout_s``: uvicorn has no deadline for receiving request headers, so a client that opens a connection
  and trickles bytes could hold it forever (slowloris). :class:`DeadlineH11Protocol` closes a connection whose
  request headers are not complete within that many seconds of it opening or of the previous response ending.
- ``body_timeout_s`` and ``max_body_bytes`` are enforced while the body is read (app.py); ``keepalive_timeout_s``
  is uvicorn's keep-alive timeout.
- Ctrl+C / SIGTERM: uvicorn stops accepting and waits up to ``shutdown_timeout_s`` for open requests — streamed
  replies included — to finish; a second Ctrl+C forces. Unlike plain uvicorn the signal is not re-raised
  afterwards, so the caller's clean-up (worker pool, summary line) still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from typing import Any, Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import HANDLED_SIGNALS

from ..config import ServeConfig


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for the request headers (see the module docstring)."""

    header_timeout_s = 10.0  # replaced per server by make_server

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # asyncio sets TCP_NODELAY only when the listening socket was made with proto 6;
            with contextlib.suppress(OSError):  # without it every streamed chunk waits ~40 ms for a delayed ACK
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        waiting = self.cycle is None or self.cycle.response_complete  # no request in progress
        if waiting and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_header_deadline()  # a request's headers arrived

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)


class Server(uvicorn.Server):
    """uvicorn.Server whose signal handling does not re-raise the signal after the graceful stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound before the model loads, so a taken port fails fast)."""
    from ..errors import ChatbotError

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise ChatbotError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another with --port / "
                           "--host (or serve.port in configs/gen.yaml), or stop the program using it") from None
    sock.set_inheritable(True)
    return sock


def make_server(app: Any, sc: ServeConfig) -> Server:
    protocol = type("ServeH11Protocol", (DeadlineH11Protocol,), {"header_timeout_s": sc.header_timeout_s})
    config = uvicorn.Config(
        app, http=protocol, ws="none", lifespan="off", access_log=False, log_config=None, log_level="warning",
        limit_concurrency=sc.max_connections, timeout_keep_alive=max(1, int(round(sc.keepalive_timeout_s))),
        timeout_graceful_shutdown=int(sc.shutdown_timeout_s), server_header=False, date_header=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return Server(config)


class Background:
    """A server on a thread (tests, benchmarks): ``with Background(app, sc) as srv: srv.url``."""

    def __init__(self, app: Any, sc: ServeConfig, host: str = "127.0.0.1", port: int = 0):
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.server = make_server(app, sc)
        self.thread = threading.Thread(target=self._run, name="serve-http", daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> "Background":
        self.thread.start()
        for _ in range(500):
            if self.server.started or not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __exit__(self, *exc: Any) -> None:
        self.stop()
