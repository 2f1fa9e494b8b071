"""A throw-away project whose run fine-tuned a tiny random base (tests.support.base.make_base) with LoRA: the checkpoint
is what a base run writes (trainable tensors only, ``model_args`` None, the ``base`` block), made here with peft
directly. Invented text only; no network."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from chatbot.config import load_config
from chatbot.formats import checkpoint as checkpoint_format
from tests.support.base import make_base
from tests.support.workspace import PASSWORD, make_workspace

KEY = "bq4-Tz7w-Nc2x-Rj8v-Ym5k-Gd3p"  # invented (not guessable by pattern: guessable keys are refused)
PERSONA = {"target": "room", "self": "S2", "speakers": {"S1": 40, "S2": 30}}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_base_run(root: Path, family: str = "qwen2", *, kind: str = "lora", tie: bool = False, seed: int = 1,
                  gen: dict | None = None) -> dict:
    """configs + .env (password, model key) + base folder + data/processed/stats.json + checkpoints/default/best.pt.

    Returns {"cfg", "base", "model" (the fine-tuned model, eval mode: the reference), "tokenizer"}."""
    from peft import get_peft_model_state_dict

    from chatbot.base import apply_adapter, base_weight_hash, load_base, tokenizer_hash

    make_workspace(root, gen=gen, password=True)
    with open(root / ".env", "a", encoding="utf-8") as fh:
        fh.write(f"CHATBOT_MODEL_KEY={KEY}\n")
    cfg = load_config(root / "configs")
    base = make_base(root / "base_model", family, tie=tie)
    model, tok = load_base(base)
    adapter = SimpleNamespace(kind=kind, quantize="none", r=4, alpha=8.0, dropout=0.0, target_modules=list(TARGETS))
    torch.manual_seed(seed)
    model = apply_adapter(model, adapter)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init, which would make merging a no-op
        for name, p in model.named_parameters():
            if "lora_B" in name or (kind == "full" and p.dim() >= 1):
                p.add_(torch.randn_like(p) * 0.05)
    state = get_peft_model_state_dict(model) if kind == "lora" else dict(model.state_dict())
    th = tokenizer_hash(tok)
    ckpt = {
        "format": checkpoint_format.FORMAT, "model": {k: v.detach().clone() for k, v in state.items()}, "model_args": None,
        "optimizer": {}, "step": 17, "best_val_loss": 2.5, "val_loss": 2.5, "train_loss": 2.6,
        "tokenizer_hash": th, "vocab_size": len(tok), "rng": {}, "sampler": {}, "train_config": {},
        "world_size": 1, "tokens_seen": 100,
        "base": {"id": str(base), "revision": "", "weight_hash": base_weight_hash(base), "tokenizer_hash": th,
                 "adapter": {"kind": kind, "r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": list(TARGETS),
                             "quantize": "none"}},
    }
    run = root / "checkpoints" / "default"
    run.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, run / "best.pt")
    processed = root / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    (processed / "stats.json").write_text(json.dumps({"tokenizer_hash": th, "persona": PERSONA}), encoding="utf-8")
    return {"cfg": cfg, "base": base, "model": model.eval(), "tokenizer": tok}


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def cli(monkeypatch, root: Path, *args: str) -> int:
    """``python -m chatbot.ops`` in this process (the same entry point), past the password gate."""
    from chatbot import ops

    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    return ops.main([*args, "--config-dir", str(root / "configs")])
