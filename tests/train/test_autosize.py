"""model.size: auto — the rule picks sizes and steps from the token count and device; explicit values win; a
resumed run keeps its first choice."""

from __future__ import annotations

import pytest

from chatbot.train import autosize
from chatbot.config import TrainConfig
from chatbot.errors import ChatbotError


def auto_cfg(**model) -> TrainConfig:
    tc = TrainConfig()
    for k, v in model.items():
        setattr(tc.model, k, v)
    return tc


def test_auto_picks_by_corpus_size_and_device() -> None:
    small_room, big_room = 180_000, 5_000_000
    tc, plan = autosize.resolve(auto_cfg(), small_room, "cpu")
    assert (tc.model.n_layer, tc.model.n_embd, plan["preset"]) == (2, 128, "tiny")
    assert tc.optimization.learning_rate == pytest.approx(3e-3) and tc.optimization.min_lr == pytest.approx(3e-4)
    tc, plan = autosize.resolve(auto_cfg(), big_room, "cpu")
    assert (tc.model.n_layer, tc.model.n_embd) == (4, 256)
    tc, _ = autosize.resolve(auto_cfg(), big_room, "cuda")
    assert (tc.model.n_layer, tc.model.n_embd) == (6, 384) and tc.optimization.max_steps == autosize.GPU_STEPS


def test_steps_fit_an_hour_and_never_exceed_the_pass_cap() -> None:
    tc = auto_cfg()
    per_step = tc.optimization.batch_size * tc.optimization.grad_accum_steps * tc.model.block_size
    out, _ = autosize.resolve(tc, 180_000, "cpu")
    o = out.optimization
    assert o.max_steps == max(autosize.MIN_STEPS, min(3600 * autosize.CPU_TOKENS_PER_S["tiny"] // per_step,
                                                      autosize.MAX_PASSES * 180_000 // per_step))
    assert o.lr_decay_steps == o.max_steps and 1 <= o.warmup_steps <= max(1, o.max_steps // 20)
    assert out.logging.eval_interval == o.max_steps // 10 and out.logging.save_interval == out.logging.eval_interval
    tiny_data, _ = autosize.resolve(auto_cfg(), 2_000, "cpu")
    assert tiny_data.optimization.max_steps == autosize.MIN_STEPS


def test_explicit_values_win_and_custom_needs_them() -> None:
    tc = auto_cfg(n_layer=3, n_embd=96)
    tc.optimization.max_steps, tc.optimization.learning_rate = 77, 1e-3
    out, _ = autosize.resolve(tc, 180_000, "cpu")
    assert (out.model.n_layer, out.model.n_embd, out.model.n_head) == (3, 96, 4)
    assert (out.optimization.max_steps, out.optimization.learning_rate, out.optimization.min_lr) == (77, 1e-3, 0.0)
    with pytest.raises(ChatbotError, match="model.size is custom but model.n_layer is 0"):
        autosize.resolve(auto_cfg(size="custom"), 180_000, "cpu")
    full = auto_cfg(size="custom", n_layer=2, n_head=2, n_embd=32)
    for k in ("max_steps", "learning_rate", "lr_decay_steps", "warmup_steps"):
        setattr(full.optimization, k, {"learning_rate": 1e-3}.get(k, 10))
    full.logging.eval_interval = full.logging.save_interval = 5
    assert autosize.resolve(full, 180_000, "cpu") == (full, None)


def test_a_resumed_run_keeps_its_first_choice(tmp_path) -> None:
    first, _ = autosize.resolve(auto_cfg(), 180_000, "cpu", tmp_path)
    assert (tmp_path / "auto_size.json").is_file()
    later, _ = autosize.resolve(auto_cfg(), 9_000_000, "cpu", tmp_path)  # the room grew 50-fold meanwhile
    assert later.model == first.model and later.optimization == first.optimization
