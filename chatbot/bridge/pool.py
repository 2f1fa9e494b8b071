"""The bounded worker pool shared by the bridge (chatbot/bridge/core.py) and serve (chatbot/serve/engine.py).

Generation never runs on a request thread: a fixed number of worker threads take jobs from a queue, and an
admission count keeps at most ``workers + queue_limit`` jobs in existence, so a burst is refused at once (the
front end answers 503 + Retry-After) instead of queueing without bound. A job is any object with a ``room_hash``
(named in the log line when a worker fails); what running it means is the ``run`` callable's business.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("chatbot.bridge")


def moving_average(average: float, sample: float) -> float:
    """The generation-time average behind every wait estimate (Kakao callback decision, Retry-After): the first
    sample as it is, then an exponential moving average that follows a model getting slower or faster."""
    return sample if average == 0.0 else 0.8 * average + 0.2 * sample


def retry_after_s(wait_s: float, cap: int) -> int:
    """A Retry-After value for an expected wait: whole seconds, at least 1, at most ``cap``."""
    return int(min(cap, max(1, math.ceil(wait_s))))


class WorkerPool:
    """Fixed worker threads plus an admission count: at most ``workers + queue_limit`` jobs exist at once.

    A full pool refuses at once (``reserve`` → False: the transport answers 503) instead of queueing forever.
    """

    def __init__(self, workers: int, queue_limit: int, run: Callable[[Any], None]):
        self.workers = workers
        self.capacity = workers + queue_limit
        self._run = run
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"bridge-worker-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        return self._pending

    def reserve(self, block: bool = False, timeout: float | None = None) -> bool:
        with self._cond:
            if block:
                self._cond.wait_for(lambda: self._closed or self._pending < self.capacity, timeout)
            if self._closed or self._pending >= self.capacity:
                return False
            self._pending += 1
            return True

    def release(self) -> None:
        """Give back a reservation that will not be used."""
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def expected_wait_s(self, gen_s: float, concurrency: int, ahead: int | None = None) -> float:
        """Seconds until a new job's reply: the jobs ahead of it (all admitted ones by default) spread over
        ``concurrency`` generating workers, plus its own generation, at ``gen_s`` seconds a job."""
        ahead = self.pending if ahead is None else ahead
        return gen_s * (ahead / concurrency + 1)

    def put(self, job: Any) -> None:
        self._q.put(job)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                self._run(job)
            except BaseException:  # never lose a worker thread
                log.exception("room=%s worker failed", job.room_hash)
            finally:
                self.release()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every admitted job has finished (True) or the timeout passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Refuse new jobs, finish the admitted ones (queued included), stop the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        finished = self.drain(timeout)
        for _ in self._threads:
            self._q.put(None)
        for t in self._threads:
            t.join(timeout=1.0 if finished else 0.0)
        return finished
