"""Who the bot is: the (user, bot) pseudonyms a model answers as, chosen once for ``reply``, ``chat``, the
bridge, the API, ``eval`` and the trainer's sample replies."""

from __future__ import annotations

from ..config import GenConfig
from ..errors import ChatbotError
from ..tokens import SPEAKER_TOKENS, is_pseudonym, speaker_token


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
