"""Windows/macOS on a Linux CI: the whole pipeline on a simulated Windows-like Python gives the same outputs.

tests/e2e/simplatform/sitecustomize.py makes a Python where ``fcntl`` (and the other POSIX-only modules) cannot be
imported, ``fork`` does not exist (multiprocessing can only ``spawn``), POSIX-only signals are gone and
``SIGBREAK`` exists, and a text ``open()`` without an encoding inside the package is an error. stdout/stderr are
cp949, as a redirected console on Korean Windows. The workspace sits under folders with Korean names and spaces;
the export's room title and messages hold emoji and characters Windows forbids in file names.

tests/e2e/platform_driver.py runs organize → preprocess (worker pool) → train stopped by STOP, resumed, stopped by
Ctrl+Break, resumed to the end → publish --encrypt → reply, once there and once on the normal Linux Python (both at
the same time). Every output file must be byte-identical; where a file carries a wall-clock time or fresh random
bytes by design (``created``, ``seconds``, metrics' ``time``, the encrypted file's salt and nonces) its content
without those fields is compared instead — decrypted, tensor for tensor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.workspace import REPO

SIM = Path(__file__).resolve().parent / "simplatform"
DRIVER = Path(__file__).resolve().parent / "platform_driver.py"
PASSWORD = "platform-test-password"
MODEL_KEY = "platform-model-key-0123456789abcdef"
TITLE = '🎮 게임방: "최강"/<팀>*?'
MESSAGE = "안녕 🎉 뭐해?"
LINES = [
    ("민수", "안녕 🎉 뭐해?"), ("지연", "나 지금 밥 먹어 ㅋㅋ 🍚"),
    ("민수", "저녁 뭐 먹을까? a<b>c:d|e"), ("지연", "떡볶이 어때 ㅎㅎ 😋"),
    ("민수", "주말에 뭐 할 거야?"), ("지연", "영화 보러 가자! C:\\movies\\*.mp4"),
    ("민수", "좋아 몇 시에 볼까"), ("지연", "저녁 일곱 시 괜찮아? 👍"), ("지연", "잘 자 내일 봐 🌙"),
]


def write_export(path: Path, days: int) -> None:
    """An invented Android Korean export (BOM, CRLF records) with one short session per day."""
    out = [f"\ufeff{TITLE} 님과 카카오톡 대화\r\n", "저장한 날짜 : 2024년 3월 30일 오후 5:47\n", "\n", "\r\n"]
    for day in range(days):
        stamp = f"2024년 {3 + day // 28}월 {1 + day % 28}일 오후 8:{{:02d}}"
        out.append(stamp.format(0) + "\r\n")
        for i, (who, text) in enumerate(LINES):
            out.append(f"{stamp.format(i)}, {who} : {text}\r\n")
        out.append("\r\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(out).encode("utf-8"))


def make_workspace(root: Path) -> Path:
    project = root / "카톡 봇 작업 공간" / ("아주 긴 폴더 이름 " * 6).strip()
    shutil.copytree(REPO / "configs", project / "configs")

    def edit(name: str, mutate) -> None:
        p = project / "configs" / name
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        mutate(data)
        p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def train(d):
        d["run_name"] = "platform"
        d["runtime"].update(device="cpu", dtype="float32", seed=3)
        d["model"].update(block_size=48, n_layer=1, n_head=2, n_kv_head=1, n_embd=32)
        d["optimization"].update(batch_size=8, grad_accum_steps=1, max_steps=16, learning_rate=1e-2, min_lr=1e-3,
                                 warmup_steps=3, lr_decay_steps=16)
        d["logging"].update(log_interval=4, eval_interval=8, eval_iters=2, save_interval=8,
                            keep_last_n_snapshots=1, sample_prompts=[MESSAGE])

    def paths(d):
        d["processed"]["preprocess"].update(vocab_size=600, val_fraction=0.2, session_gap_minutes=120)

    def gen(d):
        d["model_preference"] = ["artifacts/model_latest.enc"]
        d["device"] = "cpu"
        d["sampling"].update(temperature=0.0, max_new_tokens=12, repetition_penalty=1.0)

    edit("train.yaml", train)
    edit("paths.yaml", paths)
    edit("gen.yaml", gen)
    (project / ".env").write_text(f"CHATBOT_PASSWORD={PASSWORD}\nCHATBOT_MODEL_KEY={MODEL_KEY}\n", encoding="utf-8")
    write_export(project / "data" / "raw" / "inbox" / "내 보내기" / "KakaoTalkChats.txt", days=40)
    return project


def start(project: Path, simulated: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATBOT_", "PYTHON"))}
    env["CHATBOT_ACCESS_PASSWORD"] = PASSWORD
    if simulated:
        env.update(PYTHONPATH=os.pathsep.join([str(SIM), str(REPO)]), PYTHONIOENCODING="cp949",
                   PYTHONWARNDEFAULTENCODING="1")
    else:
        env.update(PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8")
    return subprocess.Popen([sys.executable, str(DRIVER), str(project / "configs"), MESSAGE], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


# -------------------------------------------------------------------------------------------- comparing outputs
def _tree(project: Path) -> dict[str, Path]:
    return {p.relative_to(project).as_posix(): p for p in sorted(project.rglob("*")) if p.is_file()}


def _same(a, b, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def _compare(name: str, a: Path, b: Path) -> None:
    import torch

    from chatbot.formats.artifact import load as load_artifact

    if name.endswith(".pt"):  # checkpoints: ``created`` is the wall-clock time of the save
        _same(*(_without(torch.load(p, weights_only=True), "created") for p in (a, b)), name)
    elif name.endswith(".enc"):  # fresh salt and nonces by design: compare what it decrypts to
        _same(*(_without(load_artifact(p, MODEL_KEY).to_dict(), "created") for p in (a, b)), name)
    elif name == "data/processed/stats.json":  # its ``outputs`` holds every other output's sha256
        assert _without(json.loads(a.read_bytes()), "seconds") == _without(json.loads(b.read_bytes()), "seconds")
    elif name == "artifacts/model_info.json":  # hashes the encrypted bytes
        drop = ("created", "sha256", "bytes")
        assert _without(json.loads(a.read_bytes()), *drop) == _without(json.loads(b.read_bytes()), *drop)
    elif name.endswith("metrics.jsonl"):  # drop the timing fields, keep losses, steps and learning rates
        timing = ("time", "tokens_per_s", "mfu", "eta_s", "step_s")
        rows = [[_without(json.loads(line), *timing) for line in p.read_text(encoding="utf-8").splitlines()]
                for p in (a, b)]
        assert rows[0] == rows[1], name
    else:
        assert a.read_bytes() == b.read_bytes(), name


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="simulates Windows on Linux (real Windows runs CI)")
def test_simulated_windows_gives_the_linux_outputs_byte_for_byte(tmp_path: Path) -> None:
    linux, windows = make_workspace(tmp_path / "linux"), make_workspace(tmp_path / "windows")
    runs = {"linux": start(linux, simulated=False), "windows": start(windows, simulated=True)}
    out = {}
    for name, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=240)
        out[name] = (proc.returncode, stdout, stderr)
    for name, (code, stdout, stderr) in out.items():
        text = (stdout + stderr).decode("cp949" if name == "windows" else "utf-8", "replace")
        assert code == 0, f"{name} run failed:\n{text[-4000:]}"

    # the simulated run really ran where fcntl/fork are missing, with spawned workers, on a cp949 console
    win_out = out["windows"][1].decode("cp949")  # strict: every byte is valid cp949
    assert "worker processes (spawn)" in win_out
    assert "worker processes (fork)" in out["linux"][1].decode("utf-8")
    assert "SIGBREAK" in out["windows"][2].decode("cp949") and "stopped at step 11/16" in win_out
    assert "stopped at step 5/16" in win_out and "reached max_steps 16" in win_out

    # the reply is the same text; on cp949 its emoji (if any) became '?', nothing crashed
    reply = {name: json.loads(o[1].decode("cp949" if name == "windows" else "utf-8").strip().splitlines()[-1])
             for name, o in out.items()}
    assert reply["linux"]["text"].strip()
    assert reply["windows"]["text"] == reply["linux"]["text"].encode("cp949", "replace").decode("cp949")

    # the room folder: Windows-safe, emoji kept, the same on both
    folders = [p.name for p in (windows / "data" / "raw" / "organized").iterdir()]
    assert folders == ["🎮 게임방_ _최강_팀_"]

    a, b = _tree(linux), _tree(windows)
    assert a.keys() == b.keys()
    for name in a:
        _compare(name, a[name], b[name])
    assert {"checkpoints/platform/latest.pt", "checkpoints/platform/best.pt", "artifacts/model_latest.enc",
            "data/processed/train.bin", "data/raw/manifest.json"} <= a.keys()
