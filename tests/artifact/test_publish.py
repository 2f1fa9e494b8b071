"""publish: plaintext / encrypted artifacts, model_info.json, refusals, Hugging Face export."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from chatbot import crypto, ops
from chatbot.errors import ChatbotError
from chatbot.fsio import sha256_file
from chatbot.artifact.publish import publish
from chatbot.formats import artifact as artifact_format
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.formats.artifact import load as load_artifact
from tests.support.publish import (FAKE_REAL_NAME, KEY, TORCH_ZIP_MAGIC, fast_crypto, logits, make_trained_run,
                                   model_from_artifact, record_writes, tree)


@pytest.fixture
def proj(project):
    return make_trained_run(project)


def _ids(vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, 24), generator=g)


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ plaintext
def test_publish_round_trip_identical_logits_and_info(proj, capsys):
    cfg = proj["cfg"]
    publish(cfg, encrypt=False, fmt="pt", dry=False)
    art_dir = cfg.path(cfg.paths.artifacts)
    path = art_dir / "model_latest.pt"
    art = load_artifact(path, None)
    assert list(art.to_dict()) == list(artifact_format.KEYS) and art.extra == {}  # no optimizer, no rng
    assert art.persona == {"target": "room", "self": "S2", "speakers": {"S1": 12, "S2": 9, "S3": 2}}
    assert art.tokenizer_json == (cfg.processed_dir / "tokenizer.json").read_text(encoding="utf-8")
    assert art.step == 42 and art.val_loss == pytest.approx(3.25)
    model = model_from_artifact(art)
    ids = _ids(proj["args"].vocab_size)
    assert torch.equal(logits(model, ids), logits(proj["model"], ids))
    # tied embeddings stay shared inside the file (no duplicate tensor)
    assert art.model["lm_head.weight"].data_ptr() == art.model["model.embed_tokens.weight"].data_ptr()

    info = json.loads((art_dir / "model_info.json").read_text(encoding="utf-8"))
    assert info["sha256"] == sha256_file(path) and info["bytes"] == path.stat().st_size
    assert info["encrypted"] is False and info["step"] == 42 and info["val_loss"] == pytest.approx(3.25)
    assert info["parameters"] == sum(p.numel() for p in proj["model"].parameters())
    assert info["tokenizer_hash"] == art.tokenizer_hash and info["source"] == "checkpoints/default/best.pt"
    # the private real-name map never reaches the published files
    assert FAKE_REAL_NAME.encode() not in _all_bytes(art_dir)
    assert "model_latest.pt" in capsys.readouterr().out


def test_publish_casts_dtype_and_prefers_best_then_latest(proj):
    cfg = proj["cfg"]
    cfg.paths.publish.dtype = "bfloat16"
    run_dir = cfg.run_dir
    os.replace(run_dir / "best.pt", run_dir / "latest.pt")  # only latest.pt left: the second preference
    publish(cfg, encrypt=False, fmt="pt", dry=False)
    art = load_artifact(cfg.path(cfg.paths.artifacts) / "model_latest.pt", None)
    assert {t.dtype for t in art.model.values()} == {torch.bfloat16}
    ids = _ids(proj["args"].vocab_size)
    got = logits(model_from_artifact(art), ids)
    want = logits(proj["model"], ids)
    assert not torch.equal(got, want) and torch.allclose(got, want, atol=0.05, rtol=0.05)
    info = json.loads((cfg.path(cfg.paths.artifacts) / "model_info.json").read_text(encoding="utf-8"))
    assert info["source"] == "checkpoints/default/latest.pt" and info["dtype"] == "bfloat16"


def test_dry_run_writes_nothing(proj, monkeypatch, capsys):
    cfg = proj["cfg"]
    monkeypatch.setenv("CHATBOT_MODEL_KEY", KEY)
    before = tree(cfg.root)
    for enc, fmt in ((False, "pt"), (True, "pt"), (False, "hf")):
        publish(cfg, encrypt=enc, fmt=fmt, dry=True)
    assert tree(cfg.root) == before
    out = capsys.readouterr().out
    assert "would write" in out and "model_latest.enc" in out and "hf" in out


@pytest.mark.parametrize("case", ["no-checkpoint", "corrupt", "tokenizer-changed", "name-in-persona", "bad-format"])
def test_publish_refusals_are_one_line(proj, case):
    cfg = proj["cfg"]
    ckpt = proj["ckpt_path"]
    if case == "no-checkpoint":
        ckpt.unlink()
        match = "run `python -m chatbot.ops train` first"
    elif case == "corrupt":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
        match = "not a readable checkpoint"
    elif case == "tokenizer-changed":
        tok_path = cfg.processed_dir / "tokenizer.json"
        tok_path.write_text(tok_path.read_text(encoding="utf-8").replace('"version"', '"version" ', 1), encoding="utf-8")
        match = "not the tokenizer"
    elif case == "name-in-persona":
        stats_path = cfg.processed_dir / "stats.json"
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        stats["persona"]["speakers"][FAKE_REAL_NAME] = 3
        stats_path.write_text(json.dumps(stats, ensure_ascii=False), encoding="utf-8")
        match = "pseudonym"
    else:
        obj = torch.load(ckpt, weights_only=True)
        obj["format"] = "something-else"
        torch.save(obj, ckpt)
        match = f"expected '{checkpoint_format.FORMAT}'"
    with pytest.raises(ChatbotError, match=match) as err:
        publish(cfg, encrypt=False, fmt="pt", dry=False)
    assert "\n" not in str(err.value) and FAKE_REAL_NAME not in str(err.value)
    assert not cfg.path(cfg.paths.artifacts).exists() or not any(cfg.path(cfg.paths.artifacts).iterdir())


def test_cli_publish_and_bad_format(proj, capsys):
    cfg = proj["cfg"]
    assert ops.main(["publish", "--config-dir", str(cfg.config_dir)]) == 0
    assert (cfg.path(cfg.paths.artifacts) / "model_latest.pt").is_file()
    assert ops.main(["publish", "--format", "onnx", "--config-dir", str(cfg.config_dir)]) == 2
    assert ops.main(["publish", "--encrypt", "--config-dir", str(cfg.config_dir)]) == 2  # no key configured
    err = capsys.readouterr().err
    assert "not supported" in err and "CHATBOT_MODEL_KEY is not set" in err


# ------------------------------------------------------------------------------------------------ encrypted
def _publish_encrypted(proj, monkeypatch, tmp_path) -> Path:
    """publish --encrypt while recording every file opened for writing; the system temp dir is redirected."""
    cfg = proj["cfg"]
    fast_crypto(monkeypatch, chunk_size=4096)
    monkeypatch.setenv("CHATBOT_MODEL_KEY", KEY)
    sys_tmp = tmp_path / "systemp"
    sys_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(sys_tmp))
    art_dir = cfg.path(cfg.paths.artifacts)
    with record_writes() as written:
        publish(cfg, encrypt=True, fmt="pt", dry=False)
    enc = art_dir / "model_latest.enc"
    # only the encrypted file (through its same-folder temp name) and model_info.json were opened for writing
    names = {Path(p).name for p in written}
    assert names and all(n == "model_info.json" or n.startswith(".model_info.json.") or n == "model_latest.enc"
                         or n.startswith(".model_latest.enc.") for n in names), names
    assert len(written) == len(set(written)) == 4  # temp enc, rename, temp info, rename: each path opened once
    assert not any(Path(p).resolve().is_relative_to(sys_tmp.resolve()) for p in written)
    assert sorted(p.name for p in art_dir.iterdir()) == ["model_info.json", "model_latest.enc"]
    assert list(sys_tmp.iterdir()) == []
    return enc


def test_encrypted_round_trip_never_writes_plaintext(proj, monkeypatch, tmp_path, capsys):
    cfg = proj["cfg"]
    enc = _publish_encrypted(proj, monkeypatch, tmp_path)
    blob = enc.read_bytes()
    assert blob.startswith(crypto.MAGIC) and TORCH_ZIP_MAGIC not in blob and artifact_format.FORMAT.encode() not in blob
    assert len(blob) > 10 * 4096  # many chunks
    info = json.loads((enc.parent / "model_info.json").read_text(encoding="utf-8"))
    assert info["encrypted"] is True and info["sha256"] == sha256_file(enc)

    with record_writes() as written:
        art = load_artifact(enc, KEY)
    assert written == []  # decryption happens in memory only
    ids = _ids(proj["args"].vocab_size)
    assert torch.equal(logits(model_from_artifact(art), ids), logits(proj["model"], ids))
    assert art.persona["speakers"] == {"S1": 12, "S2": 9, "S3": 2}
    with pytest.raises(ChatbotError, match="encrypted; set CHATBOT_MODEL_KEY"):
        load_artifact(enc, None)

    # publishing plaintext afterwards warns that the older encrypted file is loaded first
    capsys.readouterr()
    publish(cfg, encrypt=False, fmt="pt", dry=False)
    assert "older encrypted artifacts/model_latest.enc still exists" in capsys.readouterr().out


def _chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, body = blob[: crypto.HEADER_BYTES], blob[crypto.HEADER_BYTES:]
    size = 4096 + crypto.TAG_BYTES
    return header, [body[i:i + size] for i in range(0, len(body), size)]


def _variants(blob: bytes) -> dict[str, bytes]:
    header, chunks = _chunks(blob)

    def flip(pos: int) -> bytes:
        b = bytearray(blob)
        b[pos] ^= 0x01
        return bytes(b)

    second_tag = crypto.HEADER_BYTES + 2 * (4096 + crypto.TAG_BYTES) - 5
    out = {
        "magic": flip(0), "version": flip(8), "kdf-n": flip(11), "salt": flip(20), "nonce-prefix": flip(32),
        "chunk-size": flip(42), "header-mac": flip(60),
        "body-first": flip(crypto.HEADER_BYTES + 3), "body-middle": flip(len(blob) // 2),
        "tag-second-chunk": flip(second_tag), "tag-last": flip(len(blob) - 1),
        "truncated-mid-chunk": blob[:-100], "truncated-at-chunk-boundary": header + b"".join(chunks[:-1]),
        "header-only": header, "empty": b"", "appended-byte": blob + b"\0",
        "appended-chunk": blob + chunks[1], "swapped-chunks": header + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "dropped-chunk": header + chunks[0] + b"".join(chunks[2:]),
        "duplicated-chunk": header + chunks[0] + chunks[0] + b"".join(chunks[2:]),
    }
    return out


def test_tampered_or_wrong_key_encrypted_artifact_is_refused(proj, monkeypatch, tmp_path):
    enc = _publish_encrypted(proj, monkeypatch, tmp_path)
    blob = enc.read_bytes()
    with pytest.raises(crypto.DecryptError, match="wrong CHATBOT_MODEL_KEY") as err:
        load_artifact(enc, KEY[:-1] + "y")
    assert KEY not in str(err.value)
    bad = tmp_path / "bad.enc"
    for name, variant in _variants(blob).items():
        assert variant != blob, name
        bad.write_bytes(variant)
        with pytest.raises(ChatbotError) as err:
            load_artifact(bad, KEY)
        msg = str(err.value)
        assert "\n" not in msg and KEY not in msg, name
        assert any(w in msg for w in ("tampered", "wrong CHATBOT_MODEL_KEY", "not an encrypted", "unsupported")), (
            name, msg)


def test_encrypt_refuses_weak_or_missing_key_before_writing(proj, monkeypatch):
    cfg = proj["cfg"]
    for value, match in ((None, "not set"), ("short-key", "too short")):
        if value is None:
            monkeypatch.delenv("CHATBOT_MODEL_KEY", raising=False)
        else:
            monkeypatch.setenv("CHATBOT_MODEL_KEY", value)
        with pytest.raises(ChatbotError, match=match) as err:
            publish(cfg, encrypt=True, fmt="pt", dry=False)
        assert value is None or value not in str(err.value)
        assert "secrets.token_urlsafe" in str(err.value)
    assert not cfg.path(cfg.paths.artifacts).exists() or not any(cfg.path(cfg.paths.artifacts).iterdir())


def test_failed_encrypted_publish_leaves_no_file(proj, monkeypatch):
    cfg = proj["cfg"]
    fast_crypto(monkeypatch)
    monkeypatch.setenv("CHATBOT_MODEL_KEY", KEY)
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        f.write(b"x" * 10000)
        raise KeyboardInterrupt  # an interruption halfway through the save

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        publish(cfg, encrypt=True, fmt="pt", dry=False)
    monkeypatch.setattr(torch, "save", real_save)
    art_dir = cfg.path(cfg.paths.artifacts)
    assert not art_dir.exists() or list(art_dir.iterdir()) == []


# ----------------------------------------------------------------------------------------------- HF export
@pytest.mark.parametrize("variant", [dict(tie_embeddings=True, n_head=4, n_kv_head=2),
                                     dict(tie_embeddings=False, n_head=4, n_kv_head=4, bias=True, rope_theta=500.0)])
def test_hf_export_matches_our_logits(project, variant):
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    proj = make_trained_run(project, **variant)
    cfg = proj["cfg"]
    publish(cfg, encrypt=False, fmt="hf", dry=False)
    hf_dir = cfg.path(cfg.paths.artifacts) / "hf"
    names = sorted(p.name for p in hf_dir.iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
                     "tokenizer.json", "tokenizer_config.json"]
    assert [p.name for p in hf_dir.parent.iterdir()] == ["hf"]  # no temp folder left behind

    hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == variant["n_kv_head"]
    assert hf.config.tie_word_embeddings == variant["tie_embeddings"]
    ids = _ids(proj["args"].vocab_size, seed=7)
    with torch.no_grad():
        got = hf(ids).logits
    torch.testing.assert_close(got, logits(proj["model"], ids), atol=1e-4, rtol=0)

    tok = PreTrainedTokenizerFast.from_pretrained(hf_dir)
    ours = proj["tokenizer"]
    text = "오늘 저녁 뭐 먹을까? hello"
    assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text, add_special_tokens=False).ids
    eot = ours.token_to_id("<|eot|>")
    assert tok.eos_token_id == eot and hf.generation_config.eos_token_id == eot
    assert tok.bos_token_id == ours.token_to_id("<|bos|>") and tok.pad_token_id == ours.token_to_id("<|pad|>")
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    prompt = tok.apply_chat_template([{"role": "user", "content": "안녕"}], add_generation_prompt=True, tokenize=False)
    # gen.yaml speakers are auto: the bot is the most active speaker (S1), the user the persona's "self" (S2)
    assert prompt == "<|bos|><|spk:S2|>안녕<|eot|><|spk:S1|>"


def test_hf_export_without_safetensors_is_one_line(proj, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ChatbotError, match=r"pip install -e \.\[hf\]"):
        publish(proj["cfg"], encrypt=False, fmt="hf", dry=False)
    with pytest.raises(ChatbotError, match="pt format only"):
        publish(proj["cfg"], encrypt=True, fmt="hf", dry=False)
