"""How the HTTP transports answer a message the bridge accepted (core.Bridge.accept): waiting for the reply within
the platform's budget, the status and body, and the bot's turn recorded just before a reply is written.

``kakao-skill``: Kakao requests never wait past ``request_timeout_s`` (default 4.5 s, under the platform's 5 s):
with a callbackUrl the bridge answers ``useCallback`` — at once when the expected wait (queue ahead × average
generation time) exceeds ``callback_after_s``, otherwise after waiting ``callback_after_s`` — and POSTs the reply to
the callback URL once (callback.py: which URLs, the bounded POST); without one it answers the empty template when
time runs out. ``relay``: 200 ``{"reply"}``, 204 no reply, 504 when the reply is not ready within
``request_timeout_s``. Both: 500 generation failed, 503 + Retry-After for not_ready / stopping / busy.
"""

from __future__ import annotations

import time
from typing import Callable

from .callback import CallbackRefused, post_json, url_problem
from .core import NO_QUEUE, Bridge, Incoming, Job
from .listener import RequestHandler
from .wire import empty_template, simple_text, use_callback

CALLBACK_VALID_S = 60.0  # a Kakao callback URL is valid for one minute


def answer_skill(h: RequestHandler, b: Bridge, msg: Incoming) -> None:
    """kakao-skill: the reply inline within the budget, or ``useCallback`` and one POST later (module docstring)."""
    bc = b.bc
    problem = msg.callback_url and url_problem(msg.callback_url, bc.callback_hosts, bc.callback_allow_private)
    if problem:
        h.reject(400, problem)
        return
    expected = b.estimate_wait_s()
    job = _admit(h, b, msg, (200, empty_template()))
    if job is None:
        return
    remaining = bc.request_timeout_s - (time.monotonic() - msg.received)
    if msg.callback_url:
        deliver = _callback_deliver(b, msg.callback_url) if b.send else _dry_deliver(b)
        wait = 0.0 if expected > bc.callback_after_s else min(bc.callback_after_s, remaining)
        if not job.done.wait(wait) and job.hand_off("async", deliver):
            # send: Kakao waits for our POST; dry: nothing will be POSTed, so answer the dry template now
            h.send_json(200, use_callback() if b.send else _dry_template(b, job), "callback")
            return
    elif not job.done.wait(max(0.0, remaining)) and job.hand_off("abandoned"):
        h.send_json(200, empty_template(), "timeout")  # the worker logs the message's line
        return
    _answer(h, b, job, lambda text: (200, simple_text(text) if text else empty_template()))


def _dry_template(b: Bridge, job: Job) -> dict:
    text = b.bc.dry_reply.strip()[: job.limit]
    return simple_text(text) if text else empty_template()


def _dry_deliver(b: Bridge) -> Callable[[Job], None]:
    def deliver(job: Job) -> None:
        outcome, _, generated = b.result(job)
        b.finish(job, outcome, generated=generated, via="callback")  # dry: log only, no POST
    return deliver


def _callback_deliver(b: Bridge, url: str) -> Callable[[Job], None]:
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


def answer_relay(h: RequestHandler, b: Bridge, msg: Incoming) -> None:
    """relay: 200 with the reply, 204 without one, 504 when it is not ready within ``request_timeout_s``."""
    job = _admit(h, b, msg, (204, None))
    if job is None:
        return
    remaining = b.bc.request_timeout_s - (time.monotonic() - msg.received)
    if not job.done.wait(max(0.0, remaining)) and job.hand_off("abandoned"):
        h.send_json(504, {"error": "no reply in time (bridge.request_timeout_s)"}, "timeout")
        return
    _answer(h, b, job, lambda text: (200, {"reply": text}) if text else (204, None))


def _admit(h: RequestHandler, b: Bridge, msg: Incoming, no_reply: tuple[int, dict | None]) -> Job | None:
    """The queued job, or None after answering a message that was not queued: 503 + Retry-After for the outcomes
    that mean "try again later", else the transport's ``no_reply`` (status, body)."""
    res = b.accept(msg)
    if not isinstance(res, str):
        return res
    if res in NO_QUEUE:
        h.busy(res)
    else:
        h.send_json(*no_reply, res)
    return None


def _answer(h: RequestHandler, b: Bridge, job: Job,
            response: Callable[[str | None], tuple[int, dict | None]]) -> None:
    """Store and send a finished job's reply; ``response(text)`` gives the transport's (status, body)."""
    outcome, text, generated = b.result(job)
    if outcome == "replied":
        b.record_reply(job, text)
    if outcome == "error":
        ok = h.send_json(500, {"error": "generation failed"}, outcome)
    else:
        ok = h.send_json(*response(text), outcome)
    b.finish(job, outcome if ok else "client_gone", generated=generated)
