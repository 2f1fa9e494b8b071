"""From generated token ids to the reply's text: UTF-8-safe streaming and the output clean-up.

:func:`clean_reply` is the *output* side (only the sentence: no special-token text, no placeholder markers);
the *input* side, cleaning a typed message the way preprocess cleaned the training text, is
``chatbot.data.conversation.clean_text``.
"""

from __future__ import annotations

import codecs
import re
from typing import Callable, Iterable

from tokenizers import Tokenizer

from ..data.tokenizer import iter_token_bytes
from ..tokens import SPECIAL_TOKENS, unescape_text

_NAMES = "|".join(re.escape(t[2:-2]) for t in SPECIAL_TOKENS)
_LOOKALIKE = re.compile(rf"<\u2060?\|(?:{_NAMES})\|>")  # a special token (or its escaped form) written as text
_MARKERS = re.compile("[\ue000\ue001\x00-\x08\x0b-\x1f\x7f]")  # placeholder markers, control characters


def clean_reply(text: str, max_chars: int) -> str:
    """Only the sentence: no special-token text, no placeholder markers or control characters (newlines and tabs
    stay), trimmed, at most ``max_chars``."""
    text = _MARKERS.sub("", _LOOKALIKE.sub("", text))
    return unescape_text(text).strip()[:max_chars].rstrip()


def _stable_prefix(text: str) -> str:
    """The part of a growing reply that later tokens can no longer change under :func:`clean_reply`.

    Trailing whitespace may be trimmed at the end, and a trailing ``<|eo`` may still become a special-token
    look-alike that is removed, so both are held back while streaming.
    """
    text = text.rstrip()
    cut = text.rfind("<", max(0, len(text) - 24))
    while cut != -1:
        tail = text[cut:].replace("\u2060", "")
        if any(t.startswith(tail) for t in SPECIAL_TOKENS):
            return text[:cut].rstrip()
        cut = text.rfind("<", max(0, len(text) - 24), cut)
    return text


class TextStream:
    """Bytes of generated tokens → text callbacks that never split a UTF-8 sequence (a Hangul syllable is three
    bytes, and byte-level BPE may cut it between tokens). Incomplete bytes are held until they complete; bytes that
    can never form a character are dropped."""

    def __init__(self, token_bytes: list[bytes], max_chars: int, on_text: Callable[[str], None] | None = None):
        self.token_bytes, self.max_chars, self.on_text = token_bytes, max_chars, on_text
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self.raw = ""
        self.sent = ""

    def push(self, tok: int) -> bool:
        """Add one token; True when the reply is already ``max_chars`` long (generation can stop)."""
        self.raw += self.decoder.decode(self.token_bytes[tok])
        stable = clean_reply(_stable_prefix(self.raw), self.max_chars)
        self._emit(stable)
        return len(stable) >= self.max_chars

    def finish(self) -> str:
        self.raw += self.decoder.decode(b"", final=True)
        text = clean_reply(self.raw, self.max_chars)
        self._emit(text)
        return text

    def _emit(self, clean: str) -> None:
        if self.on_text is not None and len(clean) > len(self.sent) and clean.startswith(self.sent):
            self.on_text(clean[len(self.sent):])
            self.sent = clean


def token_byte_table(tok: Tokenizer, special: Iterable[int]) -> list[bytes]:
    """Raw bytes of every token id (special tokens → b"": they are never part of a reply's text)."""
    special = set(special)
    size = tok.get_vocab_size(with_added_tokens=True)
    table = list(iter_token_bytes(tok, range(size)))
    return [b"" if i in special else b for i, b in enumerate(table)]
