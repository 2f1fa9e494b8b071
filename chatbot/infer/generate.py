"""Turn-level generation: prompt layout, sampling, KV-cached decode, UTF-8-safe streaming, post-processing.

The prompt mirrors the training layout exactly (docs/ARCHITECTURE.md)::

    <|bos|> <|spk:U|> text <|eot|> <|spk:B|> text <|eot|> ... <|spk:U|> new message <|eot|> <|spk:B|>

and the model continues with the bot's turn. Decoding is gpt-fast style: one prefill over the prompt fills the
KV cache, then each step feeds only the newest token (:class:`FastDecoder`, a lean re-statement of
``Transformer.forward`` for that step). Generation stops at ``<|eot|>`` or — with ``stop_on_next_turn`` — as soon
as the model starts somebody else's turn (a speaker token or ``<|bos|>``).

A model fine-tuned from a pretrained base (a ``transformers`` causal LM, see loading_base.py) runs through the same
:func:`generate` loop with its own ``DynamicCache``; its prompt follows chatbot/base/layout.py (generate_base.py).

:func:`generate` also accepts any other module with ``forward(idx, input_pos=None, *, select=None)``,
``setup_cache(batch, max_seq)`` and ``args.block_size`` (it then uses the module's own cache), so tests can swap
in hand-shaped models.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..config import GenConfig, PiiConfig, SamplingConfig
from ..data.conversation import clean_text as clean_message
from ..data.pii import PiiMasker
from ..data.tokenizer import encode_marked, iter_token_bytes, special_id
from ..errors import ChatbotError
from ..model import Transformer
from .speakers import Decision, make_plan, model_decide, pre_decide
from ..tokens import (BOS, EOT, LATER_TOKENS, PAD, PII_TOKENS, PLACEHOLDER_TOKENS, SPEAKER_TOKENS, SPECIAL_TOKENS,
                     is_pseudonym, speaker_token, unescape_text)



# ------------------------------------------------------------------------------------------------ token ids
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


# ------------------------------------------------------------------------------------------------- speakers
def resolve_speakers(persona: dict | None, gen: GenConfig) -> tuple[str, str]:
    """(user, bot) pseudonyms.

    "auto" bot = the trained persona when it is one speaker, else the most active speaker who is not the exporter
    (persona.self); "auto" user = the exporter when known (that is who talks to the bot), else the next most active.
    """
    persona = persona or {}
    speakers = persona.get("speakers") or {}
    ranked = sorted((s for s in speakers if is_pseudonym(str(s))), key=lambda s: (-speakers[s], int(s[1:])))
    ranked += [f"S{i}" for i in range(1, 4) if f"S{i}" not in ranked]  # fallbacks when stats are thin
    target, self_ = persona.get("target"), persona.get("self")
    self_ = self_ if is_pseudonym(self_) else None

    bot = gen.bot_speaker
    if bot == "auto":
        if is_pseudonym(target):
            bot = target
        else:
            bot = next(s for s in ranked if s != self_)
    user = gen.user_speaker
    if user == "auto":
        user = self_ if self_ and self_ != bot else next(s for s in ranked if s != bot)
    for key, value in (("bot_speaker", bot), ("user_speaker", user)):
        if speaker_token(value) not in SPEAKER_TOKENS:
            raise ChatbotError(f"gen.yaml: {key} {value!r} is not a speaker pseudonym (S0 … S64, or auto)")
    if user == bot:
        raise ChatbotError(f"gen.yaml: user_speaker and bot_speaker are both {bot}; pick two different speakers")
    return user, bot


# --------------------------------------------------------------------------------------------------- prompt
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


# ------------------------------------------------------------------------------------------------- sampling
def sample_next(
    logits: torch.Tensor,
    s: SamplingConfig,
    recent: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick the next token from 1-D ``logits`` (modified in place).

    Order as in HF: repetition penalty (CTRL: positive logits divided, negative multiplied) on the ``recent``
    ids → temperature (0 = greedy) → top-k → top-p (the smallest set whose probability reaches top_p; the best
    token always stays) → min-p (drop tokens below min_p × the best token's probability) → sample.
    """
    if s.repetition_penalty != 1.0 and recent is not None and recent.numel():
        vals = logits[recent]
        logits[recent] = torch.where(vals > 0, vals / s.repetition_penalty, vals * s.repetition_penalty)
    if s.temperature <= 0:
        return int(logits.argmax())
    logits = logits / s.temperature
    V = logits.numel()
    if 0 < s.top_k < V:
        vals, idx = torch.topk(logits, s.top_k)
    elif s.top_p < 1.0 or s.min_p > 0.0:
        vals, idx = torch.sort(logits, descending=True)
    else:
        vals, idx = logits, None
    probs = F.softmax(vals, dim=-1)
    if idx is not None:
        if s.top_p < 1.0:
            before = probs.cumsum(0) - probs  # probability mass of the better tokens
            probs = probs.masked_fill(before >= s.top_p, 0.0)
        if s.min_p > 0.0:
            probs = probs.masked_fill(probs < s.min_p * probs[0], 0.0)
    choice = int(torch.multinomial(probs, 1, generator=generator))
    return int(idx[choice]) if idx is not None else choice


# --------------------------------------------------------------------------------------------------- decode
class FastDecoder:
    """The KV-cached forward pass of :class:`~chatbot.model.Transformer`, lean enough for one token per step.

    Same math as ``Transformer.forward`` (the tests compare it token for token with a full recompute), but per
    token it issues about half the tensor ops and no ``nn.Module`` calls: fused ``F.rms_norm``, rotary embedding
    as ``x·cos + roll(x)·sin±``, residual adds folded into ``addmm``, attention of the new token over a slice of a
    preallocated cache (no mask needed), and logits of the last position only, through a contiguous transposed
    copy of the output projection (about 3x faster than ``F.linear`` for a one-row input on CPU). Decoding a
    token is bound by this fixed per-op overhead and by reading the weights, not by arithmetic.

    Buffers: the cache (2 × n_layer × n_kv_head × max_seq × head_dim) and the transposed output projection
    (vocab × n_embd), allocated once. Not thread-safe: the Responder's lock serializes its use.
    """

    def __init__(self, model: Transformer, max_seq: int | None = None):
        a = model.args
        self.model, self.args = model, a
        self.max_seq = min(max_seq or a.block_size, a.block_size)
        p = model.lm_head.weight
        self.k = torch.zeros(a.n_layer, a.n_kv_head, self.max_seq, a.head_dim, dtype=p.dtype, device=p.device)
        self.v = torch.zeros_like(self.k)
        half = a.head_dim // 2
        self.cos = model.rope_cos.to(p.dtype)
        self.sin = torch.cat((-model.rope_sin[:, :half], model.rope_sin[:, half:]), dim=-1).to(p.dtype)
        self.lm_head_t = p.detach().t().contiguous()
        self.layers = [
            (blk.input_layernorm.weight, blk.self_attn.q_proj, blk.self_attn.k_proj, blk.self_attn.v_proj,
             blk.self_attn.o_proj, blk.post_attention_layernorm.weight, blk.mlp.gate_proj, blk.mlp.up_proj,
             blk.mlp.down_proj)
            for blk in model.model.layers
        ]

    @staticmethod
    def _linear_add(x: torch.Tensor, y: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
        """x + lin(y) in one op when there is no bias."""
        if lin.bias is None:
            return torch.addmm(x, y, lin.weight.t())
        return x + F.linear(y, lin.weight, lin.bias)

    def forward(self, idx: torch.Tensor, start: int) -> torch.Tensor:
        """idx (T,) at positions start … start+T-1 → logits (V,) of the last one; the cache is updated."""
        a = self.args
        T, H, K, D, C, eps = idx.shape[0], a.n_head, a.n_kv_head, a.head_dim, a.n_embd, a.norm_eps
        end = start + T
        if end > self.max_seq:
            raise ValueError(f"position {end - 1} is past the cache ({self.max_seq} tokens)")
        cos, sin = self.cos[start:end, None], self.sin[start:end, None]  # (T, 1, D)
        mask = None
        if T > 1 and start > 0:  # a chunk after cached tokens: causal mask aligned to the end
            mask = torch.ones(T, end, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        x = F.embedding(idx, self.model.model.embed_tokens.weight)  # (T, C)
        gqa = H != K
        for i, (n1, q_proj, k_proj, v_proj, o_proj, n2, gate, up, down) in enumerate(self.layers):
            h = F.rms_norm(x, (C,), n1, eps)
            q = F.linear(h, q_proj.weight, q_proj.bias).view(T, H, D)
            k = F.linear(h, k_proj.weight, k_proj.bias).view(T, K, D)
            v = F.linear(h, v_proj.weight, v_proj.bias).view(T, K, D)
            q = torch.addcmul(q * cos, q.roll(D // 2, -1), sin)
            k = torch.addcmul(k * cos, k.roll(D // 2, -1), sin)
            self.k[i, :, start:end] = k.transpose(0, 1)
            self.v[i, :, start:end] = v.transpose(0, 1)
            y = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], self.k[i, None, :, :end], self.v[i, None, :, :end],
                attn_mask=mask, is_causal=T > 1 and start == 0, enable_gqa=gqa,
            )  # (1, H, T, D)
            x = self._linear_add(x, y[0].transpose(0, 1).reshape(T, H * D), o_proj)
            h = F.rms_norm(x, (C,), n2, eps)
            g = F.silu(F.linear(h, gate.weight, gate.bias)).mul_(F.linear(h, up.weight, up.bias))
            x = self._linear_add(x, g, down)
        last = F.rms_norm(x[-1:], (C,), self.model.model.norm.weight, eps)
        return (last @ self.lm_head_t)[0]


def is_hf_model(model) -> bool:
    """A ``transformers`` causal LM (a run fine-tuned from a pretrained base) rather than our Transformer."""
    return not hasattr(model, "args") and hasattr(model, "config")


def block_size_of(model) -> int:
    """Positions the model can attend over: our ``args.block_size``, or the HF config's context length."""
    if is_hf_model(model):
        return int(getattr(model.config, "max_position_embeddings", 0) or 4096)
    return model.args.block_size


def _hf_stepper(model, use_cache: bool) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """The same contract for a ``transformers`` model: its DynamicCache (one forward per new token) and logits of
    the last position only (``logits_to_keep=1``: no (T × vocab) projection of the prompt)."""
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


def _stepper(model, use_cache: bool, decoder: FastDecoder | None) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """``step(seq, start, end)`` → next-token logits after ``seq[:end]``, given that ``seq[:start]`` was already
    fed (0 = nothing yet)."""
    if is_hf_model(model):
        return _hf_stepper(model, use_cache)
    if use_cache and decoder is None and isinstance(model, Transformer):
        decoder = FastDecoder(model)
    if use_cache and decoder is not None:
        return lambda seq, start, end: decoder.forward(seq[start:end], start)
    if use_cache:  # any module with the Transformer's own cache interface (setup_cache + input_pos)
        return lambda seq, start, end: model(
            seq[None, start:end], torch.arange(start, end, device=seq.device), select=seq.new_tensor([end - start - 1])
        )[-1]
    # no cache: the whole sequence every time (the reference; only the last position is projected to logits)
    return lambda seq, start, end: model(seq[None, :end], select=seq.new_tensor([end - 1]))[-1]


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
    s: SamplingConfig,
    *,
    eot_id: int | None = None,
    turn_start_ids: Iterable[int] = (),
    banned_ids: Iterable[int] = (),
    unpenalized_ids: Iterable[int] = (),
    generator: torch.Generator | None = None,
    on_token: Callable[[int], bool] | None = None,
    use_cache: bool = True,
    max_new_tokens: int | None = None,
    decoder: FastDecoder | None = None,
    decode_threads: int = 0,
    speak_tokens: int = 0,
    speak_decide: Callable[[float], bool] | None = None,
) -> Generation:
    """Continue ``prompt`` token by token.

    ``use_cache`` = prefill once, then one token per step through a KV cache: a :class:`FastDecoder` for our
    Transformer (pass one in to reuse its buffers), else the module's own cache (``setup_cache`` + ``input_pos``).
    ``use_cache=False`` recomputes the whole sequence every step (the reference the tests and the benchmark
    compare against). ``turn_start_ids`` stop generation when ``s.stop_on_next_turn`` and are banned otherwise,
    so the reply never runs into another speaker's turn. ``banned_ids`` are never sampled.
    ``on_token(id) -> True`` stops early (after that token). Log-probs are of the model's own distribution
    (before penalty / temperature / filtering). ``decode_threads`` > 0 = torch CPU threads for the one-token steps
    (the prefill keeps torch's setting, which is restored afterwards).

    ``speak_tokens`` = k > 0: the prompt's last k tokens are the bot's speaker marker (one speaker token, or the
    text prefix ``"S2: "`` of a pretrained base). The prefill then stops before them, and they are fed one token
    at a time through the same cache while their probabilities are read: ``speak_prob`` = P(the bot speaks next
    after the latest turn's end). No second model run: k single-token steps that the prompt needed anyway.
    ``speak_decide(prob) -> False`` ends there with ``stop_reason`` "silent" and no tokens.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    block = block_size_of(model)
    max_new = s.max_new_tokens if max_new_tokens is None else max_new_tokens
    turn_starts = set(turn_start_ids)
    stops = ({eot_id} if eot_id is not None else set()) | (turn_starts if s.stop_on_next_turn else set())
    banned = set(banned_ids) | (set() if s.stop_on_next_turn else turn_starts)
    banned_t = torch.tensor(sorted(banned), dtype=torch.long, device=device) if banned else None
    skip = set(unpenalized_ids)
    history = [t for t in prompt if t not in skip]  # repetition window (layout tokens are expected to recur)
    window = s.repetition_window
    use_penalty = s.repetition_penalty != 1.0 and window > 0
    if not 0 < len(prompt) <= block:
        raise ValueError(f"prompt of {len(prompt)} tokens does not fit block_size {block}")

    step_fn = _stepper(model, use_cache, decoder)
    seq = torch.empty(block, dtype=torch.long, device=device)
    seq[: len(prompt)] = torch.tensor(prompt, dtype=torch.long, device=device)
    n = len(prompt)
    speak_prob = None
    if 0 < speak_tokens < n:
        n0 = n - speak_tokens
        logits = step_fn(seq, 0, n0)
        logp = 0.0
        for j in range(n0, n):
            logp += float(F.log_softmax(logits.float(), dim=-1)[prompt[j]])
            if j < n - 1:
                logits = step_fn(seq, j, j + 1)
        speak_prob = math.exp(logp)
        if speak_decide is not None and not speak_decide(speak_prob):
            return Generation([], [], "silent", 0.0, time.perf_counter() - t0, speak_prob)
        logits = step_fn(seq, n - 1, n)  # the marker's last token: its logits start the reply
    else:
        logits = step_fn(seq, 0, n)
    prefill_s = time.perf_counter() - t0
    tokens: list[int] = []
    logprobs: list[float] = []
    first_token_s = 0.0
    reason = "max_new_tokens"
    threads = torch.get_num_threads()
    switch = device.type == "cpu" and 0 < decode_threads != threads
    if switch:
        torch.set_num_threads(decode_threads)
    try:
        for step in range(max_new):
            logits = logits.float()
            logprob_all = F.log_softmax(logits, dim=-1)
            work = logits.clone()
            if banned_t is not None:
                work[banned_t] = -math.inf
            recent = None
            if use_penalty and history:
                recent = torch.tensor(sorted(set(history[-window:])), dtype=torch.long, device=device)
            tok = sample_next(work, s, recent, generator)
            tokens.append(tok)
            logprobs.append(float(logprob_all[tok]))
            if step == 0:
                first_token_s = time.perf_counter() - t0
            if tok in stops:
                reason = "eot" if tok == eot_id else "next_turn"
                break
            if on_token is not None and on_token(tok):
                reason = "callback"
                break
            if step == max_new - 1:
                break
            if n >= block:  # no position left to feed this token
                reason = "context_full"
                break
            if tok not in skip:
                history.append(tok)
            seq[n] = tok
            n += 1
            logits = step_fn(seq, n - 1, n)
    finally:
        if switch:
            torch.set_num_threads(threads)
    return Generation(tokens, logprobs, reason, first_token_s, prefill_s, speak_prob)


# ------------------------------------------------------------------------------------------ post-processing
_NAMES = "|".join(re.escape(t[2:-2]) for t in SPECIAL_TOKENS)
_LOOKALIKE = re.compile(rf"<\u2060?\|(?:{_NAMES})\|>")  # a special token (or its escaped form) written as text
_MARKERS = re.compile("[\ue000\ue001\x00-\x08\x0b-\x1f\x7f]")  # placeholder markers, control characters


def clean_text(text: str, max_chars: int) -> str:
    """Only the sentence: no special-token text, no placeholder markers or control characters (newlines and tabs
    stay), trimmed, at most ``max_chars``."""
    text = _MARKERS.sub("", _LOOKALIKE.sub("", text))
    return unescape_text(text).strip()[:max_chars].rstrip()


def _stable_prefix(text: str) -> str:
    """The part of a growing reply that later tokens can no longer change under :func:`clean_text`.

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
        stable = clean_text(_stable_prefix(self.raw), self.max_chars)
        self._emit(stable)
        return len(stable) >= self.max_chars

    def finish(self) -> str:
        self.raw += self.decoder.decode(b"", final=True)
        text = clean_text(self.raw, self.max_chars)
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


# -------------------------------------------------------------------------------------------------- replies
@dataclass
class Reply:
    """One bot turn. confidence = mean log-probability of the generated tokens (≤ 0; closer to 0 = surer)."""

    text: str
    confidence: float
    n_tokens: int
    latency_s: float
    first_token_s: float
    stop_reason: str = ""
    prompt_tokens: int = 0
    silent: bool = False  # the bot stays silent (reply_policy); text is "" then
    speak_prob: float | None = None  # P(the bot's speaker comes next), None when not computed
    decision: str = ""  # why it spoke or not: always, two_person, addressed, model, not_addressed, below_threshold


class Responder:
    """A loaded model that answers a conversation as the bot speaker. Thread-safe (one generation at a time).

    Messages are cleaned and PII-masked (``pii``: the preprocess settings, default all classes) exactly as the
    training text was, so a phone number typed in chat reaches the model as the ``<|phone|>`` it learned.
    """

    def __init__(self, bundle, gen: GenConfig, pii: PiiConfig | None = None):
        self.bundle, self.gen = bundle, gen
        self.model, self.tok = bundle.model, bundle.tokenizer
        # a pretrained base reads placeholders as text; our own tokenizer may predate a placeholder class
        self.masker = PiiMasker(pii if is_hf_model(self.model) else pii_for_tokenizer(pii, self.tok))
        self.user_speaker, self.bot_speaker = resolve_speakers(bundle.persona, gen)
        self.plan = make_plan(bundle.persona, self.user_speaker, self.bot_speaker)
        self.lock = threading.Lock()
        self.decoder: FastDecoder | None = None
        self.block_size = block_size_of(self.model)
        if is_hf_model(self.model):  # fine-tuned from a pretrained base: its tokenizer, text speaker prefixes
            from .generate_base import BaseTurns

            self.base = BaseTurns(self.tok, self.model)
            self.ids = None
            self.eot, self.turn_starts, self.special = self.base.eot, self.base.turn_starts, self.base.special
            self.banned, self.token_bytes = self.base.banned, self.base.token_bytes
            return
        self.base = None
        self.ids = TokenIds.from_tokenizer(self.tok)
        self.eot, self.turn_starts, self.special = self.ids.eot, self.ids.turn_starts, self.ids.special
        vocab = self.model.args.vocab_size
        self.token_bytes = token_byte_table(self.tok, self.ids.special)
        self.token_bytes += [b""] * max(0, vocab - len(self.token_bytes))
        # never sampled: padding, placeholders (a media/PII placeholder is nothing the bot can send) and ids the
        # model has but the tokenizer lacks
        extra = range(len(self.tok.get_vocab(with_added_tokens=True)), vocab)
        self.banned = sorted({self.ids.pad, *self.ids.placeholders, *extra})
        if isinstance(self.model, Transformer):
            self.decoder = FastDecoder(self.model)
        else:
            self.model.setup_cache(1, self.block_size)

    def learn_names(self, names: dict[str, str]) -> None:
        """Real name → pseudonym of the training data, so a known person keeps their slot in a room."""
        self.plan = make_plan(self.bundle.persona, self.user_speaker, self.bot_speaker, names)

    def pseudonym(self, speaker: str) -> str:
        """A history speaker id as the model's pseudonym: "user"/"bot" shorthands or a slot "S<n>"."""
        if speaker == "user":
            return self.user_speaker
        if speaker == "bot":
            return self.bot_speaker
        if is_pseudonym(speaker) and speaker_token(speaker) in SPEAKER_TOKENS:
            return speaker
        raise ValueError(f"history speaker must be 'user', 'bot' or a pseudonym S0…S64, got {speaker!r}")

    def encode_history(self, history: list[tuple[str, str]]) -> list[list[int]]:
        """Turns as token lists; consecutive messages of one speaker merge into one turn (as preprocess merges
        bursts), empty messages are skipped."""
    def encode_history(self, history: list[tuple[str, str]]) -> list:
        """Turns as token lists (a pretrained base: (speaker prefix, text + eos) pairs); consecutive messages of
        one side merge into one turn (as preprocess merges bursts), empty messages are skipped."""
        merged: list[tuple[str, str]] = []
        for speaker, text in history:
            role = self.pseudonym(speaker)
            text = normalize_text(text)
            if not text:
                continue
            text = self.masker.mask(text)
            if merged and merged[-1][0] == role:
                merged[-1] = (role, merged[-1][1] + "\n" + text)
            else:
                merged.append((role, text))
        if self.base is not None:  # speakers are the text prefix "S3: " of the base layout
            return [self.base.encode_turn(role, text) for role, text in merged]
        return [encode_turn(self.tok, self.ids, role, text) for role, text in merged]

    def prompt_ids(self, history: list[tuple[str, str]]) -> list[int]:
        return self.prompt_from_turns(self.encode_history(history))

    def prompt_from_turns(self, turns: list) -> list[int]:
        """The prompt for already-encoded turns (as :meth:`encode_history` returns them), cut to the budget."""
        budget = context_budget(self.block_size, self.gen)
        if self.base is not None:
            return self.base.prompt(turns, self.bot_speaker, budget)
        return build_prompt(turns, self.ids.bos, self.ids.speakers[self.bot_speaker], budget)

    def speak_tokens(self) -> int:
        """How many tokens at the end of a prompt mark the bot's turn: one speaker token, or for a model
        fine-tuned from a pretrained base the text prefix ``"S2: "`` (its tokens' probabilities multiply)."""
        base = getattr(self, "base", None)
        if base is not None:
            return len(base.layout.prefix(self.bot_speaker))
        return 1

    def pre_decision(self, history: list[tuple[str, str]], policy: str | None, senders: int | None) -> Decision | None:
        """The reply_policy decision that needs no model (None: the model's probability decides)."""
        policy = policy or self.gen.reply_policy
        last = next((t for s, t in reversed(history) if s != "bot" and s != self.bot_speaker), "")
        if senders is None:
            senders = len({self.pseudonym(s) for s, _ in history} - {self.bot_speaker})
        return pre_decide(policy, last, self.gen.bridge.bot_names, senders)

    def reply(self, history: list[tuple[str, str]], *, seed: int | None = None, on_text=None,
              sampling: SamplingConfig | None = None, cancel: Callable[[], bool] | None = None,
              policy: str | None = None, senders: int | None = None) -> Reply:
        """The bot's next turn after ``history`` ([(speaker, text), ...], oldest first; speaker = "user", "bot"
        or a pseudonym slot such as "S3", see chatbot/infer/speakers.py).

        ``policy`` overrides ``gen.reply_policy`` (kakao-skill passes "always"); ``senders`` = distinct people
        in the room besides the bot (None = counted in ``history``). A silent decision returns a Reply with
        ``silent`` True and no text; ``speak_prob`` is filled whenever the model ran.

        ``seed`` None = ``sampling.seed`` + the number of history entries: the same conversation always gets
        the same reply, while successive turns do not reuse one noise sequence. ``on_text(str)`` receives the
        reply as it grows (whole characters only). ``sampling`` replaces gen.yaml's sampling for this reply (an API
        request's temperature, top_p, max_tokens); ``cancel() -> True`` stops generation after the current token
        (a client that went away; stop_reason "callback").
        """
        t0 = time.perf_counter()
        pre = self.pre_decision(history, policy, senders)
        if pre is not None and not pre.speak:  # no model run at all
            return Reply("", float("-inf"), 0, time.perf_counter() - t0, 0.0, "silent", silent=True, decision=pre.reason)
        seed = seed if seed is not None else (sampling or self.gen.sampling).seed + len(history)
        return self.reply_to_turns(self.encode_history(history), seed=seed, on_text=on_text, t0=t0,
                                   sampling=sampling, cancel=cancel, pre=pre)

    def reply_to_turns(self, turns: list[list[int]], *, seed: int, on_text=None, t0: float | None = None,
                       sampling: SamplingConfig | None = None, cancel: Callable[[], bool] | None = None,
                       pre: Decision | None = Decision(True, "always")) -> Reply:
        """The bot's next turn after turns that are already encoded as :meth:`encode_history` encodes them (oldest
        first): ``eval`` feeds the processed validation turns through here, the same decode path as ``reply``.
        ``pre`` = the reply_policy decision made without the model (default: speak); None = the model's
        probability decides (``reply_policy: model``). The speak probability is read either way."""
        t0 = time.perf_counter() if t0 is None else t0
        decided: list[Decision] = []

        def decide(prob: float) -> bool:
            d = pre if pre is not None else model_decide(prob, self.gen.speak_threshold)
            decided.append(Decision(d.speak, d.reason, prob))
            return d.speak

        prompt = self.prompt_from_turns(turns)
        s = sampling or self.gen.sampling
        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        stream = TextStream(self.token_bytes, self.gen.max_chars, on_text)
        with self.lock:
            t_gen = time.perf_counter()
            out = generate(
                self.model, prompt, s,
                eot_id=self.eot,
                turn_start_ids=self.turn_starts,
                banned_ids=self.banned,
                unpenalized_ids=self.special,
                generator=gen,
                on_token=stream.push if cancel is None else (lambda tok: stream.push(tok) or bool(cancel())),
                decoder=self.decoder,
                decode_threads=self.gen.decode_threads,
                speak_tokens=self.speak_tokens(),
                speak_decide=decide,
            )
        d = decided[0] if decided else (pre or Decision(True, "always"))
        if out.stop_reason == "silent":
            return Reply("", float("-inf"), 0, time.perf_counter() - t0, 0.0, "silent", len(prompt), silent=True,
                         speak_prob=out.speak_prob, decision=d.reason)
        text = stream.finish()
        conf = sum(out.logprobs) / len(out.logprobs) if out.logprobs else float("-inf")
        first = t_gen - t0 + out.first_token_s
        return Reply(text, conf, len(out.tokens), time.perf_counter() - t0, first, out.stop_reason, len(prompt),
                     speak_prob=out.speak_prob, decision=d.reason)


def load_responder(cfg) -> Responder:
    """Load the preferred model (gen.yaml model_preference) and wrap it. Does NOT check the password: callers
    call ``chatbot.security.require_password(cfg)`` first."""
    from .loading import load_bundle

    from .speakers import load_learned_names

    responder = Responder(load_bundle(cfg), cfg.gen, cfg.paths.processed.preprocess.pii)
    responder.learn_names(load_learned_names(cfg.processed_dir))  # private, local, in memory only
    return responder
