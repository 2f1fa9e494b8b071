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

from .extra import INSTALL_HINT, require_extra
from .hub import base_weight_hash, resolve_base
from .load import apply_adapter, load_base, tokenizer_hash

__all__ = ["INSTALL_HINT", "require_extra", "resolve_base", "base_weight_hash", "load_base", "apply_adapter",
           "tokenizer_hash"]
