"""The prompt of a from-scratch model: layout token ids, one message cleaned → masked → encoded as a turn, and the
turns cut to the context budget.

The prompt mirrors the training layout exactly (docs/ARCHITECTURE.md)::

    <|bos|> <|spk:U|> text <|eot|> <|spk:B|> text <|eot|> ... <|spk:U|> new message <|eot|> <|spk:B|>

and the model continues with the bot's turn. A model fine-tuned from a pretrained base lays its prompt out as
chatbot/base/layout.py says (generate_base.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tokenizers import Tokenizer

from ..config import GenConfig, PiiConfig
from ..data.conversation import clean_text as clean_message
from ..data.tokenizer import encode_marked, special_id
from ..tokens import BOS, EOT, LATER_TOKENS, PAD, PII_TOKENS, PLACEHOLDER_TOKENS, SPEAKER_TOKENS, SPECIAL_TOKENS


@dataclass(frozen=True)
class TokenIds:
    """Ids of the layout tokens in one tokenizer."""

    bos: int
    eot: int
    pad: int
    speakers: dict[str, int]  # pseudonym ("S1") -> id
    placeholders: frozenset[int]
    special: frozenset[int]

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> "TokenIds":
        speakers = {t[len("<|spk:"):-2]: special_id(tok, t) for t in SPEAKER_TOKENS}
        return cls(
            bos=special_id(tok, BOS),
            eot=special_id(tok, EOT),
            pad=special_id(tok, PAD),
            speakers=speakers,
            placeholders=frozenset(_present_ids(tok, PLACEHOLDER_TOKENS)),
            special=frozenset(_present_ids(tok, SPECIAL_TOKENS)),
        )

    @property
    def turn_starts(self) -> frozenset[int]:
        """Tokens that begin somebody's turn or a new session: the model is done with its own turn."""
        return frozenset([self.bos, *self.speakers.values()])


def _present_ids(tok: Tokenizer, tokens) -> list[int]:
    """Ids of ``tokens``; one of ``LATER_TOKENS`` that an older tokenizer lacks is skipped, any other must exist."""
    return [special_id(tok, t) for t in tokens if t not in LATER_TOKENS or tok.token_to_id(t) is not None]


def pii_for_tokenizer(pii: PiiConfig | None, tok: Tokenizer) -> PiiConfig:
    """The masking settings minus the classes whose placeholder token ``tok`` lacks (a model trained before the
    class existed saw that text unmasked, so it gets it unmasked)."""
    pii = pii or PiiConfig()
    off = {cls: False for cls, token in PII_TOKENS.items() if token in LATER_TOKENS and tok.token_to_id(token) is None}
    return dataclasses.replace(pii, **off) if off else pii


def normalize_text(text: str) -> str:
    """A message cleaned exactly as preprocess cleans chat text: NFC (macOS input is often NFD), no forged
    placeholder markers, no zero-width noise, tidy whitespace."""
    return clean_message(text)


def encode_turn(tok: Tokenizer, ids: TokenIds, speaker: str, text: str) -> list[int]:
    """``<|spk:X|> text <|eot|>`` exactly as preprocess writes a turn (``text`` cleaned, may hold markers)."""
    return [ids.speakers[speaker], *encode_marked(tok, text), ids.eot]


def build_prompt(turns: list[list[int]], bos: int, bot_token: int, budget: int) -> list[int]:
    """``BOS + turns + bot speaker token`` in at most ``budget`` tokens.

    Oldest turns are dropped whole (and BOS with them: training windows that start mid-session start at a turn
    boundary without BOS). If the newest turn alone is still too long its text is cut from the left, keeping its
    speaker token and ``<|eot|>``.
    """
    budget = max(budget, 4)
    total = 2 + sum(map(len, turns))
    if total <= budget:
        return [bos, *(t for turn in turns for t in turn), bot_token]
    n, start = total - 1, 0  # without BOS
    while start < len(turns) - 1 and n > budget:
        n -= len(turns[start])
        start += 1
    kept = turns[start:]
    if n > budget:  # one turn, too long by itself
        last = kept[-1]
        keep = budget - 3  # its speaker token, <|eot|> and the bot token stay
        kept = [[last[0], *last[1:-1][len(last) - 2 - keep:], last[-1]]]
    return [*(t for turn in kept for t in turn), bot_token]


def context_budget(block_size: int, gen: GenConfig) -> int:
    """Prompt tokens allowed: ``max_context_tokens`` (0 = all of it), always leaving room for the reply."""
    room = min(gen.sampling.max_new_tokens, block_size // 2)
    budget = block_size - room
    return min(budget, gen.max_context_tokens) if gen.max_context_tokens > 0 else budget
