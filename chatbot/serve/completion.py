"""One ``POST /v1/chat/completions`` after its body was read and validated: admission to the worker pool, the
conversation memory, waiting for the reply (deadline, client gone), and the answer — one JSON completion or an SSE
stream. Status codes and the error objects: see app.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .engine import GenJob
from .memory import CONVERSATION_ID
from .reqlog import note
from .state import ServeState
from .wire import ApiError, ChatRequest, chunk, completion, completion_id, error_body, now, sse, to_history, usage

POLL_S = 0.2  # how often a waiting request checks whether its client is still there


def _conversation(state: ServeState, request: Request) -> str | None:
    conv = request.headers.get("x-conversation-id")
    if conv is None or state.conversations is None:
        return None  # stateless (the header is ignored when serve.memory is off)
    if not CONVERSATION_ID.fullmatch(conv):
        raise ApiError(400, "X-Conversation-Id must be 8-128 characters of letters, digits, '_', '-', '.', ':'.",
                       param="X-Conversation-Id")
    return conv


async def complete(state: ServeState, request: Request, req: ChatRequest) -> Response:
    engine = state.engine
    conv = _conversation(state, request)
    note(request, stream=req.stream)
    if not engine.pool.reserve():  # before anything is stored: a refused request leaves no trace in memory
        raise ApiError(503, "The server is busy (all workers and the queue are full); retry after the number of "
                            "seconds in Retry-After.", code="overloaded",
                       headers={"Retry-After": str(engine.retry_after_s())})
    try:
        history = to_history(req.messages, getattr(engine.responder, "plan", None))
        if conv is not None:
            note(request, conversation=state.conversations.hash(conv))
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
        note(request, outcome="client_gone", queue_ms=job.queued_s * 1000)
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
            note(request, outcome="client_gone")
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
                note(request, outcome="error")
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
            note(request, outcome="client_gone")


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
    note(request, outcome="replied" if text else "empty", finish=finish, prompt_tokens=getattr(reply, "prompt_tokens", 0),
          tokens=getattr(reply, "n_tokens", 0), queue_ms=job.queued_s * 1000, gen_ms=job.gen_s * 1000)
