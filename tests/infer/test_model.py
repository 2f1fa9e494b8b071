"""The LLaMA-style model: HF key names, GQA, KV-cache decoding, logit selection, masked loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chatbot.model import ModelArgs, Transformer
from chatbot.train.loop import window_loss


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    args = ModelArgs(**{"vocab_size": 97, "block_size": 16, "n_layer": 2, "n_head": 4, "n_kv_head": 2,
                        "n_embd": 32, "multiple_of": 16, **kw})
    return Transformer(args)


def test_parameter_names_follow_hf_llama_and_tie_embeddings():
    m = tiny()
    names = set(m.state_dict())
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
            "model.layers.1.self_attn.k_proj.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.0.post_attention_layernorm.weight"} <= names
    assert m.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape == (2 * 8, 32)  # K heads × D
    assert m.lm_head.weight is m.model.embed_tokens.weight
    assert tiny(tie_embeddings=False).lm_head.weight is not tiny(tie_embeddings=False).model.embed_tokens.weight
    assert ModelArgs.from_dict({**m.args.to_dict(), "unknown": 1}) == m.args


def test_gqa_in_sdpa_equals_repeated_kv_reference():
    m = tiny().eval()
    attn = m.model.layers[0].self_attn
    x = torch.randn(2, 16, 32)
    cos, sin = m.rope_cos[:16, None], m.rope_sin[:16, None]
    got = attn(x.reshape(32, 32), cos, sin).view(2, 16, 32)

    q = attn.q_proj(x).view(2, 16, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(2, 16, 2, 8).transpose(1, 2)
    v = attn.v_proj(x).view(2, 16, 2, 8).transpose(1, 2)
    q, k = hf_rope(q, 16), hf_rope(k, 16)
    y = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    want = attn.o_proj(y.transpose(1, 2).reshape(2, 16, 32))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def hf_rope(x: torch.Tensor, T: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding as HF LLaMA writes it (rotate_half), x (B, H, T, D): the reference for ours."""
    D = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    emb = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq).repeat(1, 2)
    x1, x2 = x.chunk(2, dim=-1)
    return x * emb.cos() + torch.cat((-x2, x1), dim=-1) * emb.sin()


def test_kv_cache_decoding_matches_full_forward():
    """Prefill, a chunk after cached tokens (masked), then single tokens: each step's last logits = the full
    forward's, and the cache is the caller's object (nothing is left on the model)."""
    m = tiny().eval()
    idx = torch.randint(0, 97, (12,))
    buffers = dict(m.named_buffers())
    with torch.no_grad():
        full = m(idx[None])[0]
        cache = m.new_cache()
        got = [m.decode(idx[:5], 0, cache), m.decode(idx[5:8], 5, cache)]
        got += [m.decode(idx[i:i + 1], i, cache) for i in range(8, 12)]
    want = [full[4], full[7], *full[8:12]]
    torch.testing.assert_close(torch.stack(got), torch.stack(want), rtol=1e-4, atol=1e-5)
    assert dict(m.named_buffers()).keys() == buffers.keys()
    with pytest.raises(ValueError, match="cache"):
        m.decode(idx[:1], 16, cache)


def test_select_returns_logits_of_selected_positions_only():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 16))
    sel = torch.rand(2, 16) > 0.5
    with torch.no_grad():
        torch.testing.assert_close(m(idx, select=sel), m(idx)[sel], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("select", [True, False])
def test_mask0_targets_change_no_gradient(select):
    """Loss weight 0 positions: whatever their target token, gradients are identical (bit for bit)."""
    m = tiny()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 97, (3, 16), generator=g)
    y = torch.randint(0, 97, (3, 16), generator=g)
    w = (torch.rand(3, 16, generator=g) > 0.6).float()
    y2 = torch.where(w > 0, y, (y + 1 + torch.randint(0, 90, y.shape, generator=g)) % 97)
    assert (y2 != y).any()
    grads = []
    for targets in (y, y2):
        m.zero_grad()
        s, _ = window_loss(m, x, targets, w, select=select)
        s.backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
    # ... while changing a weighted target does change them
    y3 = y.clone()
    pos = w.nonzero()[0]
    y3[pos[0], pos[1]] = (y3[pos[0], pos[1]] + 1) % 97
    m.zero_grad()
    window_loss(m, x, y3, w, select=select)[0].backward()
    assert any(not torch.equal(p.grad, a) for p, a in zip(m.parameters(), grads[0]))


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The plain reference: mean cross-entropy over the positions whose weight is 1, from the full logits."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    w = weights.reshape(-1).to(loss.dtype)
    return (loss * w).sum() / w.sum().clamp(min=1.0)


def test_masked_cross_entropy_matches_window_loss_mean():
    m = tiny()
    x = torch.randint(0, 97, (2, 16))
    y = torch.randint(0, 97, (2, 16))
    w = (torch.arange(16) % 3 == 0).float().expand(2, 16)
    with torch.no_grad():
        s, n = window_loss(m, x, y, w, select=True)
        assert n == int(w.sum())
        torch.testing.assert_close(s / w.sum(), masked_cross_entropy(m(x), y, w), rtol=1e-5, atol=1e-6)


def test_flops_per_token_counts_parameters_and_attention():
    m = tiny()
    a = m.args
    assert m.flops_per_token() == 6 * m.num_params(exclude_embeddings=False) + 12 * a.n_layer * a.n_embd * 16
