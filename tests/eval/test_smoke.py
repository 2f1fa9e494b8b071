"""smoke: passes and is deterministic on a sane model, fails with one line on broken ones, needs the password."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import chatbot.security as security
from chatbot.errors import ChatbotError
from chatbot.infer.prompt import TokenIds
from chatbot.eval.smoke import check_reply, smoke

from tests.support.gen import (byte_token, chatty_bias, constant_bias, password_env, shaped_model, tiny_tokenizer,
                               write_checkpoint)
from tests.support.workspace import make_workspace

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = re.compile(r"^    \[.*\]$|^smoke ok: .*$", re.M)


def project(tmp_path: Path, monkeypatch, bias, **gen):
    cfg = make_workspace(tmp_path, gen=gen or None, password=True)
    write_checkpoint(cfg, shaped_model(bias))
    password_env(monkeypatch)
    return cfg


def test_smoke_passes_on_a_good_model_and_is_deterministic(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = project(tmp_path, monkeypatch, chatty_bias(tiny_tokenizer()))
    assert smoke(cfg) == 0
    first = capsys.readouterr()
    assert smoke(cfg) == 0
    second = capsys.readouterr()
    assert first.err == "" and "smoke ok: 3 replies" in first.out
    for prompt in cfg.gen.smoke.prompts:
        assert f"나: {prompt}\n" in first.out
    replies = re.findall(r"^상대: (.*)$", first.out, re.M)
    assert len(replies) == 3 and all(replies) and len(set(replies)) == 3
    assert "confidence" in first.out and "first token" in first.out
    assert TIMING.sub("", first.out) == TIMING.sub("", second.out)  # same transcript, only timings differ


def test_smoke_fails_when_the_model_only_ends_turns(tmp_path: Path, monkeypatch, capsys) -> None:
    ids = TokenIds.from_tokenizer(tiny_tokenizer())
    cfg = project(tmp_path, monkeypatch, constant_bias(ids.eot))
    assert smoke(cfg) == 1
    err = capsys.readouterr().err
    assert err == "smoke failed: reply 1 is empty\n"


def test_smoke_fails_when_the_model_starts_someone_elses_turn(tmp_path: Path, monkeypatch, capsys) -> None:
    ids = TokenIds.from_tokenizer(tiny_tokenizer())
    cfg = project(tmp_path, monkeypatch, constant_bias(ids.speakers["S3"]))
    assert smoke(cfg) == 1
    assert capsys.readouterr().err == "smoke failed: reply 1 is empty\n"


def test_smoke_fails_when_the_model_repeats_itself(tmp_path: Path, monkeypatch, capsys) -> None:
    tok = tiny_tokenizer()
    cfg = project(tmp_path, monkeypatch, constant_bias(byte_token(tok, b"x")), sampling={"max_new_tokens": 8})
    assert smoke(cfg) == 1
    out = capsys.readouterr()
    assert "상대: xxxxxxxx\n" in out.out
    assert out.err == "smoke failed: reply 2 repeats the previous reply verbatim\n"


def test_smoke_fails_when_a_reply_is_too_slow(tmp_path: Path, monkeypatch, capsys) -> None:
    cfg = project(tmp_path, monkeypatch, chatty_bias(tiny_tokenizer()), smoke={"max_latency_s": 1e-6})
    assert smoke(cfg) == 1
    err = capsys.readouterr().err
    assert err.startswith("smoke failed: reply 1 took ") and "max_latency_s" in err and err.count("\n") == 1


@pytest.mark.parametrize("text, reason", [
    ("", "is empty"),
    ("  \n", "is empty"),
    ("hi <|eot|>", "leaks"),
    ("<|spk:S2|> hi", "leaks"),
    ("see <|photo|>", "leaks"),
    ("marker \ue000url\ue001", "leaks"),
    ("broken \ufffd", "not valid UTF-8"),
    ("surrogate \udcff", "not valid UTF-8"),
    ("same as before", "repeats"),
])
def test_check_reply_reasons(text: str, reason: str) -> None:
    assert reason in check_reply(text, "same as before")


def test_check_reply_accepts_a_normal_reply() -> None:
    assert check_reply("응 나도 배고파 ㅋㅋ <3", "뭐해?") is None
    assert check_reply("안녕", None) is None


def test_smoke_needs_the_password(tmp_path: Path, monkeypatch) -> None:
    cfg = project(tmp_path, monkeypatch, chatty_bias(tiny_tokenizer()))
    monkeypatch.setattr(security, "WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.setattr("chatbot.eval.smoke.load_responder", lambda cfg: pytest.fail("model loaded before the gate"))
    monkeypatch.delenv("CHATBOT_ACCESS_PASSWORD")
    with pytest.raises(ChatbotError, match="password required"):
        smoke(cfg)
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "not-it")
    with pytest.raises(ChatbotError, match="wrong password"):
        smoke(cfg)
