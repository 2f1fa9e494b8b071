"""Fixtures for the whole suite: a throw-away project folder (``project``), one torch thread for tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.workspace import SECRET_VARS, make_workspace


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path with configs/ copied from the repo; secrets from the caller's environment removed."""
    make_workspace(tmp_path)
    for var in SECRET_VARS:
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not stall when the CPU is shared); restored afterwards.
    Modules of tiny-model tests use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
