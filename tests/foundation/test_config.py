"""Config loading: typed values, one-line errors naming file and key, ${VAR} resolution, --config-dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chatbot.config import ConfigError, config_hash, load_config
from tests.support.workspace import REPO



def edit(project: Path, name: str, mutate) -> None:
    path = project / "configs" / name
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    mutate(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


def test_repo_configs_load_with_typed_values(project: Path) -> None:
    cfg = load_config(project / "configs")
    assert cfg.root == project.resolve()
    assert isinstance(cfg.train.optimization.learning_rate, float)
    assert isinstance(cfg.train.model.n_layer, int)
    assert cfg.run_dir == project.resolve() / "checkpoints" / cfg.train.run_name
    assert cfg.processed_dir == project.resolve() / "data" / "processed"


@pytest.mark.parametrize(
    "name, mutate, expected",
    [
        ("train.yaml", lambda d: d["model"].update(n_layr=3), "train.yaml: model.n_layr: unknown key (did you mean 'n_layer'?)"),
        ("train.yaml", lambda d: d["model"].update(n_layer="six"), "train.yaml: model.n_layer: expected an integer"),
        ("train.yaml", lambda d: d["optimization"].update(learning_rate=-1.0), "train.yaml: optimization.learning_rate: -1.0 is out of range"),
        ("train.yaml", lambda d: d["runtime"].update(dtype="fp8"), "train.yaml: runtime.dtype: 'fp8' is not allowed"),
        ("gen.yaml", lambda d: d["sampling"].update(top_p=1.5), "gen.yaml: sampling.top_p: 1.5 is out of range"),
        ("gen.yaml", lambda d: d.update(smoke={"prompts": "hi"}), "gen.yaml: smoke.prompts: expected a list"),
        ("gen.yaml", lambda d: d["serve"].update(workerz=2), "gen.yaml: serve.workerz: unknown key (did you mean 'workers'?)"),
        ("gen.yaml", lambda d: d["serve"].update(max_body_bytes=10), "gen.yaml: serve.max_body_bytes: 10 is out of range"),
        ("gen.yaml", lambda d: d["serve"].update(memory="yes"), "gen.yaml: serve.memory: expected true/false"),
        ("paths.yaml", lambda d: d["raw"].update(move_files="yes"), "paths.yaml: raw.move_files: expected true/false"),
        ("paths.yaml", lambda d: d.update(proccessed={}), "paths.yaml: proccessed: unknown key (did you mean 'processed'?)"),
    ],
)
def test_bad_values_are_one_line_errors_naming_file_and_key(project, name, mutate, expected) -> None:
    edit(project, name, mutate)
    with pytest.raises(ConfigError) as err:
        load_config(project / "configs")
    message = str(err.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_missing_file_and_broken_yaml(project: Path) -> None:
    (project / "configs" / "gen.yaml").unlink()
    with pytest.raises(ConfigError, match="gen.yaml: config file not found"):
        load_config(project / "configs")
    (project / "configs" / "gen.yaml").write_text("sampling: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"gen.yaml at line \d+"):
        load_config(project / "configs")
    with pytest.raises(ConfigError, match="config folder not found"):
        load_config(project / "nowhere")


def test_env_vars_resolve_from_environment_then_dotenv(project: Path, monkeypatch) -> None:
    edit(project, "train.yaml", lambda d: d.update(run_name="${RUN:fallback}"))
    assert load_config(project / "configs").train.run_name == "fallback"
    (project / ".env").write_text("RUN=from-dotenv\n", encoding="utf-8")
    assert load_config(project / "configs").train.run_name == "from-dotenv"
    monkeypatch.setenv("RUN", "from-env")
    assert load_config(project / "configs").train.run_name == "from-env"
    edit(project, "train.yaml", lambda d: d["optimization"].update(max_steps="${STEPS}"))
    with pytest.raises(ConfigError, match=r"optimization.max_steps: \$\{STEPS\} is not set"):
        load_config(project / "configs")
    monkeypatch.setenv("STEPS", "42")
    assert load_config(project / "configs").train.optimization.max_steps == 42


SECRET = "s3cr3t-Value:with [yaml] {chars}"  # invented


@pytest.mark.parametrize(
    "name, mutate, secret",
    [
        ("gen.yaml", lambda d: d["bridge"].update(workers="${CHATBOT_TEST_VALUE}"), SECRET),  # int
        ("gen.yaml", lambda d: d["sampling"].update(top_p="${CHATBOT_TEST_VALUE}"), SECRET),  # float
        ("gen.yaml", lambda d: d["sampling"].update(top_p="${CHATBOT_TEST_VALUE}"), "98765"),  # range
        ("paths.yaml", lambda d: d["raw"].update(move_files="${CHATBOT_TEST_VALUE}"), SECRET),  # bool
        ("train.yaml", lambda d: d["runtime"].update(dtype="${CHATBOT_TEST_VALUE}"), SECRET),  # one of a list
        ("paths.yaml", lambda d: d["raw"].update(root_globs="${CHATBOT_TEST_VALUE}"), "[x, {s3cr3t: 1}]"),  # item
        ("gen.yaml", lambda d: d["sampling"].update(top_p="0.${CHATBOT_TEST_VALUE}"), SECRET),  # part of it
    ],
)
def test_values_from_env_substitutions_are_never_printed(project, monkeypatch, name, mutate, secret) -> None:
    monkeypatch.setenv("CHATBOT_TEST_VALUE", secret)
    edit(project, name, mutate)
    with pytest.raises(ConfigError) as err:
        load_config(project / "configs")
    message = str(err.value)
    assert "${CHATBOT_TEST_VALUE}" in message and "(not shown)" in message, message
    assert "s3cr3t" not in message and "98765" not in message and "\n" not in message


def test_secret_reads_env_then_dotenv(project: Path, monkeypatch) -> None:
    (project / ".env").write_text("CHATBOT_MODEL_KEY=abc\nEMPTY=\n", encoding="utf-8")
    cfg = load_config(project / "configs")
    assert cfg.secret("CHATBOT_MODEL_KEY") == "abc"
    assert cfg.secret("EMPTY") is None
    monkeypatch.setenv("CHATBOT_MODEL_KEY", "xyz")
    assert cfg.secret("CHATBOT_MODEL_KEY") == "xyz"


def test_config_hash_changes_with_values(project: Path) -> None:
    cfg = load_config(project / "configs")
    before = config_hash(cfg.paths.processed.preprocess)
    cfg.paths.processed.preprocess.context_turns += 1
    assert config_hash(cfg.paths.processed.preprocess) != before


def test_cli_reports_config_error_in_one_line(project: Path) -> None:
    edit(project, "paths.yaml", lambda d: d["raw"].update(inboxx="x"))
    proc = subprocess.run(
        [sys.executable, "-m", "chatbot.ops", "organize", "--dry", "--config-dir", str(project / "configs")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: paths.yaml: raw.inboxx: unknown key (did you mean 'inbox'?)"


def test_cli_help_lists_every_verb() -> None:
    proc = subprocess.run([sys.executable, "-m", "chatbot.ops", "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    for verb in ("archive", "organize", "preprocess", "train", "smoke", "reply", "chat", "bridge", "publish",
                 "status", "demo", "hash-password", "bridge-secret"):
        assert verb in proc.stdout
