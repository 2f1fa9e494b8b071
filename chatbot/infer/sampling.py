"""Choosing each next token: which ids may come at all, when generation stops, the repetition penalty over the
recent tokens, and the sampling knobs of gen.yaml (temperature, top-k, top-p, min-p)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F

from ..config import SamplingConfig


def sample_next(
    logits: torch.Tensor,
    sampling: SamplingConfig,
    recent: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next token from 1-D ``logits`` (modified in place).

    Order as in HF: repetition penalty (CTRL: positive logits divided, negative multiplied) on the ``recent``
    ids → temperature (0 = greedy) → top-k → top-p (the smallest set whose probability reaches top_p; the best
    token always stays) → min-p (drop tokens below min_p × the best token's probability) → sample.
    """
    if sampling.repetition_penalty != 1.0 and recent is not None and recent.numel():
        vals = logits[recent]
        logits[recent] = torch.where(vals > 0, vals / sampling.repetition_penalty, vals * sampling.repetition_penalty)
    if sampling.temperature <= 0:
        return int(logits.argmax())
    logits = logits / sampling.temperature
    V = logits.numel()
    if 0 < sampling.top_k < V:
        vals, idx = torch.topk(logits, sampling.top_k)
    elif sampling.top_p < 1.0 or sampling.min_p > 0.0:
        vals, idx = torch.sort(logits, descending=True)
    else:
        vals, idx = logits, None
    probs = F.softmax(vals, dim=-1)
    if idx is not None:
        if sampling.top_p < 1.0:
            before = probs.cumsum(0) - probs  # probability mass of the better tokens
            probs = probs.masked_fill(before >= sampling.top_p, 0.0)
        if sampling.min_p > 0.0:
            probs = probs.masked_fill(probs < sampling.min_p * probs[0], 0.0)
    choice = int(torch.multinomial(probs, 1, generator=generator))
    return int(idx[choice]) if idx is not None else choice


class TokenPicker:
    """The per-step choice of the decode loop, for one generation.

    ``turn_start_ids`` stop generation when ``sampling.stop_on_next_turn`` and are banned otherwise, so the reply never
    runs into another speaker's turn; ``banned_ids`` are never sampled; ``unpenalized_ids`` (layout tokens, which
    are expected to recur) stay out of the repetition window, which starts with the prompt's tokens.
    """

    def __init__(self, sampling: SamplingConfig, prompt: list[int], *, eot_id: int | None,
                 turn_start_ids: Iterable[int], banned_ids: Iterable[int], unpenalized_ids: Iterable[int], generator: torch.Generator | None,
                 device: torch.device):
        self.sampling, self.eot, self.generator, self.device = sampling, eot_id, generator, device
        turn_starts = set(turn_start_ids)
        stop_at_turns = turn_starts if sampling.stop_on_next_turn else set()
        self.stops = ({eot_id} if eot_id is not None else set()) | stop_at_turns
        banned = set(banned_ids) | (set() if sampling.stop_on_next_turn else turn_starts)
        self.banned = torch.tensor(sorted(banned), dtype=torch.long, device=device) if banned else None
        self.unpenalized = set(unpenalized_ids)
        self.history = [t for t in prompt if t not in self.unpenalized]
        self.penalize = sampling.repetition_penalty != 1.0 and sampling.repetition_window > 0

    def pick(self, logits: torch.Tensor) -> tuple[int, float]:
        """(next token, its log-probability under the model's own distribution, before penalty / temperature /
        filtering)."""
        logits = logits.float()
        logprob_all = F.log_softmax(logits, dim=-1)
        work = logits.clone()
        if self.banned is not None:
            work[self.banned] = -math.inf
        recent = None
        if self.penalize and self.history:
            window = sorted(set(self.history[-self.sampling.repetition_window:]))
            recent = torch.tensor(window, dtype=torch.long, device=self.device)
        tok = sample_next(work, self.sampling, recent, self.generator)
        return tok, float(logprob_all[tok])

    def stop_reason(self, tok: int) -> str | None:
        """"eot" / "next_turn" when ``tok`` ends the reply, else None."""
        if tok not in self.stops:
            return None
        return "eot" if tok == self.eot else "next_turn"

    def remember(self, tok: int) -> None:
        """``tok`` was emitted and is fed back: it joins the repetition window."""
        if tok not in self.unpenalized:
            self.history.append(tok)
