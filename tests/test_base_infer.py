"""Pretrained-base runs on the inference side: publish (merged / encrypted / adapter-only / hf) and reply."""

from __future__ import annotations

import json

import pytest
import torch

from chatbot.errors import ChatbotError
from helpers_base_infer import KEY, cli, logits_of, make_base_run
from helpers_publish import fast_crypto

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
    assert info["format"] == "chatbot-artifact-hf-1" and info["weights"] == "merged" and info["encrypted"]
    assert info["base"]["id"] == str(run["base"]) and info["step"] == 17

    from chatbot.loading import load_bundle

    bundle = load_bundle(run["cfg"])
    assert bundle.kind == "encrypted" and bundle.weights == "merged" and bundle.step == 17
    ids = _ids(12, len(run["tokenizer"]))
    torch.testing.assert_close(logits_of(bundle.model, ids), logits_of(run["model"], ids), rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    assert cli(monkeypatch, project, "reply", "안녕 뭐해?", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "model_latest.enc" and out["n_tokens"] >= 1
