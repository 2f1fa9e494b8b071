"""Process-level plumbing of the trainer: torchrun/DDP setup, cross-rank agreement, and stop signals.

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


def init_process_group(d: Dist, device: torch.device) -> None:
    """NCCL on CUDA, gloo otherwise."""
    if not d.enabled or dist.is_initialized():
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


def gather_objects(obj, d: Dist) -> list:
    """Every rank's ``obj`` (a list of one for a single process)."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, d: Dist):
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


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
