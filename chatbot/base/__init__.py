"""Fine-tuning a pretrained open model (``model.base`` in train.yaml): find it, load it, adapt it, lay out turns.

``hub``     resolve_base(base, revision) -> local folder (a folder as is, or a Hugging Face id downloaded to the
            HF cache); base_weight_hash(folder).
``load``    load_base(folder, device=, dtype=, quantize=) -> (model, tokenizer) after one-line checks;
            apply_adapter(model, adapter_cfg) (peft LoRA or full); tokenizer_hash(tokenizer).
``layout``  how chat turns become token ids for a pretrained tokenizer (shared by preprocess, train and inference).

Nothing here imports transformers/peft/huggingface_hub at module import time: the from-scratch path never needs
them, and :func:`require_extra` turns their absence into one line saying which command installs them.
"""

from __future__ import annotations

from ..errors import ChatbotError

INSTALL_HINT = 'pip install -e ".[base]"'


def require_extra(*, quantize: str = "none") -> None:
    """Raise one line when the optional ``[base]`` libraries (or bitsandbytes for 4-bit) are not installed."""
    missing = []
    for mod in ("transformers", "peft", "huggingface_hub", "safetensors"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ChatbotError(f"model.base needs the fine-tuning libraries ({', '.join(missing)} missing): "
                           f"run `{INSTALL_HINT}` in the project folder")
    if quantize == "4bit":
        try:
            __import__("bitsandbytes")
        except ImportError:
            raise ChatbotError('adapter.quantize: 4bit needs bitsandbytes (CUDA only): run '
                               '`pip install -e ".[qlora]"`, or set adapter.quantize: none') from None


from .hub import base_weight_hash, resolve_base  # noqa: E402
from .load import apply_adapter, load_base, tokenizer_hash  # noqa: E402

__all__ = ["INSTALL_HINT", "require_extra", "resolve_base", "base_weight_hash", "load_base", "apply_adapter",
           "tokenizer_hash"]
