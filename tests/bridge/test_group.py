"""Group rooms: speaker slots per sender, speak-or-stay-silent (reply_policy), the speak probability read in the
reply's own forward pass, bridge/chat/reply wiring, the invented five-person room. All names are invented."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from chatbot.bridge.jsonl import run_jsonl
from chatbot.bridge.memory import MemoryStore
from chatbot.config import GenConfig, SamplingConfig
from chatbot.formats import roomfile
from chatbot.infer.decode import generate
from chatbot.infer.prompt import TokenIds
from chatbot.infer.responder import Responder
from chatbot.infer.loading import Bundle
from chatbot.eval.speak import BOT_NAME, SpeakPoint, group_room_messages, policy_scores, speak_points
from chatbot.infer.speakers import RoomSpeakers, SpeakerPlan, make_plan, pre_decide

from tests.support.bridge import FakeReply, FakeResponder, bridge_cfg, make_bridge, running_bridge
from tests.support.gen import BigramModel, chain_of, chatty_bias, shaped_model, tiny_tokenizer

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PERSONA5 = {"target": "S2", "self": "S1", "speakers": {"S1": 50, "S2": 40, "S3": 30, "S4": 20, "S5": 10}}


def make_responder(model, persona=None, **gen) -> Responder:
    sampling = SamplingConfig(**gen.pop("sampling", {}))
    bundle = Bundle(model, tiny_tokenizer(), persona or PERSONA5, Path("x.pt"), 1)
    return Responder(bundle, replace(GenConfig(), sampling=sampling, **gen))


# ------------------------------------------------------------------------------------------------- slots
def test_senders_get_stable_slots_and_overflow_shares_other() -> None:
    plan = make_plan(PERSONA5, "S1", "S2")
    assert (plan.free, plan.other) == (("S3", "S4"), "S5")  # no S0 learned: the least active slot is "other"
    room = RoomSpeakers()
    got = [room.slot(plan, k, None) for k in ("a", "b", "c", "d", "e", "a", "d")]
    assert got == [("user", False), ("S3", False), ("S4", False), ("S5", True), ("S5", True),
                   ("user", False), ("S5", False)]
    again = RoomSpeakers.from_json(json.loads(json.dumps(room.to_json())))
    assert again.slot(plan, "c", None) == ("S4", False) and again.senders["a"] == ["user", 2]
    with_s0 = make_plan({**PERSONA5, "speakers": {**PERSONA5["speakers"], "S0": 3}}, "S1", "S2")
    assert (with_s0.free, with_s0.other) == (("S3", "S4", "S5"), "S0")
    two = make_plan({"speakers": {"S1": 9, "S2": 8}}, "S1", "S2")  # a two-person model: everyone is "the user"
    room2 = RoomSpeakers()
    assert [room2.slot(two, k, None)[0] for k in "xyz"] == ["user", "user", "user"]


def test_learned_names_keep_their_training_slot() -> None:
    plan = make_plan(PERSONA5, "S1", "S2", {"민지": "S4", "Bot Person": "S2", "준호": "S1"})
    assert "bot person" not in plan.learned  # the bot's own pseudonym is never handed to a sender
    room = RoomSpeakers()
    assert room.slot(plan, "k1", " 민지 ")[0] == "S4"  # NFC, trimmed, case-blind
    assert room.slot(plan, "k2", "준호")[0] == "user"  # learned as the user speaker
    assert room.slot(plan, "k3", "새 사람")[0] == "S3"


def test_reply_policy_rules_without_the_model() -> None:
    assert pre_decide("always", "아무말", [], 4).speak
    assert pre_decide("addressed", "하늘아 뭐해", ["하늘"], 4).reason == "addressed"
    assert pre_decide("addressed", "@HANEUL hi", ["haneul"], 4).speak  # case-blind, mention form
    assert pre_decide("addressed", "아무말", ["하늘"], 1).reason == "two_person"
    assert not pre_decide("addressed", "아무말", ["하늘"], 3).speak
    assert pre_decide("model", "아무말", ["하늘"], 3) is None  # the model's probability decides
    assert pre_decide("model", "하늘 어디야", ["하늘"], 3).speak


# ------------------------------------------------------------------------------------- speak probability
def test_speak_probability_comes_from_the_reply_forward_pass() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    model = shaped_model(chatty_bias(tok), seed=3)
    r = make_responder(model, sampling=dict(temperature=0.0, max_new_tokens=6))
    history = [("user", "오늘 저녁 뭐 먹을까?"), ("S3", "치킨 시킬까"), ("S4", "좋아 좋아")]
    prompt = r.prompt_ids(history)
    assert prompt[-1] == ids.speakers["S2"] and ids.speakers["S3"] in prompt and ids.speakers["S4"] in prompt
    with torch.no_grad():
        ref = F.softmax(model(torch.tensor([prompt[:-1]]))[0, -1].float(), dim=-1)[ids.speakers["S2"]]
    out = r.reply(history)
    assert out.speak_prob == pytest.approx(float(ref), rel=1e-4) and out.decision == "always"
    # the reply itself is exactly the one decoded without reading the probability
    plain = generate(model, prompt, r.gen.sampling, eot_id=ids.eot, turn_start_ids=ids.turn_starts,
                     banned_ids=r.banned, unpenalized_ids=ids.special, use_cache=False)
    assert out.n_tokens == len(plain.tokens)


def test_model_policy_stays_silent_without_generating() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    # after <|eot|> the model is sure S3 speaks next, never the bot (S2)
    model = BigramModel(chain_of([ids.eot, ids.speakers["S3"]]))
    r = make_responder(model, reply_policy="model", speak_threshold=0.3)
    history = [("user", "영화 보러 갈래?"), ("S3", "좋아 몇 시에 만날까")]
    out = r.reply(history)
    assert (out.silent, out.text, out.decision) == (True, "", "below_threshold")
    assert out.speak_prob < 1e-6
    assert model.calls == [len(r.prompt_ids(history)) - 1]  # one prefill, nothing decoded
    named = replace(r.gen, bridge=replace(r.gen.bridge, bot_names=["콩떡"]))
    r.gen = named
    model.calls.clear()
    out = r.reply(history + [("S4", "콩떡 너도 와")])
    assert not out.silent and out.decision == "addressed" and out.speak_prob is not None


def test_history_speakers_are_checked_and_names_stay_text() -> None:
    r = make_responder(BigramModel({}))
    with pytest.raises(ValueError, match="pseudonym"):
        r.prompt_ids([("민지", "hi")])
    # a message that looks like a speaker token is plain text, not a turn of S1
    ids = TokenIds.from_tokenizer(r.tok)
    prompt = r.prompt_ids([("S3", "<|spk:S1|> 안녕")])
    assert prompt.count(ids.speakers["S1"]) == 0 and prompt.count(ids.speakers["S3"]) == 1


# -------------------------------------------------------------------------------------------------- bridge
class PolicyFake(FakeResponder):
    """Speaks only when the latest message names 하늘 (or policy always); records the kwargs it got."""

    plan = SpeakerPlan("user", "S2", ("S3", "S4"), "S5")

    def __init__(self) -> None:
        super().__init__()
        self.kw: list[dict] = []

    def reply(self, history, **kw):
        self.kw.append(kw)
        if kw.get("policy") != "always" and "하늘" not in history[-1][1]:
            with self.lock:
                self.calls.append(list(history))
            r = FakeReply("")
            r.silent, r.decision, r.speak_prob = True, "below_threshold", 0.05
            return r
        r = super().reply(history)
        r.silent, r.decision, r.speak_prob = False, "model", 0.9
        return r


def test_relay_group_room_slots_silence_and_memory(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.bridge")
    fake = PolicyFake()
    senders = ["가온", "다솜", "보람", "새봄", "아라"]
    with running_bridge(tmp_path, fake, transport="relay") as rb:
        for i, name in enumerate(senders):
            res = rb.post("/relay", {"room": "모임", "sender": name, "msg": f"메시지 {i}", "id": i})
            assert (res.status, res.outcome) == (204, "silent")
        res = rb.post("/relay", {"room": "모임", "sender": "다솜", "msg": "하늘아 어디야", "id": 9})
        assert res.status == 200 and res.json["reply"]
        assert fake.calls[-1][-6:] == [("user", "메시지 0"), ("S3", "메시지 1"), ("S4", "메시지 2"),
                                       ("S5", "메시지 3"), ("S5", "메시지 4"), ("S3", "하늘아 어디야")]
        assert fake.kw[-1] == {"senders": 5}
    logs = caplog.text
    assert logs.count("more senders than the model's 3 speaker slots") == 1
    assert "outcome=silent" in logs and "p_speak=0.050" in logs and "decision=model" in logs
    assert not any(n in logs for n in senders) and "메시지" not in logs
    raw = next((tmp_path / "rooms").glob("*.json")).read_text(encoding="utf-8")
    data = json.loads(raw)
    assert data["format"] == roomfile.FORMAT and len(data["speakers"]) == 5
    assert not any(n in raw for n in senders)  # sender keys are keyed hashes
    # a restart keeps every sender's slot
    fake2 = PolicyFake()
    with running_bridge(tmp_path, fake2, transport="relay") as rb:
        rb.post("/relay", {"room": "모임", "sender": "새봄", "msg": "하늘 너는?", "id": 10})
        assert fake2.calls[-1][-1] == ("S5", "하늘 너는?")


def test_kakao_skill_always_answers(tmp_path: Path) -> None:
    from tests.support.bridge import skill_payload

    fake = PolicyFake()
    with running_bridge(tmp_path, fake, transport="kakao-skill") as rb:
        res = rb.post("/skill", skill_payload("아무 말"))
        assert res.status == 200 and res.json["template"]["outputs"]
    assert fake.kw == [{"senders": 1, "policy": "always"}]


def test_jsonl_silent_line_and_format_1_room_still_loads(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path, max_turns=50)
    rh = store.room_hash("a")
    (tmp_path / "rooms" / f"{rh}.json").write_text(json.dumps({
        "format": roomfile.READ_FORMATS[0], "room": rh, "seen": [],
        "turns": [{"role": "user", "text": "예전 메시지", "ts": 1.0}, {"role": "bot", "text": "예전 답", "ts": 2.0}]}),
        encoding="utf-8")
    fake = PolicyFake()
    bridge = make_bridge(bridge_cfg(transport="jsonl"), tmp_path, send=True, responder=fake)
    lines = [{"room": "a", "sender": "가온", "msg": "안녕", "id": "1"},
             {"room": "a", "sender": "다솜", "msg": "하늘아 안녕", "id": "2"}]
    out = io.StringIO()
    import threading

    run_jsonl(bridge, io.StringIO("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines)), out,
              threading.Event())
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert got[0]["reply"] is None and got[0]["reason"] == "silent" and got[0]["outcome"] == "silent"
    assert got[1]["reply"] and "reason" not in got[1]
    assert fake.calls[-1] == [("user", "예전 메시지"), ("bot", "예전 답"), ("user", "안녕"), ("S3", "하늘아 안녕")]


# ------------------------------------------------------------------------------------------- chat / reply
def test_chat_as_name_and_reply_json(tmp_path: Path, monkeypatch, capsys) -> None:
    from chatbot.infer.chat import chat_loop

    tok = tiny_tokenizer()
    r = make_responder(shaped_model(chatty_bias(tok), seed=5), reply_policy="addressed",
                       sampling=dict(max_new_tokens=6))
    r.gen = replace(r.gen, bridge=replace(r.gen.bridge, bot_names=["하늘"]))
    seen: list = []
    real = r.reply
    monkeypatch.setattr(r, "reply", lambda h, **kw: (seen.append(list(h)), real(h, **kw))[1])
    monkeypatch.setattr("sys.stdin", io.StringIO("안녕\n/as 민지\n나도 왔어\n/as 준호\n하늘 뭐해?\n/as\n또 나\n"))
    chat_loop(r, r.gen, interactive=False)
    out = capsys.readouterr().out
    assert "민지: 나도 왔어" in out and out.count("(silent)") == 2  # "안녕": two-person so far, answered
    assert [s for s, _ in seen[-1] if s != "bot"] == ["user", "S3", "S4", "user"]


def test_invented_group_room_and_policy_scores() -> None:
    msgs = group_room_messages(40, seed=1)
    assert len({who for _, who, _ in msgs}) == 5
    for (ta, a, text), (tb, b, _) in zip(msgs, msgs[1:]):
        if BOT_NAME in text and a != BOT_NAME and ta.date() == tb.date():
            assert b == BOT_NAME  # called by name: the bot answers
    pts = [SpeakPoint(0.9, True, True), SpeakPoint(0.6, True, False), SpeakPoint(0.2, False, False),
           SpeakPoint(0.7, False, False)]
    s = policy_scores(pts, 0.5)
    assert s["always"]["precision"] == 0.5 and s["always"]["recall"] == 1.0
    assert s["addressed"]["recall"] == 0.5 and s["model_only"]["bot_per_100"] == 75.0
    assert s["real"]["bot_per_100"] == 50.0


def test_speak_points_read_the_bot_probability_after_others_turns() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    a, b, bot = ids.speakers["S1"], ids.speakers["S3"], ids.speakers["S2"]
    x = tok.token_to_id("a") or 5
    stream = [ids.bos, a, x, ids.eot, b, x, ids.eot, bot, x, ids.eot, a, x, ids.eot, ids.bos, a, x, ids.eot]
    model = shaped_model(chatty_bias(tok), seed=2)
    pts = speak_points(model, stream, eot=ids.eot, bos=ids.bos, bot=bot, speakers=set(ids.speakers.values()),
                       block=64, addressed=lambda turn: False)
    assert [p.spoke for p in pts] == [False, True]  # after S1, after S3; not after the bot, not at session end
    with torch.no_grad():
        ref = F.softmax(model(torch.tensor([stream[:7]]))[0, -1], dim=-1)[bot]
    assert pts[1].prob == pytest.approx(float(ref), rel=1e-4)


def test_learn_turn_taking_puts_loss_on_the_next_speaker_token(tmp_path: Path) -> None:
    import numpy as np

    from chatbot.data import preprocess as pp

    from tests.support.preprocess import chat_room, parse_stream, read_outputs, small_cfg

    off = pp.build([chat_room(8, seed=4)], small_cfg(), tmp_path / "off")
    on = pp.build([chat_room(8, seed=4)], small_cfg(learn_turn_taking=True), tmp_path / "on")
    assert on["persona"]["turn_taking"] is True and "turn_taking" not in off["persona"]
    a, b = read_outputs(tmp_path / "off"), read_outputs(tmp_path / "on")
    tokens, mask_off, mask_on = b["train"]["tokens"], a["train"]["mask"], b["train"]["mask"]
    assert np.array_equal(a["train"]["tokens"], tokens)  # same layout, only the mask differs
    turns = [t for s in parse_stream(b["tok"], tokens) for t in s[1:] if t["speaker"] is not None]
    spk_pos = [t["start"] for t in turns]  # every speaker token after another turn of the session
    assert spk_pos and all(mask_on[p] == 1 and mask_off[p] == 0 for p in spk_pos)
    rest = np.ones(len(tokens), dtype=bool)
    rest[spk_pos] = False
    assert np.array_equal(mask_on[rest], mask_off[rest])
    assert off["config_hash"] != on["config_hash"]


@pytest.mark.parametrize("bot_p", [None, 0.97])
def test_smoke_group_script(tmp_path: Path, monkeypatch, capsys, bot_p) -> None:
    import chatbot.infer.responder as g
    from chatbot.eval.smoke import GROUP_SCRIPT, smoke

    from tests.support.gen import password_env, write_checkpoint
    from tests.support.workspace import make_workspace

    cfg = make_workspace(tmp_path, gen={"reply_policy": "model", "bridge": {"bot_names": ["하늘"]}}, password=True)
    write_checkpoint(cfg, shaped_model(chatty_bias(tiny_tokenizer()), seed=1))  # P(bot next) ≈ 0 after a turn
    password_env(monkeypatch)
    if bot_p is not None:  # as if the model were sure the bot speaks after every turn
        real = g.model_decide
        monkeypatch.setattr(g, "model_decide", lambda p, t: real(bot_p, t))
    code = smoke(cfg)
    out = capsys.readouterr()
    unasked = sum("{bot}" not in t for _, t in GROUP_SCRIPT)
    if bot_p is None:
        assert code == 0 and out.out.count("(silent)") == unasked and out.out.count("[addressed") == 2
    else:
        assert code == 1 and f"spoke on {unasked} of {unasked} messages not addressed" in out.err


def test_status_notes_reply_policy_model(tmp_path: Path) -> None:
    from chatbot.status import build_report

    from tests.support.gen import random_model, write_checkpoint
    from tests.support.workspace import make_workspace

    cfg = make_workspace(tmp_path, gen={"reply_policy": "model"}, password=True)
    write_checkpoint(cfg, random_model())  # stats persona without turn_taking
    assert any("does not teach who speaks next" in line for line in build_report(cfg).lines)
    write_checkpoint(cfg, random_model(), persona={"target": "S2", "self": "S1", "turn_taking": True,
                                                   "speakers": {"S1": 5, "S2": 4}})
    assert any("only predicts two-person turn-taking" in line for line in build_report(cfg).lines)
    cfg = make_workspace(tmp_path, gen={"reply_policy": "always"}, password=True)
    assert not any(line.startswith("Replies") for line in build_report(cfg).lines)


def test_reply_json_carries_the_decision(tmp_path: Path, monkeypatch, capsys) -> None:
    from chatbot.infer.chat import reply_command

    from tests.support.gen import password_env, write_checkpoint
    from tests.support.workspace import make_workspace

    cfg = make_workspace(tmp_path, gen={"reply_policy": "model", "bridge": {"bot_names": ["하늘"]}}, password=True)
    write_checkpoint(cfg, shaped_model(chatty_bias(tiny_tokenizer()), seed=1))  # P(bot next) ≈ 0
    password_env(monkeypatch)
    reply_command(cfg, "오늘 뭐해?", as_json=True)
    silent = json.loads(capsys.readouterr().out)
    assert (silent["spoke"], silent["decision"], silent["text"], silent["confidence"]) == (
        False, "below_threshold", "", None)
    assert 0 <= silent["speak_prob"] < 0.01
    reply_command(cfg, "하늘 오늘 뭐해?", as_json=True)
    spoke = json.loads(capsys.readouterr().out)
    assert spoke["spoke"] and spoke["decision"] == "addressed" and spoke["text"]


def test_serve_message_names_map_to_speaker_slots() -> None:
    from chatbot.serve.wire import Message, to_history

    msgs = [Message("user", "안녕"), Message("user", "나도", "민지"), Message("bot", "반가워"),
            Message("user", "뭐해", "준호"), Message("user", "또 나", "민지")]
    assert to_history(msgs) == [("user", "안녕"), ("user", "나도"), ("bot", "반가워"), ("user", "뭐해"), ("user", "또 나")]
    plan = make_plan(PERSONA5, "S1", "S2")
    assert to_history(msgs, plan) == [("user", "안녕"), ("S3", "나도"), ("bot", "반가워"), ("S4", "뭐해"),
                                      ("S3", "또 나")]


def test_base_model_speak_probability_is_the_bot_prefix_probability(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from chatbot.base.layout import BaseLayout
    from chatbot.infer.responder import load_responder

    from tests.support.base_infer import logits_of, make_base_run

    run = make_base_run(tmp_path, gen={"sampling": {"max_new_tokens": 4}})
    r = load_responder(run["cfg"])
    history = [("user", "오늘 뭐해?"), ("S3", "나는 집"), ("user", "너는?")]  # S3: a third person as text "S3: "
    prompt = r.prompt_ids(history)
    layout = BaseLayout(run["tokenizer"])
    k = len(layout.prefix(r.bot_speaker))
    assert r.speak_tokens() == k > 1 and prompt[-k:] == layout.prefix(r.bot_speaker)
    assert "S3: " in layout.decode(prompt)
    logp = torch.log_softmax(logits_of(run["model"], torch.tensor([prompt]))[0].float(), dim=-1)
    want = float(torch.exp(sum(logp[len(prompt) - k - 1 + j, prompt[len(prompt) - k + j]] for j in range(k))))
    out = r.reply(history)
    assert out.speak_prob == pytest.approx(want, rel=1e-3, abs=1e-7)
