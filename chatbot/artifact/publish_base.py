"""``publish`` for a run that fine-tuned a pretrained base (the checkpoint has a ``base`` block).

Three outputs, all from the checkpoint's trainable tensors + the base folder it names:

* merged (default): every base weight, with the LoRA update ``W + alpha/r · B A`` folded in, written one tensor at
  a time into the container of :mod:`chatbot.formats.hf_artifact` — plainly (atomic temp file + rename) or through the
  streaming :class:`~chatbot.crypto.EncryptingWriter` (``--encrypt``). Memory: one tensor (the base is read from its
  memory-mapped safetensors files); disk: only the finished file (ciphertext when encrypted).
* ``--adapter-only``: the LoRA tensors + tokenizer + base id/revision/weight hash: megabytes instead of gigabytes;
  it loads on top of the same base, present locally.
* ``--format hf``: a merged folder ``artifacts/hf/`` of sharded safetensors + the base's config and tokenizer
  files, which ``transformers`` loads as is (hf_export.export_base_hf).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from ..base.locate import check_base_block, locate_base
from ..config import Config
from ..device import DTYPES
from ..errors import ChatbotError
from ..formats import processed
from ..formats.artifact import ENC_NAME, INFO_NAME, PT_NAME, check_persona, finite_number, open_sink
from ..formats.checkpoint import Checkpoint, strip_prefixes
from ..formats.hf_artifact import (HF_ARTIFACT_FORMAT, ContainerWriter, artifact_metadata, base_weight_files,
                                   base_weight_shapes, iter_base_tensors, lora_pairs, lora_scale, merge_lora,
                                   tokenizer_files)
from ..fsio import atomic_write_json, relative_path, sha256_file

HF_DIR = "hf"  # publish --format hf writes artifacts/hf/


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def publishable_persona(cfg: Config, persona: object) -> dict:
    """The persona block of stats.json, keeping only pseudonyms (refuses anything that looks like a name)."""
    clean = check_persona(persona)
    if clean is None:
        raise ChatbotError(f"{display_path(cfg, cfg.processed_dir / processed.STATS)}: persona is not in "
                           "pseudonym form (S1, S2 ...); re-run `python -m chatbot.ops preprocess`")
    return clean


def check_tokenizer(folder: Path, info: dict, ckpt: Checkpoint, label: str):
    """The base tokenizer, refused when it is not the one the run was trained with."""
    from ..base import tokenizer_hash
    from ..base.load import load_tokenizer

    tok = load_tokenizer(folder)
    want = info.get("tokenizer_hash") or ckpt.tokenizer_hash
    if want and tokenizer_hash(tok) != want:
        raise ChatbotError(f"the tokenizer of the base at {folder} is not the one {label} was trained with; "
                           "restore that exact base (model.base_revision)")
    return tok


def _persona(cfg: Config) -> dict:
    try:
        persona = processed.load_stats(cfg.processed_dir).get("persona")
    except ChatbotError:
        persona = None  # no or unreadable stats.json: the run's persona only picks default speakers
    return publishable_persona(cfg, persona or processed.DEFAULT_PERSONA)


# --------------------------------------------------------------------------------------------------- planning
class BasePlan:
    """Everything needed to write one base-run output, checked before anything is written."""

    def __init__(self, cfg: Config, ckpt: Checkpoint, source: Path, *, adapter_only: bool):
        self.cfg, self.source, self.label = cfg, source, display_path(cfg, source)
        self.info = check_base_block(ckpt.base, self.label)
        self.adapter = self.info["adapter"]
        if adapter_only and self.adapter["kind"] != "lora":
            raise ChatbotError(f"--adapter-only needs a LoRA run; {self.label} trained every weight "
                               "(adapter.kind: full): publish without --adapter-only")
        self.folder = locate_base(cfg, self.info, self.label, download=True)
        self.tokenizer = check_tokenizer(self.folder, self.info, ckpt, self.label)
        self.files = base_weight_files(self.folder)
        self.shapes = base_weight_shapes(self.files)
        self.dtype = DTYPES[cfg.paths.publish.dtype]
        state = strip_prefixes(ckpt.model)
        if self.adapter["kind"] == "lora":
            self.pairs, self.full = lora_pairs(state, self.label), None
            self.scale = lora_scale(self.adapter)
        else:
            self.pairs, self.full, self.scale = {}, state, 1.0
        self._check_shapes()
        try:
            self.config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ChatbotError(f"config.json of the base at {self.folder} is not readable JSON; download it again") from None
        self.tok_files = tokenizer_files(self.folder)
        val = finite_number(ckpt.val_loss)
        self.step = ckpt.step
        self.val_loss = val if val is not None else finite_number(ckpt.best_val_loss)
        self.persona = _persona(cfg)
        self.tokenizer_hash = self.info.get("tokenizer_hash") or ckpt.tokenizer_hash

    def _check_shapes(self) -> None:
        have = {name: shape for name, _, shape in self.shapes}
        for name, (a, b) in self.pairs.items():
            shape = have.get(name)
            if shape is None or len(shape) != 2 or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] \
                    or (b.shape[0], a.shape[1]) != tuple(shape):
                raise ChatbotError(f"{self.label}: the adapter for {name[:80]} does not fit the base weights "
                                   "(another base?); retrain or publish another checkpoint")
        if self.full is not None:
            for name, shape in have.items():
                t = self.full.get(name)
                if t is None or tuple(t.shape) != tuple(shape):
                    raise ChatbotError(f"{self.label}: weight {name[:80]} is missing or has another shape than in "
                                       "the base; retrain or publish another checkpoint")

    # ---------------------------------------------------------------------------------------------- tensors
    def out_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return self.dtype if dtype.is_floating_point else dtype

    def merged_entries(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        return [(name, self.out_dtype(dtype), shape) for name, dtype, shape in self.shapes]

    def merged_tensors(self):
        """(name, merged tensor in the publish dtype), one at a time, in :meth:`merged_entries` order."""
        for name, t in iter_base_tensors(self.files):
            if self.full is not None:
                t = self.full[name]
            elif name in self.pairs:
                a, b = self.pairs[name]
                t = merge_lora(t, a, b, self.scale)
            yield name, t.to(self.out_dtype(t.dtype))

    def adapter_entries(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        out = []
        for name, (a, b) in sorted(self.pairs.items()):
            mod = name[: -len(".weight")]
            out += [(f"{mod}.lora_A.weight", torch.float32, tuple(a.shape)),
                    (f"{mod}.lora_B.weight", torch.float32, tuple(b.shape))]
        return out

    def adapter_tensors(self):
        for name, (a, b) in sorted(self.pairs.items()):
            mod = name[: -len(".weight")]
            yield f"{mod}.lora_A.weight", a.float()
            yield f"{mod}.lora_B.weight", b.float()

    def meta(self, weights: str) -> dict:
        base = {k: self.info.get(k) for k in ("id", "revision", "weight_hash", "tokenizer_hash")}
        base["adapter"] = {k: self.adapter.get(k) for k in ("kind", "r", "alpha", "dropout", "target_modules",
                                                             "quantize")}
        return {
            "weights": weights,
            "dtype": self.cfg.paths.publish.dtype if weights == "merged" else "float32",
            "config": self.config,
            "tokenizer_files": self.tok_files,
            "tokenizer_hash": self.tokenizer_hash,
            "persona": self.persona,
            "base": base,
            "step": self.step,
            "val_loss": self.val_loss,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def n_bytes(self, weights: str) -> int:
        entries = self.merged_entries() if weights == "merged" else self.adapter_entries()
        return sum(_numel(s) * torch.empty((), dtype=d).element_size() for _, d, s in entries)

    def n_params(self, weights: str) -> int:
        entries = self.merged_entries() if weights == "merged" else self.adapter_entries()
        return sum(_numel(s) for _, _, s in entries)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# ---------------------------------------------------------------------------------------------------- writing
def write_container(plan: BasePlan, target: Path, weights: str, key: str | None) -> dict:
    """Write the merged or adapter container to ``target`` (encrypted when ``key``); returns its metadata."""
    meta = plan.meta(weights)
    entries, tensors = ((plan.merged_entries(), plan.merged_tensors()) if weights == "merged"
                        else (plan.adapter_entries(), plan.adapter_tensors()))
    with open_sink(target, key) as sink:
        _stream(sink, entries, meta, tensors)
    return meta


def _stream(sink, entries, meta, tensors) -> None:
    writer = ContainerWriter(sink, entries, artifact_metadata(meta))
    for name, t in tensors:
        writer.add(name, t)
        del t  # one merged tensor alive at a time
    writer.done()


def base_model_info(plan: BasePlan, meta: dict, path: Path, encrypted: bool) -> dict:
    """model_info.json for a base-run artifact (numbers, hashes, the base id; no private text)."""
    weights = meta["weights"]
    return {
        "file": path.name,
        "format": HF_ARTIFACT_FORMAT,
        "weights": weights,
        "encrypted": encrypted,
        "encryption": "AES-256-GCM STREAM chunks, scrypt key derivation" if encrypted else None,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "parameters": plan.n_params(weights),
        "dtype": meta["dtype"],
        "architecture": (plan.config.get("architectures") or [plan.config.get("model_type")])[0],
        "base": meta["base"],
        "step": meta["step"],
        "val_loss": meta["val_loss"],
        "tokenizer_hash": meta["tokenizer_hash"],
        "created": meta["created"],
        "source": display_path(plan.cfg, plan.source),
    }


def publish_base(cfg: Config, ckpt: Checkpoint, source: Path, *, key: str | None, fmt: str, dry: bool,
                 adapter_only: bool) -> None:
    """The base-run branch of :func:`chatbot.artifact.publish.publish` (after the key and format checks)."""
    plan = BasePlan(cfg, ckpt, source, adapter_only=adapter_only)
    del ckpt
    weights = "adapter" if adapter_only else "merged"
    out_dir = cfg.path(cfg.paths.artifacts)
    n_params, n_bytes = plan.n_params(weights), plan.n_bytes(weights)
    what = "LoRA adapter" if adapter_only else "merged"
    summary = (f"{n_params / 1e6:.2f}M parameters ({what}, base {plan.info['id']}), "
               f"{plan.meta(weights)['dtype']}, step {plan.step}, "
               f"val_loss {plan.val_loss if plan.val_loss is None else round(plan.val_loss, 4)}")
    if fmt == "hf":
        from .hf_export import export_base_hf

        target = out_dir / HF_DIR
        if dry:
            print(f"would write {display_path(cfg, target)}/ (config.json, sharded *.safetensors ~{megabytes(n_bytes)}, tokenizer "
                  f"files) from {display_path(cfg, source)}: {summary}")
            return
        export_base_hf(plan, target)
        print(f"wrote {display_path(cfg, target)}/ from {display_path(cfg, source)}: {summary}")
        return
    target = out_dir / (ENC_NAME if key is not None else PT_NAME)
    info_path = out_dir / INFO_NAME
    if dry:
        how = "encrypted with CHATBOT_MODEL_KEY" if key is not None else "plaintext"
        print(f"would write {display_path(cfg, target)} (~{megabytes(n_bytes)}, {how}) and {display_path(cfg, info_path)} "
              f"from {display_path(cfg, source)}: {summary}")
        return
    meta = write_container(plan, target, weights, key)
    info = base_model_info(plan, meta, target, key is not None)
    atomic_write_json(info_path, info)
    print(f"wrote {display_path(cfg, target)} ({megabytes(info['bytes'])}, sha256 {info['sha256'][:16]}…) and "
          f"{display_path(cfg, info_path)} from {display_path(cfg, source)}: {summary}")
    if adapter_only:
        print(f"note: {target.name} loads only where the base {plan.info['id']} is present with the same weights")


def display_path(cfg: Config, path: Path) -> str:
    """How messages show a path: relative to the project root, else as given."""
    return str(relative_path(cfg.root, path) or path)
