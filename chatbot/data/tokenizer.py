"""Byte-level BPE tokenizer with the turn-layout special tokens.

Byte-level means every byte has a token, so no input can produce an unknown token, and a Hangul syllable split
across tokens decodes back exactly once all its bytes are present.

Chat text is encoded with ``encode_special_tokens = True``: a user who types ``<|eot|>`` gets plain-text tokens,
never the special token. Special and placeholder tokens are inserted by id (``special_id``), or — for placeholders
inside a message (masked PII, media) — by *markers*: ``placeholder_marker("url")`` is a private-use-area string
that :func:`encode_marked` turns into the ``<|url|>`` token id. Raw text must go through :func:`strip_markers`
first so a chat can never forge a marker.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import ChatbotError
from ..tokens import REQUIRED_TOKENS, SPECIAL_TOKENS

_MARK_OPEN, _MARK_CLOSE = "\ue000", "\ue001"
_MARKER_RE = re.compile(f"{_MARK_OPEN}([a-z_]+){_MARK_CLOSE}")


def placeholder_marker(name: str) -> str:
    """In-text marker for the placeholder token ``<|name|>`` (e.g. "url", "phone", "photo")."""
    return f"{_MARK_OPEN}{name}{_MARK_CLOSE}"


def strip_markers(text: str) -> str:
    """Remove marker characters from raw chat text (they are private-use code points, never real content)."""
    return text.replace(_MARK_OPEN, "").replace(_MARK_CLOSE, "")


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE on ``texts`` (an iterator is fine; it is streamed) with all SPECIAL_TOKENS added."""
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.encode_special_tokens = True
    return tok


def load_tokenizer(path_or_json: str, *, is_json: bool = False) -> Tokenizer:
    """Load from a tokenizer.json path (or its JSON text) and check every special token is present (those of
    ``LATER_TOKENS`` may be missing from a tokenizer trained before they existed)."""
    try:
        tok = Tokenizer.from_str(path_or_json) if is_json else Tokenizer.from_file(str(path_or_json))
    except Exception:
        what = "the tokenizer in the model file" if is_json else str(path_or_json)
        raise ChatbotError(f"{what} is not a valid tokenizer.json; re-run `python -m chatbot.ops preprocess`") from None
    missing = [token for token in REQUIRED_TOKENS if tok.token_to_id(token) is None]
    if missing:
        raise ChatbotError(f"tokenizer lacks special token {missing[0]}; re-run `python -m chatbot.ops preprocess`")
    tok.encode_special_tokens = True
    return tok


def tokenizer_hash(tok_or_json: Tokenizer | str) -> str:
    """sha256 hex of the serialized tokenizer (the value stored in stats.json, checkpoints and artifacts)."""
    text = tok_or_json if isinstance(tok_or_json, str) else tok_or_json.to_str()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def special_id(tok: Tokenizer, token: str) -> int:
    token_id = tok.token_to_id(token)
    if token_id is None:
        raise ChatbotError(f"tokenizer lacks special token {token}; re-run `python -m chatbot.ops preprocess`")
    return token_id


def encode_text(tok: Tokenizer, text: str) -> list[int]:
    """Plain chat text → ids; special-token look-alikes stay plain text."""
    tok.encode_special_tokens = True
    return tok.encode(text, add_special_tokens=False).ids


def encode_marked(tok: Tokenizer, text: str) -> list[int]:
    """Text that may contain :func:`placeholder_marker` markers → ids with the real placeholder token ids."""
    if _MARK_OPEN not in text:
        return encode_text(tok, text)
    ids: list[int] = []
    pos = 0
    for marker in _MARKER_RE.finditer(text):
        if marker.start() > pos:
            ids.extend(encode_text(tok, text[pos : marker.start()]))
        ids.append(special_id(tok, f"<|{marker.group(1)}|>"))
        pos = marker.end()
    if pos < len(text):
        ids.extend(encode_text(tok, text[pos:]))
    return ids


def encode_marked_batch(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Batch form of :func:`encode_marked` (uses the tokenizer's parallel batch encoder for marker-free texts)."""
    tok.encode_special_tokens = True
    out: list[list[int] | None] = [None] * len(texts)
    plain_idx = [position for position, text in enumerate(texts) if _MARK_OPEN not in text]
    encoded = tok.encode_batch([texts[position] for position in plain_idx], add_special_tokens=False)
    for position, enc in zip(plain_idx, encoded):
        out[position] = enc.ids
    for position, text in enumerate(texts):
        if out[position] is None:
            out[position] = encode_marked(tok, text)
    return out  # type: ignore[return-value]


def decode(tok: Tokenizer, ids: Iterable[int], *, skip_special: bool = False) -> str:
    return tok.decode(list(ids), skip_special_tokens=skip_special)


def iter_token_bytes(tok: Tokenizer, ids: Iterable[int]) -> Iterator[bytes]:
    """Raw bytes of each token (for streaming output that holds back incomplete UTF-8 sequences)."""
    byte_decoder = {char: byte for byte, char in _bytes_to_unicode().items()}
    for token_id in ids:
        piece = tok.id_to_token(token_id)
        if piece is None:
            continue
        if piece in _SPECIAL_SET:
            yield piece.encode("utf-8")
        else:
            yield bytes(byte_decoder[char] for char in piece if char in byte_decoder)


_SPECIAL_SET = frozenset(SPECIAL_TOKENS)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable-unicode table used by the ByteLevel pre-tokenizer."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + shifted)
            shifted += 1
    return dict(zip(printable, map(chr, chars)))
