"""Which device and dtype a run uses: one choice for training and inference (CUDA, then Apple MPS, then CPU)."""

from __future__ import annotations

import torch

from .errors import ChatbotError

# Config spelling -> torch dtype (runtime.dtype, paths.publish.dtype, the dtype stored in artifacts).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(spec: str, *, local_rank: int | None = None, key: str = "train.yaml runtime.device") -> torch.device:
    """``auto`` = CUDA, then Apple MPS, then CPU; else ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.

    Under torchrun (``local_rank`` given) each rank takes the GPU of its local rank and never MPS. ``key`` names the
    setting in the one-line errors.
    """
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        return torch.device("mps") if _mps_available() and local_rank is None else torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ChatbotError(f"{key} is {spec} but no CUDA GPU is visible; set {key.split()[-1]}: auto")
        if local_rank is not None:
            return torch.device("cuda", local_rank)
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise ChatbotError(f"{key}: unknown device {spec!r} (auto, cpu, cuda, cuda:N or mps)") from None
        if (dev.index or 0) >= torch.cuda.device_count():
            raise ChatbotError(f"{key} is {spec} but only {torch.cuda.device_count()} GPU(s) are visible")
        return dev
    if spec == "mps":
        if not _mps_available():
            raise ChatbotError(f"{key} is mps but Apple MPS is not available; set {key.split()[-1]}: auto")
        return torch.device("mps")
    if spec == "cpu":
        return torch.device("cpu")
    raise ChatbotError(f"{key}: unknown device {spec!r} (auto, cpu, cuda, cuda:N or mps)")


def pick_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 autocast on CUDA that supports it (fp16 + GradScaler otherwise), fp32 elsewhere."""
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = DTYPES[spec]
    if dtype == torch.float16 and device.type != "cuda":
        raise ChatbotError(f"runtime.dtype float16 needs a CUDA GPU (this run is on {device.type}); "
                           f"use float32 or bfloat16")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ChatbotError("runtime.dtype bfloat16 is not supported by this GPU; use float16 or auto")
    return dtype
