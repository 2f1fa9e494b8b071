"""The maths of one optimizer step: the learning-rate schedule, AdamW and its resumed state, and the loss.

The schedule depends on ``lr_decay_steps`` only, never on ``max_steps``: raising ``max_steps`` on a finished run
just continues it. The loss is a *sum* over weighted positions; the loop divides it by the global number of
weighted tokens of the optimizer step, so accumulation, an OOM split or another world size give the same gradient.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..config import OptimizationConfig

# optimizer implementation flags that are the machine's choice, not part of a resumed state
_LOCAL_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def lr_at(step: int, optimization: OptimizationConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then decay to min_lr by lr_decay_steps."""
    top, floor, warmup = optimization.learning_rate, optimization.min_lr, optimization.warmup_steps
    if step < warmup:
        return top * (step + 1) / (warmup + 1)
    if optimization.lr_schedule == "constant":
        return top
    if step >= optimization.lr_decay_steps:
        return floor
    ratio = (step - warmup) / max(1, optimization.lr_decay_steps - warmup)
    if optimization.lr_schedule == "linear":
        return top - ratio * (top - floor)
    return floor + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (top - floor)


def make_optimizer(model: torch.nn.Module, optimization: OptimizationConfig,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices (≥ 2-D: linears, embeddings) only; the fused kernel where available."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": optimization.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kwargs = dict(lr=optimization.learning_rate, betas=(optimization.beta1, optimization.beta2), eps=1e-8)
    if device.type in ("cuda", "cpu", "mps"):
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def with_local_flags(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved optimizer state whose implementation flags (fused, foreach, …) are this machine's choice, so a
    checkpoint from a CUDA box resumes on a CPU one and vice versa."""
    groups = [{**group, **{k: now[k] for k in _LOCAL_FLAGS if k in now}}
              for group, now in zip(saved["param_groups"], optimizer.param_groups)]
    return {**saved, "param_groups": groups}


def apply_hparams(optimizer: torch.optim.Optimizer, optimization: OptimizationConfig) -> None:
    """Current YAML values win over those stored in a resumed optimizer state (announced by the caller)."""
    for group in optimizer.param_groups:
        group["betas"] = (optimization.beta1, optimization.beta2)
        if group["weight_decay"] != 0.0:
            group["weight_decay"] = optimization.weight_decay


def window_loss(model, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, select: bool = True,
                autocast=None, device: torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Cross-entropy *summed* over the positions of weight 1, and the number of logits computed.

    With ``select`` only the weighted positions go through the vocabulary projection (``response_only`` data
    skips the context tokens' logits entirely); without it all logits are computed and multiplied by ``w`` (fixed
    shapes, for torch.compile). Either way a weight-0 position contributes exactly nothing to the gradient.
    The caller divides by the global number of weighted tokens of the optimizer step. Inputs may live on the CPU
    and are moved to ``device`` here, after the selection indices are computed (no GPU sync for them).
    """
    idx = None
    if select:
        flat = w.reshape(-1) > 0
        if not bool(flat.all()):
            idx = flat.nonzero().squeeze(1)
    if device is not None:
        x, y, w = _to(x, device), _to(y, device), _to(w, device)
        idx = _to(idx, device) if idx is not None else None
    with autocast if autocast is not None else contextlib.nullcontext():
        if idx is not None:
            logits = model(x, select=idx)
            return F.cross_entropy(logits.float(), y.reshape(-1).index_select(0, idx), reduction="sum"), len(idx)
        logits = model(x)
    ce = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    return (ce * w.reshape(-1).to(ce.dtype)).sum(), int(ce.shape[0])


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
