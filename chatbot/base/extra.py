"""Whether the optional ``[base]`` libraries are installed, as one line saying which command installs them."""

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
