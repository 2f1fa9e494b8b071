"""Bridge HTTP transports on 127.0.0.1: Kakao skill protocol (inline, callback, dry), relay, filters, load shedding,
timeouts, logging privacy and graceful stop. The model is a fake responder (tests/support/bridge.py)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from tests.support.bridge import (LOOPBACK_CALLBACKS, CallbackServer, FakeResponder, request, running_bridge,
                                  skill_payload, wait_until)

from chatbot.bridge.server import stop_server


# --------------------------------------------------------------------------------------------- kakao-skill
def test_skill_payload_gets_golden_v2_simple_text(tmp_path) -> None:
    with running_bridge(tmp_path, FakeResponder(text="오늘은 집에 있어"), transport="kakao-skill") as rb:
        r = rb.post("/skill", skill_payload("뭐해?"))
        assert r.status == 200
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert r.body == (b'{"version": "2.0", "template": {"outputs": [{"simpleText": {"text": '
                          + "\"오늘은 집에 있어\"".encode() + b"}}]}}")
        assert r.outcome == "replied"
        # the context the model saw: just the new message; the reply is stored as the bot's turn
        assert rb.responder.calls == [[("user", "뭐해?")]]
        assert [(t["role"], t["text"]) for t in rb.room_turns("u-test-0001")] == [
            ("user", "뭐해?"), ("bot", "오늘은 집에 있어")]
        health = rb.get("/healthz")
        assert health.status == 200 and health.json["status"] == "ok" and health.json["mode"] == "send"


def test_skill_reply_respects_kakao_1000_char_limit(tmp_path) -> None:
    with running_bridge(tmp_path, FakeResponder(text="가" * 1500), transport="kakao-skill",
                        max_reply_chars=4000) as rb:
        text = rb.post("/skill", skill_payload("길게 말해줘")).json["template"]["outputs"][0]["simpleText"]["text"]
        assert text == "가" * 1000
    with running_bridge(tmp_path / "b", FakeResponder(text="나" * 50), transport="relay", max_reply_chars=20) as rb:
        assert rb.post("/relay", {"room": "r", "sender": "s", "msg": "안녕"}).json == {"reply": "나" * 20}


def test_skill_slow_reply_uses_callback_once(tmp_path) -> None:
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(delay=0.2), transport="kakao-skill",
                                                callback_after_s=0.05, **LOOPBACK_CALLBACKS) as rb:
        r = rb.post("/skill", skill_payload("늦게 답해도 돼", callback_url=cb.url()))
        assert r.status == 200 and r.json == {"version": "2.0", "useCallback": True}
        assert r.outcome == "callback"
        assert cb.event.wait(5)
        expected = "1|" + "늦게 답해도 돼"[::-1]
        assert wait_until(lambda: len(rb.room_turns("u-test-0001")) == 2)
        time.sleep(0.1)  # a second POST would show up here
        assert cb.received == [("/v1/callback/cb-1", {
            "version": "2.0", "template": {"outputs": [{"simpleText": {"text": expected}}]}})]
        bot_turn = rb.room_turns("u-test-0001")[1]
        assert (bot_turn["role"], bot_turn["text"]) == ("bot", expected)  # stored once the POST succeeded


def test_skill_callback_at_once_when_the_expected_wait_is_long(tmp_path) -> None:
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(delay=0.1), transport="kakao-skill",
                                                callback_after_s=2.0, **LOOPBACK_CALLBACKS) as rb:
        r = rb.post("/skill", skill_payload("빨리 와", callback_url=cb.url()))
        assert "template" in r.json  # 0.1 s < callback_after_s: answered inline
        rb.bridge.ewma_gen_s = 5.0  # as if the model had been slow: waiting callback_after_s would be wasted
        r = rb.post("/skill", skill_payload("또 물어볼게", callback_url=cb.url("cb-2")))
        assert r.json == {"version": "2.0", "useCallback": True}  # without the estimate: inline after 0.1 s
        assert cb.event.wait(5) and cb.received[0][0] == "/v1/callback/cb-2"


def test_skill_callback_failure_and_expiry_store_no_reply(tmp_path, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1/callback/x"
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(delay=0.2), transport="kakao-skill",
                                                callback_after_s=0.0, **LOOPBACK_CALLBACKS) as rb:
        assert rb.post("/skill", skill_payload("하나", callback_url=dead)).json["useCallback"] is True
        assert wait_until(lambda: "outcome=callback_failed" in caplog.text)
        monkeypatch.setattr("chatbot.bridge.transports.CALLBACK_VALID_S", 0.1)  # the reply comes after the URL expired
        assert rb.post("/skill", skill_payload("둘", callback_url=cb.url())).json["useCallback"] is True
        assert wait_until(lambda: "outcome=callback_expired" in caplog.text)
        assert [t["role"] for t in rb.room_turns("u-test-0001")] == ["user", "user"]  # nothing was delivered
    assert cb.received == []


def test_skill_fast_reply_with_callback_url_is_answered_inline(tmp_path) -> None:
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(), transport="kakao-skill",
                                                callback_after_s=2.0, **LOOPBACK_CALLBACKS) as rb:
        r = rb.post("/skill", skill_payload("빨리", callback_url=cb.url()))
        assert r.json["template"]["outputs"][0]["simpleText"]["text"] == "1|리빨"
    assert cb.received == []


def test_skill_callback_host_must_be_allowed(tmp_path) -> None:
    with running_bridge(tmp_path, transport="kakao-skill", callback_hosts=["bot-api.kakao.com"]) as rb:
        r = rb.post("/skill", skill_payload("안녕", callback_url="http://127.0.0.1:9/v1/cb"))
        assert r.status == 400 and "callback_hosts" in r.json["error"]
        assert rb.responder.calls == []


def test_dry_mode_sends_nothing(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(delay=0.2), send=False,
                                                transport="kakao-skill", callback_after_s=0.02,
                                                **LOOPBACK_CALLBACKS) as rb:
        r = rb.post("/skill", skill_payload("드라이런", callback_url=cb.url()))
        assert r.status == 200 and r.json == {"version": "2.0", "template": {"outputs": []}}  # not useCallback
        assert wait_until(lambda: "outcome=dry" in caplog.text)
        assert len(rb.responder.calls) == 1  # generation did run
    assert cb.received == []  # no callback POST in dry mode
    with running_bridge(tmp_path, FakeResponder(), send=False, transport="kakao-skill", dry_reply="(점검 중)") as rb:
        r = rb.post("/skill", skill_payload("두번째"))
        assert r.json["template"]["outputs"][0]["simpleText"]["text"] == "(점검 중)" and r.outcome == "dry"
        # dry never stores a bot turn: the room memory holds only what was really said
        assert [t["role"] for t in rb.room_turns("u-test-0001")] == ["user", "user"]
        assert rb.responder.calls[-1] == [("user", "드라이런"), ("user", "두번째")]
    with running_bridge(tmp_path / "relay", FakeResponder(), send=False, transport="relay") as rb:
        r = rb.post("/relay", {"room": "방", "sender": "철수", "msg": "안녕"})
        assert r.status == 204 and r.body == b"" and r.outcome == "dry"


def test_skill_without_callback_times_out_with_empty_template(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with running_bridge(tmp_path, FakeResponder(delay=0.4), transport="kakao-skill", request_timeout_s=0.1) as rb:
        r = rb.post("/skill", skill_payload("느린 질문"))
        assert r.status == 200 and r.json == {"version": "2.0", "template": {"outputs": []}}
        assert r.outcome == "timeout"
        assert wait_until(lambda: "outcome=timeout" in caplog.text)
        assert [t["role"] for t in rb.room_turns("u-test-0001")] == ["user"]  # undelivered reply not stored


# --------------------------------------------------------------------------------------------------- relay
def test_relay_round_trip_keeps_room_context(tmp_path) -> None:
    with running_bridge(tmp_path, transport="relay") as rb:
        r1 = rb.post("/relay", {"room": "가족방", "sender": "엄마", "msg": "밥 먹었어?"})
        assert r1.status == 200 and r1.json == {"reply": "1|?어었먹 밥"} and r1.outcome == "replied"
        r2 = rb.post("/relay", {"room": "가족방", "sender": "엄마", "msg": "언제 와", "id": 42})
        assert r2.json == {"reply": "3|와 제언"}  # user, bot, user
        assert rb.responder.calls[1] == [("user", "밥 먹었어?"), ("bot", "1|?어었먹 밥"), ("user", "언제 와")]
        other = rb.post("/relay", {"room": "회사", "sender": "팀장", "msg": "회의"})
        assert other.json == {"reply": "1|의회"}  # rooms do not share memory


def test_relay_memory_turns_bounds_the_context(tmp_path) -> None:
    with running_bridge(tmp_path, transport="relay", memory_turns=2) as rb:
        for i in range(4):
            rb.post("/relay", {"room": "r", "sender": "s", "msg": f"메시지 {i}"})
        assert rb.responder.calls[-1] == [("user", "메시지 2"), ("bot", "3|2 지시메"), ("user", "메시지 3")]


def test_no_self_replies_and_no_double_replies(tmp_path) -> None:
    with running_bridge(tmp_path, transport="relay", bot_names=["마이봇"], dedupe_window_s=30) as rb:
        own = rb.post("/relay", {"room": "r", "sender": " 마이봇 ", "msg": "내가 보낸 말"})
        assert own.status == 204 and own.outcome == "self"
        first = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "ㅋㅋ", "id": "m-1"})
        again = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "ㅋㅋ (edited)", "id": "m-1"})
        assert first.status == 200 and again.status == 204 and again.outcome == "duplicate"
        # no id: same room+sender+text within the window is a re-delivery
        a = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "진짜?"})
        b = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "진짜?"})
        assert (a.status, b.status, b.outcome) == (200, 204, "duplicate")
        # a platform timestamp makes the key exact: the same text at another time is a new message
        c = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "응", "ts": 1700000000})
        d = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "응", "ts": 1700000009})
        e = rb.post("/relay", {"room": "r", "sender": "영희", "msg": "응", "ts": 1700000009})
        assert (c.status, d.status, e.status) == (200, 200, 204)
        assert len(rb.responder.calls) == 4
    with running_bridge(tmp_path / "w0", transport="relay", dedupe_window_s=0) as rb:
        assert [rb.post("/relay", {"room": "r", "sender": "s", "msg": "응"}).status for _ in range(2)] == [200, 200]


def test_allowed_rooms_and_rate_limit(tmp_path) -> None:
    with running_bridge(tmp_path, transport="relay", rate_limit_per_minute=2) as rb:
        hashed = rb.bridge.store.room_hash("허용방2")
    with running_bridge(tmp_path, transport="relay", allowed_rooms=["허용방", hashed], rate_limit_per_minute=2) as rb:
        denied = rb.post("/relay", {"room": "다른방", "sender": "s", "msg": "안녕"})
        assert denied.status == 204 and denied.outcome == "not_allowed"
        assert rb.room_turns("다른방") == []  # not stored either
        by_hash = rb.post("/relay", {"room": "허용방2", "sender": "s", "msg": "해시로 허용"})
        assert by_hash.status == 200
        got = [rb.post("/relay", {"room": "허용방", "sender": "s", "msg": f"{i}번"}).outcome for i in range(4)]
        assert got == ["replied", "replied", "rate_limited", "rate_limited"]
        # rate-limited messages are context (they were said), just not answered
        assert [t["text"] for t in rb.room_turns("허용방") if t["role"] == "user"] == ["0번", "1번", "2번", "3번"]


def test_shared_secret_header(tmp_path) -> None:
    with running_bridge(tmp_path, transport="relay", shared_secret="s3cret-value") as rb:
        msg = {"room": "r", "sender": "s", "msg": "hi"}
        assert rb.post("/relay", msg).status == 401
        assert rb.post("/relay", msg, headers={"X-Bridge-Secret": "wrong"}).status == 401
        assert rb.post("/relay", msg, headers={"X-Bridge-Secret": "s3cret-value"}).status == 200
        assert rb.responder.calls == [[("user", "hi")]]


def test_generation_error_and_empty_reply(tmp_path) -> None:
    with running_bridge(tmp_path, FakeResponder(fail=True), transport="relay") as rb:
        r = rb.post("/relay", {"room": "r", "sender": "s", "msg": "hi"})
        assert r.status == 500 and r.outcome == "error"
        assert rb.get("/healthz").status == 200
    with running_bridge(tmp_path / "e", FakeResponder(text="   "), transport="kakao-skill") as rb:
        r = rb.post("/skill", skill_payload("hi"))
        assert r.json == {"version": "2.0", "template": {"outputs": []}} and r.outcome == "empty"


def test_relay_timeout_is_504_and_reply_not_stored(tmp_path) -> None:
    with running_bridge(tmp_path, FakeResponder(delay=0.3), transport="relay", request_timeout_s=0.05) as rb:
        r = rb.post("/relay", {"room": "r", "sender": "s", "msg": "늦어"})
        assert r.status == 504 and r.outcome == "timeout"
        assert rb.bridge.pool.drain(5)
        assert [t["role"] for t in rb.room_turns("r")] == ["user"]


# ------------------------------------------------------------------------------------------------- load
def test_overload_is_answered_503_with_retry_after(tmp_path) -> None:
    gate = threading.Event()
    with running_bridge(tmp_path, FakeResponder(gate=gate), transport="relay", workers=1, queue_limit=1,
                        request_timeout_s=5.0) as rb:
        results: dict[int, object] = {}

        def send(i: int) -> None:
            results[i] = rb.post("/relay", {"room": f"r{i}", "sender": "s", "msg": f"m{i}"})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(results) == 6)  # 1 generating + 1 queued; the rest are refused at once
        gate.set()
        for t in threads:
            t.join(5)
        statuses = [r.status for r in results.values()]
        assert sorted(statuses) == [200] * 2 + [503] * 6
        for r in results.values():
            if r.status == 503:
                assert int(r.headers["retry-after"]) >= 1 and r.outcome == "busy"
        assert len(rb.responder.calls) == 2
        refused = [i for i, r in results.items() if r.status == 503]
        assert all(rb.room_turns(f"r{i}") == [] for i in refused)  # not stored: a retry is a fresh message
        retry = rb.post("/relay", {"room": f"r{refused[0]}", "sender": "s", "msg": f"m{refused[0]}"})
        assert retry.status == 200


def test_healthz_before_the_model_is_loaded(tmp_path) -> None:
    from tests.support.bridge import bridge_cfg

    from chatbot.bridge import make_bridge
    from chatbot.bridge.server import start_server

    bridge = make_bridge(bridge_cfg(transport="relay"), tmp_path, send=True)
    server, _ = start_server(bridge, "127.0.0.1", 0)
    try:
        assert request(server.port, "GET", "/healthz").status == 503
        r = request(server.port, "POST", "/relay", {"room": "r", "sender": "s", "msg": "hi"})
        assert r.status == 503 and r.outcome == "not_ready" and "retry-after" in r.headers
        bridge.set_responder(FakeResponder())
        assert request(server.port, "GET", "/healthz").status == 200
        assert request(server.port, "POST", "/relay", {"room": "r", "sender": "s", "msg": "hi"}).status == 200
    finally:
        stop_server(server, bridge)


def test_graceful_stop_delivers_in_flight_replies(tmp_path) -> None:
    gate = threading.Event()
    with running_bridge(tmp_path, FakeResponder(gate=gate), transport="relay", workers=1, queue_limit=4) as rb:
        results: dict[int, object] = {}

        def send(i: int) -> None:
            results[i] = rb.post("/relay", {"room": "r", "sender": "s", "msg": f"m{i}"})

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        assert wait_until(lambda: rb.bridge.pool.pending == 3)
        stopped: list[bool] = []
        stopper = threading.Thread(target=lambda: stopped.append(stop_server(rb.server, rb.bridge, timeout=10)))
        stopper.start()
        assert wait_until(lambda: rb.bridge.stopping.is_set())
        gate.set()  # the generations were in flight while the stop began
        stopper.join(10)
        for t in threads:
            t.join(5)
        assert stopped == [True]
        assert sorted(r.status for r in results.values()) == [200, 200, 200]
        turns = rb.room_turns("r")
        assert sorted(t["text"] for t in turns if t["role"] == "bot") == sorted(
            r.json["reply"] for r in results.values())


# ------------------------------------------------------------------------------------------------ privacy
def test_logs_carry_room_hash_and_outcome_never_text(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with running_bridge(tmp_path, FakeResponder(text="비밀답장"), transport="relay") as rb:
        rb.post("/relay", {"room": "비밀방이름", "sender": "비밀보낸이", "msg": "비밀내용"})
        rb.post("/relay", {"room": "비밀방이름", "sender": "비밀보낸이"})  # rejected
        assert wait_until(lambda: "outcome=replied" in caplog.text)  # logged right after the answer is written
        lines = [r.getMessage() for r in caplog.records]
        line = next(m for m in lines if "outcome=replied" in m)
        assert f"room={rb.bridge.store.room_hash('비밀방이름')}" in line and "latency_ms=" in line
        assert not any("비밀" in m for m in lines)
        assert all("비밀" not in p.name for p in tmp_path.rglob("*"))  # file names are hashes
    caplog.clear()
    with running_bridge(tmp_path, FakeResponder(text="비밀답장"), transport="relay", log_text=True) as rb:
        rb.post("/relay", {"room": "비밀방이름", "sender": "s", "msg": "디버그내용"})
        assert wait_until(lambda: "outcome=replied" in caplog.text)  # logged right after the answer is written
        assert "디버그내용" in caplog.text and "비밀답장" in caplog.text and "비밀방이름" not in caplog.text


@pytest.mark.parametrize("transport", ["relay", "kakao-skill"])
def test_only_the_configured_endpoint_exists(tmp_path, transport) -> None:
    with running_bridge(tmp_path, transport=transport) as rb:
        other = "/skill" if transport == "relay" else "/relay"
        assert rb.post(other, {"room": "r", "sender": "s", "msg": "x"}).status == 404
        assert json.loads(rb.get("/nope").body)["error"] == "not found"
