"""Wire formats: Kakao i Open Builder skill payloads and responses, and the relay / jsonl message shape.

Kakao skill (transport ``kakao-skill``, ``POST /skill``). The platform POSTs a SkillPayload::

    {"intent": {...}, "userRequest": {"utterance": "...", "user": {"id": "...", "type": "...", "properties": {}},
     "callbackUrl": "https://..." (only when the block has callback enabled), "timezone", "block", "lang", ...},
     "bot": {"id", "name"}, "action": {"id", "name", "params", "detailParams", "clientExtra"}}

The room of a Kakao message is ``userRequest.user.id`` (a channel chat is one user talking to the bot). There is no
message id in the payload, so Kakao messages deduplicate by the time window (see core.py). Answers (v2.0):
``{"version": "2.0", "template": {"outputs": [{"simpleText": {"text": ...}}]}}`` (text ≤ 1000 characters), the
"no reply" template ``{"version": "2.0", "template": {"outputs": []}}``, and ``{"version": "2.0", "useCallback":
true}`` when the reply will be POSTed later to ``callbackUrl`` (once, within one minute of the request; which
URLs are allowed and how the POST is bounded: callback.py).

Relay (transport ``relay``, ``POST /relay``; and every jsonl input line)::

    {"room": "<room name>", "sender": "<sender name>", "msg": "<text>",
     "id": optional message id (string or integer), "ts": optional platform timestamp (any JSON scalar),
     "isGroupChat": optional, ignored}

Answer: 200 ``{"reply": "<text>"}`` when the bot replies; 204 (no body) when it does not (own message, duplicate,
room not allowed, rate-limited, empty reply, --dry without dry_reply). Every HTTP answer carries
``X-Bridge-Outcome`` (see core.py) so apps and tests can tell the cases apart without parsing logs.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from .core import Incoming


class BadRequest(ValueError):
    """The payload is JSON but not the expected shape. The message names a field, never a value."""


def _str(value: Any, where: str, *, required: bool = True, empty_ok: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string")
    if not empty_ok and not value.strip():
        raise BadRequest(f"{where} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates ("\ud800") parse as JSON but cannot be stored or sent
        raise BadRequest(f"{where} is not valid Unicode") from None
    return value


def _scalar_str(value: Any, where: str) -> str | None:
    """An optional id / timestamp: a string or a number, kept as text."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadRequest(f"{where} must be a string or a number")
    return _str(str(value), where)


def _obj(value: Any, where: str, *, required: bool = True) -> dict | None:
    if value is None and not required:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be an object")
    return value


# ---------------------------------------------------------------------------------------------------- Kakao
def parse_skill(data: Any) -> Incoming:
    """A SkillPayload as an Incoming message (room = sender = userRequest.user.id). Raises BadRequest."""
    data = _obj(data, "payload")
    ur = _obj(data.get("userRequest"), "userRequest")
    text = _str(ur.get("utterance"), "userRequest.utterance")
    user = _obj(ur.get("user"), "userRequest.user")
    uid = _str(user.get("id"), "userRequest.user.id", empty_ok=False)
    callback = _str(ur.get("callbackUrl"), "userRequest.callbackUrl", required=False) or None
    if callback is not None:
        try:
            parts = urllib.parse.urlsplit(callback)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # "http://[x" (bad IPv6 literal), a port that is not a number or out of range
            ok = False
        if not ok:
            raise BadRequest("userRequest.callbackUrl must be an http(s) URL")
    for name in ("bot", "action", "intent"):
        _obj(data.get(name), name, required=False)
    return Incoming(room=uid, sender=uid, text=text, callback_url=callback)


def simple_text(text: str) -> dict:
    return {"version": "2.0", "template": {"outputs": [{"simpleText": {"text": text}}]}}


def empty_template() -> dict:
    return {"version": "2.0", "template": {"outputs": []}}


def use_callback() -> dict:
    return {"version": "2.0", "useCallback": True}


# ---------------------------------------------------------------------------------------------- relay/jsonl
def parse_relay(data: Any) -> Incoming:
    """``{"room", "sender", "msg", "id"?, "ts"?}`` as an Incoming message. Raises BadRequest."""
    data = _obj(data, "payload")
    room = _str(data.get("room"), "room", empty_ok=False)
    sender = _str(data.get("sender"), "sender")
    text = _str(data.get("msg"), "msg")
    msg_id = _scalar_str(data.get("id"), "id")
    stamp = _scalar_str(data.get("ts"), "ts")
    return Incoming(room=room, sender=sender, text=text, msg_id=msg_id, stamp=stamp)
