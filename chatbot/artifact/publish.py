"""The ``publish`` verb: one self-contained model file (optionally encrypted), or a Hugging Face folder.

Why an artifact instead of the checkpoint: a checkpoint needs ``data/processed`` next to it (tokenizer, persona) and
carries optimizer state (2x the weights) that inference never uses. The artifact (its file format:
chatbot/formats/artifact.py) holds exactly what chatting needs — weights in the publish dtype, model args, the tokenizer
JSON, the special tokens and the persona *pseudonyms* — so it can be copied to another machine. The private
real-name map (``speakers.json``) is never read here.

``--encrypt`` streams it through :class:`chatbot.crypto.EncryptingWriter` (formats/artifact.py ``write``): plaintext
never touches the disk, not even a temp file. ``--format hf`` writes ``artifacts/hf/`` for ``transformers`` (see hf_export.py).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import torch

from ..config import Config
from ..data.tokenizer import load_tokenizer, tokenizer_hash
from ..device import DTYPES
from ..errors import ChatbotError
from ..formats import artifact as artifact_format
from ..formats import processed
from ..formats.artifact import ENC_NAME, INFO_NAME, PT_NAME, Artifact, finite_number
from ..formats.checkpoint import Checkpoint, strip_prefixes
from ..formats.checkpoint import read as read_checkpoint
from ..fsio import atomic_write_json, sha256_file
from ..model import ModelArgs, Transformer
from ..tokens import SPECIAL_TOKENS
from .publish_base import HF_DIR, display_path, megabytes, publishable_persona


# --------------------------------------------------------------------------------------------------- source
def find_source(cfg: Config) -> Path:
    """First of ``paths.publish.source_preference`` that exists in ``checkpoints/<run_name>/``."""
    tried = []
    for name in cfg.paths.publish.source_preference:
        path = cfg.run_dir / name
        if path.is_file():
            return path
        tried.append(name)
    raise ChatbotError(f"no checkpoint in {display_path(cfg, cfg.run_dir)} (looked for {', '.join(tried) or 'nothing'}); "
                       "run `python -m chatbot.ops train` first")


def load_checkpoint(cfg: Config, path: Path) -> Checkpoint:
    """The checkpoint to publish, memory-mapped (its optimizer state is never paged in)."""
    return read_checkpoint(path, label=display_path(cfg, path), mmap=True,
                           remedy="resume training to write a new one, or remove it to publish the next source")


def _model_args(cfg: Config, path: Path, raw) -> ModelArgs:
    try:
        return ModelArgs.from_dict(dict(raw))
    except (TypeError, ValueError) as exc:
        raise ChatbotError(f"{display_path(cfg, path)} has invalid model_args ({exc})") from None


def _check_state(cfg: Config, path: Path, args: ModelArgs, state: dict) -> None:
    """Keys and shapes must match the model the args describe (checked on the meta device: no memory)."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if got != want or len(got) != len(state):
        missing = sorted(set(want) - set(got))[:1] or sorted(k for k in got if got[k] != want.get(k))[:1]
        raise ChatbotError(f"{display_path(cfg, path)}: weights do not match its model_args "
                           f"(first difference: {missing[0] if missing else 'non-tensor entries'}); retrain")


def cast_state(state: dict, dtype: torch.dtype) -> dict:
    """Floating tensors → ``dtype``; tensors that shared storage (tied embeddings) still share it afterwards."""
    memo: dict[tuple, torch.Tensor] = {}
    out = {}
    for k, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if ident not in memo:
            new = t.to(dtype) if t.is_floating_point() else t
            if new.untyped_storage().nbytes() != new.numel() * new.element_size():
                new = new.clone()  # a view into a larger storage would save the whole storage
            memo[ident] = new
        out[k] = memo[ident]
    return out


def _distinct_tensors(state: dict):
    """Each tensor once, even when several keys share it (a tied embedding)."""
    seen = set()
    for t in state.values():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if ident not in seen:
            seen.add(ident)
            yield t


def count_parameters(state: dict) -> int:
    """Distinct parameters (a tied embedding counts once)."""
    return sum(t.numel() for t in _distinct_tensors(state))


def _state_bytes(state: dict) -> int:
    return sum(t.numel() * t.element_size() for t in _distinct_tensors(state))


def _processed(cfg: Config, ckpt_hash: str, source: Path) -> tuple[str, dict]:
    """(tokenizer JSON text, persona) from data/processed, checked against the checkpoint's tokenizer hash."""
    tok_path, stats_path = cfg.processed_dir / processed.TOKENIZER, cfg.processed_dir / processed.STATS
    for p in (tok_path, stats_path):
        if not p.is_file():
            raise ChatbotError(f"{display_path(cfg, p)} is missing (the artifact embeds it); "
                               "run `python -m chatbot.ops preprocess` with the data the model was trained on")
    try:
        tok_json = tok_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ChatbotError(f"{display_path(cfg, tok_path)} is not UTF-8 text; re-run `python -m chatbot.ops preprocess`") from None
    mismatch = ChatbotError(f"{display_path(cfg, tok_path)} is not the tokenizer {display_path(cfg, source)} was trained with "
                            "(preprocess ran again since); retrain with `python -m chatbot.ops train`")
    if tokenizer_hash(tok_json) != ckpt_hash:
        raise mismatch
    load_tokenizer(tok_json, is_json=True)  # every special token present
    stats = processed.load_stats(cfg.processed_dir, show=lambda path: display_path(cfg, path))
    if stats.get("tokenizer_hash") not in (None, ckpt_hash):
        raise mismatch
    return tok_json, publishable_persona(cfg, stats.get("persona", processed.DEFAULT_PERSONA))


def build_artifact(cfg: Config, source: Path | None = None, ckpt: Checkpoint | None = None) -> tuple[Artifact, Path]:
    """(artifact, source path): the checkpoint minus optimizer state, cast, plus tokenizer and persona."""
    source = source or find_source(cfg)
    ckpt = ckpt if ckpt is not None else load_checkpoint(cfg, source)
    args = _model_args(cfg, source, ckpt.model_args)
    state = strip_prefixes(ckpt.model)
    _check_state(cfg, source, args, state)
    ckpt_hash = ckpt.tokenizer_hash
    if not isinstance(ckpt_hash, str) or not ckpt_hash:
        raise ChatbotError(f"{display_path(cfg, source)} records no tokenizer_hash; retrain with `python -m chatbot.ops train`")
    tok_json, persona = _processed(cfg, ckpt_hash, source)
    vocab = load_tokenizer(tok_json, is_json=True).get_vocab_size(with_added_tokens=True)
    if vocab > args.vocab_size:
        raise ChatbotError(f"{display_path(cfg, source)} has a smaller vocabulary ({args.vocab_size}) than the tokenizer "
                           f"({vocab}); retrain with `python -m chatbot.ops train`")
    val = finite_number(ckpt.val_loss)
    artifact = Artifact(
        model=cast_state(state, DTYPES[cfg.paths.publish.dtype]),
        model_args=args.to_dict(),
        tokenizer_json=tok_json,
        special_tokens=list(SPECIAL_TOKENS),
        persona=persona,
        tokenizer_hash=ckpt_hash,
        step=ckpt.step,
        val_loss=val if val is not None else finite_number(ckpt.best_val_loss),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    del ckpt  # drop the optimizer state's mmap
    return artifact, source


def model_info(cfg: Config, artifact: Artifact, path: Path, source: Path, encrypted: bool) -> dict:
    """The model_info.json contents (no private text: numbers, hashes, pseudonym-free settings)."""
    return {
        "file": path.name,
        "format": artifact_format.FORMAT,
        "encrypted": encrypted,
        "encryption": "AES-256-GCM STREAM chunks, scrypt key derivation" if encrypted else None,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "parameters": count_parameters(artifact.model),
        "dtype": cfg.paths.publish.dtype,
        "step": artifact.step,
        "val_loss": artifact.val_loss,
        "tokenizer_hash": artifact.tokenizer_hash,
        "model_args": artifact.model_args,
        "created": artifact.created,
        "source": display_path(cfg, source),
    }


# --------------------------------------------------------------------------------------------------- publish
def publish(cfg: Config, encrypt: bool, fmt: str, dry: bool, adapter_only: bool = False) -> None:
    """Write artifacts/model_latest.pt (or .enc with ``encrypt``) + model_info.json, or artifacts/hf/.

    A run fine-tuned from a pretrained base (its checkpoint has a ``base`` block) goes to publish_base.py.
    """
    if fmt not in ("pt", "hf"):
        raise ChatbotError(f"--format {fmt[:20]!r} is not supported; use pt or hf")
    if encrypt and fmt == "hf":
        raise ChatbotError("--encrypt applies to the pt format only (a Hugging Face folder is plain files); "
                           "drop --encrypt or use --format pt")
    if adapter_only and fmt == "hf":
        raise ChatbotError("--adapter-only writes our artifact format; drop --format hf (which always merges)")
    key = None
    if encrypt:
        from ..security import model_key

        key = model_key(cfg)  # refuse before any work when the key is missing or weak
    if fmt == "hf":
        from .hf_export import check_available

        check_available()
    source = find_source(cfg)
    ckpt = load_checkpoint(cfg, source)
    if ckpt.is_base:
        from .publish_base import publish_base

        return publish_base(cfg, ckpt, source, key=key, fmt=fmt, dry=dry, adapter_only=adapter_only)
    if adapter_only:
        raise ChatbotError(f"--adapter-only applies to runs fine-tuned from a pretrained base (train.yaml model.base); "
                           f"{display_path(cfg, source)} was trained from scratch: publish without --adapter-only")
    artifact, source = build_artifact(cfg, source, ckpt)
    del ckpt
    if fmt == "hf":
        _publish_hf(cfg, artifact, source, dry)
    else:
        _publish_pt(cfg, artifact, source, key, dry)


def _summary(cfg: Config, artifact: Artifact) -> str:
    val = artifact.val_loss
    return (f"{count_parameters(artifact.model) / 1e6:.2f}M parameters, {cfg.paths.publish.dtype}, "
            f"step {artifact.step}, val_loss {val if val is None else round(val, 4)}")


def _publish_hf(cfg: Config, artifact: Artifact, source: Path, dry: bool) -> None:
    from .hf_export import export_hf

    target = cfg.path(cfg.paths.artifacts) / HF_DIR
    if dry:
        print(f"would write {display_path(cfg, target)}/ (config.json, model.safetensors "
              f"~{megabytes(_state_bytes(artifact.model))}, tokenizer.json, tokenizer_config.json, "
              f"special_tokens_map.json, generation_config.json) from {display_path(cfg, source)}: {_summary(cfg, artifact)}")
        return
    export_hf(cfg, artifact, target)
    print(f"wrote {display_path(cfg, target)}/ from {display_path(cfg, source)}: {_summary(cfg, artifact)}")


def _publish_pt(cfg: Config, artifact: Artifact, source: Path, key: str | None, dry: bool) -> None:
    out_dir = cfg.path(cfg.paths.artifacts)
    encrypt = key is not None
    target, info_path = out_dir / (ENC_NAME if encrypt else PT_NAME), out_dir / INFO_NAME
    if dry:
        how = "encrypted with CHATBOT_MODEL_KEY" if encrypt else "plaintext"
        print(f"would write {display_path(cfg, target)} (~{megabytes(_state_bytes(artifact.model))}, {how}) and "
              f"{display_path(cfg, info_path)} from {display_path(cfg, source)}: {_summary(cfg, artifact)}")
        return
    artifact_format.write(target, artifact, key)
    info = model_info(cfg, artifact, target, source, encrypt)
    atomic_write_json(info_path, info)
    print(f"wrote {display_path(cfg, target)} ({megabytes(info['bytes'])}, sha256 {info['sha256'][:16]}…) and "
          f"{display_path(cfg, info_path)} from {display_path(cfg, source)}: {_summary(cfg, artifact)}")
    other = out_dir / (PT_NAME if encrypt else ENC_NAME)
    if other.exists():
        if encrypt:
            print(f"note: an older plaintext {display_path(cfg, other)} still exists; delete it if the encrypted file "
                  "should be the only copy")
        else:
            print(f"note: an older encrypted {display_path(cfg, other)} still exists and may be loaded first "
                  "(gen.yaml model_preference); delete it or publish with --encrypt")
