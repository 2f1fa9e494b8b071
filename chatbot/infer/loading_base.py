"""Loading the models of runs fine-tuned from a pretrained base (the HF-architecture side of chatbot/infer/loading.py).

Three sources, one result (a ``transformers`` causal LM in eval mode + the base's tokenizer + persona):

* a merged artifact (chatbot/formats/hf_artifact.py container, plain or decrypted in memory): the model is built on the
  meta device and its parameters *become* views of the artifact buffer (``load_state_dict(assign=True)``), so the
  weights are in memory once;
* an adapter-only artifact: the locally present base (same weight hash, else one line), LoRA folded in;
* a checkpoint of a base run (``best``/``latest``): the same, with the adapter (or the full weights) from it.

The adapter is always merged into the weights before decoding: no peft wrapper in the decode loop.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ..config import Config
from ..device import DTYPES
from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint, strip_prefixes
from ..formats.hf_artifact import lora_pairs, lora_scale, merge_lora, read_container



def inference_dtype(device: torch.device, stored: torch.dtype | None = None) -> torch.dtype:
    """float32 on CPU/MPS (fp16/bf16 matmuls are slow or missing there), the stored dtype (or bf16) on CUDA."""
    if device.type != "cuda":
        return torch.float32
    return stored if stored in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16


def tokenizer_from_files(files: dict[str, str], config: dict, label: str):
    """The base tokenizer rebuilt from the text files an artifact carries (through a private temp folder: they are
    the base's public files, never chat text). config.json goes along: transformers picks the tokenizer class
    (which may rebuild parts of the pipeline) from the model type."""
    from ..base.load import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="chatbot-tok-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(config), encoding="utf-8")
        for name, text in files.items():
            if "/" in name or "\\" in name or name.startswith("."):
                raise ChatbotError(f"{label} names a strange tokenizer file; publish it again")
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        return load_tokenizer(tmp)


def _check_tok_hash(tok, want: str | None, label: str) -> None:
    from ..base import tokenizer_hash

    if want and tokenizer_hash(tok) != want:
        raise ChatbotError(f"{label} is inconsistent (tokenizer hash mismatch); publish it again")


def model_from_state(config_dict: dict, state: dict[str, torch.Tensor], label: str, device: torch.device,
                     dtype: torch.dtype):
    """A causal LM of ``config_dict``'s architecture whose parameters are the given tensors (no copy when dtype
    and device already match)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        config = CONFIG_MAPPING[config_dict["model_type"]].from_dict(dict(config_dict))
    except (KeyError, TypeError, ValueError):
        raise ChatbotError(f"{label}: this transformers version does not know its architecture "
                           f"{str(config_dict.get('model_type'))[:40]!r}; upgrade with `pip install -U transformers`") from None
    with init_empty_weights(include_buffers=False):  # parameters on meta, rotary buffers real
        model = AutoModelForCausalLM.from_config(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        first = (missing or result.unexpected_keys)[0]
        raise ChatbotError(f"{label}: its weights do not match its architecture (first difference: {first[:80]}); "
                           "publish it again")
    if tied:
        model.tie_weights()
    return _ready(model, device, dtype)


def _ready(model, device: torch.device, dtype: torch.dtype):
    if any(p.dtype != dtype for p in model.parameters() if p.is_floating_point()):
        model.to(dtype)
    model.to(device)
    model.config.use_cache = True
    return model.eval().requires_grad_(False)


def fold_adapter(model, state: dict, info: dict, label: str) -> None:
    """Add the run's trained weights to a loaded base, in place: LoRA ``W += alpha/r · B A`` or full weights."""
    state = strip_prefixes(state)
    params = dict(model.named_parameters())
    with torch.no_grad():
        if info["adapter"]["kind"] == "full":
            result = model.load_state_dict(state, strict=False)
            tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
            if [k for k in result.missing_keys if k not in tied] or result.unexpected_keys:
                raise ChatbotError(f"{label}: its weights do not fit the base model; retrain or publish again")
            return
        scale = lora_scale(info["adapter"])
        for name, (a, b) in lora_pairs(state, label).items():
            p = params.get(name)
            if p is None or p.dim() != 2 or tuple(p.shape) != (b.shape[0], a.shape[1]):
                raise ChatbotError(f"{label}: the adapter for {name[:80]} does not fit the base model; "
                                   "retrain or publish again")
            p.copy_(merge_lora(p, a.to(p.device), b.to(p.device), scale).to(p.dtype))


def base_model(cfg: Config, info: dict, state: dict, label: str, device: torch.device):
    """(model, tokenizer) = the locally present base named by ``info`` + the run's adapter folded in."""
    from ..base import load_base
    from ..base.locate import locate_base

    folder = locate_base(cfg, info, label, download=False)
    dtype = inference_dtype(device)
    model, tok = load_base(folder, device="cpu", dtype=dtype)
    _check_tok_hash(tok, info.get("tokenizer_hash"), label)
    fold_adapter(model, state, info, label)
    return _ready(model, device, dtype), tok


# --------------------------------------------------------------------------------------------------- sources
def from_container(cfg: Config, buf, label: str, device: torch.device) -> tuple[object, object, dict]:
    """(model, tokenizer, doc) from a decrypted / read container buffer."""
    from ..base import require_extra

    require_extra()
    doc, tensors = read_container(buf, label)
    weights = doc.get("weights")
    if weights == "merged":
        config = doc.get("config")
        if not isinstance(config, dict) or not isinstance(doc.get("tokenizer_files"), dict):
            raise ChatbotError(f"{label} is incomplete (no config or tokenizer); publish it again")
        tok = tokenizer_from_files(doc["tokenizer_files"], config, label)
        _check_tok_hash(tok, doc.get("tokenizer_hash"), label)
        stored = DTYPES.get(str(doc.get("dtype")), torch.float32)
        model = model_from_state(config, tensors, label, device, inference_dtype(device, stored))
        return model, tok, doc
    if weights == "adapter":
        info = doc.get("base")
        if not isinstance(info, dict) or not isinstance(info.get("adapter"), dict) or not info.get("weight_hash"):
            raise ChatbotError(f"{label} is incomplete (no base block); publish it again")
        model, tok = base_model(cfg, info, tensors, label, device)
        return model, tok, doc
    raise ChatbotError(f"{label} holds {str(weights)[:20]!r} weights, which this version cannot load; update the tool")


def from_checkpoint(cfg: Config, ckpt: Checkpoint, label: str, device: torch.device) -> tuple[object, object]:
    """(model, tokenizer) from a base run's checkpoint (adapter or full weights; formats.checkpoint checked them)."""
    from ..base.locate import check_base_block

    info = check_base_block(ckpt.base, label)
    return base_model(cfg, info, ckpt.model, label, device)
