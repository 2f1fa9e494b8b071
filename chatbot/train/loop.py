"""The training loop: ``python -m chatbot.ops train`` (or ``torchrun --nproc_per_node N -m chatbot.ops train``).

nanoGPT-shaped: one function that sets everything up and one loop over optimizer steps. What makes it safe to
run for days and interrupt at will:

* the stop checks (STOP file, SIGINT/SIGTERM) happen only *between* optimizer steps; the step is finished, then
  ``latest.pt`` is written atomically, and the exit code is 3 (``EXIT_STOPPED``); a second Ctrl+C aborts at once
  (exit 130) and ``latest.pt`` stays the previous complete file;
* a checkpoint holds the model, optimizer, step (= schedule position), every RNG and the sampler position, so a
  resumed run is bit-identical on CPU to one that never stopped;
* the loss of an optimizer step is the mean over *all* its target tokens (summed over micro-batches and ranks,
  then divided by their global count), so gradient accumulation, an OOM micro-batch split, or a different number
  of ranks give the same gradient for the same windows.

The learning-rate schedule depends on ``lr_decay_steps`` only, never on ``max_steps``: raising ``max_steps`` on a
finished run just continues it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import base as train_base
from ..config import Config, TrainConfig, to_dict
from ..data.dataset import Split, WindowSampler, eval_starts, open_split, read_windows
from ..device import pick_device, pick_dtype
from ..errors import ChatbotError
from ..formats import processed
from ..lock import RunLock
from ..model import ModelArgs, Transformer
from ..tokens import PAD
from ..formats.checkpoint import Checkpoint
from .checkpoint import (check_compatible, clean_temp_files, config_changes, load_checkpoint, prune_snapshots,
                         rng_state, save_checkpoint, set_rng_state, snapshot_path, to_cpu)
from .dist import (Abort, Dist, StopSignals, all_ranks_ok, all_reduce, any_rank, destroy_process_group,
                         env_dist, gather_objects, init_process_group)
from .report import (append_metrics, load_metrics, peak_flops, progress_line, sample_replies,
                           write_loss_svg)

EXIT_DONE, EXIT_STOPPED, EXIT_ABORTED = 0, 3, 130


# ----------------------------------------------------------------------------------------- optimizer, schedule
def lr_at(step: int, o) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then decay to min_lr by lr_decay_steps."""
    if step < o.warmup_steps:
        return o.learning_rate * (step + 1) / (o.warmup_steps + 1)
    if o.lr_schedule == "constant":
        return o.learning_rate
    if step >= o.lr_decay_steps:
        return o.min_lr
    ratio = (step - o.warmup_steps) / max(1, o.lr_decay_steps - o.warmup_steps)
    if o.lr_schedule == "linear":
        return o.learning_rate - ratio * (o.learning_rate - o.min_lr)
    return o.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (o.learning_rate - o.min_lr)


def make_optimizer(model: torch.nn.Module, o, device: torch.device) -> torch.optim.Optimizer:
    """AdamW, weight decay on matrices (≥ 2-D: linears, embeddings) only; the fused kernel where available."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": o.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kwargs = dict(lr=o.learning_rate, betas=(o.beta1, o.beta2), eps=1e-8)
    if device.type in ("cuda", "cpu", "mps"):
        with contextlib.suppress(RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(groups, fused=True, **kwargs)
    return torch.optim.AdamW(groups, **kwargs)


def _with_local_flags(saved: dict, opt: torch.optim.Optimizer) -> dict:
    """A saved optimizer state whose implementation flags (fused, foreach, …) are this machine's choice, so a
    checkpoint from a CUDA box resumes on a CPU one and vice versa."""
    flags = ("fused", "foreach", "capturable", "differentiable")
    groups = [{**g, **{k: now[k] for k in flags if k in now}} for g, now in zip(saved["param_groups"],
                                                                                opt.param_groups)]
    return {**saved, "param_groups": groups}


def apply_hparams(opt: torch.optim.Optimizer, o) -> None:
    """Current YAML values win over those stored in a resumed optimizer state (announced by the caller)."""
    for g in opt.param_groups:
        g["betas"] = (o.beta1, o.beta2)
        if g["weight_decay"] != 0.0:
            g["weight_decay"] = o.weight_decay


# ------------------------------------------------------------------------------------------------- the loss
def window_loss(model, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, select: bool = True,
                autocast=None, device: torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Cross-entropy *summed* over the positions of weight 1, and the number of logits computed.

    With ``select`` only the weighted positions go through the vocabulary projection (``response_only`` data
    skips the context tokens' logits entirely); without it all logits are computed and multiplied by ``w`` (fixed
    shapes, for torch.compile). Either way a weight-0 position contributes exactly nothing to the gradient.
    The caller divides by the global number of weighted tokens of the optimizer step. Inputs may live on the CPU
    and are moved to ``device`` here, after the selection indices are computed (no GPU sync for them).
    """
    idx = None
    if select:
        flat = w.reshape(-1) > 0
        if not bool(flat.all()):
            idx = flat.nonzero().squeeze(1)
    if device is not None:
        x, y, w = _to(x, device), _to(y, device), _to(w, device)
        idx = _to(idx, device) if idx is not None else None
    with autocast if autocast is not None else contextlib.nullcontext():
        if idx is not None:
            logits = model(x, select=idx)
            return F.cross_entropy(logits.float(), y.reshape(-1).index_select(0, idx), reduction="sum"), len(idx)
        logits = model(x)
    ce = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="none")
    return (ce * w.reshape(-1).to(ce.dtype)).sum(), int(ce.shape[0])


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ------------------------------------------------------------------------------------------------- the run
@dataclass
class RunState:
    step: int = 0
    best_val_loss: float | None = None
    val_loss: float | None = None
    train_loss: float | None = None
    tokens_seen: int = 0
    records: list = field(default_factory=list)


def _say(d: Dist, *args) -> None:
    if d.master:
        print(*args, flush=True)


def _resume_command(cfg: Config) -> str:
    cmd = "python -m chatbot.ops train"
    default = (Path.cwd() / "configs").resolve()
    return cmd if cfg.config_dir == default else f"{cmd} --config-dir {cfg.config_dir}"


def train(cfg: Config, *, on_step: Callable[[int], None] | None = None) -> int:
    """Train or resume ``checkpoints/<run_name>``. Returns 0 (max_steps reached), 3 (stopped, resumable) or 130.

    ``on_step(step)`` is called after every optimizer step, before the stop checks (tests use it to drop a STOP
    file at an exact step).
    """
    d = env_dist()
    device = pick_device(cfg.train.runtime.device, local_rank=d.local_rank if d.enabled else None)
    cfg = _auto_size(cfg, device, d)
    threads = torch.get_num_threads()
    init_process_group(d, device)
    try:
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.train, d))
        with StopSignals(announce=d.master) as signals:
            code = _train(cfg, d, device, signals, on_step)
        # torchrun treats a non-zero exit as a crash (and may restart the workers): a graceful stop exits 0 there
        return EXIT_DONE if (code == EXIT_STOPPED and d.enabled) else code
    except Abort:
        print("aborted at once (second interrupt); latest.pt is the last complete checkpoint", file=sys.stderr,
              flush=True)
        return EXIT_ABORTED
    finally:
        torch.set_num_threads(threads)
        destroy_process_group()


def _auto_size(cfg: Config, device: torch.device, d: Dist) -> Config:
    """``model.size: auto`` and the other 0 = auto keys, filled in from the training token count (autosize.py)."""
    from dataclasses import replace

    from .autosize import describe, resolve, train_tokens

    n_train = train_tokens(cfg.processed_dir)
    if n_train is None:
        return cfg  # no data yet: _train reports that with its own message
    tc, chosen = resolve(cfg.train, n_train, device.type, cfg.run_dir, write=d.master)
    if chosen is not None:
        _say(d, describe(chosen, tc))
    return replace(cfg, train=tc)


def cpu_threads(tc: TrainConfig, d: Dist, n_embd: int | None = None) -> int:
    """Intra-op threads on CPU: the cores split between the local ranks, and a single thread for tiny models,
    whose matmuls are too small to amortise thread wake-ups (on a busy machine 2 threads can be 50× slower).
    ``OMP_NUM_THREADS`` set by the user wins."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world_size))) if d.enabled else 1
    cores = max(1, (os.cpu_count() or 1) // max(1, local))
    if tc.model.base and n_embd is None:
        return cores  # until the base is loaded and its width known (then this is asked again)
    work = tc.optimization.batch_size * tc.model.block_size * (n_embd or tc.model.n_embd)
    return 1 if work < (1 << 18) else cores


def _train(cfg: Config, d: Dist, device: torch.device, signals: StopSignals, on_step) -> int:
    tc: TrainConfig = cfg.train
    dtype = pick_dtype(tc.runtime.dtype, device)
    run_dir = cfg.run_dir
    pdir = cfg.processed_dir

    # ---- data and its contract
    data = processed.read(pdir)
    data.check_tokenizer()
    stats = data.stats
    from ..data.tokenizer import load_tokenizer, special_id

    tok_path, tok_hash = data.tokenizer_path, data.tokenizer_hash
    base = None  # a pretrained base (model.base): chatbot/train/base.py
    if tc.model.base:
        base = train_base.open_base(cfg, stats, device, dtype)
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads(tc, d, base.args.n_embd))
        tok, pad_id, args, vocab_size = base.layout, base.pad_id, base.args, int(stats["vocab_size"])
    else:
        if stats.get("base"):
            raise ChatbotError(f"the processed data was made for model.base {stats['base'].get('id')} but train.yaml "
                               f"trains from scratch (model.base: \"\"); set model.base back, or run "
                               f"`python -m chatbot.ops preprocess` to rebuild for a from-scratch model")
        tok = load_tokenizer(str(tok_path))
        vocab_size = int(stats["vocab_size"])
        if tok.get_vocab_size() > vocab_size:
            raise ChatbotError(f"the tokenizer has {tok.get_vocab_size()} tokens but stats.json says vocab_size "
                               f"{vocab_size}; run `python -m chatbot.ops preprocess --force`")
        pad_id = special_id(tok, PAD)
        try:
            args = ModelArgs.from_dict({**to_dict(tc.model), "vocab_size": vocab_size})
        except ValueError as exc:
            raise ChatbotError(f"train.yaml: {exc}") from None
    train_split = open_split(pdir, "train", stats["dtype"], vocab_size)
    val_split = open_split(pdir, "val", stats["dtype"], vocab_size)

    # ---- which checkpoint to continue
    latest = run_dir / "latest.pt"
    if tc.resume_path:
        resume = cfg.path(tc.resume_path)
        if not resume.is_file():
            raise ChatbotError(f"train.yaml resume_path {resume} does not exist; fix it or set resume_path: \"\"")
    elif tc.auto_resume and latest.is_file():
        resume = latest
    elif latest.is_file():
        raise ChatbotError(f"{latest} exists and auto_resume is false: set auto_resume: true to continue that run, "
                           f"or choose a new run_name (starting over would overwrite it)")
    else:
        resume = None
    init_from = None
    if resume is None and tc.init_from:
        init_from = cfg.path(tc.init_from)
        if not init_from.is_file():
            raise ChatbotError(f"train.yaml init_from {init_from} does not exist; point it at a checkpoint (e.g. "
                               f"checkpoints/<first run>/best.pt) or set init_from: \"\"")

    # ---- the run lock (rank 0 holds it for everyone)
    lock = RunLock(run_dir)
    lock_error: ChatbotError | None = None
    if d.master:
        try:
            lock.acquire()
        except ChatbotError as exc:
            lock_error = exc
    if not all_ranks_ok(lock_error is None, device):
        raise lock_error or ChatbotError("rank 0 could not take the run lock; see its message")
    try:
        return _run(cfg, d, device, dtype, signals, on_step, lock, stats, tok, tok_hash, pad_id, args,
                    train_split, val_split, resume, base=base, init_from=init_from)
    finally:
        lock.release()


def _run(cfg, d: Dist, device, dtype, signals, on_step, lock, stats, tok, tok_hash, pad_id, args,
         train_split: Split, val_split: Split, resume: Path | None, *, base=None, init_from: Path | None = None) -> int:
    tc = cfg.train
    o, lg = tc.optimization, tc.logging
    run_dir = cfg.run_dir
    stop_file = run_dir / tc.stop_file_name
    if d.master:
        if lock.took_over_stale:
            print(f"took over a stale run lock in {run_dir} (its trainer is gone)", flush=True)
        if clean_temp_files(run_dir):
            print("removed temp files left by an interrupted save", flush=True)
        if stop_file.exists():
            stop_file.unlink()
            print(f"removed a leftover {tc.stop_file_name} file (create it while training to stop)", flush=True)

    # ---- model (same init on every rank), optimizer, sampler
    seed = tc.runtime.seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    import random

    random.seed(seed)
    if base is not None:
        raw = train_base.build_model(base, tc)
    else:
        raw = Transformer(args)
        raw.to(device)
        raw.gradient_checkpointing = tc.runtime.gradient_checkpointing
    if init_from is not None:
        _init_weights_from(init_from, raw, args, tok_hash, base, d)
    opt = make_optimizer(raw, o, device)
    sampler = WindowSampler(train_split, seed)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    st = RunState()
    ck = None
    if resume is not None:
        ck = load_checkpoint(resume)
        notes = _load_weights(ck, resume, raw, args, tok_hash, base)
        try:
            opt.load_state_dict(_with_local_flags(ck.optimizer, opt))
        except (ValueError, KeyError, RuntimeError, TypeError):
            raise ChatbotError(f"{resume.name}: its model/optimizer state does not fit this model (damaged or from "
                               f"another version); resume from a snapshot or set a new run_name") from None
        apply_hparams(opt, o)
        if not sampler.load_state_dict(ck.sampler):
            notes.append("the training data changed since this checkpoint: the sampler starts a fresh epoch")
        if scaler is not None and ck.scaler:
            scaler.load_state_dict(ck.scaler)
        st.step = ck.step
        st.best_val_loss, st.val_loss = ck.best_val_loss, ck.val_loss
        st.train_loss, st.tokens_seen = ck.train_loss, ck.tokens_seen
        notes += [f"{c} (applied)" for c in config_changes(ck.train_config, to_dict(tc))]
        if ck.world_size != d.world_size:
            notes.append(f"world size {ck.world_size} → {d.world_size} (the data stream continues)")
        val = f"{st.val_loss:.4f}" if st.val_loss is not None else "-"
        _say(d, f"resuming {resume.name} at step {st.step} (val loss {val})")
        for n in notes:
            _say(d, f"  changed: {n}")
        _restore_rng(ck.rng, d, seed, st.step)
    elif d.enabled and d.rank > 0:
        torch.manual_seed(seed + 1000 * d.rank)  # distinct dropout masks per rank
    if d.master:
        st.records = load_metrics(run_dir / "metrics.jsonl", st.step)

    if st.step >= o.max_steps:
        _say(d, f"run '{tc.run_name}' is already at step {st.step} (max_steps {o.max_steps}); raise "
                f"optimization.max_steps in train.yaml to train further")
        return EXIT_DONE

    # ---- speed knobs
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    fwd = raw
    if tc.runtime.compile:
        _say(d, "compiling the model (torch.compile; the first steps are slow)")
        fwd = torch.compile(raw)
    model = fwd
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    select_ok = not tc.runtime.compile  # boolean selection has a data-dependent shape (bad for compile)

    B, A, T, W = o.batch_size, o.grad_accum_steps, args.block_size, d.world_size
    per_rank = B * A  # windows per rank per optimizer step
    micro = B
    fpt = raw.flops_per_token()
    head_flops = 6 * args.n_embd * args.vocab_size  # per token whose logits are skipped
    peak = peak_flops(device, dtype) if d.master else None
    if d.master:
        _say(d, f"training '{tc.run_name}' on {device} ({str(dtype).replace('torch.', '')}, {W} process"
                f"{'es' if W > 1 else ''}): {raw.num_params() / 1e6:.2f}M parameters (+ embeddings)"
                f"{_base_note(base, raw)}, "
                f"{train_split.n_tokens:,} train tokens in {train_split.n_windows:,} windows, "
                f"{val_split.n_tokens:,} val tokens; {W * per_rank} windows × {T} tokens per step")
        if val_split.n_windows == 0:
            print("warning: the validation split is empty; no validation loss and no best.pt", flush=True)

    # eval_iters batches per rank: the same windows for any (world size × batch size) of equal product
    val_starts = eval_starts(val_split, lg.eval_iters, B * W, seed)[d.rank :: W] if val_split.n_windows else None
    loss_mode = tc.objective.loss_mode

    def micro_loss(m, x, y, w) -> tuple[torch.Tensor, int]:
        return window_loss(m, x, y, w, select=select_ok, autocast=autocast, device=device)

    @torch.no_grad()
    def evaluate() -> float | None:
        if val_starts is None:
            return None
        fwd.eval()
        tot = torch.zeros(3, dtype=torch.float64, device=device)
        try:
            for i in range(0, len(val_starts), B):
                x, y, w = read_windows(val_split, val_starts[i : i + B], T, pad_id, loss_mode)
                s, _ = micro_loss(fwd, x, y, w)
                tot[0] += s.double()
                tot[1] += float(w.sum())
                if signals.requested:
                    tot[2] = 1.0
                    break
        finally:
            fwd.train()
        all_reduce(tot)
        if tot[2] > 0 or tot[1] == 0:
            return None
        return float(tot[0] / tot[1])

    def checkpoint() -> Checkpoint:
        """Collective (RNG states of all ranks); the result matters on rank 0 only."""
        states = gather_objects(rng_state(), d)
        rng = dict(states[0])
        rng["per_rank"] = [{"torch": s["torch"], "cuda": s["cuda"]} for s in states]
        weights = raw.state_dict() if base is None else train_base.trainable_state(raw, tc.adapter.kind)
        return Checkpoint(**to_cpu({
            "model": weights, "model_args": args.to_dict(), "optimizer": opt.state_dict(),
            "step": st.step, "best_val_loss": st.best_val_loss, "val_loss": st.val_loss,
            "train_loss": st.train_loss, "tokenizer_hash": tok_hash, "vocab_size": args.vocab_size, "rng": rng,
            "sampler": sampler.state_dict(), "train_config": to_dict(tc), "world_size": W,
            "tokens_seen": st.tokens_seen, "scaler": scaler.state_dict() if scaler is not None else None,
            "lr": lr_at(max(0, st.step - 1), o), "created": time.time(),
            **({"base": base.info} if base is not None else {}),
        }))

    probe = None
    if lg.eval_replies > 0 and d.master and val_split.n_windows:
        from ..eval.runner import TrainingProbe

        probe = TrainingProbe(cfg.processed_dir, stats, tok if base is None else base.tokenizer, cfg.gen,
                              cfg.paths.processed.preprocess.pii, lg.eval_replies,
                              cfg.paths.processed.preprocess.context_turns)

    # ---- the loop
    raw.train()
    oom_announced = False
    log_sum = torch.zeros((), dtype=torch.float64, device=device)
    log_count, log_logits, log_tokens, log_steps = 0.0, 0, 0, 0
    t_log = time.perf_counter()
    step_time = None  # seconds per step (moving average, evals excluded)
    steps_run = 0
    metrics_path, svg_path = run_dir / "metrics.jsonl", run_dir / "loss.svg"
    lr = lr_at(st.step, o)
    while st.step < o.max_steps:
        t0 = time.perf_counter()
        starts = sampler.take(W * per_rank)[d.rank * per_rank : (d.rank + 1) * per_rank]
        x_all, y_all, w_all = read_windows(train_split, starts, T, pad_id, loss_mode)
        count = float(w_all.sum())  # weighted tokens of this step, all ranks (no GPU sync for one process)
        if d.enabled:
            count = float(all_reduce(torch.tensor([count], dtype=torch.float64, device=device)).item())
        scale = W / max(count, 1.0)
        lr = lr_at(st.step, o)
        for g in opt.param_groups:
            g["lr"] = lr
        while True:
            try:
                chunks = range(0, per_rank, micro)
                step_sum = torch.zeros((), dtype=torch.float64, device=device)
                n_logits = 0
                for j, i in enumerate(chunks):
                    last = j == len(chunks) - 1
                    sync = contextlib.nullcontext() if (last or not d.enabled) else model.no_sync()
                    with sync:
                        s, n = micro_loss(model, x_all[i : i + micro], y_all[i : i + micro], w_all[i : i + micro])
                        loss = s * scale
                        (scaler.scale(loss) if scaler is not None else loss).backward()
                    step_sum += s.detach().double()
                    n_logits += n
                if scaler is not None:
                    scaler.unscale_(opt)
                if o.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), o.grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                opt.zero_grad(set_to_none=True)
                break
            except torch.cuda.OutOfMemoryError:
                opt.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if d.enabled or micro == 1:
                    raise ChatbotError(
                        f"CUDA out of memory at micro-batch {micro}; lower optimization.batch_size in train.yaml "
                        f"(and raise grad_accum_steps to keep the effective batch)") from None
                micro = max(1, micro // 2)
                accum = math.ceil(per_rank / micro)
                if not oom_announced:
                    _say(d, f"CUDA out of memory: continuing with micro-batch {micro} × {accum} accumulation steps "
                            f"(same {per_rank}-window effective batch)")
                    oom_announced = True
        st.step += 1
        st.tokens_seen += W * per_rank * T
        log_sum += step_sum
        log_count += count
        log_logits += n_logits
        log_tokens += W * per_rank * T
        log_steps += 1
        dt_step = time.perf_counter() - t0
        if step_time is None or steps_run == 1:  # the first step (warm-up, compile) does not predict the rest
            step_time = dt_step
        else:
            step_time = 0.9 * step_time + 0.1 * dt_step
        steps_run += 1
        if on_step is not None:
            on_step(st.step)

        # -- progress line
        if st.step % lg.log_interval == 0 or st.step == o.max_steps:
            total = float(all_reduce(log_sum.clone()).item())
            st.train_loss = total / max(log_count, 1.0)
            elapsed = max(time.perf_counter() - t_log, 1e-9)
            tok_s = log_tokens / elapsed
            flops = fpt * log_tokens - head_flops * max(0, log_tokens - log_logits * W)
            mfu = flops / elapsed / (peak * W) if peak else None
            next_eval = lg.eval_interval - st.step % lg.eval_interval
            _say(d, progress_line(st.step, o.max_steps, st.train_loss, st.val_loss, lr, tok_s, mfu,
                                  next_eval * (step_time or 0.0)))
            rec = {"kind": "train", "step": st.step, "max_steps": o.max_steps, "loss": st.train_loss, "lr": lr,
                   "tokens_per_s": tok_s, "mfu": mfu, "tokens_seen": st.tokens_seen, "time": time.time()}
            if d.master:
                append_metrics(metrics_path, rec)
                st.records.append(rec)
            log_sum.zero_()
            log_count, log_logits, log_tokens, log_steps = 0.0, 0, 0, 0
            t_log = time.perf_counter()

        stop = any_rank(signals.requested or stop_file.exists(), device)

        # -- eval, best.pt, loss curve, samples (skipped when stopping: answer the stop quickly)
        improved = False
        if not stop and (st.step % lg.eval_interval == 0 or st.step == o.max_steps):
            t_eval = time.perf_counter()
            v = evaluate()
            if v is not None:
                st.val_loss = v
                improved = st.best_val_loss is None or v < st.best_val_loss
                if improved:
                    st.best_val_loss = v
                if d.master:
                    rec = {"kind": "eval", "step": st.step, "val_loss": v, "best_val_loss": st.best_val_loss,
                           "time": time.time()}
                    append_metrics(metrics_path, rec)
                    st.records.append(rec)
                    write_loss_svg(svg_path, st.records, f"{tc.run_name}: loss")
                    print(f"eval step {st.step}: val loss {v:.4f}" + (" (best so far → best.pt)" if improved else
                          f" (best {st.best_val_loss:.4f})"), flush=True)
                    samples = sample_replies(raw if base is None else raw.causal_lm,
                                             tok if base is None else base.tokenizer, stats.get("persona"),
                                             lg.sample_prompts, cfg.gen, cfg.paths.processed.preprocess.pii)
                    for prompt, reply in samples:
                        print(f"  sample: {prompt} → {reply}", flush=True)
                    if probe is not None:
                        figures = probe(raw if base is None else raw.causal_lm, st.step)
                        if figures:
                            append_metrics(metrics_path, {"kind": "eval_replies", "step": st.step, **figures})
                            print(f"  replies: chrF {figures['reply_chrf']}, distinct-2 "
                                  f"{figures['reply_distinct_2']}, top-5 share {figures['reply_top5_share']} "
                                  f"({figures['reply_items']} validation turns)", flush=True)
            stop = any_rank(signals.requested or stop_file.exists(), device)
            t_log += time.perf_counter() - t_eval  # eval time is not training throughput

        # -- checkpoints
        periodic = st.step % lg.save_interval == 0
        if improved or periodic or stop or st.step == o.max_steps:
            ck_now = checkpoint()
            if d.master:
                targets: list[Path] = []
                if periodic or stop or st.step == o.max_steps:
                    targets.append(run_dir / "latest.pt")
                if improved:
                    targets.append(run_dir / "best.pt")
                if periodic and lg.keep_last_n_snapshots > 0:
                    targets.append(snapshot_path(run_dir, st.step))
                try:
                    save_checkpoint(ck_now, targets[0], tuple(targets[1:]))
                except OSError as exc:
                    raise ChatbotError(f"could not write {targets[0]} ({exc.strerror or exc}); free disk space and "
                                       f"rerun to resume from the previous latest.pt") from None
                if periodic and lg.keep_last_n_snapshots > 0:
                    prune_snapshots(run_dir, lg.keep_last_n_snapshots)
            del ck_now
        if stop:
            if d.master:
                with contextlib.suppress(FileNotFoundError):
                    stop_file.unlink()
                print(f"stopped at step {st.step}/{o.max_steps}; latest.pt saved in {run_dir}. "
                      f"Resume with: {_resume_command(cfg)}", flush=True)
            return EXIT_STOPPED
    best = f" (best val loss {st.best_val_loss:.4f})" if st.best_val_loss is not None else ""
    _say(d, f"reached max_steps {o.max_steps}; checkpoints in {run_dir}{best}")
    return EXIT_DONE


def _load_weights(ck: Checkpoint, path: Path, raw, args, tok_hash: str, base) -> list[str]:
    """Check a checkpoint against this run (one line when it cannot continue) and load its weights into ``raw``;
    returns notes on harmless changes."""
    if base is not None:
        notes = train_base.check_compatible(ck, base.info, path)
        train_base.load_trainable(raw, ck.model, base.info["adapter"]["kind"], path.name)
        return notes
    if ck.base or ck.model_args is None:
        raise ChatbotError(f"{path.name} is a fine-tune of model.base {(ck.base or {}).get('id')} but "
                           f"train.yaml trains from scratch; set model.base back, or a new run_name")
    notes = check_compatible(ck, args, tok_hash, path)
    try:
        raw.load_state_dict(ck.model)
    except (ValueError, KeyError, RuntimeError, TypeError):
        raise ChatbotError(f"{path.name}: its model state does not fit this model (damaged or from another "
                           f"version); resume from a snapshot or set a new run_name") from None
    return notes


def _init_weights_from(path: Path, raw, args, tok_hash: str, base, d: Dist) -> None:
    """``init_from``: a new run starts from another run's weights (step, optimizer and data position start fresh)."""
    ck = load_checkpoint(path)
    notes = _load_weights(ck, path, raw, args, tok_hash, base)
    _say(d, f"starting from the weights of {path} (its step {ck.step}); step, optimizer and data order "
            f"start fresh")
    for n in notes:
        _say(d, f"  changed: {n}")


def _base_note(base, raw) -> str:
    if base is None:
        return ""
    return f" of base {base.info['id']}, {raw.trainable_params():,} trainable ({base.info['adapter']['kind']})"


def _restore_rng(rng: dict | None, d: Dist, seed: int, step: int) -> None:
    """Put back this rank's generators; a rank the checkpoint did not have gets a fresh deterministic seed."""
    if not isinstance(rng, dict) or "torch" not in rng:
        return
    per_rank = rng.get("per_rank") or []
    state = dict(rng)
    if d.rank < len(per_rank):
        state.update(per_rank[d.rank])
        set_rng_state(state)
    else:
        set_rng_state(state)
        torch.manual_seed(seed + 1000 * d.rank + step)
