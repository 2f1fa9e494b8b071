"""The LLaMA-style model: HF key names, GQA, KV-cache decoding, logit selection, masked loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from chatbot.model import ModelArgs, Transformer, masked_cross_entropy
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
    cos, sin = m.rope_cos[:16], m.rope_sin[:16]
    got = attn(x, cos, sin)
    from chatbot.model import apply_rope

    q = attn.q_proj(x).view(2, 16, 4, 8).transpose(1, 2)
    k = attn.k_proj(x).view(2, 16, 2, 8).transpose(1, 2)
    v = attn.v_proj(x).view(2, 16, 2, 8).transpose(1, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True)
    want = attn.o_proj(y.transpose(1, 2).reshape(2, 16, 32))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_kv_cache_decoding_matches_full_forward():
    m = tiny().eval()
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        full = m(idx)
        m.setup_cache(1, 16)
        first = m(idx[:, :5], torch.arange(5))
        steps = [m(idx[:, i : i + 1], torch.tensor([i])) for i in range(5, 12)]
        m.clear_cache()
    torch.testing.assert_close(first, full[:, :5], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 5:], rtol=1e-4, atol=1e-5)
    assert "causal_mask" not in dict(m.named_buffers())
    with pytest.raises(ValueError):
        m(torch.zeros(1, 17, dtype=torch.long))


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
