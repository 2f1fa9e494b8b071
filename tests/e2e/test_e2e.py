"""End to end through the CLI, as a user would run it: an invented export → organize → preprocess → train →
publish --encrypt → reply (from the encrypted artifact, with the password) → smoke → archive; and the same
pipeline interrupted by a STOP file and resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tests.support.workspace import REPO

PASSWORD = "e2e-test-password"
MODEL_KEY = "e2e-Wq8r-Zt3y-Mk6p-Lv2n-Hs9d"  # invented

# An invented two-person chat: short, repetitive, so a tiny model learns to answer with real text in seconds.
LINES = [
    ("민수", "안녕 뭐해?"), ("지연", "나 지금 밥 먹어 ㅋㅋ"),
    ("민수", "오늘 저녁 뭐 먹을까?"), ("지연", "떡볶이 어때 ㅎㅎ"),
    ("민수", "주말에 뭐 할 거야?"), ("지연", "영화 보러 가자!"),
    ("민수", "좋아 몇 시에 볼까"), ("지연", "저녁 일곱 시 괜찮아?"),
    ("민수", "연락처 010-1234-5678 로 문자해"), ("지연", "응 알겠어 이따 봐"), ("지연", "잘 자 내일 봐"),
]  # 지연 talks most, so she is the pseudonym the bot speaks as ("auto"), and 민수 is the user


def write_android_export(path: Path, days: int = 12) -> None:
    """Android Korean UI export (BOM, CRLF records, the LF header quirk) with one short session per day."""
    out = ["\ufeff민수, 지연 님과 카카오톡 대화\r\n", "저장한 날짜 : 2024년 3월 30일 오후 5:47\n", "\n", "\r\n"]
    for day in range(1, days + 1):
        stamp = f"2024년 3월 {day}일 오후 8:{{:02d}}"
        out.append(stamp.format(0) + "\r\n")
        for i, (who, text) in enumerate(LINES):
            out.append(f"{stamp.format(i)}, {who} : {text}\r\n")
        out.append("\r\n")
    path.write_text("".join(out), encoding="utf-8")


def tiny_workspace(project: Path, max_steps: int) -> None:
    def edit(name: str, mutate) -> None:
        p = project / "configs" / name
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        mutate(data)
        p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def train(d):
        d["run_name"] = "e2e"
        d["runtime"].update(device="cpu", dtype="float32", seed=7)
        d["model"].update(block_size=64, n_layer=1, n_head=2, n_kv_head=1, n_embd=32)
        d["optimization"].update(batch_size=8, grad_accum_steps=1, max_steps=max_steps, learning_rate=1e-2,
                                 min_lr=1e-3, warmup_steps=5, lr_decay_steps=max_steps)
        d["logging"].update(log_interval=10, eval_interval=20, eval_iters=2, save_interval=10,
                            keep_last_n_snapshots=1, sample_prompts=["안녕 뭐해?"])

    def paths(d):
        d["processed"]["preprocess"].update(vocab_size=600, val_fraction=0.2, session_gap_minutes=120)

    def gen(d):
        d["model_preference"] = ["artifacts/model_latest.enc"]
        d["device"] = "cpu"
        d["sampling"].update(temperature=0.0, max_new_tokens=16, repetition_penalty=1.0)
        d["smoke"]["max_latency_s"] = 30

    edit("train.yaml", train)
    edit("paths.yaml", paths)
    edit("gen.yaml", gen)
    (project / ".env").write_text(f"CHATBOT_PASSWORD={PASSWORD}\nCHATBOT_MODEL_KEY={MODEL_KEY}\n", encoding="utf-8")
    (project / "data" / "raw" / "inbox").mkdir(parents=True)
    write_android_export(project / "data" / "raw" / "inbox" / "KakaoTalkChats.txt")


def ops(project: Path, *args: str, access: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env["PYTHONPATH"] = str(REPO)
    if access is not None:
        env["CHATBOT_ACCESS_PASSWORD"] = access
    proc = subprocess.run([sys.executable, "-m", "chatbot.ops", *args, "--config-dir", str(project / "configs")],
                          capture_output=True, text=True, cwd=project, env=env, stdin=subprocess.DEVNULL, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_full_pipeline_from_export_to_encrypted_reply(project: Path) -> None:
    tiny_workspace(project, max_steps=150)
    assert "Next         python -m chatbot.ops organize" in ops(project, "status").stdout
    ops(project, "organize")
    manifest = json.loads((project / "data" / "raw" / "manifest.json").read_text(encoding="utf-8"))
    entries = manifest["files"] if isinstance(manifest, dict) else manifest
    assert [e["format"] for e in entries] == ["android_ko"]
    assert entries[0]["messages"] == 12 * len(LINES)

    ops(project, "preprocess")
    processed = project / "data" / "processed"
    for name in ("tokenizer.json", "train.bin", "val.bin", "train_loss_mask.bin", "stats.json", "preview.json"):
        assert (processed / name).is_file(), name
    for name in ("tokenizer.json", "train.bin", "stats.json", "preview.json"):  # pseudonyms only
        blob = (processed / name).read_bytes()
        for secret in ("민수".encode(), "지연".encode(), b"010-1234-5678"):
            assert secret not in blob, (name, secret)

    ops(project, "train")
    run = project / "checkpoints" / "e2e"
    assert (run / "latest.pt").is_file() and (run / "best.pt").is_file()

    assert "Next         python -m chatbot.ops publish --encrypt" in ops(project, "status").stdout
    ops(project, "publish", "--encrypt")
    status = ops(project, "status").stdout
    assert "inference loads artifacts/model_latest.enc (encrypted)" in status
    assert "Next         python -m chatbot.ops chat" in status
    artifacts = project / "artifacts"
    assert (artifacts / "model_latest.enc").is_file()
    assert not (artifacts / "model_latest.pt").exists()
    assert b"PK" not in (artifacts / "model_latest.enc").read_bytes()[:64]  # not a plaintext torch zip

    refused = ops(project, "reply", "안녕 뭐해?", access="wrong-password", check=False)
    assert refused.returncode != 0 and refused.stdout == ""
    assert PASSWORD not in refused.stderr and "wrong-password" not in refused.stderr
    answered = ops(project, "reply", "안녕 뭐해?", "--json", access=PASSWORD)
    reply = json.loads(answered.stdout)
    assert reply["text"].strip() and "<|" not in reply["text"]
    assert reply["confidence"] <= 0.0

    smoke = ops(project, "smoke", access=PASSWORD, check=False)
    assert "안녕 뭐해?" in smoke.stdout  # the transcript is printed
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr

    ops(project, "archive", "--tag", "e2e")
    archived = list((project / "data" / "archive").iterdir())
    assert len(archived) == 1 and archived[0].name.endswith("-e2e")
    assert (archived[0] / "artifacts" / "model_latest.enc").is_file() or any(archived[0].rglob("model_latest.enc"))
    assert not (run / "latest.pt").exists() and not (processed / "train.bin").exists()


def test_pipeline_stopped_by_stop_file_resumes_to_the_end(project: Path) -> None:
    tiny_workspace(project, max_steps=400)
    ops(project, "organize")
    ops(project, "preprocess")
    run = project / "checkpoints" / "e2e"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env["PYTHONPATH"] = str(REPO)
    trainer = subprocess.Popen([sys.executable, "-m", "chatbot.ops", "train", "--config-dir", str(project / "configs")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=project, env=env)
    deadline = time.time() + 120
    while not (run / "latest.pt").exists() and time.time() < deadline:  # first save_interval passed
        time.sleep(0.1)
    (run / "STOP").write_text("")
    out, _ = trainer.communicate(timeout=120)
    assert trainer.returncode == 3, out
    assert not (run / "STOP").exists()
    import torch

    stopped_at = torch.load(run / "latest.pt", weights_only=True)["step"]
    assert 0 < stopped_at < 400

    ops(project, "train")
    final = torch.load(run / "latest.pt", weights_only=True)
    assert final["step"] == 400
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [m["step"] for m in metrics if m.get("kind") == "train"]
    assert train_steps == sorted(set(train_steps))  # the resumed run continues the same curve, no duplicates
