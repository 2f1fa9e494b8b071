"""The trainer on a pretrained base (tiny random Qwen2/Llama from tests.support.base): LoRA and full fine-tunes with the
same loop and guarantees — adapter-only checkpoints, exact resume after STOP and kill -9, refusals of another base,
the two-stage recipe (init_from), gradient checkpointing."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from chatbot.errors import ChatbotError
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.train.loop import EXIT_DONE, EXIT_STOPPED, train
from tests.support.base import cached_base, make_base_project
from tests.support.train import fork_train, load_ckpt, reload

BASE_KEYS = {"id", "revision", "weight_hash", "tokenizer_hash", "adapter"}


def stop_at(cfg, k):
    def hook(step):
        if step == k:
            (cfg.run_dir / cfg.train.stop_file_name).touch()
    return hook


def assert_same(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        for name, t in s.items():
            assert torch.equal(t, b["optimizer"]["state"][i][name])
    assert a["sampler"] == b["sampler"] and a["step"] == b["step"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 8-step LoRA run (the reference for the resume tests)."""
    cfg = make_base_project(tmp_path_factory.mktemp("straight"), {"logging": {"save_interval": 1}})
    assert train(cfg) == EXIT_DONE
    return cfg


def test_lora_run_writes_adapter_only_checkpoints_metrics_and_samples(straight, capsys):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from chatbot.base import apply_adapter, load_base

    ck = load_ckpt(straight.run_dir / "latest.pt")
    assert ck["format"] == checkpoint_format.FORMAT and ck["model_args"] is None and ck["step"] == 8
    assert set(ck["base"]) == BASE_KEYS and ck["base"]["id"] == straight.train.model.base
    assert ck["base"]["adapter"] == {"kind": "lora", "r": 4, "alpha": 8.0, "dropout": 0.1,
                                     "target_modules": straight.train.adapter.target_modules, "quantize": "none"}
    model, _ = load_base(cached_base())
    peft_model = apply_adapter(model, straight.train.adapter)
    assert set(ck["model"]) == set(get_peft_model_state_dict(peft_model))
    assert all("lora_" in k for k in ck["model"])
    assert any(t.abs().sum() > 0 for k, t in ck["model"].items() if "lora_B" in k)  # the adapter learned
    # the base on disk is untouched and the optimizer holds only the adapter's tensors
    assert len(ck["optimizer"]["state"]) == len(ck["model"])
    on_disk = load_file(str(cached_base() / "model.safetensors"))
    assert all(torch.equal(on_disk[k], v) for k, v in model.state_dict().items() if k in on_disk)
    assert (straight.run_dir / "loss.svg").is_file() and (straight.run_dir / "metrics.jsonl").is_file()
    assert (straight.run_dir / "best.pt").is_file()


def test_resume_after_stop_is_bit_identical(straight, tmp_path, capsys):
    cfg = make_base_project(tmp_path, {"logging": {"save_interval": 1}})
    assert train(cfg, on_step=stop_at(cfg, 3)) == EXIT_STOPPED
    assert load_ckpt(cfg.run_dir / "latest.pt")["step"] == 3
    assert train(cfg) == EXIT_DONE
    out = capsys.readouterr().out
    assert "resuming latest.pt at step 3" in out and "sample: 안녕 뭐해? →" in out and "trainable (lora)" in out
    assert_same(load_ckpt(straight.run_dir / "latest.pt"), load_ckpt(cfg.run_dir / "latest.pt"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks the trainer and kills it (POSIX only)")
def test_resume_after_kill_9_is_bit_identical(straight, tmp_path, capsys):
    cfg = make_base_project(tmp_path, {"optimization": {"max_steps": 100000}, "logging": {"save_interval": 1}})
    latest = cfg.run_dir / "latest.pt"
    proc = fork_train(tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if latest.exists() and load_ckpt(latest)["step"] >= 2:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.output()
    finally:
        proc.kill()
    step = load_ckpt(latest)["step"]
    assert 2 <= step < 8, step
    cfg = reload(cfg, {"optimization": {"max_steps": 8}})
    assert train(cfg) == EXIT_DONE
    assert f"resuming latest.pt at step {step}" in capsys.readouterr().out
    assert_same(load_ckpt(straight.run_dir / "latest.pt"), load_ckpt(latest))
    assert not any(n.endswith(".tmp") for n in os.listdir(cfg.run_dir))


def test_resume_against_another_base_or_adapter_is_refused(straight, tmp_path):
    from tests.support.base import make_base

    cfg = make_base_project(tmp_path / "p", {"optimization": {"max_steps": 2}})
    assert train(cfg) == EXIT_DONE
    before = (cfg.run_dir / "latest.pt").read_bytes()
    # same tokenizer, other weights, same path
    other = make_base(tmp_path / "other", "qwen2", seed=5)
    cfg2 = make_base_project(tmp_path / "p", {"optimization": {"max_steps": 4}}, base_dir=other)
    with pytest.raises(ChatbotError, match="was trained on another base") as err:
        train(cfg2)
    assert "\n" not in str(err.value)
    cfg3 = make_base_project(tmp_path / "p", {"optimization": {"max_steps": 4}, "adapter": {"r": 8}})
    with pytest.raises(ChatbotError, match=r"adapter.r is 8 but latest.pt was trained with 4"):
        train(cfg3)
    assert (cfg.run_dir / "latest.pt").read_bytes() == before


def test_processed_data_of_another_kind_is_refused(tmp_path):
    cfg = make_base_project(tmp_path)
    scratch = reload(cfg, {"model": {"base": ""}})
    with pytest.raises(ChatbotError, match="processed data was made for model.base"):
        train(scratch)
    other = reload(cfg, {"model": {"base": str(cached_base("llama"))}})
    with pytest.raises(ChatbotError, match="processed data was made for base"):
        train(other)
    too_long = reload(cfg, {"model": {"base": cfg.train.model.base, "block_size": 4096}})
    with pytest.raises(ChatbotError, match="block_size 4096 is longer than the base's context"):
        train(too_long)
    assert not cfg.run_dir.exists()


def test_two_stage_recipe_from_yaml_and_a_full_fine_tune(tmp_path, capsys):
    stage1 = make_base_project(tmp_path, {"run_name": "stage1", "objective": {"loss_mode": "all"},
                                          "optimization": {"max_steps": 2}, "logging": {"eval_interval": 2}})
    assert train(stage1) == EXIT_DONE
    s1 = load_ckpt(stage1.run_dir / "best.pt")
    stage2 = reload(stage1, {"run_name": "stage2", "init_from": "checkpoints/stage1/best.pt",
                             "objective": {"loss_mode": "response_only"}, "optimization": {"max_steps": 1}})
    assert train(stage2) == EXIT_DONE
    out = capsys.readouterr().out
    assert f"starting from the weights of {stage2.root / 'checkpoints/stage1/best.pt'}" in out
    s2 = load_ckpt(stage2.run_dir / "latest.pt")
    assert s2["step"] == 1 and s2["base"]["weight_hash"] == s1["base"]["weight_hash"]
    # one small step away from stage 1's adapter, not from a fresh one (fresh lora_B is all zeros)
    for k, v in s1["model"].items():
        assert (s2["model"][k] - v).abs().max() < 0.05, k
    assert any(v.abs().sum() > 0 for k, v in s2["model"].items() if "lora_B" in k)

    full = make_base_project(tmp_path / "full", {"adapter": {"kind": "full"}, "optimization": {"max_steps": 2},
                                                 "runtime": {"gradient_checkpointing": True}})
    assert train(full) == EXIT_DONE
    ck = load_ckpt(full.run_dir / "latest.pt")
    assert "model.embed_tokens.weight" in ck["model"] and not any("lora_" in k for k in ck["model"])
    assert ck["base"]["adapter"]["kind"] == "full"


@pytest.mark.parametrize("base", [True, False])
def test_gradient_checkpointing_gives_the_same_training(tmp_path, base):
    from tests.support.train import make_train_project

    over = {"optimization": {"max_steps": 1}, "model": {"dropout": 0.0}, "logging": {"eval_interval": 100}}
    results = []
    for gc in (False, True):
        o = {**over, "runtime": {"gradient_checkpointing": gc}}
        cfg = (make_base_project(tmp_path / str(gc), o) if base else make_train_project(tmp_path / str(gc), o))
        assert train(cfg) == EXIT_DONE
        results.append(load_ckpt(cfg.run_dir / "latest.pt")["model"])
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-6)
