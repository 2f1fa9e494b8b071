"""Password gate, scrypt password hash, model-key hygiene. Every password and key here is invented."""

from __future__ import annotations

import io

import pytest

from chatbot import ops, security
from chatbot.config import load_config
from chatbot.errors import ChatbotError

PASSWORD = "correct horse 배터리 staple"


@pytest.fixture
def gate(project, monkeypatch):
    """Project + a recorder of the wrong-password delay (no real sleeping) + no terminal by default."""
    slept: list[float] = []
    monkeypatch.setattr(security.time, "sleep", slept.append)
    monkeypatch.setattr(security, "_stdin_is_tty", lambda: False)

    def prompt_fails(text):
        raise AssertionError("no prompt expected")

    monkeypatch.setattr(security.getpass, "getpass", prompt_fails)
    # cheap hashes for the plumbing tests (test_new_hashes_use_the_real_cost checks the real parameters)
    monkeypatch.setattr(security, "HASH_N", 2**10)
    monkeypatch.setattr(security, "HASH_FLOOR_MEM", 128 * 2**10 * 8)
    return project, slept


def _cfg(root, env: str = ""):
    (root / ".env").write_text(env, encoding="utf-8")
    return load_config(root / "configs")


def test_no_password_configured_is_refused_with_guidance(gate, monkeypatch):
    root, _ = gate
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    with pytest.raises(ChatbotError, match="no password configured") as err:
        security.require_password(_cfg(root, "CHATBOT_PASSWORD=\n"))
    assert "CHATBOT_PASSWORD_HASH" in str(err.value) and ".env" in str(err.value)


@pytest.mark.parametrize("form", ["plain", "hash"])
def test_right_and_wrong_password(gate, monkeypatch, form):
    root, slept = gate
    line = f"CHATBOT_PASSWORD={PASSWORD}\n" if form == "plain" else \
        f"CHATBOT_PASSWORD_HASH='{security.hash_password(PASSWORD, n=2**10)}'\n"
    cfg = _cfg(root, line)
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    security.require_password(cfg)
    assert slept == []
    for wrong in (PASSWORD + " ", PASSWORD[:-1], "", "x" * 200):
        monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", wrong or "\u200b")
        with pytest.raises(ChatbotError) as err:
            security.require_password(cfg)
        assert str(err.value) == "wrong password"
    assert slept == [security.WRONG_PASSWORD_DELAY_S] * 4 and security.WRONG_PASSWORD_DELAY_S >= 0.5


def test_hash_takes_precedence_over_plain(gate, monkeypatch):
    root, _ = gate
    cfg = _cfg(root, f"CHATBOT_PASSWORD=other-password\nCHATBOT_PASSWORD_HASH='{security.hash_password(PASSWORD, n=2**10)}'\n")
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    security.require_password(cfg)
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "other-password")
    with pytest.raises(ChatbotError, match="wrong password"):
        security.require_password(cfg)


def test_prompt_on_a_terminal_and_refusal_without_one(gate, monkeypatch):
    root, slept = gate
    cfg = _cfg(root, f"CHATBOT_PASSWORD={PASSWORD}\n")
    with pytest.raises(ChatbotError, match="CHATBOT_ACCESS_PASSWORD") as err:
        security.require_password(cfg)  # piped stdin, nothing in the environment
    assert "terminal" in str(err.value)
    monkeypatch.setattr(security, "_stdin_is_tty", lambda: True)
    prompts: list[str] = []
    monkeypatch.setattr(security.getpass, "getpass", lambda text: prompts.append(text) or PASSWORD)
    security.require_password(cfg)
    assert prompts == ["chatbot password: "]

    def eof(text):
        raise EOFError

    monkeypatch.setattr(security.getpass, "getpass", eof)
    with pytest.raises(ChatbotError, match="no password entered"):
        security.require_password(cfg)
    assert slept == []


@pytest.mark.parametrize("bad", [
    "scrypt$16384$8$1$c2FsdA",                    # too few fields
    "bcrypt$16384$8$1$c2FsdHNhbHQ$aGFzaGhhc2g",   # another scheme
    "scrypt$1000$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # N not a power of two
    "scrypt$1073741824$8$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # N absurdly large (would eat memory)
    "scrypt$16384$x$1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    "scrypt$16384$8$1$!!!$aGFzaGhhc2hoYXNoaGFzaA",
    "plaintext-pasted-by-mistake",
])
def test_malformed_hash_is_one_clear_line(gate, monkeypatch, bad):
    root, slept = gate
    cfg = _cfg(root, f"CHATBOT_PASSWORD_HASH='{bad}'\n")
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    with pytest.raises(ChatbotError, match="malformed") as err:
        security.require_password(cfg)
    msg = str(err.value)
    assert "\n" not in msg and bad not in msg and "hash-password" in msg and slept == []


def test_hash_password_command_line_works_in_dotenv(gate, monkeypatch, capsys):
    root, _ = gate
    monkeypatch.setattr(security, "_stdin_is_tty", lambda: True)
    answers = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr(security.getpass, "getpass", lambda text: next(answers))
    assert ops.main(["hash-password"]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out and PASSWORD not in err
    (line,) = out.strip().splitlines()
    assert line.startswith(f"CHATBOT_PASSWORD_HASH='scrypt${security.HASH_N}$8$1$")
    cfg = _cfg(root, line + "\n")  # python-dotenv must keep the $ fields literally
    assert cfg.secret("CHATBOT_PASSWORD_HASH").startswith(f"scrypt${security.HASH_N}$")
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    security.require_password(cfg)
    # two hashes of one password differ (fresh salt)
    assert security.hash_password(PASSWORD, n=2**10) != security.hash_password(PASSWORD, n=2**10)


def test_hash_password_command_refusals(gate, monkeypatch, capsys):
    monkeypatch.setattr(security, "_stdin_is_tty", lambda: True)
    answers = iter([PASSWORD, PASSWORD + "!"])
    monkeypatch.setattr(security.getpass, "getpass", lambda text: next(answers))
    with pytest.raises(ChatbotError, match="differ"):
        security.hash_password_command()
    monkeypatch.setattr(security, "_stdin_is_tty", lambda: False)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    security.hash_password_command()  # piped: first line of stdin
    line = capsys.readouterr().out.strip().split("'")[1]
    assert security.verify_password_hash(PASSWORD, line) and not security.verify_password_hash("nope", line)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(ChatbotError, match="empty password"):
        security.hash_password_command()
    assert PASSWORD not in capsys.readouterr().out


def test_model_key_hygiene(project, monkeypatch):
    cfg = load_config(project / "configs")
    with pytest.raises(ChatbotError, match="not set") as err:
        security.model_key(cfg)
    assert "secrets.token_urlsafe(32)" in str(err.value)
    short = "shortkey-123456789"  # 18 characters
    monkeypatch.setenv("CHATBOT_MODEL_KEY", short)
    with pytest.raises(ChatbotError, match="too short") as err:
        security.model_key(cfg)
    assert short not in str(err.value) and "secrets.token_urlsafe(32)" in str(err.value)
    monkeypatch.delenv("CHATBOT_MODEL_KEY")
    good = "Tq7vX2mLr9sPk4wHn8cB"  # 20 characters, invented
    (project / ".env").write_text(f"CHATBOT_MODEL_KEY={good}\n", encoding="utf-8")
    assert security.model_key(load_config(project / "configs")) == good


@pytest.mark.parametrize("weak", [
    "a" * 32,                        # one repeated character
    "abcabcabcabcabcabcabcabc",      # a repeated pattern
    "Password1234567890!!",          # common word + digit run + repeats
    "p4ssw0rd-2024-p4ssw0rd!",       # digit-for-letter swaps
    "qwertyuiop-asdfghjkl-1234",     # keyboard rows
    "iloveyou-iloveyou-xyz",
    "chatbot-model-key-0123456789",
])
def test_guessable_model_keys_are_refused_without_echo(project, monkeypatch, weak):
    assert len(weak) >= security.MIN_MODEL_KEY_CHARS
    monkeypatch.setenv("CHATBOT_MODEL_KEY", weak)
    with pytest.raises(ChatbotError, match="too easy to guess") as err:
        security.model_key(load_config(project / "configs"))
    assert weak not in str(err.value) and "secrets.token_urlsafe(32)" in str(err.value) and "\n" not in str(err.value)


def test_random_keys_are_never_refused():
    import secrets

    for _ in range(100):
        assert security.weak_key_reason(secrets.token_urlsafe(32)) is None
        assert security.weak_key_reason(secrets.token_urlsafe(15)) is None  # exactly 20 characters
        assert security.weak_key_reason(secrets.token_hex(10)) is None


def test_new_hashes_use_the_real_cost_and_weak_stored_hashes_are_refused(project, monkeypatch):
    """No monkeypatching here: the default parameters themselves (N = 2**17, r = 8, p = 1 → 128 MiB)."""
    line = security.hash_password(PASSWORD)
    n, r, p, salt, digest = security.parse_password_hash(line)
    assert (n, r, p) == (2**17, 8, 1) and len(salt) >= 16 and len(digest) >= 32
    assert security.verify_password_hash(PASSWORD, line)  # the 128 MiB fit within scrypt's memory limit
    assert security.parse_password_hash(security.hash_password(PASSWORD, n=2**15))[0] == 2**15  # the floor
    weak = security.hash_password(PASSWORD, n=2**12)  # 4 MiB: below the floor
    (project / ".env").write_text(f"CHATBOT_PASSWORD_HASH='{weak}'\n", encoding="utf-8")
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    with pytest.raises(ChatbotError, match="too weak") as err:
        security.require_password(load_config(project / "configs"))
    message = str(err.value)
    assert "hash-password" in message and weak.split("$")[-1] not in message and "\n" not in message


def test_short_passwords_draw_a_warning(gate, monkeypatch, capsys):
    root, _ = gate
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", "abc1234")
    security.require_password(_cfg(root, "CHATBOT_PASSWORD=abc1234\n"))
    err = capsys.readouterr().err
    assert "shorter than 8 characters" in err and "abc1234" not in err
    monkeypatch.setattr(security.sys, "stdin", io.StringIO("abc1234\n"))
    security.hash_password_command()
    captured = capsys.readouterr()
    assert "shorter than 8 characters" in captured.err and "CHATBOT_PASSWORD_HASH=" in captured.out
    monkeypatch.setenv("CHATBOT_ACCESS_PASSWORD", PASSWORD)
    security.require_password(_cfg(root, f"CHATBOT_PASSWORD={PASSWORD}\n"))
    assert "shorter" not in capsys.readouterr().err
