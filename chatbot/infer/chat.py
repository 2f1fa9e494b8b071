"""The ``reply`` and ``chat`` verbs: one answer, or an anonymous chat in the terminal.

``/as NAME`` makes the next messages come from another person of the room (a group-room rehearsal): each name
gets a stable pseudonym slot of the model (chatbot/infer/speakers.py), and ``gen.reply_policy`` decides whether the
bot answers ("(silent)" when it does not). ``/as`` alone speaks as yourself again.

Both check the password gate before a model is even looked for. The chat shows only the two configured labels
("나" / "상대" by default), never pseudonyms or names. It reads one message a line, so it works the same at a
terminal (with line editing, streaming output, Ctrl+C / Ctrl+D to leave) and with piped standard input (the
transcript is written to standard output).
"""

from __future__ import annotations

import importlib
import json
import math
import sys

from ..config import Config, GenConfig
from ..errors import ChatbotError
from .prompt import normalize_text
from .responder import Responder, load_responder

HELP = ("commands: /as NAME speaks as someone else of the room (/as alone: yourself again), /reset starts a new "
        "conversation, /exit quits (Ctrl+D or Ctrl+C too)")
ME = "\x00me"  # the sender key of the person at the keyboard (no typed name can equal it)
MAX_HISTORY = 200  # entries kept in memory; the prompt itself is cut to the model's context anyway


def _gate(cfg: Config) -> None:
    from ..security import require_password

    require_password(cfg)


def reply_command(cfg: Config, text: str, as_json: bool = False) -> None:
    """Print the bot's reply to one message (text only; ``as_json`` adds confidence and timing)."""
    _gate(cfg)
    if not normalize_text(text):
        raise ChatbotError("nothing to reply to: the message is empty")
    responder = load_responder(cfg)
    r = responder.reply([("user", text)])
    if not as_json:
        print(r.text)
        return
    print(json.dumps({
        "text": r.text,
        "confidence": round(r.confidence, 4) if math.isfinite(r.confidence) else None,  # None: nothing generated
        "n_tokens": r.n_tokens,
        "latency_s": round(r.latency_s, 4),
        "first_token_s": round(r.first_token_s, 4),
        "stop_reason": r.stop_reason,
        "spoke": not r.silent,
        "decision": r.decision,
        "speak_prob": None if r.speak_prob is None else round(r.speak_prob, 4),
        "model": responder.bundle.source.name,
        "step": responder.bundle.step,
    }, ensure_ascii=False))


def chat_command(cfg: Config) -> None:
    """Interactive chat; returns normally on /exit, end of input or Ctrl+C (exit code 0)."""
    _gate(cfg)
    responder = load_responder(cfg)
    interactive = _isatty(sys.stdin)
    if not interactive and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")  # a stray invalid byte in a pipe must not end the chat
    if interactive:
        try:
            importlib.import_module("readline")  # line editing and history for input(), by importing it
        except ImportError:
            pass
        b = responder.bundle
        print(f"model: {b.source.name} (step {b.step}) · {HELP}", flush=True)
    try:
        chat_loop(responder, cfg.gen, interactive)
    except KeyboardInterrupt:
        print(flush=True)  # leave the cursor on a fresh line; nothing else to clean up


def chat_loop(responder: Responder, gen: GenConfig, interactive: bool) -> None:
    from .speakers import RoomSpeakers

    labels = gen.chat
    history: list[tuple[str, str]] = []
    room, who = RoomSpeakers(), None  # who: the name typed after /as (None = yourself)
    while True:
        label = who or labels.user_label
        line = _read_line(f"{label}: " if interactive else None)
        if line is None:
            if interactive:
                print(flush=True)
            return
        msg = line.strip()
        if not msg:
            continue
        if msg in ("/exit", "/quit"):
            return
        if msg == "/as" or msg.startswith("/as "):
            who = msg[4:].strip() or None
            continue
        if msg == "/reset":
            history.clear()
            room = RoomSpeakers()
            print("(new conversation)", flush=True)
            continue
        if msg == "/help":
            print(HELP, flush=True)
            continue
        if not interactive:
            print(f"{label}: {msg}", flush=True)
        slot, _ = room.slot(responder.plan, ME if who is None else f"name:{who}", who)
        history.append((slot, msg))
        shown: list[str] = []

        def show(chunk: str) -> None:
            if not shown:
                print(f"{labels.bot_label}: ", end="", flush=True)
            shown.append(chunk)
            print(chunk, end="", flush=True)

        r = responder.reply(history, on_text=show if labels.stream else None, senders=room.distinct())
        if r.silent:
            print("(silent)", flush=True)
            del history[:-MAX_HISTORY]
            continue
        if not shown:
            print(f"{labels.bot_label}: ", end="", flush=True)
        streamed = "".join(shown)
        rest = r.text[len(streamed):] if r.text.startswith(streamed) else ""
        print(rest if r.text else "…", flush=True)
        if r.text:
            history.append(("bot", r.text))
        del history[:-MAX_HISTORY]


def _read_line(prompt: str | None) -> str | None:
    """One line of input, or None at end of input."""
    if prompt is not None:
        try:
            return input(prompt)
        except EOFError:
            return None
    line = sys.stdin.readline()
    return line if line else None


def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False
