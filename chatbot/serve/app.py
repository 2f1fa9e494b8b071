"""The FastAPI application: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz`` and the page at ``/``.

Errors on every route use OpenAI's error object (wire.py). Status codes: 400 malformed or unsupported request,
401 missing or wrong API key, 404 unknown path, 405 wrong method, 408 body not received within
``body_timeout_s``, 413 body over ``max_body_bytes``, 500 generation failed, 503 + ``Retry-After`` when the worker
pool and its queue are full or a request waited in the queue past ``request_timeout_s``.

The routes are here; a completion's flow after its body is read is completion.py, the log line per request
reqlog.py, what the routes share state.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..config import ServeConfig
from .auth import bearer_key
from .completion import complete
from .reqlog import RequestLog, note
from .state import ServeState
from .wire import ApiError, error_body, parse_chat_request, parse_json

__all__ = ["ServeState", "create_app"]

PAGE = Path(__file__).with_name("static") / "index.html"
PAGE_HEADERS = {  # the page loads nothing from anywhere else and cannot be framed
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="chatbot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        note(request, outcome=exc.code or f"http_{exc.status}")
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Unknown path; this server serves /v1/chat/completions, /v1/models, /healthz and /." \
            if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(message, "invalid_request_error", None, None), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(PAGE.read_bytes(), media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok", "model": state.model_id, "auth": state.auth is not None,
                "memory": state.conversations is not None, "generating": state.engine.busy,
                "pending": state.engine.pool.pending,
                "capacity": state.engine.pool.capacity}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        await _authorize(state, request)
        return {"object": "list", "data": [_model_entry(state)]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str, request: Request) -> dict:
        await _authorize(state, request)
        if model != state.model_id:
            raise ApiError(404, f"The model '{model}' does not exist; this server has '{state.model_id}'.",
                           param="model", code="model_not_found")
        return _model_entry(state)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        await _authorize(state, request)
        body = await _read_body(request, state.settings)
        req = parse_chat_request(parse_json(body))
        return await complete(state, request, req)

    app.add_middleware(RequestLog)
    return app


def _model_entry(state: ServeState) -> dict:
    return {"id": state.model_id, "object": "model", "created": state.info.get("created", 0), "owned_by": "local",
            **{k: v for k, v in state.info.items() if k != "created"}}


# ------------------------------------------------------------------------------------------------ request steps
async def _authorize(state: ServeState, request: Request) -> None:
    if state.auth is None:
        return
    key = bearer_key(request.headers.get("authorization"))
    if key is None:
        raise ApiError(401, "You didn't provide an API key: send it as 'Authorization: Bearer <key>'.",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
    if not await run_in_threadpool(state.auth.check, key):
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


async def _read_body(request: Request, sc: ServeConfig) -> bytes:
    """The body, bounded in size (413) and time (408) before it is read whole."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > sc.max_body_bytes):
        if not length.isdigit():
            raise ApiError(400, "Bad Content-Length header.")
        raise ApiError(413, f"Request body larger than {sc.max_body_bytes} bytes (serve.max_body_bytes).",
                       code="request_too_large", headers={"Connection": "close"})

    async def read() -> bytes:
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > sc.max_body_bytes:
                raise ApiError(413, f"Request body larger than {sc.max_body_bytes} bytes (serve.max_body_bytes).",
                               code="request_too_large", headers={"Connection": "close"})
            parts.append(part)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(read(), sc.body_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"Request body not received within {sc.body_timeout_s:g} s (serve.body_timeout_s).",
                       code="timeout", headers={"Connection": "close"}) from None
    except ClientDisconnect:
        raise ApiError(400, "Client disconnected while sending the body.", code="client_gone") from None
