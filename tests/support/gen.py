"""Test helpers for generation / loading / chat / smoke: a tiny tokenizer, tiny models (random or hand-shaped),
and a throw-away project holding a fake processed dir + checkpoint or artifact. All text is invented."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import torch

from chatbot.config import Config
from chatbot.data.tokenizer import train_tokenizer
from chatbot.formats import artifact as artifact_format
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.fsio import atomic_torch_save
from chatbot.infer.prompt import TokenIds
from chatbot.infer.stream import token_byte_table
from chatbot.model import ModelArgs, Transformer
from tests.support.workspace import PASSWORD


CORPUS = [
    "안녕 뭐해?", "오늘 저녁 뭐 먹을까?", "주말에 뭐 할 거야?", "나는 집에서 쉬는 중이야", "라면 먹자 ㅋㅋㅋ",
    "영화 보러 갈래?", "좋아 몇 시에 만날까", "hello there, how are you", "내일 비 온대", "우산 챙겨 가",
    "커피 한 잔 할래?", "응 좋아 좋아", "배고프다 진짜", "치킨 시킬까", "ok see you soon",
] * 4
PERSONA = {"target": "room", "self": "S2", "speakers": {"S1": 40, "S2": 30, "S3": 5}}


@functools.lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    return train_tokenizer(CORPUS, vocab_size=420).to_str()


def tiny_tokenizer():
    from chatbot.data.tokenizer import load_tokenizer

    return load_tokenizer(_tokenizer_json(), is_json=True)


def vocab_size() -> int:
    return tiny_tokenizer().get_vocab_size(with_added_tokens=True)


def tiny_args(**over) -> ModelArgs:
    kw = dict(vocab_size=vocab_size(), block_size=64, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
    kw.update(over)
    return ModelArgs(**kw)


def random_model(seed: int = 0, **over) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(tiny_args(**over)).eval()


def shaped_model(bias: torch.Tensor, seed: int = 0, **over) -> Transformer:
    """A real Transformer whose next-token logits are ≈ ``bias`` (+ a little context-dependent noise).

    Feature 0 of every embedding is a constant the layers never write to, so after the final RMSNorm it is a
    constant input to lm_head and column 0 of lm_head acts as a logit bias.
    """
    m = random_model(seed, tie_embeddings=False, **over)
    with torch.no_grad():
        m.model.embed_tokens.weight[:, 0] = 1.0
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
        x = m.model.embed_tokens.weight[:1]
        scale = float(m.model.norm(x)[0, 0])  # what feature 0 becomes after the norm
        m.lm_head.weight[:, 0] = bias / scale
    return m


def text_token_ids(tok) -> list[int]:
    """Ids whose bytes are complete, visible UTF-8 text (no specials, no lone partial bytes, no whitespace)."""
    ids = TokenIds.from_tokenizer(tok)
    out = []
    for i, b in enumerate(token_byte_table(tok, ids.special)):
        try:
            s = b.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if s and s.isprintable() and s == s.strip() and "<" not in s:
            out.append(i)
    return out


def chatty_bias(tok, mean_len: float = 6.0) -> torch.Tensor:
    """Logit bias of a well-behaved model: visible text tokens, ending with <|eot|> after ~mean_len tokens under
    the default sampling (temperature 0.8, top-k 50: <|eot|> competes with 49 text tokens)."""
    ids = TokenIds.from_tokenizer(tok)
    text = text_token_ids(tok)
    bias = torch.full((vocab_size(),), -30.0)
    bias[text] = 0.0
    bias[ids.eot] = 0.8 * float(torch.log(torch.tensor(49 / mean_len)))
    return bias


def constant_bias(token_id: int, strength: float = 30.0) -> torch.Tensor:
    bias = torch.zeros(vocab_size())
    bias[token_id] = strength
    return bias


def write_checkpoint(cfg: Config, model: Transformer, *, name: str = "best.pt", persona: dict | None = None,
                     step: int = 7, tokenizer_json: str | None = None) -> Path:
    """processed/tokenizer.json + stats.json, and checkpoints/<run>/<name> in the trainer's dict shape."""
    tok_json = tokenizer_json or _tokenizer_json()
    cfg.processed_dir.mkdir(parents=True, exist_ok=True)
    (cfg.processed_dir / "tokenizer.json").write_text(_tokenizer_json(), encoding="utf-8")
    stats = {"dtype": "uint16", "vocab_size": vocab_size(), "persona": persona or PERSONA,
             "tokenizer_hash": hashlib.sha256(_tokenizer_json().encode()).hexdigest()}
    (cfg.processed_dir / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
    ckpt = {
        "format": checkpoint_format.FORMAT, "model": model.state_dict(), "model_args": model.args.to_dict(),
        "optimizer": {}, "step": step, "best_val_loss": 2.5, "val_loss": 2.5, "train_loss": 2.4,
        "tokenizer_hash": hashlib.sha256(tok_json.encode()).hexdigest(), "vocab_size": model.args.vocab_size,
    }
    path = cfg.run_dir / name
    atomic_torch_save(ckpt, path)
    return path


def artifact_dict(model: Transformer, *, persona: dict | None = None, step: int = 9, dtype=torch.float32) -> dict:
    tok_json = _tokenizer_json()
    from chatbot.tokens import SPECIAL_TOKENS

    return {
        "format": artifact_format.FORMAT,
        "model": {k: v.to(dtype) for k, v in model.state_dict().items()},
        "model_args": model.args.to_dict(),
        "tokenizer_json": tok_json,
        "special_tokens": list(SPECIAL_TOKENS),
        "persona": persona or PERSONA,
        "tokenizer_hash": hashlib.sha256(tok_json.encode()).hexdigest(),
        "step": step,
        "val_loss": 2.0,
        "created": "2024-01-01T00:00:00Z",
    }


def write_artifact(cfg: Config, model: Transformer, **kw) -> Path:
    path = cfg.path("artifacts/model_latest.pt")
    atomic_torch_save(artifact_dict(model, **kw), path)
    return path


def password_env(monkeypatch) -> None:
    """The caller supplies the gate password the way scripts do."""
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    monkeypatch.delenv("CHATBOT_PASSWORD", raising=False)
    monkeypatch.delenv("CHATBOT_PASSWORD_HASH", raising=False)


class BigramModel(torch.nn.Module):
    """A stand-in with the Transformer's generation interface whose next token depends only on the current one:
    ``chain`` {current id: next id} gets logit ``strength``, everything else 0. Exact control over what a
    "model" emits (stop tokens, bytes that split a syllable) without training anything."""

    def __init__(self, chain: dict[int, int], vocab: int | None = None, block_size: int = 64, strength: float = 40.0):
        super().__init__()
        from types import SimpleNamespace

        vocab = vocab or vocab_size()
        self.args = SimpleNamespace(block_size=block_size, vocab_size=vocab)
        table = torch.zeros(vocab, vocab)
        for cur, nxt in chain.items():
            table[cur, nxt] = strength
        self.table = torch.nn.Parameter(table, requires_grad=False)
        self.calls: list[int] = []  # tokens fed per forward call (prefill once, then 1 per step)

    def new_cache(self) -> None:
        return None  # the next token depends on the current one only: nothing to remember

    def decode(self, idx: torch.Tensor, start: int, cache: None) -> torch.Tensor:
        self.calls.append(idx.shape[0])
        return self.table[idx[-1]]

    def forward(self, idx: torch.Tensor, *, select=None) -> torch.Tensor:
        self.calls.append(idx.shape[1])
        out = self.table[idx]
        return out if select is None else out.reshape(-1, out.size(-1))[select]


def chain_of(tokens: list[int]) -> dict[int, int]:
    return dict(zip(tokens[:-1], tokens[1:]))


def byte_token(tok, b: bytes) -> int:
    """Id of the token whose raw bytes are exactly ``b``."""
    ids = TokenIds.from_tokenizer(tok)
    return token_byte_table(tok, ids.special).index(b)

