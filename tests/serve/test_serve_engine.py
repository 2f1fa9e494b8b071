"""serve with the real Responder (a tiny model), server-side conversation memory, graceful stop, the api-key verb
and the stop-string scanner."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import openai
import pytest

from tests.support.gen import PERSONA, chatty_bias, shaped_model, tiny_tokenizer
from tests.support.serve import API_KEY, FakeResponder, running, serve_project, wait_until
from tests.support.workspace import REPO

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")



def client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=API_KEY, max_retries=0, timeout=20)


def test_real_responder_streaming_matches_non_streaming(tmp_path):
    from chatbot.infer.responder import Responder
    from chatbot.infer.loading import Bundle

    cfg = serve_project(tmp_path)
    tok = tiny_tokenizer()
    responder = Responder(Bundle(shaped_model(chatty_bias(tok)), tok, PERSONA, tmp_path / "m.pt", 3), cfg.gen)
    messages = [{"role": "user", "content": "오늘 저녁 뭐 먹을까?"}]
    with running(cfg, responder) as srv:
        c = client(srv)
        full = c.chat.completions.create(model="m", messages=messages, seed=5, max_tokens=12)
        stream = c.chat.completions.create(model="m", messages=messages, seed=5, max_tokens=12, stream=True,
                                           stream_options={"include_usage": True})
        chunks = list(stream)
    text = full.choices[0].message.content
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text  # same seed, same reply, whether streamed or not
    assert full.usage.prompt_tokens == len(responder.prompt_ids([("user", messages[0]["content"])]))
    assert 1 <= full.usage.completion_tokens <= 12
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert full.choices[0].finish_reason in ("stop", "length")


def test_memory_keeps_each_conversation_on_the_server(tmp_path):
    cfg = serve_project(tmp_path, serve={"memory": True})
    fake = FakeResponder()
    with running(cfg, fake) as srv:
        c = client(srv)
        one = {"X-Conversation-Id": "conv-aaaaaaaa"}
        r1 = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], extra_headers=one)
        r2 = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "again"}], extra_headers=one)
        other = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "new"}],
                                          extra_headers={"X-Conversation-Id": "conv-bbbbbbbb"})
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                      extra_headers={"X-Conversation-Id": "../../etc"})
    assert r1.choices[0].message.content == "1|ih"
    assert fake.calls[1][0] == [("user", "hi"), ("bot", "1|ih"), ("user", "again")]  # context from the server
    assert r2.choices[0].message.content == "3|niaga" and other.choices[0].message.content == "1|wen"
    rooms = tmp_path / "data" / "bridge" / "serve" / "rooms"
    files = sorted(rooms.glob("*.json"))
    assert len(files) == 2 and not any("conv-" in f.name for f in files)  # ids are hashed in file names
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files)


def test_stop_finishes_in_flight_streams(tmp_path):
    cfg = serve_project(tmp_path)
    fake = FakeResponder(step_s=0.02)
    with running(cfg, fake) as srv:
        c = client(srv)
        got: dict = {}

        def read() -> None:
            stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "abcdefghijklmn"}],
                                               stream=True)
            got["text"] = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)

        t = threading.Thread(target=read)
        t.start()
        assert wait_until(lambda: fake.active == 1)
        srv.stop()  # like Ctrl+C: stop accepting, let the reply finish
        t.join(10)
    assert got["text"] == "1|nmlkjihgfedcba"


def test_api_key_command_shows_the_key_once_and_prints_its_hash(tmp_path):
    from chatbot.serve.auth import ApiKeyCheck

    out = subprocess.run([sys.executable, "-m", "chatbot.ops", "api-key"], capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert out.returncode == 0, out.stderr
    key = next(w for w in out.stderr.split() if w.startswith("sk-chatbot-"))
    line = out.stdout.strip()
    assert line.startswith("CHATBOT_API_KEY_HASH='scrypt$") and key not in out.stdout
    check = ApiKeyCheck(line.split("=", 1)[1].strip("'"))
    assert check.check(key) and check.check(key) and not check.check(key + "x")


def test_stop_scanner_holds_back_partial_stop_strings():
    from chatbot.serve.wire import StopScanner

    s = StopScanner(["END", "\n\n"])
    assert s.feed("hello E") == "hello "  # "E" may start END
    assert s.feed("N") == ""
    assert s.feed("x more") == "ENx more"
    assert s.feed(" and EN") == " and "
    assert s.feed("D tail") == "" and s.stopped
    assert s.text == "hello ENx more and "
    s2 = StopScanner(["zz"])
    assert s2.feed("abz") == "ab" and s2.finish() == "z" and s2.text == "abz"
