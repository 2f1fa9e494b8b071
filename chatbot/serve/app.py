"""The FastAPI application: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /healthz`` and the page at ``/``.

Errors on every route use OpenAI's error object (wire.py). Status codes: 400 malformed or unsupported request,
401 missing or wrong API key, 404 unknown path, 405 wrong method, 408 body not received within
``body_timeout_s``, 413 body over ``max_body_bytes``, 500 generation failed, 503 + ``Retry-After`` when the worker
pool and its queue are full or a request waited in the queue past ``request_timeout_s``.

One log line per request (logger ``chatbot.serve``): method, path, status, latency and — for completions — outcome,
token counts, queue and generation time, the conversation's hash in memory mode. Never message text, never the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .auth import ApiKeyCheck, bearer_key
from .engine import Engine, GenJob
from .memory import CONVERSATION_ID, Conversations
from .wire import ApiError, ChatRequest, chunk, completion, completion_id, error_body, now, parse_chat_request, \
    parse_json, sse, to_history, usage

log = logging.getLogger("chatbot.serve")
PAGE = Path(__file__).with_name("static") / "index.html"
POLL_S = 0.2  # how often a waiting request checks whether its client is still there
PAGE_HEADERS = {  # the page loads nothing from anywhere else and cannot be framed
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass
class ServeState:
    """What the routes need. ``auth`` None = no API key (only allowed on loopback, see run_serve)."""

    engine: Engine
    settings: Any  # chatbot.config.ServeConfig
    base_sampling: Any  # chatbot.config.SamplingConfig
    model_id: str
    info: dict  # extra fields of the /v1/models entry (bot pseudonym, step, ...)
    auth: ApiKeyCheck | None = None
    conversations: Conversations | None = None


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="chatbot", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _note(request, outcome=exc.code or f"http_{exc.status}")
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
        return await _complete(state, request, req)

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


async def _read_body(request: Request, sc: Any) -> bytes:
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


def _conversation(state: ServeState, request: Request) -> str | None:
    conv = request.headers.get("x-conversation-id")
    if conv is None or state.conversations is None:
        return None  # stateless (the header is ignored when serve.memory is off)
    if not CONVERSATION_ID.fullmatch(conv):
        raise ApiError(400, "X-Conversation-Id must be 8-128 characters of letters, digits, '_', '-', '.', ':'.",
                       param="X-Conversation-Id")
    return conv


async def _complete(state: ServeState, request: Request, req: ChatRequest) -> Response:
    engine, sc = state.engine, state.settings
    conv = _conversation(state, request)
    _note(request, stream=req.stream)
    if not engine.pool.reserve():  # before anything is stored: a refused request leaves no trace in memory
        raise ApiError(503, "The server is busy (all workers and the queue are full); retry after the number of "
                            "seconds in Retry-After.", code="overloaded",
                       headers={"Retry-After": str(engine.retry_after_s())})
    try:
        history = to_history(req.messages, getattr(engine.responder, "plan", None))
        if conv is not None:
            _note(request, conversation=state.conversations.hash(conv))
            history = await run_in_threadpool(state.conversations.begin, conv, history)
        block = getattr(engine.responder, "block_size", 1 << 16)
        sampling = engine.sampling_for(state.base_sampling, req.temperature, req.top_p, req.max_tokens, block)
        job = GenJob(history, sampling, req.seed, req.stop, asyncio.get_running_loop())
    except BaseException:
        engine.pool.release()
        raise
    engine.pool.put(job)
    try:
        return await _answer(state, request, req, job, conv)
    except BaseException:  # an error answer, or this handler cancelled: nobody will read the reply
        job.cancel()
        raise


async def _answer(state: ServeState, request: Request, req: ChatRequest, job: GenJob, conv: str | None) -> Response:
    engine, sc = state.engine, state.settings
    deadline = job.created + sc.request_timeout_s
    first = await _next_event(job, request, deadline, started=False)
    if first[0] == "gone":
        _note(request, outcome="client_gone", queue_ms=job.queued_s * 1000)
        return Response(status_code=499)  # nobody reads it; logged as the client leaving
    if first[0] == "timeout":
        raise ApiError(503, f"No worker became free within {sc.request_timeout_s:g} s (serve.request_timeout_s).",
                       code="overloaded", headers={"Retry-After": str(engine.retry_after_s())})
    if first[0] == "error":
        raise ApiError(500, "Generating the reply failed.", code="generation_failed")
    meta = (completion_id(), state.model_id, now())
    if req.stream:
        return StreamingResponse(_stream(state, request, req, job, meta, deadline, conv),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    while True:  # text events are not needed here: the reply's text comes with "done"
        event = await _next_event(job, request, deadline, started=True)
        if event[0] == "gone":
            _note(request, outcome="client_gone")
            return Response(status_code=499)
        if event[0] == "error":
            raise ApiError(500, "Generating the reply failed.", code="generation_failed")
        if event[0] == "done":
            reply = event[1]
            text = job.scanner.text if job.scanner.stopped else reply.text
            finish = _finish_reason(job, reply)
            use = usage(getattr(reply, "prompt_tokens", 0), getattr(reply, "n_tokens", 0))
            _record(state, request, job, reply, finish, conv, text)
            return JSONResponse(completion(*meta, text, finish, use))


async def _stream(state: ServeState, request: Request, req: ChatRequest, job: GenJob, meta: tuple,
                  deadline: float, conv: str | None):
    """SSE chunks in the OpenAI format, ending with ``data: [DONE]``. Leaving early (the client disconnected:
    Starlette cancels this generator) cancels the generation, so no worker keeps generating for nobody."""
    include = req.include_usage
    done = False
    try:
        yield sse(chunk(*meta, {"role": "assistant", "content": ""}, include_usage=include))
        while True:
            event = await _next_event(job, request, deadline, started=True, watch_client=False)
            if event[0] == "text":
                yield sse(chunk(*meta, {"content": event[1]}, include_usage=include))
                continue
            if event[0] == "error":  # headers are out: end the stream with an error event, as OpenAI does
                yield sse(error_body("Generating the reply failed.", "server_error", None, "generation_failed"))
                _note(request, outcome="error")
                done = True
                return
            reply = event[1]
            finish = _finish_reason(job, reply)
            yield sse(chunk(*meta, {}, finish, include_usage=include))
            if include:
                yield sse(chunk(*meta, {}, use=usage(getattr(reply, "prompt_tokens", 0),
                                                     getattr(reply, "n_tokens", 0)), include_usage=True))
            yield sse("[DONE]")
            text = job.scanner.text if job.scanner.stopped else reply.text
            _record(state, request, job, reply, finish, conv, text)
            done = True
            return
    finally:
        if not done:
            job.cancel()
            _note(request, outcome="client_gone")


async def _next_event(job: GenJob, request: Request, deadline: float, *, started: bool,
                      watch_client: bool = True) -> tuple:
    """The job's next event; ("gone",) when the client disconnected, ("timeout",) when the deadline passed while
    the job was still queued. Past the deadline a running job is cancelled and its (shortened) reply still comes.
    Deadline and client are checked at least every POLL_S, also while events keep arriving."""
    while True:
        now = time.monotonic()
        if now > deadline and not job.cancelled.is_set():
            job.cancel()
            if not started:
                return ("timeout",)
        if watch_client and now - job.watched >= POLL_S:
            job.watched = now
            if await request.is_disconnected():
                job.cancel()
                return ("gone",)
        try:
            event = await asyncio.wait_for(job.events.get(), POLL_S)
        except asyncio.TimeoutError:
            continue
        if event[0] == "start":
            if not started:
                return event
            continue
        return event


def _finish_reason(job: GenJob, reply: Any) -> str:
    if job.scanner.stopped:
        return "stop"
    reason = getattr(reply, "stop_reason", "eot")
    return "stop" if reason in ("eot", "next_turn", "") else "length"


def _record(state: ServeState, request: Request, job: GenJob, reply: Any, finish: str, conv: str | None,
            text: str) -> None:
    if conv is not None and text:
        state.conversations.record_reply(conv, text)
    _note(request, outcome="replied" if text else "empty", finish=finish, prompt_tokens=getattr(reply, "prompt_tokens", 0),
          tokens=getattr(reply, "n_tokens", 0), queue_ms=job.queued_s * 1000, gen_ms=job.gen_s * 1000)


def _note(request: Request, **fields: Any) -> None:
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
