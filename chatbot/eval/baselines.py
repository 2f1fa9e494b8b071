"""Reference points the model must beat: unigram / bigram token models and a retrieval bot.

The n-gram models count *target* tokens of the training split (the tokens the model itself is trained to
produce: mask = 1) and score the target tokens of the validation split, in nats per token like the model's loss:

    unigram  P(w)        = (c(w) + k) / (N + k·V)
    bigram   P(w | prev) = (c(prev, w) + k) / (c(prev) + k·V)

where ``prev`` is the token just before ``w`` in the stream (for a turn's first token that is the speaker token),
c(prev) counts target tokens preceded by ``prev``, and V is the vocabulary size. With ``add_k = 0`` the
smoothing constant is the best of a small grid *on the validation split itself*: an optimistic, i.e. the
strongest honest, version of the baseline.

The retrieval bot answers with the training reply whose context is most similar: TF-IDF vectors of character
2- and 3-grams (whitespace removed) of the last few context turns, cosine similarity.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

K_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


@dataclass
class NgramFigures:
    nats: float          # mean negative log-likelihood per target token
    k: float             # the add-k constant used
    tokens: int          # target tokens scored

    @property
    def ppl(self) -> float:
        return math.exp(min(self.nats, 700.0))


def _targets(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, token) of every target position (a target at offset 0 has no previous token: skipped)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    pos = np.flatnonzero(np.asarray(mask)[1:]) + 1
    return tokens[pos - 1], tokens[pos]


def unigram(train_tokens, train_mask, val_tokens, val_mask, vocab: int, add_k: float = 0.0) -> NgramFigures:
    _, w_tr = _targets(train_tokens, train_mask)
    _, w_va = _targets(val_tokens, val_mask)
    counts = np.bincount(w_tr, minlength=vocab).astype(np.float64)
    n = float(counts.sum())

    def nats(k: float) -> float:
        return float(-np.log((counts[w_va] + k) / (n + k * vocab)).mean())

    return _best(nats, add_k, len(w_va))


def bigram(train_tokens, train_mask, val_tokens, val_mask, vocab: int, add_k: float = 0.0) -> NgramFigures:
    p_tr, w_tr = _targets(train_tokens, train_mask)
    p_va, w_va = _targets(val_tokens, val_mask)
    pair_keys, pair_counts = np.unique(p_tr * vocab + w_tr, return_counts=True)
    prev_counts = np.bincount(p_tr, minlength=vocab).astype(np.float64)
    keys = p_va * vocab + w_va
    at = np.searchsorted(pair_keys, keys)
    at_ok = np.minimum(at, max(len(pair_keys) - 1, 0))
    found = (at < len(pair_keys)) & (pair_keys[at_ok] == keys) if len(pair_keys) else np.zeros(len(keys), bool)
    c_pair = np.where(found, pair_counts[at_ok] if len(pair_keys) else 0, 0).astype(np.float64)
    c_prev = prev_counts[p_va]

    def nats(k: float) -> float:
        return float(-np.log((c_pair + k) / (c_prev + k * vocab)).mean())

    return _best(nats, add_k, len(w_va))


def _best(nats, add_k: float, n: int) -> NgramFigures:
    if n == 0:
        return NgramFigures(float("nan"), add_k, 0)
    if add_k > 0:
        return NgramFigures(nats(add_k), add_k, n)
    k = min(K_GRID, key=nats)
    return NgramFigures(nats(k), k, n)


# ------------------------------------------------------------------------------------------------ retrieval
def char_grams(text: str) -> Counter:
    s = "".join(text.split())
    return Counter([s[i:i + 2] for i in range(len(s) - 1)] + [s[i:i + 3] for i in range(len(s) - 2)])


class RetrievalBot:
    """Nearest training context by TF-IDF cosine over character 2/3-grams; answers with that context's reply."""

    def __init__(self, contexts: list[str], replies: list[str]):
        if len(contexts) != len(replies):
            raise ValueError("one reply per context")
        self.replies = replies
        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        df: Counter = Counter()
        grams = [char_grams(c) for c in contexts]
        for g in grams:
            df.update(g.keys())
        n = len(contexts)
        self.idf = {t: math.log((1 + n) / (1 + d)) + 1.0 for t, d in df.items()}  # sklearn's smooth idf
        for i, g in enumerate(grams):
            vec = self._weights(g, grow=True)
            for j, v in vec.items():
                rows.append(i)
                cols.append(j)
                vals.append(v)
        self.n_features = max(1, len(self.vocab))
        index = torch.tensor([rows, cols], dtype=torch.long) if rows else torch.zeros(2, 0, dtype=torch.long)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the plain matrix product is all we use
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = torch.sparse_coo_tensor(index, torch.tensor(vals, dtype=torch.float32),
                                                  (max(n, 1), self.n_features)).coalesce().to_sparse_csr()

    def _weights(self, grams: Counter, grow: bool = False) -> dict[int, float]:
        vec: dict[int, float] = {}
        for t, c in grams.items():
            idf = self.idf.get(t)
            if idf is None:
                continue
            j = self.vocab.setdefault(t, len(self.vocab)) if grow else self.vocab.get(t)
            if j is not None:
                vec[j] = c * idf
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {j: v / norm for j, v in vec.items()}

    def scores(self, contexts: list[str]) -> torch.Tensor:
        """(len(contexts), training contexts) cosine similarities."""
        q = torch.zeros(self.n_features, len(contexts))
        for i, c in enumerate(contexts):
            for j, v in self._weights(char_grams(c)).items():
                q[j, i] = v
        return (self.matrix @ q).t()

    def answer(self, contexts: list[str], batch: int = 64) -> list[str]:
        """The reply of the most similar training context (the first one on ties; "" without training data)."""
        if not self.replies:
            return [""] * len(contexts)
        out = []
        for i in range(0, len(contexts), batch):
            best = self.scores(contexts[i:i + batch]).argmax(dim=1)
            out += [self.replies[int(b)] for b in best]
        return out
