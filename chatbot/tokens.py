"""Special tokens of the turn layout, shared by preprocess, train, generate and publish.

Layout of a session (see DESIGN.md)::

    <|bos|> <|spk:S1|> text <|eot|> <|spk:S2|> text <|eot|> ...

Speakers are pseudonyms ``S1`` … ``S{MAX_SPEAKERS}`` (ranked by message count, stable across runs); any speaker
past that shares ``<|spk:S0|>`` ("someone else"). Media, system events and masked PII are typed placeholder
tokens. Every special token is a single token in the tokenizer; text that merely *looks* like one (someone typing
``<|eot|>``) is escaped by :func:`escape_text` before encoding so it can never become the special token.
"""

from __future__ import annotations

import re

BOS = "<|bos|>"
EOT = "<|eot|>"
PAD = "<|pad|>"
MAX_SPEAKERS = 64
OTHER_SPEAKER = "S0"


def speaker_token(pseudonym: str) -> str:
    return f"<|spk:{pseudonym}|>"


def pseudonym_for_rank(rank: int) -> str:
    """Rank 1 = most active speaker → "S1"; past MAX_SPEAKERS everyone is "S0"."""
    return f"S{rank}" if 1 <= rank <= MAX_SPEAKERS else OTHER_SPEAKER


_PSEUDONYM = re.compile(r"S\d{1,3}")


def is_pseudonym(value: object) -> bool:
    """True for ``S0`` … ``S999`` (the pseudonyms preprocess writes; anything else is not a speaker)."""
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


SPEAKER_TOKENS = [speaker_token(OTHER_SPEAKER)] + [speaker_token(f"S{i}") for i in range(1, MAX_SPEAKERS + 1)]

# media / system placeholders (record kinds that preprocess may keep as typed tokens)
MEDIA_TOKENS = {
    kind: f"<|{kind}|>"
    for kind in ("photo", "video", "emoticon", "file", "audio", "call", "poll", "location", "contact",
                 "payment", "search", "media", "deleted", "system")
}
# masked personal data (new classes are appended at the end: the order fixes the ids of a new tokenizer)
PII_TOKENS = {cls: f"<|{cls}|>" for cls in ("phone", "email", "url", "rrn", "card", "account", "mention", "address")}

SPECIAL_TOKENS: list[str] = [PAD, BOS, EOT, *SPEAKER_TOKENS, *MEDIA_TOKENS.values(), *PII_TOKENS.values()]
PLACEHOLDER_TOKENS = frozenset([*MEDIA_TOKENS.values(), *PII_TOKENS.values()])
# Tokens added after the first release: a tokenizer trained before (old processed data, checkpoints, artifacts)
# lacks them and still loads; the text they stand for then reaches such a model as it did when it was trained.
LATER_TOKENS = frozenset({PII_TOKENS["address"]})
REQUIRED_TOKENS: list[str] = [t for t in SPECIAL_TOKENS if t not in LATER_TOKENS]

# "<|" followed by a zero-width joiner-free variant: we break the marker with U+2060 WORD JOINER so the text
# still reads the same but can never match a special token.
_ESCAPE = "<\u2060|"


def escape_text(text: str) -> str:
    """Make chat text safe to concatenate with special tokens (``<|eot|>`` typed by a user stays plain text)."""
    return text.replace("<|", _ESCAPE)


def unescape_text(text: str) -> str:
    return text.replace(_ESCAPE, "<|")
