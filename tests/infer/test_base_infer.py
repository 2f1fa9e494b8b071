"""Pretrained-base runs on the inference side: publish (merged / encrypted / adapter-only / hf) and reply."""

from __future__ import annotations

import json

import pytest
import torch

from chatbot.errors import ChatbotError
from chatbot.formats import artifact as artifact_format
from tests.support.base_infer import KEY, cli, logits_of, make_base_run
from tests.support.publish import fast_crypto

pytest.importorskip("peft")


def _ids(n: int, vocab: int, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_publish_encrypted_then_reply_end_to_end(project, monkeypatch, capsys, family):
    fast_crypto(monkeypatch)
    run = make_base_run(project, family)
    assert cli(monkeypatch, project, "publish", "--encrypt") == 0
    art = project / "artifacts" / "model_latest.enc"
    assert art.read_bytes()[:8] == b"CHATENC\x00"
    info = json.loads((project / "artifacts" / "model_info.json").read_text(encoding="utf-8"))
    assert info["format"] == artifact_format.HF_FORMAT and info["weights"] == "merged" and info["encrypted"]
    assert info["base"]["id"] == str(run["base"]) and info["step"] == 17

    from chatbot.infer.loading import load_bundle

    bundle = load_bundle(run["cfg"])
    assert bundle.kind == "encrypted" and bundle.weights == "merged" and bundle.step == 17
    ids = _ids(12, len(run["tokenizer"]))
    torch.testing.assert_close(logits_of(bundle.model, ids), logits_of(run["model"], ids), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert cli(monkeypatch, project, "reply", "안녕 뭐해?", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "model_latest.enc" and out["n_tokens"] >= 1


def test_encrypted_publish_writes_only_ciphertext(project, monkeypatch):
    from tests.support.publish import record_writes

    fast_crypto(monkeypatch)
    make_base_run(project, "qwen2")
    with record_writes() as written:
        assert cli(monkeypatch, project, "publish", "--encrypt") == 0
    art = project / "artifacts"
    assert written and all(p.startswith(str(art)) for p in written), written
    assert all(".model_latest.enc." in p or p.endswith(("model_latest.enc", "model_info.json")) or "model_info" in p
               for p in written), written
    # the old (from-scratch) reader refuses it with one line instead of a traceback
    from chatbot.formats.artifact import load as load_artifact

    with pytest.raises(ChatbotError, match="fine-tuned from a pretrained base"):
        load_artifact(art / "model_latest.enc", KEY)


def test_adapter_only_round_trip_and_missing_or_other_base(project, monkeypatch, capsys):
    run = make_base_run(project, "qwen3")
    assert cli(monkeypatch, project, "publish", "--adapter-only") == 0
    art = project / "artifacts" / "model_latest.pt"
    info = json.loads((project / "artifacts" / "model_info.json").read_text(encoding="utf-8"))
    assert info["weights"] == "adapter" and info["base"]["weight_hash"] == run_hash(run)
    merged_bytes = sum(p.stat().st_size for p in run["base"].glob("*.safetensors"))
    assert art.stat().st_size < merged_bytes / 2  # adapter + tokenizer only

    from chatbot.infer.loading import load_bundle

    bundle = load_bundle(run["cfg"])
    assert bundle.weights == "adapter"
    ids = _ids(10, len(run["tokenizer"]))
    torch.testing.assert_close(logits_of(bundle.model, ids), logits_of(run["model"], ids), rtol=1e-5, atol=1e-5)

    # another base at the same place: refused with one line, before any reply
    from safetensors.torch import load_file, save_file

    weights = run["base"] / "model.safetensors"
    state = load_file(str(weights))
    first = sorted(state)[0]
    state[first] = state[first] + 1.0
    save_file(state, str(weights), metadata={"format": "pt"})
    capsys.readouterr()
    assert cli(monkeypatch, project, "reply", "안녕") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "weight hash differs" in err and "\n" not in err

    # no base at all
    import shutil

    shutil.rmtree(run["base"])
    assert cli(monkeypatch, project, "reply", "안녕") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not present" in err and "\n" not in err


def run_hash(run) -> str:
    from chatbot.base import base_weight_hash

    return base_weight_hash(run["base"])


def test_hf_format_is_sharded_and_loads_with_identical_logits(project, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import chatbot.artifact.hf_export as hf_export

    monkeypatch.setattr(hf_export, "SHARD_BYTES", 40_000)  # several shards from a tiny model
    run = make_base_run(project, "qwen2", tie=True)
    assert cli(monkeypatch, project, "publish", "--format", "hf") == 0
    folder = project / "artifacts" / "hf"
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok.backend_tokenizer.to_str() == run["tokenizer"].backend_tokenizer.to_str()
    ids = _ids(16, len(tok))
    assert torch.equal(logits_of(model, ids), logits_of(run["model"].merge_and_unload(), ids))


def test_checkpoint_prompt_ids_equal_the_layout_and_reply_streams(project, monkeypatch):
    from chatbot.base.layout import BaseLayout
    from chatbot.infer.responder import load_responder

    run = make_base_run(project, "llama", gen={"model_preference": ["best"], "sampling": {"max_new_tokens": 12}})
    responder = load_responder(run["cfg"])
    assert responder.bundle.weights == "checkpoint"
    history = [("user", "안녕 뭐해? 010-1234-5678 <|im_end|>"), ("bot", "집이야 ㅋㅋㅋ"), ("user", "저녁 먹자")]
    layout = BaseLayout(run["tokenizer"])
    masked = [("S2", responder.masker.mask(history[0][1])), ("S1", history[1][1]), ("S2", history[2][1])]
    assert responder.prompt_ids(history) == layout.prompt(masked, "S1")
    assert layout.bos_id is not None and responder.prompt_ids(history)[0] == layout.bos_id
    # the typed look-alike stays text, the phone number is masked as preprocess writes it
    assert "<phone>" in layout.decode(responder.prompt_ids(history))
    chunks: list[str] = []
    r = responder.reply(history, on_text=chunks.append)
    assert r.n_tokens >= 1 and r.text.startswith("".join(chunks))
    # the checkpoint's model = base + adapter
    ids = _ids(8, len(run["tokenizer"]))
    torch.testing.assert_close(logits_of(responder.model, ids), logits_of(run["model"], ids), rtol=1e-5, atol=1e-5)


def test_base_prompt_budget_drops_oldest_turns_then_cuts_text():
    from chatbot.infer.generate_base import build_base_prompt

    turns = [([1, 2], [10, 11, 12, 99]), ([3, 4], [20, 21, 99]), ([1, 2], [30, 31, 32, 33, 99])]
    start, bot = [7], [3, 4]
    full = build_base_prompt(turns, start, bot, 100)
    assert full == [7, 1, 2, 10, 11, 12, 99, 3, 4, 20, 21, 99, 1, 2, 30, 31, 32, 33, 99, 3, 4]
    # too long: the oldest turn and the session start go first, whole turns only
    assert build_base_prompt(turns, start, bot, 15) == [3, 4, 20, 21, 99, 1, 2, 30, 31, 32, 33, 99, 3, 4]
    # the newest turn alone too long: its prefix and eos stay, its text is cut from the left
    assert build_base_prompt(turns, start, bot, 7) == [1, 2, 32, 33, 99, 3, 4]


def test_full_fine_tune_publishes_plain_and_loads(project, monkeypatch):
    run = make_base_run(project, "qwen2", kind="full", tie=True)
    assert cli(monkeypatch, project, "publish") == 0
    from chatbot.infer.loading import load_bundle

    bundle = load_bundle(run["cfg"])
    assert bundle.kind == "artifact" and bundle.weights == "merged"
    assert bundle.model.lm_head.weight is bundle.model.model.embed_tokens.weight  # tied again after loading
    ids = _ids(9, len(run["tokenizer"]))
    torch.testing.assert_close(logits_of(bundle.model, ids), logits_of(run["model"], ids), rtol=1e-5, atol=1e-5)
    with pytest.raises(ChatbotError, match="needs a LoRA run"):
        from chatbot.artifact.publish import publish

        publish(run["cfg"], encrypt=False, fmt="pt", dry=False, adapter_only=True)


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_token_byte_table_rebuilds_utf8_exactly(family):
    from chatbot.infer.stream import TextStream
    from chatbot.infer.generate_base import hf_token_bytes, special_ids
    from tests.support.base import make_tokenizer

    tok = make_tokenizer(family)
    text = "안녕 뭐해? 오늘 저녁 ㅋㅋㅋ hello 123"
    ids = tok.encode(text, add_special_tokens=False)
    table = hf_token_bytes(tok, special_ids(tok), len(tok) + 5)
    assert len(table) == len(tok) + 5 and table[tok.eos_token_id] == b"" and table[-1] == b""
    assert b"".join(table[i] for i in ids) == text.encode("utf-8")
    chunks: list[str] = []
    stream = TextStream(table, 300, chunks.append)
    for i in ids:
        stream.push(i)
    assert stream.finish() == text and "".join(chunks) == text and all("\ufffd" not in c for c in chunks)


def test_artifact_too_big_for_free_memory_is_one_line(project, monkeypatch):
    psutil = pytest.importorskip("psutil")
    run = make_base_run(project, "qwen2")
    assert cli(monkeypatch, project, "publish") == 0

    class Tiny:
        available = 1000

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    from chatbot.infer.loading import load_bundle

    with pytest.raises(ChatbotError, match="GiB of memory to load"):
        load_bundle(run["cfg"])
