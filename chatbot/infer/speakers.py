"""Group rooms at inference: which pseudonym slot each sender of a room speaks as, and whether the bot speaks.

The model learned every speaker of its rooms as a pseudonym (``S1`` … ``S64``, ``S0`` for the rest). At inference
a room has its own senders (Kakao user ids, relay sender names, ``chat``'s ``/as NAME``); each distinct sender gets
a *stable* slot the model knows:

1. a sender whose name the training data knew (``speakers.json``, private, read locally only) gets their learned
   pseudonym when it is free in the room;
2. else the shorthand ``"user"`` (the Responder's ``user_speaker``) while no one holds it, so a two-person room
   reads exactly as before;
3. otherwise the next free known slot, most active first (the persona's speakers from stats.json);
4. when the known slots are used up, every further sender shares the "other" slot (``S0`` when the model learned
   it, else the least active known slot); the bridge logs that once per room.

Only keyed hashes of sender ids are stored (``RoomSpeakers.senders``); real names stay in memory. The decision
"speak or stay silent" (:func:`decide`) is here too, so every front end applies one rule.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from ..tokens import OTHER_SPEAKER, is_pseudonym

USER, BOT = "user", "bot"


@dataclass(frozen=True)
class SpeakerPlan:
    """The slots a model offers a room: ``free`` = known non-bot slots in the order they are handed out (after
    ``"user"``), ``other`` = the slot overflow senders share, ``learned`` = normalized real name → pseudonym."""

    user: str
    bot: str
    free: tuple[str, ...] = ()
    other: str = USER
    learned: dict = field(default_factory=dict)

    @property
    def capacity(self) -> int:
        """Distinct senders that get a slot of their own."""
        return 1 + len(self.free)


def is_slot(value) -> bool:
    """A speaker id a stored history may hold: "user", "bot" or a pseudonym "S<n>"."""
    return isinstance(value, str) and (value in (USER, BOT) or is_pseudonym(value))


def name_key(name: str) -> str:
    """How sender names are compared: NFC, trimmed, case-blind."""
    return unicodedata.normalize("NFC", name).strip().casefold()


def make_plan(persona: dict | None, user: str, bot: str, learned: dict[str, str] | None = None) -> SpeakerPlan:
    """The slot plan for a model with ``persona`` (stats.json's) whose Responder speaks ``bot`` to ``user``."""
    speakers = (persona or {}).get("speakers") or {}
    counts = {str(s): int(n) for s, n in speakers.items() if is_pseudonym(str(s)) and isinstance(n, int)}
    ranked = sorted((s for s, n in counts.items() if n > 0 and s != OTHER_SPEAKER),
                    key=lambda s: (-counts[s], int(s[1:])))
    free = tuple(s for s in ranked if s not in (user, bot))
    if counts.get(OTHER_SPEAKER, 0) > 0 and OTHER_SPEAKER not in (user, bot):
        other = OTHER_SPEAKER
    else:  # the model never saw S0: the least active known slot is "everyone else"
        other = free[-1] if free else USER
        free = free[:-1]
    known = set(ranked) | {OTHER_SPEAKER}
    names = {name_key(k): v for k, v in (learned or {}).items() if v in known and v != bot}
    return SpeakerPlan(user, bot, free, other, names)


def load_learned_names(processed_dir: Path) -> dict[str, str]:
    """Real name → pseudonym from the private ``speakers.json`` of the training data ({} when absent/unreadable).
    Used only to give a known person their learned slot; never logged, never published."""
    try:
        data = json.loads((Path(processed_dir) / "speakers.json").read_text(encoding="utf-8"))
        return {str(k): str(v) for k, v in (data.get("speakers") or {}).items() if is_pseudonym(str(v))}
    except (OSError, ValueError, AttributeError):
        return {}


@dataclass
class RoomSpeakers:
    """Sender → slot of one room. ``senders`` = sender key (a keyed hash) → [slot, message count]."""

    senders: dict[str, list] = field(default_factory=dict)

    def slot(self, plan: SpeakerPlan, key: str, name: str | None = None) -> tuple[str, bool]:
        """The sender's slot (assigned on first sight, then stable) and whether this sender overflowed now."""
        got = self.senders.get(key)
        if got is not None:
            got[1] += 1
            return got[0], False
        taken = {s for s, _ in self.senders.values()}
        learned = plan.learned.get(name_key(name)) if name else None
        learned = USER if learned == plan.user else learned
        overflow = False
        if learned and (learned not in taken or learned == plan.other):
            slot = learned
        elif USER not in taken:
            slot = USER
        else:
            slot = next((s for s in plan.free if s not in taken), None)
            if slot is None:
                slot, overflow = plan.other, True
        self.senders[key] = [slot, 1]
        return slot, overflow

    def distinct(self) -> int:
        return len(self.senders)

    def to_json(self) -> dict:
        return {k: [s, n] for k, (s, n) in self.senders.items()}

    @classmethod
    def from_json(cls, data) -> "RoomSpeakers":
        out = cls()
        if isinstance(data, dict):
            for k, v in data.items():
                if isinstance(v, list) and len(v) == 2 and is_slot(v[0]) and isinstance(v[1], int):
                    out.senders[str(k)] = [v[0], v[1]]
        return out


# ---------------------------------------------------------------------------------------------- speak or not
def is_addressed(text: str, bot_names) -> bool:
    """The message names the bot (any of ``bot_names``, also written as an @mention), case-blind."""
    t = name_key(text)
    return any(name_key(n) and name_key(n) in t for n in bot_names or ())


@dataclass(frozen=True)
class Decision:
    """speak: whether the bot answers; reason: why (always, two_person, addressed, model, not_addressed,
    below_threshold); prob: the model's probability that the bot speaks next (None = not computed)."""

    speak: bool
    reason: str
    prob: float | None = None


def pre_decide(policy: str, text: str, bot_names, senders: int) -> Decision | None:
    """The decision that needs no model, or None when the model's probability decides (policy ``model``)."""
    if policy == "always":
        return Decision(True, "always")
    if is_addressed(text, bot_names):
        return Decision(True, "addressed")
    if policy == "addressed":
        return Decision(True, "two_person") if senders <= 1 else Decision(False, "not_addressed")
    return None


def model_decide(prob: float, threshold: float) -> Decision:
    return Decision(prob >= threshold, "model" if prob >= threshold else "below_threshold", prob)
