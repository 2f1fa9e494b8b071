"""Model loading: gen.yaml preference order, checkpoints + processed tokenizer, plain and encrypted artifacts,
weights_only, one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from chatbot.crypto import encrypt_bytes
from chatbot.errors import ChatbotError
from chatbot.infer.responder import load_responder
from chatbot.infer.loading import find_model_source, load_bundle

from tests.support.gen import PERSONA, artifact_dict, random_model, write_artifact, write_checkpoint
from tests.support.workspace import make_workspace

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL_KEY = "invented-model-key-for-tests-0123456789"


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_checkpoint_loads_with_processed_tokenizer_and_persona(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    model = random_model(seed=1)
    path = write_checkpoint(cfg, model, step=42)
    b = load_bundle(cfg)
    assert (b.source, b.kind, b.step) == (path, "checkpoint", 42)
    assert same_weights(b.model, model)
    assert not b.model.training
    assert b.persona == PERSONA
    assert b.tokenizer.token_to_id("<|eot|>") is not None


def test_preference_order_and_best_latest(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    latest, best, art = random_model(seed=1), random_model(seed=2), random_model(seed=3)
    write_checkpoint(cfg, latest, name="latest.pt", step=5)
    assert load_bundle(cfg).step == 5  # best missing → latest
    write_checkpoint(cfg, best, name="best.pt", step=4)
    assert same_weights(load_bundle(cfg).model, best)  # best is preferred to latest
    write_artifact(cfg, art, step=3)
    b = load_bundle(cfg)
    assert (b.kind, b.step) == ("artifact", 3) and same_weights(b.model, art)
    cfg.gen.model_preference = ["latest", "artifacts/model_latest.pt"]
    assert load_bundle(cfg).step == 5
    assert find_model_source(cfg) == (cfg.run_dir / "latest.pt", "checkpoint")


def test_nothing_found_says_which_command_makes_a_model(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    with pytest.raises(ChatbotError) as exc:
        load_bundle(cfg)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "`python -m chatbot.ops train`" in msg and "`python -m chatbot.ops publish`" in msg
    assert "artifacts/model_latest.enc" in msg and "best.pt" in msg
    assert find_model_source(cfg) is None


def test_checkpoint_with_a_different_tokenizer_is_refused(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    write_checkpoint(cfg, random_model(), tokenizer_json='{"another": "tokenizer"}')
    with pytest.raises(ChatbotError, match="not the tokenizer .* was trained with"):
        load_bundle(cfg)


def test_checkpoint_without_processed_tokenizer_is_refused(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    write_checkpoint(cfg, random_model())
    (cfg.processed_dir / "tokenizer.json").unlink()
    with pytest.raises(ChatbotError, match="tokenizer.json is missing.*preprocess"):
        load_bundle(cfg)


def test_corrupt_file_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    path = write_checkpoint(cfg, random_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChatbotError, match="best.pt is not a readable checkpoint") as exc:
        load_bundle(cfg)
    assert "\n" not in str(exc.value)


class Payload:  # a pickled object that would run code on a plain torch.load
    def __reduce__(self):
        return (print, ("side effect",))


def test_loading_is_weights_only(tmp_path: Path, capsys) -> None:
    cfg = make_workspace(tmp_path, password=True)
    model = random_model()
    write_checkpoint(cfg, model)
    ckpt = torch.load(cfg.run_dir / "best.pt", weights_only=True)
    ckpt["extra"] = Payload()
    torch.save(ckpt, cfg.run_dir / "best.pt")
    with pytest.raises(ChatbotError, match="best.pt is not a readable checkpoint"):
        load_bundle(cfg)
    assert "side effect" not in capsys.readouterr().out


def test_wrapped_state_dict_keys_and_bf16_artifact(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    model = random_model(seed=6)
    write_artifact(cfg, model, dtype=torch.bfloat16)
    b = load_bundle(cfg)
    assert next(b.model.parameters()).dtype == torch.float32
    x = torch.tensor([[1, 4, 30, 31, 2]])
    with torch.no_grad():
        assert torch.allclose(b.model(x), model(x), atol=0.05)
    # a compiled model's state dict ("_orig_mod." prefix) loads too
    write_checkpoint(cfg, model)
    ckpt = torch.load(cfg.run_dir / "best.pt", weights_only=True)
    ckpt["model"] = {f"_orig_mod.{k}": v for k, v in ckpt["model"].items()}
    torch.save(ckpt, cfg.run_dir / "best.pt")
    cfg.gen.model_preference = ["best"]
    assert same_weights(load_bundle(cfg).model, model)


def test_mismatched_weights_are_refused(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, password=True)
    art = artifact_dict(random_model())
    art["model_args"] = {**art["model_args"], "n_embd": 64}
    cfg.path("artifacts").mkdir()
    torch.save(art, cfg.path("artifacts/model_latest.pt"))
    with pytest.raises(ChatbotError, match="do not match its model settings"):
        load_bundle(cfg)


def test_encrypted_artifact_is_decrypted_in_memory(tmp_path: Path, monkeypatch) -> None:
    cfg = make_workspace(tmp_path, password=True)
    model = random_model(seed=8)
    buf = io.BytesIO()
    torch.save(artifact_dict(model, step=12), buf)
    enc = cfg.path("artifacts/model_latest.enc")
    enc.parent.mkdir(parents=True)
    enc.write_bytes(encrypt_bytes(buf.getvalue(), MODEL_KEY, log2n=10))
    write_checkpoint(cfg, random_model(seed=9))  # lower in the preference order
    monkeypatch.delenv("CHATBOT_MODEL_KEY", raising=False)
    with pytest.raises(ChatbotError, match="CHATBOT_MODEL_KEY is not set"):
        load_bundle(cfg)
    monkeypatch.setenv("CHATBOT_MODEL_KEY", "x" * 20 + "-but-the-wrong-one")
    with pytest.raises(ChatbotError):
        load_bundle(cfg)
    monkeypatch.setenv("CHATBOT_MODEL_KEY", MODEL_KEY)
    b = load_bundle(cfg)
    assert (b.kind, b.step) == ("encrypted", 12) and same_weights(b.model, model)
    assert sorted(p.name for p in enc.parent.iterdir()) == ["model_latest.enc"]  # nothing decrypted on disk


def test_load_responder_answers_from_a_checkpoint(tmp_path: Path) -> None:
    cfg = make_workspace(tmp_path, gen={"sampling": {"max_new_tokens": 8}}, password=True)
    write_checkpoint(cfg, random_model())
    r = load_responder(cfg)
    out = r.reply([("user", "안녕 뭐해?")])
    assert 1 <= out.n_tokens <= 8 and out.latency_s > 0
    assert (r.user_speaker, r.bot_speaker) == ("S2", "S1")


def test_device_setting(tmp_path: Path) -> None:
    from chatbot.device import pick_device

    assert pick_device("cpu", key="gen.yaml device").type == "cpu"
    assert pick_device("auto", key="gen.yaml device").type in ("cpu", "cuda", "mps")
    with pytest.raises(ChatbotError, match="unknown device"):
        pick_device("gpu0", key="gen.yaml device")
    if not torch.cuda.is_available():
        with pytest.raises(ChatbotError, match="no CUDA GPU"):
            pick_device("cuda", key="gen.yaml device")
