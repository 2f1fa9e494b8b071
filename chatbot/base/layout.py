"""How chat turns become token ids for a pretrained base model (the contract between preprocess, train and
inference; see docs/ARCHITECTURE.md "Turn layout for a pretrained base").

Per session: ``[bos]`` only if the tokenizer has a BOS token; then per turn::

    enc(f"{pseudonym}: ") + enc(text) + [eos]

``enc`` is the base tokenizer's encoding without added special tokens and with special-token look-alikes in chat
text kept as plain text (someone typing ``<|im_end|>`` gets ordinary tokens, never the control token). Speakers are
the pseudonyms S1..Sn written as text; placeholders for masked personal data and media are plain text too
(``<phone>``, ``<photo>`` …: :func:`placeholder_text`); a system event is the turn ``enc("<system>") + [eos]``
without a speaker prefix. No new tokens are added, so LoRA alone trains it and any base/instruct model, any
number of speakers, works. Every piece is encoded on its own, so the ids of a prompt built at inference equal
the ids preprocess wrote for the same turns.

The loss mask of a target turn covers ``enc(text) + [eos]`` (the reply and the decision to stop); the prompt for
a reply is the history turns + ``enc(f"{bot}: ")`` and decoding stops at the eos id.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

from ..errors import ChatbotError
from ..tokens import MEDIA_TOKENS, PII_TOKENS

PLACEHOLDER_NAMES = (*MEDIA_TOKENS, *PII_TOKENS)
_MARKER_RE = re.compile("\ue000([a-z_]+)\ue001")


def placeholder_text(name: str) -> str:
    """The plain text that stands for masked personal data or media in a base model's input: ``<phone>``."""
    return f"<{name}>"


PLACEHOLDERS = {name: placeholder_text(name) for name in PLACEHOLDER_NAMES}
SYSTEM_TEXT = placeholder_text("system")


def render(text: str) -> str:
    """Preprocess's marked text (``placeholder_marker("url")`` …) → plain text with ``<url>`` placeholders."""
    if "\ue000" not in text:
        return text
    return _MARKER_RE.sub(lambda m: placeholder_text(m.group(1)), text).replace("\ue000", "").replace("\ue001", "")


def speaker_prefix(pseudonym: str) -> str:
    return f"{pseudonym}: "


class BaseLayout:
    """The turn layout bound to one base tokenizer (a transformers fast tokenizer or a ``tokenizers.Tokenizer``).

    ``eos_id`` ends every turn (and decoding); ``bos_id`` opens a session when the tokenizer has one (else None).
    """

    def __init__(self, tokenizer: Any):
        from tokenizers import Tokenizer

        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        # a private copy: encode_special_tokens must not change the caller's tokenizer
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.encode_special_tokens = True
        self.eos_id = getattr(tokenizer, "eos_token_id", None)
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        if self.eos_id is None:
            raise ChatbotError("the base tokenizer has no end-of-sequence (eos) token, which ends every turn; "
                               "choose another base")
        self.vocab_size = max(len(tokenizer) if hasattr(tokenizer, "__len__") else 0,
                              self._tok.get_vocab_size(with_added_tokens=True))
        self._prefix_cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------------------------------------- encoding
    def enc(self, text: str) -> list[int]:
        """Plain text → ids (no added special tokens; special-token look-alikes stay plain text)."""
        return self._tok.encode(text, add_special_tokens=False).ids if text else []

    def enc_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def session_start(self) -> list[int]:
        return [self.bos_id] if self.bos_id is not None else []

    def prefix(self, speaker: str | None) -> list[int]:
        """Ids of ``"S1: "`` (cached); None = a system event, no prefix."""
        if speaker is None:
            return []
        got = self._prefix_cache.get(speaker)
        if got is None:
            got = self._prefix_cache[speaker] = self.enc(speaker_prefix(speaker))
        return got

    def turn(self, speaker: str | None, text: str) -> tuple[list[int], list[int]]:
        """(prefix ids, body ids) of one turn; body = enc(text) + [eos] (what a target turn's loss covers).

        ``text`` is plain text; marked text from preprocess goes through :func:`render` first.
        """
        return self.prefix(speaker), self.enc(render(text)) + [self.eos_id]

    def encode_session(self, turns: Iterable[tuple[str | None, str, bool]]) -> tuple[list[int], list[int]]:
        """(ids, loss mask) of one session of (speaker or None, text, is_target) turns."""
        ids = self.session_start()
        mask = [0] * len(ids)
        for speaker, text, target in turns:
            pre, body = self.turn(speaker, text)
            ids += pre + body
            mask += [0] * len(pre) + [int(bool(target))] * len(body)
        return ids, mask

    def prompt(self, history: Iterable[tuple[str | None, str]], bot: str, *, session_start: bool = True) -> list[int]:
        """Ids to generate ``bot``'s next turn from: [bos] + the history turns + enc(f"{bot}: ")."""
        ids = self.session_start() if session_start else []
        for speaker, text in history:
            pre, body = self.turn(speaker, text)
            ids += pre + body
        return ids + self.prefix(bot)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)
