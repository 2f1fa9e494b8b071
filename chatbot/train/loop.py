"""The training loop: ``python -m chatbot.ops train`` (or ``torchrun --nproc_per_node N -m chatbot.ops train``).

nanoGPT-shaped: :func:`chatbot.train.state.setup` builds a :class:`TrainState`, then :func:`fit` runs optimizer
steps (:func:`train_step`), with :func:`log_progress`, :func:`evaluate` and :func:`save` in between. What makes it
safe to run for days and interrupt at will:

* the stop checks (STOP file, SIGINT/SIGTERM) happen only *between* optimizer steps; the step is finished, then
  ``latest.pt`` is written atomically, and the exit code is 3 (``EXIT_STOPPED``); a second Ctrl+C aborts at once
  (exit 130) and ``latest.pt`` stays the previous complete file;
* a checkpoint holds the model, optimizer, step (= schedule position), every RNG and the sampler position, so a
  resumed run is bit-identical on CPU to one that never stopped;
* the loss of an optimizer step is the mean over *all* its target tokens (summed over micro-batches and ranks,
  then divided by their global count), so gradient accumulation, an OOM micro-batch split, or a different number
  of ranks give the same gradient for the same windows.

The learning-rate schedule depends on ``lr_decay_steps`` only, never on ``max_steps`` (chatbot/train/optim.py).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from . import base as train_base
from ..config import Config
from ..data.dataset import read_windows
from ..device import pick_device, pick_dtype
from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint
from .checkpoint import checkpoint_payload, prune_snapshots, rng_of_all_ranks, save_checkpoint, snapshot_path
from .dist import (Abort, Dist, StopSignals, all_reduce, any_rank, cpu_threads, destroy_process_group, env_dist,
                   init_process_group)
from .optim import lr_at, window_loss
from .report import append_metrics, progress_line, sample_replies, write_loss_svg
from .state import Runtime, TrainState, setup

__all__ = ["EXIT_ABORTED", "EXIT_DONE", "EXIT_STOPPED", "cpu_threads", "evaluate", "fit", "log_progress", "lr_at",
           "save", "train", "train_step", "window_loss"]

EXIT_DONE, EXIT_STOPPED, EXIT_ABORTED = 0, 3, 130


def train(cfg: Config, *, on_step: Callable[[int], None] | None = None) -> int:
    """Train or resume ``checkpoints/<run_name>``. Returns 0 (max_steps reached), 3 (stopped, resumable) or 130.

    ``on_step(step)`` is called after every optimizer step, before the stop checks (tests use it to drop a STOP
    file at an exact step).
    """
    ranks = env_dist()
    device = pick_device(cfg.train.runtime.device, local_rank=ranks.local_rank if ranks.enabled else None)
    cfg = _auto_size(cfg, device, ranks)
    threads = torch.get_num_threads()
    init_process_group(ranks, device)
    try:
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.train, ranks))
        with StopSignals(announce=ranks.master) as signals:
            runtime = Runtime(ranks, device, pick_dtype(cfg.train.runtime.dtype, device), signals)
            code = _train(cfg, runtime, on_step)
        # torchrun treats a non-zero exit as a crash (and may restart the workers): a graceful stop exits 0 there
        return EXIT_DONE if (code == EXIT_STOPPED and ranks.enabled) else code
    except Abort:
        print("aborted at once (second interrupt); latest.pt is the last complete checkpoint", file=sys.stderr,
              flush=True)
        return EXIT_ABORTED
    finally:
        torch.set_num_threads(threads)
        destroy_process_group()


def _auto_size(cfg: Config, device: torch.device, ranks: Dist) -> Config:
    """``model.size: auto`` and the other 0 = auto keys, filled in from the training token count (autosize.py)."""
    from .autosize import describe, resolve, train_tokens

    n_train = train_tokens(cfg.processed_dir)
    if n_train is None:
        return cfg  # no data yet: setup reports that with its own message
    train_cfg, chosen = resolve(cfg.train, n_train, device.type, cfg.run_dir, write=ranks.master)
    if chosen is not None and ranks.master:
        print(describe(chosen, train_cfg), flush=True)
    return replace(cfg, train=train_cfg)


def _train(cfg: Config, runtime: Runtime, on_step: Callable[[int], None] | None) -> int:
    state = setup(cfg, runtime)
    try:
        if state.finished:
            runtime.say(f"run '{cfg.train.run_name}' is already at step {state.progress.step} (max_steps "
                        f"{cfg.train.optimization.max_steps}); raise optimization.max_steps in train.yaml to train "
                        f"further")
            return EXIT_DONE
        return fit(state, on_step)
    finally:
        state.lock.release()


# ------------------------------------------------------------------------------------------------- the loop
@dataclass
class LogWindow:
    """What happened since the last progress line (tokens/s and MFU are measured over it, evals excluded)."""

    loss_sum: torch.Tensor  # summed target-token loss on this rank (stays on the device: no sync per step)
    weighted_tokens: float = 0.0  # target tokens of all ranks
    logits: int = 0  # logits computed on this rank
    tokens: int = 0  # tokens of all ranks
    started: float = field(default_factory=time.perf_counter)

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.weighted_tokens, self.logits, self.tokens = 0.0, 0, 0
        self.started = time.perf_counter()


@dataclass
class StepTimer:
    """Seconds per optimizer step, a moving average over the steps this process ran (for the eval ETA)."""

    seconds: float | None = None
    steps: int = 0

    def add(self, seconds: float) -> None:
        if self.seconds is None or self.steps == 1:  # the first step (warm-up, compile) does not predict the rest
            self.seconds = seconds
        else:
            self.seconds = 0.9 * self.seconds + 0.1 * seconds
        self.steps += 1


@dataclass
class StepResult:
    loss_sum: torch.Tensor  # summed loss of this rank's windows (float64, on the device)
    weighted_tokens: float  # target tokens of the step over all ranks
    logits: int  # logits this rank computed


def fit(state: TrainState, on_step: Callable[[int], None] | None = None) -> int:
    """Optimizer steps until max_steps (EXIT_DONE) or a stop request (EXIT_STOPPED, after saving latest.pt)."""
    progress, logging = state.progress, state.cfg.train.logging
    max_steps = state.cfg.train.optimization.max_steps
    state.model.train()
    window = LogWindow(torch.zeros((), dtype=torch.float64, device=state.runtime.device))
    timer = StepTimer()
    while progress.step < max_steps:
        started = time.perf_counter()
        result = train_step(state)
        progress.step += 1
        progress.tokens_seen += state.tokens_per_step
        window.loss_sum += result.loss_sum
        window.weighted_tokens += result.weighted_tokens
        window.logits += result.logits
        window.tokens += state.tokens_per_step
        timer.add(time.perf_counter() - started)
        if on_step is not None:
            on_step(progress.step)
        last = progress.step == max_steps
        if progress.step % logging.log_interval == 0 or last:
            log_progress(state, window, timer)
        stop = stop_requested(state)
        improved = False
        if not stop and (progress.step % logging.eval_interval == 0 or last):  # skipped when stopping: answer fast
            eval_started = time.perf_counter()
            improved = evaluate_and_report(state)
            stop = stop_requested(state)
            window.started += time.perf_counter() - eval_started  # eval time is not training throughput
        save(state, improved=improved, stop=stop)
        if stop:
            if state.runtime.ranks.master:
                with contextlib.suppress(FileNotFoundError):
                    state.stop_file.unlink()
                print(f"stopped at step {progress.step}/{max_steps}; latest.pt saved in {state.run_dir}. "
                      f"Resume with: {_resume_command(state.cfg)}", flush=True)
            return EXIT_STOPPED
    best = f" (best val loss {progress.best_val_loss:.4f})" if progress.best_val_loss is not None else ""
    state.runtime.say(f"reached max_steps {max_steps}; checkpoints in {state.run_dir}{best}")
    return EXIT_DONE


def stop_requested(state: TrainState) -> bool:
    """A signal or the STOP file on any rank (collective: every rank asks at the same point)."""
    return any_rank(state.runtime.signals.requested or state.stop_file.exists(), state.runtime.device)


def _resume_command(cfg: Config) -> str:
    cmd = "python -m chatbot.ops train"
    default = (Path.cwd() / "configs").resolve()
    return cmd if cfg.config_dir == default else f"{cmd} --config-dir {cfg.config_dir}"


# ------------------------------------------------------------------------------------------- one optimizer step
def train_step(state: TrainState) -> StepResult:
    """One optimizer step on this rank's share of the next windows; a CUDA out-of-memory error halves the
    micro-batch and retries the same windows (the effective batch, hence the result, does not change)."""
    runtime, optimization = state.runtime, state.cfg.train.optimization
    ranks, per_rank = runtime.ranks, state.windows_per_rank
    starts = state.sampler.take(ranks.world_size * per_rank)[ranks.rank * per_rank : (ranks.rank + 1) * per_rank]
    x, y, w = read_windows(state.data.train, starts, state.data.args.block_size, state.data.pad_id,
                           state.cfg.train.objective.loss_mode)
    count = float(w.sum())  # weighted tokens of this step, all ranks (no GPU sync for one process)
    if ranks.enabled:
        count = float(all_reduce(torch.tensor([count], dtype=torch.float64, device=runtime.device)).item())
    scale = ranks.world_size / max(count, 1.0)
    lr = lr_at(state.progress.step, optimization)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    while True:
        try:
            loss_sum, logits = _accumulate_gradients(state, x, y, w, scale)
            _apply_gradients(state)
            return StepResult(loss_sum, count, logits)
        except torch.cuda.OutOfMemoryError:
            state.optimizer.zero_grad(set_to_none=True)
            _halve_micro_batch(state)


def _accumulate_gradients(state: TrainState, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                          scale: float) -> tuple[torch.Tensor, int]:
    """Forward and backward over the micro-batches; DDP averages gradients on the last one only."""
    runtime, micro = state.runtime, state.micro_batch
    chunks = range(0, state.windows_per_rank, micro)
    loss_sum = torch.zeros((), dtype=torch.float64, device=runtime.device)
    logits = 0
    for j, i in enumerate(chunks):
        last = j == len(chunks) - 1
        sync = contextlib.nullcontext() if (last or not runtime.ranks.enabled) else state.step_model.no_sync()
        with sync:
            part, n = window_loss(state.step_model, x[i : i + micro], y[i : i + micro], w[i : i + micro],
                                  select=state.select_targets, autocast=state.autocast, device=runtime.device)
            state.scaler.scale(part * scale).backward()
        loss_sum += part.detach().double()
        logits += n
    return loss_sum, logits


def _apply_gradients(state: TrainState) -> None:
    """Unscale (float16), clip, step, zero: the disabled scaler of float32 / bfloat16 passes straight through."""
    state.scaler.unscale_(state.optimizer)
    grad_clip = state.cfg.train.optimization.grad_clip
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)


def _halve_micro_batch(state: TrainState) -> None:
    if state.runtime.device.type == "cuda":
        torch.cuda.empty_cache()
    if state.runtime.ranks.enabled or state.micro_batch == 1:
        raise ChatbotError(
            f"CUDA out of memory at micro-batch {state.micro_batch}; lower optimization.batch_size in train.yaml "
            f"(and raise grad_accum_steps to keep the effective batch)") from None
    state.micro_batch = max(1, state.micro_batch // 2)
    if not state.oom_announced:
        accum = math.ceil(state.windows_per_rank / state.micro_batch)
        state.runtime.say(f"CUDA out of memory: continuing with micro-batch {state.micro_batch} × {accum} "
                          f"accumulation steps (same {state.windows_per_rank}-window effective batch)")
        state.oom_announced = True


# ------------------------------------------------------------------------------------------------ reporting
def log_progress(state: TrainState, window: LogWindow, timer: StepTimer) -> None:
    """The progress line and a ``train`` record in metrics.jsonl (collective: the loss is summed over ranks)."""
    progress = state.progress
    max_steps, logging = state.cfg.train.optimization.max_steps, state.cfg.train.logging
    total = float(all_reduce(window.loss_sum.clone()).item())
    progress.train_loss = total / max(window.weighted_tokens, 1.0)
    elapsed = max(time.perf_counter() - window.started, 1e-9)
    tok_s = window.tokens / elapsed
    mfu = _mfu(state, window, elapsed)
    lr = lr_at(progress.step - 1, state.cfg.train.optimization)  # the rate of the step just taken
    next_eval = logging.eval_interval - progress.step % logging.eval_interval
    state.runtime.say(progress_line(progress.step, max_steps, progress.train_loss, progress.val_loss, lr, tok_s, mfu,
                                    next_eval * (timer.seconds or 0.0)))
    if state.runtime.ranks.master:
        _record(state, {"kind": "train", "step": progress.step, "max_steps": max_steps, "loss": progress.train_loss,
                        "lr": lr, "tokens_per_s": tok_s, "mfu": mfu, "tokens_seen": progress.tokens_seen,
                        "time": time.time()})
    window.reset()


def _mfu(state: TrainState, window: LogWindow, elapsed: float) -> float | None:
    """Model FLOPs utilisation; the vocabulary projections skipped for weight-0 positions are not counted."""
    if not state.peak_flops:
        return None
    world, args = state.runtime.ranks.world_size, state.data.args
    head_flops = 6 * args.n_embd * args.vocab_size  # per token whose logits are skipped
    flops = (state.flops_per_token * window.tokens
             - head_flops * max(0, window.tokens - window.logits * world))
    return flops / elapsed / (state.peak_flops * world)


def _record(state: TrainState, record: dict) -> None:
    """Append to metrics.jsonl and to the in-memory history the loss curve is drawn from (rank 0)."""
    append_metrics(state.run_dir / "metrics.jsonl", record)
    state.records.append(record)


@torch.no_grad()
def evaluate(state: TrainState) -> float | None:
    """Mean validation loss over the fixed validation windows of all ranks; None without validation data or
    when a stop was requested meanwhile (collective)."""
    if state.val_starts is None:
        return None
    runtime, data = state.runtime, state.data
    batch = state.cfg.train.optimization.batch_size
    state.eval_model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=runtime.device)  # loss sum, weighted tokens, stopped
    try:
        for i in range(0, len(state.val_starts), batch):
            x, y, w = read_windows(data.val, state.val_starts[i : i + batch], data.args.block_size, data.pad_id,
                                   state.cfg.train.objective.loss_mode)
            part, _ = window_loss(state.eval_model, x, y, w, select=state.select_targets, autocast=state.autocast,
                                  device=runtime.device)
            totals[0] += part.double()
            totals[1] += float(w.sum())
            if runtime.signals.requested:
                totals[2] = 1.0
                break
    finally:
        state.eval_model.train()
    all_reduce(totals)
    if totals[2] > 0 or totals[1] == 0:
        return None
    return float(totals[0] / totals[1])


def evaluate_and_report(state: TrainState) -> bool:
    """Evaluate; on rank 0 record it, redraw loss.svg, print the line and sample replies, run the probe.
    Returns whether the validation loss is the best so far (best.pt is then written)."""
    progress = state.progress
    val_loss = evaluate(state)
    if val_loss is None:
        return False
    progress.val_loss = val_loss
    improved = progress.best_val_loss is None or val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss = val_loss
    if state.runtime.ranks.master:
        _record(state, {"kind": "eval", "step": progress.step, "val_loss": val_loss,
                        "best_val_loss": progress.best_val_loss, "time": time.time()})
        write_loss_svg(state.run_dir / "loss.svg", state.records, f"{state.cfg.train.run_name}: loss")
        print(f"eval step {progress.step}: val loss {val_loss:.4f}" + (" (best so far → best.pt)" if improved else
              f" (best {progress.best_val_loss:.4f})"), flush=True)
        show_samples(state)
    return improved


def show_samples(state: TrainState) -> None:
    """Greedy replies to logging.sample_prompts (through chat's Responder), and the reply metrics of the probe when
    it is on (rank 0)."""
    data, logging = state.data, state.cfg.train.logging
    persona = data.stats.get("persona")
    if data.base is None:
        model, tokenizer = state.model, data.tokenizer
    else:  # the causal LM inside the loss wrapper, with the base's own tokenizer (data.tokenizer is its layout)
        model, tokenizer = state.model.causal_lm, data.base.tokenizer
    samples = sample_replies(model, tokenizer, persona, logging.sample_prompts, state.cfg.gen,
                             state.cfg.paths.processed.preprocess.pii)
    for prompt, reply in samples:
        print(f"  sample: {prompt} → {reply}", flush=True)
    if state.probe is None:
        return
    figures = state.probe(state.model if data.base is None else state.model.causal_lm, state.progress.step)
    if figures:
        append_metrics(state.run_dir / "metrics.jsonl", {"kind": "eval_replies", "step": state.progress.step,
                                                          **figures})
        print(f"  replies: chrF {figures['reply_chrf']}, distinct-2 {figures['reply_distinct_2']}, top-5 share "
              f"{figures['reply_top5_share']} ({figures['reply_items']} validation turns)", flush=True)


# ------------------------------------------------------------------------------------------------ checkpoints
def save(state: TrainState, *, improved: bool, stop: bool) -> None:
    """latest.pt (every save_interval, on a stop and at the end), best.pt (better validation loss) and a
    snapshot (every save_interval); one file written, the others linked to it. Collective (RNG of all ranks)."""
    progress, logging = state.progress, state.cfg.train.logging
    periodic = progress.step % logging.save_interval == 0
    final = progress.step == state.cfg.train.optimization.max_steps
    if not (improved or periodic or stop or final):
        return
    payload = _checkpoint(state)
    if not state.runtime.ranks.master:
        return
    targets: list[Path] = []
    if periodic or stop or final:
        targets.append(state.run_dir / "latest.pt")
    if improved:
        targets.append(state.run_dir / "best.pt")
    snapshot = periodic and logging.keep_last_n_snapshots > 0
    if snapshot:
        targets.append(snapshot_path(state.run_dir, progress.step))
    try:
        save_checkpoint(payload, targets[0], tuple(targets[1:]))
    except OSError as exc:
        raise ChatbotError(f"could not write {targets[0]} ({exc.strerror or exc}); free disk space and "
                           f"rerun to resume from the previous latest.pt") from None
    if snapshot:
        prune_snapshots(state.run_dir, logging.keep_last_n_snapshots)


def _checkpoint(state: TrainState) -> Checkpoint:
    """The checkpoint of this moment (collective; the result matters on rank 0 only)."""
    base, train_cfg = state.data.base, state.cfg.train
    rng = rng_of_all_ranks(state.runtime.ranks)
    weights = (state.model.state_dict() if base is None
               else train_base.trainable_state(state.model, train_cfg.adapter.kind))
    return checkpoint_payload(
        weights=weights, model_args=state.data.args.to_dict(), optimizer=state.optimizer.state_dict(),
        sampler=state.sampler.state_dict(), scaler=state.scaler.state_dict() if state.scaler.is_enabled() else None,
        rng=rng, progress=state.progress, tokenizer_hash=state.data.tokenizer_hash,
        vocab_size=state.data.args.vocab_size, train_config=train_cfg, world_size=state.runtime.ranks.world_size,
        lr=lr_at(max(0, state.progress.step - 1), train_cfg.optimization), base=None if base is None else base.info)
