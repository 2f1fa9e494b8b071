"""Measuring "speak or stay silent": an invented group room, and precision/recall of the reply policies.

:func:`group_room_export` writes an invented five-person KakaoTalk room (Windows PC text export, Korean UI) in
which one person (``BOT_NAME``) answers whenever someone calls them by name and otherwise chimes in now and then:
the situation ``reply_policy`` is for. No real person's chat; the sentences are made up here.

:func:`speak_points` walks a token stream (a validation split) and, after every turn of someone other than the
bot, reads the model's probability that the bot's speaker token comes next — the same number the Responder reads
in the forward pass that starts a reply — next to the truth (did the bot speak next?) and whether that turn named
the bot. :func:`policy_scores` turns those points into precision / recall / F1 and bot turns per 100 messages for
``always``, ``addressed`` and ``model`` at any threshold (bench/bench_speak.py prints the curve).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import torch

BOT_NAME = "하늘"
OTHERS = ("나", "민지", "준호", "서연")
_CALLS = ("{b}아 너는 어때?", "{b}아 뭐해?", "{b}는 내일 올 수 있어?", "{b}아 이거 봤어?", "{b}야 너 생각은?",
          "{b}아 저녁 뭐 먹었어?", "@{b} 답장 좀", "{b}아 주말에 시간 돼?")
_BOT = ("응 나도 좋아", "나는 집에서 쉬는 중", "내일은 좀 어려울 것 같아", "헐 진짜? 대박", "나는 치킨 먹었어",
        "주말에 괜찮아 ㅋㅋ", "음 나는 반대야", "방금 봤어 웃기다", "알겠어 갈게", "나도 궁금했어")
_CHAT = ("오늘 날씨 진짜 좋다", "점심 뭐 먹지", "회의 너무 길었어", "ㅋㅋㅋㅋ", "퇴근하고 싶다", "어제 그 드라마 봤어?",
         "커피 마실 사람", "주말에 등산 갈래?", "비 온대 우산 챙겨", "나 방금 도착했어", "배고프다", "그거 어디서 샀어?",
         "오 좋은데", "아 피곤해", "다음 주에 모이자", "사진 올려줘", "맞아 맞아", "나도 그렇게 생각해",
         "시험 끝났다", "영화 예매했어")
_CHIME = ("ㅋㅋㅋ 나도", "오 부럽다", "나도 갈래", "그거 나도 봤어")


def _ampm(t: dt.datetime) -> str:
    h = t.hour % 12 or 12
    return f"{'오전' if t.hour < 12 else '오후'} {h}:{t.minute:02d}"


def group_room_messages(sessions: int = 120, seed: int = 0) -> list[tuple[dt.datetime, str, str]]:
    """(time, speaker, text) of the invented room: one evening chat per day, 8–14 messages each."""
    rng = random.Random(seed)
    out: list[tuple[dt.datetime, str, str]] = []
    day = dt.datetime(2023, 1, 2, 20, 0)
    for _ in range(sessions):
        t = day + dt.timedelta(minutes=rng.randrange(0, 90))
        last = None
        for _ in range(rng.randrange(8, 15)):
            if last is not None and last[1] and last[0] != BOT_NAME:  # called by name: the bot answers
                who, text = BOT_NAME, rng.choice(_BOT)
            elif last is not None and last[0] != BOT_NAME and rng.random() < 0.08:
                who, text = BOT_NAME, rng.choice(_CHIME)
            else:
                who = rng.choice([p for p in OTHERS if last is None or p != last[0]])
                text = rng.choice(_CALLS).format(b=BOT_NAME) if rng.random() < 0.2 else rng.choice(_CHAT)
            out.append((t, who, text))
            last = (who, BOT_NAME in text and who != BOT_NAME)
            t += dt.timedelta(minutes=rng.randrange(0, 3))
        day += dt.timedelta(days=1)
    return out


def group_room_export(sessions: int = 120, seed: int = 0) -> str:
    """The invented room as a Windows PC KakaoTalk export (Korean UI, CRLF, day separators)."""
    weekdays = "월화수목금토일"
    lines = ["우리 다섯 님과 카카오톡 대화", "저장한 날짜 : 2023-06-01 22:00:00", ""]
    shown_day = None
    for t, who, text in group_room_messages(sessions, seed):
        if t.date() != shown_day:
            shown_day = t.date()
            lines.append(f"--------------- {t.year}년 {t.month}월 {t.day}일 {weekdays[t.weekday()]}요일 ---------------")
        lines.append(f"[{who}] [{_ampm(t)}] {text}")
    return "\r\n".join(lines) + "\r\n"


# ---------------------------------------------------------------------------------------------- measuring
@dataclass
class SpeakPoint:
    prob: float  # P(bot speaker token next | history up to this <|eot|>)
    spoke: bool  # the bot really spoke next
    addressed: bool  # the turn named the bot (or the room has one other person)


@torch.inference_mode()
def speak_points(model, tokens: list[int], *, eot: int, bos: int, bot: int, speakers: set[int], block: int,
                 addressed=None) -> list[SpeakPoint]:
    """One point per end of a non-bot turn that another turn of the same session follows.

    ``addressed(turn_ids) -> bool`` marks turns that name the bot. Logits come from full forward passes over
    windows of ``block`` tokens (stride block/2: every position sees at least block/2 tokens of context, as a
    reply prompt of the bridge's memory does).
    """
    n = len(tokens)
    wanted = [i for i in range(n - 1) if tokens[i] == eot and tokens[i + 1] in speakers]
    starts = {}  # eot position -> speaker of the turn it ends
    spk = None
    for i, t in enumerate(tokens):
        if t in speakers:
            spk = t
        elif t == bos:
            spk = None
        if t == eot:
            starts[i] = spk
    wanted = [i for i in wanted if starts.get(i) is not None and starts[i] != bot]
    probs: dict[int, float] = {}
    stride = max(1, block // 2)
    device = next(model.parameters()).device
    s = 0
    while wanted and s < n:
        window = tokens[s:s + block]
        lo = s if s == 0 else s + block - stride
        todo = [i for i in wanted if lo <= i < s + len(window) and i not in probs]
        if todo:
            idx = torch.tensor([window], dtype=torch.long, device=device)
            logits = model(idx)[0].float()
            for i in todo:
                probs[i] = float(torch.softmax(logits[i - s], dim=-1)[bot])
        if s + block >= n:
            break
        s += stride
    out = []
    for i in wanted:
        j = i - 1
        while j >= 0 and tokens[j] not in speakers:
            j -= 1
        named = bool(addressed(tokens[j + 1:i])) if addressed is not None else False
        out.append(SpeakPoint(probs[i], tokens[i + 1] == bot, named))
    return out


def _prf(pred: list[bool], truth: list[bool]) -> dict:
    tp = sum(p and t for p, t in zip(pred, truth))
    fp = sum(p and not t for p, t in zip(pred, truth))
    fn = sum(t and not p for p, t in zip(pred, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per100 = 100.0 * sum(pred) / len(pred) if pred else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "bot_per_100": per100}


def policy_scores(points: list[SpeakPoint], threshold: float, two_person: bool = False) -> dict[str, dict]:
    """Scores of always / addressed / model (addressed or P ≥ threshold, as the Responder decides) / model_only
    (P ≥ threshold alone), plus the real bot turns per 100 messages (``real``)."""
    truth = [p.spoke for p in points]
    addressed = [two_person or p.addressed for p in points]
    return {
        "always": _prf([True] * len(points), truth),
        "addressed": _prf(addressed, truth),
        "model": _prf([a or p.prob >= threshold for a, p in zip([p.addressed for p in points], points)], truth),
        "model_only": _prf([p.prob >= threshold for p in points], truth),
        "real": {"bot_per_100": 100.0 * sum(truth) / len(truth) if truth else 0.0, "points": len(points)},
    }


def best_threshold(points: list[SpeakPoint], grid=None) -> tuple[float, list[tuple[float, dict]]]:
    """(threshold with the best F1 of ``model``, the whole curve)."""
    grid = grid or [round(0.05 * k, 2) for k in range(1, 20)]
    curve = [(t, policy_scores(points, t)["model"]) for t in grid]
    best = max(curve, key=lambda c: (round(c[1]["f1"], 6), -abs(c[0] - 0.5)))
    return best[0], curve
