"""Process-level plumbing of the trainer: torchrun/DDP setup, CPU threads, cross-rank agreement, stop signals.

Under ``torchrun`` every rank runs the same ``train()``; these helpers keep them in lock-step without the loop
having to care whether it runs alone: every collective is a no-op for a single process.

Stopping: the first SIGINT/SIGTERM (Ctrl+Break = SIGBREAK on Windows too) only sets a flag that the loop checks
between optimizer steps (together with the STOP file); ranks OR their flags with one all-reduce, so all stop after
the same step. A second signal raises :class:`Abort` at once: whatever is being written is abandoned (atomic
writes keep the previous ``latest.pt``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import TrainConfig
from ..portable import signal_name, stop_signals


class Abort(KeyboardInterrupt):
    """Second Ctrl+C / SIGTERM: abort immediately."""


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def env_dist() -> Dist:
    """Rank layout from the torchrun environment (a plain ``python -m`` run is rank 0 of 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)


def cpu_threads(train_cfg: TrainConfig, ranks: Dist, n_embd: int | None = None) -> int:
    """Intra-op threads on CPU: the cores split between the local ranks, and a single thread for tiny models,
    whose matmuls are too small to amortise thread wake-ups (on a busy machine 2 threads can be 50× slower).
    ``OMP_NUM_THREADS`` set by the user wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(ranks.world_size))) if ranks.enabled else 1
    cores = max(1, (os.cpu_count() or 1) // max(1, local))
    if train_cfg.model.base and n_embd is None:
        return cores  # until the base is loaded and its width known (then this is asked again)
    work = train_cfg.optimization.batch_size * train_cfg.model.block_size * (n_embd or train_cfg.model.n_embd)
    return 1 if work < (1 << 18) else cores


def init_process_group(ranks: Dist, device: torch.device) -> None:
    """NCCL on CUDA, gloo otherwise."""
    if not ranks.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))


def destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on at least one (a single process: just ``flag``)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_ranks_ok(ok: bool, device: torch.device) -> bool:
    """Agreement before collective work: False everywhere if any rank failed (so none hangs waiting)."""
    return not any_rank(not ok, device)


def gather_objects(obj, ranks: Dist) -> list:
    """Every rank's ``obj`` (a list of one for a single process)."""
    if not ranks.enabled:
        return [obj]
    out = [None] * ranks.world_size
    dist.all_gather_object(out, obj)
    return out


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM/SIGBREAK (chatbot.portable.stop_signals) into a graceful-stop
    flag (first) and :class:`Abort` (second). On Windows Ctrl+C and Ctrl+Break arrive as SIGINT and SIGBREAK; the
    handler runs between bytecodes of the main thread, so the loop still stops only at a step boundary."""

    def __init__(self, announce: bool = True):
        self.requested = False
        self.announce = announce
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        name = signal_name(signum)
        if self.requested:
            raise Abort(name)
        self.requested = True
        if self.announce:
            print(f"\n{name}: stopping after the current step and saving latest.pt "
                  f"(press Ctrl+C / Ctrl+Break again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignals":
        for sig in stop_signals():
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, prev)
        self._previous.clear()
