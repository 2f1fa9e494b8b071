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
from typing import NamedTuple

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
        return rms_norm(x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == weight.dtype == torch.float32:
        # torch's fused kernel: the same result as below to the bit in fp32, one op instead of seven (decoding
        # a token is bound by the number of ops)
        return F.rms_norm(x, weight.shape, weight, eps)
    # computed in fp32 like HF, cast back to the input dtype (under autocast the weight keeps the result fp32)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
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


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """HF's ``x·cos + rotate_half(x)·sin`` (x: (B, T, heads, D); cos/sin: (T, 1, D)): ``roll`` swaps the halves
    and the signed sin supplies rotate_half's minus, equal to the bit. ``fused`` (decoding): the add and the
    second product in one ``addcmul`` (one op fewer; the same products and sum)."""
    if fused:
        out = torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), signed_sin)
    else:
        out = x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin
    return out if out.dtype == x.dtype else out.to(x.dtype)  # fp32 tables promote a half-precision x


Proj = tuple[torch.Tensor, "torch.Tensor | None"]  # a Linear's (weight, bias): ``F.linear(x, *proj)``


class AttentionWeights(NamedTuple):
    q: Proj
    k: Proj
    v: Proj
    o: Proj
    heads: tuple[int, int, int]  # H, K, D
    layer: int  # the block's slot in a KVCache


class BlockWeights(NamedTuple):
    """A block's tensors as plain values, for the block maths functions below. Decoding a token is bound by
    per-op Python overhead: nn.Module attribute lookups and calls cost about as much as a small model's maths, so
    a :class:`KVCache` gathers these once; training gathers them per forward (negligible there)."""

    norm1: torch.Tensor
    attn: AttentionWeights
    norm2: torch.Tensor
    gate: Proj
    up: Proj
    down: Proj
    eps: float


class KVCache:
    """Keys and values of the tokens fed so far, for decoding one sequence token by token (gpt-fast style).

    Preallocated once — (n_layer, batch, K, max_seq, D) each — and reused: a new sequence simply writes from
    position 0 again. Attention reads positions ``[0, end)`` only, so a single new token needs no mask. Also holds
    the output projection transposed and contiguous (for one row ``x @ W.T`` that way is about 3x faster than
    ``F.linear`` on CPU) and every block's :class:`BlockWeights` (copied / gathered when the cache is made: make a
    new cache after the weights change other than in place).
    A plain object owned by its user (the Responder), not by the model: one model can serve several caches.
    """

    def __init__(self, model: "Transformer", max_seq: int | None = None, batch: int = 1):
        a = model.args
        self.max_seq = min(max_seq or a.block_size, a.block_size)
        head = model.lm_head.weight
        shape = (a.n_layer, batch, a.n_kv_head, self.max_seq, a.head_dim)
        self.k = torch.zeros(shape, dtype=head.dtype, device=head.device)
        self.v = torch.zeros_like(self.k)
        self._layers = list(zip(self.k.unbind(0), self.v.unbind(0)))  # views: no per-step indexing of the layer
        self.lm_head_t = head.detach().t().contiguous()
        self.blocks = [block.weights() for block in model.model.layers]

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, K, T, D) at positions start … start+T-1; return the keys and values of 0 … start+T-1."""
        end = start + k.shape[2]
        cached_k, cached_v = self._layers[layer]
        cached_k[:, :, start:end] = k
        cached_v[:, :, start:end] = v
        return cached_k[:, :, :end], cached_v[:, :, :end]


# ------------------------------------------------------------------------------------------- the block maths
# Plain functions of a block's weights, the one place for the maths: training and the full forward run them
# through the modules below, cached decoding straight from the KVCache's gathered weights. ``fused`` (decoding,
# no autocast) merges an add into the op before it (rope's into addcmul, each residual add into addmm): the same
# values up to rounding, about a fifth fewer ops per token; training and the full forward never fuse.

def attend(x: torch.Tensor, w: AttentionWeights, cos, sin, cache: KVCache | None = None, start: int = 0,
           mask=None, dropout: float = 0.0, fused: bool = False) -> torch.Tensor:
    """x (B·T, C): B sequences of T tokens at positions start … start+T-1 (T = len(cos); cos/sin (T, 1, D)) →
    the heads' outputs (B·T, H·D) before the output projection. Without a cache the T positions attend causally
    among themselves (training, full forward); with one they are stored and attend over everything cached up to
    them (``mask`` (T, start+T) when a chunk follows cached tokens; none for one token or a first chunk)."""
    H, K, D = w.heads
    T = cos.shape[0]
    B = x.shape[0] // T
    # rotary embedding in the (B, T, heads, D) layout the projections produce (contiguous), then heads first
    q = apply_rope(F.linear(x, *w.q).view(B, T, H, D), cos, sin, fused).transpose(1, 2)
    k = apply_rope(F.linear(x, *w.k).view(B, T, K, D), cos, sin, fused).transpose(1, 2)
    v = F.linear(x, *w.v).view(B, T, K, D).transpose(1, 2)  # (B, K, T, D)
    if cache is not None:
        k, v = cache.store(w.layer, k, v, start)  # (B, K, S, D), S = start + T
    # GQA inside SDPA (no repeat_interleave copies of k/v; faster forward and backward)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                       dropout_p=dropout, enable_gqa=K != H)
    return y.transpose(1, 2).reshape(B * T, -1)


def swiglu(x: torch.Tensor, gate: Proj, up: Proj) -> torch.Tensor:
    """The MLP before its down projection."""
    return F.silu(F.linear(x, *gate)) * F.linear(x, *up)


def add_projected(x: torch.Tensor, h: torch.Tensor, proj: Proj, dropout: float = 0.0, fused: bool = False):
    """The residual update ``x + dropout(proj(h))`` (dropout: the training probability, 0 in evaluation)."""
    weight, bias = proj
    if fused and bias is None:
        return torch.addmm(x, h, weight.t())
    h = F.linear(h, weight, bias)
    return x + (F.dropout(h, dropout, True) if dropout > 0 else h)


def block(x: torch.Tensor, w: BlockWeights, cos, sin, cache: KVCache | None = None, start: int = 0, mask=None,
          dropout: float = 0.0, fused: bool = False) -> torch.Tensor:
    """One block: x (B·T, C), rows of B sequences of T tokens (2-D: one matrix product per projection, also when
    decoding a single token) → the same shape; the other arguments as for :func:`attend`."""
    h = attend(rms_norm(x, w.norm1, w.eps), w.attn, cos, sin, cache, start, mask, dropout, fused)
    x = add_projected(x, h, w.attn.o, dropout, fused)
    h = rms_norm(x, w.norm2, w.eps)
    return add_projected(x, swiglu(h, w.gate, w.up), w.down, dropout, fused)


def _proj(layer: nn.Linear) -> Proj:
    return layer.weight, layer.bias


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

    def weights(self) -> AttentionWeights:
        return AttentionWeights(_proj(self.q_proj), _proj(self.k_proj), _proj(self.v_proj), _proj(self.o_proj),
                                (self.n_head, self.n_kv_head, self.head_dim), self.layer)

    def forward(self, x, cos, sin):
        """:func:`attend` (no cache: causal over the T positions) and the output projection."""
        y = attend(x, self.weights(), cos, sin, dropout=self.dropout if self.training else 0.0)
        return F.linear(y, self.o_proj.weight, self.o_proj.bias)


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.up_proj = nn.Linear(args.n_embd, args.ffn_hidden, bias=args.bias)
        self.down_proj = nn.Linear(args.ffn_hidden, args.n_embd, bias=args.bias)

    def forward(self, x):
        return F.linear(swiglu(x, _proj(self.gate_proj), _proj(self.up_proj)), *_proj(self.down_proj))


class Block(nn.Module):
    """The parameters of one block (HF's names); the maths is :func:`block`."""

    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.self_attn = Attention(args, layer)
        self.post_attention_layernorm = RMSNorm(args.n_embd, args.norm_eps)
        self.mlp = MLP(args)
        self.dropout = args.dropout  # attention and residual branches, in training

    def weights(self) -> BlockWeights:
        mlp = self.mlp
        return BlockWeights(self.input_layernorm.weight, self.self_attn.weights(),
                            self.post_attention_layernorm.weight, _proj(mlp.gate_proj), _proj(mlp.up_proj),
                            _proj(mlp.down_proj), self.input_layernorm.eps)

    def forward(self, x, cos, sin):
        """:func:`block` with this block's weights (dropout in training); cached decoding calls :func:`block`
        directly with the weights its KVCache gathered."""
        return block(x, self.weights(), cos, sin, dropout=self.dropout if self.training else 0.0)


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
        norm = self.model.norm
        return (rms_norm(x[-1:], norm.weight, norm.eps) @ cache.lm_head_t)[0]

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
        if cache is not None:  # the cache's gathered weights, no module calls; autocast would round a fused add
            fused = not torch.is_autocast_enabled(x.device.type)
            dropout = self.args.dropout if self.training else 0.0
            for weights in cache.blocks:
                x = block(x, weights, cos, sin, cache, start, mask, dropout, fused)
            return x
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.model.layers:
            if recompute:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        return x
