"""DistributedDataParallel on CPU (gloo): 2 ranks ≡ 1 process on the same global batch; stop on one rank; resume
across world sizes. Ranks are forked from the test process (the env:// rendezvous torchrun uses, without paying
for a fresh interpreter and torch import per rank)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import traceback

import pytest
import torch

from chatbot.config import load_config
from chatbot.train.loop import EXIT_DONE, train
from tests.support.train import load_ckpt, make_train_project, reload

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="ranks are forked (POSIX only)")

DDP = {"optimization": {"batch_size": 2, "grad_accum_steps": 2, "max_steps": 4},
       "logging": {"save_interval": 2, "eval_interval": 2}}
SINGLE = {"optimization": {"batch_size": 4, "grad_accum_steps": 2, "max_steps": 4},
          "logging": {"save_interval": 2, "eval_interval": 2}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, config_dir: str, interrupt_at: int) -> None:
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        def interrupt(step):  # Ctrl+C reaches the last rank only
            if step == interrupt_at:
                signal.raise_signal(signal.SIGINT)

        hook = interrupt if interrupt_at and rank == world - 1 else None
        code = train(load_config(config_dir), on_step=hook)
    except BaseException:
        traceback.print_exc()
        code = 99
    os._exit(code)


def run_ddp(cfg, world: int = 2, interrupt_at: int = 0) -> list[int]:
    ctx = mp.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, str(cfg.config_dir), interrupt_at))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def assert_close_models(a: dict, b: dict) -> None:
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-4, atol=2e-5, msg=k)


def test_two_gloo_ranks_match_one_process_and_resume_across_world_sizes(tmp_path):
    ddp = make_train_project(tmp_path / "ddp", DDP)
    assert run_ddp(ddp) == [0, 0]
    single = make_train_project(tmp_path / "single", SINGLE)
    assert train(single) == EXIT_DONE
    a, b = load_ckpt(ddp.run_dir / "latest.pt"), load_ckpt(single.run_dir / "latest.pt")
    assert a["world_size"] == 2 and a["step"] == b["step"] == 4 and a["sampler"] == b["sampler"]
    assert a["tokens_seen"] == b["tokens_seen"]
    assert abs(a["val_loss"] - b["val_loss"]) < 1e-4
    assert_close_models(a, b)
    assert not (ddp.run_dir / "run.lock").exists()

    # the 2-rank checkpoint continues in one process exactly like the one-process run does
    ddp = reload(ddp, {**SINGLE, "optimization": {**SINGLE["optimization"], "max_steps": 6}})
    single = reload(single, {"optimization": {"max_steps": 6}})
    assert train(ddp) == EXIT_DONE and train(single) == EXIT_DONE
    a, b = load_ckpt(ddp.run_dir / "latest.pt"), load_ckpt(single.run_dir / "latest.pt")
    assert a["world_size"] == 1 and a["step"] == 6 and a["sampler"] == b["sampler"]
    assert_close_models(a, b)


def test_interrupt_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    cfg = make_train_project(tmp_path, {**DDP, "optimization": {**DDP["optimization"], "max_steps": 50}})
    (cfg.run_dir).mkdir(parents=True)
    assert run_ddp(cfg, interrupt_at=3) == [0, 0]  # graceful stop under torchrun exits 0 (no restart, no crash)
    ck = load_ckpt(cfg.run_dir / "latest.pt")
    assert ck["step"] == 3 and ck["world_size"] == 2
    assert len(ck["rng"]["per_rank"]) == 2
    assert not (cfg.run_dir / "run.lock").exists()


def test_lora_on_a_pretrained_base_under_two_ranks_matches_one_process(tmp_path):
    from tests.support.base import make_base_project

    no_dropout = {"adapter": {"dropout": 0.0}}
    ddp = make_base_project(tmp_path / "ddp", {**DDP, **no_dropout})
    assert run_ddp(ddp) == [0, 0]
    single = make_base_project(tmp_path / "single", {**SINGLE, **no_dropout})
    assert train(single) == EXIT_DONE
    a, b = load_ckpt(ddp.run_dir / "latest.pt"), load_ckpt(single.run_dir / "latest.pt")
    assert a["world_size"] == 2 and a["step"] == b["step"] == 4 and a["base"] == b["base"]
    assert a["model"].keys() == b["model"].keys() and all("lora_" in k for k in a["model"])
    assert_close_models(a, b)
