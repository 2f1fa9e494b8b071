"""The Responder: a loaded model that answers a conversation as the bot speaker — what ``reply``, ``chat``, the
bridge, the API, ``smoke``, ``eval`` and the trainer's sample replies all call.

One message goes clean → PII-mask → encode (as preprocess wrote the training text), the turns are cut to the
context budget (chatbot/infer/prompt.py, or generate_base.py for a pretrained base), the reply_policy decides
whether the bot speaks (chatbot/infer/speakers.py), and the reply is decoded (decode.py) and streamed as clean
text (stream.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import Config, GenConfig, PiiConfig, SamplingConfig
from ..data.pii import PiiMasker
from ..tokens import SPEAKER_TOKENS, is_pseudonym, speaker_token
from .decode import block_size_of, generate, is_hf_model
from .persona import resolve_speakers
from .prompt import TokenIds, build_prompt, context_budget, encode_turn, normalize_text, pii_for_tokenizer
from .speakers import Decision, make_plan, model_decide, pre_decide
from .stream import TextStream, token_byte_table


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
        self.block_size = block_size_of(self.model)
        self.cache = None  # our model's KV cache, allocated once and reused by every reply (under the lock)
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
        self.cache = self.model.new_cache()

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
            return Reply("", float("-inf"), 0, time.perf_counter() - t0, 0.0, "silent", silent=True,
                         decision=pre.reason)
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
            decision = pre if pre is not None else model_decide(prob, self.gen.speak_threshold)
            decided.append(Decision(decision.speak, decision.reason, prob))
            return decision.speak

        prompt = self.prompt_from_turns(turns)
        stream = TextStream(self.token_bytes, self.gen.max_chars, on_text)
        on_token = stream.push if cancel is None else (lambda tok: stream.push(tok) or bool(cancel()))
        with self.lock:
            t_gen = time.perf_counter()
            out = self._generate(prompt, sampling or self.gen.sampling, seed, on_token, decide)
        decision = decided[0] if decided else (pre or Decision(True, "always"))
        if out.stop_reason == "silent":
            return Reply("", float("-inf"), 0, time.perf_counter() - t0, 0.0, "silent", len(prompt), silent=True,
                         speak_prob=out.speak_prob, decision=decision.reason)
        text = stream.finish()
        confidence = sum(out.logprobs) / len(out.logprobs) if out.logprobs else float("-inf")
        first_token_s = t_gen - t0 + out.first_token_s
        return Reply(text, confidence, len(out.tokens), time.perf_counter() - t0, first_token_s, out.stop_reason,
                     len(prompt), speak_prob=out.speak_prob, decision=decision.reason)

    def _generate(self, prompt: list[int], sampling: SamplingConfig, seed: int, on_token, decide):
        """One decode of ``prompt`` with this model's id sets, cache and threads (the caller holds the lock)."""
        generator = torch.Generator(device=next(self.model.parameters()).device)
        generator.manual_seed(seed)
        return generate(
            self.model, prompt, sampling,
            eot_id=self.eot,
            turn_start_ids=self.turn_starts,
            banned_ids=self.banned,
            unpenalized_ids=self.special,
            generator=generator,
            on_token=on_token,
            cache=self.cache,
            decode_threads=self.gen.decode_threads,
            speak_tokens=self.speak_tokens(),
            speak_decide=decide,
        )


def load_responder(cfg: Config) -> Responder:
    """Load the preferred model (gen.yaml model_preference) and wrap it. Does NOT check the password: callers
    call ``chatbot.security.require_password(cfg)`` first."""
    from .loading import load_bundle
    from .speakers import load_learned_names

    responder = Responder(load_bundle(cfg), cfg.gen, cfg.paths.processed.preprocess.pii)
    responder.learn_names(load_learned_names(cfg.processed_dir))  # private, local, in memory only
    return responder
