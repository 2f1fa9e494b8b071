"""Per-room memory (persistence, trimming/archiving, corruption, hashing), the worker pool bound, the jsonl transport
(stdin and a followed file), and that the repo's gen.yaml bridge section loads."""

from __future__ import annotations

import hashlib
import io
import json
import threading

from tests.support.bridge import FakeResponder, bridge_cfg, wait_until

from chatbot.bridge import make_bridge
from chatbot.bridge.core import Incoming, WorkerPool
from chatbot.bridge.jsonl import run_jsonl
from chatbot.bridge.memory import MemoryStore
from chatbot.config import load_config


def _ask(bridge, room: str, text: str, sender: str = "민수", **kw):
    """Accept a message and wait for its job; returns the job (or the outcome string)."""
    job = bridge.accept(Incoming(room=room, sender=sender, text=text, **kw))
    if not isinstance(job, str):
        assert job.done.wait(5)
        outcome, sent, _ = bridge.result(job)
        if outcome == "replied":
            bridge.record_reply(job, sent)
        bridge.finish(job, outcome)
    return job


def test_memory_survives_a_restart(tmp_path) -> None:
    bc = bridge_cfg(transport="relay")
    first = make_bridge(bc, tmp_path, send=True, responder=FakeResponder())
    _ask(first, "동아리방", "내일 몇 시?")
    _ask(first, "동아리방", "장소는?", msg_id="m-9")
    first.close(5)
    responder = FakeResponder()
    second = make_bridge(bc, tmp_path, send=True, responder=responder)  # a fresh process would do exactly this
    _ask(second, "동아리방", "알았어")
    assert responder.calls == [[("user", "내일 몇 시?"), ("bot", "1|?시 몇 일내"), ("user", "장소는?"),
                                ("bot", "3|?는소장"), ("user", "알았어")]]
    # the idempotency key of a message id is remembered across the restart
    assert _ask(second, "동아리방", "장소는?", msg_id="m-9") == "duplicate"
    second.close(5)


def test_room_files_are_hashed_and_salted(tmp_path) -> None:
    store = MemoryStore(tmp_path, max_turns=10)
    rh = store.room_hash("우리 가족")
    assert rh != hashlib.sha256("우리 가족".encode()).hexdigest()[:16]  # keyed: not confirmable by guessing
    assert rh == MemoryStore(tmp_path, max_turns=10).room_hash("우리 가족")  # stable across restarts (salt file)
    assert rh != MemoryStore(tmp_path / "other", max_turns=10).room_hash("우리 가족")
    with store.room(rh) as room:
        room.add_turn("user", "안녕", 1.0)
        store.save(room)
    names = [p.name for p in tmp_path.rglob("*")]
    assert f"{rh}.json" in names and not any("가족" in n for n in names)


def test_old_turns_are_archived_beyond_max_turns(tmp_path) -> None:
    store = MemoryStore(tmp_path, max_turns=8)
    rh = store.room_hash("r")
    said = [f"말 {i}" for i in range(30)]
    for i, text in enumerate(said):
        with store.room(rh) as room:
            room.add_turn("user" if i % 2 == 0 else "bot", text, float(i))
            store.save(room)
            assert len(room.turns) <= 8
    reloaded = MemoryStore(tmp_path, max_turns=8)
    with reloaded.room(rh) as room:
        live = [t["text"] for t in room.turns]
    archived = [t["text"] for t in reloaded.archived_turns(rh)]
    assert archived + live == said  # nothing lost, order kept
    assert 0 < len(live) <= 8

    dropping = MemoryStore(tmp_path / "drop", max_turns=4, archive=False)
    rh = dropping.room_hash("r")
    for i in range(10):
        with dropping.room(rh) as room:
            room.add_turn("user", f"m{i}", float(i))
            dropping.save(room)
    assert not (tmp_path / "drop" / "archive").exists()
    with dropping.room(rh) as room:
        assert [t["text"] for t in room.turns][-1] == "m9" and len(room.turns) <= 4


def test_corrupt_room_file_is_moved_aside_not_fatal(tmp_path) -> None:
    store = MemoryStore(tmp_path, max_turns=10)
    rh = store.room_hash("r")
    path = tmp_path / "rooms" / f"{rh}.json"
    path.write_text("{ not json", encoding="utf-8")
    bridge = make_bridge(bridge_cfg(transport="relay"), tmp_path, send=True, responder=FakeResponder())
    job = _ask(bridge, "r", "새로 시작")
    assert job.history == [("user", "새로 시작")]
    aside = list((tmp_path / "rooms").glob(f"{rh}.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text(encoding="utf-8") == "{ not json"  # kept, not overwritten
    assert json.loads(path.read_text(encoding="utf-8"))["turns"][0]["text"] == "새로 시작"
    bridge.close(5)


def test_worker_pool_admits_at_most_workers_plus_queue(tmp_path) -> None:
    gate = threading.Event()
    ran: list[int] = []
    pool = WorkerPool(2, 3, lambda job: (gate.wait(5), ran.append(job)))
    admitted = [pool.reserve() for _ in range(7)]
    assert admitted == [True] * 5 + [False] * 2
    for i in range(5):
        pool.put(i)
    gate.set()
    assert pool.drain(5) and sorted(ran) == [0, 1, 2, 3, 4]
    assert pool.reserve()  # capacity is back
    pool.release()
    assert pool.close(5) and not pool.reserve()


def test_jsonl_round_trip_on_stdin(tmp_path) -> None:
    bc = bridge_cfg(transport="jsonl", bot_names=["봇"])
    bridge = make_bridge(bc, tmp_path, send=True, responder=FakeResponder())
    lines = [
        {"room": "a", "sender": "지수", "msg": "점심 뭐 먹어?", "id": "1"},
        "this is not json",
        {"room": "a", "sender": "봇", "msg": "제 말이에요"},
        {"room": "a", "sender": "지수", "msg": "점심 뭐 먹어?", "id": "1"},
        {"room": "b", "sender": "지수"},
        "",
        {"room": "c", "sender": "지수", "msg": "빨리", "id": 2},
    ]
    inp = io.StringIO("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n" for x in lines))
    out = io.StringIO()
    run_jsonl(bridge, inp, out, threading.Event())
    got = {o["line"]: o for o in map(json.loads, out.getvalue().splitlines())}
    assert sorted(got) == [1, 2, 3, 4, 5, 7]  # one answer per non-blank line
    assert got[1] == {"line": 1, "id": "1", "room": "a", "reply": "1|?어먹 뭐 심점", "outcome": "replied"}
    assert got[2] == {"line": 2, "error": "not valid JSON"}
    assert got[3]["reply"] is None and got[3]["outcome"] == "self"
    assert got[4]["reply"] is None and got[4]["outcome"] == "duplicate"
    assert got[5] == {"line": 5, "error": "msg must be a string"}
    assert got[7] == {"line": 7, "id": "2", "room": "c", "reply": "1|리빨", "outcome": "replied"}

    dry = make_bridge(bc, tmp_path / "dry", send=False, responder=FakeResponder())
    out = io.StringIO()
    run_jsonl(dry, io.StringIO(json.dumps({"room": "a", "sender": "s", "msg": "hi"}) + "\n"), out, threading.Event())
    assert json.loads(out.getvalue()) == {"line": 1, "room": "a", "reply": None, "outcome": "dry"}


def test_jsonl_followed_file_resumes_after_restart(tmp_path) -> None:
    feed = tmp_path / "feed.jsonl"
    offset = tmp_path / "mem" / "jsonl_offset.json"

    def line(i: int) -> str:
        return json.dumps({"room": "r", "sender": "s", "msg": f"메시지{i}"}, ensure_ascii=False) + "\n"

    feed.write_text(line(0), encoding="utf-8")

    def run(first_expected: int, append: list[int]) -> list[dict]:
        bridge = make_bridge(bridge_cfg(transport="jsonl"), tmp_path / "mem", send=True, responder=FakeResponder())
        out, stop = io.StringIO(), threading.Event()
        t = threading.Thread(target=run_jsonl, args=(bridge, None, out, stop),
                             kwargs={"follow": feed, "offset_file": offset})
        t.start()
        try:
            assert wait_until(lambda: len(out.getvalue().splitlines()) >= first_expected, timeout=5)
            for i in append:  # appended while running: picked up (one at a time, so each sees the last reply)
                n = len(out.getvalue().splitlines())
                with open(feed, "a", encoding="utf-8") as fh:
                    fh.write(line(i))
                assert wait_until(lambda: len(out.getvalue().splitlines()) > n, timeout=5)
        finally:
            stop.set()
            t.join(5)
        return [json.loads(x) for x in out.getvalue().splitlines()]

    first = run(1, [1, 2])
    assert [o["reply"] for o in first] == ["1|0지시메", "3|1지시메", "5|2지시메"]
    with open(feed, "a", encoding="utf-8") as fh:  # written while the bridge was down
        fh.write(line(3))
    second = run(1, [])
    assert [o["reply"] for o in second] == ["7|3지시메"]  # old lines are not answered again; memory continued


def test_repo_gen_yaml_bridge_section_loads(project) -> None:
    bc = load_config(project / "configs").gen.bridge
    assert bc.transport == "kakao-skill" and bc.host == "127.0.0.1"
    assert bc.max_reply_chars <= 1000 and bc.request_timeout_s < 5 and bc.callback_after_s < bc.request_timeout_s
    assert isinstance(bc.dedupe_window_s, float) and bc.callback_hosts == ["*.kakao.com"] and bc.memory_archive is True
    assert bc.callback_allow_private is False and bc.request_read_timeout_s <= 10


def test_jsonl_back_pressure_on_one_room_does_not_deadlock(tmp_path) -> None:
    """A full pool blocks reading; the worker must still be able to store its reply in the same room."""
    bc = bridge_cfg(transport="jsonl", workers=1, queue_limit=0)
    bridge = make_bridge(bc, tmp_path, send=True, responder=FakeResponder(delay=0.02))
    inp = io.StringIO("".join(json.dumps({"room": "한방", "sender": "s", "msg": f"m{i}", "id": i}) + "\n"
                              for i in range(6)))
    out = io.StringIO()
    t = threading.Thread(target=run_jsonl, args=(bridge, inp, out, threading.Event()), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "deadlocked"
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert sorted(o["line"] for o in got) == [1, 2, 3, 4, 5, 6] and all(o["outcome"] == "replied" for o in got)
