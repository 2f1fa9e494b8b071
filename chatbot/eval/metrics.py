"""Reply metrics: how close replies are to the real ones, and whether they collapsed into one answer.

All functions take plain strings, so the same figures describe the model, the retrieval baseline and the real
replies themselves (the "reference" column: what the room's own replies look like by these measures).

* chrF (Popović 2015, as in sacrebleu's default): character n-grams of orders 1–6 with whitespace removed, the
  match/hypothesis/reference counts summed over the whole corpus, an F-score with β = 2 per order (recall weighs
  more), averaged over the orders that occur; 0–100.
* distinct-n: unique / total word n-grams over all replies (words = whitespace-separated).
* repeats a phrase: some word bigram occurs twice in the reply, or — for text without spaces — some run of
  4+ characters occurs twice without overlapping and is not a single repeated character ("ㅋㅋㅋㅋ" is laughter,
  not a loop).
* top-5 share: share of replies whose text is one of the 5 most frequent texts that occur at least twice (the
  "same answer to everything" failure; 0 when every reply is different).
* same-opening share: share of replies whose first word is the most frequent first word (among ≥ 2 replies).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

CHRF_ORDER = 6
CHRF_BETA = 2.0
_WS = re.compile(r"\s+")


def char_ngrams(text: str, n: int) -> Counter:
    s = _WS.sub("", text)
    return Counter(s[i:i + n] for i in range(len(s) - n + 1))


def chrf_stats(hyp: str, ref: str, order: int = CHRF_ORDER) -> list[tuple[int, int, int]]:
    """Per n-gram order: (hypothesis n-grams, reference n-grams, matched n-grams)."""
    out = []
    for n in range(1, order + 1):
        h, r = char_ngrams(hyp, n), char_ngrams(ref, n)
        out.append((sum(h.values()), sum(r.values()), sum((h & r).values())))
    return out


def chrf(hyps: Sequence[str], refs: Sequence[str], order: int = CHRF_ORDER, beta: float = CHRF_BETA) -> float:
    """Corpus-level chrF (0–100) of ``hyps`` against ``refs`` (one reference each)."""
    if len(hyps) != len(refs):
        raise ValueError("chrf needs one reference per hypothesis")
    totals = [[0, 0, 0] for _ in range(order)]
    for h, r in zip(hyps, refs):
        for t, s in zip(totals, chrf_stats(h, r, order)):
            t[0] += s[0]
            t[1] += s[1]
            t[2] += s[2]
    b2, score, orders = beta * beta, 0.0, 0
    for n_hyp, n_ref, n_match in totals:
        if n_hyp == 0 or n_ref == 0:
            continue
        orders += 1
        p, r = n_match / n_hyp, n_match / n_ref
        if p + r > 0:
            score += (1 + b2) * p * r / (b2 * p + r)
    return 100.0 * score / orders if orders else 0.0


def exact_match(hyps: Sequence[str], refs: Sequence[str]) -> float:
    return _share(_norm(h) == _norm(r) for h, r in zip(hyps, refs))


def words(text: str) -> list[str]:
    return text.split()


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (0 when there are none)."""
    grams = [tuple(w[i:i + n]) for t in texts for w in [words(t)] for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repeats_phrase(text: str) -> bool:
    w = words(text)
    if len(w) >= 4:
        pairs = Counter(zip(w, w[1:]))
        if pairs and max(pairs.values()) >= 2:
            return True
    s = _WS.sub("", text)
    for size in (4, 6, 8):
        for i in range(0, len(s) - 2 * size + 1):
            chunk = s[i:i + size]
            if len(set(chunk)) > 1 and chunk in s[i + size:]:
                return True
    return False


def top_k_share(texts: Sequence[str], k: int = 5) -> float:
    counts = Counter(_norm(t) for t in texts)
    frequent = [c for _, c in counts.most_common(k) if c >= 2]
    return sum(frequent) / len(texts) if texts else 0.0


def same_opening_share(texts: Sequence[str]) -> float:
    firsts = Counter(w[0] for t in texts if (w := words(t)))
    if not texts or not firsts:
        return 0.0
    top = firsts.most_common(1)[0][1]
    return top / len(texts) if top >= 2 else 0.0


def reply_metrics(texts: Sequence[str], refs: Sequence[str] | None = None) -> dict:
    """Every reply figure of ``texts`` (chrF and exact match only when ``refs`` are given)."""
    out = {
        "n": len(texts),
        "chrf": round(chrf(texts, refs), 2) if refs is not None else None,
        "exact_match": round(exact_match(texts, refs), 4) if refs is not None else None,
        "distinct_1": round(distinct_n(texts, 1), 4),
        "distinct_2": round(distinct_n(texts, 2), 4),
        "mean_chars": round(sum(len(t) for t in texts) / len(texts), 2) if texts else 0.0,
        "repeat_share": round(_share(repeats_phrase(t) for t in texts), 4),
        "empty_share": round(_share(not t.strip() for t in texts), 4),
        "top5_share": round(top_k_share(texts), 4),
        "same_opening_share": round(same_opening_share(texts), 4),
    }
    return out


def collapse_reasons(texts: Sequence[str], *, min_mean_chars: float = 3.0, max_opening_share: float = 0.5,
                     max_similarity: float = 0.9) -> list[str]:
    """Why a set of replies to *different* prompts looks collapsed (empty list = it does not).

    Near-identical replies (difflib ratio ≥ ``max_similarity`` for some pair), most replies opening with the same
    word (share > ``max_opening_share`` and at least 3 of them), or replies shorter than ``min_mean_chars`` on average.
    """
    import difflib

    reasons = []
    clean = [_norm(t) for t in texts]
    for i in range(len(clean)):
        for j in range(i + 1, len(clean)):
            if clean[i] and difflib.SequenceMatcher(None, clean[i], clean[j]).ratio() >= max_similarity:
                reasons.append(f"replies {i + 1} and {j + 1} to different messages are nearly identical")
                break
        if reasons:
            break
    firsts = Counter(w[0] for t in clean if (w := words(t)))
    if firsts:
        count = firsts.most_common(1)[0][1]
        if count >= 3 and count / len(clean) > max_opening_share:
            reasons.append(f"{count} of {len(clean)} replies open with the same word")
    if clean and sum(len(t) for t in clean) / len(clean) < min_mean_chars:
        reasons.append(f"replies are {sum(len(t) for t in clean) / len(clean):.1f} characters long on average")
    return reasons


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _share(flags: Iterable[bool]) -> float:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else 0.0
