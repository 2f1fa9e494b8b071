"""The base model a fine-tuned run was trained on: its recorded block (checkpoint / artifact) checked, and the
local folder holding exactly those weights (publish and inference both need it)."""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ChatbotError
from .extra import require_extra
from .hub import base_weight_hash, find_local, resolve_base


def check_base_block(info: object, label: str) -> dict:
    """A run's ``base`` block (id, revision, weight_hash, tokenizer_hash, adapter), checked for the fields publish
    and loading rely on; ``label`` names the file it came from."""
    adapter = info.get("adapter") if isinstance(info, dict) else None
    if (not isinstance(info, dict) or not isinstance(info.get("id"), str) or not info["id"]
            or not isinstance(info.get("weight_hash"), str) or not isinstance(adapter, dict)
            or adapter.get("kind") not in ("lora", "full")):
        raise ChatbotError(f"{label} has an incomplete base block (id, weight_hash, adapter); "
                           "retrain with `python -m chatbot.ops train`")
    if adapter["kind"] == "lora" and not (_positive(adapter.get("r")) and _positive(adapter.get("alpha"))):
        raise ChatbotError(f"{label} records no LoRA r/alpha; retrain with `python -m chatbot.ops train`")
    return info


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def locate_base(cfg: Config, info: dict, label: str, *, download: bool) -> Path:
    """The local folder of the base ``info`` names, whose weights must hash to ``info["weight_hash"]``.

    ``download`` False = only a folder or a copy already in the Hugging Face cache (an artifact is loaded
    offline); a missing or different base is one line.
    """
    require_extra()
    base_id, revision = info["id"], info.get("revision") or ""
    if download:
        folder = resolve_base(base_id, revision, root=cfg.root)
    else:
        folder = _local_base(cfg, base_id, revision, label)
    if base_weight_hash(folder) != info["weight_hash"]:
        raise ChatbotError(f"{label} was trained on other weights than the base {base_id} found at {folder} "
                           "(weight hash differs); restore that exact base (model.base_revision) or publish a "
                           "merged artifact")
    return folder


def _local_base(cfg: Config, base_id: str, revision: str, label: str) -> Path:
    folder, note = find_local(base_id, revision, root=cfg.root)
    if folder is None:
        raise ChatbotError(f"{label} needs its base model {base_id}, which is not present here ({note[:120]}); "
                           "put that base there (a folder, or the Hugging Face cache) or publish a merged artifact")
    return folder
