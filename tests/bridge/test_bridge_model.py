"""The bridge end to end with a real tiny model (chatbot.infer.responder Responder over a 2-layer Transformer artifact):
``run_bridge`` itself (password gate, run lock, model loading, jsonl on stdin) and the relay endpoint."""

from __future__ import annotations

import io
import json
import sys

import pytest
from tests.support.bridge import running_bridge
from tests.support.gen import chatty_bias, password_env, shaped_model, tiny_tokenizer, write_artifact
from tests.support.workspace import make_workspace

from chatbot.bridge import run_bridge
from chatbot.errors import ChatbotError


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    cfg = make_workspace(tmp_path, gen={"bridge": {"transport": "jsonl"}}, password=True)
    write_artifact(cfg, shaped_model(chatty_bias(tiny_tokenizer())))
    password_env(monkeypatch)
    return cfg


def test_run_bridge_jsonl_with_a_real_model(cfg, monkeypatch, capsys) -> None:
    lines = [{"room": "친구방", "sender": "지민", "msg": "안녕 뭐해?", "id": "a1"},
             {"room": "친구방", "sender": "지민", "msg": "안녕 뭐해?", "id": "a1"}]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)))
    run_bridge(cfg, send=True)
    captured = capsys.readouterr()
    out = sorted((json.loads(x) for x in captured.out.splitlines()), key=lambda o: o["line"])
    assert [o["outcome"] for o in out] == ["replied", "duplicate"]
    assert isinstance(out[0]["reply"], str) and out[0]["reply"].strip() and "<|" not in out[0]["reply"]
    assert "안녕" not in captured.err and "친구방" not in captured.err  # stderr log: hashes and outcomes only
    assert "outcome=replied" in captured.err
    # the lock is released and the memory is on disk: a second run continues the room
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps({"room": "친구방", "sender": "지민", "msg": "그래"}) + "\n"))
    run_bridge(cfg, send=False)
    again = json.loads(capsys.readouterr().out)
    assert again["outcome"] == "dry" and again["reply"] is None


def test_run_bridge_refuses_without_the_password(cfg, monkeypatch) -> None:
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "not-the-password")
    monkeypatch.setattr("chatbot.security.WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.setattr("chatbot.infer.responder.load_responder", lambda cfg: pytest.fail("model loaded before the gate"))
    with pytest.raises(ChatbotError, match="wrong password"):
        run_bridge(cfg, send=True)


def test_relay_with_a_real_responder(cfg, tmp_path) -> None:
    from chatbot.infer.responder import load_responder

    responder = load_responder(cfg)
    with running_bridge(tmp_path / "mem", responder, transport="relay") as rb:
        first = rb.post("/relay", {"room": "r", "sender": "s", "msg": "오늘 저녁 뭐 먹을까?"})
        assert first.status == 200 and first.json["reply"].strip()  # chatty_bias: always some visible text
        second = rb.post("/relay", {"room": "r", "sender": "s", "msg": "치킨 시킬까"})
        assert second.status in (200, 204)
        turns = rb.room_turns("r")
        assert [t["text"] for t in turns if t["role"] == "user"] == ["오늘 저녁 뭐 먹을까?", "치킨 시킬까"]
        bot = [t["text"] for t in turns if t["role"] == "bot"]
        assert bot == [r.json["reply"] for r in (first, second) if r.status == 200]
