"""eval: baselines and metrics against hand-computed figures, the verb end to end on a tiny trained model, the
--json schema, the status line, and smoke's collapse check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from chatbot.eval import baselines, metrics
from chatbot.eval.items import pick, reply_items, sessions
from chatbot.eval.runner import FORMAT as EVAL_FORMAT

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ hand-computed n-gram baselines
# vocabulary of 10 ids; 1 = BOS, 2 = EOT, 3/4 = speaker tokens, 5/6 = words
TRAIN = np.array([1, 3, 5, 6, 2, 4, 5, 2])
TRAIN_MASK = np.array([0, 0, 1, 1, 1, 0, 1, 1])  # targets: 5 6 2 | 5 2  (preceded by 3, 5, 6 | 4, 5)
VAL = np.array([1, 3, 5, 2])
VAL_MASK = np.array([0, 0, 1, 1])                 # targets: 5 (after 3), 2 (after 5)


def test_unigram_add_one_by_hand() -> None:
    # counts of target tokens: 5 → 2, 6 → 1, 2 → 2; N = 5; P(w) = (c + 1) / (5 + 10)
    got = baselines.unigram(TRAIN, TRAIN_MASK, VAL, VAL_MASK, vocab=10, add_k=1.0)
    assert got.tokens == 2 and got.k == 1.0
    assert got.nats == pytest.approx(-(math.log(3 / 15) + math.log(3 / 15)) / 2)
    assert got.ppl == pytest.approx(5.0)


def test_bigram_add_one_by_hand() -> None:
    # P(5 | 3) = (c(3,5) + 1) / (c(3) + 10) = 2 / 11;  P(2 | 5) = (c(5,2) + 1) / (c(5) + 10) = 2 / 12
    got = baselines.bigram(TRAIN, TRAIN_MASK, VAL, VAL_MASK, vocab=10, add_k=1.0)
    assert got.nats == pytest.approx(-(math.log(2 / 11) + math.log(2 / 12)) / 2)


def test_bigram_unseen_pair_and_auto_k() -> None:
    val = np.array([1, 4, 6, 2])  # 6 after 4 never happened: (0 + k) / (c(4) + 10k), c(4) = 1
    val_mask = np.array([0, 0, 1, 1])
    got = baselines.bigram(TRAIN, TRAIN_MASK, val, val_mask, vocab=10, add_k=0.5)
    assert got.nats == pytest.approx(-(math.log(0.5 / 6) + math.log(1.5 / 6)) / 2)
    # add_k 0 = the grid value with the lowest validation loss, reported with it
    auto = baselines.unigram(TRAIN, TRAIN_MASK, VAL, VAL_MASK, vocab=10, add_k=0.0)
    best = min(baselines.K_GRID, key=lambda k: -(2 * math.log((2 + k) / (5 + 10 * k))) / 2)
    assert auto.k == best and auto.nats == pytest.approx(-math.log((2 + best) / (5 + 10 * best)))


def test_retrieval_bot_returns_the_reply_of_the_closest_context() -> None:
    bot = baselines.RetrievalBot(["오늘 날씨 좋다", "밥 먹었어?", "영화 볼래?"], ["산책 가자", "아직 안 먹었어", "좋아 몇 시?"])
    assert bot.answer(["너 밥 먹었어", "영화 볼래 오늘", "날씨 좋다 ㅎㅎ"]) == ["아직 안 먹었어", "좋아 몇 시?", "산책 가자"]
    sims = bot.scores(["밥 먹었어?"])[0]
    assert float(sims[1]) == pytest.approx(1.0) and float(sims.max()) == float(sims[1])
    assert baselines.RetrievalBot([], []).answer(["안녕"]) == [""]


# ----------------------------------------------------------------------------- reply metrics
def test_chrf_by_hand() -> None:
    assert metrics.chrf(["ab"], ["a b"]) == pytest.approx(100.0)  # whitespace does not count
    # "abc" vs "abd": order 1: 2 of 3 match (F 2/3); order 2: ab only (F 1/2); order 3: none (F 0);
    # orders 4-6 have no n-grams and are left out of the average
    assert metrics.chrf(["abc"], ["abd"]) == pytest.approx(100 * (2 / 3 + 1 / 2 + 0) / 3)
    # corpus level: counts are summed before the F-score (recall weighs β² = 4 times)
    p, r = 1 / 1, 1 / 3  # order 1 of hyp "a"/"b" vs refs "abc"/"d": matches a (1 of 2 hyp, 1 of 4 ref)
    p, r = 1 / 2, 1 / 4
    assert metrics.chrf(["a", "b"], ["abc", "d"]) == pytest.approx(100 * 5 * p * r / (4 * p + r))
    assert metrics.chrf([""], ["abc"]) == 0.0


def test_reply_metrics_by_hand() -> None:
    assert metrics.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert metrics.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert metrics.repeats_phrase("나 지금 집 가 나 지금 집 가")
    assert metrics.repeats_phrase("그래그래그래그래그래")
    assert not metrics.repeats_phrase("ㅋㅋㅋㅋㅋㅋㅋㅋㅋㅋ") and not metrics.repeats_phrase("오늘 저녁 뭐 먹을까")
    texts = ["응", "응", "응", "좋아", "좋아", "가자", "나도 좋아", "나도 가자", "몰라", "글쎄"]
    m = metrics.reply_metrics(texts, ["응"] * 10)
    assert m["exact_match"] == pytest.approx(0.3)
    assert m["top5_share"] == pytest.approx(5 / 10)        # 응 ×3 and 좋아 ×2; singletons do not count
    assert m["same_opening_share"] == pytest.approx(3 / 10)  # 응 opens three (나도 two)
    assert m["empty_share"] == 0.0 and m["mean_chars"] == pytest.approx(sum(map(len, texts)) / 10)
    assert metrics.top_k_share(["a", "b", "c"]) == 0.0


def test_collapse_reasons() -> None:
    assert metrics.collapse_reasons(["오늘은 집에 있어", "떡볶이 먹자", "영화 보러 가자"]) == []
    assert "open with the same word" in " ".join(metrics.collapse_reasons(["나는 좋아", "나는 싫어", "나는 몰라"]))
    assert "nearly identical" in metrics.collapse_reasons(["오늘 뭐 해 ㅋㅋ", "오늘 뭐 해 ㅋㅋㅋ", "그래"])[0]
    assert "characters long" in metrics.collapse_reasons(["응", "ㅇ", "네"])[0]


def test_eval_collapse_is_measured_against_the_real_replies() -> None:
    from chatbot.eval.runner import collapse_reasons_corpus

    model = metrics.reply_metrics(["나는 좋아", "나는 싫어", "나는 몰라", "그래", "응 알겠어"])  # 3 of 5 open with 나는
    assert "60% of replies open with the same word" in collapse_reasons_corpus(
        model, metrics.reply_metrics(["나는 좋아", "오늘 뭐 해", "그래", "응", "밥 먹자"]))[0]
    assert collapse_reasons_corpus(model, metrics.reply_metrics(["나는 좋아", "나는 가", "그래", "응", "밥"])) == []


# ----------------------------------------------------------------------------- items from the stream
def test_sessions_and_items_follow_the_layout() -> None:
    # two sessions: [S1 5, S2 6, S1 5 6] and [S2 5, <system> ]; speaker ids 3 = S1, 4 = S2; 7 = <|system|>
    toks = np.array([1, 3, 5, 2, 4, 6, 2, 3, 5, 6, 2, 1, 4, 5, 2, 7, 2])
    mask = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    sess = sessions(toks, mask, bos=1, eot=2, speakers={3: "S1", 4: "S2"})
    assert [[(t.speaker, t.ids, t.target) for t in s] for s in sess] == [
        [("S1", [3, 5, 2], False), ("S2", [4, 6, 2], True), ("S1", [3, 5, 6, 2], True)],
        [("S2", [4, 5, 2], False), (None, [7, 2], False)],
    ]
    items = reply_items(sess, "S1")
    assert len(items) == 1 and items[0].reply.text_ids == [5, 6] and len(items[0].context) == 2
    assert len(reply_items(sess, None)) == 2
    assert pick(items * 5, 0, 1) == [] and len(pick(items * 5, 3, 1)) == 3


# ------------------------------------------------------------------------ the verb end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few seconds on a repetitive invented room (shared by the tests below)."""
    from tests.support.train import make_train_project

    from chatbot.train.loop import train

    root = tmp_path_factory.mktemp("evalproj")
    cfg = make_train_project(root, {"optimization": {"max_steps": 40, "lr_decay_steps": 40, "learning_rate": 1e-2},
                              "logging": {"eval_interval": 20, "save_interval": 20, "eval_replies": 4}}, repeat=True,
                       n_sessions=30, val_sessions=5)
    (root / ".env").write_text("CHATBOT_PASSWORD=eval-test\n", encoding="utf-8")
    assert train(cfg) == 0
    return cfg


def _run(cfg, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from chatbot.ops import main

    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "eval-test")
    code = main(["eval", "-c", str(cfg.config_dir), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_end_to_end_json_schema_and_status(trained, monkeypatch, capsys) -> None:
    code, out, err = _run(trained, monkeypatch, capsys, "--json", "--limit", "8", "--source", "best")
    assert code == 0, err
    r = json.loads(out)
    assert set(r) >= {"format", "created", "model", "data", "loss", "replies", "verdict", "seconds", "sampling"}
    assert r["format"] == EVAL_FORMAT and r["model"]["source"] == "best.pt"
    for name in ("model", "unigram", "bigram"):
        assert set(r["loss"][name]) >= {"nats", "ppl"} and r["loss"][name]["nats"] > 0
    # every validation target token is scored exactly once
    val_mask = np.fromfile(trained.processed_dir / "val_loss_mask.bin", dtype=np.uint8)
    assert r["data"]["val_target_tokens"] == int(val_mask[1:].sum())
    # the repetitive room is learnable: the model beats word frequencies by far
    assert r["loss"]["model"]["nats"] < r["loss"]["unigram"]["nats"] - 0.5
    rep = r["replies"]
    assert rep["items"] == 8 and rep["bot_speaker"] == "S1"
    keys = {"chrf", "exact_match", "distinct_1", "distinct_2", "mean_chars", "repeat_share", "empty_share",
            "top5_share", "same_opening_share"}
    for who in ("model", "retrieval", "reference"):
        assert keys <= set(rep[who])
    assert {"latency_mean_s", "latency_p95_s", "collapse"} <= set(rep["model"])
    assert rep["reference"]["chrf"] is None and 0 <= rep["model"]["chrf"] <= 100
    assert rep["retrieval"]["chrf"] > 50  # the same sessions recur: the nearest context has the real reply
    assert set(r["verdict"]) == {"beats_bigram", "beats_retrieval_chrf", "collapsed"}
    saved = json.loads((trained.run_dir / "eval.json").read_text(encoding="utf-8"))
    assert saved["loss"] == r["loss"] and saved["replies"] == r["replies"]
    # figures only: no reply text of the room in the file
    assert "hello" not in json.dumps(saved) and "안녕" not in json.dumps(saved)

    # the trainer's cheap subset at each evaluation, in metrics.jsonl
    lines = [json.loads(x) for x in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    probes = [x for x in lines if x["kind"] == "eval_replies"]
    assert [x["step"] for x in probes] == [20, 40]
    assert all(x["reply_items"] == 4 and 0 <= x["reply_chrf"] <= 100 and "reply_distinct_2" in x for x in probes)

    from chatbot.status import build_report

    line = next(x for x in build_report(trained).lines if x.startswith("Eval"))
    assert "best.pt" in line and f"chrF {rep['model']['chrf']}" in line


def test_eval_table_limit_zero_and_errors(trained, monkeypatch, capsys) -> None:
    code, out, err = _run(trained, monkeypatch, capsys, "--limit", "0")
    assert code == 0, err
    assert "bigram" in out and "unigram" in out and "replies:" in out and "eval.json" in out
    code, out, err = _run(trained, monkeypatch, capsys, "--source", "nowhere.pt")
    assert code == 2 and err.startswith("error: --source nowhere.pt: no such file")
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "wrong")
    from chatbot import security
    monkeypatch.setattr(security, "WRONG_PASSWORD_DELAY_S", 0)
    from chatbot.ops import main
    assert main(["eval", "-c", str(trained.config_dir)]) == 2
    assert "wrong password" in capsys.readouterr().err


def test_eval_replies_are_deterministic(trained, monkeypatch, capsys) -> None:
    first = json.loads(_run(trained, monkeypatch, capsys, "--json", "--limit", "4")[1])
    second = json.loads(_run(trained, monkeypatch, capsys, "--json", "--limit", "4")[1])
    drop = ("latency_mean_s", "latency_p95_s")
    assert {k: v for k, v in first["replies"]["model"].items() if k not in drop} == \
        {k: v for k, v in second["replies"]["model"].items() if k not in drop}


# ------------------------------------------------------------------------------ smoke's collapse check
def test_smoke_fails_on_collapsed_replies(tmp_path: Path, monkeypatch, capsys) -> None:
    import chatbot.eval.smoke as smoke_mod
    from chatbot.infer.responder import Reply
    from tests.support.gen import password_env
    from tests.support.workspace import make_workspace

    cfg = make_workspace(tmp_path, password=True)
    password_env(monkeypatch)

    class Fake:
        bundle = type("B", (), {"source": Path("best.pt"), "step": 1})()

        def __init__(self, texts):
            self.texts = iter(texts)

        def reply(self, history):
            return Reply(next(self.texts), -1.0, 3, 0.01, 0.001, "eot")

    monkeypatch.setattr(smoke_mod, "load_responder", lambda cfg: Fake(["나는 좋아", "나는 싫어", "나는 몰라"]))
    assert smoke_mod.smoke(cfg) == 1
    assert capsys.readouterr().err == "smoke failed: the replies collapsed: 3 of 3 replies open with the same word\n"
    monkeypatch.setattr(smoke_mod, "load_responder", lambda cfg: Fake(["오늘은 집에 있어", "떡볶이 먹자", "영화 보러 가자"]))
    assert smoke_mod.smoke(cfg) == 0
