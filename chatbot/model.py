"""A LLaMA-style decoder-only transformer in one short file (nanoGPT / gpt-fast style).

RMSNorm, rotary position embeddings (HF "rotate_half" convention), SwiGLU MLP, grouped-query attention, no biases
by default, optional tied embeddings, ``F.scaled_dot_product_attention``, and an explicit KV cache for generation.

Parameter names equal Hugging Face ``LlamaForCausalLM``'s state-dict keys one to one
(``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.q_proj.weight``, ``lm_head.weight`` …), so export is a
rename-free copy. Shapes in comments: B batch, T time, C n_embd, H heads, K kv heads, D head dim, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.utils.checkpoint
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_kv_head: int = 0  # 0 = n_head (no GQA)
    n_embd: int = 384
    ffn_hidden: int = 0  # 0 = LLaMA rule
    multiple_of: int = 64
    dropout: float = 0.0
    bias: bool = False
    tie_embeddings: bool = True
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.n_kv_head == 0:
            self.n_kv_head = self.n_head
        if self.n_embd % self.n_head:
            raise ValueError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"model.n_head ({self.n_head}) must be divisible by model.n_kv_head ({self.n_kv_head})")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("model.n_embd / model.n_head (the head size) must be even for rotary embeddings")
        if self.ffn_hidden == 0:
            hidden = int(2 * (4 * self.n_embd) / 3)
            self.ffn_hidden = self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_dict(cls, d: dict) -> "ModelArgs":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computed in fp32 like HF, cast back to the input dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cache(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim), HF layout (frequencies repeated for the two halves)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D)
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache(nn.Module):
    """Pre-allocated keys/values for generation: (B, K, max_seq, D); written at ``input_pos``."""

    def __init__(self, batch: int, n_kv_head: int, max_seq: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv_head, max_seq, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[:, :, input_pos] = k
        self.v[:, :, input_pos] = v
        return self.k, self.v


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = args.n_head, args.n_kv_head, args.head_dim
        self.q_proj = nn.Linear(args.n_embd, args.n_head * args.head_dim, bias=args.bias)
        self.k_proj = nn.Linear(args.n_embd, args.n_kv_head * args.head_dim, bias=args.bias)
        self.v_proj = nn.Linear(args.n_embd, args.n_kv_head * args.head_dim, bias=args.bias)
        self.o_proj = nn.Linear(args.n_head * args.head_dim, args.n_embd, bias=args.bias)
        self.dropout = args.dropout
        self.kv_cache: KVCache | None = None

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.kv_cache is not None and input_pos is not None:
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, K, S, D) with S = cache length
        # GQA inside SDPA (no repeat_interleave copies of k/v; faster forward and backward)
        gqa = self.n_kv_head != self.n_head
        if mask is None:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0, enable_gqa=gqa
            )
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.up_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.down_proj = nn.Linear(args.ffn_hidden, args.n_embd, bias=args.bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.input_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.self_attn = Attention(args)
        self.post_attention_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.mlp = MLP(args)
        self.drop = nn.Dropout(args.dropout)

    def forward(self, x, cos, sin, input_pos=None, mask=None):
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, input_pos, mask))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.n_embd)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.n_embd, args.norm_eps)


class Transformer(nn.Module):
    """``forward(idx)`` trains on full sequences; ``setup_cache`` + ``forward(idx, input_pos)`` decodes with a cache."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model = Decoder(args)
        self.lm_head = nn.Linear(args.n_embd, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        cos, sin = rope_cache(args.block_size, args.head_dim, args.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # scaled init of the residual projections (GPT-2 / nanoGPT)
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * args.n_layer))
        self.max_cache_len = 0
        self.gradient_checkpointing = False  # recompute each block in the backward pass (runtime.gradient_checkpointing)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, exclude_embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token (6N + attention), as in the PaLM / nanoGPT MFU estimate."""
        a = self.args
        return 6 * self.num_params(exclude_embeddings=False) + 12 * a.n_layer * a.n_embd * a.block_size

    # ------------------------------------------------------------------------------------------- generation
    def setup_cache(self, batch: int, max_seq: int, dtype=None, device=None) -> None:
        """Allocate a KV cache per layer for sequences up to ``max_seq`` (≤ block_size) tokens."""
        max_seq = min(max_seq, self.args.block_size)
        p = next(self.parameters())
        dtype, device = dtype or p.dtype, device or p.device
        for layer in self.model.layers:
            layer.self_attn.kv_cache = KVCache(batch, self.args.n_kv_head, max_seq, self.args.head_dim, dtype, device)
        self.max_cache_len = max_seq
        self.register_buffer(
            "causal_mask", torch.tril(torch.ones(max_seq, max_seq, dtype=torch.bool, device=device)), persistent=False
        )

    def clear_cache(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache = None
        self.max_cache_len = 0
        if "causal_mask" in self._buffers:  # leave no extra buffer behind (DDP / state-dict consumers)
            del self._buffers["causal_mask"]

    # ---------------------------------------------------------------------------------------------- forward
    def forward(
        self, idx: torch.Tensor, input_pos: torch.Tensor | None = None, *, select: torch.Tensor | None = None
    ) -> torch.Tensor:
        """idx (B, T) → logits (B, T, V). With ``input_pos`` (T,) the KV cache is used and updated.

        ``select`` (training only), a (B, T) bool mask or (N,) indices into the flattened B·T positions: return
        logits (N, V) for those positions only, so the vocabulary projection and softmax are skipped where the
        loss weight is 0 (``response_only`` training).
        """
        B, T = idx.shape
        if input_pos is None:
            if T > self.args.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds block_size {self.args.block_size}")
            cos, sin, mask = self.rope_cos[:T], self.rope_sin[:T], None
        else:
            cos, sin = self.rope_cos[input_pos], self.rope_sin[input_pos]
            mask = self.causal_mask[None, None, input_pos]  # (1, 1, T, S)
        x = self.model.embed_tokens(idx)
        recompute = self.gradient_checkpointing and self.training and input_pos is None and torch.is_grad_enabled()
        for layer in self.model.layers:
            if recompute:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, None, None, use_reentrant=False)
            else:
                x = layer(x, cos, sin, input_pos, mask)
        if select is not None:
            x = x[select] if select.dtype == torch.bool else x.reshape(-1, x.size(-1)).index_select(0, select)
        return self.lm_head(self.model.norm(x))


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean cross-entropy over positions whose weight is 1 (all positions when ``weights`` is None).

    logits (B, T, V), targets (B, T), weights (B, T) of 0/1. Returns 0 (with a graph) when no position counts.
    """
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    if weights is None:
        return loss.mean()
    w = weights.reshape(-1).to(loss.dtype)
    return (loss * w).sum() / w.sum().clamp(min=1.0)
