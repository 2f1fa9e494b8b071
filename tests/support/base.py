"""Tiny random pretrained-style models for the base-model tests: real transformers configs + weights saved with
``save_pretrained`` and a byte-level BPE tokenizer trained with ``tokenizers`` on a few invented sentences, in a
temp folder. Deterministic (fixed seeds) and fast (well under a second each). No network.
"""

from __future__ import annotations

from pathlib import Path

import torch

SENTENCES = [
    "안녕 뭐해? 오늘 저녁 뭐 먹을까", "나는 집에 가는 중이야 ㅋㅋㅋ", "주말에 영화 보러 갈래?", "내일 학교에서 보자",
    "S1: 안녕 S2: 응 안녕", "좋아 그럼 일곱 시에 만나", "hello there, how are you doing today?", "<phone> <photo> <url>",
    "배고파 치킨 시켜 먹자", "ㅠㅠ 너무 피곤해", "The quick brown fox jumps over the lazy dog 123 456",
]
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# special tokens per family: (bos or None, eos, pad, extra)
FAMILIES = {
    "llama": ("<s>", "</s>", "<pad>", ["<|im_start|>", "<|im_end|>"]),
    "qwen2": (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
    "qwen3": (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
}


def make_tokenizer(family: str = "qwen2", vocab_size: int = 400, *, specials: bool = True):
    """A transformers fast tokenizer (byte-level BPE) with the family's special tokens and a chat template
    (``specials=False``: no special token at all, e.g. no eos — a tokenizer the layout must refuse)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bos, eos, pad, extra = FAMILIES[family]
    added = [t for t in (bos, eos, pad) if t] + [t for t in extra if t != eos] if specials else []
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=added, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES, trainer)
    if not specials:
        return PreTrainedTokenizerFast(tokenizer_object=tok)
    kw = {"bos_token": bos} if bos else {}
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, **kw)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def model_config(family: str, vocab_size: int, *, hidden: int = 32, layers: int = 2, tie: bool = False):
    from transformers import LlamaConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  tie_word_embeddings=tie, rms_norm_eps=1e-6)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":  # biased q/k/v
        return Qwen2Config(**common)
    if family == "qwen3":  # q/k RMS norms, explicit head_dim
        return Qwen3Config(head_dim=hidden // 4, **common)
    raise ValueError(family)


def make_base(folder: str | Path, family: str = "qwen2", *, seed: int = 0, hidden: int = 32, layers: int = 2,
              tie: bool = False) -> Path:
    """Save a tiny random ``family`` model + tokenizer to ``folder`` (created) and return it."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(family)
    bos, eos, pad, _ = FAMILIES[family]
    config = model_config(family, len(tok), hidden=hidden, layers=layers, tie=tie)
    config.eos_token_id = tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    config.bos_token_id = tok.bos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.float()
        for p in model.parameters():  # biases and norms are constant at init; make them random too (real bases)
            torch.nn.init.normal_(p, std=0.02 if p.dim() > 1 else 0.1)
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------------- training projects
BASE_TRAIN = {
    "runtime": {"seed": 7, "device": "cpu", "dtype": "float32", "compile": False},
    "model": {"block_size": 48},
    "adapter": {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
    "optimization": {"batch_size": 4, "grad_accum_steps": 2, "max_steps": 8, "learning_rate": 3e-3,
                     "min_lr": 3e-4, "warmup_steps": 2, "lr_decay_steps": 8},
    "logging": {"log_interval": 2, "eval_interval": 4, "eval_iters": 2, "save_interval": 4,
                "keep_last_n_snapshots": 2, "sample_prompts": ["안녕 뭐해?"]},
}
_BASES: dict[tuple, Path] = {}


def cached_base(family: str = "qwen2", seed: int = 0) -> Path:
    """A tiny base saved once per test session (read-only by convention)."""
    import atexit
    import shutil
    import tempfile

    key = (family, seed)
    if key not in _BASES:
        root = Path(tempfile.mkdtemp(prefix="chatbot-base-"))
        atexit.register(shutil.rmtree, root, True)
        _BASES[key] = make_base(root / f"{family}-{seed}", family, seed=seed)
    return _BASES[key]


def make_base_project(root: str | Path, overrides: dict | None = None, *, family: str = "qwen2",
                      base_dir: Path | None = None, n_sessions: int = 16):
    """``root`` with configs/ (tiny LoRA fine-tune of a tiny base) and data/processed/ made by preprocess's
    base path from an invented room; returns the loaded Config."""
    from transformers import AutoTokenizer

    from chatbot.config import PreprocessConfig
    from chatbot.data.preprocess import BaseTokenizer, build
    from tests.support.preprocess import chat_room
    from tests.support.train import TINY_TRAIN
    from tests.support.workspace import make_workspace, merged

    root = Path(root)
    base_dir = base_dir or cached_base(family)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    build([chat_room(n_sessions=n_sessions, seed=1)], PreprocessConfig(val_fraction=0.2), root / "data" / "processed",
          base=BaseTokenizer(str(base_dir), "", tok))
    over = merged(merged(BASE_TRAIN, {"model": {"base": str(base_dir)}}), overrides or {})
    return make_workspace(root, train=merged(TINY_TRAIN, over))
