"""Malformed input at the bridge's HTTP endpoints: bad JSON, wrong shapes, missing fields, oversize bodies, wrong
content types, broken HTTP — answered 400/401/404/411/413/415/501 without crashing, and the server keeps serving.
Includes a bounded hypothesis fuzz of bodies and JSON shapes."""

from __future__ import annotations

import json

import pytest
from tests.support.bridge import FakeResponder, raw_exchange, request, running_bridge, skill_payload
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_BODY = 8192


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """One relay and one kakao-skill bridge shared by the module (fast)."""
    responder = FakeResponder()
    with running_bridge(tmp_path_factory.mktemp("relay"), responder, transport="relay",
                        max_body_bytes=MAX_BODY) as relay, \
            running_bridge(tmp_path_factory.mktemp("skill"), responder, transport="kakao-skill",
                           max_body_bytes=MAX_BODY) as skill:
        yield {"relay": relay, "skill": skill}


def _alive(servers) -> None:
    assert servers["relay"].get("/healthz").status == 200
    assert servers["skill"].get("/healthz").status == 200


GOOD_RELAY = {"room": "r", "sender": "s", "msg": "hi"}

BODY_CASES = [
    # (name, endpoint, raw body, headers, expected status)
    ("not json", "relay", b"{room: r}", {}, 400),
    ("truncated json", "relay", b'{"room": "r", "sender"', {}, 400),
    ("not utf-8", "relay", '{"room": "방", "sender": "s", "msg": "x"}'.encode("euc-kr"), {}, 400),
    ("json array", "relay", b"[1, 2, 3]", {}, 400),
    ("json string", "skill", b'"hello"', {}, 400),
    ("empty body", "relay", b"", {}, 400),
    ("missing msg", "relay", json.dumps({"room": "r", "sender": "s"}).encode(), {}, 400),
    ("missing room", "relay", json.dumps({"sender": "s", "msg": "m"}).encode(), {}, 400),
    ("empty room", "relay", json.dumps({"room": " ", "sender": "s", "msg": "m"}).encode(), {}, 400),
    ("msg is a number", "relay", json.dumps({"room": "r", "sender": "s", "msg": 5}).encode(), {}, 400),
    ("id is an object", "relay", json.dumps({**GOOD_RELAY, "id": {"a": 1}}).encode(), {}, 400),
    ("lone surrogate", "relay", b'{"room": "r", "sender": "s", "msg": "\\ud800"}', {}, 400),
    ("deep nesting", "relay", b"[" * 1500 + b"]" * 1500, {}, 400),
    ("huge integer", "relay", b'{"room": "r", "sender": "s", "msg": "m", "id": ' + b"9" * 5000 + b"}", {}, 400),
    ("no userRequest", "skill", json.dumps({"bot": {}}).encode(), {}, 400),
    ("no utterance", "skill", json.dumps({"userRequest": {"user": {"id": "u"}}}).encode(), {}, 400),
    ("no user id", "skill", json.dumps({"userRequest": {"utterance": "x", "user": {}}}).encode(), {}, 400),
    ("user not object", "skill", json.dumps({"userRequest": {"utterance": "x", "user": "u"}}).encode(), {}, 400),
    ("bad callbackUrl", "skill", json.dumps(skill_payload("x", callback_url="ftp://example/cb")).encode(), {}, 400),
    ("callbackUrl bad IPv6", "skill", json.dumps(skill_payload("x", callback_url="http://[x/cb")).encode(), {}, 400),
    ("callbackUrl bad port", "skill",
     json.dumps(skill_payload("x", callback_url="https://a.kakao.com:99999/")).encode(), {}, 400),
    ("json null", "relay", b"null", {}, 400),
    ("json null skill", "skill", b"null", {}, 400),
    ("bot not object", "skill", json.dumps({**skill_payload("x"), "bot": []}).encode(), {}, 400),
    ("text/plain", "relay", json.dumps(GOOD_RELAY).encode(), {"Content-Type": "text/plain"}, 415),
    ("form", "skill", b"a=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("latin-1 charset", "relay", json.dumps(GOOD_RELAY).encode(), {"Content-Type": "application/json; charset=latin-1"},
     415),
    ("oversize", "relay", json.dumps({**GOOD_RELAY, "msg": "x" * (MAX_BODY + 10)}).encode(), {}, 413),
    ("oversize skill", "skill", json.dumps(skill_payload("가" * MAX_BODY)).encode(), {}, 413),
]


@pytest.mark.parametrize("name, endpoint, body, headers, status", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_bad_bodies_are_4xx_and_the_server_keeps_serving(servers, name, endpoint, body, headers, status) -> None:
    r = request(servers[endpoint].port, "POST", f"/{endpoint}", raw=body, headers=headers)
    assert r.status == status, (name, r.body)
    assert "error" in r.json and r.outcome == "rejected"
    _alive(servers)


def test_charset_utf8_and_bom_are_accepted(servers) -> None:
    body = json.dumps({**GOOD_RELAY, "msg": "utf8 ok"}, ensure_ascii=False).encode("utf-8")
    r = request(servers["relay"].port, "POST", "/relay", raw=b"\xef\xbb\xbf" + body,
                headers={"Content-Type": "Application/JSON; charset=UTF-8"})
    assert r.status == 200 and r.json["reply"].endswith("ko 8ftu")


RAW_CASES = [
    ("no content-length", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\r\n{}", b" 411 "),
    ("chunked", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                b"\r\n2\r\n{}\r\n0\r\n\r\n", b" 411 "),
    ("negative length", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b" 400 "),
    ("garbage length", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n", b" 400 "),
    ("short body", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{}",
     b" 400 "),
    ("huge length", b"POST /relay HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", b" 413 "),
    ("garbage request line", b"\x00\x01\x02 hello\r\n\r\n", b" 400 "),
    ("unknown method", b"BREW /relay HTTP/1.1\r\nHost: x\r\n\r\n", b" 501 "),
    ("put", b"PUT /relay HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b" 501 "),
    ("unknown path", b"POST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b" 404 "),
    ("get unknown", b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", b" 404 "),
    ("too many headers", b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n", b" 431 "),
    ("header line too long", b"GET /healthz HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", b" 431 "),
]


@pytest.mark.parametrize("name, data, expect", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_broken_http_is_answered_not_crashed(servers, name, data, expect) -> None:
    answer = raw_exchange(servers["relay"].port, data)
    status_line_ok = answer.startswith(b"HTTP/1.") and expect in answer.split(b"\r\n", 1)[0]
    http09_ok = b"Error code: " + expect.strip() in answer  # no version in the request line: HTTP/0.9 answer
    assert status_line_ok or http09_ok, (name, answer[:80])
    _alive(servers)


def test_silent_and_half_open_connections_do_not_crash(servers) -> None:
    assert raw_exchange(servers["relay"].port, b"") == b""
    assert raw_exchange(servers["relay"].port, b"POST /relay HTTP/1.1\r\n") != b"\x00"  # headers cut off
    _alive(servers)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300))
def test_fuzz_random_bodies(servers, body) -> None:
    r = request(servers["relay"].port, "POST", "/relay", raw=body)
    assert r.status in (200, 204, 400), r.body


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user_request=JSON, extra=st.dictionaries(st.sampled_from(["bot", "action", "intent", "x"]), JSON, max_size=3))
def test_fuzz_skill_payload_shapes(servers, user_request, extra) -> None:
    payload = {**extra, "userRequest": user_request}
    r = request(servers["skill"].port, "POST", "/skill", payload)
    assert r.status in (200, 400), r.body
    if r.status == 200:  # whatever got through is answered in the v2.0 shape
        assert r.json["version"] == "2.0"
