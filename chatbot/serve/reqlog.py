"""One log line per HTTP request (logger ``chatbot.serve``), written when its response has been sent: method, path,
status, latency and the fields the handlers noted (outcome, token counts, queue and generation time, the
conversation's hash). Never message text, headers or keys; unknown paths are not echoed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import Request

log = logging.getLogger("chatbot.serve")


def note(request: Request, **fields: Any) -> None:
    """Fields for this request's log line (RequestLog writes it when the response is done)."""
    request.scope.setdefault("state", {}).setdefault("log", {}).update(fields)


class RequestLog:
    """ASGI middleware: one log line per HTTP request, written when its response has been sent (streams
    included). Only method, path, status, timing and the fields handlers noted; never text, headers or keys."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.monotonic()
        status = {"code": 0}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            fields = scope.get("state", {}).get("log", {})
            parts = [scope["method"], _log_path(scope["path"]), f"status={status['code'] or '-'}",
                     f"latency_ms={(time.monotonic() - t0) * 1000:.0f}"]
            for key, value in fields.items():
                parts.append(f"{key}={value:.0f}" if isinstance(value, float) else f"{key}={value}")
            log.info(" ".join(parts))


def _log_path(path: str) -> str:
    known = ("/", "/healthz", "/v1/models", "/v1/chat/completions")
    if path in known:
        return path
    return "/v1/models/<id>" if path.startswith("/v1/models/") else "<other>"  # never echo arbitrary paths
