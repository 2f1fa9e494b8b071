"""Everything a training run holds, and :func:`setup`, which builds it (the loop itself is chatbot/train/loop.py).

``setup`` checks the processed data against its contract, chooses the checkpoint to continue (or the weights to
start from), takes the run lock, builds the model, optimizer, sampler and scaler with the same seed on every rank,
puts a resumed run back exactly where it stopped, and prepares the compute (torch.compile, DDP, autocast). With
``model.base`` set the model is a pretrained base behind chatbot/train/base.py's :class:`LossModel`; the rest of
the run is the same as from scratch.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import base as train_base
from ..config import Config, to_dict
from ..data.dataset import Split, WindowSampler, eval_starts, open_split
from ..errors import ChatbotError
from ..formats.checkpoint import Checkpoint
from ..formats import processed
from ..lock import RunLock
from ..model import ModelArgs, Transformer
from ..tokens import PAD
from .checkpoint import (Progress, check_compatible, clean_temp_files, config_changes, load_checkpoint,
                         restore_rng)
from .dist import Dist, StopSignals, all_ranks_ok, cpu_threads
from .optim import apply_hparams, make_optimizer, with_local_flags
from .report import load_metrics, peak_flops, repair_metrics


@dataclass
class Runtime:
    """Where the run executes: the rank layout, device, compute dtype and the stop-signal flag."""

    ranks: Dist
    device: torch.device
    dtype: torch.dtype
    signals: StopSignals

    def say(self, *args) -> None:
        """Print on rank 0 only (every rank runs the same code)."""
        if self.ranks.master:
            print(*args, flush=True)


@dataclass
class RunData:
    """The processed data of the run and what follows from it."""

    stats: dict
    tokenizer: Any  # what sample replies encode with: a tokenizers.Tokenizer, or the base's BaseLayout
    tokenizer_hash: str
    pad_id: int
    args: Any  # ModelArgs (from scratch) or train_base.BaseArgs
    train: Split
    val: Split
    base: train_base.BaseRun | None = None  # the pretrained base (model.base), else None


@dataclass
class TrainState:
    """One training run: set up by :func:`setup`, advanced by chatbot/train/loop.py."""

    cfg: Config
    runtime: Runtime
    data: RunData
    lock: RunLock
    model: torch.nn.Module  # the plain module: weights, checkpoints, sample replies
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler  # enabled for float16 only
    sampler: WindowSampler
    progress: Progress = field(default_factory=Progress)
    records: list[dict] = field(default_factory=list)  # metrics.jsonl so far (rank 0): the loss curve
    eval_model: torch.nn.Module | None = None  # ``model``, compiled when runtime.compile
    step_model: torch.nn.Module | None = None  # ``eval_model`` under DDP when several ranks train
    autocast: Any = contextlib.nullcontext()
    select_targets: bool = True  # only the weighted positions' logits (off for torch.compile: data-dependent shape)
    micro_batch: int = 0  # windows per forward/backward; halved after a CUDA out-of-memory
    oom_announced: bool = False
    val_starts: np.ndarray | None = None  # this rank's validation windows (the same at every eval)
    peak_flops: float | None = None  # for the MFU figure (rank 0)
    flops_per_token: float = 0.0  # of the model (6N + attention), for the MFU figure
    probe: Any = None  # chatbot.eval.runner.TrainingProbe when logging.eval_replies > 0 (rank 0)

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    @property
    def stop_file(self) -> Path:
        return self.cfg.run_dir / self.cfg.train.stop_file_name

    @property
    def windows_per_rank(self) -> int:
        """Windows each rank trains on per optimizer step."""
        optimization = self.cfg.train.optimization
        return optimization.batch_size * optimization.grad_accum_steps

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all ranks (targets or not)."""
        return self.runtime.ranks.world_size * self.windows_per_rank * self.data.args.block_size

    @property
    def finished(self) -> bool:
        return self.progress.step >= self.cfg.train.optimization.max_steps


# ---------------------------------------------------------------------------------------------------- setup
def setup(cfg: Config, runtime: Runtime) -> TrainState:
    """Data, checkpoint choice, run lock, then the run itself; the caller releases ``state.lock``.

    A run already at ``max_steps`` is returned as it is (``state.finished``), without compiling or announcing."""
    data = open_data(cfg, runtime)
    resume, init_from = checkpoint_to_continue(cfg)
    lock = take_run_lock(cfg.run_dir, runtime)
    try:
        tidy_run_dir(cfg, runtime, lock)
        state = build_state(cfg, runtime, data, lock, init_from)
        if resume is not None:
            resume_from(state, resume)
        elif runtime.ranks.enabled and runtime.ranks.rank > 0:
            torch.manual_seed(cfg.train.runtime.seed + 1000 * runtime.ranks.rank)  # distinct dropout masks per rank
        if runtime.ranks.master:
            metrics_path = cfg.run_dir / "metrics.jsonl"
            repair_metrics(metrics_path, state.progress.step)  # the steps after a resumed one are trained again
            state.records = load_metrics(metrics_path, state.progress.step)
        if not state.finished:
            prepare_compute(state)
        return state
    except BaseException:
        lock.release()
        raise


def open_data(cfg: Config, runtime: Runtime) -> RunData:
    """The processed data, checked against its contract (and against the base, when fine-tuning one)."""
    from ..data.tokenizer import load_tokenizer, special_id

    train_cfg, folder = cfg.train, cfg.processed_dir
    contract = processed.read(folder)
    contract.check_tokenizer()
    stats, tok_path, tok_hash = contract.stats, contract.tokenizer_path, contract.tokenizer_hash
    vocab_size = int(stats["vocab_size"])
    if train_cfg.model.base:
        base = train_base.open_base(cfg, stats, runtime.device, runtime.dtype)
        if runtime.device.type == "cpu":
            torch.set_num_threads(cpu_threads(train_cfg, runtime.ranks, base.args.n_embd))
        tok, pad_id, args = base.layout, base.pad_id, base.args
    else:
        base = None
        if stats.get("base"):
            raise ChatbotError(f"the processed data was made for model.base {stats['base'].get('id')} but train.yaml "
                               f"trains from scratch (model.base: \"\"); set model.base back, or run "
                               f"`python -m chatbot.ops preprocess` to rebuild for a from-scratch model")
        tok = load_tokenizer(str(tok_path))
        if tok.get_vocab_size() > vocab_size:
            raise ChatbotError(f"the tokenizer has {tok.get_vocab_size()} tokens but stats.json says vocab_size "
                               f"{vocab_size}; run `python -m chatbot.ops preprocess --force`")
        pad_id = special_id(tok, PAD)
        try:
            args = ModelArgs.from_dict({**to_dict(train_cfg.model), "vocab_size": vocab_size})
        except ValueError as exc:
            raise ChatbotError(f"train.yaml: {exc}") from None
    return RunData(stats, tok, tok_hash, pad_id, args, open_split(folder, "train", stats["dtype"], vocab_size),
                   open_split(folder, "val", stats["dtype"], vocab_size), base)


def checkpoint_to_continue(cfg: Config) -> tuple[Path | None, Path | None]:
    """(checkpoint to resume, checkpoint whose weights start a new run): resume_path, else latest.pt when
    auto_resume; init_from only for a run that has nothing to resume."""
    train_cfg = cfg.train
    latest = cfg.run_dir / "latest.pt"
    if train_cfg.resume_path:
        resume = cfg.path(train_cfg.resume_path)
        if not resume.is_file():
            raise ChatbotError(f"train.yaml resume_path {resume} does not exist; fix it or set resume_path: \"\"")
    elif train_cfg.auto_resume and latest.is_file():
        resume = latest
    elif latest.is_file():
        raise ChatbotError(f"{latest} exists and auto_resume is false: set auto_resume: true to continue that run, "
                           f"or choose a new run_name (starting over would overwrite it)")
    else:
        resume = None
    init_from = None
    if resume is None and train_cfg.init_from:
        init_from = cfg.path(train_cfg.init_from)
        if not init_from.is_file():
            raise ChatbotError(f"train.yaml init_from {init_from} does not exist; point it at a checkpoint (e.g. "
                               f"checkpoints/<first run>/best.pt) or set init_from: \"\"")
    return resume, init_from


def take_run_lock(run_dir: Path, runtime: Runtime) -> RunLock:
    """Rank 0 takes the run lock for everyone; every rank fails together when it cannot."""
    lock = RunLock(run_dir)
    lock_error: ChatbotError | None = None
    if runtime.ranks.master:
        try:
            lock.acquire()
        except ChatbotError as exc:
            lock_error = exc
    if not all_ranks_ok(lock_error is None, runtime.device):
        raise lock_error or ChatbotError("rank 0 could not take the run lock; see its message")
    return lock


def tidy_run_dir(cfg: Config, runtime: Runtime, lock: RunLock) -> None:
    """What an interrupted run may have left: a stale lock, temp files of a save, a STOP file (rank 0)."""
    if not runtime.ranks.master:
        return
    run_dir, stop_file = cfg.run_dir, cfg.run_dir / cfg.train.stop_file_name
    if lock.took_over_stale:
        print(f"took over a stale run lock in {run_dir} (its trainer is gone)", flush=True)
    if clean_temp_files(run_dir):
        print("removed temp files left by an interrupted save", flush=True)
    if stop_file.exists():
        stop_file.unlink()
        print(f"removed a leftover {cfg.train.stop_file_name} file (create it while training to stop)", flush=True)


def build_state(cfg: Config, runtime: Runtime, data: RunData, lock: RunLock, init_from: Path | None) -> TrainState:
    """Model (the same initialisation on every rank), optimizer, sampler and scaler of a fresh run."""
    train_cfg = cfg.train
    seed = train_cfg.runtime.seed
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    if data.base is not None:
        model = train_base.build_model(data.base, train_cfg)
    else:
        model = Transformer(data.args)
        model.to(runtime.device)
        model.gradient_checkpointing = train_cfg.runtime.gradient_checkpointing
    if init_from is not None:
        init_weights_from(init_from, model, data, runtime)
    return TrainState(
        cfg, runtime, data, lock, model, make_optimizer(model, train_cfg.optimization, runtime.device),
        # float16 needs loss scaling; for float32 / bfloat16 the disabled scaler passes everything through
        torch.amp.GradScaler("cuda", enabled=runtime.dtype == torch.float16),
        WindowSampler(data.train, seed), micro_batch=train_cfg.optimization.batch_size)


def resume_from(state: TrainState, path: Path) -> None:
    """Put the run back exactly where ``path`` left it (weights, optimizer, sampler, scaler, counters, RNG)."""
    runtime, train_cfg = state.runtime, state.cfg.train
    ck = load_checkpoint(path)
    notes = load_weights(ck, path, state.model, state.data)
    try:
        state.optimizer.load_state_dict(with_local_flags(ck.optimizer, state.optimizer))
    except (ValueError, KeyError, RuntimeError, TypeError):
        raise ChatbotError(f"{path.name}: its model/optimizer state does not fit this model (damaged or from "
                           f"another version); resume from a snapshot or set a new run_name") from None
    apply_hparams(state.optimizer, train_cfg.optimization)
    if not state.sampler.load_state_dict(ck.sampler):
        notes.append("the training data changed since this checkpoint: the sampler starts a fresh epoch")
    if state.scaler.is_enabled() and ck.scaler:
        state.scaler.load_state_dict(ck.scaler)
    state.progress = Progress.of(ck)
    notes += [f"{c} (applied)" for c in config_changes(ck.train_config, to_dict(train_cfg))]
    if ck.world_size != runtime.ranks.world_size:
        notes.append(f"world size {ck.world_size} → {runtime.ranks.world_size} (the data stream continues)")
    val = f"{state.progress.val_loss:.4f}" if state.progress.val_loss is not None else "-"
    runtime.say(f"resuming {path.name} at step {state.progress.step} (val loss {val})")
    for note in notes:
        runtime.say(f"  changed: {note}")
    restore_rng(ck.rng, runtime.ranks, train_cfg.runtime.seed, state.progress.step)


def load_weights(ck: Checkpoint, path: Path, model: torch.nn.Module, data: RunData) -> list[str]:
    """Check a checkpoint against this run (one line when it cannot continue) and load its weights into
    ``model``; returns notes on harmless changes."""
    base = data.base
    if base is not None:
        notes = train_base.check_compatible(ck, base.info, path)
        train_base.load_trainable(model, ck.model, base.info["adapter"]["kind"], path.name)
        return notes
    if ck.base or ck.model_args is None:
        raise ChatbotError(f"{path.name} is a fine-tune of model.base {(ck.base or {}).get('id')} but "
                           f"train.yaml trains from scratch; set model.base back, or a new run_name")
    notes = check_compatible(ck, data.args, data.tokenizer_hash, path)
    try:
        model.load_state_dict(ck.model)
    except (ValueError, KeyError, RuntimeError, TypeError):
        raise ChatbotError(f"{path.name}: its model state does not fit this model (damaged or from another "
                           f"version); resume from a snapshot or set a new run_name") from None
    return notes


def init_weights_from(path: Path, model: torch.nn.Module, data: RunData, runtime: Runtime) -> None:
    """``init_from``: a new run starts from another run's weights (step, optimizer and data position start fresh)."""
    ck = load_checkpoint(path)
    notes = load_weights(ck, path, model, data)
    runtime.say(f"starting from the weights of {path} (its step {ck.step}); step, optimizer and data "
                f"order start fresh")
    for note in notes:
        runtime.say(f"  changed: {note}")


def prepare_compute(state: TrainState) -> None:
    """Speed settings, torch.compile, DDP and autocast; then the run's header line, validation windows, probe."""
    runtime, train_cfg = state.runtime, state.cfg.train
    device = runtime.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    state.eval_model = state.model
    if train_cfg.runtime.compile:
        runtime.say("compiling the model (torch.compile; the first steps are slow)")
        state.eval_model = torch.compile(state.model)
    state.step_model = state.eval_model
    if runtime.ranks.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        state.step_model = DDP(state.eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    if runtime.dtype != torch.float32:
        state.autocast = torch.autocast(device_type=device.type, dtype=runtime.dtype)
    state.select_targets = not train_cfg.runtime.compile
    state.flops_per_token = state.model.flops_per_token()
    if runtime.ranks.master:
        state.peak_flops = peak_flops(device, runtime.dtype)
        announce(state)
    state.val_starts = validation_starts(state)
    state.probe = make_probe(state)


def announce(state: TrainState) -> None:
    """The run's header line (rank 0)."""
    data, world = state.data, state.runtime.ranks.world_size
    model = state.model
    state.runtime.say(
        f"training '{state.cfg.train.run_name}' on {state.runtime.device} "
        f"({str(state.runtime.dtype).replace('torch.', '')}, {world} process{'es' if world > 1 else ''}): "
        f"{model.num_params() / 1e6:.2f}M parameters (+ embeddings){base_note(data.base, model)}, "
        f"{data.train.n_tokens:,} train tokens in {data.train.n_windows:,} windows, "
        f"{data.val.n_tokens:,} val tokens; {world * state.windows_per_rank} windows × {data.args.block_size} "
        f"tokens per step")
    if data.val.n_windows == 0:
        print("warning: the validation split is empty; no validation loss and no best.pt", flush=True)


def base_note(base: train_base.BaseRun | None, model: torch.nn.Module) -> str:
    if base is None:
        return ""
    return f" of base {base.info['id']}, {model.trainable_params():,} trainable ({base.info['adapter']['kind']})"


def validation_starts(state: TrainState) -> np.ndarray | None:
    """eval_iters batches per rank: the same windows for any (world size × batch size) of equal product."""
    val, ranks = state.data.val, state.runtime.ranks
    if not val.n_windows:
        return None
    batch = state.cfg.train.optimization.batch_size
    starts = eval_starts(val, state.cfg.train.logging.eval_iters, batch * ranks.world_size,
                         state.cfg.train.runtime.seed)
    return starts[ranks.rank :: ranks.world_size]


def make_probe(state: TrainState):
    """The reply metrics at each eval (``logging.eval_replies``), rank 0 only; None when off."""
    cfg, data = state.cfg, state.data
    if not (cfg.train.logging.eval_replies > 0 and state.runtime.ranks.master and data.val.n_windows):
        return None
    from ..eval.runner import TrainingProbe

    preprocess = cfg.paths.processed.preprocess
    tokenizer = data.tokenizer if data.base is None else data.base.tokenizer
    return TrainingProbe(cfg.processed_dir, data.stats, tokenizer, cfg.gen, preprocess.pii,
                         cfg.train.logging.eval_replies, preprocess.context_turns)

