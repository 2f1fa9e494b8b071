"""The ``smoke`` verb: a quick automatic check that the model answers sensibly enough to be used.

A short scripted conversation (``gen.smoke.prompts``) runs through the same Responder that ``chat`` and the
bridge use. It fails (exit 1, one line why) when a reply is empty, leaks special or placeholder tokens, is not
valid UTF-8, repeats the previous reply verbatim, or takes longer than ``smoke.max_latency_s`` — and when the
replies as a whole have collapsed (chatbot.eval.metrics.collapse_reasons: near-identical answers to different
messages, three or more — and most — opening with the same word, or a mean length under 3 characters), the
"same answer to everything" failure that passes every per-reply check. Replies use the
configured seed (plus the turn number), so the same model always gives the same transcript.
"""

from __future__ import annotations

import re
import sys

from .errors import ChatbotError
from .eval.metrics import collapse_reasons
from .generate import load_responder

_LEAK = re.compile(r"<\u2060?\|[^|<>\s]{1,24}\|>")  # <|eot|>, <|spk:S1|>, <|photo|> ... (or escaped forms)
_MARKERS = ("\ue000", "\ue001")


def check_reply(text: str, previous: str | None) -> str | None:
    """Why ``text`` is not an acceptable reply, or None."""
    if not text.strip():
        return "is empty"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "\ufffd" in text:
        return "is not valid UTF-8 (contains a replacement character)"
    if _LEAK.search(text) or any(m in text for m in _MARKERS):
        return "leaks a special or placeholder token"
    if previous is not None and text == previous:
        return "repeats the previous reply verbatim"
    return None


def smoke(cfg) -> int:
    from .security import require_password

    require_password(cfg)
    sm, labels = cfg.gen.smoke, cfg.gen.chat
    if not sm.prompts:
        raise ChatbotError("gen.yaml: smoke.prompts is empty; list a few chat openers")
    responder = load_responder(cfg)
    b = responder.bundle
    print(f"smoke: {b.source.name} (step {b.step}), seed {cfg.gen.sampling.seed}, "
          f"{len(sm.prompts)} turns, latency limit {sm.max_latency_s:g} s", flush=True)
    history: list[tuple[str, str]] = []
    previous: str | None = None
    failure: str | None = None
    confidences, latencies, texts = [], [], []
    for i, prompt in enumerate(sm.prompts, 1):
        history.append(("user", prompt))
        r = responder.reply(history)
        print(f"{labels.user_label}: {prompt}")
        print(f"{labels.bot_label}: {r.text}")
        print(f"    [{r.latency_s:.2f} s, first token {r.first_token_s:.3f} s, {r.n_tokens} tokens, "
              f"confidence {r.confidence:.2f}]", flush=True)
        reason = check_reply(r.text, previous)
        if reason is None and r.latency_s > sm.max_latency_s:
            reason = f"took {r.latency_s:.2f} s (limit smoke.max_latency_s = {sm.max_latency_s:g} s)"
        if reason and failure is None:
            failure = f"reply {i} {reason}"
        if r.text:
            history.append(("bot", r.text))
        previous = r.text
        texts.append(r.text)
        confidences.append(r.confidence)
        latencies.append(r.latency_s)
    if failure is None and len(texts) >= 2:
        collapsed = collapse_reasons(texts)
        if collapsed:
            failure = "the replies collapsed: " + "; ".join(collapsed)
    if failure:
        print(f"smoke failed: {failure}", file=sys.stderr, flush=True)
        return 1
    print(f"smoke ok: {len(latencies)} replies, mean confidence {sum(confidences) / len(confidences):.2f}, "
          f"slowest {max(latencies):.2f} s")
    return 0
