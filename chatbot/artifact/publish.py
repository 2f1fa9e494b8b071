"""The ``publish`` verb: one self-contained model file (optionally encrypted), or a Hugging Face folder.

Why an artifact instead of the checkpoint: a checkpoint needs ``data/processed`` next to it (tokenizer, persona) and
carries optimizer state (2x the weights) that inference never uses. The artifact (contract in
docs/ARCHITECTURE.md) holds exactly what chatting needs — weights in the publish dtype, model args, the tokenizer
JSON, the special tokens and the persona *pseudonyms* — so it can be copied to another machine. The private
real-name map (``speakers.json``) is never read here.

``--encrypt`` streams ``torch.save`` through :class:`chatbot.crypto.EncryptingWriter`: plaintext never touches the
disk, not even a temp file. ``--format hf`` writes ``artifacts/hf/`` for ``transformers`` (see hf_export.py).
"""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path

import torch

from ..data.tokenizer import load_tokenizer, tokenizer_hash
from ..device import DTYPES
from ..errors import ChatbotError
from ..formats import processed
from ..fsio import atomic_torch_save, atomic_write_json, sha256_file
from ..model import ModelArgs, Transformer
from ..tokens import SPECIAL_TOKENS, is_pseudonym

ARTIFACT_FORMAT = "chatbot-artifact-1"
CHECKPOINT_FORMAT = "chatbot-ckpt-1"
ARTIFACT_PT, ARTIFACT_ENC, INFO_JSON, HF_DIR = "model_latest.pt", "model_latest.enc", "model_info.json", "hf"
ARTIFACT_KEYS = ("format", "model", "model_args", "tokenizer_json", "special_tokens", "persona", "tokenizer_hash",
                 "step", "val_loss", "created")


# --------------------------------------------------------------------------------------------------- source
def _rel(cfg, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(cfg.root.resolve()))
    except ValueError:
        return Path(path).name


def find_source(cfg) -> Path:
    """First of ``paths.publish.source_preference`` that exists in ``checkpoints/<run_name>/``."""
    tried = []
    for name in cfg.paths.publish.source_preference:
        path = cfg.run_dir / name
        if path.is_file():
            return path
        tried.append(name)
    raise ChatbotError(f"no checkpoint in {_rel(cfg, cfg.run_dir)} (looked for {', '.join(tried) or 'nothing'}); "
                       "run `python -m chatbot.ops train` first")


def load_checkpoint(cfg, path: Path) -> dict:
    """``torch.load`` with weights_only=True and mmap (the optimizer state is never paged in)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated zip, legacy format, pickled code, not a torch file ...
        raise ChatbotError(f"{_rel(cfg, path)} is not a readable checkpoint ({type(exc).__name__}); "
                           "resume training to write a new one, or remove it to publish the next source") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) or "model_args" not in ckpt:
        raise ChatbotError(f"{_rel(cfg, path)} is not a chatbot checkpoint (no model / model_args)")
    if ckpt.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise ChatbotError(f"{_rel(cfg, path)} has format {str(ckpt.get('format'))[:40]!r}, "
                           f"expected {CHECKPOINT_FORMAT!r}; update the tool or retrain")
    return ckpt


def _strip_prefix(key: str) -> str:
    for prefix in ("_orig_mod.", "module."):  # torch.compile / DDP wrappers
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def _model_args(cfg, path: Path, raw) -> ModelArgs:
    try:
        return ModelArgs.from_dict(dict(raw))
    except (TypeError, ValueError) as exc:
        raise ChatbotError(f"{_rel(cfg, path)} has invalid model_args ({exc})") from None


def _check_state(cfg, path: Path, args: ModelArgs, state: dict) -> None:
    """Keys and shapes must match the model the args describe (checked on the meta device: no memory)."""
    with torch.device("meta"):
        want = {k: tuple(v.shape) for k, v in Transformer(args).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if torch.is_tensor(v)}
    if got != want or len(got) != len(state):
        missing = sorted(set(want) - set(got))[:1] or sorted(k for k in got if got[k] != want.get(k))[:1]
        raise ChatbotError(f"{_rel(cfg, path)}: weights do not match its model_args "
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


def _num(x) -> float | None:
    if torch.is_tensor(x) and x.numel() == 1:
        x = x.item()
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


def clean_persona(cfg, persona) -> dict:
    """The persona block of stats.json, keeping only pseudonyms (refuses anything that looks like a name)."""
    bad = ChatbotError(f"{_rel(cfg, cfg.processed_dir / processed.STATS)}: persona is not in pseudonym form "
                       "(S1, S2 ...); re-run `python -m chatbot.ops preprocess`")
    if not isinstance(persona, dict):
        raise bad
    target, self_ = persona.get("target", "room"), persona.get("self")
    speakers = persona.get("speakers") or {}
    if (not isinstance(target, str) or not (target == "room" or is_pseudonym(target))
            or not (self_ is None or is_pseudonym(self_))
            or not isinstance(speakers, dict)
            or not all(is_pseudonym(k) for k in speakers)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in speakers.values())):
        raise bad
    return {"target": target, "self": self_, "speakers": {k: int(v) for k, v in speakers.items()}}


def _processed(cfg, ckpt_hash: str, source: Path) -> tuple[str, dict]:
    """(tokenizer JSON text, persona) from data/processed, checked against the checkpoint's tokenizer hash."""
    tok_path, stats_path = cfg.processed_dir / processed.TOKENIZER, cfg.processed_dir / processed.STATS
    for p in (tok_path, stats_path):
        if not p.is_file():
            raise ChatbotError(f"{_rel(cfg, p)} is missing (the artifact embeds it); "
                               "run `python -m chatbot.ops preprocess` with the data the model was trained on")
    try:
        tok_json = tok_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ChatbotError(f"{_rel(cfg, tok_path)} is not UTF-8 text; re-run `python -m chatbot.ops preprocess`") from None
    mismatch = ChatbotError(f"{_rel(cfg, tok_path)} is not the tokenizer {_rel(cfg, source)} was trained with "
                            "(preprocess ran again since); retrain with `python -m chatbot.ops train`")
    if tokenizer_hash(tok_json) != ckpt_hash:
        raise mismatch
    load_tokenizer(tok_json, is_json=True)  # every special token present
    stats = processed.load_stats(cfg.processed_dir, show=lambda path: _rel(cfg, path))
    if stats.get("tokenizer_hash") not in (None, ckpt_hash):
        raise mismatch
    return tok_json, clean_persona(cfg, stats.get("persona", processed.DEFAULT_PERSONA))


def build_artifact(cfg, source: Path | None = None, ckpt: dict | None = None) -> tuple[dict, Path]:
    """(artifact dict, source path): the checkpoint minus optimizer state, cast, plus tokenizer and persona."""
    source = source or find_source(cfg)
    ckpt = ckpt if ckpt is not None else load_checkpoint(cfg, source)
    args = _model_args(cfg, source, ckpt["model_args"])
    state = {_strip_prefix(k): v for k, v in ckpt["model"].items()}
    _check_state(cfg, source, args, state)
    ckpt_hash = ckpt.get("tokenizer_hash")
    if not isinstance(ckpt_hash, str) or not ckpt_hash:
        raise ChatbotError(f"{_rel(cfg, source)} records no tokenizer_hash; retrain with `python -m chatbot.ops train`")
    tok_json, persona = _processed(cfg, ckpt_hash, source)
    vocab = load_tokenizer(tok_json, is_json=True).get_vocab_size(with_added_tokens=True)
    if vocab > args.vocab_size:
        raise ChatbotError(f"{_rel(cfg, source)} has a smaller vocabulary ({args.vocab_size}) than the tokenizer "
                           f"({vocab}); retrain with `python -m chatbot.ops train`")
    val = _num(ckpt.get("val_loss"))
    artifact = {
        "format": ARTIFACT_FORMAT,
        "model": cast_state(state, DTYPES[cfg.paths.publish.dtype]),
        "model_args": args.to_dict(),
        "tokenizer_json": tok_json,
        "special_tokens": list(SPECIAL_TOKENS),
        "persona": persona,
        "tokenizer_hash": ckpt_hash,
        "step": int(_num(ckpt.get("step")) or 0),
        "val_loss": val if val is not None else _num(ckpt.get("best_val_loss")),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    del ckpt  # drop the optimizer state's mmap
    return artifact, source


def model_info(cfg, artifact: dict, path: Path, source: Path, encrypted: bool) -> dict:
    """The model_info.json contents (no private text: numbers, hashes, pseudonym-free settings)."""
    return {
        "file": path.name,
        "format": artifact["format"],
        "encrypted": encrypted,
        "encryption": "AES-256-GCM STREAM chunks, scrypt key derivation" if encrypted else None,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "parameters": count_parameters(artifact["model"]),
        "dtype": cfg.paths.publish.dtype,
        "step": artifact["step"],
        "val_loss": artifact["val_loss"],
        "tokenizer_hash": artifact["tokenizer_hash"],
        "model_args": artifact["model_args"],
        "created": artifact["created"],
        "source": _rel(cfg, source),
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# --------------------------------------------------------------------------------------------------- publish
def publish(cfg, encrypt: bool, fmt: str, dry: bool, adapter_only: bool = False) -> None:
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
    if ckpt.get("base") is not None:
        from .publish_base import publish_base

        return publish_base(cfg, ckpt, source, key=key, fmt=fmt, dry=dry, adapter_only=adapter_only)
    if adapter_only:
        raise ChatbotError(f"--adapter-only applies to runs fine-tuned from a pretrained base (train.yaml model.base); "
                           f"{_rel(cfg, source)} was trained from scratch: publish without --adapter-only")
    artifact, source = build_artifact(cfg, source, ckpt)
    del ckpt
    out_dir = cfg.path(cfg.paths.artifacts)
    n_params, n_bytes = count_parameters(artifact["model"]), _state_bytes(artifact["model"])
    summary = (f"{n_params / 1e6:.2f}M parameters, {cfg.paths.publish.dtype}, step {artifact['step']}, "
               f"val_loss {artifact['val_loss'] if artifact['val_loss'] is None else round(artifact['val_loss'], 4)}")

    if fmt == "hf":
        from .hf_export import export_hf

        target = out_dir / HF_DIR
        if dry:
            print(f"would write {_rel(cfg, target)}/ (config.json, model.safetensors ~{_mb(n_bytes)}, tokenizer.json, "
                  f"tokenizer_config.json, special_tokens_map.json, generation_config.json) from "
                  f"{_rel(cfg, source)}: {summary}")
            return
        export_hf(cfg, artifact, target)
        print(f"wrote {_rel(cfg, target)}/ from {_rel(cfg, source)}: {summary}")
        return

    target = out_dir / (ARTIFACT_ENC if encrypt else ARTIFACT_PT)
    info_path = out_dir / INFO_JSON
    if dry:
        how = "encrypted with CHATBOT_MODEL_KEY" if encrypt else "plaintext"
        print(f"would write {_rel(cfg, target)} (~{_mb(n_bytes)}, {how}) and {_rel(cfg, info_path)} "
              f"from {_rel(cfg, source)}: {summary}")
        return
    if encrypt:
        from ..crypto import EncryptingWriter

        with EncryptingWriter(target, key) as writer:
            torch.save(artifact, writer)
    else:
        atomic_torch_save(artifact, target)
    info = model_info(cfg, artifact, target, source, encrypt)
    atomic_write_json(info_path, info)
    print(f"wrote {_rel(cfg, target)} ({_mb(info['bytes'])}, sha256 {info['sha256'][:16]}…) and "
          f"{_rel(cfg, info_path)} from {_rel(cfg, source)}: {summary}")
    other = out_dir / (ARTIFACT_PT if encrypt else ARTIFACT_ENC)
    if other.exists():
        if encrypt:
            print(f"note: an older plaintext {_rel(cfg, other)} still exists; delete it if the encrypted file "
                  "should be the only copy")
        else:
            print(f"note: an older encrypted {_rel(cfg, other)} still exists and may be loaded first "
                  "(gen.yaml model_preference); delete it or publish with --encrypt")


# ------------------------------------------------------------------------------------------------------ load
def load_artifact(path: str | Path, key: str | None) -> dict:
    """Load model_latest.pt, or an encrypted .enc (needs ``key``), fully in memory with weights_only=True.

    Decryption happens in memory only. Returns the artifact dict after checking ``format`` and the keys. The
    artifact of a pretrained-base run (another format, see hf_artifact.py) is refused with one line.
    """
    what, obj = read_artifact(path, key)
    if what == "container":
        raise ChatbotError(f"{Path(path).name} is the artifact of a run fine-tuned from a pretrained base "
                           "(format chatbot-artifact-hf-1); load it with reply / chat / smoke / bridge")
    return obj


def read_artifact(path: str | Path, key: str | None) -> tuple[str, object]:
    """("torch", checked artifact dict) or ("container", plaintext buffer of a pretrained-base artifact)."""
    from ..crypto import DecryptError, MemoryReader, decrypt_to_bytes, is_encrypted
    from ..formats.hf_artifact import looks_like_container

    path = Path(path)
    if not path.is_file():
        raise ChatbotError(f"{path.name} not found; create it with `python -m chatbot.ops publish`")
    encrypted = is_encrypted(path)
    if not encrypted and path.suffix == ".enc":
        raise DecryptError(f"{path.name} is not an encrypted chatbot model (bad magic bytes); "
                           "publish it again with `python -m chatbot.ops publish --encrypt`")
    if encrypted:
        if not key:
            raise ChatbotError(f"{path.name} is encrypted; set CHATBOT_MODEL_KEY in .env to the key it was "
                               "published with")
        buf = decrypt_to_bytes(path, key)
        if looks_like_container(bytes(buf[:16])):
            return "container", buf
        src = MemoryReader(buf)
    else:
        with open(path, "rb") as fh:
            if looks_like_container(fh.read(16)):
                from ..infer.loading_base import read_plain

                return "container", read_plain(path)
        src = path
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ChatbotError(f"{path.name} is not a readable model artifact ({type(exc).__name__}); "
                           "publish it again with `python -m chatbot.ops publish`") from None
    finally:
        if encrypted:
            src.close()
        del src
    if not isinstance(obj, dict) or obj.get("format") != ARTIFACT_FORMAT:
        fmt = obj.get("format") if isinstance(obj, dict) else None
        raise ChatbotError(f"{path.name} is not a chatbot artifact (format {str(fmt)[:40]!r}, expected "
                           f"{ARTIFACT_FORMAT!r}); publish it again with `python -m chatbot.ops publish`")
    missing = [k for k in ARTIFACT_KEYS if k not in obj]
    if missing or not isinstance(obj["model"], dict) or not isinstance(obj["tokenizer_json"], str):
        raise ChatbotError(f"{path.name} is incomplete (missing {missing[0] if missing else 'model/tokenizer'}); "
                           "publish it again with `python -m chatbot.ops publish`")
    return "torch", obj


def model_from_artifact(artifact: dict) -> Transformer:
    """A float32 eval-mode Transformer with the artifact's weights (CPU)."""
    model = Transformer(ModelArgs.from_dict(dict(artifact["model_args"])))
    model.load_state_dict(artifact["model"], strict=True)
    return model.eval()
