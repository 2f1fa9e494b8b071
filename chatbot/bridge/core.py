"""Bridge core: incoming message → filters → per-room context → bounded queued generation → delivery bookkeeping.

Transports (HTTP ``kakao-skill`` / ``relay``, ``jsonl``) only translate wire formats into :class:`Incoming` and
write answers; every policy lives here so all transports behave the same:

1. Filters, in order (each ends with an outcome and no generation): ``not_ready`` (model still loading),
   ``stopping``, ``blank`` (empty text), ``self`` (sender is one of ``bot_names``, case-insensitive), ``not_allowed``
   (``allowed_rooms`` set and the room id — or its logged hash — is not in it), ``duplicate`` (idempotency key seen),
   ``rate_limited`` (``rate_limit_per_minute`` messages of the room were already taken for a reply in the last
   60 s), ``busy`` (worker pool and queue full). Blank, self, not_allowed, duplicate and busy messages are not
   stored; a rate-limited message is stored as context (it was said in the room) but not answered.
2. Idempotency key: the payload's message id when it has one (``id``); else its platform timestamp (``ts``) with
   room + sender + text; else room + sender + text, treated as the same message only within ``dedupe_window_s``
   seconds (notification apps and retries re-deliver within a second or two; a person repeating themselves after
   the window is a new message). Keys are keyed hashes, persisted in the room file, so a restart still recognises
   a re-delivered message id.
3. Accepted: the sender gets a stable pseudonym slot of the room (chatbot/infer/speakers.py: keyed hash of the sender
   id → slot, persisted with the room; the first person is "user", more people get the model's other known
   speakers, senders beyond them share one "other" slot, logged once per room), the user turn is appended to the room memory (written to disk) and the context snapshot (the last
   ``memory_turns`` turns, the new message last) goes to the worker pool. A bot turn is appended only for a reply that
   is really sent (``--send``): just before an inline answer is written, after a Kakao callback POST succeeded; in
   ``--dry`` nothing is sent, so the room memory holds only what was said in the room.
4. Generation runs on worker threads, never on a request thread. Generation calls share one lock unless the
   responder declares ``concurrent_replies = True`` (it can really generate several replies at once): the KV cache
   lives in the model (chatbot/model.py), so two concurrent generations on one model would corrupt each other. Extra workers still overlap delivery (callback
   POSTs, disk writes) with generation.

The reply policy (gen.yaml ``reply_policy``) is the Responder's: a silent decision is the outcome ``silent`` (relay
204, jsonl ``{"reply": null, "reason": "silent"}``); kakao-skill passes ``policy="always"``.

One log line per message (logger ``chatbot.bridge``): room hash, outcome, latency, queue and generation time,
token and character counts, the speak decision and its probability (``decision=``, ``p_speak=``) — message text only when ``log_text`` is true.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import BridgeConfig
from ..infer.speakers import SpeakerPlan
from .memory import MemoryStore
from .pool import WorkerPool, moving_average, retry_after_s

log = logging.getLogger("chatbot.bridge")

KAKAO_TEXT_LIMIT = 1000  # simpleText.text maximum length on the Kakao i Open Builder platform
NO_QUEUE = ("not_ready", "stopping", "busy")  # outcomes that mean "try again later" (HTTP 503)


@dataclass
class Incoming:
    """One message as a transport received it. ``room`` and ``sender`` are never logged."""

    room: str
    sender: str
    text: str
    msg_id: str | None = None
    stamp: str | None = None  # platform timestamp (any format): part of the idempotency key only
    callback_url: str | None = None
    received: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)


class Job:
    """A queued generation. ``mode`` decides who delivers the result:

    "inline" — the receiving thread waits and answers; "async" — the worker calls ``deliver(job)`` when done
    (Kakao callback, jsonl); "abandoned" — the receiver gave up (timeout): the worker skips or discards it.
    Transitions happen under ``lock`` so a result is delivered exactly once.
    """

    def __init__(self, msg: Incoming, room_hash: str, history: list[tuple[str, str]], limit: int,
                 reply_kw: dict | None = None):
        self.msg = msg
        self.reply_kw = reply_kw or {}  # policy / senders for responder.reply
        self.room_hash = room_hash
        self.history = history
        self.limit = limit
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.mode = "inline"
        self.finished = False
        self.deliver: Callable[[Job], None] | None = None
        self.reply: Any = None
        self.error: str | None = None
        self.queued_s = 0.0
        self.gen_s = 0.0

    def hand_off(self, mode: str, deliver: Callable[["Job"], None] | None = None) -> bool:
        """Give up inline delivery: switch to "async" (the worker will call ``deliver``) or "abandoned".

        Returns False when the result is already there — then the caller delivers it inline after all.
        """
        with self.lock:
            if self.finished:
                return False
            self.mode, self.deliver = mode, deliver
            return True


def trim_text(text: str, limit: int) -> str:
    """Reply text cut to ``limit`` characters (platform limit), whitespace-stripped."""
    text = (text or "").strip()
    return text[:limit].rstrip() if len(text) > limit else text


class RoomRateLimit:
    """At most ``per_minute`` messages of one room taken for a reply in any 60 s (0 = no limit)."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque] = {}  # room hash -> monotonic times of its recent replies
        self._lock = threading.Lock()

    def limited(self, rh: str) -> bool:
        if self.per_minute <= 0:
            return False
        now = time.monotonic()
        with self._lock:
            hits = self._hits.get(rh)
            if hits is None:
                return False
            while hits and now - hits[0] > 60.0:
                hits.popleft()
            return len(hits) >= self.per_minute

    def hit(self, rh: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._hits.setdefault(rh, deque()).append(now)
            if len(self._hits) > 4096:  # forget rooms idle for a minute: bounded memory whatever the room count
                for key in [k for k, d in self._hits.items() if not d or now - d[-1] > 60.0]:
                    del self._hits[key]


class Bridge:
    """Filters, memory, worker pool and logging shared by every transport (see the module docstring)."""

    def __init__(self, bc: BridgeConfig, store: MemoryStore, *, send: bool, transport: str | None = None,
                 responder: Any = None):
        self.bc = bc
        self.store = store
        self.send = send
        self.transport = transport or bc.transport
        limit = bc.max_reply_chars
        self.reply_limit = min(limit, KAKAO_TEXT_LIMIT) if self.transport == "kakao-skill" else limit
        self._bot_names = {n.strip().casefold() for n in bc.bot_names if n.strip()}
        self._allowed = set(bc.allowed_rooms)
        self._rate = RoomRateLimit(bc.rate_limit_per_minute)
        self._gen_lock: threading.Lock | None = None
        self.responder = None
        self.plan = SpeakerPlan("user", "bot")  # a responder without slots: every sender is "user"
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.ewma_gen_s = 0.0  # moving average of generation time (Kakao callback decision, Retry-After)
        self.counts: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self.pool = WorkerPool(bc.workers, bc.queue_limit, self._work)
        if responder is not None:
            self.set_responder(responder)

    # ------------------------------------------------------------------ lifecycle
    def set_responder(self, responder: Any) -> None:
        """Install the model; /healthz and message handling turn ready."""
        self._gen_lock = None if getattr(responder, "concurrent_replies", False) else threading.Lock()
        self.responder = responder
        self.plan = getattr(responder, "plan", None) or self.plan
        self.ready.set()

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting, finish admitted jobs (in-flight replies are delivered). Memory is already on disk."""
        self.stopping.set()
        finished = self.pool.close(timeout)
        self.store.flush()
        return finished

    @property
    def gen_concurrency(self) -> int:
        return 1 if self._gen_lock is not None else self.bc.workers

    def estimate_wait_s(self, ahead: int | None = None) -> float:
        """Expected seconds until a new job's reply: queued work ahead plus its own generation."""
        return self.pool.expected_wait_s(self.ewma_gen_s, self.gen_concurrency, ahead)

    def retry_after_s(self) -> int:
        return retry_after_s(self.estimate_wait_s(), 30)

    # ------------------------------------------------------------------ intake
    def accept(self, msg: Incoming, *, deliver: Callable[[Job], None] | None = None,
               block: bool = False) -> Job | str:
        """Filter, store and queue one message. Returns the queued Job, or the outcome string when nothing was
        queued (that outcome is already logged). With ``deliver`` the job is async from the start; ``block`` waits
        for a pool slot instead of answering ``busy`` (jsonl: back-pressure on the input)."""
        rh = self.store.room_hash(msg.room)
        if not self.ready.is_set():
            return self._done_early(msg, rh, "not_ready")
        if self.stopping.is_set():
            return self._done_early(msg, rh, "stopping")
        if not msg.text.strip():
            return self._done_early(msg, rh, "blank")
        if msg.sender.strip().casefold() in self._bot_names:
            return self._done_early(msg, rh, "self")
        if self._allowed and msg.room not in self._allowed and rh not in self._allowed:
            return self._done_early(msg, rh, "not_allowed")
        if msg.msg_id is not None:
            key, windowed = self.store.key_hash("id", msg.msg_id), False
        elif msg.stamp is not None:
            key, windowed = self.store.key_hash("ts", msg.sender, msg.text, msg.stamp), False
        else:
            key, windowed = self.store.key_hash("win", msg.sender, msg.text), True
        now = msg.wall
        with self.store.room(rh) as room:
            early = self._room_filters(msg, rh, room, key, windowed)
        if early is not None:
            return early
        # the slot is reserved outside the room lock: a blocking reserve under it would deadlock with a worker
        # that needs the same room to store its reply
        if not self.pool.reserve(block=block):
            return self._done_early(msg, rh, "stopping" if self.stopping.is_set() else "busy")
        with self.store.room(rh) as room:
            early = self._room_filters(msg, rh, room, key, windowed)  # again: the same message may have raced us
            if early is not None:
                self.pool.release()
                return early
            try:
                slot = self._sender_slot(room, msg, rh)
                history = room.context(self.bc.memory_turns) + [(slot, msg.text)]
                senders = room.speakers.distinct()
                room.mark_seen(key, now, windowed)
                room.add_turn("user", msg.text, now, slot)
                self.store.save(room, now)
            except BaseException:  # disk full or similar: a re-delivery of the message is handled anew
                self.pool.release()
                room.seen.pop(key, None)
                raise
            self._rate.hit(rh)
        # kakao-skill is a direct message to the bot: always answered, whatever gen.reply_policy says
        reply_kw = {"senders": senders}
        if self.transport == "kakao-skill":
            reply_kw["policy"] = "always"
        job = Job(msg, rh, history, self.reply_limit, reply_kw)
        if deliver is not None:
            job.deliver, job.mode = deliver, "async"
        self.pool.put(job)
        return job

    def _room_filters(self, msg: Incoming, rh: str, room: Any, key: str, windowed: bool) -> str | None:
        """Duplicate / rate-limit checks under the room lock; a rate-limited message is stored as context."""
        now = msg.wall
        if room.is_duplicate(key, now, self.bc.dedupe_window_s):
            return self._done_early(msg, rh, "duplicate")
        if self._rate.limited(rh):
            room.mark_seen(key, now, windowed)
            room.add_turn("user", msg.text, now, self._sender_slot(room, msg, rh))
            self.store.save(room, now)
            return self._done_early(msg, rh, "rate_limited")
        return None

    def _sender_slot(self, room: Any, msg: Incoming, rh: str) -> str:
        """The sender's stable pseudonym slot in this room (chatbot/infer/speakers.py); overflow is logged once."""
        slot, overflow = room.speakers.slot(self.plan, self.store.key_hash("sender", msg.sender), msg.sender)
        if overflow and not room.overflow_noted:
            room.overflow_noted = True
            log.info("room=%s more senders than the model's %d speaker slots: later senders share %s",
                     rh, self.plan.capacity, self.plan.other)
        return slot

    # ------------------------------------------------------------------ generation (worker threads)
    def _work(self, job: Job) -> None:
        with job.lock:
            if job.mode == "abandoned":  # its receiver gave up while it waited in the queue
                job.finished = True
                skip = True
            else:
                skip = False
        if skip:
            self.finish(job, "timeout")
            return
        with self._gen_lock or contextlib.nullcontext():
            start = time.monotonic()  # queue time includes waiting for the model; gen_s is the model alone
            job.queued_s = start - job.msg.received
            try:
                job.reply = self.responder.reply(list(job.history), **job.reply_kw)
            except Exception as exc:  # a broken reply must not take the bridge down; only the type is logged
                job.error = type(exc).__name__
            job.gen_s = time.monotonic() - start
        self.ewma_gen_s = moving_average(self.ewma_gen_s, job.gen_s)
        with job.lock:
            job.finished = True
            mode = job.mode
        job.done.set()
        if mode == "async" and job.deliver is not None:
            job.deliver(job)
        elif mode == "abandoned":
            self.finish(job, "timeout")

    def result(self, job: Job) -> tuple[str, str | None, str]:
        """After generation: (outcome, text to send or None, generated text).

        outcome is "error", "silent" (reply_policy kept the bot quiet), "empty", "dry" (text = ``dry_reply`` or
        None) or "replied".
        """
        if job.error is not None:
            return "error", None, ""
        if getattr(job.reply, "silent", False):
            return "silent", None, ""
        text = trim_text(getattr(job.reply, "text", ""), job.limit)
        if not text:
            return "empty", None, ""
        if not self.send:
            return "dry", trim_text(self.bc.dry_reply, job.limit) or None, text
        return "replied", text, text

    # ------------------------------------------------------------------ bookkeeping
    def finish(self, job: Job, outcome: str, *, sent: str | None = None, generated: str = "",
               via: str | None = None) -> None:
        """Record a delivered reply as the bot's turn (``replied`` with ``sent`` only) and write the log line."""
        if outcome == "replied" and sent:
            self.record_reply(job, sent)
        self._log(job.msg, job.room_hash, outcome, job=job, generated=generated, via=via)

    def record_reply(self, job: Job, text: str) -> None:
        """Append the bot's turn to the room. Inline transports call it just *before* writing the answer, so the
        next message of the room (which the sender can only send after reading it) always sees the reply; a
        client that vanished at that very moment leaves a stored but undelivered turn (logged as client_gone)."""
        now = time.time()
        with self.store.room(job.room_hash) as room:
            room.add_turn("bot", text, now)
            self.store.save(room, now)

    def _done_early(self, msg: Incoming, rh: str, outcome: str) -> str:
        self._log(msg, rh, outcome)
        return outcome

    def _log(self, msg: Incoming, rh: str, outcome: str, *, job: Job | None = None, generated: str = "",
             via: str | None = None) -> None:
        with self._count_lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
        parts = [f"room={rh}", f"outcome={outcome}", f"transport={self.transport}",
                 f"latency_ms={(time.monotonic() - msg.received) * 1000:.0f}"]
        if via:
            parts.append(f"via={via}")
        if job is not None:
            parts.append(f"queue_ms={job.queued_s * 1000:.0f}")
            parts.append(f"gen_ms={job.gen_s * 1000:.0f}")
            if job.reply is not None:
                parts.append(f"tokens={getattr(job.reply, 'n_tokens', 0)}")
                conf = getattr(job.reply, "confidence", None)
                if isinstance(conf, (int, float)) and math.isfinite(conf):
                    parts.append(f"conf={conf:.2f}")
                decision = getattr(job.reply, "decision", "")
                if isinstance(decision, str) and decision:
                    parts.append(f"decision={decision}")
                prob = getattr(job.reply, "speak_prob", None)
                if isinstance(prob, float):
                    parts.append(f"p_speak={prob:.3f}")
            if job.error:
                parts.append(f"error={job.error}")
            if generated:
                parts.append(f"chars={len(generated)}")
        if self.bc.log_text:
            parts.append(f"in={msg.text!r}")
            if generated:
                parts.append(f"out={generated!r}")
        log.info(" ".join(parts))

    def log_connection(self, outcome: str) -> None:
        """A connection event that is no message (``client_reset``: the client reset the connection)."""
        with self._count_lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + 1
        log.info("room=- outcome=%s transport=%s", outcome, self.transport)

    def log_rejected(self, reason: str, status: int) -> None:
        """A request that never became a message (bad JSON, missing field, oversize...): no room, no text."""
        with self._count_lock:
            self.counts["rejected"] = self.counts.get("rejected", 0) + 1
        log.info("room=- outcome=rejected status=%d transport=%s reason=%s", status, self.transport, reason)
