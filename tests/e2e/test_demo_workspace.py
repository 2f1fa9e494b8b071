"""`demo --workspace X` only ever works in a folder the demo created itself (marker file); anything else is
refused with one line before a single file in it is read or written."""

from __future__ import annotations

import pytest

from chatbot import demo as demo_mod
from chatbot.errors import ChatbotError
from tests.support.kakao import snapshot


def _fake_project(root):
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "train.yaml").write_text("run_name: mine\n", encoding="utf-8")
    (root / ".env").write_text("CHATBOT_PASSWORD=my-own-password-1\n", encoding="utf-8")
    (root / "data" / "raw" / "inbox").mkdir(parents=True)
    (root / "artifacts").mkdir()
    (root / "artifacts" / "model_latest.enc").write_bytes(b"my real model")


def test_a_real_project_is_refused_and_left_untouched(tmp_path, capsys):
    _fake_project(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ChatbotError) as err:
        demo_mod.demo(tmp_path)
    message = str(err.value)
    assert "not created by `demo`" in message and demo_mod.MARKER in message and "\n" not in message
    assert snapshot(tmp_path) == before and not (tmp_path / demo_mod.MARKER).exists()
    assert "my-own-password" not in capsys.readouterr().out


def test_cli_refusal_is_one_line(tmp_path, capsys):
    from chatbot.ops import main

    _fake_project(tmp_path)
    assert main(["demo", "--workspace", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not created by `demo`" in err and "\n" not in err


def test_new_empty_and_earlier_demo_folders_are_claimed(tmp_path):
    new = tmp_path / "runs" / "demo"
    demo_mod.claim_workspace(new)  # does not exist yet: created, with the marker
    assert (new / demo_mod.MARKER).is_file()
    demo_mod.claim_workspace(new)  # its own folder: fine again
    empty = tmp_path / "empty"
    empty.mkdir()
    demo_mod.claim_workspace(empty)
    assert (empty / demo_mod.MARKER).is_file()
    old = tmp_path / "old-demo"  # written by a demo from before the marker: recognised by its .env and configs
    demo_mod._write_env(old)
    demo_mod._write_configs(old)
    demo_mod.claim_workspace(old)
    assert (old / demo_mod.MARKER).is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ChatbotError, match="is a file"):
        demo_mod.claim_workspace(a_file)
