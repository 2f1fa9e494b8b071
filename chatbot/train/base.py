"""Trainer side of fine-tuning a pretrained base (``model.base``): the data contract, the model the loop trains,
what a checkpoint holds, resume/init checks, and sample replies. loop.py and state.py call these only when
model.base is set.

The loop itself is the same as from scratch: :class:`LossModel` gives a transformers causal LM the forward
``(x, select=idx) -> logits`` of :class:`chatbot.model.Transformer`, so only the weighted positions go through the
vocabulary projection (``response_only`` data skips the logits of every context token — for a 150k-token
vocabulary that is most of a step's memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, TrainConfig, to_dict
from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint

# adapter fields a checkpoint cannot change (the trainable tensors' shapes / meaning); alpha and dropout may change
FIXED_ADAPTER_FIELDS = ("kind", "r", "target_modules", "quantize")


@dataclass
class BaseArgs:
    """What the loop needs to know about the model's shape (the from-scratch ModelArgs' role)."""

    block_size: int
    n_embd: int
    vocab_size: int

    def to_dict(self) -> None:
        return None  # a base run's checkpoint has model_args None (the base is named by ``base``)


@dataclass
class BaseRun:
    folder: Path
    model: Any  # the transformers model as loaded (no adapter yet)
    tokenizer: Any
    layout: Any  # chatbot.base.layout.BaseLayout
    info: dict  # the checkpoint's ``base`` record
    args: BaseArgs
    pad_id: int
    extra: dict = field(default_factory=dict)

    @property
    def tok_hash(self) -> str:
        return self.info["tokenizer_hash"]


def adapter_record(train_cfg: TrainConfig) -> dict:
    adapter = to_dict(train_cfg.adapter)
    if adapter["kind"] == "full":
        return {"kind": "full", "r": None, "alpha": None, "dropout": None, "target_modules": [], "quantize": "none"}
    return adapter


def open_base(cfg: Config, stats: dict, device: torch.device, dtype: torch.dtype) -> BaseRun:
    """Resolve and load the base, check it against the processed data. One line for every problem; no disk
    changes (a hub id may be downloaded into the Hugging Face cache)."""
    from ..base import base_weight_hash, load_base, require_extra, resolve_base, tokenizer_hash
    from ..base.layout import BaseLayout

    train_cfg = cfg.train
    require_extra()
    made_for = stats.get("base")
    want = {"id": train_cfg.model.base, "revision": train_cfg.model.base_revision}
    if not isinstance(made_for, dict) or {k: made_for.get(k) for k in want} != want:
        what = f"base {made_for.get('id')}" if isinstance(made_for, dict) else "a model trained from scratch"
        raise ChatbotError(f"the processed data was made for {what}, not model.base {train_cfg.model.base}; run "
                           f"`python -m chatbot.ops preprocess` (it rebuilds for the base in train.yaml)")
    folder = resolve_base(train_cfg.model.base, train_cfg.model.base_revision, root=cfg.root)
    # LoRA on a GPU: the frozen base in the compute dtype (half the memory); the adapter stays float32 (peft).
    # A full fine-tune keeps float32 master weights (autocast computes in bf16/fp16).
    load_dtype = dtype if (train_cfg.adapter.kind == "lora" and device.type == "cuda") else torch.float32
    model, tok = load_base(folder, device=device, dtype=load_dtype, quantize=train_cfg.adapter.quantize)
    t_hash = tokenizer_hash(tok)
    if t_hash != stats["tokenizer_hash"]:
        raise ChatbotError("the base's tokenizer differs from the one the processed data was made with (the base "
                           "changed?); run `python -m chatbot.ops preprocess --force`")
    layout = BaseLayout(tok)
    text_cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    vocab = int(text_cfg.vocab_size)
    if int(stats["vocab_size"]) > vocab:
        raise ChatbotError(f"the processed data has {stats['vocab_size']} token ids but the base's embedding has "
                           f"{vocab}; run `python -m chatbot.ops preprocess --force`")
    max_pos = getattr(text_cfg, "max_position_embeddings", None)
    if max_pos and train_cfg.model.block_size > int(max_pos):
        raise ChatbotError(f"train.yaml model.block_size {train_cfg.model.block_size} is longer than the base's "
                           f"context ({max_pos} tokens); lower model.block_size")
    info = {"id": train_cfg.model.base, "revision": train_cfg.model.base_revision,
            "weight_hash": base_weight_hash(folder), "tokenizer_hash": t_hash, "adapter": adapter_record(train_cfg)}
    pad = tok.pad_token_id if tok.pad_token_id is not None else layout.eos_id
    args = BaseArgs(block_size=train_cfg.model.block_size, n_embd=int(text_cfg.hidden_size), vocab_size=vocab)
    return BaseRun(folder, model, tok, layout, info, args, int(pad))


class LossModel(nn.Module):
    """A transformers causal LM (with or without a peft adapter) behind the loop's ``forward(x, select=)``."""

    def __init__(self, model: Any, args: BaseArgs):
        super().__init__()
        self.net = model
        self.args = args
        causal = model.get_base_model() if hasattr(model, "get_base_model") else model
        # not registered as submodules: they are parts of self.net (no duplicate parameters or state-dict keys)
        self.__dict__["_decoder"] = causal.get_decoder()
        self.__dict__["_head"] = causal.get_output_embeddings()
        self.__dict__["_causal"] = causal

    def forward(self, x: torch.Tensor, *, select: torch.Tensor | None = None) -> torch.Tensor:
        h = self._decoder(input_ids=x, use_cache=False).last_hidden_state
        if select is not None:
            h = h[select] if select.dtype == torch.bool else h.reshape(-1, h.size(-1)).index_select(0, select)
        return self._head(h)

    @property
    def causal_lm(self) -> Any:
        """The transformers model (LoRA layers active, unmerged): what the Responder decodes with (eval probe)."""
        return self._causal

    def num_params(self, exclude_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.net.parameters())
        if exclude_embeddings:
            n -= self._causal.get_input_embeddings().weight.numel()
        return n

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def flops_per_token(self) -> float:
        """6N over all weights: a frozen weight still costs its forward and its input-gradient matmuls (4N) and a
        trainable one also its weight gradient; LoRA's own matmuls are negligible. Attention as in model.py."""
        config = self._causal.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        attention = 12 * text.num_hidden_layers * text.hidden_size * self.args.block_size
        return 6 * self.num_params(exclude_embeddings=False) + attention


def build_model(run: BaseRun, train_cfg: TrainConfig) -> LossModel:
    """The adapter on the loaded base (initialised from torch's global RNG: seed first), wrapped for the loop."""
    from ..base import apply_adapter

    model = apply_adapter(run.model, train_cfg.adapter,
                          gradient_checkpointing=train_cfg.runtime.gradient_checkpointing)
    model.train()
    return LossModel(model, run.args)


def trainable_state(lm: LossModel, kind: str) -> dict:
    """The checkpoint's ``model``: exactly ``get_peft_model_state_dict`` for LoRA, the whole state dict for full."""
    if kind == "lora":
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(lm.net)
    return lm.net.state_dict()


def load_trainable(lm: LossModel, state: dict, kind: str, name: str) -> None:
    try:
        if kind == "lora":
            from peft import set_peft_model_state_dict

            got = set_peft_model_state_dict(lm.net, state)
            missing = [k for k in getattr(got, "missing_keys", []) if "lora_" in k]
            unexpected = list(getattr(got, "unexpected_keys", []))
            if missing or unexpected:
                raise KeyError((missing + unexpected)[0])
        else:
            lm.net.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError):
        raise ChatbotError(f"{name}: its adapter weights do not fit this base/adapter (damaged or from another "
                           f"version); resume from a snapshot or set a new run_name") from None


def check_compatible(ck: Checkpoint, info: dict, path: Path) -> list[str]:
    """Refuse a checkpoint of another base (weight hash), tokenizer or adapter shape; notes on harmless changes."""
    name = path.name
    old = ck.base
    if not isinstance(old, dict):
        raise ChatbotError(f"{name} is a from-scratch checkpoint but train.yaml sets model.base {info['id']}; set a "
                           f"new run_name for the fine-tune (or model.base: \"\" to continue that run)")
    if old.get("weight_hash") != info["weight_hash"]:
        raise ChatbotError(f"{name} was trained on another base ({old.get('id')}, weights "
                           f"{str(old.get('weight_hash'))[:12]}…) than model.base {info['id']} (weights "
                           f"{info['weight_hash'][:12]}…); restore that base or set a new run_name")
    if old.get("tokenizer_hash") != info["tokenizer_hash"]:
        raise ChatbotError(f"{name} was trained with another tokenizer than the base's; set a new run_name")
    oa, na = old.get("adapter") or {}, info["adapter"]
    for key in FIXED_ADAPTER_FIELDS:
        if oa.get(key) != na.get(key):
            raise ChatbotError(f"train.yaml adapter.{key} is {na.get(key)} but {name} was trained with "
                               f"{oa.get(key)}; restore it, or set a new run_name to start a new adapter")
    notes = []
    if old.get("id") != info["id"] or old.get("revision") != info["revision"]:
        notes.append(f"model.base: {old.get('id')}@{old.get('revision') or '-'} → {info['id']}@"
                     f"{info['revision'] or '-'} (same weights)")
    return notes
