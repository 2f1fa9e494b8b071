"""serve: the OpenAI-compatible API, driven by the official ``openai`` client (and raw httpx for malformed input)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time

import httpx
import openai
import pytest

from tests.support.serve import API_KEY, FakeResponder, running, serve_project, wait_until


def client(srv, key: str = API_KEY, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=10, **kw)


def test_completion_non_streaming_and_models(tmp_path, caplog):
    cfg = serve_project(tmp_path)
    fake = FakeResponder()
    caplog.set_level(logging.INFO, logger="chatbot.serve")
    with running(cfg, fake) as srv:
        c = client(srv)
        models = c.models.list()
        assert [m.id for m in models.data] == ["model_latest"]
        r = c.chat.completions.create(model="model_latest", messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "안녕 반가워"},
            {"role": "assistant", "content": "응"},
            {"role": "user", "content": [{"type": "text", "text": "뭐해"}], "name": "민수"},
        ], temperature=0.3, top_p=0.5, max_completion_tokens=20, seed=42)
        assert r.object == "chat.completion" and r.model == "model_latest"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == "3|해뭐"  # three turns reached the model, the system one did not
        assert r.choices[0].finish_reason == "stop"
        assert r.usage.completion_tokens == 4 and r.usage.prompt_tokens > 0
        assert r.usage.total_tokens == r.usage.prompt_tokens + 4
        history, sampling, seed = fake.calls[-1]
        assert history == [("user", "안녕 반가워"), ("bot", "응"), ("user", "뭐해")]
        assert (sampling.temperature, sampling.top_p, sampling.max_new_tokens, seed) == (0.3, 0.5, 20, 42)
        assert sampling.top_k == cfg.gen.sampling.top_k  # everything not in the request comes from gen.yaml

        r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "abcdef"}], max_tokens=3,
                                      stop=["z"])
        assert r.choices[0].message.content == "1|f" and r.choices[0].finish_reason == "length"
        r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "abcdef"}], stop=["dc", "q"])
        assert r.choices[0].message.content == "1|fe" and r.choices[0].finish_reason == "stop"
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "chatbot.serve"]
    assert any(line.startswith("POST /v1/chat/completions status=200") and "tokens=" in line for line in lines)
    assert not any("안녕" in line or "abcdef" in line or API_KEY in line for line in lines)  # no text, no key


def test_streaming_chunks_usage_and_done(tmp_path):
    cfg = serve_project(tmp_path)
    with running(cfg, FakeResponder(step_s=0.01)) as srv:
        stream = client(srv).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}], stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        pieces = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
        assert "".join(pieces) == "1|olleh" and len(pieces) >= 3  # streamed piece by piece
        finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
        assert finals == ["stop"]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7
        assert len({ch.id for ch in chunks}) == 1 and all(ch.object == "chat.completion.chunk" for ch in chunks)

        # raw wire: server-sent events ending with data: [DONE]
        with httpx.stream("POST", srv.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                          json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            body = resp.read().decode()
        events = [e for e in body.split("\n\n") if e]
        assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
        assert "usage" not in json.loads(events[0][6:])  # only with stream_options.include_usage


def test_wrong_or_missing_key_is_401(tmp_path):
    cfg = serve_project(tmp_path)
    with running(cfg, FakeResponder()) as srv:
        with pytest.raises(openai.AuthenticationError) as err:
            client(srv, key="sk-wrong-key").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}])
        assert err.value.status_code == 401
        body = err.value.body
        assert body["code"] == "invalid_api_key" and body["type"] == "authentication_error"
        assert "sk-wrong-key" not in json.dumps(body)
        r = httpx.get(srv.url + "/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        ok = httpx.get(srv.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200
        assert httpx.get(srv.url + "/healthz").json()["auth"] is True  # health needs no key


BAD_BODIES = [
    (b"{not json", None),
    (b"[1, 2]", None),
    (json.dumps({"messages": []}).encode(), "messages"),
    (json.dumps({"messages": "hi"}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(), "messages[0].role"),
    (json.dumps({"messages": [{"role": "system", "content": "only a system message"}]}).encode(), "messages"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
     .encode(), "messages[0].content"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 5}).encode(), "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(), "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 2}).encode(), "n"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}).encode(), "stop"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}).encode(), "stream"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}],
                 "tools": [{"type": "function", "function": {"name": "f"}}]}).encode(), "tools"),
]


def test_malformed_bodies_are_400_with_the_openai_error_shape(tmp_path):
    cfg = serve_project(tmp_path)
    fake = FakeResponder()
    with running(cfg, fake) as srv:
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        with httpx.Client(base_url=srv.url, headers=headers) as h:
            for body, param in BAD_BODIES:
                r = h.post("/v1/chat/completions", content=body)
                assert r.status_code == 400, body
                err = r.json()["error"]
                assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"
                assert err["param"] == param and err["message"]
            assert h.post("/v1/nowhere", content=b"{}").json()["error"]["type"] == "invalid_request_error"
        # the official client turns them into BadRequestError, e.g. function calling
        with pytest.raises(openai.BadRequestError) as err:
            client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], tools=[
                {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}])
        assert "tools" in err.value.body["message"]
    assert fake.calls == []  # nothing malformed reached the model


def test_body_size_limit_and_header_deadline(tmp_path):
    cfg = serve_project(tmp_path, serve={"max_body_bytes": 1024, "header_timeout_s": 0.5})
    with running(cfg, FakeResponder()) as srv:
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(srv.url + "/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        # a client that never finishes its headers is disconnected (slowloris)
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 3
        s.close()


def test_full_pool_is_503_with_retry_after(tmp_path):
    cfg = serve_project(tmp_path, serve={"workers": 1, "queue_limit": 0})
    fake = FakeResponder(step_s=0.02, forever=True)
    with running(cfg, fake) as srv:
        c = client(srv)
        stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}], stream=True)
        next(iter(stream))  # the only worker is busy now
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}])
        assert err.value.status_code == 503 and int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.body["code"] == "overloaded"
        stream.close()


def test_disconnecting_streaming_client_frees_the_worker(tmp_path):
    cfg = serve_project(tmp_path, serve={"workers": 1, "queue_limit": 0})
    fake = FakeResponder(step_s=0.1, forever=True)  # 64 tokens: ~6 s for the whole reply
    with running(cfg, fake) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"messages": [{"role": "user", "content": "tell me everything"}], "stream": True}),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read1(64).startswith(b"data: ")
        assert wait_until(lambda: fake.active == 1)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()  # the client goes away mid-reply
        t0 = time.monotonic()
        assert wait_until(lambda: fake.active == 0 and srv.state.engine.pool.pending == 0, timeout=5)
        assert time.monotonic() - t0 < 2  # stopped long before the reply's end
        # the worker takes the next request at once
        r = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}],
                                                max_tokens=3)
        assert r.choices[0].message.content.startswith("1|x")


def test_no_key_refuses_to_start_unless_no_auth_on_loopback(tmp_path):
    from chatbot.errors import ChatbotError
    from chatbot.serve import api_key_check

    cfg = serve_project(tmp_path, key=False)
    with pytest.raises(ChatbotError, match="api-key"):
        api_key_check(cfg, "127.0.0.1", no_auth=False)
    with pytest.raises(ChatbotError, match="only allowed on this machine"):
        api_key_check(cfg, "0.0.0.0", no_auth=True)
    assert api_key_check(cfg, "127.0.0.1", no_auth=True) is None
    with running(cfg, FakeResponder(), no_auth=True) as srv:
        r = client(srv, key="anything").chat.completions.create(model="m", messages=[{"role": "user", "content": "ab"}])
        assert r.choices[0].message.content == "1|ba"


def test_request_and_body_deadlines(tmp_path):
    cfg = serve_project(tmp_path, serve={"request_timeout_s": 0.5, "body_timeout_s": 0.5, "workers": 1})
    fake = FakeResponder(step_s=0.1, forever=True)  # a whole reply would take ~6 s
    with running(cfg, fake) as srv:
        t0 = time.monotonic()
        r = client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "long"}])
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("1|gnol")
        assert time.monotonic() - t0 < 3  # cut off at the deadline, not after the whole reply
        # a body that never arrives in full: 408 after body_timeout_s
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"mess")
        s.settimeout(5)
        head = b""
        while part := s.recv(4096):  # the server closes the connection after its answer
            head += part
        s.close()
        assert head.startswith(b"HTTP/1.1 408") and b'"code":"timeout"' in head
