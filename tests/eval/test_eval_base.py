"""eval on a run fine-tuned from a pretrained base: a tiny random Qwen2 (tests/support/base.py) preprocessed on an
invented room, trained a few LoRA steps, then ``eval --json`` on the checkpoint and on the published artifacts,
with the loss checked against a direct forward and the turns read back checked against preprocess's counts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chatbot.eval.items import base_sessions, reply_items
from chatbot.eval.runner import FORMAT as EVAL_FORMAT

pytest.importorskip("peft")

PASSWORD = "eval-base-test"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    from tests.support.base import make_base_project

    from chatbot.train.loop import train

    root = tmp_path_factory.mktemp("evalbase")
    cfg = make_base_project(root, {"optimization": {"max_steps": 4, "lr_decay_steps": 4},
                                   "logging": {"eval_interval": 4, "save_interval": 4, "eval_replies": 2}})
    (root / ".env").write_text(f"CHATBOT_PASSWORD={PASSWORD}\n", encoding="utf-8")
    assert train(cfg) == 0
    return cfg


def _eval(cfg, monkeypatch, capsys, *args: str) -> dict:
    from chatbot.ops import main

    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    capsys.readouterr()
    code = main(["eval", "-c", str(cfg.config_dir), "--json", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_base_sessions_split_at_eos_and_read_speaker_prefixes() -> None:
    # bos 1, eos 2; "S1: " = [7, 8], "S10: " = [7, 9, 8]; a system event [5, 2] has no prefix
    toks = np.array([1, 7, 8, 4, 2, 7, 9, 8, 6, 6, 2, 5, 2, 1, 7, 8, 2, 7, 8, 3, 2])
    mask = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    sess = base_sessions(toks, mask, 1, 2, {"S1": [7, 8], "S10": [7, 9, 8], "S2": [7, 3, 8]})
    assert [[(t.speaker, t.ids, t.target, t.text_ids) for t in s] for s in sess] == [
        [("S1", [7, 8, 4, 2], True, [4]), ("S10", [7, 9, 8, 6, 6, 2], True, [6, 6]), (None, [5, 2], False, [])],
        [("S1", [7, 8, 2], False, []), ("S1", [7, 8, 3, 2], True, [3])],
    ]
    assert sess[0][1].encoded(True) == ([7, 9, 8], [6, 6, 2]) and sess[0][1].encoded(False) == [7, 9, 8, 6, 6, 2]
    # no bos (Qwen): one stream; the context is bounded instead
    flat = base_sessions(toks[toks != 1], mask[toks != 1], None, 2, {"S1": [7, 8], "S10": [7, 9, 8]})
    assert len(flat) == 1 and len(flat[0]) == 5
    items = reply_items(flat, "S1", max_context=2)
    assert [len(it.context) for it in items] == [2] and items[0].reply.text_ids == [3]


def test_eval_of_a_lora_run_end_to_end(base_run, monkeypatch, capsys) -> None:
    from chatbot.data.dataset import open_split, read_stats
    from chatbot.eval.runner import model_loss, read_sessions
    from chatbot.infer.responder import Responder
    from chatbot.infer.loading import load_bundle

    cfg = base_run
    r = _eval(cfg, monkeypatch, capsys, "--limit", "4", "--source", "best")
    assert r["format"] == EVAL_FORMAT and r["model"]["source"] == "best.pt"
    assert r["model"]["origin"] == "base" and r["model"]["base"]["adapter"] == "lora"
    assert r["model"]["base"]["id"] == "qwen2-0" and r["model"]["base"]["weights"] == "checkpoint"  # no path
    assert r["model"]["block_size"] == 48
    stats = read_stats(cfg.processed_dir)
    val_mask = np.fromfile(cfg.processed_dir / "val_loss_mask.bin", dtype=np.uint8)
    assert r["data"]["val_target_tokens"] == int(val_mask[1:].sum()) > 0  # every target scored once
    for name in ("model", "unigram", "bigram"):
        assert r["loss"][name]["nats"] > 0
    rep = r["replies"]
    assert rep["items"] == 4 and rep["bot_speaker"] == "S1" and 0 <= rep["model"]["chrf"] <= 100
    assert rep["retrieval"]["train_items"] > 0 and rep["model"]["latency_mean_s"] > 0
    saved = json.loads((cfg.run_dir / "eval.json").read_text(encoding="utf-8"))
    assert saved["model"] == r["model"] and "안녕" not in json.dumps(saved)

    # the loss by hand: one forward over the whole validation stream, cross-entropy at the masked positions
    bundle = load_bundle(cfg)
    val = open_split(cfg.processed_dir, "val", stats["dtype"], int(stats["vocab_size"]))
    head = SimpleNamespace(tokens=val.tokens[:400], mask=val.mask[:400], n_tokens=400)  # within the 512 positions
    toks = torch.from_numpy(np.asarray(head.tokens, dtype=np.int64))
    with torch.no_grad():
        logits = bundle.model(input_ids=toks[None]).logits[0, :-1]
    keep = torch.from_numpy(val_mask[1:400].astype(bool))
    direct = float(F.cross_entropy(logits[keep], toks[1:][keep]))
    nats, n = model_loss(bundle.model, head, 0, block_size=400)
    assert n == int(keep.sum()) and nats == pytest.approx(direct, rel=1e-5)
    # eval's 48-token windows: the same figure up to the shorter contexts
    assert r["loss"]["model"]["nats"] == pytest.approx(round(model_loss(bundle.model, val, 0, block_size=48)[0], 4))

    # the turns read back agree with what preprocess counted, and their speakers are the room's pseudonyms
    responder = Responder(bundle, cfg.gen, cfg.paths.processed.preprocess.pii)
    turns = [t for s in read_sessions(responder, val) for t in s]
    assert len(turns) == stats["turns"]["val"] and sum(t.target for t in turns) == stats["target_turns"]["val"]
    assert {t.speaker for t in turns} <= set(stats["persona"]["speakers"]) | {None}

    # the trainer's probe ran on the LoRA model and logged its figures
    lines = [json.loads(x) for x in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    probes = [x for x in lines if x["kind"] == "eval_replies"]
    assert [x["step"] for x in probes] == [4] and probes[0]["reply_items"] == 2

    from chatbot.status import build_report

    line = next(x for x in build_report(cfg).lines if x.startswith("Eval"))
    assert "(base qwen2-0, lora)" in line


def test_eval_of_published_base_artifacts(base_run, monkeypatch, capsys) -> None:
    from chatbot.ops import main

    cfg = base_run
    best = _eval(cfg, monkeypatch, capsys, "--limit", "0", "--source", "best")
    assert best["replies"]["items"] == 0
    for how, weights in (((), "merged"), (("--adapter-only",), "adapter")):
        assert main(["publish", "-c", str(cfg.config_dir), *how]) == 0
        r = _eval(cfg, monkeypatch, capsys, "--limit", "1", "--source", "artifact")
        assert r["model"]["kind"] == "artifact" and r["model"]["origin"] == "base"
        assert r["model"]["base"]["weights"] == weights and r["replies"]["items"] == 1
        # the artifact holds best.pt's weights (merged, or the adapter on the local base): the same loss
        assert r["loss"]["model"]["nats"] == pytest.approx(best["loss"]["model"]["nats"], abs=2e-4)
