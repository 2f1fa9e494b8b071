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

from .config import ModelShape


@dataclass
class _Vocabulary:
    vocab_size: int


@dataclass
class ModelArgs(ModelShape, _Vocabulary):  # fields: vocab_size, then the architecture keys of config.ModelShape
    """A built model's arguments: train.yaml's architecture keys with their sizes resolved (none left at 0 but
    n_kv_head / ffn_hidden, which get their defaults here) plus the vocabulary size. Stored in checkpoints and
    artifacts as ``model_args`` (:meth:`to_dict`, this field order)."""

    def __post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be at least 1, got {getattr(self, name)}")
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
        weight = self.weight
        if x.dtype == weight.dtype == torch.float32:
            # torch's fused kernel: the same result as below to the bit in fp32, one op instead of seven (decoding
            # a token is bound by the number of ops)
            return F.rms_norm(x, weight.shape, weight, self.eps)
        # computed in fp32 like HF, cast back to the input dtype (under autocast the weight keeps the result fp32)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)


def rope_cache(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim), HF layout (frequencies repeated for the two halves), with the sign of
    the first half of sin flipped: :func:`apply_rope` then needs one ``roll`` instead of HF's ``rotate_half``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    sin = emb.sin()
    half = head_dim // 2
    return emb.cos(), torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """HF's ``x·cos + rotate_half(x)·sin`` (x: (B, T, heads, D); cos/sin: (T, 1, D)): ``roll`` swaps the halves
    and the signed sin supplies rotate_half's minus, equal to the bit."""
    out = x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin
    return out if out.dtype == x.dtype else out.to(x.dtype)  # fp32 tables promote a half-precision x


class KVCache:
    """Keys and values of the tokens fed so far, for decoding one sequence token by token (gpt-fast style).

    Preallocated once — (n_layer, batch, K, max_seq, D) each — and reused: a new sequence simply writes from
    position 0 again. Attention reads positions ``[0, end)`` only, so a single new token needs no mask. Also holds
    the output projection transposed and contiguous: for one row ``x @ W.T`` that way is about 3x faster than
    ``F.linear`` on CPU (copied when the cache is made: make a new cache after the weights change).
    A plain object owned by its user (the Responder), not by the model: one model can serve several caches.
    """

    def __init__(self, model: "Transformer", max_seq: int | None = None, batch: int = 1):
        a = model.args
        self.max_seq = min(max_seq or a.block_size, a.block_size)
        head = model.lm_head.weight
        shape = (a.n_layer, batch, a.n_kv_head, self.max_seq, a.head_dim)
        self.k = torch.zeros(shape, dtype=head.dtype, device=head.device)
        self.v = torch.zeros_like(self.k)
        self.lm_head_t = head.detach().t().contiguous()

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, K, T, D) at positions start … start+T-1; return the keys and values of 0 … start+T-1."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = args.n_head, args.n_kv_head, args.head_dim
        self.layer = layer  # its slot in a KVCache
        self.q_proj = nn.Linear(args.n_embd, args.n_head * args.head_dim, bias=args.bias)
        self.k_proj = nn.Linear(args.n_embd, args.n_kv_head * args.head_dim, bias=args.bias)
        self.v_proj = nn.Linear(args.n_embd, args.n_kv_head * args.head_dim, bias=args.bias)
        self.o_proj = nn.Linear(args.n_head * args.head_dim, args.n_embd, bias=args.bias)
        self.dropout = args.dropout

    def forward(self, x, cos, sin, cache: KVCache | None = None, start: int = 0, mask=None):
        """x (B·T, C): B sequences of T tokens at positions start … start+T-1 (T = len(cos); cos/sin (T, 1, D)).
        Without a cache the T positions attend causally among themselves (training, full forward); with one they
        are stored and attend over everything cached up to them (``mask`` (T, start+T) when a chunk follows cached
        tokens; none for one token or a first chunk)."""
        T = cos.shape[0]
        B = x.shape[0] // T
        # rotary embedding in the (B, T, heads, D) layout the projections produce (contiguous), then heads first
        q = apply_rope(_linear(x, self.q_proj).view(B, T, self.n_head, self.head_dim), cos, sin).transpose(1, 2)
        k = apply_rope(_linear(x, self.k_proj).view(B, T, self.n_kv_head, self.head_dim), cos, sin).transpose(1, 2)
        v = _linear(x, self.v_proj).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, D)
        if cache is not None:
            k, v = cache.store(self.layer, k, v, start)  # (B, K, S, D), S = start + T
        # GQA inside SDPA (no repeat_interleave copies of k/v; faster forward and backward)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
            dropout_p=self.dropout if self.training else 0.0, enable_gqa=self.n_kv_head != self.n_head,
        )
        return _linear(y.transpose(1, 2).reshape(B * T, -1), self.o_proj)


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` without the module call: the same op, but decoding a token runs a dozen of these per block and
    is bound by per-call overhead (plain Linear layers, no hooks on them)."""
    return F.linear(x, layer.weight, layer.bias)


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.up_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.down_proj = nn.Linear(args.ffn_hidden, args.n_embd, bias=args.bias)

    def forward(self, x):
        return _linear(F.silu(_linear(x, self.gate_proj)) * _linear(x, self.up_proj), self.down_proj)


class Block(nn.Module):
    """The block maths, the one place for it: training, the full forward and cached decoding all run it."""

    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.self_attn = Attention(args, layer)
        self.post_attention_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.mlp = MLP(args)
        self.dropout = args.dropout  # on the residual branches (F.dropout: nn.Dropout's op without a module call)

    def forward(self, x, cos, sin, cache: KVCache | None = None, start: int = 0, mask=None):
        """x (B·T, C), rows of B sequences of T tokens (2-D: one matrix product per projection, also when
        decoding a single token) → the same shape; the arguments after it as for :meth:`Attention.forward`."""
        # .forward directly: decoding one token is bound by per-call overhead, and the module-call machinery
        # (hooks, of which these modules have none) costs about as much as the maths of a small model
        h = self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, cache, start, mask)
        x = x + self._dropout(h)
        h = self.mlp.forward(self.post_attention_layernorm.forward(x))
        return x + self._dropout(h)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        """nn.Dropout's op; skipped where it is the identity anyway (evaluation, p = 0)."""
        return F.dropout(h, self.dropout, True) if self.training and self.dropout > 0 else h


class Decoder(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.n_embd)
        self.layers = nn.ModuleList(Block(args, i) for i in range(args.n_layer))
        self.norm = RMSNorm(args.n_embd, args.norm_eps)


class Transformer(nn.Module):
    """``forward(idx)`` runs full sequences (training, loss); ``decode(idx, start, cache)`` feeds tokens through a
    :class:`KVCache` (generation). Both run the same :class:`Block` maths."""

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

    # ---------------------------------------------------------------------------------------------- forward
    def forward(self, idx: torch.Tensor, *, select: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) → logits (B, T, V), no cache.

        ``select`` (training only), a (B, T) bool mask or (N,) indices into the flattened B·T positions: return
        logits (N, V) for those positions only, so the vocabulary projection and softmax are skipped where the
        loss weight is 0 (``response_only`` training).
        """
        B, T = idx.shape
        x = self._hidden(idx)
        if select is not None:
            x = x.view(B, T, -1)[select] if select.dtype == torch.bool else x.index_select(0, select)
            return self.lm_head(self.model.norm(x))
        return self.lm_head(self.model.norm(x)).view(B, T, -1)

    def new_cache(self, max_seq: int | None = None) -> KVCache:
        """A cache for decoding one sequence of up to ``max_seq`` (≤ block_size) tokens with :meth:`decode`."""
        return KVCache(self, max_seq)

    def decode(self, idx: torch.Tensor, start: int, cache: KVCache) -> torch.Tensor:
        """idx (T,) at positions start … start+T-1, after the ``start`` tokens already in ``cache`` → logits (V,)
        of the last one; the cache now holds all start+T."""
        x = self._hidden(idx[None], cache, start)
        return (self.model.norm(x[-1:]) @ cache.lm_head_t)[0]

    def _hidden(self, idx: torch.Tensor, cache: KVCache | None = None, start: int = 0) -> torch.Tensor:
        """The embeddings of idx (B, T) through every block: (B·T, C) (row b·T + t = sequence b, position t),
        before the final norm."""
        T = idx.shape[1]
        end = start + T
        limit = self.args.block_size if cache is None else cache.max_seq
        if end > limit:
            what = f"sequence of {T} tokens" if cache is None else f"position {end - 1}"
            raise ValueError(f"{what} exceeds {'block_size' if cache is None else 'the cache of'} {limit}")
        cos, sin = self.rope_cos[start:end, None], self.rope_sin[start:end, None]  # (T, 1, D): over the heads
        mask = None
        if cache is not None and T > 1 and start > 0:  # a chunk after cached tokens: causal, aligned to the end
            mask = torch.ones(T, end, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        x = F.embedding(idx.reshape(-1), self.model.embed_tokens.weight)
        recompute = self.gradient_checkpointing and self.training and cache is None and torch.is_grad_enabled()
        for layer in self.model.layers:
            if recompute:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cache, start, mask)
        return x
