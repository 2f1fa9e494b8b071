"""The OpenAI chat-completions wire format: request validation, response and stream-chunk shapes, error objects.

Pure functions over plain JSON values (no FastAPI here), so the format can be tested without a server.

What a request may carry (https://platform.openai.com/docs/api-reference/chat/create):

- ``messages``: ``system`` / ``developer`` (accepted and not used: the model was trained on chat turns only and has
  no place for instructions), ``user`` and ``assistant`` with string content or a list of ``{"type": "text"}``
  parts. ``name`` on a user message is kept in :class:`Message` (see :func:`to_history`).
- ``temperature`` (0–2), ``top_p`` (0–1), ``max_tokens`` / ``max_completion_tokens``, ``seed``, ``stop`` (a string
  or up to 4), ``n`` (only 1), ``stream``, ``stream_options.include_usage``, ``model`` (any string: there is one
  model, answered under its own id).
- Refused with 400, as the OpenAI API refuses what a model cannot do: ``tools`` / ``functions`` / ``tool_choice``
  other than "none", ``tool`` messages, non-text content parts, ``n`` > 1, ``logprobs``, ``response_format`` other
  than text, audio output.
- Anything else (``frequency_penalty``, ``user``, ``metadata``, new fields of later API versions ...) is ignored,
  as llama.cpp, vLLM and Ollama do, so clients that always send them keep working.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..infer.speakers import SpeakerPlan

MAX_STOP = 4
MAX_STOP_CHARS = 200


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status == 401:
            return "authentication_error"
        return "server_error" if self.status >= 500 else "invalid_request_error"

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@dataclass
class Message:
    """One conversation message: role "user" or "bot", its text, and the user's ``name`` when the client gave one."""

    role: str
    text: str
    name: str | None = None


@dataclass
class ChatRequest:
    """A validated chat-completions request. ``None`` = gen.yaml's value."""

    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


def parse_json(body: bytes) -> dict:
    """The body as a JSON object, or ApiError 400."""
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "We could not parse the JSON body of your request: send a JSON object (UTF-8).") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return data


def _number(data: dict, key: str, lo: float, hi: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(400, f"'{key}' must be a number between {lo:g} and {hi:g}.", param=key,
                       code="invalid_value")
    return float(value)


def _integer(data: dict, key: str, lo: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ApiError(400, f"'{key}' must be an integer of at least {lo}.", param=key, code="invalid_value")
    return value


def _refuse_unsupported(data: dict) -> None:
    tool_choice = data.get("tool_choice")
    if data.get("tools") or data.get("functions") or data.get("function_call") not in (None, "none") or (
        tool_choice not in (None, "none")
    ):
        param = next(k for k in ("tools", "functions", "function_call", "tool_choice") if data.get(k))
        raise ApiError(400, "This model does not support tools or function calling; send the request without "
                            "'tools', 'functions' and 'tool_choice'.", param=param, code="unsupported_parameter")
    n = data.get("n")
    if n is not None and n != 1:
        raise ApiError(400, "Only n=1 is supported (one reply per request).", param="n", code="unsupported_value")
    if data.get("logprobs") or data.get("top_logprobs"):
        raise ApiError(400, "'logprobs' is not supported by this server.", param="logprobs",
                       code="unsupported_parameter")
    fmt = data.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise ApiError(400, "Only response_format {\"type\": \"text\"} is supported.", param="response_format",
                       code="unsupported_value")
    modalities = data.get("modalities")
    if data.get("audio") or (isinstance(modalities, list) and any(m != "text" for m in modalities)):
        raise ApiError(400, "Only text output is supported.", param="modalities", code="unsupported_value")


def _content_text(content: object, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ApiError(400, f"{where}.content[{j}]: only text parts ({{\"type\": \"text\", \"text\": ...}}) "
                                    "are supported.", param=f"{where}.content", code="unsupported_value")
            parts.append(part["text"])
        return "\n".join(parts)
    raise ApiError(400, f"{where}.content must be a string or a list of text parts.", param=f"{where}.content")


def _messages(raw: object) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "'messages' must be a non-empty array of {\"role\", \"content\"} objects.",
                       param="messages")
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'.", param=where)
        role = m.get("role")
        if role in ("tool", "function") or m.get("tool_calls") or m.get("function_call"):
            raise ApiError(400, f"{where}: tool messages and tool calls are not supported by this model.",
                           param=where, code="unsupported_value")
        if role not in ("system", "developer", "user", "assistant"):
            raise ApiError(400, f"{where}.role must be one of system, developer, user, assistant.",
                           param=f"{where}.role", code="invalid_value")
        text = _content_text(m.get("content"), where)
        if role in ("system", "developer"):
            continue  # accepted, not used (module docstring)
        name = m.get("name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, f"{where}.name must be a string.", param=f"{where}.name")
        out.append(Message("user" if role == "user" else "bot", text, name or None))
    if not any(m.role == "user" and m.text.strip() for m in out):
        raise ApiError(400, "'messages' must contain at least one user message with text.", param="messages")
    return out


def _stops(value: object) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if (not isinstance(stops, list) or len(stops) > MAX_STOP
            or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)):
        raise ApiError(400, f"'stop' must be a string or an array of up to {MAX_STOP} non-empty strings.",
                       param="stop", code="invalid_value")
    return list(stops)


def parse_chat_request(data: dict, *, memory: bool = False) -> ChatRequest:
    """Validate a chat-completions body (ApiError 400 with the OpenAI error shape for anything malformed).

    ``memory``: the server keeps this conversation (X-Conversation-Id), so the request may hold only new messages.
    """
    _refuse_unsupported(data)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false.", param="stream")
    opts = data.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise ApiError(400, "'stream_options' must be an object.", param="stream_options")
    max_tokens = _integer(data, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(data, "max_tokens", 1)
    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "'seed' must be an integer.", param="seed")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError(400, "'model' must be a string.", param="model")
    return ChatRequest(
        messages=_messages(data.get("messages")),
        temperature=_number(data, "temperature", 0.0, 2.0),
        top_p=_number(data, "top_p", 0.0, 1.0),
        max_tokens=max_tokens,
        seed=None if seed is None else seed % (2**63),  # torch.Generator takes a non-negative 64-bit seed
        stop=_stops(data.get("stop")),
        stream=stream,
        include_usage=bool((opts or {}).get("include_usage")),
    )


# --------------------------------------------------------------------------------------------------- responses
def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(cid: str, model: str, created: int, text: str, finish: str, use: dict) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model, "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": None, "finish_reason": finish}],
        "usage": use,
    }


def chunk(cid: str, model: str, created: int, delta: dict, finish: str | None = None,
          use: dict | None = None, include_usage: bool = False) -> dict:
    """One ``chat.completion.chunk``; with ``include_usage`` every chunk has ``usage: null`` except the last one,
    which has no choices and the counts (as the OpenAI API streams them)."""
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "system_fingerprint": None,
           "choices": [] if use is not None else [{"index": 0, "delta": delta, "logprobs": None,
                                                   "finish_reason": finish}]}
    if include_usage:
        out["usage"] = use
    return out


def sse(obj: dict | str) -> bytes:
    """One server-sent event: ``data: <json>`` (or ``data: [DONE]``) and a blank line."""
    payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode("utf-8")


def now() -> int:
    return int(time.time())


# ------------------------------------------------------------------------------------------------- stop strings
class StopScanner:
    """Cuts a growing reply at the first ``stop`` string (not included, as in the OpenAI API).

    ``feed(chunk)`` returns the text that is safe to send now: a tail that could still become the start of a stop
    string is held back until the next chunk decides. ``stopped`` turns True at the first stop string.
    """

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.pending = ""
        self.text = ""  # everything released so far
        self.stopped = False

    def feed(self, chunk: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            self.text += chunk
            return chunk
        buf = self.pending + chunk
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = buf[:min(hits)], ""
        else:
            hold = max((k for s in self.stops for k in range(1, len(s)) if buf.endswith(s[:k])), default=0)
            out, self.pending = buf[:len(buf) - hold], buf[len(buf) - hold:]
        self.text += out
        return out

    def finish(self) -> str:
        """End of the reply: the held-back tail was not a stop string after all."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        self.text += out
        return out


def to_history(messages: list[Message], plan: SpeakerPlan | None = None) -> list[tuple[str, str]]:
    """``(speaker, text)`` pairs as :meth:`chatbot.infer.responder.Responder.reply` takes them.

    ``Message.name`` (who said it, in a group room): with the responder's speaker ``plan`` each distinct name gets
    its own stable slot of the model in order of first appearance (chatbot/infer/speakers.py); user messages without a
    name are the person at the keyboard ("user"). Without a plan every user message is "user".
    """
    if plan is None:
        return [(m.role, m.text) for m in messages]
    from ..infer.speakers import RoomSpeakers

    room, out = RoomSpeakers(), []
    for m in messages:
        if m.role == "bot":
            out.append(("bot", m.text))
        else:
            out.append((room.slot(plan, f"name:{m.name}" if m.name else "\x00me", m.name)[0], m.text))
    return out
