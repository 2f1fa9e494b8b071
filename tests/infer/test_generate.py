"""Generation: cached decode == full recompute, sampling knobs, stops, streaming, prompt layout, truncation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from chatbot.config import GenConfig, SamplingConfig
from chatbot.data.tokenizer import encode_text, placeholder_marker
from chatbot.errors import ChatbotError
from chatbot.infer.decode import generate
from chatbot.infer.persona import resolve_speakers
from chatbot.infer.prompt import TokenIds, build_prompt, context_budget
from chatbot.infer.responder import Responder
from chatbot.infer.sampling import sample_next
from chatbot.infer.stream import TextStream, clean_reply
from chatbot.infer.loading import Bundle

from tests.support.gen import (
    PERSONA, BigramModel, byte_token, chain_of, random_model, shaped_model, chatty_bias, tiny_tokenizer,
    vocab_size,
)

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREEDY = SamplingConfig(temperature=0.0, repetition_penalty=1.0, stop_on_next_turn=True)


def responder(model, *, persona=PERSONA, **gen_over) -> Responder:
    sampling = gen_over.pop("sampling", {})
    gen = GenConfig(**gen_over)
    gen.sampling = dataclasses.replace(gen.sampling, **sampling)
    return Responder(Bundle(model, tiny_tokenizer(), persona, Path("test.pt"), 1), gen)


# ------------------------------------------------------------------------------------------------ KV cache
def naive_greedy(model, prompt: list[int], n: int) -> tuple[list[int], list[torch.Tensor]]:
    """Reference: recompute the whole sequence for every new token, no cache."""
    seq, out, logits_seen = list(prompt), [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([seq]))[0, -1]
            logits_seen.append(logits)
            nxt = int(logits.argmax())
            out.append(nxt)
            seq.append(nxt)
    return out, logits_seen


def test_cached_greedy_equals_full_recompute_token_for_token() -> None:
    model = random_model(seed=0, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, tie_embeddings=False)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # sharp logits: greedy picks are not near-ties that float noise could flip
        for layer in model.model.layers:  # strong attention: every token depends on its whole context
            layer.self_attn.v_proj.weight.mul_(4)
            layer.self_attn.o_proj.weight.mul_(4)
    prompt = torch.randint(0, vocab_size(), (11,), generator=torch.Generator().manual_seed(0)).tolist()
    want, logits = naive_greedy(model, prompt, 30)
    want_lp = [float(torch.log_softmax(lg, -1)[t]) for t, lg in zip(want, logits)]
    got = generate(model, prompt, GREEDY, max_new_tokens=30)
    assert got.tokens == want
    assert got.logprobs == pytest.approx(want_lp, abs=1e-4)
    assert len(set(want)) > 5  # a non-trivial sequence
    assert generate(model, prompt, GREEDY, max_new_tokens=30, use_cache=False).tokens == want


@pytest.mark.parametrize("over", [dict(bias=True, n_kv_head=2, n_head=2), dict(tie_embeddings=False, n_head=4, n_kv_head=1)])
def test_cached_decode_logits_equal_the_model_forward(over: dict) -> None:
    """Prefill, a chunk after cached tokens (masked), then single tokens: every step's logits = full forward."""
    model = random_model(seed=7, **over)
    if over.get("bias"):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.5)
    seq = torch.randint(0, vocab_size(), (30,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(seq[None])[0]
    cache = model.new_cache()
    with torch.inference_mode():
        got = [model.decode(seq[:12], 0, cache), model.decode(seq[12:20], 12, cache)]
        got += [model.decode(seq[p:p + 1], p, cache) for p in range(20, 30)]
    want = [full[11], full[19], *full[20:30]]
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-4), (g - w).abs().max()


def test_cache_prefills_once_then_feeds_one_token_per_step() -> None:
    tok = tiny_tokenizer()
    a, b, c = (byte_token(tok, x) for x in (b"a", b"b", b"c"))
    model = BigramModel(chain_of([a, b, c, a]))
    out = generate(model, [c, c, c, c, a], GREEDY, max_new_tokens=6)
    assert out.tokens == [b, c, a, b, c, a]
    assert model.calls == [5, 1, 1, 1, 1, 1]


def test_decode_threads_apply_to_the_token_steps_and_are_restored() -> None:
    model = random_model(seed=1)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        generate(model, [1, 4, 30], GREEDY, max_new_tokens=3, decode_threads=1,
                 on_token=lambda t: seen.append(torch.get_num_threads()) and False)
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_stops_when_the_context_is_full() -> None:
    model = random_model(seed=1, block_size=16)
    out = generate(model, list(range(10, 22)), GREEDY, max_new_tokens=50)
    assert out.stop_reason == "context_full"
    assert len(out.tokens) == 16 - 12 + 1  # the last sampled token needs no position of its own


# ------------------------------------------------------------------------------------------------ sampling
def dist_logits(*probs: float) -> torch.Tensor:
    return torch.log(torch.tensor(probs))


def draws(logits: torch.Tensor, s: SamplingConfig, n: int = 1500, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.tensor([sample_next(logits.clone(), s, None, g) for _ in range(n)])


def test_top_k_1_is_greedy() -> None:
    model = random_model(seed=2)
    prompt = [1, 4, 30, 31, 32, 2, 5]
    greedy = generate(model, prompt, GREEDY, max_new_tokens=20).tokens
    topk1 = SamplingConfig(temperature=1.5, top_k=1, top_p=1.0, repetition_penalty=1.0)
    for seed in range(3):
        got = generate(model, prompt, topk1, max_new_tokens=20, generator=torch.Generator().manual_seed(seed))
        assert got.tokens == greedy


def test_top_p_keeps_exactly_the_nucleus() -> None:
    logits = dist_logits(0.5, 0.3, 0.15, 0.05)
    base = dict(temperature=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0)
    # a nucleus of one token (top_p below the best token's probability) = greedy
    assert set(draws(logits, SamplingConfig(top_p=0.3, **base)).tolist()) == {0}
    assert set(draws(logits, SamplingConfig(top_p=0.5, **base)).tolist()) == {0}
    # 0.5 < top_p <= 0.8: the two best tokens, in their renormalized ratio 5:3
    d = draws(logits, SamplingConfig(top_p=0.8, **base))
    assert set(d.tolist()) == {0, 1}
    assert abs((d == 0).float().mean().item() - 0.5 / 0.8) < 0.05
    # top_p = 1 is off: everything can come out
    assert set(draws(logits, SamplingConfig(top_p=1.0, **base)).tolist()) == {0, 1, 2, 3}


def test_min_p_drops_tokens_below_the_fraction_of_the_best() -> None:
    logits = dist_logits(0.5, 0.3, 0.15, 0.05)
    base = dict(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    assert set(draws(logits, SamplingConfig(min_p=0.5, **base)).tolist()) == {0, 1}  # threshold 0.25
    assert set(draws(logits, SamplingConfig(min_p=0.2, **base)).tolist()) == {0, 1, 2}  # threshold 0.10
    assert set(draws(logits, SamplingConfig(min_p=1.0, **base)).tolist()) == {0}


def test_temperature_zero_is_argmax_and_top_k_limits_choices() -> None:
    logits = torch.tensor([0.1, 3.0, 0.2, 2.9, -1.0])
    assert sample_next(logits.clone(), SamplingConfig(temperature=0.0, repetition_penalty=1.0)) == 1
    d = draws(logits, SamplingConfig(temperature=5.0, top_k=2, top_p=1.0, repetition_penalty=1.0))
    assert set(d.tolist()) == {1, 3}


def test_repetition_penalty_on_recent_tokens() -> None:
    s = SamplingConfig(temperature=0.0, repetition_penalty=1.2)
    recent = torch.tensor([0])
    assert sample_next(torch.tensor([2.0, 1.9, 0.0]), s, recent) == 1  # positive logit divided
    assert sample_next(torch.tensor([-1.0, -1.1, -5.0]), s, recent) == 1  # negative logit multiplied
    assert sample_next(torch.tensor([2.0, 1.9, 0.0]), s, torch.tensor([2])) == 0  # others untouched


def test_repetition_penalty_lowers_repeats_in_generated_text() -> None:
    model = random_model(seed=5)
    prompt = [1, 4, 40, 41, 42, 2, 5]

    def repeats(penalty: float) -> int:
        s = SamplingConfig(temperature=0.0, repetition_penalty=penalty, repetition_window=64)
        toks = generate(model, prompt, s, max_new_tokens=40).tokens
        return len(toks) - len(set(toks))

    plain, penalized = repeats(1.0), repeats(1.8)
    assert plain > 10  # greedy decoding of a random model loops
    assert penalized < plain


def test_banned_tokens_are_never_sampled() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    photo, a = tok.token_to_id("<|photo|>"), byte_token(tok, b"a")
    model = BigramModel({a: photo, photo: photo})
    s = SamplingConfig(temperature=0.0, repetition_penalty=1.0)
    assert generate(model, [a], s, max_new_tokens=3).tokens == [photo] * 3  # the model wants the placeholder
    got = generate(model, [a], s, max_new_tokens=3, banned_ids=[photo]).tokens
    assert photo not in got and len(got) == 3
    # a Responder bans padding and every media / PII placeholder (nothing the bot could send)
    r = responder(model)
    assert {ids.pad, *ids.placeholders} <= set(r.banned)
    assert ids.eot not in r.banned


# ------------------------------------------------------------------------------------------------- replies
def test_seed_makes_replies_reproducible() -> None:
    r = responder(shaped_model(chatty_bias(tiny_tokenizer())), sampling=dict(max_new_tokens=20))
    history = [("user", "안녕 뭐해?")]
    a, b = r.reply(history, seed=11), r.reply(history, seed=11)
    assert (a.text, a.n_tokens, a.confidence) == (b.text, b.n_tokens, b.confidence)
    others = {r.reply(history, seed=s).text for s in range(12, 17)}
    assert len(others | {a.text}) > 1


def test_stop_at_end_of_turn() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    h, i, bang = (byte_token(tok, x) for x in (b"h", b"i", b"!"))
    model = BigramModel(chain_of([ids.speakers["S1"], h, i, ids.eot, bang]))
    out = responder(model, sampling=dict(temperature=0.0)).reply([("user", "hello")])
    assert (out.text, out.stop_reason, out.n_tokens) == ("hi", "eot", 3)


@pytest.mark.parametrize("stopper", ["<|spk:S3|>", "<|spk:S2|>", "<|bos|>"])
def test_stop_when_the_model_starts_another_turn(stopper: str) -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    h, i = byte_token(tok, b"h"), byte_token(tok, b"i")
    chain = chain_of([ids.speakers["S1"], h, i, tok.token_to_id(stopper), h])
    out = responder(BigramModel(chain), sampling=dict(temperature=0.0)).reply([("user", "hello")])
    assert (out.text, out.stop_reason) == ("hi", "next_turn")
    # with stop_on_next_turn off the turn tokens are banned: the reply goes on and never contains them
    model = BigramModel(chain)
    r = responder(model, sampling=dict(temperature=1.0, top_k=0, stop_on_next_turn=False, max_new_tokens=8))
    out = r.reply([("user", "hello")], seed=0)
    assert out.stop_reason != "next_turn" and out.n_tokens > 3


def test_streaming_holds_back_a_syllable_split_across_tokens() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    raw = "안!".encode()  # 안 = EC 95 88: three byte tokens, the first two alone are not text
    byte_ids = [byte_token(tok, raw[k:k + 1]) for k in range(len(raw))]
    model = BigramModel(chain_of([ids.speakers["S1"], *byte_ids, ids.eot]))
    chunks: list[str] = []
    lens: list[int] = []
    r = responder(model, sampling=dict(temperature=0.0))
    out = r.reply([("user", "hi")], on_text=lambda c: (chunks.append(c), lens.append(len(model.calls))))
    assert out.text == "안!"
    assert "".join(chunks) == "안!"
    assert "\ufffd" not in "".join(chunks)
    # calls: the prompt up to the latest <|eot|>, the bot's speaker token (its probability is read there), then one
    # per generated byte: "안" appeared only once its third byte was generated
    assert model.calls[:2] == [len(r.prompt_ids([("user", "hi")])) - 1, 1]
    assert lens[0] == 4


def test_text_stream_unit() -> None:
    table = [b"\xec", b"\x95", b"\x88", b" ", b"<|e", b"ot|>", b"x", b"\xff"]
    chunks: list[str] = []
    s = TextStream(table, max_chars=50, on_text=chunks.append)
    for t in (0, 1):
        s.push(t)
    assert chunks == []  # incomplete syllable held back
    s.push(2)
    assert chunks == ["안"]
    for t in (3, 4):
        s.push(t)
    assert chunks == ["안"]  # trailing space and a possible "<|eot|>" look-alike held back
    for t in (5, 6, 7):
        s.push(t)
    assert s.finish() == "안 x"  # look-alike removed, the invalid byte dropped
    assert "".join(chunks) == "안 x"


def test_max_chars_trims_and_stops_generation() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    a = byte_token(tok, b"a")
    model = BigramModel({ids.speakers["S1"]: a, a: a})
    out = responder(model, max_chars=5, sampling=dict(temperature=0.0, repetition_penalty=1.0)).reply([("user", "x")])
    assert (out.text, out.stop_reason, out.n_tokens) == ("aaaaa", "callback", 5)


def test_clean_text_leaves_only_the_sentence() -> None:
    assert clean_reply("  <|eot|>hi <|spk:S1|>there<\u2060|photo|>\x1b \n", 100) == "hi there"
    assert clean_reply(f"a{placeholder_marker('url')}b", 100) == "aurlb"  # marker characters gone
    assert clean_reply("가나다라마", 3) == "가나다"
    assert clean_reply("<\u2060|3 you", 100) == "<|3 you"  # escaped text that is not a token is unescaped


def test_confidence_is_the_mean_log_probability_of_the_reply_tokens() -> None:
    model = random_model(seed=4)
    r = responder(model, sampling=dict(temperature=0.0, repetition_penalty=1.0, max_new_tokens=6))
    history = [("user", "안녕 뭐해?")]
    out = r.reply(history)
    prompt = r.prompt_ids(history)
    toks, logits = naive_greedy(model, prompt, out.n_tokens)
    want = sum(float(torch.log_softmax(lg, -1)[t]) for t, lg in zip(toks, logits)) / len(toks)
    assert out.confidence == pytest.approx(want, abs=1e-4)
    assert out.confidence < 0


# --------------------------------------------------------------------------------------------------- prompt
def test_prompt_mirrors_the_training_layout() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    r = responder(random_model())
    assert (r.user_speaker, r.bot_speaker) == ("S2", "S1")  # persona: self S2, S1 most active
    u, b = ids.speakers["S2"], ids.speakers["S1"]
    history = [("user", "안녕 뭐해?"), ("bot", "집이야"), ("user", "<|eot|> 라면")]
    want = [ids.bos,
            u, *encode_text(tok, "안녕 뭐해?"), ids.eot,
            b, *encode_text(tok, "집이야"), ids.eot,
            u, *encode_text(tok, "<|eot|> 라면"), ids.eot,
            b]
    assert r.prompt_ids(history) == want
    assert r.prompt_ids(history).count(ids.eot) == 3  # the typed "<|eot|>" stayed plain text
    # consecutive messages of one side form one turn, NFD input is normalized like the training text
    import unicodedata

    merged = r.prompt_ids([("user", unicodedata.normalize("NFD", "안녕")), ("user", "뭐해\u200b")])
    assert merged == [ids.bos, u, *encode_text(tok, "안녕\n뭐해"), ids.eot, b]
    # personal data is masked into the placeholder tokens the model was trained with; forged markers are not
    phone = r.prompt_ids([("user", "내 번호 010-1234-5678 \ue000url\ue001")])
    assert phone[2:-2] == [*encode_text(tok, "내 번호 "), tok.token_to_id("<|phone|>"), *encode_text(tok, " url")]


def test_history_truncation_keeps_whole_turns() -> None:
    tok = tiny_tokenizer()
    ids = TokenIds.from_tokenizer(tok)
    r = responder(random_model(), max_context_tokens=30)
    history = [("user" if k % 2 == 0 else "bot", f"message number {k} 안녕") for k in range(12)]
    prompt = r.prompt_ids(history)
    assert len(prompt) <= 30
    assert prompt[0] != ids.bos and prompt[0] in ids.speakers.values()  # cut at a turn boundary, BOS gone
    assert prompt[-1] == ids.speakers["S1"]
    turns = [r.encode_history([h])[0] for h in history]
    kept = prompt[:-1]
    n = k = 0
    for turn in reversed(turns):  # the kept part is exactly the newest whole turns ...
        if kept[len(kept) - n - len(turn):len(kept) - n] != turn:
            break
        n += len(turn)
        k += 1
    assert n == len(kept) and k >= 1
    assert len(prompt) + len(turns[-k - 1]) > 30  # ... as many as fit


def test_build_prompt_edge_cases() -> None:
    t1, t2, t3 = [10, 1, 1, 2], [11, 1, 1, 1, 2], [10, 7, 8, 9, 2]
    assert build_prompt([t1, t2], 99, 11, 20) == [99, *t1, *t2, 11]  # fits: BOS kept
    assert build_prompt([t1, t2, t3], 99, 11, 11) == [*t2, *t3, 11]  # oldest turn and BOS dropped
    assert build_prompt([t1, t2, t3], 99, 11, 6) == [*t3, 11]
    assert build_prompt([t1, t2, t3], 99, 11, 5) == [10, 8, 9, 2, 11]  # one turn too long: cut from the left


def test_context_budget_leaves_room_for_the_reply() -> None:
    gen = GenConfig()
    gen.sampling.max_new_tokens = 64
    assert context_budget(256, gen) == 192
    assert context_budget(64, gen) == 32  # never more than half the block for the reply
    gen.max_context_tokens = 100
    assert context_budget(256, gen) == 100
    gen.max_context_tokens = 1000
    assert context_budget(256, gen) == 192


def test_speaker_resolution() -> None:
    gen = GenConfig()
    assert resolve_speakers({"target": "S3", "self": "S2", "speakers": {"S1": 9, "S2": 5, "S3": 2}}, gen) == ("S2", "S3")
    assert resolve_speakers({"target": "room", "self": "S1", "speakers": {"S1": 9, "S2": 5}}, gen) == ("S1", "S2")
    assert resolve_speakers({"target": "room", "self": None, "speakers": {"S1": 3, "S2": 9}}, gen) == ("S1", "S2")
    assert resolve_speakers({}, gen) == ("S2", "S1")
    gen.bot_speaker, gen.user_speaker = "S4", "S7"
    assert resolve_speakers(PERSONA, gen) == ("S7", "S4")
    gen.user_speaker = "S4"
    with pytest.raises(ChatbotError, match="both S4"):
        resolve_speakers(PERSONA, gen)
    gen.user_speaker = "Bob"
    with pytest.raises(ChatbotError, match="user_speaker"):
        resolve_speakers(PERSONA, gen)
