"""The one cached decode path: prefill the prompt once, then one token per step, for every front end (``reply``,
``chat``, the bridge, the API, ``smoke``, ``eval`` and the trainer's sample replies).

A step is ``step(seq, start, end)`` → the logits after ``seq[:end]``, given that ``seq[:start]`` was fed already
(:func:`make_stepper`). Our Transformer runs its own block maths through a :class:`~chatbot.model.KVCache`
(``model.decode``); a model fine-tuned from a pretrained base (a ``transformers`` causal LM) runs through its
``DynamicCache`` (:func:`~chatbot.infer.generate_base.hf_stepper`). Around it the same loop, token choice
(chatbot/infer/sampling.py) and stop rules serve both. Generation stops at ``<|eot|>`` or — with
``stop_on_next_turn`` — as soon as the model starts somebody else's turn (a speaker token or ``<|bos|>``).

Any other module with ``forward(idx, *, select=None)``, ``new_cache()``, ``decode(idx, start, cache)`` and
``args.block_size`` decodes the same way, so tests can swap in hand-shaped models.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from ..config import SamplingConfig
from .generate_base import hf_stepper
from .sampling import TokenPicker

Step = Callable[[torch.Tensor, int, int], torch.Tensor]


def is_hf_model(model) -> bool:
    """A ``transformers`` causal LM (a run fine-tuned from a pretrained base) rather than our Transformer."""
    return not hasattr(model, "args") and hasattr(model, "config")


def block_size_of(model) -> int:
    """Positions the model can attend over: our ``args.block_size``, or the HF config's context length."""
    if is_hf_model(model):
        return int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    return model.args.block_size


def make_stepper(model, use_cache: bool = True, cache: Any = None) -> Step:
    """The step function for ``model``: through its KV cache (``cache``: reuse one from ``model.new_cache()``;
    None = a fresh one), or with ``use_cache=False`` the whole sequence every time (the reference the tests and
    the benchmark compare against; only the last position is projected to logits)."""
    if is_hf_model(model):
        return hf_stepper(model, use_cache)
    if not use_cache:
        return lambda seq, start, end: model(seq[None, :end], select=seq.new_tensor([end - 1]))[-1]
    cache = model.new_cache() if cache is None else cache
    return lambda seq, start, end: model.decode(seq[start:end], start, cache)


@dataclass
class Generation:
    """Raw result of :func:`generate`: sampled ids (the stop token included), their log-probs, why it stopped."""

    tokens: list[int]
    logprobs: list[float]
    stop_reason: str  # eot | next_turn | max_new_tokens | context_full | callback | silent
    first_token_s: float
    prefill_s: float
    speak_prob: float | None = None  # P(the prompt's last ``speak_tokens`` come next), when asked for


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    prompt: list[int],
    sampling: SamplingConfig,
    *,
    eot_id: int | None = None,
    turn_start_ids: Iterable[int] = (),
    banned_ids: Iterable[int] = (),
    unpenalized_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
    on_token: Callable[[int], bool] | None = None,
    use_cache: bool = True,
    max_new_tokens: int | None = None,
    cache: Any = None,
    decode_threads: int = 0,
    speak_tokens: int = 0,
    speak_decide: Callable[[float], bool] | None = None,
) -> Generation:
    """Continue ``prompt`` token by token (:func:`make_stepper` for ``use_cache`` / ``cache``; the token choice
    and the id sets as :class:`~chatbot.infer.sampling.TokenPicker` says).

    ``on_token(id) -> True`` stops early (after that token). ``decode_threads`` > 0 = torch CPU threads for the
    one-token steps (the prefill keeps torch's setting, which is restored afterwards).

    ``speak_tokens`` = k > 0: the prompt's last k tokens are the bot's speaker marker (one speaker token, or the
    text prefix ``"S2: "`` of a pretrained base). The prefill then stops before them, and they are fed one token
    at a time through the same cache while their probabilities are read: ``speak_prob`` = P(the bot speaks next
    after the latest turn's end). No second model run: k single-token steps that the prompt needed anyway.
    ``speak_decide(prob) -> False`` ends there with ``stop_reason`` "silent" and no tokens.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    block = block_size_of(model)
    if not 0 < len(prompt) <= block:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit block_size {block}")
    picker = TokenPicker(sampling, prompt, eot_id=eot_id, turn_start_ids=turn_start_ids, banned_ids=banned_ids,
                         unpenalized_ids=unpenalized_ids, generator=generator, device=device)
    step = make_stepper(model, use_cache, cache)
    seq = torch.empty(block, dtype=torch.long, device=device)
    seq[: len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    n = len(prompt)
    speak_prob = None
    if 0 < speak_tokens < n:
        speak_prob = _speak_probability(step, seq, prompt, speak_tokens)
        if speak_decide is not None and not speak_decide(speak_prob):
            return Generation([], [], "silent", 0.0, time.perf_counter() - t0, speak_prob)
        logits = step(seq, n - 1, n)  # the marker's last token: its logits start the reply
    else:
        logits = step(seq, 0, n)
    prefill_s = time.perf_counter() - t0
    max_new = sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
    with _threads(device, decode_threads):
        out = _decode_loop(step, seq, n, logits, picker, max_new, on_token, t0)
    return Generation(*out, prefill_s=prefill_s, speak_prob=speak_prob)


def _speak_probability(step: Step, seq: torch.Tensor, prompt: list[int], k: int) -> float:
    """Feed the prompt up to (not including) its last token and return P(its last ``k`` tokens | what precedes)."""
    n = len(prompt)
    logits = step(seq, 0, n - k)
    logp = 0.0
    for j in range(n - k, n):
        logp += float(F.log_softmax(logits.float(), dim=-1)[prompt[j]])
        if j < n - 1:
            logits = step(seq, j, j + 1)
    return math.exp(logp)


def _decode_loop(step: Step, seq: torch.Tensor, n: int, logits: torch.Tensor, picker: TokenPicker, max_new: int,
                 on_token: Callable[[int], bool] | None, t0: float) -> tuple[list[int], list[float], str, float]:
    """(tokens, log-probs, stop reason, time to the first token) of up to ``max_new`` steps after ``seq[:n]``,
    whose next-token ``logits`` are given."""
    tokens: list[int] = []
    logprobs: list[float] = []
    first_token_s = 0.0
    for i in range(max_new):
        tok, logprob = picker.pick(logits)
        tokens.append(tok)
        logprobs.append(logprob)
        if i == 0:
            first_token_s = time.perf_counter() - t0
        if (reason := picker.stop_reason(tok)) is not None:
            return tokens, logprobs, reason, first_token_s
        if on_token is not None and on_token(tok):
            return tokens, logprobs, "callback", first_token_s
        if i == max_new - 1:
            break
        if n >= len(seq):  # no position left to feed this token
            return tokens, logprobs, "context_full", first_token_s
        picker.remember(tok)
        seq[n] = tok
        n += 1
        logits = step(seq, n - 1, n)
    return tokens, logprobs, "max_new_tokens", first_token_s


@contextlib.contextmanager
def _threads(device: torch.device, threads: int) -> Iterator[None]:
    """torch CPU threads set to ``threads`` (> 0) for the block, restored afterwards."""
    before = torch.get_num_threads()
    switch = device.type == "cpu" and 0 < threads != before
    if switch:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if switch:
            torch.set_num_threads(before)
