"""Bridge hardening (issue 11, items 1-6): every malformed body gets a 4xx JSON answer, slow clients meet a total
deadline and a per-address connection cap, callbacks go only to allowed public hosts within a total deadline,
--send needs a shared secret (header or path segment, ASCII, compared as bytes), and a connection reset is one short
log line. Real sockets on 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import struct
import threading
import time

import pytest
import yaml
from tests.support.bridge import (LOOPBACK_CALLBACKS, CallbackServer, FakeResponder, request, running_bridge,
                                  skill_payload, wait_until)

from chatbot.bridge import callback as cbmod
from chatbot.config import BridgeConfig, ConfigError, load_config
from chatbot.errors import ChatbotError

RELAY_MSG = {"room": "r", "sender": "s", "msg": "안녕"}


# ------------------------------------------------------------------------------------------- 1. null bodies
@pytest.mark.parametrize("transport, path", [("relay", "/relay"), ("kakao-skill", "/skill")])
@pytest.mark.parametrize("body", [b"null", b" null ", b"\xef\xbb\xbfnull", b"true", b"0", b"{}"])
def test_json_null_and_other_non_objects_get_a_4xx_json_answer(tmp_path, transport, path, body) -> None:
    with running_bridge(tmp_path, transport=transport) as rb:
        r = request(rb.port, "POST", path, raw=body)
        assert r.status == 400 and "error" in r.json and r.outcome == "rejected"
        assert rb.get("/healthz").status == 200


# ------------------------------------------------------------------------------------------- 2. slow clients
def _dribble(port: int, data: bytes, every: float, limit: float, source: str = "127.0.0.1") -> tuple[bytes, float]:
    """Send ``data`` one byte per ``every`` seconds until the server answers or closes (at most ``limit`` s).
    Returns (what the server sent, seconds until it did)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=limit, source_address=(source, 0)) as s:
        s.settimeout(every)
        got = b""
        for byte in data:
            try:
                s.sendall(bytes([byte]))
            except OSError:  # closed by the server
                break
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                if time.monotonic() - t0 > limit:
                    break
                continue
            except OSError:
                break
            got += chunk
            break
        s.settimeout(max(0.1, limit - (time.monotonic() - t0)))
        try:
            while chunk := s.recv(4096):
                got += chunk
        except OSError:
            pass
    return got, time.monotonic() - t0


SLOW_HEADERS = b"POST /relay HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"


def test_a_client_dribbling_headers_gets_408_at_the_total_deadline(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with running_bridge(tmp_path, transport="relay", request_read_timeout_s=1.0) as rb:
        # one byte every 0.25 s: each read is far within any per-read timeout, the whole request never arrives
        got, took = _dribble(rb.port, SLOW_HEADERS, every=0.25, limit=5.0)
        assert got.startswith(b"HTTP/1.1 408 "), got[:60]
        assert 0.9 <= took < 3.5  # generous for a loaded CI machine; without the deadline it runs to the limit
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"].startswith("request not received in time")
        assert rb.post("/relay", RELAY_MSG).status == 200  # the server is fine
    assert "status=408" in caplog.text and "Traceback" not in caplog.text


def test_a_client_dribbling_the_body_gets_408_at_the_total_deadline(tmp_path) -> None:
    body = json.dumps(RELAY_MSG).encode()
    head = (b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body))
    with running_bridge(tmp_path, transport="relay", request_read_timeout_s=1.0) as rb:
        with socket.create_connection(("127.0.0.1", rb.port), timeout=5) as s:
            s.sendall(head)  # the headers arrive at once, then the body byte by byte
            t0 = time.monotonic()
            got = b""
            s.settimeout(0.25)
            for byte in body:
                try:
                    s.sendall(bytes([byte]))
                    got += s.recv(4096)
                    break
                except socket.timeout:
                    continue
                except OSError:
                    break
            took = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408 ") and took < 3.5  # the dribble alone would take ~12 s
        assert rb.responder.calls == []


def test_an_idle_keep_alive_connection_is_not_a_slow_request(tmp_path) -> None:
    """The deadline starts with a request's first byte: a keep-alive pause between requests is not counted."""
    import http.client

    with running_bridge(tmp_path, transport="relay", request_read_timeout_s=0.5) as rb:
        conn = http.client.HTTPConnection("127.0.0.1", rb.port, timeout=5)
        try:
            for i in range(2):
                conn.request("POST", "/relay", body=json.dumps({**RELAY_MSG, "msg": f"m{i}"}),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                assert r.status == 200
                r.read()
                if i == 0:
                    time.sleep(0.8)  # longer than the request deadline
        finally:
            conn.close()


def _can_bind(addr: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((addr, 0))
        return True
    except OSError:
        return False


def test_dribblers_from_one_address_cannot_exhaust_the_connection_pool(tmp_path) -> None:
    """Slow-loris: many slow connections from one address hold at most max_connections_per_client slots."""
    other = "127.0.0.2"
    with running_bridge(tmp_path, transport="relay", max_connections=8, max_connections_per_client=3,
                        request_read_timeout_s=3.0) as rb:
        held = []
        try:
            for _ in range(10):  # each sends part of a request line and then nothing
                s = socket.create_connection(("127.0.0.1", rb.port), timeout=3)
                s.sendall(b"POS")
                held.append(s)
            refused = []
            for s in held:
                s.settimeout(0.3)
                try:
                    refused.append(s.recv(4096).startswith(b"HTTP/1.1 503 "))
                except socket.timeout:
                    refused.append(False)
            assert refused.count(False) == 3  # 3 held by the server, 7 refused at once
            assert sum(refused) == 7
            if _can_bind(other):  # another client address is still served while the dribblers hold their slots
                r = request_from(other, rb.port, "/relay", RELAY_MSG)
                assert r == 200
        finally:
            for s in held:
                s.close()
        assert wait_until(lambda: rb.post("/relay", {**RELAY_MSG, "msg": "again"}).outcome in ("replied", "duplicate"),
                          timeout=5)  # the address is served again once its slow connections are gone


def request_from(source: str, port: int, path: str, obj: dict) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        conn.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_connection_limits_are_validated_config_keys(project) -> None:
    gen = project / "configs" / "gen.yaml"
    data = yaml.safe_load(gen.read_text(encoding="utf-8"))
    bc = load_config(project / "configs").gen.bridge
    assert 1 <= bc.request_read_timeout_s <= 10 and bc.max_connections_per_client < bc.max_connections
    data["bridge"]["request_read_timeout_s"] = 0
    gen.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="bridge.request_read_timeout_s"):
        load_config(project / "configs")


# ---------------------------------------------------------------------------------------- 3. callback SSRF
def test_default_callback_hosts_are_kakao_only() -> None:
    bc = BridgeConfig()
    assert bc.callback_allow_private is False
    assert cbmod.host_allowed("bot-api.kakao.com", bc.callback_hosts)
    assert cbmod.host_allowed("BOT-API.KAKAO.COM.", bc.callback_hosts)
    for host in ("127.0.0.1", "localhost", "kakao.com.evil.example", "evilkakao.com", "example.com", ""):
        assert not cbmod.host_allowed(host, bc.callback_hosts), host
    assert cbmod.host_allowed("anything.example", ["*"])
    assert cbmod.host_allowed("x.y.example", ["*.example"]) and not cbmod.host_allowed("example", ["*.example"])
    assert cbmod.host_allowed("::1", ["[::1]"]) and cbmod.host_allowed("::1", ["::1"])


@pytest.mark.parametrize("addr", ["127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.0.10", "169.254.169.254",
                                  "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255",
                                  "240.0.0.1", "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1",
                                  "2002:7f00:1::1", "64:ff9b::a00:1"])
def test_non_public_addresses_are_refused(addr) -> None:
    assert not cbmod.address_public(addr)


def test_public_addresses_are_allowed() -> None:
    assert cbmod.address_public("8.8.8.8") and cbmod.address_public("2001:4860:4860::8888")


def test_default_config_refuses_a_callback_to_this_machine(tmp_path) -> None:
    """The reported attack: callbackUrl = http://127.0.0.1:<port>/internal/... made the bridge POST there."""
    with CallbackServer() as cb, running_bridge(tmp_path, FakeResponder(delay=0.2), transport="kakao-skill",
                                                callback_after_s=0.0) as rb:
        r = rb.post("/skill", skill_payload("안녕", callback_url=cb.url()))
        assert r.status == 400 and "callback_hosts" in r.json["error"]
        assert "127.0.0.1" not in r.json["error"]  # the URL is never echoed
    with CallbackServer() as cb, running_bridge(tmp_path / "any", FakeResponder(delay=0.2), transport="kakao-skill",
                                                callback_after_s=0.0, callback_hosts=["*"]) as rb:
        r = rb.post("/skill", skill_payload("안녕", callback_url=cb.url()))  # any host, but not a private address
        assert r.status == 400 and "callback_allow_private" in r.json["error"]
        assert rb.responder.calls == []
    assert cb.received == []


def test_a_host_name_resolving_to_a_private_address_is_refused_after_dns(tmp_path, caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")

    def fake_dns(host, port, *a, **k):  # the attacker's DNS answers with this machine's address
        assert host == "bot-api.kakao.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(cbmod, "_getaddrinfo", fake_dns)
    with CallbackServer() as cb:
        port = cb.httpd.server_address[1]
        url = f"http://bot-api.kakao.com:{port}/v1/callback/t-1"
        with running_bridge(tmp_path, FakeResponder(delay=0.1), transport="kakao-skill", callback_after_s=0.0) as rb:
            assert rb.post("/skill", skill_payload("하나", callback_url=url)).json["useCallback"] is True
            assert wait_until(lambda: "outcome=callback_refused" in caplog.text)
        assert cb.received == []
        # explicitly allowed: the POST goes to the address that was checked (no second DNS lookup), Host unchanged
        with running_bridge(tmp_path / "b", FakeResponder(delay=0.1), transport="kakao-skill", callback_after_s=0.0,
                            callback_allow_private=True) as rb:
            assert rb.post("/skill", skill_payload("둘", callback_url=url)).json["useCallback"] is True
            assert cb.event.wait(5)
        assert cb.received[0][0] == "/v1/callback/t-1"


class DribblingServer:
    """Accepts one connection, reads the request, then answers one byte every ``every`` seconds, forever."""

    def __init__(self, every: float = 0.1, payload: bytes = b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 10000):
        self.payload = payload
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1/callback/slow"

    def _run(self) -> None:
        self.sock.settimeout(10)
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(1)
            try:
                conn.recv(65536)
                for byte in self.payload:
                    if self.stop.wait(self.every):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                return

    def __enter__(self) -> "DribblingServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)


def test_a_dribbling_callback_server_cannot_hold_a_worker_past_the_deadline(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with DribblingServer(every=0.1) as slow, running_bridge(
            tmp_path, FakeResponder(), transport="kakao-skill", callback_after_s=0.0, callback_timeout_s=1.0,
            workers=1, **LOOPBACK_CALLBACKS) as rb:
        rb.bridge.ewma_gen_s = 5.0  # answer useCallback at once
        t0 = time.monotonic()
        assert rb.post("/skill", skill_payload("느린 콜백", callback_url=slow.url)).json["useCallback"] is True
        assert wait_until(lambda: "outcome=callback_failed" in caplog.text, timeout=6)
        assert time.monotonic() - t0 < 4.0  # the dribbling answer alone would take over 1000 s
        assert wait_until(lambda: rb.bridge.pool.pending == 0, timeout=1)  # the worker is free again
    line = next(m for m in caplog.messages if "outcome=callback_failed" in m)
    assert "via=callback:timeout" in line


@pytest.mark.parametrize("scheme, payload", [
    ("http", b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000),
    ("https", b"\x16\x03\x03\x40\x00" + b"z" * 1000),  # a TLS record header, then its body byte by byte
], ids=["http", "https"])
def test_post_json_has_a_total_deadline(scheme, payload) -> None:
    with DribblingServer(every=0.05, payload=payload) as slow:
        url = slow.url.replace("http:", f"{scheme}:")
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            cbmod.post_json(url, {"x": 1}, timeout=0.6, allow_private=True)
        assert time.monotonic() - t0 < 3.0  # the dribbling answer alone would take ~50 s
        with pytest.raises(cbmod.CallbackRefused):  # the same address without the explicit permission
            cbmod.post_json(url, {"x": 1}, timeout=0.6)


@pytest.mark.parametrize("key, value", [("callback_timeout_s", 120), ("callback_timeout_s", 0),
                                        ("callback_hosts", ["https://bot-api.kakao.com/"]),
                                        ("callback_hosts", ["*kakao.com"]), ("callback_hosts", ["bot-api.kakao.com:443"])])
def test_callback_keys_are_validated(project, key, value) -> None:
    gen = project / "configs" / "gen.yaml"
    data = yaml.safe_load(gen.read_text(encoding="utf-8"))
    data["bridge"][key] = value
    gen.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match=f"bridge.{key}"):
        load_config(project / "configs")


# -------------------------------------------------------------------------------------- 4. --send and the secret
def _project_with(project, transport: str, secret: str | None = None):
    gen = project / "configs" / "gen.yaml"
    data = yaml.safe_load(gen.read_text(encoding="utf-8"))
    data["bridge"]["transport"] = transport
    if secret is not None:
        data["bridge"]["shared_secret"] = secret
    gen.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_config(project / "configs")


@pytest.mark.parametrize("transport", ["relay", "kakao-skill"])
def test_send_on_http_without_a_secret_refuses_to_start(project, transport, monkeypatch) -> None:
    from chatbot.bridge import run_bridge

    monkeypatch.setattr("chatbot.security.require_password", lambda cfg: pytest.fail("gate reached"))
    cfg = _project_with(project, transport)
    with pytest.raises(ChatbotError) as exc:
        run_bridge(cfg, send=True)
    msg = str(exc.value)
    assert "\n" not in msg and "shared_secret" in msg and "bridge-secret" in msg and "--dry" in msg


def test_dry_and_jsonl_run_without_a_secret(project, monkeypatch) -> None:
    from chatbot.bridge import run_bridge

    class Gate(Exception):
        pass

    def gate(cfg):
        raise Gate

    monkeypatch.setattr("chatbot.security.require_password", gate)
    with pytest.raises(Gate):  # past the secret check: the password gate is next
        run_bridge(_project_with(project, "relay"), send=False)
    with pytest.raises(Gate):
        run_bridge(_project_with(project, "jsonl"), send=True)


def test_bridge_secret_verb_writes_a_random_secret_into_env(project, capsys) -> None:
    from chatbot.ops import main

    env = project / ".env"
    env.write_text("# mine\nCHATBOT_PASSWORD=pw-keep-me\n", encoding="utf-8")
    assert main(["bridge-secret", "--config-dir", str(project / "configs")]) == 0
    text = env.read_text(encoding="utf-8")
    assert text.startswith("# mine\nCHATBOT_PASSWORD=pw-keep-me\n")
    secret = load_config(project / "configs").gen.bridge.shared_secret
    assert len(secret) >= 40 and f"CHATBOT_BRIDGE_SECRET={secret}" in text
    if os.name == "posix":
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
    out = capsys.readouterr()
    assert secret not in out.out + out.err and ".env" in out.out
    # a second run keeps the existing secret unless told to replace it
    assert main(["bridge-secret", "--config-dir", str(project / "configs")]) == 2
    assert "--replace" in capsys.readouterr().err
    assert main(["bridge-secret", "--replace", "--config-dir", str(project / "configs")]) == 0
    new = load_config(project / "configs").gen.bridge.shared_secret
    assert new != secret and env.read_text(encoding="utf-8").count("CHATBOT_BRIDGE_SECRET=") == 1


def test_secret_as_path_segment_or_header(tmp_path) -> None:
    secret = "Zk3-path_segment.secret~42"
    with running_bridge(tmp_path, transport="relay", shared_secret=secret, dedupe_window_s=0) as rb:
        assert rb.post(f"/relay/{secret}", RELAY_MSG).status == 200
        assert rb.post("/relay", RELAY_MSG, headers={"X-Bridge-Secret": secret}).status == 200
        for path in ("/relay", "/relay/", "/relay/wrong", f"/relay/{secret}x", f"/relay/{secret[:-1]}",
                     f"/relay/{secret}/more", f"/relay/x/{secret}"):
            r = rb.post(path, RELAY_MSG)
            assert r.status == 401 and secret not in r.body.decode(), path
        assert rb.post(f"/relay/{secret}?a=1", RELAY_MSG).status == 200
        assert rb.post("/skill/" + secret, RELAY_MSG).status == 404  # only the configured transport's route
    with running_bridge(tmp_path / "k", transport="kakao-skill", shared_secret=secret) as rb:
        assert rb.post(f"/skill/{secret}", skill_payload("안녕")).status == 200
    with running_bridge(tmp_path / "n", transport="relay") as rb:  # no secret configured: no secret routes
        assert rb.post("/relay/anything", RELAY_MSG).status == 404


def test_secret_header_is_compared_as_raw_bytes(tmp_path) -> None:
    from tests.support.bridge import raw_exchange

    body = json.dumps(RELAY_MSG).encode()
    with running_bridge(tmp_path, transport="relay", shared_secret="abc-secret") as rb:
        def post(secret: bytes) -> bytes:
            return raw_exchange(rb.port, b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"X-Bridge-Secret: " + secret + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

        assert post(b"abc-secret").startswith(b"HTTP/1.1 200 ")
        assert post("abc-secret".encode("utf-16-le")).startswith(b"HTTP/1.1 401 ")
        assert post(b"abc-secre\xf4").startswith(b"HTTP/1.1 401 ")


@pytest.mark.parametrize("secret", ["비밀-한국어-시크릿", "has space inside", "tab\tinside", "é-accent-secret"])
def test_non_ascii_or_blank_secrets_are_refused_at_config_load(project, secret) -> None:
    with pytest.raises(ConfigError) as exc:
        _project_with(project, "relay", secret)
    assert "bridge.shared_secret" in str(exc.value) and "ASCII" in str(exc.value)
    assert secret not in str(exc.value)  # never echoed


# ------------------------------------------------------------------------------------------ 6. connection resets
def _reset(port: int, data: bytes) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    linger = struct.pack("HH" if os.name == "nt" else "ii", 1, 0)  # on, 0 s: close sends RST
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    s.sendall(data)
    time.sleep(0.02)
    s.close()


def test_client_resets_are_one_short_line_each(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    with running_bridge(tmp_path, transport="relay") as rb:
        for i in range(20):
            _reset(rb.port, b"POST /relay HTTP/1.1\r\nHost: x\r\n" if i % 2 else b"POST /rel")
        assert wait_until(lambda: rb.bridge.counts.get("client_reset", 0) == 20, timeout=5)
        assert rb.post("/relay", RELAY_MSG).status == 200
    records = [r for r in caplog.records if r.name == "chatbot.bridge"]
    resets = [r for r in records if "outcome=client_reset" in r.getMessage()]
    assert len(resets) == 20
    assert all(r.exc_info is None and r.levelno == logging.INFO for r in records)
    assert not any("outcome=error" in r.getMessage() for r in records)
    assert all(len(r.getMessage()) < 120 for r in resets)
