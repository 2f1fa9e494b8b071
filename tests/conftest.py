"""Shared fixtures: a throw-away project folder with the repo's configs copied in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path with configs/ copied from the repo; secrets from the caller's environment removed."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    for var in ("CHATBOT_PASSWORD", "CHATBOT_PASSWORD_HASH", "CHATBOT_ACCESS_PASSWORD", "CHATBOT_MODEL_KEY",
                "CHATBOT_BRIDGE_SECRET"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path
