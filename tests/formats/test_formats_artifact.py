"""chatbot/formats/artifact.py: plaintext and encrypted artifacts round-trip, files an older version published still
read, and every refusal is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chatbot import crypto
from chatbot.errors import ChatbotError
from chatbot.formats import artifact as artifact_format
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.formats.artifact import Artifact, Container

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_v1"
EXPECTED = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))
KEY = "formats-test-key-Xq7v-Lm3p-Zr9t"


@pytest.fixture
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(crypto, "DEFAULT_LOG2N", 10)  # the key derivation is what makes encryption slow


def _artifact(step: int = 3) -> Artifact:
    g = torch.Generator().manual_seed(step)
    embed = torch.randn(8, 4, generator=g)
    return Artifact(model={"model.embed_tokens.weight": embed, "lm_head.weight": embed},
                    model_args={"vocab_size": 8}, tokenizer_json='{"model": {}}', special_tokens=["<|bos|>"],
                    persona={"target": "room", "self": "S2", "speakers": {"S1": 3}}, tokenizer_hash="ab" * 32,
                    step=step, val_loss=1.25, created="2026-01-01T00:00:00+00:00")


def _same(a: Artifact, b: Artifact) -> None:
    assert a.model.keys() == b.model.keys() and all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert {**a.to_dict(), "model": None} == {**b.to_dict(), "model": None}


@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip_keeps_keys_order_and_shared_tensors(tmp_path: Path, cheap_scrypt, encrypted: bool) -> None:
    path = tmp_path / ("a.enc" if encrypted else "a.pt")
    art = _artifact()
    artifact_format.write(path, art, KEY if encrypted else None)
    back = artifact_format.read(path, KEY)
    assert isinstance(back, Artifact) and list(back.to_dict()) == list(artifact_format.KEYS)
    _same(back, art)
    assert back.model["lm_head.weight"].data_ptr() == back.model["model.embed_tokens.weight"].data_ptr()
    assert (path.read_bytes().startswith(crypto.MAGIC)) == encrypted
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_files_published_by_the_previous_version_still_read() -> None:
    ws = LEGACY / "workspace"
    plain = artifact_format.load(ws / "artifacts" / artifact_format.PT_NAME)
    assert sorted(plain.to_dict()) == sorted(EXPECTED["artifact"]["keys"]) and plain.extra == {}
    assert plain.model_args == EXPECTED["artifact"]["meta"]["model_args"]
    encrypted = artifact_format.load(ws / "artifacts" / artifact_format.ENC_NAME, EXPECTED["model_key"])
    assert encrypted.model.keys() == plain.model.keys() and encrypted.step == plain.step
    container = artifact_format.read(ws / "artifacts_base" / artifact_format.PT_NAME)
    assert isinstance(container, Container) and not container.encrypted
    with pytest.raises(ChatbotError, match="fine-tuned from a pretrained base") as err:
        artifact_format.load(ws / "artifacts_base" / artifact_format.PT_NAME)
    assert "\n" not in str(err.value)


def test_rewriting_a_legacy_artifact_keeps_its_content(tmp_path: Path) -> None:
    legacy = artifact_format.load(LEGACY / "workspace" / "artifacts" / artifact_format.PT_NAME)
    artifact_format.write(tmp_path / "again.pt", legacy)
    raw = torch.load(tmp_path / "again.pt", weights_only=True)  # what an older reader sees
    assert list(raw) == list(artifact_format.KEYS) and raw["format"] == artifact_format.FORMAT
    _same(artifact_format.load(tmp_path / "again.pt"), legacy)


def test_a_checkpoint_at_an_artifact_path_is_read_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": checkpoint_format.FORMAT, "model": {}, "model_args": {}, "step": 5}, path)
    with pytest.raises(ChatbotError, match=f"expected '{artifact_format.FORMAT}'"):
        artifact_format.read(path)
    got = artifact_format.read(path, checkpoint_ok=True)
    assert isinstance(got, checkpoint_format.Checkpoint) and got.step == 5


class _Payload:  # would run code on a torch.load without weights_only
    def __reduce__(self):
        return (print, ("side effect",))


def test_every_refusal_is_one_line(tmp_path: Path, cheap_scrypt, capsys) -> None:
    good = _artifact().to_dict()
    cases = {
        "missing.pt": (None, None, "not found"),
        "garbage.pt": (b"not a torch file", None, "not a readable model artifact"),
        "code.pt": ({**good, "x": _Payload()}, None, "not a readable model artifact"),
        "other.pt": ({**good, "format": "chatbot-artifact-0"}, None, "format 'chatbot-artifact-0'"),
        "partial.pt": ({k: v for k, v in good.items() if k != "persona"}, None, "missing persona"),
        "plain.enc": (good, None, "not an encrypted chatbot model"),
        "nokey.enc": ("encrypt", None, "is encrypted; set CHATBOT_MODEL_KEY"),
        "wrongkey.enc": ("encrypt", KEY[:-1] + "y", "wrong CHATBOT_MODEL_KEY"),
    }
    for name, (content, key, match) in cases.items():
        path = tmp_path / name
        if content == "encrypt":
            artifact_format.write(path, _artifact(), KEY)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            torch.save(content, path)
        with pytest.raises(ChatbotError, match=match) as err:
            artifact_format.read(path, key, remedy="do the fix")
        assert "\n" not in str(err.value) and KEY not in str(err.value), name
    assert "side effect" not in capsys.readouterr().out


def test_persona_and_number_contracts() -> None:
    assert artifact_format.check_persona({"target": "S1", "self": None, "speakers": {"S1": 2.0}}) == {
        "target": "S1", "self": None, "speakers": {"S1": 2}}
    for bad in ({"speakers": {"Alice": 1}}, {"target": "Alice"}, {"self": "someone"}, {"speakers": {"S1": True}}, []):
        assert artifact_format.check_persona(bad) is None, bad
    assert artifact_format.finite_number(torch.tensor(2.5)) == 2.5
    assert [artifact_format.finite_number(x) for x in (float("nan"), True, "1", None)] == [None] * 4
