"""Load a base model + its tokenizer after checks that fail in one line before any work, and attach an adapter."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from ..errors import ChatbotError
from .hub import check_base_dir, count_parameters

_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
MEMORY_HEADROOM = 1.2  # weights × this must fit the free memory (activations of a LoRA step come on top)


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 hex of the tokenizer's serialized ``tokenizer.json`` (stats.json, checkpoints, artifacts)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return hashlib.sha256(backend.to_str().encode("utf-8")).hexdigest()


def load_tokenizer(path: str | Path) -> Any:
    """The base's fast (``tokenizers``-backed) tokenizer; one line when there is none or it lacks an EOS token."""
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # transformers raises many types for a broken or foreign tokenizer
        raise ChatbotError(f"cannot load the tokenizer of model.base {path.name} ({type(exc).__name__}); it needs "
                           f"tokenizer.json (a fast tokenizer) next to config.json") from None
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise ChatbotError(f"model.base {path.name} has no fast tokenizer (tokenizer.json); convert it with "
                           f"transformers first or choose another base")
    if tok.eos_token_id is None:
        raise ChatbotError(f"the tokenizer of model.base {path.name} has no end-of-sequence (eos) token, which ends "
                           f"every turn; choose another base")
    return tok


def check_tokenizer_fits(tokenizer: Any, config: Any, name: str) -> None:
    """The eos/bos ids the layout writes must be rows of the model's embedding (a tokenizer class may invent a
    default eos that the model never saw)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab = getattr(text_config, "vocab_size", None)
    for what, i in (("end-of-sequence (eos)", tokenizer.eos_token_id), ("begin-of-sequence (bos)", tokenizer.bos_token_id)):
        if i is not None and vocab is not None and not 0 <= i < vocab:
            raise ChatbotError(f"the {what} token of model.base {name}'s tokenizer is not in the model's vocabulary "
                               f"(id {i} >= {vocab}); the tokenizer does not belong to this model")


def load_config(path: str | Path) -> Any:
    """The base's transformers config; one line when transformers cannot build a causal LM from it."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    path = check_base_dir(Path(path))
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as exc:
        import transformers

        raise ChatbotError(f"transformers {transformers.__version__} cannot read config.json of model.base "
                           f"{path.name} ({type(exc).__name__}: an unknown architecture?); upgrade with "
                           f"`pip install -U transformers` or choose another base") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ChatbotError(f"model.base {path.name} is a {config.model_type!r} model, which transformers cannot load "
                           f"as a causal (chat) language model; choose a decoder model such as Qwen2.5-Instruct")
    return config


def weights_bytes(path: str | Path, dtype: torch.dtype, quantize: str) -> int:
    """Memory the weights will take once loaded (4-bit: ~0.55 byte per weight incl. scales and unquantized parts)."""
    n = count_parameters(path)
    return int(n * 0.55) if quantize == "4bit" else n * _BYTES.get(dtype, 4)


def free_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (None when unknown)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_quantize(quantize: str, device: torch.device) -> None:
    if quantize != "4bit":
        return
    if device.type != "cuda":
        raise ChatbotError(f"adapter.quantize: 4bit (QLoRA) runs on an NVIDIA GPU only, not on {device.type}; "
                           f"set adapter.quantize: none")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ChatbotError('adapter.quantize: 4bit needs bitsandbytes: run `pip install -e ".[qlora]"`, or set '
                           'adapter.quantize: none') from None


def load_base(path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              quantize: str = "none") -> tuple[Any, Any]:
    """(model, tokenizer) of a base folder, on ``device`` in ``dtype`` (4-bit NF4 for ``quantize="4bit"``).

    Checked first, each a one-line ChatbotError: the folder, the architecture, the tokenizer (fast, with eos),
    4-bit without CUDA/bitsandbytes, and whether the weights fit the free memory of the device.
    """
    from .extra import require_extra

    require_extra()  # bitsandbytes is checked with the device by check_quantize
    path = Path(path)
    device = torch.device(device)
    config = load_config(path)
    check_quantize(quantize, device)
    tokenizer = load_tokenizer(path)
    check_tokenizer_fits(tokenizer, config, path.name)
    need, free = weights_bytes(path, dtype, quantize), free_memory(device)
    if free is not None and need * MEMORY_HEADROOM > free:
        raise ChatbotError(f"model.base {path.name} needs about {need / 2**30:.1f} GiB for its weights but only "
                           f"{free / 2**30:.1f} GiB is free on {device}; choose a smaller base, adapter.quantize: "
                           f"4bit (CUDA) or free memory")
    model = _from_pretrained(path, config, device, dtype, quantize)
    model.config.use_cache = False  # training: no KV cache (inference turns it back on)
    return model, tokenizer


def _from_pretrained(path: Path, config: Any, device: torch.device, dtype: torch.dtype, quantize: str) -> Any:
    import transformers
    from transformers import AutoModelForCausalLM

    major = int(transformers.__version__.split(".")[0])
    kwargs: dict[str, Any] = {"config": config, ("dtype" if major >= 5 else "torch_dtype"): dtype}
    if quantize == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
        kwargs["device_map"] = {"": device.index or 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ChatbotError(f"cannot load the weights of model.base {path.name} ({type(exc).__name__}); the folder "
                           f"may be incomplete: delete it (or its Hugging Face cache entry) and download again") from None
    if quantize != "4bit":
        model.to(device)
    return model


def linear_names(model: Any) -> set[str]:
    """Last name component of every linear layer (what LoRA target_modules match)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt"):
            names.add(name.rsplit(".", 1)[-1])
    return names


def apply_adapter(model: Any, adapter: Any, *, gradient_checkpointing: bool = False) -> Any:
    """Make ``model`` trainable as ``adapter`` (AdapterConfig) says: a peft LoRA model, or every weight (full).

    LoRA weights are initialised from torch's global RNG (seed it first for reproducible runs).
    """
    if gradient_checkpointing:  # transformers 5 renamed it; 4.x only has the old name
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if adapter.kind == "full":
        if adapter.quantize != "none":
            raise ChatbotError("adapter.quantize: 4bit works with adapter.kind: lora only (a 4-bit base cannot be "
                               "trained in full)")
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    have = linear_names(model)
    missing = [m for m in adapter.target_modules if m not in have]
    if not adapter.target_modules or missing:
        raise ChatbotError(f"adapter.target_modules {missing or '[]'} match no layer of this base; its linear layers "
                           f"are: {', '.join(sorted(have))}")
    if adapter.quantize == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    config = LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                        target_modules=list(adapter.target_modules), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)
