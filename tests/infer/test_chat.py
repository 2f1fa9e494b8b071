"""reply / chat verbs: text and JSON output, the password gate first, chat over piped input and a terminal."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

import chatbot.security as security
from chatbot.infer.chat import chat_command, reply_command
from chatbot.errors import ChatbotError

from tests.support.gen import chatty_bias, password_env, shaped_model, tiny_tokenizer, write_checkpoint
from tests.support.workspace import PASSWORD, REPO, make_workspace

# tiny models run fastest on one thread (the fixture is in tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

needs_pty = pytest.mark.skipif(not hasattr(pexpect, "spawn"), reason="pexpect.spawn needs a POSIX pty (not on Windows)")


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch):
    cfg = make_workspace(tmp_path, password=True)
    write_checkpoint(cfg, shaped_model(chatty_bias(tiny_tokenizer())))
    password_env(monkeypatch)
    return cfg


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(CHATBOT_ACCESS_PASSWORD=PASSWORD, PYTHONPATH=str(REPO), PYTHONIOENCODING="utf-8", TERM="dumb")
    return env


def test_reply_prints_only_the_text(cfg, capsys) -> None:
    reply_command(cfg, "안녕 뭐해?", as_json=False)
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1 and out.strip()
    assert "상대" not in out and "<|" not in out


def test_reply_json_adds_confidence_and_timing(cfg, capsys) -> None:
    reply_command(cfg, "안녕 뭐해?", as_json=False)
    text = capsys.readouterr().out.rstrip("\n")
    reply_command(cfg, "안녕 뭐해?", as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == text  # same seed, same reply
    assert data["confidence"] < 0 and data["n_tokens"] >= 1
    assert 0 < data["first_token_s"] <= data["latency_s"]
    assert data["model"] == "best.pt"


def test_reply_checks_the_password_before_loading_anything(cfg, monkeypatch) -> None:
    monkeypatch.setattr(security, "WRONG_PASSWORD_DELAY_S", 0.0)
    monkeypatch.setattr("chatbot.infer.chat.load_responder", lambda cfg: pytest.fail("model loaded before the gate"))
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "wrong")
    with pytest.raises(ChatbotError, match="wrong password"):
        reply_command(cfg, "hi", as_json=False)
    (cfg.root / ".env").unlink()
    cfg.env.clear()
    with pytest.raises(ChatbotError, match="no password configured"):
        reply_command(cfg, "hi", as_json=False)


def test_chat_over_piped_input(cfg, capsys) -> None:
    lines = ["안녕 뭐해?", "", "/reset", "오늘 저녁 뭐 먹을까?", "/exit", "주말에 뭐 할 거야?"]
    proc = subprocess.run(
        [sys.executable, "-m", "chatbot.ops", "chat", "-c", str(cfg.config_dir)],
        input="\n".join(lines) + "\n", capture_output=True, text=True, encoding="utf-8",
        env=child_env(), cwd=REPO, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "나: 안녕 뭐해?" and out[1].startswith("상대: ") and len(out[1]) > len("상대: ")
    assert out[2] == "(new conversation)"
    assert out[3] == "나: 오늘 저녁 뭐 먹을까?"
    assert len(out) == 5 and "주말" not in proc.stdout  # nothing after /exit
    # after /reset the conversation starts over: the answer equals a one-message `reply`
    reply_command(cfg, "오늘 저녁 뭐 먹을까?", as_json=False)
    assert out[4] == "상대: " + capsys.readouterr().out.rstrip("\n")


def test_chat_piped_input_ends_cleanly_at_end_of_input(cfg, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("안녕\n뭐해"))  # no /exit, no final newline
    chat_command(cfg)
    out = capsys.readouterr()
    assert out.err == ""
    assert [ln.split(":")[0] for ln in out.out.splitlines()] == ["나", "상대", "나", "상대"]


def spawn_chat(cfg) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "chatbot.ops", "chat", "-c", str(cfg.config_dir)],
                         env=child_env(), cwd=str(REPO), encoding="utf-8", timeout=30)


@needs_pty
def test_chat_in_a_terminal_reset_and_exit(cfg) -> None:
    child = spawn_chat(cfg)
    child.expect("/reset")  # the banner
    child.expect("나: ")
    child.sendline("안녕 뭐해?")
    child.expect("상대: ")
    child.expect("나: ")
    child.sendline("/reset")
    child.expect(r"\(new conversation\)")
    child.expect("나: ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in child.before


@needs_pty
@pytest.mark.parametrize("key", ["ctrl-c", "ctrl-d"])
def test_chat_in_a_terminal_leaves_cleanly_on_ctrl_c_and_ctrl_d(cfg, key: str) -> None:
    child = spawn_chat(cfg)
    child.expect("나: ")
    child.sendline("안녕")
    child.expect("상대: ")
    child.expect("나: ")
    if key == "ctrl-c":
        child.sendintr()
    else:
        child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and child.signalstatus is None
    assert "Traceback" not in child.before and "interrupted" not in child.before
