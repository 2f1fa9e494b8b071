"""Find and load the model that inference uses (reply, chat, smoke, bridge).

Sources are tried in ``gen.model_preference`` order: artifact paths (relative to the project root; ``.enc`` is an
encrypted artifact, decrypted in memory only) or the words ``best`` / ``latest`` for the current run's checkpoints.
The first one that exists is loaded; a broken one is an error rather than a silent fallback to an older model.

Every file is read through chatbot/formats/ (checkpoint.read, artifact.read: ``torch.load(..., weights_only=True)``
only, a model file is data, never code). A checkpoint carries no tokenizer, so it is paired with
``data/processed/tokenizer.json`` — refused when the tokenizer hash differs from the one the checkpoint was trained
with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..config import Config
from ..data.tokenizer import load_tokenizer, tokenizer_hash
from ..device import pick_device
from ..errors import ChatbotError
from ..formats import artifact as artifact_format
from ..formats import processed
from ..formats.artifact import Artifact
from ..formats.checkpoint import Checkpoint, strip_prefixes
from ..formats.checkpoint import read as read_checkpoint
from ..fsio import relative_path
from ..model import ModelArgs, Transformer

DEFAULT_PERSONA = processed.DEFAULT_PERSONA


@dataclass
class Bundle:
    """Everything generation needs. ``source`` is the file loaded; ``kind`` artifact | encrypted | checkpoint.

    From scratch: ``model`` is our Transformer and ``tokenizer`` a ``tokenizers.Tokenizer``. A run fine-tuned from a
    pretrained base: a ``transformers`` causal LM (adapter merged) and the base's fast tokenizer; ``base`` then holds
    the base block (id, revision, weight_hash, tokenizer_hash, adapter) and ``weights`` says merged | adapter |
    checkpoint.
    """

    model: torch.nn.Module
    tokenizer: object
    persona: dict
    source: Path
    step: int
    kind: str = "checkpoint"
    val_loss: float | None = None
    base: dict | None = None
    weights: str = ""

    @property
    def is_base(self) -> bool:
        return self.base is not None


def model_candidates(cfg: Config) -> list[tuple[Path, str]]:
    """(path, kind) for every ``gen.model_preference`` entry, in order, whether or not it exists."""
    out = []
    for pref in cfg.gen.model_preference:
        if pref in ("best", "latest"):
            out.append((cfg.run_dir / f"{pref}.pt", "checkpoint"))
        else:
            path = cfg.path(pref)
            out.append((path, "encrypted" if path.suffix == ".enc" else "artifact"))
    return out


def find_model_source(cfg: Config) -> tuple[Path, str] | None:
    """The (path, kind) inference would load, or None (cheap: nothing is read)."""
    return next(((p, k) for p, k in model_candidates(cfg) if p.is_file()), None)


def load_bundle(cfg: Config) -> Bundle:
    found = find_model_source(cfg)
    if found is None:
        looked = ", ".join(_rel(cfg, p) for p, _ in model_candidates(cfg)) or "nothing (gen.model_preference is empty)"
        raise ChatbotError(
            f"no model found (looked for {looked}); train one with `python -m chatbot.ops train` "
            "and publish it with `python -m chatbot.ops publish`"
        )
    path, kind = found
    device = pick_device(cfg.gen.device, key="gen.yaml device")
    if kind == "checkpoint":
        ckpt = read_checkpoint(path, label=_rel(cfg, path), remedy=_remedy("checkpoint"))
        return _checkpoint_bundle(cfg, path, ckpt, device)
    _check_memory(cfg, path)
    key = None
    if kind == "encrypted":
        from ..security import model_key

        key = model_key(cfg)
    # decrypted in memory only; a checkpoint copied to an artifact path loads too (told apart by its format)
    got = artifact_format.read(path, key, label=_rel(cfg, path), remedy=_remedy(kind), checkpoint_ok=True)
    if isinstance(got, Checkpoint):
        return _checkpoint_bundle(cfg, path, got, device)
    if isinstance(got, artifact_format.Container):
        return _container_bundle(cfg, path, kind, got.buf, device)
    tok, persona = _artifact_side(cfg, path, got)
    model = build_model(cfg, path, got.model_args, got.model, device, kind)
    _check_vocab(cfg, path, tok, model, kind)
    val = got.val_loss
    return Bundle(model, tok, persona, path, int(got.step or 0), kind, float(val) if val is not None else None)


def _checkpoint_bundle(cfg: Config, path: Path, ckpt: Checkpoint, device: torch.device) -> Bundle:
    """A trainer checkpoint: weights from it, tokenizer and persona from data/processed."""
    if ckpt.is_base:
        return _base_checkpoint_bundle(cfg, path, ckpt, device)
    tok, persona = _processed_side(cfg, path, ckpt)
    model = build_model(cfg, path, ckpt.model_args, ckpt.model, device, "checkpoint")
    _check_vocab(cfg, path, tok, model, "checkpoint")
    val = ckpt.val_loss
    return Bundle(model, tok, persona, path, ckpt.step, "checkpoint", float(val) if val is not None else None)


def _check_vocab(cfg: Config, path: Path, tok: Tokenizer, model: Transformer, kind: str) -> None:
    if tok.get_vocab_size(with_added_tokens=True) > model.args.vocab_size:
        raise ChatbotError(f"{_rel(cfg, path)} was trained with a smaller vocabulary than its tokenizer; {_remedy(kind)}")


def _check_memory(cfg: Config, path: Path) -> None:
    """An artifact is read whole into memory: refuse in one line, before reading, when it cannot fit."""
    try:
        import psutil
    except ImportError:  # optional (installed with the [base] extra); without it the load is simply attempted
        return
    need, free = path.stat().st_size, psutil.virtual_memory().available
    if need * 1.1 > free:
        raise ChatbotError(f"{_rel(cfg, path)} needs about {need / 2**30:.1f} GiB of memory to load but only "
                           f"{free / 2**30:.1f} GiB is free; close other programs, or publish with paths.yaml "
                           "publish.dtype: bfloat16")


def _container_bundle(cfg: Config, path: Path, kind: str, buf, device: torch.device) -> Bundle:
    """A pretrained-base artifact (merged, or adapter-only on top of the local base)."""
    from .loading_base import from_container

    model, tok, doc = from_container(cfg, buf, _rel(cfg, path), device)
    del buf  # a merged model's parameters keep the buffer alive; an adapter's does not need it
    val = doc.get("val_loss")
    return Bundle(model, tok, _check_persona(doc.get("persona") or DEFAULT_PERSONA), path,
                  int(doc.get("step") or 0), kind, float(val) if isinstance(val, (int, float)) else None,
                  base=doc.get("base"), weights=str(doc.get("weights")))


def _base_checkpoint_bundle(cfg: Config, path: Path, ckpt: Checkpoint, device: torch.device) -> Bundle:
    """A checkpoint of a base run: the local base + the checkpoint's adapter, persona from data/processed."""
    from .loading_base import from_checkpoint

    model, tok = from_checkpoint(cfg, ckpt, _rel(cfg, path), device)
    val = ckpt.val_loss
    return Bundle(model, tok, _processed_persona(cfg), path, ckpt.step, "checkpoint",
                  float(val) if isinstance(val, (int, float)) else None, base=ckpt.base, weights="checkpoint")


def build_model(cfg: Config, path: Path, model_args: dict, weights: dict, device: torch.device, kind: str) -> Transformer:
    """Transformer from ``model_args`` + state dict, fp32, eval mode, on ``device``."""
    try:
        args = ModelArgs.from_dict(dict(model_args))
        model = Transformer(args)
    except (TypeError, ValueError) as exc:
        raise ChatbotError(f"{_rel(cfg, path)} has invalid model settings ({exc})") from None
    state = strip_prefixes(weights)
    if args.tie_embeddings and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    try:
        model.load_state_dict(state, strict=True)  # copies (and casts bf16/fp16 → fp32) into the parameters
    except RuntimeError:
        raise ChatbotError(f"the weights in {_rel(cfg, path)} do not match its model settings; "
                           f"{_remedy(kind)}") from None
    return model.to(device).eval()


def _processed_side(cfg: Config, path: Path, ckpt: Checkpoint) -> tuple[Tokenizer, dict]:
    tok_path = cfg.processed_dir / processed.TOKENIZER
    if not tok_path.is_file():
        raise ChatbotError(f"{_rel(cfg, tok_path)} is missing (a checkpoint needs the tokenizer it was trained with); "
                           "run `python -m chatbot.ops preprocess`, or publish an artifact")
    raw = tok_path.read_bytes()
    want = ckpt.tokenizer_hash
    if want and hashlib.sha256(raw).hexdigest() != want:
        raise ChatbotError(f"{_rel(cfg, tok_path)} is not the tokenizer {_rel(cfg, path)} was trained with "
                           "(preprocess ran again since); retrain with `python -m chatbot.ops train`")
    return load_tokenizer(str(tok_path)), _processed_persona(cfg)


def _processed_persona(cfg: Config) -> dict:
    persona = DEFAULT_PERSONA
    try:
        persona = processed.load_stats(cfg.processed_dir).get("persona") or DEFAULT_PERSONA
    except ChatbotError:
        pass  # persona only picks default speakers; gen.yaml can set them explicitly
    return _check_persona(persona)


def _artifact_side(cfg: Config, path: Path, art: Artifact) -> tuple[Tokenizer, dict]:
    tok_json, want = art.tokenizer_json, art.tokenizer_hash  # a str: formats.artifact checked it
    if want and tokenizer_hash(tok_json) != want:
        raise ChatbotError(f"{_rel(cfg, path)} is inconsistent (tokenizer hash mismatch); "
                           "re-create it with `python -m chatbot.ops publish`")
    return load_tokenizer(tok_json, is_json=True), _check_persona(art.persona or DEFAULT_PERSONA)


def _check_persona(persona: object) -> dict:
    if not isinstance(persona, dict):
        return dict(DEFAULT_PERSONA)
    speakers = persona.get("speakers")
    clean = {str(k): int(v) for k, v in speakers.items() if isinstance(v, (int, float))} if isinstance(speakers, dict) else {}
    return {"target": persona.get("target", "room"), "self": persona.get("self"), "speakers": clean}


def _remedy(kind: str) -> str:
    if kind == "checkpoint":
        return "retrain with `python -m chatbot.ops train` or pick another source in gen.yaml model_preference"
    return "re-create it with `python -m chatbot.ops publish` or pick another source in gen.yaml model_preference"


def _rel(cfg: Config, path: Path) -> str:
    """How messages show a path: relative to the project root, else as given."""
    return str(relative_path(cfg.root, path) or path)
