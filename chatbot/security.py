"""Password gate for reply / chat / smoke / bridge, the scrypt password hash, and the model-key check.

Why a gate at all: the model was trained on private conversations and can echo them, so running it needs the
owner's password even on a shared machine. The password lives in ``.env`` either in plain text
(``CHATBOT_PASSWORD``) or, preferably, as a salted scrypt hash (``CHATBOT_PASSWORD_HASH``, printed by
``python -m chatbot.ops hash-password``), so that a copy of ``.env`` does not reveal it. The caller supplies it at a
hidden prompt (terminal) or in ``CHATBOT_ACCESS_PASSWORD`` (scripts). Neither the password nor the model key is ever
printed, logged or put into an error message; comparisons are constant-time.

Hash format (one line, ``$``-separated; base64 is URL-safe without padding)::

    scrypt$<N>$<r>$<p>$<salt_b64>$<hash_b64>
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
import time

from .errors import ChatbotError

# A wrong password costs this many seconds (slows down guessing; tests monkeypatch it to 0).
WRONG_PASSWORD_DELAY_S = 1.0

# scrypt cost for new password hashes: N = 2**15, r = 8 → 32 MiB and ~0.1 s per check on a laptop CPU.
HASH_N, HASH_R, HASH_P = 2**15, 8, 1
HASH_SALT_BYTES, HASH_BYTES = 16, 32
# Bounds accepted when *reading* a hash from .env (a typo must not make us allocate gigabytes).
_MAX_N, _MAX_R, _MAX_P = 2**20, 32, 16
_MAX_SCRYPT_MEM = 1 << 30

MIN_MODEL_KEY_CHARS = 20
_KEY_HOWTO = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


# ---------------------------------------------------------------------------------------------- password hash
def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    text = text.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=128 * r * n + (1 << 20) + 128 * r * p)


def hash_password(password: str, *, n: int = HASH_N, r: int = HASH_R, p: int = HASH_P) -> str:
    """A new salted scrypt hash line for ``CHATBOT_PASSWORD_HASH``."""
    salt = os.urandom(HASH_SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"scrypt${n}${r}${p}${_b64e(salt)}${_b64e(digest)}"


_MALFORMED = ("CHATBOT_PASSWORD_HASH in .env is malformed (expected scrypt$N$r$p$salt$hash); "
              "make a new one with `python -m chatbot.ops hash-password`")


def parse_password_hash(line: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a hash line; ChatbotError (never showing the line) when it is malformed."""
    parts = line.strip().strip("'\"").split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ChatbotError(_MALFORMED)
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = _b64d(parts[4]), _b64d(parts[5])
    except (ValueError, TypeError):
        raise ChatbotError(_MALFORMED) from None
    if (n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P
            or 128 * r * n > _MAX_SCRYPT_MEM or len(salt) < 8 or len(digest) < 16):
        raise ChatbotError(_MALFORMED)
    return n, r, p, salt, digest


def verify_password_hash(password: str, line: str) -> bool:
    """Constant-time check of ``password`` against a hash line (ChatbotError when the line is malformed)."""
    n, r, p, salt, digest = parse_password_hash(line)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def verify_plain_password(password: str, stored: str) -> bool:
    """Constant-time comparison that also hides the stored password's length (both sides hashed first)."""
    a = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(stored.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


# ------------------------------------------------------------------------------------------------------- gate
def _stdin_is_tty() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        return False


def _prompt(text: str) -> str:
    try:
        return getpass.getpass(text)
    except (EOFError, KeyboardInterrupt):
        raise ChatbotError("no password entered") from None


def require_password(cfg) -> None:
    """Return when the caller knows the configured password; otherwise raise ChatbotError (one line).

    Configured in .env: ``CHATBOT_PASSWORD_HASH`` (preferred, used when both are set) or ``CHATBOT_PASSWORD``.
    Supplied by the caller: ``CHATBOT_ACCESS_PASSWORD`` in the process environment (for scripts; deliberately NOT
    read from .env — a .env holding both the password and the answer would make the gate pointless) or a hidden
    prompt when standard input is a terminal. A wrong password sleeps ``WRONG_PASSWORD_DELAY_S`` before refusing.
    """
    stored_hash = cfg.secret("CHATBOT_PASSWORD_HASH")
    stored_plain = cfg.secret("CHATBOT_PASSWORD")
    if not stored_hash and not stored_plain:
        raise ChatbotError(
            "no password configured: put CHATBOT_PASSWORD_HASH=<output of `python -m chatbot.ops hash-password`> "
            "(or CHATBOT_PASSWORD=<password>) into .env (see .env.example)"
        )
    if stored_hash:
        parse_password_hash(stored_hash)  # a malformed line is reported before anyone types anything
    given = os.environ.get("CHATBOT_ACCESS_PASSWORD") or None
    if given is None:
        if not _stdin_is_tty():
            raise ChatbotError(
                "password required: run in a terminal to be asked for it, or set CHATBOT_ACCESS_PASSWORD "
                "in the environment for scripts"
            )
        given = _prompt("chatbot password: ")
    ok = verify_password_hash(given, stored_hash) if stored_hash else verify_plain_password(given, stored_plain)
    if not ok:
        time.sleep(WRONG_PASSWORD_DELAY_S)
        raise ChatbotError("wrong password")


def hash_password_command() -> None:
    """The ``hash-password`` verb: read a new password twice at a hidden prompt, print the .env line.

    Without a terminal the password is read from the first line of standard input (``... < file``), never from
    the command line (which would land in shell history and process listings).
    """
    if _stdin_is_tty():
        first = _prompt("new password: ")
        if not first:
            raise ChatbotError("empty password; nothing printed")
        if not hmac.compare_digest(first.encode("utf-8"), _prompt("repeat password: ").encode("utf-8")):
            raise ChatbotError("the two passwords differ; nothing printed")
    else:
        first = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
        if not first:
            raise ChatbotError("empty password; run in a terminal or pipe the password in on one line")
    line = hash_password(first)
    print("# put this line into .env (and remove any CHATBOT_PASSWORD= line):", file=sys.stderr)
    # single quotes: python-dotenv and shells take the value literally ($ is not expanded)
    print(f"CHATBOT_PASSWORD_HASH='{line}'")


# -------------------------------------------------------------------------------------------------- model key
def model_key(cfg) -> str:
    """``CHATBOT_MODEL_KEY`` from the environment or .env; refuses (without echoing it) when missing or short."""
    key = cfg.secret("CHATBOT_MODEL_KEY")
    if not key:
        raise ChatbotError(f"CHATBOT_MODEL_KEY is not set; generate one with {_KEY_HOWTO} and put "
                           "CHATBOT_MODEL_KEY=<it> into .env (keep a copy: without it the model cannot be loaded)")
    if len(key) < MIN_MODEL_KEY_CHARS:
        raise ChatbotError(f"CHATBOT_MODEL_KEY is too short (at least {MIN_MODEL_KEY_CHARS} characters); "
                           f"generate a strong one with {_KEY_HOWTO}")
    return key
