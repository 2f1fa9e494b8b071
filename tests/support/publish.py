"""Test helpers for publish / crypto: a tiny trained-looking project, and a recorder of file writes.

Everything here is invented: the chat lines are generic phrases and the "real name" is a made-up marker used only
to prove that speakers.json never reaches an artifact.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch

from chatbot.config import load_config
from chatbot.data.tokenizer import tokenizer_hash, train_tokenizer
from chatbot.formats import checkpoint as checkpoint_format
from chatbot.formats.artifact import Artifact
from chatbot.model import ModelArgs, Transformer

FAKE_REAL_NAME = "가나다라마바사"  # invented; must never appear in any published file
KEY = "tq7-Vx2m-Lr9s-Pk4w-Hn8c-Bz3d"  # an invented test key (≥ 20 characters, not guessable by pattern)
TORCH_ZIP_MAGIC = b"PK\x03\x04"

_TEXTS = [
    "안녕 뭐해? 오늘 저녁 뭐 먹을까", "주말에 영화 보러 갈래", "ㅋㅋㅋ 그거 진짜 웃기다", "내일 아침에 일찍 일어나야 해",
    "hello there, how are you", "the weather is nice today", "커피 한 잔 할래?", "지금 집에 가는 중이야",
]


def tiny_args(vocab_size: int, **over) -> ModelArgs:
    base = dict(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                multiple_of=16, tie_embeddings=True)
    base.update(over)
    return ModelArgs(**base)


def make_trained_run(root: Path, *, step: int = 42, val_loss: float = 3.25, **model_over) -> dict:
    """Write data/processed (tokenizer.json, stats.json, speakers.json) and checkpoints/default/best.pt under ``root``
    (which must already hold configs/). Returns {"cfg", "model", "tokenizer", "args", "ckpt_path"}."""
    tok = train_tokenizer(_TEXTS * 20, 400)
    processed = root / "data" / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    tok_json = tok.to_str()
    (processed / "tokenizer.json").write_text(tok_json, encoding="utf-8")
    h = tokenizer_hash(tok_json)
    persona = {"target": "room", "self": "S2", "speakers": {"S1": 12, "S2": 9, "S3": 2}}
    (processed / "stats.json").write_text(json.dumps({"tokenizer_hash": h, "vocab_size": tok.get_vocab_size(),
                                                      "persona": persona}), encoding="utf-8")
    (processed / "speakers.json").write_text(json.dumps({FAKE_REAL_NAME: "S1"}, ensure_ascii=False), encoding="utf-8")

    torch.manual_seed(0)
    vocab = ((tok.get_vocab_size() + 63) // 64) * 64
    args = tiny_args(vocab, **model_over)
    model = Transformer(args)
    with torch.no_grad():  # non-trivial norms and biases so an export that drops them is caught
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, vocab, (2, 8))).sum().backward()
    opt.step()
    opt.zero_grad()
    ckpt = {
        "format": checkpoint_format.FORMAT, "model": model.state_dict(), "model_args": args.to_dict(),
        "optimizer": opt.state_dict(), "step": step, "best_val_loss": val_loss, "val_loss": val_loss,
        "train_loss": val_loss + 0.1, "tokenizer_hash": h, "vocab_size": vocab, "rng": {}, "sampler": {},
        "train_config": {}, "world_size": 1, "tokens_seen": 1000,
    }
    run_dir = root / "checkpoints" / "default"
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, run_dir / "best.pt")
    return {"cfg": load_config(root / "configs"), "model": model.eval(), "tokenizer": tok, "args": args,
            "ckpt_path": run_dir / "best.pt"}


def fast_crypto(monkeypatch, chunk_size: int = 4096) -> None:
    """Small scrypt cost and small chunks, so encrypted artifacts have many chunks and tests stay fast."""
    import chatbot.crypto as crypto

    monkeypatch.setattr(crypto, "DEFAULT_LOG2N", 10)
    monkeypatch.setattr(crypto, "DEFAULT_CHUNK_SIZE", chunk_size)


# ------------------------------------------------------------------------------------------ write recorder
_RECORDING: list | None = None
_HOOKED = False


def _audit(event: str, args: tuple) -> None:
    if _RECORDING is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & 0o3)  # O_WRONLY | O_RDWR
        if writing and isinstance(path, (str, bytes, Path)):
            _RECORDING.append(str(path if not isinstance(path, bytes) else path.decode(errors="replace")))
    elif event in ("os.rename", "os.replace"):
        _RECORDING.append(str(args[1]))


@contextlib.contextmanager
def record_writes():
    """Collect every path opened for writing (builtins.open, io.open, os.open) inside the block, via audit hooks."""
    global _RECORDING, _HOOKED
    if not _HOOKED:
        sys.addaudithook(_audit)  # process-wide and permanent; inert while _RECORDING is None
        _HOOKED = True
    _RECORDING = []
    got = _RECORDING
    try:
        yield got
    finally:
        _RECORDING = None


def tree(root: Path) -> dict[str, bytes]:
    """{relative path: first bytes} of every file under ``root`` (for before/after snapshots)."""
    return {str(p.relative_to(root)): p.read_bytes()[:8] for p in sorted(root.rglob("*")) if p.is_file()}


def logits(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


def model_from_artifact(artifact: Artifact) -> Transformer:
    """A float32 eval-mode Transformer with the artifact's weights (CPU), built strictly (no prefix stripping):
    what publish wrote must load as is."""
    model = Transformer(ModelArgs.from_dict(dict(artifact.model_args)))
    model.load_state_dict(artifact.model, strict=True)
    return model.eval()
