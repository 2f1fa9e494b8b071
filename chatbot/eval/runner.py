"""The ``eval`` verb: how good a model is on the held-out chats, next to simple baselines.

1. Loss: the model's masked loss per target token over the *whole* validation split (strided windows: every
   target token is scored exactly once, with at least half a block of context after the first window), next to
   unigram and bigram token models counted on the training split (chatbot/eval/baselines.py).
2. Replies: ``gen.eval.items`` validation turns of the bot speaker (the same speaker ``chat`` answers as), chosen
   with the sampling seed. The model replies from the session's preceding turns through the Responder that
   ``reply``/``chat`` use (same prompt layout, sampling and post-processing); a retrieval bot answers the same
   items; metrics compare both with the real replies (chatbot/eval/metrics.py).

A run fine-tuned from a pretrained base (``model.base``) goes through the same code: its processed data holds the
base tokenizer's ids in the text turn layout of chatbot/base/layout.py, which :func:`read_sessions` (via
chatbot/eval/items.py) turns into the same :class:`~chatbot.eval.items.Turn` lists, and the Responder builds its
prompts in that layout; only the loss forward differs (:func:`_scored_logits`).

Only figures are written (``eval.json`` in the run folder, the table, ``--json``): never reply text, which is the
room's private chat.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, PreprocessConfig
from ..data.dataset import Split, open_split, read_stats
from ..data.tokenizer import load_tokenizer
from ..errors import ChatbotError
from ..fsio import atomic_write_json, private_mkdir
from ..infer.decode import block_size_of, is_hf_model
from ..infer.responder import Responder
from ..infer.stream import clean_reply
from ..infer.loading import Bundle, load_bundle
from . import baselines, items as items_mod
from .metrics import reply_metrics

FORMAT = "chatbot-eval-1"
SOURCES = ("best", "latest", "artifact")


# ---------------------------------------------------------------------------------------------- the source
def source_config(cfg: Config, source: str) -> Config:
    """``cfg`` whose ``gen.model_preference`` holds only the requested source (best | latest | artifact | PATH)."""
    if source in ("best", "latest"):
        pref = [source]
    elif source == "artifact":
        pref = [p for p in cfg.gen.model_preference if p not in ("best", "latest")]
        if not pref:
            raise ChatbotError("gen.yaml model_preference lists no artifact; use --source best, latest or a path")
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ChatbotError(f"--source {source}: no such file (use best, latest, artifact or a model file path)")
        pref = [str(path.resolve())]
    return dataclasses.replace(cfg, gen=dataclasses.replace(cfg.gen, model_preference=pref))


def _check_tokenizer(cfg: Config, bundle: Bundle, stats: dict) -> None:
    """The processed data must be in the model's tokens (an artifact may come from an older preprocess)."""
    processed_base = stats.get("base")
    if bundle.is_base or processed_base:
        from ..base import tokenizer_hash

        if not bundle.is_base:
            raise ChatbotError(f"{cfg.processed_dir.name}/ was preprocessed for a pretrained base but "
                               f"{bundle.source.name} is a from-scratch model; evaluate a checkpoint of the current "
                               "data (--source best) or preprocess again")
        if not processed_base or processed_base.get("tokenizer_hash") != tokenizer_hash(bundle.tokenizer):
            raise ChatbotError(f"{bundle.source.name} was fine-tuned with another tokenizer than "
                               f"{cfg.processed_dir.name}/ holds (preprocess ran again since, or for another base); "
                               "evaluate a checkpoint of the current data (--source best) or retrain")
        return
    processed = load_tokenizer(str(cfg.processed_dir / "tokenizer.json"))
    if processed.get_vocab(with_added_tokens=True) != bundle.tokenizer.get_vocab(with_added_tokens=True):
        raise ChatbotError(f"{bundle.source.name} was trained with another tokenizer than {cfg.processed_dir.name}/ "
                           "holds (preprocess ran again since); evaluate a checkpoint of the current data "
                           "(--source best) or retrain")


# ------------------------------------------------------------------------------------------------- the loss
def _scored_logits(model, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Logits of the positions ``w`` marks (row-major), without projecting the others onto the vocabulary."""
    if not is_hf_model(model):
        return model(x, select=w.reshape(-1).nonzero().squeeze(1).to(x.device))
    rows = []  # a transformers model: logits_to_keep takes one index list, so one row per forward
    for r in range(x.shape[0]):
        pos = w[r].nonzero().squeeze(1)
        if len(pos):
            rows.append(model(input_ids=x[r:r + 1], use_cache=False, logits_to_keep=pos.to(x.device)).logits[0])
    return torch.cat(rows)


@torch.inference_mode()
def model_loss(model, split: Split, pad_id: int, batch: int = 8, block_size: int | None = None) -> tuple[float, int]:
    """(mean nats per target token, target tokens) over the whole split, each target scored once, in windows of
    ``block_size`` tokens (default: the model's own)."""
    T = block_size or model.args.block_size
    stride = max(1, T // 2)
    n = split.n_tokens
    if n < 2:
        return float("nan"), 0
    toks = torch.from_numpy(np.asarray(split.tokens, dtype=np.int64))
    mask = torch.from_numpy(np.asarray(split.mask, dtype=np.bool_))
    device = next(model.parameters()).device
    windows = []  # (start, first scored position within the window)
    start = 0
    while True:
        windows.append((start, 0 if start == 0 else T - stride))
        if start + T >= n - 1:
            break
        start += stride
    total, count = 0.0, 0
    for b in range(0, len(windows), batch):
        chunk = windows[b:b + batch]
        x = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        y = torch.zeros((len(chunk), T), dtype=torch.long)
        w = torch.zeros((len(chunk), T), dtype=torch.bool)
        for r, (s, first) in enumerate(chunk):
            end = min(s + T, n - 1)
            x[r, :end - s] = toks[s:end]
            y[r, :end - s] = toks[s + 1:end + 1]
            w[r, first:end - s] = mask[s + first + 1:end + 1]
        if not bool(w.any()):
            continue
        logits = _scored_logits(model, x.to(device), w)
        target = y.reshape(-1)[w.reshape(-1)]
        total += float(F.cross_entropy(logits.float(), target.to(device), reduction="sum"))
        count += len(target)
    return (total / count if count else float("nan")), count


def _loss_entry(nats: float, **extra) -> dict:
    ok = math.isfinite(nats)
    return {"nats": round(nats, 4) if ok else None, "ppl": round(math.exp(min(nats, 700)), 2) if ok else None, **extra}


# ------------------------------------------------------------------------------------------------ replies
def _text(responder: Responder, ids: list[int]) -> str:
    """A turn's text as a reply would read (placeholders and special tokens dropped, cleaned, trimmed)."""
    raw = b"".join(responder.token_bytes[i] for i in ids if i < len(responder.token_bytes))
    return clean_reply(raw.decode("utf-8", errors="ignore"), responder.gen.max_chars)


def read_sessions(responder: Responder, split: Split) -> list[list[items_mod.Turn]]:
    """The split's sessions of turns, in the layout of the model the Responder wraps."""
    if responder.base is None:
        spk = {tid: name for name, tid in responder.ids.speakers.items()}
        return items_mod.sessions(split.tokens, split.mask, responder.ids.bos, responder.ids.eot, spk)
    from ..data.conversation import pseudonym
    from ..tokens import MAX_SPEAKERS

    layout = responder.base.layout
    prefixes = {pseudonym(i): layout.prefix(pseudonym(i)) for i in range(MAX_SPEAKERS + 1)}
    return items_mod.base_sessions(split.tokens, split.mask, layout.bos_id, layout.eos_id, prefixes)


def max_context(responder: Responder, preprocess: PreprocessConfig) -> int | None:
    """Turns of context per item: a base tokenizer without bos leaves no session boundary in the processed data,
    so the context is bounded by what a training window holds (``context_turns`` before its target turn)."""
    if responder.base is None or responder.base.layout.bos_id is not None:
        return None
    return preprocess.context_turns


def _context_text(responder: Responder, context: list[items_mod.Turn], turns: int) -> str:
    return "\n".join(_text(responder, t.text_ids) for t in context[-turns:])


def generate_replies(responder: Responder, chosen: list[items_mod.Item], seed: int, progress=None) -> tuple[list, list]:
    """(texts, latencies) of the model's replies to ``chosen``; item i uses seed + i."""
    texts, latencies = [], []
    for i, item in enumerate(chosen):
        pairs = responder.base is not None
        r = responder.reply_to_turns([t.encoded(pairs) for t in item.context], seed=seed + i)
        texts.append(r.text)
        latencies.append(r.latency_s)
        if progress is not None:
            progress(i + 1, len(chosen))
    return texts, latencies


def reply_eval(responder: Responder, val_sessions, train_sessions, n: int, seed: int, context_turns: int,
               progress=None, max_context: int | None = None) -> dict:
    """Reply figures of the model, the retrieval bot and the real replies on ``n`` validation items."""
    bot = responder.bot_speaker
    pool = items_mod.reply_items(val_sessions, bot, max_context=max_context)
    chosen = items_mod.pick(pool, n, seed)
    if not chosen:
        return {"items": 0, "pool": len(pool), "bot_speaker": bot}
    refs = [_text(responder, it.reply.text_ids) for it in chosen]
    texts, latencies = generate_replies(responder, chosen, seed, progress)
    train_items = (items_mod.reply_items(train_sessions, bot, max_context=max_context)
                   or items_mod.reply_items(train_sessions, None, max_context=max_context))
    t0 = time.perf_counter()
    retrieval = baselines.RetrievalBot([_context_text(responder, it.context, context_turns) for it in train_items],
                                       [_text(responder, it.reply.text_ids) for it in train_items])
    retrieved = retrieval.answer([_context_text(responder, it.context, context_turns) for it in chosen])
    lat = sorted(latencies)
    model, reference = reply_metrics(texts, refs), reply_metrics(refs)
    model.update(latency_mean_s=round(sum(lat) / len(lat), 4), latency_p95_s=round(lat[int(0.95 * (len(lat) - 1))], 4),
                 collapse=collapse_reasons_corpus(model, reference))
    return {
        "items": len(chosen), "pool": len(pool), "bot_speaker": bot, "user_speaker": responder.user_speaker,
        "model": model,
        "retrieval": {**reply_metrics(retrieved, refs), "train_items": len(train_items),
                      "seconds": round(time.perf_counter() - t0, 3)},
        "reference": reference,
    }


class TrainingProbe:
    """The cheap subset the trainer runs at each evaluation (``logging.eval_replies``): the model's replies to a
    fixed handful of validation turns, scored against the real ones (no baselines)."""

    def __init__(self, processed_dir: Path, stats: dict, tok, gen, pii, n: int, context_turns: int | None = None):
        self.stats, self.tok, self.gen, self.pii, self.n = stats, tok, gen, pii, n
        self.context_turns = context_turns
        self.processed_dir = processed_dir
        self.items: list | None = None

    def __call__(self, model, step: int) -> dict:
        bundle = Bundle(model, self.tok, self.stats.get("persona") or {}, self.processed_dir, step)
        was_training = model.training
        model.eval()
        try:
            responder = Responder(bundle, self.gen, self.pii)  # fresh: the decoder copies the current weights
            if self.items is None:
                val = open_split(self.processed_dir, "val", self.stats["dtype"], int(self.stats["vocab_size"]))
                bound = self.context_turns if responder.base is not None and responder.base.layout.bos_id is None \
                    else None
                pool = items_mod.reply_items(read_sessions(responder, val), responder.bot_speaker, max_context=bound)
                self.items = items_mod.pick(pool, self.n, self.gen.sampling.seed)
            if not self.items:
                return {}
            texts, latencies = generate_replies(responder, self.items, self.gen.sampling.seed)
            refs = [_text(responder, it.reply.text_ids) for it in self.items]
        finally:
            model.train(was_training)
        m = reply_metrics(texts, refs)
        return {"reply_items": m["n"], "reply_chrf": m["chrf"], "reply_distinct_2": m["distinct_2"],
                "reply_top5_share": m["top5_share"], "reply_same_opening_share": m["same_opening_share"],
                "reply_mean_chars": m["mean_chars"], "reply_seconds": round(sum(latencies), 3)}


def collapse_reasons_corpus(m: dict, ref: dict) -> list[str]:
    """The "same answer to everything" signs in a large set of replies (cf. smoke's check on a few), each also
    measured against the real replies (a room that answers "ㅇㅇ" a lot is allowed to)."""
    out = []
    if m["top5_share"] > max(0.3, 2 * ref["top5_share"]):
        out.append(f"{m['top5_share']:.0%} of replies are one of 5 stock replies (real replies: "
                   f"{ref['top5_share']:.0%})")
    if m["same_opening_share"] > max(0.5, 2 * ref["same_opening_share"]):
        out.append(f"{m['same_opening_share']:.0%} of replies open with the same word (real replies: "
                   f"{ref['same_opening_share']:.0%})")
    if m["empty_share"] > 0.1:
        out.append(f"{m['empty_share']:.0%} of replies are empty")
    if m["mean_chars"] < 3:
        out.append(f"replies are {m['mean_chars']:.1f} characters long on average")
    return out


# ------------------------------------------------------------------------------------------------ the verb
def _small_model_threads(model) -> int | None:
    """One CPU thread for small models (as the trainer does): their matmuls are too small to amortise thread
    wake-ups, and on a busy 2-core machine two threads made eval 5× slower. None = leave torch's setting."""
    import os

    if os.environ.get("OMP_NUM_THREADS") or next(model.parameters()).device.type != "cpu":
        return None
    if is_hf_model(model):  # a pretrained base is never that small (the tests' tiny ones do not care)
        return None
    a = model.args
    return 1 if 8 * a.block_size * a.n_embd <= (1 << 18) else None


def evaluate(cfg: Config, source: str = "", limit: int | None = None, progress=None) -> dict:
    """Every figure of ``eval`` as a dict (also written to ``<run>/eval.json``). No password check here."""
    started = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        return _evaluate(cfg, source, limit, progress, started)
    finally:
        torch.set_num_threads(threads)


def _evaluate(cfg: Config, source: str, limit: int | None, progress, started: float) -> dict:
    stats = read_stats(cfg.processed_dir)
    source_cfg = source_config(cfg, source) if source else cfg
    bundle = load_bundle(source_cfg)
    _check_tokenizer(cfg, bundle, stats)
    if (n_threads := _small_model_threads(bundle.model)) is not None:
        torch.set_num_threads(n_threads)
    preprocess = cfg.paths.processed.preprocess
    responder = Responder(bundle, cfg.gen, preprocess.pii)
    vocab = int(stats["vocab_size"])
    train_split = open_split(cfg.processed_dir, "train", stats["dtype"], vocab)
    val_split = open_split(cfg.processed_dir, "val", stats["dtype"], vocab)
    if val_split.n_tokens == 0:
        raise ChatbotError("the validation split is empty (too few sessions?); raise "
                           "processed.preprocess.val_fraction in paths.yaml and run preprocess")
    eval_cfg = cfg.gen.eval
    n = eval_cfg.items if limit is None else limit
    t0 = time.perf_counter()
    block = loss_block_size(cfg, bundle.model)
    nats, n_target = model_loss(bundle.model, val_split, _pad_id(responder), block_size=block)
    loss_s = time.perf_counter() - t0
    V = max(vocab, _model_vocab(bundle.model))
    counts = (train_split.tokens, train_split.mask, val_split.tokens, val_split.mask, V, eval_cfg.add_k)
    unigram, bigram = baselines.unigram(*counts), baselines.bigram(*counts)
    replies = reply_eval(responder, read_sessions(responder, val_split), read_sessions(responder, train_split), n,
                         cfg.gen.sampling.seed, eval_cfg.retrieval_context_turns, progress,
                         max_context(responder, preprocess))
    result = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": bundle.source.name, "kind": bundle.kind, "step": bundle.step,
                  "parameters": sum(p.numel() for p in bundle.model.parameters()),
                  "block_size": block, **model_origin(bundle)},
        "data": {"val_tokens": val_split.n_tokens, "val_target_tokens": n_target, "train_tokens": train_split.n_tokens,
                 "tokenizer_hash": stats["tokenizer_hash"]},
        "loss": {"model": _loss_entry(nats, seconds=round(loss_s, 3)),
                 "unigram": _loss_entry(unigram.nats, k=unigram.k), "bigram": _loss_entry(bigram.nats, k=bigram.k)},
        "replies": replies,
        "sampling": dataclasses.asdict(cfg.gen.sampling),
        "seconds": 0.0,
    }
    result["verdict"] = verdict(result)
    result["seconds"] = round(time.perf_counter() - started, 2)
    private_mkdir(cfg.run_dir)  # 0700 whatever the umask
    atomic_write_json(cfg.run_dir / "eval.json", result)
    return result


def loss_block_size(cfg: Config, model) -> int:
    """Window of the loss: our model's block size; for a pretrained base the run's ``model.block_size`` (what its
    training windows and validation loss used), within the base's context length."""
    if not is_hf_model(model):
        return model.args.block_size
    return max(2, min(cfg.train.model.block_size, block_size_of(model)))


def _pad_id(responder: Responder) -> int:
    if responder.base is None:
        return responder.ids.pad
    pad = getattr(responder.tok, "pad_token_id", None)  # only fills the tail of the last window (never scored)
    return responder.base.eot if pad is None else int(pad)


def _model_vocab(model) -> int:
    return int(model.get_output_embeddings().weight.shape[0]) if is_hf_model(model) else model.args.vocab_size


def model_origin(bundle: Bundle) -> dict:
    """``origin``: scratch | base; for a base also its id/revision, the adapter kind and how the weights came."""
    if not bundle.is_base:
        return {"origin": "scratch"}
    b = bundle.base or {}
    adapter = b.get("adapter") if isinstance(b.get("adapter"), dict) else {}
    return {"origin": "base", "base": {"id": _public_id(str(b.get("id", ""))), "revision": b.get("revision") or "",
                                       "adapter": adapter.get("kind"), "weights": bundle.weights}}


def _public_id(base_id: str) -> str:
    """A hub id as is; a local folder by its name only (its path may name the user)."""
    p = Path(base_id)
    return p.name if p.is_absolute() or base_id.startswith((".", "~")) or "\\" in base_id else base_id


def verdict(r: dict) -> dict:
    model, bigram = r["loss"]["model"]["nats"], r["loss"]["bigram"]["nats"]
    rep = r["replies"]
    out = {"beats_bigram": None if model is None or bigram is None else model < bigram,
           "beats_retrieval_chrf": None, "collapsed": False}
    if rep.get("items"):
        out["beats_retrieval_chrf"] = rep["model"]["chrf"] > rep["retrieval"]["chrf"]
        out["collapsed"] = bool(rep["model"]["collapse"])
    return out


def summary_line(r: dict) -> str:
    """One line for ``status``."""
    loss = r["loss"]
    rep = r["replies"]
    parts = [f"val {loss['model']['nats']} nats/token (bigram {loss['bigram']['nats']})"]
    if rep.get("items"):
        parts.append(f"chrF {rep['model']['chrf']} vs retrieval {rep['retrieval']['chrf']}")
        if rep["model"]["collapse"]:
            parts.append("COLLAPSED: " + "; ".join(rep["model"]["collapse"]))
    return f"{r['model']['source']}{_origin_note(r)} step {r['model']['step']}: " + ", ".join(parts)


def _origin_note(r: dict) -> str:
    """`` (base NAME, lora)`` for a model fine-tuned from a pretrained base, else nothing."""
    b = r["model"].get("base")
    return f" (base {b['id']}, {b['adapter']})" if r["model"].get("origin") == "base" and b else ""


def print_table(r: dict, out=None) -> None:
    loss, rep, v = r["loss"], r["replies"], r["verdict"]
    w = (out or sys.stdout).write
    w(f"eval: {r['model']['source']}{_origin_note(r)} (step {r['model']['step']}, {r['model']['parameters']:,} parameters) on "
      f"{r['data']['val_target_tokens']:,} validation target tokens, {r['seconds']:.1f} s\n\n")
    w(f"{'loss per target token':<24}{'nats':>8}{'ppl':>10}\n")
    for name in ("model", "bigram", "unigram"):
        e = loss[name]
        k = f"  (add-k {e['k']:g})" if "k" in e else ""
        w(f"{name:<24}{_f(e['nats']):>8}{_f(e['ppl'], 1):>10}{k}\n")
    if not rep.get("items") and rep.get("pool"):
        w("\nreplies: none requested (--limit 0)\n")
    elif not rep.get("items"):
        w(f"\nreplies: no validation turns of the bot speaker {rep.get('bot_speaker')} to answer\n")
    else:
        w(f"\nreplies: {rep['items']} validation turns of {rep['bot_speaker']} (of {rep['pool']}), seed "
          f"{r['sampling']['seed']}\n")
        rows = [("chrF", "chrf", 1), ("exact match", "exact_match", 3), ("distinct-1", "distinct_1", 3),
                ("distinct-2", "distinct_2", 3), ("mean length (chars)", "mean_chars", 1),
                ("repeats a phrase", "repeat_share", 3), ("empty", "empty_share", 3),
                ("one of top-5 replies", "top5_share", 3), ("same first word", "same_opening_share", 3)]
        w(f"{'':<24}{'model':>10}{'retrieval':>11}{'real':>10}\n")
        for label, key, nd in rows:
            w(f"{label:<24}{_f(rep['model'][key], nd):>10}{_f(rep['retrieval'][key], nd):>11}"
              f"{_f(rep['reference'][key], nd):>10}\n")
        w(f"{'latency mean / p95 (s)':<24}{rep['model']['latency_mean_s']:>5.2f} / {rep['model']['latency_p95_s']:.2f}\n")
    w("\n")
    if v["beats_bigram"] is False:
        w("NOTE: the model does not beat the bigram baseline on loss: it learned little beyond word pairs.\n")
    if v["beats_retrieval_chrf"] is False:
        w("NOTE: the retrieval bot's replies are closer to the real ones (chrF) than the model's.\n")
    for reason in rep.get("model", {}).get("collapse", []) if rep.get("items") else []:
        w(f"COLLAPSE: {reason}\n")
    if v["beats_bigram"] and v["beats_retrieval_chrf"] and not v["collapsed"]:
        w("the model beats the bigram loss and the retrieval bot's chrF\n")


def _f(v, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def eval_command(cfg: Config, source: str = "", limit: int | None = None, as_json: bool = False) -> None:
    from ..security import require_password

    require_password(cfg)
    if limit is not None and limit < 0:
        raise ChatbotError("--limit must be 0 or more (0 = loss figures only)")

    def progress(i: int, total: int) -> None:
        if i == total or i % 25 == 0:
            print(f"  replies {i}/{total}", file=sys.stderr, flush=True)

    result = evaluate(cfg, source, limit, progress)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_table(result)
        print(f"written: {cfg.run_dir / 'eval.json'}")
