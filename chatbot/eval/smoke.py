"""The ``smoke`` verb: a quick automatic check that the model answers sensibly enough to be used.

A short scripted conversation (``gen.smoke.prompts``) runs through the same Responder that ``chat`` and the
bridge use. It fails (exit 1, one line why) when a reply is empty, leaks special or placeholder tokens, is not
valid UTF-8, repeats the previous reply verbatim, or takes longer than ``smoke.max_latency_s`` — and when the
replies as a whole have collapsed (chatbot.eval.metrics.collapse_reasons: near-identical answers to different
messages, three or more — and most — opening with the same word, or a mean length under 3 characters), the
"same answer to everything" failure that passes every per-reply check. Replies use the
configured seed (plus the turn number), so the same model always gives the same transcript.

Then a group-room script (:data:`GROUP_SCRIPT`): five invented people chat, twice calling the bot by name (the
first of ``bridge.bot_names``, else "하늘"). Under ``reply_policy`` addressed or model (``always`` is tried as
addressed: it cannot stay silent by definition) the bot must answer both calls with an acceptable reply and stay
silent on most other messages (its answers may be empty, but must not leak tokens or broken text).
"""

from __future__ import annotations

import re
import sys

from ..config import ChatConfig, Config, GenConfig
from ..errors import ChatbotError
from .metrics import collapse_reasons
from ..infer.responder import Responder, load_responder

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


GROUP_NAMES = ("가온", "다솜", "보람", "새봄", "아라")  # invented
GROUP_SCRIPT = (  # (speaker index, text); "{bot}" = the bot's name: those messages must be answered
    (0, "다들 주말에 뭐 해?"), (1, "나는 집에서 쉴 거야"), (2, "등산 갈 사람 있어?"), (3, "오 나 갈래"),
    (4, "몇 시에 만나?"), (2, "아침 9시 어때"), (0, "{bot}, 너도 올 수 있어?"), (1, "나는 빠질게 ㅋㅋ"),
    (3, "김밥 싸 갈게"), (4, "좋아 좋아"), (0, "그럼 토요일에 보자"), (2, "@{bot} 너는 김밥 좋아해?"),
)


def group_smoke(responder: Responder, gen: GenConfig, labels: ChatConfig) -> str | None:
    """The group-room script; returns why it failed, or None."""
    from dataclasses import replace

    from ..infer.speakers import RoomSpeakers

    name = next((n.strip() for n in gen.bridge.bot_names if n.strip()), "하늘")
    policy = gen.reply_policy if gen.reply_policy != "always" else "addressed"
    saved = responder.gen
    responder.gen = replace(gen, bridge=replace(gen.bridge, bot_names=[*gen.bridge.bot_names, name]))
    print(f"smoke group room: {len(GROUP_NAMES)} invented people, reply_policy {policy}, the bot is called "
          f"'{name}'", flush=True)
    room, history, failure, spoke_unasked, unasked = RoomSpeakers(), [], None, 0, 0
    try:
        for who, template in GROUP_SCRIPT:
            text = template.format(bot=name)
            slot, _ = room.slot(responder.plan, GROUP_NAMES[who], GROUP_NAMES[who])
            history.append((slot, text))
            r = responder.reply(history, policy=policy, senders=len(GROUP_NAMES))
            prob = "" if r.speak_prob is None else f", P(bot next) {r.speak_prob:.2f}"
            print(f"  {GROUP_NAMES[who]}: {text}")
            print(f"  {labels.bot_label}: {r.text}" if not r.silent else "    (silent)", end="")
            print(f"    [{r.decision}{prob}]", flush=True)
            asked = "{bot}" in template
            if asked and failure is None:
                # the decision is what this script checks; an empty text is the two-person script's business
                # (a tiny model may end a turn at once after an unfamiliar burst of messages)
                reason = "stayed silent" if r.silent else (check_reply(r.text, None) if r.text.strip() else None)
                if reason:
                    failure = f"group room: the reply to '{text}' {reason}"
            if not asked:
                unasked += 1
                spoke_unasked += not r.silent
            if not r.silent and r.text:
                history.append(("bot", r.text))
    finally:
        responder.gen = saved
    if failure is None and spoke_unasked * 2 > unasked:
        failure = (f"group room: the bot spoke on {spoke_unasked} of {unasked} messages not addressed to it "
                   f"(reply_policy {policy}; raise speak_threshold in gen.yaml)")
    return failure


def smoke(cfg: Config) -> int:
    from ..security import require_password

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
    group = getattr(responder, "plan", None) is not None
    for i, prompt in enumerate(sm.prompts, 1):
        history.append(("user", prompt))
        # reply quality; the group script checks reply_policy (a stand-in without speaker slots knows no policy)
        r = responder.reply(history, **({"policy": "always"} if group else {}))
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
    group_failure = group_smoke(responder, cfg.gen, labels) if group else None
    failure = failure or group_failure
    if failure:
        print(f"smoke failed: {failure}", file=sys.stderr, flush=True)
        return 1
    print(f"smoke ok: {len(latencies)} replies, mean confidence {sum(confidences) / len(confidences):.2f}, "
          f"slowest {max(latencies):.2f} s")
    return 0
