"""The pieces the bridge and serve share for admission: the per-room rate limit, the generation-time average and the
wait / Retry-After estimates (chatbot/bridge/pool.py, core.RoomRateLimit)."""

from __future__ import annotations

import threading

from chatbot.bridge import core
from chatbot.bridge.pool import WorkerPool, moving_average, retry_after_s


def test_room_rate_limit_counts_per_room_within_a_minute(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(core.time, "monotonic", lambda: clock[0])
    limit = core.RoomRateLimit(2)
    assert not limit.limited("a")
    limit.hit("a")
    limit.hit("a")
    assert limit.limited("a") and not limit.limited("b")  # another room has its own budget
    clock[0] += 59.0
    assert limit.limited("a")
    clock[0] += 2.0  # both hits are now older than 60 s
    assert not limit.limited("a")
    off = core.RoomRateLimit(0)
    for _ in range(10):
        off.hit("a")
    assert not off.limited("a")


def test_wait_estimates() -> None:
    assert moving_average(0.0, 4.0) == 4.0  # the first sample as it is
    assert moving_average(4.0, 9.0) == 0.8 * 4.0 + 0.2 * 9.0
    assert retry_after_s(0.01, 30) == 1 and retry_after_s(2.2, 30) == 3 and retry_after_s(500.0, 30) == 30
    release = threading.Event()
    pool = WorkerPool(2, 4, lambda job: release.wait(5))
    try:
        for _ in range(4):
            assert pool.reserve()
            pool.put(object())
        # 4 admitted jobs ahead over 2 generating workers, then its own: (4 / 2 + 1) generations
        assert pool.expected_wait_s(1.5, concurrency=2) == 1.5 * 3
        assert pool.expected_wait_s(1.5, concurrency=1, ahead=0) == 1.5
    finally:
        release.set()
        assert pool.close(timeout=5)
