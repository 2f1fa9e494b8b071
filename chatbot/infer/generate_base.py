"""The Responder's side of a model fine-tuned from a pretrained base: its prompt, id sets, byte table and decode step.

The turn layout is the one preprocess wrote (chatbot/base/layout.py, shared code, so the ids are equal by
construction — a test compares them): ``[bos]`` when the tokenizer has one, then per turn
``enc("S1: ") + enc(text) + [eos]``, and the prompt ends with ``enc("S2: ")`` for the bot. Decoding stops at eos;
speakers are plain text, so there are no speaker tokens to stop at or to ban. The reply is streamed through the
same :class:`~chatbot.infer.stream.TextStream` as from-scratch replies, fed by a byte table built for the base
tokenizer (byte-level BPE, or SentencePiece-style ``▁`` pieces with ``<0xNN>`` byte fallback), and decoded by the
same loop (chatbot/infer/decode.py) through :func:`hf_stepper`.
"""

from __future__ import annotations

import json
import re

from typing import Callable

from ..data.tokenizer import _bytes_to_unicode

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(node) -> set[str]:
    if not isinstance(node, dict):
        return set()
    out = {str(node.get("type"))}
    for child in node.get("decoders") or []:
        out |= _decoder_types(child)
    return out


def hf_token_bytes(tokenizer, special: set[int], size: int) -> list[bytes]:
    """Raw bytes of every token id of a base tokenizer (``b""`` for special tokens and ids past the tokenizer),
    so streamed text never splits a UTF-8 sequence that byte-level BPE cut between tokens."""
    backend = tokenizer.backend_tokenizer
    doc = json.loads(backend.to_str())
    types = _decoder_types(doc.get("decoder"))
    added = {t["id"] for t in doc.get("added_tokens") or [] if isinstance(t, dict) and "id" in t}
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
    table = []
    for i in range(size):
        piece = backend.id_to_token(i)
        if i in special or piece is None:
            table.append(b"")
        elif i in added:  # an added (non-special) token is its literal text
            table.append(piece.encode("utf-8"))
        elif "ByteLevel" in types:
            table.append(bytes(byte_decoder[c] for c in piece if c in byte_decoder))
        elif "ByteFallback" in types and _BYTE_PIECE.fullmatch(piece):
            table.append(bytes([int(piece[3:5], 16)]))
        elif "Metaspace" in types or "Replace" in types:
            table.append(piece.replace("\u2581", " ").encode("utf-8"))
        else:  # WordPiece and friends: the token's own decoding
            table.append(backend.decode([i], skip_special_tokens=False).encode("utf-8"))
    return table


def special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special tokens (bos/eos/pad/chat-template markers ...)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids |= {i for i, t in decoder.items() if getattr(t, "special", False)}
    return {int(i) for i in ids if i is not None}


class BaseTurns:
    """Layout, stop/ban sets and byte table of a base model, in the shape the Responder needs."""

    def __init__(self, tokenizer, model):
        from ..base.layout import BaseLayout

        self.layout = BaseLayout(tokenizer)
        vocab = int(model.get_output_embeddings().weight.shape[0])
        n_tok = len(tokenizer)
        specials = special_ids(tokenizer)
        self.eot = self.layout.eos_id
        self.turn_starts: frozenset[int] = frozenset()  # speakers are text: a new turn only follows eos
        self.special = frozenset(specials | {self.eot})  # not in the repetition window
        # never sampled: every special token but eos (pad, bos, chat-template markers) and ids the model has but
        # the tokenizer lacks (vocabularies padded to a multiple of 64/128)
        self.banned = sorted((specials - {self.eot}) | set(range(n_tok, vocab)))
        self.token_bytes = hf_token_bytes(tokenizer, specials, max(vocab, n_tok))

    def encode_turn(self, speaker: str, text: str) -> tuple[list[int], list[int]]:
        return self.layout.turn(speaker, text)

    def prompt(self, turns: list[tuple[list[int], list[int]]], bot: str, budget: int) -> list[int]:
        return build_base_prompt(turns, self.layout.session_start(), self.layout.prefix(bot), budget)


def build_base_prompt(turns: list[tuple[list[int], list[int]]], start: list[int], bot_prefix: list[int],
                      budget: int) -> list[int]:
    """``start + turns + bot_prefix`` in at most ``budget`` tokens (``turns`` = (prefix, body) pairs).

    As for from-scratch prompts: the oldest turns are dropped whole (and the session start with them); a newest
    turn too long by itself keeps its speaker prefix and eos and loses text from the left.
    """
    budget = max(budget, len(bot_prefix) + 2)
    flat = [pre + body for pre, body in turns]
    total = len(start) + sum(map(len, flat)) + len(bot_prefix)
    if total <= budget:
        return [*start, *(t for turn in flat for t in turn), *bot_prefix]
    n, first = total - len(start), 0
    while first < len(flat) - 1 and n > budget:
        n -= len(flat[first])
        first += 1
    kept = flat[first:]
    if n > budget and turns:  # one turn, too long by itself
        pre, body = turns[-1]
        keep = max(0, budget - len(bot_prefix) - len(pre) - 1)
        text = body[:-1]
        kept = [pre + (text[len(text) - keep:] if keep else []) + body[-1:]]
    return [*(t for turn in kept for t in turn), *bot_prefix]


def hf_stepper(model, use_cache: bool = True) -> Callable:
    """The decode step (chatbot/infer/decode.py's contract) of a ``transformers`` model: its DynamicCache (one
    forward per new token) and logits of the last position only (``logits_to_keep=1``: no (T × vocab)
    projection of the prompt); ``use_cache=False`` = the whole sequence every time."""
    if not use_cache:
        return lambda seq, start, end: model(input_ids=seq[None, :end], use_cache=False, logits_to_keep=1).logits[0, -1]
    import inspect

    from transformers import DynamicCache

    try:
        cache = DynamicCache(config=model.config)  # sliding-window layers need the config
    except TypeError:  # older transformers
        cache = DynamicCache()
    # newer transformers call the argument ``cache`` (``past_key_values`` is deprecated there)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    kw = {name: cache, "use_cache": True, "logits_to_keep": 1}
    return lambda seq, start, end: model(input_ids=seq[None, start:end], **kw).logits[0, -1]
