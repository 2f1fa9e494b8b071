"""The one builder of throw-away projects: the repo's configs/ copied into a folder, YAML overrides merged into
configs/<name>.yaml, and an optional .env holding the gate password. Helpers of the other areas add their data on
top of it (tests.support.train.make_train_project, tests.support.base.make_base_project,
tests.support.publish.make_trained_run); the ``project`` fixture (tests/conftest.py) is this builder on tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from chatbot.config import Config, load_config

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "test-gate-pw-7"  # invented; the gate only needs .env and the access variable to agree
# secrets a developer's shell may hold: a test project must not pick them up
SECRET_VARS = ("CHATBOT_PASSWORD", "CHATBOT_PASSWORD_HASH", "CHATBOT_ACCESS_PASSWORD", "CHATBOT_MODEL_KEY",
               "CHATBOT_BRIDGE_SECRET")


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, nested dicts key by key (neither argument is changed)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def edit_yaml(root: Path, name: str, overrides: dict) -> None:
    """Merge ``overrides`` into ``root/configs/<name>`` (the file as it is now, not the repo's)."""
    path = Path(root) / "configs" / name
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    path.write_text(yaml.safe_dump(merged(data, overrides), allow_unicode=True, sort_keys=False), encoding="utf-8")


def make_workspace(root: str | Path, *, train: dict | None = None, gen: dict | None = None,
                   password: bool = False) -> Config:
    """``root`` as a project: configs/ copied from the repo unless it is there already, ``train`` / ``gen``
    merged into train.yaml / gen.yaml, and with ``password`` a .env holding PASSWORD. Returns the loaded Config."""
    root = Path(root)
    if not (root / "configs").is_dir():
        shutil.copytree(REPO / "configs", root / "configs")
    if train:
        edit_yaml(root, "train.yaml", train)
    if gen:
        edit_yaml(root, "gen.yaml", gen)
    if password:
        (root / ".env").write_text(f"CHATBOT_PASSWORD={PASSWORD}\n", encoding="utf-8")
    return load_config(root / "configs")
